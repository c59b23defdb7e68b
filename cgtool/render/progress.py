"""A progress bar on stderr for long analyses: shown only once the work has taken more than a second,
only on a terminal, never with --json, and gone when it ends (stdout stays clean for scripts)."""
from __future__ import annotations

import threading
import time

from .console import err

DELAY_S = 1.0


class StageProgress:
    """Called with the name of each stage as it starts (``"capturing the forward pass"``), and again with the
    fraction done where the stage knows it (``progress("the path-length spectrum", 0.4)``): a bar then, a
    spinner otherwise. A stage that runs long without calling again still gets its spinner after the delay."""

    def __init__(self, delay_s: float = DELAY_S, *, enabled: bool = True):
        self.enabled = enabled  # off with --json: a script reads the output, nobody watches it
        self.start = time.monotonic()
        self.delay_s = delay_s
        self.progress = None
        self.task = None
        self.stage = None
        self.fraction = None
        self.console = err()
        self.lock = threading.Lock()
        self.timer = None

    def _wanted(self) -> bool:
        return self.enabled and self.console.is_terminal

    def _show(self) -> None:
        """Start the display (under the lock), with the stage the work is in."""
        from rich.progress import BarColumn, Progress, SpinnerColumn, TaskProgressColumn, TextColumn, \
            TimeElapsedColumn

        self.progress = Progress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), TaskProgressColumn(),
                                 TimeElapsedColumn(), console=self.console, transient=True)
        self.progress.start()
        self.task = self.progress.add_task(self.stage or "working", total=None if self.fraction is None else 1.0,
                                           completed=self.fraction or 0)

    def _on_time(self) -> None:
        with self.lock:
            if self.progress is None and self.timer is not None:
                self._show()

    def __call__(self, stage: str, fraction: float | None = None) -> None:
        with self.lock:
            changed = stage != self.stage
            self.stage, self.fraction = stage, fraction
            if self.progress is None:
                if not self._wanted() or time.monotonic() - self.start < self.delay_s:
                    return
                self._show()
                return
            if changed:
                self.progress.update(self.task, description=stage, total=None if fraction is None else 1.0,
                                     completed=0)
            if fraction is not None:
                self.progress.update(self.task, total=1.0, completed=min(1.0, max(0.0, fraction)))

    def __enter__(self):
        if self._wanted():
            self.timer = threading.Timer(self.delay_s, self._on_time)
            self.timer.daemon = True
            self.timer.start()
        return self

    def __exit__(self, *exc):
        with self.lock:
            if self.timer is not None:
                self.timer.cancel()
                self.timer = None
            if self.progress is not None:
                self.progress.stop()
        return False
