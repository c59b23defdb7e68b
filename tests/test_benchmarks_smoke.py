"""The benchmarks of issue 11 at their smoke sizes: each script runs, its equality checks pass, and the peers'
columns (torchinfo, fvcore, TorchLens, torchview: installed only by benchmarks/peers.sh) are skipped cleanly
where they are absent. Figures are in BENCHMARKS.md; these tests check no timing."""
from __future__ import annotations

import importlib
import os
import pathlib
import sys

import pytest
import torch

BENCH = pathlib.Path(__file__).resolve().parent.parent / "benchmarks"


@pytest.fixture(autouse=True)
def _threads():
    """The scripts set one thread (and OMP_NUM_THREADS for their children): put both back for the other tests."""
    before, omp = torch.get_num_threads(), os.environ.get("OMP_NUM_THREADS")
    sys.path.insert(0, str(BENCH))
    yield
    sys.path.remove(str(BENCH))
    torch.set_num_threads(before)
    if omp is None:
        os.environ.pop("OMP_NUM_THREADS", None)
    else:
        os.environ["OMP_NUM_THREADS"] = omp


def _script(name: str):
    return importlib.import_module(name)


def test_forward_smoke(capsys):
    rows = _script("forward").main(["--smoke"])
    assert [r["model"].split(",")[0] for r in rows] == ["MLP (lesson)", "FancyMLP", "MLP", "ResNet-18", "GPT-2 block"]
    for r in rows:
        assert set(r["us"]) >= {"functional", "spec", "hand", "fx"} and all(v > 0 for v in r["us"].values())
        # outputs were checked before timing: bitwise, or within float32 tolerance (else main raised)
        assert set(r["equal"]) == set(r["us"])
        assert r["ratio"]["spec/hand"][0] > 0
    assert "sequential" in rows[0]["us"] and "sequential" not in rows[3]["us"]  # a ResNet is no chain
    assert "| MLP (lesson) | 2 |" in capsys.readouterr().out


def test_paths_scaling_smoke():
    out = _script("paths_scaling").main(["--smoke"])
    (row,) = out["cgtool"]
    assert row["blocks"] == 10 and row["count"] == str(2 ** 10) and row["sum_matches_grad"]
    naive = out["naive"]
    assert [r["paths"] for r in naive] == [2 ** n for n in range(1, len(naive) + 1)]
    small = [r for r in naive if r["naive_top10_finished"] and r["paths"] <= 512]
    assert small and all(r["cgtool_top10_in_true_top10"] == min(10, r["paths"]) for r in small)


def test_inspect_peers_smoke(capsys):
    report = _script("inspect_peers").main(["--smoke"])
    gpt2 = report["models"]["gpt2"]
    truth, tools = gpt2["truth"], gpt2["tools"]
    for name in ("cgtool summarize(model)", "cgtool.summary(spec)"):
        assert tools[name]["params"] == truth["params"]  # unique tensors: the tied head counts once
        assert tools[name]["flops"] >= truth["flops"]  # plus attention, which torch's counter skips on the CPU
    (cap,) = [c for c in gpt2["capture"] if c["tool"] == "cgtool"]
    assert "error" not in cap and cap["first_s"] > 0 and cap["peak_mib"] > 0
    text = capsys.readouterr().out
    for peer in ("torchinfo", "fvcore", "torchlens", "torchview"):
        if not report["peers"][peer]:
            assert "not installed (bash benchmarks/peers.sh)" in text


def test_commands_smoke():
    """benchmarks/commands.py (start-up of the commands against `import torch`): one round of two commands, each
    checked to exit 0; the table has both rows and the baseline's ratio is 1."""
    import subprocess

    done = subprocess.run([sys.executable, str(BENCH / "commands.py"), "--smoke"], capture_output=True, text=True,
                          timeout=600, cwd=BENCH.parent)
    assert done.returncode == 0, done.stderr[-2000:]
    rows = [line for line in done.stdout.splitlines() if line.startswith("| `")]
    assert len(rows) == 2 and "| 1.00 |" in rows[0] and "cgtool grad" in rows[1]


def test_named_containers_smoke(capsys):
    rows = _script("named_containers").main(["--smoke"])
    assert [r["pair"] for r in rows] == ["chain", "encoder"]  # outputs were checked bitwise equal before timing
    assert all(r["ratio"] > 0 and all(v > 0 for v in r["us"].values()) for r in rows)


def test_number_math_smoke(capsys):
    rows = _script("number_math").main(["--smoke"])  # equal results were checked before timing
    assert {r["function"] for r in rows} == {"tanh", "pow", "sqrt"} and all(r["ratio"] > 0 for r in rows)
