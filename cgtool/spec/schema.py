"""The spec language as a JSON Schema (draft 2020-12): ``cgtool schema``. Plain data; never prints.

Editors use it to complete and check specs as they are typed (a ``# yaml-language-server:
$schema=...`` line in the file). It is built from the loader's own tables (kinds, inits,
dtypes, top-level keys, caps), so the two cannot drift apart; it checks the shape of a spec —
which keys, which kinds of value — while ``cgtool validate`` checks everything else (arguments of
layer classes, the forward program, shapes). A spec the loader accepts is valid under the schema
(tested on every bundled config), and a spec with a wrong key, kind, init, dtype or layer form is not.
"""
from __future__ import annotations

from .model import DTYPES, INITS, KINDS, MAX_REPEAT, TOP_KEYS

SCHEMA_ID = "urn:cgtool:spec-schema"  # no web address is promised: the schema ships with cgtool
IDENTIFIER = r"^[A-Za-z_][A-Za-z0-9_]*$"
NAME = r"^[A-Za-z][A-Za-z0-9_]*$"  # a name a spec defines (modules, constants, parameters, inputs, args)
CALL = r"^\s*[A-Za-z_][A-Za-z0-9_.]*\s*\([\s\S]*\)[\s\S]*$"  # a call, maybe `... if cond else None`


def _value() -> dict:
    return {
        "description": "A number, a boolean, null, a string (an expression over args, such as '4 * d', or plain "
                       "text), or a list or mapping of values.",
        "anyOf": [{"type": ["number", "boolean", "null", "string"]},
                  {"type": "array", "items": {"$ref": "#/$defs/value"}},
                  {"type": "object", "additionalProperties": {"$ref": "#/$defs/value"}}],
    }


def _size() -> dict:
    return {"anyOf": [{"type": "integer", "minimum": 0}, {"type": "string", "minLength": 1}]}


def _shape() -> dict:
    return {
        "description": "Sizes: a list of ints or expressions over args, where a size may be named (`B: 2`); also "
                       "one int, or a string such as '2x784'.",
        "anyOf": [
            {"type": "array", "items": {"anyOf": [
                {"$ref": "#/$defs/size"},
                {"type": "object", "minProperties": 1, "maxProperties": 1,
                 "propertyNames": {"pattern": IDENTIFIER}, "additionalProperties": {"$ref": "#/$defs/size"}}]}},
            {"type": "integer", "minimum": 0},
            {"type": "string"},
        ],
    }


def _input() -> dict:
    return {
        "description": "An input: its shape, or {shape, dtype, low, high} (integer inputs need high: values are "
                       "drawn from [low, high)).",
        "anyOf": [
            {"$ref": "#/$defs/shape"},
            {"type": "object", "required": ["shape"], "additionalProperties": False, "properties": {
                "shape": {"$ref": "#/$defs/shape"},
                "dtype": {"$ref": "#/$defs/dtype"},
                "low": {"$ref": "#/$defs/value"},
                "high": {"$ref": "#/$defs/value"}}},
        ],
    }


def _tensor() -> dict:
    return {
        "description": "A constant (a buffer, not trained) or a free parameter: a literal list of numbers, or "
                       "{init, shape, value, scale, dtype}.",
        "anyOf": [
            {"type": "array"},
            {"type": "object", "required": ["shape"], "additionalProperties": False, "properties": {
                "init": {"enum": list(INITS), "default": "zeros"},
                "shape": {"$ref": "#/$defs/shape"},
                "value": {"$ref": "#/$defs/value"},
                "scale": {"$ref": "#/$defs/value"},
                "dtype": {"$ref": "#/$defs/dtype"},
                "persistent": {"type": "boolean", "default": True,
                               "description": "A constant with false is left out of the state_dict."}},
             "if": {"properties": {"init": {"const": "full"}}, "required": ["init"]},
             "then": {"required": ["value"]}},
        ],
    }


def _repeat() -> dict:
    count = {"anyOf": [{"type": "integer", "minimum": 1, "maximum": MAX_REPEAT}, {"type": "string", "minLength": 1}]}
    return {"description": f"Fresh copies of this entry (at most {MAX_REPEAT:,}): a count, or {{count, kind, names}} "
                           "(kind: sequential or modulelist, the container of the copies; names: 'layer_{i}', "
                           "'denselayer{i + 1}', 'block_{i:02d}': one field, an expression over i counting from 0).",
            "anyOf": [*count["anyOf"],
                      {"type": "object", "required": ["count"], "additionalProperties": False, "properties": {
                          "count": count, "kind": {"enum": ["sequential", "modulelist"]},
                          "names": {"type": "string", "pattern": r"^[A-Za-z][A-Za-z0-9_]*\{[^{}]+\}[A-Za-z0-9_]*$"}}}]}


def _layer() -> dict:
    return {
        "description": "A layer: a call such as 'Linear(784, 256)', or a mapping with one of type (keyword "
                       "arguments beside it), ref (the very same module again), spec (a nested spec file) or "
                       "kind (a nested spec written in place); type, spec and kind take repeat.",
        "anyOf": [
            {"type": "string", "pattern": CALL},
            {"type": "object", "required": ["type"], "not": {"anyOf": [{"required": [k]} for k in
                                                                         ("ref", "spec", "kind")]},
             "properties": {"type": {"type": "string", "pattern": r"^[A-Za-z_][A-Za-z0-9_.]*$"},
                            "repeat": {"$ref": "#/$defs/repeat"}},
             "additionalProperties": {"$ref": "#/$defs/value"}},
            {"type": "object", "required": ["ref"], "additionalProperties": False,
             "properties": {"ref": {"type": ["string", "integer"]}}},
            {"type": "object", "required": ["spec"], "additionalProperties": False, "properties": {
                "spec": {"type": "string", "pattern": r"^[^/].*\.ya?ml$"},
                "args": {"type": "object", "additionalProperties": {"$ref": "#/$defs/value"}},
                "name": {"type": "string", "pattern": IDENTIFIER},
                "repeat": {"$ref": "#/$defs/repeat"}}},
            {"type": "object", "required": ["kind"], "allOf": [{"$ref": "#/$defs/rules"}],
             "properties": {**_spec_properties(), "repeat": {"$ref": "#/$defs/repeat"}},
             "additionalProperties": False},
        ],
    }


def _spec_properties() -> dict:
    named_layers = {"type": "object", "propertyNames": {"pattern": r"^[A-Za-z0-9_]+$"},
                    "additionalProperties": {"$ref": "#/$defs/layer"}}
    props = {
        "name": {"type": "string", "pattern": IDENTIFIER, "description": "The class name of the built module (a sequential spec given a name builds an nn.Sequential subclass of that name)."},
        "kind": {"enum": list(KINDS), "description": "sequential (a chain of layers), modulelist, moduledict, or "
                 "module (its own forward)."},
        "description": {"type": "string"},
        "args": {"type": "object", "propertyNames": {"pattern": NAME},
                 "additionalProperties": {"$ref": "#/$defs/value"},
                 "description": "Named values the spec reads (overridden with --arg NAME=VALUE)."},
        "inputs": {"type": "object", "propertyNames": {"pattern": NAME, "not": {"const": "self"}},
                   "additionalProperties": {"$ref": "#/$defs/input"}},
        "layers": {"description": "sequential: a list, or a mapping name -> layer; modulelist: a list. Or a "
                   "program over the args that makes the list (a list comprehension, or statements that add to "
                   "`layers`).",
                   "anyOf": [{"type": "array", "items": {"$ref": "#/$defs/layer"}}, named_layers, {"type": "string"}]},
        "modules": {**named_layers, "description": "moduledict and module: name -> layer."},
        "constants": {"type": "object", "propertyNames": {"pattern": NAME},
                      "additionalProperties": {"$ref": "#/$defs/tensor"}},
        "parameters": {"type": "object", "propertyNames": {"pattern": NAME},
                       "additionalProperties": {"$ref": "#/$defs/tensor"}},
        "forward": {"type": "string", "description": "The forward program (a YAML block: `forward: |`)."},
        "tie": {"type": "object", "additionalProperties": {"type": "string"},
                "description": "A parameter -> the one it shares, e.g. {head.weight: embed.weight}."},
    }
    assert set(props) == set(TOP_KEYS), "the schema's keys follow the loader's"
    return props


def _rules() -> dict:
    """What each kind requires and forbids (as the loader says it)."""
    def kind(k):
        return {"properties": {"kind": {"const": k}}, "required": ["kind"]}

    def forbid(*keys):
        return {"not": {"anyOf": [{"required": [key]} for key in keys]}}

    return {"allOf": [
        {"anyOf": [{"required": ["kind"]}, {"required": ["layers"]}, {"required": ["forward"]}]},
        {"if": kind("sequential"), "then": {"required": ["layers"],
                                            **forbid("forward", "modules", "constants", "parameters")}},
        {"if": kind("modulelist"), "then": {"required": ["layers", "forward"], **forbid("modules"),
                                            "properties": {"layers": {"type": ["array", "string"]}}}},
        {"if": kind("moduledict"), "then": {"required": ["modules", "forward"], **forbid("layers")}},
        {"if": kind("module"), "then": {"required": ["forward"], **forbid("layers")}},
    ]}


def spec_schema() -> dict:
    """The JSON Schema (draft 2020-12) of a cgtool spec file."""
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": SCHEMA_ID,
        "title": "cgtool model spec",
        "description": "A model written as YAML for cgtool: compiled into a real torch.nn network "
                       "(Sequential, ModuleList, ModuleDict, or a module with its own forward).",
        "type": "object",
        "allOf": [{"$ref": "#/$defs/rules"}],
        "properties": _spec_properties(),
        "additionalProperties": False,
        "$defs": {
            "value": _value(), "size": _size(), "shape": _shape(), "input": _input(), "tensor": _tensor(),
            "repeat": _repeat(), "layer": _layer(), "rules": _rules(),
            "dtype": {"enum": sorted(DTYPES)},
        },
    }
