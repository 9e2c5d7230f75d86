"""Feedback studio fixtures: an app over a real SQLite file (or PostgreSQL when one is given)."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("fastapi", reason="the feedback extra is not installed: pip install -e '.[feedback]'")

from fastapi.testclient import TestClient

ADMIN = "admin-token-for-tests-0123456789"


def db_urls() -> list[Any]:
    """SQLite always; PostgreSQL too when RL4GEN_TEST_POSTGRES names a server (a fresh database)."""
    urls: list[Any] = ["sqlite"]
    if os.environ.get("RL4GEN_TEST_POSTGRES"):
        urls.append("postgres")
    return urls


@pytest.fixture(params=db_urls())
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield str(tmp_path / "feedback.db")
        return
    from sqlalchemy import create_engine, text

    base = os.environ["RL4GEN_TEST_POSTGRES"]
    name = f"rl4gen_test_{uuid.uuid4().hex[:12]}"
    from rl4gen.feedback.db import normalise_url

    admin_engine = create_engine(normalise_url(base), isolation_level="AUTOCOMMIT")
    with admin_engine.connect() as conn:
        conn.execute(text(f"CREATE DATABASE {name}"))
    yield base.rsplit("/", 1)[0] + "/" + name
    with admin_engine.connect() as conn:
        conn.execute(text(f"DROP DATABASE {name} WITH (FORCE)"))
    admin_engine.dispose()


@pytest.fixture
def app_client(db_url: str) -> Iterator[TestClient]:
    from rl4gen.feedback.app import create_app

    app = create_app(db_url, ADMIN, rate_limit_per_minute=0, seed=0)
    with TestClient(app) as client:
        yield client
    app.state.engine.dispose()


def admin_headers() -> dict[str, str]:
    return {"X-Admin-Token": ADMIN}


def join(client: TestClient, name: str = "ana") -> dict[str, str]:
    invite = client.post("/api/admin/invites", json={"count": 1}, headers=admin_headers()).json()["invites"][0]
    token = client.post("/api/join", json={"invite": invite, "name": name}).json()["token"]
    return {"Authorization": f"Bearer {token}"}


def add_samples(client: TestClient, rows: list[tuple[str, str, str]]) -> None:
    body = {"samples": [{"prompt": p, "completion": c, "model_version": v} for p, c, v in rows]}
    r = client.post("/api/admin/samples", json=body, headers=admin_headers())
    assert r.status_code == 201, r.text
