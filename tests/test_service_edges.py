"""The sidecar's HTTP API at its edges: paths, the bearer challenge, compressed bodies,
bounded error messages, NaN literals and repeated keys, on a real server on loopback."""

from __future__ import annotations

import asyncio
import gzip
import json
import logging
import socket
import time
import zlib
from collections.abc import Iterator

import httpx
import orjson
import pytest

from mhc_monitor import GeometricSpeculationMonitor
from mhc_monitor.ingest import INGEST_KEYS
from mhc_monitor.service import MAX_BODY_BYTES, create_app
from sidecar import client, running

LIMIT = 4096
JSON = {"content-type": "application/json"}
KNOWN = ", ".join(INGEST_KEYS)
TOO_LARGE = f"request body exceeds the limit of {LIMIT} bytes; split the batch"
NON_FINITE_NOTE = "(NaN, Infinity and -Infinity are accepted, as dropped samples)"


@pytest.fixture
def monitor() -> GeometricSpeculationMonitor:
    return GeometricSpeculationMonitor(labels={"model": "m"})


@pytest.fixture
def http(monitor: GeometricSpeculationMonitor) -> Iterator[httpx.Client]:
    with running(create_app(monitor, max_body_bytes=LIMIT)) as url, client(url) as c:
        yield c


@pytest.fixture
def roomy(monitor: GeometricSpeculationMonitor) -> Iterator[httpx.Client]:
    """A sidecar with the default body limit, for inputs of a few megabytes."""
    with running(create_app(monitor)) as url, client(url) as c:
        yield c


def post(http: httpx.Client, body: bytes, **headers: str) -> httpx.Response:
    return http.post("/v1/samples", content=body, headers={**JSON, **headers})


def nothing_recorded(monitor: GeometricSpeculationMonitor) -> bool:
    summary = monitor.get_summary()
    return all(m.total == 0 and not any(m.rejected.values()) for m in summary.metrics.values())


# ----- 1. paths match exactly ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("POST", "/v1/samples/"),
        ("GET", "/metrics/"),
        ("GET", "/v1/summary/"),
        ("GET", "/healthz/"),
        ("GET", "/openapi.json/"),
        ("GET", "/v1/series/"),
    ],
)
def test_a_trailing_slash_is_not_found_and_never_redirected(
    http: httpx.Client, monitor: GeometricSpeculationMonitor, method: str, path: str
) -> None:
    r = http.request(
        method, path, content=b'{"energy": [1.0]}', headers={**JSON, "host": "evil.example"}
    )
    assert (r.status_code, r.json()) == (404, {"error": f"no such endpoint: {path}"})
    assert "location" not in r.headers
    assert nothing_recorded(monitor)


# ----- 2. the bearer challenge --------------------------------------------------------------


@pytest.mark.parametrize(
    ("authorization", "challenge"),
    [
        (None, 'Bearer realm="mhc-monitor"'),
        ("Basic dXNlcjpwYXNz", 'Bearer realm="mhc-monitor"'),
        ("Bearer wrong", 'Bearer realm="mhc-monitor", error="invalid_token"'),
        ("Bearer", 'Bearer realm="mhc-monitor", error="invalid_token"'),
    ],
)
def test_401_challenges_for_a_bearer_token(
    monitor: GeometricSpeculationMonitor, authorization: str | None, challenge: str
) -> None:
    headers = {} if authorization is None else {"authorization": authorization}
    with running(create_app(monitor, token="t0ken")) as url, client(url) as http:
        r = http.post("/v1/samples", json={"energy": [1.0]}, headers=headers)
    assert r.status_code == 401
    assert r.headers["www-authenticate"] == challenge
    assert r.json() == {"error": "a valid bearer token is required (Authorization: Bearer ...)"}
    assert nothing_recorded(monitor)


# ----- 4. compressed bodies -----------------------------------------------------------------

BATCH = orjson.dumps({"latency_ms": [12.5, 13.0], "acceptance": [0.8]})


@pytest.mark.parametrize(
    ("encoding", "body"),
    [
        ("gzip", gzip.compress(BATCH)),
        ("GZIP", gzip.compress(BATCH)),
        ("x-gzip", gzip.compress(BATCH)),
        ("deflate", zlib.compress(BATCH)),
        ("identity", BATCH),
        ("", BATCH),
        # Two gzip members, one after the other, are one gzip body (RFC 1952).
        ("gzip", gzip.compress(BATCH[:10]) + gzip.compress(BATCH[10:])),
    ],
)
def test_a_compressed_batch_is_recorded(
    http: httpx.Client, monitor: GeometricSpeculationMonitor, encoding: str, body: bytes
) -> None:
    r = post(http, body, **{"content-encoding": encoding})
    assert (r.status_code, r.json()) == (
        200,
        {"accepted": 3, "rejected": 0, "rejected_by_reason": {}},
    )
    assert monitor.window_values("latency") == [12.5, 13.0]


def test_a_compressed_batch_may_arrive_in_chunks(
    http: httpx.Client, monitor: GeometricSpeculationMonitor
) -> None:
    body = gzip.compress(orjson.dumps({"energy": list(range(1000))}))

    def chunks() -> Iterator[bytes]:
        for start in range(0, len(body), 7):
            yield body[start : start + 7]

    r = http.post("/v1/samples", content=chunks(), headers={**JSON, "content-encoding": "gzip"})
    assert r.json() == {"accepted": 1000, "rejected": 0, "rejected_by_reason": {}}
    assert monitor.window_values("energy") == [float(v) for v in range(1000)]


def test_a_body_over_the_limit_once_decompressed_is_refused(
    http: httpx.Client, monitor: GeometricSpeculationMonitor
) -> None:
    body = gzip.compress(b'{"latency_ms": [' + b"1," * 100_000 + b"1]}")
    assert len(body) < LIMIT
    r = post(http, body, **{"content-encoding": "gzip"})
    assert r.status_code == 413
    assert r.json() == {"error": f"{TOO_LARGE} (the limit holds once decompressed)"}
    assert nothing_recorded(monitor)


def test_a_zip_bomb_is_refused_without_inflating_it(
    roomy: httpx.Client, monitor: GeometricSpeculationMonitor
) -> None:
    bomb = gzip.compress(b"{" + b" " * (64 << 20) + b"}", compresslevel=9)
    assert len(bomb) < 100_000
    r = post(roomy, bomb, **{"content-encoding": "gzip"})
    assert r.status_code == 413
    assert r.json() == {
        "error": f"request body exceeds the limit of {MAX_BODY_BYTES} bytes; split the batch "
        "(the limit holds once decompressed)"
    }
    assert nothing_recorded(monitor)


@pytest.mark.parametrize(
    ("encoding", "body", "message"),
    [
        (
            "gzip",
            BATCH,
            "the body is not valid gzip data: Error -3 while decompressing data: "
            "incorrect header check",
        ),
        (
            "gzip",
            gzip.compress(BATCH)[:-4],
            "the body is not valid gzip data: the compressed stream is truncated",
        ),
        ("gzip", b"", "the body is not valid gzip data: the compressed stream is truncated"),
        (
            "deflate",
            zlib.compress(BATCH) + b"junk",
            "the body is not valid deflate data: Error -3 while decompressing data: "
            "incorrect header check",
        ),
    ],
)
def test_a_body_that_does_not_decompress_is_refused_with_400(
    http: httpx.Client,
    monitor: GeometricSpeculationMonitor,
    encoding: str,
    body: bytes,
    message: str,
) -> None:
    r = post(http, body, **{"content-encoding": encoding})
    assert (r.status_code, r.json()) == (400, {"error": message})
    assert nothing_recorded(monitor)


@pytest.mark.parametrize(
    ("encoding", "named"),
    [
        ("br", "'br'"),
        ("zstd", "'zstd'"),
        ("gzip, gzip", "'gzip, gzip'"),
        ("compress", "'compress'"),
    ],
)
def test_an_unsupported_encoding_is_refused_with_415(
    http: httpx.Client, monitor: GeometricSpeculationMonitor, encoding: str, named: str
) -> None:
    r = post(http, BATCH, **{"content-encoding": encoding})
    assert r.status_code == 415
    assert r.json() == {
        "error": f"unsupported Content-Encoding {named}; send gzip, deflate or identity"
    }
    assert nothing_recorded(monitor)


# ----- 5. error messages quote a bounded prefix of the input ----------------------------------

BIG = "k" * (3 << 20)
BIG_QUOTED = "'" + "k" * 56 + "..."
MEGA = "m" * (1 << 20)
MEGA_QUOTED = "'" + "m" * 56 + "..."


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (
            {"samples": [{"metric": "acceptance", "value": 0.5, BIG: 1}]},
            f"samples[0] has unexpected keys [{BIG_QUOTED}]",
        ),
        (
            {
                "samples": [
                    {"metric": "acceptance", "value": 0.5, **{f"{MEGA}{i}": 1 for i in "123456"}}
                ]
            },
            "samples[0] has unexpected keys " + f"[{', '.join([MEGA_QUOTED] * 5)}, ...]",
        ),
        ({"samples": [], BIG: 1}, f'a "samples" batch takes no other keys, got [{BIG_QUOTED}]'),
        ({BIG: [1]}, f"unknown metric {BIG_QUOTED}; known metrics: {KNOWN}"),
        (
            {"samples": [{"metric": BIG, "value": 1}]},
            f"unknown metric {BIG_QUOTED} in samples[0]; known metrics: {KNOWN}",
        ),
        (
            {"samples": [{BIG: 1}]},
            'samples[0] must be an object with "metric" and "value", got a JSON object '
            f"with keys [{BIG_QUOTED}]",
        ),
        (
            {"samples": [BIG]},
            f'samples[0] must be an object with "metric" and "value", got {BIG_QUOTED}',
        ),
    ],
)
def test_messages_quote_a_bounded_prefix_of_huge_keys(
    roomy: httpx.Client, monitor: GeometricSpeculationMonitor, body: object, message: str
) -> None:
    r = post(roomy, orjson.dumps(body))
    assert (r.status_code, r.json()) == (422, {"error": message})
    assert len(message) < 500
    assert nothing_recorded(monitor)


def test_header_and_path_quotes_are_bounded(monitor: GeometricSpeculationMonitor) -> None:
    """Without a server's header limits: the ASGI app alone bounds what it echoes."""
    app = create_app(monitor, max_body_bytes=LIMIT)
    transport = httpx.ASGITransport(app=app)
    long = "x" * 5000

    async def send() -> list[httpx.Response]:
        async with httpx.AsyncClient(transport=transport, base_url="http://sidecar") as c:
            return [
                await c.post("/v1/samples", content=BATCH, headers={"content-type": long}),
                await c.post(
                    "/v1/samples", content=BATCH, headers={**JSON, "content-length": long}
                ),
                await c.post(
                    "/v1/samples", content=BATCH, headers={**JSON, "content-encoding": long}
                ),
                await c.get("/" + long),
                await c.delete("/v1/" + long),
            ]

    replies = [(r.status_code, r.json()["error"]) for r in asyncio.run(send())]
    quoted = "'" + "x" * 56 + "..."
    assert replies == [
        (415, f"Content-Type must be application/json, got {quoted}"),
        (400, f"invalid Content-Length {quoted}"),
        (415, f"unsupported Content-Encoding {quoted}; send gzip, deflate or identity"),
        (404, "no such endpoint: /" + "x" * 196 + "..."),
        (404, "no such endpoint: /v1/" + "x" * 193 + "..."),
    ]
    assert nothing_recorded(monitor)


# ----- 6. NaN and Infinity literals -----------------------------------------------------------


def test_non_finite_literals_are_dropped_and_counted(
    http: httpx.Client, monitor: GeometricSpeculationMonitor
) -> None:
    body = json.dumps({"latency_ms": [float("nan"), float("inf"), float("-inf"), 12.5]})
    assert body == '{"latency_ms": [NaN, Infinity, -Infinity, 12.5]}'
    r = post(http, body.encode())
    assert (r.status_code, r.json()) == (
        200,
        {"accepted": 1, "rejected": 3, "rejected_by_reason": {"infinite": 2, "nan": 1}},
    )
    assert monitor.window_values("latency") == [12.5]
    assert monitor.rejected()["latency"]["nan"] == 1
    assert monitor.rejected()["latency"]["infinite"] == 2


@pytest.mark.parametrize(
    "number", [b"1e400", b"-1e400", b"9" * 5000, b"-" + b"9" * 400, b"1.5e999999"]
)
def test_numbers_beyond_the_float_range_are_dropped_as_infinite(
    roomy: httpx.Client, monitor: GeometricSpeculationMonitor, number: bytes
) -> None:
    body = b'{"latency_ms": [%s, 12.5], "acceptance": [123456789012345678901234567890, 0.8]}'
    r = post(roomy, body % number)
    assert (r.status_code, r.json()) == (
        200,
        {"accepted": 2, "rejected": 2, "rejected_by_reason": {"infinite": 1, "out_of_range": 1}},
    )
    assert monitor.window_values("latency") == [12.5]
    assert monitor.rejected()["latency"]["infinite"] == 1
    assert monitor.rejected()["acceptance"]["out_of_range"] == 1


def test_non_finite_literals_in_rows_are_dropped_and_counted(
    http: httpx.Client, monitor: GeometricSpeculationMonitor
) -> None:
    rows = [{"metric": "acceptance", "value": v} for v in (float("nan"), 0.8, float("-inf"))]
    r = post(http, json.dumps({"samples": rows}).encode())
    assert r.json() == {
        "accepted": 1,
        "rejected": 2,
        "rejected_by_reason": {"infinite": 1, "nan": 1},
    }
    assert monitor.window_values("acceptance") == [pytest.approx(0.8)]


@pytest.mark.parametrize(
    ("body", "status", "message"),
    [
        (
            b'{"latency_ms": [NaN, 1,]}',
            400,
            f"malformed JSON: Expecting value: line 1 column 24 (char 23) {NON_FINITE_NOTE}",
        ),
        (
            b'{"latency_ms": [NaN, "\xff"]}',
            400,
            "malformed JSON: 'utf-8' codec can't decode byte 0xff in position 22: "
            "invalid start byte",
        ),
        (
            b'{"latency_ms": [NaN, ' + b"[" * 2000 + b"]" * 2000 + b"]}",
            400,
            "malformed JSON: depth limit exceeded",
        ),
        (
            b'{"latency_ms": [nan]}',
            400,
            "malformed JSON: invalid literal, expected 'null': line 1 column 17 (char 16)",
        ),
        (b'{"speed": [NaN]}', 422, f"unknown metric 'speed'; known metrics: {KNOWN}"),
        (
            b'{"samples": [{"metric": NaN, "value": 1}]}',
            422,
            f"unknown metric nan in samples[0]; known metrics: {KNOWN}",
        ),
    ],
)
def test_a_body_with_non_finite_literals_that_is_still_wrong_is_refused(
    http: httpx.Client,
    monitor: GeometricSpeculationMonitor,
    body: bytes,
    status: int,
    message: str,
) -> None:
    r = post(http, body)
    assert (r.status_code, r.json()) == (status, {"error": message})
    assert nothing_recorded(monitor)


def test_an_ordinary_body_keeps_the_fast_parser_message(http: httpx.Client) -> None:
    r = post(http, b'{"latency_ms": [1,]}')
    assert r.json() == {
        "error": "malformed JSON: trailing comma is not allowed: line 1 column 18 (char 17)"
    }


# ----- 7. repeated keys -----------------------------------------------------------------------


BATCH_OBJECT = "the batch object"


@pytest.mark.parametrize(
    ("body", "key", "where"),
    [
        (b'{"acceptance": [0.5], "acceptance": [0.6]}', "acceptance", BATCH_OBJECT),
        (b'{"acceptance": [0.5], "energy": [1], "acceptance": []}', "acceptance", BATCH_OBJECT),
        (b'{"acceptance": [0.5], "acceptanc\\u0065": [0.6]}', "acceptance", BATCH_OBJECT),
        (b'{"latency_ms": [NaN], "latency_ms": [1.0]}', "latency_ms", BATCH_OBJECT),
        (
            b'{"samples": [{"metric": "energy", "value": 1}], "samples": []}',
            "samples",
            BATCH_OBJECT,
        ),
        (b'{"samples": [{"metric": "energy", "value": 1, "value": 2}]}', "value", "samples[0]"),
        (
            b'{"samples": [{"metric": "energy", "value": 1}, '
            b'{"metric": "energy", "metric": "latency_ms", "value": 2}]}',
            "metric",
            "samples[1]",
        ),
    ],
)
def test_a_repeated_key_refuses_the_batch(
    http: httpx.Client, monitor: GeometricSpeculationMonitor, body: bytes, key: str, where: str
) -> None:
    r = post(http, body)
    assert (r.status_code, r.json()) == (
        422,
        {"error": f"duplicate key {key!r} in {where}; send each key once (nothing was recorded)"},
    )
    assert nothing_recorded(monitor)


@pytest.mark.parametrize(
    ("body", "reply"),
    [
        (b'{"acceptance": [0.5, "acceptance"]}', (1, {"invalid_type": 1})),
        (b'{"acceptance": [0.5, "a\\"b"]}', (1, {"invalid_type": 1})),
        (b'{"acceptance"  :  [0.5], "energy": ["acceptance", 2]}', (2, {"invalid_type": 1})),
        (
            b'{"samples": [{"metric": "energy", "value": 1}, {"metric": "energy", "value": 2}]}',
            (2, {}),
        ),
        (b'{"samples": [{"metric": "energy", "value": "12:30"}]}', (0, {"invalid_type": 1})),
        (b'{"latency_ms": [{"a": 1, "a": 2}, 3]}', (1, {"invalid_type": 1})),
    ],
)
def test_a_key_name_seen_again_as_a_value_is_no_repeat(
    http: httpx.Client, body: bytes, reply: tuple[int, dict[str, int]]
) -> None:
    r = post(http, body)
    accepted, rejected = reply
    assert (r.status_code, r.json()) == (
        200,
        {
            "accepted": accepted,
            "rejected": sum(rejected.values()),
            "rejected_by_reason": rejected,
        },
    )


# ----- 8. a client that leaves mid-body ------------------------------------------------------


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def test_a_client_that_leaves_mid_body_is_one_debug_line_not_a_traceback(
    monitor: GeometricSpeculationMonitor,
) -> None:
    records = _Records()
    loggers = [logging.getLogger("uvicorn.error"), logging.getLogger("mhc_monitor.service")]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.addHandler(records)
    loggers[1].setLevel(logging.DEBUG)
    try:
        with running(create_app(monitor)) as url:
            port = int(url.rsplit(":", 1)[1])
            with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
                raw.sendall(
                    b"POST /v1/samples HTTP/1.1\r\nHost: x\r\n"
                    b"Content-Type: application/json\r\nContent-Length: 100\r\n\r\n"
                    b'{"latency_ms": [1'
                )
            deadline = time.monotonic() + 5
            while not any("client left" in r.getMessage() for r in records.records):
                assert time.monotonic() < deadline, [r.getMessage() for r in records.records]
                time.sleep(0.02)
            with client(url) as c:
                assert c.get("/healthz").status_code == 200
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.removeHandler(records)
            logger.setLevel(level)
    assert [r.levelname for r in records.records if r.levelno >= logging.WARNING] == []
    assert nothing_recorded(monitor)
