"""Shared fixtures: an isolated cache, a tiny random model, and the real arithmetic prior."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="session", autouse=True)
def _isolated_cache(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Priors go to $RL4GEN_CACHE when set (CI keeps one per run), else to a session temp dir."""
    if not os.environ.get("RL4GEN_CACHE"):
        os.environ["RL4GEN_CACHE"] = str(tmp_path_factory.mktemp("rl4gen-cache"))


@pytest.fixture(scope="module")
def one_thread() -> Iterator[None]:
    """One intra-op thread: for tiny models it avoids OpenMP overhead on a busy 2-core box."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A randomly initialised 1-layer character GPT over the arithmetic alphabet, saved to disk."""
    from rl4gen.models.char_gpt import build_char_tokenizer, build_tiny_gpt
    from rl4gen.tasks.arithmetic import ALPHABET

    out = tmp_path_factory.mktemp("tiny-gpt")
    tokenizer = build_char_tokenizer(ALPHABET)
    torch.manual_seed(0)
    model = build_tiny_gpt(len(tokenizer), n_positions=32, n_embd=32, n_layer=1, n_head=2)
    model.save_pretrained(str(out))
    tokenizer.save_pretrained(str(out))
    return out


@pytest.fixture(scope="session")
def arithmetic_prior(_isolated_cache: None) -> Path:
    """The real arithmetic prior (pretrained once per session, ~15 s on 2 cores)."""
    from rl4gen.tasks import get_task

    return get_task("arithmetic").pretrain(log=lambda m: None)
