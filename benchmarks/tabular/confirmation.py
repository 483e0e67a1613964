"""Section ``confirmation``: at an equal budget of 16 evaluations, 16 plain trials against 10 trials whose top 3
configurations are re-evaluated with 2 extra seeds each, under several noise models (benchmarks/README.md)."""

from __future__ import annotations

import argparse
import math
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from benchmarks.tabular.records import COMMAND, provenance
from benchmarks.tabular.simulate import (
    EARLIER_WORKFLOW_TPE,
    N_TRIALS,
    SamplerFactory,
    best_observed,
    noise_draws,
    random_sampler,
    run_study,
    selection_scorer,
)
from benchmarks.tabular.stats import fmt_ci, pooled_bootstrap, pooled_mean, verdict, win_scores
from benchmarks.tabular.tables import Table, family_of, load_tables, table_facts

N_CONFIRM_TOP = 3  # configurations re-evaluated by confirmation
N_CONFIRM_EXTRA = 2  # extra seeds per re-evaluated configuration
N_PLAIN = N_TRIALS + N_CONFIRM_TOP * N_CONFIRM_EXTRA  # plain trials at the same budget: 16
ACCURACY_METRICS = frozenset({"val_acc"})  # binomial sampling noise applies to these only
ROWS_LIKE = {(50, 227): "RTE-like", (50, 358): "MRPC-like", (300, 572): "SST-2-like"}
DEFAULT_VARIANTS = "none,50:227,50:358,300:572"


@dataclass(frozen=True)
class NoiseModel:
    """Binomial sampling noise of the finite evaluation sets, on top of seed noise; None: no sampling noise."""

    selection_rows: int | None = None
    confirmation_rows: int | None = None

    @classmethod
    def parse(cls, text: str) -> NoiseModel:
        """'none', or 'N:M' with N selection rows and M confirmation rows, either 'exact' (no sampling noise)."""
        text = text.strip()
        if text == "none":
            return cls()
        if ":" not in text:
            raise ValueError(f"noise model {text!r}: expected 'none' or 'N:M' (N or M may be 'exact')")

        def rows(part: str) -> int | None:
            if part in ("exact", "none"):
                return None
            if int(part) < 1:
                raise ValueError(f"noise model {text!r}: row counts must be positive")
            return int(part)

        selection, confirmation = text.split(":", 1)
        return cls(rows(selection), rows(confirmation))

    @property
    def sampling(self) -> bool:
        return self.selection_rows is not None or self.confirmation_rows is not None

    @property
    def key(self) -> str:
        if not self.sampling:
            return "none"
        return f"{self.selection_rows or 'exact'}:{self.confirmation_rows or 'exact'}"

    @property
    def label(self) -> str:
        if not self.sampling:
            return "seed noise only"
        parts = [
            f"{self.selection_rows}-row selection set" if self.selection_rows else "exact selection scores",
            f"{self.confirmation_rows}-row confirmation set" if self.confirmation_rows else "exact confirmation",
        ]
        like = ROWS_LIKE.get((self.selection_rows or 0, self.confirmation_rows or 0))
        return ", ".join(parts) + (f" ({like})" if like else "")

    def applies_to(self, family_metric: str) -> bool:
        return not self.sampling or family_metric in ACCURACY_METRICS


def confirm_pick(
    table: Table,
    configs: np.ndarray,
    observed: np.ndarray,
    draws: np.ndarray,
    rng: np.random.Generator,
    confirmation_rows: int | None = None,
    confirmation_rng: np.random.Generator | None = None,
) -> int:
    """Procedure B on the first N_TRIALS trials: top-3 distinct configurations, 2 extra seeds each.

    Without confirmation_rows a candidate's score is the mean of its 3 seeds' table values; with it, the mean of
    Binomial(confirmation_rows, accuracy of each seed) / confirmation_rows (the held-out confirmation set).
    """
    utility = observed if table.direction == "maximize" else -observed
    order = np.argsort(-utility, kind="stable")  # stable: an earlier trial wins a tie, as study.best_trial
    chosen: list[tuple[int, int]] = []  # (config, trial number)
    for t in order:
        if int(configs[t]) not in {c for c, _ in chosen}:
            chosen.append((int(configs[t]), int(t)))
        if len(chosen) == N_CONFIRM_TOP:
            break
    means = []
    for config, t in chosen:
        others = [s for s in range(table.n_seeds) if s != draws[t]]
        extra = rng.choice(others, size=N_CONFIRM_EXTRA, replace=False)
        seeds = [draws[t], *extra]
        if confirmation_rows is None:
            means.append(table.utility[config, seeds].mean())
        else:
            if table.metric not in ACCURACY_METRICS or confirmation_rng is None:
                raise ValueError(f"{table.label}: binomial confirmation scores need an accuracy and a stream")
            hits = confirmation_rng.binomial(confirmation_rows, table.raw[config, seeds])
            means.append(hits.mean() / confirmation_rows)
    return chosen[int(np.argmax(means))][0]  # a tie goes to the candidate ranked higher on observed scores


CONFIRMATION_SAMPLERS: dict[str, SamplerFactory] = {
    "TPE workflow (4 start-up, multivariate)": EARLIER_WORKFLOW_TPE,
    "Random": random_sampler,
}


def run_confirmation(
    tables: list[Table], replicates: int, n_prefix_check: int, noise: NoiseModel
) -> tuple[dict[str, dict[str, dict[str, list[float]]]], dict[str, str]]:
    raw: dict[str, dict[str, dict[str, list[float]]]] = {}
    prefix_report: dict[str, str] = {}
    for sampler_name, factory in CONFIRMATION_SAMPLERS.items():
        raw[sampler_name] = {}
        checked = mismatched = 0
        for table in tables:
            t0 = time.perf_counter()
            rows: dict[str, list[float]] = {k: [] for k in ("A", "B", "plain10", "pick_A", "pick_B")}
            for r in range(replicates):
                draws = noise_draws(table, r)[:N_PLAIN]
                score = selection_scorer(table, r, draws, noise.selection_rows)
                configs, observed = run_study(table, factory(r), N_PLAIN, score)
                if r < n_prefix_check:
                    # B must see exactly A's first 10 trials: a fresh 10-trial study with the same seeds has
                    # to propose the same configurations (TPE does not know the planned trial count) and observe
                    # the same scores.
                    short, short_observed = run_study(table, factory(r), N_TRIALS, score)
                    checked += 1
                    same = np.array_equal(short, configs[:N_TRIALS]) and np.array_equal(
                        short_observed, observed[:N_TRIALS]
                    )
                    mismatched += int(not same)
                pick_a = best_observed(table, configs, observed)
                pick_10 = best_observed(table, configs[:N_TRIALS], observed[:N_TRIALS])
                extra_rng = np.random.default_rng([r, table.uid, 1])
                confirmation_rng = np.random.default_rng([r, table.uid, 3])
                pick_b = confirm_pick(
                    table,
                    configs[:N_TRIALS],
                    observed[:N_TRIALS],
                    draws,
                    extra_rng,
                    noise.confirmation_rows,
                    confirmation_rng,
                )
                regrets = table.regret(np.array([pick_a, pick_b, pick_10]))
                rows["A"].append(float(regrets[0]))
                rows["B"].append(float(regrets[1]))
                rows["plain10"].append(float(regrets[2]))
                rows["pick_A"].append(pick_a)
                rows["pick_B"].append(pick_b)
            raw[sampler_name][table.label] = rows
            print(
                f"  confirmation [{noise.key}] {sampler_name} {table.label}: {time.perf_counter() - t0:.1f}s",
                file=sys.stderr,
            )
        prefix_report[sampler_name] = f"{checked - mismatched}/{checked} identical"
    return raw, prefix_report


def confirmation_section(args: argparse.Namespace, variants: Sequence[NoiseModel]) -> dict[str, Any]:
    """Run the section: per noise model, A's, B's and the first 10 trials' regrets per sampler and dataset."""
    t0, c0 = time.perf_counter(), time.process_time()
    tables = load_tables(("HPOBench", "HPOLib"), args.only)
    result: dict[str, Any] = {"tables": table_facts(tables), "variants": {}}
    for noise in variants:
        v0, vc0 = time.perf_counter(), time.process_time()
        used = [t for t in tables if noise.applies_to(t.metric)]
        if not used:
            print(f"  confirmation [{noise.key}]: no accuracy table selected, skipped", file=sys.stderr)
            continue
        raw, prefix = run_confirmation(used, args.replicates, args.prefix_check, noise)
        result["variants"][noise.key] = {
            "label": noise.label,
            "selection_rows": noise.selection_rows,
            "confirmation_rows": noise.confirmation_rows,
            "raw": raw,
            "prefix_check": prefix,
            "wall_s": time.perf_counter() - v0,
            "cpu_s": time.process_time() - vc0,
        }
    result["wall_s"], result["cpu_s"] = time.perf_counter() - t0, time.process_time() - c0
    return result


def confirmation_table(
    raw: dict[str, dict[str, dict[str, list[float]]]], n_boot: int
) -> tuple[list[str], dict[str, Any]]:
    """Per-dataset and per-family rows of one noise model, for every sampler."""
    lines = [
        "| sampler | dataset | n | A mean | A median | B mean | B median | 10 plain mean | win B>A [95% CI] "
        "| Δ B−A [95% CI] | verdict |",
        "|---|---|---:|---:|---:|---:|---:|---:|---|---|---|",
    ]
    summary: dict[str, Any] = {}
    for sampler_name, per_table in raw.items():
        summary[sampler_name] = {}
        labels = list(per_table)
        units: list[tuple[str, list[str]]] = [(label, [label]) for label in labels]
        for family in dict.fromkeys(map(family_of, labels)):
            units.append((f"**{family} (all)**", [label for label in labels if family_of(label) == family]))
        for unit, group in units:
            a = [np.asarray(per_table[label]["A"]) for label in group]
            b = [np.asarray(per_table[label]["B"]) for label in group]
            p10 = [np.asarray(per_table[label]["plain10"]) for label in group]
            wins = [win_scores(bi, ai) for ai, bi in zip(a, b, strict=True)]
            diffs = [bi - ai for ai, bi in zip(a, b, strict=True)]
            win, win_ci = pooled_mean(wins), pooled_bootstrap(wins, n_boot)
            diff, diff_ci = pooled_mean(diffs), pooled_bootstrap(diffs, n_boot)
            all_a, all_b = np.concatenate(a), np.concatenate(b)
            row = {
                "n": len(all_a),
                "A_mean": float(all_a.mean()),
                "A_median": float(np.median(all_a)),
                "B_mean": float(all_b.mean()),
                "B_median": float(np.median(all_b)),
                "plain10_mean": pooled_mean(p10),
                "win_B_over_A": win,
                "win_ci": win_ci,
                "diff_B_minus_A": diff,
                "diff_ci": diff_ci,
                "verdict": verdict(diff_ci, win_ci),
            }
            summary[sampler_name][unit.strip("*")] = row
            lines.append(
                f"| {sampler_name} | {unit} | {row['n']} | {row['A_mean']:.3f} | {row['A_median']:.3f} "
                f"| {row['B_mean']:.3f} | {row['B_median']:.3f} | {row['plain10_mean']:.3f} "
                f"| {fmt_ci(win, win_ci)} | {fmt_ci(diff, diff_ci, 3)} | {row['verdict']} |"
            )
    return lines, summary


def noise_scale_lines(facts: dict[str, Any], row_counts: Sequence[int]) -> list[str]:
    """Seed noise and binomial standard errors next to the spread of true accuracies, in accuracy points."""
    accuracy = {label: f for label, f in facts.items() if f["metric"] in ACCURACY_METRICS and "top1pct_true" in f}
    if not accuracy or not row_counts:
        return []
    lines = [
        "Scale of the noise (accuracy points; p = mean true accuracy of the top 1% of the grid, where the picks "
        "compete; binomial SE = 100·√(p(1−p)/rows)):",
        "",
        "| dataset | best true acc | best − median (the unit of regret) | seed SD, top 1% "
        + "".join(f"| SE {n} rows " for n in row_counts)
        + "|",
        "|---|---:|---:|---:|" + "---:|" * len(row_counts),
    ]
    for label, f in accuracy.items():
        p = f["top1pct_true"]
        ses = "".join(f"| {100 * math.sqrt(p * (1 - p) / n):.1f} " for n in row_counts)
        spread = 100 * (f["best_true"] - f["median_true"])
        lines.append(
            f"| {label.split('/', 1)[1]} | {100 * f['best_true']:.1f} | {spread:.1f} "
            f"| {100 * f['top1pct_seed_sd']:.1f} {ses}|"
        )
    return lines


def confirmation_markdown(record: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """The section's Markdown fragment and summary, from a saved run."""
    section = record["confirmation"]
    settings = record["settings"]
    n_boot = settings["bootstrap"]
    variants: dict[str, Any] = section["variants"]
    facts: dict[str, Any] = section["tables"]
    default = [NoiseModel.parse(v).key for v in DEFAULT_VARIANTS.split(",")]
    command = f"{COMMAND} --section confirmation"
    n_reps = sorted({len(rows["A"]) for v in variants.values() for per in v["raw"].values() for rows in per.values()})
    if n_reps != [200]:
        command += f" --replicates {'/'.join(map(str, n_reps))}"
    if list(variants) != default:
        command += f" --variants {','.join(variants)}"
    if settings.get("datasets"):
        command += f" --datasets {settings['datasets']}"
    if n_boot != 2000:
        command += f" --bootstrap {n_boot}"
    labels_by_variant = {key: list(next(iter(v["raw"].values()))) for key, v in variants.items()}
    n_datasets = {
        key: ", ".join(
            f"{sum(family_of(label) == fam for label in labels)} {fam}" for fam in dict.fromkeys(map(family_of, labels))
        )
        for key, labels in labels_by_variant.items()
    }
    times = "; ".join(f"{v['label']} {v['wall_s']:.0f} s" for v in variants.values())
    seeds = {family_of(label): f["n_seeds"] for label, f in facts.items()}
    lines = [
        "## 7. Confirmation stage vs plain trials at equal budget (tabular)",
        "",
        f"*Reproduce: `{command}` ({provenance(record)}). "
        f"{'/'.join(map(str, n_reps))} replicate studies per dataset, sampler and noise model; datasets: "
        + "; ".join(f"{variants[key]['label']}: {n}" for key, n in n_datasets.items())
        + f". Section run time {section['wall_s']:.0f} s wall, {section['cpu_s']:.0f} s CPU, one process "
        f"(per noise model: {times}). Raw regrets: benchmarks/results/tabular_confirmation.json.*",
        "",
        f"A: {N_PLAIN} plain trials, pick the best observed score. B: {N_TRIALS} trials (A's first {N_TRIALS}, "
        f"same scores), re-evaluate the top-{N_CONFIRM_TOP} distinct configurations with {N_CONFIRM_EXTRA} extra "
        f"seeds each, pick the best {N_CONFIRM_EXTRA + 1}-run mean: {N_PLAIN} evaluations each. '10 plain': A's "
        f"first {N_TRIALS} trials alone, for scale. Samplers: the workflow's TPESampler(n_startup_trials=4, "
        "multivariate=True) and RandomSampler. Normalisation, per dataset: regret = (best true score on the grid − "
        "true score of the pick) / (best − median true score); 0 = grid optimum, 1 = a median configuration; the "
        "true score is the seed mean of the table, without sampling noise, in every noise model. Win: share of "
        f"paired replicates where B's regret < A's (ties ½); Δ = mean regret B − A (negative: confirmation "
        f"helps). [95% percentile bootstrap, {n_boot} resamples of replicates, stratified by dataset for "
        "families.] Verdict: 'inside noise' when both intervals cover the null (Δ = 0, win = ½); 'B better' / "
        "'A better' when both exclude it on the same side; 'mixed' when only one does. Each row is its own 95% "
        "interval: about one row in 20 leaves the null by chance alone.",
        "",
        "Noise models. Seed noise only: a trial observes one random seed of its configuration ("
        + ", ".join(f"{n} stored seeds on {fam}" for fam, n in seeds.items())
        + "). N-row selection set: that seed's accuracy p is observed as Binomial(N, p)/N, as scoring each trial "
        "on the workflow's small selection set. M-row confirmation set: B ranks its 3 candidates by the mean of "
        "Binomial(M, p_seed)/M over their 3 runs (the trial's seed + 2 extra), drawn independently of the "
        "selection scores, as the workflow's disjoint held-out confirmation set (independent draws are a "
        "simplification: one fixed set of rows would correlate the errors of different runs). HPOLib's metric is "
        "a regression loss, to which binomial sampling noise does not apply: it appears with seed noise only.",
        "",
        "### Summary",
        "",
        "| noise model | sampler | family | n | A mean regret | B mean regret | win B>A [95% CI] | Δ B−A [95% CI] "
        "| verdict |",
        "|---|---|---|---:|---:|---:|---|---|---|",
    ]
    summary_rows: list[dict[str, Any]] = []
    bodies: list[str] = []
    summaries: dict[str, Any] = {}
    for i, (key, variant) in enumerate(variants.items(), 1):
        table_lines, summary = confirmation_table(variant["raw"], n_boot)
        summaries[key] = summary
        labels = labels_by_variant[key]
        for sampler_name, rows in summary.items():
            for family in dict.fromkeys(map(family_of, labels)):
                row = rows[f"{family} (all)"]
                summary_rows.append(
                    {"variant": key, "label": variant["label"], "sampler": sampler_name, "family": family} | row
                )
                lines.append(
                    f"| {variant['label']} | {sampler_name} | {family} | {row['n']} | {row['A_mean']:.3f} "
                    f"| {row['B_mean']:.3f} | {fmt_ci(row['win_B_over_A'], row['win_ci'])} "
                    f"| {fmt_ci(row['diff_B_minus_A'], row['diff_ci'], 3)} | {row['verdict']} |"
                )
        bodies += [
            "",
            f"### 7.{i} {variant['label'][0].upper()}{variant['label'][1:]}",
            "",
            f"{n_datasets[key]} datasets, {variant['wall_s']:.0f} s wall. B-prefix check (a fresh {N_TRIALS}-trial "
            "study with the same seeds and score draws vs A's first 10 trials, configurations and observed "
            "scores): " + "; ".join(f"{k}: {v}" for k, v in variant["prefix_check"].items()) + ".",
            "",
            *table_lines,
        ]
    inside = [r for r in summary_rows if r["verdict"] == "inside noise"]
    outside = [r for r in summary_rows if r["verdict"] != "inside noise"]

    lines += [
        "",
        "Inside the noise (family rows above): "
        + ("; ".join(f"{r['label']}, {r['sampler']}, {r['family']}" for r in inside) or "none")
        + ". Outside it: "
        + ("; ".join(f"{r['label']}, {r['sampler']}, {r['family']}: {r['verdict']}" for r in outside) or "none")
        + f". Per-dataset rows below rest on {'/'.join(map(str, n_reps))} replicates each and are noisier.",
    ]
    row_counts = sorted(
        {n for v in variants.values() for n in (v["selection_rows"], v["confirmation_rows"]) if n is not None}
    )
    scale = noise_scale_lines(facts, row_counts)
    if scale:
        lines += ["", *scale]
    lines += bodies
    return "\n".join(lines), {"by_variant": summaries, "rows": summary_rows}
