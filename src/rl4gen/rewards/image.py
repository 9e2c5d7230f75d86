"""Image rewards. Samples are images in ``[-1, 1]`` (ink = +1): a ``(N, 1, H, W)`` tensor or a
sequence of ``(1, H, W)`` tensors; contexts are mappings, with ``"label"`` the requested digit
where a reward needs one.

- ``digit_alignment``: prompt alignment, p(requested digit | image) under the locally trained
  classifier (or its log), the small-scale analogue of a CLIP score.
- ``digit_realism``: how much an image looks like a real scan to the classifier: minus the squared
  Mahalanobis distance of its features to a Gaussian fitted on the training scans' features, per
  feature (a per-image analogue of the Fréchet distance; about -1 for a real digit).
- ``restoration_fidelity``: minus the mean squared error of a restoration's hidden pixels against
  the true image (contexts with ``"target"`` and ``"known_mask"``, as the digits inpainting task
  gives on its training split).
- ``image_style``: a measurable style (``stroke_weight``, ``symmetry``, ``contrast``; see
  :mod:`rl4gen.images.styles`), either the measure itself or ``-|measure - target|``. Mix it with
  ``digit_alignment`` so the digit stays legible.
- ``compressibility``: minus the image's encoded size in kB (PNG or JPEG), DDPO's classic
  reward-hacking-prone objective.
- ``image_reward_model``: a Bradley–Terry model trained from image votes
  (:mod:`rl4gen.images.reward_model`), loaded by path.
"""

from __future__ import annotations

import functools
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


@functools.lru_cache(maxsize=1)
def _scan_feature_gaussian() -> tuple[Tensor, Tensor]:
    """Mean ``(64,)`` and precision ``(64, 64)`` of the classifier's features of the training scans
    (covariance shrunk by 1e-3 of its mean variance so that it inverts)."""
    from rl4gen.images.classifier import load_digit_classifier
    from rl4gen.images.digits import load_digits

    feats = load_digit_classifier().embed(load_digits("train", 8).images).double()
    mean = feats.mean(0)
    cov = torch.cov(feats.T)
    cov += 1e-3 * cov.diagonal().mean() * torch.eye(len(cov), dtype=cov.dtype)
    return mean.float(), torch.linalg.inv(cov).float()


@register_reward("digit_realism")
class DigitRealismReward:
    """Realism: ``-d^2 / 64`` with ``d`` the Mahalanobis distance of the image's classifier
    features to the training scans' feature Gaussian (about -1 for a real digit, lower for blurry
    or implausible strokes), floored at ``floor`` so one broken sample cannot dominate a batch.
    Needs no label, so it also scores unconditional samples and restorations."""

    def __init__(self, floor: float = -20.0) -> None:
        self.name = "digit_realism"
        self.floor = floor

    def __call__(self, samples: Sequence[Any], contexts: Sequence[Any], **info: Any) -> list[float]:
        from rl4gen.images.classifier import load_digit_classifier

        mean, precision = _scan_feature_gaussian()
        centred = load_digit_classifier().embed(as_image_batch(samples)) - mean
        distance = ((centred @ precision) * centred).sum(1) / len(mean)
        return (-distance).clamp_min(self.floor).tolist()


@register_reward("restoration_fidelity")
class RestorationFidelityReward:
    """Restoration: ``-mean((image - target)^2)`` over the hidden pixels (``1 - known_mask``), in
    ``[-1, 1]`` pixel units (0 for a perfect fill, -4 at worst); the pixel-level counterpart of
    ``digit_alignment``'s agreement with the true digit."""

    def __init__(self) -> None:
        self.name = "restoration_fidelity"

    def __call__(self, samples: Sequence[Any], contexts: Sequence[Any], **info: Any) -> list[float]:
        images = as_image_batch(samples)
        targets, hidden = [], []
        for i, c in enumerate(contexts):
            if not isinstance(c, Mapping) or "target" not in c or "known_mask" not in c:
                raise ValueError(
                    f"reward 'restoration_fidelity' needs the true image: context {i} lacks 'target' or "
                    "'known_mask' (use it with the digits task's inpaint mode)."
                )
            targets.append(torch.as_tensor(c["target"], dtype=torch.float32).reshape(images.shape[1:]))
            hidden.append(1 - torch.as_tensor(c["known_mask"], dtype=torch.float32).reshape(images.shape[1:]))
        target, hole = torch.stack(targets), torch.stack(hidden)
        error = ((images - target) ** 2 * hole).flatten(1).sum(1) / hole.flatten(1).sum(1).clamp(min=1.0)
        return (-error).tolist()


@register_reward("image_style")
class ImageStyleReward:
    """A style measure in ``[0, 1]``; with ``target``, ``-|measure - target|`` (highest at the
    target). Named after the style, so each is logged as ``rewards/{style}/mean``."""

    def __init__(self, style: str, target: float | None = None) -> None:
        from rl4gen.images.styles import STYLES

        if style not in STYLES:
            raise ValueError(f"unknown image style {style!r}: use one of {', '.join(STYLES)}.")
        if target is not None and not 0.0 <= target <= 1.0:
            raise ValueError(f"image style target must lie in [0, 1] (styles are fractions), got {target}.")
        self.name = style
        self.measure = STYLES[style]
        self.target = target

    def __call__(self, samples: Sequence[Any], contexts: Sequence[Any], **info: Any) -> list[float]:
        values = self.measure(as_image_batch(samples))
        if self.target is not None:
            values = -(values - self.target).abs()
        return values.tolist()


@register_reward("compressibility")
class CompressibilityReward:
    """Minus the encoded size in kB (``format`` ``png`` or ``jpeg``): smaller files score higher."""

    def __init__(self, format: str = "png", quality: int = 95) -> None:
        if format not in ("png", "jpeg"):
            raise ValueError(f"compressibility format must be 'png' or 'jpeg', got {format!r}.")
        self.name = "compressibility"
        self.format = format
        self.quality = quality

    def __call__(self, samples: Sequence[Any], contexts: Sequence[Any], **info: Any) -> list[float]:
        from rl4gen.images.styles import encoded_bytes

        return [-size / 1000 for size in encoded_bytes(as_image_batch(samples), self.format, self.quality)]


@register_reward("image_reward_model")
class ImageRewardModelReward:
    """The score of a learned image reward model (a folder written by
    :func:`rl4gen.images.reward_model.train_image_reward_model`)."""

    def __init__(self, path: str) -> None:
        from rl4gen.images.reward_model import load_image_reward_model

        self.name = "image_reward_model"
        self.model = load_image_reward_model(path)

    def __call__(self, samples: Sequence[Any], contexts: Sequence[Any], **info: Any) -> list[float]:
        with torch.no_grad():
            return self.model(as_image_batch(samples))[:, 0].tolist()


__all__ = [
    "CompressibilityReward",
    "DigitAlignmentReward",
    "ImageRewardModelReward",
    "ImageStyleReward",
    "as_image_batch",
    "requested_labels",
]
