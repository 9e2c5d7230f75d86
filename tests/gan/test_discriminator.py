"""The discriminator reward: its update learns a separable toy set, with its own optimiser."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from rl4gen.gan.oracle import token_text
from rl4gen.gan.seqgan import SequenceDiscriminator
from rl4gen.rewards.base import build_reward
from rl4gen.rewards.discriminator import Discriminator, DiscriminatorOptions


def test_generic_discriminator_learns_separable_points(one_thread: None) -> None:
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(0)
    real = torch.randn(128, 2, generator=gen) + torch.tensor([2.0, 0.0])
    fake = torch.randn(128, 2, generator=gen) - torch.tensor([2.0, 0.0])
    disc = Discriminator(nn.Linear(2, 1), DiscriminatorOptions(learning_rate=0.05, k_steps=5))
    before = [p.detach().clone() for p in disc.net.parameters()]
    d_real_before = disc.probabilities(real).mean()
    first = disc.update(list(fake), real)
    for _ in range(10):
        last = disc.update(list(fake), real)
    assert set(last) == {"discriminator/loss", "discriminator/acc_real", "discriminator/acc_fake"}
    assert last["discriminator/loss"] < first["discriminator/loss"]
    assert last["discriminator/acc_real"] > 0.9 and last["discriminator/acc_fake"] > 0.9
    assert all(not torch.equal(b, p) for b, p in zip(before, disc.net.parameters()))
    assert disc.probabilities(real).mean() > d_real_before
    assert disc.num_updates == 11 and disc.last_metrics == last
    # As a reward: one probability per sample, higher for real ones.
    scores = disc(list(real[:4]) + list(fake[:4]), [None] * 8)
    assert len(scores) == 8 and min(scores[:4]) > max(scores[4:])


def test_k_zero_freezes_and_linear_schedule_decays() -> None:
    disc = Discriminator(nn.Linear(2, 1), DiscriminatorOptions(k_steps=0))
    before = [p.detach().clone() for p in disc.net.parameters()]
    metrics = disc.update([torch.zeros(2)], torch.ones(1, 2))
    assert all(torch.equal(b, p) for b, p in zip(before, disc.net.parameters()))
    assert set(metrics) == {"discriminator/loss", "discriminator/acc_real", "discriminator/acc_fake"}
    decaying = Discriminator(nn.Linear(2, 1), DiscriminatorOptions(learning_rate=1.0, k_steps=2, lr_schedule="linear", total_updates=4))
    decaying.update([torch.zeros(2)], torch.ones(1, 2))
    assert decaying.optimizer.param_groups[0]["lr"] == pytest.approx(0.75)  # 1 - 2 steps / (4 updates x 2 steps)


@pytest.mark.parametrize("kind", ["cnn", "gru"])
def test_sequence_discriminator_separates_token_sets(kind: str, one_thread: None) -> None:
    gen = torch.Generator().manual_seed(0)
    real = [token_text(r) for r in torch.randint(0, 5, (64, 8), generator=gen)]  # low tokens
    fake = [token_text(r) for r in torch.randint(5, 10, (64, 8), generator=gen)]  # high tokens
    disc = build_reward("sequence_discriminator", vocab_size=10, seq_len=8, kind=kind, learning_rate=1e-2, k_steps=5)
    assert isinstance(disc, SequenceDiscriminator) and disc.name == "discriminator"
    before = [p.detach().clone() for p in disc.net.parameters()]
    first = disc.update(fake, real)
    for _ in range(5):
        last = disc.update(fake, real)
    assert last["discriminator/acc_real"] == 1.0 and last["discriminator/acc_fake"] == 1.0
    assert last["discriminator/loss"] < first["discriminator/loss"]
    assert any(not torch.equal(b, p) for b, p in zip(before, disc.net.parameters()))
    assert disc.encode(["", token_text([3, 4])]).tolist()[1][:3] == [3, 4, 10]  # padded with id 10


def test_bad_kind_is_one_sentence() -> None:
    from rl4gen.config import ConfigError

    with pytest.raises(ConfigError, match="kind must be 'cnn' or 'gru'"):
        build_reward("sequence_discriminator", vocab_size=10, seq_len=8, kind="lstm")


def test_update_draws_real_samples_itself_in_the_generic_loop() -> None:
    from rl4gen.rewards.base import CombinedReward, RewardError

    seen: list[int] = []

    def real(generator: torch.Generator | None, n: int) -> torch.Tensor:
        seen.append(n)
        return torch.ones(n, 2)

    disc = Discriminator(nn.Linear(2, 1), DiscriminatorOptions(k_steps=1), real_data=real)
    CombinedReward([disc]).update([torch.zeros(2)] * 3)  # what Trainer.collect calls
    assert seen == [3] and disc.num_updates == 1
    with pytest.raises(RewardError, match="without real samples"):
        Discriminator(nn.Linear(2, 1)).update([torch.zeros(2)])
