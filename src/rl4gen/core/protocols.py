"""The two contracts every modality implements: a policy that samples, a reward that scores."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import torch
from torch import Tensor

from rl4gen.core.rollout import Rollout


@runtime_checkable
class Policy(Protocol):
    """A generative model seen as a policy.

    ``sample`` acts (no gradients) and records the log-probs of its actions; ``log_probs``
    re-scores a rollout's actions with gradients; ``ref_log_probs`` scores them under the frozen
    reference the KL term pulls toward.
    """

    def sample(
        self,
        contexts: Sequence[Any],
        num_samples: int,
        generator: torch.Generator | None = None,
    ) -> Rollout:
        """Draw ``num_samples`` samples per context; rows of one context are adjacent."""
        ...

    def log_probs(self, rollout: Rollout) -> Tensor:  # (B, T)
        """Log-probs of ``rollout.actions`` under the current parameters, with gradients."""
        ...

    def ref_log_probs(self, rollout: Rollout) -> Tensor:  # (B, T)
        """Log-probs of ``rollout.actions`` under the frozen reference, without gradients."""
        ...

    def trainable_parameters(self) -> list[torch.nn.Parameter]:
        """Parameters the optimizer updates."""
        ...

    def save(self, directory: str | Path) -> None:
        """Write weights and whatever is needed to load them again into ``directory``."""
        ...


@runtime_checkable
class Reward(Protocol):
    """Scores samples. ``name`` becomes the metric key ``rewards/{name}/mean``.

    Returns one float per sample, or ``None`` where the reward does not apply to that sample
    (it is then left out of the weighted sum for that sample). Rewards that learn (discriminators,
    online reward models) may also define ``update(rollout)``.
    """

    name: str

    def __call__(
        self, samples: Sequence[Any], contexts: Sequence[Any], **info: Any
    ) -> Sequence[float | None]:
        ...
