"""DiffusionPolicy: the step log-probs recorded while sampling, their re-evaluation (ratio 1),
the NaN guards, inpainting's re-imposed pixels, saving and loading."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from rl4gen.config import ConfigError
from rl4gen.core.diffusion import ddim_step_mean, gaussian_logprob
from rl4gen.models.diffusion import DiffusionPriorSpec, build_scheduler, build_unet
from rl4gen.policies.diffusion import DiffusionPolicy, SamplerConfig

SPEC = DiffusionPriorSpec(image_size=8, channels=(8, 16))


def _policy(use_reference: bool = False, **sampler: object) -> DiffusionPolicy:
    torch.manual_seed(0)
    return DiffusionPolicy(build_unet(SPEC), build_scheduler(SPEC), SamplerConfig(**sampler), use_reference=use_reference)  # type: ignore[arg-type]


def test_rollout_layout_and_step_logprob_by_hand(one_thread: None) -> None:
    policy = _policy(num_inference_steps=4, timestep_fraction=0.5)
    rollout = policy.sample([{"label": 3}, {"label": 7}], 3, generator=torch.Generator().manual_seed(0))
    b, t = 6, 4
    assert rollout.actions.shape == (b, t) and rollout.logprobs.shape == (b, t)
    assert rollout.extras["latents"].shape == (b, t + 1, 1, 8, 8)
    assert rollout.mask.sum(dim=1).tolist() == [2.0] * b  # half of the steps of every sample
    assert rollout.group_ids.tolist() == [0, 0, 0, 1, 1, 1]
    assert rollout.extras["labels"].tolist() == [3, 3, 3, 7, 7, 7]
    assert torch.isfinite(rollout.logprobs).all()
    # step 2 of sample 4, recomputed by hand from the stored latents
    i, r = 2, 4
    x_t = rollout.extras["latents"][r, i][None]
    x_prev = rollout.extras["latents"][r, i + 1]
    with torch.no_grad():
        eps = policy.model(x_t, policy.timesteps[i : i + 1], class_labels=torch.tensor([7])).sample
    a_t, a_s = float(policy.alpha_t[i]), float(policy.alpha_prev[i])
    sigma = math.sqrt((1 - a_s) / (1 - a_t) * (1 - a_t / a_s))  # eta = 1
    x0 = ((x_t - math.sqrt(1 - a_t) * eps) / math.sqrt(a_t)).clamp(-1, 1)
    eps_c = (x_t - math.sqrt(a_t) * x0) / math.sqrt(1 - a_t)
    mean = math.sqrt(a_s) * x0 + math.sqrt(1 - a_s - sigma**2) * eps_c
    by_hand = (-((x_prev - mean[0]) ** 2) / (2 * sigma**2) - math.log(sigma) - 0.5 * math.log(2 * math.pi)).mean()
    assert math.isclose(float(rollout.logprobs[r, i]), float(by_hand), rel_tol=1e-4, abs_tol=1e-4)
    assert torch.allclose(
        gaussian_logprob(x_prev[None], ddim_step_mean(x_t, eps, policy.alpha_t[i : i + 1], policy.alpha_prev[i : i + 1], policy.sigma[i : i + 1]), policy.sigma[i : i + 1]),
        rollout.logprobs[r, i : i + 1],
        atol=1e-5,
    )


def test_reevaluating_stored_steps_gives_ratio_one_with_gradients(one_thread: None) -> None:
    policy = _policy(use_reference=True, num_inference_steps=5, timestep_fraction=0.6)
    rollout = policy.sample([{"label": d} for d in range(4)], 2, generator=torch.Generator().manual_seed(1))
    logprobs = policy.log_probs(rollout)
    ratio = torch.exp(logprobs - rollout.logprobs)
    assert torch.allclose(ratio, torch.ones_like(ratio), atol=1e-5), ratio
    assert logprobs.requires_grad
    (logprobs * rollout.mask).sum().backward()
    assert all(p.grad is not None for p in policy.trainable_parameters())
    # the reference is a frozen copy: it agrees before training, and carries no gradient
    ref = policy.ref_log_probs(rollout)
    assert not ref.requires_grad and torch.allclose(ref, rollout.logprobs, atol=1e-5)


def test_skipped_last_steps_never_enter_the_loss(one_thread: None) -> None:
    policy = _policy(num_inference_steps=6, timestep_fraction=0.5, skip_last_steps=2)
    rollout = policy.sample([{"label": d} for d in range(4)], 4, torch.Generator().manual_seed(0))
    assert torch.all(rollout.mask[:, -2:] == 0)  # the two least noisy steps
    assert torch.all(rollout.mask.sum(1) == 2)  # half of the 4 other steps
    with pytest.raises(ConfigError, match="skip_last_steps"):
        _policy(num_inference_steps=4, skip_last_steps=4)


def test_eta_zero_is_refused() -> None:
    with pytest.raises(ConfigError, match="eta must be > 0"):
        _policy(eta=0.0)


def test_last_step_without_noise_is_refused() -> None:
    # diffusers' DDIM default (steps_offset=0) lands the last step on t = 0 -> alphas_cumprod[0]:
    # zero variance, a log-density of +inf / NaN.
    scheduler = build_scheduler(SPEC)
    scheduler.register_to_config(steps_offset=0)
    with pytest.raises(ConfigError, match="steps_offset=1"):
        DiffusionPolicy(build_unet(SPEC), scheduler, SamplerConfig(num_inference_steps=4))


def test_inpainting_keeps_visible_pixels_and_scores_the_hole_only(one_thread: None) -> None:
    policy = _policy(num_inference_steps=4)
    known = torch.linspace(-1, 1, 64).view(1, 8, 8)
    known_mask = torch.zeros(1, 8, 8)
    known_mask[:, :, :4] = 1.0  # the left half is visible
    rollout = policy.sample([{"known": known, "known_mask": known_mask, "label": 2}], 3, generator=torch.Generator().manual_seed(0))
    images = torch.stack(rollout.samples)
    assert torch.equal(images[:, :, :, :4], known[None, :, :, :4].expand(3, 1, 8, 4))
    assert rollout.extras["labels"].tolist() == [10, 10, 10]  # the hidden digit is not told
    assert torch.equal(rollout.extras["hole"][0], 1 - known_mask)
    ratio = torch.exp(policy.log_probs(rollout) - rollout.logprobs)
    assert torch.allclose(ratio, torch.ones_like(ratio), atol=1e-5)


def test_save_and_load_round_trip(tmp_path: Path, one_thread: None) -> None:
    policy = _policy(num_inference_steps=3)
    policy.save(tmp_path / "model")
    assert (tmp_path / "model" / "unet" / "diffusion_pytorch_model.safetensors").is_file()
    loaded = DiffusionPolicy.from_pretrained(tmp_path / "model", SamplerConfig(num_inference_steps=3))
    a = policy.sample([{"label": 1}], 2, generator=torch.Generator().manual_seed(5))
    b = loaded.sample([{"label": 1}], 2, generator=torch.Generator().manual_seed(5))
    assert torch.equal(a.logprobs, b.logprobs)
    with pytest.raises(ConfigError, match="not a diffusion model folder"):
        DiffusionPolicy.from_pretrained(tmp_path)


def test_inpainting_prior_sees_the_visible_pixels(one_thread: None) -> None:
    from dataclasses import replace

    from rl4gen.models.diffusion import inpaint_condition, random_masks

    torch.manual_seed(0)
    spec = replace(SPEC, inpaint=True)
    policy = DiffusionPolicy(build_unet(spec), build_scheduler(spec), SamplerConfig(num_inference_steps=4))
    assert policy.conditioned and policy.model.config.in_channels == 3
    known_mask = torch.ones(1, 8, 8)
    known_mask[:, 4:] = 0.0  # the bottom half is hidden
    ctx = {"known": torch.rand(1, 8, 8) * 2 - 1, "known_mask": known_mask}
    rollout = policy.sample([ctx], 2, generator=torch.Generator().manual_seed(0))
    ratio = torch.exp(policy.log_probs(rollout) - rollout.logprobs)
    assert torch.allclose(ratio, torch.ones_like(ratio), atol=1e-5)
    # other visible pixels -> other restorations from the same noise: the UNet reads them
    other = policy.sample([ctx | {"known": -ctx["known"]}], 2, generator=torch.Generator().manual_seed(0))
    assert not torch.allclose(torch.stack(other.samples)[:, :, 4:], torch.stack(rollout.samples)[:, :, 4:])
    assert policy.sample([{"label": None}], 1).samples[0].shape == (1, 8, 8)  # empty mask: a new digit
    cond = inpaint_condition(torch.ones(2, 1, 8, 8), random_masks(2, 8, torch.Generator().manual_seed(0)))
    assert cond.shape == (2, 2, 8, 8) and torch.equal(cond[:, 0], cond[:, 1])


def test_lora_trains_adapters_only_with_the_base_as_reference(tmp_path: Path, one_thread: None) -> None:
    from rl4gen.config import LoraConfig

    torch.manual_seed(0)
    policy = DiffusionPolicy(
        build_unet(SPEC), build_scheduler(SPEC), SamplerConfig(num_inference_steps=3), use_reference=True, lora=LoraConfig(r=4)
    )
    assert policy.ref_model is None  # the base UNet, adapters disabled, is the reference
    names = [n for n, p in policy.model.named_parameters() if p.requires_grad]
    assert names and all("lora_" in n for n in names)
    assert any("conv1.lora_A" in n for n in names) and any("class_embedding.lora_embedding_A" in n for n in names)
    rollout = policy.sample([{"label": 3}], 2, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        for p in policy.trainable_parameters():
            p.add_(0.05 * torch.randn_like(p))  # as an optimizer step would
    moved = policy.log_probs(rollout).detach()
    assert not torch.allclose(moved, rollout.logprobs, atol=1e-4)
    assert torch.allclose(policy.ref_log_probs(rollout), rollout.logprobs, atol=1e-5)  # the base
    policy.save(tmp_path / "model")
    assert (tmp_path / "model" / "adapter" / "adapter_config.json").is_file()
    torch.manual_seed(0)  # the same base weights, fresh adapters
    fresh = DiffusionPolicy(build_unet(SPEC), build_scheduler(SPEC), SamplerConfig(num_inference_steps=3), lora=LoraConfig(r=4))
    assert torch.allclose(fresh.log_probs(rollout).detach(), rollout.logprobs, atol=1e-5)
    fresh.load_weights(tmp_path / "model")  # resume: the adapters come back
    assert torch.allclose(fresh.log_probs(rollout).detach(), moved, atol=1e-5)
    merged = DiffusionPolicy.from_pretrained(tmp_path / "model", SamplerConfig(num_inference_steps=3))
    assert torch.allclose(merged.log_probs(rollout).detach(), moved, atol=1e-4)  # unet/ holds the merged weights
    with pytest.raises(ConfigError, match="target_modules"):
        DiffusionPolicy(build_unet(SPEC), build_scheduler(SPEC), lora=LoraConfig(target_modules=["no_such_layer"]))
