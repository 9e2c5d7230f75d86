"""Shared prompts and skipped padding on vs off, alternating in one process: the ratios.

    python benchmarks/shared_prompt.py            # both settings, ~2 minutes on one thread
    python benchmarks/shared_prompt.py --tiny     # a seconds-long smoke run (used by the tests)
    python benchmarks/shared_prompt.py --train-steps 12   # also whole Trainer runs, ~6 more minutes

In GRPO/RLOO the rows of a group share their prompt; ``CausalLMPolicy.share_prompts`` (on by
default) makes the fast GPT-2 path compute each distinct prompt once in the training forward, the
reference forward and the sampling prefill, and ``CausalLMPolicy.skip_padding`` (on by default)
lets the scoring forwards skip most padding after each row's end. This script times the same
operations on the same rollout in three modes — ``off`` (both off: the full forward), ``shared``
(prompts shared only) and ``on`` (both) — rotating the order every repetition (so machine drift
hits all alike), and prints each mode's speed-up over ``off`` (> 1 is faster) from the medians.
Each figure is taken by two clocks: the process's CPU time, which a loaded machine barely
disturbs on one thread, and the wall clock beside it.

Settings: ``grpo_vs_trl`` is the GRPO-vs-TRL benchmark's shape (GPT-2 with 4 layers, 256 wide,
2 prompts x 8 generations, Shakespeare line starts of <= 24 characters, 64 completion tokens);
``arithmetic`` is the arithmetic recipe's (2 layers, 128 wide, 64 prompts x 8, 8-token prompts,
<= 5 completion tokens). Weights are random (timing does not depend on them); the rollout is
sampled once and reused.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from rl4gen.config import GenerationConfig
from rl4gen.policies.causal_lm import CausalLMPolicy


@dataclass
class Shape:
    name: str
    n_layer: int
    n_embd: int
    n_head: int
    prompts: int
    num_generations: int
    max_completion_length: int


SHAPES = [
    Shape("grpo_vs_trl", n_layer=4, n_embd=256, n_head=4, prompts=2, num_generations=8, max_completion_length=64),
    Shape("arithmetic", n_layer=2, n_embd=128, n_head=4, prompts=64, num_generations=8, max_completion_length=5),
]
TINY = [Shape("tiny", n_layer=1, n_embd=32, n_head=2, prompts=2, num_generations=4, max_completion_length=8)]


def build_policy(shape: Shape) -> tuple[CausalLMPolicy, list[str]]:
    """A random-weight policy over the shape's alphabet and ``shape.prompts`` distinct prompts."""
    from rl4gen import quiet_transformers
    from rl4gen.models.char_gpt import build_char_tokenizer, build_tiny_gpt

    quiet_transformers()
    if shape.name == "arithmetic":
        from rl4gen.tasks.arithmetic import ALPHABET, ArithmeticTask

        contexts = [c["prompt"] for c in ArithmeticTask().train_contexts(torch.Generator().manual_seed(0), shape.prompts)]
    else:
        from rl4gen.tasks.shakespeare import ALPHABET, ShakespeareTask

        contexts = [c["prompt"][:24] for c in ShakespeareTask().eval_contexts(shape.prompts)]
    tokenizer = build_char_tokenizer(ALPHABET)
    torch.manual_seed(0)
    model = build_tiny_gpt(len(tokenizer), n_positions=128, n_embd=shape.n_embd, n_layer=shape.n_layer, n_head=shape.n_head)
    generation = GenerationConfig(temperature=1.0, max_completion_length=shape.max_completion_length)
    return CausalLMPolicy(model, tokenizer, generation, use_reference=True), contexts


def operations(policy: CausalLMPolicy, contexts: list[str], shape: Shape) -> dict[str, Callable[[], Any]]:
    """The timed operations, all on one rollout sampled up front."""
    rollout = policy.sample(contexts, shape.num_generations, generator=torch.Generator().manual_seed(0))

    def train() -> None:  # the update's forward + backward (GRPO's loss reduced to its core)
        logp = policy.log_probs(rollout)
        (-(logp * rollout.mask).sum() / rollout.mask.sum()).backward()
        for p in policy.model.parameters():
            p.grad = None

    return {
        "train forward+backward": train,
        "reference forward": lambda: policy.ref_log_probs(rollout),
        "sampling": lambda: policy.sample(contexts, shape.num_generations, generator=torch.Generator().manual_seed(1)),
    }


#: What each side runs: (share_prompts, skip_padding).
MODES = {"off": (False, False), "shared": (True, False), "on": (True, True)}


def measure(policy: CausalLMPolicy, op: Callable[[], Any], repeats: int) -> dict[str, dict[str, float]]:
    """Median CPU and wall seconds of ``op`` in each of :data:`MODES`, alternating (rotating
    which goes first) every repetition; one untimed warm-up of each first. Ratios are off / mode."""
    times: dict[str, dict[str, list[float]]] = {m: {"cpu": [], "wall": []} for m in MODES}
    names = list(MODES)
    for name in names:
        policy.share_prompts, policy.skip_padding = MODES[name]
        op()
    for r in range(repeats):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            policy.share_prompts, policy.skip_padding = MODES[name]
            c0, w0 = time.process_time(), time.perf_counter()
            op()
            times[name]["cpu"].append(time.process_time() - c0)
            times[name]["wall"].append(time.perf_counter() - w0)
    policy.share_prompts, policy.skip_padding = MODES["on"]
    med = {m: {k: statistics.median(v) for k, v in t.items()} for m, t in times.items()}
    ratios = {f"off/{m}": {k: med["off"][k] / med[m][k] for k in ("cpu", "wall")} for m in names[1:]}
    return {**med, **ratios}


def train_config(setting: str, steps: int, out_dir: Path, beta: float) -> tuple[Any, Any]:
    """The config (and reward, or None for the recipe's) of a short ``Trainer`` run: the
    arithmetic recipe, or the GRPO-vs-TRL benchmark's rl4gen run (model built in ``out_dir``)."""
    from rl4gen.cli import load_train_config

    # No evaluation, samples or checkpoints inside the timed steps.
    common: dict[str, Any] = {"max_steps": steps, "eval_steps": 10**6, "save_steps": 10**6, "sample_steps": 10**6, "output_dir": str(out_dir)}
    if setting == "arithmetic":
        overrides = ["task=arithmetic", f"algorithm.beta={beta}", *(f"{k}={v}" for k, v in common.items())]
        return load_train_config(None, overrides), None
    import grpo_vs_trl  # the sibling script: same model, prompts and reward

    from rl4gen.config import validate_config
    from rl4gen.rewards import CombinedReward, FunctionReward

    bench = grpo_vs_trl.Setting()
    if not (out_dir / "model").is_dir():
        grpo_vs_trl.build_model(bench, out_dir / "model")
    config = validate_config(
        {
            "task": "prompts",
            "task_args": {"prompts": grpo_vs_trl.prompts()},
            "model": {"path": str(out_dir / "model")},
            "generation": {"temperature": 1.0, "max_completion_length": bench.max_completion_length},
            "algorithm": {"name": "grpo", "num_generations": bench.num_generations, "beta": beta, "loss_type": "dapo"},
            "prompts_per_step": bench.prompts_per_step,
            "learning_rate": bench.learning_rate,
            "lr_scheduler_type": "constant",
            "warmup_steps": 0,
            **common,
        }
    )
    reward = CombinedReward([FunctionReward(lambda s, c, **k: grpo_vs_trl.reward_e(list(s)), name="e_fraction")])
    return config, reward


def end_to_end(setting: str, steps: int, beta: float, out_dir: Path) -> dict[str, Any]:
    """Whole ``Trainer`` runs with both switches on and both off, alternating on, off, off, on:
    the median step time of each (warm-up step left out) and whether the reward histories match."""
    from rl4gen.trainer import Trainer

    times: dict[str, list[float]] = {"on": [], "off": []}
    rewards: dict[str, list[list[float]]] = {"on": [], "off": []}
    for mode in ("on", "off", "off", "on"):
        config, reward = train_config(setting, steps, out_dir, beta)
        trainer = Trainer(config, rewards=reward, show_progress=False, log=lambda m: None)
        trainer.policy.share_prompts, trainer.policy.skip_padding = MODES[mode]
        history = trainer.train().history
        times[mode] += [h["step_time"] for h in history[1:]]
        rewards[mode].append([h["reward"] for h in history])
    on, off = statistics.median(times["on"]), statistics.median(times["off"])
    return {"off_s": off, "on_s": on, "ratio": off / on, "identical_rewards": rewards["on"][0] == rewards["off"][0]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tiny", action="store_true", help="a seconds-long smoke run")
    parser.add_argument("--repeats", type=int, default=30, help="timed repetitions of each side")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    parser.add_argument("--shapes", default="grpo_vs_trl,arithmetic")
    parser.add_argument("--json", help="also write the figures here")
    parser.add_argument(
        "--train-steps", type=int, default=0,
        help="also time whole Trainer runs of this many steps (arithmetic recipe, GRPO-vs-TRL setting at beta 0 and 0.04)",
    )
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    shapes = TINY if args.tiny else [s for s in SHAPES if s.name in args.shapes.split(",")]
    repeats = 3 if args.tiny else args.repeats
    report: dict[str, Any] = {"threads": args.threads, "repeats": repeats, "shapes": {}}
    lines = []
    for shape in shapes:
        policy, contexts = build_policy(shape)
        results = {name: measure(policy, op, repeats) for name, op in operations(policy, contexts, shape).items()}
        # A GRPO step is about sampling + the update's forward/backward (+ the reference forward
        # when beta > 0); the estimate sums the medians (reward and optimizer step left out).
        for beta, parts in (("0", ["sampling", "train forward+backward"]), ("0.04", list(results))):
            results[f"estimated step (beta={beta})"] = {
                f"off/{m}": {k: sum(results[p]["off"][k] for p in parts) / sum(results[p][m][k] for p in parts) for k in ("cpu", "wall")}
                for m in list(MODES)[1:]
            }
        report["shapes"][shape.name] = {"shape": asdict(shape), "results": results}
        for name, r in results.items():
            figures = ", ".join(
                f"{m}: {r['off/' + m]['cpu']:.2f}x CPU [{r['off/' + m]['wall']:.2f}x wall]" for m in list(MODES)[1:]
            )
            times = " (" + ", ".join(f"{m} {r[m]['cpu'] * 1e3:.1f}" for m in MODES) + " ms CPU)" if "off" in r else ""
            lines.append(f"{shape.name}: {name} speed-up over off, {figures}{times}")
    if args.train_steps:
        report["end_to_end"] = {}
        with tempfile.TemporaryDirectory() as tmp:
            for setting, kl_weight in (("arithmetic", 0.0), ("grpo_vs_trl", 0.0), ("grpo_vs_trl", 0.04)):
                run = end_to_end(setting, args.train_steps, kl_weight, Path(tmp))
                report["end_to_end"][f"{setting} beta={kl_weight:g}"] = run
                lines.append(
                    f"{setting} (beta={kl_weight:g}), Trainer step, wall clock: off {run['off_s']:.3f} s, "
                    f"on {run['on_s']:.3f} s, {run['ratio']:.2f}x; reward history identical: {run['identical_rewards']}"
                )
    print("\n".join(lines))
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
