"""A short SeqGAN run through the shared trainer: the generator's parameters change and a frozen
discriminator's reward of its samples rises; bad recipes are one sentence."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from rl4gen.cli import load_train_config
from rl4gen.config import ConfigError
from rl4gen.gan.seqgan import SeqGANTrainer

TINY = [
    "task=seqgan_oracle",
    "task_args.vocab_size=8",
    "task_args.seq_len=6",
    "task_args.num_train=256",
    "task_args.num_heldout=32",
    "task_args.pretrain_steps=30",
    "task_args.n_embd=16",
    "task_args.num_rollouts=2",
    "task_args.discriminator_pretrain_steps=30",
    "algorithm.name=reinforce",
    "algorithm.num_generations=8",
    "prompts_per_step=4",
    "max_steps=8",
    "learning_rate=0.01",
    "eval_size=32",
    "eval_steps=100",
    "save_steps=100",
]


def test_seqgan_steps_raise_a_frozen_discriminators_reward(tmp_path: Path, one_thread: None) -> None:
    cfg = load_train_config(None, [*TINY, f"output_dir={tmp_path}"])
    trainer = SeqGANTrainer(cfg, show_progress=False)
    trainer.pretrain_discriminator()
    trainer.discriminator.options.k_steps = 0  # frozen: the reward the generator climbs stays put
    trainer.gan_options.discriminator_pretrain_steps = 0

    def mean_d() -> float:
        gen = torch.Generator().manual_seed(5)
        samples = trainer.policy.sample([{"prompt": ""}], 256, generator=gen).samples
        return float(trainer.discriminator.probabilities(samples).mean())

    before_d = mean_d()
    before = [p.detach().clone() for p in trainer.policy.trainable_parameters()]
    roll_before = [p.detach().clone() for p in trainer.rollout_policy.policy.model.parameters()]
    result = trainer.train()
    after_d = mean_d()
    assert after_d > before_d + 0.01, (before_d, after_d)
    changed = [not torch.equal(b, p) for b, p in zip(before, trainer.policy.trainable_parameters())]
    assert all(changed)
    # The roll-out copy followed the generator, but trails it.
    roll = list(trainer.rollout_policy.policy.model.parameters())
    assert any(not torch.equal(b, p) for b, p in zip(roll_before, roll))
    assert any(not torch.equal(r, p) for r, p in zip(roll, trainer.policy.model.parameters()))
    last = result.history[-1]
    for key in ("discriminator/loss", "discriminator/acc_real", "discriminator/acc_fake", "rewards/discriminator/mean", "loss"):
        assert key in last and last[key] == last[key]
    assert "oracle_nll" in result.final_eval and "test_nll" in result.final_eval
    assert (result.run_dir / "metrics.jsonl").is_file()
    assert any((result.run_dir / "tensorboard").iterdir())


def test_seqgan_needs_reinforce_without_kl(tmp_path: Path) -> None:
    cfg = load_train_config(None, [*TINY, "algorithm.name=grpo", f"output_dir={tmp_path}"])
    with pytest.raises(ConfigError, match="algorithm.name: reinforce"):
        SeqGANTrainer(cfg, show_progress=False)
