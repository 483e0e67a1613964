"""The Phase 1 review rendered: one table (markdown, CSV, terminal) over the studies' reviews, each
criterion shown with its noise (see :mod:`finetune_hpo.review` for how they are judged).
"""

from __future__ import annotations

import csv
import io
import math
import textwrap
from collections.abc import Mapping, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from finetune_hpo.importances import MAX_TIED_SHARE, MIN_TRIALS_FOR_IMPORTANCE, TIE_DECIMALS
from finetune_hpo.io import write_text_atomic
from finetune_hpo.review_row import StudyReview


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


def _fmt_expected(
    review: StudyReview, seeds_note: str = " ({} seeds)", one_seed: str = " (1 seed, no seed noise)"
) -> str:
    """``82.83 ± 3.92 (3 seeds)``; one seed is marked, since its error leaves the seeds' spread out."""
    if review.expected_value is None:
        return "-"
    text = f"{review.expected_value:.2f}"
    if review.expected_standard_error is not None:
        text += f" ± {review.expected_standard_error:.2f}"
    seeds = review.expected_seeds or 0
    return text + (seeds_note.format(seeds) if seeds > 1 else one_seed)


def _transfer_cell(review: StudyReview) -> str:
    """``sst2_lora #4 (85.00 / 83.50)`` when the study started from other studies' trials, else ``-``."""
    if not review.transferred:
        return "-"
    return f"{review.winner_from} ({_fmt(review.best_transferred)} / {_fmt(review.best_sampled)})"


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
    "transfer: winner from (best transferred / best sampled)",
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
            "transfer: winner from (best transferred / best sampled)": _transfer_cell(review),
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
    edges = [f"- {review.study_name}: {edge}." for review in reviews for edge in review.range_edges]
    return (
        "# Phase 1 review\n\n"
        f"{n_ok}/{len(reviews)} optimal configs: {verdict}. Values in percent; baseline = the best constant "
        "prediction on the validation set; best random / best TPE = best of the sampler's random start-up "
        "trials / of the trials TPE chose. SE = standard error of the selection value: as exported, else "
        "binomial at the selection set's size n, 100·sqrt(p(1-p)/n); noise = 2·sqrt(2)·SE, a rough 2-sigma of "
        "the difference of two scores, to hold the gap against. P(random) = the chance that the best of k TPE "
        "trials beats the best of m random ones if TPE were pure random search, k/(k+m): a PASS is only as "
        "telling as P(random) is small. Importances (fANOVA) are shown, and PASS, only when the trials can rank "
        f"parameters: at least {MIN_TRIALS_FOR_IMPORTANCE} COMPLETE trials, and no value (to {TIE_DECIMALS} "
        f"decimals) shared by more than {MAX_TIED_SHARE:.0%} of them; otherwise WARN and the reason instead (with "
        "most trials tied, fANOVA explains the few others, and whichever parameter happens to separate them "
        "looks important).\n\n"
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
        "seeds give 2 degrees of freedom). 'transfer': where the exported configuration came from (a source "
        "study's trial, run first as the portfolio; the config's optuna.enqueue; or the sampler), and the best "
        "portfolio trial against the best trial the sampler chose.\n"
        + ("\nStart-up labels:\n\n" + "\n".join(notes) + "\n" if notes else "")
        + (
            "\nRange edges (WARN: the chosen value is in the outer tenth of its range, on the log scale for a log "
            "range, or the end of an ordered choice of at least 3 numbers; the best may lie beyond it):\n\n"
            + "\n".join(edges)
            + "\n"
            if edges
            else ""
        )
    )


TERMINAL_WIDTH = 120
# What a terminal user needs to judge a study at a glance; the rest is in summary.md and summary.csv.
TERMINAL_COLUMNS = (
    "study",
    "metric",
    "expected ± SE (seeds)",
    "selection ± SE",
    "baseline",
    "gap>5",
    "TPE>random",
    "importances",
)
# Widest a cell may be (a longer one is cut with "~"), so a new task's long name cannot widen the table.
_TERMINAL_CELL_WIDTH = {"study": 24, "metric": 8, "importances": 14}
# The top hyperparameter, in the short names papers use.
_PARAMETER_ABBREVIATIONS = {
    "learning_rate": "lr",
    "num_train_epochs": "epochs",
    "batch_size": "batch",
    "warmup_ratio": "warmup",
    "weight_decay": "wd",
    "lora_rank": "rank",
    "lora_alpha": "alpha",
    "lora_dropout": "dropout",
}
# Criteria with a column of their own; any other that is not PASS gets a line under the table.
_TERMINAL_CRITERIA = ("optimal_yaml", "gap_gt_5", "tpe_beats_random", "importances")


def _terminal_expected(review: StudyReview) -> str:
    """``89.17 ± 1.20 (3)``; one seed is ``(1*)``: its error holds the rows' noise only."""
    return _fmt_expected(review, seeds_note=" ({})", one_seed=" (1*)")


def _terminal_importances(review: StudyReview) -> str:
    verdict = review.criteria.get("importances", "-")
    if review.importances:
        top = next(iter(review.importances))
        return f"{verdict} {_PARAMETER_ABBREVIATIONS.get(top, top)}"
    note = review.importance_note
    reason = "tied" if "tied" in note or "every" in note else "few" if "too few" in note else "n/a"
    return f"{verdict} ({reason})" if verdict != "-" else "-"


def _terminal_cells(review: StudyReview) -> list[str]:
    cells = {"study": review.study_name}
    if review.status != "OK":
        cells |= {"metric": review.status, "gap>5": "FAIL", "TPE>random": "FAIL", "importances": "FAIL"}
    else:
        tpe = review.criteria.get("tpe_beats_random", "-")
        if review.p_tpe_beats_random_by_chance is not None and tpe != "-":
            tpe += f" P={review.p_tpe_beats_random_by_chance:.2f}"
        cells |= {
            "metric": review.metric,
            "expected ± SE (seeds)": _terminal_expected(review),
            "selection ± SE": _fmt_estimate(review.selection_value, review.selection_standard_error, None),
            "baseline": _fmt(review.baseline),
            "gap>5": review.criteria.get("gap_gt_5", "-"),
            "TPE>random": tpe,
            "importances": _terminal_importances(review),
        }
    row = []
    for column in TERMINAL_COLUMNS:
        cell = cells.get(column, "-")
        limit = _TERMINAL_CELL_WIDTH.get(column)
        row.append(cell if limit is None or len(cell) <= limit else cell[: limit - 1] + "~")
    return row


def _terminal_notes(reviews: Sequence[StudyReview]) -> list[str]:
    """A line per study with a problem, or a criterion without a column that is not PASS."""
    notes = []
    for review in reviews:
        verdicts = []
        for name, verdict in review.criteria.items():
            if name in _TERMINAL_CRITERIA or verdict == "PASS":
                continue
            if name == "range_edges":  # which parameters; summary.md says how to widen each
                name += " (" + "; ".join(review.range_edges_short) + ")"
            if name == "retrained_gap" and review.retrained_gap is not None:
                noise = "" if review.retrained_gap_noise is None else f", noise {review.retrained_gap_noise:.2f}"
                name += f" (the winner retrained - its study run: {review.retrained_gap:+.2f} points{noise})"
            verdicts.append(f"{verdict} {name}")
        text = "; ".join(part for part in (", ".join(verdicts), review.problem) if part)
        if text:
            notes += textwrap.wrap(
                f"{review.study_name}: {text}", TERMINAL_WIDTH, subsequent_indent="    ", break_on_hyphens=False
            )
    return notes


def render_terminal(reviews: Sequence[StudyReview]) -> str:
    """The review in at most ``TERMINAL_WIDTH`` columns: the columns a terminal user needs, a line per
    problem, and where the full table is."""
    rows = [list(TERMINAL_COLUMNS), *(_terminal_cells(review) for review in reviews)]
    widths = [max(len(row[i]) for row in rows) for i in range(len(TERMINAL_COLUMNS))]
    table = ["  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip() for row in rows]
    n_ok = sum(1 for review in reviews if review.status == "OK")
    verdict = "all present and valid" if n_ok == len(reviews) else f"{len(reviews) - n_ok} missing or invalid"
    legend = (
        "Values in percent. expected = what a retraining of the exported configuration should score: plan Phase 2 "
        "with it; (n) seeds, (1*) one seed, whose SE holds the rows' noise only. selection = the best trial on the "
        "set that chose it (optimistic). baseline = the best constant prediction. gap>5: best - worst trial > 5 "
        "points. TPE>random: the best TPE trial beats the best random one; P = the chance it would as random "
        "search. importances: fANOVA's top parameter (lr, epochs, batch, warmup, wd, rank, alpha, dropout), WARN when "
        "too few trials or more than half of them tied. range_edges: a chosen value at the high or low end of its "
        "range, where the best may lie beyond it (summary.md says how to widen each). "
        "The full table (confirmation, noise, worst trial, importances): summary.md and summary.csv in the "
        "results folder."
    )
    lines = [f"Phase 1 review: {n_ok}/{len(reviews)} optimal configs, {verdict}.", "", *table]
    notes = _terminal_notes(reviews)
    if notes:
        lines += ["", *notes]
    lines += ["", *textwrap.wrap(legend, TERMINAL_WIDTH, break_on_hyphens=False)]
    return "\n".join(lines)


def render_csv(reviews: Sequence[StudyReview]) -> str:
    buffer = io.StringIO()
    # range_edges_short is the terminal's copy of range_edges.
    fields = [key for key in asdict(StudyReview("x")) if key not in ("importances", "criteria", "range_edges_short")]
    writer = csv.DictWriter(buffer, fieldnames=[*fields, "importances", "criteria"], lineterminator="\n")
    writer.writeheader()
    for review in reviews:
        row: dict[str, Any] = {key: getattr(review, key) for key in fields}
        row["importances"] = ";".join(f"{k}={v:.4f}" for k, v in review.importances.items())
        row["criteria"] = ";".join(f"{k}={v}" for k, v in review.criteria.items())
        row["range_edges"] = "; ".join(review.range_edges)
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
