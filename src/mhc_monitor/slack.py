"""Alerts as Slack incoming-webhook messages.

Slack reads `&`, `<` and `>` as control characters, so every piece of text that
comes from an alert (message, source, labels) is escaped exactly once: `&` to
`&amp;`, `<` to `&lt;`, `>` to `&gt;`, nothing else, and nothing is ever
unescaped. A message that already reads "&amp;" is shown as written, which
means it is sent as "&amp;amp;".

Limits: Slack truncates a message `text` beyond 40,000 characters and accepts at
most 100 attachments; the formatter cuts text on its own, at a character
boundary that never splits an entity, and ends it with a visible mark.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

from .alerts import Alert, AlertLevel
from .errors import UsageError
from .metrics import MetricName
from .pagerduty import TRUNCATION_MARK, check_alert

__all__ = [
    "ATTACHMENTS_MAX",
    "CHANNEL_MAX",
    "COLORS",
    "FALLBACK_MAX",
    "FIELD_VALUE_MAX",
    "FOOTER_MAX",
    "RESOLVED_COLOR",
    "TEXT_MAX",
    "format_slack_payload",
    "slack_escape",
]

#: Slack truncates a message's `text` beyond this many characters.
TEXT_MAX = 40_000
#: Slack refuses a message with more attachments than this.
ATTACHMENTS_MAX = 100
#: Fallback text is shown in notifications; longer text only gets cut by the client.
FALLBACK_MAX = 3_000
#: Field values are shown in a two-column table; beyond this they stop being readable.
FIELD_VALUE_MAX = 500
#: Slack limits an attachment's footer to this many characters.
FOOTER_MAX = 300
#: Slack channel names are at most 80 characters; "#" or "@" may precede them.
CHANNEL_MAX = 81

#: Attachment colour per level: Slack's named colours where they fit, hex otherwise.
COLORS = {
    AlertLevel.INFO: "#439FE0",
    AlertLevel.WARNING: "warning",
    AlertLevel.CRITICAL: "danger",
    AlertLevel.EMERGENCY: "#8B0000",
}
#: Attachment colour of a resolved alert.
RESOLVED_COLOR = "good"

_ENTITIES = {"&": "&amp;", "<": "&lt;", ">": "&gt;"}
_CONTROL = re.compile("[&<>]")


def slack_escape(text: str) -> str:
    """`text` with `&`, `<` and `>` replaced by their entities, once, and nothing else changed."""
    # One pass over the raw text: a replacement is never scanned again, so "&" in
    # "&lt;" cannot be escaped a second time.
    return _CONTROL.sub(lambda match: _ENTITIES[match.group()], text)


def format_slack_payload(
    alert: Alert, channel: str | None = None, *, resolved: bool = False
) -> str:
    """The incoming-webhook body (JSON text) that announces `alert`, or its resolution.

    The top-level `text` names the level, metric and source and carries the
    message; one attachment, coloured by level (green when resolved), holds the
    metric, value, threshold, level, statistic and labels as fields and a
    plain-text `fallback`. The `channel` key is present only when a channel is
    given (most webhooks are bound to one). Raises `UsageError` for an empty or
    overlong channel.
    """
    check_alert(alert)
    level = AlertLevel(alert.level)
    headline = _headline(alert, level, resolved)
    message = alert.message.strip()
    visible = f"{headline}: {message}" if message else headline

    attachment: dict[str, Any] = {
        "color": RESOLVED_COLOR if resolved else COLORS[level],
        "fallback": _escape_within(visible, FALLBACK_MAX),
        "title": slack_escape(f"{alert.metric} {level.name.lower()}"),
        "fields": _fields(alert, level),
        "footer": _escape_within(f"mhc-monitor · {alert.source}", FOOTER_MAX),
        "ts": int(alert.timestamp.timestamp()),
    }
    body: dict[str, Any] = {"text": _escape_within(visible, TEXT_MAX), "attachments": [attachment]}
    if channel is not None:
        body["channel"] = _checked_channel(channel)
    return json.dumps(body, ensure_ascii=False, allow_nan=False)


def _headline(alert: Alert, level: AlertLevel, resolved: bool) -> str:
    state = "RESOLVED" if resolved else level.name
    return f"[{state}] {alert.metric} on {alert.source}"


def _fields(alert: Alert, level: AlertLevel) -> list[dict[str, Any]]:
    labels = ", ".join(f"{k}={alert.labels[k]}" for k in sorted(alert.labels)) or "(none)"
    unit = " ms" if alert.metric == MetricName.LATENCY else ""
    rows = [
        ("Metric", str(alert.metric), True),
        ("Level", level.name.lower(), True),
        ("Value", f"{_number(alert.value)}{unit}", True),
        ("Threshold", f"{_number(alert.threshold)}{unit}", True),
        ("Statistic", alert.statistic, True),
        ("Labels", labels, False),
    ]
    return [
        {"title": title, "value": _escape_within(value, FIELD_VALUE_MAX), "short": short}
        for title, value, short in rows
    ]


def _number(value: float) -> str:
    number = float(value)
    return f"{number:.6g}" if math.isfinite(number) else str(number)


def _escape_within(text: str, limit: int) -> str:
    """`text` escaped, cut to at most `limit` characters so that no entity is split."""
    escaped = slack_escape(text)
    if len(escaped) <= limit:
        return escaped
    room = limit - len(TRUNCATION_MARK)
    pieces: list[str] = []
    used = 0
    for char in text:
        piece = _ENTITIES.get(char, char)
        if used + len(piece) > room:
            break
        pieces.append(piece)
        used += len(piece)
    return "".join(pieces) + TRUNCATION_MARK


def _checked_channel(channel: object) -> str:
    if not isinstance(channel, str):
        raise UsageError(f"Slack channel must be a string or None, got {type(channel).__name__}")
    name = channel.strip()
    if not name:
        raise UsageError("Slack channel is empty; pass None to use the webhook's own channel")
    if len(name) > CHANNEL_MAX:
        raise UsageError(f"Slack channel name has {len(name)} characters, at most {CHANNEL_MAX}")
    return name
