"""The one error type for user mistakes.

Every mistake in a spec, an expression, a tensor file or an option is raised as
:class:`CgError`, carrying a *place* (``file:line:col`` or a spec path such as
``layers[2].in_features``), a message and an optional hint. The CLI edge turns it
into ``error: PLACE: message`` on stderr and exit code 1; library users catch it.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Loc:
    """A position in a source: a file (or ``<stdin>``/``<expr>``), 1-based line and column."""

    file: str | None = None
    line: int | None = None
    col: int | None = None

    def __str__(self) -> str:
        parts = [self.file or "<spec>"]
        if self.line is not None:
            parts.append(str(self.line))
            if self.col is not None:
                parts.append(str(self.col))
        return ":".join(parts)


class CgError(Exception):
    """A user mistake: where it is, what is wrong, and how to fix it."""

    exit_code = 1

    def __init__(self, message: str, place: str | Loc | None = None, hint: str | None = None):
        super().__init__(message)
        self.message = message
        self.place = str(place) if place is not None else None
        self.hint = hint

    def __str__(self) -> str:
        head = f"{self.place}: {self.message}" if self.place else self.message
        return head

    def with_place(self, place: str | Loc | None) -> "CgError":
        """Return the same error with *place* filled in when it had none."""
        if self.place is None and place is not None:
            return CgError(self.message, place, self.hint)
        return self


class CheckFailed(Exception):
    """A requested check (``--check``) failed: exit code 3."""

    exit_code = 3

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


def closest(name: str, choices, n: int = 1) -> list[str]:
    """Names among *choices* closest to *name*, for 'did you mean' hints."""
    import difflib

    choices = list(choices)
    found = difflib.get_close_matches(name, choices, n=n, cutoff=0.6)
    if not found:
        lowered = {c.lower(): c for c in choices}
        found = [lowered[m] for m in difflib.get_close_matches(name.lower(), list(lowered), n=n, cutoff=0.6)]
    return found


def did_you_mean(name: str, choices) -> str | None:
    found = closest(name, choices)
    return f"did you mean {found[0]!r}?" if found else None


def first_line(e: BaseException) -> str:
    """The first line of an exception's message (torch's are often pages long), or its type's name."""
    text = str(e).strip().splitlines()
    return text[0] if text else type(e).__name__
