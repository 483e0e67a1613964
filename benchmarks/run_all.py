"""Benchmarks of the workflow against its peers, on this machine's CPU; writes BENCHMARKS.md.

Run with `make bench` (about 15 minutes on 2 cores). Every number is measured in this run, side by side
where a ratio is given; absolute times only compare on the same machine. Sections:

1. demo wall time, cold and as a no-op rerun;
2. overhead of the workflow's trial against a bare HF Trainer script on the same cached data and model;
3. the peer: the same study through ``Trainer.hyperparameter_search(backend="optuna")``;
4. search quality at 10 trials over seeds: this workflow's sampler vs Optuna's default TPE vs random;
5. time per trial as the training tier grows.

The GPU benchmark is a separate script (benchmarks/gpu_throughput.py).
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import optuna
import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from finetune_hpo.config import check_config, study_settings  # noqa: E402
from finetune_hpo.data import load_splits, subsample, write_subsample  # noqa: E402
from finetune_hpo.models import load_base_model  # noqa: E402
from finetune_hpo.preprocess import load_tokenized, load_tokenizer, tokenize_task  # noqa: E402
from finetune_hpo.search_space import HyperParameters  # noqa: E402
from finetune_hpo.study import run_study  # noqa: E402
from finetune_hpo.tasks import TASKS  # noqa: E402
from finetune_hpo.training import TrainingSetup, train_and_evaluate  # noqa: E402

optuna.logging.set_verbosity(optuna.logging.WARNING)


def demo_config() -> dict[str, Any]:
    return yaml.safe_load((REPO / "demo" / "config" / "config.yaml").read_text())


def snakemake(workdir: Path, *args: str) -> float:
    started = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "snakemake", "--profile", "profiles/demo", "--directory", str(workdir), *args],
        cwd=REPO,
        check=True,
        capture_output=True,
    )
    return time.perf_counter() - started


def demo_workdir(root: Path) -> Path:
    workdir = root / "demo"
    (workdir / "config").mkdir(parents=True)
    config = demo_config()
    config["wandb"]["mode"] = "disabled"  # W&B's offline writer is not what we time
    (workdir / "config" / "config.yaml").write_text(yaml.safe_dump(config))
    return workdir


def bench_demo(root: Path, reruns: int) -> dict[str, Any]:
    """1. The whole demo from nothing, then no-op reruns."""
    workdir = demo_workdir(root)
    cold = snakemake(workdir)
    noop = [snakemake(workdir) for _ in range(reruns)]
    return {"cold_s": cold, "noop_s": statistics.median(noop), "noop_runs": noop, "workdir": workdir}


def demo_assets(root: Path) -> Path:
    """Only the demo's tiny model and SST-2 data, for the sections that do not time the demo itself."""
    workdir = demo_workdir(root)
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


def workflow_trials(config: dict, out: Path, summary: dict, n_trials: int, name: str) -> list[float]:
    config = copy.deepcopy(config)
    config["optuna"]["n_trials"] = n_trials
    settings = study_settings(config, "sst2", "full_finetune")
    study = run_study(settings, out / "tokenized", summary, out / name)
    return [t.duration.total_seconds() for t in study.trials]


def bare_trials(model: Path, out: Path, repeats: int) -> list[float]:
    """What a hand-written script does per trial: load the model, build a Trainer, train, evaluate."""
    import numpy as np
    import torch
    from transformers import (
        AutoModelForSequenceClassification,
        DataCollatorWithPadding,
        Trainer,
        TrainingArguments,
    )

    torch.set_num_threads(1)
    data = load_tokenized(out / "tokenized")
    tokenizer = load_tokenizer(str(model))
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        network = AutoModelForSequenceClassification.from_pretrained(str(model), num_labels=2)
        with tempfile.TemporaryDirectory() as output_dir:
            args = TrainingArguments(
                output_dir=output_dir,
                learning_rate=FIXED["learning_rate"],
                per_device_train_batch_size=FIXED["batch_size"],
                num_train_epochs=FIXED["num_train_epochs"],
                warmup_steps=FIXED["warmup_ratio"],
                weight_decay=FIXED["weight_decay"],
                eval_strategy="epoch",
                save_strategy="no",
                report_to="none",
                disable_tqdm=True,
                use_cpu=True,
                seed=42,
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
        times.append(time.perf_counter() - started)
    return times


def bench_overhead(root: Path, model: Path, repeats: int) -> dict[str, Any]:
    """2. Per-trial time: the workflow's trial vs a bare Trainer script, interleaved in blocks."""
    import torch

    torch.set_num_threads(1)
    config, out, summary = prepared_task(root, model, "sst2", 400)
    config = fixed_space(config, FIXED)
    bare_a = bare_trials(model, out, repeats)
    ours = workflow_trials(config, out, summary, repeats, "overhead_study")
    bare_b = bare_trials(model, out, repeats)
    bare = bare_a + bare_b
    return {
        "workflow_s": statistics.median(ours),
        "bare_s": statistics.median(bare),
        "ratio": statistics.median(ours) / statistics.median(bare),
        "n": len(ours),
    }


def bench_peer(root: Path, model: Path, n_trials: int) -> dict[str, Any]:
    """3. The same 10-trial study through Trainer.hyperparameter_search(backend="optuna")."""
    import numpy as np
    import torch
    from transformers import AutoModelForSequenceClassification, DataCollatorWithPadding, Trainer, TrainingArguments

    torch.set_num_threads(1)
    config, out, summary = prepared_task(root, model, "sst2", 400)
    config["optuna"]["n_trials"] = n_trials
    settings = study_settings(config, "sst2", "full_finetune")
    started = time.perf_counter()
    study = run_study(settings, out / "tokenized", summary, out / "peer_ours")
    ours_s = time.perf_counter() - started
    space = config["search_spaces"]["full_finetune"]

    def hp_space(trial: optuna.Trial) -> dict[str, Any]:
        return {
            "learning_rate": trial.suggest_float(
                "learning_rate", space["learning_rate"]["low"], space["learning_rate"]["high"], log=True
            ),
            "per_device_train_batch_size": trial.suggest_categorical("batch_size", space["batch_size"]["choices"]),
            # The Trainer's search has no warmup-ratio knob in transformers 5; a float warmup_steps is one.
            "warmup_steps": trial.suggest_float("warmup_ratio", 0.0, 0.3),
            "weight_decay": trial.suggest_float("weight_decay", 0.0, 0.3),
            "num_train_epochs": trial.suggest_int("num_train_epochs", 2, 6),
        }

    data = load_tokenized(out / "tokenized")
    tokenizer = load_tokenizer(str(model))
    with tempfile.TemporaryDirectory() as output_dir:
        trainer = Trainer(
            model_init=lambda _trial=None: AutoModelForSequenceClassification.from_pretrained(str(model), num_labels=2),
            args=TrainingArguments(
                output_dir=output_dir,
                eval_strategy="epoch",
                save_strategy="no",
                report_to="none",
                disable_tqdm=True,
                use_cpu=True,
                seed=42,
            ),
            train_dataset=data.train,
            eval_dataset=data.validation,
            processing_class=tokenizer,
            data_collator=DataCollatorWithPadding(tokenizer),
            compute_metrics=lambda p: {"accuracy": 100.0 * float((np.argmax(p.predictions, -1) == p.label_ids).mean())},
        )
        started = time.perf_counter()
        best = trainer.hyperparameter_search(
            direction="maximize",
            backend="optuna",
            hp_space=hp_space,
            n_trials=n_trials,
            compute_objective=lambda metrics: metrics["eval_accuracy"],
        )
        peer_s = time.perf_counter() - started
    return {
        "ours_s": ours_s,
        "peer_s": peer_s,
        "ratio": ours_s / peer_s,
        "ours_best": study.best_value,
        "peer_best": best.objective,
        "n_trials": n_trials,
    }


def bench_search_quality(root: Path, model: Path, seeds: int, n_trials: int, reference_trials: int) -> dict[str, Any]:
    """4. Best value after 10 trials, over seeds, for three samplers, against a long study's best."""
    import torch

    torch.set_num_threads(1)
    config, out, _ = prepared_task(root, model, "sst2", 200)
    task = TASKS["sst2"]
    data = load_tokenized(out / "tokenized")
    tokenizer = load_tokenizer(str(model))
    base = load_base_model(task, str(model))
    settings = study_settings(config, "sst2", "lora")
    setup = TrainingSetup(
        task=task,
        method="lora",
        seed=42,
        lora_target_modules=config["model"]["lora_target_modules"],
        scratch_dir=out / "scratch",
    )
    from finetune_hpo.search_space import suggest

    def objective(trial: optuna.Trial) -> float:
        params = suggest(trial, settings.search_space)
        params = HyperParameters(**{**params.__dict__, "num_train_epochs": min(params.num_train_epochs, 3)})
        return train_and_evaluate(setup, base, tokenizer, data, params).value

    samplers = {
        "workflow (TPE, 4 start-up, multivariate)": lambda seed: optuna.samplers.TPESampler(
            n_startup_trials=4, multivariate=True, constant_liar=True, seed=seed
        ),
        "Optuna default TPE (10 start-up)": lambda seed: optuna.samplers.TPESampler(seed=seed),
        "random search": lambda seed: optuna.samplers.RandomSampler(seed=seed),
    }
    reference = optuna.create_study(
        direction="maximize", sampler=samplers["workflow (TPE, 4 start-up, multivariate)"](0)
    )
    reference.optimize(objective, n_trials=reference_trials)
    results: dict[str, list[float]] = {name: [] for name in samplers}
    for seed in range(1, seeds + 1):
        for name, make in samplers.items():
            study = optuna.create_study(direction="maximize", sampler=make(seed))
            study.optimize(objective, n_trials=n_trials)
            results[name].append(study.best_value)
    return {
        "reference_best": reference.best_value,
        "reference_trials": reference_trials,
        "seeds": seeds,
        "per_sampler": {
            name: {
                "median_best": statistics.median(v),
                "median_regret": statistics.median([max(0.0, reference.best_value - x) for x in v]),
                "values": v,
            }
            for name, v in results.items()
        },
    }


def bench_scaling(root: Path, model: Path, sizes: list[int], repeats: int) -> dict[str, Any]:
    """5. Time per trial (fixed hyperparameters, 2 epochs) as the tier grows."""
    import torch

    torch.set_num_threads(1)
    from finetune_hpo.demo import generate_task_data

    data_dir = root / "scaling_data"  # the demo's files hold 1,000 training rows; the largest tier needs more
    generate_task_data("sst2", data_dir / "sst2", max(sizes), 400, seed=42)
    rows = []
    for size in sizes:
        config, out, summary = prepared_task(root, model, "sst2", size, data_dir=data_dir)
        config = fixed_space(config, FIXED | {"num_train_epochs": 2})
        times = workflow_trials(config, out, summary, repeats, "scaling_study")
        rows.append({"train_size": size, "trial_s": statistics.median(times)})
    for row in rows:
        row["s_per_1000_examples"] = 1000 * row["trial_s"] / row["train_size"]
    return {"rows": rows}


def machine() -> str:
    import torch

    return (
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
        f"torch {torch.__version__}, optuna {optuna.__version__}"
    )


def write_report(results: dict[str, Any], path: Path, command: str) -> None:
    demo, over, peer, quality, scaling = (results.get(k) for k in ("demo", "overhead", "peer", "quality", "scaling"))
    lines = ["# Benchmarks", "", f"Machine: {machine()}.  ", f"Command: `{command}` ({time.strftime('%Y-%m-%d')}).", ""]
    if demo:
        lines += [
            "## 1. Demo wall time",
            "",
            "| run | seconds |",
            "|---|---|",
            f"| cold (from nothing: data, tiny model, 8 studies x 10 trials, review) | {demo['cold_s']:.1f} |",
            f"| no-op rerun (median of {len(demo['noop_runs'])}) | {demo['noop_s']:.1f} |",
            "",
        ]
    if over:
        lines += [
            "## 2. Overhead per trial",
            "",
            "Same cached tokenized data and model, same hyperparameters (SST-2 demo, 400 examples, 3 epochs, "
            "1 thread). The bare script loads the model, builds a Trainer, trains and evaluates per trial; "
            "the workflow's trial includes Optuna, the trial's deep copy of the base model and its bookkeeping.",
            "",
            "| | median seconds per trial |",
            "|---|---|",
            f"| workflow trial (n={over['n']}) | {over['workflow_s']:.2f} |",
            f"| bare HF Trainer script (n={2 * over['n']}) | {over['bare_s']:.2f} |",
            f"| **ratio** (target <= 1.10) | **{over['ratio']:.3f}** |",
            "",
        ]
    if peer:
        lines += [
            '## 3. Peer: Trainer.hyperparameter_search(backend="optuna")',
            "",
            f"{peer['n_trials']} trials, the demo's full fine-tuning space on SST-2 (400 examples).",
            "",
            "| | wall seconds | best accuracy |",
            "|---|---|---|",
            f"| this workflow's study | {peer['ours_s']:.1f} | {peer['ours_best']:.2f} |",
            f"| Trainer.hyperparameter_search | {peer['peer_s']:.1f} | {peer['peer_best']:.2f} |",
            f"| ratio (ours / peer) | {peer['ratio']:.3f} | |",
            "",
            "One study each, so the best values are one draw: the peer passes no seed to Optuna and its 10 trials "
            "are TPE's random start-up; section 4 compares search quality over seeds. Wall time depends on the "
            "epochs each sampler drew.",
            "",
        ]
    if quality:
        lines += [
            "## 4. Search quality at 10 trials",
            "",
            f"LoRA on the SST-2 demo (200 examples, epochs capped at 3), {quality['seeds']} seeds per sampler; "
            f"regret against the best of a {quality['reference_trials']}-trial study "
            f"({quality['reference_best']:.2f}).",
            "",
            "| sampler | median best | median regret |",
            "|---|---|---|",
        ]
        for name, row in quality["per_sampler"].items():
            lines.append(f"| {name} | {row['median_best']:.2f} | {row['median_regret']:.2f} |")
        lines.append("")
    if scaling:
        lines += [
            "## 5. Scaling with the training tier",
            "",
            "Fixed hyperparameters, 2 epochs, median of the trials.",
            "",
            "| training examples | seconds per trial | seconds per 1,000 examples |",
            "|---|---|---|",
        ]
        for row in scaling["rows"]:
            lines.append(f"| {row['train_size']} | {row['trial_s']:.2f} | {row['s_per_1000_examples']:.2f} |")
        lines.append("")
    lines += ["GPU throughput (samples/s, MFU, bf16): `python benchmarks/gpu_throughput.py` on a GPU machine.", ""]
    path.write_text("\n".join(lines))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(REPO / "BENCHMARKS.md"))
    parser.add_argument("--only", nargs="*", choices=["demo", "overhead", "peer", "quality", "scaling"])
    parser.add_argument("--seeds", type=int, default=10)
    args = parser.parse_args()
    sections = args.only or ["demo", "overhead", "peer", "quality", "scaling"]
    root = Path(tempfile.mkdtemp(prefix="finetune-hpo-bench-"))
    results: dict[str, Any] = {}
    command = "make bench" if not args.only else f"python benchmarks/run_all.py --only {' '.join(args.only)}"
    try:
        if "demo" in sections:
            results["demo"] = bench_demo(root, reruns=3)
            model = results["demo"]["workdir"] / "resources" / "tiny-bert"
        else:
            model = demo_assets(root) / "resources" / "tiny-bert"
        runs = {
            "overhead": lambda: bench_overhead(root, model, repeats=5),
            "peer": lambda: bench_peer(root, model, n_trials=10),
            "quality": lambda: bench_search_quality(root, model, seeds=args.seeds, n_trials=10, reference_trials=60),
            "scaling": lambda: bench_scaling(root, model, sizes=[250, 500, 1000, 2000], repeats=3),
        }
        for name in (name for name in runs if name in sections):
            write_report(results, Path(args.out), command)  # what is measured so far survives a failure
            results[name] = runs[name]()
            print(name, json.dumps(results[name], default=str)[:2000], flush=True)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    write_report(results, Path(args.out), command)
    print(Path(args.out).read_text())


if __name__ == "__main__":
    main()
