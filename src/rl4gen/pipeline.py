"""``rl4gen pipeline``: the whole RLHF recipe from one command, with a reward-hacking check.

Stages, each done by the library function of its own command (nothing is re-implemented here):

1. **SFT prior**: the task's cached prior (``rl4gen pretrain``).
2. **Synthetic preferences**: the prior samples ``num_generations`` replies per training prompt
   and a judge ranks every pair (``rl4gen prefs generate``). The judge is the *training judge*.
3. **Reward model**: Bradley–Terry on the prior's trunk (``rl4gen reward train``), a seeded
   fraction of the pairs held out; ``num_heads > 1`` makes an ensemble.
4. **RL with the learned reward**: PPO and GRPO (``rl4gen train`` with the ``reward_model``
   reward), and DPO on the same training pairs (``rl4gen dpo``) for comparison.
5. **Report**: for the prior and each method, on held-out prompts (questions never used in SFT,
   preferences or RL), two sampled replies per prompt scored by the *held-out judge* (a reward,
   e.g. the simulated user's full satisfaction) and by the learned reward model; the per-token KL
   (k3) to the prior; and how often the reward model ranks each pair of replies as the held-out
   judge does. The RM rising while the judge stays flat (or falls) and the agreement dropping on
   the RL policy's replies is reward hacking. Written as ``report.md`` and ``report.json`` in the
   run folder and printed.

The training judge and the held-out judge are configured apart on purpose: the dialogue recipe
trains the reward model on a judge that never sees the topic, and evaluates with the full user.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from pydantic import BaseModel, Field, ValidationError

from rl4gen.config import (
    ConfigError,
    Strict,
    TrainConfig,
    deep_merge,
    format_validation_error,
    parse_set,
    read_yaml,
    validate_config,
)
from rl4gen.prefs import JudgeSpec

Method = Literal["ppo", "grpo", "dpo"]

#: The pipeline's RL settings on top of the task's recipe (before the recipe's ``rl`` overrides).
RL_DEFAULTS: dict[str, Any] = {"max_steps": 40, "eval_steps": 20}
#: Each RL method's algorithm block (before the recipe's ``ppo`` / ``grpo`` overrides): PPO takes
#: one reply per question and four epochs over them; GRPO four replies per question, one update.
ALGORITHM_DEFAULTS: dict[str, dict[str, Any]] = {
    "ppo": {"name": "ppo", "num_generations": 1, "kl_coef": 0.05, "num_ppo_epochs": 4},
    "grpo": {"name": "grpo", "num_generations": 4, "beta": 0.05},
}


class HeldOutJudge(Strict):
    type: str = "satisfaction"
    """Registered reward type that scores held-out replies (higher = better)."""
    args: dict[str, Any] = Field(default_factory=dict)
    """Keyword arguments of the reward type."""


class PrefsStage(Strict):
    num_prompts: int = Field(256, ge=1)
    """Training prompts the prior answers to make preference pairs."""
    num_generations: int = Field(4, ge=2)
    """Replies per prompt; every pair of distinct ones is judged."""
    judge: JudgeSpec = Field(
        default_factory=lambda: JudgeSpec(
            type="reward", args={"type": "satisfaction", "args": {"parts": ["helpful", "non_repetitive", "concise"]}}
        )
    )
    """The training judge (see docs/commands/prefs.md); its preferences are what the reward model learns."""
    tie_threshold: float = Field(0.0, ge=0, lt=1)
    """Preferences with |value| <= tie_threshold are ties and not written."""


class PipelineConfig(Strict):
    """``rl4gen pipeline``: SFT prior → preferences → reward model → PPO / GRPO / DPO → report."""

    task: str = "dialogue"
    """Task: its training prompts, held-out prompts and cached prior."""
    task_args: dict[str, Any] = Field(default_factory=dict)
    """Options of the task."""
    seed: int = Field(0, ge=0)
    """Seeds every stage."""
    output_dir: str = "runs"
    """Folder under which the pipeline's run folder is created."""
    run_name: str | None = None
    """Run folder name; null = {task}__pipeline__{seed}__{timestamp}."""
    methods: list[Method] = Field(default_factory=lambda: list[Method](["ppo", "grpo", "dpo"]), min_length=1)
    """Methods to run and compare, in this order."""
    prefs: PrefsStage = Field(default_factory=PrefsStage)
    heldout_judge: HeldOutJudge = Field(default_factory=HeldOutJudge)
    """What the report's ``judge`` column measures (never seen in training)."""
    pairs_eval_fraction: float = Field(0.2, gt=0, lt=1)
    """Preference pairs held out (the same ones, by seed) from the reward model and DPO: their held-out accuracy."""
    reward: dict[str, Any] = Field(default_factory=dict)
    """Overrides of ``rl4gen reward train``'s config (docs/commands/reward.md), e.g. num_heads."""
    rl: dict[str, Any] = Field(default_factory=dict)
    """Overrides of ``rl4gen train``'s config shared by PPO and GRPO (on top of the task's recipe)."""
    ppo: dict[str, Any] = Field(default_factory=dict)
    """Overrides for the PPO run (after rl); its algorithm block starts from ALGORITHM_DEFAULTS, not the task's."""
    grpo: dict[str, Any] = Field(default_factory=dict)
    """Overrides for the GRPO run (after rl)."""
    dpo: dict[str, Any] = Field(default_factory=dict)
    """Overrides of ``rl4gen dpo``'s config (docs/commands/dpo.md)."""
    eval_size: int = Field(128, ge=1)
    """Held-out prompts in the report; two replies each (so as many fresh pairs for the agreement)."""
    uncertainty_penalty: float = Field(0.0, ge=0)
    """RL reward = reward-model ensemble mean - this x its spread (with reward.num_heads > 1)."""


# ----------------------------------------------------------------------------- stage configs


def _validated(cls: type[BaseModel], data: dict[str, Any], key: str) -> Any:
    try:
        return cls.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(f"in the pipeline's '{key}' stage: " + format_validation_error(exc, root=cls)) from None


@dataclass
class StageConfigs:
    """The validated configs of every stage, as the pipeline runs them."""

    prefs: Any  # rl4gen.prefs.PrefsConfig
    reward: Any  # rl4gen.algorithms.reward_model.RewardModelConfig
    rl: dict[str, TrainConfig]
    dpo: Any | None  # rl4gen.algorithms.dpo.DPOConfig


def stage_configs(config: PipelineConfig, run_dir: Path, prior: str) -> StageConfigs:
    """Each stage's config: the pipeline's defaults for the stage, then the recipe's overrides."""
    from rl4gen.algorithms.dpo import DPOConfig
    from rl4gen.algorithms.reward_model import RewardModelConfig
    from rl4gen.prefs import PrefsConfig
    from rl4gen.tasks import get_task

    task = get_task(config.task, config.task_args)
    prefs_file = str(run_dir / "prefs.jsonl")
    common = {"task_args": config.task_args, "seed": config.seed, "output_dir": str(run_dir)}
    prefs = _validated(
        PrefsConfig,
        {
            "output": prefs_file, "task": config.task, "task_args": config.task_args, "model": {"path": prior},
            "num_prompts": config.prefs.num_prompts, "num_generations": config.prefs.num_generations,
            "judge": config.prefs.judge.model_dump(), "tie_threshold": config.prefs.tie_threshold,
            "agreement_judge": {"type": "reward", "args": config.heldout_judge.model_dump()}, "seed": config.seed,
        },
        "prefs",
    )
    # The reward model and DPO hold out the same pairs: the same fraction and seed give the same split.
    data = {"train_file": prefs_file, "eval_fraction": config.pairs_eval_fraction}
    reward_data = {
        **common, "run_name": "reward", "model": {"path": prior}, "data": data, "head": "classification",
        "learning_rate": 3e-4, "num_train_epochs": 2, "per_device_train_batch_size": 32, "warmup_steps": 5,
    }
    reward = _validated(RewardModelConfig, deep_merge(reward_data, config.reward), "reward")
    rm_args: dict[str, Any] = {"path": str(run_dir / "reward" / "model")}
    if config.uncertainty_penalty > 0:
        rm_args["uncertainty_penalty"] = config.uncertainty_penalty
    recipe = task.default_config()
    recipe.pop("rewards", None)
    base = deep_merge(recipe, {
        **common, "task": config.task, "model": {"path": prior}, "reference_metrics": True,
        "rewards": [{"type": "reward_model", "args": rm_args}], "eval_size": config.eval_size,
    })
    base = deep_merge(deep_merge(base, RL_DEFAULTS), config.rl)
    rl: dict[str, TrainConfig] = {}
    for method, algorithm in ALGORITHM_DEFAULTS.items():
        if method not in config.methods:
            continue
        # the method's own algorithm block replaces the task's (another algorithm's fields would not validate)
        data_m = {**base, "algorithm": dict(algorithm), "run_name": method}
        data_m = deep_merge(data_m, getattr(config, method))
        try:
            rl[method] = validate_config(data_m)
        except ConfigError as exc:
            raise ConfigError(f"in the pipeline's '{method}' stage: {exc}") from None
    dpo = None
    if "dpo" in config.methods:
        dpo_data = {
            **common, "task": config.task, "run_name": "dpo", "model": {"path": prior}, "data": data,
            "beta": 0.1, "learning_rate": 1e-4, "per_device_train_batch_size": 32, "eval_size": config.eval_size,
        }
        dpo = _validated(DPOConfig, deep_merge(dpo_data, config.dpo), "dpo")
    return StageConfigs(prefs, reward, rl, dpo)


def load_pipeline_config(config_path: str | None, sets: Sequence[str], task: str | None = None) -> PipelineConfig:
    """YAML recipe (optional) ← ``task`` ← ``--set`` overrides, validated with every stage's
    config, so that a mistake anywhere is reported before anything runs."""
    data: dict[str, Any] = read_yaml(config_path) if config_path else {}
    if task is not None:
        if data.get("task", task) != task:
            raise ConfigError(f"the recipe is for task {data['task']!r}, not {task!r}: drop one of them.")
        data["task"] = task
    for item in sets:
        data = deep_merge(data, parse_set(item))
    config: PipelineConfig = _validated(PipelineConfig, data, "pipeline")
    from rl4gen.tasks import get_task

    get_task(config.task, config.task_args)  # validates task_args
    stage_configs(config, Path(config.output_dir) / "check", "prior")
    return config


# ----------------------------------------------------------------------------- evaluation


def pair_agreement(judge: Sequence[float], model: Sequence[float]) -> tuple[float | None, int, int]:
    """How often ``model`` ranks pairs as ``judge`` does.

    Both hold one score per reply, pairs being consecutive replies (0, 1), (2, 3)... Pairs the
    judge scores equally are ties and left out; a pair the model scores equally counts as a
    disagreement. Returns (agreement or None when no pair counts, pairs counted, judge ties).
    """
    if len(judge) != len(model) or len(judge) % 2:
        raise ValueError(f"need the same even number of scores, got {len(judge)} and {len(model)}")
    agree = counted = ties = 0
    for i in range(0, len(judge), 2):
        dj, dm = judge[i] - judge[i + 1], model[i] - model[i + 1]
        if dj == 0:
            ties += 1
            continue
        counted += 1
        agree += int(dm != 0 and (dj > 0) == (dm > 0))
    return (agree / counted if counted else None), counted, ties


@dataclass
class PolicyReport:
    """One policy's replies to the held-out prompts, as the report sees them."""

    judge: float  # held-out judge, mean over replies
    judge_parts: dict[str, float]  # the judge's parts when it has them (satisfaction: on_topic, ...)
    reward_model: float  # learned RM, mean over replies
    kl: float  # per-token k3 KL to the prior on the policy's replies (0 for the prior)
    agreement: float | None  # RM vs held-out judge on pairs of the policy's replies
    agreement_pairs: int
    judge_ties: int
    reply_words: float
    distinct_replies: float  # distinct replies / replies (low = the policy says the same thing to everyone)


def evaluate_policy(policy: Any, prior: Any, contexts: list[Any], judge: Any, rm: Any, seed: int) -> PolicyReport:
    """Two replies per held-out context from ``policy``, scored by the held-out judge and the
    learned reward model; the KL (k3, per token) is to ``prior`` (a policy on the same tokenizer)."""
    from rl4gen.core.kl import kl_estimate
    from rl4gen.core.losses import masked_mean

    rollout = policy.sample(contexts, 2, generator=torch.Generator(device=policy.device).manual_seed(seed))
    samples, ctx = rollout.samples, rollout.contexts
    parts = judge.parts(samples, ctx) if hasattr(judge, "parts") else {}
    scores = [float(v if v is not None else 0.0) for v in judge(samples, ctx)]
    rm_scores = [float(v) for v in rm(samples, ctx)]
    with torch.inference_mode():
        ref = prior.log_probs(rollout)
    kl = float(masked_mean(kl_estimate(rollout.logprobs, ref, "k3"), rollout.mask)) if policy is not prior else 0.0
    agreement, counted, ties = pair_agreement(scores, rm_scores)
    return PolicyReport(
        judge=sum(scores) / len(scores),
        judge_parts={k: sum(v) / len(v) for k, v in parts.items()},
        reward_model=sum(rm_scores) / len(rm_scores),
        kl=kl,
        agreement=agreement,
        agreement_pairs=counted,
        judge_ties=ties,
        reply_words=sum(len(s.split()) for s in samples) / len(samples),
        distinct_replies=len(set(samples)) / len(samples),
    )


# ----------------------------------------------------------------------------- running


@dataclass
class PipelineResult:
    run_dir: Path
    report: dict[str, Any]


def run_pipeline(
    config: PipelineConfig, *, show_progress: bool = True, log: Callable[[str], None] = print
) -> PipelineResult:
    """Run every stage into a new run folder and write ``report.md`` and ``report.json``."""
    from rl4gen.algorithms.dpo import train_dpo
    from rl4gen.algorithms.reward_model import train_reward_model
    from rl4gen.config import GenerationConfig
    from rl4gen.offline import dump_offline_config
    from rl4gen.policies.causal_lm import CausalLMPolicy
    from rl4gen.prefs import generate_preferences, report_dict
    from rl4gen.rewards.base import build_reward
    from rl4gen.tasks import get_task
    from rl4gen.trainer import Trainer, reserve_run_dir

    start = time.perf_counter()
    seconds: dict[str, float] = {}

    def lap(name: str, t0: float) -> None:
        seconds[name] = round(time.perf_counter() - t0, 1)

    task = get_task(config.task, config.task_args)
    t0 = time.perf_counter()
    prior_dir = str(task.pretrain(log=log))
    lap("prior", t0)
    run_dir = reserve_run_dir(config.output_dir, config.run_name, f"{config.task}__pipeline__{config.seed}")
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.yaml").write_text(dump_offline_config(config))
    stages = stage_configs(config, run_dir, prior_dir)

    log("pipeline: sampling preference pairs from the prior and judging them")
    t0 = time.perf_counter()
    prefs = generate_preferences(stages.prefs, log=log)
    lap("prefs", t0)
    log(f"pipeline: {prefs.pairs} pairs; training the reward model")
    t0 = time.perf_counter()
    rm_result = train_reward_model(stages.reward, show_progress=show_progress, log=log)
    lap("reward", t0)

    generation = GenerationConfig.model_validate(task.default_config().get("generation", {}))
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")  # where the trainers put their policies
    prior = CausalLMPolicy.from_pretrained(prior_dir, generation)
    prior.model.to(device)
    rm = build_reward("reward_model", path=str(rm_result.run_dir / "model"))
    judge = build_reward(config.heldout_judge.type, **config.heldout_judge.args)
    contexts = task.eval_contexts(config.eval_size)
    eval_seed = config.seed + 777

    def report_of(policy: Any) -> PolicyReport:
        return evaluate_policy(policy, prior, contexts, judge, rm, eval_seed)

    before = report_of(prior)
    after: dict[str, PolicyReport] = {}
    for method in config.methods:
        log(f"pipeline: {method}")
        t0 = time.perf_counter()
        if method == "dpo":
            assert stages.dpo is not None  # built by the stages when 'dpo' is a method
            result_dir = train_dpo(stages.dpo, show_progress=show_progress, log=log).run_dir
            policy = CausalLMPolicy.from_pretrained(result_dir / "model", generation)
            policy.model.to(device)
        else:
            trainer = Trainer(stages.rl[method], task=task, show_progress=show_progress, log=log)
            trainer.train()
            policy = trainer.policy
        lap(method, t0)
        after[method] = report_of(policy)

    report = {
        "task": config.task,
        "run_dir": str(run_dir),
        "prior_dir": prior_dir,
        "heldout_judge": config.heldout_judge.model_dump(),
        "training_judge": config.prefs.judge.model_dump(),
        "prefs": report_dict(prefs),
        "reward_model": {
            "run_dir": str(rm_result.run_dir), "eval": {k.removeprefix("eval/"): v for k, v in rm_result.final_eval.items()}
        },
        "eval_prompts": len(contexts),
        "before": asdict(before),
        "methods": {m: asdict(r) for m, r in after.items()},
        "seconds": {**seconds, "total": round(time.perf_counter() - start, 1)},
    }
    (run_dir / "report.json").write_text(json.dumps(report, indent=2))
    (run_dir / "report.md").write_text(report_markdown(report))
    return PipelineResult(run_dir, report)


# ----------------------------------------------------------------------------- the report


def _f(value: float | None, digits: int = 3) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def report_table(report: dict[str, Any]) -> list[str]:
    """The before/after table, one row per method (the prior first, after = before), as markdown lines."""
    b = report["before"]
    parts = list(b["judge_parts"])
    head = ["method", "judge before", "judge after", *[f"{p} after" for p in parts], "KL/token",
            "RM before", "RM after", "RM-judge agreement before", "after"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" + "---:|" * (len(head) - 1)]
    rows = [("SFT prior", b), *report["methods"].items()]
    for method, a in rows:
        cells = [method, _f(b["judge"]), _f(a["judge"]), *[_f(a["judge_parts"].get(p)) for p in parts],
                 _f(a["kl"]), _f(b["reward_model"]), _f(a["reward_model"]), _f(b["agreement"]), _f(a["agreement"])]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def report_markdown(report: dict[str, Any]) -> str:
    b = report["before"]
    prefs = report["prefs"]
    rm_eval = report["reward_model"]["eval"]
    lines = [
        f"# RLHF pipeline: {report['task']}",
        "",
        (f"Held-out judge: `{report['heldout_judge']['type']}` {report['heldout_judge']['args'] or ''}".rstrip() + "; "
        f"{report['eval_prompts']} held-out prompts, two replies each."),
        "",
        *report_table(report),
        "",
        "Words per reply, distinct replies: " + ", ".join(
            f"{m} {r['reply_words']:.1f}, {r['distinct_replies']:.2f}"
            for m, r in [("SFT prior", b), *report["methods"].items()]
        ) + ".",
        "",
        (f"Preferences: {prefs['pairs']} pairs from {prefs['prompts']} training prompts "
        f"(training judge `{report['training_judge']['type']}` {report['training_judge']['args']}); the held-out judge "
        f"agrees with it on {_f(prefs['agreement'])} of them."),
        f"Reward model on held-out pairs: accuracy {_f(rm_eval.get('accuracy'))}, ECE {_f(rm_eval.get('ece'))}.",
        "",
        ("Agreement: how often the reward model ranks two replies to a held-out prompt as the held-out judge does "
        "(judge ties left out). The RM rising while the judge does not, with agreement falling on the RL "
        "policy's replies, is reward hacking."),
        "",
        "Seconds: " + ", ".join(f"{k} {v}" for k, v in report["seconds"].items()),
    ]
    return "\n".join(lines) + "\n"
