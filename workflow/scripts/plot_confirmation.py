"""Rule plot_confirmation: the seed spread of a study's confirmed candidates on both sets."""

import json
from pathlib import Path

from finetune_hpo.jobs import workflow_job
from finetune_hpo.plots import plot_confirmation

smk = snakemake  # noqa: F821 - the object Snakemake injects into scripts
with workflow_job(smk.log[0]):
    plot_confirmation(json.loads(Path(smk.input.confirmation).read_text()), Path(smk.output.figure))
