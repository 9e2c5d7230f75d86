"""Hand-computed checks of the per-token KL estimators in rl4gen.core.kl."""

from __future__ import annotations

import pytest
import torch

from rl4gen.core.kl import kl_estimate

F64 = torch.float64


def t(values):
    return torch.tensor(values, dtype=F64)


# Rows: (logp, ref) -> log_ratio = ref - logp
#   (-1, -2): log_ratio = -1
#   (-2, -1): log_ratio = +1
#   (-0.5, -0.5): log_ratio = 0
LOGP = t([[-1.0, -2.0, -0.5]])
REF = t([[-2.0, -1.0, -0.5]])


def test_k1_is_minus_log_ratio():
    # k1 = -log_ratio = [1, -1, 0] (can be negative per token)
    torch.testing.assert_close(
        kl_estimate(LOGP, REF, "k1"), t([[1.0, -1.0, 0.0]]), atol=1e-12, rtol=0
    )


def test_k2_is_half_squared_log_ratio():
    # k2 = log_ratio^2 / 2 = [0.5, 0.5, 0]
    torch.testing.assert_close(
        kl_estimate(LOGP, REF, "k2"), t([[0.5, 0.5, 0.0]]), atol=1e-12, rtol=0
    )


def test_k3_values():
    # k3 = exp(lr) - lr - 1:
    #   lr=-1: exp(-1) + 1 - 1 = 0.36787944
    #   lr=+1: e - 1 - 1 = 0.71828183
    #   lr= 0: 1 - 0 - 1 = 0
    torch.testing.assert_close(
        kl_estimate(LOGP, REF, "k3"), t([[0.36787944, 0.71828183, 0.0]]), atol=1e-7, rtol=0
    )


def test_default_estimator_is_k3():
    torch.testing.assert_close(
        kl_estimate(LOGP, REF), t([[0.36787944, 0.71828183, 0.0]]), atol=1e-7, rtol=0
    )


def test_k3_nonnegative_on_random_inputs():
    g = torch.Generator().manual_seed(0)
    logp = -torch.rand(64, 50, generator=g, dtype=F64) * 10
    ref = -torch.rand(64, 50, generator=g, dtype=F64) * 10
    k3 = kl_estimate(logp, ref, "k3")
    assert k3.shape == (64, 50)
    assert bool((k3 >= 0).all())
    assert bool((kl_estimate(logp, ref, "k2") >= 0).all())


def test_k3_zero_when_equal():
    g = torch.Generator().manual_seed(1)
    logp = -torch.rand(8, 7, generator=g) * 5
    for est in ("k1", "k2", "k3"):
        assert kl_estimate(logp, logp.clone(), est).abs().max().item() == 0.0


def test_k1_and_k3_means_approximate_exact_kl():
    # p = [0.5, 0.3, 0.2], q = [0.2, 0.3, 0.5]
    # KL(p||q) = 0.5 ln(0.5/0.2) + 0.3 ln(1) + 0.2 ln(0.2/0.5) = 0.5 ln 2.5 - 0.2 ln 2.5
    #          = 0.3 * 0.91629073 = 0.27488722
    exact = 0.27488722
    p = torch.tensor([0.5, 0.3, 0.2], dtype=F64)
    q = torch.tensor([0.2, 0.3, 0.5], dtype=F64)
    g = torch.Generator().manual_seed(1234)
    actions = torch.multinomial(p, 200_000, replacement=True, generator=g)
    logp = p.log()[actions].unsqueeze(0)
    ref = q.log()[actions].unsqueeze(0)
    k1 = kl_estimate(logp, ref, "k1").mean().item()
    k3 = kl_estimate(logp, ref, "k3").mean().item()
    assert abs(k1 - exact) < 0.01
    assert abs(k3 - exact) < 0.01
    # k2 is biased: E_p[lr^2]/2 = 0.7 * 0.91629073^2 / 2 = 0.2938561 , ~0.019 above the true KL
    k2 = kl_estimate(logp, ref, "k2").mean().item()
    assert abs(k2 - 0.2938561) < 0.01


def test_bad_estimator_raises():
    with pytest.raises(ValueError, match="k4"):
        kl_estimate(LOGP, REF, "k4")  # type: ignore[arg-type]
