"""cgtool bench: tiny sizes only (CI); real figures are in BENCHMARKS.md."""
from __future__ import annotations

import json
import os

import pytest
import torch
from typer.testing import CliRunner

import cgtool
from cgtool.cli import app

runner = CliRunner()
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MLP = os.path.join(ROOT, "configs", "mlp.yaml")
TINY = ["--min-time", "0.01", "--threads", "1"]


def _bench(*argv):
    r = runner.invoke(app, ["bench", *argv, *TINY, "--json"])
    assert r.exit_code == 0, r.output
    return json.loads(r.stdout)


def test_bench_json_per_batch():
    data = _bench(MLP, "--batch", "1,3")
    assert data["model"] == "MLP" and data["device"] == "cpu" and data["threads"] == 1
    assert data["inputs"] == {"1": {"x": [1, 784]}, "3": {"x": [3, 784]}}
    assert "B dimension" in data["batch_dim"] and "torch.profiler" in data["memory"]
    assert [c["batch"] for c in data["cases"]] == [1, 3]
    for c in data["cases"]:
        assert c["pass"] == "forward" and c["mode"] == "eager" and c["compile_s"] is None
        assert c["median_s"] > 0 and c["iqr_s"] >= 0 and c["runs"] >= c["blocks"] >= 5
        assert c["samples_per_s"] == pytest.approx(c["batch"] / c["median_s"])


def test_bench_peak_memory_counts_activations():
    """The MLP's forward at batch 64 holds hidden's output and relu's (64 × 256 floats each) at once."""
    data = _bench(MLP, "--batch", "1,64")
    one, many = (c["peak_bytes"] for c in data["cases"])
    assert many >= 2 * 64 * 256 * 4 and many > 8 * one
    assert many < 2 * 64 * 256 * 4 + 64 * 10 * 4 + 4096  # activations only: parameters are not counted


def test_bench_backward_allocates_gradients():
    data = _bench(MLP, "--batch", "2,64", "--backward")
    small, large = data["cases"]
    assert small["pass"] == large["pass"] == "forward+backward"
    params = sum(p.numel() * 4 for p in cgtool.build(MLP).parameters())
    assert small["peak_bytes"] >= params  # .grad of every parameter, made afresh each step
    # at batch 64, hidden.weight's gradient is made while a 64 x 256 gradient of the hidden layer is alive
    assert large["peak_bytes"] >= params + 64 * 256 * 4


def test_bench_compile_reports_compile_time_apart():
    r = runner.invoke(app, ["bench", MLP, "--batch", "2", "--compile", *TINY])
    assert r.exit_code == 0, r.output
    assert "compiled" in r.stdout and "eager" in r.stdout
    verdict = next(line for line in r.stdout.splitlines() if line.startswith("batch 2: "))
    assert any(words in verdict for words in ("faster", "slower", "within 5%", "within the spread"))
    data = _bench(MLP, "--batch", "2", "--compile")
    eager, compiled = data["cases"]
    assert eager["mode"] == "eager" and compiled["mode"] == "compiled"
    assert compiled["compile_s"] > compiled["median_s"] > 0


def test_bench_batch_dimension(tmp_path):
    """--batch sets the dimension named B wherever it is; without one, dim 0 of every input (said so)."""
    named = tmp_path / "named.yaml"
    named.write_text("name: T\nkind: module\ninputs: {x: [T: 4, B: 2, 8]}\nmodules: {lin: 'Linear(8, 8)'}\n"
                     "forward: |\n  return lin(x)\n")
    data = _bench(str(named), "--batch", "5")
    assert data["inputs"] == {"5": {"x": [4, 5, 8]}} and "x dim 1" in data["batch_dim"]
    plain = tmp_path / "plain.yaml"
    plain.write_text("name: P\nkind: module\ninputs: {x: [2, 8]}\nmodules: {lin: 'Linear(8, 8)'}\n"
                     "forward: |\n  return lin(x)\n")
    data = _bench(str(plain), "--batch", "7")
    assert data["inputs"] == {"7": {"x": [7, 8]}} and "no input names a B dimension" in data["batch_dim"]


def test_bench_text_and_data_dependent_spec():
    r = runner.invoke(app, ["bench", os.path.join(ROOT, "configs", "fancy_mlp.yaml"), "--batch", "1,4", *TINY])
    assert r.exit_code == 0, r.output
    assert "FancyMLP" in r.stdout and "samples/s" in r.stdout and "x [4, 20]" in r.stdout


def test_bench_progress_and_threads_restored():
    seen = []
    before = torch.get_num_threads()
    report = cgtool.bench(MLP, batch=[1, 2], min_time=0.01, threads=1, memory=False,
                          progress=lambda stage, fraction=None: seen.append((stage, fraction)))
    assert torch.get_num_threads() == before and report.threads == 1
    assert seen[0][0] == "building the model" and seen[-1] == ("batch 2, eager", 1.0)
    assert all(c.peak_bytes is None for c in report.cases)


@pytest.mark.parametrize("argv, message", [
    (["--batch", "0"], "--batch sizes are 1 or more"),
    (["--batch", "1,x"], "not a whole number"),
    (["--min-time", "0"], "--min-time must be positive"),
    (["--device", "meta"], "meta tensors have no values"),
])
def test_bench_errors(argv, message):
    r = runner.invoke(app, ["bench", MLP, *argv])
    assert r.exit_code == 1 and message in r.stderr and "Traceback" not in r.output


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_bench_cuda_missing_is_a_clear_error():
    r = runner.invoke(app, ["bench", MLP, "--device", "cuda"])
    assert r.exit_code == 1 and "CUDA is not available" in r.stderr


def test_bench_refuses_file_inputs_and_nothing_to_differentiate(tmp_path):
    path = tmp_path / "x.pt"
    torch.save(torch.randn(2, 784), path)
    r = runner.invoke(app, ["bench", MLP, "--input", f"x={path}"])
    assert r.exit_code == 1 and "batch is fixed" in r.stderr
    spec = tmp_path / "noparams.yaml"
    spec.write_text("name: N\nkind: module\ninputs: {x: [B: 2, 3]}\nforward: |\n  return relu(x)\n")
    r = runner.invoke(app, ["bench", str(spec), "--backward", "--batch", "1"])
    assert r.exit_code == 1 and "does not depend on any parameter" in r.stderr


def test_bench_compile_names_data_dependent_lines_quietly():
    """FancyMLP's `.item()` conditions split the compiled graph: the report names their lines, and torch's own
    multi-line graph-break warnings stay off stderr."""
    r = runner.invoke(app, ["bench", os.path.join(ROOT, "configs", "fancy_mlp.yaml"), "--batch", "2", "--compile",
                            *TINY, "--json"])
    assert r.exit_code == 0, r.output
    data = json.loads(r.stdout)
    assert [d["line"] for d in data["dynamic"]] == [
        os.path.join(ROOT, "configs", "fancy_mlp.yaml") + ":14:9", os.path.join(ROOT, "configs", "fancy_mlp.yaml") + ":16:6"]
    assert "Graph break" not in r.stderr and "capture_scalar_outputs" not in r.stderr
