"""LatentPolicy and GaussianGeneratorPolicy: the Policy contract, the reference, save/load."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from rl4gen.gan.images import Generator
from rl4gen.gan.vae import DigitsVAE
from rl4gen.policies.latent import GaussianGeneratorPolicy, LatentPolicy, gaussian_log_prob


def test_gaussian_log_prob_matches_torch() -> None:
    a, m, s = torch.randn(3, 4), torch.randn(3, 4), torch.randn(3, 4) * 0.3
    expected = torch.distributions.Normal(m, s.exp()).log_prob(a)
    assert torch.allclose(gaussian_log_prob(a, m, s), expected, atol=1e-6)


def test_latent_policy_samples_starts_at_reference_and_gives_prior_codes() -> None:
    torch.manual_seed(0)
    policy = LatentPolicy(DigitsVAE(8, latent_dim=4, hidden=16), latent_dim=4, perturbation_scale=0.5, hidden=16)
    contexts = [{"label": 3}, {"label": 7}, {}]
    rollout = policy.sample(contexts, 5, generator=torch.Generator().manual_seed(1))
    assert rollout.actions.shape == (15, 4) and rollout.logprobs.shape == (15, 4)
    assert rollout.samples[0].shape == (1, 8, 8) and rollout.contexts[5] == {"label": 7}
    assert rollout.group_ids.tolist() == [0] * 5 + [1] * 5 + [2] * 5
    assert rollout.extras["labels"].tolist() == [3] * 5 + [7] * 5 + [10] * 5
    # The head starts at zero: the policy is the reference, and log_probs re-scores exactly.
    assert torch.allclose(policy.log_probs(rollout), rollout.logprobs, atol=1e-6)
    assert torch.allclose(policy.ref_log_probs(rollout), rollout.logprobs, atol=1e-6)
    # Under the reference the decoder's codes are N(0, I): the VAE's prior.
    big = policy.sample([{}] * 4000, 1, generator=torch.Generator().manual_seed(2))
    codes = policy.codes(big.actions, big.extras["base_codes"])
    assert codes.mean().abs() < 0.05 and abs(codes.var().item() - 1.0) < 0.05


def test_latent_policy_gradients_reach_only_the_head_and_save_load(tmp_path) -> None:
    torch.manual_seed(0)
    decoder = DigitsVAE(8, latent_dim=4, hidden=16)
    policy = LatentPolicy(decoder, latent_dim=4, hidden=16)
    rollout = policy.sample([{"label": 1}], 6, generator=torch.Generator().manual_seed(0))
    (-policy.log_probs(rollout).mean()).backward()
    assert all(p.grad is None for p in decoder.parameters())
    assert sum(float(p.grad.abs().sum()) for p in policy.trainable_parameters() if p.grad is not None) > 0
    with torch.no_grad():
        for p in policy.trainable_parameters():
            p.add_(0.1)
    policy.save(tmp_path)
    other = LatentPolicy(decoder, latent_dim=4, hidden=16)
    other.load_weights(tmp_path)
    assert torch.allclose(other.log_probs(rollout), policy.log_probs(rollout))


def test_latent_policy_rejects_a_bad_scale() -> None:
    with pytest.raises(ValueError, match="perturbation_scale"):
        LatentPolicy(nn.Identity(), latent_dim=2, perturbation_scale=1.5)


def test_generator_policy_shares_codes_within_a_group_and_scores_pixels() -> None:
    torch.manual_seed(0)
    policy = GaussianGeneratorPolicy(Generator(8, latent_dim=4, hidden=16), latent_dim=4, pixel_std=0.1, use_reference=True)
    rollout = policy.sample([{"slot": 0}, {"slot": 1}], 3, generator=torch.Generator().manual_seed(0))
    assert rollout.actions.shape == (6, 64)
    codes = rollout.extras["codes"]
    assert torch.equal(codes[0], codes[2]) and not torch.equal(codes[0], codes[3])
    assert torch.allclose(policy.log_probs(rollout), rollout.logprobs, atol=1e-5)
    assert torch.allclose(policy.ref_log_probs(rollout), rollout.logprobs, atol=1e-5)
    entropy = rollout.extras["entropy"][0, 0].item()
    assert entropy == pytest.approx(math.log(0.1) + 0.5 * (math.log(2 * math.pi) + 1))


def test_latent_policy_critic_for_ppo(tmp_path) -> None:
    torch.manual_seed(0)
    policy = LatentPolicy(DigitsVAE(8, latent_dim=4, hidden=16), latent_dim=4, hidden=16)
    n_policy = len(policy.trainable_parameters())
    policy.add_value_head()
    assert len(policy.trainable_parameters()) == n_policy + 4
    rollout = policy.sample([{"label": 2}, {"label": 5}], 3, generator=torch.Generator().manual_seed(0))
    assert torch.equal(policy.values(rollout), torch.zeros(6, 4))  # the critic starts at zero
    logprobs, values = policy.log_probs_and_values(rollout)
    assert logprobs.shape == values.shape == (6, 4)
    ((values - 1.0) ** 2).mean().backward()
    assert policy.value_head is not None and policy.value_head[2].bias.grad is not None
    with torch.no_grad():
        policy.value_head[2].bias.add_(0.5)
    policy.save(tmp_path)
    other = LatentPolicy(policy.decoder, latent_dim=4, hidden=16)
    other.add_value_head()
    other.load_weights(tmp_path)
    assert torch.allclose(other.values(rollout), policy.values(rollout)) and float(other.values(rollout)[0, 0]) != 0.0
