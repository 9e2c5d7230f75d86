"""What the server and the command line do with the database: invites, raters, votes, queues,
import from run folders and export to the JSONL formats of docs/data.md."""

from __future__ import annotations

import io
import json
import math
import random
from collections import Counter, defaultdict
from collections.abc import Iterator
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

from sqlalchemy import CursorResult, func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, aliased

from rl4gen.config import ConfigError
from rl4gen.feedback.db import (
    COMPARISON_VALUES,
    RATING_VALUES,
    Invite,
    Media,
    Rater,
    RewardModelEval,
    Sample,
    Vote,
    hash_token,
    new_token,
)


class FeedbackError(ConfigError):
    """A request the database cannot honour; ``status`` is the HTTP code the server answers."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


# ------------------------------------------------------------------------ invites and raters


def create_invites(session: Session, count: int = 1, note: str = "") -> list[str]:
    """New single-use invite tokens (returned once; only their hashes are stored)."""
    tokens = [new_token() for _ in range(count)]
    session.add_all(Invite(token_hash=hash_token(t), note=note) for t in tokens)
    session.commit()
    return tokens


def join(session: Session, invite: str, name: str) -> tuple[Rater, str]:
    """Spend an invite: a new rater and their own token (the invite cannot be used again)."""
    row = session.scalars(select(Invite).where(Invite.token_hash == hash_token(invite))).first()
    if row is None:
        raise FeedbackError("the invite token is not valid: ask the admin for a new one.", 403)
    used = FeedbackError("the invite token was already used: ask the admin for a new one.", 403)
    if row.rater_id is not None:
        raise used
    token = new_token()
    rater = Rater(name=name, token_hash=hash_token(token))
    session.add(rater)
    session.flush()
    # Claim the invite only if it is still free: of two joins racing on one invite, one wins.
    claimed = session.execute(
        update(Invite).where(Invite.id == row.id, Invite.rater_id.is_(None)).values(rater_id=rater.id)
    )
    if cast(CursorResult[Any], claimed).rowcount != 1:
        session.rollback()
        raise used
    session.commit()
    return rater, token


def rater_for_token(session: Session, token: str) -> Rater | None:
    return session.scalars(select(Rater).where(Rater.token_hash == hash_token(token), Rater.active.is_(True))).first()


# ----------------------------------------------------------------------------------- votes


@dataclass(frozen=True)
class VoteResult:
    vote: Vote
    created: bool
    """False when the vote id was already stored (a retry): nothing new was written."""


def record_vote(
    session: Session,
    rater: Rater,
    vote_id: str,
    sample_id: int,
    value: str,
    other_id: int | None = None,
    comment: str = "",
    write_lock: AbstractContextManager[Any] | None = None,
) -> VoteResult:
    """Store one vote exactly once: a repeated ``vote_id`` of the same rater returns the stored row.

    ``write_lock`` serialises the write in this process (SQLite allows one writer at a time, and
    its busy handler sleeps in coarse steps when writers collide)."""
    kind = "comparison" if other_id is not None else "rating"
    allowed = COMPARISON_VALUES if kind == "comparison" else RATING_VALUES
    if value not in allowed:
        raise FeedbackError(f"a {kind} takes value {' / '.join(allowed)}, got {value!r}.", 422)
    existing = _stored_vote(session, rater.id, vote_id)
    if existing is not None:
        return _same_vote(existing, kind, sample_id, other_id, value)
    ids = {sample_id} | ({other_id} if other_id is not None else set())
    if other_id == sample_id:
        raise FeedbackError("a comparison needs two different samples.", 422)
    found = session.scalars(select(Sample).where(Sample.id.in_(ids))).all()
    if len(found) != len(ids):
        missing = sorted(ids - {s.id for s in found})
        raise FeedbackError(f"no sample with id {missing[0]}: it may have been deleted.", 404)
    if kind == "comparison" and found[0].prompt != found[-1].prompt:
        raise FeedbackError("the two samples answer different prompts: compare samples of one prompt.", 422)
    vote = Vote(vote_id=vote_id, rater_id=rater.id, kind=kind, sample_id=sample_id, other_id=other_id, value=value, comment=comment)
    session.add(vote)
    try:
        with write_lock or nullcontext():
            session.commit()
    except IntegrityError:  # the same vote id arrived twice at once: the other request stored it
        session.rollback()
        existing = _stored_vote(session, rater.id, vote_id)
        if existing is None:
            raise
        return _same_vote(existing, kind, sample_id, other_id, value)
    return VoteResult(vote, True)


def _stored_vote(session: Session, rater_id: int, vote_id: str) -> Vote | None:
    return session.scalars(select(Vote).where(Vote.rater_id == rater_id, Vote.vote_id == vote_id)).first()


def _same_vote(existing: Vote, kind: str, sample_id: int, other_id: int | None, value: str) -> VoteResult:
    if (existing.kind, existing.sample_id, existing.other_id, existing.value) != (kind, sample_id, other_id, value):
        raise FeedbackError(f"vote id {existing.vote_id!r} was already used for a different vote: use a new id.", 409)
    return VoteResult(existing, False)


def delete_vote(session: Session, vote_row_id: int) -> None:
    vote = session.get(Vote, vote_row_id)
    if vote is None:
        raise FeedbackError(f"no vote with id {vote_row_id}.", 404)
    session.delete(vote)
    session.commit()


def delete_sample(session: Session, sample_id: int) -> None:
    sample = session.get(Sample, sample_id)
    if sample is None:
        raise FeedbackError(f"no sample with id {sample_id}.", 404)
    for vote in session.scalars(select(Vote).where((Vote.sample_id == sample_id) | (Vote.other_id == sample_id))):
        session.delete(vote)
    for media in session.scalars(select(Media).where(Media.sample_id == sample_id)):
        session.delete(media)
    session.delete(sample)
    session.commit()


# ---------------------------------------------------------------------------------- queues


def next_sample(session: Session, rater: Rater, rng: random.Random) -> Sample | None:
    """A sample this rater has not rated yet, among those with the fewest ratings."""
    rated = select(Vote.sample_id).where(Vote.rater_id == rater.id, Vote.kind == "rating")
    counts = (
        select(Sample.id, func.count(Vote.id).label("n"))
        .outerjoin(Vote, (Vote.sample_id == Sample.id) & (Vote.kind == "rating"))
        .where(Sample.id.not_in(rated))
        .group_by(Sample.id)
        .order_by(func.count(Vote.id))
        .limit(20)
    )
    rows = session.execute(counts).all()
    if not rows:
        return None
    least = rows[0].n
    return session.get(Sample, rng.choice([r.id for r in rows if r.n == least]))


def pair_uncertainty(a: Sample, b: Sample) -> float:
    """How unsure the reward model is which of two samples is better: 1 - |2 P(a > b) - 1| plus
    the ensemble spread; samples it has not scored count as fully uncertain."""
    if a.rm_mean is None or b.rm_mean is None:
        return 1.0 + 1.0
    p = 1.0 / (1.0 + math.exp(-(a.rm_mean - b.rm_mean)))
    return 1.0 - abs(2.0 * p - 1.0) + ((a.rm_std or 0.0) + (b.rm_std or 0.0)) / 2.0


def next_pair(session: Session, rater: Rater, rng: random.Random, candidates: int = 200) -> tuple[Sample, Sample] | None:
    """The active queue: among pairs of different completions of one prompt that this rater has
    not compared, the one the reward model is least certain about (ties broken by fewest
    comparisons, then at random). The order shown is random."""
    prompts = session.execute(
        select(Sample.prompt).group_by(Sample.prompt).having(func.count(func.distinct(Sample.completion)) > 1)
    ).scalars().all()
    if not prompts:
        return None
    done = {
        frozenset((a, b))
        for a, b in session.execute(select(Vote.sample_id, Vote.other_id).where(Vote.rater_id == rater.id, Vote.kind == "comparison"))
    }
    seen = Counter(
        frozenset((a, b)) for a, b in session.execute(select(Vote.sample_id, Vote.other_id).where(Vote.kind == "comparison"))
    )
    best: tuple[float, float, float, Sample, Sample] | None = None
    rng.shuffle(prompts := list(prompts))
    tried = 0
    for prompt in prompts:
        samples = session.scalars(select(Sample).where(Sample.prompt == prompt).limit(50)).all()
        for i, a in enumerate(samples):
            for b in samples[i + 1 :]:
                if a.completion == b.completion or frozenset((a.id, b.id)) in done:
                    continue
                key = (-pair_uncertainty(a, b), seen[frozenset((a.id, b.id))], rng.random())
                if best is None or key < best[:3]:
                    best = (*key, a, b)
                tried += 1
        if tried >= candidates:
            break
    if best is None:
        return None
    a, b = best[3], best[4]
    return (a, b) if rng.random() < 0.5 else (b, a)


# ---------------------------------------------------------------------------------- import


def _add_sample(session: Session, source: str, key: str, **fields: Any) -> Sample | None:
    exists = session.scalars(select(Sample.id).where(Sample.source == source, Sample.key == key)).first()
    if exists is not None:
        return None
    sample = Sample(source=source, key=key, **fields)
    session.add(sample)
    session.flush()
    return sample


def _png(image: Any) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


def piano_roll(midi: bytes, scale: int = 4) -> bytes | None:
    """A piano-roll PNG of a MIDI file: one row per pitch in its range, one column per tick
    step (notes drawn as bars); None when the file holds no notes."""
    import mido
    from PIL import Image, ImageDraw

    try:
        song = mido.MidiFile(file=io.BytesIO(midi))
    except (OSError, ValueError, EOFError):
        return None
    notes: list[tuple[int, int, int]] = []  # (pitch, start, end) in ticks
    for track in song.tracks:
        t, on = 0, {}
        for msg in track:
            t += msg.time
            if msg.type == "note_on" and msg.velocity > 0:
                on[msg.note] = t
            elif msg.type in ("note_off", "note_on") and msg.note in on:
                notes.append((msg.note, on.pop(msg.note), t))
    if not notes:
        return None
    unit = max(1, song.ticks_per_beat // 4)  # sixteenth notes
    low, high = min(n[0] for n in notes), max(n[0] for n in notes)
    end = max(n[2] for n in notes) // unit + 1
    image = Image.new("RGB", (end * scale * 2, (high - low + 1) * scale * 2), (250, 250, 246))
    draw = ImageDraw.Draw(image)
    for pitch, start, stop in notes:
        y = (high - pitch) * scale * 2
        draw.rectangle((start // unit * scale * 2, y, max(start // unit + 1, stop // unit) * scale * 2 - 1, y + scale * 2 - 1),
                       fill=(74, 123, 208))
    return _png(image)


def import_run(session: Session, run_dir: str | Path) -> int:
    """Load a run folder's samples: ``samples/step_*.jsonl`` (text), ``samples/levels.jsonl``
    (levels, drawn as PNG), ``*.mid`` (melodies, with a same-named PNG as piano roll when there
    is one) and other PNGs (images). Importing the same folder again adds only what is new."""
    run = Path(run_dir)
    folder = run / "samples"
    if not folder.is_dir():
        raise FeedbackError(f"{str(run)!r} has no samples/ folder: pass a run folder written by rl4gen training.")
    source = str(run.resolve())
    added = 0
    for path in sorted(folder.glob("step_*.jsonl")):
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                prompt, completion = str(row["prompt"]), str(row["completion"])
            except (json.JSONDecodeError, KeyError, TypeError) as exc:
                raise FeedbackError(f"{path}:{number} is not a sample record ({exc}): each line needs 'prompt' and 'completion'.") from None
            step = row.get("step")
            version = f"{run.name}:step_{step}" if step is not None else run.name
            meta = {k: v for k, v in row.items() if k not in ("prompt", "completion")}
            if _add_sample(session, source, f"{path.name}:{number}", prompt=prompt, completion=completion,
                           modality="text", model_version=version, meta=meta):
                added += 1
    levels = folder / "levels.jsonl"
    if levels.is_file():
        from rl4gen.envs.levels.render import level_image
        from rl4gen.envs.levels.samples import read_levels

        for number, (problem, level, record) in enumerate(read_levels(levels), start=1):
            sample = _add_sample(session, source, f"levels.jsonl:{number}", prompt=f"level: {problem}",
                                 completion="\n".join(record["level"]), modality="level", model_version=run.name,
                                 meta={k: v for k, v in record.items() if k != "level"})
            if sample is not None:
                session.add(Media(sample_id=sample.id, role="image", mime="image/png", data=_png(level_image(level, problem))))
                added += 1
    skip = {"levels.png", "piano_roll.png"}
    for path in sorted(folder.rglob("*.mid")):
        rel = str(path.relative_to(folder))
        sample = _add_sample(session, source, rel, prompt=f"melody: {path.parent.name}", completion=path.stem,
                             modality="melody", model_version=run.name, meta={"file": rel})
        if sample is not None:
            session.add(Media(sample_id=sample.id, role="midi", mime="audio/midi", data=path.read_bytes()))
            roll = path.with_suffix(".png")
            if roll.is_file():
                skip.add(roll.name)
                picture: bytes | None = roll.read_bytes()
            else:
                picture = piano_roll(path.read_bytes())
            if picture:
                session.add(Media(sample_id=sample.id, role="image", mime="image/png", data=picture))
            added += 1
    for path in sorted(folder.rglob("*.png")):
        if path.name in skip or path.with_suffix(".mid").is_file():
            continue
        rel = str(path.relative_to(folder))
        sample = _add_sample(session, source, rel, prompt=f"image: {path.parent.name}", completion=path.stem,
                             modality="image", model_version=run.name, meta={"file": rel})
        if sample is not None:
            session.add(Media(sample_id=sample.id, role="image", mime="image/png", data=path.read_bytes()))
            added += 1
    session.commit()
    return added


def add_samples(session: Session, rows: list[dict[str, Any]], source: str = "api") -> int:
    """Add text samples given as ``{"prompt", "completion", "model_version"?, "key"?}``."""
    added = 0
    for i, row in enumerate(rows):
        key = str(row.get("key") or f"{source}:{i}:{hash((row['prompt'], row['completion'])) & 0xFFFFFFFF:x}")
        if _add_sample(session, source, key, prompt=row["prompt"], completion=row["completion"], modality="text",
                       model_version=row.get("model_version") or "", meta={}):
            added += 1
    session.commit()
    return added


# ---------------------------------------------------------------------------------- export


def preference_records(session: Session) -> Iterator[dict[str, Any]]:
    """Comparisons as preference pairs (``a`` or ``b`` won); ties carry no preference and are left out."""
    a, b = aliased(Sample), aliased(Sample)
    rows = session.execute(
        select(Vote, a, b, Rater.name)
        .join(a, Vote.sample_id == a.id)
        .join(b, Vote.other_id == b.id)
        .join(Rater, Vote.rater_id == Rater.id)
        .where(Vote.kind == "comparison", Vote.value != "tie")
        .order_by(Vote.id)
    )
    for vote, sa, sb, rater in rows:
        chosen, rejected = (sa, sb) if vote.value == "a" else (sb, sa)
        if chosen.completion == rejected.completion or not chosen.prompt.strip() or not chosen.completion.strip() or not rejected.completion.strip():
            continue
        yield {"prompt": chosen.prompt, "chosen": chosen.completion, "rejected": rejected.completion,
               "rater": rater, "vote_id": vote.vote_id, "chosen_id": chosen.id, "rejected_id": rejected.id,
               "chosen_model_version": chosen.model_version, "rejected_model_version": rejected.model_version}


def rating_records(session: Session) -> Iterator[dict[str, Any]]:
    rows = session.execute(
        select(Vote, Sample, Rater.name).join(Sample, Vote.sample_id == Sample.id).join(Rater, Vote.rater_id == Rater.id)
        .where(Vote.kind == "rating").order_by(Vote.id)
    )
    for vote, sample, rater in rows:
        if not sample.prompt.strip() or not sample.completion.strip():
            continue
        yield {"prompt": sample.prompt, "completion": sample.completion, "label": vote.value, "rater": rater,
               "vote_id": vote.vote_id, "sample_id": sample.id, "model_version": sample.model_version,
               **({"comment": vote.comment} if vote.comment else {})}


def export_jsonl(session: Session, fmt: str, out: str | Path) -> int:
    """Write ``preferences`` or ``ratings`` JSONL (docs/data.md); returns the number of records."""
    records = {"preferences": preference_records, "ratings": rating_records}.get(fmt)
    if records is None:
        raise FeedbackError(f"unknown export format {fmt!r}: use preferences or ratings.")
    path = Path(out)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    n = 0
    with tmp.open("w", encoding="utf-8") as f:
        for record in records(session):
            f.write(json.dumps(record, ensure_ascii=False) + "\n")
            n += 1
    tmp.replace(path)
    return n


# ------------------------------------------------------------------------------- dashboard


def dashboard_stats(session: Session) -> dict[str, Any]:
    """Votes per rater and per model version, agreement between raters, reward-model accuracy."""
    per_rater = [
        {"rater": name, "votes": n}
        for name, n in session.execute(
            select(Rater.name, func.count(Vote.id)).outerjoin(Vote, Vote.rater_id == Rater.id).group_by(Rater.id, Rater.name).order_by(Rater.id)
        )
    ]
    per_version: dict[str, dict[str, int]] = defaultdict(lambda: {"like": 0, "dislike": 0, "wins": 0, "losses": 0})
    for version, value, n in session.execute(
        select(Sample.model_version, Vote.value, func.count(Vote.id)).join(Vote, Vote.sample_id == Sample.id)
        .where(Vote.kind == "rating").group_by(Sample.model_version, Vote.value)
    ):
        per_version[version][value] += n
    a, b = aliased(Sample), aliased(Sample)
    for va, vb, value, n in session.execute(
        select(a.model_version, b.model_version, Vote.value, func.count(Vote.id))
        .join(a, Vote.sample_id == a.id).join(b, Vote.other_id == b.id)
        .where(Vote.kind == "comparison", Vote.value != "tie").group_by(a.model_version, b.model_version, Vote.value)
    ):
        win, lose = (va, vb) if value == "a" else (vb, va)
        per_version[win]["wins"] += n
        per_version[lose]["losses"] += n
    total = session.scalar(select(func.count(Vote.id))) or 0
    evals: list[dict[str, Any]] = [
        {"model": m, "accuracy": acc, "pairs": p, "at": at.isoformat(timespec="seconds")}
        for m, acc, p, at in session.execute(
            select(RewardModelEval.model, RewardModelEval.accuracy, RewardModelEval.pairs, RewardModelEval.created_at).order_by(RewardModelEval.id)
        )
    ]
    return {
        "votes": total,
        "samples": session.scalar(select(func.count(Sample.id))) or 0,
        "raters": per_rater,
        "versions": [{"version": k or "(none)", **v} for k, v in sorted(per_version.items())],
        "agreement": agreement(session),
        "reward_model": evals,
        "accuracy_plot": line_plot([float(e["accuracy"]) for e in evals]),
    }


def line_plot(values: list[float], width: int = 320, height: int = 120, pad: int = 10) -> dict[str, Any]:
    """Points of an SVG polyline for values in [0, 1] (the dashboard draws plots without script)."""
    if not values:
        return {"points": "", "dots": [], "width": width, "height": height}
    step = (width - 2 * pad) / max(1, len(values) - 1)
    xy = [(pad + i * step, height - pad - v * (height - 2 * pad)) for i, v in enumerate(values)]
    return {"points": " ".join(f"{x:.1f},{y:.1f}" for x, y in xy), "dots": xy, "width": width, "height": height}


def agreement(session: Session) -> dict[str, Any]:
    """Pairwise agreement between raters on items two or more rated: the fraction of rater pairs
    giving the same answer (ratings by sample; comparisons by unordered pair, answers aligned)."""
    answers: dict[tuple[Any, ...], dict[int, str]] = defaultdict(dict)
    for vote in session.scalars(select(Vote)):
        if vote.kind == "rating":
            answers[("r", vote.sample_id)][vote.rater_id] = vote.value
        else:
            assert vote.other_id is not None
            lo, hi = sorted((vote.sample_id, vote.other_id))
            value = vote.value if vote.sample_id == lo or vote.value == "tie" else {"a": "b", "b": "a"}[vote.value]
            answers[("c", lo, hi)][vote.rater_id] = value
    same = pairs = items = 0
    for by_rater in answers.values():
        values = list(by_rater.values())
        if len(values) < 2:
            continue
        items += 1
        for i in range(len(values)):
            for j in range(i + 1, len(values)):
                pairs += 1
                same += values[i] == values[j]
    return {"shared_items": items, "rater_pairs": pairs, "rate": (same / pairs) if pairs else None}


def record_reward_model_eval(session: Session, model: str, accuracy: float, pairs: int) -> None:
    session.add(RewardModelEval(model=model, accuracy=accuracy, pairs=pairs))
    session.commit()
