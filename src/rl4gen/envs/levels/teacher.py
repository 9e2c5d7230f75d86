"""A search teacher for the wide level agents: behaviour cloning on levels the beam search found.

The beam search of :mod:`rl4gen.envs.levels.ceiling` finds a goal level within the change budget
for nearly every start level (binary 99%, zelda 100%) in about a second, while PPO from scratch
needs millions of steps to reach a quarter of that. So before RL, ``train_levels`` can clone the
search (``teacher_levels: N`` in the config):

1. **Demonstrations** (:func:`search_demonstrations`): the start levels of ``N`` training
   episodes (``reset(seed=seed + 1_000_000 + i)``: away from both training's and evaluation's
   seeds), each searched for a goal level; a demonstration is the pair (start, goal level).
   Written to ``RUN_DIR/teacher/demos.jsonl`` (``teacher_file`` reuses such a file).
2. **States** (:func:`demonstration_states`): each demonstration is played through the policy's
   own wrapped environment in ``teacher_orders`` random orders of its differing cells (any order
   reaches the same level), recording the observation before each edit, the set of edits still
   to do (as flat ``FlatWideAction`` indices) and the discounted return of the rest of the
   episode under the environment's reward.
3. **Cloning** (:func:`clone`): the policy maximises the log of the probability it gives to *any*
   edit still to do (so it may choose its own order), and the value head regresses on the
   returns, so that RL starts from a critic that knows the cloned policy's kind of episode.

RL (PPO) then continues from the cloned policy as usual. Only the fully convolutional wide agent
(``policy: fullyconv``) is supported: its flat action is exactly "write tile t at cell (x, y)".
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch

from rl4gen.core.advantages import group_normalized_advantages
from rl4gen.core.kl import kl_estimate
from rl4gen.core.losses import clipped_policy_loss

__all__ = [
    "Demonstration",
    "clone",
    "demonstration_states",
    "demonstration_steps",
    "goal_edit_steps",
    "goal_edits",
    "group_relative_update",
    "load_demonstrations",
    "search_demonstrations",
    "self_imitation",
    "symmetric_demonstrations",
]

#: demonstrations start from ``reset(seed=seed + SEED_OFFSET + i)``: training uses ``seed + i``
#: (plus the timestep count on resume) and evaluation 10,000 onwards
SEED_OFFSET = 1_000_000
#: self-imitation's start levels: ``reset(seed=seed + SELF_SEED_OFFSET + round × starts + i)``
SELF_SEED_OFFSET = 2_000_000


@dataclass
class Demonstration:
    """A start level and a goal level within the change budget of it."""

    seed: int
    start: np.ndarray
    final: np.ndarray

    def record(self) -> dict[str, Any]:
        return {"seed": self.seed, "start": self.start.tolist(), "final": self.final.tolist()}


def search_demonstrations(
    env: gym.Env[Any, Any],
    count: int,
    first_seed: int,
    time_limit: float = 3.0,
    path: Path | None = None,
    progress: Callable[[int, int], None] | None = None,
    seeds: Sequence[int] | None = None,
) -> list[Demonstration]:
    """Search a goal level for the start levels of ``count`` episodes of ``env`` (seeds
    ``first_seed + i``; training uses ``seed + SEED_OFFSET``), or of the episodes of ``seeds``
    when given (``count`` and ``first_seed`` are then unused); starts where the search finds none
    within ``time_limit`` process seconds are skipped. Each demonstration found is appended to
    ``path`` (JSON lines) at once."""
    from rl4gen.envs.levels.ceiling import search_goal_level

    core: Any = env.unwrapped  # a LevelEnv
    found: list[Demonstration] = []
    sink = path.open("a") if path is not None else None
    episode_seeds = list(seeds) if seeds is not None else [first_seed + i for i in range(count)]
    try:
        for i, episode_seed in enumerate(episode_seeds):
            env.reset(seed=episode_seed)
            start = core.level
            result = search_goal_level(core.problem, start, core.max_changes, time_limit=time_limit, seed=episode_seed)
            if result.goal:
                demo = Demonstration(episode_seed, start, result.level.astype(np.uint8))
                found.append(demo)
                if sink is not None:
                    sink.write(json.dumps(demo.record()) + "\n")
                    sink.flush()
            if progress is not None:
                progress(i + 1, len(found))
    finally:
        if sink is not None:
            sink.close()
    return found


def load_demonstrations(path: str | Path, shape: tuple[int, int], num_tiles: int, key: str = "teacher_file") -> list[Demonstration]:
    """Read a ``demos.jsonl`` file; one sentence naming the problem (and the config ``key``
    that gave the file) when it does not fit."""
    from rl4gen.config import ConfigError

    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{key} {str(path)!r} does not exist: point it at a run's teacher/demos.jsonl or an `rl4gen levels teach` output.")
    demos = []
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            start, final = np.asarray(row["start"], dtype=np.int64), np.asarray(row["final"], dtype=np.int64)
        except (ValueError, KeyError, TypeError):
            raise ConfigError(f"{key} {str(path)!r} line {n} is not a demonstration (JSON with 'start' and 'final' levels).") from None
        if start.shape != shape or final.shape != shape or min(start.min(), final.min()) < 0 or max(start.max(), final.max()) >= num_tiles:
            raise ConfigError(
                f"{key} {str(path)!r} line {n} does not fit this environment: levels must be {shape[0]}x{shape[1]} "
                f"with tiles in [0, {num_tiles})."
            )
        demos.append(Demonstration(int(row.get("seed", -1)), start.astype(np.uint8), final.astype(np.uint8)))
    if not demos:
        raise ConfigError(f"{key} {str(path)!r} has no demonstrations.")
    return demos


def symmetries(level: np.ndarray) -> list[np.ndarray]:
    """The level under each symmetry of its grid that keeps its shape: the 8 rotations and
    reflections of a square map, the 4 of a rectangle (identity, the two flips, the half turn);
    the identity first (``networks.grid_symmetries``' order)."""
    from rl4gen.envs.levels.networks import grid_symmetries

    out = []
    for turns, mirror in grid_symmetries(*level.shape):
        turned = np.rot90(level, turns)
        out.append(np.ascontiguousarray(turned[:, ::-1] if mirror else turned))
    return out


def symmetric_demonstrations(demos: Sequence[Demonstration], problem: Any = None) -> list[Demonstration]:
    """Each demonstration under every symmetry of the grid (duplicates dropped; each one's
    images follow it, so a held-out tail stays held out up to its boundary).

    Zelda's and sokoban's statistics (tile counts, regions, shortest paths, the solver's moves)
    do not change when the map is turned or mirrored, so a demonstration's image is again a start
    level and a goal level within the budget: 8 (square maps) or 4 demonstrations for the search's
    price of one. Binary's longest path is a two-sweep BFS estimate that can differ by a step or two
    between images, so with ``problem`` given every image is kept only when its final level meets
    ``problem``'s goal from its start (the original always is)."""
    out: list[Demonstration] = []
    seen: set[tuple[bytes, bytes]] = set()
    for demo in demos:
        for n, (start, final) in enumerate(zip(symmetries(demo.start), symmetries(demo.final), strict=True)):
            key = (start.tobytes(), final.tobytes())
            if key in seen:
                continue
            seen.add(key)
            if n and problem is not None:
                begin = problem.stats(problem.grid.masks(start, problem.num_tiles))
                if not problem.goal(problem.stats(problem.grid.masks(final, problem.num_tiles)), begin):
                    continue
            out.append(Demonstration(demo.seed, start, final))
    return out


def _demonstration_edits(demo: Demonstration, width: int, height: int) -> np.ndarray:
    """The flat ``FlatWideAction`` indices (tile × cells + y × width + x) that turn the
    demonstration's start level into its goal level, one per differing cell."""
    ys, xs = np.nonzero(demo.start != demo.final)
    return demo.final[ys, xs].astype(np.int64) * height * width + ys * width + xs


def _play_edits(env: gym.Env[Any, Any], start: np.ndarray, edits: np.ndarray) -> list[tuple[np.ndarray, int, float]]:
    """Play ``edits`` in their order from ``start``: ``(observation before, edit, reward)`` a step,
    up to the episode's end."""
    obs, _ = env.reset(options={"level": start})
    steps = []
    for action in edits:
        after, reward, terminated, truncated, _ = env.step(int(action))
        steps.append((obs, int(action), float(reward)))
        obs = after
        if terminated or truncated:
            break
    return steps


def demonstration_states(
    env: gym.Env[Any, Any], demos: Sequence[Demonstration], orders: int, gamma: float, seed: int = 0
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Play every demonstration through ``env`` (a wrapped wide environment with flat actions)
    in ``orders`` random orders of its edits.

    Returns ``(observations (N, ...), to_do (N, T·H·W) bool, returns (N,))``: the observation
    before each edit, the flat actions still to do, and the discounted return from there on."""
    rng = np.random.default_rng(seed)
    problem: Any = env.unwrapped.problem  # type: ignore[attr-defined]  # a LevelEnv
    observations: list[np.ndarray] = []
    to_do: list[np.ndarray] = []
    returns: list[float] = []
    for demo in demos:
        actions = _demonstration_edits(demo, problem.width, problem.height)
        for _ in range(orders):
            left = np.zeros(problem.num_tiles * problem.height * problem.width, dtype=bool)
            left[actions] = True
            steps = _play_edits(env, demo.start, rng.permutation(actions))
            for obs, action, _ in steps:
                observations.append(obs)
                to_do.append(left.copy())
                left[action] = False
            ret, tail = 0.0, []
            for _, _, r in reversed(steps):
                ret = r + gamma * ret
                tail.append(ret)
            returns.extend(reversed(tail))
    return np.stack(observations), np.stack(to_do), np.asarray(returns, dtype=np.float32)


def demonstration_steps(env: gym.Env[Any, Any], demos: Sequence[Demonstration], rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Each demonstration played once through ``env`` in a random order of its edits, as an
    episode the policy could have sampled: ``(observations (N, ...), actions (N,))``, the
    observation before each edit and the flat edit taken."""
    problem: Any = env.unwrapped.problem  # type: ignore[attr-defined]  # a LevelEnv
    observations: list[np.ndarray] = []
    actions: list[int] = []
    for demo in demos:
        for obs, action, _ in _play_edits(env, demo.start, rng.permutation(_demonstration_edits(demo, problem.width, problem.height))):
            observations.append(obs)
            actions.append(action)
    if not observations:  # only demonstrations whose start already is the final level
        return np.empty((0, *env.observation_space.shape), dtype=env.observation_space.dtype), np.empty(0, dtype=np.int64)  # type: ignore[misc]
    return np.stack(observations), np.asarray(actions, dtype=np.int64)


def clone(
    policy: Any,
    observations: np.ndarray,
    to_do: np.ndarray,
    returns: np.ndarray,
    epochs: int = 10,
    batch_size: int = 256,
    learning_rate: float = 1e-3,
    value_weight: float = 0.5,
    seed: int = 0,
    log: Callable[[dict[str, float]], None] | None = None,
) -> dict[str, float]:
    """Behaviour cloning of an SB3 actor-critic ``policy`` (``FullyConvPolicy``).

    Loss per state: ``−log Σ_{a ∈ to_do} π(a | s)`` (probability of doing any edit still to do)
    ``+ value_weight × (V(s) − return)² / Var(return)`` (scale-free: the returns are tens of
    reward units, and the features are shared, so a raw squared error would swamp the cloning).

    The last tenth of the states is held out: they belong to the last demonstrations of the list
    (levels not trained on, but for the one demonstration cut at the boundary). Returns the
    held-out loss, the fraction of held-out states whose most likely action is an edit still to
    do (``accuracy``) and the training time."""
    generator = torch.Generator().manual_seed(seed)
    device = policy.device
    obs = torch.as_tensor(observations)
    mask = torch.as_tensor(to_do)
    target = torch.as_tensor(returns)
    scale = float(target.var()) + 1e-6 if len(target) > 1 else 1.0
    n = len(obs)
    held = max(n // 10, 1) if n >= 20 else 0
    train_n = n - held
    optimizer = torch.optim.Adam(policy.parameters(), lr=learning_rate)

    def losses(index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        o = obs[index].to(device)
        m = mask[index].to(device)
        distribution, values = _distribution_and_values(policy, o)
        logits = distribution.distribution.logits
        picked = torch.logsumexp(logits.masked_fill(~m, -torch.inf), dim=1) - torch.logsumexp(logits, dim=1)
        value_loss = (values.flatten() - target[index].to(device)).pow(2).mean() / scale
        accuracy = m.gather(1, logits.argmax(dim=1, keepdim=True)).float().mean()
        return -picked.mean(), value_loss, accuracy

    start = time.perf_counter()
    policy.set_training_mode(True)
    metrics: dict[str, float] = {}
    for epoch in range(epochs):
        order = torch.randperm(train_n, generator=generator)
        for b in range(0, train_n, batch_size):
            bc_loss, value_loss, _ = losses(order[b : b + batch_size])
            optimizer.zero_grad()
            (bc_loss + value_weight * value_loss).backward()
            optimizer.step()
        if held:
            with torch.no_grad():
                bc_loss, value_loss, accuracy = losses(torch.arange(train_n, n))
            metrics = {"teacher/loss": float(bc_loss), "teacher/value_loss": float(value_loss),
                       "teacher/accuracy": float(accuracy), "teacher/epoch": float(epoch + 1)}
            if log is not None:
                log(metrics)
    policy.set_training_mode(False)
    metrics["teacher/seconds"] = time.perf_counter() - start
    metrics["teacher/states"] = float(n)
    return metrics


def goal_edits(problem: Any, level: np.ndarray, start: np.ndarray) -> np.ndarray:
    """The single edits that turn ``level`` into a goal level (of an episode from ``start``), as a
    boolean mask over the flat ``FlatWideAction`` indices ``t·H·W + y·W + x``: the goal value of
    ``Problem.edit_lookahead`` (every other tile of every cell tried, ``Problem.goal_possible``
    ruling most out before the statistics; ~1–3 ms a level on sokoban's 5×5 maps)."""
    start_stats = problem.stats(problem.grid.masks(start, problem.num_tiles))
    return problem.edit_lookahead(level, start_stats)[problem.lookahead_names.index("goal")].ravel() > 0


def goal_edit_steps(
    policy: Any,
    problem: Any,
    observations: np.ndarray,
    episodes: np.ndarray,
    actions: np.ndarray,
    goals: np.ndarray,
    starts: Sequence[np.ndarray],
    samples: int,
    share: float,
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict[str, float], tuple[np.ndarray, np.ndarray]]:
    """Counterfactual successes for a GRPO round: where one edit would have reached the goal but
    the sampled action was another, the goal edit is an episode step whose outcome is known
    without playing it (the goal, at once). Each such state joins the round's update once more,
    with the goal edit the policy finds most likely and the advantage a success would have in its
    start level's group (the group's outcomes plus this one success, normalised as GRPO does:
    about 4 in a group of 16 failures, about 1 in a group half solved), so the clipped update
    moves it as far as a sampled success and no further. Each step's level is read from its
    observation's tile planes; the states of a random ``share`` of the start levels are checked
    (:func:`goal_edits`, once per distinct level of a start level).

    ``observations``, ``episodes`` (each step's episode), ``actions`` (the sampled ones): the
    round's recorded steps; ``goals``: each episode's outcome; episode ``k`` started from
    ``starts[k // samples]``. Returns the added steps' observations, actions and advantages, and
    ``goal_edit_states`` (share of the checked states that had a goal edit), ``goal_edit_taken``
    (share of those where the sampled action was one), ``goal_edit_missed`` (share of the checked
    failed episodes that passed one by) and ``goal_edit_seconds``."""
    clock = time.perf_counter()
    tiles = problem.num_tiles
    checked_starts = rng.random(len(starts)) < share
    index = np.flatnonzero(checked_starts[episodes // samples])
    levels = observations[index, :tiles].argmax(1).astype(np.uint8)
    found: dict[tuple[int, bytes], np.ndarray] = {}
    masks = np.zeros((len(index), tiles * problem.height * problem.width), dtype=bool)
    for row, (step, level) in enumerate(zip(index, levels, strict=True)):
        group = int(episodes[step]) // samples
        key = (group, level.tobytes())
        if key not in found:
            found[key] = goal_edits(problem, level, starts[group])
        masks[row] = found[key]
    has = masks.any(1)
    taken = masks[np.arange(len(index)), actions[index]]
    failed = ~goals & checked_starts[np.arange(len(goals)) // samples]
    missed_episodes = np.zeros(len(goals), dtype=bool)
    np.logical_or.at(missed_episodes, episodes[index], has & ~taken)
    metrics = {"goal_edit_states": float(has.mean()) if has.size else 0.0,
               "goal_edit_taken": float(taken[has].mean()) if has.any() else 0.0,
               "goal_edit_missed": float((missed_episodes & failed).sum() / max(int(failed.sum()), 1))}
    missed = np.flatnonzero(has & ~taken)
    obs = observations[index[missed]]
    chosen = np.zeros(len(missed), dtype=np.int64)
    with torch.no_grad():
        for b in range(0, len(missed), 4096):
            distribution, _ = _distribution_and_values(policy, torch.as_tensor(obs[b : b + 4096]).to(policy.device))
            logits = distribution.distribution.logits.cpu()
            chosen[b : b + 4096] = logits.masked_fill(~torch.as_tensor(masks[missed[b : b + 4096]]), -torch.inf).argmax(1).numpy()
    successes = goals.reshape(-1, samples).sum(1)[episodes[index[missed]] // samples]  # in each added step's group
    advantages = np.zeros(len(missed), dtype=np.float32)
    for k in np.unique(successes):  # the group's outcomes plus this success, normalised as GRPO does
        values = torch.tensor([1.0] * (int(k) + 1) + [0.0] * (samples - int(k)))
        advantages[successes == k] = float(group_normalized_advantages(values, torch.zeros(len(values), dtype=torch.long))[0])
    metrics["goal_edit_steps"] = float(len(missed))
    metrics["goal_edit_seconds"] = time.perf_counter() - clock
    return obs, chosen, advantages, metrics, (observations[index[has]], masks[has])


def group_relative_update(
    policy: Any,
    observations: np.ndarray,
    actions: np.ndarray,
    advantages: np.ndarray,
    epochs: int = 2,
    batch_size: int = 512,
    learning_rate: float = 1e-4,
    clip_range: float = 0.2,
    seed: int = 0,
    aux_observations: np.ndarray | None = None,
    aux_masks: np.ndarray | None = None,
    aux_weight: float = 0.0,
) -> dict[str, float]:
    """A clipped policy-gradient step (PPO's surrogate, no critic) of an SB3 actor-critic
    ``policy`` on recorded steps: ``observations (N, ...)``, the ``actions`` taken and each step's
    ``advantages`` (its episode's, e.g. group-relative: the episode's goal reward minus the mean of
    the episodes from the same start level, GRPO's baseline). Unlike cloning the successes,
    the failures get a gradient too: the policy moves away from what failed where something else
    from the same start worked. Steps with advantage 0 (groups that all failed or all succeeded)
    are skipped. Returns ``policy_loss``, ``approx_kl``, ``clip_fraction`` (steps where the clip
    took the gradient away), ``entropy`` and ``steps``.

    ``aux_observations`` with boolean ``aux_masks`` over the actions and ``aux_weight`` > 0 add an
    auxiliary term to every minibatch's loss: ``aux_weight × −log Σ_{a ∈ mask} π(a | s)`` over an
    equal share of those states (:func:`clone`'s loss), e.g. the edits that reach the goal at once
    (:func:`goal_edit_steps`); ``aux_loss`` reports its mean."""
    keep = np.flatnonzero(advantages != 0)
    if len(keep) == 0:
        return {"steps": 0.0}
    device = policy.device
    obs = torch.as_tensor(observations[keep])
    act = torch.as_tensor(actions[keep]).long()
    adv = torch.as_tensor(advantages[keep], dtype=torch.float32)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        old = torch.cat([_distribution_and_values(policy, obs[b : b + 4096].to(device))[0].log_prob(act[b : b + 4096].to(device)).cpu()
                         for b in range(0, len(obs), 4096)])
    optimizer = torch.optim.Adam(policy.parameters(), lr=learning_rate)
    policy.set_training_mode(True)
    sums = {"policy_loss": 0.0, "approx_kl": 0.0, "clip_fraction": 0.0, "entropy": 0.0}
    use_aux = aux_weight > 0 and aux_observations is not None and aux_masks is not None and len(aux_observations) > 0
    if use_aux:
        sums["aux_loss"] = 0.0
        aux_obs, aux_mask = torch.as_tensor(aux_observations), torch.as_tensor(aux_masks)
        per_batch = -(-len(aux_obs) * batch_size // len(obs))  # every aux state about once an epoch
    batches = 0
    for _ in range(epochs):
        order = torch.randperm(len(obs), generator=generator)
        aux_order = torch.randperm(len(aux_obs), generator=generator) if use_aux else None
        for n, b in enumerate(range(0, len(obs), batch_size)):
            index = order[b : b + batch_size]
            distribution, _ = _distribution_and_values(policy, obs[index].to(device))
            logp = distribution.log_prob(act[index].to(device))
            clipped = clipped_policy_loss(logp[:, None], old[index, None].to(device), adv[index].to(device), clip_range, clip_range)
            loss = clipped.per_token_loss.mean()
            if aux_order is not None:
                picked = aux_order[(n * per_batch) % len(aux_obs):][:per_batch]
                logits = _distribution_and_values(policy, aux_obs[picked].to(device))[0].distribution.logits
                mask = aux_mask[picked].to(device)
                aux = (torch.logsumexp(logits, dim=1) - torch.logsumexp(logits.masked_fill(~mask, -torch.inf), dim=1)).mean()
                loss = loss + aux_weight * aux
                sums["aux_loss"] += float(aux.detach())
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            with torch.no_grad():
                sums["policy_loss"] += float(loss)
                # k3 estimate of KL(sampling policy || current) on the sampled actions, PPO's approx_kl
                sums["approx_kl"] += float(kl_estimate(old[index].to(device), logp).mean())
                sums["clip_fraction"] += float((clipped.low_clipped | clipped.high_clipped).float().mean())
                sums["entropy"] += float(distribution.entropy().mean())
            batches += 1
    policy.set_training_mode(False)
    out = {key: value / max(batches, 1) for key, value in sums.items()}
    out["steps"] = float(len(obs))
    return out


def _distribution_and_values(policy: Any, obs: torch.Tensor) -> tuple[Any, torch.Tensor]:
    """SB3's actor-critic pieces for one batch: the action distribution and the values."""
    features = policy.extract_features(obs)
    latent_pi, latent_vf = policy.mlp_extractor(features)
    return policy._get_action_dist_from_latent(latent_pi), policy.value_net(latent_vf)


_WORKER: dict[str, Any] = {}


def _start_sampler(make_env: Callable[[], gym.Env[Any, Any]], policy: bytes) -> None:
    """A sampling worker's initializer: one thread, the env factory and a copy of the policy."""
    import io

    torch.set_num_threads(1)
    _WORKER["make_env"] = make_env
    _WORKER["policy"] = torch.load(io.BytesIO(policy), weights_only=False)
    _WORKER["envs"] = []


def _sample_batch(job: tuple[dict[str, torch.Tensor], list[int], bool, int]) -> dict[str, Any]:
    """Play one batch of sampled episodes in a worker, with the round's weights."""
    state, seeds, record, batch_seed = job
    policy = _WORKER["policy"]
    policy.load_state_dict(state)
    return _sampled_episodes(_WORKER["make_env"], seeds, policy, record, batch_seed, _WORKER["envs"])


def _sampled_episodes(make_env: Callable[[], gym.Env[Any, Any]], seeds: list[int], policy: Any, record: bool,
                      batch_seed: int, envs: list[Any] | None = None) -> dict[str, Any]:
    """``play_episodes`` with actions sampled from ``policy``, torch's generator seeded with
    ``batch_seed`` for the batch (and restored after): the same batch samples the same episodes
    in any process. ``envs``: environments kept from earlier batches (``play_episodes``)."""
    from rl4gen.envs.levels.evaluate import play_episodes

    def act(obs: np.ndarray) -> np.ndarray:
        actions, _ = policy.predict(obs, deterministic=False)
        return np.asarray(actions)

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(batch_seed)
        return play_episodes(make_env, seeds, act, record=record, envs=envs)


def self_imitation(
    model: Any,
    make_env: Callable[[], gym.Env[Any, Any]],
    demos: Sequence[Demonstration],
    rounds: int,
    starts: int,
    samples: int,
    first_seed: int,
    *,
    epochs: int = 3,
    pool: int = 2500,
    orders: int = 2,
    symmetric: bool = False,
    seed: int = 0,
    batch_starts: int = 100,
    path: Path | None = None,
    log: Callable[[int, dict[str, float]], None] | None = None,
    first_round: int = 0,
    objective: str = "clone",
    learning_rate: float = 1e-4,
    workers: int = 1,
    guides: Sequence[Demonstration] = (),
    guides_per_round: int = 150,
    guide_advantage: float = 2.0,
    goal_edit_share: float = 0.0,
    goal_edit_weight: float = 0.0,
) -> list[Demonstration]:
    """Expert iteration on the policy's own goal levels, after cloning.

    Each of ``rounds`` rounds draws ``starts`` new start levels (seeds ``first_seed + round ×
    starts + i``, rounds numbered from ``first_round``: a run that continues another's rounds
    draws new levels), lets ``model`` (an SB3 model with a ``FullyConvPolicy``) play ``samples``
    sampled episodes from each, keeps every distinct level that met the goal as a new
    demonstration, and clones (:func:`clone`, ``epochs`` passes) on the new demonstrations plus a
    random sample of the earlier ones (``demos`` first, then earlier rounds'), at most ``pool``
    demonstrations in all (0: all of them; a round that finds more than ``pool`` clones a random
    ``pool`` of its own), each under the grid's symmetries when ``symmetric``.

    This is policy improvement with a 0/1 reward (reached the goal or not): cloning the
    successful samples raises the probability of what worked, the same start's failures give
    no gradient. With ``objective="grpo"`` a round instead takes a clipped policy-gradient step
    (:func:`group_relative_update`, ``epochs`` passes at ``learning_rate``) on every sampled
    episode, with GRPO's advantages: the episode's 0/1 goal reward minus the mean of its start
    level's ``samples`` episodes, over their std. The failures then count too, and a round costs
    the sampling and one cheap update instead of a cloning pass over a pool (``pool``,
    ``orders``, ``symmetric`` and ``demos`` are unused; the goal levels are still written to
    ``path``). Cloning the search's demonstrations starts the policy where its samples
    succeed now and then; these rounds then learn from many more levels than the search can
    afford (a sampled episode costs milliseconds, a search about a second).

    ``log(round, metrics)`` gets ``self_imitation/*`` metrics after each round: ``sample_goal_rate``
    (fraction of sampled episodes that met the goal: the policy's own goal rate on the round's
    starts), ``solved_starts`` (fraction of starts with at least one), ``goal_levels``,
    ``demonstrations`` (cloned, before symmetries), ``states`` and the clone's ``loss``/``accuracy``
    on the held-out newest levels (the policy's own samples, several per start level: a check that
    the cloning fits, not a measure of generalisation); with ``grpo``, the update's
    ``policy_loss``, ``approx_kl``, ``clip_fraction``, ``entropy`` and ``steps`` instead. Each
    round's new demonstrations are appended to ``path`` (JSON lines, as
    :func:`search_demonstrations` writes them) before its cloning. Returns the new
    demonstrations of all rounds.

    With ``workers`` > 1 the sampling (most of a GRPO round) runs in that many processes, one
    batch of ``batch_starts`` start levels at a time; ``make_env`` must then pickle (a
    ``functools.partial`` of a module-level function does). Each batch seeds torch's generator
    from ``seed``, the round and the batch, so the episodes, and the whole run, are the same for
    any number of workers.

    ``guides`` (``grpo`` only): search demonstrations, best of start levels the policy does not
    solve (``unsolved_starts``), that widen what it can solve. Each round, ``guides_per_round`` of
    them, drawn at random (under the grid's symmetries when ``symmetric``), are played once in a
    random edit order (:func:`demonstration_steps`) and join the round's update as episodes with
    advantage ``guide_advantage`` (about that of a rare success in a group: 16 samples with one
    success give it 3.9). The update's clip bounds how far one round moves towards them (the ratio
    to the round's policy stays within 1 ± the clip, as for the sampled steps), where cloning them
    outright broadened the policy until its sampled rate fell by half. The metric
    ``guide_steps`` counts their steps.

    ``goal_edit_share`` (``grpo`` only, 0 = off): the states of that share of each round's start
    levels at which one edit would have reached the goal, but the sample took another, join the
    round's update once more with the goal edit and a success's advantage
    (:func:`goal_edit_steps`): the episode's 0/1 reward says only that something went wrong,
    these steps say what was right there. Their ``goal_edit_*`` metrics join the round's."""
    if objective not in ("clone", "grpo"):
        raise ValueError(f"objective must be 'clone' or 'grpo', got {objective!r}")
    if workers < 1:
        raise ValueError(f"workers must be 1 or more, got {workers}")
    if guides and (objective != "grpo" or guides_per_round < 1 or guide_advantage <= 0):
        raise ValueError("guides need objective='grpo', guides_per_round >= 1 and guide_advantage > 0")
    if goal_edit_share and (objective != "grpo" or not 0 < goal_edit_share <= 1):
        raise ValueError("goal_edit_share needs objective='grpo' and a share in (0, 1]")
    grpo = objective == "grpo"
    rng = np.random.default_rng(seed)
    env = make_env()
    gamma = float(model.gamma)
    kept_envs: list[Any] = []  # the sampling's environments, made once for all rounds
    pool_of_samplers = None
    if workers > 1:
        import io
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        buffer = io.BytesIO()
        torch.save(model.policy, buffer)
        pool_of_samplers = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"),
                                               initializer=_start_sampler, initargs=(make_env, buffer.getvalue()))

    def sample(round_: int, batches: list[list[int]]) -> Any:
        seeds_of = [int(np.random.SeedSequence([seed, round_, b]).generate_state(1)[0]) for b in range(len(batches))]
        if pool_of_samplers is None:
            return (_sampled_episodes(make_env, batch, model.policy, grpo, s, kept_envs) for batch, s in zip(batches, seeds_of, strict=True))
        state = {key: value.detach().cpu() for key, value in model.policy.state_dict().items()}
        # every job carries the round's weights (~1 MB at 64 channels): any worker may take any batch
        return pool_of_samplers.map(_sample_batch, [(state, batch, grpo, s) for batch, s in zip(batches, seeds_of, strict=True)])

    earlier = list(demos)
    found_all: list[Demonstration] = []
    try:
        for round_ in range(first_round, first_round + rounds):
            clock = time.perf_counter()
            base = first_seed + round_ * starts
            found: list[Demonstration] = []
            goals = solved = 0
            steps: list[np.ndarray] = []
            actions: list[np.ndarray] = []
            rewards: list[bool] = []
            start_levels: list[np.ndarray] = []
            batches = [[base + j for j in range(b, min(b + batch_starts, starts)) for _ in range(samples)]
                       for b in range(0, starts, batch_starts)]
            for seeds, played in zip(batches, sample(round_, batches), strict=True):
                if grpo:
                    steps += played["observations"]
                    actions += played["actions"]
                    rewards += played["env_goals"]
                for j in range(0, len(seeds), samples):
                    start_levels.append(played["starts"][j])
                    distinct: dict[bytes, np.ndarray] = {}
                    for k in range(j, j + samples):
                        if played["env_goals"][k]:
                            goals += 1
                            distinct.setdefault(played["finals"][k].tobytes(), played["finals"][k])
                    solved += bool(distinct)
                    found.extend(Demonstration(seeds[j], played["starts"][j], final) for final in distinct.values())
            metrics = {
                "self_imitation/sample_goal_rate": goals / (starts * samples),
                "self_imitation/solved_starts": solved / starts,
                "self_imitation/goal_levels": float(len(found)),
            }
            if path is not None:  # before cloning: a failure there keeps the round's levels
                with path.open("a") as sink:
                    sink.writelines(json.dumps(demo.record()) + "\n" for demo in found)
            if grpo:
                reward = torch.tensor(rewards, dtype=torch.float32)
                episode_advantage = group_normalized_advantages(reward, torch.arange(len(rewards)) // samples).numpy()
                lengths = [len(a) for a in actions]
                step_advantage = np.repeat(episode_advantage, lengths)
                if guides:
                    drawn = [guides[i] for i in sorted(rng.choice(len(guides), min(guides_per_round, len(guides)), replace=False))]
                    guide_obs, guide_actions = demonstration_steps(
                        env, symmetric_demonstrations(drawn, env.unwrapped.problem) if symmetric else drawn, rng)  # type: ignore[attr-defined]
                    steps.append(guide_obs)
                    actions.append(guide_actions)
                    step_advantage = np.concatenate([step_advantage, np.full(len(guide_actions), guide_advantage, np.float32)])
                    metrics["self_imitation/guide_steps"] = float(len(guide_actions))
                aux: tuple[np.ndarray, np.ndarray] | None = None
                if goal_edit_share:
                    added_obs, added_actions, added_advantages, found_metrics, aux = goal_edit_steps(
                        model.policy, env.unwrapped.problem, np.concatenate(steps[: len(lengths)]),  # type: ignore[attr-defined]
                        np.repeat(np.arange(len(lengths)), lengths), np.concatenate(actions[: len(lengths)]),
                        np.asarray(rewards, dtype=bool), start_levels, samples, goal_edit_share, rng)
                    if not goal_edit_weight:
                        steps.append(added_obs)
                        actions.append(added_actions)
                        step_advantage = np.concatenate([step_advantage, added_advantages])
                    metrics.update({f"self_imitation/{key}": value for key, value in found_metrics.items()})
                result = group_relative_update(
                    model.policy, np.concatenate(steps), np.concatenate(actions),
                    step_advantage, epochs=epochs, learning_rate=learning_rate, seed=seed + round_,
                    aux_observations=aux[0] if aux else None, aux_masks=aux[1] if aux else None, aux_weight=goal_edit_weight,
                )
                metrics.update({f"self_imitation/{key}": value for key, value in result.items()})
            elif found:
                new = found
                if pool and len(found) > pool:  # a round may find more than the pool holds
                    new = [found[i] for i in sorted(rng.choice(len(found), pool, replace=False))]
                kept = earlier
                if pool and len(new) + len(earlier) > pool:
                    picked = rng.choice(len(earlier), pool - len(new), replace=False)
                    kept = [earlier[i] for i in sorted(picked)]
                training = kept + new  # the new ones last: the clone's held-out tail is the newest levels
                metrics["self_imitation/demonstrations"] = float(len(training))
                if symmetric:
                    training = symmetric_demonstrations(training, env.unwrapped.problem)  # type: ignore[attr-defined]
                observations, to_do, returns = demonstration_states(env, training, orders, gamma, seed=seed + round_)
                result = clone(model.policy, observations, to_do, returns, epochs=epochs, seed=seed + round_)
                metrics.update({key.replace("teacher/", "self_imitation/"): value for key, value in result.items()
                                if key != "teacher/epoch"})
            earlier += found
            found_all += found
            metrics["self_imitation/seconds"] = time.perf_counter() - clock
            if log is not None:
                log(round_ + 1, metrics)
    finally:
        env.close()
        for kept in kept_envs:
            kept.close()
        if pool_of_samplers is not None:
            pool_of_samplers.shutdown(cancel_futures=True)
    return found_all
