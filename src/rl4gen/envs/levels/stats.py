"""Level statistics on bitsets: connected regions, shortest and longest paths, a bounded Sokoban
solver.

A level of ``height × width`` tiles is held as one Python integer per tile type (a *mask*). Cell
``(x, y)`` is bit ``(y + 1) * pitch + x + 1`` with ``pitch = width + 2``: a one-cell frame of zero
bits surrounds the map, so shifting a mask by ``±1`` (left/right) or ``±pitch`` (up/down) never
wraps a cell onto the other side of the map. One breadth-first layer over every frontier cell at
once is then four shifts, an OR and an AND on a ~200-bit integer, which is why a whole flood fill
or BFS on these small maps costs microseconds in pure Python:

    next = ((f << 1) | (f >> 1) | (f << pitch) | (f >> pitch)) & unvisited

The path definitions follow PCGRL (Khalifa et al., 2020): distances are 4-connected BFS steps;
the "longest path" of a map is, per region, the BFS eccentricity of the cell farthest from the
region's first cell (a double BFS, exact on trees), maximised over regions.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence

import numpy as np

__all__ = [
    "Grid",
    "bfs_layers",
    "count_regions",
    "distance",
    "path_starts",
    "regions_and_longest_path",
    "sokoban_dead_cells",
    "sokoban_pushable_crates",
    "solve_sokoban",
    "update_regions",
]


class Grid:
    """The bit layout of a ``height × width`` map (see the module docstring)."""

    def __init__(self, width: int, height: int) -> None:
        if width < 1 or height < 1:
            raise ValueError(f"a level needs at least one cell, got width={width}, height={height}.")
        self.width = width
        self.height = height
        self.pitch = width + 2
        # bit of cell i = y * width + x (row-major over the map)
        self.cell_bits: list[int] = [
            1 << ((y + 1) * self.pitch + x + 1) for y in range(height) for x in range(width)
        ]
        self.all_cells = sum(self.cell_bits)
        self._padded = np.zeros((1, height + 2, self.pitch), dtype=bool)

    def masks(self, level: np.ndarray, num_tiles: int) -> list[int]:
        """One mask per tile type for an integer ``level`` of shape ``(height, width)``."""
        level = np.asarray(level)
        if level.shape != (self.height, self.width):
            raise ValueError(f"level has shape {level.shape}, expected {(self.height, self.width)}.")
        if level.size <= 100:  # small maps: one pass in Python beats numpy's call overhead
            out = [0] * num_tiles
            for bit, tile in zip(self.cell_bits, level.ravel().tolist(), strict=True):
                out[tile] |= bit
            return out
        if self._padded.shape[0] != num_tiles:
            self._padded = np.zeros((num_tiles, self.height + 2, self.pitch), dtype=bool)
            self._tile_ids = np.arange(num_tiles).reshape(num_tiles, 1, 1)
        padded = self._padded
        np.equal(level, self._tile_ids, out=padded[:, 1:-1, 1:-1])  # (T, H, W) one-hot
        packed = np.packbits(padded.reshape(num_tiles, -1), axis=1, bitorder="little")
        return [int.from_bytes(row.tobytes(), "little") for row in packed]

    def planes(self, masks: Sequence[int]) -> np.ndarray:
        """Masks back to maps: ``(len(masks), height, width)`` booleans."""
        nbytes = ((self.height + 2) * self.pitch + 7) // 8
        raw = np.frombuffer(b"".join(m.to_bytes(nbytes, "little") for m in masks), dtype=np.uint8)
        bits = np.unpackbits(raw.reshape(len(masks), nbytes), axis=1, bitorder="little")
        framed = bits[:, : (self.height + 2) * self.pitch].reshape(len(masks), self.height + 2, self.pitch)
        return framed[:, 1:-1, 1:-1].astype(bool)

    def bit(self, x: int, y: int) -> int:
        return self.cell_bits[y * self.width + x]

    def xy(self, bit: int) -> tuple[int, int]:
        """Cell of a single-bit mask."""
        index = bit.bit_length() - 1
        return index % self.pitch - 1, index // self.pitch - 1


def _flood(seed: int, passable: int, pitch: int) -> tuple[int, int, int]:
    """BFS from ``seed`` inside ``passable``: (reached cells, last non-empty layer, depth)."""
    left = passable & ~seed
    frontier = seed
    depth = 0
    while True:
        nxt = ((frontier << 1) | (frontier >> 1) | (frontier << pitch) | (frontier >> pitch)) & left
        if not nxt:
            return passable & ~left, frontier, depth
        left ^= nxt
        frontier = nxt
        depth += 1


def count_regions(passable: int, pitch: int) -> int:
    """Number of 4-connected regions of the cells in ``passable``."""
    regions = 0
    while passable:  # flood from the first cell left, removing what it reaches
        frontier = passable & -passable
        passable ^= frontier
        while frontier:
            frontier = ((frontier << 1) | (frontier >> 1) | (frontier << pitch) | (frontier >> pitch)) & passable
            passable ^= frontier
        regions += 1
    return regions


def _ring_table() -> list[int]:
    """For each 3×3 neighbourhood (9-bit code, row-major, centre bit ignored): how many groups
    the centre's walkable 4-neighbours form when connected only through the 8 ring cells."""
    ring = [(0, 0), (1, 0), (2, 0), (2, 1), (2, 2), (1, 2), (0, 2), (0, 1)]  # (x, y) around the centre
    table = []
    for code in range(512):
        on = {(x, y) for x, y in ring if code >> (3 * y + x) & 1}
        groups, seen = 0, set()
        for start in ((1, 0), (0, 1), (2, 1), (1, 2)):  # N, W, E, S
            if start not in on or start in seen:
                continue
            groups += 1
            stack = [start]
            seen.add(start)
            while stack:
                x, y = stack.pop()
                for nx, ny in ((x - 1, y), (x + 1, y), (x, y - 1), (x, y + 1)):
                    if (nx, ny) in on and (nx, ny) not in seen:
                        seen.add((nx, ny))
                        stack.append((nx, ny))
        table.append(groups)
    return table


_RING_GROUPS = _ring_table()


def update_regions(regions: int, passable: int, cell: int, pitch: int) -> int | None:
    """The region count after one ``cell`` (a single bit) was added to or removed from
    ``passable`` (given after the change), from the cell's 3×3 neighbourhood alone; ``None`` when
    the neighbourhood cannot tell (two or more separate neighbour groups: recount)."""
    index = cell.bit_length() - 1
    code = (
        (passable >> (index - pitch - 1)) & 7
        | ((passable >> (index - 1)) & 5) << 3
        | ((passable >> (index + pitch - 1)) & 7) << 6
    )
    groups = _RING_GROUPS[code]
    if groups >= 2:
        return None
    if passable & cell:  # added: a new region, or joins the one its neighbours share
        return regions + 1 - groups
    return regions - 1 + groups  # removed: a lone cell's region disappears, else nothing splits


def regions_and_longest_path(passable: int, pitch: int) -> tuple[int, int]:
    """(number of regions, PCGRL's longest shortest path over all regions).

    Per region: BFS from its first cell (row-major), take the first farthest cell, BFS again;
    the second BFS's depth is the region's path length. The second searches of all regions run
    as one multi-source BFS (regions are disjoint, so its depth is the maximum over regions).
    """
    regions, far_cells = path_starts(passable, pitch)
    if not far_cells:
        return 0, 0
    _, _, longest = _flood(far_cells, passable, pitch)
    return regions, longest


def path_starts(passable: int, pitch: int) -> tuple[int, int]:
    """(number of regions, one mask of each region's path start): the first cell farthest from
    the region's first cell, where the second BFS of ``regions_and_longest_path`` starts."""
    regions = 0
    far_cells = 0
    left = passable
    while left:
        region, last_layer, _ = _flood(left & -left, left, pitch)
        far_cells |= last_layer & -last_layer
        left &= ~region
        regions += 1
    return regions, far_cells


def bfs_layers(seed: int, passable: int, pitch: int, max_layers: int = 1024) -> list[int]:
    """The BFS from ``seed`` inside ``passable`` as one mask per layer: ``[seed, cells at 1 step,
    cells at 2 steps, ...]`` (at most ``max_layers``)."""
    layers = [seed]
    left = passable & ~seed
    frontier = seed
    while frontier and len(layers) < max_layers:
        frontier = ((frontier << 1) | (frontier >> 1) | (frontier << pitch) | (frontier >> pitch)) & left
        if frontier:
            layers.append(frontier)
            left ^= frontier
    return layers


def distance(source: int, target: int, passable: int, pitch: int) -> int:
    """BFS steps from the ``source`` cell to the nearest ``target`` cell through ``passable``
    (source and target cells count as passable), or -1 when unreachable."""
    if source & target:
        return 0
    left = (passable | target) & ~source
    frontier = source
    depth = 0
    while frontier:
        frontier = ((frontier << 1) | (frontier >> 1) | (frontier << pitch) | (frontier >> pitch)) & left
        depth += 1
        if frontier & target:
            return depth
        left ^= frontier
    return -1


# --------------------------------------------------------------------------------------------
# Sokoban
# --------------------------------------------------------------------------------------------

def _shift(mask: int, steps: int) -> int:
    return mask << steps if steps > 0 else mask >> -steps


def sokoban_dead_cells(targets: int, passable: int, pitch: int) -> int:
    """The ``passable`` cells from which no sequence of pushes takes a crate to a target, even
    with no other crate on the map and the player wherever it needs to be: a crate there makes
    the puzzle unsolvable. (Not the converse: a cell outside this mask may still be lost.)

    The live cells are the closure of the targets under reverse pushes ("pulls"): a cell is live
    when, for some direction, the next cell that way is live and is passable, and the cell on
    the other side (where the player pushes from) is passable. Bit-mask shifts, a few µs on 5×5.
    """
    live = targets & passable
    steps = (1, -1, pitch, -pitch)
    while True:
        grown = live
        for d in steps:
            grown |= _shift(live, d) & passable & _shift(passable, -d)
        if grown == live:
            return passable & ~live
        live = grown


def sokoban_pushable_crates(player: int, crates: int, free: int, pitch: int) -> int:
    """The ``crates`` the player can push now: one of the crate's sides is reachable from
    ``player`` through ``free`` cells (crates and walls block the walk) and the cell beyond it,
    on the opposite side, is free."""
    reach = _flood(player, free, pitch)[0] if player else 0
    pushable = 0
    for d in (1, -1, pitch, -pitch):
        pushable |= crates & _shift(reach, d) & _shift(free, -d)
    return pushable


_SOLVER_CACHE: dict[tuple[int, int, int, int, int, int], tuple[int, int]] = {}
#: entries kept (about 250 bytes each); the oldest go first. Training replays the same levels
#: often (cloning plays each demonstration in several edit orders, every round again), so a
#: large cache saves most solver calls there.
_SOLVER_CACHE_SIZE = 1 << 17


def _crate_heuristic(crates: int, targets: Sequence[tuple[int, int]], pitch: int) -> int:
    """Sum over crates of the Manhattan distance to the nearest target."""
    total = 0
    while crates:
        low = crates & -crates
        crates ^= low
        index = low.bit_length() - 1
        cx, cy = index % pitch, index // pitch
        total += min(abs(cx - tx) + abs(cy - ty) for tx, ty in targets)
    return total


def solve_sokoban(
    player: int, crates: int, targets: int, passable: int, pitch: int, node_limit: int = 5000
) -> tuple[int, int]:
    """Breadth-first Sokoban solver bounded by ``node_limit`` expanded states.

    Args:
        player: single-bit mask of the player's cell.
        crates: mask of crate cells; targets: mask of target cells (same count as crates).
        passable: mask of every non-wall cell (including player, crates and targets).
        pitch: the grid's row pitch (``Grid.pitch``).
        node_limit: at most this many states are expanded (PCGRL's "solver power").

    Returns:
        ``(0, moves)`` with the fewest player moves that put every crate on a target, or
        ``(h, 0)`` when no solution was found within the limit, where ``h`` is the smallest
        crate-to-target Manhattan sum among the states explored (how close it came; the start's
        when a crate starts in a non-target corner, which ends the search at once).
    """
    key = (player, crates, targets, passable, pitch, node_limit)
    cached = _SOLVER_CACHE.get(key)
    if cached is not None:
        return cached
    result = _solve(player, crates, targets, passable, pitch, node_limit)
    if len(_SOLVER_CACHE) >= _SOLVER_CACHE_SIZE:
        del _SOLVER_CACHE[next(iter(_SOLVER_CACHE))]
    _SOLVER_CACHE[key] = result
    return result


def _solve(player: int, crates: int, targets: int, passable: int, pitch: int, node_limit: int) -> tuple[int, int]:
    if crates == targets:
        return 0, 0
    target_xy = []
    t = targets
    while t:
        low = t & -t
        t ^= low
        index = low.bit_length() - 1
        target_xy.append((index % pitch, index // pitch))
    if not target_xy:  # crates but no targets: never solvable
        return _crate_heuristic(crates, [(0, 0)], pitch), 0
    # dead cells: non-target corners; a crate pushed there can never move again
    dead = 0
    free = passable
    while free:
        low = free & -free
        free ^= low
        if low & targets:
            continue
        blocked_h = not (passable & (low << 1)) or not (passable & (low >> 1))
        blocked_v = not (passable & (low << pitch)) or not (passable & (low >> pitch))
        if blocked_h and blocked_v:
            dead |= low
    best = _crate_heuristic(crates, target_xy, pitch)
    if crates & dead:  # a crate that starts in a corner can never reach a target
        return max(best, 1), 0
    # each cell's distance to its nearest target, looked up per crate in the search's inner loop
    near = [0] * passable.bit_length()
    cells = passable
    while cells:
        low = cells & -cells
        cells ^= low
        index = low.bit_length() - 1
        near[index] = min(abs(index % pitch - tx) + abs(index // pitch - ty) for tx, ty in target_xy)
    steps = (1, -1, pitch, -pitch)
    shift = passable.bit_length()
    start_index = player.bit_length() - 1
    seen = {(crates << shift) | start_index}
    queue: deque[tuple[int, int, int]] = deque([(start_index, crates, 0)])
    expanded = 0
    while queue and expanded < node_limit:
        p, boxes, moves = queue.popleft()
        expanded += 1
        for step in steps:
            q = p + step
            qbit = 1 << q
            if not passable & qbit:
                continue
            new_boxes = boxes
            if boxes & qbit:
                r = q + step
                rbit = 1 << r
                if not passable & rbit or boxes & rbit or dead & rbit:
                    continue
                new_boxes = (boxes ^ qbit) | rbit
                if new_boxes == targets:
                    return 0, moves + 1
            state = (new_boxes << shift) | q
            if state in seen:
                continue
            seen.add(state)
            if new_boxes != boxes:  # Σ over crates of the nearest target's Manhattan distance
                h = 0
                left = new_boxes
                while left:
                    low = left & -left
                    left ^= low
                    h += near[low.bit_length() - 1]
                best = min(best, h)
            queue.append((q, new_boxes, moves + 1))
    return max(best, 1), 0
