"""Maximum-likelihood pretraining of a small causal LM, used to build task priors."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor, nn

Batch = tuple[Tensor, Tensor]  # input_ids (B, L), loss_mask (B, L): 1 where the token is a target


def pad_right(rows: list[list[int]], masks: list[list[int]], pad: int) -> Batch:
    """Token rows and their loss masks as right-padded tensors ``(N, L)``, L the longest row."""
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, (r, m) in enumerate(zip(rows, masks)):
        ids[i, : len(r)] = torch.tensor(r, dtype=torch.long)
        mask[i, : len(m)] = torch.tensor(m, dtype=torch.long)
    return ids, mask


def with_start_token(rows: Tensor, start_id: int) -> Batch:
    """Fixed-length token rows ``(N, L)`` behind a start token, as ``(N, L+1)`` ids and a loss
    mask that leaves the start token out (it is never a target)."""
    ids = torch.cat([torch.full((rows.shape[0], 1), start_id, dtype=torch.long), rows], dim=1)
    mask = torch.ones_like(ids)
    mask[:, 0] = 0
    return ids, mask


@dataclass
class PretrainResult:
    steps: int
    final_loss: float
    seconds: float


def lm_loss(model: nn.Module, input_ids: Tensor, loss_mask: Tensor, attention_mask: Tensor | None = None) -> Tensor:
    """Mean next-token cross-entropy over positions whose *target* has ``loss_mask`` 1."""
    if attention_mask is None:
        # Right padding only ever follows real tokens, so a causal model never attends to it from a
        # position whose target counts; the loss mask removes padded targets.
        attention_mask = torch.ones_like(input_ids)
    logits = model(input_ids=input_ids, attention_mask=attention_mask).logits[:, :-1, :]  # (B, L-1, V)
    targets = input_ids[:, 1:]
    weights = loss_mask[:, 1:].float()
    nll = nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1), reduction="none")
    return (nll * weights.reshape(-1)).sum() / weights.sum().clamp(min=1.0)


def pretrain_lm(
    model: nn.Module,
    next_batch: Callable[[torch.Generator], Batch],
    *,
    steps: int,
    learning_rate: float,
    seed: int,
    warmup_steps: int = 50,
    weight_decay: float = 0.01,
    on_log: Callable[[int, float], None] | None = None,
    log_every: int = 100,
) -> PretrainResult:
    """Train ``model`` for exactly ``steps`` AdamW steps: linear warm-up, then a constant rate.

    The step count is fixed in advance: pretraining never stops on a held-out metric. With a
    constant rate, the model after ``k`` steps is the same whatever ``steps`` is, so a prior's
    step count can be chosen from one training curve.
    """
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=learning_rate, weight_decay=weight_decay, betas=(0.9, 0.98))

    def lr_at(step: int) -> float:
        if step < warmup_steps:
            return learning_rate * (step + 1) / warmup_steps
        return learning_rate

    model.train()
    start = time.perf_counter()
    loss_value = float("nan")
    for step in range(steps):
        for group in opt.param_groups:
            group["lr"] = lr_at(step)
        input_ids, loss_mask = next_batch(gen)
        loss = lm_loss(model, input_ids, loss_mask)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        loss_value = float(loss.item())
        if on_log is not None and (step + 1) % log_every == 0:
            on_log(step + 1, loss_value)
    model.eval()
    return PretrainResult(steps=steps, final_loss=loss_value, seconds=time.perf_counter() - start)
