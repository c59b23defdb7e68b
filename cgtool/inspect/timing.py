"""Wall-time measurement of a callable, the way the benchmarks in ``benchmarks/`` and ``cgtool compare`` /
``cgtool bench`` report it: ``torch.utils.benchmark.Timer`` (warm-up, then blocks of runs sized to
take a measurable time, CUDA synchronised), medians and the spread between quartiles. Plain data."""
from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class Timing:
    median_s: float  # seconds per call
    iqr_s: float  # interquartile range of the per-call times of the blocks
    runs: int  # calls measured, in all
    blocks: int  # blocks of calls (each block gives one per-call time)

    @property
    def median_us(self) -> float:
        return self.median_s * 1e6


def measure(fn, *, min_run_time: float = 0.2, threads: int | None = None, warmup: int = 3) -> Timing:
    """Time ``fn()``: *warmup* calls first, then ``Timer.blocked_autorange`` for at least *min_run_time*
    seconds, on *threads* threads (torch's current number when None)."""
    from torch.utils.benchmark import Timer

    for _ in range(warmup):
        fn()
    timer = Timer(stmt="fn()", globals={"fn": fn}, num_threads=threads or torch.get_num_threads())
    m = timer.blocked_autorange(min_run_time=min_run_time)
    return Timing(m.median, m.iqr, m.number_per_run * len(m.raw_times), len(m.raw_times))
