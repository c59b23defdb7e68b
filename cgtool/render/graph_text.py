"""`cgtool graph --format text`: the view as a listing on the terminal (rich), operands before results."""
from __future__ import annotations

from rich.markup import escape
from rich.table import Table

from ..graph.view import GraphView, ViewNode
from .console import out
from .graph_dot import shape_text
from .units import plural

KIND_STYLE = {"input": "blue", "parameter": "yellow", "constant": "dim", "module": "green"}


def _kind(n: ViewNode) -> str:
    if n.repeat:
        return f"×{n.repeat} blocks"
    if n.folded > 1:
        return "module (folded)"
    if n.kind == "constant":
        return "constant (not trained)"
    return n.kind


def _short(loc: str | None) -> str:
    """fancy_mlp.yaml:12:7 for configs/fancy_mlp.yaml:12:7 (the title names the file)."""
    if not loc:
        return ""
    return loc.rsplit("/", 1)[-1]


def render_graph_text(view: GraphView) -> None:
    console = out()
    what = "expression" if view.source == "expression" else "model"
    console.print(f"[bold]{escape(view.title)}[/]  ({what}, {view.level} level): "
                  f"{plural(len(view.nodes), 'node')}, {plural(len(view.edges), 'edge')}; "
                  f"this input's graph has {plural(view.values, 'value')} at the op level")
    if view.repeats:
        console.print(f"[dim]repeated blocks folded (--expand draws each): {escape(', '.join(view.repeats))}[/]")
    if view.depth is not None:
        console.print(f"[dim]modules deeper than {view.depth} folded into one node each (--depth)[/]")
    if view.data_dependent:
        console.print("[yellow]data-dependent control flow[/]: the forward branches on tensor values, so this "
                      f"graph ({plural(view.values, 'value')}) is for this input; another input can give another "
                      "graph")
        for c in view.control_flow:
            where = f"  {escape(c.loc)}" if c.loc else ""
            if c.runs is None:
                ran = ""
            elif c.kind == "while":
                ran = f"  the loop ran {plural(c.held, 'time')}"
            else:
                ran = f"  held {c.held} of {plural(c.runs, 'time')}"
            console.print(f"  {escape(c.kind)} {escape(c.text)}{where}{ran}")
    table = Table(box=None, header_style="dim", pad_edge=False, padding=(0, 2, 0, 0))
    table.add_column("id", no_wrap=True)
    table.add_column("value", no_wrap=True)
    table.add_column("kind")
    table.add_column("shape", no_wrap=True)
    table.add_column("computed from")
    if view.groups:
        table.add_column("inside")
    table.add_column("line", no_wrap=True)
    by_id = {n.id: n for n in view.nodes}
    groups = {g.id: g.label for g in view.groups}
    operands: dict[str, list[str]] = {}
    for e in view.edges:
        mark = "" if e.differentiable else " (data)"
        operands.setdefault(e.target, []).append(by_id[e.source].label + mark)
    for n in view.nodes:
        others = [name for name in n.names if name != n.label]
        label = escape(n.label) + (f" [dim]({escape(', '.join(others))})[/]" if others else "") + \
            (" [bold](root)[/]" if n.id == view.root else "")
        if n.highlighted:
            label = f"[bold red]{label}[/]"
        kind = _kind(n)
        style = KIND_STYLE.get(n.kind)
        kind = f"[{style}]{escape(kind)}[/]" if style else escape(kind)
        src = operands.get(n.id, [])
        computed = f"{escape(n.op or '')} ← {escape(', '.join(src))}" if src else ""
        cells = [n.id, label, kind, shape_text(n.shape), computed]
        if view.groups:
            cells.append(escape(groups.get(n.group, "")))
        table.add_row(*cells, escape(_short(n.loc)))
    console.print(table)
    if view.highlight is not None:
        _highlight(view)


def _highlight(view: GraphView) -> None:
    console = out()
    h = view.highlight
    console.print(f"[bold]∂{escape(h.root)}/∂{escape(h.name)}[/]: {plural(h.path_count, 'path')}, drawn in red")
    for i, p in enumerate(h.paths, 1):
        extra = f"   [cyan]{escape(p.contribution)}[/]" if p.contribution else ""
        if p.symbolic:
            extra += f"   [dim]{escape(p.symbolic)}[/]"
        console.print(f"  {i}. {escape(' ← '.join(p.nodes))}{extra}")
    if h.path_count > len(h.paths):
        console.print(f"  [dim]{h.path_count - len(h.paths):,} more not listed[/]")
    for e in view.edges:
        if e.highlighted and e.label:
            console.print(f"  [dim]edge[/] {escape(e.label)}")
    if h.symbolic:
        total = f"  ∂{escape(h.root)}/∂{escape(h.name)} = {escape(h.symbolic)}"
        console.print(total + (f" = {escape(h.gradient)}" if h.gradient is not None else ""))
