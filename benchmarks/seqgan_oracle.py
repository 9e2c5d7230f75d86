"""SeqGAN's synthetic-oracle table: oracle NLL of samples for MLE, temperature-tuned MLE and
SeqGAN at the same number of generator updates, with the real data as the floor.

    python benchmarks/seqgan_oracle.py                       # the table in docs/tasks/gan.md
    python benchmarks/seqgan_oracle.py --steps 2 --tiny      # a seconds-long smoke run
    python benchmarks/seqgan_oracle.py --set task_args.vocab_size=5000   # the paper's oracle

The recipe is configs/seqgan-oracle.yaml (with ``--set`` overrides). Budgets:

- **MLE**: the prior SeqGAN starts from, trained ``steps`` more MLE steps (batch
  ``pretrain_batch_size``, the pretraining learning rate, no warm-up).
- **SeqGAN**: the prior (``pretrain_steps`` MLE steps) plus ``steps`` adversarial generator
  updates (each with its Monte Carlo roll-outs and ``k_steps`` discriminator steps), per seed.
- **MLE, tuned temperature**: the MLE model sampled at each temperature of ``--temperatures``;
  the temperature is chosen on the *validation* split (samples drawn with another seed, NLL of the
  validation set): the lowest validation oracle NLL among temperatures whose validation NLL
  (coverage of held-out data) is no worse than SeqGAN's mean, i.e. the best quality at the
  diversity SeqGAN has (Caccia et al., 2020, "Language GANs Falling Short"). It is then
  reported on the test split like the others.

Metrics (test split, ``--eval-size`` samples with a fixed seed): ``oracle_nll`` (per token,
samples under the oracle: quality) and ``test_nll`` (per token, held-out oracle data under the
generator: diversity). Writes a JSON and a Markdown table (``--out``, default
benchmarks/results/seqgan_oracle.*).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("OMP_NUM_THREADS", "1")  # tiny models: one thread is faster on a shared CPU
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

import torch

from rl4gen.cli import load_train_config
from rl4gen.gan.seqgan import SeqGANTrainer
from rl4gen.models.pretrain import pretrain_lm, with_start_token
from rl4gen.policies.causal_lm import CausalLMPolicy
from rl4gen.tasks.seqgan_oracle import SeqGANOracleTask

ROOT = Path(__file__).resolve().parents[1]
TINY = [
    "task_args.vocab_size=12", "task_args.num_train=300", "task_args.num_heldout=50", "task_args.pretrain_steps=20",
    "task_args.n_embd=16", "task_args.num_rollouts=2", "task_args.discriminator_pretrain_steps=2", "eval_size=50",
]


def evaluate(task: SeqGANOracleTask, policy: Any, n: int, split: str) -> dict[str, float]:
    seed = 777 if split == "test" else 4242  # validation samples use their own seed
    return task.evaluate(policy, n, seed=seed, split=split)  # type: ignore[arg-type]


def mle_more(task: SeqGANOracleTask, model: Any, steps: int) -> None:
    """``steps`` more MLE steps of ``model`` on the task's training data (its own data order)."""
    o = task.options
    bos = 1  # the character tokenizer's end token starts every sequence
    train = task.data("train") + 3  # oracle token t is id 3 + t (after pad, end, unknown)

    def next_batch(gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        return with_start_token(train[torch.randint(0, train.shape[0], (o.pretrain_batch_size,), generator=gen)], bos)

    pretrain_lm(model, next_batch, steps=steps, learning_rate=o.pretrain_learning_rate, seed=o.pretrain_seed + 1, warmup_steps=0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", default=str(ROOT / "configs" / "seqgan-oracle.yaml"))
    parser.add_argument("--set", dest="sets", action="append", default=[], help="override a recipe key")
    parser.add_argument("--steps", type=int, default=None, help="adversarial steps (default: the recipe's max_steps)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--temperatures", type=float, nargs="+", default=[0.7, 0.8, 0.9, 1.0, 1.1])
    parser.add_argument("--eval-size", type=int, default=None, help="samples per evaluation (default: the recipe's eval_size)")
    parser.add_argument("--tiny", action="store_true", help="a tiny oracle and generator (smoke run)")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "seqgan_oracle"))
    parser.add_argument("--runs", default="runs", help="output_dir of the SeqGAN runs")
    args = parser.parse_args()
    sets = (TINY if args.tiny else []) + args.sets + [f"output_dir={args.runs}", "eval_steps=1000000"]
    cfg = load_train_config(args.config, sets)
    steps = args.steps or cfg.max_steps
    n = args.eval_size or cfg.eval_size
    cfg = cfg.model_copy(update={"max_steps": steps, "save_steps": steps})
    task = SeqGANOracleTask(cfg.task_args)
    o = task.options
    log = lambda m: print(m, flush=True)
    rows: dict[str, dict[str, Any]] = {}
    t0 = time.perf_counter()

    prior_dir = task.pretrain(log=log)
    prior = CausalLMPolicy.from_pretrained(prior_dir)
    mle = CausalLMPolicy.from_pretrained(prior_dir)
    mle_more(task, mle.model, steps)
    rows["MLE prior (start of SeqGAN)"] = {"steps": f"{o.pretrain_steps} MLE", **evaluate(task, prior, n, "test")}
    rows["MLE"] = {"steps": f"{o.pretrain_steps} + {steps} MLE", **evaluate(task, mle, n, "test")}
    log(f"MLE done ({time.perf_counter() - t0:.0f} s)")

    seqgan: list[dict[str, float]] = []
    seqgan_val: list[float] = []
    for seed in args.seeds:
        run_cfg = cfg.model_copy(update={"seed": seed})
        trainer = SeqGANTrainer(run_cfg, show_progress=False, log=log)
        start = time.perf_counter()
        result = trainer.train()
        seconds = time.perf_counter() - start
        test = evaluate(task, trainer.policy, n, "test")
        seqgan_val.append(evaluate(task, trainer.policy, n, "validation")["test_nll"])
        last = result.history[-1]
        seqgan.append({**test, "seconds": seconds, "acc_real": last["discriminator/acc_real"], "acc_fake": last["discriminator/acc_fake"], "run_dir": str(result.run_dir)})  # type: ignore[dict-item]
        log(f"SeqGAN seed {seed}: {test} ({seconds:.0f} s)")

    sweep: list[dict[str, float]] = []
    for temp in args.temperatures:
        mle.generation.temperature = temp
        val = evaluate(task, mle, n, "validation")
        sweep.append({"temperature": temp, "val_oracle_nll": val["oracle_nll"], "val_nll": val["test_nll"], **{f"test_{k}": v for k, v in evaluate(task, mle, n, "test").items()}})
    target = statistics.mean(seqgan_val)
    admissible = [s for s in sweep if s["val_nll"] <= target] or [min(sweep, key=lambda s: s["val_nll"])]
    best = min(admissible, key=lambda s: s["val_oracle_nll"])
    rows[f"MLE, temperature {best['temperature']} (tuned on validation)"] = {
        "steps": f"{o.pretrain_steps} + {steps} MLE",
        "oracle_nll": best["test_oracle_nll"],
        "test_nll": best["test_test_nll"],
        "full_length": best["test_full_length"],
    }

    def mean_std(key: str) -> str:
        values = [float(r[key]) for r in seqgan]
        return f"{statistics.mean(values):.3f}" + (f" ± {statistics.stdev(values):.3f}" if len(values) > 1 else "")

    rows[f"SeqGAN ({len(seqgan)} seed{'s' if len(seqgan) > 1 else ''})"] = {
        "steps": f"{o.pretrain_steps} MLE + {steps} adversarial",
        "oracle_nll": mean_std("oracle_nll"),
        "test_nll": mean_std("test_nll"),
        "full_length": mean_std("full_length"),
    }
    floor = task.real_data_nll("test")
    rows["real data (the oracle itself)"] = {"steps": "-", "oracle_nll": floor, "test_nll": floor, "full_length": 1.0}

    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    setting = {k: getattr(o, k) for k in ("vocab_size", "seq_len", "oracle_embed_dim", "oracle_hidden_dim", "oracle_seed", "num_train", "pretrain_steps", "num_rollouts", "rollout_update_rate", "baseline", "discriminator_pretrain_steps", "n_layer", "n_embd", "n_head")}
    setting["learning_rate"] = cfg.learning_rate
    report = {"setting": setting, "steps": steps, "eval_size": n, "rows": rows, "seqgan_runs": seqgan, "temperature_sweep": sweep, "seqgan_val_nll": target, "seconds": time.perf_counter() - t0}
    out.with_suffix(".json").write_text(json.dumps(report, indent=2))
    fmt = lambda v: f"{v:.3f}" if isinstance(v, float) else str(v)
    lines = ["| generator | updates | oracle NLL of samples ↓ | NLL of test data ↓ | full-length samples |", "|---|---|---|---|---|"]
    lines += [f"| {name} | {r['steps']} | {fmt(r['oracle_nll'])} | {fmt(r['test_nll'])} | {fmt(r['full_length'])} |" for name, r in rows.items()]
    lines += ["", "| temperature | val oracle NLL | val NLL | test oracle NLL | test NLL |", "|---|---|---|---|---|"]
    lines += [f"| {s['temperature']} | {s['val_oracle_nll']:.3f} | {s['val_nll']:.3f} | {s['test_oracle_nll']:.3f} | {s['test_test_nll']:.3f} |" for s in sweep]
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
