"""Building a spec: load, budget, build for real, dry-run; the Built result and the Python entry point.
"""
from __future__ import annotations
from dataclasses import dataclass, field
import torch
from torch import nn
from .. import lang
from ..errors import CgError
from ..spec import Spec, load_spec
from ..render.units import human_bytes
from .builder import Builder, Origin
from .dryrun import DataDependent, run_forward
from .meta import building_on_meta, meta_call
from .memory import count_tensors, default_max_bytes, input_bytes


# --------------------------------------------------------------------------- build


@dataclass
class Check:
    """The build-time dry run."""

    status: str  # passed | skipped
    how: str | None = None  # meta | real
    reason: str | None = None
    outputs: list = field(default_factory=list)  # [{"shape": [...], "dtype": "float32"}]
    records: dict = field(default_factory=dict)  # module path -> CallRecord


@dataclass
class Built:
    module: nn.Module
    spec: Spec
    inputs: dict  # name -> InputSpec
    device: torch.device
    dtype: torch.dtype | None
    files: set[str]
    origins: dict[int, Origin]
    code: list[tuple[str, str]]
    seed: int = 0
    given: dict = field(default_factory=dict)  # inputs given as tensors (files)
    check: Check | None = None
    param_count: int = 0
    param_bytes: int = 0
    values: bool = True  # False: built on meta only to be counted or traced, whatever `device` says

    def forward(self, inputs: dict):
        """Run the model on named inputs; errors come back at the spec's places."""
        args = [inputs[n] for n in self.input_names]
        out, _ = run_forward(self.module, args, files=self.files, origins=self.origins, names=self.input_names)
        return out

    @property
    def input_names(self) -> list[str]:
        return list(self.inputs) if self.inputs else self.spec.input_names


def resolve_device(device) -> torch.device:
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise CgError(f"unknown device {device!r}", "--device", hint="use cpu, cuda or meta") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise CgError("CUDA is not available on this machine", "--device",
                      hint="use --device cpu, or --device meta to check shapes without allocating")
    if dev.type not in ("cpu", "cuda", "meta"):
        raise CgError(f"unsupported device {device!r}", "--device", hint="use cpu, cuda or meta")
    return dev


def build_model(source, *, file: str | None = None, args: dict | None = None, device="cpu", dtype=None,
                seed: int = 0, inputs: list[str] | None = None, check: bool = True, max_bytes: int | None = None,
                limits: lang.Limits | None = None, values: bool = True) -> Built:
    """Load, compile and check a spec. ``inputs`` are CLI-style overrides (``x=2,784``, ``x=file.npy``).

    ``values=False``: the module stays on the meta device whatever *device* says (no storage, no
    initialisation, no memory cap to meet): for what needs shapes only, such as counting parameters."""
    from .inputs import apply_overrides

    limits = limits or lang.DEFAULT_LIMITS
    spec = source if isinstance(source, Spec) else load_spec(source, file=file, args=args, limits=limits)
    dev = resolve_device(device)
    dtype = _dtype(dtype)
    declared, given = apply_overrides(spec, inputs or [])

    meta_builder, meta_module = meta_call(_meta_build, spec, limits)
    params, nbytes = count_tensors(meta_module, dtype)
    if dev.type != "meta" and values:
        _check_budget(spec, params, nbytes, input_bytes(declared, given, dtype), declared,
                      max_bytes if max_bytes is not None else default_max_bytes())
    if dev.type == "meta" or not values:
        builder, module = meta_builder, meta_module
    else:
        builder = Builder(limits, classes=meta_builder.classes)
        with torch.random.fork_rng(devices=[]):  # seeded, leaving the caller's RNG as it was
            torch.manual_seed(seed)
            module = builder.module(spec)  # built on the CPU: the same weights whatever the device
        if dev.type != "cpu":
            module = module.to(dev)
    if dtype is not None:
        module = module.to(dtype)
        meta_module = module if module is meta_module else meta_module.to(dtype)
    built = Built(module, spec, declared, dev, dtype, builder.files, builder.origins, builder.code, seed, given,
                  param_count=params, param_bytes=nbytes, values=values or dev.type == "meta")
    if check:
        built.check = meta_call(dry_run, built, meta_module, meta_builder)
        if dev.type != "meta" and values:
            _check_activations(built, nbytes, input_bytes(declared, given, dtype),
                               max_bytes if max_bytes is not None else default_max_bytes())
    return built


def _meta_build(spec: Spec, limits: lang.Limits) -> tuple[Builder, nn.Module]:
    """The module on the meta device, for counting and the shape check: no storage, no initial values."""
    builder = Builder(limits)
    with building_on_meta():
        module = builder.module(spec)
    return builder, module


def _check_activations(built: Built, nbytes: int, inputs: dict[str, int], cap: int) -> None:
    """A forward holds at least its parameters, its inputs and, at some moment, the largest value it computes
    and the one it was computed from: refuse before running it when that is over the cap (the shape check on
    meta tensors knows every module's output shape). An estimate from below: the true peak can be higher."""
    check = built.check
    if check is None or check.status != "passed" or not check.records:
        return
    element = torch.empty((), dtype=built.dtype or torch.float32).element_size()
    biggest, where = 0, None
    for path, record in check.records.items():
        for shape in record.output_shapes:
            n = 1
            for d in shape:
                n *= int(d)
            if n > biggest:
                biggest, where = n, (path, shape)
    need = nbytes + sum(inputs.values()) + 2 * biggest * element
    if where is not None and need > cap:
        path, shape = where
        raise CgError(f"a forward pass on these inputs needs about {human_bytes(need)} (parameters "
                      f"{human_bytes(nbytes)}, inputs {human_bytes(sum(inputs.values()))}, and values such as the "
                      f"output of {path or 'the model'} {list(shape)}, {human_bytes(biggest * element)}), over the "
                      f"memory cap of {human_bytes(cap)}",
                      f"--input {max(inputs, key=inputs.__getitem__)}" if inputs else built.spec.file,
                      hint="use a smaller input (a smaller batch), or raise the cap with --max-memory / "
                      "CGTOOL_MAX_MEMORY")


def _check_budget(spec: Spec, params: int, nbytes: int, inputs: dict[str, int], declared: dict, cap: int) -> None:
    """Parameters and inputs against the memory cap, before either is allocated."""
    if nbytes > cap:
        raise CgError(f"the model needs {human_bytes(nbytes)} for {params:,} parameters, over the memory cap "
                      f"of {human_bytes(cap)}", spec.file,
                      hint="inspect it with --device meta (nothing is allocated), or raise the cap "
                      "with --max-memory / CGTOOL_MAX_MEMORY")
    if nbytes + sum(inputs.values()) > cap:
        big = max(inputs, key=inputs.__getitem__)
        shape = ",".join(str(d) for d in declared[big].shape)
        raise CgError(f"the inputs need {human_bytes(sum(inputs.values()))} (input {big} [{shape}]: "
                      f"{human_bytes(inputs[big])}) besides {human_bytes(nbytes)} of parameters, over the memory cap "
                      f"of {human_bytes(cap)}", f"--input {big}",
                      hint="use a smaller input (e.g. --input x=2,784), inspect shapes with --device meta (nothing "
                      "is allocated), or raise the cap with --max-memory / CGTOOL_MAX_MEMORY")


def _dtype(dtype):
    if dtype is None or isinstance(dtype, torch.dtype):
        return dtype
    from ..spec.model import DTYPES

    name = getattr(dtype, "value", dtype)
    if name not in DTYPES or not DTYPES[name].is_floating_point:
        raise CgError(f"unknown dtype {name!r}", "--dtype", hint="use float32, float64, float16 or bfloat16")
    return DTYPES[name]


def dry_run(built: Built, meta_module: nn.Module, meta_builder: Builder) -> Check:
    """Check shapes: on meta tensors when possible, else on small real tensors of the declared shapes."""
    from .inputs import example_inputs

    if not built.inputs and not built.given:
        return Check("skipped", reason="the spec declares no inputs; pass --input x=SHAPE to check shapes")
    meta_inputs = example_inputs(built, device="meta")
    try:
        # tensors the forward creates (arange(T), zeros(...)) are made on meta too, beside the inputs
        with torch.no_grad(), torch.device("meta"):
            out, records = run_forward(meta_module, [meta_inputs[n] for n in built.input_names],
                                       files=meta_builder.files, origins=meta_builder.origins, names=built.input_names,
                                       repeats=True)
        return Check("passed", "meta", outputs=output_shapes(out), records=records)
    except DataDependent as dd:
        where = f" ({dd.loc})" if dd.loc else ""
        if built.device.type == "meta" or not built.values:
            return Check("skipped", reason=f"the forward's control flow depends on tensor values{where}, which "
                         "meta tensors do not have; build with --device cpu to check shapes on real tensors")
    real = example_inputs(built, device=built.device)
    with torch.no_grad():
        out, records = run_forward(built.module, [real[n] for n in built.input_names], files=built.files,
                                   origins=built.origins, names=built.input_names)
    return Check("passed", "real", outputs=output_shapes(out), records=records)


def output_shapes(out) -> list[dict]:
    if isinstance(out, torch.Tensor):
        return [{"shape": list(out.shape), "dtype": str(out.dtype).replace("torch.", "")}]
    if isinstance(out, (list, tuple)):
        return [d for v in out for d in output_shapes(v)]
    if isinstance(out, dict):
        return [dict(d, name=str(k)) for k, v in out.items() for d in output_shapes(v)]
    if isinstance(out, (int, float, bool)):
        return [{"shape": [], "dtype": type(out).__name__}]
    return []


def build(spec, **args) -> nn.Module:
    """The Python API: a spec (path or YAML text) to a real ``torch.nn.Module``; ``args`` override the spec's."""
    return build_model(spec, args=args, check=False).module
