"""A tiny class-conditional diffusion prior for the digits: a diffusers ``UNet2DModel`` with a
class embedding, trained with the DDPM noise-prediction objective (Ho et al., 2020), saved in
diffusers format (``unet/`` and ``scheduler/`` folders) so ``from_pretrained`` loads it back.

Class ``10`` is the null class ("any digit"): 10% of the training labels are replaced by it, as in
classifier-free guidance training, so the same network also samples without a label (the
inpainting task uses it, since the hidden digit is unknown).

An *inpainting prior* (``spec.inpaint``) also sees the damaged image, as Stable Diffusion's
inpainting model does: two extra input channels hold the visible pixels (0 where hidden) and the
visibility mask, and it is pretrained on random holes (:func:`random_masks`: halves, boxes, and
10% fully hidden images, which teach it to generate from nothing). See :func:`inpaint_condition`.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

NULL_CLASS = 10
NUM_CLASS_EMBEDS = 11
CONDITION_CHANNELS = 2  # an inpainting prior's extra inputs: visible pixels, visibility mask


def inpaint_condition(known: Tensor, known_mask: Tensor) -> Tensor:  # (B, 2, H, W)
    """The extra input of an inpainting prior: the visible pixels (0 where hidden) and the mask
    (1 where visible), both ``(B, 1, H, W)``. A mask of zeros asks for a whole new digit."""
    return torch.cat([known * known_mask, known_mask], dim=1)


def unet_input(latents: Tensor, condition: Tensor | None, in_channels: int) -> Tensor:
    """What a UNet with ``in_channels`` inputs takes for ``latents`` ``(B, 1, H, W)``: the
    latents alone, or for an inpainting prior the latents and ``condition``
    (:func:`inpaint_condition`); no condition is an empty mask, i.e. a whole new digit."""
    if in_channels == 1:
        return latents
    if condition is None:
        condition = torch.zeros((latents.shape[0], CONDITION_CHANNELS, *latents.shape[2:]), device=latents.device)
    return torch.cat([latents, condition], dim=1)


def random_masks(n: int, size: int, generator: torch.Generator) -> Tensor:  # (n, 1, size, size), 1 = visible
    """Pretraining holes of an inpainting prior: a random half (40%), a random box of side 2 to
    ``size - 2`` (50%), or the whole image (10%)."""
    mask = torch.ones(n, 1, size, size)
    kind = torch.rand(n, generator=generator)
    sides = torch.randint(0, 4, (n,), generator=generator).tolist()
    boxes = torch.randint(2, max(3, size - 1), (n,), generator=generator).tolist()
    corners = torch.rand(n, 2, generator=generator)
    h = size // 2
    for i in range(n):
        if kind[i] < 0.1:
            mask[i] = 0.0
        elif kind[i] < 0.5:
            region = [(slice(0, h), slice(None)), (slice(h, None), slice(None)), (slice(None), slice(0, h)), (slice(None), slice(h, None))][sides[i]]
            mask[i, 0][region] = 0.0
        else:
            b = boxes[i]
            y, x = (corners[i] * (size - b + 1)).long().tolist()
            mask[i, 0, y : y + b, x : x + b] = 0.0
    return mask


@dataclass(frozen=True)
class DiffusionPriorSpec:
    """Architecture and training of the prior (the cache key of the pretrained folder)."""

    image_size: int = 16
    channels: tuple[int, ...] = (32, 64)
    layers_per_block: int = 1
    num_train_timesteps: int = 1000
    steps: int = 120
    batch_size: int = 128
    learning_rate: float = 2e-3
    label_dropout: float = 0.1
    seed: int = 0
    inpaint: bool = False
    """Condition on a damaged image (two extra input channels; pretrained on random holes)."""


def build_unet(spec: DiffusionPriorSpec) -> Any:
    """A ``UNet2DModel`` without attention: one resolution level per entry of ``spec.channels``."""
    from diffusers import UNet2DModel

    levels = len(spec.channels)
    return UNet2DModel(
        sample_size=spec.image_size,
        in_channels=1 + CONDITION_CHANNELS * spec.inpaint,
        out_channels=1,
        block_out_channels=tuple(spec.channels),
        layers_per_block=spec.layers_per_block,
        down_block_types=("DownBlock2D",) * levels,
        up_block_types=("UpBlock2D",) * levels,
        norm_num_groups=8,
        num_class_embeds=NUM_CLASS_EMBEDS,
    )


def build_scheduler(spec: DiffusionPriorSpec) -> Any:
    """A DDIM scheduler whose last step keeps some noise: ``steps_offset=1`` and
    ``set_alpha_to_one=False`` (with ``steps_offset=0`` the last DDIM step has zero variance and
    its log-density is not finite; see :class:`rl4gen.policies.diffusion.DiffusionPolicy`)."""
    from diffusers import DDIMScheduler

    return DDIMScheduler(
        num_train_timesteps=spec.num_train_timesteps,
        beta_schedule="squaredcos_cap_v2",
        clip_sample=True,
        set_alpha_to_one=False,
        steps_offset=1,
        prediction_type="epsilon",
    )


def ddpm_loss(unet: Any, images: Tensor, labels: Tensor, alphas_cumprod: Tensor, generator: torch.Generator) -> Tensor:
    """The DDPM objective: MSE between the true noise and the UNet's prediction at a random t
    (an inpainting prior gets random holes and is scored on the hidden pixels only)."""
    n = images.shape[0]
    t = torch.randint(0, len(alphas_cumprod), (n,), generator=generator)
    noise = torch.randn(images.shape, generator=generator)
    a = alphas_cumprod[t].view(-1, 1, 1, 1)
    noisy = a.sqrt() * images + (1 - a).sqrt() * noise
    if unet.config.in_channels == 1:
        return F.mse_loss(unet(noisy, t, class_labels=labels).sample, noise)
    known_mask = random_masks(n, images.shape[-1], generator)
    inputs = unet_input(noisy, inpaint_condition(images, known_mask), unet.config.in_channels)
    hidden = 1 - known_mask
    err = (unet(inputs, t, class_labels=labels).sample - noise) ** 2
    return (err * hidden).sum() / hidden.sum().clamp(min=1.0)


def pretrain_diffusion(
    spec: DiffusionPriorSpec, out_dir: Path, log: Callable[[str], None] = print
) -> dict[str, Any]:
    """Train the prior on the digits' training split for a fixed ``spec.steps`` and save it."""
    from rl4gen.images import load_digits

    train = load_digits("train", spec.image_size)
    test = load_digits("test", spec.image_size)
    torch.manual_seed(spec.seed)
    generator = torch.Generator().manual_seed(spec.seed)
    unet = build_unet(spec)
    scheduler = build_scheduler(spec)
    alphas = scheduler.alphas_cumprod.float()
    optimizer = torch.optim.AdamW(unet.parameters(), lr=spec.learning_rate, weight_decay=1e-4)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, spec.learning_rate, total_steps=spec.steps, pct_start=0.05)
    start = time.perf_counter()
    unet.train()
    running = 0.0
    for step in range(spec.steps):
        idx = torch.randint(0, len(train), (spec.batch_size,), generator=generator)
        labels = train.labels[idx].clone()
        drop = torch.rand(spec.batch_size, generator=generator) < spec.label_dropout
        labels[drop] = NULL_CLASS
        loss = ddpm_loss(unet, train.images[idx], labels, alphas, generator)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(unet.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        running = 0.98 * running + 0.02 * loss.item() if step else loss.item()
        if (step + 1) % 250 == 0:
            log(f"pretrain digits diffusion: step {step + 1}/{spec.steps} loss {running:.4f}")
    unet.eval()
    with torch.inference_mode():
        held = ddpm_loss(unet, test.images, test.labels, alphas, torch.Generator().manual_seed(1)).item()
    seconds = time.perf_counter() - start
    log(f"digits diffusion prior: held-out DDPM loss {held:.4f} after {spec.steps} steps ({seconds:.0f} s)")
    unet.save_pretrained(str(out_dir / "unet"), safe_serialization=True)
    scheduler.save_pretrained(str(out_dir / "scheduler"))
    return {
        "steps": spec.steps,
        "final_loss": running,
        "held_out_loss": held,
        "parameters": sum(p.numel() for p in unet.parameters()),
        "seconds": round(seconds, 1),
    }


def load_diffusion_prior(path: str | Path) -> tuple[Any, Any]:
    """``(unet, scheduler)`` from a folder written by :func:`pretrain_diffusion` (diffusers format)."""
    from diffusers import DDIMScheduler, UNet2DModel

    path = Path(path).expanduser()
    if not (path / "unet").is_dir() or not (path / "scheduler").is_dir():
        from rl4gen.config import ConfigError

        raise ConfigError(
            f"{str(path)!r} is not a diffusion model folder: it needs 'unet/' and 'scheduler/' "
            "subfolders (run `rl4gen pretrain digits` to build one)."
        )
    unet = UNet2DModel.from_pretrained(str(path / "unet"))
    scheduler = DDIMScheduler.from_pretrained(str(path / "scheduler"))
    return unet, scheduler
