"""PPO with a critic: the InstructGPT recipe.

Schulman et al., "Proximal Policy Optimization Algorithms", 2017 (arXiv:1707.06347), as applied
to language models by Ziegler et al., "Fine-Tuning Language Models from Human Preferences", 2019
(arXiv:1909.08593) and Ouyang et al., "Training language models to follow instructions with human
feedback" (InstructGPT), 2022; the details follow TRL's PPOTrainer.

- Reward per token: ``-kl_coef * kl_t`` at every completion token (``kl_t`` the k1 estimate
  ``log p - log p_ref`` at the sampling log-probs, or k3), plus the sequence reward at the last
  token. ``kl_coef`` is fixed or follows Ziegler et al.'s adaptive controller.
- Critic: a value head on the policy's last hidden state (shared trunk); values are recorded at
  sampling time. Advantages and value targets by GAE (``gamma``, ``lam``), advantages whitened
  over the batch's tokens.
- Loss: token-level mean of the clipped surrogate (``cliprange``) plus ``vf_coef`` times the
  clipped value loss (``cliprange_value``), over ``num_ppo_epochs`` passes of
  ``num_mini_batches`` minibatches, importance ratios against the sampling log-probs.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from rl4gen.algorithms.base import LossOutput, StepTotals
from rl4gen.config import PPOConfig
from rl4gen.core.advantages import gae, whiten
from rl4gen.core.kl import AdaptiveKLController, FixedKLController, kl_estimate
from rl4gen.core.losses import (
    aggregate_loss,
    clip_fractions,
    clipped_policy_loss,
    clipped_value_loss,
    explained_variance,
    masked_sum,
)
from rl4gen.core.rollout import Rollout


class PPO:
    def __init__(self, config: PPOConfig) -> None:
        self.config = config
        self.num_iterations = config.num_ppo_epochs
        self.num_mini_batches = config.num_mini_batches
        self.needs_reference = config.kl_coef > 0
        self.needs_values = True
        self.kl_ctl: FixedKLController | AdaptiveKLController = (
            AdaptiveKLController(config.kl_coef, config.target_kl, config.horizon)
            if config.adaptive_kl
            else FixedKLController(config.kl_coef)
        )
        self._kl_coef_used = config.kl_coef  # the coefficient that shaped the last batch's rewards

    # ------------------------------------------------------------------ advantages

    def _sequence_kl(self, rollout: Rollout) -> Tensor | None:  # (B, T) per-token KL, masked
        if rollout.ref_logprobs is None:
            return None
        kl = kl_estimate(rollout.logprobs, rollout.ref_logprobs, self.config.kl_estimator)
        return kl * rollout.mask

    def token_rewards(self, rollout: Rollout) -> Tensor:  # (B, T)
        """``-kl_coef * kl_t`` at every completion token, plus the sequence reward at the last."""
        assert rollout.rewards is not None
        mask = rollout.mask
        rewards = torch.zeros_like(rollout.logprobs)
        coef = self.kl_ctl.value
        kl = self._sequence_kl(rollout)
        if coef > 0:
            assert kl is not None, "kl_coef > 0 needs ref_logprobs"
            rewards = -coef * kl
        last = (mask.sum(dim=1).long() - 1).clamp(min=0)  # (B,) index of the last real token
        rows = torch.arange(rewards.shape[0], device=rewards.device)
        rewards[rows, last] += rollout.rewards.to(rewards.dtype)
        return rewards * mask

    def advantages(self, rollout: Rollout) -> Tensor:  # (B, T); also fills rollout.returns
        assert rollout.values is not None, "PPO needs the critic's values at sampling time"
        cfg = self.config
        self._kl_coef_used = self.kl_ctl.value
        rewards = self.token_rewards(rollout)
        if cfg.whiten_rewards:
            rewards = whiten(rewards, rollout.mask, shift_mean=False)
        advantages, returns = gae(rewards, rollout.values, rollout.mask, cfg.gamma, cfg.lam)
        rollout.returns = returns
        if cfg.whiten_advantages:
            advantages = whiten(advantages, rollout.mask)
        return advantages

    def rollout_metrics(self, rollout: Rollout) -> dict[str, Tensor]:
        assert rollout.rewards is not None and rollout.values is not None and rollout.returns is not None
        mask = rollout.mask
        stats = {
            "kl_coef": torch.tensor(self._kl_coef_used, dtype=torch.float64),
            "losses/explained_variance": explained_variance(rollout.values, rollout.returns, mask),
            "values/mean": masked_sum(rollout.values, mask) / mask.sum().clamp(min=1.0),
        }
        kl = self._sequence_kl(rollout)
        if kl is not None:
            seq_kl = kl.sum(dim=1)  # (B,)
            stats["objective/kl"] = seq_kl.mean()
            stats["objective/non_score_reward"] = (-self._kl_coef_used * seq_kl).mean()
            stats["objective/rlhf_reward"] = (rollout.rewards - self._kl_coef_used * seq_kl).mean()
        return {k: v.detach().double().cpu() for k, v in stats.items()}

    def end_step(self, metrics: dict[str, float], num_sequences: int) -> None:
        if "objective/kl" in metrics:
            self.kl_ctl.update(metrics["objective/kl"], num_sequences)

    # ------------------------------------------------------------------ loss

    def loss(self, logprobs: Tensor, batch: Rollout, totals: StepTotals, values: Tensor | None = None) -> LossOutput:
        cfg = self.config
        assert values is not None, "PPO's loss needs the critic's current values"
        assert batch.advantages is not None and batch.values is not None and batch.returns is not None
        mask = batch.mask
        clipped = clipped_policy_loss(logprobs, batch.logprobs, batch.advantages, cfg.cliprange, cfg.cliprange)
        value = clipped_value_loss(values, batch.values, batch.returns, cfg.cliprange_value)
        # Token-level means over the minibatch (all processes), as TRL's masked_mean.
        policy_loss = aggregate_loss(clipped.per_token_loss, mask, "dapo", num_tokens=totals.num_tokens)
        value_loss = aggregate_loss(value.per_token_loss, mask, "dapo", num_tokens=totals.num_tokens)
        sums = clip_fractions(clipped, mask)
        with torch.no_grad():
            log_ratio = logprobs - batch.logprobs
            sums["losses/policy_loss"] = masked_sum(clipped.per_token_loss, mask)
            sums["losses/value_loss"] = masked_sum(value.per_token_loss, mask)
            sums["losses/clipfrac_value"] = masked_sum(value.clipped.to(mask.dtype), mask)
            # k3 estimate of KL(sampling policy || current policy), as CleanRL's approx_kl
            sums["losses/approx_kl"] = masked_sum(torch.exp(log_ratio) - 1.0 - log_ratio, mask)
            if batch.ref_logprobs is not None:
                sums["kl"] = masked_sum(kl_estimate(logprobs, batch.ref_logprobs, "k3"), mask)  # k3
        loss = policy_loss + cfg.vf_coef * value_loss
        return LossOutput(loss, {k: v.detach() for k, v in sums.items()})

    # ------------------------------------------------------------------ state

    def state_dict(self) -> dict[str, Any]:
        return {"kl_coef": self.kl_ctl.value}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if "kl_coef" in state:
            self.kl_ctl.value = float(state["kl_coef"])
