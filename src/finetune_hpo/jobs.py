"""What every workflow job and CLI command shares: logging to the job's log file, and one clear line with a
non-zero exit (not a traceback) for the errors a user can fix."""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from finetune_hpo.config import ConfigError
from finetune_hpo.data import DataError
from finetune_hpo.export import ExportError
from finetune_hpo.gpus import GpuClaimError
from finetune_hpo.reload import EvaluationError
from finetune_hpo.review import ReviewFailed
from finetune_hpo.storage import StudyError
from finetune_hpo.transfer_sources import TransferError

logger = logging.getLogger("finetune_hpo")

# Errors whose message names the key, file or value and what to do: the message is the whole report.
USER_ERRORS: tuple[type[Exception], ...] = (
    ConfigError,
    DataError,
    StudyError,
    ExportError,
    EvaluationError,
    GpuClaimError,
    TransferError,
    ReviewFailed,
    OSError,  # FileNotFoundError, PermissionError: the message names the path
)


def configure_logging(log_file: str | Path | None = None, level: int = logging.INFO) -> None:
    """Log to stderr and, when given, to ``log_file`` (the rule's log), with timestamps."""
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    if log_file:
        Path(log_file).parent.mkdir(parents=True, exist_ok=True)
        handlers.append(logging.FileHandler(log_file))
    logging.basicConfig(
        level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", handlers=handlers, force=True
    )
    # Libraries stay at warnings: the rule's log should read as the study's story.
    for noisy in ("transformers", "datasets", "optuna", "peft", "wandb", "httpx", "urllib3"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


@contextmanager
def workflow_job(log_file: str | Path | None, level: int = logging.INFO) -> Iterator[None]:
    """Run a rule's script body (or a CLI command): log to ``log_file`` (and stderr); a user error or an
    interrupt exits with one line."""
    configure_logging(log_file, level)
    try:
        yield
    except USER_ERRORS as err:
        for line in str(err).splitlines():  # several config problems: one line each
            logger.error("%s", line)
        sys.exit(1)
    except KeyboardInterrupt:
        logger.error("interrupted; finished trials are kept in the study's storage, rerun to resume")
        sys.exit(130)
    except Exception:
        # A bug, not a user error: its traceback goes to the rule's log too, not only to the terminal.
        logger.exception("unexpected error")
        raise
