"""SeqGAN: a sequence generator trained by policy gradient on a discriminator's verdict.

Yu, Zhang, Wang and Yu, "SeqGAN: Sequence Generative Adversarial Nets with Policy Gradient",
AAAI 2017 (arXiv:1609.05473). The generator (any :class:`~rl4gen.policies.causal_lm.CausalLMPolicy`;
the oracle benchmark uses a tiny GPT pretrained by MLE) is the policy; the discriminator's
probability that a *finished* sequence is real is the reward. Each token ``y_t`` gets the action
value ``Q(Y_{1:t-1}, y_t)``: for ``t < T`` the mean of ``D`` over ``num_rollouts`` Monte Carlo
completions of the prefix ``Y_{1:t}`` drawn from a *delayed copy* of the generator (its weights
follow the generator as ``θ' ← r θ' + (1 - r) θ``, ``r`` = the paper's update rate 0.8), and
``D(Y_{1:T})`` itself for the last token. The update is REINFORCE with these per-token rewards
(``-Σ_t Q_t log G(y_t | Y_{1:t-1})``) through the shared trainer and loss code; an optional
per-position batch-mean baseline (not in the paper) lowers its variance. The discriminator (a CNN
as in the paper, or a GRU) is a :class:`~rl4gen.rewards.discriminator.Discriminator` updated
``k_steps`` times per generator step on the step's samples against real data.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from typing import Any, Literal

import torch
from torch import Tensor, nn

from rl4gen.config import ConfigError, ReinforceConfig, TrainConfig
from rl4gen.core.rollout import Rollout
from rl4gen.rewards.base import register_reward
from rl4gen.rewards.discriminator import Discriminator, DiscriminatorOptions
from rl4gen.trainer import Trainer

# ------------------------------------------------------------------------------ discriminator


class CNNClassifier(nn.Module):
    """The paper's discriminator, smaller: embeddings, convolutions of several widths with
    max-over-time pooling, a highway layer, dropout, one logit."""

    def __init__(self, vocab_size: int, embed_dim: int = 64, widths: Sequence[int] = (2, 3, 4, 5), channels: int = 32, dropout: float = 0.25) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab_size + 1, embed_dim, padding_idx=vocab_size)  # last row = padding
        self.convs = nn.ModuleList(nn.Conv1d(embed_dim, channels, w, padding=w - 1) for w in widths)
        width = channels * len(widths)
        self.highway = nn.Linear(width, 2 * width)
        self.dropout = nn.Dropout(dropout)
        self.out = nn.Linear(width, 1)

    def forward(self, tokens: Tensor) -> Tensor:  # (N, L) -> (N,)
        x = self.embed(tokens).transpose(1, 2)  # (N, E, L)
        h = torch.cat([torch.relu(conv(x)).amax(dim=2) for conv in self.convs], dim=1)  # (N, C*W)
        transform, gate = self.highway(h).chunk(2, dim=1)
        g = torch.sigmoid(gate)
        h = g * torch.relu(transform) + (1 - g) * h
        return self.out(self.dropout(h)).squeeze(1)


class GRUClassifier(nn.Module):
    """Embeddings, a GRU, a logit from its final state."""

    def __init__(self, vocab_size: int, embed_dim: int = 64, hidden_dim: int = 64) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab_size + 1, embed_dim, padding_idx=vocab_size)
        self.gru = nn.GRU(embed_dim, hidden_dim, batch_first=True)
        self.out = nn.Linear(hidden_dim, 1)

    def forward(self, tokens: Tensor) -> Tensor:  # (N, L) -> (N,)
        _, h = self.gru(self.embed(tokens))  # (1, N, H)
        return self.out(h[-1]).squeeze(1)


@register_reward("sequence_discriminator")
class SequenceDiscriminator(Discriminator):
    """A discriminator over token texts (one character per token, :mod:`rl4gen.gan.oracle`).

    Texts are cut or padded (with a padding token of its own) to ``seq_len`` tokens; tokens
    outside the vocabulary are read as padding.
    """

    def __init__(
        self,
        vocab_size: int,
        seq_len: int,
        kind: Literal["cnn", "gru"] = "cnn",
        embed_dim: int = 64,
        hidden_dim: int = 64,
        seed: int = 0,
        name: str = "discriminator",
        **options: Any,
    ) -> None:
        if kind not in ("cnn", "gru"):
            raise ValueError(f"kind must be 'cnn' or 'gru', got {kind!r}")
        torch.manual_seed(seed)
        net: nn.Module = (
            CNNClassifier(vocab_size, embed_dim, channels=hidden_dim // 2) if kind == "cnn" else GRUClassifier(vocab_size, embed_dim, hidden_dim)
        )
        super().__init__(net, DiscriminatorOptions(**options), name=name)
        self.vocab_size, self.seq_len = vocab_size, seq_len

    def encode(self, samples: Sequence[Any] | Tensor) -> Tensor:  # -> (N, seq_len) token ids
        if isinstance(samples, Tensor):
            return samples.to(self.device)
        from rl4gen.gan.oracle import TOKEN_BASE

        pad = self.vocab_size
        out = torch.full((len(samples), self.seq_len), pad, dtype=torch.long)
        for i, text in enumerate(samples):
            row = [ord(c) - TOKEN_BASE for c in str(text)[: self.seq_len]]
            out[i, : len(row)] = torch.tensor([t if 0 <= t < pad else pad for t in row], dtype=torch.long)
        return out.to(self.device)


# ------------------------------------------------------------------------------ MC rollouts

Complete = Callable[[list[str], int, int], list[str]]  # (prefixes, num_rollouts, max_new) -> completions
Score = Callable[[list[str]], Tensor]  # texts -> (N,) rewards


def mc_rollout_rewards(
    sequences: Sequence[str],
    complete: Complete,
    score: Score,
    num_rollouts: int,
    num_actions: int,
) -> Tensor:  # (B, num_actions)
    """SeqGAN's per-token rewards ``Q(Y_{1:t-1}, y_t)`` by Monte Carlo search.

    Args:
        sequences: the B generated sequences as texts, one character per token.
        complete: ``complete(prefixes, n, max_new)`` returns ``n`` completions (adjacent) of each
            prefix, each at most ``max_new`` tokens long (the roll-out policy).
        score: the reward of finished sequences (``D``).
        num_rollouts: completions per prefix (the paper's N = 16).
        num_actions: width of the output (the rollout's action count, ``T``).

    Returns:
        ``Q[b, t-1]`` for token ``t`` of sequence ``b``: the mean score of ``prefix + completion``
        over the rollouts for ``t < len``, and ``score(sequence)`` for ``t = len`` and for any
        action after it (the end-of-sequence token). Entries past that are 0.
    """
    b = len(sequences)
    lengths = [len(s) for s in sequences]
    q = torch.zeros(b, num_actions)
    texts: list[str] = list(sequences)  # finished sequences first, then every rollout
    slots: list[tuple[int, int, int]] = []  # (row, column, start index in texts) per prefix
    for t in range(1, max(lengths, default=0)):
        rows = [i for i in range(b) if lengths[i] > t]
        prefixes = [sequences[i][:t] for i in rows]
        max_new = max(lengths[i] for i in rows) - t
        done = complete(prefixes, num_rollouts, max_new)
        if len(done) != len(prefixes) * num_rollouts:
            raise ValueError(f"complete returned {len(done)} completions for {len(prefixes)} prefixes x {num_rollouts}")
        for k, i in enumerate(rows):
            slots.append((i, t - 1, len(texts)))
            rest = lengths[i] - t  # complete to the sequence's own length
            texts.extend(prefixes[k] + c[:rest] for c in done[k * num_rollouts : (k + 1) * num_rollouts])
    scores = score(texts).float().reshape(-1)
    if scores.shape[0] != len(texts):
        raise ValueError(f"score returned {scores.shape[0]} values for {len(texts)} texts")
    for i, column, start in slots:
        q[i, column] = scores[start : start + num_rollouts].mean()
    for i, n in enumerate(lengths):  # the last token (and an end token after it) gets D(Y)
        q[i, max(n - 1, 0) : min(n + 1, num_actions)] = scores[i]
    return q


def position_baseline(q: Tensor, mask: Tensor) -> Tensor:  # (B, T), (B, T) -> (B, T)
    """Per-token rewards minus their mean over the batch at the same position (masked)."""
    m = mask.to(q.dtype)
    mean = (q * m).sum(dim=0) / m.sum(dim=0).clamp(min=1.0)  # (T,)
    return (q - mean) * m


class DelayedCopy:
    """The roll-out policy: a copy of the generator whose weights trail it,
    ``θ' ← rate · θ' + (1 - rate) · θ`` after every generator step (``rate`` 0 = the generator)."""

    def __init__(self, policy: Any, rate: float) -> None:
        from rl4gen.policies.causal_lm import CausalLMPolicy

        self.rate = rate
        self.policy = CausalLMPolicy(copy.deepcopy(policy.model), policy.tokenizer, policy.generation.model_copy())
        self.policy.model.requires_grad_(False)
        self.bos = str(policy.tokenizer.bos_token or policy.tokenizer.eos_token)

    @torch.no_grad()
    def follow(self, policy: Any) -> None:
        """Move the copy toward the generator's current weights."""
        for mine, theirs in zip(self.policy.model.parameters(), policy.model.parameters()):
            mine.mul_(self.rate).add_(theirs.detach().to(mine.dtype), alpha=1.0 - self.rate)

    def complete(self, prefixes: list[str], n: int, max_new: int, generator: torch.Generator | None = None) -> list[str]:
        """``n`` sampled completions of each prefix (the sequence's start token first)."""
        gen = self.policy.generation
        self.policy.generation = gen.model_copy(update={"max_completion_length": max(max_new, 1)})
        try:
            contexts = [{"prompt": self.bos + p} for p in prefixes]
            return self.policy.sample(contexts, n, generator=generator).samples
        finally:
            self.policy.generation = gen


# ------------------------------------------------------------------------------ training


class SeqGANTrainer(Trainer):
    """The shared :class:`~rl4gen.trainer.Trainer` with SeqGAN's collection phase.

    ``collect`` samples, estimates per-token rewards by MC rollouts, sets per-token advantages and
    updates the discriminator; the update, logging, evaluation and checkpoints are the trainer's.
    The task supplies real data (``real_samples(generator, n)``) and the MC settings
    (``num_rollouts``, ``rollout_update_rate``, ``baseline``, ``discriminator_pretrain_steps``).
    The algorithm must be ``reinforce`` with ``beta: 0`` (the rewards are SeqGAN's own); the
    rewards must be one discriminator.
    """

    def __init__(self, config: TrainConfig, **kwargs: Any) -> None:
        if not isinstance(config.algorithm, ReinforceConfig) or config.algorithm.beta != 0:
            raise ConfigError("SeqGAN trains with per-token Monte Carlo rewards: set algorithm.name: reinforce and algorithm.beta: 0.")
        if kwargs.get("resume"):
            raise ConfigError("SeqGAN runs cannot be resumed (the discriminator and roll-out copy are not checkpointed): start a new run.")
        super().__init__(config, **kwargs)
        discs = [r for r in self.rewards.rewards if isinstance(r, Discriminator)]
        if len(discs) != 1 or len(self.rewards.rewards) != 1:
            raise ConfigError("SeqGAN needs exactly one reward, a discriminator (type: sequence_discriminator).")
        if not hasattr(self.task, "real_samples"):
            raise ConfigError(f"task {config.task!r} has no real data for a discriminator: use task seqgan_oracle.")
        self.discriminator: Discriminator = discs[0]
        self.discriminator.net.to(self.policy.device)
        task: Any = self.task
        self.real_samples: Callable[[torch.Generator, int], list[Any]] = task.real_samples
        opts = self.gan_options = task.options
        self.num_rollouts: int = opts.num_rollouts
        self.baseline: str = opts.baseline
        self.rollout_policy = DelayedCopy(self.policy, opts.rollout_update_rate)
        self.callbacks.insert(0, lambda trainer, step, metrics: self.rollout_policy.follow(self.policy))

    def _gan_generator(self, step: int, part: int) -> torch.Generator:
        from rl4gen.trainer import _mix_seed

        return torch.Generator().manual_seed(_mix_seed(self.config.seed, step, self.accelerator.process_index, 10 + part))

    def pretrain_discriminator(self) -> dict[str, float]:
        """``discriminator_pretrain_steps`` updates on the generator's samples against real data,
        before adversarial training (the paper pretrains D on MLE samples too)."""
        steps = self.gan_options.discriminator_pretrain_steps
        metrics: dict[str, float] = {}
        n = self.config.prompts_per_step * self.config.algorithm.num_generations
        for i in range(steps):
            gen = self._gan_generator(-1 - i, 0)
            fake = self.policy.sample([{"prompt": ""}], n, generator=torch.Generator(device=self.policy.device).manual_seed(int(torch.randint(0, 2**62, (1,), generator=gen))))
            metrics = self.discriminator.update(fake, self.real_samples(gen, n), generator=gen)
        return metrics

    def train(self) -> Any:
        if self.step == 0 and self.gan_options.discriminator_pretrain_steps:
            pre = self.pretrain_discriminator()
            self.log("discriminator pretrained: " + ", ".join(f"{k} {v:.3f}" for k, v in pre.items()))
        return super().train()

    def collect(self, step: int) -> tuple[Rollout, dict[str, Tensor]]:
        data_gen, sample_gen = self._generators(step)
        contexts = self.task.train_contexts(data_gen, self.config.prompts_per_step)
        rollout = self.policy.sample(contexts, self.config.algorithm.num_generations, generator=sample_gen)
        rollout_gen = torch.Generator(device=self.policy.device).manual_seed(int(torch.randint(0, 2**62, (1,), generator=self._gan_generator(step, 1))))
        q = mc_rollout_rewards(
            rollout.samples,
            lambda p, n, m: self.rollout_policy.complete(p, n, m, generator=rollout_gen),
            self.discriminator.probabilities,
            self.num_rollouts,
            rollout.actions.shape[1],
        ).to(rollout.actions.device) * rollout.mask  # (B, T)
        final = self.discriminator.probabilities(rollout.samples)  # (B,) D(Y)
        rollout.rewards = final.to(rollout.actions.device)
        rollout.advantages = position_baseline(q, rollout.mask) if self.baseline == "mean" else q
        real_gen = self._gan_generator(step, 2)
        self.reward_metrics = self.discriminator.update(rollout, self.real_samples(real_gen, len(rollout)), generator=real_gen)
        self.reward_metrics["seqgan/mean_token_reward"] = float((q.sum() / rollout.mask.sum().clamp(min=1)).item())
        return rollout, {self.discriminator.name: final}


__all__ = [
    "CNNClassifier",
    "DelayedCopy",
    "GRUClassifier",
    "SeqGANTrainer",
    "SequenceDiscriminator",
    "mc_rollout_rewards",
    "position_baseline",
]
