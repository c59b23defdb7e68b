"""`cgtool graph --format dot|svg|png`: the view in Graphviz's DOT language, laid out by the real `dot` program.

Values are nodes and operations are edges, as in the lesson's picture; data flows along
the arrows (operand → result). Inputs are ellipses, parameters yellow boxes, constants
grey dashed boxes (not trained), module calls green boxes, repeated blocks folded into
one 3-D box marked ×N; a module call that computed several values is a box (cluster)
around them. Highlighted paths are red, their edges labelled with local derivatives.
Node, edge and box ids in the SVG are the JSON's (``n3``, ``e4``, ``g0``).
"""
from __future__ import annotations

import shutil
import subprocess

from ..errors import CgError
from ..graph.view import GraphView, ViewNode

HIGHLIGHT = "#d62728"
STYLE = {  # kind -> node attributes
    "input": {"shape": "ellipse", "style": "filled", "fillcolor": "#dbe9f6", "color": "#3b6ea5"},
    "parameter": {"shape": "box", "style": "rounded,filled", "fillcolor": "#fff2b3", "color": "#b58900"},
    "constant": {"shape": "box", "style": "rounded,filled,dashed", "fillcolor": "#eeeeee", "color": "#777777"},
    "op": {"shape": "ellipse", "style": "filled", "fillcolor": "#ffffff", "color": "#555555"},
    "internal": {"shape": "ellipse", "style": "filled", "fillcolor": "#f7f7f7", "color": "#999999",
                 "fontcolor": "#555555"},
    "module": {"shape": "box", "style": "rounded,filled", "fillcolor": "#d9f0d3", "color": "#2e7d32"},
    "folded": {"shape": "box3d", "style": "filled", "fillcolor": "#c7e9c0", "color": "#2e7d32"},
}
RENDERER_FORMATS = ("svg", "png")
LAYOUT_SECONDS = 120


def quote(text: str) -> str:
    """A DOT string: double-quoted, with backslashes and quotes escaped."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def shape_text(shape: list[int]) -> str:
    return "[" + ", ".join(str(s) for s in shape) + "]" if shape else "scalar"


def node_label(n: ViewNode) -> str:
    title = n.label + (f"  ×{n.repeat}" if n.repeat else "")
    lines = [title]
    detail = shape_text(n.shape) if n.shape or n.kind not in ("op", "input") else ""
    if n.value and "value" in n.value and not n.shape:
        detail = f"= {n.value['value']:.4g}"
    if n.kind == "constant":
        detail = (detail + "  " if detail else "") + "constant, not trained"
    elif n.folded > 1 and not n.repeat:
        detail = (detail + "  " if detail else "") + f"{n.folded} values folded"
    elif n.repeat:
        detail = (detail + "  " if detail else "") + f"{n.folded} values folded"
    if detail:
        lines.append(detail)
    return "\n".join(lines)


def node_tooltip(n: ViewNode) -> str:
    parts = [f"{n.label} ({n.kind})", f"shape {shape_text(n.shape)}" + (f" {n.dtype}" if n.dtype else "")]
    if n.names and n.names != [n.label]:
        parts.append("named " + ", ".join(n.names))
    if n.text and n.text != n.label:
        parts.append(n.text)
    if n.loc:
        parts.append(n.loc)
    return "\n".join(parts)


def to_dot(view: GraphView) -> str:
    rankdir = "LR" if view.source == "expression" else "TB"
    lines = [
        "digraph cgtool {",
        f"  graph [rankdir={rankdir}, fontname=\"Helvetica\", fontsize=12, nodesep=0.35, ranksep=0.45, pad=0.2, "
        f"label={quote(_caption(view))}, labelloc=t, labeljust=l, id=\"graph\"];",
        '  node [fontname="Helvetica", fontsize=11, margin="0.12,0.05", height=0.35];',
        '  edge [fontname="Helvetica", fontsize=10, color="#555555", arrowsize=0.7];',
    ]
    children: dict[str | None, list] = {}
    for g in view.groups:
        children.setdefault(g.parent, []).append(g)
    members: dict[str | None, list[ViewNode]] = {}
    for n in view.nodes:
        members.setdefault(n.group, []).append(n)

    def emit(group_id: str | None, indent: str) -> None:
        for g in children.get(group_id, []):
            lines.append(f"{indent}subgraph cluster_{g.id} {{")
            lines.append(f"{indent}  id={quote(g.id)}; label={quote(g.label)}; style=\"rounded,dashed\"; "
                         f"color=\"#2e7d32\"; fontcolor=\"#2e7d32\"; fontsize=11; tooltip={quote(g.label)};")
            emit(g.id, indent + "  ")
            lines.append(f"{indent}}}")
        for n in members.get(group_id, []):
            lines.append(f"{indent}{_node(n)}")

    emit(None, "  ")
    inputs = [n.id for n in view.nodes if n.kind == "input" and n.group is None]
    if inputs and view.source == "spec":  # inputs on the first rank, apart from the parameters
        lines.append(f"  {{rank=source; {'; '.join(inputs)}}}")
    for e in view.edges:
        attrs = [f"id={quote(e.id)}"]
        label = e.label if e.highlighted and e.label else e.op
        if label:
            attrs.append(f"label={quote(' ' + label + ' ')}")
        if not e.differentiable:
            attrs.append('style=dashed, tooltip="data only: no gradient flows along this edge"')
        if e.highlighted:
            attrs.append(f'color="{HIGHLIGHT}", fontcolor="{HIGHLIGHT}", penwidth=2.4')
        lines.append(f"  {e.source} -> {e.target} [{', '.join(attrs)}];")
    lines.append("}")
    return "\n".join(lines) + "\n"


def _node(n: ViewNode) -> str:
    attrs = {"id": n.id, "label": node_label(n)}
    attrs.update(STYLE["folded"] if n.repeat or n.folded > 1 else STYLE.get(n.kind, STYLE["op"]))
    attrs["tooltip"] = node_tooltip(n)
    if n.highlighted:
        attrs.update(color=HIGHLIGHT, penwidth="2.4")
    return f"{n.id} [{', '.join(f'{k}={quote(v)}' for k, v in attrs.items())}];"


def _caption(view: GraphView) -> str:
    text = view.title
    if view.highlight is not None:
        h = view.highlight
        text += f"\n{h.path_count:,} path{'s' if h.path_count != 1 else ''} from {h.root} to {h.name}"
        if h.symbolic:
            text += f":  ∂{h.root}/∂{h.name} = {h.symbolic}"
            if h.gradient is not None:
                text += f" = {h.gradient}"
    if view.data_dependent:
        text += f"\ndata-dependent control flow: this graph ({view.values} values) is for this input"
    return text


# --------------------------------------------------------------------------- the renderer


def dot_program() -> str:
    path = shutil.which("dot")
    if path is None:
        raise CgError("this format needs Graphviz's `dot` program, and it is not installed", "--format",
                      hint="install the Graphviz package (Debian/Ubuntu: apt-get install graphviz; macOS: brew "
                      "install graphviz), or use --format text, dot, mermaid or json, which need no renderer")
    return path


def layout(dot_text: str, fmt: str, *, dpi: int | None = None) -> bytes:
    """Run `dot -T<fmt>` on *dot_text*; its output. A missing or failing `dot` is a CgError."""
    args = [dot_program(), f"-T{fmt}"]
    if dpi:
        args.append(f"-Gdpi={dpi}")
    try:
        done = subprocess.run(args, input=dot_text.encode("utf-8"), capture_output=True, timeout=LAYOUT_SECONDS,
                              check=False)
    except subprocess.TimeoutExpired:
        raise CgError(f"Graphviz's dot took more than {LAYOUT_SECONDS} s to lay the graph out", "--format",
                      hint="draw less: --depth 1, or --level module") from None
    except OSError as e:
        raise CgError(f"cannot run Graphviz's dot: {e.strerror}", "--format") from None
    if done.returncode != 0:
        message = done.stderr.decode("utf-8", "replace").strip().splitlines()
        raise CgError(f"Graphviz's dot failed: {message[0] if message else f'exit {done.returncode}'}", "--format",
                      hint="this is a bug in cgtool's DOT output; --format dot shows it")
    return done.stdout
