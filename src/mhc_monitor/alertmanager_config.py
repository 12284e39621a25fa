"""An Alertmanager (>= 0.25) configuration for the alerts that `rules.generate_rules` defines.

Routes by the `severity` label: critical and error page through PagerDuty,
warning goes to Slack, info to the generic webhook; a missing receiver hands
its severities to the next milder one that is configured. Inhibition silences
a lower level while a higher level of the same metric and instance fires.

Secrets are never written into the file: PagerDuty's routing key and Slack's
webhook URL are referenced by path (`routing_key_file`, `api_url_file`), and
Alertmanager reads them when it sends. Alertmanager 0.25 reads a relative path
from its own working folder, so give absolute paths (the CLI writes them so).
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

import yaml

from .alerts import AlertLevel
from .errors import ConfigError, UsageError
from .rules import SEVERITY_BY_LEVEL, format_duration

__all__ = [
    "GROUP_BY",
    "NULL_RECEIVER",
    "PAGERDUTY_RECEIVER",
    "SLACK_RECEIVER",
    "WEBHOOK_RECEIVER",
    "generate_alertmanager_config",
]

PAGERDUTY_RECEIVER = "mhc-pagerduty"
SLACK_RECEIVER = "mhc-slack"
WEBHOOK_RECEIVER = "mhc-webhook"
#: Receives what no configured receiver takes; it has no integrations.
NULL_RECEIVER = "mhc-null"
GROUP_BY = ("alertname", "metric", "instance")

# Severities from the most to the least severe, as the rules label them.
_SEVERITIES = tuple(SEVERITY_BY_LEVEL[level] for level in sorted(AlertLevel, reverse=True))
_ALERTNAME_MATCHER = 'alertname=~"Mhc.+"'
_PAGERDUTY_SEVERITY = (
    "{{ if .CommonLabels.severity }}{{ .CommonLabels.severity }}{{ else }}critical{{ end }}"
)


def generate_alertmanager_config(
    *,
    pagerduty_routing_key_file: str | None,
    slack_webhook_url_file: str | None,
    webhook_url: str | None,
    slack_channel: str | None = None,
    pagerduty_url: str | None = None,
    group_wait_seconds: float = 30,
    group_interval_seconds: float = 300,
    repeat_interval_seconds: float = 4 * 3600,
) -> str:
    """The Alertmanager configuration (YAML) routing mhc-monitor alerts by severity.

    Each receiver is included only when its argument is given; with none at all,
    every alert goes to a receiver without integrations. The group timings are
    Alertmanager's `group_wait`, `group_interval` and `repeat_interval`.
    `pagerduty_url` is the Events API v2 enqueue URL, for an endpoint other than
    Alertmanager's default (PagerDuty's EU service, a proxy). Raises
    `ConfigError` for an empty path or a webhook URL that is not http(s), and
    `UsageError` for a negative group wait, a non-positive interval or a Slack
    channel without a Slack webhook.
    """
    _check_path("pagerduty_routing_key_file", pagerduty_routing_key_file)
    _check_path("slack_webhook_url_file", slack_webhook_url_file)
    if slack_channel is not None and slack_webhook_url_file is None:
        raise UsageError(
            "slack_channel needs slack_webhook_url_file: without a webhook there is no "
            "Slack receiver for the channel"
        )
    if webhook_url is not None:
        _check_url("webhook_url", webhook_url)
    if pagerduty_url is not None:
        _check_url("pagerduty_url", pagerduty_url)
    timing = _timing(group_wait_seconds, group_interval_seconds, repeat_interval_seconds)

    receivers = _receivers(
        pagerduty_routing_key_file, slack_webhook_url_file, webhook_url, slack_channel
    )
    if pagerduty_url is not None and pagerduty_routing_key_file is not None:
        receivers[1]["pagerduty_configs"][0]["url"] = pagerduty_url
    names = [receiver["name"] for receiver in receivers]
    document = {
        "route": _route(names, timing),
        "inhibit_rules": _inhibit_rules(),
        "receivers": receivers,
    }
    text: str = yaml.safe_dump(document, sort_keys=False, width=1000)
    return text


def _check_path(name: str, path: str | None) -> None:
    if path is not None and not path.strip():
        raise ConfigError(f"{name} must be a file path, got an empty string")


def _check_url(name: str, url: str) -> None:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        # The URL itself is not repeated: it may carry a token.
        raise ConfigError(f"{name} must be an absolute http(s) URL")


def _timing(wait: float, interval: float, repeat: float) -> dict[str, str]:
    for name, seconds in (("group_interval", interval), ("repeat_interval", repeat)):
        # Alertmanager refuses a zero interval; format_duration rejects the rest.
        if seconds == 0:
            raise UsageError(f"{name} must be positive, got {seconds!r} s")
    return {
        "group_wait": format_duration(wait),
        "group_interval": format_duration(interval),
        "repeat_interval": format_duration(repeat),
    }


def _receivers(
    pagerduty_key_file: str | None,
    slack_url_file: str | None,
    webhook_url: str | None,
    slack_channel: str | None,
) -> list[dict[str, Any]]:
    receivers: list[dict[str, Any]] = [{"name": NULL_RECEIVER}]
    if pagerduty_key_file is not None:
        pagerduty = {
            "routing_key_file": pagerduty_key_file,
            "send_resolved": True,
            "severity": _PAGERDUTY_SEVERITY,
        }
        receivers.append({"name": PAGERDUTY_RECEIVER, "pagerduty_configs": [pagerduty]})
    if slack_url_file is not None:
        slack: dict[str, Any] = {"api_url_file": slack_url_file, "send_resolved": True}
        if slack_channel:
            slack["channel"] = slack_channel
        receivers.append({"name": SLACK_RECEIVER, "slack_configs": [slack]})
    if webhook_url is not None:
        # TODO: Alertmanager 0.25 has no url_file for webhooks (0.26 adds it), so a
        # webhook URL that embeds a token is written into the file.
        webhook = {"url": webhook_url, "send_resolved": True}
        receivers.append({"name": WEBHOOK_RECEIVER, "webhook_configs": [webhook]})
    return receivers


def _route(configured: list[str], timing: dict[str, str]) -> dict[str, Any]:
    """Each severity to its receiver, or to the next milder configured one."""
    preferred = {
        "critical": PAGERDUTY_RECEIVER,
        "error": PAGERDUTY_RECEIVER,
        "warning": SLACK_RECEIVER,
        "info": WEBHOOK_RECEIVER,
    }
    chain = [PAGERDUTY_RECEIVER, SLACK_RECEIVER, WEBHOOK_RECEIVER]
    default = WEBHOOK_RECEIVER if WEBHOOK_RECEIVER in configured else NULL_RECEIVER

    by_receiver: dict[str, list[str]] = {}
    for severity in _SEVERITIES:
        candidates = chain[chain.index(preferred[severity]) :]
        receiver = next((name for name in candidates if name in configured), NULL_RECEIVER)
        by_receiver.setdefault(receiver, []).append(severity)
    routes = [
        {"receiver": receiver, "matchers": [f'severity=~"{"|".join(severities)}"']}
        for receiver, severities in by_receiver.items()
    ]
    return {
        "receiver": default,
        "group_by": list(GROUP_BY),
        **timing,
        "routes": routes,
    }


def _inhibit_rules() -> list[dict[str, Any]]:
    """A firing severity silences every milder one of the same metric and instance."""
    rules = []
    for index, source in enumerate(_SEVERITIES[:-1]):
        milder = "|".join(_SEVERITIES[index + 1 :])
        rules.append(
            {
                "source_matchers": [_ALERTNAME_MATCHER, f'severity="{source}"'],
                "target_matchers": [_ALERTNAME_MATCHER, f'severity=~"{milder}"'],
                "equal": ["metric", "instance"],
            }
        )
    return rules
