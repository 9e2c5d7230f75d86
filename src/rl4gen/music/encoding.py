"""Monophonic melodies as RL Tuner's 38 event classes, and back to notes, MIDI and piano rolls.

One event per sixteenth note:

- ``0`` NOTE_OFF: silence starts (a rest);
- ``1`` HOLD (RL Tuner's "no event"): whatever sounds goes on sounding;
- ``2 .. 37``: a note starts, MIDI pitch ``48 + (event - 2)`` (C3 to B5).

For a language-model policy every event is one character (:data:`EVENT_CHARS`), so a melody is a
short string that the character tokenizer and ``CausalLMPolicy`` handle like any text.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

NOTE_OFF = 0
HOLD = 1
NUM_EVENTS = 38
LOWEST_MIDI = 48
HIGHEST_MIDI = LOWEST_MIDI + NUM_EVENTS - 3  # 83
STEPS_PER_QUARTER = 4  # sixteenth-note grid

#: One printable character per event: "." note-off, "_" hold, then 36 pitches from C3 upward.
EVENT_CHARS = "._" + "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghij"
_CHAR_TO_EVENT = {c: i for i, c in enumerate(EVENT_CHARS)}


class MelodyError(ValueError):
    """A melody that cannot be encoded or decoded (bad event, pitch out of range, bad text)."""


def pitch_to_event(midi: int) -> int:
    if not LOWEST_MIDI <= midi <= HIGHEST_MIDI:
        raise MelodyError(f"MIDI pitch {midi} is outside the encodable range {LOWEST_MIDI}-{HIGHEST_MIDI}.")
    return midi - LOWEST_MIDI + 2


def event_to_pitch(event: int) -> int:
    if not 2 <= event < NUM_EVENTS:
        raise MelodyError(f"event {event} is not a note (notes are 2-{NUM_EVENTS - 1}).")
    return event - 2 + LOWEST_MIDI


def events_to_text(events: Sequence[int]) -> str:
    try:
        return "".join(EVENT_CHARS[e] for e in events)
    except IndexError:
        bad = next(e for e in events if not 0 <= e < NUM_EVENTS)
        raise MelodyError(f"event {bad} is out of range 0-{NUM_EVENTS - 1}.") from None


def text_to_events(text: str) -> list[int]:
    """Characters back to events; a character outside :data:`EVENT_CHARS` is an error."""
    try:
        return [_CHAR_TO_EVENT[c] for c in text]
    except KeyError as exc:
        raise MelodyError(f"character {exc.args[0]!r} is not a melody event (use {EVENT_CHARS!r}).") from None


@dataclass(frozen=True)
class Note:
    pitch: int  # MIDI pitch
    start: int  # in steps (sixteenths)
    duration: int  # in steps, >= 1


def notes_to_events(notes: Sequence[Note], length: int | None = None) -> list[int]:
    """Notes (sorted, non-overlapping) to events; gaps become a note-off followed by holds.

    Overlapping notes are cut where the next one starts (a melody is monophonic).
    """
    end = max((n.start + n.duration for n in notes), default=0)
    length = end if length is None else length
    events = [HOLD] * length
    if length and (not notes or notes[0].start > 0):
        events[0] = NOTE_OFF
    ordered = sorted(notes, key=lambda n: n.start)
    for i, note in enumerate(ordered):
        if note.duration < 1:
            raise MelodyError(f"note at step {note.start} has duration {note.duration}; durations are >= 1 step.")
        if note.start >= length:
            break
        events[note.start] = pitch_to_event(note.pitch)
        stop = note.start + note.duration
        nxt = ordered[i + 1].start if i + 1 < len(ordered) else length
        if stop < min(nxt, length):
            events[stop] = NOTE_OFF
    return events


def events_to_notes(events: Sequence[int]) -> list[Note]:
    """Events back to notes. A hold with nothing sounding (at the start or after a note-off) is
    silence."""
    notes: list[Note] = []
    current: tuple[int, int] | None = None  # (pitch, start)
    for t, e in enumerate(events):
        if not 0 <= e < NUM_EVENTS:
            raise MelodyError(f"event {e} at step {t} is out of range 0-{NUM_EVENTS - 1}.")
        if e == HOLD:
            continue
        if current is not None:
            notes.append(Note(current[0], current[1], t - current[1]))
            current = None
        if e != NOTE_OFF:
            current = (event_to_pitch(e), t)
    if current is not None:
        notes.append(Note(current[0], current[1], len(events) - current[1]))
    return notes


def segments(events: Sequence[int], length: int, hop: int) -> list[list[int]]:
    """Windows of ``length`` events every ``hop`` steps. A window that starts inside a note begins
    with that note re-sounded; one that starts inside a rest begins with a note-off. Windows with
    fewer than two notes are dropped."""
    out: list[list[int]] = []
    sounding: list[int] = []  # sounding[t]: the event that set what sounds at step t
    last = NOTE_OFF
    for e in events:
        if e != HOLD:
            last = e
        sounding.append(last)
    for start in range(0, len(events) - length + 1, hop):
        window = list(events[start : start + length])
        if window[0] == HOLD:
            window[0] = sounding[start]
        if sum(e >= 2 for e in window) >= 2:
            out.append(window)
    return out


# ---------------------------------------------------------------------------------------- files


def write_midi(events: Sequence[int], path: str | Path, *, bpm: float = 90.0, program: int = 0) -> Path:
    """A standard MIDI file (type 0, one track) that any player opens."""
    import mido

    ticks = 480
    per_step = ticks // STEPS_PER_QUARTER
    mid = mido.MidiFile(type=0, ticks_per_beat=ticks)
    track = mido.MidiTrack()
    mid.tracks.append(track)
    track.append(mido.MetaMessage("set_tempo", tempo=mido.bpm2tempo(bpm), time=0))
    track.append(mido.Message("program_change", program=program, time=0))
    now = 0
    for note in events_to_notes(events):
        on = note.start * per_step
        off = (note.start + note.duration) * per_step
        track.append(mido.Message("note_on", note=note.pitch, velocity=80, time=on - now))
        track.append(mido.Message("note_off", note=note.pitch, velocity=0, time=off - on))
        now = off
    track.append(mido.MetaMessage("end_of_track", time=max(0, len(events) * per_step - now)))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    mid.save(str(path))
    return path


def read_midi(path: str | Path, length: int | None = None) -> list[int]:
    """The first (or only) track's notes back to events (monophonic; on the sixteenth grid)."""
    import mido

    mid = mido.MidiFile(str(path))
    per_step = mid.ticks_per_beat / STEPS_PER_QUARTER
    notes: list[Note] = []
    now = 0
    starts: dict[int, int] = {}
    for msg in mido.merge_tracks(mid.tracks):
        now += msg.time
        if msg.type == "note_on" and msg.velocity > 0:
            starts[msg.note] = now
        elif msg.type in ("note_off", "note_on") and msg.note in starts:
            begin = starts.pop(msg.note)
            s, e = round(begin / per_step), round(now / per_step)
            notes.append(Note(msg.note, s, max(1, e - s)))
    return notes_to_events(notes, length)


def piano_roll_png(melodies: Mapping[str, Sequence[Sequence[int]]], path: str | Path, *, title: str | None = None) -> Path:
    """Piano rolls of a few melodies per label (one column per label), as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    labels = list(melodies)
    rows = max(len(v) for v in melodies.values())
    pitches = [n.pitch for items in melodies.values() for ev in items for n in events_to_notes(ev)]
    low, high = (min(pitches) - 2, max(pitches) + 2) if pitches else (LOWEST_MIDI, HIGHEST_MIDI)
    names = ["C", "C#", "D", "D#", "E", "F", "F#", "G", "G#", "A", "A#", "B"]
    ticks = [p for p in range(low, high + 1) if p % 12 in (0, 4, 7)]  # C, E, G
    fig, axes = plt.subplots(rows, len(labels), figsize=(4.2 * len(labels), 1.6 * rows), squeeze=False)
    for j, label in enumerate(labels):
        for i in range(rows):
            ax = axes[i][j]
            if i >= len(melodies[label]):
                ax.axis("off")
                continue
            events = melodies[label][i]
            for note in events_to_notes(events):
                ax.add_patch(Rectangle((note.start, note.pitch - 0.4), note.duration - 0.1, 0.8, color="tab:blue"))
            ax.set_xlim(0, max(len(events), 1))
            ax.set_ylim(low, high)
            ax.set_yticks(ticks)
            ax.set_yticklabels([f"{names[p % 12]}{p // 12 - 1}" for p in ticks], fontsize=7)
            ax.grid(axis="y", alpha=0.2)
            ax.set_xticks(range(0, len(events) + 1, 16))
            ax.tick_params(labelsize=7)
            ax.grid(axis="x", alpha=0.3)
            if i == 0:
                ax.set_title(label, fontsize=9)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path
