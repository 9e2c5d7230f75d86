"""Observation wrappers for policy networks, and a recorder of finished levels.

- ``CropOneHotObservation`` (narrow, turtle): the map one-hot encoded and cropped around the
  position to edit, as PCGRL's agents see it: ``Box(0, 1, (T, crop, crop), uint8)``, channels
  first, with cells outside the map shown as the border tile (solid). The default crop,
  ``2 × max(W, H)``, always holds the whole map (PCGRL: 28 binary, 22 zelda, 10 sokoban).
- ``OneHotObservation`` (wide): the whole map one-hot, ``Box(0, 1, (T, H, W), uint8)``.
- ``FlatWideAction`` (wide): one ``Discrete(T·H·W)`` action per (tile, row, column), in the
  order of a ``(T, H, W)`` logit map, so a fully convolutional policy can score every cell.
- ``RecordLevels``: appends each finished episode's level, statistics and goal to a list.
"""

from __future__ import annotations

import copy
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from rl4gen.envs.levels.stats import bfs_layers

__all__ = ["CropOneHotObservation", "FlatWideAction", "GoalFeatures", "OneHotObservation", "RecordLevels"]


def _core(env: gym.Env[Any, Any]) -> Any:
    from rl4gen.envs.levels.env import LevelEnv

    core = env.unwrapped
    if not isinstance(core, LevelEnv):
        raise TypeError(f"this wrapper needs a level environment (rl4gen/...-v0), got {type(core).__name__}.")
    return core


class CropOneHotObservation(gym.ObservationWrapper[np.ndarray, Any, Any], gym.utils.RecordConstructorArgs):
    """Egocentric one-hot crop ``(T, crop, crop)`` around ``obs["pos"]`` (narrow and turtle)."""

    def __init__(self, env: gym.Env[Any, Any], crop_size: int | None = None, border_tile: str = "solid") -> None:
        gym.utils.RecordConstructorArgs.__init__(self, crop_size=crop_size, border_tile=border_tile)
        gym.ObservationWrapper.__init__(self, env)
        core = _core(env)
        if core.representation.position is None:
            raise ValueError("CropOneHotObservation needs a narrow or turtle representation: use OneHotObservation for wide.")
        problem = core.problem
        crop_size = crop_size or 2 * max(problem.width, problem.height)
        if not isinstance(crop_size, int) or crop_size < 1:
            raise ValueError(f"crop_size must be a positive integer, got {crop_size!r}.")
        self.crop_size = crop_size
        self.num_tiles = problem.num_tiles
        self._half = crop_size // 2
        h, w = problem.height, problem.width
        self._padded = np.full((h + crop_size, w + crop_size), problem.tile(border_tile), dtype=np.uint8)
        self._eye = np.eye(self.num_tiles, dtype=np.uint8)
        self.observation_space = spaces.Box(0, 1, (self.num_tiles, crop_size, crop_size), dtype=np.uint8)

    def observation(self, observation: Any) -> np.ndarray:
        level, (x, y) = observation["map"], observation["pos"]
        h, w = level.shape
        half = self._half
        self._padded[half : half + h, half : half + w] = level
        crop = self._padded[y : y + self.crop_size, x : x + self.crop_size]  # centred on (x, y)
        return np.ascontiguousarray(self._eye[crop].transpose(2, 0, 1))  # (T, crop, crop)


class OneHotObservation(gym.ObservationWrapper[np.ndarray, Any, Any], gym.utils.RecordConstructorArgs):
    """The whole map one-hot, ``(T, H, W)`` (wide)."""

    def __init__(self, env: gym.Env[Any, Any]) -> None:
        gym.utils.RecordConstructorArgs.__init__(self)
        gym.ObservationWrapper.__init__(self, env)
        problem = _core(env).problem
        self.num_tiles = problem.num_tiles
        self._eye = np.eye(self.num_tiles, dtype=np.uint8)
        self.observation_space = spaces.Box(0, 1, (self.num_tiles, problem.height, problem.width), dtype=np.uint8)

    def observation(self, observation: Any) -> np.ndarray:
        level = observation["map"] if isinstance(observation, dict) else observation
        return np.ascontiguousarray(self._eye[level].transpose(2, 0, 1))


class GoalFeatures(gym.ObservationWrapper[np.ndarray, Any, Any], gym.utils.RecordConstructorArgs):
    """The wide one-hot map plus planes that say how far the goal is (``float32``, ``(T + 4 + P, H, W)``).

    After the ``T`` tile channels: the BFS distance map that matters for the goal's path (binary:
    from each region's path start; zelda, sokoban: from the player), ``(d + 1) / scale`` on the
    cells reached and 0 elsewhere with ``scale = W·H / 4``; the farthest cells of that search (where
    a longer path would go on); the change budget left, ``1 − changes / max_changes``; a constant
    plane saying whether there is a path source at all; and one constant plane per goal condition
    (``Problem.progress``: binary: 1 / regions and path gain / ``target_path``, which depends on the
    episode's start level and is otherwise invisible in the map). A convolutional policy then
    neither has to rebuild a breadth-first search from 3×3 filters nor guess its budget.

    With ``rule_planes``, ``R`` more 0/1 planes follow: the problem's ``rule_planes`` (sokoban:
    the dead cells, where a crate can never reach a target; the crates the player can push now).

    With ``lookahead``, ``K × T`` more planes come last: ``Problem.edit_lookahead``, what each
    single edit would lead to, by the environment's own statistics (every problem: whether writing
    tile ``t`` at a cell makes a goal level; sokoban also: whether it leaves a solvable puzzle, and
    its solution's length over the target), plane ``k·T + t`` for value ``k`` of tile ``t``. The
    policy then judges each possible edit from what it does to the level, as a player with the
    rules in hand would, instead of learning the solver's verdict from filters. It costs every
    other tile of every cell tried a step (sokoban: ~0.3–3 ms, mostly solver calls).
    """

    def __init__(self, env: gym.Env[Any, Any], rule_planes: bool = False, lookahead: bool = False) -> None:
        gym.utils.RecordConstructorArgs.__init__(self, rule_planes=rule_planes, lookahead=lookahead)
        gym.ObservationWrapper.__init__(self, env)
        self._core = core = _core(env)
        if core.representation.position is not None:
            raise ValueError("GoalFeatures needs the wide representation (a whole-map observation).")
        space = env.observation_space
        if not isinstance(space, spaces.Box) or len(space.shape) != 3:
            raise ValueError("GoalFeatures wraps a one-hot (T, H, W) observation: apply OneHotObservation first.")
        problem = core.problem
        self.num_tiles = problem.num_tiles
        blank = problem.stats(problem.grid.masks(np.zeros((problem.height, problem.width), np.uint8), problem.num_tiles))
        self.num_progress = len(problem.progress(blank, blank))
        if rule_planes and not problem.rule_plane_names:
            raise ValueError(f"the {problem.name} problem defines no rule planes (only sokoban does): drop rule_planes.")
        self.num_rules = len(problem.rule_plane_names) if rule_planes else 0
        self.num_lookahead = len(problem.lookahead_names) * problem.num_tiles if lookahead else 0
        # its own copy: the lookahead's statistics of levels one edit away would otherwise replace the
        # environment's incremental region count of the level itself (correct either way, slower)
        self._lookahead = copy.copy(problem) if lookahead else None
        self._scale = max(problem.width * problem.height / 4, 1.0)
        self._shape = (self.num_tiles + 4 + self.num_progress + self.num_rules + self.num_lookahead, problem.height, problem.width)
        # distances are at most W·H steps, so (d + 1) / scale <= 4; binary's path gain is clipped to [-1, 2]
        self.observation_space = spaces.Box(-1.0, 4.0, self._shape, dtype=np.float32)

    def observation(self, observation: Any) -> np.ndarray:
        core, problem = self._core, self._core.problem
        t = self.num_tiles
        out = np.empty(self._shape, dtype=np.float32)
        out[:t] = observation
        source, walkable = problem.distance_source(core.masks)
        if source:
            layers = bfs_layers(source, walkable | source, problem.grid.pitch)
            reached = problem.grid.planes(layers)  # (L, H, W), one layer per distance
            depth = np.arange(1, len(layers) + 1, dtype=np.float32)
            out[t] = np.tensordot(depth, reached, axes=1) / self._scale
            out[t + 1] = reached[-1]
        else:
            out[t : t + 2] = 0.0
        out[t + 2] = 1.0 - core.changes / core.max_changes
        out[t + 3] = float(bool(source))
        for i, value in enumerate(problem.progress(core.stats, core.start_stats)):
            out[t + 4 + i] = value
        rules = t + 4 + self.num_progress
        if self.num_rules:
            out[rules : rules + self.num_rules] = problem.grid.planes(problem.rule_planes(core.masks))
        if self._lookahead is not None:
            out[rules + self.num_rules :] = self._lookahead.edit_lookahead(core.level, core.start_stats).reshape(
                self.num_lookahead, problem.height, problem.width)
        return out


class FlatWideAction(gym.ActionWrapper[Any, Any, Any], gym.utils.RecordConstructorArgs):
    """Wide representation with one flat action ``t·H·W + y·W + x`` (write tile ``t`` at ``(x, y)``).

    The index order is that of a ``(T, H, W)`` map flattened, so a fully convolutional policy's
    per-cell tile logits are its action logits (PCGRL's wide agent). A uniformly random flat
    action is a uniformly random ``(x, y, t)``, as in the unwrapped environment.
    """

    def __init__(self, env: gym.Env[Any, Any]) -> None:
        gym.utils.RecordConstructorArgs.__init__(self)
        gym.ActionWrapper.__init__(self, env)
        core = _core(env)
        if core.representation.position is not None:
            raise ValueError("FlatWideAction needs the wide representation: narrow and turtle actions are already flat.")
        problem = core.problem
        self._shape = (problem.num_tiles, problem.height, problem.width)
        self.action_space = spaces.Discrete(int(np.prod(self._shape)))

    def action(self, action: Any) -> np.ndarray:
        t, y, x = np.unravel_index(int(action), self._shape)
        return np.array([x, y, t], dtype=np.int64)


class RecordLevels(gym.Wrapper[Any, Any, Any, Any]):
    """Appends ``(level, info)`` for every finished episode to ``sink``."""

    def __init__(self, env: gym.Env[Any, Any], sink: list[tuple[np.ndarray, dict[str, Any]]]) -> None:
        super().__init__(env)
        self._core = _core(env)
        self.sink = sink

    def step(self, action: Any) -> tuple[Any, Any, bool, bool, dict[str, Any]]:
        obs, reward, terminated, truncated, info = self.env.step(action)
        if terminated or truncated:
            self.sink.append((self._core.level, dict(info)))
        return obs, reward, terminated, truncated, info


def policy_observation(env: gym.Env[Any, Any], crop_size: int | None = None, flat_actions: bool = False,
                       goal_features: bool = False, rule_planes: bool = False, lookahead: bool = False) -> gym.Env[Any, Any]:
    """The observation wrapper a policy network needs: a crop for narrow/turtle, one-hot for wide
    (with ``flat_actions``, wide actions also go through ``FlatWideAction``; with
    ``goal_features``, wide observations gain ``GoalFeatures``' planes, and with ``rule_planes``
    the problem's rule planes too, with ``lookahead`` the edit lookahead planes)."""
    if (rule_planes or lookahead) and not goal_features:
        raise ValueError("rule and lookahead planes come with the goal features: set goal_features too.")
    if _core(env).representation.position is None:
        onehot = OneHotObservation(FlatWideAction(env) if flat_actions else env)
        return GoalFeatures(onehot, rule_planes=rule_planes, lookahead=lookahead) if goal_features else onehot
    if goal_features:
        raise ValueError("goal features need the wide representation (a whole-map observation).")
    return CropOneHotObservation(env, crop_size)
