"""Eject: a spec as standalone PyTorch source, so a user can leave YAML behind.

One ``nn.Module`` subclass per spec (nested specs first, the top-level class last), with the spec's
args as constructor arguments whose defaults are the spec's values, so ``Model()`` builds the same
module tree as ``cgtool build`` and loads the state_dict that ``cgtool build --save`` writes.

The source is generated from what the user wrote, not from the compiled forward: the checked
forward's AST (``self.NAME`` and ``F.NAME`` already resolved by :mod:`cgtool.lang.check`) with the
language's names mapped back to PyTorch (a module ``linear`` → ``self.linear``, ``relu`` →
``torch.relu``, an arg ``d`` → ``self.d``), and the layer constructors as written in the YAML
(``Conv2d(in_ch, out_ch, 3)`` → ``nn.Conv2d(in_ch, out_ch, 3)``), read again from the spec's file
because the loaded :class:`~cgtool.spec.Spec` holds only their values. None of the guards of the
compiled code (loop caps, size caps on products and powers) is kept: the result is plain PyTorch.
"""
from __future__ import annotations

import ast
import os
import re
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from ..errors import CgError
from ..lang.allowlist import CONSTANT_NAMES, FUNCTIONS, NUMBER_FUNCTIONS
from ..lang.check import SELF_MODULE
from ..spec import Layer, Spec, TensorSpec, yamlpos
from ..spec.values import HELPERS, is_layer_class, plain_nn

# Names the generated file uses itself: a spec arg or variable of the same name gets a trailing _.
_RESERVED = frozenset({"self", "super", "torch", "nn", "F", "math", "OrderedDict", "range", "len", "int", "float",
                       "bool", "abs", "min", "max", "round", "sum", "zip", "enumerate"})
# Functions that are Python's when their first argument is not a tensor (see allowlist._tensor_or_python).
_TENSOR_OR_PYTHON = frozenset({"sum", "max", "min", "round"})
_PYTHON = frozenset({"len", "enumerate", "zip", "int", "float", "bool", "abs", "range"})
_DTYPE_NAMES = {torch.float32: "torch.float32", torch.float64: "torch.float64", torch.float16: "torch.float16",
                torch.bfloat16: "torch.bfloat16", torch.long: "torch.long", torch.int32: "torch.int32",
                torch.bool: "torch.bool"}


def function_spelling(name: str) -> str:
    """How plain PyTorch spells the allow-listed function *name* (``relu`` → ``torch.relu``)."""
    if name in _PYTHON:
        return name
    fn = getattr(FUNCTIONS[name], "__wrapped__", FUNCTIONS[name])  # elu, silu, ...: never in place in a spec
    if name == "norm":
        return "torch.norm"
    if name == "dropout":
        return "F.dropout"
    if name in _TENSOR_OR_PYTHON or name in ("zeros", "ones", "rand", "randn", "full", "arange", "eye", "exp", "log",
                                             "sqrt"):
        return f"torch.{name}"
    if getattr(torch, name, None) is fn:
        return f"torch.{name}"
    if getattr(F, name, None) is fn:
        return f"F.{name}"
    raise CgError(f"export --to python: no PyTorch spelling for the function {name!r}",
                  hint="this is a bug in cgtool's eject table; please report it")


@dataclass
class PythonSource:
    """The ejected source: ``code`` defines ``classes`` (the top-level one, ``top``, last)."""

    code: str
    top: str
    classes: list[str] = field(default_factory=list)


def eject(spec: Spec, text: str, file: str, *, inputs: dict | None = None) -> PythonSource:
    """The source of *spec* (loaded from *text*, read from *file*) as plain PyTorch classes.

    *inputs*: name → :class:`~cgtool.spec.InputSpec`, named in the module docstring.
    """
    raw = yamlpos.load(text, file)
    ej = _Eject(None if file.startswith("<") else os.path.dirname(os.path.realpath(file)))
    ej.avoid_args_of(spec)
    top = ej.class_for(spec, raw, top=True)
    return PythonSource(ej.module_source(spec, top, file, inputs or {}), top, [name for name, _ in ej.classes])


# --------------------------------------------------------------------------- names and values


def _safe(name: str) -> str:
    return f"{name}_" if name in _RESERVED else name


def _class_name(name: str) -> str:
    cleaned = re.sub(r"\W", "_", name)
    if not cleaned or cleaned[0].isdigit():
        cleaned = f"M{cleaned}"
    return cleaned if cleaned not in _RESERVED else f"{cleaned}Module"


class _ValueNames(ast.NodeTransformer):
    """A spec value's expression over args: args renamed where they clash; constructors as ``nn.NAME``, a class
    named as a value (``activation_layer=ReLU6``) as ``nn.ReLU6``, an arg holding a class called as it is
    (``activation_layer(inplace=True)``), and ``spec('block.yaml', d=64)`` as the block's class (*spec_class*
    gives its name)."""

    def __init__(self, constructors: bool, env=frozenset(), spec_class=None):
        self.constructors, self.env, self.spec_class = constructors, env, spec_class

    def visit_Name(self, node):
        if isinstance(node.ctx, ast.Load) and node.id not in self.env and is_layer_class(node.id):
            return ast.copy_location(_code(f"nn.{node.id}"), node)
        return ast.copy_location(ast.Name(_safe(node.id), node.ctx), node)

    def visit_Call(self, node):
        node.args = [self.visit(a) for a in node.args]
        node.keywords = [self.visit(k) for k in node.keywords]
        if not isinstance(node.func, ast.Name):
            node.func = self.visit(node.func)
            return node
        name = node.func.id
        if name == "spec" and name not in self.env and self.spec_class is not None and node.args \
                and isinstance(node.args[0], (ast.Constant, ast.Name)):
            first = node.args[0]
            # spec('block.yaml', ...) is the block's class; spec(block, ...) with an arg holding the file: the arg
            # holds the class (its default is the class, as torchvision's ResNet(block=BasicBlock))
            cls = self.spec_class(first.value) if isinstance(first, ast.Constant) else first.id
            node.func = ast.copy_location(ast.Name(cls, ast.Load()), node.func)
            node.args = node.args[1:]
            for k in node.keywords:
                k.arg = _safe(k.arg) if k.arg else k.arg
        elif name in self.env:  # an arg holding a class, or a local
            node.func = ast.copy_location(ast.Name(_safe(name), ast.Load()), node.func)
        elif name in HELPERS or name in _PYTHON:
            pass
        elif self.constructors:
            node.func = ast.copy_location(ast.Attribute(ast.Name("nn", ast.Load()), name, ast.Load()), node.func)
        return node


def _expr_code(text: str, *, constructors: bool = False, env=frozenset(), spec_class=None) -> str:
    stripped = plain_nn(text.strip())  # `nn.ReLU6` as the spec reads it: the class ReLU6, written nn.ReLU6 below
    if constructors and stripped.isidentifier():
        stripped += "()"  # `ReLU` means ReLU(), and `act` (an arg holding a class) act(), as the build reads them
    tree = ast.parse(stripped, mode="eval")
    return ast.unparse(_ValueNames(constructors, env, spec_class).visit(tree).body)


def _literal_code(value) -> str:
    """A value as code: a torch.nn class name given as an arg's value (`act: ReLU6`) is the class."""
    if isinstance(value, str) and is_layer_class(value):
        return f"nn.{value}"
    return repr(value)


def _value_code(raw, value, env=frozenset()) -> str:
    """The code of one spec value: its expression over the args in *env* as written (*raw*), or the literal
    it is (a plain word such as `same` is a string, as :func:`cgtool.spec.values.string_value` reads it)."""
    if isinstance(raw, bool) or raw is None or isinstance(raw, (int, float)):
        return repr(raw)
    if isinstance(raw, str):
        if isinstance(value, str) and not (raw.strip().isidentifier() and raw.strip() in env):
            return _literal_code(value)
        return _expr_code(raw, env=env)
    if isinstance(raw, dict) and len(raw) == 1:  # a named dim in a shape: `B: 2`
        return _value_code(next(iter(raw.values())), value, env)
    if isinstance(raw, list):
        values = list(value) if isinstance(value, (list, tuple)) else [None] * len(raw)
        inner = ", ".join(_value_code(r, v, env) for r, v in zip(raw, values))
        return f"({inner},)" if isinstance(value, tuple) and len(raw) == 1 else \
            f"({inner})" if isinstance(value, tuple) else f"[{inner}]"
    return repr(value)


def _path_code(root: str, dotted: str) -> str:
    """``self`` + ``h.0.weight`` → ``self.h[0].weight``."""
    out = root
    for part in dotted.split("."):
        out += f"[{part}]" if part.isdigit() else f".{part}" if part.isidentifier() else f"[{part!r}]"
    return out


# --------------------------------------------------------------------------- classes


@dataclass
class _Arg:
    name: str  # as the generated code names it
    default: str  # code
    derived: str | None = None  # code of a default computed from the args before it (the default is then None)


class _Eject:
    def __init__(self, root: str | None = None):
        self.root = root  # the top spec's folder: a spec file the build did not read is read only from inside it
        self.classes: list[tuple[str, str]] = []  # (name, source), in definition order
        self.keys: dict[tuple, str] = {}
        self.uses_ordered_dict = False
        self.avoid: set[str] = set()  # the args of every spec: locals of an __init__, which would hide a class

    def avoid_args_of(self, spec: Spec) -> None:
        stack = [spec]
        while stack:
            s = stack.pop()
            self.avoid.update(_safe(k) for k in s.args)
            stack.extend(layer.spec for _, layer in s.layers if layer.spec is not None)

    def _free(self, base: str) -> str:
        """*base*, or *base*2, 3, ...: a module-level name no class, function or arg has."""
        taken = {n for n, _ in self.classes} | self.avoid | _RESERVED
        name, n = base, 2
        while name in taken:
            name, n = f"{base}{n}", n + 1
        return name

    def class_for(self, spec: Spec, raw, *, top: bool = False, inherited: bool = False) -> str:
        """The class of *spec* (defined once per spec file or inline spec), its definition emitted first."""
        key = (_real(spec.file), spec.loc.line, spec.loc.col, spec.name)  # a file reached by two paths: one class
        if key in self.keys:
            return self.keys[key]
        name = self._free(_class_name(spec.name))
        self.keys[key] = name
        args = self._args(spec, raw, top=top, inherited=inherited)
        self.classes.append((name, ""))  # reserve the name; nested classes defined while building come first
        source = _ClassWriter(self, spec, raw, name, args).source()
        self.classes = [c for c in self.classes if c[0] != name] + [(name, source)]
        return name

    def _args(self, spec: Spec, raw, *, top: bool, inherited: bool) -> list[_Arg]:
        """Constructor arguments: the top spec's values (with --arg applied) as defaults; a nested spec file's
        or inline spec's own defaults, computed as the loader computes them: in order, from the defaults before
        them (`ff: 4 * d` is 4 × the file's own d, whatever d the including spec passes)."""
        if top:  # the values (--arg applied); one computed from those before it stays computed
            raw_args = (raw.get("args") or {}) if isinstance(raw, dict) else {}
            out, env = [], {}
            for k, v in spec.args.items():
                r = raw_args.get(k)
                before = set(list(spec.args)[:list(spec.args).index(k)])
                derived = isinstance(r, str) and before & _words(r) and _default(r, env, spec) == v
                out.append(_Arg(_safe(k), "None", _value_code(r, v, before)) if derived
                           else _Arg(_safe(k), self._default_code(spec, v)))
                env[k] = v
            return out
        if inherited:  # the parent's args that this inline spec (or any spec inside it) reads
            read = _words(raw)
            return [_Arg(_safe(k), self._default_code(spec, v)) for k, v in spec.args.items() if k in read]
        raw_args = (raw.get("args") or {}) if isinstance(raw, dict) else {}
        env: dict = {}
        out = []
        for k, r in raw_args.items():
            env[k] = _default(r, env, spec)
            before = set(list(raw_args)[:list(raw_args).index(k)])
            if isinstance(r, str) and before & _words(r):  # `ff: 4 * d`: computed from the d given
                out.append(_Arg(_safe(k), "None", _value_code(r, env[k], before)))
            else:
                out.append(_Arg(_safe(k), self._default_code(spec, env[k])))
        return out

    def function(self, base: str, args: list[_Arg], body: list[str], spec: Spec) -> str:
        """``def NAME(args): ...`` at module level (a generated layer list), defined once per spec."""
        key = ("function", _real(spec.file), spec.loc.line, spec.loc.col)
        if key in self.keys:
            return self.keys[key]
        name = self._free(base)
        self.keys[key] = name
        where = os.path.basename(spec.loc.file or spec.file) + (f":{spec.loc.line}" if spec.loc.line else "")
        params = ", ".join(f"{a.name}={a.default}" for a in args)
        source = [f"def {name}({params}):", f'    """The layers of {spec.name} ({where}), generated from the args."""',
                  *[_indent(line, 4) for line in body]]
        self.classes.append((name, "\n".join(source)))
        return name

    def named_sequential(self, name: str) -> str | None:
        """``class NAME(nn.Sequential)`` adding nothing, defined once (every inline `name: Stage` is one class,
        as in the build); None where another class already has the name."""
        key = ("named sequential", name)
        if key in self.keys:
            return self.keys[key]
        if self._free(name) != name or _class_name(name) != name:
            return None
        self.keys[key] = name
        self.classes.append((name, f"class {name}(nn.Sequential):\n    \"\"\"A named nn.Sequential (name: {name} in "
                                   "the spec): it adds nothing to Sequential.\"\"\""))
        return name

    def _default_code(self, spec: Spec, value) -> str:
        """An arg's default: a spec file's path (`block: resnet_basic_block.yaml`, read by `spec(block, ...)`) is
        that file's class; a torch.nn class name is the class; anything else its literal."""
        if isinstance(value, str) and value.endswith((".yaml", ".yml")) and not spec.file.startswith("<"):
            full = _include_path(spec.file, value)
            if self._readable(full) and os.path.isfile(full):
                return self.file_class(spec, full)
        return _literal_code(value)

    def _readable(self, full: str) -> bool:
        """Whether the eject may read *full*: inside the top spec's folder, with no other hard link (the rule the
        loader applies to includes)."""
        if self.root is None or os.path.commonpath([full, self.root]) != self.root:
            return False
        try:
            return os.stat(full).st_nlink == 1
        except OSError:
            return True  # not there: said when it is read

    def file_class(self, spec: Spec, full: str) -> str:
        """The class of the spec file *full*, included somewhere under *spec* (or loaded with its own defaults
        where these args include it nowhere)."""
        stack = [spec]
        while stack:
            for _, layer in stack.pop().layers:
                if layer.spec is not None:
                    if _real(layer.spec.file) == full:
                        return self.class_for(layer.spec, _load_include(spec.file, full, layer.spec.file))
                    stack.append(layer.spec)
        if not self._readable(full):
            raise CgError(f"export --to python: {os.path.basename(full)!r}, which {spec.name} may include, is outside "
                          "the spec's folder (or has other hard links): not read", spec.loc,
                          hint="keep included specs in the same folder tree as the main spec")
        from ..spec.load import load_spec

        sub = load_spec(full)
        self.avoid_args_of(sub)
        return self.class_for(sub, _load_include(spec.file, full, sub.file))

    def module_source(self, spec: Spec, top: str, file: str, inputs: dict) -> str:
        body = "\n\n\n".join(source for _, source in self.classes)
        shown = ", ".join(f"{n} {list(i.shape)} {str(i.dtype).replace('torch.', '')}" for n, i in inputs.items())
        header = [f'"""{spec.name}, ejected from {os.path.basename(file)} by `cgtool export --to python`: plain '
                  "PyTorch, no cgtool needed.", "",
                  "The weights `cgtool build SPEC --save weights.pt` writes load into it:",
                  f"    model = {top}()",
                  '    model.load_state_dict(torch.load("weights.pt"))']
        if shown:
            header.append(f"Example inputs: {shown}.")
        header.append('"""')
        imports = []
        if re.search(r"\bmath\.", body):
            imports.append("import math")
        if self.uses_ordered_dict:
            imports.append("from collections import OrderedDict")
        if imports:
            imports.append("")
        imports += ["import torch"]
        if re.search(r"\bF\.", body):
            imports.append("import torch.nn.functional as F")
        imports.append("from torch import nn")
        return "\n".join(header + imports) + "\n\n\n" + body + "\n"


def _snake(name: str) -> str:
    """``Layer1`` → ``layer1``, ``FeatureBlocks`` → ``feature_blocks``."""
    return re.sub(r"(?<=[a-z0-9])([A-Z])", r"_\1", _class_name(name)).lower()


def _words(raw) -> set[str]:
    """Every name-like word in the strings of a YAML subtree (values and forward text): the args it may read."""
    if isinstance(raw, str):
        return set(re.findall(r"[A-Za-z_]\w*", raw))
    if isinstance(raw, dict):
        return set().union(*(_words(v) for v in raw.values())) if raw else set()
    if isinstance(raw, list):
        return set().union(*(_words(v) for v in raw)) if raw else set()
    return set()


def _default(raw, env: dict, spec: Spec):
    """A spec arg's default value from its YAML, as :mod:`cgtool.spec.load` reads it."""
    if isinstance(raw, list):
        return [_default(r, env, spec) for r in raw]
    if isinstance(raw, str):
        from ..spec.values import string_value

        return string_value(raw, env, spec.loc, what="arg")
    return raw


class _ClassWriter:
    """One class: ``__init__`` (args, layers, constants, parameters, ties) and ``forward``."""

    def __init__(self, ej: _Eject, spec: Spec, raw, name: str, args: list[_Arg]):
        self.ej, self.spec, self.raw, self.name, self.args = ej, spec, raw, name, args

    def source(self) -> str:
        spec = self.spec
        base = {"sequential": "nn.Sequential", "modulelist": "nn.ModuleList", "moduledict": "nn.ModuleDict",
                "module": "nn.Module"}[spec.kind]
        where = os.path.basename(spec.loc.file or spec.file) + (f":{spec.loc.line}" if spec.loc.line else "")
        doc = f"{spec.description.strip()} ({where})" if spec.description else f"The {spec.kind} spec {spec.name} of {where}."
        lines = [f"class {self.name}({base}):", f'    """{_doc(doc)}"""', ""]
        params = ", ".join(["self"] + [f"{a.name}={a.default}" for a in self.args])
        lines.append(f"    def __init__({params}):")
        body = self._init_body()
        body[0:0] = [f"{a.name} = {a.derived} if {a.name} is None else {a.name}" for a in self.args if a.derived]
        lines += [_indent(b, 8) for b in body]
        if spec.forward is not None:
            lines.append("")
            lines += _indent(_ForwardWriter(spec).source(), 4).splitlines()
        return "\n".join(lines)

    # -- __init__
    def container_lines(self) -> list[str]:
        """The lines of a sequential's ``__init__`` (one ``super().__init__(...)`` unless it needs locals)."""
        if self.spec.constants or self.spec.parameters or self.spec.ties:
            return []
        return self._init_body()

    def _init_body(self) -> list[str]:
        spec = self.spec
        section = {"sequential": "layers", "modulelist": "layers"}.get(spec.kind, "modules")
        raw_section = self.raw.get(section) if isinstance(self.raw, dict) else None
        body: list[str] = []
        if isinstance(raw_section, str) and spec.kind in ("sequential", "modulelist"):
            body += self._generated(raw_section)
            entries = []
        else:
            entries = self._entries(raw_section, section)
        if spec.kind == "module":
            body.append("super().__init__()")
            for key, layer, raw_entry, count in entries:
                if layer.ref is not None:
                    body.append(f"self.{key} = {_path_code('self', layer.ref)}")
                else:
                    body.append(f"self.{key} = {self._layer_code(layer, raw_entry, count, spread=False)}")
        elif entries:
            body += self._container(entries)
        for t in spec.constants.values():
            raw_t = _get(_get(self.raw, "constants"), t.name)
            body.append(f"self.register_buffer({t.name!r}, {_tensor_code(t, raw_t, self.spec.args)}"
                        + (", persistent=False)" if not t.persistent else ")"))
        for t in spec.parameters.values():
            raw_t = _get(_get(self.raw, "parameters"), t.name)
            body.append(f"self.{t.name} = nn.Parameter({_tensor_code(t, raw_t, self.spec.args)})")
        for target, source, _ in spec.ties:
            body.append(f"{_path_code('self', target)} = {_path_code('self', source)}")
        if spec.forward is not None:
            read = {n.id for n in ast.walk(spec.forward.tree) if isinstance(n, ast.Name)}
            hidden = _part_names(spec)
            for k in spec.args:
                if k in read and k not in hidden and k not in spec.forward.assigned and k not in spec.input_names:
                    body.append(f"self.{k} = {_safe(k)}")
        return body

    def _entries(self, raw_section, section) -> list[tuple]:
        """(name, layer, raw entry, repeat code or None) per entry as written: a list entry with `repeat: N`
        is one entry here (the Spec holds its N copies); an entry `X if cond else None` that these args left out
        has layer None (it is written all the same: other args keep it)."""
        if isinstance(raw_section, str):
            raise CgError(f"export --to python: {self.spec.name}'s {section} are generated by a program, which the "
                          "eject writes for sequential and modulelist specs only", self.spec.loc,
                          hint="name the modules one by one, or save the weights (cgtool build --save) and keep the spec")
        built: dict[str, tuple] = {}
        for name, layer in self.spec.layers:
            built.setdefault(layer.where, (name, layer))
        if isinstance(raw_section, dict):
            written = [(f"{section}.{k}", k, r) for k, r in raw_section.items()]
        else:
            written = [(f"{section}[{i}]", None, r) for i, r in enumerate(raw_section or [])]
        out = []
        for where, key, raw_entry in written:
            name, layer = built.get(where, (key, None))
            count = None
            if layer is not None and isinstance(raw_entry, dict) and "repeat" in raw_entry:
                n = layer.repeat if layer.repeat is not None else \
                    sum(1 for _, lay in self.spec.layers if lay.where == layer.where)
                raw_count = raw_entry["repeat"]
                raw_count = raw_count.get("count") if isinstance(raw_count, dict) else raw_count
                count = _value_code(raw_count, n, self.spec.args)
            out.append((name, layer, raw_entry, count))
        return out

    def _container(self, entries) -> list[str]:
        """``super().__init__(...)`` of a Sequential, ModuleList or ModuleDict; layers a ref names are built
        first, as locals, so that the ref is the same module. A ref names a layer, or a list position, counting
        each copy a `repeat: N` entry makes (as the loader does)."""
        spec = self.spec
        body: list[str] = []
        spans = []  # (first position, copies, spread) of each entry
        position = 0
        for name, layer, _, count in entries:
            spread = name is None and count is not None  # list `repeat: N`: N entries in a row
            copies = sum(1 for _, lay in spec.layers if lay.where == layer.where) if spread else 1
            spans.append((position, copies, spread))
            position += copies

        def target(ref: str) -> tuple[int, int | None]:
            """(entry index, copy within a repeated entry or None) that the head of *ref* names."""
            head = ref.split(".")[0]
            for i, (name, _, _, _) in enumerate(entries):
                first, copies, spread = spans[i]
                if name == head or name is None and head.isdigit() and first <= int(head) < first + copies:
                    return i, (int(head) - first) if spread else None
            raise CgError(f"export --to python: ref {ref!r} names no layer", spec.loc)

        optional = [i for i, (_, lay, raw_entry, _) in enumerate(entries) if lay is None or _may_be_none(raw_entry)]
        refs = [lay.ref for _, lay, _, _ in entries if lay is not None and lay.ref is not None]
        if optional and refs:
            raise CgError(f"export --to python: {spec.name} has a ref ({refs[0]}) beside an entry that may be None, "
                          "which the eject does not write", spec.loc,
                          hint="name the layers (a mapping), or save the weights (cgtool build --save) and keep the spec")
        targets = {target(lay.ref)[0] for _, lay, _, _ in entries if lay is not None and lay.ref is not None}
        local: dict[int, str] = {}  # entry index -> its local
        items = []  # (key or None, code, spread)
        args = {a.name for a in self.args}
        for i, (name, layer, raw_entry, count) in enumerate(entries):
            spread = spans[i][2]
            if layer is None:  # `X if cond else None` that these args left out
                code = self._expr(raw_entry)
            elif layer.ref is not None:
                at, copy = target(layer.ref)
                rest = layer.ref.partition(".")[2]
                code = local[at] + (f"[{copy}]" if copy is not None else "") + (_path_code("", rest) if rest else "")
            else:
                code = self._layer_code(layer, raw_entry, count, spread=spread)
            if i in targets:
                var = _safe(name if name is not None else f"layer{spans[i][0]}")
                while var in args:
                    var += "_"
                body.append(f"{var} = {code}")
                local[i] = code = var
            items.append((name, code, spread))
        named = any(n is not None for n, _, _ in items)
        if optional:  # None entries are left out, and the next takes the index, as `append` under an `if`
            return body + self._without_none(items, named)
        if spec.kind == "moduledict":
            inner = "".join(f"    {n!r}: {_nested(c)},\n" for n, c, _ in items)
            body.append("super().__init__({\n" + inner + "})")
        elif named:
            self.ej.uses_ordered_dict = True
            inner = "".join(f"    ({n!r}, {_nested(c)}),\n" for n, c, _ in items)
            body.append("super().__init__(OrderedDict([\n" + inner + "]))")
        else:
            inner = "".join(f"    {'*' if s else ''}{_nested(c)},\n" for _, c, s in items)
            if spec.kind == "modulelist":
                body.append("super().__init__([\n" + inner + "])")
            else:
                body.append("super().__init__(\n" + inner + ")")
        return body

    def _inline_sequential(self, sub: Spec, body: dict) -> str | None:
        """An inline sequential spec without args of its own as an expression: ``nn.Sequential(...)``, or the
        named empty subclass; its layers generated by a function of the args it reads when they are a program
        (as torchvision's make_layers(cfg)). None where it needs a class of its own."""
        if isinstance(body.get("layers"), str):
            args = self.ej._args(sub, body, top=False, inherited=True)
            lines = _ClassWriter(self.ej, sub, body, sub.name, args)._generated(body["layers"])
            lines[-1] = "return " + lines[-1][len("super().__init__(*"):-1]
            cls = self.ej.named_sequential(sub.name) if sub.named else "nn.Sequential"
            if cls is None:
                return None
            fn = self.ej.function(f"make_{_snake(sub.name)}", args, lines, sub)
            return f"{cls}(*{fn}({', '.join(f'{a.name}={a.name}' for a in args)}))"
        lines = _ClassWriter(self.ej, sub, body, sub.name, []).container_lines()
        if len(lines) != 1 or not lines[0].startswith("super().__init__("):
            return None
        cls = self.ej.named_sequential(sub.name) if sub.named else "nn.Sequential"
        return None if cls is None else f"{cls}(" + lines[0][len("super().__init__("):]

    def _without_none(self, items, named: bool) -> list[str]:
        """One ``super().__init__(...)`` over the entries as written, the None ones left out."""
        if self.spec.kind == "moduledict" or named:
            pairs = "".join(f"    ({n!r}, {_nested(c)}),\n" for n, c, _ in items)
            keep = "(name, layer) for name, layer in [\n" + pairs + "] if layer is not None"
            if self.spec.kind == "moduledict":
                return ["super().__init__({" + keep.replace("(name, layer) for", "name: layer for", 1) + "})"]
            self.ej.uses_ordered_dict = True
            return [f"super().__init__(OrderedDict({keep}))"]
        inner = "".join(f"    {'*' if spread else ''}{_nested(c)},\n" for _, c, spread in items)
        kept = "[layer for layer in [\n" + inner + "] if layer is not None]"
        return [f"super().__init__({kept})" if self.spec.kind == "modulelist" else f"super().__init__(*{kept})"]

    def _expr(self, text: str) -> str:
        """A layer written as a call (`Conv2d(c, c, 3) if stride != 1 else None`, `spec('block.yaml', d=d)`)."""
        return _expr_code(" ".join(str(text).split()), constructors=True, env=set(self.spec.args),
                          spec_class=self._spec_class)

    def _spec_class(self, path: str) -> str:
        """The class of the spec file that `spec('block.yaml', ...)` names (relative to this spec's file)."""
        return self.ej.file_class(self.spec, _include_path(self.spec.file, path))

    def _generated(self, text: str) -> list[str]:
        """A layer list written as a program over the args, as the reference code builds it: the same program,
        with constructors as ``nn.NAME`` and ``spec('block.yaml', ...)`` as the block's class."""
        text = plain_nn(text)
        try:
            tree = ast.parse(text.strip(), mode="eval")
            statements = False
        except SyntaxError:
            tree = ast.parse(text)
            statements = True
        assigned = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store)}
        env = set(self.spec.args) | assigned | {"layers"}
        tree = _ValueNames(True, env, self._spec_class).visit(tree)
        code = ast.unparse(tree).splitlines()
        starts = statements and isinstance(tree.body[0], ast.Assign) and \
            [ast.unparse(t) for t in tree.body[0].targets] == ["layers"]  # `layers = [...]` first: no empty list
        lines = (code if starts else ["layers = []", *code]) if statements else [f"layers = {code[0]}"] + code[1:]
        kept = "[layer for layer in layers if layer is not None]" if _may_be_none(text) else "layers"
        if self.spec.kind == "modulelist":
            return lines + [f"super().__init__({kept})"]
        return lines + [f"super().__init__(*{kept})"]

    def _layer_code(self, layer: Layer, raw_entry, count: str | None, *, spread: bool) -> str:
        one = self._one_layer(layer, raw_entry)
        if count is None:
            return one
        if layer.repeat_names is not None:  # repeat: {names: "encoder_layer_{i}"}
            self.ej.uses_ordered_dict = True
            return f"nn.Sequential(OrderedDict((f{layer.repeat_names!r}, {one}) for i in range({count})))"
        copies = f"[{one} for _ in range({count})]"
        if layer.repeat_kind == "modulelist":
            return f"nn.ModuleList({copies})"
        return copies if spread else f"nn.Sequential(*{copies})"

    def _one_layer(self, layer: Layer, raw_entry) -> str:
        if layer.call is not None or layer.absent:
            if isinstance(raw_entry, str):  # `Conv2d(...) if cond else None` as written
                return self._expr(raw_entry)
            body = {k: v for k, v in raw_entry.items() if k not in ("type", "repeat")}
            kwargs = ", ".join(f"{k}={_value_code(v, layer.call.kwargs.get(k), self.spec.args)}"
                               for k, v in body.items())
            return f"nn.{layer.call.type}({kwargs})"
        sub = layer.spec
        if isinstance(raw_entry, str):  # spec('block.yaml', d=64), as written
            return self._expr(raw_entry)
        body = {k: v for k, v in raw_entry.items() if k != "repeat"}
        if "spec" in body:  # a spec file: its class takes the args given here
            sub_raw = _load_include(self.spec.file, body["spec"], sub.file)
            cls = self.ej.class_for(sub, sub_raw)
            given = body.get("args") or {}
            kwargs = ", ".join(f"{_safe(k)}={_value_code(v, sub.args.get(k), self.spec.args)}"
                               for k, v in given.items())
            return f"{cls}({kwargs})"
        if "args" in body:  # an inline spec with args of its own
            return f"{self.ej.class_for(sub, body)}()"
        if sub.kind == "sequential":  # as the build makes it: an nn.Sequential, or a subclass that adds nothing
            code = self._inline_sequential(sub, body)
            if code is not None:
                return code
        cls = self.ej.class_for(sub, body, inherited=True)  # an inline spec sees its parent's args
        read = _words(body)
        return f"{cls}({', '.join(f'{_safe(k)}={_safe(k)}' for k in sub.args if k in read)})"


def _nested(code: str) -> str:
    """An entry's code inside a container's call: its own lines one level further in."""
    return code.replace("\n", "\n    ")


def _get(mapping, key):
    return mapping.get(key) if isinstance(mapping, dict) else None


def _raw_entry(raw_section, where: str, section: str):
    """The YAML entry at spec path *where* (``layers[2]``, ``modules.linear``)."""
    rest = where[len(section):]
    if rest.startswith("["):
        return raw_section[int(rest[1:rest.index("]")])]
    return raw_section[rest[1:]]


def _real(file: str) -> str:
    return file if not file or file.startswith("<") else os.path.realpath(file)


def _include_path(parent_file: str, path: str) -> str:
    """The file an include names, found as the loader finds it (relative to the including file)."""
    base = os.path.dirname(os.path.realpath(parent_file)) if not parent_file.startswith("<") else os.getcwd()
    return os.path.realpath(os.path.join(base, path))


def _may_be_none(raw) -> bool:
    """Whether an entry written as text (`X if cond else None`) or a program may give None."""
    if not isinstance(raw, str):
        return False
    try:
        tree = ast.parse(" ".join(raw.split()) if "\n" not in raw.strip() else raw, mode="exec")
    except SyntaxError:
        return False
    return any(isinstance(n, ast.Constant) and n.value is None for n in ast.walk(tree))


def _load_include(parent_file: str, path: str, display: str):
    """The YAML of an included spec file, found as the loader found it (relative to the including file)."""
    full = _include_path(parent_file, path)
    try:
        with open(full, encoding="utf-8") as f:
            return yamlpos.load(f.read(), display)
    except OSError as e:
        raise CgError(f"cannot read included spec {path!r}: {e.strerror}", parent_file) from None


def _part_names(spec: Spec) -> set[str]:
    names = {n for n, _ in spec.layers if n is not None} | set(spec.constants) | set(spec.parameters)
    container = {"modulelist": "layers", "moduledict": "modules"}.get(spec.kind)
    return names | ({container} if container else set())


def _tensor_code(t: TensorSpec, raw, env) -> str:
    """A constant's or parameter's initial value, as the builder makes it (the saved state_dict replaces it)."""
    dtype = f", dtype={_DTYPE_NAMES.get(t.dtype, 'torch.float32')}" if t.dtype is not None else ""
    if not dtype and t.init in ("full", "arange"):  # float32 as the builder makes them, whatever the fill value
        dtype = ", dtype=torch.float32"
    shape = _value_code(raw.get("shape"), list(t.shape), env) if isinstance(raw, dict) and "shape" in raw \
        else repr(list(t.shape))
    if t.init is None:
        code = f"torch.tensor({_value_code(raw, t.value, env) if isinstance(raw, list) else repr(t.value)}" \
               f"{dtype or ', dtype=torch.float32'})"
    elif t.init == "eye":
        code = f"torch.eye(*{shape}{dtype})"
    elif t.init == "full":
        code = f"torch.full({shape}, {_value_code(_get(raw, 'value'), t.value, env)}{dtype})"
    elif t.init == "arange":
        code = f"torch.arange(math.prod({shape}){dtype}).reshape({shape})"
    else:
        code = f"torch.{t.init}({shape}{dtype})"
    if t.scale is not None:
        code += f" * {_value_code(_get(raw, 'scale'), t.scale, env)}"
    return code


def _doc(text: str) -> str:
    return " ".join(str(text).split()).replace('"""', "'''").replace("\\", "\\\\")


def _indent(text: str, n: int) -> str:
    pad = " " * n
    return "\n".join(pad + line if line else line for line in text.splitlines())


# --------------------------------------------------------------------------- forward


class _ForwardWriter(ast.NodeTransformer):
    """The checked forward as plain PyTorch: spec names read through ``self``, functions by their
    PyTorch names, ``a += b`` rebinding ``a`` as the compiled code does."""

    def __init__(self, spec: Spec):
        prog = spec.forward
        self.spec = spec
        self.locals = set(spec.input_names) | set(prog.assigned)
        self.parts = {n for n, _ in spec.layers if n is not None} | set(spec.constants) | set(spec.parameters)
        self.container = {"modulelist": "layers", "moduledict": "modules"}.get(spec.kind)

    def source(self) -> str:
        import copy

        tree = self.visit(copy.deepcopy(self.spec.forward.tree))
        params = ", ".join(["self"] + [_safe(n) for n in self.spec.input_names])
        fn = ast.parse(f"def forward({params}):\n    pass").body[0]
        fn.body = tree.body
        ast.fix_missing_locations(fn)
        return _with_comments(ast.unparse(fn), self.spec.forward.source.text)

    def _name(self, node: ast.Name) -> ast.expr:
        name = node.id
        if name.startswith("_cg_fn_"):
            return _code(function_spelling(name[len("_cg_fn_"):]))
        if name.startswith("_cg_const_"):  # math.pi where the spec has a pi of its own
            return _code(f"math.{name[len('_cg_const_'):]}")
        if name == "_cg_training":  # `training`, `self.training`
            return _code("self.training")
        if name == SELF_MODULE:  # a submodule named `self`
            return _code("self.self")
        if name in self.locals or name in ("True", "False", "None"):
            return ast.Name(_safe(name), node.ctx)
        if name in self.parts:
            return ast.Attribute(ast.Name("self", ast.Load()), name, ast.Load())
        if name == self.container:
            return ast.Name("self", ast.Load())
        if name in self.spec.args:
            return ast.Attribute(ast.Name("self", ast.Load()), name, ast.Load())
        if name in FUNCTIONS:
            return _code(function_spelling(name))
        if name in CONSTANT_NAMES:
            return _code(f"math.{name}")
        return ast.Name(_safe(name), node.ctx)

    def visit_Name(self, node):
        return ast.copy_location(self._name(node), node)

    def _is_function(self, func) -> str | None:
        """The allow-listed function a call's target names, if it names one (and nothing hides it)."""
        if not isinstance(func, ast.Name):
            return None
        name = func.id
        if name.startswith("_cg_fn_"):
            return name[len("_cg_fn_"):]
        if name in self.locals or name in self.parts or name == self.container or name in self.spec.args:
            return None
        return name if name in FUNCTIONS else None

    def visit_Call(self, node):
        fn = self._is_function(node.func)
        written_math = getattr(node.func, "cg_math", False)  # math.sqrt(head_size), as the reference wrote it
        node.args = [self.visit(a) for a in node.args]
        node.keywords = [self.visit(k) for k in node.keywords]
        if fn is None:
            node.func = self.visit(node.func)
            return node
        if fn == "norm" and len(node.args) == 1 and not node.keywords:
            node.func = _code("torch.linalg.vector_norm")
        elif fn == "dropout":
            node.func = _code("F.dropout")
            if not any(k.arg == "training" for k in node.keywords):
                node.keywords.append(ast.keyword("training", _code("self.training")))
        elif fn in _TENSOR_OR_PYTHON and node.args and _python_value(node.args[0]):
            node.func = ast.Name(fn, ast.Load())
        elif fn in NUMBER_FUNCTIONS and len(node.args) == (2 if fn == "pow" else 1) and not node.keywords \
                and all(self._number(a) or written_math and not self._tensor(a) for a in node.args):
            node.func = _code(f"math.{fn}")  # sqrt(2 / pi), math.sqrt(4): math's, as the language computes it
        else:
            node.func = _code(function_spelling(fn))
        return node

    def _number(self, node: ast.expr) -> bool:
        numeric = frozenset(n for n, v in self.spec.args.items()
                            if isinstance(v, (int, float)) and not isinstance(v, bool) and n not in self.locals
                            and n not in self.parts)
        return _number(node, numeric)

    def _tensor(self, node: ast.expr) -> bool:
        """Whether an (already ejected) expression plainly reads a tensor: an input, a parameter, a constant."""
        inputs = set(map(_safe, self.spec.input_names))
        tensors = set(self.spec.constants) | set(self.spec.parameters)
        return any(isinstance(n, ast.Name) and n.id in inputs
                   or isinstance(n, ast.Attribute) and isinstance(n.value, ast.Name) and n.value.id == "self"
                   and n.attr in tensors for n in ast.walk(node))

    def visit_AugAssign(self, node):
        self.generic_visit(node)
        if isinstance(node.target, ast.Name):  # a new value, as in the compiled forward: no in-place update
            load = ast.Name(node.target.id, ast.Load())
            return ast.copy_location(ast.Assign([node.target], ast.BinOp(load, node.op, node.value)), node)
        return node


def _python_value(node: ast.expr) -> bool:
    """Whether an argument is plainly a Python number or sequence (``max(1, T)``, ``sum([a, b])``)."""
    if isinstance(node, (ast.List, ast.Tuple, ast.ListComp, ast.Constant)):
        return True
    return isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in _PYTHON


_INT_METHODS = frozenset({"size", "dim", "numel"})  # x.size(-1), x.dim(), x.numel(): Python ints


def _number(node: ast.expr, numeric_args: frozenset = frozenset()) -> bool:
    """Whether an (already ejected) expression is plainly a Python number: literals, math.pi/e/inf, arithmetic."""
    if isinstance(node, (ast.Constant)):
        return isinstance(node.value, (int, float)) and not isinstance(node.value, bool)
    if isinstance(node, ast.BinOp):
        return _number(node.left, numeric_args) and _number(node.right, numeric_args)
    if isinstance(node, ast.UnaryOp):
        return _number(node.operand, numeric_args)
    if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
        # math.pi, and a number arg of the spec (self.head_size)
        return node.value.id == "math" or node.value.id == "self" and node.attr in numeric_args
    if isinstance(node, ast.Attribute) and node.attr == "ndim":
        return True
    if isinstance(node, ast.Subscript) and isinstance(node.value, ast.Attribute) and node.value.attr == "shape" \
            and not isinstance(node.slice, ast.Slice):
        return True  # x.shape[-1]
    if isinstance(node, ast.Call):
        f = node.func
        if isinstance(f, ast.Attribute) and f.attr in _INT_METHODS and not (f.attr == "size" and not node.args):
            return True
        if isinstance(f, ast.Attribute) and isinstance(f.value, ast.Name) and f.value.id == "math":
            return True  # math.sqrt(...) gives a float
        if isinstance(f, ast.Name) and f.id in ("len", "int", "float"):
            return True
    return False


def _code(text: str) -> ast.expr:
    return ast.parse(text, mode="eval").body


def _with_comments(code: str, original: str) -> str:
    """The forward's own end-of-line comments, on the generated line that reads like the line they ended
    (matched in order, so two equal statements keep their own comments)."""
    written = []  # (statement, comment or None)
    for line in original.splitlines():
        head, sep, comment = line.partition("#")
        if head.strip():
            quoted = "'" in line or '"' in line  # a # inside a string is no comment
            written.append((head, comment.strip() if sep and not quoted else None))
    if not any(c for _, c in written):
        return code
    out, at = [], 0
    for line in code.splitlines():
        for i in range(at, len(written)):
            if _same_statement(line, written[i][0]):
                at = i + 1
                if written[i][1]:
                    line = f"{line}  # {written[i][1]}"
                break
        out.append(line)
    return "\n".join(out)


def _same_statement(generated: str, written: str) -> bool:
    def plain(s: str) -> str:
        s = s.replace("torch.linalg.vector_norm(", "norm(")
        return re.sub(r"self\.|torch\.nn\.functional\.|nn\.functional\.|torch\.|F\.|\s", "", s)

    return plain(generated) == plain(written)
