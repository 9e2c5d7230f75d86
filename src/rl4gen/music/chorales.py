"""Soprano melodies of the Bach chorales bundled with music21 (371 entries, 350 distinct), in the
event encoding.

Each chorale is transposed so that its key (music21's key analysis of the whole score) becomes
C major or A minor, its soprano part quantised to sixteenths (ties merged, grace notes dropped),
and a pickup bar padded with a rest so that bar lines fall on multiples of the bar length. The
parsed corpus is cached as JSON in the rl4gen cache folder (parsing takes about a minute once).
"""

from __future__ import annotations

import json
import os
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from rl4gen.music.encoding import (
    HIGHEST_MIDI,
    LOWEST_MIDI,
    STEPS_PER_QUARTER,
    Note,
    notes_to_events,
)

CACHE_VERSION = 1


@dataclass(frozen=True)
class Chorale:
    name: str  # music21 corpus path, e.g. "bach/bwv269"
    mode: str  # "major" (now in C) or "minor" (now in A)
    events: list[int]


def is_validation(name: str, every: int = 10) -> bool:
    """About one chorale in ``every`` (by a hash of its name) is held out for validation."""
    return zlib.crc32(name.encode()) % every == 0


def _shift_to(tonic_pc: int, target_pc: int) -> int:
    """The transposition in -6..+5 semitones that moves ``tonic_pc`` onto ``target_pc``."""
    shift = (target_pc - tonic_pc) % 12
    return shift - 12 if shift > 5 else shift


def encode_score(score: Any, name: str) -> Chorale | None:
    """One music21 score to a :class:`Chorale` (``None`` when it has no usable soprano line)."""
    key = score.analyze("key")
    mode = "minor" if key.mode == "minor" else "major"
    shift = _shift_to(key.tonic.pitchClass, 9 if mode == "minor" else 0)
    part = score.parts[0]
    measures = list(part.getElementsByClass("Measure"))
    pickup = 0.0
    if measures:
        m0 = measures[0]
        pickup = max(0.0, float(m0.barDuration.quarterLength) - float(m0.duration.quarterLength))
        if pickup >= float(m0.barDuration.quarterLength):
            pickup = 0.0
    offset_steps = round(pickup * STEPS_PER_QUARTER)
    notes: list[Note] = []
    for el in part.stripTies().flatten().notes:
        ql = float(el.quarterLength)
        if ql <= 0:  # grace notes
            continue
        pitch = max(p.midi for p in el.pitches) + shift
        start = offset_steps + round(float(el.offset) * STEPS_PER_QUARTER)
        duration = max(1, round(ql * STEPS_PER_QUARTER))
        notes.append(Note(pitch, start, duration))
    if len(notes) < 4:
        return None
    low, high = min(n.pitch for n in notes), max(n.pitch for n in notes)
    while high > HIGHEST_MIDI and low - 12 >= LOWEST_MIDI:
        notes = [Note(n.pitch - 12, n.start, n.duration) for n in notes]
        low, high = low - 12, high - 12
    while low < LOWEST_MIDI and high + 12 <= HIGHEST_MIDI:
        notes = [Note(n.pitch + 12, n.start, n.duration) for n in notes]
        low, high = low + 12, high + 12
    if low < LOWEST_MIDI or high > HIGHEST_MIDI:
        return None
    # Overlaps (rare chords or rounding) are cut at the next start by notes_to_events.
    return Chorale(name=name, mode=mode, events=notes_to_events(notes))


def _parse(name: str) -> Chorale | None:
    from music21 import corpus

    return encode_score(corpus.parse(name), name)


def load_chorales(
    cache_path: os.PathLike[str] | str | None = None,
    log: Callable[[str], None] = print,
    limit: int | None = None,
) -> list[Chorale]:
    """All usable chorales (or those among the first ``limit`` of the corpus), parsed once and
    then read from ``cache_path`` (JSON)."""
    from pathlib import Path

    if cache_path is None:
        from rl4gen.tasks.base import cache_dir

        suffix = "" if limit is None else f"-first{limit}"
        cache_path = cache_dir() / "data" / f"bach-soprano-v{CACHE_VERSION}{suffix}.json"
    path = Path(cache_path)
    if path.is_file():
        rows = json.loads(path.read_text())
        return [Chorale(r["name"], r["mode"], r["events"]) for r in rows]
    from music21 import corpus

    names = list(dict.fromkeys(str(n) for n in corpus.chorales.Iterator(returnType="filename")))[:limit]
    log(f"parsing {len(names)} Bach chorales from music21's corpus (once; cached afterwards)")
    workers = max(1, min(os.cpu_count() or 1, 8))
    if workers > 1 and len(names) > 16:
        from concurrent.futures import ProcessPoolExecutor

        with ProcessPoolExecutor(max_workers=workers) as pool:
            parsed = list(pool.map(_parse, names, chunksize=8))
    else:
        parsed = [_parse(name) for name in names]
    out = [c for c in parsed if c is not None]
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + f".tmp-{os.getpid()}")
    tmp.write_text(json.dumps([{"name": c.name, "mode": c.mode, "events": c.events} for c in out]))
    os.replace(tmp, path)
    return out
