"""SeqGAN's synthetic-oracle benchmark: learn to imitate a random LSTM whose likelihood is known.

A fixed random LSTM (:class:`~rl4gen.gan.oracle.OracleLSTM`) writes ``num_train`` training
sequences (the paper: 10,000), plus held-out validation and test sets drawn with other seeds. The
generator is a tiny GPT over the oracle's tokens (one character per token), pretrained by MLE on
the training set. Evaluation samples sequences and reports their mean per-token NLL under the
oracle (``oracle_nll``: sample quality, lower is better) and the generator's per-token NLL of the
held-out test set (``test_nll``: coverage/diversity, lower is better). ``rl4gen train`` runs this
task's recipe with :class:`~rl4gen.gan.seqgan.SeqGANTrainer`.

Defaults are CPU-sized (vocabulary 100); the paper's setting is ``vocab_size: 5000, seq_len: 20,
oracle_embed_dim: 32, oracle_hidden_dim: 32``.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import torch
from pydantic import ConfigDict, Field

from rl4gen.gan.oracle import OracleLSTM, oracle_data, token_alphabet, token_text
from rl4gen.models.char_gpt import build_char_tokenizer, build_tiny_gpt
from rl4gen.models.pretrain import lm_loss, pretrain_lm, with_start_token
from rl4gen.tasks.base import Task, TinyGPTOptions, mean_score, sample_unconditional, save_prior


class SeqGANOracleOptions(TinyGPTOptions):
    model_config = ConfigDict(extra="forbid")

    vocab_size: int = Field(100, ge=2, le=20000)
    """Oracle vocabulary (the paper: 5,000)."""
    seq_len: int = Field(20, ge=2, le=200)
    """Tokens per sequence (the paper: 20)."""
    oracle_embed_dim: int = Field(32, ge=1)
    """Oracle embedding size (the paper: 32)."""
    oracle_hidden_dim: int = Field(32, ge=1)
    """Oracle LSTM hidden size (the paper: 32)."""
    oracle_seed: int = 0
    """Seed of the oracle's weights: the same seed is the same oracle."""
    num_train: int = Field(10_000, ge=10)
    """Training sequences drawn from the oracle (the paper: 10,000)."""
    num_heldout: int = Field(1000, ge=10)
    """Sequences in each of the validation and test sets."""
    n_layer: int = Field(1, ge=1)
    """Transformer blocks of the generator."""
    n_embd: int = Field(64, ge=8)
    """Width of the generator (the paper's LSTM generator has 32 units)."""
    n_head: int = Field(2, ge=1)
    """Attention heads of the generator."""
    pretrain_steps: int = Field(1000, ge=1)
    """MLE steps of the generator (fixed in advance)."""
    pretrain_batch_size: int = Field(64, ge=1)
    pretrain_learning_rate: float = Field(1e-3, gt=0)
    num_rollouts: int = Field(16, ge=1)
    """Monte Carlo completions per prefix (the paper's N = 16)."""
    rollout_update_rate: float = Field(0.8, ge=0, lt=1)
    """The roll-out copy follows the generator as θ' ← r θ' + (1 - r) θ (the paper: 0.8)."""
    baseline: Literal["none", "mean"] = "mean"
    """Per-token advantages: the raw Q (the paper) or Q minus its batch mean at each position."""
    discriminator_pretrain_steps: int = Field(100, ge=0)
    """Discriminator updates on MLE samples before adversarial training."""


class SeqGANOracleTask(Task):
    name = "seqgan_oracle"
    Options = SeqGANOracleOptions
    options: SeqGANOracleOptions

    def __init__(self, task_args: dict[str, Any] | None = None) -> None:
        super().__init__(task_args)
        self._oracle: OracleLSTM | None = None
        self._data: dict[str, torch.Tensor] = {}

    # ------------------------------------------------------------------ data

    def oracle(self) -> OracleLSTM:
        if self._oracle is None:
            o = self.options
            self._oracle = OracleLSTM(o.vocab_size, o.seq_len, o.oracle_embed_dim, o.oracle_hidden_dim, o.oracle_seed)
        return self._oracle

    def data(self, split: Literal["train", "validation", "test"]) -> torch.Tensor:  # (N, L)
        """The oracle's sequences of one split (each split has its own seed)."""
        if split not in self._data:
            o = self.options
            n = o.num_train if split == "train" else o.num_heldout
            seed = {"train": 1, "validation": 2, "test": 3}[split]
            self._data[split] = oracle_data(self.oracle(), n, 1000 * o.oracle_seed + seed)
        return self._data[split]

    def texts(self, split: Literal["train", "validation", "test"]) -> list[str]:
        return [token_text(row) for row in self.data(split)]

    def real_samples(self, generator: torch.Generator, n: int) -> list[str]:
        """``n`` training sequences drawn with replacement (the discriminator's real batch)."""
        train = self.data("train")
        idx = torch.randint(0, train.shape[0], (n,), generator=generator)
        return [token_text(row) for row in train[idx]]

    def train_contexts(self, generator: torch.Generator, n: int) -> list[dict[str, str]]:
        return [{"prompt": ""} for _ in range(n)]

    def eval_contexts(self, n: int) -> list[dict[str, str]]:
        return [{"prompt": ""} for _ in range(n)]

    # ------------------------------------------------------------------ evaluation

    def evaluate(self, policy: Any, n: int, seed: int = 777, split: Literal["validation", "test"] = "test") -> dict[str, float]:
        """``oracle_nll`` of ``n`` samples (fixed ``seed``), the policy's ``test_nll`` on the
        held-out ``split``, and ``full_length`` (fraction of samples with all ``seq_len`` tokens)."""
        samples = sample_unconditional(policy, n, seed)
        heldout = self.texts(split)[:n]
        return {
            "oracle_nll": float(self.oracle().nll_of_texts(samples).mean()),
            "test_nll": -mean_score(policy, heldout),
            "full_length": sum(len(s) >= self.options.seq_len for s in samples) / max(len(samples), 1),
        }

    def real_data_nll(self, split: Literal["validation", "test"] = "test") -> float:
        """The oracle NLL of its own held-out samples: the floor a perfect generator reaches."""
        return float(self.oracle().nll(self.data(split)).mean())

    # ------------------------------------------------------------------ recipe

    def default_config(self) -> dict[str, Any]:
        o = self.options
        return {
            "task": self.name,
            "model": {"path": None},
            "generation": {"temperature": 1.0, "max_completion_length": o.seq_len},
            "algorithm": {"name": "reinforce", "num_generations": 8, "beta": 0.0, "loss_type": "dapo"},
            "rewards": [{"type": "sequence_discriminator", "args": {"vocab_size": o.vocab_size, "seq_len": o.seq_len, "learning_rate": 1e-3, "k_steps": 3}}],
            "max_steps": 100,
            "prompts_per_step": 8,
            "learning_rate": 1e-4,
            "max_grad_norm": 5.0,
            "eval_steps": 25,
            "eval_size": 1000,
            "sample_steps": 25,
            "save_steps": 100,
        }

    # ------------------------------------------------------------------ prior

    def pretrain_settings(self) -> dict[str, Any]:
        o = self.options
        keys = ("vocab_size", "seq_len", "oracle_embed_dim", "oracle_hidden_dim", "oracle_seed", "num_train", "pretrain_steps", "pretrain_batch_size", "pretrain_learning_rate", "n_layer", "n_embd", "n_head", "pretrain_seed")
        return {"task": self.name, "version": 1, **{k: getattr(o, k) for k in keys}}

    def build_prior(self, out_dir: Path, log: Callable[[str], None]) -> dict[str, Any]:
        o = self.options
        tokenizer = build_char_tokenizer(token_alphabet(o.vocab_size))
        bos = tokenizer.eos_token_id
        offset = tokenizer.get_vocab()[token_text([0])]  # oracle token t is id offset + t
        train = self.data("train") + offset
        valid = self.data("validation") + offset
        torch.manual_seed(o.pretrain_seed)
        model = build_tiny_gpt(len(tokenizer), n_positions=o.seq_len + 8, n_embd=o.n_embd, n_layer=o.n_layer, n_head=o.n_head)

        def next_batch(gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
            return with_start_token(train[torch.randint(0, train.shape[0], (o.pretrain_batch_size,), generator=gen)], bos)

        result = pretrain_lm(
            model,
            next_batch,
            steps=o.pretrain_steps,
            learning_rate=o.pretrain_learning_rate,
            seed=o.pretrain_seed,
            on_log=lambda s, loss: log(f"pretrain seqgan_oracle: step {s}/{o.pretrain_steps} loss {loss:.3f}"),
        )
        with torch.inference_mode():
            val_nll = float(lm_loss(model, *with_start_token(valid, bos)))
        log(f"seqgan_oracle generator: validation NLL {val_nll:.3f} per token")
        save_prior(model, tokenizer, out_dir)
        return {"steps": result.steps, "final_loss": result.final_loss, "validation_nll": val_nll, "seconds": round(result.seconds, 1)}


__all__ = ["SeqGANOracleOptions", "SeqGANOracleTask"]
