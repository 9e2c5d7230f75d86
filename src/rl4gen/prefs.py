"""``rl4gen prefs generate``: synthetic preference pairs from a policy and a judge (RLAIF).

For each prompt the policy samples ``num_generations`` completions; the judge compares every
pair of distinct completions; each pair it does not call a tie becomes one line of pairwise
preference JSONL (docs/data.md), winner as ``chosen``. The file is written to a temporary name
and renamed, so an interrupted run never leaves half a file. A reward model trained on the
output (``rl4gen reward train``) is then bootstrapped without people.
"""

from __future__ import annotations

import itertools
import json
import os
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from pydantic import Field, model_validator

from rl4gen.config import ConfigError, GenerationConfig, ModelConfig, Strict
from rl4gen.judges import Judge, build_judge, check_preferences


class JudgeSpec(Strict):
    type: str
    """Registered judge type: reward (a registered reward ranks the pair) or model (a local LM)."""
    args: dict[str, Any] = Field(default_factory=dict)
    """Keyword arguments of the judge type (see docs/commands/prefs.md)."""


class PrefsConfig(Strict):
    """``rl4gen prefs generate``: where prompts and completions come from, who judges, where to write."""

    output: str
    """JSONL file to write (pairwise preferences); its folder is created."""
    task: str | None = None
    """Task whose training contexts are the prompts (and whose prior is the policy when model.path is null)."""
    task_args: dict[str, Any] = Field(default_factory=dict)
    """Options of the task."""
    prompts_file: str | None = None
    """Prompts instead of a task: JSONL objects with a 'prompt' (other fields reach the judge) or one prompt per line."""
    model: ModelConfig = Field(default_factory=ModelConfig)
    """The policy that writes the completions: model.path (a model or run folder), or null for the task's prior."""
    generation: GenerationConfig | None = None
    """Sampling settings; null = the task's recipe (or the defaults)."""
    num_prompts: int | None = Field(None, ge=1)
    """Prompts to use: drawn from the task's training split, or the first ones of prompts_file; null = 256 from a task, all of a file."""
    num_generations: int = Field(2, ge=2)
    """Completions sampled per prompt; every pair of distinct ones is judged."""
    batch_size: int = Field(64, ge=1)
    """Prompts sampled and judged together."""
    judge: JudgeSpec
    """Who ranks the pairs."""
    tie_threshold: float = Field(0.0, ge=0, lt=1)
    """Preferences with |value| <= tie_threshold are ties and not written."""
    agreement_judge: JudgeSpec | None = None
    """Optional held-out judge (e.g. a rule the main judge does not see): the report gives how often it agrees."""
    seed: int = Field(0, ge=0)
    """Seeds the prompts drawn and the samples."""

    @model_validator(mode="after")
    def _check_source(self) -> PrefsConfig:
        if (self.task is None) == (self.prompts_file is None):
            raise ValueError("give exactly one of task and prompts_file as the source of prompts")
        if self.model.lora is not None:
            raise ValueError("model.lora does not apply to prefs generate: point model.path at a trained adapter's folder")
        return self


@dataclass
class PrefsReport:
    """Counts of one ``prefs generate`` run."""

    output: str
    prompts: int
    completions: int
    comparisons: int  # pairs of distinct completions shown to the judge
    pairs: int  # pairs written
    ties: int  # judged ties, not written
    identical: int  # pairs of identical completions, never judged
    empty: int  # pairs with an empty completion, never judged (the data format needs text)
    agreement: float | None = None  # fraction of written pairs the agreement judge ranks the same way
    agreement_ties: int = 0  # written pairs the agreement judge calls a tie (left out of agreement)


def _contexts(config: PrefsConfig, generator: torch.Generator) -> list[Any]:
    if config.prompts_file is not None:
        from rl4gen.tasks.prompts import load_prompts

        rows = load_prompts(Path(config.prompts_file), key="prompts_file")
        return rows[: config.num_prompts] if config.num_prompts is not None else rows
    from rl4gen.tasks import get_task

    assert config.task is not None
    task = get_task(config.task, config.task_args)
    return list(task.train_contexts(generator, config.num_prompts or 256))


def _policy(config: PrefsConfig, log: Callable[[str], None]) -> Any:
    from rl4gen.policies.causal_lm import CausalLMPolicy

    generation = config.generation
    path = config.model.path
    if config.task is not None:
        from rl4gen.tasks import get_task

        task = get_task(config.task, config.task_args)
        if generation is None:
            generation = GenerationConfig.model_validate(task.default_config().get("generation", {}))
        if path is None:
            if config.task == "prompts":
                raise ConfigError("the prompts task has no prior of its own: set model.path to a model folder.")
            path = str(task.pretrain(log=log))
    if path is None:
        raise ConfigError("config key 'model.path' is required with prompts_file: set it to a model or run folder.")
    from rl4gen.cli import resolve_model_dir

    policy = CausalLMPolicy.from_pretrained(resolve_model_dir(path), generation)
    if torch.cuda.is_available():
        policy.model.to("cuda")
    return policy


def _judge(spec: JudgeSpec) -> Judge:
    return build_judge(spec.type, **spec.args)


def generate_preferences(config: PrefsConfig, log: Callable[[str], None] = print) -> PrefsReport:
    """Sample, judge and write pairwise preferences; return the counts."""
    from rl4gen.policies.causal_lm import prompt_text

    generator = torch.Generator().manual_seed(config.seed)
    contexts = _contexts(config, generator)
    judge = _judge(config.judge)
    reference = _judge(config.agreement_judge) if config.agreement_judge is not None else None
    policy = _policy(config, log)
    k = config.num_generations
    rows: list[dict[str, Any]] = []
    comparisons = ties = identical = empty = agree = disagree = ref_ties = 0
    for start in range(0, len(contexts), config.batch_size):
        batch = contexts[start : start + config.batch_size]
        samples = policy.sample(batch, k, generator=generator).samples  # (len(batch) * k,)
        ctx, first, second = [], [], []
        for i, context in enumerate(batch):
            group = samples[i * k : (i + 1) * k]
            for x, y in itertools.combinations(range(k), 2):
                if not group[x].strip() or not group[y].strip():
                    empty += 1  # the data format needs text on both sides
                    continue
                if group[x] == group[y]:
                    identical += 1
                    continue
                ctx.append(context)
                first.append(group[x])
                second.append(group[y])
        if not ctx:
            continue
        comparisons += len(ctx)
        prefs = check_preferences(judge.name, judge.compare(ctx, first, second), len(ctx))
        kept = [j for j, v in enumerate(prefs) if abs(v) > config.tie_threshold]
        ties += len(ctx) - len(kept)
        if reference is not None and kept:
            sub = [ctx[j] for j in kept]
            ref = check_preferences(
                reference.name, reference.compare(sub, [first[j] for j in kept], [second[j] for j in kept]), len(kept)
            )
            for j, r in zip(kept, ref):
                if r == 0:
                    ref_ties += 1
                elif (r > 0) == (prefs[j] > 0):
                    agree += 1
                else:
                    disagree += 1
        for j in kept:
            win, lose = (first[j], second[j]) if prefs[j] > 0 else (second[j], first[j])
            rows.append(
                {"prompt": prompt_text(ctx[j]), "chosen": win, "rejected": lose, "judge": judge.name,
                 "strength": round(abs(prefs[j]), 6)}
            )
    if not rows:
        raise ConfigError(
            f"the judge ranked none of {comparisons} pairs ({ties} ties, {identical} identical, {empty} with an empty completion): "
            "raise num_generations or generation.temperature, or use a judge that can tell the completions apart."
        )
    write_jsonl_atomic(rows, config.output)
    return PrefsReport(
        output=config.output,
        prompts=len(contexts),
        completions=len(contexts) * k,
        comparisons=comparisons,
        pairs=len(rows),
        ties=ties,
        identical=identical,
        empty=empty,
        agreement=agree / (agree + disagree) if reference is not None and agree + disagree else None,
        agreement_ties=ref_ties,
    )


def write_jsonl_atomic(rows: list[dict[str, Any]], path: str | Path) -> Path:
    """Write one JSON object per line to a temporary file beside ``path``, then rename it."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_name(f".{p.name}.tmp-{os.getpid()}")
    try:
        with tmp.open("w", encoding="utf-8") as f:
            for row in rows:
                f.write(json.dumps(row, ensure_ascii=False) + "\n")
        os.replace(tmp, p)
    finally:
        tmp.unlink(missing_ok=True)
    return p


def report_lines(report: PrefsReport) -> list[str]:
    """The report as short lines for the console."""
    lines = [
        f"wrote {report.pairs} preference pairs to {report.output}",
        (
            f"prompts {report.prompts}, completions {report.completions}, judged pairs {report.comparisons}, "
            f"ties skipped {report.ties}, identical skipped {report.identical}, empty skipped {report.empty}"
        ),
    ]
    if report.agreement is not None:
        lines.append(
            f"agreement with the held-out judge: {report.agreement:.1%} "
            f"({report.agreement_ties} pairs it calls a tie left out)"
        )
    return lines


def report_dict(report: PrefsReport) -> dict[str, Any]:
    return asdict(report)
