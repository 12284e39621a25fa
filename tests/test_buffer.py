"""MetricsBuffer against numpy and the recorded cases."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mhc_monitor import MetricsBuffer, UsageError
from mhc_monitor.buffer import percentile_of_sorted


def filled(capacity: int, pushes: list[float]) -> MetricsBuffer:
    buf = MetricsBuffer(capacity)
    for value in pushes:
        buf.push(value)
    return buf


def read(buf: MetricsBuffer, expression: str) -> object:
    if expression.startswith("percentile("):
        return buf.percentile(float(expression[len("percentile(") : -1]))
    if expression == "values":
        return buf.values()
    return getattr(buf, expression)()


BUFFER_KINDS = [
    "running-sum drift after a huge value leaves the window",
    "cached maximum initialised to the smallest positive float",
    "stale cached extreme after eviction",
    "percentile interpolation differs from numpy 'linear'",
    "population standard deviation",
]


@pytest.mark.parametrize("kind", BUFFER_KINDS)
def test_recorded_cases(cases: dict, kind: str) -> None:
    case = cases[kind]
    buf = filled(case["input"]["capacity"], case["input"]["pushes"])
    for expression, expected in case["expect"].items():
        assert read(buf, expression) == pytest.approx(expected, rel=1e-6, abs=0), expression


@pytest.mark.parametrize(
    ("capacity", "pushes", "expected_mean"),
    [
        (3, [1e16, 1, 1, 1], 1.0),
        (2, [-3e38, 3e38, 5, 7], 6.0),
        (3, [1e30, -1e30, 2, 2, 2], 2.0),
        (1, [9, 8, 7], 7.0),
    ],
)
def test_mean_has_no_memory_of_evicted_values(
    capacity: int, pushes: list[float], expected_mean: float
) -> None:
    assert filled(capacity, pushes).mean() == expected_mean


@pytest.mark.parametrize(
    ("pushes", "maximum", "minimum"),
    [
        ([-1.0, -1.5, -1.2], -1.0, -1.5),
        ([-1e-30, -2e-30], np.float32(-1e-30), np.float32(-2e-30)),
        ([0.0, -0.0], 0.0, 0.0),
    ],
)
def test_extremes_of_negative_windows(pushes: list[float], maximum: float, minimum: float) -> None:
    buf = filled(10, pushes)
    assert buf.max() == float(maximum)
    assert buf.min() == float(minimum)


def test_empty_buffer_statistics_are_nan() -> None:
    buf = MetricsBuffer(4)
    for value in (
        buf.mean(),
        buf.min(),
        buf.max(),
        buf.stddev(),
        buf.percentile(50),
        buf.latest(),
    ):
        assert math.isnan(value)
    assert len(buf) == 0
    assert buf.values() == []


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf, 1e39, "3", None, True])
def test_push_of_a_bad_value_raises_and_changes_nothing(bad: object) -> None:
    buf = filled(3, [1.0, 2.0])
    with pytest.raises(ValueError):
        buf.push(bad)  # type: ignore[arg-type]
    assert buf.values() == [1.0, 2.0]
    assert buf.mean() == 1.5


@pytest.mark.parametrize("capacity", [0, -1, 2.5, True])
def test_capacity_must_be_a_positive_integer(capacity: object) -> None:
    with pytest.raises(UsageError, match="capacity"):
        MetricsBuffer(capacity)  # type: ignore[arg-type]


@pytest.mark.parametrize("p", [-0.1, 100.5, math.nan])
def test_percentile_outside_0_100_is_refused(p: float) -> None:
    with pytest.raises(UsageError, match="percentile"):
        filled(3, [1, 2, 3]).percentile(p)


def test_values_latest_and_len_follow_the_ring() -> None:
    buf = filled(3, [1, 2, 3, 4, 5])
    assert buf.values() == [3.0, 4.0, 5.0]
    assert buf.latest() == 5.0
    assert len(buf) == 3
    assert buf.capacity == 3


floats = st.floats(min_value=-1e30, max_value=1e30, allow_nan=False).map(
    lambda x: float(np.float32(x))
)


@settings(max_examples=300, deadline=None)
@given(
    capacity=st.integers(min_value=1, max_value=64),
    pushes=st.lists(floats, min_size=1, max_size=300),
    p=st.floats(min_value=0, max_value=100),
)
def test_statistics_agree_with_numpy(capacity: int, pushes: list[float], p: float) -> None:
    buf = filled(capacity, pushes)
    expected = np.asarray(pushes[-capacity:], dtype=np.float32).astype(np.float64)
    values = buf.values()
    assert values == expected.tolist()
    assert buf.mean() == np.mean(values)
    assert buf.min() == np.min(values)
    assert buf.max() == np.max(values)
    assert buf.percentile(p) == np.percentile(values, p)
    for q in (50, 90, 95, 99):
        assert getattr(buf.stats(), f"p{q}") == np.percentile(values, q)
    assert buf.stddev() == pytest.approx(
        np.std(values), rel=1e-9, abs=1e-9 * np.max(np.abs(values))
    )
    assert buf.latest() == values[-1]


@settings(max_examples=200, deadline=None)
@given(
    values=st.lists(st.floats(-1e6, 1e6, allow_nan=False), min_size=1, max_size=50).map(sorted),
    p=st.floats(min_value=0, max_value=100),
)
def test_percentile_of_sorted_is_numpy_linear_bit_for_bit(values: list[float], p: float) -> None:
    arr = np.asarray(values, dtype=np.float64)
    assert percentile_of_sorted(arr, p) == np.percentile(arr, p, method="linear")


@settings(max_examples=200, deadline=None)
@given(
    capacity=st.integers(min_value=1, max_value=1500),
    pushes=st.lists(floats, min_size=1, max_size=2000),
)
def test_summary_statistics_are_numpy_bit_for_bit(capacity: int, pushes: list[float]) -> None:
    buf = MetricsBuffer(capacity)
    for value in pushes:
        buf.push(value)
    values = np.asarray(buf.values())
    stats = buf.stats()
    assert stats.mean == np.mean(values)
    assert stats.stddev == np.std(values)
    assert (stats.min, stats.max) == (np.min(values), np.max(values))
    expected = np.percentile(values, (50, 90, 95, 99))
    assert [stats.p50, stats.p90, stats.p95, stats.p99] == expected.tolist()
