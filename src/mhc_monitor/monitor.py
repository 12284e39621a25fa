"""The monitor an engine calls on its hot path.

Each metric has a window (a `MetricsBuffer`) and a cumulative histogram for
Prometheus. A `record_*` call validates the sample, writes it into the window
under that metric's lock and returns; it never raises and never waits on I/O.
The histogram is folded in bulk from the window's unfolded samples, with
numpy, before they are overwritten or when someone reads it, so the hot path
pays for one array store.
"""

from __future__ import annotations

import logging
import math
import re
import socket
import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from types import MappingProxyType
from typing import Any

import numpy as np
import numpy.typing as npt

from .alerts import (
    Alert,
    AlertConfig,
    AlertLevel,
    describe_crossing,
    make_dedup_key,
    to_float32,
)
from .buffer import MAX_CAPACITY, MetricsBuffer, WindowStats
from .errors import UsageError
from .metrics import METRICS, Direction, MetricName, MetricSpec

__all__ = [
    "MAX_LABELS",
    "MAX_LABEL_VALUE_LENGTH",
    "MAX_WINDOW",
    "REJECT_REASONS",
    "RESERVED_LABELS",
    "GeometricSpeculationMonitor",
    "HistogramSnapshot",
    "MetricSummary",
    "MonitorSummary",
    "label_problem",
]

logger = logging.getLogger(__name__)

#: Why a sample can be dropped, as counted on `/metrics` and in the summary.
REJECT_REASONS: tuple[str, ...] = (
    "nan",
    "infinite",
    "out_of_range",
    "not_an_integer",
    "invalid_type",
)
#: Label names the exposition uses itself; a monitor's constant labels cannot take them.
RESERVED_LABELS = frozenset(
    {"le", "quantile", "metric", "stat", "reason", "level", "receiver", "outcome", "version"}
)
_LABEL_NAME = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")
MAX_LABELS = 16
MAX_LABEL_VALUE_LENGTH = 256
#: The most samples a metric's window holds: 10 million float32 values, 40 MB per metric.
MAX_WINDOW = MAX_CAPACITY
_LOG_EVERY_S = 60.0


@dataclass(frozen=True, slots=True)
class HistogramSnapshot:
    """A cumulative histogram in recorded units: upper bounds, cumulative counts, sum."""

    bounds: tuple[float, ...]
    cumulative: tuple[int, ...]
    count: int
    sum: float


class _Window(MetricsBuffer):
    """One metric's window, histogram, rejections and lock."""

    __slots__ = (
        "_bounds",
        "_bucket_counts",
        "_fold_at",
        "_folded",
        "_generation",
        "_hist_count",
        "_hist_sum",
        "_last_logged",
        "_lock",
        "_lower",
        "_rejected",
        "_rejected_total",
        "_upper",
        "spec",
    )

    def __init__(self, spec: MetricSpec, capacity: int, bounds: tuple[float, ...]) -> None:
        super().__init__(capacity)
        self.spec = spec
        self._lock = threading.Lock()
        self._lower = spec.lower
        self._upper = spec.upper
        self._bounds = np.asarray(bounds, dtype=np.float64)
        self._bucket_counts = np.zeros(len(bounds) + 1, dtype=np.int64)
        self._hist_sum = 0.0
        self._hist_count = 0
        self._folded = 0
        # The push count at which unfolded samples would start being overwritten.
        self._fold_at = capacity
        # Bumped by a reset, so (generation, pushes) names one state of window and histogram.
        self._generation = 0
        self._rejected = dict.fromkeys(REJECT_REASONS, 0)
        self._rejected_total = 0
        self._last_logged: dict[str, float] = {}

    def record(self, value: Any) -> None:
        """Validate and store one sample; drop and count it when invalid."""
        if value.__class__ is float and self._lower <= value <= self._upper:
            # acquire/release in try/finally: measurably cheaper than `with` on this path.
            lock = self._lock
            lock.acquire()
            try:
                pos = self._pos
                self._data[pos] = value
                pos += 1
                self._pos = 0 if pos == self._capacity else pos
                pushes = self._pushes + 1
                self._pushes = pushes
                if pushes == self._fold_at:
                    self._fold()
            finally:
                lock.release()
            return
        self._record_slow(value)

    def _record_slow(self, value: Any) -> None:
        reason, v = self._classify(value)
        if reason is not None:
            self._reject(reason, 1, value)
            return
        with self._lock:
            self._append(v)
            if self._pushes == self._fold_at:
                self._fold()

    def _classify(self, value: Any) -> tuple[str | None, float]:
        if isinstance(value, bool | str | bytes) or not hasattr(value, "__float__"):
            return "invalid_type", 0.0
        try:
            v = float(value)
        except OverflowError:
            return "out_of_range", math.inf
        except Exception:  # a caller's __float__ may raise anything; the hot path must not
            return "invalid_type", 0.0
        if v != v:
            return "nan", v
        if v in (math.inf, -math.inf):
            return "infinite", v
        if not self._lower <= v <= self._upper:
            return "out_of_range", v
        if self.spec.integer and not v.is_integer():
            return "not_an_integer", v
        return None, v

    def record_many(self, values: Any) -> tuple[int, dict[str, int]]:
        """Validate and store a batch; returns (accepted, rejected by reason).

        Exactly the validation of `record`, sample by sample: a numeric array or
        a list of Python floats and ints is checked as a whole with numpy; anything
        else (bools, strings, None, objects) goes through the per-sample path, so
        a string or a bool is `invalid_type` here too, never converted.
        """
        if isinstance(values, np.ndarray):
            numeric = values.dtype.kind in "fiu"
        else:
            if isinstance(values, str | bytes | bytearray):
                values = [values]  # one value of the wrong type, not a batch of characters
            elif not isinstance(values, list | tuple):
                try:
                    values = list(values)
                except TypeError:
                    values = [values]  # a lone value is a batch of one
            numeric = set(map(type, values)) <= _PLAIN_NUMBERS
        arr = _as_float64(values) if numeric else None
        if arr is None:
            return self._record_each(values)
        return self._record_array(arr)

    def _record_each(self, values: Any) -> tuple[int, dict[str, int]]:
        accepted = 0
        rejected: dict[str, int] = {}
        for item in np.ravel(values) if isinstance(values, np.ndarray) else values:
            reason, v = self._classify(item)
            if reason is None:
                with self._lock:
                    self._append(v)
                    if self._pushes == self._fold_at:
                        self._fold()
                accepted += 1
            else:
                rejected[reason] = rejected.get(reason, 0) + 1
                self._reject(reason, 1, item)
        return accepted, rejected

    def _record_array(self, arr: npt.NDArray[np.float64]) -> tuple[int, dict[str, int]]:
        nan = np.isnan(arr)
        inf = np.isinf(arr)
        finite = ~(nan | inf)
        in_range = finite & (arr >= self._lower) & (arr <= self._upper)
        good = in_range & (np.floor(arr) == arr) if self.spec.integer else in_range
        rejected = {
            "nan": int(nan.sum()),
            "infinite": int(inf.sum()),
            "out_of_range": int((finite & ~in_range).sum()),
            "not_an_integer": int((in_range & ~good).sum()),
        }
        rejected = {reason: n for reason, n in rejected.items() if n}
        for reason, n in rejected.items():
            self._reject(reason, n, None)
        accepted = arr[good] if rejected else arr
        with self._lock:
            self._extend(accepted)
        return len(accepted), rejected

    def _extend(self, arr: npt.NDArray[np.float64]) -> None:
        n = len(arr)
        if n == 0:
            return
        cap = self._capacity
        if self._pushes - self._folded + n > cap:
            self._fold()
        if n > cap:
            # Samples that will never sit in the window go straight into the histogram.
            self._fold_values(arr[: n - cap].astype(np.float32))
            self._pushes += n - cap
            self._folded = self._pushes
            self._fold_at = self._folded + cap
            arr = arr[n - cap :]
            n = cap
        ring = self._ring
        head = min(n, cap - self._pos)
        ring[self._pos : self._pos + head] = arr[:head]
        if head < n:
            ring[: n - head] = arr[head:]
        self._pos = (self._pos + n) % cap
        self._pushes += n
        if self._pushes == self._fold_at:
            self._fold()

    def _fold(self) -> None:
        """Move the samples not yet counted by the histogram into it (lock held)."""
        pending = self._pushes - self._folded
        if pending <= 0:
            return
        ring = self._ring
        start = self._pos - pending
        if start >= 0:
            chunk = ring[start : self._pos]
        else:
            chunk = np.concatenate((ring[start:], ring[: self._pos]))
        self._fold_values(chunk)
        self._folded = self._pushes
        self._fold_at = self._pushes + self._capacity

    def _fold_values(self, chunk: npt.NDArray[np.float32]) -> None:
        wide = chunk.astype(np.float64)
        index = np.searchsorted(self._bounds, wide, side="left")
        self._bucket_counts += np.bincount(index, minlength=len(self._bucket_counts))
        self._hist_sum += float(wide.sum())
        self._hist_count += len(wide)

    def _reject(self, reason: str, n: int, value: Any) -> None:
        with self._lock:
            self._rejected[reason] += n
            self._rejected_total += n
            now = time.monotonic()
            last = self._last_logged.get(reason)
            should_log = last is None or now - last >= _LOG_EVERY_S
            if should_log:
                self._last_logged[reason] = now
            total = self._rejected[reason]
        if should_log:
            shown = "" if value is None else f" (value {value!r:.40})"
            logger.warning(
                "dropped %d %s sample(s): %s%s; %d dropped for this reason so far",
                n,
                self.spec.name.value,
                reason,
                shown,
                total,
            )

    def histogram(self) -> HistogramSnapshot:
        with self._lock:
            self._fold()
            counts = self._bucket_counts.copy()
            total_sum = self._hist_sum
        cumulative = np.cumsum(counts)
        return HistogramSnapshot(
            bounds=tuple(self._bounds.tolist()),
            cumulative=tuple(int(c) for c in cumulative[:-1]),
            count=int(cumulative[-1]),
            sum=total_sum,
        )

    def window_stats(self) -> WindowStats:
        with self._lock:
            return self.stats()

    def window_values(self) -> list[float]:
        with self._lock:
            return self.values()

    def rejected(self) -> dict[str, int]:
        with self._lock:
            return dict(self._rejected)

    def exposition_state(self) -> tuple[tuple[int, int], WindowStats, list[int], float]:
        """(state key, window statistics, cumulative bucket counts ending with +Inf, sum).

        One lock acquisition; the key changes whenever the window or the histogram
        does, so a caller can keep what it derived from an unchanged state.
        """
        with self._lock:
            self._fold()
            key = (self._generation, self._pushes)
            stats = self.stats()
            counts = self._bucket_counts.copy()
            total_sum = self._hist_sum
        cumulative: list[int] = np.cumsum(counts).tolist()
        return key, stats, cumulative, total_sum

    def histogram_bounds(self) -> list[float]:
        """The histogram's upper bounds in recorded units, without +Inf."""
        bounds: list[float] = self._bounds.tolist()
        return bounds

    def state_key(self) -> tuple[int, int]:
        """Changes whenever the window or the histogram changes (read without the lock)."""
        return self._generation, self._pushes

    def rejected_key(self) -> int:
        """Changes whenever a sample is dropped."""
        return self._rejected_total

    def reset_window(self) -> None:
        with self._lock:
            self._fold()
            self.clear()
            self._folded = 0
            self._fold_at = self._capacity
            self._generation += 1


@dataclass(frozen=True)
class MetricSummary:
    """One metric's window statistics, its evaluated statistic and its level."""

    metric: MetricName
    stats: WindowStats
    statistic: str
    value: float
    level: AlertLevel
    threshold: float | None
    total: int
    rejected: Mapping[str, int]

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict: NaN becomes None."""
        stats = {name: _json_float(getattr(self.stats, name)) for name in _STAT_FIELDS}
        return {
            "metric": self.metric.value,
            "count": self.stats.count,
            "total": self.total,
            **stats,
            "statistic": self.statistic,
            "value": _json_float(self.value),
            "level": self.level.name.lower(),
            "threshold": self.threshold,
            "rejected": dict(self.rejected),
        }


_STAT_FIELDS = ("mean", "min", "max", "stddev", "p50", "p90", "p95", "p99", "last")


@dataclass(frozen=True)
class MonitorSummary:
    """The whole monitor at one moment: labels, overall level, and each metric."""

    labels: Mapping[str, str]
    level: AlertLevel
    metrics: Mapping[str, MetricSummary]
    timestamp: datetime

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict of the summary."""
        return {
            "labels": dict(self.labels),
            "level": self.level.name.lower(),
            "timestamp": self.timestamp.isoformat(),
            "metrics": {name: m.to_dict() for name, m in self.metrics.items()},
            "rejected_total": sum(sum(m.rejected.values()) for m in self.metrics.values()),
        }


# Element types a list batch may hold to be converted by numpy as a whole: numpy would
# also convert bools, strings and None, which the single calls reject.
_PLAIN_NUMBERS: frozenset[type] = frozenset({float, int, np.float64, np.float32, np.int64})


def _as_float64(values: Any) -> npt.NDArray[np.float64] | None:
    """A flat float64 copy of a numeric batch, or None when numpy cannot convert it."""
    try:
        return np.asarray(values, dtype=np.float64).ravel()
    except (TypeError, ValueError, OverflowError):
        return None


def _json_float(value: float) -> float | None:
    return None if math.isnan(value) else value


def label_problem(name: object, value: object) -> str | None:
    """What is wrong with one constant label, or None.

    A label name is a Prometheus label name that the exposition does not use
    itself (`RESERVED_LABELS`); a value is a string of at most
    `MAX_LABEL_VALUE_LENGTH` characters (any characters: the exposition escapes them).
    """
    if not isinstance(name, str) or not _LABEL_NAME.match(name) or name.startswith("__"):
        return "not a valid Prometheus label name ([a-zA-Z_][a-zA-Z0-9_]*, not starting with __)"
    if name in RESERVED_LABELS:
        return "reserved by the exposition"
    if not isinstance(value, str):
        return f"must have a str value, got {type(value).__name__}"
    if len(value) > MAX_LABEL_VALUE_LENGTH:
        return f"the value is {len(value)} characters, at most {MAX_LABEL_VALUE_LENGTH} allowed"
    return None


def _validate_labels(labels: Mapping[str, str] | None) -> Mapping[str, str]:
    if labels is None:
        return MappingProxyType({})
    if not isinstance(labels, Mapping):
        raise UsageError(f"labels must be a mapping of str to str, got {type(labels).__name__}")
    if len(labels) > MAX_LABELS:
        raise UsageError(f"at most {MAX_LABELS} constant labels, got {len(labels)}")
    for name, value in labels.items():
        problem = label_problem(name, value)
        if problem is not None:
            raise UsageError(f"label {name!r}: {problem}")
    return MappingProxyType(dict(labels))


def histogram_bounds(spec: MetricSpec, config: AlertConfig) -> tuple[float, ...]:
    """The metric's bucket boundaries with its alert thresholds merged in, ascending."""
    bounds = set(spec.buckets)
    for _, threshold in config.thresholds(spec.name):
        bounds.add(threshold)
        if spec.direction is Direction.MAGNITUDE_IS_WORSE:
            bounds.add(-threshold)
    return tuple(sorted(bounds))


class _Evaluator:
    """`AlertConfig.evaluate` for one metric, with the statistic and thresholds looked up once.

    The same decision, step for step: NaN is INFO, curvature by magnitude, the
    highest threshold the value is strictly beyond at float32 precision.
    """

    __slots__ = ("_lower_is_worse", "_magnitude", "_steps", "config", "statistic")

    def __init__(self, config: AlertConfig, spec: MetricSpec) -> None:
        self.config = config
        self.statistic = config.statistic(spec.name)
        self._magnitude = spec.direction is Direction.MAGNITUDE_IS_WORSE
        self._lower_is_worse = spec.direction is Direction.LOWER_IS_WORSE
        self._steps = tuple(
            (level, threshold, to_float32(threshold))
            for level, threshold in config.thresholds(spec.name)
        )

    def evaluate(self, stats: WindowStats) -> tuple[AlertLevel, float, float | None]:
        """(level, evaluated value, threshold crossed or None) for a window's statistics."""
        value: float = getattr(stats, self.statistic)
        if math.isnan(value):
            return AlertLevel.INFO, value, None
        compared = abs(value) if self._magnitude else value
        level, crossed = AlertLevel.INFO, None
        lower_is_worse = self._lower_is_worse
        for step, threshold, bound in self._steps:
            # Strictly beyond, as `alerts._beyond`.
            if (compared < bound) if lower_is_worse else (compared > bound):
                level, crossed = step, threshold
        return level, value, crossed


#: Each metric with its summary key, looked up once (an enum's `.value` is not free).
_SUMMARY_KEYS: tuple[tuple[MetricSpec, str], ...] = tuple(
    (spec, spec.name.value) for spec in METRICS
)


class GeometricSpeculationMonitor:
    """Rolling windows, threshold evaluation and counters for the six metrics.

    `record_*` calls are thread-safe, O(1), never raise and never block on I/O:
    a value outside its metric's domain (NaN, ±inf, acceptance 1.3, latency -2,
    a fractional Sinkhorn count, a non-number) is dropped and counted per
    metric and reason. `labels` are constant labels (model, instance, ...)
    carried by every series and alert; `source` names this monitor in alerts
    (default: the `instance` label, else the host name).
    """

    def __init__(
        self,
        config: AlertConfig | None = None,
        *,
        window: int = 1000,
        labels: Mapping[str, str] | None = None,
        source: str | None = None,
    ) -> None:
        if config is not None and not isinstance(config, AlertConfig):
            raise UsageError(f"config must be an AlertConfig, got {type(config).__name__}")
        self.config = config or AlertConfig()
        self.labels = _validate_labels(labels)
        if isinstance(window, int) and window > MAX_WINDOW:
            raise UsageError(f"window must be at most {MAX_WINDOW} samples, got {window}")
        self.source = source or self.labels.get("instance") or socket.gethostname()
        self.window = window
        self.started = time.time()
        self._windows = {
            spec.name: _Window(spec, window, histogram_bounds(spec, self.config))
            for spec in METRICS
        }
        w = self._windows
        # Bound methods of the windows: the hot path is one call, no dispatch.
        self._acceptance = w[MetricName.ACCEPTANCE].record
        self._curvature = w[MetricName.CURVATURE].record
        self._energy = w[MetricName.ENERGY].record
        self._latency = w[MetricName.LATENCY].record
        self._stability = w[MetricName.STABILITY].record
        self._sinkhorn = w[MetricName.SINKHORN_ITERATIONS]
        self._summaries: dict[MetricName, tuple[tuple[object, ...], MetricSummary]] = {}
        self._evaluators: dict[MetricName, _Evaluator] = {}
        self._bind_hot_path()

    def _bind_hot_path(self) -> None:
        # An instance attribute shadows the method: `monitor.record_latency(x)` then
        # calls the window directly, saving a Python frame per sample. Same
        # behaviour; skipped for a subclass that overrides a record call.
        cls = type(self)
        base = GeometricSpeculationMonitor
        for name, bound in (
            ("record_acceptance", self._acceptance),
            ("record_curvature", self._curvature),
            ("record_energy", self._energy),
            ("record_latency", self._latency),
            ("record_stability", self._stability),
        ):
            if getattr(cls, name) is getattr(base, name):
                self.__dict__[name] = bound

    def record_acceptance(self, rate: float) -> None:
        """Record a draft acceptance rate in [0, 1] (accepted / drafted tokens of a step)."""
        self._acceptance(rate)

    def record_curvature(self, curvature: float) -> None:
        """Record a curvature sample (any finite real; evaluated by magnitude)."""
        self._curvature(curvature)

    def record_energy(self, energy: float) -> None:
        """Record an energy sample (>= 0)."""
        self._energy(energy)

    def record_latency(self, ms: float) -> None:
        """Record a step latency in milliseconds (>= 0); exposed in seconds."""
        self._latency(ms)

    def record_stability(self, stability: float) -> None:
        """Record a stability sample in [0, 1] (1 = norm-preserving mixing)."""
        self._stability(stability)

    def record_sinkhorn_iters(self, iterations: int) -> None:
        """Record the Sinkhorn-Knopp iterations one projection used (integer >= 0)."""
        if iterations.__class__ is int and 0 <= iterations <= 9007199254740992:
            self._sinkhorn.record(float(iterations))
        else:
            self._sinkhorn._record_slow(iterations)

    def record_many(self, metric: str, values: Iterable[float] | npt.ArrayLike) -> int:
        """Record a batch (sequence or numpy array) for one metric; returns how many were kept.

        The same validation and counts as the single calls; raises `UsageError`
        only for an unknown metric name.
        """
        accepted, _ = self.record_batch(metric, values)
        return accepted

    def record_batch(
        self, metric: str, values: Iterable[float] | npt.ArrayLike
    ) -> tuple[int, dict[str, int]]:
        """Like `record_many`, returning (accepted, rejected count per reason)."""
        return self._window(metric).record_many(values)

    def _window(self, metric: str) -> _Window:
        try:
            return self._windows[MetricName(metric)]
        except ValueError:
            known = ", ".join(m.value for m in MetricName)
            raise UsageError(f"unknown metric {metric!r} (known: {known})") from None

    def window_stats(self, metric: str) -> WindowStats:
        """The current statistics of one metric's window."""
        return self._window(metric).window_stats()

    def window_values(self, metric: str) -> list[float]:
        """The samples in one metric's window, oldest first."""
        return self._window(metric).window_values()

    def histogram(self, metric: str) -> HistogramSnapshot:
        """The cumulative histogram of every sample ever recorded for a metric."""
        return self._window(metric).histogram()

    def count_rejected(self, metric: str, reason: str, n: int = 1) -> None:
        """Count `n` samples of `metric` dropped before they reached the monitor."""
        if reason not in REJECT_REASONS:
            raise UsageError(f"unknown reject reason {reason!r} (known: {REJECT_REASONS})")
        self._window(metric)._reject(reason, n, None)

    def rejected(self) -> dict[str, dict[str, int]]:
        """Dropped samples per metric and reason."""
        return {name.value: w.rejected() for name, w in self._windows.items()}

    def evaluate(self, metric: str) -> tuple[AlertLevel, float, float | None]:
        """(level, evaluated value, threshold crossed) of one metric now."""
        return self.evaluate_stats(metric, self.window_stats(metric))

    def evaluate_stats(
        self, metric: str, stats: WindowStats
    ) -> tuple[AlertLevel, float, float | None]:
        """(level, evaluated value, threshold crossed) of one metric for given window stats."""
        return self._evaluator(MetricName(metric)).evaluate(stats)

    def _evaluator(self, name: MetricName) -> _Evaluator:
        evaluator = self._evaluators.get(name)
        if evaluator is None or evaluator.config is not self.config:
            evaluator = _Evaluator(self.config, self._windows[name].spec)
            self._evaluators[name] = evaluator
        return evaluator

    def check_thresholds(self) -> AlertLevel:
        """The highest level over all metrics (INFO when nothing is beyond a threshold)."""
        return max((self.evaluate(spec.name)[0] for spec in METRICS), default=AlertLevel.INFO)

    def get_alerts(self) -> list[Alert]:
        """One alert per metric currently beyond a threshold, carrying the highest one crossed."""
        now = datetime.now(UTC)
        alerts = []
        for spec in METRICS:
            level, value, threshold = self.evaluate(spec.name)
            if level is AlertLevel.INFO or threshold is None:
                continue
            statistic = self.config.statistic(spec.name)
            alerts.append(
                Alert(
                    metric=spec.name,
                    level=level,
                    value=value,
                    threshold=threshold,
                    message=describe_crossing(spec, statistic, value, level, threshold),
                    source=self.source,
                    labels=self.labels,
                    timestamp=now,
                    dedup_key=make_dedup_key(self.source, self.labels, spec.name.value),
                    statistic=statistic,
                )
            )
        return alerts

    def get_summary(self) -> MonitorSummary:
        """Every metric's window statistics, evaluated value and level, and the drops."""
        metrics = {key: self._metric_summary(spec) for spec, key in _SUMMARY_KEYS}
        level = max([m.level for m in metrics.values()])
        return MonitorSummary(
            labels=self.labels,
            level=level,
            metrics=MappingProxyType(metrics),
            timestamp=datetime.now(UTC),
        )

    def _metric_summary(self, spec: MetricSpec) -> MetricSummary:
        # Rebuilt only when the window, its histogram, its drops or the config changed.
        w = self._windows[spec.name]
        config = self.config
        with w._lock:
            key = (w._generation, w._pushes, w._rejected_total, config)
            cached = self._summaries.get(spec.name)
            if cached is not None and cached[0] == key:
                return cached[1]
            stats = w.stats()
            total = w._hist_count + (w._pushes - w._folded)
            same_drops = cached is not None and cached[0][2] == key[2]
            rejected = cached[1].rejected if cached is not None and same_drops else None
            if rejected is None:
                rejected = MappingProxyType(dict(w._rejected))
        evaluator = self._evaluator(spec.name)
        level, value, threshold = evaluator.evaluate(stats)
        # Positional: measurably cheaper than keywords for a frozen dataclass.
        summary = MetricSummary(
            spec.name, stats, evaluator.statistic, value, level, threshold, total, rejected
        )
        self._summaries[spec.name] = (key, summary)
        return summary

    def reset(self) -> None:
        """Empty every window. Cumulative histograms and drop counters keep counting."""
        for w in self._windows.values():
            w.reset_window()
