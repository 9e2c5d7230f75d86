"""The DDIM step's Gaussian against a hand computation."""

from __future__ import annotations

import math

import torch

from rl4gen.core.diffusion import ddim_sigma, ddim_step_mean, gaussian_entropy, gaussian_logprob


def test_ddim_sigma_by_hand() -> None:
    # a_t = 0.5, a_s = 0.8: variance = (0.2 / 0.5) * (1 - 0.625) = 0.15
    sigma = ddim_sigma(torch.tensor([0.5]), torch.tensor([0.8]), eta=0.5)
    assert torch.allclose(sigma, torch.tensor([0.5 * math.sqrt(0.15)]))
    assert float(ddim_sigma(torch.tensor([0.5]), torch.tensor([0.5]), eta=1.0)) == 0.0  # the NaN trap


def test_ddim_step_mean_by_hand() -> None:
    x = torch.tensor([0.6]).view(1, 1, 1, 1)
    eps = torch.tensor([0.2]).view(1, 1, 1, 1)
    a_t, a_s, sig = torch.tensor([0.5]), torch.tensor([0.8]), torch.tensor([0.1])
    x0 = (0.6 - math.sqrt(0.5) * 0.2) / math.sqrt(0.5)
    expected = math.sqrt(0.8) * x0 + math.sqrt(1 - 0.8 - 0.01) * 0.2
    got = ddim_step_mean(x, eps, a_t, a_s, sig, clip_sample=None)
    assert math.isclose(float(got), expected, rel_tol=1e-6)
    # with clipping, x0 is clamped to 1 and the noise re-derived from it
    x_big = torch.tensor([2.0]).view(1, 1, 1, 1)
    eps_c = (2.0 - math.sqrt(0.5) * 1.0) / math.sqrt(0.5)
    expected_c = math.sqrt(0.8) * 1.0 + math.sqrt(0.19) * eps_c
    got_c = ddim_step_mean(x_big, eps, a_t, a_s, sig, clip_sample=1.0)
    assert math.isclose(float(got_c), expected_c, rel_tol=1e-6)


def test_gaussian_logprob_is_the_pixel_mean_by_hand() -> None:
    value = torch.tensor([[0.0, 1.0], [2.0, 0.5]]).view(1, 1, 2, 2)
    mean = torch.zeros(1, 1, 2, 2)
    sigma = torch.tensor([0.5])
    per_pixel = [-(v**2) / (2 * 0.25) - math.log(0.5) - 0.5 * math.log(2 * math.pi) for v in (0.0, 1.0, 2.0, 0.5)]
    assert math.isclose(float(gaussian_logprob(value, mean, sigma)), sum(per_pixel) / 4, rel_tol=1e-6)
    # the same as torch.distributions.Normal, averaged
    normal = torch.distributions.Normal(mean, 0.5).log_prob(value).mean()
    assert torch.allclose(gaussian_logprob(value, mean, sigma), normal.view(1))
    # a weight picks the pixels the policy chose (here the last two)
    weight = torch.tensor([[0.0, 0.0], [1.0, 1.0]]).view(1, 1, 2, 2)
    assert math.isclose(float(gaussian_logprob(value, mean, sigma, weight)), sum(per_pixel[2:]) / 2, rel_tol=1e-6)


def test_gaussian_entropy() -> None:
    sigma = torch.tensor([0.3])
    assert torch.allclose(gaussian_entropy(sigma), torch.distributions.Normal(0.0, 0.3).entropy().view(1))
