"""Rendering of `cgtool grad`: the graph, the paths per wrt, the sum and the autograd check; and JSON."""
from __future__ import annotations

from collections import Counter

import torch
from rich.markup import escape
from rich.table import Table

from ..graph.gradients import Factor, GradientPaths, Explanation, PathReport
from ..graph.symbolic import operand
from .console import out
from .units import plural

MAX_GRAPH_ROWS = 60  # values shown in the graph table; the rest are counted
MAX_ELEMENTS_SHOWN = 24  # tensor elements printed in full


# --------------------------------------------------------------------------- numbers


def fmt(x) -> str:
    """A number as short as it is exact enough: 5.0 → 5, 0.1 + 0.2 → 0.3."""
    if x is None:
        return "?"
    if isinstance(x, torch.Tensor):
        if x.numel() > MAX_ELEMENTS_SHOWN:
            t = x.double()
            return (f"tensor{list(x.shape)} (norm {fmt(float(torch.linalg.vector_norm(t)))}, "
                    f"min {fmt(float(t.min()))}, max {fmt(float(t.max()))})")
        return _nested(x.tolist())
    if isinstance(x, float):
        if x != x or x in (float("inf"), float("-inf")):
            return str(x)
        if x.is_integer() and abs(x) < 1e16:
            return str(int(x))
        return f"{x:.10g}"
    return str(x)


def _nested(v) -> str:
    if isinstance(v, list):
        return "[" + ", ".join(_nested(x) for x in v) + "]"
    return fmt(float(v))


def jsonable(x):
    """Numbers for scalars, nested lists for tensors."""
    if isinstance(x, torch.Tensor):
        return x.detach().tolist()
    return x


# --------------------------------------------------------------------------- JSON


def grad_json(report: Explanation) -> dict:
    """The documented JSON shape: root, value, and per wrt the check and the listed paths."""
    return {
        "root": report.root,
        "value": jsonable(report.value),
        "gradients": [_gradient_json(report, g) for g in report.gradients],
    }


def _gradient_json(report: Explanation, g: GradientPaths) -> dict:
    return {
        "wrt": g.wrt,
        "autograd": jsonable(g.autograd),
        # without values the answer is symbolic: the sum over paths as a formula (null when omitted)
        "sum_over_paths": jsonable(g.sum_over_paths) if report.numeric else g.symbolic,
        "match": g.match,
        "path_count": g.path_count,
        "paths": [
            {
                "nodes": p.nodes,
                "factors": [
                    {"from": f.src, "to": f.dst, "op": f.op, "slot": f.slot, "value": jsonable(f.value),
                     "symbolic": f.symbolic}
                    for f in p.factors
                ],
                "contribution": jsonable(p.contribution),
                "symbolic": p.symbolic,
            }
            for p in g.paths
        ],
    }


# --------------------------------------------------------------------------- text


def render_grad(report: Explanation) -> None:
    console = out()
    console.print(f"[bold]{escape(report.expression.strip())}[/]")
    if not report.numeric:
        console.print("[dim]no --at values: the symbolic answer alone "
                      "(give every leaf a value, e.g. --at w=1, for numbers and the autograd check)[/]")
    console.print()
    _render_graph(report)
    multi = Counter((e.src, e.dst) for e in report.edges)
    for g in report.gradients:
        console.print()
        _render_gradient(report, g, multi)


def _render_graph(report: Explanation) -> None:
    console = out()
    leaves = sum(1 for n in report.nodes if n.definition is None)
    edges = sum(e.differentiable for e in report.edges)
    console.print(f"[bold]Graph[/]: {plural(len(report.nodes), 'value')} (nodes), {plural(edges, 'edge')} "
                  f"(one per operand of each operation), {plural(leaves, 'leaf', 'leaves')}")
    table = Table(box=None, show_header=True, header_style="dim", pad_edge=False, padding=(0, 2, 0, 0))
    table.add_column("value")
    if report.numeric:
        table.add_column("=", overflow="fold")
    if any(n.shape for n in report.nodes):
        table.add_column("shape")
    table.add_column("computed as", overflow="fold")
    table.add_column("edges (operation → operand)", overflow="fold")
    operands: dict[str, list[str]] = {}
    for e in report.edges:
        arrow = "→" if e.differentiable else "⇢"
        operands.setdefault(e.src, []).append(f"{escape(e.op)} {arrow} {escape(e.dst)}")
    nodes = report.nodes
    shown = nodes if len(nodes) <= MAX_GRAPH_ROWS else nodes[: MAX_GRAPH_ROWS // 2] + nodes[-MAX_GRAPH_ROWS // 2:]
    for i, n in enumerate(shown):
        if len(nodes) > MAX_GRAPH_ROWS and i == MAX_GRAPH_ROWS // 2:
            table.add_row(f"[dim]… {len(nodes) - MAX_GRAPH_ROWS} more values[/]")
        name = f"[bold]{escape(n.label)}[/]" + (" [dim](root)[/]" if n.label == report.root_label else "")
        row = [name]
        if report.numeric:
            row.append(escape(fmt(n.value)))
        if any(m.shape for m in report.nodes):
            row.append(escape(str(n.shape)) if n.shape else "")
        row.append("[dim]leaf[/]" if n.definition is None else escape(n.definition))
        row.append(", ".join(operands.get(n.label, [])) if n.definition is not None else "")
        table.add_row(*row)
    console.print(table)
    for label in report.nondifferentiable:
        console.print(f"[yellow]note:[/] {escape(label)} is made by an operation with no derivative "
                      "(⇢: data only): no gradient flows through it")
    if report.aliases:
        console.print("[dim]aliases (no node of their own): "
                      + escape(", ".join(f"{a} = {b}" for a, b in report.aliases.items())) + "[/]")
    root = report.root if report.root == report.root_label else f"{report.root} (= {report.root_label})"
    if report.numeric:
        console.print(f"root [bold]{escape(root)}[/] = {escape(fmt(report.value))}")
    else:
        console.print(f"root [bold]{escape(root)}[/]")


def _render_gradient(report: Explanation, g: GradientPaths, multi: Counter) -> None:
    console = out()
    d = f"∂{operand(report.root_label)}/∂{operand(g.wrt)}"
    noun = "path" if g.path_count == 1 else "paths"
    console.print(f"[bold]{escape(d)}[/]: {g.path_count:,} {noun} from {escape(report.root_label)} "
                  f"to {escape(g.wrt)}")
    if g.path_count == 0:
        console.print(f"  {escape(report.root_label)} does not depend on {escape(g.wrt)}: the gradient is 0")
    for i, p in enumerate(g.paths, 1):
        _render_path(i, p, multi)
    if g.not_listed:
        order = ("largest |contribution| first" if g.exact_order
                 else "ordered by a magnitude estimate (tensor paths; not guaranteed largest first)")
        if not g.by_magnitude:
            order = "in graph order"
        console.print(f"  [dim]{g.not_listed:,} more {'path' if g.not_listed == 1 else 'paths'} not listed "
                      f"(listed {len(g.paths)}, {order}; --max-paths N lists more)[/]")
    elif g.paths and g.by_magnitude and len(g.paths) > 1:
        console.print("  [dim]listed largest |contribution| first[/]")
    if g.cancellation:
        console.print(f"  [yellow]warning:[/] {escape(g.cancellation)}")
    if report.numeric:
        console.print(f"  sum over paths  {escape(fmt(g.sum_over_paths))}")
        console.print(f"  autograd        {escape(fmt(g.autograd))}")
        verdict = "[green]✓ they agree[/]" if g.match else "[bold red]✗ they disagree[/]"
        console.print(f"  {verdict}")
    if g.symbolic is not None:
        console.print(f"  symbolic        {escape(d)} = {escape(g.symbolic)}")
    elif g.symbolic_note:
        console.print(f"  [dim]{escape(g.symbolic_note)}[/]")


def _render_path(i: int, p: PathReport, multi: Counter) -> None:
    console = out()
    head = f"  {i}. [bold]{escape(' → '.join(p.nodes))}[/]"
    if p.contribution is not None:
        head += f"   contribution {escape(fmt(p.contribution))}"
    if p.product is not None:
        head += f"   [cyan]{escape(p.product)}"
        if p.symbolic is None:
            head += " [dim]= … (not written out in the leaves)[/]"
        elif p.symbolic != p.product:
            head += f" = {escape(p.symbolic)}"
        head += "[/]"
    console.print(head)
    for f in p.factors:
        console.print(f"       {_factor_text(f, multi)}")


def _factor_text(f: Factor, multi: Counter) -> str:
    text = f"∂{operand(f.src)}/∂{operand(f.dst)}"
    if multi[(f.src, f.dst)] > 1:
        text += f" (operand {f.slot + 1} of {f.op})"
    parts = [escape(text)]
    if f.symbolic is not None:
        parts.append(escape(f.symbolic))
    if f.value is not None and not (f.symbolic is not None and f.symbolic == fmt(f.value)):
        label = "Jacobian " if isinstance(f.value, torch.Tensor) else ""
        parts.append(escape(label + fmt(f.value)))
    return " = ".join(parts)
