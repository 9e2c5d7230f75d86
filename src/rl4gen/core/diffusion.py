"""DDIM with η > 0 as a stochastic policy: each denoising step is a Gaussian action.

Song et al., "Denoising Diffusion Implicit Models", 2021 (eq. 12 and 16), as used by DDPO (Black
et al., 2023) and DPOK (Fan et al., 2023). From the latent ``x_t`` and the model's noise
prediction ``eps``, the step to the previous timestep ``s`` draws

    x_s ~ N(mu, sigma^2 I),   x0 = (x_t - sqrt(1 - a_t) eps) / sqrt(a_t),
    sigma = eta * sqrt((1 - a_s) / (1 - a_t) * (1 - a_t / a_s)),
    mu = sqrt(a_s) x0 + sqrt(1 - a_s - sigma^2) eps,

with ``a`` the cumulative product of the noise schedule's alphas. The log-density of the action
``x_s`` is averaged over pixels (not summed), as every diffusion-RL reference does, so that its
scale does not grow with the image size. Pure tensor functions; no model, no I/O.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor


def ddim_sigma(alpha_t: Tensor, alpha_prev: Tensor, eta: float) -> Tensor:
    """Standard deviation of a DDIM step from cumulative alphas ``a_t`` to ``a_s`` (any shape)."""
    variance = (1 - alpha_prev) / (1 - alpha_t) * (1 - alpha_t / alpha_prev)
    return eta * variance.clamp(min=0).sqrt()


def ddim_step_mean(
    sample: Tensor,  # (B, C, H, W) x_t
    eps: Tensor,  # (B, C, H, W) predicted noise
    alpha_t: Tensor,  # (B,) cumulative alpha at t
    alpha_prev: Tensor,  # (B,) cumulative alpha at the previous timestep
    sigma: Tensor,  # (B,) the step's standard deviation
    clip_sample: float | None = 1.0,
) -> Tensor:  # (B, C, H, W) mean of x_s
    """Mean of the DDIM step; ``x0`` is clipped to ``[-clip_sample, clip_sample]`` when given
    (and the noise re-derived from it, as diffusers does), which keeps few-step sampling in range."""
    shape = (-1,) + (1,) * (sample.dim() - 1)
    a_t, a_s, sig = alpha_t.view(shape), alpha_prev.view(shape), sigma.view(shape)
    x0 = (sample - (1 - a_t).sqrt() * eps) / a_t.sqrt()
    if clip_sample is not None:
        x0 = x0.clamp(-clip_sample, clip_sample)
        eps = (sample - a_t.sqrt() * x0) / (1 - a_t).sqrt()
    direction = (1 - a_s - sig**2).clamp(min=0).sqrt() * eps
    return a_s.sqrt() * x0 + direction


def gaussian_logprob(
    value: Tensor,  # (B, C, H, W) the action x_s
    mean: Tensor,  # (B, C, H, W)
    sigma: Tensor,  # (B,) > 0
    weight: Tensor | None = None,  # (B, C, H, W) 1 on the pixels the policy chooses, or None for all
) -> Tensor:  # (B,)
    """Per-pixel Gaussian log-density of ``value``, averaged over the pixels (``weight`` picks
    which, e.g. the hidden pixels of an inpainting task)."""
    shape = (-1,) + (1,) * (value.dim() - 1)
    sig = sigma.view(shape)
    per_pixel = -((value - mean) ** 2) / (2 * sig**2) - sig.log() - 0.5 * math.log(2 * math.pi)
    if weight is None:
        return per_pixel.flatten(1).mean(dim=1)
    w = weight.expand_as(per_pixel).flatten(1)
    return (per_pixel.flatten(1) * w).sum(dim=1) / w.sum(dim=1).clamp(min=1.0)


def gaussian_entropy(sigma: Tensor) -> Tensor:
    """Differential entropy per pixel of ``N(mu, sigma^2)``: ``0.5 log(2 pi e sigma^2)``."""
    return 0.5 * torch.log(2 * math.pi * math.e * sigma**2)


__all__ = ["ddim_sigma", "ddim_step_mean", "gaussian_entropy", "gaussian_logprob"]
