"""Section ``transfer``: a target study started from the best trials of finished studies of other datasets
(leave one dataset out), with :mod:`finetune_hpo.transfer`, the code the workflow ships (benchmarks/README.md).
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import optuna
from optuna.trial import FrozenTrial

from benchmarks.tabular.records import COMMAND, provenance
from benchmarks.tabular.simulate import (
    N_TRIALS,
    WORKFLOW_TPE,
    Scorer,
    best_observed,
    new_study,
    noise_draws,
    random_sampler,
    run_trials,
    selection_scorer,
    tpe,
)
from benchmarks.tabular.stats import fmt_ci, ratio_bootstrap
from benchmarks.tabular.tables import Table, load_tables, table_facts
from finetune_hpo.transfer import build_portfolio
from finetune_hpo.transfer_sources import SourceTrial, rank_trials

PORTFOLIO_SIZES = (1, 2, 3, 4, 5)
N_STARTUP = 4  # the workflow's n_startup_trials (config/config.yaml)
# Source studies are replicates of the plain workflow TPE numbered from here: their sampler seeds and noise
# streams never meet a target's (replicates 0..N-1), whose first 4 random trials would otherwise be theirs.
SOURCE_REPLICATE_BASE = 1_000_000
SOURCE_STREAM = 8  # the numpy stream that draws each replicate's source studies and control configurations
# Source counts: one and two sibling studies (Phase 1's three GLUE studies of a method), and every other dataset.
SOURCE_COUNTS = (1, 2, 7)
TABLE_CHOSEN = "table"  # the ceiling: a portfolio chosen on the other datasets' full tables


@dataclass(frozen=True)
class SourceStudy:
    """A finished 10-trial study of the workflow's sampler on one dataset: its trials and their ranking."""

    label: str
    replicate: int
    trials: tuple[FrozenTrial, ...]
    ranked: tuple[SourceTrial, ...]


def source_pool(tables: Sequence[Table], size: int) -> dict[str, list[SourceStudy]]:
    """``size`` finished studies per dataset, run as the target studies are (workflow TPE, seed noise)."""
    pool: dict[str, list[SourceStudy]] = {}
    for table in tables:
        pool[table.label] = []
        for j in range(size):
            replicate = SOURCE_REPLICATE_BASE + j
            study = new_study(table, WORKFLOW_TPE(replicate))
            score = selection_scorer(table, replicate, noise_draws(table, replicate)[:N_TRIALS])
            run_trials(study, table, N_TRIALS, score)
            trials = tuple(study.get_trials())
            ranked = tuple(rank_trials(f"{table.name}#{j}", trials))
            pool[table.label].append(SourceStudy(table.label, replicate, trials, ranked))
    return pool


def table_chosen_portfolio(table: Table, others: Sequence[Table], size: int) -> list[SourceTrial]:
    """The ceiling: greedily, the grid configuration that most lowers the mean over ``others`` of the best
    normalised (true) regret in the portfolio so far; ``size`` of them, ranked in the order chosen."""
    regrets = np.stack([other.regret(np.arange(len(other.true))) for other in others])
    best_so_far = np.full(len(others), np.inf)
    chosen: list[SourceTrial] = []
    for rank in range(1, size + 1):
        mean_regret = np.minimum(best_so_far[:, None], regrets).mean(axis=0)
        config = int(np.argmin(mean_regret))
        best_so_far = np.minimum(best_so_far, regrets[:, config])
        chosen.append(
            SourceTrial(
                study=f"tables without {table.name}",
                number=config,
                value=-float(mean_regret[config]),
                params=table.config_params(config),
                rank=rank,
                ranked_by="minus mean normalised regret",
            )
        )
    return chosen


def control_sources(sources: Sequence[SourceStudy], rng: np.random.Generator) -> list[list[SourceTrial]]:
    """The control of a portfolio: the same source studies' COMPLETE trials in a random order, as one source
    (so build_portfolio takes them in that order and skips repeats, as for the portfolio)."""
    trials = [trial for source in sources for trial in source.ranked]
    order = rng.permutation(len(trials))
    shuffled = [trials[i] for i in order]
    return [[SourceTrial(t.study, t.number, t.value, t.params, rank) for rank, t in enumerate(shuffled, start=1)]]


def run_with_portfolio(
    table: Table,
    sampler: optuna.samplers.BaseSampler,
    score: Scorer,
    sources: Sequence[Sequence[SourceTrial]],
    size: int,
) -> tuple[np.ndarray, np.ndarray]:
    """A 10-trial target study whose first trials are the portfolio (enqueued; they count toward the 10)."""
    study = new_study(table, sampler)
    for entry in build_portfolio(sources, table.distributions, size):
        study.enqueue_trial(dict(entry.params))
    return run_trials(study, table, N_TRIALS, score)


def run_with_prior(
    table: Table, replicate: int, score: Scorer, sources: Sequence[SourceStudy]
) -> tuple[np.ndarray, np.ndarray]:
    """TPE with the source studies' trials as prior knowledge, their raw values as the sources observed them
    (``study.add_trials``): TPE models from the first target trial on (the sources fill its start-up)."""
    study = new_study(table, WORKFLOW_TPE(replicate))
    study.add_trials([trial for source in sources for trial in source.trials])
    return run_trials(study, table, N_TRIALS, score)


def _quantiles(values: Sequence[float]) -> list[float]:
    """Each value's rank within its study as a quantile: 1 for the best, 0 for the worst (ties share a rank)."""
    order = sorted(values, reverse=True)
    n = len(values)
    return [1.0 if n == 1 else 1.0 - order.index(v) / (n - 1) for v in values]


def run_with_ranked_prior(
    table: Table, replicate: int, score: Scorer, sources: Sequence[SourceStudy]
) -> tuple[np.ndarray, np.ndarray]:
    """TPE with the sources' trials as prior knowledge on a common scale: every study's values (the target's
    so far included) replaced by their quantile within that study, so a source of higher accuracy does not
    outrank the target. TPE uses only the order of the values; the study is rebuilt for each suggestion, with
    the sources' trials first (TPE weights the oldest trials less once there are more than 25)."""
    dists = table.distributions
    prior = [(trial, q) for source in sources for trial, q in _with_quantiles(source.trials)]
    seeds = np.random.SeedSequence([replicate, table.uid]).generate_state(N_TRIALS)
    configs = np.empty(N_TRIALS, dtype=np.int64)
    observed = np.empty(N_TRIALS, dtype=float)
    own: list[FrozenTrial] = []
    for t in range(N_TRIALS):
        view = optuna.create_study(
            direction="maximize",
            sampler=optuna.samplers.TPESampler(n_startup_trials=N_STARTUP, constant_liar=True, seed=int(seeds[t])),
        )
        oriented = observed[:t] if table.direction == "maximize" else -observed[:t]
        view.add_trials([_revalued(trial, q) for trial, q in prior])
        view.add_trials([_revalued(trial, q) for trial, q in zip(own, _quantiles(list(oriented)), strict=True)])
        trial = view.ask(dists)
        configs[t] = table.config_index(trial.params)
        observed[t] = score(t, int(configs[t]))
        own.append(optuna.trial.create_trial(params=trial.params, distributions=trial.distributions, value=observed[t]))
    return configs, observed


def _with_quantiles(trials: Sequence[FrozenTrial]) -> list[tuple[FrozenTrial, float]]:
    complete = [trial for trial in trials if trial.value is not None]
    return list(zip(complete, _quantiles([float(trial.value) for trial in complete]), strict=True))


def _revalued(trial: FrozenTrial, value: float) -> FrozenTrial:
    return optuna.trial.create_trial(params=trial.params, distributions=trial.distributions, value=value)


Procedure = Callable[[], tuple[np.ndarray, np.ndarray]]

# The section runs in parts of 10-17 CPU minutes at 200 replicates, saved into one file; every part reruns the
# two baselines (random search, plain TPE) and joins a saved run only when they come out identical.
PARTS = ("sources", "control", "many", "prior")


def replicate_procedures(
    part: str,
    table: Table,
    replicate: int,
    score: Scorer,
    drawn: Sequence[SourceStudy],
    ceiling: Sequence[SourceTrial],
) -> dict[str, Procedure]:
    """The procedures of ``part`` compared on one replicate (same sampler seed and noise stream), by name.

    ``sources``: portfolios from 1 and 2 sibling studies, then TPE (start-up 4, or 4 random trials after the
    portfolio) or random search. ``control``: as many configurations drawn at random from the same 1, 2 or 7
    source studies, then TPE. ``many``: portfolios from a study of each of the 7 other datasets and from the
    other datasets' full tables (the ceiling). ``prior``: TPE with the sources' trials as prior knowledge
    instead of a portfolio.
    """
    procedures: dict[str, Procedure] = {
        "random": lambda: run_trials(new_study(table, random_sampler(replicate)), table, N_TRIALS, score),
        "tpe": lambda: run_trials(new_study(table, WORKFLOW_TPE(replicate)), table, N_TRIALS, score),
    }

    def portfolio(sampler: Callable[[int], optuna.samplers.BaseSampler], sources: list, m: int) -> Procedure:
        return lambda: run_with_portfolio(table, sampler(replicate), score, sources, m)

    for k in SOURCE_COUNTS:
        sources = drawn[:k]
        ranked = [list(source.ranked) for source in sources]
        if part == "sources" and k < 7:
            for m in PORTFOLIO_SIZES:
                procedures[f"portfolio/{k}/{m}/tpe"] = portfolio(WORKFLOW_TPE, ranked, m)
                procedures[f"portfolio/{k}/{m}/random"] = portfolio(random_sampler, ranked, m)
                # The trap: enqueued trials count toward n_startup_trials, so with start-up 4 a portfolio of m
                # leaves 4 - m random trials. Here 4 random trials follow the portfolio before TPE models.
                procedures[f"portfolio/{k}/{m}/tpe-startup"] = portfolio(tpe(m + N_STARTUP, False), ranked, m)
        elif part == "control":
            # One stream per source count, so the controls do not depend on which counts run.
            control = control_sources(sources, np.random.default_rng([replicate, table.uid, SOURCE_STREAM, k]))
            for m in PORTFOLIO_SIZES:
                procedures[f"control/{k}/{m}/tpe"] = portfolio(WORKFLOW_TPE, control, m)
        elif part == "many" and k == 7:
            for m in PORTFOLIO_SIZES:
                procedures[f"portfolio/{k}/{m}/tpe"] = portfolio(WORKFLOW_TPE, ranked, m)
                procedures[f"portfolio/{k}/{m}/random"] = portfolio(random_sampler, ranked, m)
        elif part == "prior":
            procedures[f"prior/{k}/raw"] = lambda s=sources: run_with_prior(table, replicate, score, s)
            procedures[f"prior/{k}/ranks"] = lambda s=sources: run_with_ranked_prior(table, replicate, score, s)
    if part == "many":
        for m in PORTFOLIO_SIZES:
            procedures[f"portfolio/{TABLE_CHOSEN}/{m}/tpe"] = portfolio(WORKFLOW_TPE, [list(ceiling)], m)
            procedures[f"portfolio/{TABLE_CHOSEN}/{m}/random"] = portfolio(random_sampler, [list(ceiling)], m)
    return procedures


def draw_sources(
    table: Table, replicate: int, others: Sequence[Table], pool: dict[str, list[SourceStudy]]
) -> list[SourceStudy]:
    """The replicate's source studies: the other datasets in a random order, a random pool study of each; the
    first k serve as its k sources, so every procedure of the replicate uses the same ones."""
    rng = np.random.default_rng([replicate, table.uid, SOURCE_STREAM])
    order = rng.permutation(len(others))
    picks = rng.integers(len(pool[others[0].label]), size=len(others))
    return [pool[others[i].label][int(j)] for i, j in zip(order, picks, strict=True)]


def transfer_section(args: argparse.Namespace, saved: dict[str, Any] | None) -> dict[str, Any]:
    """Run ``args.part`` (or every part): each procedure's regret per dataset and replicate, the sources each
    replicate drew, and the ceiling's portfolios; joined to ``saved`` (the section's last saved run) when the
    baselines agree."""
    t0 = time.perf_counter()
    tables = load_tables(("HPOBench",), None)
    pool = source_pool(tables, args.replicates)
    pool_s = time.perf_counter() - t0
    print(f"  transfer: source pool, {args.replicates} studies per dataset, {pool_s:.0f}s", file=sys.stderr)
    parts = PARTS if args.part == "all" else (args.part,)
    raw: dict[str, dict[str, list[float]]] = {}
    drawn_sources: dict[str, list[list[str]]] = {}
    ceilings: dict[str, list[dict[str, Any]]] = {}
    timings: dict[str, dict[str, Any]] = {}
    for part in parts:
        p0, pc0 = time.perf_counter(), time.process_time()
        seconds: dict[str, float] = {}
        for table in tables:
            others = [other for other in tables if other.label != table.label]
            ceiling = table_chosen_portfolio(table, others, max(PORTFOLIO_SIZES))
            ceilings[table.label] = [{"params": t.params, "mean_regret_on_others": -t.value} for t in ceiling]
            drawn_sources[table.label] = []
            for r in range(args.replicates):
                drawn = draw_sources(table, r, others, pool)
                drawn_sources[table.label].append([f"{s.label}#{s.replicate - SOURCE_REPLICATE_BASE}" for s in drawn])
                score = selection_scorer(table, r, noise_draws(table, r)[:N_TRIALS])
                for name, procedure in replicate_procedures(part, table, r, score, drawn, ceiling).items():
                    started = time.perf_counter()
                    configs, observed = procedure()
                    regret = float(table.regret(np.array([best_observed(table, configs, observed)]))[0])
                    seconds[name] = seconds.get(name, 0.0) + time.perf_counter() - started
                    per_table = raw.setdefault(name, {}).setdefault(table.label, [])
                    if name in ("random", "tpe") and len(per_table) > r:
                        if per_table[r] != regret:
                            raise AssertionError(f"{name} differs between parts on {table.label}, replicate {r}")
                        continue
                    per_table.append(regret)
            print(f"  transfer [{part}] {table.label}: {time.perf_counter() - p0:.0f}s", file=sys.stderr)
        timings[part] = {
            "date": time.strftime("%Y-%m-%d"),
            "wall_s": time.perf_counter() - p0,
            "cpu_s": time.process_time() - pc0,
            "seconds": seconds,
        }
    section = {
        "tables": table_facts(tables),
        "source_pool_size": args.replicates,
        "sources": drawn_sources,
        "table_chosen": ceilings,
        "source_pool_s": pool_s,
        "raw": raw,
        "parts": timings,
    }
    return join_saved(section, saved)


def join_saved(section: dict[str, Any], saved: dict[str, Any] | None) -> dict[str, Any]:
    """The section with the parts of ``saved`` it did not rerun; both must come from the same setting (same
    replicates and sources, identical baselines), or the parts would not be paired."""
    if saved is None:
        return section
    same = (
        saved["source_pool_size"] == section["source_pool_size"]
        and saved["sources"] == section["sources"]
        and all(saved["raw"][name] == section["raw"][name] for name in ("random", "tpe"))
    )
    if not same:
        raise SystemExit(
            "the saved transfer run has other replicates, sources or baselines than this part: its parts would not "
            "be paired with this one; rerun every part (--part all), or move the saved JSON away first"
        )
    kept = {part: timing for part, timing in saved["parts"].items() if part not in section["parts"]}
    raw = {name: rows for name, rows in saved["raw"].items() if name not in section["raw"]} | section["raw"]
    parts = {
        part: kept.get(part) or section["parts"][part] for part in PARTS if part in kept or part in section["parts"]
    }
    return section | {"raw": raw, "parts": parts}


# ------------------------------------------------------------------------------------------------ Markdown

SOURCE_WORDS = {
    "1": "1 study",
    "2": "2 studies",
    "7": "7 studies, one per other dataset",
    TABLE_CHOSEN: "the 7 other datasets' full tables (ceiling)",
}
# Rows of the pooled tables, by portfolio size: (label, name pattern with {k} and {m}, source counts).
SIZED_ROWS = (
    ("portfolio, then TPE", "portfolio/{k}/{m}/tpe", ("1", "2", "7", TABLE_CHOSEN)),
    ("portfolio, then 4 random trials, then TPE (start-up m+4)", "portfolio/{k}/{m}/tpe-startup", ("1", "2")),
    ("portfolio, then random search", "portfolio/{k}/{m}/random", ("1", "2", "7", TABLE_CHOSEN)),
    ("control: m random trials of the sources, then TPE", "control/{k}/{m}/tpe", ("1", "2", "7")),
)
PRIOR_ROWS = (
    ("TPE, sources' trials as prior knowledge, raw values", "prior/{k}/raw"),
    ("TPE, sources' trials as prior knowledge, values as within-study quantiles", "prior/{k}/ranks"),
)


def _ratios(raw: dict[str, dict[str, list[float]]], labels: list[str], n_boot: int) -> dict[str, Any]:
    """Per procedure: pooled and per-dataset mean regret, and its ratio to random search's and to plain TPE's."""
    summary: dict[str, Any] = {}
    for name, per_table in raw.items():
        regrets = [np.asarray(per_table[label]) for label in labels]
        row: dict[str, Any] = {"mean": float(np.concatenate(regrets).mean()), "per_dataset": {}}
        for baseline in ("random", "tpe"):
            base = [np.asarray(raw[baseline][label]) for label in labels]
            ratio, ci = ratio_bootstrap(regrets, base, n_boot)
            row[f"vs_{baseline}"] = {"ratio": ratio, "ci": ci}
            for label, x, b in zip(labels, regrets, base, strict=True):
                one, one_ci = ratio_bootstrap([x], [b], n_boot)
                row["per_dataset"].setdefault(label, {"mean": float(x.mean())})[f"vs_{baseline}"] = {
                    "ratio": one,
                    "ci": one_ci,
                }
        summary[name] = row
    return summary


def _hurt(row: dict[str, Any], labels: list[str]) -> list[str]:
    """Datasets where the procedure's regret is above plain TPE's with the interval above 1."""
    return [label.split("/", 1)[1] for label in labels if row["per_dataset"][label]["vs_tpe"]["ci"][0] > 1]


def _cell(row: dict[str, Any] | None, baseline: str) -> str:
    if row is None:
        return "—"
    vs = row[f"vs_{baseline}"]
    return fmt_ci(vs["ratio"], vs["ci"])


def transfer_markdown(record: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """The section's Markdown fragment and summary, from a saved run."""
    section = record["transfer"]
    n_boot = record["settings"]["bootstrap"]
    raw: dict[str, dict[str, list[float]]] = section["raw"]
    labels = list(raw["tpe"])
    n_rep = len(raw["tpe"][labels[0]])
    summary = _ratios(raw, labels, n_boot)
    parts = section["parts"]
    commands = " and ".join(f"`{COMMAND} --section transfer --part {part}`" for part in parts)
    if n_rep != 200:
        commands += f" (each with `--replicates {n_rep}`)"
    times = "; ".join(
        f"{part}: {timing['wall_s'] / 60:.0f} min wall, {timing['cpu_s'] / 60:.0f} min CPU ({timing['date']})"
        for part, timing in parts.items()
    )
    random_mean, tpe_mean = summary["random"]["mean"], summary["tpe"]["mean"]
    lines = [
        "## 8. Transfer: a study started from the best trials of other datasets' studies (HPOBench tables)",
        "",
        f"*Reproduce: {commands} ({provenance(record)}); one process each, run times {times}, each including the "
        f"source pool ({section['source_pool_s']:.0f} s in the last part run). {n_rep} replicate target studies per "
        f"dataset and procedure on {len(labels)} HPOBench datasets, leave one dataset out. Raw regrets: "
        "benchmarks/results/tabular_transfer.json.*",
        "",
        f"Target study: {N_TRIALS} trials of the workflow's sampler (independent TPE, {N_STARTUP} start-up "
        "trials, seeded per replicate), seed noise as in section 6; its pick is the best observed of its 10 trials. "
        f"Source studies: a pool of {section['source_pool_size']} finished {N_TRIALS}-trial studies per dataset, "
        "run the same way with seeds and noise streams of their own. Each replicate draws the other 7 datasets in "
        "a random order and one pool study of each; its first k are its k sources, the same for every procedure "
        "(pairing). Portfolio: `finetune_hpo.transfer.build_portfolio` (each source's trials ranked by their "
        "observed value, interleaved by rank across sources, distinct), enqueued as the first m trials: they "
        f"count toward the {N_TRIALS} and toward `n_startup_trials`, so TPE models from trial max(m, "
        f"{N_STARTUP}) on. 'Start-up m+4': `n_startup_trials=m+4`, 4 random trials after the portfolio. Control: "
        "m configurations drawn at random from the same source studies' trials, enqueued the same way. Ceiling: "
        "a portfolio chosen greedily on the 7 other datasets' full tables (the configuration that most lowers the "
        "mean normalised true regret of the portfolio's best, then the next). Prior knowledge: instead of a "
        "portfolio, the sources' trials are in the target study before its first trial, with their raw values "
        "(`study.add_trials`), or with every study's values (the target's so far included) replaced by their "
        "quantile within that study, the study rebuilt for each suggestion; TPE then models from the first trial. "
        "Ratio: mean regret of the procedure over mean regret of random search or of plain TPE on the same "
        f"replicates; [95% percentile bootstrap, {n_boot} resamples of replicates within each dataset, the same "
        "resamples for both means and every row]. Below 1: the procedure's regret is lower.",
        "",
        f"Baselines, mean normalised regret: random search {random_mean:.3f}, plain TPE {tpe_mean:.3f} (ratio "
        f"to random {_cell(summary['tpe'], 'random')}).",
        "",
    ]
    for baseline, words in (("tpe", "plain TPE's"), ("random", "random search's")):
        lines += [
            f"Ratio of mean regret to {words}, pooled over {len(labels)} datasets, by portfolio size m:",
            "",
            "| procedure | sources | " + " | ".join(f"m={m}" for m in PORTFOLIO_SIZES) + " |",
            "|---|---|" + "---|" * len(PORTFOLIO_SIZES),
        ]
        for label, pattern, counts in SIZED_ROWS:
            for k in counts:
                cells = [_cell(summary.get(pattern.format(k=k, m=m)), baseline) for m in PORTFOLIO_SIZES]
                if all(cell == "—" for cell in cells):
                    continue
                lines.append(f"| {label} | {SOURCE_WORDS[k]} | " + " | ".join(cells) + " |")
        lines.append("")
    lines += [
        "Prior knowledge instead of a portfolio (no trial enqueued):",
        "",
        "| procedure | sources | mean regret | ratio to plain TPE's | ratio to random search's |",
        "|---|---|---:|---|---|",
    ]
    for label, pattern in PRIOR_ROWS:
        for k in ("1", "2", "7"):
            row = summary.get(pattern.format(k=k))
            if row is not None:
                lines.append(
                    f"| {label} | {SOURCE_WORDS[k]} | {row['mean']:.3f} | {_cell(row, 'tpe')} | "
                    f"{_cell(row, 'random')} |"
                )
    lines += [
        "",
        "Per dataset: ratio of mean regret to plain TPE's (**bold**: the interval lies above 1, transfer hurts "
        "there; 'better on': datasets whose interval lies below 1; the intervals are in the JSON summary).",
        "",
        "| procedure | sources | m | "
        + " | ".join(label.split("/", 1)[1] for label in labels)
        + " | better on | hurts on |",
        "|---|---|---:|" + "---:|" * len(labels) + "---:|---|",
    ]
    per_dataset_rows = [
        (label, k, m, pattern.format(k=k, m=m))
        for label, pattern, counts in SIZED_ROWS[:1] + SIZED_ROWS[3:]
        for k in counts
        for m in PORTFOLIO_SIZES
    ] + [(label, k, "—", pattern.format(k=k)) for label, pattern in PRIOR_ROWS for k in ("1", "2", "7")]
    hurt_by_row: dict[str, list[str]] = {}
    for label, k, m, name in per_dataset_rows:
        row = summary.get(name)
        if row is None:
            continue
        cells = []
        for dataset in labels:
            vs = row["per_dataset"][dataset]["vs_tpe"]
            text = f"{vs['ratio']:.2f}"
            cells.append(f"**{text}**" if vs["ci"][0] > 1 else text)
        hurt_by_row[name] = _hurt(row, labels)
        better = sum(row["per_dataset"][dataset]["vs_tpe"]["ci"][1] < 1 for dataset in labels)
        hurts = ", ".join(hurt_by_row[name]) or "—"
        lines.append(
            f"| {label} | {SOURCE_WORDS[k]} | {m} | " + " | ".join(cells) + f" | {better}/{len(labels)} | {hurts} |"
        )
    lines += ["", *prior_against_portfolio(summary), "", *aims_lines(summary)]
    return "\n".join(lines), {"rows": summary, "hurts_on": hurt_by_row}


def prior_against_portfolio(summary: dict[str, Any]) -> list[str]:
    """Per source count, the better prior-knowledge row against the better portfolio-then-TPE row."""
    parts = []
    for k in ("1", "2", "7"):
        priors = [name for name in (f"prior/{k}/raw", f"prior/{k}/ranks") if name in summary]
        portfolios = [name for m in PORTFOLIO_SIZES if (name := f"portfolio/{k}/{m}/tpe") in summary]
        if not priors or not portfolios:
            continue
        prior = min(priors, key=lambda name: summary[name]["vs_tpe"]["ratio"])
        portfolio = min(portfolios, key=lambda name: summary[name]["vs_tpe"]["ratio"])
        parts.append(
            f"{SOURCE_WORDS[k]}: prior knowledge {_cell(summary[prior], 'tpe')} (`{prior}`), portfolio "
            f"{_cell(summary[portfolio], 'tpe')} (`{portfolio}`)"
        )
    if not parts:
        return []
    return [
        "Prior knowledge against a portfolio, the better row of each, ratio to plain TPE's: " + "; ".join(parts) + "."
    ]


def aims_lines(summary: dict[str, Any]) -> list[str]:
    """The issue's two aims, checked against the measured rows."""

    def best(names: list[str], baseline: str) -> tuple[str, dict[str, Any]] | None:
        present = [name for name in names if name in summary]
        if not present:
            return None
        name = min(present, key=lambda n: summary[n][f"vs_{baseline}"]["ratio"])
        return name, summary[name][f"vs_{baseline}"]

    lines = []
    siblings = [
        f"portfolio/{k}/{m}/{kind}" for k in ("1", "2") for m in PORTFOLIO_SIZES for kind in ("tpe", "tpe-startup")
    ]
    found = best(siblings, "tpe")
    if found:
        name, vs = found
        met = vs["ratio"] <= 0.85 and vs["ci"][1] < 1
        lines.append(
            f"Aim, one or two sibling studies: regret <= 0.85x plain TPE's with the interval below 1. Best of the "
            f"{len([n for n in siblings if n in summary])} portfolio rows from 1 or 2 studies (then TPE, either "
            f"start-up; picked after the fact, so optimistic): `{name}`, {fmt_ci(vs['ratio'], vs['ci'])}: "
            + ("met." if met else "not met.")
        )
    found = best([f"portfolio/7/{m}/{kind}" for m in PORTFOLIO_SIZES for kind in ("tpe", "random")], "random")
    if found:
        name, vs = found
        met = vs["ratio"] <= 0.6
        lines.append(
            f"Aim, a portfolio from many past studies: regret <= 0.6x random search's. Best of the portfolio rows "
            f"from 7 studies (then TPE or random search): `{name}`, {fmt_ci(vs['ratio'], vs['ci'])}: "
            + ("met." if met else "not met.")
        )
    ceiling = best(
        [f"portfolio/{TABLE_CHOSEN}/{m}/{kind}" for m in PORTFOLIO_SIZES for kind in ("tpe", "random")], "random"
    )
    if ceiling:
        name, vs = ceiling
        lines.append(
            f"The ceiling (chosen on full tables): `{name}`, {fmt_ci(vs['ratio'], vs['ci'])} of random search's."
        )
    return [" ".join(lines)] if lines else []
