"""Issue 14, "the first five minutes": each item as the user typed it, end to end through the CLI."""
from __future__ import annotations

import json

import pytest
import torch

import handwritten as hw
from cgtool.build.model import build_model

# --------------------------------------------------------------------------- 1. from the two commands to cgtool


def test_the_readmes_line_puts_cgtool_on_path(tmp_path):
    """The README's path, as a new user types it in a fresh shell (no .venv/bin on PATH)."""
    import re
    import shutil
    import subprocess

    from conftest import ROOT

    readme = (ROOT / "README.md").read_text()
    setup = readme[readme.index("## The two commands"):readme.index("## Quick start")]
    line = re.search(r"^(source \S+activate)$", setup, re.M).group(1)
    first = re.search(r"^(cgtool build configs/mlp\.yaml)\s", readme, re.M).group(1)
    if not (ROOT / ".venv" / "bin" / "activate").exists():
        pytest.skip("no .venv here (make demo / make test create it)")
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "COLUMNS": "120", "NO_COLOR": "1"}
    done = subprocess.run(["bash", "-c", f"{line} && {first} --json"], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["total_params"] == 203_530
    if shutil.which("cgtool", path=env["PATH"]) is None:  # without it: command not found (why the README says it)
        missing = subprocess.run(["bash", "-c", first], cwd=ROOT, env=env, capture_output=True, text=True)
        assert missing.returncode == 127


# --------------------------------------------------------------------------- 2. PyTorch spellings

CIFAR_NET = """\
name: Net
kind: module
inputs: {x: [4, 3, 32, 32]}
modules:
  conv1: Conv2d(3, 6, 5)
  pool: MaxPool2d(2, 2)
  conv2: Conv2d(6, 16, 5)
  fc1: Linear(16 * 5 * 5, 120)
  fc2: Linear(120, 84)
  fc3: Linear(84, 10)
forward: |
  x = self.pool(F.relu(self.conv1(x)))
  x = self.pool(F.relu(self.conv2(x)))
  x = torch.flatten(x, 1)
  x = F.relu(self.fc1(x))
  x = torch.nn.functional.relu(self.fc2(x))
  x = self.fc3(x)
  return x
"""

# The lesson's FancyMLP forward, pasted as written (tests/handwritten.py), `x /= 2` and all.
FANCY_PASTED = """\
name: FancyMLP
kind: module
inputs: {x: [2, 20]}
modules:
  linear: Linear(20, 20)
constants:
  rand_weight: {init: rand, shape: [20, 20]}
forward: |
  x = self.linear(x)
  x = F.relu(torch.mm(x, self.rand_weight) + 1)
  x = self.linear(x)
  while x.norm().item() > 1:
      x /= 2
  if x.norm().item() < 0.8:
      x *= 10
  return x.sum()
"""


def test_tutorial_forward_with_self_F_and_torch_builds(cli, spec_file):
    code, out, err = cli("build", spec_file(CIFAR_NET), "--code")
    assert code == 0, err
    assert "x = pool(relu(conv1(x)))" in out  # the generated code reads the spec's names
    assert "self.pool" not in out and "F.relu" not in out


def test_fancy_mlp_pasted_from_the_lesson_equals_the_handwritten_module(spec_file):
    model = build_model(spec_file(FANCY_PASTED)).module
    hand = hw.FancyMLP()
    assert list(model.state_dict()) == list(hand.state_dict())
    hand.load_state_dict(model.state_dict())
    for seed in range(3):
        torch.manual_seed(seed)
        x = torch.rand(2, 20)
        torch.testing.assert_close(model(x), hand(x), rtol=0, atol=0)
    x = torch.rand(2, 20)
    model(x).backward()
    hand(x).backward()
    torch.testing.assert_close(model.linear.weight.grad, hand.linear.weight.grad)


def test_nn_functional_spelling_of_the_handwritten_module(spec_file):
    text = FANCY_PASTED.replace("F.relu(torch.mm(", "nn.functional.relu(torch.mm(")
    model = build_model(spec_file(text)).module
    hand = hw.FancyMLP()
    hand.load_state_dict(model.state_dict())
    x = torch.rand(2, 20)
    torch.testing.assert_close(model(x), hand(x), rtol=0, atol=0)


def test_a_qualified_function_is_not_hidden_by_a_module_of_the_same_name(cli, spec_file):
    # `linear` is the spec's module; F.linear is still torch's function
    text = """\
name: M
kind: module
inputs: {x: [2, 4]}
modules:
  linear: Linear(4, 4)
parameters:
  w: {init: randn, shape: [3, 4]}
forward: |
  y = self.linear(x)
  return F.linear(y, self.w) + F.dropout(y, 0.5).sum()
"""
    model = build_model(spec_file(text)).module.eval()
    x = torch.rand(2, 4)
    y = model.linear(x)
    torch.testing.assert_close(model(x), torch.nn.functional.linear(y, model.w) + y.sum())
    code, out, err = cli("run", spec_file(text), "--json")
    assert code == 0, err


@pytest.mark.parametrize("line,message,hint", [
    ("y = torch.load('x.pt')", "torch.load is not allowed", None),
    ("y = F.__dict__", "reserved: F.__dict__", None),
    ("y = torch.os", "torch.os is not allowed", None),
    ("y = torch.os.system('ls')", "torch.os.system is not allowed", None),
    ("y = torch.nn.functional.__builtins__", "reserved", None),
    ("y = self.__class__", "reserved: self.__class__", None),
    ("y = self.register_forward_hook", "defines no module, constant or parameter 'register_forward_hook'", None),
    ("y = self", "'self' is not available on its own", None),
    ("y = self.linear.__class__", "attribute .__class__ is not allowed", None),
    ("y = self.linear._parameters", "attribute ._parameters is not allowed", None),
    ("y = torch.relu.__globals__", "torch.relu.__globals__", None),
    ("y = F.relu.T", "F.relu.T is not allowed", None),
    ("y = torch.nn.Linear(4, 4)(x)", "torch.nn.Linear is not allowed", "declare the layer in the spec"),
    ("y = nn.ReLU()(x)", "nn.ReLU is not allowed", "declare the layer in the spec"),
    ("y = torch.range(0, 3)", "torch.range is not allowed", "write range(...)"),
    ("y = F.mm(x, x)", "F.mm is not allowed", "write mm(...) or torch.mm(...)"),
    ("y = torch.embedding(x, x)", "torch.embedding is not allowed", "F.embedding(...)"),
    ("y = torch.nn", "torch.nn is not allowed", None),
    ("y = torch", "unknown name 'torch'", None),
    ("y = getattr(torch, 'load')", "unknown name 'getattr'", None),
    ("y = torch.linalg.norm(x)", "torch.linalg.norm is not allowed", "write norm(...)"),
    ("y = F.max_pool1d(x, 2)", "F.max_pool1d is not allowed", "declare a MaxPool1d layer in the spec"),
])
def test_the_sandbox_is_unchanged(cli, spec_file, line, message, hint):
    text = f"""\
name: M
kind: module
inputs: {{x: [2, 4]}}
modules:
  linear: Linear(4, 4)
forward: |
  {line}
  return x
"""
    code, out, err = cli("build", spec_file(text))
    assert code == 1, (out, err)
    assert "Traceback" not in err and message in err, err
    if hint:
        assert hint in err
    assert "spec.yaml:7:" in err


def test_self_unknown_name_says_what_to_write(cli, spec_file):
    text = CIFAR_NET.replace("  pool: MaxPool2d(2, 2)\n", "")
    code, _, err = cli("build", spec_file(text))
    assert code == 1
    assert "self.pool: the spec defines no module, constant or parameter 'pool'" in err
    assert "bool" not in err
    assert "under modules: `pool:" in err


def test_a_user_variable_named_torch_is_a_value_not_the_namespace(cli, spec_file):
    text = """\
name: M
kind: module
inputs: {x: [2, 4]}
forward: |
  torch = x
  return torch.load
"""
    code, _, err = cli("build", spec_file(text))
    assert code == 1 and "attribute .load is not allowed" in err


def test_grad_expressions_take_the_torch_spellings(cli):
    code, out, err = cli("grad", "y = torch.sin(x) * F.relu(w)", "--at", "x=1", "--at", "w=2", "--wrt", "w", "--json")
    assert code == 0, err
    data = json.loads(out)
    assert data["gradients"][0]["autograd"] == pytest.approx(torch.sin(torch.tensor(1.0)).item())


# --------------------------------------------------------------------------- 4. syntax errors quote the forward's line


def test_an_unclosed_paren_quotes_the_forward_line_not_the_yaml_line(cli, spec_file):
    text = """\
name: MLP
kind: module
inputs: {x: [2, 784]}
modules:
  l: Linear(784, 10)
forward: |
  y = relu(l(x)
  return y
"""
    code, _, err = cli("build", spec_file(text))
    assert code == 1
    assert "spec.yaml:7:11: syntax error: '(' was never closed in `y = relu(l(x)`" in err
    assert "name: MLP" not in err


# --------------------------------------------------------------------------- 3. recurrent FLOPs, and what is not counted


def _unrolled(rnn: torch.nn.RNNBase, x: torch.Tensor):
    """*rnn* (batch second) written out step by step with F.linear calls: its reference FLOPs."""
    F = torch.nn.functional
    layer_in = x
    for layer in range(rnn.num_layers):
        outs = []
        for d in range(2 if rnn.bidirectional else 1):
            sfx = f"_l{layer}" + ("_reverse" if d else "")
            w_ih, w_hh = getattr(rnn, "weight_ih" + sfx), getattr(rnn, "weight_hh" + sfx)
            b_ih = getattr(rnn, "bias_ih" + sfx) if rnn.bias else None
            b_hh = getattr(rnn, "bias_hh" + sfx) if rnn.bias else None
            h = x.new_zeros(x.shape[1], rnn.hidden_size)
            c = h
            steps = range(x.shape[0] - 1, -1, -1) if d else range(x.shape[0])
            out = [None] * x.shape[0]
            for t in steps:
                gi, gh = F.linear(layer_in[t], w_ih, b_ih), F.linear(h, w_hh, b_hh)
                if rnn.mode == "LSTM":
                    i, f, g, o = (gi + gh).chunk(4, 1)
                    c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
                    h = torch.sigmoid(o) * torch.tanh(c)
                elif rnn.mode == "GRU":
                    (ir, iz, in_), (hr, hz, hn) = gi.chunk(3, 1), gh.chunk(3, 1)
                    r, z = torch.sigmoid(ir + hr), torch.sigmoid(iz + hz)
                    n = torch.tanh(in_ + r * hn)
                    h = (1 - z) * n + z * h
                else:
                    h = torch.tanh(gi + gh)
                out[t] = h
            outs.append(torch.stack(out))
        layer_in = torch.cat(outs, -1)
    return layer_in


@pytest.mark.parametrize("kind", ["LSTM", "GRU", "RNN"])
@pytest.mark.parametrize("kw", [{}, {"bias": False}, {"num_layers": 2, "bidirectional": True}],
                         ids=["plain", "no-bias", "2-layer-bidirectional"])
def test_recurrent_flops_equal_an_unrolled_reference(kind, kw):
    from torch.utils.flop_counter import FlopCounterMode
    from cgtool.inspect.summary import summarize

    torch.manual_seed(0)
    rnn = getattr(torch.nn, kind)(6, 5, **kw)
    x = torch.rand(7, 3, 6)
    with torch.no_grad():
        want, _ = rnn(x)
        with FlopCounterMode(display=False) as counter:
            got = _unrolled(rnn, x)
    torch.testing.assert_close(got, want)  # the reference computes what the layer computes
    s = summarize(rnn, (x,))
    assert s.total_flops == counter.get_total_flops() > 0
    assert s.uncounted == ()


LSTM_SPEC = """\
name: LSTMNet
kind: module
inputs: {x: [8, 20, 64]}
modules:
  lstm: LSTM(64, 128, num_layers=2, batch_first=True)
  head: Linear(128, 10)
forward: |
  out, state = self.lstm(x)
  return self.head(out[:, -1])
"""


@pytest.mark.parametrize("kind", ["LSTM", "GRU", "RNN"])
def test_summary_counts_recurrent_layers(cli, spec_file, kind):
    code, out, err = cli("summary", spec_file(LSTM_SPEC.replace("LSTM(", f"{kind}(")), "--json")
    assert code == 0, err
    data = json.loads(out)
    gates = {"LSTM": 4, "GRU": 3, "RNN": 1}[kind]
    # per step and row: 2 * (W_ih + W_hh) FLOPs per layer; then the head
    want = 2 * 8 * 20 * gates * 128 * ((64 + 128) + (128 + 128)) + 2 * 8 * 128 * 10
    assert data["total_flops"] == want
    assert data["uncounted"] == []
    code, out, _ = cli("summary", spec_file(LSTM_SPEC.replace("LSTM(", f"{kind}(")))
    assert "lower bound" not in out


def test_ops_without_a_formula_are_named_and_the_total_is_a_lower_bound(cli, spec_file):
    text = """\
name: Dot
kind: module
inputs: {x: [4, 8]}
modules:
  fc: Linear(8, 8)
parameters:
  v: {init: randn, shape: [8]}
forward: |
  return fc(x) @ v
"""
    code, out, err = cli("summary", spec_file(text), "--json")
    assert code == 0, err
    data = json.loads(out)
    assert data["uncounted"] == [{"op": "aten.mv", "calls": 1, "modules": [""]}]
    assert data["total_flops"] == 2 * 4 * 8 * 8
    code, out, _ = cli("summary", spec_file(text))
    assert "Total FLOPs:       512 (512 FLOPs), by torch.utils.flop_counter - a lower bound" in out
    assert "not counted (no FLOP formula for these ops): aten.mv in (model) (1 call)" in out


# --------------------------------------------------------------------------- 5. errors that point the right way

MLP_ONE = """\
name: MLP
kind: sequential
inputs: {x: [2, 784]}
layers:
  - LAYER
"""


def test_extra_positional_arguments_say_how_many_a_layer_takes(cli, spec_file):
    code, _, err = cli("build", spec_file(MLP_ONE.replace("LAYER", "Linear(784, 256, 10, 5)")))
    assert code == 1
    assert "Linear takes at most 3 positional arguments (in_features, out_features, bias), not 4" in err
    assert "accelerator" not in err and "--device" in err


@pytest.mark.parametrize("layer", ["Conv2d(1, 8, 3)", "Conv2d(2, 8, 3)", "Conv2d(784, 8, 3)"])
def test_a_2d_input_to_conv2d_is_a_number_of_dimensions(cli, spec_file, layer):
    code, _, err = cli("build", spec_file(MLP_ONE.replace("LAYER", layer)))
    assert code == 1
    assert f"{layer} expects [N, C, H, W] or [C, H, W] (4-D or 3-D), but gets a 2-D input of shape [2, 784]" in err
    assert "agree" not in err


def test_a_conv2d_in_a_forward_too(cli, spec_file):
    text = """\
name: C
kind: module
inputs: {x: [2, 784]}
modules:
  conv: Conv2d(3, 8, 3)
forward: |
  return self.conv(x)
"""
    code, _, err = cli("build", spec_file(text))
    assert code == 1 and "expects [N, C, H, W] or [C, H, W]" in err and "spec.yaml:7" in err


def test_a_float64_npy_input_says_its_dtype_and_offers_dtype_or_a_cast(cli, spec_file, tmp_path):
    import numpy as np

    np.save(tmp_path / "x64.npy", np.random.default_rng(0).random((2, 784)))
    spec = spec_file(MLP_ONE.replace("LAYER", "Linear(784, 10)"))
    code, _, err = cli("run", spec, "-i", f"x={tmp_path / 'x64.npy'}")
    assert code == 1
    assert "input x is float64 but the model's parameters are float32" in err
    assert "--dtype float64" in err and "astype(numpy.float32)" in err
    assert "shape" not in err.split("hint:")[1]
    code, out, err = cli("run", spec, "-i", f"x={tmp_path / 'x64.npy'}", "--dtype", "float64", "--json")
    assert code == 0, err


# --------------------------------------------------------------------------- 6. YAML flow style


@pytest.mark.parametrize("modules,call", [("{l: Linear(784, 10)}", "Linear(784, 10)"),
                                          ("{l: Conv2d(3, 8, 3), m: ReLU()}", "Conv2d(3, 8, 3)")])
def test_a_call_split_by_yaml_flow_style_says_so(cli, spec_file, modules, call):
    text = f"""\
name: MLP
kind: module
inputs: {{x: [2, 784]}}
modules: {modules}
forward: |
  return l(x)
"""
    code, _, err = cli("build", spec_file(text))
    assert code == 1
    assert f"YAML split the call '{call}' at a comma" in err
    assert f"quote it (l: '{call}'), or write modules in block style" in err
    assert "was never closed" not in err


# --------------------------------------------------------------------------- 7. inputs count against the memory budget


def test_a_huge_input_is_refused_before_it_is_allocated(cli, spec_file):
    spec = spec_file(MLP_ONE.replace("LAYER", "Linear(784, 10)"))
    code, _, err = cli("run", spec, "-i", "x=100000000,784")
    assert code == 1
    assert "internal error" not in err
    assert "error: --input x: the inputs need 292.06 GiB (input x [100000000,784]: 292.06 GiB)" in err
    assert "over the memory cap" in err and "--max-memory" in err


def test_inputs_and_parameters_share_the_max_memory_cap(cli, spec_file):
    spec = spec_file(MLP_ONE.replace("LAYER", "Linear(784, 10)"))
    code, _, err = cli("run", spec, "-i", "x=3000000,784", "--max-memory", "1GB")
    assert code == 1 and "the inputs need 8.76 GiB" in err and "over the memory cap of 1.00 GiB" in err
    code, _, err = cli("build", spec, "-i", "x=3000,784", "--max-memory", "10MB")  # 9.4 MB of input + 31 KiB
    assert code == 0, err
    code, _, err = cli("build", spec, "-i", "x=3500,784", "--max-memory", "10MB")
    assert code == 1 and "the inputs need 10.47 MiB" in err
    # on meta nothing is allocated: shapes of any size are checked
    code, out, err = cli("build", spec, "-i", "x=100000000,784", "--device", "meta", "--json")
    assert code == 0, err


# --------------------------------------------------------------------------- 8. smaller things a user noticed

DEMO = (__import__("conftest").ROOT / "scripts" / "demo.sh").read_text()


def _demo_quote(*words: str) -> str:
    import subprocess

    functions = DEMO[DEMO.index("quote() {"):DEMO.index("step() {")]
    script = functions + 'quote "$@"'
    return subprocess.run(["bash", "-c", script, "demo", *words], capture_output=True, text=True, check=True).stdout


def test_demo_echoes_commands_that_can_be_pasted_back():
    import shlex

    words = ["cgtool", "grad", "a = x1 + w; b = x2 + w; y = a * b", "--wrt", "w", "--at", "x1=1",
             "--count", "stages.*.*.branch", "it's"]
    echoed = _demo_quote(*words)
    assert echoed.startswith("cgtool grad 'a = x1 + w; b = x2 + w; y = a * b' --wrt w --at x1=1 --count 'stages.*.*.branch'")
    assert shlex.split(echoed) == words


def test_demo_prints_no_json_dump_and_ends_with_the_line_to_paste():
    steps = [line for line in DEMO.splitlines() if line.lstrip().startswith("step ")]
    assert steps and not any("--json" in line for line in steps)
    assert "source .venv/bin/activate" in DEMO[DEMO.rindex("# 6."):]


def test_readme_says_how_to_reach_cgtool_and_lists_every_command():
    readme = (__import__("conftest").ROOT / "README.md").read_text()
    setup, quick = readme.index("## The two commands"), readme.index("## Quick start")
    assert "source .venv/bin/activate" in readme[setup:readme.index("cgtool build", quick)]
    for command in ("build", "run", "params", "summary", "grad", "paths", "graph", "layers", "validate"):
        assert f"| `cgtool {command}" in readme, command


def test_layers_shows_the_real_parameters_of_recurrent_layers(cli):
    code, out, _ = cli("layers", "LSTM", "--json")
    rows = {r["type"]: r["signature"] for r in json.loads(out)["layers"]}
    assert rows["LSTM"] == ("LSTM(input_size, hidden_size, num_layers=1, bias=True, batch_first=False, dropout=0.0, "
                            "bidirectional=False, proj_size=0)")
    code, out, _ = cli("layers", "RNN", "--json")
    rows = {r["type"]: r["signature"] for r in json.loads(out)["layers"]}
    assert rows["RNN"].startswith("RNN(input_size, hidden_size, num_layers=1, nonlinearity='tanh', bias=True")
    code, out, _ = cli("layers", "Sigmoid", "--json")
    assert {r["type"]: r["signature"] for r in json.loads(out)["layers"]}["Sigmoid"] == "Sigmoid()"


def test_recurrent_arguments_are_checked_against_those_parameters(cli, spec_file):
    text = MLP_ONE.replace("LAYER", "LSTM(784, 16, num_layer=2)")
    code, _, err = cli("build", spec_file(text))
    assert code == 1 and "did you mean 'num_layers'?" in err


def test_validate_keeps_the_hints_in_text_mode(cli, spec_file):
    bad = spec_file(MLP_ONE.replace("LAYER", "Linaer(784, 10)"), name="bad.yaml")
    good = spec_file(MLP_ONE.replace("LAYER", "Linear(784, 10)"), name="good.yaml")
    code, out, err = cli("validate", bad, good)
    assert code == 1
    assert "unknown layer type 'Linaer'" in err and "hint: did you mean 'Linear'?" in err
    assert "ok     " in out


@pytest.mark.parametrize("command", ["build", "run", "params", "summary", "grad", "layers", "validate"])
def test_help_shows_no_python_types(cli, command):
    code, out, _ = cli(command, "--help")
    assert code == 0
    assert "<str>" not in out and "list[" not in out and "<int" not in out
    if command in ("run", "build"):
        assert "--input NAME=SHAPE|FILE" in out and "--max-memory SIZE" in out


def test_wording_says_what_yaml_wrote(cli, spec_file):
    code, _, err = cli("build", spec_file(MLP_ONE.replace("LAYER", "[Linear, 3]")))
    assert code == 1 and "found a list" in err and "PosList" not in err
    code, _, err = cli("build", spec_file("- a\n- b\n"))
    assert code == 1 and "a spec must be a mapping with `kind:`, found a list" in err
    code, out, _ = cli("grad", "y = x * 2", "--at", "x=1", "--wrt", "x")
    assert "1 leaf" in out and "1 leaves" not in out


def test_pasted_dtypes_and_the_training_flag(spec_file):
    text = """\
name: M
kind: module
inputs: {x: [2, 4]}
modules:
  fc: Linear(4, 4)
forward: |
  h = F.dropout(self.fc(x), p=0.5, training=self.training)
  pos = torch.arange(4, dtype=torch.long)
  return h + pos.type_as(h) + torch.ones(4, dtype=torch.float32)
"""
    model = build_model(spec_file(text)).module
    x = torch.rand(2, 4)
    model.eval()
    torch.testing.assert_close(model(x), model.fc(x) + torch.arange(4.0) + 1)
    model.train()
    torch.manual_seed(0)
    trained = model(x)
    assert (trained - torch.arange(4.0) - 1 == 0).any()  # dropout zeroed something in training mode


@pytest.mark.parametrize("line,hint", [
    ("y = x.to(torch.float64)", "convert with .float(), .double()"),
    ("y = x.cuda()", "--device cuda"),
    ("y = x.numpy()", "-o FILE.npy"),
])
def test_common_pytorch_methods_say_what_to_write(cli, spec_file, line, hint):
    text = f"name: M\nkind: module\ninputs: {{x: [2, 4]}}\nforward: |\n  {line}\n  return y\n"
    code, _, err = cli("build", spec_file(text))
    assert code == 1 and hint in err, err


def test_a_bilinear_layer_is_not_silently_zero():
    from cgtool.inspect.summary import summarize

    s = summarize(torch.nn.Bilinear(3, 3, 2), (torch.rand(2, 3), torch.rand(2, 3)))
    assert [u.op for u in s.uncounted] == ["aten._trilinear"]
