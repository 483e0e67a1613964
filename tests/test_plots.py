"""The review's figures show what the export and the review say: the exported trial, the figure to plan
Phase 2 with and its error bars, importances only where the trials can rank parameters; nothing overlaps."""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import optuna
import pytest
from matplotlib.container import BarContainer
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

from finetune_hpo.config import check_config, study_settings
from finetune_hpo.estimates import seed_stats
from finetune_hpo.export import load_optimal, write_optimal_config
from finetune_hpo.plots import (
    HistoryMarks,
    draw_confirmation,
    draw_history,
    draw_importances,
    draw_lora_vs_full,
    draw_slice,
    plot_study,
)
from finetune_hpo.review import StudyReview
from tests.conftest import real_config
from tests.helpers import trial_provenance

SUMMARY = {"splits": {split: {"size": 10, "sha256": "c" * 64} for split in ("train", "validation")}}
# Trial 6 is the best single run; trial 7, a close second, is the one a confirmation stage may export.
VALUES = [45.0, 69.0, 47.5, 50.0, 50.5, 87.0, 90.5, 89.0, 47.0, 45.0]
DISTRIBUTIONS = {
    "learning_rate": FloatDistribution(1e-4, 1e-2, log=True),
    "batch_size": CategoricalDistribution([16, 32]),
    "num_train_epochs": IntDistribution(2, 6),
}


def _study(values: list[float], name: str = "rte_full_finetune") -> optuna.Study:
    study = optuna.create_study(study_name=name, direction="maximize")
    study.set_user_attr("fingerprint", "0123456789abcdef")
    for number, value in enumerate(values):
        study.add_trial(
            optuna.trial.create_trial(
                value=value,
                # The objective follows the learning rate; the other parameters are noise.
                params={
                    "learning_rate": 1e-4 * 10 ** (2 * number / len(values)),
                    "batch_size": (16, 32)[number % 2],
                    "num_train_epochs": 2 + (number * 3) % 5,
                },
                distributions=DISTRIBUTIONS,
                user_attrs={"train_seconds": 2.0, "trainable_parameters": 1000, **trial_provenance()},
            )
        )
    return study


def _confirmation(study: optuna.Study, winner: int, single_best: int) -> dict:
    """A confirmation stage over trials ``winner`` and ``single_best`` whose winner is ``winner``."""

    def candidate(trial: int, values: list[float]) -> dict:
        return {
            "trial": trial,
            "params": study.trials[trial].params,
            "runs": [{"seed": 42 + i, "selection_value": v, "confirmation_value": v} for i, v in enumerate(values)],
            "selection": seed_stats(values),
            "confirmation": seed_stats(values),
        }

    return {
        "top_k": 2,
        "seeds": [42, 43, 44],
        "ranked_on": "confirmation",
        "runs": 6,
        "trainings": 4,
        "candidates": [candidate(winner, [88.0, 86.0, 87.0]), candidate(single_best, [90.0, 50.0, 48.0])],
        "winner_trial": winner,
        "winner_params": study.trials[winner].params,
        "single_best_trial": single_best,
        "winner_changed": winner != single_best,
        "best_model": {"trial": winner, "retrained": False},
    }


def _export(tmp_path: Path, study: optuna.Study, confirmation: dict | None = None) -> dict:
    settings = study_settings(check_config(real_config()), "rte", "full_finetune")
    path = tmp_path / "rte_full_finetune_optimal.yaml"
    write_optimal_config(study, settings, SUMMARY, path, "journal", None, confirmation)
    return load_optimal(path)


def _marked(axis: plt.Axes) -> dict[str, tuple[float, float]]:
    """Legend label -> (trial, value) of every single-point marker the history draws over the trials."""
    return {
        collection.get_label(): tuple(collection.get_offsets()[0])
        for collection in axis.collections
        if len(collection.get_offsets()) == 1 and not collection.get_label().startswith("_")
    }


def test_history_marks_the_exported_winner_and_the_single_best_run_where_they_differ(tmp_path: Path) -> None:
    study = _study(VALUES)
    document = _export(tmp_path, study, _confirmation(study, winner=7, single_best=6))
    assert document["best_trial"] == 7  # the export names the confirmation winner, not the best single run
    axis = draw_history(study, HistoryMarks.from_export(document))
    marked = _marked(axis)
    assert marked == {
        "exported: trial 7 (confirmation winner: best mean over seeds)": (7.0, 89.0),
        "best single run: trial 6 (not exported)": (6.0, 90.5),
    }
    assert set(marked) <= {text.get_text() for text in axis.get_legend().get_texts()}
    plt.close(axis.figure)


def test_history_marks_one_trial_when_the_export_is_the_best_single_run(tmp_path: Path) -> None:
    study = _study(VALUES)
    axis = draw_history(study, HistoryMarks.from_export(_export(tmp_path, study)))
    assert _marked(axis) == {"exported: trial 6 (best COMPLETE trial)": (6.0, 90.5)}
    plt.close(axis.figure)
    # A tie goes to the lower number, as in the export.
    tied = _study([*VALUES[:7], 90.5, *VALUES[8:]])
    axis = draw_history(tied, HistoryMarks.from_export(_export(tmp_path, tied)))
    assert _marked(axis) == {"exported: trial 6 (best COMPLETE trial)": (6.0, 90.5)}
    plt.close(axis.figure)


def test_importances_are_a_note_when_most_trials_tie_and_bars_when_they_spread() -> None:
    # The demo's RTE full fine-tuning: 8 of 10 trials at 85.00, and fANOVA gave weight decay 0.58.
    tied = _study([85.0, 85.0, 74.0, 85.0, 85.0, 85.0, 80.0, 85.0, 85.0, 85.0])
    figure, note = draw_importances(tied)
    assert note == "too tied to rank: 8 of 10 COMPLETE trials scored 85.00 (more than 50% tied)"
    assert not [patch for axis in figure.axes for patch in axis.patches]  # no bars
    assert any(note in text.get_text() for axis in figure.axes for text in axis.texts)
    plt.close(figure)
    figure, note = draw_importances(_study(VALUES))
    assert note == ""
    (axis,) = figure.axes
    assert {label.get_text() for label in axis.get_yticklabels()} == set(DISTRIBUTIONS)
    assert len(axis.patches) == len(DISTRIBUTIONS)
    plt.close(figure)


def _review(study_name: str, value: float, standard_error: float, seeds: int, selection: float) -> StudyReview:
    return StudyReview(
        study_name,
        metric="accuracy",
        expected_value=value,
        expected_standard_error=standard_error,
        expected_seeds=seeds,
        selection_value=selection,
        trainable_parameters=94_000 if "full" in study_name else 21_000,
        mean_train_seconds=1.5,
    )


def test_lora_vs_full_bars_are_the_figure_to_plan_with_and_its_standard_error() -> None:
    reviews = [
        _review("sst2_full_finetune", 62.83, 13.08, 3, selection=89.0),  # confirmed: seeds and rows
        _review("sst2_lora", 82.83, 4.37, 3, selection=90.0),
        _review("rte_full_finetune", 84.0, 2.59, 1, selection=85.0),  # one seed: rows' noise only
        _review("rte_lora", 84.5, 2.56, 1, selection=85.0),
    ]
    figure = draw_lora_vs_full(reviews)
    axis = figure.axes[0]
    bars = {container.get_label(): container for container in axis.containers if isinstance(container, BarContainer)}
    expected = {  # tasks in sorted order: rte, sst2; bars labelled by the method registry's titles
        "full fine-tuning": ([84.0, 62.83], [2.59, 13.08], ["//", ""]),
        "LoRA": ([84.5, 82.83], [2.56, 4.37], ["//", ""]),
    }
    for method, (values, errors, hatches) in expected.items():
        container = bars[method]
        assert [patch.get_height() for patch in container.patches] == pytest.approx(values)
        assert [patch.get_hatch() or "" for patch in container.patches] == hatches
        segments = container.errorbar.lines[2][0].get_segments()
        assert [(top[1] - bottom[1]) / 2 for bottom, top in segments] == pytest.approx(errors)
    # The selection values (optimistic) are marked, not plotted as the bars.
    ticks = [c for c in axis.collections if c.get_label() == "selection value"]
    assert sorted(y for c in ticks for _, y in c.get_offsets()) == pytest.approx([85.0, 85.0, 89.0, 90.0])
    legend = " ".join(text.get_text() for legend in figure.legends for text in legend.get_texts())
    assert "one seed" in legend and "no seed noise" in legend
    plt.close(figure)


def _overlaps(figure: plt.Figure) -> list[str]:
    """Titles that overlap each other or a panel, axes with two titles, tick labels over each other, colour bars
    over a panel."""
    figure.canvas.draw()
    renderer = figure.canvas.get_renderer()
    panels = [axis for axis in figure.axes if not hasattr(axis, "_colorbar")]
    colour_bars = [axis for axis in figure.axes if hasattr(axis, "_colorbar")]
    problems, titles = [], []
    for axis in figure.axes:
        shown = [t for t in (axis.title, axis._left_title, axis._right_title) if t.get_text()]
        if len(shown) > 1:
            problems.append(f"{len(shown)} titles on one axes: {[t.get_text() for t in shown]}")
        titles += [(t.get_text(), t.get_window_extent(renderer), axis) for t in shown]
    if figure._suptitle is not None and figure._suptitle.get_text():
        titles.append((figure._suptitle.get_text(), figure._suptitle.get_window_extent(renderer), None))
    for i, (text, box, owner) in enumerate(titles):
        problems += [
            f"title {text!r} over title {other!r}" for other, other_box, _ in titles[i + 1 :] if box.overlaps(other_box)
        ]
        problems += [
            f"title {text!r} over a panel"
            for axis in panels
            if axis is not owner and box.overlaps(axis.get_window_extent(renderer))
        ]
    for axis in panels:  # tick labels of one axis running into each other
        for ticks in (axis.get_xticklabels(which="both"), axis.get_yticklabels(which="both")):
            boxes = [(t.get_text(), t.get_window_extent(renderer)) for t in ticks if t.get_visible() and t.get_text()]
            problems += [
                f"tick labels {a!r} and {b!r} overlap"
                for i, (a, box) in enumerate(boxes)
                for b, other in boxes[i + 1 :]
                if box.overlaps(other)
            ]
    for bar in colour_bars:
        problems += [
            "colour bar over a panel"
            for axis in panels
            if bar.get_window_extent(renderer).overlaps(axis.get_window_extent(renderer))
        ]
    return problems


def test_no_figure_has_overlapping_titles_or_a_colour_bar_over_a_panel(tmp_path: Path) -> None:
    study = _study(VALUES)
    confirmation = _confirmation(study, winner=7, single_best=6)
    one_parameter = optuna.create_study(study_name="sst2_lora", direction="maximize")
    for number, value in enumerate(VALUES):
        one_parameter.add_trial(
            optuna.trial.create_trial(
                value=value,
                params={"learning_rate": 1e-4 * (number + 1), "batch_size": 16},
                distributions={
                    "learning_rate": DISTRIBUTIONS["learning_rate"],
                    "batch_size": CategoricalDistribution([16]),
                },
            )
        )
    narrow = optuna.create_study(study_name="sst2_full_finetune", direction="maximize")
    for number, value in enumerate(VALUES):  # the demo's SST-2 full fine-tuning: 1e-3..2e-3, within a decade
        narrow.add_trial(
            optuna.trial.create_trial(
                value=value,
                params={"learning_rate": 1e-3 * 2 ** (number / 10), "num_train_epochs": 8 + number % 3},
                distributions={
                    "learning_rate": FloatDistribution(1e-3, 2e-3, log=True),
                    "num_train_epochs": IntDistribution(8, 10),
                },
            )
        )
    figures = {
        "history": draw_history(study, HistoryMarks(7, 6, confirmed=True)).figure,
        "slice, within a decade": draw_slice(narrow),
        "importances": draw_importances(study)[0],
        "importances note": draw_importances(_study([85.0] * 8 + [80.0, 70.0]))[0],
        "slice": draw_slice(study),
        "slice, one parameter": draw_slice(one_parameter),
        "lora_vs_full": draw_lora_vs_full([_review("rte_full_finetune", 84.0, 2.59, 1, 85.0)]),
        "confirmation_seeds": draw_confirmation(
            {**confirmation, "study_name": "rte_full_finetune", "metric": "accuracy"}
        ),
    }
    for name, figure in figures.items():
        assert _overlaps(figure) == [], name
        plt.close(figure)
    # And the files the workflow writes.
    paths = plot_study(study, HistoryMarks(7, 6, True), tmp_path / "h.png", tmp_path / "i.png", tmp_path / "s.png")
    assert all(path.stat().st_size > 1000 for path in paths.values())
