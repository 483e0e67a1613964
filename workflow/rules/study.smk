# Studies: one Optuna study per task x method, then its best configuration for Phase 2.


rule run_study_worker:
    # Only with optuna.workers_per_study > 1: extra workers on the same (PostgreSQL) study, each its own job.
    input:
        tokenized=rules.tokenize_dataset.output.tokenized,
        summary=rules.subsample_dataset.output.summary,
        model=get_model_input,
        sources=get_transfer_sources,
    output:
        done=touch("results/studies/{task}_{method}/workers/{worker}.done"),
    log:
        f"{LOGS}/run_study/{{task}}_{{method}}.worker{{worker}}.log",
    benchmark:
        "results/benchmarks/run_study/{task}_{method}.worker{worker}.tsv"
    priority: get_study_priority
    threads: 1
    resources:
        # One GPU per study job (a profile may override): the job claims a free one (finetune_hpo.gpus), and
        # the profile's global gpu=N lets Snakemake run N studies at once on an N-GPU machine.
        gpu=1,
        # That N, so a job refuses to start when fewer GPUs are visible (jobs would share one). A resource,
        # not a param: changing the VM's GPU count must not rerun finished studies.
        host_gpus=get_host_gpus,
    params:
        definition=get_study_definition,
        study_dir=subpath(output.done, ancestor=2),
        wandb_dir=WANDB_DIR,
    script:
        "../scripts/run_study_worker.py"


rule run_study:
    input:
        tokenized=rules.tokenize_dataset.output.tokenized,
        summary=rules.subsample_dataset.output.summary,
        model=get_model_input,
        workers=get_study_workers,
        # transfer: the finished studies of other tasks (same method) this one starts from.
        sources=get_transfer_sources,
    output:
        # The Optuna journal beside this table is deliberately not an output: Snakemake deletes the
        # outputs of a failed job, and the journal holds every finished trial.
        trials="results/studies/{task}_{method}/trials.csv",
    log:
        f"{LOGS}/run_study/{{task}}_{{method}}.log",
    benchmark:
        "results/benchmarks/run_study/{task}_{method}.tsv"
    priority: get_study_priority
    threads: 1
    resources:
        # As in run_study_worker: one GPU per study job, and the profile's GPU count.
        gpu=1,
        host_gpus=get_host_gpus,
    params:
        definition=get_study_definition,
        study_dir=subpath(output.trials, parent=True),
        wandb_dir=WANDB_DIR,
    script:
        "../scripts/run_study.py"


rule confirm_top_trials:
    # Only for studies with selection.confirm_top_k > 0: the top configurations retrained with more seeds,
    # each run a trial of <study>/confirmation in the study's storage (a kill resumes, nothing is redone).
    input:
        trials=rules.run_study.output.trials,
        tokenized=rules.tokenize_dataset.output.tokenized,
        summary=rules.subsample_dataset.output.summary,
        model=get_model_input,
    output:
        confirmation="results/studies/{task}_{method}/confirmation.json",
    log:
        f"{LOGS}/confirm_top_trials/{{task}}_{{method}}.log",
    benchmark:
        "results/benchmarks/confirm_top_trials/{task}_{method}.tsv"
    priority: get_study_priority
    threads: 1
    resources:
        gpu=1,
        host_gpus=get_host_gpus,
    params:
        study_dir=subpath(input.trials, parent=True),
        wandb_dir=WANDB_DIR,
        selection=get_confirmation_settings,
    script:
        "../scripts/confirm_top_trials.py"


rule score_best_model:
    # The independent check of the exported score: the saved best model, reloaded with plain
    # transformers/peft code, on the selection set (must reproduce best_value) and the held-out rows.
    input:
        trials=rules.run_study.output.trials,
        selection=rules.subsample_dataset.output.validation,
        confirmation=rules.subsample_dataset.output.confirmation,
        # A LoRA adapter is loaded on its base model.
        model=get_model_input,
        # With confirmation on, best_model is the confirmed winner's model, saved by that stage.
        confirmed=get_confirmation_output,
    output:
        scores="results/studies/{task}_{method}/best_model_scores.json",
    log:
        f"{LOGS}/score_best_model/{{task}}_{{method}}.log",
    benchmark:
        "results/benchmarks/score_best_model/{task}_{method}.tsv"
    priority: get_study_priority
    threads: 1
    resources:
        gpu=1,
        host_gpus=get_host_gpus,
    params:
        # Written by run_study beside its journal (kept like it, so not an output).
        model=get_best_model_dir,
        batch_size=config["training"]["eval_batch_size"],
    script:
        "../scripts/score_best_model.py"


rule export_best_config:
    input:
        trials=rules.run_study.output.trials,
        summary=rules.subsample_dataset.output.summary,
        scores=get_best_model_scores,
        confirmation=get_confirmation_output,
    output:
        optimal="analysis/{task}_{method}_optimal.yaml",
    log:
        f"{LOGS}/export_best_config/{{task}}_{{method}}.log",
    priority: get_study_priority
    threads: 1
    params:
        study_dir=subpath(input.trials, parent=True),
    script:
        "../scripts/export_best_config.py"
