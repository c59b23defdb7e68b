"""Rendering of `cgtool graph SPEC --static`: the captured program in any format, or the finding that the forward
cannot be captured (which line, why, torch's error, a trace's baked branch in numbers)."""
from __future__ import annotations

from dataclasses import asdict

from rich.markup import escape

from .console import out, print_json


def static_json(result) -> dict:
    sc = result.capture
    data = {"capturable": sc.capturable, "reason": sc.reason, "line": sc.line, "statement": sc.statement,
            "error": sc.error, "capture_s": sc.seconds}
    if result.view is None:
        data["nodes"] = None
        data["baked_branch"] = asdict(result.baked) if result.baked is not None else None
        return data
    from .graph_json import graph_json

    return {**data, **graph_json(result.view)}


def render_static(result, fmt: str, output: str | None = None) -> None:
    if result.view is not None:
        if fmt == "json":
            if output is None:
                print_json(static_json(result))
                return
            import json

            from .console import to_jsonable
            from .output import write_atomically

            write_atomically(output, json.dumps(to_jsonable(static_json(result)), indent=2, ensure_ascii=False) + "\n")
            out().print(f"wrote {output} (json, {len(result.view.nodes)} nodes)", highlight=False)
            return
        from .graph_output import render_view

        render_view(result.view, fmt, output)
        return
    if fmt == "json":
        print_json(static_json(result))
        return
    sc = result.capture
    console = out()
    where = f"{escape(sc.line)}: " if sc.line else ""
    statement = f"`{escape(sc.statement)}` " if sc.statement else ""
    console.print(f"[yellow]no static graph[/]: {where}{statement}— {escape(sc.reason or '')}")
    console.print(f"[dim]torch says: {escape(sc.error or '')}[/]")
    b = result.baked
    if b is not None:
        console.print(f"a trace taken on {b.traced_on} gives {'a different' if b.differs else 'the same'} answer on "
                      f"the input × {b.scale:g}: {b.traced:.6g} where eager gives {b.eager:.6g}")
    console.print("[dim]the dynamic graph works: cgtool graph SPEC (without --static) draws the graph of this input; "
                  "cgtool compare SPEC shows how it changes with the data[/]")
    if output is not None:
        console.print(f"[dim]nothing written to {escape(output)}: there is no static graph to draw[/]")
