"""The public surface: what `mhc_monitor` exports, and that the code reads as STYLE.md says."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

import mhc_monitor

ROOT = Path(__file__).resolve().parent.parent

PUBLIC = {
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
}


def test_the_public_names_are_pinned() -> None:
    assert set(mhc_monitor.__all__) == PUBLIC
    for name in PUBLIC:
        assert getattr(mhc_monitor, name).__doc__, f"{name} has no docstring"


def test_an_unknown_name_is_a_clear_attribute_error() -> None:
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        _ = mhc_monitor.nope  # type: ignore[attr-defined]


def test_recording_imports_no_network_storage_or_web_library() -> None:
    code = (
        "import sys; import mhc_monitor as m; "
        "mon = m.GeometricSpeculationMonitor(); mon.record_latency(1.0); mon.get_summary(); "
        "heavy = {'httpx', 'starlette', 'uvicorn', 'sqlite3', 'prometheus_client', 'pydantic'}; "
        "print(sorted(heavy & set(sys.modules)))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


@pytest.mark.parametrize(
    "command",
    [
        ["ruff", "check", "src", "tests", "benchmarks"],
        ["ruff", "format", "--check", "src", "tests", "benchmarks"],
        ["mypy"],
    ],
    ids=["ruff-check", "ruff-format", "mypy-strict"],
)
def test_the_code_is_lint_clean(command: list[str]) -> None:
    tool = Path(sys.executable).parent / command[0]
    result = subprocess.run(
        [str(tool), *command[1:]], cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stdout + result.stderr


def _an_alert() -> mhc_monitor.Alert:
    monitor = mhc_monitor.GeometricSpeculationMonitor(labels={"model": "m"})
    monitor.record_acceptance(0.1)
    return monitor.get_alerts()[0]


@pytest.mark.parametrize(
    ("call", "error", "message"),
    [
        (
            lambda: mhc_monitor.AlertConfig(statistics=None),  # type: ignore[arg-type]
            mhc_monitor.ConfigError,
            "invalid AlertConfig: statistics must be a mapping of metric name to statistic, "
            "got NoneType",
        ),
        (
            lambda: mhc_monitor.MetricsBuffer(10**12),
            mhc_monitor.UsageError,
            "capacity must be at most 10000000 samples, got 1000000000000",
        ),
        (
            lambda: mhc_monitor.generate_dashboard(None),  # type: ignore[arg-type]
            mhc_monitor.UsageError,
            "the dashboard title must be a non-empty string, got None",
        ),
        (
            lambda: mhc_monitor.generate_grafana_panel("latency", "timeseries", "1"),  # type: ignore[arg-type]
            mhc_monitor.UsageError,
            "panel_id must be a positive integer, got '1'",
        ),
        (
            lambda: mhc_monitor.generate_grafana_panel("latency", "timeseries", 0),  # type: ignore[arg-type]
            mhc_monitor.UsageError,
            "panel_id must be a positive integer, got 0",
        ),
        (
            lambda: mhc_monitor.format_pagerduty_payload("x", "A" * 32),  # type: ignore[arg-type]
            mhc_monitor.UsageError,
            "alert must be an mhc_monitor.Alert, got str",
        ),
        (
            lambda: mhc_monitor.format_slack_payload(None),  # type: ignore[arg-type]
            mhc_monitor.UsageError,
            "alert must be an mhc_monitor.Alert, got NoneType",
        ),
        (
            lambda: mhc_monitor.format_slack_payload(_an_alert(), channel=5),  # type: ignore[arg-type]
            mhc_monitor.UsageError,
            "Slack channel must be a string or None, got int",
        ),
    ],
)
def test_caller_mistakes_raise_the_projects_errors_naming_the_problem(
    call: object, error: type[Exception], message: str
) -> None:
    assert callable(call)
    with pytest.raises(error) as caught:
        call()
    assert str(caught.value) == message
    assert isinstance(caught.value, mhc_monitor.MonitorError)
