"""Training level generators with Stable-Baselines3 (PPO by default; A2C and DQN).

``rl4gen train configs/levels/binary-narrow.yaml`` lands here when the config says
``task: levels``. The run folder is the same as for generative tasks: ``config.yaml``,
``metrics.jsonl`` and ``tensorboard/`` (through ``MetricsLogger``), ``samples/levels.jsonl``
(every finished episode's level, at most ``levels_per_log`` per record), ``checkpoints/step_N/``
and ``model.zip``.

Metric keys are CleanRL's (``docs/metrics.md``), translated from SB3's logger:
``charts/episodic_return`` and ``charts/episodic_length`` (SB3's mean over the last 100
episodes), ``charts/SPS``, ``charts/learning_rate``, ``losses/policy_loss``, ``losses/value_loss``,
``losses/entropy``, ``losses/approx_kl`` (SB3's k3 estimate), ``losses/clipfrac``,
``losses/explained_variance``, ``losses/td_loss`` (DQN), ``charts/epsilon`` (DQN), plus
``levels/goal_rate`` and ``levels/changes`` over the episodes finished since the last record.
"""

from __future__ import annotations

import difflib
import functools
import inspect
import json
import shutil
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import gymnasium as gym
import numpy as np
import yaml
from pydantic import Field, PrivateAttr, ValidationError, field_validator

from rl4gen.config import ConfigError, Strict, deep_merge, parse_set, read_yaml
from rl4gen.envs.levels.problems import PROBLEMS
from rl4gen.envs.levels.representations import REPRESENTATIONS

__all__ = ["LevelsTrainConfig", "LevelsTrainResult", "level_env_name", "load_levels_config", "train_levels"]

ENV_NAMES = tuple(f"{p}-{r}" for p in PROBLEMS for r in REPRESENTATIONS)


def level_env_name(text: str) -> str | None:
    """``problem-representation`` for ``binary-narrow`` or ``rl4gen/binary-narrow-v0``; None when
    the text names no level environment."""
    name = text.removeprefix("rl4gen/").removesuffix("-v0")
    return name if name in ENV_NAMES else None


class LevelsTrainConfig(Strict):
    task: Literal["levels"] = "levels"
    """Marks a level-generation run (dispatches `rl4gen train` here)."""
    env: str = "binary-narrow"
    """Environment as problem-representation, e.g. zelda-narrow (see docs/tasks/levels.md)."""
    algorithm: Literal["ppo", "a2c", "dqn"] = "ppo"
    """Stable-Baselines3 algorithm; dqn needs a Discrete action space (narrow or turtle)."""
    seed: int = 0
    """Seeds SB3 (torch, numpy) and the environments (environment i gets seed + i)."""
    total_timesteps: int = Field(100_000, ge=0)
    """Environment steps over all environments (0: no RL, e.g. only the search teacher's clone)."""
    num_envs: int = Field(8, ge=1)
    """Environments stepped together (SB3 DummyVecEnv)."""
    env_args: dict[str, Any] = Field(default_factory=dict)
    """LevelEnv options: change_percentage, goal_bonus, max_iterations, random_tile, problem_options."""
    crop_size: int | None = Field(None, ge=1)
    """Egocentric crop for narrow/turtle; null = 2 × max(width, height), the whole map."""
    algorithm_args: dict[str, Any] = Field(default_factory=dict)
    """Passed to the SB3 constructor: learning_rate, n_steps, batch_size, gamma, gae_lambda,
    clip_range, ent_coef, ... (SB3's names; unknown names are rejected at load)."""
    features_dim: int = Field(256, ge=1)
    """Width of the CNN's output (the policy and value heads sit on top; policy cnn)."""
    policy: Literal["cnn", "fullyconv"] = "cnn"
    """cnn: LevelCNN + SB3's MLP heads; fullyconv (wide only, ppo/a2c): per-cell tile logits
    from a fully convolutional net over one flat (tile, cell) action, PCGRL's wide agent."""
    channels: int = Field(32, ge=1)
    """Width of the fully convolutional net (policy fullyconv)."""
    attention_layers: int = Field(0, ge=0)
    """Policy fullyconv: transformer encoder layers over the map's cells after the convolutions
    (every cell attends to every other; channels must divide by their 4 heads)."""
    mask_noop: bool = True
    """Policy fullyconv: never write the tile a cell already has (a no-op step)."""
    goal_features: bool = False
    """Wide envs: add GoalFeatures' planes to the observation (distance map along the goal's path,
    its farthest cells, the change budget left, progress on each goal condition)."""
    rule_planes: bool = False
    """With goal_features (sokoban only): two more planes, the dead cells (no push sequence takes a
    crate there to a target) and the crates the player can push now (docs/tasks/levels.md)."""
    lookahead_planes: bool = False
    """With goal_features: planes that say what each single edit would lead to by the env's own
    statistics (goal level; sokoban also solvable and solution length), fed to the fullyconv
    policy's logits too; every other tile of every cell is tried each step (docs/tasks/levels.md)."""
    teacher_levels: int = Field(0, ge=0)
    """Before RL, clone a search teacher (policy fullyconv): the beam search finds goal levels for
    this many start levels and the policy learns to make their edits (rl4gen.envs.levels.teacher);
    0 = off."""
    teacher_file: str | None = None
    """A teacher/demos.jsonl of an earlier run to clone instead of searching again."""
    teacher_orders: int = Field(3, ge=1)
    """Random orders in which each demonstration's edits are played (states per demonstration)."""
    teacher_epochs: int = Field(10, ge=0)
    """Passes of behaviour cloning over the demonstration states (0: the demonstrations only seed
    the self-imitation pool, e.g. an earlier run's goal levels when continuing its rounds)."""
    teacher_time_limit: float = Field(3.0, gt=0)
    """Process seconds the search may spend on one start level."""
    teacher_symmetries: bool = False
    """Clone each demonstration under every rotation and reflection of the map too (8 images on
    square maps, 4 on others; an image whose final level misses the goal is dropped)."""
    self_imitation_rounds: int = Field(0, ge=0)
    """After cloning (policy fullyconv): rounds of expert iteration, each cloning the goal levels
    the policy's own sampled episodes reach (rl4gen.envs.levels.teacher.self_imitation); 0 = off."""
    self_imitation_starts: int = Field(800, ge=1)
    """New start levels per self-imitation round."""
    self_imitation_samples: int = Field(16, ge=1)
    """Sampled episodes per start level in a self-imitation round."""
    self_imitation_epochs: int = Field(3, ge=1)
    """Cloning passes per self-imitation round."""
    self_imitation_pool: int = Field(2500, ge=0)
    """Demonstrations cloned per round at most (the round's new ones plus a random sample of the
    earlier ones, before symmetries); 0 = all of them."""
    self_imitation_objective: Literal["clone", "grpo"] = "clone"
    """clone: clone the rounds' goal levels; grpo: a clipped policy-gradient step on every sampled
    episode with GRPO's group-relative advantage of the 0/1 goal reward (failures count too; no
    pool, so _pool is unused)."""
    self_imitation_learning_rate: float = Field(1e-4, gt=0)
    """Adam's learning rate for the grpo objective (cloning uses 1e-3)."""
    self_imitation_workers: int = Field(1, ge=1)
    """Processes that sample a round's episodes; the episodes, and so the run, are the same for
    any number (each batch of 100 start levels is seeded). Measured on 2 cores: no real gain yet
    (docs/tasks/levels.md)."""
    self_imitation_guide_file: str | None = None
    """grpo rounds: search demonstrations (an ``rl4gen levels teach`` output, best
    ``--unsolved-by`` an earlier run: start levels its samples never solved) that join every
    round's update as episodes with a fixed positive advantage, to widen what the policy solves
    (rl4gen.envs.levels.teacher.self_imitation; under the symmetries with teacher_symmetries)."""
    self_imitation_guides: int = Field(150, ge=1)
    """Guide demonstrations drawn for each round's update (before symmetries)."""
    self_imitation_guide_advantage: float = Field(2.0, gt=0)
    """The advantage of a guide episode's steps (a rare success in a group of 16 gets ~3.9)."""
    self_imitation_goal_edits: float = Field(0.0, ge=0, le=1)
    """grpo rounds: share of each round's start levels whose sampled states are checked for edits
    that reach the goal at once; the states that have one are then cloned towards them (the
    optimal actions there: rl4gen.envs.levels.teacher.goal_edit_update). 0 = off."""
    self_imitation_goal_edit_weight: float = Field(0.0, ge=0)
    """0: those states join the update as counterfactual successes (clipped like sampled steps);
    above 0: an auxiliary loss of this weight in the update, −log of the goal edits' probability."""
    self_imitation_first_round: int = Field(0, ge=0)
    """Number of the rounds already done, when continuing an earlier run's rounds (with
    ``init_model``): start levels and metric steps carry on from there instead of repeating."""
    init_model: str | None = None
    """An SB3 model .zip of an earlier run (``model.zip``, ``teacher/model.zip`` or a checkpoint's)
    whose weights start this run; the env, policy, channels, attention_layers, goal_features, rule_planes and
    lookahead_planes must match it."""
    log_interval: int = Field(1, ge=1)
    """SB3's log_interval: updates (ppo, a2c) or episodes (dqn) between metric records."""
    checkpoint_every: int = Field(20_000, ge=1)
    """Timesteps between checkpoints (rounded up to SB3's update boundaries)."""
    levels_per_log: int = Field(8, ge=0)
    """Finished levels written to samples/levels.jsonl per metrics record."""
    output_dir: str = "runs"
    """Folder for run folders."""
    run_name: str | None = None
    """Run folder name; default levels-{env}__{algorithm}__{seed}__{timestamp}."""
    device: str = "cpu"
    """Torch device for the policy."""

    _demonstrations: dict[str, Any] = PrivateAttr(default_factory=dict)

    def demonstrations(self, key: Literal["teacher_file", "self_imitation_guide_file"], problem: Any) -> list[Any]:
        """The demonstrations in the file that config ``key`` names, for the env's ``problem``, read
        and checked once: validation reads them before a run folder is made, the run reuses them."""
        if key not in self._demonstrations:
            from rl4gen.envs.levels.teacher import load_demonstrations

            self._demonstrations[key] = load_demonstrations(getattr(self, key), (problem.height, problem.width),
                                                            problem.num_tiles, key=key)
        return list(self._demonstrations[key])

    @field_validator("env")
    @classmethod
    def _known_env(cls, value: str) -> str:
        if value not in ENV_NAMES:
            close = difflib.get_close_matches(value, ENV_NAMES, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ValueError(f"unknown level environment{hint}: use one of {', '.join(ENV_NAMES)}")
        return value


def _config_error(exc: ValidationError) -> ConfigError:
    err = exc.errors()[0]
    loc = ".".join(str(p) for p in err["loc"])
    msg = err["msg"].removeprefix("Value error, ")
    if err["type"] == "extra_forbidden":
        close = difflib.get_close_matches(loc, list(LevelsTrainConfig.model_fields), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        return ConfigError(f"unknown config key {loc!r}{hint}: remove it or fix its spelling.")
    return ConfigError(f"config key {loc!r} has an invalid value {err.get('input')!r}: {msg[:1].lower() + msg[1:]}.")


def _algorithm_class(name: str) -> Any:
    from stable_baselines3 import A2C, DQN, PPO

    return {"ppo": PPO, "a2c": A2C, "dqn": DQN}[name]


def validate_levels_config(data: dict[str, Any]) -> LevelsTrainConfig:
    """Build the config; one sentence naming the key on any problem."""
    try:
        cfg = LevelsTrainConfig.model_validate(data)
    except ValidationError as exc:
        raise _config_error(exc) from None
    accepted = set(inspect.signature(_algorithm_class(cfg.algorithm).__init__).parameters)
    reserved = {"policy", "env", "seed", "device", "policy_kwargs", "tensorboard_log", "verbose", "_init_setup_model"}
    for key in cfg.algorithm_args:
        if key not in accepted or key in reserved:
            close = difflib.get_close_matches(key, sorted(accepted - reserved), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ConfigError(f"config key 'algorithm_args.{key}' is not an option of {cfg.algorithm}{hint}: remove it.")
    if cfg.policy == "fullyconv" and (not cfg.env.endswith("-wide") or cfg.algorithm == "dqn"):
        raise ConfigError("config key 'policy' fullyconv needs a wide env and ppo or a2c: use policy cnn otherwise.")
    if (cfg.teacher_levels or cfg.teacher_file) and cfg.policy != "fullyconv":
        raise ConfigError("config key 'teacher_levels' needs policy fullyconv (a wide env with one flat edit action): set policy fullyconv or drop the teacher.")
    if cfg.teacher_symmetries and not (cfg.teacher_levels or cfg.teacher_file or cfg.self_imitation_rounds):
        raise ConfigError("config key 'teacher_symmetries' applies to demonstrations: set teacher_levels, teacher_file or self_imitation_rounds, or drop it.")
    if cfg.self_imitation_rounds and cfg.policy != "fullyconv":
        raise ConfigError("config key 'self_imitation_rounds' needs policy fullyconv (a wide env with one flat edit action): set policy fullyconv or drop it.")
    if cfg.teacher_epochs == 0 and (cfg.teacher_levels or cfg.teacher_file) and not cfg.self_imitation_rounds:
        raise ConfigError("config key 'teacher_epochs' is 0, so the demonstrations are never used: set it to 1 or more, or add self_imitation_rounds.")
    if cfg.self_imitation_guide_file and not (cfg.self_imitation_rounds and cfg.self_imitation_objective == "grpo"):
        raise ConfigError("config key 'self_imitation_guide_file' joins grpo rounds' updates: set self_imitation_rounds and "
                          "self_imitation_objective grpo, or drop it.")
    if cfg.self_imitation_goal_edits and not (cfg.self_imitation_rounds and cfg.self_imitation_objective == "grpo"):
        raise ConfigError("config key 'self_imitation_goal_edits' joins grpo rounds: set self_imitation_rounds and "
                          "self_imitation_objective grpo, or set it to 0.")
    if cfg.self_imitation_goal_edit_weight and not cfg.self_imitation_goal_edits:
        raise ConfigError("config key 'self_imitation_goal_edit_weight' weighs the goal edits: set self_imitation_goal_edits "
                          "(a share of the start levels, e.g. 0.5) too, or drop it.")
    if cfg.self_imitation_first_round and not cfg.self_imitation_rounds:
        raise ConfigError("config key 'self_imitation_first_round' continues self-imitation rounds: set self_imitation_rounds, or drop it.")
    if cfg.init_model is not None and not Path(cfg.init_model).is_file():
        raise ConfigError(f"config key 'init_model' names no file ({cfg.init_model!r}): give the model.zip of an earlier run.")
    if cfg.goal_features and not cfg.env.endswith("-wide"):
        raise ConfigError("config key 'goal_features' needs a wide env (a whole-map observation): set it false for narrow and turtle.")
    if cfg.attention_layers and cfg.policy != "fullyconv":
        raise ConfigError("config key 'attention_layers' needs policy fullyconv: set policy fullyconv or drop it.")
    if cfg.attention_layers and cfg.channels % 4:
        raise ConfigError(f"config key 'attention_layers' splits channels over 4 heads, but channels is {cfg.channels}: use a multiple of 4.")
    if cfg.rule_planes and not cfg.goal_features:
        raise ConfigError("config key 'rule_planes' adds to the goal features: set goal_features true too (a wide env).")
    if cfg.lookahead_planes and not cfg.goal_features:
        raise ConfigError("config key 'lookahead_planes' adds to the goal features: set goal_features true too (a wide env).")
    if cfg.rule_planes and not PROBLEMS[cfg.env.split("-")[0]].rule_plane_names:
        raise ConfigError(f"config key 'rule_planes' is defined for sokoban only, not {cfg.env.split('-')[0]}: drop it.")
    if cfg.algorithm == "dqn" and cfg.env.endswith("-wide"):
        raise ConfigError("algorithm 'dqn' needs a Discrete action space: use a narrow or turtle env, or ppo/a2c for wide.")
    env_keys = {"change_percentage", "goal_bonus", "max_iterations", "random_tile", "problem_options"}
    for key in cfg.env_args:
        if key not in env_keys:
            raise ConfigError(f"config key 'env_args.{key}' is not a level environment option: use {', '.join(sorted(env_keys))}.")
    try:
        env = _make_env(cfg, 0, None)
    except ValueError as exc:
        raise ConfigError(f"config key 'env_args' is invalid: {exc}") from None
    keys: tuple[Literal["teacher_file", "self_imitation_guide_file"], ...] = ("teacher_file", "self_imitation_guide_file")
    for key in keys:  # checked before a run folder is made
        if getattr(cfg, key):
            cfg.demonstrations(key, env.unwrapped.problem)  # type: ignore[attr-defined]  # a LevelEnv
    env.close()
    return cfg


def load_levels_config(path: str | Path | None, sets: list[str], base: dict[str, Any] | None = None) -> LevelsTrainConfig:
    """YAML file (or ``base``) ← ``--set`` overrides, validated."""
    data = dict(base) if base is not None else (read_yaml(path) if path else {})
    for item in sets:
        data = deep_merge(data, parse_set(item))
    return validate_levels_config(data)


def is_levels_config(path: str | Path | None, sets: list[str]) -> bool:
    """Whether a `rl4gen train` invocation describes a level-generation run."""
    for item in sets:
        if item.replace(" ", "").startswith("task="):
            return item.split("=", 1)[1].strip() == "levels"
    if path is None:
        return False
    data = read_yaml(path)
    return isinstance(data, dict) and data.get("task") == "levels"


def dump_levels_config(cfg: LevelsTrainConfig) -> str:
    return yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False)


# --------------------------------------------------------------------------------------------


def _make_env(cfg: LevelsTrainConfig, rank: int, sink: list[Any] | None) -> gym.Env[Any, Any]:
    import rl4gen.envs  # noqa: F401
    from rl4gen.envs.levels.wrappers import RecordLevels, policy_observation

    env: gym.Env[Any, Any] = gym.make(f"rl4gen/{cfg.env}-v0", **cfg.env_args)
    if sink is not None:
        env = RecordLevels(env, sink)
    return policy_observation(env, cfg.crop_size, flat_actions=cfg.policy == "fullyconv", goal_features=cfg.goal_features,
                              rule_planes=cfg.rule_planes, lookahead=cfg.lookahead_planes)


class LevelsTrainResult:
    def __init__(self, run_dir: Path, timesteps: int, model: Any) -> None:
        self.run_dir, self.timesteps, self.model = run_dir, timesteps, model


def _latest_checkpoint(run_dir: Path) -> tuple[Path, int] | None:
    found = []
    for path in (run_dir / "checkpoints").glob("step_*"):
        if (path / "model.zip").is_file() and (path / "state.json").is_file():
            found.append((json.loads((path / "state.json").read_text())["timesteps"], path))
    if not found:
        return None
    timesteps, path = max(found)
    return path, timesteps


def train_levels(
    cfg: LevelsTrainConfig, run_dir: Path | None = None, resume: bool = False, show_progress: bool = True
) -> LevelsTrainResult:
    """Train (or resume) a level generator; returns the run folder and the trained model."""
    from stable_baselines3.common.logger import Logger
    from stable_baselines3.common.vec_env import DummyVecEnv, VecMonitor

    from rl4gen.envs.levels.networks import FullyConvPolicy, LevelCNN
    from rl4gen.envs.levels.sb3_bridge import LevelsCallback, MetricsWriter
    from rl4gen.tracking import MetricsLogger

    start = 0
    if resume:
        if run_dir is None:
            raise ValueError("resume needs the run folder")
        latest = _latest_checkpoint(run_dir)
        if latest is None:
            raise ConfigError(f"run folder {str(run_dir)!r} has no complete checkpoint to resume from.")
        checkpoint, start = latest
    else:
        stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
        run_dir = run_dir or Path(cfg.output_dir) / (cfg.run_name or f"levels-{cfg.env}__{cfg.algorithm}__{cfg.seed}__{stamp}")

    sink: list[tuple[np.ndarray, dict[str, Any]]] = []
    env_seed = cfg.seed + start  # a resumed run starts fresh episodes from new seeds
    venv = VecMonitor(DummyVecEnv([functools.partial(_make_env, cfg, i, sink) for i in range(cfg.num_envs)]))
    venv.seed(env_seed)
    algo = _algorithm_class(cfg.algorithm)
    if resume:
        model = algo.load(checkpoint / "model.zip", env=venv, device=cfg.device)
    elif cfg.policy == "fullyconv":
        problem = PROBLEMS[cfg.env.split("-")[0]]
        feature_planes = venv.observation_space.shape[0] - len(problem.tiles)  # type: ignore[index]
        policy_kwargs = {"channels": cfg.channels, "mask_noop": cfg.mask_noop, "feature_planes": feature_planes,
                         "attention_layers": cfg.attention_layers}
        if cfg.lookahead_planes:
            policy_kwargs["lookahead_planes"] = len(problem.lookahead_names) * len(problem.tiles)
        model = algo(FullyConvPolicy, venv, seed=cfg.seed, device=cfg.device, policy_kwargs=policy_kwargs, verbose=0, **cfg.algorithm_args)
    else:
        policy_kwargs = {
            "features_extractor_class": LevelCNN,
            "features_extractor_kwargs": {"features_dim": cfg.features_dim},
            "normalize_images": False,
        }
        model = algo("MlpPolicy", venv, seed=cfg.seed, device=cfg.device, policy_kwargs=policy_kwargs, verbose=0, **cfg.algorithm_args)
    if not resume:
        if cfg.init_model is not None:
            _load_weights(model, cfg.init_model, venv)
        run_dir.mkdir(parents=True, exist_ok=True)  # after the checks above: a bad run leaves no folder
        (run_dir / "config.yaml").write_text(dump_levels_config(cfg))

    metrics = MetricsLogger(run_dir, cfg.total_timesteps, start_step=start, show_progress=show_progress)
    if not resume and (cfg.teacher_levels or cfg.teacher_file or cfg.self_imitation_rounds):
        try:
            _clone_teacher(cfg, run_dir, model, metrics, show_progress)
        except BaseException:
            metrics.close()
            venv.close()
            raise
        save_checkpoint(model, run_dir, 0)  # the cloned (and self-imitated) policy, before RL
    writer = MetricsWriter(metrics, cfg.algorithm)
    model.set_logger(Logger(folder=None, output_formats=[writer]))
    callback = LevelsCallback(cfg, run_dir, metrics, sink)
    try:
        remaining = max(cfg.total_timesteps - start, 0)
        if remaining:
            model.learn(
                total_timesteps=remaining,
                callback=callback,
                log_interval=cfg.log_interval,
                reset_num_timesteps=not resume,
                progress_bar=False,
            )
            if writer.last_step < model.num_timesteps:  # e.g. dqn: what was recorded since the last record
                model.logger.dump(step=int(model.num_timesteps))
        callback.write_levels()
        save_checkpoint(model, run_dir, int(model.num_timesteps))
        model.save(run_dir / "model.tmp.zip")
        (run_dir / "model.tmp.zip").replace(run_dir / "model.zip")
    finally:
        metrics.close()
        venv.close()
    return LevelsTrainResult(run_dir, int(model.num_timesteps), model)


def _load_weights(model: Any, path: str, venv: Any) -> None:
    """``init_model``: the weights (and SB3's optimizer state) of an earlier run's model .zip, or
    one sentence saying why they do not fit."""
    import zipfile

    try:
        model.set_parameters(path, exact_match=True, device=model.device)
    except (RuntimeError, ValueError, KeyError, zipfile.BadZipFile) as exc:
        venv.close()
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ConfigError(f"config key 'init_model' ({path!r}) does not fit this run's policy ({first[:160]}): "
                          "give a model saved with the same env, policy, channels, attention_layers, goal_features, rule_planes and "
                          "lookahead_planes.") from None


def _clone_teacher(cfg: LevelsTrainConfig, run_dir: Path, model: Any, metrics: Any, show_progress: bool) -> None:
    """Demonstrations from the search teacher (or ``teacher_file``), behaviour cloning, then the
    self-imitation rounds."""
    import sys

    from rl4gen.envs.levels.teacher import (
        SEED_OFFSET,
        SELF_SEED_OFFSET,
        Demonstration,
        clone,
        demonstration_states,
        search_demonstrations,
        self_imitation,
        symmetric_demonstrations,
    )

    env = _make_env(cfg, 0, None)
    problem = env.unwrapped.problem  # type: ignore[attr-defined]  # a LevelEnv
    demos: list[Demonstration] = []
    if cfg.teacher_file:
        demos = cfg.demonstrations("teacher_file", problem)
    elif cfg.teacher_levels:
        path = run_dir / "teacher" / "demos.jsonl"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("")

        def progress(done: int, found: int) -> None:
            if show_progress and (done % 50 == 0 or done == cfg.teacher_levels):
                sys.stderr.write(f"teacher: searched {done}/{cfg.teacher_levels} start levels, {found} goal levels found\n")

        demos = search_demonstrations(env, cfg.teacher_levels, cfg.seed + SEED_OFFSET, cfg.teacher_time_limit, path, progress)
        if not demos:
            raise ConfigError("the search teacher found no goal level: raise teacher_time_limit or drop the teacher.")
    gamma = float(cfg.algorithm_args.get("gamma", model.gamma))
    if demos and cfg.teacher_epochs:
        cloned = symmetric_demonstrations(demos, problem) if cfg.teacher_symmetries else demos
        observations, to_do, returns = demonstration_states(env, cloned, cfg.teacher_orders, gamma, seed=cfg.seed)
        result = clone(model.policy, observations, to_do, returns, epochs=cfg.teacher_epochs, seed=cfg.seed)
        result["teacher/demonstrations"] = float(len(demos))
        metrics.log(0, result)
        if show_progress:
            sys.stderr.write(f"teacher: cloned {len(demos)} demonstrations ({len(observations)} states), "
                             f"held-out accuracy {result.get('teacher/accuracy', float('nan')):.3f}\n")
    env.close()
    if cfg.self_imitation_rounds:

        def log(round_: int, values: dict[str, float]) -> None:
            metrics.log(round_, values)
            model.save(run_dir / "teacher" / "model.tmp.zip")  # the policy so far (step_0 once all rounds are done)
            (run_dir / "teacher" / "model.tmp.zip").replace(run_dir / "teacher" / "model.zip")
            if show_progress:
                sys.stderr.write(f"self-imitation: round {round_}/{cfg.self_imitation_first_round + cfg.self_imitation_rounds}, sampled goal rate "
                                 f"{values['self_imitation/sample_goal_rate']:.3f}, {int(values['self_imitation/goal_levels'])} goal levels\n")

        guides = cfg.demonstrations("self_imitation_guide_file", problem) if cfg.self_imitation_guide_file else []
        (run_dir / "teacher").mkdir(exist_ok=True)
        (run_dir / "teacher" / "self_demos.jsonl").write_text("")
        self_imitation(
            model, functools.partial(_make_env, cfg, 0, None), demos, cfg.self_imitation_rounds, cfg.self_imitation_starts,
            cfg.self_imitation_samples, cfg.seed + SELF_SEED_OFFSET, epochs=cfg.self_imitation_epochs,
            pool=cfg.self_imitation_pool, orders=cfg.teacher_orders, symmetric=cfg.teacher_symmetries, seed=cfg.seed,
            path=run_dir / "teacher" / "self_demos.jsonl", log=log, first_round=cfg.self_imitation_first_round,
            objective=cfg.self_imitation_objective, learning_rate=cfg.self_imitation_learning_rate,
            workers=cfg.self_imitation_workers, guides=guides, guides_per_round=cfg.self_imitation_guides,
            guide_advantage=cfg.self_imitation_guide_advantage,
            goal_edit_share=cfg.self_imitation_goal_edits,
            goal_edit_weight=cfg.self_imitation_goal_edit_weight,
        )


def read_run_config(folder: Path) -> dict[str, Any]:
    """A level run folder's saved ``config.yaml`` (not yet validated); one sentence when the
    folder holds none."""
    saved = read_yaml(folder / "config.yaml") if (folder / "config.yaml").is_file() else None
    if not isinstance(saved, dict) or saved.get("task") != "levels":
        raise ConfigError(f"{str(folder)!r} is not a level run folder (no config.yaml with 'task: levels').")
    return saved


# Files that only start a run (its first weights, its demonstrations): once trained, it needs none of them.
STARTING_FILES = ("init_model", "teacher_file", "self_imitation_guide_file")


def saved_run_config(folder: Path, sets: list[str] | None = None) -> LevelsTrainConfig:
    """A level run folder's saved config (``--set`` overrides applied), validated without the files
    that only started it (``STARTING_FILES``): evaluating, searching or resuming a trained run
    works after its ``init_model`` or demonstrations have moved."""
    saved = read_run_config(folder)
    return load_levels_config(None, sets or [], base={k: v for k, v in saved.items() if k not in STARTING_FILES})


def unsolved_starts(run_dir: str | Path) -> tuple[LevelsTrainConfig, list[int]]:
    """The start levels of a run's self-imitation (or grpo) rounds on which none of its sampled
    episodes reached the goal, as ``reset`` seeds, the last round's first: where search
    demonstrations (``self_imitation_guide_file``) can widen what the policy solves. Returns the
    run's config too. One sentence naming the problem for a folder that is no such run."""
    from rl4gen.envs.levels.teacher import SELF_SEED_OFFSET

    folder = Path(run_dir)
    cfg = saved_run_config(folder)
    found = folder / "teacher" / "self_demos.jsonl"
    if not cfg.self_imitation_rounds or not found.is_file():
        raise ConfigError(f"run {str(folder)!r} has no self-imitation rounds ({found.name} missing): give a run trained with self_imitation_rounds.")
    solved = {json.loads(line)["seed"] for line in found.read_text().splitlines() if line.strip()}
    first = cfg.self_imitation_first_round
    rounds = range(first + cfg.self_imitation_rounds - 1, first - 1, -1)
    base = cfg.seed + SELF_SEED_OFFSET
    return cfg, [seed for r in rounds for i in range(cfg.self_imitation_starts)
                 if (seed := base + r * cfg.self_imitation_starts + i) not in solved]


def save_checkpoint(model: Any, run_dir: Path, timesteps: int) -> Path:
    """``checkpoints/step_N/`` with ``model.zip`` (weights, optimizer, schedules) and
    ``state.json``, written to a temporary folder and renamed."""
    final = run_dir / "checkpoints" / f"step_{timesteps}"
    if final.exists():
        return final
    tmp = final.with_name(final.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    model.save(tmp / "model.zip")
    (tmp / "state.json").write_text(json.dumps({"timesteps": timesteps}))
    tmp.replace(final)
    return final
