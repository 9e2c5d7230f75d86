"""Direct Preference Optimization (Rafailov et al., 2023) and IPO (Azar et al., 2023).

Offline: no sampling. Each pair's chosen and rejected completions are scored by the policy in one
forward pass; the loss is :func:`rl4gen.core.preference.dpo_loss` (``sigmoid``, with optional
label smoothing, or ``ipo``). The reference log-probs are computed once, before the first update,
in one pass over the data under ``torch.inference_mode()``: with full fine-tuning the model before
training *is* the reference, so no second copy is kept; with LoRA the adapter is disabled for
that pass. Log-probs are summed over completion tokens (prompt tokens masked); IPO averages them
over the completion's tokens, as the paper and TRL do.

Metrics follow TRL: ``rewards/chosen``, ``rewards/rejected``, ``rewards/accuracies``,
``rewards/margins``, ``logps/chosen``, ``logps/rejected``, ``loss``, and ``num_tokens`` (prompt +
completion tokens of both completions, cumulative).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from typing import Literal

import torch
from pydantic import Field, model_validator
from torch import Tensor

from rl4gen.core.preference import dpo_loss
from rl4gen.data.preferences import PreferencePair, load_preferences
from rl4gen.offline import (
    Encoded,
    OfflineConfig,
    OfflineResult,
    OfflineTrainer,
    collate,
    encode_example,
    load_data,
    load_policy,
    require_single_process,
    sequence_logps,
    task_evaluator,
)
from rl4gen.policies.causal_lm import CausalLMPolicy


class DPOConfig(OfflineConfig):
    """``rl4gen dpo``: preference pairs (docs/data.md) and a causal LM."""

    beta: float = Field(0.1, gt=0)
    """Strength of the implicit KL to the reference (higher = stay closer)."""
    loss_type: Literal["sigmoid", "ipo"] = "sigmoid"
    """sigmoid (DPO) or ipo (squared loss toward a margin of 1 / (2 beta))."""
    label_smoothing: float = Field(0.0, ge=0, lt=0.5)
    """Assumed probability that a preference label is flipped (conservative DPO); sigmoid only."""

    @model_validator(mode="after")
    def _check_smoothing(self) -> DPOConfig:
        if self.label_smoothing > 0 and self.loss_type != "sigmoid":
            raise ValueError("label_smoothing applies to loss_type 'sigmoid' only")
        return self



class PairData:
    """Tokenised pairs and their reference log-probs (B,) for chosen and rejected."""

    def __init__(self, pairs: Sequence[PreferencePair], tokenizer: object, config: DPOConfig) -> None:
        def enc(prompt: str, completion: str) -> Encoded:
            return encode_example(tokenizer, prompt, completion, config.append_eos, config.max_length)

        self.chosen: list[Encoded] = [enc(p.prompt, p.chosen) for p in pairs]
        self.rejected: list[Encoded] = [enc(p.prompt, p.rejected) for p in pairs]
        self.ref_chosen = torch.zeros(len(pairs))
        self.ref_rejected = torch.zeros(len(pairs))

    def __len__(self) -> int:
        return len(self.chosen)


class DPO:
    """DPO on a policy: the loss over a micro-batch of pairs, reference pass, evaluation."""

    def __init__(self, config: DPOConfig, policy: CausalLMPolicy) -> None:
        self.config = config
        self.policy = policy
        self.average = config.loss_type == "ipo"

    def logps(self, model: torch.nn.Module, data: PairData, idx: Sequence[int]) -> tuple[Tensor, Tensor]:
        """Policy log-probs of chosen and rejected (B,), from one forward over both."""
        examples = [data.chosen[i] for i in idx] + [data.rejected[i] for i in idx]
        ids, attn, comp = collate(examples, self.policy.pad_token_id, self.policy.device)
        logp = sequence_logps(model, ids, attn, comp, average=self.average)  # (2B,)
        return logp[: len(idx)], logp[len(idx) :]

    def compute_reference(self, data: PairData) -> None:
        """Reference log-probs for every pair, once: the current weights, or the base without LoRA."""
        model = self.policy.model
        disabled = model.disable_adapter() if self.policy.is_lora else contextlib.nullcontext()
        step = self.config.per_device_eval_batch_size
        with torch.inference_mode(), disabled:
            for start in range(0, len(data), step):
                idx = list(range(start, min(start + step, len(data))))
                c, r = self.logps(model, data, idx)
                data.ref_chosen[idx] = c.float().cpu()
                data.ref_rejected[idx] = r.float().cpu()

    def loss(self, data: PairData, idx: Sequence[int], denominator: int) -> tuple[Tensor, dict[str, float]]:
        """Loss and metric sums over ``idx``, each divided by ``denominator`` pairs."""
        c, r = self.logps(self.policy.model, data, idx)
        device = c.device
        out = dpo_loss(
            c,
            r,
            data.ref_chosen[list(idx)].to(device),
            data.ref_rejected[list(idx)].to(device),
            self.config.beta,
            self.config.loss_type,
            self.config.label_smoothing,
        )
        values = {
            "rewards/chosen": out.chosen_rewards,
            "rewards/rejected": out.rejected_rewards,
            "rewards/accuracies": (out.chosen_rewards > out.rejected_rewards).float(),
            "rewards/margins": out.chosen_rewards - out.rejected_rewards,
            "logps/chosen": c.detach(),
            "logps/rejected": r.detach(),
        }
        metrics = {k: float(v.sum()) / denominator for k, v in values.items()}
        metrics["num_tokens"] = float(sum(len(data.chosen[i].ids) + len(data.rejected[i].ids) for i in idx))
        return out.losses.sum() / denominator, metrics

    def evaluate(self, data: PairData) -> dict[str, float]:
        """Loss and TRL's reward metrics over a whole (held-out) set."""
        totals: dict[str, float] = {}
        step = self.config.per_device_eval_batch_size
        for start in range(0, len(data), step):
            idx = list(range(start, min(start + step, len(data))))
            loss, metrics = self.loss(data, idx, len(data))
            metrics.pop("num_tokens")
            for k, v in {"loss": float(loss), **metrics}.items():
                totals[k] = totals.get(k, 0.0) + v
        return totals


def train_dpo(
    config: DPOConfig, *, show_progress: bool = True, log: Callable[[str], None] = print
) -> OfflineResult:
    """Run ``rl4gen dpo``: load data and model, reference pass, train, save."""
    require_single_process("dpo")
    train, held_out, info = load_data(load_preferences, config, log)
    policy = load_policy(config, log)
    dpo = DPO(config, policy)
    train_data = PairData(train, policy.tokenizer, config)
    eval_data = PairData(held_out, policy.tokenizer, config) if held_out is not None else None
    dpo.compute_reference(train_data)
    if eval_data is not None:
        dpo.compute_reference(eval_data)
    task_eval = task_evaluator(config, policy)

    def evaluate() -> dict[str, float]:
        metrics = dict(task_eval()) if task_eval is not None else {}
        if eval_data is not None:
            metrics.update(dpo.evaluate(eval_data))
        return metrics

    trainer = OfflineTrainer(
        config,
        "dpo",
        policy,
        len(train_data),
        lambda idx, step: dpo.loss(train_data, idx, len(step)),
        evaluate=evaluate if (task_eval is not None or eval_data is not None) else None,
        info=info,
        show_progress=show_progress,
        log=log,
    )
    return trainer.train()
