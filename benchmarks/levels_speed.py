"""Steps per second of the level environments under random actions, and the ratio to gym-pcgrl.

    python benchmarks/levels_speed.py                 # all nine environments, ~1 minute
    python benchmarks/levels_speed.py --tiny          # seconds-long smoke run
    python benchmarks/levels_speed.py --problems sokoban --representations narrow --json out.json

Three ways of stepping each environment, each timed on actions drawn before the clock starts
(from the seeded action space), resets included whenever an episode ends:

- ``single``: one ``gymnasium.make(id)`` environment, with the wrappers Gymnasium adds;
- ``sync``: ``gymnasium.make_vec(id, num_envs, vectorization_mode="sync")`` (``SyncVectorEnv``);
- ``batched``: ``gymnasium.make_vec(id, num_envs)``, rl4gen's ``LevelVectorEnv`` (one level
  buffer, no per-environment observation stacking).

Each number is the best of ``--repeats`` runs of about ``--seconds`` each (the machine is shared;
the best run is the least disturbed). gym-pcgrl is not on PyPI, so its per-step times are the
reference figures measured with its own loop on this class of machine (quoted in the issue):
binary-narrow 0.33 ms, zelda-narrow 0.12 ms, sokoban-narrow 0.07 ms. Ratio = reference time per
step / our time per step (higher is better).
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

import rl4gen.envs  # noqa: F401  (registers the environments)
from rl4gen.envs.levels import PROBLEMS, REPRESENTATIONS, env_id

#: gym-pcgrl's own loop, milliseconds per step (random actions)
GYM_PCGRL_MS = {"binary-narrow": 0.33, "zelda-narrow": 0.12, "sokoban-narrow": 0.07}
TARGET_RATIO = 10.0


def _time_single(name: str, seconds: float, seed: int) -> float:
    env = gym.make(name)
    env.reset(seed=seed)
    env.action_space.seed(seed)

    def run(actions: list[Any]) -> float:
        start = time.perf_counter()
        for action in actions:
            _, _, terminated, truncated, _ = env.step(action)
            if terminated or truncated:
                env.reset()
        return time.perf_counter() - start

    calib = run([env.action_space.sample() for _ in range(500)])
    n = max(500, int(500 * seconds / max(calib, 1e-9)))
    actions = [env.action_space.sample() for _ in range(n)]
    return n / run(actions)


def _time_vector(name: str, num_envs: int, mode: str | None, seconds: float, seed: int) -> float:
    kwargs = {} if mode is None else {"vectorization_mode": mode}
    envs = gym.make_vec(name, num_envs=num_envs, **kwargs)
    envs.reset(seed=seed)
    envs.action_space.seed(seed)

    def run(actions: list[Any]) -> float:
        start = time.perf_counter()
        for action in actions:
            envs.step(action)  # both vector envs reset finished episodes themselves
        return time.perf_counter() - start

    calib = run([envs.action_space.sample() for _ in range(20)])
    n = max(20, int(20 * seconds / max(calib, 1e-9)))
    actions = [envs.action_space.sample() for _ in range(n)]
    steps_per_s = n * num_envs / run(actions)
    envs.close()
    return steps_per_s


def measure(
    problems: list[str], representations: list[str], seconds: float, repeats: int, num_envs: int, sync_envs: int
) -> dict[str, dict[str, float]]:
    results: dict[str, dict[str, float]] = {}
    for problem in problems:
        for representation in representations:
            key = f"{problem}-{representation}"
            name = env_id(problem, representation)
            best = {"single": 0.0, "sync": 0.0, "batched": 0.0}
            for r in range(repeats):  # interleaved, so drift hits all three alike
                best["single"] = max(best["single"], _time_single(name, seconds, r))
                best["sync"] = max(best["sync"], _time_vector(name, sync_envs, "sync", seconds, r))
                best["batched"] = max(best["batched"], _time_vector(name, num_envs, None, seconds, r))
            results[key] = best
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--problems", default=",".join(PROBLEMS), help="comma-separated problems")
    parser.add_argument("--representations", default=",".join(REPRESENTATIONS), help="comma-separated representations")
    parser.add_argument("--seconds", type=float, default=1.0, help="target seconds per timed run")
    parser.add_argument("--repeats", type=int, default=3, help="runs per setting; the best is kept")
    parser.add_argument("--num-envs", type=int, default=64, help="environments in the batched LevelVectorEnv")
    parser.add_argument("--sync-envs", type=int, default=16, help="environments in SyncVectorEnv")
    parser.add_argument("--tiny", action="store_true", help="a seconds-long smoke run")
    parser.add_argument("--json", type=Path, help="also write the results to this JSON file")
    args = parser.parse_args(argv)
    problems = [p for p in args.problems.split(",") if p]
    representations = [r for r in args.representations.split(",") if r]
    for p in problems:
        if p not in PROBLEMS:
            parser.error(f"unknown problem {p!r}: use {', '.join(PROBLEMS)}.")
    for r in representations:
        if r not in REPRESENTATIONS:
            parser.error(f"unknown representation {r!r}: use {', '.join(REPRESENTATIONS)}.")
    seconds, repeats = (0.05, 1) if args.tiny else (args.seconds, args.repeats)

    results = measure(problems, representations, seconds, repeats, args.num_envs, args.sync_envs)

    header = f"{'environment':<16} {'single':>12} {f'sync x{args.sync_envs}':>12} {f'batched x{args.num_envs}':>12}   steps/s"
    print(header)
    for key, r in results.items():
        print(f"{key:<16} {r['single']:>12,.0f} {r['sync']:>12,.0f} {r['batched']:>12,.0f}")
    print()
    report: dict[str, Any] = {"steps_per_s": results, "ratios": {}, "reference_ms": GYM_PCGRL_MS}
    for key, ms in GYM_PCGRL_MS.items():
        if key not in results:
            continue
        ratios = {mode: results[key][mode] * ms / 1000.0 for mode in ("single", "sync", "batched")}
        report["ratios"][key] = ratios
        ok = "meets" if ratios["batched"] >= TARGET_RATIO else "below"
        print(
            f"ratio vs gym-pcgrl {key} ({ms} ms/step): single {ratios['single']:.1f}x, "
            f"sync {ratios['sync']:.1f}x, batched {ratios['batched']:.1f}x ({ok} the {TARGET_RATIO:.0f}x target)"
        )
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
