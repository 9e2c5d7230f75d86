"""Level writer: a tiny GPT over tile characters writes a level row by row, and GRPO trains it on
goal satisfaction, the same quality score the PCGRL agents are judged on.

A level is written as ``height`` rows of ``width`` tile characters (``render.CHARS``: binary
``.#``) joined by ``|``, after an empty prompt, then the end token. The prior is pretrained by
maximum likelihood on levels from a procedural generator that makes a mix of good and bad ones
(binary: random depth-first mazes, some with walls knocked out or tiles flipped, some plain
random noise as in PCGRL's initial maps; zelda and sokoban: the same mazes or random open rooms
with the problem's items placed on random floor cells), so the prior meets the goal part of the
time and RL has something to move. The reward (``level_goal``) checks each written level with the
independent checker of :mod:`rl4gen.envs.levels.check`; binary's path-length target is absolute
here (a written level has no start level to improve on).

Evaluation samples ``n`` levels and reports ``goal_rate``, ``malformed_rate``, ``diversity`` (mean
pairwise Hamming distance over the tile count, among well-formed levels), ``conditions`` (mean
fraction of the goal's conditions met) and the mean checked statistics as ``stats/{name}``.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from pydantic import Field

from rl4gen.models.char_gpt import build_char_tokenizer, build_tiny_gpt
from rl4gen.models.pretrain import pretrain_lm
from rl4gen.tasks.base import Task, TinyGPTOptions, sample_unconditional, save_prior

__all__ = ["LevelWriterOptions", "LevelWriterTask", "generate_levels"]

SIZES = {"binary": (14, 14), "zelda": (11, 7), "sokoban": (5, 5)}
TILE_INDEX = {
    "binary": {"empty": 0, "solid": 1},
    "zelda": {"empty": 0, "solid": 1, "player": 2, "key": 3, "door": 4, "bat": 5, "scorpion": 6, "spider": 7},
    "sokoban": {"empty": 0, "solid": 1, "player": 2, "crate": 3, "target": 4},
}


class LevelWriterOptions(TinyGPTOptions):
    problem: Literal["binary", "zelda", "sokoban"] = "binary"
    """Which PCGRL problem's levels to write."""
    width: int | None = Field(None, ge=3, le=32)
    """Level width; null = the problem's (binary 14, zelda 11, sokoban 5)."""
    height: int | None = Field(None, ge=3, le=32)
    """Level height; null = the problem's (binary 14, zelda 7, sokoban 5)."""
    targets: dict[str, int] = Field(default_factory=dict)
    """Goal thresholds (target_path, target_enemy_dist, target_solution); binary's default
    target_path here is width × height // 4 (49 on 14×14), an absolute path length."""
    shaping: float = Field(0.5, ge=0.0)
    """Weight of the dense term of the recipe's reward (fraction of goal conditions met)."""
    pretrain_steps: int = Field(600, ge=1)
    """MLE steps of the prior (fixed in advance)."""
    pretrain_batch_size: int = Field(32, ge=1)
    n_embd: int = Field(64, ge=8)
    """Width of the prior (narrower than the other tasks')."""


def _maze(rng: np.random.Generator, width: int, height: int) -> np.ndarray:
    """A depth-first maze: passages on cells with coordinates of a random parity, walls between."""
    solid = np.ones((height, width), dtype=bool)
    ox, oy = int(rng.integers(0, 2)), int(rng.integers(0, 2))
    xs, ys = range(ox, width, 2), range(oy, height, 2)
    cells = {(x, y) for x in xs for y in ys}
    start = (xs[int(rng.integers(len(xs)))], ys[int(rng.integers(len(ys)))])
    stack, seen = [start], {start}
    solid[start[1], start[0]] = False
    while stack:
        x, y = stack[-1]
        options = [(x + dx, y + dy) for dx, dy in ((2, 0), (-2, 0), (0, 2), (0, -2)) if (x + dx, y + dy) in cells and (x + dx, y + dy) not in seen]
        if not options:
            stack.pop()
            continue
        nx, ny = options[int(rng.integers(len(options)))]
        solid[(y + ny) // 2, (x + nx) // 2] = False
        solid[ny, nx] = False
        seen.add((nx, ny))
        stack.append((nx, ny))
    return solid


def _base(rng: np.random.Generator, width: int, height: int) -> np.ndarray:
    """Solid cells of a good-to-bad mix: a maze (sometimes with walls knocked out and tiles flipped)
    or uniform noise with P(solid) ~ U(0, 1), PCGRL's binary initial maps."""
    kind = rng.random()
    if kind < 0.25:
        return rng.random((height, width)) < rng.random()
    solid = _maze(rng, width, height)
    if kind < 0.75:
        knock = rng.random((height, width)) < rng.uniform(0.0, 0.4)
        solid &= ~knock  # open walls: loops and shortcuts (one region stays one region)
    if rng.random() < 0.5:
        solid ^= rng.random((height, width)) < rng.uniform(0.0, 0.1)  # noise: may split regions
    return solid


def generate_levels(problem: str, width: int, height: int, n: int, rng: np.random.Generator) -> list[np.ndarray]:
    """``n`` procedural levels (integer tile arrays) for the prior's training data."""
    tiles = TILE_INDEX[problem]
    out = []
    for _ in range(n):
        if problem == "sokoban" and rng.random() < 0.7:
            solid = rng.random((height, width)) < rng.uniform(0.0, 0.4)  # open rooms suit small maps
        else:
            solid = _base(rng, width, height)
        level = np.where(solid, tiles["solid"], tiles["empty"]).astype(np.uint8)
        floor = np.flatnonzero(level.ravel() == tiles["empty"])
        if problem != "binary" and len(floor):
            if problem == "zelda":
                items = ["player", "key", "door"] + [str(rng.choice(["bat", "scorpion", "spider"])) for _ in range(int(rng.integers(1, 5)))]
            else:
                pairs = int(rng.integers(1, 3))
                items = ["player"] + ["crate"] * pairs + ["target"] * pairs
            for _ in range(int(rng.integers(0, 2))):  # now and then one item too many or too few
                if rng.random() < 0.5 and len(items) > 1:
                    items.pop(int(rng.integers(len(items))))
                else:
                    items.append(items[int(rng.integers(len(items)))])
            cells = rng.permutation(floor)[: len(items)]
            flat = level.ravel()
            for cell, item in zip(cells, items, strict=False):
                flat[cell] = tiles[item]
        out.append(level)
    return out


class LevelWriterTask(Task):
    name = "level_writer"
    Options = LevelWriterOptions
    options: LevelWriterOptions

    def __init__(self, task_args: dict[str, Any] | None = None) -> None:
        super().__init__(task_args)
        o = self.options
        self.width = o.width or SIZES[o.problem][0]
        self.height = o.height or SIZES[o.problem][1]
        from rl4gen.envs.levels.check import DEFAULT_TARGETS
        from rl4gen.rewards.levels import LevelGoalReward

        defaults = dict(DEFAULT_TARGETS[o.problem])
        if o.problem == "binary":
            defaults["target_path"] = self.width * self.height // 4
        try:
            self.reward = LevelGoalReward(o.problem, self.width, self.height, {**defaults, **o.targets}, shaping=o.shaping)
        except ValueError as exc:
            from rl4gen.config import ConfigError

            raise ConfigError(f"config key 'task_args.targets' is invalid: {exc}.") from None
        self.targets = self.reward.targets

    @property
    def completion_length(self) -> int:
        """Tokens of one written level: the tiles, the row separators and the end token."""
        return self.width * self.height + self.height

    def level_text(self, level: np.ndarray) -> str:
        from rl4gen.rewards.levels import ROW_SEP

        chars = self.reward.chars
        return ROW_SEP.join("".join(chars[int(t)] for t in row) for row in level)

    # ------------------------------------------------------------------ data

    def train_contexts(self, generator: torch.Generator, n: int) -> list[dict[str, str]]:
        return [{"prompt": ""} for _ in range(n)]

    def eval_contexts(self, n: int) -> list[dict[str, str]]:
        return [{"prompt": ""} for _ in range(n)]

    # ------------------------------------------------------------------ evaluation

    def sample_texts(self, policy: Any, n: int, seed: int = 777) -> list[str]:
        """``n`` written levels sampled from ``policy`` with a fixed seed."""
        return sample_unconditional(policy, n, seed)

    def text_metrics(self, texts: list[str]) -> dict[str, float]:
        """Goal, malformed and condition rates, diversity and mean statistics of written levels."""
        from rl4gen.envs.levels.evaluate import diversity
        from rl4gen.rewards.levels import goal_conditions, parse_written_level

        levels, goals, conditions = [], [], []
        stats: dict[str, list[float]] = {}
        for text in texts:
            level = parse_written_level(text, self.reward.chars, self.width, self.height)
            if level is None:
                goals.append(0.0)
                conditions.append(0.0)
                continue
            from rl4gen.envs.levels.check import check_level

            check = check_level(self.options.problem, level, **self.targets)
            met = goal_conditions(self.options.problem, check, self.targets)
            levels.append(level)
            goals.append(float(check.goal))
            conditions.append(sum(met) / len(met))
            for key, value in check.stats.items():
                if key != "path-gain":  # equals path-length without a start level
                    stats.setdefault(key, []).append(float(value))
        metrics = {
            "goal_rate": float(np.mean(goals)),
            "malformed_rate": 1.0 - len(levels) / len(texts),
            "diversity": diversity(levels),
            "conditions": float(np.mean(conditions)),
        }
        metrics.update({f"stats/{k}": float(np.mean(v)) for k, v in stats.items()})
        return metrics

    def evaluate(self, policy: Any, n: int) -> dict[str, float]:
        return self.text_metrics(self.sample_texts(policy, n))

    # ------------------------------------------------------------------ recipe

    def default_config(self) -> dict[str, Any]:
        o = self.options
        reward_args = {"problem": o.problem, "width": self.width, "height": self.height, "targets": self.targets, "shaping": o.shaping}
        return {
            "task": self.name,
            "model": {"path": None},
            "generation": {"temperature": 1.0, "max_completion_length": self.completion_length},
            "algorithm": {"name": "grpo", "num_generations": 8, "beta": 0.02, "loss_type": "grpo"},
            "rewards": [{"type": "level_goal", "weight": 1.0, "args": reward_args}],
            "max_steps": 150,
            "prompts_per_step": 8,
            "learning_rate": 3e-4,
            "warmup_steps": 5,
            "lr_scheduler_type": "cosine",
            "max_grad_norm": 1.0,
            "eval_steps": 25,
            "eval_size": 256,
            "sample_steps": 25,
            "save_steps": 50,
        }

    # ------------------------------------------------------------------ prior

    def pretrain_settings(self) -> dict[str, Any]:
        o = self.options
        keys = ("problem", "pretrain_steps", "pretrain_batch_size", "n_layer", "n_embd", "n_head", "pretrain_seed")
        return {"task": self.name, "version": 1, "width": self.width, "height": self.height, **{k: getattr(o, k) for k in keys}}

    def build_prior(self, out_dir: Path, log: Callable[[str], None]) -> dict[str, Any]:
        from rl4gen.rewards.levels import ROW_SEP

        o = self.options
        tokenizer = build_char_tokenizer(self.reward.chars + ROW_SEP)
        vocab = tokenizer.get_vocab()
        bos, eos = tokenizer.eos_token_id, tokenizer.eos_token_id
        torch.manual_seed(o.pretrain_seed)
        length = self.completion_length + 1  # bos, tiles and separators, eos
        model = build_tiny_gpt(len(tokenizer), n_positions=length + 8, n_embd=o.n_embd, n_layer=o.n_layer, n_head=o.n_head)

        def encode(levels: list[np.ndarray]) -> tuple[torch.Tensor, torch.Tensor]:
            rows = [[bos] + [vocab[c] for c in self.level_text(lv)] + [eos] for lv in levels]
            ids = torch.tensor(rows, dtype=torch.long)  # (B, L)
            mask = torch.ones_like(ids)
            mask[:, 0] = 0
            return ids, mask

        def next_batch(gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
            rng = np.random.default_rng(int(torch.randint(0, 2**31 - 1, (1,), generator=gen)))
            return encode(generate_levels(o.problem, self.width, self.height, o.pretrain_batch_size, rng))

        data_rng = np.random.default_rng(o.pretrain_seed + 1)
        data_metrics = self.text_metrics([self.level_text(lv) for lv in generate_levels(o.problem, self.width, self.height, 512, data_rng)])
        log(f"level writer prior: {o.problem} {self.width}x{self.height}, generator goal rate {data_metrics['goal_rate']:.3f}")
        result = pretrain_lm(
            model,
            next_batch,
            steps=o.pretrain_steps,
            learning_rate=1e-3,
            seed=o.pretrain_seed,
            on_log=lambda s, loss: log(f"pretrain level writer: step {s}/{o.pretrain_steps} loss {loss:.3f}"),
        )
        save_prior(model, tokenizer, out_dir)
        return {
            "steps": result.steps,
            "final_loss": result.final_loss,
            "seconds": round(result.seconds, 1),
            "data_goal_rate": data_metrics["goal_rate"],
        }
