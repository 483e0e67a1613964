"""Which hyperparameters mattered: fANOVA importances of a study (Optuna's evaluator, seeded), or why not."""

from __future__ import annotations

import optuna
from optuna.trial import TrialState

# Fewer COMPLETE trials than this give importances that are noise; we say so instead of reporting them.
MIN_TRIALS_FOR_IMPORTANCE = 5


def parameter_importances(study: optuna.Study) -> tuple[dict[str, float], str]:
    """fANOVA importances (Optuna's default evaluator, seeded), or an empty dict and the reason."""
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if len(complete) < MIN_TRIALS_FOR_IMPORTANCE:
        return {}, f"too few COMPLETE trials ({len(complete)} < {MIN_TRIALS_FOR_IMPORTANCE})"
    if len({t.value for t in complete}) == 1:
        return {}, "every trial scored the same"
    try:
        importances = optuna.importance.get_param_importances(
            study, evaluator=optuna.importance.FanovaImportanceEvaluator(seed=0)
        )
    except (ValueError, RuntimeError) as err:
        return {}, f"not computable ({err})"
    return {name: float(value) for name, value in importances.items()}, ""
