"""Playing levels: gridworld environments with a generated level as the map, a scripted player
and player traces.

- ``rl4gen/zelda-play-v0``: the player moves left, right, up or down (actions 0–3); walking onto
  the key picks it up, walking into the door while holding the key wins (+1); walking onto an
  enemy (bat, scorpion, spider; they stand still) kills the player (−1); solid tiles and the door
  without the key block (the move is lost). Picking up the key pays +0.5 once.
- ``rl4gen/sokoban-play-v0``: the player moves the same way and pushes a crate one cell when the
  cell beyond it is free (floor or target); the episode is won (+1) when every crate stands on a
  target.

Both end after ``max_steps`` moves (truncated; default twice the tile count). Levels are integer
arrays in the generator environments' tile sets (``rl4gen.envs.levels.check.TILES``); each reset
draws one from a **level source**: a list of levels, a levels ``.jsonl`` file (``samples/levels.jsonl``
of a run, or a traces file), or, by default, ``"random"``: levels of the level writer's procedural
generator that the scripted player can solve. ``reset(options={"level": array})`` plays a given level.

Observations are one-hot maps, channels first (``Box(0, 1, (C, h, w), uint8)``): zelda's channels
are solid, player, key, door, enemy, holding-the-key (a constant plane); sokoban's solid, player,
crate, target. ``observation="egocentric"`` (default) centres a ``(2H−1) × (2W−1)`` window on the
player (outside cells read as solid), which does not depend on where the player stands;
``"map"`` is the whole map.

Traces (one JSON object per line)::

    {"problem": "zelda", "level": ["#.@..", ...], "actions": [1, 1, 3, ...],
     "outcome": "win", "steps": 12, "player": "scripted"}

``outcome`` is ``win``, ``death``, ``timeout`` or ``quit`` (a human stopped). Actions replay
exactly: the environments are deterministic given the level.
"""

from __future__ import annotations

import json
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from rl4gen.envs.levels.check import TILES
from rl4gen.envs.levels.render import level_text, parse_level

__all__ = [
    "ACTIONS",
    "PLAY_ENV_IDS",
    "PLAY_PROBLEMS",
    "PlayEnv",
    "ScriptedPlayer",
    "is_playable",
    "load_levels",
    "plan",
    "random_levels",
    "read_traces",
    "record_human",
    "record_scripted",
    "replay",
    "write_traces",
]

PLAY_PROBLEMS = ("zelda", "sokoban")
PLAY_ENV_IDS = tuple(f"rl4gen/{p}-play-v0" for p in PLAY_PROBLEMS)
#: action index -> (dx, dy); 0 left, 1 right, 2 up, 3 down
ACTIONS: tuple[tuple[int, int], ...] = ((-1, 0), (1, 0), (0, -1), (0, 1))
ACTION_NAMES = ("left", "right", "up", "down")
SIZES = {"zelda": (11, 7), "sokoban": (5, 5)}
Cell = tuple[int, int]
_T = {p: {name: i for i, name in enumerate(TILES[p])} for p in PLAY_PROBLEMS}
_ENEMIES = ("bat", "scorpion", "spider")


# ---------------------------------------------------------------------------- level state


@dataclass
class _State:
    """What changes while a level is played: the player, the crates or the key."""

    player: Cell
    crates: frozenset[Cell] = frozenset()
    has_key: bool = False
    key_taken: frozenset[Cell] = frozenset()


class _Layout:
    """The static part of a level: walls, items and the start state."""

    def __init__(self, problem: str, level: np.ndarray) -> None:
        if problem not in PLAY_PROBLEMS:
            raise ValueError(
                f"no play environment for problem {problem!r}: use one of {', '.join(PLAY_PROBLEMS)}."
            )
        level = np.asarray(level, dtype=np.uint8)
        t = _T[problem]
        if level.ndim != 2 or level.max(initial=0) >= len(TILES[problem]):
            raise ValueError(
                f"a {problem} level is a 2-D array of tile indices below {len(TILES[problem])}."
            )
        self.problem, self.level = problem, level
        self.height, self.width = level.shape

        def cells(*names: str) -> frozenset[Cell]:
            ys, xs = np.nonzero(np.isin(level, [t[n] for n in names]))
            return frozenset(zip(xs.tolist(), ys.tolist(), strict=True))

        players = cells("player")
        if len(players) != 1:
            raise ValueError(
                f"a playable {problem} level needs exactly one player ('@'), this one has {len(players)}."
            )
        self.solid = cells("solid")
        if problem == "zelda":
            self.keys, self.doors, self.enemies = cells("key"), cells("door"), cells(*_ENEMIES)
            self.targets: frozenset[Cell] = frozenset()
            self.start = _State(next(iter(players)))
        else:
            self.keys = self.doors = self.enemies = frozenset()
            self.targets = cells("target")
            self.start = _State(next(iter(players)), crates=cells("crate"))

    def inside(self, c: Cell) -> bool:
        return 0 <= c[0] < self.width and 0 <= c[1] < self.height

    def step(self, s: _State, action: int) -> tuple[_State, str]:
        """The next state and what happened: ``move``, ``blocked``, ``key``, ``win`` or ``death``."""
        dx, dy = ACTIONS[action]
        nxt = (s.player[0] + dx, s.player[1] + dy)
        if not self.inside(nxt) or nxt in self.solid:
            return s, "blocked"
        if self.problem == "zelda":
            if nxt in self.doors:
                return (
                    (_State(nxt, has_key=True, key_taken=s.key_taken), "win")
                    if s.has_key
                    else (s, "blocked")
                )
            if nxt in self.enemies:
                return _State(nxt, has_key=s.has_key, key_taken=s.key_taken), "death"
            if nxt in self.keys and nxt not in s.key_taken:
                return _State(nxt, has_key=True, key_taken=s.key_taken | {nxt}), "key"
            return _State(nxt, has_key=s.has_key, key_taken=s.key_taken), "move"
        crates = s.crates
        if nxt in crates:
            beyond = (nxt[0] + dx, nxt[1] + dy)
            if not self.inside(beyond) or beyond in self.solid or beyond in crates:
                return s, "blocked"
            crates = (crates - {nxt}) | {beyond}
            return _State(nxt, crates=crates), ("win" if crates == self.targets else "move")
        return _State(nxt, crates=crates), "move"

    def channels(self, s: _State) -> np.ndarray:
        """One-hot planes ``(C, H, W)`` of a state (see the module docstring)."""
        h, w = self.height, self.width
        n = 6 if self.problem == "zelda" else 4
        out = np.zeros((n, h, w), dtype=np.uint8)

        def put(c: int, cells: Iterable[Cell]) -> None:
            for x, y in cells:
                out[c, y, x] = 1

        put(0, self.solid)
        put(1, [s.player])
        if self.problem == "zelda":
            put(2, self.keys - s.key_taken)
            put(3, self.doors)
            put(4, self.enemies)
            out[5] = int(s.has_key)
        else:
            put(2, s.crates)
            put(3, self.targets)
        return out


def num_channels(problem: str) -> int:
    return 6 if problem == "zelda" else 4


def egocentric(planes: np.ndarray, player: Cell) -> np.ndarray:
    """A ``(C, 2H−1, 2W−1)`` window of ``planes`` centred on ``player``; outside cells are solid
    (channel 0)."""
    c, h, w = planes.shape
    out = np.zeros((c, 2 * h - 1, 2 * w - 1), dtype=np.uint8)
    out[0] = 1
    x0, y0 = w - 1 - player[0], h - 1 - player[1]
    out[:, y0 : y0 + h, x0 : x0 + w] = planes
    return out


# ---------------------------------------------------------------------------- scripted player


def plan(
    problem: str, level: np.ndarray | _Layout, state: _State | None = None, max_states: int = 200_000
) -> list[int] | None:
    """The shortest action sequence that wins ``level`` from ``state`` (default its start), by BFS
    over states (zelda: position and key; sokoban: position and crates, exhaustive up to
    ``max_states``); None when there is none."""
    layout = level if isinstance(level, _Layout) else _Layout(problem, level)
    start = state or layout.start

    def key(s: _State) -> tuple[Any, ...]:
        return (s.player, s.crates, s.has_key)

    parents: dict[tuple[Any, ...], tuple[tuple[Any, ...], int] | None] = {key(start): None}
    queue = deque([start])
    while queue and len(parents) <= max_states:
        s = queue.popleft()
        for action in range(4):
            nxt, event = layout.step(s, action)
            if event in ("blocked", "death"):
                continue
            k = key(nxt)
            if k in parents:
                continue
            parents[k] = (key(s), action)
            if event == "win":
                actions = []
                node: tuple[Any, ...] | None = k
                while parents[node] is not None:  # type: ignore[index]
                    node, a = parents[node]  # type: ignore[index, misc]
                    actions.append(a)
                return actions[::-1]
            queue.append(nxt)
    return None


def is_playable(problem: str, level: np.ndarray) -> bool:
    """True when ``level`` has one player and the scripted player can win it."""
    t, level = _T[problem], np.asarray(level)
    count = {name: int((level == i).sum()) for name, i in t.items()}
    if count["player"] != 1:
        return False
    if problem == "zelda" and (count["key"] < 1 or count["door"] < 1):
        return False
    if problem == "sokoban" and not count["crate"] == count["target"] >= 1:
        return False
    try:
        return plan(problem, level) is not None
    except ValueError:
        return False


class ScriptedPlayer:
    """Plays optimally (``plan`` from the current state), taking a uniformly random action instead
    with probability ``epsilon`` (noisy-optimal), then re-planning. ``rng`` seeds the noise."""

    name = "scripted"

    def __init__(self, epsilon: float = 0.0, seed: int = 0) -> None:
        if not 0.0 <= epsilon <= 1.0:
            raise ValueError(f"epsilon must be in [0, 1], got {epsilon}.")
        self.epsilon = float(epsilon)
        self.rng = np.random.default_rng(seed)
        self._plan: list[int] = []
        self._expect: Any = None

    def act(self, env: PlayEnv) -> int:
        state = env.state
        if self.rng.random() < self.epsilon:
            self._plan = []
            return int(self.rng.integers(4))
        if not self._plan or self._expect != (state.player, state.crates, state.has_key):
            self._plan = plan(env.problem, env.layout, state) or [int(self.rng.integers(4))]
        action = self._plan.pop(0)
        nxt, _ = env.layout.step(state, action)
        self._expect = (nxt.player, nxt.crates, nxt.has_key)
        return action


# ---------------------------------------------------------------------------- level sources


def random_levels(
    problem: str, n: int, seed: int = 0, width: int | None = None, height: int | None = None
) -> list[np.ndarray]:
    """``n`` levels of the level writer's procedural generator that the scripted player can win
    (zelda 11×7 and sokoban 5×5 by default)."""
    from rl4gen.tasks.level_writer import generate_levels

    if problem not in PLAY_PROBLEMS:
        raise ValueError(
            f"no play environment for problem {problem!r}: use one of {', '.join(PLAY_PROBLEMS)}."
        )
    w, h = width or SIZES[problem][0], height or SIZES[problem][1]
    rng = np.random.default_rng(seed)
    out: list[np.ndarray] = []
    while len(out) < n:
        out.extend(lv for lv in generate_levels(problem, w, h, 64, rng) if is_playable(problem, lv))
    return out[:n]


def load_levels(source: str | Path, problem: str) -> list[np.ndarray]:
    """The ``problem`` levels of a levels or traces ``.jsonl`` file (or a run folder's
    ``samples/levels.jsonl``) that have one player."""
    from rl4gen.envs.levels.samples import read_levels

    levels = []
    for p, level, _ in read_levels(source):
        if p == problem and int((level == _T[problem]["player"]).sum()) == 1:
            levels.append(level)
    if not levels:
        raise ValueError(
            f"{str(source)!r} holds no {problem} level with exactly one player: generate some first."
        )
    return levels


# ---------------------------------------------------------------------------- environment


class PlayEnv(gym.Env):
    """Play one level: see the module docstring for the rules, observations and sources.

    Args:
        problem: ``zelda`` or ``sokoban``.
        levels: ``"random"`` (playable procedural levels, ``num_levels`` of them from
            ``level_seed``), a list of levels (arrays or lists of rows), or a ``.jsonl`` path.
        observation: ``egocentric`` or ``map``.
        max_steps: moves before truncation (default ``2 × W × H``).
        width, height: level size (default the problem's, 11×7 and 5×5).
    """

    metadata = {"render_modes": ["ansi", "rgb_array"], "render_fps": 8}  # noqa: RUF012 (gymnasium declares it per instance)

    def __init__(
        self,
        problem: str = "zelda",
        levels: str | Sequence[Any] = "random",
        observation: str = "egocentric",
        max_steps: int | None = None,
        width: int | None = None,
        height: int | None = None,
        num_levels: int = 256,
        level_seed: int = 0,
        render_mode: str | None = None,
    ) -> None:
        if problem not in PLAY_PROBLEMS:
            raise ValueError(
                f"no play environment for problem {problem!r}: use one of {', '.join(PLAY_PROBLEMS)}."
            )
        if observation not in ("egocentric", "map"):
            raise ValueError(f"observation must be 'egocentric' or 'map', got {observation!r}.")
        self.problem, self.observation, self.render_mode = problem, observation, render_mode
        if isinstance(levels, str) and levels == "random":
            self.levels = random_levels(
                problem, num_levels, seed=level_seed, width=width, height=height
            )
        elif isinstance(levels, (str, Path)):
            self.levels = load_levels(levels, problem)
        else:
            self.levels = [
                parse_level("\n".join(lv), problem)
                if isinstance(lv[0], str)
                else np.asarray(lv, dtype=np.uint8)
                for lv in levels
            ]
            if not self.levels:
                raise ValueError("the level source is empty: pass at least one level.")
        self.height, self.width = self.levels[0].shape
        if any(lv.shape != (self.height, self.width) for lv in self.levels):
            raise ValueError(
                f"all levels of one play environment need the same size, got {sorted({lv.shape for lv in self.levels})}."
            )
        self.max_steps = int(max_steps or 2 * self.width * self.height)
        c = num_channels(problem)
        shape = (
            (c, self.height, self.width)
            if observation == "map"
            else (c, 2 * self.height - 1, 2 * self.width - 1)
        )
        self.observation_space = spaces.Box(0, 1, shape, dtype=np.uint8)
        self.action_space = spaces.Discrete(4)
        self.layout = _Layout(problem, self.levels[0])
        self.state = self.layout.start
        self.steps = 0

    def _obs(self) -> np.ndarray:
        planes = self.layout.channels(self.state)
        return planes if self.observation == "map" else egocentric(planes, self.state.player)

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        super().reset(seed=seed)
        level = (options or {}).get("level")
        if level is None:
            level = self.levels[int(self.np_random.integers(len(self.levels)))]
        elif isinstance(level, (list, tuple)) and level and isinstance(level[0], str):
            level = parse_level("\n".join(level), self.problem)
        level = np.asarray(level, dtype=np.uint8)
        if level.shape != (self.height, self.width):
            raise ValueError(
                f"this environment plays {self.width}x{self.height} levels, got {level.shape[1]}x{level.shape[0]}."
            )
        self.layout = _Layout(self.problem, level)
        self.state, self.steps = self.layout.start, 0
        return self._obs(), {"event": "start", "steps": 0}

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        self.state, event = self.layout.step(self.state, int(action))
        self.steps += 1
        reward = {"win": 1.0, "death": -1.0, "key": 0.5}.get(event, 0.0)
        terminated = event in ("win", "death")
        truncated = not terminated and self.steps >= self.max_steps
        return (
            self._obs(),
            reward,
            terminated,
            truncated,
            {"event": event, "steps": self.steps, "win": event == "win"},
        )

    @property
    def level(self) -> np.ndarray:
        return self.layout.level

    def render(self) -> Any:
        text = self.ansi()
        if self.render_mode == "rgb_array":
            from rl4gen.envs.levels.render import level_image

            return np.asarray(level_image(parse_level(text, self.problem), self.problem))
        return text

    def ansi(self) -> str:
        """The current state in the level characters (crates moved, key gone)."""
        t = _T[self.problem]
        grid = np.where(
            np.isin(
                self.layout.level,
                [t["player"]] + ([t["crate"]] if self.problem == "sokoban" else []),
            ),
            t["empty"],
            self.layout.level,
        )
        if self.problem == "sokoban":
            for x, y in self.layout.targets:
                grid[y, x] = t["target"]
            for x, y in self.state.crates:
                grid[y, x] = t["crate"]
        else:
            for x, y in self.state.key_taken:
                grid[y, x] = t["empty"]
        x, y = self.state.player
        grid[y, x] = t["player"]
        return level_text(grid, self.problem)


def register_play_envs() -> None:
    """Register ``rl4gen/zelda-play-v0`` and ``rl4gen/sokoban-play-v0`` (idempotent)."""
    for problem, name in zip(PLAY_PROBLEMS, PLAY_ENV_IDS, strict=True):
        if name not in gym.registry:
            gym.register(
                id=name, entry_point="rl4gen.envs.levels.play:PlayEnv", kwargs={"problem": problem}
            )


# ---------------------------------------------------------------------------- traces


def trace_record(problem: str, level: np.ndarray, actions: list[int], outcome: str, player: str) -> dict[str, Any]:
    """One trace: the level's rows (as in ``samples/levels.jsonl``), the moves and the outcome."""
    from rl4gen.envs.levels.samples import level_record

    moves = [int(a) for a in actions]
    return level_record(level, problem, actions=moves, outcome=outcome, steps=len(moves), player=player)


def write_traces(path: str | Path, records: Iterable[dict[str, Any]]) -> Path:
    """Append trace records to a ``.jsonl`` file."""
    from rl4gen.envs.levels.samples import append_jsonl

    return append_jsonl(path, records)


def read_traces(path: str | Path, problem: str | None = None) -> list[dict[str, Any]]:
    """Trace records of a ``.jsonl`` file (of ``problem`` only, when given), levels parsed into
    arrays under ``"array"``."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(
            f"traces file {str(path)!r} not found: record some with `rl4gen levels play --record {path}`."
        )
    out = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
            record["array"] = parse_level("\n".join(record["level"]), record["problem"])
            actions = [int(a) for a in record["actions"]]
        except (json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
            raise ValueError(
                f"{path}:{number} is not a trace ({exc}): each line needs 'problem', 'level' rows and 'actions'."
            ) from None
        if any(not 0 <= a < 4 for a in actions):
            raise ValueError(f"{path}:{number} has an action outside 0-3 (left, right, up, down).")
        if problem is None or record["problem"] == problem:
            out.append(record)
    if not out:
        raise ValueError(f"{str(path)!r} holds no {problem or ''} traces.")
    return out


def replay(
    problem: str, record: dict[str, Any], observation: str = "egocentric"
) -> tuple[np.ndarray, np.ndarray]:
    """Observations and actions of a trace, replayed in a play environment (up to its end)."""
    level = (
        record["array"] if "array" in record else parse_level("\n".join(record["level"]), problem)
    )
    env = PlayEnv(
        problem, levels=[level], observation=observation, max_steps=max(1, len(record["actions"]))
    )
    obs, _ = env.reset(seed=0)
    observations, actions = [], []
    for a in record["actions"]:
        observations.append(obs)
        actions.append(int(a))
        obs, _, terminated, _, _ = env.step(int(a))
        if terminated:
            break
    shape = env.observation_space.shape
    assert shape is not None
    return np.array(observations, dtype=np.uint8).reshape(-1, *shape), np.array(
        actions, dtype=np.int64
    )


def play_episode(
    env: PlayEnv,
    act: Callable[[PlayEnv, np.ndarray], int],
    level: np.ndarray | None = None,
    seed: int | None = None,
) -> tuple[list[int], str]:
    """Play one episode with ``act(env, obs)``; the actions and the outcome."""
    obs, _ = env.reset(seed=seed, options={"level": level} if level is not None else None)
    actions: list[int] = []
    while True:
        a = int(act(env, obs))
        actions.append(a)
        obs, _, terminated, truncated, info = env.step(a)
        if terminated or truncated:
            outcome = "win" if info["win"] else ("death" if terminated else "timeout")
            return actions, outcome


def record_scripted(
    problem: str, levels: Sequence[np.ndarray], epsilon: float = 0.0, seed: int = 0
) -> list[dict[str, Any]]:
    """One trace of the (noisy-)optimal scripted player per level."""
    player = ScriptedPlayer(epsilon, seed=seed)
    env = PlayEnv(problem, levels=list(levels))
    out = []
    for level in levels:
        player._plan = []
        actions, outcome = play_episode(env, lambda e, _o: player.act(e), level=level)
        out.append(trace_record(problem, level, actions, outcome, f"scripted(epsilon={epsilon})"))
    return out


KEYS = {
    "a": 0,
    "h": 0,
    "left": 0,
    "\x1b[d": 0,
    "d": 1,
    "l": 1,
    "right": 1,
    "\x1b[c": 1,
    "w": 2,
    "k": 2,
    "up": 2,
    "\x1b[a": 2,
    "s": 3,
    "j": 3,
    "down": 3,
    "\x1b[b": 3,
}


def record_human(
    problem: str, levels: Sequence[np.ndarray], stdin: TextIO, stdout: TextIO, name: str = "human"
) -> list[dict[str, Any]]:
    """Play levels in a terminal, one input line at a time: ``w``/``a``/``s``/``d`` (or ``h j k l``,
    ``up``/``left``/..., arrow keys followed by Enter; several letters in a line are several
    moves), ``q`` stops the level (outcome ``quit``), end of input stops everything. Returns one
    trace per level played."""
    env = PlayEnv(problem, levels=list(levels))
    out = []
    for number, level in enumerate(levels, start=1):
        env.reset(options={"level": level})
        actions: list[int] = []
        outcome = None
        stdout.write(
            f"level {number}/{len(levels)} ({problem}; w a s d to move, q to give up)\n{env.ansi()}\n"
        )
        while outcome is None:
            line = stdin.readline()
            if not line:
                outcome = "quit"
                break
            text = line.strip().lower()
            moves = (
                [KEYS[text]]
                if text in KEYS
                else [KEYS[c] for c in text if c in KEYS]
                if text != "q"
                else []
            )
            if text.startswith("q"):
                outcome = "quit"
                break
            for a in moves:
                actions.append(a)
                _, _, terminated, truncated, info = env.step(a)
                if terminated or truncated:
                    outcome = "win" if info["win"] else ("death" if terminated else "timeout")
                    break
            stdout.write(env.ansi() + f"\n(step {env.steps}/{env.max_steps})\n")
        stdout.write(f"-> {outcome} in {len(actions)} steps\n")
        out.append(trace_record(problem, level, actions, outcome, name))
        if not line:
            break
    return out
