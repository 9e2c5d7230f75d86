"""rl4gen GRPO side by side with TRL's GRPOTrainer and with the compute floor.

One command:

    python benchmarks/grpo_vs_trl.py            # needs `pip install -e .[bench]`
    python benchmarks/grpo_vs_trl.py --tiny     # a seconds-long smoke run (used by the tests)

Both frameworks train the same tiny GPT-2 (same initial weights loaded from one folder, same
character tokenizer, same prompts, same reward, same num_generations, batch, completion length,
learning rate, loss aggregation) for N steps, for beta = 0 and beta > 0. Each run is a separate
worker process (so peak RSS is each framework's own), and the workers alternate
rl4gen, TRL, rl4gen, TRL … to cancel machine drift. The compute floor is plain torch doing the
bare work of one step: prefill + incremental decode with a preallocated KV cache for the same
batch and lengths, one forward/backward over the same tokens, and the reference forward when
beta > 0. Only ratios measured in this one run are reported.

Printed at the end, one figure per line, and written to JSON (``--json``).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from rl4gen.config import GenerationConfig


@dataclass
class Setting:
    n_layer: int = 4
    n_embd: int = 256
    n_head: int = 4
    prompts_per_step: int = 2
    num_generations: int = 8
    max_completion_length: int = 64
    learning_rate: float = 1e-5
    steps: int = 16  # measured steps; one more warm-up step runs first and is not counted
    seed: int = 0

    @property
    def batch(self) -> int:
        return self.prompts_per_step * self.num_generations


TINY = Setting(n_layer=1, n_embd=32, n_head=2, prompts_per_step=2, num_generations=4, max_completion_length=8, steps=2)


def prompts() -> list[str]:
    from rl4gen.tasks.shakespeare import ShakespeareTask

    return [c["prompt"][:24] for c in ShakespeareTask().eval_contexts(64)]


def reward_e(completions: list[str]) -> list[float]:
    """The benchmark's reward: the fraction of the letter 'e' in the completion."""
    return [c.count("e") / max(len(c), 1) for c in completions]


def build_model(setting: Setting, out: Path) -> None:
    from rl4gen import quiet_transformers
    from rl4gen.models.char_gpt import build_char_tokenizer, build_tiny_gpt
    from rl4gen.tasks.shakespeare import ALPHABET

    quiet_transformers()
    tokenizer = build_char_tokenizer(ALPHABET)
    torch.manual_seed(setting.seed)
    model = build_tiny_gpt(len(tokenizer), n_positions=128, n_embd=setting.n_embd, n_layer=setting.n_layer, n_head=setting.n_head)
    model.save_pretrained(str(out))
    tokenizer.save_pretrained(str(out))


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


# ------------------------------------------------------------------------------------ workers


def worker_rl4gen(setting: Setting, beta: float, model_dir: str, out_dir: str) -> dict[str, Any]:
    from rl4gen.config import validate_config
    from rl4gen.rewards import CombinedReward, FunctionReward
    from rl4gen.trainer import Trainer

    config = validate_config(
        {
            "task": "prompts",
            "task_args": {"prompts": prompts()},
            "model": {"path": model_dir},
            "output_dir": out_dir,
            "run_name": f"rl4gen-beta{beta}",
            "seed": setting.seed,
            "generation": {"temperature": 1.0, "max_completion_length": setting.max_completion_length},
            "algorithm": {"name": "grpo", "num_generations": setting.num_generations, "beta": beta, "loss_type": "dapo"},
            "max_steps": setting.steps + 1,
            "prompts_per_step": setting.prompts_per_step,
            "learning_rate": setting.learning_rate,
            "lr_scheduler_type": "constant",
            "warmup_steps": 0,
            "eval_steps": 10**6,
            "sample_steps": 10**6,
            "save_steps": 10**6,
        }
    )
    # The benchmark's reward is a function, given to the trainer directly (no config entry).
    reward = CombinedReward([FunctionReward(lambda s, c, **k: reward_e(list(s)), name="e_fraction")])
    trainer = Trainer(config, rewards=reward, show_progress=False, log=lambda m: None)
    result = trainer.train()
    measured = result.history[1:]
    seconds = sum(h["step_time"] for h in measured)
    tokens = sum(h["completions/mean_length"] * setting.batch for h in measured)
    return {
        "seconds": seconds,
        "completions": setting.batch * len(measured),
        "tokens": tokens,
        "reward_last": result.history[-1]["reward"],
        "reward_mean": statistics.fmean(h["reward"] for h in measured),
        "peak_rss_mb": peak_rss_mb(),
    }


def worker_trl(setting: Setting, beta: float, model_dir: str, out_dir: str) -> dict[str, Any]:
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    model = AutoModelForCausalLM.from_pretrained(model_dir)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    tokenizer.padding_side = "left"
    dataset = Dataset.from_dict({"prompt": prompts() * 4})

    def e_fraction(prompts: list[str], completions: list[str], **kwargs: Any) -> list[float]:
        return reward_e(completions)

    args = GRPOConfig(
        output_dir=out_dir,
        use_cpu=True,
        bf16=False,
        report_to="none",
        max_steps=setting.steps + 1,
        per_device_train_batch_size=setting.batch,
        num_generations=setting.num_generations,
        max_completion_length=setting.max_completion_length,
        learning_rate=setting.learning_rate,
        lr_scheduler_type="constant",
        beta=beta,
        loss_type="dapo",
        temperature=1.0,
        disable_dropout=True,
        logging_steps=1,
        save_strategy="no",
        seed=setting.seed,
        disable_tqdm=True,
    )
    times: list[float] = []

    class Clock(TrainerCallback):
        def on_step_begin(self, *a: Any, **k: Any) -> None:
            self.t = time.perf_counter()

        def on_step_end(self, *a: Any, **k: Any) -> None:
            times.append(time.perf_counter() - self.t)

    trainer = GRPOTrainer(model=model, reward_funcs=[e_fraction], args=args, train_dataset=dataset, processing_class=tokenizer, callbacks=[Clock()])
    trainer.train()
    logs = [h for h in trainer.state.log_history if "reward" in h]
    measured = logs[1:]
    return {
        "seconds": sum(times[1:]),
        "completions": setting.batch * len(measured),
        "tokens": sum(h["completions/mean_length"] * setting.batch for h in measured),
        "reward_last": logs[-1]["reward"],
        "reward_mean": statistics.fmean(h["reward"] for h in measured),
        "peak_rss_mb": peak_rss_mb(),
    }


def worker_floor(setting: Setting, beta: float, model_dir: str, out_dir: str) -> dict[str, Any]:
    """Plain torch: the bare work of one GRPO step, no framework."""
    from safetensors.torch import load_file

    w = load_file(str(Path(model_dir) / "model.safetensors"))
    d, h, layers = setting.n_embd, setting.n_head, setting.n_layer
    hd = d // h
    wte = w["transformer.wte.weight"].requires_grad_()
    params = [wte] + [v.requires_grad_() for k, v in w.items() if k != "transformer.wte.weight"]

    def block(x: torch.Tensor, i: int, cache: tuple[torch.Tensor, torch.Tensor] | None, pos: int) -> torch.Tensor:
        p = f"transformer.h.{i}."
        a = torch.nn.functional.layer_norm(x, (d,), w[p + "ln_1.weight"], w[p + "ln_1.bias"])
        qkv = a @ w[p + "attn.c_attn.weight"] + w[p + "attn.c_attn.bias"]
        q, k, v = qkv.view(x.shape[0], x.shape[1], 3, h, hd).permute(2, 0, 3, 1, 4)
        if cache is None:
            y = torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True)
        else:
            kc, vc = cache
            kc[:, :, pos : pos + x.shape[1]] = k
            vc[:, :, pos : pos + x.shape[1]] = v
            end = pos + x.shape[1]
            y = torch.nn.functional.scaled_dot_product_attention(q, kc[:, :, :end], vc[:, :, :end], is_causal=x.shape[1] > 1)
        y = y.transpose(1, 2).reshape(x.shape) @ w[p + "attn.c_proj.weight"] + w[p + "attn.c_proj.bias"]
        x = x + y
        m = torch.nn.functional.layer_norm(x, (d,), w[p + "ln_2.weight"], w[p + "ln_2.bias"])
        m = torch.nn.functional.gelu(m @ w[p + "mlp.c_fc.weight"] + w[p + "mlp.c_fc.bias"])
        return x + m @ w[p + "mlp.c_proj.weight"] + w[p + "mlp.c_proj.bias"]

    def forward(ids: torch.Tensor, caches: list[Any] | None = None, pos: int = 0) -> torch.Tensor:
        x = wte[ids] + w["transformer.wpe.weight"][pos : pos + ids.shape[1]]
        for i in range(layers):
            x = block(x, i, None if caches is None else caches[i], pos)
        x = torch.nn.functional.layer_norm(x, (d,), w["transformer.ln_f.weight"], w["transformer.ln_f.bias"])
        return x @ wte.T

    b, p_len, t_len = setting.batch, 20, setting.max_completion_length
    gen = torch.Generator().manual_seed(0)
    prompt = torch.randint(3, wte.shape[0], (b, p_len), generator=gen)
    times = []
    for step in range(setting.steps + 1):
        start = time.perf_counter()
        with torch.inference_mode():
            caches = [(torch.empty(b, h, p_len + t_len, hd), torch.empty(b, h, p_len + t_len, hd)) for _ in range(layers)]
            logits = forward(prompt, caches, 0)[:, -1]
            out = []
            for t in range(t_len):
                tok = torch.multinomial(torch.softmax(logits, -1), 1, generator=gen)
                out.append(tok)
                if t < t_len - 1:
                    logits = forward(tok, caches, p_len + t)[:, -1]
            completion = torch.cat(out, 1)
        completion = completion.clone()  # leave inference mode before autograd sees it
        ids = torch.cat([prompt, completion], 1)
        if beta > 0:
            with torch.inference_mode():
                forward(ids)
        logits = forward(ids)[:, p_len - 1 : -1]
        logp = torch.log_softmax(logits, -1).gather(-1, completion.unsqueeze(-1)).squeeze(-1)
        (-logp.mean()).backward()
        for prm in params:
            prm.grad = None
        if step > 0:
            times.append(time.perf_counter() - start)
    return {"seconds": sum(times), "steps": len(times), "tokens_per_step": b * t_len, "peak_rss_mb": peak_rss_mb()}


# ------------------------------------------------------------------------- time to target


class _Reached(Exception):
    pass


def worker_target_rl4gen(setting: Setting, budget: float, model_dir: str, out_dir: str) -> dict[str, Any]:
    """rl4gen with the arithmetic task's defaults; evaluation time is not counted."""
    from rl4gen.cli import load_train_config
    from rl4gen.trainer import Trainer

    config = load_train_config(
        None, ["task=arithmetic", f"output_dir={out_dir}", "eval_steps=10", "eval_size=512", "save_steps=1000000", "sample_steps=1000000", "max_steps=2000"]
    )
    clock = {"train": 0.0, "curve": []}

    def watch(trainer: Trainer, step: int, metrics: dict[str, float]) -> None:
        clock["train"] += metrics["step_time"] - metrics.get("eval_time", 0.0)
        if "eval/accuracy" in metrics:
            clock["curve"].append((round(clock["train"], 2), metrics["eval/accuracy"]))
            if metrics["eval/accuracy"] >= TARGET:
                raise _Reached
        if clock["train"] > budget:
            raise _Reached

    trainer = Trainer(config, callbacks=[watch], show_progress=False, log=lambda m: None)
    try:
        trainer.train()
    except _Reached:
        pass
    return _target_result(clock, budget)


def worker_target_trl(setting: Setting, budget: float, model_dir: str, out_dir: str) -> dict[str, Any]:
    """TRL's GRPOTrainer with its documented defaults (only use_cpu/bf16/report_to set, and the
    task's completion length), on the same prior, problems and reward."""
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    from rl4gen.policies.causal_lm import CausalLMPolicy
    from rl4gen.tasks import get_task

    task = get_task("arithmetic")
    prior = task.pretrain(log=lambda m: None)
    model = AutoModelForCausalLM.from_pretrained(str(prior))
    tokenizer = AutoTokenizer.from_pretrained(str(prior))
    tokenizer.padding_side = "left"
    problems = task.train_contexts(torch.Generator().manual_seed(0), 50000)
    dataset = Dataset.from_dict({"prompt": [p["prompt"] for p in problems], "answer": [p["answer"] for p in problems]})

    def exact_answer(prompts: list[str], completions: list[str], answer: list[str], **kwargs: Any) -> list[float]:
        return [float(c.strip() == a) for c, a in zip(completions, answer)]

    args = GRPOConfig(
        output_dir=out_dir,
        use_cpu=True,
        bf16=False,
        report_to="none",
        max_completion_length=task.max_answer_length(),
        max_steps=100000,
        save_strategy="no",
        disable_tqdm=True,
    )
    clock: dict[str, Any] = {"train": 0.0, "curve": []}
    evaluator = CausalLMPolicy(model, tokenizer, GenerationConfig(max_completion_length=task.max_answer_length()))

    class Watch(TrainerCallback):
        def on_step_begin(self, args: Any, state: Any, control: Any, **k: Any) -> None:
            self.t = time.perf_counter()

        def on_step_end(self, args: Any, state: Any, control: Any, **k: Any) -> None:
            clock["train"] += time.perf_counter() - self.t
            if state.global_step % 10 == 0:
                accuracy = task.evaluate(evaluator, 512)["accuracy"]
                model.train()
                clock["curve"].append((round(clock["train"], 2), accuracy))
                if accuracy >= TARGET:
                    control.should_training_stop = True
            if clock["train"] > budget:
                control.should_training_stop = True

    trainer = GRPOTrainer(model=model, reward_funcs=[exact_answer], args=args, train_dataset=dataset, processing_class=tokenizer, callbacks=[Watch()])
    trainer.train()
    return _target_result(clock, budget)


def _target_result(clock: dict[str, Any], budget: float) -> dict[str, Any]:
    reached = [t for t, acc in clock["curve"] if acc >= TARGET]
    return {
        "seconds_to_target": reached[0] if reached else None,
        "best_accuracy": max((acc for _, acc in clock["curve"]), default=0.0),
        "train_seconds": clock["train"],
        "budget": budget,
        "curve": clock["curve"],
        "peak_rss_mb": peak_rss_mb(),
    }


TARGET = 0.9
WORKERS = {
    "rl4gen": worker_rl4gen,
    "trl": worker_trl,
    "floor": worker_floor,
    "target-rl4gen": worker_target_rl4gen,
    "target-trl": worker_target_trl,
}


# ------------------------------------------------------------------------------------ driver


def run_worker(kind: str, setting: Setting, beta: float, model_dir: Path, out_dir: Path) -> dict[str, Any]:
    """Run one worker in its own process (``beta`` doubles as the time budget for target workers)."""
    cmd = [sys.executable, __file__, "--worker", kind, "--beta", str(beta), "--model-dir", str(model_dir), "--out-dir", str(out_dir), "--setting", json.dumps(asdict(setting))]
    env = {**os.environ, "TOKENIZERS_PARALLELISM": "false", "TRANSFORMERS_VERBOSITY": "error"}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"{kind} worker failed:\n{proc.stderr[-4000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def summarize(runs: list[dict[str, Any]], batch: int) -> dict[str, float]:
    seconds = sum(r["seconds"] for r in runs)
    completions = sum(r["completions"] for r in runs)
    return {
        "completions_per_s": completions / seconds,
        "tokens_per_s": sum(r["tokens"] for r in runs) / seconds,
        "seconds_per_step": seconds / (completions / batch),
        "peak_rss_mb": max(r["peak_rss_mb"] for r in runs),
        "reward_last": statistics.fmean(r["reward_last"] for r in runs),
        "reward_mean": statistics.fmean(r["reward_mean"] for r in runs),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tiny", action="store_true", help="a seconds-long smoke run")
    parser.add_argument("--steps", type=int, help="measured steps per run")
    parser.add_argument("--rounds", type=int, default=3, help="alternations of rl4gen and TRL per beta")
    parser.add_argument("--betas", default="0,0.04")
    parser.add_argument("--json", default="benchmarks/results/grpo_vs_trl.json")
    parser.add_argument("--target-budget", type=float, default=600.0, help="seconds of training per framework for time to 90%% (0 skips)")
    parser.add_argument("--worker", choices=sorted(WORKERS))
    parser.add_argument("--beta", type=float, default=0.0)
    parser.add_argument("--model-dir")
    parser.add_argument("--out-dir")
    parser.add_argument("--setting")
    args = parser.parse_args()

    if args.worker:
        setting = Setting(**json.loads(args.setting))
        result = WORKERS[args.worker](setting, args.beta, args.model_dir, args.out_dir)
        print(json.dumps(result))
        return

    setting = TINY if args.tiny else Setting()
    if args.steps:
        setting.steps = args.steps
    rounds = 1 if args.tiny else args.rounds
    betas = [float(b) for b in args.betas.split(",")]
    report: dict[str, Any] = {"setting": asdict(setting), "betas": {}}
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = Path(tmp) / "model"
        build_model(setting, model_dir)
        for beta in betas:
            runs: dict[str, list[dict[str, Any]]] = {"rl4gen": [], "trl": [], "floor": []}
            for r in range(rounds):
                order = ["rl4gen", "trl", "floor"] if r % 2 == 0 else ["trl", "rl4gen", "floor"]
                for kind in order:
                    runs[kind].append(run_worker(kind, setting, beta, model_dir, Path(tmp) / f"{kind}-{beta}-{r}"))
                    print(f"  beta={beta:g} round {r + 1}/{rounds} {kind}: {runs[kind][-1]}", file=sys.stderr)
            ours, theirs = summarize(runs["rl4gen"], setting.batch), summarize(runs["trl"], setting.batch)
            floor_step = sum(f["seconds"] for f in runs["floor"]) / sum(f["steps"] for f in runs["floor"])
            ours_step = ours["seconds_per_step"]
            report["betas"][str(beta)] = {
                "rl4gen": ours,
                "trl": theirs,
                "floor_seconds_per_step": floor_step,
                "throughput_ratio": ours["completions_per_s"] / theirs["completions_per_s"],
                "tokens_ratio": ours["tokens_per_s"] / theirs["tokens_per_s"],
                "step_time_over_floor": ours_step / floor_step,
                "peak_rss_ratio": ours["peak_rss_mb"] / theirs["peak_rss_mb"],
            }
    details, summary = [], []
    for beta, r in report["betas"].items():
        b = f"{float(beta):g}"
        for name in ("rl4gen", "trl"):
            s = r[name]
            details.append(
                f"{name:6s} (beta={b}): {s['completions_per_s']:.1f} completions/s, {s['tokens_per_s']:.0f} tokens/s, "
                f"{s['seconds_per_step']:.3f} s/step, peak RSS {s['peak_rss_mb']:.0f} MB, mean reward {s['reward_mean']:.4f}"
            )
        details.append(f"floor  (beta={b}): {r['floor_seconds_per_step']:.3f} s/step")
        summary.append(f"throughput rl4gen/TRL (beta={b}): {r['throughput_ratio']:.2f}x")
        summary.append(f"tokens/s rl4gen/TRL (beta={b}): {r['tokens_ratio']:.2f}x")
        summary.append(f"step time / floor (beta={b}): {r['step_time_over_floor']:.2f}x")
        summary.append(f"peak RSS rl4gen/TRL (beta={b}): {r['peak_rss_ratio']:.2f}x")
    if args.target_budget > 0 and not args.tiny:
        with tempfile.TemporaryDirectory() as tmp:
            target = {
                kind: run_worker(f"target-{kind}", setting, args.target_budget, Path(tmp), Path(tmp) / kind)
                for kind in ("rl4gen", "trl")
            }
        report["time_to_target"] = target
        for kind, r in target.items():
            when = f"{r['seconds_to_target']:.0f} s" if r["seconds_to_target"] is not None else f"not within {r['budget']:.0f} s"
            details.append(f"{kind:6s} time to 90% held-out arithmetic: {when} of training (best {100 * r['best_accuracy']:.1f}%)")
        ours_t, theirs_t = target["rl4gen"]["seconds_to_target"], target["trl"]["seconds_to_target"]
        if ours_t is not None and theirs_t is not None:
            summary.append(f"time to 90% rl4gen/TRL: {ours_t / theirs_t:.2f}x")
            report["time_to_target_ratio"] = ours_t / theirs_t
        elif ours_t is not None:
            summary.append(f"time to 90% rl4gen/TRL: < {ours_t / args.target_budget:.2f}x (TRL did not reach 90% within {args.target_budget:.0f} s)")
            report["time_to_target_ratio_upper_bound"] = ours_t / args.target_budget
        else:
            summary.append("time to 90% rl4gen/TRL: n/a (rl4gen did not reach 90% within the budget)")
    report["summary"] = summary
    lines = [*details, "", *summary]
    print("\n".join(lines))
    out = Path(args.json)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2))
    print(f"written: {out}")


if __name__ == "__main__":
    main()
