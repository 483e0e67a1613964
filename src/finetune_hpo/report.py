"""The Phase 1 review rendered: one table (markdown, CSV, terminal) over the studies' reviews, each
criterion shown with its noise (see :mod:`finetune_hpo.review` for how they are judged).
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from finetune_hpo.io import write_text_atomic
from finetune_hpo.review import StudyReview


def _fmt(value: float | None, digits: int = 2) -> str:
    return "-" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.{digits}f}"


def _fmt_estimate(value: float | None, standard_error: float | None, size: int | None) -> str:
    """``80.00 ± 5.66 (n=50)``, dropping what is unknown; ``-`` without a value."""
    if value is None:
        return "-"
    text = f"{value:.2f}"
    if standard_error is not None:
        text += f" ± {standard_error:.2f}"
    if size:
        text += f" (n={size})"
    return text


def _fmt_expected(review: StudyReview) -> str:
    """``82.83 ± 3.92 (3 seeds)``; one seed is marked, since its error leaves the seeds' spread out."""
    if review.expected_value is None:
        return "-"
    text = f"{review.expected_value:.2f}"
    if review.expected_standard_error is not None:
        text += f" ± {review.expected_standard_error:.2f}"
    seeds = review.expected_seeds or 0
    return text + (f" ({seeds} seeds)" if seeds > 1 else " (1 seed, no seed noise)")


def _with(verdict: str, label: str, value: float | None) -> str:
    return verdict if value is None or verdict == "-" else f"{verdict}, {label}={value:.2f}"


def _top(importances: Mapping[str, float], note: str, k: int = 3) -> str:
    if not importances:
        return note or "-"
    return ", ".join(f"{name} {value:.2f}" for name, value in list(importances.items())[:k])


TABLE_COLUMNS = (
    "study",
    "metric",
    "expected when retrained ± SE (seeds)",
    "selection ± SE (n)",
    "confirmation ± SE (n)",
    "confirmed winner (mean ± sd, seeds)",
    "winner changed",
    "separable from runner-up (p)",
    "worst",
    "gap",
    "SE",
    "baseline",
    "best random",
    "best TPE",
    "top hyperparameters (importance)",
    "gap > 5",
    "TPE > random",
    "importances",
)


def table_rows(reviews: Sequence[StudyReview]) -> list[list[str]]:
    """One row of cells per review, in ``TABLE_COLUMNS`` order."""
    rows = []
    for review in reviews:
        if review.status != "OK":
            cells = dict.fromkeys(TABLE_COLUMNS, "-")
            cells.update({"study": review.study_name, "metric": review.status})
            cells["top hyperparameters (importance)"] = review.problem
            cells.update({"gap > 5": "FAIL", "TPE > random": "FAIL", "importances": "FAIL"})
            rows.append([cells[column] for column in TABLE_COLUMNS])
            continue
        cells = {
            "study": review.study_name,
            "metric": review.metric,
            "expected when retrained ± SE (seeds)": _fmt_expected(review),
            "selection ± SE (n)": _fmt_estimate(
                review.selection_value, review.selection_standard_error, review.selection_size
            ),
            "confirmation ± SE (n)": _fmt_estimate(
                review.confirmation_value, review.confirmation_standard_error, review.confirmation_size
            ),
            **_confirmation_cells(review),
            "worst": _fmt(review.worst_value),
            "gap": _fmt(review.gap),
            "SE": _fmt(review.selection_standard_error),
            "baseline": _fmt(review.baseline),
            "best random": _fmt(review.best_random),
            "best TPE": _fmt(review.best_guided),
            "top hyperparameters (importance)": _top(review.importances, review.importance_note),
            "gap > 5": _with(review.criteria.get("gap_gt_5", "-"), "noise", review.gap_noise),
            "TPE > random": _with(
                review.criteria.get("tpe_beats_random", "-"), "P(random)", review.p_tpe_beats_random_by_chance
            ),
            "importances": review.criteria.get("importances", "-"),
        }
        rows.append([cells[column] for column in TABLE_COLUMNS])
    return rows


def _confirmation_cells(review: StudyReview) -> dict[str, str]:
    """The confirmation stage's columns ("-" for studies without one)."""
    if review.confirmed_trial is None:
        return dict.fromkeys(
            ("confirmed winner (mean ± sd, seeds)", "winner changed", "separable from runner-up (p)"), "-"
        )
    if review.separable_from_runner_up is None:
        separable = "- (one candidate)"
    else:
        p_value = "-" if review.runner_up_p_value is None else f"{review.runner_up_p_value:.3f}"
        separable = f"{'yes' if review.separable_from_runner_up else 'no'} ({p_value})"
    return {
        "confirmed winner (mean ± sd, seeds)": (
            f"trial {review.confirmed_trial}: {_fmt(review.confirmed_mean)} ± {_fmt(review.confirmed_sd)} "
            f"({review.confirmed_seeds})"
        ),
        "winner changed": "yes" if review.winner_changed else "no",
        "separable from runner-up (p)": separable,
    }


def render_markdown(reviews: Sequence[StudyReview]) -> str:
    lines = ["| " + " | ".join(TABLE_COLUMNS) + " |", "|" + "---|" * len(TABLE_COLUMNS)]
    lines += ["| " + " | ".join(row) + " |" for row in table_rows(reviews)]
    n_ok = sum(1 for review in reviews if review.status == "OK")
    verdict = "all present and valid" if n_ok == len(reviews) else f"{len(reviews) - n_ok} missing or invalid"
    notes = [f"- {review.study_name}: {review.startup_note}." for review in reviews if review.startup_note]
    return (
        "# Phase 1 review\n\n"
        f"{n_ok}/{len(reviews)} optimal configs: {verdict}. Values in percent; baseline = the best constant "
        "prediction on the validation set; best random / best TPE = best of the sampler's random start-up "
        "trials / of the trials TPE chose. SE = standard error of the selection value: as exported, else "
        "binomial at the selection set's size n, 100·sqrt(p(1-p)/n); noise = 2·sqrt(2)·SE, a rough 2-sigma of "
        "the difference of two scores, to hold the gap against. P(random) = the chance that the best of k TPE "
        "trials beats the best of m random ones if TPE were pure random search, k/(k+m): a PASS is only as "
        "telling as P(random) is small.\n\n"
        + "\n".join(lines)
        + "\n\n**Plan Phase 2 with 'expected when retrained'** (the export's `expected_when_retrained`): what a "
        "retraining of the exported configuration should score. Where a confirmation stage ran it is the "
        "winner's mean over its seeds on held-out rows, its standard error sqrt(sd_seeds²/seeds + SE_rows²) "
        "holding both the seeds' and the rows' noise; the winner is the best of a few candidates' means on those "
        "rows, so it is optimistic by up to about 0.85 of that standard error at 3 candidates (the export states "
        "it in points). Without a confirmation stage it is one seed, the saved model on held-out rows, and its "
        "standard error leaves the seeds' spread out, marked '1 seed, no seed noise'. The selection value is the "
        "maximum over trials on the set that chose it, and so optimistic. The confirmation value is the "
        "exported model (one seed) re-scored on held-out validation rows. 'separable' is a two-sided paired "
        "t-test over seeds against the runner-up at p < 0.05; it is descriptive (the rows are fixed, and 3 "
        "seeds give 2 degrees of freedom).\n" + ("\nStart-up labels:\n\n" + "\n".join(notes) + "\n" if notes else "")
    )


def render_terminal(reviews: Sequence[StudyReview]) -> str:
    rows = [list(TABLE_COLUMNS), *table_rows(reviews)]
    widths = [max(len(row[i]) for row in rows) for i in range(len(TABLE_COLUMNS))]
    return "\n".join("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)) for row in rows)


def render_csv(reviews: Sequence[StudyReview]) -> str:
    buffer = io.StringIO()
    fields = [key for key in asdict(StudyReview("x")) if key not in ("importances", "criteria")]
    writer = csv.DictWriter(buffer, fieldnames=[*fields, "importances", "criteria"], lineterminator="\n")
    writer.writeheader()
    for review in reviews:
        row: dict[str, Any] = {key: getattr(review, key) for key in fields}
        row["importances"] = ";".join(f"{k}={v:.4f}" for k, v in review.importances.items())
        row["criteria"] = ";".join(f"{k}={v}" for k, v in review.criteria.items())
        writer.writerow(row)
    return buffer.getvalue()


def write_summary(
    reviews: Sequence[StudyReview], markdown_path: Path, csv_path: Path, text_path: Path | None = None
) -> None:
    """The review as Markdown, CSV and (when ``text_path`` is given) the terminal table."""
    write_text_atomic(markdown_path, render_markdown(reviews))
    write_text_atomic(csv_path, render_csv(reviews))
    if text_path is not None:
        write_text_atomic(text_path, render_terminal(reviews) + "\n")
