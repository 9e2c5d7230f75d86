"""What the edit lookahead planes cost a step: sokoban-wide steps with the goal features alone
against the goal features with ``lookahead_planes``, side by side, on the steps of demonstrations.

    python benchmarks/levels_lookahead.py --demos runs/teacher/sokoban.jsonl   # ~1 minute
    python benchmarks/levels_lookahead.py --tiny --json out.json               # seconds-long smoke run

The steps are those a level generator takes near the goal, where the lookahead is dearest (its
solver runs for every edit that keeps one player and as many crates as targets): each
demonstration's start level (``reset(options={"level": ...})``), then its edits in row-major order
to its goal level. Three ways of stepping the same actions, alternating ``--repeats`` times so
that the machine's other load falls on all alike, each from an empty solver cache (a round's
start levels are new to the solver):

- ``bare``: the ``FlatWideAction`` environment alone (the environment's own statistics);
- ``features``: with ``GoalFeatures`` and the rule planes (the observation of the lookahead-free
  sokoban recipes);
- ``lookahead``: the same with ``lookahead=True``.

Each figure is the best run by this process's CPU time, in microseconds per step, and the
ratios are ``lookahead / features`` (what the planes add to an observed step) and
``lookahead / bare``. Without ``--demos`` the beam search first finds demonstrations for a few
start levels (``--levels``), which takes ~1.3 s each.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("OMP_NUM_THREADS", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

import gymnasium as gym
import numpy as np

WAYS = ("bare", "features", "lookahead")


def _env(way: str) -> gym.Env[Any, Any]:
    import rl4gen.envs  # noqa: F401  (registers the environments)
    from rl4gen.envs.levels.wrappers import FlatWideAction, GoalFeatures, OneHotObservation

    env: gym.Env[Any, Any] = FlatWideAction(gym.make("rl4gen/sokoban-wide-v0"))
    if way != "bare":
        env = GoalFeatures(OneHotObservation(env), rule_planes=True, lookahead=way == "lookahead")
    return env


def _episodes(demos: list[Any]) -> list[tuple[np.ndarray, list[int]]]:
    """(start level, flat actions) per demonstration: its differing cells in row-major order."""
    from rl4gen.envs.levels.teacher import _demonstration_edits

    return [(demo.start, _demonstration_edits(demo, demo.start.shape[1], demo.start.shape[0]).tolist()) for demo in demos]


def time_ways(episodes: list[tuple[np.ndarray, list[int]]], repeats: int) -> dict[str, Any]:
    from rl4gen.envs.levels.stats import _SOLVER_CACHE

    envs = {way: _env(way) for way in WAYS}
    cpu: dict[str, list[float]] = {way: [] for way in WAYS}
    steps = sum(len(actions) for _, actions in episodes)
    for _ in range(repeats):
        for way in WAYS:
            env = envs[way]
            _SOLVER_CACHE.clear()
            clock = time.process_time()
            for start, actions in episodes:
                env.reset(seed=0, options={"level": start})
                for action in actions:
                    _, _, terminated, truncated, _ = env.step(action)
                    if terminated or truncated:
                        break
            cpu[way].append(time.process_time() - clock)
    for env in envs.values():
        env.close()
    per_step = {way: 1e6 * min(times) / steps for way, times in cpu.items()}
    return {
        "episodes": len(episodes), "steps": steps,
        "seconds": {way: [round(t, 4) for t in times] for way, times in cpu.items()},
        "us_per_step": {way: round(v, 1) for way, v in per_step.items()},
        "lookahead_over_features": per_step["lookahead"] / per_step["features"],
        "lookahead_over_bare": per_step["lookahead"] / per_step["bare"],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--demos", type=Path, help="a demonstrations .jsonl (rl4gen levels teach sokoban-wide); default: search")
    parser.add_argument("--levels", type=int, default=20, help="start levels to search without --demos (20)")
    parser.add_argument("--limit", type=int, default=400, help="demonstrations used at most (400)")
    parser.add_argument("--repeats", type=int, default=3, help="alternations of the three ways (3)")
    parser.add_argument("--tiny", action="store_true", help="a seconds-long smoke run")
    parser.add_argument("--json", type=Path, help="write the report here")
    args = parser.parse_args(argv)
    if args.tiny:
        args.levels, args.limit, args.repeats = 4, 4, 1
    for name in ("levels", "limit", "repeats"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be at least 1, got {getattr(args, name)}")

    from rl4gen.config import ConfigError
    from rl4gen.envs.levels.teacher import load_demonstrations, search_demonstrations

    if args.demos is not None:
        if not args.demos.is_file():
            parser.exit(2, f"error: --demos {str(args.demos)!r} is not a file: give a demonstrations .jsonl from rl4gen levels teach sokoban-wide.\n")
        try:
            demos = load_demonstrations(args.demos, (5, 5), 5, key="--demos")
        except ConfigError as exc:
            parser.exit(2, f"error: {exc}\n")
    else:
        demos = search_demonstrations(_env("bare"), args.levels, 1_000_000, 0.5 if args.tiny else 3.0)
    if not demos:
        parser.exit(2, "error: no demonstrations to replay: give --demos or search more --levels.\n")
    report = time_ways(_episodes(demos[: args.limit]), args.repeats)
    report["demos"] = str(args.demos) if args.demos else f"searched {args.levels} start levels"
    us = report["us_per_step"]
    print(f"lookahead: {report['steps']} steps of {report['episodes']} demonstrations, CPU us/step: bare {us['bare']}, "
          f"features {us['features']}, lookahead {us['lookahead']}; lookahead / features x{report['lookahead_over_features']:.1f}, "
          f"lookahead / bare x{report['lookahead_over_bare']:.0f}")
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
