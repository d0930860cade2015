"""Per-shape backend choice by measurement: the ``auto`` dispatch of the Triton kernels never keeps a loser.

The fused kernels win on narrow nets and lose to cuBLAS on wide ones (issue 24's H200 figures: 3.4× eager on
the world-model size, 0.27× on a 784-2048-2048-10 net), and where the crossover lies depends on the GPU. So
``auto`` on CUDA times each backend once per shape key — a warm-up call, then the median of ``repeats`` calls —
and keeps the fastest in a small cache (:data:`AUTOTUNER`); later calls with that key take the cached choice.
The timed calls compute the real result, so nothing is wasted but the repeats.
"""

from __future__ import annotations

import statistics
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Any

import torch

__all__ = ["AUTOTUNER", "ShapeAutotuner", "median_seconds", "synced_clock"]


class ShapeAutotuner:
    """Chooses, per key, the fastest of several interchangeable callables (see the module docstring).

    Args:
        repeats: Timed calls per candidate (after one warm-up call).
        max_entries: Keys kept (least recently used dropped first).
        clock: Seconds now, after any device work has finished (default: ``perf_counter`` after a CUDA sync when
            CUDA is initialised).
    """

    def __init__(
        self, repeats: int = 5, max_entries: int = 256, clock: Callable[[], float] | None = None
    ) -> None:
        if repeats < 1 or max_entries < 1:
            raise ValueError(f"repeats and max_entries must be >= 1, got {repeats}, {max_entries}")
        self.repeats, self.max_entries = repeats, max_entries
        self.clock = clock or synced_clock
        self.cache: OrderedDict[Hashable, str] = OrderedDict()
        self.timings: dict[Hashable, dict[str, float]] = {}

    def choose(self, key: Hashable, candidates: dict[str, Callable[[], Any]]) -> str:
        """The cached choice for ``key``, or the fastest candidate after timing each (then cached)."""
        if not candidates:
            raise ValueError("no candidates to choose from")
        if key in self.cache:
            self.cache.move_to_end(key)
            return self.cache[key]
        with torch.no_grad():
            times = {name: median_seconds(fn, self.repeats, self.clock) for name, fn in candidates.items()}
        best = min(times, key=times.__getitem__)
        self.cache[key], self.timings[key] = best, times
        while len(self.cache) > self.max_entries:
            old, _ = self.cache.popitem(last=False)
            self.timings.pop(old, None)
        return best

    def clear(self) -> None:
        self.cache.clear()
        self.timings.clear()


def synced_clock() -> float:
    """``perf_counter`` after the queued CUDA work has finished (when CUDA is in use)."""
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.synchronize()
    return time.perf_counter()


def median_seconds(fn: Callable[[], Any], repeats: int, clock: Callable[[], float] = synced_clock) -> float:
    """Median seconds of ``repeats`` calls of ``fn`` after one warm-up call (compilation, caches, allocator)."""
    fn()
    clock()
    ts = []
    for _ in range(repeats):
        t0 = clock()
        fn()
        ts.append(clock() - t0)
    return statistics.median(ts)


AUTOTUNER = ShapeAutotuner()
"""The process-wide cache the ``auto`` backends of :class:`~eqagent.energy.EnergyNet` and the imagined rollout
use."""
