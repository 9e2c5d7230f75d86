"""`rl4gen demo`: pretrain (or reuse) a task's prior, train it with RL, report before and after."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from rich.console import Console

from rl4gen.config import TrainConfig, deep_merge, parse_set, validate_config
from rl4gen.eval.report import plot_side_by_side, write_report
from rl4gen.policies.causal_lm import CausalLMPolicy
from rl4gen.tasks import get_task
from rl4gen.trainer import Trainer


def recipe_config(task_name: str, output_dir: str, sets: list[str], extra: dict[str, Any] | None = None) -> TrainConfig:
    """A task's recipe (its ``default_config`` for the resulting ``task_args``) writing to
    ``output_dir``, with ``extra`` and then the ``--set`` items merged on top."""
    overrides = dict(extra or {})
    for item in sets:
        overrides = deep_merge(overrides, parse_set(item))
    # the recipe may depend on task_args (e.g. the digits task's inpaint mode has its own rewards)
    task = get_task(task_name, overrides.get("task_args"))
    data = task.default_config()
    data["output_dir"] = output_dir
    return validate_config(deep_merge(data, overrides))


def _show_samples(policy: CausalLMPolicy, contexts: list[Any], greedy: bool = True) -> list[dict[str, Any]]:
    """One completion per context: greedy, or sampled with a fixed seed (same for every policy)."""
    generator = None if greedy else torch.Generator(device=policy.device).manual_seed(99)
    completions = policy.generate(contexts, greedy=greedy, generator=generator)
    rows = []
    for ctx, text in zip(contexts, completions):
        rows.append({"prompt": ctx["prompt"], "completion": text, "expected": ctx.get("answer", "")})
    return rows


def run_demo(
    task_name: str,
    *,
    output_dir: str = "runs",
    sets: list[str] | None = None,
    show_progress: bool = True,
    console: Console | None = None,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Run the demo for ``task_name`` and return its summary (also written to summary.json)."""
    console = console or Console()
    sets = list(sets or [])
    if task_name == "shakespeare":
        return _shakespeare_demo(output_dir, sets, show_progress, console, log)
    if task_name == "gan":
        from rl4gen.gan.demo import run_gan_demo

        return run_gan_demo(output_dir=output_dir, sets=sets, show_progress=show_progress, console=console, log=log)
    if task_name == "melody":
        from rl4gen.music.demo import run_melody_demo

        return run_melody_demo(recipe_config("melody", output_dir, sets), show_progress=show_progress, console=console, log=log)
    if task_name == "digits":
        from rl4gen.tasks.digits_demo import run_digits_demo

        return run_digits_demo(recipe_config("digits", output_dir, sets), show_progress=show_progress, console=console, log=log)
    start = time.perf_counter()
    config = recipe_config(task_name, output_dir, sets)
    task = get_task(config.task, config.task_args)
    prior_dir = task.pretrain(log=log)
    pretrain_seconds = time.perf_counter() - start
    prior = CausalLMPolicy.from_pretrained(prior_dir, config.generation)
    shown = task.eval_contexts(8)
    before = _show_samples(prior, shown)

    trainer = Trainer(config, task=task, show_progress=show_progress, log=log)
    result = trainer.train()
    after = _show_samples(trainer.policy, shown)
    summary = {
        "task": task_name,
        "algorithm": config.algorithm.name,
        "run_dir": str(result.run_dir),
        "prior_dir": str(prior_dir),
        "steps": result.step,
        "seconds_total": round(time.perf_counter() - start, 1),
        "seconds_pretrain_or_cache": round(pretrain_seconds, 1),
        "eval_before": result.initial_eval,
        "eval_after": result.final_eval,
    }
    write_report(result.run_dir, summary, {"before RL": before, "after RL": after})
    console.print(f"run folder: {result.run_dir}")
    key = "accuracy"
    b, a = result.initial_eval.get(key), result.final_eval.get(key)
    if b is not None and a is not None:
        console.print(f"held-out accuracy: {100 * b:.1f}% -> {100 * a:.1f}%")
    return summary


def _shakespeare_demo(
    output_dir: str, sets: list[str], show_progress: bool, console: Console, log: Callable[[str], None]
) -> dict[str, Any]:
    """Two runs from the same prior, with and without the KL penalty, compared side by side."""
    start = time.perf_counter()
    base = recipe_config("shakespeare", output_dir, sets)
    task = get_task(base.task, base.task_args)
    prior_dir = task.pretrain(log=log)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    runs: dict[str, Path] = {}
    results = {}
    base_beta = float(getattr(base.algorithm, "beta", 0.0))
    betas = [0.0, base_beta if base_beta > 0 else 0.2]
    for beta in betas:
        cfg = recipe_config(
            "shakespeare",
            output_dir,
            sets,
            {
                "algorithm": {"beta": beta},
                "reference_metrics": True,
                "run_name": f"shakespeare__{base.algorithm.name}__beta{beta:g}__{base.seed}__{stamp}",
            },
        )
        log(f"training with beta = {beta:g}")
        result = Trainer(cfg, task=task, show_progress=show_progress, log=log).train()
        label = f"beta = {beta:g}"
        runs[label] = result.run_dir
        results[label] = result
    compare = Path(output_dir) / f"shakespeare__compare__{stamp}"
    compare.mkdir(parents=True, exist_ok=True)
    plot_side_by_side(
        runs,
        ["reward", "kl", "eval/lexicon", "eval/kl", "eval/distinct_words"],
        compare / "reward_vs_kl.png",
        "sentiment reward vs KL to the prior",
    )
    summary: dict[str, Any] = {
        "task": "shakespeare",
        "prior_dir": str(prior_dir),
        "runs": {k: str(v) for k, v in runs.items()},
        "seconds_total": round(time.perf_counter() - start, 1),
    }
    for label, result in results.items():
        summary[label] = {"before": result.initial_eval, "after": result.final_eval}
    prior = CausalLMPolicy.from_pretrained(prior_dir, base.generation)
    shown = task.eval_contexts(6)
    samples = {"prior": _show_samples(prior, shown, greedy=False)}
    for label, run_dir in runs.items():
        policy = CausalLMPolicy.from_pretrained(run_dir / "model", base.generation)
        samples[label] = _show_samples(policy, shown, greedy=False)
    write_report(compare, summary, samples, curves=compare / "reward_vs_kl.png")
    console.print(f"run folder: {compare}")
    for label, result in results.items():
        b, a = result.initial_eval, result.final_eval
        console.print(
            f"{label}: held-out sentiment reward {b.get('lexicon', 0):.2f} -> {a.get('lexicon', 0):.2f}, "
            f"KL to prior {a.get('kl', 0):.3f} per token, distinct words "
            f"{b.get('distinct_words', 0):.2f} -> {a.get('distinct_words', 0):.2f}"
        )
    return summary
