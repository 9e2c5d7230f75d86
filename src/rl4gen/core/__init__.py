"""Pure tensor math and the types every modality shares. No I/O lives here."""

from rl4gen.core.advantages import (
    gae,
    group_normalized_advantages,
    leave_one_out_advantages,
    whiten,
)
from rl4gen.core.kl import AdaptiveKLController, FixedKLController, kl_estimate
from rl4gen.core.losses import (
    aggregate_loss,
    clipped_policy_loss,
    clipped_value_loss,
    explained_variance,
    masked_mean,
    masked_sum,
)
from rl4gen.core.protocols import Policy, Reward
from rl4gen.core.rollout import Rollout

__all__ = [
    "AdaptiveKLController",
    "FixedKLController",
    "Policy",
    "Reward",
    "Rollout",
    "aggregate_loss",
    "clipped_policy_loss",
    "clipped_value_loss",
    "explained_variance",
    "gae",
    "group_normalized_advantages",
    "kl_estimate",
    "leave_one_out_advantages",
    "masked_mean",
    "masked_sum",
    "whiten",
]
