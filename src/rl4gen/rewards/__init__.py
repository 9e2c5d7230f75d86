"""Rewards: the protocol's plumbing and built-in rewards for each modality."""

from rl4gen.rewards.base import (
    REWARD_TYPES,
    CombinedReward,
    FunctionReward,
    RewardError,
    RewardOutput,
    build_reward,
    check_reward_values,
    register_reward,
)
from rl4gen.rewards.text import ExactAnswerReward, LengthPenalty, LexiconReward, RegexReward

__all__ = [
    "REWARD_TYPES",
    "CombinedReward",
    "ExactAnswerReward",
    "FunctionReward",
    "LengthPenalty",
    "LexiconReward",
    "RegexReward",
    "RewardError",
    "RewardOutput",
    "build_reward",
    "check_reward_values",
    "register_reward",
]
