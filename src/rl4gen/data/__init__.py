"""Offline data: preference, rating and prompt/completion formats with validating loaders."""

from __future__ import annotations

from rl4gen.data.preferences import (
    Completion,
    DataError,
    Loaded,
    PreferencePair,
    Rating,
    load_preferences,
    load_ratings,
    load_sft,
)

__all__ = [
    "Completion",
    "DataError",
    "Loaded",
    "PreferencePair",
    "Rating",
    "load_preferences",
    "load_ratings",
    "load_sft",
]
