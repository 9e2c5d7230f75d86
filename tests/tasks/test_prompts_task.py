"""The prompts task: your own prompts from JSONL, text or inline, with clear errors."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from rl4gen.config import ConfigError
from rl4gen.tasks import get_task


def test_jsonl_text_and_inline_prompts(tmp_path: Path) -> None:
    jsonl = tmp_path / "p.jsonl"
    jsonl.write_text('{"prompt": "2+2=", "answer": "4"}\n\n{"prompt": "3+3=", "answer": "6"}\n')
    task = get_task("prompts", {"file": str(jsonl)})
    drawn = task.train_contexts(torch.Generator().manual_seed(0), 20)
    assert {c["prompt"] for c in drawn} == {"2+2=", "3+3="}
    assert all("answer" in c for c in drawn)  # extra fields reach the rewards
    text = tmp_path / "p.txt"
    text.write_text("O gentle\nMy lord,\n")
    assert get_task("prompts", {"file": str(text)}).eval_contexts(5) == [{"prompt": "O gentle"}, {"prompt": "My lord,"}]
    assert get_task("prompts", {"prompts": ["a", "b"]}).evaluate(None, 2) == {}


@pytest.mark.parametrize(
    ("content", "needle"),
    [
        ('{"prompt": "ok"}\n{"prompt": \n', "p.jsonl:2 is not valid JSON"),
        ('{"prompt": "ok"}\n{"text": "no prompt"}\n', "p.jsonl:2 has no string 'prompt'"),
        ("\n\n", "holds no prompts"),
    ],
)
def test_bad_prompt_files_name_the_line(tmp_path: Path, content: str, needle: str) -> None:
    f = tmp_path / "p.jsonl"
    f.write_text(content)
    with pytest.raises(ConfigError, match=needle):
        get_task("prompts", {"file": str(f)})


def test_empty_and_missing_prompt_sets(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="empty prompt set"):
        get_task("prompts", {})
    with pytest.raises(ConfigError, match="does not exist"):
        get_task("prompts", {"file": str(tmp_path / "nope.jsonl")})
