"""Synthetic, deterministic datasets from the arithmetic task, so preference learning and SFT
run offline: the data generator knows every answer, so "preferred" is simply "correct".

Problems come from the task's training split only (held-out problems never appear), so the
task's ``eval/accuracy`` stays an honest held-out measure after DPO or SFT on these files.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

import torch

from rl4gen.tasks.arithmetic import ArithmeticTask

Kind = Literal["preferences", "ratings", "sft"]


def wrong_answer(answer: str, generator: torch.Generator) -> str:
    """The answer with one digit replaced by a different digit (a near miss, the hard case)."""
    pos = int(torch.randint(0, len(answer), (1,), generator=generator))
    shift = int(torch.randint(1, 10, (1,), generator=generator))
    digit = str((int(answer[pos]) + shift) % 10)
    return answer[:pos] + digit + answer[pos + 1 :]


def arithmetic_records(
    kind: Kind, n: int, seed: int = 0, task_args: dict[str, Any] | None = None
) -> list[dict[str, Any]]:
    """``n`` records of one format (see docs/data.md) over arithmetic problems, deterministic in ``seed``.

    - ``preferences``: chosen = the correct answer, rejected = a one-digit near miss;
    - ``ratings``: alternately the correct answer (``like``) and a near miss (``dislike``);
    - ``sft``: the correct answer as the completion.
    """
    task = ArithmeticTask(task_args)
    gen = torch.Generator().manual_seed(seed)
    problems = task.train_contexts(gen, n)
    rows: list[dict[str, Any]] = []
    for i, p in enumerate(problems):
        prompt, answer = p["prompt"], p["answer"]
        if kind == "preferences":
            rows.append({"prompt": prompt, "chosen": answer, "rejected": wrong_answer(answer, gen)})
        elif kind == "ratings":
            good = i % 2 == 0
            completion = answer if good else wrong_answer(answer, gen)
            rows.append({"prompt": prompt, "completion": completion, "label": "like" if good else "dislike"})
        elif kind == "sft":
            rows.append({"prompt": prompt, "completion": answer})
        else:
            raise ValueError(f"unknown data kind {kind!r}: use preferences, ratings or sft")
    return rows


def write_jsonl(rows: list[dict[str, Any]], path: str | Path) -> Path:
    """Write one JSON object per line (creating parent folders)."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    with p.open("w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    return p
