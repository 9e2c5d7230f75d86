"""The event encoding: notes <-> events <-> text round trips, windows, MIDI and piano-roll files."""

from __future__ import annotations

from pathlib import Path

import pytest

from rl4gen.music.encoding import (
    EVENT_CHARS,
    HOLD,
    NOTE_OFF,
    NUM_EVENTS,
    MelodyError,
    Note,
    event_to_pitch,
    events_to_notes,
    events_to_text,
    notes_to_events,
    piano_roll_png,
    pitch_to_event,
    read_midi,
    segments,
    text_to_events,
    write_midi,
)


def test_alphabet_has_one_character_per_event() -> None:
    assert len(EVENT_CHARS) == NUM_EVENTS == 38
    assert len(set(EVENT_CHARS)) == NUM_EVENTS
    assert pitch_to_event(48) == 2 and pitch_to_event(83) == 37
    assert event_to_pitch(2) == 48 and event_to_pitch(37) == 83


def test_notes_events_round_trip_with_rests_and_holds() -> None:
    notes = [Note(60, 0, 4), Note(62, 4, 2), Note(64, 8, 8)]  # a rest at steps 6-7
    events = notes_to_events(notes, 16)
    assert events[:8] == [pitch_to_event(60), HOLD, HOLD, HOLD, pitch_to_event(62), HOLD, NOTE_OFF, HOLD]
    assert events_to_notes(events) == notes
    assert text_to_events(events_to_text(events)) == events


def test_leading_silence_and_trailing_rest() -> None:
    events = notes_to_events([Note(72, 2, 2)], 8)
    assert events == [NOTE_OFF, HOLD, pitch_to_event(72), HOLD, NOTE_OFF, HOLD, HOLD, HOLD]
    assert events_to_notes(events) == [Note(72, 2, 2)]


def test_repeated_pitch_keeps_separate_onsets() -> None:
    notes = [Note(67, 0, 2), Note(67, 2, 2)]
    assert events_to_notes(notes_to_events(notes)) == notes


def test_bad_events_and_characters_are_errors() -> None:
    with pytest.raises(MelodyError, match="outside the encodable range"):
        pitch_to_event(90)
    with pytest.raises(MelodyError, match="out of range"):
        events_to_text([0, 40])
    with pytest.raises(MelodyError, match="not a melody event"):
        text_to_events("AB?")
    with pytest.raises(MelodyError, match="duration"):
        notes_to_events([Note(60, 0, 0)])


def test_segments_resound_a_note_cut_by_the_window() -> None:
    e = pitch_to_event
    events = [e(60), HOLD, HOLD, HOLD, HOLD, HOLD, e(62), HOLD, NOTE_OFF, HOLD, e(64), HOLD]
    windows = segments(events, length=4, hop=4)
    # the first and third windows hold one note each: dropped; the second starts inside the C
    # and begins by re-sounding it
    assert windows == [[e(60), HOLD, e(62), HOLD]]
    # a window starting inside a rest begins with a note-off
    assert segments([e(60), NOTE_OFF, HOLD, e(62), e(64)], length=3, hop=2) == [[NOTE_OFF, e(62), e(64)]]


def test_midi_file_round_trip(tmp_path: Path) -> None:
    e = pitch_to_event
    events = [e(60), HOLD, HOLD, HOLD, e(67), HOLD, NOTE_OFF, HOLD, e(72), HOLD, HOLD, HOLD, HOLD, HOLD, HOLD, HOLD]
    path = write_midi(events, tmp_path / "m.mid")
    assert path.read_bytes()[:4] == b"MThd"
    assert read_midi(path, len(events)) == events


def test_piano_roll_is_a_png(tmp_path: Path) -> None:
    from PIL import Image

    e = pitch_to_event
    melody = [e(60), HOLD, e(64), HOLD, e(67), HOLD, HOLD, HOLD]
    path = piano_roll_png({"before": [melody, melody], "after": [melody]}, tmp_path / "roll.png", title="t")
    with Image.open(path) as img:
        assert img.format == "PNG" and img.size[0] > 100
