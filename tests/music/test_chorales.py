"""Bach chorales from music21's corpus: transposition, quantisation and the cache."""

from __future__ import annotations

from pathlib import Path

from rl4gen.music.chorales import _shift_to, encode_score, is_validation, load_chorales
from rl4gen.music.encoding import HOLD, NOTE_OFF, NUM_EVENTS, events_to_notes, pitch_to_event


def test_shift_takes_the_nearest_transposition() -> None:
    assert _shift_to(7, 0) == 5  # G up a fourth to C
    assert _shift_to(2, 0) == -2  # D down a tone to C
    assert _shift_to(4, 9) == 5  # E minor up a fourth to A minor
    assert _shift_to(0, 0) == 0


def test_a_real_chorale_is_transposed_to_c_and_bar_aligned() -> None:
    from music21 import corpus

    score = corpus.parse("bach/bwv269")  # G major, 3/4, soprano starts G4 on a quarter-note pickup
    chorale = encode_score(score, "bach/bwv269")
    assert chorale is not None and chorale.mode == "major"
    # the pickup (one quarter of a 3/4 bar) is padded with two quarters of rest; G4 becomes C5
    assert chorale.events[:8] == [NOTE_OFF] + [HOLD] * 7
    assert chorale.events[8] == pitch_to_event(72)
    assert chorale.events[12] == pitch_to_event(72)  # the second G, a half note, on the downbeat
    pitch_classes = {n.pitch % 12 for n in events_to_notes(chorale.events)}
    assert pitch_classes <= {0, 2, 4, 5, 7, 9, 11, 6}  # C major, with the odd raised fourth


def test_first_chorales_load_and_cache(tmp_path: Path) -> None:
    path = tmp_path / "chorales.json"
    chorales = load_chorales(path, log=lambda m: None, limit=8)
    assert 6 <= len(chorales) <= 8 and path.is_file()
    assert all(0 <= e < NUM_EVENTS for c in chorales for e in c.events)
    assert {c.mode for c in chorales} <= {"major", "minor"}
    again = load_chorales(path, log=lambda m: None, limit=8)  # read back from the cache
    assert again == chorales


def test_validation_split_is_stable_and_about_a_tenth() -> None:
    names = [f"bach/bwv{i}" for i in range(1000)]
    held = [n for n in names if is_validation(n)]
    assert 60 < len(held) < 140
    assert held == [n for n in names if is_validation(n)]
