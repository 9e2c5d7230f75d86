"""Digits data, the local classifier, image metrics and PNG grids."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from rl4gen.config import ConfigError
from rl4gen.images import (
    class_coverage,
    frechet_distance,
    image_report,
    load_digit_classifier,
    load_digits,
    save_grid,
    within_class_diversity,
)


def test_digits_split_is_fixed_stratified_and_disjoint() -> None:
    train, test = load_digits("train", 8), load_digits("test", 8)
    assert (len(train), len(test)) == (1437, 360)
    assert torch.bincount(test.labels).tolist() == [36] * 10
    assert train.images.min() >= -1 and train.images.max() <= 1
    # No held-out image appears in the training split (compare exact pixels).
    train_rows = {tuple(x.flatten().tolist()) for x in train.images}
    assert sum(tuple(x.flatten().tolist()) in train_rows for x in test.images) < 5  # a few digits repeat in the data
    assert load_digits("test", 16).images.shape == (360, 1, 16, 16)


def test_digits_bad_arguments_are_named() -> None:
    with pytest.raises(ConfigError, match="split must be"):
        load_digits("validation")
    with pytest.raises(ConfigError, match="image size must be one of"):
        load_digits("train", 12)


def test_frechet_distance_matches_closed_form() -> None:
    rng = np.random.default_rng(0)
    a = rng.normal(size=(20000, 3))
    b = rng.normal(size=(20000, 3)) * 2 + np.array([1.0, 0.0, 0.0])
    # N(0, I) vs N(m, 4I): |m|^2 + tr(I + 4I - 2*2I) = 1 + 3
    assert frechet_distance(a, b) == pytest.approx(4.0, rel=0.03)
    assert frechet_distance(a, a) == pytest.approx(0.0, abs=1e-6)
    with pytest.raises(ValueError, match="feature sets"):
        frechet_distance(a[:, :2], b)


def test_coverage_and_diversity_see_collapse() -> None:
    assert class_coverage(torch.arange(10).repeat(10)) == 10
    assert class_coverage(torch.tensor([3] * 99 + [4])) == 1  # one stray sample is not coverage
    feats = torch.randn(100, 4)
    labels = torch.arange(10).repeat(10)
    assert within_class_diversity(feats, labels) > 1.0
    assert within_class_diversity(torch.zeros(100, 4), labels) == 0.0


def test_classifier_is_accurate_and_metrics_separate_real_from_noise() -> None:
    classifier = load_digit_classifier()
    train, test = load_digits("train"), load_digits("test")
    real = image_report(test.images, test.labels, train.images, classifier=classifier)
    assert real["accuracy"] > 0.95 and real["coverage"] == 10
    noise = torch.rand(360, 1, 16, 16, generator=torch.Generator().manual_seed(0)) * 2 - 1
    fake = image_report(noise, test.labels, train.images, classifier=classifier)
    assert fake["accuracy"] < 0.3
    assert fake["frechet"] > 10 * real["frechet"]
    # The classifier reads 8x8 images too (resized to 16x16 inside).
    assert image_report(load_digits("test", 8).images, test.labels, classifier=classifier)["accuracy"] > 0.9


def test_save_grid_writes_a_png(tmp_path) -> None:
    from PIL import Image

    path = save_grid(load_digits("test", 8).images[:25], tmp_path / "grid.png", nrow=5, scale=2)
    with Image.open(path) as img:
        assert img.format == "PNG" and img.size == (5 * 17 + 1, 5 * 17 + 1)
    with pytest.raises(ValueError, match=r"\(N, 1, H, W\)"):
        save_grid(torch.zeros(3, 8, 8), tmp_path / "bad.png")
