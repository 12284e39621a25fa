"""The sidecar: an ASGI app exposing a monitor over HTTP.

    GET  /metrics      Prometheus text exposition (OpenMetrics when the scraper asks)
    GET  /healthz      liveness, uptime
    GET  /v1/summary   the monitor's summary as JSON
    GET  /v1/alerts    active alerts and recent history
    GET  /             the live page (see `mhc_monitor.page`), with /static/* and /v1/series
    POST /v1/samples   a JSON batch of samples (see `mhc_monitor.ingest`)

Every error is a JSON object `{"error": "..."}` whose message names the problem,
quoting at most a short prefix of what the client sent. A rejected request
records nothing; samples accepted before it are kept. Paths match exactly: a
trailing slash is a 404, never a redirect built from the client's Host header.
A batch may be sent compressed (Content-Encoding gzip or deflate); the body
limit holds for the decompressed bytes too.
"""

from __future__ import annotations

import hmac
import logging
import time
import zlib
from typing import Any, Protocol

import orjson
from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder
from prometheus_client.registry import Collector
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.routing import Route

from .exposition import MonitorCollector, package_version
from .ingest import IngestError, MalformedBatch, parse_body, quote, record_batch, shorten
from .monitor import GeometricSpeculationMonitor
from .openapi import openapi_route
from .page import page_routes

__all__ = ["DEFAULT_HOST", "DEFAULT_PORT", "MAX_BODY_BYTES", "AlertSource", "create_app"]

logger = logging.getLogger(__name__)

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 9477
#: Largest accepted request body: about a million samples in columnar form.
MAX_BODY_BYTES = 16 * 1024 * 1024
_WBITS = {"gzip": 16 + zlib.MAX_WBITS, "x-gzip": 16 + zlib.MAX_WBITS, "deflate": zlib.MAX_WBITS}
_REALM = 'Bearer realm="mhc-monitor"'


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


class _Inflater:
    """Decompresses a gzip or deflate body as it arrives, never far past a limit."""

    def __init__(self, encoding: str) -> None:
        self.encoding = encoding
        self._wbits = _WBITS[encoding]
        self._stream = zlib.decompressobj(self._wbits)

    def feed(self, data: bytes, room: int) -> bytes:
        """The bytes `data` decompresses to; more than `room` of them means over the limit."""
        out = []
        while data:
            # At most room + 1 bytes: either over the limit, or all of `data` is consumed.
            chunk = self._stream.decompress(data, room + 1)
            out.append(chunk)
            room -= len(chunk)
            if room < 0:
                break
            data = self._stream.unused_data
            if data:  # a gzip file may hold several members, one after the other
                self._stream = zlib.decompressobj(self._wbits)
        return b"".join(out)

    def finish(self) -> None:
        """Raise `zlib.error` if the compressed stream stopped before its end."""
        if not self._stream.eof:
            raise zlib.error("the compressed stream is truncated")


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
                415, f"Content-Type must be application/json, got {quote(content_type or 'none')}"
            )
        inflater = _inflater(request)
        if isinstance(inflater, Response):
            return inflater
        body = await self._read_body(request, inflater)
        if isinstance(body, Response):
            return body
        try:
            grouped = parse_body(body)
        except MalformedBatch as exc:
            return _error(400, str(exc))
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
        response = _error(401, "a valid bearer token is required (Authorization: Bearer ...)")
        # RFC 6750 section 3: the scheme to use, and whether a bearer token sent was wrong.
        wrong = scheme.lower() == "bearer"
        challenge = f'{_REALM}, error="invalid_token"' if wrong else _REALM
        response.headers["WWW-Authenticate"] = challenge
        return response

    async def _read_body(self, request: Request, inflater: _Inflater | None) -> bytes | Response:
        limit = self.max_body_bytes
        too_large = f"request body exceeds the limit of {limit} bytes; split the batch"
        declared = request.headers.get("content-length")
        if declared is not None:
            if not (declared.isascii() and declared.isdigit()):
                return _error(400, f"invalid Content-Length {quote(declared)}")
            if len(declared) > 18 or int(declared) > limit:
                return _error(413, too_large)
        chunks = []
        received = size = 0
        try:
            async for chunk in request.stream():
                received += len(chunk)
                if received > limit:
                    return _error(413, too_large)
                if inflater is not None:
                    chunk = inflater.feed(chunk, limit - size)
                size += len(chunk)
                if size > limit:
                    return _error(413, f"{too_large} (the limit holds once decompressed)")
                chunks.append(chunk)
            if inflater is not None:
                inflater.finish()
        except zlib.error as exc:
            assert inflater is not None
            return _error(400, f"the body is not valid {inflater.encoding} data: {exc}")
        except ClientDisconnect:
            # Nobody reads the answer; the client knows its batch was not sent whole.
            logger.debug("client left after %d bytes of its body; nothing recorded", received)
            return _error(400, "the client disconnected before the body ended; nothing recorded")
        return b"".join(chunks)


def _inflater(request: Request) -> _Inflater | Response | None:
    # Codings in the order they were applied; identity is no coding at all.
    codings = [
        coding.strip().lower()
        for header in request.headers.getlist("content-encoding")
        for coding in header.split(",")
    ]
    codings = [c for c in codings if c not in ("", "identity")]
    if not codings:
        return None
    if len(codings) == 1 and codings[0] in _WBITS:
        return _Inflater(codings[0])
    given = ", ".join(codings)
    return _error(
        415, f"unsupported Content-Encoding {quote(given)}; send gzip, deflate or identity"
    )


def _http_error_handler(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    if exc.status_code == 404:
        return _error(404, f"no such endpoint: {shorten(request.url.path, 200)}")
    if exc.status_code == 405:
        method, path = shorten(request.method, 20), shorten(request.url.path, 200)
        response = _error(405, f"method {method} is not allowed on {path}")
        response.headers.update(exc.headers or {})  # Allow: the methods the path takes
        return response
    return _error(exc.status_code, shorten(str(exc.detail), 200))


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
    # Starlette would answer /metrics/ with a redirect to the client's own Host header.
    app.router.redirect_slashes = False
    app.state.sidecar = sidecar
    return app
