"""Data parallelism through Accelerate: two real processes on CPU (gloo), one training run."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _accelerate() -> list[str]:
    return [sys.executable, "-m", "accelerate.commands.launch"]


@pytest.mark.slow
def test_two_process_training_run(tiny_model_dir: Path, tmp_path: Path) -> None:
    # `--multi_gpu` selects the torchrun launcher, which starts both processes; on a machine without
    # CUDA the trainer then forms a gloo process group on CPU (see docs/distributed.md).
    cmd = [
        *_accelerate(),
        "--multi_gpu",
        "--num_processes", "2",
        "--num_machines", "1",
        "--mixed_precision", "no",
        "--dynamo_backend", "no",
        "--main_process_port", "29517",
        "-m", "rl4gen", "train", str(REPO / "configs" / "arithmetic-grpo.yaml"),
        "--set", f"model.path={tiny_model_dir}",
        "--set", f"output_dir={tmp_path}",
        "--set", "run_name=ddp",
        "--set", "max_steps=3",
        "--set", "prompts_per_step=4",
        "--set", "eval_size=8",
        "--set", "save_steps=3",
        "--set", "learning_rate=1e-3",
        "--no-progress",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, check=False, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    run = tmp_path / "ddp"
    state = json.loads((run / "checkpoints" / "step_3" / "trainer_state.json").read_text())
    assert state["num_processes"] == 2
    assert state["data_position"] == 3 * 4 * 2  # both processes drew their own contexts
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [0, 1, 2, 3]  # only the main process writes
    # Rewards are gathered from both processes: 4 contexts x 8 generations x 2 processes.
    first = json.loads(min((run / "samples").glob("step_*.jsonl")).read_text().splitlines()[0])
    assert "completion" in first
    assert records[-1]["num_tokens"] > 0
    # The trainer checks that both replicas end with identical weights, or exits non-zero.
    assert "diverged" not in proc.stderr
