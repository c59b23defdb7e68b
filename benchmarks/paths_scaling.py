"""Path analysis at scale: cgtool's exact path counts and top-10 paths on residual chains of 10, 100 and 1,000
blocks, beside a naive enumeration of the paths, which hits an exponential wall (issue 11).

    python benchmarks/paths_scaling.py [--trials 3] [--blocks 10,100,1000] [--naive-max 20] [--cap 10] [--smoke]

The model: a chain of n residual blocks `x = x + layer(x)`, each layer a Linear(2, 2), one input of shape
[1, 2]; the root is sum(output) and the target the input x: 2^n paths (each block is either taken or skipped).
Part 1, cgtool (one thread, medians of --trials):
- `cgtool.paths(spec, wrt="x")`: the library call end to end (build, capture, exact count, top-10, the check
  that the sum over all paths equals autograd's gradient);
- on one capture: the exact count alone (`path_counts`, a linear-time pass) and the top-10 listing alone
  (`top_paths`);
- `cgtool paths FILE --wrt x --json`: the command's wall time, Python start-up and torch import included.
Part 2, naive enumeration on the same module-level graphs (n = 1 … --naive-max blocks), beside cgtool's count
and top-10 on the same graph:
- naive count: a depth-first search that lists every path root -> x, one at a time, and counts them;
- naive top-10: the same search carrying the path's product (a vector-Jacobian product per edge, shared by
  paths with a common prefix, as a recursive implementation does) and keeping the 10 largest norms.
A naive column stops once one of its runs passes --cap seconds (the next size would take about twice as long).
Where the naive search finishes, its count must equal cgtool's (checked; the run fails otherwise), and the last
column says how many of cgtool's top-10 are among the true top-10 that the naive search found (cgtool's order is
exact up to 512 paths, approximate beyond: a best-first search on each edge's gain).
"""
from __future__ import annotations

import argparse
import heapq
import json
import os
import pathlib
import statistics
import subprocess
import sys
import tempfile
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")

import torch  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import cgtool  # noqa: E402
from cgtool.build.inputs import example_inputs  # noqa: E402
from cgtool.graph import paths as P  # noqa: E402
from cgtool.graph.capture import capture_model  # noqa: E402
from cgtool.graph.model_paths import rooted  # noqa: E402


def chain(n: int) -> str:
    return f"""name: Chain{n}
kind: modulelist
inputs: {{x: [1, 2]}}
layers:
  - {{type: Linear, in_features: 2, out_features: 2, repeat: {n}}}
forward: |
  for layer in layers:
      x = x + layer(x)
  return x
"""


def median_time(fn, trials: int):
    times, out = [], None
    for _ in range(trials):
        t = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times), out


def module_graph(n: int):
    """The module-level graph of the n-block chain rooted at sum(output), and the ids of root and x."""
    built = cgtool.build_model(chain(n), file=f"<chain {n}>")
    built.module.eval()
    cap = capture_model(built, example_inputs(built))
    r = rooted(cap, root=None, loss="sum", level="module", keep_also={cap.names["x"].id})
    return r.graph, r.root.id, r.ids[cap.names["x"].id]


def naive_count(graph, root: int, target: int, deadline: float) -> int | None:
    """Every path root -> target listed one by one (depth first); None past the deadline."""
    found, stack, steps = 0, [root], 0
    while stack:
        v = stack.pop()
        steps += 1
        if steps % 4096 == 0 and time.perf_counter() > deadline:
            return None
        if v == target:
            found += 1
            continue
        for e in graph.operands[v]:
            stack.append(graph.edges[e].dst)
    return found


def naive_top(graph, root: int, target: int, k: int, deadline: float) -> list[float] | None:
    """The k largest path contributions (norms), by listing every path with its product; None past the deadline."""
    best: list[float] = []  # a min-heap of the k largest norms
    stack = [(root, P.ones(graph.nodes[root]))]
    steps = 0
    while stack:
        v, g = stack.pop()
        steps += 1
        if steps % 256 == 0 and time.perf_counter() > deadline:
            return None
        if v == target:
            n = P.norm(g)
            if len(best) < k:
                heapq.heappush(best, n)
            elif n > best[0]:
                heapq.heapreplace(best, n)
            continue
        for e in graph.operands[v]:
            edge = graph.edges[e]
            stack.append((edge.dst, edge.vjp(g)))
    return sorted(best, reverse=True)


def cgtool_top(graph, root: int, target: int, k: int) -> tuple[list[float], str]:
    counts = P.path_counts(graph, root, target)
    listing = P.top_paths(graph, root, target, k, counts=counts)
    return sorted((P.norm(c) for c in listing.contributions), reverse=True), \
        "exact" if listing.exact_order else "approximate"


def matches(true_top: list[float], listed: list[float]) -> int:
    """How many of cgtool's listed norms are among the true top norms (each matched once, float32 tolerance):
    cgtool's order is exact up to 512 paths and approximate beyond (a best-first search on edge gains)."""
    left, hits = list(true_top), 0
    for x in listed:
        for i, y in enumerate(left):
            if abs(x - y) <= 1e-4 * max(abs(x), abs(y)) + 1e-7:
                hits += 1
                del left[i]
                break
    return hits


def cli_wall(n: int, trials: int) -> tuple[float, float]:
    """Median wall of `cgtool paths` and of `python -c "import torch"`, run alternately."""
    exe = pathlib.Path(sys.executable).with_name("cgtool")
    with tempfile.TemporaryDirectory() as d:
        spec = pathlib.Path(d) / f"chain{n}.yaml"
        spec.write_text(chain(n))
        cmds = [[str(exe), "paths", str(spec), "--wrt", "x", "--json"], [sys.executable, "-c", "import torch"]]
        times: list[list[float]] = [[], []]
        for r in range(trials):
            for i in ((0, 1) if r % 2 == 0 else (1, 0)):
                t = time.perf_counter()
                subprocess.run(cmds[i], check=True, capture_output=True, timeout=600)
                times[i].append(time.perf_counter() - t)
    return statistics.median(times[0]), statistics.median(times[1])


def digits(n: int) -> str:
    s = str(n)
    return f"{s} (2^{n.bit_length() - 1})" if len(s) <= 16 else f"{s[:6]}…({len(s)} digits, 2^{n.bit_length() - 1})"


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--trials", type=int, default=3)
    ap.add_argument("--blocks", default="10,100,1000")
    ap.add_argument("--naive-max", type=int, default=20)
    ap.add_argument("--cap", type=float, default=10.0, help="seconds: a naive column stops after a run this long")
    ap.add_argument("--no-cli", action="store_true", help="skip the command-line wall times")
    ap.add_argument("--json")
    ap.add_argument("--smoke", action="store_true", help="tiny sizes for CI")
    opts = ap.parse_args(argv)
    if opts.smoke:
        opts.trials, opts.blocks, opts.naive_max, opts.cap, opts.no_cli = 1, "10", 8, 0.5, True
    torch.set_num_threads(1)
    out = {"cgtool": [], "naive": []}

    print(f"torch {torch.__version__}, 1 thread; medians of {opts.trials}\n")
    print("| blocks | exact path count | `cgtool.paths(…, wrt='x')` | count alone | top-10 alone | top-10 order "
          "| sum over paths = autograd | `cgtool paths` CLI wall |")
    print("|---:|---|---:|---:|---:|---|---|---:|")
    for n in [int(b) for b in opts.blocks.split(",")]:
        text = chain(n)
        lib_s, result = median_time(lambda: cgtool.paths(text, wrt="x"), opts.trials)
        assert result.path_count == 2 ** n, (result.path_count, n)
        assert result.sum_matches_grad, "the sum over all paths does not equal autograd's gradient"
        graph, root, target = module_graph(n)
        count_s, count = median_time(lambda: P.count_paths(graph, root, target), opts.trials)
        assert count == 2 ** n
        top_s, (_, order) = median_time(lambda: cgtool_top(graph, root, target, 10), opts.trials)
        cli_s, torch_s = (None, None) if opts.no_cli else cli_wall(n, opts.trials)
        row = {"blocks": n, "count": str(count), "library_s": lib_s, "count_s": count_s, "top10_s": top_s,
               "order": order, "sum_matches_grad": result.sum_matches_grad, "cli_s": cli_s,
               "import_torch_s": torch_s}
        out["cgtool"].append(row)
        print(f"| {n:,} | {digits(count)} | {lib_s * 1e3:.0f} ms | {count_s * 1e3:.2f} ms | {top_s * 1e3:.1f} ms | "
              f"{order} | {'yes' if result.sum_matches_grad else 'NO'} | "
              f"{'—' if cli_s is None else f'{cli_s:.2f} s ({cli_s / torch_s:.1f}× import torch)'} |", flush=True)

    print(f"\nNaive enumeration vs cgtool on the same graphs (a naive column stops after a run over {opts.cap:g} s)\n")
    print("| blocks | paths | naive count | naive top-10 | cgtool count | cgtool top-10 | naive top-10 / cgtool top-10 "
          "| cgtool's top-10 among the true top-10 |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|")
    count_on, top_on = True, True
    for n in range(1, opts.naive_max + 1):
        graph, root, target = module_graph(n)
        c_count_s, count = median_time(lambda: P.count_paths(graph, root, target), opts.trials)
        c_top_s, (c_top, _) = median_time(lambda: cgtool_top(graph, root, target, 10), opts.trials)
        n_count_s = n_top_s = agree = None
        if count_on:
            t = time.perf_counter()
            got = naive_count(graph, root, target, t + opts.cap)
            n_count_s = time.perf_counter() - t
            if got is None:
                count_on = False
            else:
                assert got == count, (got, count)
        if top_on:
            t = time.perf_counter()
            got_top = naive_top(graph, root, target, 10, t + opts.cap)
            n_top_s = time.perf_counter() - t
            if got_top is None:
                top_on = False
            else:
                agree = matches(got_top, c_top)
        row = {"blocks": n, "paths": count, "naive_count_s": n_count_s, "naive_top10_s": n_top_s,
               "naive_count_finished": count_on, "naive_top10_finished": top_on,
               "cgtool_count_s": c_count_s, "cgtool_top10_s": c_top_s, "cgtool_top10_in_true_top10": agree}
        out["naive"].append(row)

        def cell(s, on):
            if s is None:
                return "—"
            return f"{s * 1e3:.1f} ms" if on else f"> {opts.cap:g} s (stopped)"
        ratio = f"{n_top_s / c_top_s:,.0f}×" if n_top_s is not None and top_on else "—"
        print(f"| {n} | {count:,} | {cell(n_count_s, count_on)} | {cell(n_top_s, top_on)} | {c_count_s * 1e3:.3f} ms "
              f"| {c_top_s * 1e3:.1f} ms | {ratio} | {'—' if agree is None else f'{agree}/{len(c_top)}'} |", flush=True)
        if not count_on and not top_on:
            print(f"\n(naive enumeration stopped at {n} blocks; cgtool continues to {opts.blocks.split(',')[-1]} above)")
            break
    if opts.json:
        pathlib.Path(opts.json).write_text(json.dumps(out, indent=2))
    return out


if __name__ == "__main__":
    main()
