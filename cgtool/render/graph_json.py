"""`cgtool graph --format json`: the view as plain JSON, with stable keys.

``nodes``: ``id``, ``label``, ``kind``, ``shape`` (and dtype, op, text, loc, names, calls,
trainable, value, group, folded, repeat, members, highlighted); ``edges``: ``id``,
``source`` (the operand), ``target`` (the value computed from it), ``op``, ``slot``,
``differentiable``, ``label``, ``highlighted``. Keys are only ever added, never renamed."""
from __future__ import annotations

from dataclasses import asdict

from ..graph.view import GraphView, Highlight


def highlight_json(h: Highlight | None) -> dict | None:
    if h is None:
        return None
    return {"name": h.name, "root": h.root, "path_count": h.path_count, "path_count_text": f"{h.path_count:,}",
            "nodes": h.nodes, "edges": h.edges,
            "paths": [asdict(p) for p in h.paths], "symbolic": h.symbolic, "gradient": h.gradient,
            "edge_labels": h.edge_labels}


def graph_json(view: GraphView) -> dict:
    return {
        "title": view.title,
        "source": view.source,
        "level": view.level,
        "root": view.root,
        "values": view.values,
        "data_dependent": view.data_dependent,
        "control_flow": [asdict(c) for c in view.control_flow],
        "depth": view.depth,
        "expand": view.expand,
        "repeats": view.repeats,
        "opened": view.opened,
        "nodes": [asdict(n) for n in view.nodes],
        "edges": [asdict(e) for e in view.edges],
        "groups": [asdict(g) for g in view.groups],
        "highlight": highlight_json(view.highlight),
        "parameters": {name: highlight_json(h) for name, h in view.parameters.items()},
    }
