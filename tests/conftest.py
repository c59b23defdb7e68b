import pathlib

import pytest
from typer.testing import CliRunner

ROOT = pathlib.Path(__file__).resolve().parent.parent
CONFIGS = ROOT / "configs"
ENV = {"COLUMNS": "120", "NO_COLOR": "1", "TERM": "dumb"}


@pytest.fixture
def cli():
    """Invoke the CLI in-process: returns (exit_code, stdout, stderr)."""
    from cgtool.cli import app

    runner = CliRunner()

    def invoke(*args, input=None):
        result = runner.invoke(app, [str(a) for a in args], input=input, env=ENV)
        return result.exit_code, result.stdout, result.stderr

    return invoke


@pytest.fixture
def spec_file(tmp_path):
    def write(text, name="spec.yaml"):
        path = tmp_path / name
        path.write_text(text)
        return str(path)

    return write
