"""The search ceiling for the PCGRL problems (``rl4gen.envs.levels.ceiling``,
``benchmarks/levels_ceiling.py``): the search finds goal levels on easy starts, the levels it finds
pass the independent checker AND end an episode of the environment with its goal, and the tile-count
bound rules out what it must."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from rl4gen.envs.levels import LevelEnv, make_problem
from rl4gen.envs.levels.ceiling import count_edits, count_lower_bound, deficit, search_goal_level
from rl4gen.envs.levels.check import check_level
from rl4gen.envs.levels.render import parse_level

REPO = Path(__file__).resolve().parents[1]


def _replay(env: LevelEnv, start: np.ndarray, level: np.ndarray) -> dict:
    """Write the cells where ``level`` differs from ``start`` through the wide env's actions
    (row-major) until the episode ends; the info of the last step."""
    env.reset(seed=0, options={"level": start})
    ys, xs = np.nonzero(level != start)
    info: dict = {}
    for y, x in zip(ys.tolist(), xs.tolist(), strict=True):
        _, _, terminated, truncated, info = env.step(np.array([x, y, level[y, x]]))
        assert not truncated
        if terminated:
            break
    return info


@pytest.mark.parametrize(("problem", "seed"), [("binary", 10003), ("zelda", 10005), ("sokoban", 10016)])
def test_search_finds_a_goal_level_that_the_checker_and_the_env_accept(problem: str, seed: int) -> None:
    env = LevelEnv(problem, "wide")
    env.reset(seed=seed)  # an evaluation start level (rl4gen levels eval's seeds)
    start = env.level
    assert not env.problem.goal(env.stats, env.start_stats)
    result = search_goal_level(env.problem, start, env.max_changes, time_limit=10, seed=0)
    assert result.goal and result.deficit == 0
    assert 1 <= result.edits <= env.max_changes
    assert int((result.level != start).sum()) == result.edits
    assert check_level(problem, result.level, start).goal  # the independent checker, binary's gain vs start
    assert deficit(env.problem, env.start_stats, env.start_stats) > 0
    info = _replay(env, start, result.level)
    assert info["goal"] and info["changes"] <= result.edits


def test_sokoban_one_edit_from_an_18_move_puzzle() -> None:
    start = parse_level("#.#..\n...$.\n..#..\n...@.\n#.#.#", "sokoban")  # a crate, no target
    problem = make_problem("sokoban")
    result = search_goal_level(problem, start, 5, time_limit=10)
    assert result.goal and result.edits == 1
    assert result.check["sol-length"] >= 18 and result.check["crate"] == result.check["target"] == 1


def test_count_bound_rules_out_a_start_and_the_search_finds_nothing() -> None:
    problem = make_problem("sokoban")
    # ten crates, no target, no player: at least 6 edits (a player, crates down to c, targets up to c)
    start = parse_level("$$$$$\n$$$$$\n.....\n.....\n.....", "sokoban")
    assert count_lower_bound(problem, start) == 6
    result = search_goal_level(problem, start, 5, time_limit=0.5, max_rounds=2)
    assert not result.goal and result.deficit > 0 and result.edits <= 5
    assert not check_level("sokoban", result.level).goal


def test_count_edits_by_hand() -> None:
    zelda = make_problem("zelda")
    # three players, no key, door or enemy: player -> key, player -> door, empty -> enemy
    assert count_edits(zelda, {"player": 3, "key": 0, "door": 0, "enemies": 0}) == 3
    assert count_edits(zelda, {"player": 1, "key": 1, "door": 1, "enemies": 7}) == 0
    sokoban = make_problem("sokoban")
    assert count_edits(sokoban, {"player": 1, "crate": 0, "target": 0}) == 2  # a crate and its target
    assert count_edits(sokoban, {"player": 1, "crate": 3, "target": 1}) == 1  # a crate becomes a target
    assert count_edits(make_problem("binary"), {"regions": 4, "path-length": 3}) == 0


def test_benchmark_script_writes_verified_results(tmp_path: Path) -> None:
    out = tmp_path / "ceiling.json"
    proc = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "levels_ceiling.py"), "--problem", "sokoban", "--only", "17,16",
         "--time-limit", "1", "--json", str(out), "--levels-dir", str(tmp_path / "levels")],
        capture_output=True, text=True, timeout=120, check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    entry = json.loads(out.read_text())["sokoban@0.2"]
    assert entry["max_changes"] == 5 and entry["episodes"] == 2
    assert [r["episode"] for r in entry["per_level"]] == [16, 17] and entry["checker_disagreements"] == 0
    assert entry["found_rate"] == 1.0 and entry["upper_bound"] == 1.0  # starts 10016, 10017: both reachable
    records = [json.loads(line) for line in (tmp_path / "levels" / "samples" / "levels.jsonl").read_text().splitlines()]
    assert [(r["source"], r["episode"]) for r in records] == [("start", 16), ("ceiling", 16), ("start", 17), ("ceiling", 17)]
    for start, found in zip(records[::2], records[1::2], strict=True):
        start_level, level = (parse_level("\n".join(r["level"]), "sokoban") for r in (start, found))
        assert check_level("sokoban", level).goal and not check_level("sokoban", start_level).goal
        assert int((level != start_level).sum()) == found["edits"] <= 5
    assert proc.stdout.splitlines()[1].startswith("sokoban")


@pytest.mark.parametrize(
    ("args", "message"),
    [(["--problem", "mario"], "unknown problem 'mario'"), (["--only", "2,x"], "--only must be episode numbers")],
)
def test_benchmark_script_rejects_bad_arguments(args: list[str], message: str) -> None:
    proc = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "levels_ceiling.py"), *args, "--json", "/dev/null"],
        capture_output=True, text=True, timeout=60, check=False,
    )
    assert proc.returncode == 2 and message in proc.stderr
