"""Images: scikit-learn's digits, a locally trained digits classifier (the small-scale analogue
of CLIP and Inception for rewards and metrics), image metrics and PNG grids.

Shared by the diffusion task, the GAN and latent-policy tasks. Images are float tensors
``(N, 1, H, W)`` in ``[-1, 1]`` (ink = +1) throughout.
"""

from rl4gen.images.classifier import DigitClassifier, load_digit_classifier
from rl4gen.images.digits import DigitsSplit, load_digits
from rl4gen.images.io import load_png, save_grid, save_png
from rl4gen.images.metrics import (
    class_coverage,
    frechet_distance,
    image_report,
    within_class_diversity,
)

__all__ = [
    "DigitClassifier",
    "DigitsSplit",
    "class_coverage",
    "frechet_distance",
    "image_report",
    "load_digit_classifier",
    "load_digits",
    "load_png",
    "save_grid",
    "save_png",
    "within_class_diversity",
]
