"""The monitor: thresholds, alerts, drops, batches, threads, summary."""

from __future__ import annotations

import math
import threading

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mhc_monitor import (
    AlertConfig,
    AlertLevel,
    ConfigError,
    GeometricSpeculationMonitor,
    MetricName,
    UsageError,
)
from mhc_monitor.alerts import format_reading, make_dedup_key
from mhc_monitor.buffer import MetricsBuffer
from mhc_monitor.exposition import format_prometheus_metrics
from mhc_monitor.metrics import METRICS, spec_for

L = AlertLevel

# (record call, value, expected level): every boundary of every default threshold.
BOUNDARIES = [
    ("record_acceptance", 0.71, L.INFO),
    ("record_acceptance", 0.7, L.INFO),
    ("record_acceptance", 0.69, L.WARNING),
    ("record_acceptance", 0.5, L.WARNING),
    ("record_acceptance", 0.49, L.CRITICAL),
    ("record_acceptance", 0.3, L.CRITICAL),
    ("record_acceptance", 0.29, L.EMERGENCY),
    ("record_acceptance", 0.0, L.EMERGENCY),
    ("record_latency", 50.0, L.INFO),
    ("record_latency", 50.1, L.WARNING),
    ("record_latency", 100.0, L.WARNING),
    ("record_latency", 100.1, L.CRITICAL),
    ("record_latency", 500.0, L.CRITICAL),
    ("record_latency", 500.1, L.EMERGENCY),
    ("record_curvature", 2.0, L.INFO),
    ("record_curvature", -2.0, L.INFO),
    ("record_curvature", 2.01, L.WARNING),
    ("record_curvature", -2.01, L.WARNING),
    ("record_curvature", -5.5, L.CRITICAL),
    ("record_curvature", 10.0, L.CRITICAL),
    ("record_curvature", -15.0, L.EMERGENCY),
    ("record_energy", 100.0, L.INFO),
    ("record_energy", 100.5, L.WARNING),
    ("record_energy", 500.5, L.CRITICAL),
    ("record_energy", 1000.5, L.EMERGENCY),
    ("record_stability", 0.9, L.INFO),
    ("record_stability", 0.89, L.WARNING),
    ("record_stability", 0.8, L.WARNING),
    ("record_stability", 0.79, L.CRITICAL),
    ("record_stability", 0.49, L.EMERGENCY),
    ("record_sinkhorn_iters", 10_000, L.INFO),
]


@pytest.mark.parametrize(("call", "value", "level"), BOUNDARIES)
def test_threshold_boundaries(call: str, value: float, level: AlertLevel) -> None:
    monitor = GeometricSpeculationMonitor()
    getattr(monitor, call)(value)
    assert monitor.check_thresholds() is level
    alerts = monitor.get_alerts()
    if level is L.INFO:
        assert alerts == []
    else:
        (alert,) = alerts
        assert alert.level is level
        assert alert.value == pytest.approx(value, rel=1e-6)


def test_recorded_cases(cases: dict) -> None:
    case = cases["threshold boundary is strict"]
    monitor = GeometricSpeculationMonitor()
    for value in case["input"]["record_acceptance"]:
        monitor.record_acceptance(value)
    for value in case["input"]["record_latency"]:
        monitor.record_latency(value)
    assert monitor.check_thresholds().name == case["expect"]["check_thresholds"]

    case = cases["curvature compares the magnitude of the window mean"]
    monitor = GeometricSpeculationMonitor()
    for value in case["input"]["record_curvature"]:
        monitor.record_curvature(value)
    assert monitor.check_thresholds().name == case["expect"]["check_thresholds"]


def test_curvature_is_the_magnitude_of_the_mean_not_the_mean_of_magnitudes() -> None:
    monitor = GeometricSpeculationMonitor()
    for value in (-9.0, 9.0, -9.0, 9.0):
        monitor.record_curvature(value)
    assert monitor.check_thresholds() is L.INFO


def test_empty_windows_never_alert() -> None:
    monitor = GeometricSpeculationMonitor()
    assert monitor.check_thresholds() is L.INFO
    assert monitor.get_alerts() == []


def test_every_thresholded_metric_alerts_with_the_threshold_it_crossed() -> None:
    config = AlertConfig(sinkhorn_iters_warning=20, sinkhorn_iters_critical=50)
    monitor = GeometricSpeculationMonitor(config, labels={"model": "m", "instance": "i"})
    monitor.record_acceptance(0.4)
    monitor.record_curvature(-6.0)
    monitor.record_energy(2000.0)
    monitor.record_latency(120.0)
    monitor.record_stability(0.85)
    monitor.record_sinkhorn_iters(30)
    got = {a.metric: (a.level, a.threshold) for a in monitor.get_alerts()}
    assert got == {
        MetricName.ACCEPTANCE: (L.CRITICAL, 0.5),
        MetricName.CURVATURE: (L.CRITICAL, 5.0),
        MetricName.ENERGY: (L.EMERGENCY, 1000.0),
        MetricName.LATENCY: (L.CRITICAL, 100.0),
        MetricName.STABILITY: (L.WARNING, 0.9),
        MetricName.SINKHORN_ITERATIONS: (L.WARNING, 20.0),
    }
    for alert in monitor.get_alerts():
        assert alert.labels == {"model": "m", "instance": "i"}
        assert alert.source == "i"
        assert alert.timestamp.utcoffset() is not None
        assert alert.dedup_key == make_dedup_key("i", alert.labels, alert.metric.value)


@pytest.mark.parametrize(
    ("statistic", "expected"),
    [
        ("mean", L.INFO),
        ("p50", L.INFO),
        ("p99", L.EMERGENCY),
        ("max", L.EMERGENCY),
        ("min", L.INFO),
        ("last", L.INFO),
    ],
)
def test_the_evaluated_statistic_is_configurable(statistic: str, expected: AlertLevel) -> None:
    monitor = GeometricSpeculationMonitor(AlertConfig(statistics={"latency": statistic}))
    for value in [10.0] * 97 + [900.0, 900.0, 10.0]:
        monitor.record_latency(value)
    assert monitor.check_thresholds() is expected


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"acceptance_rate_warning": 0.5, "acceptance_rate_critical": 0.6}, "strictly above"),
        ({"latency_warning_ms": 100.0, "latency_critical_ms": 100.0}, "strictly below"),
        ({"stability_warning": 1.5}, "outside stability's domain"),
        ({"energy_warning": math.nan}, "finite"),
        ({"energy_warning": "high"}, "must be a number"),
        ({"statistics": {"latency": "p42"}}, "not one of"),
        ({"statistics": {"speed": "mean"}}, "unknown metric"),
    ],
)
def test_alert_config_names_the_problem(kwargs: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        AlertConfig(**kwargs)


# (call, bad value, reason)
DROPS = [
    ("record_acceptance", 1.3, "out_of_range"),
    ("record_acceptance", -0.1, "out_of_range"),
    ("record_latency", -2.0, "out_of_range"),
    ("record_latency", math.nan, "nan"),
    ("record_energy", math.inf, "infinite"),
    ("record_curvature", -math.inf, "infinite"),
    ("record_stability", "0.9", "invalid_type"),
    ("record_stability", None, "invalid_type"),
    ("record_latency", True, "invalid_type"),
    ("record_sinkhorn_iters", 3.5, "not_an_integer"),
    ("record_sinkhorn_iters", -1, "out_of_range"),
    ("record_energy", 1e39, "out_of_range"),
    ("record_energy", 10**400, "out_of_range"),
]


@pytest.mark.parametrize(("call", "value", "reason"), DROPS)
def test_bad_values_are_dropped_and_counted_never_raised(
    call: str, value: object, reason: str
) -> None:
    monitor = GeometricSpeculationMonitor()
    getattr(monitor, call)(value)
    getattr(monitor, call)(value)
    metric = next(
        m for m in MetricName if call.endswith(m.value[:7]) or m.value.startswith(call[7:13])
    )
    rejected = monitor.rejected()[metric.value]
    assert rejected[reason] == 2
    assert sum(rejected.values()) == 2
    assert monitor.window_stats(metric).count == 0
    assert monitor.get_summary().metrics[metric.value].rejected[reason] == 2


@pytest.mark.parametrize("value", [np.float32(0.5), np.float64(0.5), np.int64(1), 1, 0.5])
def test_numpy_and_int_scalars_are_accepted(value: object) -> None:
    monitor = GeometricSpeculationMonitor()
    monitor.record_acceptance(value)  # type: ignore[arg-type]
    assert monitor.window_stats("acceptance").count == 1


def test_record_many_validates_like_the_single_calls() -> None:
    monitor = GeometricSpeculationMonitor(window=4)
    accepted, rejected = monitor.record_batch(
        "acceptance", [0.1, 0.2, math.nan, 1.5, -math.inf, 0.3, 0.4, 0.5]
    )
    assert accepted == 5
    assert rejected == {"nan": 1, "out_of_range": 1, "infinite": 1}
    assert monitor.window_values("acceptance") == pytest.approx([0.2, 0.3, 0.4, 0.5])
    assert monitor.histogram("acceptance").count == 5
    assert monitor.record_many("sinkhorn_iterations", np.array([1.0, 2.5, 3.0])) == 2
    assert monitor.rejected()["sinkhorn_iterations"]["not_an_integer"] == 1
    with pytest.raises(UsageError, match="unknown metric 'speed'"):
        monitor.record_many("speed", [1.0])


@pytest.mark.parametrize("window", [1, 7, 100])
def test_histogram_counts_every_sample_across_evictions(window: int) -> None:
    rng = np.random.default_rng(window)
    values = rng.uniform(0, 600, size=2500)
    monitor = GeometricSpeculationMonitor(window=window)
    for v in values[:1000]:
        monitor.record_latency(float(v))
    monitor.record_many("latency", values[1000:2200])
    for v in values[2200:]:
        monitor.record_latency(float(v))
    snap = monitor.histogram("latency")
    stored = values.astype(np.float32).astype(np.float64)
    expected = [int((stored <= bound).sum()) for bound in snap.bounds]
    assert list(snap.cumulative) == expected
    assert snap.count == 2500
    assert snap.sum == pytest.approx(stored.sum(), rel=1e-12)
    assert 50.0 in snap.bounds and 100.0 in snap.bounds and 500.0 in snap.bounds
    assert monitor.window_values("latency") == stored[-window:].tolist()


def test_eight_threads_recording_at_once_lose_nothing() -> None:
    monitor = GeometricSpeculationMonitor(window=1000)
    per_thread = 20_000
    start = threading.Barrier(8)

    def work(seed: int) -> None:
        start.wait()
        for i in range(per_thread):
            monitor.record_latency(float((seed * per_thread + i) % 97))

    threads = [threading.Thread(target=work, args=(s,)) for s in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    snap = monitor.histogram("latency")
    assert snap.count == 8 * per_thread
    everything = np.array(
        [float((s * per_thread + i) % 97) for s in range(8) for i in range(per_thread)]
    )
    assert snap.sum == everything.sum()
    assert monitor.get_summary().metrics["latency"].total == 8 * per_thread


@pytest.mark.parametrize(
    ("labels", "message"),
    [
        ({"bad-name": "x"}, "not a valid Prometheus label name"),
        ({"__name": "x"}, "not a valid Prometheus label name"),
        ({"le": "x"}, "reserved"),
        ({"model": 3}, "str value"),
        ({"model": "x" * 300}, "at most 256"),
    ],
)
def test_constant_labels_are_validated(labels: dict, message: str) -> None:
    with pytest.raises(UsageError, match=message):
        GeometricSpeculationMonitor(labels=labels)


def test_window_is_capped_with_a_clear_error() -> None:
    with pytest.raises(UsageError, match="window must be at most 10000000 samples, got 10000001"):
        GeometricSpeculationMonitor(window=10_000_001)


def test_reset_empties_windows_but_cumulative_counts_go_on() -> None:
    monitor = GeometricSpeculationMonitor()
    monitor.record_acceptance(0.1)
    monitor.record_acceptance(2.0)
    assert monitor.check_thresholds() is L.EMERGENCY
    monitor.reset()
    assert monitor.check_thresholds() is L.INFO
    assert monitor.window_stats("acceptance").count == 0
    assert monitor.histogram("acceptance").count == 1
    assert monitor.rejected()["acceptance"]["out_of_range"] == 1


def test_summary_reports_statistics_level_and_threshold() -> None:
    monitor = GeometricSpeculationMonitor(labels={"model": "m"})
    values = [40.0, 60.0, 80.0, 100.0]
    for v in values:
        monitor.record_latency(v)
    summary = monitor.get_summary()
    lat = summary.metrics["latency"].to_dict()
    assert lat["mean"] == np.mean(values)
    assert lat["p90"] == np.percentile(values, 90)
    assert lat["stddev"] == pytest.approx(np.std(values))
    assert lat["level"] == "warning"
    assert lat["threshold"] == 50.0
    assert lat["count"] == 4
    assert summary.to_dict()["level"] == "warning"
    assert summary.to_dict()["metrics"]["energy"]["mean"] is None


batch_items = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.floats(-2.0, 2.0),
    st.integers(-5, 80),
    st.integers(2**60, 2**1100),
    st.booleans(),
    st.none(),
    st.text(max_size=3),
    st.sampled_from([np.float32(0.25), np.float64(3.5), np.int64(7), np.bool_(True)]),
)


@settings(max_examples=150, deadline=None)
@given(
    metric=st.sampled_from([spec.name.value for spec in METRICS]),
    items=st.lists(batch_items, max_size=40),
    as_array=st.booleans(),
)
def test_record_many_keeps_and_drops_exactly_what_single_calls_do(
    metric: str, items: list[object], as_array: bool
) -> None:
    singles = GeometricSpeculationMonitor(window=16)
    batched = GeometricSpeculationMonitor(window=16)
    record = getattr(singles, spec_for(metric).record_call)
    for item in items:
        record(item)
    values: object = items
    numeric = all(type(i) in (float, int) and abs(i) < 2**1000 for i in items)  # type: ignore[operator]
    if as_array and numeric:
        values = np.asarray(items, dtype=np.float64)
    accepted, rejected = batched.record_batch(metric, values)  # type: ignore[arg-type]
    assert batched.window_values(metric) == singles.window_values(metric)
    assert batched.histogram(metric) == singles.histogram(metric)
    assert batched.rejected() == singles.rejected()
    assert accepted == singles.histogram(metric).count
    assert rejected == {k: n for k, n in singles.rejected()[metric].items() if n}


def test_record_many_does_not_convert_strings_bools_or_none() -> None:
    monitor = GeometricSpeculationMonitor()
    accepted, rejected = monitor.record_batch("latency", ["1.5", True, None, 2.0, 3])
    assert (accepted, rejected) == (2, {"invalid_type": 3})
    assert monitor.window_values("latency") == [2.0, 3.0]
    assert monitor.record_batch("latency", (v for v in (4.0, -1.0))) == (1, {"out_of_range": 1})
    assert monitor.record_batch("latency", 5.0) == (1, {})
    assert monitor.record_batch("latency", np.array([[6.0], [7.0]])) == (2, {})
    assert monitor.window_values("latency") == [2.0, 3.0, 4.0, 5.0, 6.0, 7.0]


def test_window_statistics_are_computed_once_per_change(monkeypatch: pytest.MonkeyPatch) -> None:
    computed: list[int] = []
    original = MetricsBuffer._compute

    def counted(self: MetricsBuffer) -> object:
        computed.append(len(self))
        return original(self)

    monkeypatch.setattr(MetricsBuffer, "_compute", counted)
    monitor = GeometricSpeculationMonitor(labels={"model": "m"})
    monitor.record_many("latency", [10.0, 20.0, 30.0])
    monitor.record_acceptance(0.9)
    # A scrape, a summary and an evaluation in the same second share one computation.
    format_prometheus_metrics(monitor)
    summary = monitor.get_summary()
    monitor.check_thresholds()
    monitor.get_alerts()
    assert sorted(computed) == [1, 3]
    computed.clear()
    assert monitor.get_summary().metrics == summary.metrics
    format_prometheus_metrics(monitor)
    assert computed == []
    monitor.record_latency(40.0)
    format_prometheus_metrics(monitor)
    monitor.get_summary()
    assert computed == [4]


def test_summary_follows_drops_resets_and_a_new_config() -> None:
    monitor = GeometricSpeculationMonitor()
    monitor.record_latency(60.0)
    first = monitor.get_summary().metrics["latency"]
    assert first.level is L.WARNING and first.total == 1
    monitor.record_latency(-1.0)
    assert monitor.get_summary().metrics["latency"].rejected["out_of_range"] == 1
    monitor.config = AlertConfig(latency_warning_ms=70.0)
    assert monitor.get_summary().metrics["latency"].level is L.INFO
    monitor.reset()
    monitor.record_latency(60.0)
    after = monitor.get_summary().metrics["latency"]
    assert (after.stats.count, after.total) == (1, 2)


def test_a_subclass_overriding_a_record_call_is_called() -> None:
    seen: list[float] = []

    class Traced(GeometricSpeculationMonitor):
        def record_latency(self, ms: float) -> None:
            seen.append(ms)
            super().record_latency(ms)

    monitor = Traced()
    monitor.record_latency(5.0)
    monitor.record_acceptance(0.5)
    assert seen == [5.0]
    assert monitor.window_values("latency") == [5.0]
    assert monitor.window_values("acceptance") == [0.5]


def test_reads_between_samples_never_lose_one_from_the_histogram() -> None:
    # A read folds mid-ring; the next fold must happen before those samples are overwritten.
    monitor = GeometricSpeculationMonitor(window=5)
    for i in range(23):
        monitor.record_latency(float(i))
        if i % 3 == 0:
            monitor.histogram("latency")
    snap = monitor.histogram("latency")
    assert snap.count == 23
    assert snap.sum == sum(range(23))


@settings(max_examples=300, deadline=None)
@given(
    metric=st.sampled_from([spec.name.value for spec in METRICS]),
    value=st.one_of(
        st.floats(allow_nan=True, allow_infinity=False),
        st.sampled_from([0.7, 0.5, 0.3, 50.0, 100.0, 500.0, -2.0, 2.0, 5.0, 0.9, 30.0]),
        st.sampled_from([0.69999999, 50.000001, -5.0000001, 0.29999998]),
    ),
    statistic=st.sampled_from(["mean", "p99", "min", "last"]),
)
def test_the_monitors_evaluation_is_the_configs(metric: str, value: float, statistic: str) -> None:
    config = AlertConfig(sinkhorn_iters_warning=30, statistics={metric: statistic})
    monitor = GeometricSpeculationMonitor(config)
    stats = MetricsBuffer(1).stats()
    stats = type(stats)(1, *([value] * 9))
    level, evaluated, threshold = monitor.evaluate_stats(metric, stats)
    assert (level, threshold) == config.evaluate(metric, value)
    assert evaluated == value or (math.isnan(evaluated) and math.isnan(value))


@pytest.mark.parametrize(
    ("samples", "expected"),
    [
        # float32(0.2, 0.9, 0.4) average to 0.49999999...: the message must not read "0.5 < 0.5".
        (
            [0.2, 0.9, 0.4],
            "acceptance mean 0.499999995 is below the critical threshold 0.5",
        ),
        ([0.25], "acceptance mean 0.25 is below the emergency threshold 0.3"),
    ],
)
def test_alert_messages_never_show_a_value_equal_to_the_threshold_it_crossed(
    samples: list[float], expected: str
) -> None:
    monitor = GeometricSpeculationMonitor()
    for value in samples:
        monitor.record_acceptance(value)
    (alert,) = monitor.get_alerts()
    assert alert.message == expected


@pytest.mark.parametrize(
    ("value", "reference", "text"),
    [(0.5, 0.5, "0.5"), (0.49999999, 0.5, "0.49999999"), (123.5, 100.0, "123.5")],
)
def test_format_reading(value: float, reference: float, text: str) -> None:
    assert format_reading(value, reference) == text


class _BadFloat:
    def __float__(self) -> float:
        raise RuntimeError("a caller's broken __float__")


@pytest.mark.parametrize("metric", ["latency", "sinkhorn_iterations", "acceptance"])
def test_a_value_whose_float_conversion_raises_is_dropped_not_raised(metric: str) -> None:
    monitor = GeometricSpeculationMonitor()
    record = {
        "latency": monitor.record_latency,
        "sinkhorn_iterations": monitor.record_sinkhorn_iters,
        "acceptance": monitor.record_acceptance,
    }[metric]
    record(_BadFloat())  # type: ignore[arg-type]
    assert monitor.record_batch(metric, [_BadFloat(), 1.0]) == (1, {"invalid_type": 1})
    assert monitor.rejected()[metric]["invalid_type"] == 2
    assert monitor.window_values(metric) == [1.0]


@pytest.mark.parametrize("value", ["abc", b"12", bytearray(b"12"), ""])
def test_a_string_batch_is_one_value_of_the_wrong_type(value: object) -> None:
    monitor = GeometricSpeculationMonitor()
    assert monitor.record_batch("latency", value) == (0, {"invalid_type": 1})  # type: ignore[arg-type]
    assert monitor.window_values("latency") == []
