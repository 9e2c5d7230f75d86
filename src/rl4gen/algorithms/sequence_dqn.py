"""Q-learning over tokens: RL Tuner's value-based route (Jaques et al., 2017, "Sequence Tutor:
Conservative Fine-Tuning of Sequence Generation Models with KL-control"), on DQN (Mnih et al.,
2015) with a target network and a replay buffer.

The state is the prefix, the action the next token, and the Q-network is a copy of the
pretrained prior: ``Q(s, a) = f(s, a) - log Z_prior(s)``, with ``f`` the network's logits and
``log Z_prior`` the frozen prior's log-normaliser at that prefix. At the start ``Q = log
p_prior(a | s)``, which is already the soft-optimal Q for the KL-control reward alone, so TD errors
start small and only the music-theory rewards move the values. (With raw logits as Q-values the
arbitrary per-prefix offset of the logits dominated the first TD errors and the melodies fell
apart within 50 steps: log-likelihood under the prior -0.5 -> -6 per step.) The offset does not
change the Boltzmann policy ``softmax(Q / temperature)``.

Each step's reward is ``reward_scale`` times the task's per-step reward (rules that speak at a
step; a sequence-level reward counts at the last token) plus ``log p_prior(token | prefix)``, the
KL-control term that keeps melodies close to the data: with ``soft`` the optimal policy is the
prior tilted by ``exp(reward_scale * return)``, so ``1 / reward_scale`` plays the part of GRPO's
``beta``. Targets:

    y_t = r_t + gamma * V_target(s_{t+1}),  V = max_a Q   (Q-learning)
                                            V = logsumexp_a Q   (``soft``: Psi-learning)

with V = 0 after the last token, and a Huber loss on ``Q(s_t, a_t) - y_t``. Exploration is
Boltzmann: sequences are sampled from ``softmax(Q / temperature)`` with the policy's KV-cached
sampler, which for ``soft`` is exactly the Psi-learning policy.

This loop is separate from the policy-gradient :class:`rl4gen.trainer.Trainer` (it keeps a
replay buffer and a target network) but writes the same run folder: ``config.yaml``,
``metrics.jsonl``, TensorBoard events and ``model/``. It runs in one process and does not resume.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from rl4gen.config import DQNConfig, TrainConfig, dump_config
from rl4gen.core.losses import masked_mean
from rl4gen.core.rollout import Rollout
from rl4gen.policies.causal_lm import CausalLMPolicy
from rl4gen.rewards.base import CombinedReward


def per_step_rewards(rewards: CombinedReward, rollout: Rollout) -> tuple[Tensor, dict[str, Tensor]]:
    """Weighted per-step rewards ``(B, T)`` and each component's per-sequence total ``(B,)``.

    A reward with a ``per_step(samples, contexts)`` method places its values on the steps it
    names; any other reward counts at each sequence's last token.
    """
    b, t = rollout.actions.shape
    total = torch.zeros(b, t)
    last = (rollout.mask.sum(-1).long() - 1).clamp(min=0).cpu()  # (B,)
    components: dict[str, Tensor] = {}
    for reward, weight in zip(rewards.rewards, rewards.weights):
        per_step = getattr(reward, "per_step", None)
        if callable(per_step):
            rows = per_step(rollout.samples, rollout.contexts)
            values = torch.zeros(b, t)
            for i, row in enumerate(rows):
                n = min(len(row), t)
                values[i, :n] = torch.as_tensor(np.asarray(row[:n], dtype=np.float32))
                if len(row) > t:  # steps past the generated length (padding) land on the last token
                    values[i, last[i]] += float(np.sum(row[t:]))
            components[reward.name] = values.sum(-1)
        else:
            seq = torch.tensor([math.nan if v is None else float(v) for v in reward(rollout.samples, rollout.contexts)])
            components[reward.name] = seq
            values = torch.zeros(b, t)
            values[torch.arange(b), last] = torch.nan_to_num(seq, nan=0.0)
        total += weight * values
    return total * rollout.mask.cpu(), components


@dataclass
class ReplayBuffer:
    """The most recent ``capacity`` sequences with their per-step rewards."""

    capacity: int
    rows: list[dict[str, Tensor]] = field(default_factory=list)
    position: int = 0

    def add(self, rollout: Rollout, step_rewards: Tensor) -> None:
        assert rollout.prompt_ids is not None and rollout.prompt_mask is not None
        for i in range(len(rollout)):
            row = {
                "prompt_ids": rollout.prompt_ids[i].cpu(),
                "prompt_mask": rollout.prompt_mask[i].cpu(),
                "actions": rollout.actions[i].cpu(),
                "mask": rollout.mask[i].cpu(),
                "rewards": step_rewards[i].cpu(),
            }
            if len(self.rows) < self.capacity:
                self.rows.append(row)
            else:
                self.rows[self.position] = row
            self.position = (self.position + 1) % self.capacity

    def __len__(self) -> int:
        return len(self.rows)

    def sample(self, n: int, generator: torch.Generator) -> dict[str, Tensor]:
        idx = torch.randint(0, len(self.rows), (n,), generator=generator).tolist()
        return {key: _stack([self.rows[i][key] for i in idx], left=key.startswith("prompt")) for key in self.rows[0]}


def _stack(items: Sequence[Tensor], left: bool) -> Tensor:
    """Stack rows of different lengths, padding with zeros on the left (prompts) or right."""
    width = max(x.shape[0] for x in items)
    out = torch.zeros((len(items), width), dtype=items[0].dtype)
    for i, x in enumerate(items):
        if left:
            out[i, width - x.shape[0] :] = x
        else:
            out[i, : x.shape[0]] = x
    return out


def td_loss(q_all: Tensor, target_all: Tensor, actions: Tensor, rewards: Tensor, mask: Tensor, gamma: float, soft: bool) -> tuple[Tensor, Tensor]:
    """Huber TD loss and the chosen Q-values.

    q_all, target_all: (B, T, V) Q-values of the online and target networks at each prefix;
    actions, rewards, mask: (B, T). The value after the last real token is 0.
    """
    q = q_all.gather(-1, actions.unsqueeze(-1)).squeeze(-1)  # (B, T)
    with torch.no_grad():
        v = torch.logsumexp(target_all, dim=-1) if soft else target_all.max(dim=-1).values  # (B, T)
        v_next = torch.zeros_like(v)
        v_next[:, :-1] = v[:, 1:] * mask[:, 1:]  # 0 after the end
        y = rewards + gamma * v_next
    loss = masked_mean(nn.functional.smooth_l1_loss(q, y, reduction="none"), mask)
    return loss, q


class SequenceDQN:
    """Runs one Q-learning job described by a :class:`TrainConfig` whose algorithm is ``dqn``."""

    def __init__(
        self,
        config: TrainConfig,
        *,
        task: Any | None = None,
        run_dir: Path | None = None,
        show_progress: bool = True,
        log: Callable[[str], None] = print,
    ) -> None:
        from rl4gen.tasks import get_task
        from rl4gen.trainer import build_rewards

        if not isinstance(config.algorithm, DQNConfig):
            raise TypeError("SequenceDQN needs algorithm.name = dqn")
        self.config = config
        self.algo: DQNConfig = config.algorithm
        self.log = log
        self.show_progress = show_progress
        self.task = task or get_task(config.task, config.task_args)
        path = config.model.path or str(self.task.pretrain(log=log))
        torch.manual_seed(config.seed)
        self.policy = CausalLMPolicy.from_pretrained(path, config.generation)  # the Q-network
        self.target = copy.deepcopy(self.policy.model).eval().requires_grad_(False)
        self.prior = CausalLMPolicy.from_pretrained(path)  # frozen: the KL-control reward
        self.prior.model.requires_grad_(False)
        self.rewards = build_rewards(config)
        self.buffer = ReplayBuffer(self.algo.buffer_size)
        self.optimizer = torch.optim.AdamW(
            self.policy.trainable_parameters(), lr=config.learning_rate, weight_decay=config.weight_decay,
            betas=(config.adam_beta1, config.adam_beta2),
        )
        self.run_dir = Path(run_dir) if run_dir is not None else _new_run_dir(config)
        self.step = 0

    def _q_values(self, model: nn.Module, batch: dict[str, Tensor], log_z: Tensor) -> Tensor:  # (B, T, V)
        return self.policy.completion_logits(self._as_rollout(batch), model).float() - log_z.unsqueeze(-1)

    def _prior_log_z(self, batch: dict[str, Tensor]) -> Tensor:  # (B, T)
        with torch.no_grad():
            return torch.logsumexp(self.prior.completion_logits(self._as_rollout(batch), self.prior.model).float(), dim=-1)

    def _as_rollout(self, batch: dict[str, Tensor]) -> Rollout:
        return Rollout(
            actions=batch["actions"],
            mask=batch["mask"],
            logprobs=torch.zeros(batch["actions"].shape),
            group_ids=torch.arange(batch["actions"].shape[0]),
            samples=[""] * batch["actions"].shape[0],
            contexts=[None] * batch["actions"].shape[0],
            prompt_ids=batch["prompt_ids"],
            prompt_mask=batch["prompt_mask"],
        )

    def _lr(self, step: int) -> float:
        cfg = self.config
        if step < cfg.warmup_steps:
            return cfg.learning_rate * (step + 1) / cfg.warmup_steps
        if cfg.lr_scheduler_type == "constant":
            return cfg.learning_rate
        frac = (step - cfg.warmup_steps) / max(1, cfg.max_steps - cfg.warmup_steps)
        if cfg.lr_scheduler_type == "linear":
            return cfg.learning_rate * (1 - frac)
        return cfg.learning_rate * 0.5 * (1 + math.cos(math.pi * frac))

    def train_step(self, step: int, generator: torch.Generator) -> dict[str, float]:
        cfg, algo = self.config, self.algo
        contexts = self.task.train_contexts(generator, cfg.prompts_per_step)
        rollout = self.policy.sample(contexts, algo.num_generations, generator=generator)
        step_rewards, components = per_step_rewards(self.rewards, rollout)
        with torch.no_grad():
            prior_logp = self.prior.log_probs(rollout).cpu() * rollout.mask.cpu()  # (B, T)
        self.buffer.add(rollout, algo.reward_scale * step_rewards + prior_logp)
        metrics: dict[str, float] = {
            "reward": float(step_rewards.sum(-1).mean()),
            "rewards/prior_logp/mean": float(prior_logp.sum(-1).mean() / rollout.mask.sum(-1).mean()),
        }
        for name, values in components.items():
            finite = values[~torch.isnan(values)]
            metrics[f"rewards/{name}/mean"] = float(finite.mean()) if finite.numel() else float("nan")
        losses, qs, norms = [], [], []
        for group in self.optimizer.param_groups:
            group["lr"] = self._lr(step - 1)
        for _ in range(algo.gradient_steps):
            batch = self.buffer.sample(algo.batch_size, generator)
            log_z = self._prior_log_z(batch)
            q_all = self._q_values(self.policy.model, batch, log_z)
            with torch.no_grad():
                target_all = self._q_values(self.target, batch, log_z)
            loss, q = td_loss(q_all, target_all, batch["actions"], batch["rewards"], batch["mask"], algo.gamma, algo.soft)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            norm = nn.utils.clip_grad_norm_(self.policy.trainable_parameters(), cfg.max_grad_norm or float("inf"))
            self.optimizer.step()
            losses.append(float(loss.detach()))
            qs.append(float(masked_mean(q.detach(), batch["mask"])))
            norms.append(float(norm))
        if step % algo.target_update_interval == 0:
            self.target.load_state_dict(self.policy.model.state_dict())
        metrics.update(
            {
                "loss": sum(losses) / len(losses),
                "losses/q_values": sum(qs) / len(qs),
                "grad_norm": sum(norms) / len(norms),
                "learning_rate": self._lr(step - 1),
                "completions/mean_length": float(rollout.mask.sum(-1).mean()),
                "entropy": float(masked_mean(rollout.extras["entropy"], rollout.mask)),
            }
        )
        return metrics

    def train(self) -> Any:
        from rl4gen.tracking import MetricsLogger
        from rl4gen.trainer import TrainResult

        cfg = self.config
        self.run_dir.mkdir(parents=True, exist_ok=True)
        (self.run_dir / "config.yaml").write_text(dump_config(cfg))
        logger = MetricsLogger(self.run_dir, cfg.max_steps, show_progress=self.show_progress)
        generator = torch.Generator().manual_seed(cfg.seed)
        history: list[dict[str, float]] = []
        try:
            initial = self.task.evaluate(self.policy, cfg.eval_size)
            last = dict(initial)
            logger.log(0, {f"eval/{k}": v for k, v in initial.items()})
            for step in range(1, cfg.max_steps + 1):
                start = time.perf_counter()
                metrics = self.train_step(step, generator)
                self.step = step
                metrics["step_time"] = time.perf_counter() - start
                if step % cfg.eval_steps == 0 or step == cfg.max_steps:
                    last = self.task.evaluate(self.policy, cfg.eval_size)
                    metrics.update({f"eval/{k}": v for k, v in last.items()})
                logger.log(step, metrics)
                history.append(metrics)
                logger.advance(step, f"reward {metrics['reward']:.3f} loss {metrics['loss']:.4f}")
        finally:
            logger.close()
        self.policy.save(self.run_dir / "model")
        return TrainResult(self.run_dir, self.step, initial, last, history)


def _new_run_dir(config: TrainConfig) -> Path:
    from rl4gen.trainer import new_run_dir

    return new_run_dir(config)
