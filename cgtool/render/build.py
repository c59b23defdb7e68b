"""Rendering of `cgtool build`: the module tree, constants, free parameters, totals, check."""
from __future__ import annotations

from dataclasses import asdict

from rich.markup import escape
from rich.syntax import Syntax
from rich.table import Table
from rich.tree import Tree

from .units import human_bytes
from ..inspect.structure import TreeNode, Structure
from .console import out, print_json


def _shape(shapes) -> str:
    if not shapes:
        return ""
    return ", ".join(str(s) for s in shapes)


def _label(n: TreeNode, root: bool = False) -> str:
    parts = []
    if root:
        parts.append(f"[bold]{escape(n.name)}[/]")
        if n.type != n.name:
            parts.append(f"[dim]{escape(n.type)}[/]")
    else:
        parts.append(f"[bold]{escape(n.name)}[/]")
        parts.append(escape(n.text))
    if n.output_shapes:
        parts.append(f"→ {escape(_shape(n.output_shapes))}")
    if n.params:
        parts.append(f"[cyan]{n.params:,} params[/]")
    if n.calls > 1:
        parts.append(f"[magenta]called {n.calls}×[/]")
    if n.shared_with:
        parts.append(f"[yellow]same module as {escape(', '.join(n.shared_with))}[/]")
    for own, others in n.tied.items():
        parts.append(f"[yellow]{escape(own)} tied to {escape(', '.join(others))}[/]")
    return "  ".join(parts)


def _add(tree: Tree, n: TreeNode, depth: int, max_depth: int | None):
    if max_depth is not None and depth > max_depth:
        return
    branch = tree.add(_label(n))
    if n.shared_with and not n.children and n.params:
        return
    children = n.children
    if n.repeat and len(children) > 1 and (max_depth is None or depth < max_depth):
        _add(branch, children[0], depth + 1, max_depth)
        rest = children[1:]
        total = sum(c.params for c in rest)
        branch.add(f"[dim]… {len(rest)} more copies ({rest[0].name}–{rest[-1].name}), "
                   f"{total:,} params[/]")
        return
    for c in children:
        _add(branch, c, depth + 1, max_depth)


def render_structure(s: Structure, *, max_depth: int | None = None, show_code: bool = False) -> None:
    console = out()
    tree = Tree(_label(s.root, root=True) + f"  [dim]({escape(s.kind)}, {escape(s.file)})[/]")
    for c in s.root.children:
        _add(tree, c, 1, max_depth)
    console.print(tree)
    if s.constants:
        t = Table(title="constants (buffers, not trained)", title_justify="left", show_edge=False)
        for col in ("name", "shape", "numel", "dtype"):
            t.add_column(col, justify="right" if col == "numel" else "left")
        for b in s.constants:
            t.add_row(escape(b.name), str(b.shape), f"{b.numel:,}", b.dtype)
        console.print(t)
    if s.layer_buffers:
        kinds = sorted({b.name.rsplit(".", 1)[-1] for b in s.layer_buffers})
        console.print(f"layer buffers: {len(s.layer_buffers):,} ({escape(', '.join(kinds[:4]))}"
                      f"{', ...' if len(kinds) > 4 else ''}), in `cgtool params`")
    if s.parameters:
        t = Table(title="free parameters", title_justify="left", show_edge=False)
        for col in ("name", "shape", "numel", "trainable"):
            t.add_column(col, justify="right" if col == "numel" else "left")
        for p in s.parameters:
            t.add_row(escape(p.name), str(p.shape), f"{p.numel:,}", "yes" if p.trainable else "no")
        console.print(t)
    non_trainable = s.total_params - s.trainable_params
    console.print(f"parameters: [bold]{s.total_params:,}[/] ({s.trainable_params:,} trainable, "
                  f"{non_trainable:,} non-trainable)   buffers: {s.buffer_numel:,} values   "
                  f"size: {human_bytes(s.bytes)}   device: {escape(s.device)}   dtype: {s.dtype}")
    ins = ", ".join(f"{escape(n)} {i['shape']}" for n, i in s.inputs.items())
    check = s.check
    if check["status"] == "passed":
        outs = ", ".join(str(o["shape"]) for o in s.outputs)
        how = "meta tensors" if check.get("how") == "meta" else "small real tensors"
        console.print(f"shape check: [green]passed[/] on {how}   inputs: {ins or '-'}   outputs: {escape(outs)}")
    elif check["status"] == "skipped":
        console.print(f"shape check: [yellow]skipped[/] — {escape(check['reason'] or '')}")
    if s.dynamic:
        where = "; ".join(f"{escape(d['line'])} {d['kind']} {escape(d['text'])}" for d in s.dynamic)
        console.print(f"graph: [yellow]dynamic[/] — control flow reads tensor values ({where}): the graph depends on "
                      "the data, and a static capture would bake in one branch")
    else:
        console.print("graph: static — no condition or loop bound reads a tensor's value")
    if show_code:
        for name, code in s.code:
            console.print(f"\n[bold]# generated forward of {escape(name)}[/]")
            console.print(Syntax(code, "python", theme="ansi_dark", background_color="default"))


def _node_json(n: TreeNode) -> dict:
    return {"path": n.path, "name": n.name, "type": n.type, "text": n.text, "params": n.params,
            "own_params": n.own_params, "output_shapes": n.output_shapes, "calls": n.calls,
            "shared_with": n.shared_with, "tied": n.tied, "repeat": n.repeat, "children": [_node_json(c) for c in n.children]}


def structure_json(s: Structure, *, show_code: bool = False) -> dict:
    data = {
        "name": s.name, "kind": s.kind, "file": s.file, "device": s.device, "dtype": s.dtype, "inputs": s.inputs,
        "tree": _node_json(s.root),
        "constants": [asdict(b) for b in s.constants],
        "layer_buffers": [asdict(b) for b in s.layer_buffers],
        "parameters": [asdict(p) for p in s.parameters],
        "total_params": s.total_params, "trainable_params": s.trainable_params,
        "non_trainable_params": s.total_params - s.trainable_params,
        "buffers": s.buffer_numel, "bytes": s.bytes, "check": s.check, "outputs": s.outputs,
        "graph": "dynamic" if s.dynamic else "static", "dynamic": s.dynamic,
    }
    if show_code:
        data["code"] = {name: code for name, code in s.code}
    return data


def render_build(report, *, json: bool, max_depth: int | None = None, show_code: bool = False) -> None:
    """`cgtool build`: the tree (or its JSON), and where the weights were saved when asked."""
    saved = getattr(report, "saved", None)
    if json:
        data = structure_json(report, show_code=show_code)
        if saved:
            data["saved"] = saved
        print_json(data)
        return
    render_structure(report, max_depth=max_depth, show_code=show_code)
    if saved:
        out().print(f"saved state_dict to {saved}", markup=False)
