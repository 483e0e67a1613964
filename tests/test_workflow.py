"""End to end through Snakemake: the demo profile on a slice of the demo, reruns, a killed run, bad config,
and the VM profiles' plans."""

from __future__ import annotations

import copy
import csv
import json
import os
import re
import shutil
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
import yaml
from optuna.trial import TrialState

from finetune_hpo.export import load_optimal
from tests.conftest import REPO, demo_config, real_config
from tests.helpers import assert_trials_learned, freeze_in_a_running_trial, journal_trials

pytestmark = pytest.mark.slow
SNAKEMAKE = [sys.executable, "-m", "snakemake"]


def _slice_config() -> dict:
    """The demo on two tasks (one classification, one QA), 3 trials per study, with the demo's model: its
    trials learn, so the studies' scores differ and a broken export, model or seed shows in them."""
    config = copy.deepcopy(demo_config())
    config["tasks"] = {
        "rte": config["tasks"]["rte"] | {"train_size": 160, "validation_fraction": 0.5},
        "squad_v2": config["tasks"]["squad_v2"] | {"train_size": 80},
    }
    # The slice confirms RTE's top 2 configurations with 3 seeds, as the demo confirms SST-2's.
    config["tasks"]["rte"]["selection"] = {"confirm_top_k": 2, "confirm_seeds": 3}
    config["vms"] = {"vm1": ["squad_v2"], "vm2": ["rte"]}
    config["optuna"]["n_trials"] = 3
    config["wandb"]["mode"] = "disabled"
    config["demo"]["examples_per_split"] = {"train": 200, "validation": 200}
    for space in config["search_spaces"].values():
        space["num_train_epochs"] = {"type": "int", "low": 2, "high": 3}
    return config


def _snakemake(workdir: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run(
        [*SNAKEMAKE, "--profile", "profiles/demo", "--directory", str(workdir), *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=900,
    )
    if check and result.returncode != 0:
        raise AssertionError(f"snakemake failed:\n{result.stdout[-3000:]}\n{result.stderr[-6000:]}")
    return result


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    workdir = tmp_path_factory.mktemp("demo_slice")
    (workdir / "config").mkdir()
    (workdir / "config" / "config.yaml").write_text(yaml.safe_dump(_slice_config()))
    _snakemake(workdir)
    return workdir


STUDIES = ("rte_full_finetune", "rte_lora", "squad_v2_full_finetune", "squad_v2_lora")


def test_demo_slice_exports_valid_optimal_configs(demo_run: Path) -> None:
    for study in STUDIES:
        document = load_optimal(demo_run / "analysis" / f"{study}_optimal.yaml")
        assert document["study_name"] == study
        assert document["n_trials"] == 3
        assert document["best_hyperparameters"]
        assert document["metric"] == ("f1" if study.startswith("squad") else "accuracy")
        trials = demo_run / "results" / "studies" / study / "trials.csv"
        summary = json.loads((demo_run / "results" / "data" / document["task"] / "summary.json").read_text())
        values = [float(row["value"]) for row in csv.DictReader(trials.open()) if row["state"] == "COMPLETE"]
        assert_trials_learned(values, summary, document["metric"])
        assert (demo_run / "logs" / "phase1_optuna" / "all" / "run_study" / f"{study}.log").is_file()
        # The saved model of the exported trial, reloaded in another process, scores what the export claims.
        assert document["best_model"]["trial"] == document["best_trial"] and document["best_model"]["reproduced"]
    # The slice confirms RTE's top configurations with 3 seeds; the winner is exported and its saved
    # model is what rule score_best_model re-scored.
    selection = _slice_config()["tasks"]["rte"]["selection"]
    assert selection == {"confirm_top_k": 2, "confirm_seeds": 3}
    for study in ("rte_full_finetune", "rte_lora"):
        document = load_optimal(demo_run / "analysis" / f"{study}_optimal.yaml")
        confirmation = document["confirmation"]
        assert confirmation["runs"] == 2 * 3 and confirmation["seeds"] == [42, 43, 44]
        assert document["best_trial"] == confirmation["winner_trial"]
        assert document["best_model"]["trial"] == confirmation["winner_trial"] and document["best_model"]["reproduced"]
        assert (demo_run / "results" / "figures" / study / "confirmation_seeds.png").is_file()
    assert load_optimal(demo_run / "analysis" / "squad_v2_lora_optimal.yaml")["confirmation"] is None
    # SQuAD keeps the best trial's predictions for error analysis.
    predictions = (demo_run / "results/studies/squad_v2_lora/best_predictions.jsonl").read_text().splitlines()
    assert len(predictions) == round(80 * _slice_config()["tasks"]["squad_v2"]["validation_fraction"])
    assert '"null_score"' in predictions[0]


def test_rerun_of_a_finished_workflow_does_nothing(demo_run: Path) -> None:
    started = time.monotonic()
    result = _snakemake(demo_run)
    assert "Nothing to be done" in result.stdout + result.stderr
    assert time.monotonic() - started < 30


def test_deleted_optimal_yaml_is_reexported_identically_without_rerunning_the_study(demo_run: Path) -> None:
    optimal = demo_run / "analysis" / "rte_lora_optimal.yaml"
    journal = demo_run / "results" / "studies" / "rte_lora" / "optuna.journal"
    before, journal_before = optimal.read_bytes(), journal.read_bytes()
    optimal.unlink()
    result = _snakemake(demo_run)
    log = result.stdout + result.stderr
    assert "export_best_config" in log and "rule run_study" not in log
    assert optimal.read_bytes() == before
    assert journal.read_bytes() == journal_before


def _study_trials(journal: Path) -> list[optuna.trial.FrozenTrial]:
    from optuna.storages.journal import JournalFileBackend, JournalStorage

    storage = JournalStorage(JournalFileBackend(str(journal)))
    return optuna.load_study(study_name="rte_full_finetune", storage=storage).trials


def _study_states(journal: Path) -> list[TrialState]:
    return [t.state for t in _study_trials(journal)]


def test_killed_snakemake_run_resumes_to_exactly_n_trials(demo_run: Path, tmp_path: Path) -> None:
    # Its own copy of the demo run, so the other tests see the run as the fixture left it.
    workdir = tmp_path / "demo_copy"
    shutil.copytree(demo_run, workdir, symlinks=True)
    study_dir = workdir / "results" / "studies" / "rte_full_finetune"
    for path in (study_dir, workdir / "analysis" / "rte_full_finetune_optimal.yaml"):
        subprocess.run(["rm", "-rf", str(path)], check=True)
    process = subprocess.Popen(
        [*SNAKEMAKE, "--profile", "profiles/demo", "--directory", str(workdir)],
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    journal = study_dir / "optuna.journal"
    trials = journal_trials(journal, "rte_full_finetune")
    freeze_in_a_running_trial(process, trials, min_complete=1, group=True)
    os.killpg(process.pid, signal.SIGKILL)  # the whole run: Snakemake and its jobs
    process.wait(timeout=60)
    complete_before = _study_states(journal).count(TrialState.COMPLETE)
    # The only manual step is the one Snakemake itself prints after a kill: --unlock.
    locked = _snakemake(workdir, check=False)
    assert locked.returncode != 0 and "Directory cannot be locked" in locked.stdout + locked.stderr
    _snakemake(workdir, "--unlock")
    _snakemake(workdir)
    states = _study_states(journal)
    assert states.count(TrialState.COMPLETE) == 3
    assert TrialState.RUNNING not in states
    assert states.count(TrialState.FAIL) == 1
    assert len(states) == 4 and complete_before >= 1
    assert load_optimal(workdir / "analysis" / "rte_full_finetune_optimal.yaml")["n_trials"] == 3


def test_invalid_config_stops_before_any_job(tmp_path: Path) -> None:
    config = _slice_config()
    config["search_spaces"]["lora"]["learning_rate"] = {"type": "float", "low": 0.0, "high": 0.1, "log": True}
    (tmp_path / "config").mkdir()
    (tmp_path / "config" / "config.yaml").write_text(yaml.safe_dump(config))
    result = _snakemake(tmp_path, check=False)
    assert result.returncode != 0
    assert "search_spaces.lora.learning_rate: a log-scale range needs low > 0" in result.stdout + result.stderr
    assert not (tmp_path / "results").exists()


def _planned_jobs(*args: str) -> dict[str, int]:
    result = subprocess.run(
        [*SNAKEMAKE, *args, "-n", "--quiet", "rules"], cwd=REPO, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-3000:]
    counts = {}
    for line in (result.stdout + result.stderr).splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[1].isdigit():
            counts[parts[0]] = int(parts[1])
    return counts


def test_vm_profiles_plan_only_their_share() -> None:
    vm1 = _planned_jobs("--profile", "profiles/vm1")
    vm2 = _planned_jobs("--profile", "profiles/vm2")
    assert vm1["run_study"] == 2 and vm1["subsample_dataset"] == 1
    assert vm2["run_study"] == 6 and vm2["subsample_dataset"] == 3
    # A --config on the command line does not undo the VM selection (it lives in a profile configfile).
    assert _planned_jobs("--profile", "profiles/vm1", "--config", "seed=7")["run_study"] == 2


# Every rule whose job runs torch (tokenize_dataset: the tokenizer's processes), and the profile's threads for it.
TORCH_RULES = ("run_study", "run_study_worker", "confirm_top_trials", "score_best_model", "tokenize_dataset")


def _dry_run_threads(*args: str, env: dict[str, str] | None = None) -> dict[str, set[int]]:
    """Per rule, the threads its planned jobs get (a dry run prints ``threads: N`` above 1, nothing at 1)."""
    result = subprocess.run([*SNAKEMAKE, *args, "-n"], cwd=REPO, capture_output=True, text=True, timeout=300, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    threads: dict[str, set[int]] = {}
    for job in (result.stdout + result.stderr).split("\nrule ")[1:]:
        found = re.search(r"^\s+threads: (\d+)$", job, flags=re.MULTILINE)
        threads.setdefault(job.split(":")[0], set()).add(int(found.group(1)) if found else 1)
    return threads


def test_vm_profiles_give_every_torch_job_its_threads(tmp_path: Path) -> None:
    # --cores 8: a GPU VM's cores (Snakemake lowers a job's threads to the cores it runs with, 2 here).
    # vm2 plans the confirmation stage (MRPC, RTE); vm1 with 2 workers per study plans worker jobs.
    workers = tmp_path / "workers.yaml"
    workers.write_text(yaml.safe_dump({"optuna": {"storage": "env:OPTUNA_STORAGE_URL", "workers_per_study": 2}}))
    configfiles = ["--configfile", "config/config.yaml", "profiles/vm1/vm.yaml", str(workers)]
    storage = {**os.environ, "OPTUNA_STORAGE_URL": "postgresql://user@localhost/phase1"}
    vm1 = _dry_run_threads("--profile", "profiles/vm1", "--cores", "8", *configfiles, env=storage)
    vm2 = _dry_run_threads("--profile", "profiles/vm2", "--cores", "8")
    for vm, planned in (("vm1", vm1), ("vm2", vm2)):
        profile = yaml.safe_load((REPO / "profiles" / vm / "config.yaml").read_text())["set-threads"]
        for rule in TORCH_RULES:
            if rule in planned:
                assert profile.get(rule, 1) > 1 and planned[rule] == {profile[rule]}, (vm, rule, planned[rule])
    assert {rule for rule in TORCH_RULES if rule in vm1 or rule in vm2} == set(TORCH_RULES)
    # What a job's threads are for: each of these rules' scripts hands them to the package (torch's threads,
    # or the tokenizer's processes).
    for rule in TORCH_RULES:
        script = (REPO / "workflow" / "scripts" / f"{rule}.py").read_text()
        assert "threads=smk.threads" in script, rule


def test_the_conda_environment_applies_the_constraints_and_no_rule_names_one() -> None:
    environment = yaml.safe_load((REPO / "environment.yml").read_text())
    (pip,) = [item["pip"] for item in environment["dependencies"] if isinstance(item, dict)]
    # conda runs pip in environment.yml's folder, so these paths resolve from the repository root.
    assert "-c requirements/constraints.txt" in pip and (REPO / "requirements" / "constraints.txt").is_file()
    assert pip[-1] == "-e .[postgres,slurm]"  # the workflow's extras; make env adds the dev tools
    # Snakemake records a rule's conda environment on every run, --sdm conda or not: a named one calls
    # `conda env export` (every run fails without conda, as this machine has none), so jobs run in the
    # environment Snakemake runs in. The workflow tests run Snakemake here, without conda.
    for smk in sorted((REPO / "workflow" / "rules").glob("*.smk")):
        assert not re.search(r"^\s+conda:", smk.read_text(), flags=re.MULTILINE), smk.name


def _slurm_dry_run_jobs(vm: str) -> list[str]:
    """The jobs a dry run of profiles/slurm plans for one VM's share, as Snakemake prints them."""
    result = subprocess.run(
        [
            *SNAKEMAKE,
            "--profile",
            "profiles/slurm",
            "-n",
            "--configfile",
            "config/config.yaml",
            f"profiles/{vm}/vm.yaml",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return (result.stdout + result.stderr).split("\nrule ")[1:]


def test_slurm_profile_sends_studies_to_the_gpu_partition() -> None:
    # profiles/slurm itself (the executor test runs tests/slurm_profile on a GPU-less cluster): a dry run
    # plans vm1's share with one GPU per study on the gpu partition, and keeps cheap rules local.
    studies = [job for job in _slurm_dry_run_jobs("vm1") if job.startswith("run_study:")]
    assert len(studies) == 2  # SQuAD v2, both methods
    for job in studies:
        assert "slurm_partition=gpu" in job and "gpu=1" in job and "cpus_per_task=8" in job
    assert all("localrule" not in job for job in studies)
    # vm2's share: MRPC and RTE have a confirmation stage, one GPU job per study too.
    confirmations = [job for job in _slurm_dry_run_jobs("vm2") if job.startswith("confirm_top_trials:")]
    assert len(confirmations) == 4  # MRPC and RTE, both methods; SST-2 has none
    for job in confirmations:
        assert "slurm_partition=gpu" in job and "gpu=1" in job and "localrule" not in job


CHAIN = ("tokenize_dataset", "run_study", "confirm_top_trials", "score_best_model", "export_best_config")


def test_the_costliest_studies_are_scheduled_first() -> None:
    # vm2 (config/config.yaml): SST-2 trains 10 x 3,000 examples; MRPC and RTE 500 examples, 10 trials plus
    # a confirmation stage of 3 x 2 retrainings. Snakemake starts ready jobs in priority order, and every job
    # from a task's tokenization to a study's export carries its chain's cost.
    result = subprocess.run(
        [*SNAKEMAKE, "--profile", "profiles/vm2", "-n"], cwd=REPO, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-3000:]
    priorities = {}
    for job in (result.stdout + result.stderr).split("\nrule ")[1:]:
        rule = job.split(":")[0]
        if rule in CHAIN:
            task = job.split("wildcards: task=")[1].split(",")[0].split()[0]
            priorities.setdefault((rule, task), set()).add(int(job.split("priority: ")[1].split()[0]))
    assert priorities == {
        **{(rule, "sst2"): {10 * 3000} for rule in CHAIN if rule != "confirm_top_trials"},
        **{(rule, task): {(10 + 3 * 2) * 500} for rule in CHAIN for task in ("mrpc", "rte")},
    }


def test_dag_prints_the_graph() -> None:
    result = subprocess.run(
        [*SNAKEMAKE, "--profile", "profiles/vm2", "--dag"], cwd=REPO, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.lstrip().startswith("digraph")
    for rule in ("subsample_dataset", "tokenize_dataset", "run_study", "confirm_top_trials", "export_best_config"):
        assert rule in result.stdout


def test_report_html_holds_every_figure_and_the_summary(demo_run: Path) -> None:
    figures = [
        demo_run / "results" / "figures" / study / f"{kind}.png"
        for study in STUDIES
        for kind in ("history", "importances", "slice")
    ]
    figures.append(demo_run / "results" / "figures" / "lora_vs_full.png")
    assert all(path.is_file() and path.stat().st_size > 1000 for path in figures)
    summary = (demo_run / "results" / "summary.md").read_text()
    assert "4/4 optimal configs: all present and valid" in summary
    report = demo_run / "report.html"
    _snakemake(demo_run, "--report", str(report))
    html = report.read_text()
    for study in STUDIES:
        assert study in html
    for name in ("history.png", "importances.png", "slice.png", "lora_vs_full.png", "summary.csv"):
        assert name in html
    assert "confirmation_seeds.png" in html


def _cli(*arguments: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "finetune_hpo.cli", *arguments], cwd=REPO, capture_output=True, text=True, timeout=300
    )


def _config_problems(output: str) -> list[str]:
    return [
        line[line.index("Invalid configuration: ") :]
        for line in output.splitlines()
        if "Invalid configuration: " in line
    ]


def test_snakemake_and_validate_report_config_problems_alike_one_line_each(tmp_path: Path) -> None:
    config = _slice_config()
    config["optuna"]["n_trails"] = config["optuna"].pop("n_trials")
    config["tasks"]["rte"]["train_szie"] = config["tasks"]["rte"].pop("train_size")
    (tmp_path / "config").mkdir()
    (tmp_path / "config" / "config.yaml").write_text(yaml.safe_dump(config))
    planned = _snakemake(tmp_path, "-n", check=False)
    assert planned.returncode != 0
    expected = [
        "Invalid configuration: optuna.n_trails: unknown key (did you mean n_trials?)",
        "Invalid configuration: tasks.rte.train_szie: unknown key (did you mean train_size?)",
    ]
    assert _config_problems(planned.stdout + planned.stderr) == expected
    # No schema dump: Snakemake's frame around the two lines, nothing more.
    assert "Failed validating" not in planned.stderr and len((planned.stdout + planned.stderr).splitlines()) < 8
    validated = _cli("validate", "--directory", str(tmp_path))
    assert validated.returncode == 1 and _config_problems(validated.stderr) == expected
    # The checks after the schema too: a tier larger than the demo generates, before any job.
    config = _slice_config()
    config["tasks"]["rte"]["train_size"] = 5000
    (tmp_path / "config" / "config.yaml").write_text(yaml.safe_dump(config))
    planned = _snakemake(tmp_path, "-n", check=False)
    expected = [
        "Invalid configuration: tasks.rte.train_size: 5000 training examples asked, but "
        "demo.examples_per_split.train has 200 rows; lower train_size or give a larger file",
        "Invalid configuration: tasks.rte.validation_fraction: the selection set needs 2500 rows (0.5 x train_size "
        "5000), but demo.examples_per_split.validation has 200; lower validation_fraction or train_size",
    ]
    assert _config_problems(planned.stdout + planned.stderr) == expected
    assert (
        _config_problems(_cli("validate", "--profile", "profiles/demo", "--directory", str(tmp_path)).stderr)
        == expected
    )


def _studies_snakemake_plans(*args: str) -> list[str]:
    result = subprocess.run([*SNAKEMAKE, *args, "-n"], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    jobs = (result.stdout + result.stderr).split("\nrule ")[1:]
    return sorted(
        "{}_{}".format(*re.search(r"wildcards: task=(\w+), method=(\w+)", job).groups())
        for job in jobs
        if job.startswith("run_study:")
    )


def _studies_validate_plans(*args: str) -> list[str]:
    result = _cli("validate", *args)
    assert result.returncode == 0, result.stderr[-3000:]
    return sorted(line.split(":")[0].strip() for line in result.stdout.splitlines() if line.startswith("  "))


@pytest.mark.parametrize(
    "case", ["run folder", "run folder with a vm profile", "run folder with --configfile", "vm2 profile"]
)
def test_validate_plans_the_studies_snakemake_plans(tmp_path: Path, case: str) -> None:
    run = tmp_path / "run"
    (run / "config").mkdir(parents=True)
    config = _slice_config()  # squad_v2 (vm1) and rte (vm2)
    if case == "run folder with a vm profile":
        config = real_config()  # SST-2 alone, from the hub
        config["tasks"], config["vms"] = {"sst2": config["tasks"]["rte"]}, {}
    (run / "config" / "config.yaml").write_text(yaml.safe_dump(config))
    (tmp_path / "vm1.yaml").write_text("vm: vm1\n")
    args = {
        "run folder": ["--profile", "profiles/demo", "--directory", str(run)],
        # The VM profiles name the repository's config: Snakemake merges it onto the run folder's, and so
        # does validate (it prints the merge).
        "run folder with a vm profile": ["--profile", "profiles/vm2", "--directory", str(run)],
        "run folder with --configfile": ["--directory", str(run), "--configfile", str(tmp_path / "vm1.yaml")],
        "vm2 profile": ["--profile", "profiles/vm2", "--directory", str(tmp_path / "empty")],
    }[case]
    studies = _studies_validate_plans(*args)
    assert studies == _studies_snakemake_plans(*args)
    assert (
        studies
        == {
            "run folder": sorted(
                f"{task}_{method}" for task in ("rte", "squad_v2") for method in ("full_finetune", "lora")
            ),
            "run folder with a vm profile": sorted(
                f"{task}_{m}" for task in ("mrpc", "rte", "sst2") for m in ("full_finetune", "lora")
            ),
            "run folder with --configfile": ["squad_v2_full_finetune", "squad_v2_lora"],
            "vm2 profile": sorted(f"{task}_{m}" for task in ("mrpc", "rte", "sst2") for m in ("full_finetune", "lora")),
        }[case]
    )


def _readme_section(title: str) -> str:
    text = (REPO / "README.md").read_text()
    start = text.index(f"\n## {title}\n")
    return text[start : text.index("\n## ", start + 1)]


def test_your_own_data_and_model_in_five_minutes(tmp_path: Path, tiny_model: Path, realdata: Path) -> None:
    """The README section's steps, with the tests' tiny model for roberta-base: a folder with a small jsonl
    dataset and the section's config, validate, the workflow through Snakemake, check."""
    section = _readme_section("Your own data and model in five minutes")
    commands = section.split("```bash\n")[1].split("```")[0]
    for step in (
        "finetune-hpo validate --directory myrun",
        "snakemake --profile profiles/demo --directory myrun",
        "finetune-hpo check --directory myrun",
    ):
        assert step in commands, step
    config = yaml.safe_load(section.split("```yaml\n")[1].split("```")[0])
    assert config["model"]["name_or_path"] == "roberta-base"
    config["model"]["name_or_path"] = str(tiny_model)  # no hub here
    myrun = tmp_path / "myrun"
    (myrun / "config").mkdir(parents=True)
    (myrun / "data").mkdir()
    for split in ("train", "validation"):  # the shipped SST-2 rows: 60 and 40
        shutil.copy(realdata / "sst2" / f"{split}.jsonl", myrun / "data" / f"{split}.jsonl")
    (myrun / "config" / "config.yaml").write_text(yaml.safe_dump(config))

    validated = _cli("validate", "--directory", str(myrun))
    assert validated.returncode == 0, validated.stderr
    assert validated.stdout.startswith(f"config: {myrun}/config/config.yaml (working directory {myrun})")
    studies = _studies_validate_plans("--directory", str(myrun))
    assert studies == ["sst2_full_finetune", "sst2_lora"]
    assert _studies_snakemake_plans("--profile", "profiles/demo", "--directory", str(myrun)) == studies

    # A shared machine's umask: every file the run writes is readable by the group and others.
    run = subprocess.run(
        [*SNAKEMAKE, "--profile", "profiles/demo", "--directory", str(myrun)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=900,
        preexec_fn=lambda: os.umask(0o022),
    )
    assert run.returncode == 0, f"{run.stdout[-3000:]}\n{run.stderr[-6000:]}"
    for study in studies:
        document = load_optimal(myrun / "analysis" / f"{study}_optimal.yaml")
        assert document["n_trials"] == 2 and document["best_model"]["reproduced"]
    checked = _cli("check", "--directory", str(myrun))
    assert checked.returncode == 0, checked.stderr
    assert "sst2_full_finetune" in checked.stdout and "sst2_lora" in checked.stdout
    unreadable = [
        str(path.relative_to(myrun))
        for path in myrun.rglob("*")
        if ".snakemake" not in path.parts
        and not path.is_symlink()
        and stat.S_IMODE(path.stat().st_mode) & (0o055 if path.is_dir() else 0o044)
        != (0o055 if path.is_dir() else 0o044)
    ]
    assert not unreadable, f"not readable by group and others under umask 022: {unreadable}"
    assert any(path.name == "model.safetensors" for path in myrun.rglob("*"))  # the saved model is among them
