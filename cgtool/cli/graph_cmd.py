"""`cgtool graph SPEC_OR_EXPR`: pictures of a computational graph, as text, DOT, Mermaid, JSON, SVG/PNG or a page."""
from __future__ import annotations

import enum
import os
import sys
from typing import Annotated, Optional

import typer

from . import app
from .common import ArgOpt, Device, DTypeOpt, Level, InputOpt, JsonOpt, MaxIterationsOpt, BaseOpt, TimeLimitOpt, MaxMemoryOpt, SeedOpt, handle_errors
from ..errors import CgError


class Format(str, enum.Enum):
    text = "text"
    dot = "dot"
    mermaid = "mermaid"
    json = "json"
    svg = "svg"
    png = "png"
    html = "html"


SUFFIXES = {".txt": "text", ".dot": "dot", ".gv": "dot", ".mmd": "mermaid", ".mermaid": "mermaid",
            ".json": "json", ".svg": "svg", ".png": "png", ".html": "html", ".htm": "html"}


class UsageError(CgError):
    exit_code = 2


def format_for(fmt: Optional[str], output: Optional[str], json: bool) -> str:
    """The format: --format, else --json, else the output file's suffix, else text."""
    if fmt is not None:
        names = [f.value for f in Format]
        if fmt.lower() not in names:
            raise UsageError(f"{fmt!r} is not a format", "--format", hint=f"choose one of {', '.join(names)}")
        if json and fmt.lower() != "json":
            raise UsageError(f"--json and --format {fmt} disagree", "--format", hint="give one of them")
        return fmt.lower()
    if json:
        return "json"
    if output:
        suffix = os.path.splitext(output)[1].lower()
        if suffix not in SUFFIXES:
            raise CgError(f"cannot tell the format from the suffix {suffix or '(none)'!r}", f"--output {output}",
                          hint="name the format with --format (text, dot, mermaid, json, svg, png, html), or use a "
                          "suffix: " + ", ".join(sorted(SUFFIXES)))
        return SUFFIXES[suffix]
    return "text"


@app.command("graph")
@handle_errors
def graph_command(
    spec_or_expr: Annotated[str, typer.Argument(
        metavar="SPEC_OR_EXPR", help='A spec file (YAML), - for a spec on stdin, or an expression such as '
        '"y = (x1 + w) * (x2 + w)".', show_default=False)],
    format: Annotated[Optional[str], typer.Option(
        "--format", "-f", metavar="FORMAT", help="text (default), dot, mermaid, json, svg, png (laid out by Graphviz's dot), or html "
        "(one self-contained interactive page); default: from the --output suffix.", show_default=False)] = None,
    output: Annotated[Optional[str], typer.Option(
        "--output", "-o", metavar="FILE", help="Write to FILE (atomically) instead of stdout.", show_default=False)] = None,
    level: Annotated[Optional[Level], typer.Option(
        "--level", help="module: leaves, module calls and named values (as cgtool paths; the default for specs); "
        "op: every operation (the default for expressions).", show_default=False)] = None,
    highlight: Annotated[Optional[str], typer.Option(
        "--highlight", metavar="NAME", help="Colour every path from the root to NAME and label its edges with their local "
        "derivatives.", show_default=False)] = None,
    depth: Annotated[Optional[int], typer.Option(
        "--depth", min=1, metavar="N", help="Draw each call of a module at depth N (stem: 1, stem.0: 2) as one node, its inside folded.", show_default=False)] = None,
    expand: Annotated[bool, typer.Option(
        "--expand", help="Draw every copy of a repeated block (repeat: N) instead of one node ×N.")] = False,
    max_nodes: Annotated[Optional[int], typer.Option(
        "--max-nodes", min=0, metavar="N", help="Refuse to draw more nodes than this (default 400; 0: no limit).",
        show_default=False)] = None,
    max_paths: Annotated[int, typer.Option("--max-paths", min=0, metavar="N", help="Paths listed for --highlight.")] = 10,
    at: Annotated[Optional[list[str]], typer.Option(
        "--at", metavar="NAME=VALUE", help="Expressions: a leaf's value, NAME=NUMBER or NAME=JSON list; repeatable (numeric derivatives "
        "beside the symbolic ones).", show_default=False)] = None,
    root: Annotated[Optional[str], typer.Option(
        "--root", metavar="NAME", help="Expressions: the value the graph ends at (default: the last assigned name).",
        show_default=False)] = None,
    static: Annotated[bool, typer.Option(
        "--static", help="Specs: draw the program torch.export captures ahead of time (op level) instead; a forward "
        "it cannot capture is a finding, with the line and why (exit 0).")] = False,
    input: InputOpt = None,
    arg: ArgOpt = None,
    device: Annotated[Device, typer.Option(
        "--device", help="Where to build and run the model; meta draws models of any size (no values).")]
    = Device.cpu,
    dtype: DTypeOpt = None,
    seed: SeedOpt = 0,
    json: JsonOpt = False,
    max_memory: MaxMemoryOpt = None,
    time_limit: TimeLimitOpt = None,
    base: BaseOpt = None,
    max_iterations: MaxIterationsOpt = None,
):
    """Draw the computational graph of a spec's forward pass or of an expression: text, DOT, Mermaid, JSON,
    SVG/PNG or an interactive HTML page.

    Example: cgtool graph "y = (x1 + w) * (x2 + w)" --highlight w
    """
    try:
        fmt = format_for(format, output, json)
        if static:
            dynamic_only = [name for name, given in (("--highlight", highlight), ("--depth", depth),
                                                     ("--expand", expand), ("--level", level), ("--at", at),
                                                     ("--root", root), ("--device", device is not Device.cpu)) if given]
            if dynamic_only:
                raise UsageError(f"{', '.join(dynamic_only)} {'is' if len(dynamic_only) == 1 else 'are'} for the "
                                 "dynamic graph, not --static's captured program", "--static",
                                 hint="drop --static, or " + ("that option" if len(dynamic_only) == 1 else "those"))
    except UsageError as e:  # a usage mistake: exit 2, said in one line
        from ..render.console import print_error

        print_error(e.message, e.place, e.hint)
        raise typer.Exit(2) from None
    if fmt == "png" and output is None and sys.stdout.isatty():
        raise CgError("PNG is binary and stdout is a terminal", "--format png", hint="write it with -o FILE.png")
    if fmt in ("svg", "png", "html"):
        from ..render.graph_dot import dot_program

        dot_program()  # a missing renderer is said before the model is built
    from ..render.progress import StageProgress

    if static:
        from ..api import _is_spec, static_graph
        from ..render.static import render_static

        if not _is_spec(spec_or_expr):
            raise CgError("--static draws a spec's captured program; an expression has only its dynamic graph",
                          "--static", hint=f"no file named {spec_or_expr!r} exists")
        with StageProgress(enabled=fmt != "json") as progress:
            progress("capturing the forward with torch.export")
            result = static_graph(spec_or_expr, base=base, args=arg, inputs=input, dtype=dtype, seed=seed, max_nodes=max_nodes,
                                  max_memory=max_memory, max_iterations=max_iterations)
        render_static(result, fmt, output)
        return
    from ..api import graph
    from ..render.graph_output import render_view

    with StageProgress(enabled=fmt != "json") as progress:
        progress("capturing the graph" + (" and the paths of every leaf" if fmt == "html" else ""))
        view = graph(spec_or_expr, base=base, level=level.value if level else None, highlight=highlight, depth=depth,
                     expand=expand, max_nodes=max_nodes, max_paths=max_paths, page=fmt == "html", at=at, root=root,
                     args=arg, inputs=input, device=device.value, dtype=dtype, seed=seed, max_memory=max_memory,
                     max_iterations=max_iterations)
        if output is not None:  # laying out and writing a file can take a while too; stdout waits for the bar to go
            progress(f"drawing ({fmt})")
            render_view(view, fmt, output)
    if output is None:
        render_view(view, fmt, output)
