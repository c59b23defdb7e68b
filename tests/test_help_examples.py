"""Every command's --help has a one-line example (issue 13), and the example works as written."""
from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys

import pytest
import typer.main
from typer.testing import CliRunner

from cgtool.cli import app

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.dirname(sys.executable)
GROUP = typer.main.get_command(app)
COMMANDS = sorted(GROUP.commands)
ENV = {"COLUMNS": "100", "NO_COLOR": "1"}


def example(command: str) -> str:
    r = CliRunner().invoke(app, [command, "--help"], env=ENV)
    assert r.exit_code == 0
    m = re.search(r"^\s*Example: (cgtool .+)$", r.stdout, re.M)
    assert m, f"cgtool {command} --help has no example:\n{r.stdout}"
    return m.group(1).strip()


@pytest.mark.parametrize("command", COMMANDS)
def test_help_has_an_example_that_runs(command, tmp_path, monkeypatch):
    line = example(command)
    assert line.startswith(f"cgtool {command}")
    os.symlink(os.path.join(ROOT, "configs"), tmp_path / "configs")
    monkeypatch.chdir(tmp_path)
    if re.search(r"[|&;<>*]", line):  # shell syntax: run it as a shell would
        env = {**os.environ, **ENV, "PATH": BIN + os.pathsep + os.environ.get("PATH", "")}
        r = subprocess.run(["bash", "-c", line], capture_output=True, text=True, timeout=300, env=env)
        assert r.returncode == 0, f"{line}\n{r.stdout}\n{r.stderr}"
    else:
        r = CliRunner().invoke(app, shlex.split(line)[1:], env=ENV)
        assert r.exit_code == 0, f"{line}\n{r.stdout}\n{r.stderr}"
