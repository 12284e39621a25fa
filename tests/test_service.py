"""The sidecar's HTTP API on a real server: both batch shapes and every kind of bad request."""

from __future__ import annotations

import json
from collections.abc import Iterator

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from mhc_monitor import GeometricSpeculationMonitor
from mhc_monitor.service import create_app
from sidecar import client, running


@pytest.fixture
def monitor() -> GeometricSpeculationMonitor:
    return GeometricSpeculationMonitor(labels={"model": "m", "instance": "sidecar-test"})


@pytest.fixture
def http(monitor: GeometricSpeculationMonitor) -> Iterator[httpx.Client]:
    with running(create_app(monitor, max_body_bytes=4096)) as url, client(url) as c:
        yield c


def test_columnar_batch(http: httpx.Client, monitor: GeometricSpeculationMonitor) -> None:
    r = http.post("/v1/samples", json={"latency_ms": [12.5, 13.0], "acceptance": [0.8]})
    assert r.status_code == 200
    assert r.json() == {"accepted": 3, "rejected": 0, "rejected_by_reason": {}}
    assert monitor.window_values("latency") == [12.5, 13.0]
    assert monitor.window_values("acceptance") == [pytest.approx(0.8)]


def test_row_batch(http: httpx.Client, monitor: GeometricSpeculationMonitor) -> None:
    body = {
        "samples": [
            {"metric": "latency_ms", "value": 12.5},
            {"metric": "sinkhorn_iters", "value": 7},
            {"metric": "curvature", "value": -0.5},
        ]
    }
    r = http.post("/v1/samples", json=body)
    assert r.json() == {"accepted": 3, "rejected": 0, "rejected_by_reason": {}}
    assert monitor.window_values("sinkhorn_iterations") == [7.0]
    assert monitor.window_values("curvature") == [-0.5]


def test_bad_samples_are_counted_per_reason(
    http: httpx.Client, monitor: GeometricSpeculationMonitor
) -> None:
    body = {
        "acceptance": [0.9, 1.3, -1, "0.5", None, True],
        "sinkhorn_iters": [3, 3.5],
        "latency_ms": [1e39],
    }
    r = http.post("/v1/samples", json=body)
    assert r.status_code == 200
    assert r.json() == {
        "accepted": 2,
        "rejected": 7,
        "rejected_by_reason": {"invalid_type": 3, "not_an_integer": 1, "out_of_range": 3},
    }
    assert monitor.rejected()["acceptance"] == {
        "nan": 0,
        "infinite": 0,
        "out_of_range": 2,
        "not_an_integer": 0,
        "invalid_type": 3,
    }


BAD_REQUESTS = [
    ("malformed JSON", b'{"latency_ms": [1,', "application/json", 400, "malformed JSON"),
    ("wrong content type", b'{"latency_ms": [1]}', "text/plain", 415, "Content-Type"),
    ("no content type", b'{"latency_ms": [1]}', "", 415, "Content-Type"),
    ("unknown metric", b'{"latency": [1]}', "application/json", 422, "unknown metric 'latency'"),
    (
        "unknown metric in rows",
        b'{"samples": [{"metric": "latency_ms", "value": 1}, {"metric": "speed", "value": 1}]}',
        "application/json",
        422,
        "unknown metric 'speed' in samples[1]",
    ),
    ("not an object", b"[1, 2]", "application/json", 422, "must be a JSON object"),
    (
        "column not a list",
        b'{"latency_ms": 5}',
        "application/json",
        422,
        "must map to a JSON array",
    ),
    (
        "row without value",
        b'{"samples": [{"metric": "energy"}]}',
        "application/json",
        422,
        '"value"',
    ),
    ("samples not a list", b'{"samples": {}}', "application/json", 422, "must be a JSON array"),
    (
        "oversized",
        b'{"latency_ms": [' + b"1," * 3000 + b"1]}",
        "application/json",
        413,
        "4096 bytes",
    ),
]


@pytest.mark.parametrize(
    ("case", "body", "content_type", "status", "message"),
    BAD_REQUESTS,
    ids=[c[0] for c in BAD_REQUESTS],
)
def test_bad_requests_name_the_problem_and_lose_nothing(
    http: httpx.Client,
    monitor: GeometricSpeculationMonitor,
    case: str,
    body: bytes,
    content_type: str,
    status: int,
    message: str,
) -> None:
    http.post("/v1/samples", json={"energy": [1.0, 2.0]})
    headers = {"content-type": content_type} if content_type else {}
    r = http.post("/v1/samples", content=body, headers=headers)
    assert r.status_code == status
    assert r.headers["content-type"] == "application/json"
    assert message in r.json()["error"]
    assert monitor.window_values("energy") == [1.0, 2.0]
    assert monitor.window_values("latency") == []


def test_oversized_body_without_content_length_is_refused(http: httpx.Client) -> None:
    def chunks() -> Iterator[bytes]:
        yield b'{"latency_ms": ['
        for _ in range(3000):
            yield b"1,"
        yield b"1]}"

    r = http.post("/v1/samples", content=chunks(), headers={"content-type": "application/json"})
    assert r.status_code == 413


def test_unknown_paths_and_methods_get_json_errors(http: httpx.Client) -> None:
    r = http.get("/nope")
    assert (r.status_code, r.json()) == (404, {"error": "no such endpoint: /nope"})
    r = http.put("/metrics")
    assert r.status_code == 405 and "PUT" in r.json()["error"]


def test_metrics_text_and_openmetrics(http: httpx.Client) -> None:
    http.post("/v1/samples", json={"latency_ms": [20.0, 40.0]})
    r = http.get("/metrics")
    assert r.headers["content-type"].startswith("text/plain; version=0.0.4")
    families = {f.name: f for f in text_string_to_metric_families(r.text)}
    gauge = families["mhc_latency_window_seconds"]
    mean = next(s for s in gauge.samples if s.labels["stat"] == "mean")
    assert mean.value == 0.03
    assert mean.labels["instance"] == "sidecar-test"
    r = http.get("/metrics", headers={"accept": "application/openmetrics-text; version=1.0.0"})
    assert r.headers["content-type"].startswith("application/openmetrics-text")
    assert r.text.endswith("# EOF\n")


def test_summary_healthz_and_alerts(http: httpx.Client) -> None:
    http.post("/v1/samples", json={"acceptance": [0.4, 0.4]})
    summary = http.get("/v1/summary").json()
    assert summary["level"] == "critical"
    assert summary["metrics"]["acceptance"]["count"] == 2
    assert summary["labels"] == {"model": "m", "instance": "sidecar-test"}
    assert http.get("/healthz").json()["status"] == "ok"
    (alert,) = http.get("/v1/alerts").json()["active"]
    assert (alert["metric"], alert["level"], alert["threshold"]) == ("acceptance", "critical", 0.5)


def test_token_is_required_when_configured(monitor: GeometricSpeculationMonitor) -> None:
    with running(create_app(monitor, token="s3cret-token")) as url, client(url) as http:
        r = http.post("/v1/samples", json={"energy": [1.0]})
        assert r.status_code == 401
        r = http.post(
            "/v1/samples", json={"energy": [1.0]}, headers={"authorization": "Bearer nope"}
        )
        assert r.status_code == 401
        assert "s3cret" not in r.text
        assert monitor.window_values("energy") == []
        r = http.post(
            "/v1/samples", json={"energy": [1.0]}, headers={"authorization": "Bearer s3cret-token"}
        )
        assert r.status_code == 200
        assert monitor.window_values("energy") == [1.0]
        assert http.get("/metrics").status_code == 200


def test_json_reply_bodies_are_valid_json(http: httpx.Client) -> None:
    r = http.post(
        "/v1/samples", content=b'{"a\\"b": [1]}', headers={"content-type": "application/json"}
    )
    assert r.status_code == 422
    assert json.loads(r.text)["error"].startswith("unknown metric 'a\"b'")
