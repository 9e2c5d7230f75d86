"""Built-in rewards for text: exact answers, regular expressions, length and word lexicons."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

from rl4gen.rewards.base import register_reward


def _answer_of(context: Any, key: str) -> str | None:
    if isinstance(context, Mapping):
        value = context.get(key)
        return None if value is None else str(value)
    return None


@register_reward("exact_answer")
class ExactAnswerReward:
    """1.0 when the completion equals the context's answer, else 0.0.

    Contexts are mappings with an ``answer`` entry (the key is configurable); a context without
    one gets ``None``. With ``normalize`` (the default) the comparison ignores case, surrounding
    whitespace and runs of inner whitespace; without it the strings must match exactly.
    """

    def __init__(self, answer_key: str = "answer", normalize: bool = True) -> None:
        self.name = "exact_answer"
        self.answer_key = answer_key
        self.normalize = normalize

    def _norm(self, text: str) -> str:
        return " ".join(text.split()).lower() if self.normalize else text

    def __call__(self, samples: Sequence[str], contexts: Sequence[Any], **info: Any) -> list[float | None]:
        out: list[float | None] = []
        for sample, context in zip(samples, contexts):
            answer = _answer_of(context, self.answer_key)
            out.append(None if answer is None else float(self._norm(sample) == self._norm(answer)))
        return out


@register_reward("regex")
class RegexReward:
    """``match_value`` when the completion matches ``pattern`` (``re.search``; ``fullmatch`` if
    ``full``), else ``miss_value``. Use it for format rewards."""

    def __init__(self, pattern: str, full: bool = False, match_value: float = 1.0, miss_value: float = 0.0) -> None:
        try:
            self.pattern = re.compile(pattern)
        except re.error as exc:
            raise ValueError(f"pattern {pattern!r} is not a valid regular expression ({exc})") from None
        self.name = "regex"
        self.full = full
        self.match_value = match_value
        self.miss_value = miss_value

    def __call__(self, samples: Sequence[str], contexts: Sequence[Any], **info: Any) -> list[float]:
        find = self.pattern.fullmatch if self.full else self.pattern.search
        return [self.match_value if find(s) else self.miss_value for s in samples]


@register_reward("length_penalty")
class LengthPenalty:
    """``-per_char * max(0, len(sample) - max_chars)``: penalise completions past a length."""

    def __init__(self, max_chars: int, per_char: float = 0.01) -> None:
        if max_chars < 0:
            raise ValueError("max_chars must be >= 0")
        self.name = "length_penalty"
        self.max_chars = max_chars
        self.per_char = per_char

    def __call__(self, samples: Sequence[str], contexts: Sequence[Any], **info: Any) -> list[float]:
        return [-self.per_char * max(0, len(s) - self.max_chars) for s in samples]


_WORD = re.compile(r"[a-z']+")


@register_reward("lexicon")
class LexiconReward:
    """Lexicon score: the sum of the word weights found in a completion, divided by its word
    count (``per_word``) or not.

    ``weights`` maps lower-case words to scores, e.g. a sentiment lexicon with positive words > 0
    and negative words < 0. ``lexicon`` names a built-in one (``sentiment``).
    """

    def __init__(
        self,
        weights: Mapping[str, float] | None = None,
        lexicon: str | None = None,
        per_word: bool = False,
        clip: float | None = None,
    ) -> None:
        if (weights is None) == (lexicon is None):
            raise ValueError("give exactly one of weights or lexicon")
        if lexicon is not None:
            from rl4gen.rewards.lexicons import LEXICONS

            if lexicon not in LEXICONS:
                raise ValueError(f"unknown lexicon {lexicon!r}; built-in: {', '.join(LEXICONS)}")
            weights = LEXICONS[lexicon]
        assert weights is not None
        self.name = "lexicon"
        self.weights = {str(k).lower(): float(v) for k, v in weights.items()}
        self.per_word = per_word
        self.clip = clip

    def score(self, text: str) -> float:
        words = _WORD.findall(text.lower())
        total = sum(self.weights.get(w, 0.0) for w in words)
        if self.per_word:
            total /= max(len(words), 1)
        if self.clip is not None:
            total = max(-self.clip, min(self.clip, total))
        return total

    def __call__(self, samples: Sequence[str], contexts: Sequence[Any], **info: Any) -> list[float]:
        return [self.score(s) for s in samples]
