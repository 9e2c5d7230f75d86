"""Offline data for preference learning and supervised fine-tuning: formats and validating loaders.

Three JSONL formats, one JSON object per line (documented in docs/data.md):

- pairwise preferences: ``{"prompt": str, "chosen": str, "rejected": str}``
- single ratings: ``{"prompt": str, "completion": str, "label": "like" | "dislike" | true | false}``
  or ``{"prompt": str, "completion": str, "score": number}``
- prompt/completion pairs for SFT: ``{"prompt": str, "completion": str}``

Every line is validated. A malformed line raises :class:`DataError` naming the file and line
(``data.jsonl:7: ...; ...``), or, with ``skip_invalid=True``, is left out and listed in
:attr:`Loaded.skipped`. Blank lines are ignored; keys outside the format are kept in ``extra``.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Generic, TypeVar, cast

from rl4gen.config import ConfigError


class DataError(ConfigError):
    """A data file is missing or has a malformed line; the message names the file and line."""


@dataclass(frozen=True)
class PreferencePair:
    """One pairwise preference: ``chosen`` is preferred over ``rejected`` as a reply to ``prompt``."""

    prompt: str
    chosen: str
    rejected: str
    extra: dict[str, Any] = field(default_factory=dict, compare=False)
    line: int = field(default=0, compare=False)
    """Line number in the file it was read from (0 when built in code)."""


@dataclass(frozen=True)
class Rating:
    """One rated completion: a binary ``label`` (True = like) or a numeric ``score``, not both."""

    prompt: str
    completion: str
    label: bool | None = None
    score: float | None = None
    extra: dict[str, Any] = field(default_factory=dict, compare=False)
    line: int = field(default=0, compare=False)
    """Line number in the file it was read from (0 when built in code)."""

    @property
    def value(self) -> float:
        """The score, or 1.0 for like and 0.0 for dislike."""
        if self.score is not None:
            return self.score
        return 1.0 if self.label else 0.0


@dataclass(frozen=True)
class Completion:
    """One prompt/completion pair for supervised fine-tuning (the loss covers the completion)."""

    prompt: str
    completion: str
    extra: dict[str, Any] = field(default_factory=dict, compare=False)
    line: int = field(default=0, compare=False)
    """Line number in the file it was read from (0 when built in code)."""


T = TypeVar("T")


@dataclass
class Loaded(Generic[T]):
    """The valid records of a file and, with ``skip_invalid``, one message per skipped line."""

    path: Path
    rows: list[T]
    skipped: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.rows)

    def __iter__(self) -> Iterator[T]:
        return iter(self.rows)

    def __getitem__(self, index: int) -> T:
        return self.rows[index]


class _LineError(Exception):
    """What is wrong with one line and how to fix it (the loader adds file and line)."""

    def __init__(self, what: str, fix: str) -> None:
        super().__init__(what)
        self.what, self.fix = what, fix


def _text(obj: dict[str, Any], key: str) -> str:
    if key not in obj:
        raise _LineError(f"missing field {key!r}", f"add a non-empty string {key!r}")
    value = obj[key]
    if not isinstance(value, str):
        raise _LineError(
            f"field {key!r} must be a string, got {type(value).__name__} {_short(value)}",
            "write it as a JSON string",
        )
    if not value.strip():
        raise _LineError(f"field {key!r} is empty", "give it some text or remove the line")
    return value


def _short(value: Any) -> str:
    text = json.dumps(value, ensure_ascii=False)
    return text if len(text) <= 40 else text[:37] + "..."


def _extra(obj: dict[str, Any], known: tuple[str, ...]) -> dict[str, Any]:
    return {k: v for k, v in obj.items() if k not in known}


def _parse_preference(obj: dict[str, Any]) -> PreferencePair:
    prompt, chosen, rejected = _text(obj, "prompt"), _text(obj, "chosen"), _text(obj, "rejected")
    if chosen == rejected:
        raise _LineError("'chosen' and 'rejected' are the same text", "remove the line, as it expresses no preference")
    return PreferencePair(prompt, chosen, rejected, _extra(obj, ("prompt", "chosen", "rejected")))


_LABELS = {"like": True, "dislike": False}


def _parse_rating(obj: dict[str, Any]) -> Rating:
    prompt, completion = _text(obj, "prompt"), _text(obj, "completion")
    has_label, has_score = "label" in obj, "score" in obj
    if has_label == has_score:
        what = "both 'label' and 'score'" if has_label else "neither 'label' nor 'score'"
        raise _LineError(f"has {what}", "give exactly one: 'label' (like/dislike/true/false) or a numeric 'score'")
    label: bool | None = None
    score: float | None = None
    if has_label:
        raw = obj["label"]
        if isinstance(raw, bool):
            label = raw
        elif isinstance(raw, str) and raw in _LABELS:
            label = _LABELS[raw]
        else:
            raise _LineError(
                f"field 'label' has an invalid value {_short(raw)}",
                'use "like", "dislike", true or false (or a numeric "score" instead)',
            )
    else:
        raw = obj["score"]
        if isinstance(raw, bool) or not isinstance(raw, (int, float)) or not math.isfinite(raw):
            raise _LineError(f"field 'score' must be a finite number, got {_short(raw)}", "write it as a JSON number")
        score = float(raw)
    return Rating(prompt, completion, label, score, _extra(obj, ("prompt", "completion", "label", "score")))


def _parse_completion(obj: dict[str, Any]) -> Completion:
    prompt, completion = _text(obj, "prompt"), _text(obj, "completion")
    return Completion(prompt, completion, _extra(obj, ("prompt", "completion")))


def _load(path: str | Path, parse: Callable[[dict[str, Any]], T], kind: str, skip_invalid: bool) -> Loaded[T]:
    p = Path(path)
    if not p.is_file():
        raise DataError(f"data file {str(p)!r} does not exist: check the path.")
    rows: list[T] = []
    skipped: list[str] = []
    with p.open(encoding="utf-8") as f:
        for number, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                try:
                    obj = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise _LineError(f"not valid JSON ({exc.msg})", "write one JSON object per line") from None
                if not isinstance(obj, dict):
                    raise _LineError(f"not a JSON object but {type(obj).__name__}", f"write one {kind} object per line")
                rows.append(dataclasses.replace(cast(Any, parse(obj)), line=number))
            except _LineError as exc:
                message = f"{p}:{number}: {exc.what}; {exc.fix}."
                if not skip_invalid:
                    raise DataError(message) from None
                skipped.append(message)
    if not rows:
        if skipped:
            first = skipped[0].split(": ", 1)[0]
            raise DataError(
                f"data file {str(p)!r} holds no valid {kind} records ({len(skipped)} invalid lines, "
                f"the first at {first}): fix the file."
            )
        raise DataError(f"data file {str(p)!r} holds no {kind} records: write one JSON object per line.")
    return Loaded(p, rows, skipped)


def load_preferences(path: str | Path, skip_invalid: bool = False) -> Loaded[PreferencePair]:
    """Pairwise preferences (``prompt``, ``chosen``, ``rejected``) from a JSONL file."""
    return _load(path, _parse_preference, "preference", skip_invalid)


def load_ratings(path: str | Path, skip_invalid: bool = False) -> Loaded[Rating]:
    """Single ratings (``prompt``, ``completion`` and ``label`` or ``score``) from a JSONL file."""
    return _load(path, _parse_rating, "rating", skip_invalid)


def load_sft(path: str | Path, skip_invalid: bool = False) -> Loaded[Completion]:
    """Prompt/completion pairs (``prompt``, ``completion``) from a JSONL file."""
    return _load(path, _parse_completion, "prompt/completion", skip_invalid)


LOADERS: dict[str, Callable[..., Loaded[Any]]] = {
    "preferences": load_preferences,
    "ratings": load_ratings,
    "sft": load_sft,
}
