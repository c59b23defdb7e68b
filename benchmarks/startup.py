"""Start-up time of the command line and the package, against `import torch`, side by side.

    python benchmarks/startup.py [--repeat 15] [--json out.json]

Each round runs every command once, in a rotated order (round k starts at command k), so that
machine noise spreads over all of them; we report per command the median and the minimum wall
time over the rounds, and the ratio of its median to the median of `python -c "import torch"`
(issue 7's target: at most 0.25 for --help, COMMAND --help, --version and `import cgtool`).
A first untimed round warms the file cache (and writes bytecode caches, as an installed package
has them). Each command's exit status is checked, and so is that it leaves torch unimported.
"""
from __future__ import annotations

import argparse
import json
import os
import pathlib
import platform
import shutil
import statistics
import subprocess
import sys
import time

ROOT = pathlib.Path(__file__).resolve().parent.parent
TARGET = 0.25
NO_TORCH = "import sys; assert 'torch' not in sys.modules, 'torch was imported'"


def commands() -> dict[str, list[str]]:
    py = sys.executable
    script = pathlib.Path(py).parent / "cgtool"
    cgtool = [str(script)] if script.exists() else ([shutil.which("cgtool")] if shutil.which("cgtool")
                                                     else [py, "-m", "cgtool"])
    return {
        'python -c "import torch"': [py, "-c", "import torch"],
        "cgtool --help": cgtool + ["--help"],
        "cgtool build --help": cgtool + ["build", "--help"],
        "cgtool --version": cgtool + ["--version"],
        'python -c "import cgtool"': [py, "-c", "import cgtool; " + NO_TORCH],
    }


def run_once(argv: list[str], env: dict) -> float:
    start = time.perf_counter()
    proc = subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env, cwd=ROOT)
    elapsed = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} failed ({proc.returncode}): {proc.stderr.decode()[-500:]}")
    return elapsed


def torch_free(argv: list[str], env: dict) -> bool:
    """Whether the command runs without importing torch (read from `-X importtime`)."""
    if argv[0] != sys.executable:  # the console script: run its entry point under the same interpreter
        argv = [sys.executable, "-c", "import sys; from cgtool.cli import main; sys.argv = ['cgtool'] + sys.argv[1:]; "
                "main()"] + argv[1:]
    proc = subprocess.run([argv[0], "-X", "importtime"] + argv[1:], capture_output=True, text=True, env=env, cwd=ROOT)
    return not any(line.rsplit("|", 1)[-1].strip() == "torch" for line in proc.stderr.splitlines())


def machine() -> str:
    try:
        from importlib.metadata import version

        torch_version = version("torch")
    except Exception:  # noqa: BLE001 - only for the report
        torch_version = "?"
    return (f"{os.cpu_count()} cores, {platform.machine()}, {platform.system()} {platform.release()}, "
            f"Python {platform.python_version()}, torch {torch_version}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeat", type=int, default=15, help="timed rounds (default 15)")
    ap.add_argument("--json", help="also write the figures to this file")
    opts = ap.parse_args()

    env = dict(os.environ)
    env.pop("PYTHONDONTWRITEBYTECODE", None)  # measure as installed: bytecode cached after the first run
    env.pop("PYTHONPROFILEIMPORTTIME", None)
    cmds = commands()
    names = list(cmds)
    for name in names:  # warm-up round, untimed
        run_once(cmds[name], env)
    times: dict[str, list[float]] = {n: [] for n in names}
    for k in range(opts.repeat):
        for i in range(len(names)):
            name = names[(i + k) % len(names)]
            times[name].append(run_once(cmds[name], env))

    base = statistics.median(times[names[0]])
    rows = []
    for name in names:
        med = statistics.median(times[name])
        rows.append({"command": name, "median_s": med, "min_s": min(times[name]), "ratio": med / base,
                     "torch_free": None if name == names[0] else torch_free(cmds[name], env)})
    print(f"Machine: {machine()}; {opts.repeat} interleaved rounds, wall time per run\n")
    print("| command | median | min | median / `import torch` | imports torch |")
    print("|---|---:|---:|---:|---|")
    for r in rows:
        ratio = "1 (baseline)" if r["torch_free"] is None else f"{r['ratio']:.3f}"
        imports = "yes" if r["torch_free"] is None else ("no" if r["torch_free"] else "**yes**")
        print(f"| `{r['command']}` | {r['median_s'] * 1000:.0f} ms | {r['min_s'] * 1000:.0f} ms | {ratio} | {imports} |")
    worst = max(r["ratio"] for r in rows[1:])
    print(f"\nworst ratio {worst:.3f} (target <= {TARGET}): {'met' if worst <= TARGET else 'NOT met'}")
    if opts.json:
        pathlib.Path(opts.json).write_text(json.dumps({"machine": machine(), "repeat": opts.repeat, "rows": rows},
                                                      indent=2) + "\n")


if __name__ == "__main__":
    main()
