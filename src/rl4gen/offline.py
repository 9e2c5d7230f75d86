"""What the offline commands (``rl4gen sft``, ``rl4gen dpo``, ``rl4gen reward train``) share:
their common config, the tokenisation of prompt/completion pairs with a completion mask, sequence
log-probs, and one small training loop (AdamW, micro-batches, clipping, LR schedule, epochs or
max_steps, metrics to ``metrics.jsonl`` and TensorBoard, the final model and resolved
``config.yaml`` in a run folder).

Each command supplies a loss over a micro-batch of example indices; the loop does the rest. A
micro-batch's loss and metrics are already divided by the whole step's totals, so summing them
over micro-batches gives the full-batch value exactly (as in the RL trainer).
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol, TypeVar

import torch
import yaml
from pydantic import BaseModel, Field, ValidationError
from torch import Tensor, nn

from rl4gen.config import (
    ConfigError,
    ModelConfig,
    Strict,
    deep_merge,
    format_validation_error,
    parse_set,
    read_yaml,
)
from rl4gen.policies.causal_lm import CausalLMPolicy
from rl4gen.tracking import MetricsLogger
from rl4gen.trainer import TrainResult, guarded_update, reserve_run_dir


class DataConfig(Strict):
    train_file: str
    """JSONL training data in the command's format (see docs/data.md)."""
    eval_file: str | None = None
    """Optional held-out JSONL in the same format; its metrics are logged as eval/..."""
    eval_fraction: float = Field(0.0, ge=0, lt=1)
    """Hold out this fraction of train_file (chosen by seed) when no eval_file is given."""
    skip_invalid: bool = False
    """Leave malformed lines out (and count them) instead of stopping at the first one."""


class OfflineConfig(Strict):
    """Fields shared by the offline commands; TRL's names where TRL has one."""

    seed: int = Field(0, ge=0)
    """Seeds data order and any fresh weights (a new LoRA adapter)."""
    output_dir: str = "runs"
    """Folder under which run folders are created."""
    run_name: str | None = None
    """Run folder name; null = {task or data file}__{command}__{seed}__{timestamp}."""
    task: str | None = None
    """Optional task: its held-out metrics are logged as eval/... at the start, every eval_steps
    and at the end, and its cached prior is the model when model.path is null."""
    task_args: dict[str, Any] = Field(default_factory=dict)
    """Options of the task."""
    model: ModelConfig = Field(default_factory=ModelConfig)
    data: DataConfig
    append_eos: bool = True
    """Append the tokenizer's end-of-sequence token to every completion, so the model learns to stop."""
    max_length: int | None = Field(None, ge=2)
    """Longest prompt + completion in tokens; longer examples lose prompt tokens from the left,
    then completion tokens from the right. null = no limit (the model's own limit applies)."""
    num_train_epochs: int = Field(1, ge=1)
    """Passes over the training data (ignored when max_steps is set)."""
    max_steps: int | None = Field(None, ge=1)
    """Optimizer steps; overrides num_train_epochs (the data is reshuffled at each new pass)."""
    per_device_train_batch_size: int = Field(8, ge=1)
    """Examples per micro-batch."""
    gradient_accumulation_steps: int = Field(1, ge=1)
    """Micro-batches per optimizer step."""
    per_device_eval_batch_size: int = Field(32, ge=1)
    """Examples per forward pass when computing reference log-probs and eval metrics."""
    learning_rate: float = Field(1e-5, gt=0)
    """Peak learning rate of AdamW."""
    lr_scheduler_type: Literal["constant", "linear", "cosine"] = "linear"
    """Shape of the learning-rate schedule after warm-up."""
    warmup_steps: int = Field(0, ge=0)
    """Optimizer steps of linear warm-up from 0."""
    weight_decay: float = Field(0.0, ge=0)
    """AdamW weight decay."""
    adam_beta1: float = Field(0.9, ge=0, lt=1)
    adam_beta2: float = Field(0.999, ge=0, lt=1)
    max_grad_norm: float | None = Field(1.0, gt=0)
    """Clip the gradient norm to this value; null disables clipping."""
    logging_steps: int = Field(1, ge=1)
    """Write metrics every this many steps (and at the last)."""
    eval_steps: int | None = Field(None, ge=1)
    """Evaluate every this many steps; null = only at the start and the end."""
    eval_size: int = Field(256, ge=1)
    """Held-out contexts for the task's metrics."""
    max_skipped_steps: int = Field(5, ge=1)
    """Stop after this many consecutive steps skipped for a non-finite loss or gradient."""


C = TypeVar("C", bound=BaseModel)


def load_offline_config(cls: type[C], config_path: str | None, sets: Sequence[str]) -> C:
    """YAML file ← ``--set`` overrides, validated as ``cls`` (one-sentence :class:`ConfigError`)."""
    data: dict[str, Any] = read_yaml(config_path) if config_path else {}
    for item in sets:
        data = deep_merge(data, parse_set(item))
    try:
        config = cls.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, root=cls)) from None
    task = getattr(config, "task", None)
    if task is not None:
        from rl4gen.tasks import get_task

        get_task(task, getattr(config, "task_args", {}))  # validates task_args
    return config


def dump_offline_config(config: BaseModel) -> str:
    return yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False)


# --------------------------------------------------------------------------------- tokenising


@dataclass
class Encoded:
    """Token ids of prompt + completion, and which positions hold completion tokens."""

    ids: list[int]
    completion_start: int  # index of the first completion token in ids


def encode_example(
    tokenizer: Any, prompt: str, completion: str, append_eos: bool, max_length: int | None
) -> Encoded:
    """Prompt and completion are tokenised apart (so their boundary is exact) and concatenated."""
    p = tokenizer(prompt, add_special_tokens=False).input_ids
    c = tokenizer(completion, add_special_tokens=False).input_ids
    if append_eos:
        c = c + [int(tokenizer.eos_token_id)]
    if not p:  # a causal LM needs a token to condition the first completion token on
        p = [int(tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id)]
    if max_length is not None and len(p) + len(c) > max_length:
        keep_prompt = max(1, max_length - len(c))
        p = p[-keep_prompt:]
        c = c[: max_length - len(p)]
    return Encoded(p + c, len(p))


def collate(examples: Sequence[Encoded], pad_id: int, device: torch.device | str = "cpu") -> tuple[Tensor, Tensor, Tensor]:
    """Right-padded ``input_ids``, ``attention_mask`` and ``completion_mask``, each (B, L)."""
    width = max(len(e.ids) for e in examples)
    ids = torch.full((len(examples), width), pad_id, dtype=torch.long)
    attn = torch.zeros((len(examples), width), dtype=torch.long)
    comp = torch.zeros((len(examples), width), dtype=torch.float)
    for i, e in enumerate(examples):
        n = len(e.ids)
        ids[i, :n] = torch.tensor(e.ids)
        attn[i, :n] = 1
        comp[i, e.completion_start : n] = 1.0
    return ids.to(device), attn.to(device), comp.to(device)


def token_logps(model: nn.Module, input_ids: Tensor, attention_mask: Tensor) -> Tensor:  # (B, L-1)
    """Log-prob of each token given the tokens before it (position t scores token t + 1)."""
    logits = model(input_ids=input_ids, attention_mask=attention_mask).logits[:, :-1, :]  # (B, L-1, V)
    logp_all = torch.log_softmax(logits.float(), dim=-1)
    return logp_all.gather(-1, input_ids[:, 1:].unsqueeze(-1)).squeeze(-1)


def sequence_logps(
    model: nn.Module, input_ids: Tensor, attention_mask: Tensor, completion_mask: Tensor, average: bool = False
) -> Tensor:  # (B,)
    """Sum (or mean, with ``average``) of the completion tokens' log-probs; prompt tokens are masked."""
    logp = token_logps(model, input_ids, attention_mask)  # (B, L-1)
    mask = completion_mask[:, 1:]  # the target of position t is token t + 1
    total = (logp * mask).sum(dim=1)
    return total / mask.sum(dim=1).clamp(min=1.0) if average else total


# --------------------------------------------------------------------------------- the loop


MicroLoss = Callable[[list[int], list[int]], tuple[Tensor, dict[str, float]]]
"""``(micro-batch indices, the whole step's indices) -> (loss, metric contributions)``: both
already divided by the step's totals, so that they sum over micro-batches to the step's values.
A ``num_tokens`` entry is this micro-batch's token count instead; the loop logs the running total."""


#: What an offline run returns: the RL trainer's result (run folder, steps, evaluations, history).
OfflineResult = TrainResult


def mix_seed(*parts: int) -> int:
    """A 63-bit seed from integers (the RL trainer's mixing)."""
    from rl4gen.trainer import _mix_seed

    return _mix_seed(*parts)


def require_single_process(command: str) -> None:
    """The offline commands do not shard data across processes yet: refuse a multi-process launch
    rather than train N independent copies."""
    import os

    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise ConfigError(
            f"rl4gen {command} runs on one process (one GPU or the CPU): launch it without "
            "`accelerate launch --num_processes N` or torchrun."
        )


def resolve_model_path(config: OfflineConfig, log: Callable[[str], None]) -> str:
    """``model.path``, else the task's cached prior (built when missing)."""
    if config.model.path is not None:
        return config.model.path
    if config.task is None:
        raise ConfigError(
            "config key 'model.path' is required: set it to a model folder (or set task to use the task's prior)."
        )
    if config.task == "prompts":
        raise ConfigError("the prompts task has no prior of its own: set model.path to a model folder.")
    from rl4gen.tasks import get_task

    return str(get_task(config.task, config.task_args).pretrain(log=log))


def device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def load_policy(config: OfflineConfig, log: Callable[[str], None]) -> CausalLMPolicy:
    """The causal LM to train (``model.path`` or the task's prior), on the GPU when there is one."""
    from accelerate.utils import set_seed

    from rl4gen.config import GenerationConfig

    set_seed(config.seed)  # a fresh LoRA adapter starts the same for the same seed
    generation = None
    if config.task is not None:
        from rl4gen.tasks import get_task

        task = get_task(config.task, config.task_args)
        generation = GenerationConfig.model_validate(task.default_config().get("generation", {}))
    path = resolve_model_path(config, log)
    policy = CausalLMPolicy.from_pretrained(path, generation, lora=config.model.lora)
    policy.model.to(device())
    return policy


T = TypeVar("T")


def split_data(rows: list[T], held_out: list[T] | None, config: OfflineConfig) -> tuple[list[T], list[T] | None]:
    """Training rows and held-out rows: ``data.eval_file``'s, else a seeded ``data.eval_fraction``."""
    if held_out is not None or config.data.eval_fraction == 0:
        return rows, held_out
    n_eval = max(1, round(len(rows) * config.data.eval_fraction))
    if n_eval >= len(rows):
        raise ConfigError(
            f"config key 'data.eval_fraction' ({config.data.eval_fraction}) leaves no training data "
            f"out of {len(rows)} records: lower it."
        )
    order = torch.randperm(len(rows), generator=torch.Generator().manual_seed(mix_seed(config.seed, 7))).tolist()
    eval_idx = set(order[:n_eval])
    return [r for i, r in enumerate(rows) if i not in eval_idx], [rows[i] for i in sorted(eval_idx)]


class TrainableModel(Protocol):
    """What the loop needs of a model: its trainable parameters, ``save`` and where it came from."""

    source: str | None

    def trainable_parameters(self) -> list[nn.Parameter]: ...

    def save(self, directory: str | Path) -> None: ...


class OfflineTrainer:
    """The loop shared by ``rl4gen sft``, ``rl4gen dpo`` and ``rl4gen reward train``.

    Args:
        config: the command's validated config.
        command: ``sft``, ``dpo`` or ``reward`` (the run folder's name and ``run.json``).
        policy: the model being trained (a policy or a reward model).
        num_examples: size of the training set; batches are index lists into it.
        micro_loss: the command's loss over a micro-batch (see :data:`MicroLoss`).
        evaluate: held-out metrics (keys without the ``eval/`` prefix), or None.
        info: extra facts for ``run.json`` (data sizes, skipped lines).
    """

    skipped_steps: int  # updates skipped for a non-finite loss or gradient (set by train)
    _consecutive_skips: int
    num_tokens: float

    def __init__(
        self,
        config: OfflineConfig,
        command: str,
        policy: TrainableModel,
        num_examples: int,
        micro_loss: MicroLoss,
        *,
        evaluate: Callable[[], dict[str, float]] | None = None,
        info: dict[str, Any] | None = None,
        show_progress: bool = True,
        log: Callable[[str], None] = print,
    ) -> None:
        self.config = config
        self.command = command
        self.policy = policy
        self.num_examples = num_examples
        self.micro_loss = micro_loss
        self.evaluate = evaluate
        self.info = info or {}
        self.show_progress = show_progress
        self.log = log
        self.step_batch = config.per_device_train_batch_size * config.gradient_accumulation_steps
        self.steps_per_epoch = math.ceil(num_examples / self.step_batch)
        self.total_steps = config.max_steps or config.num_train_epochs * self.steps_per_epoch
        self.optimizer = torch.optim.AdamW(
            policy.trainable_parameters(),
            lr=config.learning_rate,
            betas=(config.adam_beta1, config.adam_beta2),
            weight_decay=config.weight_decay,
        )
        from transformers import get_scheduler

        self.scheduler = get_scheduler(
            {"constant": "constant_with_warmup", "linear": "linear", "cosine": "cosine"}[config.lr_scheduler_type],
            self.optimizer,
            num_warmup_steps=config.warmup_steps,
            num_training_steps=self.total_steps,
        )
        label = config.task or Path(config.data.train_file).stem
        self.run_dir = reserve_run_dir(config.output_dir, config.run_name, f"{label}__{command}__{config.seed}")

    def step_indices(self, step: int) -> list[int]:
        """The examples of optimizer step ``step`` (1-based): a fresh permutation per epoch."""
        epoch, k = divmod(step - 1, self.steps_per_epoch)
        gen = torch.Generator().manual_seed(mix_seed(self.config.seed, epoch))
        order = torch.randperm(self.num_examples, generator=gen)
        return order[k * self.step_batch : (k + 1) * self.step_batch].tolist()

    def _update(self, indices: list[int]) -> dict[str, float]:
        cfg = self.config
        sums: dict[str, float] = {}
        loss_total = 0.0
        for start in range(0, len(indices), cfg.per_device_train_batch_size):
            micro = indices[start : start + cfg.per_device_train_batch_size]
            loss, metrics = self.micro_loss(micro, indices)
            loss.backward()
            loss_total += float(loss.detach().item())
            for key, value in metrics.items():
                sums[key] = sums.get(key, 0.0) + value
        params = self.policy.trainable_parameters()
        max_norm = cfg.max_grad_norm if cfg.max_grad_norm is not None else float("inf")
        grad_norm = float(torch.nn.utils.clip_grad_norm_(params, max_norm))
        lr = self.scheduler.get_last_lr()[0]
        self._consecutive_skips = guarded_update(
            self.optimizer, self.scheduler, loss_total, grad_norm, self._consecutive_skips, cfg.max_skipped_steps,
            "lower learning_rate or check the data",
        )
        self.skipped_steps += self._consecutive_skips > 0
        self.optimizer.zero_grad(set_to_none=True)
        if "num_tokens" in sums:
            self.num_tokens += sums["num_tokens"]
            sums["num_tokens"] = self.num_tokens
        return {"loss": loss_total, **sums, "grad_norm": grad_norm, "learning_rate": lr}

    def _eval(self) -> dict[str, float]:
        if self.evaluate is None:
            return {}
        with torch.inference_mode():
            return {f"eval/{k}": v for k, v in self.evaluate().items()}

    def train(self) -> OfflineResult:
        cfg = self.config
        self.run_dir.mkdir(parents=True, exist_ok=True)
        (self.run_dir / "config.yaml").write_text(dump_offline_config(cfg))
        meta = {"command": self.command, "model_path": self.policy.source, "steps": self.total_steps, **self.info}
        (self.run_dir / "run.json").write_text(json.dumps(meta, indent=2))
        logger = MetricsLogger(self.run_dir, self.total_steps, show_progress=self.show_progress)
        self.skipped_steps = 0
        self._consecutive_skips = 0
        self.num_tokens = 0.0
        history: list[dict[str, float]] = []
        try:
            initial = self._eval()
            if initial:
                logger.log(0, initial)
            final = dict(initial)
            for step in range(1, self.total_steps + 1):
                start = time.perf_counter()
                metrics = self._update(self.step_indices(step))
                metrics["epoch"] = step / self.steps_per_epoch
                metrics["skipped_steps"] = float(self.skipped_steps)
                metrics["step_time"] = time.perf_counter() - start
                last = step == self.total_steps
                if (cfg.eval_steps is not None and step % cfg.eval_steps == 0) or last:
                    final = self._eval()
                    metrics.update(final)
                if step % cfg.logging_steps == 0 or last or any(k.startswith("eval/") for k in metrics):
                    logger.log(step, metrics)
                history.append(metrics)
                logger.advance(step, f"loss {metrics['loss']:.4f}")
        finally:
            logger.close()
        self.policy.save(self.run_dir / "model")
        return OfflineResult(self.run_dir, self.total_steps, initial, final, history)


def task_evaluator(config: OfflineConfig, policy: CausalLMPolicy) -> Callable[[], dict[str, float]] | None:
    """The task's held-out metrics of ``policy``, or None without a task."""
    if config.task is None:
        return None
    from rl4gen.tasks import get_task

    task = get_task(config.task, config.task_args)
    return lambda: task.evaluate(policy, config.eval_size)


def report_skipped(loaded: Any, log: Callable[[str], None]) -> None:
    if loaded.skipped:
        log(f"skipped {len(loaded.skipped)} invalid lines of {loaded.path} (first: {loaded.skipped[0]})")


def load_data(
    loader: Callable[..., Any], config: OfflineConfig, log: Callable[[str], None]
) -> tuple[list[Any], list[Any] | None, dict[str, int]]:
    """Training and held-out records through ``loader`` (a ``rl4gen.data`` loader), skipped lines
    reported, and the sizes for ``run.json``."""
    train = loader(config.data.train_file, config.data.skip_invalid)
    report_skipped(train, log)
    skipped = len(train.skipped)
    held_out: list[Any] | None = None
    if config.data.eval_file is not None:
        loaded = loader(config.data.eval_file, config.data.skip_invalid)
        report_skipped(loaded, log)
        skipped += len(loaded.skipped)
        held_out = loaded.rows
    rows, held_out = split_data(train.rows, held_out, config)
    info = {"train_examples": len(rows), "eval_examples": len(held_out or []), "skipped_lines": skipped}
    return rows, held_out, info
