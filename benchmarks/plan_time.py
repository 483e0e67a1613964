"""How long a VM's plan takes with and without transfer edges: the study jobs of a config, scheduled as Snakemake
schedules them (ready jobs by priority, one study per GPU), in units of the plan's own work.

A study job's work is its trainings (``n_trials``, plus a confirmation stage's retrainings as a job of its own)
times its training tier: what the workflow's priorities count too (``workflow/rules/common.smk``,
``get_study_priority``). Transfer adds edges: a target study starts once its sources' studies have finished
(not their confirmation stages). Data preparation, scoring and exports take seconds and are left out.

    python benchmarks/plan_time.py --vm vm2 [--config config/config.yaml] [--gpus 1 2 3]
"""

from __future__ import annotations

import argparse
import heapq
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from finetune_hpo.config import check_config, planned_studies
from finetune_hpo.config_sources import load_config


@dataclass(frozen=True)
class Job:
    name: str
    work: float
    priority: float
    after: tuple[str, ...]


def plan_jobs(config: Mapping, sources: Mapping[str, Sequence[str]]) -> list[Job]:
    """The study and confirmation jobs of the planned studies, with ``sources`` as the transfer edges."""
    jobs = []
    for settings in planned_studies(config):
        tier = settings.data.train_size
        selection = settings.selection
        retrainings = selection.confirm_top_k * (selection.confirm_seeds - 1)
        priority = (settings.n_trials + retrainings) * tier
        after = tuple(f"{task}_{settings.method}" for task in sources.get(settings.task.name, []))
        jobs.append(Job(settings.study_name, settings.n_trials * tier, priority, after))
        if retrainings:
            jobs.append(
                Job(f"{settings.study_name}/confirmation", retrainings * tier, priority, (settings.study_name,))
            )
    return jobs


def makespan(jobs: Sequence[Job], gpus: int) -> float:
    """When the last job ends, starting ready jobs by priority (ties by name) on ``gpus`` GPUs."""
    done_at: dict[str, float] = {}
    pending = list(jobs)
    running: list[tuple[float, str]] = []
    now = 0.0
    while pending or running:
        ready = sorted(
            (job for job in pending if all(dep in done_at for dep in job.after)),
            key=lambda job: (-job.priority, job.name),
        )
        while ready and len(running) < gpus:
            job = ready.pop(0)
            pending.remove(job)
            heapq.heappush(running, (now + job.work, job.name))
        now, name = heapq.heappop(running)
        done_at[name] = now
    return now


def table(config: Mapping, vm: str, gpus: Sequence[int]) -> list[str]:
    """The plan's makespan for each edge set and GPU count, in trainings x examples and as a ratio to none."""
    edges = {
        "none": {},
        "sst2 -> mrpc, rte": {"mrpc": ["sst2"], "rte": ["sst2"]},
        "sst2 -> mrpc; sst2, mrpc -> rte": {"mrpc": ["sst2"], "rte": ["sst2", "mrpc"]},
        "mrpc, rte -> sst2 (the small tasks feed the large one)": {"sst2": ["mrpc", "rte"]},
    }
    configured = dict(config["transfer"]["sources"]) if config["transfer"]["portfolio_size"] else {}
    base = {count: makespan(plan_jobs(config, {}), count) for count in gpus}
    lines = [
        f"| transfer edges ({vm}) | " + " | ".join(f"{count} GPU{'s' * (count > 1)}" for count in gpus) + " |",
        "|---|" + "---|" * len(gpus),
    ]
    for label, sources in edges.items():
        spans = {count: makespan(plan_jobs(config, sources), count) for count in gpus}
        mark = " (the config's default)" if sources == configured else ""
        cells = " | ".join(f"{spans[count]:,.0f} ({spans[count] / base[count]:.2f}x)" for count in gpus)
        lines.append(f"| {label}{mark} | {cells} |")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="config/config.yaml")
    parser.add_argument("--vm", default="vm2")
    parser.add_argument("--gpus", type=int, nargs="+", default=[1, 2, 3, 4])
    parser.add_argument("--out", type=Path, help="also write the Markdown fragment BENCHMARKS.md renders")
    args = parser.parse_args()
    config = load_config(args.config, {"vm": args.vm})
    check_config(config, check_data_files=False)
    lines = [
        "### 8b. What transfer costs: the wall time of the vm2 plan",
        "",
        f"*Computed, not measured: `python benchmarks/plan_time.py --vm {args.vm} --out "
        "benchmarks/results/plan_time.md` from `config/config.yaml`.*",
        "",
        "Each study job's work is its trainings times its training tier (SST-2: 10 x 3,000; MRPC and RTE: 10 x "
        "500, plus a confirmation stage of 6 x 500 as a job of its own), scheduled as Snakemake schedules them: "
        "ready jobs by priority, one study per GPU. A target study starts once its sources' studies (not their "
        "confirmation stages) have finished. The unit is trainings x examples; the ratio is to the plan without "
        "transfer.",
        "",
        *table(config, args.vm, args.gpus),
        "",
        "With one GPU the studies run one after another whatever the edges, and with two the two methods' SST-2 "
        "studies run side by side while the small studies wait for them, as they would without transfer: no "
        "cost. From three GPUs on, the targets wait for sources they would have run beside.",
    ]
    print("\n".join(lines))
    if args.out:
        args.out.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
