"""Learned reward models: a transformers sequence-classification model with one or more scalar
heads, trained by ``rl4gen reward train`` and used as a :class:`~rl4gen.core.Reward` by path.

An ensemble is every head of every model given: its mean is the reward, its spread (standard
deviation over members) a measure of the models' disagreement. ``uncertainty_penalty`` subtracts
``penalty x spread`` from the mean, so the policy gains nothing from regions where the members
disagree — a first defence against reward hacking (Coste et al. 2024, "Reward model ensembles
help mitigate overoptimization").
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from rl4gen.rewards.base import register_reward

SETTINGS_FILE = "reward_model.json"


@dataclass
class EnsembleScore:
    members: Tensor  # (N, M) one column per head of every model
    mean: Tensor  # (N,)
    spread: Tensor  # (N,) std over members (unbiased; 0 with one member)


class RewardModel:
    """A sequence-classification model whose ``num_labels`` outputs are independent reward heads.

    The score of a text is read at its last non-padding token (transformers' pooling). Texts are
    tokenised exactly as in training: prompt and completion apart, end token appended when the
    model was trained that way (settings saved in ``reward_model.json``).
    """

    def __init__(self, model: Any, tokenizer: Any, *, append_eos: bool = True, max_length: int | None = None) -> None:
        self.model: Any = model
        self.tokenizer = tokenizer
        self.append_eos = append_eos
        self.max_length = max_length
        self.source: str | None = None
        model.config.pad_token_id = tokenizer.pad_token_id  # pooling reads the last non-pad token

    @property
    def num_heads(self) -> int:
        return int(self.model.config.num_labels)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @classmethod
    def from_backbone(cls, path: str, num_heads: int, *, append_eos: bool = True, max_length: int | None = None) -> RewardModel:
        """Fresh heads on a pretrained transformer (a causal LM's folder works: its LM head is dropped)."""
        from transformers import AutoModelForSequenceClassification

        from rl4gen import quiet_transformers
        from rl4gen.policies.causal_lm import load_model_and_tokenizer

        quiet_transformers()
        _, tokenizer = load_model_and_tokenizer(path)  # the same checks and messages as for policies
        model = AutoModelForSequenceClassification.from_pretrained(path, num_labels=num_heads, dtype=torch.float32)
        rm = cls(model, tokenizer, append_eos=append_eos, max_length=max_length)
        rm.source = path
        return rm

    @classmethod
    def load(cls, path: str | Path) -> RewardModel:
        """A reward model saved by :meth:`save` (or a run folder of ``rl4gen reward train``)."""
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        from rl4gen import quiet_transformers
        from rl4gen.config import ConfigError

        quiet_transformers()
        p = Path(path)
        if (p / "model" / SETTINGS_FILE).is_file():
            p = p / "model"
        if not (p / SETTINGS_FILE).is_file():
            raise ConfigError(
                f"{str(path)!r} is not a reward model (no {SETTINGS_FILE}): pass the model/ folder of an "
                "`rl4gen reward train` run."
            )
        settings = json.loads((p / SETTINGS_FILE).read_text())
        model = AutoModelForSequenceClassification.from_pretrained(str(p), dtype=torch.float32)
        tokenizer = AutoTokenizer.from_pretrained(str(p))
        if tokenizer.pad_token_id is None:
            tokenizer.pad_token = tokenizer.eos_token
        rm = cls(model.eval(), tokenizer, append_eos=settings["append_eos"], max_length=settings["max_length"])
        rm.source = str(p)
        return rm

    def save(self, directory: str | Path) -> None:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        self.model.save_pretrained(str(directory), safe_serialization=True)
        self.tokenizer.save_pretrained(str(directory))
        settings = {"num_heads": self.num_heads, "append_eos": self.append_eos, "max_length": self.max_length}
        (directory / SETTINGS_FILE).write_text(json.dumps(settings, indent=2))

    def trainable_parameters(self) -> list[nn.Parameter]:
        return [p for p in self.model.parameters() if p.requires_grad]

    def encode(self, prompts: Sequence[str], completions: Sequence[str]) -> list[Any]:
        from rl4gen.offline import encode_example

        return [
            encode_example(self.tokenizer, p, c, self.append_eos, self.max_length)
            for p, c in zip(prompts, completions)
        ]

    def forward(self, examples: Sequence[Any]) -> Tensor:  # (B, H)
        """Head outputs for encoded examples (with gradients when enabled)."""
        from rl4gen.offline import collate

        ids, attn, _ = collate(examples, int(self.tokenizer.pad_token_id), self.device)
        return self.model(input_ids=ids, attention_mask=attn).logits.float()

    def scores(self, prompts: Sequence[str], completions: Sequence[str], batch_size: int = 64) -> Tensor:  # (N, H)
        examples = self.encode(prompts, completions)
        with torch.inference_mode():
            parts = [self.forward(examples[i : i + batch_size]) for i in range(0, len(examples), batch_size)]
        return torch.cat(parts).cpu() if parts else torch.zeros(0, self.num_heads)


@register_reward("reward_model")
class LearnedReward:
    """Reward = ensemble mean - ``uncertainty_penalty`` x ensemble spread.

    Args:
        path: a reward model folder (or run folder), or a list of them (an ensemble of models;
            every head of every model is one member).
        uncertainty_penalty: weight of the spread subtracted from the mean (0 = plain mean).
        batch_size: texts per forward pass.
    """

    def __init__(self, path: str | list[str], uncertainty_penalty: float = 0.0, batch_size: int = 64) -> None:
        paths = [path] if isinstance(path, str) else list(path)
        if not paths:
            raise ValueError("path must name at least one reward model")
        if uncertainty_penalty < 0:
            raise ValueError(f"uncertainty_penalty must be >= 0, got {uncertainty_penalty}")
        self.name = "reward_model"
        self.models = [RewardModel.load(p) for p in paths]
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        for m in self.models:
            m.model.to(device).eval()
        self.uncertainty_penalty = float(uncertainty_penalty)
        self.batch_size = batch_size

    def score(self, samples: Sequence[str], contexts: Sequence[Any]) -> EnsembleScore:
        """Every member's score, their mean and spread, for completions of the given contexts."""
        from rl4gen.policies.causal_lm import prompt_text

        prompts = [prompt_text(c) for c in contexts]
        members = torch.cat([m.scores(prompts, list(samples), self.batch_size) for m in self.models], dim=1)
        spread = members.std(dim=1) if members.shape[1] > 1 else torch.zeros(members.shape[0])
        return EnsembleScore(members, members.mean(dim=1), spread)

    def __call__(self, samples: Sequence[Any], contexts: Sequence[Any], **info: Any) -> list[float]:
        s = self.score([str(x) for x in samples], contexts)
        return (s.mean - self.uncertainty_penalty * s.spread).tolist()
