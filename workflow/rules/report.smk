# The Phase 1 review: figures per study, LoRA vs full fine-tuning, and one table over every study.


rule plot_study:
    input:
        trials=rules.run_study.output.trials,
        # The history marks the trial the export names (the confirmation winner where one ran).
        optimal=rules.export_best_config.output.optimal,
    output:
        history=report(
            "results/figures/{task}_{method}/history.png",
            caption="../report/history.rst",
            category="Studies",
            subcategory="{task}_{method}",
        ),
        importances=report(
            "results/figures/{task}_{method}/importances.png",
            caption="../report/importances.rst",
            category="Studies",
            subcategory="{task}_{method}",
        ),
        slice=report(
            "results/figures/{task}_{method}/slice.png",
            caption="../report/slice.rst",
            category="Studies",
            subcategory="{task}_{method}",
        ),
    log:
        f"{LOGS}/plot_study/{{task}}_{{method}}.log",
    threads: 1
    params:
        # The study's storage, beside its declared trials table.
        study_dir=subpath(input.trials, parent=True),
    script:
        "../scripts/plot_study.py"


rule plot_confirmation:
    input:
        confirmation=rules.confirm_top_trials.output.confirmation,
    output:
        figure=report(
            "results/figures/{task}_{method}/confirmation_seeds.png",
            caption="../report/confirmation.rst",
            category="Studies",
            subcategory="{task}_{method}",
        ),
    log:
        f"{LOGS}/plot_confirmation/{{task}}_{{method}}.log",
    threads: 1
    script:
        "../scripts/plot_confirmation.py"


rule plot_lora_vs_full:
    input:
        unpack(get_review_inputs),
    output:
        figure=report(
            "results/figures/lora_vs_full.png",
            caption="../report/lora_vs_full.rst",
            category="Overview",
        ),
    log:
        f"{LOGS}/plot_lora_vs_full.log",
    threads: 1
    params:
        studies=get_reviewed_studies(),
    script:
        "../scripts/plot_lora_vs_full.py"


rule check_phase1:
    input:
        unpack(get_review_inputs),
    output:
        markdown="results/summary.md",
        # The terminal rendering, which `make demo` prints.
        text="results/summary.txt",
        csv=report(
            "results/summary.csv", caption="../report/summary.rst", category="Overview"
        ),
    log:
        f"{LOGS}/check_phase1.log",
    threads: 1
    params:
        studies=get_reviewed_studies(),
    script:
        "../scripts/check_phase1.py"
