"""`cgtool graph --format html`: one self-contained page (no network, no CDN: everything inline).

The layout is Graphviz's (the same SVG as ``--format svg``), and a small script
(``assets/graph.js``, about 12 KB) adds pan and zoom, hover details (shape, value summary,
spec line), a parameter's gradient paths with their contributions on click, collapsing and
expanding module boxes, and a search box. A folded node (a repeated block ×N, a --depth fold)
opens on click: the page carries, for each (up to 8), the view with it drawn open, laid out
by Graphviz too (a repeated block shows its first copy in full and the others still folded). Graphviz lays out graphs of hundreds of nodes
better than a JavaScript layout a page could carry in a few kilobytes, and the page stays
small: a graph library from npm (dagre, cytoscape, elk) would add 100 KB to 1 MB to every file.
"""
from __future__ import annotations

import html
import json
import re
from importlib import resources

from ..graph.view import GraphView
from .console import to_jsonable
from .graph_dot import layout, to_dot
from .graph_json import graph_json
from .units import plural


def _asset(name: str) -> str:
    return resources.files("cgtool.render").joinpath("assets", name).read_text(encoding="utf-8")


def _inline_svg(svg: str) -> str:
    """Graphviz's SVG without its XML prologue, sized by the page (the script moves its viewBox)."""
    start = svg.find("<svg")
    svg = svg[start:]
    head_end = svg.find(">")
    head = re.sub(r'\s(width|height)="[^"]*"', "", svg[:head_end])
    return head + ' preserveAspectRatio="xMidYMid meet"' + svg[head_end:]


def _script_json(data) -> str:
    return json.dumps(to_jsonable(data), ensure_ascii=False).replace("</", "<\\/")


def to_html(view: GraphView, svg: str | None = None) -> str:
    svg = svg if svg is not None else layout(to_dot(view), "svg").decode("utf-8")
    data = graph_json(view)
    data["variants"] = {}
    templates = []
    for i, (label, variant) in enumerate(view.variants.items()):
        # the view with one folded node drawn open: its own layout, shown when that node is clicked
        data["variants"][label] = {**graph_json(variant), "template": f"cg-variant-{i}"}
        templates.append(f'<template id="cg-variant-{i}">{_inline_svg(layout(to_dot(variant), "svg").decode())}'
                         "</template>")
    facts = (f"{plural(len(view.nodes), 'node')}, {plural(len(view.edges), 'edge')} at the {view.level} level; "
             f"{plural(view.values, 'value')} in this input's graph")
    warning = ""
    if view.data_dependent:
        flows = []
        for c in view.control_flow:
            if c.runs is None:
                continue
            ran = f"the loop ran {plural(c.held, 'time')}" if c.kind == "while" else f"held {c.held} of {plural(c.runs, 'time')}"
            flows.append(f"<code>{html.escape(c.kind)} {html.escape(c.text)}</code>"
                         f"{' (' + html.escape(c.loc) + ')' if c.loc else ''}: {ran}")
        warning = ('<div id="warning"><b>Data-dependent control flow.</b> The forward branches on tensor values, so '
                   f"this graph ({plural(view.values, 'value')}) is for this input; another input can give another "
                   "graph. " + "; ".join(flows) + "</div>")
    title = html.escape(view.title)
    hint = ('<h2>How to read it</h2><p class="hint">Values are nodes, operations are edges; data flows along '
            "the arrows. Yellow boxes are parameters, grey dashed boxes constants (not trained), blue ovals inputs, "
            "green boxes module calls.</p><p class=\"hint\">Click a parameter or an input: its gradient paths from "
            "the root, with their contributions. Click a module box to collapse or expand it. Hover a node for its "
            "shape, values and spec line. Click a folded node (a 3-D box, ×N for repeated blocks) to draw it open. "
            "Scroll to zoom, drag to pan, Esc to clear.</p>")
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title} — cgtool graph</title>
<style>
{_asset("graph.css")}
</style>
</head>
<body>
<header>
<h1>{title}</h1>
<span class="facts" id="facts">{html.escape(facts)}</span>
<input id="search" type="search" placeholder="search names (Enter to go)" aria-label="search names">
<span id="matches" class="facts"></span>
<button id="fit" type="button">fit</button>
<button id="fold" type="button" hidden>fold it again</button>
</header>
{warning}
<main>
<div id="canvas">
{_inline_svg(svg)}
<div id="tip"></div>
</div>
<aside id="panel">{hint}</aside>
</main>
{"".join(templates)}
<script type="application/json" id="cg-data">{_script_json(data)}</script>
<script>
{_asset("graph.js")}
</script>
</body>
</html>
"""
