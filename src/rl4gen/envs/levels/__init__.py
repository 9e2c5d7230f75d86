"""PCGRL-style level generation environments (binary, zelda, sokoban × narrow, turtle, wide).

Importing ``rl4gen.envs`` registers ``rl4gen/{problem}-{representation}-v0`` with Gymnasium::

    import gymnasium as gym
    import rl4gen.envs  # noqa: F401

    env = gym.make("rl4gen/binary-narrow-v0")
    envs = gym.make_vec("rl4gen/binary-narrow-v0", num_envs=64)  # LevelVectorEnv
"""

from __future__ import annotations

import gymnasium as gym

from rl4gen.envs.levels.env import LevelEnv
from rl4gen.envs.levels.problems import PROBLEMS, make_problem, range_reward
from rl4gen.envs.levels.representations import REPRESENTATIONS
from rl4gen.envs.levels.vector import LevelVectorEnv

__all__ = ["ENV_IDS", "PLAY_ENV_IDS", "PROBLEMS", "REPRESENTATIONS", "LevelEnv", "LevelVectorEnv", "env_id", "make_problem", "range_reward", "register_envs"]


def env_id(problem: str, representation: str) -> str:
    return f"rl4gen/{problem}-{representation}-v0"


ENV_IDS: tuple[str, ...] = tuple(env_id(p, r) for p in PROBLEMS for r in REPRESENTATIONS)


def register_envs() -> None:
    """Register the nine environments with Gymnasium (idempotent)."""
    for problem in PROBLEMS:
        for representation in REPRESENTATIONS:
            name = env_id(problem, representation)
            if name not in gym.registry:
                gym.register(
                    id=name,
                    entry_point="rl4gen.envs.levels.env:LevelEnv",
                    vector_entry_point="rl4gen.envs.levels.vector:LevelVectorEnv",
                    kwargs={"problem": problem, "representation": representation},
                )


register_envs()

from rl4gen.envs.levels.play import PLAY_ENV_IDS, register_play_envs

register_play_envs()
