"""A fixed-capacity rolling window of float samples and its statistics.

Samples live in one preallocated float32 array used as a ring: a push is O(1)
and costs 4 bytes per sample, with no Python object per sample. Statistics are
computed from the samples themselves whenever the window has changed since the
last query (never from a running sum or a cached extreme, which drift or go
stale as samples leave the window), and reused until it changes again.
"""

from __future__ import annotations

import math
from array import array
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from .errors import UsageError
from .metrics import FLOAT32_MAX

__all__ = ["MetricsBuffer", "WindowStats", "percentile_of_sorted"]

_NAN = math.nan


@dataclass(frozen=True, slots=True)
class WindowStats:
    """Statistics of one window at one moment; every field is NaN when the window is empty.

    `stddev` is the population standard deviation; percentiles use numpy's
    "linear" method.
    """

    count: int
    mean: float
    min: float
    max: float
    stddev: float
    p50: float
    p90: float
    p95: float
    p99: float
    last: float

    def get(self, statistic: str) -> float:
        """The value of a statistic by name ("mean", "p99", "last", ...)."""
        value: float = getattr(self, statistic)
        return value


_EMPTY = WindowStats(0, _NAN, _NAN, _NAN, _NAN, _NAN, _NAN, _NAN, _NAN, _NAN)


def percentile_of_sorted(ordered: npt.NDArray[np.float64], p: float) -> float:
    """The p-th percentile of an ascending array, exactly as `numpy.percentile(..., p)`.

    Same virtual index, same floor and the same two-sided interpolation as
    numpy's "linear" method, so results agree bit for bit.
    """
    n = len(ordered)
    if n == 0:
        return _NAN
    virtual = (n - 1) * (p / 100)
    if virtual >= n - 1:
        return float(ordered[n - 1])
    below = math.floor(virtual)
    gamma = virtual - below
    a = float(ordered[below])
    b = float(ordered[below + 1])
    diff = b - a
    if gamma >= 0.5:
        return b - diff * (1 - gamma)
    return a + diff * gamma


class MetricsBuffer:
    """A rolling window of the last `capacity` samples, oldest evicted first.

    `push` is O(1). Statistics agree with numpy over `values()` after any
    number of pushes and evictions; an empty window's statistics are NaN.
    Samples are stored as float32, so `values()` returns them rounded to
    float32. Not thread-safe on its own: the monitor serialises access.
    """

    __slots__ = ("_capacity", "_data", "_pos", "_pushes", "_stats", "_stats_at")

    def __init__(self, capacity: int = 1000) -> None:
        if isinstance(capacity, bool) or not isinstance(capacity, int) or capacity < 1:
            raise UsageError(f"capacity must be a positive integer, got {capacity!r}")
        self._capacity = capacity
        self._data = array("f", bytes(4 * capacity))
        self._pos = 0
        self._pushes = 0
        self._stats: WindowStats = _EMPTY
        self._stats_at = 0

    @property
    def capacity(self) -> int:
        """The most samples the window holds."""
        return self._capacity

    def push(self, value: float) -> None:
        """Append a sample, evicting the oldest when full.

        Raises `ValueError` (a `UsageError`) for NaN, ±inf, a magnitude beyond
        float32 or a non-number; the window is then unchanged.
        """
        if isinstance(value, bool | str | bytes) or not hasattr(value, "__float__"):
            raise UsageError(f"sample must be a real number, got {type(value).__name__}")
        v = float(value)
        if not -FLOAT32_MAX <= v <= FLOAT32_MAX:
            raise UsageError(f"sample must be finite and within float32 range, got {v!r}")
        self._append(v)

    def _append(self, v: float) -> None:
        pos = self._pos
        self._data[pos] = v
        pos += 1
        self._pos = 0 if pos == self._capacity else pos
        self._pushes += 1

    def __len__(self) -> int:
        return self._pushes if self._pushes < self._capacity else self._capacity

    def clear(self) -> None:
        """Drop every sample."""
        self._pos = 0
        self._pushes = 0
        self._stats = _EMPTY
        self._stats_at = 0

    def _ordered(self) -> npt.NDArray[np.float32]:
        raw = np.frombuffer(self._data, dtype=np.float32)
        if self._pushes < self._capacity:
            return raw[: self._pos].copy()
        return np.concatenate((raw[self._pos :], raw[: self._pos]))

    def values(self) -> list[float]:
        """The samples in the window, oldest first."""
        result: list[float] = self._ordered().tolist()
        return result

    def latest(self) -> float:
        """The newest sample, or NaN when the window is empty."""
        if self._pushes == 0:
            return _NAN
        return self._data[self._pos - 1]

    def stats(self) -> WindowStats:
        """All statistics of the window, computed once per change and reused."""
        if self._stats_at != self._pushes:
            self._stats = self._compute()
            self._stats_at = self._pushes
        return self._stats

    def _compute(self) -> WindowStats:
        if self._pushes == 0:
            return _EMPTY
        ordered = self._ordered().astype(np.float64)
        mean = float(ordered.mean())
        deviation = ordered - mean
        stddev = math.sqrt(float(np.dot(deviation, deviation)) / len(ordered))
        ordered.sort()
        return WindowStats(
            count=len(ordered),
            mean=mean,
            min=float(ordered[0]),
            max=float(ordered[-1]),
            stddev=stddev,
            p50=percentile_of_sorted(ordered, 50),
            p90=percentile_of_sorted(ordered, 90),
            p95=percentile_of_sorted(ordered, 95),
            p99=percentile_of_sorted(ordered, 99),
            last=self.latest(),
        )

    def mean(self) -> float:
        """Arithmetic mean of the window."""
        return self.stats().mean

    def min(self) -> float:
        """Smallest sample in the window."""
        return self.stats().min

    def max(self) -> float:
        """Largest sample in the window."""
        return self.stats().max

    def stddev(self) -> float:
        """Population standard deviation of the window (numpy's `std` with ddof=0)."""
        return self.stats().stddev

    def percentile(self, p: float) -> float:
        """The p-th percentile, p in [0, 100], as `numpy.percentile` with method "linear"."""
        if isinstance(p, bool) or not isinstance(p, int | float) or not 0 <= p <= 100:
            raise UsageError(f"percentile must be a number in [0, 100], got {p!r}")
        if self._pushes == 0:
            return _NAN
        ordered = self._ordered().astype(np.float64)
        ordered.sort()
        return percentile_of_sorted(ordered, float(p))
