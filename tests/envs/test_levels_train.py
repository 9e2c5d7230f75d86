"""Training level generators through Stable-Baselines3: wrappers, config, runs, resume, CLI."""

from __future__ import annotations

import json
import math
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium.utils.env_checker import check_env
from typer.testing import CliRunner

import rl4gen.envs  # noqa: F401
from rl4gen.cli import app
from rl4gen.config import ConfigError
from rl4gen.envs.levels.train import load_levels_config, train_levels
from rl4gen.envs.levels.wrappers import CropOneHotObservation, OneHotObservation

REPO = Path(__file__).resolve().parents[2]
TINY = ["total_timesteps=128", "num_envs=2", "algorithm_args.n_steps=32", "algorithm_args.batch_size=32",
        "algorithm_args.n_epochs=1", "checkpoint_every=64", "run_name=run"]


pytestmark = pytest.mark.usefixtures("one_thread")  # restored after the module (tests/conftest.py)


@pytest.mark.filterwarnings("ignore:.*different from the unwrapped version")  # checking the wrapper itself
def test_crop_is_egocentric_one_hot_with_a_solid_border() -> None:
    env = CropOneHotObservation(gym.make("rl4gen/zelda-narrow-v0"))
    check_env(env, skip_render_check=True)
    obs, _ = env.reset(seed=4)
    core = env.unwrapped
    x, y = core.representation.x, core.representation.y
    assert obs.shape == (8, 22, 22) and obs.dtype == np.uint8 and (obs.sum(axis=0) == 1).all()
    tiles = obs.argmax(axis=0)  # (22, 22)
    assert tiles[11, 11] == core.level[y, x]  # the centre is the position to edit
    assert np.array_equal(tiles[11 - y : 11 - y + 7, 11 - x : 11 - x + 11], core.level)
    assert tiles[0, 0] == core.problem.tile("solid")  # cell (x - 11, y - 11): always outside the map
    wide = OneHotObservation(gym.make("rl4gen/sokoban-wide-v0"))
    check_env(wide, skip_render_check=True)
    obs, _ = wide.reset(seed=0)
    assert np.array_equal(obs.argmax(axis=0), wide.unwrapped.level)
    with pytest.raises(ValueError, match="OneHotObservation for wide"):
        CropOneHotObservation(gym.make("rl4gen/binary-wide-v0"))


def test_ppo_run_writes_the_run_folder_with_cleanrl_metrics(tmp_path: Path) -> None:
    cfg = load_levels_config(None, ["env=sokoban-narrow", f"output_dir={tmp_path}", *TINY])
    result = train_levels(cfg, show_progress=False)
    run = result.run_dir
    assert result.timesteps == 128
    for name in ("config.yaml", "metrics.jsonl", "model.zip", "samples/levels.jsonl",
                 "checkpoints/step_64/model.zip", "checkpoints/step_128/state.json"):
        assert (run / name).exists(), name
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    keys = set().union(*records)
    for key in ("charts/episodic_return", "charts/episodic_length", "charts/SPS", "losses/policy_loss",
                "losses/value_loss", "losses/entropy", "losses/approx_kl", "losses/clipfrac", "levels/goal_rate"):
        assert key in keys, key
    assert all(v is None or math.isfinite(v) for r in records for v in r.values())
    assert [r["step"] for r in records] == sorted({r["step"] for r in records})
    # the update moved every parameter of the policy
    from stable_baselines3 import PPO

    first = PPO.load(run / "checkpoints" / "step_64" / "model.zip").policy.state_dict()
    last = result.model.policy.state_dict()
    changed = [k for k in first if not torch.equal(first[k].cpu(), last[k].cpu())]
    assert len(changed) == len(first)


def test_resume_continues_from_the_last_checkpoint(tmp_path: Path) -> None:
    cfg = load_levels_config(None, ["env=binary-narrow", f"output_dir={tmp_path}", *TINY, "total_timesteps=64"])
    run = train_levels(cfg, show_progress=False).run_dir
    runner = CliRunner()
    result = runner.invoke(app, ["train", "--resume", str(run), "--set", "total_timesteps=128", "--no-progress"])
    assert result.exit_code == 0, result.output
    assert (run / "checkpoints" / "step_128" / "model.zip").is_file()
    steps = [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert steps == sorted(set(steps)) and steps[-1] == 128
    result = runner.invoke(app, ["train", "--resume", str(run), "--set", "env=zelda-narrow"])
    assert result.exit_code == 2 and "cannot change on resume" in result.output


@pytest.mark.parametrize(
    ("env", "algorithm", "args"),
    [
        ("zelda-wide", "a2c", ["algorithm_args.n_steps=4", "num_envs=4"]),
        ("sokoban-turtle", "dqn", ["num_envs=1", "algorithm_args.learning_starts=16", "algorithm_args.train_freq=4",
                                    "algorithm_args.buffer_size=200", "algorithm_args.batch_size=8"]),
    ],
)
def test_a2c_and_dqn_are_selectable(tmp_path: Path, env: str, algorithm: str, args: list[str]) -> None:
    cfg = load_levels_config(
        None, [f"env={env}", f"algorithm={algorithm}", "total_timesteps=64", "checkpoint_every=1000",
               f"output_dir={tmp_path}", "run_name=r", *args]
    )
    result = train_levels(cfg, show_progress=False)
    assert result.timesteps >= 64 and (result.run_dir / "model.zip").is_file()
    keys = set().union(*(json.loads(line) for line in (result.run_dir / "metrics.jsonl").read_text().splitlines()))
    assert ("losses/td_loss" if algorithm == "dqn" else "losses/value_loss") in keys


def test_config_mistakes_get_one_sentence() -> None:
    with pytest.raises(ConfigError, match="did you mean 'binary-narrow'"):
        load_levels_config(None, ["env=binary-narow"])
    with pytest.raises(ConfigError, match="'algorithm_args.n_step' is not an option of ppo"):
        load_levels_config(None, ["algorithm_args.n_step=4"])
    with pytest.raises(ConfigError, match="needs a Discrete action space"):
        load_levels_config(None, ["algorithm=dqn", "env=zelda-wide"])
    with pytest.raises(ConfigError, match="env_args.bogus"):
        load_levels_config(None, ["env_args.bogus=1"])


def test_cli_train_from_the_shipped_recipe_then_show(tmp_path: Path) -> None:
    runner = CliRunner()
    sets = [x for s in ["env=sokoban-narrow", f"output_dir={tmp_path}", *TINY] for x in ("--set", s)]
    result = runner.invoke(app, ["train", str(REPO / "configs/levels/binary-narrow.yaml"), *sets, "--no-progress"])
    assert result.exit_code == 0, result.output
    assert "run folder:" in result.output
    result = runner.invoke(app, ["levels", "show", str(tmp_path / "run")])
    assert result.exit_code == 0 and (tmp_path / "run" / "samples" / "levels.png").is_file()
    level = [[1, 1, 1, 1, 1], [1, 2, 0, 0, 1], [1, 0, 3, 0, 1], [1, 0, 0, 4, 1], [1, 1, 1, 1, 1]]
    (tmp_path / "demos.jsonl").write_text(json.dumps({"seed": 1, "start": level, "final": level}) + "\n")
    (tmp_path / "model.zip").write_bytes(b"")
    for recipe in sorted((REPO / "configs" / "levels").glob("*.yaml")):
        result = runner.invoke(app, ["train", str(recipe), "--dry-run"])
        if "init_model:" in recipe.read_text():  # continues an earlier run: its files are named first
            assert result.exit_code != 0 and "'init_model' names no file" in result.output, (recipe.name, result.output)
            files = ["--set", f"init_model={tmp_path / 'model.zip'}", "--set", f"teacher_file={tmp_path / 'demos.jsonl'}"]
            if "self_imitation_guide_file:" in recipe.read_text():
                files += ["--set", f"self_imitation_guide_file={tmp_path / 'demos.jsonl'}"]
            result = runner.invoke(app, ["train", str(recipe), "--dry-run", *files])
        assert result.exit_code == 0, (recipe.name, result.output)


@pytest.mark.slow
def test_ppo_raises_the_episodic_return_on_sokoban(tmp_path: Path) -> None:
    """4,096 steps (~8 s): the shaped reward per episode climbs from about -1.4 (random edits) to
    about +2 (seeded, so the curve is reproducible; the margin allows for platform differences)."""
    cfg = load_levels_config(
        REPO / "configs/levels/sokoban-narrow.yaml",
        ["total_timesteps=4096", "algorithm_args.n_steps=64", "algorithm_args.batch_size=128",
         "features_dim=64", f"output_dir={tmp_path}", "run_name=r"],
    )
    run = train_levels(cfg, show_progress=False).run_dir
    returns = [r["charts/episodic_return"] for r in map(json.loads, (run / "metrics.jsonl").read_text().splitlines())
               if "charts/episodic_return" in r]
    assert len(returns) >= 6
    assert np.mean(returns[-2:]) > np.mean(returns[:2]) + 1.5
