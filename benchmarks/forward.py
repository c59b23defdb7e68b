"""Forward latency, side by side: the compiled spec vs the same model written by hand, as nn.Sequential,
as raw functional calls, and as a torch.fx GraphModule (issue 11).

    python benchmarks/forward.py [--trials 15] [--batch 1,2,64] [--models mlp,fancy,mlp32,resnet18,gpt2block]
                                 [--block-ms 20] [--image 64] [--tokens 16] [--json out.json] [--smoke]

Contenders, all with the same weights (the spec's state_dict loaded into each), checked equal to the
hand-written module's output before any timing:
- spec:       cgtool.build(SPEC) — the compiled spec;
- hand:       the model as a person writes it (nn.Module subclass; the lesson's code in tests/handwritten.py);
- sequential: nn.Sequential of the same layers, where the model is a chain (else "—");
- functional: raw functional calls on the parameters (F.linear, F.conv2d, ...), bound once: the floor that
              Python dispatch allows;
- fx:         torch.fx.symbolic_trace of the hand-written module.
Method: one thread, torch.no_grad(), eval mode, CPU, float32. A trial times N calls of one contender (N set once
per case so that a trial of the hand-written model takes about --block-ms); trials go round the contenders in
alternating order (A B C D E, E D C B A, ...) so that machine noise hits all alike. We report median µs per call,
and each ratio as the median over rounds of the ratio within a round (± half its interquartile range): to the
functional floor and to the hand-written module.
Models: the lesson's MLP (configs/mlp.yaml), FancyMLP without its loop (benchmarks/specs/fancy_mlp_noloop.yaml),
a 32-layer MLP of width 256 (benchmarks/specs/mlp32.yaml), ResNet-18 with torchvision's layout
(benchmarks/specs/resnet18_torchvision.yaml) on --image × --image pictures, and one GPT-2 block (configs/gpt2_block.yaml,
d = 768) on --tokens tokens. The image and token counts are below the specs' defaults (224, 64) so that batch 64
stays under a second per call on one core; say so when quoting.
"""
from __future__ import annotations

import argparse
import json
import os
import pathlib
import statistics
import subprocess
import sys
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Callable

os.environ.setdefault("OMP_NUM_THREADS", "1")  # before torch starts its thread pool

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch import nn  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parent.parent
SPECS = ROOT / "benchmarks" / "specs"
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT))

import handwritten as hw  # noqa: E402
import cgtool  # noqa: E402


# ---------------------------------------------------------------- hand-written models (benchmark only)

class FancyMLPNoLoop(nn.Module):
    """tests/handwritten.py's FancyMLP without its `while`/`if` on the data."""

    def __init__(self):
        super().__init__()
        self.register_buffer("rand_weight", torch.rand((20, 20)))
        self.linear = nn.Linear(20, 20)

    def forward(self, x):
        x = self.linear(x)
        x = nn.functional.relu(torch.mm(x, self.rand_weight) + 1)
        x = self.linear(x)
        return x.sum()


class MLP32(nn.Module):
    def __init__(self, width=256, depth=32):
        super().__init__()
        self.layers = nn.ModuleList(nn.Linear(width, width) for _ in range(depth))

    def forward(self, x):
        for layer in self.layers:
            x = torch.relu(layer(x))
        return x


class BasicBlock(nn.Module):
    """torchvision.models.resnet.BasicBlock, as torchvision writes it."""

    def __init__(self, inplanes, planes, stride=1):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(planes, planes, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = None
        if stride != 1 or inplanes != planes:
            self.downsample = nn.Sequential(nn.Conv2d(inplanes, planes, 1, stride=stride, bias=False),
                                            nn.BatchNorm2d(planes))

    def forward(self, x):
        identity = x
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        if self.downsample is not None:
            identity = self.downsample(x)
        out += identity
        return self.relu(out)


class ResNet18(nn.Module):
    """torchvision.models.resnet18's structure and forward, its parameter names too."""

    def __init__(self, classes=1000):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        widths = [(64, 64, 1), (64, 128, 2), (128, 256, 2), (256, 512, 2)]
        for i, (cin, cout, stride) in enumerate(widths, 1):
            setattr(self, f"layer{i}", nn.Sequential(BasicBlock(cin, cout, stride), BasicBlock(cout, cout)))
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(512, classes)

    def forward(self, x):
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))


class GPT2Block(nn.Module):
    """One GPT-2 block as nanoGPT writes it (pre-norm attention and MLP, residuals), the spec's names."""

    def __init__(self, d=768, heads=12, dropout=0.1):
        super().__init__()
        self.d, self.heads = d, heads
        self.ln_1 = nn.LayerNorm(d)
        self.c_attn = nn.Linear(d, 3 * d)
        self.c_proj = nn.Linear(d, d)
        self.attn_drop = nn.Dropout(dropout)
        self.ln_2 = nn.LayerNorm(d)
        self.mlp = nn.Sequential(OrderedDict(c_fc=nn.Linear(d, 4 * d), act=nn.GELU(approximate="tanh"),
                                             c_proj=nn.Linear(4 * d, d), drop=nn.Dropout(dropout)))

    def forward(self, x):
        B, T, C = x.size(0), x.size(1), x.size(2)  # not `x.size()` unpacked: torch.fx cannot iterate a Proxy
        q, k, v = self.c_attn(self.ln_1(x)).split(self.d, dim=2)
        q = q.view(B, T, self.heads, C // self.heads).transpose(1, 2)
        k = k.view(B, T, self.heads, C // self.heads).transpose(1, 2)
        v = v.view(B, T, self.heads, C // self.heads).transpose(1, 2)
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        y = y.transpose(1, 2).contiguous().view(B, T, C)
        x = x + self.attn_drop(self.c_proj(y))
        return x + self.mlp(self.ln_2(x))


# ---------------------------------------------------------------- raw functional versions (the floor)

def mlp_functional(sd):
    w1, b1, w2, b2 = sd["hidden.weight"], sd["hidden.bias"], sd["output.weight"], sd["output.bias"]

    def forward(x):
        return F.linear(torch.relu(F.linear(x, w1, b1)), w2, b2)
    return forward


def fancy_functional(sd):
    w, b, r = sd["linear.weight"], sd["linear.bias"], sd["rand_weight"]

    def forward(x):
        return F.linear(torch.relu(torch.mm(F.linear(x, w, b), r) + 1), w, b).sum()
    return forward


def mlp32_functional(sd):
    wb = [(sd[f"{i}.weight"], sd[f"{i}.bias"]) for i in range(len(sd) // 2)]

    def forward(x):
        for w, b in wb:
            x = torch.relu(F.linear(x, w, b))
        return x
    return forward


def resnet18_functional(sd):
    def bn(p):
        return sd[p + ".running_mean"], sd[p + ".running_var"], sd[p + ".weight"], sd[p + ".bias"]

    blocks = []
    for layer in range(1, 5):
        for j in range(2):
            p = f"layer{layer}.{j}"
            stride = 2 if layer > 1 and j == 0 else 1
            ds = (sd[p + ".downsample.0.weight"], bn(p + ".downsample.1")) if p + ".downsample.0.weight" in sd else None
            blocks.append((sd[p + ".conv1.weight"], bn(p + ".bn1"), sd[p + ".conv2.weight"], bn(p + ".bn2"), stride, ds))
    c1, bn1, fw, fb = sd["conv1.weight"], bn("bn1"), sd["fc.weight"], sd["fc.bias"]

    def forward(x):
        x = F.relu(F.batch_norm(F.conv2d(x, c1, None, 2, 3), *bn1, False, 0.0, 1e-5))
        x = F.max_pool2d(x, 3, 2, 1)
        for w1, n1, w2, n2, stride, ds in blocks:
            out = F.relu(F.batch_norm(F.conv2d(x, w1, None, stride, 1), *n1, False, 0.0, 1e-5))
            out = F.batch_norm(F.conv2d(out, w2, None, 1, 1), *n2, False, 0.0, 1e-5)
            if ds is not None:
                x = F.batch_norm(F.conv2d(x, ds[0], None, stride), *ds[1], False, 0.0, 1e-5)
            x = F.relu(out + x)
        return F.linear(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1), fw, fb)
    return forward


def gpt2block_functional(sd, heads=12):
    g1, e1, aw, ab = sd["ln_1.weight"], sd["ln_1.bias"], sd["c_attn.weight"], sd["c_attn.bias"]
    pw, pb, g2, e2 = sd["c_proj.weight"], sd["c_proj.bias"], sd["ln_2.weight"], sd["ln_2.bias"]
    fw, fb, f2w, f2b = sd["mlp.c_fc.weight"], sd["mlp.c_fc.bias"], sd["mlp.c_proj.weight"], sd["mlp.c_proj.bias"]

    def forward(x):
        B, T, C = x.shape
        q, k, v = F.linear(F.layer_norm(x, (C,), g1, e1), aw, ab).split(C, dim=2)
        q = q.view(B, T, heads, C // heads).transpose(1, 2)
        k = k.view(B, T, heads, C // heads).transpose(1, 2)
        v = v.view(B, T, heads, C // heads).transpose(1, 2)
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        y = y.transpose(1, 2).contiguous().view(B, T, C)
        x = x + F.linear(y, pw, pb)
        return x + F.linear(F.gelu(F.linear(F.layer_norm(x, (C,), g2, e2), fw, fb), approximate="tanh"), f2w, f2b)
    return forward


# ---------------------------------------------------------------- cases

@dataclass
class Case:
    name: str
    spec: str  # path relative to the repository
    hand: nn.Module
    functional: Callable  # state_dict -> forward(x)
    shape: Callable[[int], tuple]  # batch -> input shape
    sequential: nn.Module | None = None
    to_hand: Callable[[str], str] = lambda k: k  # spec state_dict key -> hand key
    to_sequential: Callable[[str], str] = lambda k: k  # hand key -> sequential key
    contenders: dict = field(default_factory=dict)


def cases(opts) -> list[Case]:
    mlp32_seq = nn.Sequential(*[m for _ in range(32) for m in (nn.Linear(256, 256), nn.ReLU())])
    all_cases = {
        "mlp": lambda: Case("MLP (lesson)", "configs/mlp.yaml", hw.MLP(), mlp_functional, lambda b: (b, 784),
                            sequential=hw.sequential(),
                            to_sequential=lambda k: k.replace("hidden.", "0.").replace("output.", "2.")),
        "fancy": lambda: Case("FancyMLP, no loop", "benchmarks/specs/fancy_mlp_noloop.yaml", FancyMLPNoLoop(),
                              fancy_functional, lambda b: (b, 20)),
        "mlp32": lambda: Case("MLP, 32 layers", "benchmarks/specs/mlp32.yaml", MLP32(), mlp32_functional,
                              lambda b: (b, 256), sequential=mlp32_seq, to_hand=lambda k: "layers." + k,
                              to_sequential=lambda k: _double_index(k.removeprefix("layers."))),
        "resnet18": lambda: Case(f"ResNet-18, {opts.image}×{opts.image}", "benchmarks/specs/resnet18_torchvision.yaml",
                                 ResNet18(), resnet18_functional, lambda b: (b, 3, opts.image, opts.image)),
        "gpt2block": lambda: Case(f"GPT-2 block, T = {opts.tokens}", "configs/gpt2_block.yaml", GPT2Block(),
                                  gpt2block_functional, lambda b: (b, opts.tokens, 768)),
    }
    return [all_cases[m]() for m in opts.models]


def _double_index(key: str) -> str:
    i, rest = key.split(".", 1)
    return f"{2 * int(i)}.{rest}"


def prepare(case: Case) -> dict[str, Callable]:
    """The contenders of one case, sharing the spec's weights, in eval mode."""
    spec = cgtool.build(str(ROOT / case.spec)).eval()
    sd = spec.state_dict()
    case.hand.load_state_dict({case.to_hand(k): v for k, v in sd.items()})
    case.hand.eval()
    out = {"functional": case.functional(sd), "spec": spec, "hand": case.hand}
    if case.sequential is not None:
        hand_sd = case.hand.state_dict()
        case.sequential.load_state_dict({case.to_sequential(k): v for k, v in hand_sd.items()})
        out["sequential"] = case.sequential.eval()
    out["fx"] = torch.fx.symbolic_trace(case.hand).eval()
    return out


def check_equal(contenders: dict, x: torch.Tensor) -> dict[str, str]:
    """Each contender's output against the hand-written module's: 'bitwise', or the largest difference
    (within torch.testing's float32 tolerance; beyond it the benchmark stops)."""
    ref = contenders["hand"](x.clone())
    verdict = {}
    for name, fn in contenders.items():
        got = fn(x.clone())
        if torch.equal(got, ref):
            verdict[name] = "bitwise"
        else:
            torch.testing.assert_close(got, ref, msg=lambda m: f"{name} differs from the hand-written module: {m}")
            verdict[name] = f"{(got - ref).abs().max().item():.1e}"
    return verdict


def time_calls(fn, x, n: int) -> float:
    start = time.perf_counter()
    for _ in range(n):
        fn(x)
    return (time.perf_counter() - start) / n


def measure(contenders: dict, x, trials: int, block_s: float) -> dict[str, list[float]]:
    """Seconds per call of each contender in each round; rounds go round the contenders in alternating order."""
    names = list(contenders)
    for fn in contenders.values():  # warm up (first-call costs, allocator)
        time_calls(fn, x, 3)
    one = time_calls(contenders["hand"], x, 3)
    n = max(1, round(block_s / one))
    times = {k: [] for k in names}
    for t in range(trials):
        for name in (names if t % 2 == 0 else reversed(names)):
            times[name].append(time_calls(contenders[name], x, n))
    return times


def paired(times: dict, a: str, b: str) -> tuple[float, float] | None:
    """The median over rounds of a's time / b's time in the same round, and half its interquartile range:
    neighbours in time share the machine's load, so a paired ratio is steadier than a ratio of medians."""
    if a not in times or b not in times:
        return None
    r = sorted(x / y for x, y in zip(times[a], times[b]))
    q = statistics.quantiles(r, n=4) if len(r) > 1 else [r[0]] * 3
    return statistics.median(r), (q[2] - q[0]) / 2


RATIOS = [("spec", "functional"), ("spec", "hand"), ("sequential", "hand"), ("fx", "hand")]


def commit() -> str:
    try:
        return subprocess.run(["git", "-C", str(ROOT), "log", "-1", "--format=%h"], capture_output=True,
                              text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "?"


def main(argv=None) -> list[dict]:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--trials", type=int, default=15)
    ap.add_argument("--batch", default="1,2,64")
    ap.add_argument("--models", default="mlp,fancy,mlp32,resnet18,gpt2block")
    ap.add_argument("--block-ms", type=float, default=20.0, help="length of one timed trial of the hand-written model")
    ap.add_argument("--image", type=int, default=64, help="ResNet-18 picture side (224 in ImageNet)")
    ap.add_argument("--tokens", type=int, default=16, help="GPT-2 block sequence length (the spec's default: 64)")
    ap.add_argument("--json")
    ap.add_argument("--smoke", action="store_true", help="tiny sizes for CI: batch 2, 3 trials, 1 ms trials")
    opts = ap.parse_args(argv)
    if opts.smoke:
        opts.trials, opts.batch, opts.block_ms, opts.image, opts.tokens = 3, "2", 1.0, 32, 4
    opts.models = opts.models.split(",")
    batches = [int(b) for b in opts.batch.split(",")]
    torch.set_num_threads(1)
    torch.manual_seed(0)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} thread, no_grad, eval; cgtool at {commit()}")
    print(f"median µs per call over {opts.trials} interleaved rounds; ratios: the median over rounds of the "
          f"ratio within a round, ± half its interquartile range\n")
    print("| model | batch | functional | spec | hand | sequential | fx | spec / functional | spec / hand "
          "| sequential / hand | fx / hand | outputs vs hand |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|")
    rows = []
    with torch.no_grad():
        for case in cases(opts):
            contenders = prepare(case)
            for b in batches:
                x = torch.randn(case.shape(b))
                equal = check_equal(contenders, x)
                times = measure(contenders, x, opts.trials, opts.block_ms / 1e3)
                ratios = {f"{a}/{b_}": paired(times, a, b_) for a, b_ in RATIOS}
                row = {"model": case.name, "spec": case.spec, "batch": b,
                       "us": {k: statistics.median(v) * 1e6 for k, v in times.items()},
                       "ratio": {k: v for k, v in ratios.items() if v is not None}, "equal": equal,
                       "trials": opts.trials}
                rows.append(row)
                us = row["us"]

                def cell(k):
                    return f"{us[k]:.1f}" if k in us else "—"

                def ratio(a, b_):
                    r = ratios[f"{a}/{b_}"]
                    return f"{r[0]:.3f} ±{r[1]:.3f}" if r else "—"
                differs = ", ".join(f"{k} {v}" for k, v in equal.items() if v != "bitwise" and k != "hand")
                print(f"| {case.name} | {b} | {cell('functional')} | {cell('spec')} | {cell('hand')} | "
                      f"{cell('sequential')} | {cell('fx')} | {ratio('spec', 'functional')} | {ratio('spec', 'hand')} | "
                      f"{ratio('sequential', 'hand')} | {ratio('fx', 'hand')} | {differs or 'all bitwise'} |", flush=True)
    if opts.json:
        pathlib.Path(opts.json).write_text(json.dumps(rows, indent=2))
    return rows


if __name__ == "__main__":
    main()
