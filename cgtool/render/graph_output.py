"""One GraphView to one format, on stdout or into a file (atomically)."""
from __future__ import annotations

import sys

from ..graph.view import GraphView
from .console import out, print_json, to_jsonable
from .output import write_atomically
from .units import human_bytes, plural

FORMATS = ("text", "dot", "mermaid", "json", "svg", "png", "html")


def rendered(view: GraphView, fmt: str) -> str | bytes:
    """The view in *fmt* (text is rich's rendering without colour)."""
    if fmt == "dot":
        from .graph_dot import to_dot

        return to_dot(view)
    if fmt == "mermaid":
        from .graph_mermaid import to_mermaid

        return to_mermaid(view)
    if fmt == "json":
        import json

        from .graph_json import graph_json

        return json.dumps(to_jsonable(graph_json(view)), indent=2, ensure_ascii=False) + "\n"
    if fmt in ("svg", "png"):
        from .graph_dot import layout, to_dot

        return layout(to_dot(view), fmt, dpi=144 if fmt == "png" else None)
    if fmt == "html":
        from .graph_html import to_html

        return to_html(view)
    if fmt == "text":
        import io

        from .graph_text import render_graph_text

        buf = io.StringIO()
        saved = sys.stdout
        sys.stdout = buf
        try:
            render_graph_text(view)
        finally:
            sys.stdout = saved
        return buf.getvalue()
    raise ValueError(f"unknown format {fmt!r}")  # pragma: no cover - the CLI's choices


def render_view(view: GraphView, fmt: str, output: str | None = None) -> None:
    if output is None:
        if fmt == "text":
            from .graph_text import render_graph_text

            render_graph_text(view)
        elif fmt == "json":
            from .graph_json import graph_json

            print_json(graph_json(view))
        else:
            data = rendered(view, fmt)
            if isinstance(data, bytes):
                sys.stdout.flush()
                sys.stdout.buffer.write(data)
                sys.stdout.buffer.flush()
            else:
                sys.stdout.write(data)
                sys.stdout.flush()
        return
    data = rendered(view, fmt)
    write_atomically(output, data)
    size = len(data.encode("utf-8") if isinstance(data, str) else data)
    from rich.markup import escape

    out().print(f"wrote {escape(output)} ({fmt}, {human_bytes(size)}, {plural(len(view.nodes), 'node')})", highlight=False)
