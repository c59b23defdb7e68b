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
        "left_out": r.left_out, "order": r.order, "reason": r.reason, "same_tensor_as": r.same_tensor_as,
        "by_length": r.by_length,
        "by_length_matches": r.by_length_matches,
        "by_length_check": r.by_length_check,
    }


def all_json(a: AllParameters) -> dict:
    return {
        "root": a.root, "loss": a.loss, "level": a.level,
        "parameters": [{"name": p.name, "path_count": p.path_count, "grad_norm": p.grad_norm, "uses": p.uses,
                        "reached": p.reached, "why": p.why, "tied": p.tied} for p in a.parameters],
    }


def render_paths(r, *, json: bool) -> None:
    if isinstance(r, AllParameters):
        print_json(all_json(r)) if json else _all_text(r)
    else:
        print_json(paths_json(r)) if json else _paths_text(r)


def _loss_line(root: str, loss: str | None, given: bool) -> str:
    what = "--root" if given else "the output"
    if loss:
        return f"root {escape(root)} ({what} is not a scalar: reduced with --loss {loss})"
    return f"root {escape(root)}" + (" (--root)" if given else "")


def _paths_text(r: ParameterPaths) -> None:
    console = out()
    console.print(f"[bold]∂{escape(r.root)}/∂{escape(r.wrt)}[/]: {plural(r.path_count, 'path')} at the "
                  f"{r.level} level   gradient norm {r.grad_norm:.6g}")
    console.print(f"[dim]{_loss_line(r.root, r.loss, r.root_given)}[/]")
    if r.same_tensor_as:
        console.print(f"[dim]{escape(r.wrt)} is tied: the same tensor as {escape(r.same_tensor_as)}, whose every "
                      "use counts[/]")
    if r.reason:
        console.print(f"  [yellow]{escape(r.reason)}[/]")
    if r.paths and r.order != "exact":
        console.print(f"  [dim]the largest of {plural(r.path_count, 'path')} as found by a best-first search "
                      "(too many to compare them all: the order is approximate)[/]")
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
    console.print(f"[dim]{_loss_line(a.root, a.loss, a.root_given)}; paths at the {a.level} level[/]")
    table = Table("parameter", "paths", "uses", "grad norm", "reached", box=None, header_style="dim",
                  pad_edge=False, padding=(0, 2, 0, 0))
    table.columns[0].overflow = "fold"  # a long qualified name wraps rather than loses its end
    for p in a.parameters:
        reached = "yes" if p.reached else f"[yellow]no[/]: {escape(p.why or '')}"
        name = escape(p.name) + (f" [dim](= {escape(', '.join(p.tied))})[/]" if p.tied else "")
        table.add_row(name, f"{p.path_count:,}", str(p.uses), f"{p.grad_norm:.4g}", reached)
    console.print(table)
    unreached = [p.name for p in a.parameters if not p.reached]
    if unreached:
        console.print(f"[yellow]{plural(len(unreached), 'parameter')} get no gradient[/] "
                      "(DistributedDataParallel would need find_unused_parameters=True): "
                      + escape(", ".join(unreached)))


def _number(x, fmt: str) -> str:
    return "-" if x is None else format(x, fmt)


def _spectrum_text(r: ParameterPaths) -> None:
    console = out()
    sampled = any("sampled_mean_path_norm" in row for row in r.by_length)
    table = Table("length", "paths", "|sum|", "share", box=None, header_style="dim", pad_edge=False,
                  padding=(0, 2, 0, 2))
    table.columns[1].overflow = "fold"  # exact counts such as C(1000, 500) wrap rather than get cut
    if sampled:
        table.add_column("mean |path| (sampled)")
        table.add_column("paths × mean")
    for row in r.by_length:
        cells = [str(row["length"]), f"{row['count']:,}", _number(row["contribution_norm"], ".4g"),
                 _number(row["share"], ".1%")]
        if sampled:
            cells += [_number(row.get("sampled_mean_path_norm"), ".4g"), _number(row.get("sampled_estimate_norm"), ".4g")]
        table.add_row(*cells)
    console.print("  path-length spectrum (length: module calls counted along the path; |sum|: the norm of the "
                  "sum of the contributions of the paths of that length; share: of the gradient's norm)")
    console.print(table)
    if sampled:
        console.print("  [dim]sampled: Veit et al.'s estimate from paths of each length drawn at random; paths × mean "
                      "bounds |sum| from above (contributions of one length partly cancel)[/]")
    if r.by_length_matches is None:
        verdict = f"[yellow]?[/] the per-length sums are {escape(r.by_length_check or 'not checkable')}"
    elif r.by_length_matches:
        verdict = "[green]✓[/] the per-length sums add up to the gradient"
    else:
        verdict = "[bold red]✗[/] the per-length sums do not add up to the gradient"
    console.print(f"  {verdict}")
