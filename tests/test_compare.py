"""`cgtool compare`: dynamic graphs per input, the static capture (or why not), eager vs compiled (issue 10)."""
from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from cgtool.cli import app

ENV = {"COLUMNS": "110", "NO_COLOR": "1"}


def cli(*args, code=0):
    r = CliRunner().invoke(app, ["compare", *args], env=ENV)
    assert r.exit_code == code, f"exit {r.exit_code}\nstdout:\n{r.stdout}\nstderr:\n{r.stderr}"
    return r


def test_fancy_mlp_graph_changes_with_the_data_and_cannot_be_captured():
    data = json.loads(cli("configs/fancy_mlp.yaml", "--no-compile", "--min-time", "0.02", "--json").stdout)
    runs = data["dynamic"]["runs"]
    assert [r["input"] for r in runs] == ["default input", "x × 10", "x × 100"]
    assert data["dynamic"]["graph_changes"] and len({r["nodes"] for r in runs}) == 3
    loops = [next(b for b in r["branches"] if b["kind"] == "while") for r in runs]
    assert all(b["line"].startswith("configs/fancy_mlp.yaml:14") for b in loops)
    assert [b["held"] for b in loops] == sorted(b["held"] for b in loops) and loops[0]["held"] < loops[-1]["held"]
    static = data["static"]
    assert static["capturable"] is False and static["line"] == "configs/fancy_mlp.yaml:14"
    assert static["statement"].startswith("while norm(x) > 1") and "reads a tensor's value" in static["reason"]
    assert static["nodes"] is None and "data-dependent" in static["error"]
    baked = static["baked_branch"]
    assert baked["differs"] and baked["scale"] == 100 and baked["eager"] == pytest.approx(runs[-1]["output"], rel=1e-5)
    assert [s["mode"] for s in data["speed"]] == ["eager"] and data["speed"][0]["median_us"] > 0
    assert data["dynamic"]["data_dependent"][0]["line"] == "configs/fancy_mlp.yaml:14:9"


def test_fancy_mlp_text_says_it_in_words():
    text = cli("configs/fancy_mlp.yaml", "--no-compile", "--min-time", "0.02").stdout
    assert "the graph changes with the data" in text
    assert "not capturable: configs/fancy_mlp.yaml:14: `while norm(x) > 1" in text
    assert "torch says: GuardOnDataDependentSymNode" in text
    assert "a trace taken on the default input gives a different answer on the input × 100" in text


def test_mlp_is_captured_and_compiled_with_compile_time_apart():
    data = json.loads(cli("configs/mlp.yaml", "--min-time", "0.05", "--json").stdout)
    assert not data["dynamic"]["graph_changes"] and data["dynamic"]["data_dependent"] == []
    assert data["static"]["capturable"] and data["static"]["nodes"] == 3 and data["static"]["baked_branch"] is None
    eager, compiled = data["speed"]
    assert compiled["mode"] == "compiled" and compiled["error"] is None, compiled
    assert compiled["compile_s"] > 0 and compiled["graphs"] == 1 and compiled["graph_breaks"] == 0
    assert eager["median_us"] > 0 and compiled["median_us"] > 0 and data["threads"] == 1
    assert ("faster" in data["verdict"]) or ("slower" in data["verdict"]) or ("within 5%" in data["verdict"])


def test_inputs_given_one_by_one():
    data = json.loads(cli("configs/fancy_mlp.yaml", "-i", "x=2,20", "-i", "x=5,20", "--no-compile", "--min-time",
                          "0.02", "--json").stdout)
    assert [r["input"] for r in data["dynamic"]["runs"]] == ["x=2,20", "x=5,20"]


@pytest.mark.parametrize("args,needle", [
    (["--scales", "one,ten"], "--scales takes numbers"),
    (["--scales", "1,nan"], "finite numbers"),
    (["--scales", "1,10", "-i", "x=2,20"], "--input and --scales"),
    (["--min-time", "0"], "--min-time must be positive"),
    (["-i", "y=2,20"], "no input 'y'"),
])
def test_bad_options(args, needle):
    r = cli("configs/fancy_mlp.yaml", "--no-compile", *args, code=1)
    assert r.stderr.startswith("error: ") and needle in r.stderr and "Traceback" not in r.stderr
