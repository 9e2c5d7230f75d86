"""rl4gen.config in process: --set parsing, merging, validation messages, dumping, and the
three config layers of the CLI (task defaults <- YAML file <- --set overrides)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import ValidationError

from rl4gen.cli import load_train_config
from rl4gen.config import (
    ConfigError,
    GRPOConfig,
    ReinforceConfig,
    RLOOConfig,
    TrainConfig,
    deep_merge,
    dump_config,
    parse_set,
    read_yaml,
    validate_config,
)

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
# Recipes of `rl4gen train`; those of the offline commands (`*-dpo.yaml`, `*-sft.yaml`, `*-reward.yaml`, `*-prefs.yaml`) are tested with them.
CONFIG_FILES = sorted(p for p in CONFIGS.glob("*.yaml") if not p.stem.endswith(("-dpo", "-sft", "-reward", "-prefs", "-pipeline")))


def config_error(data: dict[str, Any]) -> str:
    """The message validate_config raises for ``data`` (which must be invalid)."""
    with pytest.raises(ConfigError) as info:
        validate_config(data)
    msg = str(info.value)
    assert "\n" not in msg, f"a config error must be one line, got {msg!r}"
    return msg


# ------------------------------------------------------------------------------------ parse_set


@pytest.mark.parametrize(
    ("item", "expected"),
    [
        ("max_steps=20", {"max_steps": 20}),
        ("algorithm.beta=0.05", {"algorithm": {"beta": 0.05}}),
        ("model.lora.r=4", {"model": {"lora": {"r": 4}}}),
        ("learning_rate=1.0e-4", {"learning_rate": 1e-4}),
        ("reference_metrics=true", {"reference_metrics": True}),
        ("algorithm.normalize_advantages=false", {"algorithm": {"normalize_advantages": False}}),
        ("run_name=null", {"run_name": None}),
        ("model.lora.target_modules=[c_attn, c_proj]", {"model": {"lora": {"target_modules": ["c_attn", "c_proj"]}}}),
        ("generation.stop=['.', '!']", {"generation": {"stop": [".", "!"]}}),
        ("rewards=[{type: exact_answer, weight: 2}]", {"rewards": [{"type": "exact_answer", "weight": 2}]}),
        ("task_args={digits: 2}", {"task_args": {"digits": 2}}),
        ("run_name=my-run", {"run_name": "my-run"}),
        ("run_name=a=b", {"run_name": "a=b"}),  # only the first '=' splits
        (" seed = 3 ", {"seed": 3}),  # spaces around key and value are ignored
        ("run_name=", {"run_name": ""}),
        ("run_name=[oops", {"run_name": "[oops"}),  # not valid YAML: kept as the raw string
    ],
)
def test_parse_set_nests_keys_and_reads_values_as_yaml(item: str, expected: dict[str, Any]) -> None:
    assert parse_set(item) == expected


@pytest.mark.parametrize(("item", "value"), [("learning_rate=1e-4", 1e-4), ("learning_rate=3e-5", 3e-5)])
def test_parse_set_reads_exponent_without_dot_as_float(item: str, value: float) -> None:
    parsed = parse_set(item)["learning_rate"]
    assert isinstance(parsed, float) and parsed == pytest.approx(value)


def test_exponent_without_dot_still_validates_for_typed_fields() -> None:
    cfg = validate_config(deep_merge({"task": "arithmetic"}, parse_set("learning_rate=1e-4")))
    assert cfg.learning_rate == pytest.approx(1e-4)


@pytest.mark.parametrize(
    ("item", "needles"),
    [
        ("max_steps", ("'max_steps'", "key=value")),
        ("algorithm.beta", ("'algorithm.beta'", "key=value")),
        ("=3", ("'=3'", "invalid key ''")),
        ("max steps=3", ("'max steps=3'", "invalid key 'max steps'")),
        ("algorithm..beta=0.1", ("'algorithm..beta'",)),
        (".beta=0.1", ("'.beta'",)),
        ("algorithm.=0.1", ("'algorithm.'",)),
        ("max-steps=3", ("'max-steps'",)),
    ],
)
def test_parse_set_rejects_malformed_items_in_one_sentence(item: str, needles: tuple[str, ...]) -> None:
    with pytest.raises(ConfigError) as info:
        parse_set(item)
    msg = str(info.value)
    assert "\n" not in msg and msg.startswith("--set ")
    for needle in needles:
        assert needle in msg


# ----------------------------------------------------------------------------------- deep_merge


def test_deep_merge_merges_nested_mappings_and_replaces_the_rest() -> None:
    base = {"generation": {"temperature": 0.5, "top_p": 1.0, "stop": ["\n"]}, "max_steps": 10, "rewards": [{"type": "a"}]}
    override = {"generation": {"top_p": 0.9, "stop": ["."]}, "rewards": [{"type": "b"}], "seed": 3}
    merged = deep_merge(base, override)
    assert merged == {
        "generation": {"temperature": 0.5, "top_p": 0.9, "stop": ["."]},
        "max_steps": 10,
        "rewards": [{"type": "b"}],
        "seed": 3,
    }
    # inputs are not modified, and the result shares no mutable state with them
    assert base["generation"] == {"temperature": 0.5, "top_p": 1.0, "stop": ["\n"]}
    assert override["generation"] == {"top_p": 0.9, "stop": ["."]}
    merged["generation"]["stop"].append("!")
    assert override["generation"]["stop"] == ["."]


def test_deep_merge_scalar_replaces_mapping_and_mapping_replaces_scalar() -> None:
    assert deep_merge({"model": {"path": "x"}}, {"model": None}) == {"model": None}
    assert deep_merge({"model": None}, {"model": {"path": "x"}}) == {"model": {"path": "x"}}


GRPO_BLOCK = {"name": "grpo", "num_generations": 8, "beta": 0.0, "epsilon": 0.2, "scale_rewards": "group", "loss_type": "grpo"}


def test_deep_merge_new_algorithm_name_drops_the_old_algorithms_fields() -> None:
    base = {"task": "arithmetic", "algorithm": dict(GRPO_BLOCK)}
    merged = deep_merge(base, {"algorithm": {"name": "reinforce", "baseline_decay": 0.5}})
    assert merged["algorithm"] == {"name": "reinforce", "baseline_decay": 0.5}
    cfg = validate_config(merged)  # grpo's epsilon/scale_rewards would be unknown to reinforce
    assert isinstance(cfg.algorithm, ReinforceConfig)
    assert cfg.algorithm.baseline_decay == 0.5


def test_deep_merge_same_algorithm_name_or_no_name_merges_fields() -> None:
    base = {"algorithm": dict(GRPO_BLOCK)}
    assert deep_merge(base, {"algorithm": {"name": "grpo", "beta": 0.1}})["algorithm"] == {**GRPO_BLOCK, "beta": 0.1}
    assert deep_merge(base, {"algorithm": {"beta": 0.1}})["algorithm"] == {**GRPO_BLOCK, "beta": 0.1}


def test_deep_merge_algorithm_switch_works_with_parse_set() -> None:
    merged = deep_merge({"task": "arithmetic", "algorithm": dict(GRPO_BLOCK)}, parse_set("algorithm.name=rloo"))
    cfg = validate_config(merged)
    assert isinstance(cfg.algorithm, RLOOConfig)
    assert cfg.algorithm.num_generations == RLOOConfig().num_generations


# ------------------------------------------------------------------------------ validate_config


def test_validate_config_minimal_config_takes_defaults() -> None:
    cfg = validate_config({"task": "arithmetic"})
    assert cfg == TrainConfig(task="arithmetic")
    assert isinstance(cfg.algorithm, GRPOConfig)


def test_config_error_is_a_value_error() -> None:
    assert issubclass(ConfigError, ValueError)


@pytest.mark.parametrize(
    ("data", "key", "suggestion"),
    [
        ({"task": "arithmetic", "algorithm": {"name": "grpo", "num_generatons": 4}}, "algorithm.num_generatons", "algorithm.num_generations"),
        ({"task": "arithmetic", "learning_rte": 1e-3}, "learning_rte", "learning_rate"),
        ({"task": "arithmetic", "generation": {"temprature": 0.7}}, "generation.temprature", "generation.temperature"),
        ({"task": "arithmetic", "model": {"lora": {"lora_alfa": 8}}}, "model.lora.lora_alfa", "model.lora.lora_alpha"),
        ({"task": "arithmetic", "algorithm": {"name": "reinforce", "baseline_decy": 0.5}}, "algorithm.baseline_decy", "algorithm.baseline_decay"),
    ],
)
def test_misspelled_key_is_named_with_a_suggestion(data: dict[str, Any], key: str, suggestion: str) -> None:
    msg = config_error(data)
    assert msg.startswith("unknown config key")
    assert f"'{key}'" in msg
    assert f"did you mean '{suggestion}'?" in msg


def test_unknown_key_without_a_close_match_has_no_suggestion() -> None:
    msg = config_error({"task": "arithmetic", "nonsense": 1})
    assert msg == "unknown config key 'nonsense': remove it or fix its spelling."


def test_key_of_another_algorithm_does_not_suggest_itself() -> None:
    msg = config_error({"task": "arithmetic", "algorithm": {"name": "reinforce", "epsilon": 0.1}})
    assert "'algorithm.epsilon'" in msg
    assert "did you mean 'algorithm.epsilon'" not in msg


def test_missing_task_is_required() -> None:
    msg = config_error({"max_steps": 3})
    assert msg.startswith("config key 'task' is required")
    assert "--set task=" in msg


def test_unknown_algorithm_names_algorithm_name_and_the_choices() -> None:
    msg = config_error({"task": "arithmetic", "algorithm": {"name": "trpo"}})
    assert "algorithm.name" in msg
    assert "'trpo'" in msg
    assert "grpo, rloo, reinforce, ppo or dqn" in msg


def test_unknown_algorithm_message_quotes_only_the_name() -> None:
    msg = config_error({"task": "arithmetic", "algorithm": {"name": "trpo", "beta": 0.1}})
    assert "unknown algorithm 'trpo'" in msg
    assert "beta" not in msg


@pytest.mark.parametrize(
    ("override", "key", "needle"),
    [
        ({"learning_rate": "abc"}, "learning_rate", "'abc'"),
        ({"max_steps": "ten"}, "max_steps", "'ten'"),
        ({"reference_metrics": "maybe"}, "reference_metrics", "'maybe'"),
        ({"generation": {"stop": "."}}, "generation.stop", "'.'"),
        ({"algorithm": {"name": "grpo", "num_generations": 1}}, "algorithm.num_generations", "greater than or equal to 2"),
        ({"algorithm": {"name": "rloo", "num_generations": 1}}, "algorithm.num_generations", "greater than or equal to 2"),
        ({"algorithm": {"name": "grpo", "beta": -1}}, "algorithm.beta", "-1"),
        ({"algorithm": {"name": "grpo", "epsilon": 1.0}}, "algorithm.epsilon", "less than 1"),
        ({"algorithm": {"name": "grpo", "loss_type": "ppo"}}, "algorithm.loss_type", "'ppo'"),
        ({"generation": {"temperature": 0}}, "generation.temperature", "greater than 0"),
        ({"generation": {"top_p": 1.5}}, "generation.top_p", "1.5"),
        ({"generation": {"top_k": 0}}, "generation.top_k", "0"),
        ({"learning_rate": -1}, "learning_rate", "-1"),
        ({"max_steps": 0}, "max_steps", "greater than or equal to 1"),
        ({"lr_scheduler_type": "step"}, "lr_scheduler_type", "'step'"),
        ({"model": {"lora": {"r": 0}}}, "model.lora.r", "0"),
        ({"rewards": [{"weight": 1.0}]}, "rewards.0.type", "required"),
        ({"rewards": [{"type": "exact_answer", "wieght": 1.0}]}, "rewards.0.wieght", "unknown config key"),
    ],
)
def test_wrong_type_or_out_of_range_names_the_key(override: dict[str, Any], key: str, needle: str) -> None:
    msg = config_error(deep_merge({"task": "arithmetic"}, override))
    assert f"'{key}'" in msg
    assert needle in msg


def test_reinforce_accepts_one_generation_grpo_and_rloo_do_not() -> None:
    assert ReinforceConfig().num_generations == 1
    cfg = validate_config({"task": "arithmetic", "algorithm": {"name": "reinforce", "num_generations": 1}})
    assert isinstance(cfg.algorithm, ReinforceConfig) and cfg.algorithm.num_generations == 1
    for cls in (GRPOConfig, RLOOConfig):
        with pytest.raises(ValidationError):
            cls(num_generations=1)
        assert cls(num_generations=2).num_generations == 2
    with pytest.raises(ValidationError):
        ReinforceConfig(num_generations=0)
    for name in ("grpo", "rloo"):
        msg = config_error({"task": "arithmetic", "algorithm": {"name": name, "num_generations": 1}})
        assert "'algorithm.num_generations'" in msg


def test_models_forbid_extra_fields_and_validate_assignment() -> None:
    with pytest.raises(ValidationError):
        GRPOConfig(baseline_decay=0.9)  # a reinforce field
    cfg = TrainConfig(task="arithmetic")
    with pytest.raises(ValidationError):
        cfg.max_steps = 0


# -------------------------------------------------------------- gradient accumulation vs batch


def test_gradient_accumulation_may_not_exceed_the_samples_per_step() -> None:
    algo = {"name": "grpo", "num_generations": 4}
    ok = TrainConfig.model_validate({"task": "arithmetic", "prompts_per_step": 2, "algorithm": algo, "gradient_accumulation_steps": 8})
    assert ok.gradient_accumulation_steps == 8
    with pytest.raises(ValidationError):
        TrainConfig.model_validate({"task": "arithmetic", "prompts_per_step": 2, "algorithm": algo, "gradient_accumulation_steps": 9})
    msg = config_error({"task": "arithmetic", "prompts_per_step": 2, "algorithm": algo, "gradient_accumulation_steps": 9})
    assert "gradient_accumulation_steps (9)" in msg
    assert "8 samples per step" in msg
    # REINFORCE with one generation: the batch is prompts_per_step
    msg = config_error({"task": "arithmetic", "prompts_per_step": 3, "algorithm": {"name": "reinforce"}, "gradient_accumulation_steps": 4})
    assert "3 samples per step" in msg


def test_gradient_accumulation_message_is_one_short_sentence() -> None:
    msg = config_error(
        {"task": "arithmetic", "prompts_per_step": 2, "algorithm": {"name": "grpo", "num_generations": 4}, "gradient_accumulation_steps": 9}
    )
    assert "'task'" not in msg and "value error" not in msg
    assert "gradient_accumulation_steps" in msg
    assert len(msg) < 200


# ----------------------------------------------------------------------------------- read_yaml


def test_read_yaml_errors(tmp_path: Path) -> None:
    (tmp_path / "empty.yaml").write_text("")
    assert read_yaml(tmp_path / "empty.yaml") == {}
    (tmp_path / "list.yaml").write_text("- a\n- b\n")
    (tmp_path / "bad.yaml").write_text("task: arithmetic\nalgorithm: [\n")
    for name, needle in [("missing.yaml", "does not exist"), ("list.yaml", "mapping"), ("bad.yaml", "not valid YAML at line")]:
        with pytest.raises(ConfigError) as info:
            read_yaml(tmp_path / name)
        msg = str(info.value)
        assert "\n" not in msg and name in msg and needle in msg


# -------------------------------------------------------------------------------- dump_config


def _roundtrip(cfg: TrainConfig) -> TrainConfig:
    text = dump_config(cfg)
    data = yaml.safe_load(text)
    assert list(data)[:2] == ["task", "task_args"]  # field order, not sorted
    return validate_config(data)


@pytest.mark.parametrize("path", CONFIG_FILES, ids=lambda p: p.name)
def test_dump_config_round_trips_every_recipe(path: Path) -> None:
    cfg = load_train_config(str(path), [])
    assert _roundtrip(cfg) == cfg


def test_dump_config_round_trips_a_config_with_every_kind_of_value() -> None:
    cfg = validate_config(
        {
            "task": "arithmetic",
            "task_args": {"digits": 2, "operations": ["+", "-"]},
            "run_name": "x: y # not a comment",
            "model": {"path": "/tmp/some model", "lora": {"r": 4, "target_modules": ["c_attn"]}},
            "generation": {"temperature": 0.7, "top_k": 5, "stop": ["\n", "'", '"', ": "]},
            "algorithm": {"name": "reinforce", "baseline_decay": 0.5, "normalize_advantages": True},
            "rewards": [
                {"type": "regex", "name": "digits", "weight": -0.5, "args": {"pattern": "^[0-9]+$", "full": True}},
                {"type": "exact_answer"},
            ],
            "learning_rate": 1e-5,
            "max_grad_norm": None,
            "save_total_limit": None,
        }
    )
    back = _roundtrip(cfg)
    assert back == cfg
    assert back.learning_rate == 1e-5 and back.generation.stop == ["\n", "'", '"', ": "]


# --------------------------------------------------------------- load_train_config: the layers


def test_load_train_config_layers_task_defaults_file_and_sets(tmp_path: Path) -> None:
    from rl4gen.tasks import get_task

    defaults = get_task("arithmetic").default_config()
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(
        "task: arithmetic\n"
        "max_steps: 50\n"
        "eval_size: 64\n"
        "generation:\n  top_p: 0.9\n"
        "algorithm:\n  name: grpo\n  beta: 0.1\n"
    )
    cfg = load_train_config(str(recipe), ["max_steps=7", "algorithm.epsilon=0.3", "seed=5", "seed=6"])
    # --set wins over the file, the last --set wins over earlier ones
    assert cfg.max_steps == 7
    assert cfg.seed == 6
    assert cfg.algorithm.epsilon == 0.3
    # the file wins over the task defaults
    assert cfg.eval_size == 64
    assert cfg.generation.top_p == 0.9
    assert cfg.algorithm.beta == 0.1
    # task defaults fill what neither sets, also inside nested sections
    assert cfg.generation.temperature == defaults["generation"]["temperature"]
    assert cfg.generation.max_completion_length == defaults["generation"]["max_completion_length"]
    assert cfg.learning_rate == defaults["learning_rate"]
    assert cfg.prompts_per_step == defaults["prompts_per_step"]
    assert cfg.algorithm.num_generations == defaults["algorithm"]["num_generations"]
    assert [r.type for r in cfg.rewards] == ["exact_answer"]


def test_load_train_config_without_file_is_the_task_recipe() -> None:
    from rl4gen.tasks import get_task

    cfg = load_train_config(None, ["task=arithmetic"])
    assert cfg == validate_config(get_task("arithmetic").default_config())


def test_load_train_config_task_args_shape_the_defaults(tmp_path: Path) -> None:
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text("task: arithmetic\ntask_args:\n  digits: 2\n")
    cfg = load_train_config(str(recipe), ["task_args.reverse_answer=false"])
    assert cfg.task_args == {"digits": 2, "reverse_answer": False}
    assert cfg.generation.max_completion_length == 4  # digits + carry + end token


def test_load_train_config_algorithm_switch_in_file_drops_default_fields(tmp_path: Path) -> None:
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text("task: arithmetic\nalgorithm:\n  name: reinforce\n")
    cfg = load_train_config(str(recipe), [])
    assert isinstance(cfg.algorithm, ReinforceConfig)
    assert cfg.algorithm.num_generations == 1
    cfg = load_train_config(str(recipe), ["algorithm.name=rloo", "algorithm.num_generations=4"])
    assert isinstance(cfg.algorithm, RLOOConfig) and cfg.algorithm.num_generations == 4


def test_load_train_config_with_base_skips_task_defaults() -> None:
    base = yaml.safe_load(dump_config(validate_config({"task": "arithmetic", "max_steps": 2, "eval_size": 8})))
    cfg = load_train_config(None, ["max_steps=3"], base=base)
    assert cfg.max_steps == 3
    assert cfg.eval_size == 8  # not the arithmetic default (512)
    assert cfg.learning_rate == TrainConfig(task="arithmetic").learning_rate


@pytest.mark.parametrize(
    ("config_text", "sets", "needles"),
    [
        (None, ["max_steps=3"], ("config key 'task' is required",)),
        ("max_steps: 3\n", [], ("config key 'task' is required",)),
        ("task: arithmetic\n", ["task=[1]"], ("'task'", "[1]")),
        ("task: chess\n", [], ("unknown task 'chess'", "arithmetic, dialogue, digits, gan_digits, latent_digits, level_writer, melody, prompts, seqgan_oracle, shakespeare")),
        ("task: arithmetic\n", ["task_args.digitz=2"], ("'task_args.digitz'",)),
        ("task: arithmetic\ntask_args:\n  digits: 0\n", [], ("'task_args.digits'",)),
        ("task: arithmetic\n", ["algorithm.num_generatons=4"], ("'algorithm.num_generatons'", "'algorithm.num_generations'")),
        ("task: arithmetic\n", ["max_steps"], ("--set 'max_steps'",)),
    ],
)
def test_load_train_config_errors(tmp_path: Path, config_text: str | None, sets: list[str], needles: tuple[str, ...]) -> None:
    path = None
    if config_text is not None:
        path = tmp_path / "recipe.yaml"
        path.write_text(config_text)
    with pytest.raises(ConfigError) as info:
        load_train_config(str(path) if path else None, sets)
    msg = str(info.value)
    assert "\n" not in msg
    for needle in needles:
        assert needle in msg
