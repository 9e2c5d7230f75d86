"""Image rewards. Samples are images in ``[-1, 1]`` (ink = +1): a ``(N, 1, H, W)`` tensor or a
sequence of ``(1, H, W)`` tensors; contexts are mappings, with ``"label"`` the requested digit
where a reward needs one.

- ``digit_alignment``: prompt alignment, p(requested digit | image) under the locally trained
  classifier (or its log), the small-scale analogue of a CLIP score.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor

from rl4gen.rewards.base import register_reward


def as_image_batch(samples: Sequence[Any] | Tensor) -> Tensor:
    """Image samples as one float ``(N, 1, H, W)`` tensor on the CPU."""
    if isinstance(samples, Tensor):
        batch = samples
    else:
        if len(samples) == 0:
            return torch.zeros(0, 1, 1, 1)
        batch = torch.stack([torch.as_tensor(s) for s in samples])
    if batch.dim() == 3:
        batch = batch.unsqueeze(1)
    if batch.dim() != 4 or batch.shape[1] != 1:
        raise ValueError(f"image rewards need grey images shaped (N, 1, H, W), got {tuple(batch.shape)}.")
    return batch.detach().float().cpu()


def requested_labels(contexts: Sequence[Any], reward: str) -> Tensor:
    """The ``"label"`` of each context, with a clear error when one is missing."""
    labels = []
    for i, context in enumerate(contexts):
        if not isinstance(context, Mapping) or "label" not in context:
            raise ValueError(
                f"reward {reward!r} needs the requested digit: context {i} has no 'label' "
                "(use it with a class-conditional task such as digits)."
            )
        labels.append(int(context["label"]))
    return torch.tensor(labels, dtype=torch.long)


@register_reward("digit_alignment")
class DigitAlignmentReward:
    """p(requested digit | image) under the local digits classifier; ``log=True`` gives
    log p, floored at ``log(1e-4)`` so one hopeless sample cannot dominate a batch."""

    def __init__(self, log: bool = False) -> None:
        self.name = "digit_alignment"
        self.log = log

    def __call__(self, samples: Sequence[Any], contexts: Sequence[Any], **info: Any) -> list[float]:
        from rl4gen.images.classifier import load_digit_classifier

        images = as_image_batch(samples)
        labels = requested_labels(contexts, self.name)
        probs = load_digit_classifier().probs(images).gather(1, labels[:, None]).squeeze(1)
        if self.log:
            return probs.clamp_min(1e-4).log().tolist()
        return probs.tolist()


__all__ = ["DigitAlignmentReward", "as_image_batch", "requested_labels"]
