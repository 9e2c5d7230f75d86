"""Each music-theory rule pinned on hand-written melodies, edge cases included."""

from __future__ import annotations

import numpy as np
import pytest

from rl4gen.music.encoding import HOLD, NOTE_OFF, pitch_to_event
from rl4gen.music.theory import RULES, TheoryConfig, analyse, autocorrelation, melody_metrics

C4, D4, E4, F4, G4, A4, B4, C5 = 60, 62, 64, 65, 67, 69, 71, 72
_ = HOLD
R = NOTE_OFF


def mel(*items: int) -> list[int]:
    """MIDI pitches become note events; HOLD and NOTE_OFF pass through."""
    return [pitch_to_event(x) if x >= 48 else x for x in items]


def rule(events: list[int], name: str, **cfg: int) -> np.ndarray:
    return analyse(events, TheoryConfig(**cfg)).rewards[name]


def test_every_rule_gives_one_value_per_step() -> None:
    events = mel(C4, _, E4, G4, R, _, C5, _)
    a = analyse(events)
    assert set(a.rewards) == set(RULES)
    assert all(r.shape == (len(events),) for r in a.rewards.values())


def test_key_penalises_each_note_outside_c_major_and_ignores_rests_and_holds() -> None:
    r = rule(mel(C4, 61, _, R, 66, E4), "key")  # C#4 and F#4 are out of key
    assert r.tolist() == [0, -1, 0, 0, -1, 0]
    assert analyse(mel(C4, 61, E4)).notes_not_in_key == 1


def test_tonic_at_start_and_end() -> None:
    r = rule(mel(C4, _, E4, _, G4, _, C5, _), "tonic")
    assert r[0] == 1 and r[-1] == 1 and r.sum() == 2
    # starting with a rest is not starting on the tonic; the last *note* decides the end
    r = rule(mel(R, C4, E4, C4, _, R), "tonic")
    assert r[0] == 0 and r[-1] == 1
    assert rule(mel(D4, C4, E4), "tonic").sum() == 0


def test_repetition_counts_runs_of_the_same_pitch_through_holds_and_rests() -> None:
    # five Gs in a row (holds and a rest between them do not break the run): the fifth is too many
    r = rule(mel(G4, G4, _, G4, R, G4, G4, A4), "repetition", max_repeats=4)
    assert r.tolist() == [0, 0, 0, 0, 0, 0, -1, 0]
    # four is fine
    assert rule(mel(G4, G4, G4, G4, A4), "repetition", max_repeats=4).sum() == 0


def test_repetition_penalises_a_note_or_rest_held_too_long_once() -> None:
    r = rule(mel(C4, _, _, _, _, _, D4), "repetition", max_hold=4)
    assert r.tolist() == [0, 0, 0, 0, -1, 0, 0]
    r = rule(mel(C4, R, _, _, _, _, _), "repetition", max_hold=4)  # a long rest counts too
    assert r.sum() == -1 and r[5] == -1


def test_autocorrelation_penalty_matches_numpy_on_the_final_step() -> None:
    events = mel(C4, E4, C4, E4, C4, E4, C4, E4)
    expected = np.corrcoef(events[:-1], events[1:])[0, 1]
    assert autocorrelation(events, 1) == pytest.approx(expected)
    r = rule(events, "autocorrelation")
    assert r[:-1].sum() == 0
    coeffs = [abs(autocorrelation(events, k)) for k in (1, 2, 3)]
    assert r[-1] == pytest.approx(-sum(c for c in coeffs if c > 0.15))
    # a constant sequence has no defined correlation and no penalty
    assert rule([HOLD] * 8, "autocorrelation").sum() == 0


def test_motif_needs_three_distinct_pitches_within_the_window() -> None:
    r = rule(mel(C4, D4, C4, E4, E4), "motif", motif_length=4)
    # windows ending at steps 3 (C D C E) and 4 (D C E E) hold 3 distinct pitches
    assert r.tolist() == [0, 0, 0, 1, 1]
    assert rule(mel(C4, _, D4, _, C4, _), "motif", motif_length=4).sum() == 0  # holds are not pitches


def test_repeated_motif_must_repeat_note_for_note_after_the_first() -> None:
    first = [C4, D4, E4, _]
    r = rule(mel(*first, *first), "repeated_motif", motif_length=4)
    assert r.sum() == 0  # the repeat ends on a hold: the motif must end on a note
    first = [C4, D4, _, E4]
    r = rule(mel(*first, *first), "repeated_motif", motif_length=4)
    assert r.tolist() == [0, 0, 0, 0, 0, 0, 0, 1]
    assert rule(mel(C4, D4, _, E4, C4, D4, _, F4), "repeated_motif", motif_length=4).sum() == 0


def test_preferred_intervals_between_consecutive_notes() -> None:
    # C4->D4 a second (+1), D4->A4 a fifth (+0.5), A4->D#5 a tritone (-1), D#5->C#3 over an octave (-2);
    # a rest between two notes does not hide their interval
    r = rule(mel(C4, D4, A4, R, 75, 49), "intervals")
    assert r.tolist() == [0, 1.0, 0.5, 0, -1.0, -2.0]


def test_interval_table() -> None:
    from rl4gen.music.theory import _interval_score

    assert [_interval_score(d) for d in (0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13)] == [
        0, 1, 1, 1, 1, 0.5, -1, 0.5, 0.25, 0.25, -1, -1, 0, -2
    ]
    assert _interval_score(-7) == 0.5


def test_leaps_resolved_unresolved_and_octave() -> None:
    # up a fifth, then back down a step: resolved
    r = rule(mel(C4, G4, F4), "leaps")
    assert r.tolist() == [0, 0, 1]
    # up a fifth, then further up: not resolved
    assert rule(mel(C4, G4, A4), "leaps").tolist() == [0, 0, -1]
    # an octave leap down resolved by a third up, with a rest between the notes
    a = analyse(mel(C5, C4, R, E4))
    assert a.rewards["leaps"].tolist() == [0, 0, 0, 1]
    assert (a.leaps, a.leaps_resolved) == (1, 1)
    # a leap on the last note cannot be judged
    a = analyse(mel(C4, D4, A4))
    assert a.leaps == 0 and a.rewards["leaps"].sum() == 0
    # a step is no leap
    assert analyse(mel(C4, D4, C4)).leaps == 0


def test_unique_extremes() -> None:
    a = analyse(mel(C4, E4, G4, E4, D4))
    assert a.unique_max and a.unique_min
    assert a.rewards["extremes"][-1] == 2
    a = analyse(mel(C4, G4, C4, G4))
    assert not a.unique_max and not a.unique_min
    assert a.rewards["extremes"].sum() == 0
    a = analyse(mel(C4, _, _, R))  # one note: nothing to compare
    assert a.rewards["extremes"].sum() == 0


def test_metrics_table_over_melodies() -> None:
    good = mel(C4, _, D4, _, E4, _, G4, _, F4, _, E4, _, D4, _, C4, _)
    bad = mel(61, _, 61, 61, 61, 61, 61, _, 66, _, _, _, _, _, _, _)
    m = melody_metrics([good, good])
    assert m["notes_not_in_key"] == 0 and m["starts_with_tonic"] == 1 and m["ends_with_tonic"] == 1
    assert m["violations"] < 0.2
    worse = melody_metrics([bad, bad])
    assert worse["notes_not_in_key"] == 1.0
    assert worse["excessively_repeated"] > 0
    assert worse["violations"] > m["violations"]
