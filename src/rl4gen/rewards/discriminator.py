"""Learned rewards that train alongside the policy: a GAN discriminator as a reward.

A :class:`Discriminator` wraps a feature network that maps a batch of encoded samples to one logit
each (real vs generated). As a reward it returns ``D(x)``, the probability that a sample is real
(or ``log D(x)`` with ``output: log_prob``). Its :meth:`Discriminator.update` takes the policy's
latest rollout as the generated batch and a batch of real samples, and runs ``k_steps`` steps of
its own Adam optimiser on the binary cross-entropy (Goodfellow et al., 2014), with an optional
linear decay of its learning rate. It returns (and keeps in ``last_metrics``) the keys
``discriminator/loss``, ``discriminator/acc_real`` and ``discriminator/acc_fake`` (documented in
docs/metrics.md).

Subclasses say how samples become the network's input by overriding :meth:`Discriminator.encode`
(token ids for sequences, pixel tensors for images); the default stacks tensors as they are.
Given ``real_data`` (a function drawing real samples), ``update(rollout)`` needs no real batch,
so the generic trainer's ``CombinedReward.update(rollout)`` trains the discriminator each step.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Literal

import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import Tensor, nn

from rl4gen.rewards.base import RewardError


class DiscriminatorOptions(BaseModel):
    """How a discriminator reward scores and learns."""

    model_config = ConfigDict(extra="forbid")

    learning_rate: float = Field(1e-4, gt=0)
    """Adam learning rate of the discriminator (its own optimiser, not the policy's)."""
    k_steps: int = Field(1, ge=0)
    """Discriminator steps per policy step (Goodfellow et al.'s k); 0 freezes it."""
    batch_size: int | None = Field(None, ge=1)
    """Samples of each kind per discriminator step; null = the whole rollout and real batch."""
    lr_schedule: Literal["constant", "linear"] = "constant"
    """Keep the learning rate, or decay it linearly to 0 over ``total_updates`` updates."""
    total_updates: int = Field(1000, ge=1)
    """Updates (calls of ``update``) the linear schedule spans."""
    weight_decay: float = Field(0.0, ge=0)
    """L2 weight decay of the discriminator's optimiser."""
    output: Literal["prob", "log_prob", "logit"] = "prob"
    """The reward: D(x) in [0, 1] (SeqGAN), log D(x) (the non-saturating generator loss) or the
    logit log D(x) - log(1 - D(x))."""
    betas: tuple[float, float] = (0.9, 0.999)
    """Adam's betas; GANs often use (0.5, 0.999) (Radford et al., 2016)."""


class Discriminator:
    """A discriminator over samples, usable as a reward; see the module docstring.

    Args:
        net: maps an encoded batch (N, ...) to logits (N,) or (N, 1).
        options: optimiser, schedule and output settings.
        name: the reward's name (metric key ``rewards/{name}/mean``).
        real_data: ``real_data(generator, n)`` returns ``n`` real samples; it lets ``update`` run
            without a real batch, as the generic trainer calls it (``CombinedReward.update``).
    """

    def __init__(
        self,
        net: nn.Module,
        options: DiscriminatorOptions | None = None,
        name: str = "discriminator",
        real_data: Callable[[torch.Generator | None, int], Sequence[Any] | Tensor] | None = None,
    ) -> None:
        self.net = net
        self.real_data = real_data
        self.options = options or DiscriminatorOptions()
        self.name = name
        o = self.options
        self.optimizer = torch.optim.Adam(net.parameters(), lr=o.learning_rate, betas=o.betas, weight_decay=o.weight_decay)
        if o.lr_schedule == "linear":
            total = o.total_updates * max(o.k_steps, 1)
            self.scheduler: Any = torch.optim.lr_scheduler.LambdaLR(self.optimizer, lambda s: max(0.0, 1.0 - s / total))
        else:
            self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, lambda s: 1.0)
        self.num_updates = 0
        self.last_metrics: dict[str, float] = {}

    # ---------------------------------------------------------------- scoring

    @property
    def device(self) -> torch.device:
        return next(self.net.parameters()).device

    def encode(self, samples: Sequence[Any] | Tensor) -> Tensor:
        """The network's input for ``samples`` (N, ...). Default: tensors as they are."""
        if isinstance(samples, Tensor):
            return samples.to(self.device)
        return torch.stack([torch.as_tensor(s) for s in samples]).to(self.device)

    def logits(self, inputs: Tensor) -> Tensor:  # (N, ...) -> (N,)
        """Real-vs-generated logits of encoded inputs, with gradients."""
        return self.net(inputs).reshape(inputs.shape[0])

    def probabilities(self, samples: Sequence[Any] | Tensor) -> Tensor:  # (N,)
        """D(x): the probability that each sample is real, without gradients."""
        self.net.eval()
        with torch.no_grad():
            return torch.sigmoid(self.logits(self.encode(samples))).float().cpu()

    def __call__(self, samples: Sequence[Any], contexts: Sequence[Any], **info: Any) -> list[float | None]:
        if self.options.output == "prob":
            values = self.probabilities(samples)
        else:
            self.net.eval()
            with torch.no_grad():
                values = self.logits(self.encode(samples)).float().cpu()
            if self.options.output == "log_prob":
                values = nn.functional.logsigmoid(values)
        return [float(v) for v in values]

    # ---------------------------------------------------------------- learning

    def _loss(self, real: Tensor, fake: Tensor) -> tuple[Tensor, dict[str, float]]:
        """Binary cross-entropy on encoded real (label 1) and generated (label 0) inputs, and the
        batch's metrics."""
        logits_real = self.logits(real)
        logits_fake = self.logits(fake)
        loss = 0.5 * (
            nn.functional.binary_cross_entropy_with_logits(logits_real, torch.ones_like(logits_real))
            + nn.functional.binary_cross_entropy_with_logits(logits_fake, torch.zeros_like(logits_fake))
        )
        return loss, {
            "discriminator/loss": float(loss.detach()),
            "discriminator/acc_real": float((logits_real.detach() > 0).float().mean()),
            "discriminator/acc_fake": float((logits_fake.detach() < 0).float().mean()),
        }

    def train_step(self, real: Tensor, fake: Tensor) -> dict[str, float]:
        """One optimiser step on encoded real and generated inputs; metrics before the step."""
        self.net.train()
        loss, metrics = self._loss(real, fake)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        self.scheduler.step()
        self.net.eval()
        return metrics

    def update(
        self, rollout: Any, real_batch: Sequence[Any] | Tensor | None = None, generator: torch.Generator | None = None
    ) -> dict[str, float]:
        """``k_steps`` optimiser steps on the rollout's samples (generated) against ``real_batch``.

        ``rollout`` is a :class:`~rl4gen.core.Rollout` (its ``samples`` are used) or the generated
        samples themselves. With ``batch_size`` set, each step draws that many of each kind
        (with ``generator``). Returns the metrics averaged over the steps (accuracies are measured
        on each step's batch before its update). With ``k_steps: 0`` nothing is learned and the
        metrics are measured once on the whole batches.
        """
        fake_all = self.encode(getattr(rollout, "samples", rollout))
        if real_batch is None:
            if self.real_data is None:
                raise RewardError(
                    f"discriminator {self.name!r} was updated without real samples: pass real_batch, or build "
                    "it with real_data (a function returning n real samples)."
                )
            real_batch = self.real_data(generator, int(fake_all.shape[0]))
        real_all = self.encode(real_batch)
        bs = self.options.batch_size
        sums: dict[str, float] = {}
        k = self.options.k_steps
        for _ in range(k):
            real, fake = real_all, fake_all
            if bs is not None:
                real = real_all[torch.randint(0, real_all.shape[0], (bs,), generator=generator).to(real_all.device)]
                fake = fake_all[torch.randint(0, fake_all.shape[0], (bs,), generator=generator).to(fake_all.device)]
            for key, value in self.train_step(real, fake).items():
                sums[key] = sums.get(key, 0.0) + value
        if k == 0:
            self.net.eval()
            with torch.no_grad():
                sums = self._loss(real_all, fake_all)[1]
        self.num_updates += 1
        self.last_metrics = {key: value / max(k, 1) for key, value in sums.items()}
        return dict(self.last_metrics)

    def state_dict(self) -> dict[str, Any]:
        """Network, optimiser and schedule state, for checkpoints."""
        return {
            "net": self.net.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "num_updates": self.num_updates,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.net.load_state_dict(state["net"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.num_updates = int(state["num_updates"])


__all__ = ["Discriminator", "DiscriminatorOptions"]
