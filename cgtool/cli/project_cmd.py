"""`cgtool schema` (the spec language as JSON Schema) and `cgtool new KIND NAME` (a commented starter spec)."""
from __future__ import annotations

import enum
from typing import Annotated

import typer

from . import app
from .common import handle_errors


class Kind(str, enum.Enum):
    sequential = "sequential"
    modulelist = "modulelist"
    moduledict = "moduledict"
    module = "module"


@app.command("schema")
@handle_errors
def schema_command():
    """The JSON Schema (draft 2020-12) of the spec language, for editors: save it and add
    `# yaml-language-server: $schema=cgtool-spec.schema.json` to a spec.

    Example: cgtool schema > cgtool-spec.schema.json"""
    from ..api import schema
    from ..render.console import print_json

    print_json(schema())


@app.command("new")
@handle_errors
def new_command(
    kind: Annotated[Kind, typer.Argument(help="sequential, modulelist, moduledict or module.", show_default=False)],
    name: Annotated[str, typer.Argument(help="The file to write (.yaml is added when it has no suffix); the "
                                        "spec's name comes from it.", metavar="NAME", show_default=False)],
    force: Annotated[bool, typer.Option("--force", help="Overwrite an existing file.")] = False,
):
    """Write a commented starter spec of that kind, which builds as it is.

    Example: cgtool new sequential my_mlp && cgtool build my_mlp.yaml"""
    from ..api import new
    from ..render.console import out

    made = new(kind.value, name, force=force)
    out().print(f"wrote {made.path} ({made.kind} {made.name}); next: cgtool build {made.path}", highlight=False)
