"""What a spec says, as plain dataclasses with positions kept for errors.
"""
from __future__ import annotations
from dataclasses import dataclass, field
import torch
from .. import lang
from ..errors import Loc


KINDS = ("sequential", "modulelist", "moduledict", "module")
INITS = ("rand", "randn", "zeros", "ones", "eye", "full", "arange")
DTYPES = {
    "float32": torch.float32, "float": torch.float32, "float64": torch.float64, "double": torch.float64,
    "float16": torch.float16, "half": torch.float16, "bfloat16": torch.bfloat16,
    "int64": torch.long, "long": torch.long, "int32": torch.int32, "int": torch.int32, "bool": torch.bool,
}  # fmt: skip
MAX_DEPTH = 16  # nested specs, inline or by file
MAX_REPEAT = 10_000
MAX_LAYERS = 100_000
TOP_KEYS = {"name", "kind", "description", "args", "inputs", "layers", "modules", "constants", "parameters",
            "forward", "tie"}  # fmt: skip


# --------------------------------------------------------------------------- data


@dataclass
class Call:
    """A layer constructor call with evaluated arguments: ``Linear(784, 256)``."""

    type: str
    args: list
    kwargs: dict
    text: str  # how it reads, for messages and trees
    loc: Loc


@dataclass
class Layer:
    """One entry of ``layers``/``modules``: exactly one of call, ref or spec is set."""

    where: str  # spec path: layers[2], modules.linear
    loc: Loc
    call: Call | None = None
    ref: str | None = None
    spec: "Spec | None" = None
    repeat: int | None = None
    repeat_kind: str = "sequential"  # the container of the copies: sequential or modulelist
    repeat_names: str | None = None  # the copies' names as written, `encoder_layer_{i}` (a sequential's)
    repeat_keys: list[str] | None = None  # ... and as they are: encoder_layer_0, encoder_layer_1, ...

    @property
    def absent(self) -> bool:
        """`... if cond else None`: no module here (an attribute that is None, as `downsample = None`)."""
        return self.call is None and self.ref is None and self.spec is None

    @property
    def text(self) -> str:
        if self.call is not None:
            return self.call.text
        if self.ref is not None:
            return f"ref {self.ref}"
        if self.spec is None:
            return "None"
        return f"{self.spec.name} ({self.spec.kind})"


@dataclass
class InputSpec:
    name: str
    shape: tuple[int, ...]
    dtype: torch.dtype = torch.float32
    low: float | None = None  # integer inputs: random values in [low, high)
    high: float | None = None
    dims: dict[str, int] = field(default_factory=dict)  # named dims -> index
    loc: Loc | None = None


@dataclass
class TensorSpec:
    """A constant (buffer) or a free parameter."""

    name: str
    shape: tuple[int, ...]
    init: str | None = None  # one of INITS, or None with `value`
    value: object = None  # literal list, or the fill value for init: full
    scale: float | None = None
    dtype: torch.dtype | None = None
    loc: Loc | None = None
    persistent: bool = True  # a constant with `persistent: false` is left out of the state_dict (HF's position_ids)

    @property
    def numel(self) -> int:
        n = 1
        for s in self.shape:
            n *= s
        return n


@dataclass
class Spec:
    name: str
    kind: str
    file: str
    loc: Loc
    args: dict = field(default_factory=dict)
    inputs: dict[str, InputSpec] = field(default_factory=dict)
    layers: list[tuple[str | None, Layer]] = field(default_factory=list)  # sequential / modulelist / moduledict / module
    constants: dict[str, TensorSpec] = field(default_factory=dict)
    parameters: dict[str, TensorSpec] = field(default_factory=dict)
    forward: lang.Program | None = None
    ties: list[tuple[str, str, Loc]] = field(default_factory=list)
    description: str | None = None
    declared_inputs: bool = False  # False: a block that takes `x`
    named: bool = False  # `name:` given: a container spec builds a subclass of that name (`MLPBlock(nn.Sequential)`)

    @property
    def input_names(self) -> list[str]:
        return list(self.inputs) if self.inputs else ["x"]


