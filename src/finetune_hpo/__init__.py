"""finetune-hpo: Phase 1 hyperparameter optimization (Optuna) of full fine-tuning and LoRA, run by Snakemake."""

__version__ = "0.1.0"
