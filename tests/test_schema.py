"""`cgtool schema` and `cgtool new` (issue 13): the spec language as JSON Schema, and starter specs that build."""
from __future__ import annotations

import glob
import json
import os

import jsonschema
import pytest
import yaml
from typer.testing import CliRunner

import cgtool
from cgtool.cli import app
from cgtool.spec.schema import spec_schema

ENV = {"COLUMNS": "100", "NO_COLOR": "1"}
CONFIGS = sorted(glob.glob("configs/*.yaml"))


def validator():
    schema = spec_schema()
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


def test_schema_command_prints_the_schema():
    r = CliRunner().invoke(app, ["schema"], env=ENV)
    assert r.exit_code == 0
    data = json.loads(r.stdout)
    assert data == spec_schema() and data["$schema"] == "https://json-schema.org/draft/2020-12/schema"


def test_the_shipped_schema_file_is_current():
    with open("schema/cgtool-spec.schema.json") as f:
        assert json.load(f) == spec_schema(), "run: cgtool schema > schema/cgtool-spec.schema.json"


@pytest.mark.parametrize("config", CONFIGS)
def test_every_config_is_valid_and_names_the_schema(config):
    with open(config) as f:
        text = f.read()
    errors = [e.message for e in validator().iter_errors(yaml.safe_load(text))]
    assert errors == []
    assert "# yaml-language-server: $schema=../schema/cgtool-spec.schema.json" in text


BASE = {"name": "Net", "kind": "sequential", "inputs": {"x": [2, 4]}, "layers": ["Linear(4, 4)"]}


@pytest.mark.parametrize("change,why", [
    ({"kind": "sequentail"}, "kind"),
    ({"layerz": ["ReLU()"]}, "unknown top key"),
    ({"forward": "return x"}, "a sequential spec has no forward"),
    ({"layers": [{"type": "Linear", "ref": "a"}]}, "a layer has one form"),
    ({"layers": [{"ref": "a", "repeat": 2}]}, "a ref takes no repeat"),
    ({"layers": ["Linear"]}, "a call needs parentheses"),
    ({"layers": [{"spec": "/etc/block.yaml"}]}, "included specs are relative"),
    ({"inputs": {"x": {"shape": [2], "dtype": "float128"}}}, "dtype"),
    ({"kind": "module", "layers": None, "modules": {"a": "Linear(4, 4)"}}, "a module needs a forward"),
    ({"kind": "module", "forward": "return x", "layers": None, "constants": {"c": {"init": "randu", "shape": [2]}}},
     "init"),
    ({"kind": "module", "forward": "return x", "layers": None, "constants": {"c": {"init": "full", "shape": [2]}}},
     "init full needs a value"),
    ({"layers": [{"type": "Linear", "repeat": 0}]}, "repeat at least 1"),
    ({"name": "my net"}, "name is an identifier"),
])
def test_wrong_specs_are_rejected(change, why):
    spec = {**BASE, **change}
    spec = {k: v for k, v in spec.items() if v is not None}
    assert list(validator().iter_errors(spec)), why
    # and the loader refuses them too (the schema never rejects what cgtool accepts, and here both refuse)
    with pytest.raises(cgtool.CgError):
        cgtool.build_model(yaml.safe_dump(spec), file="wrong.yaml", device="meta")


def test_schema_accepts_every_layer_form():
    spec = {"name": "Net", "kind": "module", "args": {"d": 4, "h": "2 * d"}, "inputs": {"x": [{"B": 2}, "d"]},
            "modules": {"a": "Linear(d, h)", "b": {"type": "Linear", "in_features": "h", "out_features": "d"},
                        "c": {"ref": "a"}, "blk": {"kind": "sequential", "layers": ["ReLU()"], "repeat": 2}},
            "constants": {"k": [[1, 2], [3, 4]], "s": {"init": "full", "shape": [2], "value": 0.5}},
            "parameters": {"p": {"init": "randn", "shape": ["d"], "scale": 0.1}},
            "tie": {"b.weight": "a.weight"}, "forward": "return x"}
    assert [e.message for e in validator().iter_errors(spec)] == []


# --------------------------------------------------------------------------- cgtool new


@pytest.mark.parametrize("kind", ["sequential", "modulelist", "moduledict", "module"])
def test_new_writes_a_starter_that_builds_and_validates(kind, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    r = CliRunner().invoke(app, ["new", kind, "my_net"], env=ENV)
    assert r.exit_code == 0, r.stderr
    assert "wrote my_net.yaml" in r.stdout
    text = (tmp_path / "my_net.yaml").read_text()
    assert text.startswith("# MyNet:") and f"kind: {kind}" in text
    assert list(validator().iter_errors(yaml.safe_load(text))) == []
    built = cgtool.build_model(text, file="my_net.yaml")
    from cgtool.build.inputs import example_inputs

    out = built.module(*example_inputs(built).values())
    assert tuple(out.shape) == (2, 10)


def test_new_refuses_to_overwrite_without_force(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "mine.yaml").write_text("precious\n")
    r = CliRunner().invoke(app, ["new", "module", "mine.yaml"], env=ENV)
    assert r.exit_code == 1 and "exists: not overwritten" in r.stderr and "--force" in r.stderr
    assert (tmp_path / "mine.yaml").read_text() == "precious\n"
    r = CliRunner().invoke(app, ["new", "module", "mine.yaml", "--force"], env=ENV)
    assert r.exit_code == 0 and "kind: module" in (tmp_path / "mine.yaml").read_text()
    assert not [p for p in os.listdir(tmp_path) if p.startswith(".cgtool-")]  # no temporary file left


def test_new_rejects_an_unknown_kind(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    r = CliRunner().invoke(app, ["new", "tree", "x"], env=ENV)
    assert r.exit_code == 2 and "tree" in r.stderr and not (tmp_path / "x.yaml").exists()
