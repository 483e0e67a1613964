"""The README's command-line promises: `finetune-hpo validate`, `check` exit codes, `run-study --new-study`,
refused changes of model or data, refused unsafe storages, the progress line, and local data files in every
supported format."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from finetune_hpo.config import ConfigError, check_config, study_settings
from finetune_hpo.data import load_splits
from finetune_hpo.storage import StudyError
from finetune_hpo.study import run_study
from finetune_hpo.tasks import TASKS
from tests.conftest import REPO, demo_config
from tests.helpers import prepare_task, run_study_command, small_config, write_config

CLI_TIMEOUT = 300


def _cli(*arguments: str, cwd: Path = REPO) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "finetune_hpo.cli", *arguments],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=CLI_TIMEOUT,
    )


def test_validate_lists_the_planned_studies_and_names_a_bad_key(tmp_path: Path) -> None:
    result = _cli("validate", "--config", "config/config.yaml", "--set", "vm=vm1")
    assert result.returncode == 0, result.stderr
    assert "squad_v2_full_finetune: 5 hyperparameters, 10 trials" in result.stdout
    assert "sst2" not in result.stdout  # vm1 plans SQuAD v2 only
    bad = _cli("validate", "--config", "config/config.yaml", "--set", "optuna.n_trials=0")
    assert bad.returncode == 1
    assert "n_trials" in bad.stderr and "Traceback" not in bad.stderr


@pytest.mark.parametrize("storage", [None, "sqlite:///studies.db"])
def test_several_workers_on_a_journal_or_sqlite_are_refused(storage: str | None) -> None:
    config = demo_config()
    config["optuna"] |= {"workers_per_study": 2, "storage": storage}
    with pytest.raises(ConfigError, match=r"optuna.workers_per_study: 2 workers need a shared RDB storage"):
        check_config(config, check_data_files=False)


def test_check_exits_nonzero_when_an_export_is_missing(tmp_path: Path, tiny_model: Path) -> None:
    config = small_config(tmp_path, tiny_model, n_trials=2)
    summary = prepare_task(tmp_path, config, "sst2")
    for method in config["methods"]:
        settings = study_settings(check_config(config), "sst2", method)
        run_study(
            settings, tmp_path / "results/tokenized/sst2", summary, tmp_path / "results/studies" / settings.study_name
        )
    config_path = write_config(tmp_path / "config.yaml", config)
    scores = ["--results", str(tmp_path / "results"), "--analysis", str(tmp_path / "analysis")]
    for method in config["methods"]:
        out = tmp_path / "analysis" / f"sst2_{method}_optimal.yaml"
        exported = _cli(
            "export", "--config", str(config_path), "--task", "sst2", "--method", method,
            "--results", str(tmp_path / "results"), "--out", str(out),
        )  # fmt: skip
        assert exported.returncode == 0, exported.stderr
    passed = _cli("check", "--config", str(config_path), *scores)
    assert passed.returncode == 0, passed.stderr
    assert "sst2_full_finetune" in passed.stdout and "sst2_lora" in passed.stdout
    (tmp_path / "analysis" / "sst2_lora_optimal.yaml").unlink()
    failed = _cli("check", "--config", str(config_path), *scores)
    assert failed.returncode == 1
    assert "sst2_lora" in failed.stderr and "does not exist" in failed.stderr


def test_changed_model_or_data_is_refused_and_new_study_accepts_it(tmp_path: Path, tiny_model: Path) -> None:
    config = small_config(tmp_path, tiny_model, n_trials=1)
    summary = prepare_task(tmp_path, config, "sst2")
    study_dir = tmp_path / "results/studies/sst2_full_finetune"
    settings = study_settings(check_config(config), "sst2", "full_finetune")
    run_study(settings, tmp_path / "results/tokenized/sst2", summary, study_dir)
    changed_data = json.loads(json.dumps(summary))
    changed_data["splits"]["train"]["sha256"] = "0" * 64
    with pytest.raises(StudyError, match=r"different data_sha256"):
        run_study(settings, tmp_path / "results/tokenized/sst2", changed_data, study_dir)
    other_model = tmp_path / "other-model"
    shutil.copytree(tiny_model, other_model)
    config["model"]["name_or_path"] = str(other_model)
    moved = study_settings(check_config(config), "sst2", "full_finetune")
    with pytest.raises(StudyError, match=r"different model"):
        run_study(moved, tmp_path / "results/tokenized/sst2", summary, study_dir)
    # --new-study records the new definition and goes on: the study now runs one more trial to n_trials=2.
    config["optuna"]["n_trials"] = 2
    command = run_study_command(write_config(tmp_path / "config.yaml", config), tmp_path / "results")
    refused = subprocess.run(command, capture_output=True, text=True, timeout=CLI_TIMEOUT)
    assert refused.returncode == 1 and "--new-study" in refused.stderr
    accepted = subprocess.run([*command, "--new-study"], capture_output=True, text=True, timeout=CLI_TIMEOUT)
    assert accepted.returncode == 0, accepted.stderr
    assert "definition changed (model); continuing as asked" in accepted.stderr
    # The progress line: k/n COMPLETE, the trial, its value, the best so far, elapsed and time left.
    assert "trial 2/2 (#1) COMPLETE value=" in accepted.stderr and " left" in accepted.stderr


@pytest.mark.parametrize("suffix", [".csv", ".parquet", ".json"])
def test_local_data_files_load_in_every_supported_format(realdata: Path, tmp_path: Path, suffix: str) -> None:
    import pandas as pd

    task = TASKS["rte"]
    files = {}
    for split in ("train", "validation"):
        frame = pd.read_json(realdata / "rte" / f"{split}.jsonl", lines=True)
        path = tmp_path / f"{split}{suffix}"
        if suffix == ".csv":
            frame.to_csv(path, index=False)
        elif suffix == ".parquet":
            frame.to_parquet(path)
        else:
            frame.to_json(path, orient="records", lines=True)
        files[split] = str(path)
    config = demo_config()
    config["tasks"] = {"rte": {"train_size": 20, "validation_fraction": 0.5, "data_files": files}}
    config["vms"], config["demo"] = {}, {"synthetic_data": False, "build_model": False}
    config["model"]["name_or_path"] = str(tmp_path)
    check_config(config)  # the columns are read from the file's header, schema or first row
    splits = load_splits(task, files)
    assert (len(splits["train"]), len(splits["validation"])) == (60, 40)
    assert (
        splits["train"][0]["sentence1"]
        == json.loads((realdata / "rte" / "train.jsonl").read_text().splitlines()[0])["sentence1"]
    )


def test_validate_reads_a_profile_like_snakemake_and_checks_its_vm(tmp_path: Path) -> None:
    vm1 = _cli("validate", "--profile", "profiles/vm1")
    assert vm1.returncode == 0, vm1.stderr
    assert vm1.stdout.splitlines()[0] == "config: config/config.yaml, then profiles/vm1/vm.yaml merged on top"
    assert "2 studies planned (vm vm1)" in vm1.stdout and "sst2" not in vm1.stdout
    profile = tmp_path / "vm3"
    profile.mkdir()
    (tmp_path / "vm3.yaml").write_text("vm: vm3\n")
    (profile / "config.yaml").write_text(f"configfiles: [config/config.yaml, {tmp_path / 'vm3.yaml'}]\ncores: 1\n")
    refused = _cli("validate", "--profile", str(profile))
    assert refused.returncode == 1
    assert refused.stderr.strip().endswith(
        "Invalid configuration: vm: 'vm3' is not defined under 'vms' (defined: vm1, vm2)"
    )


def test_validate_prints_one_line_per_config_problem() -> None:
    bad = _cli("validate", "--set", "optuna.n_trails=3", "--set", "tasks.sst2.train_szie=30")
    assert bad.returncode == 1
    lines = bad.stderr.strip().splitlines()
    assert [line.split(" ERROR finetune_hpo: ", 1)[1] for line in lines] == [
        "Invalid configuration: optuna.n_trails: unknown key (did you mean n_trials?)",
        "Invalid configuration: tasks.sst2.train_szie: unknown key (did you mean train_size?)",
    ]


def test_check_with_nothing_to_review_writes_nothing_and_says_where_it_looked(tmp_path: Path) -> None:
    run = tmp_path / "run"
    (run / "config").mkdir(parents=True)
    shutil.copy(REPO / "config" / "config.yaml", run / "config" / "config.yaml")
    result = _cli("check", "--directory", str(run))
    assert result.returncode == 1
    (line,) = result.stderr.strip().splitlines()
    assert "nothing to review: none of the 8 planned studies" in line
    assert f"{run / 'analysis'}" in line and f"{run / 'results' / 'studies'}" in line
    assert sorted(path.name for path in run.rglob("*")) == ["config", "config.yaml"]  # nothing written


def test_help_is_plain_text_with_a_description_and_the_choices() -> None:
    top = _cli("--help")
    assert top.returncode == 0 and "``" not in top.stdout
    commands = ("validate", "run-study", "confirm", "export", "check", "evaluate", "portfolio", "demo-data")
    for command in commands:
        assert command in top.stdout
        text = _cli(command, "--help").stdout
        assert "``" not in text and ":func:" not in text, command
        description = text.split("\n\n")[1]  # usage, then the description paragraph
        assert len(description.split()) > 12 and not description.startswith("options"), command
    run_study = " ".join(_cli("run-study", "--help").stdout.split())
    # Methods from the method registry; tasks are the config's (a config may declare its own), so the
    # help names the built-in ones.
    assert "{full_finetune,lora,dora}" in run_study and "mrpc, rte, squad_v2, sst2" in run_study
    evaluate = " ".join(_cli("evaluate", "--help").stdout.split())
    assert "default: print them only" in evaluate and "scores.json" not in evaluate


def test_every_command_the_parser_knows_has_a_function_that_runs_it() -> None:
    from finetune_hpo.cli import COMMANDS
    from finetune_hpo.cli_parser import COMMAND_ARGUMENTS

    assert [name for name, _, _ in COMMAND_ARGUMENTS] == list(COMMANDS)


def test_evaluate_reload_names_where_the_head_comes_from_and_writes_only_with_out(
    tmp_path: Path, tiny_model: Path, realdata: Path
) -> None:
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from finetune_hpo.best_model import save_trial_model

    model = AutoModelForSequenceClassification.from_pretrained(str(tiny_model), num_labels=2)
    model = get_peft_model(model, LoraConfig(r=4, target_modules=["query", "value"], modules_to_save=["classifier"]))
    info = {
        "trial": 0,
        "task": "sst2",
        "method": "lora",
        "study_name": "sst2_lora",
        "base_model": str(tiny_model),
        "metric": "accuracy",
        "value": 50.0,
        "params": {},
        "seed": 42,
        "max_seq_length": 64,
        "precision": "fp32",
    }
    saved = save_trial_model(model, AutoTokenizer.from_pretrained(str(tiny_model)), tmp_path / "best_model", info)
    before = sorted(path.name for path in tmp_path.rglob("*"))
    data = ["--data", str(realdata / "sst2" / "validation.jsonl")]
    result = _cli("evaluate", "--model", str(saved), "--task", "sst2", *data)
    assert result.returncode == 0, result.stderr
    assert "validation.jsonl: accuracy = " in result.stdout
    # transformers' report on the base model would call the head MISSING; the adapter's trained head follows.
    assert "LOAD REPORT" not in result.stderr and "MISSING" not in result.stderr
    assert "has no trained classifier; loaded from the adapter" in result.stderr
    # A module the adapter does not hold (here the pooler, left out of modules_to_save) is said once, too.
    assert (
        "bert.pooler.dense.bias, bert.pooler.dense.weight in neither the base model nor the adapter: initialised "
        "from the study's seed, as in training"
    ) in result.stderr
    assert sorted(path.name for path in tmp_path.rglob("*")) == before  # nothing written without --out
    out = tmp_path / "scores.json"
    assert _cli("evaluate", "--model", str(saved), "--task", "sst2", *data, "--out", str(out)).returncode == 0
    assert json.loads(out.read_text())["scores"]["validation"]["size"] == 40


def test_scores_of_files_with_one_name_in_two_folders_are_kept_apart() -> None:
    from finetune_hpo.cli import score_names

    assert score_names(["a/validation.jsonl", "b/validation.jsonl"]) == {
        "a/validation": Path("a/validation.jsonl"),
        "b/validation": Path("b/validation.jsonl"),
    }
    assert list(score_names(["x/rte/validation.jsonl", "y/rte/validation.jsonl", "z.csv"])) == [
        "x/rte/validation",
        "y/rte/validation",
        "z",
    ]
    assert list(score_names(["results/data/rte/validation.jsonl"])) == ["validation"]
    with pytest.raises(ConfigError, match="the same file is given twice"):
        score_names(["a/v.jsonl", "a/../a/v.jsonl"])
