"""`rl4gen demo --task digits`: DDPO on the tiny digits diffusion prior, before/after on the same
seeds.

Writes into the run folder: ``samples/before_after.png`` (the prior's grid above the trained
policy's, one column per digit 0..9, the same initial noise for both), ``summary.json`` and
``report.md`` with the held-out metrics before and after, the Fréchet ratio against the demo's
budget, the wall time and the number of UNet evaluations (a machine-independent measure of cost).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from rich.console import Console

from rl4gen.eval.report import write_report

#: The demo's target: held-out accuracy at least this high, with the Fréchet distance within
#: this factor of the prior's.
ACCURACY_TARGET = 0.95
FRECHET_BUDGET = 1.2
GRID_ROWS = 6
GRID_SEED = 7


class UNetCounter:
    """Counts the images a UNet is evaluated on (forward pre-hook on each module given)."""

    def __init__(self, *modules: torch.nn.Module | None) -> None:
        self.count = 0
        self.handles = [m.register_forward_pre_hook(self._hook) for m in modules if m is not None]

    def _hook(self, module: torch.nn.Module, args: tuple[Any, ...]) -> None:
        self.count += int(args[0].shape[0])

    def close(self) -> None:
        for h in self.handles:
            h.remove()


def grid_images(task: Any, policy: Any, inpaint_contexts: list[Any] | None = None) -> torch.Tensor:
    """``GRID_ROWS`` rows of digits 0..9 (or the inpainting contexts) from a fixed seed."""
    contexts = inpaint_contexts or [{"label": d} for _ in range(GRID_ROWS) for d in range(10)]
    return task.generate(policy, contexts, seed=GRID_SEED)


def save_before_after(before: torch.Tensor, after: torch.Tensor, path: Path) -> Path:
    """One PNG: ``before`` rows, a blank row, then ``after`` rows (10 images per row)."""
    from rl4gen.images import save_grid

    blank = torch.full((10, *before.shape[1:]), -1.0)
    return save_grid(torch.cat([before, blank, after]), path, nrow=10)


def run_digits_demo(config: Any, *, show_progress: bool, console: Console, log: Callable[[str], None]) -> dict[str, Any]:
    """Pretrain (or reuse) the diffusion prior, run the recipe, write grids and metrics."""
    from rl4gen.policies.diffusion import DiffusionPolicy
    from rl4gen.tasks.digits import DigitsTask
    from rl4gen.trainer import Trainer

    start = time.perf_counter()
    task = DigitsTask(config.task_args)
    prior_dir = task.pretrain(log=log)
    pretrain_seconds = time.perf_counter() - start
    inpaint = task.options.mode == "inpaint"
    shown = task.eval_contexts(30) if inpaint else None
    prior = DiffusionPolicy.from_pretrained(prior_dir, task.sampler())
    before = grid_images(task, prior, shown)

    rl_start = time.perf_counter()
    trainer = Trainer(config, task=task, show_progress=show_progress, log=log)
    counter = UNetCounter(trainer.policy.model, trainer.policy.ref_model)
    result = trainer.train()
    rl_seconds = time.perf_counter() - rl_start
    counter.close()
    after = grid_images(task, trainer.policy, shown)
    if inpaint and shown is not None:  # show the damaged inputs and the true digits too
        damaged = torch.stack([c["known"] for c in shown])
        truth = torch.stack([c["target"] for c in shown])
        before, after = torch.cat([damaged, before]), torch.cat([truth, after])
    grid = save_before_after(before, after, result.run_dir / "samples" / "before_after.png")

    b, a = result.initial_eval, result.final_eval
    frechet_ratio = a["frechet"] / max(b["frechet"], 1e-9)
    summary: dict[str, Any] = {
        "task": "digits",
        "mode": task.options.mode,
        "algorithm": config.algorithm.name,
        "run_dir": str(result.run_dir),
        "prior_dir": str(prior_dir),
        "steps": result.step,
        "seconds_total": round(time.perf_counter() - start, 1),
        "seconds_pretrain_or_cache": round(pretrain_seconds, 1),
        "seconds_rl_with_eval": round(rl_seconds, 1),
        "unet_evaluations_rl_with_eval": counter.count,
        "accuracy_before": round(b["accuracy"], 4),
        "accuracy_after": round(a["accuracy"], 4),
        "frechet_ratio": round(frechet_ratio, 3),
        "grid": str(grid),
        "eval_before": b,
        "eval_after": a,
    }
    if not inpaint:
        summary["meets_target"] = a["accuracy"] >= ACCURACY_TARGET and frechet_ratio <= FRECHET_BUDGET
    write_report(result.run_dir, summary)
    with open(result.run_dir / "report.md", "a") as fh:
        top = "damaged input, then the prior's restoration" if inpaint else "the prior (digits 0..9 per row)"
        bottom = "true digit, then the trained policy's restoration" if inpaint else "after RL, same seeds"
        fh.write(f"\n## Before / after\n\nTop: {top}. Bottom: {bottom}.\n\n![before and after](samples/before_after.png)\n")
    console.print(f"run folder: {result.run_dir}")
    console.print(
        f"held-out accuracy {100 * b['accuracy']:.1f}% -> {100 * a['accuracy']:.1f}%, "
        f"Fréchet distance {b['frechet']:.2f} -> {a['frechet']:.2f} (x{frechet_ratio:.2f})"
        + (f", restoration MSE {b['restoration_mse']:.3f} -> {a['restoration_mse']:.3f}" if inpaint else "")
    )
    console.print(f"before/after grid: {grid}")
    return summary
