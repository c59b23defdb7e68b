"""Static capture with torch.export (issue 10): success as a Graph, refusal at the spec line, a baked branch."""
from __future__ import annotations

import pytest
import torch

import cgtool
from cgtool.build.inputs import example_inputs
from cgtool.graph.static import baked_branch, static_capture, static_view


def built(config: str):
    return cgtool.build_model(open(f"configs/{config}.yaml").read(), file=f"configs/{config}.yaml")


@pytest.mark.parametrize("config,ops", [
    ("mlp", 3), ("mlp_sequential", 3), ("mlp_sequential_named", 3), ("mlp_modulelist", 3), ("mlp_moduledict", 3),
    ("resnet_block", None), ("gpt2_block", None), ("llama_block", None), ("tied_linear", 3),
])
def test_capturable_specs_become_graphs(config, ops):
    b = built(config)
    inputs = example_inputs(b)
    sc = static_capture(b, inputs)
    assert sc.capturable and sc.reason is None and sc.line is None
    sc.graph.lint()
    if ops is not None:
        assert sc.nodes == ops
    # every parameter is a leaf by its qualified name, and the program computes what the module does
    params = {n.label for n in sc.graph.nodes if n.kind == "parameter"}
    assert params == {name for name, _ in b.module.named_parameters()}
    b.module.eval()
    with torch.no_grad():
        want = b.module(*inputs.values())
        got = sc.program.module()(*inputs.values())
    torch.testing.assert_close(got, want)
    # operations carry the spec line that made them
    assert any(n.info.loc and n.info.loc.startswith(f"configs/{config}.yaml:") for n in sc.graph.nodes
               if n.kind == "op") or config in ("mlp_sequential", "mlp_sequential_named")


def test_labels_name_the_module_called():
    sc = static_capture(built("mlp"), example_inputs(built("mlp")))
    assert [n.label for n in sc.graph.nodes if n.kind == "op"] == ["hidden/linear", "act/relu", "output/linear_1"]
    assert sc.graph.nodes[sc.root].label == "output/linear_1"


def test_fancy_mlp_refusal_points_at_the_loop():
    b = built("fancy_mlp")
    sc = static_capture(b, example_inputs(b))
    assert not sc.capturable and sc.graph is None and sc.nodes is None
    assert sc.line == "configs/fancy_mlp.yaml:14" and sc.statement == "while norm(x) > 1:"
    assert "the loop condition reads a tensor's value" in sc.reason and "bake in" in sc.reason
    assert sc.error.startswith("GuardOnDataDependentSymNode: ") and "\n" not in sc.error


def test_refusal_prints_nothing(capfd):
    b = built("fancy_mlp")
    static_capture(b, example_inputs(b))
    captured = capfd.readouterr()
    assert captured.out == "" and captured.err == ""


def test_nested_dynamic_spec_points_into_the_included_file():
    b = built("nest_mlp")
    sc = static_capture(b, example_inputs(b))
    assert not sc.capturable and sc.line == "configs/fancy_mlp.yaml:14"


def test_a_trace_bakes_in_the_branch():
    b = built("fancy_mlp")
    inputs = example_inputs(b)
    baked = baked_branch(b, inputs, scale=100.0)
    assert baked.differs
    with torch.no_grad():
        assert baked.eager == pytest.approx(float(b.module(inputs["x"] * 100)), rel=1e-5)
    # and on an input the trace's branches suit, the trace agrees
    same = baked_branch(b, inputs, scale=1.0)
    assert not same.differs


def test_static_view_draws_with_the_same_renderers():
    from cgtool.render.graph_dot import to_dot
    from cgtool.render.graph_json import graph_json

    b = built("mlp")
    view = static_view(static_capture(b, example_inputs(b)), title="MLP, static")
    data = graph_json(view)
    assert {n["label"] for n in data["nodes"]} >= {"x", "hidden.weight", "hidden/linear", "output/linear_1"}
    assert "digraph" in to_dot(view)
