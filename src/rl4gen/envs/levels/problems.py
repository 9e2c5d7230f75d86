"""PCGRL problems: what a good level is, as statistics, a shaped reward and a goal.

Sizes, tile sets, initial tile probabilities, target ranges and reward weights are PCGRL's
(Khalifa et al., "PCGRL: Procedural Content Generation via Reinforcement Learning", AIIDE 2020).
The reward of one step is ``Σ_k weight_k × range_reward(new_k, old_k, low_k, high_k)``: the signed
improvement of statistic ``k`` toward its target range ``[low_k, high_k]`` (zero inside it).
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import numpy as np

from rl4gen.envs.levels.stats import (
    Grid,
    count_regions,
    distance,
    path_starts,
    regions_and_longest_path,
    sokoban_dead_cells,
    sokoban_pushable_crates,
    solve_sokoban,
    update_regions,
)

__all__ = ["PROBLEMS", "BinaryProblem", "Problem", "SokobanProblem", "ZeldaProblem", "make_problem", "range_reward"]

INF = math.inf
Stats = dict[str, float]


def range_reward(new: float, old: float, low: float, high: float) -> float:
    """PCGRL's shaped reward for one statistic: how much closer ``new`` is to ``[low, high]``
    than ``old`` was (positive = better, zero when both are inside the range)."""
    if low <= new <= high and low <= old <= high:
        return 0.0
    if old <= high and new <= high:
        return float(min(new, low) - min(old, low))
    if old >= low and new >= low:
        return float(max(old, high) - max(new, high))
    if new > high and old < low:
        return float(high - new + old - low)
    return float(high - old + new - low)  # new < low and old > high


class Problem:
    """A level-generation problem: size, tiles, statistics, reward and goal."""

    name: ClassVar[str]
    width: int
    height: int
    tiles: ClassVar[tuple[str, ...]]
    probs: tuple[float, ...]
    weights: dict[str, float]
    #: target range per weighted statistic
    ranges: dict[str, tuple[float, float]]
    _options: ClassVar[tuple[str, ...]] = ("width", "height", "probs", "weights")
    #: names of the masks ``rule_planes`` returns, in order (empty: the problem defines none)
    rule_plane_names: ClassVar[tuple[str, ...]] = ()
    #: what ``edit_lookahead`` says of each single edit, in order (``lookahead`` gives the values)
    lookahead_names: ClassVar[tuple[str, ...]] = ("goal",)
    _terms: list[tuple[str, float, float, float]] | None = None  # (statistic, weight, low, high)

    def __init__(self, **options: Any) -> None:
        for key, value in options.items():
            if key not in self._options:
                allowed = ", ".join(self._options)
                raise ValueError(f"{self.name} problem has no option {key!r}: use one of {allowed}.")
            if key == "weights":
                unknown = set(value) - set(self.weights)
                if unknown:
                    raise ValueError(
                        f"{self.name} problem has no reward weight {min(unknown)!r}: "
                        f"weights are {', '.join(self.weights)}."
                    )
                self.weights = {**self.weights, **{k: float(v) for k, v in value.items()}}
            elif key == "probs":
                if set(value) != set(self.tiles) or any(float(v) < 0 for v in value.values()):
                    raise ValueError(
                        f"{self.name} problem needs 'probs' with a non-negative probability for each of "
                        f"{', '.join(self.tiles)}."
                    )
                total = sum(float(v) for v in value.values())
                if total <= 0:
                    raise ValueError(f"{self.name} problem 'probs' must not all be zero.")
                self.probs = tuple(float(value[t]) / total for t in self.tiles)
            elif key in ("width", "height"):
                if not isinstance(value, int) or not 3 <= value <= 64:
                    raise ValueError(f"{self.name} problem option {key!r} must be an integer in [3, 64], got {value!r}.")
                setattr(self, key, value)
            else:
                setattr(self, key, self._check_option(key, value))
        self.grid = Grid(self.width, self.height)
        self._last_passable = -1
        self._last_regions = 0

    def _check_option(self, key: str, value: Any) -> Any:
        if not isinstance(value, (int, float)) or value < 0:
            raise ValueError(f"{self.name} problem option {key!r} must be a non-negative number, got {value!r}.")
        return value

    @property
    def num_tiles(self) -> int:
        return len(self.tiles)

    def tile(self, name: str) -> int:
        return self.tiles.index(name)

    def stats(self, masks: list[int]) -> Stats:
        """Statistics of a level given one bit mask per tile type."""
        raise NotImplementedError

    def reward(self, new: Stats, old: Stats) -> float:
        """``Σ_k weight_k × range_reward(new_k, old_k, low_k, high_k)``."""
        terms = self._terms
        if terms is None:
            terms = self._terms = [(k, w, *self.ranges[k]) for k, w in self.weights.items() if w]
        total = 0.0
        for key, weight, low, high in terms:
            n, o = new[key], old[key]
            if n != o:  # an unchanged statistic earns nothing
                if low == high == INF:  # "more is better"
                    total += weight * (n - o)
                elif low == high == -INF:  # "less is better"
                    total += weight * (o - n)
                else:
                    total += weight * range_reward(n, o, low, high)
        return total

    def goal(self, stats: Stats, start: Stats) -> bool:
        """Whether the level is done (PCGRL's episode-over condition)."""
        raise NotImplementedError

    def goal_possible(self, masks: list[int]) -> bool:
        """A cheap necessary condition for a goal level (False: ``goal`` cannot hold, whatever the
        statistics), checked before the full statistics where many levels are tried
        (``teacher.goal_edits``). The default rules nothing out."""
        return True

    def progress(self, stats: Stats, start: Stats) -> list[float]:
        """How far each of the goal's conditions is met, one number per condition, about 0 (far)
        to 1 (met); the goal-feature observation shows them to the policy."""
        raise NotImplementedError

    def lookahead(self, stats: Stats, start: Stats) -> tuple[float, ...]:
        """One value per name in ``lookahead_names`` for a level reached by one edit, from its
        statistics (0 to 1; all zero must be right wherever ``goal_possible`` fails, since
        ``edit_lookahead`` skips those levels). The default: whether it is a goal level."""
        return (float(self.goal(stats, start)),)

    def edit_lookahead(self, level: np.ndarray, start: Stats) -> np.ndarray:
        """What each single edit of ``level`` would lead to: ``(K, T, H, W)`` ``float32`` with
        ``K = len(lookahead_names)``; entry ``[k, t, y, x]`` is value ``k`` of ``lookahead`` for the
        level with tile ``t`` written at ``(x, y)`` (zero where that tile is already there, and
        wherever ``goal_possible`` rules the edited level out, before its statistics are computed).
        ``start`` is the episode's start statistics. Every other tile of every cell is tried: on
        sokoban's 5×5 maps ~0.3–3 ms a level, most of it the solver."""
        tiles, cells = self.num_tiles, self.height * self.width
        out = np.zeros((len(self.lookahead_names), tiles, cells), dtype=np.float32)
        masks = self.grid.masks(level, tiles)
        for i, (bit, old) in enumerate(zip(self.grid.cell_bits, np.asarray(level).ravel().tolist(), strict=True)):
            for tile in range(tiles):
                if tile == old:
                    continue
                child = list(masks)
                child[old] ^= bit
                child[tile] |= bit
                if self.goal_possible(child):
                    out[:, tile, i] = self.lookahead(self.stats(child), start)
        return out.reshape(len(self.lookahead_names), tiles, self.height, self.width)

    def distance_source(self, masks: list[int]) -> tuple[int, int]:
        """``(source cells, walkable cells)`` of the map of BFS distances that matters for the
        goal's path (binary: from each region's path start; zelda, sokoban: from the player)."""
        raise NotImplementedError

    def rule_planes(self, masks: list[int]) -> list[int]:
        """Cells a rule of the game marks, one bit mask per name in ``rule_plane_names`` (sokoban:
        the dead cells, the crates the player can push now). ``GoalFeatures(rule_planes=True)``
        shows them to the policy, so that a rule judged by the same code on every level need not
        be learned from filters start level by start level."""
        return []

    def _regions(self, passable: int) -> int:
        """``count_regions``, incrementally: most edits of zelda and sokoban swap one walkable
        tile for another (nothing to do), and when one cell changes its 3×3 neighbourhood
        usually settles the count (``update_regions``); otherwise a full count."""
        changed = passable ^ self._last_passable
        if changed:
            regions = None
            if changed & (changed - 1) == 0 and self._last_passable >= 0:  # exactly one cell
                regions = update_regions(self._last_regions, passable, changed, self.grid.pitch)
            self._last_regions = count_regions(passable, self.grid.pitch) if regions is None else regions
            self._last_passable = passable
        return self._last_regions


class BinaryProblem(Problem):
    """One connected region of empty tiles with a long path (14×14, empty/solid)."""

    name = "binary"
    tiles = ("empty", "solid")
    _options = ("width", "height", "probs", "weights", "target_path", "random_probs")

    def __init__(self, **options: Any) -> None:
        self.width, self.height = 14, 14
        self.probs = (0.5, 0.5)
        self.target_path = 20
        #: draw P(empty) ~ U(0, 1) for each new episode's map, as PCGRL does
        self.random_probs = True
        self.weights = {"regions": 5.0, "path-length": 1.0}
        self.ranges = {"regions": (1, 1), "path-length": (INF, INF)}
        super().__init__(**options)

    def _check_option(self, key: str, value: Any) -> Any:
        if key == "random_probs":
            if not isinstance(value, bool):
                raise ValueError(f"binary problem option 'random_probs' must be true or false, got {value!r}.")
            return value
        return super()._check_option(key, value)

    def stats(self, masks: list[int]) -> Stats:
        regions, longest = regions_and_longest_path(masks[0], self.grid.pitch)
        return {"regions": regions, "path-length": longest}

    def goal(self, stats: Stats, start: Stats) -> bool:
        return stats["regions"] == 1 and stats["path-length"] - start["path-length"] >= self.target_path

    def progress(self, stats: Stats, start: Stats) -> list[float]:
        gain = (stats["path-length"] - start["path-length"]) / max(self.target_path, 1)
        return [1 / stats["regions"] if stats["regions"] else 0.0, min(max(gain, -1.0), 2.0)]

    def distance_source(self, masks: list[int]) -> tuple[int, int]:
        return path_starts(masks[0], self.grid.pitch)[1], masks[0]


class ZeldaProblem(Problem):
    """One player, one key, one door, 2–5 enemies at least 4 steps from the player, a long path
    player → key → door, all in one region (11×7)."""

    name = "zelda"
    tiles = ("empty", "solid", "player", "key", "door", "bat", "scorpion", "spider")
    _options = ("width", "height", "probs", "weights", "max_enemies", "target_enemy_dist", "target_path")

    def __init__(self, **options: Any) -> None:
        self.width, self.height = 11, 7
        self.probs = (0.58, 0.3, 0.02, 0.02, 0.02, 0.02, 0.02, 0.02)
        self.max_enemies = 5
        self.target_enemy_dist = 4
        self.target_path = 16
        self.weights = {
            "player": 3.0, "key": 3.0, "door": 3.0, "regions": 5.0,
            "enemies": 1.0, "nearest-enemy": 2.0, "path-length": 1.0,
        }
        super().__init__(**options)
        self.ranges = {
            "player": (1, 1), "key": (1, 1), "door": (1, 1), "regions": (1, 1),
            "enemies": (2, self.max_enemies), "nearest-enemy": (self.target_enemy_dist, INF),
            "path-length": (INF, INF),
        }

    def stats(self, masks: list[int]) -> Stats:
        empty, _, player, key, door, bat, scorpion, spider = masks
        pitch = self.grid.pitch
        enemies = bat | scorpion | spider
        walkable = empty | player | key | enemies  # PCGRL's regions leave the door out
        stats: Stats = {
            "player": player.bit_count(),
            "key": key.bit_count(),
            "door": door.bit_count(),
            "enemies": enemies.bit_count(),
            "regions": self._regions(walkable),
            "nearest-enemy": 0,
            "path-length": 0,
        }
        if stats["player"] == 1 and stats["regions"] == 1:
            if enemies:
                stats["nearest-enemy"] = distance(player, enemies, walkable, pitch)
            if stats["key"] == 1 and stats["door"] == 1:
                to_key = distance(player, key, walkable, pitch)
                to_door = distance(key, door, walkable, pitch)
                if to_key >= 0 and to_door >= 0:  # an unreachable door counts as no path
                    stats["path-length"] = to_key + to_door
        return stats

    def goal(self, stats: Stats, start: Stats) -> bool:
        return stats["nearest-enemy"] >= self.target_enemy_dist and stats["path-length"] >= self.target_path

    def progress(self, stats: Stats, start: Stats) -> list[float]:
        counts = [float(stats[k] == 1) for k in ("player", "key", "door")]
        enemies = float(2 <= stats["enemies"] <= self.max_enemies)
        return [*counts, 1 / stats["regions"] if stats["regions"] else 0.0, enemies,
                min(stats["nearest-enemy"] / max(self.target_enemy_dist, 1), 1.0),
                min(stats["path-length"] / max(self.target_path, 1), 1.0)]

    def distance_source(self, masks: list[int]) -> tuple[int, int]:
        empty, _, player, key, door, bat, scorpion, spider = masks
        return player, empty | player | key | door | bat | scorpion | spider


class SokobanProblem(Problem):
    """One player, as many crates as targets (1–3), one region, solvable with a long solution
    (5×5; the solver is a breadth-first search bounded by ``solver_power`` states)."""

    name = "sokoban"
    tiles = ("empty", "solid", "player", "crate", "target")
    _options = ("width", "height", "probs", "weights", "max_crates", "target_solution", "solver_power")

    def __init__(self, **options: Any) -> None:
        self.width, self.height = 5, 5
        self.probs = (0.45, 0.4, 0.05, 0.05, 0.05)
        self.max_crates = 3
        self.target_solution = 18
        self.solver_power = 5000
        self.weights = {
            "player": 3.0, "crate": 2.0, "target": 2.0, "regions": 5.0,
            "ratio": 2.0, "dist-win": 0.0, "sol-length": 1.0,
        }
        super().__init__(**options)
        self.ranges = {
            "player": (1, 1), "crate": (1, self.max_crates), "target": (1, self.max_crates),
            "regions": (1, 1), "ratio": (-INF, -INF), "dist-win": (-INF, -INF),
            "sol-length": (INF, INF),
        }

    def stats(self, masks: list[int]) -> Stats:
        empty, _, player, crate, target = masks
        passable = empty | player | crate | target
        crates, targets = crate.bit_count(), target.bit_count()
        stats: Stats = {
            "player": player.bit_count(),
            "crate": crates,
            "target": targets,
            "regions": self._regions(passable),
            "ratio": abs(crates - targets),
            "dist-win": self.width * self.height * (self.width + self.height),
            "sol-length": 0,
        }
        if stats["player"] == 1 and crates == targets and stats["regions"] == 1:
            stats["dist-win"], stats["sol-length"] = solve_sokoban(
                player, crate, target, passable, self.grid.pitch, self.solver_power
            )
        return stats

    def goal(self, stats: Stats, start: Stats) -> bool:
        return stats["dist-win"] == 0 and stats["sol-length"] >= self.target_solution

    def goal_possible(self, masks: list[int]) -> bool:
        """One player, as many crates as targets (at least one), and no crate on a dead cell (one
        from which no push sequence reaches a target: the level cannot be solved)."""
        empty, _, player, crate, target = masks
        crates = crate.bit_count()
        if player.bit_count() != 1 or crates == 0 or crates != target.bit_count():
            return False
        return not crate & sokoban_dead_cells(target, empty | player | crate | target, self.grid.pitch)

    def progress(self, stats: Stats, start: Stats) -> list[float]:
        solved = stats["dist-win"] == 0 and stats["crate"] > 0
        return [float(stats["player"] == 1), float(stats["crate"] == stats["target"] > 0),
                1 / stats["regions"] if stats["regions"] else 0.0, float(solved),
                min(stats["sol-length"] / max(self.target_solution, 1), 1.0)]

    lookahead_names = ("goal", "solvable", "solution")

    def lookahead(self, stats: Stats, start: Stats) -> tuple[float, ...]:
        """Goal level; solvable (the bounded solver's verdict, so never where ``goal_possible``
        fails); the solution's moves over ``target_solution``, at most 1 (0 when unsolved)."""
        if stats["dist-win"] != 0 or stats["crate"] == 0:
            return (0.0, 0.0, 0.0)
        return (float(self.goal(stats, start)), 1.0, min(stats["sol-length"] / max(self.target_solution, 1), 1.0))

    def distance_source(self, masks: list[int]) -> tuple[int, int]:
        empty, _, player, _, target = masks  # crates block the player's walk
        return player, empty | player | target

    rule_plane_names = ("dead", "pushable")

    def rule_planes(self, masks: list[int]) -> list[int]:
        empty, _, player, crate, target = masks
        pitch = self.grid.pitch
        passable = empty | player | crate | target
        return [sokoban_dead_cells(target, passable, pitch),
                sokoban_pushable_crates(player, crate, empty | player | target, pitch)]


PROBLEMS: dict[str, type[Problem]] = {
    "binary": BinaryProblem,
    "zelda": ZeldaProblem,
    "sokoban": SokobanProblem,
}


def make_problem(name: str, **options: Any) -> Problem:
    """Build a problem by name, with its options validated."""
    if name not in PROBLEMS:
        raise ValueError(f"unknown level problem {name!r}: use one of {', '.join(PROBLEMS)}.")
    return PROBLEMS[name](**options)
