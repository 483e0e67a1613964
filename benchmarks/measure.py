"""Measurements of the workflow on this machine's CPU: the demo's wall time, the overhead per trial against a
bare HF Trainer script, the peer (``Trainer.hyperparameter_search``), scaling with the tier, and pruning
(benchmarks/README.md, sections 1-5). Each returns the numbers a section of BENCHMARKS.md is rendered from."""

from __future__ import annotations

import copy
import csv
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import optuna
import yaml

from benchmarks import REPO
from finetune_hpo.config import check_config, study_settings
from finetune_hpo.data import load_splits
from finetune_hpo.draws import subsample, write_subsample
from finetune_hpo.preprocess import load_tokenized, load_tokenizer, tokenize_task
from finetune_hpo.runtime import frozen_for_garbage_collection
from finetune_hpo.study import run_study
from finetune_hpo.tasks import TASKS

optuna.logging.set_verbosity(optuna.logging.WARNING)


def demo_config() -> dict[str, Any]:
    return yaml.safe_load((REPO / "demo" / "config" / "config.yaml").read_text())


def make_demo(workdir: Path) -> float:
    """One `make demo` in ``workdir`` (the workflow, the report when stale, the summary), timed from outside."""
    started = time.perf_counter()
    subprocess.run(["make", "demo", f"DEMO_DIR={workdir}"], cwd=REPO, check=True, capture_output=True)
    return time.perf_counter() - started


def snakemake(workdir: Path, *args: str) -> float:
    started = time.perf_counter()
    result = subprocess.run(
        [sys.executable, "-m", "snakemake", "--profile", "profiles/demo", "--directory", str(workdir), *args],
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    if result.returncode != 0:  # Snakemake's own account, not a bare CalledProcessError
        raise RuntimeError(f"snakemake {' '.join(args)} failed in {workdir}:\n{result.stderr[-3000:]}")
    return time.perf_counter() - started


def demo_workdir(root: Path, wandb_mode: str = "offline") -> Path:
    """A copy of the demo's config in a fresh folder; W&B offline, as users run it."""
    workdir = root / "demo"
    (workdir / "config").mkdir(parents=True)
    config = demo_config()
    config["wandb"]["mode"] = wandb_mode
    (workdir / "config" / "config.yaml").write_text(yaml.safe_dump(config))
    return workdir


def job_seconds(workdir: Path) -> dict[str, dict[str, float]]:
    """Per rule: jobs, summed and median wall seconds (Snakemake's benchmark files), to see where time goes."""
    per_rule: dict[str, list[float]] = {}
    for tsv in (workdir / "results" / "benchmarks").rglob("*.tsv"):
        rule = tsv.relative_to(workdir / "results" / "benchmarks").parts[0].removesuffix(".tsv")
        lines = tsv.read_text().splitlines()
        if len(lines) > 1:
            per_rule.setdefault(rule, []).append(float(lines[1].split("\t")[0]))
    return {
        rule: {"jobs": len(v), "sum_s": sum(v), "median_s": statistics.median(v)}
        for rule, v in sorted(per_rule.items())
    }


def exported_values(workdir: Path) -> dict[str, Any]:
    """Each study's exported trial and value, to check that cold runs agree."""
    return {
        path.name.removesuffix("_optimal.yaml"): [load["best_trial"], load["best_value"]]
        for path in sorted((workdir / "analysis").glob("*_optimal.yaml"))
        for load in [yaml.safe_load(path.read_text())]
    }


def bench_demo(root: Path, cold_runs: int, reruns: int) -> dict[str, Any]:
    """1. `make demo` from nothing (W&B offline), ``cold_runs`` times in fresh folders, then no-op reruns of
    the last; where a cold run's time went, and whether every cold run exported the same results."""
    cold, exports, workdir = [], [], root
    for run in range(cold_runs):
        workdir = demo_workdir(root / f"cold-{run}")
        cold.append(make_demo(workdir))
        exports.append(exported_values(workdir))
    noop = [make_demo(workdir) for _ in range(reruns)]
    with (workdir / "results" / "summary.csv").open() as review:
        gap_checks = [
            dict(item.split("=", 1) for item in row["criteria"].split(";") if "=" in item).get("gap_gt_5", "n/a")
            for row in csv.DictReader(review)
        ]
    return {
        "gap_checks": gap_checks,
        "cold_s": statistics.median(cold),
        "cold_runs": cold,
        "identical_exports": all(export == exports[0] for export in exports),
        "exports": exports[0],
        "noop_s": statistics.median(noop),
        "noop_runs": noop,
        "jobs": job_seconds(workdir),
        "workdir": workdir,
    }


def demo_assets(root: Path) -> Path:
    """Only the demo's tiny model and SST-2 data, for the sections that do not time the demo itself."""
    workdir = demo_workdir(root, wandb_mode="disabled")
    snakemake(workdir, "resources/tiny-bert", "resources/synthetic/sst2/train.jsonl")
    return workdir


def prepared_task(
    root: Path, model: Path, task_name: str, train_size: int, data_dir: Path | None = None
) -> tuple[dict, Path, dict]:
    """Subsample and tokenize a demo task at ``train_size`` (validation 200), like the workflow does."""
    data_dir = data_dir or root / "demo" / "resources" / "synthetic"
    config = demo_config()
    config["wandb"]["mode"] = "disabled"
    config["model"]["name_or_path"] = str(model)
    config["demo"] = {"synthetic_data": False, "build_model": False}
    config["vms"] = {}
    files = {split: str(data_dir / task_name / f"{split}.jsonl") for split in ("train", "validation")}
    config["tasks"] = {
        task_name: {"train_size": train_size, "validation_fraction": 200 / train_size, "data_files": files}
    }
    config = check_config(config)
    task = TASKS[task_name]
    out = root / f"{task_name}_{train_size}"
    drawn = subsample(task, load_splits(task, files), train_size, 200 / train_size, seed=42)
    summary = write_subsample(task, drawn, out / "data", seed=42)
    tokenize_task(task, out / "data", load_tokenizer(str(model)), out / "tokenized", max_seq_length=64)
    return config, out, summary


def fixed_space(config: dict, params: dict[str, Any]) -> dict:
    config = copy.deepcopy(config)
    for method in config["search_spaces"]:
        for name, value in params.items():
            if name in config["search_spaces"][method]:
                config["search_spaces"][method][name] = {"type": "categorical", "choices": [value]}
    return config


FIXED = {"learning_rate": 1e-3, "batch_size": 16, "num_train_epochs": 3, "warmup_ratio": 0.1, "weight_decay": 0.01}


def workflow_study_seconds(config: dict, out: Path, summary: dict, n_trials: int, name: str, wandb_mode: str) -> float:
    """Wall seconds of a whole N-trial study through the workflow's run_study (its one-time loads included)."""
    config = copy.deepcopy(config)
    config["optuna"]["n_trials"] = n_trials
    config["wandb"]["mode"] = wandb_mode
    settings = study_settings(config, "sst2", "full_finetune")
    started = time.perf_counter()
    run_study(settings, out / "tokenized", summary, out / name, wandb_dir=out / f"{name}-wandb")
    return time.perf_counter() - started


def bare_script_seconds(model: Path, out: Path, n_trials: int, eval_batch_size: int) -> float:
    """Wall seconds of what a hand-written loop does for N trials: load the data and tokenizer once; per
    trial load the model, build a Trainer with the workflow's TrainingArguments, train, evaluate. Its trials
    run with the objects loaded before them frozen out of the garbage collector, as the workflow's do, so
    the comparison measures the workflow's machinery, not that saving (0.22 s a trial on the demo)."""
    import numpy as np
    import torch
    from transformers import (
        AutoModelForSequenceClassification,
        DataCollatorWithPadding,
        Trainer,
        TrainingArguments,
        set_seed,
    )

    started = time.perf_counter()
    data = load_tokenized(out / "tokenized")
    tokenizer = load_tokenizer(str(model))
    steps_per_epoch = -(-len(data.train) // FIXED["batch_size"])
    with frozen_for_garbage_collection():
        for _ in range(n_trials):
            set_seed(42)
            network = AutoModelForSequenceClassification.from_pretrained(str(model), num_labels=2, dtype=torch.float32)
            with tempfile.TemporaryDirectory() as output_dir:
                # Exactly the arguments of the workflow's trial (training.trial_arguments and _train_once).
                args = TrainingArguments(
                    output_dir=output_dir,
                    per_device_eval_batch_size=eval_batch_size,
                    report_to="none",
                    seed=42,
                    data_seed=42,
                    train_sampling_strategy="group_by_length",
                    use_cpu=True,
                    label_names=["labels"],
                    learning_rate=FIXED["learning_rate"],
                    per_device_train_batch_size=FIXED["batch_size"],
                    gradient_accumulation_steps=1,
                    num_train_epochs=FIXED["num_train_epochs"],
                    warmup_steps=FIXED["warmup_ratio"],
                    weight_decay=FIXED["weight_decay"],
                    lr_scheduler_type="linear",
                    eval_strategy="epoch",
                    save_strategy="no",
                    logging_strategy="steps",
                    logging_steps=max(1, steps_per_epoch // 4),
                    logging_nan_inf_filter=False,
                    disable_tqdm=not sys.stderr.isatty(),  # as the workflow's trial decides it
                    dataloader_pin_memory=False,
                )
                trainer = Trainer(
                    model=network,
                    args=args,
                    train_dataset=data.train,
                    eval_dataset=data.validation,
                    processing_class=tokenizer,
                    data_collator=DataCollatorWithPadding(tokenizer),
                    compute_metrics=lambda p: {"accuracy": float((np.argmax(p.predictions, -1) == p.label_ids).mean())},
                )
                trainer.train()
    return time.perf_counter() - started


def _spread(values: list[float]) -> dict[str, Any]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values), "values": values}


def bench_overhead(root: Path, model: Path, n_trials: int, blocks: int) -> dict[str, Any]:
    """2. Seconds per trial, like for like: the same TrainingArguments (eval batch, length grouping, fp32), the
    whole N-trial run timed the same way on both sides, in interleaved blocks; the workflow with W&B offline
    (its default) and disabled."""
    import torch

    torch.set_num_threads(1)
    config, out, summary = prepared_task(root, model, "sst2", 400)
    config = fixed_space(config, FIXED)
    eval_batch = int(config["training"]["eval_batch_size"])
    per_trial: dict[str, list[float]] = {"bare": [], "offline": [], "disabled": []}
    for block in range(blocks):
        per_trial["bare"].append(bare_script_seconds(model, out, n_trials, eval_batch) / n_trials)
        for mode in ("offline", "disabled"):
            seconds = workflow_study_seconds(config, out, summary, n_trials, f"overhead-{mode}-{block}", mode)
            per_trial[mode].append(seconds / n_trials)
    ratios = {
        mode: [ours / bare for ours, bare in zip(per_trial[mode], per_trial["bare"], strict=True)]
        for mode in ("offline", "disabled")
    }
    return {
        "w&b_share_s": statistics.median(per_trial["offline"]) - statistics.median(per_trial["disabled"]),
        "n_trials": n_trials,
        "blocks": blocks,
        "eval_batch_size": eval_batch,
        "per_trial": {name: _spread(v) for name, v in per_trial.items()},
        "ratio": {mode: _spread(v) for mode, v in ratios.items()},
    }


def bench_peer(root: Path, model: Path, n_trials: int, seeds: int) -> dict[str, Any]:
    """3. The same 10-trial study through Trainer.hyperparameter_search(backend="optuna"), over seeds: with the
    workflow's seeded sampler (its kwargs reach optuna.create_study) and with its defaults. W&B is off on
    both sides (the peer has none)."""
    import numpy as np
    import torch
    from transformers import AutoModelForSequenceClassification, DataCollatorWithPadding, Trainer, TrainingArguments

    torch.set_num_threads(1)
    config, out, summary = prepared_task(root, model, "sst2", 400)
    config["optuna"]["n_trials"] = n_trials
    config["selection"]["save_best_model"] = False  # the peer keeps no model either
    space = config["search_spaces"]["full_finetune"]
    eval_batch = int(config["training"]["eval_batch_size"])

    def hp_space(trial: optuna.Trial) -> dict[str, Any]:
        # The workflow's names and ranges, so a seeded sampler draws the same values on both sides.
        lr, warmup, decay, epochs = (
            space[k] for k in ("learning_rate", "warmup_ratio", "weight_decay", "num_train_epochs")
        )
        return {
            "learning_rate": trial.suggest_float("learning_rate", lr["low"], lr["high"], log=True),
            "per_device_train_batch_size": trial.suggest_categorical("batch_size", space["batch_size"]["choices"]),
            # transformers 5 has no warmup_ratio; a float warmup_steps below 1 is a ratio, as in the workflow.
            "warmup_steps": trial.suggest_float("warmup_ratio", warmup["low"], warmup["high"]),
            "weight_decay": trial.suggest_float("weight_decay", decay["low"], decay["high"]),
            "num_train_epochs": trial.suggest_int("num_train_epochs", epochs["low"], epochs["high"]),
        }

    data = load_tokenized(out / "tokenized")
    tokenizer = load_tokenizer(str(model))

    def peer(seed: int, seeded: bool) -> dict[str, float]:
        storage = optuna.storages.InMemoryStorage()
        kwargs: dict[str, Any] = {"study_name": "peer", "storage": storage}
        if seeded:
            kwargs["sampler"] = optuna.samplers.TPESampler(
                n_startup_trials=config["optuna"]["sampler"]["n_startup_trials"],
                multivariate=config["optuna"]["sampler"]["multivariate"],
                seed=seed,
            )
        with tempfile.TemporaryDirectory() as output_dir:
            trainer = Trainer(
                model_init=lambda _trial=None: AutoModelForSequenceClassification.from_pretrained(
                    str(model), num_labels=2
                ),
                args=TrainingArguments(
                    output_dir=output_dir,
                    per_device_eval_batch_size=eval_batch,
                    eval_strategy="epoch",
                    save_strategy="no",
                    report_to="none",
                    disable_tqdm=True,
                    use_cpu=True,
                    seed=42,
                    data_seed=42,
                    train_sampling_strategy="group_by_length",
                    lr_scheduler_type="linear",
                ),
                train_dataset=data.train,
                eval_dataset=data.validation,
                processing_class=tokenizer,
                data_collator=DataCollatorWithPadding(tokenizer),
                compute_metrics=lambda p: {
                    "accuracy": 100.0 * float((np.argmax(p.predictions, -1) == p.label_ids).mean())
                },
            )
            started = time.perf_counter()
            best = trainer.hyperparameter_search(
                direction="maximize",
                backend="optuna",
                hp_space=hp_space,
                n_trials=n_trials,
                compute_objective=lambda metrics: metrics["eval_accuracy"],
                **kwargs,
            )
            seconds = time.perf_counter() - started
        trials = optuna.load_study(study_name="peer", storage=storage).trials
        epochs = sum(t.params["num_train_epochs"] for t in trials)
        return {"seconds": seconds, "epochs": epochs, "s_per_epoch": seconds / epochs, "best": best.objective}

    def ours(seed: int) -> dict[str, float]:
        seeded = copy.deepcopy(config)
        seeded["optuna"]["sampler"]["seed"] = seed
        settings = study_settings(seeded, "sst2", "full_finetune")
        started = time.perf_counter()
        study = run_study(settings, out / "tokenized", summary, out / f"peer-ours-{seed}")
        seconds = time.perf_counter() - started
        epochs = sum(t.params["num_train_epochs"] for t in study.trials)
        return {"seconds": seconds, "epochs": epochs, "s_per_epoch": seconds / epochs, "best": study.best_value}

    runs: dict[str, list[dict[str, float]]] = {"workflow": [], "peer, same seeded sampler": [], "peer, defaults": []}
    for seed in range(1, seeds + 1):  # interleaved, so a slow spell of the machine hits every side
        runs["workflow"].append(ours(seed))
        runs["peer, same seeded sampler"].append(peer(seed, seeded=True))
        runs["peer, defaults"].append(peer(seed, seeded=False))
    return {
        "n_trials": n_trials,
        "seeds": seeds,
        "runs": runs,
        "summary": {
            name: {key: _spread([r[key] for r in rows]) for key in ("s_per_epoch", "best", "epochs")}
            for name, rows in runs.items()
        },
    }


def bench_pruning(root: Path, model: Path, seeds: int, n_trials: int) -> dict[str, Any]:
    """5. Opt-in pruning on the demo (LoRA, SST-2, 2-6 epochs): training steps saved and the change in the
    best value, paired by sampler seed against no pruning."""
    import math

    import torch

    torch.set_num_threads(1)
    config, out, summary = prepared_task(root, model, "sst2", 400)
    config["optuna"]["n_trials"] = n_trials
    config["selection"]["save_best_model"] = False
    n_train = int(summary["splits"]["train"]["size"])
    rows: dict[str, list[dict[str, float]]] = {"none": [], "median": [], "hyperband": []}
    for seed in range(1, seeds + 1):
        for pruner in rows:
            variant = copy.deepcopy(config)
            variant["optuna"]["pruner"] = pruner
            variant["optuna"]["sampler"]["seed"] = seed
            settings = study_settings(variant, "sst2", "lora")
            study = run_study(settings, out / "tokenized", summary, out / f"pruning-{pruner}-{seed}")
            # Steps trained: epochs reported (one intermediate value per epoch) x optimizer steps per epoch.
            steps = sum(
                len(t.intermediate_values) * math.ceil(n_train / t.params["batch_size"])
                for t in study.trials
                if not t.user_attrs.get("surplus")
            )
            pruned = sum(t.state == optuna.trial.TrialState.PRUNED for t in study.trials)
            rows[pruner].append(
                {"steps": steps, "best": study.best_value, "pruned": pruned, "trials": len(study.trials)}
            )
    result: dict[str, Any] = {"seeds": seeds, "n_trials": n_trials, "rows": rows, "paired": {}}
    for pruner in ("median", "hyperband"):
        saved = [1 - r["steps"] / base["steps"] for r, base in zip(rows[pruner], rows["none"], strict=True)]
        change = [r["best"] - base["best"] for r, base in zip(rows[pruner], rows["none"], strict=True)]
        result["paired"][pruner] = {
            "steps_saved": _spread(saved),
            "steps_saved_ci": bootstrap_median_ci(saved),
            "best_change": _spread(change),
            "best_change_ci": bootstrap_median_ci(change),
            "pruned_trials": _spread([float(r["pruned"]) for r in rows[pruner]]),
        }
    result["demo_model"] = {
        "hidden_size": demo_config()["demo"]["hidden_size"],
        "batch_sizes": config["search_spaces"]["lora"]["batch_size"]["choices"],
    }
    return result


def bootstrap_median_ci(values: list[float], resamples: int = 5000, seed: int = 0) -> tuple[float, float]:
    """95% percentile-bootstrap interval of the median."""
    import numpy as np

    rng = np.random.default_rng(seed)
    data = np.asarray(values, dtype=float)
    medians = np.median(rng.choice(data, size=(resamples, len(data)), replace=True), axis=1)
    return float(np.percentile(medians, 2.5)), float(np.percentile(medians, 97.5))


def bench_scaling(root: Path, model: Path, sizes: list[int], repeats: int) -> dict[str, Any]:
    """4. Time per trial (fixed hyperparameters, 2 epochs) as the tier grows."""
    import torch

    torch.set_num_threads(1)
    from finetune_hpo.demo import generate_task_data

    data_dir = root / "scaling_data"  # the demo's files hold 1,000 training rows; the largest tier needs more
    generate_task_data("sst2", data_dir / "sst2", max(sizes), 400, seed=42)
    rows = []
    for size in sizes:
        config, out, summary = prepared_task(root, model, "sst2", size, data_dir=data_dir)
        config = fixed_space(config, FIXED | {"num_train_epochs": 2})
        config["optuna"]["n_trials"] = repeats
        study = run_study(study_settings(config, "sst2", "full_finetune"), out / "tokenized", summary, out / "scaling")
        times = [t.duration.total_seconds() for t in study.trials]
        rows.append({"train_size": size, "trial_s": statistics.median(times), "min_s": min(times), "max_s": max(times)})
    for row in rows:
        row["s_per_1000_examples"] = 1000 * row["trial_s"] / row["train_size"]
    return {"rows": rows, "repeats": repeats}


def machine() -> str:
    import torch

    return (
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
        f"torch {torch.__version__}, optuna {optuna.__version__}"
    )
