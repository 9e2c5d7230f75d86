"""``LevelVectorEnv``: many level environments stepped in one loop, levels in one array.

The ``N`` levels live in one ``(N, height, width)`` ``uint8`` buffer that each sub-environment
edits in place, so a batched observation is one array copy instead of ``N`` observations stacked
by ``SyncVectorEnv``; per-step ``info`` dicts are only built when an episode ends. Each
sub-environment is an ordinary ``LevelEnv`` (same dynamics, same seeds: sub-environment ``i`` of
``reset(seed=s)`` matches ``LevelEnv.reset(seed=s + i)``).

Autoreset follows Gymnasium's default (``NEXT_STEP``): the step after an episode ends resets that
sub-environment and ignores its action, returning reward 0 and ``terminated = truncated = False``.
When episodes end, ``info`` holds ``goal`` (reached or not), ``final_level`` (the finished
levels, ``(N, height, width)``) and the masks ``_goal`` / ``_final_level`` marking which entries
are set.

    envs = gymnasium.make_vec("rl4gen/zelda-narrow-v0", num_envs=64, vectorization_mode="vector_entry_point")
"""

from __future__ import annotations

from typing import Any

import numpy as np
from gymnasium.vector import AutoresetMode, VectorEnv
from gymnasium.vector.utils import batch_space

from rl4gen.envs.levels.env import LevelEnv

__all__ = ["LevelVectorEnv"]


class LevelVectorEnv(VectorEnv[Any, Any, Any]):
    """``num_envs`` copies of ``LevelEnv(problem, representation, **kwargs)`` stepped together."""

    metadata = {"autoreset_mode": AutoresetMode.NEXT_STEP}  # noqa: RUF012  (Gymnasium declares it so)

    def __init__(self, num_envs: int, problem: str = "binary", representation: str = "narrow", **kwargs: Any) -> None:
        if not isinstance(num_envs, int) or num_envs < 1:
            raise ValueError(f"num_envs must be a positive integer, got {num_envs!r}.")
        kwargs.pop("render_mode", None)
        self.envs = [LevelEnv(problem, representation, **kwargs) for _ in range(num_envs)]
        first = self.envs[0]
        height, width = first.problem.height, first.problem.width
        self.num_envs = num_envs
        self.single_observation_space = first.observation_space
        self.single_action_space = first.action_space
        self.observation_space = batch_space(first.observation_space, num_envs)
        self.action_space = batch_space(first.action_space, num_envs)
        self._buffer = bytearray(num_envs * height * width)
        self._levels = np.frombuffer(self._buffer, dtype=np.uint8).reshape(num_envs, height, width)
        view = memoryview(self._buffer)
        for i, env in enumerate(self.envs):
            env._cells = view[i * height * width : (i + 1) * height * width]
            env._level = self._levels[i]
        self._with_pos = first.representation.position is not None
        self._advance = [env._advance for env in self.envs]
        self._autoreset = np.zeros(num_envs, dtype=bool)

    @property
    def levels(self) -> np.ndarray:
        """A copy of the current levels, ``(num_envs, height, width)``."""
        return self._levels.copy()

    def _observe(self) -> Any:
        if self._with_pos:
            pos = np.array([(e.representation.x, e.representation.y) for e in self.envs], dtype=np.int64)
            return {"map": self._levels.copy(), "pos": pos}
        return self._levels.copy()

    def reset(
        self, *, seed: int | list[int | None] | None = None, options: dict[str, Any] | None = None
    ) -> tuple[Any, dict[str, Any]]:
        if seed is None or isinstance(seed, int):
            seeds: list[int | None] = [None if seed is None else seed + i for i in range(self.num_envs)]
        else:
            if len(seed) != self.num_envs:
                raise ValueError(f"reset needs one seed per environment ({self.num_envs}), got {len(seed)}.")
            seeds = list(seed)
        for env, s in zip(self.envs, seeds, strict=True):
            env.reset(seed=s, options=options)
        self._autoreset[:] = False
        return self._observe(), {}

    def step(self, actions: Any) -> tuple[Any, np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
        n = self.num_envs
        rewards = np.zeros(n, dtype=np.float64)
        terminated = np.zeros(n, dtype=bool)
        truncated = np.zeros(n, dtype=bool)
        ended: list[int] = []
        actions = np.asarray(actions).tolist()
        if len(actions) != n:
            raise ValueError(f"step needs one action per environment ({n}), got {len(actions)}.")
        autoreset = self._autoreset.tolist()
        advance = self._advance
        for i in range(n):
            if autoreset[i]:
                self.envs[i]._autoreset()
                continue
            reward, term, trunc = advance[i](actions[i])
            if reward:
                rewards[i] = reward
            if term or trunc:
                terminated[i], truncated[i] = term, trunc
                ended.append(i)
        self._autoreset = terminated | truncated
        info: dict[str, Any] = {}
        if ended:
            done = self._autoreset
            goal = np.zeros(n, dtype=bool)
            goal[ended] = [self.envs[i]._goal for i in ended]
            final = np.zeros_like(self._levels)
            final[ended] = self._levels[ended]
            info = {"goal": goal, "_goal": done.copy(), "final_level": final, "_final_level": done.copy()}
        return self._observe(), rewards, terminated, truncated, info
