"""A sampler-schedule policy: which K timesteps a few-step DDIM sampler visits, learned by REINFORCE.

A diffusion sampler with K steps usually visits K evenly spaced timesteps of the 1,000 the prior
was trained on. Here a small policy chooses them instead (issue 6, item 8; in the spirit of
learned samplers such as Watson et al., 2021, "Learning to Efficiently Sample from Diffusion
Probabilistic Models", but with a policy gradient in place of dynamic programming):

- **Action**: an ordered choice of K distinct timesteps among ``candidates`` evenly spaced ones,
  drawn from a Plackett–Luce distribution over one learnable logit per candidate (the Gumbel
  top-K trick samples it; its log-probability is exact). The sampler visits them from the largest
  down; the logits start at 0, i.e. every K-subset equally likely.
- **Sampler**: deterministic DDIM (η = 0) from ``x_T ~ N(0, I)`` through the chosen timesteps to
  the scheduler's final ``alphas_cumprod[0]`` (:func:`ddim_sample`).
- **Reward** (:func:`schedule_quality`): the mean over a batch of digits 0..9 of the classifier's
  p(requested digit) plus ``realism_weight`` × ``digit_realism``, one number per schedule.
- **Update**: REINFORCE with the batch-mean baseline over ``schedules_per_step`` schedules
  (each scored on the same noise, so the comparison is between schedules, not noise), Adam on the
  logits.

:func:`train_schedule_policy` runs it and compares the most likely schedule with uniform spacing
on held-out noise (docs/tasks/digits.md, "Sampler-schedule policy").
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from rl4gen.core.diffusion import ddim_step_mean
from rl4gen.models.diffusion import unet_input


@dataclass(frozen=True)
class ScheduleSearchConfig:
    """Settings of :func:`train_schedule_policy`."""

    num_steps: int = 4
    """K, the sampler's steps."""
    candidates: int = 50
    """Evenly spaced candidate timesteps the policy chooses among."""
    schedules_per_step: int = 16
    """Schedules sampled per REINFORCE step."""
    images_per_schedule: int = 20
    """Images each schedule is scored on (digits 0..9 in turn, the same noise for all)."""
    steps: int = 40
    learning_rate: float = 0.3
    realism_weight: float = 0.1
    seed: int = 0


class SchedulePolicy(nn.Module):
    """Plackett–Luce over ``candidates`` timesteps evenly spaced from 1 to ``num_train_timesteps - 1``."""

    def __init__(self, num_train_timesteps: int, candidates: int, num_steps: int) -> None:
        super().__init__()
        if not 2 <= num_steps <= candidates:
            raise ValueError(f"num_steps must be in [2, candidates={candidates}], got {num_steps}.")
        self.register_buffer("timesteps", torch.linspace(1, num_train_timesteps - 1, candidates).round().long())
        self.logits = nn.Parameter(torch.zeros(candidates))
        self.num_steps = num_steps

    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:  # (n, K) candidate indices
        """``n`` ordered choices (Gumbel top-K = a Plackett–Luce sample)."""
        u = torch.rand((n, len(self.logits)), generator=generator).clamp(1e-9, 1 - 1e-9)
        gumbel = -torch.log(-torch.log(u))
        return (self.logits.detach() + gumbel).topk(self.num_steps, dim=1).indices

    def log_prob(self, choice: Tensor) -> Tensor:  # (n,)
        """Exact Plackett–Luce log-probability of each ordered choice ``(n, K)``."""
        logits = self.logits.expand(choice.shape[0], -1)
        taken = torch.zeros_like(logits, dtype=torch.bool)
        total = torch.zeros(choice.shape[0], device=logits.device)
        for k in range(choice.shape[1]):
            free = logits.masked_fill(taken, float("-inf"))
            total = total + logits.gather(1, choice[:, k : k + 1]).squeeze(1) - free.logsumexp(1)
            taken = taken.scatter(1, choice[:, k : k + 1], True)
        return total

    def schedule(self, choice: Tensor) -> Tensor:  # (K,) timesteps, decreasing
        timesteps: Tensor = self.timesteps  # type: ignore[assignment]  # a registered buffer
        return timesteps[choice].sort(descending=True).values

    def most_likely(self) -> Tensor:  # (K,)
        """The K candidates with the largest logits (the mode of the Plackett–Luce distribution)."""
        return self.schedule(self.logits.detach().topk(self.num_steps).indices)


def uniform_schedule(num_train_timesteps: int, num_steps: int) -> Tensor:  # (K,)
    """DDIM's evenly spaced timesteps with ``steps_offset=1`` (what the prior samples with)."""
    ratio = num_train_timesteps // num_steps
    return (torch.arange(num_steps) * ratio + 1).flip(0)


@torch.no_grad()
def ddim_sample(unet: Any, scheduler: Any, timesteps: Tensor, labels: Tensor, noise: Tensor) -> Tensor:
    """Deterministic DDIM (η = 0) through ``timesteps`` (decreasing) from ``noise``; images in [-1, 1]."""
    alphas = scheduler.alphas_cumprod.float()
    final = torch.tensor(1.0) if scheduler.config.set_alpha_to_one else alphas[0]
    x = noise
    n = x.shape[0]
    zero = torch.zeros(n)
    for i, t in enumerate(timesteps.tolist()):
        a_t = alphas[t].expand(n)
        a_prev = (alphas[int(timesteps[i + 1])] if i + 1 < len(timesteps) else final).expand(n)
        inputs = unet_input(x, None, int(unet.config.in_channels))  # an inpainting prior: an empty mask
        eps = unet(inputs, torch.full((n,), t), class_labels=labels).sample
        x = ddim_step_mean(x, eps, a_t, a_prev, zero)
    return x.clamp(-1, 1)


def schedule_quality(images: Tensor, labels: Tensor, realism_weight: float) -> float:
    """Mean p(requested digit) plus ``realism_weight`` × mean ``digit_realism`` of ``images``."""
    from rl4gen.rewards.image import DigitAlignmentReward, DigitRealismReward

    contexts = [{"label": int(d)} for d in labels]
    score = torch.tensor(DigitAlignmentReward()(list(images), contexts)).mean()
    if realism_weight:
        score = score + realism_weight * torch.tensor(DigitRealismReward()(list(images), contexts)).mean()
    return float(score)


def evaluate_schedule(unet: Any, scheduler: Any, timesteps: Tensor, n: int = 500, seed: int = 1234) -> dict[str, float]:
    """Held-out report (:func:`rl4gen.images.image_report`) of ``n`` samples, digits 0..9 in turn."""
    from rl4gen.images import image_report, load_digits

    labels = torch.arange(n) % 10
    noise = torch.randn((n, 1, unet.config.sample_size, unet.config.sample_size), generator=torch.Generator().manual_seed(seed))
    images = ddim_sample(unet, scheduler, timesteps, labels, noise)
    report = image_report(images, labels, reference=load_digits("test", unet.config.sample_size).images)
    report["quality"] = schedule_quality(images, labels, realism_weight=0.1)
    return report


def train_schedule_policy(unet: Any, scheduler: Any, config: ScheduleSearchConfig, log: Any = None) -> tuple[SchedulePolicy, list[dict[str, float]]]:
    """REINFORCE on the schedule policy; returns it and the per-step history (mean reward,
    the most likely schedule)."""
    torch.manual_seed(config.seed)
    generator = torch.Generator().manual_seed(config.seed)
    policy = SchedulePolicy(scheduler.config.num_train_timesteps, config.candidates, config.num_steps)
    optimizer = torch.optim.Adam(policy.parameters(), lr=config.learning_rate)
    size = unet.config.sample_size
    labels = torch.arange(config.images_per_schedule) % 10
    history = []
    for step in range(config.steps):
        noise = torch.randn((config.images_per_schedule, 1, size, size), generator=generator)
        choices = policy.sample(config.schedules_per_step, generator)
        rewards = torch.tensor(
            [schedule_quality(ddim_sample(unet, scheduler, policy.schedule(c), labels, noise), labels, config.realism_weight) for c in choices]
        )
        advantages = rewards - rewards.mean()
        loss = -(advantages * policy.log_prob(choices)).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        record = {"step": step + 1, "reward_mean": float(rewards.mean()), "reward_max": float(rewards.max())}
        record["schedule"] = policy.most_likely().tolist()  # type: ignore[assignment]
        history.append(record)
        if log is not None:
            log(f"schedule step {step + 1}: reward {record['reward_mean']:.3f}, most likely {record['schedule']}")
    return policy, history


__all__ = [
    "SchedulePolicy",
    "ScheduleSearchConfig",
    "ddim_sample",
    "evaluate_schedule",
    "schedule_quality",
    "train_schedule_policy",
    "uniform_schedule",
]
