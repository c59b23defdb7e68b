"""Units and number formatting, in one place: bytes, counts, FLOPs, shapes.
"""
from __future__ import annotations
import math


# --------------------------------------------------------------------------- units


def human_bytes(n: int) -> str:
    """1.72 KiB, 12.55 GiB: binary units, as memory is counted."""
    if n < 1024:
        return f"{n} B"
    for unit in ("KiB", "MiB", "GiB", "TiB", "PiB"):
        n /= 1024
        if n < 1024 or unit == "PiB":
            return f"{n:.2f} {unit}"
    raise AssertionError  # pragma: no cover


def human_count(n: int | float, units=("", "K", "M", "B", "T")) -> str:
    """440, 269.72 K, 6.74 B: decimal units with three significant figures or more."""
    if abs(n) < 1000:
        return f"{n:g}" if isinstance(n, float) else str(n)
    i = min(int(math.log10(abs(n)) // 3), len(units) - 1)
    return f"{n / 1000 ** i:.2f} {units[i]}"


FLOP_UNITS = ("", "K", "M", "G", "T", "P")


def human_flops(n: int, unit: str = "FLOPs") -> str:
    """4.80 K, 78.92 G: SI prefixes, as FLOP counts are quoted (G, not B)."""
    text = human_count(n, FLOP_UNITS)
    return f"{text}{unit}" if n >= 1000 else f"{text} {unit}".rstrip()


def shape_str(shape) -> str:
    return "[" + ", ".join(str(d) for d in shape) + "]"


def shapes_str(shapes) -> str:
    return ", ".join(shape_str(s) for s in shapes) if shapes else "-"


def num(n: int) -> str:
    return f"{n:,}"




def plural(n: int, one: str, many: str | None = None) -> str:
    """1 edge, 2 edges, 1 leaf, 3 leaves."""
    return f"{n:,} {one if n == 1 else (many or one + 's')}"
