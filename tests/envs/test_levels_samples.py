"""Generated levels on disk and ``rl4gen levels sample|show``."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from rl4gen.cli import app
from rl4gen.envs.levels.samples import read_levels, sample_levels, show_levels, write_levels

runner = CliRunner()


def test_sample_then_show_writes_a_grid_of_the_latest_levels(tmp_path: Path) -> None:
    run_dir, goals = sample_levels("sokoban-wide", episodes=5, seed=3, run_dir=tmp_path / "run")
    records = read_levels(run_dir)
    assert len(records) == 5 and 0 <= goals <= 5
    problem, level, record = records[0]
    assert problem == "sokoban" and level.shape == (5, 5) and record["env"] == "rl4gen/sokoban-wide-v0"
    assert set(record["stats"]) >= {"regions", "sol-length"}
    path, count = show_levels(run_dir, num=4, columns=2, tile_size=8)
    assert count == 4 and path == run_dir / "samples" / "levels.png"
    with Image.open(path) as img:
        assert img.format == "PNG" and img.size == (4 + 2 * 44, 4 + 2 * 44)


def test_cli_levels_sample_and_show(tmp_path: Path) -> None:
    run_dir = tmp_path / "r"
    result = runner.invoke(app, ["levels", "sample", "binary-turtle", "--episodes", "2", "--run-dir", str(run_dir)])
    assert result.exit_code == 0, result.output
    assert "reached the goal" in result.output
    result = runner.invoke(app, ["levels", "show", str(run_dir), "--out", str(tmp_path / "g.png")])
    assert result.exit_code == 0, result.output
    assert "2 levels" in result.output and (tmp_path / "g.png").is_file()


def test_show_reports_missing_and_malformed_files(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="not found"):
        show_levels(tmp_path)
    write_levels(tmp_path, [{"problem": "binary", "level": ["..", "#."]}])
    with (tmp_path / "samples" / "levels.jsonl").open("a") as f:
        f.write(json.dumps({"problem": "binary"}) + "\n")
    with pytest.raises(ValueError, match=r"levels.jsonl:2 is not a level record"):
        read_levels(tmp_path)
    result = runner.invoke(app, ["levels", "show", str(tmp_path / "missing")])
    assert result.exit_code == 2


def test_read_levels_round_trips_what_write_levels_wrote(tmp_path: Path) -> None:
    level = np.array([[0, 1], [1, 0]], dtype=np.uint8)
    write_levels(tmp_path, [{"problem": "binary", "level": [".#", "#."], "goal": False}])
    [(problem, got, record)] = read_levels(tmp_path / "samples" / "levels.jsonl")
    assert problem == "binary" and np.array_equal(got, level) and record["goal"] is False
