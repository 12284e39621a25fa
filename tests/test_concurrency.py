"""Many threads recording while others scrape: no sample lost, no exception, exact statistics.

Every sample is tagged: thread t's i-th latency sample is `t * PER_THREAD + i`
milliseconds, exact in float32 (below 2**24) and in every float64 sum (below
2**53). Whatever the interleaving, the window must then hold the newest
`window` samples, which is, for each thread, a contiguous run of its own samples
ending at its last one, in its own order; and the histogram's count, buckets and
sum are known exactly without knowing the interleaving.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from typing import Any

import numpy as np
from prometheus_client.parser import text_string_to_metric_families

from mhc_monitor import GeometricSpeculationMonitor, format_prometheus_metrics
from mhc_monitor.service import create_app
from sidecar import client, running

THREADS = 8
PER_THREAD = 100_000
TOTAL = THREADS * PER_THREAD
WINDOW = 1000
BATCH = 500
BAD_PER_THREAD = 10  # NaN and negative latencies each, interleaved with the good samples
DEADLINE_S = 300.0


def tag(thread: int, i: int) -> float:
    return float(thread * PER_THREAD + i)


def untag(value: float) -> tuple[int, int]:
    thread, i = divmod(int(value), PER_THREAD)
    return thread, i


def all_samples() -> np.ndarray:
    return np.arange(TOTAL, dtype=np.float64)


def record_singly(monitor: GeometricSpeculationMonitor, thread: int) -> None:
    bad_every = PER_THREAD // BAD_PER_THREAD
    for i in range(PER_THREAD):
        monitor.record_latency(tag(thread, i))
        if i % bad_every == 0:
            monitor.record_latency(math.nan)
            monitor.record_latency(-1.0)
        if i % 10 == 0:
            monitor.record_sinkhorn_iters(i % 50)


def record_in_batches(monitor: GeometricSpeculationMonitor, thread: int) -> None:
    bad_every = PER_THREAD // BAD_PER_THREAD
    for start in range(0, PER_THREAD, BATCH):
        batch = [tag(thread, i) for i in range(start, start + BATCH)]
        if start % bad_every == 0:
            batch.insert(BATCH // 2, math.nan)
            batch.insert(BATCH // 3, -1.0)
        monitor.record_many("latency", batch)
        monitor.record_many(
            "sinkhorn_iterations", [i % 50 for i in range(start, start + BATCH, 10)]
        )


# Threads 0..5 use the single call, 6 and 7 send batches: both paths race each other.
WRITERS: list[Callable[[GeometricSpeculationMonitor, int], None]] = [record_singly] * 6 + [
    record_in_batches
] * 2


class Errors:
    """Exceptions raised in any thread, with the thread's name."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.items: list[str] = []

    def run(self, target: Callable[..., None], *args: Any) -> Callable[[], None]:
        def wrapped() -> None:
            try:
                target(*args)
            except BaseException as exc:
                with self.lock:
                    self.items.append(f"{threading.current_thread().name}: {exc!r}")

        return wrapped


def latency_series(text: str) -> dict[str, Any]:
    """Histogram count, sum, cumulative buckets and window size of latency in an exposition."""
    found: dict[str, Any] = {"buckets": []}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == "mhc_latency_seconds_count":
                found["count"] = s.value
            elif s.name == "mhc_latency_seconds_sum":
                found["sum"] = s.value
            elif s.name == "mhc_latency_seconds_bucket":
                found["buckets"].append((float(s.labels["le"]), s.value))
            elif s.name == "mhc_window_samples" and s.labels["metric"] == "latency":
                found["window"] = s.value
            elif s.name == "mhc_samples_rejected_total" and s.labels["metric"] == "latency":
                found.setdefault("rejected", {})[s.labels["reason"]] = s.value
    return found


class ScrapeChecks:
    """What every scrape taken during the run must satisfy; counts how many were taken."""

    def __init__(self) -> None:
        self.last_count = 0.0
        self.scrapes = 0
        self.mid_run = 0  # scrapes that saw some but not all samples
        self.summaries = 0

    def exposition(self, text: str) -> None:
        series = latency_series(text)
        count = series["count"]
        cumulative = [c for _, c in series["buckets"]]
        assert cumulative == sorted(cumulative), "buckets must be cumulative"
        assert cumulative[-1] == count, "+Inf bucket must equal _count in one scrape"
        assert self.last_count <= count <= TOTAL, (self.last_count, count)
        assert series["window"] <= WINDOW
        self.last_count = count
        self.scrapes += 1
        self.mid_run += 0 < count < TOTAL

    def summary(self, body: dict[str, Any]) -> None:
        latency = body["metrics"]["latency"]
        assert latency["count"] <= WINDOW
        assert latency["total"] <= TOTAL
        if latency["count"]:
            assert latency["min"] <= latency["p50"] <= latency["max"]
        self.summaries += 1


def scrape_in_process(
    monitor: GeometricSpeculationMonitor, checks: ScrapeChecks, done: threading.Event
) -> None:
    deadline = time.monotonic() + DEADLINE_S
    while not done.is_set() and time.monotonic() < deadline:
        checks.exposition(format_prometheus_metrics(monitor))
        checks.summary(monitor.get_summary().to_dict())
        monitor.check_thresholds()
        monitor.get_alerts()


def scrape_over_http(url: str, checks: ScrapeChecks, done: threading.Event) -> None:
    deadline = time.monotonic() + DEADLINE_S
    with client(url) as http:
        while not done.is_set() and time.monotonic() < deadline:
            r = http.get("/metrics")
            assert r.status_code == 200
            checks.exposition(r.text)
            r = http.get("/v1/summary")
            assert r.status_code == 200
            checks.summary(r.json())


def assert_window_is_the_newest_samples(values: list[float], expected_size: int | None) -> None:
    """Per thread, the window holds a contiguous run ending at the thread's last sample."""
    if expected_size is not None:
        assert len(values) == expected_size
    assert len(set(values)) == len(values), "a sample appears twice in the window"
    per_thread: dict[int, list[int]] = {}
    for value in values:
        thread, i = untag(value)
        per_thread.setdefault(thread, []).append(i)
    for thread, indices in per_thread.items():
        first = PER_THREAD - len(indices)
        assert indices == list(range(first, PER_THREAD)), f"thread {thread}: {indices[:5]}..."


def assert_stats_match_numpy(monitor: GeometricSpeculationMonitor) -> None:
    values = monitor.window_values("latency")
    arr = np.asarray(values, dtype=np.float64)
    stats = monitor.window_stats("latency")
    assert stats.count == len(values)
    assert stats.mean == float(np.mean(arr))
    assert stats.min == float(np.min(arr))
    assert stats.max == float(np.max(arr))
    assert stats.last == values[-1]
    assert stats.stddev == float(np.std(arr))
    for p in (50, 90, 95, 99):
        assert stats.get(f"p{p}") == float(np.percentile(arr, p))


def assert_histogram_is_exact(monitor: GeometricSpeculationMonitor) -> None:
    everything = all_samples()
    snap = monitor.histogram("latency")
    assert snap.count == TOTAL
    assert snap.sum == float(everything.sum())  # integers below 2**53: every order is exact
    assert list(snap.cumulative) == [int((everything <= b).sum()) for b in snap.bounds]
    assert monitor.rejected()["latency"] == {
        "nan": THREADS * BAD_PER_THREAD,
        "infinite": 0,
        "out_of_range": THREADS * BAD_PER_THREAD,
        "not_an_integer": 0,
        "invalid_type": 0,
    }
    sinkhorn = monitor.histogram("sinkhorn_iterations")
    assert sinkhorn.count == TOTAL // 10
    assert sinkhorn.sum == float(THREADS * sum(i % 50 for i in range(0, PER_THREAD, 10)))


def run_threads(
    monitor: GeometricSpeculationMonitor,
    extra: list[Callable[[threading.Event], None]],
) -> list[str]:
    """Start the writers and the `extra` readers; returns every exception raised."""
    errors = Errors()
    done = threading.Event()
    writers = [
        threading.Thread(target=errors.run(WRITERS[t], monitor, t), name=f"writer-{t}")
        for t in range(THREADS)
    ]
    readers = [
        threading.Thread(target=errors.run(fn, done), name=f"reader-{n}")
        for n, fn in enumerate(extra)
    ]
    for thread in readers + writers:
        thread.start()
    for thread in writers:
        thread.join(timeout=DEADLINE_S)
    done.set()
    for thread in readers:
        thread.join(timeout=30)
    assert not any(t.is_alive() for t in readers + writers), "a thread did not finish"
    return errors.items


def test_eight_writers_and_two_scrapers_lose_nothing() -> None:
    monitor = GeometricSpeculationMonitor(window=WINDOW, labels={"model": "m"})
    # One set of checks per scraper: "count never decreases" holds per scraper, in its order.
    in_process, over_http = ScrapeChecks(), ScrapeChecks()
    with running(create_app(monitor)) as url:
        errors = run_threads(
            monitor,
            [
                lambda done: scrape_in_process(monitor, in_process, done),
                lambda done: scrape_over_http(url, over_http, done),
            ],
        )
        with client(url) as http:
            final = latency_series(http.get("/metrics").text)
            summary = http.get("/v1/summary").json()["metrics"]["latency"]

    assert errors == []
    assert in_process.scrapes >= 1 and over_http.scrapes >= 1, "a scraper never ran"
    assert in_process.mid_run + over_http.mid_run >= 1, "no scrape overlapped the writers"
    assert_histogram_is_exact(monitor)
    assert_window_is_the_newest_samples(monitor.window_values("latency"), WINDOW)
    assert_stats_match_numpy(monitor)

    assert final["count"] == TOTAL
    assert final["sum"] == float(all_samples().sum()) * 0.001
    assert final["window"] == WINDOW
    assert final["rejected"]["nan"] == THREADS * BAD_PER_THREAD
    assert summary["total"] == TOTAL
    assert summary["count"] == WINDOW
    assert summary["mean"] == monitor.window_stats("latency").mean


def test_resets_racing_writers_lose_no_histogram_sample() -> None:
    monitor = GeometricSpeculationMonitor(window=WINDOW)
    resets = 0

    def keep_resetting(done: threading.Event) -> None:
        nonlocal resets
        deadline = time.monotonic() + DEADLINE_S
        while not done.is_set() and time.monotonic() < deadline:
            monitor.reset()
            resets += 1
            time.sleep(0.001)

    errors = run_threads(monitor, [keep_resetting])

    assert errors == []
    assert resets > 0
    assert_histogram_is_exact(monitor)
    values = monitor.window_values("latency")
    assert len(values) <= WINDOW
    assert_window_is_the_newest_samples(values, None)
    if values:
        assert_stats_match_numpy(monitor)
