"""Timing shared by the benchmarks: interleaved, rotated repeats and medians."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable


def interleaved_medians(runs: dict[str, Callable[[int], None]], repeats: int) -> dict[str, float]:
    """Median seconds of each `runs[name](round)` over `repeats` rounds, after one warm-up round.

    Within a round every run goes once, in an order rotated from round to round, so that drifting
    load on the machine hits all of them alike.
    """
    names = list(runs)
    times: dict[str, list[float]] = {name: [] for name in names}
    for r in range(repeats + 1):
        for name in names[r % len(names):] + names[:r % len(names)]:
            start = time.perf_counter()
            runs[name](r)
            if r > 0:
                times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t) for name, t in times.items()}
