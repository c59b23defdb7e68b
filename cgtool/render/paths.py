"""Rendering of `cgtool paths`: the paths of one parameter, or one row per parameter; and their JSON."""
from __future__ import annotations

from rich.markup import escape
from rich.table import Table

from ..graph.model_paths import AllParameters, ParameterPaths
from .console import out, print_json
from .units import plural


def paths_json(r: ParameterPaths) -> dict:
    return {
        "wrt": r.wrt, "root": r.root, "loss": r.loss, "level": r.level, "path_count": r.path_count,
        "grad_norm": r.grad_norm, "sum_matches_grad": r.sum_matches_grad, "checked_by": r.checked_by,
        "paths": [{"nodes": p.nodes, "contribution_norm": p.contribution_norm} for p in r.paths],
        "left_out": r.left_out,
        "by_length": r.by_length,
        "by_length_matches": r.by_length_matches,
    }


def all_json(a: AllParameters) -> dict:
    return {
        "root": a.root, "loss": a.loss, "level": a.level,
        "parameters": [{"name": p.name, "path_count": p.path_count, "grad_norm": p.grad_norm, "uses": p.uses,
                        "reached": p.reached, "why": p.why} for p in a.parameters],
    }


def render_paths(r, *, json: bool) -> None:
    if isinstance(r, AllParameters):
        print_json(all_json(r)) if json else _all_text(r)
    else:
        print_json(paths_json(r)) if json else _paths_text(r)


def _loss_line(root: str, loss: str | None) -> str:
    if loss:
        return f"root {escape(root)} (the output is not a scalar: reduced with --loss {loss})"
    return f"root {escape(root)}"


def _paths_text(r: ParameterPaths) -> None:
    console = out()
    console.print(f"[bold]∂{escape(r.root)}/∂{escape(r.wrt)}[/]: {plural(r.path_count, 'path')} at the "
                  f"{r.level} level   gradient norm {r.grad_norm:.6g}")
    console.print(f"[dim]{_loss_line(r.root, r.loss)}[/]")
    for i, p in enumerate(r.paths, 1):
        console.print(f"  {i}. {escape(' ← '.join(p.nodes))}   [cyan]|contribution| {p.contribution_norm:.6g}[/]")
    if r.left_out:
        console.print(f"  [dim]{r.left_out:,} more not listed (--max-paths N lists more)[/]")
    if r.by_length:
        _spectrum_text(r)
    if r.checked_by == "listed paths":
        what = "the listed paths' contributions " + ("add up to" if r.sum_matches_grad else "do not add up to")
    else:
        what = "the sum over all paths (linear-time) " + ("equals" if r.sum_matches_grad else "differs from")
    verdict = "[green]✓[/]" if r.sum_matches_grad else "[bold red]✗[/]"
    console.print(f"  {verdict} {what} autograd's gradient")


def _all_text(a: AllParameters) -> None:
    console = out()
    console.print(f"[dim]{_loss_line(a.root, a.loss)}; paths at the {a.level} level[/]")
    table = Table("parameter", "paths", "uses", "grad norm", "reached", box=None, header_style="dim",
                  pad_edge=False, padding=(0, 2, 0, 0))
    for p in a.parameters:
        reached = "yes" if p.reached else f"[yellow]no[/]: {escape(p.why or '')}"
        table.add_row(escape(p.name), f"{p.path_count:,}", str(p.uses), f"{p.grad_norm:.4g}", reached)
    console.print(table)
    unreached = [p.name for p in a.parameters if not p.reached]
    if unreached:
        console.print(f"[yellow]{plural(len(unreached), 'parameter')} get no gradient[/] "
                      "(DistributedDataParallel would need find_unused_parameters=True): "
                      + escape(", ".join(unreached)))


def _spectrum_text(r: ParameterPaths) -> None:
    console = out()
    sampled = any("sampled_mean_path_norm" in row for row in r.by_length)
    table = Table("length", "paths", "|sum of contributions|", "share of |gradient|", box=None, header_style="dim",
                  pad_edge=False, padding=(0, 2, 0, 2))
    if sampled:
        table.add_column("sampled mean |path|")
    for row in r.by_length:
        cells = [str(row["length"]), f"{row['count']:,}", f"{row['contribution_norm']:.4g}", f"{row['share']:.1%}"]
        if sampled:
            mean = row.get("sampled_mean_path_norm")
            cells.append("-" if mean is None else f"{mean:.4g}")
        table.add_row(*cells)
    console.print("  path-length spectrum (length: module calls counted along the path)")
    console.print(table)
    verdict = "[green]✓[/] the per-length sums add up to the gradient" if r.by_length_matches else \
        "[bold red]✗[/] the per-length sums do not add up to the gradient"
    console.print(f"  {verdict}")
