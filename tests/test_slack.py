"""Slack incoming-webhook payloads: escaping exactly once, colours, fields and size limits."""

from __future__ import annotations

import html
import json
import re
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st

from mhc_monitor.alerts import Alert, AlertLevel, make_dedup_key
from mhc_monitor.errors import UsageError
from mhc_monitor.metrics import MetricName
from mhc_monitor.pagerduty import TRUNCATION_MARK
from mhc_monitor.slack import (
    FALLBACK_MAX,
    FIELD_VALUE_MAX,
    TEXT_MAX,
    format_slack_payload,
    slack_escape,
)
from receivers import SlackReceiver, slack_problems

T0 = datetime(2025, 3, 1, 12, 0, 0, tzinfo=UTC)
JSON = {"Content-Type": "application/json"}
# After escaping, `&` may only open one of the three entities; `<` and `>` never stand raw.
ESCAPED_ONLY = re.compile(r"(?:[^&<>]|&amp;|&lt;|&gt;)*")


def make_alert(
    *,
    metric: MetricName = MetricName.LATENCY,
    level: AlertLevel = AlertLevel.CRITICAL,
    value: float = 123.5,
    threshold: float = 100.0,
    message: str = "latency mean 123.5 ms is above the critical threshold 100 ms",
    source: str = "gpu-node-7",
    labels: Mapping[str, str] | None = None,
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
        timestamp=T0,
        dedup_key=make_dedup_key(source, labels, metric),
        statistic="mean",
    )


def message_of(alert: Alert, channel: str | None = None, *, resolved: bool = False) -> Any:
    return json.loads(format_slack_payload(alert, channel, resolved=resolved))


@pytest.mark.parametrize(
    ("raw", "escaped"),
    [
        ("p99 > 50 ms & rising", "p99 &gt; 50 ms &amp; rising"),
        ("&amp;", "&amp;amp;"),
        ("&lt;b&gt;", "&amp;lt;b&amp;gt;"),
        ("<script>alert(1)</script>", "&lt;script&gt;alert(1)&lt;/script&gt;"),
        (
            "<!channel> <@U123> <https://x.test|x>",
            "&lt;!channel&gt; &lt;@U123&gt; &lt;https://x.test|x&gt;",
        ),
        ("a&&b<<c>>", "a&amp;&amp;b&lt;&lt;c&gt;&gt;"),
        ("&#39; &quot; &nbsp;", "&amp;#39; &amp;quot; &amp;nbsp;"),
        ("'single' \"double\" *bold* _it_ `code`", "'single' \"double\" *bold* _it_ `code`"),
        ("caf\u00e9 \u2603 \U0001f680", "caf\u00e9 \u2603 \U0001f680"),
        ("", ""),
    ],
)
def test_escape_table(raw: str, escaped: str) -> None:
    assert slack_escape(raw) == escaped
    assert html.unescape(escaped) == raw


@given(st.text())
def test_escape_is_exactly_once(raw: str) -> None:
    escaped = slack_escape(raw)
    assert ESCAPED_ONLY.fullmatch(escaped)
    # With every `&` turned into an entity, unescaping is the exact inverse.
    assert html.unescape(escaped) == raw
    assert escaped.replace("&amp;", "").replace("&lt;", "").replace("&gt;", "") == re.sub(
        "[&<>]", "", raw
    )


def test_case_visible_text_is_escaped_once(slack: SlackReceiver) -> None:
    """cases.json: "p99 > 50 ms & rising" shows as written, escaped exactly once."""
    body = format_slack_payload(make_alert(message="p99 > 50 ms & rising"))
    message = json.loads(body)
    assert "p99 &gt; 50 ms &amp; rising" in message["text"]
    assert "p99 &gt; 50 ms &amp; rising" in message["attachments"][0]["fallback"]
    assert "&amp;amp;" not in body and "&amp;gt;" not in body

    response = httpx.post(slack.url, content=body.encode(), headers=JSON, timeout=5)
    assert (response.status_code, response.text) == (200, "ok")


@pytest.mark.parametrize(
    "text",
    ["&amp; already", "<script>x</script>", 'quote " and \\ and\nnewline', "a & b < c > d"],
)
def test_every_alert_string_is_escaped(slack: SlackReceiver, text: str) -> None:
    alert = make_alert(message=text, source=text, labels={"model": text})
    message = message_of(alert)
    attachment = message["attachments"][0]
    shown = [message["text"], attachment["fallback"], attachment["title"], attachment["footer"]]
    shown += [f["title"] for f in attachment["fields"]] + [
        f["value"] for f in attachment["fields"]
    ]
    assert all(ESCAPED_ONLY.fullmatch(s) for s in shown)
    assert slack_escape(text) in message["text"]
    assert f"model={slack_escape(text)}" in [f["value"] for f in attachment["fields"]]

    response = httpx.post(slack.url, content=format_slack_payload(alert), headers=JSON, timeout=5)
    assert response.status_code == 200, response.text


def test_no_channel_key_by_default() -> None:
    assert "channel" not in message_of(make_alert())


@pytest.mark.parametrize("channel", ["#alerts", "C0123456789", "@oncall", " #padded "])
def test_channel_when_given(channel: str) -> None:
    assert message_of(make_alert(), channel)["channel"] == channel.strip()


@pytest.mark.parametrize("channel", ["", "   ", "#" + "c" * 81])
def test_unusable_channel_is_refused(channel: str) -> None:
    with pytest.raises(UsageError, match="channel"):
        format_slack_payload(make_alert(), channel)


@pytest.mark.parametrize(
    ("level", "resolved", "color", "state"),
    [
        (AlertLevel.INFO, False, "#439FE0", "[INFO]"),
        (AlertLevel.WARNING, False, "warning", "[WARNING]"),
        (AlertLevel.CRITICAL, False, "danger", "[CRITICAL]"),
        (AlertLevel.EMERGENCY, False, "#8B0000", "[EMERGENCY]"),
        (AlertLevel.CRITICAL, True, "good", "[RESOLVED]"),
        (AlertLevel.EMERGENCY, True, "good", "[RESOLVED]"),
    ],
)
def test_colour_and_state_by_level(
    slack: SlackReceiver, level: AlertLevel, resolved: bool, color: str, state: str
) -> None:
    alert = make_alert(level=level)
    message = message_of(alert, resolved=resolved)
    assert message["attachments"][0]["color"] == color
    assert message["text"].startswith(f"{state} latency on gpu-node-7: ")
    body = format_slack_payload(alert, resolved=resolved)
    assert httpx.post(slack.url, content=body, headers=JSON, timeout=5).status_code == 200


@pytest.mark.parametrize(
    ("metric", "value", "threshold", "shown_value", "shown_threshold"),
    [
        (MetricName.LATENCY, 123.5, 100.0, "123.5 ms", "100 ms"),
        (MetricName.ACCEPTANCE, 0.4321, 0.5, "0.4321", "0.5"),
        (MetricName.ENERGY, 1234567.0, 1000.0, "1.23457e+06", "1000"),
        (MetricName.CURVATURE, float("nan"), 5.0, "nan", "5"),
    ],
)
def test_fields(
    metric: MetricName, value: float, threshold: float, shown_value: str, shown_threshold: str
) -> None:
    alert = make_alert(metric=metric, value=value, threshold=threshold)
    attachment = message_of(alert)["attachments"][0]
    assert attachment["fields"] == [
        {"title": "Metric", "value": str(metric), "short": True},
        {"title": "Level", "value": "critical", "short": True},
        {"title": "Value", "value": shown_value, "short": True},
        {"title": "Threshold", "value": shown_threshold, "short": True},
        {"title": "Statistic", "value": "mean", "short": True},
        {"title": "Labels", "value": "instance=a, model=llama-70b", "short": False},
    ]
    assert attachment["title"] == f"{metric} critical"
    assert attachment["ts"] == int(T0.timestamp())


@pytest.mark.parametrize(
    ("message", "expect_cut"),
    [
        ("a" * 100, False),
        ("a" * 50_000, True),
        ("&" * 20_000, True),  # 100,000 characters once escaped
        ("x" + "<" * 9_999, True),
        ("b" * (TEXT_MAX - 100), False),
    ],
)
def test_size_limits(slack: SlackReceiver, message: str, expect_cut: bool) -> None:
    alert = make_alert(message=message, labels={f"k{i}": "v" * 50 for i in range(40)})
    body = format_slack_payload(alert)
    parsed = json.loads(body)
    text = parsed["text"]
    attachment = parsed["attachments"][0]

    assert len(text) <= TEXT_MAX
    assert len(attachment["fallback"]) <= FALLBACK_MAX
    assert all(len(f["value"]) <= FIELD_VALUE_MAX for f in attachment["fields"])
    assert len(parsed["attachments"]) == 1
    assert text.endswith(TRUNCATION_MARK) is expect_cut
    # The cut never splits an entity: what is left reads back as a prefix of what was written.
    kept = html.unescape(text.removesuffix(TRUNCATION_MARK) if expect_cut else text)
    assert f"[CRITICAL] latency on gpu-node-7: {message}".startswith(kept)
    assert ESCAPED_ONLY.fullmatch(text.removesuffix(TRUNCATION_MARK))

    assert slack_problems(parsed) == ("ok", [])
    response = httpx.post(slack.url, content=body.encode(), headers=JSON, timeout=5)
    assert response.status_code == 200, response.text


def test_case_slack_control_characters(
    cases: dict[str, dict[str, Any]], slack: SlackReceiver
) -> None:
    case = cases["Slack control characters escaped exactly once"]
    body = format_slack_payload(make_alert(message=case["input"]["alert message"]))
    assert case["expect"]["visible text contains"] in json.loads(body)["text"]
    response = httpx.post(slack.url, content=body.encode(), headers=JSON, timeout=5)
    assert (response.status_code, response.text) == (200, "ok")
