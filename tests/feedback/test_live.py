"""The live completer: completions carry their model version; every N votes the policy steps."""

from __future__ import annotations

import re
from pathlib import Path

import torch
from fastapi.testclient import TestClient

from feedback.conftest import ADMIN, admin_headers


def test_votes_update_the_policy_and_versions_show(tmp_path: Path, tiny_model_dir: Path, one_thread: None) -> None:
    from rl4gen.feedback.app import create_app
    from rl4gen.feedback.live import LiveCompleter

    completer = LiveCompleter.from_pretrained(
        tiny_model_dir, update_every=4, learning_rate=1e-2, num_samples=2, max_completion_length=6
    )
    before = [p.detach().clone() for p in completer.policy.trainable_parameters()]
    app = create_app(str(tmp_path / "f.db"), ADMIN, completer=completer)
    with TestClient(app) as c:
        invite = c.post("/api/admin/invites", json={"count": 1}, headers=admin_headers()).json()["invites"][0]
        c.post("/join", data={"invite": invite, "name": "ana"})
        assert 'href="/live"' in c.get("/rate").text
        for _ in range(2):
            assert c.post("/live", data={"prompt": "12+34="}, follow_redirects=False).status_code == 303
        page = c.get("/live").text
        assert page.count("model version: <code>tiny-gpt") == 4 and "@v0</code>" in page
        ids = re.findall(r'name="sample_id" value="(\d+)"', page)
        vote_ids = re.findall(r'name="vote_id" value="(\w+)"', page)
        assert len(ids) == 4
        for i, (sample_id, vote_id) in enumerate(zip(ids, vote_ids, strict=True)):
            form = {"vote_id": vote_id, "sample_id": sample_id, "value": "like" if i % 2 else "dislike", "back": "/live"}
            assert c.post("/vote", data=form, follow_redirects=False).status_code == 303
        assert completer.version == 1 and "loss" in completer.history[0]
        c.post("/live", data={"prompt": "12+34="})
        page = c.get("/live").text
        assert "@v1</code>" in page and 'id="until">4<' in page
        r = c.post("/live", data={"prompt": "x" * 501}, headers={"Accept": "text/html"})
        assert r.status_code == 422 and "1 to 500 characters" in r.text
        c.cookies.clear()
        assert c.post("/live", data={"prompt": "1"}).status_code == 401
    after = completer.policy.trainable_parameters()
    assert any(not torch.equal(a, b) for a, b in zip(after, before, strict=True))
    app.state.engine.dispose()
