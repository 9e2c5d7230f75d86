"""Learned reward models: a transformer with one or more scalar heads (a sequence-classification
model, or a value head on a causal LM), trained by ``rl4gen reward train`` and used as a
:class:`~rl4gen.core.Reward` by path.

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
from typing import Any, Literal

import torch
from torch import Tensor, nn

from rl4gen.rewards.base import register_reward

SETTINGS_FILE = "reward_model.json"


@dataclass
class EnsembleScore:
    members: Tensor  # (N, M) one column per head of every model
    mean: Tensor  # (N,)
    spread: Tensor  # (N,) std over members (unbiased; 0 with one member)


HeadType = Literal["classification", "value"]


def _model_folder(path: str | Path) -> Path:
    """A reward model folder, or the ``model/`` folder of a run folder."""
    p = Path(path)
    return p / "model" if (p / "model" / SETTINGS_FILE).is_file() else p
VALUE_HEAD_FILE = "value_head.safetensors"


class ValueHeadLM(nn.Module):
    """A causal LM with scalar heads on its last hidden state (the LM head is kept, so the same
    weights can still generate), read at each row's last real token (right padding)."""

    def __init__(self, lm: Any, num_heads: int) -> None:
        super().__init__()
        self.lm = lm
        self.config = lm.config
        self.value_head = nn.Linear(int(lm.config.hidden_size), num_heads)
        nn.init.normal_(self.value_head.weight, std=1.0 / (int(lm.config.hidden_size) + 1))
        nn.init.zeros_(self.value_head.bias)

    def forward(self, input_ids: Tensor, attention_mask: Tensor) -> Tensor:  # (B, H)
        out = self.lm(input_ids=input_ids, attention_mask=attention_mask, output_hidden_states=True)
        hidden = out.hidden_states[-1]  # (B, L, C)
        last = attention_mask.long().sum(dim=1) - 1  # (B,)
        return self.value_head(hidden[torch.arange(hidden.shape[0], device=hidden.device), last].float())


class RewardModel:
    """A transformer with one or more independent scalar reward heads.

    Two kinds: ``classification`` is ``AutoModelForSequenceClassification`` with ``num_labels``
    heads, scored at the last non-padding token (transformers' pooling); ``value`` is
    :class:`ValueHeadLM`, a causal LM with a linear value head on its last hidden state. Texts are
    tokenised exactly as in training: prompt and completion apart, end token appended when the
    model was trained that way (settings saved in ``reward_model.json``).
    """

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        *,
        head: HeadType = "classification",
        append_eos: bool = True,
        max_length: int | None = None,
    ) -> None:
        self.model: Any = model
        self.tokenizer = tokenizer
        self.head: HeadType = head
        self.append_eos = append_eos
        self.max_length = max_length
        self.source: str | None = None
        model.config.pad_token_id = tokenizer.pad_token_id  # pooling reads the last non-pad token

    @property
    def num_heads(self) -> int:
        if isinstance(self.model, ValueHeadLM):
            return int(self.model.value_head.out_features)
        return int(self.model.config.num_labels)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @classmethod
    def from_backbone(
        cls,
        path: str,
        num_heads: int,
        *,
        head: HeadType = "classification",
        append_eos: bool = True,
        max_length: int | None = None,
    ) -> RewardModel:
        """Fresh heads on a pretrained transformer. For ``classification`` a causal LM's folder
        works too (its LM head is dropped); ``value`` needs a causal LM."""
        from transformers import AutoModelForSequenceClassification

        from rl4gen import quiet_transformers
        from rl4gen.policies.causal_lm import load_model_and_tokenizer

        quiet_transformers()
        lm, tokenizer = load_model_and_tokenizer(path)  # the same checks and messages as for policies
        model: Any
        if head == "value":
            model = ValueHeadLM(lm, num_heads)
        else:
            del lm
            model = AutoModelForSequenceClassification.from_pretrained(path, num_labels=num_heads, dtype=torch.float32)
        rm = cls(model, tokenizer, head=head, append_eos=append_eos, max_length=max_length)
        rm.source = path
        return rm

    @classmethod
    def load(cls, path: str | Path) -> RewardModel:
        """A reward model saved by :meth:`save` (or a run folder of ``rl4gen reward train``)."""
        from transformers import (
            AutoModelForCausalLM,
            AutoModelForSequenceClassification,
            AutoTokenizer,
        )

        from rl4gen import quiet_transformers
        from rl4gen.config import ConfigError

        quiet_transformers()
        p = _model_folder(path)
        if not (p / SETTINGS_FILE).is_file():
            raise ConfigError(
                f"{str(path)!r} is not a reward model (no {SETTINGS_FILE}): pass the model/ folder of an "
                "`rl4gen reward train` run."
            )
        settings = json.loads((p / SETTINGS_FILE).read_text())
        head: HeadType = settings.get("head", "classification")
        model: Any
        if head == "value":
            from safetensors.torch import load_file

            lm = AutoModelForCausalLM.from_pretrained(str(p), dtype=torch.float32)
            model = ValueHeadLM(lm, int(settings["num_heads"]))
            model.value_head.load_state_dict(load_file(str(p / VALUE_HEAD_FILE)))
        else:
            model = AutoModelForSequenceClassification.from_pretrained(str(p), dtype=torch.float32)
        tokenizer = AutoTokenizer.from_pretrained(str(p))
        if tokenizer.pad_token_id is None:
            tokenizer.pad_token = tokenizer.eos_token
        rm = cls(model.eval(), tokenizer, head=head, append_eos=settings["append_eos"], max_length=settings["max_length"])
        rm.source = str(p)
        return rm

    def save(self, directory: str | Path) -> None:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        if isinstance(self.model, ValueHeadLM):
            from safetensors.torch import save_file

            self.model.lm.save_pretrained(str(directory), safe_serialization=True)
            state = {k: v.detach().cpu().contiguous() for k, v in self.model.value_head.state_dict().items()}
            save_file(state, str(directory / VALUE_HEAD_FILE))
        else:
            self.model.save_pretrained(str(directory), safe_serialization=True)
        self.tokenizer.save_pretrained(str(directory))
        settings = {
            "head": self.head,
            "num_heads": self.num_heads,
            "append_eos": self.append_eos,
            "max_length": self.max_length,
        }
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
        if isinstance(self.model, ValueHeadLM):
            return self.model(ids, attn)
        return self.model(input_ids=ids, attention_mask=attn).logits.float()

    def scores(self, prompts: Sequence[str], completions: Sequence[str], batch_size: int = 64) -> Tensor:  # (N, H)
        examples = self.encode(prompts, completions)
        with torch.inference_mode():
            parts = [self.forward(examples[i : i + batch_size]) for i in range(0, len(examples), batch_size)]
        return torch.cat(parts).cpu() if parts else torch.zeros(0, self.num_heads)


class Ensemble:
    """Loaded reward models scored together; the last call's scores are kept, so several rewards
    reading the same ensemble (the reward and its spread as a logged component) score once."""

    def __init__(self, paths: Sequence[str]) -> None:
        self.models = [RewardModel.load(p) for p in paths]
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        for m in self.models:
            m.model.to(device).eval()
        self._last: tuple[Any, EnsembleScore] | None = None

    def score(self, prompts: Sequence[str], completions: Sequence[str], batch_size: int) -> EnsembleScore:
        key = (tuple(prompts), tuple(completions))
        if self._last is not None and self._last[0] == key:
            return self._last[1]
        members = torch.cat([m.scores(prompts, completions, batch_size) for m in self.models], dim=1)
        spread = members.std(dim=1) if members.shape[1] > 1 else torch.zeros(members.shape[0])
        result = EnsembleScore(members, members.mean(dim=1), spread)
        self._last = (key, result)
        return result


_ENSEMBLES: dict[tuple[Any, ...], Ensemble] = {}


def _ensemble(paths: Sequence[str]) -> Ensemble:
    """One :class:`Ensemble` per set of folders in this process (rewards naming the same models
    share them); a folder saved again since is loaded again."""
    folders = [_model_folder(p) for p in paths]
    settings = [f / SETTINGS_FILE for f in folders]
    key = tuple((str(f.resolve()), s.stat().st_mtime_ns if s.is_file() else None) for f, s in zip(folders, settings))
    if key not in _ENSEMBLES:
        _ENSEMBLES[key] = Ensemble(paths)
    return _ENSEMBLES[key]


Output = Literal["reward", "mean", "spread"]


@register_reward("reward_model")
class LearnedReward:
    """Reward = ensemble mean - ``uncertainty_penalty`` x ensemble spread.

    Args:
        path: a reward model folder (or run folder), or a list of them (an ensemble of models;
            every head of every model is one member).
        uncertainty_penalty: weight of the spread subtracted from the mean (0 = plain mean).
        batch_size: texts per forward pass.
        output: ``reward`` (mean - penalty x spread), or ``mean`` or ``spread`` alone — add the
            same models a second time with ``output: spread`` and weight 0 to log the spread as
            ``rewards/{name}/mean``; the models are loaded and run once for both.
    """

    def __init__(
        self,
        path: str | list[str],
        uncertainty_penalty: float = 0.0,
        batch_size: int = 64,
        output: Output = "reward",
    ) -> None:
        paths = [path] if isinstance(path, str) else list(path)
        if not paths:
            raise ValueError("path must name at least one reward model")
        if uncertainty_penalty < 0:
            raise ValueError(f"uncertainty_penalty must be >= 0, got {uncertainty_penalty}")
        if output not in ("reward", "mean", "spread"):
            raise ValueError(f"output must be 'reward', 'mean' or 'spread', got {output!r}")
        self.name = "reward_model" if output == "reward" else f"reward_model_{output}"
        self.ensemble = _ensemble(paths)
        self.uncertainty_penalty = float(uncertainty_penalty)
        self.batch_size = batch_size
        self.output = output

    @property
    def models(self) -> list[RewardModel]:
        return self.ensemble.models

    def score(self, samples: Sequence[str], contexts: Sequence[Any]) -> EnsembleScore:
        """Every member's score, their mean and spread, for completions of the given contexts."""
        from rl4gen.policies.causal_lm import prompt_text

        prompts = [prompt_text(c) for c in contexts]
        return self.ensemble.score(prompts, [str(x) for x in samples], self.batch_size)

    def __call__(self, samples: Sequence[Any], contexts: Sequence[Any], **info: Any) -> list[float]:
        s = self.score(samples, contexts)
        if self.output == "mean":
            return s.mean.tolist()
        if self.output == "spread":
            return s.spread.tolist()
        return (s.mean - self.uncertainty_penalty * s.spread).tolist()
