"""Levels to text and PNG: round trips, tile images, grids on disk."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from rl4gen.envs.levels import LevelEnv
from rl4gen.envs.levels.render import grid_image, level_image, level_text, parse_level, save_grid


@pytest.mark.parametrize("problem", ["binary", "zelda", "sokoban"])
def test_text_round_trip_and_tile_image_size(problem: str) -> None:
    env = LevelEnv(problem, "wide", render_mode="rgb_array")
    env.reset(seed=0)
    level = env.level
    assert np.array_equal(parse_level(level_text(level, problem), problem), level)
    frame = env.render()
    assert frame.shape == (level.shape[0] * 16, level.shape[1] * 16, 3) and frame.dtype == np.uint8
    image = level_image(level, problem, tile_size=8)
    assert image.size == (level.shape[1] * 8, level.shape[0] * 8)


def test_distinct_tiles_are_drawn_differently() -> None:
    level = np.arange(8, dtype=np.uint8).reshape(1, 8)
    pixels = np.asarray(level_image(level, "zelda", tile_size=12))
    tiles = [pixels[:, 12 * k : 12 * (k + 1)].tobytes() for k in range(8)]
    assert len(set(tiles)) == 8


def test_save_grid_writes_a_valid_png(tmp_path: Path) -> None:
    env = LevelEnv("sokoban", "wide")
    levels = [env.reset(seed=s)[0] for s in range(5)]
    path = save_grid(levels, "sokoban", tmp_path / "out" / "grid.png", columns=3, tile_size=10)
    with Image.open(path) as img:
        img.verify()
    with Image.open(path) as img:
        assert img.format == "PNG"
        # 3 columns x 2 rows of 50-pixel levels with 4-pixel padding
        assert img.size == (4 + 3 * 54, 4 + 2 * 54)
    assert grid_image(levels, "sokoban").size == (4 + 3 * 84, 4 + 2 * 84)


def test_render_errors_name_the_problem() -> None:
    with pytest.raises(ValueError, match="unknown level problem 'mario'"):
        level_text(np.zeros((2, 2)), "mario")
    with pytest.raises(ValueError, match="only the characters"):
        parse_level("..z", "binary")
    with pytest.raises(ValueError, match="no levels"):
        grid_image([], "binary")
    with pytest.raises(ValueError, match=r"\[0, 2\)"):
        level_image(np.full((2, 2), 3), "binary")
