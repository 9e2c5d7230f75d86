"""A real browser (Debian's chromium through Playwright) joins with a token, votes, and sees the
dashboard count change; screenshots are saved as test artifacts."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import httpx
import pytest

from feedback.conftest import ADMIN

CHROMIUM = os.environ.get("RL4GEN_CHROMIUM", "/usr/bin/chromium")
ARTIFACTS = Path(os.environ.get("RL4GEN_TEST_ARTIFACTS", "test-artifacts"))


def _browser_or_skip() -> None:
    pytest.importorskip("playwright.sync_api", reason="playwright is not installed: pip install -e '.[test]'")
    if not (os.path.exists(CHROMIUM) or shutil.which(CHROMIUM)):
        pytest.skip(f"no chromium at {CHROMIUM}: install it with `apt-get install -y chromium` (CI does) or set RL4GEN_CHROMIUM")


def test_join_vote_and_see_dashboard_change(tmp_path: Path) -> None:
    _browser_or_skip()
    from playwright.sync_api import sync_playwright

    from rl4gen.feedback.app import create_app
    from rl4gen.feedback.server import serve_in_thread

    app = create_app(str(tmp_path / "feedback.db"), ADMIN, seed=0)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with serve_in_thread(app) as base:
        admin = {"X-Admin-Token": ADMIN}
        samples = [
            {"prompt": "Tell me a joke.", "completion": "<script>document.title='pwned'</script>", "model_version": "run:step_0"},
            {"prompt": "Tell me a joke.", "completion": "Why did the chicken cross the road?", "model_version": "run:step_50"},
        ]
        assert httpx.post(f"{base}/api/admin/samples", json={"samples": samples}, headers=admin).status_code == 201
        invite = httpx.post(f"{base}/api/admin/invites", json={"count": 1}, headers=admin).json()["invites"][0]

        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox"])
            page = browser.new_page(viewport={"width": 1000, "height": 700})
            dialogs: list[str] = []
            page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
            page.goto(f"{base}/join")
            page.fill("#invite", invite)
            page.fill("#name", "ana")
            page.click("#join")
            page.wait_for_url(f"{base}/rate")
            page.goto(f"{base}/dashboard")
            assert page.inner_text("#vote-count") == "0"

            page.goto(f"{base}/rate")
            shown = page.inner_text(".completion")
            page.screenshot(path=str(ARTIFACTS / "feedback-rate.png"))
            page.fill("input[name=comment]", "first vote")
            page.click("#like")
            page.wait_for_url(f"{base}/rate")
            page.goto(f"{base}/compare")
            assert page.locator(".sample").count() == 2
            assert "<script>" in page.inner_text(".pair")  # shown as text, not run
            page.screenshot(path=str(ARTIFACTS / "feedback-compare.png"))
            page.click("#choose-a")
            page.wait_for_url(f"{base}/compare")
            assert page.inner_text("#empty")

            page.goto(f"{base}/dashboard")
            assert page.inner_text("#vote-count") == "2"
            assert "ana" in page.inner_text("#per-rater")
            page.screenshot(path=str(ARTIFACTS / "feedback-dashboard.png"), full_page=True)
            assert page.title() != "pwned" and not dialogs
            browser.close()
        assert shown in {s["completion"] for s in samples}
    app.state.engine.dispose()
    assert (ARTIFACTS / "feedback-dashboard.png").stat().st_size > 1000
