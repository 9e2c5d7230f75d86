"""REINFORCE with a moving-average baseline.

Williams, "Simple Statistical Gradient-Following Algorithms for Connectionist Reinforcement
Learning", 1992. The baseline ``b`` is an exponential moving average of batch-mean rewards
(updated *after* computing this batch's advantages, so it never sees the rewards it is
subtracted from). The KL to the reference, when ``beta > 0``, is a sequence-level penalty in the
reward, as in RLOO. The loss is ``-A * log pi(a)`` per token, aggregated by ``loss_type``
(``dr_grpo`` by default: the sum over a sequence's tokens divided by a constant).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from rl4gen.algorithms.base import LossOutput, StepTotals
from rl4gen.algorithms.rloo import kl_penalised_rewards
from rl4gen.config import ReinforceConfig
from rl4gen.core.advantages import whiten
from rl4gen.core.kl import kl_estimate
from rl4gen.core.losses import aggregate_loss, masked_sum
from rl4gen.core.rollout import Rollout


class Reinforce:
    def __init__(self, config: ReinforceConfig) -> None:
        self.config = config
        self.num_iterations = 1  # on-policy by definition
        self.num_mini_batches = 1
        self.needs_reference = config.beta > 0
        self.needs_values = False
        self.baseline: float | None = None

    def advantages(self, rollout: Rollout) -> Tensor:  # (B,)
        rewards = kl_penalised_rewards(rollout, self.config.beta)
        batch_mean = float(rewards.mean().item())
        baseline = batch_mean if self.baseline is None else self.baseline
        adv = rewards - baseline
        decay = self.config.baseline_decay
        self.baseline = batch_mean if self.baseline is None else decay * self.baseline + (1 - decay) * batch_mean
        if self.config.normalize_advantages:
            adv = whiten(adv)
        return adv

    def loss(self, logprobs: Tensor, batch: Rollout, totals: StepTotals, values: Tensor | None = None) -> LossOutput:
        cfg = self.config
        assert batch.advantages is not None
        adv = batch.advantages if batch.advantages.dim() == 2 else batch.advantages.unsqueeze(1)
        per_token = -adv * logprobs  # (B, T); per-token advantages (SeqGAN) or one per sequence
        sums: dict[str, Tensor] = {}
        if cfg.beta > 0:
            assert batch.ref_logprobs is not None
            with torch.no_grad():
                sums["kl"] = masked_sum(kl_estimate(logprobs, batch.ref_logprobs, "k3"), batch.mask)
        loss = aggregate_loss(
            per_token,
            batch.mask,
            cfg.loss_type,
            max_completion_length=totals.max_completion_length,
            num_sequences=totals.num_sequences,
            num_tokens=totals.num_tokens,
        )
        return LossOutput(loss, sums)

    def rollout_metrics(self, rollout: Rollout) -> dict[str, Tensor]:
        return {}

    def end_step(self, metrics: dict[str, float], num_sequences: int) -> None:
        pass

    def state_dict(self) -> dict[str, Any]:
        return {"baseline": self.baseline}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.baseline = state.get("baseline")
