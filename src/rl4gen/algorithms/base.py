"""What the trainer needs from an algorithm, and the per-step totals losses normalise by."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from torch import Tensor

from rl4gen.core.rollout import Rollout


@dataclass(frozen=True)
class StepTotals:
    """Sizes of the whole step's batch (on this process), so micro-batch losses add up exactly."""

    num_sequences: float
    num_tokens: float
    max_completion_length: int


@dataclass
class LossOutput:
    loss: Tensor  # scalar, this micro-batch's share of the step loss
    token_sums: dict[str, Tensor]  # metric -> sum over this micro-batch's tokens (kl, clip ratios)


class Algorithm(Protocol):
    """An RL algorithm for generation: advantages from rewards, then a loss on log-probs."""

    num_iterations: int
    needs_reference: bool

    def advantages(self, rollout: Rollout) -> Tensor:  # (B,) or (B, T)
        """Advantages from ``rollout.rewards`` (and ``ref_logprobs`` where the KL is in the reward)."""
        ...

    def loss(self, logprobs: Tensor, batch: Rollout, totals: StepTotals) -> LossOutput:
        """The loss on one micro-batch; ``logprobs`` (B, T) carry gradients."""
        ...

    def state_dict(self) -> dict[str, Any]:
        """State to checkpoint (moving baselines, adaptive coefficients)."""
        ...

    def load_state_dict(self, state: dict[str, Any]) -> None:
        ...
