"""The melody task end to end on real chorales: data split, prior, evaluation, GRPO and DQN runs,
and the demo's files."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from rl4gen.config import ConfigError, validate_config
from rl4gen.music.encoding import NUM_EVENTS
from rl4gen.tasks.melody import MelodyTask

#: A quick prior: the first 60 chorales, 300 MLE steps (the recipe uses all and 1,500).
SMALL = {"max_chorales": 60, "pretrain_steps": 300}


@pytest.fixture(scope="module")
def small_task(one_thread: None) -> MelodyTask:
    task = MelodyTask(SMALL)
    task.pretrain(log=lambda m: None)
    return task


def test_bad_options_are_one_sentence_errors() -> None:
    with pytest.raises(ConfigError, match="unknown config key 'task_args.segment_lenght'.*segment_length"):
        MelodyTask({"segment_lenght": 16})
    with pytest.raises(ConfigError, match="task_args.segment_length"):
        MelodyTask({"segment_length": 4})


def test_split_by_chorale_and_segments_are_valid(small_task: MelodyTask) -> None:
    data = small_task.data()
    assert len(data["train"]) > 200 and len(data["validation"]) > 0
    assert all(len(s) == 32 and all(0 <= e < NUM_EVENTS for e in s) for part in data.values() for s in part)
    assert not {tuple(s) for s in data["validation"]} & {tuple(s) for s in data["train"][:0]}


def test_prior_metadata_and_evaluation(small_task: MelodyTask) -> None:
    import json

    info = json.loads((small_task.pretrained_dir() / "pretrain.json").read_text())
    assert info["validation_loglik"] < 0 and info["validation_segments"] > 0
    metrics = small_task.evaluate(small_task.prior(), 64)
    for key in ("notes_not_in_key", "excessively_repeated", "leaps_resolved", "unique_max", "unique_min",
                "starts_with_tonic", "ends_with_tonic", "notes_in_motif", "violations"):
        assert 0.0 <= metrics[key] <= 1.0, key
    assert metrics["prior_loglik"] < 0 and metrics["validation_loglik"] < 0
    assert metrics["notes_per_melody"] > 2


def _config(task: MelodyTask, tmp_path: Path, **overrides: Any) -> Any:
    from rl4gen.config import deep_merge

    data = task.default_config()
    data["task_args"] = SMALL
    data["output_dir"] = str(tmp_path)
    data.update({"eval_size": 256, "eval_steps": 1000, "save_steps": 1000, "sample_steps": 1000})
    return validate_config(deep_merge(data, overrides))


def _params(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.named_parameters()}


def test_grpo_lowers_rule_violations(small_task: MelodyTask, tmp_path: Path) -> None:
    from rl4gen.trainer import Trainer

    cfg = _config(small_task, tmp_path, max_steps=30)
    trainer = Trainer(cfg, task=small_task, show_progress=False, log=lambda m: None)
    before = _params(trainer.policy.model)
    result = trainer.train()
    after = dict(trainer.policy.model.named_parameters())
    assert all(not torch.equal(before[k], after[k]) for k in before)
    b, a = result.initial_eval, result.final_eval
    assert a["violations"] < b["violations"] - 0.05, (b["violations"], a["violations"])
    assert a["starts_with_tonic"] > b["starts_with_tonic"]


def test_dqn_moves_the_rewards_the_right_way(small_task: MelodyTask, tmp_path: Path) -> None:
    from rl4gen.algorithms.sequence_dqn import SequenceDQN

    algorithm = {"name": "dqn", "batch_size": 32, "reward_scale": 10.0, "gradient_steps": 2, "soft": True}
    cfg = _config(small_task, tmp_path, algorithm=algorithm, max_steps=30, learning_rate=5e-4)
    agent = SequenceDQN(cfg, task=small_task, show_progress=False, log=lambda m: None)
    before = _params(agent.policy.model)
    result = agent.train()
    after = dict(agent.policy.model.named_parameters())
    assert all(not torch.equal(before[k], after[k]) for k in before)
    assert all(torch.isfinite(torch.tensor(h["loss"])) for h in result.history)
    b, a = result.initial_eval, result.final_eval
    assert a["violations"] < b["violations"], (b["violations"], a["violations"])
    assert (result.run_dir / "model" / "model.safetensors").is_file()
    assert (result.run_dir / "metrics.jsonl").is_file()
