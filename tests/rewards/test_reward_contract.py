"""The reward contract (CombinedReward, RewardError), the built-in text rewards and the registry."""

from __future__ import annotations

import math

import pytest
import torch

from rl4gen.config import ConfigError
from rl4gen.rewards import (
    REWARD_TYPES,
    CombinedReward,
    ExactAnswerReward,
    FunctionReward,
    LengthPenalty,
    LexiconReward,
    RegexReward,
    RewardError,
    build_reward,
    check_reward_values,
)


def const(name, values):
    return FunctionReward(lambda samples, contexts, **info: list(values), name=name)


SAMPLES = ["a", "bb", "ccc"]
CONTEXTS = [{}, {}, {}]


# --------------------------------------------------------------------------- combination


def test_combined_reward_weighted_sum_and_components():
    combo = CombinedReward(
        [const("r1", [1.0, 2.0, 3.0]), const("r2", [10.0, 0.0, -4.0])], weights=[1.0, 0.5]
    )
    out = combo(SAMPLES, CONTEXTS)
    # total = 1*r1 + 0.5*r2 = [1+5, 2+0, 3-2] = [6, 2, 1]
    assert out.total.tolist() == [6.0, 2.0, 1.0]
    assert out.total.shape == (3,)
    assert set(out.components) == {"r1", "r2"}
    assert out.components["r1"].tolist() == [1.0, 2.0, 3.0]
    assert out.components["r2"].tolist() == [10.0, 0.0, -4.0]
    assert combo.names == ["r1", "r2"]


def test_combined_reward_default_weights_are_one():
    out = CombinedReward([const("r1", [1.0, 2.0, 3.0]), const("r2", [0.5, 0.5, 0.5])])(
        SAMPLES, CONTEXTS
    )
    # [1.5, 2.5, 3.5]
    assert out.total.tolist() == [1.5, 2.5, 3.5]


def test_none_is_left_out_nan_component_zero_contribution():
    combo = CombinedReward(
        [const("r1", [1.0, None, 3.0]), const("r2", [2.0, 4.0, None])], weights=[1.0, 0.5]
    )
    out = combo(SAMPLES, CONTEXTS)
    # sample 0: 1 + 0.5*2 = 2 ; sample 1: (left out) + 0.5*4 = 2 ; sample 2: 3 + (left out) = 3
    assert out.total.tolist() == [2.0, 2.0, 3.0]
    r1 = out.components["r1"]
    assert r1[0].item() == 1.0 and math.isnan(r1[1].item()) and r1[2].item() == 3.0
    assert math.isnan(out.components["r2"][2].item())
    assert torch.isfinite(out.total).all()


def test_all_none_gives_zero_total():
    out = CombinedReward([const("only", [None, None, None])])(SAMPLES, CONTEXTS)
    assert out.total.tolist() == [0.0, 0.0, 0.0]
    assert torch.isnan(out.components["only"]).all()


def test_wrong_count_raises_reward_error_naming_reward():
    combo = CombinedReward([const("fine", [1.0, 1.0, 1.0]), const("short_one", [1.0, 2.0])])
    with pytest.raises(RewardError, match="short_one") as info:
        combo(SAMPLES, CONTEXTS)
    assert "2 values for 3 samples" in str(info.value)


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_non_finite_raises_reward_error_naming_reward(bad):
    combo = CombinedReward([const("broken_reward", [1.0, bad, 0.0])])
    with pytest.raises(RewardError, match="broken_reward") as info:
        combo(SAMPLES, CONTEXTS)
    assert "sample 1" in str(info.value)


@pytest.mark.parametrize("bad", ["abc", object(), [1.0]])
def test_non_number_raises_reward_error(bad):
    combo = CombinedReward([const("weird", [1.0, 2.0, bad])])
    with pytest.raises(RewardError, match="weird") as info:
        combo(SAMPLES, CONTEXTS)
    assert "not a number" in str(info.value)


def test_non_iterable_output_raises_reward_error():
    combo = CombinedReward([FunctionReward(lambda s, c, **i: 1.0, name="scalar_reward")])
    with pytest.raises(RewardError, match="scalar_reward"):
        combo(SAMPLES, CONTEXTS)


def test_reward_error_is_not_a_value_error_but_runtime_error():
    assert issubclass(RewardError, RuntimeError)


def test_check_reward_values_accepts_ints_bools_and_tensors():
    # int 1 -> 1.0, True -> 1.0, None -> nan, a 0-d tensor 0.25 -> 0.25
    out = check_reward_values("r", [1, True, None, torch.tensor(0.25)], 4)
    assert out[0] == 1.0 and out[1] == 1.0 and math.isnan(out[2]) and out[3] == 0.25
    # a tensor of values works too
    assert check_reward_values("r", torch.tensor([0.5, 1.5]), 2) == [0.5, 1.5]


def test_duplicate_names_rejected():
    with pytest.raises(ValueError, match="unique"):
        CombinedReward([const("same", [0.0]), const("same", [1.0])])


def test_weights_count_must_match_and_empty_rejected():
    with pytest.raises(ValueError):
        CombinedReward([const("a", [0.0])], weights=[1.0, 2.0])
    with pytest.raises(ValueError):
        CombinedReward([])


def test_combined_update_calls_rewards_that_learn():
    seen = []

    class Learner:
        name = "learner"

        def __call__(self, samples, contexts, **info):
            return [0.0] * len(samples)

        def update(self, rollout):
            seen.append(rollout)

    combo = CombinedReward([Learner(), const("static", [0.0])])
    combo.update("ROLLOUT")
    assert seen == ["ROLLOUT"]


# ------------------------------------------------------------------------ FunctionReward


def test_function_reward_wraps_plain_function_and_passes_info():
    def char_count(samples, contexts, **info):
        return [len(s) * info.get("scale", 1.0) for s in samples]

    r = FunctionReward(char_count)
    assert r.name == "char_count"
    assert r(["ab", "abcd"], [None, None]) == [2.0, 4.0]
    assert r(["ab", "abcd"], [None, None], scale=0.5) == [1.0, 2.0]
    assert FunctionReward(char_count, name="custom").name == "custom"
    # len * 1.0 -> "a" 1, "bb" 2, "ccc" 3
    assert CombinedReward([r])(SAMPLES, CONTEXTS).total.tolist() == [1.0, 2.0, 3.0]


# --------------------------------------------------------------------------- built-ins


def test_exact_answer_normalized():
    r = ExactAnswerReward()
    assert r.name == "exact_answer"
    samples = ["  Forty   Two ", "42", "41", "x", "y"]
    contexts = [
        {"answer": "forty two"},
        {"answer": 42},
        {"answer": "42"},
        {"question": "q"},
        "not a mapping",
    ]
    # case + whitespace ignored -> 1 ; str(42) == "42" -> 1 ; "41" != "42" -> 0 ;
    #   no answer -> None ; not a mapping -> None
    assert r(samples, contexts) == [1.0, 1.0, 0.0, None, None]


def test_exact_answer_without_normalize():
    r = ExactAnswerReward(normalize=False)
    samples = ["  Forty   Two ", "42", "Yes", "yes"]
    contexts = [{"answer": "forty two"}, {"answer": 42}, {"answer": "yes"}, {"answer": "yes"}]
    # exact string comparison: case and spacing now matter
    assert r(samples, contexts) == [0.0, 1.0, 0.0, 1.0]


def test_exact_answer_custom_key():
    r = ExactAnswerReward(answer_key="target")
    assert r(["7", "7"], [{"target": "7"}, {"answer": "7"}]) == [1.0, None]


def test_exact_answer_in_combined_reward_none_left_out():
    out = CombinedReward([ExactAnswerReward()])(["1", "2"], [{"answer": "1"}, {}])
    assert out.total.tolist() == [1.0, 0.0]
    assert math.isnan(out.components["exact_answer"][1].item())


def test_regex_search_vs_full():
    search = RegexReward(r"\d+")
    full = RegexReward(r"\d+", full=True)
    samples = ["abc 12", "12", "abc"]
    # search: digits anywhere -> [1, 1, 0] ; fullmatch: whole string -> [0, 1, 0]
    assert search(samples, [None] * 3) == [1.0, 1.0, 0.0]
    assert full(samples, [None] * 3) == [0.0, 1.0, 0.0]
    assert search.name == "regex"


def test_regex_custom_values():
    r = RegexReward(r"^<answer>.*</answer>$", match_value=2.0, miss_value=-1.0)
    assert r(["<answer>3</answer>", "3"], [None, None]) == [2.0, -1.0]


def test_regex_invalid_pattern_raises_value_error():
    with pytest.raises(ValueError, match="not a valid regular expression"):
        RegexReward("(unclosed")


def test_length_penalty():
    r = LengthPenalty(max_chars=5, per_char=0.1)
    # len 3 -> 0 ; len 5 -> 0 ; len 8 -> -0.1 * 3 = -0.3 ; len 15 -> -0.1 * 10 = -1.0
    out = r(["abc", "abcde", "abcdefgh", "x" * 15], [None] * 4)
    assert out == pytest.approx([0.0, 0.0, -0.3, -1.0])
    assert r.name == "length_penalty"
    # default per_char 0.01: len 12 over max 2 -> -0.1
    assert LengthPenalty(max_chars=2)(["x" * 12], [None]) == pytest.approx([-0.1])


def test_length_penalty_negative_max_raises():
    with pytest.raises(ValueError):
        LengthPenalty(max_chars=-1)


def test_lexicon_weights():
    r = LexiconReward(weights={"good": 1.0, "Bad": -2.0})
    # keys are lower-cased; "good good bad" -> 1 + 1 - 2 = 0 ; "BAD day" -> -2 ; "Good, GOOD!" -> 2
    assert r(["good good bad", "BAD day", "Good, GOOD!"], [None] * 3) == [0.0, -2.0, 2.0]
    assert r.name == "lexicon"


def test_lexicon_per_word_and_clip():
    per_word = LexiconReward(weights={"good": 1.0, "bad": -2.0}, per_word=True)
    # "good day" -> 1 / 2 words = 0.5 ; "bad" -> -2 / 1 = -2 ; "" -> 0 / max(0, 1) = 0
    assert per_word(["good day", "bad", ""], [None] * 3) == [0.5, -2.0, 0.0]
    clipped = LexiconReward(weights={"good": 1.0, "bad": -2.0}, clip=1.0)
    # "good good good" -> 3 -> clipped 1 ; "bad bad" -> -4 -> clipped -1 ; "good" -> 1 (unchanged)
    assert clipped(["good good good", "bad bad", "good"], [None] * 3) == [1.0, -1.0, 1.0]
    both = LexiconReward(weights={"good": 1.0}, per_word=True, clip=0.3)
    # "good good x x" -> 2/4 = 0.5 -> clip 0.3
    assert both(["good good x x"], [None]) == [0.3]


def test_lexicon_builtin_sentiment():
    r = LexiconReward(lexicon="sentiment")
    # love +1 ; death -1 ; love and death -> 0 ; "O love, sweet love!" -> love + sweet + love = 3
    assert r(["I love thee", "death", "love and death", "O love, sweet love!"], [None] * 4) == [
        1.0,
        -1.0,
        0.0,
        3.0,
    ]
    assert r.score("love") > 0
    assert r.score("death") < 0


def test_lexicon_argument_errors():
    with pytest.raises(ValueError):
        LexiconReward()
    with pytest.raises(ValueError):
        LexiconReward(weights={"a": 1.0}, lexicon="sentiment")
    with pytest.raises(ValueError, match="nonexistent"):
        LexiconReward(lexicon="nonexistent")


# ---------------------------------------------------------------------------- registry


def test_reward_types_registered():
    for name in ("exact_answer", "regex", "length_penalty", "lexicon"):
        assert name in REWARD_TYPES
    assert REWARD_TYPES["regex"] is RegexReward


def test_build_reward_builds_and_renames():
    r = build_reward("regex", pattern=r"\d", full=True)
    assert isinstance(r, RegexReward)
    assert r.name == "regex"
    assert r(["1", "a1"], [None, None]) == [1.0, 0.0]
    named = build_reward("lexicon", name="sentiment_score", lexicon="sentiment")
    assert isinstance(named, LexiconReward)
    assert named.name == "sentiment_score"
    assert build_reward("exact_answer").name == "exact_answer"


def test_build_reward_unknown_type():
    with pytest.raises(ConfigError, match="no_such_reward") as info:
        build_reward("no_such_reward")
    # the message lists the known types
    assert "exact_answer" in str(info.value)


def test_build_reward_unknown_argument():
    with pytest.raises(ConfigError) as info:
        build_reward("regex", pattern="x", patern="y")
    msg = str(info.value)
    assert "'patern'" in msg and "'regex'" in msg
    # it names the allowed arguments
    assert "pattern" in msg.replace("'patern'", "")


def test_build_reward_rejected_arguments_become_config_error():
    with pytest.raises(ConfigError, match="regex"):
        build_reward("regex", pattern="(")
    with pytest.raises(ConfigError, match="length_penalty"):
        build_reward("length_penalty", max_chars=-3)
    with pytest.raises(ConfigError, match="regex"):
        build_reward("regex")  # missing the required pattern


def test_config_error_is_value_error():
    assert issubclass(ConfigError, ValueError)
