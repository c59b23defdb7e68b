"""Shared CLI plumbing: option types and the error edge. Commands stay thin."""
from __future__ import annotations

import enum
import functools
import os
import sys
from typing import Annotated, Optional

import typer

from ..errors import CgError, CheckFailed
from ..render.console import print_error


class Device(str, enum.Enum):
    cpu = "cpu"
    cuda = "cuda"
    meta = "meta"


class DType(str, enum.Enum):
    float32 = "float32"
    float64 = "float64"
    float16 = "float16"
    bfloat16 = "bfloat16"


SpecArg = Annotated[str, typer.Argument(help="Spec file (YAML), or - to read it from stdin.", show_default=False)]
InputOpt = Annotated[
    Optional[list[str]],
    typer.Option("--input", "-i", help="NAME=SHAPE (2,784) or NAME=FILE.pt|FILE.npy; repeatable.", show_default=False),
]
ArgOpt = Annotated[
    Optional[list[str]],
    typer.Option("--arg", "-a", help="Override a spec arg: NAME=VALUE; repeatable.", show_default=False),
]
DeviceOpt = Annotated[Device, typer.Option("--device", help="Where to build and run.")]
DTypeOpt = Annotated[Optional[DType], typer.Option("--dtype", help="Floating dtype of parameters and inputs.", show_default=False)]
SeedOpt = Annotated[int, typer.Option("--seed", help="Seed for weights, constants and random inputs.")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print only JSON on stdout.")]
MaxMemoryOpt = Annotated[
    Optional[str],
    typer.Option("--max-memory", help="Refuse models larger than this (e.g. 8GB); default: half the free memory.",
                 show_default=False),
]
MaxIterationsOpt = Annotated[
    Optional[int],
    typer.Option("--max-iterations", min=1, help="Cap on while-loop iterations in the forward.", show_default=False),
]



def handle_errors(fn):
    """Map user mistakes to `error: PLACE: message` on stderr and an exit code; never a traceback."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
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


def read_text(path: str) -> tuple[str, str]:
    """(text, display name) of a spec argument: a file path or - for stdin."""
    if path == "-":
        return sys.stdin.read(), "<stdin>"
    try:
        with open(path, encoding="utf-8") as f:
            return f.read(), path
    except FileNotFoundError:
        raise CgError("no such file", path, hint="check the path") from None
    except IsADirectoryError:
        raise CgError("is a directory, not a spec file", path) from None
    except UnicodeDecodeError:
        raise CgError("not a UTF-8 text file", path) from None
    except OSError as e:
        raise CgError(f"cannot read: {e.strerror}", path) from None


def parse_args(items: list[str] | None) -> dict:
    """--arg NAME=VALUE pairs; values are read by the spec (numbers, expressions over args, words)."""
    out = {}
    for item in items or []:
        if "=" not in item:
            raise CgError(f"--arg {item!r} needs NAME=VALUE", "--arg", hint="for example --arg d_model=1024")
        name, value = item.split("=", 1)
        name = name.strip()
        if not name.isidentifier():
            raise CgError(f"--arg name {name!r} is not a name", "--arg")
        out[name] = value.strip()
    return out


def build_from_cli(spec: str, *, args=None, inputs=None, device="cpu", dtype=None, seed: int = 0,
                   check: bool = True, max_memory: str | None = None, max_iterations: int | None = None):
    """Build a spec from command-line options: (Built, input tensors on the model's device)."""
    from ..build.memory import parse_bytes
    from ..build.model import build_model
    from ..build.inputs import example_inputs
    from ..lang import Limits

    text, name = read_text(spec)
    limits = Limits(max_loop_iterations=max_iterations) if max_iterations else None
    built = build_model(text, file=name, args=parse_args(args), device=getattr(device, "value", device),
                        dtype=getattr(dtype, "value", dtype), seed=seed, inputs=inputs or [], check=check,
                        max_bytes=parse_bytes(max_memory) if max_memory else None, limits=limits)
    tensors = example_inputs(built) if (built.inputs or built.given) else {}
    return built, tensors
