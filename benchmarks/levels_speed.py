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

Each number is the best of ``--repeats`` runs of about ``--seconds`` each, by two clocks: the
wall clock, and this process's CPU time (``time.process_time``), which leaves out the time the
process waited while other users' jobs ran on the shared machine. The ratios use CPU time, with
the wall-clock ratio beside them. gym-pcgrl is not on PyPI, so its per-step times are the
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


def _clocks() -> tuple[float, float]:
    return time.perf_counter(), time.process_time()


def _time_single(name: str, seconds: float, seed: int) -> tuple[float, float]:
    """(steps/s by the wall clock, steps/s by this process's CPU time)."""
    env = gym.make(name)
    env.reset(seed=seed)
    env.action_space.seed(seed)

    def run(actions: list[Any]) -> tuple[float, float]:
        wall, cpu = _clocks()
        for action in actions:
            _, _, terminated, truncated, _ = env.step(action)
            if terminated or truncated:
                env.reset()
        wall2, cpu2 = _clocks()
        return wall2 - wall, cpu2 - cpu

    calib = run([env.action_space.sample() for _ in range(500)])[0]
    n = max(500, int(500 * seconds / max(calib, 1e-9)))
    actions = [env.action_space.sample() for _ in range(n)]
    wall, cpu = run(actions)
    return n / wall, n / max(cpu, 1e-9)


def _time_vector(name: str, num_envs: int, mode: str | None, seconds: float, seed: int) -> tuple[float, float]:
    kwargs = {} if mode is None else {"vectorization_mode": mode}
    envs = gym.make_vec(name, num_envs=num_envs, **kwargs)
    envs.reset(seed=seed)
    envs.action_space.seed(seed)

    def run(actions: list[Any]) -> tuple[float, float]:
        wall, cpu = _clocks()
        for action in actions:
            envs.step(action)  # both vector envs reset finished episodes themselves
        wall2, cpu2 = _clocks()
        return wall2 - wall, cpu2 - cpu

    calib = run([envs.action_space.sample() for _ in range(20)])[0]
    n = max(20, int(20 * seconds / max(calib, 1e-9)))
    actions = [envs.action_space.sample() for _ in range(n)]
    wall, cpu = run(actions)
    envs.close()
    return n * num_envs / wall, n * num_envs / max(cpu, 1e-9)


MODES = ("single", "sync", "batched")


def measure(
    problems: list[str], representations: list[str], seconds: float, repeats: int, num_envs: int, sync_envs: int
) -> dict[str, dict[str, dict[str, float]]]:
    """{clock: {env: {mode: best steps/s}}} for clock "wall" and "cpu"."""
    results: dict[str, dict[str, dict[str, float]]] = {"wall": {}, "cpu": {}}
    for problem in problems:
        for representation in representations:
            key = f"{problem}-{representation}"
            name = env_id(problem, representation)
            best = {clock: dict.fromkeys(MODES, 0.0) for clock in results}
            for r in range(repeats):  # interleaved, so drift hits all three alike
                timings = {
                    "single": _time_single(name, seconds, r),
                    "sync": _time_vector(name, sync_envs, "sync", seconds, r),
                    "batched": _time_vector(name, num_envs, None, seconds, r),
                }
                for mode, (wall, cpu) in timings.items():
                    best["wall"][mode] = max(best["wall"][mode], wall)
                    best["cpu"][mode] = max(best["cpu"][mode], cpu)
            for clock, per_env in results.items():
                per_env[key] = best[clock]
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

    for clock, title in (("wall", "wall clock"), ("cpu", "process CPU time")):
        print(f"steps/s by {title}")
        print(f"{'environment':<16} {'single':>12} {f'sync x{args.sync_envs}':>12} {f'batched x{args.num_envs}':>12}")
        for key, r in results[clock].items():
            print(f"{key:<16} {r['single']:>12,.0f} {r['sync']:>12,.0f} {r['batched']:>12,.0f}")
        print()
    report: dict[str, Any] = {"steps_per_s": results["wall"], "cpu_steps_per_s": results["cpu"], "ratios": {},
                              "cpu_ratios": {}, "reference_ms": GYM_PCGRL_MS}
    for key, ms in GYM_PCGRL_MS.items():
        if key not in results["wall"]:
            continue
        wall = {mode: results["wall"][key][mode] * ms / 1000.0 for mode in MODES}
        cpu = {mode: results["cpu"][key][mode] * ms / 1000.0 for mode in MODES}
        report["ratios"][key], report["cpu_ratios"][key] = wall, cpu
        ok = "meets" if cpu["batched"] >= TARGET_RATIO else "below"
        print(
            f"ratio vs gym-pcgrl {key} ({ms} ms/step), CPU time [wall clock]: "
            f"single {cpu['single']:.1f}x [{wall['single']:.1f}x], sync {cpu['sync']:.1f}x [{wall['sync']:.1f}x], "
            f"batched {cpu['batched']:.1f}x [{wall['batched']:.1f}x] ({ok} the {TARGET_RATIO:.0f}x target)"
        )
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
