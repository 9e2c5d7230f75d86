"""DDPO's per-condition reward normalisation (Black et al., "Training Diffusion Models with
Reinforcement Learning", 2023, ``PerPromptStatTracker``).

Each condition (a prompt, a requested class) keeps a buffer of its last ``buffer_size`` rewards
across steps; a sample's advantage is its reward minus the buffer's mean, divided by the buffer's
(population) std. Until a condition has ``min_count`` rewards, the whole batch's mean and std are
used instead. Compared with GRPO's within-batch groups, the running buffer gives a steadier
baseline when a step holds only a few samples per condition.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor


def context_key(context: Any) -> str:
    """The condition a context asks for: its ``"prompt"``, else its ``"label"``, else the text."""
    if isinstance(context, Mapping):
        for key in ("prompt", "label"):
            if key in context:
                return f"{key}:{context[key]}"
    if isinstance(context, str):
        return context
    raise ValueError(
        f"per-condition reward normalisation needs contexts that are strings or mappings with a "
        f"'prompt' or 'label', got {type(context).__name__}."
    )


class PerContextStatTracker:
    """Running per-condition reward statistics (see the module docstring)."""

    def __init__(self, buffer_size: int, min_count: int) -> None:
        self.buffer_size = buffer_size
        self.min_count = min_count
        self.buffers: dict[str, deque[float]] = {}

    def __call__(self, contexts: Sequence[Any], rewards: Tensor, eps: float = 1e-6) -> Tensor:  # (B,) -> (B,)
        """Add this batch's rewards to their conditions' buffers and return the advantages."""
        keys = [context_key(c) for c in contexts]
        values = rewards.detach().double().cpu().numpy()
        batch_mean, batch_std = float(values.mean()), float(values.std())
        for key, value in zip(keys, values):
            self.buffers.setdefault(key, deque(maxlen=self.buffer_size)).append(float(value))
        stats = {}
        for key in set(keys):
            buf = np.asarray(self.buffers[key])
            stats[key] = (float(buf.mean()), float(buf.std())) if len(buf) >= self.min_count else (batch_mean, batch_std)
        mean = torch.tensor([stats[k][0] for k in keys], dtype=rewards.dtype, device=rewards.device)
        std = torch.tensor([stats[k][1] for k in keys], dtype=rewards.dtype, device=rewards.device)
        return (rewards - mean) / (std + eps)

    def state_dict(self) -> dict[str, Any]:
        return {"buffers": {k: list(v) for k, v in self.buffers.items()}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.buffers = {k: deque(v, maxlen=self.buffer_size) for k, v in state.get("buffers", {}).items()}
