"""The GRPO-vs-TRL benchmark runs end to end on a tiny setting (not a timed test)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_grpo_vs_trl_tiny_runs_end_to_end(tmp_path: Path) -> None:
    pytest.importorskip("trl", reason="the benchmark extra is not installed: pip install -e .[bench]")
    out = tmp_path / "bench.json"
    proc = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "grpo_vs_trl.py"), "--tiny", "--betas", "0,0.04", "--json", str(out)],
        cwd=tmp_path, capture_output=True, text=True, timeout=600, check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(out.read_text())
    for beta in ("0.0", "0.04"):
        r = report["betas"][beta]
        for key in ("throughput_ratio", "tokens_ratio", "step_time_over_floor", "peak_rss_ratio"):
            assert r[key] > 0
        for name in ("rl4gen", "trl"):
            assert r[name]["completions_per_s"] > 0 and r[name]["peak_rss_mb"] > 0
    lines = proc.stdout.splitlines()
    assert any(line.startswith("throughput rl4gen/TRL (beta=0): ") for line in lines)
    assert any(line.startswith("step time / floor (beta=0.04): ") for line in lines)


@pytest.mark.slow
def test_shared_prompt_benchmark_tiny_runs_end_to_end(tmp_path: Path) -> None:
    out = tmp_path / "shared.json"
    proc = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "shared_prompt.py"), "--tiny", "--json", str(out)],
        cwd=tmp_path, capture_output=True, text=True, timeout=600, check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads(out.read_text())["shapes"]["tiny"]["results"]
    for name in ("train forward+backward", "reference forward", "sampling", "estimated step (beta=0)"):
        assert results[name]["off/shared"]["cpu"] > 0 and results[name]["off/on"]["wall"] > 0
    assert any(line.startswith("tiny: train forward+backward speed-up over off, ") for line in proc.stdout.splitlines())
