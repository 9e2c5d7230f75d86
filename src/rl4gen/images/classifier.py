"""A small CNN digits classifier, trained locally and cached: the reward for prompt alignment
(p(requested digit | image), the small-scale analogue of a CLIP score) and the feature network
of the Fréchet distance (the analogue of Inception features in FID).

It reads images of any size (resized to 16x16) in ``[-1, 1]``. Training uses random one-pixel
shifts and light Gaussian pixel noise so that it stays calibrated on generated samples, which are
rarely as clean as the scans.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rl4gen.images.digits import load_digits, resize
from rl4gen.tasks.base import cached_build, cached_path

INPUT_SIZE = 16
FEATURES = 64


class DigitClassifier(nn.Module):
    """conv(32) conv(32) pool conv(64) pool -> 64 features -> 10 logits (``outputs`` of them:
    the image reward model uses the same network with one output)."""

    def __init__(self, width: int = 32, features: int = FEATURES, outputs: int = 10) -> None:
        super().__init__()
        self.width = width
        self.num_features = features
        self.body = nn.Sequential(
            nn.Conv2d(1, width, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(width, width, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(width, 2 * width, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Flatten(),
            nn.Linear(2 * width * (INPUT_SIZE // 4) ** 2, features),
            nn.ReLU(),
        )
        self.head = nn.Linear(features, outputs)

    def features(self, images: Tensor) -> Tensor:
        """Penultimate activations ``(N, 64)``: the Fréchet distance's feature space."""
        return self.body(resize(images.clamp(-1, 1), INPUT_SIZE))

    def forward(self, images: Tensor) -> Tensor:
        """Class logits ``(N, 10)``."""
        return self.head(self.features(images))

    @torch.no_grad()
    def probs(self, images: Tensor, batch_size: int = 1024) -> Tensor:
        """Class probabilities ``(N, 10)``, without gradients."""
        return torch.cat([self(chunk).softmax(-1) for chunk in images.split(batch_size)])

    @torch.no_grad()
    def embed(self, images: Tensor, batch_size: int = 1024) -> Tensor:
        """Features ``(N, 64)``, without gradients."""
        return torch.cat([self.features(chunk) for chunk in images.split(batch_size)])


def _shift(images: Tensor, generator: torch.Generator) -> Tensor:
    """Shift each image by -1, 0 or +1 pixel in each direction (zero = background padding)."""
    n = len(images)
    padded = F.pad(images, (1, 1, 1, 1), value=-1.0)
    dx = torch.randint(0, 3, (n,), generator=generator)
    dy = torch.randint(0, 3, (n,), generator=generator)
    h, w = images.shape[-2:]
    return torch.stack([padded[i, :, dy[i] : dy[i] + h, dx[i] : dx[i] + w] for i in range(n)])


def train_digit_classifier(
    steps: int = 900, batch_size: int = 64, lr: float = 2e-3, seed: int = 0, log: Callable[[str], None] = print
) -> tuple[DigitClassifier, dict[str, Any]]:
    """Train the classifier on the training split; report held-out accuracy."""
    generator = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    train = load_digits("train", INPUT_SIZE)
    test = load_digits("test", INPUT_SIZE)
    model = DigitClassifier()
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, steps)
    model.train()
    for step in range(steps):
        idx = torch.randint(0, len(train), (batch_size,), generator=generator)
        x = _shift(train.images[idx], generator)
        x = (x + 0.1 * torch.randn(x.shape, generator=generator)).clamp(-1, 1)
        loss = F.cross_entropy(model(x), train.labels[idx])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
        if (step + 1) % 300 == 0:
            log(f"digit classifier step {step + 1}/{steps}: loss {loss.item():.3f}")
    model.eval()
    accuracy = (model.probs(test.images).argmax(-1) == test.labels).float().mean().item()
    log(f"digit classifier: held-out accuracy {accuracy:.1%} on {len(test)} images")
    return model, {"held_out_accuracy": accuracy, "steps": steps}


def _settings() -> dict[str, Any]:
    return {"kind": "digit-classifier", "version": 1, "width": 32, "features": FEATURES, "steps": 900, "seed": 0}


def classifier_dir(log: Callable[[str], None] = print) -> Path:
    """The cached classifier folder (``model.safetensors``, ``config.json``), trained when absent."""
    from safetensors.torch import save_file

    def build(out: Path) -> dict[str, Any]:
        model, summary = train_digit_classifier(log=log)
        save_file(model.state_dict(), str(out / "model.safetensors"))
        (out / "config.json").write_text(json.dumps({"width": model.width, "features": model.num_features}))
        return summary

    return cached_build(cached_path("digit-classifier", _settings()), _settings(), build)


def load_classifier_from(path: str | Path) -> DigitClassifier:
    """A classifier saved by :func:`classifier_dir` (or any folder with the same two files)."""
    from safetensors.torch import load_file

    path = Path(path)
    cfg = json.loads((path / "config.json").read_text())
    model = DigitClassifier(width=cfg["width"], features=cfg["features"])
    model.load_state_dict(load_file(str(path / "model.safetensors")))
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


@functools.lru_cache(maxsize=1)
def load_digit_classifier() -> DigitClassifier:
    """The locally trained digits classifier (trained once, ~20 s on a CPU core, then cached)."""
    return load_classifier_from(classifier_dir())
