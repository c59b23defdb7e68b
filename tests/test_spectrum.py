"""The length spectrum of the gradient (issue 8, ``--by-length``) and Veit et al.'s sampled estimate.

Residual chains ``h = h + tanh(w_i * h)`` (scalars) and ``h = h + relu(h @ W_i)``
(tensors): a path from the root to the input goes, at every block, either along the
skip connection or through the block's branch, so there are 2**n paths and C(n, L) of
them have length L when the counted nodes are the blocks' outputs (``tanh``/``relu``).
"""
from __future__ import annotations

import math
import random
from collections import Counter

import pytest
import torch

from cgtool.graph import paths as P
from cgtool.graph import spectrum as S
from cgtool.graph.expression import evaluate, parse_expression
from cgtool.graph.model import Graph


def tanh_block(node) -> bool:
    return node.op == "tanh"


def relu_block(node) -> bool:
    return node.op == "relu"


def scalar_chain(n: int, x: float = 0.3):
    text = "h = x" + "".join(f"; h = h + tanh(w{i} * h)" for i in range(n))
    values = {"x": x, **{f"w{i}": 0.9 - 0.15 * i for i in range(n)}}
    return evaluate(parse_expression(text), values)


def tensor_chain(n: int, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    text = "h = x" + "".join(f"; h = h + relu(h @ W{i})" for i in range(n)) + "; y = sum(h)"
    values = {"x": torch.randn(3, 4, generator=gen, dtype=torch.float64),
              **{f"W{i}": torch.randn(4, 4, generator=gen, dtype=torch.float64) / 2 for i in range(n)}}
    return evaluate(parse_expression(text), values)


def autograd(ev, name: str) -> torch.Tensor:
    return torch.autograd.grad(ev.root.value, ev.leaves[name].value, retain_graph=True)[0]


def brute_force(graph, root, target, counted) -> dict[int, tuple[int, object]]:
    """{length: (count, summed contribution)} from every path, one by one."""
    out: dict[int, tuple[int, object]] = {}
    for path in P.all_paths(graph, root, target, limit=10_000):
        nodes = P.path_nodes(graph, path, root)[:-1]  # the target is never counted
        length = sum(1 for v in nodes if counted(graph.nodes[v]))
        c = P.contribution(graph, path)
        count, total = out.get(length, (0, 0.0))
        out[length] = (count + 1, c if count == 0 else total + c)
    return out


def close(a, b, rel=1e-9, abs_=1e-12) -> bool:
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        return torch.allclose(torch.as_tensor(a, dtype=torch.float64), torch.as_tensor(b, dtype=torch.float64),
                              rtol=rel, atol=abs_)
    return a == pytest.approx(b, rel=rel, abs=abs_)


# --------------------------------------------------------------------------- exact spectrum


@pytest.mark.parametrize("n", [1, 3, 8])
def test_scalar_chain_spectrum(n):
    ev = scalar_chain(n)
    g, root, x = ev.graph, ev.root.id, ev.leaves["x"].id
    rows = S.length_spectrum(g, root, x, tanh_block)
    assert [r.length for r in rows] == list(range(n + 1))
    assert [r.count for r in rows] == [math.comb(n, L) for L in range(n + 1)]
    assert all(isinstance(r.count, int) and isinstance(r.contribution, float) for r in rows)
    assert sum(r.count for r in rows) == P.count_paths(g, root, x) == 2**n
    total = sum(r.contribution for r in rows)
    assert total == pytest.approx(P.sum_over_paths(g, root, x), rel=1e-12)
    assert total == pytest.approx(float(autograd(ev, "x")), rel=1e-12)
    # the same numbers path by path, grouped by length
    brute = brute_force(g, root, x, tanh_block)
    assert sorted(brute) == [r.length for r in rows]
    for r in rows:
        assert brute[r.length][0] == r.count
        assert close(brute[r.length][1], r.contribution)


@pytest.mark.parametrize("n", [2, 6])
def test_tensor_chain_spectrum(n):
    ev = tensor_chain(n)
    g, root, x = ev.graph, ev.root.id, ev.leaves["x"].id
    rows = S.length_spectrum(g, root, x, relu_block)
    assert [(r.length, r.count) for r in rows] == [(L, math.comb(n, L)) for L in range(n + 1)]
    for r in rows:
        assert isinstance(r.contribution, torch.Tensor) and r.contribution.shape == (3, 4)
    total = sum(r.contribution for r in rows)
    assert close(total, P.sum_over_paths(g, root, x))
    assert close(total, autograd(ev, "x"))
    brute = brute_force(g, root, x, relu_block)
    assert sorted(brute) == [r.length for r in rows]
    for r in rows:
        assert brute[r.length][0] == r.count
        assert close(brute[r.length][1], r.contribution)


def test_tensor_chain_to_a_weight():
    # every path to W1 goes through block 1's branch, then skips or enters each of blocks 2 and 3
    n = 4
    ev = tensor_chain(n, seed=3)
    g, root, w = ev.graph, ev.root.id, ev.leaves["W1"].id
    counts = P.path_counts(g, root, w)
    rows = S.length_spectrum(g, root, w, relu_block, counts=counts)
    assert [(r.length, r.count) for r in rows] == [(1, 1), (2, 2), (3, 1)]
    assert sum(r.count for r in rows) == counts[root]
    brute = brute_force(g, root, w, relu_block)
    assert {L: c for L, (c, _) in brute.items()} == {r.length: r.count for r in rows}
    assert min(r.length for r in rows) == 1
    for r in rows:
        assert r.contribution.shape == (4, 4)
        assert close(brute[r.length][1], r.contribution)
    assert close(sum(r.contribution for r in rows), autograd(ev, "W1"))


def test_root_counted_target_not():
    ev = evaluate(parse_expression("a = tanh(x); y = tanh(a)"), {"x": 0.4})
    g, y, x = ev.graph, ev.root.id, ev.leaves["x"].id
    a_id = g.edges[g.operands[y][0]].dst
    assert g.nodes[a_id].op == "tanh"
    [row] = S.length_spectrum(g, y, x, tanh_block)
    assert (row.length, row.count) == (2, 1)  # y and a; the leaf x is not a block
    [row] = S.length_spectrum(g, y, a_id, tanh_block)
    assert (row.length, row.count) == (1, 1)  # y only: the target a is excluded
    [row] = S.length_spectrum(g, y, y, tanh_block)
    assert (row.length, row.count, row.contribution) == (0, 1, 1.0)
    assert S.length_counts(g, y, x, tanh_block) == {2: 1}


def test_no_path():
    ev = evaluate(parse_expression("a = tanh(x); y = a * w"), {"x": 0.4, "w": 2.0})
    g, x, y, w = ev.graph, ev.leaves["x"].id, ev.root.id, ev.leaves["w"].id
    assert S.length_spectrum(g, x, y, tanh_block) == []  # the target above the root
    assert S.sample_path_magnitudes(g, x, y, tanh_block, 10) == {}
    assert S.length_counts(g, x, y, tanh_block) == {}
    a = g.edges[g.operands[y][0]].dst  # tanh(x) does not read w
    assert S.length_spectrum(g, a, w, tanh_block) == []


def test_shared_operand_counts_every_slot():
    # y = w * w has two paths; lengths count nodes, so both have the same length
    ev = evaluate(parse_expression("t = tanh(w); y = t * t + w"), {"w": 0.7})
    g, y, w = ev.graph, ev.root.id, ev.leaves["w"].id
    rows = S.length_spectrum(g, y, w, tanh_block)
    assert [(r.length, r.count) for r in rows] == [(0, 1), (1, 2)]
    t = math.tanh(0.7)
    assert rows[0].contribution == pytest.approx(1.0)
    assert rows[1].contribution == pytest.approx(2 * t * (1 - t * t))


def test_infinite_derivative_leaves_missing_lengths_alone():
    # r = t1(t2(s)) + s + t3(x), s = f(x) with f'(x) = inf: at s, lengths 0 and 2 but no 1 (0 * inf
    # there must not turn into nan); at x, length 1 comes from t3 alone and stays finite
    g = Graph()
    x = g.add_node("x", torch.tensor(0.0, dtype=torch.float64), kind="input")
    s = g.add_node("s", op="sqrt", shape=())
    g.add_edge(s, x, 0, "sqrt", lambda a: a * math.inf, derivative=math.inf)
    t2 = g.add_node("t2", op="tanh", shape=())
    g.add_edge(t2, s, 0, "tanh", lambda a: a * 0.5, derivative=0.5)
    t1 = g.add_node("t1", op="tanh", shape=())
    g.add_edge(t1, t2, 0, "tanh", lambda a: a * 0.5, derivative=0.5)
    t3 = g.add_node("t3", op="tanh", shape=())
    g.add_edge(t3, x, 0, "tanh", lambda a: a * 0.25, derivative=0.25)
    r = g.add_node("r", op="+", shape=())
    for slot, v in enumerate((t1, s, t3)):
        g.add_edge(r, v, slot, "+", lambda a: a, derivative=1.0)
    rows = S.length_spectrum(g, r.id, x.id, tanh_block)
    assert [(row.length, row.count) for row in rows] == [(0, 1), (1, 1), (2, 1)]
    assert rows[0].contribution == math.inf and rows[2].contribution == math.inf
    assert rows[1].contribution == 0.25


# --------------------------------------------------------------------------- a deep chain


def deep_scalar_chain(n: int, c: float = 0.5, x: float = 0.3) -> Graph:
    """``h = h + tanh(c * h)`` n times, built node by node (no tracing: the check is the spectrum's speed)."""
    g = Graph()
    h = g.add_node("x", torch.tensor(x, dtype=torch.float64), kind="input")
    hv = x
    for i in range(n):
        m = g.add_node(f"m{i}", op="*", shape=())
        t = g.add_node(f"t{i}", op="tanh", shape=())
        tv = math.tanh(c * hv)
        dt = 1 - tv * tv
        g.add_edge(m, h, 0, "*", lambda a, c=c: a * c, derivative=c)
        g.add_edge(t, m, 0, "tanh", lambda a, d=dt: a * d, derivative=dt)
        nxt = g.add_node(f"h{i + 1}", op="+", shape=())
        g.add_edge(nxt, h, 0, "+", lambda a: a, derivative=1.0)
        g.add_edge(nxt, t, 1, "+", lambda a: a, derivative=1.0)
        h, hv = nxt, hv + tv
    return g


def test_thousand_blocks_exact():
    # its speed is measured in benchmarks/paths.py, not asserted here (shared, noisy machines)
    n = 1000
    g = deep_scalar_chain(n)
    root, x = len(g.nodes) - 1, 0
    counts = P.path_counts(g, root, x)
    rows = S.length_spectrum(g, root, x, tanh_block, counts=counts)
    assert len(rows) == n + 1
    assert [r.length for r in rows] == list(range(n + 1))
    for L in (0, 1, 2, 17, 333, 500, 999, 1000):
        assert rows[L].count == math.comb(n, L)
    assert sum(r.count for r in rows) == counts[root] == 2**n
    assert sum(r.contribution for r in rows) == pytest.approx(P.sum_over_paths(g, root, x, counts=counts), rel=1e-9)
    only = S.length_counts(g, root, x, tanh_block, counts=counts)
    assert only == {r.length: r.count for r in rows}


# --------------------------------------------------------------------------- sampling


def test_sampled_paths_are_uniform():
    # b = a + x with a = x * x: three paths; choosing an edge at random (not by counts) would give 1/4, 1/4, 1/2
    ev = evaluate(parse_expression("a = x * x; b = a + x"), {"x": 0.5})
    g, b, x = ev.graph, ev.root.id, ev.leaves["x"].id
    counts = P.path_counts(g, b, x)
    rng = random.Random(1)
    seen = Counter(S.sample_path(g, b, x, rng, counts).edges for _ in range(3000))
    assert len(seen) == 3
    assert all(850 < k < 1150 for k in seen.values()), seen


def test_sampler_on_scalar_chain():
    n = 8
    ev = scalar_chain(n)
    g, root, x = ev.graph, ev.root.id, ev.leaves["x"].id
    spectrum = {r.length for r in S.length_spectrum(g, root, x, tanh_block)}
    est = S.sample_path_magnitudes(g, root, x, tanh_block, 4000, seed=7)
    assert set(est) <= spectrum
    assert list(est) == sorted(est)
    assert all(math.isfinite(m) and m >= 0 for m in est.values())
    assert est == S.sample_path_magnitudes(g, root, x, tanh_block, 4000, seed=7)  # the seed decides
    # against the exact mean |contribution| per length, for the lengths drawn often
    brute: dict[int, list[float]] = {}
    for path in P.all_paths(g, root, x, limit=10_000):
        nodes = P.path_nodes(g, path, root)[:-1]
        L = sum(1 for v in nodes if tanh_block(g.nodes[v]))
        brute.setdefault(L, []).append(abs(P.contribution(g, path)))
    for L in (3, 4, 5):
        exact = sum(brute[L]) / len(brute[L])
        assert est[L] == pytest.approx(exact, rel=0.15)


def test_sampler_on_tensor_chain():
    n = 6
    ev = tensor_chain(n)
    g, root, x = ev.graph, ev.root.id, ev.leaves["x"].id
    spectrum = {r.length for r in S.length_spectrum(g, root, x, relu_block)}
    est = S.sample_path_magnitudes(g, root, x, relu_block, 200, seed=0)
    assert est and set(est) <= spectrum
    assert all(math.isfinite(m) and m >= 0 for m in est.values())
    assert S.sample_path_magnitudes(g, root, x, relu_block, 0) == {}
