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
    threads: 1
    params:
        train_size=get_train_size,
        validation_fraction=get_validation_fraction,
        seed=config["seed"],
        confirmation_max_rows=get_confirmation_max_rows,
        group_column=get_group_column,
    script:
        "../scripts/subsample_dataset.py"


rule tokenize_dataset:
    input:
        train=rules.subsample_dataset.output.train,
        validation=rules.subsample_dataset.output.validation,
        confirmation=rules.subsample_dataset.output.confirmation,
        model=get_model_input,
    output:
        tokenized=directory("results/tokenized/{task}"),
    log:
        f"{LOGS}/tokenize_dataset/{{task}}.log",
    benchmark:
        "results/benchmarks/tokenize_dataset/{task}.tsv"
    priority: get_study_priority
    threads: 1
    params:
        model_name_or_path=config["model"]["name_or_path"],
        max_seq_length=config["model"]["max_seq_length"],
        qa=config["model"]["qa"],
    script:
        "../scripts/tokenize_dataset.py"
