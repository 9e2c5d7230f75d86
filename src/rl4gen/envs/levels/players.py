"""Player models: a small policy that plays zelda and sokoban levels, trained by behaviour cloning
on traces, fine-tuned with a GAIL-style discriminator reward (or plain RL without traces), and
used as a playtester whose success rate is a level's difficulty estimate.

- ``PlayerModel``: ``LevelCNN`` over the play environment's one-hot observation, a linear head
  to the four moves.
- ``behaviour_cloning``: cross-entropy on the (observation, action) pairs of replayed traces.
- ``GailDiscriminator``: logits of "this state-action pair is the recorded player's" (Ho &
  Ermon, "Generative Adversarial Imitation Learning", 2016); ``update`` takes one step of binary
  cross-entropy, trace pairs labelled 1 and model pairs 0, and reports
  ``discriminator/acc_real``, ``discriminator/acc_fake``, ``discriminator/loss``;
  ``reward`` is the logit ``log D − log(1 − D)`` (signed, so that it does not reward survival).
- ``finetune``: REINFORCE with a batch-mean baseline over episodes on training levels; the step
  reward is the environment's (+1 win, +0.5 key, −1 death) plus ``gail_weight`` × the
  discriminator's reward (0 = plain RL), with an optional behaviour-cloning term.
- ``playtest``: success rate, mean steps, steps over the optimal plan's, and
  ``difficulty = 1 − success rate``.

A trained player is a folder: ``model.safetensors`` and ``player.json`` (problem, observation,
level size, network width, how it was trained).
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from gymnasium import spaces
from torch import nn
from torch.nn import functional as F

from rl4gen.envs.levels.networks import LevelCNN
from rl4gen.envs.levels.play import PlayEnv, ScriptedPlayer, plan, read_traces, replay

__all__ = [
    "GailDiscriminator",
    "PlayerModel",
    "behaviour_cloning",
    "finetune",
    "load_player",
    "make_player",
    "playtest",
    "rollout",
    "save_player",
    "trace_pairs",
]

PLAYER_FILE = "player.json"
WEIGHTS_FILE = "model.safetensors"


class PlayerModel(nn.Module):
    """A policy over the four moves: ``LevelCNN`` (width ``features_dim``) and a linear head."""

    def __init__(
        self,
        problem: str,
        obs_shape: Sequence[int],
        observation: str = "egocentric",
        features_dim: int = 128,
    ) -> None:
        super().__init__()
        self.problem, self.observation, self.obs_shape, self.features_dim = (
            problem,
            observation,
            tuple(obs_shape),
            features_dim,
        )
        space = spaces.Box(0, 1, self.obs_shape, dtype=np.uint8)
        self.trunk = LevelCNN(space, features_dim)
        self.head = nn.Linear(features_dim, 4)
        self.info: dict[str, Any] = {}

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return self.head(self.trunk(obs))

    @torch.no_grad()
    def act(
        self, obs: np.ndarray, greedy: bool = False, generator: torch.Generator | None = None
    ) -> np.ndarray:
        """Actions for a batch of observations (sampled, or the most likely with ``greedy``)."""
        logits = self(torch.as_tensor(np.asarray(obs)))
        if greedy:
            return logits.argmax(-1).numpy()
        return torch.multinomial(logits.softmax(-1), 1, generator=generator).squeeze(-1).numpy()


def make_player(
    problem: str,
    observation: str = "egocentric",
    width: int | None = None,
    height: int | None = None,
    features_dim: int = 128,
) -> PlayerModel:
    """An untrained player for ``problem``'s play environment."""
    env = PlayEnv(problem, levels=[_blank(problem, width, height)], observation=observation)
    shape = env.observation_space.shape
    assert shape is not None
    return PlayerModel(problem, shape, observation, features_dim)


def _blank(problem: str, width: int | None, height: int | None) -> np.ndarray:
    from rl4gen.envs.levels.play import SIZES

    w, h = width or SIZES[problem][0], height or SIZES[problem][1]
    level = np.zeros((h, w), dtype=np.uint8)
    level[0, 0] = 2  # one player
    return level


# ---------------------------------------------------------------------------- rollouts


@dataclass
class Rollout:
    """Episodes played by a model: per step observations, actions and rewards, per episode the
    outcome."""

    obs: list[np.ndarray] = field(default_factory=list)
    actions: list[np.ndarray] = field(default_factory=list)
    rewards: list[np.ndarray] = field(default_factory=list)
    wins: list[bool] = field(default_factory=list)
    steps: list[int] = field(default_factory=list)


def rollout(
    model: PlayerModel,
    levels: Sequence[np.ndarray],
    greedy: bool = False,
    seed: int = 0,
    max_steps: int | None = None,
) -> Rollout:
    """Play each level once with ``model``, all levels stepped together (one forward per step)."""
    envs = [
        PlayEnv(model.problem, levels=[lv], observation=model.observation, max_steps=max_steps)
        for lv in levels
    ]
    obs = [e.reset(seed=seed + i)[0] for i, e in enumerate(envs)]
    gen = torch.Generator().manual_seed(seed)
    out = Rollout()
    ep_obs: list[list[np.ndarray]] = [[] for _ in envs]
    ep_act: list[list[int]] = [[] for _ in envs]
    ep_rew: list[list[float]] = [[] for _ in envs]
    alive = list(range(len(envs)))
    done: dict[int, tuple[bool, int]] = {}
    while alive:
        actions = model.act(np.stack([obs[i] for i in alive]), greedy=greedy, generator=gen)
        still = []
        for i, a in zip(alive, actions, strict=True):
            ep_obs[i].append(obs[i])
            ep_act[i].append(int(a))
            obs[i], r, terminated, truncated, info = envs[i].step(int(a))
            ep_rew[i].append(r)
            if terminated or truncated:
                done[i] = (bool(info["win"]), envs[i].steps)
            else:
                still.append(i)
        alive = still
    for i in range(len(envs)):
        out.obs.append(np.array(ep_obs[i], dtype=np.uint8))
        out.actions.append(np.array(ep_act[i], dtype=np.int64))
        out.rewards.append(np.array(ep_rew[i], dtype=np.float32))
        out.wins.append(done[i][0])
        out.steps.append(done[i][1])
    return out


# ---------------------------------------------------------------------------- behaviour cloning


def trace_pairs(
    traces: Sequence[dict[str, Any]],
    problem: str,
    observation: str = "egocentric",
    outcomes: Sequence[str] | None = ("win",),
) -> tuple[np.ndarray, np.ndarray]:
    """All (observation, action) pairs of the traces (those with an outcome in ``outcomes``; None
    = every trace), replayed in the play environment."""
    obs, acts = [], []
    for record in traces:
        if outcomes is not None and record.get("outcome") not in outcomes:
            continue
        o, a = replay(problem, record, observation)
        obs.append(o)
        acts.append(a)
    if not obs:
        raise ValueError(
            f"no {problem} trace ends in {', '.join(outcomes or ['anything'])}: record winning traces first."
        )
    return np.concatenate(obs), np.concatenate(acts)


def behaviour_cloning(
    model: PlayerModel,
    obs: np.ndarray,
    actions: np.ndarray,
    epochs: int = 20,
    batch_size: int = 256,
    learning_rate: float = 1e-3,
    seed: int = 0,
) -> list[dict[str, float]]:
    """Fit ``model`` to the pairs by cross-entropy; one metrics record per epoch
    (``bc/loss``, ``bc/accuracy``)."""
    torch.manual_seed(seed)
    opt = torch.optim.Adam(model.parameters(), lr=learning_rate)
    x, y = torch.as_tensor(obs), torch.as_tensor(actions)
    gen = torch.Generator().manual_seed(seed)
    history = []
    for epoch in range(epochs):
        perm = torch.randperm(len(x), generator=gen)
        total, correct = 0.0, 0
        for start in range(0, len(x), batch_size):
            idx = perm[start : start + batch_size]
            logits = model(x[idx])
            loss = F.cross_entropy(logits, y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += loss.item() * len(idx)
            correct += int((logits.argmax(-1) == y[idx]).sum())
        history.append(
            {"epoch": epoch + 1, "bc/loss": total / len(x), "bc/accuracy": correct / len(x)}
        )
    return history


# ---------------------------------------------------------------------------- GAIL


class GailDiscriminator(nn.Module):
    """``D(s, a)``: a logit that (observation, action) comes from the recorded player rather than
    the model. ``LevelCNN`` over the observation, the action one-hot appended, an MLP head."""

    def __init__(
        self, obs_shape: Sequence[int], features_dim: int = 64, learning_rate: float = 1e-3
    ) -> None:
        super().__init__()
        self.trunk = LevelCNN(spaces.Box(0, 1, tuple(obs_shape), dtype=np.uint8), features_dim)
        self.head = nn.Sequential(nn.Linear(features_dim + 4, 64), nn.ReLU(), nn.Linear(64, 1))
        self.optimizer = torch.optim.Adam(self.parameters(), lr=learning_rate)

    def forward(self, obs: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        feats = self.trunk(obs)
        return self.head(torch.cat([feats, F.one_hot(actions.long(), 4).float()], -1)).squeeze(-1)

    def update(
        self,
        real_obs: np.ndarray,
        real_actions: np.ndarray,
        fake_obs: np.ndarray,
        fake_actions: np.ndarray,
    ) -> dict[str, float]:
        """One optimiser step of binary cross-entropy (real = 1, fake = 0) on the two batches;
        returns ``discriminator/acc_real``, ``discriminator/acc_fake`` and ``discriminator/loss``
        (measured on the batch before the step)."""
        obs = torch.as_tensor(np.concatenate([real_obs, fake_obs]))
        act = torch.as_tensor(np.concatenate([real_actions, fake_actions]))
        labels = torch.cat([torch.ones(len(real_obs)), torch.zeros(len(fake_obs))])
        logits = self(obs, act)
        # each side weighs half, whatever the batch sizes
        weights = torch.cat(
            [
                torch.full((len(real_obs),), 0.5 / len(real_obs)),
                torch.full((len(fake_obs),), 0.5 / len(fake_obs)),
            ]
        )
        loss = (
            F.binary_cross_entropy_with_logits(logits, labels, reduction="none") * weights
        ).sum()
        self.optimizer.zero_grad()
        loss.backward()
        self.optimizer.step()
        pred = (logits.detach() > 0).float()
        n = len(real_obs)
        return {
            "discriminator/acc_real": float((pred[:n] == 1).float().mean()),
            "discriminator/acc_fake": float((pred[n:] == 0).float().mean()),
            "discriminator/loss": loss.item(),
        }

    @torch.no_grad()
    def reward(self, obs: np.ndarray, actions: np.ndarray) -> np.ndarray:
        """``log D(s, a) − log(1 − D(s, a))`` (the logit): positive where the pair looks like the
        player's, negative where it looks like the model's. GAIL's original ``−log(1 − D)`` is
        never negative, which pays the agent for merely staying alive: with it, fine-tuning a
        cloned zelda player learnt to wander until the step limit (held-out success 0.51 → 0.02)."""
        return self(torch.as_tensor(obs), torch.as_tensor(actions)).numpy()


# ---------------------------------------------------------------------------- fine-tuning


def finetune(
    model: PlayerModel,
    levels: Sequence[np.ndarray],
    steps: int = 50,
    episodes_per_step: int = 32,
    traces: Sequence[dict[str, Any]] | None = None,
    gail_weight: float = 0.1,
    bc_weight: float = 0.0,
    learning_rate: float = 3e-4,
    gamma: float = 0.99,
    entropy_coef: float = 0.01,
    seed: int = 0,
    discriminator: GailDiscriminator | None = None,
) -> list[dict[str, float]]:
    """REINFORCE on ``levels`` (a batch of ``episodes_per_step`` levels drawn per step); with
    ``traces`` a GAIL discriminator is updated once per step (trace pairs vs the batch's pairs) and
    adds ``gail_weight`` × its reward to each step's reward; ``bc_weight`` adds the
    behaviour-cloning loss on trace pairs. Without traces it is plain RL on the environment's
    reward. One metrics record per step (``player/success_rate``, ``player/return``,
    ``player/steps``, ``player/entropy``, and the discriminator's keys)."""
    rng = np.random.default_rng(seed)
    opt = torch.optim.Adam(model.parameters(), lr=learning_rate)
    real = trace_pairs(traces, model.problem, model.observation) if traces else None
    if real is not None and discriminator is None:
        discriminator = GailDiscriminator(model.obs_shape)
    history = []
    for step in range(steps):
        batch = [levels[int(i)] for i in rng.integers(len(levels), size=episodes_per_step)]
        roll = rollout(model, batch, seed=seed * 100_003 + step * episodes_per_step)
        obs, acts = np.concatenate(roll.obs), np.concatenate(roll.actions)
        record: dict[str, float] = {"step": step + 1}
        bonus = [np.zeros_like(r) for r in roll.rewards]
        if real is not None and discriminator is not None:
            pick = rng.integers(len(real[0]), size=min(len(real[0]), len(obs)))
            record.update(discriminator.update(real[0][pick], real[1][pick], obs, acts))
            flat = discriminator.reward(obs, acts)
            bounds = np.cumsum([0] + [len(r) for r in roll.rewards])
            bonus = [gail_weight * flat[a:b] for a, b in itertools.pairwise(bounds)]
            record["gail/reward"] = float(flat.mean())
        returns = []
        for r, b in zip(roll.rewards, bonus, strict=True):
            g, out = 0.0, np.zeros(len(r), dtype=np.float32)
            for t in range(len(r) - 1, -1, -1):
                g = float(r[t] + b[t]) + gamma * g
                out[t] = g
            returns.append(out)
        ret = torch.as_tensor(np.concatenate(returns))
        adv = (ret - ret.mean()) / (ret.std() + 1e-8)
        logits = model(torch.as_tensor(obs))
        logp = logits.log_softmax(-1)
        chosen = logp.gather(1, torch.as_tensor(acts)[:, None]).squeeze(1)
        entropy = -(logp.exp() * logp).sum(-1).mean()
        loss = -(adv * chosen).mean() - entropy_coef * entropy
        if bc_weight and real is not None:
            pick = rng.integers(len(real[0]), size=min(len(real[0]), 256))
            loss = loss + bc_weight * F.cross_entropy(
                model(torch.as_tensor(real[0][pick])), torch.as_tensor(real[1][pick])
            )
        opt.zero_grad()
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        record.update(
            {
                "player/success_rate": float(np.mean(roll.wins)),
                "player/return": float(np.mean([r.sum() for r in roll.rewards])),
                "player/steps": float(np.mean(roll.steps)),
                "player/entropy": entropy.item(),
            }
        )
        history.append(record)
    return history


# ---------------------------------------------------------------------------- playtesting



def _random_mover(rng: np.random.Generator) -> Callable[[Any, Any], int]:
    """A player that moves uniformly at random with ``rng``."""
    return lambda _env, _obs: int(rng.integers(4))

def playtest(
    levels: Sequence[np.ndarray],
    player: PlayerModel | ScriptedPlayer | str,
    problem: str | None = None,
    episodes: int = 4,
    seed: int = 0,
    greedy: bool = False,
) -> dict[str, Any]:
    """Play every level ``episodes`` times with ``player`` (a model, a ``ScriptedPlayer`` or
    ``"random"``).

    Returns ``success_rate`` and ``mean_steps`` over all episodes, ``optimal_steps`` (the mean
    shortest solution over the solvable levels), ``steps_ratio`` (mean steps of won episodes over
    their level's shortest solution), ``difficulty`` = 1 − success rate, ``unsolvable`` (the
    fraction of levels the scripted planner cannot win) and ``per_level`` success rates.
    """
    if isinstance(player, PlayerModel):
        problem = player.problem
    if problem is None:
        raise ValueError(
            "playtest needs the problem (zelda or sokoban) when the player is not a model."
        )
    levels = [np.asarray(lv, dtype=np.uint8) for lv in levels]
    optimal = []
    for lv in levels:
        try:
            p = plan(problem, lv)
        except ValueError:
            p = None
        optimal.append(len(p) if p is not None else None)
    wins = np.zeros((len(levels), episodes), dtype=bool)
    steps = np.zeros((len(levels), episodes))
    for e in range(episodes):
        playable = [i for i, lv in enumerate(levels) if int((lv == 2).sum()) == 1]
        if isinstance(player, PlayerModel):
            roll = rollout(
                player, [levels[i] for i in playable], greedy=greedy, seed=seed + e * len(levels)
            )
            for i, w, s in zip(playable, roll.wins, roll.steps, strict=True):
                wins[i, e], steps[i, e] = w, s
        else:
            from rl4gen.envs.levels.play import play_episode

            rng = np.random.default_rng(seed + e)
            for i in playable:
                env = PlayEnv(problem, levels=[levels[i]])
                if player == "random":
                    actions, outcome = play_episode(env, _random_mover(rng))
                else:
                    player._plan = []  # type: ignore[union-attr]
                    actions, outcome = play_episode(env, lambda en, _o: player.act(en))  # type: ignore[union-attr]
                wins[i, e], steps[i, e] = outcome == "win", len(actions)
    won_ratio = [
        steps[i, e] / optimal[i]
        for i in range(len(levels))
        for e in range(episodes)
        if wins[i, e] and optimal[i]
    ]
    solvable = [o for o in optimal if o is not None]
    success = float(wins.mean()) if len(levels) else 0.0
    return {
        "success_rate": success,
        "mean_steps": float(steps.mean()) if len(levels) else 0.0,
        "optimal_steps": float(np.mean(solvable)) if solvable else 0.0,
        "steps_ratio": float(np.mean(won_ratio)) if won_ratio else 0.0,
        "difficulty": 1.0 - success,
        "unsolvable": 1.0 - len(solvable) / max(len(levels), 1),
        "per_level": wins.mean(1).tolist(),
    }


# ---------------------------------------------------------------------------- files


def save_player(model: PlayerModel, path: str | Path, **info: Any) -> Path:
    """Write ``model.safetensors`` and ``player.json`` into the folder ``path``."""
    from safetensors.torch import save_file

    out = Path(path)
    out.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(out / WEIGHTS_FILE))
    meta = {
        "problem": model.problem,
        "observation": model.observation,
        "obs_shape": list(model.obs_shape),
        "features_dim": model.features_dim,
        **model.info,
        **info,
    }
    (out / PLAYER_FILE).write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
    return out


def load_player(path: str | Path) -> PlayerModel:
    """A player saved by ``save_player`` (``rl4gen levels train-player``)."""
    from safetensors.torch import load_file

    folder = Path(path)
    if not (folder / PLAYER_FILE).is_file() or not (folder / WEIGHTS_FILE).is_file():
        raise ValueError(
            f"{str(folder)!r} is not a player model: it needs {PLAYER_FILE} and {WEIGHTS_FILE} (rl4gen levels train-player)."
        )
    meta = json.loads((folder / PLAYER_FILE).read_text(encoding="utf-8"))
    model = PlayerModel(
        meta["problem"], meta["obs_shape"], meta["observation"], meta["features_dim"]
    )
    model.load_state_dict(load_file(str(folder / WEIGHTS_FILE)))
    model.info = {
        k: v
        for k, v in meta.items()
        if k not in ("problem", "observation", "obs_shape", "features_dim")
    }
    model.eval()
    return model


def train_player(
    problem: str,
    output: str | Path,
    traces: str | Path | None = None,
    levels: int = 256,
    level_seed: int = 0,
    epochs: int = 20,
    rl_steps: int = 0,
    episodes_per_step: int = 32,
    gail_weight: float = 0.1,
    bc_weight: float = 0.5,
    observation: str = "egocentric",
    seed: int = 0,
    eval_levels: int = 64,
    log: Any = None,
) -> dict[str, Any]:
    """``rl4gen levels train-player``: behaviour cloning on ``traces`` (when given), then
    ``rl_steps`` of fine-tuning (GAIL with traces, plain RL without) on ``levels`` random playable
    levels, then a playtest on ``eval_levels`` held-out levels (seed ``level_seed + 1``) against
    the random policy. Saves the player to ``output`` (with ``metrics.jsonl``: one record per
    cloning epoch and fine-tuning step); returns the summary."""
    from rl4gen.envs.levels.play import random_levels

    torch.manual_seed(seed)
    log = log or (lambda _m: None)
    records = read_traces(traces, problem) if traces else None
    model = make_player(problem, observation)
    summary: dict[str, Any] = {"problem": problem, "traces": str(traces) if traces else None}
    history: list[dict[str, Any]] = []
    if records:
        obs, acts = trace_pairs(records, problem, observation)
        hist = behaviour_cloning(model, obs, acts, epochs=epochs, seed=seed)
        history += [{"phase": "bc", **h} for h in hist]
        summary.update(
            {
                "bc_pairs": len(acts),
                "bc/loss": hist[-1]["bc/loss"],
                "bc/accuracy": hist[-1]["bc/accuracy"],
            }
        )
        log(
            f"behaviour cloning: {len(records)} traces, {len(acts)} pairs, accuracy {hist[-1]['bc/accuracy']:.3f}"
        )
    elif not rl_steps:
        raise ValueError(
            "train-player needs --traces (behaviour cloning) or --rl-steps > 0 (plain RL)."
        )
    if rl_steps:
        train_levels = random_levels(problem, levels, seed=level_seed)
        hist = finetune(
            model,
            train_levels,
            steps=rl_steps,
            episodes_per_step=episodes_per_step,
            traces=records,
            gail_weight=gail_weight if records else 0.0,
            bc_weight=bc_weight,
            seed=seed,
        )
        history += [{"phase": "gail" if records else "rl", **h} for h in hist]
        summary["finetune"] = hist[-1]
        log(
            f"{'GAIL' if records else 'RL'} fine-tuning: {rl_steps} steps, last batch success {hist[-1]['player/success_rate']:.3f}"
        )
    held_out = random_levels(problem, eval_levels, seed=level_seed + 1)
    summary["eval"] = {
        k: v
        for k, v in playtest(held_out, model, episodes=2, seed=seed).items()
        if k != "per_level"
    }
    summary["eval_random"] = {
        k: v
        for k, v in playtest(held_out, "random", problem=problem, episodes=2, seed=seed).items()
        if k != "per_level"
    }
    model.info = {"training": summary}
    save_player(model, output)
    with (Path(output) / "metrics.jsonl").open("w", encoding="utf-8") as f:
        for record in history:
            f.write(json.dumps(record) + "\n")
    return summary
