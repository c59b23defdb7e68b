"""Compiled specs vs the same models written by hand: forward latency, side by side.

    python benchmarks/run.py [--trials 41] [--calls 300] [--json out.json]

Each trial times `calls` forward passes of one model; trials of the two models
alternate (A B A B ...) so that machine noise hits both alike. We report the
median per-call time of each and the ratio of medians. Batch 2 on the CPU, one
thread, no autograd (inference), as in issue 2's requirement (ratio <= 1.05).
"""
from __future__ import annotations

import argparse
import json
import pathlib
import statistics
import sys
import time

import torch

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT))

import handwritten as hw  # noqa: E402
from cgtool import build  # noqa: E402


def time_calls(model, x, calls: int) -> float:
    start = time.perf_counter()
    for _ in range(calls):
        model(x)
    return (time.perf_counter() - start) / calls


def compare(name, spec_model, hand_model, x, trials, calls):
    hand_model.load_state_dict(spec_model.state_dict())
    spec_model.eval()
    hand_model.eval()
    with torch.no_grad():
        torch.testing.assert_close(spec_model(x), hand_model(x))
        for _ in range(3):  # warm up
            time_calls(spec_model, x, calls)
            time_calls(hand_model, x, calls)
        a, b = [], []
        for i in range(trials):
            if i % 2 == 0:
                a.append(time_calls(spec_model, x, calls))
                b.append(time_calls(hand_model, x, calls))
            else:
                b.append(time_calls(hand_model, x, calls))
                a.append(time_calls(spec_model, x, calls))
    ma, mb = statistics.median(a), statistics.median(b)
    return {"model": name, "spec_us": ma * 1e6, "hand_us": mb * 1e6, "ratio": ma / mb, "trials": trials,
            "calls": calls}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--trials", type=int, default=41)
    ap.add_argument("--calls", type=int, default=300)
    ap.add_argument("--json")
    opts = ap.parse_args()
    torch.set_num_threads(1)
    cfg = ROOT / "configs"
    rows = [
        compare("MLP (module)", build(cfg / "mlp.yaml"), hw.MLP(), torch.rand(2, 784), opts.trials, opts.calls),
        compare("MLP (sequential)", build(cfg / "mlp_sequential.yaml"), hw.sequential(), torch.rand(2, 784),
                opts.trials, opts.calls),
        compare("FancyMLP", build(cfg / "fancy_mlp.yaml"), hw.FancyMLP(), torch.rand(2, 20), opts.trials,
                opts.calls),
        compare("NestMLP in Sequential", build(cfg / "nest_mlp.yaml"), hw.nested(), torch.rand(2, 40),
                opts.trials, opts.calls),
    ]
    print(f"torch {torch.__version__}, 1 thread, batch 2, median of {opts.trials} interleaved trials "
          f"x {opts.calls} calls")
    print(f"{'model':<24}{'spec µs':>10}{'hand µs':>10}{'ratio':>8}")
    for r in rows:
        print(f"{r['model']:<24}{r['spec_us']:>10.2f}{r['hand_us']:>10.2f}{r['ratio']:>8.3f}")
    if opts.json:
        pathlib.Path(opts.json).write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
