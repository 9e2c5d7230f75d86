"""Per-token estimators of KL(policy || reference) from samples drawn by the policy.

With ``log_ratio = log p_ref(a) - log p(a)`` and ``a ~ p`` (Schulman, "Approximating KL
Divergence", 2020):

- ``k1 = -log_ratio``: unbiased, high variance, can be negative per token;
- ``k2 = log_ratio**2 / 2``: biased, low variance, always >= 0;
- ``k3 = exp(log_ratio) - log_ratio - 1``: unbiased, low variance, always >= 0 (GRPO's choice).
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor

KLEstimator = Literal["k1", "k2", "k3"]


def kl_estimate(
    logprobs: Tensor,  # (B, T) under the policy that sampled
    ref_logprobs: Tensor,  # (B, T) under the reference
    estimator: KLEstimator = "k3",
) -> Tensor:  # (B, T)
    """Per-token KL estimate; average it with :func:`rl4gen.core.losses.masked_mean`."""
    log_ratio = ref_logprobs - logprobs
    if estimator == "k1":
        return -log_ratio
    if estimator == "k2":
        return 0.5 * log_ratio**2
    if estimator == "k3":
        return torch.exp(log_ratio) - log_ratio - 1.0
    raise ValueError(f"KL estimator must be 'k1', 'k2' or 'k3', got {estimator!r}")


class FixedKLController:
    """A constant KL coefficient (``value``), with the adaptive controller's interface."""

    def __init__(self, kl_coef: float) -> None:
        self.value = kl_coef

    def update(self, current_kl: float, n_steps: int) -> None:
        """Nothing to adapt."""


class AdaptiveKLController:
    """The adaptive KL coefficient of Ziegler et al., "Fine-Tuning Language Models from Human
    Preferences", 2019 (section 2.2): a proportional controller steering the KL toward ``target``.

    ``e = clip(KL / target - 1, -0.2, 0.2)`` and ``value <- value * (1 + e * n_steps / horizon)``,
    where ``KL`` is the mean summed KL per sequence of the last batch and ``n_steps`` the number of
    sequences in it.
    """

    def __init__(self, kl_coef: float, target: float, horizon: int) -> None:
        self.value = kl_coef
        self.target = target
        self.horizon = horizon

    def update(self, current_kl: float, n_steps: int) -> None:
        error = min(max(current_kl / self.target - 1.0, -0.2), 0.2)
        self.value *= 1.0 + error * n_steps / self.horizon
