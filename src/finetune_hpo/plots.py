"""Figures of the Phase 1 review, drawn with Optuna's own matplotlib plots where they exist.

Per study: optimization history (the exported trial marked, and the best single run where a confirmation
stage chose another), hyperparameter importances (or a note saying why they cannot rank anything), and a
slice plot. Across studies: what a retraining of each method's exported configuration should score, with its
standard error, beside what each costs. Per confirmed study: each candidate's seed spread. Each ``draw_*``
returns the figure, so tests read what it shows; ``plot_*`` writes it.
"""

from __future__ import annotations

import functools
import logging
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

import matplotlib

matplotlib.use("Agg")  # files only; never a window

import matplotlib.pyplot as plt
import optuna
from matplotlib.lines import Line2D
from matplotlib.patches import Patch
from matplotlib.ticker import LogLocator, NullFormatter
from optuna.trial import TrialState

from finetune_hpo.importances import parameter_importances
from finetune_hpo.methods import METHODS, method_spec
from finetune_hpo.review_row import StudyReview

logger = logging.getLogger(__name__)

P = ParamSpec("P")
R = TypeVar("R")


def _in_default_style(draw: Callable[P, R]) -> Callable[P, R]:
    """Draw in matplotlib's default style: Optuna's plots switch the whole process to ggplot."""

    @functools.wraps(draw)
    def drawn(*args: P.args, **kwargs: P.kwargs) -> R:
        with plt.style.context("default"):
            return draw(*args, **kwargs)

    return drawn


def _save(figure: plt.Figure, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if figure.get_layout_engine() is None:
        figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


@dataclass(frozen=True)
class HistoryMarks:
    """The trials a study's history marks, as its export names them.

    Args:
        exported_trial: The export's ``best_trial``: the confirmation stage's winner where one ran, else the
            best COMPLETE trial (ties to the lower number).
        single_best_trial: The best single run on the selection set (the confirmation's ``single_best_trial``);
            the exported trial when no confirmation ran.
        confirmed: Whether a confirmation stage chose the exported trial.
    """

    exported_trial: int
    single_best_trial: int
    confirmed: bool = False

    @classmethod
    def from_export(cls, document: Mapping[str, Any]) -> HistoryMarks:
        """The marks of an exported ``analysis/<study>_optimal.yaml``."""
        confirmation = document.get("confirmation") or {}
        exported = int(document["best_trial"])
        return cls(exported, int(confirmation.get("single_best_trial", exported)), bool(confirmation))

    def labels(self) -> dict[int, str]:
        """Trial number -> its legend entry."""
        if self.exported_trial == self.single_best_trial:
            why = "confirmation winner and best single run" if self.confirmed else "best COMPLETE trial"
            return {self.exported_trial: f"exported: trial {self.exported_trial} ({why})"}
        return {
            self.exported_trial: f"exported: trial {self.exported_trial} (confirmation winner: best mean over seeds)",
            self.single_best_trial: f"best single run: trial {self.single_best_trial} (not exported)",
        }


def draw_history(study: optuna.Study, marks: HistoryMarks) -> plt.Axes:
    """Optuna's optimization history with the exported trial marked (and the best single run, where the
    confirmation stage chose another); every marker's label names its trial."""
    from optuna.visualization import matplotlib as optuna_plots

    values = {t.number: float(t.value) for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Optuna marks its matplotlib backend experimental
        axis = optuna_plots.plot_optimization_history(study)
    axis.set_title(f"{study.study_name}: optimization history")
    styles = {marks.exported_trial: {"marker": "*", "s": 260, "color": "tab:green", "edgecolors": "black"}}
    if marks.single_best_trial != marks.exported_trial:
        styles[marks.single_best_trial] = {"marker": "o", "s": 200, "facecolors": "none", "edgecolors": "black"}
    for number, label in marks.labels().items():
        if number not in values:
            raise ValueError(f"{study.study_name}: the export marks trial {number}, which is not a COMPLETE trial")
        axis.scatter([number], [values[number]], label=label, zorder=4, linewidths=1.2, **styles[number])
    axis.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), fontsize=8)
    axis.figure.set_size_inches(9.5, 4.2)
    return axis


def draw_importances(study: optuna.Study) -> tuple[plt.Figure, str]:
    """fANOVA importances as bars, or a figure with the reason they are not shown (returned too, else "")."""
    from optuna.visualization import matplotlib as optuna_plots

    values, note = parameter_importances(study)
    if not values:
        figure, axis = plt.subplots(figsize=(6.5, 2.6))
        axis.axis("off")
        axis.set_title(f"{study.study_name}: hyperparameter importances", loc="left")
        axis.text(0.5, 0.5, f"Not shown: {note}.", ha="center", va="center", wrap=True)
        return figure, note
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        axis = optuna_plots.plot_param_importances(study, evaluator=optuna.importance.FanovaImportanceEvaluator(seed=0))
    # Optuna titles the axis on the left; ours replaces it there, not beside it.
    axis.set_title("")
    axis.set_title(f"{study.study_name}: hyperparameter importances (fANOVA)", loc="left", fontsize=11)
    axis.figure.set_size_inches(7.0, 4.0)
    return axis.figure, ""


def draw_slice(study: optuna.Study) -> plt.Figure:
    """Optuna's slice plot, one panel per varied hyperparameter, with its colour bar beside the panels."""
    from optuna.visualization import matplotlib as optuna_plots

    params = [name for name, dist in study.best_trial.distributions.items() if not dist.single()]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        axes = optuna_plots.plot_slice(study, params=params)
    panels = list(axes.flat) if hasattr(axes, "flat") else [axes]
    figure = panels[0].figure
    # Optuna adds the colour bar before any layout; a later tight_layout moved the panels under it. Drawn
    # again under constrained layout, it takes its own room at the right.
    mappable = next((c for c in reversed(panels[-1].collections) if c.get_array() is not None), None)
    for extra in [axis for axis in figure.axes if axis not in panels]:
        extra.remove()
    for panel in panels:
        panel.set_title("")
        if panel.get_xscale() == "log":
            # Matplotlib labels the minor ticks of a log axis spanning less than a decade, and in a narrow
            # panel those labels run into each other: label 1, 2 and 5 x 10^k within a decade, else decades.
            low, high = panel.get_xlim()
            panel.xaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0) if high / low < 10 else (1.0,)))
            panel.xaxis.set_minor_formatter(NullFormatter())
    figure.set_layout_engine("constrained")
    figure.set_size_inches(2.4 * len(panels) + 1.2, 3.2)
    if mappable is not None:
        figure.colorbar(mappable, ax=panels, label="trial", fraction=0.04 if len(panels) > 2 else 0.12, pad=0.02)
    figure.suptitle(f"{study.study_name}: objective per hyperparameter (one point per trial)")
    return figure


def plot_study(
    study: optuna.Study, marks: HistoryMarks, history: Path, importances: Path, slice_plot: Path
) -> dict[str, Path]:
    """Write the optimization history (with the exported trial marked), the importances and the slice plot
    of ``study`` to these paths."""
    paths = {"history": Path(history), "importances": Path(importances), "slice": Path(slice_plot)}
    _save(draw_history(study, marks).figure, paths["history"])
    _save(draw_importances(study)[0], paths["importances"])
    _save(draw_slice(study), paths["slice"])
    return paths


ONE_SEED_HATCH = "//"


@_in_default_style
def draw_lora_vs_full(reviews: Sequence[StudyReview]) -> plt.Figure:
    """Per task and method: what a retraining should score (the export's ``expected_when_retrained``, the
    figure Phase 2 plans with) with its standard error, beside trainable parameters and time per trial.

    A hatched bar is one seed: its error bar holds the rows' noise only. The selection value (the best of
    the study's trials on the set that chose it, optimistic) is the black tick on each bar.
    """
    by_task = _ok_reviews_by_task(reviews)
    tasks = sorted(by_task)
    # Each method's place and colour come from the method registry, in its order.
    methods = [method for method in METHODS if any(method in by_task[task] for task in tasks)]
    figure, axes = plt.subplots(1, 3, figsize=(13, 4.4), layout="constrained")
    width = 0.8 / max(1, len(methods))
    panels = (
        ("expected when retrained (%), ± SE", lambda r: r.expected_value),
        ("trainable parameters", lambda r: r.trainable_parameters),
        ("training time per trial (s)", lambda r: r.mean_train_seconds),
    )
    for axis, (label, value_of) in zip(axes, panels, strict=True):
        for offset, method in enumerate(methods):
            shown = [t for t in tasks if method in by_task[t] and value_of(by_task[t][method]) is not None]
            if not shown:
                continue
            studies = [by_task[t][method] for t in shown]
            positions = [tasks.index(t) + (offset - (len(methods) - 1) / 2) * width for t in shown]
            values = [float(value_of(r)) for r in studies]
            if axis is axes[0]:
                _draw_expected_bars(axis, method, positions, values, studies, width)
            else:
                axis.bar(positions, values, width, label=method_spec(method).title, color=method_spec(method).colour)
        axis.set_xticks(range(len(tasks)), tasks)
        axis.set_title(label, fontsize=10)
        if label == "trainable parameters":
            axis.set_yscale("log")
    # A correlation x 100 (Matthews) can be negative; scores in percent start at 0.
    lowest = min([0.0] + [float(r.expected_value) for t in tasks for r in by_task[t].values() if r.expected_value])
    axes[0].set_ylim(min(0.0, lowest - 10), 105)
    figure.legend(handles=_lora_vs_full_legend(methods), loc="outside lower center", ncol=3, fontsize=8)
    figure.suptitle("LoRA vs full fine-tuning")
    return figure


def _ok_reviews_by_task(reviews: Sequence[StudyReview]) -> dict[str, dict[str, StudyReview]]:
    """The reviews of the studies that passed, by task, then by method (from the study's name)."""
    by_task: dict[str, dict[str, StudyReview]] = {}
    for review in reviews:
        for method in METHODS:
            if review.study_name.endswith(f"_{method}") and review.status == "OK":
                by_task.setdefault(review.study_name.removesuffix(f"_{method}"), {})[method] = review
    return by_task


def _draw_expected_bars(
    axis: plt.Axes,
    method: str,
    positions: list[float],
    values: list[float],
    studies: list[StudyReview],
    width: float,
) -> None:
    """One method's expected scores: bars with their standard errors (hatched: one seed), each value written
    inside its bar, and the selection value as a black tick."""
    bars = axis.bar(
        positions,
        values,
        width,
        yerr=[r.expected_standard_error or 0.0 for r in studies],
        capsize=3,
        label=method_spec(method).title,
        color=method_spec(method).colour,
        hatch=[ONE_SEED_HATCH if (r.expected_seeds or 0) <= 1 else "" for r in studies],
        edgecolor="white",
    )
    for bar, value in zip(bars, values, strict=True):  # inside the bar: error bars and ticks sit above
        axis.text(
            bar.get_x() + bar.get_width() / 2,
            3,
            f"{value:.1f}",
            ha="center",
            va="bottom",
            fontsize=7,
            bbox={"facecolor": "white", "edgecolor": "none", "alpha": 0.8, "pad": 1},
        )
    selection = [(p, r.selection_value) for p, r in zip(positions, studies, strict=True)]
    axis.scatter(
        [p for p, v in selection if v is not None],
        [v for _, v in selection if v is not None],
        marker="_",
        s=220,
        color="black",
        zorder=3,
        label="selection value",
    )


def _lora_vs_full_legend(methods: Sequence[str]) -> list[Patch | Line2D]:
    """The methods' colours, what a hatched and a plain bar's error means, and the selection value's tick."""
    return [
        *(Patch(color=method_spec(method).colour, label=method_spec(method).title) for method in methods),
        Patch(
            facecolor="lightgray",
            edgecolor="white",
            hatch=ONE_SEED_HATCH,
            label="one seed: SE of rows only, no seed noise",
        ),
        Patch(facecolor="gray", label="mean over the confirmation seeds: SE of seeds and rows"),
        Line2D(
            [],
            [],
            marker="_",
            color="black",
            linestyle="none",
            markersize=12,
            label="selection value (best trial, optimistic)",
        ),
    ]


def plot_lora_vs_full(reviews: Sequence[StudyReview], path: Path) -> None:
    """Write :func:`draw_lora_vs_full` to ``path``."""
    _save(draw_lora_vs_full(reviews), path)


@_in_default_style
def draw_confirmation(confirmation: Mapping[str, Any]) -> plt.Figure:
    """A study's confirmed candidates: every seed's score on both sets, with the mean ± sd over seeds.

    Args:
        confirmation: The confirmation stage's summary (``confirmation.json``).
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
    return figure


def plot_confirmation(confirmation: Mapping[str, Any], path: Path) -> None:
    """Write :func:`draw_confirmation` to ``path``."""
    _save(draw_confirmation(confirmation), path)
