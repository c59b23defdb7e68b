"""Hardening, a second round (issue 12): the holes it found, each a test, and a red-team corpus.

Every hostile input is refused with exit 1, a one-line `error:` naming its place, no traceback, no
internal error, and no side effect: no marker file appears and no file in the working folder changes.
"""
from __future__ import annotations

import os
import pickle
import time

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from cgtool import lang
from cgtool.cli import app
from cgtool.errors import CgError

ENV = {"COLUMNS": "200", "NO_COLOR": "1"}
MARK = "pwned"  # what every payload tries to create in the working folder


def cli(*args, input=None, env=None):
    return CliRunner().invoke(app, [str(a) for a in args], env={**ENV, **(env or {})}, input=input)


def tree(folder) -> dict:
    """Every file under *folder* with its size and modification time."""
    out = {}
    for root, _, files in os.walk(folder):
        for f in files:
            p = os.path.join(root, f)
            st = os.lstat(p)
            out[os.path.relpath(p, folder)] = (st.st_size, st.st_mtime_ns)
    return out


def refused(r, *needles):
    assert r.exit_code == 1, (r.exit_code, r.stdout, r.stderr)
    lines = r.stderr.strip().splitlines()
    assert lines and lines[0].startswith("error: "), r.stderr
    assert "internal error" not in r.stderr and "Traceback" not in r.stderr, r.stderr
    for needle in needles:
        assert needle in r.stderr, r.stderr


HEAD = ('name: T\nkind: module\ninputs: {x: [2, 4]}\nmodules: {l: "Linear(4, 4)"}\n'
        'constants: {c: {init: ones, shape: [4]}}\nforward: |\n')


def module_spec(body: str) -> str:
    return HEAD + "".join(f"  {line}\n" for line in body.split("\n"))


def container_spec(kind: str, body: str) -> str:
    layers = 'layers: ["Linear(4, 4)"]' if kind == "modulelist" else 'modules: {a: "Linear(4, 4)"}'
    return (f"name: T\nkind: {kind}\ninputs: {{x: [2, 4]}}\n{layers}\nforward: |\n"
            + "".join(f"  {line}\n" for line in body.split("\n")))


# --------------------------------------------------------------------------- 1. includes


def _write(folder, name, text):
    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


SECRET = "name: Secret\nkind: sequential\nlayers: [ReLU()]\n"
INCLUDING = "name: Top\nkind: sequential\ninputs: {x: [2, 4]}\nlayers:\n  - {spec: %s}\n"


def test_a_spec_from_stdin_includes_nothing_unless_base_names_a_folder(tmp_path, monkeypatch):
    _write(tmp_path, "secret.yaml", SECRET)
    monkeypatch.chdir(tmp_path)
    refused(cli("build", "-", input=INCLUDING % "secret.yaml"), "<stdin>:5:5", "cannot include 'secret.yaml'",
            "--base DIR")
    r = cli("build", "-", "--base", tmp_path, input=INCLUDING % "secret.yaml")
    assert r.exit_code == 0, r.stderr
    refused(cli("build", "-", "--base", tmp_path / "nowhere", input=INCLUDING % "secret.yaml"), "--base")
    # with --base, the folder is the fence: nothing above it
    _write(tmp_path, "sub/x.yaml", SECRET)
    refused(cli("build", "-", "--base", tmp_path / "sub", input=INCLUDING % "../secret.yaml"),
            "outside the spec's folder")


@pytest.mark.parametrize("how", ["dotdot", "absolute", "symlink", "hardlink"])
def test_includes_stay_inside_the_spec_folder(tmp_path, how):
    secret = _write(tmp_path, "secret.yaml", SECRET)
    (tmp_path / "spec").mkdir()
    target = {"dotdot": "../secret.yaml", "absolute": str(secret)}.get(how, "block.yaml")
    if how == "symlink":
        os.symlink(secret, tmp_path / "spec" / "block.yaml")
    elif how == "hardlink":
        os.link(secret, tmp_path / "spec" / "block.yaml")
    top = _write(tmp_path, "spec/top.yaml", INCLUDING % target)
    needle = {"absolute": "must be relative", "hardlink": "other hard links"}.get(how, "outside the spec's folder")
    refused(cli("build", top), needle, "top.yaml:5:5")


def test_a_symlink_inside_the_folder_is_followed(tmp_path):
    _write(tmp_path, "blocks/real.yaml", SECRET)
    os.symlink(tmp_path / "blocks" / "real.yaml", tmp_path / "alias.yaml")
    top = _write(tmp_path, "top.yaml", INCLUDING % "alias.yaml")
    assert cli("build", top).exit_code == 0


def test_the_same_include_is_parsed_once(tmp_path, monkeypatch):
    from cgtool.spec import load, yamlpos

    _write(tmp_path, "block.yaml", SECRET)
    top = _write(tmp_path, "top.yaml", "name: Top\nkind: sequential\ninputs: {x: [2, 4]}\nlayers:\n"
                 + "  - {spec: block.yaml}\n" * 100)
    calls = []
    real = yamlpos.load
    monkeypatch.setattr(yamlpos, "load", lambda text, file: calls.append(file) or real(text, file))
    spec = load.load_spec(str(top))
    assert len(spec.layers) == 100 and len(calls) == 2  # the top file and the block, once each


def test_repeated_includes_still_count_against_the_layer_cap(tmp_path, monkeypatch):
    from cgtool.spec import load

    monkeypatch.setattr(load, "MAX_LAYERS", 150)
    _write(tmp_path, "block.yaml", "kind: sequential\nlayers:\n  - {type: ReLU, repeat: 10}\n")
    top = _write(tmp_path, "top.yaml", "kind: sequential\nlayers:\n" + "  - {spec: block.yaml}\n" * 20)
    with pytest.raises(CgError, match="more than 150 layers"):
        load.load_spec(str(top))


def test_nested_repeat_multiplies_against_the_layer_cap():
    # 100 copies of a block of 100 copies of a block of 100 layers: 10^6 modules, not 300
    spec = ("name: N\nkind: sequential\nlayers:\n  - repeat: 100\n    kind: sequential\n    layers:\n"
            "      - repeat: 100\n        kind: sequential\n        layers:\n          - {type: ReLU, repeat: 100}\n")
    start = time.monotonic()
    refused(cli("build", "-", input=spec), "layers in all")
    assert time.monotonic() - start < 20


@pytest.mark.parametrize("layer", ["TransformerEncoder(TransformerEncoderLayer(8, 2), 1000000)",
                                   "LSTM(4, 4, num_layers=100000)", "GRU(4, 4, 50000)"])
def test_stacked_layer_counts_are_capped(layer):
    start = time.monotonic()
    refused(cli("build", "-", "--device", "meta", input=f"name: S\nkind: sequential\nlayers: ['{layer}']\n"),
            "over the cap of 1,000 stacked layers")
    assert time.monotonic() - start < 20


# --------------------------------------------------------------------------- 2. the forward does not change the model

MUTATIONS = {
    "data_subscript": "w = l.weight.data\nw[0] = 5\nreturn l(x)",
    "weight_subscript": "w = l.weight\nw[0] = 5\nreturn l(x)",
    "view_subscript": "w = l.weight.T\nw[0] += 5\nreturn l(x)",
    "detached_subscript": "w = l.weight.detach()\nw[0, 0] = 5\nreturn l(x)",
    "row_of_weight": "l.weight[0][1] = 5\nreturn l(x)",
    "constant_subscript": "c[0] = 5\nreturn l(x)",
    "constant_augmented": "c[1:] *= 2\nreturn l(x)",
    "half": "l.half()\nreturn x",
    "float": "m = l\nm.float()\nreturn l(x)",
    "out_keyword": "y = exp(x, out=c)\nreturn l(x)",
    "inplace_keyword": "y = elu(l.weight, inplace=True)\nreturn l(x)",
    "max_norm_keyword": "y = embedding(zeros(2, dtype=torch.long), l.weight, max_norm=1.0)\nreturn l(x)",
    "max_norm_positional": "y = embedding(zeros(2, dtype=torch.long), l.weight, None, 1.0)\nreturn l(x)",
    "parameter_passed_in_a_loop": "for t in [l.weight, c]:\n    t[0] = 1\nreturn l(x)",
}


@pytest.mark.parametrize("name", sorted(MUTATIONS))
def test_a_forward_cannot_change_the_model(tmp_path, monkeypatch, name):
    monkeypatch.chdir(tmp_path)
    before = tree(tmp_path)
    refused(cli("build", "-", "--save", "w.pt", input=module_spec(MUTATIONS[name])), "<stdin>:")
    assert tree(tmp_path) == before  # no weights written


@pytest.mark.parametrize("kind,body,needle", [
    ("moduledict", 'modules["a"] = modules["a"]\nreturn modules["a"](x)', "cannot change the model"),
    ("modulelist", "layers[0] = layers[0]\nreturn layers[0](x)", "cannot change the model"),
    ("modulelist", "x = layers[0:1](x)\nx = layers[0:1](x)\nreturn x", "calls its own module"),
    ("moduledict", "return modules(x)", "calls its own module"),
    ("moduledict", 'modules.pop("a")\nreturn x', "attribute .pop is not allowed"),
    ("moduledict", "modules.clear()\nreturn x", "attribute .clear is not allowed"),
    ("moduledict", "modules.update(modules)\nreturn x", "attribute .update is not allowed"),
    ("modulelist", "layers.append(layers[0])\nreturn x", "attribute .append is not allowed"),
    ("modulelist", "k = layers.__class__\nreturn x", "attribute .__class__ is not allowed"),
])
def test_a_forward_cannot_change_its_containers(kind, body, needle):
    start = time.monotonic()
    refused(cli("build", "-", input=container_spec(kind, body)), needle)
    assert time.monotonic() - start < 20


def test_a_change_that_gets_past_the_guards_is_found_after_the_run():
    # a hook (not spec code) rewrites a weight during the forward: the check after the run says so
    from cgtool.build.model import build_model

    built = build_model("name: M\nkind: sequential\ninputs: {x: [2, 4]}\nlayers: ['Linear(4, 4)']\n")
    built.module[0].register_forward_hook(lambda m, i, o: m.weight.mul_(2))
    with torch.no_grad(), pytest.raises(CgError, match=r"changed the model: parameter 0\.weight was written in place"):
        built.forward({"x": torch.ones(2, 4)})


def test_a_forward_may_write_into_its_own_tensors_and_read_the_model():
    spec = module_spec("y = zeros(2, 4)\ny[0] = l(x)[0]\ny[1] += c\nw = l.weight.clone()\nw[0] = 1\n"
                       "return y + w.sum() + l.weight.float().sum() + x.half().float()")
    assert cli("build", "-", input=spec).exit_code == 0


def test_batch_norm_may_update_its_own_statistics():
    spec = "name: B\nkind: sequential\ninputs: {x: [4, 3]}\nlayers: ['BatchNorm1d(3)']\n"
    assert cli("run", "-", "--train", input=spec).exit_code == 0


# --------------------------------------------------------------------------- 3. work is bounded


@pytest.mark.parametrize("body,needle", [
    ("r = range\nfor i in r(10 ** 12):\n    x = x + 1\nreturn x", "over the loop cap"),
    ("for i in range(10000):\n    for j in range(10000):\n        x = x\nreturn x", "loops ran more than 10,000"),
    ("i = 0\nwhile i < 10 ** 9:\n    for j in range(5000):\n        i = i + 1\nreturn x", "loops ran more than"),
    ("z = [i for i in range(10000) for j in range(10000)]\nreturn x", "loops ran more than 10,000"),
    ("z = [[j for j in range(10000)] for i in range(10000)]\nreturn x", "loops ran more than 10,000"),
])
def test_loops_share_one_budget(body, needle):
    start = time.monotonic()
    refused(cli("build", "-", input=module_spec(body)), needle, "<stdin>:")
    assert time.monotonic() - start < 20


def test_the_loop_budget_is_per_call_and_can_be_raised():
    body = "for i in range(100):\n    for j in range(100):\n        x = x + 0\nreturn x"  # 10,100 steps
    refused(cli("build", "-", input=module_spec(body)), "loops ran more than 10,000")
    assert cli("build", "-", "--max-iterations", "10100", input=module_spec(body)).exit_code == 0


def test_every_run_ends_within_its_time_limit():
    # each step is under every cap; together they would run for minutes
    body = "a = rand(500, 500)\nfor i in range(10000):\n    a = softmax(mm(a, a), dim=1)\nreturn x"
    start = time.monotonic()
    # (`run`: build alone checks shapes on meta tensors, where this is quick)
    refused(cli("run", "-", "--time-limit", "1", input=module_spec(body)), "time limit of 1 s", "--time-limit")
    assert time.monotonic() - start < 15


def test_the_time_limit_is_checked(monkeypatch):
    for bad in ("0", "-3", "nan", "inf", "soon"):
        refused(cli("build", "configs/mlp.yaml", "--time-limit", bad), "--time-limit")
    monkeypatch.setenv("CGTOOL_TIME_LIMIT", "never")
    refused(cli("build", "configs/mlp.yaml"), "CGTOOL_TIME_LIMIT")


def test_an_expression_ends_within_its_time_limit():
    text = "a = x\nfor i in range(10000):\n    a = a * 1.0001 + sin(a)"
    refused(cli("grad", text, "--at", "x=1", "--time-limit", "0.1"), "time limit")


def test_the_budget_from_python():
    from cgtool import budget
    from cgtool.build.model import build_model

    built = build_model(module_spec("a = rand(200, 200)\nfor i in range(10000):\n    a = mm(a, a) / 200\n"
                                    "return x"), check=False)
    with budget.work_budget(0.3), pytest.raises(CgError, match="time limit"):
        built.forward({"x": torch.ones(2, 4)})


# --------------------------------------------------------------------------- 4. memory is bounded

GROWING = {
    "zeros_size_keyword": "z = zeros(size=(20000, 20000))\nreturn x",
    "arange_end_keyword": "z = arange(0, end=10 ** 10)\nreturn x",
    "expand_contiguous": "z = x[0].expand(100000, 100000, 4).contiguous()\nreturn x",
    "zeros_like_of_a_view": "z = zeros_like(x[0].expand(1000000, 100000, 4))\nreturn x",
    "outer": "v = ones(100000)\nz = outer(v, v)\nreturn x",
    "one_hot": "z = one_hot(arange(100000), 100000)\nreturn x",
    "broadcasting": "v = ones(100000)\nz = v.view(-1, 1) + v\nreturn x",
    "matmul_of_expanded_views": "a = ones(1)[0].expand(100000, 1)\nz = mm(a, a.T)\nreturn x",
    "cat_doubling": "z = ones(10000000)\nfor i in range(12):\n    z = cat([z, z])\nreturn x",
    "einsum": "v = ones(100000)\nz = einsum('i,j->ij', v, v)\nreturn x",
    "indexing_with_a_big_index": "z = x[zeros(100000000, dtype=torch.long)].expand(100000000, 4, 1000)\nreturn x",
    "iterating_a_tensor": "z = zeros(10000000)\nfor v in z:\n    break\nreturn x",
    "splitting_into_pieces": "z = zeros(10000000)\np = z.split(1)\nreturn x",
    "unbinding": "z = zeros(10000000)\na = z.unbind(0)\nreturn x",
}


@pytest.mark.parametrize("name", sorted(GROWING))
def test_no_tensor_grows_past_the_cap(name):
    start = time.monotonic()
    refused(cli("build", "-", "--max-memory", "2GB", input=module_spec(GROWING[name])), "<stdin>:", "over the ")
    assert time.monotonic() - start < 20


def test_a_layer_that_grows_its_input_is_capped_and_named():
    spec = "name: U\nkind: sequential\ninputs: {x: [1, 1, 100, 100]}\nlayers: ['Upsample(scale_factor=1000)']\n"
    refused(cli("build", "-", "--max-memory", "2GB", input=spec), "<stdin>:4:11", "layers[0] Upsample",
            "10,000,000,000 elements")


def test_expressions_are_capped_too():
    refused(cli("grad", "y = sum(outer(x.expand(100000), x.expand(100000)))", "--at", "x=1"), "over the cap")
    refused(cli("grad", "y = sum(x.expand(100000, 100000))", "--at", "x=1"), "over the cap")


def test_the_element_cap_from_python():
    fn = lang.compile_forward(lang.parse(lang.Source("return zeros(size=(5, 5))"), {"x"}), name="f", params=["x"],
                              prelude=[], namespace={}, limits=lang.Limits(max_elements=12), with_self=False).fn
    with pytest.raises(CgError, match="25 elements, over the cap of 12"):
        fn(torch.ones(1))
    from cgtool.lang.tensorcap import ElementCap

    with ElementCap(100, 10), pytest.raises(CgError, match="outer"):
        torch.outer(torch.ones(11), torch.ones(11))
    with ElementCap(100, 10), pytest.raises(CgError, match="unbind"):
        torch.ones(11).unbind(0)
    with ElementCap(100, 10):
        assert torch.outer(torch.ones(10), torch.ones(10)).sum() == 100  # at the cap: allowed


def test_an_expanded_tensor_file_is_refused(tmp_path):
    path = tmp_path / "x.pt"
    torch.save(torch.ones(1).expand(800_000_000), path)
    assert path.stat().st_size < 2000
    refused(cli("run", "configs/mlp.yaml", "-i", f"x={path}"), "expanded view", "800,000,000 elements")


def test_statistics_of_an_expanded_output_are_exact_and_cheap():
    from cgtool.inspect.run import output_info

    base = torch.arange(5.0)
    start = time.monotonic()
    info = output_info("y", base.expand(4, 50_000_000, 5))
    assert time.monotonic() - start < 5
    exact = base.repeat(20)  # the same values in the same proportions
    assert info.stats.min == 0 and info.stats.max == 4 and info.stats.mean == pytest.approx(2.0)
    assert info.stats.std == pytest.approx(float(exact.std(correction=0)), rel=1e-6)
    assert info.preview == [0.0, 1.0, 2.0, 3.0, 4.0, 0.0, 1.0, 2.0]


def test_statistics_of_a_large_output_match_torch():
    from cgtool.inspect.run import _large_stats

    t = torch.randn(3000, 2000, generator=torch.Generator().manual_seed(0))
    s = _large_stats(t)
    d = t.double()
    assert s.mean == pytest.approx(float(d.mean()), abs=1e-9) and s.std == pytest.approx(float(d.std()), rel=1e-9)
    assert (s.min, s.max) == (float(t.min()), float(t.max()))


# --------------------------------------------------------------------------- 5. the red-team corpus


def _payload_pt(path):
    class Payload:
        def __reduce__(self):
            return (open, (MARK, "w"))

    with open(path, "wb") as f:
        pickle.dump({"x": Payload()}, f)


def _payload_npy(path):
    np.save(path, np.array([{"a": 1}], dtype=object), allow_pickle=True)


FORWARD_CORPUS = {
    "grad_fn": "return x.grad_fn.next_functions",
    "untyped_storage": "s = x.untyped_storage()\nreturn x",
    "numpy": "n = x.numpy()\nreturn x",
    "register_hook": "h = x.register_hook(relu)\nreturn x",
    "apply_": "x.apply_(exp)\nreturn x",
    "map_": "x.map_(x, exp)\nreturn x",
    "new_tensor": "y = x.new_tensor([1])\nreturn x",
    "reduce_ex": "r = x.__reduce_ex__(2)\nreturn x",
    "dunder_setitem": "x.data.__setitem__(0, 1)\nreturn x",
    "module_hook": "l.register_forward_hook(relu)\nreturn l(x)",
    "load_state_dict": "l.load_state_dict(c)\nreturn l(x)",
    "module_to": "l.to(c)\nreturn l(x)",
    "module_apply": "l.apply(relu)\nreturn l(x)",
    "module_class": "k = l.__class__\nreturn x",
    "subclasses": "k = x.__class__.__subclasses__()\nreturn x",
    "int_class": "k = (1).__class__\nreturn x",
    "str_format": 't = "{0.__class__}".format(x)\nreturn x',
    "str_join": 't = "".join("ab")\nreturn x',
    "f_string": 't = f"{x}"\nreturn x',
    "walrus": "y = (z := x)\nreturn y",
    "starred": "y = cat([*[x]])\nreturn y",
    "double_star": 'y = relu(**{"input": x})\nreturn y',
    "comprehension_dunder": "y = [__import__ for i in range(1)]\nreturn x",
    "comprehension_bases": "y = [b for b in ().__class__.__bases__]\nreturn x",
    "lambda": "f = lambda: 1\nreturn x",
    "def": "def f():\n    return 1\nreturn x",
    "import": "import os\nreturn x",
    "open": f'f = open("{MARK}", "w")\nreturn x',
    "eval": f'y = eval("open(\'{MARK}\', \'w\')")\nreturn x',
    "exec": f'exec("open(\'{MARK}\', \'w\')")\nreturn x',
    "getattr": 'k = getattr(x, "__class__")\nreturn x',
    "torch_save": f'torch.save(x, "{MARK}")\nreturn x',
    "torch_load": f'y = torch.load("{MARK}")\nreturn x',
    "torch_ops": "y = torch.ops.aten.relu(x)\nreturn y",
    "functional_dict": "d = F.__dict__\nreturn x",
    "item_self": "s = x.item.__self__\nreturn x",
    "callable_keyword": "y = softmax(x, dim=exec)\nreturn y",
    "global": "global l\nreturn x",
    "try": "try:\n    y = x\nexcept Exception:\n    y = x\nreturn y",
    "with": f'with open("{MARK}") as f:\n    y = x\nreturn x',
    "class": "class A:\n    pass\nreturn x",
    "delete": "del l\nreturn x",
    "type_call": "t = x.type(\"torch.FloatTensor\")\nreturn x",
    "cpp_extension": "y = torch.utils.cpp_extension\nreturn x",
    "builtins_via_self": "b = self.__dict__\nreturn x",
    "self_modules": "m = self._modules\nreturn x",
    "underscore_name": "_cg_writable = relu\nreturn x",
}


@pytest.mark.parametrize("name", sorted(FORWARD_CORPUS))
def test_forward_corpus(tmp_path, monkeypatch, name):
    monkeypatch.chdir(tmp_path)
    before = tree(tmp_path)
    refused(cli("build", "-", "--save", "w.pt", input=module_spec(FORWARD_CORPUS[name])), "<stdin>:")
    assert not (tmp_path / MARK).exists() and tree(tmp_path) == before


EXPRESSION_CORPUS = {
    "import": f"y = __import__('os').system('touch {MARK}')",
    "grad_fn": "y = x.grad_fn",
    "semicolon_import": "y = x; import os",
    "open": f"y = open('{MARK}', 'w')",
    "lambda": "y = (lambda: x)()",
    "class_chain": "y = x.__class__.__mro__",
    "numpy": "y = x.detach().numpy()",
    "format": "y = '{}'.format(x)",
    "walrus": "y = (z := x) * 2",
    "generator": "y = sum(x for i in range(3))",
    "dict": "y = {'a': x}",
    "huge_power": "y = x * 10 ** 10 ** 10",
    "out_keyword": "y = exp(x, out=x)",
}


@pytest.mark.parametrize("name", sorted(EXPRESSION_CORPUS))
def test_expression_corpus(tmp_path, monkeypatch, name):
    monkeypatch.chdir(tmp_path)
    before = tree(tmp_path)
    refused(cli("grad", EXPRESSION_CORPUS[name], "--at", "x=1"), "<expr>:")
    assert not (tmp_path / MARK).exists() and tree(tmp_path) == before


SPEC_CORPUS = {
    "os_system_call": f"name: T\nkind: sequential\nlayers: ['os.system(\"touch {MARK}\")']\n",
    "os_system_type": f"name: T\nkind: sequential\nlayers: [{{type: os.system, command: 'touch {MARK}'}}]\n",
    "subprocess": f"name: T\nkind: sequential\nlayers: ['subprocess.Popen(\"touch {MARK}\")']\n",
    "torch_hub": "name: T\nkind: sequential\nlayers: ['hub.load(\"x\", \"y\")']\n",
    "jit_load": f"name: T\nkind: sequential\nlayers: ['jit.load(\"{MARK}\")']\n",
    "yaml_python_tag": f"name: !!python/object/apply:os.system ['touch {MARK}']\nkind: sequential\nlayers: []\n",
    "yaml_python_name": "name: T\nkind: sequential\nlayers: [!!python/name:os.system '']\n",
    "keyword_callable": "name: T\nkind: sequential\nlayers: ['Linear(4, 4, bias=exec)']\n",
    "keyword_lambda": "name: T\nkind: sequential\nlayers: ['Linear(4, 4, bias=lambda: 1)']\n",
    "dunder_in_arg": "name: T\nkind: sequential\nargs: {d: '().__class__'}\nlayers: ['Linear(d, 4)']\n",
    "arg_import": "name: T\nkind: sequential\nargs: {d: \"__import__('os')\"}\nlayers: ['Linear(d, 4)']\n",
    "lazy_layer": "name: T\nkind: sequential\ninputs: {x: [2, 4]}\nlayers: ['LazyLinear(4)']\n",
    # found by `make fuzz`: Python's parser accepts a repeated keyword, its compiler raised SyntaxError
    "repeated_keyword": "name: T\nkind: sequential\nlayers: ['Conv2d(1, 6, kernel_size=5, padding=2, padding=2)']\n",
}


@pytest.mark.parametrize("name", sorted(SPEC_CORPUS))
def test_spec_corpus(tmp_path, monkeypatch, name):
    monkeypatch.chdir(tmp_path)
    before = tree(tmp_path)
    refused(cli("build", "-", input=SPEC_CORPUS[name]))
    assert not (tmp_path / MARK).exists() and tree(tmp_path) == before


@pytest.mark.parametrize("value", [f"__import__('os').system('touch {MARK}')", f"exec('open(\"{MARK}\", \"w\")')",
                                   "().__class__.__bases__[0]", "lambda: 1", "[x for x in ().__class__.__mro__]",
                                   "10 ** 10 ** 10"])
def test_arg_values_are_not_code(tmp_path, monkeypatch, value):
    spec = "name: T\nkind: sequential\nargs: {d: 4}\ninputs: {x: [2, d]}\nlayers: ['Linear(d, d)']\n"
    monkeypatch.chdir(tmp_path)
    before = tree(tmp_path)
    refused(cli("build", "-", "--arg", f"d={value}", input=spec))
    assert not (tmp_path / MARK).exists() and tree(tmp_path) == before


@pytest.mark.parametrize("option,maker,suffix", [("--input", _payload_pt, ".pt"), ("--weights", _payload_pt, ".pt"),
                                                  ("--input", _payload_npy, ".npy")])
def test_pickled_payloads_are_not_loaded(tmp_path, monkeypatch, option, maker, suffix):
    monkeypatch.chdir(tmp_path)
    maker(tmp_path / f"evil{suffix}")
    before = tree(tmp_path)
    value = f"x=evil{suffix}" if option == "--input" else f"evil{suffix}"
    refused(cli("run", os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "configs", "mlp.yaml")),
                option, value))
    assert not (tmp_path / MARK).exists() and tree(tmp_path) == before


# --------------------------------------------------------------------------- 6. files, concurrency, interruption


def test_two_runs_writing_the_same_output_leave_one_whole_file(tmp_path):
    import subprocess
    import sys

    out = tmp_path / "out.npy"
    cmd = [sys.executable, "-m", "cgtool", "run", "configs/mlp.yaml", "-i", "x=2000,784", "-o", str(out)]
    procs = [subprocess.Popen(cmd + ["--seed", str(seed)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                              env={**os.environ, "OMP_NUM_THREADS": "1"}) for seed in (1, 2)]
    for p in procs:
        assert p.wait(timeout=300) == 0, p.stderr.read()
    assert sorted(os.listdir(tmp_path)) == ["out.npy"]  # no temporary file left
    assert np.load(out).shape == (2000, 10)


def test_a_save_killed_mid_write_leaves_the_old_file(tmp_path):
    import signal
    import subprocess
    import sys

    target = tmp_path / "w.pt"
    assert cli("build", "configs/mlp.yaml", "--save", target).exit_code == 0
    old = target.read_bytes()
    # a big model, saved by another process killed as soon as its temporary file appears
    spec = tmp_path / "big.yaml"
    spec.write_text("name: Big\nkind: sequential\nlayers: ['Linear(4096, 4096)', 'Linear(4096, 4096)']\n")
    p = subprocess.Popen([sys.executable, "-m", "cgtool", "build", str(spec), "--save", str(target)],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and p.poll() is None \
            and not any(n.endswith(".tmp") for n in os.listdir(tmp_path)):
        time.sleep(0.002)
    os.kill(p.pid, signal.SIGKILL)
    p.wait()
    if target.read_bytes() != old:  # the writer finished before the kill: then the new file, whole
        assert set(torch.load(target)) == {"0.weight", "0.bias", "1.weight", "1.bias"}
    r = cli("build", "configs/mlp.yaml", "--save", target)  # the next save sweeps the dead writer's leftover
    assert r.exit_code == 0 and sorted(os.listdir(tmp_path)) == ["big.yaml", "w.pt"]


def test_a_read_only_output_folder_is_a_clear_error(tmp_path):
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o500)
    if os.access(folder, os.W_OK):  # root writes into a read-only folder; sysfs refuses even root
        folder = "/sys"
    try:
        refused(cli("run", "configs/mlp.yaml", "-o", f"{folder}/out.npy"), "cannot write in", "pick a folder")
        refused(cli("build", "configs/mlp.yaml", "--save", f"{folder}/w.pt"), "cannot write in", "pick a folder")
    finally:
        (tmp_path / "ro").chmod(0o700)


@pytest.mark.parametrize("folder", ["with space", "naïve ☃ 模型"])
def test_paths_with_spaces_and_non_ascii(tmp_path, folder):
    where = tmp_path / folder
    where.mkdir()
    _write(where, "block one.yaml", "kind: sequential\nlayers: ['Linear(4, 4)']\n")
    spec = _write(where, "top ✓.yaml", INCLUDING % "'block one.yaml'")
    r = cli("run", spec, "-o", where / "out put.npy")
    assert r.exit_code == 0, r.stderr
    assert np.load(where / "out put.npy").shape == (2, 4)


@pytest.mark.parametrize("content,needle", [(b"", "empty"), (b"\x00\x01\xff\xfe binary", "not a UTF-8 text file"),
                                            (b"\x89PNG\r\n\x1a\n", "not a UTF-8 text file")])
def test_empty_and_binary_spec_files(tmp_path, content, needle):
    path = tmp_path / "spec.yaml"
    path.write_bytes(content)
    refused(cli("build", path))


def test_a_100_mb_spec_file_is_refused_without_reading_it(tmp_path):
    path = tmp_path / "huge.yaml"
    with open(path, "wb") as f:
        f.write(b"name: H\nkind: sequential\nlayers: [ReLU()]\n# " + b"x" * (100 * 2**20) + b"\n")
    start = time.monotonic()
    refused(cli("build", path), "over the cap of 2,000,000")
    assert time.monotonic() - start < 5


@pytest.mark.parametrize("device", ["cpu", "meta"])
def test_a_declared_input_too_large_for_any_device_is_refused(device):
    spec = "name: T\nkind: sequential\ninputs: {x: [4611686018427387904, 4611686018427387904]}\nlayers: [ReLU()]\n"
    refused(cli("build", "-", "--device", device, input=spec), "<stdin>:3:13", "over the cap of 1,125,899,906,842,624")
    refused(cli("build", "configs/mlp.yaml", "--device", device, "-i", "x=1099511627776,1099511627776"),
            "--input x", "over the cap")
