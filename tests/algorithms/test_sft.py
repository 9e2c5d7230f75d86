"""SFT: the loss counts completion tokens only, micro-batches add up to the full batch, and a
short run lowers the completion loss and moves every weight (full and LoRA)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest
import torch
from accelerate.utils import set_seed
from typer.testing import CliRunner

from rl4gen.algorithms.sft import SFT, SFTConfig, completion_nll, encode_all, train_sft
from rl4gen.cli import app
from rl4gen.data import load_sft
from rl4gen.data.synthetic import arithmetic_records, write_jsonl
from rl4gen.offline import collate, load_offline_config
from rl4gen.policies.causal_lm import CausalLMPolicy
from rl4gen.tracking import read_metrics

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def sft_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_jsonl(arithmetic_records("sft", 32, seed=0), tmp_path_factory.mktemp("sft") / "sft.jsonl")


def config(tiny_model_dir: Path, sft_file: Path, tmp_path: Path, **overrides: Any) -> SFTConfig:
    data: dict[str, Any] = {
        "model": {"path": str(tiny_model_dir)},
        "data": {"train_file": str(sft_file), "eval_file": str(sft_file)},
        "output_dir": str(tmp_path),
        "run_name": "run",
        "per_device_train_batch_size": 8,
        "gradient_accumulation_steps": 2,
        "max_steps": 12,
        "learning_rate": 3e-3,
        "lr_scheduler_type": "constant",
    }
    data.update(overrides)
    return SFTConfig.model_validate(data)


def test_completion_nll_by_hand_and_blind_to_prompt_targets() -> None:
    # One row of 4 tokens: prompt [0, 1], completion [2, 3]. Targets that count: tokens 2 and 3,
    # predicted at positions 1 and 2. Uniform logits over 4 classes except where set below.
    ids = torch.tensor([[0, 1, 2, 3]])
    comp = torch.tensor([[0.0, 0.0, 1.0, 1.0]])
    logits = torch.zeros(1, 4, 4)
    logits[0, 1, 2] = math.log(3.0)  # p(token 2) = 3 / 6 = 0.5 at position 1
    nll, count, correct = completion_nll(logits, ids, comp)
    assert nll.item() == pytest.approx(-math.log(0.5) - math.log(0.25))
    assert count.item() == 2.0
    assert correct.item() == 1.0  # argmax right at position 1 only (position 2 is a tie -> token 0)
    garbage = logits.clone()
    garbage[0, 0] = torch.randn(4) * 10  # position 0 predicts prompt token 1: not a target
    garbage[0, 3] = torch.randn(4) * 10  # the last position predicts nothing
    other_prompt_labels = ids.clone()
    other_prompt_labels[0, 1] = 3  # change the prompt-only target
    assert completion_nll(garbage, ids, comp)[0].item() == pytest.approx(nll.item())
    assert completion_nll(logits, other_prompt_labels, comp)[0].item() == pytest.approx(nll.item())


def test_prompt_logits_get_no_gradient(tiny_model_dir: Path, sft_file: Path) -> None:
    policy = CausalLMPolicy.from_pretrained(tiny_model_dir)
    cfg = config(tiny_model_dir, sft_file, Path("."))
    examples = encode_all(load_sft(sft_file).rows[:4], policy.tokenizer, cfg)
    ids, attn, comp = collate(examples, policy.pad_token_id)
    logits = policy.model(input_ids=ids, attention_mask=attn).logits.detach().requires_grad_(True)
    completion_nll(logits, ids, comp)[0].backward()
    assert logits.grad is not None
    targets_counted = comp[:, 1:].bool()  # position t is scored where token t + 1 is a completion token
    per_position = logits.grad[:, :-1].abs().sum(-1)
    assert bool((per_position[~targets_counted] == 0).all())
    assert bool((per_position[targets_counted] > 0).all())


def test_micro_batches_add_up_to_the_full_batch(tiny_model_dir: Path, sft_file: Path) -> None:
    policy = CausalLMPolicy.from_pretrained(tiny_model_dir)
    cfg = config(tiny_model_dir, sft_file, Path("."))
    sft = SFT(policy, encode_all(load_sft(sft_file).rows, policy.tokenizer, cfg))
    step = list(range(12))
    with torch.no_grad():
        whole, m_whole = sft.loss(step, step)
        parts = [sft.loss(step[i : i + 5], step) for i in range(0, 12, 5)]
    assert sum(float(p[0]) for p in parts) == pytest.approx(float(whole), rel=1e-5)
    assert sum(p[1]["mean_token_accuracy"] for p in parts) == pytest.approx(m_whole["mean_token_accuracy"])


@pytest.mark.parametrize("lora", [False, True])
def test_training_lowers_completion_loss_and_moves_every_weight(
    tiny_model_dir: Path, sft_file: Path, tmp_path: Path, lora: bool
) -> None:
    model: dict[str, Any] = {"path": str(tiny_model_dir)}
    if lora:
        model["lora"] = {"r": 4}
    cfg = config(tiny_model_dir, sft_file, tmp_path, model=model, learning_rate=1e-2 if lora else 3e-3)
    set_seed(cfg.seed)  # the same fresh adapter as the run starts from
    start = CausalLMPolicy.from_pretrained(tiny_model_dir, lora=cfg.model.lora)
    result = train_sft(cfg, show_progress=False, log=lambda m: None)
    assert result.final_eval["eval/loss"] < (0.95 if lora else 0.85) * result.initial_eval["eval/loss"]
    history = [h for h in read_metrics(result.run_dir) if h["step"] > 0]
    assert len(history) == 12
    assert history[-1]["num_tokens"] > history[0]["num_tokens"] > 0
    trained = CausalLMPolicy.from_pretrained(result.run_dir / "model")
    before = dict(start.model.named_parameters())
    changed = {name: not torch.equal(p.detach(), before[name].detach()) for name, p in trained.model.named_parameters()}
    trainable = [n for n, p in start.model.named_parameters() if p.requires_grad]
    assert trainable and all(changed[n] for n in trainable), [n for n in trainable if not changed[n]]
    if lora:  # the base weights stay as they were
        assert not any(changed[n] for n in changed if "lora_" not in n)
    if lora:
        assert (result.run_dir / "model" / "adapter_config.json").is_file()
    assert json.loads((result.run_dir / "run.json").read_text())["command"] == "sft"


def test_cli_bad_line_and_shipped_recipe(tiny_model_dir: Path, tmp_path: Path) -> None:
    data = tmp_path / "sft.jsonl"
    data.write_text('{"prompt": "1+1=", "completion": "2"}\n{"prompt": "1+1=", "completion": 2}\n')
    recipe = tmp_path / "sft.yaml"
    recipe.write_text(f"model:\n  path: {tiny_model_dir}\ndata:\n  train_file: {data}\noutput_dir: {tmp_path / 'runs'}\n")
    result = CliRunner().invoke(app, ["sft", str(recipe)], env={"COLUMNS": "200"})
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {data}:2: field 'completion' must be a string")
    repo = Path(__file__).resolve().parents[2]
    cfg = load_offline_config(SFTConfig, str(repo / "configs" / "arithmetic-sft.yaml"), [])
    assert cfg.task == "arithmetic" and cfg.data.eval_file is not None


def test_multi_process_launch_is_refused_in_one_sentence(
    tiny_model_dir: Path, sft_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from rl4gen.config import ConfigError

    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(ConfigError, match="runs on one process"):
        train_sft(config(tiny_model_dir, sft_file, tmp_path), show_progress=False, log=lambda m: None)
