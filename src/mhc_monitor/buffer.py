"""A fixed-capacity rolling window of float samples and its statistics.

Samples live in one preallocated float32 array used as a ring: a push is O(1)
and costs 4 bytes per sample, with no Python object per sample. Statistics are
computed from the samples themselves whenever the window has changed since the
last query (never from a running sum or a cached extreme, which drift or go
stale as samples leave the window), and reused until it changes again.
"""

from __future__ import annotations

import functools
import math
from array import array
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from .errors import UsageError
from .metrics import FLOAT32_MAX

__all__ = ["MAX_CAPACITY", "MetricsBuffer", "WindowStats", "percentile_of_sorted"]

#: The most samples a window holds: 10 million float32 values, 40 MB.
MAX_CAPACITY = 10_000_000
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


def _percentile_position(n: int, p: float) -> tuple[int, int, float]:
    """(index below, index above, weight of the one above) of the p-th percentile of n values.

    numpy's "linear" method: virtual index (n - 1) * p / 100, floored.
    """
    virtual = (n - 1) * (p / 100)
    if virtual >= n - 1:
        return n - 1, n - 1, 0.0
    below = math.floor(virtual)
    return below, below + 1, virtual - below


def _lerp(a: float, b: float, gamma: float) -> float:
    # numpy's two-sided interpolation, so results agree bit for bit.
    diff = b - a
    if gamma >= 0.5:
        return b - diff * (1 - gamma)
    return a + diff * gamma


def percentile_of_sorted(ordered: npt.NDArray[np.float64], p: float) -> float:
    """The p-th percentile of an ascending array, exactly as `numpy.percentile(..., p)`.

    Same virtual index, same floor and the same two-sided interpolation as
    numpy's "linear" method, so results agree bit for bit.
    """
    n = len(ordered)
    if n == 0:
        return _NAN
    below, above, gamma = _percentile_position(n, p)
    if below == above:
        return float(ordered[below])
    return _lerp(float(ordered[below]), float(ordered[above]), gamma)


_SUMMARY_PERCENTILES = (50.0, 90.0, 95.0, 99.0)


@functools.lru_cache(maxsize=64)
def _summary_picks(n: int) -> tuple[npt.NDArray[np.intp], tuple[float, ...]]:
    """For a window of n: the sorted positions to read (min, max, then a pair per
    summary percentile) and each percentile's interpolation weight."""
    indices = [0, n - 1]
    gammas = []
    for p in _SUMMARY_PERCENTILES:
        below, above, gamma = _percentile_position(n, p)
        indices += (below, above)
        gammas.append(gamma)
    return np.asarray(indices, dtype=np.intp), tuple(gammas)


class MetricsBuffer:
    """A rolling window of the last `capacity` samples, oldest evicted first.

    `push` is O(1). Statistics agree with numpy over `values()` after any
    number of pushes and evictions; an empty window's statistics are NaN.
    Samples are stored as float32, so `values()` returns them rounded to
    float32. Not thread-safe on its own: the monitor serialises access.
    """

    __slots__ = ("_capacity", "_data", "_pos", "_pushes", "_ring", "_stats", "_stats_at")

    def __init__(self, capacity: int = 1000) -> None:
        if isinstance(capacity, bool) or not isinstance(capacity, int) or capacity < 1:
            raise UsageError(f"capacity must be a positive integer, got {capacity!r}")
        if capacity > MAX_CAPACITY:
            raise UsageError(f"capacity must be at most {MAX_CAPACITY} samples, got {capacity}")
        self._capacity = capacity
        self._data = array("f", bytes(4 * capacity))
        # A numpy view of the same memory (the array is never resized), made once.
        self._ring = np.frombuffer(self._data, dtype=np.float32)
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
        raw = self._ring
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
        window = self._ordered()
        n = len(window)
        # Mean and deviation as numpy's mean and std compute them (pairwise sums over
        # the samples in window order), so they agree bit for bit.
        wide = window.astype(np.float64)
        mean = float(np.add.reduce(wide)) / n
        np.subtract(wide, mean, out=wide)
        np.multiply(wide, wide, out=wide)
        stddev = math.sqrt(float(np.add.reduce(wide)) / n)
        # float32 sorts faster and in the same order; only the picked values are widened.
        window.sort()
        indices, gammas = _summary_picks(n)
        picked: list[float] = window[indices].tolist()
        # Positional, in field order (count, mean, min, max, stddev, p50..p99, last):
        # keywords cost a measurable share of a summary.
        return WindowStats(
            n,
            mean,
            picked[0],
            picked[1],
            stddev,
            _lerp(picked[2], picked[3], gammas[0]),
            _lerp(picked[4], picked[5], gammas[1]),
            _lerp(picked[6], picked[7], gammas[2]),
            _lerp(picked[8], picked[9], gammas[3]),
            self._data[self._pos - 1],
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
