import pathlib

import pytest
from typer.testing import CliRunner

ROOT = pathlib.Path(__file__).resolve().parent.parent
CONFIGS = ROOT / "configs"
ENV = {"COLUMNS": "120", "NO_COLOR": "1", "TERM": "dumb"}


def pytest_addoption(parser):
    parser.addoption("--update-golden", action="store_true", default=False,
                     help="rewrite tests/golden/ from the current output instead of comparing with it")


@pytest.fixture
def update_golden(request) -> bool:
    return request.config.getoption("--update-golden")


@pytest.fixture(scope="session")
def meta_built():
    """``meta_built(path)``: the spec built once per session on the meta device (no shape check),
    shared by the tests that only read it (counts, tables, summaries)."""
    from cgtool.build.model import build_model

    cache = {}

    def get(path):
        key = str(pathlib.Path(path).resolve())
        if key not in cache:
            cache[key] = build_model(key, device="meta", check=False)
        return cache[key]

    return get


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
