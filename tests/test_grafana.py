"""The Grafana dashboard and panels: schema, layout, thresholds and the series they query."""

from __future__ import annotations

import copy
import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from grafana_foundation_sdk.models import dashboard as dashboard_models

from mhc_monitor.alerts import AlertConfig, AlertLevel
from mhc_monitor.errors import UsageError
from mhc_monitor.grafana import (
    GrafanaPanelType,
    dashboard_uid,
    generate_dashboard,
    generate_grafana_panel,
    threshold_steps,
)
from mhc_monitor.metrics import METRICS, Direction, MetricName, spec_for

SHARED = Path("/work/shared")
SCHEMA_PATH = SHARED / "contracts" / "grafana-dashboard.jsonschema.json"
CASES_PATH = SHARED / "cases" / "cases.json"

LEVEL_COLOURS = {
    AlertLevel.INFO: "green",
    AlertLevel.WARNING: "yellow",
    AlertLevel.CRITICAL: "orange",
    AlertLevel.EMERGENCY: "red",
}

# The series the exposition publishes, plus Prometheus' own ALERTS.
ALLOWED_SERIES = {
    "mhc_window_samples",
    "mhc_alert_level",
    "mhc_alert_threshold",
    "mhc_samples_rejected_total",
    "mhc_notifications_total",
    "mhc_notification_oldest_undelivered_seconds",
    "mhc_build_info",
    "ALERTS",
    "alertmanager_alerts",
    "alertmanager_notifications_total",
    "alertmanager_notifications_failed_total",
}
for _spec in METRICS:
    ALLOWED_SERIES |= {
        _spec.window_series,
        f"{_spec.series}_bucket",
        f"{_spec.series}_sum",
        f"{_spec.series}_count",
    }

CUSTOM = AlertConfig(
    latency_warning_ms=20.0,
    latency_critical_ms=40.0,
    latency_emergency_ms=None,
    acceptance_rate_warning=0.8,
    acceptance_rate_critical=None,
    acceptance_rate_emergency=0.4,
    sinkhorn_iters_warning=10.0,
    sinkhorn_iters_critical=20.0,
    sinkhorn_iters_emergency=50.0,
    statistics={"latency": "p99", "curvature": "max"},
)


def _schema() -> dict[str, Any]:
    """The published schema, patched only to accept Grafana's null base step and id null."""
    schema: dict[str, Any] = json.loads(SCHEMA_PATH.read_text())
    patched = copy.deepcopy(schema)
    patched["definitions"]["Threshold"]["properties"]["value"]["type"] = ["number", "null"]
    patched["definitions"]["Dashboard"]["properties"]["id"]["type"] = ["integer", "null"]
    return patched


def _panel_schema() -> dict[str, Any]:
    schema = _schema()
    schema["$ref"] = "#/definitions/Panel"
    return schema


def _colour_at(steps: list[dict[str, Any]], value: float) -> str:
    """The colour Grafana draws a value in: the last step whose value it meets or exceeds."""
    colour = steps[0]["color"]
    for step in steps[1:]:
        if value >= step["value"]:
            colour = step["color"]
    return str(colour)


def _all_steps(document: dict[str, Any]) -> list[list[dict[str, Any]]]:
    return [
        panel["fieldConfig"]["defaults"]["thresholds"]["steps"]
        for panel in document["panels"]
        if "thresholds" in panel["fieldConfig"]["defaults"]
    ]


@pytest.mark.parametrize("alertmanager_job", [None, "alertmanager"])
@pytest.mark.parametrize("config", [None, CUSTOM], ids=["defaults", "custom"])
def test_dashboard_validates_against_the_published_schema(
    config: AlertConfig | None, alertmanager_job: str | None
) -> None:
    document = json.loads(
        generate_dashboard("mhc fleet", config, alertmanager_job=alertmanager_job)
    )
    jsonschema.validate(document, _schema())
    for steps in _all_steps(document):
        assert steps[0]["value"] is None
        assert all(isinstance(step["value"], float | int) for step in steps[1:])


def test_dashboard_identity_refresh_and_schema_version() -> None:
    document = json.loads(generate_dashboard("mhc fleet"))
    assert document["id"] is None
    assert document["uid"] == dashboard_uid("mhc fleet")
    assert 8 <= len(document["uid"]) <= 40
    assert json.loads(generate_dashboard("mhc fleet"))["uid"] == document["uid"]
    assert json.loads(generate_dashboard("other"))["uid"] != document["uid"]
    assert document["schemaVersion"] == dashboard_models.Dashboard().schema_version
    assert document["refresh"] == "5s"
    assert document["title"] == "mhc fleet"


def test_dashboard_panel_ids_are_unique_and_grid_positions_never_overlap() -> None:
    panels = json.loads(generate_dashboard("mhc fleet"))["panels"]
    ids = [panel["id"] for panel in panels]
    assert len(ids) == len(set(ids))
    cells: dict[tuple[int, int], int] = {}
    for panel in panels:
        grid = panel["gridPos"]
        assert grid["x"] >= 0 and grid["y"] >= 0 and grid["w"] > 0 and grid["h"] > 0
        assert grid["x"] + grid["w"] <= 24
        for x in range(grid["x"], grid["x"] + grid["w"]):
            for y in range(grid["y"], grid["y"] + grid["h"]):
                assert (x, y) not in cells, f"panels {cells.get((x, y))} and {panel['id']}"
                cells[(x, y)] = panel["id"]


def test_dashboard_covers_every_metric_alert_levels_and_delivery_health() -> None:
    panels = json.loads(generate_dashboard("mhc fleet"))["panels"]
    exprs = [target["expr"] for panel in panels for target in panel["targets"]]
    for spec in METRICS:
        assert any(spec.window_series in expr for expr in exprs), spec.name
        assert any(f"{spec.series}_bucket" in expr for expr in exprs), spec.name
    for series in (
        "mhc_alert_level",
        "mhc_notifications_total",
        "mhc_notification_oldest_undelivered_seconds",
        "mhc_samples_rejected_total",
    ):
        assert any(series in expr for expr in exprs), series


def test_fleet_dashboard_reads_delivery_health_from_alertmanager() -> None:
    own = json.loads(generate_dashboard("mhc fleet"))["panels"]
    fleet = json.loads(generate_dashboard("mhc fleet", alertmanager_job="am"))["panels"]
    assert [panel["gridPos"] for panel in fleet] == [panel["gridPos"] for panel in own]
    exprs = {panel["title"]: [t["expr"] for t in panel["targets"]] for panel in fleet}
    assert exprs["Alerts in Alertmanager"] == ['sum by (state) (alertmanager_alerts{job="am"})']
    assert exprs["Notifications (Alertmanager)"] == [
        f'sum by (integration) (rate({series}{{job="am"}}[$__rate_interval]))'
        for series in (
            "alertmanager_notifications_total",
            "alertmanager_notifications_failed_total",
        )
    ]
    every = " ".join(expr for exprs_ in exprs.values() for expr in exprs_)
    assert "mhc_notification" not in every
    # Everything else is the same dashboard.
    kept = [panel for panel in own if "mhc_notification" not in json.dumps(panel["targets"])]
    assert all(panel in fleet for panel in kept)


def test_dashboard_variables_and_alert_annotation() -> None:
    document = json.loads(generate_dashboard("mhc fleet"))
    variables = {variable["name"]: variable for variable in document["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    for name in ("job", "instance", "model"):
        assert variables[name]["type"] == "query"
        assert variables[name]["datasource"]["uid"] == "${datasource}"
        assert f", {name})" in variables[name]["query"]
    annotations = document["annotations"]["list"]
    assert any("ALERTS" in annotation.get("expr", "") for annotation in annotations)
    for panel in document["panels"]:
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}


def test_acceptance_steps_match_the_shared_case() -> None:
    cases = json.loads(CASES_PATH.read_text())["cases"]
    case = next(c for c in cases if c["kind"].startswith("Grafana threshold steps"))
    warning, critical, emergency = case["input"]["thresholds"]
    config = AlertConfig(
        acceptance_rate_warning=warning,
        acceptance_rate_critical=critical,
        acceptance_rate_emergency=emergency,
    )
    assert threshold_steps("acceptance", config) == case["expect"]["steps"]


@pytest.mark.parametrize(
    ("metric", "config", "expected"),
    [
        (
            "acceptance",
            None,
            [("red", None), ("orange", 0.3), ("yellow", 0.5), ("green", 0.7)],
        ),
        ("curvature", None, [("green", None), ("yellow", 2.0), ("orange", 5.0), ("red", 10.0)]),
        (
            "energy",
            None,
            [("green", None), ("yellow", 100.0), ("orange", 500.0), ("red", 1000.0)],
        ),
        ("latency", None, [("green", None), ("yellow", 0.05), ("orange", 0.1), ("red", 0.5)]),
        ("stability", None, [("red", None), ("orange", 0.5), ("yellow", 0.8), ("green", 0.9)]),
        ("sinkhorn_iterations", None, [("green", None)]),
        ("latency", CUSTOM, [("green", None), ("yellow", 0.02), ("orange", 0.04)]),
        ("acceptance", CUSTOM, [("red", None), ("yellow", 0.4), ("green", 0.8)]),
        (
            "sinkhorn_iterations",
            CUSTOM,
            [("green", None), ("yellow", 10.0), ("orange", 20.0), ("red", 50.0)],
        ),
    ],
)
def test_threshold_steps_table(
    metric: str, config: AlertConfig | None, expected: list[tuple[str, float | None]]
) -> None:
    want = [{"color": colour, "value": value} for colour, value in expected]
    assert threshold_steps(metric, config) == want
    panels = json.loads(generate_dashboard("mhc fleet", config))["panels"]
    spec = spec_for(metric)
    mine = [p for p in panels if any(spec.window_series in t["expr"] for t in p["targets"])]
    assert len(mine) == 2
    for panel in mine:
        assert panel["fieldConfig"]["defaults"]["thresholds"]["steps"] == want


@pytest.mark.parametrize("config", [AlertConfig(), CUSTOM], ids=["defaults", "custom"])
@pytest.mark.parametrize("metric", [m.value for m in MetricName])
def test_step_colours_agree_with_in_process_evaluation(config: AlertConfig, metric: str) -> None:
    """Off the thresholds themselves, Grafana's colour is the colour of the evaluated level."""
    spec = spec_for(metric)
    steps = threshold_steps(metric, config)
    thresholds = {value for _, value in config.thresholds(metric)}
    grid = [0.0, 0.01, 0.1, 0.25, 0.35, 0.45, 0.6, 0.75, 0.85, 0.95, 0.99, 1.0]
    grid += [1.5, 3.0, 7.0, 15.0, 30.0, 45.0, 60.0, 75.0, 200.0, 700.0, 2000.0]
    if spec.direction is Direction.MAGNITUDE_IS_WORSE:
        grid += [-value for value in grid]
    for recorded in grid:
        if not spec.lower <= recorded <= spec.upper or abs(recorded) in thresholds:
            continue
        level, _ = config.evaluate(metric, recorded)
        shown = abs(recorded) if spec.direction is Direction.MAGNITUDE_IS_WORSE else recorded
        assert _colour_at(steps, shown * spec.scale) == LEVEL_COLOURS[level], recorded


def test_statistic_follows_the_config() -> None:
    panels = json.loads(generate_dashboard("mhc fleet", CUSTOM))["panels"]
    exprs = [target["expr"] for panel in panels for target in panel["targets"]]
    assert any('mhc_latency_window_seconds{stat="p99"' in expr for expr in exprs)
    assert any('abs(mhc_curvature_window{stat="max"' in expr for expr in exprs)
    assert any('mhc_energy_window{stat="mean"' in expr for expr in exprs)
    assert not any('mhc_latency_window_seconds{stat="mean"' in expr for expr in exprs)


def _series_names(expr: str) -> set[str]:
    """Identifiers in a PromQL expression that name series (not functions, keywords or labels)."""
    without_strings = re.sub(r'"[^"]*"', '""', expr)
    without_groupings = re.sub(r"\b(by|without)\s*\([^)]*\)", "", without_strings)
    without_selectors = re.sub(r"\{[^}]*\}", "{}", without_groupings)
    without_ranges = re.sub(r"\[[^\]]*\]", "[]", without_selectors)
    names = set()
    for match in re.finditer(r"[A-Za-z_:][A-Za-z0-9_:]*", without_ranges):
        after = without_ranges[match.end() :].lstrip()
        if after.startswith("("):
            continue  # a function call
        names.add(match.group())
    return names


def _dashboard_exprs(document: dict[str, Any]) -> list[str]:
    exprs = [target["expr"] for panel in document["panels"] for target in panel["targets"]]
    exprs += [a["expr"] for a in document["annotations"]["list"] if "expr" in a]
    return exprs


@pytest.mark.parametrize("alertmanager_job", [None, "alertmanager"])
@pytest.mark.parametrize("config", [None, CUSTOM], ids=["defaults", "custom"])
def test_every_query_references_only_exposed_series(
    config: AlertConfig | None, alertmanager_job: str | None
) -> None:
    document = json.loads(
        generate_dashboard("mhc fleet", config, alertmanager_job=alertmanager_job)
    )
    for expr in _dashboard_exprs(document):
        names = _series_names(expr)
        assert names, expr
        assert names <= ALLOWED_SERIES, (expr, names - ALLOWED_SERIES)
    for variable in document["templating"]["list"]:
        if variable["type"] == "query":
            inner = re.fullmatch(r"label_values\((\w+)(\{.*\})?, \w+\)", variable["query"])
            assert inner is not None and inner.group(1) in ALLOWED_SERIES


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool is not installed")
@pytest.mark.parametrize("alertmanager_job", [None, "alertmanager"])
def test_every_query_parses_as_promql(tmp_path: Path, alertmanager_job: str | None) -> None:
    """promtool parses each panel query, with Grafana's variables filled in."""
    document = json.loads(
        generate_dashboard("mhc fleet", CUSTOM, alertmanager_job=alertmanager_job)
    )
    exprs = _dashboard_exprs(document)
    for variable in document["templating"]["list"]:
        if variable["type"] == "query":
            exprs.append(re.sub(r"^label_values\((.*), \w+\)$", r"\1", variable["query"]))
    rules = []
    for index, expr in enumerate(exprs):
        filled = expr.replace("$__rate_interval", "5m").replace('"$', '"')
        rules.append({"record": f"dashboard:query_{index}", "expr": filled})
    path = tmp_path / "queries.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    result = subprocess.run(
        ["promtool", "check", "rules", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(rules)} rules found" in result.stdout


@pytest.mark.parametrize("panel_type", list(GrafanaPanelType))
@pytest.mark.parametrize("metric", [m.value for m in MetricName])
def test_single_panel_validates_and_carries_thresholds(
    metric: str, panel_type: GrafanaPanelType
) -> None:
    panel = json.loads(generate_grafana_panel(metric, panel_type, 42))
    jsonschema.validate(panel, _panel_schema())
    assert panel["type"] == panel_type.value
    assert panel["id"] == 42
    assert panel["fieldConfig"]["defaults"]["thresholds"]["steps"] == threshold_steps(metric)
    window_series = spec_for(metric).window_series
    assert any(window_series in target["expr"] for target in panel["targets"])
    grid = panel["gridPos"]
    assert grid["x"] + grid["w"] <= 24


def test_single_panel_uses_a_given_config() -> None:
    panel = json.loads(generate_grafana_panel("latency", GrafanaPanelType.STAT, 1, config=CUSTOM))
    assert panel["fieldConfig"]["defaults"]["thresholds"]["steps"] == threshold_steps(
        "latency", CUSTOM
    )
    assert 'stat="p99"' in panel["targets"][0]["expr"]


@pytest.mark.parametrize(
    ("metric", "panel_type", "message"),
    [
        ("throughput", "stat", "unknown metric 'throughput'"),
        ("latency", "piechart", "unknown panel type 'piechart'"),
    ],
)
def test_bad_arguments_raise_usage_error(metric: str, panel_type: str, message: str) -> None:
    with pytest.raises(UsageError, match=message):
        generate_grafana_panel(metric, panel_type, 1)  # type: ignore[arg-type]
