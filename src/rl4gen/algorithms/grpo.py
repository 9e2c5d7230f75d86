"""GRPO: Group Relative Policy Optimization.

Shao et al., "DeepSeekMath: Pushing the Limits of Mathematical Reasoning in Open Language
Models", 2024 (arXiv:2402.03300). Advantages are rewards normalised within each group of
``num_generations`` samples of the same prompt (no critic). The loss is PPO's clipped surrogate
per token against the sampling log-probs, plus ``beta`` times the k3 estimate of
KL(policy || reference) in the loss, aggregated by ``loss_type``: ``grpo`` (the paper: mean over
each sequence, then over sequences), ``dr_grpo`` (Liu et al., 2025: constant normaliser) or
``dapo`` (Yu et al., 2025: token-level mean). ``epsilon_high`` is DAPO's clip-higher.
With ``stat_buffer_size`` set, advantages come from DDPO's per-condition running statistics
(:mod:`rl4gen.algorithms.stat_tracker`) instead of the batch's groups: GRPO on a diffusion policy
with it is DDPO's clipped objective.
"""

from __future__ import annotations

from typing import Any

from torch import Tensor

from rl4gen.algorithms.base import LossOutput, StepTotals
from rl4gen.algorithms.stat_tracker import PerContextStatTracker
from rl4gen.config import GRPOConfig
from rl4gen.core.advantages import group_normalized_advantages
from rl4gen.core.kl import kl_estimate
from rl4gen.core.losses import aggregate_loss, clip_fractions, clipped_policy_loss, masked_sum
from rl4gen.core.rollout import Rollout


class GRPO:
    def __init__(self, config: GRPOConfig) -> None:
        self.config = config
        self.num_iterations = config.num_iterations
        self.num_mini_batches = 1
        self.needs_reference = config.beta > 0
        self.needs_values = False
        self.stat_tracker = (
            PerContextStatTracker(config.stat_buffer_size, config.stat_min_count) if config.stat_buffer_size else None
        )

    def advantages(self, rollout: Rollout) -> Tensor:  # (B,)
        assert rollout.rewards is not None
        if self.stat_tracker is not None:
            return self.stat_tracker(rollout.contexts, rollout.rewards)
        return group_normalized_advantages(
            rollout.rewards, rollout.group_ids, self.config.scale_rewards
        )

    def loss(self, logprobs: Tensor, batch: Rollout, totals: StepTotals, values: Tensor | None = None) -> LossOutput:
        cfg = self.config
        assert batch.advantages is not None
        eps_high = cfg.epsilon if cfg.epsilon_high is None else cfg.epsilon_high
        clipped = clipped_policy_loss(logprobs, batch.logprobs, batch.advantages, cfg.epsilon, eps_high)
        per_token = clipped.per_token_loss  # (B, T)
        sums = clip_fractions(clipped, batch.mask)
        if cfg.beta > 0:
            assert batch.ref_logprobs is not None
            kl = kl_estimate(logprobs, batch.ref_logprobs, "k3")  # (B, T), k3 estimator
            per_token = per_token + cfg.beta * kl
            sums["kl"] = masked_sum(kl.detach(), batch.mask)
        loss = aggregate_loss(
            per_token,
            batch.mask,
            cfg.loss_type,
            max_completion_length=totals.max_completion_length,
            num_sequences=totals.num_sequences,
            num_tokens=totals.num_tokens,
        )
        return LossOutput(loss, {k: v.detach() for k, v in sums.items()})

    def rollout_metrics(self, rollout: Rollout) -> dict[str, Tensor]:
        return {}

    def end_step(self, metrics: dict[str, float], num_sequences: int) -> None:
        pass

    def state_dict(self) -> dict[str, Any]:
        return {"stat_tracker": self.stat_tracker.state_dict()} if self.stat_tracker is not None else {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if self.stat_tracker is not None and "stat_tracker" in state:
            self.stat_tracker.load_state_dict(state["stat_tracker"])
