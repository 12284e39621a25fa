"""A folder with everything a fleet needs: Prometheus, its rules, Alertmanager and Grafana.

    DIR/prometheus.yml                              scrape the sidecars and Alertmanager,
                                                    load rules.yml
    DIR/rules.yml                                   alerting and recording rules,
                                                    a sidecar-down alert
    DIR/alertmanager.yml                            receivers, routes, inhibition
    DIR/dashboard.json                              the fleet dashboard
    DIR/grafana/provisioning/datasources/mhc.yml    the Prometheus data source
    DIR/grafana/provisioning/dashboards/mhc.yml     loads dashboard.json

All of it comes from one `AlertConfig`, so the dashboard colours, the rules and
the in-process alerts agree. Secrets stay in their files; only paths are written.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml

from .alertmanager_config import generate_alertmanager_config
from .alerts import AlertConfig
from .errors import UsageError
from .grafana import dashboard_uid, generate_dashboard
from .rules import format_duration, generate_rules

__all__ = ["ALERTMANAGER_JOB", "BUNDLE_FILES", "DATASOURCE_UID", "SCRAPE_JOB", "export_bundle"]

logger = logging.getLogger(__name__)

#: The files `export_bundle` writes, relative to its folder.
BUNDLE_FILES = (
    "prometheus.yml",
    "rules.yml",
    "alertmanager.yml",
    "dashboard.json",
    "grafana/provisioning/datasources/mhc.yml",
    "grafana/provisioning/dashboards/mhc.yml",
)
#: The uid of the provisioned Prometheus data source.
DATASOURCE_UID = "mhc-prometheus"
#: The Prometheus job that scrapes the sidecars.
SCRAPE_JOB = "mhc-monitor"
#: The Prometheus job that scrapes Alertmanager, for the dashboard's delivery panels.
ALERTMANAGER_JOB = "alertmanager"


def export_bundle(
    directory: str | os.PathLike[str],
    *,
    config: AlertConfig,
    targets: list[str],
    title: str = "mhc-monitor",
    alertmanager_address: str = "127.0.0.1:9093",
    prometheus_url: str = "http://127.0.0.1:9090",
    grafana_url: str | None = None,
    scrape_interval_seconds: float = 15,
    evaluation_interval_seconds: float | None = None,
    for_seconds: float = 0,
    keep_firing_for_seconds: float = 0,
    for_by_metric: Mapping[str, float] | None = None,
    clear_margin: float = 0,
    clear_margin_by_metric: Mapping[str, float] | None = None,
    down_for_seconds: float = 60,
    pagerduty_routing_key_file: str | None = None,
    slack_webhook_url_file: str | None = None,
    webhook_url: str | None = None,
    slack_channel: str | None = None,
    pagerduty_url: str | None = None,
    dashboards_path: str | None = None,
    group_wait_seconds: float = 30,
    group_interval_seconds: float = 300,
    repeat_interval_seconds: float = 4 * 3600,
) -> list[Path]:
    """Writes the bundle into `directory` (created if missing) and returns the written paths.

    `targets` are the sidecars' `host:port` addresses. `grafana_url`, when given,
    links every alert to the dashboard; the rule timings and clear margins are
    those of `generate_rules`, and a sidecar that misses scrapes for `down_for_seconds`
    raises `MhcSidecarDown`. `dashboards_path` is where Grafana will see
    `dashboard.json` (default: this folder, absolute). The evaluation interval
    defaults to the scrape interval; the group timings are Alertmanager's.
    Existing files of the bundle are replaced. Raises `UsageError` for bad
    targets, addresses or intervals.
    """
    for target in [*targets, alertmanager_address]:
        _check_address(target)
    if not targets:
        raise UsageError("at least one scrape target (host:port) is needed")
    _check_http_url("prometheus_url", prometheus_url)
    if grafana_url is not None:
        _check_http_url("grafana_url", grafana_url)

    root = Path(directory)
    dashboard_url = None
    if grafana_url is not None:
        dashboard_url = f"{grafana_url.rstrip('/')}/d/{dashboard_uid(title)}"
    contents = {
        "prometheus.yml": _prometheus_config(
            targets,
            alertmanager_address,
            scrape_interval_seconds,
            scrape_interval_seconds
            if evaluation_interval_seconds is None
            else evaluation_interval_seconds,
        ),
        "rules.yml": generate_rules(
            config,
            for_seconds=for_seconds,
            keep_firing_for_seconds=keep_firing_for_seconds,
            for_by_metric=for_by_metric,
            clear_margin=clear_margin,
            clear_margin_by_metric=clear_margin_by_metric,
            dashboard_url=dashboard_url,
            scrape_job=SCRAPE_JOB,
            down_for_seconds=down_for_seconds,
        ),
        "alertmanager.yml": generate_alertmanager_config(
            pagerduty_routing_key_file=pagerduty_routing_key_file,
            slack_webhook_url_file=slack_webhook_url_file,
            webhook_url=webhook_url,
            slack_channel=slack_channel,
            pagerduty_url=pagerduty_url,
            group_wait_seconds=group_wait_seconds,
            group_interval_seconds=group_interval_seconds,
            repeat_interval_seconds=repeat_interval_seconds,
        ),
        "dashboard.json": (
            generate_dashboard(title, config, alertmanager_job=ALERTMANAGER_JOB) + "\n"
        ),
        "grafana/provisioning/datasources/mhc.yml": _datasources(
            prometheus_url, scrape_interval_seconds
        ),
        "grafana/provisioning/dashboards/mhc.yml": _dashboard_provider(
            title, dashboards_path or str(root.resolve())
        ),
    }

    written = []
    for name in BUNDLE_FILES:
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(contents[name], encoding="utf-8")
        written.append(path)
    logger.info("wrote the mhc-monitor bundle to %s (%d files)", root, len(written))
    return written


def _check_address(address: str) -> None:
    try:
        parts = urlsplit("//" + address)
        port = parts.port
    except ValueError as exc:
        raise UsageError(f"{address!r} is not a host:port address") from exc
    if not parts.hostname or port is None or parts.path or parts.query or "@" in address:
        raise UsageError(f"{address!r} is not a host:port address")


def _check_http_url(name: str, url: str) -> None:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise UsageError(f"{name} must be an absolute http(s) URL, got {url!r}")


def _dump(document: dict[str, Any]) -> str:
    text: str = yaml.safe_dump(document, sort_keys=False, width=1000)
    return text


def _interval(name: str, seconds: float) -> str:
    if not seconds > 0:
        raise UsageError(f"{name} must be positive, got {seconds!r}")
    return format_duration(seconds)


def _prometheus_config(
    targets: list[str], alertmanager: str, scrape_seconds: float, evaluation_seconds: float
) -> str:
    scrape = _interval("scrape_interval_seconds", scrape_seconds)
    evaluation = _interval("evaluation_interval_seconds", evaluation_seconds)
    return _dump(
        {
            "global": {"scrape_interval": scrape, "evaluation_interval": evaluation},
            "rule_files": ["rules.yml"],
            "alerting": {"alertmanagers": [{"static_configs": [{"targets": [alertmanager]}]}]},
            "scrape_configs": [
                {
                    "job_name": SCRAPE_JOB,
                    # The monitor's own constant labels (instance, model) name the
                    # replica; they win over the scrape target's address.
                    "honor_labels": True,
                    "static_configs": [{"targets": list(targets)}],
                },
                {"job_name": ALERTMANAGER_JOB, "static_configs": [{"targets": [alertmanager]}]},
            ],
        }
    )


def _datasources(prometheus_url: str, scrape_seconds: float) -> str:
    return _dump(
        {
            "apiVersion": 1,
            "datasources": [
                {
                    "name": "Prometheus (mhc-monitor)",
                    "type": "prometheus",
                    "uid": DATASOURCE_UID,
                    "access": "proxy",
                    "url": prometheus_url,
                    "isDefault": True,
                    "editable": False,
                    # Grafana sizes $__rate_interval from this (four scrapes at
                    # least); without it, it assumes 15 s.
                    "jsonData": {"timeInterval": format_duration(scrape_seconds)},
                }
            ],
        }
    )


def _dashboard_provider(title: str, path: str) -> str:
    return _dump(
        {
            "apiVersion": 1,
            "providers": [
                {
                    "name": title,
                    "orgId": 1,
                    "type": "file",
                    "disableDeletion": False,
                    "allowUiUpdates": False,
                    "options": {"path": path, "foldersFromFilesStructure": False},
                }
            ],
        }
    )
