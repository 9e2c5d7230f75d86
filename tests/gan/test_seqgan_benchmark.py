"""The SeqGAN oracle benchmark runs end to end on a tiny setting (not a timed test)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_seqgan_benchmark_tiny_runs_end_to_end(tmp_path: Path) -> None:
    out = tmp_path / "seqgan"
    env = {**os.environ, "RL4GEN_CACHE": str(tmp_path / "cache")}
    proc = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "seqgan_oracle.py"), "--tiny", "--steps", "2", "--temperatures", "0.8", "1.0", "--runs", str(tmp_path / "runs"), "--out", str(out)],
        cwd=tmp_path, capture_output=True, text=True, timeout=600, check=False, env=env,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(out.with_suffix(".json").read_text())
    rows = report["rows"]
    assert {"MLE", "SeqGAN (1 seed)", "real data (the oracle itself)"} <= set(rows)
    floor = rows["real data (the oracle itself)"]["oracle_nll"]
    assert 0 < floor < float(rows["MLE"]["oracle_nll"])  # the oracle is likelier under itself
    assert [s["temperature"] for s in report["temperature_sweep"]] == [0.8, 1.0]
    assert "| SeqGAN (1 seed) |" in out.with_suffix(".md").read_text()
