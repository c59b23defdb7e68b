"""The work budget of one run: a wall-clock limit that every forward, loop and expression checks.

Caps bound each piece of work (a loop's iterations, a tensor's elements); the budget bounds
their sum, so that every run ends whatever its input: compiled spec code calls :func:`tick` at
every forward call and every loop or comprehension step, and the element-cap mode at every
torch operation. One budget covers one command (the CLI arms it at its edge, ``--time-limit``);
a library caller arms one with :func:`work_budget`. Without an armed budget, :func:`tick` costs
one global read. No torch here: the CLI imports this before any command runs.
"""
from __future__ import annotations

import os
import time
from contextlib import contextmanager

from .errors import CgError

DEFAULT_SECONDS = 600.0  # --time-limit / CGTOOL_TIME_LIMIT
ENV = "CGTOOL_TIME_LIMIT"


class _Budget:
    __slots__ = ("seconds", "deadline", "where")

    def __init__(self, seconds: float, where: str):
        self.seconds = seconds
        self.deadline = time.monotonic() + seconds
        self.where = where


_active: _Budget | None = None


def parse_seconds(value, place: str = "--time-limit") -> float:
    """A time limit in seconds from an option or the environment (a positive, finite number)."""
    try:
        seconds = float(value)
    except (TypeError, ValueError):
        raise CgError(f"{value!r} is not a number of seconds", place, hint="for example --time-limit 60") from None
    if not (0 < seconds < 10**7):
        raise CgError(f"{value!r} is not a positive, finite number of seconds", place,
                      hint="for example --time-limit 60 (seconds)")
    return seconds


def default_seconds() -> float:
    value = os.environ.get(ENV)
    return parse_seconds(value, ENV) if value else DEFAULT_SECONDS


@contextmanager
def work_budget(seconds: float | None = None, where: str = "--time-limit"):
    """Arm a budget of *seconds* (default: ``CGTOOL_TIME_LIMIT`` or 600 s) unless one is armed already."""
    global _active
    if _active is not None:
        yield _active
        return
    _active = _Budget(seconds if seconds is not None else default_seconds(), where)
    try:
        yield _active
    finally:
        _active = None


def tick() -> None:
    """Called by running spec code: past the deadline, the run ends with an error."""
    budget = _active
    if budget is not None and time.monotonic() > budget.deadline:
        _over(budget)


def _over(budget: _Budget):
    raise CgError(f"the run took more than its time limit of {budget.seconds:g} s and was stopped",
                  hint=f"a forward or expression that does this much work needs a higher limit: {budget.where} "
                  f"SECONDS (or {ENV}); check loops and tensor sizes first")
