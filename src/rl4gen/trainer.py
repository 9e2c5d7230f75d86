"""The generic RL loop shared by every modality: sample → score → advantages → update → log.

Devices and data parallelism come from Accelerate: the same code runs on one CPU, on a GPU, or
under ``accelerate launch --num_processes N``, where each process samples its own contexts,
gradients are averaged by DDP, and reward metrics are gathered across processes.

Randomness is derived from ``(seed, step, process)``: each step's contexts and samples come from
generators seeded with those three numbers, so a resumed run draws exactly what the uninterrupted
run would have drawn, and the run is deterministic on CPU.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from rl4gen.algorithms import StepTotals, build_algorithm
from rl4gen.checkpoint import (
    CheckpointError,
    list_checkpoints,
    set_rng_state,
    verify_checkpoint,
    write_checkpoint,
)
from rl4gen.config import ConfigError, DQNConfig, TrainConfig, dump_config
from rl4gen.core.losses import masked_mean
from rl4gen.core.rollout import Rollout
from rl4gen.policies.causal_lm import CausalLMPolicy
from rl4gen.rewards.base import CombinedReward, build_reward
from rl4gen.tasks import Task, get_task
from rl4gen.tracking import MetricsLogger

StepCallback = Callable[["Trainer", int, dict[str, float]], None]


class TrainingError(RuntimeError):
    """Training cannot go on (e.g. repeated non-finite losses); the message gives a diagnosis."""


def guarded_update(
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    loss: float,
    grad_norm: float,
    consecutive_skips: int,
    max_skipped: int,
    hint: str,
) -> int:
    """Step the optimizer and scheduler when ``loss`` and ``grad_norm`` are finite; otherwise skip.

    Returns the new count of consecutive skipped updates (0 after a step); raises
    :class:`TrainingError` with ``hint`` once ``max_skipped`` updates in a row were skipped.
    """
    if math.isfinite(grad_norm) and math.isfinite(loss):
        optimizer.step()
        scheduler.step()
        return 0
    consecutive_skips += 1
    if consecutive_skips >= max_skipped:
        raise TrainingError(
            f"{consecutive_skips} consecutive updates had a non-finite loss or gradient "
            f"(last loss {loss}, grad norm {grad_norm}): {hint}."
        )
    return consecutive_skips


@dataclass
class TrainResult:
    run_dir: Path
    step: int
    initial_eval: dict[str, float] = field(default_factory=dict)
    final_eval: dict[str, float] = field(default_factory=dict)
    history: list[dict[str, float]] = field(default_factory=list)


def _mix_seed(*parts: int) -> int:
    """A 63-bit seed from integers (splitmix64 steps), stable across runs and platforms."""
    x = 0x9E3779B97F4A7C15
    for p in parts:
        x = (x ^ (p + 0x9E3779B97F4A7C15 + (x << 6) + (x >> 2))) & 0xFFFFFFFFFFFFFFFF
        x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9 & 0xFFFFFFFFFFFFFFFF
        x = (x ^ (x >> 27)) * 0x94D049BB133111EB & 0xFFFFFFFFFFFFFFFF
        x ^= x >> 31
    return x & 0x7FFFFFFFFFFFFFFF


def build_rewards(config: TrainConfig) -> CombinedReward:
    if not config.rewards:
        raise ConfigError("config key 'rewards' is empty: list at least one reward (see docs/rewards.md).")
    rewards = [build_reward(spec.type, spec.name, **spec.args) for spec in config.rewards]
    return CombinedReward(rewards, [spec.weight for spec in config.rewards])


def reserve_run_dir(output_dir: str | Path, run_name: str | None, prefix: str) -> Path:
    """``output_dir/run_name`` as given, or a new folder ``output_dir/{prefix}__{time}`` created
    here, so that two runs started in the same second get different folders (``-2``, ``-3``...)."""
    if run_name:
        return Path(output_dir) / run_name
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    base = Path(output_dir) / f"{prefix}__{stamp}"
    base.parent.mkdir(parents=True, exist_ok=True)
    for k in range(1000):
        path = base if k == 0 else base.with_name(f"{base.name}-{k + 1}")
        try:
            path.mkdir()
            return path
        except FileExistsError:
            continue
    raise TrainingError(f"could not create a new run folder next to {str(base)!r}.")


def new_run_dir(config: TrainConfig) -> Path:
    """The run folder of a new RL run: ``{task}__{algorithm}__{seed}__{time}`` unless named."""
    return reserve_run_dir(config.output_dir, config.run_name, f"{config.task}__{config.algorithm.name}__{config.seed}")


class Trainer:
    """Runs one training job described by a :class:`TrainConfig`.

    Args:
        config: the validated config.
        run_dir: where to write; default is a new folder under ``config.output_dir``.
        resume: continue from the latest checkpoint in ``run_dir``.
        task, policy, rewards: override what the config would build (for library use).
        callbacks: called after every step with ``(trainer, step, metrics)``.
        show_progress: draw a rich progress bar.
    """

    def __init__(
        self,
        config: TrainConfig,
        *,
        run_dir: Path | None = None,
        resume: bool = False,
        task: Task | None = None,
        policy: CausalLMPolicy | None = None,
        rewards: CombinedReward | None = None,
        callbacks: Sequence[StepCallback] = (),
        show_progress: bool = True,
        log: Callable[[str], None] | None = None,
    ) -> None:
        from accelerate import Accelerator
        from accelerate.utils import broadcast_object_list, set_seed

        self.config = config
        self.callbacks = list(callbacks)
        self.show_progress = show_progress
        # A multi-process launch (torchrun, `accelerate launch --multi_gpu`) on a machine without
        # CUDA must say cpu=True, or Accelerate would not form a process group (gloo on CPU).
        distributed_cpu = "LOCAL_RANK" in os.environ and not torch.cuda.is_available()
        self.accelerator = Accelerator(cpu=distributed_cpu)
        acc = self.accelerator
        self.log = log or (lambda msg: acc.print(msg))
        self.task = task or get_task(config.task, config.task_args)
        self.rewards = rewards or build_rewards(config)
        if isinstance(config.algorithm, DQNConfig):
            raise ConfigError("algorithm 'dqn' runs in its own loop: use `rl4gen train` or rl4gen.algorithms.sequence_dqn.SequenceDQN.")
        self.algorithm = build_algorithm(config.algorithm)

        resume_from: Path | None = None
        if resume:
            if run_dir is None:
                raise ValueError("resume needs the run folder")
            self.run_dir = Path(run_dir)
            self.checkpoints_dir = self.run_dir / "checkpoints"
            found = list_checkpoints(self.checkpoints_dir)
            if not found:
                raise CheckpointError(
                    f"run folder {str(self.run_dir)!r} has no complete checkpoint to resume from."
                )
            resume_from = found[-1]

        self.needs_reference = self.algorithm.needs_reference or config.reference_metrics
        set_seed(config.seed)  # fresh weights (a new LoRA adapter) start the same for the same seed
        if policy is None:
            model_path = config.model.path
            if model_path is None:
                if self.task.name == "prompts":
                    raise ConfigError("the prompts task needs a model: set model.path to a model folder.")
                with acc.main_process_first():
                    model_path = str(self.task.pretrain(log=self.log))
            policy = self.task.load_policy(model_path, config, use_reference=self.needs_reference)
        if self.algorithm.needs_values:
            policy.add_value_head()  # the critic shares the policy's trunk
        self.policy = policy

        params = self.policy.trainable_parameters()
        self.optimizer = torch.optim.AdamW(
            params,
            lr=config.learning_rate,
            betas=(config.adam_beta1, config.adam_beta2),
            weight_decay=config.weight_decay,
        )
        from transformers import get_scheduler

        self.scheduler = get_scheduler(
            {"constant": "constant_with_warmup", "linear": "linear", "cosine": "cosine"}[config.lr_scheduler_type],
            self.optimizer,
            num_warmup_steps=config.warmup_steps,
            num_training_steps=config.max_steps * self.algorithm.num_iterations * self.algorithm.num_mini_batches,
        )
        self.policy.prepare(acc)
        self.step = 0
        self.skipped_steps = 0
        self._consecutive_skips = 0
        self.num_tokens = 0
        self.reward_metrics: dict[str, float] = {}
        self.initial_eval: dict[str, float] = {}
        self.last_eval: dict[str, float] = {}
        if resume_from is not None:
            self._load_checkpoint(resume_from)
            if self.step >= config.max_steps:
                raise ConfigError(
                    f"the run is already at step {self.step}, so max_steps={config.max_steps} leaves nothing "
                    f"to do: resume with --set max_steps=N for some N > {self.step}."
                )
        if not resume:
            # Reserved last, so that a run that fails to start leaves no folder behind.
            holder = [str(run_dir or (new_run_dir(config) if acc.is_main_process else ""))]
            broadcast_object_list(holder)  # every process writes to the main process's folder
            self.run_dir = Path(holder[0])
            self.checkpoints_dir = self.run_dir / "checkpoints"

    # ------------------------------------------------------------------ checkpoints

    def _trainer_state(self) -> dict[str, Any]:
        world = self.accelerator.num_processes
        return {
            "data_position": self.step * self.config.prompts_per_step * world,
            "num_processes": world,
            "skipped_steps": self.skipped_steps,
            "num_tokens": self.num_tokens,
            "algorithm": self.algorithm.state_dict(),
            "initial_eval": self.initial_eval,
            "last_eval": self.last_eval,
        }

    def save_checkpoint(self) -> Path | None:
        acc = self.accelerator
        acc.wait_for_everyone()
        path = None
        if acc.is_main_process:
            path = write_checkpoint(
                self.checkpoints_dir,
                self.step,
                save_weights=self.policy.save,
                optimizer=self.optimizer,
                scheduler=self.scheduler,
                trainer_state=self._trainer_state(),
                keep=self.config.save_total_limit,
            )
        acc.wait_for_everyone()
        return path

    def _load_checkpoint(self, path: Path) -> None:
        state = verify_checkpoint(path)
        if state.get("num_processes", 1) != self.accelerator.num_processes:
            raise CheckpointError(
                f"checkpoint {str(path)!r} was written by {state['num_processes']} processes but this "
                f"run has {self.accelerator.num_processes}: resume with the same number of processes."
            )
        self.policy.load_weights(path / "model")
        self.optimizer.load_state_dict(torch.load(path / "optimizer.pt", weights_only=False))
        self.scheduler.load_state_dict(torch.load(path / "scheduler.pt", weights_only=False))
        set_rng_state(torch.load(path / "rng_state.pt", weights_only=False))
        self.step = int(state["step"])
        self.skipped_steps = int(state["skipped_steps"])
        self.num_tokens = int(state["num_tokens"])
        self.algorithm.load_state_dict(state["algorithm"])
        self.initial_eval = state.get("initial_eval", {})
        self.last_eval = state.get("last_eval", {})
        self.log(f"resumed from {path} at step {self.step}")

    # ------------------------------------------------------------------ one step, by phase

    def _generators(self, step: int) -> tuple[torch.Generator, torch.Generator]:
        rank = self.accelerator.process_index
        data = torch.Generator().manual_seed(_mix_seed(self.config.seed, step, rank, 1))
        sample = torch.Generator(device=self.policy.device).manual_seed(_mix_seed(self.config.seed, step, rank, 2))
        return data, sample

    def collect(self, step: int) -> tuple[Rollout, dict[str, Tensor]]:
        """Sample contexts and completions, score them, compute advantages."""
        data_gen, sample_gen = self._generators(step)
        contexts = self.task.train_contexts(data_gen, self.config.prompts_per_step)
        if not contexts:
            raise ConfigError(f"task {self.config.task!r} produced no training contexts: the prompt set is empty.")
        rollout = self.policy.sample(contexts, self.config.algorithm.num_generations, generator=sample_gen)
        if self.needs_reference:
            rollout.ref_logprobs = self.policy.ref_log_probs(rollout)
        if self.algorithm.needs_values:
            rollout.values = self.policy.values(rollout)  # the critic at sampling time
        scored = self.rewards(rollout.samples, rollout.contexts)
        rollout.rewards = scored.total.to(rollout.actions.device)
        rollout.advantages = self.algorithm.advantages(rollout)
        self.reward_metrics = self.rewards.update(rollout)  # learned rewards' own metrics
        return rollout, scored.components

    def update(self, rollout: Rollout) -> dict[str, float]:
        """``num_iterations`` passes over the rollout, each in ``num_mini_batches`` minibatches
        (one optimizer step each, rows shuffled between passes when there are several), each
        minibatch in ``gradient_accumulation_steps`` micro-batches."""
        acc = self.accelerator
        algo = self.algorithm
        n = len(rollout)
        shuffle = torch.Generator().manual_seed(_mix_seed(self.config.seed, self.step + 1, acc.process_index, 3))
        sums: dict[str, float] = {}
        losses, grad_norms, lrs = [], [], []
        for _ in range(algo.num_iterations):
            order = torch.randperm(n, generator=shuffle) if algo.num_mini_batches > 1 else torch.arange(n)
            for rows in order.tensor_split(algo.num_mini_batches):
                loss, grad_norm, lr = self._optimizer_step(rollout, rows, sums)
                losses.append(loss)
                grad_norms.append(grad_norm)
                lrs.append(lr)
        local_tokens = float(rollout.num_tokens) * algo.num_iterations
        metrics = {
            "loss": sum(losses) / len(losses),
            "grad_norm": sum(grad_norms) / len(grad_norms),
            "learning_rate": lrs[-1],
        }
        for key, value in sums.items():  # token sums -> means over every token of every pass
            metrics[key] = value / max(local_tokens, 1.0)
        return metrics

    def _optimizer_step(self, rollout: Rollout, rows: Tensor, sums: dict[str, float]) -> tuple[float, float, float]:
        """One optimizer step on ``rollout``'s ``rows`` (a minibatch), in micro-batches; adds the
        loss's token sums into ``sums``. Returns the minibatch loss, gradient norm and learning rate."""
        acc = self.accelerator
        cfg = self.config
        minibatch = rollout.select(rows) if len(rows) < len(rollout) else rollout
        tokens = torch.tensor([float(minibatch.num_tokens)], device=acc.device)
        global_tokens = float(acc.reduce(tokens, reduction="sum").item())
        totals = StepTotals(
            num_sequences=float(len(minibatch)),
            num_tokens=global_tokens / acc.num_processes,
            max_completion_length=cfg.generation.max_completion_length,
        )
        chunks = torch.arange(len(minibatch)).tensor_split(cfg.gradient_accumulation_steps)
        step_loss = 0.0
        for k, idx in enumerate(chunks):
            batch = minibatch.select(idx)
            last = k == len(chunks) - 1
            sync = contextlib.nullcontext() if last else acc.no_sync(self.policy.train_model)
            with sync:
                if self.algorithm.needs_values:
                    logprobs, values = self.policy.log_probs_and_values(batch)
                    out = self.algorithm.loss(logprobs, batch, totals, values=values)
                else:
                    logprobs = self.policy.log_probs(batch)
                    out = self.algorithm.loss(logprobs, batch, totals)
                acc.backward(out.loss)
            step_loss += float(out.loss.detach().item())
            for key, value in out.token_sums.items():
                sums[key] = sums.get(key, 0.0) + float(value.item())
        params = self.policy.trainable_parameters()
        max_norm = cfg.max_grad_norm if cfg.max_grad_norm is not None else float("inf")
        grad_norm = float(acc.clip_grad_norm_(params, max_norm))
        lr = self.scheduler.get_last_lr()[0]
        self._consecutive_skips = guarded_update(
            self.optimizer, self.scheduler, step_loss, grad_norm, self._consecutive_skips, cfg.max_skipped_steps,
            "lower learning_rate, set max_grad_norm, or check the rewards' scale",
        )
        self.skipped_steps += self._consecutive_skips > 0
        self.optimizer.zero_grad(set_to_none=True)
        return step_loss, grad_norm, lr

    def _rollout_metrics(self, rollout: Rollout, components: dict[str, Tensor]) -> dict[str, float]:
        acc = self.accelerator
        assert rollout.rewards is not None
        rewards = acc.gather(rollout.rewards.float())
        metrics: dict[str, float] = {
            "reward": float(rewards.mean()),
            "reward_std": float(rewards.std()) if rewards.numel() > 1 else 0.0,
        }
        for name, values in components.items():
            v = acc.gather(values.to(acc.device))
            finite = v[~torch.isnan(v)]
            metrics[f"rewards/{name}/mean"] = float(finite.mean()) if finite.numel() else float("nan")
            metrics[f"rewards/{name}/std"] = float(finite.std()) if finite.numel() > 1 else 0.0
        g = self.config.algorithm.num_generations
        if g > 1:
            group_std = rollout.rewards.view(-1, g).std(dim=1)
            zero = acc.gather((group_std < 1e-6).float())
            metrics["frac_reward_zero_std"] = float(zero.mean())
        lengths = acc.gather(rollout.mask.sum(dim=1))
        metrics["completions/mean_length"] = float(lengths.mean())
        metrics["completions/min_length"] = float(lengths.min())
        metrics["completions/max_length"] = float(lengths.max())
        if rollout.truncated is not None:
            metrics["completions/clipped_ratio"] = float(acc.gather(rollout.truncated.float()).mean())
        entropy = masked_mean(rollout.extras["entropy"], rollout.mask)
        metrics["entropy"] = float(acc.reduce(entropy.reshape(1), reduction="mean"))
        prompt_tokens = 0 if rollout.prompt_mask is None else int(rollout.prompt_mask.sum())
        step_tokens = torch.tensor([float(prompt_tokens + rollout.num_tokens)], device=acc.device)
        self.num_tokens += int(acc.reduce(step_tokens, reduction="sum").item())
        metrics["num_tokens"] = float(self.num_tokens)
        for key, value in self.algorithm.rollout_metrics(rollout).items():
            metrics[key] = float(acc.reduce(value.reshape(1).to(acc.device), reduction="mean"))
        return metrics

    def evaluate(self) -> dict[str, float]:
        """Held-out metrics on the main process (``eval/{key}``)."""
        acc = self.accelerator
        result: dict[str, float] = {}
        if acc.is_main_process:
            result = self.task.evaluate(self.policy, self.config.eval_size)
        acc.wait_for_everyone()
        return result

    def _save_samples(self, step: int, rollout: Rollout, components: dict[str, Tensor]) -> None:
        if not self.accelerator.is_main_process:
            return
        out = self.run_dir / "samples"
        out.mkdir(parents=True, exist_ok=True)
        assert rollout.rewards is not None
        textual = all(isinstance(s, str) for s in rollout.samples)
        if not textual:  # images, arrays: the task draws them; the table keeps rewards and labels
            self.task.save_samples(step, rollout, out)
        rows = []
        for i in range(len(rollout)):
            ctx = rollout.contexts[i]
            rows.append(
                {
                    "step": step,
                    "prompt": ctx if isinstance(ctx, str) else ctx.get("prompt", ctx.get("label")),
                    "completion": rollout.samples[i] if textual else None,
                    "reward": float(rollout.rewards[i]),
                    **{f"rewards/{k}": (None if math.isnan(float(v[i])) else float(v[i])) for k, v in components.items()},
                }
            )
        with (out / f"step_{step:06d}.jsonl").open("w", encoding="utf-8") as f:
            for row in rows:
                f.write(json.dumps(row) + "\n")

    def _check_replicas(self) -> None:
        """With several processes, every replica must hold the same weights after training."""
        acc = self.accelerator
        if acc.num_processes == 1:
            return
        with torch.no_grad():
            fingerprint = torch.stack(
                [torch.stack([p.double().sum(), (p.double() ** 2).sum()]) for p in self.policy.trainable_parameters()]
            ).sum(dim=0).to(acc.device)
        every = acc.gather(fingerprint.unsqueeze(0))  # (num_processes, 2)
        if not torch.allclose(every, every[0:1].expand_as(every), rtol=0, atol=1e-9):
            raise TrainingError(f"model replicas diverged across processes: {every.tolist()}")

    # ------------------------------------------------------------------ the loop

    def train(self) -> TrainResult:
        acc = self.accelerator
        cfg = self.config
        if acc.is_main_process:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            (self.run_dir / "config.yaml").write_text(dump_config(cfg))
            meta = {"model_path": str(self.policy.source) if getattr(self.policy, "source", None) else None}
            (self.run_dir / "run.json").write_text(json.dumps(meta, indent=2))
        acc.wait_for_everyone()
        logger = MetricsLogger(
            self.run_dir,
            cfg.max_steps,
            start_step=self.step,
            enabled=acc.is_main_process,
            show_progress=self.show_progress,
        )
        history: list[dict[str, float]] = []
        try:
            if self.step == 0:
                self.initial_eval = self.evaluate()
                self.last_eval = dict(self.initial_eval)
                if acc.is_main_process:
                    logger.log(0, {f"eval/{k}": v for k, v in self.initial_eval.items()})
            while self.step < cfg.max_steps:
                start = time.perf_counter()
                step = self.step + 1
                rollout, components = self.collect(step)
                metrics = self._rollout_metrics(rollout, components)
                metrics.update(self.reward_metrics)
                metrics.update(self.update(rollout))
                self.algorithm.end_step(metrics, len(rollout) * acc.num_processes)
                self.step = step
                metrics["skipped_steps"] = float(self.skipped_steps)
                metrics["step_time"] = time.perf_counter() - start
                if step % cfg.eval_steps == 0 or step == cfg.max_steps:
                    self.last_eval = self.evaluate()
                    metrics.update({f"eval/{k}": v for k, v in self.last_eval.items()})
                if step % cfg.sample_steps == 0 or step == 1 or step == cfg.max_steps:
                    self._save_samples(step, rollout, components)
                if step % cfg.logging_steps == 0 or step == cfg.max_steps or any(k.startswith("eval/") for k in metrics):
                    logger.log(step, metrics)
                history.append(metrics)
                info = f"reward {metrics['reward']:.3f}"
                if "kl" in metrics:
                    info += f" kl {metrics['kl']:.4f}"
                if self.last_eval:
                    key = next(iter(self.last_eval))
                    info += f" eval/{key} {self.last_eval[key]:.3f}"
                logger.advance(step, info)
                if step % cfg.save_steps == 0 or step == cfg.max_steps:
                    self.save_checkpoint()
                for callback in self.callbacks:
                    callback(self, step, metrics)
        finally:
            logger.close()
        self._check_replicas()
        if acc.is_main_process:
            self.policy.save(self.run_dir / "model")
        acc.wait_for_everyone()
        return TrainResult(self.run_dir, self.step, self.initial_eval, self.last_eval, history)
