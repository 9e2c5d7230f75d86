"""What a melody run leaves for people: MIDI files, WAV renderings, piano rolls and RL Tuner's
metric table before and after RL."""

from __future__ import annotations

import wave
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from rl4gen.music.encoding import STEPS_PER_QUARTER, events_to_notes, piano_roll_png, write_midi

#: (metric key, label, direction): +1 higher is better, -1 lower is better, 0 descriptive.
TABLE_ROWS: list[tuple[str, str, int]] = [
    ("notes_not_in_key", "notes not in key", -1),
    ("excessively_repeated", "notes excessively repeated", -1),
    ("autocorrelation_1", "mean autocorrelation, lag 1", -1),
    ("autocorrelation_2", "mean autocorrelation, lag 2", -1),
    ("autocorrelation_3", "mean autocorrelation, lag 3", -1),
    ("leaps_resolved", "leaps resolved", 1),
    ("unique_max", "melodies with a unique highest note", 1),
    ("unique_min", "melodies with a unique lowest note", 1),
    ("starts_with_tonic", "melodies starting with the tonic", 1),
    ("ends_with_tonic", "melodies ending on the tonic", 1),
    ("notes_in_motif", "notes in motifs", 1),
    ("notes_in_repeated_motif", "notes in repeated motifs", 1),
    ("notes_per_melody", "notes per melody", 0),
    ("violations", "rule violations (mean of seven rates)", -1),
    ("prior_loglik", "log-likelihood under the prior, per step", 0),
    ("validation_loglik", "log-likelihood of held-out Bach, per step", 0),
]

_PERCENT = {k for k, _, _ in TABLE_ROWS} - {"notes_per_melody", "prior_loglik", "validation_loglik"} - {
    f"autocorrelation_{k}" for k in (1, 2, 3)
}


def _fmt(key: str, value: float) -> str:
    return f"{100 * value:.1f}%" if key in _PERCENT else f"{value:.3f}"


def metric_table(columns: Mapping[str, Mapping[str, float]]) -> str:
    """A Markdown table with one row per metric and one column per label (e.g. before/after)."""
    labels = list(columns)
    lines = ["| metric | " + " | ".join(labels) + " |", "|---|" + "---:|" * len(labels)]
    for key, label, _ in TABLE_ROWS:
        if not all(key in columns[c] for c in labels):
            continue
        lines.append(f"| {label} | " + " | ".join(_fmt(key, float(columns[c][key])) for c in labels) + " |")
    return "\n".join(lines) + "\n"


def write_wav(events: Sequence[int], path: str | Path, *, bpm: float = 90.0, sample_rate: int = 22050) -> Path:
    """A mono 16-bit WAV of the melody from a small additive synthesiser (three harmonics with
    attack and release), so melodies can be heard without a General MIDI player."""
    step_seconds = 60.0 / bpm / STEPS_PER_QUARTER
    total = int(len(events) * step_seconds * sample_rate) + sample_rate // 4
    audio = np.zeros(total, dtype=np.float64)
    for note in events_to_notes(events):
        start = int(note.start * step_seconds * sample_rate)
        n = int(note.duration * step_seconds * sample_rate)
        t = np.arange(n) / sample_rate
        freq = 440.0 * 2 ** ((note.pitch - 69) / 12)
        tone = sum(a * np.sin(2 * np.pi * freq * h * t) for h, a in ((1, 1.0), (2, 0.35), (3, 0.15)))
        envelope = np.minimum(1.0, t / 0.01) * np.exp(-2.5 * t)
        release = np.minimum(1.0, (n - np.arange(n)) / max(1, int(0.02 * sample_rate)))
        audio[start : start + n] += tone * envelope * release
    peak = float(np.abs(audio).max()) or 1.0
    pcm = (audio / peak * 0.8 * 32767).astype("<i2")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(sample_rate)
        w.writeframes(pcm.tobytes())
    return path


def write_melody_files(out_dir: str | Path, melodies: Mapping[str, Sequence[Sequence[int]]], *, per_label: int = 4) -> list[Path]:
    """For each label ("prior", "after RL"...): ``per_label`` melodies as MIDI and WAV, and one
    piano-roll PNG of them all. Returns the paths written."""
    out = Path(out_dir)
    written: list[Path] = []
    for label, items in melodies.items():
        slug = label.replace(" ", "_")
        for i, events in enumerate(items[:per_label]):
            written.append(write_midi(events, out / f"{slug}_{i}.mid"))
            written.append(write_wav(events, out / f"{slug}_{i}.wav"))
    shown = {label: list(items[:per_label]) for label, items in melodies.items()}
    written.append(piano_roll_png(shown, out / "piano_roll.png", title="melodies (sixteenth-note steps)"))
    return written
