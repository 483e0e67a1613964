# Data: the seeded, stratified tier of each task (shared by both methods), tokenized once per model.


rule subsample_dataset:
    input:
        unpack(get_data_files),
    output:
        train="results/data/{task}/train.jsonl",
        validation="results/data/{task}/validation.jsonl",
        confirmation="results/data/{task}/confirmation.jsonl",
        summary="results/data/{task}/summary.json",
    log:
        f"{LOGS}/subsample_dataset/{{task}}.log",
    benchmark:
        "results/benchmarks/subsample_dataset/{task}.tsv"
    conda:
        "../../environment.yml"
    params:
        task_config=get_task_config,
        seed=config["seed"],
        confirmation_max_rows=get_confirmation_max_rows(),
    script:
        "../scripts/subsample_dataset.py"


rule tokenize_dataset:
    input:
        train=rules.subsample_dataset.output.train,
        validation=rules.subsample_dataset.output.validation,
        model=get_model_input,
    output:
        tokenized=directory("results/tokenized/{task}"),
    log:
        f"{LOGS}/tokenize_dataset/{{task}}.log",
    benchmark:
        "results/benchmarks/tokenize_dataset/{task}.tsv"
    conda:
        "../../environment.yml"
    params:
        model=config["model"],
    script:
        "../scripts/tokenize_dataset.py"
