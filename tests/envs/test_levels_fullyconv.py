"""The wide representation's fully convolutional agent: flat actions, the policy, a short run."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium.utils.env_checker import check_env

import rl4gen.envs  # noqa: F401
from rl4gen.config import ConfigError
from rl4gen.envs.levels.check import check_level
from rl4gen.envs.levels.evaluate import evaluate_levels
from rl4gen.envs.levels.networks import FullyConvPolicy, grid_symmetries, symmetric_logits
from rl4gen.envs.levels.problems import make_problem
from rl4gen.envs.levels.stats import sokoban_dead_cells, solve_sokoban
from rl4gen.envs.levels.teacher import symmetries
from rl4gen.envs.levels.train import load_levels_config, train_levels
from rl4gen.envs.levels.wrappers import FlatWideAction, GoalFeatures, OneHotObservation

pytestmark = pytest.mark.usefixtures("one_thread")  # restored after the module (tests/conftest.py)


@pytest.mark.filterwarnings("ignore:.*different from the unwrapped version")  # checking the wrapper itself
def test_flat_action_writes_tile_t_at_x_y() -> None:
    env = FlatWideAction(gym.make("rl4gen/zelda-wide-v0"))
    check_env(env, skip_render_check=True)
    assert env.action_space == gym.spaces.Discrete(8 * 7 * 11)
    env.reset(seed=0)
    t, y, x = 5, 2, 9
    env.step(t * 7 * 11 + y * 11 + x)  # the (T, H, W) map's flat index
    assert env.unwrapped.level[y, x] == t
    with pytest.raises(ValueError, match="needs the wide representation"):
        FlatWideAction(gym.make("rl4gen/binary-narrow-v0"))


def test_policy_scores_every_tile_of_every_cell() -> None:
    env = OneHotObservation(FlatWideAction(gym.make("rl4gen/sokoban-wide-v0")))
    policy = FullyConvPolicy(env.observation_space, env.action_space, lambda _: 3e-4, channels=8)
    obs, _ = env.reset(seed=0)
    dist = policy.get_distribution(torch.as_tensor(obs[None]))
    probs = dist.distribution.probs.detach()
    assert probs.shape == (1, 5 * 5 * 5)
    assert float(probs[0][torch.as_tensor(obs).flatten().bool()].sum()) == 0  # the tile already there: masked
    assert float(dist.entropy().detach()) == pytest.approx(np.log(100), abs=0.05)  # near-uniform over the 100 real edits
    greedy, _ = policy.predict(obs, deterministic=True)
    t, y, x = np.unravel_index(int(greedy), (5, 5, 5))
    assert env.unwrapped.level[y, x] != t
    assert policy.predict_values(torch.as_tensor(obs[None])).shape == (1, 1)
    with pytest.raises(ValueError, match="wrap a wide env in FlatWideAction"):
        FullyConvPolicy(env.observation_space, gym.spaces.Discrete(7), lambda _: 3e-4)
    with pytest.raises(ConfigError, match="fullyconv needs a wide env"):
        load_levels_config(None, ["env=binary-narrow", "policy=fullyconv"])


def test_attention_layers_let_every_cell_weigh_every_other() -> None:
    env = GoalFeatures(OneHotObservation(FlatWideAction(gym.make("rl4gen/sokoban-wide-v0"))))
    tiles = 5
    plain = FullyConvPolicy(env.observation_space, env.action_space, lambda _: 3e-4, channels=8, feature_planes=9)
    policy = FullyConvPolicy(env.observation_space, env.action_space, lambda _: 3e-4, channels=8, feature_planes=9,
                             attention_layers=2)
    extra = {k for k in policy.state_dict()} - {k for k in plain.state_dict()}
    assert extra and all(k.startswith(("features_extractor.attention.", "features_extractor.position",
                                       "pi_features_extractor.", "vf_features_extractor.")) for k in extra)
    obs = torch.as_tensor(np.stack([env.reset(seed=s)[0] for s in range(4)]))
    dist = policy.get_distribution(obs)
    assert dist.distribution.probs.shape == (4, tiles * 25)
    assert float(dist.distribution.probs.detach()[obs[:, :tiles].flatten(1).bool()].sum()) == 0  # no-op writes still masked
    # the gradient of one cell's logits reaches the attention layers and the position embedding
    dist.distribution.logits[:, 7].sum().backward()
    assert policy.features_extractor.position.grad.abs().sum() > 0
    assert all(p.grad is not None for p in policy.features_extractor.attention.parameters())
    with pytest.raises(ConfigError, match="'attention_layers' needs policy fullyconv"):
        load_levels_config(None, ["env=sokoban-wide", "attention_layers=1"])
    with pytest.raises(ConfigError, match="multiple of 4"):
        load_levels_config(None, ["env=sokoban-wide", "policy=fullyconv", "channels=6", "attention_layers=1"])


def test_short_fullyconv_run_raises_the_goal_rate_above_random_on_binary(tmp_path: Path) -> None:
    # the 5x5 binary problem of test_levels_eval, wide this time: PCGRL's fully convolutional agent
    sets = ["env=binary-wide", "policy=fullyconv", "channels=16", "total_timesteps=4096", "num_envs=8",
            "algorithm_args.n_steps=64", "algorithm_args.batch_size=128", "algorithm_args.learning_rate=0.003",
            "algorithm_args.n_epochs=4", "levels_per_log=0", "checkpoint_every=1024", "run_name=run", f"output_dir={tmp_path}"]
    base = {"env_args": {"problem_options": {"width": 5, "height": 5, "target_path": 3}}}
    trained = train_levels(load_levels_config(None, sets, base=base), show_progress=False)
    first = type(trained.model).load(trained.run_dir / "checkpoints" / "step_1024" / "model.zip").policy.state_dict()
    last = trained.model.policy.state_dict()
    assert all(not torch.equal(first[k], last[k]) for k in first)  # every parameter moved
    result = evaluate_levels(trained.run_dir, episodes=200)
    policy, random = result["policy"], result["random"]
    assert policy["goal_rate"] == policy["env_goal_rate"]
    assert policy["goal_rate"] > random["goal_rate"] + 0.08, (policy, random)  # 0.26 vs 0.06 (seeds 1, 2: 0.21, 0.31)
    assert policy["stats/regions"] < random["stats/regions"]
    averaged = evaluate_levels(trained.run_dir, episodes=200, symmetric=True, write=False)  # binary is symmetric too
    assert averaged["symmetric"] and averaged["random"] == result["random"]
    assert averaged["policy"]["goal_rate"] > random["goal_rate"] + 0.08, (averaged["policy"], random)


@pytest.mark.filterwarnings("ignore:.*different from the unwrapped version")
def test_goal_features_show_distances_budget_and_progress() -> None:
    env = GoalFeatures(OneHotObservation(FlatWideAction(gym.make("rl4gen/binary-wide-v0"))))
    check_env(env, skip_render_check=True)
    # a 14x14 map: one corridor along the top row, solid elsewhere
    level = np.ones((14, 14), dtype=np.uint8)
    level[0, :] = 0
    obs, _ = env.reset(seed=0, options={"level": level})
    assert obs.shape == (2 + 4 + 2, 14, 14) and obs.dtype == np.float32
    assert np.array_equal(obs[:2], OneHotObservation(gym.make("rl4gen/binary-wide-v0")).observation(level))
    # BFS from the path start (the corridor's far end, x = 13): (d + 1) / (196 / 4) along the row
    assert obs[2, 0] == pytest.approx((14 - np.arange(14)) / 49)
    assert obs[2, 1:].sum() == 0
    assert obs[3].sum() == 1 and obs[3, 0, 0] == 1  # the farthest cell: where the path would go on
    assert np.all(obs[4] == 1) and np.all(obs[5] == 1)  # whole budget left; a path exists
    assert np.all(obs[6] == 1) and np.all(obs[7] == 0)  # one region; no path gain yet
    t, y, x = 0, 1, 0  # open the cell below the corridor's end at x = 0: +1 path, one edit spent
    obs, *_ = env.step(t * 196 + y * 14 + x)
    assert obs[2, 1, 0] == pytest.approx(15 / 49) and obs[3].sum() == 1 and obs[3, 1, 0] == 1
    assert obs[4, 0, 0] == pytest.approx(1 - 1 / 39)
    assert obs[7, 0, 0] == pytest.approx(1 / 20)
    # every problem: planes after the tiles, constant progress planes in [0, 1]
    for problem, conditions in (("zelda", 7), ("sokoban", 5)):
        env = GoalFeatures(OneHotObservation(FlatWideAction(gym.make(f"rl4gen/{problem}-wide-v0"))))
        obs, _ = env.reset(seed=3)
        tiles = env.unwrapped.problem.num_tiles
        assert obs.shape[0] == tiles + 4 + conditions
        assert np.all((obs[tiles + 4 :] >= 0) & (obs[tiles + 4 :] <= 1))
    with pytest.raises(ConfigError, match="goal_features' needs a wide env"):
        load_levels_config(None, ["env=binary-narrow", "goal_features=true"])


def test_policy_with_goal_features_masks_only_the_tile_planes() -> None:
    env = GoalFeatures(OneHotObservation(FlatWideAction(gym.make("rl4gen/sokoban-wide-v0"))))
    policy = FullyConvPolicy(env.observation_space, env.action_space, lambda _: 3e-4, channels=8, feature_planes=9)
    obs, _ = env.reset(seed=0)
    probs = policy.get_distribution(torch.as_tensor(obs[None])).distribution.probs.detach()
    assert probs.shape == (1, 5 * 5 * 5)
    assert float(probs[0][torch.as_tensor(obs[:5]).flatten().bool()].sum()) == 0
    assert float((probs[0] > 0).sum()) == 100


@pytest.mark.parametrize("name", ["sokoban", "zelda"])
def test_symmetric_logits_turn_with_the_map(name: str) -> None:
    env = GoalFeatures(OneHotObservation(FlatWideAction(gym.make(f"rl4gen/{name}-wide-v0"))))
    tiles = env.unwrapped.problem.num_tiles
    planes, height, width = env.observation_space.shape
    torch.manual_seed(0)
    policy = FullyConvPolicy(env.observation_space, env.action_space, lambda _: 3e-4, channels=8, feature_planes=planes - tiles)
    torch.nn.init.normal_(policy.action_net.conv.weight)  # away from the near-uniform start, so the views disagree
    assert len(grid_symmetries(height, width)) == (8 if height == width else 4)
    obs = torch.as_tensor(np.stack([env.reset(seed=seed)[0] for seed in range(4)]))
    level = torch.as_tensor(env.unwrapped.level)
    for (turns, mirror), image in zip(grid_symmetries(height, width), symmetries(env.unwrapped.level), strict=True):
        turned_level = torch.rot90(level, turns)  # the teacher's level images come in the same order
        assert np.array_equal(image, (turned_level.flip(-1) if mirror else turned_level).numpy())

    def half_turn_mirrored(x: torch.Tensor) -> torch.Tensor:  # in the group of every map shape
        return torch.rot90(x, 2, dims=(-2, -1)).flip(-1)

    with torch.no_grad():
        averaged = symmetric_logits(policy, obs).view(-1, tiles, height, width)
        again = symmetric_logits(policy, half_turn_mirrored(obs)).view(-1, tiles, height, width)
        plain = policy.get_distribution(obs).distribution.logits.view(-1, tiles, height, width)
        plain_turned = policy.get_distribution(half_turn_mirrored(obs)).distribution.logits.view(-1, tiles, height, width)
    expected = half_turn_mirrored(averaged)
    real = expected > -1e8  # the tile already in a cell stays masked
    assert torch.equal(again > -1e8, real) and int(real.sum()) == len(obs) * (tiles - 1) * height * width
    assert torch.allclose(again[real], expected[real], atol=1e-4)
    assert not torch.allclose(plain_turned[real], half_turn_mirrored(plain)[real], atol=1e-2)  # one view is not equivariant
    with pytest.raises(TypeError, match="need a FullyConvPolicy"):
        symmetric_logits(object(), obs)  # type: ignore[arg-type]
    if height == width:  # a quarter turn too
        with torch.no_grad():
            quarter = symmetric_logits(policy, torch.rot90(obs, 1, dims=(-2, -1))).view(-1, tiles, height, width)
        turned_back = torch.rot90(averaged, 1, dims=(-2, -1))
        real = turned_back > -1e8
        assert torch.allclose(quarter[real], turned_back[real], atol=1e-4)


def test_search_teacher_clones_goal_levels_above_random(tmp_path: Path) -> None:
    # a 6x6 binary problem: the beam search finds goal levels, the policy clones them before RL
    sets = ["env=binary-wide", "policy=fullyconv", "channels=16", "goal_features=true", "total_timesteps=128", "num_envs=2",
            "algorithm_args.n_steps=64", "algorithm_args.batch_size=64", "levels_per_log=0", "run_name=run",
            f"output_dir={tmp_path}", "teacher_levels=60", "teacher_time_limit=0.5", "teacher_epochs=60"]
    base = {"env_args": {"problem_options": {"width": 6, "height": 6, "target_path": 4}}}
    run = train_levels(load_levels_config(None, sets, base=base), show_progress=False).run_dir
    demos = (run / "teacher" / "demos.jsonl").read_text().splitlines()
    assert len(demos) >= 50  # the search reaches nearly every start level
    record = json.loads((run / "metrics.jsonl").read_text().splitlines()[0])
    assert record["step"] == 0 and record["teacher/demonstrations"] == len(demos)
    assert record["teacher/accuracy"] > 0.15  # the most likely edit is one of the demonstration's (uniform: ~0.07)
    cloned = tmp_path / "cloned"  # the policy right after cloning, before RL
    cloned.mkdir()
    (cloned / "config.yaml").write_text((run / "config.yaml").read_text())
    shutil.copy(run / "checkpoints" / "step_0" / "model.zip", cloned / "model.zip")
    result = evaluate_levels(cloned, episodes=200, write=False)
    policy, random = result["policy"], result["random"]
    assert policy["goal_rate"] == policy["env_goal_rate"]
    assert policy["goal_rate"] > random["goal_rate"] + 0.07, (policy, random)  # 0.205 vs 0.06
    # a second run clones the first run's demonstrations without searching again
    again = train_levels(load_levels_config(None, [*sets[:-3], "run_name=again", "teacher_epochs=1",
                                                    f"teacher_file={run / 'teacher' / 'demos.jsonl'}"], base=base), show_progress=False)
    assert not (again.run_dir / "teacher").exists()
    first = json.loads((again.run_dir / "metrics.jsonl").read_text().splitlines()[0])
    assert first["teacher/demonstrations"] == len(demos)
    with pytest.raises(ConfigError, match="does not fit this environment"):
        load_levels_config(None, [*sets[:-3], "run_name=bad", f"teacher_file={run / 'teacher' / 'demos.jsonl'}"])  # 14x14
    with pytest.raises(ConfigError, match="needs policy fullyconv"):
        load_levels_config(None, ["env=binary-wide", "teacher_levels=10"])


def test_levels_teach_writes_demonstrations_for_a_teacher_file(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from rl4gen.cli import app

    out = tmp_path / "demos.jsonl"
    result = CliRunner().invoke(app, ["levels", "teach", "sokoban-wide", "--out", str(out), "--levels", "4", "--time-limit", "0.5"])
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert rows and all(row["seed"] >= 1_000_000 for row in rows)
    for row in rows:  # each demonstration's final level meets the goal within the budget (5 edits on 5x5)
        start, final = np.array(row["start"]), np.array(row["final"])
        assert 0 < (start != final).sum() <= 5
        assert check_level("sokoban", final, start).goal  # the independent checker agrees
    assert load_levels_config(None, ["env=sokoban-wide", "policy=fullyconv", f"teacher_file={out}"]).teacher_file == str(out)
    again = CliRunner().invoke(app, ["levels", "teach", "sokoban-wide", "--out", str(out)])
    assert again.exit_code == 2 and "already exists" in again.output
    bad = CliRunner().invoke(app, ["levels", "teach", "mario-wide", "--out", str(tmp_path / "x.jsonl")])
    assert bad.exit_code == 2 and "unknown level environment" in bad.output


def test_symmetric_demonstrations_keep_every_problems_statistics() -> None:
    from rl4gen.envs.levels.problems import make_problem
    from rl4gen.envs.levels.teacher import Demonstration, symmetric_demonstrations

    rng = np.random.default_rng(0)
    for name, images in (("binary", 8), ("zelda", 4), ("sokoban", 8)):
        env = gym.make(f"rl4gen/{name}-wide-v0").unwrapped
        problem = make_problem(name)
        for _ in range(20):
            start, final = env.random_level(rng), env.random_level(rng)
            out = symmetric_demonstrations([Demonstration(7, start, final)])
            assert len(out) == images and all(d.seed == 7 for d in out)
            assert np.array_equal(out[0].start, start) and np.array_equal(out[0].final, final)  # the identity first
            stats = problem.stats(problem.grid.masks(final, problem.num_tiles))
            for demo in out:  # turned or mirrored together: same edits, same statistics
                assert (demo.start != demo.final).sum() == (start != final).sum()
                image = problem.stats(problem.grid.masks(demo.final, problem.num_tiles))
                if name == "binary":  # the longest path is a two-sweep estimate: it may move by a step
                    assert image["regions"] == stats["regions"] and abs(image["path-length"] - stats["path-length"]) <= 3
                else:
                    assert image == stats
        # a symmetric level has fewer distinct images
        flat = np.zeros((problem.height, problem.width), dtype=np.uint8)
        assert len(symmetric_demonstrations([Demonstration(0, flat, flat)])) == 1
    # with the problem given, only images that still meet the goal are kept
    from rl4gen.envs.levels.ceiling import search_goal_level

    problem = make_problem("binary", width=6, height=6, target_path=4)
    env = gym.make("rl4gen/binary-wide-v0", problem_options={"width": 6, "height": 6, "target_path": 4}).unwrapped
    kept = total = searched = 0
    for seed in range(6):
        env.reset(seed=seed)
        found = search_goal_level(problem, env.level, env.max_changes, time_limit=0.5, seed=seed)
        if found.goal:
            searched += 1
            demo = Demonstration(seed, env.level, found.level)
            images = symmetric_demonstrations([demo], problem)
            total += len(symmetric_demonstrations([demo]))
            kept += len(images)
            assert np.array_equal(images[0].final, found.level)
            for image in images:
                begin = problem.stats(problem.grid.masks(image.start, 2))
                assert problem.goal(problem.stats(problem.grid.masks(image.final, 2)), begin)
    assert searched < kept <= total  # most images are kept (binary's path estimate moves only now and then)


def test_self_imitation_raises_the_sampled_goal_rate(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from typer.testing import CliRunner

    from rl4gen.cli import app
    from rl4gen.envs.levels import teacher
    from rl4gen.envs.levels.teacher import load_demonstrations
    from rl4gen.envs.levels.train import unsolved_starts

    # 5x5 binary, no teacher: the untrained policy's samples reach the goal now and then (~6%);
    # cloning those goal levels round after round makes the policy reach it more often
    sets = ["env=binary-wide", "policy=fullyconv", "channels=16", "total_timesteps=0", "levels_per_log=0", "run_name=run",
            f"output_dir={tmp_path}", "self_imitation_rounds=4", "self_imitation_starts=100", "self_imitation_samples=8",
            "self_imitation_epochs=4", "self_imitation_pool=150", "teacher_symmetries=true"]
    base = {"env_args": {"problem_options": {"width": 5, "height": 5, "target_path": 3}}}
    cfg = load_levels_config(None, sets, base=base)
    untrained = train_levels(load_levels_config(None, [*sets[:4], "run_name=untrained", f"output_dir={tmp_path}"], base=base),
                             show_progress=False).model.policy.state_dict()
    run = train_levels(cfg, show_progress=False)
    records = [json.loads(line) for line in (run.run_dir / "metrics.jsonl").read_text().splitlines()]
    rounds = [r for r in records if "self_imitation/sample_goal_rate" in r]
    assert [r["step"] for r in rounds] == [1, 2, 3, 4]
    rates = [r["self_imitation/sample_goal_rate"] for r in rounds]
    assert rates[-1] > rates[0] + 0.1, rates  # e.g. 0.07 -> 0.4
    assert all(r["self_imitation/goal_levels"] > 0 for r in rounds)
    # at most 150 demonstrations cloned a round, even when a round finds more than that
    assert all(r["self_imitation/demonstrations"] == min(150, r["self_imitation/goal_levels"] + sum(
        q["self_imitation/goal_levels"] for q in rounds[:i])) for i, r in enumerate(rounds))
    assert max(r["self_imitation/goal_levels"] for r in rounds) > 150
    trained = run.model.policy.state_dict()
    assert all(not torch.equal(untrained[k], trained[k]) for k in trained)  # seeded alike: cloning moved every parameter
    demos = [json.loads(line) for line in (run.run_dir / "teacher" / "self_demos.jsonl").read_text().splitlines()]
    assert len(demos) == sum(r["self_imitation/goal_levels"] for r in rounds)
    assert all(check_level("binary", np.array(d["final"]), np.array(d["start"]), target_path=3).goal for d in demos)
    assert all(d["seed"] >= 2_000_000 for d in demos)  # away from training's and evaluation's start levels
    result = evaluate_levels(run.run_dir, episodes=200, write=False)
    assert result["policy"]["goal_rate"] > result["random"]["goal_rate"] + 0.15, result
    # init_model starts a run from those weights exactly
    plain = train_levels(load_levels_config(None, [*sets[:4], "run_name=init", f"output_dir={tmp_path}",
                                                   f"init_model={run.run_dir / 'model.zip'}"], base=base), show_progress=False)
    assert all(torch.equal(trained[k], v) for k, v in plain.model.policy.state_dict().items())
    # continuing the rounds: from the trained policy (its first sampled rate is already high),
    # on the earlier goal levels as the pool, with new start levels and round numbers
    reads: list[str] = []
    monkeypatch.setattr(teacher, "load_demonstrations", lambda path, *a, **k: reads.append(str(path)) or load_demonstrations(path, *a, **k))
    more = train_levels(load_levels_config(None, [*sets[:5], f"output_dir={tmp_path}", "run_name=more", "self_imitation_rounds=1",
                                                  "self_imitation_first_round=4", "teacher_epochs=0", *sets[8:],
                                                  f"teacher_file={run.run_dir / 'teacher' / 'self_demos.jsonl'}",
                                                  f"init_model={run.run_dir / 'teacher' / 'model.zip'}"], base=base),
                        show_progress=False)
    assert reads == [str(run.run_dir / "teacher" / "self_demos.jsonl")]  # checked before the run folder, then reused
    [again] = [json.loads(line) for line in (more.run_dir / "metrics.jsonl").read_text().splitlines()
               if "self_imitation/sample_goal_rate" in line]
    assert again["step"] == 5 and again["self_imitation/sample_goal_rate"] > rates[0] + 0.1, (again, rates)
    assert "teacher/loss" not in (more.run_dir / "metrics.jsonl").read_text()  # teacher_epochs 0: no cloning of the file
    seeds = [json.loads(line)["seed"] for line in (more.run_dir / "teacher" / "self_demos.jsonl").read_text().splitlines()]
    assert seeds and min(seeds) >= 2_000_000 + 4 * 100 > max(d["seed"] for d in demos)
    # once trained, a run no longer needs the files that started it: evaluate, search and resume it after they moved
    run.run_dir.rename(tmp_path / "moved")
    assert 0 <= evaluate_levels(more.run_dir, episodes=4, write=False)["policy"]["goal_rate"] <= 1
    assert unsolved_starts(more.run_dir)[1]
    dry = CliRunner().invoke(app, ["train", "--resume", str(more.run_dir), "--dry-run"])
    assert dry.exit_code == 0 and "self_imitation_first_round: 4" in dry.output, dry.output
    (tmp_path / "moved").rename(run.run_dir)
    # a model of another width does not fit: one sentence, and no run folder
    with pytest.raises(ConfigError, match="'init_model' .* does not fit this run's policy"):
        train_levels(load_levels_config(None, [*sets[:2], "channels=8", *sets[3:4], "run_name=misfit", f"output_dir={tmp_path}",
                                               f"init_model={run.run_dir / 'model.zip'}"], base=base), show_progress=False)
    assert not (tmp_path / "misfit").exists()
    with pytest.raises(ConfigError, match="'init_model' names no file"):
        load_levels_config(None, [*sets[:4], f"init_model={tmp_path / 'none.zip'}"], base=base)
    with pytest.raises(ConfigError, match="'teacher_epochs' is 0"):
        load_levels_config(None, [*sets[:4], "teacher_epochs=0", f"teacher_file={run.run_dir / 'teacher' / 'self_demos.jsonl'}"], base=base)
    with pytest.raises(ConfigError, match="'self_imitation_first_round' continues"):
        load_levels_config(None, [*sets[:4], "self_imitation_first_round=3"], base=base)
    with pytest.raises(ConfigError, match="needs policy fullyconv"):
        load_levels_config(None, ["env=binary-wide", "self_imitation_rounds=2"])
    with pytest.raises(ConfigError, match="'teacher_symmetries' applies to demonstrations"):
        load_levels_config(None, ["env=binary-wide", "policy=fullyconv", "teacher_symmetries=true"])


def test_grpo_rounds_raise_the_sampled_goal_rate(tmp_path: Path) -> None:
    # 5x5 binary from an untrained policy: a clipped policy-gradient step per round on the
    # group-relative 0/1 goal reward of 8 episodes per start level (~6% reach the goal at first)
    sets = ["env=binary-wide", "policy=fullyconv", "channels=16", "total_timesteps=0", "levels_per_log=0", "run_name=run",
            f"output_dir={tmp_path}", "self_imitation_rounds=12", "self_imitation_starts=100", "self_imitation_samples=8",
            "self_imitation_epochs=4", "self_imitation_objective=grpo", "self_imitation_learning_rate=0.003"]
    base = {"env_args": {"problem_options": {"width": 5, "height": 5, "target_path": 3}}}
    untrained = train_levels(load_levels_config(None, [*sets[:4], "run_name=untrained", f"output_dir={tmp_path}"], base=base),
                             show_progress=False).model.policy.state_dict()
    run = train_levels(load_levels_config(None, sets, base=base), show_progress=False)
    rounds = [json.loads(line) for line in (run.run_dir / "metrics.jsonl").read_text().splitlines()
              if "self_imitation/sample_goal_rate" in line]
    assert [r["step"] for r in rounds] == list(range(1, 13))
    rates = [r["self_imitation/sample_goal_rate"] for r in rounds]
    assert rates[0] < 0.12 and max(rates[-3:]) > rates[0] + 0.2, rates  # e.g. 0.06 -> 0.4
    assert all(0 < r["self_imitation/steps"] and r["self_imitation/approx_kl"] < 0.1 for r in rounds)
    assert "self_imitation/demonstrations" not in rounds[0]  # no cloning
    trained = run.model.policy.state_dict()
    changed = [k for k in trained if not torch.equal(untrained[k], trained[k])]
    assert changed and all("value_net" not in k for k in changed)  # the actor moved; no critic in this loss
    result = evaluate_levels(run.run_dir, episodes=200, write=False)
    assert result["policy"]["goal_rate"] > result["random"]["goal_rate"] + 0.15, result
    with pytest.raises(ConfigError, match="self_imitation_objective"):
        load_levels_config(None, [*sets[:4], "self_imitation_rounds=1", "self_imitation_objective=ppo"], base=base)


def test_guides_searched_on_unsolved_starts_join_the_grpo_rounds(tmp_path: Path) -> None:
    # a run's rounds leave start levels no sample solved; `levels teach --unsolved-by` searches
    # goal levels for them, and a guided run's updates raise the policy's probability of their
    # edits far more than the same rounds without them
    from typer.testing import CliRunner

    from rl4gen.cli import app
    from rl4gen.envs.levels.teacher import (
        SELF_SEED_OFFSET,
        Demonstration,
        demonstration_steps,
        load_demonstrations,
    )
    from rl4gen.envs.levels.train import _make_env, unsolved_starts

    base = {"env_args": {"problem_options": {"width": 5, "height": 5, "target_path": 6}}}
    sets = ["env=binary-wide", "policy=fullyconv", "channels=8", "total_timesteps=0", "levels_per_log=0", f"output_dir={tmp_path}",
            "self_imitation_starts=40", "self_imitation_samples=4", "self_imitation_epochs=2", "self_imitation_objective=grpo",
            "self_imitation_learning_rate=0.003", "teacher_symmetries=true"]
    first = train_levels(load_levels_config(None, [*sets, "run_name=first", "self_imitation_rounds=2"], base=base), show_progress=False)
    cfg, unsolved = unsolved_starts(first.run_dir)
    solved = {json.loads(line)["seed"] for line in (first.run_dir / "teacher" / "self_demos.jsonl").read_text().splitlines()}
    rounds = [range(SELF_SEED_OFFSET + r * 40, SELF_SEED_OFFSET + (r + 1) * 40) for r in (1, 0)]  # the last round first
    assert unsolved == [seed for r in rounds for seed in r if seed not in solved] and len(unsolved) > 20
    guides = tmp_path / "guides.jsonl"
    result = CliRunner().invoke(app, ["levels", "teach", "binary-wide", "--unsolved-by", str(first.run_dir), "--levels", "12",
                                      "--time-limit", "1", "--out", str(guides)])
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in guides.read_text().splitlines()]
    assert len(rows) >= 6 and all(row["seed"] in unsolved[:12] for row in rows)
    env = _make_env(cfg, 0, None)
    demos = load_demonstrations(guides, (5, 5), 2)
    obs, actions = demonstration_steps(env, demos, np.random.default_rng(0))
    assert len(demos) == len(rows) and 0 < len(actions) <= sum(int((d.start != d.final).sum()) for d in demos)  # an episode may end at the goal early
    none_obs, none_actions = demonstration_steps(env, [Demonstration(0, demos[0].final, demos[0].final)], np.random.default_rng(0))
    assert none_obs.shape == (0, *obs.shape[1:]) and none_actions.shape == (0,)  # nothing to edit: no steps

    def guide_logp(run: Any) -> float:
        with torch.no_grad():
            distribution = run.model.policy.get_distribution(torch.as_tensor(obs))
            return float(distribution.log_prob(torch.as_tensor(actions)).mean())

    start = train_levels(load_levels_config(None, [*sets[:-1], "run_name=start"], base=base), show_progress=False)  # no rounds
    plain, guided = (train_levels(load_levels_config(None, [*sets, f"run_name={name}", "self_imitation_rounds=4", "self_imitation_epochs=8", *extra], base=base),
                                  show_progress=False)
                     for name, extra in (("plain", []), ("guided", [f"self_imitation_guide_file={guides}", "self_imitation_guides=8", "self_imitation_guide_advantage=4"])))
    before = guide_logp(start)
    # measured: -3.22 at the start, -3.20 after the plain rounds, -2.95 after the guided ones
    assert guide_logp(guided) > before + 0.15 and guide_logp(guided) > guide_logp(plain) + 0.15, (before, guide_logp(plain), guide_logp(guided))
    rounds_logged = [json.loads(line) for line in (guided.run_dir / "metrics.jsonl").read_text().splitlines() if "guide_steps" in line]
    assert len(rounds_logged) == 4 and all(r["self_imitation/guide_steps"] > 8 for r in rounds_logged)  # 8 guides under symmetries
    with pytest.raises(ConfigError, match="'self_imitation_guide_file' joins grpo rounds"):
        load_levels_config(None, [*sets, "self_imitation_objective=clone", "self_imitation_rounds=1", f"self_imitation_guide_file={guides}"], base=base)
    with pytest.raises(ConfigError, match="self_imitation_guide_file .* does not exist"):
        load_levels_config(None, [*sets, "self_imitation_rounds=1", f"self_imitation_guide_file={tmp_path / 'none.jsonl'}"], base=base)
    with pytest.raises(ConfigError, match="has no self-imitation rounds"):
        unsolved_starts(start.run_dir)
    wrong = CliRunner().invoke(app, ["levels", "teach", "sokoban-wide", "--unsolved-by", str(first.run_dir), "--out", str(tmp_path / "x.jsonl")])
    assert wrong.exit_code == 2 and "trained on binary-wide, not sokoban-wide" in wrong.output and not (tmp_path / "x.jsonl").exists()


def test_guided_sokoban_config_and_its_sharpening_continuation_validate(tmp_path: Path) -> None:
    # configs/levels/sokoban-wide-guided.yaml and the continuation its header gives, with stand-in files
    repo = Path(__file__).resolve().parents[2]
    model, guides = tmp_path / "model.zip", tmp_path / "guides.jsonl"
    model.write_bytes(b"")
    level = [[1, 1, 1, 1, 1], [1, 2, 0, 0, 1], [1, 0, 3, 0, 1], [1, 0, 0, 4, 1], [1, 1, 1, 1, 1]]
    guides.write_text(json.dumps({"seed": 1, "start": level, "final": level}) + "\n")
    config = repo / "configs/levels/sokoban-wide-guided.yaml"
    cfg = load_levels_config(config, [f"init_model={model}", f"self_imitation_guide_file={guides}"])
    assert cfg.self_imitation_objective == "grpo" and cfg.teacher_symmetries and cfg.rule_planes and cfg.self_imitation_guides == 150
    sharpen = load_levels_config(config, [f"init_model={model}", "self_imitation_guide_file=null", "self_imitation_first_round=115",
                                          "self_imitation_rounds=27", "self_imitation_epochs=4"])
    assert sharpen.self_imitation_guide_file is None and sharpen.self_imitation_epochs == 4


def test_rounds_sample_the_same_episodes_in_worker_processes(tmp_path: Path) -> None:
    # each batch of 100 start levels seeds its own sampling: 2 worker processes give the run of 1
    sets = ["env=binary-wide", "policy=fullyconv", "channels=8", "total_timesteps=0", "levels_per_log=0",
            f"output_dir={tmp_path}", "self_imitation_rounds=2", "self_imitation_starts=300", "self_imitation_samples=4",
            "self_imitation_epochs=1", "self_imitation_objective=grpo", "self_imitation_learning_rate=0.003"]
    base = {"env_args": {"problem_options": {"width": 5, "height": 5, "target_path": 3}}}
    runs = [train_levels(load_levels_config(None, [*sets, f"run_name=w{n}", f"self_imitation_workers={n}"], base=base),
                         show_progress=False) for n in (1, 2)]
    metrics = [[{k: v for k, v in json.loads(line).items() if k not in ("self_imitation/seconds", "time")}
                for line in (run.run_dir / "metrics.jsonl").read_text().splitlines() if "sample_goal_rate" in line] for run in runs]
    assert len(metrics[0]) == 2 and metrics[0] == metrics[1]
    assert metrics[0][1]["self_imitation/sample_goal_rate"] != metrics[0][0]["self_imitation/sample_goal_rate"]
    one, two = (run.model.policy.state_dict() for run in runs)
    assert all(torch.equal(one[k], two[k]) for k in one)
    with pytest.raises(ConfigError, match="self_imitation_workers"):
        load_levels_config(None, [*sets, "self_imitation_workers=0"], base=base)


def test_play_episodes_reuses_environments_without_changing_the_episodes() -> None:
    # the rounds' sampling keeps its environments between batches: a list of environments that
    # already played other start levels, and more of them than the batch needs, plays the episodes
    # of new ones (random actions, seeded per episode, through the goal features' and rule planes' wrappers)
    from rl4gen.envs.levels.evaluate import play_episodes
    from rl4gen.envs.levels.train import _make_env

    cfg = load_levels_config(None, ["env=sokoban-wide", "policy=fullyconv", "goal_features=true", "rule_planes=true"])

    def make_env() -> gym.Env:
        return _make_env(cfg, 0, None)

    seeds = [5, 6, 7, 5, 8, 9]
    fresh = play_episodes(make_env, seeds, None, record=True)
    kept: list[gym.Env] = []
    play_episodes(make_env, list(range(100, 108)), None, envs=kept)
    assert len(kept) == 8
    again = play_episodes(make_env, seeds, None, record=True, envs=kept)
    assert len(kept) == 8  # lent, not replaced
    for key in ("starts", "finals", "observations", "actions"):
        assert all(np.array_equal(a, b) for a, b in zip(fresh[key], again[key], strict=True)), key
    assert fresh["env_goals"] == again["env_goals"] and fresh["lengths"] == again["lengths"]
    more = play_episodes(make_env, list(range(20)), None, envs=kept)
    assert len(kept) == 20 and len(more["finals"]) == 20
    for env in kept:
        env.close()


def test_sokoban_rule_planes_mark_dead_cells_and_pushable_crates() -> None:
    problem = make_problem("sokoban")
    empty, solid, player, crate, target = range(5)
    # an open 5x5 room, the target in the middle: a crate on the wall side can never leave it
    level = np.full((5, 5), empty, np.uint8)
    level[2, 2], level[0, 0], level[0, 1], level[4, 4] = target, player, crate, crate
    dead, pushable = problem.rule_planes(problem.grid.masks(level, 5))
    planes = problem.grid.planes([dead, pushable])
    inner = np.zeros((5, 5), bool)
    inner[1:4, 1:4] = True
    assert np.array_equal(planes[0], ~inner)
    # (1, 0): the player stands left of it and (2, 0) is free; (4, 4): nothing beyond it either way
    assert np.argwhere(planes[1]).tolist() == [[0, 1]]
    # soundness against the solver: one target, one crate on a cell marked dead, random walls:
    # no player start solves it; the open cells not marked dead mostly do
    rng = np.random.default_rng(0)
    pitch, checked, solvable_live, live_cells = problem.grid.pitch, 0, 0, 0
    for _ in range(60):
        level = np.where(rng.random((5, 5)) < 0.3, solid, empty).astype(np.uint8)
        cells = [problem.grid.bit(x, y) for y, x in np.argwhere(level == empty)]
        if len(cells) < 3:
            continue
        goal = cells[rng.integers(len(cells))]
        passable = sum(cells)
        dead = sokoban_dead_cells(goal, passable, pitch)
        assert dead & goal == 0 and dead & ~passable == 0
        for box in cells:
            if box == goal:
                continue
            solved = any(solve_sokoban(start, box, goal, passable, pitch, 20_000)[0] == 0 for start in cells if start != box)
            if dead & box:
                assert not solved, (level, problem.grid.xy(box), problem.grid.xy(goal))
                checked += 1
            else:
                live_cells += 1
                solvable_live += solved
    assert checked > 200 and solvable_live > 0.6 * live_cells, (checked, solvable_live, live_cells)


@pytest.mark.filterwarnings("ignore:.*different from the unwrapped version")
def test_goal_features_add_rule_planes_for_sokoban_only(tmp_path: Path) -> None:
    env = GoalFeatures(OneHotObservation(FlatWideAction(gym.make("rl4gen/sokoban-wide-v0"))), rule_planes=True)
    check_env(env, skip_render_check=True)
    plain = GoalFeatures(OneHotObservation(FlatWideAction(gym.make("rl4gen/sokoban-wide-v0"))))
    for seed in range(5):
        obs, _ = env.reset(seed=seed)
        assert obs.shape == (5 + 4 + 5 + 2, 5, 5)
        assert np.array_equal(obs[:-2], plain.reset(seed=seed)[0])  # the same planes first, the rules last
        problem = env.unwrapped.problem
        assert np.array_equal(obs[-2:], problem.grid.planes(problem.rule_planes(env.unwrapped.masks)))
    with pytest.raises(ValueError, match="defines no rule planes"):
        GoalFeatures(OneHotObservation(FlatWideAction(gym.make("rl4gen/zelda-wide-v0"))), rule_planes=True)
    with pytest.raises(ConfigError, match="'rule_planes' adds to the goal features"):
        load_levels_config(None, ["env=sokoban-wide", "rule_planes=true"])
    with pytest.raises(ConfigError, match="'rule_planes' is defined for sokoban only"):
        load_levels_config(None, ["env=binary-wide", "goal_features=true", "rule_planes=true"])
    # a run with the planes trains, saves and evaluates with them
    sets = ["env=sokoban-wide", "policy=fullyconv", "channels=8", "goal_features=true", "rule_planes=true", "total_timesteps=256",
            "num_envs=2", "algorithm_args.n_steps=64", "algorithm_args.batch_size=64", "levels_per_log=0", "run_name=run",
            f"output_dir={tmp_path}"]
    trained = train_levels(load_levels_config(None, sets), show_progress=False)
    assert trained.model.observation_space.shape == (16, 5, 5)
    result = evaluate_levels(trained.run_dir, episodes=8, write=False)
    assert result["episodes"] == 8 and 0 <= result["policy"]["goal_rate"] <= 1


@pytest.mark.parametrize("name", ["sokoban", "binary"])
def test_goal_edits_are_exactly_the_single_edits_the_checker_accepts(name: str) -> None:
    # the levels one edit short of a search demonstration's goal level: every edit of every cell,
    # judged by the independent checker (plain BFS, the exhaustive solver), against goal_edits
    from rl4gen.envs.levels.check import check_level
    from rl4gen.envs.levels.teacher import goal_edits, search_demonstrations

    options = {"binary": {"width": 6, "height": 6, "target_path": 6}, "sokoban": {}}[name]
    env = FlatWideAction(gym.make(f"rl4gen/{name}-wide-v0", problem_options=options))
    problem = env.unwrapped.problem
    targets = {"target_path": 6} if name == "binary" else {}
    demos = search_demonstrations(env, 6, 1_000_000, 1.0)
    tried = flagged = 0
    for demo in demos:
        differing = np.argwhere(demo.start != demo.final)
        if len(differing) < 2:
            continue
        y, x = differing[0]
        level = demo.final.copy()
        level[y, x] = demo.start[y, x]  # one edit short of the goal level
        mask = goal_edits(problem, level, demo.start).reshape(problem.num_tiles, problem.height, problem.width)
        assert mask[demo.final[y, x], y, x]  # the edit the search made is one
        for t, yy, xx in np.ndindex(mask.shape):
            child = level.copy()
            child[yy, xx] = t
            expected = t != level[yy, xx] and check_level(name, child, demo.start, **targets).goal
            assert mask[t, yy, xx] == expected, (t, yy, xx)
            tried += 1
        flagged += int(mask.sum())
    assert tried >= 2 * problem.num_tiles * problem.height * problem.width and flagged >= 2
    env.close()


def test_goal_edits_in_grpo_rounds_raise_the_rate(tmp_path: Path) -> None:
    # 5x5 binary from an untrained policy, the same 4 grpo rounds: plain; with the states that
    # had a one-step goal edit as an auxiliary loss (measured: 0.064 -> 0.117 plain, -> 0.304 with
    # it; goal edits taken where there 0.10 -> 0.23); with the missed ones as counterfactual
    # successes in the clipped update (-> 0.136: gentler)
    sets = ["env=binary-wide", "policy=fullyconv", "channels=16", "total_timesteps=0", "levels_per_log=0", f"output_dir={tmp_path}",
            "self_imitation_rounds=4", "self_imitation_starts=100", "self_imitation_samples=8", "self_imitation_epochs=4",
            "self_imitation_objective=grpo", "self_imitation_learning_rate=0.003"]
    base = {"env_args": {"problem_options": {"width": 5, "height": 5, "target_path": 3}}}
    rounds = {}
    for name, extra in (("plain", []), ("aux", ["self_imitation_goal_edits=1", "self_imitation_goal_edit_weight=1"]),
                        ("counterfactual", ["self_imitation_goal_edits=1"])):
        run = train_levels(load_levels_config(None, [*sets, f"run_name={name}", *extra], base=base), show_progress=False)
        rounds[name] = [json.loads(line) for line in (run.run_dir / "metrics.jsonl").read_text().splitlines() if "sample_goal_rate" in line]
    plain, aux = ([r["self_imitation/sample_goal_rate"] for r in rounds[k]] for k in ("plain", "aux"))
    assert plain[0] == aux[0] and aux[-1] > plain[-1] + 0.1, (plain, aux)  # the same first round: same seeds
    taken = [r["self_imitation/goal_edit_taken"] for r in rounds["aux"]]
    assert taken[-1] > taken[0] + 0.08 and all(0 < r["self_imitation/goal_edit_states"] < 1 for r in rounds["aux"]), taken
    assert all(r["self_imitation/aux_loss"] > 0 for r in rounds["aux"]) and "self_imitation/goal_edit_taken" not in rounds["plain"][0]
    # counterfactual successes are extra steps of the update, on top of the sampled ones
    first = rounds["counterfactual"][0]
    assert first["self_imitation/goal_edit_steps"] > 100 and first["self_imitation/steps"] > rounds["plain"][0]["self_imitation/steps"]
    with pytest.raises(ConfigError, match="'self_imitation_goal_edits' joins grpo rounds"):
        load_levels_config(None, [*sets, "self_imitation_objective=clone", "self_imitation_goal_edits=0.5"], base=base)
    with pytest.raises(ConfigError, match="'self_imitation_goal_edit_weight' weighs the goal edits"):
        load_levels_config(None, [*sets, "self_imitation_goal_edit_weight=1"], base=base)
    with pytest.raises(ConfigError, match="'self_imitation_goal_edits' has an invalid value 2"):
        load_levels_config(None, [*sets, "self_imitation_goal_edits=2"], base=base)
