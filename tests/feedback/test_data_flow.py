"""From a run folder into the database and back out: import, export, and `rl4gen reward train
--from-db`, whose accuracy lands on the dashboard and whose scores order the active queue."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from rl4gen.cli import app
from rl4gen.data import load_preferences, load_ratings

runner = CliRunner()


def cli(*args: str) -> tuple[int, str, str]:
    result = runner.invoke(app, list(args), env={"COLUMNS": "200"})
    return result.exit_code, result.stdout, result.stderr


def make_run(tmp_path: Path) -> Path:
    """A run folder with text samples, levels, a melody and an image, as training leaves them."""
    import mido
    from PIL import Image

    run = tmp_path / "arith__grpo__0__20261121-000000"
    samples = run / "samples"
    (samples / "melodies").mkdir(parents=True)
    rows = []
    for step in (1, 2):
        for a in range(4):
            prompt = f"{a}+{a}="
            rows.append((step, {"step": step, "prompt": prompt, "completion": str(2 * a if step == 2 else 2 * a + 1), "reward": 0.0}))
    for step in (1, 2):
        lines = [json.dumps(r) for s, r in rows if s == step]
        (samples / f"step_{step:06d}.jsonl").write_text("\n".join(lines) + "\n")
    (samples / "levels.jsonl").write_text(json.dumps({"problem": "binary", "level": ["#..#", "....", "#..#"]}) + "\n")
    song = mido.MidiFile()
    track = mido.MidiTrack()
    song.tracks.append(track)
    for note in (60, 64, 67):
        track.append(mido.Message("note_on", note=note, velocity=64, time=0))
        track.append(mido.Message("note_off", note=note, velocity=0, time=240))
    song.save(samples / "melodies" / "chorale_0.mid")
    Image.new("RGB", (8, 8), (255, 0, 0)).save(samples / "digit_3.png")
    return run


def test_import_export_and_reward_train_from_db(tmp_path: Path, tiny_model_dir: Path, one_thread: None) -> None:
    db = str(tmp_path / "feedback.db")
    run = make_run(tmp_path)
    code, out, err = cli("feedback", "import", str(run), "--db", db)
    assert code == 0, err
    assert "11 new samples" in out  # 8 text + 1 level + 1 melody + 1 image
    code, out, _ = cli("feedback", "import", str(run), "--db", db)
    assert "0 new samples" in out  # idempotent

    from sqlalchemy import select

    from rl4gen.feedback.db import Media, Sample
    from rl4gen.feedback.loop import open_session
    from rl4gen.feedback.store import create_invites, join, next_pair, record_vote

    with open_session(db) as session:
        kinds = {s.modality: s for s in session.scalars(select(Sample))}
        assert set(kinds) == {"text", "level", "melody", "image"}
        roles = {m.role for m in session.scalars(select(Media).where(Media.sample_id == kinds["melody"].id))}
        assert roles == {"midi", "image"}  # the MIDI file and a piano roll drawn from it
        level_png = session.scalars(select(Media.data).where(Media.sample_id == kinds["level"].id)).one()
        assert level_png[:4] == b"\x89PNG"
        assert kinds["text"].model_version.startswith("arith__grpo__0__20261121-000000:step_")

        # two raters prefer the right sums (step 2) over the near misses (step 1)
        import random

        rng = random.Random(0)
        for name in ("ana", "bob"):
            rater, _ = join(session, create_invites(session)[0], name)
            while (pair := next_pair(session, rater, rng)) is not None:
                a, b = pair
                right = str(2 * int(a.prompt[0]))
                value = "a" if a.completion == right else "b"
                record_vote(session, rater, f"{name}-{a.id}-{b.id}", a.id, value, other_id=b.id)
                record_vote(session, rater, f"{name}-r-{a.id}", a.id, "like" if a.completion == right else "dislike")

    code, out, err = cli("feedback", "export", str(tmp_path / "prefs.jsonl"), "--db", db)
    assert code == 0, err
    prefs = load_preferences(tmp_path / "prefs.jsonl")
    assert len(prefs) == 8 and all(int(p.chosen) == 2 * int(p.prompt[0]) for p in prefs)
    code, out, err = cli("feedback", "export", str(tmp_path / "ratings.jsonl"), "--db", db, "--format", "ratings")
    assert code == 0, err
    assert len(load_ratings(tmp_path / "ratings.jsonl")) == 8
    code, _, err = cli("feedback", "export", str(tmp_path / "x.jsonl"), "--db", db, "--format", "csv")
    assert code == 2 and "unknown export format 'csv'" in err

    recipe = tmp_path / "rm.yaml"
    recipe.write_text(
        f"model: {{path: {tiny_model_dir}}}\ndata: {{train_file: unused.jsonl}}\noutput_dir: {tmp_path / 'runs'}\n"
        "per_device_train_batch_size: 4\nmax_steps: 4\nlearning_rate: 1.0e-2\nnum_heads: 2\n"
    )
    code, out, err = cli("reward", "train", str(recipe), "--from-db", db, "--no-progress")
    assert code == 0, err
    assert "exported 8 preference pairs" in err and "recorded held-out accuracy" in err
    run_dir = Path(re.search(r"run folder: (\S+)", out).group(1))  # type: ignore[union-attr]
    assert (run_dir / "model").is_dir()

    from rl4gen.feedback.store import dashboard_stats

    with open_session(db) as session:
        stats = dashboard_stats(session)
        assert len(stats["reward_model"]) == 1 and 0 <= stats["reward_model"][0]["accuracy"] <= 1
        assert stats["accuracy_plot"]["points"]
        scored = [s for s in session.scalars(select(Sample).where(Sample.modality == "text"))]
        assert all(s.rm_mean is not None and s.rm_std is not None for s in scored)
    code, out, err = cli("feedback", "score", str(run_dir), str(run_dir), "--db", db)
    assert code == 0 and "scored 8 text samples" in out, err


def test_feedback_command_errors(tmp_path: Path) -> None:
    code, _, err = cli("feedback", "import", str(tmp_path), "--db", str(tmp_path / "f.db"))
    assert code == 2 and "no samples/ folder" in err
    recipe = tmp_path / "rm.yaml"
    recipe.write_text("model: {path: nowhere}\ndata: {train_file: unused.jsonl}\n")
    code, _, err = cli("reward", "train", str(recipe), "--from-db", str(tmp_path / "empty.db"))
    assert code == 2 and "no preference pairs yet" in err
    code, out, _ = cli("feedback", "invite", "--db", str(tmp_path / "f.db"), "--count", "3")
    assert code == 0 and len(out.split()) == 3
    code, _, err = cli("feedback", "serve", "--db", "postgresql://nobody@localhost/none")
    assert code == 2 and "admin token" in err
    code, _, err = cli("feedback", "serve", "--db", str(tmp_path / "f.db"), "--admin-token-file", str(tmp_path / "missing"))
    assert code == 2 and "not found" in err
    code, _, err = cli("feedback", "score", str(tmp_path / "no-model"), "--db", str(tmp_path / "f.db"))
    assert code == 2 and err.startswith("error:")


@pytest.mark.parametrize("value", ["tie"])
def test_ties_are_not_exported(tmp_path: Path, value: str) -> None:
    from rl4gen.feedback.loop import open_session
    from rl4gen.feedback.store import (
        add_samples,
        create_invites,
        join,
        preference_records,
        record_vote,
    )

    with open_session(str(tmp_path / "f.db")) as session:
        add_samples(session, [{"prompt": "p", "completion": "x"}, {"prompt": "p", "completion": "y"}])
        rater, _ = join(session, create_invites(session)[0], "ana")
        record_vote(session, rater, "v" * 10, 1, value, other_id=2)
        assert list(preference_records(session)) == []


def test_every_modality_displays(tmp_path: Path) -> None:
    from fastapi.testclient import TestClient

    from feedback.conftest import ADMIN, admin_headers
    from rl4gen.feedback.app import create_app
    from rl4gen.feedback.loop import open_session
    from rl4gen.feedback.store import import_run

    db = str(tmp_path / "f.db")
    with open_session(db) as session:
        import_run(session, make_run(tmp_path))
    app = create_app(db, ADMIN, rate_limit_per_minute=0)
    with TestClient(app) as c:
        invite = c.post("/api/admin/invites", json={"count": 1}, headers=admin_headers()).json()["invites"][0]
        c.post("/join", data={"invite": invite, "name": "ana"})
        pages = []
        for _ in range(20):  # rate everything through the page, as a person would
            page = c.get("/rate").text
            if 'id="empty"' in page:
                break
            pages.append(page)
            sample_id = re.search(r'name="sample_id" value="(\d+)"', page).group(1)  # type: ignore[union-attr]
            vote_id = re.search(r'name="vote_id" value="(\w+)"', page).group(1)  # type: ignore[union-attr]
            assert c.post("/vote", data={"vote_id": vote_id, "sample_id": sample_id, "value": "like"}).status_code == 200
        html = "".join(pages)
        assert len(pages) == 11
        assert html.count('<img src="/media/') == 3  # level, piano roll, image
        assert html.count("download MIDI") == 1 and "#..#" in html
        for media in sorted(set(re.findall(r'"(/media/\d+)"', html))):
            r = c.get(media)
            assert r.content[:4] in (b"\x89PNG", b"MThd"), media
            if r.content[:4] == b"MThd":
                assert "attachment" in r.headers["content-disposition"]
        c.cookies.clear()
        assert c.get("/media/1").status_code == 401  # media need a rater or the admin
    app.state.engine.dispose()


def test_active_queue_serves_the_least_certain_pair(tmp_path: Path) -> None:
    import random

    from sqlalchemy import select

    from rl4gen.feedback.db import Sample
    from rl4gen.feedback.loop import open_session
    from rl4gen.feedback.store import add_samples, create_invites, join, next_pair, record_vote

    with open_session(str(tmp_path / "f.db")) as session:
        add_samples(session, [{"prompt": "p", "completion": c} for c in "wxyz"])
        scores = {"w": (0.0, 0.0), "x": (5.0, 0.0), "y": (0.1, 0.0), "z": (-5.0, 0.0)}
        for s in session.scalars(select(Sample)):
            s.rm_mean, s.rm_std = scores[s.completion]
        session.commit()
        rater, _ = join(session, create_invites(session)[0], "ana")
        rng = random.Random(0)
        a, b = next_pair(session, rater, rng)  # type: ignore[misc]
        assert {a.completion, b.completion} == {"w", "y"}  # rewards 0.0 and 0.1: the closest call
        record_vote(session, rater, "v" * 10, a.id, "a", other_id=b.id)
        a, b = next_pair(session, rater, rng)  # type: ignore[misc]
        assert {a.completion, b.completion} != {"w", "y"}  # not the same pair twice for one rater
        # an ensemble that disagrees makes a pair uncertain too
        for s in session.scalars(select(Sample).where(Sample.completion.in_(["x", "z"]))):
            s.rm_std = 3.0
        session.commit()
        a, b = next_pair(session, rater, rng)  # type: ignore[misc]
        assert {a.completion, b.completion} == {"x", "z"}
        orders = {next_pair(session, rater, random.Random(i))[0].completion for i in range(20)}  # type: ignore[index]
        assert orders == {"x", "z"}  # shown in random order
