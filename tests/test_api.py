"""The library (`cgtool.run/params/summary/describe/grad/layers/validate`): plain data, the same
figures the CLI prints as JSON for the same spec, and every mistake a CgError."""
import dataclasses
import json

import pytest
import torch

import cgtool
from cgtool import CgError
from conftest import CONFIGS

MLP = str(CONFIGS / "mlp.yaml")


def cli_json(cli, *args):
    code, out, err = cli(*args, "--json")
    assert code == 0, err
    return json.loads(out)


def test_params_matches_the_cli(cli):
    report = cgtool.params(MLP)
    data = cli_json(cli, "params", MLP)
    assert dataclasses.is_dataclass(report)
    assert report.total == data["total"] and report.trainable == data["trainable"] and report.bytes == data["bytes"]
    assert [(r.name, list(r.shape), r.numel) for r in report.parameters] == \
        [(r["name"], r["shape"], r["numel"]) for r in data["parameters"]]
    assert report.model == "MLP"
    tied = cgtool.params(CONFIGS / "tied_linear.yaml")  # a Path; a shared weight counted once
    assert tied.total == cli_json(cli, "params", CONFIGS / "tied_linear.yaml")["total"] == 440
    assert any(r.shared_with for r in tied.parameters)


def test_spec_as_text_or_loaded_spec_and_args():
    text = (CONFIGS / "mlp.yaml").read_text()
    assert cgtool.params(text).total == cgtool.params(cgtool.load_spec(MLP)).total == cgtool.params(MLP).total
    one_line = "{name: Tiny, kind: sequential, args: {d: 4}, layers: ['Linear(d, 2)']}"
    assert cgtool.params(one_line, file="<tiny>").total == 10  # a one-line string is YAML text when named
    assert cgtool.params(one_line, file="<tiny>", args={"d": 8}).total == 18
    assert cgtool.params(one_line, file="<tiny>", args=["d=8"], device="meta").total == 18


def test_summary_matches_the_cli(cli):
    report = cgtool.summary(MLP, depth=1)
    data = cli_json(cli, "summary", MLP, "--depth", "1")
    assert report.total_flops == data["total_flops"] > 0
    assert report.total_params == data["total_params"]
    assert [(r.name, r.output_shapes, r.flops) for r in report.layers] == \
        [(r["name"], [list(s) for s in r["output_shapes"]], r["flops"]) for r in data["layers"]]


def test_run_matches_the_cli_and_saves(cli, tmp_path):
    result = cgtool.run(MLP, inputs={"x": (3, 784)}, seed=1, output=tmp_path / "out.pt")
    data = cli_json(cli, "run", MLP, "-i", "x=3,784", "--seed", "1")
    (out,) = result.outputs
    assert list(out.shape) == data["shape"] == [3, 10]
    assert torch.allclose(torch.tensor(out.values), torch.tensor(data["values"]))
    assert out.stats.mean == pytest.approx(data["stats"]["mean"])
    assert result.saved == str(tmp_path / "out.pt") and result.warnings == ()
    assert torch.equal(torch.load(result.saved), out.tensor)
    assert cgtool.run(MLP, inputs=["x=3,784"], seed=1).outputs[0].values == out.values


def test_describe_saves_weights_that_run_loads(cli, tmp_path):
    weights = tmp_path / "w.pt"
    report = cgtool.describe(MLP, seed=5, save=weights)
    data = cli_json(cli, "build", MLP)
    assert report.total_params == data["total_params"] and report.check["status"] == data["check"]["status"] == "passed"
    assert [c.name for c in report.root.children] == [c["name"] for c in data["tree"]["children"]]
    assert report.saved == str(weights)
    loaded = cgtool.run(MLP, weights=weights).outputs[0].values  # seed-5 weights, seed-0 inputs
    assert loaded == cli_json(cli, "run", MLP, "--weights", weights)["values"] != cgtool.run(MLP).outputs[0].values
    meta = cgtool.run(MLP, device="meta", weights=weights)
    assert meta.outputs[0].values is None and "no values to load" in meta.warnings[0]


def test_grad_matches_the_cli(cli):
    report = cgtool.grad("y = (x1 + w) * (x2 + w)", at={"x1": 1, "x2": "2", "w": 3.0}, wrt="w")
    data = cli_json(cli, "grad", "y = (x1 + w) * (x2 + w)", "--at", "x1=1", "--at", "x2=2", "--at", "w=3", "--wrt", "w")
    (g,) = report.gradients
    assert report.value == data["value"] == 20
    assert g.sum_over_paths == data["gradients"][0]["sum_over_paths"] == 9 and g.match and g.path_count == 2
    same = cgtool.grad("y = (x1 + w) * (x2 + w)", at=["x1=1", "x2=2", "w=3"], wrt=["w"])
    assert same.gradients[0].sum_over_paths == g.sum_over_paths
    symbolic = cgtool.grad("y = (x1 + w) * (x2 + w)", wrt="w")
    assert not symbolic.numeric and symbolic.gradients[0].symbolic


def test_layers_and_validate_match_the_cli(cli, spec_file):
    rows = cgtool.layers("linear")
    assert [dataclasses.asdict(r) for r in rows] == cli_json(cli, "layers", "linear")["layers"]
    assert "Linear(in_features, out_features, bias=True)" in [r.signature for r in rows]
    bad = spec_file("kind: sequential\nlayers:\n  - Linear(3, 4)\n  - Linear(5, 6)\ninputs: {x: [1, 3]}\n")
    result = cgtool.validate([MLP, bad])
    code, out, _ = cli("validate", MLP, bad, "--json")
    data = json.loads(out)
    assert code == 1
    assert result.ok is data["ok"] is False
    ok, wrong = result.specs
    assert (ok.ok, ok.params, ok.check) == (True, data["specs"][0]["params"], data["specs"][0]["check"])
    assert not wrong.ok and wrong.error == data["specs"][1]["error"] and "expects 5 input features" in wrong.error
    assert cgtool.validate(MLP).ok


@pytest.mark.parametrize("call", [
    lambda: cgtool.params("no/such/spec.yaml"),
    lambda: cgtool.params(MLP, args=["oops"]),
    lambda: cgtool.summary("kind: sequential\nlayers: [Linear(3, 4), Linear(5, 6)]\ninputs: {x: [1, 3]}\n"),
    lambda: cgtool.run(MLP, inputs={"x": (3, 5)}),
    lambda: cgtool.run(MLP, output="out.txt"),
    lambda: cgtool.describe(MLP, device="meta", save="w.pt"),
    lambda: cgtool.describe(MLP, save="w.bin"),
    lambda: cgtool.run(MLP, device="tpu"),
    lambda: cgtool.grad("y = x +"),
    lambda: cgtool.grad("y = x * 2", at={"x": "abc"}),
    lambda: cgtool.grad("y = x * 2", at=["x=1"], wrt="z"),
])
def test_mistakes_are_cgerrors(call, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(CgError):
        call()
    assert not list(tmp_path.iterdir())  # nothing written


def test_package_names_are_lazy_and_build_stays_the_function():
    import cgtool.build.model  # noqa: F401 - binds the subpackage on the package, which must not win

    assert callable(cgtool.build) and isinstance(cgtool.build(MLP), torch.nn.Module)
    assert cgtool.params is cgtool.api.params and cgtool.Built is cgtool.build_model.__globals__["Built"]
    assert set(cgtool.__all__) <= set(dir(cgtool))
    with pytest.raises(AttributeError):
        cgtool.no_such_name
