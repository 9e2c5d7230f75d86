"""DPO / IPO losses against closed forms computed by hand."""

from __future__ import annotations

import math

import pytest
import torch

from rl4gen.core.preference import dpo_loss

# One pair: policy log-probs -1 (chosen), -3 (rejected); reference -2 for both.
# h = (-1 - -3) - (-2 - -2) = 2.
PC, PR, RC, RR = (torch.tensor([v]) for v in (-1.0, -3.0, -2.0, -2.0))


def test_sigmoid_loss_and_rewards_closed_form() -> None:
    out = dpo_loss(PC, PR, RC, RR, beta=0.5)
    assert out.losses.item() == pytest.approx(math.log1p(math.exp(-1.0)))  # -log sigma(0.5 * 2)
    assert out.chosen_rewards.item() == pytest.approx(0.5)  # 0.5 * (-1 - -2)
    assert out.rejected_rewards.item() == pytest.approx(-0.5)  # 0.5 * (-3 - -2)


def test_label_smoothing_mixes_both_directions() -> None:
    out = dpo_loss(PC, PR, RC, RR, beta=0.5, label_smoothing=0.1)
    expected = 0.9 * math.log1p(math.exp(-1.0)) + 0.1 * math.log1p(math.exp(1.0))
    assert out.losses.item() == pytest.approx(expected)


def test_ipo_is_squared_distance_to_half_inverse_beta() -> None:
    assert dpo_loss(PC, PR, RC, RR, beta=0.5, loss_type="ipo").losses.item() == pytest.approx((2.0 - 1.0) ** 2)
    assert dpo_loss(PC, PR, RC, RR, beta=0.25, loss_type="ipo").losses.item() == pytest.approx((2.0 - 2.0) ** 2)


def test_zero_margin_gives_log_two_and_gradient_pushes_chosen_up() -> None:
    pc = torch.tensor([-2.0, -5.0], requires_grad=True)
    pr = torch.tensor([-2.0, -1.0], requires_grad=True)
    ref_c, ref_r = torch.tensor([-2.0, -4.0]), torch.tensor([-2.0, -1.0])
    out = dpo_loss(pc, pr, ref_c, ref_r, beta=0.1)
    assert out.losses[0].item() == pytest.approx(math.log(2.0))
    out.losses.sum().backward()
    # d/d pc of -log sigma(beta h) = -beta * sigma(-beta h); h = (-1) - 0 for the second pair.
    assert pc.grad is not None and pr.grad is not None
    sig = lambda x: 1.0 / (1.0 + math.exp(-x))
    assert pc.grad.tolist() == pytest.approx([-0.1 * 0.5, -0.1 * sig(0.1)])
    assert pr.grad.tolist() == pytest.approx([0.1 * 0.5, 0.1 * sig(0.1)])
    assert not out.chosen_rewards.requires_grad


def test_unknown_loss_type_is_rejected() -> None:
    with pytest.raises(ValueError, match="sigmoid"):
        dpo_loss(PC, PR, RC, RR, beta=0.1, loss_type="hinge")  # type: ignore[arg-type]


def test_bradley_terry_loss_closed_form() -> None:
    from rl4gen.core.preference import bradley_terry_loss

    loss = bradley_terry_loss(torch.tensor([2.0, 0.0]), torch.tensor([1.0, 0.0]))
    assert loss.tolist() == pytest.approx([math.log1p(math.exp(-1.0)), math.log(2.0)])


def test_expected_calibration_error_by_hand() -> None:
    from rl4gen.core.preference import expected_calibration_error

    # Bin [0.2, 0.3): predictions 0.25, 0.25, outcomes 1, 0 -> |0.25 - 0.5| = 0.25, weight 2/4.
    # Bin [0.9, 1.0]: predictions 0.95, 1.0, outcomes 1, 1 -> |0.975 - 1| = 0.025, weight 2/4.
    probs = torch.tensor([0.25, 0.25, 0.95, 1.0])
    outcomes = torch.tensor([1.0, 0.0, 1.0, 1.0])
    assert expected_calibration_error(probs, outcomes).item() == pytest.approx(0.5 * 0.25 + 0.5 * 0.025)
    perfect = torch.tensor([0.0, 1.0])
    assert expected_calibration_error(perfect, perfect).item() == pytest.approx(0.0)
