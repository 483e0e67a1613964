"""The Phase 1 review table against studies with known values, and the check's failures."""

from __future__ import annotations

import csv
import io
import math
from pathlib import Path
from typing import Any

import optuna
import pytest
import yaml
from optuna.distributions import FloatDistribution, IntDistribution
from optuna.trial import TrialState

from finetune_hpo.config import check_config, study_settings
from finetune_hpo.export import render_yaml, write_optimal_config
from finetune_hpo.report import TABLE_COLUMNS, render_csv, render_markdown, render_terminal, table_rows
from finetune_hpo.review import StudyReview, review_study
from tests.conftest import real_config
from tests.helpers import trial_provenance

SUMMARY = {"splits": {split: {"size": 10, "sha256": "c" * 64} for split in ("train", "validation")}}
FINGERPRINT = "0123456789abcdef"  # what a real study stores (definition.fingerprint)
VALUES = [60.0, 72.0, 65.0, 58.0, 70.0, 80.0, 79.0, 61.0, 75.0, 77.0]


def _study() -> optuna.Study:
    study = optuna.create_study(study_name="rte_full_finetune", direction="maximize")
    study.set_user_attr("fingerprint", FINGERPRINT)
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
                user_attrs={"train_seconds": 2.0, "trainable_parameters": 1000, **trial_provenance()},
            )
        )
    return study


def _rewrite_optimal(path: Path, **split_keys: Any) -> None:
    """Rewrite an exported YAML with ``split_keys`` replaced (exported without a saved model, it holds the
    binomial selection error at the validation size and no confirmation value)."""
    document = yaml.safe_load(path.read_text())
    path.write_text(render_yaml({**document, **split_keys}))


@pytest.fixture
def exported(tmp_path: Path) -> tuple[optuna.Study, Path]:
    study = _study()
    settings = study_settings(check_config(real_config()), "rte", "full_finetune")
    path = tmp_path / "rte_full_finetune_optimal.yaml"
    write_optimal_config(study, settings, SUMMARY, path, "journal")
    return study, path


def _csv_row(review: StudyReview) -> dict[str, str]:
    return next(csv.DictReader(io.StringIO(render_csv([review]))))


def _cell(review: StudyReview, column: str) -> str:
    return dict(zip(TABLE_COLUMNS, table_rows([review])[0], strict=True))[column]


def test_review_numbers_match_the_study(exported) -> None:
    study, path = exported
    review = review_study(
        "rte_full_finetune", path, study, expected_trials=10, n_startup_trials=4, validation_strata={"0": 30, "1": 20}
    )
    assert review.best_value == 80.0 and review.worst_value == 58.0
    assert review.gap == pytest.approx(22.0)
    assert review.best_random == 72.0  # trials 0-3, counted: these trials carry no startup_trial attribute
    assert review.best_guided == 80.0  # trials 4-9
    assert "10 of 10 COMPLETE trials predate the startup_trial attribute" in review.startup_note
    assert review.baseline == pytest.approx(60.0)  # always "entailment"
    assert review.criteria == {
        "optimal_yaml": "PASS",
        "gap_gt_5": "PASS",
        "tpe_beats_random": "PASS",
        "importances": "PASS",
        # The best trial's learning rate is this study's highest (1e-4, the range's top): the best may lie beyond.
        "range_edges": "WARN",
    }
    assert review.range_edges == [
        "exported trial 5: learning_rate 0.0001 is in the top tenth of 1e-06 to 0.0001, log scale: widen the high end",
        "exported trial 5: num_train_epochs 2 is in the bottom tenth of 2 to 6: widen the low end",
    ]
    assert next(iter(review.importances)) == "learning_rate"
    assert review.mean_train_seconds == 2.0
    table = render_markdown([review])
    assert (
        "| rte_full_finetune | accuracy | - | 80.00 ± 12.65 (n=10) | - | - | - | - | 58.00 | 22.00 | 12.65 | 60.00 "
        "| 72.00 "
        "| 80.00 "
        "| - "  # no portfolio: the study did not start from other studies' trials
        "| learning_rate" in table
    )
    assert "| PASS, noise=35.78 | PASS, P(random)=0.60 | PASS |" in table
    assert "the selection value is the maximum over trials on the set that chose it" in table.lower()
    assert "rte_full_finetune: 10 of 10 COMPLETE trials predate" in table
    assert "rte_full_finetune,OK" in render_csv([review])
    assert "PASS P=0.60" in render_terminal([review])


def test_missing_and_corrupted_yaml_fail_the_check(tmp_path: Path, exported) -> None:
    study, path = exported
    missing = review_study("rte_lora", tmp_path / "rte_lora_optimal.yaml", None, expected_trials=10, n_startup_trials=4)
    assert missing.status == "MISSING" and missing.failed
    path.write_text(path.read_text().replace("best_value:", "best_valu:"))
    corrupted = review_study("rte_full_finetune", path, study, expected_trials=10, n_startup_trials=4)
    assert corrupted.status == "INVALID" and corrupted.failed
    assert "best_value" in corrupted.problem
    assert "0/1 optimal configs: 1 missing or invalid" in render_markdown([missing])
    assert _cell(missing, "top hyperparameters (importance)") == missing.problem
    assert _cell(missing, "gap > 5") == "FAIL"


def test_wrong_trial_count_fails_the_check(exported) -> None:
    study, path = exported
    review = review_study("rte_full_finetune", path, study, expected_trials=20, n_startup_trials=4)
    assert review.status == "INVALID" and "expected rte_full_finetune with 20" in review.problem


def test_small_gap_and_no_tpe_gain_warn(tmp_path: Path) -> None:
    study = optuna.create_study(study_name="sst2_lora", direction="maximize")
    study.set_user_attr("fingerprint", FINGERPRINT)
    for number, value in enumerate([80.0, 81.0, 79.0, 82.0, 81.5, 80.5]):
        study.add_trial(
            optuna.trial.create_trial(
                value=value,
                params={"x": float(number)},
                distributions={"x": FloatDistribution(0, 10)},
                user_attrs=trial_provenance(),
            )
        )
    config = check_config(real_config())
    config["optuna"]["n_trials"] = 6
    path = tmp_path / "sst2_lora_optimal.yaml"
    write_optimal_config(study, study_settings(config, "sst2", "lora"), SUMMARY, path, "journal")
    review = review_study("sst2_lora", path, study, expected_trials=6, n_startup_trials=4)
    assert review.criteria["gap_gt_5"] == "WARN" and review.criteria["tpe_beats_random"] == "WARN"
    assert not review.failed


def _study_with_failed_startup_trial(*, record_startup: bool) -> optuna.Study:
    """Trial 1 FAILs, so TPE (counting COMPLETE/PRUNED trials) drew trials 0-4 at random, not 0-3."""
    study = optuna.create_study(study_name="mrpc_lora", direction="maximize")
    study.set_user_attr("fingerprint", FINGERPRINT)
    outcomes = [(60.0, True), (None, True), (65.0, True), (62.0, True), (85.0, True)]
    outcomes += [(70.0, False), (75.0, False), (72.0, False)]
    for number, (value, startup) in enumerate(outcomes):
        study.add_trial(
            optuna.trial.create_trial(
                state=TrialState.COMPLETE if value is not None else TrialState.FAIL,
                value=value,
                params={"x": float(number)},
                distributions={"x": FloatDistribution(0, 10)},
                user_attrs=({"startup_trial": startup} if record_startup else {}) | trial_provenance(),
            )
        )
    return study


def _review_mrpc(tmp_path: Path, study: optuna.Study) -> StudyReview:
    config = check_config(real_config())
    config["optuna"]["n_trials"] = 7
    path = tmp_path / "mrpc_lora_optimal.yaml"
    write_optimal_config(study, study_settings(config, "mrpc", "lora"), SUMMARY, path, "journal")
    return review_study("mrpc_lora", path, study, expected_trials=7, n_startup_trials=4)


def test_startup_labels_follow_the_recorded_attribute_not_the_count(tmp_path: Path) -> None:
    review = _review_mrpc(tmp_path, _study_with_failed_startup_trial(record_startup=True))
    assert review.best_random == 85.0  # trial 4 was random: the FAIL trial 1 did not count towards start-up
    assert review.best_guided == 75.0
    assert review.criteria["tpe_beats_random"] == "WARN"
    assert review.startup_note == ""
    assert "Start-up labels" not in render_markdown([review])


def test_studies_without_the_attribute_fall_back_to_counting_and_say_so(tmp_path: Path) -> None:
    review = _review_mrpc(tmp_path, _study_with_failed_startup_trial(record_startup=False))
    assert review.best_random == 65.0  # the count takes trial 4 for a guided one
    assert review.best_guided == 85.0
    assert review.criteria["tpe_beats_random"] == "PASS"
    assert review.startup_note.startswith("7 of 7 COMPLETE trials predate the startup_trial attribute")
    assert "mrpc_lora: 7 of 7 COMPLETE trials" in render_markdown([review])


def test_chance_that_tpe_wins_at_random_is_guided_over_all(tmp_path: Path) -> None:
    review = _review_mrpc(tmp_path, _study_with_failed_startup_trial(record_startup=True))
    assert review.p_tpe_beats_random_by_chance == pytest.approx(3 / 7)  # k=3 guided, m=4 random COMPLETE trials
    assert _cell(review, "TPE > random") == "WARN, P(random)=0.43"
    assert float(_csv_row(review)["p_tpe_beats_random_by_chance"]) == pytest.approx(3 / 7)


def test_standard_error_is_binomial_at_the_selection_size(exported) -> None:
    study, path = exported
    older = review_study("rte_full_finetune", path, study, expected_trials=10, n_startup_trials=4)
    assert older.selection_size == 10  # dataset.validation_size
    assert older.selection_standard_error == pytest.approx(100 * math.sqrt(0.8 * 0.2 / 10))
    _rewrite_optimal(path, selection_value=80.0, selection_size=50, selection_standard_error=None)
    review = review_study("rte_full_finetune", path, study, expected_trials=10, n_startup_trials=4)
    standard_error = 100 * math.sqrt(0.8 * 0.2 / 50)
    assert review.selection_size == 50  # selection_size wins over dataset.validation_size
    assert review.selection_standard_error == pytest.approx(standard_error)
    assert review.gap_noise == pytest.approx(2 * math.sqrt(2) * standard_error)
    assert _cell(review, "SE") == f"{standard_error:.2f}"
    assert float(_csv_row(review)["selection_standard_error"]) == pytest.approx(standard_error)
    assert _cell(review, "gap > 5") == f"PASS, noise={2 * math.sqrt(2) * standard_error:.2f}"


def test_confirmation_renders_dash_for_older_yaml_and_value_when_exported(exported) -> None:
    study, path = exported
    older = review_study("rte_full_finetune", path, study, expected_trials=10, n_startup_trials=4)
    assert older.confirmation_value is None
    assert _cell(older, "confirmation ± SE (n)") == "-"
    assert _csv_row(older)["confirmation_value"] == ""
    _rewrite_optimal(
        path,
        selection_value=80.0,
        selection_size=50,
        selection_standard_error=5.66,
        confirmation_value=76.0,
        confirmation_size=50,
        confirmation_standard_error=6.04,
    )
    review = review_study("rte_full_finetune", path, study, expected_trials=10, n_startup_trials=4)
    assert _cell(review, "selection ± SE (n)") == "80.00 ± 5.66 (n=50)"
    assert _cell(review, "confirmation ± SE (n)") == "76.00 ± 6.04 (n=50)"
    assert float(_csv_row(review)["confirmation_value"]) == pytest.approx(76.0)
    _rewrite_optimal(path, selection_size=50, confirmation_value=None, confirmation_size=0)
    no_confirmation = review_study("rte_full_finetune", path, study, expected_trials=10, n_startup_trials=4)
    assert _cell(no_confirmation, "confirmation ± SE (n)") == "-"


def test_confirmation_columns_show_the_winner_its_seed_spread_and_the_paired_test() -> None:
    review = StudyReview(
        "rte_lora",
        metric="accuracy",
        confirmed_trial=7,
        confirmed_mean=80.1667,
        confirmed_sd=0.7638,
        confirmed_seeds=3,
        winner_changed=True,
        separable_from_runner_up=False,
        runner_up_p_value=0.0832,
    )
    assert _cell(review, "confirmed winner (mean ± sd, seeds)") == "trial 7: 80.17 ± 0.76 (3)"
    assert _cell(review, "winner changed") == "yes"
    assert _cell(review, "separable from runner-up (p)") == "no (0.083)"
    row = _csv_row(review)
    assert row["confirmed_trial"] == "7" and row["winner_changed"] == "True"
    assert _cell(StudyReview("sst2_lora", metric="accuracy"), "winner changed") == "-"


def _tied_study(values: list[float]) -> optuna.Study:
    study = optuna.create_study(study_name="rte_full_finetune", direction="maximize")
    study.set_user_attr("fingerprint", FINGERPRINT)
    distributions = {
        "learning_rate": FloatDistribution(1e-6, 1e-4, log=True),
        "weight_decay": FloatDistribution(0.0, 0.3),
    }
    for number, value in enumerate(values):
        study.add_trial(
            optuna.trial.create_trial(
                value=value,
                params={"learning_rate": 1e-6 * 1.5**number, "weight_decay": 0.03 * ((7 * number) % 10)},
                distributions=distributions,
                user_attrs=trial_provenance(),
            )
        )
    return study


def test_importances_warn_when_most_trials_tie_and_pass_when_they_spread(tmp_path: Path) -> None:
    settings = study_settings(check_config(real_config()), "rte", "full_finetune")
    path = tmp_path / "rte_full_finetune_optimal.yaml"
    # The demo's RTE full fine-tuning: 8 of 10 trials tie at 85.00; fANOVA still gave weight decay 0.58.
    tied = _tied_study([85.0, 85.0, 74.0, 85.0, 85.0, 85.0, 80.0, 85.0, 85.0, 85.0])
    write_optimal_config(tied, settings, SUMMARY, path, "journal")
    review = review_study("rte_full_finetune", path, tied, expected_trials=10, n_startup_trials=4)
    assert review.criteria["importances"] == "WARN" and review.importances == {}
    assert review.importance_note == "too tied to rank: 8 of 10 COMPLETE trials scored 85.00 (more than 50% tied)"
    assert _cell(review, "top hyperparameters (importance)") == review.importance_note
    assert _cell(review, "importances") == "WARN"
    assert "WARN (tied)" in render_terminal([review])
    # The rule is stated where the table is read.
    assert "no value (to 2 decimals) shared by more than 50% of them" in render_markdown([review])
    # Half tied is not more than half: the other five still spread out, and fANOVA ranks.
    spread = _tied_study([85.0, 85.0, 74.0, 85.0, 60.0, 85.0, 80.0, 70.0, 85.0, 65.0])
    write_optimal_config(spread, settings, SUMMARY, path, "journal")
    review = review_study("rte_full_finetune", path, spread, expected_trials=10, n_startup_trials=4)
    assert review.criteria["importances"] == "PASS" and set(review.importances) == {"learning_rate", "weight_decay"}


def _demo_like_reviews() -> list[StudyReview]:
    """The demo's eight studies as its review saw them (the longest names and cells), and two that failed."""
    reviews = []
    for task, metric in (("squad_v2", "f1"), ("sst2", "accuracy"), ("mrpc", "f1"), ("rte", "accuracy")):
        for method, top in (("full_finetune", "num_train_epochs"), ("lora", "learning_rate")):
            confirmed = task == "sst2"
            reviews.append(
                StudyReview(
                    f"{task}_{method}",
                    metric=metric,
                    n_trials=10,
                    expected_value=62.83 if confirmed else 100.0,
                    expected_standard_error=13.08 if confirmed else 3.35,
                    expected_seeds=3 if confirmed else 1,
                    selection_value=100.0,
                    selection_size=200,
                    selection_standard_error=3.43,
                    confirmation_value=64.67,
                    confirmation_size=200,
                    confirmation_standard_error=3.35,
                    worst_value=14.25,
                    gap=85.75,
                    gap_noise=9.7,
                    baseline=24.5,
                    best_random=61.0,
                    best_guided=61.67,
                    p_tpe_beats_random_by_chance=0.6,
                    importances={} if task == "rte" else {top: 0.51, "weight_decay": 0.26, "warmup_ratio": 0.1},
                    importance_note="too tied to rank: 8 of 10 COMPLETE trials scored 85.00 (more than 50% tied)"
                    if task == "rte"
                    else "",
                    confirmed_trial=7 if confirmed else None,
                    confirmed_mean=62.83 if confirmed else None,
                    confirmed_sd=22.32 if confirmed else None,
                    confirmed_seeds=3 if confirmed else None,
                    winner_changed=True if confirmed else None,
                    separable_from_runner_up=False if confirmed else None,
                    runner_up_p_value=0.291 if confirmed else None,
                    criteria={
                        "optimal_yaml": "PASS",
                        "gap_gt_5": "PASS",
                        "tpe_beats_random": "WARN",
                        "importances": "WARN" if task == "rte" else "PASS",
                        **({"retrained_gap": "WARN"} if confirmed else {}),
                    },
                    retrained_gap=-24.5 if confirmed else None,
                    retrained_gap_noise=7.14 if confirmed else None,
                )
            )
    missing = "/home/someone/projects/finetune-hpo/myrun/analysis/squad_v2_full_finetune_optimal.yaml does not exist"
    reviews.append(StudyReview("squad_v2_full_finetune", status="MISSING", problem=missing))
    reviews.append(
        StudyReview(
            "mrpc_lora",
            status="OK",
            metric="f1",
            problem="the saved best model scores 80.0000 on the selection set, the study exported 87.4419, and "
            "predicts 91.0% of its rows as the study did (see results/studies/mrpc_lora/best_model)",
            criteria={"optimal_yaml": "PASS", "best_model_reproduced": "FAIL"},
        )
    )
    return reviews


def test_terminal_review_fits_120_columns_and_points_to_the_full_table() -> None:
    reviews = _demo_like_reviews()
    terminal = render_terminal(reviews)
    lines = terminal.splitlines()
    assert max(len(line) for line in lines) <= 120, max(lines, key=len)
    # Every study has its row, with the figure to plan with and the verdicts.
    assert sum(line.startswith(tuple(f"{review.study_name} " for review in reviews)) for line in lines) == len(reviews)
    assert "62.83 ± 13.08 (3)" in terminal and "100.00 ± 3.35 (1*)" in terminal
    assert any(line.startswith("rte_full_finetune ") and line.endswith("WARN (tied)") for line in lines)
    # What has no column gets a line: a missing export, a model that does not reproduce, a retrained gap.
    assert "squad_v2_full_finetune: /home/someone" in terminal and "MISSING" in terminal
    assert "mrpc_lora: FAIL best_model_reproduced; the saved best model scores 80.0000" in terminal
    assert (
        "sst2_full_finetune: WARN retrained_gap (the winner retrained - its study run: -24.50 points, noise 7.14)"
        in (terminal)
    )
    assert "summary.md and summary.csv" in terminal
    # The full table stays whole in the markdown.
    assert all(column in render_markdown(reviews) for column in TABLE_COLUMNS)


def test_expected_when_retrained_column_says_when_it_is_one_seed_without_seed_noise() -> None:
    confirmed = StudyReview(
        "sst2_lora", metric="accuracy", expected_value=82.8333, expected_standard_error=4.37, expected_seeds=3
    )
    one_seed = StudyReview(
        "rte_lora", metric="accuracy", expected_value=84.5, expected_standard_error=2.56, expected_seeds=1
    )
    assert _cell(confirmed, "expected when retrained ± SE (seeds)") == "82.83 ± 4.37 (3 seeds)"
    assert _cell(one_seed, "expected when retrained ± SE (seeds)") == "84.50 ± 2.56 (1 seed, no seed noise)"
    assert _cell(StudyReview("rte_full_finetune", metric="accuracy"), "expected when retrained ± SE (seeds)") == "-"
    terminal = render_terminal([confirmed, one_seed])
    assert "82.83 ± 4.37 (3)" in terminal and "84.50 ± 2.56 (1*)" in terminal and "(1*) one seed" in terminal


def test_a_winner_at_the_edge_of_its_range_is_flagged_with_the_way_to_widen(tmp_path: Path) -> None:
    from optuna.distributions import CategoricalDistribution

    from finetune_hpo.report import render_terminal

    distributions = {
        "learning_rate": FloatDistribution(1e-6, 1e-4, log=True),
        "lora_rank": CategoricalDistribution((4, 8, 16, 32, 64)),
        "warmup_ratio": FloatDistribution(0.0, 0.3),
        "batch_size": CategoricalDistribution((16, 32)),
    }

    def study_with(best: dict) -> optuna.Study:
        study = optuna.create_study(study_name="rte_lora", direction="maximize")
        study.set_user_attr("fingerprint", FINGERPRINT)
        middle = {"learning_rate": 1e-5, "lora_rank": 16, "warmup_ratio": 0.15, "batch_size": 16}
        for number, value in enumerate([70.0, 72.0, 71.0, 69.0, 80.0, 73.0]):
            study.add_trial(
                optuna.trial.create_trial(
                    value=value,
                    params=best if number == 4 else middle | {"learning_rate": 1e-5 * (1 + number / 10)},
                    distributions=distributions,
                    user_attrs=trial_provenance(),
                )
            )
        return study

    config = check_config(real_config())
    config["optuna"]["n_trials"] = 6
    settings = study_settings(config, "rte", "lora")
    # At the top of the learning rate's log range, at the largest rank, at 0 warm-up (a range starting at 0 cannot
    # widen lower), at batch 32 (two choices: both ends, which says nothing).
    edge = {"learning_rate": 9.2e-5, "lora_rank": 64, "warmup_ratio": 0.0, "batch_size": 32}
    path = tmp_path / "rte_lora_optimal.yaml"
    write_optimal_config(study_with(edge), settings, SUMMARY, path, "journal")
    review = review_study("rte_lora", path, study_with(edge), expected_trials=6, n_startup_trials=4)
    assert review.criteria["range_edges"] == "WARN" and not review.failed
    assert review.range_edges == [
        "exported trial 4: learning_rate 9.2e-05 is in the top tenth of 1e-06 to 0.0001, log scale: widen the high end",
        "exported trial 4: lora_rank 64 is the largest of choices 4, 8, 16, 32, 64: add a larger choice",
    ]
    assert "Range edges" in render_markdown([review]) and "lora_rank 64 is the largest" in render_markdown([review])
    # The terminal names each parameter and its end in a few words; summary.md says how to widen.
    terminal = " ".join(render_terminal([review]).split())
    assert "WARN range_edges (exported trial 4: learning_rate high, lora_rank high)" in terminal
    assert "lora_rank 64" in _csv_row(review)["range_edges"]
    # Inside its range (the middle tenth-to-nine-tenths on the log scale): nothing to say.
    inside = {"learning_rate": 1e-5, "lora_rank": 16, "warmup_ratio": 0.1, "batch_size": 32}
    write_optimal_config(study_with(inside), settings, SUMMARY, path, "journal")
    review = review_study("rte_lora", path, study_with(inside), expected_trials=6, n_startup_trials=4)
    assert review.criteria["range_edges"] == "PASS" and review.range_edges == []
