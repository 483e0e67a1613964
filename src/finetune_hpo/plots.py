"""Figures of the Phase 1 review, drawn with Optuna's own matplotlib plots where they exist.

Per study: optimization history (with the best value so far), hyperparameter importances (or a note when
there are too few trials to say anything), and a slice plot. Across studies: the best value of LoRA vs full
fine-tuning per task, beside what each costs. Per confirmed study: each candidate's seed spread.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only; never a window

import matplotlib.pyplot as plt
import optuna

from finetune_hpo.importances import parameter_importances
from finetune_hpo.methods import METHODS
from finetune_hpo.review import StudyReview

logger = logging.getLogger(__name__)


def _save(figure: plt.Figure, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def _note(path: Path, title: str, text: str) -> None:
    figure, axis = plt.subplots(figsize=(6, 3))
    axis.axis("off")
    axis.set_title(title)
    axis.text(0.5, 0.5, text, ha="center", va="center", wrap=True)
    _save(figure, path)


def plot_study(study: optuna.Study, history: Path, importances: Path, slice_plot: Path) -> dict[str, Path]:
    """Write the optimization history, the importances and the slice plot of ``study`` to these paths."""
    from optuna.visualization import matplotlib as optuna_plots

    paths = {"history": Path(history), "importances": Path(importances), "slice": Path(slice_plot)}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Optuna marks its matplotlib backend experimental
        axis = optuna_plots.plot_optimization_history(study)
        axis.set_title(f"{study.study_name}: optimization history")
        _save(axis.figure, paths["history"])

        values, note = parameter_importances(study)
        if values:
            axis = optuna_plots.plot_param_importances(
                study, evaluator=optuna.importance.FanovaImportanceEvaluator(seed=0)
            )
            axis.set_title(f"{study.study_name}: hyperparameter importances (fANOVA)")
            _save(axis.figure, paths["importances"])
        else:
            _note(paths["importances"], f"{study.study_name}: importances", f"Not shown: {note}.")

        params = [name for name, dist in study.best_trial.distributions.items() if not dist.single()]
        axes = optuna_plots.plot_slice(study, params=params)
        figure = axes.flat[0].figure if hasattr(axes, "flat") else axes.figure
        figure.set_size_inches(2.6 * max(1, len(params)), 3.0)
        figure.suptitle(f"{study.study_name}: objective per hyperparameter")
        _save(figure, paths["slice"])
    return paths


def plot_lora_vs_full(reviews: Sequence[StudyReview], path: Path) -> None:
    """Best value per task for each method, beside trainable parameters and training time per trial."""
    by_task: dict[str, dict[str, StudyReview]] = {}
    for review in reviews:
        for method in METHODS:
            if review.study_name.endswith(f"_{method}") and review.status == "OK":
                by_task.setdefault(review.study_name.removesuffix(f"_{method}"), {})[method] = review
    tasks = sorted(by_task)
    figure, axes = plt.subplots(1, 3, figsize=(13, 3.8))
    width = 0.38
    panels = (
        ("best value (%)", lambda r: r.best_value),
        ("trainable parameters", lambda r: r.trainable_parameters),
        ("training time per trial (s)", lambda r: r.mean_train_seconds),
    )
    for axis, (label, value_of) in zip(axes, panels, strict=True):
        for offset, (method, colour) in enumerate((("full_finetune", "tab:blue"), ("lora", "tab:orange"))):
            values = [(value_of(by_task[t][method]) or 0.0) if method in by_task[t] else 0.0 for t in tasks]
            positions = [i + (offset - 0.5) * width for i in range(len(tasks))]
            bars = axis.bar(positions, values, width, label=method, color=colour)
            if label.startswith("best"):
                axis.bar_label(bars, fmt="%.1f", fontsize=7)
        axis.set_xticks(range(len(tasks)), tasks)
        axis.set_title(label)
        if label == "trainable parameters":
            axis.set_yscale("log")
    handles, labels = axes[0].get_legend_handles_labels()
    figure.legend(handles, labels, loc="upper right", fontsize=8)
    figure.suptitle("LoRA vs full fine-tuning")
    _save(figure, path)


def plot_confirmation(confirmation: Mapping[str, Any], path: Path) -> None:
    """A study's confirmed candidates: every seed's score on both sets, with the mean ± sd over seeds.

    Args:
        confirmation: The confirmation stage's summary (``confirmation.json``).
        path: The figure.
    """
    candidates = confirmation["candidates"]
    figure, axes = plt.subplots(1, 2, figsize=(9, 3.6), sharey=True)
    for axis, split in zip(axes, ("selection", "confirmation"), strict=True):
        for position, candidate in enumerate(candidates):
            values = [value for value in candidate[split]["values"] if value is not None]
            winner = candidate["trial"] == confirmation["winner_trial"]
            colour = "tab:green" if winner else "tab:gray"
            # Seeds side by side, so equal scores (2-point steps on small sets) stay visible.
            offsets = [position + 0.08 * (i - (len(values) - 1) / 2) for i in range(len(values))]
            axis.scatter(offsets, values, color=colour, s=22, zorder=3)
            mean, sd = candidate[split]["mean"], candidate[split]["sd"]
            if mean is not None:
                axis.errorbar(
                    position + 0.3, mean, yerr=sd or 0.0, fmt="D", color=colour, capsize=4, markersize=5, zorder=3
                )
        labels = [
            f"trial {c['trial']}" + (" (winner)" if c["trial"] == confirmation["winner_trial"] else "")
            for c in candidates
        ]
        axis.set_xticks(range(len(candidates)), labels, fontsize=8)
        ranked = " (ranks)" if split == confirmation["ranked_on"] else ""
        axis.set_title(f"{split} set{ranked}")
        axis.grid(axis="y", alpha=0.3)
    axes[0].set_ylabel(f"{confirmation.get('metric', 'objective')} (%)")
    test = confirmation.get("paired_test") or {}
    verdict = (
        ""
        if not test
        else f"; vs runner-up: p={test['p_value']:.3f}"
        if test.get("p_value") is not None
        else f"; vs runner-up: {test.get('note', 'no test')}"
    )
    figure.suptitle(
        f"{confirmation.get('study_name', '')}: {len(candidates)} candidates x {len(confirmation['seeds'])} seeds "
        f"(dots: seeds, diamond: mean ± sd){verdict}",
        fontsize=9,
    )
    _save(figure, path)
