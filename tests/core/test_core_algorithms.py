"""GRPO, RLOO and REINFORCE on small hand-built rollouts, against hand-computed numbers."""

from __future__ import annotations

import math

import pytest
import torch

from rl4gen.algorithms import GRPO, RLOO, Reinforce, StepTotals, build_algorithm
from rl4gen.config import GRPOConfig, ReinforceConfig, RLOOConfig
from rl4gen.core.rollout import Rollout

F64 = torch.float64

# 4 sequences, T=3; real token counts [3, 2, 1, 2] -> 8 tokens
MASK = torch.tensor([[1.0, 1.0, 1.0], [1.0, 1.0, 0.0], [1.0, 0.0, 0.0], [1.0, 1.0, 0.0]], dtype=F64)
LOGP = torch.tensor(
    [[-1.0, -0.5, -2.0], [-0.3, -1.2, -9.0], [-0.7, -9.0, -9.0], [-1.1, -0.4, -9.0]], dtype=F64
)
TOTALS = StepTotals(num_sequences=4.0, num_tokens=8.0, max_completion_length=3)


def rollout(
    rewards,
    group_ids,
    *,
    logprobs=None,
    mask=None,
    ref_logprobs=None,
    advantages=None,
) -> Rollout:
    b = len(rewards)
    logprobs = LOGP[:b].clone() if logprobs is None else logprobs
    mask = MASK[:b].clone() if mask is None else mask
    t = logprobs.shape[1]
    return Rollout(
        actions=torch.arange(b * t, dtype=torch.long).reshape(b, t),
        mask=mask,
        logprobs=logprobs,
        group_ids=torch.tensor(group_ids, dtype=torch.long),
        samples=[f"sample{i}" for i in range(b)],
        contexts=[{"prompt": i // 2} for i in range(b)],
        ref_logprobs=ref_logprobs,
        rewards=torch.tensor(rewards, dtype=F64),
        advantages=advantages,
    )


# ------------------------------------------------------------------------------- GRPO


def test_build_algorithm_picks_the_class():
    assert isinstance(build_algorithm(GRPOConfig()), GRPO)
    assert isinstance(build_algorithm(RLOOConfig()), RLOO)
    assert isinstance(build_algorithm(ReinforceConfig()), Reinforce)


def test_grpo_advantages_group_scaled():
    # group 0 rewards [1, 0]: mean 0.5, std sqrt(0.5) = 0.7071068 -> +-0.5 / 0.7072068 = +-0.7070068
    # group 1 rewards [3, 1]: mean 2,   std sqrt(2)   = 1.4142136 -> +-1 / 1.4143136   = +-0.7070568
    algo = GRPO(GRPOConfig())
    adv = algo.advantages(rollout([1.0, 0.0, 3.0, 1.0], [0, 0, 1, 1]))
    torch.testing.assert_close(
        adv,
        torch.tensor([0.7070068, -0.7070068, 0.7070568, -0.7070568], dtype=F64),
        atol=1e-6,
        rtol=0,
    )


def test_grpo_advantages_unscaled():
    # r - group mean: [1-0.5, 0-0.5, 3-2, 1-2]
    algo = GRPO(GRPOConfig(scale_rewards="none"))
    adv = algo.advantages(rollout([1.0, 0.0, 3.0, 1.0], [0, 0, 1, 1]))
    torch.testing.assert_close(
        adv, torch.tensor([0.5, -0.5, 1.0, -1.0], dtype=F64), atol=1e-12, rtol=0
    )


def test_grpo_needs_reference_only_with_beta():
    assert GRPO(GRPOConfig()).needs_reference is False
    assert GRPO(GRPOConfig(beta=0.04)).needs_reference is True


ADV = torch.tensor([1.0, -1.0, 2.0, 0.5], dtype=F64)


def test_grpo_loss_at_ratio_one_is_minus_mean_advantage_and_gradient():
    algo = GRPO(GRPOConfig(beta=0.0, loss_type="grpo"))
    batch = rollout([0.0] * 4, [0, 0, 1, 1], advantages=ADV)
    logp = LOGP.clone().requires_grad_(True)  # equals batch.logprobs -> ratio 1 everywhere
    out = algo.loss(logp, batch, TOTALS)
    # per token -A_i; per-sequence mean -A_i; mean over 4 sequences = -(1 - 1 + 2 + 0.5)/4 = -0.625
    assert out.loss.item() == pytest.approx(-0.625, abs=1e-12)
    out.loss.backward()
    # d loss / d logp_{i,t} = -A_i * r / n_i / B with r = 1:
    #   seq 0: -1/3/4 = -0.0833333 ; seq 1: +1/2/4 = 0.125 ; seq 2: -2/1/4 = -0.5 ;
    #   seq 3: -0.5/2/4 = -0.0625
    expected = torch.tensor(
        [
            [-1 / 12, -1 / 12, -1 / 12],
            [0.125, 0.125, 0.0],
            [-0.5, 0.0, 0.0],
            [-0.0625, -0.0625, 0.0],
        ],
        dtype=F64,
    )
    torch.testing.assert_close(logp.grad, expected, atol=1e-12, rtol=0)
    # nothing clipped, no KL metric without beta
    assert out.token_sums["clip_ratio/region_mean"].item() == 0.0
    assert "kl" not in out.token_sums


def test_grpo_loss_other_aggregations_at_ratio_one():
    # sum over real tokens of -A_i: -(1*3 - 1*2 + 2*1 + 0.5*2) = -(3 - 2 + 2 + 1) = -4
    batch = rollout([0.0] * 4, [0, 0, 1, 1], advantages=ADV)
    dr = GRPO(GRPOConfig(loss_type="dr_grpo")).loss(LOGP.clone(), batch, TOTALS).loss.item()
    dapo = GRPO(GRPOConfig(loss_type="dapo")).loss(LOGP.clone(), batch, TOTALS).loss.item()
    assert dr == pytest.approx(-4 / 12, abs=1e-12)  # / (B=4 * L=3)
    assert dapo == pytest.approx(-4 / 8, abs=1e-12)  # / 8 tokens


def test_grpo_kl_term_vanishes_when_ref_equals_logprobs():
    batch = rollout([0.0] * 4, [0, 0, 1, 1], advantages=ADV, ref_logprobs=LOGP.clone())
    logp = LOGP.clone().requires_grad_(True)
    out = GRPO(GRPOConfig(beta=0.5, loss_type="grpo")).loss(logp, batch, TOTALS)
    assert out.loss.item() == pytest.approx(-0.625, abs=1e-12)
    assert out.token_sums["kl"].item() == 0.0
    out.loss.backward()
    # k3'(0) = 0, so the gradient is the beta=0 one
    assert logp.grad[2, 0].item() == pytest.approx(-0.5, abs=1e-12)
    assert logp.grad[0, 0].item() == pytest.approx(-1 / 12, abs=1e-12)


def test_grpo_kl_term_value():
    # A = 0;
    #   logp = -1 everywhere, ref = -2 -> log_ratio -1, k3 = exp(-1) + 1 - 1 = 0.36787944 per token
    # beta 0.1 -> 0.036787944 per token; grpo aggregation of a constant -> 0.036787944
    # kl token sum: 8 real tokens * 0.36787944 = 2.94303553
    logp = torch.full((4, 3), -1.0, dtype=F64)
    batch = rollout(
        [0.0] * 4,
        [0, 0, 1, 1],
        logprobs=logp.clone(),
        ref_logprobs=torch.full((4, 3), -2.0, dtype=F64),
        advantages=torch.zeros(4, dtype=F64),
    )
    out = GRPO(GRPOConfig(beta=0.1)).loss(logp.requires_grad_(True), batch, TOTALS)
    assert out.loss.item() == pytest.approx(0.036787944, abs=1e-8)
    assert out.token_sums["kl"].item() == pytest.approx(2.94303553, abs=1e-7)
    out.loss.backward()
    # d k3 / d logp = -exp(lr) + 1 = 1 - exp(-1) = 0.63212056; * beta 0.1 / n_i / B
    #   seq 2 (1 token): 0.063212056 / 1 / 4 = 0.015803014
    assert logp.grad[2, 0].item() == pytest.approx(0.015803014, abs=1e-8)
    assert logp.grad[2, 1].item() == 0.0


def test_grpo_clip_higher_is_used():
    # ratio 1.5 everywhere, A = +1, epsilon 0.2, epsilon_high 0.28
    #   -> per token -min(1.5, 1.28) = -1.28
    old = torch.zeros(4, 3, dtype=F64)
    batch = rollout([0.0] * 4, [0, 0, 1, 1], logprobs=old, advantages=torch.ones(4, dtype=F64))
    logp = torch.full((4, 3), math.log(1.5), dtype=F64)
    out = GRPO(GRPOConfig(epsilon=0.2, epsilon_high=0.28)).loss(logp, batch, TOTALS)
    assert out.loss.item() == pytest.approx(-1.28, abs=1e-12)
    # all 8 real tokens are high-clipped
    assert out.token_sums["clip_ratio/high_mean"].item() == 8.0
    assert out.token_sums["clip_ratio/low_mean"].item() == 0.0
    out2 = GRPO(GRPOConfig(epsilon=0.2)).loss(logp, batch, TOTALS)
    assert out2.loss.item() == pytest.approx(-1.2, abs=1e-12)


def test_grpo_micro_batches_sum_to_full_loss():
    batch = rollout([0.0] * 4, [0, 0, 1, 1], advantages=ADV)
    g = torch.Generator().manual_seed(0)
    logp = LOGP + 0.1 * torch.randn(4, 3, generator=g, dtype=F64)
    for loss_type in ("grpo", "dr_grpo", "dapo"):
        algo = GRPO(GRPOConfig(loss_type=loss_type))
        full = algo.loss(logp, batch, TOTALS).loss
        parts = (
            algo.loss(logp[:2], batch.select([0, 1]), TOTALS).loss
            + algo.loss(logp[2:], batch.select([2, 3]), TOTALS).loss
        )
        torch.testing.assert_close(parts, full, atol=1e-12, rtol=0)


# ------------------------------------------------------------------------------- RLOO


def test_rloo_advantages_leave_one_out():
    # one group [1, 0, 0, 1]: [1 - 1/3, 0 - 2/3, 0 - 2/3, 1 - 1/3]
    adv = RLOO(RLOOConfig()).advantages(rollout([1.0, 0.0, 0.0, 1.0], [0, 0, 0, 0]))
    torch.testing.assert_close(
        adv, torch.tensor([2 / 3, -2 / 3, -2 / 3, 2 / 3], dtype=F64), atol=1e-12, rtol=0
    )


def test_rloo_advantages_normalized():
    # [2/3, -2/3, -2/3, 2/3]: mean 0, population std 2/3 -> [1, -1, -1, 1]
    adv = RLOO(RLOOConfig(normalize_advantages=True)).advantages(
        rollout([1.0, 0.0, 0.0, 1.0], [0, 0, 0, 0])
    )
    torch.testing.assert_close(
        adv, torch.tensor([1.0, -1.0, -1.0, 1.0], dtype=F64), atol=1e-6, rtol=0
    )


def test_rloo_kl_penalty_in_reward():
    # mask (T=2): [[1,1],[1,0],[1,1],[1,1]]
    # logp - ref per token (k1), masked sum per sequence:
    #   seq 0: (-1 - -2) + (-1 - -1) = 1
    #   seq 1: (-2 - -1) = -1      (second token masked: -5 - 0 = -5 is ignored)
    #   seq 2: 0 + 0 = 0
    #   seq 3: (-1 - -1) + (-2 - -1) = -1
    # beta 0.5: r' = [1 - 0.5, 0 + 0.5, 0 - 0, 1 + 0.5] = [0.5, 0.5, 0, 1.5]; group sum 2.5
    # LOO: 0.5 - 2/3 = -1/6 ; 0.5 - 2/3 = -1/6 ; 0 - 2.5/3 = -5/6 ; 1.5 - 1/3 = 7/6
    mask = torch.tensor([[1.0, 1.0], [1.0, 0.0], [1.0, 1.0], [1.0, 1.0]], dtype=F64)
    logp = torch.tensor([[-1.0, -1.0], [-2.0, -5.0], [-0.5, -0.5], [-1.0, -2.0]], dtype=F64)
    ref = torch.tensor([[-2.0, -1.0], [-1.0, 0.0], [-0.5, -0.5], [-1.0, -1.0]], dtype=F64)
    r = rollout([1.0, 0.0, 0.0, 1.0], [0, 0, 0, 0], logprobs=logp, mask=mask, ref_logprobs=ref)
    algo = RLOO(RLOOConfig(beta=0.5))
    assert algo.needs_reference is True
    adv = algo.advantages(r)
    torch.testing.assert_close(
        adv, torch.tensor([-1 / 6, -1 / 6, -5 / 6, 7 / 6], dtype=F64), atol=1e-12, rtol=0
    )
    # rewards themselves are not modified in place
    assert r.rewards.tolist() == [1.0, 0.0, 0.0, 1.0]


def test_rloo_loss_default_dr_grpo_at_ratio_one():
    # per token -A_i; masked sum -(1*3 - 1*2 + 2*1 + 0.5*2) = -4; / (B=4 * L=3) = -1/3
    batch = rollout([0.0] * 4, [0, 0, 1, 1], advantages=ADV)
    logp = LOGP.clone().requires_grad_(True)
    out = RLOO(RLOOConfig()).loss(logp, batch, TOTALS)
    assert out.loss.item() == pytest.approx(-1 / 3, abs=1e-12)
    out.loss.backward()
    # gradient -A_i / 12 on real tokens: seq 2 -> -2/12
    assert logp.grad[2, 0].item() == pytest.approx(-2 / 12, abs=1e-12)
    assert logp.grad[0, 0].item() == pytest.approx(-1 / 12, abs=1e-12)
    assert logp.grad[1, 2].item() == 0.0


# -------------------------------------------------------------------------- REINFORCE


def test_reinforce_moving_baseline():
    algo = Reinforce(ReinforceConfig(baseline_decay=0.9))
    assert algo.baseline is None
    # batch 1: rewards [1, 2, 3, 6], mean 3; no baseline yet -> b = 3; A = [-2, -1, 0, 3];
    #   baseline <- 3
    adv1 = algo.advantages(rollout([1.0, 2.0, 3.0, 6.0], [0, 1, 2, 3]))
    torch.testing.assert_close(
        adv1, torch.tensor([-2.0, -1.0, 0.0, 3.0], dtype=F64), atol=1e-12, rtol=0
    )
    assert algo.baseline == pytest.approx(3.0)
    # batch 2: rewards [5, 7], mean 6; A = r - 3 = [2, 4];
    #   baseline <- 0.9*3 + 0.1*6 = 2.7 + 0.6 = 3.3
    adv2 = algo.advantages(rollout([5.0, 7.0], [0, 1]))
    torch.testing.assert_close(adv2, torch.tensor([2.0, 4.0], dtype=F64), atol=1e-12, rtol=0)
    assert algo.baseline == pytest.approx(3.3)
    # batch 3: rewards [0, 1.3], mean 0.65; A = r - 3.3 = [-3.3, -2.0];
    #   baseline <- 0.9*3.3 + 0.1*0.65 = 2.97 + 0.065 = 3.035
    adv3 = algo.advantages(rollout([0.0, 1.3], [0, 1]))
    torch.testing.assert_close(adv3, torch.tensor([-3.3, -2.0], dtype=F64), atol=1e-12, rtol=0)
    assert algo.baseline == pytest.approx(3.035)


def test_reinforce_state_dict_round_trip():
    algo = Reinforce(ReinforceConfig(baseline_decay=0.9))
    assert algo.state_dict() == {"baseline": None}
    algo.advantages(rollout([1.0, 2.0, 3.0, 6.0], [0, 1, 2, 3]))  # baseline 3
    algo.advantages(rollout([5.0, 7.0], [0, 1]))  # baseline 3.3
    state = algo.state_dict()
    assert state["baseline"] == pytest.approx(3.3)
    fresh = Reinforce(ReinforceConfig(baseline_decay=0.9))
    fresh.load_state_dict(state)
    assert fresh.baseline == pytest.approx(3.3)
    # both continue identically: rewards [0, 1.3] -> A = [-3.3, -2.0]
    a = algo.advantages(rollout([0.0, 1.3], [0, 1]))
    b = fresh.advantages(rollout([0.0, 1.3], [0, 1]))
    torch.testing.assert_close(a, b, atol=0, rtol=0)
    torch.testing.assert_close(b, torch.tensor([-3.3, -2.0], dtype=F64), atol=1e-12, rtol=0)
    assert fresh.baseline == pytest.approx(algo.baseline)


def test_reinforce_kl_penalty_in_reward():
    # T=2 example: seq KL k1 = [1, -1] (see RLOO test);
    #   beta 0.5 -> r' = [2 - 0.5, 4 + 0.5] = [1.5, 4.5]
    # first batch: baseline = mean 3 -> A = [-1.5, 1.5]
    mask = torch.tensor([[1.0, 1.0], [1.0, 0.0]], dtype=F64)
    logp = torch.tensor([[-1.0, -1.0], [-2.0, -5.0]], dtype=F64)
    ref = torch.tensor([[-2.0, -1.0], [-1.0, 0.0]], dtype=F64)
    algo = Reinforce(ReinforceConfig(beta=0.5))
    adv = algo.advantages(rollout([2.0, 4.0], [0, 1], logprobs=logp, mask=mask, ref_logprobs=ref))
    torch.testing.assert_close(adv, torch.tensor([-1.5, 1.5], dtype=F64), atol=1e-12, rtol=0)
    assert algo.baseline == pytest.approx(3.0)


def test_reinforce_loss_dr_grpo():
    # per token -A_i * logp: A = [1, -2]; logp [[-1, -2], [-0.5, -3 (masked)]]
    #   seq 0: -1*-1 = 1, -1*-2 = 2 ; seq 1: 2*-0.5 = -1 ; sum 2 ; / (B=2 * L=2) = 0.5
    mask = torch.tensor([[1.0, 1.0], [1.0, 0.0]], dtype=F64)
    logp = torch.tensor([[-1.0, -2.0], [-0.5, -3.0]], dtype=F64)
    batch = rollout(
        [0.0, 0.0],
        [0, 1],
        logprobs=logp.clone(),
        mask=mask,
        advantages=torch.tensor([1.0, -2.0], dtype=F64),
    )
    lp = logp.clone().requires_grad_(True)
    out = Reinforce(ReinforceConfig()).loss(lp, batch, StepTotals(2.0, 3.0, 2))
    assert out.loss.item() == pytest.approx(0.5, abs=1e-12)
    out.loss.backward()
    # d/dlogp = -A_i / 4 on real tokens: [[-0.25, -0.25], [0.5, 0]]
    torch.testing.assert_close(
        lp.grad, torch.tensor([[-0.25, -0.25], [0.5, 0.0]], dtype=F64), atol=1e-12, rtol=0
    )
