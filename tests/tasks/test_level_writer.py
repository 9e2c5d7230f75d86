"""The level writer: written-level parsing, the level_goal reward, the prior and a GRPO run."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from rl4gen.config import ConfigError, deep_merge, validate_config
from rl4gen.rewards.base import build_reward
from rl4gen.rewards.levels import parse_written_level
from rl4gen.tasks import get_task
from rl4gen.tasks.level_writer import LevelWriterTask, generate_levels

#: A quick prior: 8x8 binary levels, one small layer, 200 MLE steps (the recipe: 14x14, 600 steps).
SMALL = {"width": 8, "height": 8, "pretrain_steps": 200, "n_layer": 1, "n_embd": 48}


@pytest.fixture(scope="module")
def small_task(one_thread: None) -> LevelWriterTask:
    task = LevelWriterTask(SMALL)
    task.pretrain(log=lambda m: None)
    return task


def test_parse_and_reward_of_written_levels() -> None:
    snake = ".....|####.|.....|.####|....."
    assert parse_written_level(snake, ".#", 5, 5) is not None
    for bad in ("....|####.|.....|.####|.....", ".....|####.|.....|.####", ".....|####x|.....|.####|....."):
        assert parse_written_level(bad, ".#", 5, 5) is None
    reward = build_reward("level_goal", problem="binary", width=5, height=5, targets={"target_path": 16}, shaping=0.5)
    split = ".....|#####|.....|.####|....."
    assert reward([snake, split, "garbage"], [{}] * 3) == [1.5, 0.5 * (10 / 16) / 2, -1.0]  # split: two regions, path 10 of 16
    with pytest.raises(ConfigError, match="no goal threshold 'target_solution'"):
        build_reward("level_goal", problem="binary", targets={"target_solution": 3})
    with pytest.raises(ConfigError, match="task_args.targets"):
        LevelWriterTask({"targets": {"target_enemy_dist": 3}})
    assert get_task("level_writer", {"problem": "zelda"}).completion_length == 11 * 7 + 7


@pytest.mark.parametrize("problem", ["binary", "zelda", "sokoban"])
def test_generator_mixes_good_and_bad_levels(problem: str) -> None:
    task = LevelWriterTask({"problem": problem})
    levels = generate_levels(problem, task.width, task.height, 200, np.random.default_rng(0))
    metrics = task.text_metrics([task.level_text(lv) for lv in levels])
    assert metrics["malformed_rate"] == 0 and metrics["diversity"] > 0.3
    assert 0 < metrics["conditions"] < 1
    if problem != "sokoban":  # long sokoban solutions are rare in random rooms
        assert 0 < metrics["goal_rate"] < 0.5


def test_grpo_raises_goal_conditions_of_written_levels(small_task: LevelWriterTask, tmp_path: Path) -> None:
    from rl4gen.trainer import Trainer

    data = deep_merge(small_task.default_config(), {"task_args": SMALL, "output_dir": str(tmp_path)})
    data.update({"max_steps": 20, "learning_rate": 1e-3, "eval_size": 128, "eval_steps": 1000, "save_steps": 1000, "sample_steps": 1000})
    trainer = Trainer(validate_config(data), task=small_task, show_progress=False, log=lambda m: None)
    before = {k: v.detach().clone() for k, v in trainer.policy.model.named_parameters()}
    result = trainer.train()
    assert all(not torch.equal(before[k], v) for k, v in trainer.policy.model.named_parameters())
    b, a = result.initial_eval, result.final_eval
    assert a["conditions"] > b["conditions"] + 0.1, (b, a)
    assert a["stats/regions"] < b["stats/regions"]
    assert a["malformed_rate"] <= b["malformed_rate"] + 0.05
