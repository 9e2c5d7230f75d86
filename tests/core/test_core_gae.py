"""Hand-computed checks of GAE, the clipped value loss, explained variance and the KL controllers."""

from __future__ import annotations

import math

import pytest
import torch

from rl4gen.core.advantages import gae
from rl4gen.core.kl import AdaptiveKLController, FixedKLController
from rl4gen.core.losses import clipped_value_loss, explained_variance

F64 = torch.float64


def t(values):
    return torch.tensor(values, dtype=F64)


# One full row: rewards [1, 0, 2], values [0.5, 1.0, -1.0], three real tokens.
REWARDS = t([[1.0, 0.0, 2.0]])
VALUES = t([[0.5, 1.0, -1.0]])
FULL = t([[1.0, 1.0, 1.0]])


@pytest.mark.parametrize(
    ("gamma", "lam", "advantages", "returns"),
    [
        # gamma 0.9, lam 0.5 (gamma * lam = 0.45):
        #   t=2: delta = 2 + 0 - (-1) = 3                  A2 = 3
        #   t=1: delta = 0 + 0.9 * (-1) - 1 = -1.9         A1 = -1.9 + 0.45 * 3 = -0.55
        #   t=0: delta = 1 + 0.9 * 1 - 0.5 = 1.4           A0 = 1.4 + 0.45 * -0.55 = 1.1525
        #   returns = A + V = [1.6525, 0.45, 2.0]
        (0.9, 0.5, [1.1525, -0.55, 3.0], [1.6525, 0.45, 2.0]),
        # lam 0: A = delta = [1.4, -1.9, 3]; returns = r + gamma V(next) = [1.9, -0.9, 2]
        (0.9, 0.0, [1.4, -1.9, 3.0], [1.9, -0.9, 2.0]),
        # gamma 0: A = r - V = [0.5, -1, 3] whatever lam; returns = r
        (0.0, 0.5, [0.5, -1.0, 3.0], [1.0, 0.0, 2.0]),
        # gamma 1, lam 1: returns are the Monte-Carlo returns [3, 2, 2]; A = returns - V
        (1.0, 1.0, [2.5, 1.0, 3.0], [3.0, 2.0, 2.0]),
        # gamma 1, lam 0: A = delta = [1 + 1 - 0.5, 0 - 1 - 1, 2 + 1] = [1.5, -2, 3]; returns [2, -1, 2]
        (1.0, 0.0, [1.5, -2.0, 3.0], [2.0, -1.0, 2.0]),
    ],
)
def test_gae_full_row_against_hand_computed(gamma, lam, advantages, returns):
    adv, ret = gae(REWARDS, VALUES, FULL, gamma, lam)
    torch.testing.assert_close(adv, t([advantages]), atol=1e-12, rtol=0)
    torch.testing.assert_close(ret, t([returns]), atol=1e-12, rtol=0)


def test_gae_right_padding_ends_the_episode_and_ignores_padded_entries():
    # Row 1 has two real tokens: rewards [0, 2], values [1.0, 0.5]; its padded reward 5 and value 9
    # must not leak in. gamma 0.9, lam 0.5:
    #   t=1 (last): delta = 2 + 0 - 0.5 = 1.5              A1 = 1.5
    #   t=0:        delta = 0 + 0.9 * 0.5 - 1 = -0.55      A0 = -0.55 + 0.45 * 1.5 = 0.125
    #   returns = [1.125, 2.0]; padding 0
    rewards = t([[1.0, 0.0, 2.0], [0.0, 2.0, 5.0]])
    values = t([[0.5, 1.0, -1.0], [1.0, 0.5, 9.0]])
    mask = t([[1.0, 1.0, 1.0], [1.0, 1.0, 0.0]])
    adv, ret = gae(rewards, values, mask, 0.9, 0.5)
    torch.testing.assert_close(adv, t([[1.1525, -0.55, 3.0], [0.125, 1.5, 0.0]]), atol=1e-12, rtol=0)
    torch.testing.assert_close(ret, t([[1.6525, 0.45, 2.0], [1.125, 2.0, 0.0]]), atol=1e-12, rtol=0)


def test_gae_gamma_lam_one_gives_monte_carlo_returns_with_padding():
    # Row 1: rewards [0, 2], values [1.0, 0.5]: return 2 at both tokens, A = [1.0, 1.5]
    rewards = t([[0.0, 2.0, 5.0]])
    values = t([[1.0, 0.5, 9.0]])
    mask = t([[1.0, 1.0, 0.0]])
    adv, ret = gae(rewards, values, mask, 1.0, 1.0)
    torch.testing.assert_close(adv, t([[1.0, 1.5, 0.0]]), atol=1e-12, rtol=0)
    torch.testing.assert_close(ret, t([[2.0, 2.0, 0.0]]), atol=1e-12, rtol=0)


def test_gae_one_token_row_and_empty_row():
    # Row 0: one token, reward 1, value 0.25 -> A = 0.75, return 1; row 1: nothing real -> zeros
    adv, ret = gae(t([[1.0, 3.0], [4.0, 4.0]]), t([[0.25, 7.0], [2.0, 2.0]]), t([[1.0, 0.0], [0.0, 0.0]]), 0.95, 0.9)
    torch.testing.assert_close(adv, t([[0.75, 0.0], [0.0, 0.0]]), atol=1e-12, rtol=0)
    torch.testing.assert_close(ret, t([[1.0, 0.0], [0.0, 0.0]]), atol=1e-12, rtol=0)


# ------------------------------------------------------------------------------ value loss


def test_clipped_value_loss_against_hand_computed():
    # v = [1, 0, 2], v_old = [0.5, 0.5, 2], R = [2, 1, 1], c = 0.2
    # clipped v = v_old + clamp(v - v_old, -0.2, 0.2) = [0.7, 0.3, 2.0]
    # unclipped (v - R)^2 = [1, 1, 1]; clipped (v_clip - R)^2 = [1.69, 0.49, 1]
    # 0.5 * max = [0.845, 0.5, 0.5]; the clipped term is larger only at token 0
    values = t([[1.0, 0.0, 2.0]]).requires_grad_(True)
    out = clipped_value_loss(values, t([[0.5, 0.5, 2.0]]), t([[2.0, 1.0, 1.0]]), 0.2)
    torch.testing.assert_close(out.per_token_loss, t([[0.845, 0.5, 0.5]]), atol=1e-12, rtol=0)
    assert out.clipped.tolist() == [[True, False, False]]
    out.per_token_loss[:, :2].sum().backward()
    # token 0: the clipped branch wins and is flat in v (gradient 0); token 1: v - R = -1
    assert values.grad is not None
    torch.testing.assert_close(values.grad[:, :2], t([[0.0, -1.0]]), atol=1e-12, rtol=0)


def test_clipped_value_loss_with_wide_range_is_plain_squared_error():
    v, old, ret = t([[1.0, -2.0]]), t([[0.0, 0.0]]), t([[0.5, 1.0]])
    out = clipped_value_loss(v, old, ret, 10.0)
    torch.testing.assert_close(out.per_token_loss, 0.5 * (v - ret) ** 2, atol=1e-12, rtol=0)
    assert not out.clipped.any()


# ---------------------------------------------------------------------- explained variance


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ([1.0, 2.0, 3.0, 4.0], 1.0),  # perfect critic
        ([2.5, 2.5, 2.5, 2.5], 0.0),  # the mean: no better than a constant
        ([0.0, 0.0, 0.0, 0.0], 0.0),  # any constant
        # returns - values = [-3, -1, 1, 3]: var 5; var(returns) = 1.25 -> 1 - 4 = -3
        ([4.0, 3.0, 2.0, 1.0], -3.0),
    ],
)
def test_explained_variance(values, expected):
    mask = t([[1.0, 1.0, 1.0, 1.0]])
    ev = explained_variance(t([values]), t([[1.0, 2.0, 3.0, 4.0]]), mask)
    assert ev.item() == pytest.approx(expected, abs=1e-12)


def test_explained_variance_ignores_padding_and_constant_returns_give_nan():
    # real returns [1, 2] (var 0.25), errors [0, 1] (var 0.25) -> 0
    ev = explained_variance(t([[1.0, 1.0, 0.0]]), t([[1.0, 2.0, 99.0]]), t([[1.0, 1.0, 0.0]]))
    assert ev.item() == pytest.approx(0.0, abs=1e-12)
    assert math.isnan(explained_variance(t([[0.0, 1.0]]), t([[3.0, 3.0]]), t([[1.0, 1.0]])).item())


# ---------------------------------------------------------------------------- KL control


def test_fixed_kl_controller_never_moves():
    ctl = FixedKLController(0.05)
    ctl.update(100.0, 512)
    assert ctl.value == 0.05


@pytest.mark.parametrize(
    ("kl", "n", "factor"),
    [
        (9.0, 100, 1.002),  # 9 / 6 - 1 = 0.5, clipped to 0.2: 1 + 0.2 * 100 / 10000
        (3.0, 100, 0.998),  # 3 / 6 - 1 = -0.5, clipped to -0.2
        (6.6, 1000, 1.01),  # 6.6 / 6 - 1 = 0.1: 1 + 0.1 * 1000 / 10000
        (6.0, 1000, 1.0),  # on target
    ],
)
def test_adaptive_kl_controller_proportional_update(kl, n, factor):
    ctl = AdaptiveKLController(0.2, target=6.0, horizon=10000)
    ctl.update(kl, n)
    assert ctl.value == pytest.approx(0.2 * factor, rel=1e-12)


def test_adaptive_kl_controller_converges_toward_target_from_both_sides():
    high, low = AdaptiveKLController(0.1, 1.0, 100), AdaptiveKLController(0.1, 1.0, 100)
    for _ in range(10):
        high.update(5.0, 10)  # KL too high: the coefficient grows
        low.update(0.1, 10)  # KL too low: it shrinks
    assert high.value == pytest.approx(0.1 * 1.02**10)
    assert low.value == pytest.approx(0.1 * 0.98**10)
