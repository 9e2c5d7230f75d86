"""A small run of benchmarks/feedback_load.py: concurrent raters against a real server on
127.0.0.1; every vote stored exactly once (the full 50 x 100 run is the benchmark itself)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_concurrent_raters_lose_no_vote(tmp_path: Path, capsys: object) -> None:
    spec = importlib.util.spec_from_file_location("feedback_load", REPO / "benchmarks" / "feedback_load.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    out = tmp_path / "load.json"
    assert module.main(["--raters", "12", "--votes", "15", "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["stored"] == result["sent"] == result["unique_vote_ids"] == result["exported"] == 180
    assert result["every_rater_complete"]
    assert result["p95_ms"] >= result["p50_ms"] > 0
