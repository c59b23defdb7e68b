"""Shared CLI plumbing: option types and the error edge. Commands stay thin.

Nothing here imports torch (nor anything that does): `cgtool --help` must start fast."""
from __future__ import annotations

import enum
import functools
import os
from typing import Annotated, Optional

import typer
import typer.core  # noqa: F401 - the help patch below

from ..errors import CgError, CheckFailed
from ..render.console import print_error


# Typer (0.2x) prints a Python type after each argument's name in --help (`SPEC <str>`,
# `SPEC... <list[str]>`): noise beside the metavar and the help. Options name their values with
# metavars (NAME=SHAPE, FILE, N). Where Typer has no such hook, its default stays.
_TyperArgument = getattr(getattr(typer, "core", None), "TyperArgument", None)
if _TyperArgument is not None and hasattr(_TyperArgument, "display_type_rich"):
    _TyperArgument.display_type_rich = lambda self, ctx: None


class Device(str, enum.Enum):
    cpu = "cpu"
    cuda = "cuda"
    meta = "meta"


class Level(str, enum.Enum):
    """The granularity of a graph, as `cgtool paths` and `cgtool graph` read it."""

    module = "module"
    op = "op"


class DType(str, enum.Enum):
    float32 = "float32"
    float64 = "float64"
    float16 = "float16"
    bfloat16 = "bfloat16"


def complete_spec(incomplete: str) -> list[str]:
    """Shell completion of a spec argument: folders and .yaml/.yml files."""
    import glob

    out = []
    for path in sorted(glob.glob(glob.escape(incomplete or "") + "*")):
        if os.path.isdir(path):
            out.append(path + os.sep)
        elif path.endswith((".yaml", ".yml")):
            out.append(path)
    return out


def _spec_being_completed() -> str | None:
    """The first spec file on the command line being completed (bash: COMP_WORDS; zsh, fish, PowerShell:
    _TYPER_COMPLETE_ARGS); the completion context does not always carry the argument parsed."""
    import shlex

    line = os.environ.get("COMP_WORDS") or os.environ.get("_TYPER_COMPLETE_ARGS") or ""
    try:
        words = shlex.split(line)
    except ValueError:
        words = line.split()
    return next((w for w in words[1:] if w.endswith((".yaml", ".yml")) and os.path.isfile(w)), None)


def complete_names(ctx: typer.Context, incomplete: str) -> list[str]:
    """Shell completion of --wrt: the parameters, constants and inputs of the spec given before it (built on meta
    tensors, nothing allocated); nothing when there is no readable spec yet."""
    spec = ctx.params.get("spec") or _spec_being_completed()
    if not spec or spec == "-" or not os.path.isfile(spec):
        return []
    try:
        from ..build.model import build_model

        with open(spec, encoding="utf-8") as f:
            built = build_model(f.read(), file=spec, device="meta", check=False)
        module = built.module
        names = [n for n, _ in module.named_parameters(remove_duplicate=False)]
        names += [n for n, _ in module.named_buffers()] + list(built.input_names)
    except Exception:  # noqa: BLE001 - a spec with a mistake completes nothing; the command will say why
        return []
    return [n for n in dict.fromkeys(names) if n.startswith(incomplete)]


SpecArg = Annotated[str, typer.Argument(help="Spec file (YAML), or - to read it from stdin.", show_default=False,
                                              metavar="SPEC", autocompletion=complete_spec)]
InputOpt = Annotated[
    Optional[list[str]],
    typer.Option("--input", "-i", help="NAME=SHAPE (2,784) or NAME=FILE.pt|FILE.npy; repeatable.", show_default=False,
                 metavar="NAME=SHAPE|FILE"),
]
ArgOpt = Annotated[
    Optional[list[str]],
    typer.Option("--arg", "-a", help="Override a spec arg: NAME=VALUE; repeatable.", show_default=False,
                 metavar="NAME=VALUE"),
]
DeviceOpt = Annotated[Device, typer.Option("--device", help="Where to build and run.")]
DTypeOpt = Annotated[Optional[DType], typer.Option("--dtype", help="Floating dtype of parameters and inputs.", show_default=False)]
SeedOpt = Annotated[int, typer.Option("--seed", help="Seed for weights, constants and random inputs.", metavar="N",
                                      min=0, max=2**63 - 1)]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print only JSON on stdout.")]
MaxMemoryOpt = Annotated[
    Optional[str],
    typer.Option("--max-memory", help="Refuse models larger than this (e.g. 8GB); default: half the free memory.",
                 show_default=False, metavar="SIZE"),
]
MaxIterationsOpt = Annotated[
    Optional[int],
    typer.Option("--max-iterations", min=1, help="Cap on loop steps of one forward call, all loops together "
                 "(default 10000).", show_default=False,
                 metavar="N"),
]


TimeLimitOpt = Annotated[
    Optional[str],
    typer.Option("--time-limit", help="Stop a run that takes longer (seconds; default 600, or CGTOOL_TIME_LIMIT).",
                 show_default=False, metavar="SECONDS"),
]
BaseOpt = Annotated[
    Optional[str],
    typer.Option("--base", help="With SPEC -: the folder its includes are in (none: includes are refused).",
                 show_default=False, metavar="DIR"),
]


def handle_errors(fn):
    """Map user mistakes to `error: PLACE: message` on stderr and an exit code; never a traceback.

    The command runs under the work budget (``--time-limit``, see :mod:`cgtool.budget`)."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        from .. import budget

        try:
            limit = kwargs.get("time_limit")
            seconds = budget.parse_seconds(limit) if limit is not None else budget.default_seconds()
            with budget.work_budget(seconds):
                return fn(*args, **kwargs)
        except CgError as e:
            print_error(e.message, e.place, e.hint)
            raise typer.Exit(1) from None
        except CheckFailed as e:
            print_error(e.message)
            raise typer.Exit(3) from None
        except typer.Exit:
            raise
        except KeyboardInterrupt:
            print_error("interrupted")
            raise typer.Exit(130) from None
        except Exception as e:  # noqa: BLE001 - the edge: a bug must not look like a crash dump
            if os.environ.get("CGTOOL_DEBUG"):
                raise
            print_error(f"internal error: {type(e).__name__}: {e}",
                        hint="this is a bug in cgtool; rerun with CGTOOL_DEBUG=1 for a traceback and report it")
            raise typer.Exit(1) from None

    return wrapper
