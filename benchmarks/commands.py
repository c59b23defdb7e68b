"""Commands end to end against `import torch`, side by side (issue 11: commands that start fast).

    python benchmarks/commands.py [--repeat 7] [--json out.json] [--smoke]

Each round runs every command once as a fresh process, in a rotated order (round k starts at
command k), so machine noise spreads over all of them; per command we report the median and the
minimum wall time, the median peak RSS of the process (``os.wait4``'s ``ru_maxrss``), and the
ratio of its median wall time to the median of ``python -c "import torch"`` measured in the same
rounds. One untimed round first warms the file cache. One thread (``OMP_NUM_THREADS=1``); each
command's exit status is checked. Targets are issue 11's.
"""
from __future__ import annotations

import argparse
import glob
import json
import os
import pathlib
import platform
import statistics
import subprocess
import sys
import time

ROOT = pathlib.Path(__file__).resolve().parent.parent
RESNET18 = "benchmarks/specs/resnet18.yaml"  # torchvision's layout, 11,689,512 parameters
LESSON = "y = (x1 + w) * (x2 + w)"


def commands(smoke: bool) -> list[tuple[str, list[str], dict]]:
    """(label, argv, targets): targets may hold `ratio` (× import torch), `seconds` and `rss_mb`."""
    py = sys.executable
    script = pathlib.Path(py).parent / "cgtool"
    cg = [str(script)] if script.exists() else [py, "-m", "cgtool"]
    rows = [
        ('python -c "import torch"', [py, "-c", "import torch"], {}),
        (f'cgtool grad "{LESSON}" --wrt w', cg + ["grad", LESSON, "--wrt", "w"], {"ratio": 1.3}),
        ("cgtool params resnet18", cg + ["params", RESNET18], {"ratio": 1.3}),
        ("cgtool build resnet18", cg + ["build", RESNET18], {"ratio": 1.5}),
    ]
    if smoke:
        return rows[:2]
    configs = sorted(glob.glob(str(ROOT / "configs" / "*.yaml")))
    rows += [
        ("cgtool params gpt2_small", cg + ["params", "configs/gpt2_small.yaml"], {"ratio": 1.3, "rss_mb": 400}),
        ("cgtool summary gpt2_small", cg + ["summary", "configs/gpt2_small.yaml"], {"ratio": 1.3, "rss_mb": 400}),
        ("cgtool params llama7b --device meta", cg + ["params", "configs/llama7b.yaml", "--device", "meta"],
         {"seconds": 3.0, "rss_mb": 1024}),
        ("cgtool summary llama7b --device meta", cg + ["summary", "configs/llama7b.yaml", "--device", "meta"],
         {"seconds": 3.0, "rss_mb": 1024}),
        ("cgtool run mlp", cg + ["run", "configs/mlp.yaml"], {}),
        (f"cgtool validate configs/*.yaml ({len(configs)} specs)", cg + ["validate", *configs], {}),
    ]
    return rows


def run_once(argv: list[str], env: dict) -> tuple[float, float]:
    """(wall seconds, peak RSS in MB) of one run of *argv* as a child process."""
    start = time.perf_counter()
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env, cwd=ROOT)
    stderr = proc.stderr.read()
    _, status, usage = os.wait4(proc.pid, 0)
    elapsed = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} failed ({proc.returncode}): {stderr.decode()[-500:]}")
    return elapsed, usage.ru_maxrss / 1024


def measure(repeat: int, smoke: bool) -> dict:
    env = dict(os.environ, OMP_NUM_THREADS="1", COLUMNS="120", NO_COLOR="1")
    rows = commands(smoke)
    for _, argv, _ in rows:  # warm-up: file cache, bytecode
        run_once(argv, env)
    wall = {label: [] for label, _, _ in rows}
    rss = {label: [] for label, _, _ in rows}
    for k in range(repeat):
        for label, argv, _ in rows[k % len(rows):] + rows[:k % len(rows)]:
            w, m = run_once(argv, env)
            wall[label].append(w)
            rss[label].append(m)
    base = statistics.median(wall[rows[0][0]])
    out = []
    for label, argv, targets in rows:
        med = statistics.median(wall[label])
        row = {"command": label, "median_s": round(med, 3), "min_s": round(min(wall[label]), 3),
               "ratio": round(med / base, 3), "rss_mb": round(statistics.median(rss[label]), 1), "targets": targets}
        met = []
        if "ratio" in targets:
            met.append(row["ratio"] <= targets["ratio"])
        if "seconds" in targets:
            met.append(med <= targets["seconds"])
        if "rss_mb" in targets:
            met.append(row["rss_mb"] <= targets["rss_mb"])
        row["met"] = all(met) if met else None
        out.append(row)
    return {"machine": f"{os.cpu_count()} cores, {platform.machine()}, Python {platform.python_version()}",
            "torch": _torch_version(), "repeat": repeat, "rows": out}


def _torch_version() -> str:
    return subprocess.run([sys.executable, "-c", "import torch; print(torch.__version__)"], capture_output=True,
                          text=True).stdout.strip()


def table(result: dict) -> str:
    lines = ["| command | median | min | median / `import torch` | peak RSS | target | met |",
             "|---|---:|---:|---:|---:|---|---|"]
    for r in result["rows"]:
        t = r["targets"]
        units = {"ratio": "×", "seconds": " s", "rss_mb": " MB"}
        target = ", ".join(f"≤ {t[k]}{u}" for k, u in units.items() if k in t) or "-"
        met = {True: "yes", False: "**no**", None: "-"}[r["met"]]
        lines.append(f"| `{r['command']}` | {r['median_s']:.2f} s | {r['min_s']:.2f} s | {r['ratio']:.2f} | "
                     f"{r['rss_mb']:.0f} MB | {target} | {met} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeat", type=int, default=7)
    ap.add_argument("--json", help="also write the figures here")
    ap.add_argument("--smoke", action="store_true", help="two commands, one round (CI)")
    a = ap.parse_args()
    result = measure(1 if a.smoke else a.repeat, a.smoke)
    print(f"{result['machine']}, torch {result['torch']}, {result['repeat']} rounds, one thread")
    print(table(result))
    if a.json:
        pathlib.Path(a.json).write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
