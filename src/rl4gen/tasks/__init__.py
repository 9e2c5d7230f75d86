"""Tasks: data, rewards, evaluation and default recipe per use case."""

from __future__ import annotations

from typing import Any

from rl4gen.config import ConfigError
from rl4gen.tasks.base import Task, cache_dir


def _registry() -> dict[str, type[Task]]:
    from rl4gen.tasks.arithmetic import ArithmeticTask
    from rl4gen.tasks.dialogue import DialogueTask
    from rl4gen.tasks.digits import DigitsTask
    from rl4gen.tasks.gan import GanDigitsTask, LatentDigitsTask
    from rl4gen.tasks.level_writer import LevelWriterTask
    from rl4gen.tasks.melody import MelodyTask
    from rl4gen.tasks.prompts import PromptsTask
    from rl4gen.tasks.seqgan_oracle import SeqGANOracleTask
    from rl4gen.tasks.shakespeare import ShakespeareTask

    return {t.name: t for t in (ArithmeticTask, ShakespeareTask, PromptsTask, MelodyTask, DialogueTask, LevelWriterTask, SeqGANOracleTask, DigitsTask, LatentDigitsTask, GanDigitsTask)}


TASK_NAMES = ("arithmetic", "shakespeare", "prompts", "melody", "dialogue", "level_writer", "seqgan_oracle", "digits", "latent_digits", "gan_digits")


def get_task(name: str, task_args: dict[str, Any] | None = None) -> Task:
    """The task called ``name`` with validated ``task_args``."""
    registry = _registry()
    if name not in registry:
        raise ConfigError(f"unknown task {name!r}: use one of {', '.join(sorted(registry))}.")
    return registry[name](task_args)


__all__ = ["TASK_NAMES", "Task", "cache_dir", "get_task"]
