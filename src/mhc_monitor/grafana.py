"""Grafana panels and the fleet dashboard, built from the alert thresholds.

Every panel reads the series that the Prometheus exposition publishes (see
`metrics.MetricSpec`): per-instance window gauges of the evaluated statistic,
fleet quantiles from the cumulative histograms, alert levels and delivery
health. Threshold colours come from the same `AlertConfig` that drives the
in-process alerts, scaled to the exposed base unit (latency in seconds).

Curvature is worse by magnitude, so its panels plot `abs(...)` of the window
gauge and the magnitude of the fleet's 1st and 99th percentiles, against the
magnitude thresholds; a negative curvature never hides below a green line.

Grafana colours a value from the step it meets or exceeds, so a value exactly
on a higher-is-worse threshold is drawn in the next colour although the
in-process evaluation, strictly beyond, still calls it the lower level.
"""

from __future__ import annotations

import enum
import hashlib
import json
from collections.abc import Iterator, Sequence
from typing import Any, TypeAlias

from grafana_foundation_sdk.builders import (
    bargauge,
    prometheus,
    stat,
    timeseries,
)
from grafana_foundation_sdk.builders import common as common_builders
from grafana_foundation_sdk.builders import dashboard as dashboard_builders
from grafana_foundation_sdk.builders import gauge as gauge_builders
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models import common as common_models
from grafana_foundation_sdk.models import dashboard as dashboard_models

from .alerts import AlertConfig, AlertLevel
from .errors import UsageError
from .metrics import METRICS, Direction, MetricName, MetricSpec, spec_for

__all__ = [
    "DATASOURCE_VARIABLE",
    "GrafanaPanelType",
    "dashboard_uid",
    "generate_dashboard",
    "generate_grafana_panel",
    "threshold_steps",
]

#: The template variable holding the Prometheus data source.
DATASOURCE_VARIABLE = "datasource"

_GRID_WIDTH = 24
_DATASOURCE = dashboard_models.DataSourceRef(
    type_val="prometheus", uid="${" + DATASOURCE_VARIABLE + "}"
)
_SELECTOR = 'job=~"$job", instance=~"$instance", model=~"$model"'
_LEVEL_COLOURS = {
    AlertLevel.INFO: "green",
    AlertLevel.WARNING: "yellow",
    AlertLevel.CRITICAL: "orange",
    AlertLevel.EMERGENCY: "red",
}
_UNITS = {"ratio": "percentunit", "seconds": "s"}

_PanelBuilder: TypeAlias = timeseries.Panel | stat.Panel | gauge_builders.Panel | bargauge.Panel


class GrafanaPanelType(enum.StrEnum):
    """The Grafana visualisations a metric panel can use (values are plugin ids)."""

    TIMESERIES = "timeseries"
    STAT = "stat"
    GAUGE = "gauge"
    BAR_GAUGE = "bargauge"


def threshold_steps(metric: str, config: AlertConfig | None = None) -> list[dict[str, Any]]:
    """The Grafana threshold steps of a metric in its exposed base unit, ascending by value.

    The first step has value None (Grafana's base step). Colours follow the
    alert levels (green, yellow, orange, red) and run downwards for
    lower-is-worse metrics; curvature's steps apply to the magnitude.
    """
    spec = spec_for(metric)
    pairs = (config or AlertConfig()).thresholds(metric)
    if spec.direction is Direction.LOWER_IS_WORSE:
        # Below the lowest threshold sits the most severe level; each threshold
        # value starts the next milder level, up to green at the warning threshold.
        # A skipped level (None) is skipped in colour too.
        ascending = sorted(pairs, key=lambda pair: pair[1])
        milder = [level for level, _ in ascending[1:]] + [AlertLevel.INFO]
        base = ascending[0][0] if ascending else AlertLevel.INFO
        steps: list[dict[str, Any]] = [{"color": _LEVEL_COLOURS[base], "value": None}]
        for level, (_, threshold) in zip(milder, ascending, strict=True):
            steps.append({"color": _LEVEL_COLOURS[level], "value": _shown(spec, threshold)})
        return steps
    steps = [{"color": _LEVEL_COLOURS[AlertLevel.INFO], "value": None}]
    for level, threshold in pairs:
        steps.append({"color": _LEVEL_COLOURS[level], "value": _shown(spec, threshold)})
    return steps


def generate_grafana_panel(
    metric: str,
    panel_type: GrafanaPanelType,
    panel_id: int,
    *,
    config: AlertConfig | None = None,
) -> str:
    """One metric's panel as Grafana JSON, thresholds from `config` (defaults if None).

    A time series plots each instance's window gauge of the evaluated statistic
    and the fleet quantiles; the single-value types show each instance's
    current window gauge. Raises `UsageError` for an unknown metric or type, or a
    panel id that is not a positive integer.
    """
    spec, kind = _checked(metric, panel_type)
    if isinstance(panel_id, bool) or not isinstance(panel_id, int) or panel_id < 1:
        raise UsageError(f"panel_id must be a positive integer, got {panel_id!r}")
    _check_config(config)
    grid = dashboard_models.GridPos(h=8, w=12, x=0, y=0)
    panel = _metric_panel(spec, kind, panel_id, config or AlertConfig(), grid)
    return _to_json(panel.build())


def _check_config(config: object) -> None:
    if config is not None and not isinstance(config, AlertConfig):
        raise UsageError(f"config must be an AlertConfig or None, got {type(config).__name__}")


def dashboard_uid(title: str) -> str:
    """The stable dashboard uid derived from a title (the same title, the same uid)."""
    return "mhc-" + hashlib.sha256(title.encode("utf-8")).hexdigest()[:16]


def generate_dashboard(
    title: str, config: AlertConfig | None = None, *, alertmanager_job: str | None = None
) -> str:
    """The fleet dashboard as Grafana JSON (`id` null, stable `uid`), ready for import.

    Rows: alert levels and delivery health, then for each of the six metrics a
    time series and a stat panel with the thresholds of `config` (defaults if
    None), then rejected samples. Variables: data source, job, instance, model.

    Delivery health shows the sidecars' own notifications (outbox age, attempts
    by receiver and outcome). With `alertmanager_job`, the Prometheus job that
    scrapes Alertmanager, it shows Alertmanager's instead (alerts by state,
    attempts and failures by integration): in a fleet, Alertmanager delivers.
    Raises `UsageError` for a title that is not a non-empty string.
    """
    if not isinstance(title, str) or not title.strip():
        raise UsageError(f"the dashboard title must be a non-empty string, got {title!r}")
    _check_config(config)
    config = config or AlertConfig()
    builder = (
        dashboard_builders.Dashboard(title)
        .uid(dashboard_uid(title))
        .tags(["mhc-monitor"])
        .refresh("5s")
        .time("now-1h", "now")
        .tooltip(dashboard_models.DashboardCursorSync.CROSSHAIR)
        .with_variable(
            dashboard_builders.DatasourceVariable(DATASOURCE_VARIABLE)
            .label("Data source")
            .type("prometheus")
        )
        .annotation(
            dashboard_builders.AnnotationQuery()
            .name("mhc-monitor alerts")
            .datasource(_DATASOURCE)
            .enable(True)
            .icon_color("red")
            .expr('ALERTS{alertname=~"Mhc.*", alertstate="firing"}')
        )
    )
    for variable in _label_variables():
        builder = builder.with_variable(variable)
    for panel in _dashboard_panels(config, alertmanager_job):
        builder = builder.with_panel(panel)
    document = json.loads(_to_json(builder.build()))
    document["id"] = None
    return json.dumps(document, indent=2)


def _checked(metric: str, panel_type: str) -> tuple[MetricSpec, GrafanaPanelType]:
    try:
        spec = spec_for(metric)
    except ValueError as exc:
        known = ", ".join(name.value for name in MetricName)
        raise UsageError(f"unknown metric {metric!r} (known: {known})") from exc
    try:
        kind = GrafanaPanelType(panel_type)
    except ValueError as exc:
        known = ", ".join(kind.value for kind in GrafanaPanelType)
        raise UsageError(f"unknown panel type {panel_type!r} (known: {known})") from exc
    return spec, kind


def _shown(spec: MetricSpec, threshold: float) -> float:
    # Twelve significant digits drop the binary noise of the unit scale
    # (50 ms * 0.001 must read 0.05) without moving a configured value.
    return float(f"{threshold * spec.scale:.12g}")


def _to_json(model: object) -> str:
    return json.dumps(model, cls=JSONEncoder, indent=2)


def _label_variables() -> Iterator[dashboard_builders.QueryVariable]:
    """job, instance and model, each narrowed by the ones before it."""
    # mhc_window_samples is present for every monitor from its first scrape, with
    # the monitor's constant labels, whether or not any sample was recorded.
    narrowing = ""
    for name in ("job", "instance", "model"):
        selector = f"{{{narrowing}}}" if narrowing else ""
        query = f"label_values(mhc_window_samples{selector}, {name})"
        yield (
            dashboard_builders.QueryVariable(name)
            .label(name.capitalize())
            .datasource(_DATASOURCE)
            .query(query)
            .refresh(dashboard_models.VariableRefresh.ON_TIME_RANGE_CHANGED)
            .sort(dashboard_models.VariableSort.ALPHABETICAL_ASC)
            .multi(True)
            .include_all(True)
            .all_value(".*")
        )
        narrowing += ("" if not narrowing else ", ") + f'{name}=~"${name}"'


def _window_expr(spec: MetricSpec, statistic: str) -> str:
    expr = f'{spec.window_series}{{stat="{statistic}", {_SELECTOR}}}'
    if spec.direction is Direction.MAGNITUDE_IS_WORSE:
        return f"abs({expr})"
    return expr


def _quantile_expr(spec: MetricSpec, quantile: float) -> str:
    rate = f"rate({spec.series}_bucket{{{_SELECTOR}}}[$__rate_interval])"
    expr = f"histogram_quantile({quantile}, sum by (le) ({rate}))"
    if spec.direction is Direction.MAGNITUDE_IS_WORSE:
        return f"abs({expr})"
    return expr


def _query(expr: str, legend: str, ref_id: str) -> prometheus.Dataquery:
    return (
        prometheus.Dataquery()
        .datasource(_DATASOURCE)
        .expr(expr)
        .legend_format(legend)
        .ref_id(ref_id)
    )


def _title(spec: MetricSpec, statistic: str) -> str:
    name = spec.name.value.replace("_", " ").capitalize()
    shown = f"|{statistic}|" if spec.direction is Direction.MAGNITUDE_IS_WORSE else statistic
    return f"{name} (window {shown})"


def _metric_targets(
    spec: MetricSpec, kind: GrafanaPanelType, statistic: str
) -> list[prometheus.Dataquery]:
    targets = [_query(_window_expr(spec, statistic), "{{instance}}", "A")]
    if kind is not GrafanaPanelType.TIMESERIES:
        return targets
    quantiles = (0.01, 0.99) if spec.direction is Direction.MAGNITUDE_IS_WORSE else (0.5, 0.99)
    for ref_id, quantile in zip("BC", quantiles, strict=True):
        label = f"fleet p{quantile * 100:g}"
        if spec.direction is Direction.MAGNITUDE_IS_WORSE:
            label = f"|{label}|"
        targets.append(_query(_quantile_expr(spec, quantile), label, ref_id))
    return targets


def _new_panel(kind: GrafanaPanelType) -> _PanelBuilder:
    if kind is GrafanaPanelType.TIMESERIES:
        return (
            timeseries.Panel()
            .line_width(1)
            .fill_opacity(10)
            .thresholds_style(
                common_builders.GraphThresholdsStyleConfig().mode(
                    common_models.GraphThresholdsStyleMode.DASHED
                )
            )
        )
    last = common_builders.ReduceDataOptions().calcs(["lastNotNull"]).values(False)
    if kind is GrafanaPanelType.STAT:
        return (
            stat.Panel()
            .reduce_options(last)
            .color_mode(common_models.BigValueColorMode.BACKGROUND)
        )
    if kind is GrafanaPanelType.GAUGE:
        return gauge_builders.Panel().reduce_options(last).show_threshold_markers(True)
    return bargauge.Panel().reduce_options(last)


def _metric_panel(
    spec: MetricSpec,
    kind: GrafanaPanelType,
    panel_id: int,
    config: AlertConfig,
    grid: dashboard_models.GridPos,
) -> _PanelBuilder:
    statistic = config.statistic(spec.name)
    steps = [
        dashboard_models.Threshold(value=step["value"], color=step["color"])
        for step in threshold_steps(spec.name, config)
    ]
    panel = (
        _new_panel(kind)
        .id(panel_id)
        .title(_title(spec, statistic))
        .description(spec.help)
        .datasource(_DATASOURCE)
        .grid_pos(grid)
        .unit(_UNITS.get(spec.unit, "short"))
        .thresholds(
            dashboard_builders.ThresholdsConfig()
            .mode(dashboard_models.ThresholdsMode.ABSOLUTE)
            .steps(steps)
        )
        .targets(list(_metric_targets(spec, kind, statistic)))
    )
    if spec.unit == "ratio":
        panel = panel.min(0).max(1)
    elif spec.direction is not Direction.LOWER_IS_WORSE:
        panel = panel.min(0)
    return panel


def _layout(widths: Sequence[tuple[int, int]]) -> Iterator[dashboard_models.GridPos]:
    """Places (width, height) boxes left to right, wrapping at 24 columns."""
    x = y = row_height = 0
    for w, h in widths:
        if x + w > _GRID_WIDTH:
            x, y, row_height = 0, y + row_height, 0
        yield dashboard_models.GridPos(h=h, w=w, x=x, y=y)
        x += w
        row_height = max(row_height, h)


def _dashboard_panels(config: AlertConfig, alertmanager_job: str | None) -> list[_PanelBuilder]:
    sizes: list[tuple[int, int]] = [(12, 6), (12, 6)]
    for _ in METRICS:
        sizes += [(16, 8), (8, 8)]
    sizes += [(12, 7), (12, 7)]
    grids = iter(_layout(sizes))
    ids = iter(range(1, len(sizes) + 1))

    panels: list[_PanelBuilder] = [_alert_level_panel(next(ids), next(grids))]
    if alertmanager_job is None:
        panels.append(_backlog_panel(next(ids), next(grids)))
    else:
        panels.append(_alertmanager_alerts_panel(alertmanager_job, next(ids), next(grids)))
    for spec in METRICS:
        for kind in (GrafanaPanelType.TIMESERIES, GrafanaPanelType.STAT):
            panels.append(_metric_panel(spec, kind, next(ids), config, next(grids)))
    if alertmanager_job is None:
        panels.append(_notifications_panel(next(ids), next(grids)))
    else:
        panels.append(_alertmanager_notifications_panel(alertmanager_job, next(ids), next(grids)))
    panels.append(_rejected_panel(next(ids), next(grids)))
    return panels


def _alert_level_panel(panel_id: int, grid: dashboard_models.GridPos) -> _PanelBuilder:
    mapping = dashboard_models.ValueMap(
        options={
            str(int(level)): dashboard_models.ValueMappingResult(
                text=level.name.lower(), color=_LEVEL_COLOURS[level], index=int(level)
            )
            for level in AlertLevel
        }
    )
    steps = [dashboard_models.Threshold(value=None, color=_LEVEL_COLOURS[AlertLevel.INFO])]
    steps += [
        dashboard_models.Threshold(value=float(level), color=_LEVEL_COLOURS[level])
        for level in AlertLevel
        if level is not AlertLevel.INFO
    ]
    return (
        _new_panel(GrafanaPanelType.STAT)
        .id(panel_id)
        .title("Alert level (worst instance)")
        .description(
            "In-process alert level per metric: 0 info, 1 warning, 2 critical, 3 emergency."
        )
        .datasource(_DATASOURCE)
        .grid_pos(grid)
        .mappings([mapping])
        .thresholds(
            dashboard_builders.ThresholdsConfig()
            .mode(dashboard_models.ThresholdsMode.ABSOLUTE)
            .steps(steps)
        )
        .targets([_query(f"max by (metric) (mhc_alert_level{{{_SELECTOR}}})", "{{metric}}", "A")])
    )


def _backlog_panel(panel_id: int, grid: dashboard_models.GridPos) -> _PanelBuilder:
    steps = [
        dashboard_models.Threshold(value=None, color="green"),
        dashboard_models.Threshold(value=60.0, color="orange"),
        dashboard_models.Threshold(value=300.0, color="red"),
    ]
    expr = f"max by (receiver) (mhc_notification_oldest_undelivered_seconds{{{_SELECTOR}}})"
    return (
        _new_panel(GrafanaPanelType.STAT)
        .id(panel_id)
        .title("Oldest undelivered notification")
        .description("Age of the oldest notification still waiting for delivery, per receiver.")
        .datasource(_DATASOURCE)
        .grid_pos(grid)
        .unit("s")
        .thresholds(
            dashboard_builders.ThresholdsConfig()
            .mode(dashboard_models.ThresholdsMode.ABSOLUTE)
            .steps(steps)
        )
        .targets([_query(expr, "{{receiver}}", "A")])
    )


def _notifications_panel(panel_id: int, grid: dashboard_models.GridPos) -> _PanelBuilder:
    rate = f"rate(mhc_notifications_total{{{_SELECTOR}}}[$__rate_interval])"
    return (
        _new_panel(GrafanaPanelType.TIMESERIES)
        .id(panel_id)
        .title("Notifications")
        .description("Delivery attempts per second by receiver and outcome.")
        .datasource(_DATASOURCE)
        .grid_pos(grid)
        .unit("ops")
        .min(0)
        .targets([_query(f"sum by (receiver, outcome) ({rate})", "{{receiver}} {{outcome}}", "A")])
    )


def _alertmanager_alerts_panel(
    job: str, panel_id: int, grid: dashboard_models.GridPos
) -> _PanelBuilder:
    expr = f"sum by (state) (alertmanager_alerts{{job={json.dumps(job)}}})"
    return (
        _new_panel(GrafanaPanelType.STAT)
        .id(panel_id)
        .title("Alerts in Alertmanager")
        .description(
            "Alerts Alertmanager holds, by state: active are notified, suppressed are "
            "inhibited (a higher level of the same metric fires) or silenced."
        )
        .datasource(_DATASOURCE)
        .grid_pos(grid)
        .unit("short")
        .targets([_query(expr, "{{state}}", "A")])
    )


def _alertmanager_notifications_panel(
    job: str, panel_id: int, grid: dashboard_models.GridPos
) -> _PanelBuilder:
    def rate(series: str) -> str:
        selector = f"{{job={json.dumps(job)}}}"
        return f"sum by (integration) (rate({series}{selector}[$__rate_interval]))"

    return (
        _new_panel(GrafanaPanelType.TIMESERIES)
        .id(panel_id)
        .title("Notifications (Alertmanager)")
        .description("Alertmanager's delivery attempts and failures per second by integration.")
        .datasource(_DATASOURCE)
        .grid_pos(grid)
        .unit("ops")
        .min(0)
        .targets(
            [
                _query(rate("alertmanager_notifications_total"), "{{integration}} attempts", "A"),
                _query(
                    rate("alertmanager_notifications_failed_total"), "{{integration}} failed", "B"
                ),
            ]
        )
    )


def _rejected_panel(panel_id: int, grid: dashboard_models.GridPos) -> _PanelBuilder:
    rate = f"rate(mhc_samples_rejected_total{{{_SELECTOR}}}[$__rate_interval])"
    samples = f"sum by (metric) (mhc_window_samples{{{_SELECTOR}}})"
    return (
        _new_panel(GrafanaPanelType.TIMESERIES)
        .id(panel_id)
        .title("Rejected samples and window fill")
        .description("Samples dropped per second by metric and reason; samples held in windows.")
        .datasource(_DATASOURCE)
        .grid_pos(grid)
        .unit("short")
        .min(0)
        .targets(
            [
                _query(f"sum by (metric, reason) ({rate})", "rejected {{metric}} {{reason}}", "A"),
                _query(samples, "window {{metric}}", "B"),
            ]
        )
    )
