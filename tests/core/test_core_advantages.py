"""Hand-computed checks of the advantage estimators in rl4gen.core.advantages."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from rl4gen.core.advantages import group_normalized_advantages, leave_one_out_advantages, whiten

F64 = torch.float64


def t(values, dtype=F64):
    return torch.tensor(values, dtype=dtype)


# A shared example: group 0 = rewards [1, 2, 6] (rows 0, 2, 4), group 1 = rewards [0, 4] (rows 1, 3)
# Group 0: mean 3, diffs [-2, -1, 3], sum sq 4 + 1 + 9 = 14,
#          unbiased var 14 / 2 = 7, std sqrt(7) = 2.6457513
# Group 1: mean 2, diffs [-2, 2], sum sq 8, unbiased var 8 / 1 = 8, std sqrt(8) = 2.8284271
REWARDS = [1.0, 0.0, 2.0, 4.0, 6.0]
GROUPS = [0, 1, 0, 1, 0]
# r - group mean = [1-3, 0-2, 2-3, 4-2, 6-3]
CENTERED = [-2.0, -2.0, -1.0, 2.0, 3.0]


def test_group_scaling_uses_unbiased_group_std_plus_eps():
    adv = group_normalized_advantages(t(REWARDS), torch.tensor(GROUPS), "group")
    # group 0: x / (2.6457513 + 1e-4) = x / 2.6458513 ;
    #   group 1: x / (2.8284271 + 1e-4) = x / 2.8285271
    # -2/2.6458513 = -0.7559004, -1/2.6458513 = -0.3779502, 3/2.6458513 = 1.1338506
    # -2/2.8285271 = -0.7070818, 2/2.8285271 = 0.7070818
    expected = t([-0.7559004, -0.7070818, -0.3779502, 0.7070818, 1.1338506])
    torch.testing.assert_close(adv, expected, atol=1e-6, rtol=0)


def test_group_scaling_default_is_group():
    adv = group_normalized_advantages(t(REWARDS), torch.tensor(GROUPS))
    expected = t([-0.7559004, -0.7070818, -0.3779502, 0.7070818, 1.1338506])
    torch.testing.assert_close(adv, expected, atol=1e-6, rtol=0)


def test_group_ids_need_not_be_contiguous_or_start_at_zero():
    # Same example with group ids 5 (rows 0, 2, 4) and 2 (rows 1, 3): the labels don't matter.
    adv = group_normalized_advantages(t(REWARDS), torch.tensor([5, 2, 5, 2, 5]), "group")
    expected = t([-0.7559004, -0.7070818, -0.3779502, 0.7070818, 1.1338506])
    torch.testing.assert_close(adv, expected, atol=1e-6, rtol=0)
    # Interleaved and unsorted: rows [0, 3] are group 9, rows [1, 2] group 1.
    # group 9 rewards [1, 3]: mean 2, std sqrt(2) = 1.4142136 -> +-1 / 1.4143136 = +-0.7070568
    # group 1 rewards [10, 10]: identical -> 0
    adv = group_normalized_advantages(
        t([1.0, 10.0, 10.0, 3.0]), torch.tensor([9, 1, 1, 9]), "group"
    )
    torch.testing.assert_close(adv, t([-0.7070568, 0.0, 0.0, 0.7070568]), atol=1e-6, rtol=0)


def test_batch_scaling_uses_unbiased_batch_std():
    adv = group_normalized_advantages(t(REWARDS), torch.tensor(GROUPS), "batch")
    # batch mean 13/5 = 2.6; diffs [-1.6, -2.6, -0.6, 1.4, 3.4];
    #   sum sq 2.56+6.76+0.36+1.96+11.56 = 23.2
    # unbiased var 23.2 / 4 = 5.8; std sqrt(5.8) = 2.4083189; denom 2.4084189
    # centered by *group* mean: [-2, -2, -1, 2, 3] / 2.4084189
    expected = t([-0.8304203, -0.8304203, -0.4152102, 0.8304203, 1.2456305])
    torch.testing.assert_close(adv, expected, atol=1e-6, rtol=0)


def test_none_scaling_is_raw_difference_from_group_mean():
    adv = group_normalized_advantages(t(REWARDS), torch.tensor(GROUPS), "none")
    torch.testing.assert_close(adv, t(CENTERED), atol=1e-12, rtol=0)


@pytest.mark.parametrize("scale", ["group", "batch", "none"])
def test_identical_rewards_in_a_group_give_zero_not_nan(scale):
    # group 0 = [1, 1, 1] (std 0), group 1 = [0, 1]
    rewards = t([1.0, 1.0, 1.0, 0.0, 1.0])
    adv = group_normalized_advantages(rewards, torch.tensor([0, 0, 0, 1, 1]), scale)
    assert torch.isfinite(adv).all()
    assert adv[:3].tolist() == [0.0, 0.0, 0.0]


def test_all_identical_rewards_everywhere_give_zero():
    rewards = torch.full((6,), 0.7, dtype=torch.float32)
    for scale in ("group", "batch", "none"):
        adv = group_normalized_advantages(rewards, torch.tensor([0, 0, 0, 1, 1, 1]), scale)
        assert torch.isfinite(adv).all()
        torch.testing.assert_close(adv, torch.zeros(6), atol=1e-6, rtol=0)


def test_group_of_one_has_zero_advantage():
    # A lone sample equals its own group mean; its std is defined as 0 -> 0 / (0 + eps) = 0
    adv = group_normalized_advantages(t([5.0, 1.0, 3.0]), torch.tensor([0, 1, 1]), "group")
    # group 1 [1, 3]: mean 2, std sqrt(2) -> +-1/1.4143136 = +-0.7070568
    torch.testing.assert_close(adv, t([0.0, -0.7070568, 0.7070568]), atol=1e-6, rtol=0)


def test_invalid_scale_rewards_raises():
    with pytest.raises(ValueError, match="scale_rewards"):
        bad: Any = "std"
        group_normalized_advantages(t(REWARDS), torch.tensor(GROUPS), bad)


def test_output_shape_and_dtype_follow_rewards():
    rewards = torch.tensor([1.0, 2.0, 3.0, 4.0])
    adv = group_normalized_advantages(rewards, torch.tensor([0, 0, 1, 1]))
    assert adv.shape == (4,)
    assert adv.dtype == torch.float32


# ------------------------------------------------------------------------- leave-one-out


def test_leave_one_out_single_group():
    # rewards [1, 0, 0, 1]: others' means are [1/3, 2/3, 2/3, 1/3]
    # A = [1 - 1/3, 0 - 2/3, 0 - 2/3, 1 - 1/3] = [2/3, -2/3, -2/3, 2/3]
    adv = leave_one_out_advantages(t([1.0, 0.0, 0.0, 1.0]), torch.tensor([0, 0, 0, 0]))
    torch.testing.assert_close(
        adv, t([0.6666667, -0.6666667, -0.6666667, 0.6666667]), atol=1e-6, rtol=0
    )


def test_leave_one_out_two_noncontiguous_groups():
    # group 4 = rows 0, 2, 4 rewards [3, 1, 2]; group 1 = rows 1, 3 rewards [5, 7]
    # group 4: 3 - (1+2)/2 = 1.5 ; 1 - (3+2)/2 = -1.5 ; 2 - (3+1)/2 = 0
    # group 1: 5 - 7 = -2 ; 7 - 5 = 2
    adv = leave_one_out_advantages(t([3.0, 5.0, 1.0, 7.0, 2.0]), torch.tensor([4, 1, 4, 1, 4]))
    torch.testing.assert_close(adv, t([1.5, -2.0, -1.5, 2.0, 0.0]), atol=1e-12, rtol=0)


def test_leave_one_out_group_of_one_raises():
    with pytest.raises(ValueError, match="at least two"):
        leave_one_out_advantages(t([1.0, 2.0, 3.0]), torch.tensor([0, 0, 1]))


def test_leave_one_out_all_singletons_raises():
    with pytest.raises(ValueError):
        leave_one_out_advantages(t([1.0, 2.0]), torch.tensor([0, 1]))


# ------------------------------------------------------------------------------ whiten


def test_whiten_without_mask():
    # [1, 2, 3, 4]: mean 2.5, population var (2.25+0.25+0.25+2.25)/4 = 1.25, std 1.1180340
    # (x - 2.5) / 1.1180340 = [-1.3416408, -0.4472136, 0.4472136, 1.3416408]
    out = whiten(t([1.0, 2.0, 3.0, 4.0]))
    torch.testing.assert_close(
        out, t([-1.3416408, -0.4472136, 0.4472136, 1.3416408]), atol=1e-6, rtol=0
    )


def test_whiten_with_mask_ignores_and_zeros_masked_entries():
    # masked entries: [1, 2, 3] (100 is ignored);
    #   mean 2, population var (1+0+1)/3 = 2/3, std 0.8164966
    # (x - 2)/0.8164966 = [-1.2247449, 0, 1.2247449]; masked position -> 0
    out = whiten(t([1.0, 2.0, 3.0, 100.0]), mask=t([1.0, 1.0, 1.0, 0.0]))
    torch.testing.assert_close(out, t([-1.2247449, 0.0, 1.2247449, 0.0]), atol=1e-6, rtol=0)


def test_whiten_with_bool_mask_2d():
    values = t([[1.0, 2.0], [3.0, 100.0]])
    mask = torch.tensor([[True, True], [True, False]])
    out = whiten(values, mask=mask)
    torch.testing.assert_close(out, t([[-1.2247449, 0.0], [1.2247449, 0.0]]), atol=1e-6, rtol=0)


def test_whiten_shift_mean_false_keeps_the_mean():
    # scale only: (x - 2.5)/1.1180340 + 2.5 = [1.1583592, 2.0527864, 2.9472136, 3.8416408]
    out = whiten(t([1.0, 2.0, 3.0, 4.0]), shift_mean=False)
    torch.testing.assert_close(
        out, t([1.1583592, 2.0527864, 2.9472136, 3.8416408]), atol=1e-6, rtol=0
    )


def test_whiten_shift_mean_false_with_mask():
    # masked mean 2, std 0.8164966: [-1.2247449 + 2, 0 + 2, 1.2247449 + 2, masked -> 0]
    out = whiten(t([1.0, 2.0, 3.0, 100.0]), mask=t([1.0, 1.0, 1.0, 0.0]), shift_mean=False)
    torch.testing.assert_close(out, t([0.7752551, 2.0, 3.2247449, 0.0]), atol=1e-6, rtol=0)


def test_whiten_constant_input_is_finite():
    # var 0 -> (x - mean) * rsqrt(0 + eps) = 0 * 1e4 = 0
    out = whiten(t([3.0, 3.0, 3.0]))
    assert out.tolist() == [0.0, 0.0, 0.0]
