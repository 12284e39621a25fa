"""The OpenAPI 3.1 description of the sidecar's HTTP API, served at `GET /openapi.json`.

Built from the metric specs, so the ingestion keys, metric names, statistics and
drop reasons it lists are the ones the service uses. It describes what the
service accepts, not only what a well-behaved engine sends: a sample of the
wrong kind (a string, null, a nested array) is accepted and counted as dropped,
so sample values are schema-free; a wrong structure (an unknown key, a column
that is not an array, a key given twice) is refused with 422.
"""

from __future__ import annotations

from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from .exposition import package_version
from .ingest import INGEST_KEYS
from .metrics import METRICS, STATISTICS
from .monitor import REJECT_REASONS

__all__ = ["openapi_document", "openapi_route"]

_LEVELS = ["info", "warning", "critical", "emergency"]
_NUMBER_OR_NULL = {"type": ["number", "null"]}
_COUNT = {"type": "integer", "minimum": 0}
_ANY_SAMPLE = {
    "description": "A number in the metric's domain. Anything else (a string, null, a "
    "boolean, a number out of range, or the literals NaN, Infinity and -Infinity that "
    "Python's json.dumps writes) is dropped and counted by reason."
}
_SAMPLES_DESCRIPTION = (
    "A batch is checked as a whole: a structural problem refuses it and records nothing. "
    "The body may be compressed with Content-Encoding gzip or deflate (zlib format); "
    "the size limit holds for the body as sent and once decompressed. Each key of the "
    "batch object appears once: a repeated key is refused, as parsers would keep only one."
)


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _error(description: str) -> dict[str, Any]:
    return _json(_ref("Error"), description)


def _schemas() -> dict[str, Any]:
    metric_names = [spec.name.value for spec in METRICS]
    stat_fields = {name: _NUMBER_OR_NULL for name in STATISTICS if name != "last"}
    metric_summary = {
        "type": "object",
        "required": ["metric", "count", "total", "statistic", "value", "level", "rejected"],
        "properties": {
            "metric": {"enum": metric_names},
            "count": {**_COUNT, "description": "Samples in the window."},
            "total": {**_COUNT, "description": "Samples ever accepted."},
            **stat_fields,
            "stddev": _NUMBER_OR_NULL,
            "last": _NUMBER_OR_NULL,
            "statistic": {"enum": list(STATISTICS)},
            "value": {**_NUMBER_OR_NULL, "description": "The evaluated statistic."},
            "level": {"enum": _LEVELS},
            "threshold": _NUMBER_OR_NULL,
            "rejected": {
                "type": "object",
                "propertyNames": {"enum": list(REJECT_REASONS)},
                "additionalProperties": _COUNT,
            },
        },
    }
    return {
        "Error": {
            "type": "object",
            "required": ["error"],
            "properties": {"error": {"type": "string", "minLength": 1}},
        },
        "RowBatch": {
            "type": "object",
            "description": "One object per sample.",
            "required": ["samples"],
            "additionalProperties": False,
            "properties": {
                "samples": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "required": ["metric", "value"],
                        "additionalProperties": False,
                        "properties": {
                            "metric": {"enum": list(INGEST_KEYS)},
                            "value": _ANY_SAMPLE,
                        },
                    },
                }
            },
        },
        "ColumnarBatch": {
            "type": "object",
            "description": "One array of samples per metric; any subset of the metrics.",
            "additionalProperties": False,
            "properties": {key: {"type": "array", "items": _ANY_SAMPLE} for key in INGEST_KEYS},
        },
        "BatchResult": {
            "type": "object",
            "required": ["accepted", "rejected", "rejected_by_reason"],
            "properties": {
                "accepted": _COUNT,
                "rejected": _COUNT,
                "rejected_by_reason": {
                    "type": "object",
                    "propertyNames": {"enum": list(REJECT_REASONS)},
                    "additionalProperties": {"type": "integer", "minimum": 1},
                },
            },
        },
        "MetricSummary": metric_summary,
        "Summary": {
            "type": "object",
            "required": ["labels", "level", "timestamp", "metrics", "rejected_total"],
            "properties": {
                "labels": {"type": "object", "additionalProperties": {"type": "string"}},
                "level": {"enum": _LEVELS},
                "timestamp": {"type": "string", "format": "date-time"},
                "metrics": {
                    "type": "object",
                    "required": metric_names,
                    "additionalProperties": _ref("MetricSummary"),
                },
                "rejected_total": _COUNT,
                "uptime_seconds": {"type": "number", "minimum": 0},
                "samples_accepted_over_http": _COUNT,
            },
        },
        "Alerts": {
            "type": "object",
            "required": ["active", "history"],
            "properties": {
                "active": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "required": ["metric", "level", "message", "dedup_key"],
                        "properties": {
                            "metric": {"enum": metric_names},
                            "level": {"enum": _LEVELS},
                            "value": _NUMBER_OR_NULL,
                            "threshold": _NUMBER_OR_NULL,
                            "message": {"type": "string"},
                            "dedup_key": {"type": "string"},
                        },
                    },
                },
                "history": {"type": "array", "items": {"type": "object"}},
            },
        },
        "Health": {
            "type": "object",
            "required": ["status", "version", "uptime_seconds"],
            "properties": {
                "status": {"const": "ok"},
                "version": {"type": "string"},
                "uptime_seconds": {"type": "number", "minimum": 0},
            },
        },
    }


def _get(summary: str, ok: dict[str, Any]) -> dict[str, Any]:
    return {"get": {"summary": summary, "responses": {"200": ok}}}


def _samples_operation(token_required: bool, max_body_bytes: int) -> dict[str, Any]:
    responses = {
        "200": _json(_ref("BatchResult"), "Recorded; bad samples dropped and counted."),
        "400": _error(
            "Malformed JSON (the message gives the position), an invalid Content-Length, "
            "or a compressed body that does not decompress."
        ),
        "413": _error(
            f"The body exceeds {max_body_bytes} bytes, as sent or once decompressed; "
            "nothing was recorded."
        ),
        "415": _error(
            "The Content-Type is not application/json, or the Content-Encoding is not "
            "gzip, deflate or identity."
        ),
        "422": _error(
            "A structural problem (named in the message), such as an unknown metric or a "
            "repeated key; nothing was recorded."
        ),
    }
    operation: dict[str, Any] = {
        "summary": "Record a batch of samples, one object per sample or one array per metric",
        "description": _SAMPLES_DESCRIPTION,
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {
                    "schema": {"oneOf": [_ref("RowBatch"), _ref("ColumnarBatch")]}
                }
            },
        },
        "responses": responses,
    }
    if token_required:
        responses["401"] = {
            **_error("A valid bearer token is required."),
            "headers": {
                "WWW-Authenticate": {
                    "description": 'Bearer realm="mhc-monitor", with error="invalid_token" '
                    "when a wrong token was sent (RFC 6750).",
                    "required": True,
                    "schema": {"type": "string", "pattern": "^Bearer "},
                }
            },
        }
        operation["security"] = [{"bearer": []}]
    return {"post": operation}


def _series_operation() -> dict[str, Any]:
    view = {
        "type": "object",
        "required": ["seq", "now", "keep_seconds", "interval_seconds", "metrics", "ticks"],
        "properties": {
            "seq": {"type": "integer", "minimum": 0},
            "ticks": {"type": "array", "items": {"type": "object"}},
        },
    }
    after = {
        "name": "after",
        "in": "query",
        "required": False,
        "description": "Only snapshots with a greater sequence number (default 0: all kept). "
        "A number beyond any sequence number gives none.",
        "schema": {"type": "integer", "minimum": 0},
    }
    return {
        "get": {
            "summary": "The live page's data: one snapshot a second of each metric, kept "
            "for a few minutes",
            "parameters": [after],
            "responses": {
                "200": _json(view, "Snapshots newer than `after`."),
                "400": _error("`after` is not a non-negative integer."),
            },
        }
    }


def openapi_document(*, token_required: bool, max_body_bytes: int) -> dict[str, Any]:
    """The OpenAPI 3.1 document of a sidecar configured with these settings."""
    metrics_text = {
        "description": "Prometheus text exposition 0.0.4, or OpenMetrics when asked.",
        "content": {
            "text/plain": {"schema": {"type": "string"}},
            "application/openmetrics-text": {"schema": {"type": "string"}},
        },
    }
    document: dict[str, Any] = {
        "openapi": "3.1.0",
        "info": {
            "title": "mhc-monitor sidecar",
            "version": package_version(),
            "description": "Ingestion of samples from engines, and the monitor's state.",
        },
        "paths": {
            "/metrics": _get("Prometheus exposition of every series", metrics_text),
            "/healthz": _get("Liveness and uptime", _json(_ref("Health"), "Alive.")),
            "/v1/summary": _get(
                "Window statistics, levels and drops of every metric",
                _json(_ref("Summary"), "The monitor now."),
            ),
            "/v1/alerts": _get(
                "Active alerts and recent history", _json(_ref("Alerts"), "Alerts now.")
            ),
            "/v1/series": _series_operation(),
            "/v1/samples": _samples_operation(token_required, max_body_bytes),
            "/openapi.json": _get(
                "This description", _json({"type": "object"}, "The OpenAPI document.")
            ),
        },
        "components": {"schemas": _schemas()},
    }
    if token_required:
        document["components"]["securitySchemes"] = {
            "bearer": {"type": "http", "scheme": "bearer"}
        }
    return document


def openapi_route(*, token_required: bool, max_body_bytes: int) -> Route:
    """The `GET /openapi.json` route of a sidecar configured with these settings."""
    body = orjson.dumps(
        openapi_document(token_required=token_required, max_body_bytes=max_body_bytes)
    )

    async def openapi(request: Request) -> Response:
        return Response(body, media_type="application/json")

    return Route("/openapi.json", openapi, methods=["GET"])
