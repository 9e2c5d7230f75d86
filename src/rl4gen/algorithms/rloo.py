"""RLOO: REINFORCE Leave-One-Out.

Kool et al., "Buy 4 REINFORCE Samples, Get a Baseline for Free!", 2019; Ahmadian et al., "Back to
Basics: Revisiting REINFORCE Style Optimization for Learning from Human Feedback in LLMs", 2024
(arXiv:2402.14740). Each sample's baseline is the mean reward of the *other* samples of its
group. As in the paper, the KL to the reference is a sequence-level penalty in the reward:
``r - beta * sum_t k1_t``, with k1 taken at the sampling log-probs. The update is the clipped
surrogate (which reduces to plain REINFORCE when ``num_iterations`` is 1), aggregated by
``loss_type`` (``dr_grpo`` by default: a constant normaliser keeps sequence-level credit).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from rl4gen.algorithms.base import LossOutput, StepTotals
from rl4gen.config import RLOOConfig
from rl4gen.core.advantages import leave_one_out_advantages, whiten
from rl4gen.core.kl import kl_estimate
from rl4gen.core.losses import aggregate_loss, clip_fractions, clipped_policy_loss, masked_sum
from rl4gen.core.rollout import Rollout


def kl_penalised_rewards(rollout: Rollout, beta: float) -> Tensor:  # (B,)
    """``rewards - beta * sequence KL`` (k1 summed over tokens, at the sampling log-probs)."""
    assert rollout.rewards is not None
    if beta == 0:
        return rollout.rewards
    assert rollout.ref_logprobs is not None
    seq_kl = masked_sum(kl_estimate(rollout.logprobs, rollout.ref_logprobs, "k1"), rollout.mask, dim=1)
    return rollout.rewards - beta * seq_kl


class RLOO:
    def __init__(self, config: RLOOConfig) -> None:
        self.config = config
        self.num_iterations = config.num_iterations
        self.num_mini_batches = 1
        self.needs_reference = config.beta > 0
        self.needs_values = False

    def advantages(self, rollout: Rollout) -> Tensor:  # (B,)
        rewards = kl_penalised_rewards(rollout, self.config.beta)
        adv = leave_one_out_advantages(rewards, rollout.group_ids)
        if self.config.normalize_advantages:
            adv = whiten(adv)
        return adv

    def loss(self, logprobs: Tensor, batch: Rollout, totals: StepTotals, values: Tensor | None = None) -> LossOutput:
        cfg = self.config
        assert batch.advantages is not None
        eps_high = cfg.epsilon if cfg.epsilon_high is None else cfg.epsilon_high
        clipped = clipped_policy_loss(logprobs, batch.logprobs, batch.advantages, cfg.epsilon, eps_high)
        sums = clip_fractions(clipped, batch.mask)
        if cfg.beta > 0:
            assert batch.ref_logprobs is not None
            with torch.no_grad():
                sums["kl"] = masked_sum(kl_estimate(logprobs, batch.ref_logprobs, "k3"), batch.mask)
        loss = aggregate_loss(
            clipped.per_token_loss,
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
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass
