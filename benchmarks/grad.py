"""`cgtool grad`'s capture vs plain torch on the same expression: what reading the graph costs.

    python benchmarks/grad.py [--trials 15]

For each expression, side by side and interleaved (A B A B ...), the median wall time of
- capture: `explain()` — compile in capture mode, run once on float64 leaves, read the
  labelled graph from autograd, count paths, list the top 20, sum over paths, check;
- torch: the same program compiled as a plain forward, run once, and `torch.autograd.grad`
  of the root with respect to every leaf — the floor: what any tool must at least do.
The ratio says what the labelled graph and the path answers cost on top of autograd.
"""
from __future__ import annotations

import argparse
import ast
import pathlib
import statistics
import sys
import time

import torch

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))

from cgtool import lang  # noqa: E402
from cgtool.graph.expression import parse_expression  # noqa: E402
from cgtool.graph.gradients import explain  # noqa: E402


def chain(n: int) -> str:
    return "; ".join(["h0 = w"] + [f"h{i} = h{i - 1} * w + h{i - 1}" for i in range(1, n + 1)])


CASES = {
    "lesson (x1 + w) * (x2 + w)": ("y = (x1 + w) * (x2 + w)", {"x1": 1.0, "x2": 2.0, "w": 3.0}),
    "chain of 40 (2^40 paths)": (chain(40), {"w": 0.3}),
    "loop of 1,000 steps": ("y = x\nfor i in range(1000):\n    y = y * 1.001 + x", {"x": 0.5}),
}


def plain(text: str, values: dict):
    program = parse_expression(text)
    if not program.has_return:  # the root is the last name assigned at the top level
        last = [s.targets[0].id for s in program.tree.body if isinstance(s, ast.Assign)][-1]
        program = parse_expression(f"{text}\nreturn {last}")
    fn = lang.compile_forward(program, name="plain", params=program.free, prelude=[], namespace={},
                              with_self=False).fn

    def run():
        leaves = [torch.tensor(values[n], dtype=torch.float64, requires_grad=True) for n in program.free]
        torch.autograd.grad(fn(*leaves), leaves)

    return run


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--trials", type=int, default=15)
    args = ap.parse_args()
    torch.set_num_threads(1)
    print("| expression | capture ms | torch ms | ratio |\n|---|---:|---:|---:|")
    for name, (text, values) in CASES.items():
        floor = plain(text, values)
        a, b = [], []
        for _ in range(args.trials):
            t = time.perf_counter()
            explain(text, values)
            a.append(time.perf_counter() - t)
            t = time.perf_counter()
            floor()
            b.append(time.perf_counter() - t)
        ma, mb = statistics.median(a) * 1e3, statistics.median(b) * 1e3
        print(f"| {name} | {ma:.2f} | {mb:.2f} | {ma / mb:.1f} |")


if __name__ == "__main__":
    main()
