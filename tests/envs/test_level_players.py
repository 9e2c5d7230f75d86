"""Play environments, the scripted player, traces, player models (BC, GAIL, RL) and the
difficulty_balance reward."""

from __future__ import annotations

import json

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium.utils.env_checker import check_env
from typer.testing import CliRunner

import rl4gen.envs  # noqa: F401  (registers the environments)
from rl4gen.cli import app
from rl4gen.envs.levels.check import sokoban_moves
from rl4gen.envs.levels.play import (
    PlayEnv,
    ScriptedPlayer,
    plan,
    random_levels,
    read_traces,
    record_scripted,
    replay,
)
from rl4gen.envs.levels.players import (
    GailDiscriminator,
    PlayerModel,
    behaviour_cloning,
    finetune,
    load_player,
    make_player,
    playtest,
    save_player,
    trace_pairs,
)
from rl4gen.envs.levels.render import parse_level
from rl4gen.rewards.levels import DifficultyBalanceReward, band_score

runner = CliRunner()

ZELDA = ["#######", "#@....#", "#..#k.#", "#D.#b.#", "#######"]
SOKOBAN = ["#####", "#@..#", "#.$.#", "#..x#", "#####"]


def lv(rows: list[str], problem: str) -> np.ndarray:
    return parse_level("\n".join(rows), problem)


@pytest.mark.parametrize("problem", ["zelda", "sokoban"])
@pytest.mark.parametrize("observation", ["egocentric", "map"])
def test_check_env(problem: str, observation: str) -> None:
    rows = ZELDA if problem == "zelda" else SOKOBAN
    env = gym.make(f"rl4gen/{problem}-play-v0", levels=[rows], observation=observation)
    check_env(env.unwrapped, skip_render_check=True)
    obs, _ = env.reset(seed=0)
    assert env.observation_space.contains(obs)
    h, w = (5, 7) if problem == "zelda" else (5, 5)
    assert obs.shape == (
        (6 if problem == "zelda" else 4),
        *((h, w) if observation == "map" else (2 * h - 1, 2 * w - 1)),
    )


def test_zelda_rules() -> None:
    env = PlayEnv("zelda", levels=[ZELDA])
    env.reset(seed=0)
    assert [env.step(a)[4]["event"] for a in (0, 3, 3)] == [
        "blocked",
        "move",
        "blocked",
    ]  # wall; door needs the key
    env.reset(seed=0)
    events = [
        env.step(a)[1:3] for a in (1, 1, 1, 3, 3)
    ]  # right 3, down onto the key, down onto the bat
    assert events[-2] == (0.5, False) and events[-1] == (-1.0, True)
    env.reset(seed=0)
    actions = plan("zelda", lv(ZELDA, "zelda"))
    steps = [env.step(a) for a in actions]
    assert (
        [s[4]["event"] for s in steps].count("key") == 1
        and steps[-1][4]["event"] == "win"
        and steps[-1][1] == 1.0
    )
    assert len(actions) == 10  # 4 moves to the key, 6 around the wall to the door
    assert "k" not in env.ansi() and "@" in env.ansi()


def test_sokoban_rules_and_plan_matches_independent_solver() -> None:
    env = PlayEnv("sokoban", levels=[SOKOBAN])
    env.reset(seed=0)
    assert env.step(2)[4]["event"] == "blocked"  # wall above
    env.step(1)  # (2, 1)
    _, _, term, _, info = env.step(3)  # push the crate down to (2, 3)
    assert info["event"] == "move" and not term
    for level in random_levels("sokoban", 5, seed=3):
        actions = plan("sokoban", level)
        ys, xs = np.nonzero(level == 2)
        cells = lambda t, level=level: {
            (x, y) for y, x in zip(*np.nonzero(level == t), strict=True)
        }
        floor = {(x, y) for y, x in zip(*np.nonzero(level != 1), strict=True)}
        assert len(actions) == sokoban_moves((int(xs[0]), int(ys[0])), cells(3), cells(4), floor)


@pytest.mark.parametrize("problem", ["zelda", "sokoban"])
def test_scripted_player_wins_valid_levels_and_traces_replay(problem: str) -> None:
    levels = random_levels(problem, 16, seed=5)
    traces = record_scripted(problem, levels)
    assert all(t["outcome"] == "win" for t in traces)
    assert [t["steps"] for t in traces] == [len(plan(problem, lv)) for lv in levels]
    obs, acts = replay(problem, {**traces[0], "array": levels[0]})
    assert len(obs) == len(acts) == traces[0]["steps"]
    noisy = playtest(levels, ScriptedPlayer(0.5, seed=1), problem=problem, episodes=2)
    assert noisy["success_rate"] < 1.0 and noisy["steps_ratio"] > 1.0


def test_record_traces_from_stdin(tmp_path) -> None:
    path = tmp_path / "traces.jsonl"
    # two sokoban levels (seed 0) played by hand
    result = runner.invoke(
        app,
        ["levels", "play", "--problem", "sokoban", "--levels", "2", "--record", str(path)],
        input="d\nsw\nleft\nq\n",
    )
    assert result.exit_code == 0, result.output
    traces = read_traces(path)
    # right, then down pushes the crate onto its target: won, the rest of the line is ignored
    assert [t["actions"] for t in traces] == [[1, 3], [0]]
    assert [t["outcome"] for t in traces] == ["win", "quit"] and traces[0]["player"] == "human"
    # a scripted recording wins every level; a bad file names the problem
    result = runner.invoke(
        app,
        [
            "levels",
            "play",
            "--problem",
            "zelda",
            "--scripted",
            "--levels",
            "3",
            "--record",
            str(path),
        ],
    )
    assert result.exit_code == 0 and "3 won" in result.output
    (tmp_path / "bad.jsonl").write_text('{"problem": "zelda"}\n')
    result = runner.invoke(
        app,
        [
            "levels",
            "train-player",
            "--traces",
            str(tmp_path / "bad.jsonl"),
            "--output",
            str(tmp_path / "p"),
        ],
    )
    assert result.exit_code != 0 and "is not a trace" in result.output


def test_behaviour_cloning_beats_random_on_held_out_levels(tmp_path) -> None:
    torch.manual_seed(0)
    train = random_levels("zelda", 150, seed=0)
    held_out = random_levels("zelda", 32, seed=1)
    traces = record_scripted("zelda", train)
    obs, acts = trace_pairs(traces, "zelda")
    model = PlayerModel("zelda", obs.shape[1:], "egocentric", features_dim=128)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    untrained = playtest(held_out, model, episodes=1)["success_rate"]
    random = playtest(held_out, "random", problem="zelda", episodes=2)["success_rate"]
    history = behaviour_cloning(model, obs, acts, epochs=15)
    assert history[-1]["bc/loss"] < history[0]["bc/loss"]
    assert any(not torch.equal(before[k], v) for k, v in model.state_dict().items())
    cloned = playtest(held_out, model, episodes=2)["success_rate"]
    assert cloned > max(random, untrained) + 0.2, (cloned, random, untrained)  # about 0.58 vs 0.03
    # saved and loaded, it plays the same
    loaded = load_player(save_player(model, tmp_path / "player"))
    assert playtest(held_out[:8], loaded, episodes=1, seed=3) == playtest(
        held_out[:8], model, episodes=1, seed=3
    )
    assert json.loads((tmp_path / "player" / "player.json").read_text())["problem"] == "zelda"


def test_gail_discriminator_learns_a_separable_case() -> None:
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    shape = (4, 9, 9)
    real_obs = np.zeros((64, *shape), dtype=np.uint8)
    real_obs[:, 0] = 1
    fake_obs = (rng.random((64, *shape)) < 0.3).astype(np.uint8)
    real_act, fake_act = np.zeros(64, dtype=np.int64), np.full(64, 3, dtype=np.int64)
    disc = GailDiscriminator(shape)
    before = [p.detach().clone() for p in disc.parameters()]
    first = disc.update(real_obs, real_act, fake_obs, fake_act)
    assert set(first) == {"discriminator/acc_real", "discriminator/acc_fake", "discriminator/loss"}
    for _ in range(30):
        last = disc.update(real_obs, real_act, fake_obs, fake_act)
    assert last["discriminator/loss"] < first["discriminator/loss"]
    assert last["discriminator/acc_real"] == last["discriminator/acc_fake"] == 1.0
    assert any(not torch.equal(a, b) for a, b in zip(before, disc.parameters(), strict=True))
    assert (
        disc.reward(real_obs[:4], real_act[:4]).min()
        > disc.reward(fake_obs[:4], fake_act[:4]).max()
    )


@pytest.mark.parametrize("with_traces", [True, False])
def test_finetune_updates_the_player(with_traces: bool) -> None:
    levels = random_levels("sokoban", 8, seed=2)
    traces = record_scripted("sokoban", levels) if with_traces else None
    model = make_player("sokoban", features_dim=32)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    history = finetune(
        model,
        levels,
        steps=2,
        episodes_per_step=4,
        traces=traces,
        bc_weight=0.5 if with_traces else 0.0,
    )
    assert len(history) == 2 and "player/success_rate" in history[-1]
    assert ("discriminator/acc_real" in history[-1]) == with_traces
    assert any(not torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_difficulty_balance_ranks_trivial_balanced_impossible() -> None:
    trivial = ["###########", "#@kD......#", "#.........#", *["###########"] * 4]
    balanced = [
        "###########",
        "#bbbbbbbb.#",
        "#@.......kD",
        *["###########"] * 4,
    ]  # bats along the corridor
    impossible = [
        "###########",
        "#@k....#D.#",
        "#......####",
        *["###########"] * 4,
    ]  # door walled off
    reward = DifficultyBalanceReward("zelda", player="scripted:0.3", band=(0.3, 0.7), episodes=32)
    scores = reward(
        ["|".join(r) for r in (trivial, balanced, impossible)] + ["not a level"], [None] * 4
    )
    assert (
        scores[1] == 1.0 and scores[1] > scores[0] and scores[1] > scores[2] and scores[3] == -1.0
    )
    assert band_score(0.0, 0.3, 0.7) == band_score(1.0, 0.3, 0.7) == 0.0
    with pytest.raises(ValueError, match="band"):
        DifficultyBalanceReward("zelda", band=(0.8, 0.2))
    with pytest.raises(ValueError, match="plays zelda and sokoban"):
        DifficultyBalanceReward("binary")


def test_train_player_command(tmp_path) -> None:
    traces = tmp_path / "t.jsonl"
    assert (
        runner.invoke(
            app,
            [
                "levels",
                "play",
                "--problem",
                "sokoban",
                "--scripted",
                "--levels",
                "20",
                "--record",
                str(traces),
            ],
        ).exit_code
        == 0
    )
    out = tmp_path / "player"
    result = runner.invoke(
        app,
        [
            "levels",
            "train-player",
            "--problem",
            "sokoban",
            "--traces",
            str(traces),
            "--output",
            str(out),
            "--epochs",
            "2",
        ],
    )
    assert result.exit_code == 0, result.output
    assert (out / "model.safetensors").is_file() and load_player(out).problem == "sokoban"
    result = runner.invoke(
        app, ["levels", "playtest", str(out), "--levels", "4", "--episodes", "1"]
    )
    assert result.exit_code == 0 and "success_rate=" in result.output
    result = runner.invoke(
        app, ["levels", "train-player", "--problem", "sokoban", "--output", str(out)]
    )
    assert result.exit_code != 0 and "--traces" in result.output
