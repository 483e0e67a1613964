"""Benchmarks of the workflow against its peers, on this machine's CPU; writes BENCHMARKS.md.

`make bench` runs sections 1-4 (about 15 minutes on 2 cores); `make bench-search` runs the pruning section
here and the tabular sections (benchmarks/tabular.py). Each section saves its numbers, with the machine,
date and command, to benchmarks/results/<section>.json, and BENCHMARKS.md is rendered from every saved
section, so one section can be rerun alone (``--only pruning``). Every timing states its spread; side by
side comparisons run interleaved. Sections:

1. `make demo` wall time, cold and as a no-op rerun, and where the cold run's time goes;
2. overhead of the workflow's trial against a bare HF Trainer script, like for like;
3. the peer: the same study through ``Trainer.hyperparameter_search(backend="optuna")``, over seeds;
4. time per trial as the training tier grows;
5. opt-in pruning: training steps saved and the change in the best value, over seeds.

The GPU benchmark is a separate script (benchmarks/gpu_throughput.py).
"""

from __future__ import annotations

import argparse
import copy
import csv
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import optuna
import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from finetune_hpo.config import check_config, study_settings  # noqa: E402
from finetune_hpo.data import load_splits  # noqa: E402
from finetune_hpo.draws import subsample, write_subsample  # noqa: E402
from finetune_hpo.preprocess import load_tokenized, load_tokenizer, tokenize_task  # noqa: E402
from finetune_hpo.study import run_study  # noqa: E402
from finetune_hpo.tasks import TASKS  # noqa: E402
from finetune_hpo.training import frozen_for_garbage_collection  # noqa: E402

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
    subprocess.run(
        [sys.executable, "-m", "snakemake", "--profile", "profiles/demo", "--directory", str(workdir), *args],
        cwd=REPO,
        check=True,
        capture_output=True,
    )
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


def _range(spread: Mapping[str, Any], digits: int = 2, scale: float = 1.0) -> str:
    """``median [min, max]``: every timing table states its spread."""
    return (
        f"{scale * spread['median']:.{digits}f} "
        f"[{scale * spread['min']:.{digits}f}, {scale * spread['max']:.{digits}f}]"
    )


def demo_section(demo: Mapping[str, Any]) -> list[str]:
    noop = demo["noop_runs"]
    lines = [
        "## 1. Demo wall time",
        "",
        "`make demo` in a fresh folder, W&B offline (as users run it): the workflow, the HTML report when its "
        "inputs changed, and the review table.",
        "",
        "| run | seconds |",
        "|---|---|",
        f"| cold (from nothing: data, tiny model, 8 studies x 10 trials, confirmation, review, report), "
        f"median [min, max] of {len(demo['cold_runs'])} | "
        f"{_range({'median': demo['cold_s'], 'min': min(demo['cold_runs']), 'max': max(demo['cold_runs'])})} |",
        f"| no-op rerun, median [min, max] of {len(noop)} | "
        f"{_range({'median': demo['noop_s'], 'min': min(noop), 'max': max(noop)})} |",
        "",
        (
            "Every cold run exported the same best trial and value for all 8 studies"
            if demo["identical_exports"]
            else "**The cold runs exported different results** (see benchmarks/results/demo.json)"
        )
        + f"; the review's gap check passed for {demo['gap_checks'].count('PASS')} of {len(demo['gap_checks'])} "
        "studies.",
        "",
        "Where the last cold run's time went (Snakemake's per-job benchmark files; jobs run two at a time, so the "
        "sum exceeds the wall time):",
        "",
        "| rule | jobs | summed seconds | median seconds per job |",
        "|---|---|---|---|",
    ]
    for rule, row in sorted(demo["jobs"].items(), key=lambda item: -item[1]["sum_s"]):
        lines.append(f"| {rule} | {row['jobs']} | {row['sum_s']:.1f} | {row['median_s']:.1f} |")
    return [*lines, "", *DEMO_CUTS, ""]


# What made the cold demo faster, each measured once when it was made (the commands are in the text); the table
# above is the result of all of them.
DEMO_CUTS = [
    "What was cut, each change with its own measurement (the issue's starting point: 259 s cold, 6.3 s no-op).",
    "",
    "Made before the 266 s cold run of the previous version of this section:",
    "",
    "- **Imports.** `finetune_hpo.metrics` imports scikit-learn only when it computes a metric: importing "
    "`finetune_hpo.jobs`, which every job does, went from 2.46 s to 0.44 s (`python -X importtime`).",
    "- **W&B per trial.** Trial runs no longer freeze the pip environment (`x_save_requirements=False`; the "
    "study's summary run keeps it): 0.3 s to 0.03 s per run.",
    "- **No-op rerun.** `make demo` rebuilds the HTML report only when a result, the config or the workflow is "
    "newer than it: 6.3 s to 1.4 s.",
    "",
    "Since then (266 s to the table above):",
    "",
    "- **Two library costs per training step.** The Trainer counted the model's parameters on every step for "
    "its FLOP total, walking every module (1.3 ms a step; counted once per model now), and accelerate's "
    "`gc.collect()` at the start of each trial scanned every imported object (0.22 s a trial; the objects "
    "alive when the trials start are frozen out of the collector while they run): a 10-trial demo study took "
    "9-14% less time with the same scores (LoRA 20.7 to 18.9 s, full fine-tuning 17.2 to 14.8 s, one "
    "process, W&B disabled).",
    "- **Metrics without scikit-learn.** Accuracy and binary F1 are computed with numpy (a test pins them to "
    "scikit-learn's): importing scikit-learn cost 1.0 s in every study, confirmation and scoring job, and the "
    "bootstrap standard error of F1 took 1.7 s per 200 rows through `f1_score` (0.02 s now), which made MRPC's "
    "scoring jobs 11 s where the others took 6.6 s.",
    "- **Scheduling.** Studies start in order of their chain's cost (trainings x training tier, confirmation "
    "included): in the cold run before it, the two confirmation jobs ran alone for the last 21 s.",
    "- **A deterministic demo model.** tokenizers' WordPiece trainer gave the tiny model another vocabulary in "
    "every run (huggingface/tokenizers#1794), so the demo's scores, and the epochs TPE drew, changed from run "
    "to run; the vocabulary is now the corpus's words in sorted order (the check above compares the runs).",
    "- **A smaller demo workload.** The tiny model is 64 wide instead of 128 (a trial a third faster: LoRA 1.0 "
    "vs 1.5 s, full fine-tuning 0.79 vs 1.18 s at batch 16 x 4 epochs), batches are 16/32 instead of 8/16 (a "
    "quarter less time per trial: a CPU step of this model is mostly fixed overhead), SST-2's full fine-tuning "
    "range moved to 1e-3..8e-3 (the narrower model learns sentiment from ~2.5e-3), and the demo confirms the "
    "top 2 SST-2 configurations instead of 3. The tiers are 400 SQuAD v2 questions (was 600) and 300 MRPC and "
    "RTE pairs (was 400), selection sets still 200 rows; every study's best stayed within 0.5 points.",
    "- **Measured and kept.** SLURM's executor plugin runs `scontrol show config` when Snakemake starts; on a "
    "machine with SLURM's client installed but no controller answering, that waits 9 s for each `snakemake` "
    "call (twice in a cold `make demo`). The numbers above were measured with the controller up.",
]


def overhead_section(over: Mapping[str, Any]) -> list[str]:
    per, ratio = over["per_trial"], over["ratio"]
    return [
        "## 2. Overhead per trial, like for like",
        "",
        f"SST-2 demo, 400 examples, fixed hyperparameters (3 epochs, batch 16), 1 thread. Both sides use the "
        f"same TrainingArguments (eval batch {over['eval_batch_size']}, length-grouped training batches, fp32, "
        f"seed 42) and are timed the same way: the wall time of a whole {over['n_trials']}-trial run, one-time "
        "loads included, divided by its trials. The bare script loads the data once and the model per trial; "
        "the workflow runs its study (Optuna, the trial's copy of the base model, its records, the best model "
        "saved). Both run their trials with the objects loaded before them frozen out of the garbage collector "
        "(the workflow's trials do; the bare script is given the same, so the ratio is the workflow's machinery). "
        f"{over['blocks']} interleaved blocks; median [min, max] over blocks.",
        "",
        "| | seconds per trial | ratio to the bare script |",
        "|---|---|---|",
        f"| bare HF Trainer script | {_range(per['bare'])} | 1 |",
        f"| workflow, W&B offline (default) | {_range(per['offline'])} | {_range(ratio['offline'], 3)} |",
        f"| workflow, W&B disabled | {_range(per['disabled'])} | {_range(ratio['disabled'], 3)} |",
        "",
        "Per block, in run order (W&B offline): "
        + ", ".join(f"{value:.3f}" for value in ratio["offline"]["values"])
        + f". The W&B share is {over['w&b_share_s']:.2f} s per trial (offline minus disabled, medians). The first "
        "offline block also pays W&B's import and service start-up, once per process: a study job pays it once per "
        "study, about 1.5 s, which is what the first block's ratio shows over 5 trials. The median over blocks leaves "
        f"it out. Aim: ratio <= 1.05. W&B's share is a fixed cost per trial (its run's start, log and finish), "
        f"{100 * over['w&b_share_s'] / statistics.median(per['bare']['values']):.0f}% of a "
        f"{statistics.median(per['bare']['values']):.2f} s trial of the demo's tiny model; it does not grow with "
        "the trial, so on a real trial of minutes it vanishes, and the ratio without it is the W&B-disabled row.",
        "",
    ]


def peer_section(peer: Mapping[str, Any]) -> list[str]:
    lines = [
        '## 3. Peer: Trainer.hyperparameter_search(backend="optuna")',
        "",
        f"{peer['n_trials']} trials, the demo's full fine-tuning space on SST-2 (400 examples), {peer['seeds']} "
        "sampler seeds per side, interleaved; W&B off on both sides and no model kept (the peer has neither). "
        "'Same seeded sampler' passes the workflow's TPE settings and seed through `hyperparameter_search`'s "
        "kwargs to `optuna.create_study`; 'defaults' is what a user gets (unseeded TPE, 10 start-up trials). "
        "Seconds per training epoch divides each study's wall time by the epochs its trials drew. It still depends "
        "on the draws: per-trial fixed costs are spread over more or fewer epochs, an epoch at batch 16 costs more "
        "than at 32, and the two sides' draws part after the random start-up trials because their scores differ. "
        "The workflow's time includes loading the data, tokenizer and model; the peer's starts after its Trainer "
        "is built, and the peer reuses that Trainer across trials where the workflow builds one per trial. The "
        "workflow's trials skip two library costs the peer pays (the Trainer's parameter count on every step and "
        "a full garbage collection per trial; section 1 lists both), which is most of its lead per epoch. The "
        "space is the demo's full fine-tuning space without its SST-2 override (learning rate from 1e-5): most "
        "trials stay at chance, so the best-accuracy column is mostly whether a seed's draws reached the rates "
        "where the tiny model learns. Median [min, max] over seeds.",
        "",
        "| | seconds per training epoch | best accuracy | epochs drawn |",
        "|---|---|---|---|",
    ]
    for name, row in peer["summary"].items():
        lines.append(f"| {name} | {_range(row['s_per_epoch'])} | {_range(row['best'])} | {_range(row['epochs'], 0)} |")
    return [*lines, ""]


def scaling_section(scaling: Mapping[str, Any]) -> list[str]:
    lines = [
        "## 4. Scaling with the training tier",
        "",
        f"Fixed hyperparameters, 2 epochs, W&B disabled; median [min, max] of {scaling['repeats']} trials.",
        "",
        "| training examples | seconds per trial | seconds per 1,000 examples |",
        "|---|---|---|",
    ]
    for row in scaling["rows"]:
        spread = {"median": row["trial_s"], "min": row["min_s"], "max": row["max_s"]}
        lines.append(f"| {row['train_size']} | {_range(spread)} | {row['s_per_1000_examples']:.2f} |")
    return [*lines, ""]


def _demo_model(result: Mapping[str, Any]) -> str:
    """Which demo model and batch sizes a demo-based section ran on (older runs did not record it)."""
    model = result.get("demo_model")
    if model is None:
        return "the demo as it was before 2026-11-30's speed-up: a 128-wide model, batches 8/16"
    return f"a {model['hidden_size']}-wide model, batches {'/'.join(map(str, model['batch_sizes']))}"


def pruning_section(pruning: Mapping[str, Any]) -> list[str]:
    lines = [
        "## 5. Pruning (opt-in)",
        "",
        f"LoRA on the SST-2 demo (400 examples, 2-6 epochs, {_demo_model(pruning)}), {pruning['n_trials']} "
        f"trials, {pruning['seeds']} "
        "sampler seeds; each pruner against no pruning with the same seed. Steps = epochs trained x optimizer "
        "steps per epoch, over every trial, pruned ones included. Median [min, max] over seeds, and the 95% "
        "bootstrap interval of the median. A pruned trial does not count toward n_trials (the study runs to "
        "n_trials COMPLETE trials), so each pruned trial is replaced by another: a negative saving means "
        "pruning trained more steps in all. Steps leave out evaluation passes and per-trial fixed costs. The best "
        "value of a pruned study is the maximum over more selection scores (its extra trials), so it is biased "
        "upward against no pruning.",
        "",
        "| pruner | training steps saved (negative: more) | 95% CI | change in best value (points) | 95% CI "
        "| pruned trials per study |",
        "|---|---|---|---|---|---|",
    ]
    pooled = {
        name: sum(r["steps"] for r in rows) / sum(r["steps"] for r in pruning["rows"]["none"]) - 1
        for name, rows in pruning["rows"].items()
        if name != "none"
    }
    for name, row in pruning["paired"].items():
        saved_lo, saved_hi = row["steps_saved_ci"]
        change_lo, change_hi = row["best_change_ci"]
        lines.append(
            f"| {name} | {_range(row['steps_saved'], 1, 100)} % | [{100 * saved_lo:.1f}, {100 * saved_hi:.1f}] % | "
            f"{_range(row['best_change'])} | [{change_lo:.2f}, {change_hi:.2f}] | {_range(row['pruned_trials'], 0)} |"
        )
    totals = "; ".join(f"{name} {100 * extra:+.0f}%" for name, extra in pooled.items())
    return [*lines, "", f"Total steps over all seeds against no pruning: {totals}.", ""]


RESULTS = REPO / "benchmarks" / "results"
SECTIONS = {
    "demo": demo_section,
    "overhead": overhead_section,
    "peer": peer_section,
    "scaling": scaling_section,
    "pruning": pruning_section,
}


def save_section(name: str, result: Mapping[str, Any], command: str) -> None:
    """Each section's numbers in benchmarks/results/<name>.json, so one section can be rerun alone."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    document = {"machine": machine(), "date": time.strftime("%Y-%m-%d"), "command": command, "result": result}
    (RESULTS / f"{name}.json").write_text(json.dumps(document, indent=1, default=str) + "\n")


def write_report(path: Path) -> None:
    """BENCHMARKS.md from every section's last saved run (each says when, where and with which command)."""
    lines = [
        "# Benchmarks",
        "",
        "Every number below was measured by the command its section names, on the machine it names; "
        "absolute times compare only on the same machine. `make bench` reruns sections 1-4, "
        "`make bench-search` sections 5-7.",
        "",
    ]
    for name, render in SECTIONS.items():
        saved = RESULTS / f"{name}.json"
        if saved.is_file():
            document = json.loads(saved.read_text())
            body = render(document["result"])
            lines += [
                *body[:1],
                "",
                f"*{document['machine']}; `{document['command']}`, {document['date']}.*",
                *body[1:],
            ]
    lines += tabular_sections()
    lines += ["GPU throughput (samples/s, MFU, bf16): `python benchmarks/gpu_throughput.py` on a GPU machine.", ""]
    path.write_text("\n".join(lines))


def tabular_sections() -> list[str]:
    """The tabular-benchmark sections (`make bench-search`), as benchmarks/tabular.py last wrote them."""
    lines = [
        "*Sections 6 and 7 were measured while the workflow's default sampler was TPE with 4 start-up trials, "
        "multivariate: 'TPE workflow' in their tables means that setting. Section 6 moved the default to "
        "independent TPE with 4 start-up trials ('TPE start-up 4, independent').*",
        "",
    ]
    for name in ("samplers", "samplers-gp", "confirmation"):
        fragment = RESULTS / f"tabular_{name}.md"
        if fragment.is_file():
            lines += [fragment.read_text().rstrip(), ""]
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(REPO / "BENCHMARKS.md"))
    choices = ["demo", "overhead", "peer", "scaling", "pruning"]
    parser.add_argument("--only", nargs="*", choices=choices)
    parser.add_argument("--seeds", type=int, default=5, help="sampler seeds of the peer comparison")
    parser.add_argument("--pruning-seeds", type=int, default=10)
    parser.add_argument(
        "--cold-runs", type=int, default=3, choices=range(1, 11), help="cold `make demo` runs, each in a fresh folder"
    )
    parser.add_argument("--render", action="store_true", help="only rewrite BENCHMARKS.md from the saved sections")
    args = parser.parse_args()
    if args.render:
        write_report(Path(args.out))
        return
    sections = args.only or ["demo", "overhead", "peer", "scaling"]
    root = Path(tempfile.mkdtemp(prefix="finetune-hpo-bench-"))
    command = f"python benchmarks/run_all.py --only {' '.join(sections)}"
    try:
        if "demo" in sections:
            demo = bench_demo(root, cold_runs=args.cold_runs, reruns=5)
            model = demo.pop("workdir") / "resources" / "tiny-bert"
            save_section("demo", demo, command)
        else:
            model = demo_assets(root) / "resources" / "tiny-bert"
        runs = {
            "overhead": lambda: bench_overhead(root, model, n_trials=5, blocks=3),
            "peer": lambda: bench_peer(root, model, n_trials=10, seeds=args.seeds),
            "scaling": lambda: bench_scaling(root, model, sizes=[250, 500, 1000, 2000], repeats=3),
            "pruning": lambda: bench_pruning(root, model, seeds=args.pruning_seeds, n_trials=10),
        }
        for name in (name for name in runs if name in sections):
            result = runs[name]()
            save_section(name, result, command)  # what is measured so far survives a later failure
            print(name, json.dumps(result, default=str)[:2000], flush=True)
    finally:
        shutil.rmtree(root, ignore_errors=True)
        write_report(Path(args.out))
    print(Path(args.out).read_text())


if __name__ == "__main__":
    main()
