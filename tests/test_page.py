"""The live page's sampler and routes: series ticks, static files, headers and errors."""

from __future__ import annotations

import gc
import re
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from mhc_monitor import AlertConfig, GeometricSpeculationMonitor
from mhc_monitor.page import SECURITY_HEADERS, SeriesSampler
from mhc_monitor.service import create_app
from sidecar import client, running

STATIC = Path(__file__).resolve().parent.parent / "src" / "mhc_monitor" / "static"


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def monitor() -> GeometricSpeculationMonitor:
    return GeometricSpeculationMonitor(labels={"model": "m"}, window=100)


def test_first_tick_shows_the_newest_samples_spread_over_one_interval(
    monitor: GeometricSpeculationMonitor,
) -> None:
    for i in range(20):
        monitor.record_acceptance(i / 100)
    sampler = SeriesSampler(monitor, per_tick=4, clock=Clock(100.0))
    sampler.tick()
    (tick,) = sampler.view()["ticks"]
    acceptance = tick["metrics"]["acceptance"]
    assert tick["seq"] == 1 and tick["t"] == 100.0
    assert acceptance["t"] == [99.25, 99.5, 99.75, 100.0]
    assert acceptance["v"] == pytest.approx([0.16, 0.17, 0.18, 0.19])
    assert acceptance["value"] == pytest.approx(0.095)
    assert acceptance["level"] == "emergency"
    assert tick["metrics"]["latency"] == {
        "value": None,
        "level": "info",
        "rate": 0.0,
        "t": [],
        "v": [],
    }


def test_later_ticks_stride_over_the_samples_that_arrived_since(
    monitor: GeometricSpeculationMonitor,
) -> None:
    clock = Clock(100.0)
    sampler = SeriesSampler(monitor, per_tick=6, clock=clock)
    sampler.tick()
    for i in range(30):
        monitor.record_latency(float(i))
    clock.now = 102.0
    sampler.tick()
    view = sampler.view(after=1)
    (tick,) = view["ticks"]
    latency = tick["metrics"]["latency"]
    # The newest sample always, then every fifth one back: 29, 24, ..., 4.
    assert latency["v"] == [4.0, 9.0, 14.0, 19.0, 24.0, 29.0]
    assert latency["t"] == [round(100 + 2 * (i + 1) / 30, 3) for i in (4, 9, 14, 19, 24, 29)]
    assert latency["rate"] == 15.0
    assert latency["value"] == pytest.approx(14.5)
    assert view["samples_per_second"] == 15.0
    assert view["seq"] == 2


def test_a_tick_without_new_samples_keeps_the_statistic_only(
    monitor: GeometricSpeculationMonitor,
) -> None:
    monitor.record_energy(5.0)
    clock = Clock(10.0)
    sampler = SeriesSampler(monitor, clock=clock)
    sampler.tick()
    clock.now = 11.0
    sampler.tick()
    energy = sampler.view(after=1)["ticks"][0]["metrics"]["energy"]
    assert energy == {"value": 5.0, "level": "info", "rate": 0.0, "t": [], "v": []}


def test_the_ring_is_bounded_and_after_selects_newer_ticks(
    monitor: GeometricSpeculationMonitor,
) -> None:
    clock = Clock(0.0)
    sampler = SeriesSampler(monitor, keep=3, clock=clock)
    for second in range(5):
        clock.now = float(second)
        sampler.tick()
    assert [t["seq"] for t in sampler.view()["ticks"]] == [3, 4, 5]
    assert [t["seq"] for t in sampler.view(after=4)["ticks"]] == [5]
    assert sampler.view(after=5)["ticks"] == []


def test_level_since_marks_when_a_metric_entered_its_level(
    monitor: GeometricSpeculationMonitor,
) -> None:
    clock = Clock(50.0)
    sampler = SeriesSampler(monitor, clock=clock)
    monitor.record_stability(1.0)
    sampler.tick()
    clock.now = 51.0
    sampler.tick()
    for _ in range(100):
        monitor.record_stability(0.6)
    clock.now = 52.0
    sampler.tick()
    clock.now = 53.0
    sampler.tick()
    stability = sampler.view()["metrics"]["stability"]
    assert (stability["level"], stability["level_since"]) == ("critical", 52.0)
    assert sampler.view()["metrics"]["latency"]["level_since"] == 50.0


@pytest.mark.parametrize(
    ("metric", "direction", "scale", "thresholds"),
    [
        ("acceptance", "lower", "linear", {"warning": 0.7, "critical": 0.5, "emergency": 0.3}),
        ("curvature", "magnitude", "linear", {"warning": 2.0, "critical": 5.0, "emergency": 10.0}),
        ("energy", "higher", "log", {"warning": 100.0, "critical": 500.0, "emergency": 1000.0}),
        ("latency", "higher", "log", {"warning": 50.0, "critical": 100.0, "emergency": 500.0}),
        ("stability", "lower", "linear", {"warning": 0.9, "critical": 0.8, "emergency": 0.5}),
        ("sinkhorn_iterations", "higher", "linear", {}),
    ],
)
def test_view_describes_each_metric(
    monitor: GeometricSpeculationMonitor,
    metric: str,
    direction: str,
    scale: str,
    thresholds: dict[str, float],
) -> None:
    meta = SeriesSampler(monitor).view()["metrics"][metric]
    assert (meta["direction"], meta["scale"], meta["thresholds"]) == (
        direction,
        scale,
        thresholds,
    )
    assert meta["statistic"] == "mean"


def test_view_follows_the_configured_thresholds_and_statistic() -> None:
    config = AlertConfig(
        sinkhorn_iters_warning=30, latency_emergency_ms=None, statistics={"latency": "p99"}
    )
    metrics = SeriesSampler(GeometricSpeculationMonitor(config)).view()["metrics"]
    assert metrics["sinkhorn_iterations"]["thresholds"] == {"warning": 30.0}
    assert metrics["latency"]["thresholds"] == {"warning": 50.0, "critical": 100.0}
    assert metrics["latency"]["statistic"] == "p99"


def test_the_sampler_thread_ticks_and_stops(monitor: GeometricSpeculationMonitor) -> None:
    sampler = SeriesSampler(monitor, interval=0.02)
    sampler.start()
    thread = sampler._thread
    assert thread is not None
    deadline = time.monotonic() + 5
    while sampler.view()["seq"] < 3 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert sampler.view()["seq"] >= 3
    sampler.stop()
    thread.join(timeout=5)
    assert not thread.is_alive()


def test_the_sampler_thread_ends_with_its_sampler(monitor: GeometricSpeculationMonitor) -> None:
    sampler = SeriesSampler(monitor, interval=0.02)
    sampler.start()
    thread = sampler._thread
    assert isinstance(thread, threading.Thread)
    del sampler
    gc.collect()
    thread.join(timeout=5)
    assert not thread.is_alive()


@pytest.fixture
def http(monitor: GeometricSpeculationMonitor) -> Iterator[httpx.Client]:
    with running(create_app(monitor)) as url, client(url) as c:
        yield c


@pytest.mark.parametrize(
    ("path", "content_type"),
    [
        ("/", "text/html; charset=utf-8"),
        ("/static/page.js", "text/javascript; charset=utf-8"),
        ("/static/page.css", "text/css; charset=utf-8"),
        ("/static/plotly.min.js", "text/javascript; charset=utf-8"),
    ],
)
def test_page_files_are_served_with_security_headers(
    http: httpx.Client, path: str, content_type: str
) -> None:
    r = http.get(path)
    assert r.status_code == 200
    assert r.headers["content-type"] == content_type
    for name, value in SECURITY_HEADERS.items():
        assert r.headers[name] == value
    again = http.get(path, headers={"If-None-Match": r.headers["etag"]})
    assert (again.status_code, again.content) == (304, b"")


def test_the_chart_library_is_sent_compressed(http: httpx.Client) -> None:
    r = http.get("/static/plotly.min.js", headers={"Accept-Encoding": "gzip"})
    assert r.headers["content-encoding"] == "gzip"
    assert int(r.headers["content-length"]) < len(r.content) / 2
    assert r.content.startswith(b"/**\n* plotly.js v")
    plain = http.get("/static/plotly.min.js", headers={"Accept-Encoding": "identity"})
    assert "content-encoding" not in plain.headers
    assert plain.content == r.content


@pytest.mark.parametrize(
    "path", ["/static/unknown.js", "/static/index.html", "/static/", "/static/..%2fpage.py"]
)
def test_only_the_page_files_are_served(http: httpx.Client, path: str) -> None:
    r = http.get(path)
    assert r.status_code == 404
    assert r.json()["error"].startswith("no such endpoint: /static/")


def test_the_page_is_read_only(http: httpx.Client) -> None:
    r = http.post("/", content=b"x")
    assert r.status_code == 405


def test_series_over_http(http: httpx.Client, monitor: GeometricSpeculationMonitor) -> None:
    monitor.record_acceptance(0.9)
    view = http.get("/v1/series").json()
    assert view["seq"] >= 1 and view["ticks"][0]["seq"] >= 1
    assert set(view["metrics"]) == {
        "acceptance",
        "curvature",
        "energy",
        "latency",
        "stability",
        "sinkhorn_iterations",
    }
    assert http.get("/v1/series", params={"after": view["seq"] + 100}).json()["ticks"] == []


@pytest.mark.parametrize("after", ["-1", "abc", "1.5", "", "+1", " 1", "\u0661"])
def test_series_rejects_a_bad_after(http: httpx.Client, after: str) -> None:
    r = http.get("/v1/series", params={"after": after})
    assert r.status_code == 400
    assert r.json() == {"error": f"after must be a non-negative integer, got {after!r}"}


def test_series_quotes_a_long_bad_after_briefly(http: httpx.Client) -> None:
    r = http.get("/v1/series", params={"after": "x" * 5000})
    assert r.status_code == 400
    assert r.json() == {"error": "after must be a non-negative integer, got '" + "x" * 56 + "..."}


@pytest.mark.parametrize("after", ["9" * 19, "99999999999999999999999999", "1" * 5000])
def test_series_after_any_large_integer_is_nothing_newer(
    http: httpx.Client, monitor: GeometricSpeculationMonitor, after: str
) -> None:
    monitor.record_acceptance(0.9)
    r = http.get("/v1/series", params={"after": after})
    assert r.status_code == 200
    assert r.json()["ticks"] == []
    assert r.json()["seq"] == http.get("/v1/series").json()["seq"]


def test_series_after_with_leading_zeros_is_the_number(
    http: httpx.Client, monitor: GeometricSpeculationMonitor
) -> None:
    monitor.record_acceptance(0.9)
    view = http.get("/v1/series").json()
    first = view["ticks"][0]["seq"]
    later = http.get("/v1/series", params={"after": "0" * 30 + str(first)}).json()
    expected = [t["seq"] for t in view["ticks"] if t["seq"] > first]
    seqs = [t["seq"] for t in later["ticks"]]
    assert seqs[: len(expected)] == expected  # the sampler may have ticked in between
    assert all(seq > first for seq in seqs)


def test_page_code_loads_nothing_from_elsewhere_and_writes_no_html() -> None:
    html = (STATIC / "index.html").read_text()
    script = (STATIC / "page.js").read_text()
    css = (STATIC / "page.css").read_text()
    for text in (html, script, css):
        assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", text)
        assert "url(http" not in text and "@import" not in text
    assert re.findall(r"""fetch\(|getJSON\("[^"]*""", script) == [
        "fetch(",
        'getJSON("v1/series?after=',
        'getJSON("v1/summary',
        'getJSON("v1/alerts',
        'getJSON("healthz',
    ]
    for sink in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval("):
        assert sink not in script
