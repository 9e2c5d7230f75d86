"""Closing the loop: preferences from the database train a reward model, whose held-out accuracy
is recorded for the dashboard and whose scores order the active comparison queue."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rl4gen.config import ConfigError


def require_feedback_extra() -> None:
    try:
        import sqlalchemy  # noqa: F401
    except ImportError:
        raise ConfigError("the feedback studio needs its extra: pip install 'rl4gen[feedback]'.") from None


def open_session(db_url: str) -> Any:
    require_feedback_extra()
    from rl4gen.feedback.db import make_engine, session_factory

    return session_factory(make_engine(db_url))()


def export_preferences_for_training(db_url: str, out_dir: str | Path) -> tuple[Path, int]:
    """Write the database's preference pairs to ``OUT_DIR/feedback-exports/`` for a training run."""
    from rl4gen.feedback.store import export_jsonl

    path = Path(out_dir) / "feedback-exports" / f"preferences-{time.strftime('%Y%m%d-%H%M%S')}.jsonl"
    with open_session(db_url) as session:
        n = export_jsonl(session, "preferences", path)
    if n == 0:
        path.unlink(missing_ok=True)
        raise ConfigError(
            f"the database {db_url!r} holds no preference pairs yet: raters must compare samples (A or B) first."
        )
    return path, n


def score_samples(session: Any, reward_model_path: str | Path | list[str], batch_size: int = 64) -> int:
    """Store the reward model's (ensemble's) mean and spread on every text sample: the active
    queue then serves the pairs it is least sure about."""
    from sqlalchemy import select

    from rl4gen.feedback.db import Sample
    from rl4gen.rewards.learned import Ensemble

    paths = [str(p) for p in reward_model_path] if isinstance(reward_model_path, list) else [str(reward_model_path)]
    ensemble = Ensemble(paths)
    samples = list(session.scalars(select(Sample).where(Sample.modality == "text")))
    for start in range(0, len(samples), batch_size):
        chunk = samples[start : start + batch_size]
        scored = ensemble.score([s.prompt for s in chunk], [s.completion for s in chunk], batch_size)
        for s, mean, spread in zip(chunk, scored.mean.tolist(), scored.spread.tolist(), strict=True):
            s.rm_mean, s.rm_std = float(mean), float(spread)
    session.commit()
    return len(samples)


def after_reward_training(db_url: str, run_dir: Path, final_eval: dict[str, float], log: Callable[[str], None]) -> None:
    """Record the held-out accuracy and re-score the samples with the new reward model."""
    from rl4gen.feedback.store import record_reward_model_eval

    with open_session(db_url) as session:
        accuracy = final_eval.get("eval/accuracy")
        if accuracy is not None:
            meta = run_dir / "run.json"
            pairs = int(json.loads(meta.read_text()).get("eval_examples", 0)) if meta.is_file() else 0
            record_reward_model_eval(session, str(run_dir), float(accuracy), pairs)
            log(f"recorded held-out accuracy {accuracy:.3f} in the feedback database")
        n = score_samples(session, run_dir / "model")
        log(f"scored {n} text samples for the active comparison queue")
