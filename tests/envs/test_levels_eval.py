"""The independent level checker and `rl4gen eval` / `rl4gen levels eval` on level runs."""

from __future__ import annotations

import json
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
from typer.testing import CliRunner

import rl4gen.envs  # noqa: F401
from rl4gen.cli import app
from rl4gen.envs.levels.check import check_level, sokoban_moves
from rl4gen.envs.levels.evaluate import diversity, evaluate_levels
from rl4gen.envs.levels.render import parse_level
from rl4gen.envs.levels.train import load_levels_config, train_levels

SNAKE = """
.....
####.
.....
.####
.....
"""

ZELDA = """
###########
#@........#
#########.#
#b..k.....#
#.#########
#........D#
###########
"""


pytestmark = pytest.mark.usefixtures("one_thread")  # restored after the module (tests/conftest.py)


def test_binary_checker_measures_one_region_and_the_path_gain() -> None:
    snake = parse_level(SNAKE, "binary")
    check = check_level("binary", snake, target_path=16)
    assert check.goal and check.stats == {"regions": 1, "path-length": 16, "path-gain": 16}
    assert not check_level("binary", snake, target_path=17).goal
    assert not check_level("binary", snake, start=snake, target_path=1).goal  # no gain over the start
    split = snake.copy()
    split[2, 2] = 1  # cut the middle row: two regions
    assert check_level("binary", split).stats["regions"] == 2 and not check_level("binary", split, target_path=1).goal


def test_zelda_checker_follows_player_key_door() -> None:
    level = parse_level(ZELDA, "zelda")
    check = check_level("zelda", level)
    assert check.goal
    assert check.stats["path-length"] == 15 + 13 and check.stats["nearest-enemy"] == 18
    near = level.copy()
    near[1, 2] = 5  # a bat next to the player
    assert check_level("zelda", near).stats["nearest-enemy"] == 1 and not check_level("zelda", near).goal
    walled = level.copy()
    walled[3, 9] = 1  # wall off the key from the player: two regions, no path
    assert check_level("zelda", walled).stats["path-length"] == 0 and not check_level("zelda", walled).goal


def test_sokoban_checker_counts_player_moves() -> None:
    one = parse_level("#####\n#@$x#\n#...#\n#...#\n#####", "sokoban")
    assert check_level("sokoban", one, target_solution=1).goal and check_level("sokoban", one).stats["sol-length"] == 1
    walk = parse_level("#####\n#...#\n#@.$x\n#...#\n#####", "sokoban")
    assert check_level("sokoban", walk).stats["sol-length"] == 2
    around = parse_level("#####\n#x..#\n#.$.#\n#..@#\n#####", "sokoban")  # push up then left: walk around
    moves = sokoban_moves((3, 3), {(2, 2)}, {(1, 1)}, {(x, y) for x in range(1, 4) for y in range(1, 4)})
    assert moves == check_level("sokoban", around).stats["sol-length"] == 5
    corner = parse_level("#####\n#$..#\n#.@.#\n#..x#\n#####", "sokoban")  # a crate stuck in a corner
    assert check_level("sokoban", corner).stats["sol-length"] == -1 and not check_level("sokoban", corner).goal
    with pytest.raises(ValueError, match="no threshold 'target_path'"):
        check_level("sokoban", one, target_path=3)


@pytest.mark.parametrize("problem", ["binary", "zelda", "sokoban"])
def test_checker_agrees_with_the_environment_statistics(problem: str) -> None:
    env = gym.make(f"rl4gen/{problem}-narrow-v0").unwrapped
    rng = np.random.default_rng(0)
    for seed in range(60):
        env.reset(seed=seed)
        for _ in range(int(rng.integers(0, 30))):  # a few random edits, through the incremental path
            env.step(env.action_space.sample())
        stats, check = env.stats, check_level(problem, env.level)
        for key in ("regions", "path-length", "nearest-enemy", "player", "crate", "target"):
            if key in stats:
                assert check.stats[key] == stats[key], (seed, key)
        if problem == "sokoban" and stats["dist-win"] == 0 and stats["sol-length"] > 0:
            assert check.stats["sol-length"] == stats["sol-length"]


def test_diversity_is_normalised_hamming() -> None:
    a, b = np.zeros((2, 2), np.uint8), np.ones((2, 2), np.uint8)
    assert diversity([a, a]) == 0.0 and diversity([a, b]) == 1.0
    assert diversity([a, a, b]) == pytest.approx(2 / 3)


def test_eval_of_a_trained_run_reports_policy_and_random(tmp_path: Path) -> None:
    tiny = ["total_timesteps=64", "num_envs=2", "algorithm_args.n_steps=32", "algorithm_args.batch_size=32",
            "algorithm_args.n_epochs=1", "run_name=run", f"output_dir={tmp_path}", "env=sokoban-narrow"]
    run = train_levels(load_levels_config(None, tiny), show_progress=False).run_dir
    result = CliRunner().invoke(app, ["eval", str(run), "--size", "12"])
    assert result.exit_code == 0, result.output
    assert "goal_rate" in result.output and "random" in result.output
    saved = json.loads((run / "levels_eval.json").read_text())
    assert saved["episodes"] == 12 and set(saved) >= {"policy", "random"}
    for side in ("policy", "random"):
        assert 0 <= saved[side]["goal_rate"] <= 1 and 0 < saved[side]["diversity"] <= 1
        assert saved[side]["changes"] > 0
    assert len((run / "samples" / "eval_levels.jsonl").read_text().splitlines()) == 12
    again = evaluate_levels(run, episodes=12, write=False)
    assert again["random"] == saved["random"]  # seeded starts and actions: the same baseline
    result = CliRunner().invoke(app, ["levels", "eval", "zelda-narrow", "--episodes", "5"])
    assert result.exit_code == 0 and '"random"' in result.output and '"policy"' not in result.output
    result = CliRunner().invoke(app, ["levels", "eval", "zelda-narrow", "--episodes", "5", "--attempts", "0"])
    assert result.exit_code == 2 and "--attempts must be at least 1" in result.output
    result = CliRunner().invoke(app, ["levels", "eval", str(run), "--episodes", "5", "--symmetric"])
    assert result.exit_code == 2 and "--symmetric needs a run trained with policy: fullyconv" in result.output
    result = CliRunner().invoke(app, ["levels", "eval", "zelda-nallow"])
    assert result.exit_code == 2 and "neither a level run folder nor an environment" in result.output


def test_short_training_raises_the_goal_rate_above_random_on_binary(tmp_path: Path) -> None:
    # a 5x5 binary problem (one region, path 3 longer than at the start) learns in a few thousand steps
    sets = ["env=binary-narrow", "total_timesteps=4096", "num_envs=4", "algorithm_args.n_steps=64",
            "algorithm_args.batch_size=64", "algorithm_args.learning_rate=0.001", "features_dim=64",
            "levels_per_log=0", "run_name=run", f"output_dir={tmp_path}"]
    base = {"env_args": {"problem_options": {"width": 5, "height": 5, "target_path": 3}}}
    run = train_levels(load_levels_config(None, sets, base=base), show_progress=False).run_dir
    result = evaluate_levels(run, episodes=200)
    policy, random = result["policy"], result["random"]
    assert policy["goal_rate"] == policy["env_goal_rate"] and random["goal_rate"] == random["env_goal_rate"]
    assert policy["goal_rate"] > random["goal_rate"] + 0.05, (policy, random)
    assert policy["stats/regions"] < random["stats/regions"]
    # retrying a start level that missed the goal (up to 4 times) raises the rate within 4 attempts
    retried = evaluate_levels(run, episodes=200, attempts=4, write=False)
    assert retried["attempts"] == 4 and policy["attempts"] == 1
    assert retried["policy"]["goal_rate"] > policy["goal_rate"], (retried["policy"], policy)
    assert 1 < retried["policy"]["attempts"] <= 4
    assert retried["policy"]["goal_rate"] == retried["policy"]["env_goal_rate"]
