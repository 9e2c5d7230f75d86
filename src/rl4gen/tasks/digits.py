"""Digits: diffusion RL (DDPO) on a tiny class-conditional diffusion model of handwritten digits.

The prior is a diffusers ``UNet2DModel`` with a class embedding, trained with the DDPM objective on
the training split of scikit-learn's digits (:mod:`rl4gen.models.diffusion`); the policy samples
it with DDIM, η > 0 (:class:`rl4gen.policies.diffusion.DiffusionPolicy`); GRPO with DDPO's
per-condition stat tracker fine-tunes it on image rewards (:mod:`rl4gen.rewards.image`).

Two modes (``task_args.mode``):

- ``generate``: a context asks for a digit (``{"label": d}``); the recipe rewards prompt
  alignment, p(d | image) under the locally trained classifier (the analogue of a CLIP score).
- ``inpaint``: a context holds a digit with part of it hidden (``hole``: a square box or one
  half); the policy fills the hidden pixels, the visible ones re-imposed at every step. The recipe
  rewards the classifier's agreement with the true digit and the fidelity of the hidden pixels
  (``restoration_fidelity``); by default the prior is an inpainting prior that sees the visible
  pixels and the mask (``inpaint_prior``). Evaluation reports the error on the
  hidden pixels and the classifier's accuracy on the restored digits.

Evaluation (``eval/...``) always uses the held-out split (never seen in pretraining) and a fixed
seed, so before/after numbers compare the same noise.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import Tensor

from rl4gen.config import ConfigError
from rl4gen.tasks.base import Task

EVAL_SEED = 1234


class DigitsOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    mode: Literal["generate", "inpaint"] = "generate"
    """Class-conditional generation, or restoring digits with a hidden part."""
    image_size: Literal[8, 16] = 8
    """Pixels per side: 8 is the data as scanned, 16 upsamples bilinearly (about 4x the cost)."""
    channels: list[int] = Field(default_factory=lambda: [32, 64])
    """UNet channels per resolution level (one down-sampling between levels)."""
    layers_per_block: int = Field(1, ge=1)
    """ResNet blocks per UNet level."""
    pretrain_steps: int = Field(120, ge=1)
    """DDPM training steps of the prior (fixed in advance; deliberately short so RL has room)."""
    pretrain_batch_size: int = Field(128, ge=1)
    pretrain_seed: int = 0
    """Seed of the prior's initial weights and data order."""
    num_inference_steps: int = Field(10, ge=2, le=200)
    """DDIM steps per sample (the length T of a rollout)."""
    eta: float = Field(1.0, ge=0, le=1)
    """DDIM stochasticity; must be > 0 for RL (each step is a Gaussian action)."""
    timestep_fraction: float = Field(1.0, gt=0, le=1)
    """Fraction of each sample's steps trained (a random subset per sample, as in DDPO)."""
    skip_last_steps: int = Field(3, ge=0)
    """The last (nearly noiseless) DDIM steps left out of the loss: their ``1 / sigma^2``
    gradients dominate the update and degrade the prior (docs/tasks/digits.md)."""
    hole: Literal["box", "half"] = "half"
    """Inpainting: hide a random box, or a random half (top, bottom, left or right)."""
    box_size: int = Field(4, ge=1)
    """Inpainting: side of the hidden box in pixels (with ``hole: box``)."""
    inpaint_prior: bool = True
    """Inpainting: a prior that sees the visible pixels and the mask (two extra UNet inputs,
    pretrained on random holes), as Stable Diffusion's inpainting model; False samples the
    hole with the unconditional prior (visible pixels only re-imposed)."""


class DigitsTask(Task):
    name = "digits"
    Options = DigitsOptions
    options: DigitsOptions

    def __init__(self, task_args: dict[str, Any] | None = None) -> None:
        super().__init__(task_args)
        if self.options.hole == "box" and self.options.box_size >= self.options.image_size:
            raise ConfigError(
                f"task_args.box_size ({self.options.box_size}) must be smaller than image_size "
                f"({self.options.image_size}) so that part of the digit stays visible."
            )
        self._splits: dict[str, Any] = {}

    # ------------------------------------------------------------------ data

    def split(self, name: str) -> Any:
        if name not in self._splits:
            from rl4gen.images import load_digits

            self._splits[name] = load_digits(name, self.options.image_size)
        return self._splits[name]

    def known_mask(self, n: int, generator: torch.Generator) -> Tensor:  # (n, 1, H, W), 1 = visible
        """Random masks of the configured hole shape."""
        size = self.options.image_size
        mask = torch.ones(n, 1, size, size)
        if self.options.hole == "half":
            side = torch.randint(0, 4, (n,), generator=generator)
            h = size // 2
            for i, s in enumerate(side.tolist()):
                region = [(slice(0, h), slice(None)), (slice(h, None), slice(None)), (slice(None), slice(0, h)), (slice(None), slice(h, None))][s]
                mask[i, 0][region] = 0.0
        else:
            b = self.options.box_size
            corner = torch.randint(0, size - b + 1, (n, 2), generator=generator)
            for i, (y, x) in enumerate(corner.tolist()):
                mask[i, 0, y : y + b, x : x + b] = 0.0
        return mask

    def _inpaint_contexts(self, split: str, index: Tensor, generator: torch.Generator) -> list[dict[str, Any]]:
        data = self.split(split)
        masks = self.known_mask(len(index), generator)
        images = data.images[index]
        return [
            {"label": int(data.labels[i]), "known": img * m + (m - 1), "known_mask": m, "target": img}
            for i, img, m in zip(index.tolist(), images, masks)
        ]  # hidden pixels of "known" are -1 (background) and never read by the policy

    def train_contexts(self, generator: torch.Generator, n: int) -> list[dict[str, Any]]:
        if self.options.mode == "inpaint":
            index = torch.randint(0, len(self.split("train")), (n,), generator=generator)
            return self._inpaint_contexts("train", index, generator)
        return [{"label": int(d)} for d in torch.randint(0, 10, (n,), generator=generator)]

    def eval_contexts(self, n: int) -> list[dict[str, Any]]:
        if self.options.mode == "inpaint":
            test = self.split("test")
            index = torch.arange(n) % len(test)
            return self._inpaint_contexts("test", index, torch.Generator().manual_seed(EVAL_SEED))
        return [{"label": i % 10} for i in range(n)]

    # ------------------------------------------------------------------ policy and evaluation

    def sampler(self) -> Any:
        from rl4gen.policies.diffusion import SamplerConfig

        o = self.options
        return SamplerConfig(num_inference_steps=o.num_inference_steps, eta=o.eta, timestep_fraction=o.timestep_fraction, skip_last_steps=o.skip_last_steps)

    def load_policy(self, model_path: str, config: Any, use_reference: bool) -> Any:
        """A :class:`~rl4gen.policies.diffusion.DiffusionPolicy`: full fine-tuning of the UNet, or
        LoRA adapters with ``model.lora``."""
        from rl4gen.policies.diffusion import DiffusionPolicy

        return DiffusionPolicy.from_pretrained(model_path, self.sampler(), use_reference=use_reference, lora=config.model.lora)

    def generate(self, policy: Any, contexts: list[dict[str, Any]], seed: int = EVAL_SEED) -> Tensor:
        """One image per context from ``policy`` with a fixed seed (the same noise for every policy)."""
        generator = torch.Generator(device=policy.device).manual_seed(seed)
        return policy.generate(contexts, generator).cpu()

    def evaluate(self, policy: Any, n: int) -> dict[str, float]:
        """Held-out metrics of :func:`rl4gen.images.image_report` on ``n`` samples (digits
        requested in turn 0..9, fixed seed; Fréchet distance against the 360 held-out scans).
        Inpainting adds ``restoration_mse`` (mean squared error on the hidden pixels, in [-1, 1]
        units) and reports ``accuracy`` against the true digit."""
        from rl4gen.images import image_report

        contexts = self.eval_contexts(n)
        images = self.generate(policy, contexts)
        labels = torch.tensor([c["label"] for c in contexts])
        report = image_report(images, labels, reference=self.split("test").images)
        if self.options.mode == "inpaint":
            hidden = 1 - torch.stack([c["known_mask"] for c in contexts])
            target = torch.stack([c["target"] for c in contexts])
            report["restoration_mse"] = float(((images - target) ** 2 * hidden).sum() / hidden.sum())
        return report

    # ------------------------------------------------------------------ recipe

    def default_config(self) -> dict[str, Any]:
        inpaint = self.options.mode == "inpaint"
        return {
            "task": self.name,
            "task_args": self.options.model_dump(),
            "model": {"path": None},
            "algorithm": {
                "name": "grpo",
                "num_generations": 8,
                "beta": 0.0,
                "epsilon": 0.1,
                "loss_type": "grpo",
            },
            "rewards": [{"type": "digit_alignment", "weight": 1.0}]
            + ([{"type": "restoration_fidelity", "weight": 1.0}] if inpaint else []),
            "max_steps": 30 if inpaint else 20,
            "prompts_per_step": 16,
            "learning_rate": 1e-4 if inpaint else 5e-5,
            "lr_scheduler_type": "constant",
            "max_grad_norm": 1.0,
            "eval_steps": 20,
            "eval_size": 360 if inpaint else 500,
            "sample_steps": 20,
            "save_steps": 1000,
        }

    # ------------------------------------------------------------------ prior

    def spec(self) -> Any:
        from rl4gen.models.diffusion import DiffusionPriorSpec

        o = self.options
        conditioned = o.mode == "inpaint" and o.inpaint_prior
        return DiffusionPriorSpec(
            inpaint=conditioned,
            label_dropout=1.0 if conditioned else 0.1,  # inpainting never knows the digit
            image_size=o.image_size,
            channels=tuple(o.channels),
            layers_per_block=o.layers_per_block,
            steps=o.pretrain_steps,
            batch_size=o.pretrain_batch_size,
            seed=o.pretrain_seed,
        )

    def pretrain_settings(self) -> dict[str, Any]:
        from dataclasses import asdict

        settings = {"task": self.name, "version": 1, **asdict(self.spec())}
        if not settings["inpaint"]:  # the generation prior's cache key predates the option
            del settings["inpaint"]
        return settings

    def build_prior(self, out_dir: Path, log: Callable[[str], None]) -> dict[str, Any]:
        from rl4gen.models.diffusion import pretrain_diffusion

        return pretrain_diffusion(self.spec(), out_dir, log)


__all__ = ["DigitsOptions", "DigitsTask"]
