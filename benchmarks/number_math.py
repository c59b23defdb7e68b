"""What math's semantics on Python numbers cost on tensors: the forward language's `tanh`, `pow`, `sqrt`, ...
check for a Python number before calling torch's function (issue 15).

    python benchmarks/number_math.py [--trials 15] [--smoke]

Side by side, in alternating trials: the allow-listed function (cgtool.lang.allowlist.FUNCTIONS) and torch's own,
on a tiny tensor [8] (where the check weighs most) and on GPT-2's MLP activation [1, 64, 3072]; one thread,
no_grad. We report median µs per call and the median over rounds of the ratio within a round.
"""
from __future__ import annotations

import argparse
import os
import pathlib
import sys

os.environ.setdefault("OMP_NUM_THREADS", "1")

import torch  # noqa: E402

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from cgtool.lang.allowlist import FUNCTIONS  # noqa: E402
from pairs import side_by_side  # noqa: E402

CASES = [("tanh", torch.tanh, (), ), ("pow", torch.pow, (3.0,)), ("sqrt", torch.sqrt, ())]


def main(argv=None) -> list[dict]:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--trials", type=int, default=15)
    ap.add_argument("--smoke", action="store_true")
    a = ap.parse_args(argv)
    trials, block = (3, 0.001) if a.smoke else (a.trials, 0.02)
    torch.set_num_threads(1)
    rows = []
    with torch.no_grad():
        for shape in ([8], [1, 64, 3072]):
            x = torch.rand(*shape) + 0.5
            for name, torch_fn, extra in CASES:
                ours = FUNCTIONS[name]
                assert torch.equal(ours(x, *extra), torch_fn(x, *extra)), name
                us, ratio = side_by_side(("language", ours), ("torch", torch_fn), (x, *extra), trials=trials,
                                         block_s=block)
                row = {"function": name, "shape": shape, "us": us, "ratio": ratio}
                rows.append(row)
                print(f"{name:5s} {str(shape):14s} language {row['us']['language']:9.3f} µs   torch "
                      f"{row['us']['torch']:9.3f} µs   ratio {row['ratio']:.3f}")
    return rows


if __name__ == "__main__":
    main()
