"""The shell commands of the documentation, and the output they are shown with.

The conventions the docs follow (and ``tests/test_docs.py`` checks):

- Commands live in fenced ``sh``, ``bash`` or ``console`` blocks. In ``sh``/``bash`` blocks a
  command is a line that runs cgtool: it starts with ``cgtool ``, or is a pipeline with a
  ``cgtool`` stage (``cat spec.yaml | cgtool build - --json | jq .total_params``). In ``console``
  blocks it is a ``$ `` line of that kind, and the lines after it, up to the next ``$ `` line,
  are its output. A line ending in ``\\`` continues on the next one.
- Every other line of those blocks is skipped, by rule: it is set-up that is not a cgtool call
  (``make``, ``source .venv/bin/activate``, ``pip``, ``python ...``) or a comment.
- A fenced ``output`` block right after a command block (only blank lines between) is the output
  of that block's last command. Output is compared line by line, trailing spaces ignored; a line
  ``...`` alone stands for any number of lines (timings, machine-dependent parts). No output
  block (or no lines after a ``$`` command): the output is not checked, only the exit status.
- A command's exit status is 0 unless its line ends with a comment ``# exit N``.
- ``<!-- docs-test: no-output-check -->`` on the line before a fence: the output shown after the
  commands of that block is not compared (for output that depends on timing or the machine and
  that the doc shows whole).
"""
from __future__ import annotations

import dataclasses
import pathlib
import re

SHELL_FENCES = {"sh", "bash", "console", "shell"}
OUTPUT_FENCE = "output"
NO_OUTPUT_CHECK = "<!-- docs-test: no-output-check -->"
ELLIPSIS = "..."

_FENCE = re.compile(r"^(\s*)(```+|~~~+)\s*([\w+-]*)\s*$")
_EXIT = re.compile(r"#\s*exit\s+(\d+)\s*$")


@dataclasses.dataclass
class DocCommand:
    path: pathlib.Path      # the document
    line: int               # 1-based line of the command in it
    text: str               # the command as the shell will run it (continuations joined)
    exit_code: int = 0
    output: list[str] | None = None   # the expected output, None: not checked

    @property
    def where(self) -> str:
        return f"{self.path.name}:{self.line}"


def _runs_cgtool(command: str) -> bool:
    stages = [s.strip() for s in re.split(r"\|(?!\|)", command)]
    return any(s.startswith("cgtool ") or s == "cgtool" for s in stages)


def _strip_comment(command: str) -> tuple[str, int]:
    """The command without its trailing comment (a ``#`` after a space, outside quotes), and
    the exit status the comment states."""
    quote = None
    for k, ch in enumerate(command):
        if quote:
            quote = None if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif ch == "#" and (k == 0 or command[k - 1].isspace()):
            match = _EXIT.search(command[k:])
            return command[:k].rstrip(), int(match.group(1)) if match else 0
    return command.rstrip(), 0


def _blocks(lines: list[str]):
    """(info, first body line index, body lines, marker before the fence) per fenced block."""
    i = 0
    while i < len(lines):
        m = _FENCE.match(lines[i])
        if not m:
            i += 1
            continue
        fence, info = m.group(2), m.group(3).lower()
        marker = i > 0 and lines[i - 1].strip() == NO_OUTPUT_CHECK
        body_start = i + 1
        j = body_start
        while j < len(lines) and not lines[j].strip().startswith(fence[0] * len(fence)):
            j += 1
        yield info, body_start, lines[body_start:j], marker, j
        i = j + 1


def _logical_lines(body: list[str], start: int):
    """Join backslash continuations: (line number, text)."""
    k = 0
    while k < len(body):
        number, text = start + k + 1, body[k]
        while text.rstrip().endswith("\\") and k + 1 < len(body):
            k += 1
            text = text.rstrip()[:-1].rstrip() + " " + body[k].strip()
        yield number, text
        k += 1


def commands(path: pathlib.Path) -> list[DocCommand]:
    lines = path.read_text(encoding="utf-8").splitlines()
    blocks = list(_blocks(lines))
    found: list[DocCommand] = []
    for index, (info, start, body, marker, end) in enumerate(blocks):
        if info not in SHELL_FENCES:
            continue
        in_block: list[DocCommand] = []
        if info == "console":
            current = None
            for number, text in _logical_lines(body, start):
                if text.startswith("$ "):
                    current = None
                    command, code = _strip_comment(text[2:].strip())
                    if _runs_cgtool(command):
                        current = DocCommand(path, number, command, code, [])
                        in_block.append(current)
                elif current is not None:
                    current.output.append(text)
            for c in in_block:
                while c.output and not c.output[-1].strip():
                    c.output.pop()
                if not c.output or marker:
                    c.output = None
        else:
            for number, text in _logical_lines(body, start):
                command, code = _strip_comment(text.strip())
                if command and _runs_cgtool(command):
                    in_block.append(DocCommand(path, number, command, code))
        # an ``output`` block right after this one belongs to its last command
        following = blocks[index + 1] if index + 1 < len(blocks) else None
        if following and following[0] == OUTPUT_FENCE and in_block and not marker:
            gap = lines[end + 1:following[1] - 1]
            if all(not g.strip() for g in gap):
                in_block[-1].output = list(following[2])
        found.extend(in_block)
    return found


def matches(expected: list[str], actual: list[str]) -> bool:
    """Line-by-line comparison, trailing spaces ignored, ``...`` alone matching any lines."""
    exp = [e.rstrip() for e in expected]
    act = [a.rstrip() for a in actual]
    while act and not act[-1]:
        act.pop()
    while exp and not exp[-1]:
        exp.pop()

    def match(i: int, j: int) -> bool:
        if i == len(exp):
            return j == len(act)
        if exp[i] == ELLIPSIS:
            return any(match(i + 1, k) for k in range(j, len(act) + 1))
        return j < len(act) and exp[i] == act[j] and match(i + 1, j + 1)

    return match(0, 0)
