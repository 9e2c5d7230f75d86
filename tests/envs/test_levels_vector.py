"""LevelVectorEnv: same episodes as the single environment, Gymnasium's autoreset contract."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest

import rl4gen.envs  # noqa: F401
from rl4gen.envs.levels import LevelEnv, LevelVectorEnv


@pytest.mark.parametrize("name", ["binary-narrow", "zelda-turtle", "sokoban-wide"])
def test_vector_env_matches_single_envs_step_for_step(name: str) -> None:
    problem, representation = name.split("-")
    envs = gym.make_vec(f"rl4gen/{name}-v0", num_envs=3)
    assert isinstance(envs.unwrapped, LevelVectorEnv)
    singles = [LevelEnv(problem, representation) for _ in range(3)]
    obs, _ = envs.reset(seed=10)
    for i, env in enumerate(singles):
        o, _ = env.reset(seed=10 + i)
        assert np.array_equal(o["map"] if isinstance(o, dict) else o, obs["map"][i] if isinstance(obs, dict) else obs[i])
    envs.action_space.seed(0)
    pending = [False] * 3
    ended = 0
    for _ in range(150):
        actions = envs.action_space.sample()
        obs, rewards, terminated, truncated, info = envs.step(actions)
        for i, env in enumerate(singles):
            if pending[i]:  # NEXT_STEP autoreset: this step only starts a new episode
                pending[i] = False
                o, _ = env.reset()
                assert rewards[i] == 0 and not terminated[i] and not truncated[i]
            else:
                o, r, te, tr, _ = env.step(actions[i])
                assert r == pytest.approx(rewards[i]) and te == terminated[i] and tr == truncated[i]
            level = o["map"] if isinstance(o, dict) else o
            batch = obs["map"][i] if isinstance(obs, dict) else obs[i]
            assert np.array_equal(level, batch)
            if terminated[i] or truncated[i]:
                assert info["_final_level"][i] and np.array_equal(info["final_level"][i], level)
                assert info["goal"][i] == env._goal
                pending[i] = True
                ended += 1
        assert envs.observation_space.contains(obs)
    assert ended > 0
    envs.close()


def test_vector_env_validates_its_arguments() -> None:
    with pytest.raises(ValueError, match="num_envs"):
        LevelVectorEnv(0)
    envs = LevelVectorEnv(2, "sokoban", "narrow")
    with pytest.raises(ValueError, match="one seed per environment"):
        envs.reset(seed=[1, 2, 3])
