"""The CLI's answer to bad input: one sentence on stderr starting with 'error:', exit code 2, no
traceback, and no file of an existing run touched.

Most cases run in process through typer's CliRunner (stderr is captured apart from stdout); a
representative handful, the training run they resume and the dry run also go through a real
``python -m rl4gen`` subprocess. The subprocesses start in a background pool as soon as this
module starts, so their import time overlaps the in-process tests.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from rl4gen.cli import app
from rl4gen.config import TrainConfig, dump_config, validate_config

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / "configs"
GRPO = CONFIGS / "arithmetic-grpo.yaml"
SHAKESPEARE = CONFIGS / "shakespeare-grpo.yaml"
USER_ERROR = 2
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
# Rich wraps plain console output at the width; pin it so results do not depend on the caller.
CLI_ENV = {"COLUMNS": "80", "FORCE_COLOR": None, "TTY_COMPATIBLE": None, "TTY_INTERACTIVE": None}


# ------------------------------------------------------------------------------------ running


@dataclass
class Outcome:
    rc: int
    stdout: str
    stderr: str
    exception: BaseException | None = None  # in process: an uncaught exception (a traceback)
    how: str = "subprocess"


def run_cli(args: Sequence[Any], cwd: Path, timeout: float = 300) -> Outcome:
    """``python -m rl4gen ARGS`` in ``cwd``, with this process's environment."""
    env = dict(os.environ)
    for key, value in CLI_ENV.items():
        if value is None:
            env.pop(key, None)
        else:
            env[key] = value
    proc = subprocess.run(
        [sys.executable, "-m", "rl4gen", *map(str, args)],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    return Outcome(proc.returncode, ANSI.sub("", proc.stdout), ANSI.sub("", proc.stderr))


_runner = CliRunner()


def invoke(args: Sequence[Any], cwd: Path) -> Outcome:
    """The same command in process, against ``rl4gen.cli.app``."""
    old = os.getcwd()
    os.chdir(cwd)
    try:
        result = _runner.invoke(app, [str(a) for a in args], env=CLI_ENV)
    finally:
        os.chdir(old)
    exc = result.exception
    if isinstance(exc, SystemExit):
        exc = None
    return Outcome(result.exit_code, ANSI.sub("", result.stdout), ANSI.sub("", result.stderr), exc, "in process")


def assert_user_error(outcome: Outcome, *needles: str) -> str:
    """Exit code 2, no traceback, and exactly one line on stderr: 'error: ...' naming the problem."""
    assert outcome.exception is None, f"uncaught {outcome.exception!r} (a traceback in the real CLI)"
    assert "Traceback" not in outcome.stderr, outcome.stderr
    assert "Traceback" not in outcome.stdout, outcome.stdout
    assert outcome.rc == USER_ERROR, f"exit code {outcome.rc} ({outcome.how}), stderr: {outcome.stderr!r}"
    lines = outcome.stderr.strip().splitlines()
    assert len(lines) == 1, f"stderr is not one line: {outcome.stderr!r}"
    msg = lines[0]
    assert msg.startswith("error: "), msg
    assert len(msg) < 400, f"not one short sentence: {msg!r}"
    for needle in needles:
        assert needle in msg, f"{needle!r} not in {msg!r}"
    return msg


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def snapshot(folder: Path) -> dict[str, tuple[str, int] | None]:
    """Every file (sha256, mtime_ns) and folder (None) under ``folder``."""
    return {
        str(p.relative_to(folder)): (sha256(p), p.stat().st_mtime_ns) if p.is_file() else None
        for p in sorted(folder.rglob("*"))
    }


def assert_same(before: dict[str, Any], after: dict[str, Any]) -> None:
    added = sorted(set(after) - set(before))
    removed = sorted(set(before) - set(after))
    changed = sorted(k for k in set(before) & set(after) if before[k] != after[k])
    assert not (added or removed or changed), f"added {added}, removed {removed}, changed {changed}"


def train_args(output_dir: Path, model_dir: Path) -> list[str]:
    """A real GRPO run of 2 steps on the tiny random model, a checkpoint at every step."""
    return [
        "train", GRPO,
        "--set", f"model.path={model_dir}",
        "--set", "max_steps=2",
        "--set", "save_steps=1",
        "--set", "prompts_per_step=4",
        "--set", "eval_size=8",
        "--set", f"output_dir={output_dir}",
        "--set", "run_name=r",
        "--no-progress",
    ]  # fmt: skip


# -------------------------------------------------------------------------- bad-input cases


@pytest.fixture(scope="module")
def bad(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path) -> SimpleNamespace:
    """Files for the bad inputs (cwd of every command, so nothing is written into the repo)."""
    d = tmp_path_factory.mktemp("bad-inputs")
    files = {
        "typo.yaml": "task: arithmetic\nalgorithm:\n  name: grpo\n  num_generatons: 4\n",
        "toplevel.yaml": "task: arithmetic\nnonsense_key: 1\n",
        "ten.yaml": 'task: arithmetic\nmax_steps: "ten"\n',
        "notask.yaml": "max_steps: 3\n",
        "broken.yaml": "task: arithmetic\nalgorithm: [\n",
        "list.yaml": "- task: arithmetic\n- max_steps: 3\n",
        "task-args-list.yaml": "task: arithmetic\ntask_args: [1]\n",
        "empty-prompts.txt": "",
    }
    for name, text in files.items():
        (d / name).write_text(text)
    (d / "not-a-model").mkdir()
    return SimpleNamespace(d=d, model=tiny_model_dir)


@dataclass
class Case:
    args: Callable[[SimpleNamespace], list[Any]]
    needles: Callable[[SimpleNamespace], tuple[str, ...]]


def _train(*more: Any) -> Callable[[SimpleNamespace], list[Any]]:
    return lambda b: ["train", GRPO, *more]


def _sets(*items: str) -> Callable[[SimpleNamespace], list[Any]]:
    return _train(*[x for item in items for x in ("--set", item)])


def _n(*needles: str) -> Callable[[SimpleNamespace], tuple[str, ...]]:
    return lambda b: needles


MISSPELLED = _n("unknown config key 'algorithm.num_generatons'", "did you mean 'algorithm.num_generations'?")

CASES: dict[str, Case] = {
    # unknown or misspelled keys
    "misspelled-key-yaml": Case(lambda b: ["train", b.d / "typo.yaml"], MISSPELLED),
    "misspelled-key-set": Case(_sets("algorithm.num_generatons=4"), MISSPELLED),
    "unknown-top-level-key-yaml": Case(lambda b: ["train", b.d / "toplevel.yaml"], _n("'nonsense_key'")),
    "unknown-top-level-key-set": Case(_sets("nonsense=1"), _n("unknown config key 'nonsense'")),
    "missing-task-key": Case(lambda b: ["train", b.d / "notask.yaml"], _n("config key 'task' is required")),
    "no-config-at-all": Case(lambda b: ["train", "--set", "max_steps=3"], _n("no config given")),
    # wrong types
    "wrong-type-learning-rate": Case(_sets("learning_rate=abc"), _n("'learning_rate'", "'abc'")),
    "wrong-type-max-steps-yaml": Case(lambda b: ["train", b.d / "ten.yaml"], _n("'max_steps'", "'ten'")),
    "wrong-type-algorithm": Case(_sets("algorithm=3"), _n("'algorithm'")),
    "wrong-type-task": Case(_sets("task=[1]"), _n("'task'", "[1]")),
    # out-of-range values
    "num-generations-1": Case(_sets("algorithm.num_generations=1"), _n("'algorithm.num_generations'", "greater than or equal to 2")),
    "temperature-0": Case(_sets("generation.temperature=0"), _n("'generation.temperature'", "greater than 0")),
    "top-p-1.5": Case(_sets("generation.top_p=1.5"), _n("'generation.top_p'", "1.5")),
    "negative-learning-rate": Case(_sets("learning_rate=-1"), _n("'learning_rate'", "-1")),
    "task-args-out-of-range": Case(_sets("task_args.digits=9"), _n("'task_args.digits'")),
    # unknown names
    "unknown-algorithm": Case(_sets("algorithm.name=trpo"), _n("algorithm.name", "'trpo'", "grpo, rloo, reinforce, ppo or dqn")),
    "unknown-task": Case(_sets("task=chess"), _n("unknown task 'chess'", "arithmetic, dialogue, digits, gan_digits, latent_digits, level_writer, melody, prompts, seqgan_oracle, shakespeare")),
    "unknown-task-args-key": Case(_sets("task_args.digitz=3"), _n("'task_args.digitz'")),
    "unknown-reward-type": Case(_sets("rewards=[{type: nope}]"), _n("unknown reward type 'nope'", "exact_answer")),
    "unknown-reward-argument": Case(
        _sets("rewards=[{type: exact_answer, args: {foo: 1}}]"), _n("reward type 'exact_answer'", "'foo'")
    ),
    "empty-rewards": Case(_sets("rewards=[]"), _n("'rewards'", "empty")),
    # files
    "missing-config-file": Case(lambda b: ["train", b.d / "nope.yaml"], lambda b: (str(b.d / "nope.yaml"), "does not exist")),
    "invalid-yaml": Case(lambda b: ["train", b.d / "broken.yaml"], lambda b: (str(b.d / "broken.yaml"), "not valid YAML", "line 3")),
    "yaml-is-a-list": Case(lambda b: ["train", b.d / "list.yaml"], lambda b: (str(b.d / "list.yaml"), "mapping")),
    "missing-model-dir": Case(
        lambda b: ["train", GRPO, "--set", f"model.path={b.d / 'no-such-model'}", "--no-progress"],
        lambda b: (f"model directory {str(b.d / 'no-such-model')!r} does not exist",),
    ),
    "model-dir-without-config-json": Case(
        lambda b: ["train", GRPO, "--set", f"model.path={b.d / 'not-a-model'}", "--no-progress"],
        lambda b: (str(b.d / "not-a-model"), "config.json"),
    ),
    "empty-prompts-file": Case(
        lambda b: ["train", SHAKESPEARE, "--set", f"task_args.prompts_file={b.d / 'empty-prompts.txt'}", "--no-progress"],
        lambda b: (str(b.d / "empty-prompts.txt"), "holds no prompts"),
    ),
    "missing-prompts-file": Case(
        lambda b: ["train", SHAKESPEARE, "--set", f"task_args.prompts_file={b.d / 'no-prompts.txt'}", "--no-progress"],
        lambda b: (str(b.d / "no-prompts.txt"), "does not exist", "task_args.prompts_file"),
    ),
    # malformed --set
    "set-without-equals": Case(_train("--set", "max_steps"), _n("--set 'max_steps' is malformed", "key=value")),
    "set-empty-key": Case(_train("--set", "=3"), _n("--set '=3'", "invalid key ''")),
    "set-key-with-spaces": Case(_train("--set", "max steps=3"), _n("--set 'max steps=3'", "invalid key 'max steps'")),
    "set-empty-key-part": Case(_train("--set", "algorithm..beta=0.1"), _n("'algorithm..beta'")),
    # other commands
    "sample-without-prompt": Case(lambda b: ["sample", b.model], _n("no prompts given", "--prompt")),
    "sample-missing-model": Case(lambda b: ["sample", b.d / "no-such-model", "-p", "1+1="], lambda b: (str(b.d / "no-such-model"),)),
    "eval-without-task": Case(lambda b: ["eval", b.model], _n("no task given", "--task")),
    "eval-unknown-task": Case(lambda b: ["eval", b.model, "--task", "chess"], _n("unknown task 'chess'")),
    "pretrain-unknown-task": Case(lambda b: ["pretrain", "chess"], _n("unknown task 'chess'")),
    "pretrain-unknown-arg": Case(lambda b: ["pretrain", "arithmetic", "--arg", "digitz=2"], _n("'task_args.digitz'")),
    "demo-unknown-key": Case(lambda b: ["demo", "--set", "nonsense=1", "--no-progress"], _n("unknown config key 'nonsense'")),
    "resume-not-a-run-folder": Case(
        lambda b: ["train", "--resume", b.d / "not-a-model"], lambda b: (str(b.d / "not-a-model"), "is not a run folder")
    ),
    "resume-missing-folder": Case(
        lambda b: ["train", "--resume", b.d / "no-such-run"], lambda b: (str(b.d / "no-such-run"), "is not a run folder")
    ),
}


def _bug(reason: str) -> str:
    """A regression case: ``reason`` records the bug it once had."""
    return reason


BUGGY_CASES: dict[str, tuple[Case, str]] = {
    "task-args-not-a-mapping-set": (
        Case(_sets("task_args=3"), _n("'task_args'")),
        _bug("`--set task_args=3` crashes in deep_merge (AttributeError: 'int' object has no attribute 'items'), exit 1 with a traceback"),
    ),
    "task-args-not-a-mapping-yaml": (
        Case(lambda b: ["train", b.d / "task-args-list.yaml"], _n("'task_args'")),
        _bug("`task_args: [1]` in a YAML file gives 'error: config has an invalid value [1]: ...': the key task_args is not named"),
    ),
    "gradient-accumulation-too-large": (
        Case(_sets("gradient_accumulation_steps=10000"), _n("gradient_accumulation_steps (10000)")),
        _bug("the message for gradient_accumulation_steps > batch dumps the whole resolved config mapping ('config has an invalid value {...}: value error, ...')"),
    ),
    "set-key-with-rich-markup": (
        Case(_train("--set", "a[/]b=3"), _n("'a[/]b")),
        _bug("error messages are printed as rich markup: `--set 'a[/]b=3'` raises rich.errors.MarkupError (traceback, exit 1)"),
    ),
    "config-path-with-brackets": (
        Case(lambda b: ["train", b.d / "recipe[v2].yaml"], lambda b: (str(b.d / "recipe[v2].yaml"),)),
        _bug("error messages are printed as rich markup: a missing 'recipe[v2].yaml' is reported as 'recipe.yaml'"),
    ),
}

PARAMS = [pytest.param(cid, id=cid) for cid in [*CASES, *BUGGY_CASES]]
ALL_CASES = {**CASES, **{cid: case for cid, (case, _) in BUGGY_CASES.items()}}

# Representative cases that also go through a real subprocess (each costs ~3-7 s of imports).
SUBPROCESS_CASES = [
    "misspelled-key-yaml",
    "set-without-equals",
    "missing-model-dir",
    "sample-without-prompt",
    "resume-not-a-run-folder",
]
DRY_RUN_SETS = ["max_steps=7", "algorithm.beta=0.05", "generation.top_p=0.9", "run_name=dry"]


# ------------------------------------------------------------------- background subprocesses


@pytest.fixture(scope="module", autouse=True)
def background(
    bad: SimpleNamespace, tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[SimpleNamespace]:
    """Start every subprocess of this module now; tests wait on the futures they need.

    The training run comes first; once it exists, it is copied (for the happy-path resume) and a
    bad resume of the original is queued, so the original only ever sees bad input.
    """
    pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="rl4gen-cli")
    root = tmp_path_factory.mktemp("cli-run")
    ns = SimpleNamespace(root=root, run=root / "runs" / "r", happy=root / "happy" / "r", followups={})

    def create() -> Outcome:
        outcome = run_cli(train_args(root / "runs", tiny_model_dir), root)
        if outcome.rc == 0:
            shutil.copytree(ns.run, ns.happy)
            ns.followups["bad-resume"] = pool.submit(bad_resume)
            ns.followups["happy-resume"] = pool.submit(run_cli, ["train", "--resume", ns.happy, "--set", "max_steps=3", "--no-progress"], root)
        return outcome

    def bad_resume() -> tuple[Outcome, dict[str, Any], dict[str, Any]]:
        before = snapshot(ns.run)
        outcome = run_cli(["train", "--resume", ns.run, "--set", "algorithm.beta=-1", "--no-progress"], root)
        return outcome, before, snapshot(ns.run)

    ns.created = pool.submit(create)
    ns.cases = {cid: pool.submit(run_cli, ALL_CASES[cid].args(bad), bad.d) for cid in SUBPROCESS_CASES}
    ns.dry_run = pool.submit(run_cli, ["train", GRPO, *[x for s in DRY_RUN_SETS for x in ("--set", s)], "--dry-run"], bad.d)
    yield ns
    pool.shutdown(wait=True, cancel_futures=True)


def result(future: Future) -> Any:
    return future.result(timeout=600)


@pytest.fixture(scope="module")
def run_dir(background: SimpleNamespace) -> Path:
    """A real run folder: 2 steps, checkpoints step_1 and step_2, metrics, final model."""
    created = result(background.created)
    assert created.rc == 0, created.stderr
    run = background.run
    assert (run / "config.yaml").is_file()
    assert [p.name for p in sorted((run / "checkpoints").iterdir())] == ["step_1", "step_2"]
    return run


# ---------------------------------------------------------------------------- the bad inputs


@pytest.mark.parametrize("case_id", PARAMS)
def test_bad_input_is_one_sentence_exit_2_in_process(case_id: str, bad: SimpleNamespace) -> None:
    case = ALL_CASES[case_id]
    before = snapshot(bad.d)
    outcome = invoke(case.args(bad), bad.d)
    assert_user_error(outcome, *case.needles(bad))
    assert outcome.stdout == ""
    assert_same(before, snapshot(bad.d))  # nothing written (no run folder, no file)


@pytest.mark.parametrize("case_id", SUBPROCESS_CASES)
def test_bad_input_is_one_sentence_exit_2_in_a_real_process(case_id: str, bad: SimpleNamespace, background: SimpleNamespace) -> None:
    outcome = result(background.cases[case_id])
    assert_user_error(outcome, *ALL_CASES[case_id].needles(bad))
    assert outcome.stdout == ""


def test_misspelled_key_message_is_exactly_one_sentence(bad: SimpleNamespace) -> None:
    msg = assert_user_error(invoke(["train", GRPO, "--set", "algorithm.num_generatons=4"], bad.d))
    assert msg == (
        "error: unknown config key 'algorithm.num_generatons' (did you mean "
        "'algorithm.num_generations'?): remove it or fix its spelling."
    )


# ------------------------------------------------------------- an existing run is not touched


@pytest.mark.parametrize(
    ("args", "needles"),
    [
        pytest.param(["--set", "nonsense=1"], ("unknown config key 'nonsense'",), id="unknown-key"),
        pytest.param(["--set", "max_steps"], ("--set 'max_steps' is malformed",), id="malformed-set"),
        pytest.param(["--set", "algorithm.num_generatons=2"], ("'algorithm.num_generations'",), id="misspelled-key"),
        pytest.param(["--set", "learning_rate=abc"], ("'learning_rate'",), id="wrong-type"),
        pytest.param(["--set", "generation.top_p=1.5"], ("'generation.top_p'",), id="out-of-range"),
        pytest.param(["--set", "task=chess"], ("unknown task 'chess'",), id="unknown-task"),
        pytest.param(["--set", "rewards=[{type: nope}]"], ("unknown reward type 'nope'",), id="unknown-reward"),
        pytest.param(["--set", "model.path=/nonexistent/rl4gen-model"], ("'model' cannot change when resuming",), id="changed-model"),
        pytest.param(["--set", "task=shakespeare"], ("'task' cannot change when resuming",), id="changed-task"),
        pytest.param([GRPO], ("not both",), id="config-and-resume"),
    ],
)
def test_bad_resume_leaves_the_run_untouched(run_dir: Path, args: list[Any], needles: tuple[str, ...]) -> None:
    before = snapshot(run_dir)
    assert_user_error(invoke(["train", "--resume", run_dir, *args, "--no-progress"], run_dir.parent), *needles)
    assert_same(before, snapshot(run_dir))


def test_bad_resume_in_a_real_process_leaves_checkpoints_and_metrics_untouched(run_dir: Path, background: SimpleNamespace) -> None:
    outcome, before, after = result(background.followups["bad-resume"])
    assert_user_error(outcome, "'algorithm.beta'", "-1")
    checkpoint_files = [k for k, v in before.items() if k.startswith("checkpoints/") and v is not None]
    assert len(checkpoint_files) >= 2 * 8  # both checkpoints: weights, optimizer, scheduler, rng, state, sums
    assert {k: before[k] for k in checkpoint_files} == {k: after[k] for k in checkpoint_files}
    assert before["metrics.jsonl"] == after["metrics.jsonl"]
    assert_same(before, after)


def test_resume_without_checkpoints_is_a_user_error(bad: SimpleNamespace, tmp_path: Path) -> None:
    run = tmp_path / "no-checkpoints"
    run.mkdir()
    config = validate_config(
        {"task": "arithmetic", "model": {"path": str(bad.model)}, "rewards": [{"type": "exact_answer"}], "max_steps": 2}
    )
    (run / "config.yaml").write_text(dump_config(config))
    (run / "checkpoints").mkdir()
    (run / "checkpoints" / "step_1.tmp-123").mkdir()  # an interrupted write is not a checkpoint
    before = snapshot(run)
    assert_user_error(invoke(["train", "--resume", run, "--no-progress"], tmp_path), str(run), "no complete checkpoint")
    assert_same(before, snapshot(run))


def test_resume_continues_a_run_and_writes_the_next_checkpoint(run_dir: Path, background: SimpleNamespace) -> None:
    happy = background.happy
    outcome = result(background.followups["happy-resume"])
    assert outcome.rc == 0, outcome.stderr
    assert "Traceback" not in outcome.stderr
    assert "resumed from" in outcome.stdout and "at step 2" in outcome.stdout
    assert (happy / "checkpoints" / "step_3" / "checksums.json").is_file()
    original = snapshot(run_dir / "checkpoints" / "step_2")
    # the checkpoint it resumed from is byte-identical to the one it was copied from
    assert {k: v[0] if v else v for k, v in snapshot(happy / "checkpoints" / "step_2").items()} == {
        k: v[0] if v else v for k, v in original.items()
    }
    steps = [json.loads(line)["step"] for line in (happy / "metrics.jsonl").read_text().splitlines()]
    assert steps == [0, 1, 2, 3]
    assert yaml.safe_load((happy / "config.yaml").read_text())["max_steps"] == 3


def test_resume_with_max_steps_below_the_reached_step_is_refused(run_dir: Path, tmp_path: Path) -> None:
    run = tmp_path / "r"
    shutil.copytree(run_dir, run)
    before = snapshot(run)
    outcome = invoke(["train", "--resume", run, "--set", "max_steps=1", "--no-progress"], tmp_path)
    assert_same(before, snapshot(run))
    assert_user_error(outcome, "max_steps")


def test_resume_with_another_task_is_refused(run_dir: Path, tmp_path: Path) -> None:
    run = tmp_path / "r"
    shutil.copytree(run_dir, run)
    before = snapshot(run)
    outcome = invoke(["train", "--resume", run, "--set", "task=shakespeare", "--set", "max_steps=3", "--no-progress"], tmp_path)
    assert_same(before, snapshot(run))
    assert_user_error(outcome, "task")


# ---------------------------------------------------------------------------------- --dry-run


def _dry_run_config(outcome: Outcome) -> TrainConfig:
    assert outcome.exception is None, repr(outcome.exception)
    assert outcome.rc == 0, outcome.stderr
    assert "Traceback" not in outcome.stderr
    data = yaml.safe_load(outcome.stdout)
    assert isinstance(data, dict)
    return validate_config(data)


def _check_dry_run_overrides(cfg: TrainConfig) -> None:
    assert cfg.max_steps == 7
    assert cfg.algorithm.beta == 0.05
    assert cfg.generation.top_p == 0.9
    assert cfg.run_name == "dry"
    assert cfg.generation.temperature == 0.5  # arithmetic's default, untouched by the overrides


def test_dry_run_prints_a_valid_config_with_the_overrides(background: SimpleNamespace, bad: SimpleNamespace) -> None:
    _check_dry_run_overrides(_dry_run_config(result(background.dry_run)))
    assert not (bad.d / "runs").exists()


def test_dry_run_in_process_matches(bad: SimpleNamespace) -> None:
    args = ["train", GRPO, *[x for s in DRY_RUN_SETS for x in ("--set", s)], "--dry-run"]
    _check_dry_run_overrides(_dry_run_config(invoke(args, bad.d)))


TRAIN_RECIPES = sorted(p for p in CONFIGS.glob("*.yaml") if not p.stem.endswith(("-dpo", "-sft", "-reward", "-prefs", "-pipeline")))


@pytest.mark.parametrize("path", TRAIN_RECIPES, ids=lambda p: p.name)
def test_every_recipe_resolves_with_dry_run(path: Path, tmp_path: Path) -> None:
    # from the repository root, where recipes' relative paths (prompts files) resolve; a dry run writes nothing
    cfg = _dry_run_config(invoke(["train", path, "--dry-run"], REPO))
    recipe = yaml.safe_load(path.read_text())
    assert cfg.task == recipe["task"]
    assert cfg.algorithm.name == recipe.get("algorithm", {}).get("name", "grpo")
    for key in ("max_steps", "prompts_per_step", "learning_rate", "reference_metrics"):
        if key in recipe:
            assert getattr(cfg, key) == recipe[key]
    assert list(tmp_path.iterdir()) == []  # a dry run writes nothing


def test_dry_run_of_a_resume_shows_the_override_and_writes_nothing(run_dir: Path) -> None:
    before = snapshot(run_dir)
    cfg = _dry_run_config(invoke(["train", "--resume", run_dir, "--set", "max_steps=9", "--dry-run"], run_dir.parent))
    assert cfg.max_steps == 9
    assert cfg.eval_size == 8  # the run's own config, not the task default
    assert_same(before, snapshot(run_dir))


def test_dry_run_output_survives_long_values(bad: SimpleNamespace) -> None:
    long_path = "/" + "/".join(["a-rather-long-folder-name"] * 6) + "/model"
    cfg = _dry_run_config(invoke(["train", GRPO, "--set", f"model.path={long_path}", "--dry-run"], bad.d))
    assert cfg.model.path == long_path


def test_option_errors_are_one_line_through_the_entry_point(tmp_path: Path) -> None:
    """`rl4gen sample M --num 0`: click's usage box is replaced by one `error:` line (main())."""
    outcome = run_cli(["sample", tmp_path, "--num", "0", "-p", "1+1="], tmp_path)
    assert outcome.rc == 2
    lines = [line for line in outcome.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:") and "--num" in lines[0], outcome.stderr
    assert "Traceback" not in outcome.stderr
