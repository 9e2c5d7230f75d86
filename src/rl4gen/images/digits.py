"""scikit-learn's handwritten digits (1,797 images, 8x8, 17 grey levels) as training data.

The split is fixed (stratified, seed 0): 1,437 training images, 360 held out. ``size`` 16
upsamples bilinearly, which gives diffusion UNets two levels of downsampling; 8 keeps the
original pixels.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from rl4gen.config import ConfigError

HELD_OUT = 360
SIZES = (8, 16, 32)


@dataclass(frozen=True)
class DigitsSplit:
    """Images ``(N, 1, size, size)`` in ``[-1, 1]`` (ink = +1) and their labels ``(N,)``."""

    images: Tensor
    labels: Tensor

    def __len__(self) -> int:
        return len(self.labels)

    def of_class(self, digit: int) -> Tensor:
        return self.images[self.labels == digit]


def resize(images: Tensor, size: int) -> Tensor:
    """Bilinear resize of ``(N, 1, H, W)`` images to ``size`` x ``size`` (identity when equal)."""
    if images.shape[-1] == size and images.shape[-2] == size:
        return images
    return F.interpolate(images, size=(size, size), mode="bilinear", align_corners=False)


def load_digits(split: str = "train", size: int = 16) -> DigitsSplit:
    """The ``"train"`` or ``"test"`` part of the digits at ``size`` x ``size`` pixels."""
    if split not in ("train", "test"):
        raise ConfigError(f"digits split must be 'train' or 'test', got {split!r}.")
    if size not in SIZES:
        raise ConfigError(f"digits image size must be one of {', '.join(map(str, SIZES))}, got {size}.")
    try:
        from sklearn.datasets import load_digits as sk_load_digits
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise ImportError("the digits need scikit-learn: pip install 'rl4gen[images]'.") from exc

    data = sk_load_digits()
    pixels = torch.tensor(data.images, dtype=torch.float32) / 16.0 * 2 - 1  # 0..16 -> [-1, 1]
    labels = torch.tensor(data.target, dtype=torch.long)
    order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(0))
    # Stratified hold-out: the first HELD_OUT/10 shuffled images of each class.
    per_class = HELD_OUT // 10
    test_idx = torch.cat([order[labels[order] == c][:per_class] for c in range(10)])
    is_test = torch.zeros(len(labels), dtype=torch.bool)
    is_test[test_idx] = True
    keep = is_test if split == "test" else ~is_test
    images = resize(pixels[keep].unsqueeze(1), size)
    return DigitsSplit(images=images.clamp(-1, 1), labels=labels[keep])
