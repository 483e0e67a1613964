"""Rule build_demo_model: a word-level WordPiece tokenizer and a tiny BERT, pretrained by masked-LM on the corpus."""

import logging
from pathlib import Path

from finetune_hpo.demo_model import build_tiny_model
from finetune_hpo.jobs import workflow_job

smk = snakemake  # noqa: F821 - the object Snakemake injects into scripts
with workflow_job(smk.log[0]):
    info = build_tiny_model(
        Path(smk.input.corpus),
        Path(smk.output.model),
        seed=smk.params.seed,
        pretrain_steps=smk.params.pretrain_steps,
        hidden_size=smk.params.hidden_size,
        threads=smk.threads,
    )
    logging.getLogger("finetune_hpo").info("tiny model: %s", info)
