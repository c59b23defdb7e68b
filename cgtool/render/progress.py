"""A progress bar on stderr for long analyses: shown only once the work has taken more than a second,
only on a terminal, and gone when it ends (stdout stays clean for scripts and --json)."""
from __future__ import annotations

import time

from .console import err

DELAY_S = 1.0


class StageProgress:
    """Called with the name of each stage as it starts (``"capturing the forward pass"``), and again with the
    fraction done where the stage knows it (``progress("the path-length spectrum", 0.4)``): a bar then, a
    spinner otherwise."""

    def __init__(self, delay_s: float = DELAY_S, *, enabled: bool = True):
        self.enabled = enabled  # off with --json: a script reads the output, nobody watches it
        self.start = time.monotonic()
        self.delay_s = delay_s
        self.progress = None
        self.task = None
        self.stage = None
        self.console = err()

    def __call__(self, stage: str, fraction: float | None = None) -> None:
        if self.progress is None:
            if not self.enabled or time.monotonic() - self.start < self.delay_s or not self.console.is_terminal:
                return
            from rich.progress import BarColumn, Progress, SpinnerColumn, TaskProgressColumn, TextColumn, \
                TimeElapsedColumn

            self.progress = Progress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(),
                                     TaskProgressColumn(), TimeElapsedColumn(), console=self.console,
                                     transient=True)
            self.progress.start()
            self.task = self.progress.add_task(stage, total=None)
        if stage != self.stage:
            self.stage = stage
            self.progress.update(self.task, description=stage, total=None if fraction is None else 1.0,
                                 completed=0)
        if fraction is not None:
            self.progress.update(self.task, total=1.0, completed=min(1.0, max(0.0, fraction)))

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        if self.progress is not None:
            self.progress.stop()
        return False
