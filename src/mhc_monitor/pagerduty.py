"""Alerts as PagerDuty Events API v2 events (https://events.pagerduty.com/v2/enqueue).

One problem is one PagerDuty alert: every event of an alert carries its
`dedup_key`, which names the source, labels and metric but neither the level nor
the time, so a warning that turns critical updates the open incident instead of
paging again, and a resolve event closes it.

The routing key is a secret: it is validated without ever being echoed, and it
appears nowhere but in the returned JSON text.
"""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime
from typing import Any

from .alerts import DEDUP_KEY_MAX, Alert, AlertLevel
from .errors import UsageError

__all__ = [
    "ACTIONS",
    "ROUTING_KEY_LENGTH",
    "SUMMARY_MAX",
    "TRUNCATION_MARK",
    "check_alert",
    "format_pagerduty_payload",
    "pagerduty_severity",
    "truncate",
]

#: The documented maximum length of `payload.summary`, in characters.
SUMMARY_MAX = 1024
#: The length of an Events API v2 integration key.
ROUTING_KEY_LENGTH = 32
#: The event actions this module builds.
ACTIONS: tuple[str, ...] = ("trigger", "resolve")
#: Appended to any text cut to fit a limit, so a reader sees that something is missing.
TRUNCATION_MARK = "\u2026"

_CLIENT = "mhc-monitor"
# The full message rides in custom_details too; bounded so that one verbose alert
# stays far below the 512 KB an event may weigh.
_DETAILS_MESSAGE_MAX = 16_384

_SEVERITY = {
    AlertLevel.INFO: "info",
    AlertLevel.WARNING: "warning",
    AlertLevel.CRITICAL: "error",
    AlertLevel.EMERGENCY: "critical",
}


def pagerduty_severity(level: AlertLevel) -> str:
    """The Events v2 severity of a level: info, warning, error (CRITICAL), critical (EMERGENCY)."""
    return _SEVERITY[AlertLevel(level)]


def truncate(text: str, limit: int) -> str:
    """`text` if it fits in `limit` characters, else its head ending in `TRUNCATION_MARK`."""
    if limit < 1:
        raise UsageError(f"truncation limit must be at least 1, got {limit}")
    if len(text) <= limit:
        return text
    return text[: limit - 1] + TRUNCATION_MARK


def format_pagerduty_payload(alert: Alert, routing_key: str, *, action: str = "trigger") -> str:
    """The Events API v2 request body (JSON text) that triggers or resolves `alert`'s incident.

    A trigger carries the full payload: summary (at most 1024 characters),
    severity, ISO-8601 UTC timestamp, source, component, group, class and
    custom details. A resolve carries only the routing key, the action and the
    dedup key. Raises `UsageError` for a malformed routing key (the message
    never contains it), an unknown action, a naive timestamp or a dedup key
    PagerDuty would refuse.
    """
    check_alert(alert)
    _check_routing_key(routing_key)
    _check_dedup_key(alert.dedup_key)
    if action not in ACTIONS:
        raise UsageError(f"action must be one of {', '.join(ACTIONS)}, got {action!r}")

    event: dict[str, Any] = {
        "routing_key": routing_key,
        "event_action": action,
        "dedup_key": alert.dedup_key,
    }
    if action == "trigger":
        event["client"] = _CLIENT
        event["payload"] = _payload(alert)
    return json.dumps(event, ensure_ascii=False, allow_nan=False)


def check_alert(alert: object) -> None:
    """Raise `UsageError` unless `alert` is an `Alert`: a payload is built from nothing else."""
    if not isinstance(alert, Alert):
        raise UsageError(f"alert must be an mhc_monitor.Alert, got {type(alert).__name__}")


def _check_routing_key(routing_key: object) -> None:
    # Only the shape of the key is described: the key itself must not reach a log.
    if not isinstance(routing_key, str):
        raise UsageError(f"routing key must be a string, got {type(routing_key).__name__}")
    if not routing_key:
        raise UsageError("routing key is empty")
    if len(routing_key) != ROUTING_KEY_LENGTH or not (
        routing_key.isascii() and routing_key.isalnum()
    ):
        raise UsageError(
            f"routing key must be {ROUTING_KEY_LENGTH} ASCII letters and digits "
            f"(an Events API v2 integration key); got {len(routing_key)} characters"
        )


def _check_dedup_key(dedup_key: str) -> None:
    if not dedup_key.strip():
        raise UsageError("alert has an empty dedup_key")
    if len(dedup_key) > DEDUP_KEY_MAX:
        raise UsageError(
            f"dedup_key has {len(dedup_key)} characters, PagerDuty accepts {DEDUP_KEY_MAX}"
        )


def _payload(alert: Alert) -> dict[str, Any]:
    metric = str(alert.metric)
    level = AlertLevel(alert.level)
    summary = alert.message.strip() or f"{metric} is {level.name.lower()} on {alert.source}"
    labels = {str(k): str(alert.labels[k]) for k in sorted(alert.labels)}
    return {
        "summary": truncate(summary, SUMMARY_MAX),
        "timestamp": _utc_timestamp(alert.timestamp),
        "severity": pagerduty_severity(level),
        # PagerDuty refuses a blank source.
        "source": alert.source.strip() or _CLIENT,
        "component": _CLIENT,
        "group": labels.get("model") or "mhc",
        "class": metric,
        "custom_details": {
            "metric": metric,
            "level": level.name.lower(),
            "statistic": alert.statistic,
            "value": _finite_or_none(alert.value),
            "threshold": _finite_or_none(alert.threshold),
            "message": truncate(alert.message, _DETAILS_MESSAGE_MAX),
            "labels": labels,
        },
    }


def _utc_timestamp(moment: datetime) -> str:
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise UsageError("alert timestamp must be timezone-aware (UTC)")
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _finite_or_none(value: float) -> float | None:
    # JSON has no NaN or infinity; null says "no number" without breaking the body.
    number = float(value)
    return number if math.isfinite(number) else None
