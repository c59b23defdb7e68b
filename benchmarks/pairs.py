"""Two contenders timed side by side: alternating trials (A B, B A, ...) so that machine noise hits both alike;
median µs per call of each, and the median over rounds of the ratio within a round (issue 15's benchmarks)."""
from __future__ import annotations

import statistics
import time


def per_call(fn, args: tuple, n: int) -> float:
    """Seconds per call of ``fn(*args)`` over *n* calls."""
    start = time.perf_counter()
    for _ in range(n):
        fn(*args)
    return (time.perf_counter() - start) / n


def side_by_side(a: tuple[str, object], b: tuple[str, object], args: tuple, *, trials: int,
                 block_s: float) -> tuple[dict[str, float], float]:
    """({name: median µs per call}, median of a/b within a round); a trial takes about *block_s* of b's."""
    n = max(1, int(block_s / per_call(b[1], args, 20)))
    times: dict[str, list[float]] = {a[0]: [], b[0]: []}
    ratios = []
    for t in range(trials):
        got = {}
        for name, fn in ([a, b] if t % 2 == 0 else [b, a]):
            got[name] = per_call(fn, args, n)
            times[name].append(got[name] * 1e6)
        ratios.append(got[a[0]] / got[b[0]])
    return {k: statistics.median(v) for k, v in times.items()}, statistics.median(ratios)
