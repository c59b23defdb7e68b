"""Loading a spec: YAML with positions, validated into dataclasses, with readable errors.
"""
from __future__ import annotations
import ast
import keyword
import os
import re
import string
from dataclasses import dataclass, field
import torch
from .. import lang
from . import yamlpos
from .values import ArgText, eval_constant, generate, plain_nn, string_value
from ..errors import CgError, Loc, did_you_mean
from .model import DTYPES, INITS, KINDS, MAX_DEPTH, MAX_LAYERS, MAX_REPEAT, TOP_KEYS, Call, InputSpec, Layer, Spec, TensorSpec


# --------------------------------------------------------------------------- loading


@dataclass
class _Ctx:
    root_dir: str | None  # includes must stay inside it (None: a spec read from stdin, no includes)
    stack: tuple[str, ...] = ()  # files being loaded, for cycle detection
    depth: int = 0
    layer_count: list = field(default_factory=lambda: [0])
    limits: lang.Limits = field(default_factory=lambda: lang.DEFAULT_LIMITS)
    parsed: dict = field(default_factory=dict)  # included file -> its YAML, read and parsed once per load


def load_spec(source, *, file: str | None = None, args: dict | None = None,
              limits: lang.Limits | None = None, base: str | None = None) -> Spec:
    """Load a spec from a path, YAML text, or an already parsed mapping.

    ``args`` override the spec's ``args`` (values or strings parsed as numbers). A spec given as text
    (stdin) has no folder: its includes are refused unless ``base`` names the folder they are in.
    """
    text, file = _read_source(source, file)
    root_dir = os.path.dirname(os.path.abspath(file)) if not file.startswith("<") else _base_dir(base)
    ctx = _Ctx(root_dir=root_dir, limits=limits or lang.DEFAULT_LIMITS)
    if not file.startswith("<"):
        ctx.stack = (os.path.realpath(file),)
    data = yamlpos.load(text, file)
    return _spec_from_data(data, file, Loc(file, 1, 1), overrides=args or {}, ctx=ctx,
                           default_name=_stem(file))


def _base_dir(base: str | None) -> str | None:
    if base is None:
        return None
    if not os.path.isdir(base):
        raise CgError(f"{base!r} is not a folder", "--base", hint="name the folder the spec's includes are in")
    return os.path.realpath(base)


def _read_source(source, file):
    if isinstance(source, os.PathLike) or (isinstance(source, str) and "\n" not in source
                                           and source.endswith((".yaml", ".yml")) and file is None):
        path = os.fspath(source)
        return yamlpos.read_capped(path), path
    if not isinstance(source, str):
        raise CgError(f"a spec is a path or YAML text, not {type(source).__name__}")
    return source, file or "<spec>"


def _stem(file: str) -> str:
    base = os.path.basename(file)
    stem = base.rsplit(".", 1)[0] if "." in base else base
    return stem.strip("<>") or "spec"


def _loc_of(mapping, key, default: Loc) -> Loc:
    locs = getattr(mapping, "locs", None)
    if locs is not None:
        if isinstance(locs, dict) and key in locs:
            return locs[key]
        if isinstance(locs, list) and isinstance(key, int) and key < len(locs):
            return locs[key]
    return getattr(mapping, "loc", default)


def _place(loc: Loc, where: str | None = None) -> str:
    return f"{loc}: {where}" if where else str(loc)


def _spec_from_data(data, file, loc, *, overrides, ctx: _Ctx, default_name, given_at=None) -> Spec:
    """*given_at*: (place, what) of the args given to an included spec (its include), for errors."""
    _check_spec_mapping(data, loc, ctx)
    loc = getattr(data, "loc", loc)
    _check_top_keys(data, loc)
    kind = _kind(data, loc)
    spec = Spec(name=_spec_name(data, loc, default_name), kind=kind, file=file, loc=loc,
                description=data.get("description"))
    spec.args = _resolve_args(data, overrides, loc, ctx, given_at)
    env = dict(spec.args)
    spec.inputs = _inputs(data, env, loc, ctx)
    spec.declared_inputs = "inputs" in data
    spec.named = "name" in data
    inner = _Ctx(ctx.root_dir, ctx.stack, ctx.depth + 1, ctx.layer_count, ctx.limits, ctx.parsed)
    spec.layers = _LAYERS_OF_KIND[kind](data, loc, env, inner)
    if kind != "sequential":
        _module_parts(data, spec, env, loc, ctx)
    spec.ties = _ties(data.get("tie"), _loc_of(data, "tie", loc))
    _check_names(spec)
    return spec


def _check_spec_mapping(data, loc, ctx: _Ctx):
    if ctx.depth > MAX_DEPTH:
        raise CgError(f"specs are nested more than {MAX_DEPTH} deep", loc, hint="flatten the nesting")
    if not isinstance(data, dict):
        raise CgError(f"a spec must be a mapping with `kind:`, found {_kind_of(data)}", loc,
                      hint="start the file with `kind: sequential` (or modulelist, moduledict, module)")


def _check_top_keys(data, loc):
    for key in data:
        if key not in TOP_KEYS and key not in ("spec", "repeat"):
            hint = did_you_mean(str(key), TOP_KEYS)
            raise CgError(f"unknown key {key!r}", _key_loc(data, key, loc),
                          hint=hint or f"spec keys: {', '.join(sorted(TOP_KEYS))}")


def _kind(data, loc) -> str:
    """The spec's `kind`; without one, `layers` alone means sequential and a `forward` means module."""
    kind = data.get("kind")
    if kind is None:
        kind = "sequential" if "layers" in data and "forward" not in data else "module" if "forward" in data else None
        if kind is None:
            raise CgError("spec has no `kind`", loc, hint=f"add `kind:` — one of {', '.join(KINDS)}")
    if kind not in KINDS:
        hint = did_you_mean(str(kind), KINDS)
        raise CgError(f"unknown kind {kind!r}", _loc_of(data, "kind", loc),
                      hint=hint or f"kind is one of {', '.join(KINDS)}")
    return kind


def _spec_name(data, loc, default_name) -> str:
    if "name" not in data and not default_name.isidentifier():  # a file called `block one.yaml`: Block_one
        default_name = re.sub(r"\W", "_", default_name)
        default_name = default_name if default_name.isidentifier() else f"Spec_{default_name}"
    if "name" not in data and not _usable_class_name(default_name):  # a file called `class.yaml`
        default_name = f"{default_name}_"
    name = data.get("name", default_name)
    if not isinstance(name, str) or not name.isidentifier():
        raise CgError(f"name must be an identifier, found {name!r}", _loc_of(data, "name", loc))
    _check_class_name(name, _loc_of(data, "name", loc), "name")
    return name


def _usable_class_name(name: str) -> bool:
    return not keyword.iskeyword(name) and not (name.startswith("__") and name.endswith("__"))


def _check_class_name(name: str, loc, what: str) -> None:
    """A spec's name is its class's name: a Python keyword (`class`, `None`) or a dunder (`__init__`) cannot be."""
    if not _usable_class_name(name):
        kind = "a Python keyword" if keyword.iskeyword(name) else "a dunder name"
        raise CgError(f"{what} {name!r} is {kind}, which cannot name a class", loc,
                      hint=f"pick another class name ({name.strip('_').capitalize() or 'Block'}Block, ...)")


def _sequential_layers(data, loc, env, ctx: _Ctx):
    _require(data, "layers", loc, "a sequential spec lists its `layers`")
    _forbid(data, ("forward", "modules", "constants", "parameters"), loc,
            "a sequential spec has no {key}: its forward is the chain of layers (use kind: module)")
    return _layers(data["layers"], "layers", _loc_of(data, "layers", loc), env, ctx, allow_mapping=True)


def _modulelist_layers(data, loc, env, ctx: _Ctx):
    _require(data, "layers", loc, "a modulelist spec lists its `layers`")
    _forbid(data, ("modules",), loc, "a modulelist spec names its entries `layers` (a list)")
    if not isinstance(data["layers"], (list, str)):
        raise CgError("modulelist `layers` must be a list", _loc_of(data, "layers", loc),
                      hint="use kind: moduledict for named entries")
    return _layers(data["layers"], "layers", _loc_of(data, "layers", loc), env, ctx, allow_mapping=False)


def _moduledict_layers(data, loc, env, ctx: _Ctx):
    _require(data, "modules", loc, "a moduledict spec maps names to `modules`")
    _forbid(data, ("layers",), loc, "a moduledict spec names its entries `modules` (a mapping)")
    if not isinstance(data["modules"], dict):
        raise CgError("moduledict `modules` must be a mapping name -> layer", _loc_of(data, "modules", loc))
    return _layers(data["modules"], "modules", _loc_of(data, "modules", loc), env, ctx, allow_mapping=True)


def _module_layers(data, loc, env, ctx: _Ctx):
    _forbid(data, ("layers",), loc, "a module spec names its submodules under `modules` (a mapping)")
    mods = data.get("modules") or {}
    if not isinstance(mods, dict):
        raise CgError("`modules` must be a mapping name -> layer", _loc_of(data, "modules", loc))
    return _layers(mods, "modules", _loc_of(data, "modules", loc), env, ctx, allow_mapping=True, keep_absent=True)


_LAYERS_OF_KIND = {"sequential": _sequential_layers, "modulelist": _modulelist_layers,
                   "moduledict": _moduledict_layers, "module": _module_layers}


def _module_parts(data, spec: Spec, env, loc, ctx: _Ctx):
    """What a spec with its own forward has besides layers: constants, parameters, the forward."""
    spec.constants = _tensors(data.get("constants"), "constants", _loc_of(data, "constants", loc), env)
    spec.parameters = _tensors(data.get("parameters"), "parameters", _loc_of(data, "parameters", loc), env)
    container = {"modulelist": "ModuleList", "moduledict": "ModuleDict"}.get(spec.kind, "nn.Module")
    _require(data, "forward", loc, f"a {spec.kind} spec needs a `forward` program: {container} defines no forward "
             "of its own")
    spec.forward = _forward(data, spec, env, loc, ctx)


def _key_loc(data, key, default):
    return getattr(data, "key_locs", {}).get(key, default)


def _kind_of(value) -> str:
    if value is None:
        return "nothing"
    if isinstance(value, str):
        return f"the string {value[:40]!r}"
    # what YAML wrote, in YAML's words (yamlpos's PosList/PosDict are a list and a mapping)
    for kind, word in ((bool, "a boolean"), (int, "a number"), (float, "a number"), (list, "a list"),
                       (dict, "a mapping")):
        if isinstance(value, kind):
            return f"{word} ({str(value)[:40]})" if kind not in (list, dict) else word
    return f"a {type(value).__name__}"


def _require(data, key, loc, why):
    if key not in data or data[key] is None:
        raise CgError(f"missing `{key}`", loc, hint=why)


def _forbid(data, keys, loc, why):
    for key in keys:
        if key in data:
            raise CgError(f"`{key}` is not allowed here", _key_loc(data, key, loc), hint=why.format(key=f"`{key}`"))


# ----------------------------------------------------------------- args and values


def _resolve_args(data, overrides, loc, ctx, given_at=None) -> dict:
    raw = data.get("args") or {}
    if not isinstance(raw, dict):
        raise CgError("`args` must be a mapping name -> value", _loc_of(data, "args", loc))
    place, what = given_at or ("--arg", "the spec")
    for key in overrides:
        if key not in raw:
            hint = did_you_mean(key, [str(k) for k in raw])
            raise CgError(f"{what} has no arg {key!r}", place,
                          hint=hint or (f"args: {', '.join(map(str, raw))}" if raw else "the spec declares no args"))
    # In order, each from those before it, with the overrides in place: an included `ff: 4 * d` given d=16
    # is 64, as a Python default computed from the arguments would be.
    args: dict = {}
    for key, value in raw.items():
        where = _loc_of(raw, key, loc)
        if not isinstance(key, str) or not key.isidentifier() or key.startswith("_"):
            raise CgError(f"arg name {key!r} must be an identifier", where)
        if key == "training":
            raise CgError("arg name 'training' would hide the module's training flag, which the forward reads as "
                          "`training`", where, hint="rename the arg (train_mode, use_dropout)")
        if key in overrides:
            value = overrides[key]
            # typed on the command line: read as the spec reads its own; given as a value (the Python API, an
            # include's args): taken as it is ("1_0" stays a string)
            args[key] = _value(value, args, Loc("--arg"), f"--arg {key}", ctx.limits) \
                if isinstance(value, ArgText) else value
        else:
            args[key] = _value(value, args, where, f"args.{key}", ctx.limits)
    return args


def _value(value, env, loc, what, limits):
    """A spec value: numbers stay; a string is an expression over args if it reads as one."""
    if isinstance(value, bool) or value is None or isinstance(value, (int, float)):
        return value
    if isinstance(value, list):
        return [_value(v, env, _loc_of(value, i, loc), what, limits) for i, v in enumerate(value)]
    if isinstance(value, dict):
        return {k: _value(v, env, _loc_of(value, k, loc), what, limits) for k, v in value.items()}
    if isinstance(value, str):
        return string_value(value, env, loc, what=what, limits=limits)
    raise CgError(f"unsupported value {value!r} in {what}", loc)


def _int(value, loc, what, *, minimum=0) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        else:
            raise CgError(f"{what} must be a whole number, found {value!r}", loc)
    if value < minimum:
        raise CgError(f"{what} must be at least {minimum}, found {value}", loc)
    return value


def _shape(raw, env, loc, what, limits) -> tuple[tuple[int, ...], dict[str, int]]:
    """A shape list: ints, expressions over args, or named dims written `B: 2`."""
    if isinstance(raw, int) and not isinstance(raw, bool):
        raw = [raw]
    if isinstance(raw, str):
        raw = [p for p in raw.replace("x", ",").split(",") if p.strip()] if raw.strip() else []
    if not isinstance(raw, list):
        raise CgError(f"{what} must be a list of sizes, such as [2, 784]", loc)
    dims, named = [], {}
    for i, entry in enumerate(raw):
        where = _loc_of(raw, i, loc)
        if isinstance(entry, dict) and len(entry) == 1:
            (dim_name, size), = entry.items()
            named[str(dim_name)] = i
            entry = size
        elif isinstance(entry, str) and entry.strip().isidentifier() and entry.strip() not in env:
            raise CgError(f"named dim {entry!r} in {what} has no size", where,
                          hint=f"write it as `{entry}: 2`, or define {entry} under args")
        elif isinstance(entry, str) and entry.strip().isidentifier():
            named[entry.strip()] = i
        value = _value(entry, env, where, what, limits)
        dims.append(_int(value, where, f"{what}[{i}]"))
    return tuple(dims), named


def _inputs(data, env, loc, ctx) -> dict[str, InputSpec]:
    raw = data.get("inputs")
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise CgError("`inputs` must map each input name to a shape", _loc_of(data, "inputs", loc),
                      hint="for example: inputs: {x: [2, 784]}")
    out = {}
    for name, entry in raw.items():
        where = _loc_of(raw, name, loc)
        if not isinstance(name, str) or not name.isidentifier() or name.startswith("_") or name == "self":
            raise CgError(f"input name {name!r} must be an identifier", where)
        out[name] = _input(name, entry, env, where, ctx)
    return out


def _input(name, entry, env, where, ctx) -> InputSpec:
    """`[2, 784]`, or `{shape: [B: 1, T: 64], dtype: long, high: vocab}` for token ids."""
    if not (isinstance(entry, dict) and "shape" in entry):
        shape, named = _shape(entry, env, where, f"inputs.{name}", ctx.limits)
        return InputSpec(name, shape, torch.float32, None, None, named, where)
    extra = set(entry) - {"shape", "dtype", "low", "high"}
    if extra:
        raise CgError(f"unknown key {sorted(extra)[0]!r} in input {name!r}", where,
                      hint="an input takes shape, dtype, low, high")
    shape, named = _shape(entry["shape"], env, _loc_of(entry, "shape", where), f"inputs.{name}.shape", ctx.limits)
    dtype = _dtype(entry.get("dtype", "float32"), _loc_of(entry, "dtype", where))
    low = _value(entry.get("low"), env, where, "low", ctx.limits)
    high = _value(entry.get("high"), env, where, "high", ctx.limits)
    if not dtype.is_floating_point and dtype != torch.bool and high is None:
        raise CgError(f"integer input {name!r} needs `high` (values are drawn from [low, high))", where)
    return InputSpec(name, shape, dtype, low, high, named, where)


def _dtype(value, loc) -> torch.dtype:
    if value not in DTYPES:
        hint = did_you_mean(str(value), DTYPES)
        raise CgError(f"unknown dtype {value!r}", loc, hint=hint or f"dtypes: {', '.join(DTYPES)}")
    return DTYPES[value]


def _tensors(raw, section, loc, env) -> dict[str, TensorSpec]:
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise CgError(f"`{section}` must map names to tensors", loc)
    out = {}
    for name, entry in raw.items():
        where = _loc_of(raw, name, loc)
        _check_identifier(name, where, section)
        if isinstance(entry, list):
            out[name] = _literal_tensor(name, entry, section, env, where)
        elif isinstance(entry, dict):
            out[name] = _init_tensor(name, entry, section, env, where)
        else:
            raise CgError(f"{section}.{name} must be {{init: ..., shape: [...]}} or a list of numbers", where)
    return out


def _literal_tensor(name, entry: list, section, env, where) -> TensorSpec:
    value = _value(entry, env, where, f"{section}.{name}", lang.DEFAULT_LIMITS)
    try:
        shape = tuple(torch.tensor(value, dtype=torch.float64, device="meta").shape)
    except (TypeError, ValueError, RuntimeError) as e:
        raise CgError(f"{section}.{name}: not a rectangular list of numbers ({e})", where) from None
    return TensorSpec(name, shape, None, value, loc=where)


def _init_tensor(name, entry: dict, section, env, where) -> TensorSpec:
    """`{init: rand|randn|zeros|ones|eye|full|arange, shape: [...], value:, scale:, dtype:}`."""
    keys = {"init", "shape", "value", "scale", "dtype"} | ({"persistent"} if section == "constants" else set())
    extra = set(entry) - keys
    if extra:
        raise CgError(f"unknown key {sorted(extra)[0]!r} in {section}.{name}", where,
                      hint=f"a {section[:-1]} takes {', '.join(sorted(keys))}")
    persistent = entry.get("persistent", True)
    if not isinstance(persistent, bool):
        raise CgError(f"{section}.{name}.persistent must be true or false, found {persistent!r}",
                      _loc_of(entry, "persistent", where), hint="persistent: false leaves it out of the state_dict")
    init = entry.get("init", "zeros")
    if init not in INITS:
        hint = did_you_mean(str(init), INITS)
        raise CgError(f"unknown init {init!r} for {section}.{name}", _loc_of(entry, "init", where),
                      hint=hint or f"init is one of {', '.join(INITS)}")
    if "shape" not in entry:
        raise CgError(f"{section}.{name} needs a `shape`", where)
    shape, _ = _shape(entry["shape"], env, _loc_of(entry, "shape", where), f"{section}.{name}.shape",
                      lang.DEFAULT_LIMITS)
    if init == "eye" and len(shape) != 2:
        raise CgError(f"init eye needs a 2-d shape, found {list(shape)}", where)
    if init == "full" and "value" not in entry:
        raise CgError(f"init full needs a `value` for {section}.{name}", where)
    value = _value(entry.get("value"), env, where, f"{section}.{name}.value", lang.DEFAULT_LIMITS)
    scale = _value(entry.get("scale"), env, where, f"{section}.{name}.scale", lang.DEFAULT_LIMITS)
    dtype = _dtype(entry["dtype"], _loc_of(entry, "dtype", where)) if "dtype" in entry else None
    return TensorSpec(name, shape, init, value, scale, dtype, where, persistent)


def _check_identifier(name, where, section):
    if not isinstance(name, str) or not name.isidentifier() or name.startswith("_"):
        raise CgError(f"{section} name {name!r} must be an identifier not starting with '_'", where)


# ----------------------------------------------------------------- layers


def _layers(raw, section, loc, env, ctx: _Ctx, *, allow_mapping: bool,
            keep_absent: bool = False) -> list[tuple[str | None, Layer]]:
    out: list[tuple[str | None, Layer]] = []
    defined: set[str] = set()  # names (or list positions) of the layers so far, for refs
    if isinstance(raw, str):  # generated from the args, as the reference code builds its list
        raw = _generated(raw, section, loc, env, ctx)
    for name, entry, where_loc, where in _layer_entries(raw, section, loc, allow_mapping):
        if name is not None:
            _check_identifier(name, where_loc, section)
        before = ctx.layer_count[0]
        layer = _layer(entry, where, where_loc, env, ctx)
        inside = ctx.layer_count[0] - before  # the layers of a nested spec
        if layer.absent and not (keep_absent and name is not None):
            continue  # `X if cond else None` in a list: no entry, and the next takes its index
        if layer.ref is not None:
            _check_ref(layer.ref, defined, where, where_loc)
        defined.add(name if name is not None else str(len(out)))
        # `repeat: N` of a nested spec makes N copies of everything in it (counted once while it loaded)
        _count_layers((layer.repeat or 1) * (1 + inside) - inside, ctx, where_loc)
        if name is None and layer.repeat is not None:
            if layer.repeat_names is not None or layer.repeat_kind != "sequential":
                raise CgError(f"{where}: in a list, repeat: N stands for N entries in a row; names and kind choose "
                              "the container of the copies of a named entry", where_loc,
                              hint="write repeat: N here, or name the entry (modules: {blocks: {..., repeat: ...}})")
            # In a list, `repeat: N` stands for N fresh copies in a row.
            for _ in range(layer.repeat):
                out.append((None, Layer(where, where_loc, layer.call, None, layer.spec, None)))
                defined.add(str(len(out) - 1))
        else:
            out.append((name, layer))
    return out


def _generated(raw, section, loc, env, ctx: _Ctx) -> list:
    """`layers:` as a program over the args: the entries it returns (calls, nested specs, None)."""
    start = getattr(raw, "loc", loc)
    source = lang.Source(str(raw), file=start.file or str(loc.file), line=start.line or 1,
                         col=(start.col or 1) - 1)
    out = generate(str(raw), env, source, loc, call=_constructor_call(ctx, loc, section), limits=ctx.limits)
    listed = yamlpos.PosList(out)
    listed.loc, listed.locs = loc, [loc] * len(out)
    return listed


def _layer_entries(raw, section, loc, allow_mapping: bool) -> list[tuple]:
    """(name or None, entry, loc, spec path) for each entry of a `layers` list or `modules` mapping."""
    if isinstance(raw, dict):
        if not allow_mapping:
            raise CgError(f"`{section}` must be a list", loc)
        _detect_split_mapping(raw, section, loc)
        return [(k, v, _loc_of(raw, k, loc), f"{section}.{k}") for k, v in raw.items()]
    if isinstance(raw, list):
        _detect_split_calls(raw, loc)
        return [(None, v, _loc_of(raw, i, loc), f"{section}[{i}]") for i, v in enumerate(raw)]
    raise CgError(f"`{section}` must be a list or a mapping of layers", loc)


def _check_ref(ref: str, defined: set[str], where, loc):
    head = ref.split(".")[0]
    if head not in defined:
        known = ", ".join(sorted(defined)) or "none yet"
        hint = did_you_mean(head, defined)
        raise CgError(f"{where}: ref to undefined module {ref!r} (defined before it: {known})", loc,
                      hint=hint or "a ref names a module defined earlier in the same spec")


def _count_layers(count: int, ctx: _Ctx, loc):
    ctx.layer_count[0] += count
    if ctx.layer_count[0] > MAX_LAYERS:
        raise CgError(f"more than {MAX_LAYERS:,} layers in all", loc)


def _detect_split_calls(raw: list, loc):
    """`[Linear(40, 30), ReLU()]` in flow style reads as 'Linear(40', '30)', 'ReLU()'."""
    for i, item in enumerate(raw):
        if isinstance(item, str) and item.count("(") != item.count(")"):
            where = _loc_of(raw, i, loc)
            joined = item
            if item.count("(") > item.count(")") and i + 1 < len(raw) and isinstance(raw[i + 1], str):
                joined = f"{item}, {raw[i + 1]}"
            raise CgError(f"layer {item!r} has unbalanced parentheses: YAML split the call {joined!r} at a comma",
                          where, hint=f"quote it ('{joined}') or write the layers as a block list (- {joined})")


def _detect_split_mapping(raw: dict, section: str, loc):
    """`{l: Linear(784, 10)}` in flow style reads as {'l': 'Linear(784', '10)': None}: YAML split
    the value at its comma and made the rest keys without values."""
    items = list(raw.items())
    for i, (key, value) in enumerate(items):
        if not isinstance(value, str) or value.count("(") <= value.count(")"):
            continue
        joined = value
        for rest, empty in items[i + 1:]:
            if empty is not None or joined.count("(") <= joined.count(")"):
                break
            joined = f"{joined}, {rest}"
        raise CgError(f"{section}.{key}: {value!r} has unbalanced parentheses: in flow style ({{...}}) YAML split "
                      f"the call {joined!r} at a comma", _loc_of(raw, key, loc),
                      hint=f"quote it ({key}: '{joined}'), or write {section} in block style, one per line "
                      f"({key}: {joined})")


def _layer(entry, where, loc, env, ctx: _Ctx) -> Layer:
    """One layer entry: a call string, or a mapping with `ref:`, `type:`, `spec:` or an inline `kind:` (or what a
    generated list holds: a call, a nested spec, None)."""
    if isinstance(entry, str):
        value = _call_from_text(entry, env, loc, where, ctx)
        return value if isinstance(value, Layer) else Layer(where, loc, call=value)
    if entry is None or isinstance(entry, Call):
        return Layer(where, loc, call=entry)
    if isinstance(entry, Layer):
        entry.where, entry.loc = where, loc
        return entry
    if not isinstance(entry, dict):
        raise CgError(f"{where}: a layer is a call such as 'Linear(784, 256)' or a mapping, found {_kind_of(entry)}",
                      loc)
    repeat = _repeat(entry, where, loc, env, ctx)
    body = {k: v for k, v in entry.items() if k != "repeat"}
    layer = _LAYER_FORMS[_layer_form(body, where, loc)](body, repeat and repeat[0], where, loc, env, ctx)
    if repeat is not None:
        layer.repeat_kind, layer.repeat_names, layer.repeat_keys = repeat[1], repeat[2], repeat[3]
    return layer


def _repeat(entry, where, loc, env, ctx: _Ctx):
    """`repeat: N`, or `repeat: {count: N, kind: modulelist, names: "encoder_layer_{i}"}`: (N, kind, names)."""
    if "repeat" not in entry:
        return None
    rloc = _loc_of(entry, "repeat", loc)
    raw = entry["repeat"]
    kind, names = "sequential", None
    if isinstance(raw, dict):
        extra = set(raw) - {"count", "kind", "names"}
        if extra or "count" not in raw:
            raise CgError(f"{where}.repeat takes count, kind and names" + (f", not {sorted(extra)[0]!r}" if extra
                          else ", and needs count"), rloc,
                          hint='repeat: {count: 12, kind: modulelist} or {count: 12, names: "layer_{i}"}')
        kind = raw.get("kind", "sequential")
        if kind not in ("sequential", "modulelist"):
            raise CgError(f"{where}.repeat.kind is {kind!r}: the copies go in a sequential or a modulelist",
                          _loc_of(raw, "kind", rloc), hint=did_you_mean(str(kind), ("sequential", "modulelist")))
        names = raw.get("names")
        if names is not None:
            if kind != "sequential":
                raise CgError(f"{where}.repeat: a modulelist numbers its entries; names need kind: sequential",
                              _loc_of(raw, "names", rloc))
        nloc = _loc_of(raw, "names", rloc)
        rloc, raw = _loc_of(raw, "count", rloc), raw["count"]
    repeat = _int(_value(raw, env, rloc, "repeat", ctx.limits), rloc, f"{where}.repeat", minimum=1)
    if repeat > MAX_REPEAT:
        raise CgError(f"{where}.repeat is {repeat:,}, over the cap of {MAX_REPEAT:,}", rloc)
    keys = _repeat_keys(names, repeat, nloc, where, ctx.limits) if names is not None else None
    return repeat, kind, names, keys


_NAMES_HINT = 'names: "encoder_layer_{i}" (i counts from 0), "denselayer{i + 1}" or "block_{i:02d}"'


def _repeat_keys(names, count: int, loc, where, limits) -> list[str]:
    """The copies' names from `names: "denselayer{i + 1}"`: one field, an expression over i (counting from 0)
    with an optional width (`{i:02d}`), as the f-string the eject writes computes them."""
    what = f"{where}.repeat.names"
    try:
        parts = list(string.Formatter().parse(names)) if isinstance(names, str) else None
    except ValueError:
        parts = None
    fields = [p for p in parts or [] if p[1] is not None]
    if not fields or len(fields) != 1 or fields[0][3] is not None or not re.fullmatch(r"(0?[1-9]d|d?)", fields[0][2]):
        raise CgError(f"{what} must be a name with one {{i}} field in it, found {names!r}", loc, hint=_NAMES_HINT)
    keys = []
    for i in range(count):
        out = []
        for literal, field, spec, _ in parts:
            out.append(literal)
            if field is not None:
                n = eval_constant(field or "i", {"i": i}, loc, what=what, limits=limits)
                if isinstance(n, bool) or not isinstance(n, int):
                    raise CgError(f"{what}: {{{field}}} is {n!r} for i = {i}, not a whole number", loc, hint=_NAMES_HINT)
                out.append(format(n, spec or "d"))
        keys.append("".join(out))
    bad = next((k for k in keys if not k.isidentifier() or k.startswith("_")), None)
    if bad is not None:
        raise CgError(f"{what} makes {bad!r}, which is not a name", loc, hint=_NAMES_HINT)
    if len(set(keys)) != len(keys):
        twice = next(k for k in keys if keys.count(k) > 1)
        raise CgError(f"{what} makes {twice!r} twice", loc, hint="let the name depend on i: " + _NAMES_HINT)
    return keys


def _layer_form(body: dict, where, loc) -> str:
    forms = [k for k in ("ref", "spec", "type", "kind") if k in body]
    if not forms:
        raise CgError(f"{where}: a layer mapping needs `type:`, `ref:`, `spec:` or an inline `kind:`", loc,
                      hint="for example {type: Linear, in_features: 784, out_features: 256}")
    if len(forms) > 1:
        raise CgError(f"{where}: a layer has one of type, ref, spec or kind, found {', '.join(forms)}", loc)
    return forms[0]


def _ref_layer(body: dict, repeat, where, loc, env, ctx: _Ctx) -> Layer:
    """`{ref: name}`: the very same module again."""
    if len(body) != 1:
        raise CgError(f"{where}: a ref takes nothing else", loc, hint="{ref: linear}")
    if repeat is not None:
        raise CgError(f"{where}: repeat makes fresh copies; a ref is the same module", loc)
    ref = body["ref"]
    if not isinstance(ref, (str, int)):
        raise CgError(f"{where}: ref must name a module", loc)
    return Layer(where, loc, ref=str(ref))


def _type_layer(body: dict, repeat, where, loc, env, ctx: _Ctx) -> Layer:
    """`{type: Linear, in_features: 784, out_features: 256}`: a call with keyword arguments."""
    type_name = body["type"]
    if not isinstance(type_name, str):
        raise CgError(f"{where}: type must be a layer class name such as Linear", loc)
    kwargs = {k: _value(v, env, _loc_of(body, k, loc), f"{where}.{k}", ctx.limits)
              for k, v in body.items() if k != "type"}
    return Layer(where, loc, call=Call(type_name, [], kwargs, call_text(type_name, [], kwargs), loc), repeat=repeat)


def _file_layer(body: dict, repeat, where, loc, env, ctx: _Ctx) -> Layer:
    """`{spec: block.yaml, args: {d: 64}, name: Block}`: a nested spec from a file."""
    extra = set(body) - {"spec", "args", "name"}
    if extra:
        raise CgError(f"{where}: unknown key {sorted(extra)[0]!r} next to spec:", loc,
                      hint="a nested spec file takes spec, args and name")
    sub_args = body.get("args") or {}
    if not isinstance(sub_args, dict):
        raise CgError(f"{where}.args must be a mapping", loc)
    values = {k: _value(v, env, _loc_of(sub_args, k, loc), f"{where}.args.{k}", ctx.limits)
              for k, v in sub_args.items()}
    spec = _include(body["spec"], _loc_of(body, "spec", loc), values, ctx, where)
    if "name" in body:
        name = body["name"]
        if not isinstance(name, str) or not name.isidentifier():
            raise CgError(f"{where}.name must be an identifier (the class name of the nested spec), found {name!r}",
                          _loc_of(body, "name", loc))
        _check_class_name(name, _loc_of(body, "name", loc), f"{where}.name")
        spec.name, spec.named = name, True
    return Layer(where, loc, spec=spec, repeat=repeat)


def _inline_layer(body: dict, repeat, where, loc, env, ctx: _Ctx) -> Layer:
    """`{kind: sequential, layers: [...]}`: a nested spec written in place."""
    if "args" in body and not isinstance(body["args"], dict):
        raise CgError(f"{where}.args must be a mapping", loc)
    inline = dict(body)
    inherited: dict = {}
    if "args" not in inline:  # an inline spec sees its parent's args unless it declares its own
        inline_args = yamlpos.PosDict(env)
        inline_args.loc, inline_args.locs, inline_args.key_locs = loc, {}, {}
        inline["args"] = inline_args
        inherited = env  # values already: given as such, not read again ("1_0" stays a string)
    spec = _spec_from_data(inline, loc.file or "<spec>", loc, overrides=inherited, ctx=ctx,
                           default_name=where.split(".")[-1].split("[")[0].capitalize() or "Block")
    return Layer(where, loc, spec=spec, repeat=repeat)


_LAYER_FORMS = {"ref": _ref_layer, "type": _type_layer, "spec": _file_layer, "kind": _inline_layer}


def _include(path, loc, args, ctx: _Ctx, where) -> Spec:
    if not isinstance(path, str) or not path.endswith((".yaml", ".yml")):
        raise CgError(f"{where}: spec must be a relative path to a .yaml file", loc)
    if ctx.root_dir is None:
        raise CgError(f"{where}: a spec read from stdin has no folder, so it cannot include {path!r}", loc,
                      hint="give the spec's path instead of -, or name the folder its includes are in with --base DIR")
    base = os.path.dirname(ctx.stack[-1]) if ctx.stack else ctx.root_dir
    if os.path.isabs(path):
        raise CgError(f"{where}: included spec paths must be relative to the including spec", loc)
    full = os.path.realpath(os.path.join(base, path))  # symlinks resolved: one that leaves the folder is refused
    root = os.path.realpath(ctx.root_dir)
    if os.path.commonpath([full, root]) != root:
        raise CgError(f"{where}: included spec {path!r} is outside the spec's folder", loc,
                      hint="keep included specs in the same folder tree as the main spec")
    try:
        if os.stat(full).st_nlink > 1:  # a hard link may be any file of the file system
            raise CgError(f"{where}: included spec {path!r} has other hard links, so it may be a file from outside "
                          "the spec's folder: not read", loc, hint="copy the file into the spec's folder")
    except OSError:
        pass  # not found: said below
    if full in ctx.stack:
        chain = " -> ".join(os.path.basename(p) for p in (*ctx.stack, full))
        raise CgError(f"{where}: include cycle {chain}", loc, hint="a spec cannot include itself")
    if ctx.depth > MAX_DEPTH:
        raise CgError(f"specs are nested more than {MAX_DEPTH} deep", loc)
    if full in ctx.parsed:  # the same file included again: parsed once (100 includes of a large file)
        display, data, inside = ctx.parsed[full]
        _count_layers(inside, ctx, loc)
        sub = _Ctx(ctx.root_dir, (*ctx.stack, full), ctx.depth + 1, ctx.layer_count, ctx.limits, ctx.parsed)
        return _spec_from_data(data, display, Loc(display, 1, 1), overrides=args, ctx=sub,
                               default_name=_stem(display), given_at=(loc, f"{where}: {path}"))
    try:
        if os.path.exists(full):
            text = yamlpos.read_capped(full, str(loc))  # a regular file, no further than the cap
        else:
            raise FileNotFoundError(full)
    except FileNotFoundError:
        hint = "includes are relative to the including spec's folder"
        if not ctx.stack and str(getattr(loc, "file", loc)).startswith("<"):
            hint = (f"a spec read from stdin includes from the --base folder ({ctx.root_dir}); "
                    "give the spec's path instead of -, or another --base")
        raise CgError(f"{where}: included spec {path!r} not found", loc, hint=hint) from None
    except (OSError, UnicodeDecodeError) as e:
        raise CgError(f"{where}: cannot read included spec {path!r}: {e}", loc) from None
    display = os.path.relpath(full) if not os.path.relpath(full).startswith("..") else full
    data = yamlpos.load(text, display)
    sub = _Ctx(ctx.root_dir, (*ctx.stack, full), ctx.depth + 1, ctx.layer_count, ctx.limits, ctx.parsed)
    before = ctx.layer_count[0]
    spec = _spec_from_data(data, display, Loc(display, 1, 1), overrides=args, ctx=sub, default_name=_stem(display),
                           given_at=(loc, f"{where}: {path}"))
    ctx.parsed[full] = (display, data, ctx.layer_count[0] - before)
    return spec


def _constructor_call(ctx: _Ctx, loc, where):
    """What a constructor call in a spec value becomes: a Call, or for `spec('block.yaml', d=64)` the nested
    spec file loaded with those args (in a generated list or a call string)."""
    def call(name, args, kwargs):
        if name == "spec":
            if len(args) != 1 or not isinstance(args[0], str):
                raise CgError(f"{where}: spec(...) takes the path of a spec file, then its args by name", loc,
                              hint="spec('block.yaml', d=64)")
            return Layer(where, loc, spec=_include(args[0], loc, kwargs, ctx, where))
        return Call(name, args, kwargs, call_text(name, args, kwargs), loc)

    return call


def _call_from_text(text, env, loc, where, ctx: _Ctx) -> Call | Layer | None:
    # a `>-` scalar keeps the line breaks of more-indented lines: a call is one expression, whatever its lines
    stripped = plain_nn(" ".join(text.split()))
    if stripped == "None":  # an entry that is not there, as `X if cond else None` when cond is false
        return None
    if stripped.isidentifier():
        stripped += "()"  # `ReLU` means ReLU()
    try:
        tree = ast.parse(stripped, mode="eval")
    except SyntaxError as e:
        raise CgError(f"{where}: cannot read layer {text!r}: {e.msg}", loc,
                      hint="write a call such as 'Linear(784, 256)'") from None
    if not isinstance(tree.body, (ast.Call, ast.IfExp)):
        raise CgError(f"{where}: a layer is a call such as 'Linear(784, 256)', found {text!r}", loc)

    value = eval_constant(stripped, env, loc, what=f"{where} layer", call=_constructor_call(ctx, loc, where),
                          limits=ctx.limits)
    if value is not None and not isinstance(value, (Call, Layer)):
        raise CgError(f"{where}: {text!r} is not a layer call", loc, hint="write a call such as 'Linear(784, 256)'")
    return value


CALL_TEXT_CHARS = 240  # a call's text in trees and errors: a value of a million items is not printed whole


def call_text(name: str, args: list, kwargs: dict) -> str:
    """A constructor call with its values: Linear(768, 2304, bias=False), cut short (…) past a few hundred
    characters, without building the text of what is cut."""
    parts, room = [], CALL_TEXT_CHARS
    for k, v in [(None, a) for a in args] + list(kwargs.items()):
        if room <= 0:
            parts.append("…")
            break
        part = (f"{k}=" if k is not None else "") + _shown(v, room)
        parts.append(part)
        room -= len(part) + 2
    return f"{name}({', '.join(parts)})"


def _shown(v, room: int) -> str:
    if isinstance(v, Call):
        text = v.text
    elif isinstance(v, (list, tuple)):
        items = []
        for x in v:
            if room <= 0:
                items.append("…")
                break
            items.append(_shown(x, room))
            room -= len(items[-1]) + 2
        if isinstance(v, list):
            return "[" + ", ".join(items) + "]"
        return "(" + ", ".join(items) + ("," if len(v) == 1 else "") + ")"
    elif isinstance(v, str) and len(v) > max(room, 20):
        text = repr(v[:max(room, 20)]) + "…"
    else:
        text = repr(v)
    return text if len(text) <= max(room, 20) else text[:max(room, 20)] + "…"


def _ties(raw, loc) -> list[tuple[str, str, Loc]]:
    if raw is None:
        return []
    if not isinstance(raw, dict):
        raise CgError("`tie` must map a parameter to the one it shares, e.g. {out.weight: embed.weight}", loc)
    out = []
    for target, source in raw.items():
        where = _loc_of(raw, target, loc)
        if not isinstance(source, str):
            raise CgError(f"tie {target!r} must name a parameter such as embed.weight", where)
        out.append((str(target), source, where))
    return out


def _check_names(spec: Spec):
    seen: dict[str, str] = {}
    groups = [("module", [n for n, _ in spec.layers if n is not None]), ("constant", list(spec.constants)),
              ("parameter", list(spec.parameters)), ("input", spec.input_names if spec.forward else [])]
    for what, names in groups:
        for n in names:
            if n in seen:
                raise CgError(f"name {n!r} is both a {seen[n]} and a {what}", spec.loc, hint="rename one of them")
            seen[n] = what
    if spec.kind == "moduledict" and "modules" in seen:
        raise CgError("a moduledict entry cannot be called 'modules': that names the container", spec.loc)


def _forward(data, spec: Spec, env, loc, ctx) -> lang.Program:
    text = data["forward"]
    floc = _loc_of(data, "forward", loc)
    if not isinstance(text, str):
        raise CgError("forward must be a program (a YAML block: `forward: |`)", floc)
    start = getattr(text, "loc", floc)
    source = lang.Source(str(text), file=start.file or spec.file, line=start.line or 1,
                         col=(start.col or 1) - 1)
    return lang.check_forward(source, _forward_names(spec), limits=ctx.limits)


def _forward_names(spec: Spec) -> dict[str, str]:
    """What each name a forward may read is: arg, input, module, container, constant or parameter."""
    known: dict[str, str] = {}
    known.update((n, "arg") for n in spec.args)
    known.update((n, "input") for n in spec.input_names)
    known.update((n, "module") for n, _ in spec.layers if n is not None)
    container = {"modulelist": "layers", "moduledict": "modules"}.get(spec.kind)
    if container is not None:
        known[container] = "container"
    known.update((n, "constant") for n in spec.constants)
    known.update((n, "parameter") for n in spec.parameters)
    return known


def data_dependence(spec: Spec) -> list:
    """The conditions and loop bounds of the spec's forward, and of every nested spec's, that read a tensor's
    value (:func:`cgtool.lang.dynamic.data_dependent`): where the graph depends on the data."""
    from ..lang.dynamic import data_dependent

    found, seen = [], set()

    def walk(s: Spec) -> None:
        if id(s) in seen:
            return
        seen.add(id(s))
        if s.forward is not None:
            for d in data_dependent(s.forward, _forward_names(s)):
                if (d.line, d.text) not in {(f.line, f.text) for f in found}:
                    found.append(d)
        for _, layer in s.layers:
            if layer.spec is not None:
                walk(layer.spec)

    walk(spec)
    return found
