"""Which hyperparameters mattered: fANOVA importances of a study (Optuna's evaluator, seeded), or why not.

Importances are withheld, with the reason, when the trials cannot rank parameters: too few COMPLETE trials,
or values too tied (the rule below). The review's criterion, its table, the study's figure and its W&B
summary all take them from :func:`parameter_importances`, so they agree.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

import optuna
from optuna.trial import TrialState

# Fewer COMPLETE trials than this give importances that are noise; we say so instead of reporting them.
MIN_TRIALS_FOR_IMPORTANCE = 5
# Too tied to rank: when more than this share of the COMPLETE trials score the same value, fANOVA explains
# the variance of the few others, and whichever parameter happens to separate them gets most of the
# importance (the demo's RTE full fine-tuning: 8 of 10 trials at 85.00, weight decay "0.58").
MAX_TIED_SHARE = 0.5
# Values equal to this many decimals (in points) are ties: the table shows two decimals.
TIE_DECIMALS = 2


def most_tied_value(values: Sequence[float]) -> tuple[float, int]:
    """The most common value (rounded to ``TIE_DECIMALS``) and how many of ``values`` score it; the higher
    value on a tie between counts."""
    counts = Counter(round(float(value), TIE_DECIMALS) for value in values)
    value, count = max(counts.items(), key=lambda item: (item[1], item[0]))
    return value, count


def too_tied_to_rank(values: Sequence[float]) -> str:
    """Why ``values`` (the COMPLETE trials') are too tied to rank parameters, or "" when they are not.

    The rule: more than ``MAX_TIED_SHARE`` of the trials share one value (to ``TIE_DECIMALS`` decimals).
    """
    if not values:
        return ""
    value, count = most_tied_value(values)
    if count <= MAX_TIED_SHARE * len(values):
        return ""
    if count == len(values):
        return f"every COMPLETE trial scored {value:.{TIE_DECIMALS}f}"
    return (
        f"too tied to rank: {count} of {len(values)} COMPLETE trials scored {value:.{TIE_DECIMALS}f} "
        f"(more than {MAX_TIED_SHARE:.0%} tied)"
    )


def parameter_importances(study: optuna.Study) -> tuple[dict[str, float], str]:
    """fANOVA importances (Optuna's default evaluator, seeded), or an empty dict and the reason."""
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if len(complete) < MIN_TRIALS_FOR_IMPORTANCE:
        return {}, f"too few COMPLETE trials ({len(complete)} < {MIN_TRIALS_FOR_IMPORTANCE})"
    tied = too_tied_to_rank([float(t.value) for t in complete])
    if tied:
        return {}, tied
    try:
        importances = optuna.importance.get_param_importances(
            study, evaluator=optuna.importance.FanovaImportanceEvaluator(seed=0)
        )
    except (ValueError, RuntimeError) as err:
        return {}, f"not computable ({err})"
    return {name: float(value) for name, value in importances.items()}, ""
