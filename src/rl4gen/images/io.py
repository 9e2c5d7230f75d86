"""Images as files: 8-bit grey pixels (white paper, dark ink), single PNGs and PNG grids."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import Tensor


def to_uint8(images: Tensor) -> np.ndarray:
    """``(N, 1, H, W)`` in ``[-1, 1]`` as ``(N, H, W)`` 8-bit grey, white paper and dark ink."""
    ink = (images.detach().float().clamp(-1, 1).cpu().numpy()[:, 0] + 1) / 2
    return ((1 - ink) * 255).round().astype(np.uint8)


def from_uint8(pixels: np.ndarray) -> Tensor:
    """8-bit grey pixels ``(H, W)`` back to a ``(1, H, W)`` image in ``[-1, 1]``."""
    ink = 1 - torch.as_tensor(np.asarray(pixels), dtype=torch.float32) / 255
    return (ink * 2 - 1).unsqueeze(0)


def save_png(image: Tensor, path: str | Path) -> Path:
    """Write one ``(1, H, W)`` image as a grey PNG at its own resolution."""
    from PIL import Image

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(to_uint8(image.unsqueeze(0))[0], mode="L").save(path)
    return path


def load_png(path: str | Path, size: int | None = None) -> Tensor:
    """A PNG (any mode, converted to grey) as a ``(1, H, W)`` image, resized to ``size`` if given."""
    from PIL import Image

    with Image.open(path) as img:
        grey = img.convert("L")
        if size is not None and grey.size != (size, size):
            grey = grey.resize((size, size), Image.Resampling.BILINEAR)
        return from_uint8(np.array(grey))


def save_grid(images: Tensor, path: str | Path, nrow: int = 10, scale: int = 4, pad: int = 1) -> Path:
    """Write ``(N, 1, H, W)`` images in ``[-1, 1]`` as a PNG grid, ``nrow`` images per row, each
    pixel drawn as ``scale`` x ``scale`` (white background, dark ink), with ``pad`` pixels of grey
    between cells. Returns the path."""
    from PIL import Image

    if images.dim() != 4 or images.shape[1] != 1:
        raise ValueError(f"save_grid needs images shaped (N, 1, H, W), got {tuple(images.shape)}.")
    n, _, h, w = images.shape
    rows = (n + nrow - 1) // nrow
    cell_h, cell_w = h * scale + pad, w * scale + pad
    canvas = np.full((rows * cell_h + pad, nrow * cell_w + pad), 160, dtype=np.uint8)
    ink = to_uint8(images)
    for i in range(n):
        r, c = divmod(i, nrow)
        tile = np.kron(ink[i], np.ones((scale, scale), dtype=np.uint8))
        y, x = pad + r * cell_h, pad + c * cell_w
        canvas[y : y + h * scale, x : x + w * scale] = tile
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(canvas, mode="L").save(path)
    return path
