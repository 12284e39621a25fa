"""Prometheus exposition of a monitor, on prometheus_client.

Per metric: a cumulative histogram in base units whose bucket boundaries
include the alert thresholds, window gauges (`stat="mean"`, `"p99"`, ...) that
carry exactly the values the in-process evaluation uses, the number of samples
in the window, the alert level and the thresholds. Plus dropped samples by
reason and build information. The monitor's constant labels ride on every
series.

`MonitorCollector` is a prometheus_client collector, for any registry. Its
`render` writes the same exposition directly, byte for byte what
`generate_latest` would produce from it: label strings are built once per
monitor, and each window's lines are rendered once per change of that window
and reused by every scrape until it changes again. `/metrics` serves `render`.
"""

from __future__ import annotations

import weakref
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from importlib import metadata

from prometheus_client import generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.openmetrics.exposition import generate_latest as generate_openmetrics
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from .alerts import to_float32
from .buffer import WindowStats
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


@cache
def package_version() -> str:
    """The installed mhc-monitor version, or "unknown" when running from a source tree.

    Looked up once per process: the metadata lookup costs milliseconds per scrape.
    """
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
        self._rendered: weakref.WeakKeyDictionary[GeometricSpeculationMonitor, _MonitorLines]
        self._rendered = weakref.WeakKeyDictionary()

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
        hist, gauge = _metric_family_pair(spec, names)
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
        samples, level, threshold, rejected, info = _common_family_set(names)
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
            info.add_metric([package_version()], 1.0)
            yield info

    def render(self, *, openmetrics: bool = False) -> str:
        """The monitors' exposition as text, exactly as `generate_latest` writes it.

        With `openmetrics`, the OpenMetrics 1.0 text, without the final `# EOF`
        line (the caller appends it after any other collector's families).
        Windows that have not changed since the last render cost a lookup.
        """
        if not self._monitors:
            return ""
        names = tuple(self._monitors[0].labels)
        lines = [self._lines_of(monitor, names) for monitor in self._monitors]
        heads = _headers(names, openmetrics, self._build_info)
        out: list[str] = []
        for i in range(len(METRICS)):
            blocks = [ml.metric_blocks(i) for ml in lines]
            out.append(heads[2 * i])
            out.extend(hist for hist, _ in blocks)
            out.append(heads[2 * i + 1])
            out.extend(gauge for _, gauge in blocks)
        common = len(METRICS) * 2
        out.append(heads[common])
        out.extend(ml.samples_block() for ml in lines)
        out.append(heads[common + 1])
        out.extend(ml.level_block() for ml in lines)
        out.append(heads[common + 2])
        out.extend(ml.threshold_block() for ml in lines)
        out.append(heads[common + 3])
        out.extend(ml.rejected_block() for ml in lines)
        if self._build_info:
            out.append(heads[common + 4])
            out.append(f'mhc_build_info{{version="{_escape(package_version())}"}} 1.0\n')
        return "".join(out)

    def _lines_of(
        self, monitor: GeometricSpeculationMonitor, names: tuple[str, ...]
    ) -> _MonitorLines:
        lines = self._rendered.get(monitor)
        if (
            lines is None
            or lines.names != names
            or lines.config is not monitor.config
            or lines.labels is not monitor.labels
        ):
            lines = _MonitorLines(monitor, names)
            self._rendered[monitor] = lines
        return lines


def _metric_family_pair(
    spec: MetricSpec, names: Sequence[str]
) -> tuple[HistogramMetricFamily, GaugeMetricFamily]:
    unit = f" Unit: {spec.unit}." if spec.unit == "seconds" else ""
    hist = HistogramMetricFamily(
        spec.series, f"{spec.help}{unit} Every sample ever recorded.", labels=list(names)
    )
    gauge = GaugeMetricFamily(
        spec.window_series,
        f"{spec.help} Window statistics, as evaluated for alerts.",
        labels=[*names, "stat"],
    )
    return hist, gauge


def _common_family_set(
    names: Sequence[str],
) -> tuple[
    GaugeMetricFamily, GaugeMetricFamily, GaugeMetricFamily, CounterMetricFamily, GaugeMetricFamily
]:
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
    info = GaugeMetricFamily(
        "mhc_build_info", "mhc-monitor build information.", labels=["version"]
    )
    return samples, level, threshold, rejected, info


def _label_values(labels: Mapping[str, str], names: Iterable[str]) -> list[str]:
    return [labels.get(name, "") for name in names]


class _Families:
    """A collector of empty families: prometheus_client renders their HELP and TYPE lines."""

    def __init__(self, families: list[Metric]) -> None:
        self._families = families

    def collect(self) -> list[Metric]:
        return self._families


@cache
def _headers(names: tuple[str, ...], openmetrics: bool, build_info: bool) -> tuple[str, ...]:
    """Every family's HELP and TYPE lines, as prometheus_client writes them, in render order."""
    families: list[Metric] = []
    for spec in METRICS:
        families.extend(_metric_family_pair(spec, names))
    families.extend(_common_family_set(names)[: 5 if build_info else 4])
    heads = []
    for family in families:
        text = (generate_openmetrics if openmetrics else generate_latest)(_Families([family]))
        heads.append(text.decode("utf-8").removesuffix("# EOF\n"))
    return tuple(heads)


def _escape(value: str) -> str:
    # The label value escaping of the text formats: backslash, newline, double quote.
    return value.replace("\\", r"\\").replace("\n", r"\n").replace('"', r"\"")


def _number(value: float) -> str:
    """A sample value exactly as prometheus_client writes it (`floatToGoString`)."""
    if value.__class__ is int and 0 <= value < 1_000_000:
        # repr(float(n)) is "n.0", and Go's formatting keeps it below 1e6.
        return f"{value}.0"
    if value.__class__ is float:
        text = repr(value)
        # The common case is repr itself; Go's exponent form and Inf/NaN take the library's.
        if not (value > 0 and text.find(".") > 6) and text[-1] not in "fn":
            return text
    formatted: str = floatToGoString(value)  # type: ignore[no-untyped-call]
    return formatted


@dataclass(frozen=True, slots=True)
class _Prefixes:
    """The text before the value of every line of one monitor's metric."""

    scale: float
    buckets: list[str]
    count: str | None
    sum: str
    gauges: list[str]
    samples: str
    level: str


def _gauge_lines(p: _Prefixes, stats: WindowStats) -> str:
    scale = p.scale
    return "".join(
        f"{prefix}{_number(getattr(stats, stat) * scale)}\n"
        for prefix, stat in zip(p.gauges, EXPOSED_STATS, strict=True)
    )


class _MonitorLines:
    """One monitor's rendered lines: label strings built once, blocks once per change."""

    def __init__(self, monitor: GeometricSpeculationMonitor, names: tuple[str, ...]) -> None:
        self.names = names
        self.config = monitor.config
        self.labels = monitor.labels
        self._monitor = monitor
        self._windows = [monitor._window(spec.name) for spec in METRICS]
        self._base = [(name, _escape(monitor.labels.get(name, ""))) for name in names]
        self._prefixes = [
            self._metric_prefixes(spec, w.histogram_bounds())
            for spec, w in zip(METRICS, self._windows, strict=True)
        ]
        self._blocks: list[tuple[object, tuple[str, str], str, str]] = [
            (None, ("", ""), "", "") for _ in METRICS
        ]
        self._thresholds = "".join(
            f"mhc_alert_threshold{self._labels(metric=spec.name.value, level=lvl.name.lower())}"
            f" {_number(to_float32(value) * spec.scale)}\n"
            for spec in METRICS
            for lvl, value in monitor.config.thresholds(spec.name)
        )
        self._rejected_prefixes = [
            f"mhc_samples_rejected_total{self._labels(metric=spec.name.value, reason=reason)} "
            for spec in METRICS
            for reason in REJECT_REASONS
        ]
        self._rejected: tuple[object, str] = (None, "")

    def _labels(self, **extra: str) -> str:
        pairs = sorted([*self._base, *((k, _escape(v)) for k, v in extra.items())])
        if not pairs:
            return ""
        return "{" + ",".join(f'{k}="{v}"' for k, v in pairs) + "}"

    def _metric_prefixes(self, spec: MetricSpec, bounds: Iterable[float]) -> _Prefixes:
        les = [floatToGoString(b * spec.scale) for b in bounds]  # type: ignore[no-untyped-call]
        les.append("+Inf")
        plain = self._labels()
        metric = spec.name.value
        return _Prefixes(
            scale=spec.scale,
            buckets=[f"{spec.series}_bucket{self._labels(le=le)} " for le in les],
            # As prometheus_client: no _count and _sum for a histogram with negative buckets.
            count=f"{spec.series}_count{plain} " if float(les[0]) >= 0 else None,
            sum=f"{spec.series}_sum{plain} ",
            gauges=[f"{spec.window_series}{self._labels(stat=stat)} " for stat in EXPOSED_STATS],
            samples=f"mhc_window_samples{self._labels(metric=metric)} ",
            level=f"mhc_alert_level{self._labels(metric=metric)} ",
        )

    def _render_metric(self, i: int) -> tuple[object, tuple[str, str], str, str]:
        spec = METRICS[i]
        key, stats, cumulative, total = self._windows[i].exposition_state()
        p = self._prefixes[i]
        lines = [
            f"{prefix}{_number(n)}\n" for prefix, n in zip(p.buckets, cumulative, strict=True)
        ]
        if p.count is not None:
            lines.append(f"{p.count}{_number(cumulative[-1])}\n")
            lines.append(f"{p.sum}{_number(total * p.scale)}\n")
        gauges = _gauge_lines(p, stats) if stats.count else ""
        level, _, _ = self._monitor.evaluate_stats(spec.name, stats)
        block = (
            key,
            ("".join(lines), gauges),
            f"{p.samples}{_number(stats.count)}\n",
            f"{p.level}{_number(int(level))}\n",
        )
        self._blocks[i] = block
        return block

    def metric_blocks(self, i: int) -> tuple[str, str]:
        """The histogram lines and window gauge lines of metric `i` (in `METRICS` order)."""
        window = self._windows[i]
        cached = self._blocks[i]
        if cached[0] == window.state_key():
            return cached[1]
        return self._render_metric(i)[1]

    def samples_block(self) -> str:
        """The `mhc_window_samples` lines, current as of the last `metric_blocks` calls."""
        return "".join(block[2] for block in self._blocks)

    def level_block(self) -> str:
        """The `mhc_alert_level` lines, current as of the last `metric_blocks` calls."""
        return "".join(block[3] for block in self._blocks)

    def threshold_block(self) -> str:
        """The `mhc_alert_threshold` lines (the configuration is frozen)."""
        return self._thresholds

    def rejected_block(self) -> str:
        """The `mhc_samples_rejected_total` lines, re-rendered when a sample is dropped."""
        key = tuple(w.rejected_key() for w in self._windows)
        if self._rejected[0] == key:
            return self._rejected[1]
        counts = [n for w in self._windows for n in w.rejected().values()]
        text = "".join(
            f"{prefix}{_number(n)}\n"
            for prefix, n in zip(self._rejected_prefixes, counts, strict=True)
        )
        self._rejected = (key, text)
        return text


_COLLECTORS: weakref.WeakKeyDictionary[GeometricSpeculationMonitor, MonitorCollector]
_COLLECTORS = weakref.WeakKeyDictionary()


def format_prometheus_metrics(monitor: GeometricSpeculationMonitor) -> str:
    """The monitor's series in the Prometheus text exposition format 0.0.4.

    Repeated calls for one monitor reuse the lines of windows that have not changed.
    """
    collector = _COLLECTORS.get(monitor)
    if collector is None:
        collector = _COLLECTORS.setdefault(monitor, MonitorCollector(monitor))
    return collector.render()
