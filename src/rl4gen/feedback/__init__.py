"""The feedback studio: a web app where people rate samples, stored in a database, feeding
reward models and live policy updates (see docs/feedback.md)."""

from __future__ import annotations

__all__ = ["create_app"]


def create_app(*args, **kwargs):  # type: ignore[no-untyped-def]
    """Import lazily: the web stack is the optional ``feedback`` extra."""
    from rl4gen.feedback.app import create_app as make

    return make(*args, **kwargs)
