"""What a configuration's scores say, in numbers without torch: seed means and spreads, the paired test of the
confirmation stage, its summary, and the figure Phase 2 plans with (the score to expect when a configuration
is retrained, with a standard error that holds both the seeds' and the rows' noise)."""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence
from typing import Any

from optuna.trial import FrozenTrial

# A test at this level decides "separable from the runner-up" (descriptive: it conditions on the fixed
# confirmation rows and, at 3 seeds, has 2 degrees of freedom).
SIGNIFICANCE_LEVEL = 0.05
# Two-sided: the winner and the direction were chosen by looking at these same means.
PAIRED_TEST = "two-sided paired t-test over seeds (scipy.stats.ttest_rel)"
# Differences whose spread is below this share of their size are equal up to float rounding: scores are
# means over rows, and (80.1 - 70.3) and (81.1 - 71.3) need not subtract to the same double.
ROUNDING_TOLERANCE = 1e-9


def seed_stats(values: Sequence[float | None]) -> dict[str, Any]:
    """The values of one candidate's seeds (``None``: diverged), their mean and sample standard deviation."""
    finished = [float(v) for v in values if v is not None]
    return {
        "values": [None if v is None else float(v) for v in values],
        "mean": statistics.fmean(finished) if finished else None,
        # Sample standard deviation over seeds (n - 1).
        "sd": statistics.stdev(finished) if len(finished) > 1 else None,
    }


def paired_test(winner: Sequence[float | None], runner_up: Sequence[float | None]) -> dict[str, Any]:
    """Whether the winner beats the runner-up beyond seed noise: a two-sided paired t-test over the seeds
    both finished (seed i of one is paired with seed i of the other: the same head initialisation and
    shuffling seed)."""
    from scipy import stats

    pairs = [(a, b) for a, b in zip(winner, runner_up, strict=True) if a is not None and b is not None]
    differences = [a - b for a, b in pairs]
    result: dict[str, Any] = {
        "test": PAIRED_TEST,
        "n_pairs": len(pairs),
        "mean_difference": statistics.fmean(differences) if differences else None,
        "sd_difference": statistics.stdev(differences) if len(differences) > 1 else None,
        "t_statistic": None,
        "p_value": None,
        "alpha": SIGNIFICANCE_LEVEL,
        "separable": False,
    }
    if len(pairs) < 2:
        result["note"] = "fewer than 2 paired seeds: no test"
        return result
    scale = max(1.0, max(abs(d) for d in differences))
    if result["sd_difference"] <= ROUNDING_TOLERANCE * scale:
        # A spread of ~1e-14 left by float rounding would otherwise give t ~ 1e14 and p ~ 1e-29.
        result["sd_difference"] = 0.0
        result["note"] = "every seed differs by the same amount: the t-test is undefined"
        return result
    test = stats.ttest_rel([a for a, _ in pairs], [b for _, b in pairs])
    result["t_statistic"] = float(test.statistic)
    result["p_value"] = float(test.pvalue)
    result["separable"] = bool(
        math.isfinite(test.pvalue) and test.pvalue < SIGNIFICANCE_LEVEL and result["mean_difference"] > 0
    )
    return result


def summarize(
    study_name: str,
    metric: str,
    candidates: Sequence[FrozenTrial],
    seeds: Sequence[int],
    runs: Mapping[tuple[int, int], Mapping[str, Any]],
    *,
    ranked_on: str,
    trainings: int,
) -> dict[str, Any]:
    """The stage's result: each candidate's runs and mean ± sd on both sets, the winner, and whether it
    is separable from the runner-up.

    The winner has the best mean on ``ranked_on`` (the confirmation set; the selection set only when the
    task has no held-out rows); a candidate with a diverged seed ranks after every candidate without one.
    """
    rows = [
        _candidate_row(rank, candidate, [dict(runs[(candidate.number, seed)]) for seed in seeds])
        for rank, candidate in enumerate(candidates, start=1)
    ]

    def order(row: Mapping[str, Any]) -> tuple:
        ranked, selection = row[ranked_on]["mean"], row["selection"]["mean"]
        return (
            not row["diverged_seeds"],
            -math.inf if ranked is None else ranked,
            -math.inf if selection is None else selection,
            -row["rank_in_study"],
        )

    ordered = sorted(rows, key=order, reverse=True)
    winner = ordered[0]
    runner_up = ordered[1] if len(ordered) > 1 else None
    single_best = candidates[0].number
    test = (
        paired_test(
            [run[f"{ranked_on}_value"] for run in winner["runs"]],
            [run[f"{ranked_on}_value"] for run in runner_up["runs"]],
        )
        if runner_up is not None
        else None
    )
    return {
        "study_name": study_name,
        "metric": metric,
        "top_k": len(candidates),
        "seeds": list(seeds),
        "ranked_on": ranked_on,
        "runs": len(candidates) * len(seeds),
        "trainings": trainings,
        "candidates": rows,
        "winner_trial": winner["trial"],
        "winner_params": winner["params"],
        "single_best_trial": single_best,
        "winner_changed": winner["trial"] != single_best,
        "runner_up_trial": None if runner_up is None else runner_up["trial"],
        "paired_test": test,
        "separable_from_runner_up": None if test is None else test["separable"],
    }


def _candidate_row(rank: int, candidate: FrozenTrial, runs: list[dict[str, Any]]) -> dict[str, Any]:
    """One candidate of the summary: its trial and parameters, its runs, and its seeds' stats on both sets."""
    return {
        "rank_in_study": rank,
        "trial": candidate.number,
        "params": {name: _plain(value) for name, value in candidate.params.items()},
        "study_value": float(candidate.value),
        "runs": runs,
        "diverged_seeds": [run["seed"] for run in runs if run["diverged"]],
        "selection": seed_stats([run["selection_value"] for run in runs]),
        "confirmation": seed_stats([run["confirmation_value"] for run in runs]),
    }


def _plain(value: Any) -> Any:
    return value.item() if hasattr(value, "item") else value


def expected_max_of_normals(k: int) -> float:
    """E[max of ``k`` independent standard normal draws]: how many standard errors the best of ``k`` equally
    good candidates' means lies above their common true value (0.56 at 2, 0.85 at 3, 1.03 at 4)."""
    if k <= 1:
        return 0.0
    from scipy import integrate, stats

    value, _ = integrate.quad(lambda x: x * k * stats.norm.pdf(x) * stats.norm.cdf(x) ** (k - 1), -math.inf, math.inf)
    return float(value)


def retrain_expectation(
    metric: str,
    *,
    confirmation: Mapping[str, Any] | None = None,
    held_out_value: float | None = None,
    held_out_standard_error: float | None = None,
    held_out_size: int = 0,
    selection_size: int = 0,
) -> dict[str, Any]:
    """The score to expect when the exported configuration is trained again, with a new seed: the figure
    Phase 2 plans with.

    With a confirmation stage: the winner's mean over its seeds on the rows that ranked the candidates (the
    held-out confirmation rows), with a standard error of ``sqrt(sd_seeds^2 / seeds + SE_rows^2)``: the
    seeds' spread and the rows' sampling noise (``SE_rows``: the saved model's standard error on those rows,
    one seed's, which is what a retrained model's score on new rows would also carry). The winner is the
    best of ``top_k`` means on those same rows, so the figure is optimistic by up to about
    ``E[max of top_k normals]`` standard errors when the candidates are equally good; that is stated, not
    subtracted. Without one: the single saved model's held-out score, one seed, with its rows' standard
    error only.

    Args:
        metric: The objective (``accuracy`` gets the binomial standard error when no other is known).
        confirmation: The confirmation stage's summary (``confirmation.json``).
        held_out_value: The saved model's score on the held-out confirmation rows (its independent rescoring).
        held_out_standard_error: Its standard error, in points (binomial, bootstrap or over groups).
        held_out_size: Held-out rows (questions) scored.
        selection_size: Rows of the selection set (a stage without held-out rows ranks on them).
    """
    # Over 60 lines for its docstring, which is the export's contract for this field, and the full set of
    # keys, which every case fills so that Phase 2 reads one shape.
    result: dict[str, Any] = {
        "value": None,
        "standard_error": None,
        "seeds": 0,
        "rows": 0,
        "rows_from": None,
        "includes_seed_variance": False,
        "seed_sd": None,
        "row_standard_error": None,
        "best_of_k": 1,
        "best_of_k_optimism": None,
        "basis": "",
    }
    if confirmation:
        return result | _confirmed_expectation(
            metric, confirmation, held_out_standard_error, held_out_size, selection_size
        )
    if held_out_value is not None and held_out_size > 0:
        result |= {
            "value": float(held_out_value),
            "standard_error": held_out_standard_error,
            "seeds": 1,
            "rows": held_out_size,
            "rows_from": "confirmation",
            "row_standard_error": held_out_standard_error,
            "basis": (
                f"one seed: the exported trial's saved model on {held_out_size} held-out confirmation rows. Its "
                "standard error covers the rows only; seed-to-seed variance is not included (a seed alone "
                "moves small-task scores by several points): turn on selection.confirm_top_k for a mean over "
                "seeds"
            ),
        }
        return result
    result["basis"] = (
        "no held-out score: no saved model was rescored (selection.save_best_model) or no held-out rows "
        "remained (selection.confirmation_max_rows); selection_value is the maximum over trials on the set "
        "that chose it, optimistic, and no plan should rest on it alone"
    )
    return result


def _confirmed_expectation(
    metric: str,
    confirmation: Mapping[str, Any],
    held_out_standard_error: float | None,
    held_out_size: int,
    selection_size: int,
) -> dict[str, Any]:
    """:func:`retrain_expectation` with a confirmation stage: the winner's mean over its seeds, with the seeds'
    and the rows' noise, and the best-of-k optimism stated."""
    winner = next(row for row in confirmation["candidates"] if row["trial"] == confirmation["winner_trial"])
    ranked_on = confirmation["ranked_on"]
    values = [float(v) for v in winner[ranked_on]["values"] if v is not None]
    if not values:
        return {"basis": "every seed of the confirmed winner diverged: no score to plan with"}
    rows = held_out_size if ranked_on == "confirmation" else selection_size
    row_se = held_out_standard_error if ranked_on == "confirmation" else None
    mean = statistics.fmean(values)
    if row_se is None and metric == "accuracy" and rows > 1:
        row_se = 100.0 * math.sqrt(max(0.0, mean / 100 * (1 - mean / 100)) / rows)
    sd = statistics.stdev(values) if len(values) > 1 else None
    parts = [(sd or 0.0) ** 2 / len(values), (row_se or 0.0) ** 2]
    standard_error = math.sqrt(sum(parts)) if sd is not None or row_se is not None else None
    top_k = int(confirmation.get("top_k", len(confirmation["candidates"])))
    optimism = None if standard_error is None else expected_max_of_normals(top_k) * standard_error
    diverged = len(winner[ranked_on]["values"]) - len(values)
    return {
        "value": mean,
        "standard_error": standard_error,
        "seeds": len(values),
        "rows": rows,
        "rows_from": ranked_on,
        "includes_seed_variance": sd is not None,
        "seed_sd": sd,
        "row_standard_error": row_se,
        "best_of_k": top_k,
        "best_of_k_optimism": optimism,
        "basis": (
            f"mean of the confirmed winner (trial {winner['trial']}) over {len(values)} seeds on {rows} "
            f"{'held-out confirmation' if ranked_on == 'confirmation' else 'selection'} rows; standard "
            "error sqrt(sd_seeds^2/seeds + SE_rows^2), seeds and rows both"
            + ("" if row_se is not None else " (rows' noise unknown for this metric: seeds only)")
            + f". The winner is the best of {top_k} candidates' means on these rows, so this is optimistic "
            f"by up to about {expected_max_of_normals(top_k):.2f} standard errors"
            + (f"; {diverged} seed(s) diverged and are left out" if diverged else "")
            + (
                ". Ranked on the selection set (no held-out rows), whose trials chose these candidates: "
                "optimistic beyond that"
                if ranked_on == "selection"
                else ""
            )
        ),
    }
