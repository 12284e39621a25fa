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
