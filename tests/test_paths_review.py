"""`cgtool paths`: the findings of the review of issue 8, each as the user met it (CLI) or as a unit."""
from __future__ import annotations

import json
import math
import random

import pytest
import torch
from typer.testing import CliRunner

import cgtool
from cgtool.cli import app
from cgtool.graph import paths as P
from cgtool.graph import spectrum as S
from cgtool.graph.expression import evaluate, parse_expression

ENV = {"COLUMNS": "80", "NO_COLOR": "1"}


def cli(*args, code=0, input=None):
    r = CliRunner().invoke(app, ["paths", *args], env=ENV, input=input)
    assert r.exit_code == code, f"exit {r.exit_code}\nstdout:\n{r.stdout}\nstderr:\n{r.stderr}"
    if code == 1:
        assert r.stderr.startswith("error: ") and "Traceback" not in r.stderr and r.stderr.count("\n") <= 2
    return r


def chain(n: int, width: int = 2) -> str:
    return f"""
name: Chain
kind: modulelist
inputs: {{x: [1, {width}]}}
layers:
  - {{type: Linear, in_features: {width}, out_features: {width}, repeat: {n}}}
forward: |
  for layer in layers:
      x = x + layer(x)
  return x
"""


from tests.test_paths_cli import RESIDUAL  # noqa: E402 - the 6-block residual chain of Linear + Tanh


# --------------------------------------------------------------------------- 1. no overflow in the spectrum


def cancelling_chain(n: int):
    """h = h + h @ W_i with W_i = -2 I: every block multiplies by I + W = -I, so the gradient is +-1, while the
    paths of length L sum to C(n, L) (-2)^L -- up to 1e41 for n = 90, past float32's 3.4e38."""
    text = "h = x" + "".join(f"; h = h + h @ W{i}" for i in range(n)) + "; y = sum(h)"
    values = {"x": torch.ones(1, 2), **{f"W{i}": -2 * torch.eye(2) for i in range(n)}}
    ev = evaluate(parse_expression(text), values)
    return ev, ev.graph, ev.root.id, ev.leaves["x"].id


def test_float32_spectrum_far_past_float32_range_is_exact():
    n = 90
    ev, g, root, x = cancelling_chain(n)
    rows = S.length_spectrum(g, root, x, lambda node: node.op == "@")
    assert [r.length for r in rows] == list(range(n + 1))
    for r in rows:
        want = math.comb(n, r.length) * (-2.0) ** r.length
        assert r.count == math.comb(n, r.length)
        torch.testing.assert_close(r.contribution, torch.full((1, 2), want, dtype=torch.float64), rtol=1e-5, atol=0)
    assert max(abs(float(r.contribution[0, 0])) for r in rows) > 3.4e38


def test_cli_says_a_cancelling_spectrum_is_not_checkable():
    from cgtool.graph.model_paths import ParameterPaths, _spectrum  # noqa: F401 - the verdict is unit-tested here
    n = 90
    ev, g, root, x = cancelling_chain(n)
    result = ParameterPaths("x", "y", None, "op", 2**n, 2**0.5, True, "sum over all paths", [], 2**n)
    grad = torch.autograd.grad(ev.root.value, ev.leaves["x"].value, retain_graph=True)[0]
    _spectrum(result, g, g.nodes[root], g.nodes[x], lambda node: node.op == "@", P.path_counts(g, root, x), grad,
              torch.float32, 0, 0, lambda *a: None)
    assert result.by_length_matches is None
    assert result.by_length_check.startswith("not checkable in float32: the per-length sums reach")


def test_scaled_block_arithmetic_is_exact():
    U = torch.tensor([[3.0, -1.0], [0.0, 0.0], [1e-30, 2e-30]])
    b = S._Block.normalized(0, U, torch.tensor([200, 0, -300]), torch.float32)
    for i, row in enumerate(U.double()):
        want = row * 2.0 ** [200, 0, -300][i]
        assert torch.equal(b.value(i), want)
    assert float(b.U.abs().amax(dim=1)[0]) == 0.75  # max |row| in [0.5, 1)
    c = b.plus(S._Block(1, torch.ones(3, 2), torch.zeros(3, dtype=torch.int64)))
    assert c.lo == 0 and len(c) == 4
    torch.testing.assert_close(c.value(1), torch.ones(2, dtype=torch.float64), rtol=0, atol=0)
    torch.testing.assert_close(c.value(3), torch.ones(2, dtype=torch.float64), rtol=0, atol=0)


def test_spectrum_of_a_long_chain_is_fast_enough_to_run_in_tests():
    spec = chain(300)
    data = json.loads(cli("-", "--wrt", "x", "--by-length", "--max-paths", "2", "--json", input=spec).stdout)
    assert len(data["by_length"]) == 301 and data["sum_matches_grad"]


# --------------------------------------------------------------------------- 2. constants


def test_a_constant_has_its_path_and_gradient():
    data = json.loads(cli("configs/fancy_mlp.yaml", "--wrt", "rand_weight", "--json").stdout)
    assert data["path_count"] == 1 and data["sum_matches_grad"]
    built = cgtool.build_model(open("configs/fancy_mlp.yaml").read(), file="f")
    from cgtool.build.inputs import example_inputs

    w = built.module.rand_weight.detach().clone().requires_grad_(True)
    built.module.rand_weight = w  # the same forward, with the constant as a leaf that wants a gradient
    out = built.module(*example_inputs(built).values())
    (g,) = torch.autograd.grad(out, w)
    assert data["grad_norm"] == pytest.approx(float(g.norm()), rel=1e-5)


def test_capture_leaves_constants_as_they_were():
    from cgtool.api import capture

    built_cap = capture("configs/fancy_mlp.yaml")
    assert built_cap.names["rand_weight"].kind == "constant"
    built = cgtool.build_model(open("configs/fancy_mlp.yaml").read(), file="f")
    from cgtool.build.inputs import example_inputs
    from cgtool.graph.capture import capture_model

    capture_model(built, example_inputs(built))
    assert not built.module.rand_weight.requires_grad
    assert [n for n, _ in built.module.named_parameters()] == ["linear.weight", "linear.bias"]


# --------------------------------------------------------------------------- 3. dtypes


@pytest.mark.parametrize("dtype", ["float16", "bfloat16", "float64"])
def test_check_follows_the_dtype(dtype):
    data = json.loads(cli("configs/fancy_mlp.yaml", "--wrt", "linear.weight", "--dtype", dtype, "--json").stdout)
    assert data["sum_matches_grad"] is True


# --------------------------------------------------------------------------- 5, 6. top paths: fast, order said


def test_contributions_share_prefixes_and_equal_one_by_one():
    ev = evaluate(parse_expression("h = x" + "".join(f"; h = h + relu(h @ W{i})" for i in range(6)) + "; y = sum(h)"),
                  {"x": torch.randn(3, 4, dtype=torch.float64),
                   **{f"W{i}": torch.randn(4, 4, dtype=torch.float64) / 2 for i in range(6)}})
    g, root, x = ev.graph, ev.root.id, ev.leaves["x"].id
    paths = P.all_paths(g, root, x, limit=100)
    random.Random(0).shuffle(paths)
    shared = P.contributions(g, paths)
    for p, c in zip(paths, shared):
        torch.testing.assert_close(c, P.contribution(g, p))
    assert P.prefix_steps(paths) < sum(len(p.edges) for p in paths) / 2


def test_exact_and_approximate_order_are_reported():
    exact = json.loads(cli("-", "--wrt", "x", "--json", input=RESIDUAL).stdout)
    assert exact["order"] == "exact"
    many = json.loads(cli("-", "--wrt", "x", "--json", "--max-paths", "3", input=chain(40)).stdout)
    assert many["order"] == "approximate" and len(many["paths"]) == 3
    text = cli("-", "--wrt", "x", "--max-paths", "3", input=chain(40)).stdout
    assert "order is approximate" in text


def test_heuristic_listing_finds_the_largest_path_of_a_small_chain():
    # 2^10 paths (past the exact limit of 512): the best-first search with the linear pass's gains
    # still finds the true largest path, checked against all of them one by one
    from cgtool.graph import model_paths as MP
    from cgtool.build.inputs import example_inputs
    from cgtool.graph.capture import capture_model

    built = cgtool.build_model(chain(10, width=3), file="c")
    cap = capture_model(built, example_inputs(built))
    r = MP.rooted(cap, root=None, loss="sum", level="module", keep_also={cap.names["x"].id})
    t = r.ids[cap.names["x"].id]
    listing = P.top_paths(r.graph, r.root.id, t, 1)
    everything = P.all_paths(r.graph, r.root.id, t, limit=5000)
    best = max(float(c.double().norm()) for c in P.contributions(r.graph, everything))
    assert float(listing.contributions[0].double().norm()) == pytest.approx(best, rel=1e-6)


# --------------------------------------------------------------------------- 7. JSON nulls


def test_share_is_null_when_the_gradient_is_zero():
    rows = __import__("cgtool.graph.model_paths", fromlist=["x"]).spectrum_shares(
        [S.LengthRow(0, 1, 0.0)], 0.0)
    assert rows == [{"length": 0, "count": 1, "contribution_norm": 0.0, "share": None}]


# --------------------------------------------------------------------------- 8, 9, 10, 13. bad options


@pytest.mark.parametrize("args,needles", [
    (["--wrt", "x", "--count", "nothing.*"], ["'nothing.*' matches no module", "modules:"]),
    (["--wrt", "x", "--count", ""], ["matches no module"]),
    (["--wrt", "x", "--depth", "7"], ["no module with parameters at depth 7", "depths with such modules: 1, 2"]),
    (["--wrt", "x", "--depth", "2", "--count", "*.0"], ["--count and --depth"]),
    (["--all", "--wrt", "x"], ["--all lists every parameter", "--wrt"]),
    (["--all", "--by-length"], ["--by-length"]),
    (["--all", "--max-paths", "3"], ["--max-paths"]),
    (["--all", "--sample", "3"], ["--sample"]),
    (["--wrt", "x", "--root", "nope"], ["no value named 'nope'", "forward values that exist", "x#"]),
    (["--wrt", "x", "--root", ""], ["--root '':"]),
])
def test_bad_options_are_errors(args, needles):
    r = cli("-", *args, code=1, input=RESIDUAL)
    for needle in needles:
        assert needle in r.stderr, (needle, r.stderr)


def test_depth_alone_turns_the_spectrum_on():
    data = json.loads(cli("-", "--wrt", "x", "--depth", "2", "--json", input=RESIDUAL).stdout)
    assert [r["count"] for r in data["by_length"]] == [math.comb(6, k) for k in range(7)]


def test_a_model_over_the_memory_cap_is_refused_without_suggesting_meta():
    r = cli("configs/llama7b.yaml", "--wrt", "x", code=1)
    assert "--device meta" not in r.stderr and "--max-memory" in r.stderr


# --------------------------------------------------------------------------- 11. tied names


def test_a_tied_alias_resolves_to_the_shared_tensor():
    by_alias = json.loads(cli("configs/tied_linear.yaml", "--wrt", "l2.weight", "--json").stdout)
    by_name = json.loads(cli("configs/tied_linear.yaml", "--wrt", "l1.weight", "--json").stdout)
    assert by_alias["same_tensor_as"] == "l1.weight" and by_name["same_tensor_as"] is None
    assert by_alias["path_count"] == by_name["path_count"] == 2
    assert by_alias["grad_norm"] == by_name["grad_norm"] and by_alias["sum_matches_grad"]
    text = cli("configs/tied_linear.yaml", "--wrt", "l2.weight").stdout
    assert "l2.weight is tied: the same tensor as l1.weight" in text
    rows = json.loads(cli("configs/tied_linear.yaml", "--all", "--json").stdout)["parameters"]
    assert rows[0]["name"] == "l1.weight" and rows[0]["tied"] == ["l2.weight"]


# --------------------------------------------------------------------------- 12, 16. roots and reasons


ROOTED = """
name: Rooted
kind: module
inputs: {x: [2, 4]}
modules:
  a: Linear(4, 4)
  b: Linear(4, 4)
  c: Linear(4, 4)
forward: |
  h = a(x)
  k = c(x) // 1
  y = b(h)
  return y + k
"""


def test_all_with_root_says_what_the_root_is():
    data = json.loads(cli("-", "--all", "--root", "h", "--json", input=ROOTED).stdout)
    why = {p["name"]: p["why"] for p in data["parameters"]}
    assert why["a.weight"] is None
    assert "only after --root h is computed" in why["b.weight"] and "only after" in why["c.weight"]
    text = cli("-", "--all", "--root", "h", input=ROOTED).stdout
    assert "--root is not a scalar: reduced with --loss sum" in text and "the output is not" not in text


def test_zero_paths_say_why():
    data = json.loads(cli("-", "--wrt", "c.weight", "--json", input=ROOTED).stdout)
    assert data["path_count"] == 0 and "only through operations with no derivative" in data["reason"]
    data = json.loads(cli("-", "--wrt", "b.weight", "--root", "h", "--json", input=ROOTED).stdout)
    assert data["path_count"] == 0 and data["reason"].startswith("no path reaches b.weight")
    text = cli("-", "--wrt", "x", "--root", "x").stdout if False else cli("-", "--wrt", "a.weight", "--root", "x",
                                                                          input=ROOTED).stdout
    assert "root sum(x) (--root is not a scalar" in text and "no path reaches a.weight" in text


# --------------------------------------------------------------------------- 14. sampling per length


def test_sampling_draws_every_length_uniformly_within_it():
    ev = evaluate(parse_expression("a = x * x; b = a + x; c = sin(b) + b"), {"x": 0.5})
    g, root, x = ev.graph, ev.root.id, ev.leaves["x"].id
    counted = lambda n: n.op in ("*", "sin")  # noqa: E731
    counts = P.path_counts(g, root, x)
    flags = S._flags(g, root, x, counted, counts)
    bits = S._width(counts, root)
    polys = S._suffix_polys(g, root, x, flags, counts, bits)
    by_length = S.length_counts(g, root, x, counted)
    rng = random.Random(3)
    for L, n in by_length.items():
        seen = {}
        for _ in range(600 * n):
            p = S.sample_path_of_length(g, root, x, L, rng, flags=flags, counts=counts, polys=polys, bits=bits)
            nodes = P.path_nodes(g, p, root)[:-1]
            assert sum(1 for v in nodes if counted(g.nodes[v])) == L
            seen[p.edges] = seen.get(p.edges, 0) + 1
        assert len(seen) == n
        assert all(450 < k < 750 for k in seen.values()), seen


def test_sampled_estimate_covers_every_length_and_follows_the_seed():
    a = json.loads(cli("-", "--wrt", "x", "--sample", "3", "--json", input=RESIDUAL).stdout)["by_length"]
    b = json.loads(cli("-", "--wrt", "x", "--sample", "3", "--seed", "0", "--json", input=RESIDUAL).stdout)["by_length"]
    c = json.loads(cli("-", "--wrt", "x", "--sample", "3", "--seed", "5", "--json", input=RESIDUAL).stdout)["by_length"]
    assert all(r["sampled_mean_path_norm"] is not None for r in a)  # the rare lengths 0 and 6 too
    assert a == b
    assert [r["sampled_mean_path_norm"] for r in a] != [r["sampled_mean_path_norm"] for r in c]
    for r in a:
        assert r["sampled_estimate_norm"] == pytest.approx(r["sampled_mean_path_norm"] * r["count"])
        assert r["contribution_norm"] <= r["sampled_estimate_norm"] * (1 + 1e-6) or r["count"] > 3


# --------------------------------------------------------------------------- 15. wide counts


def test_exact_counts_are_not_cut_at_80_columns():
    text = cli("-", "--wrt", "x", "--by-length", "--max-paths", "0", input=chain(300)).stdout
    row = text.split("\n150 ", 1)[1]
    assert "…" not in text and "93,759,702,772" in row and "861,424" in row  # C(300, 150), folded, not cut


# --------------------------------------------------------------------------- the progress bar


def test_progress_bar_shows_stage_and_fraction_on_a_terminal(monkeypatch):
    import io

    from rich.console import Console

    import cgtool.render.progress as progress_module

    buf = io.StringIO()
    monkeypatch.setattr(progress_module, "err", lambda: Console(file=buf, force_terminal=True, width=80,
                                                                color_system=None))
    with progress_module.StageProgress(delay_s=0.0) as progress:
        progress("capturing the forward pass")
        progress("the path-length spectrum", 0.5)
        progress.progress.refresh()
    text = buf.getvalue()
    assert "the path-length spectrum" in text and "50%" in text


def test_no_progress_bar_off_a_terminal_or_under_a_second(monkeypatch):
    import io

    from rich.console import Console

    import cgtool.render.progress as progress_module

    buf = io.StringIO()
    monkeypatch.setattr(progress_module, "err", lambda: Console(file=buf, force_terminal=False, width=80))
    with progress_module.StageProgress(delay_s=0.0) as progress:
        progress("the path-length spectrum", 0.5)
    monkeypatch.setattr(progress_module, "err", lambda: Console(file=buf, force_terminal=True, width=80))
    with progress_module.StageProgress(delay_s=60.0) as progress:
        progress("the path-length spectrum", 0.5)
    assert buf.getvalue() == ""


def test_no_progress_bar_with_json(monkeypatch):
    import io

    from rich.console import Console

    import cgtool.render.progress as progress_module

    buf = io.StringIO()
    monkeypatch.setattr(progress_module, "err", lambda: Console(file=buf, force_terminal=True, width=80))
    with progress_module.StageProgress(delay_s=0.0, enabled=False) as progress:
        progress("the path-length spectrum", 0.5)
    assert buf.getvalue() == ""


def test_rooting_twice_adds_one_loss_node():
    from cgtool.build.inputs import example_inputs
    from cgtool.graph.capture import capture_model
    from cgtool.graph.model_paths import rooted

    built = cgtool.build_model(open("configs/mlp.yaml").read(), file="configs/mlp.yaml")
    cap = capture_model(built, example_inputs(built))
    first = rooted(cap, root=None, loss="sum", level="op")
    second = rooted(cap, root=None, loss="sum", level="op")
    assert first.root is second.root
    cap.graph.lint()  # labels stay unique


def test_a_long_single_stage_still_gets_its_spinner(monkeypatch):
    import io
    import time

    from rich.console import Console

    import cgtool.render.progress as progress_module

    buf = io.StringIO()
    monkeypatch.setattr(progress_module, "err", lambda: Console(file=buf, force_terminal=True, width=80,
                                                                color_system=None))
    with progress_module.StageProgress(delay_s=0.05) as progress:
        progress("compiling with torch.compile")  # called once, before the delay: the timer shows it
        time.sleep(0.4)
        assert progress.progress is not None
        progress.progress.refresh()
    assert "compiling with torch.compile" in buf.getvalue()
