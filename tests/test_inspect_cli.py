"""`cgtool params`, `cgtool summary`, `cgtool run` end to end through the CLI."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode
from typer.testing import CliRunner

from cgtool.cli import app

ROOT = Path(__file__).resolve().parent.parent
CONFIGS = ROOT / "configs"
ENV = {"COLUMNS": "120", "NO_COLOR": "1"}
runner = CliRunner()


def cg(*args, input: str | None = None, code: int = 0):
    result = runner.invoke(app, [str(a) for a in args], env=ENV, input=input)
    assert result.exit_code == code, f"exit {result.exit_code}\nstdout:\n{result.stdout}\nstderr:\n{result.stderr}"
    return result


def cg_json(*args):
    return json.loads(cg(*args, "--json").stdout)


def config(name: str) -> str:
    return str(CONFIGS / f"{name}.yaml")


# --------------------------------------------------------------------------- the lesson's models, by hand


import handwritten as hw  # noqa: E402 - the lesson's models, shared with test_lesson.py

HAND_WRITTEN = {
    "mlp": (hw.MLP, [2, 784]),
    "mlp_sequential": (hw.sequential, [2, 784]),
    "mlp_sequential_named": (hw.sequential_named, [2, 784]),
    "mlp_modulelist": (hw.ModuleListSubclass, [2, 784]),
    "mlp_moduledict": (hw.ModuleDictSubclass, [2, 784]),
    "fancy_mlp": (hw.FancyMLP, [2, 20]),
    "nest_mlp": (hw.nested, [2, 40]),
    "tied_linear": (hw.TiedLinear, [2, 20]),
    "shared_layer": (hw.shared_layer, [2, 16]),
}


@pytest.fixture(scope="module")
def saved_weights(tmp_path_factory):
    """``saved_weights(name)``: `cgtool build --save` of a config, once per module."""
    cache = {}

    def get(name):
        if name not in cache:
            cache[name] = tmp_path_factory.mktemp("weights") / f"{name}.pt"
            cg("build", config(name), "--save", cache[name])
        return cache[name]

    return get


@pytest.mark.parametrize("name", sorted(HAND_WRITTEN))
@pytest.mark.parametrize("fmt", [".pt", ".npy"])
def test_run_matches_the_hand_written_module(name, fmt, tmp_path, saved_weights):
    make, shape = HAND_WRITTEN[name]
    weights = saved_weights(name)
    hand = make()
    hand.load_state_dict(torch.load(weights, weights_only=True))  # strict: the same state_dict keys
    hand.eval()

    x = torch.randn(*shape, generator=torch.Generator().manual_seed(7))
    if fmt == ".pt":
        torch.save(x, tmp_path / "x.pt")
    else:
        np.save(tmp_path / "x.npy", x.numpy())
    out = tmp_path / f"out{fmt}"
    cg("run", config(name), "--weights", weights, "-i", f"x={tmp_path / ('x' + fmt)}", "-o", out)
    got = torch.load(out, weights_only=True) if fmt == ".pt" else torch.from_numpy(np.load(out))
    with torch.no_grad():
        expected = hand(x)
    assert got.shape == expected.shape
    torch.testing.assert_close(got, expected, rtol=1e-6, atol=1e-6)


def test_run_same_seed_same_output_and_seed_changes_it():
    a = cg_json("run", config("mlp"))
    assert a == cg_json("run", config("mlp"))
    assert a["values"] != cg_json("run", config("mlp"), "--seed", "1")["values"]


def test_run_json_keys_and_small_values():
    data = cg_json("run", config("mlp"))
    assert data["shape"] == [2, 10] and data["dtype"] == "float32"
    assert len(data["values"]) == 2 and len(data["values"][0]) == 10
    assert set(data["stats"]) == {"min", "max", "mean", "std", "nan", "inf"}
    assert [o["name"] for o in data["outputs"]] == ["output"]
    big = cg_json("run", config("mlp"), "-i", "x=200,784")
    assert big["shape"] == [200, 10] and big["values"] is None and big["stats"]["min"] <= big["stats"]["max"]
    scalar = cg_json("run", config("fancy_mlp"))
    assert scalar["shape"] == [] and isinstance(scalar["values"], float)


def test_run_dtype_and_meta():
    assert cg_json("run", config("mlp"), "--dtype", "float64")["dtype"] == "float64"
    meta = cg_json("run", config("gpt2_small"), "--device", "meta")
    assert meta["shape"] == [1, 64, 50257] and meta["values"] is None and meta["device"] == "meta"
    text = cg("run", config("mlp"), "--device", "meta").stdout
    assert "no values on the meta device" in text


def test_run_integer_token_inputs_from_file(tmp_path):
    np.save(tmp_path / "idx.npy", np.array([[1, 2, 3, 4]], dtype=np.int64))
    data = cg_json("run", config("gpt2_small"), "--arg", "layers=1", "--arg", "d=32", "--arg", "heads=2",
                   "--arg", "vocab=100", "-i", f"idx={tmp_path / 'idx.npy'}")
    assert data["shape"] == [1, 4, 100]


def test_run_table_output():
    text = cg("run", config("mlp")).stdout
    assert "[2, 10]" in text and "float32" in text and "Mean" in text and "output:" in text


def test_run_train_mode_is_an_option():
    # gpt2's dropout: evaluation mode by default (reproducible), --train turns it on
    a = cg_json("run", config("gpt2_block"), "--arg", "d=64", "--arg", "heads=4", "-i", "x=1,4,64")
    b = cg_json("run", config("gpt2_block"), "--arg", "d=64", "--arg", "heads=4", "-i", "x=1,4,64", "--train")
    assert a["shape"] == b["shape"] and a["values"] != b["values"]


def test_run_several_outputs_saved_as_dict(tmp_path):
    spec = ("name: Two\nkind: module\ninputs: {x: [2, 3]}\nmodules:\n  lin: Linear(3, 4)\n"
            "forward: |\n  y = lin(x)\n  return y, relu(y)\n")
    out = tmp_path / "o.pt"
    data = json.loads(cg("run", "-", "-o", out, "--json", input=spec).stdout)
    assert [o["name"] for o in data["outputs"]] == ["0", "1"] and "shape" not in data
    saved = torch.load(out, weights_only=True)
    assert set(saved) == {"0", "1"} and torch.equal(saved["1"], saved["0"].relu())
    r = cg("run", "-", "-o", tmp_path / "o.npy", input=spec, code=1)
    assert "one array" in r.stderr and not (tmp_path / "o.npy").exists()


# --------------------------------------------------------------------------- run: bad input


@pytest.fixture
def files(tmp_path):
    torch.save(torch.randn(2, 784), tmp_path / "good.pt")
    torch.save(torch.randn(3, 5), tmp_path / "shape.pt")
    torch.save(torch.ones(2, 784, dtype=torch.long), tmp_path / "int.pt")
    np.save(tmp_path / "pickled.npy", np.array([object()], dtype=object), allow_pickle=True)
    torch.save({"weights": [1, 2]}, tmp_path / "notensor.pt")
    (tmp_path / "x.csv").write_text("1,2\n")
    return tmp_path


@pytest.mark.parametrize("file, words", [
    ("shape.pt", ["input 'x' has shape [3, 5]", "[B, 784]"]),
    ("int.pt", ["input 'x' has dtype int64", "float32"]),
    ("missing.pt", ["input 'x'", "no such file"]),
    ("pickled.npy", ["input 'x'", "pickle"]),
    ("notensor.pt", ["input 'x'", "not a tensor"]),
    ("x.csv", ["input 'x'", "unknown tensor file type"]),
])
def test_run_bad_tensor_files(files, file, words):
    r = cg("run", config("mlp"), "-i", f"x={files / file}", code=1)
    assert r.stderr.startswith("error: ") and "Traceback" not in r.stderr
    for w in words:
        assert w in r.stderr, r.stderr
    assert r.stdout == ""


def test_run_weights_mismatch_and_bad_files(tmp_path):
    cg("build", config("mlp"), "--save", tmp_path / "mlp.pt")
    r = cg("run", config("mlp_sequential"), "--weights", tmp_path / "mlp.pt", code=1)
    assert "weights do not fit the model" in r.stderr and "missing 0.weight" in r.stderr and "--save" in r.stderr
    cg("build", config("mlp"), "--save", tmp_path / "mlp.pt")
    r = cg("run", "-", "--weights", tmp_path / "mlp.pt", code=1,
           input=(CONFIGS / "mlp.yaml").read_text().replace("Linear(256, 10)", "Linear(256, 12)"))
    assert "shape mismatch" in r.stderr and "output.weight: file [10, 256], model [12, 256]" in r.stderr
    r = cg("run", config("mlp"), "--weights", tmp_path / "none.pt", code=1)
    assert "weights: no such file" in r.stderr
    torch.save(torch.ones(3), tmp_path / "t.pt")
    assert "not a state_dict" in cg("run", config("mlp"), "--weights", tmp_path / "t.pt", code=1).stderr


def test_run_weights_reproduce_the_built_model(tmp_path):
    cg("build", config("mlp"), "--seed", "5", "--save", tmp_path / "w.pt")
    a = cg_json("run", config("mlp"), "--seed", "5")
    b = cg_json("run", config("mlp"), "--seed", "9", "--weights", tmp_path / "w.pt", "-i", "x=2,784")
    c = cg_json("run", config("mlp"), "--seed", "9")
    d = cg_json("run", config("mlp"), "--seed", "5", "--weights", tmp_path / "w.pt")
    assert a["values"] == d["values"]  # the saved weights reproduce the seed-5 model exactly
    assert b["values"] != c["values"]  # with --weights the seed picks the inputs, not the weights


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_cuda_unavailable_is_a_clear_error():
    for command in ("run", "summary", "params"):
        r = cg(command, config("mlp"), "--device", "cuda", code=1)
        assert "CUDA is not available" in r.stderr and "--device meta" in r.stderr


def test_output_path_errors(tmp_path):
    r = cg("run", config("mlp"), "-o", tmp_path / "o.txt", code=1)
    assert "unknown output file type" in r.stderr
    r = cg("run", config("mlp"), "--device", "meta", "-o", tmp_path / "o.pt", code=1)
    assert "meta" in r.stderr


# --------------------------------------------------------------------------- params


PARAM_KEYS = {"name", "shape", "numel", "trainable", "dtype", "shared_with"}
BUFFER_KEYS = {"name", "shape", "numel", "dtype"}


def test_params_json_keys_and_tied_count():
    data = cg_json("params", config("tied_linear"))
    assert {"parameters", "buffers", "total", "trainable", "non_trainable", "bytes"} <= set(data)
    assert all(PARAM_KEYS <= set(p) for p in data["parameters"])
    assert data["total"] == 440 and data["trainable"] == 440 and data["non_trainable"] == 0
    assert data["bytes"] == 440 * 4
    assert data["parameters"][0]["shared_with"] == ["l2.weight"]
    fancy = cg_json("params", config("fancy_mlp"))
    assert fancy["total"] == 420 and [b["name"] for b in fancy["buffers"]] == ["rand_weight"]
    assert all(BUFFER_KEYS <= set(b) for b in fancy["buffers"])


@pytest.mark.parametrize("path", sorted(CONFIGS.glob("*.yaml")), ids=lambda p: p.stem)
def test_params_every_config_on_meta(path, meta_built):
    model = meta_built(path).module
    data = cg_json("params", path, "--device", "meta")
    assert data["total"] == sum(p.numel() for p in set(model.parameters()))


def test_params_csv_and_format_conflict():
    text = cg("params", config("fancy_mlp"), "--format", "csv").stdout
    lines = text.splitlines()
    assert lines[0] == "kind,name,shape,numel,trainable,dtype,device,shared_with,bytes"
    assert lines[1] == 'parameter,linear.weight,"[20, 20]",400,true,float32,cpu,,1600'
    assert lines[-1] == 'buffer,rand_weight,"[20, 20]",400,,float32,cpu,,1600'
    assert cg("params", config("mlp"), "--format", "json").stdout == cg("params", config("mlp"), "--json").stdout
    r = cg("params", config("mlp"), "--json", "--format", "csv", code=2)
    assert "disagree" in r.stderr


def test_params_stdin_arg_dtype():
    data = json.loads(cg("params", "-", "--json", "--arg", "d=8", "--dtype", "float64",
                         input="name: N\nkind: module\nargs: {d: 4}\nmodules:\n  l: Linear(d, d)\n"
                               "forward: |\n  return l(x)\n").stdout)
    assert data["total"] == 8 * 8 + 8 and data["parameters"][0]["dtype"] == "float64" and data["bytes"] == 72 * 8


def test_params_bad_spec():
    r = cg("params", "no_such_spec.yaml", code=1)
    assert r.stderr.startswith("error: no_such_spec.yaml: no such file")


GOLDEN_PARAMS = """\
Parameters of TiedLinear
Name        Shape      Count   Trainable   DType     Device   Shared with
─────────────────────────────────────────────────────────────────────────
l1.weight   [20, 20]     400   yes         float32   cpu      l2.weight
l1.bias     [20]          20   yes         float32   cpu      -
l2.bias     [20]          20   yes         float32   cpu      -

Total parameters:  440 (440)
  trainable:       440
  non-trainable:   0
Parameter memory:  1.72 KiB
Note: 1 tensor(s) have several names; each is counted once. Counting every name would give 840.
"""


def strip_right(text: str) -> str:
    return "\n".join(line.rstrip() for line in text.splitlines()) + "\n"


def test_params_golden_table():
    assert strip_right(cg("params", config("tied_linear")).stdout) == GOLDEN_PARAMS


# --------------------------------------------------------------------------- summary


LAYER_KEYS = {"name", "type", "input_shapes", "output_shapes", "params", "calls", "flops"}


def test_summary_json_keys_and_fancy_numbers():
    data = cg_json("summary", config("fancy_mlp"))
    assert {"layers", "total_params", "total_flops"} <= set(data)
    assert all(LAYER_KEYS <= set(layer) for layer in data["layers"])
    root, linear = data["layers"]
    assert root["output_shapes"] == [[]] and root["flops"] == 1600
    assert linear["calls"] == 2 and linear["flops"] == 3200 and linear["params"] == 420
    assert data["total_params"] == 420 and data["total_flops"] == 4800


@pytest.mark.parametrize("name", ["mlp", "lenet5", "resnet_small", "tied_linear", "nest_mlp", "gpt2_block"])
def test_summary_totals_match_torch(name):
    from cgtool.build.model import build_model
    from cgtool.build.inputs import make_inputs
    from cgtool.inspect.summary import EXTRA_FLOP_FORMULAS

    data = cg_json("summary", config(name))
    built = build_model(config(name))
    with FlopCounterMode(display=False, custom_mapping=EXTRA_FLOP_FORMULAS) as counter, torch.no_grad():
        built.forward(make_inputs(built))
    assert data["total_flops"] == counter.get_total_flops()
    assert data["total_params"] == sum(p.numel() for p in set(built.module.parameters()))
    assert sum(layer["flops"] for layer in data["layers"]) == data["total_flops"]


def test_summary_depth_and_meta():
    data = cg_json("summary", config("llama7b"), "--device", "meta", "--depth", "1")
    assert data["total_params"] == 6_738_415_616
    assert max(layer["depth"] for layer in data["layers"]) == 1 and len(data["layers"]) == 1 + 1 + 32 + 2
    assert cg("summary", config("mlp"), "--depth", "-1", code=2).exit_code == 2


def test_summary_input_override_and_shape_error():
    data = cg_json("summary", config("mlp"), "-i", "x=5,784")
    assert data["layers"][0]["input_shapes"] == [[5, 784]]
    r = cg("summary", config("mlp"), "-i", "x=5,783", code=1)
    assert r.stderr.startswith("error: ") and "Traceback" not in r.stderr


GOLDEN_SUMMARY = """\
Summary of FancyMLP
Layer      Type       Input shape   Output shape   Params   Calls    FLOPs
──────────────────────────────────────────────────────────────────────────
(model)    FancyMLP   [2, 20]       []                  -       1   1.60 K
  linear   Linear     [2, 20]       [2, 20]           420       2   3.20 K

Total parameters:  420 (420); trainable 420, non-trainable 0
Total FLOPs:       4,800 (4.80 KFLOPs), by torch.utils.flop_counter
  by op: addmm 3.20 K, mm 1.60 K
Output shape:      []
"""


def test_summary_golden_table():
    text = strip_right(cg("summary", config("fancy_mlp")).stdout)
    assert text.startswith(GOLDEN_SUMMARY)


def test_summary_shows_tied_and_shared():
    text = cg("summary", config("tied_linear")).stdout
    assert "20 (+400 shared)" in text
    data = cg_json("summary", config("shared_layer"))
    first = next(layer for layer in data["layers"] if layer["name"] == "first")
    assert first["calls"] == 2 and first["aliases"] == ["again"] and first["params"] == 272


@pytest.mark.parametrize("command", ["run", "summary"])
def test_data_dependent_forward_on_meta_is_a_clear_error(command):
    r = cg(command, config("fancy_mlp"), "--device", "meta", code=1)
    assert "fancy_mlp.yaml:14" in r.stderr and "depends on tensor values" in r.stderr and "--device cpu" in r.stderr
    assert "internal error" not in r.stderr


def test_weights_on_meta_are_checked_not_loaded(tmp_path):
    cg("build", config("resnet_block"), "--save", tmp_path / "w.pt")
    r = cg("run", config("resnet_block"), "--weights", tmp_path / "w.pt", "--device", "meta", "--json")
    assert json.loads(r.stdout)["shape"] == [2, 64, 32, 32]
    assert "no values to load" in r.stderr and "UserWarning" not in r.stderr
    r = cg("run", config("resnet_block"), "--arg", "out_ch=32", "--weights", tmp_path / "w.pt", "--device", "meta",
           code=1)
    assert "shape mismatch" in r.stderr
