"""mhc-monitor benchmarks: each figure as a ratio against a reference run in the same process.

    .venv/bin/python benchmarks/run.py            full run (about 15 s on an idle machine)
    .venv/bin/python benchmarks/run.py --short    quick run for CI: checks it works, not timings

Prints a table of figure, measured, reference, ratio and target. Timings are
medians of several repeats; the reference is measured interleaved with the
figure so the machine's noise cancels in the ratio. Never fails on a timing.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import statistics
import sys
import time
import tracemalloc
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import orjson
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.parser import text_string_to_metric_families

from mhc_monitor import AlertConfig, GeometricSpeculationMonitor, format_prometheus_metrics
from mhc_monitor.exposition import MonitorCollector
from mhc_monitor.metrics import METRICS
from mhc_monitor.service import create_app


@dataclass
class Row:
    figure: str
    measured: float
    reference: float | None
    unit: str
    target: str
    ok: bool | None

    @property
    def ratio(self) -> float | None:
        return None if self.reference is None else self.measured / self.reference


def per_call(fn: Callable[[], object], number: int, repeat: int) -> float:
    """Median seconds per call of `fn` over `repeat` runs of `number` calls."""
    times = []
    for _ in range(repeat):
        gc.disable()
        start = time.perf_counter()
        for _ in range(number):
            fn()
        times.append((time.perf_counter() - start) / number)
        gc.enable()
    return statistics.median(times)


def interleaved(
    fn: Callable[[], object], ref: Callable[[], object], number: int, repeat: int
) -> tuple[float, float]:
    """Medians of `fn` and `ref`, measured alternately."""
    a, b = [], []
    for _ in range(repeat):
        a.append(per_call(fn, number, 1))
        b.append(per_call(ref, number, 1))
    return statistics.median(a), statistics.median(b)


def bench_record(short: bool) -> Row:
    monitor = GeometricSpeculationMonitor()
    registry = CollectorRegistry()
    histogram = Histogram(
        "ref_latency_seconds",
        "reference",
        registry=registry,
        buckets=[0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5],
    )
    record = monitor.record_latency
    observe = histogram.observe
    values = [float(v) for v in np.random.default_rng(1).gamma(2.0, 10.0, size=1000)]
    # The reference observes seconds, converted beforehand: both loops do one call per sample.
    seconds = [v / 1000.0 for v in values]
    n = 20 if short else 200

    def ours() -> None:
        for v in values:
            record(v)

    def ref() -> None:
        for v in seconds:
            observe(v)

    mine, theirs = interleaved(ours, ref, n, 3 if short else 9)
    return Row("record_latency per call", mine / 1000, theirs / 1000, "s", "<= 0.5x", None)


def full_monitor(
    window: int = 1000, labels: dict[str, str] | None = None
) -> GeometricSpeculationMonitor:
    rng = np.random.default_rng(2)
    monitor = GeometricSpeculationMonitor(
        AlertConfig(sinkhorn_iters_warning=50), window=window, labels=labels
    )
    monitor.record_many("acceptance", rng.uniform(0.5, 1.0, window))
    monitor.record_many("curvature", rng.normal(0, 1, window))
    monitor.record_many("energy", rng.uniform(0, 90, window))
    monitor.record_many("latency", rng.gamma(2, 10, window))
    monitor.record_many("stability", rng.uniform(0.9, 1.0, window))
    monitor.record_many("sinkhorn_iterations", rng.integers(1, 40, window).astype(float))
    return monitor


def summary_reference(windows: list[np.ndarray]) -> None:
    # numpy at its best: the four percentiles from one call (one partition), then mean, std.
    for w in windows:
        np.percentile(w, (50, 90, 95, 99))
        w.mean()
        w.std()


def summary_reference_per_call(windows: list[np.ndarray]) -> None:
    # One numpy call per statistic, as the issue states the reference.
    for w in windows:
        np.percentile(w, 50)
        np.percentile(w, 90)
        np.percentile(w, 95)
        np.percentile(w, 99)
        np.mean(w)
        np.std(w)


def record_one_each(monitor: GeometricSpeculationMonitor) -> None:
    """One new sample per metric: every window and histogram changed."""
    monitor.record_acceptance(0.8)
    monitor.record_curvature(0.1)
    monitor.record_energy(10.0)
    monitor.record_latency(12.0)
    monitor.record_stability(0.95)
    monitor.record_sinkhorn_iters(12)


def bench_summary(short: bool) -> list[Row]:
    monitor = full_monitor()
    windows = [np.asarray(monitor.window_values(m)) for m in monitor.rejected()]
    n, repeat = (20, 3) if short else (300, 7)

    def changed() -> None:
        # The judged figure: every statistic of every window recomputed.
        record_one_each(monitor)
        monitor.get_summary()

    cold_t, ref = interleaved(changed, lambda: summary_reference(windows), n, repeat)
    cold_t2, ref3 = interleaved(changed, lambda: summary_reference_per_call(windows), n, repeat)
    cached, ref2 = interleaved(monitor.get_summary, lambda: summary_reference(windows), n, repeat)
    return [
        Row("get_summary(), six full windows, all changed", cold_t, ref, "s", "<= 0.3x", None),
        Row("  same, vs one numpy call per statistic", cold_t2, ref3, "s", "(info)", None),
        Row("get_summary(), six full windows, unchanged", cached, ref2, "s", "(info)", None),
    ]


def reference_registry(monitor: GeometricSpeculationMonitor) -> CollectorRegistry:
    """The same families as the monitor's exposition, built from prometheus_client metrics.

    Same names, help, label sets, bucket boundaries and values, and the same series:
    `_created` is off (the monitor has none) and histograms observe the same samples.
    The one series the reference has more of is prometheus_client's `_count` of a
    histogram with negative buckets (curvature), which the monitor leaves out.
    """
    registry = CollectorRegistry()
    names = list(monitor.labels)
    values = [monitor.labels[k] for k in names]
    text = format_prometheus_metrics(monitor)
    histograms = {spec.series: spec for spec in METRICS}
    for family in text_string_to_metric_families(text):
        seen = {k for s in family.samples for k in s.labels} - {"le"}
        labelnames = [k for k in names if k in seen] + sorted(seen - set(names))
        if family.type == "histogram":
            spec = histograms[family.name]
            bounds = sorted(
                float(s.labels["le"]) for s in family.samples if s.name.endswith("_bucket")
            )
            h = Histogram(
                family.name, family.documentation, names, registry=registry, buckets=bounds
            )
            child = h.labels(*values)
            for v in monitor.window_values(spec.name):
                child.observe(v * spec.scale)
        elif family.type == "counter":
            c = Counter(family.name, family.documentation, labelnames, registry=registry)
            for s in family.samples:
                c.labels(*[s.labels[k] for k in labelnames]).inc(s.value)
        else:
            g = Gauge(family.name, family.documentation, labelnames, registry=registry)
            for s in family.samples:
                g.labels(*[s.labels[k] for k in labelnames]).set(s.value)
    return registry


def check_reference(monitor: GeometricSpeculationMonitor, ref: CollectorRegistry) -> None:
    """The reference exposes the monitor's series, plus only the documented extra one."""
    ours = series(format_prometheus_metrics(monitor))
    theirs = series(generate_latest(ref).decode())
    extra = {(name, labels) for name, labels in theirs - ours if name != "mhc_curvature_count"}
    if ours - theirs or extra:
        raise AssertionError(f"reference differs: {sorted(ours - theirs)} {sorted(extra)}")


def series(text: str) -> set[tuple[str, tuple[tuple[str, str], ...]]]:
    return {
        (s.name, tuple(sorted(s.labels.items())))
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def check_render(collector: MonitorCollector) -> bytes:
    """What /metrics serves for the collector, checked byte for byte against generate_latest."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)
    rendered = collector.render().encode("utf-8")
    if rendered != generate_latest(registry):
        raise AssertionError("MonitorCollector.render differs from generate_latest")
    return rendered


def bench_render(short: bool) -> list[Row]:
    monitor = full_monitor(labels={"model": "m", "instance": "i"})
    collector = MonitorCollector(monitor)
    ref = reference_registry(monitor)
    check_render(collector)
    check_reference(monitor, ref)
    n, repeat = (5, 3) if short else (100, 7)

    def busy_render() -> bytes:
        # /metrics between two scrapes of a busy engine: every window has changed.
        record_one_each(monitor)
        return collector.render().encode("utf-8")

    mine, theirs = interleaved(busy_render, lambda: generate_latest(ref), n, repeat)
    same, theirs2 = interleaved(
        lambda: collector.render().encode("utf-8"), lambda: generate_latest(ref), n, repeat
    )
    rows = [
        Row("/metrics render, one busy monitor", mine, theirs, "s", "<= 1.0x", None),
        Row("/metrics render, one monitor, unchanged", same, theirs2, "s", "(info)", None),
    ]

    many = MonitorCollector([], build_info=True)
    fleet = [
        full_monitor(window=200, labels={"model": "m", "instance": f"i{i}"}) for i in range(100)
    ]
    for m in fleet:
        many.add(m)
    check_render(many)

    def fleet_render() -> bytes:
        for m in fleet:
            record_one_each(m)
        return many.render().encode("utf-8")

    t = min(per_call(fleet_render, 2 if short else 10, 1) for _ in range(3))
    rows.append(
        Row(
            "/metrics render, 100 labelled monitors, all changed",
            t,
            None,
            "s",
            "<= 0.050 s",
            t <= 0.05,
        )
    )
    t = min(
        per_call(lambda: many.render().encode("utf-8"), 2 if short else 10, 1) for _ in range(3)
    )
    rows.append(
        Row("/metrics render, 100 labelled monitors, unchanged", t, None, "s", "(info)", None)
    )
    return rows


def bench_ingest(short: bool) -> Row:
    monitor = GeometricSpeculationMonitor()
    app = create_app(monitor)
    rng = np.random.default_rng(3)
    per_metric = 20_000
    body = orjson.dumps(
        {
            "latency_ms": rng.gamma(2, 10, per_metric).tolist(),
            "acceptance": rng.uniform(0, 1, per_metric).tolist(),
            "stability": rng.uniform(0.8, 1, per_metric).tolist(),
            "energy": rng.uniform(0, 100, per_metric).tolist(),
            "curvature": rng.normal(0, 1, per_metric).tolist(),
            "sinkhorn_iters": rng.integers(1, 40, per_metric).tolist(),
        }
    )
    samples = 6 * per_metric

    async def post_once() -> None:
        sent = False

        async def receive() -> dict[str, object]:
            nonlocal sent
            if sent:
                return {"type": "http.disconnect"}
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}

        status = []

        async def send(message: dict[str, object]) -> None:
            if message["type"] == "http.response.start":
                status.append(message["status"])

        scope = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": "POST",
            "scheme": "http",
            "path": "/v1/samples",
            "raw_path": b"/v1/samples",
            "query_string": b"",
            "root_path": "",
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
            ],
            "client": ("127.0.0.1", 1),
            "server": ("127.0.0.1", 9477),
        }
        await app(scope, receive, send)
        assert status == [200], status

    loop = asyncio.new_event_loop()
    n, repeat = (2, 3) if short else (10, 7)
    mine, theirs = interleaved(
        lambda: loop.run_until_complete(post_once()), lambda: orjson.loads(body), n, repeat
    )
    loop.close()
    rate, ref_rate = samples / mine, samples / theirs
    return Row("POST /v1/samples columnar, samples/s", rate, ref_rate, "/s", ">= 0.2x", None)


def bench_memory() -> Row:
    window = 100_000
    tracemalloc.start()
    before = tracemalloc.take_snapshot()
    monitor = GeometricSpeculationMonitor(window=window)
    monitor.record_many("latency", np.ones(window))
    after = tracemalloc.take_snapshot()
    tracemalloc.stop()
    grown = sum(s.size_diff for s in after.compare_to(before, "filename"))
    per_sample = grown / (6 * window)
    del monitor
    return Row("window memory per sample", per_sample, 4.0, "B", "<= 4.5 B", per_sample <= 4.5)


def judge(row: Row) -> Row:
    if row.ok is not None or row.ratio is None:
        return row
    bound = float(row.target.split()[1].rstrip("x"))
    row.ok = row.ratio >= bound if row.target.startswith(">=") else row.ratio <= bound
    return row


def show(value: float | None, unit: str) -> str:
    if value is None:
        return "-"
    if unit == "s":
        return f"{value * 1e6:.2f} us" if value < 1e-3 else f"{value * 1e3:.2f} ms"
    if unit == "/s":
        return f"{value / 1e6:.2f} M/s"
    return f"{value:.2f} {unit}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--short", action="store_true", help="quick run: checks, not timings")
    args = parser.parse_args()
    # The references expose the same series as the monitor, which has no `_created`.
    disable_created_metrics()
    rows = [
        bench_record(args.short),
        *bench_summary(args.short),
        *bench_render(args.short),
        bench_ingest(args.short),
        bench_memory(),
    ]
    rows = [judge(r) if r.target != "(info)" else r for r in rows]
    header = f"{'figure':48} {'measured':>12} {'reference':>12} {'ratio':>8}  target"
    print(header)
    print("-" * len(header))
    for r in rows:
        ratio = "-" if r.ratio is None else f"{r.ratio:.3f}x"
        mark = "" if r.ok is None else ("  ok" if r.ok else "  MISSED")
        print(
            f"{r.figure:48} {show(r.measured, r.unit):>12} {show(r.reference, r.unit):>12} "
            f"{ratio:>8}  {r.target}{mark}"
        )
    if args.short:
        print("(short run: figures are not meaningful, only that every benchmark works)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
