"""Image grids as PNG files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from torch import Tensor


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
    ink = ((1 - (images.detach().float().clamp(-1, 1).cpu().numpy() + 1) / 2) * 255).round().astype(np.uint8)
    for i in range(n):
        r, c = divmod(i, nrow)
        tile = np.kron(ink[i, 0], np.ones((scale, scale), dtype=np.uint8))
        y, x = pad + r * cell_h, pad + c * cell_w
        canvas[y : y + h * scale, x : x + w * scale] = tile
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(canvas, mode="L").save(path)
    return path
