"""Reward models: Bradley–Terry training moves every weight and ranks the pairs, bootstrap heads
disagree, a trained model loads as a Reward by path with an uncertainty penalty, and the command
line reports bad input in one sentence."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from typer.testing import CliRunner

from rl4gen.algorithms.reward_model import PairScorer, RewardModelConfig, train_reward_model
from rl4gen.cli import app
from rl4gen.data import load_preferences
from rl4gen.data.synthetic import arithmetic_records, write_jsonl
from rl4gen.offline import OfflineResult, load_offline_config, split_data
from rl4gen.rewards.base import build_reward
from rl4gen.rewards.learned import LearnedReward, RewardModel
from rl4gen.tracking import read_metrics

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def pairs_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_jsonl(arithmetic_records("preferences", 32, seed=0), tmp_path_factory.mktemp("rm") / "pairs.jsonl")


def config(tiny_model_dir: Path, pairs_file: Path, out: Path, **overrides: Any) -> RewardModelConfig:
    data: dict[str, Any] = {
        "model": {"path": str(tiny_model_dir)},
        "data": {"train_file": str(pairs_file), "eval_file": str(pairs_file)},
        "output_dir": str(out),
        "run_name": "run",
        "per_device_train_batch_size": 16,
        "max_steps": 40,
        "learning_rate": 1e-2,
        "lr_scheduler_type": "constant",
    }
    data.update(overrides)
    return RewardModelConfig.model_validate(data)


@pytest.fixture(scope="module")
def trained(tiny_model_dir: Path, pairs_file: Path, tmp_path_factory: pytest.TempPathFactory) -> OfflineResult:
    cfg = config(tiny_model_dir, pairs_file, tmp_path_factory.mktemp("rm-runs"), num_heads=3)
    return train_reward_model(cfg, show_progress=False, log=lambda m: None)


def test_training_moves_every_weight_and_learns_to_rank(trained: OfflineResult, tiny_model_dir: Path) -> None:
    from transformers import AutoModelForCausalLM

    base = dict(AutoModelForCausalLM.from_pretrained(str(tiny_model_dir)).transformer.named_parameters())
    rm = RewardModel.load(trained.run_dir / "model")
    assert rm.num_heads == 3
    for name, p in rm.model.named_parameters():
        if name.startswith("transformer."):
            assert not torch.equal(p.detach(), base[name.removeprefix("transformer.")]), f"{name} did not change"
    history = [h for h in read_metrics(trained.run_dir) if "accuracy" in h and h["step"] > 0]
    assert len(history) == 40 and all("spread" in h and "margin" in h for h in history)
    assert trained.initial_eval["eval/accuracy"] < 0.7
    assert trained.final_eval["eval/accuracy"] >= 0.8
    assert trained.final_eval["eval/margin"] > trained.initial_eval["eval/margin"] + 0.5
    assert trained.final_eval["eval/loss"] < trained.initial_eval["eval/loss"]
    assert 0.0 <= trained.final_eval["eval/ece"] <= 1.0
    assert json.loads((trained.run_dir / "run.json").read_text())["command"] == "reward"


def test_bootstrap_weights_are_seeded_and_only_for_ensembles(tiny_model_dir: Path, pairs_file: Path, tmp_path: Path) -> None:
    pairs = load_preferences(pairs_file).rows
    one = RewardModel.from_backbone(str(tiny_model_dir), 1)
    three = RewardModel.from_backbone(str(tiny_model_dir), 3)
    cfg = config(tiny_model_dir, pairs_file, tmp_path, num_heads=3)
    assert torch.equal(PairScorer(cfg, one, pairs, bootstrap=True).weights, torch.ones(32, 1))
    w = PairScorer(cfg, three, pairs, bootstrap=True).weights
    assert torch.equal(w, PairScorer(cfg, three, pairs, bootstrap=True).weights)
    assert not torch.equal(w[:, 0], w[:, 1]) and bool((w == 0).any())  # each head drops some pairs
    assert torch.equal(PairScorer(cfg, three, pairs, bootstrap=False).weights, torch.ones(32, 3))


def test_learned_reward_is_mean_minus_penalised_spread(trained: OfflineResult, pairs_file: Path) -> None:
    pairs = load_preferences(pairs_file).rows[:6]
    contexts = [{"prompt": p.prompt} for p in pairs]
    samples = [p.chosen for p in pairs]
    plain = build_reward("reward_model", path=str(trained.run_dir))  # a run folder works
    assert isinstance(plain, LearnedReward) and plain.name == "reward_model"
    score = plain.score(samples, contexts)
    assert score.members.shape == (6, 3)
    assert torch.allclose(score.mean, score.members.mean(dim=1))
    assert bool((score.spread > 0).all())
    penalised = LearnedReward(str(trained.run_dir / "model"), uncertainty_penalty=2.0)
    expected = (score.mean - 2.0 * score.spread).tolist()
    assert penalised(samples, contexts) == pytest.approx(expected, abs=1e-5)
    # Several models: every head of every model is a member.
    both = LearnedReward([str(trained.run_dir), str(trained.run_dir)])
    assert both.score(samples, contexts).members.shape == (6, 6)
    # Chosen answers outscore their near misses after training, as in the run's own evaluation.
    everything = load_preferences(pairs_file).rows
    ctx = [{"prompt": p.prompt} for p in everything]
    wins = [c > r for c, r in zip(plain([p.chosen for p in everything], ctx), plain([p.rejected for p in everything], ctx))]
    assert sum(wins) / len(wins) == pytest.approx(trained.final_eval["eval/accuracy"])


def test_eval_fraction_split_is_seeded_and_disjoint(tiny_model_dir: Path, pairs_file: Path, tmp_path: Path) -> None:
    rows = list(range(20))
    cfg = config(tiny_model_dir, pairs_file, tmp_path, data={"train_file": str(pairs_file), "eval_fraction": 0.25})
    train, held = split_data(rows, None, cfg)
    assert held is not None and len(held) == 5 and len(train) == 15 and sorted(train + held) == rows
    assert split_data(rows, None, cfg) == (train, held)
    assert split_data(rows, [99], cfg) == (rows, [99])  # an eval_file wins


# ---------------------------------------------------------------------------------- the CLI

_runner = CliRunner()


def one_error_line(args: list[str]) -> str:
    result = _runner.invoke(app, args, env={"COLUMNS": "200"})
    assert result.exit_code == 2, (result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    return lines[0]


def test_cli_errors(tiny_model_dir: Path, pairs_file: Path, tmp_path: Path, trained: OfflineResult) -> None:
    recipe = tmp_path / "rm.yaml"
    recipe.write_text(f"model:\n  path: {tiny_model_dir}\ndata:\n  train_file: {pairs_file}\n")
    assert "did you mean 'num_heads'" in one_error_line(["reward", "train", str(recipe), "--set", "num_head=2"])
    assert "model.lora is not supported" in one_error_line(["reward", "train", str(recipe), "--set", "model.lora.r=4"])
    assert "no config given" in one_error_line(["reward", "train"])
    msg = one_error_line(["sample", str(trained.run_dir), "-p", "1+1="])
    assert "holds a reward model, not a policy" in msg


def test_shipped_recipe_validates() -> None:
    repo = Path(__file__).resolve().parents[2]
    cfg = load_offline_config(RewardModelConfig, str(repo / "configs" / "arithmetic-reward.yaml"), [])
    assert cfg.task == "arithmetic" and cfg.num_heads == 4


def test_reward_model_drives_an_rl_run(trained: OfflineResult, tiny_model_dir: Path, tmp_path: Path) -> None:
    from rl4gen.cli import load_train_config
    from rl4gen.trainer import Trainer

    cfg = load_train_config(
        None,
        [
            "task=arithmetic",
            f"model.path={tiny_model_dir}",
            f"rewards=[{{type: reward_model, args: {{path: {trained.run_dir}, uncertainty_penalty: 0.5}}}}]",
            "max_steps=2",
            "prompts_per_step=4",
            "algorithm.num_generations=2",
            "generation.max_completion_length=5",
            "eval_size=8",
            f"output_dir={tmp_path}",
        ],
    )
    result = Trainer(cfg, show_progress=False, log=lambda m: None).train()
    assert len(result.history) == 2
    assert all(abs(h["rewards/reward_model/mean"]) > 0 for h in result.history)


def test_value_head_on_the_lm_trains_saves_and_scores(tiny_model_dir: Path, pairs_file: Path, tmp_path: Path) -> None:
    from rl4gen.config import GenerationConfig
    from rl4gen.policies.causal_lm import CausalLMPolicy

    cfg = config(tiny_model_dir, pairs_file, tmp_path, head="value", num_heads=2, learning_rate=3e-3)
    result = train_reward_model(cfg, show_progress=False, log=lambda m: None)
    before, after = result.initial_eval, result.final_eval
    assert after["eval/accuracy"] >= before["eval/accuracy"] + 0.15  # measured: 47% -> 72%, loss 0.69 -> 0.50
    assert after["eval/loss"] < before["eval/loss"] and after["eval/margin"] > 0.5
    rm = RewardModel.load(result.run_dir)
    assert rm.head == "value" and rm.num_heads == 2
    pairs = load_preferences(pairs_file).rows
    with torch.inference_mode():
        reloaded = PairScorer(cfg, rm, pairs, bootstrap=False).evaluate()
    assert reloaded["accuracy"] == pytest.approx(result.final_eval["eval/accuracy"])
    assert reloaded["margin"] == pytest.approx(result.final_eval["eval/margin"], abs=1e-4)
    assert len(LearnedReward(str(result.run_dir))(["123"], [{"prompt": "001+002="}])) == 1
    # The LM head is kept: the same folder still loads and generates as a causal LM.
    policy = CausalLMPolicy.from_pretrained(result.run_dir / "model", GenerationConfig(max_completion_length=5))
    assert len(policy.generate(["001+002="])) == 1


def test_spread_as_a_logged_component_scores_once(trained: OfflineResult, monkeypatch: pytest.MonkeyPatch) -> None:
    from rl4gen.rewards.base import CombinedReward

    calls: list[int] = []
    original = RewardModel.scores

    def counting(self: RewardModel, prompts: Any, completions: Any, batch_size: int = 64) -> torch.Tensor:
        calls.append(len(prompts))
        return original(self, prompts, completions, batch_size)

    monkeypatch.setattr(RewardModel, "scores", counting)
    reward = build_reward("reward_model", path=str(trained.run_dir), uncertainty_penalty=1.0)
    spread = build_reward("reward_model", path=str(trained.run_dir / "model"), output="spread")
    assert isinstance(reward, LearnedReward) and isinstance(spread, LearnedReward)
    assert spread.name == "reward_model_spread" and spread.models is reward.models  # loaded once
    combined = CombinedReward([reward, spread], [1.0, 0.0])
    samples, contexts = ["12", "345"], [{"prompt": "001+002="}, {"prompt": "100+200="}]
    out = combined(samples, contexts)
    assert calls == [2]  # one pass for both components
    s = reward.score(samples, contexts)
    assert out.components["reward_model_spread"].tolist() == pytest.approx(s.spread.tolist())
    assert out.total.tolist() == pytest.approx((s.mean - s.spread).tolist(), abs=1e-5)
    with pytest.raises(Exception, match="output must be"):
        build_reward("reward_model", path=str(trained.run_dir), output="median")
