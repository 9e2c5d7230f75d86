"""Atomic, verified checkpoints: weights (safetensors), optimizer, scheduler, RNG and loop state.

A checkpoint is written to ``step_N.tmp-PID`` and renamed to ``step_N`` only when complete, with
a ``checksums.json`` of every file; loading verifies the checksums, so a crash or a truncated file
is detected instead of silently resuming from garbage.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch


class CheckpointError(RuntimeError):
    """A checkpoint is missing, incomplete or corrupt; the message says which and why."""


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def rng_state() -> dict[str, Any]:
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def write_checkpoint(
    checkpoints_dir: Path,
    step: int,
    *,
    save_weights: Any,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    trainer_state: dict[str, Any],
    keep: int | None = None,
) -> Path:
    """Write ``checkpoints_dir/step_{step}`` atomically and prune old checkpoints to ``keep``."""
    checkpoints_dir.mkdir(parents=True, exist_ok=True)
    final = checkpoints_dir / f"step_{step}"
    tmp = checkpoints_dir / f"step_{step}.tmp-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    save_weights(tmp / "model")
    torch.save(optimizer.state_dict(), tmp / "optimizer.pt")
    torch.save(scheduler.state_dict(), tmp / "scheduler.pt")
    torch.save(rng_state(), tmp / "rng_state.pt")
    (tmp / "trainer_state.json").write_text(json.dumps({"step": step, **trainer_state}, indent=2))
    files = sorted(p for p in tmp.rglob("*") if p.is_file())
    checksums = {str(p.relative_to(tmp)): _sha256(p) for p in files}
    (tmp / "checksums.json").write_text(json.dumps(checksums, indent=2))
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    if keep is not None:
        for old in list_checkpoints(checkpoints_dir)[:-keep]:
            shutil.rmtree(old, ignore_errors=True)
    return final


def list_checkpoints(checkpoints_dir: Path) -> list[Path]:
    """Complete checkpoints (``step_N`` with a checksums file), oldest first."""
    if not checkpoints_dir.is_dir():
        return []
    found = []
    for p in checkpoints_dir.iterdir():
        if p.is_dir() and p.name.startswith("step_") and p.name[5:].isdigit() and (p / "checksums.json").is_file():
            found.append((int(p.name[5:]), p))
    return [p for _, p in sorted(found)]


def verify_checkpoint(path: Path) -> dict[str, Any]:
    """Check every file against ``checksums.json``; return the trainer state."""
    sums_path = path / "checksums.json"
    if not sums_path.is_file():
        raise CheckpointError(f"checkpoint {str(path)!r} is incomplete (no checksums.json): resume from an earlier one.")
    checksums = json.loads(sums_path.read_text())
    for rel, expected in checksums.items():
        f = path / rel
        if not f.is_file():
            raise CheckpointError(f"checkpoint {str(path)!r} is missing {rel}: it was damaged after writing.")
        if _sha256(f) != expected:
            raise CheckpointError(f"checkpoint {str(path)!r} has a corrupt {rel} (checksum mismatch).")
    return json.loads((path / "trainer_state.json").read_text())
