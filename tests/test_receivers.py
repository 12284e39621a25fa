"""The test receivers themselves: contracts enforced, faults injected, records kept."""

from __future__ import annotations

import copy
import json
import random
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from receivers import PAGERDUTY_SCHEMA_PATH, PagerDutyReceiver, Receiver, SlackReceiver

JSON = {"Content-Type": "application/json"}
KEY = "e93facc04764012d7bfb002500d5d1a6"


def openapi_example() -> dict[str, Any]:
    """The example event the Events v2 OpenAPI document itself gives for /enqueue."""
    document = json.loads(PAGERDUTY_SCHEMA_PATH.read_text(encoding="utf-8"))
    content = document["paths"]["/enqueue"]["post"]["requestBody"]["content"]
    example: dict[str, Any] = content["application/json"]["examples"]["event"]["value"]
    return example


def good_trigger() -> dict[str, Any]:
    return {
        "routing_key": KEY,
        "event_action": "trigger",
        "dedup_key": "mhc-monitor/node/latency/model=m",
        "payload": {
            "summary": "latency above threshold",
            "severity": "error",
            "source": "node",
            "timestamp": "2025-03-01T12:00:00.000Z",
        },
    }


def changed(path: str, value: Any) -> dict[str, Any]:
    """`good_trigger()` with the dotted `path` set to `value` (or removed when value is ...)."""
    event = copy.deepcopy(good_trigger())
    *parents, last = path.split(".")
    node = event
    for name in parents:
        node = node[name]
    if value is ...:
        del node[last]
    else:
        node[last] = value
    return event


@pytest.fixture(scope="module")
def client() -> Iterator[httpx.Client]:
    """One client for the module: building an httpx client costs more than a request."""
    with httpx.Client(timeout=5) as shared:
        yield shared


# PagerDuty contract -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "event",
    [
        openapi_example(),
        good_trigger(),
        {"routing_key": KEY, "event_action": "resolve", "dedup_key": "k"},
    ],
    ids=["openapi-example", "trigger", "resolve"],
)
def test_pagerduty_accepts_valid_events(
    client: httpx.Client, pagerduty: PagerDutyReceiver, event: Any
) -> None:
    response = client.post(pagerduty.url, json=event, timeout=5)
    assert response.status_code == 202, response.text
    assert response.json() == {
        "status": "success",
        "message": "Event processed",
        "dedup_key": event["dedup_key"],
    }
    assert pagerduty.accepted() == [event]


def test_pagerduty_makes_up_a_dedup_key_for_a_trigger_without_one(
    client: httpx.Client,
    pagerduty: PagerDutyReceiver,
) -> None:
    response = client.post(pagerduty.url, json=changed("dedup_key", ...), timeout=5)
    assert response.status_code == 202, response.text
    assert response.json()["dedup_key"]


@pytest.mark.parametrize(
    ("event", "reason"),
    [
        (changed("routing_key", ...), "'routing_key' is a required property"),
        (changed("routing_key", "short"), "Length of 'routing_key' is incorrect"),
        (changed("event_action", "page"), "'page' is not one of"),
        (changed("payload.severity", "fatal"), "'payload.severity': 'fatal' is not one of"),
        (changed("payload.severity", ...), "'severity' is a required property"),
        (changed("payload.source", ...), "'source' is a required property"),
        (changed("payload.source", "  "), "'payload.source' is missing or blank"),
        (changed("payload.summary", "s" * 1025), "'payload.summary' has 1025 characters"),
        (changed("payload.summary", ""), "'payload.summary' is missing or blank"),
        (changed("payload.summary", 12), "'payload.summary': 12 is not of type 'string'"),
        (changed("payload.timestamp", "2025-03-01"), "is not a 'date-time'"),
        (changed("payload.timestamp", "yesterday"), "is not a 'date-time'"),
        (changed("payload.custom_details", "text"), "is not of type 'object'"),
        (changed("dedup_key", "d" * 256), "'dedup_key' is longer than 255"),
        (changed("payload", ...), "'payload' is required for event_action trigger"),
        ({"routing_key": KEY, "event_action": "resolve"}, "'dedup_key' is required"),
        ([good_trigger()], "is not of type 'object'"),
    ],
)
def test_pagerduty_rejects_contract_violations(
    client: httpx.Client, pagerduty: PagerDutyReceiver, event: Any, reason: str
) -> None:
    response = client.post(pagerduty.url, json=event, timeout=5)
    assert response.status_code == 400
    body = response.json()
    assert body["status"] == "invalid event"
    assert body["message"] == "Event object is invalid"
    assert any(reason in error for error in body["errors"]), body["errors"]
    [rejection] = pagerduty.rejected()
    assert reason in rejection.reason
    assert rejection.body == event
    assert pagerduty.accepted() == []


@pytest.mark.parametrize(
    ("content", "headers", "status", "reason"),
    [
        (b"{not json", JSON, 400, "JSON parse error"),
        (json.dumps(good_trigger()).encode(), {"Content-Type": "text/plain"}, 400, "Content-Type"),
        (b"x" * (512 * 1024 + 1), JSON, 400, "larger than 524288 bytes"),
    ],
)
def test_pagerduty_rejects_bad_bodies(
    client: httpx.Client,
    pagerduty: PagerDutyReceiver,
    content: bytes,
    headers: dict[str, str],
    status: int,
    reason: str,
) -> None:
    response = client.post(pagerduty.url, content=content, headers=headers, timeout=5)
    assert response.status_code == status
    assert any(reason in e for e in response.json()["errors"])
    assert reason in pagerduty.rejected()[0].reason


def test_pagerduty_other_paths_and_methods(
    client: httpx.Client, pagerduty: PagerDutyReceiver
) -> None:
    assert client.post(pagerduty.base_url + "/v1/enqueue", json=good_trigger()).status_code == 404
    assert client.get(pagerduty.url, timeout=5).status_code == 405
    assert [e.status for e in pagerduty.rejected()] == [404, 405]


# Slack contract -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "message",
    [
        {"text": "plain"},
        {"text": "a &amp; b &lt;c&gt;"},
        {"text": "see <https://example.test/a?b=1&c=2|the &amp; dashboard> now"},
        {"text": "<@U123> <#C456> <!here> <!subteam^S1|ops> <mailto:a@b.test>"},
        {
            "attachments": [
                {"fallback": "f", "color": "danger", "fields": [{"title": "t", "value": "v"}]}
            ]
        },
        {"blocks": [{"type": "section", "text": {"type": "mrkdwn", "text": "x &gt; y"}}]},
        {"text": "t", "channel": "#ops"},
        {"text": "x" * 40_000},
        {"text": "t", "attachments": [{"text": "a"}] * 100},
    ],
)
def test_slack_accepts_valid_messages(
    client: httpx.Client, slack: SlackReceiver, message: Any
) -> None:
    response = client.post(slack.url, json=message, timeout=5)
    assert (response.status_code, response.text) == (200, "ok")
    assert slack.accepted() == [message]


@pytest.mark.parametrize(
    ("message", "code", "reason"),
    [
        ({"text": "p99 > 50 ms"}, "invalid_payload", "text has unescaped '>'"),
        ({"text": "a & b"}, "invalid_payload", "text has unescaped '&'"),
        ({"text": "<script>"}, "invalid_payload", "text has unescaped '<' '>'"),
        ({"text": "&amp ;"}, "invalid_payload", "unescaped '&'"),
        ({"text": "<https://x.test|a & b>"}, "invalid_payload", "unescaped '&'"),
        (
            {"text": "ok", "attachments": [{"fallback": "1 < 2"}]},
            "invalid_payload",
            "attachments[0].fallback has unescaped '<'",
        ),
        (
            {"attachments": [{"fields": [{"title": "t", "value": "a>b"}]}]},
            "invalid_payload",
            "attachments[0].fields[0].value has unescaped '>'",
        ),
        (
            {"blocks": [{"type": "section", "text": {"type": "mrkdwn", "text": "<b>"}}]},
            "invalid_payload",
            "blocks[0].text.text has unescaped",
        ),
        ({"text": "x" * 40_001}, "invalid_payload", "text has 40001 characters"),
        ({"text": 5}, "invalid_payload", "text must be a string"),
        ({"text": "t", "channel": ""}, "invalid_payload", "channel must be a non-empty string"),
        ({}, "no_text", "no text, attachments or blocks"),
        ({"text": ""}, "no_text", "no text, attachments or blocks"),
        (
            {"text": "t", "attachments": [{"text": "a"}] * 101},
            "too_many_attachments",
            "101 attachments",
        ),
        ({"blocks": [{"type": "divider"}] * 51}, "invalid_payload", "51 blocks"),
        (["text"], "invalid_payload", "not a JSON object"),
    ],
)
def test_slack_rejects_contract_violations(
    client: httpx.Client, slack: SlackReceiver, message: Any, code: str, reason: str
) -> None:
    response = client.post(slack.url, json=message, timeout=5)
    assert (response.status_code, response.text) == (400, code)
    assert response.headers["content-type"].startswith("text/plain")
    [rejection] = slack.rejected()
    assert reason in rejection.reason, rejection.reasons


@pytest.mark.parametrize(
    ("content", "content_type"),
    [
        (b'{"text": "t"}', "text/plain"),
        (b'{"text": "t"}', "application/x-www-form-urlencoded"),
        (b"{broken", "application/json"),
    ],
)
def test_slack_needs_a_json_body(
    client: httpx.Client, slack: SlackReceiver, content: bytes, content_type: str
) -> None:
    response = client.post(slack.url, content=content, headers={"Content-Type": content_type})
    assert (response.status_code, response.text) == (400, "invalid_payload")


def test_slack_unknown_path_is_no_service(client: httpx.Client, slack: SlackReceiver) -> None:
    response = client.post(slack.base_url + "/hooks/x", json={"text": "t"}, timeout=5)
    assert (response.status_code, response.text) == (404, "no_service")


# Fault plan (both receivers) ----------------------------------------------------------------


@dataclass(frozen=True)
class Target:
    """A running receiver with a body it accepts and the status it accepts it with."""

    receiver: Receiver
    body: dict[str, Any]
    ok: int
    client: httpx.Client

    def post(self, timeout: float = 5.0) -> httpx.Response:
        return self.client.post(self.receiver.url, json=self.body, timeout=timeout)


@pytest.fixture(params=["pagerduty", "slack"])
def target(request: pytest.FixtureRequest, client: httpx.Client) -> Iterator[Target]:
    if request.param == "pagerduty":
        made = Target(PagerDutyReceiver(), good_trigger(), 202, client)
    else:
        made = Target(SlackReceiver(), {"text": "hello"}, 200, client)
    with made.receiver:
        yield made


def test_fail_next(target: Target) -> None:
    target.receiver.fail_next(2, status=503)
    statuses = [target.post().status_code for _ in range(3)]
    assert statuses == [503, 503, target.ok]
    assert [e.outcome for e in target.receiver.exchanges()] == ["fault", "fault", "accepted"]
    assert len(target.receiver.accepted()) == 1


def test_rate_limit_with_retry_after(target: Target) -> None:
    target.receiver.rate_limit_next(1, retry_after=7)
    limited = target.post()
    assert limited.status_code == 429
    assert limited.headers["Retry-After"] == "7"
    assert target.post().status_code == target.ok


def test_planned_faults_queue_in_order(target: Target) -> None:
    target.receiver.fail_next(1)
    target.receiver.rate_limit_next(2, retry_after=1)
    target.receiver.fail_next(1, status=502)
    statuses = [target.post().status_code for _ in range(5)]
    assert statuses == [500, 429, 429, 502, target.ok]


def test_delay_beyond_client_timeout(target: Target) -> None:
    target.receiver.delay(2.0)
    started = time.monotonic()
    with pytest.raises(httpx.ReadTimeout):
        target.post(timeout=0.2)
    assert time.monotonic() - started < 1.5
    target.receiver.delay(0)
    assert target.post().status_code == target.ok
    # The delayed request was judged before the wait, as a real service would.
    assert len(target.receiver.accepted()) == 2


def test_stop_refuses_then_start_recovers_on_the_same_port(target: Target) -> None:
    port = target.receiver.port
    target.receiver.stop()
    assert not target.receiver.running
    with pytest.raises(httpx.ConnectError):
        target.post(timeout=2)
    target.receiver.start()
    assert target.receiver.port == port
    assert target.post().status_code == target.ok


def test_stop_cuts_a_delay_short(target: Target) -> None:
    target.receiver.delay(30)
    failures: list[BaseException] = []

    def slow_post() -> None:
        try:
            target.post(timeout=10)
        except httpx.HTTPError as exc:
            failures.append(exc)

    client = threading.Thread(target=slow_post)
    client.start()
    assert target.receiver.wait_for(lambda r: len(r.exchanges()) == 1, timeout=5)
    started = time.monotonic()
    target.receiver.stop()
    client.join(timeout=10)
    assert not client.is_alive()
    assert time.monotonic() - started < 5


@pytest.mark.parametrize("seed", [0, 7, 2025])
def test_fail_ratio_is_deterministic(target: Target, seed: int) -> None:
    def run() -> list[int]:
        target.receiver.reset()
        target.receiver.fail_ratio(0.5, seed=seed)
        return [target.post().status_code for _ in range(40)]

    first, second = run(), run()
    assert first == second
    # Reference: the documented draw sequence of random.Random(seed).
    rng = random.Random(seed)
    expected = []
    for _ in range(40):
        expected.append(rng.choice((500, 429)) if rng.random() < 0.5 else target.ok)
    assert first == expected
    assert 10 <= sum(s != target.ok for s in first) <= 30


def test_fail_ratio_bounds(target: Target) -> None:
    with pytest.raises(ValueError):
        target.receiver.fail_ratio(1.5)
    target.receiver.fail_ratio(1.0, statuses=(502,))
    assert {target.post().status_code for _ in range(5)} == {502}
    target.receiver.clear_faults()
    assert target.post().status_code == target.ok


def test_concurrent_requests_are_all_recorded(target: Target) -> None:
    def burst() -> None:
        for _ in range(10):
            target.post()

    threads = [threading.Thread(target=burst) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=20)
    assert target.receiver.wait_for(lambda r: len(r.accepted()) == 80, timeout=5)
    assert len(target.receiver.exchanges()) == 80


def test_wait_for_gives_up_after_its_timeout(target: Target) -> None:
    started = time.monotonic()
    assert target.receiver.wait_for(lambda r: len(r.accepted()) > 0, timeout=0.2) is False
    assert 0.15 <= time.monotonic() - started < 2


def test_wait_for_wakes_on_a_request(target: Target) -> None:
    timer = threading.Timer(0.1, target.post)
    timer.start()
    try:
        assert target.receiver.wait_for(lambda r: len(r.accepted()) == 1, timeout=5)
    finally:
        timer.join(timeout=5)


def test_oversized_and_chunked_bodies_are_refused(
    client: httpx.Client, slack: SlackReceiver
) -> None:
    huge = client.post(slack.url, content=b"x" * (1024 * 1024 + 1), headers=JSON)
    chunked = client.post(slack.url, content=iter([b'{"text": ', b'"t"}']), headers=JSON)
    assert (huge.status_code, chunked.status_code) == (413, 411)
    assert [e.status for e in slack.rejected()] == [413, 411]
    assert "chunked" in slack.rejected()[1].reason
