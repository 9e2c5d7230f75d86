"""Measurable image styles, each a number in ``[0, 1]`` per image (images in ``[-1, 1]``, ink = +1).

- ``stroke_weight``: mean ink, ``mean((x + 1) / 2)``: thin strokes are low, bold strokes high
  (the digits' training images average about 0.3 at 16x16).
- ``symmetry``: left-right mirror symmetry, ``1 - mean|x - flip(x)| / 2``.
- ``contrast``: how far pixels sit from mid-grey, ``mean|x|``: crisp black-and-white is 1.
"""

from __future__ import annotations

import io
from collections.abc import Callable

from torch import Tensor


def stroke_weight(images: Tensor) -> Tensor:
    return ((images + 1) / 2).mean(dim=(1, 2, 3))


def symmetry(images: Tensor) -> Tensor:
    return 1 - (images - images.flip(-1)).abs().mean(dim=(1, 2, 3)) / 2


def contrast(images: Tensor) -> Tensor:
    return images.abs().mean(dim=(1, 2, 3))


STYLES: dict[str, Callable[[Tensor], Tensor]] = {
    "stroke_weight": stroke_weight,
    "symmetry": symmetry,
    "contrast": contrast,
}


def encoded_bytes(images: Tensor, fmt: str = "png", quality: int = 95) -> list[int]:
    """The size in bytes of each image written as a PNG (lossless) or a JPEG at ``quality``."""
    from PIL import Image

    from rl4gen.images.io import to_uint8

    sizes = []
    for pixels in to_uint8(images):
        buffer = io.BytesIO()
        if fmt == "png":
            Image.fromarray(pixels, mode="L").save(buffer, format="PNG", optimize=True)
        else:
            Image.fromarray(pixels, mode="L").save(buffer, format="JPEG", quality=quality)
        sizes.append(buffer.tell())
    return sizes
