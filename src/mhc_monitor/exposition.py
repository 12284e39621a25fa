"""Prometheus exposition of a monitor, on prometheus_client.

Per metric: a cumulative histogram in base units whose bucket boundaries
include the alert thresholds, window gauges (`stat="mean"`, `"p99"`, ...) that
carry exactly the values the in-process evaluation uses, the number of samples
in the window, the alert level and the thresholds. Plus dropped samples by
reason and build information. The monitor's constant labels ride on every
series.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from importlib import metadata

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from .alerts import to_float32
from .metrics import METRICS, MetricSpec
from .monitor import REJECT_REASONS, GeometricSpeculationMonitor

__all__ = ["EXPOSED_STATS", "MonitorCollector", "format_prometheus_metrics", "package_version"]

#: The window statistics exposed as `stat` label values, in order.
EXPOSED_STATS: tuple[str, ...] = (
    "mean",
    "p50",
    "p90",
    "p95",
    "p99",
    "min",
    "max",
    "last",
    "stddev",
)


def package_version() -> str:
    """The installed mhc-monitor version, or "unknown" when running from a source tree."""
    try:
        return metadata.version("mhc-monitor")
    except metadata.PackageNotFoundError:
        return "unknown"


class MonitorCollector(Collector):
    """A prometheus_client collector for one or more monitors sharing label names.

    Register it on a `CollectorRegistry`; every scrape reads the monitors'
    current state. Monitors in one collector must use the same constant label
    names (different values: one series per monitor).
    """

    def __init__(
        self,
        monitors: GeometricSpeculationMonitor | Iterable[GeometricSpeculationMonitor],
        *,
        build_info: bool = True,
    ) -> None:
        if isinstance(monitors, GeometricSpeculationMonitor):
            monitors = [monitors]
        self._monitors = list(monitors)
        self._build_info = build_info

    def add(self, monitor: GeometricSpeculationMonitor) -> None:
        """Expose one more monitor through this collector."""
        self._monitors.append(monitor)

    def describe(self) -> list[Metric]:
        # Unchecked registration: the label sets depend on the monitors.
        return []

    def collect(self) -> Iterator[Metric]:
        if not self._monitors:
            return
        names = list(self._monitors[0].labels)
        for spec in METRICS:
            yield from self._metric_families(spec, names)
        yield from self._common_families(names)

    def _metric_families(self, spec: MetricSpec, names: list[str]) -> Iterator[Metric]:
        unit = f" Unit: {spec.unit}." if spec.unit == "seconds" else ""
        hist = HistogramMetricFamily(
            spec.series, f"{spec.help}{unit} Every sample ever recorded.", labels=names
        )
        gauge = GaugeMetricFamily(
            spec.window_series,
            f"{spec.help} Window statistics, as evaluated for alerts.",
            labels=[*names, "stat"],
        )
        scale = spec.scale
        for monitor in self._monitors:
            values = _label_values(monitor.labels, names)
            snap = monitor.histogram(spec.name)
            buckets = [
                (floatToGoString(bound * scale), float(count))  # type: ignore[no-untyped-call]
                for bound, count in zip(snap.bounds, snap.cumulative, strict=True)
            ]
            buckets.append(("+Inf", float(snap.count)))
            hist.add_metric(values, buckets, snap.sum * scale)
            stats = monitor.window_stats(spec.name)
            if stats.count:
                for stat in EXPOSED_STATS:
                    gauge.add_metric([*values, stat], stats.get(stat) * scale)
        yield hist
        yield gauge

    def _common_families(self, names: list[str]) -> Iterator[Metric]:
        samples = GaugeMetricFamily(
            "mhc_window_samples",
            "Samples currently in the metric's window.",
            labels=[*names, "metric"],
        )
        level = GaugeMetricFamily(
            "mhc_alert_level",
            "In-process alert level of the metric: 0 info, 1 warning, 2 critical, 3 emergency.",
            labels=[*names, "metric"],
        )
        threshold = GaugeMetricFamily(
            "mhc_alert_threshold",
            "Configured alert threshold in base units, at the float32 precision evaluated.",
            labels=[*names, "metric", "level"],
        )
        rejected = CounterMetricFamily(
            "mhc_samples_rejected",
            "Samples dropped because they were invalid, by metric and reason.",
            labels=[*names, "metric", "reason"],
        )
        for monitor in self._monitors:
            values = _label_values(monitor.labels, names)
            drops = monitor.rejected()
            for spec in METRICS:
                metric = spec.name.value
                evaluated, _, _ = monitor.evaluate(spec.name)
                samples.add_metric([*values, metric], monitor.window_stats(spec.name).count)
                level.add_metric([*values, metric], int(evaluated))
                for lvl, value in monitor.config.thresholds(spec.name):
                    threshold.add_metric(
                        [*values, metric, lvl.name.lower()], to_float32(value) * spec.scale
                    )
                for reason in REJECT_REASONS:
                    rejected.add_metric([*values, metric, reason], drops[metric][reason])
        yield samples
        yield level
        yield threshold
        yield rejected
        if self._build_info:
            info = GaugeMetricFamily(
                "mhc_build_info", "mhc-monitor build information.", labels=["version"]
            )
            info.add_metric([package_version()], 1.0)
            yield info


def _label_values(labels: Mapping[str, str], names: list[str]) -> list[str]:
    return [labels.get(name, "") for name in names]


def format_prometheus_metrics(monitor: GeometricSpeculationMonitor) -> str:
    """The monitor's series in the Prometheus text exposition format 0.0.4."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(MonitorCollector(monitor))
    return generate_latest(registry).decode("utf-8")
