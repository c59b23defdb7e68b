"""Spec values (`4 * d`, `Linear(d, 4 * d)`): the forward language's checker and compiler, a small part of it."""
import json

import pytest

from cgtool import lang
from cgtool.errors import CgError
from cgtool.spec import load_spec
from cgtool.spec.values import eval_constant, string_value

ENV = {"d": 64, "heads": 8, "stride": 2, "x": 1.5, "t": (3, 3)}


def record(name, args, kwargs):
    return (name, tuple(args), tuple(sorted(kwargs.items())))


@pytest.mark.parametrize("text,want", [
    ("4 * d", 256),
    ("(3, 3)", (3, 3)),
    ("[1, 2, d]", [1, 2, 64]),
    ("d // heads", 8),
    ("d / heads", 8.0),
    ("d % 5 - -d + +d", 4 + 64 + 64),
    ("2 ** 10", 1024),
    ("not d", False),
    ("d if stride != 1 else 0", 64),
    ("d if stride == 1 else 0", 0),
    ("stride > 1 and d", 64),
    ("stride < 1 or heads", 8),
    ("d <= heads", False),
    ("int(x) + float(d) + round(x) + abs(-d)", 1 + 64.0 + 2 + 64),
    ("min(d, heads) + max(d, heads)", 72),
    ("round(x, 1)", 1.5),
    ("t * 2", (3, 3, 3, 3)),
    ("'ab' * 3", "ababab"),
    ("None", None),
    ("True", True),
    ("+".join(["1"] * 99), 99),
])
def test_values_compute_as_python(text, want):
    got = eval_constant(text, ENV, "P")
    assert got == want and type(got) is type(want)


def test_layer_calls_are_handed_to_the_callback_innermost_first():
    value = eval_constant("Sequential(Linear(d, 4 * d, bias=False), ReLU())", ENV, "P", call=record)
    assert value == ("Sequential", (("Linear", (64, 256), (("bias", False),)), ("ReLU", (), ())), ())
    assert eval_constant("Conv2d(d, d, 1) if stride != 1 else Identity()", ENV, "P", call=record) \
        == ("Conv2d", (64, 64, 1), ())
    assert eval_constant("Conv2d(d, d, 1) if stride == 1 else Identity()", ENV, "P", call=record) \
        == ("Identity", (), ())
    assert eval_constant("ModuleList([Linear(1, max(d, 2))])", ENV, "P", call=record) \
        == ("ModuleList", ([("Linear", (1, 64), ())],), ())
    # a name the value calls that is not a helper reaches only the callback, never Python
    assert eval_constant("open('x')", ENV, "P", call=record) == ("open", ("x",), ())
    assert eval_constant("eval('1')", ENV, "P", call=record) == ("eval", ("1",), ())


def test_an_arg_hides_a_helper_of_the_same_name():
    assert eval_constant("max + 1", {"max": 4}, "P") == 5
    assert eval_constant("e * 2", {"e": 3}, "P") == 6  # and a constant of the forward language


@pytest.mark.parametrize("text,message", [
    ("().__class__", "'().__class__' is not allowed in value"),
    ("().__class__.__bases__[0].__subclasses__()", "is not allowed in value"),
    ("d.real", "'d.real' is not allowed in value"),
    ("t[0].real", "'t[0].real' is not allowed"),
    ("t[0](1)", "is not allowed"),
    ("[i for i in t]", "is not allowed"),
    ("__import__('os')", "unknown function '__import__'"),
    ("open('x')", "unknown function 'open'"),
    ("getattr(d, 'x')", "unknown function 'getattr'"),
    ("relu(d)", "unknown function 'relu'"),
    ("lambda: 1", "'lambda: 1' is not allowed"),
    ("import os", "cannot parse value"),
    ("d; import os", "cannot parse value"),
    ("d\nx = 3", "cannot parse value"),
    ("x := 3", "cannot parse value"),
    ("(x := 3)", "is not allowed"),
    ("{1: 2}", "is not allowed"),
    ("f'{d}'", "is not allowed"),
    ("d @ d", "is not allowed"),
    ("d << 2", "is not allowed"),
    ("0 < d < 100", "is not allowed"),
    ("d in t", "is not allowed"),
    ("int(*t)", "unpacking is not allowed"),
    ("int(**{'base': 10})", "unpacking is not allowed"),
    ("b'x'", "bytes is not allowed"),
    ("1j", "complex is not allowed"),
    ("_x", "names starting with '_' are reserved"),
    ("10 ** 10 ** 10", "too large a number"),
    ("2 ** 100000", "too large a number"),
    ("'a' * 10 ** 9", "over the cap"),
    ("[0] * 1000000000", "over the cap"),
    ("d * d * 10 ** 1300", "too large a number"),
    ("+".join(["1"] * 150), "nested too deeply"),
    ("dd", "unknown name 'dd' in value 'dd' (args: d, heads, stride, t, x)"),
    ("pi * 2", "unknown name 'pi'"),
    ("d // 0", "cannot compute 'd // 0': integer division or modulo by zero"),
    ("d + int('zz')", "cannot compute \"int('zz')\""),
    ("'a' < 1", "cannot compute \"'a' < 1\""),
])
def test_hostile_and_wrong_values_are_refused(text, message):
    with pytest.raises(CgError) as err:
        eval_constant(text, ENV, "spec.yaml:3:5")
    assert message in err.value.message
    assert err.value.place == "spec.yaml:3:5"


def test_refused_with_layer_calls_too():
    for text in ("Linear(d).weight", "Linear(d)(3)", "Linear(lambda: 1)", "__import__('os')", "Linear(*t)"):
        with pytest.raises(CgError):
            eval_constant(text, ENV, "P", call=record)


def test_limits_are_the_callers():
    tight = lang.Limits(max_int_bits=64, max_sequence=10)
    assert eval_constant("2 ** 40", ENV, "P") == 2**40
    with pytest.raises(CgError, match="too large"):
        eval_constant("2 ** 100", ENV, "P", limits=tight)
    with pytest.raises(CgError, match="over the cap of 10 items"):
        eval_constant("[0] * 11", ENV, "P", limits=tight)
    assert eval_constant("2 ** 100", ENV, "P") == 2**100  # the default limits again, not a cached tight one


def test_the_same_text_compiles_once_and_reads_each_env():
    assert [eval_constant("4 * d", {"d": d}, "P") for d in (1, 2, 3)] == [4, 8, 12]
    with pytest.raises(CgError, match="unknown name 'd'"):
        eval_constant("4 * d", {"e": 1}, "P")


@pytest.mark.parametrize("text,want", [
    ("same", "same"),  # a plain word stays a string
    ("relu", "relu"),
    ("d", 64),  # an arg
    ("3", 3),
    ("1e-5", 1e-5),
    ("'quoted'", "quoted"),  # a string literal: its text ('1_0' is the string 1_0)
    ("'1_0'", "1_0"),
    ("1_0", 10),  # unquoted in YAML, as in Python: the number 10
    ("4 * d", 256),
    ("(3, 3)", (3, 3)),
    ("-1", -1),
    ("not a value (", "not a value ("),
    ("max(1, 2)", 2),
    ("1 if 2 else 3", "1 if 2 else 3"),  # no names, not arithmetic: a string
])
def test_string_values(text, want):
    assert string_value(text, ENV, "P") == want


def test_a_spec_refuses_a_hostile_value_at_its_place(tmp_path):
    path = tmp_path / "spec.yaml"
    path.write_text("kind: sequential\nargs: {d: 4}\nlayers:\n  - Linear(d, ().__class__)\n")
    with pytest.raises(CgError) as err:
        load_spec(path)
    assert err.value.place.endswith("spec.yaml:4:5") and "is not allowed in layers[0] layer" in err.value.message
    path.write_text("kind: sequential\nargs: {d: '10 ** 10 ** 10'}\nlayers:\n  - ReLU()\n")
    with pytest.raises(CgError, match="too large a number"):
        load_spec(path)


def test_a_quoted_yaml_string_stays_a_string_and_command_line_args_are_read(tmp_path):
    """`version: "1_0"` (as torchvision writes SqueezeNet's) is the string 1_0, not the number 10; a string given
    through the Python API stays that string; `--arg` text is read as the spec reads its own values."""
    import cgtool
    from typer.testing import CliRunner
    from cgtool.cli import app

    path = tmp_path / "v.yaml"
    path.write_text("name: V\nkind: sequential\n"
                    "args: {version: \"1_0\", big: '1e3', flag: \"True\", n: 1_0, lr: 1e-3, twice: 2 * n}\n"
                    "inputs: {x: [2, 3]}\nlayers: |\n"
                    "  layers = [Linear(3, 4) if version == '1_0' else Linear(3, 5)]\n")
    from cgtool.spec.load import load_spec

    assert load_spec(str(path)).args == {"version": "1_0", "big": "1e3", "flag": "True", "n": 10, "lr": 1e-3,
                                         "twice": 20}
    assert cgtool.build(str(path))[0].out_features == 4
    assert cgtool.build(str(path), version="1_1")[0].out_features == 5
    assert load_spec(str(path), args={"n": "3"}).args["n"] == "3"  # the API's string is a string
    env = {"COLUMNS": "120", "NO_COLOR": "1"}
    totals = {}
    for given in ("version=1_0", "version='1_0'", "version=other"):  # --arg 1_0 is the number 10, as unquoted YAML
        r = CliRunner().invoke(app, ["params", str(path), "--arg", given, "--json"], env=env)
        assert r.exit_code == 0, r.output
        totals[given] = json.loads(r.output)["total"]
    assert totals == {"version=1_0": 20, "version='1_0'": 16, "version=other": 20}


def test_values_index_into_args(tmp_path):
    """ShuffleNet's `Conv2d(3, stages_out_channels[0], 3)`: indexing and slicing in values and layer calls."""
    import cgtool

    path = tmp_path / "s.yaml"
    path.write_text("name: S\nkind: module\nargs: {chans: [24, 48, 96], c0: 'chans[0]', tail: 'chans[1:]'}\n"
                    "inputs: {x: [2, 3, 8, 8]}\nmodules:\n  conv: Conv2d(3, chans[0], 3)\n"
                    "  more: 'Conv2d(c0, tail[0], 1)'\n  fc: {type: Linear, in_features: 'tail[0]', out_features: "
                    "'chans[-1]'}\nforward: |\n  return fc(flatten(more(conv(x)).mean((2, 3)), 1))\n")
    net = cgtool.build(str(path))
    assert (net.conv.out_channels, net.more.in_channels, net.more.out_channels) == (24, 24, 48)
    assert (net.fc.in_features, net.fc.out_features) == (48, 96)
