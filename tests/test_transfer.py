"""Transfer between studies: ranked source trials, the interleaved portfolio, the mapping into a target space,
the readers of past runs, and `finetune-hpo portfolio`."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
import yaml
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.trial import TrialState

from finetune_hpo.config import check_config, planned_studies, study_settings
from finetune_hpo.export import write_optimal_config
from finetune_hpo.storage import StudyPaths, open_storage
from finetune_hpo.transfer import build_portfolio, enqueue_portfolio
from finetune_hpo.transfer_mapping import map_params, map_value
from finetune_hpo.transfer_sources import SourceTrial, TransferError, load_source_trials, rank_trials
from finetune_hpo.trial_records import write_trials_table
from tests.conftest import REPO, real_config
from tests.helpers import trial_provenance

SPACE = {
    "learning_rate": FloatDistribution(1e-6, 1e-4, log=True),
    "batch_size": CategoricalDistribution((1, 2, 4)),
    "num_train_epochs": IntDistribution(2, 6),
}
SUMMARY = {"splits": {split: {"size": 50, "sha256": "d" * 64} for split in ("train", "validation")}}


def _add_trials(study: optuna.Study, rows: list[tuple[float | None, dict]], state: TrialState | None = None) -> None:
    """Add one trial per (value, params); a ``None`` value is a FAIL trial."""
    for value, params in rows:
        trial_state = state or (TrialState.COMPLETE if value is not None else TrialState.FAIL)
        study.add_trial(
            optuna.trial.create_trial(
                state=trial_state,
                value=value if trial_state == TrialState.COMPLETE else None,
                params=params,
                distributions={name: SPACE[name] for name in params},
                user_attrs=trial_provenance(),  # what a real trial records, which the export requires
            )
        )
    study.set_user_attr("fingerprint", "0123456789abcdef")


def _params(learning_rate: float, batch_size: int = 2, epochs: int = 3) -> dict:
    return {"learning_rate": learning_rate, "batch_size": batch_size, "num_train_epochs": epochs}


def _source(name: str, values: list[float | None], batch_size: int = 2) -> list[SourceTrial]:
    """A study named ``name`` whose trial i has learning rate (i + 1) * 1e-6 and value values[i]."""
    study = optuna.create_study(study_name=name, direction="maximize")
    _add_trials(study, [(value, _params((i + 1) * 1e-6, batch_size)) for i, value in enumerate(values)])
    return rank_trials(name, study.trials)


# -------------------------------------------------------------------------------------------- ranking


def test_ranking_keeps_complete_trials_best_first_and_ties_go_to_the_lower_number() -> None:
    study = optuna.create_study(study_name="sst2_lora", direction="maximize")
    _add_trials(study, [(80.0, _params(1e-6)), (None, _params(2e-6)), (84.0, _params(3e-6)), (84.0, _params(4e-6))])
    _add_trials(study, [(None, _params(5e-6))], state=TrialState.PRUNED)
    ranked = rank_trials("sst2_lora", study.trials, origin="somewhere")
    assert [(t.number, t.rank, t.value) for t in ranked] == [(2, 1, 84.0), (3, 2, 84.0), (0, 3, 80.0)]
    assert ranked[0].params == _params(3e-6) and ranked[0].study == "sst2_lora" and ranked[0].origin == "somewhere"


# ------------------------------------------------------------------------------------------ portfolio


def test_portfolio_interleaves_the_sources_by_rank() -> None:
    a = _source("sst2_lora", [70.0, 90.0, 80.0])  # ranks: trial 1, 2, 0
    b = _source("mrpc_lora", [60.0, 50.0], batch_size=4)  # ranks: trial 0, 1
    portfolio = build_portfolio([a, b], SPACE, size=5)
    order = [(entry.source.study, entry.source.rank) for entry in portfolio]
    assert order == [("sst2_lora", 1), ("mrpc_lora", 1), ("sst2_lora", 2), ("mrpc_lora", 2), ("sst2_lora", 3)]
    assert build_portfolio([a, b], SPACE, size=3) == portfolio[:3]
    # A source listed first leads: the order of the sources is the caller's.
    assert build_portfolio([b, a], SPACE, size=1)[0].source.study == "mrpc_lora"


def test_portfolio_stops_when_every_source_is_used_up() -> None:
    sources = [_source("sst2_lora", [70.0, None]), _source("rte_lora", [65.0], batch_size=4)]
    portfolio = build_portfolio(sources, SPACE, size=5)
    assert [(entry.source.study, entry.source.number) for entry in portfolio] == [("sst2_lora", 0), ("rte_lora", 0)]


def test_configurations_equal_after_mapping_are_taken_once() -> None:
    # Ranks 1 and 2 both lie above the target's learning-rate range: clipped, they are the same configuration.
    study = optuna.create_study(study_name="sst2_lora", direction="maximize")
    wide = {**SPACE, "learning_rate": FloatDistribution(1e-6, 1e-3, log=True)}
    for value, rate in ((90.0, 5e-4), (85.0, 2e-4), (80.0, 3e-5)):
        study.add_trial(optuna.trial.create_trial(value=value, params=_params(rate), distributions=wide))
    portfolio = build_portfolio([rank_trials("sst2_lora", study.trials)], SPACE, size=2)
    assert [entry.source.rank for entry in portfolio] == [1, 3]
    assert [entry.params["learning_rate"] for entry in portfolio] == [1e-4, 3e-5]
    assert portfolio[0].mapping == ("learning_rate: 0.0005 clipped to 0.0001 (the range's high end)",)
    assert portfolio[1].mapping == ()


# -------------------------------------------------------------------------------------------- mapping


def test_numbers_outside_a_range_are_clipped_to_the_bound_that_is_named() -> None:
    log_range = FloatDistribution(1e-6, 1e-4, log=True)
    assert map_value(5e-4, log_range) == (1e-4, "0.0005 clipped to 0.0001 (the range's high end)")
    assert map_value(1e-7, log_range) == (1e-6, "1e-07 clipped to 1e-06 (the range's low end)")
    assert map_value(3e-5, log_range) == (3e-5, None)
    assert map_value(9, IntDistribution(2, 6)) == (6, "9 clipped to 6 (the range's high end)")


def test_ints_are_rounded_and_steps_respected() -> None:
    assert map_value(3.4, IntDistribution(2, 6)) == (3, "3.4 rounded to 3")
    assert map_value(4, IntDistribution(2, 6)) == (4, None)
    assert map_value(7.2, IntDistribution(2, 10, step=2)) == (8, "7.2 rounded to 8 (step 2)")
    value, note = map_value(0.17, FloatDistribution(0.0, 0.3, step=0.1))
    assert value == pytest.approx(0.2) and note == "0.17 rounded to 0.2 (step 0.1)"
    assert map_value(0.5, FloatDistribution(0.0, 0.3, step=0.1)) == (0.3, "0.5 clipped to 0.3 (the range's high end)")


def test_a_categorical_value_goes_to_the_nearest_choice_on_a_log_scale_when_all_are_positive() -> None:
    ranks = CategoricalDistribution((4, 8, 16, 32, 64))
    # 12 is 4 from both 8 and 16, but 16 is the nearer ratio (12/8 = 1.5 > 16/12).
    assert map_value(12, ranks) == (16, "12 not among the choices [4, 8, 16, 32, 64], nearest on a log scale: 16")
    assert map_value(128, ranks)[0] == 64
    assert map_value(16, ranks) == (16, None)
    assert map_value(16.0, ranks) == (16, None)  # a YAML or CSV float of a listed choice
    dropout = CategoricalDistribution((0.0, 0.05, 0.1))  # 0 is a choice: no log scale
    assert map_value(0.03, dropout) == (0.05, "0.03 not among the choices [0.0, 0.05, 0.1], nearest numerically: 0.05")
    assert map_value(0.2, dropout)[0] == 0.1


def test_a_value_that_cannot_be_mapped_is_left_to_the_sampler() -> None:
    assert map_value("cosine", CategoricalDistribution(("linear", "constant"))) == (
        None,
        "'cosine' is not among the choices ['linear', 'constant'], drawn by the sampler",
    )
    assert map_value("fast", FloatDistribution(0.0, 1.0))[0] is None


def test_parameters_the_target_lacks_are_dropped_and_those_the_source_lacks_are_drawn() -> None:
    lora_space = {**SPACE, "lora_rank": CategoricalDistribution((4, 8, 16))}
    source = {"learning_rate": 2e-5, "batch_size": 2, "num_train_epochs": 3, "weight_decay": 0.1}
    params, notes = map_params(source, lora_space)
    assert params == {"learning_rate": 2e-5, "batch_size": 2, "num_train_epochs": 3}
    assert notes == [
        "weight_decay: not in the target space, dropped",
        "lora_rank: not in the source, drawn by the sampler",
    ]

    entry = build_portfolio([[SourceTrial("sst2_full_finetune", 4, 91.0, source, 1, "here")]], lora_space, 1)[0]
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.RandomSampler(seed=0))
    enqueue_portfolio(study, [entry])
    trial = study.ask(lora_space)
    assert {name: trial.params[name] for name in params} == params
    assert trial.params["lora_rank"] in (4, 8, 16)  # drawn by the sampler
    assert trial.user_attrs["portfolio_source"] == {
        "study": "sst2_full_finetune",
        "trial": 4,
        "rank": 1,
        "value": 91.0,
        "ranked_by": "objective value",
        "origin": "here",
    }
    assert trial.user_attrs["portfolio_mapping"] == notes and trial.user_attrs["enqueued"] is True


# -------------------------------------------------------------------------------------------- readers


def _journal_study(study_dir: Path, values: list[float | None]) -> optuna.Study:
    storage = open_storage(None, StudyPaths(study_dir))
    study = optuna.create_study(study_name=study_dir.name, storage=storage, direction="maximize")
    _add_trials(study, [(value, _params((i + 1) * 1e-6, epochs=2 + i % 5)) for i, value in enumerate(values)])
    return study


def test_a_study_folder_is_read_from_its_journal_under_the_folders_name(tmp_path: Path) -> None:
    folder = tmp_path / "results" / "studies" / "sst2_lora"
    study = _journal_study(folder, [70.0, None, 88.0, 75.0])
    ranked = load_source_trials(folder)
    assert [(t.number, t.rank, t.value) for t in ranked] == [(2, 1, 88.0), (3, 2, 75.0), (0, 3, 70.0)]
    assert ranked[0].params == study.trials[2].params and ranked[0].study == "sst2_lora"
    assert ranked[0].origin == str(folder)


def test_a_folder_without_its_study_is_refused_with_the_file_named(tmp_path: Path) -> None:
    with pytest.raises(TransferError, match=r"empty: no optuna.journal in this folder"):
        (tmp_path / "empty").mkdir()
        load_source_trials(tmp_path / "empty")
    _journal_study(tmp_path / "sst2_lora", [70.0])
    renamed = tmp_path / "renamed"
    (tmp_path / "sst2_lora").rename(renamed)
    with pytest.raises(TransferError, match=r"renamed/optuna.journal: study renamed is not in its storage"):
        load_source_trials(renamed)
    with pytest.raises(TransferError, match=r"nowhere: no such file or folder"):
        load_source_trials(tmp_path / "nowhere")
    assert not (tmp_path / "nowhere").exists()  # reading never creates a study folder


def test_a_trials_table_ranks_as_its_study_does(tmp_path: Path) -> None:
    study = _journal_study(tmp_path / "results" / "studies" / "mrpc_lora", [61.0, None, 72.5, 72.5, 55.0])
    pruned = study.ask(SPACE)  # Optuna stores a pruned trial's last intermediate value as its value
    pruned.report(99.0, step=1)
    study.tell(pruned, state=TrialState.PRUNED)
    table = tmp_path / "results" / "studies" / "mrpc_lora" / "trials.csv"
    write_trials_table(study, table)
    assert "PRUNED,99.0" in table.read_text()
    from_table, from_folder = load_source_trials(table), load_source_trials(table.parent)
    assert [(t.study, t.number, t.rank, t.value, dict(t.params)) for t in from_table] == [
        (t.study, t.number, t.rank, t.value, dict(t.params)) for t in from_folder
    ]
    assert [t.number for t in from_table] == [2, 3, 0, 4]
    copied = tmp_path / "mrpc_lora_trials_copy.csv"
    copied.write_text(table.read_text())
    assert load_source_trials(copied)[0].study == "mrpc_lora_trials_copy"


def test_a_table_without_the_needed_columns_or_with_broken_params_is_named(tmp_path: Path) -> None:
    table = tmp_path / "trials.csv"
    table.write_text("number,state,value\n0,COMPLETE,70.0\n")
    with pytest.raises(TransferError, match=r"trials.csv: missing column\(s\) params"):
        load_source_trials(table)
    table.write_text('number,state,value,params\n0,COMPLETE,70.0,"{""learning_rate"": 1e-5}"\n1,COMPLETE,71.0,{oops\n')
    with pytest.raises(TransferError, match=r"trials.csv, line 3: cannot read trial '1'"):
        load_source_trials(table)
    other = tmp_path / "notes.txt"
    other.write_text("hello")
    with pytest.raises(TransferError, match=r"notes.txt: unknown kind of file"):
        load_source_trials(other)


def _settings(task: str, n_trials: int):
    config = check_config(real_config())
    config["optuna"]["n_trials"] = n_trials
    return study_settings(config, task, "lora")


def test_an_optimal_yaml_gives_its_exported_configuration(tmp_path: Path) -> None:
    study = optuna.create_study(study_name="rte_lora", direction="maximize")
    _add_trials(study, [(60.0, _params(1e-5)), (68.0, _params(2e-5)), (64.0, _params(3e-5))])
    out = tmp_path / "rte_lora_optimal.yaml"
    write_optimal_config(study, _settings("rte", 3), SUMMARY, out, "journal")
    (trial,) = load_source_trials(out)
    assert (trial.study, trial.number, trial.rank, trial.value) == ("rte_lora", 1, 1, 68.0)
    assert trial.params == _params(2e-5) and trial.origin == str(out)


def test_a_confirmed_optimal_yaml_ranks_its_candidates_by_their_confirmation_mean(tmp_path: Path) -> None:
    from finetune_hpo.estimates import summarize

    study = optuna.create_study(study_name="mrpc_lora", direction="maximize")
    _add_trials(study, [(84.0, _params(1e-5)), (80.0, _params(2e-5)), (82.0, _params(3e-5))])
    candidates = [study.trials[0], study.trials[2], study.trials[1]]  # the study's order: 84, 82, 80
    confirmation_means = {0: 70.0, 2: 79.0, 1: 75.0}  # the study's best is the weakest on held-out rows
    runs = {
        (trial.number, seed): {
            "seed": seed,
            "selection_value": trial.value,
            "confirmation_value": confirmation_means[trial.number] + (seed - 43),
            "diverged": False,
        }
        for trial in candidates
        for seed in (42, 43, 44)
    }
    summary = summarize("mrpc_lora", "f1", candidates, [42, 43, 44], runs, ranked_on="confirmation", trainings=6)
    out = tmp_path / "mrpc_lora_optimal.yaml"
    write_optimal_config(study, _settings("mrpc", 3), SUMMARY, out, "journal", confirmation=summary)
    ranked = load_source_trials(out)
    assert [(t.number, t.rank) for t in ranked] == [(2, 1), (1, 2), (0, 3)]
    assert [t.value for t in ranked] == pytest.approx([79.0, 75.0, 70.0])
    assert ranked[0].ranked_by == "confirmation mean over 3 seeds" and ranked[0].params == _params(3e-5)


def test_an_invalid_optimal_yaml_is_named(tmp_path: Path) -> None:
    broken = tmp_path / "sst2_lora_optimal.yaml"
    broken.write_text("study_name: sst2_lora\nbest_value: high\n")
    with pytest.raises(TransferError, match=r"sst2_lora_optimal.yaml: .*expected an exported optimal YAML"):
        load_source_trials(broken)


# ------------------------------------------------------------------------------------------------ CLI


def _portfolio_cli(*arguments: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "finetune_hpo.cli", "portfolio", *arguments],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_portfolio_command_prints_an_enqueue_list_that_the_config_accepts(tmp_path: Path) -> None:
    # The sources' space is wider than the config's LoRA space (learning rate, batch size, rank).
    wide = {
        "learning_rate": FloatDistribution(1e-6, 1e-3, log=True),
        "batch_size": CategoricalDistribution((1, 2, 4, 8)),
        "warmup_ratio": FloatDistribution(0.0, 0.3),
        "weight_decay": FloatDistribution(0.0, 0.3),
        "num_train_epochs": IntDistribution(2, 6),
        "lora_rank": CategoricalDistribution((4, 8, 12, 16, 32, 64)),
        "lora_alpha": CategoricalDistribution((8, 16, 32, 64, 128)),
        "lora_dropout": CategoricalDistribution((0.0, 0.05, 0.1)),
    }
    fixed = {"warmup_ratio": 0.1, "weight_decay": 0.01, "lora_alpha": 16, "lora_dropout": 0.05}
    folder = tmp_path / "studies" / "sst2_lora"
    sst2 = optuna.create_study(
        study_name="sst2_lora", storage=open_storage(None, StudyPaths(folder)), direction="maximize"
    )
    sst2_rows = [  # value, learning rate, batch size, epochs, rank
        (91.0, 3e-5, 4, 3, 16),
        (93.5, 5e-4, 8, 4, 12),  # the best: learning rate, batch size and rank outside the config's space
        (92.0, 2e-5, 2, 5, 8),
    ]
    rte = optuna.create_study(study_name="rte_lora", direction="maximize")
    rte_rows = [(66.0, 4e-5, 2, 6, 32), (70.0, 1e-5, 1, 3, 4)]
    for study, rows in ((sst2, sst2_rows), (rte, rte_rows)):
        for value, rate, batch, epochs, rank in rows:
            params = {"learning_rate": rate, "batch_size": batch, "num_train_epochs": epochs, "lora_rank": rank}
            study.add_trial(optuna.trial.create_trial(value=value, params=params | fixed, distributions=wide))
    table = tmp_path / "studies" / "rte_lora" / "trials.csv"
    write_trials_table(rte, table)

    result = _portfolio_cli(
        "--from", str(folder), str(table), "--method", "lora", "--size", "3", "--config", "config/config.yaml"
    )
    assert result.returncode == 0, result.stderr
    enqueue = yaml.safe_load(result.stdout)
    expected = [
        {"learning_rate": 1e-4, "batch_size": 4, "num_train_epochs": 4, "lora_rank": 16},
        {"learning_rate": 1e-5, "batch_size": 1, "num_train_epochs": 3, "lora_rank": 4},
        {"learning_rate": 2e-5, "batch_size": 2, "num_train_epochs": 5, "lora_rank": 8},
    ]
    assert enqueue == [params | fixed for params in expected]
    comments = [line for line in result.stdout.splitlines() if line.startswith("#")]
    assert f"# from {folder}: study sst2_lora, trial 1, rank 1, objective value 93.5" in comments
    assert f"# from {table}: study rte_lora, trial 1, rank 1, objective value 70" in comments
    assert "#   learning_rate: 0.0005 clipped to 0.0001 (the range's high end)" in comments
    # The mapped entry is reported on stderr too; the unchanged ones are not.
    assert "mapped " in result.stderr and "lora_rank: 12 not among the choices" in result.stderr
    assert "rte_lora, trial" not in result.stderr and "trial 2, rank 2" not in result.stderr

    # Pasted as optuna.enqueue of the GLUE studies, every LoRA study and (restricted to its space) every full
    # fine-tuning study accepts it.
    config = real_config()
    config["tasks"].pop("squad_v2")
    config["vms"] = {"vm2": ["mrpc", "sst2", "rte"]}
    config["optuna"]["enqueue"] = enqueue
    check_config(config)


def test_portfolio_command_uses_the_tasks_overrides_and_names_a_bad_source(tmp_path: Path) -> None:
    full = {"learning_rate": FloatDistribution(1e-6, 1e-4, log=True), "batch_size": CategoricalDistribution((1, 2, 4))}
    folder = tmp_path / "sst2_full_finetune"
    study = optuna.create_study(study_name=folder.name, storage=open_storage(None, StudyPaths(folder)))
    study.add_trial(
        optuna.trial.create_trial(value=90.0, params={"learning_rate": 2e-5, "batch_size": 4}, distributions=full)
    )
    arguments = ("--from", str(folder), "--method", "full_finetune", "--size", "1")
    # SQuAD v2's full fine-tuning runs at batch size 1 only (tasks.squad_v2.search_space_overrides).
    squad = _portfolio_cli(*arguments, "--task", "squad_v2")
    assert squad.returncode == 0, squad.stderr
    assert yaml.safe_load(squad.stdout) == [{"learning_rate": 2e-5, "batch_size": 1}]
    assert "batch_size: 4 not among the choices [1], nearest on a log scale: 1" in squad.stderr
    missing = _portfolio_cli("--from", str(tmp_path / "nowhere"), "--method", "lora", "--size", "1")
    assert missing.returncode == 1 and "nowhere: no such file or folder" in missing.stderr
    assert "Traceback" not in missing.stderr


# ------------------------------------------------------------------------------------------- in the workflow


def _transfer_config(tmp_path: Path, tiny_model: Path, n_trials: int = 4) -> dict:
    from tests.helpers import small_config

    config = small_config(tmp_path, tiny_model, tasks=("mrpc", "rte"), n_trials=n_trials, train_size=160)
    config["transfer"] = {"sources": {"rte": ["mrpc"]}, "portfolio_size": 2}
    # RTE's study searches a narrower learning rate than MRPC's: a source above it is clipped, and says so.
    config["tasks"]["rte"]["search_space_overrides"] = {
        "lora": {"learning_rate": {"type": "float", "low": 1.0e-4, "high": 2.0e-4, "log": True}}
    }
    return config


def test_a_study_starts_from_its_sources_best_trials_and_keeps_them_as_its_definition(
    tmp_path: Path, tiny_model: Path
) -> None:
    from finetune_hpo.demo import generate_task_data
    from finetune_hpo.review import review_study
    from finetune_hpo.storage import StudyError
    from finetune_hpo.study import run_study
    from tests.helpers import prepare_task

    config = _transfer_config(tmp_path, tiny_model)
    for task in ("mrpc", "rte"):  # both tasks' files exist before the config is checked
        generate_task_data(task, tmp_path / "synthetic" / task, 300, 200, seed=0)
    summaries = {task: prepare_task(tmp_path, config, task) for task in ("mrpc", "rte")}
    check_config(config)
    studies = tmp_path / "results" / "studies"
    source = run_study(
        study_settings(config, "mrpc", "lora"),
        tmp_path / "results/tokenized/mrpc",
        summaries["mrpc"],
        studies / "mrpc_lora",
    )
    ranked = sorted(source.trials, key=lambda t: (-t.value, t.number))
    settings = study_settings(config, "rte", "lora")
    assert settings.transfer.sources == ("mrpc",) and settings.transfer.portfolio_size == 2
    tables = [studies / "mrpc_lora" / "trials.csv"]
    target = run_study(
        settings, tmp_path / "results/tokenized/rte", summaries["rte"], studies / "rte_lora", transfer_sources=tables
    )
    assert (
        len([t for t in target.trials if t.state == TrialState.COMPLETE]) == 4
    )  # the portfolio counts toward n_trials
    # The portfolio ran first: the source's best two configurations, each recording where it came from.
    for number, source_trial in enumerate(ranked[:2]):
        trial = target.trials[number]
        assert trial.user_attrs["enqueued"] and trial.user_attrs["portfolio_source"]["study"] == "mrpc_lora"
        assert trial.user_attrs["portfolio_source"]["trial"] == source_trial.number
        for name, value in source_trial.params.items():
            if name == "learning_rate" and not 1e-4 <= value <= 2e-4:
                assert trial.params[name] in (1e-4, 2e-4)
                assert any(line.startswith("learning_rate:") for line in trial.user_attrs["portfolio_mapping"])
            else:
                assert trial.params[name] == pytest.approx(value)
    assert any(trial.user_attrs["portfolio_mapping"] for trial in target.trials[:2])  # a clip happened, and says so
    assert not any("portfolio_source" in t.user_attrs for t in target.trials[2:])
    definition = target.user_attrs["definition"]["transfer"]
    assert [entry["source"] for entry in definition] == [f"mrpc_lora#{t.number}" for t in ranked[:2]]
    # Resumed, the study recomputes the same portfolio: nothing new runs, nothing is enqueued again.
    again = run_study(
        settings, tmp_path / "results/tokenized/rte", summaries["rte"], studies / "rte_lora", transfer_sources=tables
    )
    assert len(again.trials) == len(target.trials)
    # A source that changed (rerun to other results) is another definition: refused, as any other change.
    changed = tmp_path / "changed" / "mrpc_lora" / "trials.csv"
    changed.parent.mkdir(parents=True)
    rows = tables[0].read_text().splitlines()
    best = next(k for k, row in enumerate(rows[1:], start=1) if row.startswith(f"{ranked[0].number},"))
    rows[best] = rows[best].replace(repr(float(ranked[0].value)), "0.0", 1)
    changed.write_text("\n".join(rows) + "\n")
    with pytest.raises(StudyError, match=r"different transfer"):
        run_study(
            settings,
            tmp_path / "results/tokenized/rte",
            summaries["rte"],
            studies / "rte_lora",
            transfer_sources=[changed],
        )
    # The review says where the exported configuration came from, and the best portfolio trial against the sampler's.
    out = tmp_path / "rte_lora_optimal.yaml"
    document = write_optimal_config(target, settings, summaries["rte"], out, "journal")
    review = review_study("rte_lora", out, target, expected_trials=4, n_startup_trials=4)
    assert review.transferred == 2
    assert review.best_transferred == max(t.value for t in target.trials[:2])
    assert review.best_sampled == max(t.value for t in target.trials[2:])
    source_of = target.trials[document["best_trial"]].user_attrs.get("portfolio_source")
    assert review.winner_from == (f"mrpc_lora #{source_of['trial']}" if source_of else "the sampler")


@pytest.mark.parametrize(
    ("sources", "message"),
    [
        ({"rte": ["rte"]}, r"transfer.sources.rte: a study cannot start from itself"),
        ({"rte": ["mrpc"], "mrpc": ["rte"]}, r"transfer.sources: a cycle"),
    ],
)
def test_transfer_edges_name_configured_tasks_without_cycles(tmp_path: Path, sources: dict, message: str) -> None:
    from finetune_hpo.config import ConfigError
    from tests.helpers import small_config

    config = small_config(tmp_path, tmp_path, tasks=("mrpc", "rte"))
    config["transfer"] = {"sources": sources, "portfolio_size": 2}
    with pytest.raises(ConfigError, match=message):
        check_config(config, check_data_files=False)


def test_edges_from_or_into_tasks_a_config_leaves_out_are_dropped(tmp_path: Path) -> None:
    """A config that keeps only some tasks still carries the default edges: a study starts from the configured
    sources only, and validate says which."""
    from tests.helpers import small_config

    config = small_config(tmp_path, tmp_path, tasks=("sst2", "rte"))
    config["transfer"] = {"sources": {"mrpc": ["sst2"], "rte": ["sst2", "mrpc"]}, "portfolio_size": 2}
    studies = {
        settings.study_name: settings for settings in planned_studies(check_config(config, check_data_files=False))
    }
    assert studies["rte_lora"].transfer.sources == ("sst2",)
    assert studies["sst2_lora"].transfer.sources == ()
    assert "mrpc_lora" not in studies

    config = small_config(tmp_path, tmp_path, tasks=("rte",))
    config["transfer"] = {"sources": {"rte": ["sst2", "mrpc"]}, "portfolio_size": 2}
    studies = planned_studies(check_config(config, check_data_files=False))
    assert [settings.transfer.on for settings in studies] == [False] * len(studies)


def test_a_source_on_another_vm_is_refused() -> None:
    from finetune_hpo.config import ConfigError

    config = real_config()
    config["transfer"]["sources"] = {"squad_v2": ["sst2"]}  # vm1's study cannot wait for vm2's
    with pytest.raises(ConfigError, match=r"transfer.sources.squad_v2: sst2 runs on another VM than vm1"):
        check_config(config, check_data_files=False)


def test_the_vm2_plan_waits_for_the_sources_and_dry_runs_show_the_edges() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "snakemake", "--profile", "profiles/vm2", "-n"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    edges = set()
    for job in (result.stdout + result.stderr).split("\nrule ")[1:]:
        if job.startswith("run_study:"):
            target = "{}_{}".format(*re.search(r"wildcards: task=(\w+), method=(\w+)", job).groups())
            inputs = job.split("input: ")[1].split("\n")[0]
            edges |= {(source, target) for source in re.findall(r"results/studies/(\w+)/trials\.csv", inputs)}
    for method in ("full_finetune", "lora"):  # the config's default: SST-2 feeds MRPC, both feed RTE
        assert (f"sst2_{method}", f"mrpc_{method}") in edges
        assert {(f"sst2_{method}", f"rte_{method}"), (f"mrpc_{method}", f"rte_{method}")} <= edges
    assert len(edges) == 6  # and nothing else: no study of another method, no SST-2 from anyone
