"""Prometheus exposition: names, units, values that mirror evaluation, promtool."""

from __future__ import annotations

import shutil
import subprocess

import numpy as np
import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.openmetrics.exposition import generate_latest as generate_openmetrics
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.utils import floatToGoString

from mhc_monitor import AlertConfig, GeometricSpeculationMonitor, format_prometheus_metrics
from mhc_monitor.alerts import to_float32
from mhc_monitor.exposition import EXPOSED_STATS, MonitorCollector
from mhc_monitor.metrics import METRICS
from mhc_monitor.monitor import _Window
from mhc_monitor.service import create_app
from sidecar import client, running


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


def reference_text(collector: MonitorCollector, *, openmetrics: bool = False) -> str:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)
    encode = generate_openmetrics if openmetrics else generate_latest
    return encode(registry).decode("utf-8")


def changing_fleet() -> list[GeometricSpeculationMonitor]:
    escaped = {"zone": 'a "b" \\ c\nd', "model": "m", "instance": "i0"}
    return [
        busy_monitor(escaped),
        GeometricSpeculationMonitor(labels={**escaped, "instance": "i1"}, window=7),
        GeometricSpeculationMonitor(labels={"model": "other"}),
    ]


def change(monitors: list[GeometricSpeculationMonitor], step: int) -> None:
    rng = np.random.default_rng(step)
    first, second, _ = monitors
    first.record_many("latency", rng.gamma(2, 15, 40))
    first.record_curvature(-20.0)
    second.record_many("sinkhorn_iterations", rng.integers(0, 80, 3))
    second.record_energy(-1.0)
    if step == 2:
        first.reset()
    if step == 3:
        # Counts past 1e6 switch the value format to Go's exponent form.
        second.record_many("acceptance", np.full(1_200_000, 0.5))


@pytest.mark.parametrize("openmetrics", [False, True])
def test_render_is_byte_for_byte_what_generate_latest_writes(openmetrics: bool) -> None:
    monitors = changing_fleet()
    collector = MonitorCollector(monitors)
    for step in range(5):
        rendered = collector.render(openmetrics=openmetrics)
        if openmetrics:
            rendered += "# EOF\n"
        assert rendered == reference_text(collector, openmetrics=openmetrics), step
        assert collector.render(openmetrics=openmetrics) == rendered.removesuffix("# EOF\n")
        change(monitors, step)


def test_render_of_no_monitor_and_of_a_monitor_without_labels() -> None:
    assert MonitorCollector([]).render() == ""
    bare = MonitorCollector(GeometricSpeculationMonitor(), build_info=False)
    assert bare.render() == reference_text(bare)
    assert "mhc_build_info" not in bare.render()


def test_unchanged_windows_are_not_rendered_again(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []
    original = _Window.exposition_state

    def counted(self: _Window) -> object:
        calls.append(self.spec.name.value)
        return original(self)

    monkeypatch.setattr(_Window, "exposition_state", counted)
    monitor = busy_monitor()
    first = format_prometheus_metrics(monitor)
    assert len(calls) == len(METRICS)
    calls.clear()
    assert format_prometheus_metrics(monitor) == first
    assert calls == []
    monitor.record_latency(10.0)
    monitor.record_latency(-1.0)
    second = format_prometheus_metrics(monitor)
    assert calls == ["latency"]
    assert second != first
    assert (
        samples(second)[
            (
                "mhc_samples_rejected_total",
                (("metric", "latency"), ("model", "m1"), ("reason", "out_of_range")),
            )
        ]
        == 2
    )


def test_rendered_exposition_parses_back_to_the_monitors_state() -> None:
    monitors = changing_fleet()
    collector = MonitorCollector(monitors)
    for step in range(4):
        collector.render()
        change(monitors, step)
        got = samples(collector.render())
        for monitor in monitors:
            base = tuple(sorted((k, monitor.labels.get(k, "")) for k in monitors[0].labels))
            drops = monitor.rejected()
            for spec in METRICS:
                snap = monitor.histogram(spec.name)
                for bound, count in zip(snap.bounds, snap.cumulative, strict=True):
                    le = floatToGoString(bound * spec.scale)
                    key = (f"{spec.series}_bucket", tuple(sorted((*base, ("le", le)))))
                    assert got[key] == count
                inf = (f"{spec.series}_bucket", tuple(sorted((*base, ("le", "+Inf")))))
                assert got[inf] == snap.count
                stats = monitor.window_stats(spec.name)
                for stat in EXPOSED_STATS:
                    key = (spec.window_series, tuple(sorted((*base, ("stat", stat)))))
                    if stats.count:
                        assert got[key] == stats.get(stat) * spec.scale
                    else:
                        assert key not in got
                metric = ("metric", spec.name.value)
                key = ("mhc_window_samples", tuple(sorted((*base, metric))))
                assert got[key] == stats.count
                key = ("mhc_alert_level", tuple(sorted((*base, metric))))
                assert got[key] == monitor.evaluate(spec.name)[0]
                for reason, n in drops[spec.name.value].items():
                    labels = tuple(sorted((*base, metric, ("reason", reason))))
                    assert got[("mhc_samples_rejected_total", labels)] == n


def test_sidecar_metrics_serve_the_registry_bytes_in_both_formats() -> None:
    monitor = busy_monitor({"model": "m", "instance": "a"})
    app = create_app(monitor)
    sidecar = app.state.sidecar
    accept_om = "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5"
    with running(app) as url, client(url) as http:
        for accept, encode in ((accept_om, generate_openmetrics), ("", generate_latest)):
            for _ in range(2):
                monitor.record_latency(12.0)
                r = http.get("/metrics", headers={"accept": accept})
                assert r.status_code == 200
                assert r.content == encode(sidecar.registry)
