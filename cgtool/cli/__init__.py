"""The `cgtool` command line. Each command module registers its commands on `app`."""
from __future__ import annotations

import typer

app = typer.Typer(
    name="cgtool",
    help="Inspect PyTorch computational graphs and models: build YAML specs, run them, "
    "tabulate parameters and trace gradient paths.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)

# Command modules register themselves on import.
from . import build_cmd  # noqa: E402,F401

try:  # commands under construction in parallel register when present
    from . import grad_cmd  # noqa: F401
except ModuleNotFoundError as _e:  # pragma: no cover
    if _e.name != f"{__name__}.grad_cmd":
        raise
try:
    from . import inspect_cmd  # noqa: F401
except ModuleNotFoundError as _e:  # pragma: no cover
    if _e.name != f"{__name__}.inspect_cmd":
        raise


def main() -> None:
    app()
