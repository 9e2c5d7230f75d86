"""Music rewards through the reward registry: one named reward per rule, and the prior term."""

from __future__ import annotations

import pytest

from rl4gen.config import ConfigError
from rl4gen.music.encoding import events_to_text, pitch_to_event
from rl4gen.music.theory import RULES, analyse
from rl4gen.rewards.base import build_reward

MELODY = events_to_text([pitch_to_event(p) for p in (60, 62, 64, 61, 67, 65, 64, 60)])


@pytest.mark.parametrize("rule", RULES)
def test_each_rule_is_a_named_reward_summing_its_steps(rule: str) -> None:
    reward = build_reward("music_theory", rule=rule)
    assert reward.name == rule
    from rl4gen.music.encoding import text_to_events

    expected = analyse(text_to_events(MELODY)).rewards[rule].sum()
    assert reward([MELODY], [{"prompt": ""}]) == [pytest.approx(expected)]


def test_key_reward_counts_the_out_of_key_note() -> None:
    assert build_reward("music_theory", rule="key")([MELODY], [{}]) == [-1.0]


def test_short_melodies_are_padded_and_non_melodies_get_none() -> None:
    reward = build_reward("music_theory", rule="repetition", length=40, max_hold=16)
    # the last note is held to step 40: longer than 16 steps, so it is an excessive repetition
    assert reward([MELODY, "not a melody!"], [{}, {}]) == [-1.0, None]


def test_unknown_rule_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="unknown rule 'keys'"):
        build_reward("music_theory", rule="keys")
