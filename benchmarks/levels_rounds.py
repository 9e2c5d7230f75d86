"""Time of the levels' self-imitation / GRPO rounds' sampling: environments kept between batches
against new ones each batch, and 1 against 2 sampling worker processes.

    python benchmarks/levels_rounds.py                       # sokoban-wide, ~3 minutes on 2 cores
    python benchmarks/levels_rounds.py --model runs/sokoban-grpo/model.zip   # a trained policy
    python benchmarks/levels_rounds.py --tiny --json out.json                # seconds-long smoke run

Two measurements, each side by side in one run, alternating the two ways ``--repeats`` times so
that the machine's other load falls on both alike:

- ``envs``: ``play_episodes`` with actions sampled from the policy on ``--batches`` batches of
  ``--batch-starts`` start levels x ``--samples`` episodes (a round's sampling, as
  ``self_imitation`` runs it in one process), once making every batch's environments anew and once
  lending it the same list of environments (``envs=``). Timed by the process's CPU clock and the
  wall clock; the episodes are checked to be the same both ways.
- ``workers``: one whole GRPO round of ``self_imitation`` (``--starts`` start levels x
  ``--samples``, the sampling and the update) with 1 and with 2 workers, by the wall clock (the
  workers' time is not this process's CPU time); worker start-up is included. The sampled goal
  rate is checked to be the same both ways.

Sokoban's solver keeps a cache of the levels it has solved in each process; it is emptied before
every timed run, since a real round's start levels are new (and spawned workers start empty).

The policy is the fully convolutional sokoban policy with goal features and rule planes, untrained
unless ``--model`` gives a saved one (its episodes then reach the goal now and then, as in a real
run). Ratios > 1 mean the second way is faster.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("OMP_NUM_THREADS", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

import numpy as np
import torch


def _model(path: str | None) -> tuple[Any, Any]:
    """(an SB3 PPO model with the sokoban fully convolutional policy, the run's config)."""
    import tempfile

    from rl4gen.config import ConfigError
    from rl4gen.envs.levels.train import load_levels_config, train_levels

    sets = ["env=sokoban-wide", "policy=fullyconv", "channels=64", "goal_features=true", "rule_planes=true",
            "total_timesteps=0", "levels_per_log=0", "run_name=untrained"]
    if path is not None and not Path(path).is_file():
        raise ConfigError(f"--model {path!r} is not a file: give a model.zip saved by a sokoban-wide run with goal_features and rule_planes.")
    with tempfile.TemporaryDirectory() as tmp:
        try:  # a saved model loads as init_model: weights of another shape get one sentence
            run = train_levels(load_levels_config(None, [*sets, f"output_dir={tmp}", *([f"init_model={path}"] if path else [])]),
                               show_progress=False)
        except ConfigError as exc:
            raise ConfigError(str(exc).replace("config key 'init_model'", "--model")) from None
        return run.model, load_levels_config(None, sets)


def time_envs(model: Any, make_env: Any, batches: int, batch_starts: int, samples: int, repeats: int) -> dict[str, Any]:
    from rl4gen.envs.levels.stats import _SOLVER_CACHE
    from rl4gen.envs.levels.teacher import _sampled_episodes

    seeds = [[b * batch_starts + i for i in range(batch_starts) for _ in range(samples)] for b in range(batches)]
    times: dict[str, list[tuple[float, float]]] = {"new": [], "kept": []}
    goals: dict[str, list[bool]] = {}
    for _ in range(repeats):
        for way in ("new", "kept"):
            kept: list[Any] | None = [] if way == "kept" else None
            _SOLVER_CACHE.clear()  # a real round's start levels are new to the solver
            wall, cpu = time.perf_counter(), time.process_time()
            played = [_sampled_episodes(make_env, batch, model.policy, False, b, kept) for b, batch in enumerate(seeds)]
            times[way].append((time.perf_counter() - wall, time.process_time() - cpu))
            goals[way] = [g for p in played for g in p["env_goals"]]
            for env in kept or []:
                env.close()
    if goals["new"] != goals["kept"]:
        raise RuntimeError("kept environments played other episodes than new ones")
    best = {way: (min(t[0] for t in ts), min(t[1] for t in ts)) for way, ts in times.items()}
    return {
        "episodes": batches * batch_starts * samples,
        "seconds": {way: {"wall": [round(t[0], 3) for t in ts], "cpu": [round(t[1], 3) for t in ts]} for way, ts in times.items()},
        "cpu_ratio": best["new"][1] / best["kept"][1],
        "wall_ratio": best["new"][0] / best["kept"][0],
        "goal_rate": float(np.mean(goals["kept"])),
    }


def time_workers(model: Any, make_env: Any, starts: int, samples: int, repeats: int) -> dict[str, Any]:
    from rl4gen.envs.levels.stats import _SOLVER_CACHE
    from rl4gen.envs.levels.teacher import SELF_SEED_OFFSET, self_imitation

    state = {k: v.clone() for k, v in model.policy.state_dict().items()}
    times: dict[int, list[float]] = {1: [], 2: []}
    rates: dict[int, float] = {}
    logged: dict[str, float] = {}
    for _ in range(repeats):
        for workers in (1, 2):
            model.policy.load_state_dict(state)  # every round from the same weights
            logged.clear()
            _SOLVER_CACHE.clear()  # as the spawned workers' caches start empty
            wall = time.perf_counter()
            self_imitation(model, make_env, [], 1, starts, samples, SELF_SEED_OFFSET, epochs=1, objective="grpo",
                           learning_rate=1e-4, workers=workers, log=lambda _r, m: logged.update(m))
            times[workers].append(time.perf_counter() - wall)
            rates[workers] = logged["self_imitation/sample_goal_rate"]
    if rates[1] != rates[2]:
        raise RuntimeError(f"the sampled goal rate differs with the worker count: {rates}")
    return {
        "starts": starts, "samples": samples,
        "seconds": {str(k): [round(t, 3) for t in v] for k, v in times.items()},
        "wall_ratio": min(times[1]) / min(times[2]),
        "median_wall_ratio": statistics.median(times[1]) / statistics.median(times[2]),
        "goal_rate": rates[1],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="a sokoban-wide model.zip (goal_features and rule_planes); default: untrained")
    parser.add_argument("--batches", type=int, default=4, help="batches for the envs measurement (4)")
    parser.add_argument("--batch-starts", type=int, default=100, help="start levels a batch (100, as the rounds)")
    parser.add_argument("--samples", type=int, default=16, help="episodes a start level (16)")
    parser.add_argument("--starts", type=int, default=800, help="start levels of the workers' round (800)")
    parser.add_argument("--repeats", type=int, default=2, help="alternations of the two ways (2)")
    parser.add_argument("--tiny", action="store_true", help="a seconds-long smoke run")
    parser.add_argument("--json", type=Path, help="write the report here")
    args = parser.parse_args(argv)
    if args.tiny:
        args.batches, args.batch_starts, args.samples, args.starts, args.repeats = 2, 10, 2, 40, 1
    for name in ("batches", "batch_starts", "samples", "starts", "repeats"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1, got {getattr(args, name)}")

    from rl4gen.config import ConfigError
    from rl4gen.envs.levels.train import _make_env

    torch.set_num_threads(1)
    try:
        model, cfg = _model(args.model)
    except ConfigError as exc:
        parser.exit(2, f"error: {exc}\n")
    make_env = functools.partial(_make_env, cfg, 0, None)
    report: dict[str, Any] = {"model": args.model or "untrained", "cores": os.cpu_count()}
    report["envs"] = envs = time_envs(model, make_env, args.batches, args.batch_starts, args.samples, args.repeats)
    print(f"envs: {envs['episodes']} episodes, new / kept environments: CPU time x{envs['cpu_ratio']:.2f}, "
          f"wall x{envs['wall_ratio']:.2f} (goal rate {envs['goal_rate']:.3f})")
    report["workers"] = workers = time_workers(model, make_env, args.starts, args.samples, args.repeats)
    print(f"workers: a GRPO round of {args.starts} x {args.samples}, 1 / 2 workers: wall x{workers['wall_ratio']:.2f} "
          f"(best of {args.repeats}; seconds {workers['seconds']})")
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
