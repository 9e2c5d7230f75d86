"""Level rewards for levels written as text, one character per tile (``render.CHARS``), rows
separated by ``|`` (the level writer's format, :mod:`rl4gen.tasks.level_writer`).

``level_goal`` scores a written level with the independent checker of
:mod:`rl4gen.envs.levels.check`: 1 when the level meets its problem's goal, 0 when it does not,
plus ``shaping`` × its mean progress on the goal's conditions (a dense signal in ``[0, shaping]``:
each condition counts 1 when met, and a path or distance target ``min(value / target, 1)``); a text that is not a level of the expected size gets ``malformed`` (−1 by
default, below every well-formed level).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from rl4gen.envs.levels.check import DEFAULT_TARGETS, LevelCheck, check_level
from rl4gen.rewards.base import register_reward

__all__ = ["ROW_SEP", "DifficultyBalanceReward", "LevelGoalReward", "band_score", "goal_conditions", "goal_progress", "parse_written_level"]

#: separates rows in a written level
ROW_SEP = "|"


def parse_written_level(text: str, chars: str, width: int, height: int) -> np.ndarray | None:
    """The level a text describes (``height`` rows of ``width`` tile characters joined by ``|``),
    or None when it is not one."""
    rows = text.strip().split(ROW_SEP)
    if len(rows) != height or any(len(r) != width for r in rows):
        return None
    try:
        return np.array([[chars.index(c) for c in r] for r in rows], dtype=np.uint8)
    except ValueError:  # a character that is not a tile
        return None


def goal_conditions(problem: str, check: LevelCheck, targets: dict[str, int]) -> list[bool]:
    """The conditions of ``problem``'s goal (and of PCGRL's target ranges), each met or not."""
    s = check.stats
    if problem == "binary":
        return [s["regions"] == 1, s["path-length"] >= targets["target_path"]]
    if problem == "zelda":
        return [
            s["player"] == 1, s["key"] == 1, s["door"] == 1, s["regions"] == 1, 2 <= s["enemies"] <= 5,
            s["nearest-enemy"] >= targets["target_enemy_dist"], s["path-length"] >= targets["target_path"],
        ]
    return [
        s["player"] == 1, s["crate"] == s["target"] >= 1, s["regions"] == 1, s["sol-length"] >= 0,
        s["sol-length"] >= targets["target_solution"],
    ]


def goal_progress(problem: str, check: LevelCheck, targets: dict[str, int]) -> list[float]:
    """``goal_conditions`` with partial credit: a "at least a target" condition scores
    ``min(value / target, 1)`` instead of 0 or 1, so that longer paths pay before the target."""
    s = check.stats
    met = [float(m) for m in goal_conditions(problem, check, targets)]

    def part(value: float, target: int) -> float:
        return min(max(value, 0.0) / target, 1.0) if target > 0 else 1.0

    if problem == "binary":
        met[1] = part(s["path-length"], targets["target_path"])
    elif problem == "zelda":
        met[5] = part(s["nearest-enemy"], targets["target_enemy_dist"])
        met[6] = part(s["path-length"], targets["target_path"])
    else:
        met[4] = part(s["sol-length"], targets["target_solution"])
    return met


@register_reward("level_goal")
class LevelGoalReward:
    """Goal satisfaction of a written level (1 or 0) plus ``shaping`` × the mean progress on the
    goal's conditions (``goal_progress``: met or not, with partial credit ``min(value / target, 1)``
    for the path and distance targets); ``malformed`` for a text that is not a ``width`` ×
    ``height`` level.

    Args:
        problem: ``binary``, ``zelda`` or ``sokoban``.
        width, height: the level's size.
        targets: goal thresholds (``target_path``, ``target_enemy_dist``, ``target_solution``);
            binary's path length is absolute here (a written level has no start level).
        shaping: weight of the dense term.
        malformed: reward of a text that is not a level.
    """

    name = "level_goal"

    def __init__(
        self,
        problem: str = "binary",
        width: int = 14,
        height: int = 14,
        targets: dict[str, int] | None = None,
        shaping: float = 0.0,
        malformed: float = -1.0,
    ) -> None:
        from rl4gen.envs.levels.render import CHARS

        if problem not in CHARS:
            raise ValueError(f"unknown level problem {problem!r}: use one of {', '.join(CHARS)}")
        unknown = set(targets or {}) - set(DEFAULT_TARGETS[problem])
        if unknown:
            raise ValueError(f"{problem} has no goal threshold {min(unknown)!r}: use {', '.join(DEFAULT_TARGETS[problem])}")
        self.problem, self.width, self.height = problem, int(width), int(height)
        self.chars = CHARS[problem]
        self.targets = {**DEFAULT_TARGETS[problem], **(targets or {})}
        self.shaping, self.malformed = float(shaping), float(malformed)

    def score(self, text: str) -> tuple[float, LevelCheck | None]:
        level = parse_written_level(text, self.chars, self.width, self.height)
        if level is None:
            return self.malformed, None
        check = check_level(self.problem, level, **self.targets)
        progress = goal_progress(self.problem, check, self.targets)
        return float(check.goal) + self.shaping * sum(progress) / len(progress), check

    def __call__(self, samples: Sequence[Any], contexts: Sequence[Any], **info: Any) -> list[float | None]:
        return [self.score(str(s))[0] for s in samples]


def band_score(success: float, low: float, high: float) -> float:
    """1 inside ``[low, high]``; below it ``success / low``, above it ``(1 − success) / (1 − high)``
    (0 for a level nobody wins and for one that is always won, when the band excludes 0 and 1)."""
    if success < low:
        return success / low
    if success > high:
        return (1.0 - success) / (1.0 - high)
    return 1.0


@register_reward("difficulty_balance")
class DifficultyBalanceReward:
    """Difficulty balance of a written zelda or sokoban level, judged by a player model as
    playtester: the model plays the level ``episodes`` times (sampled actions) and its success rate
    ``s`` scores ``band_score(s, low, high)`` — 1 for levels neither trivial nor impossible for the
    player, falling linearly to 0 at "never won" and "always won". A level the scripted planner
    cannot win (no single player, no path, an unsolvable Sokoban) scores ``unsolvable``; a text that
    is not a level scores ``malformed``.

    Args:
        problem: ``zelda`` or ``sokoban``.
        width, height: the level's size (default the problem's: 11×7, 5×5).
        player: a player folder (``rl4gen levels train-player``), ``"random"`` (uniform moves) or
            ``"scripted:EPS"`` (the noisy-optimal scripted player with random-move rate EPS).
        band: ``[low, high]`` target success rates.
        episodes: plays per level.
        unsolvable, malformed: scores of levels nobody can win and of texts that are not levels.
    """

    name = "difficulty_balance"

    def __init__(
        self,
        problem: str = "zelda",
        width: int | None = None,
        height: int | None = None,
        player: str = "scripted:0.3",
        band: Sequence[float] = (0.3, 0.7),
        episodes: int = 8,
        unsolvable: float = 0.0,
        malformed: float = -1.0,
        seed: int = 0,
    ) -> None:
        from rl4gen.envs.levels.play import PLAY_PROBLEMS, SIZES
        from rl4gen.envs.levels.render import CHARS

        if problem not in PLAY_PROBLEMS:
            raise ValueError(f"difficulty_balance plays {' and '.join(PLAY_PROBLEMS)} levels, not {problem!r}.")
        low, high = (float(b) for b in band)
        if not 0.0 < low <= high < 1.0:
            raise ValueError(f"difficulty_balance band must satisfy 0 < low <= high < 1, got {list(band)}.")
        if episodes < 1:
            raise ValueError(f"difficulty_balance episodes must be at least 1, got {episodes}.")
        self.problem, self.low, self.high, self.episodes, self.seed = problem, low, high, int(episodes), int(seed)
        self.width, self.height = width or SIZES[problem][0], height or SIZES[problem][1]
        self.chars = CHARS[problem]
        self.unsolvable, self.malformed = float(unsolvable), float(malformed)
        self.player_spec = player
        self._player: Any = None
        if player != "random" and not str(player).startswith("scripted"):
            from pathlib import Path

            if not (Path(player) / "player.json").is_file():
                raise ValueError(
                    f"difficulty_balance player {player!r} is not a player folder: train one with "
                    "`rl4gen levels train-player --traces ... --output FOLDER`, or use 'scripted:0.3' or 'random'."
                )

    @property
    def player(self) -> Any:
        if self._player is None:
            from rl4gen.envs.levels.play import ScriptedPlayer
            from rl4gen.envs.levels.players import load_player

            spec = str(self.player_spec)
            if spec == "random":
                self._player = "random"
            elif spec.startswith("scripted"):
                eps = spec.partition(":")[2]
                try:
                    self._player = ScriptedPlayer(float(eps or 0.0), seed=self.seed)
                except ValueError:
                    raise ValueError(f"difficulty_balance player {spec!r}: write scripted:EPS with EPS in [0, 1].") from None
            else:
                self._player = load_player(spec)
                if self._player.problem != self.problem:
                    raise ValueError(f"difficulty_balance player {spec!r} plays {self._player.problem}, not {self.problem}.")
        return self._player

    def success_rates(self, levels: Sequence[np.ndarray]) -> list[float | None]:
        """The player's success rate per level (None for a level the planner cannot win)."""
        from rl4gen.envs.levels.play import is_playable
        from rl4gen.envs.levels.players import playtest

        playable = [i for i, lv in enumerate(levels) if is_playable(self.problem, lv)]
        out: list[float | None] = [None] * len(levels)
        if playable:
            result = playtest([levels[i] for i in playable], self.player, problem=self.problem, episodes=self.episodes, seed=self.seed)
            for i, s in zip(playable, result["per_level"], strict=True):
                out[i] = float(s)
        return out

    def score_levels(self, levels: Sequence[np.ndarray | None]) -> list[float]:
        parsed = [lv for lv in levels if lv is not None]
        rates = iter(self.success_rates(parsed))
        out = []
        for lv in levels:
            if lv is None:
                out.append(self.malformed)
                continue
            s = next(rates)
            out.append(self.unsolvable if s is None else band_score(s, self.low, self.high))
        return out

    def __call__(self, samples: Sequence[Any], contexts: Sequence[Any], **info: Any) -> list[float | None]:
        levels = [parse_written_level(str(s), self.chars, self.width, self.height) for s in samples]
        return list(self.score_levels(levels))
