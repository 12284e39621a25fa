"""Hostile input to the sidecar's HTTP API: schemathesis from its OpenAPI description, and
hypothesis-generated bodies.

Whatever arrives: never a 5xx; every 4xx is a JSON object whose "error" names the
problem; a refused request records nothing, and what was accepted before stays.
An accepted batch is checked against a reference: how many samples it should
keep and drop per reason, from DESIGN.md's domains.
"""

from __future__ import annotations

import asyncio
import json
import string
from collections.abc import Iterator
from typing import Any

import httpx
import orjson
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode

from mhc_monitor import GeometricSpeculationMonitor
from mhc_monitor.ingest import INGEST_KEYS
from mhc_monitor.metrics import spec_for_ingest_key
from mhc_monitor.monitor import REJECT_REASONS
from mhc_monitor.openapi import openapi_document
from mhc_monitor.service import MAX_BODY_BYTES, create_app
from sidecar import client, running

TOKEN = "fuzz-token"
LIMIT = 64 * 1024
FUZZ = settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=list(HealthCheck),
    database=None,
)


def totals(monitor: GeometricSpeculationMonitor) -> dict[str, Any]:
    """Everything a request could change: per metric, samples ever accepted and drops."""
    summary = monitor.get_summary()
    return {
        name: (m.total, m.stats.count, dict(m.rejected)) for name, m in summary.metrics.items()
    }


def accepted_and_rejected(
    before: dict[str, Any], after: dict[str, Any]
) -> tuple[int, dict[str, int]]:
    accepted = sum(after[name][0] - before[name][0] for name in after)
    rejected: dict[str, int] = {}
    for name in after:
        for reason, n in after[name][2].items():
            delta = n - before[name][2][reason]
            if delta:
                rejected[reason] = rejected.get(reason, 0) + delta
    return accepted, rejected


def assert_error_reply(response: Any, status: int | None = None) -> str:
    """A 4xx whose body is a JSON object with a non-empty "error"; returns the message."""
    if status is not None:
        assert response.status_code == status, response.text[:300]
    assert 400 <= response.status_code < 500, (response.status_code, response.text[:300])
    content_type = response.headers["content-type"]
    if isinstance(content_type, list):  # schemathesis keeps every value of a header
        (content_type,) = content_type
    assert content_type.startswith("application/json")
    body = orjson.loads(response.content)
    assert isinstance(body, dict) and isinstance(body.get("error"), str), body
    assert body["error"].strip(), body
    message: str = body["error"]
    return message


# ----- schemathesis ------------------------------------------------------------------------

FUZZED = GeometricSpeculationMonitor(labels={"model": "fuzz"})
FUZZED_APP = create_app(FUZZED, token=TOKEN, max_body_bytes=LIMIT)
SCHEMA = schemathesis.openapi.from_asgi("/openapi.json", FUZZED_APP)
SCHEMA.config.generation.update(
    modes=[GenerationMode.POSITIVE, GenerationMode.NEGATIVE], max_examples=150
)


@SCHEMA.parametrize()
@settings(deadline=None, suppress_health_check=list(HealthCheck), database=None)
def test_api_conforms_to_its_description(case: Any) -> None:
    before = totals(FUZZED)
    headers = {"Authorization": f"Bearer {TOKEN}"}
    response = case.call(headers=headers)
    case.validate_response(response, headers=headers)

    after = totals(FUZZED)
    assert response.status_code < 500
    if response.status_code >= 400:
        assert_error_reply(response)
        assert after == before, "a refused request changed the monitor"
    elif case.method == "POST":
        reply = response.json()
        accepted, rejected = accepted_and_rejected(before, after)
        assert reply["accepted"] == accepted
        assert reply["rejected_by_reason"] == dict(sorted(rejected.items()))
    else:
        assert after == before, "a read changed the monitor"


def test_description_lists_every_ingest_key_and_reason() -> None:
    document = openapi_document(token_required=False, max_body_bytes=MAX_BODY_BYTES)
    schemas = document["components"]["schemas"]
    assert sorted(schemas["ColumnarBatch"]["properties"]) == sorted(INGEST_KEYS)
    rows = schemas["RowBatch"]["properties"]["samples"]["items"]
    assert rows["properties"]["metric"]["enum"] == list(INGEST_KEYS)
    reasons = schemas["BatchResult"]["properties"]["rejected_by_reason"]["propertyNames"]
    assert reasons["enum"] == list(REJECT_REASONS)
    assert "security" not in document["paths"]["/v1/samples"]["post"]
    assert "401" not in document["paths"]["/v1/samples"]["post"]["responses"]
    secured = openapi_document(token_required=True, max_body_bytes=MAX_BODY_BYTES)
    assert secured["paths"]["/v1/samples"]["post"]["security"] == [{"bearer": []}]
    series = document["paths"]["/v1/series"]["get"]
    assert [p["name"] for p in series["parameters"]] == ["after"]
    assert sorted(series["responses"]) == ["200", "400"]


# ----- hypothesis bodies, over a real server on loopback --------------------------------------


@pytest.fixture(scope="module")
def sidecar() -> Iterator[tuple[GeometricSpeculationMonitor, httpx.Client]]:
    monitor = GeometricSpeculationMonitor(labels={"model": "fuzz"})
    with running(create_app(monitor, max_body_bytes=LIMIT)) as url, client(url) as http:
        # Something accepted before any hostile request, to be kept through all of them.
        r = http.post("/v1/samples", json={"latency_ms": [10.0, 20.0], "acceptance": [0.9]})
        assert r.json()["accepted"] == 3
        yield monitor, http


def dumps(body: Any) -> bytes:
    """JSON for a request: the standard library's, which writes integers of any size."""
    return json.dumps(body, allow_nan=False).encode()


def post(http: httpx.Client, body: bytes) -> httpx.Response:
    return http.post("/v1/samples", content=body, headers={"content-type": "application/json"})


def reference_reason(key: str, value: Any) -> str | None:
    """Why a JSON sample for ingestion key `key` must be dropped, from DESIGN.md's domains."""
    spec = spec_for_ingest_key(key)
    assert spec is not None
    if isinstance(value, bool) or not isinstance(value, int | float):
        return "invalid_type"
    v = float(value)  # json.dumps(allow_nan=False) writes no NaN, infinity or 1e400
    if not spec.lower <= v <= spec.upper:
        return "out_of_range"
    if spec.integer and not v.is_integer():
        return "not_an_integer"
    return None


def expected_outcome(columns: dict[str, list[Any]]) -> tuple[int, dict[str, int]]:
    accepted = 0
    rejected: dict[str, int] = {}
    for key, values in columns.items():
        for value in values:
            reason = reference_reason(key, value)
            if reason is None:
                accepted += 1
            else:
                rejected[reason] = rejected.get(reason, 0) + 1
    return accepted, rejected


JSON_SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**70), 2**70),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=20),
)
JSON_VALUES = st.recursive(
    JSON_SCALARS,
    lambda inner: (
        st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=8), inner, max_size=5)
    ),
    max_leaves=30,
)
HUGE_NUMBERS = st.sampled_from(
    [1e308, -1e308, 3.5e38, -3.5e38, 2**53 + 1, 2**64 - 1, -(2**63), 10**30, 5e-324, -0.0]
)
SAMPLE_VALUES = st.one_of(JSON_SCALARS, HUGE_NUMBERS, JSON_VALUES)
COLUMNS = st.dictionaries(st.sampled_from(INGEST_KEYS), st.lists(SAMPLE_VALUES, max_size=30))


@FUZZ
@given(body=JSON_VALUES)
def test_arbitrary_json_is_answered_without_a_server_error(
    sidecar: tuple[GeometricSpeculationMonitor, httpx.Client], body: Any
) -> None:
    monitor, http = sidecar
    before = totals(monitor)
    r = post(http, dumps(body))
    assert r.status_code in (200, 422), r.text[:300]
    if r.status_code == 422:
        assert_error_reply(r)
        assert totals(monitor) == before


@FUZZ
@given(columns=COLUMNS, rows=st.booleans())
def test_batches_keep_and_drop_exactly_as_the_domains_say(
    sidecar: tuple[GeometricSpeculationMonitor, httpx.Client],
    columns: dict[str, list[Any]],
    rows: bool,
) -> None:
    monitor, http = sidecar
    if rows:
        body: Any = {
            "samples": [{"metric": k, "value": v} for k, vs in columns.items() for v in vs]
        }
    else:
        body = columns
    before = totals(monitor)
    r = post(http, dumps(body))
    assert r.status_code == 200, r.text[:300]
    accepted, rejected = expected_outcome(columns)
    assert r.json() == {
        "accepted": accepted,
        "rejected": sum(rejected.values()),
        "rejected_by_reason": dict(sorted(rejected.items())),
    }
    assert accepted_and_rejected(before, totals(monitor)) == (accepted, rejected)


UNKNOWN_KEYS = st.text(string.printable, min_size=1, max_size=30).filter(
    lambda k: k not in INGEST_KEYS and k != "samples"
)


@FUZZ
@given(columns=COLUMNS, unknown=UNKNOWN_KEYS, rows=st.booleans())
def test_an_unknown_metric_refuses_the_whole_batch(
    sidecar: tuple[GeometricSpeculationMonitor, httpx.Client],
    columns: dict[str, list[Any]],
    unknown: str,
    rows: bool,
) -> None:
    monitor, http = sidecar
    if rows:
        samples = [{"metric": k, "value": v} for k, vs in columns.items() for v in vs]
        body: Any = {"samples": [*samples, {"metric": unknown, "value": 1.0}]}
    else:
        body = {**columns, unknown: [1.0]}
    before = totals(monitor)
    message = assert_error_reply(post(http, dumps(body)), 422)
    assert message.startswith(f"unknown metric {unknown!r}"[:40])
    assert totals(monitor) == before


NESTING_DEPTHS = [2, 100, 900, 990, 1000, 1010, 1021, 1022, 1023, 1100, 10_000]


@pytest.mark.parametrize("depth", NESTING_DEPTHS)
@pytest.mark.parametrize("where", ["sample", "row", "metric name"])
@pytest.mark.parametrize("kind", ["array", "object"])
def test_deep_nesting_is_bounded_and_answered(
    sidecar: tuple[GeometricSpeculationMonitor, httpx.Client], kind: str, where: str, depth: int
) -> None:
    monitor, http = sidecar
    opening, closing = ("[", "]") if kind == "array" else ('{"a":', "}")
    nested = opening * depth + "1" + closing * depth
    # The nesting sits where a sample, a row or a metric name is expected, 2 or 3 levels in.
    template, levels = {
        "sample": ('{"latency_ms": [%s]}', 2),
        "row": ('{"samples": [%s]}', 2),
        "metric name": ('{"samples": [{"metric": %s, "value": 1}]}', 3),
    }[where]
    before = totals(monitor)
    r = post(http, (template % nested).encode())
    if depth + levels > 1024:
        # orjson's limit: refused as malformed, with the reason.
        assert "depth limit exceeded" in assert_error_reply(r, 400)
    elif where == "sample":
        assert r.status_code == 200, r.text[:300]
        assert r.json()["rejected_by_reason"] == {"invalid_type": 1}
        return
    elif where == "row":
        assert "samples[0] must be an object" in assert_error_reply(r, 422)
    else:
        assert "unknown metric a JSON" in assert_error_reply(r, 422)
    assert totals(monitor) == before


@pytest.mark.parametrize(
    ("body", "status", "message"),
    [
        (b'{"latency_ms": [1e400,]}', 400, "malformed JSON: Expecting value"),
        (b'{"latency_ms": [NaN,]}', 400, "NaN, Infinity and -Infinity are accepted"),
        (b'{"latency_ms": [-Infinity}', 400, "NaN, Infinity and -Infinity are accepted"),
        (b"", 400, "malformed JSON"),
        (b"\xff\xfe", 400, "malformed JSON"),
        (b'{"latency_ms": [1]} trailing', 400, "malformed JSON"),
        (b'{"samples": [{"metric": [[[["latency_ms"]]]], "value": 1}]}', 422, "unknown metric"),
        (b'{"samples": [{"metric": "latency_ms", "value": 1, "at": 2}]}', 422, "unexpected keys"),
        (b'{"samples": [], "latency_ms": []}', 422, "no other keys"),
        (b'{"latency_ms": {"0": 1}}', 422, "must map to a JSON array"),
        (b'{"latency_ms": null}', 422, "must map to a JSON array"),
        (b"null", 422, "must be a JSON object"),
        (b'"latency_ms"', 422, "must be a JSON object"),
    ],
)
def test_malformed_bodies_are_refused_with_the_reason(
    sidecar: tuple[GeometricSpeculationMonitor, httpx.Client],
    body: bytes,
    status: int,
    message: str,
) -> None:
    monitor, http = sidecar
    before = totals(monitor)
    assert message in assert_error_reply(post(http, body), status)
    assert totals(monitor) == before


def test_huge_string_keys_and_values_get_a_bounded_error(
    sidecar: tuple[GeometricSpeculationMonitor, httpx.Client],
) -> None:
    monitor, http = sidecar
    before = totals(monitor)
    key = "k" * (LIMIT // 2)
    message = assert_error_reply(post(http, dumps({key: [1]})), 422)
    assert message.startswith("unknown metric 'kkkk")
    assert len(message) < 1000
    message = assert_error_reply(
        post(http, dumps({"samples": [{"metric": key, "value": 1}]})), 422
    )
    assert len(message) < 1000
    assert totals(monitor) == before


def oversized_body(limit: int) -> bytes:
    body = b'{"latency_ms": [' + b"1.5," * (limit // 4) + b"1.5]}"
    assert len(body) > limit
    return body


def test_a_body_over_the_limit_is_refused_with_413(
    sidecar: tuple[GeometricSpeculationMonitor, httpx.Client],
) -> None:
    monitor, http = sidecar
    before = totals(monitor)
    message = assert_error_reply(post(http, oversized_body(LIMIT)), 413)
    assert message == f"request body exceeds the limit of {LIMIT} bytes; split the batch"
    assert totals(monitor) == before


def test_a_streamed_body_over_the_limit_is_refused_with_413(
    sidecar: tuple[GeometricSpeculationMonitor, httpx.Client],
) -> None:
    """Chunked, with no Content-Length: the limit holds while reading."""
    monitor, http = sidecar
    body = oversized_body(LIMIT)

    def chunks() -> Iterator[bytes]:
        for start in range(0, len(body), 4096):
            yield body[start : start + 4096]

    before = totals(monitor)
    r = http.post("/v1/samples", content=chunks(), headers={"content-type": "application/json"})
    assert "content-length" not in r.request.headers
    assert r.request.headers.get("transfer-encoding") == "chunked"
    assert f"limit of {LIMIT} bytes" in assert_error_reply(r, 413)
    assert totals(monitor) == before


@pytest.mark.parametrize(
    ("headers", "status", "message"),
    [
        ({"content-type": "application/json", "content-length": "abc"}, 400, "Content-Length"),
        ({"content-type": "application/json", "content-length": "-5"}, 400, "Content-Length"),
        ({"content-type": "text/json"}, 415, "Content-Type"),
        ({"content-type": "application/x-www-form-urlencoded"}, 415, "Content-Type"),
    ],
)
def test_bad_headers_are_refused_with_the_reason(
    sidecar: tuple[GeometricSpeculationMonitor, httpx.Client],
    headers: dict[str, str],
    status: int,
    message: str,
) -> None:
    monitor, _ = sidecar
    app = create_app(monitor, max_body_bytes=LIMIT)
    transport = httpx.ASGITransport(app=app)
    before = totals(monitor)

    async def send() -> httpx.Response:
        async with httpx.AsyncClient(transport=transport, base_url="http://sidecar") as c:
            return await c.post("/v1/samples", content=b'{"latency_ms": [1]}', headers=headers)

    r = asyncio.run(send())
    assert message in assert_error_reply(r, status)
    assert totals(monitor) == before


@pytest.mark.parametrize(
    ("method", "path", "status", "message"),
    [
        ("GET", "/v1/nothing", 404, "no such endpoint: /v1/nothing"),
        ("DELETE", "/v1/samples", 405, "method DELETE is not allowed on /v1/samples"),
        ("POST", "/metrics", 405, "method POST is not allowed on /metrics"),
        ("PUT", "/v1/summary", 405, "method PUT is not allowed on /v1/summary"),
    ],
)
def test_unknown_endpoints_and_methods(
    sidecar: tuple[GeometricSpeculationMonitor, httpx.Client],
    method: str,
    path: str,
    status: int,
    message: str,
) -> None:
    _, http = sidecar
    r = http.request(method, path)
    assert assert_error_reply(r, status) == message
    if status == 405:
        assert r.headers["allow"]
