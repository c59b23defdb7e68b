"""Fuzzing the doors strangers' input comes through (issue 12): the YAML loader, the spec loader, the
forward compiler and the expression path. Allowed outcomes: a result, or a CgError (the CLI's one-line
`error:`) — never another exception, which the CLI would report as an internal error.

CI runs a few hundred inputs per target (CGTOOL_FUZZ_EXAMPLES, default 150); `make fuzz` runs 10,000 per
target. Inputs are mutations of the bundled configs and of the lesson's expression, and generated text.
"""
from __future__ import annotations

import glob
import os

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import cgtool
from cgtool.errors import CgError
from cgtool.graph.expression import evaluate, parse_expression
from cgtool.spec import yamlpos

EXAMPLES = int(os.environ.get("CGTOOL_FUZZ_EXAMPLES", "150"))
SETTINGS = settings(max_examples=EXAMPLES, deadline=None, derandomize=not os.environ.get("CGTOOL_FUZZ_RANDOM"),
                    suppress_health_check=list(HealthCheck))
CONFIGS = [open(p).read() for p in sorted(glob.glob("configs/*.yaml")) if "llama7b" not in p]
SMALL = [c for c in CONFIGS if len(c) < 1500]
LESSON = "y = (x1 + w) * (x2 + w)"
YAML_BITS = [":", "-", "[", "]", "{", "}", ",", "&a", "*a", "!!str", "!!python/object", "|", ">", "#", "'", '"', "\t",
             "\n", "  ", "? ", "%YAML 1.1\n", "---\n", "...\n", "\x00", "\x1b", "\u2028", "\ufeff", "~", "null", "1e999",
             "0x10", "<<: *a", "repeat: 99999", "Linear(", "spec: ../x.yaml", "kind: module", "forward: |\n  return x"]
CODE_BITS = ["(", ")", "[", "]", ":", ",", ".", "__class__", "__", "import os", "lambda: 0", "yield", "await",
             "x", "w", "1e308", "10**10**10", "*", "**", "//", "%", "@", "if", "else", "for i in range(10**9):",
             "while 1:", "\n", "    ", "'", '"', "f'{x}'", "sum", "exec", "eval", "open", "getattr", "self",
             "[x]*10**9", "x.grad_fn", "x.numpy()", "torch.load", "F.relu", "break", "return", "=", ";", "not",
             "x[...]", "x.T", "\\", "#"]


def mutate(text: str, data) -> str:
    """Insert, delete or replace a few pieces of *text* with bits that break parsers."""
    for _ in range(data.draw(st.integers(1, 4))):
        if not text:
            text = data.draw(st.sampled_from(YAML_BITS))
            continue
        i = data.draw(st.integers(0, len(text) - 1))
        j = data.draw(st.integers(i, min(len(text), i + 12)))
        op = data.draw(st.sampled_from(["insert", "delete", "replace", "duplicate"]))
        bit = data.draw(st.sampled_from(YAML_BITS + CODE_BITS))
        if op == "insert":
            text = text[:i] + bit + text[i:]
        elif op == "delete":
            text = text[:i] + text[j:]
        elif op == "replace":
            text = text[:i] + bit + text[j:]
        else:
            text = text[:j] + text[i:j] + text[j:]
    return text


def only_user_errors(fn, *args, **kwargs):
    try:
        fn(*args, **kwargs)
    except CgError:
        pass


@SETTINGS
@given(st.data())
def test_yaml_loader(data):
    text = mutate(data.draw(st.sampled_from(CONFIGS)), data)
    only_user_errors(yamlpos.load, text, "fuzz.yaml")


@SETTINGS
@given(st.text(max_size=300))
def test_yaml_loader_on_any_text(text):
    only_user_errors(yamlpos.load, text, "fuzz.yaml")


@SETTINGS
@given(st.data())
def test_spec_build_on_meta(data):
    text = mutate(data.draw(st.sampled_from(SMALL)), data)
    only_user_errors(cgtool.build_model, text, file="fuzz.yaml", device="meta")


@SETTINGS
@given(st.data())
def test_expression(data):
    text = mutate(LESSON, data)
    only_user_errors(lambda: evaluate(parse_expression(text), {"x1": 1.0, "x2": 2.0, "w": 3.0}))


@SETTINGS
@given(st.lists(st.sampled_from(CODE_BITS), max_size=12))
def test_expression_from_pieces(pieces):
    text = "y = " + " ".join(pieces)
    only_user_errors(lambda: evaluate(parse_expression(text), {"x": 1.0, "w": 2.0}))
