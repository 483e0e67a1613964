"""Config validation: the real plan and the demo are valid; every user mistake names its key."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

from finetune_hpo.config import ConfigError, check_config, planned_tasks, study_settings
from tests.conftest import demo_config, real_config


def test_real_plan_is_valid_and_splits_the_vms() -> None:
    config = check_config(real_config())
    assert config["optuna"]["n_trials"] == 10
    assert config["optuna"]["sampler"]["n_startup_trials"] == 4
    assert config["wandb"]["project"] == "NLP-Phase1-Optuna"
    tiers = {task: config["tasks"][task]["train_size"] for task in config["tasks"]}
    assert tiers == {"squad_v2": 3000, "sst2": 3000, "mrpc": 500, "rte": 500}
    assert planned_tasks(config | {"vm": "vm1"}) == ["squad_v2"]
    assert sorted(planned_tasks(config | {"vm": "vm2"})) == ["mrpc", "rte", "sst2"]
    assert len(planned_tasks(config)) == 4


def test_squad_full_finetuning_is_constrained_to_batch_one() -> None:
    config = check_config(real_config())
    squad = study_settings(config, "squad_v2", "full_finetune")
    assert squad.search_space["batch_size"].choices == (1,)
    assert study_settings(config, "sst2", "full_finetune").search_space["batch_size"].choices == (1, 2, 4)


def test_demo_config_is_valid() -> None:
    check_config(demo_config())


def _broken(mutate) -> dict:
    config = copy.deepcopy(real_config())
    mutate(config)
    return config


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda c: c["tasks"].update({"cola": {"train_size": 10}}), r"tasks\.cola: unknown task"),
        (lambda c: c.update({"methods": ["full_finetune", "adapters"]}), r"methods: unknown method 'adapters'"),
        (lambda c: c["optuna"].update({"n_trials": 0}), r"n_trials|minimum"),
        (
            lambda c: c["search_spaces"]["lora"].update({"learning_rate": {"type": "float", "low": 1, "high": 0.1}}),
            r"search_spaces\.lora\.learning_rate: low \(1\) is greater than high",
        ),
        (
            lambda c: c["search_spaces"]["lora"].update(
                {"weight_decay": {"type": "float", "low": 0, "high": 1, "log": True}}
            ),
            r"search_spaces\.lora\.weight_decay: a log-scale range needs low > 0",
        ),
        (
            lambda c: c["search_spaces"]["full_finetune"].update({"dropout": {"type": "float", "low": 0, "high": 1}}),
            r"search_spaces\.full_finetune.*: unknown hyperparameter\(s\) dropout",
        ),
        (
            lambda c: c["model"].update({"name_or_path": "./models/missing-bert"}),
            r"model\.name_or_path: local model directory \./models/missing-bert does not exist",
        ),
        (lambda c: c.update({"vm": "vm3"}), r"vm: 'vm3' is not defined under 'vms'"),
        (lambda c: c["vms"].update({"vm2": ["mrpc", "qnli"]}), r"vms\.vm2: task 'qnli' is not configured"),
        (
            lambda c: c["tasks"]["rte"].update(
                {"data_files": {"train": "nowhere/train.jsonl", "validation": "x.jsonl"}}
            ),
            r"tasks\.rte\.data_files\.train: file nowhere/train\.jsonl does not exist",
        ),
        (
            lambda c: c["tasks"]["rte"].update({"data_files": {"train": "a.txt", "validation": "b.txt"}}),
            r"unsupported suffix",
        ),
    ],
)
def test_invalid_config_names_the_key(mutate, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        check_config(_broken(mutate))


def test_data_file_without_the_task_columns_is_refused(tmp_path: Path) -> None:
    bad = tmp_path / "train.jsonl"
    bad.write_text(json.dumps({"text": "hello", "label": 1}) + "\n")
    config = _broken(lambda c: c["tasks"]["mrpc"].update({"data_files": {"train": str(bad), "validation": str(bad)}}))
    with pytest.raises(ConfigError, match=r"tasks\.mrpc\.data_files\.train: .* lacks column\(s\) sentence1, sentence2"):
        check_config(config)


def test_unloadable_model_is_a_clear_error(monkeypatch) -> None:
    import huggingface_hub.constants

    from finetune_hpo.preprocess import load_tokenizer

    # This machine has no hub; make that fast and certain. huggingface_hub reads HF_HUB_OFFLINE when it is
    # imported, which an earlier test may have done: the environment alone left 46 s of retries.
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(ConfigError, match=r"model\.name_or_path: cannot load 'no-such-org/no-such-model'"):
        load_tokenizer("no-such-org/no-such-model")


def test_schemas_ship_with_the_package_and_the_workflow_validates_against_the_same_files(tmp_path: Path) -> None:
    import shutil
    import subprocess
    import sys
    import zipfile

    from finetune_hpo.config_schema import CONFIG_SCHEMA, OPTIMAL_SCHEMA
    from tests.conftest import REPO

    for schema in (CONFIG_SCHEMA, OPTIMAL_SCHEMA):
        assert (REPO / "workflow" / "schemas" / schema.name).resolve() == schema.resolve()
    # A non-editable install gets them too: they are package data of the wheel. Built from a copy, so the
    # checkout gets no build/ folder.
    source = tmp_path / "source"
    shutil.copytree(REPO / "src", source / "src", ignore=shutil.ignore_patterns("*.egg-info", "__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, source / name)
    pip_wheel = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(tmp_path)]
    subprocess.run([*pip_wheel, str(source)], check=True, timeout=300, capture_output=True)
    (wheel,) = tmp_path.glob("finetune_hpo-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert {"finetune_hpo/schemas/config.schema.yaml", "finetune_hpo/schemas/optimal.schema.yaml"} <= set(names)


@pytest.mark.parametrize(
    ("enqueued", "message"),
    [
        ({"learning_rte": 1e-5}, r"optuna.enqueue\[0\]: unknown hyperparameter\(s\) learning_rte"),
        ({"learning_rate": 1.0}, r"optuna.enqueue\[0\].learning_rate: 1.0 is outside study \w+'s space"),
        ({"batch_size": 3}, r"enqueue\[0\].batch_size: 3 is outside study squad_v2_full_finetune.s space \(choices"),
    ],
)
def test_enqueued_configurations_are_checked_against_the_space(enqueued, message) -> None:
    config = real_config()
    config["optuna"]["enqueue"] = [enqueued]
    with pytest.raises(ConfigError, match=message):
        check_config(config, check_data_files=False)


def test_enqueued_values_are_typed_by_the_space_and_other_methods_entries_dropped() -> None:
    config = real_config()
    # YAML reads 2e-5 (no dot) as a string; lora_rank alone means nothing to full fine-tuning.
    config["optuna"]["enqueue"] = [{"learning_rate": "2e-5", "num_train_epochs": 3.0}, {"lora_rank": 8}]
    full = study_settings(check_config(config, check_data_files=False), "sst2", "full_finetune")
    assert full.enqueue == ({"learning_rate": 2e-5, "num_train_epochs": 3},)
    assert isinstance(full.enqueue[0]["num_train_epochs"], int)
    assert study_settings(config, "sst2", "lora").enqueue[1] == {"lora_rank": 8}


def _problems(config: dict, **kwargs) -> list[str]:
    with pytest.raises(ConfigError) as raised:
        check_config(config, **kwargs)
    lines = str(raised.value).splitlines()
    assert lines == [f"Invalid configuration: {problem}" for problem in raised.value.problems]
    return list(raised.value.problems)


def test_schema_problems_are_one_line_each_with_the_full_key_and_a_suggestion() -> None:
    def mutate(config: dict) -> None:
        config["optuna"]["n_trails"] = config["optuna"].pop("n_trials")
        config["tasks"]["sst2"]["train_szie"] = config["tasks"]["sst2"].pop("train_size")
        config["search_spaces"]["lora"]["learning_rate"]["hihg"] = 1e-3
        config["n_trials"] = 3  # in the wrong place
        config["training"]["precision"] = "bf32"
        config["tasks"]["rte"]["data_files"] = {"train": "a.jsonl", "validation": "b.jsonl", "test": "c.jsonl"}

    assert _problems(_broken(mutate)) == [
        "n_trials: unknown key (did you mean optuna.n_trials?)",
        "optuna.n_trails: unknown key (did you mean n_trials?)",
        "search_spaces.lora.learning_rate.hihg: unknown key (did you mean high?)",
        "tasks.rte.data_files.test: unknown key (known keys here: train, validation)",
        "tasks.sst2.train_szie: unknown key (did you mean train_size?)",
        "training.precision: 'bf32' is not one of ['auto', 'fp32', 'bf16', 'fp16']",
    ]


def test_semantic_problems_are_collected_one_line_each() -> None:
    def mutate(config: dict) -> None:
        config["search_spaces"]["lora"]["learning_rate"] = {"type": "float", "low": 0.0, "high": 0.1, "log": True}
        config["optuna"]["enqueue"] = [{"learning_rte": 1e-5}]
        config["model"]["name_or_path"] = "./models/missing-bert"

    problems = _problems(_broken(mutate))
    assert problems == [
        "model.name_or_path: local model directory ./models/missing-bert does not exist",
        "optuna.enqueue[0]: unknown hyperparameter(s) learning_rte; the search spaces define batch_size, "
        "learning_rate, lora_alpha, lora_dropout, lora_rank, num_train_epochs, warmup_ratio, weight_decay",
        "search_spaces.lora.learning_rate: a log-scale range needs low > 0, got low=0.0",
    ]
    # Names first: a misspelt task is named with its closest match, before anything looks it up.
    assert _problems(_broken(lambda c: c["tasks"].update({"sst-2": c["tasks"].pop("sst2")})))[0].startswith(
        "tasks.sst-2: unknown task (did you mean sst2?)"
    )


def _local_task(tmp_path: Path, realdata: Path, **task) -> dict:
    """The real plan reduced to SST-2 on the shipped rows (60 train, 40 validation), under ``tmp_path``."""
    data = tmp_path / "data"
    data.mkdir(exist_ok=True)
    for split in ("train", "validation"):
        (data / f"{split}.jsonl").write_bytes((realdata / "sst2" / f"{split}.jsonl").read_bytes())
    config = real_config()
    files = {"train": "data/train.jsonl", "validation": "data/validation.jsonl"}
    config["tasks"] = {"sst2": {"train_size": 40, "validation_fraction": 0.5, "data_files": files} | task}
    config["vms"] = {}
    return config


def test_tier_and_selection_set_must_fit_the_rows_of_local_files(tmp_path: Path, realdata: Path) -> None:
    check_config(_local_task(tmp_path, realdata), workdir=tmp_path)  # 40 of 60 rows, 20 of 40
    assert _problems(_local_task(tmp_path, realdata, train_size=3000), workdir=tmp_path) == [
        "tasks.sst2.train_size: 3000 training examples asked, but data/train.jsonl has 60 rows; lower train_size "
        "or give a larger file",
        "tasks.sst2.validation_fraction: the selection set needs 1500 rows (0.5 x train_size 3000), but "
        "data/validation.jsonl has 40; lower validation_fraction or train_size",
    ]
    # Relative paths are the working directory's (Snakemake's --directory), and the message says where it looked.
    missing, _validation = _problems(_local_task(tmp_path, realdata), workdir=tmp_path / "elsewhere")
    assert missing == (
        f"tasks.sst2.data_files.train: file data/train.jsonl does not exist (looked for "
        f"{tmp_path / 'elsewhere' / 'data' / 'train.jsonl'})"
    )


def test_only_the_files_the_demo_generates_are_excused_from_existing(tmp_path: Path) -> None:
    check_config(demo_config(), workdir=tmp_path)  # nothing generated yet: every data file is the generator's
    config = demo_config()
    config["tasks"]["rte"]["data_files"]["train"] = "resources/synthetic/rte/train-copy.jsonl"
    assert _problems(config, workdir=tmp_path) == [
        f"tasks.rte.data_files.train: file resources/synthetic/rte/train-copy.jsonl does not exist (looked for "
        f"{tmp_path}/resources/synthetic/rte/train-copy.jsonl); the demo generates only "
        "resources/synthetic/rte/train.jsonl"
    ]
    # A generated file holds demo.examples_per_split rows, and the tier must fit them too.
    config = demo_config()
    config["tasks"]["rte"]["train_size"] = 3000
    assert _problems(config, workdir=tmp_path)[0] == (
        "tasks.rte.train_size: 3000 training examples asked, but demo.examples_per_split.train has 1000 rows; "
        "lower train_size or give a larger file"
    )
