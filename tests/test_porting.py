"""Porting reference models (issue 15): the language features a port needs, each checked against torch, and
what stays refused (the sandbox): generated layers, optional submodules, repeat names and containers,
non-persistent constants, `training`, `_`, `self.self`, math on numbers, classes as arguments, pickling."""
from __future__ import annotations
import copy
import io
import json
import math
import subprocess
import sys

import pytest
import torch
from typer.testing import CliRunner

import cgtool
from cgtool.cli import app
from cgtool.errors import CgError

ENV = {"COLUMNS": "120", "NO_COLOR": "1"}


def cli(*argv, spec: str | None = None):
    return CliRunner().invoke(app, list(argv), input=spec, env=ENV)


def module_spec(modules: str, forward: str, *, args: str = "{}", inputs: str = "{x: [2, 4]}", extra: str = "") -> str:
    return (f"name: Net\nkind: module\nargs: {args}\ninputs: {inputs}\nmodules:\n{modules}\n{extra}"
            f"forward: |\n" + "".join(f"  {line}\n" for line in forward.strip().splitlines()))


# --------------------------------------------------------------------------- optional submodules


def test_an_optional_submodule_is_none_as_in_the_reference():
    spec = module_spec("  conv: Conv2d(4, 4, 3, padding=1)\n"
                       "  downsample: >-\n    Sequential(Conv2d(4, 8, 1, stride=stride), BatchNorm2d(8))\n"
                       "      if stride != 1 else None",
                       "identity = x if downsample is None else self.downsample(x)\nreturn identity",
                       args="{stride: 1}", inputs="{x: [2, 4, 8, 8]}")
    plain = cgtool.build(spec)
    assert plain.downsample is None and [n for n, _ in plain.named_modules()] == ["", "conv"]
    x = torch.randn(2, 4, 8, 8)
    assert torch.equal(plain(x), x)
    strided = cgtool.build(spec, stride=2)  # the multi-line `>-` conditional reads as one expression
    assert [n for n, _ in strided.named_modules()] == ["", "conv", "downsample", "downsample.0", "downsample.1"]
    assert strided(x).shape == (2, 8, 4, 4)


def test_a_none_list_entry_is_left_out_and_the_next_takes_its_index():
    spec = ("kind: sequential\nargs: {expand: 1}\ninputs: {x: [2, 4]}\nlayers:\n"
            "  - Linear(4, 4) if expand != 1 else None\n  - ReLU()\n  - Linear(4, 3)\n")
    short = cgtool.build(spec)
    assert [type(m).__name__ for m in short] == ["ReLU", "Linear"] and list(short.state_dict()) == ["1.weight", "1.bias"]
    long = cgtool.build(spec, expand=6)
    assert [type(m).__name__ for m in long] == ["Linear", "ReLU", "Linear"]


# --------------------------------------------------------------------------- generated layers


def test_layers_generated_by_statements_as_the_reference_builds_them():
    spec = ("kind: sequential\nargs: {cfg: [4, M, 8]}\ninputs: {x: [1, 3, 8, 8]}\nlayers: |\n"
            "  in_channels = 3\n  for v in cfg:\n      if v == 'M':\n          layers += [MaxPool2d(2)]\n"
            "      else:\n          layers += [Conv2d(in_channels, v, 3, padding=1), ReLU(inplace=True)]\n"
            "          in_channels = v\n")
    net = cgtool.build(spec)
    want = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.ReLU(inplace=True), torch.nn.MaxPool2d(2),
                               torch.nn.Conv2d(4, 8, 3, padding=1), torch.nn.ReLU(inplace=True))
    assert repr(net) == repr(want)
    want.load_state_dict(net.state_dict())
    x = torch.randn(1, 3, 8, 8)
    assert torch.equal(net(x), want(x))


def test_a_comprehension_over_args_and_a_nested_spec_by_name(tmp_path):
    (tmp_path / "block.yaml").write_text("kind: sequential\nargs: {d: 4, act: ReLU}\n"
                                         "layers: ['Linear(d, d)', 'act()']\n")
    (tmp_path / "net.yaml").write_text("kind: sequential\nargs: {n: 3, d: 4}\ninputs: {x: [2, d]}\n"
                                       "layers: \"[spec('block.yaml', d=d, act=Tanh if i % 2 else GELU) "
                                       "for i in range(n)]\"\n")
    net = cgtool.build(str(tmp_path / "net.yaml"))
    assert [type(b[1]).__name__ for b in net] == ["GELU", "Tanh", "GELU"]
    assert len(cgtool.build(str(tmp_path / "net.yaml"), n=5)) == 5


@pytest.mark.parametrize("layers,message", [
    ('"[Linear(2, 2) for _ in range(n)]"', "cap of"),
    ('"[Linear(2, 2)] * 10 ** 9"', "over the cap"),
    ("|\n  while True:\n      layers += [ReLU()]\n", "more than 10,000 iterations"),
    ('"[__import__(\'os\')]"', "reserved"),
    ('"[open(\'x\', \'w\')]"', "unknown layer type 'open'"),
    ('"[Linear(2, 2).__class__]"', "attribute .__class__ is not allowed"),
    ('"[Linear(2, m)]"', "unknown name 'm'"),
    ('"[1, 2]"', "a layer is a call"),
    ('"[act(2) for act in [print]]"', "unknown name 'print'"),
])
def test_generated_layers_stay_in_the_sandbox(layers, message):
    spec = f"kind: sequential\nargs: {{n: 20000}}\ninputs: {{x: [2, 2]}}\nlayers: {layers}\n"
    r = cli("build", "-", spec=spec)
    assert r.exit_code == 1 and message in r.output and "Traceback" not in r.output, r.output


def test_a_class_argument_is_a_torch_nn_class_or_nothing():
    spec = "kind: sequential\nargs: {act: ReLU6}\ninputs: {x: [2, 2]}\nlayers: ['act(inplace=True)']\n"
    assert isinstance(cgtool.build(spec)[0], torch.nn.ReLU6)
    assert isinstance(cgtool.build(spec, act="Hardswish")[0], torch.nn.Hardswish)
    for bad in ("system", "Tensor", "ModuleList"):
        r = cli("build", "-", "--arg", f"act={bad}", spec=spec)
        assert r.exit_code == 1 and "Traceback" not in r.output, r.output


# --------------------------------------------------------------------------- repeat, constants


def test_repeat_names_its_copies_and_chooses_their_container():
    spec = module_spec("  layers: {type: Linear, in_features: 4, out_features: 4, "
                       "repeat: {count: 3, names: 'encoder_layer_{i}'}}\n"
                       "  h: {type: Linear, in_features: 4, out_features: 4, repeat: {count: 2, kind: modulelist}}",
                       "x = self.layers(x)\nfor block in self.h:\n    x = block(x)\nreturn x")
    net = cgtool.build(spec)
    assert list(net.layers._modules) == ["encoder_layer_0", "encoder_layer_1", "encoder_layer_2"]
    assert type(net.h) is torch.nn.ModuleList and len(net.h) == 2
    x = torch.randn(2, 4)
    want = x
    for m in [*net.layers, *net.h]:
        want = m(want)
    assert torch.equal(net(x), want)
    r = cli("build", "-", spec=spec.replace("names: 'encoder_layer_{i}'", "names: 'layer'"))
    assert r.exit_code == 1 and "{i}" in r.output


def test_a_non_persistent_constant_is_a_buffer_outside_the_state_dict():
    spec = module_spec("  lin: Linear(4, 4)", "return self.lin(x) + ids[:, :4].float()",
                       extra="constants:\n  ids: {init: arange, shape: [1, 8], dtype: long, persistent: false}\n")
    net = cgtool.build(spec)
    assert "ids" in dict(net.named_buffers()) and "ids" not in net.state_dict()
    assert torch.equal(net.ids, torch.arange(8).reshape(1, 8))
    r = cli("build", "-", spec=spec.replace("persistent: false", "persistent: maybe"))
    assert r.exit_code == 1 and "persistent must be true or false" in r.output


def test_build_lists_declared_constants_not_batchnorm_buffers():
    spec = module_spec("  bn: BatchNorm1d(4)", "return self.bn(x) + c",
                       extra="constants:\n  c: {init: ones, shape: [4]}\n")
    r = cli("build", "-", "--json", "--depth", "1", spec=spec)
    data = json.loads(r.stdout)
    assert [c["name"] for c in data["constants"]] == ["c"]
    assert [b["name"] for b in data["layer_buffers"]] == ["bn.running_mean", "bn.running_var", "bn.num_batches_tracked"]
    text = cli("build", "-", "--depth", "1", spec=spec).output
    assert "bn.running_mean" not in text and "layer buffers: 3" in text


# --------------------------------------------------------------------------- the forward language


def test_training_is_readable_and_underscore_throws_away():
    spec = module_spec("  attn: MultiheadAttention(4, 2, batch_first=True)",
                       "y, _ = self.attn(x, x, x, need_weights=False)\nreturn y * (2.0 if training else 1.0)",
                       inputs="{x: [2, 3, 4]}")
    net = cgtool.build(spec)
    x = torch.randn(2, 3, 4)
    want, _ = net.attn(x, x, x, need_weights=False)
    net.eval()
    assert torch.equal(net(x), want)
    net.train()
    assert torch.equal(net(x), want * 2.0)
    r = cli("build", "-", spec=spec.replace("return y *", "return _ + y *"))
    assert r.exit_code == 1 and "`_` cannot be read: it is the throwaway target" in r.output
    assert "hint: `_` is write-only" in r.output and "x, _ = attn(x, x, x)" in r.output
    assert "rename it" not in r.output and "Traceback" not in r.output
    r = cli("build", "-", spec=spec.replace("return y *", "return _y + y *"))  # other _names stay reserved
    assert r.exit_code == 1 and "reserved" in r.output and "hint: rename it" in r.output


def test_a_submodule_named_self():
    spec = module_spec("  self: Linear(4, 4)\n  output: Linear(4, 2)", "return self.output(self.self(x))")
    net = cgtool.build(spec)
    x = torch.randn(2, 4)
    assert torch.equal(net(x), net.output(getattr(net, "self")(x)))
    assert cli("build", "-", spec=spec.replace("self.self(x)", "self(x)")).exit_code == 1


def test_math_on_python_numbers_and_addmm():
    spec = module_spec("  lin: Linear(4, 3)",
                       "c = sqrt(2 / pi) * exp(1.0) / log(2)\nreturn addmm(self.lin.bias, x, self.lin.weight.T) * c")
    net = cgtool.build(spec)
    x = torch.randn(2, 4)
    c = math.sqrt(2 / math.pi) * math.exp(1.0) / math.log(2)
    assert torch.equal(net(x), torch.addmm(net.lin.bias, x, net.lin.weight.T) * c)


def _one_error(r) -> tuple[str, str]:
    """The error line and the hint line of a refused spec: exit 1, no traceback."""
    assert r.exit_code == 1, r.output
    assert "Traceback" not in r.output
    lines = r.output.strip().splitlines()
    assert len(lines) == 2 and lines[0].startswith("error: ") and lines[1].startswith("  hint: "), r.output
    return lines[0], lines[1]


def test_math_prefix_reaches_the_number_functions_and_constants():
    # as ported from HF: scale = math.sqrt(head_size), math.pi; a spec arg named pi leaves math.pi math's
    spec = module_spec("  lin: Linear(4, 4)",
                       "scale = math.sqrt(head_size) * math.exp(1.0) / math.log(2)\n"
                       "c = math.pi * math.e + math.pow(2.0, 0.5) + math.tanh(1.0) + math.floor(2.5) + pi\n"
                       "return self.lin(x) / scale * c + math.sqrt(x * x)",
                       args="{head_size: 16, pi: 3}")
    net = cgtool.build(spec)
    x = torch.randn(2, 4)
    scale = math.sqrt(16) * math.exp(1.0) / math.log(2)
    c = math.pi * math.e + math.pow(2.0, 0.5) + math.tanh(1.0) + math.floor(2.5) + 3
    assert torch.equal(net(x), net.lin(x) / scale * c + torch.sqrt(x * x))
    assert cli("run", "-", spec=spec).exit_code == 0


@pytest.mark.parametrize("expr, refused", [
    ("math.fabs(2.0)", "math.fabs"), ("math.relu(x)", "math.relu"), ("math.os", "math.os"),
    ("math.__dict__", "math.__dict__"), ("math.sys.modules", "math.sys.modules"), ("math.tau", "math.tau"),
])
def test_math_prefix_refuses_what_is_not_allow_listed(expr, refused):
    error, hint = _one_error(cli("build", "-", spec=module_spec("  lin: Linear(4, 4)", f"y = {expr}\nreturn x")))
    assert refused in error
    if not refused.startswith("math.__"):
        assert "not allowed" in error and "sqrt" in hint and "pi" in hint and "tanh" in hint


def test_number_math_beyond_sqrt_exp_log():
    spec = module_spec("  lin: Linear(4, 4)", "return x * tanh(1.0) + pow(2.0, 0.5) + sin(1) + log1p(0.5) + erf(0.5)")
    want = math.tanh(1.0) + math.pow(2.0, 0.5) + math.sin(1) + math.log1p(0.5) + math.erf(0.5)
    x = torch.randn(2, 4)
    assert torch.allclose(cgtool.build(spec)(x), x * math.tanh(1.0) + (want - math.tanh(1.0)))
    # on tensors they stay torch's
    spec = module_spec("  lin: Linear(4, 4)", "return tanh(x) + pow(x, 2) + pow(2.0, x)")
    assert torch.equal(cgtool.build(spec)(x), torch.tanh(x) + torch.pow(x, 2) + torch.pow(2.0, x))


@pytest.mark.parametrize("expr, message, hint", [
    ("sqrt(-1.0)", "sqrt(-1.0) on Python numbers: math domain error", "needs one >= 0"),
    ("log(0.0)", "log(0.0) on Python numbers: math domain error", "needs one > 0"),
    ("exp(1000.0)", "exp(1000.0) on Python numbers: math range error", "largest float"),
    ("pow(-8.0, 0.5)", "pow(-8.0, 0.5) on Python numbers", "fractional power"),
    ("1 / 0", "division by zero on Python numbers", "divided by zero"),
    ("d / (d - 4)", "division by zero on Python numbers (values: d = 4)", "divided by zero"),
    ("10.0 ** (d * 100)", "a Python number out of range (values: d = 4)", "largest float"),
    ("sigmoid(1.0)", "sigmoid() takes a tensor, and gets a Python float", "full((), value)"),
])
def test_number_math_errors_say_what_is_wrong_with_the_numbers(expr, message, hint):
    spec = module_spec("  lin: Linear(4, 4)", f"return x * ({expr})", args="{d: 4}")
    error, hint_line = _one_error(cli("run", "-", spec=spec))
    assert message in error and error.startswith("error: <stdin>:8")
    assert hint in hint_line and "the shape it receives" not in hint_line


def test_calling_an_absent_optional_submodule_says_it_is_none():
    spec = module_spec('  lin: Linear(d, d)\n  proj: "Linear(d, d) if use else None"', "return self.proj(self.lin(x))",
                       args="{d: 4, use: false}")
    error, hint = _one_error(cli("run", "-", spec=spec))
    assert "proj is None" in error and "optional submodule" in error and error.startswith("error: <stdin>:9")
    assert "test it first: `if proj is not None:`" in hint and "NoneType" not in error
    error, hint = _one_error(cli("run", "-", spec=spec.replace("self.proj(self.lin(x))", "x @ self.proj.weight")))
    assert "proj is None" in error and "if proj is not None" in hint
    assert cli("run", "-", "--arg", "use=true", spec=spec).exit_code == 0


def test_the_eject_writes_math_for_numbers_and_torch_for_tensors(tmp_path):
    spec = module_spec("  lin: Linear(4, 4)",
                       "scale = math.sqrt(head_size) * sqrt(x.size(-1))\nh = math.sqrt(scale) * math.pi + pi\n"
                       "return self.lin(x) / h + math.sqrt(x * x) + tanh(1.0) + pow(x, 2) + math.pow(2.0, 0.5)",
                       args="{head_size: 16, pi: 3}")
    out = tmp_path / "net.py"
    r = cli("export", "-", "--to", "python", "-o", str(out), spec=spec)
    assert r.exit_code == 0, r.output
    code = out.read_text()
    assert "import math" in code and "math.sqrt(self.head_size) * math.sqrt(x.size(-1))" in code
    assert "math.sqrt(scale) * math.pi + self.pi" in code and "torch.sqrt(x * x)" in code
    assert "math.tanh(1.0)" in code and "torch.pow(x, 2)" in code and "math.pow(2.0, 0.5)" in code
    namespace = {}
    exec(compile(code, str(out), "exec"), namespace)  # noqa: S102 - the test's own ejected file
    net = cgtool.build(spec)
    ref = namespace["Net"]()
    ref.load_state_dict(net.state_dict())
    x = torch.randn(2, 4)
    assert torch.allclose(ref(x), net(x))


# --------------------------------------------------------------------------- named containers


def test_a_named_sequential_is_a_subclass_of_that_name(tmp_path):
    """torchvision's MLPBlock and Conv2dNormActivation are nn.Sequential subclasses: `name:` on a sequential spec
    (inline, in a file, or given where a file is included) builds one, and only a given name does."""
    (tmp_path / "cna.yaml").write_text("name: ConvNormAct\nkind: sequential\nargs: {c: 4}\n"
                                       "layers: ['Conv2d(c, c, 3, padding=1)', BatchNorm2d(c), ReLU()]\n")
    (tmp_path / "plain.yaml").write_text("kind: sequential\nlayers: [ReLU()]\n")
    (tmp_path / "top.yaml").write_text(
        "name: Net\nkind: module\ninputs: {x: [2, 4, 6, 6]}\nmodules:\n"
        "  stem: {spec: cna.yaml}\n"
        "  head: {spec: cna.yaml, name: Head}\n"
        "  mlp: {name: MLPBlock, kind: sequential, layers: [Flatten(), 'Linear(144, 8)', GELU()]}\n"
        "  again: {name: MLPBlock, kind: sequential, layers: ['Linear(8, 8)']}\n"
        "  tail: {kind: sequential, layers: [Identity()]}\n"
        "  same: {name: Sequential, kind: sequential, layers: [Identity()]}\n"
        "  act: {spec: plain.yaml}\n"
        "forward: |\n  return act(tail(same(again(mlp(head(stem(x)))))))\n")
    net = cgtool.build(str(tmp_path / "top.yaml"))
    names = {n: type(m).__name__ for n, m in net.named_children()}
    assert names == {"stem": "ConvNormAct", "head": "Head", "mlp": "MLPBlock", "again": "MLPBlock",
                     "tail": "Sequential", "same": "Sequential", "act": "Sequential"}
    assert all(isinstance(m, torch.nn.Sequential) for m in net.children())
    assert type(net.mlp) is type(net.again)  # one class per name: they differ in nothing but their layers
    assert type(net.tail) is torch.nn.Sequential and type(net.act) is torch.nn.Sequential
    assert str(net.mlp).startswith("MLPBlock(\n  (0): Flatten")  # print(model) shows the name, as torchvision's
    x = torch.randn(2, 4, 6, 6)
    net.eval()
    want = net.act(net.tail(net.same(net.again(net.mlp(net.head(net.stem(x)))))))
    assert torch.equal(net(x), want)
    clone = copy.deepcopy(net)
    assert type(clone.mlp) is type(net.mlp) and torch.equal(clone(x), want)
    # the classes are importable by name, so a pickled model loads in a fresh process
    torch.save(net, tmp_path / "model.pt")
    torch.save((x, want), tmp_path / "io.pt")
    code = ("import torch\nm = torch.load('model.pt', weights_only=False)\nx, y = torch.load('io.pt')\n"
            "print(type(m.mlp).__module__, type(m.mlp).__name__, type(m.stem).__name__, torch.allclose(m(x), y))")
    done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert done.stdout.split() == ["cgtool.named", "MLPBlock", "ConvNormAct", "True"], done.stderr


def test_a_named_sequential_takes_the_fast_forward_and_its_hooks(monkeypatch):
    """A named sequential is inlined as nn.Sequential is when nothing watches, and called as a module when a hook
    is on it (its class overrides nothing)."""
    spec = module_spec("  mlp: {name: MLPBlock, kind: sequential, layers: ['Linear(4, 8)', ReLU(), 'Linear(8, 2)']}",
                       "return mlp(x)")
    net = cgtool.build(spec)
    calls = []
    real = torch.nn.Module.__call__

    def counting(self, *a, **k):
        calls.append(type(self).__name__)
        return real(self, *a, **k)

    monkeypatch.setattr(torch.nn.Module, "__call__", counting)
    x = torch.randn(2, 4)
    fast = net(x)
    assert calls == []  # the model, MLPBlock and its layers: no module call at all
    seen = []
    net.mlp.register_forward_hook(lambda m, i, o: seen.append(type(m).__name__))
    assert torch.equal(net(x), fast) and seen == ["MLPBlock"]


# --------------------------------------------------------------------------- args, pickling


def test_an_included_derived_arg_is_computed_from_the_args_given(tmp_path):
    (tmp_path / "block.yaml").write_text("kind: module\nargs: {d: 8, ff: 4 * d}\nmodules:\n  up: Linear(d, ff)\n"
                                         "forward: |\n  return up(x)\n")
    (tmp_path / "top.yaml").write_text("kind: sequential\ninputs: {x: [2, 16]}\n"
                                       "layers:\n  - {spec: block.yaml, args: {d: 16}}\n")
    assert cgtool.build(str(tmp_path / "top.yaml"))[0].up.out_features == 64
    assert cgtool.build(str(tmp_path / "block.yaml"), d=3).up.out_features == 12  # --arg too


def test_a_built_module_pickles_whole(tmp_path):
    net = cgtool.build("configs/gpt2_block.yaml", d=16, heads=2).eval()
    x = torch.randn(1, 5, 16)
    torch.save(net, tmp_path / "model.pt")
    threads = torch.get_num_threads()  # bitwise equal across processes needs the same thread count
    torch.set_num_threads(1)
    try:
        torch.save((x, net(x)), tmp_path / "io.pt")
    finally:
        torch.set_num_threads(threads)
    clone = copy.deepcopy(net)
    assert type(clone) is type(net) and torch.equal(clone(x), net(x))
    code = ("import torch\ntorch.set_num_threads(1)\nm = torch.load('model.pt', weights_only=False)\n"
            "x, y = torch.load('io.pt')\n"
            "assert type(m).__name__ == 'GPT2Block' and torch.equal(m(x), y)\nprint('ok')")
    done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert done.stdout.strip() == "ok", done.stderr


def _ejected(path, tmp_path, cls: str, **args):
    import importlib.util

    out = tmp_path / f"{cls}.py"
    r = cli("export", path, "--to", "python", "-o", str(out))
    assert r.exit_code == 0, r.output
    loader = importlib.util.spec_from_file_location(f"ejected_{cls}", out)
    mod = importlib.util.module_from_spec(loader)
    loader.loader.exec_module(mod)
    return getattr(mod, cls)(**args)


@pytest.mark.parametrize("name,cls,args,x", [
    ("gpt2_small", "GPT2LMHeadModel", dict(n_layer=2, n_embd=32, n_head=2, vocab_size=50, n_positions=16),
     lambda: torch.randint(0, 50, (2, 5))),
    ("bert_base", "BertModel", dict(num_layers=1, hidden=32, heads=2, intermediate=64, vocab_size=50, max_position=16),
     lambda: torch.randint(0, 50, (2, 5))),
    ("vit_b_16", "VisionTransformer", dict(image_size=32, num_layers=1, num_heads=2, hidden_dim=32, mlp_dim=64),
     lambda: torch.randn(2, 3, 32, 32)),
    ("resnet18", "ResNet", {}, lambda: torch.randn(2, 3, 64, 64)),
    ("resnet50", "ResNet", dict(depths=[1, 2, 1, 1]), lambda: torch.randn(2, 3, 64, 64)),
    ("vgg16", "VGG", dict(num_classes=10), lambda: torch.randn(2, 3, 32, 32)),
    ("mobilenet_v2", "MobileNetV2", {}, lambda: torch.randn(2, 3, 64, 64)),
    ("squeezenet", "SqueezeNet", dict(version="1_1"), lambda: torch.randn(2, 3, 64, 64)),
    ("shufflenet_v2", "ShuffleNetV2", {}, lambda: torch.randn(2, 3, 64, 64)),
])
def test_the_eject_writes_what_porting_needs(name, cls, args, x, tmp_path):
    """training, self.self, sqrt of a number, repeat's names and container, a derived top arg (ViT's seq_length),
    layer lists generated by a program (VGG's cfg, MobileNet-v2's table, ResNet's blocks from a `block` arg, which
    becomes a class argument as torchvision's), `X if cond else None` list entries, spec(...) calls and classes as
    args, in plain PyTorch: the ejected class builds the same module tree and with the same weights gives the same
    outputs."""
    path = f"configs/zoo/{name}.yaml"
    ours = cgtool.build(path, **args).eval()
    plain = _ejected(path, tmp_path, cls, **args).eval()
    # the same tree, class names included: unnamed inline containers are nn.Sequential, named ones a subclass
    assert [(n, type(m).__name__) for n, m in plain.named_modules()] == \
        [(n, type(m).__name__) for n, m in ours.named_modules()]
    assert list(plain.state_dict()) == list(ours.state_dict())
    plain.load_state_dict(ours.state_dict())
    x = x()
    got, want = plain(x), ours(x)
    got, want = (got, want) if isinstance(got, tuple) else ((got,), (want,))
    assert all(torch.equal(g, w) for g, w in zip(got, want))


def test_an_arg_named_layers_and_the_list_being_built():
    comprehension = "kind: sequential\nargs: {layers: 3}\ninputs: {x: [2, 2]}\nlayers: '[Linear(2, 2) for _ in range(layers)]'\n"
    assert len(cgtool.build(comprehension)) == 3
    statements = ("kind: sequential\nargs: {layers: 3}\ninputs: {x: [2, 2]}\nlayers: |\n  for i in range(layers):\n"
                  "      layers += [Linear(2, 2)]\n")
    r = cli("build", "-", spec=statements)
    assert r.exit_code == 1 and "would hide the list" in r.output


def test_the_eject_keeps_entries_these_args_leave_out(tmp_path):
    """InvertedResidual's expand conv is `... if expand_ratio != 1 else None`: absent with the file's defaults, and
    still written, so the ejected class builds it for other args (its block class loaded on its own)."""
    path = "configs/zoo/mobilenet_v2_block.yaml"
    args = dict(inp=16, oup=24, stride=2, expand_ratio=6)
    ours = cgtool.build(path, **args).eval()
    plain = _ejected(path, tmp_path, "InvertedResidual", **args).eval()
    assert [n for n, _ in plain.named_modules()] == [n for n, _ in ours.named_modules()]
    assert type(plain.conv[0]).__name__ == "Conv2dNormActivation" and len(plain.conv) == 4
    plain.load_state_dict(ours.state_dict())
    x = torch.randn(2, 16, 8, 8)
    assert torch.equal(plain(x), ours(x))
    assert len(_ejected(path, tmp_path, "InvertedResidual").conv) == 3  # the defaults: no expand conv


@pytest.mark.parametrize("kind,layers,forward", [
    ("modulelist", "|\n  for i in range(n):\n      layers += [Linear(d, d) if i % 2 == 0 else None, Tanh()]",
     "for layer in layers:\n    x = layer(x)\nreturn x"),
    ("sequential", "'[Linear(d, d) for _ in range(n)] + [Identity() if n > 5 else None]'", None),
    ("sequential", "|\n  layers = [Linear(d, d)]\n  layers += [ReLU() for _ in range(n)]", None),
])
def test_the_eject_of_generated_lists_runs_the_same_program(kind, layers, forward, tmp_path):
    text = f"name: Net\nkind: {kind}\nargs: {{d: 4, n: 3}}\ninputs: {{x: [2, 4]}}\nlayers: {layers}\n"
    if forward:
        text += "forward: |\n" + "".join(f"  {line}\n" for line in forward.splitlines())
    (tmp_path / "net.yaml").write_text(text)
    for args in ({}, {"n": 6}):
        ours = cgtool.build(str(tmp_path / "net.yaml"), **args)
        plain = _ejected(str(tmp_path / "net.yaml"), tmp_path, "Net", **args)
        assert [(n, type(m).__name__) for n, m in plain.named_modules()][1:] == \
            [(n, type(m).__name__) for n, m in ours.named_modules()][1:]
        plain.load_state_dict(ours.state_dict())
        x = torch.randn(2, 4)
        assert torch.equal(plain(x), ours(x))


def test_the_eject_refuses_a_ref_beside_an_entry_that_may_be_none(tmp_path):
    (tmp_path / "net.yaml").write_text("name: Net\nkind: sequential\nargs: {k: 1}\ninputs: {x: [2, 4]}\nlayers:\n"
                                       "  - Linear(4, 4)\n  - 'ReLU() if k else None'\n  - {ref: '0'}\n")
    r = cli("export", str(tmp_path / "net.yaml"), "--to", "python")
    assert r.exit_code == 1 and "beside an entry that may be None" in r.output and "hint:" in r.output
    assert "Traceback" not in r.output


# --------------------------------------------------------------------------- what a port pastes (review findings)


@pytest.mark.parametrize("layers,shared,params", [
    ('"[Linear(4, 4)] * 3"', [(0, 1), (0, 2), (1, 2)], 20),  # one object listed three times, as Python shares it
    ("|\n  l = Linear(4, 4)\n  layers = [l, ReLU(), l]", [(0, 2)], 20),
    ('"[Linear(4, 4) if i > 0 else None for i in range(2)] + [ReLU()] * 2"', [(1, 2)], 20),  # after a None
    ('"[Linear(4, 4) for _ in range(3)]"', [], 60),  # three objects: three layers
])
def test_generated_lists_share_what_python_shares(layers, shared, params):
    net = cgtool.build(f"name: G\nkind: sequential\ninputs: {{x: [2, 4]}}\nlayers: {layers}\n")
    assert sum(p.numel() for p in net.parameters()) == params
    assert [(i, j) for i in range(len(net)) for j in range(i + 1, len(net)) if net[i] is net[j]] == shared


def test_one_object_inside_another_layers_arguments_is_refused():
    r = cli("build", "-", spec="name: G\nkind: sequential\ninputs: {x: [2, 4]}\n"
                               "layers: |\n  l = Linear(4, 4)\n  layers = [Sequential(l, l)]\n")
    assert r.exit_code == 1 and "used twice, inside another layer's arguments" in r.output and "{ref: N}" in r.output


def test_append_and_extend_as_the_reference_writes_them(tmp_path):
    text = ("name: A\nkind: sequential\nargs: {cfg: [8, M, 16]}\ninputs: {x: [2, 3, 8, 8]}\nlayers: |\n"
            "  c = 3\n  for v in cfg:\n      if v == 'M':\n          layers.append(nn.MaxPool2d(2))  # pool\n"
            "      else:\n          layers.extend([nn.Conv2d(c, v, 3, padding=1), nn.ReLU(inplace=True)])\n"
            "          c = v\n")
    net = cgtool.build(text)
    assert [type(m).__name__ for m in net] == ["Conv2d", "ReLU", "MaxPool2d", "Conv2d", "ReLU"]
    (tmp_path / "a.yaml").write_text(text)
    plain = _ejected(str(tmp_path / "a.yaml"), tmp_path, "A")  # the eject writes the same program
    assert [type(m).__name__ for m in plain] == ["Conv2d", "ReLU", "MaxPool2d", "Conv2d", "ReLU"]
    r = cli("build", "-", spec=text.replace("nn.Conv2d(c, v,", "nn.Conv2d(c, vv,"))
    assert r.exit_code == 1 and "unknown name 'vv'" in r.output  # errors still found


def test_nn_prefixes_and_none_entries_as_reference_code_writes_them():
    net = cgtool.build("name: N\nkind: module\nargs: {act: nn.ReLU6}\ninputs: {x: [2, 4]}\nmodules:\n"
                       "  a: torch.nn.Linear(4, 4)\n  b: None\n  c: act(inplace=True)\n"
                       "forward: |\n  return c(a(x)) if b is None else x\n")
    assert type(net.a) is torch.nn.Linear and net.b is None and type(net.c) is torch.nn.ReLU6
    r = cli("build", "-", spec="name: N\nkind: sequential\ninputs: {x: [2, 4]}\nlayers: ['nn.functional.relu(4)']\n")
    assert r.exit_code == 1 and "is not allowed" in r.output  # only torch.nn classes lose the prefix


def test_a_wrong_arg_of_an_included_spec_is_said_at_the_include(tmp_path):
    (tmp_path / "fire.yaml").write_text("name: Fire\nkind: sequential\nargs: {c: 4}\nlayers: ['Linear(c, c)']\n")
    for n, entry in enumerate(("\"spec('fire.yaml', bogus=1)\"", "{spec: fire.yaml, args: {cc: 1}}")):
        (tmp_path / f"top{n}.yaml").write_text(f"name: Top\nkind: sequential\ninputs: {{x: [2, 4]}}\nlayers:\n"
                                                f"  - {entry}\n")
        r = cli("build", str(tmp_path / f"top{n}.yaml"))
        assert r.exit_code == 1, r.output
        assert f"top{n}.yaml:5:" in r.output and "layers[0]: fire.yaml has no arg" in r.output
    assert "did you mean 'c'?" in r.output
    r = cli("build", str(tmp_path / "fire.yaml"), "--arg", "bogus=2")
    assert r.exit_code == 1 and "--arg: the spec has no arg 'bogus'" in r.output


@pytest.mark.parametrize("name,message", [
    ("class", "'class' is a Python keyword"), ("None", "'None' is a Python keyword"),
    ("__init__", "'__init__' is a dunder name"),
])
def test_a_class_name_that_python_cannot_have_is_refused(name, message):
    for spec in (f"name: {name}\nkind: sequential\ninputs: {{x: [2, 4]}}\nlayers: [ReLU()]\n",
                 f"name: N\nkind: module\ninputs: {{x: [2, 4]}}\nmodules:\n"
                 f"  m: {{name: {name}, kind: sequential, layers: [ReLU()]}}\nforward: |\n  return m(x)\n"):
        r = cli("build", "-", spec=spec)
        assert r.exit_code == 1 and message in r.output and "hint:" in r.output, r.output


def test_an_arg_named_training_is_refused():
    r = cli("build", "-", spec="name: T\nkind: sequential\nargs: {training: 5}\ninputs: {x: [2, 4]}\nlayers: [ReLU()]\n")
    assert r.exit_code == 1 and "would hide the module's training flag" in r.output


@pytest.mark.parametrize("names,keys", [
    ("denselayer{i + 1}", ["denselayer1", "denselayer2", "denselayer3"]),  # torchvision's DenseNet counts from 1
    ("block_{i:02d}", ["block_00", "block_01", "block_02"]),
    ("l{2 * i}", ["l0", "l2", "l4"]),
])
def test_repeat_names_are_an_expression_over_i(names, keys, tmp_path):
    text = (f"name: R\nkind: module\ninputs: {{x: [2, 4]}}\nmodules:\n  blocks: {{type: Linear, in_features: 4, "
            f"out_features: 4, repeat: {{count: 3, names: \"{names}\"}}}}\nforward: |\n  return blocks(x)\n")
    net = cgtool.build(text)
    assert [k for k, _ in net.blocks.named_children()] == keys
    (tmp_path / "r.yaml").write_text(text)
    plain = _ejected(str(tmp_path / "r.yaml"), tmp_path, "R")  # the eject's f-string names them alike
    assert list(plain.state_dict()) == list(net.state_dict())


@pytest.mark.parametrize("names,message", [
    ("x{0}", "makes 'x0' twice"), ("x{i}{i}", "one {i} field"), ("x{i!r}", "one {i} field"),
    ("9{i}", "makes '90', which is not a name"), ("x{i / 2}", "not a whole number"), ("x{i:>5}", "one {i} field"),
    ("x{__import__('os')}", "unknown function '__import__'"),
])
def test_repeat_names_that_cannot_name_copies_are_refused(names, message):
    r = cli("build", "-", spec=f"name: R\nkind: module\ninputs: {{x: [2, 4]}}\nmodules:\n  blocks: {{type: Linear, "
                               f"in_features: 4, out_features: 4, repeat: {{count: 3, names: \"{names}\"}}}}\n"
                               "forward: |\n  return blocks(x)\n")
    assert r.exit_code == 1 and message in r.output and "Traceback" not in r.output, r.output


def test_training_in_a_layers_arguments_says_where_it_can_be_read():
    r = cli("build", "-", spec="name: T\nkind: sequential\ninputs: {x: [2, 4]}\n"
                               "layers: ['Dropout(0.1 if training else 0.0)']\n")
    assert r.exit_code == 1 and "unknown name 'training'" in r.output and "read in the forward only" in r.output


def test_append_lines_with_brackets_in_comments_and_two_arguments():
    ok = cli("build", "-", spec="name: A\nkind: sequential\ninputs: {x: [2, 4]}\nlayers: |\n  layers = [Linear(4, 4)]\n"
                                "  layers.append(ReLU())  # as in f(x)\n  layers.extend([Tanh()])  # g([y])\n")
    assert ok.exit_code == 0 and "2  Tanh()" in ok.output, ok.output
    r = cli("build", "-", spec="name: A\nkind: sequential\ninputs: {x: [2, 4]}\nlayers: |\n"
                               "  layers.append(ReLU(), Tanh())\n")
    assert r.exit_code == 1 and "take one argument" in r.output and "Traceback" not in r.output


@pytest.mark.parametrize("spec", [
    # a class arg listed bare (`act`: its instance), inline named sequentials listed and generated: one class Stage
    "name: Net\nkind: module\nargs: {d: 4, v: \"1_0\", act: nn.ReLU6, n: 2}\ninputs: {x: [2, 4]}\nmodules:\n"
    "  a:\n    kind: sequential\n    name: Stage\n    layers:\n"
    "      - 'Linear(d, d) if v == \"1_0\" else Linear(d, 2 * d)'\n      - act\n"
    "      - {kind: sequential, name: Stage, layers: ['Linear(d, d)', act]}\n"
    "  b:\n    kind: sequential\n    name: Stage\n    layers: |\n      layers = [Linear(d, d) for _ in range(n)]\n"
    "      layers.append(act())\nforward: |\n  return self.b(self.a(x))\n",
    # args named as the eject's own module-level names would be
    "name: Net\nkind: module\nargs: {d: 4, make_body: 2, Stage: 1}\ninputs: {x: [2, 4]}\nmodules:\n"
    "  body: {kind: sequential, layers: '[Linear(d, d) for _ in range(make_body)]'}\n"
    "  stage: {kind: sequential, name: Stage, layers: ['Linear(d, d)', ReLU()]}\n"
    "forward: |\n  return self.stage(self.body(x))\n",
])
def test_the_eject_of_class_args_and_names_it_must_not_hide(spec, tmp_path):
    (tmp_path / "net.yaml").write_text(spec)
    ours = cgtool.build(str(tmp_path / "net.yaml"))
    plain = _ejected(str(tmp_path / "net.yaml"), tmp_path, "Net")
    assert list(plain.state_dict()) == list(ours.state_dict())
    if "make_body" not in spec:  # (an arg named Stage makes the eject call the class Stage2)
        assert [(n, type(m).__name__) for n, m in plain.named_modules()] == \
            [(n, type(m).__name__) for n, m in ours.named_modules()]
    plain.load_state_dict(ours.state_dict())
    x = torch.randn(2, 4)
    assert torch.equal(plain(x), ours(x))


def test_a_huge_value_is_cut_short_in_messages():
    """One --arg of 100,000 strings of 100,000 characters: the message quotes a few hundred, in bounded memory."""
    r = cli("build", "-", "--arg", "n=('x'*100000,)*100000",
            spec="name: V\nkind: sequential\nargs: {n: 4}\ninputs: {x: [2, 4]}\nlayers: ['Linear(n, n)']\n")
    assert r.exit_code == 1 and len(r.output) < 2000 and "…" in r.output, r.output[:300]


def test_the_eject_reads_no_spec_file_outside_the_spec_folder(tmp_path):
    """A spec() behind a false condition was never read by the build; the eject reads it only from inside the
    spec's folder (the loader's rule for includes), and an arg naming an outside file stays a string."""
    (tmp_path / "secret.yaml").write_text("name: Secret\nkind: sequential\nlayers: [ReLU()]\n")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "net.yaml").write_text("name: Net\nkind: sequential\nargs: {k: 0}\ninputs: {x: [2, 4]}\n"
                                               "layers:\n  - \"spec('../secret.yaml') if k else None\"\n  - ReLU()\n")
    assert cli("build", str(tmp_path / "sub" / "net.yaml")).exit_code == 0
    r = cli("export", str(tmp_path / "sub" / "net.yaml"), "--to", "python")
    assert r.exit_code == 1 and "outside the spec's folder" in r.output and "Traceback" not in r.output
    (tmp_path / "sub" / "net2.yaml").write_text("name: Net\nkind: sequential\nargs: {b: ../secret.yaml}\n"
                                                "inputs: {x: [2, 4]}\nlayers: [ReLU()]\n")
    r = cli("export", str(tmp_path / "sub" / "net2.yaml"), "--to", "python")
    assert r.exit_code == 0 and "b='../secret.yaml'" in r.output and "Secret" not in r.output
