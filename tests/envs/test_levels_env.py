"""The nine level environments: Gymnasium contract, seeding, reward, termination, errors."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

import rl4gen.envs  # noqa: F401  (registers the environments)
from rl4gen.envs.levels import ENV_IDS, LevelEnv
from rl4gen.envs.levels.render import parse_level


@pytest.mark.parametrize("env_id", ENV_IDS)
def test_check_env_passes(env_id: str) -> None:
    env = gym.make(env_id, render_mode="rgb_array")
    check_env(env.unwrapped)  # render check included
    assert env.spec is not None and env.spec.id == env_id


@pytest.mark.parametrize("env_id", ENV_IDS)
def test_same_seed_same_episode_and_spaces_stay_fixed(env_id: str) -> None:
    runs = []
    for _ in range(2):
        env = gym.make(env_id)
        spaces = (env.observation_space, env.action_space)
        env.action_space.seed(7)
        obs, _ = env.reset(seed=3)
        trace = [obs]
        for _ in range(60):
            obs, reward, terminated, truncated, info = env.step(env.action_space.sample())
            assert env.observation_space.contains(obs)
            trace.append((obs, reward, terminated, truncated, info["changes"]))
            if terminated or truncated:
                obs, _ = env.reset()
        assert (env.observation_space, env.action_space) == spaces
        runs.append(trace)
    assert repr(runs[0]) == repr(runs[1])


def _corridor(length: int) -> np.ndarray:
    level = np.ones((14, 14), dtype=np.uint8)  # all solid
    level[0, :length] = 0
    return level


def test_reward_is_positive_for_an_improving_edit_and_negative_for_a_worsening_one() -> None:
    env = LevelEnv("binary", "wide")
    level = _corridor(10)
    level[0, 5] = 1  # two regions: x 0..4 and x 6..9
    env.reset(seed=0, options={"level": level})
    assert env.stats == {"regions": 2, "path-length": 4}
    _, reward, *_ = env.step(np.array([5, 0, 0]))  # open the wall: one region, path 9
    assert reward == pytest.approx(5 * (2 - 1) + (9 - 4))
    _, reward, *_ = env.step(np.array([5, 0, 1]))  # close it again
    assert reward == pytest.approx(-10)
    _, reward, _, _, info = env.step(np.array([5, 0, 1]))  # no change: free, no reward
    assert reward == 0 and info["changes"] == 2


def test_goal_terminates_the_episode() -> None:
    env = LevelEnv("binary", "wide", problem_options={"target_path": 2})
    env.reset(seed=0, options={"level": _corridor(10)})  # path 9
    _, _, terminated, _, info = env.step(np.array([10, 0, 0]))  # path 10
    assert not terminated
    _, reward, terminated, truncated, info = env.step(np.array([11, 0, 0]))  # path 11 = 9 + 2
    assert terminated and not truncated and info["goal"] is True and reward == 1
    env = LevelEnv("binary", "wide", problem_options={"target_path": 2}, goal_bonus=10)
    env.reset(seed=0, options={"level": _corridor(10)})
    rewards = [env.step(np.array([x, 0, 0]))[1] for x in (10, 11)]
    assert rewards == [1, 1 + 10]  # the bonus comes once, on the step that reaches the goal


def test_change_budget_terminates_and_the_step_limit_truncates() -> None:
    env = LevelEnv("binary", "wide", change_percentage=0.02)  # int(0.02 * 196) = 3 changes
    assert env.max_changes == 3
    env.reset(seed=0, options={"level": np.ones((14, 14), dtype=np.uint8)})
    ends = [env.step(np.array([x, 5, 0]))[2] for x in range(3)]
    assert ends == [False, False, True]
    env = LevelEnv("binary", "narrow", max_iterations=4)
    env.reset(seed=0)
    results = [env.step(0) for _ in range(4)]  # no-op edits
    assert [r[3] for r in results] == [False, False, False, True]
    assert not any(r[2] for r in results) and results[-1][4]["goal"] is False


def test_narrow_visits_positions_in_order_and_turtle_moves_within_the_map() -> None:
    env = LevelEnv("zelda", "narrow")
    obs, _ = env.reset(seed=1)
    x, y = obs["pos"]
    obs, *_ = env.step(1 + env.problem.tile("key"))
    assert env.level[y, x] == env.problem.tile("key")
    assert tuple(obs["pos"]) == ((x + 1) % 11, (y + (x + 1) // 11) % 7)
    env = LevelEnv("sokoban", "turtle")
    obs, _ = env.reset(seed=0)
    for _ in range(10):
        obs, *_ = env.step(0)  # left, clamped at the edge
    assert obs["pos"][0] == 0
    y = obs["pos"][1]
    env.step(4 + env.problem.tile("crate"))
    assert env.level[y, 0] == env.problem.tile("crate")


def test_zelda_goal_on_a_hand_made_level() -> None:
    env = LevelEnv("zelda", "wide")
    level = parse_level(
        """
        @..........
        #########..
        ...........
        ..#########
        ...........
        #########..
        D.........b
        """,
        "zelda",
    )
    env.reset(seed=0, options={"level": level})
    assert env.stats["nearest-enemy"] > 4 and env.stats["path-length"] == 0  # no key yet
    _, reward, terminated, _, info = env.step(np.array([1, 4, env.problem.tile("key")]))
    assert info["key"] == 1 and info["path-length"] >= 16 and terminated and info["goal"]
    assert reward > 0


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"problem": "mario"}, "unknown level problem 'mario'"),
        ({"representation": "diagonal"}, "unknown level representation 'diagonal'"),
        ({"change_percentage": 0}, "change_percentage"),
        ({"representation": "wide", "random_tile": True}, "narrow representation only"),
        ({"problem_options": {"bogus": 1}}, "no option 'bogus'"),
        ({"render_mode": "human"}, "render_mode"),
        ({"goal_bonus": float("nan")}, "goal_bonus must be a finite number"),
    ],
)
def test_bad_options_get_one_sentence(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        LevelEnv(**kwargs)


def test_bad_actions_and_reset_options_are_rejected() -> None:
    env = LevelEnv("binary", "narrow")
    env.reset(seed=0)
    with pytest.raises(ValueError, match="narrow action"):
        env.step(5)
    with pytest.raises(ValueError, match="reset option 'level'"):
        env.reset(options={"level": np.zeros((3, 3))})
    with pytest.raises(ValueError, match="only option is 'level'"):
        env.reset(options={"lvl": 1})


def test_initial_levels_follow_the_problem_probabilities() -> None:
    env = LevelEnv("zelda", "wide")
    counts = np.zeros(8)
    for seed in range(300):
        obs, _ = env.reset(seed=seed)
        counts += np.bincount(obs.ravel(), minlength=8)
    freq = counts / counts.sum()
    assert np.allclose(freq, env.problem.probs, atol=0.015)
    binary = LevelEnv("binary", "wide")  # P(empty) ~ U(0, 1) per episode: mean 1/2, wide spread
    empties = [(binary.reset(seed=s)[0] == 0).mean() for s in range(200)]
    assert abs(np.mean(empties) - 0.5) < 0.06 and np.std(empties) > 0.2
