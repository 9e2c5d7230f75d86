"""The feedback database: samples, raters, invites and votes, on SQLite (WAL) or PostgreSQL.

One SQLAlchemy schema serves both back ends. ``schema_version`` holds one row, the number of the
last migration applied; :data:`MIGRATIONS` is an ordered list of functions, and
:func:`migrate` runs those above the stored number in one transaction each, so a database made
by an older rl4gen is brought up to date when the server opens it.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
    create_engine,
    event,
    inspect,
    select,
    text,
)
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, sessionmaker

from rl4gen.config import ConfigError

#: What a rater may answer: one sample is liked or disliked; a pair gets a, b or tie.
RATING_VALUES = ("like", "dislike")
COMPARISON_VALUES = ("a", "b", "tie")
MODALITIES = ("text", "image", "level", "melody")


def now() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


def hash_token(token: str) -> str:
    """Tokens are stored as SHA-256 digests: the database never holds a usable token."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def new_token() -> str:
    return secrets.token_urlsafe(24)


class Base(DeclarativeBase):
    pass


class SchemaVersion(Base):
    __tablename__ = "schema_version"
    version: Mapped[int] = mapped_column(Integer, primary_key=True)


class Rater(Base):
    __tablename__ = "raters"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(80))
    token_hash: Mapped[str] = mapped_column(String(64), unique=True, index=True)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=now)
    active: Mapped[bool] = mapped_column(Boolean, default=True)


class Invite(Base):
    __tablename__ = "invites"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True, index=True)
    note: Mapped[str] = mapped_column(String(200), default="")
    created_at: Mapped[datetime] = mapped_column(DateTime, default=now)
    rater_id: Mapped[int | None] = mapped_column(ForeignKey("raters.id"), nullable=True)
    """The rater who joined with it; an invite is used once."""


class Sample(Base):
    __tablename__ = "samples"
    __table_args__ = (UniqueConstraint("source", "key", name="uq_sample_source_key"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    prompt: Mapped[str] = mapped_column(Text)
    completion: Mapped[str] = mapped_column(Text)
    """The text shown (for images, levels and melodies: a caption or the token string)."""
    modality: Mapped[str] = mapped_column(String(16), default="text")
    model_version: Mapped[str] = mapped_column(String(200), default="")
    source: Mapped[str] = mapped_column(String(500), default="")
    """Where it came from (a run folder); with ``key`` it makes imports idempotent."""
    key: Mapped[str] = mapped_column(String(200), default="")
    meta: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    rm_mean: Mapped[float | None] = mapped_column(Float, nullable=True)
    rm_std: Mapped[float | None] = mapped_column(Float, nullable=True)
    """The current reward model's score and ensemble spread (set by ``rl4gen feedback score``)."""
    created_at: Mapped[datetime] = mapped_column(DateTime, default=now)


class Media(Base):
    """Bytes shown with a sample: a PNG (image, level, piano roll) or a MIDI file to download."""

    __tablename__ = "media"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    sample_id: Mapped[int] = mapped_column(ForeignKey("samples.id", ondelete="CASCADE"), index=True)
    role: Mapped[str] = mapped_column(String(16))  # image | midi | audio
    mime: Mapped[str] = mapped_column(String(64))
    data: Mapped[bytes] = mapped_column(LargeBinary)


class Vote(Base):
    """One answer of one rater. ``vote_id`` comes from the client: a retried request finds the
    stored row through the unique (rater, vote_id) constraint, so each vote is stored once."""

    __tablename__ = "votes"
    __table_args__ = (UniqueConstraint("rater_id", "vote_id", name="uq_vote_rater_vote_id"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    vote_id: Mapped[str] = mapped_column(String(64))
    rater_id: Mapped[int] = mapped_column(ForeignKey("raters.id"), index=True)
    kind: Mapped[str] = mapped_column(String(16))  # rating | comparison
    sample_id: Mapped[int] = mapped_column(ForeignKey("samples.id", ondelete="CASCADE"), index=True)
    other_id: Mapped[int | None] = mapped_column(ForeignKey("samples.id", ondelete="CASCADE"), nullable=True)
    """For a comparison: sample B (``sample_id`` is A, in the order the rater saw them)."""
    value: Mapped[str] = mapped_column(String(16))
    comment: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[datetime] = mapped_column(DateTime, default=now)


class RewardModelEval(Base):
    """One held-out accuracy of a reward model on the database's comparisons, for the dashboard."""

    __tablename__ = "reward_model_evals"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    model: Mapped[str] = mapped_column(String(500))
    accuracy: Mapped[float] = mapped_column(Float)
    pairs: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=now)


# ----------------------------------------------------------------------------- migrations


def _v1_initial(conn: Connection) -> None:
    Base.metadata.create_all(
        conn,
        tables=[Base.metadata.tables[n] for n in ("raters", "invites", "samples", "media", "votes", "reward_model_evals")],
    )


#: Ordered migrations; the database's ``schema_version`` is the number of those applied.
MIGRATIONS: list[Callable[[Connection], None]] = [_v1_initial]
SCHEMA_VERSION = len(MIGRATIONS)


class SchemaError(ConfigError):
    """The database was written by a newer rl4gen than this one."""


def schema_version(engine: Engine) -> int:
    if not inspect(engine).has_table("schema_version"):
        return 0
    with engine.connect() as conn:
        return int(conn.execute(select(SchemaVersion.version)).scalar() or 0)


def migrate(engine: Engine) -> int:
    """Apply the migrations the database lacks; returns the schema version now stored."""
    SchemaVersion.__table__.create(engine, checkfirst=True)  # type: ignore[attr-defined]
    current = schema_version(engine)
    if current > SCHEMA_VERSION:
        raise SchemaError(
            f"the database has schema version {current}, newer than this rl4gen's {SCHEMA_VERSION}: upgrade rl4gen."
        )
    for number in range(current + 1, SCHEMA_VERSION + 1):
        with engine.begin() as conn:
            MIGRATIONS[number - 1](conn)
            conn.execute(SchemaVersion.__table__.delete())  # type: ignore[attr-defined]
            conn.execute(SchemaVersion.__table__.insert().values(version=number))  # type: ignore[attr-defined]
    return SCHEMA_VERSION


def normalise_url(url: str) -> str:
    """A bare path is a SQLite file; ``postgresql://`` picks psycopg (v3) when it is installed."""
    if "://" not in url:
        return f"sqlite:///{url}"
    if url.startswith(("postgresql://", "postgres://")):
        try:
            import psycopg  # noqa: F401

            return "postgresql+psycopg://" + url.split("://", 1)[1]
        except ImportError:
            return url
    return url


def make_engine(url: str) -> Engine:
    """An engine with SQLite set up for concurrent writers: WAL journal, a busy timeout, foreign
    keys on. The schema is migrated before it is returned."""
    url = normalise_url(url)
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30}, pool_size=20, max_overflow=20)

        @event.listens_for(engine, "connect")
        def _pragmas(dbapi_conn: Any, _record: Any) -> None:
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA busy_timeout=30000")
            cur.close()
    else:
        engine = create_engine(url, pool_size=20, max_overflow=20, pool_pre_ping=True)
    migrate(engine)
    return engine


def session_factory(engine: Engine) -> sessionmaker[Any]:
    return sessionmaker(engine, expire_on_commit=False)


def journal_mode(engine: Engine) -> str:
    with engine.connect() as conn:
        return str(conn.execute(text("PRAGMA journal_mode")).scalar())
