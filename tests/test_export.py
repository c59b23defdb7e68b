"""cgtool export: the eject round trip for every config, pt2 and onnx files, refusals and errors."""
from __future__ import annotations

import ast
import glob
import importlib.util
import json
import os
import subprocess
import sys

import pytest
import torch
from typer.testing import CliRunner

from cgtool.api import _build, _tensors, describe, export
from cgtool.cli import app

runner = CliRunner()
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIGS = sorted(glob.glob(os.path.join(ROOT, "configs", "*.yaml")))
# Specs too big to allocate twice (the built model and the ejected one) on a test machine.
TOO_BIG = {"llama7b.yaml": "6.7 B parameters (27 GB in float32): meant for --device meta"}
# Specs that take CI tens of seconds at full size (mostly random initialisation, twice) are built smaller with
# --arg, for `build --save` and `export` alike: the same structure, the --arg values becoming the defaults.
SMALLER = {"transformer_encoder.yaml": ["layers=2"], "llama_block.yaml": ["dim=512", "hidden=1376", "heads=8"],
           "gpt2_small.yaml": ["layers=2"]}


def _import(path: str, name: str):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _outputs(module, inputs):
    module.eval()
    with torch.no_grad():
        return module(*inputs)


def _same(a, b):
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and a.shape == b.shape and a.dtype == b.dtype and torch.equal(a, b)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    return a == b


@pytest.mark.parametrize("config", [pytest.param(c, id=os.path.basename(c),
                                                 marks=pytest.mark.skip(reason=TOO_BIG[os.path.basename(c)])
                                                 if os.path.basename(c) in TOO_BIG else ())
                                    for c in CONFIGS])
def test_eject_round_trip(config, tmp_path):
    """The ejected class constructs with no arguments, loads `cgtool build --save`'s state_dict, and gives
    identical outputs; the source imports neither cgtool nor yaml and calls no guard helper."""
    weights = tmp_path / "weights.pt"
    source = tmp_path / "ejected.py"
    smaller = SMALLER.get(os.path.basename(config), [])
    args = [a for item in smaller for a in ("--arg", item)]
    r = runner.invoke(app, ["build", config, "--save", str(weights), *args])
    assert r.exit_code == 0, r.output
    r = runner.invoke(app, ["export", config, "--to", "python", "-o", str(source), *args])
    assert r.exit_code == 0, r.output
    code = source.read_text()
    tree = ast.parse(code)
    imported = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    imported |= {n.module.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    assert imported <= {"torch", "math", "collections"}, imported
    assert "_cg_" not in code and "cgtool." not in code.replace("cgtool export", "")
    classes = [n.name for n in tree.body if isinstance(n, ast.ClassDef)]
    mod = _import(str(source), f"ejected_{os.path.basename(config)[:-5]}")
    top = getattr(mod, classes[-1])()
    missing = top.load_state_dict(torch.load(weights))
    assert not missing.missing_keys and not missing.unexpected_keys
    built = _build(config, args=smaller)
    inputs = _tensors(built)
    args = [inputs[n] for n in built.input_names]
    want = _outputs(built.module, args)
    got = _outputs(top, args)
    assert _same(want, got)
    # the same parameters by name and count, ties included (state_dict keys are checked by load_state_dict)
    assert sum(p.numel() for p in top.parameters()) == sum(p.numel() for p in built.module.parameters())


def test_eject_reads_like_the_spec():
    """Args are constructor arguments; nested specs come first, one class each; the forward is the spec's."""
    result = export(os.path.join(ROOT, "configs", "resnet110.yaml"))
    code = result.code
    assert result.classes[-1] == "ResNet110" and result.classes.index("CifarBasicBlock") < result.classes.index("Stage")
    assert "def __init__(self, n=18, width=16, classes=10, shortcut_type='A'):" in code
    assert "*[CifarBasicBlock(in_ch=2 * width, out_ch=2 * width, stride=1) for _ in range(n - 1)]" in code
    assert "shortcut_type=shortcut_type" in code  # an arg passed on by name, not its value
    assert "nn.Identity() if stride == 1 and in_ch == out_ch else" in code
    gpt = export(os.path.join(ROOT, "configs", "gpt2_small.yaml")).code
    assert "self.lm_head.weight = self.wte.weight" in gpt
    assert "self.h = nn.Sequential(*[GPT2Block(d=d, heads=heads, dropout=dropout) for _ in range(layers)])" in gpt
    assert "F.scaled_dot_product_attention(q, k, v, is_causal=True)" in gpt
    fancy = export(os.path.join(ROOT, "configs", "fancy_mlp.yaml")).code
    assert "while torch.linalg.vector_norm(x) > 1:  # control flow on the data" in fancy
    assert "self.register_buffer('rand_weight', torch.rand([20, 20]))" in fancy


def test_eject_args_change_the_model(tmp_path):
    """Constructor arguments are live: ResNet110(n=3) is ResNet-20, as `--arg n=3` builds it."""
    path = tmp_path / "resnet.py"
    export(os.path.join(ROOT, "configs", "resnet110.yaml"), output=path)
    mod = _import(str(path), "ejected_resnet_args")
    small = mod.ResNet110(n=3)
    built = _build(os.path.join(ROOT, "configs", "resnet110.yaml"), args={"n": 3})
    assert list(small.state_dict()) == list(built.module.state_dict())
    # --arg values become the defaults
    code = export(os.path.join(ROOT, "configs", "resnet110.yaml"), args={"n": 3}).code
    assert "def __init__(self, n=3, width=16" in code


def test_eject_derived_args_and_plain_words(tmp_path):
    """A nested file's arg computed from another (`ff: 4 * d`) is computed from the d passed, in the loader and in
    the ejected class (`ff=None` then `4 * d`); a plain word stays a string; `a += b` is a new value, not in place."""
    (tmp_path / "block.yaml").write_text(
        "name: Block\nkind: module\nargs: {d: 8, ff: 4 * d, act: gelu}\n"
        "modules:\n  up: Linear(d, ff)\n  down: {type: Linear, in_features: ff, out_features: d}\n"
        "forward: |\n  h = x\n  h += 1\n  return down(up(h)) + x * 0 if act == 'gelu' else x\n")
    (tmp_path / "top.yaml").write_text(
        "name: Top\nkind: sequential\ninputs: {x: [B: 2, 16]}\nlayers:\n  - {spec: block.yaml, args: {d: 16}}\n")
    result = export(str(tmp_path / "top.yaml"), output=tmp_path / "top.py")
    assert "def __init__(self, d=8, ff=None, act='gelu'):" in result.code
    assert "ff = 4 * d if ff is None else ff" in result.code
    assert "('0', Block(d=16))" in result.code or "Block(d=16)," in result.code
    assert "h = h + 1" in result.code
    mod = _import(str(tmp_path / "top.py"), "ejected_derived")
    built = _build(str(tmp_path / "top.yaml"))
    assert built.module[0].up.out_features == 64  # 4 * the d given (16), not 4 * the file's own d (8)
    top = mod.Top()
    top.load_state_dict(built.module.state_dict())
    x = _tensors(built)["x"]
    assert _same(_outputs(built.module, [x]), _outputs(top, [x]))


def test_export_python_to_stdout_and_json():
    r = runner.invoke(app, ["export", os.path.join(ROOT, "configs", "mlp.yaml")])
    assert r.exit_code == 0
    assert r.stdout.startswith('"""MLP, ejected from mlp.yaml') and "class MLP(nn.Module):" in r.stdout
    r = runner.invoke(app, ["export", os.path.join(ROOT, "configs", "mlp.yaml"), "--json"])
    data = json.loads(r.stdout)
    assert data["to"] == "python" and data["classes"] == ["MLP"] and data["output"] is None
    assert "def forward(self, x):" in data["code"]


def test_export_python_runs_without_cgtool(tmp_path):
    """The ejected file runs in a Python that cannot import cgtool or yaml."""
    path = tmp_path / "gpt2_block.py"
    export(os.path.join(ROOT, "configs", "gpt2_block.yaml"), output=path)
    probe = ("import sys; sys.modules['cgtool'] = None; sys.modules['yaml'] = None\n"
             "import importlib.util as u; s = u.spec_from_file_location('m', sys.argv[1]); m = u.module_from_spec(s)\n"
             "s.loader.exec_module(m); import torch; print(m.GPT2Block().eval()(torch.randn(1, 4, 768)).shape)")
    out = subprocess.run([sys.executable, "-c", probe, str(path)], capture_output=True, text=True, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert "torch.Size([1, 4, 768])" in out.stdout


@pytest.mark.parametrize("config", ["mlp.yaml", "mlp_sequential.yaml", "mlp_modulelist.yaml",
                                    "resnet_block.yaml", "gpt2_block.yaml"])
def test_export_pt2_loads_and_matches(config, tmp_path):
    path = tmp_path / "model.pt2"
    r = runner.invoke(app, ["export", os.path.join(ROOT, "configs", config), "--to", "pt2", "-o", str(path),
                            "--json"])
    assert r.exit_code == 0, r.output
    data = json.loads(r.stdout)
    assert data["output"] == str(path) and data["bytes"] == path.stat().st_size and data["nodes"] > 0
    program = torch.export.load(str(path))
    built = _build(os.path.join(ROOT, "configs", config))
    inputs = _tensors(built)
    args = tuple(inputs[n] for n in built.input_names)
    want = _outputs(built.module, args)
    assert torch.allclose(program.module()(*args), want, atol=1e-5, rtol=1e-5)


def test_export_pt2_refuses_fancy_mlp_at_its_line(tmp_path):
    path = tmp_path / "fancy.pt2"
    r = runner.invoke(app, ["export", os.path.join(ROOT, "configs", "fancy_mlp.yaml"), "--to", "pt2",
                            "-o", str(path)])
    assert r.exit_code == 1
    assert "fancy_mlp.yaml:14" in r.stderr and "cannot export to pt2" in r.stderr
    assert "while norm(x) > 1" in r.stderr and "Traceback" not in r.output
    assert not path.exists()


def test_export_errors():
    mlp = os.path.join(ROOT, "configs", "mlp.yaml")
    r = runner.invoke(app, ["export", mlp, "--to", "pt2"])
    assert r.exit_code == 1 and "-o FILE" in r.stderr
    r = runner.invoke(app, ["export", mlp, "--to", "tflite"])
    assert r.exit_code == 2
    r = runner.invoke(app, ["export", mlp, "-o", "/no/such/folder/m.py"])
    assert r.exit_code == 1 and "no such folder" in r.stderr
    r = runner.invoke(app, ["export", "missing.yaml"])
    assert r.exit_code == 1 and "no such file" in r.stderr


def _has_onnx():
    from cgtool.export.program import onnx_available

    return onnx_available() is None


@pytest.mark.skipif(not _has_onnx(), reason="onnx and onnxscript (the onnx extra) are not installed")
@pytest.mark.parametrize("config", ["mlp.yaml", "lenet5.yaml"])
def test_export_onnx_checked(config, tmp_path):
    import onnx

    path = tmp_path / "model.onnx"
    r = runner.invoke(app, ["export", os.path.join(ROOT, "configs", config), "--to", "onnx", "-o", str(path),
                            "--json"])
    assert r.exit_code == 0, r.output
    data = json.loads(r.stdout)
    onnx.checker.check_model(onnx.load(str(path)))
    assert data["max_abs_diff"] is not None and data["max_abs_diff"] < 1e-4
    assert "reference evaluator" in data["checked"]


@pytest.mark.skipif(not _has_onnx(), reason="onnx and onnxscript (the onnx extra) are not installed")
def test_export_onnx_refuses_fancy_mlp(tmp_path):
    r = runner.invoke(app, ["export", os.path.join(ROOT, "configs", "fancy_mlp.yaml"), "--to", "onnx",
                            "-o", str(tmp_path / "f.onnx")])
    assert r.exit_code == 1 and "fancy_mlp.yaml:14" in r.stderr and "cannot export to onnx" in r.stderr


def test_export_onnx_missing_says_what_to_install(tmp_path, monkeypatch):
    import cgtool.export.program as program

    monkeypatch.setattr(program, "onnx_available", lambda: "onnx is not installed")
    r = runner.invoke(app, ["export", os.path.join(ROOT, "configs", "mlp.yaml"), "--to", "onnx",
                            "-o", str(tmp_path / "m.onnx")])
    assert r.exit_code == 1 and "onnx is not installed" in r.stderr and "cgtool[onnx]" in r.stderr


def test_describe_and_export_agree_on_state_dict_keys(tmp_path):
    """`cgtool build --save` keys are exactly the ejected module's keys (tied and shared names included)."""
    for name in ("tied_linear.yaml", "shared_layer.yaml", "nest_mlp.yaml", "mlp_moduledict.yaml"):
        cfg = os.path.join(ROOT, "configs", name)
        saved = tmp_path / f"{name}.pt"
        describe(cfg, save=saved)
        path = tmp_path / f"{name}.py"
        result = export(cfg, output=path)
        mod = _import(str(path), f"ejected_keys_{name[:-5]}")
        assert list(getattr(mod, result.classes[-1])().state_dict()) == list(torch.load(saved))


ODD = """\
name: Odd
kind: module
args: {d: 6, k: 3, scale: 0.5, mode: fan}
inputs: {x: [B: 2, d]}
modules:
  linear: Linear(d, d)
  blocks:
    kind: modulelist
    layers:
      - {type: Linear, in_features: d, out_features: d, repeat: k}
      - {ref: 0}
    forward: |
      for i, layer in enumerate(layers):
          x = layer(x) if i % 2 == 0 else relu(layer(x))
      return x
  drop: Dropout(0.1)
constants:
  table: {init: full, shape: [d, d], value: 0.25, scale: scale}
  lit: [[1.0, 2.0], [3.0, 4.0]]
  steps: {init: arange, shape: [2, d]}
parameters:
  gain: {init: ones, shape: [d]}
  eyes: {init: eye, shape: [d, d], dtype: float64}
forward: |
  T = x.shape[0]
  y = F.linear(x, linear.weight)        # the function, though a module is called linear
  y += 1
  z = blocks(y) * gain + mm(y, table)
  z = z + sum([z, z]) * max(1, T) / pi
  parts = [z[:, i] for i in range(2)]
  w = self.linear(dropout(z, 0.1)) + norm(z, dim=1, keepdim=True) + lit.sum() + steps.mean()
  w = w + mm(w.double(), eyes).float()
  if mode == 'fan':
      w = w * scale
  return w, stack(parts, 1)
"""


def test_eject_language_round_trip(tmp_path):
    """The forward language's corners: F.linear where a module is called linear, `+=`, Python's sum and max on
    lists and numbers, pi, a list comprehension, dropout's mode, norm with arguments, an arg read in the
    forward, constants and parameters of every init (dtype kept), a ref to a copy of a `repeat` list entry."""
    (tmp_path / "odd.yaml").write_text(ODD)
    result = export(str(tmp_path / "odd.yaml"), output=tmp_path / "odd.py")
    code = result.code
    for text in ("y = F.linear(x, self.linear.weight)  # the function, though a module is called linear",
                 "y = y + 1", "sum([z, z]) * max(1, T) / math.pi", "F.dropout(z, 0.1, training=self.training)",
                 "torch.norm(z, dim=1, keepdim=True)", "if self.mode == 'fan':", "layer0[0],",
                 "torch.arange(math.prod([2, d]), dtype=torch.float32).reshape([2, d])",
                 "torch.eye(*[d, d], dtype=torch.float64)", "torch.full([d, d], 0.25, dtype=torch.float32) * scale"):
        assert text in code, text
    mod = _import(str(tmp_path / "odd.py"), "ejected_odd")
    built = _build(str(tmp_path / "odd.yaml"))
    top = mod.Odd()
    top.load_state_dict(built.module.state_dict())
    assert list(top.state_dict()) == list(built.module.state_dict())
    assert top.blocks[3] is top.blocks[0]
    x = _tensors(built)["x"]
    assert _same(_outputs(built.module, [x]), _outputs(top, [x]))
