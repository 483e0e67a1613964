"""Rule check_phase1: the review table over every planned study; fails when an export is missing or invalid."""

import logging
from pathlib import Path

from finetune_hpo.jobs import workflow_job
from finetune_hpo.review import check_phase1, study_files

smk = snakemake  # noqa: F821 - the object Snakemake injects into scripts
with workflow_job(smk.log[0]):
    logger = logging.getLogger("finetune_hpo")
    # Snakemake deletes a failed job's outputs: the table shown here, in this log, is what remains of a failed check.
    check_phase1(
        study_files(smk.config, smk.params.studies, smk.input.optimal, smk.input.trials, smk.input.summaries),
        Path(smk.output.markdown),
        Path(smk.output.csv),
        Path(smk.output.text),
        show=lambda table: logger.info("Phase 1 review (%s, log %s):\n%s", smk.output.markdown, smk.log[0], table),
    )
