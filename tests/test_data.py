"""Subsampling: deterministic, stratified, the protocol's sizes; loaders read the hub schema from disk."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from finetune_hpo.data import DataError, load_splits
from finetune_hpo.draws import stratified_indices, subsample, write_subsample
from finetune_hpo.tasks import TASKS
from tests.conftest import HAS_FULL_REALDATA


def test_stratified_indices_are_deterministic_and_keep_proportions() -> None:
    labels = [0] * 700 + [1] * 300
    first = stratified_indices(labels, 100, seed=3)
    assert first == stratified_indices(labels, 100, seed=3)
    assert first != stratified_indices(labels, 100, seed=4)
    assert len(first) == len(set(first)) == 100
    assert Counter(labels[i] for i in first) == {0: 70, 1: 30}


def test_stratified_indices_round_to_the_exact_size() -> None:
    labels = ["a"] * 5 + ["b"] * 5 + ["c"] * 5
    chosen = stratified_indices(labels, 7, seed=0)
    assert len(chosen) == 7
    assert all(count in (2, 3) for count in Counter(labels[i] for i in chosen).values())


def test_asking_for_more_than_the_split_is_refused() -> None:
    with pytest.raises(DataError, match="only 3"):
        stratified_indices([0, 1, 0], 4, seed=0)


def _check_tiers(data: Path, task_name: str, train_size: int, fraction: float) -> None:
    task = TASKS[task_name]
    files = {split: str(data / task_name / f"{split}.jsonl") for split in ("train", "validation")}
    splits = load_splits(task, files)
    drawn = subsample(task, splits, train_size, fraction, seed=42)
    assert len(drawn["train"]) == train_size
    assert len(drawn["validation"]) == round(train_size * fraction)
    for split in ("train", "validation"):
        assert set(drawn[split].column_names) >= set(task.required_columns)
        if split == "validation" and drawn.group_column:
            continue  # drawn by whole groups (SQuAD v2's articles): the mix is the groups' (see below)
        full = Counter(_strata(task, splits[split]))
        sample = Counter(_strata(task, drawn[split]))
        for stratum, count in full.items():
            # Each stratum keeps its share within one example (largest-remainder rounding).
            assert abs(sample[stratum] - count * len(drawn[split]) / len(splits[split])) <= 1


@pytest.mark.parametrize("task_name", ["sst2", "rte", "squad_v2"])
def test_real_rows_load_and_subsample_stratified(realdata: Path, task_name: str) -> None:
    _check_tiers(realdata, task_name, 40, 0.25)


if HAS_FULL_REALDATA:

    @pytest.mark.parametrize(
        ("task_name", "train_size"), [("sst2", 3000), ("mrpc", 500), ("rte", 500), ("squad_v2", 3000)]
    )
    def test_real_data_loads_and_subsamples_to_the_protocol_tiers(
        full_realdata: Path, task_name: str, train_size: int
    ) -> None:
        _check_tiers(full_realdata, task_name, train_size, 0.1)


def _strata(task, rows) -> list:
    if task.is_classification:
        return rows["label"]
    return [bool(a["text"]) for a in rows["answers"]]


def test_subsample_is_byte_identical_across_runs(realdata: Path, tmp_path: Path) -> None:
    task = TASKS["rte"]
    files = {split: str(realdata / "rte" / f"{split}.jsonl") for split in ("train", "validation")}
    hashes = []
    for run in range(2):
        drawn = subsample(task, load_splits(task, files), 50, 0.2, seed=42, confirmation_max_rows=20)
        hashes.append(write_subsample(task, drawn, tmp_path / str(run), seed=42)["splits"])
    assert hashes[0] == hashes[1]
    assert (hashes[0]["train"]["size"], hashes[0]["confirmation"]["size"]) == (50, 20)


def test_tier_larger_than_the_split_is_a_clear_error(realdata: Path) -> None:
    task = TASKS["rte"]
    files = {split: str(realdata / "rte" / f"{split}.jsonl") for split in ("train", "validation")}
    with pytest.raises(DataError, match=r"asked for 5000 train examples but the split has only 60"):
        subsample(task, load_splits(task, files), 5000, 0.1, seed=42)


def test_labels_outside_the_task_are_refused(tmp_path: Path) -> None:
    rows = [{"sentence": f"s{i}", "label": i % 3, "idx": i} for i in range(30)]
    for split in ("train", "validation"):
        (tmp_path / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    files = {split: str(tmp_path / f"{split}.jsonl") for split in ("train", "validation")}
    with pytest.raises(DataError, match=r"label\(s\) \[2\] outside 0..1"):
        subsample(TASKS["sst2"], load_splits(TASKS["sst2"], files), 10, 0.1, seed=0)


def test_wrong_columns_are_refused_before_loading(tmp_path: Path) -> None:
    (tmp_path / "train.jsonl").write_text(json.dumps({"premise": "a", "hypothesis": "b", "label": 0}) + "\n")
    (tmp_path / "validation.jsonl").write_text(json.dumps({"premise": "a", "hypothesis": "b", "label": 0}) + "\n")
    files = {split: str(tmp_path / f"{split}.jsonl") for split in ("train", "validation")}
    with pytest.raises(DataError, match=r"lacks column\(s\) sentence1, sentence2"):
        load_splits(TASKS["rte"], files)


def test_empty_split_is_refused(tmp_path: Path) -> None:
    import datasets

    empty = datasets.Dataset.from_list([{"sentence": "x", "label": 0, "idx": 0}]).select([])
    full = datasets.Dataset.from_list([{"sentence": "x", "label": 0, "idx": 0}] * 10)
    with pytest.raises(DataError, match="split 'validation' is empty"):
        subsample(TASKS["sst2"], datasets.DatasetDict({"train": full, "validation": empty}), 5, 0.2, seed=0)


# Validation rows: 40 in each sample; the selection set takes 10 of them (40 x 0.25).
@pytest.mark.parametrize(("task_name", "cap", "expected"), [("rte", 2000, 40 - 10), ("squad_v2", 20, 20)])
def test_confirmation_rows_are_held_out_from_selection_and_capped(
    realdata: Path, tmp_path: Path, task_name: str, cap: int, expected: int
) -> None:
    task = TASKS[task_name]
    files = {split: str(realdata / task_name / f"{split}.jsonl") for split in ("train", "validation")}
    splits = load_splits(task, files)
    drawn = subsample(task, splits, 40, 0.25, seed=42, confirmation_max_rows=cap)
    id_column = task.id_column
    selection = set(drawn["validation"][id_column])
    confirmation = drawn["confirmation"][id_column]
    assert len(confirmation) == len(set(confirmation)) == expected
    assert not selection & set(confirmation)  # never a row that chose the winner
    assert set(confirmation) <= set(splits["validation"][id_column])  # the validation split, not training
    summary = write_subsample(task, drawn, tmp_path, seed=42)
    assert summary["splits"]["confirmation"]["size"] == expected
    assert summary["splits"]["validation"]["ids_sha256"]  # the selection ids, for Phase 2 to check against
    assert len((tmp_path / "confirmation.jsonl").read_text().splitlines()) == expected


def test_without_confirmation_an_empty_file_is_written(realdata: Path, tmp_path: Path) -> None:
    task = TASKS["sst2"]
    files = {split: str(realdata / "sst2" / f"{split}.jsonl") for split in ("train", "validation")}
    drawn = subsample(task, load_splits(task, files), 40, 0.1, seed=0)
    summary = write_subsample(task, drawn, tmp_path, seed=0)
    assert "confirmation" not in drawn and summary["splits"]["confirmation"]["size"] == 0
    assert (tmp_path / "confirmation.jsonl").read_text() == ""


def _held_out(drawn, column: str) -> tuple[set, set]:
    return set(drawn["validation"][column]), set(drawn["confirmation"][column])


def test_squad_held_out_rows_share_no_article_or_paragraph(realdata: Path, tmp_path: Path) -> None:
    task = TASKS["squad_v2"]
    files = {split: str(realdata / "squad_v2" / f"{split}.jsonl") for split in ("train", "validation")}
    drawn = subsample(task, load_splits(task, files), 40, 0.5, seed=42, confirmation_max_rows=2000)
    # 16 articles in 40 questions: each side keeps at least 5, so whole articles are drawn.
    assert drawn.group_column == "title" and drawn.error_group_column == "context"
    selection, confirmation = _held_out(drawn, "title")
    assert len(drawn["validation"]) == 20 and selection and confirmation and not selection & confirmation
    paragraphs = _held_out(drawn, "context")
    assert not paragraphs[0] & paragraphs[1]
    summary = write_subsample(task, drawn, tmp_path, seed=42)
    assert summary["held_out_grouped_by"] == "title" and summary["held_out_shared_groups"] == 0
    assert summary["standard_errors_resample"] == "context"
    assert summary["splits"]["validation"]["groups"] == len(selection)
    assert summary["splits"]["confirmation"]["groups"] == len(confirmation)


def test_one_article_only_groups_by_paragraph(tmp_path: Path) -> None:
    import datasets

    task = TASKS["squad_v2"]

    def rows(n: int, prefix: str) -> datasets.Dataset:
        # 4 questions per paragraph, every paragraph of one article (the demo's rows look like this).
        return datasets.Dataset.from_list(
            [
                {
                    "id": f"{prefix}{k}",
                    "title": "Only",
                    "context": f"Paragraph {k // 4} of {prefix}.",
                    "question": f"Question {k}?",
                    "answers": {"text": [], "answer_start": []},
                }
                for k in range(n)
            ]
        )

    splits = datasets.DatasetDict({"train": rows(40, "t"), "validation": rows(80, "v")})
    drawn = subsample(task, splits, 40, 0.5, seed=1, confirmation_max_rows=30)
    assert drawn.group_column == "context"
    selection, confirmation = _held_out(drawn, "context")
    assert len(drawn["validation"]) == 20 and len(drawn["confirmation"]) == 30
    assert not selection & confirmation
    # 20 questions of 4 per paragraph: 5 whole paragraphs, none cut (a cut one's rest would be used nowhere).
    assert len(selection) == 5


def test_a_configured_group_column_holds_out_whole_groups_for_any_task(realdata: Path) -> None:
    import datasets

    task = TASKS["rte"]
    files = {split: str(realdata / "rte" / f"{split}.jsonl") for split in ("train", "validation")}
    splits = load_splits(task, files)
    # A researcher's own column: pairs written from one source document, four per document.
    rows = [row | {"document": index // 4} for index, row in enumerate(splits["validation"].to_list())]
    splits = datasets.DatasetDict({"train": splits["train"], "validation": datasets.Dataset.from_list(rows)})
    drawn = subsample(task, splits, 40, 0.25, seed=0, confirmation_max_rows=100, group_column="document")
    selection, confirmation = _held_out(drawn, "document")
    assert drawn.group_column == "document" and not selection & confirmation
    assert len(drawn["validation"]) == 10 and len(selection) == 3  # 2 whole documents and 2 rows of a third
    with pytest.raises(DataError, match=r"tasks.rte.group_column: column 'premise' is not in the validation split"):
        subsample(task, splits, 40, 0.25, seed=0, group_column="premise")


if HAS_FULL_REALDATA:

    def test_protocol_size_squad_held_out_rows_share_no_paragraph(full_realdata: Path, tmp_path: Path) -> None:
        """The protocol's SQuAD v2 tier (3,000 questions, a 300-question selection set) on the real rows:
        drawn by question, 218 of 1,380 confirmation questions shared a paragraph with the selection set."""
        task = TASKS["squad_v2"]
        files = {split: str(full_realdata / "squad_v2" / f"{split}.jsonl") for split in ("train", "validation")}
        drawn = subsample(task, load_splits(task, files), 3000, 0.1, seed=42, confirmation_max_rows=2000)
        # 300 questions come from 3 of the sample's 16 articles: too few to choose on, so by paragraph.
        assert drawn.group_column == "context"
        selection, confirmation = _held_out(drawn, "context")
        assert not selection & confirmation and len(selection) > 100
        summary = write_subsample(task, drawn, tmp_path, seed=42)
        assert summary["splits"]["validation"]["size"] == 300 and summary["held_out_shared_groups"] == 0
        assert summary["splits"]["confirmation"]["size"] >= 1000
