"""The library: what each command does, as one function that returns plain data.

    >>> import cgtool
    >>> cgtool.params("configs/mlp.yaml").total                 # = `cgtool params ... --json` .total
    >>> cgtool.summary("configs/gpt2_small.yaml", depth=1).total_flops
    >>> cgtool.run("configs/mlp.yaml", inputs={"x": (4, 784)}, output="out.npy").outputs[0].shape
    >>> cgtool.grad("y = (x1 + w) * (x2 + w)", at={"x1": 1, "x2": 2, "w": 3}, wrt="w").gradients[0].autograd
    >>> cgtool.describe("configs/mlp.yaml", save="weights.pt").total_params   # what `cgtool build` shows
    >>> [l.signature for l in cgtool.layers("linear")]
    >>> cgtool.validate(["configs/mlp.yaml", "configs/llama7b.yaml"]).ok

A *spec* is a path (``str`` or ``os.PathLike``; ``"-"`` reads stdin, as on the command line, whose
includes are refused unless *base* names the folder they are in),
YAML text (a string with a newline, or any string when ``file=`` names it), or a loaded
:class:`cgtool.spec.Spec`. Options mirror the command line: ``args`` (a mapping, or ``NAME=VALUE``
strings), ``inputs`` (``NAME=SHAPE|FILE`` strings, or a mapping name → shape or file), ``device``,
``dtype``, ``seed``, ``max_memory`` (bytes, or text such as ``"8GB"``), ``max_iterations``.
Every mistake is raised as :class:`cgtool.CgError`; the CLI renders these results and nothing more.
"""
from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass, fields, replace as _replace

from .build.catalog import LayerType, catalogue
from .build.inputs import example_inputs
from .build.memory import parse_bytes
from .build.model import Built, build_model
from .errors import CgError, closest
from .inspect.params import ParamTable, param_table
from .inspect.run import RunResult, run_model
from .inspect.structure import Structure
from .inspect.structure import module_tree
from .inspect.summary import Summary, summarize
from .inspect.tensorfiles import save_state_dict
from .lang import DEFAULT_LIMITS, Limits
from .spec import Spec
from .spec.values import ArgText

__all__ = ["describe", "run", "params", "summary", "grad", "capture", "paths", "graph", "export", "bench", "layers", "validate", "BuildReport", "ParamsReport",
           "SummaryReport", "RunResult", "LayerType", "SpecCheck", "Validation", "read_spec", "parse_args"]


# --------------------------------------------------------------------------- results


@dataclass
class BuildReport(Structure):
    """What ``cgtool build`` shows: the module tree, constants, free parameters, totals, the shape check."""

    saved: str | None = None  # the state_dict file written (``save=``)


@dataclass(frozen=True)
class ParamsReport(ParamTable):
    """The parameter table of ``cgtool params``."""

    model: str = ""  # the spec's name (else the module's class): the table's title


@dataclass(frozen=True)
class SummaryReport(Summary):
    """The per-layer table of ``cgtool summary``."""

    model: str = ""  # the spec's name (else the module's class): the table's title


@dataclass(frozen=True)
class SpecCheck:
    """One spec checked by :func:`validate`."""

    spec: str  # as given
    ok: bool
    check: str | None = None  # the dry run on meta tensors: passed | skipped
    params: int | None = None
    error: str | None = None  # `PLACE: what is wrong` when not ok
    hint: str | None = None


@dataclass(frozen=True)
class Validation:
    specs: list[SpecCheck]
    ok: bool  # every spec is valid


# --------------------------------------------------------------------------- the commands


def describe(spec, *, file: str | None = None, args=None, inputs=None, device="cpu", dtype=None, seed: int = 0,
             save=None, max_memory=None, max_iterations: int | None = None, base=None) -> BuildReport:
    """``cgtool build``: compile, dry-run the shapes, describe the module tree and totals.

    *save*: also write the state_dict to this ``.pt``/``.pth`` file, atomically (refused on meta).
    """
    built = _build(spec, base=base, file=file, args=args, inputs=inputs, device=device, dtype=dtype, seed=seed,
                   max_memory=max_memory, max_iterations=max_iterations)
    saved = save_state_dict(built.module, os.fspath(save), device=built.device) if save else None
    return BuildReport(**_fields(module_tree(built)), saved=saved)


def params(spec, *, file: str | None = None, args=None, device="cpu", dtype=None, seed: int = 0,
           max_memory=None, base=None) -> ParamsReport:
    """``cgtool params``: one row per distinct parameter tensor (shared names listed), buffers apart, totals.

    No forward runs: shapes and dtypes suffice, so ``device="meta"`` tabulates any size.
    """
    built = _build(spec, base=base, file=file, args=args, device=device, dtype=dtype, seed=seed, check=False,
                   max_memory=max_memory, values=False)  # counted on meta: no storage, no initial values
    return ParamsReport(**_fields(param_table(built.module, device=str(built.device))), model=_title(built))


def summary(spec, *, file: str | None = None, args=None, inputs=None, device="cpu", dtype=None, seed: int = 0,
            depth: int | None = None, max_memory=None, max_iterations: int | None = None, base=None) -> SummaryReport:
    """``cgtool summary``: per-layer input/output shapes, parameters, calls and FLOPs of one forward pass."""
    from .build.dryrun import DataDependent
    from .build.meta import meta_call

    options = dict(base=base, file=file, args=args, inputs=inputs, device=device, dtype=dtype, seed=seed, max_memory=max_memory,
                   max_iterations=max_iterations)
    # Shapes, calls and FLOPs need no values: traced on meta (no storage, no initialisation) unless the
    # forward's control flow reads values, or the user asked for meta anyway. FLOP counting runs torch's
    # Python decompositions, as meta tensors do: meta_call spares them the torch.compile import.
    built = _build(spec, **options, values=False, check=False)  # summarize's run is the shape check
    try:
        tensors = example_inputs(built, device="meta") if (built.inputs or built.given) else {}
        result = meta_call(summarize, built.module, tensors, depth=depth, call=built.forward)
    except DataDependent:
        if built.device.type == "meta":
            raise
        built = _build(spec, **options)
        result = meta_call(summarize, built.module, _tensors(built), depth=depth, call=built.forward)
    result = _replace(result, device=str(built.device))
    return SummaryReport(**_fields(result), model=_title(built))


def run(spec, *, file: str | None = None, args=None, inputs=None, device="cpu", dtype=None, seed: int = 0,
        weights=None, train: bool = False, output=None, max_memory=None,
        max_iterations: int | None = None, base=None) -> RunResult:
    """``cgtool run``: one forward pass on the spec's inputs (seeded random, shapes or tensor files).

    *weights*: a state_dict file (``cgtool build --save``) loaded first. Evaluation mode unless *train*;
    no autograd graph is kept. *output*: save the outputs there (``.pt``/``.npy``), named in ``saved``.
    """
    built = _build(spec, base=base, file=file, args=args, inputs=inputs, device=device, dtype=dtype, seed=seed,
                   max_memory=max_memory, max_iterations=max_iterations)
    return run_model(built, _tensors(built), weights=weights, train=train, output=output)


def grad(expr: str, *, at=None, wrt=None, root: str | None = None, max_paths: int = 20,
         max_iterations: int | None = None, file: str = "<expr>"):
    """``cgtool grad``: d(root)/d(wrt) of an expression as a sum over paths
    (:class:`cgtool.graph.gradients.Explanation`).

    *at*: leaf values, as ``NAME=VALUE`` strings (a number or a JSON list) or a mapping name → number,
    nested list, tensor or such a string; none at all: the symbolic answer only. *wrt*: a name or a
    list of names (default: every leaf). *expr* ``"-"`` reads stdin.
    """
    from .graph.expression import parse_assignments, parse_value
    from .graph.gradients import explain

    if expr == "-":
        expr, file = sys.stdin.read(), "<stdin>"
    if isinstance(at, Mapping):
        values = {str(k): parse_value(v, f"--at {k}") if isinstance(v, str) else v for k, v in at.items()}
    else:
        values = parse_assignments([at] if isinstance(at, str) else at)
    limits = DEFAULT_LIMITS if max_iterations is None else Limits(max_loop_iterations=max_iterations)
    return explain(expr, values, wrt=[wrt] if isinstance(wrt, str) else wrt, root=root, max_paths=max_paths,
                   file=file, limits=limits)


def capture(spec, *, file: str | None = None, args=None, inputs=None, dtype=None, seed: int = 0,
            train: bool = False, max_memory=None, max_iterations: int | None = None, base=None):
    """The labelled computational graph of one forward pass (:class:`cgtool.graph.capture.Capture`).

    Read from torch's own autograd graph: leaves (inputs, parameters by qualified name, constants),
    operations and module calls (``linear#2``), labelled with the spec's variable names
    (``x#2``; ``blocks.0/out`` inside a nested spec) or source text, with shapes and spec lines.
    ``.graph`` is the :class:`cgtool.graph.model.Graph`, ``.names`` every name a user may type,
    ``.returned`` the output. Runs on the CPU, in evaluation mode unless *train*.
    """
    from .graph.capture import capture_model

    built = _build(spec, base=base, file=file, args=args, inputs=inputs, dtype=dtype, seed=seed, max_memory=max_memory,
                   max_iterations=max_iterations)
    limits = Limits(max_loop_iterations=max_iterations) if max_iterations else None
    return capture_model(built, _tensors(built), limits=limits, train=train)


def paths(spec, wrt: str | None = None, *, file: str | None = None, args=None, inputs=None, dtype=None,
          seed: int = 0, loss: str = "sum", root: str | None = None, level: str = "module",
          max_paths: int | None = None, all: bool = False, by_length: bool = False, depth: int | None = None,
          count: str | None = None, sample: int = 0, max_memory=None, max_iterations: int | None = None,
          progress=None, base=None):
    """``cgtool paths``: the gradient paths of a model's parameter (or constant, or input) *wrt*, through its
    autograd graph.

    The output is reduced with *loss* (sum, mean, norm) when it is not a scalar; *root* picks another value.
    Returns :class:`~cgtool.graph.model_paths.ParameterPaths`: the exact path count, the top *max_paths*
    (default 10) paths by contribution norm, the gradient's norm and whether the contributions add up to it.
    With *all*: :class:`~cgtool.graph.model_paths.AllParameters`, one row per parameter (reached or not, and
    why). *by_length*: the path-length spectrum, where a path's length is the number of module calls on it at
    *depth* (default 1; of modules with parameters), or of the modules whose path matches *count*
    (``stages.*.*.branch``); *sample* adds Veit et al.'s estimate from that many sampled paths of each length
    (drawn with *seed*). *depth*, *count* and *sample* imply *by_length*. *progress*, if given, is called with
    the name of each stage and, where known, the fraction done (the CLI shows it on stderr when the
    analysis takes more than a second).
    """
    from .graph.capture import capture_model
    from .graph.model_paths import all_parameters, length_counter, parameter_paths

    if all:
        clash = [opt for opt, given in (("--wrt", wrt), ("--by-length", by_length), ("--depth", depth is not None),
                                        ("--count", count), ("--sample", sample),
                                        ("--max-paths", max_paths is not None)) if given]
        if clash:
            raise CgError(f"--all lists every parameter; {', '.join(clash)} is about one parameter's paths",
                          "--all", hint="use --all alone, or --wrt NAME with " + ", ".join(clash))
    elif not wrt:
        raise CgError("say which parameter: --wrt NAME (or --all for every parameter)", "--wrt")
    if depth is not None and depth < 1:
        raise CgError(f"--depth must be 1 or more, not {depth}", "--depth")
    if count is not None and depth is not None:
        raise CgError("--count and --depth both say what a path's length counts", "--count",
                      hint="use one: --count PATTERN (modules matching it) or --depth N (modules at depth N)")
    report = progress or (lambda stage, fraction=None: None)
    report("building the model")
    try:
        built = _build(spec, base=base, file=file, args=args, inputs=inputs, dtype=dtype, seed=seed, max_memory=max_memory,
                       max_iterations=max_iterations)
    except CgError as e:
        if e.hint and "--device meta" in e.hint:  # paths needs real values: meta is no way out here
            e.hint = "paths runs the model on real values: make it smaller with --arg, or raise the cap with " \
                     "--max-memory / CGTOOL_MAX_MEMORY"
        raise
    names = {}  # every name of every parameter, tied ones included -> the name it is captured under
    seen: dict[int, str] = {}
    for name, p in built.module.named_parameters(remove_duplicate=False):
        names[name] = seen.setdefault(id(p), name)
    counted = None
    if by_length or count is not None or sample or depth is not None:
        counted = _length_counter(built, depth, count, length_counter)
    limits = Limits(max_loop_iterations=max_iterations) if max_iterations else None
    report("capturing the forward pass")
    cap = capture_model(built, _tensors(built), limits=limits)
    report("counting paths")
    if all:
        canonical = [n for n, _ in built.module.named_parameters()]
        tied: dict[str, list[str]] = {}
        for alias, name in names.items():
            if alias != name:
                tied.setdefault(name, []).append(alias)
        return all_parameters(cap, canonical, root=root, loss=loss, level=level, tied=tied)
    return parameter_paths(cap, wrt, root=root, loss=loss, level=level,
                           max_paths=10 if max_paths is None else max_paths, counted=counted, sample=sample,
                           seed=seed, aliases={a: n for a, n in names.items() if a != n}, progress=report)


def _length_counter(built: Built, depth: int | None, pattern: str | None, length_counter):
    """What adds one to a path's length (see :func:`cgtool.graph.model_paths.length_counter`), after checking
    that *pattern* matches some module and that some module with parameters sits at *depth*."""
    modules = [name for name, _ in built.module.named_modules() if name]
    owners = {name for name, m in built.module.named_modules() if name and any(True for _ in m.parameters())}
    if pattern is not None:
        counted = length_counter(pattern=pattern)
        probe = [name for name in modules if counted.matches(name)]
        if not probe:
            near = closest(pattern, modules, n=5) or modules[:6]
            raise CgError(f"{pattern!r} matches no module of the model", f"--count {pattern}",
                          hint="a pattern is a module path with * for one name (stages.*.*.branch); modules: "
                          + ", ".join(near) + (" …" if len(modules) > len(near) else ""))
        return counted
    depth = depth or 1
    depths = sorted({name.count(".") + 1 for name in owners})
    if depth not in depths:
        raise CgError(f"no module with parameters at depth {depth}", f"--depth {depth}",
                      hint="depths with such modules: " + (", ".join(map(str, depths)) or "none (no parameters)"))
    return length_counter(depth=depth, with_parameters=owners)


def graph(spec_or_expr, *, level: str | None = None, highlight: str | None = None, depth: int | None = None,
          expand: bool = False, max_nodes: int | None = None, max_paths: int = 10, page: bool = False,
          at=None, root: str | None = None, args=None, inputs=None, device="cpu", dtype=None, seed: int = 0,
          loss: str = "sum", max_memory=None, max_iterations: int | None = None, base=None):
    """``cgtool graph``: what a picture of the graph shows (:class:`cgtool.graph.view.GraphView`).

    *spec_or_expr* is a spec when it names an existing file, is ``-`` (stdin), a path object or a
    :class:`~cgtool.spec.Spec`; otherwise a ``cgtool grad`` expression (leaf values from *at*, as in
    :func:`grad`). *level*: ``module`` (the default for specs: leaves, module calls, named values, as
    ``cgtool paths``) or ``op`` (the default for expressions: every operation). *highlight*: the paths
    from the root to this name, edges labelled with local derivatives. *depth*: a call of a module at this
    depth (``stem`` is 1) becomes one node, its inside folded; repeated blocks fold into one node ×N unless
    *expand*; more than *max_nodes* nodes (default 400) is refused. *page*: also every leaf's gradient paths (the HTML page).
    The renderers in :mod:`cgtool.render` (``graph_text``, ``graph_dot``, ``graph_mermaid``,
    ``graph_json``, ``graph_html``) draw the result.
    """
    from .graph.view import expression_view, spec_view

    if _is_spec(spec_or_expr):
        limits = Limits(max_loop_iterations=max_iterations) if max_iterations else None
        built = _build(spec_or_expr, base=base, args=args, inputs=inputs, device=device, dtype=dtype, seed=seed,
                       max_memory=max_memory, max_iterations=max_iterations)
        from .graph.capture import capture_model

        try:
            cap = capture_model(built, _tensors(built), limits=limits)
        except CgError as e:
            if getattr(device, "value", device) == "meta" and "meta" in e.message:
                raise CgError(e.message, e.place, hint="this forward reads tensor values (data-dependent control "
                              "flow), which meta tensors do not have: draw it with --device cpu") from None
            raise
        name = getattr(built.spec, "name", None) or type(built.module).__name__
        where = getattr(built.spec, "file", None)
        title = f"{name} ({where})" if where and not where.startswith("<") else name
        return spec_view(cap, built, title=title, level=level or "module", depth=depth, expand=expand,
                         highlight=highlight, max_paths=max_paths, max_nodes=max_nodes, all_paths=page, loss=loss)
    text, file = spec_or_expr, "<expr>"
    if inputs or args:
        raise CgError("--input and --arg are for specs; an expression takes leaf values with --at",
                      "--input" if inputs else "--arg", hint=f"no file named {spec_or_expr!r} exists")
    from .graph.expression import parse_assignments, parse_value

    if isinstance(at, Mapping):
        values = {str(k): parse_value(v, f"--at {k}") if isinstance(v, str) else v for k, v in at.items()}
    else:
        values = parse_assignments([at] if isinstance(at, str) else at)
    limits = DEFAULT_LIMITS if max_iterations is None else Limits(max_loop_iterations=max_iterations)
    return expression_view(text, values, level=level or "op", highlight=highlight, root=root,
                           max_paths=max_paths, max_nodes=max_nodes, all_paths=page, file=file, limits=limits)


def export(spec, *, to: str = "python", output=None, file: str | None = None, args=None, inputs=None, dtype=None,
           seed: int = 0, max_memory=None, max_iterations: int | None = None, base=None):
    """``cgtool export``: the spec as plain PyTorch source (*to* ``python``, written to *output* when given), or
    its captured program written to *output* (``pt2``: ``torch.export.save``; ``onnx``: needs the ``onnx`` extra).
    Returns :class:`cgtool.export.ExportResult`. A spec whose forward reads tensor values cannot be captured:
    ``pt2`` and ``onnx`` refuse it at that spec line."""
    from .export import FORMATS, ExportResult
    from .render.output import write_atomically

    to = getattr(to, "value", to)
    if to not in FORMATS:
        raise CgError(f"unknown export format {to!r}", "--to", hint="use " + ", ".join(FORMATS))
    if to != "python" and not output:
        raise CgError(f"--to {to} writes a binary file: say where with -o FILE", "--output",
                      hint=f"for example -o model.{to}")
    output = os.fspath(output) if output else None
    source, name = _source(spec, file)
    built = _build(source, base=base, file=name, args=args, inputs=inputs, dtype=dtype, seed=seed, max_memory=max_memory,
                   max_iterations=max_iterations, check=to != "python")
    if to == "python":
        from .export.python import eject

        if isinstance(source, Spec):
            if source.file.startswith("<") or not os.path.isfile(source.file):
                raise CgError("export --to python reads the spec's text, and this Spec has no file",
                              hint="pass the spec's path or YAML text")
            source, name = read_spec(source.file)
        ejected = eject(built.spec, source, name, inputs=built.inputs)
        if output:
            write_atomically(output, ejected.code, "--output")
        return ExportResult("python", _title(built), output, ejected.code, ejected.classes)
    from .export.program import save_onnx, save_pt2

    save = save_pt2 if to == "pt2" else save_onnx
    return ExportResult(to, _title(built), output, program=save(built, _tensors(built), output))


def bench(spec, *, batch="1,8,64", backward: bool = False, compile: bool = False, threads: int | None = None,
          device="cpu", file: str | None = None, args=None, inputs=None, dtype=None, seed: int = 0,
          min_time: float = 0.2, memory: bool = True, max_memory=None, max_iterations: int | None = None,
          progress=None, base=None):
    """``cgtool bench``: latency (median, spread), throughput and peak memory at each *batch* size (a list, or
    ``"1,8,64"``), which sets the inputs' ``B`` dimension (else dim 0). The forward in evaluation mode, or with
    *backward* forward and backward in training mode; eager, and with *compile* also ``torch.compile``
    (compile time apart). *min_time*: seconds of timed calls per case. Returns
    :class:`cgtool.inspect.bench.BenchReport`. *progress*: called with each case's name and the fraction done.
    """
    from .inspect.bench import bench as run_bench

    batches = _parse_batches(batch)
    if min_time <= 0:
        raise CgError(f"--min-time must be positive, not {min_time}", "--min-time")
    if threads is not None and threads < 1:
        raise CgError(f"--threads must be 1 or more, not {threads}", "--threads")
    report = progress or (lambda stage, fraction=None: None)
    report("building the model")
    built = _build(spec, base=base, file=file, args=args, inputs=inputs, device=device, dtype=dtype, seed=seed,
                   max_memory=max_memory, max_iterations=max_iterations)
    return run_bench(built, batches=batches, backward=backward, compile=compile, threads=threads, min_time=min_time,
                     memory=memory, progress=report)


def _parse_batches(batch) -> list[int]:
    items = batch.split(",") if isinstance(batch, str) else [batch] if isinstance(batch, int) else list(batch)
    out = []
    for item in items:
        try:
            n = int(str(item).strip())
        except ValueError:
            raise CgError(f"--batch {item!r} is not a whole number", "--batch", hint="for example --batch 1,8,64") \
                from None
        if n < 1:
            raise CgError(f"--batch sizes are 1 or more, not {n}", "--batch")
        out.append(n)
    if not out:
        raise CgError("--batch needs at least one size", "--batch", hint="for example --batch 1,8,64")
    return out


def _is_spec(x) -> bool:
    if isinstance(x, (Spec, os.PathLike)):
        return True
    return isinstance(x, str) and (x == "-" or os.path.isfile(x))


def compare(spec, *, file: str | None = None, args=None, inputs=None, scales=None, device="cpu", dtype=None,
            seed: int = 0, compile: bool = True, min_time: float = 0.2, threads: int | None = None, max_memory=None,
            max_iterations: int | None = None, progress=None, base=None):
    """``cgtool compare``: the dynamic graph against the static capture, and eager against compiled speed.

    The dynamic graph is captured once per input case: each of *inputs* (``NAME=SHAPE`` or ``NAME=FILE``,
    applied one at a time to the default inputs), or else the default input scaled by each of *scales*
    (default 1, 10, 100). Returns :class:`~cgtool.inspect.compare.Comparison`; *progress*, if given, is called
    with each stage's name and the fraction done. *compile*: also time
    ``torch.compile`` (compilation apart); *min_time*: seconds per latency measurement; *threads*: torch threads
    for the timings (default 1: small models are timed without thread contention).
    """
    import dataclasses

    from .build.inputs import apply_overrides
    from .inspect.compare import compare as run_compare
    from .inspect.compare import scaled_cases

    if isinstance(scales, str):
        scales = _parse_scales(scales)
    if min_time <= 0:
        raise CgError(f"--min-time must be positive, not {min_time}", "--min-time")
    built = _build(spec, base=base, file=file, args=args, device=device, dtype=dtype, seed=seed, max_memory=max_memory,
                   max_iterations=max_iterations)
    limits = Limits(max_loop_iterations=max_iterations) if max_iterations else None
    default = _tensors(built)
    if inputs:
        if scales:
            raise CgError("--input and --scales both give the inputs to compare", "--scales",
                          hint="use one: --input NAME=... repeated, or --scales 1,10,100 of the default input")
        cases = []
        for entry in _input_overrides(inputs):
            declared, given = apply_overrides(built.spec, [entry])
            one = dataclasses.replace(built, inputs=declared or built.inputs, given={**built.given, **given})
            cases.append((entry, example_inputs(one)))
    else:
        cases = scaled_cases(default, list(scales or (1.0, 10.0, 100.0)))
    return run_compare(built, default, cases=cases, scales=scales or (1.0, 10.0, 100.0), compile=compile,
                       min_run_time=min_time, threads=threads or 1, limits=limits, progress=progress)


def _parse_scales(text: str) -> list[float]:
    try:
        scales = [float(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise CgError(f"--scales takes numbers separated by commas, not {text!r}", "--scales",
                      hint="e.g. --scales 1,10,100") from None
    if not scales or any(not (s == s and abs(s) != float("inf")) for s in scales):
        raise CgError(f"--scales takes finite numbers separated by commas, not {text!r}", "--scales",
                      hint="e.g. --scales 1,10,100")
    return scales


@dataclass
class StaticGraph:
    """``cgtool graph SPEC --static``: the captured program's view, or why the forward cannot be captured."""

    capture: object  # cgtool.graph.static.StaticCapture
    view: object = None  # cgtool.graph.view.GraphView when captured
    baked: object = None  # cgtool.graph.static.BakedBranch when not: a trace's answer on a scaled input


def static_graph(spec, *, file: str | None = None, args=None, inputs=None, dtype=None, seed: int = 0,
                 max_nodes: int | None = None, max_memory=None, max_iterations: int | None = None, base=None) -> StaticGraph:
    """The static graph of a spec: its forward captured ahead of time with ``torch.export`` (non-strict) and drawn
    like the dynamic one; for a forward whose control flow reads tensor values (FancyMLP), the spec line that
    prevents capture, why, torch's error in one line, and a trace's answer on the input scaled by 100 beside
    eager's. Not being capturable is a finding, not an error."""
    from .graph.static import baked_branch, static_capture, static_view

    built = _build(spec, base=base, file=file, args=args, inputs=inputs, dtype=dtype, seed=seed, max_memory=max_memory,
                   max_iterations=max_iterations)
    tensors = _tensors(built)
    sc = static_capture(built, tensors)
    if not sc.capturable:
        return StaticGraph(sc, baked=baked_branch(built, tensors, scale=100.0))
    where = next(iter(sorted(built.files)), None) if built.files else None
    title = f"{_title(built)} ({where}), static: torch.export" if where and not where.startswith("<") else \
        f"{_title(built)}, static: torch.export"
    return StaticGraph(sc, view=static_view(sc, title=title, max_nodes=max_nodes))


def schema() -> dict:
    """``cgtool schema``: the JSON Schema (draft 2020-12) of the spec language."""
    from .spec.schema import spec_schema

    return spec_schema()


@dataclass
class NewSpec:
    path: str
    kind: str
    name: str
    text: str


def new(kind: str, name: str, *, force: bool = False) -> NewSpec:
    """``cgtool new``: write a commented starter spec of *kind* (sequential, modulelist, moduledict, module) to
    *name* (``.yaml`` added when it has no suffix), atomically; an existing file is kept unless *force*."""
    from .render.output import write_atomically
    from .spec.starters import STARTERS, class_name, starter

    kind = getattr(kind, "value", kind)
    if kind not in STARTERS:
        raise CgError(f"unknown kind {kind!r}", "KIND", hint="one of " + ", ".join(STARTERS))
    if not name or not name.strip():
        raise CgError("the spec needs a file name", "NAME", hint="e.g. cgtool new sequential my_mlp")
    path = name if name.endswith((".yaml", ".yml")) else f"{name}.yaml"
    if os.path.exists(path) and not force:
        raise CgError("the file exists: not overwritten", path, hint="pick another name, or --force to overwrite it")
    stem = os.path.splitext(os.path.basename(path))[0]
    text = starter(kind, class_name(stem), path, stem)
    write_atomically(path, text, place=path)
    return NewSpec(path, kind, class_name(stem), text)


def layers(pattern: str | None = None) -> list[LayerType]:
    """``cgtool layers``: the layer types a spec may use (every torch.nn module class), with signatures;
    *pattern* keeps those whose name contains it (any case)."""
    return catalogue(pattern)


def validate(paths) -> Validation:
    """``cgtool validate``: compile and dry-run each spec file on meta tensors; a mistake is recorded,
    not raised."""
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    results = []
    for path in paths:
        path = os.fspath(path)
        try:
            text, name = read_spec(path)
            built = build_model(text, file=name, device="meta")
            results.append(SpecCheck(path, True, check=built.check.status, params=built.param_count))
        except CgError as e:
            results.append(SpecCheck(path, False, error=str(e), hint=e.hint))
    return Validation(results, ok=all(r.ok for r in results))


# --------------------------------------------------------------------------- options as the CLI takes them


def read_spec(path: str) -> tuple[str, str]:
    """(text, display name) of a spec file; ``-`` reads stdin."""
    from .spec.yamlpos import MAX_BYTES, read_capped

    if path == "-":
        text = sys.stdin.read(MAX_BYTES + 1)  # no further than the cap, whatever is piped in
        if len(text) > MAX_BYTES:
            raise CgError(f"the spec on stdin is over the cap of {MAX_BYTES:,} characters", "<stdin>")
        return text, "<stdin>"
    return read_capped(path), path


def parse_args(items) -> dict:
    """Spec args: a mapping as is (a string in it is that string), or ``NAME=VALUE`` strings (``--arg``), whose
    values are read as the spec reads its own (numbers, expressions over args, words)."""
    if isinstance(items, Mapping):
        return dict(items)
    out = {}
    for item in [items] if isinstance(items, str) else items or []:
        if "=" not in item:
            raise CgError(f"--arg {item!r} needs NAME=VALUE", "--arg", hint="for example --arg d_model=1024")
        name, value = item.split("=", 1)
        name = name.strip()
        if not name.isidentifier():
            raise CgError(f"--arg name {name!r} is not a name", "--arg")
        out[name] = ArgText(value.strip())
    return out


def _input_overrides(inputs) -> list[str]:
    """``NAME=SHAPE|FILE`` strings from strings, or from a mapping name → shape (ints) or file."""
    if inputs is None:
        return []
    if isinstance(inputs, str):
        return [inputs]
    if not isinstance(inputs, Mapping):
        return [str(i) for i in inputs]
    out = []
    for name, value in inputs.items():
        if isinstance(value, (str, os.PathLike)):
            out.append(f"{name}={os.fspath(value)}")
        elif isinstance(value, int):
            out.append(f"{name}={value}")
        else:
            try:
                out.append(f"{name}={','.join(str(int(d)) for d in value)}")
            except (TypeError, ValueError):
                raise CgError(f"input {name!r}: a shape (a list of ints) or a tensor file, not {value!r}",
                              f"--input {name}") from None
    return out


def _source(spec, file: str | None):
    """(what build_model loads, its display name)."""
    if isinstance(spec, Spec):
        return spec, file
    if isinstance(spec, os.PathLike):
        return read_spec(os.fspath(spec))
    if isinstance(spec, str):
        if file is not None or "\n" in spec:
            return spec, file or "<spec>"
        return read_spec(spec)
    raise CgError(f"a spec is a path, YAML text or a Spec, not {type(spec).__name__}")


def _build(spec, *, base=None, file=None, args=None, inputs=None, device="cpu", dtype=None, seed: int = 0,
           check: bool = True, max_memory=None, max_iterations: int | None = None, values: bool = True) -> Built:
    source, name = _source(spec, file)
    if isinstance(max_memory, str):
        max_memory = parse_bytes(max_memory) if max_memory else None
    return build_model(source, file=name, base=base, args=parse_args(args), device=getattr(device, "value", device),
                       dtype=getattr(dtype, "value", dtype), seed=seed, inputs=_input_overrides(inputs), check=check,
                       max_bytes=max_memory, values=values,
                       limits=Limits(max_loop_iterations=max_iterations) if max_iterations else None)


def _tensors(built: Built) -> dict:
    """Input tensors on the model's device: given files, else seeded random values of the declared shapes."""
    return example_inputs(built) if (built.inputs or built.given) else {}


def _title(built: Built) -> str:
    return getattr(built.spec, "name", None) or type(built.module).__name__


def _fields(obj) -> dict:
    return {f.name: getattr(obj, f.name) for f in fields(obj) if f.init}
