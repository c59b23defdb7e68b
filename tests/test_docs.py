"""The docs never rot: every cgtool command in README.md and the tutorials runs, and the output
shown for it is what it prints.

How commands and their output are written in the docs is said in ``tests/docs_commands.py``.
Each command is run through the installed ``.venv/bin/cgtool`` (``bash -o pipefail -c``, with
``.venv/bin`` first on ``PATH`` so pipelines reach it too), from the repository root, with
``COLUMNS=100 NO_COLOR=1``, as a reader would. Files a command writes (``-o``/``--output``/``--save``)
go to a temporary folder instead of the repository. Lines that are not cgtool calls (``make``,
``source .venv/bin/activate``, ``pip``, ``python``...) are set-up and are skipped by rule.

A command written the same way in several places (the English and Chinese tutorials share theirs)
runs once, and every place is checked against that one run. The runs start together in a few
worker threads (``CGTOOL_DOCS_JOBS``, default: the number of CPUs, at most 4), so that the slow
ones (the ResNet-110 spectrum) overlap the rest.
"""
from __future__ import annotations

import concurrent.futures
import dataclasses
import os
import pathlib
import re
import shutil
import subprocess
import time

import pytest

from docs_commands import DocCommand, commands, matches

ROOT = pathlib.Path(__file__).resolve().parent.parent
VENV_BIN = ROOT / ".venv" / "bin"
CGTOOL = VENV_BIN / "cgtool"
DOCS = [ROOT / "README.md", ROOT / "docs" / "tutorial.md", ROOT / "docs" / "tutorial.zh.md"]
TIMEOUT_S = 600
_OUTPUT_OPTION = re.compile(r"(?<!\S)(-o|--output|--save)(\s+|=)(?!/)([^\s|;&]+)")

ALL = [c for doc in DOCS if doc.exists() for c in commands(doc)]


@dataclasses.dataclass
class Run:
    returncode: int
    stdout: str
    stderr: str
    seconds: float


def _environment() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("FORCE_COLOR", "CLICOLOR_FORCE")}
    # One torch thread per run: the runs go side by side, one per CPU, and torch's own threads
    # would only fight over the same CPUs (on a busy 2-CPU machine the ResNet-110 spectrum with
    # --sample takes 22 s with one thread, 13 minutes with two). The outputs are the same.
    env.update(COLUMNS="100", NO_COLOR="1", TERM="dumb", OMP_NUM_THREADS="1", MKL_NUM_THREADS="1",
               PATH=f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}")
    return env


def _run(text: str, scratch: pathlib.Path) -> Run:
    # an output file named in the doc lands in the scratch folder, and its path reads as written
    command = _OUTPUT_OPTION.sub(lambda m: f"{m.group(1)}{m.group(2)}{scratch / m.group(3)}", text)
    start = time.perf_counter()
    try:
        done = subprocess.run(["bash", "-o", "pipefail", "-c", command], cwd=ROOT, env=_environment(),
                              capture_output=True, text=True, timeout=TIMEOUT_S)
    except subprocess.TimeoutExpired:
        return Run(-1, "", f"still running after {TIMEOUT_S} s: stopped", time.perf_counter() - start)
    prefix = f"{scratch}{os.sep}"
    return Run(done.returncode, done.stdout.replace(prefix, ""), done.stderr.replace(prefix, ""),
               time.perf_counter() - start)


@pytest.fixture(scope="session")
def doc_runs(request, tmp_path_factory):
    """``doc_runs(command) -> Run``: every selected command started at once in a small pool,
    each distinct command text once."""
    selected = {item.callspec.params["doc"].text for item in request.session.items
                if item.originalname == "test_doc_command" and hasattr(item, "callspec")}
    jobs = int(os.environ.get("CGTOOL_DOCS_JOBS", min(4, os.cpu_count() or 1)))
    pool = concurrent.futures.ThreadPoolExecutor(max_workers=max(1, jobs))
    futures = {}
    for text in sorted(selected, key=lambda t: "resnet110" not in t):   # the slowest first
        scratch = tmp_path_factory.mktemp("doc")
        futures[text] = pool.submit(_run, text, scratch)
    yield lambda doc: futures[doc.text].result()
    pool.shutdown(wait=False, cancel_futures=True)


def test_the_docs_exist_and_have_commands():
    for doc in DOCS:
        assert doc.exists(), f"{doc.relative_to(ROOT)} is missing"
        assert commands(doc), f"{doc.relative_to(ROOT)} has no cgtool command"
    assert CGTOOL.exists(), "the test runs the installed cgtool: make setup (or make test) first"
    assert shutil.which("cgtool", path=_environment()["PATH"]) == str(CGTOOL)


def test_both_tutorials_run_the_same_commands():
    """The Chinese tutorial is the English one for the lesson's readers: the same commands."""
    english = [c.text for c in commands(DOCS[1])]
    chinese = [c.text for c in commands(DOCS[2])]
    assert english == chinese


@pytest.mark.parametrize("doc", ALL, ids=[c.where for c in ALL])
def test_doc_command(doc: DocCommand, doc_runs):
    run = doc_runs(doc)
    said = f"{doc.where}: `{doc.text}`"
    assert run.returncode == doc.exit_code, (
        f"{said} exited {run.returncode}, the doc expects {doc.exit_code}\n"
        f"stderr:\n{run.stderr[-3000:]}")
    if doc.output is not None:
        actual = run.stdout.splitlines()
        assert matches(doc.output, actual), (
            f"{said}: the output shown in the doc is not what it prints.\n"
            f"--- shown\n" + "\n".join(doc.output) + "\n--- printed\n" + "\n".join(actual))


def test_the_conventions(tmp_path):
    """How the docs are read: what runs, what is skipped, what output belongs to which command."""
    doc = tmp_path / "doc.md"
    doc.write_text("\n".join([
        "```sh",
        "make demo                  # set-up: skipped by rule",
        "source .venv/bin/activate",
        "cgtool build a.yaml        # a comment",
        "cgtool grad \"y = x # not a comment\" \\",
        "    --wrt x",
        "cat a.yaml | cgtool build - --json | jq .total_params",
        "cgtool validate bad.yaml   # exit 1",
        "```",
        "",
        "```output",
        "bad.yaml: error",
        "```",
        "```console",
        "$ cgtool params a.yaml",
        "table",
        "",
        "$ pip install cgtool",
        "$ cgtool run a.yaml",
        "```",
        "<!-- docs-test: no-output-check -->",
        "```console",
        "$ cgtool bench a.yaml",
        "1.2 ms",
        "```",
        "```python",
        "cgtool.build('a.yaml')",
        "```",
    ]) + "\n")
    found = [(c.line, c.text, c.exit_code, c.output) for c in commands(doc)]
    assert found == [
        (4, "cgtool build a.yaml", 0, None),
        (5, 'cgtool grad "y = x # not a comment" --wrt x', 0, None),
        (7, "cat a.yaml | cgtool build - --json | jq .total_params", 0, None),
        (8, "cgtool validate bad.yaml", 1, ["bad.yaml: error"]),
        (15, "cgtool params a.yaml", 0, ["table"]),
        (19, "cgtool run a.yaml", 0, None),
        (23, "cgtool bench a.yaml", 0, None),
    ]
    assert matches(["a", "...", "d"], ["a", "b  ", "c", "d", ""])
    assert matches(["a", "..."], ["a"])
    assert not matches(["a", "b"], ["a", "c"])
    assert not matches(["a"], ["a", "b"])
