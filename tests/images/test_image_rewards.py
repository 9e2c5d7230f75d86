"""Image rewards (alignment, styles, compressibility) and the learned image reward model."""

from __future__ import annotations

import json

import pytest
import torch

from rl4gen.config import ConfigError
from rl4gen.data.preferences import DataError
from rl4gen.images import load_digits
from rl4gen.images.reward_model import (
    load_image_votes,
    synthetic_style_votes,
    train_image_reward_model,
)
from rl4gen.images.styles import contrast, stroke_weight, symmetry
from rl4gen.rewards import build_reward


def _contexts(labels: torch.Tensor) -> list[dict[str, int]]:
    return [{"label": int(x)} for x in labels]


def test_alignment_prefers_the_requested_digit() -> None:
    test = load_digits("test")
    reward = build_reward("digit_alignment")
    right = torch.tensor(reward(test.images[:50], _contexts(test.labels[:50])))
    wrong = torch.tensor(reward(test.images[:50], _contexts((test.labels[:50] + 1) % 10)))
    assert right.mean() > 0.9 and wrong.mean() < 0.1
    logged = build_reward("digit_alignment", log=True)(test.images[:5], _contexts((test.labels[:5] + 1) % 10))
    assert min(logged) >= torch.log(torch.tensor(1e-4)).item() - 1e-6
    with pytest.raises(ValueError, match="no 'label'"):
        reward(test.images[:1], [{}])


def test_realism_ranks_scans_above_noise_and_blur() -> None:
    test = load_digits("test", 8)
    reward = build_reward("digit_realism")
    scans = torch.tensor(reward(test.images[:100], [{}] * 100))  # needs no label
    noise = torch.tensor(reward(torch.rand(100, 1, 8, 8, generator=torch.Generator().manual_seed(0)) * 2 - 1, [{}] * 100))
    blurred = torch.tensor(reward(torch.nn.functional.avg_pool2d(test.images[:100], 3, 1, 1), [{}] * 100))
    assert scans.mean() > noise.mean() + 0.3 and scans.mean() > blurred.mean() + 0.3
    assert torch.all(scans <= 0)
    floored = build_reward("digit_realism", floor=-0.5)(torch.rand(10, 1, 8, 8) * 2 - 1, [{}] * 10)
    assert min(floored) >= -0.5


def test_style_measures_by_hand() -> None:
    blank = -torch.ones(1, 1, 4, 4)
    half = blank.clone()
    half[..., :2] = 1.0  # left half inked: mirror image differs everywhere
    assert stroke_weight(blank).item() == 0.0 and stroke_weight(half).item() == 0.5
    assert symmetry(blank).item() == 1.0 and symmetry(half).item() == 0.0
    assert contrast(half).item() == 1.0 and contrast(torch.zeros(1, 1, 4, 4)).item() == 0.0
    reward = build_reward("image_style", style="stroke_weight", target=0.25)
    assert reward(torch.cat([blank, half]), [{}, {}]) == pytest.approx([-0.25, -0.25])
    assert reward.name == "stroke_weight"
    with pytest.raises(ConfigError, match="unknown image style 'bold'"):
        build_reward("image_style", style="bold")


def test_compressibility_ranks_blank_above_noise() -> None:
    blank = -torch.ones(1, 1, 16, 16)
    noise = torch.rand(1, 1, 16, 16, generator=torch.Generator().manual_seed(0)) * 2 - 1
    for fmt in ("png", "jpeg"):
        values = build_reward("compressibility", format=fmt)(torch.cat([blank, noise]), [{}, {}])
        assert values[0] > values[1]
    with pytest.raises(ConfigError, match="'png' or 'jpeg'"):
        build_reward("compressibility", format="gif")


def test_image_reward_model_learns_the_judges_preference(tmp_path) -> None:
    votes = synthetic_style_votes(tmp_path / "votes.jsonl", style="stroke_weight", n=200)
    loaded = load_image_votes(votes)
    assert len(loaded) == 200 and loaded.chosen.shape == (200, 1, 16, 16)
    assert (stroke_weight(loaded.chosen) > stroke_weight(loaded.rejected)).all()
    metrics = train_image_reward_model(votes, tmp_path / "rm", steps=120, log=lambda m: None)
    assert metrics["eval/accuracy"] >= 0.85
    reward = build_reward("image_reward_model", path=str(tmp_path / "rm"))
    test = load_digits("test")
    scores = torch.tensor(reward(test.images, [{}] * len(test)))
    weights = stroke_weight(test.images)
    assert torch.corrcoef(torch.stack([scores, weights]))[0, 1] > 0.7  # it ranks unseen digits by weight


def test_image_votes_name_the_bad_line(tmp_path) -> None:
    votes = synthetic_style_votes(tmp_path / "votes.jsonl", n=3)
    lines = votes.read_text().splitlines()
    broken = json.loads(lines[1])
    broken["chosen"] = "missing.png"
    lines[1] = json.dumps(broken)
    votes.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError, match=r"votes.jsonl:2: field 'chosen' names .*missing.png"):
        load_image_votes(votes)
    with pytest.raises(ConfigError, match="not an image reward model folder"):
        build_reward("image_reward_model", path=str(tmp_path))


def test_restoration_fidelity_scores_the_hidden_pixels_only() -> None:
    reward = build_reward("restoration_fidelity")
    target = torch.full((1, 8, 8), -1.0)
    mask = torch.ones(1, 8, 8)
    mask[:, :4] = 0.0  # the top half is hidden: 32 pixels
    context = {"target": target, "known_mask": mask}
    perfect, wrong_visible, wrong_hidden = target.clone(), target.clone(), target.clone()
    wrong_visible[:, 4:] = 1.0  # errors where the pixels are known do not count
    wrong_hidden[:, :2] = 1.0  # 16 of the 32 hidden pixels off by 2: mean error 2.0
    scores = reward([perfect, wrong_visible, wrong_hidden], [context] * 3)
    assert scores == [0.0, 0.0, -2.0]
    with pytest.raises(ValueError, match="restoration_fidelity.*'target'"):
        reward([perfect], [{"label": 3}])
