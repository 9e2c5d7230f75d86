"""`rl4gen demo --task melody`: RL Tuner on Bach, from nothing to a metric table, MIDI and WAV."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from rich.console import Console

from rl4gen.eval.report import write_report
from rl4gen.music.report import metric_table, write_melody_files
from rl4gen.rewards.music import melody_events

#: The demo's target: rule violations at least halved while the melodies' log-likelihood under
#: the prior falls by at most this many nats per step.
LOGLIK_BUDGET = 0.5


def run_melody_demo(
    config: Any, *, show_progress: bool, console: Console, log: Callable[[str], None]
) -> dict[str, Any]:
    """Pretrain (or reuse) the melody prior, train with the recipe, and write the table and files."""
    from rl4gen.tasks.melody import MelodyTask
    from rl4gen.trainer import Trainer

    start = time.perf_counter()
    task = MelodyTask(config.task_args)
    prior_dir = task.pretrain(log=log)
    result = Trainer(config, task=task, show_progress=show_progress, log=log).train()
    before, after = result.initial_eval, result.final_eval
    table = metric_table({"prior (before RL)": before, "after RL": after})
    length = task.options.segment_length
    melodies = {
        "prior": [melody_events(t, length) for t in task.sample_melodies(task.prior(), 4, seed=5)],
        "after RL": [melody_events(t, length) for t in task.sample_melodies(_trained(task, result.run_dir), 4, seed=5)],
    }
    files = write_melody_files(result.run_dir / "samples" / "melodies", melodies)
    halved = after["violations"] <= 0.5 * before["violations"]
    drop = before["prior_loglik"] - after["prior_loglik"]
    within = drop <= LOGLIK_BUDGET
    summary = {
        "task": "melody",
        "algorithm": config.algorithm.name,
        "run_dir": str(result.run_dir),
        "prior_dir": str(prior_dir),
        "steps": result.step,
        "seconds_total": round(time.perf_counter() - start, 1),
        "violations_halved": halved,
        "prior_loglik_drop": round(drop, 4),
        "prior_loglik_budget": LOGLIK_BUDGET,
        "eval_before": before,
        "eval_after": after,
    }
    (result.run_dir / "melody_metrics.md").write_text(table)
    write_report(result.run_dir, summary)
    with open(result.run_dir / "report.md", "a") as fh:
        fh.write("\n## Music-theory metrics (RL Tuner's table)\n\n" + table)
        fh.write("\n![piano roll](samples/melodies/piano_roll.png)\n")
    console.print(table)
    console.print(f"run folder: {result.run_dir}")
    console.print(f"MIDI, WAV and piano roll: {files[0].parent}")
    console.print(
        f"rule violations: {100 * before['violations']:.1f}% -> {100 * after['violations']:.1f}% "
        f"({'at least halved' if halved else 'NOT halved'}); log-likelihood under the prior "
        f"{before['prior_loglik']:.3f} -> {after['prior_loglik']:.3f} per step "
        f"({'within' if within else 'OVER'} the {LOGLIK_BUDGET} budget)"
    )
    return summary


def _trained(task: Any, run_dir: Any) -> Any:
    from rl4gen.policies.causal_lm import CausalLMPolicy

    return CausalLMPolicy.from_pretrained(run_dir / "model")
