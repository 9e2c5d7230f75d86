"""Prompts: train any model on your own prompts with any rewards.

Contexts come from a file — JSONL with one object per line holding a ``prompt`` (and any other
fields rewards may use, such as ``answer``), or plain text with one prompt per line — or from a
list given inline. There is no held-out metric of its own: watch ``reward`` and the components.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from pydantic import BaseModel, ConfigDict, Field

from rl4gen.config import ConfigError
from rl4gen.tasks.base import Task


class PromptsOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    file: str | None = None
    """JSONL (objects with a 'prompt') or text (one prompt per line)."""
    prompts: list[str] = Field(default_factory=list)
    """Prompts given inline (used when no file is given)."""


def load_prompts(path: Path, key: str = "task_args.file") -> list[dict[str, Any]]:
    """Read a prompts file (``key`` names the config field that gave it, for errors); a
    malformed JSONL line is reported with its line number."""
    if not path.is_file():
        raise ConfigError(f"prompts file {str(path)!r} does not exist: check {key}.")
    rows: list[dict[str, Any]] = []
    is_jsonl = path.suffix in (".jsonl", ".json")
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        if not is_jsonl:
            rows.append({"prompt": line})
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"{path}:{number} is not valid JSON ({exc.msg}): fix or remove the line.") from None
        if not isinstance(row, dict) or not isinstance(row.get("prompt"), str):
            raise ConfigError(f"{path}:{number} has no string 'prompt' field: each line needs one.")
        rows.append(row)
    if not rows:
        raise ConfigError(f"prompts file {str(path)!r} holds no prompts: put one prompt per line.")
    return rows


class PromptsTask(Task):
    name = "prompts"
    Options = PromptsOptions
    options: PromptsOptions

    def __init__(self, task_args: dict[str, Any] | None = None) -> None:
        super().__init__(task_args)
        o = self.options
        if o.file is not None:
            self.rows = load_prompts(Path(o.file))
        elif o.prompts:
            self.rows = [{"prompt": p} for p in o.prompts]
        else:
            raise ConfigError(
                "the prompts task has an empty prompt set: set task_args.file or task_args.prompts."
            )

    def train_contexts(self, generator: torch.Generator, n: int) -> list[dict[str, Any]]:
        idx = torch.randint(0, len(self.rows), (n,), generator=generator).tolist()
        return [self.rows[i] for i in idx]

    def eval_contexts(self, n: int) -> list[dict[str, Any]]:
        return self.rows[:n]

    def evaluate(self, policy: Any, n: int) -> dict[str, float]:
        return {}

    def default_config(self) -> dict[str, Any]:
        return {"task": self.name, "rewards": []}

    def pretrain_settings(self) -> dict[str, Any]:
        return {"task": self.name}

    def build_prior(self, out_dir: Path, log: Callable[[str], None]) -> dict[str, Any]:
        raise ConfigError("the prompts task has no prior of its own: set model.path to a model folder.")
