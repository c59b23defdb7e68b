"""Inspection side by side with the tools users would pick instead: totals and time of `cgtool summary` vs
torchinfo and fvcore, and graph capture vs TorchLens and torchview: time and peak memory (issue 11).

    bash benchmarks/peers.sh && .bench-venv/bin/python benchmarks/inspect_peers.py [--trials 5] [--models resnet18,gpt2]
    python benchmarks/inspect_peers.py --smoke    # CI: cgtool's columns only where the peers are not installed

Models: ResNet-18 (torchvision's `resnet18()`, 1 × 3 × 224 × 224) and GPT-2 small (transformers'
`GPT2LMHeadModel(GPT2Config())`, default attention "sdpa", 1 × 64 tokens, `use_cache=False`), in eval mode, one
thread. cgtool's matching specs: benchmarks/specs/resnet18_torchvision.yaml (torchvision's layout and names: its state_dict
loads into torchvision's model, outputs bitwise equal) and configs/gpt2_small.yaml. Where the peers are absent
(CI), the models are built from those specs and the peer columns say "not installed".

Part 1, totals and time (in one process, interleaved rounds, medians; each tool's first call apart):
- ground truth: parameters counted by unique tensors (`model.parameters()`, so a tied weight counts once) and
  FLOPs by torch's own `torch.utils.flop_counter.FlopCounterMode` on the same forward;
- cgtool: `cgtool.inspect.summary.summarize(model, inputs)` on the peers' model object (the library call behind
  `cgtool summary`), and `cgtool.summary(SPEC)`, the spec built and summarised;
- torchinfo: `summary(model, input_data=..., verbose=0)`: total_params and total_mult_adds (× 2 as FLOPs);
- fvcore: `FlopCountAnalysis(model, inputs).total()` (one fused multiply-add counted as one: × 2 as FLOPs;
  GPT-2 is wrapped to return its logits tensor, which fvcore's tracer needs) and `parameter_count(model)[""]`;
  the ops it skipped are listed.
Command lines (wall, median of --cli-trials, beside `python -c "import torch"` in the same rounds):
`cgtool summary SPEC --json`, and the one-line script a torchinfo or fvcore user runs.

Part 2, graph capture, one child process per tool and model (fresh interpreter, so imports and memory do not
mix): the time of the first and of a second capture, and the peak RSS during the first (Linux: VmHWM after
resetting it through /proc/self/clear_refs just before the capture) and its rise over the RSS before it (the
model and the tool already loaded). RSS, not tracemalloc: torch's CPU tensors are not Python allocations.
- cgtool: `capture_model(built, inputs)` + `spec_view(...)` on the spec: what `cgtool graph` draws from;
- TorchLens: `torchlens.trace(model, x)` (its default: every layer's output saved) and with `save=None`
  (metadata only);
- torchview: `draw_graph(model, input_data=x)` (its defaults: depth 3, no rendering);
- `cgtool graph SPEC -f dot -o FILE`: the command's wall time and peak RSS (/usr/bin/time's %M).
"""
from __future__ import annotations

import argparse
import json
import os
import pathlib
import statistics
import subprocess
import sys
import tempfile
import time
import warnings

os.environ.setdefault("OMP_NUM_THREADS", "1")

import torch  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))
sys.path.insert(0, str(ROOT))

SPECS = {"resnet18": "benchmarks/specs/resnet18_torchvision.yaml", "gpt2": "configs/gpt2_small.yaml"}
SMOKE_ARGS = {"resnet18": {}, "gpt2": {"layers": 1}}  # CI: one GPT-2 block
TITLES = {"resnet18": "ResNet-18, 1 × 3 × 224 × 224", "gpt2": "GPT-2 small, 1 × 64 tokens"}


def have(module: str) -> bool:
    try:
        __import__(module)
        return True
    except Exception:  # not installed, or (torchvision) fails to import: the shim is tried where it matters
        return False


def peer_model(name: str, smoke: bool):
    """(model, input, where from): the peers' model when installed, else the spec's."""
    torch.manual_seed(0)
    if name == "resnet18" and not smoke:
        try:
            import tvshim
            tv = tvshim.import_torchvision()
            return tv.models.resnet18().eval(), torch.randn(1, 3, 224, 224), f"torchvision {tv.__version__}"
        except ImportError:
            pass
    if name == "gpt2" and not smoke and have("transformers"):
        import tvshim
        try:
            tvshim.import_torchvision()  # transformers imports torchvision when it is installed
        except ImportError:
            pass
        import transformers
        from transformers import GPT2Config, GPT2LMHeadModel
        model = GPT2LMHeadModel(GPT2Config()).eval()
        return model, torch.randint(0, 50257, (1, 64)), f"transformers {transformers.__version__}"
    import cgtool
    model = cgtool.build(str(ROOT / SPECS[name]), **(SMOKE_ARGS[name] if smoke else {})).eval()
    x = torch.randn(1, 3, 224, 224) if name == "resnet18" else torch.randint(0, 50257, (1, 64))
    return model, x, f"cgtool spec {SPECS[name]}"


def call(model, x):
    """The model's forward on x, its output a tensor (GPT-2's logits)."""
    out = model(x, use_cache=False) if "GPT2LMHead" in type(model).__name__ else model(x)
    return out.logits if hasattr(out, "logits") else out


class Logits(torch.nn.Module):
    """GPT-2 returning its logits tensor: fvcore traces with torch.jit, which needs tensor outputs."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, x):
        return call(self.model, x)


# ---------------------------------------------------------------- part 1: totals and time

def truth(model, x) -> dict:
    from torch.utils.flop_counter import FlopCounterMode
    with torch.no_grad(), FlopCounterMode(display=False) as fc:
        call(model, x)
    return {"params": sum(p.numel() for p in model.parameters()), "flops": fc.get_total_flops(),
            "flops_by_op": {str(k): v for k, v in fc.get_flop_counts()["Global"].items()}}


def contenders(name: str, model, x, smoke: bool) -> dict:
    """tool -> a call returning (params, FLOPs, note)."""
    import cgtool
    from cgtool.inspect.summary import summarize

    def cg_library():
        s = summarize(model, (x,) if "GPT2LMHead" not in type(model).__name__ else {"input_ids": x, "use_cache": False})
        return s.total_params, s.total_flops, ", ".join(u.op for u in s.uncounted) or ""

    spec_args = SMOKE_ARGS[name] if smoke else {}

    def cg_spec():
        s = cgtool.summary(str(ROOT / SPECS[name]), args=spec_args)
        return s.total_params, s.total_flops, "spec built and summarised"
    out = {"cgtool summarize(model)": cg_library, "cgtool.summary(spec)": cg_spec}
    if have("torchinfo"):
        import torchinfo

        def ti():
            kw = {"use_cache": False} if "GPT2LMHead" in type(model).__name__ else {}
            s = torchinfo.summary(model, input_data=[x], verbose=0, **kw)
            return s.total_params, 2 * s.total_mult_adds, "mult-adds × 2"
        out["torchinfo summary"] = ti
    if have("fvcore"):
        from fvcore.nn import FlopCountAnalysis, parameter_count

        def fv():
            target = Logits(model) if "GPT2LMHead" in type(model).__name__ else model
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                fa = FlopCountAnalysis(target, (x,))
                fa.unsupported_ops_warnings(False)
                fa.uncalled_modules_warnings(False)
                total = fa.total()
            skipped = sorted(fa.unsupported_ops().items(), key=lambda kv: -kv[1])
            return parameter_count(model)[""], 2 * total, "MACs × 2; skipped: " + ", ".join(
                f"{op.removeprefix('aten::')} ×{n}" for op, n in skipped)
        out["fvcore FlopCountAnalysis"] = fv
    return out


def time_tools(tools: dict, trials: int) -> dict:
    first, times, results = {}, {k: [] for k in tools}, {}
    for k, fn in tools.items():
        t = time.perf_counter()
        with torch.no_grad():
            results[k] = fn()
        first[k] = time.perf_counter() - t
    names = list(tools)
    for r in range(trials):
        for k in names if r % 2 == 0 else reversed(names):
            t = time.perf_counter()
            with torch.no_grad():
                tools[k]()
            times[k].append(time.perf_counter() - t)
    return {k: {"first_s": first[k], "median_s": statistics.median(times[k]) if times[k] else first[k],
                "params": results[k][0], "flops": results[k][1], "note": results[k][2]} for k in tools}


def fmt_n(n: int) -> str:
    return f"{n:,}"


def cli_walls(name: str, trials: int, smoke: bool) -> dict:
    """Wall times of the command a user types, interleaved with `python -c "import torch"`."""
    py = sys.executable
    cg = str(pathlib.Path(py).with_name("cgtool"))
    spec = str(ROOT / SPECS[name])
    cmds = {"python -c 'import torch'": [py, "-c", "import torch"],
            "cgtool summary SPEC --json": [cg, "summary", spec, "--json"]
            + [a for k, v in (SMOKE_ARGS[name] if smoke else {}).items() for a in ("--arg", f"{k}={v}")]}
    model_line = {"resnet18": "import tvshim; m = tvshim.import_torchvision().models.resnet18().eval(); "
                              "x = torch.randn(1, 3, 224, 224)",
                  "gpt2": "import tvshim; tvshim.import_torchvision(); from transformers import GPT2Config, "
                          "GPT2LMHeadModel; m = GPT2LMHeadModel(GPT2Config()).eval(); "
                          "x = torch.randint(0, 50257, (1, 64))"}[name]
    env = dict(os.environ, PYTHONPATH=str(ROOT / "benchmarks"), PYTHONWARNINGS="ignore")
    if have("torchinfo") and not smoke:
        cmds["torchinfo one-liner"] = [py, "-c", f"import torch, torchinfo; {model_line}; "
                                       f"torchinfo.summary(m, input_data=[x], verbose=0"
                                       f"{', use_cache=False' if name == 'gpt2' else ''})"]
    if have("fvcore") and not smoke:
        wrap = "from inspect_peers import Logits; m2 = Logits(m); " if name == "gpt2" else "m2 = m; "
        cmds["fvcore one-liner"] = [py, "-c", f"import torch; from fvcore.nn import FlopCountAnalysis; {model_line}; "
                                    f"{wrap}FlopCountAnalysis(m2, (x,)).total()"]
    times = {k: [] for k in cmds}
    for r in range(trials):
        for k in cmds if r % 2 == 0 else list(reversed(cmds)):
            t = time.perf_counter()
            subprocess.run(cmds[k], check=True, capture_output=True, timeout=300, env=env)
            times[k].append(time.perf_counter() - t)
    base = statistics.median(times["python -c 'import torch'"])
    return {k: {"median_s": statistics.median(v), "over_import_torch": statistics.median(v) / base}
            for k, v in times.items()}


# ---------------------------------------------------------------- part 2: graph capture in child processes

def _rss_kib(field: str) -> int:
    for line in pathlib.Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def child(tool: str, name: str, smoke: bool) -> dict:
    """Run in a fresh process: load the tool and the model, then capture twice; times and memory."""
    torch.set_num_threads(1)
    t0 = time.perf_counter()
    if tool.startswith("cgtool"):
        import cgtool
        from cgtool.build.inputs import example_inputs
        from cgtool.graph.capture import capture_model
        from cgtool.graph.view import spec_view
        built = cgtool.build_model((ROOT / SPECS[name]).read_text(), file=SPECS[name],
                                   args=SMOKE_ARGS[name] if smoke else None)
        built.module.eval()
        inputs = example_inputs(built)

        def capture():
            cap = capture_model(built, inputs)
            view = spec_view(cap, built, title=name)
            return f"{len(cap.graph.nodes)} values captured, {len(view.nodes)} nodes drawn"
    elif tool.startswith("torchlens"):
        import torchlens
        model, x, _ = peer_model(name, smoke)
        kw = {"input_kwargs": {"use_cache": False}} if "GPT2LMHead" in type(model).__name__ else {}
        if tool != "torchlens":
            kw["save"] = None  # metadata only; by default every layer's output is saved

        def capture():
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                tr = torchlens.trace(model, x, **kw)
            n = len(getattr(tr, "layer_labels", []) or [])
            return f"{n} layers logged" if n else type(tr).__name__
    elif tool == "torchview":
        from torchview import draw_graph
        model, x, _ = peer_model(name, smoke)
        kw = {"use_cache": False} if "GPT2LMHead" in type(model).__name__ else {}

        def capture():
            g = draw_graph(model, input_data=[x], **kw)
            return f"{len(g.visual_graph.body)} lines of DOT"
    else:
        raise SystemExit(f"unknown tool {tool}")
    setup_s = time.perf_counter() - t0
    rss_before = _rss_kib("VmRSS")
    try:
        pathlib.Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM to the current RSS
        reset = True
    except OSError:
        reset = False
    t = time.perf_counter()
    with torch.no_grad():
        what = capture()
    first_s = time.perf_counter() - t
    hwm = _rss_kib("VmHWM")
    t = time.perf_counter()
    with torch.no_grad():
        capture()
    second_s = time.perf_counter() - t
    return {"tool": tool, "model": name, "setup_s": setup_s, "first_s": first_s, "second_s": second_s,
            "rss_before_mib": rss_before / 1024, "peak_mib": hwm / 1024, "rise_mib": (hwm - rss_before) / 1024,
            "hwm_reset": reset, "what": what}


def run_child(tool: str, name: str, smoke: bool) -> dict:
    cmd = [sys.executable, "-W", "ignore", __file__, "--child", tool, name] + (["--smoke"] if smoke else [])
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    if r.returncode:
        return {"tool": tool, "model": name, "error": (r.stderr.strip().splitlines() or ["?"])[-1][:160]}
    return json.loads(r.stdout.strip().splitlines()[-1])


def cli_graph(name: str, smoke: bool) -> dict:
    """`cgtool graph SPEC -f dot` under /usr/bin/time: its wall and peak RSS. Not os.wait4's ru_maxrss of a child
    of this process: the child starts as a fork of this one, whose resident pages (the models loaded above)
    count in its high-water mark before it execs."""
    cg = str(pathlib.Path(sys.executable).with_name("cgtool"))
    timer = "/usr/bin/time"
    if not os.path.exists(timer):
        return {"error": "/usr/bin/time is not installed (Debian package `time`)"}
    with tempfile.TemporaryDirectory() as d:
        out, stats = os.path.join(d, "g.dot"), os.path.join(d, "time.txt")
        cmd = [timer, "-f", "%e %M", "-o", stats, cg, "graph", str(ROOT / SPECS[name]), "-f", "dot", "-o", out] + \
            [a for k, v in (SMOKE_ARGS[name] if smoke else {}).items() for a in ("--arg", f"{k}={v}")]
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
        if r.returncode:
            return {"error": r.stderr[-160:]}
        wall, kib = pathlib.Path(stats).read_text().split()[-2:]
        return {"wall_s": float(wall), "peak_mib": int(kib) / 1024, "dot_bytes": os.path.getsize(out)}


# ---------------------------------------------------------------- main

def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--trials", type=int, default=5)
    ap.add_argument("--cli-trials", type=int, default=3)
    ap.add_argument("--models", default="resnet18,gpt2")
    ap.add_argument("--no-cli", action="store_true")
    ap.add_argument("--no-capture", action="store_true")
    ap.add_argument("--json")
    ap.add_argument("--smoke", action="store_true", help="CI: GPT-2 with one block, 1 trial, no command lines")
    ap.add_argument("--child", nargs=2, metavar=("TOOL", "MODEL"), help=argparse.SUPPRESS)
    opts = ap.parse_args(argv)
    torch.set_num_threads(1)
    if opts.child:
        print(json.dumps(child(*opts.child, opts.smoke)))
        return {}
    if opts.smoke:
        opts.trials, opts.no_cli, opts.models = 1, True, "gpt2"
    peers = {m: have(m) for m in ("torchinfo", "fvcore", "torchlens", "torchview", "transformers")}
    print(f"torch {torch.__version__}, 1 thread; peers installed: "
          + ", ".join(f"{k} {'yes' if v else 'no'}" for k, v in peers.items()))
    report = {"peers": peers, "models": {}}
    for name in opts.models.split(","):
        model, x, origin = peer_model(name, opts.smoke)
        ref = truth(model, x)
        rows = time_tools(contenders(name, model, x, opts.smoke), opts.trials)
        entry = report["models"][name] = {"origin": origin, "truth": ref, "tools": rows}
        print(f"\n### {TITLES[name]} ({origin}{', smoke size' if opts.smoke else ''})\n")
        print(f"torch's counts: {fmt_n(ref['params'])} parameters (unique tensors), {fmt_n(ref['flops'])} FLOPs "
              f"(FlopCounterMode: " + ", ".join(f"{k} {fmt_n(v)}" for k, v in ref["flops_by_op"].items()) + ")\n")
        print("| tool | params | params / torch's | FLOPs | FLOPs / torch's | first call | median | note |")
        print("|---|---:|---:|---:|---:|---:|---:|---|")
        for tool, r in rows.items():
            print(f"| {tool} | {fmt_n(r['params'])} | {r['params'] / ref['params']:.3f} | {fmt_n(int(r['flops']))} | "
                  f"{r['flops'] / ref['flops']:.3f} | {r['first_s'] * 1e3:.0f} ms | {r['median_s'] * 1e3:.0f} ms | "
                  f"{r['note']} |")
        for tool in ("torchinfo", "fvcore"):
            if not peers[tool]:
                print(f"| {tool} | not installed (bash benchmarks/peers.sh) | | | | | | |")
        if not opts.no_cli:
            walls = entry["cli"] = cli_walls(name, opts.cli_trials, opts.smoke)
            print(f"\nCommand lines (median wall of {opts.cli_trials} interleaved runs):\n")
            print("| command | wall | / `import torch` |")
            print("|---|---:|---:|")
            for k, w in walls.items():
                print(f"| {k} | {w['median_s']:.2f} s | {w['over_import_torch']:.2f} |")
        if not opts.no_capture:
            tools = ["cgtool"] + [t for t, mod in (("torchlens", "torchlens"), ("torchlens save=None", "torchlens"),
                                                   ("torchview", "torchview")) if peers[mod]]
            caps = entry["capture"] = [run_child(t, name, opts.smoke) for t in tools]
            print("\nGraph capture (a child process per tool; peak RSS during the first capture, its rise over "
                  "the RSS before it):\n")
            print("| tool | first capture | second | peak RSS | rise | RSS before (tool + model loaded) | what |")
            print("|---|---:|---:|---:|---:|---:|---|")
            for c in caps:
                if "error" in c:
                    print(f"| {c['tool']} | failed: {c['error']} | | | | | |")
                    continue
                print(f"| {c['tool']} | {c['first_s'] * 1e3:.0f} ms | {c['second_s'] * 1e3:.0f} ms | "
                      f"{c['peak_mib']:.0f} MiB | {c['rise_mib']:.0f} MiB | {c['rss_before_mib']:.0f} MiB | {c['what']} |")
            for t, mod in (("TorchLens", "torchlens"), ("torchview", "torchview")):
                if not peers[mod]:
                    print(f"| {t} | not installed (bash benchmarks/peers.sh) | | | | | |")
            if not opts.no_cli:
                g = entry["cli_graph"] = cli_graph(name, opts.smoke)
                if "error" in g:
                    print(f"\n`cgtool graph SPEC -f dot -o FILE` failed: {g['error']}")
                else:
                    print(f"\n`cgtool graph SPEC -f dot -o FILE`: {g['wall_s']:.2f} s wall, peak RSS "
                          f"{g['peak_mib']:.0f} MiB, {g['dot_bytes']:,} bytes of DOT")
    if opts.json:
        pathlib.Path(opts.json).write_text(json.dumps(report, indent=2, default=str))
    return report


if __name__ == "__main__":
    main()
