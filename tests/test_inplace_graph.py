"""In-place layers (ReLU(inplace=True)) keep their node in `cgtool graph` and `cgtool paths`.

Such a layer returns the tensor it was given, with a new grad_fn and new contents: the graph must be
read from the tensors as they were when each call ran, so the result is the same as with inplace=False.
"""
from __future__ import annotations

import json

import pytest

from conftest import CONFIGS

SPEC = """\
name: Net
kind: module
inputs: {x: [2, 4]}
modules:
  l: Linear(4, 4)
  relu: ReLU(inplace=INPLACE)
forward: |
  return self.l(self.relu(self.l(x)))
"""


def _in_both(tmp_path, files: dict[str, str]):
    """The same spec files twice, in place (a/) and not (b/): each directory is run under the same names."""
    dirs = {}
    for inplace in (True, False):
        d = tmp_path / ("a" if inplace else "b")
        d.mkdir()
        for name, text in files.items():
            (d / name).write_text(text.replace("inplace=True", f"inplace={inplace}"))
        dirs[inplace] = d
    return dirs


def _json(cli, monkeypatch, directory, *args):
    monkeypatch.chdir(directory)
    code, out, err = cli(*args, "--json")
    assert code == 0, err
    return json.loads(out)


@pytest.fixture
def nets(tmp_path):
    return _in_both(tmp_path, {"net.yaml": SPEC.replace("INPLACE", "True")})


@pytest.mark.parametrize("level", ["module", "op"])
def test_an_in_place_layer_is_a_node_as_when_not_in_place(cli, monkeypatch, nets, level):
    inplace = _json(cli, monkeypatch, nets[True], "graph", "net.yaml", "--level", level)
    plain = _json(cli, monkeypatch, nets[False], "graph", "net.yaml", "--level", level)
    assert inplace == plain  # labels, edges, shapes, and the values summarised (l#1's from before the write)
    nodes = {n["label"]: n for n in inplace["nodes"]}
    assert nodes["relu#1"]["kind"] == "module"
    ids = {n["id"]: n["label"] for n in inplace["nodes"]}
    into = lambda label: {ids[e["source"]] for e in inplace["edges"] if ids[e["target"]] == label}  # noqa: E731
    assert into("relu#1") == {"l#1"} and "relu#1" in into("l#2") and "l#1" not in into("l#2")
    assert nodes["l#1"]["value"]["min"] < 0 <= nodes["relu#1"]["value"]["min"]  # l#1 before the relu wrote it


def test_paths_through_an_in_place_layer(cli, monkeypatch, nets):
    inplace = _json(cli, monkeypatch, nets[True], "paths", "net.yaml", "--wrt", "l.weight")
    plain = _json(cli, monkeypatch, nets[False], "paths", "net.yaml", "--wrt", "l.weight")
    assert inplace["path_count"] == plain["path_count"] == 2
    assert [p["nodes"] for p in inplace["paths"]] == [p["nodes"] for p in plain["paths"]]
    assert ["sum(l#2)", "l#2", "relu#1", "l#1", "l.weight"] in [p["nodes"] for p in inplace["paths"]]
    assert [p["contribution_norm"] for p in inplace["paths"]] == \
        pytest.approx([p["contribution_norm"] for p in plain["paths"]])
    assert inplace["grad_norm"] == pytest.approx(plain["grad_norm"]) and inplace["sum_matches_grad"]
    a = _json(cli, monkeypatch, nets[True], "paths", "net.yaml", "--wrt", "l.weight", "--level", "op")
    b = _json(cli, monkeypatch, nets[False], "paths", "net.yaml", "--wrt", "l.weight", "--level", "op")
    assert [p["nodes"] for p in a["paths"]] == [p["nodes"] for p in b["paths"]] and a["sum_matches_grad"]


def test_resnet18_keeps_its_relus(cli, monkeypatch, tmp_path):
    zoo = CONFIGS / "zoo"
    # resnet18 reads one other spec, its block (args: block: resnet_basic_block.yaml)
    files = {p.name: p.read_text() for p in (zoo / "resnet18.yaml", zoo / "resnet_basic_block.yaml")}
    assert all("inplace=True" in text for text in files.values())
    dirs = _in_both(tmp_path, files)
    inplace = _json(cli, monkeypatch, dirs[True], "graph", "resnet18.yaml")
    labels = [n["label"] for n in inplace["nodes"]]
    assert {"relu#1", "layer1.0.relu#1", "layer1.0.relu#2", "layer4.1.relu#2"} <= set(labels)
    ids = {n["id"]: n["label"] for n in inplace["nodes"]}
    assert {ids[e["source"]] for e in inplace["edges"] if ids[e["target"]] == "maxpool#1"} == {"relu#1"}
    assert inplace == _json(cli, monkeypatch, dirs[False], "graph", "resnet18.yaml")


def test_the_zoo_spec_itself_draws_relu_nodes(cli):
    code, out, err = cli("graph", CONFIGS / "zoo" / "resnet18.yaml", "--json")
    assert code == 0, err
    labels = {n["label"] for n in json.loads(out)["nodes"]}
    assert "relu#1" in labels and sum(label.endswith(("relu#1", "relu#2")) for label in labels) == 17


def test_a_value_written_in_place_is_kept_in_brief_not_copied():
    """Each in-place call keeps a snapshot (shape, dtype, summary) of what it overwrote, not a copy: 50 in-place
    ReLUs on a value hold no 50 activations."""
    from cgtool import api
    from cgtool.graph.model import Snapshot

    cap = api.capture("name: M\nkind: sequential\ninputs: {x: [4, 64]}\nlayers:\n  - Linear(64, 64)\n"
                      "  - {type: ReLU, inplace: true, repeat: 50}\n")
    snapshots = [n for n in cap.graph.nodes if isinstance(n.value, Snapshot)]
    assert snapshots and all(isinstance(n.value.summary, dict) for n in snapshots)
