"""Masked reductions, the clipped policy-gradient loss and its aggregation variants."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

LossType = Literal["grpo", "dr_grpo", "dapo"]


def masked_sum(values: Tensor, mask: Tensor, dim: int | None = None) -> Tensor:
    """Sum of ``values`` where ``mask`` is 1 (over ``dim``, or everything)."""
    masked = values * mask.to(values.dtype)
    return masked.sum() if dim is None else masked.sum(dim=dim)


def masked_mean(values: Tensor, mask: Tensor, dim: int | None = None) -> Tensor:
    """Mean of ``values`` where ``mask`` is 1; an all-masked row gives 0, not NaN."""
    mask = mask.to(values.dtype)
    total = masked_sum(values, mask, dim)
    count = mask.sum() if dim is None else mask.sum(dim=dim)
    return total / count.clamp(min=1.0)


@dataclass
class ClippedLoss:
    """Per-token clipped surrogate loss and which tokens were clipped."""

    per_token_loss: Tensor  # (B, T)
    ratio: Tensor  # (B, T) pi / pi_old
    low_clipped: Tensor  # (B, T) bool: ratio < 1 - eps_low with a negative advantage
    high_clipped: Tensor  # (B, T) bool: ratio > 1 + eps_high with a positive advantage


def clipped_policy_loss(
    logprobs: Tensor,  # (B, T) current policy, with gradients
    old_logprobs: Tensor,  # (B, T) sampling policy
    advantages: Tensor,  # (B,) or (B, T)
    epsilon_low: float,
    epsilon_high: float,
) -> ClippedLoss:
    """PPO's clipped surrogate, per token: ``-min(r A, clip(r, 1-eps_low, 1+eps_high) A)``.

    ``r = exp(logprobs - old_logprobs)``. A sequence-level advantage of shape (B,) is broadcast
    over the tokens. Masking and averaging are left to :func:`aggregate_loss`.
    """
    if advantages.dim() == 1:
        advantages = advantages.unsqueeze(1)  # (B, 1)
    ratio = torch.exp(logprobs - old_logprobs)
    clipped = torch.clamp(ratio, 1.0 - epsilon_low, 1.0 + epsilon_high)
    per_token = -torch.min(ratio * advantages, clipped * advantages)
    low = (ratio < 1.0 - epsilon_low) & (advantages < 0)
    high = (ratio > 1.0 + epsilon_high) & (advantages > 0)
    return ClippedLoss(per_token, ratio, low, high)


def aggregate_loss(
    per_token_loss: Tensor,  # (B, T)
    mask: Tensor,  # (B, T)
    loss_type: LossType,
    *,
    max_completion_length: int | None = None,
    num_sequences: float | None = None,
    num_tokens: float | None = None,
) -> Tensor:
    """Reduce a per-token loss to a scalar the way each GRPO variant does.

    - ``grpo``: mean over each sequence's tokens, then mean over sequences (short sequences weigh
      as much as long ones, so each of their tokens weighs more).
    - ``dr_grpo``: sum over all tokens divided by a constant, ``num_sequences *
      max_completion_length`` (Dr. GRPO, no length bias).
    - ``dapo``: sum over all tokens divided by the number of real tokens (token-level mean).

    ``num_sequences`` and ``num_tokens`` default to this batch's; pass the whole step's values when
    the batch is one micro-batch of several, so that summing micro-batch losses gives the full-batch
    loss exactly.
    """
    mask = mask.to(per_token_loss.dtype)
    if num_sequences is None:
        num_sequences = float(per_token_loss.shape[0])
    if loss_type == "grpo":
        per_seq = masked_sum(per_token_loss, mask, dim=1) / mask.sum(dim=1).clamp(min=1.0)
        return per_seq.sum() / num_sequences
    if loss_type == "dr_grpo":
        if max_completion_length is None:
            raise ValueError("loss_type 'dr_grpo' needs max_completion_length")
        return masked_sum(per_token_loss, mask) / (num_sequences * max_completion_length)
    if loss_type == "dapo":
        if num_tokens is None:
            num_tokens = float(mask.sum().item())
        return masked_sum(per_token_loss, mask) / max(num_tokens, 1.0)
    raise ValueError(f"loss_type must be 'grpo', 'dr_grpo' or 'dapo', got {loss_type!r}")


def clip_fractions(clipped: ClippedLoss, mask: Tensor) -> dict[str, Tensor]:
    """Token *sums* of clipped tokens (divide by the token count to get fractions)."""
    m = mask.to(clipped.ratio.dtype)
    low = masked_sum(clipped.low_clipped.to(m.dtype), m)
    high = masked_sum(clipped.high_clipped.to(m.dtype), m)
    return {"clip_ratio/low_mean": low, "clip_ratio/high_mean": high, "clip_ratio/region_mean": low + high}


@dataclass
class ClippedValueLoss:
    """Per-token clipped value loss and where the clipped term was the larger one."""

    per_token_loss: Tensor  # (B, T) 0.5 * max((v - R)^2, (v_clip - R)^2)
    clipped: Tensor  # (B, T) bool: the clipped error exceeded the unclipped one


def clipped_value_loss(
    values: Tensor,  # (B, T) current critic, with gradients
    old_values: Tensor,  # (B, T) critic at sampling time
    returns: Tensor,  # (B, T) value targets
    cliprange_value: float,
) -> ClippedValueLoss:
    """PPO's clipped value loss, per token (as in OpenAI baselines and TRL):
    ``0.5 * max((v - R)^2, (clip(v, v_old - c, v_old + c) - R)^2)``.

    The new value may not profit from moving more than ``c`` away from the sampling-time value.
    Masking and averaging are left to the caller.
    """
    clipped_values = old_values + torch.clamp(values - old_values, -cliprange_value, cliprange_value)
    loss_unclipped = (values - returns) ** 2
    loss_clipped = (clipped_values - returns) ** 2
    per_token = 0.5 * torch.max(loss_unclipped, loss_clipped)
    return ClippedValueLoss(per_token, loss_clipped > loss_unclipped)


def explained_variance(values: Tensor, returns: Tensor, mask: Tensor) -> Tensor:  # scalar
    """``1 - Var(returns - values) / Var(returns)`` over the masked tokens (population variances).

    1 is a perfect critic, 0 one no better than a constant, negative worse than a constant. A batch
    whose returns do not vary gives NaN, as in Stable-Baselines3.
    """
    m = mask.to(values.dtype)
    n = m.sum().clamp(min=1.0)

    def var(x: Tensor) -> Tensor:
        mean = (x * m).sum() / n
        return (((x - mean) * m) ** 2).sum() / n

    var_returns = var(returns)
    if float(var_returns) == 0.0:
        return torch.tensor(float("nan"), dtype=values.dtype)
    return 1.0 - var(returns - values) / var_returns
