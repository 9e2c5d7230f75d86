"""Music rewards for melodies written as event strings (see :mod:`rl4gen.music.encoding`).

``music_theory`` gives one rule of :mod:`rl4gen.music.theory` (summed over the melody's steps) and
is named after the rule, so each rule is logged as ``rewards/{rule}/mean``. ``prior_loglik`` is
RL Tuner's data term: the mean per-step log-probability of the melody under a frozen prior, the
reward-side form of the KL tie (with GRPO the same tie is also available as ``algorithm.beta``).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rl4gen.music.encoding import HOLD, MelodyError, text_to_events
from rl4gen.music.theory import RULES, TheoryConfig, analyse
from rl4gen.rewards.base import register_reward


def melody_events(sample: str, length: int | None = None) -> list[int]:
    """A sampled melody string as events, padded with holds to ``length`` when it stopped early."""
    events = text_to_events(sample)
    if length is not None and len(events) < length:
        events = events + [HOLD] * (length - len(events))
    return events


@register_reward("music_theory")
class MusicTheoryReward:
    """One music-theory rule as a reward: the rule's per-step rewards summed over the melody.

    A sample that is not a melody (a character outside the event alphabet) gets ``None``.
    """

    def __init__(
        self,
        rule: str,
        length: int | None = None,
        tonic_pitch_class: int = 0,
        key_pitch_classes: Sequence[int] = (0, 2, 4, 5, 7, 9, 11),
        max_repeats: int = 4,
        max_hold: int = 16,
        motif_length: int = 16,
        leap_size: int = 5,
    ) -> None:
        if rule not in RULES:
            raise ValueError(f"unknown rule {rule!r}; use one of {', '.join(RULES)}")
        self.rule = rule
        self.name = rule
        self.length = length
        self.config = TheoryConfig(
            key_pitch_classes=tuple(int(k) % 12 for k in key_pitch_classes),
            tonic_pitch_class=int(tonic_pitch_class) % 12,
            max_repeats=max_repeats,
            max_hold=max_hold,
            motif_length=motif_length,
            leap_size=leap_size,
        )

    def per_step(self, samples: Sequence[Any], contexts: Sequence[Any]) -> list[list[float]]:
        """The rule's reward at each step of each melody (empty for a sample that is not one)."""
        out: list[list[float]] = []
        for s in samples:
            try:
                events = melody_events(str(s), self.length)
            except MelodyError:
                out.append([])
                continue
            out.append(analyse(events, self.config).rewards[self.rule].tolist())
        return out

    def __call__(self, samples: Sequence[Any], contexts: Sequence[Any], **info: Any) -> list[float | None]:
        return [float(sum(row)) if row else None for row in self.per_step(samples, contexts)]


@register_reward("prior_loglik")
class PriorLogLikelihood:
    """Mean per-step log-probability of each melody under a frozen prior model.

    ``model`` is the prior's directory; by default the melody task's own cached prior.
    """

    def __init__(self, model: str | None = None, batch_size: int = 256) -> None:
        self.name = "prior_loglik"
        self.model_path = model
        self.batch_size = batch_size
        self._prior: Any = None

    def _load(self) -> Any:
        if self._prior is None:
            from rl4gen.policies.causal_lm import CausalLMPolicy

            path: str | Path | None = self.model_path
            if path is None:
                from rl4gen.tasks.melody import MelodyTask

                path = MelodyTask().pretrain()
            self._prior = CausalLMPolicy.from_pretrained(path)
        return self._prior

    def __call__(self, samples: Sequence[Any], contexts: Sequence[Any], **info: Any) -> list[float | None]:
        prior = self._load()
        out: list[float | None] = []
        for i in range(0, len(samples), self.batch_size):
            chunk = [str(s) for s in samples[i : i + self.batch_size]]
            out.extend(float(v) for v in prior.score([""] * len(chunk), chunk))
        return out
