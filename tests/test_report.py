"""The Phase 1 review table against studies with known values, and the check's failures."""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest
from optuna.distributions import FloatDistribution, IntDistribution

from finetune_hpo.config import check_config, study_settings
from finetune_hpo.export import export_best_config
from finetune_hpo.report import majority_baseline, render_csv, render_markdown, review_study
from tests.conftest import real_config

SUMMARY = {"splits": {split: {"size": 10, "sha256": "c" * 64} for split in ("train", "validation")}}
VALUES = [60.0, 72.0, 65.0, 58.0, 70.0, 80.0, 79.0, 61.0, 75.0, 77.0]


def _study() -> optuna.Study:
    study = optuna.create_study(study_name="rte_full_finetune", direction="maximize")
    distributions = {
        "learning_rate": FloatDistribution(1e-6, 1e-4, log=True),
        "num_train_epochs": IntDistribution(2, 6),
    }
    for number, value in enumerate(VALUES):
        study.add_trial(
            optuna.trial.create_trial(
                value=value,
                # The objective follows the learning rate; epochs are noise: importances must say so.
                params={"learning_rate": 1e-6 * 10 ** (2 * (value - 58) / 22), "num_train_epochs": 2 + number % 5},
                distributions=distributions,
                user_attrs={"train_seconds": 2.0, "trainable_parameters": 1000},
            )
        )
    return study


@pytest.fixture
def exported(tmp_path: Path) -> tuple[optuna.Study, Path]:
    study = _study()
    settings = study_settings(check_config(real_config()), "rte", "full_finetune")
    path = tmp_path / "rte_full_finetune_optimal.yaml"
    export_best_config(study, settings, SUMMARY, path, "journal")
    return study, path


def test_review_numbers_match_the_study(exported) -> None:
    study, path = exported
    review = review_study(
        "rte_full_finetune", path, study, expected_trials=10, n_startup_trials=4, validation_strata={"0": 30, "1": 20}
    )
    assert review.best_value == 80.0 and review.worst_value == 58.0
    assert review.gap == pytest.approx(22.0)
    assert review.best_random == 72.0  # trials 0-3
    assert review.best_guided == 80.0  # trials 4-9
    assert review.baseline == pytest.approx(60.0)  # always "entailment"
    assert review.criteria == {
        "optimal_yaml": "PASS",
        "gap_gt_5": "PASS",
        "tpe_beats_random": "PASS",
        "importances": "PASS",
    }
    assert next(iter(review.importances)) == "learning_rate"
    assert review.mean_train_seconds == 2.0
    table = render_markdown([review])
    assert "| rte_full_finetune | accuracy | 80.00 | 58.00 | 22.00 | 60.00 | 72.00 | 80.00 | learning_rate" in table
    assert "rte_full_finetune,OK" in render_csv([review])


def test_missing_and_corrupted_yaml_fail_the_check(tmp_path: Path, exported) -> None:
    study, path = exported
    missing = review_study("rte_lora", tmp_path / "rte_lora_optimal.yaml", None, expected_trials=10, n_startup_trials=4)
    assert missing.status == "MISSING" and missing.failed
    path.write_text(path.read_text().replace("best_value:", "best_valu:"))
    corrupted = review_study("rte_full_finetune", path, study, expected_trials=10, n_startup_trials=4)
    assert corrupted.status == "INVALID" and corrupted.failed
    assert "best_value" in corrupted.problem
    assert "0/1 optimal configs: 1 missing or invalid" in render_markdown([missing])


def test_wrong_trial_count_fails_the_check(exported) -> None:
    study, path = exported
    review = review_study("rte_full_finetune", path, study, expected_trials=20, n_startup_trials=4)
    assert review.status == "INVALID" and "expected rte_full_finetune with 20" in review.problem


def test_small_gap_and_no_tpe_gain_warn(tmp_path: Path) -> None:
    study = optuna.create_study(study_name="sst2_lora", direction="maximize")
    for number, value in enumerate([80.0, 81.0, 79.0, 82.0, 81.5, 80.5]):
        study.add_trial(
            optuna.trial.create_trial(
                value=value, params={"x": float(number)}, distributions={"x": FloatDistribution(0, 10)}
            )
        )
    config = check_config(real_config())
    config["optuna"]["n_trials"] = 6
    path = tmp_path / "sst2_lora_optimal.yaml"
    export_best_config(study, study_settings(config, "sst2", "lora"), SUMMARY, path, "journal")
    review = review_study("sst2_lora", path, study, expected_trials=6, n_startup_trials=4)
    assert review.criteria["gap_gt_5"] == "WARN" and review.criteria["tpe_beats_random"] == "WARN"
    assert not review.failed


def test_baselines() -> None:
    assert majority_baseline("accuracy", {"0": 70, "1": 30}) == pytest.approx(70.0)
    assert majority_baseline("f1", {"0": 50, "1": 50}) == pytest.approx(200 / 3)
    assert majority_baseline("f1", {"True": 75, "False": 25}) == pytest.approx(25.0)
