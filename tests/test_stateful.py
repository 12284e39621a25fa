"""Stateful property tests: the buffer and the monitor against a numpy reference model.

Each machine drives the real object and a reference (a deque of float32-rounded
samples, counters per reason, every accepted sample for the histogram) through
the same random steps, and checks every statistic after every step.

Exactness: the implementation widens the float32 samples to float64, oldest
first, and computes mean, stddev (pairwise sums, as numpy's `mean` and `std`),
min, max and percentiles from them; the reference does the same with numpy, so
they must agree bit for bit (`==`, which also equates -0.0 and 0.0, the only
difference a sort may produce). One statistic is summed in an order that
depends on the history and is checked against a bound instead:

- histogram sum: folded in chunks whose boundaries depend on when the window
  was read. Any order of summing n terms is within (n - 1) * u * sum(|x|) of the
  exact sum (u = 2**-53), which is the bound checked; the reference's exact sum is
  an integer, since every float32 is a multiple of 2**-149.

Default run: a few hundred steps per machine. Long run (CI):

    MHC_LONG_PROPERTIES=1 .venv/bin/python -m pytest -q -p no:cacheprovider tests/test_stateful.py

runs at least 50 000 steps per machine, over 100 000 in all, and fails if it ran fewer.
"""

from __future__ import annotations

import math
import os
from collections import Counter, deque
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from mhc_monitor import GeometricSpeculationMonitor, MetricsBuffer, UsageError
from mhc_monitor.metrics import FLOAT32_MAX, METRICS, MetricSpec

LONG = os.environ.get("MHC_LONG_PROPERTIES") == "1"
U = 2.0**-53
MAX_WINDOW = 64
PERCENTILES = (0.0, 0.5, 1.0, 25.0, 50.0, 90.0, 95.0, 99.0, 99.9, 100.0)

# Steps (rules run) per machine; the long mode totals over 100 000 and checks that it did.
EXAMPLES = {"buffer": 650, "monitor": 620} if LONG else {"buffer": 40, "monitor": 40}
STEPS_PER_EXAMPLE = 100 if LONG else 30
MIN_STEPS = 50_000 if LONG else 600
STEPS: Counter[str] = Counter()


def machine_settings(machine: str) -> settings:
    return settings(
        max_examples=EXAMPLES[machine],
        stateful_step_count=STEPS_PER_EXAMPLE,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
        database=None if LONG else settings.default.database,
    )


F32 = st.floats(width=32, allow_nan=False, allow_infinity=False)
WIDE = st.floats(min_value=-FLOAT32_MAX, max_value=FLOAT32_MAX)
SMALL = st.floats(min_value=-1e3, max_value=1e3)


def f32(value: float) -> float:
    """A value as the window stores it: rounded to float32, widened back."""
    return float(np.float32(value))


def same(a: float, b: float) -> bool:
    """Equal, or both NaN."""
    return a == b or (math.isnan(a) and math.isnan(b))


def reference_stats(values: list[float]) -> dict[str, float]:
    """Every window statistic of float32-rounded samples, computed with numpy in float64.

    numpy gets the float64 widening of the samples, as the window computes on them:
    `numpy.percentile` of the float32 array itself would interpolate in float32.
    """
    if not values:
        return dict.fromkeys(STAT_NAMES, math.nan) | {"count": 0}
    arr = np.asarray(values, dtype=np.float64)
    stats = {
        "count": len(values),
        "mean": float(np.mean(arr)),
        "min": float(np.min(arr)),
        "max": float(np.max(arr)),
        "stddev": float(np.std(arr)),
        "last": values[-1],
    }
    for p in (50, 90, 95, 99):
        stats[f"p{p}"] = float(np.percentile(arr, p))
    return stats


STAT_NAMES = ("mean", "min", "max", "stddev", "last", "p50", "p90", "p95", "p99")


def reference_percentile(values: list[float], p: float) -> float:
    if not values:
        return math.nan
    return float(np.percentile(np.asarray(values, dtype=np.float64), p))


def assert_window(stats: Any, expected: dict[str, float]) -> None:
    """`stats` (a WindowStats) agrees with the reference statistics."""
    assert stats.count == expected["count"]
    for name in STAT_NAMES:
        got, want = getattr(stats, name), expected[name]
        assert same(got, want), (name, got, want)


class BufferMachine(RuleBasedStateMachine):
    """`MetricsBuffer` against a deque of float32-rounded samples."""

    def __init__(self) -> None:
        super().__init__()
        self.buf = MetricsBuffer(1)
        self.ref: deque[float] = deque(maxlen=1)

    @initialize(capacity=st.integers(1, MAX_WINDOW))
    def create(self, capacity: int) -> None:
        self.buf = MetricsBuffer(capacity)
        self.ref = deque(maxlen=capacity)
        assert self.buf.capacity == capacity

    @rule(value=st.one_of(F32, WIDE, SMALL, st.integers(-(2**100), 2**100)))
    def push(self, value: float) -> None:
        if abs(value) > FLOAT32_MAX:
            with pytest.raises(UsageError, match="float32 range"):
                self.buf.push(value)
            return
        self.buf.push(value)
        self.ref.append(f32(value))

    @rule(values=st.lists(st.sampled_from([1e30, -1e30, 3e38, -3e38, 1.0, 2.0]), max_size=8))
    def push_magnitudes(self, values: list[float]) -> None:
        # Huge values entering and leaving the window: a running sum would drift.
        for value in values:
            self.buf.push(value)
            self.ref.append(f32(value))

    @rule(
        value=st.sampled_from(
            [math.nan, math.inf, -math.inf, 3.5e38, -1e39, True, "1.0", b"1", None, [1.0]]
        )
    )
    def push_rejected(self, value: Any) -> None:
        with pytest.raises(ValueError):
            self.buf.push(value)

    @rule()
    def clear(self) -> None:
        self.buf.clear()
        self.ref.clear()

    @rule(p=st.floats(0, 100))
    def percentile(self, p: float) -> None:
        assert same(self.buf.percentile(p), reference_percentile(list(self.ref), p))

    @rule(
        p=st.one_of(
            st.floats(max_value=-1e-300), st.floats(min_value=100.0000001), st.just(math.nan)
        )
    )
    def percentile_out_of_range(self, p: float) -> None:
        with pytest.raises(UsageError, match="percentile"):
            self.buf.percentile(p)

    @invariant()
    def agrees_with_reference(self) -> None:
        STEPS["buffer"] += 1
        values = list(self.ref)
        assert len(self.buf) == len(values)
        assert self.buf.values() == values
        assert same(self.buf.latest(), values[-1] if values else math.nan)
        expected = reference_stats(values)
        assert_window(self.buf.stats(), expected)
        assert same(self.buf.mean(), expected["mean"])
        assert same(self.buf.min(), expected["min"])
        assert same(self.buf.max(), expected["max"])
        for p in PERCENTILES:
            assert same(self.buf.percentile(p), reference_percentile(values, p)), p


# ----- the monitor ------------------------------------------------------------------------

REASONS = ("nan", "infinite", "out_of_range", "not_an_integer", "invalid_type")
# (warning, critical, emergency) and the direction from DESIGN.md; Sinkhorn is off by default.
DEFAULT_THRESHOLDS: dict[str, tuple[str, tuple[float, float, float]] | None] = {
    "acceptance": ("lower", (0.7, 0.5, 0.3)),
    "curvature": ("magnitude", (2.0, 5.0, 10.0)),
    "energy": ("higher", (100.0, 500.0, 1000.0)),
    "latency": ("higher", (50.0, 100.0, 500.0)),
    "stability": ("lower", (0.9, 0.8, 0.5)),
    "sinkhorn_iterations": None,
}
WRONG_TYPES: list[Any] = [True, False, None, "0.5", "nan", b"1", [0.5], {"v": 1}, 1j]


def reference_reason(spec: MetricSpec, value: Any) -> str | None:
    """Why the monitor must drop `value` for `spec`, from DESIGN.md; None when it keeps it."""
    if isinstance(value, bool | str | bytes) or not isinstance(
        value, int | float | np.floating | np.integer
    ):
        return "invalid_type"
    if isinstance(value, int) and abs(value) > 2**1023:
        return "out_of_range"
    v = float(value)
    if math.isnan(v):
        return "nan"
    if math.isinf(v):
        return "infinite"
    if not spec.lower <= v <= spec.upper:
        return "out_of_range"
    if spec.integer and not v.is_integer():
        return "not_an_integer"
    return None


def reference_level(metric: str, mean: float) -> int:
    """The alert level (0..3) of the window mean under the default thresholds."""
    entry = DEFAULT_THRESHOLDS[metric]
    if entry is None or math.isnan(mean):
        return 0
    direction, thresholds = entry
    level = 0
    for i, threshold in enumerate(thresholds, start=1):
        t = f32(threshold)
        if direction == "lower":
            beyond = mean < t
        elif direction == "higher":
            beyond = mean > t
        else:
            beyond = abs(mean) > t
        if beyond:
            level = i
    return level


def in_domain(spec: MetricSpec) -> st.SearchStrategy[Any]:
    if spec.integer:
        return st.one_of(
            st.integers(0, 10_000),
            st.integers(0, 2**53),
            st.integers(0, 100).map(float),
            st.sampled_from([0, 2**53, 2**24 + 1, 16777217.0]),
        )
    lower, upper = spec.lower, spec.upper
    typical = st.floats(max(lower, -1e4), min(upper, 1e4))
    return st.one_of(
        typical,
        typical,
        st.floats(lower, upper),
        st.sampled_from([lower, upper, 0.0, -0.0 if lower == 0 else lower]),
        st.integers(int(max(lower, -1e4)), int(min(upper, 1e4))),
        typical.map(np.float32),
        typical.map(np.float64),
    )


def out_of_domain(spec: MetricSpec) -> st.SearchStrategy[Any]:
    beyond: list[Any] = [math.nan, math.inf, -math.inf, 1e39, -1e39, 10**400, -(10**400)]
    if spec.lower > -FLOAT32_MAX:
        beyond += [math.nextafter(spec.lower, -math.inf), spec.lower - 2, -2]
    if spec.upper < FLOAT32_MAX:
        beyond += [math.nextafter(spec.upper, math.inf), spec.upper + 0.5, 2**53 + 2]
    if spec.integer:
        beyond += [0.5, 2.25, 1e-9, np.float64(3.5)]
    return st.one_of(st.sampled_from(beyond), st.sampled_from(WRONG_TYPES))


# Built once per metric: building strategies per draw costs more than the steps themselves.
IN_DOMAIN = {spec: in_domain(spec) for spec in METRICS}
IN_DOMAIN_FLOATS = {spec: IN_DOMAIN[spec].filter(lambda v: type(v) is float) for spec in METRICS}
SAMPLES = {
    spec: st.one_of(IN_DOMAIN[spec], IN_DOMAIN[spec], IN_DOMAIN[spec], out_of_domain(spec))
    for spec in METRICS
}
BATCH_ODDITIES = st.sampled_from([math.nan, math.inf, -math.inf, 1e39, -1.0, 1.5, 0.5])


METRIC_SPECS = st.sampled_from(METRICS)


@st.composite
def single_sample(draw: st.DrawFn) -> tuple[MetricSpec, Any]:
    spec = draw(METRIC_SPECS)
    return spec, draw(SAMPLES[spec])


BATCH_SIZE = 2 * MAX_WINDOW + 5
# Plain floats with NaN, inf and out-of-range values mixed in: numpy's whole-batch path.
CLEAN_BATCHES = {
    spec: st.lists(st.one_of(IN_DOMAIN_FLOATS[spec], BATCH_ODDITIES), max_size=BATCH_SIZE)
    for spec in METRICS
}
# Anything, wrong types included: the per-sample path.
MIXED_BATCHES = {spec: st.lists(SAMPLES[spec], max_size=BATCH_SIZE) for spec in METRICS}
SHAPES = st.sampled_from(["list", "tuple", "float32-array", "clean-list", "clean-array"])


@st.composite
def batch(draw: st.DrawFn) -> tuple[MetricSpec, Any]:
    spec = draw(METRIC_SPECS)
    shape = draw(SHAPES)
    if shape.startswith("clean"):
        clean = draw(CLEAN_BATCHES[spec])
        return spec, np.asarray(clean, dtype=np.float64) if shape == "clean-array" else clean
    items = draw(MIXED_BATCHES[spec])
    if shape == "float32-array":
        with np.errstate(over="ignore"):  # 1e39 becomes inf, as the reference then sees it
            numeric = [v for v in items if isinstance(v, float | np.floating)]
            return spec, np.asarray(numeric, dtype=np.float32)
    return spec, tuple(items) if shape == "tuple" else items


def reference_bounds(spec: MetricSpec) -> tuple[float, ...]:
    """The bucket boundaries DESIGN.md asks for: the spec's, plus every alert threshold."""
    bounds = set(spec.buckets)
    entry = DEFAULT_THRESHOLDS[spec.name.value]
    if entry is not None:
        direction, thresholds = entry
        bounds.update(thresholds)
        if direction == "magnitude":
            bounds.update(-t for t in thresholds)
    return tuple(sorted(bounds))


# Every float32 is an integer multiple of 2**-149, and so is every float64 sum of them:
# scaled by 2**149 the reference sums exactly in integers.
SCALE = 2.0**149


class _Reference:
    """One metric's expected state: window, histogram, drops; statistics cached per change."""

    def __init__(self, spec: MetricSpec, window: int) -> None:
        self.spec = spec
        self.window: deque[float] = deque(maxlen=window)
        self.bounds = reference_bounds(spec)
        self.cumulative = [0] * len(self.bounds)
        self.count = 0
        self.exact_sum = 0  # scaled by SCALE
        self.abs_sum = 0.0
        self.rejected = dict.fromkeys(REASONS, 0)
        self._stats: dict[str, float] | None = None

    def record(self, value: Any) -> bool:
        reason = reference_reason(self.spec, value)
        if reason is not None:
            self.rejected[reason] += 1
            return False
        stored = f32(float(value))
        self.window.append(stored)
        self._stats = None
        for i, bound in enumerate(self.bounds):
            if stored <= bound:
                self.cumulative[i] += 1
        self.count += 1
        self.exact_sum += int(stored * SCALE)
        self.abs_sum += abs(stored)
        return True

    def clear(self) -> None:
        self.window.clear()
        self._stats = None

    def stats(self) -> dict[str, float]:
        if self._stats is None:
            self._stats = reference_stats(list(self.window))
        return self._stats

    def level(self) -> int:
        return reference_level(self.spec.name.value, self.stats()["mean"])


class MonitorMachine(RuleBasedStateMachine):
    """`GeometricSpeculationMonitor` against one reference per metric."""

    def __init__(self) -> None:
        super().__init__()
        self.monitor = GeometricSpeculationMonitor(window=1)
        self.refs: dict[str, _Reference] = {}

    @initialize(window=st.integers(1, MAX_WINDOW))
    def create(self, window: int) -> None:
        self.monitor = GeometricSpeculationMonitor(window=window, labels={"model": "m"})
        self.refs = {spec.name.value: _Reference(spec, window) for spec in METRICS}

    @rule(sample=single_sample())
    def record_one(self, sample: tuple[MetricSpec, Any]) -> None:
        spec, value = sample
        getattr(self.monitor, spec.record_call)(value)
        self.refs[spec.name.value].record(value)

    @rule(data=batch())
    def record_many(self, data: tuple[MetricSpec, Any]) -> None:
        spec, values = data
        ref = self.refs[spec.name.value]
        before = dict(ref.rejected)
        expected_accepted = sum(ref.record(v) for v in values)
        expected_rejected = {
            reason: ref.rejected[reason] - before[reason]
            for reason in REASONS
            if ref.rejected[reason] != before[reason]
        }
        accepted, rejected = self.monitor.record_batch(spec.name.value, values)
        assert accepted == expected_accepted
        assert rejected == expected_rejected

    @rule(sample=single_sample())
    def record_many_returns_kept(self, sample: tuple[MetricSpec, Any]) -> None:
        spec, value = sample
        kept = self.refs[spec.name.value].record(value)
        assert self.monitor.record_many(spec.name.value, [value]) == int(kept)

    @rule()
    def reset(self) -> None:
        self.monitor.reset()
        for ref in self.refs.values():
            ref.clear()

    @precondition(lambda self: bool(self.refs))
    @invariant()
    def windows_agree(self) -> None:
        STEPS["monitor"] += 1
        for name, ref in self.refs.items():
            assert self.monitor.window_values(name) == list(ref.window), name
            assert_window(self.monitor.window_stats(name), ref.stats())

    @precondition(lambda self: bool(self.refs))
    @invariant()
    def histograms_agree(self) -> None:
        for name, ref in self.refs.items():
            snap = self.monitor.histogram(name)
            assert snap.bounds == ref.bounds, name
            assert list(snap.cumulative) == ref.cumulative, name
            assert snap.count == ref.count, name
            error = abs(int(snap.sum * SCALE) - ref.exact_sum) / SCALE
            assert error <= ref.count * U * ref.abs_sum * 1.000001, (name, snap.sum)

    @precondition(lambda self: bool(self.refs))
    @invariant()
    def summary_agrees(self) -> None:
        summary = self.monitor.get_summary()
        assert self.monitor.rejected() == {n: r.rejected for n, r in self.refs.items()}
        levels = {}
        for name, ref in self.refs.items():
            metric = summary.metrics[name]
            assert metric.total == ref.count
            assert dict(metric.rejected) == ref.rejected
            assert_window(metric.stats, ref.stats())
            levels[name] = ref.level()
            assert int(metric.level) == levels[name], (name, metric.value)
        assert int(summary.level) == max(levels.values())
        assert int(self.monitor.check_thresholds()) == max(levels.values())
        alerting = {a.metric.value: int(a.level) for a in self.monitor.get_alerts()}
        assert alerting == {name: level for name, level in levels.items() if level}


def assert_steps_run(machine: str, before: int) -> None:
    ran = STEPS[machine] - before
    print(f"{machine}: {ran} steps checked")
    assert ran >= MIN_STEPS, f"{machine}: only {ran} steps ran, at least {MIN_STEPS} wanted"


class TestBufferMachine(BufferMachine.TestCase):
    settings = machine_settings("buffer")

    def runTest(self) -> None:
        before = STEPS["buffer"]
        super().runTest()
        assert_steps_run("buffer", before)


class TestMonitorMachine(MonitorMachine.TestCase):
    settings = machine_settings("monitor")

    def runTest(self) -> None:
        before = STEPS["monitor"]
        super().runTest()
        assert_steps_run("monitor", before)
