"""The sidecar: an ASGI app exposing a monitor over HTTP.

    GET  /metrics      Prometheus text exposition (OpenMetrics when the scraper asks)
    GET  /healthz      liveness, uptime
    GET  /v1/summary   the monitor's summary as JSON
    GET  /v1/alerts    active alerts and recent history
    GET  /             the live page (see `mhc_monitor.page`), with /static/* and /v1/series
    POST /v1/samples   a JSON batch of samples (see `mhc_monitor.ingest`)

Every error is a JSON object `{"error": "..."}` whose message names the problem.
A rejected request records nothing; samples accepted before it are kept.
"""

from __future__ import annotations

import hmac
import logging
import time
from typing import Any, Protocol

import orjson
from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder
from prometheus_client.registry import Collector
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from .exposition import MonitorCollector, package_version
from .ingest import IngestError, parse_batch, record_batch
from .monitor import GeometricSpeculationMonitor
from .openapi import openapi_route
from .page import page_routes

__all__ = ["DEFAULT_HOST", "DEFAULT_PORT", "MAX_BODY_BYTES", "AlertSource", "create_app"]

logger = logging.getLogger(__name__)

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 9477
#: Largest accepted request body: about a million samples in columnar form.
MAX_BODY_BYTES = 16 * 1024 * 1024


class AlertSource(Protocol):
    """What the sidecar needs from the alerting engine."""

    def collector(self) -> Collector: ...

    def alerts_view(self) -> dict[str, Any]: ...


class JSONResponse(Response):
    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content, option=orjson.OPT_SERIALIZE_NUMPY)


def _error(status: int, message: str, **extra: Any) -> JSONResponse:
    return JSONResponse({"error": message, **extra}, status_code=status)


class _Sidecar:
    def __init__(
        self,
        monitor: GeometricSpeculationMonitor,
        alerting: AlertSource | None,
        token: str | None,
        max_body_bytes: int,
    ) -> None:
        self.monitor = monitor
        self.alerting = alerting
        self._token = token.encode("utf-8") if token else None
        self.max_body_bytes = max_body_bytes
        self.started = time.time()
        self.collector = MonitorCollector(monitor)
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(self.collector)
        # /metrics renders the monitor directly and the other collectors through this one.
        self._others = CollectorRegistry(auto_describe=False)
        if alerting is not None:
            delivery = alerting.collector()
            self.registry.register(delivery)
            self._others.register(delivery)
        self.batches = 0
        self.accepted = 0

    async def metrics(self, request: Request) -> Response:
        encoder, content_type = choose_encoder(request.headers.get("accept", ""))
        openmetrics = content_type.startswith("application/openmetrics-text")
        # The same bytes as encoder(self.registry); unchanged windows are not re-rendered.
        body = self.collector.render(openmetrics=openmetrics).encode("utf-8")
        return Response(body + encoder(self._others), media_type=content_type)

    async def healthz(self, request: Request) -> Response:
        return JSONResponse(
            {
                "status": "ok",
                "version": package_version(),
                "uptime_seconds": round(time.time() - self.started, 3),
            }
        )

    async def summary(self, request: Request) -> Response:
        body = self.monitor.get_summary().to_dict()
        uptime = time.time() - self.started
        body["uptime_seconds"] = round(uptime, 3)
        body["samples_accepted_over_http"] = self.accepted
        return JSONResponse(body)

    async def alerts(self, request: Request) -> Response:
        if self.alerting is not None:
            return JSONResponse(self.alerting.alerts_view())
        active = [
            {
                "metric": a.metric.value,
                "level": a.level.name.lower(),
                "value": a.value,
                "threshold": a.threshold,
                "statistic": a.statistic,
                "message": a.message,
                "dedup_key": a.dedup_key,
            }
            for a in self.monitor.get_alerts()
        ]
        return JSONResponse({"active": active, "history": []})

    async def samples(self, request: Request) -> Response:
        denied = self._check_token(request)
        if denied is not None:
            return denied
        content_type = request.headers.get("content-type", "")
        if content_type.split(";")[0].strip().lower() != "application/json":
            return _error(
                415,
                f"Content-Type must be application/json, got {content_type or 'none'!r}",
            )
        body = await self._read_body(request)
        if isinstance(body, Response):
            return body
        try:
            decoded = orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            return _error(400, f"malformed JSON: {exc}")
        try:
            grouped = parse_batch(decoded)
        except IngestError as exc:
            return _error(422, str(exc))
        result = record_batch(self.monitor, grouped)
        self.batches += 1
        self.accepted += result.accepted
        return JSONResponse(result.to_dict())

    def _check_token(self, request: Request) -> Response | None:
        if self._token is None:
            return None
        header = request.headers.get("authorization", "")
        scheme, _, given = header.partition(" ")
        if scheme.lower() == "bearer" and hmac.compare_digest(
            given.strip().encode("utf-8"), self._token
        ):
            return None
        return _error(401, "a valid bearer token is required (Authorization: Bearer ...)")

    async def _read_body(self, request: Request) -> bytes | Response:
        limit = self.max_body_bytes
        too_large = f"request body exceeds the limit of {limit} bytes; split the batch"
        declared = request.headers.get("content-length")
        if declared is not None:
            if not declared.isdigit():
                return _error(400, f"invalid Content-Length {declared!r}")
            if int(declared) > limit:
                return _error(413, too_large)
        chunks = []
        size = 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                return _error(413, too_large)
            chunks.append(chunk)
        return b"".join(chunks)


def _http_error_handler(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    if exc.status_code == 404:
        return _error(404, f"no such endpoint: {request.url.path}")
    if exc.status_code == 405:
        response = _error(405, f"method {request.method} is not allowed on {request.url.path}")
        response.headers.update(exc.headers or {})  # Allow: the methods the path takes
        return response
    return _error(exc.status_code, str(exc.detail))


def create_app(
    monitor: GeometricSpeculationMonitor,
    *,
    alerting: AlertSource | None = None,
    token: str | None = None,
    max_body_bytes: int = MAX_BODY_BYTES,
    extra_routes: list[Route] | None = None,
) -> Starlette:
    """The sidecar's ASGI app for `monitor`.

    With `token`, `POST /v1/samples` requires `Authorization: Bearer <token>`
    (compared in constant time); reads stay open. `alerting` adds the delivery
    counters to `/metrics` and the lifecycle's history to `/v1/alerts`.
    """
    sidecar = _Sidecar(monitor, alerting, token, max_body_bytes)
    routes = [
        Route("/metrics", sidecar.metrics, methods=["GET"]),
        Route("/healthz", sidecar.healthz, methods=["GET"]),
        Route("/v1/summary", sidecar.summary, methods=["GET"]),
        Route("/v1/alerts", sidecar.alerts, methods=["GET"]),
        Route("/v1/samples", sidecar.samples, methods=["POST"]),
        openapi_route(token_required=bool(token), max_body_bytes=max_body_bytes),
    ]
    routes.extend(page_routes(monitor))
    routes.extend(extra_routes or [])
    app = Starlette(routes=routes, exception_handlers={HTTPException: _http_error_handler})
    app.state.sidecar = sidecar
    return app
