"""`cgtool graph --format mermaid`: the view as a Mermaid flowchart (GitHub and many wikis draw it).

Nodes keep the JSON's ids (``n3``); shapes by kind (input: stadium, parameter: subroutine,
constant: cylinder, op: rounded, module call: box); module calls that computed several
values are subgraphs; data edges (no gradient) are dotted; highlighted paths are red."""
from __future__ import annotations

from ..graph.view import GraphView, ViewNode
from .graph_dot import HIGHLIGHT, shape_text

SHAPES = {"input": ('(["', '"])'), "parameter": ('[["', '"]]'), "constant": ('[("', '")]'), "op": ('("', '")'),
          "internal": ('("', '")'), "module": ('["', '"]')}


def text(s: str) -> str:
    """Mermaid label text: quotes and markup characters as entities."""
    return (s.replace("#", "#35;").replace("&", "#amp;").replace('"', "#quot;").replace("<", "#lt;").replace(">", "#gt;")
            .replace("|", "#124;"))


def _label(n: ViewNode) -> str:
    head = n.label + (f" ×{n.repeat}" if n.repeat else "")
    detail = shape_text(n.shape) if n.shape else ""
    if n.kind == "constant":
        detail += " constant"
    return text(head) + (f"<br/><small>{text(detail.strip())}</small>" if detail.strip() else "")


def to_mermaid(view: GraphView) -> str:
    lines = [f"flowchart {'LR' if view.source == 'expression' else 'TB'}"]
    children: dict[str | None, list] = {}
    for g in view.groups:
        children.setdefault(g.parent, []).append(g)
    members: dict[str | None, list[ViewNode]] = {}
    for n in view.nodes:
        members.setdefault(n.group, []).append(n)

    def emit(group_id, indent):
        for g in children.get(group_id, []):
            lines.append(f'{indent}subgraph {g.id}["{text(g.label)}"]')
            emit(g.id, indent + "  ")
            lines.append(f"{indent}end")
        for n in members.get(group_id, []):
            a, b = ('[["', '"]]') if n.repeat or n.folded > 1 else SHAPES.get(n.kind, SHAPES["op"])
            lines.append(f"{indent}{n.id}{a}{_label(n)}{b}")

    emit(None, "  ")
    marked = []
    for i, e in enumerate(view.edges):
        label = e.label if e.highlighted and e.label else e.op
        arrow = "-->" if e.differentiable else "-.->"
        lines.append(f'  {e.source} {arrow}|"{text(label)}"| {e.target}' if label else f"  {e.source} {arrow} {e.target}")
        if e.highlighted:
            marked.append(str(i))
    lines.append("  classDef parameter fill:#fff2b3,stroke:#b58900")
    lines.append("  classDef constant fill:#eeeeee,stroke:#777777,stroke-dasharray:4 3")
    lines.append("  classDef input fill:#dbe9f6,stroke:#3b6ea5")
    lines.append("  classDef module fill:#d9f0d3,stroke:#2e7d32")
    for kind in ("parameter", "constant", "input", "module"):
        ids = [n.id for n in view.nodes if n.kind == kind]
        if ids:
            lines.append(f"  class {','.join(ids)} {kind}")
    if marked:
        lines.append(f"  classDef highlighted stroke:{HIGHLIGHT},stroke-width:3px")
        lines.append(f"  class {','.join(n.id for n in view.nodes if n.highlighted)} highlighted")
        lines.append(f"  linkStyle {','.join(marked)} stroke:{HIGHLIGHT},stroke-width:3px,color:{HIGHLIGHT}")
    return "\n".join(lines) + "\n"
