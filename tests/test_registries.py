"""One entry per method, task and metric: the registries, a third peft method (DoRA) end to end, and a
classification task declared in the config alone (CoLA-style acceptability scored by Matthews correlation)."""

from __future__ import annotations

import json
import random
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from finetune_hpo.config import ConfigError, check_config, study_settings
from finetune_hpo.demo import sst2_row
from finetune_hpo.methods import METHODS, METHODS_BY_NAME
from finetune_hpo.metrics import METRICS, constant_prediction_baseline
from finetune_hpo.tasks import TASKS
from tests.conftest import REPO, real_config
from tests.helpers import assert_trials_learned, prepare_task, small_config


def test_every_method_and_metric_entry_is_complete() -> None:
    assert METHODS == ("full_finetune", "lora", "dora")
    colours = [spec.colour for spec in METHODS_BY_NAME.values()]
    assert len(set(colours)) == len(colours)  # one colour per method in every figure
    for spec in METHODS_BY_NAME.values():
        assert spec.title and spec.card
        assert set(spec.required) <= set(spec.parameters)
        assert spec.is_adapter == (spec.name != "full_finetune")
    for problem_type, metrics in METRICS.items():
        for spec in metrics.values():
            assert spec.problem_type == problem_type and spec.unit in ("percent", "x100") and spec.description
    # Each built-in task's metric is one its scorer produces.
    for task in TASKS.values():
        assert task.metric in METRICS[task.problem_type]
    # And each registry entry is a metric its problem type's scorer returns (validate checks the registry only).
    import numpy as np

    from finetune_hpo.metrics import classification_metrics, squad_v2_metrics

    produced = {
        "classification": classification_metrics(np.array([0, 1, 1]), np.array([0, 1, 0]), num_labels=2),
        "extractive_qa": squad_v2_metrics({"a": "x", "b": ""}, {"a": ["x"], "b": []}),
    }
    for problem_type, metrics in METRICS.items():
        assert set(metrics) <= set(produced[problem_type]), problem_type


def test_constant_prediction_baselines_come_from_the_metric_registry() -> None:
    assert constant_prediction_baseline("classification", "accuracy", {"0": 70, "1": 30}) == pytest.approx(70.0)
    assert constant_prediction_baseline("classification", "f1", {"0": 50, "1": 50}) == pytest.approx(200 / 3)
    assert constant_prediction_baseline("classification", "matthews_correlation", {"0": 70, "1": 30}) == 0.0
    assert constant_prediction_baseline("extractive_qa", "f1", {"True": 75, "False": 25}) == pytest.approx(25.0)


def test_an_unknown_method_is_a_config_error() -> None:
    config = real_config()
    config["methods"] = ["full_finetune", "ia3"]
    with pytest.raises(ConfigError, match=r"methods: unknown method 'ia3'.*known methods: full_finetune, lora, dora"):
        check_config(config, check_data_files=False)
    config["methods"] = ["dora"]
    config["search_spaces"].pop("dora")
    with pytest.raises(ConfigError, match=r"search_spaces.dora: missing"):
        check_config(config, check_data_files=False)


def _acceptability_rows(n: int, seed: int) -> list[dict]:
    """CoLA-style rows no code names: a demo sentence (acceptable) or the same words with two neighbours
    swapped (unacceptable)."""
    rng = random.Random(seed)
    rows = []
    for index in range(n):
        words = sst2_row(rng, index)["sentence"].split()
        acceptable = rng.random() < 0.5
        if not acceptable:
            k = rng.randrange(len(words) - 1)
            words[k], words[k + 1] = words[k + 1], words[k]
        rows.append({"text": " ".join(words), "grammatical": int(acceptable), "idx": index})
    return rows


def _acceptability_task(workdir: Path, train_size: int = 160) -> dict:
    data = workdir / "data"
    data.mkdir(parents=True, exist_ok=True)
    for split, size, seed in (("train", 300, 0), ("validation", 200, 1)):
        (data / f"{split}.jsonl").write_text("".join(json.dumps(row) + "\n" for row in _acceptability_rows(size, seed)))
    return {
        "train_size": train_size,
        "validation_fraction": 0.5,
        "data_files": {split: str(data / f"{split}.jsonl") for split in ("train", "validation")},
        "definition": {
            "text_columns": ["text"],
            "label_column": "grammatical",
            "labels": ["unacceptable", "acceptable"],
            "metric": "matthews_correlation",
            "extra_metrics": ["accuracy"],
        },
    }


def test_a_task_declared_in_the_config_is_checked_like_a_built_in_one(tmp_path: Path) -> None:
    config = small_config(tmp_path, tmp_path)
    config["tasks"] = {"acceptability": _acceptability_task(tmp_path)}
    settings = study_settings(check_config(config), "acceptability", "lora")
    assert settings.task.metric == "matthews_correlation" and settings.task.label_names == (
        "unacceptable",
        "acceptable",
    )
    assert settings.task.text_columns == ("text",) and settings.task.label_column == "grammatical"

    def refused(change, message: str) -> None:
        broken = small_config(tmp_path, tmp_path)
        broken["tasks"] = {"acceptability": _acceptability_task(tmp_path)}
        change(broken["tasks"]["acceptability"])
        with pytest.raises(ConfigError, match=message):
            check_config(broken)

    refused(
        lambda task: task["definition"].update(metric="auc"),
        r"tasks.acceptability.definition.metric: the classification scorer produces no metric 'auc'; it produces "
        r"accuracy, f1, matthews_correlation",
    )
    refused(
        lambda task: task["definition"].update(metric="f1", labels=["a", "b", "c"]),
        r"definition.metric: f1 is defined for two labels, the task has 3",
    )
    refused(
        lambda task: task["definition"].update(problem_type="extractive_qa"),
        r"problem_type: .extractive_qa. is not one of",
    )
    refused(lambda task: task.pop("data_files"), r"tasks.acceptability.data_files: missing")
    refused(lambda task: task["definition"].update(text_columns=["sentence"]), r"lacks column\(s\) sentence")
    sst2 = small_config(tmp_path, tmp_path)
    sst2["tasks"]["sst2"]["definition"] = _acceptability_task(tmp_path)["definition"]
    with pytest.raises(ConfigError, match=r"tasks.sst2.definition: sst2 is a built-in task"):
        check_config(sst2, check_data_files=False)


def test_a_dora_study_saves_a_dora_adapter_that_reloads_and_reproduces(tmp_path: Path, tiny_model: Path) -> None:
    from finetune_hpo.evaluation import score_exported_model
    from finetune_hpo.export import export_study, load_optimal
    from finetune_hpo.storage import StudyPaths
    from finetune_hpo.study import run_study

    config = small_config(tmp_path, tiny_model, tasks=("rte",), n_trials=3, train_size=160)
    config["methods"] = ["dora"]
    summary = prepare_task(tmp_path, config, "rte")
    settings = study_settings(check_config(config), "rte", "dora")
    paths = StudyPaths(tmp_path / "results" / "studies" / "rte_dora")
    study = run_study(settings, tmp_path / "results/tokenized/rte", summary, paths.root)
    assert_trials_learned([t.value for t in study.trials], summary, "accuracy")
    adapter = json.loads((paths.best_model / "adapter_config.json").read_text())
    assert adapter["use_dora"] is True and adapter["peft_type"] == "LORA"
    assert "A DoRA adapter" in (paths.best_model / "README.md").read_text()
    data = tmp_path / "results/data/rte"
    files = {"validation": data / "validation.jsonl", "confirmation": data / "confirmation.jsonl"}
    score_exported_model(settings, paths.root, files, paths.root / "best_model_scores.json")
    out = tmp_path / "analysis" / "rte_dora_optimal.yaml"
    export_study(settings, paths.root, data / "summary.json", out, paths.root / "best_model_scores.json")
    document = load_optimal(out)
    assert document["method"] == "dora" and document["best_model"]["reproduced"]
    assert document["best_model"]["prediction_agreement"] == 1.0


def _snakemake(workdir: Path, *args: str) -> subprocess.CompletedProcess:
    result = subprocess.run(
        [sys.executable, "-m", "snakemake", "--profile", "profiles/demo", "--directory", str(workdir), *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert result.returncode == 0, f"{result.stdout[-3000:]}\n{result.stderr[-4000:]}"
    return result


@pytest.mark.slow
def test_a_declared_task_and_the_third_method_run_through_the_workflow(tmp_path: Path, tiny_model: Path) -> None:
    """The whole workflow on a task no code names, with LoRA and DoRA: studies, exports, the saved models'
    rescoring, the review and the figures."""
    from finetune_hpo.export import load_optimal

    workdir = tmp_path / "run"
    config = small_config(workdir, tiny_model, n_trials=3)
    config["tasks"] = {"acceptability": _acceptability_task(workdir)}
    config["methods"] = ["lora", "dora"]
    config["vms"] = {"vm1": ["acceptability"]}
    for space in config["search_spaces"].values():
        space["num_train_epochs"] = {"type": "int", "low": 2, "high": 3}
    (workdir / "config").mkdir(parents=True)
    (workdir / "config" / "config.yaml").write_text(yaml.safe_dump(config))
    _snakemake(workdir)
    summary = json.loads((workdir / "results/data/acceptability/summary.json").read_text())
    for method in ("lora", "dora"):
        document = load_optimal(workdir / "analysis" / f"acceptability_{method}_optimal.yaml")
        assert document["metric"] == "matthews_correlation" and document["metric_unit"] == "x100"
        assert document["method"] == method and document["best_model"]["reproduced"]
        trials = (workdir / f"results/studies/acceptability_{method}/trials.csv").read_text().splitlines()[1:]
        assert_trials_learned([float(line.split(",")[2]) for line in trials], summary, "matthews_correlation")
        for figure in ("history", "importances", "slice"):
            assert (workdir / f"results/figures/acceptability_{method}/{figure}.png").is_file()
    review = (workdir / "results" / "summary.md").read_text()
    assert "acceptability_lora" in review and "acceptability_dora" in review and "2/2 optimal configs" in review
    assert (workdir / "results/figures/lora_vs_full.png").is_file()
