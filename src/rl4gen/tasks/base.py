"""What a task provides: contexts to train on, held-out evaluation, default rewards and config,
and the pretraining of its prior (cached in the user cache folder)."""

from __future__ import annotations

import hashlib
import json
import os
from abc import ABC, abstractmethod
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

import torch
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from rl4gen.config import ConfigError, format_validation_error


def cache_dir() -> Path:
    """``$RL4GEN_CACHE``, else ``$XDG_CACHE_HOME/rl4gen``, else ``~/.cache/rl4gen``."""
    if os.environ.get("RL4GEN_CACHE"):
        return Path(os.environ["RL4GEN_CACHE"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "rl4gen"


class TinyGPTOptions(BaseModel):
    """Options shared by the tasks whose prior is a tiny GPT pretrained from scratch."""

    model_config = ConfigDict(extra="forbid")

    n_layer: int = Field(2, ge=1)
    """Transformer blocks of the prior."""
    n_embd: int = Field(128, ge=8)
    """Width of the prior."""
    n_head: int = Field(4, ge=1)
    """Attention heads of the prior."""
    pretrain_seed: int = 0
    """Seed of the prior's initial weights and data order."""


def cached_build(
    target: Path,
    settings: dict[str, Any],
    build: Callable[[Path], dict[str, Any]],
    force: bool = False,
) -> Path:
    """Return ``target`` once it holds a complete build, running ``build(folder)`` first when it
    does not (or when ``force``).

    The build is written to a temporary folder and renamed into place, with ``pretrain.json``
    (``settings`` and the summary ``build`` returns) written last, so an interrupted build never
    leaves a half-written model in the cache.
    """
    if (target / "pretrain.json").is_file() and not force:
        return target
    import shutil

    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(target.name + f".tmp-{os.getpid()}")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    summary = build(tmp)
    (tmp / "pretrain.json").write_text(json.dumps({"settings": settings, **summary}, indent=2))
    if target.exists():
        shutil.rmtree(target)
    os.replace(tmp, target)
    return target


def cached_path(name: str, settings: dict[str, Any]) -> Path:
    """The cache folder ``{cache}/pretrained/{name}-{hash of settings}``."""
    digest = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:10]
    return cache_dir() / "pretrained" / f"{name}-{digest}"


def save_prior(model: Any, tokenizer: Any, out_dir: Path) -> None:
    """Write a pretrained prior (weights as safetensors, and its tokenizer) into ``out_dir``."""
    from rl4gen import quiet_transformers

    quiet_transformers()
    model.save_pretrained(str(out_dir), safe_serialization=True)
    tokenizer.save_pretrained(str(out_dir))


def sample_unconditional(policy: Any, n: int, seed: int = 777) -> list[str]:
    """``n`` samples from an empty prompt with a fixed seed, in batches of 256 (tasks whose
    samples need no context: melodies, written levels)."""
    generator = torch.Generator(device=policy.device).manual_seed(seed)
    out: list[str] = []
    while len(out) < n:
        k = min(256, n - len(out))
        out.extend(policy.sample([{"prompt": ""}], k, generator=generator).samples)
    return out


def mean_score(policy: Any, texts: list[str], batch_size: int = 256) -> float:
    """Mean over ``texts`` of the policy's mean per-token log-probability of each (empty prompt),
    scored in batches of ``batch_size``."""
    chunks = [texts[i : i + batch_size] for i in range(0, len(texts), batch_size)]
    return float(torch.cat([policy.score([""] * len(c), c) for c in chunks]).mean())


class Task(ABC):
    """A task binds data, rewards and evaluation to validated options (``task_args``)."""

    name: ClassVar[str]
    Options: ClassVar[type[BaseModel]]

    def __init__(self, task_args: dict[str, Any] | None = None) -> None:
        if task_args is not None and not isinstance(task_args, dict):
            raise ConfigError(
                f"config key 'task_args' must be a mapping of option names to values, got {task_args!r}."
            )
        try:
            self.options = self.Options.model_validate(task_args or {})
        except ValidationError as exc:
            err = exc.errors()[0]
            if err["type"] == "extra_forbidden":
                import difflib

                key = str(err["loc"][0])
                close = difflib.get_close_matches(key, list(self.Options.model_fields), n=1, cutoff=0.7)
                hint = f" (did you mean 'task_args.{close[0]}'?)" if close else ""
                raise ConfigError(
                    f"unknown config key 'task_args.{key}' for task {self.name!r}{hint}: remove it or fix its spelling."
                ) from None
            raise ConfigError(format_validation_error(exc, prefix="task_args.")) from None

    # -- configuration
    @abstractmethod
    def default_config(self) -> dict[str, Any]:
        """The task's recipe: a full TrainConfig mapping (the demo uses it as is)."""

    # -- data
    @abstractmethod
    def train_contexts(self, generator: torch.Generator, n: int) -> list[Any]:
        """``n`` training contexts drawn with ``generator`` (never from the held-out set)."""

    @abstractmethod
    def eval_contexts(self, n: int) -> list[Any]:
        """The first ``n`` contexts of a fixed held-out set."""

    @abstractmethod
    def evaluate(self, policy: Any, n: int) -> dict[str, float]:
        """Held-out metrics of ``policy`` (keys become ``eval/{key}``)."""

    # -- prior
    @abstractmethod
    def pretrain_settings(self) -> dict[str, Any]:
        """Everything that determines the pretrained prior (its cache key)."""

    @abstractmethod
    def build_prior(self, out_dir: Path, log: Callable[[str], None]) -> dict[str, Any]:
        """Pretrain the prior into ``out_dir`` (save_pretrained format); return a summary."""

    def load_policy(self, model_path: str, config: Any, use_reference: bool) -> Any:
        """The policy the trainer optimises, loaded from ``model_path`` (a prior or a user model).

        Language tasks get a :class:`~rl4gen.policies.causal_lm.CausalLMPolicy`; tasks over other
        modalities (diffusion, latent codes) override this. The trainer needs from the policy what
        ``CausalLMPolicy`` offers: ``sample``, ``log_probs``, ``ref_log_probs``,
        ``trainable_parameters``, ``save``, ``load_weights``, ``prepare``, ``device`` and
        ``train_model``.
        """
        from rl4gen.policies.causal_lm import CausalLMPolicy

        return CausalLMPolicy.from_pretrained(
            model_path, config.generation, use_reference=use_reference, lora=config.model.lora
        )

    def save_samples(self, step: int, rollout: Any, out_dir: Path) -> None:
        """Draw a step's non-text samples into ``out_dir``; text samples go to the trainer's JSONL
        table and need nothing here. Image samples (``(1, H, W)`` tensors) become a PNG grid
        ``step_{step}.png`` with one row per context; other tasks override this."""
        if not rollout.samples or not isinstance(rollout.samples[0], torch.Tensor):
            return
        from rl4gen.images import save_grid

        per_context = max(1, int((rollout.group_ids == rollout.group_ids[0]).sum()))
        save_grid(torch.stack(rollout.samples[:200]), out_dir / f"step_{step:06d}.png", nrow=per_context)

    def pretrained_dir(self) -> Path:
        return cached_path(self.name, self.pretrain_settings())

    def pretrain(self, force: bool = False, log: Callable[[str], None] = print) -> Path:
        """Return the cached prior, building it first when absent (or when ``force``)."""
        return cached_build(
            self.pretrained_dir(), self.pretrain_settings(), lambda out: self.build_prior(out, log), force=force
        )
