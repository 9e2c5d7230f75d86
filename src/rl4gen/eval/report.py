"""Run reports: curves as PNG and a short markdown summary written into the run folder."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rl4gen.tracking import read_metrics


def _series(records: list[dict[str, Any]], key: str) -> tuple[list[int], list[float]]:
    xs, ys = [], []
    for r in records:
        if r.get(key) is not None:
            xs.append(int(r["step"]))
            ys.append(float(r[key]))
    return xs, ys


def plot_curves(run_dir: Path, keys: Sequence[str], out: Path, title: str | None = None) -> Path:
    """One panel per metric key (those present), step on the x axis, saved as PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    records = read_metrics(run_dir)
    present = [k for k in keys if _series(records, k)[0]]
    fig, axes = plt.subplots(1, max(1, len(present)), figsize=(4.2 * max(1, len(present)), 3.2), squeeze=False)
    for ax, key in zip(axes[0], present):
        xs, ys = _series(records, key)
        ax.plot(xs, ys, marker="o" if len(xs) < 15 else None, markersize=3)
        ax.set_title(key)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def plot_side_by_side(runs: dict[str, Path], keys: Sequence[str], out: Path, title: str | None = None) -> Path:
    """Several runs on shared axes, one panel per metric key."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(keys), figsize=(4.5 * len(keys), 3.4), squeeze=False)
    for ax, key in zip(axes[0], keys):
        for label, run_dir in runs.items():
            xs, ys = _series(read_metrics(run_dir), key)
            if xs:
                ax.plot(xs, ys, label=label)
        ax.set_title(key)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def write_report(
    run_dir: Path,
    summary: dict[str, Any],
    samples: dict[str, list[dict[str, Any]]] | None = None,
    curves: Path | None = None,
) -> None:
    """Write ``summary.json`` and ``report.md`` into ``run_dir``, with ``curves`` (a PNG) or, by
    default, ``reward_curve.png`` plotted from the run's own metrics."""
    run_dir = Path(run_dir)
    (run_dir / "summary.json").write_text(json.dumps(summary, indent=2, default=str))
    if curves is None:
        keys = ["reward", "kl", "entropy", "completions/mean_length"]
        keys += sorted({k for r in read_metrics(run_dir) for k in r if k.startswith("eval/")})
        curves = plot_curves(run_dir, keys, run_dir / "reward_curve.png", title=run_dir.name)
    lines = [f"# {run_dir.name}", "", f"![curves]({Path(curves).name})", "", "## Summary", ""]
    lines += [f"- **{k}**: {v}" for k, v in summary.items() if not isinstance(v, (dict, list))]
    for k, v in summary.items():
        if isinstance(v, dict):
            lines.append(f"- **{k}**: " + ", ".join(f"{kk} = {vv}" for kk, vv in v.items()))
    if samples:
        for label, rows in samples.items():
            lines += ["", f"## Samples: {label}", "", "| prompt | completion | expected |", "|---|---|---|"]
            for row in rows:
                cells = [str(row.get(c, "")).replace("|", "\\|").replace("\n", "⏎") for c in ("prompt", "completion", "expected")]
                lines.append("| " + " | ".join(f"`{c}`" if c else "" for c in cells) + " |")
    (run_dir / "report.md").write_text("\n".join(lines) + "\n")
