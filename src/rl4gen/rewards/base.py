"""Reward plumbing: named rewards, weighted combination with per-component metrics, validation.

A reward is anything with a ``name`` and ``__call__(samples, contexts, **info)`` returning one
float (or ``None``: "does not apply") per sample — see :class:`rl4gen.core.Reward`. Plain
functions are wrapped with :class:`FunctionReward`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from rl4gen.core.protocols import Reward


class RewardError(RuntimeError):
    """A reward broke its contract (wrong count, non-finite value); the message names it."""


class FunctionReward:
    """Wrap a function ``f(samples, contexts, **info) -> list[float | None]`` as a reward."""

    def __init__(self, fn: Callable[..., Sequence[float | None]], name: str | None = None) -> None:
        self.fn = fn
        self.name = name or getattr(fn, "__name__", "reward")

    def __call__(self, samples: Sequence[Any], contexts: Sequence[Any], **info: Any) -> Sequence[float | None]:
        return self.fn(samples, contexts, **info)


@dataclass
class RewardOutput:
    total: Tensor  # (B,) weighted sum over components (None components left out)
    components: dict[str, Tensor]  # name -> (B,) raw values, NaN where the reward returned None


def check_reward_values(name: str, values: Any, expected: int) -> list[float]:
    """Validate one reward's output; ``None`` becomes NaN. Raises :class:`RewardError`."""
    try:
        values = list(values)
    except TypeError:
        raise RewardError(
            f"reward {name!r} returned {type(values).__name__}, not a list of numbers: return one "
            "float (or None) per sample."
        ) from None
    if len(values) != expected:
        raise RewardError(
            f"reward {name!r} returned {len(values)} values for {expected} samples: it must return "
            "exactly one value per sample."
        )
    out: list[float] = []
    for i, v in enumerate(values):
        if v is None:
            out.append(math.nan)
            continue
        try:
            f = float(v)
        except (TypeError, ValueError):
            raise RewardError(
                f"reward {name!r} returned {v!r} for sample {i}, which is not a number."
            ) from None
        if not math.isfinite(f):
            raise RewardError(
                f"reward {name!r} returned the non-finite value {f} for sample {i}: rewards must be "
                "finite (return None where a reward does not apply)."
            )
        out.append(f)
    return out


class CombinedReward:
    """Weighted sum of rewards. Each component is logged as ``rewards/{name}/mean|std``."""

    def __init__(self, rewards: Sequence[Reward], weights: Sequence[float] | None = None) -> None:
        if not rewards:
            raise ValueError("at least one reward is needed")
        self.rewards = list(rewards)
        self.weights = [1.0] * len(self.rewards) if weights is None else [float(w) for w in weights]
        if len(self.weights) != len(self.rewards):
            raise ValueError(f"{len(self.rewards)} rewards but {len(self.weights)} weights")
        names = [r.name for r in self.rewards]
        if len(set(names)) != len(names):
            raise ValueError(f"reward names must be unique, got {names}: set a distinct name for each")

    @property
    def names(self) -> list[str]:
        return [r.name for r in self.rewards]

    def __call__(self, samples: Sequence[Any], contexts: Sequence[Any], **info: Any) -> RewardOutput:
        n = len(samples)
        components: dict[str, Tensor] = {}
        total = torch.zeros(n, dtype=torch.float32)
        for reward, weight in zip(self.rewards, self.weights):
            values = torch.tensor(check_reward_values(reward.name, reward(samples, contexts, **info), n))
            components[reward.name] = values
            total += weight * torch.nan_to_num(values, nan=0.0)
        return RewardOutput(total=total, components=components)

    def update(self, rollout: Any) -> dict[str, float]:
        """Let rewards that learn (discriminators, online reward models) see the new rollout;
        returns the metrics their updates return (e.g. ``discriminator/acc_real``)."""
        metrics: dict[str, float] = {}
        for reward in self.rewards:
            update = getattr(reward, "update", None)
            if callable(update):
                metrics.update(update(rollout) or {})
        return metrics


# ------------------------------------------------------------------------------- registry

RewardFactory = Callable[..., Reward]
REWARD_TYPES: dict[str, RewardFactory] = {}


def register_reward(type_name: str) -> Callable[[RewardFactory], RewardFactory]:
    """Register a reward class or factory under ``type_name`` for use in configs."""

    def decorator(factory: RewardFactory) -> RewardFactory:
        REWARD_TYPES[type_name] = factory
        return factory

    return decorator


def build_reward(type_name: str, name: str | None = None, **args: Any) -> Reward:
    """Instantiate a registered reward type, with one-sentence errors for bad types or arguments."""
    # importing these registers the built-in reward types
    import rl4gen.gan.seqgan
    import rl4gen.rewards.dialogue
    import rl4gen.rewards.learned
    import rl4gen.rewards.music
    import rl4gen.rewards.text
    from rl4gen.config import build_registered

    try:
        import rl4gen.rewards.levels
    except ImportError:
        pass
    import rl4gen.gan.images  # the image GAN rewards: image_discriminator, batch_novelty
    import rl4gen.rewards.image  # noqa: F401  (its models load lazily: the images extra)

    reward: Reward = build_registered("reward", REWARD_TYPES, type_name, args)
    if name is not None:
        reward.name = name
    return reward
