"""Short training runs: parameters change, metrics are finite and well-formed, the run folder is
complete, rewards rise where they should, resume reproduces the uninterrupted run, and broken
rewards or losses are caught."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml

from rl4gen.cli import load_train_config
from rl4gen.config import validate_config
from rl4gen.rewards.base import CombinedReward, FunctionReward, RewardError
from rl4gen.trainer import Trainer, TrainingError


def tiny_config(model_dir: Path, out: Path, *sets: str) -> Any:
    base = [
        "task=arithmetic",
        f"model.path={model_dir}",
        f"output_dir={out}",
        "run_name=run",
        "max_steps=3",
        "prompts_per_step=4",
        "eval_size=8",
        "eval_steps=2",
        "learning_rate=1e-3",
        "warmup_steps=0",
    ]
    return load_train_config(None, [*base, *sets])


class Interrupt(Exception):
    """Stands for a crash or Ctrl-C in the middle of a run."""


def interrupt_at(step: int, config: Any, rewards: CombinedReward) -> None:
    """Train ``config`` and stop abruptly right after ``step`` (its checkpoint, if due, is written)."""

    def stop(trainer: Trainer, done: int, metrics: dict[str, float]) -> None:
        if done == step:
            raise Interrupt

    with pytest.raises(Interrupt):
        Trainer(config, rewards=rewards, callbacks=[stop], show_progress=False).train()


def params_of(trainer: Trainer) -> list[torch.Tensor]:
    return [p.detach().clone() for p in trainer.policy.trainable_parameters()]


STYLE_KEYS = [
    "reward",
    "reward_std",
    "rewards/exact_answer/mean",
    "rewards/exact_answer/std",
    "frac_reward_zero_std",
    "entropy",
    "clip_ratio/region_mean",
    "completions/mean_length",
    "loss",
    "grad_norm",
    "learning_rate",
    "step_time",
    "num_tokens",
]


@pytest.mark.parametrize(
    "algo",
    [
        ["algorithm.name=grpo", "algorithm.loss_type=dapo", "algorithm.num_iterations=2"],
        ["algorithm.name=grpo", "algorithm.beta=0.1", "algorithm.scale_rewards=batch"],
        ["algorithm.name=rloo", "algorithm.beta=0.05", "gradient_accumulation_steps=2"],
        ["algorithm.name=reinforce", "algorithm.num_generations=1", "prompts_per_step=16"],
    ],
    ids=["grpo-dapo-2iter", "grpo-kl", "rloo-kl-accum", "reinforce"],
)
def test_short_run_changes_parameters_and_logs_finite_metrics(tiny_model_dir: Path, tmp_path: Path, algo: list[str]) -> None:
    # A reward that always varies within a group, so every step carries a gradient.
    reward = CombinedReward([FunctionReward(lambda s, c, **k: [float(len(x)) for x in s], name="exact_answer")])
    config = tiny_config(tiny_model_dir, tmp_path, *algo)
    trainer = Trainer(config, rewards=reward, show_progress=False)
    before = params_of(trainer)
    result = trainer.train()
    after = params_of(trainer)
    assert result.step == 3
    changed = [not torch.equal(b, a) for b, a in zip(before, after)]
    assert all(changed), f"{changed.count(False)} of {len(changed)} parameter tensors did not change"

    records = [json.loads(line) for line in (result.run_dir / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in records if r["step"] > 0]
    assert [r["step"] for r in steps] == [1, 2, 3]
    for r in steps:
        keys = STYLE_KEYS if config.algorithm.num_generations > 1 else [k for k in STYLE_KEYS if k != "frac_reward_zero_std"]
        if config.algorithm.name == "reinforce":
            keys = [k for k in keys if not k.startswith("clip_ratio")]
        for key in keys:
            assert key in r and r[key] is not None and math.isfinite(r[key]), key
        assert ("kl" in r) == (config.algorithm.beta > 0)
    assert steps[-1]["num_tokens"] > steps[0]["num_tokens"] > 0
    assert "eval/accuracy" in records[0] and "eval/accuracy" in steps[-1]


def test_run_folder_contents(tiny_model_dir: Path, tmp_path: Path) -> None:
    config = tiny_config(tiny_model_dir, tmp_path, "save_steps=2", "sample_steps=2")
    result = Trainer(config, show_progress=False).train()
    run = result.run_dir
    assert validate_config(yaml.safe_load((run / "config.yaml").read_text())) == config
    assert list((run / "tensorboard").glob("events.out.tfevents.*"))
    samples = sorted((run / "samples").glob("step_*.jsonl"))
    assert [p.name for p in samples] == ["step_000001.jsonl", "step_000002.jsonl", "step_000003.jsonl"]
    row = json.loads(samples[0].read_text().splitlines()[0])
    assert set(row) >= {"prompt", "completion", "reward", "rewards/exact_answer"}
    checkpoints = sorted(p.name for p in (run / "checkpoints").iterdir())
    assert checkpoints == ["step_2", "step_3"]
    ck = run / "checkpoints" / "step_3"
    for name in ("model/model.safetensors", "model/tokenizer.json", "optimizer.pt", "scheduler.pt", "rng_state.pt", "trainer_state.json", "checksums.json"):
        assert (ck / name).is_file(), name
    state = json.loads((ck / "trainer_state.json").read_text())
    assert state["step"] == 3 and state["data_position"] == 3 * 4
    assert (run / "model" / "model.safetensors").is_file()


@pytest.mark.parametrize("algo", ["grpo", "reinforce"])
def test_resume_reproduces_uninterrupted_run(tiny_model_dir: Path, tmp_path: Path, algo: str) -> None:
    sets = [f"algorithm.name={algo}", "max_steps=6", "save_steps=2", "eval_steps=100", "lr_scheduler_type=cosine", "warmup_steps=2"]
    if algo == "reinforce":
        sets.append("algorithm.num_generations=2")
    reward = lambda: CombinedReward([FunctionReward(lambda s, c, **k: [float(x.count("1")) for x in s], name="ones")])

    full = Trainer(tiny_config(tiny_model_dir, tmp_path / "full", *sets), rewards=reward(), show_progress=False)
    full.train()

    config = tiny_config(tiny_model_dir, tmp_path / "cut", *sets)
    interrupt_at(3, config, reward())
    run_dir = tmp_path / "cut" / "run"
    assert sorted(p.name for p in (run_dir / "checkpoints").iterdir()) == ["step_2"]
    resumed = Trainer(config, run_dir=run_dir, resume=True, rewards=reward(), show_progress=False)
    assert resumed.step == 2
    resumed.train()

    for a, b in zip(params_of(full), params_of(resumed)):
        assert torch.equal(a, b)
    assert resumed.algorithm.state_dict() == full.algorithm.state_dict()
    steps = [json.loads(line)["step"] for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert steps == [0, 1, 2, 3, 4, 5, 6]  # the interrupted step 3 was dropped and redone once


def test_corrupt_checkpoint_is_refused(tiny_model_dir: Path, tmp_path: Path) -> None:
    from rl4gen.checkpoint import CheckpointError

    config = tiny_config(tiny_model_dir, tmp_path, "save_steps=1", "max_steps=2")
    result = Trainer(config, show_progress=False).train()
    opt = result.run_dir / "checkpoints" / "step_2" / "optimizer.pt"
    opt.write_bytes(opt.read_bytes()[:-10])
    with pytest.raises(CheckpointError, match="corrupt optimizer.pt"):
        Trainer(config, run_dir=result.run_dir, resume=True, show_progress=False)


def test_non_finite_reward_stops_the_run_naming_the_reward(tiny_model_dir: Path, tmp_path: Path) -> None:
    bad = FunctionReward(lambda s, c, **k: [float("nan")] * len(s), name="broken_judge")
    good = FunctionReward(lambda s, c, **k: [1.0] * len(s), name="fine")
    trainer = Trainer(tiny_config(tiny_model_dir, tmp_path), rewards=CombinedReward([good, bad]), show_progress=False)
    with pytest.raises(RewardError, match="broken_judge"):
        trainer.train()


def test_wrong_reward_count_stops_the_run(tiny_model_dir: Path, tmp_path: Path) -> None:
    short = FunctionReward(lambda s, c, **k: [1.0], name="short_list")
    trainer = Trainer(tiny_config(tiny_model_dir, tmp_path), rewards=CombinedReward([short]), show_progress=False)
    with pytest.raises(RewardError, match="short_list.*1 values for 32 samples"):
        trainer.train()


def test_non_finite_loss_is_skipped_then_diagnosed(tiny_model_dir: Path, tmp_path: Path) -> None:
    reward = CombinedReward([FunctionReward(lambda s, c, **k: [float(len(x)) for x in s], name="len")])
    trainer = Trainer(tiny_config(tiny_model_dir, tmp_path, "max_steps=4", "max_skipped_steps=2"), rewards=reward, show_progress=False)
    real_loss = trainer.algorithm.loss
    calls = {"n": 0}

    def poisoned(logprobs: torch.Tensor, batch: Any, totals: Any) -> Any:
        out = real_loss(logprobs, batch, totals)
        calls["n"] += 1
        if calls["n"] == 2:  # step 2 only
            out.loss = out.loss * float("nan")
        return out

    trainer.algorithm.loss = poisoned  # type: ignore[method-assign]
    snapshots: list[list[torch.Tensor]] = []
    trainer.callbacks.append(lambda t, step, m: snapshots.append(params_of(t)))
    result = trainer.train()
    assert result.history[1]["skipped_steps"] == 1.0
    assert all(torch.equal(a, b) for a, b in zip(snapshots[0], snapshots[1])), "a skipped step changed weights"
    assert not any(torch.equal(a, b) for a, b in zip(snapshots[1], snapshots[2]))
    assert all(torch.isfinite(p).all() for p in params_of(trainer))

    always_nan = Trainer(tiny_config(tiny_model_dir, tmp_path / "b", "max_steps=4", "max_skipped_steps=2"), rewards=reward, show_progress=False)
    inner = always_nan.algorithm.loss

    def nan_loss(logprobs: torch.Tensor, batch: Any, totals: Any) -> Any:
        out = inner(logprobs, batch, totals)
        out.loss = out.loss * float("nan")
        return out

    always_nan.algorithm.loss = nan_loss  # type: ignore[method-assign]
    with pytest.raises(TrainingError, match="2 consecutive updates had a non-finite"):
        always_nan.train()


@pytest.mark.slow
def test_grpo_raises_reward_and_heldout_accuracy_on_arithmetic(arithmetic_prior: Path, tmp_path: Path) -> None:
    """The real task: from the pretrained prior, 60 GRPO steps with the task's recipe."""
    config = load_train_config(None, ["task=arithmetic", f"output_dir={tmp_path}", "max_steps=60", "eval_steps=60", "eval_size=256", "save_steps=60"])
    trainer = Trainer(config, show_progress=False)
    result = trainer.train()
    rewards = [h["reward"] for h in result.history]
    first, last = sum(rewards[:10]) / 10, sum(rewards[-10:]) / 10
    assert last > first + 0.05, f"reward did not rise: first 10 steps {first:.3f}, last 10 {last:.3f}"
    assert result.final_eval["accuracy"] > result.initial_eval["accuracy"] + 0.1, (result.initial_eval, result.final_eval)


def test_lora_run_trains_only_the_adapter_and_resumes(tiny_model_dir: Path, tmp_path: Path) -> None:
    """LoRA with a KL penalty: the reference is the base model (no copy), only adapter weights
    move, checkpoints hold the adapter, and resume reproduces the uninterrupted run."""
    reward = lambda: CombinedReward([FunctionReward(lambda s, c, **k: [float(len(x)) for x in s], name="len")])
    sets = ["model.lora.r=4", "model.lora.target_modules=[c_attn]", "algorithm.beta=0.1", "max_steps=4", "save_steps=2", "eval_steps=100"]
    full = Trainer(tiny_config(tiny_model_dir, tmp_path / "full", *sets), rewards=reward(), show_progress=False)
    assert full.policy.ref_model is None and full.policy.is_lora
    names = [n for n, p in full.policy.model.named_parameters() if p.requires_grad]
    assert names and all("lora_" in n for n in names)
    frozen = {n: p.detach().clone() for n, p in full.policy.model.named_parameters() if not p.requires_grad}
    before = params_of(full)
    result = full.train()
    assert all(not torch.equal(a, b) for a, b in zip(before, params_of(full)))
    assert all(torch.equal(frozen[n], p) for n, p in full.policy.model.named_parameters() if n in frozen)
    assert (result.run_dir / "checkpoints" / "step_4" / "model" / "adapter_model.safetensors").is_file()
    assert any("kl" in h and h["kl"] > 0 for h in result.history)

    config = tiny_config(tiny_model_dir, tmp_path / "cut", *sets)
    interrupt_at(3, config, reward())
    resumed = Trainer(config, run_dir=tmp_path / "cut" / "run", resume=True, rewards=reward(), show_progress=False)
    resumed.train()
    for a, b in zip(params_of(full), params_of(resumed)):
        assert torch.equal(a, b)


def test_runs_started_in_the_same_second_get_their_own_folders(tmp_path: Path) -> None:
    from rl4gen.trainer import new_run_dir

    cfg = validate_config({"task": "arithmetic", "output_dir": str(tmp_path)})
    first, second = new_run_dir(cfg), new_run_dir(cfg)
    assert first != second and first.is_dir() and second.is_dir()
    named = validate_config({"task": "arithmetic", "output_dir": str(tmp_path), "run_name": "mine"})
    assert new_run_dir(named) == tmp_path / "mine"
