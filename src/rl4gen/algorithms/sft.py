"""Supervised fine-tuning with a completion-only loss (as in InstructGPT's SFT stage and TRL's
``completion_only_loss``).

Each example is a prompt and a completion (docs/data.md); the loss is the next-token
cross-entropy of the completion tokens only, averaged over all completion tokens of the step
(TRL's token-level mean). Prompt tokens are context, never targets. Works for the tiny task
models and any local transformers causal LM, with full fine-tuning or LoRA.

Metrics: ``loss``, ``mean_token_accuracy`` (greedy next-token accuracy on completion tokens) and
``num_tokens`` (prompt + completion tokens processed so far), as TRL names them.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor

from rl4gen.data.preferences import Completion, load_sft
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
    task_evaluator,
)
from rl4gen.policies.causal_lm import CausalLMPolicy


class SFTConfig(OfflineConfig):
    """``rl4gen sft``: prompt/completion pairs (docs/data.md) and a causal LM."""


def completion_nll(logits: Tensor, input_ids: Tensor, completion_mask: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Summed next-token NLL over completion targets, their count and how many the argmax gets right.

    ``logits`` (B, L, V) from the model on ``input_ids`` (B, L); position t predicts token t + 1,
    which counts only where ``completion_mask[:, t + 1]`` is 1, so prompt tokens and padding are
    never targets.
    """
    logits = logits[:, :-1, :].float()  # (B, L-1, V)
    targets = input_ids[:, 1:]  # (B, L-1)
    mask = completion_mask[:, 1:].to(logits.dtype)  # (B, L-1)
    nll = torch.nn.functional.cross_entropy(logits.transpose(1, 2), targets, reduction="none")  # (B, L-1)
    correct = (logits.argmax(dim=-1) == targets).to(logits.dtype)
    return (nll * mask).sum(), mask.sum(), (correct * mask).sum().detach()


class SFT:
    """The completion-only loss over micro-batches of a tokenised dataset."""

    def __init__(self, policy: CausalLMPolicy, examples: Sequence[Encoded]) -> None:
        self.policy = policy
        self.examples = list(examples)
        self.tokens = [len(e.ids) - e.completion_start for e in self.examples]  # targets per example

    def loss(self, idx: list[int], step: list[int]) -> tuple[Tensor, dict[str, float]]:
        """NLL of ``idx``'s completion tokens divided by the completion tokens of the whole ``step``."""
        step_tokens = float(sum(self.tokens[i] for i in step))
        ids, attn, comp = collate([self.examples[i] for i in idx], self.policy.pad_token_id, self.policy.device)
        logits = self.policy.model(input_ids=ids, attention_mask=attn).logits
        nll, _, correct = completion_nll(logits, ids, comp)
        return nll / step_tokens, {"mean_token_accuracy": float(correct) / step_tokens, "num_tokens": float(attn.sum())}

    def evaluate(self, batch_size: int) -> dict[str, float]:
        everything = list(range(len(self.examples)))
        loss, acc = 0.0, 0.0
        for start in range(0, len(everything), batch_size):
            part_loss, metrics = self.loss(everything[start : start + batch_size], everything)
            loss += float(part_loss)
            acc += metrics["mean_token_accuracy"]
        return {"loss": loss, "mean_token_accuracy": acc}


def encode_all(rows: Sequence[Completion], tokenizer: object, config: SFTConfig) -> list[Encoded]:
    return [encode_example(tokenizer, r.prompt, r.completion, config.append_eos, config.max_length) for r in rows]


def train_sft(
    config: SFTConfig, *, show_progress: bool = True, log: Callable[[str], None] = print
) -> OfflineResult:
    """Run ``rl4gen sft``: load data and model, train, save."""
    require_single_process("sft")
    train, held_out, info = load_data(load_sft, config, log)
    policy = load_policy(config, log)
    sft = SFT(policy, encode_all(train, policy.tokenizer, config))
    eval_sft = SFT(policy, encode_all(held_out, policy.tokenizer, config)) if held_out is not None else None
    task_eval = task_evaluator(config, policy)

    def evaluate() -> dict[str, float]:
        metrics = dict(task_eval()) if task_eval is not None else {}
        if eval_sft is not None:
            metrics.update(eval_sft.evaluate(config.per_device_eval_batch_size))
        return metrics

    trainer = OfflineTrainer(
        config,
        "sft",
        policy,
        len(train),
        sft.loss,
        evaluate=evaluate if (task_eval is not None or eval_sft is not None) else None,
        info=info,
        show_progress=show_progress,
        log=log,
    )
    return trainer.train()
