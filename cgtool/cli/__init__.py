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


# Command modules register themselves on import.
import importlib  # noqa: E402
import importlib.util  # noqa: E402

for _name in ("build_cmd", "inspect_cmd", "grad_cmd", "catalog_cmd"):
    if importlib.util.find_spec(f"{__name__}.{_name}") is not None:
        importlib.import_module(f"{__name__}.{_name}")


def main() -> None:
    app()
