"""The arithmetic task: correct answers, a held-out split that never leaks, validated options."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from rl4gen.config import ConfigError
from rl4gen.tasks import get_task
from rl4gen.tasks.arithmetic import _is_heldout


def _parse(prompt: str) -> tuple[int, str, int]:
    body = prompt.rstrip("=")
    op = "+" if "+" in body else "-"
    a, b = body.split(op)
    return int(a), op, int(b)


def test_answers_are_correct_and_reversed() -> None:
    task = get_task("arithmetic", {"operations": ["+", "-"]})
    for ctx in task.train_contexts(torch.Generator().manual_seed(0), 300):
        a, op, b = _parse(ctx["prompt"])
        value = a + b if op == "+" else a - b
        assert value >= 0
        assert ctx["answer"] == str(value)[::-1]
        assert len(ctx["prompt"]) == 2 * 3 + 2  # zero-padded operands


def test_plain_order_and_unpadded_options() -> None:
    task = get_task("arithmetic", {"reverse_answer": False, "pad_operands": False, "digits": 2})
    assert task.prompt(7, "+", 35) == "7+35="
    assert task.answer(7, "+", 35) == "42"


def test_heldout_problems_never_appear_in_training() -> None:
    task = get_task("arithmetic")
    held = {c["prompt"] for c in task.eval_contexts(512)}
    assert len(held) > 400
    train = {c["prompt"] for c in task.train_contexts(torch.Generator().manual_seed(1), 20000)}
    assert not held & train
    for p in list(held)[:50]:
        assert _is_heldout(*_parse(p), task.options.holdout_every)


def test_training_contexts_depend_only_on_the_generator() -> None:
    task = get_task("arithmetic")
    a = task.train_contexts(torch.Generator().manual_seed(5), 64)
    b = task.train_contexts(torch.Generator().manual_seed(5), 64)
    c = task.train_contexts(torch.Generator().manual_seed(6), 64)
    assert a == b and a != c


def test_unknown_task_arg_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="task_args.digitz"):
        get_task("arithmetic", {"digitz": 3})


def test_prior_is_cached_and_partially_right(arithmetic_prior: Path) -> None:
    """The recipe's prior: built once, then reused; right only part of the time."""
    from rl4gen.policies.causal_lm import CausalLMPolicy

    task = get_task("arithmetic")
    assert task.pretrain() == arithmetic_prior  # cache hit, no rebuild
    assert (arithmetic_prior / "model.safetensors").is_file()
    policy = CausalLMPolicy.from_pretrained(arithmetic_prior)
    accuracy = task.evaluate(policy, 256)["accuracy"]
    assert 0.2 <= accuracy <= 0.7, accuracy
