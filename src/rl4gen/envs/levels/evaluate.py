"""Evaluating a level generator: play N episodes from seeded random starts, check every final
level independently, and compare with a random policy on the same starts.

``rl4gen eval RUN_DIR`` (a ``task: levels`` run) and ``rl4gen levels eval RUN_OR_ENV`` land here.
Episode ``i`` starts from ``LevelEnv.reset(seed=seed + i)`` for both policies, so the trained
agent and the random baseline edit the same levels. Each final level is judged by
:mod:`rl4gen.envs.levels.check` (plain BFS and an exhaustive Sokoban solver, no code shared with
the environment's reward), not by the environment's ``info["goal"]``; the environment's verdict is
reported beside it (``env_goal_rate``) as a consistency check.

Metrics per policy (``docs/metrics.md``): ``goal_rate``, ``env_goal_rate``, ``diversity`` (mean
pairwise Hamming distance between final levels over the tile count), ``changes`` (mean fraction
of tiles that differ from the start level), ``episode_length`` and the mean of each checked
statistic as ``stats/{name}``.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from rl4gen.envs.levels.check import DEFAULT_TARGETS, check_level
from rl4gen.envs.levels.samples import level_record

__all__ = ["EVAL_FILE", "diversity", "evaluate_levels", "goal_targets", "level_metrics", "play_episodes"]

EVAL_FILE = "levels_eval.json"


def diversity(levels: Sequence[np.ndarray]) -> float:
    """Mean pairwise Hamming distance between levels, divided by the tile count (0 = all equal)."""
    if len(levels) < 2:
        return 0.0
    flat = np.stack([np.asarray(lv).ravel() for lv in levels])  # (N, H*W)
    total, pairs = 0, 0
    for i in range(len(flat) - 1):
        total += int((flat[i + 1 :] != flat[i]).sum())
        pairs += len(flat) - 1 - i
    return total / pairs / flat.shape[1]


def level_metrics(problem: str, finals: Sequence[np.ndarray], starts: Sequence[np.ndarray | None] | None = None, **targets: int) -> dict[str, float]:
    """``goal_rate``, ``diversity`` and mean checked statistics (``stats/{name}``) of levels."""
    starts = starts if starts is not None else [None] * len(finals)
    checks = [check_level(problem, final, start, **targets) for final, start in zip(finals, starts, strict=True)]
    out = {"goal_rate": float(np.mean([c.goal for c in checks])) if checks else 0.0, "diversity": diversity(finals)}
    for key in checks[0].stats if checks else ():
        out[f"stats/{key}"] = float(np.mean([c.stats[key] for c in checks]))
    return out


def play_episodes(make_env: Callable[[], Any], seeds: Sequence[int], act: Callable[[np.ndarray], np.ndarray] | None,
                  attempts: int = 1, record: bool = False, envs: list[Any] | None = None) -> dict[str, Any]:
    """Play one episode per seed side by side (episode ``i`` from ``reset(seed=seeds[i])``; a
    repeated seed repeats the start level, and with random actions the whole episode); ``act``
    maps stacked observations to actions (None: uniformly random actions). With ``attempts`` > 1,
    an episode that ends short of the goal starts again from the same start level, up to
    ``attempts`` times; the last attempt's level is the result. Returns lists over the episodes:
    ``starts``, ``finals`` (levels), ``env_goals``, ``lengths`` (steps of the last attempt) and
    ``tries``; with ``record``, also ``observations`` and ``actions``: each episode's (last
    attempt's) steps, stacked.

    ``envs``, a list kept between calls, lends its environments to the episodes instead of new
    ones (made with ``make_env`` and appended while it is short) and leaves them open: a caller
    that plays many batches makes each environment once. Every episode starts from
    ``reset(seed=...)``, so the episodes are those that new environments would play."""
    episodes = len(seeds)
    owned = envs is None
    if envs is None:
        envs = []
    while len(envs) < episodes:
        envs.append(make_env())
    obs = []
    starts = []
    for i, env in enumerate(envs[:episodes]):
        o, _ = env.reset(seed=seeds[i])
        env.action_space.seed(seeds[i])
        obs.append(o)
        starts.append(env.unwrapped.level)
    finals: list[np.ndarray | None] = [None] * episodes
    env_goals = [False] * episodes
    lengths = [0] * episodes
    tries = [1] * episodes
    seen: list[list[np.ndarray]] = [[] for _ in range(episodes)]
    done: list[list[Any]] = [[] for _ in range(episodes)]
    active = list(range(episodes))
    while active:
        if act is None:
            actions = [envs[i].action_space.sample() for i in active]
        else:
            actions = list(act(np.stack([obs[i] for i in active])))
        still = []
        for i, action in zip(active, actions, strict=True):
            if record:
                seen[i].append(obs[i])
                done[i].append(action)
            o, _, terminated, truncated, info = envs[i].step(action)
            obs[i] = o
            lengths[i] += 1
            if (terminated or truncated) and not info["goal"] and tries[i] < attempts:
                tries[i] += 1  # again from the same start (a generator may retry: the goal is checkable)
                obs[i], _ = envs[i].reset(options={"level": starts[i]})
                lengths[i] = 0
                seen[i], done[i] = [], []
                still.append(i)
            elif terminated or truncated:
                finals[i] = envs[i].unwrapped.level
                env_goals[i] = bool(info["goal"])
            else:
                still.append(i)
        active = still
    if owned:
        for env in envs:
            env.close()
    out = {"starts": starts, "finals": finals, "env_goals": env_goals, "lengths": lengths, "tries": tries}
    if record:
        out["observations"] = [np.stack(steps) for steps in seen]
        out["actions"] = [np.asarray(steps) for steps in done]
    return out


def goal_targets(problem: Any) -> dict[str, int]:
    """The goal thresholds of an environment's problem object (its options may change them)."""
    return {key: getattr(problem, key) for key in DEFAULT_TARGETS[problem.name]}


def _summary(problem: str, played: dict[str, Any], targets: dict[str, int]) -> dict[str, float]:
    starts, finals = played["starts"], played["finals"]
    metrics = level_metrics(problem, finals, starts, **targets)
    metrics["env_goal_rate"] = float(np.mean(played["env_goals"]))
    metrics["changes"] = float(np.mean([(s != f).mean() for s, f in zip(starts, finals, strict=True)]))
    metrics["episode_length"] = float(np.mean(played["lengths"]))
    metrics["attempts"] = float(np.mean(played["tries"]))
    return dict(sorted(metrics.items()))


def evaluate_levels(
    source: str | Path,
    episodes: int = 100,
    seed: int = 10_000,
    deterministic: bool = False,
    write: bool = True,
    attempts: int = 1,
    symmetric: bool = False,
) -> dict[str, Any]:
    """Evaluate a ``task: levels`` run folder (its ``model.zip``, or the latest checkpoint of a
    run still training) against the random policy, or
    only the random policy for an environment name (``binary-narrow``).

    Returns ``{"env", "episodes", "seed", "deterministic", "policy": {...}, "random": {...}}``;
    for a run folder it is also written to ``RUN_DIR/levels_eval.json`` and the policy's final
    levels to ``RUN_DIR/samples/eval_levels.jsonl`` (``write=False`` skips both).

    ``attempts`` > 1 lets each policy retry a start level that it did not bring to the goal (a
    generator can check the goal and try again), up to that many times: ``goal_rate`` is then the
    rate within that many attempts, and ``attempts`` the mean number used.

    ``symmetric`` (a ``policy: fullyconv`` run) acts on the policy's logits averaged over the map's
    rotations and reflections (``networks.symmetric_logits``): one policy, exactly equivariant,
    at 8 (square maps) or 4 forward passes a step.
    """
    import torch

    from rl4gen.config import ConfigError
    from rl4gen.envs.levels.networks import symmetric_logits
    from rl4gen.envs.levels.train import (
        ENV_NAMES,
        _algorithm_class,
        _latest_checkpoint,
        _make_env,
        level_env_name,
        saved_run_config,
        validate_levels_config,
    )

    if episodes < 1:
        raise ConfigError(f"--episodes must be at least 1, got {episodes}.")
    if attempts < 1:
        raise ConfigError(f"--attempts must be at least 1, got {attempts}.")
    path = Path(source)
    run_dir: Path | None = None
    if (path / "config.yaml").is_file():
        cfg = saved_run_config(path)
        run_dir = path
        model_path = path / "model.zip"
        if not model_path.is_file():  # a run still training: its latest complete checkpoint
            latest = _latest_checkpoint(path)
            if latest is None:
                raise ConfigError(f"run folder {str(path)!r} has no model.zip or checkpoint yet: train it first.")
            model_path = latest[0] / "model.zip"
    else:
        name = level_env_name(str(source))
        if name is None:
            raise ConfigError(f"{str(source)!r} is neither a level run folder nor an environment: use one of {', '.join(ENV_NAMES)}.")
        cfg = validate_levels_config({"env": name})
    problem = cfg.env.split("-")[0]

    def make_env() -> Any:
        return _make_env(cfg, 0, None)

    probe = make_env()
    targets = goal_targets(probe.unwrapped.problem)
    probe.close()

    if symmetric and (run_dir is None or cfg.policy != "fullyconv"):
        raise ConfigError("--symmetric needs a run trained with policy: fullyconv (per-cell action logits).")
    result: dict[str, Any] = {"env": cfg.env, "episodes": episodes, "seed": seed, "deterministic": deterministic, "attempts": attempts}
    if symmetric:
        result["symmetric"] = True
    seeds = range(seed, seed + episodes)
    if run_dir is not None:
        model = _algorithm_class(cfg.algorithm).load(model_path, device="cpu")  # policy class and kwargs come from the zip
        result["model"] = str(model_path.relative_to(run_dir))

        def act(obs: np.ndarray) -> np.ndarray:
            if symmetric:
                with torch.no_grad():
                    logits = symmetric_logits(model.policy, torch.as_tensor(obs, device=model.policy.device))
                chosen = logits.argmax(1) if deterministic else torch.distributions.Categorical(logits=logits).sample()
                return chosen.cpu().numpy()
            actions, _ = model.predict(obs, deterministic=deterministic)
            return np.asarray(actions)

        played = play_episodes(make_env, seeds, act, attempts)
        result["policy"] = _summary(problem, played, targets)
    result["random"] = _summary(problem, play_episodes(make_env, seeds, None, attempts), targets)
    if run_dir is not None and write:
        (run_dir / EVAL_FILE).write_text(json.dumps(result, indent=2) + "\n")
        records = [level_record(level, problem, env=f"rl4gen/{cfg.env}-v0", source="eval") for level in played["finals"]]
        out = run_dir / "samples" / "eval_levels.jsonl"
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text("".join(json.dumps(r) + "\n" for r in records))
    return result
