"""Stopping cleanly: SIGTERM (preemption, Snakemake's cancel) behaves like Ctrl-C, and a flag the training
loop checks at every step, so the running trial ends as FAIL instead of being left RUNNING."""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

# Set by the SIGTERM handler. The handler also raises KeyboardInterrupt at once, but Python swallows an
# exception raised while it runs a weakref or __del__ callback; checking this at every training step (the
# trainer's callback) makes sure the interrupt still ends the trial.
stop_requested = threading.Event()


@contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """SIGTERM (preemption, Snakemake's cancel) behaves like Ctrl-C: the running trial ends FAIL."""

    def handler(signum: int, frame: Any) -> None:
        stop_requested.set()
        raise KeyboardInterrupt(f"received signal {signum}")

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
        stop_requested.clear()


def raise_if_stop_requested() -> None:
    """Between two trials or runs: an interrupt that was swallowed still stops the loop."""
    if stop_requested.is_set():
        raise KeyboardInterrupt("stop requested (SIGTERM)")
