"""The batch of generated samples that flows from a policy through rewards into an update."""

from __future__ import annotations

from dataclasses import dataclass, field, fields, replace
from typing import Any

import torch
from torch import Tensor


@dataclass
class Rollout:
    """Samples drawn by a policy, with everything an update needs.

    Tensors are batch-first. ``B`` is the number of samples (contexts × ``num_generations``),
    ``T`` the number of actions per sample (completion tokens for a language model), ``P`` the
    prompt length in tokens.
    """

    actions: Tensor  # (B, T) token ids of the completions, right-padded
    mask: Tensor  # (B, T) 1.0 where an action counts, 0.0 on padding after the end
    logprobs: Tensor  # (B, T) log-probs of the actions under the sampling policy
    group_ids: Tensor  # (B,) index of the context each sample answers
    samples: list[Any]  # B decoded samples (strings for text)
    contexts: list[Any]  # B contexts, repeated per generation (prompts, problems, labels)
    prompt_ids: Tensor | None = None  # (B, P) left-padded prompt tokens
    prompt_mask: Tensor | None = None  # (B, P) 1 on real prompt tokens
    ref_logprobs: Tensor | None = None  # (B, T) log-probs under the frozen reference
    values: Tensor | None = None  # (B, T) critic values, for algorithms with a critic
    rewards: Tensor | None = None  # (B,) combined reward per sample
    advantages: Tensor | None = None  # (B,) or (B, T) advantages
    returns: Tensor | None = None  # (B, T) value targets, for algorithms with a critic
    truncated: Tensor | None = None  # (B,) True where generation hit max_completion_length
    extras: dict[str, Tensor] = field(default_factory=dict)  # policy-specific tensors (B, ...)

    def __post_init__(self) -> None:
        b, t = self.actions.shape
        for name in ("mask", "logprobs", "ref_logprobs", "values", "returns"):
            value = getattr(self, name)
            if value is not None and tuple(value.shape) != (b, t):
                raise ValueError(f"Rollout.{name} has shape {tuple(value.shape)}, expected {(b, t)}")
        for name in ("rewards", "truncated"):
            value = getattr(self, name)
            if value is not None and tuple(value.shape) != (b,):
                raise ValueError(f"Rollout.{name} has shape {tuple(value.shape)}, expected {(b,)}")
        if self.advantages is not None and tuple(self.advantages.shape) not in ((b,), (b, t)):
            raise ValueError(f"Rollout.advantages has shape {tuple(self.advantages.shape)}, expected {(b,)} or {(b, t)}")
        for name, value in (("prompt_ids", self.prompt_ids), ("prompt_mask", self.prompt_mask), *self.extras.items()):
            if value is not None and value.shape[0] != b:
                raise ValueError(f"Rollout.{name} has {value.shape[0]} rows, expected {b}")
        if tuple(self.group_ids.shape) != (b,):
            raise ValueError(f"Rollout.group_ids has shape {tuple(self.group_ids.shape)}, expected {(b,)}")
        if len(self.samples) != b or len(self.contexts) != b:
            raise ValueError(
                f"Rollout holds {b} action rows but {len(self.samples)} samples and "
                f"{len(self.contexts)} contexts"
            )

    def __len__(self) -> int:
        return int(self.actions.shape[0])

    @property
    def num_tokens(self) -> int:
        """Number of actions that count (unmasked completion tokens)."""
        return int(self.mask.sum().item())

    def select(self, index: Tensor | list[int] | slice) -> Rollout:
        """Return the rows at ``index`` (a slice, a list or a 1-D long tensor) as a new rollout."""
        if isinstance(index, slice):
            rows = list(range(len(self)))[index]
        elif isinstance(index, Tensor):
            rows = index.tolist()
        else:
            rows = list(index)
        idx = torch.as_tensor(rows, dtype=torch.long, device=self.actions.device)
        updates: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, Tensor):
                updates[f.name] = value.index_select(0, idx.to(value.device))
            elif isinstance(value, list):
                updates[f.name] = [value[i] for i in rows]
            elif isinstance(value, dict):
                updates[f.name] = {k: v.index_select(0, idx.to(v.device)) for k, v in value.items()}
        return replace(self, **updates)

    def to(self, device: torch.device | str) -> Rollout:
        """Move every tensor to ``device``."""
        updates: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, Tensor):
                updates[f.name] = value.to(device)
            elif isinstance(value, dict):
                updates[f.name] = {k: v.to(device) for k, v in value.items()}
        return replace(self, **updates)
