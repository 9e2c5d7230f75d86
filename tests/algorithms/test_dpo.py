"""DPO end to end on a tiny model: reference pass, training moves every weight and the margins,
LoRA keeps the base as reference, and the command line reports bad input in one sentence."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from typer.testing import CliRunner

from rl4gen.algorithms.dpo import DPO, DPOConfig, PairData, train_dpo
from rl4gen.cli import app
from rl4gen.data import load_preferences
from rl4gen.data.synthetic import arithmetic_records, write_jsonl
from rl4gen.offline import collate, encode_example, load_offline_config, sequence_logps
from rl4gen.policies.causal_lm import CausalLMPolicy
from rl4gen.tracking import read_metrics

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def pairs_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_jsonl(arithmetic_records("preferences", 32, seed=0), tmp_path_factory.mktemp("dpo") / "pairs.jsonl")


def config(tiny_model_dir: Path, pairs_file: Path, tmp_path: Path, **overrides: Any) -> DPOConfig:
    data: dict[str, Any] = {
        "model": {"path": str(tiny_model_dir)},
        "data": {"train_file": str(pairs_file), "eval_file": str(pairs_file)},
        "output_dir": str(tmp_path),
        "run_name": "run",
        "per_device_train_batch_size": 8,
        "gradient_accumulation_steps": 2,
        "max_steps": 10,
        "learning_rate": 3e-3,
        "lr_scheduler_type": "constant",
        "beta": 0.5,
    }
    data.update(overrides)
    return DPOConfig.model_validate(data)


def test_sequence_logps_cover_completion_tokens_only(tiny_model_dir: Path) -> None:
    policy = CausalLMPolicy.from_pretrained(tiny_model_dir)
    tok = policy.tokenizer
    a = encode_example(tok, "12+34=", "64", append_eos=True, max_length=None)
    b = encode_example(tok, "9=", "1", append_eos=True, max_length=None)
    assert a.completion_start == 6 and a.ids[-1] == tok.eos_token_id
    ids, attn, comp = collate([a, b], policy.pad_token_id)
    with torch.no_grad():
        got = sequence_logps(policy.model, ids, attn, comp)
        logits = policy.model(input_ids=torch.tensor([a.ids])).logits[0].log_softmax(-1)
    by_hand = sum(logits[t - 1, a.ids[t]].item() for t in range(6, len(a.ids)))  # 3 completion tokens
    assert got[0].item() == pytest.approx(by_hand, abs=1e-5)
    # A different prompt changes the context, not which tokens are counted: same count of terms.
    assert comp.sum(dim=1).tolist() == [3.0, 2.0]


def test_truncation_drops_prompt_from_the_left_first(tiny_model_dir: Path) -> None:
    tok = CausalLMPolicy.from_pretrained(tiny_model_dir).tokenizer
    e = encode_example(tok, "123456", "78", append_eos=True, max_length=5)
    assert len(e.ids) == 5 and e.completion_start == 2
    assert tok.decode(e.ids[:2]) == "56"


def test_reference_is_the_starting_model_and_first_loss_is_log_two(tiny_model_dir: Path, pairs_file: Path, tmp_path: Path) -> None:
    cfg = config(tiny_model_dir, pairs_file, tmp_path)
    policy = CausalLMPolicy.from_pretrained(tiny_model_dir)
    dpo = DPO(cfg, policy)
    data = PairData(load_preferences(pairs_file).rows, policy.tokenizer, cfg)
    dpo.compute_reference(data)
    loss, metrics = dpo.loss(data, list(range(8)), 8)
    assert loss.item() == pytest.approx(0.693147, abs=1e-5)
    assert metrics["rewards/margins"] == pytest.approx(0.0, abs=1e-6)
    assert metrics["logps/chosen"] == pytest.approx(float(data.ref_chosen[:8].mean()), abs=1e-5)


def test_lora_reference_is_the_base_model(tiny_model_dir: Path, pairs_file: Path, tmp_path: Path) -> None:
    cfg = config(tiny_model_dir, pairs_file, tmp_path, model={"path": str(tiny_model_dir), "lora": {"r": 4}})
    base = CausalLMPolicy.from_pretrained(tiny_model_dir)
    policy = CausalLMPolicy.from_pretrained(tiny_model_dir, lora=cfg.model.lora)
    with torch.no_grad():  # move the adapter away from zero so the policy differs from the base
        for name, p in policy.model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.5)
    pairs = load_preferences(pairs_file).rows[:4]
    lora_data, base_data = PairData(pairs, policy.tokenizer, cfg), PairData(pairs, base.tokenizer, cfg)
    DPO(cfg, policy).compute_reference(lora_data)
    DPO(cfg, base).compute_reference(base_data)
    assert torch.allclose(lora_data.ref_chosen, base_data.ref_chosen, atol=1e-5)
    with torch.no_grad():
        c, _ = DPO(cfg, policy).logps(policy.model, lora_data, [0, 1, 2, 3])
    assert not torch.allclose(c, lora_data.ref_chosen, atol=1e-3)


@pytest.mark.parametrize("loss_type", ["sigmoid", "ipo"])
def test_training_changes_every_parameter_and_raises_margins(
    tiny_model_dir: Path, pairs_file: Path, tmp_path: Path, loss_type: str
) -> None:
    cfg = config(tiny_model_dir, pairs_file, tmp_path, loss_type=loss_type)
    before = {k: v.clone() for k, v in CausalLMPolicy.from_pretrained(tiny_model_dir).model.state_dict().items()}
    result = train_dpo(cfg, show_progress=False, log=lambda m: None)
    after = CausalLMPolicy.from_pretrained(result.run_dir / "model").model
    for name, p in after.named_parameters():
        assert not torch.equal(p.detach(), before[name]), f"{name} did not change"
    history = read_metrics(result.run_dir)
    train = [h for h in history if "loss" in h and "rewards/margins" in h and h["step"] > 0]
    assert len(train) == 10
    for h in train:
        for key in ("loss", "rewards/chosen", "rewards/rejected", "rewards/accuracies", "rewards/margins", "logps/chosen", "logps/rejected", "grad_norm"):
            assert key in h and h[key] is not None
    assert train[0]["rewards/margins"] == pytest.approx(0.0, abs=1e-6)  # the policy starts as the reference
    early = sum(h["rewards/margins"] for h in train[1:4]) / 3
    late = sum(h["rewards/margins"] for h in train[-3:]) / 3
    assert late > 0.05 and late > 2 * early
    assert train[-1]["rewards/accuracies"] > 0.6
    assert result.initial_eval["eval/rewards/accuracies"] == 0.0
    assert result.final_eval["eval/rewards/accuracies"] > 0.7
    assert result.final_eval["eval/loss"] < result.initial_eval["eval/loss"]
    saved = (result.run_dir / "config.yaml").read_text()
    assert f"loss_type: {loss_type}" in saved
    assert json.loads((result.run_dir / "run.json").read_text())["train_examples"] == 32


# ---------------------------------------------------------------------------------- the CLI

_runner = CliRunner()


def run(args: list[str]) -> Any:
    return _runner.invoke(app, args, env={"COLUMNS": "200"})


def one_error_line(result: Any) -> str:
    assert result.exit_code == 2, result.stderr
    assert result.exception is None or isinstance(result.exception, SystemExit)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    return lines[0]


def write_recipe(tmp_path: Path, tiny_model_dir: Path, data_file: Path, extra: str = "") -> Path:
    path = tmp_path / "dpo.yaml"
    path.write_text(
        f"model:\n  path: {tiny_model_dir}\ndata:\n  train_file: {data_file}\noutput_dir: {tmp_path / 'runs'}\n"
        f"max_steps: 2\nper_device_train_batch_size: 4\n{extra}"
    )
    return path


def test_cli_reports_a_bad_data_line_with_its_number(tiny_model_dir: Path, tmp_path: Path) -> None:
    data = tmp_path / "pairs.jsonl"
    data.write_text('{"prompt": "1+1=", "chosen": "2", "rejected": "3"}\n{"prompt": "1+1=", "chosen": "2"}\n')
    msg = one_error_line(run(["dpo", str(write_recipe(tmp_path, tiny_model_dir, data))]))
    assert f"{data}:2: missing field 'rejected'" in msg
    assert not (tmp_path / "runs").exists()


def test_cli_skip_invalid_trains_on_the_good_lines(tiny_model_dir: Path, tmp_path: Path) -> None:
    data = tmp_path / "pairs.jsonl"
    good = [json.dumps(r) for r in arithmetic_records("preferences", 8)]
    data.write_text("\n".join([*good[:4], "oops", *good[4:]]) + "\n")
    recipe = write_recipe(tmp_path, tiny_model_dir, data)
    result = run(["dpo", str(recipe), "--set", "data.skip_invalid=true", "--no-progress"])
    assert result.exit_code == 0, result.stderr
    assert "skipped 1 invalid lines" in result.stderr and ":5: not valid JSON" in result.stderr
    (run_dir,) = (tmp_path / "runs").iterdir()
    assert (run_dir / "model" / "config.json").is_file()
    assert json.loads((run_dir / "run.json").read_text())["skipped_lines"] == 1


@pytest.mark.parametrize(
    ("sets", "needles"),
    [
        (["bta=0.2"], ("unknown config key 'bta'", "did you mean 'beta'")),
        (["data.train_fil=x"], ("unknown config key 'data.train_fil'", "did you mean 'data.train_file'")),
        (["beta=0"], ("config key 'beta' has an invalid value 0",)),
        (["loss_type=hinge"], ("config key 'loss_type'",)),
        (["loss_type=ipo", "label_smoothing=0.1"], ("label_smoothing applies to loss_type 'sigmoid' only",)),
        (["model.path=null"], ("config key 'model.path' is required",)),
        (["data.train_file=/nonexistent.jsonl"], ("data file '/nonexistent.jsonl' does not exist",)),
    ],
)
def test_cli_config_errors_are_one_sentence(tiny_model_dir: Path, tmp_path: Path, pairs_file: Path, sets: list[str], needles: tuple[str, ...]) -> None:
    recipe = write_recipe(tmp_path, tiny_model_dir, pairs_file)
    msg = one_error_line(run(["dpo", str(recipe), *[a for s in sets for a in ("--set", s)]]))
    for needle in needles:
        assert needle in msg


def test_cli_dry_run_prints_the_resolved_config(tiny_model_dir: Path, tmp_path: Path, pairs_file: Path) -> None:
    result = run(["dpo", str(write_recipe(tmp_path, tiny_model_dir, pairs_file)), "--set", "beta=0.3", "--dry-run"])
    assert result.exit_code == 0, result.stderr
    assert "beta: 0.3" in result.stdout and "loss_type: sigmoid" in result.stdout
    assert not (tmp_path / "runs").exists()


def test_shipped_recipe_validates() -> None:
    repo = Path(__file__).resolve().parents[2]
    cfg = load_offline_config(DPOConfig, str(repo / "configs" / "arithmetic-dpo.yaml"), [])
    assert cfg.task == "arithmetic" and cfg.model.path is None


def test_reference_pass_runs_once_per_dataset(
    tiny_model_dir: Path, pairs_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[int] = []
    original = DPO.compute_reference

    def counting(self: DPO, data: PairData) -> None:
        calls.append(len(data))
        original(self, data)

    monkeypatch.setattr(DPO, "compute_reference", counting)
    train_dpo(config(tiny_model_dir, pairs_file, tmp_path, max_steps=3), show_progress=False, log=lambda m: None)
    assert calls == [32, 32]  # the training pairs, then the eval pairs; never again during training


def test_lora_dpo_trains_only_the_adapter_and_eval_reads_the_run(tiny_model_dir: Path, pairs_file: Path, tmp_path: Path) -> None:
    cfg = config(
        tiny_model_dir, pairs_file, tmp_path, model={"path": str(tiny_model_dir), "lora": {"r": 4}},
        learning_rate=1e-2, task="arithmetic", eval_size=8,
    )
    result = train_dpo(cfg, show_progress=False, log=lambda m: None)
    assert (result.run_dir / "model" / "adapter_config.json").is_file()
    assert result.final_eval["eval/rewards/margins"] > 0.05
    assert "eval/accuracy" in result.final_eval  # the task's metric rides along
    base = CausalLMPolicy.from_pretrained(tiny_model_dir).model.state_dict()
    trained = CausalLMPolicy.from_pretrained(result.run_dir / "model").model
    compared = 0
    for name, value in trained.base_model.model.state_dict().items():
        key = name.replace("base_layer.", "")
        if "lora_" not in name and key in base:
            assert torch.equal(value, base[key]), f"{name} changed"
            compared += 1
    assert compared >= len(base) - 1  # every base weight (the tied LM head may be listed once)
    out = CliRunner().invoke(app, ["eval", str(result.run_dir), "--size", "8"])
    assert out.exit_code == 0, out.stderr
    assert "eval/accuracy" in json.loads(out.stdout)
