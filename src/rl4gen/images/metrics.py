"""Image metrics on the locally trained classifier: accuracy against the requested digit, a
Fréchet distance on its 64 penultimate features (an FID analogue), class coverage and
within-class diversity (mode collapse shows in both).

The Fréchet distance between Gaussians fitted to two feature sets,
``|mu_a - mu_b|^2 + tr(S_a + S_b - 2 (S_a^1/2 S_b S_a^1/2)^1/2)``, is biased upward for small
sample counts: compare numbers computed with the same number of samples only.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor


def _sqrt_psd(matrix: np.ndarray) -> np.ndarray:
    w, v = np.linalg.eigh((matrix + matrix.T) / 2)
    return (v * np.sqrt(np.clip(w, 0, None))) @ v.T


def frechet_distance(features_a: Tensor | np.ndarray, features_b: Tensor | np.ndarray) -> float:
    """Fréchet distance between Gaussians fitted to two ``(N, D)`` feature sets (N >= 2 each)."""
    a = np.asarray(features_a, dtype=np.float64)
    b = np.asarray(features_b, dtype=np.float64)
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1] or len(a) < 2 or len(b) < 2:
        raise ValueError(f"frechet_distance needs two (N>=2, D) feature sets, got {a.shape} and {b.shape}.")
    mu_a, mu_b = a.mean(0), b.mean(0)
    cov_a, cov_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    root_a = _sqrt_psd(cov_a)
    cross = np.linalg.eigvalsh(root_a @ cov_b @ root_a)
    trace_sqrt = np.sqrt(np.clip(cross, 0, None)).sum()
    value = float(((mu_a - mu_b) ** 2).sum() + np.trace(cov_a) + np.trace(cov_b) - 2 * trace_sqrt)
    return max(value, 0.0)


def class_coverage(predicted: Tensor, num_classes: int = 10, min_share: float = 0.02) -> int:
    """How many classes get at least ``min_share`` of the predicted labels (at least one)."""
    counts = torch.bincount(predicted.flatten().long(), minlength=num_classes).float()
    needed = max(1.0, min_share * len(predicted))
    return int((counts >= needed).sum().item())


def within_class_diversity(features: Tensor, labels: Tensor, num_classes: int = 10) -> float:
    """Mean pairwise Euclidean feature distance within each class, averaged over the classes with
    at least two members (0.0 when none has): collapse inside a class drives it to 0."""
    values = []
    for c in range(num_classes):
        group = features[labels == c].double()
        if len(group) < 2:
            continue
        dist = torch.cdist(group, group)
        n = len(group)
        values.append((dist.sum() / (n * (n - 1))).item())
    return float(np.mean(values)) if values else 0.0


def image_report(
    images: Tensor,
    requested: Tensor | None = None,
    reference: Tensor | None = None,
    classifier: Any = None,
) -> dict[str, float]:
    """Metrics of generated ``images`` ``(N, 1, H, W)``:

    ``accuracy`` and ``p_requested`` (when ``requested`` labels are given), ``confidence``
    (mean max class probability), ``frechet`` (against ``reference`` images, when given),
    ``coverage`` (classes with >= 2% of the samples), ``diversity`` (within predicted class).
    """
    from rl4gen.images.classifier import load_digit_classifier

    classifier = classifier or load_digit_classifier()
    probs = classifier.probs(images)
    feats = classifier.embed(images)
    predicted = probs.argmax(-1)
    out: dict[str, float] = {
        "confidence": probs.max(-1).values.mean().item(),
        "coverage": float(class_coverage(predicted)),
        "diversity": within_class_diversity(feats, predicted),
    }
    if requested is not None:
        requested = requested.long().to(predicted.device)
        out["accuracy"] = (predicted == requested).float().mean().item()
        out["p_requested"] = probs.gather(1, requested[:, None]).mean().item()
    if reference is not None:
        out["frechet"] = frechet_distance(feats.numpy(), classifier.embed(reference).numpy())
    return out
