"""Prometheus alerting and recording rules generated from the alert thresholds.

Each alerting rule compares the window gauge of the statistic the monitor
evaluates against the float32-rounded threshold in the exposed base unit,
strictly, so that a rule fires on the same window as the in-process alert:
`<` for lower-is-worse metrics, `>` otherwise, on `abs(...)` for curvature.
Thresholds are written with `repr`, which Prometheus parses back to the same
float64.

Every level of a metric carries the same `metric` label, so Alertmanager can
inhibit a lower level while a higher one fires for the same metric and instance.

With a clear margin, a rule has the in-process lifecycle's hysteresis: once
firing (its own `ALERTS` series), it holds until the gauge is back past the
clear threshold, not merely within the threshold.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Any

import yaml

from .alerts import AlertConfig, AlertLevel, clear_threshold, to_float32
from .errors import UsageError
from .metrics import METRICS, Direction, MetricName, MetricSpec

__all__ = [
    "ALERTS_GROUP",
    "MAX_DURATION_S",
    "RECORDING_GROUP",
    "SEVERITY_BY_LEVEL",
    "SIDECAR_DOWN_ALERT",
    "alert_expr",
    "alert_name",
    "format_duration",
    "generate_rules",
    "has_sum",
]

ALERTS_GROUP = "mhc-monitor-alerts"
#: The alert for a sidecar that Prometheus cannot scrape.
SIDECAR_DOWN_ALERT = "MhcSidecarDown"
RECORDING_GROUP = "mhc-monitor-fleet"

#: Alert level to severity label, the same mapping as PagerDuty's event severity.
SEVERITY_BY_LEVEL: Mapping[AlertLevel, str] = {
    AlertLevel.INFO: "info",
    AlertLevel.WARNING: "warning",
    AlertLevel.CRITICAL: "error",
    AlertLevel.EMERGENCY: "critical",
}

#: Longest duration written: Prometheus and Alertmanager read durations as int64 nanoseconds.
MAX_DURATION_S = 9_000_000_000
_RATE_WINDOW = "5m"
# Labels an alert has beyond its gauge's: the rule's own and the ones Prometheus adds.
_ALERT_ONLY_LABELS = "alertname, alertstate, level, metric, severity"
_QUANTILES = (("p50", 0.5), ("p90", 0.9), ("p99", 0.99))


def alert_name(metric: str, level: AlertLevel) -> str:
    """The alerting rule name for a metric and level, e.g. `MhcSinkhornIterationsWarning`."""
    words = [*str(metric).split("_"), level.name.lower()]
    return "Mhc" + "".join(word.capitalize() for word in words)


def alert_expr(spec: MetricSpec, statistic: str, threshold: float) -> str:
    """The PromQL condition under which `spec`'s window `statistic` is beyond `threshold`.

    `threshold` is in recorded units (latency in ms); the expression compares in
    the exposed base unit, at the float32 precision of the in-process evaluation.
    """
    # TODO: the exposition scales the window statistic in float64, so a latency
    # mean within one float64 ulp above the threshold can round onto the scaled
    # threshold and not fire here while the in-process alert does.
    bound = to_float32(threshold) * spec.scale
    gauge = f'{spec.window_series}{{stat="{statistic}"}}'
    if spec.direction is Direction.MAGNITUDE_IS_WORSE:
        gauge = f"abs({gauge})"
    relation = "<" if spec.direction is Direction.LOWER_IS_WORSE else ">"
    return f"{gauge} {relation} {bound!r}"


def format_duration(seconds: float) -> str:
    """A Prometheus duration for a number of seconds, to the millisecond ("90s", "1500ms")."""
    if not math.isfinite(seconds) or seconds < 0:
        raise UsageError(f"a duration must be a finite number of seconds >= 0, got {seconds!r}")
    if seconds > MAX_DURATION_S:
        raise UsageError(
            f"a duration must be at most {MAX_DURATION_S} s (about 285 years, what Prometheus "
            f"and Alertmanager can read), got {seconds!r}"
        )
    millis = round(seconds * 1000)
    if millis == 0 and seconds > 0:
        raise UsageError(f"a duration must be at least 1 ms, got {seconds!r} s")
    if millis % 1000 == 0:
        return f"{millis // 1000}s"
    return f"{millis}ms"


def generate_rules(
    config: AlertConfig,
    *,
    for_seconds: float = 0,
    keep_firing_for_seconds: float = 0,
    for_by_metric: Mapping[str, float] | None = None,
    clear_margin: float = 0,
    clear_margin_by_metric: Mapping[str, float] | None = None,
    dashboard_url: str | None = None,
    scrape_job: str | None = None,
    down_for_seconds: float = 60,
) -> str:
    """A Prometheus rule file (YAML): one alerting rule per metric and configured level,
    and recording rules for fleet aggregates.

    `for` and `keep_firing_for` (Prometheus >= 2.42) are written only when
    non-zero; `for_by_metric` overrides `for_seconds` for the metrics it names,
    as the in-process lifecycle does; likewise `clear_margin_by_metric` for
    `clear_margin`, the relative hysteresis of the lifecycle (0: a rule resolves
    as soon as the gauge is within its threshold). `dashboard_url` becomes each
    alert's `dashboard` annotation.

    With `scrape_job`, the Prometheus job scraping the sidecars, one more rule
    (`MhcSidecarDown`, critical) fires when a sidecar has not answered scrapes
    for `down_for_seconds`: its series are gone then, so its other alerts
    resolve in Prometheus although nothing says the replica is healthy.
    Raises `UsageError` for a negative or non-finite duration, a margin outside
    [0, 1) or an unknown metric name.
    """
    pending = _pending_by_metric(for_seconds, for_by_metric or {})
    margins = _margin_by_metric(clear_margin, clear_margin_by_metric or {})
    keep = _duration_field("keep_firing_for", keep_firing_for_seconds)

    alerting = [
        _alerting_rule(
            spec,
            level,
            threshold,
            config.statistic(spec.name),
            margins[spec.name],
            {**pending[spec.name], **keep},
            dashboard_url,
        )
        for spec in METRICS
        for level, threshold in config.thresholds(spec.name)
    ]
    if scrape_job is not None:
        alerting.append(_down_rule(scrape_job, down_for_seconds, dashboard_url))
    document = {
        "groups": [
            {"name": ALERTS_GROUP, "rules": alerting},
            {"name": RECORDING_GROUP, "rules": _recording_rules()},
        ]
    }
    text: str = yaml.safe_dump(document, sort_keys=False, width=1000)
    return text


def _duration_field(key: str, seconds: float) -> dict[str, str]:
    """`{key: duration}`, or nothing for zero; a bad duration raises `UsageError`."""
    duration = format_duration(seconds)
    return {key: duration} if seconds else {}


def _pending_by_metric(
    for_seconds: float, overrides: Mapping[str, float]
) -> dict[MetricName, dict[str, str]]:
    _check_metric_names("for_by_metric", overrides)
    return {
        spec.name: _duration_field("for", overrides.get(str(spec.name), for_seconds))
        for spec in METRICS
    }


def _margin_by_metric(margin: float, overrides: Mapping[str, float]) -> dict[MetricName, float]:
    _check_metric_names("clear_margin_by_metric", overrides)
    margins = {spec.name: overrides.get(str(spec.name), margin) for spec in METRICS}
    for name, value in margins.items():
        if not (isinstance(value, int | float) and 0 <= value < 1):
            raise UsageError(f"the clear margin of {name} must be in [0, 1), got {value!r}")
    return margins


def _check_metric_names(option: str, overrides: Mapping[str, float]) -> None:
    known = {str(spec.name) for spec in METRICS}
    unknown = sorted(set(map(str, overrides)) - known)
    if unknown:
        raise UsageError(f"unknown metric {unknown[0]!r} in {option} (known: {sorted(known)})")


def _alerting_rule(
    spec: MetricSpec,
    level: AlertLevel,
    threshold: float,
    statistic: str,
    margin: float,
    timing: Mapping[str, str],
    dashboard_url: str | None,
) -> dict[str, Any]:
    name = alert_name(spec.name, level)
    expr = alert_expr(spec, statistic, threshold)
    if margin:
        # Firing already, the rule holds while the gauge is short of the clear threshold.
        held = alert_expr(spec, statistic, clear_threshold(spec.name, threshold, margin))
        firing = f'ALERTS{{alertname="{name}", alertstate="firing"}}'
        expr = f"{expr} or ({held} and ignoring({_ALERT_ONLY_LABELS}) {firing})"
    level_name = level.name.lower()
    relation = "below" if spec.direction is Direction.LOWER_IS_WORSE else "above"
    shown = f"|{statistic}|" if spec.direction is Direction.MAGNITUDE_IS_WORSE else statistic
    unit = " ms" if spec.config_suffix == "_ms" else ""
    base_unit = f" {spec.unit}" if spec.unit and spec.unit != "ratio" else ""
    annotations = {
        "summary": (
            f"{spec.name} window {shown} {relation} the {level_name} threshold "
            f"{threshold:g}{unit} on {{{{ $labels.instance }}}}"
        ),
        "description": (
            f"The {spec.name} window {shown} of {{{{ $labels.instance }}}} is "
            f"{{{{ $value }}}}{base_unit}, {relation} the {level_name} threshold "
            f"{threshold:g}{unit}."
        ),
    }
    if dashboard_url is not None:
        annotations["dashboard"] = dashboard_url
    return {
        "alert": name,
        "expr": expr,
        **timing,
        "labels": {
            "severity": SEVERITY_BY_LEVEL[level],
            "metric": str(spec.name),
            "level": level_name,
        },
        "annotations": annotations,
    }


def has_sum(spec: MetricSpec) -> bool:
    """Whether `spec`'s histogram carries `_sum` and `_count` on /metrics.

    The exposition (as OpenMetrics requires) leaves both out of a histogram with
    a negative bucket, so its sample count is read from the `+Inf` bucket.
    """
    return spec.buckets[0] >= 0


def _down_rule(job: str, for_seconds: float, dashboard_url: str | None) -> dict[str, Any]:
    level = AlertLevel.CRITICAL
    annotations = {
        "summary": "mhc-monitor sidecar {{ $labels.instance }} does not answer scrapes",
        "description": (
            f"Prometheus job {job!r} cannot scrape {{{{ $labels.instance }}}}: "
            "its metrics are missing and its other alerts have resolved for lack of data."
        ),
    }
    if dashboard_url is not None:
        annotations["dashboard"] = dashboard_url
    return {
        "alert": SIDECAR_DOWN_ALERT,
        "expr": f"up{{job={json.dumps(job)}}} == 0",
        **_duration_field("for", for_seconds),
        "labels": {"severity": SEVERITY_BY_LEVEL[level], "metric": "up", "level": "critical"},
        "annotations": annotations,
    }


def _recording_rules() -> list[dict[str, str]]:
    rules: list[dict[str, str]] = []
    for spec in METRICS:
        short = spec.series.removeprefix("mhc_")
        buckets = f"sum by (le, model) (rate({spec.series}_bucket[{_RATE_WINDOW}]))"
        for name, quantile in _QUANTILES:
            rules.append(
                {
                    "record": f"mhc:{short}:{name}_{_RATE_WINDOW}",
                    "expr": f"histogram_quantile({quantile}, {buckets})",
                }
            )
        if has_sum(spec):
            count = f"sum by (model) (rate({spec.series}_count[{_RATE_WINDOW}]))"
            total = f"sum by (model) (rate({spec.series}_sum[{_RATE_WINDOW}]))"
            mean = f"{total} / {count}"
            rules.append({"record": f"mhc:{short}:mean_{_RATE_WINDOW}", "expr": mean})
        else:
            # TODO: a histogram with negative buckets has no _sum on /metrics, so the
            # fleet has no mean of curvature; only its quantiles and sample rate.
            count = f'sum by (model) (rate({spec.series}_bucket{{le="+Inf"}}[{_RATE_WINDOW}]))'
        rules.append({"record": f"mhc:{short}:samples_rate{_RATE_WINDOW}", "expr": count})
    rules += [
        {"record": "mhc:alert_level:max", "expr": "max by (model, metric) (mhc_alert_level)"},
        {
            "record": f"mhc:samples_rejected:rate{_RATE_WINDOW}",
            "expr": (
                "sum by (model, metric, reason) "
                f"(rate(mhc_samples_rejected_total[{_RATE_WINDOW}]))"
            ),
        },
        {
            "record": f"mhc:notifications:rate{_RATE_WINDOW}",
            "expr": f"sum by (receiver, outcome) (rate(mhc_notifications_total[{_RATE_WINDOW}]))",
        },
    ]
    return rules
