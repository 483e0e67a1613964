"""The export's account of its independent check: the exported trial's saved model, reloaded by plain
transformers/peft code in another process (rule score_best_model), against what the export claims for it,
and its score on held-out rows, each with its size and standard error."""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from typing import Any

import optuna

from finetune_hpo.metrics import binomial_standard_error

logger = logging.getLogger(__name__)

# Scores of the same model on the same rows may differ by float summation order across batch shapes;
# a difference beyond this many points means the exported score is not what the saved model scores.
REPRODUCTION_TOLERANCE = 0.01


class ExportError(RuntimeError):
    """The study cannot be exported (not finished, scores of another model, or the result breaks the schema)."""


def selection_and_confirmation(
    best: optuna.trial.FrozenTrial,
    splits: Mapping[str, Any],
    scores: Mapping[str, Any] | None,
    metric: str,
    fingerprint: str | None,
    confirmation: Mapping[str, Any] | None,
) -> dict[str, Any]:
    """The selection value (the study's best, optimistic), the saved model's independent check and its score
    on held-out rows, each with its size and standard error.

    ``reproduced`` means the reloaded model scores what the export claims for it: the study's value, or,
    when the confirmation stage had to retrain the winner (the study had not kept its model), the value that
    retraining scored; then the gap between the retraining and the study's own run is recorded beside it,
    with the seeds' noise to hold it against."""
    # Long because it is the export's fields in their order, each with the reason for its standard error.
    selection_size = int(splits["validation"]["size"])
    fields: dict[str, Any] = {
        "selection_value": float(best.value),
        "selection_size": selection_size,
        # Without per-example scores, only accuracy has a closed form (binomial); F1 has none.
        "selection_standard_error": (
            binomial_standard_error(float(best.value), selection_size) if metric == "accuracy" else None
        ),
        "confirmation_value": None,
        "confirmation_size": 0,
        "confirmation_standard_error": None,
        "best_model": None,
    }
    if not scores:
        return fields
    selection = scores["scores"].get("validation")
    same_model = (
        selection is not None
        and selection.get("trial") == best.number
        and scores.get("params") == best.params
        and scores.get("fingerprint") == fingerprint
    )
    if not same_model:
        raise ExportError(
            f"the best-model scores ({scores.get('model')}) are of trial "
            f"{None if selection is None else selection.get('trial')} with parameters {scores.get('params')}, "
            f"not of the exported trial {best.number} of this study ({best.params}); rerun rule score_best_model"
        )
    winner_model = (confirmation or {}).get("best_model", {})
    retrained = bool(winner_model.get("retrained")) and winner_model.get("trial") == best.number
    reference = float(winner_model["retrained_value"]) if retrained else float(best.value)
    difference = float(selection["value"]) - reference
    agreement = selection.get("prediction_agreement")
    # The same score and, where the study's predictions were kept, the same prediction on every row.
    reproduced = abs(difference) <= REPRODUCTION_TOLERANCE and (agreement is None or agreement == 1.0)
    if not reproduced:
        logger.warning(
            "the saved model scores %.4f on the selection set, its training recorded %.4f (difference %.4f); "
            "rows predicted as the study did: %s",
            selection["value"],
            reference,
            difference,
            "not compared" if agreement is None else f"{100 * agreement:.1f}%",
        )
    fields["selection_standard_error"] = selection["standard_error"]
    held_out = scores["scores"].get("confirmation")
    if held_out and held_out["size"] > 0:
        fields["confirmation_value"] = float(held_out["value"])
        fields["confirmation_size"] = int(held_out["size"])
        fields["confirmation_standard_error"] = held_out["standard_error"]
    fields["best_model"] = {
        "path": scores["model"],
        "trial": best.number,
        "reloaded_selection_value": float(selection["value"]),
        "difference": round(difference, 6),
        "prediction_agreement": agreement,
        "predictions_compared": int(selection.get("predictions_compared", 0)),
        "reproduced": reproduced,
        "tolerance": REPRODUCTION_TOLERANCE,
        # Set when the model is a retraining of the trial (confirmation's winner that the study did not keep).
        "retrained_value": reference if retrained else None,
        **(_retrained_gap(best, reference, confirmation, fields["selection_standard_error"]) if retrained else {}),
    }
    return fields


def _retrained_gap(
    best: optuna.trial.FrozenTrial,
    retrained_value: float,
    confirmation: Mapping[str, Any] | None,
    selection_standard_error: float | None,
) -> dict[str, Any]:
    """How far the winner's retraining (same seed) lies from the study's own run, and the noise to hold it
    against: two standard deviations of the difference of two runs, from the winner's spread over seeds on
    the selection set (or, without one, from the selection set's standard error). On a CPU the two are
    equal; on a GPU nondeterministic kernels move them within seed noise; beyond it something changed."""
    winner = next((row for row in (confirmation or {}).get("candidates", []) if row["trial"] == best.number), None)
    seed_sd = None if winner is None else winner["selection"].get("sd")
    spread = seed_sd if seed_sd is not None else selection_standard_error
    noise = None if spread is None else 2 * math.sqrt(2) * spread
    gap = retrained_value - float(best.value)
    return {
        "retrained_gap": round(gap, 6),
        "retrained_gap_noise": noise,
        "retrained_gap_within_noise": None if noise is None else abs(gap) <= noise,
    }
