"""``LevelEnv``: a PCGRL problem × representation as a Gymnasium environment.

An episode starts from a random level (tiles drawn with the problem's probabilities) and edits
it one action at a time. The reward of a step is the problem's shaped reward between the level's
statistics after and before the step (zero when the action changed no tile: statistics are only
recomputed after a real edit). The episode ends with

- ``terminated`` when the problem's goal holds (e.g. binary: one region and a path at least
  ``target_path`` longer than at the start), or when the change budget is spent
  (``change_percentage`` of the tiles, 20% by default, counted as edits that changed a tile);
- ``truncated`` after ``max_iterations`` steps (PCGRL's default: budget × tiles).

``info`` carries the statistics, ``changes``, ``iterations`` and, when an episode ends,
``"goal"`` (whether the goal was reached).
"""

from __future__ import annotations

import math
from typing import Any, SupportsFloat

import gymnasium as gym
import numpy as np

from rl4gen.envs.levels.problems import BinaryProblem, Problem, make_problem
from rl4gen.envs.levels.representations import make_representation

__all__ = ["LevelEnv"]


class LevelEnv(gym.Env[Any, Any]):
    """A PCGRL level-generation environment.

    Args:
        problem: ``binary``, ``zelda`` or ``sokoban``.
        representation: ``narrow``, ``turtle`` or ``wide``.
        change_percentage: fraction of the tiles that may be changed in one episode, in (0, 1].
        max_iterations: step limit (``truncated``); default: changes allowed × tiles.
        random_tile: ``narrow`` only: visit positions at random instead of in row-major order.
        render_mode: ``"rgb_array"`` (tile image) or ``"ansi"`` (one character per tile).
        problem_options: the problem's own options (e.g. ``target_path``, ``weights``, ``probs``).
        goal_bonus: reward added on the step that reaches the goal (default 0: PCGRL's reward,
            which has no term for the goal itself; episodes just end there).
    """

    metadata = {"render_modes": ["rgb_array", "ansi"], "render_fps": 10}  # noqa: RUF012  (Gymnasium declares it so)

    def __init__(
        self,
        problem: str = "binary",
        representation: str = "narrow",
        *,
        change_percentage: float = 0.2,
        max_iterations: int | None = None,
        random_tile: bool | None = None,
        render_mode: str | None = None,
        problem_options: dict[str, Any] | None = None,
        goal_bonus: float = 0.0,
    ) -> None:
        self.problem: Problem = make_problem(problem, **(problem_options or {}))
        rep_options = {} if random_tile is None else {"random_tile": random_tile}
        self.representation = make_representation(
            representation, self.problem.width, self.problem.height, self.problem.num_tiles, **rep_options
        )
        if not isinstance(change_percentage, (int, float)) or not 0 < change_percentage <= 1:
            raise ValueError(f"change_percentage must be a fraction in (0, 1], got {change_percentage!r}.")
        if not isinstance(goal_bonus, (int, float)) or not math.isfinite(goal_bonus):
            raise ValueError(f"goal_bonus must be a finite number, got {goal_bonus!r}.")
        self.goal_bonus = float(goal_bonus)
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise ValueError(f"render_mode must be one of rgb_array, ansi or None, got {render_mode!r}.")
        width, height = self.problem.width, self.problem.height
        self.max_changes = max(int(change_percentage * width * height), 1)
        if max_iterations is None:
            max_iterations = self.max_changes * width * height
        if not isinstance(max_iterations, int) or max_iterations < 1:
            raise ValueError(f"max_iterations must be a positive integer, got {max_iterations!r}.")
        self.max_iterations = max_iterations
        self.render_mode = render_mode

        self.action_space = self.representation.action_space()
        self.observation_space = self.representation.observation_space()

        self._cells: bytearray | memoryview = bytearray(width * height)  # the level, row-major; `_level` is a view of it
        self._level = np.frombuffer(self._cells, dtype=np.uint8).reshape(height, width)
        self._cell_bits = self.problem.grid.cell_bits
        # bound once: the step loop calls them millions of times
        self._act = self.representation.act
        self._stats_of = self.problem.stats
        self._reward_of = self.problem.reward
        self._goal_of = self.problem.goal
        self._bounds = np.cumsum(self.problem.probs)[:-1]  # upper bounds of all tiles but the last
        self._random_probs = isinstance(self.problem, BinaryProblem) and self.problem.random_probs
        self._masks: list[int] = []
        self._stats: dict[str, float] = {}
        self._start: dict[str, float] = {}
        self._changes = 0
        self._iteration = 0
        self._goal = False

    # ------------------------------------------------------------------------------------------

    @property
    def level(self) -> np.ndarray:
        """A copy of the current level, ``uint8`` ``(height, width)``."""
        return self._level.copy()

    @property
    def stats(self) -> dict[str, float]:
        return dict(self._stats)

    @property
    def start_stats(self) -> dict[str, float]:
        """The statistics of the episode's start level."""
        return dict(self._start)

    @property
    def changes(self) -> int:
        """Edits so far this episode that changed a tile (the budget is ``max_changes``)."""
        return self._changes

    @property
    def masks(self) -> list[int]:
        """The current level as one bit mask per tile type (``stats.Grid``'s layout); read only."""
        return self._masks

    def random_level(self, rng: np.random.Generator) -> np.ndarray:
        """A level with tiles drawn from the problem's probabilities (PCGRL's initial maps)."""
        return self._draw(rng)[0]

    def _draw(self, rng: np.random.Generator) -> tuple[np.ndarray, float, float]:
        """A random level and two uniforms for the start position, from one call to ``rng``."""
        height, width = self.problem.height, self.problem.width
        draws = rng.random(height * width + 3)
        bounds = self._bounds  # tile t where bounds[t-1] <= u < bounds[t]
        if self._random_probs:  # binary: P(empty) ~ U(0, 1) per episode, as in PCGRL
            bounds = draws[-1:]
        tiles = np.searchsorted(bounds, draws[: height * width], side="right")
        return tiles.astype(np.uint8).reshape(height, width), float(draws[-3]), float(draws[-2])

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[Any, dict[str, Any]]:
        """Start from a random level, or from ``options={"level": array}``."""
        super().reset(seed=seed)
        options = options or {}
        if options and set(options) - {"level"}:
            raise ValueError(f"reset option {min(set(options) - {'level'})!r} is unknown: the only option is 'level'.")
        if "level" in options:
            level = np.asarray(options["level"])
            if level.shape != self._level.shape or level.min() < 0 or level.max() >= self.problem.num_tiles:
                raise ValueError(
                    f"reset option 'level' must be an integer array of shape {self._level.shape} with tiles "
                    f"in [0, {self.problem.num_tiles}), got shape {level.shape}."
                )
            level = level.astype(np.uint8)
            u, v = self.np_random.random(2)
        else:
            level, u, v = self._draw(self.np_random)
        self._start_episode(level, u, v)
        return self.representation.observe(self._level), self._info()

    def _start_episode(self, level: np.ndarray, u: float, v: float) -> None:
        self._level[...] = level
        self._masks = self.problem.grid.masks(level, self.problem.num_tiles)
        self.representation.reset(u, v, self.np_random)
        self._stats = self._start = self.problem.stats(self._masks)
        self._goal = self.problem.goal(self._stats, self._start)
        self._changes = 0
        self._iteration = 0

    def _autoreset(self) -> None:
        """A new random episode without building an observation (for ``LevelVectorEnv``)."""
        self._start_episode(*self._draw(self.np_random))

    def step(self, action: Any) -> tuple[Any, SupportsFloat, bool, bool, dict[str, Any]]:
        reward, terminated, truncated = self._advance(action)
        info = self._info()
        if terminated or truncated:
            info["goal"] = self._goal
        return self.representation.observe(self._level), reward, terminated, truncated, info

    def _advance(self, action: Any) -> tuple[float, bool, bool]:
        """Apply one action: (reward, terminated, truncated). The level is updated in place."""
        index, tile = self._act(action)
        self._iteration += 1
        reward = 0.0
        if tile >= 0:
            old = self._cells[index]
            if old != tile:
                self._cells[index] = tile
                masks = self._masks
                bit = self._cell_bits[index]
                masks[old] ^= bit
                masks[tile] |= bit
                self._changes += 1
                new = self._stats_of(masks)
                reward = self._reward_of(new, self._stats)
                self._stats = new
                reached = self._goal_of(new, self._start)
                if reached and not self._goal:
                    reward += self.goal_bonus
                self._goal = reached
        if self._goal or self._changes >= self.max_changes:
            return reward, True, False
        return reward, False, self._iteration >= self.max_iterations

    def _info(self) -> dict[str, Any]:
        return {**self._stats, "changes": self._changes, "iterations": self._iteration}

    def render(self) -> Any:
        if self.render_mode == "rgb_array":
            from rl4gen.envs.levels.render import level_image

            return np.asarray(level_image(self._level, self.problem.name))
        if self.render_mode == "ansi":
            from rl4gen.envs.levels.render import level_text

            return level_text(self._level, self.problem.name)
        return None
