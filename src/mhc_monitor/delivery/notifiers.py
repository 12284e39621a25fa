"""Notifiers: one request per notification, every attempt classified.

    delivered   the receiver accepted it (2xx)
    retryable   429, 5xx, 408, a network error or a timeout: try again later,
                no sooner than the receiver's Retry-After
    permanent   any other 4xx, or a notification that cannot be formatted

Secrets (routing keys, webhook URLs) go into the request and nowhere else: a
log filter on httpx's logger replaces them, and failure descriptions carry the
status and the error class, never the URL or the exception text.
"""

from __future__ import annotations

import email.utils
import logging
import threading
import time
import weakref
from dataclasses import dataclass
from typing import Protocol

import httpx

from ..alerts import Alert
from ..config import ReceiverSettings, Secret
from ..errors import UsageError
from ..pagerduty import format_pagerduty_payload
from ..slack import format_slack_payload

__all__ = [
    "AttemptResult",
    "LogNotifier",
    "Notifier",
    "PagerDutyNotifier",
    "SlackNotifier",
    "build_notifier",
    "classify_status",
    "parse_retry_after",
]

logger = logging.getLogger(__name__)

_RETRYABLE_4XX = frozenset({408, 425, 429})
_RETRY_AFTER_MAX = 3600.0


@dataclass(frozen=True)
class AttemptResult:
    """The outcome of one delivery attempt: outcome, reason, HTTP status, Retry-After (s)."""

    outcome: str
    reason: str
    status: int | None = None
    retry_after: float | None = None
    #: What failed below HTTP, as the HTTP client's error class ("ConnectError").
    detail: str | None = None

    def describe(self) -> str:
        """A short human description, with no secret in it."""
        status = f" (HTTP {self.status})" if self.status is not None else ""
        if self.outcome == "delivered":
            return f"delivered{status}"
        detail = f" ({_DETAILS.get(self.detail, self.detail)})" if self.detail else ""
        return f"{self.outcome}: {self.reason}{status}{detail}"


# The error's class names what failed; its message is not shown, as it may hold the URL.
_DETAILS = {
    "ConnectError": "connection failed: refused, or no route to the receiver",
    "ConnectTimeout": "no connection within the timeout",
    "ReadTimeout": "no answer within the timeout",
    "WriteTimeout": "could not send within the timeout",
    "PoolTimeout": "no free connection within the timeout",
    "ReadError": "the connection broke while reading the answer",
    "WriteError": "the connection broke while sending",
    "RemoteProtocolError": "the receiver broke the HTTP protocol or closed the connection",
}


def classify_status(status: int) -> tuple[str, str]:
    """(outcome, reason) of an HTTP status."""
    if 200 <= status < 300:
        return "delivered", "ok"
    if status == 429:
        return "retryable", "rate_limited"
    if status >= 500:
        return "retryable", "server_error"
    if status in _RETRYABLE_4XX:
        return "retryable", "client_timeout"
    return "permanent", "client_error"


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a Retry-After header (delta-seconds or an HTTP date), or None."""
    if value is None or not value.strip():
        return None
    text = value.strip()
    try:
        seconds = float(text)
    except ValueError:
        try:
            moment = email.utils.parsedate_to_datetime(text)
        except (TypeError, ValueError):
            return None
        seconds = moment.timestamp() - (time.time() if now is None else now)
    if seconds != seconds:
        return None
    return min(max(0.0, seconds), _RETRY_AFTER_MAX)


class _Redactor(logging.Filter):
    """Replaces every registered secret in records of the logger it sits on."""

    def __init__(self) -> None:
        super().__init__()
        self._lock = threading.Lock()
        self._secrets: weakref.WeakSet[_SecretRef] = weakref.WeakSet()

    def add(self, ref: _SecretRef) -> None:
        with self._lock:
            self._secrets.add(ref)

    def filter(self, record: logging.LogRecord) -> bool:
        with self._lock:
            values = [ref.value for ref in self._secrets if ref.value]
        if not values:
            return True
        message = record.getMessage()
        if any(v in message for v in values):
            for v in values:
                message = message.replace(v, "***")
            record.msg = message
            record.args = None
        return True


class _SecretRef:
    __slots__ = ("__weakref__", "value")

    def __init__(self, value: str) -> None:
        self.value = value


_REDACTOR = _Redactor()
# httpx logs every request line (the URL, which for Slack is the secret) at INFO.
# Filters act only on the logger a record is made on, so each httpcore logger gets one.
for _name in ("httpx", "httpcore", "httpcore.connection", "httpcore.http11", "httpcore.http2"):
    logging.getLogger(_name).addFilter(_REDACTOR)


class Notifier(Protocol):
    """Sends one notification and says what happened; never raises for a delivery failure."""

    name: str
    kind: str

    def send(self, alert: Alert, action: str) -> AttemptResult:
        """Send `alert` as `action` ("trigger" or "resolve")."""
        ...

    def close(self) -> None:
        """Release connections."""
        ...


class _HttpNotifier:
    """POSTs a JSON body and classifies the answer."""

    kind = "http"

    def __init__(self, name: str, timeout_s: float, secret: Secret) -> None:
        self.name = name
        self._secret = _SecretRef(secret.reveal())
        _REDACTOR.add(self._secret)
        self._client = httpx.Client(timeout=timeout_s, follow_redirects=False)

    def close(self) -> None:
        """Close the HTTP client."""
        self._client.close()

    def _post(self, url: str, body: str) -> AttemptResult:
        try:
            response = self._client.post(
                url,
                content=body.encode("utf-8"),
                headers={"Content-Type": "application/json"},
            )
        except httpx.TimeoutException as exc:
            return AttemptResult("retryable", "timeout", detail=type(exc).__name__)
        except httpx.TransportError as exc:
            reason = "network" if isinstance(exc, httpx.NetworkError) else "transport"
            return AttemptResult("retryable", reason, detail=type(exc).__name__)
        except httpx.HTTPError as exc:
            return AttemptResult("retryable", "network", detail=type(exc).__name__)
        outcome, reason = classify_status(response.status_code)
        retry_after = parse_retry_after(response.headers.get("Retry-After"))
        return AttemptResult(outcome, reason, response.status_code, retry_after)


class PagerDutyNotifier(_HttpNotifier):
    """Events API v2: trigger (also for updates and repeats) and resolve, by dedup key."""

    kind = "pagerduty"

    def __init__(self, name: str, url: str, routing_key: Secret, timeout_s: float) -> None:
        super().__init__(name, timeout_s, routing_key)
        self._url = url

    def send(self, alert: Alert, action: str) -> AttemptResult:
        """POST one event to the enqueue URL."""
        try:
            body = format_pagerduty_payload(alert, self._secret.value, action=action)
        except UsageError:
            return AttemptResult("permanent", "invalid_payload")
        return self._post(self._url, body)


class SlackNotifier(_HttpNotifier):
    """An incoming webhook: one message per trigger, update, repeat and resolve."""

    kind = "slack"

    def __init__(self, name: str, webhook_url: Secret, channel: str | None, timeout_s: float):
        super().__init__(name, timeout_s, webhook_url)
        self._channel = channel

    def send(self, alert: Alert, action: str) -> AttemptResult:
        """POST one message to the webhook."""
        try:
            body = format_slack_payload(alert, self._channel, resolved=action == "resolve")
        except UsageError:
            return AttemptResult("permanent", "invalid_payload")
        return self._post(self._secret.value, body)


class LogNotifier:
    """Writes each notification to the log: WARNING for a trigger, INFO for a resolve."""

    kind = "log"

    def __init__(self, name: str = "log") -> None:
        self.name = name
        self._log = logging.getLogger(f"{__name__}.{name}")

    def send(self, alert: Alert, action: str) -> AttemptResult:
        """Log the alert; always delivered."""
        level = logging.INFO if action == "resolve" else logging.WARNING
        self._log.log(
            level,
            "alert %s %s level=%s value=%.6g threshold=%.6g dedup_key=%s: %s",
            action,
            alert.metric,
            alert.level.name.lower(),
            alert.value,
            alert.threshold,
            alert.dedup_key,
            alert.message,
        )
        return AttemptResult("delivered", "ok")

    def close(self) -> None:
        """Nothing to release."""


def build_notifier(receiver: ReceiverSettings, timeout_s: float) -> Notifier:
    """The notifier for a configured receiver."""
    if receiver.kind == "pagerduty":
        if receiver.secret is None or receiver.url is None:
            raise UsageError(f"receiver {receiver.name} needs a routing key and a URL")
        return PagerDutyNotifier(receiver.name, receiver.url, receiver.secret, timeout_s)
    if receiver.kind == "slack":
        if receiver.secret is None:
            raise UsageError(f"receiver {receiver.name} needs a webhook URL")
        return SlackNotifier(receiver.name, receiver.secret, receiver.channel, timeout_s)
    if receiver.kind == "log":
        return LogNotifier(receiver.name)
    raise UsageError(f"receiver {receiver.name} has unknown kind {receiver.kind!r}")
