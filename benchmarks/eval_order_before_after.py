"""SQuAD v2 F1 of the demo's saved best models through the trial's Trainer evaluation, with the stock
length-grouped evaluation sampler (what the workflow did before evaluation was put in dataset order) and
in dataset order (now). Run after `make demo`, from the repository root:

    .venv/bin/python benchmarks/eval_order_before_after.py
"""

from __future__ import annotations

import os
from pathlib import Path

import yaml
from transformers import Trainer

from finetune_hpo import trainer as trainer_module
from finetune_hpo.evaluation import load_saved_model
from finetune_hpo.preprocess import load_tokenized
from finetune_hpo.tasks import TASKS
from finetune_hpo.training import TrainingSetup, evaluate_with_trainer


def main() -> None:
    os.chdir(Path(__file__).resolve().parents[1] / "demo")  # the demo's relative model paths
    config = yaml.safe_load(Path("config/config.yaml").read_text())
    qa = {key: config["model"]["qa"][key] for key in ("n_best", "max_answer_length", "null_score_threshold")}
    data = load_tokenized(Path("results/tokenized/squad_v2"))
    in_order = trainer_module.in_order_trainer_class
    for method in ("full_finetune", "lora"):
        model, tokenizer, info = load_saved_model(Path(f"results/studies/squad_v2_{method}/best_model"))
        setup = TrainingSetup(
            task=TASKS["squad_v2"],
            method=method,
            seed=config["seed"],
            eval_batch_size=config["training"]["eval_batch_size"],
            qa_postprocessing=qa,
        )
        fixed, _ = evaluate_with_trainer(setup, model, tokenizer, data)
        trainer_module.in_order_trainer_class = lambda base=None: base or Trainer  # the stock sampler
        try:
            before, _ = evaluate_with_trainer(setup, model, tokenizer, data)
        finally:
            trainer_module.in_order_trainer_class = in_order
        print(
            f"squad_v2_{method} (trial {info['trial']}, exported {info['value']:.2f}): "
            f"length-grouped evaluation F1 {before['f1']:.2f}, dataset order F1 {fixed['f1']:.2f}"
        )


if __name__ == "__main__":
    main()
