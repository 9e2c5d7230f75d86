"""Levels as pictures and text: tiles drawn with Pillow, a grid of many levels, one character per
tile for terminals and tests.

Tiles are drawn here (simple shapes on coloured squares), so rendering needs no image files.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from rl4gen.envs.levels.problems import PROBLEMS

__all__ = ["CHARS", "grid_image", "level_image", "level_text", "parse_level", "save_grid"]

#: one character per tile, per problem (``parse_level`` reads the same)
CHARS: dict[str, str] = {
    "binary": ".#",  # empty solid
    "zelda": ".#@kDbcs",  # empty solid player key door bat scorpion spider
    "sokoban": ".#@$x",  # empty solid player crate target
}

_FLOOR = (236, 226, 202)
_WALL = (72, 64, 64)


def _check_problem(problem: str) -> None:
    if problem not in PROBLEMS:
        raise ValueError(f"unknown level problem {problem!r}: use one of {', '.join(PROBLEMS)}.")


def level_text(level: np.ndarray, problem: str) -> str:
    """The level as lines of characters (see ``CHARS``)."""
    _check_problem(problem)
    chars = CHARS[problem]
    return "\n".join("".join(chars[int(t)] for t in row) for row in np.asarray(level))


def parse_level(text: str, problem: str) -> np.ndarray:
    """Read a level written with ``CHARS`` (one row per line; blank lines and indentation ignored)."""
    _check_problem(problem)
    chars = CHARS[problem]
    rows = [line.strip() for line in text.strip().splitlines() if line.strip()]
    if not rows or len({len(r) for r in rows}) != 1:
        raise ValueError(f"a {problem} level needs rows of equal length, got {[len(r) for r in rows]}.")
    bad = sorted({c for r in rows for c in r} - set(chars))
    if bad:
        raise ValueError(f"a {problem} level uses only the characters {chars!r}, got {bad[0]!r}.")
    return np.array([[chars.index(c) for c in r] for r in rows], dtype=np.uint8)


@functools.lru_cache(maxsize=64)
def _tile(problem: str, tile: int, size: int) -> Image.Image:
    name = PROBLEMS[problem].tiles[tile]
    img = Image.new("RGB", (size, size), _WALL if name == "solid" else _FLOOR)
    d = ImageDraw.Draw(img)
    s = size
    m = max(1, s // 8)  # margin

    def box(a: float, b: float, c: float, e: float) -> tuple[int, int, int, int]:
        return (round(a * s), round(b * s), round(c * s) - 1, round(e * s) - 1)

    if name == "solid":
        d.rectangle((0, 0, s - 1, s - 1), outline=(50, 44, 44))
        d.line((0, s // 2, s - 1, s // 2), fill=(95, 85, 85))
        d.line((s // 2, 0, s // 2, s // 2), fill=(95, 85, 85))
    elif name == "player":
        d.ellipse(box(0.2, 0.2, 0.8, 0.8), fill=(40, 90, 200), outline=(20, 40, 110))
    elif name == "key":
        d.ellipse(box(0.15, 0.3, 0.5, 0.65), outline=(200, 150, 0), width=max(1, s // 10))
        d.rectangle(box(0.45, 0.43, 0.9, 0.53), fill=(200, 150, 0))
        d.rectangle(box(0.75, 0.53, 0.85, 0.7), fill=(200, 150, 0))
    elif name == "door":
        d.rectangle(box(0.2, 0.1, 0.8, 1.0), fill=(130, 80, 30), outline=(80, 45, 15))
        d.ellipse(box(0.6, 0.5, 0.72, 0.62), fill=(230, 200, 60))
    elif name in ("bat", "scorpion", "spider"):
        color = {"bat": (130, 60, 170), "scorpion": (200, 50, 40), "spider": (30, 30, 30)}[name]
        cx = cy = s / 2
        r = s * 0.38
        if name == "bat":  # wings
            d.polygon([(m, cy - r / 2), (cx, cy), (s - m, cy - r / 2), (cx, cy + r / 2)], fill=color)
        elif name == "scorpion":  # diamond
            d.polygon([(cx, cy - r), (cx + r, cy), (cx, cy + r), (cx - r, cy)], fill=color)
        else:  # legs and body
            for k in range(4):
                a = math.pi / 4 + k * math.pi / 2
                d.line((cx, cy, cx + r * math.cos(a), cy + r * math.sin(a)), fill=color, width=max(1, s // 12))
            d.ellipse(box(0.32, 0.32, 0.68, 0.68), fill=color)
    elif name == "crate":
        d.rectangle(box(0.12, 0.12, 0.88, 0.88), fill=(180, 120, 50), outline=(100, 60, 20))
        d.line(box(0.12, 0.12, 0.88, 0.88), fill=(100, 60, 20))
        d.line((round(0.12 * s), round(0.88 * s) - 1, round(0.88 * s) - 1, round(0.12 * s)), fill=(100, 60, 20))
    elif name == "target":
        d.ellipse(box(0.25, 0.25, 0.75, 0.75), outline=(210, 40, 40), width=max(1, s // 10))
    return img


def level_image(level: np.ndarray, problem: str, tile_size: int = 16) -> Image.Image:
    """The level as an RGB image of ``tile_size``-pixel tiles."""
    _check_problem(problem)
    level = np.asarray(level)
    if level.ndim != 2:
        raise ValueError(f"a level is a 2-D array of tiles, got shape {level.shape}.")
    num_tiles = len(PROBLEMS[problem].tiles)
    if level.size and (level.min() < 0 or level.max() >= num_tiles):
        raise ValueError(f"{problem} tiles are integers in [0, {num_tiles}), got values up to {level.max()}.")
    height, width = level.shape
    img = Image.new("RGB", (width * tile_size, height * tile_size))
    for y in range(height):
        for x in range(width):
            img.paste(_tile(problem, int(level[y, x]), tile_size), (x * tile_size, y * tile_size))
    return img


def grid_image(
    levels: Sequence[np.ndarray], problem: str, columns: int | None = None, tile_size: int = 16, padding: int = 4
) -> Image.Image:
    """Many levels side by side, ``columns`` per row (default: about square)."""
    if not levels:
        raise ValueError("there are no levels to draw.")
    images = [level_image(lv, problem, tile_size) for lv in levels]
    columns = columns or math.ceil(math.sqrt(len(images)))
    rows = math.ceil(len(images) / columns)
    cell_w = max(im.width for im in images) + padding
    cell_h = max(im.height for im in images) + padding
    grid = Image.new("RGB", (columns * cell_w + padding, rows * cell_h + padding), (255, 255, 255))
    for k, im in enumerate(images):
        grid.paste(im, (padding + (k % columns) * cell_w, padding + (k // columns) * cell_h))
    return grid


def save_grid(
    levels: Sequence[np.ndarray], problem: str, path: str | Path, columns: int | None = None, tile_size: int = 16
) -> Path:
    """Write ``grid_image(...)`` to a PNG file (parent folders are created)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    grid_image(levels, problem, columns, tile_size).save(path, format="PNG")
    return path
