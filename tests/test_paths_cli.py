"""`cgtool paths`: gradient paths of a model's parameters, checked against autograd."""
from __future__ import annotations

import json
import math

import pytest
import torch
from typer.testing import CliRunner

import cgtool
from cgtool.cli import app

ENV = {"COLUMNS": "100", "NO_COLOR": "1"}


def cli(*args, code=0, input=None):
    r = CliRunner().invoke(app, ["paths", *args], env=ENV, input=input)
    assert r.exit_code == code, f"exit {r.exit_code}\nstdout:\n{r.stdout}\nstderr:\n{r.stderr}"
    return r


def autograd_grad(spec_text: str, param: str, loss=torch.sum) -> torch.Tensor:
    """The parameter's .grad after backward of the reduced output, on the module built by hand from the spec."""
    built = cgtool.build_model(spec_text, file="<test>")
    from cgtool.build.inputs import example_inputs

    module = built.module.eval()
    out = module(*example_inputs(built).values())
    loss(out).backward()
    return module.get_parameter(param).grad


THRICE = """
name: Thrice
kind: module
inputs: {x: [2, 4]}
modules:
  lin: Linear(4, 4)
forward: |
  x = lin(x)
  x = tanh(lin(x))
  return lin(x)
"""

UNUSED = """
name: Unused
kind: module
inputs: {x: [2, 4]}
modules:
  a: Linear(4, 4)
  b: Linear(4, 4)
  c: Linear(4, 4)
forward: |
  h = c(x)
  return a(x)
"""


def test_fancy_mlp_shared_layer_has_two_module_level_paths_summing_to_grad():
    data = json.loads(cli("configs/fancy_mlp.yaml", "--wrt", "linear.weight", "--json").stdout)
    assert data["path_count"] == 2 and data["sum_matches_grad"] and data["checked_by"] == "listed paths"
    assert data["loss"] is None  # FancyMLP returns a scalar
    assert [p["nodes"][-2:] for p in data["paths"]] == [["linear#2", "linear.weight"], ["linear#1", "linear.weight"]]
    want = autograd_grad(open("configs/fancy_mlp.yaml").read(), "linear.weight")
    assert data["grad_norm"] == pytest.approx(float(want.norm()), rel=1e-5)


def test_library_contributions_sum_to_autograd_grad():
    from cgtool.build.inputs import example_inputs
    from cgtool.graph import paths as P
    from cgtool.graph.capture import capture_model
    from cgtool.graph.model_paths import rooted

    built = cgtool.build_model(THRICE, file="<test>")
    cap = capture_model(built, example_inputs(built))
    r = rooted(cap, root=None, loss="sum", level="module")
    weight = r.graph.nodes[r.ids[cap.names["lin.weight"].id]]
    everything = P.all_paths(r.graph, r.root.id, weight.id, 100)
    assert len(everything) == 3  # one path per use of the layer
    total = sum(P.contribution(r.graph, p) for p in everything)
    assert torch.allclose(total, autograd_grad(THRICE, "lin.weight"), rtol=1e-5, atol=1e-6)


def test_tied_weight_gets_a_path_from_each_side():
    data = json.loads(cli("configs/tied_linear.yaml", "--wrt", "l1.weight", "--json").stdout)
    assert data["path_count"] == 2 and data["sum_matches_grad"] and data["loss"] == "sum"


def test_layer_used_three_times_op_and_module_level():
    module = json.loads(cli("-", "--wrt", "lin.weight", "--json", input=THRICE).stdout)
    op = json.loads(cli("-", "--wrt", "lin.weight", "--json", "--level", "op", input=THRICE).stdout)
    assert module["path_count"] == op["path_count"] == 3
    assert module["sum_matches_grad"] and op["sum_matches_grad"]
    assert len(op["paths"][0]["nodes"]) > len(module["paths"][0]["nodes"])  # op level shows lin#k/t
    assert module["grad_norm"] == pytest.approx(float(autograd_grad(THRICE, "lin.weight").norm()), rel=1e-5)


def test_all_flags_unused_layers_and_discarded_branches():
    data = json.loads(cli("-", "--all", "--json", input=UNUSED).stdout)
    rows = {p["name"]: p for p in data["parameters"]}
    assert set(rows) == {"a.weight", "a.bias", "b.weight", "b.bias", "c.weight", "c.bias"}
    assert rows["a.weight"]["reached"] and rows["a.weight"]["path_count"] == 1 and rows["a.weight"]["uses"] == 1
    assert not rows["b.weight"]["reached"] and rows["b.weight"]["uses"] == 0
    assert rows["b.weight"]["why"] == "never used (its module is never called)"
    assert not rows["c.weight"]["reached"] and rows["c.weight"]["uses"] == 1 and rows["c.weight"]["grad_norm"] == 0
    assert rows["c.weight"]["why"] == "output unused (what reads it does not reach the output)"
    text = cli("-", "--all", input=UNUSED).stdout
    assert "4 parameters get no gradient" in text and "find_unused_parameters=True" in text


def test_json_keys():
    data = json.loads(cli("configs/mlp.yaml", "--wrt", "hidden.weight", "--json").stdout)
    assert {"wrt", "root", "loss", "path_count", "grad_norm", "sum_matches_grad", "paths", "by_length"} <= set(data)
    assert set(data["paths"][0]) == {"nodes", "contribution_norm"}
    data = json.loads(cli("configs/mlp.yaml", "--all", "--json").stdout)
    assert {"name", "path_count", "grad_norm", "uses", "reached"} <= set(data["parameters"][0])


def test_text_output_and_input_as_target():
    out = cli("configs/fancy_mlp.yaml", "--wrt", "linear.weight").stdout
    assert "2 paths at the module level" in out and "linear#2 ← linear.weight" in out and "✓" in out
    data = json.loads(cli("configs/mlp.yaml", "--wrt", "x", "--json", "--loss", "mean").stdout)
    assert data["path_count"] == 1 and data["sum_matches_grad"] and data["root"].startswith("mean(")


def test_residual_chain_of_1000_blocks_counts_exactly():
    spec = """
name: Chain
kind: modulelist
inputs: {x: [1, 2]}
layers:
  - {type: Linear, in_features: 2, out_features: 2, repeat: 1000}
forward: |
  for layer in layers:
      x = x + layer(x)
  return x
"""
    data = json.loads(cli("-", "--wrt", "x", "--json", "--max-paths", "3", input=spec).stdout)
    assert data["path_count"] == 2**1000 and data["sum_matches_grad"] and data["checked_by"] == "sum over all paths"
    assert data["left_out"] == 2**1000 - 3


@pytest.mark.parametrize("args,needles", [
    (["configs/fancy_mlp.yaml", "--wrt", "linear.weigth"], ["no value named 'linear.weigth'", "linear.weight"]),
    (["configs/fancy_mlp.yaml"], ["--wrt NAME", "--all"]),
    (["configs/fancy_mlp.yaml", "--wrt", "x", "--root", "nope"], ["no value named 'nope'"]),
    (["no/such.yaml", "--wrt", "w"], ["no such file"]),
])
def test_bad_input_exit_1(args, needles):
    r = cli(*args, code=1)
    assert r.stderr.startswith("error: ") and "Traceback" not in r.stderr
    for needle in needles:
        assert needle in r.stderr, (needle, r.stderr)


def test_bad_option_is_a_usage_error():
    r = cli("configs/fancy_mlp.yaml", "--wrt", "linear.weight", "--level", "atoms", code=2)
    assert "atoms" in r.stderr


RESIDUAL = """
name: Residual
kind: modulelist
inputs: {x: [2, 3]}
layers:
  - {kind: sequential, layers: ['Linear(3, 3)', 'Tanh()'], repeat: 6}
forward: |
  for block in layers:
      x = x + block(x)
  return x
"""


def test_by_length_on_a_residual_chain_is_binomial_and_adds_up_to_the_gradient():
    data = json.loads(cli("-", "--wrt", "x", "--by-length", "--json", input=RESIDUAL).stdout)
    rows = data["by_length"]
    assert [r["length"] for r in rows] == list(range(7))
    assert [r["count"] for r in rows] == [math.comb(6, k) for k in range(7)]
    assert data["path_count"] == 2**6 and data["by_length_matches"] and data["sum_matches_grad"]


def test_by_length_counts_what_the_pattern_names():
    # counting only the Linear inside each block: the same spectrum (one per block), at depth 2
    by_pattern = json.loads(cli("-", "--wrt", "x", "--by-length", "--count", "*.0", "--json", input=RESIDUAL).stdout)
    by_depth = json.loads(cli("-", "--wrt", "x", "--by-length", "--depth", "2", "--json", input=RESIDUAL).stdout)
    assert [r["count"] for r in by_pattern["by_length"]] == [math.comb(6, k) for k in range(7)]
    assert [r["count"] for r in by_depth["by_length"]] == [math.comb(6, k) for k in range(7)]
    text = cli("-", "--wrt", "0.0.weight", "--by-length", "--sample", "50", input=RESIDUAL).stdout
    assert "path-length spectrum" in text and "mean |path| (sampled)" in text and "add up to the gradient" in text


TIED_LM = """
name: TiedLM
kind: module
inputs: {tokens: {shape: [2, 5], dtype: long, high: 11}}
modules:
  emb: Embedding(11, 4)
  mix: Linear(4, 4)
  head: Linear(4, 11, bias=False)
tie: {head.weight: emb.weight}
forward: |
  h = tanh(mix(emb(tokens)))
  return head(h)
"""


def test_tied_encoder_decoder_pair_gets_one_path_from_each_side():
    data = json.loads(cli("-", "--wrt", "emb.weight", "--json", input=TIED_LM).stdout)
    assert data["path_count"] == 2 and data["sum_matches_grad"]
    ends = sorted(p["nodes"][-2] for p in data["paths"])
    assert ends == ["emb#1", "head#1"]  # the input lookup and the output head
    assert data["grad_norm"] == pytest.approx(float(autograd_grad(TIED_LM, "emb.weight").norm()), rel=1e-5)
