"""The sidecar's live page and the recent series behind its charts.

    GET /                   the page: charts, levels, alerts, rejected samples, receivers
    GET /static/<name>      the page's script and style sheet, and the chart library
    GET /v1/series?after=N  the sampler's ticks after sequence number N, with each
                            metric's thresholds, direction and current level

A monitor's windows hold values, not timestamps. A `SeriesSampler` thread takes
one snapshot a second, outside the hot path: each metric's evaluated statistic
and level, its sample rate, and a few of the samples that arrived since the last
tick, spread over the tick's interval. The ring keeps the last few minutes.

The page is read-only and draws every outside string (labels, alert messages)
as text; it loads nothing from other origins. The chart library is plotly.js,
served from the `plotly` package's bundled `plotly.min.js`.
"""

from __future__ import annotations

import gzip
import hashlib
import importlib.util
import math
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from .alerts import AlertLevel
from .ingest import quote
from .metrics import METRICS, Direction, MetricName
from .monitor import GeometricSpeculationMonitor

__all__ = ["SECURITY_HEADERS", "SeriesSampler", "page_routes"]

#: Headers on every page response: same-origin everything, no framing, no sniffing.
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
        "img-src 'self' data:; connect-src 'self'; object-src 'none'; base-uri 'none'; "
        "frame-ancestors 'none'; form-action 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
}

_STATIC = Path(__file__).resolve().parent / "static"
_TITLES = {
    MetricName.ACCEPTANCE: "Acceptance rate",
    MetricName.CURVATURE: "Curvature",
    MetricName.ENERGY: "Energy",
    MetricName.LATENCY: "Latency",
    MetricName.STABILITY: "Stability",
    MetricName.SINKHORN_ITERATIONS: "Sinkhorn iterations",
}
_UNITS = {MetricName.LATENCY: "ms"}
_BEYOND_ANY_SEQ = 10**18
# Thresholds sit decades above the usual values of these two: a log axis shows both.
_LOG_SCALE = frozenset({MetricName.LATENCY, MetricName.ENERGY})


def _plotly_bundle() -> Path | None:
    """Where the installed `plotly` package keeps plotly.min.js (without importing plotly)."""
    spec = importlib.util.find_spec("plotly")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / "package_data" / "plotly.min.js"
    return path if path.is_file() else None


def _round(value: float, digits: int = 6) -> float | None:
    if math.isnan(value) or math.isinf(value):
        return None
    return float(f"{value:.{digits}g}")


@dataclass
class _Tick:
    seq: int
    at: float
    metrics: dict[str, dict[str, Any]]

    def to_dict(self) -> dict[str, Any]:
        return {"seq": self.seq, "t": round(self.at, 3), "metrics": self.metrics}


class SeriesSampler:
    """A bounded ring of per-second snapshots of a monitor, for the live page's charts.

    `tick()` takes one snapshot; `start()` runs it every `interval` seconds on a
    daemon thread that ends with `stop()` or when the sampler is garbage collected.
    Each tick keeps at most `per_tick` of the samples that arrived since the last
    one, evenly strided, with timestamps spread over the interval (the monitor
    does not record when a sample arrived). The ring keeps `keep` ticks.
    """

    def __init__(
        self,
        monitor: GeometricSpeculationMonitor,
        *,
        interval: float = 1.0,
        keep: int = 240,
        per_tick: int = 4,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.monitor = monitor
        self.interval = interval
        self.per_tick = per_tick
        self.keep = keep
        self._clock = clock
        self._lock = threading.Lock()
        self._ring: deque[_Tick] = deque(maxlen=keep)
        self._seq = 0
        self._last_at: float | None = None
        self._totals: dict[str, int] = {}
        self._levels: dict[str, tuple[str, float]] = {}
        self._rate = 0.0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Tick every `interval` seconds on a daemon thread (once; later calls do nothing)."""
        if self._thread is not None:
            return
        ref = weakref.ref(self)
        stop = self._stop
        interval = self.interval

        def run() -> None:
            while not stop.wait(interval):
                sampler = ref()
                if sampler is None:
                    return
                sampler.tick()
                del sampler

        self.tick()
        self._thread = threading.Thread(target=run, name="mhc-page-sampler", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop the ticking thread."""
        self._stop.set()

    def tick(self) -> None:
        """Take one snapshot of every metric into the ring."""
        summary = self.monitor.get_summary()
        now = self._clock()
        last = self._last_at if self._last_at is not None else now - self.interval
        span = max(now - last, 1e-6)
        metrics: dict[str, dict[str, Any]] = {}
        rate = 0.0
        for spec in METRICS:
            name = spec.name.value
            m = summary.metrics[name]
            fresh = m.total - self._totals.get(name, m.total - min(m.stats.count, self.per_tick))
            self._totals[name] = m.total
            rate += fresh / span
            times, values = self._fresh_samples(name, fresh, last, span)
            level = m.level.name.lower()
            if self._levels.get(name, ("", 0.0))[0] != level:
                self._levels[name] = (level, now)
            metrics[name] = {
                "value": _round(m.value),
                "level": level,
                "rate": round(fresh / span, 1),
                "t": times,
                "v": values,
            }
        with self._lock:
            self._seq += 1
            self._ring.append(_Tick(self._seq, now, metrics))
            self._last_at = now
            self._rate = rate

    def _fresh_samples(
        self, metric: str, fresh: int, last: float, span: float
    ) -> tuple[list[float], list[float | None]]:
        if fresh <= 0:
            return [], []
        window = self.monitor.window_values(metric)
        recent = window[-min(fresh, len(window)) :] if window else []
        n = len(recent)
        if n == 0:
            return [], []
        picks = min(n, self.per_tick)
        # Evenly strided from the newest backwards, so the newest sample is always shown.
        indexes = sorted({n - 1 - (i * n) // picks for i in range(picks)})
        times = [round(last + span * (i + 1) / n, 3) for i in indexes]
        values = [_round(recent[i]) for i in indexes]
        return times, values

    def view(self, after: int = 0) -> dict[str, Any]:
        """The ticks after sequence number `after` (all kept ones for 0), with metric facts."""
        with self._lock:
            ticks = [t.to_dict() for t in self._ring if t.seq > after]
            seq = self._seq
            rate = self._rate
            levels = dict(self._levels)
        config = self.monitor.config
        metrics = {}
        for spec in METRICS:
            name = spec.name.value
            level, since = levels.get(name, ("info", self.monitor.started))
            metrics[name] = {
                "title": _TITLES[spec.name],
                "unit": _UNITS.get(spec.name, ""),
                "direction": spec.direction.value,
                "scale": "log" if spec.name in _LOG_SCALE else "linear",
                "lower": None if spec.direction is Direction.MAGNITUDE_IS_WORSE else spec.lower,
                "statistic": config.statistic(name),
                "thresholds": {
                    lvl.name.lower(): threshold for lvl, threshold in config.thresholds(name)
                },
                "level": level,
                "level_since": round(since, 3),
            }
        return {
            "seq": seq,
            "interval_seconds": self.interval,
            "keep_seconds": self.keep * self.interval,
            "now": round(self._clock(), 3),
            "started": round(self.monitor.started, 3),
            "samples_per_second": round(rate, 1),
            "levels": [lvl.name.lower() for lvl in AlertLevel],
            "metrics": metrics,
            "ticks": ticks,
        }


class _StaticFile:
    """One file of the page, read once, with its ETag and a gzip copy for large ones."""

    def __init__(self, path: Path, media_type: str) -> None:
        self.path = path
        self.media_type = media_type
        self._body: bytes | None = None
        self._gzipped: bytes | None = None
        self.etag = ""
        self._lock = threading.Lock()

    def load(self) -> tuple[bytes, bytes | None]:
        with self._lock:
            if self._body is None:
                body = self.path.read_bytes()
                self.etag = '"' + hashlib.sha256(body).hexdigest()[:32] + '"'
                self._gzipped = gzip.compress(body, 6) if len(body) > 64 * 1024 else None
                self._body = body
            return self._body, self._gzipped


def _static_files() -> dict[str, _StaticFile]:
    files = {
        "page.js": _StaticFile(_STATIC / "page.js", "text/javascript; charset=utf-8"),
        "page.css": _StaticFile(_STATIC / "page.css", "text/css; charset=utf-8"),
    }
    bundle = _plotly_bundle()
    if bundle is not None:
        files["plotly.min.js"] = _StaticFile(bundle, "text/javascript; charset=utf-8")
    return files


class _Page:
    def __init__(self, sampler: SeriesSampler) -> None:
        self.sampler = sampler
        self.index = _StaticFile(_STATIC / "index.html", "text/html; charset=utf-8")
        self.files = _static_files()

    async def page(self, request: Request) -> Response:
        return self._serve(request, self.index)

    async def static(self, request: Request) -> Response:
        file = self.files.get(request.path_params["name"])
        if file is None:
            raise HTTPException(404)
        return self._serve(request, file)

    async def series(self, request: Request) -> Response:
        raw = request.query_params.get("after", "0")
        if not (raw.isascii() and raw.isdigit()):
            body = {"error": f"after must be a non-negative integer, got {quote(raw)}"}
            return Response(orjson.dumps(body), 400, media_type="application/json")
        digits = raw.lstrip("0")
        # Beyond any sequence number a sampler reaches, so simply nothing newer.
        after = int(digits or "0") if len(digits) <= 18 else _BEYOND_ANY_SEQ
        view = self.sampler.view(after)
        return Response(
            orjson.dumps(view),
            media_type="application/json",
            headers={"Cache-Control": "no-store"},
        )

    def _serve(self, request: Request, file: _StaticFile) -> Response:
        body, gzipped = file.load()
        headers = {**SECURITY_HEADERS, "ETag": file.etag, "Cache-Control": "no-cache"}
        if file.etag in request.headers.get("if-none-match", ""):
            return Response(status_code=304, headers=headers)
        if gzipped is not None:
            headers["Vary"] = "Accept-Encoding"
            if "gzip" in request.headers.get("accept-encoding", ""):
                headers["Content-Encoding"] = "gzip"
                body = gzipped
        return Response(body, media_type=file.media_type, headers=headers)


def page_routes(monitor: GeometricSpeculationMonitor, *, sample: bool = True) -> list[Route]:
    """The routes of the live page for `monitor`; starts its sampler unless `sample` is False."""
    sampler = SeriesSampler(monitor)
    if sample:
        sampler.start()
    page = _Page(sampler)
    return [
        Route("/", page.page, methods=["GET"]),
        Route("/static/{name}", page.static, methods=["GET"]),
        Route("/v1/series", page.series, methods=["GET"]),
    ]
