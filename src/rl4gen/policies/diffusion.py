"""DiffusionPolicy: a UNet with a DDIM sampler (η > 0) seen as a policy, as in DDPO.

Each of the ``T`` denoising steps is a Gaussian action ``x_{t-1} ~ N(mu_theta(x_t), sigma_t^2)``
(:mod:`rl4gen.core.diffusion`). ``sample`` records every step's latent and log-density (mean over
pixels); ``log_probs`` recomputes the log-densities of the stored steps with gradients. Only a
random subset of the steps of each sample is trained (``timestep_fraction``, DDPO's option): the
rollout's ``mask`` marks them, and ``log_probs`` runs the UNet on those (sample, step) pairs only.

Rollout layout (``B`` samples, ``T`` steps, images ``(1, H, W)``):

- ``actions`` ``(B, T)``: the timestep of each step (long); the Gaussian actions themselves are
  the latents in ``extras["latents"]`` ``(B, T + 1, 1, H, W)`` (``x_T`` then each step's result);
- ``logprobs`` ``(B, T)``: per-step log-density, mean over the pixels the policy chooses;
- ``extras["labels"]`` ``(B,)`` class labels (10 = any digit), ``extras["hole"]``
  ``(B, 1, H, W)`` 1 on the pixels the policy generates (all of them, or the hidden part when
  inpainting), ``extras["known"]`` ``(B, 1, H, W)`` the visible image when inpainting,
  ``extras["entropy"]`` ``(B, T)`` the Gaussian's entropy per pixel.

Inpainting: a context with ``"known"`` (a ``(1, H, W)`` image) and ``"known_mask"`` (1 where
visible) re-imposes the visible pixels, noised to the step's level, after every step; the
log-density then counts the hidden pixels only (the visible ones are not the policy's choice).
An inpainting prior (a UNet with extra input channels, :func:`rl4gen.models.diffusion.inpaint_condition`)
also sees the clean visible pixels and the mask at every step; for a context without ``"known"``
it gets an empty mask (a whole new digit).

LoRA (``lora``, the shared :class:`rl4gen.config.LoraConfig`): peft adapters on the UNet's
layers (``target_modules: all-linear`` means every convolution, linear layer and the class
embedding, :data:`UNET_LORA_TYPES`; or a list of module names such as ``[conv1, conv2]``); only the
adapters train, the KL reference is the base UNet (adapters disabled, no copy), and :meth:`save`
writes the adapters (``adapter/``) beside the merged UNet (``unet/``, loadable as a prior).

Two NaN traps are refused at construction with a clear error: ``eta = 0`` (the step is
deterministic, its density is a point mass) and a schedule whose last step has zero variance
(diffusers' DDIM with ``steps_offset=0``, where the last step goes from ``t = 0`` to
``alpha_prev = alphas_cumprod[0]`` or to 1).
"""

from __future__ import annotations

import contextlib
import copy
import json
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from rl4gen.config import ConfigError, LoraConfig
from rl4gen.core.diffusion import ddim_sigma, ddim_step_mean, gaussian_entropy, gaussian_logprob
from rl4gen.core.rollout import Rollout
from rl4gen.models.diffusion import NULL_CLASS, inpaint_condition, load_diffusion_prior, unet_input

SAMPLER_FILE = "sampler.json"
ADAPTER_DIR = "adapter"
#: The layer types ``target_modules: all-linear`` adapts in a UNet (its analogue of a
#: transformer's linear layers).
UNET_LORA_TYPES = (nn.Linear, nn.Conv2d, nn.Embedding)


def unet_lora_targets(unet: nn.Module, target_modules: list[str] | str) -> list[str] | str:
    """``all-linear`` expanded to every convolution, linear layer and embedding of ``unet``
    (peft's own ``all-linear`` would skip the convolutions); a list is passed on unchanged."""
    if target_modules != "all-linear":
        return target_modules
    return [name for name, module in unet.named_modules() if isinstance(module, UNET_LORA_TYPES)]


def add_unet_lora(unet: nn.Module, lora: LoraConfig) -> nn.Module:
    """``unet`` wrapped by peft with LoRA adapters (base weights frozen)."""
    from peft import LoraConfig as PeftLoraConfig
    from peft import get_peft_model

    targets = unet_lora_targets(unet, lora.target_modules)
    config = PeftLoraConfig(r=lora.r, lora_alpha=lora.lora_alpha, lora_dropout=lora.lora_dropout, target_modules=targets)
    try:
        return get_peft_model(unet, config)
    except ValueError as exc:
        raise ConfigError(f"model.lora.target_modules {lora.target_modules!r} does not fit the UNet: {exc}") from None


@dataclass(frozen=True)
class SamplerConfig:
    """How the policy samples and which steps it trains."""

    num_inference_steps: int = 10
    """DDIM steps per sample (T)."""
    eta: float = 1.0
    """DDIM stochasticity: 0 is deterministic DDIM (not a policy), 1 is DDPM-like."""
    timestep_fraction: float = 1.0
    """Fraction of each sample's steps that enter the loss (a random subset per sample)."""
    skip_last_steps: int = 0
    """The last (least noisy) steps never enter the loss: their ``1 / sigma^2`` gradients are the
    largest and carry little of the image's content; the fraction applies to the other steps."""
    clip_sample: float | None = 1.0
    """Clip the predicted clean image to this range at every step (None: no clipping)."""
    batch_size: int = 512
    """UNet evaluations per forward pass when re-scoring (bounds memory)."""


class DiffusionPolicy:
    """A class-conditional UNet + DDIM sampler as a policy (see the module docstring)."""

    def __init__(
        self,
        unet: nn.Module,
        scheduler: Any,
        sampler: SamplerConfig | None = None,
        use_reference: bool = False,
        lora: LoraConfig | None = None,
    ) -> None:
        self.sampler = sampler or SamplerConfig()
        s = self.sampler
        if s.eta <= 0:
            raise ConfigError(
                f"DDIM eta must be > 0 for diffusion RL, got {s.eta}: with eta = 0 every step is "
                "deterministic and its log-density is not finite (use eta = 1.0)."
            )
        if not 0 < s.timestep_fraction <= 1:
            raise ConfigError(f"timestep_fraction must be in (0, 1], got {s.timestep_fraction}.")
        if not 0 <= s.skip_last_steps < s.num_inference_steps:
            raise ConfigError(
                f"skip_last_steps must be in [0, num_inference_steps) = [0, {s.num_inference_steps}), "
                f"got {s.skip_last_steps}: at least one step must be trained."
            )
        self.is_lora = lora is not None
        if lora is not None:
            unet = add_unet_lora(unet, lora)
        self.model: Any = unet
        self.train_model: nn.Module = unet
        self.model.eval()  # no dropout in the tiny UNet; sampling and re-scoring must agree
        self.scheduler = scheduler
        self.ref_model: nn.Module | None = None
        self.use_reference = use_reference
        if use_reference and not self.is_lora:
            self.ref_model = copy.deepcopy(unet).eval()
            self.ref_model.requires_grad_(False)
        self.source: str | None = None
        self._set_schedule()

    # ---------------------------------------------------------------- schedule

    def _set_schedule(self) -> None:
        """Timesteps ``(T,)``, cumulative alphas before/after each step and the steps' sigmas."""
        sched = self.scheduler
        sched.set_timesteps(self.sampler.num_inference_steps)
        timesteps = sched.timesteps.long()  # (T,) decreasing
        alphas = sched.alphas_cumprod.double()
        ratio = sched.config.num_train_timesteps // self.sampler.num_inference_steps
        prev = timesteps - ratio
        final = torch.tensor(1.0, dtype=torch.float64) if sched.config.set_alpha_to_one else alphas[0]
        alpha_t = alphas[timesteps]
        alpha_prev = torch.where(prev >= 0, alphas[prev.clamp(min=0)], final)
        sigma = ddim_sigma(alpha_t, alpha_prev, self.sampler.eta)
        if bool((sigma <= 0).any()):
            step = int((sigma <= 0).nonzero()[0])
            raise ConfigError(
                f"DDIM step {step + 1} of {len(sigma)} (timestep {int(timesteps[step])}) has zero noise, so its "
                "log-density is not finite: the scheduler's last step lands on its own noise level "
                f"(steps_offset={sched.config.steps_offset}, set_alpha_to_one={sched.config.set_alpha_to_one}); "
                "set steps_offset=1 and set_alpha_to_one=False in scheduler_config.json."
            )
        self.timesteps = timesteps
        self.alpha_t = alpha_t.float()
        self.alpha_prev = alpha_prev.float()
        self.sigma = sigma.float()

    # ---------------------------------------------------------------- construction and I/O

    @classmethod
    def from_pretrained(
        cls, path: str | Path, sampler: SamplerConfig | None = None, *, use_reference: bool = False, lora: LoraConfig | None = None
    ) -> DiffusionPolicy:
        """Load ``unet/`` and ``scheduler/`` (diffusers format) from a local folder; with ``lora``,
        fresh adapters go on top of that UNet."""
        unet, scheduler = load_diffusion_prior(path)
        policy = cls(unet, scheduler, sampler, use_reference=use_reference, lora=lora)
        policy.source = str(path)
        return policy

    def save(self, directory: str | Path) -> None:
        """Write ``unet/`` (safetensors), ``scheduler/`` and the sampler settings; with LoRA also
        ``adapter/`` (the adapters alone) while ``unet/`` holds the merged weights."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        if self.is_lora:
            self.model.save_pretrained(str(directory / ADAPTER_DIR))
            merged = copy.deepcopy(self.model).merge_and_unload()
            merged.save_pretrained(str(directory / "unet"), safe_serialization=True)
        else:
            self.model.save_pretrained(str(directory / "unet"), safe_serialization=True)
        self.scheduler.save_pretrained(str(directory / "scheduler"))
        (directory / SAMPLER_FILE).write_text(json.dumps(asdict(self.sampler), indent=2))

    def load_weights(self, directory: str | Path) -> None:
        """Load UNet weights written by :meth:`save` (the reference stays; with LoRA, the
        adapters)."""
        from safetensors.torch import load_file

        if self.is_lora:
            from peft import load_peft_weights, set_peft_model_state_dict

            set_peft_model_state_dict(self.model, load_peft_weights(str(Path(directory) / ADAPTER_DIR)))
            return

        state = load_file(str(Path(directory) / "unet" / "diffusion_pytorch_model.safetensors"))
        self.model.load_state_dict(state)

    def trainable_parameters(self) -> list[nn.Parameter]:
        return [p for p in self.model.parameters() if p.requires_grad]

    def prepare(self, accelerator: Any) -> None:
        """Place the UNet with Accelerate; gradients then flow through the wrapped copy."""
        self.train_model = accelerator.prepare(self.model)
        self.model = accelerator.unwrap_model(self.train_model)
        if self.ref_model is not None:
            self.ref_model.to(accelerator.device)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def image_size(self) -> int:
        return int(self.model.config.sample_size)

    # ---------------------------------------------------------------- sampling

    def _conditions(self, contexts: Sequence[Any]) -> tuple[Tensor, Tensor, Tensor | None]:
        """Labels ``(B,)``, hole ``(B, 1, H, W)`` and the visible image ``(B, 1, H, W)`` or None."""
        size = self.image_size
        labels, holes, knowns = [], [], []
        inpaint = any(isinstance(c, dict) and "known" in c for c in contexts)
        for i, ctx in enumerate(contexts):
            ctx = ctx if isinstance(ctx, dict) else {}
            label = ctx.get("label")
            labels.append(NULL_CLASS if label is None or inpaint else int(label))
            if inpaint:
                if "known" not in ctx or "known_mask" not in ctx:
                    raise ValueError(f"context {i} lacks 'known' or 'known_mask': inpainting needs both in every context.")
                known_mask = torch.as_tensor(ctx["known_mask"], dtype=torch.float32).reshape(1, size, size)
                holes.append(1.0 - known_mask)
                knowns.append(torch.as_tensor(ctx["known"], dtype=torch.float32).reshape(1, size, size))
            else:
                holes.append(torch.ones(1, size, size))
        device = self.device
        known = torch.stack(knowns).to(device) if inpaint else None
        return torch.tensor(labels, device=device), torch.stack(holes).to(device), known

    @property
    def conditioned(self) -> bool:
        """Whether the UNet is an inpainting prior (sees the visible pixels and the mask)."""
        return int(self.model.config.in_channels) > 1

    def _condition(self, hole: Tensor, known: Tensor | None) -> Tensor | None:  # (B, 2, H, W) or None
        """An inpainting prior's extra input for damaged images; None otherwise (an inpainting
        prior then gets an empty mask from :func:`unet_input`)."""
        return inpaint_condition(known, 1 - hole) if self.conditioned and known is not None else None

    def _mean(self, model: nn.Module, latents: Tensor, steps: Tensor, labels: Tensor, condition: Tensor | None = None) -> Tensor:
        """DDIM step means for latents ``(N, 1, H, W)`` at step indices ``steps`` ``(N,)``
        (``condition`` ``(N, 2, H, W)``: an inpainting prior's extra input)."""
        inputs = unet_input(latents, condition, int(self.model.config.in_channels))
        eps = model(inputs, self.timesteps.to(latents.device)[steps], class_labels=labels).sample
        dev = latents.device
        return ddim_step_mean(
            latents, eps, self.alpha_t.to(dev)[steps], self.alpha_prev.to(dev)[steps], self.sigma.to(dev)[steps],
            self.sampler.clip_sample,
        )

    @torch.no_grad()
    def sample(self, contexts: Sequence[Any], num_samples: int = 1, generator: torch.Generator | None = None) -> Rollout:
        """``num_samples`` images per context (rows of one context adjacent), every step logged."""
        rows = [ctx for ctx in contexts for _ in range(num_samples)]
        group_ids = torch.arange(len(contexts)).repeat_interleave(num_samples)
        labels, hole, known = self._conditions(rows)
        condition = self._condition(hole, known)
        b, size, t_steps, dev = len(rows), self.image_size, len(self.timesteps), self.device

        def noise() -> Tensor:
            return torch.randn((b, 1, size, size), generator=generator, device=dev)

        x = noise()
        latents, logprobs = [x], []
        for i in range(t_steps):
            steps = torch.full((b,), i, device=dev, dtype=torch.long)
            mean = self._mean(self.model, x, steps, labels, condition)
            sigma = self.sigma[i].to(dev)
            x_prev = mean + sigma * noise()
            if known is not None:  # re-impose the visible pixels at the next step's noise level
                a = self.alpha_prev[i].to(dev)
                visible = a.sqrt() * known + (1 - a).sqrt() * noise()
                x_prev = hole * x_prev + (1 - hole) * visible
            logprobs.append(gaussian_logprob(x_prev, mean, sigma.expand(b), hole))
            latents.append(x_prev)
            x = x_prev
        images = x.clamp(-1, 1)
        if known is not None:
            images = hole * images + (1 - hole) * known
        trainable = t_steps - self.sampler.skip_last_steps
        k = max(1, round(self.sampler.timestep_fraction * trainable))
        order = torch.rand((b, t_steps), generator=generator, device=dev)
        order[:, trainable:] = 2.0  # the skipped last steps sort after every trainable one
        chosen = order.argsort(dim=1)[:, :k]
        mask = torch.zeros((b, t_steps), device=dev).scatter_(1, chosen, 1.0)
        extras = {
            "latents": torch.stack(latents, dim=1),  # (B, T + 1, 1, H, W)
            "labels": labels,
            "hole": hole,
            "entropy": gaussian_entropy(self.sigma.to(dev)).expand(b, t_steps).clone(),
        }
        if known is not None:
            extras["known"] = known
        return Rollout(
            actions=self.timesteps.to(dev).expand(b, t_steps).clone(),
            mask=mask,
            logprobs=torch.stack(logprobs, dim=1),  # (B, T)
            group_ids=group_ids.to(dev),
            samples=list(images.cpu()),
            contexts=rows,
            extras=extras,
        )

    def generate(self, contexts: Sequence[Any], generator: torch.Generator | None = None) -> Tensor:
        """One image per context, ``(N, 1, H, W)`` in [-1, 1] (sampled in chunks of 256)."""
        chunks = [contexts[i : i + 256] for i in range(0, len(contexts), 256)]
        return torch.cat([torch.stack(self.sample(c, 1, generator).samples) for c in chunks])

    # ---------------------------------------------------------------- re-scoring

    def _step_logprobs(self, model: nn.Module, rollout: Rollout) -> Tensor:  # (B, T)
        """Log-densities of the stored steps where ``rollout.mask`` is 1, recomputed by ``model``;
        the other entries are the sampling log-probs (so their ratio is exactly 1)."""
        rows, steps = rollout.mask.nonzero(as_tuple=True)  # (M,), (M,)
        latents = rollout.extras["latents"]
        labels, hole = rollout.extras["labels"], rollout.extras["hole"]
        condition = self._condition(hole, rollout.extras.get("known"))
        parts = []
        for r, s in zip(rows.split(self.sampler.batch_size), steps.split(self.sampler.batch_size)):
            x_t, x_prev = latents[r, s], latents[r, s + 1]  # (N, 1, H, W) each
            mean = self._mean(model, x_t, s, labels[r], None if condition is None else condition[r])
            parts.append(gaussian_logprob(x_prev, mean, self.sigma.to(x_t.device)[s], hole[r]))
        out = rollout.logprobs.detach().clone()
        if not parts:
            return out
        return out.index_put((rows, steps), torch.cat(parts))

    def log_probs(self, rollout: Rollout) -> Tensor:  # (B, T)
        """Log-densities of the rollout's trained steps under the current UNet, with gradients."""
        return self._step_logprobs(self.train_model, rollout)

    @contextlib.contextmanager
    def _reference(self) -> Iterator[nn.Module]:
        if self.ref_model is not None:
            yield self.ref_model
        elif self.is_lora and self.use_reference:
            with self.model.disable_adapter():
                yield self.model
        else:
            raise RuntimeError("this DiffusionPolicy was built without a reference (use_reference=False).")

    @torch.no_grad()
    def ref_log_probs(self, rollout: Rollout) -> Tensor:  # (B, T)
        """The same under the frozen prior (the KL regulariser's reference; the base UNet with
        its adapters disabled under LoRA)."""
        with self._reference() as ref:
            return self._step_logprobs(ref, rollout)


__all__ = ["DiffusionPolicy", "SamplerConfig"]
