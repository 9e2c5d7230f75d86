"""The feedback API against a real SQLite file: tokens, votes stored once, validation, export."""

from __future__ import annotations

import logging
import uuid
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from feedback.conftest import ADMIN, add_samples, admin_headers, join
from rl4gen.data import load_preferences, load_ratings

SAMPLES = [
    ("1+1=", "2", "run:step_1"),
    ("1+1=", "3", "run:step_1"),
    ("1+1=", "<script>alert(1)</script>", "run:step_2"),
    ("2+2=", "4", "run:step_2"),
]


def vid() -> str:
    return uuid.uuid4().hex


def test_schema_is_versioned_and_sqlite_uses_wal(tmp_path: Path) -> None:
    from rl4gen.feedback.db import (
        SCHEMA_VERSION,
        journal_mode,
        make_engine,
        migrate,
        schema_version,
    )

    engine = make_engine(str(tmp_path / "f.db"))
    assert schema_version(engine) == SCHEMA_VERSION >= 1
    assert journal_mode(engine) == "wal"
    assert migrate(engine) == SCHEMA_VERSION  # a second open changes nothing
    engine.dispose()


def test_newer_schema_is_refused(tmp_path: Path) -> None:
    from sqlalchemy import text

    from rl4gen.feedback.db import SchemaError, make_engine

    engine = make_engine(str(tmp_path / "f.db"))
    with engine.begin() as conn:
        conn.execute(text("UPDATE schema_version SET version = 999"))
    engine.dispose()
    with pytest.raises(SchemaError, match="upgrade rl4gen"):
        make_engine(str(tmp_path / "f.db"))


def test_no_anonymous_writes_and_admin_only_routes(app_client: TestClient) -> None:
    c = app_client
    add_samples(c, SAMPLES)
    r = c.post("/api/votes", json={"vote_id": vid(), "sample_id": 1, "value": "like"})
    assert r.status_code == 401 and "join" in r.json()["error"]
    r = c.post("/api/votes", json={"vote_id": vid(), "sample_id": 1, "value": "like"}, headers={"Authorization": "Bearer nope"})
    assert r.status_code == 401
    assert c.post("/api/admin/invites", json={"count": 1}).status_code == 403
    assert c.post("/api/admin/invites", json={"count": 1}, headers={"X-Admin-Token": "x" * 30}).status_code == 403
    rater = join(c)
    assert c.post("/api/admin/invites", json={"count": 1}, headers=rater).status_code == 403
    assert c.delete("/api/admin/samples/1", headers=rater).status_code == 403
    assert c.get("/api/admin/export", headers=rater).status_code == 403
    assert c.get("/api/stats").status_code == 401
    assert c.get("/api/stats", headers=rater).status_code == 200


def test_invite_is_single_use(app_client: TestClient) -> None:
    c = app_client
    invite = c.post("/api/admin/invites", json={"count": 1}, headers=admin_headers()).json()["invites"][0]
    assert c.post("/api/join", json={"invite": invite, "name": "ana"}).status_code == 201
    r = c.post("/api/join", json={"invite": invite, "name": "bob"})
    assert r.status_code == 403 and "already used" in r.json()["error"]
    r = c.post("/api/join", json={"invite": "x" * 20, "name": "bob"})
    assert r.status_code == 403 and "not valid" in r.json()["error"]


def test_vote_is_stored_once_under_retries(app_client: TestClient) -> None:
    c = app_client
    add_samples(c, SAMPLES)
    rater = join(c)
    body = {"vote_id": vid(), "sample_id": 1, "value": "like", "comment": "right"}
    first = c.post("/api/votes", json=body, headers=rater)
    again = c.post("/api/votes", json=body, headers=rater)
    assert (first.status_code, first.json()["created"]) == (201, True)
    assert (again.status_code, again.json()["created"]) == (200, False)
    assert again.json()["id"] == first.json()["id"]
    assert c.get("/api/stats", headers=rater).json()["votes"] == 1
    r = c.post("/api/votes", json={**body, "value": "dislike"}, headers=rater)
    assert r.status_code == 409 and "different vote" in r.json()["error"]
    # another rater may reuse the same client id: ids are per rater
    other = join(c, "bob")
    assert c.post("/api/votes", json=body, headers=other).status_code == 201


@pytest.mark.parametrize(
    ("body", "status", "words"),
    [
        ({"vote_id": "short", "sample_id": 1, "value": "like"}, 422, "vote_id"),
        ({"vote_id": "a" * 10, "sample_id": 1, "value": "good"}, 422, "like / dislike"),
        ({"vote_id": "a" * 10, "sample_id": 1, "other_id": 2, "value": "like"}, 422, "a / b / tie"),
        ({"vote_id": "a" * 10, "sample_id": 1, "other_id": 1, "value": "a"}, 422, "two different"),
        ({"vote_id": "a" * 10, "sample_id": 1, "other_id": 4, "value": "a"}, 422, "different prompts"),
        ({"vote_id": "a" * 10, "sample_id": 99, "value": "like"}, 404, "no sample"),
        ({"vote_id": "a" * 10, "sample_id": 0, "value": "like"}, 422, "sample_id"),
        ({"vote_id": "a" * 10, "sample_id": 1, "value": "like", "extra": 1}, 422, "extra"),
        ({"vote_id": "a" * 10, "sample_id": 1, "value": "like", "comment": "x" * 2001}, 422, "comment"),
    ],
)
def test_invalid_votes_get_4xx_with_a_clear_message(app_client: TestClient, body: dict, status: int, words: str) -> None:
    add_samples(app_client, SAMPLES)
    rater = join(app_client)
    r = app_client.post("/api/votes", json=body, headers=rater)
    assert r.status_code == status, r.text
    assert words in r.json()["error"]
    assert r.json()["error"].endswith(".")


def test_malformed_json_is_a_422(app_client: TestClient) -> None:
    rater = join(app_client)
    r = app_client.post("/api/votes", content=b"{not json", headers={**rater, "Content-Type": "application/json"})
    assert r.status_code == 422 and "error" in r.json()


def test_rate_limit_per_rater(db_url: str) -> None:
    from rl4gen.feedback.app import create_app

    app = create_app(db_url, ADMIN, rate_limit_per_minute=60, rate_limit_burst=3)
    with TestClient(app) as c:
        add_samples(c, SAMPLES)
        ana, bob = join(c, "ana"), join(c, "bob")
        codes = [c.post("/api/votes", json={"vote_id": vid(), "sample_id": 1 + i % 4, "value": "like"}, headers=ana).status_code for i in range(5)]
        assert codes[:3] == [201, 201, 201] and codes[3] == 429
        r = c.post("/api/votes", json={"vote_id": vid(), "sample_id": 1, "value": "like"}, headers=ana)
        assert "retry in" in r.json()["error"]
        assert c.post("/api/votes", json={"vote_id": vid(), "sample_id": 1, "value": "like"}, headers=bob).status_code == 201
    app.state.engine.dispose()


def test_queues_and_export_round_trip(app_client: TestClient, tmp_path: Path) -> None:
    c = app_client
    add_samples(c, SAMPLES)
    ana, bob = join(c, "ana"), join(c, "bob")
    seen = set()
    while (r := c.get("/api/samples/next", headers=ana)).status_code == 200:
        s = r.json()
        assert s["id"] not in seen
        seen.add(s["id"])
        value = "like" if s["completion"] in ("2", "4") else "dislike"
        assert c.post("/api/votes", json={"vote_id": vid(), "sample_id": s["id"], "value": value}, headers=ana).status_code == 201
    assert seen == {1, 2, 3, 4} and r.status_code == 204
    orders = set()
    for who in (ana, bob):
        while (r := c.get("/api/pair", headers=who)).status_code == 200:
            pair = r.json()
            assert pair["a"]["prompt"] == pair["b"]["prompt"] == "1+1="
            orders.add((pair["a"]["id"], pair["b"]["id"]))
            choice = "a" if pair["a"]["completion"] == "2" else "b" if pair["b"]["completion"] == "2" else "tie"
            body = {"vote_id": vid(), "sample_id": pair["a"]["id"], "other_id": pair["b"]["id"], "value": choice}
            assert c.post("/api/votes", json=body, headers=who).status_code == 201
    stats = c.get("/api/stats", headers=ana).json()
    assert stats["votes"] == 4 + 3 + 3
    assert stats["agreement"]["shared_items"] == 3 and stats["agreement"]["rate"] == 1.0
    assert {v["version"] for v in stats["versions"]} == {"run:step_1", "run:step_2"}

    prefs = c.get("/api/admin/export", params={"format": "preferences"}, headers=admin_headers())
    path = tmp_path / "prefs.jsonl"
    path.write_text(prefs.text)
    loaded = load_preferences(path)
    assert len(loaded) == 4  # two raters x two decided pairs; the tie carries no preference
    assert all(p.chosen == "2" for p in loaded)
    assert c.get("/api/admin/export", params={"format": "xml"}, headers=admin_headers()).status_code == 422

    from rl4gen.feedback.db import make_engine, session_factory
    from rl4gen.feedback.store import export_jsonl

    url = str(c.app.state.engine.url)  # type: ignore[attr-defined]
    with session_factory(make_engine(url))() as session:
        n = export_jsonl(session, "ratings", tmp_path / "ratings.jsonl")
    ratings = load_ratings(tmp_path / "ratings.jsonl")
    assert n == len(ratings) == 4
    assert sorted(r.value for r in ratings) == [0.0, 0.0, 1.0, 1.0]


def test_admin_deletes(app_client: TestClient) -> None:
    c = app_client
    add_samples(c, SAMPLES)
    rater = join(c)
    vote = c.post("/api/votes", json={"vote_id": vid(), "sample_id": 3, "value": "dislike"}, headers=rater).json()
    assert c.delete(f"/api/admin/votes/{vote['id']}", headers=admin_headers()).status_code == 200
    assert c.delete(f"/api/admin/votes/{vote['id']}", headers=admin_headers()).status_code == 404
    c.post("/api/votes", json={"vote_id": vid(), "sample_id": 3, "value": "dislike"}, headers=rater)
    assert c.delete("/api/admin/samples/3", headers=admin_headers()).status_code == 200
    assert c.get("/api/stats", headers=rater).json()["votes"] == 0
    me = c.get("/api/me", headers=rater).json()["rater_id"]
    assert c.delete(f"/api/admin/raters/{me}", headers=rater).status_code == 403
    assert c.delete(f"/api/admin/raters/{me}", headers=admin_headers()).status_code == 200
    assert c.get("/api/me", headers=rater).status_code == 401  # the token is revoked


def test_model_strings_are_escaped_and_tokens_not_logged(app_client: TestClient, caplog: pytest.LogCaptureFixture) -> None:
    c = app_client
    add_samples(c, [("1+1=", "<script>alert(1)</script>", "v<b>1</b>")])
    invite = c.post("/api/admin/invites", json={"count": 1}, headers=admin_headers()).json()["invites"][0]
    caplog.set_level(logging.DEBUG)
    r = c.post("/join", data={"invite": invite, "name": "<img src=x onerror=alert(1)>"}, follow_redirects=False)
    assert r.status_code == 303
    cookie = r.cookies.get("rl4gen_rater")
    assert cookie and "httponly" in r.headers["set-cookie"].lower() and "samesite=strict" in r.headers["set-cookie"].lower()
    page = c.get("/rate").text
    assert "<script>alert(1)</script>" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "<img src=x" not in page and "v&lt;b&gt;1&lt;/b&gt;" in page
    assert "<script" not in page  # the pages run no script at all
    assert "script-src 'none'" in c.get("/rate").headers["content-security-policy"]
    logged = caplog.text
    assert invite not in logged and cookie not in logged and ADMIN not in logged


def test_page_form_votes_and_bad_form(app_client: TestClient) -> None:
    c = app_client
    add_samples(c, SAMPLES)
    assert c.get("/rate", follow_redirects=False).headers["location"] == "/join"
    invite = c.post("/api/admin/invites", json={"count": 1}, headers=admin_headers()).json()["invites"][0]
    c.post("/join", data={"invite": invite, "name": "ana"})
    form = {"vote_id": vid(), "sample_id": "2", "value": "dislike", "back": "/rate"}
    assert c.post("/vote", data=form, follow_redirects=False).status_code == 303
    assert c.post("/vote", data=form, follow_redirects=False).status_code == 303  # a resubmitted form
    r = c.post("/vote", data={**form, "vote_id": vid(), "value": "meh"}, headers={"Accept": "text/html"})
    assert r.status_code == 422 and "like / dislike" in r.text
    r = c.post("/vote", data={**form, "vote_id": "short"}, headers={"Accept": "text/html"})
    assert r.status_code == 422 and "vote_id must be 8 to 64 characters" in r.text
    r = c.post("/vote", data={**form, "sample_id": "x"})
    assert r.status_code == 422 and "sample_id" in r.json()["error"]
    invite = c.post("/api/admin/invites", json={"count": 1}, headers=admin_headers()).json()["invites"][0]
    r = c.post("/join", data={"invite": invite, "name": "   "}, headers={"Accept": "text/html"})
    assert r.status_code == 422 and "name must not be empty" in r.text
    dashboard = c.get("/dashboard").text
    assert "Votes: <span id=\"vote-count\">1</span>" in dashboard and "No item has two raters yet." in dashboard
    assert c.get("/static/style.css").status_code == 200


def test_admin_token_must_be_long(tmp_path: Path) -> None:
    from rl4gen.feedback.app import create_app

    with pytest.raises(ValueError, match="at least 16"):
        create_app(str(tmp_path / "f.db"), "short")


def test_racing_joins_spend_an_invite_once(db_url: str) -> None:
    from concurrent.futures import ThreadPoolExecutor

    from rl4gen.feedback.db import make_engine, session_factory
    from rl4gen.feedback.store import FeedbackError, create_invites, join

    engine = make_engine(db_url)
    sessions = session_factory(engine)
    with sessions() as s:
        invite = create_invites(s)[0]

    def attempt(i: int) -> str:
        with sessions() as s:
            try:
                join(s, invite, f"r{i}")
                return "ok"
            except FeedbackError as exc:
                return str(exc)

    with ThreadPoolExecutor(6) as pool:
        outcomes = list(pool.map(attempt, range(6)))
    assert outcomes.count("ok") == 1
    assert all("already used" in o for o in outcomes if o != "ok")
    engine.dispose()
