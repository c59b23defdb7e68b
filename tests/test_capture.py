"""One capture: graphs read from torch's autograd graph, for expressions and for specs, checked against torch."""
import glob

import pytest
import torch

from cgtool.build.inputs import example_inputs
from cgtool.build.model import build_model
from cgtool.graph import paths as P
from cgtool.graph.capture import capture_model
from cgtool.graph.expression import evaluate, parse_expression
from cgtool.graph.gradients import explain
from tests.test_lang import CASES


def as_expression(body: str) -> str:
    """The forward case as an expression with a scalar root: the returned value, summed."""
    head, _, returned = body.rpartition("return ")
    return f"{head}return sum({returned})"


@pytest.mark.parametrize("body,fn", CASES, ids=[c[0][:40] for c in CASES])
def test_every_forward_case_runs_as_an_expression_and_agrees_with_torch(body, fn):
    """The differential test: the same program as a compiled forward and as a grad expression."""
    torch.manual_seed(0)
    x = torch.randn(2, 3, dtype=torch.float64, requires_grad=True)
    y = torch.randn(2, 3, dtype=torch.float64, requires_grad=True)
    program = parse_expression(as_expression(body))
    values = {"x": x.detach(), "y": y.detach()}
    ev = evaluate(program, {k: v for k, v in values.items() if k in program.free})
    expected = fn(x, y).sum()
    assert ev.root.value.item() == pytest.approx(expected.item(), rel=1e-12, abs=1e-12)
    ev.graph.lint()
    for name, leaf in ev.leaves.items():
        want = torch.autograd.grad(expected, {"x": x, "y": y}[name], retain_graph=True, allow_unused=True)[0]
        want = torch.zeros_like(x) if want is None else want
        got = P.sum_over_paths(ev.graph, ev.root.id, leaf.id)
        got = torch.as_tensor(got, dtype=torch.float64).expand_as(want)
        assert torch.allclose(got, want, rtol=1e-9, atol=1e-12), (name, got, want)


def test_non_differentiable_operation_is_a_node_without_gradient_edges():
    report = explain("y = x // 0.3 + x", {"x": 1.0})
    assert "x // 0.3" in report.nondifferentiable
    data = [e for e in report.edges if not e.differentiable]
    assert [(e.src, e.dst) for e in data] == [("x // 0.3", "x"), ("y", "x // 0.3")]
    (g,) = report.gradients
    assert g.path_count == 1 and g.match and g.autograd == 1.0


@pytest.mark.parametrize("text", ["y = ceil(x) * x", "y = floor(x) * x", "y = x.round() * x", "y = sign(x) * x"])
def test_steps_with_zero_derivative_are_data_edges(text):
    report = explain(text, {"x": 1.7})
    assert len(report.nondifferentiable) == 1
    (g,) = report.gradients
    assert g.path_count == 1 and g.match  # only the direct use of x carries a gradient


def test_floor_division_alone_has_zero_gradient_not_an_internal_error():
    (g,) = explain("y = x // 0.3", {"x": 1.0}).gradients
    assert g.path_count == 0 and g.autograd == 0.0 and g.sum_over_paths == 0.0 and g.match


def test_rebinding_a_leaf_versions_it():
    report = explain("x = x * 2; y = x * w", {"x": 1.0, "w": 2.0}, wrt=["x", "w"])
    gx, gw = report.gradients
    assert [p.nodes for p in gx.paths] == [["y", "x#2", "x"]]
    assert gx.autograd == 4.0 and gx.match and gw.autograd == 2.0


def test_composite_operation_is_one_node_with_one_edge_per_operand():
    # torch runs 2 / w as w.reciprocal() * 2: still one node, and the symbolic rule of `/` applies
    (g,) = explain("y = 2 / w", {"w": 4.0}).gradients
    assert [p.nodes for p in g.paths] == [["y", "w"]]
    assert g.symbolic == "-(2 / w ** 2)"
    assert g.match and g.autograd == pytest.approx(-2 / 16)


def fancy():
    built = build_model(open("configs/fancy_mlp.yaml").read(), file="configs/fancy_mlp.yaml")
    return built, capture_model(built, example_inputs(built))


def test_fancy_mlp_capture_names_module_calls_parameters_and_lines():
    built, cap = fancy()
    labels = {n.label: n for n in cap.graph.nodes}
    assert {"linear#1", "linear#2", "linear.weight", "linear.bias", "x", "rand_weight"} <= set(labels)
    assert labels["linear.weight"].kind == "parameter" and labels["rand_weight"].kind == "constant"
    assert labels["linear#1"].kind == labels["linear#2"].kind == "module"
    assert labels["linear#2"].info.loc.startswith("configs/fancy_mlp.yaml:")
    assert "x#2" in cap.names  # x = relu(mm(x, rand_weight) + 1): the forward's own variable
    root = cap.node_of(cap.returned)
    # the shared layer is used twice: one path per use
    assert P.count_paths(cap.graph, root.id, labels["linear.weight"].id) == 2
    (want,) = torch.autograd.grad(cap.returned, built.module.linear.weight, retain_graph=True)
    got = P.sum_over_paths(cap.graph, root.id, labels["linear.weight"].id)
    assert torch.allclose(got, want, rtol=1e-5, atol=1e-6)


def test_tied_weight_gets_one_path_per_use():
    built = build_model(open("configs/tied_linear.yaml").read(), file="configs/tied_linear.yaml")
    cap = capture_model(built, example_inputs(built))
    root = cap.node_of(cap.returned)
    weight = next(n for n in cap.graph.nodes if n.kind == "parameter" and n.label.endswith("weight"))
    out = cap.returned.sum()
    root_graph = cap.graph
    # the output is not a scalar: the sum over paths of a cotangent of ones equals the gradient of its sum
    assert P.count_paths(root_graph, root.id, weight.id) == 2
    (want,) = torch.autograd.grad(out, cap.nodes[("tensor", id(weight.value))].value, retain_graph=True)
    assert torch.allclose(P.sum_over_paths(root_graph, root.id, weight.id), want, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("config", sorted(c for c in glob.glob("configs/*.yaml")
                                          if "llama7b" not in c and "gpt2_small" not in c))
def test_every_config_captures_a_graph_that_passes_lint(config):
    built = build_model(open(config).read(), file=config, args={})
    cap = capture_model(built, example_inputs(built))
    cap.graph.lint()
    root = cap.node_of(cap.returned if isinstance(cap.returned, torch.Tensor) else cap.returned[0])
    assert root is not None
    params = [n for n in cap.graph.nodes if n.kind == "parameter"]
    assert params and all(P.count_paths(cap.graph, root.id, p.id) >= 0 for p in params)


def test_a_step_with_no_derivative_stays_a_name_in_symbolic_forms():
    (g,) = explain("y = floor(x) * x", {"x": 1.5}).gradients
    assert g.symbolic == "floor(x)" and g.autograd == 1.0
    report = explain("x = x * 2; y = x // 0.3 + x * w", {"x": 1.0, "w": 2.0}, wrt=["x"])
    assert report.gradients[0].symbolic == "w * 2" and report.gradients[0].autograd == 4.0


def test_nested_spec_forwards_are_captured_with_their_own_names_and_lines():
    built = build_model(open("configs/resnet_small.yaml").read(), file="configs/resnet_small.yaml")
    inputs = example_inputs(built)
    cap = capture_model(built, inputs)
    node = cap.names["stage1.0/out#1"]  # `out = relu(bn1(conv1(x)))` inside the block spec, first version
    assert node.kind == "op" and node.info.loc == "configs/resnet_block.yaml:16:9"
    assert cap.names["stage1.0/out#2"].label == "stage1.0.bn2#1"  # `out = bn2(...)`: the module call names it
    adds = [n for n in cap.graph.nodes if n.label.startswith("stage1.0/out + shortcut(x)")]
    assert adds and adds[0].info.loc.startswith("configs/resnet_block.yaml:18:")
    # the swap is undone: the class's own compiled forward runs again, with the same answer
    assert all("forward" not in vars(m) for m in built.module.modules())
    built.module.eval()
    with torch.no_grad():
        again = built.module(inputs["x"])
    assert torch.allclose(again, cap.returned.detach(), atol=1e-6)


def test_a_module_call_names_the_value_it_returns():
    built = build_model(open("configs/nest_mlp.yaml").read(), file="configs/nest_mlp.yaml")
    cap = capture_model(built, example_inputs(built))
    root = cap.node_of(cap.returned)
    assert root.label == "2#1" and root.kind == "module"
    assert cap.names["2/x#2"].label == "2/x#2"  # FancyMLP's variables, under its name in the Sequential


def test_library_capture_of_a_spec():
    import cgtool

    cap = cgtool.capture("configs/fancy_mlp.yaml", seed=3)
    assert {"linear#1", "linear#2"} <= {n.label for n in cap.graph.nodes}
    weight = cap.names["linear.weight"]
    assert P.count_paths(cap.graph, cap.node_of(cap.returned).id, weight.id) == 2
