"""The sampler-schedule policy: exact Plackett-Luce log-probabilities, sampling, the DDIM sampler
on a chosen schedule, and a short REINFORCE run on the digits prior."""

from __future__ import annotations

import itertools

import torch

from rl4gen.algorithms.schedule_policy import SchedulePolicy, ddim_sample, uniform_schedule


def test_plackett_luce_log_probs_sum_to_one() -> None:
    policy = SchedulePolicy(1000, candidates=4, num_steps=2)
    with torch.no_grad():
        policy.logits.copy_(torch.tensor([0.5, -1.0, 2.0, 0.0]))
    choices = torch.tensor(list(itertools.permutations(range(4), 2)))
    total = policy.log_prob(choices).exp().sum()
    assert torch.allclose(total, torch.tensor(1.0), atol=1e-6)
    # sampling follows the distribution: the most likely first pick is candidate 2
    draws = policy.sample(4000, torch.Generator().manual_seed(0))
    first = torch.bincount(draws[:, 0], minlength=4).float() / 4000
    assert torch.allclose(first, policy.logits.detach().softmax(0), atol=0.03)
    assert all(len(set(row.tolist())) == 2 for row in draws[:50])  # distinct timesteps
    assert policy.timesteps.tolist() == [1, 334, 666, 999]
    assert policy.schedule(torch.tensor([0, 3])).tolist() == [999, 1]  # visited from the noisiest


def test_uniform_schedule_is_ddims() -> None:
    from rl4gen.models.diffusion import DiffusionPriorSpec, build_scheduler

    scheduler = build_scheduler(DiffusionPriorSpec())
    scheduler.set_timesteps(4)
    assert uniform_schedule(1000, 4).tolist() == scheduler.timesteps.tolist()


def test_ddim_sample_on_any_schedule(one_thread: None) -> None:
    from rl4gen.models.diffusion import DiffusionPriorSpec, build_scheduler, build_unet

    spec = DiffusionPriorSpec(image_size=8, channels=(8, 16))
    torch.manual_seed(0)
    unet, scheduler = build_unet(spec), build_scheduler(spec)
    noise = torch.randn(3, 1, 8, 8)
    images = ddim_sample(unet, scheduler, torch.tensor([900, 400, 50]), torch.tensor([1, 2, 3]), noise)
    assert images.shape == (3, 1, 8, 8) and images.abs().max() <= 1
    again = ddim_sample(unet, scheduler, torch.tensor([900, 400, 50]), torch.tensor([1, 2, 3]), noise)
    assert torch.equal(images, again)  # deterministic (eta = 0)
