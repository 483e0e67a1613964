"""Rule check_phase1: the review table over every planned study; fails when an export is missing or invalid."""

import logging
import sys
from pathlib import Path

from finetune_hpo.jobs import workflow_job
from finetune_hpo.report import render_terminal, write_summary
from finetune_hpo.review import review_phase1, study_files

smk = snakemake  # noqa: F821 - the object Snakemake injects into scripts
with workflow_job(smk.log[0]):
    studies = study_files(smk.config, smk.params.studies, smk.input.optimal, smk.input.trials, smk.input.summaries)
    reviews = review_phase1(studies)
    write_summary(reviews, Path(smk.output.markdown), Path(smk.output.csv), Path(smk.output.text))
    logger = logging.getLogger("finetune_hpo")
    logger.info("Phase 1 review (%s):\n%s", smk.output.markdown, render_terminal(reviews))
    failed = [review for review in reviews if review.failed]
    for review in failed:
        logger.error("%s: %s", review.study_name, review.problem)
    if failed:
        # Snakemake deletes a failed job's outputs: the table above, in this log, is what remains.
        logger.error("Phase 1 check failed; the review table is in this log (%s)", smk.log[0])
        sys.exit(1)
