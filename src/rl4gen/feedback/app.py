"""The feedback studio's web app: a FastAPI app factory, JSON API and server-rendered pages.

Every page is rendered by Jinja2 with autoescaping, so model-generated text is always shown as
text; static files are served from the package (no CDN). Raters authenticate with their own
token (``Authorization: Bearer`` for the API, an HttpOnly SameSite=Strict cookie for pages);
admin routes need the admin token in ``X-Admin-Token``. Tokens are never accepted in URLs, so
access logs never hold one.
"""


import hmac
import random
import re
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Form, Header, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import (
    HTMLResponse,
    JSONResponse,
    PlainTextResponse,
    RedirectResponse,
    Response,
)
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from sqlalchemy import select
from sqlalchemy.orm import Session

from rl4gen.feedback import store
from rl4gen.feedback.db import Media, Rater, Sample, make_engine, session_factory
from rl4gen.feedback.store import FeedbackError

HERE = Path(__file__).parent
COOKIE = "rl4gen_rater"
VOTE_ID = re.compile(r"^[A-Za-z0-9_-]{8,64}$")


# ------------------------------------------------------------------------------ rate limit


class RateLimiter:
    """A token bucket per rater: ``per_minute`` writes on average, bursts of ``burst``."""

    def __init__(self, per_minute: float, burst: int) -> None:
        self.rate = per_minute / 60.0
        self.burst = float(burst)
        self._buckets: dict[int, tuple[float, float]] = {}
        self._lock = threading.Lock()

    def check(self, rater_id: int) -> float:
        """0 when the write may go ahead, else the seconds to wait."""
        if self.rate <= 0:
            return 0.0
        now = time.monotonic()
        with self._lock:
            tokens, last = self._buckets.get(rater_id, (self.burst, now))
            tokens = min(self.burst, tokens + (now - last) * self.rate)
            if tokens >= 1.0:
                self._buckets[rater_id] = (tokens - 1.0, now)
                return 0.0
            self._buckets[rater_id] = (tokens, now)
            return (1.0 - tokens) / self.rate


# ---------------------------------------------------------------------------- request bodies


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


def _clean_text(value: str, field: str) -> str:
    value = value.strip()
    if not value:
        raise ValueError(f"{field} must not be empty")
    return value


class JoinIn(Strict):
    invite: str = Field(min_length=8, max_length=200)
    name: str = Field(min_length=1, max_length=80)

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        return _clean_text(v, "name")


class VoteIn(Strict):
    vote_id: str = Field(description="Client-made id (8-64 of A-Z a-z 0-9 _ -); a retry with the same id is stored once.")
    sample_id: int = Field(ge=1)
    other_id: int | None = Field(None, ge=1, description="Sample B of a comparison (sample_id is A).")
    value: str = Field(description="like / dislike for one sample; a / b / tie for a comparison.")
    comment: str = Field("", max_length=2000)

    @field_validator("vote_id")
    @classmethod
    def _vote_id(cls, v: str) -> str:
        if not VOTE_ID.match(v):
            raise ValueError("vote_id must be 8 to 64 characters of A-Z, a-z, 0-9, '_' or '-' (a UUID works)")
        return v


class InvitesIn(Strict):
    count: int = Field(1, ge=1, le=1000)
    note: str = Field("", max_length=200)


class SampleIn(Strict):
    prompt: str = Field(min_length=1, max_length=20000)
    completion: str = Field(min_length=1, max_length=20000)
    model_version: str = Field("", max_length=200)
    key: str | None = Field(None, max_length=200)


class SamplesIn(Strict):
    samples: list[SampleIn] = Field(min_length=1, max_length=10000)
    source: str = Field("api", min_length=1, max_length=200)


def _validation_message(exc: RequestValidationError) -> str:
    first = exc.errors()[0]
    where = ".".join(str(p) for p in first.get("loc", ()) if p not in ("body",)) or "request"
    msg = str(first.get("msg", "invalid value")).removeprefix("Value error, ")
    return f"field {where!r}: {msg}."


# ----------------------------------------------------------------------------------- the app


def create_app(
    db_url: str,
    admin_token: str,
    rate_limit_per_minute: float = 120.0,
    rate_limit_burst: int = 30,
    completer: Any | None = None,
    seed: int | None = None,
) -> FastAPI:
    """The app over the database at ``db_url`` (a SQLite path or an SQLAlchemy URL).

    ``admin_token`` guards admin routes; ``rate_limit_per_minute`` (0 = off) and
    ``rate_limit_burst`` bound each rater's writes; ``completer`` (a
    :class:`rl4gen.feedback.live.LiveCompleter`) enables the live completer page.
    """
    if len(admin_token) < 16:
        raise ValueError("the admin token must be at least 16 characters long.")
    engine = make_engine(db_url)
    Session_ = session_factory(engine)
    limiter = RateLimiter(rate_limit_per_minute, rate_limit_burst)
    write_lock = threading.Lock() if engine.dialect.name == "sqlite" else None
    rng = random.Random(seed)
    rng_lock = threading.Lock()
    templates = Jinja2Templates(directory=str(HERE / "templates"))
    assert templates.env.autoescape  # every model string is escaped

    app = FastAPI(title="rl4gen feedback studio", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.engine = engine
    app.state.completer = completer
    app.mount("/static", StaticFiles(directory=str(HERE / "static")), name="static")

    @app.middleware("http")
    async def _security_headers(request: Request, call_next: Callable[[Request], Any]) -> Response:
        response: Response = await call_next(request)
        # Defence in depth behind autoescaping: the pages need no script at all.
        response.headers["Content-Security-Policy"] = (
            "default-src 'self'; script-src 'none'; style-src 'self' 'unsafe-inline'; img-src 'self'; frame-ancestors 'none'"
        )
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers["Referrer-Policy"] = "no-referrer"
        return response

    def db() -> Iterator[Session]:
        with Session_() as session:
            yield session

    def pick() -> random.Random:
        with rng_lock:
            return random.Random(rng.random())

    @app.exception_handler(FeedbackError)
    async def _feedback_error(request: Request, exc: FeedbackError) -> Response:
        if _wants_html(request):
            return templates.TemplateResponse(request, "error.html", {"message": str(exc)}, status_code=exc.status)
        return JSONResponse({"error": str(exc)}, status_code=exc.status)

    @app.exception_handler(ValidationError)
    async def _form_validation_error(request: Request, exc: ValidationError) -> Response:
        # Form pages build the API's models themselves: their errors are the client's, too.
        return await _validation_error(request, RequestValidationError(exc.errors()))

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, exc: RequestValidationError) -> Response:
        message = _validation_message(exc)
        if _wants_html(request):
            return templates.TemplateResponse(request, "error.html", {"message": message}, status_code=422)
        return JSONResponse({"error": message}, status_code=422)

    # -------------------------------------------------------------------- authentication

    def rater_token(request: Request) -> str | None:
        auth = request.headers.get("authorization", "")
        if auth.lower().startswith("bearer "):
            return auth[7:].strip()
        return request.cookies.get(COOKIE)

    def current_rater(request: Request, session: Annotated[Session, Depends(db)]) -> Rater:
        token = rater_token(request)
        if not token:
            raise FeedbackError("sign in first: join with an invite token at /join (or send Authorization: Bearer TOKEN).", 401)
        rater = store.rater_for_token(session, token)
        if rater is None:
            raise FeedbackError("the rater token is not valid: join again with a new invite.", 401)
        return rater

    def admin(x_admin_token: Annotated[str | None, Header()] = None) -> None:
        if not x_admin_token or not hmac.compare_digest(x_admin_token.encode(), admin_token.encode()):
            raise FeedbackError("this action needs the admin token in the X-Admin-Token header.", 403)

    def viewer(request: Request, session: Annotated[Session, Depends(db)]) -> None:
        """Raters or the admin may read the dashboard and media."""
        given = request.headers.get("x-admin-token")
        if given and hmac.compare_digest(given.encode(), admin_token.encode()):
            return
        current_rater(request, session)

    def limited(rater: Rater) -> None:
        wait = limiter.check(rater.id)
        if wait > 0:
            raise FeedbackError(
                f"too many votes: at most {limiter.rate * 60:g} a minute per rater; retry in {wait:.1f} s.", 429
            )

    RaterDep = Annotated[Rater, Depends(current_rater)]
    SessionDep = Annotated[Session, Depends(db)]

    # -------------------------------------------------------------------------- JSON API

    @app.post("/api/join", status_code=201)
    def api_join(body: JoinIn, session: SessionDep) -> dict[str, Any]:
        rater, token = store.join(session, body.invite, body.name)
        return {"rater_id": rater.id, "name": rater.name, "token": token}

    @app.get("/api/me")
    def api_me(rater: RaterDep) -> dict[str, Any]:
        return {"rater_id": rater.id, "name": rater.name}

    @app.get("/api/samples/next")
    def api_next_sample(rater: RaterDep, session: SessionDep) -> Response:
        sample = store.next_sample(session, rater, pick())
        if sample is None:
            return Response(status_code=204)
        return JSONResponse(_sample_json(session, sample))

    @app.get("/api/pair")
    def api_pair(rater: RaterDep, session: SessionDep) -> Response:
        pair = store.next_pair(session, rater, pick())
        if pair is None:
            return Response(status_code=204)
        a, b = pair
        return JSONResponse({"prompt": a.prompt, "a": _sample_json(session, a), "b": _sample_json(session, b)})

    @app.post("/api/votes")
    def api_vote(body: VoteIn, request: Request) -> JSONResponse:
        # The hot path: session and rater are resolved here rather than as dependencies, as each
        # sync dependency is another hop through the thread pool (measurable under 50 raters).
        with Session_() as session:
            rater = current_rater(request, session)
            limited(rater)
            result = store.record_vote(session, rater, body.vote_id, body.sample_id, body.value, body.other_id, body.comment, write_lock)
            vote = result.vote
            payload = {"id": vote.id, "vote_id": vote.vote_id, "kind": vote.kind, "created": result.created}
            _after_vote(app, session, vote)
        return JSONResponse(payload, status_code=201 if result.created else 200)

    @app.get("/api/stats", dependencies=[Depends(viewer)])
    def api_stats(session: SessionDep) -> dict[str, Any]:
        return store.dashboard_stats(session)

    @app.get("/media/{media_id}", dependencies=[Depends(viewer)])
    def media(media_id: int, session: SessionDep) -> Response:
        row = session.get(Media, media_id)
        if row is None:
            raise FeedbackError(f"no media with id {media_id}.", 404)
        headers = {"X-Content-Type-Options": "nosniff"}
        if row.role != "image":
            headers["Content-Disposition"] = f'attachment; filename="sample_{row.sample_id}.mid"'
        return Response(row.data, media_type=row.mime, headers=headers)

    # admin
    @app.post("/api/admin/invites", status_code=201, dependencies=[Depends(admin)])
    def api_invites(body: InvitesIn, session: SessionDep) -> dict[str, Any]:
        return {"invites": store.create_invites(session, body.count, body.note)}

    @app.post("/api/admin/samples", status_code=201, dependencies=[Depends(admin)])
    def api_add_samples(body: SamplesIn, session: SessionDep) -> dict[str, Any]:
        return {"added": store.add_samples(session, [s.model_dump() for s in body.samples], body.source)}

    @app.delete("/api/admin/samples/{sample_id}", dependencies=[Depends(admin)])
    def api_delete_sample(sample_id: int, session: SessionDep) -> dict[str, Any]:
        store.delete_sample(session, sample_id)
        return {"deleted": sample_id}

    @app.delete("/api/admin/votes/{vote_row_id}", dependencies=[Depends(admin)])
    def api_delete_vote(vote_row_id: int, session: SessionDep) -> dict[str, Any]:
        store.delete_vote(session, vote_row_id)
        return {"deleted": vote_row_id}

    @app.delete("/api/admin/raters/{rater_id}", dependencies=[Depends(admin)])
    def api_deactivate_rater(rater_id: int, session: SessionDep) -> dict[str, Any]:
        """Revoke a rater's token (their votes stay; delete them one by one if needed)."""
        rater = session.get(Rater, rater_id)
        if rater is None:
            raise FeedbackError(f"no rater with id {rater_id}.", 404)
        rater.active = False
        session.commit()
        return {"deactivated": rater_id}

    @app.get("/api/admin/export", dependencies=[Depends(admin)])
    def api_export(session: SessionDep, format: str = "preferences") -> PlainTextResponse:
        import json

        records = {"preferences": store.preference_records, "ratings": store.rating_records}.get(format)
        if records is None:
            raise FeedbackError(f"unknown export format {format!r}: use preferences or ratings.", 422)
        body = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records(session))
        return PlainTextResponse(body, media_type="application/x-ndjson")

    # ------------------------------------------------------------------------------ pages

    def page_rater(request: Request, session: Session) -> Rater | None:
        token = request.cookies.get(COOKIE)
        return store.rater_for_token(session, token) if token else None

    def render(request: Request, name: str, rater: Rater | None, status: int = 200, **context: Any) -> HTMLResponse:
        context.update(rater=rater, live=app.state.completer is not None)
        return templates.TemplateResponse(request, name, context, status_code=status)

    @app.get("/", response_class=HTMLResponse)
    def index(request: Request, session: SessionDep) -> Response:
        return RedirectResponse("/rate" if page_rater(request, session) else "/join", status_code=303)

    @app.get("/join", response_class=HTMLResponse)
    def join_page(request: Request, session: SessionDep) -> HTMLResponse:
        return render(request, "join.html", page_rater(request, session))

    @app.post("/join")
    def join_form(request: Request, session: SessionDep, invite: Annotated[str, Form()], name: Annotated[str, Form()]) -> Response:
        body = JoinIn(invite=invite.strip(), name=name)
        _, token = store.join(session, body.invite, body.name)
        response = RedirectResponse("/rate", status_code=303)
        response.set_cookie(COOKIE, token, httponly=True, samesite="strict", max_age=60 * 60 * 24 * 365)
        return response

    @app.get("/rate", response_class=HTMLResponse)
    def rate_page(request: Request, session: SessionDep) -> Response:
        rater = page_rater(request, session)
        if rater is None:
            return RedirectResponse("/join", status_code=303)
        sample = store.next_sample(session, rater, pick())
        return render(request, "rate.html", rater, sample=_sample_json(session, sample) if sample else None,
                      vote_id=uuid.uuid4().hex)

    @app.get("/compare", response_class=HTMLResponse)
    def compare_page(request: Request, session: SessionDep) -> Response:
        rater = page_rater(request, session)
        if rater is None:
            return RedirectResponse("/join", status_code=303)
        pair = store.next_pair(session, rater, pick())
        context: dict[str, Any] = {"vote_id": uuid.uuid4().hex, "pair": None}
        if pair is not None:
            context["pair"] = {"prompt": pair[0].prompt, "a": _sample_json(session, pair[0]), "b": _sample_json(session, pair[1])}
        return render(request, "compare.html", rater, **context)

    @app.post("/vote")
    def vote_form(
        request: Request,
        session: SessionDep,
        vote_id: Annotated[str, Form()],
        sample_id: Annotated[int, Form()],
        value: Annotated[str, Form()],
        other_id: Annotated[int | None, Form()] = None,
        comment: Annotated[str, Form()] = "",
        back: Annotated[str, Form()] = "/rate",
    ) -> Response:
        rater = current_rater(request, session)
        body = VoteIn(vote_id=vote_id, sample_id=sample_id, other_id=other_id, value=value, comment=comment)
        limited(rater)
        result = store.record_vote(session, rater, body.vote_id, body.sample_id, body.value, body.other_id, body.comment, write_lock)
        _after_vote(app, session, result.vote)
        return RedirectResponse(back if back in ("/rate", "/compare", "/live") else "/rate", status_code=303)

    @app.get("/dashboard", response_class=HTMLResponse)
    def dashboard(request: Request, session: SessionDep) -> Response:
        rater = page_rater(request, session)
        if rater is None:
            return RedirectResponse("/join", status_code=303)
        return render(request, "dashboard.html", rater, stats=store.dashboard_stats(session))

    @app.get("/healthz")
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    _register_live(app, render, page_rater, db, limited)
    return app


def _wants_html(request: Request) -> bool:
    return not request.url.path.startswith("/api/") and "text/html" in request.headers.get("accept", "")


def _sample_json(session: Session, sample: Sample) -> dict[str, Any]:
    media = session.execute(select(Media.id, Media.role).where(Media.sample_id == sample.id)).all()
    return {
        "id": sample.id,
        "prompt": sample.prompt,
        "completion": sample.completion,
        "modality": sample.modality,
        "model_version": sample.model_version,
        "image": next((f"/media/{m}" for m, role in media if role == "image"), None),
        "midi": next((f"/media/{m}" for m, role in media if role == "midi"), None),
    }


def _after_vote(app: FastAPI, session: Session, vote: Any) -> None:
    completer = app.state.completer
    if completer is not None:
        completer.on_vote(session, vote)


def _register_live(
    app: FastAPI, render: Callable[..., HTMLResponse], page_rater: Callable[..., Any], db: Any, limited: Callable[[Rater], None]
) -> None:
    """The live completer's routes (``rl4gen.feedback.live``), present only with a completer."""
    if app.state.completer is None:
        return
    from rl4gen.feedback.live import register

    register(app, render, page_rater, db, limited)
