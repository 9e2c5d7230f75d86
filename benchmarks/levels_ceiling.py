"""A search ceiling for the PCGRL problems: how many evaluation start levels CAN reach the goal.

    python benchmarks/levels_ceiling.py --problem sokoban --episodes 100 --seed 10000
    python benchmarks/levels_ceiling.py --problem all --change-percentage 0.2,0.4
    python benchmarks/levels_ceiling.py --problem zelda --episodes 20 --levels-dir runs/zelda-ceiling

For start level ``i`` (``LevelEnv.reset(seed=seed + i)`` of the wide environment: the start levels
``rl4gen levels eval`` gives every policy) a beam search (:mod:`rl4gen.envs.levels.ceiling`) looks
for a goal level within the change budget (``max_changes`` = ``change_percentage`` of the tiles),
stopping at the first one; every found level is verified by the independent checker. Printed per
problem and budget:

- ``found``: the fraction of starts where the search found a goal level, a LOWER bound on the goal
  rate an agent can reach on these starts (± its binomial standard error);
- ``upper``: 1 − the fraction of starts whose tile counts alone need more edits than the budget
  (:func:`~rl4gen.envs.levels.ceiling.count_lower_bound`), an UPPER bound;
- ``edits``: mean edits (cells changed from the start) of the found goal levels;
- ``s/level``: mean and largest process time per start level (the search of a start with no goal
  found runs until ``--time-limit``).

``--only 2,8,13`` searches only those episodes (e.g. the unsolved ones of an earlier run, with a
wider beam and a longer time limit); the rates are then over those episodes.

Results go to ``--json`` (default ``benchmarks/results/levels_ceiling.json``; entries of other
problems or budgets already in the file are kept) and, with ``--levels-dir DIR``, each found goal
level after its start level to ``DIR/samples/levels.jsonl`` (``rl4gen levels show DIR --columns 8``
draws them as start/goal pairs).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("OMP_NUM_THREADS", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

import numpy as np

from rl4gen.envs.levels import PROBLEMS, LevelEnv
from rl4gen.envs.levels.ceiling import count_lower_bound, search_goal_level
from rl4gen.envs.levels.samples import level_record, write_levels

DEFAULT_JSON = Path(__file__).resolve().parent / "results" / "levels_ceiling.json"


def ceiling(
    problem: str, episodes: list[int], seed: int, change_percentage: float, beam_width: int, time_limit: float
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Search the start levels ``episodes`` of one problem and budget: (summary, one record per start)."""
    env = LevelEnv(problem, "wide", change_percentage=change_percentage)
    records = []
    wall = time.perf_counter()
    for i in episodes:
        env.reset(seed=seed + i)
        start = env.level
        lower = count_lower_bound(env.problem, start)
        result = search_goal_level(env.problem, start, env.max_changes, beam_width=beam_width, time_limit=time_limit, seed=seed + i)
        records.append({
            "episode": i, "goal": result.goal, "env_goal": result.env_goal, "edits": result.edits, "deficit": result.deficit,
            "count_lower_bound": lower, "evaluations": result.evaluations, "rounds": result.rounds,
            "seconds": result.seconds, "check": result.check, "level": result.level, "start": start,
        })
    found = [r for r in records if r["goal"]]
    rate = len(found) / len(records)
    impossible = sum(r["count_lower_bound"] > env.max_changes for r in records)
    summary = {
        "problem": problem, "change_percentage": change_percentage, "max_changes": env.max_changes,
        "episodes": len(records), "seed": seed, "beam_width": beam_width, "time_limit": time_limit,
        "found_rate": rate, "found_rate_se": math.sqrt(rate * (1 - rate) / len(records)),
        "upper_bound": 1 - impossible / len(records),
        "checker_disagreements": sum(r["env_goal"] and not r["goal"] for r in records),
        "mean_edits": float(np.mean([r["edits"] for r in found])) if found else None,
        "max_edits": max((r["edits"] for r in found), default=None),
        "mean_seconds": float(np.mean([r["seconds"] for r in records])),
        "max_seconds": max(r["seconds"] for r in records),
        "wall_seconds": time.perf_counter() - wall,
        "mean_evaluations": float(np.mean([r["evaluations"] for r in records])),
    }
    return summary, records


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--problem", default="all", help="binary, zelda, sokoban, a comma-separated list, or all")
    parser.add_argument("--episodes", type=int, default=100, help="start levels (episode i: reset(seed=seed + i))")
    parser.add_argument("--seed", type=int, default=10_000, help="seed of the first start level (rl4gen levels eval's default)")
    parser.add_argument("--change-percentage", default="0.2", help="change budget(s) as fractions of the tiles, comma-separated")
    parser.add_argument("--beam-width", type=int, default=16, help="levels kept per round of the beam search")
    parser.add_argument("--time-limit", type=float, default=5.0, help="process seconds of search per start level")
    parser.add_argument("--only", help="search only these episodes, comma-separated (e.g. the unsolved ones of an earlier run)")
    parser.add_argument("--json", type=Path, default=DEFAULT_JSON, help="results file (entries for other settings are kept)")
    parser.add_argument("--levels-dir", type=Path, help="also write each found goal level after its start level to DIR/samples/levels.jsonl")
    args = parser.parse_args(argv)

    problems = list(PROBLEMS) if args.problem == "all" else args.problem.split(",")
    for p in problems:
        if p not in PROBLEMS:
            parser.error(f"unknown problem {p!r}: use {', '.join(PROBLEMS)} or all.")
    try:
        budgets = [float(c) for c in args.change_percentage.split(",")]
    except ValueError:
        parser.error(f"--change-percentage must be fractions like 0.2,0.4, got {args.change_percentage!r}.")
    if any(not 0 < c <= 1 for c in budgets):
        parser.error(f"--change-percentage must be fractions in (0, 1], got {args.change_percentage!r}.")
    if args.episodes < 1 or args.beam_width < 1 or args.time_limit <= 0:
        parser.error("--episodes and --beam-width must be at least 1 and --time-limit positive.")
    episodes = list(range(args.episodes))
    if args.only:
        try:
            episodes = sorted({int(e) for e in args.only.split(",")})
        except ValueError:
            parser.error(f"--only must be episode numbers like 2,8,13, got {args.only!r}.")
        if episodes[0] < 0:
            parser.error(f"--only must be episode numbers of at least 0, got {args.only!r}.")

    report = json.loads(args.json.read_text()) if args.json.is_file() else {}
    header = f"{'problem':8} {'budget':>11} {'found':>12} {'upper':>6} {'edits':>6} {'s/level':>8} {'max s':>6}"
    print(header)
    for problem in problems:
        for budget in budgets:
            summary, records = ceiling(problem, episodes, args.seed, budget, args.beam_width, args.time_limit)
            edits = "-" if summary["mean_edits"] is None else f"{summary['mean_edits']:.1f}"
            print(
                f"{problem:8} {budget:>4} ({summary['max_changes']:>3}) "
                f"{summary['found_rate']:>5.2f} ± {summary['found_rate_se']:.2f} {summary['upper_bound']:>6.2f} "
                f"{edits:>6} {summary['mean_seconds']:>8.2f} {summary['max_seconds']:>6.1f}",
                flush=True,
            )
            summary["per_level"] = [
                {k: v for k, v in r.items() if k not in ("level", "start")} for r in records
            ]
            report[f"{problem}@{budget}"] = summary
            if args.levels_dir is not None:
                env_name = f"rl4gen/{problem}-wide-v0"
                write_levels(args.levels_dir, [
                    record
                    for r in records if r["goal"]
                    for record in (
                        level_record(r["start"], problem, env=env_name, source="start", goal=False, episode=r["episode"]),
                        level_record(r["level"], problem, env=env_name, source="ceiling", goal=True,
                                     episode=r["episode"], edits=r["edits"], stats=r["check"]),
                    )
                ])
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=2, default=float) + "\n")
    print(json.dumps({k: {m: v.get(m) for m in ("found_rate", "upper_bound", "mean_edits", "checker_disagreements")} for k, v in report.items()}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
