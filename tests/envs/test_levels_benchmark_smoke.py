"""The level speed benchmark runs end to end on a tiny setting (not a timed test)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def _bench(script: str, *args: str, cwd: Path | None = None, timeout: int = 120) -> subprocess.CompletedProcess[str]:
    """Run ``benchmarks/<script>`` with ``args`` in a fresh interpreter, capturing its output."""
    return subprocess.run([sys.executable, str(REPO / "benchmarks" / script), *args],
                          cwd=cwd, capture_output=True, text=True, timeout=timeout, check=False)


def test_levels_speed_tiny_prints_ratios(tmp_path: Path) -> None:
    out = tmp_path / "speed.json"
    proc = _bench("levels_speed.py", "--tiny", "--problems", "sokoban,binary", "--representations", "narrow,wide",
                  "--json", str(out), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(out.read_text())
    assert set(report["steps_per_s"]) == {"sokoban-narrow", "sokoban-wide", "binary-narrow", "binary-wide"}
    assert all(v > 0 for r in report["steps_per_s"].values() for v in r.values())
    assert set(report["ratios"]) == set(report["cpu_ratios"]) == {"sokoban-narrow", "binary-narrow"}
    assert all(v > 0 for r in report["cpu_steps_per_s"].values() for v in r.values())
    assert any(line.startswith("ratio vs gym-pcgrl sokoban-narrow") for line in proc.stdout.splitlines())


def test_levels_speed_rejects_an_unknown_problem() -> None:
    proc = _bench("levels_speed.py", "--problems", "mario", timeout=60)
    assert proc.returncode == 2 and "unknown problem 'mario'" in proc.stderr


def test_levels_rounds_tiny_times_kept_environments_and_workers(tmp_path: Path) -> None:
    out = tmp_path / "rounds.json"
    proc = _bench("levels_rounds.py", "--tiny", "--json", str(out), cwd=tmp_path, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(out.read_text())
    envs, workers = report["envs"], report["workers"]
    assert envs["episodes"] == 40 and envs["cpu_ratio"] > 0 and envs["wall_ratio"] > 0
    assert set(envs["seconds"]) == {"new", "kept"} and set(workers["seconds"]) == {"1", "2"}
    assert workers["wall_ratio"] > 0 and 0 <= workers["goal_rate"] <= 1
    assert proc.stdout.startswith("envs: 40 episodes, new / kept environments")


def test_levels_rounds_rejects_a_missing_model(tmp_path: Path) -> None:
    proc = _bench("levels_rounds.py", "--tiny", "--model", str(tmp_path / "none.zip"))
    assert proc.returncode == 2 and "is not a file" in proc.stderr and proc.stdout == ""


def test_levels_rounds_rejects_a_model_of_another_policy(tmp_path: Path) -> None:
    from rl4gen.envs.levels.train import load_levels_config, train_levels

    other = train_levels(load_levels_config(None, ["env=binary-wide", "policy=fullyconv", "channels=8", "total_timesteps=0",
                                                   "levels_per_log=0", "run_name=other", f"output_dir={tmp_path}"]), show_progress=False)
    proc = _bench("levels_rounds.py", "--tiny", "--model", str(other.run_dir / "model.zip"))
    assert proc.returncode == 2 and "--model" in proc.stderr and "does not fit this run's policy" in proc.stderr, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr and proc.stdout == ""


def test_levels_lookahead_tiny_times_the_three_ways(tmp_path: Path) -> None:
    out = tmp_path / "lookahead.json"
    proc = _bench("levels_lookahead.py", "--tiny", "--json", str(out), cwd=tmp_path, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(out.read_text())
    assert report["episodes"] >= 1 and report["steps"] >= report["episodes"]
    assert set(report["us_per_step"]) == {"bare", "features", "lookahead"} and all(v > 0 for v in report["us_per_step"].values())
    assert report["lookahead_over_features"] > 1  # the planes cost something: every edit of every cell is tried
    assert proc.stdout.startswith("lookahead: ")


def test_levels_lookahead_rejects_a_missing_demonstrations_file(tmp_path: Path) -> None:
    proc = _bench("levels_lookahead.py", "--demos", str(tmp_path / "none.jsonl"))
    assert proc.returncode == 2 and "is not a file" in proc.stderr and proc.stdout == "" and "Traceback" not in proc.stderr
