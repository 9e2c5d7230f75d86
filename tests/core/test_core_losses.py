"""Hand-computed checks of masked reductions, the clipped loss and loss aggregation."""

from __future__ import annotations

import math

import pytest
import torch

from rl4gen.core.losses import (
    aggregate_loss,
    clip_fractions,
    clipped_policy_loss,
    masked_mean,
    masked_sum,
)

F64 = torch.float64


def t(values, dtype=F64):
    return torch.tensor(values, dtype=dtype)


VALUES = t([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])


# ---------------------------------------------------------------------- masked reductions


def test_masked_sum_all_and_per_row():
    mask = t([[1.0, 1.0, 0.0], [1.0, 0.0, 0.0]])
    # kept: 1, 2 | 4 -> total 7, rows [3, 4]
    assert masked_sum(VALUES, mask).item() == 7.0
    assert masked_sum(VALUES, mask, dim=1).tolist() == [3.0, 4.0]
    # per column: [1+4, 2, 0]
    assert masked_sum(VALUES, mask, dim=0).tolist() == [5.0, 2.0, 0.0]


def test_masked_sum_accepts_bool_mask():
    mask = torch.tensor([[True, False, True], [False, False, True]])
    # 1 + 3 + 6 = 10
    assert masked_sum(VALUES, mask).item() == 10.0


def test_masked_mean_all_and_per_row():
    mask = t([[1.0, 1.0, 0.0], [1.0, 0.0, 0.0]])
    # total (1+2+4)/3 = 7/3 ; rows [(1+2)/2, 4/1] = [1.5, 4]
    assert masked_mean(VALUES, mask).item() == pytest.approx(7.0 / 3.0)
    assert masked_mean(VALUES, mask, dim=1).tolist() == [1.5, 4.0]


def test_masked_mean_all_masked_row_is_zero():
    mask = t([[1.0, 1.0, 0.0], [0.0, 0.0, 0.0]])
    # row 0: (1+2)/2 = 1.5 ; row 1: 0 / clamp(0, 1) = 0
    out = masked_mean(VALUES, mask, dim=1)
    assert out.tolist() == [1.5, 0.0]
    # everything masked -> 0 too
    assert masked_mean(VALUES, torch.zeros_like(VALUES)).item() == 0.0


# ------------------------------------------------------------------ clipped policy loss


def _logs(ratios):
    return t([[math.log(r) for r in row] for row in ratios])


def test_clipped_loss_symmetric_eps():
    # ratios [0.5, 1.1, 1.5] for both rows; A = [+2, -1];
    #   eps_low = eps_high = 0.2 -> clip to [0.8, 1.2]
    # row 0 (A=+2): -min(r A, clip(r) A)
    #   r=0.5: min(1.0, 0.8*2=1.6) = 1.0 -> -1.0   (not clipped: the pessimistic term is r A)
    #   r=1.1: min(2.2, 2.2) = 2.2 -> -2.2
    #   r=1.5: min(3.0, 1.2*2=2.4) = 2.4 -> -2.4  (high clipped)
    # row 1 (A=-1):
    #   r=0.5: min(-0.5, -0.8) = -0.8 -> 0.8  (low clipped)
    #   r=1.1: min(-1.1, -1.1) -> 1.1
    #   r=1.5: min(-1.5, -1.2) = -1.5 -> 1.5  (not clipped)
    ratios = [[0.5, 1.1, 1.5], [0.5, 1.1, 1.5]]
    out = clipped_policy_loss(_logs(ratios), torch.zeros(2, 3, dtype=F64), t([2.0, -1.0]), 0.2, 0.2)
    torch.testing.assert_close(
        out.per_token_loss, t([[-1.0, -2.2, -2.4], [0.8, 1.1, 1.5]]), atol=1e-12, rtol=0
    )
    torch.testing.assert_close(out.ratio, t(ratios), atol=1e-12, rtol=0)
    assert out.high_clipped.tolist() == [[False, False, True], [False, False, False]]
    assert out.low_clipped.tolist() == [[False, False, False], [True, False, False]]


def test_clipped_loss_ratio_uses_old_logprobs():
    # logprobs - old = log(1.5) - 0 shifted by a constant c=-3 on both: ratio still 1.5
    logp = t([[math.log(1.5) - 3.0]])
    old = t([[-3.0]])
    out = clipped_policy_loss(logp, old, t([1.0]), 0.2, 0.2)
    # A=+1, r=1.5 -> -min(1.5, 1.2) = -1.2
    torch.testing.assert_close(out.per_token_loss, t([[-1.2]]), atol=1e-12, rtol=0)
    torch.testing.assert_close(out.ratio, t([[1.5]]), atol=1e-12, rtol=0)


def test_clipped_loss_epsilon_high_differs_from_low():
    # eps_low 0.2, eps_high 0.28 -> clip to [0.8, 1.28]; ratios [0.75, 1.25, 1.5]; A = [+2, -1]
    # row 0 (A=+2):
    #   r=0.75: min(1.5, 0.8*2=1.6) = 1.5 -> -1.5
    #   r=1.25: min(2.5, 2.5) = 2.5 -> -2.5  (inside 1.28; with eps_high=0.2 it would be -2.4)
    #   r=1.5 : min(3.0, 1.28*2=2.56) = 2.56 -> -2.56 (high clipped)
    # row 1 (A=-1):
    #   r=0.75: min(-0.75, -0.8) = -0.8 -> 0.8 (low clipped)
    #   r=1.25: -1.25 -> 1.25 ; r=1.5: -1.5 -> 1.5
    ratios = [[0.75, 1.25, 1.5], [0.75, 1.25, 1.5]]
    out = clipped_policy_loss(
        _logs(ratios), torch.zeros(2, 3, dtype=F64), t([2.0, -1.0]), 0.2, 0.28
    )
    torch.testing.assert_close(
        out.per_token_loss, t([[-1.5, -2.5, -2.56], [0.8, 1.25, 1.5]]), atol=1e-12, rtol=0
    )
    assert out.high_clipped.tolist() == [[False, False, True], [False, False, False]]
    assert out.low_clipped.tolist() == [[False, False, False], [True, False, False]]
    # same inputs with eps_high = 0.2: r=1.25 is now clipped, -min(2.5, 2.4) = -2.4
    sym = clipped_policy_loss(_logs(ratios), torch.zeros(2, 3, dtype=F64), t([2.0, -1.0]), 0.2, 0.2)
    assert sym.per_token_loss[0, 1].item() == pytest.approx(-2.4)
    assert sym.high_clipped.tolist() == [[False, True, True], [False, False, False]]


def test_clipped_loss_epsilon_low_differs_from_high():
    # eps_low 0.1 -> lower bound 0.9; A=-1, r=0.85: min(-0.85, -0.9) = -0.9 -> 0.9, low clipped
    out = clipped_policy_loss(_logs([[0.85]]), t([[0.0]]), t([-1.0]), 0.1, 0.3)
    torch.testing.assert_close(out.per_token_loss, t([[0.9]]), atol=1e-12, rtol=0)
    assert out.low_clipped.tolist() == [[True]]


def test_clipped_loss_token_level_advantages():
    # A (B, T) = [[1, -1]], ratios [1.5, 1.5], eps 0.2
    #   token 0: A=+1 -> -min(1.5, 1.2) = -1.2 (high clipped)
    #   token 1: A=-1 -> -min(-1.5, -1.2) = 1.5
    out = clipped_policy_loss(
        _logs([[1.5, 1.5]]), torch.zeros(1, 2, dtype=F64), t([[1.0, -1.0]]), 0.2, 0.2
    )
    torch.testing.assert_close(out.per_token_loss, t([[-1.2, 1.5]]), atol=1e-12, rtol=0)
    assert out.high_clipped.tolist() == [[True, False]]


def test_clipped_loss_gradient_zero_when_clipped():
    # Clipped tokens give no gradient; unclipped ones d/dlogp(-r A) = -r A.
    # r = [1.5, 1.1], A=+2 -> grads [0 (clipped), -1.1 * 2 = -2.2]
    logp = _logs([[1.5, 1.1]]).requires_grad_(True)
    out = clipped_policy_loss(logp, torch.zeros(1, 2, dtype=F64), t([2.0]), 0.2, 0.2)
    out.per_token_loss.sum().backward()
    torch.testing.assert_close(logp.grad, t([[0.0, -2.2]]), atol=1e-12, rtol=0)


def test_clip_fractions_are_token_sums():
    ratios = [[0.75, 1.25, 1.5], [0.75, 1.25, 1.5]]
    out = clipped_policy_loss(_logs(ratios), torch.zeros(2, 3, dtype=F64), t([2.0, -1.0]), 0.2, 0.2)
    # high clipped at (0,1), (0,2); low clipped at (1,0)
    full = clip_fractions(out, torch.ones(2, 3))
    assert full["clip_ratio/high_mean"].item() == 2.0
    assert full["clip_ratio/low_mean"].item() == 1.0
    assert full["clip_ratio/region_mean"].item() == 3.0
    # masking out (0, 2) and (1, 0): high 1, low 0, region 1
    masked = clip_fractions(out, t([[1.0, 1.0, 0.0], [0.0, 1.0, 1.0]]))
    assert masked["clip_ratio/high_mean"].item() == 1.0
    assert masked["clip_ratio/low_mean"].item() == 0.0
    assert masked["clip_ratio/region_mean"].item() == 1.0


# ------------------------------------------------------------------------ aggregation

PER_TOKEN = t([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])
MASK = t([[1.0, 1.0, 0.0], [1.0, 1.0, 1.0]])
# Real tokens: row 0 -> 1, 2 (sum 3, n 2); row 1 -> 4, 5, 6 (sum 15, n 3); total 18 over 5 tokens


def test_aggregate_grpo_is_mean_of_sequence_means():
    # seq means [3/2, 15/3] = [1.5, 5.0]; mean = 3.25
    assert aggregate_loss(PER_TOKEN, MASK, "grpo").item() == pytest.approx(3.25)


def test_aggregate_dr_grpo_constant_normaliser():
    # 18 / (B=2 * max_completion_length=4) = 2.25
    assert aggregate_loss(
        PER_TOKEN, MASK, "dr_grpo", max_completion_length=4
    ).item() == pytest.approx(2.25)


def test_aggregate_dapo_token_mean():
    # 18 / 5 = 3.6
    assert aggregate_loss(PER_TOKEN, MASK, "dapo").item() == pytest.approx(3.6)


def test_aggregate_explicit_totals():
    # num_sequences=4 -> grpo (1.5+5)/4 = 1.625 ; dr_grpo 18/(4*3) = 1.5 ;
    #   num_tokens=9 -> dapo 18/9 = 2
    assert aggregate_loss(PER_TOKEN, MASK, "grpo", num_sequences=4).item() == pytest.approx(1.625)
    assert aggregate_loss(
        PER_TOKEN, MASK, "dr_grpo", max_completion_length=3, num_sequences=4
    ).item() == pytest.approx(1.5)
    assert aggregate_loss(PER_TOKEN, MASK, "dapo", num_tokens=9).item() == pytest.approx(2.0)


def test_aggregate_bool_mask_and_all_masked_row():
    mask = torch.tensor([[True, True, False], [False, False, False]])
    # grpo: [1.5, 0] -> mean 0.75 ; dapo: 3 / 2 = 1.5 ; dr_grpo: 3 / (2 * 3) = 0.5
    assert aggregate_loss(PER_TOKEN, mask, "grpo").item() == pytest.approx(0.75)
    assert aggregate_loss(PER_TOKEN, mask, "dapo").item() == pytest.approx(1.5)
    assert aggregate_loss(
        PER_TOKEN, mask, "dr_grpo", max_completion_length=3
    ).item() == pytest.approx(0.5)


@pytest.mark.parametrize(
    "loss_type, part0, part1, full",
    [
        # grpo: row 0 seq mean 1.5 / 2 = 0.75 ; row 1: 5 / 2 = 2.5 ; 0.75 + 2.5 = 3.25
        ("grpo", 0.75, 2.5, 3.25),
        # dr_grpo (L=4): 3 / 8 = 0.375 ; 15 / 8 = 1.875 ; sum 2.25
        ("dr_grpo", 0.375, 1.875, 2.25),
        # dapo: 3 / 5 = 0.6 ; 15 / 5 = 3.0 ; sum 3.6
        ("dapo", 0.6, 3.0, 3.6),
    ],
)
def test_micro_batches_with_full_totals_sum_to_full_loss(loss_type, part0, part1, full):
    kw = {"max_completion_length": 4, "num_sequences": 2.0, "num_tokens": 5.0}
    l0 = aggregate_loss(PER_TOKEN[:1], MASK[:1], loss_type, **kw).item()
    l1 = aggregate_loss(PER_TOKEN[1:], MASK[1:], loss_type, **kw).item()
    whole = aggregate_loss(PER_TOKEN, MASK, loss_type, max_completion_length=4).item()
    assert l0 == pytest.approx(part0, abs=1e-12)
    assert l1 == pytest.approx(part1, abs=1e-12)
    assert whole == pytest.approx(full, abs=1e-12)
    assert l0 + l1 == pytest.approx(whole, abs=1e-12)


@pytest.mark.parametrize("loss_type", ["grpo", "dr_grpo", "dapo"])
def test_micro_batch_split_random_matches_full_batch(loss_type):
    g = torch.Generator().manual_seed(0)
    per_token = torch.randn(6, 5, generator=g, dtype=F64)
    lengths = torch.tensor([5, 1, 3, 4, 2, 5])
    mask = (torch.arange(5).unsqueeze(0) < lengths.unsqueeze(1)).to(F64)
    n_seq, n_tok = 6.0, float(lengths.sum())  # 20 tokens
    whole = aggregate_loss(per_token, mask, loss_type, max_completion_length=5)
    parts = [
        aggregate_loss(
            per_token[idx],
            mask[idx],
            loss_type,
            max_completion_length=5,
            num_sequences=n_seq,
            num_tokens=n_tok,
        )
        for idx in (slice(0, 2), slice(2, 3), slice(3, 6))
    ]
    torch.testing.assert_close(sum(parts), whole, atol=1e-12, rtol=0)
    # And the gradients add up too.
    pt = per_token.clone().requires_grad_(True)
    aggregate_loss(pt, mask, loss_type, max_completion_length=5).backward()
    g_full = pt.grad.clone()
    pt.grad = None
    for idx in (slice(0, 2), slice(2, 3), slice(3, 6)):
        aggregate_loss(
            pt[idx],
            mask[idx],
            loss_type,
            max_completion_length=5,
            num_sequences=n_seq,
            num_tokens=n_tok,
        ).backward()
    torch.testing.assert_close(pt.grad, g_full, atol=1e-12, rtol=0)


def test_dapo_micro_batch_without_totals_uses_its_own_tokens():
    # row 0 alone: 3 / 2 = 1.5 (not 3 / 5): the totals matter for exact accumulation
    assert aggregate_loss(PER_TOKEN[:1], MASK[:1], "dapo").item() == pytest.approx(1.5)


def test_dr_grpo_without_max_completion_length_raises():
    with pytest.raises(ValueError, match="max_completion_length"):
        aggregate_loss(PER_TOKEN, MASK, "dr_grpo")


def test_unknown_loss_type_raises():
    with pytest.raises(ValueError, match="loss_type"):
        aggregate_loss(PER_TOKEN, MASK, "ppo")  # type: ignore[arg-type]
