"""Named containers cost nothing: a sequential spec given `name: MLPBlock` builds an nn.Sequential subclass, and
the compiled forward inlines it as it inlines nn.Sequential (issue 15).

    python benchmarks/named_containers.py [--trials 15] [--block-ms 20] [--smoke]

Pairs, each the same spec with and without the `name:` of its container, the same weights, outputs checked
bitwise equal before timing:
- chain:   a module calling an inline sequential of Linear(16, 16), ReLU, Linear(16, 16) on a [2, 16] input;
- encoder: ViT-B/16's encoder block (configs/zoo/vit_encoder_block.yaml, its `mlp` an MLPBlock) at d = 64,
           4 heads, on [2, 17, 64].
Method: one thread, torch.no_grad(), eval mode; a trial times N calls (N set once so that a trial takes about
--block-ms); trials alternate between the two (A B, B A, ...). We report median µs per call and the median over
rounds of the ratio named / unnamed within a round.
"""
from __future__ import annotations

import argparse
import os
import pathlib
import sys

os.environ.setdefault("OMP_NUM_THREADS", "1")

import torch  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))
import cgtool  # noqa: E402
from pairs import side_by_side  # noqa: E402


def _chain(named: bool) -> str:
    name = "name: MLPBlock, " if named else ""
    return ("name: Net\nkind: module\ninputs: {x: [2, 16]}\nmodules:\n"
            f"  mlp: {{{name}kind: sequential, layers: ['Linear(16, 16)', ReLU(), 'Linear(16, 16)']}}\n"
            "forward: |\n  return mlp(x)\n")


def _encoder(named: bool, tmp: pathlib.Path) -> str:
    text = (ROOT / "configs" / "zoo" / "vit_encoder_block.yaml").read_text()
    if not named:
        text = "\n".join(line for line in text.splitlines() if "name: MLPBlock" not in line) + "\n"
    path = tmp / f"encoder_{'named' if named else 'plain'}.yaml"
    path.write_text(text)
    return str(path)


def _pairs(tmp: pathlib.Path):
    yield "chain", cgtool.build(_chain(False)), cgtool.build(_chain(True)), torch.randn(2, 16)
    small = dict(num_heads=4, hidden_dim=64, mlp_dim=256)
    yield ("encoder", cgtool.build(_encoder(False, tmp), **small), cgtool.build(_encoder(True, tmp), **small),
           torch.randn(2, 17, 64))


def main(argv=None) -> list[dict]:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--trials", type=int, default=15)
    ap.add_argument("--block-ms", type=float, default=20.0)
    ap.add_argument("--smoke", action="store_true", help="3 trials of 1 ms: the checks, no figures")
    a = ap.parse_args(argv)
    trials, block = (3, 1.0) if a.smoke else (a.trials, a.block_ms)
    torch.set_num_threads(1)
    import tempfile

    rows = []
    with tempfile.TemporaryDirectory() as tmp, torch.no_grad():
        for label, plain, named, x in _pairs(pathlib.Path(tmp)):
            named.load_state_dict(plain.state_dict())
            plain.eval(), named.eval()
            assert type(plain.mlp) is torch.nn.Sequential and type(named.mlp).__name__ == "MLPBlock"
            assert torch.equal(plain(x), named(x)), label
            us, ratio = side_by_side(("named", named), ("unnamed", plain), (x,), trials=trials,
                                     block_s=block / 1000)
            row = {"pair": label, "us": us, "ratio": ratio}
            rows.append(row)
            print(f"{label:8s} unnamed {row['us']['unnamed']:8.2f} µs   named {row['us']['named']:8.2f} µs   "
                  f"named/unnamed {row['ratio']:.3f}")
    return rows


if __name__ == "__main__":
    main()
