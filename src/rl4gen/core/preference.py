"""Preference losses: DPO (sigmoid, with optional label smoothing), IPO, Bradley–Terry, and the
calibration error of preference probabilities.

Pure tensor math, unit-tested against closed forms. Inputs are per-pair log-probs of the chosen
and rejected completions under the policy and the frozen reference, shape (B,).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

DPOLossType = Literal["sigmoid", "ipo"]


@dataclass
class PreferenceLoss:
    losses: Tensor  # (B,) per pair, with gradients
    chosen_rewards: Tensor  # (B,) beta * (log pi - log ref) of the chosen completion, detached
    rejected_rewards: Tensor  # (B,) the same for the rejected completion, detached


def dpo_loss(
    policy_chosen: Tensor,  # (B,)
    policy_rejected: Tensor,  # (B,)
    ref_chosen: Tensor,  # (B,)
    ref_rejected: Tensor,  # (B,)
    beta: float,
    loss_type: DPOLossType = "sigmoid",
    label_smoothing: float = 0.0,
) -> PreferenceLoss:
    """Per-pair preference loss on ``h = (log pi_c - log pi_r) - (log ref_c - log ref_r)``.

    - ``sigmoid`` (DPO, Rafailov et al. 2023): ``-(1 - eps) log sigma(beta h) - eps log sigma(-beta h)``,
      where ``eps = label_smoothing`` is the assumed probability that a label is flipped
      (conservative DPO, Mitchell 2023); ``eps = 0`` is plain DPO.
    - ``ipo`` (Azar et al. 2023): ``(h - 1 / (2 beta))^2``; callers pass length-averaged log-probs,
      as the paper and TRL do.

    The implicit rewards are ``beta * (log pi - log ref)``, as TRL logs them.
    """
    h = (policy_chosen - policy_rejected) - (ref_chosen - ref_rejected)
    if loss_type == "sigmoid":
        losses = -(1.0 - label_smoothing) * F.logsigmoid(beta * h) - label_smoothing * F.logsigmoid(-beta * h)
    elif loss_type == "ipo":
        losses = (h - 1.0 / (2.0 * beta)) ** 2
    else:
        raise ValueError(f"loss_type must be 'sigmoid' or 'ipo', got {loss_type!r}")
    chosen = beta * (policy_chosen - ref_chosen).detach()
    rejected = beta * (policy_rejected - ref_rejected).detach()
    return PreferenceLoss(losses, chosen, rejected)


def bradley_terry_loss(chosen: Tensor, rejected: Tensor) -> Tensor:
    """``-log sigma(r_c - r_r)`` elementwise: the negative log-likelihood of the preference under
    the Bradley–Terry model (Bradley & Terry 1952; the InstructGPT reward-model loss)."""
    return -F.logsigmoid(chosen - rejected)


def expected_calibration_error(probs: Tensor, outcomes: Tensor, num_bins: int = 10) -> Tensor:
    """ECE: the gap between predicted probability and observed frequency, averaged over equal-width
    bins of the predicted probability and weighted by the bin's share of predictions.

    ``probs`` (N,) in [0, 1]; ``outcomes`` (N,) in {0, 1}.
    """
    bins = torch.clamp((probs * num_bins).long(), max=num_bins - 1)  # (N,)
    total = torch.zeros((), dtype=probs.dtype)
    for b in range(num_bins):
        in_bin = bins == b
        if bool(in_bin.any()):
            gap = (probs[in_bin].mean() - outcomes[in_bin].to(probs.dtype).mean()).abs()
            total = total + gap * in_bin.sum() / probs.numel()
    return total
