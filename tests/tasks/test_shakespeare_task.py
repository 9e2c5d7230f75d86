"""The shakespeare task: plays load offline, held-out plays stay out, a tiny prior trains."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from rl4gen.config import ConfigError
from rl4gen.tasks import get_task
from rl4gen.tasks.shakespeare import ALPHABET, HELDOUT_PLAYS, load_plays

TINY = {"pretrain_steps": 3, "n_layer": 1, "n_embd": 32, "n_head": 2, "pretrain_batch_size": 4, "block_size": 32}


def test_plays_load_offline_and_are_clean() -> None:
    plays = load_plays()
    assert len(plays) >= 40
    assert all(name in plays for name in HELDOUT_PLAYS)
    text = plays["hamlet"]
    assert "To be, or not to be" in text
    assert set(text) <= set(ALPHABET)


def test_contexts_come_from_the_right_plays() -> None:
    task = get_task("shakespeare", TINY)
    plays = load_plays()
    heldout_text = "\n".join(plays[p] for p in HELDOUT_PLAYS)
    for ctx in task.eval_contexts(20):
        assert ctx["prompt"] in heldout_text
        assert 0 < len(ctx["prompt"]) <= task.options.prompt_chars
    train = task.train_contexts(torch.Generator().manual_seed(0), 20)
    assert len(train) == 20 and all(c["prompt"] for c in train)


def test_prompts_file(tmp_path: Path) -> None:
    f = tmp_path / "prompts.txt"
    f.write_text("O gentle\n\nMy lord,\n")
    task = get_task("shakespeare", {**TINY, "prompts_file": str(f)})
    prompts = {c["prompt"] for c in task.train_contexts(torch.Generator().manual_seed(0), 30)}
    assert prompts == {"O gentle", "My lord,"}
    empty = tmp_path / "empty.txt"
    empty.write_text("\n  \n")
    with pytest.raises(ConfigError, match="holds no prompts"):
        get_task("shakespeare", {"prompts_file": str(empty)})


def test_tiny_prior_trains_and_evaluates_with_kl(tmp_path: Path) -> None:
    from rl4gen.config import GenerationConfig
    from rl4gen.policies.causal_lm import CausalLMPolicy

    task = get_task("shakespeare", TINY)
    path = task.pretrain(log=lambda m: None)
    assert (path / "pretrain.json").is_file()
    policy = CausalLMPolicy.from_pretrained(path, GenerationConfig(max_completion_length=16), use_reference=True)
    metrics = task.evaluate(policy, 8)
    assert set(metrics) == {"lexicon", "distinct_words", "mean_chars", "kl"}
    assert 0 < metrics["distinct_words"] <= 1
    assert abs(metrics["kl"]) < 1e-5  # the policy is its own reference before training
