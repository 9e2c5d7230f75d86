"""A search ceiling for the PCGRL problems: can a start level reach the goal within the budget?

An agent in ``LevelEnv`` may change at most ``max_changes`` tiles (``change_percentage`` of the
map). Whatever order it edits in, the level it ends on differs from the start level in at most
that many cells, and every level within that Hamming distance can be reached in that many edits
(write each differing cell once). So "this start level can reach the goal" means "some goal level
lies within Hamming distance ``max_changes`` of it", and this module searches that ball.

The search (:func:`search_goal_level`) is a **beam search** over levels, guided by a per-problem
*deficit* (how far the statistics are from the goal, weighted like the problem's shaped reward,
zero at a goal level) and checked against ``problem.goal`` at every level it scores:

- a *move* is one write (a cell gets another tile) or, for problems with object tiles (zelda,
  sokoban), a *swap* of two cells' tiles where at least one holds an object (player, key, crate,
  ...): moving an object costs two edits, and as two single writes its middle level (the object
  gone, or doubled) scores worse than either end, which a narrow beam would never cross;
- a move is allowed when the new level is still within ``max_changes`` of the start (a cell
  edited back to its start tile gives its edit back);
- a *pass* starts from the start level; each of its ``max_changes`` steps expands every level of
  the beam by every move and keeps the ``beam_width`` children with the lowest deficit
  (duplicates removed); the first pass is greedy (ties broken by the seeded generator), later
  passes (**restarts**) add uniform noise of growing size to the deficits so that they explore
  other paths, until a goal level is found or ``time_limit`` seconds of process time are spent.

The search stops at the first goal level and verifies it with the independent checker
(:func:`rl4gen.envs.levels.check.check_level`, binary's path gain measured against the start
level). A found level proves the start *can* reach the goal, so the fraction of starts with a
found level is a **lower bound** on the best goal rate any agent can reach on those starts.
`count_lower_bound` gives the other side for zelda and sokoban: the fewest edits that fix
the tile counts the goal needs; a start whose bound exceeds the budget provably cannot reach it.
"""

from __future__ import annotations

import heapq
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from rl4gen.envs.levels.check import check_level
from rl4gen.envs.levels.evaluate import goal_targets
from rl4gen.envs.levels.problems import Problem, Stats

__all__ = ["SearchResult", "count_edits", "count_lower_bound", "deficit", "search_goal_level"]

#: first tile index of the "object" tiles (player, key, crate, ...) that swap moves carry
OBJECT_TILES = 2


@dataclass
class SearchResult:
    """What the search found for one start level."""

    #: a goal level was found and the independent checker agreed
    goal: bool
    #: the goal level, or the lowest-deficit level seen when none was found
    level: np.ndarray
    #: cells that differ from the start level (the edits an agent needs)
    edits: int
    #: the deficit of ``level`` (0 at a goal level)
    deficit: float
    #: levels scored
    evaluations: int
    #: beam passes run (1 + restarts)
    rounds: int
    #: process time spent, seconds
    seconds: float
    #: the independent checker's statistics of ``level``
    check: dict[str, float] = field(default_factory=dict)
    #: the problem's own goal test held at ``level`` (``goal`` adds the checker's agreement)
    env_goal: bool = False


def deficit(problem: Problem, stats: Stats, start: Stats) -> float:
    """How far ``stats`` are from ``problem``'s goal: a weighted sum of shortfalls, 0 at a goal.

    Terms: ``5 ×`` the edits the tile counts still need (:func:`count_edits`), ``5 × |regions −
    1|`` (the shaped reward's region weight), the goal's distance shortfalls (zelda's
    nearest enemy ×2 as in the reward, paths ×1) and, for sokoban, a penalty for an unsolved
    level: 1 + the solver's crate-to-target distance (at most 4) when it ran, 5 when it could
    not run. Counting the tile fixes in edits (rather than per statistic) keeps the score from
    rising on the way between two counts that must change together (a crate, then its target).
    """
    name = problem.name
    if name == "binary":
        wanted = start["path-length"] + problem.target_path  # type: ignore[attr-defined]
        return 5 * abs(stats["regions"] - 1) + max(0.0, wanted - stats["path-length"])
    counts = 5 * count_edits(problem, stats) + 5 * abs(stats["regions"] - 1)
    if name == "zelda":
        return (
            counts
            + 2 * max(0.0, problem.target_enemy_dist - stats["nearest-enemy"])  # type: ignore[attr-defined]
            + max(0.0, problem.target_path - stats["path-length"])  # type: ignore[attr-defined]
        )
    if name == "sokoban":
        if stats["crate"] == 0 or stats["dist-win"] >= problem.width * problem.height * (problem.width + problem.height):
            unsolved = 5.0  # nothing to solve, or the solver did not run
        else:
            unsolved = 0.0 if stats["dist-win"] == 0 else 1 + min(stats["dist-win"], 4)
        return counts + unsolved + max(0.0, problem.target_solution - stats["sol-length"])  # type: ignore[attr-defined]
    raise ValueError(f"no search deficit for level problem {name!r}: use binary, zelda or sokoban.")


def count_edits(problem: Problem, stats: Stats) -> int:
    """The fewest edits that give a level (given its statistics) the tile counts its problem's
    goal needs.

    zelda: one player, one key, one door and at least one enemy (the nearest-enemy distance needs
    one); sokoban: one player and as many crates as targets, at least one (a solution of
    ``target_solution`` moves needs a crate). An edit turns one tile into another, so it lowers
    one count by one and raises another by one: with the tiles grouped (enemies together, every
    other tile as "other") the fewest edits from counts ``n`` to counts ``m`` is ``Σ|n − m| / 2``,
    minimised over the allowed ``m``. Binary's goal needs no count: 0.
    """
    cells = problem.width * problem.height
    options: list[tuple[int, ...]]
    if problem.name == "zelda":
        have = [int(stats[k]) for k in ("player", "key", "door", "enemies")]
        # the optimum keeps the enemies between 1 and the count that balances the others
        options = [(1, 1, 1, e) for e in range(1, max(have[3], sum(have) - 3, 1) + 1)]
    elif problem.name == "sokoban":
        have = [int(stats[k]) for k in ("player", "crate", "target")]
        options = [(1, c, c) for c in range(1, (cells - 1) // 2 + 1)]
    else:
        return 0
    other = cells - sum(have)
    return min(
        sum(abs(a - b) for a, b in zip(have, want, strict=True)) + abs(other - (cells - sum(want)))
        for want in options
    ) // 2


def count_lower_bound(problem: Problem, level: np.ndarray) -> int:
    """:func:`count_edits` of a level: no sequence of fewer edits can reach the goal from it."""
    return count_edits(problem, problem.stats(problem.grid.masks(np.asarray(level), problem.num_tiles)))


def _moves(cells: list[int], num_tiles: int, swaps: bool) -> list[tuple[int, int, int, int]]:
    """Every move from ``cells`` as ``(cell_a, tile_a, cell_b, tile_b)`` (``cell_b`` -1: one write)."""
    n = len(cells)
    out = [(i, t, -1, 0) for i in range(n) for t in range(num_tiles) if t != cells[i]]
    if swaps:
        for i in range(n):
            for j in range(i + 1, n):
                a, b = cells[i], cells[j]
                if a != b and (a >= OBJECT_TILES or b >= OBJECT_TILES):
                    out.append((i, b, j, a))
    return out


class _Pass:
    """What one search shares across its beam passes: the start, the scoring and the counters."""

    def __init__(self, problem: Problem, start: np.ndarray, max_changes: int, score: Callable[[Problem, Stats, Stats], float]) -> None:
        self.problem = problem
        self.max_changes = max_changes
        self.score = score
        self.cells = start.ravel().tolist()
        self.masks = problem.grid.masks(start, problem.num_tiles)
        self.stats = problem.stats(self.masks)
        self.swaps = problem.num_tiles > OBJECT_TILES
        self.evaluations = 1
        #: (deficit, cells, edits) of the lowest-deficit level seen
        self.best: tuple[float, list[int], int] = (score(problem, self.stats, self.stats), self.cells, 0)

    def run(self, beam_width: int, noise: float, rng: np.random.Generator, deadline: float) -> tuple[list[int], int] | None:
        """One beam pass from the start: ``(cells, edits)`` of the first goal level met, or None."""
        problem, start_cells, start_stats, bits = self.problem, self.cells, self.stats, self.problem.grid.cell_bits
        beam: list[tuple[list[int], list[int], int]] = [(start_cells, self.masks, 0)]  # (cells, masks, edits)
        for _ in range(self.max_changes):
            children: dict[tuple[int, ...], tuple[float, list[int], list[int], int]] = {}
            for cells, masks, edits in beam:
                for i, ti, j, tj in _moves(cells, problem.num_tiles, self.swaps):
                    new_edits = edits + (ti != start_cells[i]) - (cells[i] != start_cells[i])
                    if j >= 0:
                        new_edits += (tj != start_cells[j]) - (cells[j] != start_cells[j])
                    if new_edits > self.max_changes:
                        continue
                    new_masks = list(masks)
                    new_masks[cells[i]] ^= bits[i]
                    new_masks[ti] |= bits[i]
                    if j >= 0:
                        new_masks[cells[j]] ^= bits[j]
                        new_masks[tj] |= bits[j]
                    key = tuple(new_masks)
                    if key in children:
                        continue
                    stats = problem.stats(new_masks)
                    self.evaluations += 1
                    new_cells = list(cells)
                    new_cells[i] = ti
                    if j >= 0:
                        new_cells[j] = tj
                    if problem.goal(stats, start_stats):
                        return new_cells, new_edits
                    value = self.score(problem, stats, start_stats)
                    if value < self.best[0]:
                        self.best = (value, new_cells, new_edits)
                    children[key] = (value + noise * rng.random() + 1e-6 * rng.random(), new_cells, new_masks, new_edits)
            if not children or time.process_time() > deadline:
                return None
            kept = heapq.nsmallest(beam_width, children.values(), key=lambda c: c[0])
            beam = [(cells, masks, edits) for _, cells, masks, edits in kept]
        return None


def search_goal_level(
    problem: Problem,
    start: np.ndarray,
    max_changes: int,
    *,
    beam_width: int = 16,
    time_limit: float = 5.0,
    max_rounds: int = 1000,
    seed: int = 0,
    score: Callable[[Problem, Stats, Stats], float] = deficit,
) -> SearchResult:
    """Search the levels within ``max_changes`` edits of ``start`` for one that meets the goal.

    Args:
        problem: the problem (``make_problem(name, **options)``; its goal thresholds are used).
        start: the start level, an integer array ``(height, width)``.
        max_changes: the change budget (``LevelEnv.max_changes``).
        beam_width: levels kept per step.
        time_limit: process seconds after which the search stops (checked after each step).
        max_rounds: at most this many beam passes (the first greedy, the rest with noise).
        seed: seeds the tie-breaks and the restarts' noise.
        score: the deficit to minimise (``deficit``; 0 must mean a goal level).

    Returns:
        a :class:`SearchResult`; ``goal`` is true only when the checker confirmed the level.
    """
    clock = time.process_time()
    rng = np.random.default_rng(seed)
    start = np.asarray(start).astype(np.uint8)
    search = _Pass(problem, start, max_changes, score)
    found = (search.cells, 0) if problem.goal(search.stats, search.stats) else None
    rounds = 0
    while found is None and rounds < max_rounds and (rounds == 0 or time.process_time() - clock < time_limit):
        noise = 0.0 if rounds == 0 else min(0.5 * rounds, 8.0)  # restarts: growing noise on the scores
        rounds += 1
        found = search.run(beam_width, noise, rng, clock + time_limit)
    cells, edits, value = (*found, 0.0) if found is not None else (search.best[1], search.best[2], search.best[0])
    level = np.array(cells, dtype=np.uint8).reshape(start.shape)
    verdict = check_level(problem.name, level, start, **goal_targets(problem))
    return SearchResult(
        goal=found is not None and verdict.goal,
        level=level,
        edits=edits,
        deficit=value,
        evaluations=search.evaluations,
        rounds=rounds,
        seconds=time.process_time() - clock,
        check=verdict.stats,
        env_goal=found is not None,
    )
