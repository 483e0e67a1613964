"""BENCHMARKS.md, rendered from every section's last saved run (benchmarks/results/): sections 1-5 from their
JSON, the tabular sections from the Markdown fragments ``python -m benchmarks.tabular`` wrote."""

from __future__ import annotations

import json
import statistics
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from benchmarks import REPO, RESULTS

# What made the cold demo faster, each change measured once when it was made; the demo table is their result.
DEMO_CUTS = REPO / "benchmarks" / "demo_cuts.md"


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
    return [*lines, "", DEMO_CUTS.read_text().rstrip(), ""]


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
        "the trial, so on a real trial of minutes it vanishes, and the ratio without it is the W&B-disabled row. "
        "Tried and not kept (2026-12-05, 9 blocks each, one after the other on this machine): W&B's calls made by a "
        "background thread, the run's start while the trial builds its model and its finish while the next trial "
        "is drawn. W&B's share went from 0.071 to 0.060 s per trial and the offline ratio from 1.073 to 1.104, both "
        "inside the blocks' spread: on a CPU trial the thread competes with training for the interpreter lock.",
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
    """Which demo model and batch sizes a demo-based section ran on, and whether the demo still has them."""

    def describe(hidden_size: int, batch_sizes: list[int]) -> str:
        return f"a {hidden_size}-wide model, batches {'/'.join(map(str, batch_sizes))}"

    measured = describe(result["demo_model"]["hidden_size"], result["demo_model"]["batch_sizes"])
    demo = yaml.safe_load((REPO / "demo" / "config" / "config.yaml").read_text())
    current = describe(demo["demo"]["hidden_size"], demo["search_spaces"]["lora"]["batch_size"]["choices"])
    return measured if measured == current else f"{measured}; the demo now has {current}"


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


SECTIONS = {
    "demo": demo_section,
    "overhead": overhead_section,
    "peer": peer_section,
    "scaling": scaling_section,
    "pruning": pruning_section,
}


def write_report(path: Path) -> None:
    """BENCHMARKS.md from every section's last saved run (each says when, where and with which command)."""
    lines = [
        "# Benchmarks",
        "",
        "Every number below was measured by the command its section names, on the machine it names; "
        "absolute times compare only on the same machine. `make bench` reruns sections 1-4, "
        "`make bench-search` sections 5-8.",
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


# The tabular sections in BENCHMARKS.md's order (python -m benchmarks.tabular writes their fragments).
TABULAR_SECTIONS = ("samplers", "samplers-gp", "confirmation", "transfer")


def tabular_sections() -> list[str]:
    """The tabular-benchmark sections (`make bench-search`), as ``python -m benchmarks.tabular`` last wrote them."""
    lines = [
        "*In sections 6 and 7, 'TPE workflow' is TPE with 4 start-up trials, multivariate: the workflow's default "
        "sampler when they were designed. Section 6 moved the default to independent TPE with 4 start-up trials "
        "('TPE start-up 4, independent'), the sampler of section 8.*",
        "",
    ]
    for name in TABULAR_SECTIONS:
        fragment = RESULTS / f"tabular_{name}.md"
        if fragment.is_file():
            lines += [fragment.read_text().rstrip(), ""]
    plan_time = RESULTS / "plan_time.md"  # python benchmarks/plan_time.py: what transfer's edges cost
    if plan_time.is_file():
        lines += [plan_time.read_text().rstrip(), ""]
    return lines
