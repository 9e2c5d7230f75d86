"""Dialogue: a tiny chat model, trained by SFT on a synthetic corpus, is tuned with RL toward a
simulated user's satisfaction (on topic, helpful, not repetitive, not too long).

The corpus (:mod:`rl4gen.tasks.dialogue_corpus`) mixes helpful, vague, off-topic and rambling
replies, so the SFT model (the prior) satisfies the user only part of the time. Questions are
split by a hash: held-out questions never appear in SFT or RL and are what evaluation asks.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import torch
from pydantic import Field

from rl4gen.models.char_gpt import build_tiny_gpt, train_bpe_tokenizer
from rl4gen.models.pretrain import pad_right, pretrain_lm
from rl4gen.rewards.dialogue import SATISFACTION_PARTS
from rl4gen.tasks.base import Task, TinyGPTOptions, save_prior
from rl4gen.tasks.dialogue_corpus import GREETINGS, make_dialogues, prompt_of, questions

CHATML = "<|im_start|>user\n{user}<|im_end|>\n<|im_start|>assistant\n"


class DialogueOptions(TinyGPTOptions):
    holdout_every: int = Field(5, ge=2)
    """About one question in this many is held out for evaluation."""
    corpus_size: int = Field(6000, ge=100)
    """Dialogues in the SFT corpus."""
    vocab_size: int = Field(512, ge=64)
    """Byte-level BPE types."""
    max_words: int = Field(20, ge=1)
    """Replies longer than this start losing the ``concise`` reward."""
    pretrain_steps: int = Field(300, ge=1)
    """SFT steps of the prior (fixed in advance)."""
    pretrain_batch_size: int = Field(64, ge=1)
    prompt_format: Literal["plain", "chatml"] = "plain"
    """How a question is put to the model: plain (``user: ...\\nbot:``, the tiny prior's format) or
    chatml (``<|im_start|>user ...``, the chat template of SmolLM2-Instruct and other ChatML models)."""


class DialogueTask(Task):
    name = "dialogue"
    Options = DialogueOptions
    options: DialogueOptions

    def __init__(self, task_args: dict[str, Any] | None = None) -> None:
        super().__init__(task_args)
        self._user: Any = None

    # ------------------------------------------------------------------ data

    def _contexts(self, pairs: list[tuple[str, str]], greeting_idx: list[int], pair_idx: list[int]) -> list[dict[str, str]]:
        out = []
        for i, g in zip(pair_idx, greeting_idx):
            topic, question = pairs[i]
            user = GREETINGS[g] + question
            prompt = prompt_of(user) if self.options.prompt_format == "plain" else CHATML.format(user=user)
            out.append({"prompt": prompt, "user": user, "topic": topic})
        return out

    def train_contexts(self, generator: torch.Generator, n: int) -> list[dict[str, str]]:
        pairs = questions(False, self.options.holdout_every)
        idx = torch.randint(0, len(pairs), (n,), generator=generator).tolist()
        greet = torch.randint(0, len(GREETINGS), (n,), generator=generator).tolist()
        return self._contexts(pairs, greet, idx)

    def eval_contexts(self, n: int) -> list[dict[str, str]]:
        pairs = questions(True, self.options.holdout_every)
        gen = torch.Generator().manual_seed(2468)
        idx = [i % len(pairs) for i in range(n)]
        greet = torch.randint(0, len(GREETINGS), (n,), generator=gen).tolist()
        return self._contexts(pairs, greet, idx)

    # ------------------------------------------------------------------ evaluation

    def user(self) -> Any:
        """The simulated user: a :class:`~rl4gen.rewards.dialogue.SatisfactionReward` over all four parts."""
        if self._user is None:
            from rl4gen.rewards.dialogue import SatisfactionReward

            self._user = SatisfactionReward(max_words=self.options.max_words)
        return self._user

    def evaluate(self, policy: Any, n: int) -> dict[str, float]:
        """One reply per held-out question (fixed seed): the simulated user's ``satisfaction``
        (mean of the four parts, each also reported), reply length in words and, when the policy
        has a reference, the per-token KL (k3) to it."""
        contexts = self.eval_contexts(n)
        rollout = policy.sample(contexts, 1, generator=torch.Generator(device=policy.device).manual_seed(777))
        parts = {k: sum(v) / len(v) for k, v in self.user().parts(rollout.samples, contexts).items()}
        metrics = {"satisfaction": sum(parts.values()) / len(parts), **parts}
        metrics["reply_words"] = sum(len(s.split()) for s in rollout.samples) / len(rollout.samples)
        if getattr(policy, "use_reference", False):
            from rl4gen.core.kl import kl_estimate
            from rl4gen.core.losses import masked_mean

            ref = policy.ref_log_probs(rollout)
            metrics["kl"] = float(masked_mean(kl_estimate(rollout.logprobs, ref, "k3"), rollout.mask))
        return metrics

    # ------------------------------------------------------------------ recipe

    def default_config(self) -> dict[str, Any]:
        rewards: list[dict[str, Any]] = [{"type": name, "weight": 1.0} for name in SATISFACTION_PARTS]
        rewards[-1]["args"] = {"max_words": self.options.max_words}
        return {
            "task": self.name,
            "model": {"path": None},
            "generation": {"temperature": 1.0, "max_completion_length": 40},
            "algorithm": {"name": "grpo", "num_generations": 8, "beta": 0.05, "loss_type": "grpo"},
            "rewards": rewards,
            "max_steps": 80,
            "prompts_per_step": 16,
            "learning_rate": 3e-4,
            "warmup_steps": 5,
            "lr_scheduler_type": "cosine",
            "eval_steps": 20,
            "eval_size": 128,
            "sample_steps": 20,
            "save_steps": 40,
            "reference_metrics": True,
        }

    # ------------------------------------------------------------------ prior (SFT)

    def pretrain_settings(self) -> dict[str, Any]:
        return {"task": self.name, "version": 1, **self.options.model_dump(exclude={"max_words", "prompt_format"})}

    def build_prior(self, out_dir: Path, log: Callable[[str], None]) -> dict[str, Any]:
        o = self.options
        corpus = make_dialogues(o.corpus_size, seed=o.pretrain_seed, heldout=False, every=o.holdout_every)
        texts = [prompt_of(d.user) + " " + d.reply for d in corpus]
        tokenizer = train_bpe_tokenizer(texts, o.vocab_size)
        eos, pad = tokenizer.eos_token_id, tokenizer.pad_token_id
        rows, masks = [], []
        for d in corpus:
            prompt = tokenizer(prompt_of(d.user), add_special_tokens=False).input_ids
            reply = tokenizer(" " + d.reply, add_special_tokens=False).input_ids + [eos]
            rows.append(prompt + reply)
            masks.append([0] * len(prompt) + [1] * len(reply))
        ids, mask = pad_right(rows, masks, pad)
        width = ids.shape[1]
        log(f"dialogue prior: {len(corpus)} dialogues, {width} tokens at most, BPE {len(tokenizer)} types")
        torch.manual_seed(o.pretrain_seed)
        model = build_tiny_gpt(len(tokenizer), n_positions=max(128, width + 48), n_embd=o.n_embd, n_layer=o.n_layer, n_head=o.n_head)

        lengths = torch.tensor([len(r) for r in rows])

        def next_batch(gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
            idx = torch.randint(0, ids.shape[0], (o.pretrain_batch_size,), generator=gen)
            w = int(lengths[idx].max())  # right padding past the longest row of the batch is dropped
            return ids[idx, :w], mask[idx, :w]

        result = pretrain_lm(
            model, next_batch, steps=o.pretrain_steps, learning_rate=1e-3, seed=o.pretrain_seed,
            on_log=lambda s, loss: log(f"sft dialogue: step {s}/{o.pretrain_steps} loss {loss:.3f}"),
        )
        save_prior(model, tokenizer, out_dir)
        kinds = {k: sum(d.kind == k for d in corpus) for k in ("helpful", "vague", "off_topic", "rambling")}
        return {"steps": result.steps, "final_loss": result.final_loss, "seconds": round(result.seconds, 1), "corpus_kinds": kinds}
