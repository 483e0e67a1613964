"""The exported optimal config: built from the stored study, schema-valid, byte-identical on re-export."""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest
import yaml
from optuna.distributions import CategoricalDistribution, FloatDistribution

from finetune_hpo.config import check_config, study_settings
from finetune_hpo.export import ExportError, load_optimal, write_optimal_config
from finetune_hpo.storage import redact_url
from tests.conftest import real_config
from tests.helpers import trial_provenance

SUMMARY = {
    "splits": {
        "train": {"size": 500, "sha256": "a" * 64, "strata": {"0": 250, "1": 250}},
        "validation": {"size": 50, "sha256": "b" * 64, "strata": {"0": 25, "1": 25}},
    }
}


def _study(values: list[float | None]) -> optuna.Study:
    study = optuna.create_study(study_name="mrpc_lora", direction="maximize")
    distributions = {
        "learning_rate": FloatDistribution(1e-6, 1e-4, log=True),
        "batch_size": CategoricalDistribution((1, 2, 4)),
    }
    for number, value in enumerate(values):
        state = optuna.trial.TrialState.COMPLETE if value is not None else optuna.trial.TrialState.FAIL
        study.add_trial(
            optuna.trial.create_trial(
                state=state,
                value=value,
                params={"learning_rate": 1e-5 * (number + 1), "batch_size": 2},
                distributions=distributions,
                user_attrs={"metrics": {"f1": value or 0.0, "accuracy": 70.0}, **trial_provenance()},
            )
        )
    study.set_user_attr("fingerprint", "0123456789abcdef")
    return study


def _settings(n_trials: int):
    config = check_config(real_config())
    config["optuna"]["n_trials"] = n_trials
    return study_settings(config, "mrpc", "lora")


def test_export_holds_the_best_trial_and_counts(tmp_path: Path) -> None:
    out = tmp_path / "analysis" / "mrpc_lora_optimal.yaml"
    document = write_optimal_config(_study([71.0, None, 84.5, 80.0]), _settings(3), SUMMARY, out, "journal")
    on_disk = load_optimal(out)
    assert on_disk == yaml.safe_load(out.read_text()) and on_disk["best_value"] == 84.5
    assert document["best_trial"] == 2
    assert document["best_hyperparameters"] == {"learning_rate": pytest.approx(3e-5), "batch_size": 2}
    assert document["n_trials"] == 3 and document["n_failed_trials"] == 1
    assert document["metric"] == "f1" and document["metric_unit"] == "percent"
    assert document["study_name"] == "mrpc_lora"
    assert document["dataset"]["train_size"] == 500 and document["dataset"]["validation_size"] == 50
    assert document["sampler"]["n_startup_trials"] == 4
    assert document["model"] == "roberta-base"


def test_reexport_is_byte_identical(tmp_path: Path) -> None:
    study = _study([71.0, 84.5, 80.0])
    first, second = tmp_path / "a.yaml", tmp_path / "b.yaml"
    write_optimal_config(study, _settings(3), SUMMARY, first, "journal")
    write_optimal_config(study, _settings(3), SUMMARY, second, "journal")
    assert first.read_bytes() == second.read_bytes()


def test_unfinished_study_is_not_exported(tmp_path: Path) -> None:
    out = tmp_path / "x.yaml"
    with pytest.raises(ExportError, match=r"2 COMPLETE trial\(s\), fewer than optuna.n_trials=10"):
        write_optimal_config(_study([70.0, 75.0]), _settings(10), SUMMARY, out, "journal")
    assert not out.exists()


def test_invalid_yaml_is_named(tmp_path: Path) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text("study_name: mrpc_lora\nbest_value: high\n")
    with pytest.raises(ExportError, match=r"broken.yaml: .*(required|not of type)"):
        load_optimal(path)


def test_storage_passwords_are_redacted() -> None:
    assert redact_url("postgresql://optuna:s3cret@db:5432/hpo") == "postgresql://optuna:***@db:5432/hpo"


def _scores(trial: int, selection: float, confirmation: float | None = 78.0) -> dict:
    def result(name: str, value: float | None, size: int) -> dict:
        return {"data_file": f"{name}.jsonl", "metric": "f1", "value": value, "standard_error": 5.0, "size": size}

    scores = {"validation": result("validation", selection, 50) | {"trial": trial}}
    scores["confirmation"] = result("confirmation", confirmation, 358 if confirmation is not None else 0)
    params = {"learning_rate": 1e-5 * (trial + 1), "batch_size": 2}
    return {
        "model": "results/studies/mrpc_lora/best_model",
        "task": "mrpc",
        "trial": trial,
        "params": params,
        "fingerprint": "0123456789abcdef",
        "scores": scores,
    }


def test_export_records_the_independent_check_and_the_confirmation_value(tmp_path: Path) -> None:
    out = tmp_path / "mrpc_lora_optimal.yaml"
    study = _study([71.0, None, 84.5, 80.0])
    document = write_optimal_config(study, _settings(3), SUMMARY, out, "journal", _scores(2, 84.5 + 0.004))
    assert document["selection_value"] == document["best_value"] == 84.5
    assert (document["confirmation_value"], document["confirmation_size"]) == (78.0, 358)
    assert document["best_model"]["reproduced"] is True
    assert document["direction"] == "maximize" and "selection set" in document["objective"]
    assert load_optimal(out)["confirmation_standard_error"] == 5.0


def test_a_score_the_saved_model_does_not_reproduce_is_flagged_and_fails_the_review(tmp_path: Path) -> None:
    from finetune_hpo.review import review_study

    out = tmp_path / "mrpc_lora_optimal.yaml"
    document = write_optimal_config(_study([71.0, 84.5, 80.0]), _settings(3), SUMMARY, out, "journal", _scores(1, 82.5))
    assert document["best_model"]["reproduced"] is False
    assert document["best_model"]["difference"] == pytest.approx(-2.0)
    review = review_study("mrpc_lora", out, None, expected_trials=3, n_startup_trials=4)
    assert review.failed and "82.5" in review.problem


def test_scores_of_another_trial_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ExportError, match="not of the exported trial 2"):
        write_optimal_config(
            _study([71.0, None, 84.5]), _settings(2), SUMMARY, tmp_path / "x.yaml", "journal", _scores(0, 71.0)
        )
    stale = _scores(2, 84.5) | {"fingerprint": "fedcba9876543210"}  # the same number in another study
    with pytest.raises(ExportError, match="not of the exported trial 2"):
        write_optimal_config(_study([71.0, None, 84.5]), _settings(2), SUMMARY, tmp_path / "x.yaml", "journal", stale)


def test_a_tie_exports_the_earlier_trial(tmp_path: Path) -> None:
    document = write_optimal_config(_study([80.0, 84.0, 84.0]), _settings(3), SUMMARY, tmp_path / "x.yaml", "journal")
    assert document["best_trial"] == 1


def test_without_a_saved_model_only_accuracy_gets_a_binomial_error(tmp_path: Path) -> None:
    document = write_optimal_config(_study([60.0, 80.0]), _settings(2), SUMMARY, tmp_path / "x.yaml", "journal")
    assert document["selection_standard_error"] is None  # MRPC's F1 is no proportion
    config = check_config(real_config())
    config["optuna"]["n_trials"] = 2
    rte = study_settings(config, "rte", "lora")
    document = write_optimal_config(_study([60.0, 80.0]), rte, SUMMARY, tmp_path / "y.yaml", "journal")
    assert document["selection_standard_error"] == pytest.approx(100 * (0.8 * 0.2 / 50) ** 0.5)
    assert document["confirmation_value"] is None and document["best_model"] is None


def _confirmation_summary(winner_values: list[float | None], top_k: int = 3) -> dict:
    """A confirmation stage's summary whose winner (trial 2) has ``winner_values`` on the held-out rows."""
    from finetune_hpo.estimates import seed_stats

    def candidate(trial: int, values: list[float | None]) -> dict:
        runs = [{"seed": 42 + i, "selection_value": 80.0, "confirmation_value": v} for i, v in enumerate(values)]
        return {
            "trial": trial,
            "params": {"learning_rate": 1e-5 * (trial + 1), "batch_size": 2},
            "runs": runs,
            "selection": seed_stats([80.0] * len(values)),
            "confirmation": seed_stats(values),
        }

    others = [candidate(trial, [70.0, 71.0, 69.0]) for trial in (0, 3)][: top_k - 1]
    return {
        "top_k": top_k,
        "seeds": [42, 43, 44],
        "ranked_on": "confirmation",
        "runs": 3 * top_k,
        "trainings": 2 * top_k,
        "candidates": [candidate(2, winner_values), *others],
        "winner_trial": 2,
        "winner_params": {"learning_rate": 1e-5 * 3, "batch_size": 2},
        "single_best_trial": 2,
        "winner_changed": False,
        "best_model": {"trial": 2, "retrained": False},
    }


def test_the_figure_to_plan_with_is_one_seed_without_confirmation(tmp_path: Path) -> None:
    study = _study([71.0, None, 84.5, 80.0])
    document = write_optimal_config(study, _settings(3), SUMMARY, tmp_path / "x.yaml", "journal", _scores(2, 84.5))
    expected = document["expected_when_retrained"]
    # The saved model's held-out score, labelled as one seed: its error covers rows, not seeds.
    assert expected["value"] == document["confirmation_value"] == 78.0
    assert expected["seeds"] == 1 and expected["includes_seed_variance"] is False
    assert expected["standard_error"] == document["confirmation_standard_error"] == 5.0
    assert "seed-to-seed variance is not included" in expected["basis"]
    # Without a rescored model there is no held-out score, and nothing pretends to be one.
    bare = write_optimal_config(study, _settings(3), SUMMARY, tmp_path / "y.yaml", "journal")
    assert bare["expected_when_retrained"]["value"] is None
    assert "optimistic" in bare["expected_when_retrained"]["basis"]


def test_the_figure_to_plan_with_is_the_winners_seed_mean_with_seed_and_row_noise(tmp_path: Path) -> None:
    import math

    from finetune_hpo.estimates import expected_max_of_normals

    study = _study([71.0, None, 84.5, 80.0])
    seeds = [78.0, 62.0, 71.0]  # the first (the saved model) is the luckiest: the mean is what to expect
    document = write_optimal_config(
        study, _settings(3), SUMMARY, tmp_path / "x.yaml", "journal", _scores(2, 84.5), _confirmation_summary(seeds)
    )
    expected = document["expected_when_retrained"]
    assert expected["value"] == pytest.approx(sum(seeds) / 3) and expected["value"] < document["confirmation_value"]
    seed_sd = (sum((v - sum(seeds) / 3) ** 2 for v in seeds) / 2) ** 0.5
    assert expected["seed_sd"] == pytest.approx(seed_sd)
    # Seeds and rows: sqrt(sd^2 / seeds + SE_rows^2), SE_rows being the saved model's error on those rows.
    assert expected["standard_error"] == pytest.approx(math.sqrt(seed_sd**2 / 3 + 5.0**2))
    assert expected["includes_seed_variance"] is True and expected["seeds"] == 3 and expected["rows"] == 358
    # The winner is the best of 3 means on these rows: the optimism is stated in points.
    assert expected["best_of_k"] == 3
    assert expected["best_of_k_optimism"] == pytest.approx(0.8463 * expected["standard_error"], rel=1e-3)
    assert expected_max_of_normals(2) == pytest.approx(0.5642, abs=1e-4)
    assert "best of 3" in expected["basis"]
    assert load_optimal(tmp_path / "x.yaml")["expected_when_retrained"] == expected
    # A diverged seed is left out of the mean and said so.
    diverged = write_optimal_config(
        study, _settings(3), SUMMARY, tmp_path / "y.yaml", "journal", _scores(2, 84.5),
        _confirmation_summary([78.0, None, 71.0]),
    )["expected_when_retrained"]  # fmt: skip
    assert (
        diverged["seeds"] == 2
        and diverged["value"] == pytest.approx(74.5)
        and "1 seed(s) diverged" in diverged["basis"]
    )


def test_a_retrained_winner_records_its_gap_to_the_study_run_and_the_check_warns_beyond_the_noise(
    tmp_path: Path,
) -> None:
    from finetune_hpo.review import review_study

    study = _study([71.0, None, 84.5, 80.0])
    summary = _confirmation_summary([78.0, 62.0, 71.0])
    for retrained_value, within in ((84.5, True), (60.0, False)):
        summary["best_model"] = {"trial": 2, "retrained": True, "study_value": 84.5, "retrained_value": retrained_value}
        out = tmp_path / f"mrpc_lora_{retrained_value}_optimal.yaml"
        document = write_optimal_config(
            study, _settings(3), SUMMARY, out, "journal", _scores(2, retrained_value), summary
        )
        best_model = document["best_model"]
        # Reproduced: the reload scores what the export claims for the model it holds, the retraining.
        assert best_model["reproduced"] is True and best_model["retrained_value"] == retrained_value
        assert best_model["retrained_gap"] == pytest.approx(retrained_value - 84.5)
        assert best_model["retrained_gap_within_noise"] is within
        out.rename(tmp_path / "mrpc_lora_optimal.yaml")
        review = review_study(
            "mrpc_lora", tmp_path / "mrpc_lora_optimal.yaml", study, expected_trials=3, n_startup_trials=4
        )
        assert review.criteria["retrained_gap"] == ("PASS" if within else "WARN") and not review.failed


def test_a_reload_that_predicts_other_rows_is_not_reproduced_even_at_the_same_score(tmp_path: Path) -> None:
    scores = _scores(2, 84.5)
    scores["scores"]["validation"] |= {"prediction_agreement": 0.96, "predictions_compared": 50}
    document = write_optimal_config(
        _study([71.0, None, 84.5]), _settings(2), SUMMARY, tmp_path / "x.yaml", "journal", scores
    )
    assert document["best_model"]["difference"] == 0 and document["best_model"]["reproduced"] is False
    assert document["best_model"]["prediction_agreement"] == 0.96
