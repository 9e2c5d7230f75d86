"""Generated levels on disk: ``samples/levels.jsonl`` in a run folder, and its picture.

One JSON object per line::

    {"env": "rl4gen/zelda-narrow-v0", "problem": "zelda", "level": ["#.@..", ...],
     "goal": true, "step": 2048, "stats": {"regions": 1, ...}}

``level`` holds the rows in ``render.CHARS`` (readable in a terminal and in a diff). Training
writes these rows as episodes end; ``rl4gen levels sample`` writes them from a random policy;
``rl4gen levels show RUN_DIR`` draws the latest ones as a grid PNG.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np

from rl4gen.envs.levels.render import level_text, parse_level, save_grid

__all__ = ["LEVELS_FILE", "levels_path", "read_levels", "sample_levels", "show_levels", "write_levels"]

LEVELS_FILE = Path("samples") / "levels.jsonl"


def levels_path(run_dir: str | Path) -> Path:
    return Path(run_dir) / LEVELS_FILE


def level_record(level: np.ndarray, problem: str, **extra: Any) -> dict[str, Any]:
    return {"problem": problem, "level": level_text(level, problem).split("\n"), **extra}


def write_levels(run_dir: str | Path, records: Iterable[dict[str, Any]]) -> Path:
    """Append records to ``RUN_DIR/samples/levels.jsonl``."""
    return append_jsonl(levels_path(run_dir), records)


def append_jsonl(path: str | Path, records: Iterable[dict[str, Any]]) -> Path:
    """Append records to a ``.jsonl`` file, one JSON object per line (creating its folder)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a", encoding="utf-8") as f:
        for record in records:
            f.write(json.dumps(record) + "\n")
    return path


def read_levels(path: str | Path) -> list[tuple[str, np.ndarray, dict[str, Any]]]:
    """(problem, level, record) for every line of a levels file (or a run folder's)."""
    path = Path(path)
    if path.is_dir():
        path = levels_path(path)
    if not path.is_file():
        raise ValueError(
            f"{str(path)!r} not found: pass a run folder with {LEVELS_FILE} (written by training or "
            "`rl4gen levels sample`) or a levels .jsonl file."
        )
    out = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
            level = parse_level("\n".join(record["level"]), record["problem"])
        except (json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"{path}:{number} is not a level record ({exc}): each line needs 'problem' and 'level' rows.") from None
        out.append((record["problem"], level, record))
    return out


def show_levels(
    source: str | Path, out: str | Path | None = None, num: int = 16, columns: int | None = None, tile_size: int = 16
) -> tuple[Path, int]:
    """Draw the last ``num`` levels of a run folder (of the latest record's problem) as a grid PNG.

    Returns the PNG's path (default ``samples/levels.png`` beside the levels file) and how many
    levels it shows.
    """
    if num < 1:
        raise ValueError(f"--num must be at least 1, got {num}.")
    records = read_levels(source)
    if not records:
        raise ValueError(f"{str(source)!r} holds no levels yet.")
    problem = records[-1][0]
    levels = [level for p, level, _ in records if p == problem][-num:]
    source_path = Path(source)
    default = (source_path / LEVELS_FILE if source_path.is_dir() else source_path).with_name("levels.png")
    path = save_grid(levels, problem, out or default, columns=columns, tile_size=tile_size)
    return path, len(levels)


def sample_levels(env_name: str, episodes: int, seed: int = 0, run_dir: str | Path | None = None) -> tuple[Path, int]:
    """Play ``episodes`` episodes with uniformly random actions and record the final levels.

    Returns the run folder and how many of the levels reached the problem's goal.
    """
    import rl4gen.envs  # noqa: F401  (registers the environments)

    if episodes < 1:
        raise ValueError(f"--episodes must be at least 1, got {episodes}.")
    if "/" not in env_name:  # "binary-narrow" -> "rl4gen/binary-narrow-v0"
        env_name = f"rl4gen/{env_name}-v0"
    try:
        env = gym.make(env_name)
    except gym.error.Error:
        from rl4gen.envs.levels import ENV_IDS

        raise ValueError(f"unknown level environment {env_name!r}: use one of {', '.join(ENV_IDS)}.") from None
    core = env.unwrapped
    problem = core.problem.name  # type: ignore[attr-defined]
    if run_dir is None:
        run_dir = Path("runs") / f"{env_name.split('/')[-1]}__random__{seed}__{time.strftime('%Y%m%d-%H%M%S')}"
    env.action_space.seed(seed)
    records, goals, steps = [], 0, 0
    for episode in range(episodes):
        env.reset(seed=seed + episode)
        while True:
            _, _, terminated, truncated, info = env.step(env.action_space.sample())
            steps += 1
            if terminated or truncated:
                break
        goals += bool(info["goal"])
        stats = {k: v for k, v in info.items() if k not in ("goal", "changes", "iterations")}
        records.append(
            level_record(core.level, problem, env=env_name, goal=bool(info["goal"]), step=steps, stats=stats)  # type: ignore[attr-defined]
        )
    write_levels(run_dir, records)
    return Path(run_dir), goals
