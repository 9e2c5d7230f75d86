"""DDPO's per-condition stat tracker against hand-computed numbers, and GRPO's use of it."""

from __future__ import annotations

import pytest
import torch

from rl4gen.algorithms.grpo import GRPO
from rl4gen.algorithms.stat_tracker import PerContextStatTracker, context_key
from rl4gen.config import GRPOConfig
from rl4gen.core.rollout import Rollout


def test_batch_statistics_until_min_count_then_the_condition_buffer() -> None:
    tracker = PerContextStatTracker(buffer_size=3, min_count=2)
    # label 1 has one reward (< min_count): batch mean 2, population std sqrt(2/3)
    adv = tracker([{"label": 1}, {"label": 2}, {"label": 2}], torch.tensor([1.0, 2.0, 3.0]))
    # label 2 now has [2, 3] (>= 2): its own mean 2.5, std 0.5; label 1 has one -> batch stats
    assert torch.allclose(adv, torch.tensor([(1 - 2) / (2 / 3) ** 0.5, (2 - 2.5) / 0.5, (3 - 2.5) / 0.5]), atol=1e-5)
    # second call: label 2's buffer keeps the last 3 rewards [2, 3, 7] -> mean 4, std sqrt(14/3)
    adv = tracker([{"label": 2}], torch.tensor([7.0]))
    assert torch.allclose(adv, torch.tensor([(7 - 4) / (14 / 3) ** 0.5]), atol=1e-5)
    state = tracker.state_dict()
    restored = PerContextStatTracker(3, 2)
    restored.load_state_dict(state)
    assert restored.buffers == tracker.buffers


def test_context_keys() -> None:
    assert context_key("a prompt") == "a prompt"
    assert context_key({"prompt": "p", "label": 3}) == "prompt:p"
    assert context_key({"label": 3}) == "label:3"
    with pytest.raises(ValueError, match="'prompt' or 'label'"):
        context_key(42)


def test_grpo_uses_the_tracker_when_configured() -> None:
    rollout = Rollout(
        actions=torch.zeros(4, 1, dtype=torch.long),
        mask=torch.ones(4, 1),
        logprobs=torch.zeros(4, 1),
        group_ids=torch.tensor([0, 0, 1, 1]),
        samples=["a", "b", "c", "d"],
        contexts=[{"label": 0}, {"label": 0}, {"label": 1}, {"label": 1}],
        rewards=torch.tensor([1.0, 3.0, 5.0, 5.0]),
    )
    with_tracker = GRPO(GRPOConfig(stat_buffer_size=8, stat_min_count=1)).advantages(rollout)
    assert torch.allclose(with_tracker, torch.tensor([-1.0, 1.0, 0.0, 0.0]), atol=1e-4)  # population std
    assert "stat_tracker" in GRPO(GRPOConfig(stat_buffer_size=8)).state_dict()
    assert GRPO(GRPOConfig()).state_dict() == {}
