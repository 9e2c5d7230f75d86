"""Arithmetic: a character-level tiny GPT answers ``a+b=`` problems; the reward is the exact answer.

The prior is pretrained by maximum likelihood on generated problems for a fixed number of steps,
chosen so that it is right only part of the time on held-out problems; RL with an exact-answer
reward then raises held-out accuracy. Problems are split by a hash of their text: about 5% are
held out and never appear in pretraining or RL.

Said plainly: this task teaches nothing that more supervised steps would not also teach (the data
generator knows every answer). It is here because the reward is exact and cheap and the effect of
RL is easy to measure, not because RL is the efficient route to arithmetic.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import torch
from pydantic import ConfigDict, Field

from rl4gen.models.char_gpt import build_char_tokenizer, build_tiny_gpt
from rl4gen.models.pretrain import pad_right, pretrain_lm
from rl4gen.tasks.base import Task, TinyGPTOptions, save_prior

ALPHABET = "0123456789+-="
Operation = Literal["+", "-"]


def _plus_only() -> list[Operation]:
    return ["+"]


class ArithmeticOptions(TinyGPTOptions):
    model_config = ConfigDict(extra="forbid")

    digits: int = Field(3, ge=1, le=6)
    """Operands have up to this many digits."""
    operations: list[Operation] = Field(default_factory=_plus_only, min_length=1)
    """Operations to draw from; subtraction keeps results non-negative (a >= b)."""
    reverse_answer: bool = True
    """Write the answer's digits least-significant first, the order in which they are computed
    (a small model learns carries far more easily this way)."""
    pad_operands: bool = True
    """Zero-pad operands to ``digits`` characters so digit positions line up ("007+420=")."""
    holdout_every: int = Field(20, ge=2)
    """About one problem in this many (by hash) is held out for evaluation."""
    pretrain_steps: int = Field(220, ge=1)
    """MLE steps of the prior (fixed in advance; never tuned on the held-out score)."""
    pretrain_batch_size: int = Field(128, ge=1)


def _is_heldout(a: int, op: str, b: int, every: int) -> bool:
    return zlib.crc32(f"{a}{op}{b}".encode()) % every == 0


class ArithmeticTask(Task):
    name = "arithmetic"
    Options = ArithmeticOptions
    options: ArithmeticOptions

    def __init__(self, task_args: dict[str, Any] | None = None) -> None:
        super().__init__(task_args)
        self._eval_cache: list[dict[str, str]] | None = None

    # ------------------------------------------------------------------ problems

    def prompt(self, a: int, op: str, b: int) -> str:
        if self.options.pad_operands:
            w = self.options.digits
            return f"{a:0{w}d}{op}{b:0{w}d}="
        return f"{a}{op}{b}="

    def answer(self, a: int, op: str, b: int) -> str:
        value = a + b if op == "+" else a - b
        text = str(value)
        return text[::-1] if self.options.reverse_answer else text

    def _draw(self, generator: torch.Generator, n: int, heldout: bool) -> list[dict[str, str]]:
        o = self.options
        high = 10**o.digits
        out: list[dict[str, str]] = []
        while len(out) < n:
            m = 2 * (n - len(out)) + 8
            ab = torch.randint(0, high, (m, 2), generator=generator).tolist()
            ops = torch.randint(0, len(o.operations), (m,), generator=generator).tolist()
            for (a, b), k in zip(ab, ops):
                op = o.operations[k]
                if op == "-" and a < b:
                    a, b = b, a
                if _is_heldout(a, op, b, o.holdout_every) != heldout:
                    continue
                out.append({"prompt": self.prompt(a, op, b), "answer": self.answer(a, op, b)})
                if len(out) == n:
                    break
        return out

    def train_contexts(self, generator: torch.Generator, n: int) -> list[dict[str, str]]:
        return self._draw(generator, n, heldout=False)

    def eval_contexts(self, n: int) -> list[dict[str, str]]:
        if self._eval_cache is None or len(self._eval_cache) < n:
            self._eval_cache = self._draw(torch.Generator().manual_seed(12345), max(n, 1024), heldout=True)
        return self._eval_cache[:n]

    def evaluate(self, policy: Any, n: int) -> dict[str, float]:
        """Greedy held-out accuracy (exact match), in batches."""
        contexts = self.eval_contexts(n)
        correct = 0
        for i in range(0, len(contexts), 512):
            chunk = contexts[i : i + 512]
            answers = policy.generate(chunk, greedy=True)
            correct += sum(ans.strip() == c["answer"] for ans, c in zip(answers, chunk))
        return {"accuracy": correct / len(contexts)}

    # ------------------------------------------------------------------ recipe

    def max_answer_length(self) -> int:
        return self.options.digits + 2  # digits, a carry, and the end token

    def default_config(self) -> dict[str, Any]:
        return {
            "task": self.name,
            "model": {"path": None},
            # Sampling at 0.5 keeps the groups informative: at 1.0 the prior's diffuse digits make
            # almost every sample wrong (measured: 4% sampled vs 39% greedy accuracy).
            "generation": {"temperature": 0.5, "max_completion_length": self.max_answer_length()},
            "algorithm": {
                "name": "grpo",
                "num_generations": 8,
                "beta": 0.0,
                "epsilon": 0.2,
                "scale_rewards": "group",
                "loss_type": "grpo",
            },
            "rewards": [{"type": "exact_answer", "weight": 1.0}],
            "max_steps": 300,
            "prompts_per_step": 64,
            "learning_rate": 3e-4,
            "warmup_steps": 5,
            # Cosine decay steadies the finish: at a constant 2e-4 the last evaluation wobbled
            # by a few points between seeds (89.3-93.9%); with cosine at 3e-4, 93.8-94.1%.
            "lr_scheduler_type": "cosine",
            "max_grad_norm": 1.0,
            "eval_steps": 50,
            "eval_size": 512,
            "sample_steps": 50,
            "save_steps": 100,
        }

    # ------------------------------------------------------------------ prior

    def pretrain_settings(self) -> dict[str, Any]:
        o = self.options
        return {"task": self.name, "version": 1, **o.model_dump(exclude={"holdout_every"}), "holdout_every": o.holdout_every}

    def build_prior(self, out_dir: Path, log: Callable[[str], None]) -> dict[str, Any]:
        o = self.options
        tokenizer = build_char_tokenizer(ALPHABET)
        max_len = 2 * o.digits + 2 + self.max_answer_length()
        torch.manual_seed(o.pretrain_seed)
        model = build_tiny_gpt(
            len(tokenizer), n_positions=max(32, max_len + 4), n_embd=o.n_embd, n_layer=o.n_layer, n_head=o.n_head
        )
        eos = tokenizer.eos_token_id
        pad = tokenizer.pad_token_id

        def next_batch(gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
            problems = self.train_contexts(gen, o.pretrain_batch_size)
            rows, masks = [], []
            for p in problems:
                prompt = tokenizer(p["prompt"], add_special_tokens=False).input_ids
                answer = tokenizer(p["answer"], add_special_tokens=False).input_ids + [eos]
                rows.append(prompt + answer)
                masks.append([0] * len(prompt) + [1] * len(answer))
            return pad_right(rows, masks, pad)

        result = pretrain_lm(
            model,
            next_batch,
            steps=o.pretrain_steps,
            learning_rate=1e-3,
            seed=o.pretrain_seed,
            on_log=lambda s, loss: log(f"pretrain arithmetic: step {s}/{o.pretrain_steps} loss {loss:.3f}"),
        )
        save_prior(model, tokenizer, out_dir)
        return {"steps": result.steps, "final_loss": result.final_loss, "seconds": round(result.seconds, 1)}
