# Config validation, wildcard constraints and the input/param functions of every rule.

from snakemake.exceptions import WorkflowError
from snakemake.utils import validate

from pathlib import Path

from finetune_hpo.best_model import BEST_MODEL_DIR
from finetune_hpo.config import ConfigError, check_config, planned_tasks, study_settings
from finetune_hpo.config_paths import DEMO_DATA_FILE
from finetune_hpo.config_schema import describe_invalid_config

# Every problem is one line, `Invalid configuration: <key>: <problem>`, as `finetune-hpo validate` prints
# it: Snakemake's own message names the first problem only, above a dump of the schema.
try:
    validate(config, "../schemas/config.schema.yaml")
except WorkflowError as err:
    raise WorkflowError(describe_invalid_config(config, err)) from None
try:
    # The checks a schema cannot express (ranges, names, data files and their rows), before any job starts.
    check_config(config, schema_validated=True)
except ConfigError as err:
    raise WorkflowError(str(err)) from None

PLANNED_TASKS = planned_tasks(config)
METHODS = config["methods"]
# Logs are grouped per VM, as the protocol keeps them (logs/phase1_optuna/<vm>/).
LOGS = f"logs/phase1_optuna/{config['vm'] or 'all'}"
# Offline W&B runs of every study, uploaded later with `wandb sync`.
WANDB_DIR = "results/wandb"
# No `conda:` directive anywhere: every job runs in the environment Snakemake runs in (`make env`, or the
# conda environment of environment.yml; README, "conda"). Snakemake records a rule's conda environment for its
# rerun triggers on every run, with or without `--sdm conda`: a named environment makes each run call
# `conda env export` (no conda, no run), and an environment file it builds is a copy under .snakemake/conda/,
# where the file's `-e .` no longer finds this checkout.


# On a cluster these run on the submitting node: they are cheap, and subsampling may need the hub,
# which compute nodes often cannot reach.
localrules:
    all,
    subsample_dataset,
    export_best_config,
    check_phase1,
    plot_study,
    plot_confirmation,
    plot_lora_vs_full,


wildcard_constraints:
    task="|".join(config["tasks"]),
    method="|".join(METHODS),
    worker=r"\d+",


def get_optimal_configs():
    """Every analysis/<task>_<method>_optimal.yaml this machine (vm) is responsible for."""
    return expand(
        "analysis/{task}_{method}_optimal.yaml", task=PLANNED_TASKS, method=METHODS
    )


def get_study_figures():
    """The figures of every planned study (history, importances, slice)."""
    return expand(
        "results/figures/{task}_{method}/{figure}.png",
        task=PLANNED_TASKS,
        method=METHODS,
        figure=("history", "importances", "slice"),
    )


def get_confirmation_figures():
    """The seed-spread figure of every planned study that has a confirmation stage."""
    return [
        f"results/figures/{task}_{method}/confirmation_seeds.png"
        for task in PLANNED_TASKS
        for method in METHODS
        if confirmation_settings(task)["confirm_top_k"] > 0
    ]


def confirmation_settings(task):
    """The task's selection.confirm_top_k / confirm_seeds, as the typed settings resolve them (the task's
    override, else the global setting); the same for every method of the task."""
    selection = study_settings(config, task, METHODS[0]).selection
    return {
        "confirm_top_k": selection.confirm_top_k,
        "confirm_seeds": selection.confirm_seeds,
    }


def get_study_workers(wildcards):
    """With optuna.workers_per_study: N > 1, the study's N worker jobs (run_study then only writes the
    trials table); with 1, none: run_study runs the trials itself."""
    workers = config["optuna"]["workers_per_study"]
    return expand(
        "results/studies/{task}_{method}/workers/{worker}.done",
        task=wildcards.task,
        method=wildcards.method,
        worker=range(workers) if workers > 1 else [],
    )


def get_transfer_sources(wildcards):
    """The trials tables of the studies a study starts from (transfer.sources: the same method on other
    tasks), so they finish first; the order is the config's, which the portfolio interleaves in.
    """
    settings = study_settings(config, wildcards.task, wildcards.method)
    if not settings.transfer.on:
        return []
    return [
        f"results/studies/{source}_{wildcards.method}/trials.csv"
        for source in settings.transfer.sources
    ]


def get_data_files(wildcards):
    """Local data files of a task (None: the hub), so Snakemake tracks or builds them."""
    return config["tasks"][wildcards.task].get("data_files") or {}


def get_model_input(wildcards):
    """The demo's tiny model when the workflow builds it; a hub model is no file input."""
    if is_demo_model():
        return config["model"]["name_or_path"]
    return []


def get_best_model_dir(wildcards):
    """The study's saved best model beside its trials table (a link run_study swaps when a trial beats it)."""
    trials = rules.run_study.output.trials.format(
        task=wildcards.task, method=wildcards.method
    )
    return str(Path(trials).parent / BEST_MODEL_DIR)


def get_best_model_scores(wildcards):
    """The independent scores of the saved best model, when the workflow keeps one."""
    if not config["selection"]["save_best_model"]:
        return []
    return f"results/studies/{wildcards.task}_{wildcards.method}/best_model_scores.json"


def get_train_size(wildcards):
    """The task's training tier (examples)."""
    return config["tasks"][wildcards.task]["train_size"]


def get_group_column(wildcards):
    """The column whose groups the task's held-out rows are drawn by (None: the task's own)."""
    return config["tasks"][wildcards.task].get("group_column")


def get_validation_fraction(wildcards):
    """The selection set's size as a share of the tier."""
    return config["tasks"][wildcards.task]["validation_fraction"]


def get_reviewed_studies():
    """Every planned (task, method), in the order of get_review_inputs' lists."""
    return [[task, method] for task in PLANNED_TASKS for method in METHODS]


def get_review_inputs(wildcards):
    """What the review and the LoRA-vs-full figure read, per planned study: its export, its trials table
    (the study's storage is beside it) and its data summary, as lists aligned with get_reviewed_studies.
    """
    studies = get_reviewed_studies()
    tasks = [task for task, _ in studies]
    methods = [method for _, method in studies]
    return {
        "optimal": expand(
            rules.export_best_config.output.optimal, zip, task=tasks, method=methods
        ),
        "trials": expand(
            rules.run_study.output.trials, zip, task=tasks, method=methods
        ),
        "summaries": expand(rules.subsample_dataset.output.summary, zip, task=tasks),
    }


def get_study_definition(wildcards):
    """Params that define a study: changing one reruns run_study (which then refuses mixed trials)."""
    return {
        "search_spaces": config["search_spaces"],
        "overrides": config["tasks"][wildcards.task].get("search_space_overrides", {}),
        "optuna": config["optuna"],
        "training": config["training"],
        "model": config["model"],
        "seed": config["seed"],
    }


def get_confirmation_settings(wildcards):
    """The study's confirmation settings (a param of confirm_top_trials: changing one reruns it)."""
    return confirmation_settings(wildcards.task)


def get_confirmation_output(wildcards):
    """The confirmation stage's summary, for studies that have one (confirm_top_k > 0)."""
    if get_confirmation_settings(wildcards)["confirm_top_k"] == 0:
        return []
    return rules.confirm_top_trials.output.confirmation.format(
        task=wildcards.task, method=wildcards.method
    )


def get_study_priority(wildcards):
    """Longest first: the trainings a task's study and confirmation stage will run (n_trials, plus
    confirm_top_k x (confirm_seeds - 1)) times its training tier, as the priority of every job on the way
    from the task's tokenization to a study's export. Snakemake starts ready jobs in priority order, so the
    costliest chains start first, each chain's scoring and export follow its study (on a one-GPU VM they do
    not wait behind every other study), and the jobs left at the end are short ones (measured on the demo:
    without it, the two confirmation jobs ran alone for the last 21 s). With SLURM, the cluster's queue
    decides the order instead.
    """
    confirmation = confirmation_settings(wildcards.task)
    trainings = config["optuna"]["n_trials"] + confirmation["confirm_top_k"] * (
        confirmation["confirm_seeds"] - 1
    )
    return trainings * get_train_size(wildcards)


def get_confirmation_max_rows(wildcards):
    """Held-out validation rows: they score the saved best model and rank confirmed candidates (0 when
    neither is on)."""
    selection = config["selection"]
    needed = (
        selection["save_best_model"]
        or get_confirmation_settings(wildcards)["confirm_top_k"] > 0
    )
    return selection["confirmation_max_rows"] if needed else 0


def get_host_gpus(wildcards):
    """The GPU jobs the profile runs at once on this host (resources: gpu=N), 0 when it sets no limit (a
    cluster scheduler assigns each job its devices, or the demo runs on CPU)."""
    limit = workflow.global_resources.get("gpu")
    value = getattr(limit, "value", limit)
    return int(value) if value is not None else 0


def is_demo_model():
    return bool(config["demo"]["build_model"])


def is_demo_data():
    return bool(config["demo"]["synthetic_data"])
