"""Level statistics against hand-made maps and a plain BFS reference (PCGRL's definitions)."""

from __future__ import annotations

from collections import deque

import numpy as np
import pytest

from rl4gen.envs.levels.problems import SokobanProblem, ZeldaProblem, make_problem, range_reward
from rl4gen.envs.levels.render import parse_level
from rl4gen.envs.levels.stats import (
    Grid,
    count_regions,
    distance,
    regions_and_longest_path,
    solve_sokoban,
    update_regions,
)


def _bfs(passable: np.ndarray, start: tuple[int, int]) -> np.ndarray:
    """Plain BFS distances (-1 = unreached), the reference for the bitset code."""
    h, w = passable.shape
    dist = np.full((h, w), -1)
    dist[start] = 0
    queue = deque([start])
    while queue:
        y, x = queue.popleft()
        for dy, dx in ((0, -1), (0, 1), (-1, 0), (1, 0)):
            ny, nx = y + dy, x + dx
            if 0 <= ny < h and 0 <= nx < w and passable[ny, nx] and dist[ny, nx] < 0:
                dist[ny, nx] = dist[y, x] + 1
                queue.append((ny, nx))
    return dist


def _reference_regions_and_path(passable: np.ndarray) -> tuple[int, int]:
    """PCGRL's calc_num_regions / calc_longest_path, written plainly."""
    seen = np.zeros_like(passable, dtype=bool)
    regions = longest = 0
    for y, x in zip(*np.nonzero(passable), strict=True):
        if seen[y, x]:
            continue
        regions += 1
        d = _bfs(passable, (y, x))
        seen |= d >= 0
        far = np.unravel_index(np.argmax(d), d.shape)  # first farthest cell, row-major
        longest = max(longest, int(_bfs(passable, far).max()))
    return regions, longest


def _mask(grid: Grid, cells: np.ndarray) -> int:
    return grid.masks(cells.astype(np.uint8), 2)[1]


def test_grid_masks_place_cells_inside_a_zero_frame() -> None:
    grid = Grid(3, 2)
    level = np.array([[0, 1, 0], [1, 0, 0]], dtype=np.uint8)
    masks = grid.masks(level, 2)
    assert masks[1] == grid.bit(1, 0) | grid.bit(0, 1)
    assert masks[0] | masks[1] == grid.all_cells
    assert grid.xy(grid.bit(2, 1)) == (2, 1)


def test_regions_and_longest_path_on_hand_made_maps() -> None:
    level = parse_level(
        """
        .....#..
        ####.#..
        .....###
        ##.#####
        """,
        "binary",
    )
    grid = Grid(8, 4)
    empty = grid.masks(level, 2)[0]
    # the snake: (0,0)->(4,0)->(4,1)->(4,2)->(0,2) plus the spur (2,3); the 2x2 block on the right
    assert count_regions(empty, grid.pitch) == 2
    regions, longest = regions_and_longest_path(empty, grid.pitch)
    assert regions == 2
    assert longest == 4 + 1 + 1 + 4  # (0,0) to (0,2) along the snake
    assert regions_and_longest_path(0, grid.pitch) == (0, 0)
    one = grid.bit(3, 3)
    assert regions_and_longest_path(one, grid.pitch) == (1, 0)


def test_regions_and_longest_path_match_the_plain_bfs_on_random_maps() -> None:
    rng = np.random.default_rng(0)
    for size in ((14, 14), (11, 7), (5, 5), (1, 6)):
        grid = Grid(*size)
        for p in (0.3, 0.5, 0.7, 0.9):
            for _ in range(10):
                passable = rng.random((size[1], size[0])) < p
                mask = _mask(grid, passable)
                expected = _reference_regions_and_path(passable)
                assert regions_and_longest_path(mask, grid.pitch) == expected
                assert count_regions(mask, grid.pitch) == expected[0]


def test_distance_matches_the_plain_bfs_and_reports_unreachable() -> None:
    rng = np.random.default_rng(1)
    grid = Grid(11, 7)
    for _ in range(30):
        passable = rng.random((7, 11)) < 0.7
        (sy, sx), (ty, tx) = (divmod(int(i), 11) for i in rng.choice(77, 2, replace=False))
        passable[sy, sx] = passable[ty, tx] = True
        expected = int(_bfs(passable, (sy, sx))[ty, tx])
        got = distance(grid.bit(sx, sy), grid.bit(tx, ty), _mask(grid, passable), grid.pitch)
        assert got == expected
    wall = np.ones((7, 11), dtype=bool)
    wall[:, 5] = False
    assert distance(grid.bit(0, 0), grid.bit(10, 0), _mask(grid, wall), grid.pitch) == -1


def test_zelda_path_player_key_door_and_nearest_enemy() -> None:
    problem = ZeldaProblem(width=7, height=3)
    level = parse_level(
        """
        @.....k
        #####.#
        D.....b
        """,
        "zelda",
    )
    stats = problem.stats(problem.grid.masks(level, problem.num_tiles))
    assert stats["player"] == stats["key"] == stats["door"] == 1
    assert stats["enemies"] == 1 and stats["regions"] == 1
    assert stats["path-length"] == 6 + (1 + 1 + 1 + 5)  # player->key, key->(5,0)->(5,2)->door
    assert stats["nearest-enemy"] == 5 + 2 + 1  # along row 0, down the gap, right to the bat
    # the door is not walkable: a door splitting two rooms leaves two regions
    two = ZeldaProblem(width=5, height=3)
    level2 = parse_level(
        """
        @.D.k
        #####
        #####
        """,
        "zelda",
    )
    stats2 = two.stats(two.grid.masks(level2, two.num_tiles))
    assert stats2["regions"] == 2 and stats2["path-length"] == 0


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("@$x", (0, 1)),  # one push
        ("@.$.x", (0, 3)),  # walk one, push twice
        ("x$@", (0, 1)),  # push left
        ("@$#x", None),  # the wall blocks the push
    ],
)
def test_sokoban_solver_on_a_corridor(text: str, expected: tuple[int, int] | None) -> None:
    level = parse_level(text, "sokoban")
    grid = Grid(level.shape[1], 1)
    empty, _solid, player, crate, target = grid.masks(level, 5)
    dist, moves = solve_sokoban(player, crate, target, empty | player | crate | target, grid.pitch)
    if expected is None:
        assert moves == 0 and dist > 0
    else:
        assert (dist, moves) == expected


def test_sokoban_solver_finds_the_shortest_solution_around_a_corner() -> None:
    level = parse_level(
        """
        ..x
        .$.
        @..
        """,
        "sokoban",
    )
    grid = Grid(3, 3)
    empty, _, player, crate, target = grid.masks(level, 5)
    passable = empty | player | crate | target
    # step right to (1,2), push up, walk (0,1) -> (0,0), push right: 1 + 1 + 2 + 1
    dist, moves = solve_sokoban(player, crate, target, passable, grid.pitch)
    assert (dist, moves) == (0, 5)
    # a crate in a corner that is not a target can never move
    stuck = parse_level(
        """
        $.x
        ...
        @..
        """,
        "sokoban",
    )
    e, _, p, c, t = grid.masks(stuck, 5)
    dist, moves = solve_sokoban(p, c, t, e | p | c | t, grid.pitch)
    assert moves == 0 and dist == 2
    # a node limit too small to find it reports "unsolved" with the distance left
    dist, moves = solve_sokoban(player, crate, target, passable, grid.pitch, node_limit=2)
    assert moves == 0 and dist >= 1


def test_sokoban_stats_run_the_solver_only_on_a_well_formed_level() -> None:
    problem = SokobanProblem()
    level = parse_level(
        """
        #####
        #@$x#
        #...#
        #####
        #####
        """,
        "sokoban",
    )
    stats = problem.stats(problem.grid.masks(level, problem.num_tiles))
    assert stats["dist-win"] == 0 and stats["sol-length"] == 1
    level[2, 1] = problem.tile("player")  # two players: no solver
    stats = problem.stats(problem.grid.masks(level, problem.num_tiles))
    assert stats["player"] == 2 and stats["sol-length"] == 0 and stats["dist-win"] == 5 * 5 * 10


def test_range_reward_is_the_signed_improvement_toward_the_range() -> None:
    assert range_reward(3, 5, 1, 1) == 2  # fewer regions, still above the range
    assert range_reward(5, 3, 1, 1) == -2
    assert range_reward(1, 1, 1, 1) == 0
    assert range_reward(0, 1, 1, 1) == -1  # left the range from below
    assert range_reward(12, 10, float("inf"), float("inf")) == 2  # longer path
    assert range_reward(3, 5, -float("inf"), -float("inf")) == 2  # smaller is better
    # jumped over the range (0 -> 6): PCGRL's formula, high - new + old - low
    assert range_reward(6, 0, 2, 5) == 5 - 6 + 0 - 2


def test_problem_options_are_validated_with_one_sentence() -> None:
    with pytest.raises(ValueError, match="unknown level problem 'mario'"):
        make_problem("mario")
    with pytest.raises(ValueError, match="no option 'target_pth'"):
        make_problem("binary", target_pth=3)
    with pytest.raises(ValueError, match="no reward weight 'regoins'"):
        make_problem("zelda", weights={"regoins": 1})
    with pytest.raises(ValueError, match="'probs'"):
        make_problem("sokoban", probs={"empty": 1.0})
    assert make_problem("binary", weights={"regions": 2}).weights == {"regions": 2.0, "path-length": 1.0}


def test_incremental_region_count_matches_a_full_count_over_random_edits() -> None:
    rng = np.random.default_rng(5)
    for width, height in ((5, 5), (11, 7), (14, 14)):
        grid = Grid(width, height)
        passable = _mask(grid, rng.random((height, width)) < 0.6)
        regions = count_regions(passable, grid.pitch)
        decided = 0
        for _ in range(2000):
            cell = grid.cell_bits[int(rng.integers(width * height))]
            passable ^= cell
            fast = update_regions(regions, passable, cell, grid.pitch)
            regions = count_regions(passable, grid.pitch)
            if fast is not None:
                decided += 1
                assert fast == regions
        assert decided > 1000  # the neighbourhood settles most edits


def test_problem_region_counts_stay_exact_through_an_episode() -> None:
    from rl4gen.envs.levels import LevelEnv

    for problem in ("zelda", "sokoban"):
        env = LevelEnv(problem, "narrow")
        env.reset(seed=0)
        walk = {"zelda": ("empty", "player", "key", "bat", "scorpion", "spider"),
                "sokoban": ("empty", "player", "crate", "target")}[problem]
        walk_ids = [env.problem.tile(t) for t in walk]
        for action in np.random.default_rng(1).integers(0, env.action_space.n, 1500):
            _, _, terminated, truncated, info = env.step(int(action))
            grid = env.problem.grid
            expected = count_regions(_mask(grid, np.isin(env.level, walk_ids)), grid.pitch)
            assert info["regions"] == expected
            if terminated or truncated:
                env.reset()
