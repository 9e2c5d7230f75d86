"""RL algorithms for generation, one file each."""

from __future__ import annotations

from rl4gen.algorithms.base import Algorithm, LossOutput, StepTotals
from rl4gen.algorithms.grpo import GRPO
from rl4gen.algorithms.ppo import PPO
from rl4gen.algorithms.reinforce import Reinforce
from rl4gen.algorithms.rloo import RLOO
from rl4gen.config import GRPOConfig, PPOConfig, ReinforceConfig, RLOOConfig


def build_algorithm(config: GRPOConfig | RLOOConfig | ReinforceConfig | PPOConfig) -> Algorithm:
    """The algorithm object for a validated algorithm config."""
    if isinstance(config, GRPOConfig):
        return GRPO(config)
    if isinstance(config, RLOOConfig):
        return RLOO(config)
    if isinstance(config, ReinforceConfig):
        return Reinforce(config)
    if isinstance(config, PPOConfig):
        return PPO(config)
    raise TypeError(f"no algorithm for config {type(config).__name__}")


__all__ = ["GRPO", "PPO", "RLOO", "Algorithm", "LossOutput", "Reinforce", "StepTotals", "build_algorithm"]
