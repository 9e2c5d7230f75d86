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
    """An RL algorithm for generation: advantages from rewards, then a loss on log-probs.

    Each step the trainer makes ``num_iterations`` passes over the batch of samples, each split
    into ``num_mini_batches`` minibatches (one optimizer step each; rows are shuffled between
    passes when there are several). Algorithms with a critic set ``needs_values``: the trainer then
    records ``rollout.values`` at sampling time and passes the current values to :meth:`loss`.
    """

    num_iterations: int
    num_mini_batches: int
    needs_reference: bool
    needs_values: bool

    def advantages(self, rollout: Rollout) -> Tensor:  # (B,) or (B, T)
        """Advantages from ``rollout.rewards`` (and ``ref_logprobs`` where the KL is in the reward).
        An algorithm with a critic also fills ``rollout.returns``, its value targets."""
        ...

    def loss(self, logprobs: Tensor, batch: Rollout, totals: StepTotals, values: Tensor | None = None) -> LossOutput:
        """The loss on one micro-batch; ``logprobs`` (B, T) and ``values`` (B, T, critics only)
        carry gradients. ``totals`` are the sizes of the minibatch the micro-batch belongs to."""
        ...

    def rollout_metrics(self, rollout: Rollout) -> dict[str, Tensor]:
        """Scalars describing this process's rollout after :meth:`advantages` (the trainer
        averages them over processes and logs them under these keys)."""
        ...

    def end_step(self, metrics: dict[str, float], num_sequences: int) -> None:
        """Called once per step after the update, with the step's metrics (all processes) and the
        number of sequences sampled (all processes): adaptive coefficients adapt here."""
        ...

    def state_dict(self) -> dict[str, Any]:
        """State to checkpoint (moving baselines, adaptive coefficients)."""
        ...

    def load_state_dict(self, state: dict[str, Any]) -> None:
        ...
