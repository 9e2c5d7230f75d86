"""`rl4gen demo --task gan`: the three image parts of the GAN/latent issue in one run.

1. A LatentPolicy over a small VAE's codes, trained with GRPO to draw the requested digit
   (reward ``digit_alignment``, KL tie to the VAE prior).
2. The RL-GAN (Gaussian-output generator, discriminator reward + batch novelty) against the plain
   non-saturating GAN on the same budget: generator updates, samples per update and
   discriminator steps are equal. Mode collapse shows in class coverage and within-class diversity.
3. The same LatentPolicy driving the plain GAN's generator.

Everything lands in one folder: each part's run folder, before/after PNG grids, ``report.md``
(tables) and ``summary.json``.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rich.console import Console

METRICS = ("accuracy", "p_requested", "coverage", "diversity", "frechet", "confidence")


def _train(task_name: str, task_args: dict[str, Any], overrides: dict[str, Any], out: Path, sets: list[str], show_progress: bool, log: Callable[[str], None]) -> Any:
    from rl4gen.demo import recipe_config
    from rl4gen.tasks import get_task
    from rl4gen.trainer import Trainer

    config = recipe_config(task_name, str(out), sets, extra={"task_args": task_args, **overrides})
    task = get_task(config.task, config.task_args)
    trainer = Trainer(config, task=task, show_progress=show_progress, log=log)
    return task, trainer, trainer.train()


def _latent_part(name: str, decoder: str, out: Path, sets: list[str], show_progress: bool, log: Callable[[str], None]) -> dict[str, Any]:
    from rl4gen.images import save_grid

    task, trainer, result = _train("latent_digits", {"decoder": decoder}, {"run_name": name}, out, sets, show_progress, log)
    contexts = task.eval_contexts(50)
    prior = task.load_policy(str(task.pretrain(log=log)), trainer.config, use_reference=False)
    save_grid(prior.images(contexts), out / f"{name}_before.png")
    save_grid(trainer.policy.images(contexts), out / f"{name}_after.png")
    rewards = [h["reward"] for h in result.history]
    return {"run_dir": str(result.run_dir), "steps": result.step, "reward_first": rewards[0], "reward_last": rewards[-1], "before": result.initial_eval, "after": result.final_eval}


def _gan_part(out: Path, sets: list[str], show_progress: bool, log: Callable[[str], None]) -> dict[str, Any]:
    from rl4gen.images import save_grid
    from rl4gen.policies.latent import GaussianGeneratorPolicy
    from rl4gen.tasks.gan import _report, load_generator, pretrained_gan

    task, trainer, result = _train("gan_digits", {}, {"run_name": "rl_gan"}, out, sets, show_progress, log)
    cfg, o = trainer.config, task.options
    batch = cfg.prompts_per_step * cfg.algorithm.num_generations
    # The baseline: the plain GAN that the RL-GAN warm-started from, trained on by backprop for
    # as many more generator updates as the RL-GAN made.
    start = time.perf_counter()
    generator = load_generator(pretrained_gan(o, o.warm_start_steps + cfg.max_steps, log))
    baseline_seconds = time.perf_counter() - start
    baseline = GaussianGeneratorPolicy(generator, o.gan_latent_dim, o.pixel_std)
    save_grid(trainer.policy.mean_images(100), out / "rl_gan_after.png")
    save_grid(baseline.mean_images(100), out / "ns_gan_same_budget.png")
    ns = _report(baseline.mean_images(cfg.eval_size), None, o.image_size)
    return {
        "run_dir": str(result.run_dir), "steps": result.step, "samples_per_step": batch, "warm_start_steps": o.warm_start_steps,
        "rl_gan_before": result.initial_eval, "rl_gan_after": result.final_eval, "ns_gan_same_budget": ns,
        "ns_gan_seconds_or_cache": round(baseline_seconds, 1),
        "discriminator_last": {k: v for k, v in result.history[-1].items() if k.startswith("discriminator/")},
    }


def _table(rows: dict[str, dict[str, float]]) -> str:
    keys = [k for k in METRICS if any(k in r for r in rows.values())]
    lines = ["| model | " + " | ".join(keys) + " |", "|---|" + "---|" * len(keys)]
    for label, r in rows.items():
        lines.append(f"| {label} | " + " | ".join(f"{r[k]:.3f}" if k in r else "" for k in keys) + " |")
    return "\n".join(lines) + "\n"


def run_gan_demo(
    *, output_dir: str = "runs", sets: list[str] | None = None, show_progress: bool = True, console: Console | None = None, log: Callable[[str], None] = print
) -> dict[str, Any]:
    """Run the three parts into ``{output_dir}/gan_demo__{time}``; returns the summary."""
    from rl4gen.trainer import reserve_run_dir

    console = console or Console()
    sets = list(sets or [])
    start = time.perf_counter()
    out = reserve_run_dir(output_dir, None, "gan_demo")
    summary: dict[str, Any] = {"task": "gan", "folder": str(out)}
    summary["latent_vae"] = _latent_part("latent_vae", "vae", out, sets, show_progress, log)
    summary["gan"] = _gan_part(out, sets, show_progress, log)
    summary["latent_gan"] = _latent_part("latent_gan", "gan", out, sets, show_progress, log)
    summary["seconds_total"] = round(time.perf_counter() - start, 1)
    lv, g, lg = summary["latent_vae"], summary["gan"], summary["latent_gan"]
    report = [
        "# rl4gen demo --task gan", "",
        "## Latent policy on the VAE (reward: p(requested digit))", "",
        _table({"VAE prior": lv["before"], "after RL": lv["after"]}),
        "![before](latent_vae_before.png) ![after](latent_vae_after.png)", "",
        f"## RL-GAN vs non-saturating GAN: both start from the plain GAN after {g['warm_start_steps']} steps, then {g['steps']} more generator updates of {g['samples_per_step']} samples each", "",
        _table({"RL-GAN at start": g["rl_gan_before"], "RL-GAN": g["rl_gan_after"], "NS-GAN (backprop)": g["ns_gan_same_budget"]}),
        "![RL-GAN](rl_gan_after.png) ![NS-GAN](ns_gan_same_budget.png)", "",
        "## Latent policy on the GAN generator", "",
        _table({"GAN prior": lg["before"], "after RL": lg["after"]}),
        "![before](latent_gan_before.png) ![after](latent_gan_after.png)", "",
    ]
    (out / "report.md").write_text("\n".join(report))
    (out / "summary.json").write_text(json.dumps(summary, indent=2, default=str))
    console.print("\n".join(report), markup=False)  # "[before]" is text, not a style
    console.print(f"folder: {out} ({summary['seconds_total']} s)")
    return summary
