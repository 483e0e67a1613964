"""Rule write_demo_corpus: the sentences the demo's tiny model is pretrained on."""

from pathlib import Path

from finetune_hpo.demo_model import write_corpus
from finetune_hpo.jobs import workflow_job

smk = snakemake  # noqa: F821 - the object Snakemake injects into scripts
with workflow_job(smk.log[0]):
    write_corpus(Path(smk.output.corpus), n_sentences=smk.params.n_sentences, seed=smk.params.seed)
