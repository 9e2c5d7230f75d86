"""A small VAE on the digits: the latent-variable prior that a
:class:`~rl4gen.policies.latent.LatentPolicy` steers.

Kingma & Welling, "Auto-Encoding Variational Bayes", 2014 (arXiv:1312.6114). MLP encoder and
decoder on flattened ``size`` x ``size`` images; the decoder gives per-pixel Bernoulli
probabilities of ink (the data's ``[-1, 1]`` grey levels read as ``[0, 1]`` targets), so the ELBO
is binary cross-entropy plus ``KL(q(z|x) || N(0, I))`` (the closed form for diagonal Gaussians).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class DigitsVAE(nn.Module):
    """``encode: (N, 1, S, S) -> (mean, logvar) (N, D)``; ``decode: (N, D) -> (N, 1, S, S)`` in [-1, 1]."""

    def __init__(self, image_size: int = 16, latent_dim: int = 8, hidden: int = 256) -> None:
        super().__init__()
        self.image_size = image_size
        self.latent_dim = latent_dim
        self.hidden = hidden
        pixels = image_size * image_size
        self.encoder = nn.Sequential(
            nn.Flatten(), nn.Linear(pixels, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(), nn.Linear(hidden, 2 * latent_dim)
        )
        self.decoder = nn.Sequential(
            nn.Linear(latent_dim, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(), nn.Linear(hidden, pixels)
        )

    def encode(self, images: Tensor) -> tuple[Tensor, Tensor]:
        mean, logvar = self.encoder(images).chunk(2, dim=-1)  # (N, D) each
        return mean, logvar

    def decode_logits(self, codes: Tensor) -> Tensor:  # (N, D) -> (N, 1, S, S) ink logits
        return self.decoder(codes).view(-1, 1, self.image_size, self.image_size)

    def decode(self, codes: Tensor) -> Tensor:
        """Images in ``[-1, 1]`` (the expected grey level of each pixel)."""
        return torch.sigmoid(self.decode_logits(codes)) * 2 - 1

    forward = decode  # a VAE used as a decoder: codes -> images

    def loss(self, images: Tensor, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor, Tensor]:
        """Negative ELBO per image, split into (total, reconstruction, KL), each a scalar mean."""
        mean, logvar = self.encode(images)
        eps = torch.randn(mean.shape, generator=generator, device=mean.device)
        codes = mean + (0.5 * logvar).exp() * eps
        target = (images + 1) / 2  # (N, 1, S, S) in [0, 1]
        recon = F.binary_cross_entropy_with_logits(self.decode_logits(codes), target, reduction="none").flatten(1).sum(1)
        kl = 0.5 * (mean.pow(2) + logvar.exp() - 1 - logvar).sum(1)  # KL(N(m, s^2) || N(0, 1)), closed form
        return (recon + kl).mean(), recon.mean(), kl.mean()

    def config(self) -> dict[str, int]:
        return {"image_size": self.image_size, "latent_dim": self.latent_dim, "hidden": self.hidden}


def train_vae(
    images: Tensor,
    *,
    latent_dim: int = 8,
    hidden: int = 256,
    steps: int = 3000,
    batch_size: int = 128,
    learning_rate: float = 1e-3,
    seed: int = 0,
    on_log: Callable[[int, float], None] | None = None,
) -> DigitsVAE:
    """Fit a :class:`DigitsVAE` to ``images`` ``(N, 1, S, S)`` for a fixed number of steps."""
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    vae = DigitsVAE(images.shape[-1], latent_dim, hidden)
    opt = torch.optim.Adam(vae.parameters(), lr=learning_rate)
    for step in range(1, steps + 1):
        idx = torch.randint(0, len(images), (batch_size,), generator=gen)
        loss, _, _ = vae.loss(images[idx], gen)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if on_log is not None and (step % 500 == 0 or step == steps):
            on_log(step, loss.item())
    return vae.eval()


def save_module(module: nn.Module, config: dict[str, Any], directory: str | Path, name: str) -> None:
    """Write ``module``'s weights to ``{name}.safetensors`` and ``config`` to ``{name}.json``."""
    from safetensors.torch import save_file

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    save_file({k: v.detach().cpu().contiguous() for k, v in module.state_dict().items()}, str(directory / f"{name}.safetensors"))
    (directory / f"{name}.json").write_text(json.dumps(config, indent=2))


def load_module(factory: Callable[..., nn.Module], directory: str | Path, name: str) -> nn.Module:
    """Rebuild ``factory(**config)`` from ``{name}.json`` and load ``{name}.safetensors`` into it."""
    from safetensors.torch import load_file

    from rl4gen.checkpoint import CheckpointError

    directory = Path(directory)
    if not (directory / f"{name}.safetensors").is_file():
        raise CheckpointError(f"{str(directory)!r} holds no {name}.safetensors: point model.path at a folder written by rl4gen.")
    module = factory(**json.loads((directory / f"{name}.json").read_text()))
    module.load_state_dict(load_file(str(directory / f"{name}.safetensors")))
    return module.eval()


def load_vae(directory: str | Path) -> DigitsVAE:
    """The VAE saved in ``directory`` (``vae.safetensors`` + ``vae.json``)."""
    vae = load_module(DigitsVAE, directory, "vae")
    assert isinstance(vae, DigitsVAE)
    return vae
