"""Stable-Baselines3 → rl4gen: metric keys into ``MetricsLogger``, checkpoints, level samples."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.logger import KVWriter

from rl4gen.envs.levels.samples import level_record, write_levels
from rl4gen.envs.levels.train import LevelsTrainConfig, save_checkpoint
from rl4gen.tracking import MetricsLogger

__all__ = ["SB3_TO_CLEANRL", "LevelsCallback", "MetricsWriter"]

#: SB3 logger key -> (our key, sign)
SB3_TO_CLEANRL: dict[str, tuple[str, float]] = {
    "rollout/ep_rew_mean": ("charts/episodic_return", 1.0),
    "rollout/ep_len_mean": ("charts/episodic_length", 1.0),
    "time/fps": ("charts/SPS", 1.0),
    "train/learning_rate": ("charts/learning_rate", 1.0),
    "rollout/exploration_rate": ("charts/epsilon", 1.0),
    "train/policy_gradient_loss": ("losses/policy_loss", 1.0),  # PPO
    "train/policy_loss": ("losses/policy_loss", 1.0),  # A2C
    "train/value_loss": ("losses/value_loss", 1.0),
    "train/entropy_loss": ("losses/entropy", -1.0),  # SB3 logs -entropy
    "train/approx_kl": ("losses/approx_kl", 1.0),  # k3: mean((r - 1) - log r)
    "train/clip_fraction": ("losses/clipfrac", 1.0),
    "train/explained_variance": ("losses/explained_variance", 1.0),
}


class MetricsWriter(KVWriter):
    """An SB3 logger output that renames keys (``SB3_TO_CLEANRL``) and writes to ``MetricsLogger``."""

    def __init__(self, metrics: MetricsLogger, algorithm: str = "ppo") -> None:
        self.metrics = metrics
        self.on_dump: list[Any] = []
        self.last_step = -1
        self.keys = dict(SB3_TO_CLEANRL)
        if algorithm == "dqn":
            self.keys["train/loss"] = ("losses/td_loss", 1.0)  # DQN's Huber TD loss

    def write(self, key_values: dict[str, Any], key_excluded: dict[str, Any], step: int = 0) -> None:
        out: dict[str, float] = {}
        for key, value in key_values.items():
            if key.startswith("levels/"):
                out[key] = float(value)
            elif key in self.keys and isinstance(value, (int, float, np.floating, np.integer)):
                name, sign = self.keys[key]
                out[name] = sign * float(value)
        if out:
            self.last_step = step
            self.metrics.log(step, out)
            ret = out.get("charts/episodic_return")
            self.metrics.advance(step, "" if ret is None else f"return {ret:.2f}")
        for hook in self.on_dump:
            hook(step)

    def close(self) -> None:
        pass


class LevelsCallback(BaseCallback):
    """Checkpoints every ``checkpoint_every`` timesteps; level metrics and samples per record."""

    def __init__(
        self, cfg: LevelsTrainConfig, run_dir: Path, metrics: MetricsLogger, sink: list[tuple[np.ndarray, dict[str, Any]]]
    ) -> None:
        super().__init__(verbose=0)
        self.cfg, self.run_dir, self.metrics, self.sink = cfg, run_dir, metrics, sink
        self._pending: list[tuple[np.ndarray, dict[str, Any]]] = []
        self._last_checkpoint = 0
        self._problem = cfg.env.split("-")[0]

    def _init_callback(self) -> None:
        self._last_checkpoint = int(self.model.num_timesteps)
        for fmt in self.model.logger.output_formats:
            if isinstance(fmt, MetricsWriter):
                fmt.on_dump.append(lambda step: self.write_levels())

    def _on_step(self) -> bool:
        if self.num_timesteps - self._last_checkpoint >= self.cfg.checkpoint_every:
            save_checkpoint(self.model, self.run_dir, int(self.num_timesteps))
            self._last_checkpoint = int(self.num_timesteps)
        return True

    def _on_rollout_end(self) -> None:
        self._pending.extend(self.sink)
        self.sink.clear()
        if self._pending:
            goals = [bool(info.get("goal")) for _, info in self._pending]
            self.logger.record("levels/goal_rate", float(np.mean(goals)))
            self.logger.record("levels/changes", float(np.mean([info["changes"] for _, info in self._pending])))

    def write_levels(self) -> None:
        """Append the latest finished levels to samples/levels.jsonl and start a new window."""
        self._pending.extend(self.sink)
        self.sink.clear()
        keep = self._pending[-self.cfg.levels_per_log :] if self.cfg.levels_per_log else []
        model = getattr(self, "model", None)  # set by SB3 once learning starts (not with total_timesteps 0)
        step = int(model.num_timesteps) if model is not None else 0
        records = []
        for level, info in keep:
            stats = {k: v for k, v in info.items() if k not in ("goal", "changes", "iterations", "final_level", "episode", "TimeLimit.truncated", "terminal_observation")}
            records.append(
                level_record(level, self._problem, env=f"rl4gen/{self.cfg.env}-v0", goal=bool(info.get("goal")), step=step, stats=stats)
            )
        if records:
            write_levels(self.run_dir, records)
        self._pending.clear()
