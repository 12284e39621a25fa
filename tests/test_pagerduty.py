"""PagerDuty Events v2 payloads, checked against the published OpenAPI schema and limits."""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import httpx
import pytest

from mhc_monitor.alerts import DEDUP_KEY_MAX, Alert, AlertLevel, make_dedup_key
from mhc_monitor.errors import UsageError
from mhc_monitor.metrics import MetricName
from mhc_monitor.pagerduty import (
    SUMMARY_MAX,
    TRUNCATION_MARK,
    format_pagerduty_payload,
    pagerduty_severity,
)
from receivers import PagerDutyReceiver, pagerduty_event_validator, pagerduty_problems

ROUTING_KEY = "R0ut1ngKeyAbcdefGhijklMnopqrStuv"
T0 = datetime(2025, 3, 1, 12, 0, 0, tzinfo=UTC)
JSON = {"Content-Type": "application/json"}
VALIDATOR = pagerduty_event_validator()


def make_alert(
    *,
    metric: MetricName = MetricName.LATENCY,
    level: AlertLevel = AlertLevel.CRITICAL,
    value: float = 123.5,
    threshold: float = 100.0,
    message: str = "latency mean 123.5 ms is above the critical threshold 100 ms",
    source: str = "gpu-node-7",
    labels: Mapping[str, str] | None = None,
    timestamp: datetime = T0,
) -> Alert:
    """An alert built as the monitor builds it, dedup key included."""
    labels = {"model": "llama-70b", "instance": "a"} if labels is None else labels
    return Alert(
        metric=metric,
        level=level,
        value=value,
        threshold=threshold,
        message=message,
        source=source,
        labels=labels,
        timestamp=timestamp,
        dedup_key=make_dedup_key(source, labels, metric),
        statistic="mean",
    )


def event_of(alert: Alert, action: str = "trigger") -> dict[str, Any]:
    """The parsed event, refusing NaN and infinity as strict JSON parsers do."""

    def no_constants(name: str) -> None:
        raise AssertionError(f"non-JSON constant {name}")

    event: dict[str, Any] = json.loads(
        format_pagerduty_payload(alert, ROUTING_KEY, action=action), parse_constant=no_constants
    )
    return event


@pytest.mark.parametrize(
    ("level", "severity"),
    [
        (AlertLevel.INFO, "info"),
        (AlertLevel.WARNING, "warning"),
        (AlertLevel.CRITICAL, "error"),
        (AlertLevel.EMERGENCY, "critical"),
    ],
)
def test_severity_mapping(level: AlertLevel, severity: str) -> None:
    assert pagerduty_severity(level) == severity
    assert event_of(make_alert(level=level))["payload"]["severity"] == severity


@pytest.mark.parametrize("level", list(AlertLevel))
@pytest.mark.parametrize("metric", list(MetricName))
def test_trigger_is_valid_against_the_openapi_schema(
    level: AlertLevel, metric: MetricName
) -> None:
    event = event_of(make_alert(metric=metric, level=level))
    assert pagerduty_problems(event, VALIDATOR) == []
    assert list(VALIDATOR.iter_errors(event)) == []


def test_trigger_fields() -> None:
    alert = make_alert(
        timestamp=datetime(2025, 3, 1, 13, 30, 15, 250000, tzinfo=timezone(timedelta(hours=1)))
    )
    event = event_of(alert)
    payload = event["payload"]

    assert event["routing_key"] == ROUTING_KEY
    assert event["event_action"] == "trigger"
    assert event["dedup_key"] == make_dedup_key("gpu-node-7", alert.labels, "latency")
    assert payload["summary"] == alert.message
    assert payload["source"] == "gpu-node-7"
    assert payload["component"] == "mhc-monitor"
    assert payload["group"] == "llama-70b"
    assert payload["class"] == "latency"
    assert payload["custom_details"] == {
        "metric": "latency",
        "level": "critical",
        "statistic": "mean",
        "value": 123.5,
        "threshold": 100.0,
        "message": alert.message,
        "labels": {"instance": "a", "model": "llama-70b"},
    }
    # ISO-8601 in UTC, the same instant as the alert's own (UTC+1) time.
    stamp = datetime.fromisoformat(payload["timestamp"])
    assert stamp.utcoffset() == timedelta(0)
    assert stamp == alert.timestamp
    assert payload["timestamp"] == "2025-03-01T12:30:15.250Z"


def test_group_without_a_model_label() -> None:
    assert event_of(make_alert(labels={"instance": "a"}))["payload"]["group"] == "mhc"


def test_dedup_key_is_stable_across_level_and_time() -> None:
    """cases.json: warning at t0 then critical at t0+60s of one problem share the key."""
    warning = make_alert(level=AlertLevel.WARNING, value=60.0, threshold=50.0, timestamp=T0)
    critical = make_alert(
        level=AlertLevel.CRITICAL,
        value=130.0,
        threshold=100.0,
        timestamp=T0 + timedelta(seconds=60),
    )
    first, second = event_of(warning), event_of(critical)
    assert first["dedup_key"] == second["dedup_key"]
    assert (first["payload"]["severity"], second["payload"]["severity"]) == ("warning", "error")


@pytest.mark.parametrize(
    ("labels_a", "labels_b", "metric_b", "source_b", "hashed"),
    [
        ({"model": "a"}, {"model": "b"}, MetricName.LATENCY, "gpu-node-7", False),
        ({"model": "a"}, {"model": "a"}, MetricName.ENERGY, "gpu-node-7", False),
        ({"model": "a"}, {"model": "a"}, MetricName.LATENCY, "gpu-node-8", False),
        # Both keys beyond 255 characters, so both are hashed; they differ only at the end.
        (
            {"model": "m" * 300 + "1"},
            {"model": "m" * 300 + "2"},
            MetricName.LATENCY,
            "gpu-node-7",
            True,
        ),
        (
            {"a": "x" * 200, "b": "y" * 200},
            {"a": "x" * 200, "b": "y" * 201},
            MetricName.LATENCY,
            "gpu-node-7",
            True,
        ),
    ],
)
def test_distinct_problems_have_distinct_dedup_keys(
    labels_a: dict[str, str],
    labels_b: dict[str, str],
    metric_b: MetricName,
    source_b: str,
    hashed: bool,
) -> None:
    key_a = event_of(make_alert(labels=labels_a))["dedup_key"]
    key_b = event_of(make_alert(labels=labels_b, metric=metric_b, source=source_b))["dedup_key"]
    assert key_a != key_b
    assert len(key_a) <= DEDUP_KEY_MAX and len(key_b) <= DEDUP_KEY_MAX
    if hashed:
        # Same readable head, so only the digest of the whole key tells them apart.
        assert len(key_a) == len(key_b) == DEDUP_KEY_MAX
        assert key_a[:150] == key_b[:150]


def test_long_label_set_is_accepted(pagerduty: PagerDutyReceiver) -> None:
    alert = make_alert(labels={f"label{i}": "v" * 40 for i in range(20)})
    response = httpx.post(
        pagerduty.url,
        content=format_pagerduty_payload(alert, ROUTING_KEY),
        headers=JSON,
        timeout=5,
    )
    assert response.status_code == 202, response.text
    assert response.json()["dedup_key"] == alert.dedup_key


@pytest.mark.parametrize(
    ("length", "expect_cut"),
    [
        (0, False),
        (1, False),
        (SUMMARY_MAX - 1, False),
        (SUMMARY_MAX, False),
        (SUMMARY_MAX + 1, True),
        (1500, True),
        (100_000, True),
    ],
)
def test_summary_fits_the_documented_limit(
    pagerduty: PagerDutyReceiver, length: int, expect_cut: bool
) -> None:
    """cases.json: a 1500-character message is cut to 1024 and accepted over real HTTP."""
    message = "a" * length
    alert = make_alert(message=message)
    body = format_pagerduty_payload(alert, ROUTING_KEY)
    summary = json.loads(body)["payload"]["summary"]

    assert len(summary) <= SUMMARY_MAX
    if expect_cut:
        assert summary == message[: SUMMARY_MAX - 1] + TRUNCATION_MARK
    elif message:
        assert summary == message
    else:
        assert summary.strip()  # PagerDuty refuses a blank summary

    response = httpx.post(pagerduty.url, content=body.encode("utf-8"), headers=JSON, timeout=5)
    assert response.status_code == 202, response.text
    assert response.json() == {
        "status": "success",
        "message": "Event processed",
        "dedup_key": alert.dedup_key,
    }
    assert pagerduty.accepted() == [json.loads(body)]


def test_summary_cut_counts_characters_not_bytes() -> None:
    message = "\u00e9" * 2000  # two bytes each in UTF-8
    summary = event_of(make_alert(message=message))["payload"]["summary"]
    assert summary == "\u00e9" * (SUMMARY_MAX - 1) + TRUNCATION_MARK


@pytest.mark.parametrize(
    "text",
    [
        'say "hi"',
        "back\\slash \\n not a newline",
        "line one\nline two\r\n\ttabbed",
        'quote " backslash \\ newline \n together',
        "unicode \u2603 \U0001f680 and nul \x00",
        "</script><b>&amp;",
    ],
)
def test_text_round_trips_through_json(pagerduty: PagerDutyReceiver, text: str) -> None:
    alert = make_alert(message=text, source=f"host {text}", labels={"model": text})
    event = event_of(alert)
    assert event["payload"]["summary"] == text
    assert event["payload"]["source"] == f"host {text}"
    assert event["payload"]["custom_details"]["labels"] == {"model": text}
    assert event["dedup_key"] == alert.dedup_key

    response = httpx.post(
        pagerduty.url,
        content=format_pagerduty_payload(alert, ROUTING_KEY),
        headers=JSON,
        timeout=5,
    )
    assert response.status_code == 202, response.text
    assert pagerduty.accepted()[-1]["payload"]["summary"] == text


@pytest.mark.parametrize(("value", "threshold"), [(float("nan"), 100.0), (float("inf"), 500.0)])
def test_non_finite_numbers_become_null(value: float, threshold: float) -> None:
    details = event_of(make_alert(value=value, threshold=threshold))["payload"]["custom_details"]
    assert details["value"] is None
    assert details["threshold"] == threshold


def test_resolve_event(pagerduty: PagerDutyReceiver) -> None:
    alert = make_alert()
    body = format_pagerduty_payload(alert, ROUTING_KEY, action="resolve")
    assert json.loads(body) == {
        "routing_key": ROUTING_KEY,
        "event_action": "resolve",
        "dedup_key": alert.dedup_key,
    }
    trigger = httpx.post(
        pagerduty.url,
        content=format_pagerduty_payload(alert, ROUTING_KEY),
        headers=JSON,
        timeout=5,
    )
    resolve = httpx.post(pagerduty.url, content=body, headers=JSON, timeout=5)
    assert (trigger.status_code, resolve.status_code) == (202, 202)
    assert [e["event_action"] for e in pagerduty.accepted()] == ["trigger", "resolve"]
    assert resolve.json()["dedup_key"] == trigger.json()["dedup_key"] == alert.dedup_key


@pytest.mark.parametrize(
    "routing_key",
    [
        "",
        "R0ut1ngKeyAbcdefGhijklMnopqrStu",  # 31
        "R0ut1ngKeyAbcdefGhijklMnopqrStuvw",  # 33
        "R0ut1ngKey Abcdef Ghijkl Mnopqr S",
        "R0ut1ngKeyAbcdefGhijklMnopqrStu\n",
        "R0ut1ngKeyAbcdefGhijklMnopqrSt\u00fcv",
    ],
)
def test_bad_routing_key_is_refused_without_being_echoed(
    routing_key: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    with pytest.raises(UsageError) as raised:
        format_pagerduty_payload(make_alert(), routing_key)
    text = f"{raised.value!s} {raised.value!r}"
    if routing_key:
        assert routing_key not in text
        assert routing_key.strip()[:8] not in text
    assert "routing key" in str(raised.value)
    assert all(routing_key not in r.getMessage() for r in caplog.records if routing_key)


def test_routing_key_is_never_logged(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    format_pagerduty_payload(make_alert(), ROUTING_KEY)
    with pytest.raises(UsageError):
        format_pagerduty_payload(make_alert(), ROUTING_KEY, action="escalate")
    assert ROUTING_KEY not in caplog.text


@pytest.mark.parametrize(
    ("change", "needle"),
    [
        ({"timestamp": datetime(2025, 3, 1, 12, 0)}, "timezone-aware"),
        ({"dedup_key": ""}, "empty dedup_key"),
        ({"dedup_key": "k" * (DEDUP_KEY_MAX + 1)}, "256 characters"),
    ],
)
def test_unusable_alert_is_refused(change: dict[str, Any], needle: str) -> None:
    fields = {**make_alert().__dict__, **change}
    with pytest.raises(UsageError, match=needle):
        format_pagerduty_payload(Alert(**fields), ROUTING_KEY)


@pytest.mark.parametrize("action", ["acknowledge", "TRIGGER", "", "escalate"])
def test_unknown_action_is_refused(action: str) -> None:
    with pytest.raises(UsageError, match="action must be one of trigger, resolve"):
        format_pagerduty_payload(make_alert(), ROUTING_KEY, action=action)


def test_case_summary_over_the_documented_limit(
    cases: dict[str, dict[str, Any]], pagerduty: PagerDutyReceiver
) -> None:
    case = cases["PagerDuty summary over the documented limit"]
    described = re.fullmatch(r"(\d+) times the letter (\w)", case["input"]["alert message"])
    assert described is not None
    count, letter = described.groups()
    alert = make_alert(message=letter * int(count))
    body = format_pagerduty_payload(alert, ROUTING_KEY)
    summary = json.loads(body)["payload"]["summary"]
    assert (len(summary) <= SUMMARY_MAX) is case["expect"]["len(payload.summary) <= 1024"]
    assert summary.endswith(TRUNCATION_MARK)

    response = httpx.post(pagerduty.url, content=body.encode(), headers=JSON, timeout=5)
    accepted = response.status_code == 202
    assert accepted is case["expect"]["event accepted by a receiver enforcing the limit"]


def test_case_dedup_key_ignores_level_and_time(cases: dict[str, dict[str, Any]]) -> None:
    case = cases["PagerDuty dedup key changes with time or level, so every page is a new incident"]
    assert "warning at t0 then critical at t0+60s" in case["input"]["description"]
    warning = make_alert(level=AlertLevel.WARNING, timestamp=T0)
    critical = make_alert(level=AlertLevel.CRITICAL, timestamp=T0 + timedelta(seconds=60))
    equal = event_of(warning)["dedup_key"] == event_of(critical)["dedup_key"]
    assert equal is case["expect"]["dedup_key equal"]
