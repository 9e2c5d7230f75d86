"""Reward models from pairwise preferences: Bradley–Terry training (Ouyang et al. 2022, the
InstructGPT reward model) on a transformers backbone, with a sequence-classification head or a
value head on a causal LM (``head``).

The loss of a pair is ``-log sigma(r(chosen) - r(rejected))``. With ``num_heads > 1`` the backbone
carries several scalar heads, and each head is trained on its own bootstrap resample of the pairs
(a Poisson(1) weight per pair and head, drawn once from the seed), so the heads' spread measures
how much the data pins the reward down. TRL's ``center_rewards_coefficient`` optionally pulls
rewards toward zero mean (Eisenstein et al. 2023).

Metrics use the ensemble mean: ``accuracy`` (fraction of pairs ranked right), ``margin``
(mean ``r_c - r_r``), ``spread`` (mean std over heads, ensembles only) and, on held-out pairs,
``eval/ece``: the calibration error of ``P(chosen > rejected) = sigma(r_c - r_r)``, each pair
counted in both orders so that the outcomes are not all 1.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Literal

import torch
from pydantic import Field, model_validator
from torch import Tensor

from rl4gen.core.preference import bradley_terry_loss, expected_calibration_error
from rl4gen.data.preferences import PreferencePair, load_preferences
from rl4gen.offline import (
    OfflineConfig,
    OfflineResult,
    OfflineTrainer,
    device,
    load_data,
    mix_seed,
    require_single_process,
    resolve_model_path,
)
from rl4gen.rewards.learned import RewardModel


class RewardModelConfig(OfflineConfig):
    """``rl4gen reward train``: preference pairs (docs/data.md) and a transformers backbone."""

    head: Literal["classification", "value"] = "classification"
    """classification: AutoModelForSequenceClassification (the LM head dropped); value: a linear
    value head on a causal LM's last hidden state (the LM head kept, so the weights still generate)."""
    num_heads: int = Field(1, ge=1)
    """Reward heads on the backbone; more than one makes an ensemble, each head on its own bootstrap resample."""
    center_rewards_coefficient: float | None = Field(None, ge=0)
    """Weight of mean((r_c + r_r)^2) added to the loss to keep rewards centred; null = off."""

    @model_validator(mode="after")
    def _no_lora(self) -> RewardModelConfig:
        if self.model.lora is not None:
            raise ValueError("model.lora is not supported by reward training yet: remove it to train all weights")
        return self


class PairScorer:
    """The Bradley–Terry loss over micro-batches of encoded pairs, and held-out evaluation."""

    def __init__(self, config: RewardModelConfig, rm: RewardModel, pairs: Sequence[PreferencePair], bootstrap: bool) -> None:
        self.config = config
        self.rm = rm
        self.chosen = rm.encode([p.prompt for p in pairs], [p.chosen for p in pairs])
        self.rejected = rm.encode([p.prompt for p in pairs], [p.rejected for p in pairs])
        n, h = len(pairs), rm.num_heads
        if bootstrap and h > 1:
            gen = torch.Generator().manual_seed(mix_seed(config.seed, 11))
            self.weights = torch.poisson(torch.ones(n, h), generator=gen)  # (N, H)
        else:
            self.weights = torch.ones(n, h)

    def __len__(self) -> int:
        return len(self.chosen)

    def rewards(self, idx: Sequence[int]) -> tuple[Tensor, Tensor]:  # (B, H) each
        examples = [self.chosen[i] for i in idx] + [self.rejected[i] for i in idx]
        out = self.rm.forward(examples)  # (2B, H)
        return out[: len(idx)], out[len(idx) :]

    def loss(self, idx: list[int], step: list[int]) -> tuple[Tensor, dict[str, float]]:
        """Weighted BT loss of ``idx`` divided by the whole step's weight, and metric contributions."""
        rc, rr = self.rewards(idx)
        w = self.weights[idx].to(rc.device)  # (B, H)
        step_weight = float(self.weights[step].sum().clamp(min=1.0))
        loss = (w * bradley_terry_loss(rc, rr)).sum() / step_weight
        if self.config.center_rewards_coefficient is not None:
            centre = ((rc + rr) ** 2).mean(dim=1).sum() / len(step)
            loss = loss + self.config.center_rewards_coefficient * centre
        return loss, self._metrics(rc.detach(), rr.detach(), len(step))

    def _metrics(self, rc: Tensor, rr: Tensor, denominator: int) -> dict[str, float]:
        mean_c, mean_r = rc.mean(dim=1), rr.mean(dim=1)  # ensemble means (B,)
        metrics = {
            "accuracy": float((mean_c > mean_r).float().sum()) / denominator,
            "margin": float((mean_c - mean_r).sum()) / denominator,
            "rewards/chosen": float(mean_c.sum()) / denominator,
            "rewards/rejected": float(mean_r.sum()) / denominator,
        }
        if rc.shape[1] > 1:
            spread = (rc.std(dim=1) + rr.std(dim=1)) / 2
            metrics["spread"] = float(spread.sum()) / denominator
        return metrics

    def evaluate(self) -> dict[str, float]:
        """Accuracy, margin, unweighted loss, spread and calibration over all pairs."""
        everything = list(range(len(self)))
        step = self.config.per_device_eval_batch_size
        chosen, rejected = [], []
        for start in range(0, len(everything), step):
            rc, rr = self.rewards(everything[start : start + step])
            chosen.append(rc.cpu())
            rejected.append(rr.cpu())
        rc, rr = torch.cat(chosen), torch.cat(rejected)
        metrics = self._metrics(rc, rr, len(self))
        metrics["loss"] = float(bradley_terry_loss(rc, rr).mean())
        p = torch.sigmoid(rc.mean(dim=1) - rr.mean(dim=1))  # P(chosen preferred), (N,)
        probs = torch.cat([p, 1 - p])
        outcomes = torch.cat([torch.ones_like(p), torch.zeros_like(p)])
        metrics["ece"] = float(expected_calibration_error(probs, outcomes))
        return metrics


def train_reward_model(
    config: RewardModelConfig, *, show_progress: bool = True, log: Callable[[str], None] = print
) -> OfflineResult:
    """Run ``rl4gen reward train``: load pairs and backbone, train the heads and body, save."""
    from accelerate.utils import set_seed

    require_single_process("reward train")
    train, held_out, info = load_data(load_preferences, config, log)
    set_seed(config.seed)  # fresh heads start the same for the same seed
    rm = RewardModel.from_backbone(
        resolve_model_path(config, log),
        config.num_heads,
        head=config.head,
        append_eos=config.append_eos,
        max_length=config.max_length,
    )
    rm.model.to(device()).eval()  # no dropout, as for the policies
    scorer = PairScorer(config, rm, train, bootstrap=True)
    eval_scorer = PairScorer(config, rm, held_out, bootstrap=False) if held_out else None
    trainer = OfflineTrainer(
        config,
        "reward",
        rm,
        len(scorer),
        scorer.loss,
        evaluate=eval_scorer.evaluate if eval_scorer is not None else None,
        info=info,
        show_progress=show_progress,
        log=log,
    )
    return trainer.train()
