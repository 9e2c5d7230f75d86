"""Data formats: every malformed line is one sentence naming file and line; skip mode lists them."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from rl4gen.config import ConfigError
from rl4gen.data import DataError, PreferencePair, Rating, load_preferences, load_ratings, load_sft
from rl4gen.data.synthetic import arithmetic_records, write_jsonl

REPO = Path(__file__).resolve().parents[2]


def write(tmp_path: Path, lines: list[Any], name: str = "data.jsonl") -> Path:
    path = tmp_path / name
    path.write_text("".join((x if isinstance(x, str) else json.dumps(x)) + "\n" for x in lines))
    return path


GOOD_PAIR = {"prompt": "1+1=", "chosen": "2", "rejected": "3"}


def test_preferences_load_with_extra_keys_kept(tmp_path: Path) -> None:
    path = write(tmp_path, [GOOD_PAIR, "", {**GOOD_PAIR, "id": 7}])
    loaded = load_preferences(path)
    assert loaded.rows == [PreferencePair("1+1=", "2", "3"), PreferencePair("1+1=", "2", "3")]
    assert loaded[1].extra == {"id": 7}
    assert loaded.skipped == []


@pytest.mark.parametrize(
    ("line", "needles"),
    [
        ('{"prompt": "a", "chosen": "b"', ("not valid JSON", "one JSON object per line")),
        ('["a", "b"]', ("not a JSON object but list",)),
        ({"prompt": "a", "chosen": "b"}, ("missing field 'rejected'",)),
        ({"prompt": "a", "chosen": 3, "rejected": "b"}, ("'chosen' must be a string, got int 3",)),
        ({"prompt": "", "chosen": "a", "rejected": "b"}, ("'prompt' is empty",)),
        ({"prompt": "p", "chosen": "  ", "rejected": "b"}, ("'chosen' is empty",)),
        ({"prompt": "p", "chosen": "same", "rejected": "same"}, ("'chosen' and 'rejected' are the same text",)),
    ],
)
def test_bad_preference_line_is_named_with_file_and_line(tmp_path: Path, line: Any, needles: tuple[str, ...]) -> None:
    path = write(tmp_path, [GOOD_PAIR, GOOD_PAIR, line])
    with pytest.raises(DataError) as info:
        load_preferences(path)
    message = str(info.value)
    assert message.startswith(f"{path}:3: ")
    assert message.endswith(".") and message.count("; ") == 1 and "\n" not in message
    for needle in needles:
        assert needle in message
    assert isinstance(info.value, ConfigError)  # the CLI reports it as a user error


def test_skip_invalid_keeps_good_lines_and_lists_bad_ones(tmp_path: Path) -> None:
    path = write(tmp_path, [GOOD_PAIR, "nonsense", {"prompt": "p", "chosen": "x", "rejected": "x"}, GOOD_PAIR])
    loaded = load_preferences(path, skip_invalid=True)
    assert len(loaded) == 2
    assert [m.split(": ")[0] for m in loaded.skipped] == [f"{path}:2", f"{path}:3"]


def test_file_with_no_valid_records_fails_even_when_skipping(tmp_path: Path) -> None:
    path = write(tmp_path, ["{}", "[]"])
    with pytest.raises(DataError, match=r"no valid preference records \(2 invalid lines, the first at .*:1\)"):
        load_preferences(path, skip_invalid=True)
    with pytest.raises(DataError, match="holds no preference records"):
        load_preferences(write(tmp_path, ["", " "], "empty.jsonl"))
    with pytest.raises(DataError, match="does not exist"):
        load_preferences(tmp_path / "missing.jsonl")


def test_ratings_accept_like_dislike_booleans_and_scores(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        [
            {"prompt": "p", "completion": "c", "label": "like"},
            {"prompt": "p", "completion": "c", "label": "dislike"},
            {"prompt": "p", "completion": "c", "label": True},
            {"prompt": "p", "completion": "c", "score": -2.5},
        ],
    )
    rows = load_ratings(path).rows
    assert rows == [
        Rating("p", "c", label=True),
        Rating("p", "c", label=False),
        Rating("p", "c", label=True),
        Rating("p", "c", score=-2.5),
    ]
    assert [r.value for r in rows] == [1.0, 0.0, 1.0, -2.5]


@pytest.mark.parametrize(
    ("row", "needle"),
    [
        ({"prompt": "p", "completion": "c", "label": "good"}, "'label' has an invalid value \"good\""),
        ({"prompt": "p", "completion": "c", "label": 1}, "'label' has an invalid value 1"),
        ({"prompt": "p", "completion": "c", "score": "3"}, "'score' must be a finite number"),
        ({"prompt": "p", "completion": "c", "score": True}, "'score' must be a finite number"),
        ({"prompt": "p", "completion": "c"}, "neither 'label' nor 'score'"),
        ({"prompt": "p", "completion": "c", "label": "like", "score": 1}, "both 'label' and 'score'"),
        ({"prompt": "p", "label": "like"}, "missing field 'completion'"),
    ],
)
def test_bad_rating_lines(tmp_path: Path, row: dict[str, Any], needle: str) -> None:
    with pytest.raises(DataError, match=r":1: ") as info:
        load_ratings(write(tmp_path, [row]))
    assert needle in str(info.value)


def test_non_finite_score_is_rejected(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="finite number"):
        load_ratings(write(tmp_path, ['{"prompt": "p", "completion": "c", "score": NaN}']))


def test_sft_pairs(tmp_path: Path) -> None:
    loaded = load_sft(write(tmp_path, [{"prompt": "p", "completion": "c"}]))
    assert loaded[0].prompt == "p" and loaded[0].completion == "c"
    with pytest.raises(DataError, match=":1: field 'completion' is empty"):
        load_sft(write(tmp_path, [{"prompt": "p", "completion": ""}]))


def test_synthetic_arithmetic_data_is_deterministic_valid_and_correct(tmp_path: Path) -> None:
    rows = arithmetic_records("preferences", 64, seed=3)
    assert rows == arithmetic_records("preferences", 64, seed=3)
    pairs = load_preferences(write_jsonl(rows, tmp_path / "p.jsonl")).rows
    for pair in pairs:
        a, b = pair.prompt.rstrip("=").split("+")
        assert pair.chosen == str(int(a) + int(b))[::-1]  # answers are written reversed
        assert pair.rejected != pair.chosen and len(pair.rejected) == len(pair.chosen)
    ratings = load_ratings(write_jsonl(arithmetic_records("ratings", 8), tmp_path / "r.jsonl")).rows
    assert [r.label for r in ratings] == [True, False] * 4
    assert len(load_sft(write_jsonl(arithmetic_records("sft", 8), tmp_path / "s.jsonl"))) == 8


@pytest.mark.parametrize(("name", "loader"), [("preferences", load_preferences), ("ratings", load_ratings), ("sft", load_sft)])
def test_shipped_example_files_are_valid(name: str, loader: Any) -> None:
    assert len(loader(REPO / "examples" / "data" / f"arithmetic-{name}.jsonl")) == 512


def test_data_check_through_the_entry_point(tmp_path: Path) -> None:
    """`rl4gen data check` in a real process: one `error:` line with file and line, exit code 2."""
    import os
    import subprocess
    import sys

    path = write(tmp_path, [GOOD_PAIR, {"prompt": "p", "chosen": "x", "rejected": "x"}])
    env = {**os.environ, "COLUMNS": "200"}
    proc = subprocess.run(
        [sys.executable, "-m", "rl4gen", "data", "check", str(path)], capture_output=True, text=True, env=env, check=False
    )
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert lines == [f"error: {path}:2: 'chosen' and 'rejected' are the same text; remove the line, as it expresses no preference."]
    ok = subprocess.run(
        [sys.executable, "-m", "rl4gen", "data", "check", str(path), "--skip-invalid"], capture_output=True, text=True, env=env, check=False
    )
    assert ok.returncode == 0 and "1 valid preferences records, 1 invalid lines" in ok.stdout


def test_data_arithmetic_command_writes_valid_files(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from rl4gen.cli import app

    runner = CliRunner()
    out = tmp_path / "r.jsonl"
    result = runner.invoke(app, ["data", "arithmetic", str(out), "--format", "ratings", "--num", "6", "--seed", "2"])
    assert result.exit_code == 0, result.stderr
    assert [json.loads(line) for line in out.read_text().splitlines()] == arithmetic_records("ratings", 6, seed=2)
    bad = runner.invoke(app, ["data", "arithmetic", str(out), "--format", "pairs"], env={"COLUMNS": "200"})
    assert bad.exit_code == 2 and "unknown data format 'pairs': use preferences, ratings or sft." in bad.stderr
