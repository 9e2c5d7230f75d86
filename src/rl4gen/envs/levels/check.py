"""An independent check of finished levels: plain breadth-first searches on a list of rows.

This module shares no code with the environment's reward path (``stats.py`` works on bitsets,
updates region counts incrementally and caches solver results); it recomputes every statistic
that decides a problem's goal from scratch, with ``collections.deque`` BFS over ``(x, y)`` cells,
so a bug in the fast path cannot hide in an evaluation. The definitions are the ones in
``docs/tasks/levels.md`` (4-connected, the outside counts as wall):

- binary: one region of empty tiles and a PCGRL path length (double BFS from each region's first
  cell, row-major) at least ``target_path`` longer than the start level's (``start_path``; 0 for
  a level written from scratch);
- zelda: one player, key and door, the walkable tiles (all but solid and door) in one region, the
  nearest enemy at least ``target_enemy_dist`` steps from the player and player → key → door at
  least ``target_path`` steps;
- sokoban: one player, as many crates as targets, the non-solid tiles in one region, and the
  fewest player moves that put every crate on a target (an exhaustive BFS over player and crate
  positions, bounded by ``max_states``) at least ``target_solution``.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = ["DEFAULT_TARGETS", "LevelCheck", "check_level", "double_bfs_path", "regions", "shortest_path", "sokoban_moves"]

Cell = tuple[int, int]
NEIGHBOURS = ((1, 0), (-1, 0), (0, 1), (0, -1))
#: goal thresholds per problem (PCGRL's; ``check_level`` takes overrides)
DEFAULT_TARGETS: dict[str, dict[str, int]] = {
    "binary": {"target_path": 20},
    "zelda": {"target_path": 16, "target_enemy_dist": 4},
    "sokoban": {"target_solution": 18},
}
TILES: dict[str, tuple[str, ...]] = {
    "binary": ("empty", "solid"),
    "zelda": ("empty", "solid", "player", "key", "door", "bat", "scorpion", "spider"),
    "sokoban": ("empty", "solid", "player", "crate", "target"),
}


@dataclass
class LevelCheck:
    """Whether a level meets its problem's goal, and the statistics that decided it."""

    goal: bool
    stats: dict[str, float] = field(default_factory=dict)


def _cells(level: np.ndarray, tiles: Iterable[int]) -> set[Cell]:
    wanted = set(tiles)
    return {(x, y) for y, row in enumerate(level.tolist()) for x, t in enumerate(row) if t in wanted}


def _bfs(start: Cell, passable: set[Cell]) -> dict[Cell, int]:
    """Steps from ``start`` to every cell of ``passable`` it can reach."""
    dist = {start: 0}
    queue = deque([start])
    while queue:
        x, y = queue.popleft()
        for dx, dy in NEIGHBOURS:
            nxt = (x + dx, y + dy)
            if nxt in passable and nxt not in dist:
                dist[nxt] = dist[(x, y)] + 1
                queue.append(nxt)
    return dist


def regions(passable: set[Cell]) -> list[set[Cell]]:
    """Connected components of ``passable``, each found by flood fill from its first cell
    in row-major order."""
    left = set(passable)
    out = []
    while left:
        first = min(left, key=lambda c: (c[1], c[0]))
        region = set(_bfs(first, left))
        out.append(region)
        left -= region
    return out


def double_bfs_path(passable: set[Cell]) -> int:
    """PCGRL's path length: per region, BFS from its first cell, then from the first (row-major)
    farthest cell; the second BFS's depth, maximised over regions (0 with no passable cell)."""
    best = 0
    for region in regions(passable):
        first = min(region, key=lambda c: (c[1], c[0]))
        dist = _bfs(first, region)
        far = max(dist.values())
        far_cell = min((c for c, d in dist.items() if d == far), key=lambda c: (c[1], c[0]))
        best = max(best, max(_bfs(far_cell, region).values()))
    return best


def shortest_path(source: Cell, targets: set[Cell], passable: set[Cell]) -> int:
    """BFS steps from ``source`` to the nearest of ``targets`` (which count as passable), -1 if none."""
    dist = _bfs(source, passable | targets | {source})
    found = [dist[t] for t in targets if t in dist]
    return min(found) if found else -1


def sokoban_moves(player: Cell, crates: set[Cell], targets: set[Cell], floor: set[Cell], max_states: int = 200_000) -> int:
    """Fewest player moves (walks and pushes) that put every crate on a target, by BFS over
    (player, crates) states; -1 when unsolvable (or not solved within ``max_states`` states)."""
    goal = frozenset(targets)
    start = (player, frozenset(crates))
    if start[1] == goal:
        return 0
    seen = {start}
    queue = deque([(start, 0)])
    while queue and len(seen) <= max_states:
        (pos, boxes), moves = queue.popleft()
        for dx, dy in NEIGHBOURS:
            nxt = (pos[0] + dx, pos[1] + dy)
            if nxt not in floor:
                continue
            new_boxes = boxes
            if nxt in boxes:
                beyond = (nxt[0] + dx, nxt[1] + dy)
                if beyond not in floor or beyond in boxes:
                    continue
                new_boxes = (boxes - {nxt}) | {beyond}
                if new_boxes == goal:
                    return moves + 1
            state = (nxt, new_boxes)
            if state not in seen:
                seen.add(state)
                queue.append((state, moves + 1))
    return -1


def check_level(problem: str, level: Any, start: Any | None = None, **targets: int) -> LevelCheck:
    """Check ``level`` (an integer array ``(H, W)`` of tile indices) against ``problem``'s goal.

    ``start`` is the episode's first level (binary's goal is relative to its path length; ignored
    by the other problems). ``targets`` override the goal thresholds (``target_path``,
    ``target_enemy_dist``, ``target_solution``).
    """
    if problem not in DEFAULT_TARGETS:
        raise ValueError(f"unknown level problem {problem!r}: use one of {', '.join(DEFAULT_TARGETS)}.")
    unknown = set(targets) - set(DEFAULT_TARGETS[problem])
    if unknown:
        raise ValueError(f"{problem} goal has no threshold {min(unknown)!r}: use {', '.join(DEFAULT_TARGETS[problem])}.")
    t = {**DEFAULT_TARGETS[problem], **targets}
    level = np.asarray(level)
    tile = {name: i for i, name in enumerate(TILES[problem])}
    if problem == "binary":
        empty = _cells(level, [tile["empty"]])
        n_regions = len(regions(empty))
        path = double_bfs_path(empty)
        start_path = double_bfs_path(_cells(np.asarray(start), [tile["empty"]])) if start is not None else 0
        goal = n_regions == 1 and path - start_path >= t["target_path"]
        return LevelCheck(goal, {"regions": n_regions, "path-length": path, "path-gain": path - start_path})
    if problem == "zelda":
        enemy_tiles = [tile["bat"], tile["scorpion"], tile["spider"]]
        walkable = _cells(level, [tile["empty"], tile["player"], tile["key"], *enemy_tiles])
        players, keys, doors = (_cells(level, [tile[n]]) for n in ("player", "key", "door"))
        enemies = _cells(level, enemy_tiles)
        stats: dict[str, float] = {
            "player": len(players), "key": len(keys), "door": len(doors), "enemies": len(enemies),
            "regions": len(regions(walkable)), "nearest-enemy": 0, "path-length": 0,
        }
        if len(players) == 1 and stats["regions"] == 1:
            (player,) = players
            if enemies:
                stats["nearest-enemy"] = shortest_path(player, enemies, walkable)
            if len(keys) == 1 and len(doors) == 1:
                to_key = shortest_path(player, keys, walkable)
                to_door = shortest_path(next(iter(keys)), doors, walkable)
                if to_key >= 0 and to_door >= 0:
                    stats["path-length"] = to_key + to_door
        goal = stats["nearest-enemy"] >= t["target_enemy_dist"] and stats["path-length"] >= t["target_path"]
        return LevelCheck(goal, stats)
    floor = _cells(level, [i for i, name in enumerate(TILES[problem]) if name != "solid"])
    players, crates, goals = (_cells(level, [tile[n]]) for n in ("player", "crate", "target"))
    stats = {"player": len(players), "crate": len(crates), "target": len(goals), "regions": len(regions(floor)), "sol-length": -1}
    if len(players) == 1 and len(crates) == len(goals) and stats["regions"] == 1:
        stats["sol-length"] = sokoban_moves(next(iter(players)), crates, goals, floor)
    return LevelCheck(stats["sol-length"] >= t["target_solution"], stats)
