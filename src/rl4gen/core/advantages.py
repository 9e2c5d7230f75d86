"""Advantage estimators for generative RL: group-normalised (GRPO), leave-one-out (RLOO),
generalised advantage estimation with a critic (PPO), whitening.

All functions are pure: tensors in, tensors out, no state. Rewards are one scalar per sample,
except for :func:`gae`, which takes one reward per token.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor

ScaleRewards = Literal["group", "batch", "none"]


def _group_stats(rewards: Tensor, group_ids: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Per-sample group sum, group count and group unbiased std, broadcast back to (B,)."""
    _, inverse = torch.unique(group_ids, return_inverse=True)  # (B,) dense group index
    num_groups = int(inverse.max().item()) + 1
    counts = torch.zeros(num_groups, dtype=rewards.dtype, device=rewards.device)
    sums = torch.zeros_like(counts)
    counts.index_add_(0, inverse, torch.ones_like(rewards))
    sums.index_add_(0, inverse, rewards)
    means = sums / counts
    sq = torch.zeros_like(counts).index_add_(0, inverse, (rewards - means[inverse]) ** 2)
    # Unbiased (n - 1) std, as torch.std and TRL use; a group of one has no spread.
    std = torch.sqrt(sq / (counts - 1).clamp(min=1))
    return sums[inverse], counts[inverse], std[inverse]


def group_normalized_advantages(
    rewards: Tensor,  # (B,)
    group_ids: Tensor,  # (B,)
    scale_rewards: ScaleRewards = "group",
    eps: float = 1e-4,
) -> Tensor:  # (B,)
    """GRPO advantages: reward minus its group mean, optionally divided by a std.

    Args:
        rewards: one reward per sample.
        group_ids: the context (prompt) each sample belongs to; samples of one group are compared.
        scale_rewards: ``"group"`` divides by the group's std (GRPO), ``"batch"`` by the std of the
            whole batch (more robust to tiny groups), ``"none"`` keeps the raw difference (Dr. GRPO).
        eps: added to the std so a group with identical rewards gives zero, not NaN.
    """
    sums, counts, group_std = _group_stats(rewards, group_ids)
    advantages = rewards - sums / counts
    if scale_rewards == "group":
        advantages = advantages / (group_std + eps)
    elif scale_rewards == "batch":
        advantages = advantages / (rewards.std() + eps)
    elif scale_rewards != "none":
        raise ValueError(f"scale_rewards must be 'group', 'batch' or 'none', got {scale_rewards!r}")
    return advantages


def leave_one_out_advantages(rewards: Tensor, group_ids: Tensor) -> Tensor:  # (B,) -> (B,)
    """RLOO advantages: each reward minus the mean of the *other* rewards of its group.

    ``A_i = r_i - (sum_g - r_i) / (n_g - 1)``. Every group must hold at least two samples.
    """
    sums, counts, _ = _group_stats(rewards, group_ids)
    if bool((counts < 2).any()):
        raise ValueError("leave-one-out baselines need at least two samples per group")
    return rewards - (sums - rewards) / (counts - 1)


def whiten(
    values: Tensor, mask: Tensor | None = None, shift_mean: bool = True, eps: float = 1e-8
) -> Tensor:
    """Normalise to zero mean and unit variance over the entries where ``mask`` is 1.

    Uses the biased (population) variance. With ``shift_mean=False`` the mean is added back, so
    only the scale changes (as PPO implementations do for rewards).
    """
    if mask is None:
        mask = torch.ones_like(values)
    mask = mask.to(values.dtype)
    n = mask.sum().clamp(min=1)
    mean = (values * mask).sum() / n
    var = (((values - mean) * mask) ** 2).sum() / n
    out = (values - mean) * torch.rsqrt(var + eps)
    if not shift_mean:
        out = out + mean
    return out * mask


def gae(
    rewards: Tensor,  # (B, T) per-token rewards, right-padded
    values: Tensor,  # (B, T) critic values V(s_t) of the state before each action
    mask: Tensor,  # (B, T) 1 on real tokens, 0 on the padding after the end
    gamma: float,
    lam: float,
) -> tuple[Tensor, Tensor]:  # advantages (B, T), returns (B, T)
    """Generalised advantage estimation (Schulman et al., 2016).

    ``delta_t = r_t + gamma * V(s_{t+1}) - V(s_t)`` and ``A_t = delta_t + gamma * lam * A_{t+1}``,
    with ``V = 0`` and ``A = 0`` after a sequence's last real token (the episode ends there).
    Returns are ``A_t + V(s_t)``, the value targets. Padding positions are 0 in both outputs.
    ``lam = 1`` gives Monte-Carlo returns minus the value; ``lam = 0`` the one-step TD error.
    """
    m = mask.to(values.dtype)
    rewards = rewards * m
    values = values * m
    b, t = values.shape
    next_value = torch.zeros(b, dtype=values.dtype, device=values.device)  # V(s_{t+1})
    running = torch.zeros_like(next_value)  # A_{t+1}
    out = torch.zeros_like(values)
    for i in reversed(range(t)):
        delta = rewards[:, i] + gamma * next_value - values[:, i]
        running = (delta + gamma * lam * running) * m[:, i]
        out[:, i] = running
        next_value = values[:, i]
    return out, (out + values) * m
