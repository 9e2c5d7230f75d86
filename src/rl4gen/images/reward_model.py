"""A learned image reward model: the digits classifier's network with one output, trained with
the Bradley–Terry loss on image votes.

Votes use the preference format of text (docs/data.md), one JSON object per line, with ``chosen``
and ``rejected`` naming PNG files (relative to the JSONL file, or absolute) and ``prompt`` naming
what was asked (e.g. the requested digit; the model scores the image alone):

    {"prompt": "3", "chosen": "votes/a.png", "rejected": "votes/b.png"}

The trained model is a folder with ``model.safetensors`` and ``image_reward_model.json`` (settings
and held-out metrics) and loads as the ``image_reward_model`` reward by path.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from rl4gen.core.preference import bradley_terry_loss
from rl4gen.data.preferences import DataError, load_preferences
from rl4gen.images.classifier import DigitClassifier
from rl4gen.images.io import load_png, save_png

SETTINGS_FILE = "image_reward_model.json"


@dataclass
class ImageVotes:
    """Loaded votes: ``chosen[i]`` was preferred over ``rejected[i]``; images ``(N, 1, S, S)``."""

    chosen: Tensor
    rejected: Tensor
    prompts: list[str]

    def __len__(self) -> int:
        return len(self.prompts)


def load_image_votes(path: str | Path, size: int = 16, skip_invalid: bool = False) -> ImageVotes:
    """Read image votes; a missing or unreadable PNG is a DataError naming the file and line."""
    path = Path(path)
    pairs = load_preferences(path, skip_invalid=skip_invalid)
    chosen, rejected, prompts = [], [], []
    for pair in pairs:
        images = []
        for key, name in (("chosen", pair.chosen), ("rejected", pair.rejected)):
            image_path = Path(name) if Path(name).is_absolute() else path.parent / name
            try:
                images.append(load_png(image_path, size))
            except (OSError, ValueError) as exc:
                raise DataError(
                    f"{path}:{pair.line}: field {key!r} names {str(image_path)!r}, which is not a readable image ({exc.__class__.__name__}); "
                    "fix the path (relative to the JSONL file) or remove the line."
                ) from None
        chosen.append(images[0])
        rejected.append(images[1])
        prompts.append(pair.prompt)
    if not prompts:
        raise DataError(f"{path}: no image votes: add lines with 'prompt', 'chosen' and 'rejected'.")
    return ImageVotes(torch.stack(chosen), torch.stack(rejected), prompts)


def write_image_votes(
    path: str | Path, first: Tensor, second: Tensor, prefer_first: Tensor, prompts: list[str]
) -> Path:
    """Write votes as PNGs in ``{stem}_images/`` beside ``path`` plus the JSONL file (written
    last, so a half-written vote set never looks complete)."""
    path = Path(path)
    folder = path.with_name(path.stem + "_images")
    lines = []
    for i in range(len(prompts)):
        a = save_png(first[i], folder / f"{i:05d}a.png").relative_to(path.parent)
        b = save_png(second[i], folder / f"{i:05d}b.png").relative_to(path.parent)
        chosen, rejected = (a, b) if bool(prefer_first[i]) else (b, a)
        lines.append(json.dumps({"prompt": prompts[i], "chosen": str(chosen), "rejected": str(rejected)}))
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text("\n".join(lines) + "\n")
    tmp.replace(path)
    return path


def synthetic_style_votes(
    path: str | Path, style: str = "stroke_weight", n: int = 600, seed: int = 0, size: int = 16
) -> Path:
    """Votes from a rule judge: pairs of training digits of the same class, the one with the
    higher ``style`` measure preferred. Lets a reward model be bootstrapped (and tested) without
    people."""
    from rl4gen.images.digits import load_digits
    from rl4gen.images.styles import STYLES

    if style not in STYLES:
        raise DataError(f"unknown style {style!r}: use one of {', '.join(STYLES)}.")
    data = load_digits("train", size)
    g = torch.Generator().manual_seed(seed)
    first, second, labels = [], [], []
    for _ in range(n):
        digit = int(torch.randint(0, 10, (1,), generator=g))
        pool = data.of_class(digit)
        i, j = torch.randperm(len(pool), generator=g)[:2].tolist()
        first.append(pool[i])
        second.append(pool[j])
        labels.append(str(digit))
    a, b = torch.stack(first), torch.stack(second)
    measure = STYLES[style]
    return write_image_votes(path, a, b, measure(a) > measure(b), labels)


def train_image_reward_model(
    votes: str | Path,
    output_dir: str | Path,
    steps: int = 400,
    batch_size: int = 64,
    lr: float = 1e-3,
    eval_fraction: float = 0.2,
    seed: int = 0,
    size: int = 16,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Bradley–Terry training on ``votes``; returns (and saves) held-out accuracy and margin."""
    from safetensors.torch import save_file

    data = load_image_votes(votes, size)
    if len(data) < 10:
        raise DataError(f"{votes}: {len(data)} votes are too few to train and evaluate on: collect at least 10.")
    g = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(data), generator=g)
    n_eval = max(1, round(eval_fraction * len(data)))
    eval_idx, train_idx = order[:n_eval], order[n_eval:]
    torch.manual_seed(seed)
    model = DigitClassifier(outputs=1)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    model.train()
    for step in range(steps):
        idx = train_idx[torch.randint(0, len(train_idx), (batch_size,), generator=g)]
        loss = bradley_terry_loss(model(data.chosen[idx])[:, 0], model(data.rejected[idx])[:, 0]).mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if (step + 1) % 100 == 0:
            log(f"image reward model step {step + 1}/{steps}: loss {loss.item():.3f}")
    model.eval()
    with torch.no_grad():
        margin = model(data.chosen[eval_idx])[:, 0] - model(data.rejected[eval_idx])[:, 0]
    metrics = {
        "eval/accuracy": (margin > 0).float().mean().item(),
        "eval/margin": margin.mean().item(),
        "train_pairs": len(train_idx),
        "eval_pairs": n_eval,
    }
    log(f"image reward model: held-out accuracy {metrics['eval/accuracy']:.1%} on {n_eval} pairs")
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    save_file(model.state_dict(), str(out / "model.safetensors"))
    settings = {"width": model.width, "features": model.num_features, "size": size, "votes": str(votes), "steps": steps}
    (out / SETTINGS_FILE).write_text(json.dumps({"settings": settings, "metrics": metrics}, indent=2))
    return metrics


def load_image_reward_model(path: str | Path) -> DigitClassifier:
    """A model saved by :func:`train_image_reward_model`."""
    from safetensors.torch import load_file

    path = Path(path)
    if not (path / SETTINGS_FILE).is_file():
        raise DataError(
            f"{str(path)!r} is not an image reward model folder (no {SETTINGS_FILE}): "
            "train one with rl4gen.images.reward_model.train_image_reward_model."
        )
    settings = json.loads((path / SETTINGS_FILE).read_text())["settings"]
    model = DigitClassifier(width=settings["width"], features=settings["features"], outputs=1)
    model.load_state_dict(load_file(str(path / "model.safetensors")))
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model
