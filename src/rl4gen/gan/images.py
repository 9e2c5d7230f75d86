"""GANs on the digits: a small generator and discriminator, the plain non-saturating GAN trained
by backpropagation (the baseline), and the rewards of the RL-GAN, where the generator is a
stochastic policy and the discriminator a reward that trains alongside it.

Goodfellow et al., "Generative Adversarial Nets", 2014 (arXiv:1406.2661): the non-saturating
generator loss ``-log D(G(z))``. The RL-GAN replaces that gradient with a policy gradient
(Williams, 1992) on a Gaussian-output generator, so any reward can be added to realism, including
non-differentiable ones: here a batch-level novelty bonus against mode collapse.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rl4gen.rewards.base import register_reward
from rl4gen.rewards.discriminator import Discriminator as DiscriminatorReward
from rl4gen.rewards.discriminator import DiscriminatorOptions
from rl4gen.rewards.image import as_image_batch


class Generator(nn.Module):
    """MLP ``z (N, D) -> images (N, 1, S, S)`` in ``[-1, 1]`` (tanh output)."""

    def __init__(self, image_size: int = 16, latent_dim: int = 16, hidden: int = 256) -> None:
        super().__init__()
        self.image_size = image_size
        self.latent_dim = latent_dim
        self.hidden = hidden
        self.net = nn.Sequential(
            nn.Linear(latent_dim, hidden),
            nn.LeakyReLU(0.2),
            nn.Linear(hidden, hidden),
            nn.LeakyReLU(0.2),
            nn.Linear(hidden, image_size * image_size),
            nn.Tanh(),
        )

    def forward(self, codes: Tensor) -> Tensor:
        return self.net(codes).view(-1, 1, self.image_size, self.image_size)

    def config(self) -> dict[str, int]:
        return {"image_size": self.image_size, "latent_dim": self.latent_dim, "hidden": self.hidden}


class Discriminator(nn.Module):
    """MLP ``images (N, 1, S, S) -> logits (N,)`` of "real"."""

    def __init__(self, image_size: int = 16, hidden: int = 256) -> None:
        super().__init__()
        self.image_size = image_size
        self.net = nn.Sequential(
            nn.Flatten(),
            nn.Linear(image_size * image_size, hidden),
            nn.LeakyReLU(0.2),
            nn.Linear(hidden, hidden // 2),
            nn.LeakyReLU(0.2),
            nn.Linear(hidden // 2, 1),
        )

    def forward(self, images: Tensor) -> Tensor:
        return self.net(images).squeeze(-1)


def discriminator_step(
    disc: nn.Module, optimizer: torch.optim.Optimizer, real: Tensor, fake: Tensor
) -> dict[str, float]:
    """One discriminator update on ``real`` and ``fake`` images (binary cross-entropy on logits);
    returns ``discriminator/loss``, ``discriminator/acc_real`` and ``discriminator/acc_fake``
    (accuracies before the update)."""
    real_logits, fake_logits = disc(real), disc(fake.detach())
    loss = F.binary_cross_entropy_with_logits(real_logits, torch.ones_like(real_logits)) + F.binary_cross_entropy_with_logits(
        fake_logits, torch.zeros_like(fake_logits)
    )
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return {
        "discriminator/loss": loss.item(),
        "discriminator/acc_real": float((real_logits > 0).float().mean()),
        "discriminator/acc_fake": float((fake_logits < 0).float().mean()),
    }


def train_gan(
    images: Tensor,
    *,
    latent_dim: int = 16,
    hidden: int = 256,
    steps: int = 2000,
    batch_size: int = 64,
    learning_rate: float = 2e-4,
    disc_steps: int = 1,
    seed: int = 0,
    on_log: Callable[[int, dict[str, float]], None] | None = None,
) -> tuple[Generator, Discriminator]:
    """The plain non-saturating GAN: ``steps`` generator updates by backpropagation through the
    discriminator, each after ``disc_steps`` discriminator updates (Adam, betas (0.5, 0.999))."""
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    size = images.shape[-1]
    g, d = Generator(size, latent_dim, hidden), Discriminator(size, hidden)
    opt_g = torch.optim.Adam(g.parameters(), lr=learning_rate, betas=(0.5, 0.999))
    opt_d = torch.optim.Adam(d.parameters(), lr=learning_rate, betas=(0.5, 0.999))
    for step in range(1, steps + 1):
        for _ in range(disc_steps):
            real = images[torch.randint(0, len(images), (batch_size,), generator=gen)]
            with torch.no_grad():
                fake = g(torch.randn(batch_size, latent_dim, generator=gen))
            metrics = discriminator_step(d, opt_d, real, fake)
        logits = d(g(torch.randn(batch_size, latent_dim, generator=gen)))
        loss = F.softplus(-logits).mean()  # non-saturating: -log D(G(z))
        opt_g.zero_grad(set_to_none=True)
        loss.backward()
        opt_g.step()
        if on_log is not None and (step % 500 == 0 or step == steps):
            on_log(step, {"generator/loss": loss.item(), **metrics})
    return g.eval(), d.eval()


# ------------------------------------------------------------------------------- RL-GAN rewards


@register_reward("image_discriminator")
class ImageDiscriminatorReward(DiscriminatorReward):
    """A discriminator over digit images as a learned reward: ``log D(x)`` (the non-saturating
    realism score), or the logit with ``score="logit"``.

    The generic :class:`~rl4gen.rewards.discriminator.Discriminator` reward with the digits as its
    real data: after each policy step the trainer calls :meth:`update` with the rollout, and the
    reward takes ``disc_steps`` Adam steps (betas 0.5, 0.999) on ``batch_size`` real training
    digits against as many of the rollout's samples, logging ``discriminator/acc_real``,
    ``discriminator/acc_fake`` and ``discriminator/loss``. ``init_from`` names a folder holding
    ``discriminator.safetensors`` (a plain GAN's) to start from. ``instance_noise`` adds Gaussian
    noise of that std to the real images, so that the pixel noise of a Gaussian-output generator
    is not a giveaway (Sønderby et al., 2017).
    """

    def __init__(
        self,
        image_size: int = 16,
        hidden: int = 256,
        learning_rate: float = 2e-4,
        disc_steps: int = 1,
        batch_size: int = 64,
        instance_noise: float = 0.0,
        score: str = "log_d",
        seed: int = 0,
        init_from: str | None = None,
    ) -> None:
        if score not in ("log_d", "logit"):
            raise ValueError(f"image_discriminator score must be 'log_d' or 'logit', got {score!r}.")
        from rl4gen.images.digits import load_digits

        torch.manual_seed(seed)
        options = DiscriminatorOptions(
            learning_rate=learning_rate,
            k_steps=disc_steps,
            batch_size=batch_size,
            betas=(0.5, 0.999),
            output="log_prob" if score == "log_d" else "logit",
        )
        super().__init__(Discriminator(image_size, hidden), options, "image_discriminator", self._real_digits)
        self.init_from = init_from  # loaded at first use: the folder may be built after the reward
        self.instance_noise = instance_noise
        self.real = load_digits("train", image_size).images
        self.generator = torch.Generator().manual_seed(seed + 1)

    @property
    def discriminator(self) -> nn.Module:
        """The network (a :class:`Discriminator` over images)."""
        return self.net

    def _warm_start(self) -> None:
        if self.init_from is not None:  # e.g. the plain GAN's discriminator, with its generator
            from rl4gen.gan.vae import load_module

            self.net.load_state_dict(load_module(Discriminator, self.init_from, "discriminator").state_dict())
            self.init_from = None

    def _real_digits(self, generator: torch.Generator | None, n: int) -> Tensor:
        real = self.real[torch.randint(0, len(self.real), (n,), generator=generator)]
        if self.instance_noise > 0:
            real = real + self.instance_noise * torch.randn(real.shape, generator=generator)
        return real

    def encode(self, samples: Sequence[Any] | Tensor) -> Tensor:
        return as_image_batch(samples).to(self.device)

    def __call__(self, samples: Sequence[Any], contexts: Sequence[Any], **info: Any) -> list[float | None]:
        self._warm_start()
        return super().__call__(samples, contexts, **info)

    def update(
        self, rollout: Any, real_batch: Sequence[Any] | Tensor | None = None, generator: torch.Generator | None = None
    ) -> dict[str, float]:
        """``disc_steps`` discriminator steps: the rollout's samples against ``real_batch`` (or
        fresh training digits); returns (and keeps in ``last_metrics``) the mean metrics."""
        self._warm_start()
        return super().update(rollout, real_batch, generator=generator or self.generator)


@register_reward("batch_novelty")
class BatchNoveltyReward:
    """A diversity bonus against mode collapse: each sample's mean pixel distance (RMS over pixels)
    to its ``k`` nearest samples from *other* groups of the batch (samples with equal contexts
    form a group: a Gaussian-output generator's samples of one latent code differ only by pixel
    noise). Samples that sit where many others sit earn little; a collapsed batch earns nothing."""

    def __init__(self, k: int = 4) -> None:
        self.name = "batch_novelty"
        self.k = k

    def __call__(self, samples: Sequence[Any], contexts: Sequence[Any], **info: Any) -> list[float]:
        images = as_image_batch(samples).flatten(1)  # (N, P)
        n = len(images)
        dist = torch.cdist(images, images) / images.shape[1] ** 0.5  # (N, N) RMS pixel distance
        keys = [repr(sorted(c.items())) if isinstance(c, dict) else repr(c) for c in contexts]
        group = torch.tensor([keys.index(key) for key in keys])
        same = group[:, None] == group[None, :]  # (N, N)
        dist = dist.masked_fill(same, float("inf"))
        k = min(self.k, int((~same).sum(1).min()))
        if k == 0:
            return [0.0] * n
        return dist.topk(k, dim=1, largest=False).values.mean(1).tolist()


__all__ = [
    "BatchNoveltyReward",
    "Discriminator",
    "Generator",
    "ImageDiscriminatorReward",
    "discriminator_step",
    "train_gan",
]
