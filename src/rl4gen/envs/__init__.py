"""Gymnasium environments. Importing this package registers them (see ``rl4gen.envs.levels``)."""

from __future__ import annotations

from rl4gen.envs.levels import ENV_IDS, LevelEnv

__all__ = ["ENV_IDS", "LevelEnv"]
