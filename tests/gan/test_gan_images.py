"""The image GAN parts: the VAE's loss, the discriminator reward's update, batch novelty, the
plain GAN's training step."""

from __future__ import annotations

import pytest
import torch

from rl4gen.core.rollout import Rollout
from rl4gen.gan.images import BatchNoveltyReward, ImageDiscriminatorReward, train_gan
from rl4gen.gan.vae import DigitsVAE, load_vae, save_module, train_vae
from rl4gen.images import load_digits
from rl4gen.rewards.base import build_reward


def _rollout(images: torch.Tensor) -> Rollout:
    n = len(images)
    return Rollout(
        actions=torch.zeros(n, 1), mask=torch.ones(n, 1), logprobs=torch.zeros(n, 1), group_ids=torch.arange(n),
        samples=list(images), contexts=[{}] * n,
    )


def test_discriminator_update_learns_to_tell_fakes_from_digits(one_thread: None) -> None:
    reward = build_reward("image_discriminator", image_size=8, hidden=32, disc_steps=2, learning_rate=2e-3)
    assert isinstance(reward, ImageDiscriminatorReward)
    fakes = torch.rand(32, 1, 8, 8) * 2 - 1  # uniform noise: easy to tell from digits
    before = [p.detach().clone() for p in reward.discriminator.parameters()]
    first = torch.tensor(reward(list(fakes), [{}] * 32)).mean()
    for _ in range(25):
        metrics = reward.update(_rollout(fakes))
    assert set(metrics) == {"discriminator/loss", "discriminator/acc_real", "discriminator/acc_fake"}
    assert any(not torch.equal(a, b) for a, b in zip(before, reward.discriminator.parameters()))
    assert metrics["discriminator/acc_fake"] > 0.9 and metrics["discriminator/acc_real"] > 0.9
    real = load_digits("test", 8).images[:32]
    assert torch.tensor(reward(list(fakes), [{}] * 32)).mean() < first - 0.2
    assert torch.tensor(reward(list(real), [{}] * 32)).mean() > torch.tensor(reward(list(fakes), [{}] * 32)).mean() + 0.5
    # An explicit real batch is used as given.
    assert reward.update(_rollout(fakes), real_batch=real)["discriminator/acc_real"] > 0.9


def test_batch_novelty_pays_nothing_to_a_collapsed_batch_and_ignores_group_mates() -> None:
    reward = BatchNoveltyReward(k=2)
    same = torch.zeros(6, 1, 4, 4)
    assert reward(list(same), [{"slot": i} for i in range(6)]) == [0.0] * 6
    spread = torch.stack([torch.full((1, 4, 4), v) for v in (-1.0, -1.0, 1.0, 1.0)])
    # Pairs share a context (a group): each sample's neighbours come from the other group only.
    values = reward(list(spread), [{"slot": 0}, {"slot": 0}, {"slot": 1}, {"slot": 1}])
    assert values == pytest.approx([2.0] * 4)


def test_vae_trains_and_round_trips(tmp_path, one_thread: None) -> None:
    images = load_digits("train", 8).images
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        untrained = float(DigitsVAE(8, 4, 64).loss(images[:256], gen)[0])
    vae = train_vae(images, latent_dim=4, hidden=64, steps=150, batch_size=64)
    with torch.no_grad():
        trained = float(vae.loss(images[:256], torch.Generator().manual_seed(0))[0])
    assert trained < 0.8 * untrained
    save_module(vae, vae.config(), tmp_path, "vae")
    loaded = load_vae(tmp_path)
    z = torch.randn(3, 4)
    assert torch.allclose(loaded.decode(z), vae.decode(z)) and loaded.decode(z).shape == (3, 1, 8, 8)


def test_plain_gan_step_moves_the_generator_toward_digits(one_thread: None) -> None:
    images = load_digits("train", 8).images
    logs: list[dict[str, float]] = []
    g, _ = train_gan(images, latent_dim=4, hidden=32, steps=100, batch_size=32, learning_rate=1e-3, on_log=lambda s, m: logs.append(m))
    assert logs and {"generator/loss", "discriminator/acc_real"} <= set(logs[-1])
    fake = g(torch.randn(256, 4)).detach()
    # Digits have ink on ~30% of pixels; the untrained tanh output sits near 0 everywhere.
    assert (fake.mean() - images.mean()).abs() < 0.3
