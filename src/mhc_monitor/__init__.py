"""mhc-monitor: watch speculative decoding and mHC layers in production.

The public API is re-exported here; everything else is an implementation detail.
Names whose modules need optional heavy dependencies (payload and dashboard
generation) are imported on first use, so an engine that only records pays for
nothing else.
"""

from __future__ import annotations

import importlib
from typing import Any

from .alerts import Alert, AlertConfig, AlertLevel
from .buffer import MetricsBuffer, WindowStats
from .errors import ConfigError, DeliveryError, MonitorError, UsageError
from .metrics import MetricName
from .monitor import GeometricSpeculationMonitor, MetricSummary, MonitorSummary

__all__ = [
    "Alert",
    "AlertConfig",
    "AlertLevel",
    "ConfigError",
    "DeliveryError",
    "GeometricSpeculationMonitor",
    "GrafanaPanelType",
    "MetricName",
    "MetricSummary",
    "MetricsBuffer",
    "MonitorError",
    "MonitorSummary",
    "UsageError",
    "WindowStats",
    "format_pagerduty_payload",
    "format_prometheus_metrics",
    "format_slack_payload",
    "generate_dashboard",
    "generate_grafana_panel",
]

_LAZY = {
    "format_prometheus_metrics": ".exposition",
    "format_pagerduty_payload": ".pagerduty",
    "format_slack_payload": ".slack",
    "GrafanaPanelType": ".grafana",
    "generate_grafana_panel": ".grafana",
    "generate_dashboard": ".grafana",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'mhc_monitor' has no attribute {name!r}")
    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value
    return value
