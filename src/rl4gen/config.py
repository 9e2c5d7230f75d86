"""Typed, validated training configuration.

A config is built in three layers: the task's embedded defaults, then a YAML file, then
``--set key=value`` overrides. Every layer is checked: an unknown key, a wrong type or an
out-of-range value raises :class:`ConfigError` with one sentence naming the key.
"""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)


class ConfigError(ValueError):
    """A user mistake in a config file or override; the message says what to fix."""


def build_registered(
    kind: str,
    registry: dict[str, Any],
    type_name: str,
    args: dict[str, Any],
    *,
    passthrough: tuple[type[Exception], ...] = (),
) -> Any:
    """``registry[type_name](**args)`` for a config's ``{kind}`` entry (a reward, a judge...).

    An unknown type, an argument the factory does not take, or arguments it rejects (a
    ``TypeError`` or ``ValueError`` it raises) become one-sentence :class:`ConfigError` naming
    the type; exceptions of the ``passthrough`` types propagate as they are.
    """
    import inspect

    if type_name not in registry:
        known = ", ".join(sorted(registry))
        raise ConfigError(f"unknown {kind} type {type_name!r}: use one of {known}.")
    factory = registry[type_name]
    params = inspect.signature(factory).parameters
    accepts_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    for key in args:
        if not accepts_any and key not in params:
            allowed = ", ".join(k for k in params if k != "self") or "none"
            raise ConfigError(f"{kind} type {type_name!r} has no argument {key!r}: its arguments are {allowed}.")
    try:
        return factory(**args)
    except passthrough:
        raise
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{kind} type {type_name!r} rejected its arguments: {exc}") from None


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class LoraConfig(Strict):
    r: int = Field(8, ge=1)
    """Rank of the low-rank update."""
    lora_alpha: int = Field(16, ge=1)
    """Scale of the update (effective scale is lora_alpha / r)."""
    lora_dropout: float = Field(0.0, ge=0, lt=1)
    """Dropout on the LoRA input; keep 0 for RL so sampling and training agree."""
    target_modules: list[str] | Literal["all-linear"] = "all-linear"
    """Module names to adapt, or 'all-linear'."""


class ModelConfig(Strict):
    path: str | None = None
    """Local directory holding a transformers causal LM and its tokenizer; null = the task's
    pretrained model from the cache (built by `rl4gen pretrain TASK`)."""
    lora: LoraConfig | None = None
    """Train a LoRA adapter instead of all weights; the reference is then the base model."""


class GenerationConfig(Strict):
    temperature: float = Field(1.0, gt=0)
    """Softmax temperature while sampling (log-probs are taken at this temperature too)."""
    top_p: float = Field(1.0, gt=0, le=1)
    """Nucleus sampling: keep the smallest set of tokens whose probability reaches top_p."""
    top_k: int | None = Field(None, ge=1)
    """Keep only the k most likely tokens; null keeps all."""
    max_completion_length: int = Field(32, ge=1)
    """Most tokens generated per sample (fewer where the model's context ends first)."""
    stop: list[str] = Field(default_factory=list)
    """Strings that end a completion (the end-of-sequence token always does)."""
    stop_token_ids: list[int] = Field(default_factory=list)
    """Token ids that end a completion, in addition to the end-of-sequence token."""


class _AlgorithmBase(Strict):
    num_generations: int = Field(8, ge=2)
    """Samples drawn per context (the group compared against itself)."""
    beta: float = Field(0.0, ge=0)
    """Weight of the KL penalty to the reference; 0 skips the reference model entirely."""


class GRPOConfig(_AlgorithmBase):
    """Group Relative Policy Optimization (Shao et al., 2024)."""

    name: Literal["grpo"] = "grpo"
    epsilon: float = Field(0.2, gt=0, lt=1)
    """Lower clip range of the importance ratio (and the upper one unless epsilon_high is set)."""
    epsilon_high: float | None = Field(None, gt=0)
    """Upper clip range (DAPO's clip-higher); null = epsilon."""
    num_iterations: int = Field(1, ge=1)
    """Updates per batch of samples; ratios are taken against the sampling log-probs."""
    scale_rewards: Literal["group", "batch", "none"] = "group"
    """Divide advantages by the group std, the batch std, or not at all (Dr. GRPO)."""
    loss_type: Literal["grpo", "dr_grpo", "dapo"] = "grpo"
    """Loss aggregation: per-sequence mean (grpo), constant normaliser (dr_grpo), token mean (dapo)."""
    stat_buffer_size: int | None = Field(None, ge=2)
    """DDPO's per-condition stat tracker: normalise each reward by the running mean and std of the
    last N rewards of the same condition (prompt or label) instead of its group; null = off."""
    stat_min_count: int = Field(16, ge=1)
    """With the stat tracker, a condition with fewer rewards than this uses the batch's statistics."""


class RLOOConfig(_AlgorithmBase):
    """REINFORCE Leave-One-Out (Kool et al., 2019; Ahmadian et al., 2024)."""

    name: Literal["rloo"] = "rloo"
    epsilon: float = Field(0.2, gt=0, lt=1)
    """Clip range of the importance ratio when num_iterations > 1."""
    epsilon_high: float | None = Field(None, gt=0)
    """Upper clip range; null = epsilon."""
    num_iterations: int = Field(1, ge=1)
    """Updates per batch of samples."""
    normalize_advantages: bool = False
    """Whiten the leave-one-out advantages over the batch."""
    loss_type: Literal["grpo", "dr_grpo", "dapo"] = "dr_grpo"
    """Loss aggregation; dr_grpo (a constant normaliser) keeps the sequence-level estimator unbiased."""


class ReinforceConfig(_AlgorithmBase):
    """REINFORCE (Williams, 1992) with a moving-average baseline."""

    name: Literal["reinforce"] = "reinforce"
    num_generations: int = Field(1, ge=1)
    """Samples per context; REINFORCE needs no groups, so 1 is allowed."""
    baseline_decay: float = Field(0.9, ge=0, lt=1)
    """The baseline is an exponential moving average of mean rewards with this decay."""
    normalize_advantages: bool = False
    """Whiten the advantages over the batch."""
    loss_type: Literal["grpo", "dr_grpo", "dapo"] = "dr_grpo"
    """Loss aggregation; dr_grpo sums log-probs over a sequence, the textbook estimator."""


class DQNConfig(_AlgorithmBase):
    """Q-learning over tokens with a target network (Mnih et al., 2015), as RL Tuner (Jaques et
    al., 2017) applies it to a pretrained sequence model; ``soft`` selects its Psi-learning form."""

    name: Literal["dqn"] = "dqn"
    num_generations: int = Field(8, ge=1)
    """Sequences sampled per context each step (Boltzmann exploration over the Q-values)."""
    gamma: float = Field(0.5, ge=0, le=1)
    """Discount per token (RL Tuner used 0.5)."""
    soft: bool = False
    """Psi-learning: the next state's value is the log-sum-exp of its Q-values instead of the max."""
    reward_scale: float = Field(1.0, gt=0)
    """Multiplies the task's rewards before log p_prior(token | prefix) is added to every step
    (RL Tuner's reward scaler; the KL-control strength is 1 / reward_scale, like GRPO's beta)."""
    buffer_size: int = Field(4096, ge=1)
    """Sequences kept in the replay buffer."""
    batch_size: int = Field(64, ge=1)
    """Sequences per gradient step."""
    gradient_steps: int = Field(1, ge=1)
    """Gradient steps per training step."""
    target_update_interval: int = Field(25, ge=1)
    """Copy the Q-network into the target network every this many training steps."""


class PPOConfig(Strict):
    """PPO with a critic, the InstructGPT recipe (Schulman et al., 2017; Ziegler et al., 2019;
    Ouyang et al., 2022). Field names follow TRL's PPOConfig."""

    name: Literal["ppo"] = "ppo"
    num_generations: int = Field(1, ge=1)
    """Samples per context; PPO's baseline is the critic, so it needs no groups and 1 is allowed."""
    kl_coef: float = Field(0.05, ge=0)
    """Weight of the per-token KL penalty in the reward (the starting value when adaptive_kl)."""
    kl_estimator: Literal["k1", "k3"] = "k1"
    """Per-token KL estimator in the reward: k1 = log p - log p_ref (InstructGPT), or k3."""
    adaptive_kl: bool = False
    """Adapt kl_coef toward target_kl with Ziegler et al.'s proportional controller."""
    target_kl: float = Field(6.0, gt=0)
    """Target of the adaptive controller: mean summed KL per sequence, in nats."""
    horizon: int = Field(10000, ge=1)
    """Horizon of the adaptive controller, in sequences (larger = slower adaptation)."""
    num_ppo_epochs: int = Field(4, ge=1)
    """Passes over each batch of samples; ratios are taken against the sampling log-probs."""
    num_mini_batches: int = Field(1, ge=1)
    """Minibatches (optimizer steps) per pass; rows are shuffled between passes."""
    cliprange: float = Field(0.2, gt=0, lt=1)
    """Clip range of the policy's importance ratio."""
    cliprange_value: float = Field(0.2, gt=0)
    """Clip range of the new value around the sampling-time value."""
    vf_coef: float = Field(0.1, ge=0)
    """Weight of the value loss in the joint loss (policy and critic share the model)."""
    gamma: float = Field(1.0, ge=0, le=1)
    """Discount per token."""
    lam: float = Field(0.95, ge=0, le=1)
    """GAE's lambda: 1 = Monte-Carlo returns minus the value, 0 = one-step TD errors."""
    whiten_rewards: bool = False
    """Scale the per-token rewards to unit variance over the batch (mean kept) before GAE."""
    whiten_advantages: bool = True
    """Whiten the advantages over the batch's tokens (zero mean, unit variance), as TRL does."""

    @field_validator("adaptive_kl")
    @classmethod
    def _check_adaptive(cls, value: bool, info: ValidationInfo) -> bool:
        if value and info.data.get("kl_coef") == 0:
            raise ValueError("the adaptive controller needs a starting kl_coef above 0 (a zero coefficient never adapts)")
        return value


AlgorithmConfig = Annotated[
    GRPOConfig | RLOOConfig | ReinforceConfig | PPOConfig | DQNConfig, Field(discriminator="name")
]


class RewardSpec(Strict):
    type: str
    """Registered reward type (see docs/rewards.md), e.g. exact_answer, regex, lexicon."""
    weight: float = 1.0
    """Weight of this reward in the sum."""
    name: str | None = None
    """Metric name (rewards/{name}/mean); defaults to the type."""
    args: dict[str, Any] = Field(default_factory=dict)
    """Keyword arguments of the reward type."""


class TrainConfig(Strict):
    task: str
    """Task name (arithmetic, shakespeare): its contexts, evaluation and default rewards."""
    task_args: dict[str, Any] = Field(default_factory=dict)
    """Task-specific options, validated by the task."""
    seed: int = Field(0, ge=0)
    """Seeds sampling, data order and initialisation; the same seed repeats the run on CPU."""
    output_dir: str = "runs"
    """Folder under which run folders are created."""
    run_name: str | None = None
    """Run folder name; null = {task}__{algorithm}__{seed}__{timestamp}."""
    model: ModelConfig = Field(default_factory=ModelConfig)
    generation: GenerationConfig = Field(default_factory=GenerationConfig)
    algorithm: AlgorithmConfig = Field(default_factory=GRPOConfig)
    rewards: list[RewardSpec] = Field(default_factory=list)
    """Rewards summed with their weights (the task's recipe lists its default rewards)."""
    max_steps: int = Field(100, ge=1)
    """Number of training steps (one batch of samples each)."""
    prompts_per_step: int = Field(16, ge=1)
    """Contexts per step and process; each yields num_generations samples."""
    learning_rate: float = Field(1e-4, gt=0)
    """Peak learning rate of AdamW."""
    lr_scheduler_type: Literal["constant", "linear", "cosine"] = "constant"
    """Shape of the learning-rate schedule after warm-up."""
    warmup_steps: int = Field(0, ge=0)
    """Optimizer steps of linear warm-up from 0."""
    weight_decay: float = Field(0.0, ge=0)
    """AdamW weight decay."""
    adam_beta1: float = Field(0.9, ge=0, lt=1)
    adam_beta2: float = Field(0.999, ge=0, lt=1)
    gradient_accumulation_steps: int = Field(1, ge=1)
    """Micro-batches each batch of samples (PPO: each minibatch) is split into for forward/backward."""
    max_grad_norm: float | None = Field(1.0, gt=0)
    """Clip the gradient norm to this value; null disables clipping."""
    reference_metrics: bool = False
    """Log the KL to the reference even when beta is 0 (costs one extra forward per step)."""
    logging_steps: int = Field(1, ge=1)
    """Write metrics every this many steps."""
    eval_steps: int = Field(25, ge=1)
    """Evaluate on held-out contexts every this many steps (and at the start and end)."""
    eval_size: int = Field(256, ge=1)
    """Held-out contexts per evaluation."""
    sample_steps: int = Field(25, ge=1)
    """Save a completions table every this many steps."""
    save_steps: int = Field(50, ge=1)
    """Write a checkpoint every this many steps (and at the end)."""
    save_total_limit: int | None = Field(2, ge=1)
    """Keep at most this many checkpoints; null keeps all."""
    max_skipped_steps: int = Field(5, ge=1)
    """Stop after this many consecutive steps skipped for a non-finite loss or gradient."""

    @model_validator(mode="after")
    def _check_batch(self) -> TrainConfig:
        batch = self.prompts_per_step * self.algorithm.num_generations
        if isinstance(self.algorithm, PPOConfig):
            if self.algorithm.num_mini_batches > batch:
                raise ValueError(
                    f"algorithm.num_mini_batches ({self.algorithm.num_mini_batches}) exceeds the "
                    f"{batch} samples per step (prompts_per_step x num_generations)"
                )
            batch //= self.algorithm.num_mini_batches
            if self.gradient_accumulation_steps > batch:
                raise ValueError(
                    f"gradient_accumulation_steps ({self.gradient_accumulation_steps}) exceeds the "
                    f"{batch} samples per minibatch (prompts_per_step x num_generations / num_mini_batches)"
                )
        if self.gradient_accumulation_steps > batch:
            raise ValueError(
                f"gradient_accumulation_steps ({self.gradient_accumulation_steps}) exceeds the "
                f"{batch} samples per step (prompts_per_step x num_generations)"
            )
        return self


# --------------------------------------------------------------------------------------------
# Loading and overriding


class _Loader(yaml.SafeLoader):
    """SafeLoader that also reads ``1e-4`` (no dot) as a float, as YAML 1.2 does."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(
        r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
        |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
        |\.[0-9_]+(?:[eE][-+][0-9]+)?
        |[-+]?\.(?:inf|Inf|INF)
        |\.(?:nan|NaN|NAN))$""",
        re.VERBOSE,
    ),
    list("-+0123456789."),
)


def load_yaml(text: str) -> Any:
    """Parse YAML text with :class:`_Loader`."""
    return yaml.load(text, Loader=_Loader)


def deep_merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """Merge ``override`` into a copy of ``base``; nested dicts merge, everything else replaces.

    A new ``algorithm.name`` drops the old algorithm's fields, which the new one may not accept.
    """
    out = copy.deepcopy(base)
    for key, value in override.items():
        if (
            key == "algorithm"
            and isinstance(value, dict)
            and isinstance(out.get(key), dict)
            and "name" in value
            and value["name"] != out[key].get("name")
        ):
            out[key] = copy.deepcopy(value)
        elif isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def parse_set(item: str) -> dict[str, Any]:
    """Turn ``a.b=value`` into ``{"a": {"b": value}}``; the value is read as YAML."""
    if "=" not in item:
        raise ConfigError(
            f"--set {item!r} is malformed: write it as key=value, for example --set max_steps=20."
        )
    key, raw = item.split("=", 1)
    key = key.strip()
    parts = key.split(".")
    if not key or any(not p or not p.replace("_", "").isalnum() for p in parts):
        raise ConfigError(
            f"--set {item!r} has an invalid key {key!r}: use dotted field names such as "
            "algorithm.beta=0.05."
        )
    try:
        value = load_yaml(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    nested: dict[str, Any] = {}
    cursor = nested
    for part in parts[:-1]:
        cursor = cursor.setdefault(part, {})
    cursor[parts[-1]] = value
    return nested


def read_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML mapping, with one-sentence errors for a missing file or bad syntax."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"config file {str(p)!r} does not exist: check the path.")
    try:
        data = load_yaml(p.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"config file {str(p)!r} is not valid YAML{where}: fix its syntax.") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file {str(p)!r} must hold a mapping of keys to values.")
    return data


def format_validation_error(
    exc: ValidationError, prefix: str = "", root: type[BaseModel] | None = None
) -> str:
    """One sentence for the first problem pydantic found, naming the key.

    ``root`` is the config class whose keys spelling suggestions come from (default
    :class:`TrainConfig`).
    """
    err = exc.errors()[0]
    parts = [str(p) for p in err["loc"]]
    algorithm = next((p for p in parts if p in _UNION_TAGS), None)
    loc = prefix + ".".join(p for p in parts if p not in _UNION_TAGS)
    kind = err["type"]
    value = err.get("input")
    msg = err["msg"].removeprefix("Value error, ")
    msg = msg[0].lower() + msg[1:] if msg else msg
    if kind == "extra_forbidden":
        equivalent = _EQUIVALENT_KEYS.get((algorithm or "", loc))
        if equivalent is not None:
            return f"config key {loc!r} does not apply to algorithm {algorithm!r}: use {equivalent!r} instead."
        close = _suggest(loc, algorithm, root)
        if close == loc and algorithm is not None:
            return f"config key {loc!r} does not apply to algorithm {algorithm!r}: remove it."
        hint = f" (did you mean {close!r}?)" if close else ""
        return f"unknown config key {loc!r}{hint}: remove it or fix its spelling."
    if kind == "missing":
        if any(p.isdigit() for p in parts):  # inside a list: --set cannot address it
            return f"config key {loc!r} is required: set it in the config file."
        return f"config key {loc!r} is required: set it in the config file or with --set {loc}=..."
    if kind == "union_tag_invalid":
        name = value.get("name") if isinstance(value, dict) else value
        return f"config key {loc or 'algorithm'}.name has an unknown algorithm {name!r}: use grpo, rloo, reinforce, ppo or dqn."
    if not loc:
        return f"config is invalid: {msg}."
    if isinstance(value, (dict, list)) and len(repr(value)) > 80:
        return f"config key {loc!r} is invalid: {msg}."
    return f"config key {loc!r} has an invalid value {value!r}: {msg}."


_UNION_TAGS = {"grpo", "rloo", "reinforce", "ppo"}

#: Keys of the critic-free algorithms and what PPO calls the same thing (TRL's names).
_EQUIVALENT_KEYS = {
    ("ppo", "algorithm.beta"): "algorithm.kl_coef",
    ("ppo", "algorithm.epsilon"): "algorithm.cliprange",
    ("ppo", "algorithm.num_iterations"): "algorithm.num_ppo_epochs",
}


def _known_keys(algorithm: str | None = None, root: type[BaseModel] | None = None) -> set[str]:
    keys: set[str] = set()

    def walk(model: type[BaseModel], prefix: str) -> None:
        for name, field in model.model_fields.items():
            full = f"{prefix}{name}"
            keys.add(full)
            ann = field.annotation
            if isinstance(ann, type) and issubclass(ann, BaseModel):
                walk(ann, full + ".")

    walk(root or TrainConfig, "")
    walk(LoraConfig, "model.lora.")
    if root is not None and root is not TrainConfig:
        return keys
    for algo in (GRPOConfig, RLOOConfig, ReinforceConfig, PPOConfig):
        if algorithm is None or algo.model_fields["name"].default == algorithm:
            walk(algo, "algorithm.")
    return keys


def _suggest(loc: str, algorithm: str | None = None, root: type[BaseModel] | None = None) -> str | None:
    """The closest known key to ``loc`` (any algorithm's), or None."""
    import difflib

    close = difflib.get_close_matches(loc, sorted(_known_keys(root=root)), n=1, cutoff=0.75)
    if close and close[0] != loc and algorithm is not None:
        own = difflib.get_close_matches(loc, sorted(_known_keys(algorithm)), n=1, cutoff=0.75)
        close = own or close
    return close[0] if close else None


def validate_config(data: dict[str, Any]) -> TrainConfig:
    """Build a :class:`TrainConfig`, turning validation errors into one :class:`ConfigError`."""
    try:
        return TrainConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc)) from None


#: Keys that define a run; a resumed run may not change them.
RUN_DEFINING_KEYS = ("task", "task_args", "seed", "model", "prompts_per_step", "algorithm.name", "algorithm.num_generations")


def check_resume_overrides(old: TrainConfig, new: TrainConfig) -> None:
    """Refuse overrides that would make a resumed run a different run."""
    for key in RUN_DEFINING_KEYS:
        a, b = old, new
        for part in key.split("."):
            a, b = getattr(a, part), getattr(b, part)
        if a != b:
            raise ConfigError(
                f"config key {key!r} cannot change when resuming (it was {_plain(a)!r}): start a new run instead."
            )


def _plain(value: Any) -> Any:
    return value.model_dump(mode="json") if isinstance(value, BaseModel) else value


def dump_config(config: TrainConfig) -> str:
    """The fully resolved config as YAML, in field order."""
    return yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False)
