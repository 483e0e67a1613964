"""Sections ``samplers`` and ``samplers-gp``: random search, Optuna's default TPE, TPE settings, a warm start
and GPSampler at 10 trials per study on HPOBench (benchmarks/README.md)."""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import optuna

from benchmarks.tabular.records import COMMAND, provenance
from benchmarks.tabular.simulate import (
    EARLIER_WORKFLOW_TPE,
    N_TRIALS,
    SamplerFactory,
    best_observed,
    gp,
    noise_draws,
    random_sampler,
    run_study,
    selection_scorer,
    tpe,
)
from benchmarks.tabular.stats import fmt_ci, paired_rows, verdict
from benchmarks.tabular.tables import Table, load_tables, table_facts

# scikit-learn MLPClassifier defaults before snapping (batch_size="auto" is min(200, n_samples) = 200 here).
SKLEARN_MLP_DEFAULT: dict[str, float] = {
    "alpha": 1e-4,
    "batch_size": 200,
    "depth": 1,
    "learning_rate_init": 1e-3,
    "width": 100,
}


@dataclass(frozen=True)
class SamplerSpec:
    name: str
    factory: SamplerFactory
    expensive: bool = False
    warm_start: bool = False


WORKFLOW_NAME = "TPE start-up 4, multivariate (workflow)"


def sampler_specs(section: str) -> list[SamplerSpec]:
    """The rows of a samplers section; random search is in both, as the paired baseline."""
    specs = [SamplerSpec("Random", random_sampler)]
    if section == "samplers-gp":
        return specs + [SamplerSpec(f"GP start-up {k}", gp(k), expensive=True) for k in (2, 3, 4)]
    specs.append(
        SamplerSpec(
            "TPE Optuna default (10 start-up = random here)", lambda seed: optuna.samplers.TPESampler(seed=seed)
        )
    )
    for multivariate in (False, True):
        for n_startup in (2, 3, 4, 5):
            name = f"TPE start-up {n_startup}, {'multivariate' if multivariate else 'independent'}"
            if n_startup == 4 and multivariate:
                name += " (workflow)"
            specs.append(SamplerSpec(name, tpe(n_startup, multivariate)))
    specs += [
        SamplerSpec("TPE workflow + group=True", tpe(4, True, group=True)),
        SamplerSpec("TPE workflow + consider_endpoints=True", tpe(4, True, consider_endpoints=True)),
        SamplerSpec("TPE workflow + prior_weight=0.5", tpe(4, True, prior_weight=0.5)),
        SamplerSpec("TPE workflow + prior_weight=2.0", tpe(4, True, prior_weight=2.0)),
        SamplerSpec("TPE workflow + warm start (sklearn default as trial 0)", EARLIER_WORKFLOW_TPE, warm_start=True),
        SamplerSpec("Random + warm start (sklearn default as trial 0)", random_sampler, warm_start=True),
    ]
    return specs


def warm_start_params(table: Table) -> dict[str, Any]:
    """sklearn's MLP default snapped onto the grid, as grid values the study can enqueue."""
    index = table.config_index(SKLEARN_MLP_DEFAULT)
    return table.config_params(index)


def run_samplers(
    tables: list[Table], replicates: int, expensive_replicates: int, specs: Sequence[SamplerSpec]
) -> tuple[dict[str, dict[str, dict[str, list[float]]]], dict[str, float]]:
    raw: dict[str, dict[str, dict[str, list[float]]]] = {}
    seconds: dict[str, float] = {}
    if any(s.expensive for s in specs):
        import torch  # GPSampler's backend; keep it on one thread

        torch.set_num_threads(1)
    for spec in specs:
        raw[spec.name] = {}
        # Never more than random search's replicates: every row is paired with random's replicates 0..n-1.
        n_rep = min(expensive_replicates, replicates) if spec.expensive else replicates
        t0 = time.perf_counter()
        for table in tables:
            enqueue = [warm_start_params(table)] if spec.warm_start else []
            rows: dict[str, list[float]] = {"regret": [], "pick": []}
            for r in range(n_rep):
                draws = noise_draws(table, r)[:N_TRIALS]
                configs, observed = run_study(
                    table, spec.factory(r), N_TRIALS, selection_scorer(table, r, draws), enqueue
                )
                pick = best_observed(table, configs, observed)
                rows["regret"].append(float(table.regret(np.array([pick]))[0]))
                rows["pick"].append(pick)
            raw[spec.name][table.label] = rows
        seconds[spec.name] = time.perf_counter() - t0
        print(f"  samplers {spec.name}: {n_rep} replicates, {seconds[spec.name]:.1f}s", file=sys.stderr)
    return raw, seconds


def samplers_section(args: argparse.Namespace, section: str) -> dict[str, Any]:
    """Run a samplers section (``samplers`` or ``samplers-gp``): raw regrets and picks per sampler and dataset."""
    t0, c0 = time.perf_counter(), time.process_time()
    tables = load_tables(("HPOBench",), args.only)
    specs = [
        s
        for s in sampler_specs(section)
        if args.sampler_filter is None or s.name == "Random" or any(o in s.name for o in args.sampler_filter)
    ]
    raw, seconds = run_samplers(tables, args.replicates, args.expensive_replicates, specs)
    return {
        "tables": table_facts(tables),
        "raw": raw,
        "seconds": seconds,
        "warm_start_params": {t.label: warm_start_params(t) for t in tables},
        "wall_s": time.perf_counter() - t0,
        "cpu_s": time.process_time() - c0,
    }


def samplers_markdown(record: dict[str, Any], section_name: str) -> tuple[str, dict[str, Any]]:
    """The section's Markdown fragment and summary, from a saved run."""
    section = record[section_name]
    n_boot = record["settings"]["bootstrap"]
    shown = [s.name for s in sampler_specs(section_name)]
    all_raw: dict[str, dict[str, dict[str, list[float]]]] = section["raw"]
    raw = {name: all_raw[name] for name in shown if name in all_raw}  # a run may have filtered the samplers
    labels = list(raw["Random"])
    n_random = len(raw["Random"][labels[0]]["regret"])
    n_reps = {name: len(per[labels[0]]["regret"]) for name, per in raw.items()}
    # Rows with fewer replicates than random search are paired with its first ones: show that baseline too.
    rows_order: list[tuple[str, str, int]] = [("Random", "Random", n_random)]
    for n in sorted({n for n in n_reps.values() if n < n_random}):
        rows_order.append((f"Random, first {n} replicates (the paired baseline of the rows below)", "Random", n))
    rows_order += [(name, name, n) for name, n in n_reps.items() if name != "Random"]

    command = f"{COMMAND} --section {section_name}"
    if n_random != 200:
        command += f" --replicates {n_random}"
    expensive = {n for name, n in n_reps.items() if name.startswith("GP")}
    if expensive and expensive != {15}:
        command += f" --expensive-replicates {'/'.join(map(str, sorted(expensive)))}"
    if record["settings"].get("datasets"):
        command += f" --datasets {record['settings']['datasets']}"
    if n_boot != 2000:
        command += f" --bootstrap {n_boot}"
    time_note = f"section run time {section['wall_s']:.0f} s wall, {section['cpu_s']:.0f} s CPU, one process"
    if len(set(n_reps.values())) == 1:
        rep_note = f"{n_random} per dataset and sampler"
    else:
        rep_note = (
            f"{'/'.join(map(str, sorted(expensive)))} per dataset for GPSampler, {n_random} for random search (its "
            "first ones are the GP rows' paired baseline)"
        )
    heading = (
        f"## 6. Samplers at {N_TRIALS} trials (HPOBench tables)"
        if section_name == "samplers"
        else f"## 6b. GPSampler at {N_TRIALS} trials"
    )
    lines = [
        heading,
        "",
        f"*Reproduce: `{command}` ({provenance(record)}). "
        f"Replicate studies: {rep_note}, on {len(labels)} HPOBench datasets; {time_note}. Raw regrets: "
        f"benchmarks/results/tabular_{section_name}.json.*",
        "",
        f"{N_TRIALS} trials per study; normalised regret of the best observed trial, per dataset: (best true score "
        "on the grid − true score of the pick) / (best − median true score); 0 = grid optimum, 1 = a median "
        "configuration; a trial observes one random seed of its configuration, its true score is the seed mean. "
        "Win vs random: share of paired replicates (same replicate seed for sampler and noise) with lower regret "
        "than random search, ties ½; Δ: mean regret minus random's on the same replicates. [95% percentile "
        f"bootstrap, {n_boot} resamples of replicates within each dataset, pooled over {len(labels)} datasets.] "
        "'Datasets better': datasets where its mean regret is below random's. Verdict: 'inside noise' when both "
        "intervals cover the null (Δ = 0, win = ½); 'mixed' when only one excludes it. Each row is its own 95% "
        "interval: about one row in 20 leaves the null by chance alone.",
    ]
    if expensive:
        lines[-1] += (
            " GPSampler costs seconds per suggestion on one core, hence few replicates; with so few per dataset the "
            "percentile bootstrap under-states their uncertainty."
        )
    lines += [
        "",
        "| sampler | replicates / dataset | mean of dataset means | pooled median | win vs random [95% CI] "
        "| Δ vs random [95% CI] | datasets better | verdict vs random |",
        "|---|---:|---:|---:|---|---|---:|---|",
    ]
    summary: dict[str, Any] = {}
    for row_name, name, n_rep in rows_order:
        regrets = [np.asarray(raw[name][label]["regret"])[:n_rep] for label in labels]
        row: dict[str, Any] = {
            "replicates": n_rep,
            "mean_of_means": float(np.mean([x.mean() for x in regrets])),
            "pooled_median": float(np.median(np.concatenate(regrets))),
            "per_dataset": {
                label: {"mean": float(x.mean()), "median": float(np.median(x))}
                for label, x in zip(labels, regrets, strict=True)
            },
        }
        if name == "Random":
            row["verdict"] = "—"
            cells = "| — | — | — | — |"
        else:
            vs = paired_rows(raw, labels, name, "Random", n_boot)
            row |= {
                "win_vs_random": vs["win"],
                "win_ci": vs["win_ci"],
                "diff_vs_random": vs["diff"],
                "diff_ci": vs["diff_ci"],
                "datasets_better": vs["datasets_better"],
                "verdict": verdict(vs["diff_ci"], vs["win_ci"], "better than random", "worse than random"),
            }
            cells = (
                f"| {fmt_ci(vs['win'], vs['win_ci'])} | {fmt_ci(vs['diff'], vs['diff_ci'], 3)} "
                f"| {vs['datasets_better']}/{len(labels)} | {row['verdict']} |"
            )
        summary[row_name] = row
        lines.append(f"| {row_name} | {n_rep} | {row['mean_of_means']:.3f} | {row['pooled_median']:.3f} {cells}")
    compared = [(n, r) for n, r in summary.items() if r["verdict"] != "—"]
    inside = [n for n, r in compared if r["verdict"] == "inside noise"]
    lines += [
        "",
        "Inside the noise against random search: "
        + ("; ".join(inside) or "none")
        + ". Outside it: "
        + ("; ".join(f"{n} ({r['verdict']})" for n, r in compared if r["verdict"] != "inside noise") or "none")
        + ".",
    ]
    if WORKFLOW_NAME in raw:
        lines += [
            "",
            "Paired against the workflow's TPE (start-up 4, multivariate) on the same replicates: win = share where "
            "the row's regret is lower, Δ = row − workflow.",
            "",
            "| sampler | win vs workflow TPE [95% CI] | Δ vs workflow TPE [95% CI] | verdict |",
            "|---|---|---|---|",
        ]
        inside_wf = []
        for name in raw:
            if name == WORKFLOW_NAME:
                continue
            vs = paired_rows(raw, labels, name, WORKFLOW_NAME, n_boot)
            v = verdict(vs["diff_ci"], vs["win_ci"], "better than workflow", "worse than workflow")
            summary[name]["vs_workflow"] = vs | {"verdict": v}
            inside_wf += [name] if v == "inside noise" else []
            lines.append(
                f"| {name} | {fmt_ci(vs['win'], vs['win_ci'])} | {fmt_ci(vs['diff'], vs['diff_ci'], 3)} | {v} |"
            )
        lines += ["", "Inside the noise against the workflow's TPE: " + ("; ".join(inside_wf) or "none") + "."]
    lines += [
        "",
        "Per dataset: mean / median normalised regret.",
        "",
        "| sampler | " + " | ".join(label.split("/", 1)[1] for label in labels) + " |",
        "|---|" + "---:|" * len(labels),
    ]
    for row_name, row in summary.items():
        cells = [
            f"{row['per_dataset'][label]['mean']:.3f} / {row['per_dataset'][label]['median']:.3f}" for label in labels
        ]
        lines.append(f"| {row_name} | " + " | ".join(cells) + " |")
    # Two settings are expected to coincide with another one; count identical picks rather than assume it.
    pairs = [
        ("TPE Optuna default (10 start-up = random here)", "Random"),
        ("TPE workflow + group=True", WORKFLOW_NAME),
    ]
    notes = []
    for name, other in pairs:
        if name in raw and other in raw:
            same = sum(
                int(np.sum(np.asarray(raw[name][label]["pick"]) == np.asarray(raw[other][label]["pick"])))
                for label in labels
            )
            total = sum(len(raw[name][label]["pick"]) for label in labels)
            notes.append(f"{name} picks the same configuration as {other} in {same}/{total} studies")
    if any("warm start" in name for name in raw):
        notes.insert(
            0,
            "Warm-start trial 0, the snapped sklearn MLPClassifier default (same grid on every dataset): "
            f"{section['warm_start_params'][labels[0]]}",
        )
    if any("consider_endpoints" in name or "prior_weight" in name for name in raw):
        notes.append("consider_endpoints and prior_weight are deprecated since Optuna 4.9 (removed in 6.0)")
    if notes:
        lines += ["", "".join(f"{note}. " for note in notes).rstrip()]
    return "\n".join(lines), summary
