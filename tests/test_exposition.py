"""Prometheus exposition: names, units, values that mirror evaluation, promtool."""

from __future__ import annotations

import shutil
import subprocess

import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families

from mhc_monitor import AlertConfig, GeometricSpeculationMonitor, format_prometheus_metrics
from mhc_monitor.alerts import to_float32
from mhc_monitor.metrics import METRICS


def busy_monitor(labels: dict[str, str] | None = None) -> GeometricSpeculationMonitor:
    rng = np.random.default_rng(7)
    monitor = GeometricSpeculationMonitor(
        AlertConfig(sinkhorn_iters_warning=30), window=500, labels=labels or {"model": "m1"}
    )
    for _ in range(1500):
        monitor.record_acceptance(float(rng.uniform(0.4, 1.0)))
        monitor.record_curvature(float(rng.normal(0, 3)))
        monitor.record_energy(float(rng.uniform(0, 300)))
        monitor.record_latency(float(rng.gamma(2, 15)))
        monitor.record_stability(float(rng.uniform(0.7, 1.0)))
        monitor.record_sinkhorn_iters(int(rng.integers(1, 60)))
    monitor.record_latency(-5.0)
    monitor.record_acceptance(float("nan"))
    return monitor


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def test_promtool_check_metrics_prints_nothing() -> None:
    promtool = shutil.which("promtool")
    assert promtool, "promtool is required (Debian package prometheus)"
    text = format_prometheus_metrics(busy_monitor({"model": "m1", "instance": "a:9477"}))
    result = subprocess.run(
        [promtool, "check", "metrics"], input=text, capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == "" and result.stderr == ""


def test_label_values_are_escaped(cases: dict) -> None:
    case = cases["label value escaping in the text exposition"]
    text = format_prometheus_metrics(GeometricSpeculationMonitor(labels=case["input"]["labels"]))
    assert case["expect"]["label as written on /metrics"] in text


def test_window_gauges_carry_the_evaluated_values_in_base_units() -> None:
    monitor = busy_monitor()
    got = samples(format_prometheus_metrics(monitor))
    for spec in METRICS:
        stats = monitor.window_stats(spec.name)
        for stat in ("mean", "p50", "p90", "p95", "p99", "min", "max", "last", "stddev"):
            key = (spec.window_series, (("model", "m1"), ("stat", stat)))
            assert got[key] == stats.get(stat) * spec.scale, (spec.name, stat)
        level, _, _ = monitor.evaluate(spec.name)
        assert got[("mhc_alert_level", (("metric", spec.name.value), ("model", "m1")))] == level


def test_histograms_are_cumulative_in_base_units_with_thresholds_as_buckets() -> None:
    monitor = busy_monitor()
    got = samples(format_prometheus_metrics(monitor))
    latency = {
        float(dict(labels)["le"]): value
        for (name, labels), value in got.items()
        if name == "mhc_latency_seconds_bucket"
    }
    for threshold_s in (0.05, 0.1, 0.5):
        assert threshold_s in latency
    counts = [latency[le] for le in sorted(latency)]
    assert counts == sorted(counts)
    assert latency[float("inf")] == 1500
    assert got[("mhc_latency_seconds_count", (("model", "m1"),))] == 1500
    snap = monitor.histogram("latency")
    assert got[("mhc_latency_seconds_sum", (("model", "m1"),))] == pytest.approx(snap.sum / 1000)
    curvature_les = {
        float(dict(labels)["le"])
        for (name, labels), _ in got.items()
        if name == "mhc_curvature_bucket"
    }
    assert {-10.0, -5.0, -2.0, 2.0, 5.0, 10.0} <= curvature_les
    sinkhorn_les = {
        float(dict(labels)["le"])
        for (name, labels), _ in got.items()
        if name == "mhc_sinkhorn_iterations_bucket"
    }
    assert 30.0 in sinkhorn_les


def test_thresholds_rejections_and_build_info() -> None:
    got = samples(format_prometheus_metrics(busy_monitor()))
    key = ("mhc_alert_threshold", (("level", "warning"), ("metric", "latency"), ("model", "m1")))
    assert got[key] == to_float32(50.0) * 0.001
    key = (
        "mhc_alert_threshold",
        (("level", "warning"), ("metric", "acceptance"), ("model", "m1")),
    )
    assert got[key] == to_float32(0.7)
    rej = (
        "mhc_samples_rejected_total",
        (("metric", "latency"), ("model", "m1"), ("reason", "out_of_range")),
    )
    assert got[rej] == 1
    rej = (
        "mhc_samples_rejected_total",
        (("metric", "acceptance"), ("model", "m1"), ("reason", "nan")),
    )
    assert got[rej] == 1
    assert any(name == "mhc_build_info" for name, _ in got)


def test_an_empty_window_exposes_no_window_gauge() -> None:
    text = format_prometheus_metrics(GeometricSpeculationMonitor())
    assert "mhc_latency_window_seconds{" not in text
    assert 'mhc_window_samples{metric="latency"} 0.0' in text
