"""PCGRL representations: how an agent's action edits the level, and what it observes.

- ``narrow``: a position visits the map in row-major order (or at random with
  ``random_tile=True``); the action is ``0`` (leave the tile) or ``1 + tile`` (write ``tile``
  there). ``Discrete(1 + num_tiles)``.
- ``turtle``: a cursor; actions ``0..3`` move it left, right, up, down (clamped at the edges),
  ``4 + tile`` writes ``tile`` under it. ``Discrete(4 + num_tiles)``.
- ``wide``: the action ``(x, y, tile)`` writes any tile anywhere. ``MultiDiscrete([W, H, T])``.

Observations are integer tile maps (``uint8``, shape ``(height, width)``, values
``0..num_tiles-1``): the whole map for ``wide``; for ``narrow`` and ``turtle`` a ``Dict`` with
that map under ``"map"`` and the position to edit under ``"pos"`` (``int64`` ``[x, y]``).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from gymnasium import spaces

__all__ = ["REPRESENTATIONS", "NarrowRepresentation", "Representation", "TurtleRepresentation", "WideRepresentation", "make_representation"]

_MOVES = ((-1, 0), (1, 0), (0, -1), (0, 1))  # left, right, up, down


class Representation:
    """Turns actions into edits ``(cell index, tile or -1)`` and levels into observations."""

    name: str

    def __init__(self, width: int, height: int, num_tiles: int) -> None:
        self.width, self.height, self.num_tiles = width, height, num_tiles
        self.x = self.y = 0
        self.map_space = spaces.Box(0, num_tiles - 1, (height, width), dtype=np.uint8)

    def action_space(self) -> spaces.Space[Any]:
        raise NotImplementedError

    def observation_space(self) -> spaces.Space[Any]:
        return spaces.Dict(
            {
                "map": self.map_space,
                "pos": spaces.Box(0, np.array([self.width - 1, self.height - 1]), (2,), dtype=np.int64),
            }
        )

    def reset(self, u: float, v: float, rng: np.random.Generator) -> None:
        """Place the position from two uniform draws in [0, 1); ``rng`` serves later moves."""
        self.x = int(u * self.width)
        self.y = int(v * self.height)
        self.rng = rng

    def act(self, action: Any) -> tuple[int, int]:
        raise NotImplementedError

    def observe(self, level: np.ndarray) -> Any:
        return {"map": level.copy(), "pos": np.array((self.x, self.y), dtype=np.int64)}

    @property
    def position(self) -> tuple[int, int] | None:
        return self.x, self.y


class NarrowRepresentation(Representation):
    name = "narrow"

    def __init__(self, width: int, height: int, num_tiles: int, random_tile: bool = False) -> None:
        super().__init__(width, height, num_tiles)
        self.random_tile = random_tile
        self.n = 1 + num_tiles

    def action_space(self) -> spaces.Space[Any]:
        return spaces.Discrete(self.n)

    def act(self, action: Any) -> tuple[int, int]:
        a = int(action)
        if not 0 <= a < self.n:
            raise ValueError(f"narrow action must be in [0, {self.n}), got {action!r}.")
        index = self.y * self.width + self.x
        if self.random_tile:
            self.x = int(self.rng.integers(self.width))
            self.y = int(self.rng.integers(self.height))
        else:
            self.x += 1
            if self.x == self.width:
                self.x = 0
                self.y = self.y + 1 if self.y + 1 < self.height else 0
        return index, a - 1


class TurtleRepresentation(Representation):
    name = "turtle"

    def __init__(self, width: int, height: int, num_tiles: int) -> None:
        super().__init__(width, height, num_tiles)
        self.n = len(_MOVES) + num_tiles

    def action_space(self) -> spaces.Space[Any]:
        return spaces.Discrete(self.n)

    def act(self, action: Any) -> tuple[int, int]:
        a = int(action)
        if not 0 <= a < self.n:
            raise ValueError(f"turtle action must be in [0, {self.n}), got {action!r}.")
        if a < 4:
            dx, dy = _MOVES[a]
            self.x = min(max(self.x + dx, 0), self.width - 1)
            self.y = min(max(self.y + dy, 0), self.height - 1)
            return 0, -1
        return self.y * self.width + self.x, a - 4


class WideRepresentation(Representation):
    name = "wide"

    def action_space(self) -> spaces.Space[Any]:
        return spaces.MultiDiscrete([self.width, self.height, self.num_tiles])

    def observation_space(self) -> spaces.Space[Any]:
        return self.map_space

    def reset(self, u: float, v: float, rng: np.random.Generator) -> None:
        pass

    def act(self, action: Any) -> tuple[int, int]:
        x, y, tile = (int(v) for v in action)
        if not (0 <= x < self.width and 0 <= y < self.height and 0 <= tile < self.num_tiles):
            raise ValueError(
                f"wide action must be (x, y, tile) with x < {self.width}, y < {self.height}, "
                f"tile < {self.num_tiles}, got {action!r}."
            )
        self.x, self.y = x, y
        return y * self.width + x, tile

    def observe(self, level: np.ndarray) -> Any:
        return level.copy()

    @property
    def position(self) -> tuple[int, int] | None:
        return None


REPRESENTATIONS: dict[str, type[Representation]] = {
    "narrow": NarrowRepresentation,
    "turtle": TurtleRepresentation,
    "wide": WideRepresentation,
}


def make_representation(name: str, width: int, height: int, num_tiles: int, **options: Any) -> Representation:
    """Build a representation by name; ``random_tile`` applies to ``narrow`` only."""
    if name not in REPRESENTATIONS:
        raise ValueError(f"unknown level representation {name!r}: use one of {', '.join(REPRESENTATIONS)}.")
    if options and name != "narrow":
        raise ValueError(f"option {next(iter(options))!r} applies to the narrow representation only: drop it for {name}.")
    if set(options) - {"random_tile"}:
        raise ValueError(f"narrow representation has no option {next(iter(set(options) - {'random_tile'}))!r}: use random_tile.")
    return REPRESENTATIONS[name](width, height, num_tiles, **options)
