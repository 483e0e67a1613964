# The embedded demo: synthetic data in each task's schema and a tiny BERT pretrained on it, offline.


if is_demo_data():

    rule generate_demo_data:
        output:
            # The paths check_config excuses from existing before the run.
            train=DEMO_DATA_FILE.format(task="{task}", split="train"),
            validation=DEMO_DATA_FILE.format(task="{task}", split="validation"),
        log:
            f"{LOGS}/generate_demo_data/{{task}}.log",
        threads: 1
        params:
            examples=config["demo"]["examples_per_split"],
            seed=config["seed"],
        script:
            "../scripts/generate_demo_data.py"


if is_demo_model():

    rule write_demo_corpus:
        output:
            corpus="resources/synthetic/corpus.txt",
        log:
            f"{LOGS}/write_demo_corpus.log",
        threads: 1
        params:
            seed=config["seed"],
            # Enough text for a WordPiece vocabulary and 600 masked-LM steps.
            n_sentences=20000,
        script:
            "../scripts/write_demo_corpus.py"

    rule build_demo_model:
        input:
            corpus=rules.write_demo_corpus.output.corpus,
        output:
            model=directory(config["model"]["name_or_path"]),
        log:
            f"{LOGS}/build_demo_model.log",
        benchmark:
            "results/benchmarks/build_demo_model.tsv"
        threads: 2
        params:
            seed=config["seed"],
            pretrain_steps=config["demo"]["pretrain_steps"],
            hidden_size=config["demo"]["hidden_size"],
        script:
            "../scripts/build_demo_model.py"
