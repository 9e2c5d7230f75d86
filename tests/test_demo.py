"""`rl4gen demo` end to end, shortened: the run folder, report files and the final line."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest


@pytest.mark.slow
def test_arithmetic_demo_writes_report_and_prints_accuracy(arithmetic_prior: Path, tmp_path: Path) -> None:
    cmd = [
        sys.executable, "-m", "rl4gen", "demo",
        "--output-dir", str(tmp_path / "runs"),
        "--set", "max_steps=20", "--set", "eval_steps=20", "--set", "eval_size=128",
        "--no-progress",
    ]
    proc = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, check=False, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = proc.stdout.strip().splitlines()
    assert lines[-2].startswith("run folder: ")
    match = re.fullmatch(r"held-out accuracy: (\d+\.\d)% -> (\d+\.\d)%", lines[-1])
    assert match, lines[-1]
    before, after = map(float, match.groups())
    assert after > before  # 20 steps of GRPO from the 39% prior already help
    run = Path(lines[-2].removeprefix("run folder: "))
    summary = json.loads((run / "summary.json").read_text())
    assert summary["eval_before"]["accuracy"] * 100 == pytest.approx(before, abs=0.05 + 1e-9)  # printed to 0.1 (31.25 -> "31.2")
    assert summary["steps"] == 20
    png = (run / "reward_curve.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5000
    report = (run / "report.md").read_text()
    assert "## Samples: before RL" in report and "## Samples: after RL" in report


@pytest.mark.slow
def test_shakespeare_demo_compares_with_and_without_kl(tmp_path: Path) -> None:
    from rl4gen.demo import run_demo

    tiny = ["task_args.pretrain_steps=30", "task_args.n_layer=1", "task_args.n_embd=32", "task_args.n_head=2"]
    sets = [*tiny, "max_steps=4", "prompts_per_step=4", "eval_steps=4", "eval_size=8", "generation.max_completion_length=8"]
    summary = run_demo("shakespeare", output_dir=str(tmp_path), sets=sets, show_progress=False, log=lambda m: None)
    assert set(summary["runs"]) == {"beta = 0", "beta = 0.2"}
    for label in ("beta = 0", "beta = 0.2"):
        assert {"lexicon", "kl", "distinct_words"} <= set(summary[label]["after"])
    compare = next(tmp_path.glob("shakespeare__compare__*"))
    assert (compare / "reward_vs_kl.png").stat().st_size > 5000
    assert "## Samples: beta = 0.2" in (compare / "report.md").read_text()


@pytest.mark.slow
def test_melody_demo_writes_table_midi_wav_and_piano_roll(tmp_path: Path) -> None:
    cmd = [
        sys.executable, "-m", "rl4gen", "demo", "--task", "melody",
        "--output-dir", str(tmp_path / "runs"),
        # the small prior of tests/tasks/test_melody_task.py (cached when that ran first)
        "--set", "task_args.max_chorales=60", "--set", "task_args.pretrain_steps=300",
        "--set", "max_steps=10", "--set", "eval_steps=10", "--set", "eval_size=128",
        "--no-progress",
    ]
    proc = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, check=False, timeout=900)
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = proc.stdout
    assert "| notes not in key |" in out and "| rule violations (mean of seven rates) |" in out
    assert re.search(r"rule violations: \d+\.\d% -> \d+\.\d%", out)
    run = Path(re.search(r"run folder: (\S+)", out).group(1))  # type: ignore[union-attr]
    files = run / "samples" / "melodies"
    import mido

    for label in ("prior", "after_RL"):
        midi = mido.MidiFile(str(files / f"{label}_0.mid"))
        assert sum(m.type == "note_on" for m in midi.tracks[0]) >= 2
        import wave

        with wave.open(str(files / f"{label}_0.wav")) as w:
            assert w.getnchannels() == 1 and w.getnframes() > 10_000
    assert (files / "piano_roll.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    table = (run / "melody_metrics.md").read_text()
    assert table.startswith("| metric | prior (before RL) | after RL |")
    summary = json.loads((run / "summary.json").read_text())
    assert summary["steps"] == 10 and "violations" in summary["eval_after"]
