"""Music-theory rules for monophonic melodies, as per-step rewards and as evaluation statistics.

The rules follow Magenta's RL Tuner (Jaques et al., 2017, "Sequence Tutor"), restated here for
the event encoding of :mod:`rl4gen.music.encoding`. Every rule gives a reward at each step
(``len(events)`` values) that depends only on the events up to that step, except the rules that
judge the finished melody (``autocorrelation``, ``extremes`` and the end half of ``tonic``),
which speak at the last step. A sequence-level reward is the sum over steps, so the same numbers
serve GRPO (one reward per melody) and Q-learning (one reward per step).

Rules (sign: + reward, - penalty; each is one unit per occurrence and weighted in the config):

- ``key``: -1 for each note whose pitch class is outside the key (C major / A minor by default).
- ``tonic``: +1 when the first event is the tonic; +1 (at the last step) when the last note is.
- ``repetition``: -1 for each note that repeats the previous pitch more than ``max_repeats`` times
  in a row (rests or holds in between do not break the run), and -1 for each event (note or rest)
  sounding longer than ``max_hold`` steps (counted once, at the step where it passes the limit).
- ``autocorrelation``: minus the sum of ``|r_k|`` over lags k = 1, 2, 3 where ``|r_k| > 0.15``,
  ``r_k`` the autocorrelation of the event sequence (RL Tuner's variety penalty).
- ``motif``: +1 for each note that completes a motif: ``motif_length`` steps ending at the note
  hold at least three distinct pitches.
- ``repeated_motif``: +1 for each note that completes a motif already heard, note for note and
  hold for hold, entirely earlier in the melody.
- ``intervals``: preferred melodic intervals between consecutive notes: steps and thirds +1,
  fourths and fifths +0.5, sixths +0.25, unisons and octaves 0, tritones and sevenths -1, more
  than an octave -2.
- ``leaps``: a leap (``leap_size`` semitones or more) followed by a note moving back in the
  opposite direction by 1-4 semitones is resolved (+1, at that note); followed by anything else,
  unresolved (-1). A leap on the last note cannot be judged and counts neither way.
- ``extremes``: +1 (at the last step) if the highest note is played exactly once, +1 if the
  lowest is.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from rl4gen.music.encoding import HOLD, LOWEST_MIDI, NOTE_OFF

RULES = ("key", "tonic", "repetition", "autocorrelation", "motif", "repeated_motif", "intervals", "leaps", "extremes")

C_MAJOR = (0, 2, 4, 5, 7, 9, 11)


@dataclass(frozen=True)
class TheoryConfig:
    key_pitch_classes: tuple[int, ...] = C_MAJOR
    tonic_pitch_class: int = 0
    max_repeats: int = 4
    max_hold: int = 16
    motif_length: int = 16
    leap_size: int = 5
    autocorrelation_threshold: float = 0.15


@dataclass
class Analysis:
    """Per-step rewards by rule (each ``len(events)`` long) and the counts behind the statistics."""

    rewards: dict[str, np.ndarray]
    num_notes: int = 0
    notes_not_in_key: int = 0
    repeated_violations: int = 0  # notes over max_repeats plus events held past max_hold
    starts_with_tonic: bool = False
    ends_with_tonic: bool = False
    autocorrelation: list[float] = field(default_factory=list)  # |r_k| for k = 1, 2, 3 (nan -> 0)
    notes_in_motif: int = 0
    notes_in_repeated_motif: int = 0
    leaps: int = 0  # judged leaps (with a following note)
    leaps_resolved: int = 0
    unique_max: bool = False
    unique_min: bool = False

    def total(self, weights: dict[str, float] | None = None) -> float:
        weights = weights or {}
        return float(sum(weights.get(name, 1.0) * r.sum() for name, r in self.rewards.items()))


def autocorrelation(events: Sequence[int], lag: int) -> float:
    """Pearson correlation of the event sequence with itself shifted by ``lag`` (nan if constant)."""
    x = np.asarray(events, dtype=np.float64)
    if lag >= len(x) - 1:
        return float("nan")
    a, b = x[:-lag], x[lag:]
    if a.std() == 0 or b.std() == 0:
        return float("nan")
    return float(np.corrcoef(a, b)[0, 1])


def _interval_score(semitones: int) -> float:
    d = abs(semitones)
    if d == 0 or d == 12:
        return 0.0
    if d <= 4:
        return 1.0
    if d in (5, 7):
        return 0.5
    if d in (8, 9):
        return 0.25
    if d in (6, 10, 11):
        return -1.0
    return -2.0


def analyse(events: Sequence[int], config: TheoryConfig | None = None) -> Analysis:
    """Apply every rule to one melody."""
    cfg = config or TheoryConfig()
    ev = [int(e) for e in events]
    n = len(ev)
    r = {name: np.zeros(n) for name in RULES}
    out = Analysis(rewards=r)
    if n == 0:
        return out
    key = set(cfg.key_pitch_classes)
    onsets = [t for t, e in enumerate(ev) if e >= 2]
    pitch = {t: ev[t] - 2 + LOWEST_MIDI for t in onsets}
    out.num_notes = len(onsets)

    # key
    for t in onsets:
        if pitch[t] % 12 not in key:
            r["key"][t] -= 1
            out.notes_not_in_key += 1

    # tonic
    if ev[0] >= 2 and pitch[0] % 12 == cfg.tonic_pitch_class:
        r["tonic"][0] += 1
        out.starts_with_tonic = True
    if onsets and pitch[onsets[-1]] % 12 == cfg.tonic_pitch_class:
        r["tonic"][n - 1] += 1
        out.ends_with_tonic = True

    # repetition: runs of the same pitch, and events sounding too long
    run = 0
    prev_pitch: int | None = None
    for t in onsets:
        run = run + 1 if pitch[t] == prev_pitch else 1
        prev_pitch = pitch[t]
        if run > cfg.max_repeats:
            r["repetition"][t] -= 1
            out.repeated_violations += 1
    held = 0
    for t, e in enumerate(ev):
        held = held + 1 if e == HOLD else 1
        if held == cfg.max_hold + 1:
            r["repetition"][t] -= 1
            out.repeated_violations += 1

    # autocorrelation (judged on the finished melody)
    coeffs = [autocorrelation(ev, k) for k in (1, 2, 3)]
    out.autocorrelation = [0.0 if np.isnan(c) else abs(c) for c in coeffs]
    r["autocorrelation"][n - 1] = -sum(c for c in out.autocorrelation if c > cfg.autocorrelation_threshold)

    # motifs
    m = cfg.motif_length
    for t in onsets:
        if t + 1 < m:
            continue
        window = ev[t + 1 - m : t + 1]
        if len({e for e in window if e >= 2}) < 3:
            continue
        r["motif"][t] += 1
        out.notes_in_motif += 1
        earlier = ev[: t + 1 - m]
        if any(earlier[s : s + m] == window for s in range(len(earlier) - m + 1)):
            r["repeated_motif"][t] += 1
            out.notes_in_repeated_motif += 1

    # intervals and leaps
    for i in range(1, len(onsets)):
        t, s = onsets[i], onsets[i - 1]
        step = pitch[t] - pitch[s]
        r["intervals"][t] += _interval_score(step)
        if abs(step) >= cfg.leap_size and i + 1 < len(onsets):
            u = onsets[i + 1]
            back = pitch[u] - pitch[t]
            out.leaps += 1
            if back != 0 and np.sign(back) == -np.sign(step) and abs(back) <= 4:
                r["leaps"][u] += 1
                out.leaps_resolved += 1
            else:
                r["leaps"][u] -= 1

    # unique extremes (judged on the finished melody)
    if len(onsets) >= 2:
        pitches = [pitch[t] for t in onsets]
        out.unique_max = pitches.count(max(pitches)) == 1
        out.unique_min = pitches.count(min(pitches)) == 1
        r["extremes"][n - 1] = float(out.unique_max) + float(out.unique_min)
    return out


def _rate(num: float, den: float) -> float:
    return float(num / den) if den else 0.0


def melody_metrics(melodies: Sequence[Sequence[int]], config: TheoryConfig | None = None) -> dict[str, float]:
    """RL Tuner's table over many melodies (percentages as fractions in [0, 1]).

    ``violations`` is the mean of the seven rule-violation rates (lower is better): notes not in
    key, excessive repetition, unresolved leaps, highest or lowest note not unique, not starting
    and not ending on the tonic.
    """
    analyses = [analyse(m, config) for m in melodies]
    k = max(len(analyses), 1)
    notes = sum(a.num_notes for a in analyses)
    leaps = sum(a.leaps for a in analyses)
    stats = {
        "notes_not_in_key": _rate(sum(a.notes_not_in_key for a in analyses), notes),
        "excessively_repeated": _rate(sum(a.repeated_violations for a in analyses), notes),
        "autocorrelation_1": sum(a.autocorrelation[0] for a in analyses if a.autocorrelation) / k,
        "autocorrelation_2": sum(a.autocorrelation[1] for a in analyses if a.autocorrelation) / k,
        "autocorrelation_3": sum(a.autocorrelation[2] for a in analyses if a.autocorrelation) / k,
        "leaps_resolved": _rate(sum(a.leaps_resolved for a in analyses), leaps),
        "unique_max": sum(a.unique_max for a in analyses) / k,
        "unique_min": sum(a.unique_min for a in analyses) / k,
        "starts_with_tonic": sum(a.starts_with_tonic for a in analyses) / k,
        "ends_with_tonic": sum(a.ends_with_tonic for a in analyses) / k,
        "notes_in_motif": _rate(sum(a.notes_in_motif for a in analyses), notes),
        "notes_in_repeated_motif": _rate(sum(a.notes_in_repeated_motif for a in analyses), notes),
        "notes_per_melody": notes / k,
    }
    unresolved = 1.0 - stats["leaps_resolved"] if leaps else 0.0
    violation_rates = [
        stats["notes_not_in_key"],
        min(1.0, stats["excessively_repeated"]),
        unresolved,
        1.0 - stats["unique_max"],
        1.0 - stats["unique_min"],
        1.0 - stats["starts_with_tonic"],
        1.0 - stats["ends_with_tonic"],
    ]
    stats["violations"] = sum(violation_rates) / len(violation_rates)
    return stats


__all__ = ["HOLD", "NOTE_OFF", "RULES", "Analysis", "TheoryConfig", "analyse", "autocorrelation", "melody_metrics"]
