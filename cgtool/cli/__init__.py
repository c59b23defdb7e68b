"""The `cgtool` command line. Each command module registers its commands on `app`."""
from __future__ import annotations

import os
import sys

import typer

app = typer.Typer(
    name="cgtool",
    help="Inspect PyTorch computational graphs and models: build YAML specs, run them, "
    "tabulate parameters, trace gradient paths and draw graphs.",
    no_args_is_help=True,
    add_completion=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)


def _version(value: bool):
    if value:
        from importlib.metadata import PackageNotFoundError, version

        try:
            typer.echo(f"cgtool {version('cgtool')}")
        except PackageNotFoundError:
            typer.echo("cgtool (not installed)")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Show the version."),
):
    """Inspect PyTorch computational graphs and models."""


# Command modules register themselves on import. None of them imports torch at module level
# (each command imports what it needs when it runs), so --help and --version start fast; a
# command module that fails to import is an error, never a silently missing command.
from . import build_cmd, inspect_cmd, grad_cmd, paths_cmd, graph_cmd, compare_cmd, catalog_cmd  # noqa: E402,F401,I001 - registration order is --help order
from . import export_cmd, bench_cmd  # noqa: E402,F401,I001 - cgtool export, cgtool bench
from . import project_cmd  # noqa: E402,F401,I001 - cgtool schema, cgtool new


def main() -> None:
    import warnings

    # Python warns about odd literals while parsing a spec value or an expression ("invalid decimal literal"):
    # the user's input is reported by cgtool's own errors, not by Python's warnings on the terminal
    warnings.filterwarnings("ignore", category=SyntaxWarning)
    warnings.filterwarnings("ignore", message="invalid escape sequence", category=DeprecationWarning)
    if "_CGTOOL_COMPLETE" in os.environ:  # shell completion (typer's shells), set up only when a shell asks
        from typer.completion import completion_init

        completion_init()
        app()
        return
    registered = app.registered_commands
    try:
        _only_the_command_asked_for(sys.argv[1:])
        app()
    finally:
        app.registered_commands = registered


def _only_the_command_asked_for(argv: list[str]) -> None:
    """`cgtool grad ...` builds the click command of `grad` alone: typer builds every registered command
    (resolving each option's type hints, ~0.2 s for fourteen commands) before it runs one."""
    if argv and not argv[0].startswith("-"):
        chosen = [c for c in app.registered_commands if c.name == argv[0]]
        if chosen:
            app.registered_commands = chosen
