"""`cgtool paths` on deep residual networks, beside the floor: one forward and backward pass in torch.

    python benchmarks/paths.py [--trials 5]

Side by side and interleaved, medians of wall time, one thread, the model already built:
- floor: the model's forward pass and `loss.backward()` — what any gradient tool pays;
- paths: `capture_model` + the module-level graph + the exact path count to the target;
- spectrum: the same, plus the path-length spectrum (one cotangent per length, exact).
Models: a residual chain of 1,000 Linear(2, 2) blocks (2^1000 paths to its input), and the
CIFAR ResNet-110 spec (2^54 paths to the stem; lengths counted on `stages.*.*.branch`).
"""
from __future__ import annotations

import argparse
import pathlib
import statistics
import sys
import time

import torch

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import cgtool  # noqa: E402
from cgtool.build.inputs import example_inputs  # noqa: E402
from cgtool.graph import paths as P  # noqa: E402
from cgtool.graph.capture import capture_model  # noqa: E402
from cgtool.graph.model_paths import length_counter, rooted  # noqa: E402
from cgtool.graph.spectrum import length_spectrum  # noqa: E402

CHAIN = """
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


def cases():
    chain = cgtool.build_model(CHAIN, file="<chain>")
    r110 = cgtool.build_model((ROOT / "configs/resnet110.yaml").read_text(), file="configs/resnet110.yaml")
    yield "residual chain, 1,000 blocks", chain, "x", length_counter(depth=1, with_parameters={
        str(i) for i in range(1000)})
    yield "ResNet-110 (CIFAR)", r110, "stem.conv.weight", length_counter(pattern="stages.*.*.branch")


def floor(built, inputs):
    built.module.zero_grad(set_to_none=True)
    built.module(*inputs.values()).sum().backward()


def paths(built, inputs, wrt, counted=None):
    cap = capture_model(built, inputs)
    r = rooted(cap, root=None, loss="sum", level="module", keep_also={cap.names[wrt].id})
    target = r.ids[cap.names[wrt].id]
    counts = P.path_counts(r.graph, r.root.id, target)
    if counted is not None:
        length_spectrum(r.graph, r.root.id, target, counted, counts=counts)
    return counts[r.root.id]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--trials", type=int, default=5)
    args = ap.parse_args()
    torch.set_num_threads(1)
    print("| model | forward + backward (floor) | paths (count) | paths + spectrum | ratio spectrum / floor |")
    print("|---|---:|---:|---:|---:|")
    for name, built, wrt, counted in cases():
        built.module.eval()
        inputs = example_inputs(built)
        runs = {"floor": lambda: floor(built, inputs), "count": lambda: paths(built, inputs, wrt),
                "spectrum": lambda: paths(built, inputs, wrt, counted)}
        times = {k: [] for k in runs}
        for _ in range(args.trials):
            for k, fn in runs.items():
                t = time.perf_counter()
                fn()
                times[k].append(time.perf_counter() - t)
        med = {k: statistics.median(v) for k, v in times.items()}
        print(f"| {name} | {med['floor'] * 1e3:.0f} ms | {med['count'] * 1e3:.0f} ms | {med['spectrum'] * 1e3:.0f} ms"
              f" | {med['spectrum'] / med['floor']:.1f} |")


if __name__ == "__main__":
    main()
