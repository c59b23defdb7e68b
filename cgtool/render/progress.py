"""A progress line on stderr for long analyses: shown only once the work has taken more than a second,
only on a terminal, and gone when it ends (stdout stays clean for scripts and --json)."""
from __future__ import annotations

import time

from .console import err

DELAY_S = 1.0


class StageProgress:
    """Called with the name of each stage as it starts (``"capturing the forward pass"``)."""

    def __init__(self, delay_s: float = DELAY_S):
        self.start = time.monotonic()
        self.delay_s = delay_s
        self.status = None
        self.console = err()

    def __call__(self, stage: str) -> None:
        if self.status is None:
            if time.monotonic() - self.start < self.delay_s or not self.console.is_terminal:
                return
            self.status = self.console.status(stage)
            self.status.start()
        self.status.update(stage)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        if self.status is not None:
            self.status.stop()
        return False
