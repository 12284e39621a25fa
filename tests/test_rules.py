"""Prometheus rules: promtool accepts them; they fire exactly when the in-process alert does."""

from __future__ import annotations

import math
import shutil
import subprocess
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import yaml

from mhc_monitor.alerts import AlertConfig, AlertLevel, clear_threshold, to_float32
from mhc_monitor.config import LifecycleSettings
from mhc_monitor.delivery.lifecycle import AlertState, Evaluation, Lifecycle
from mhc_monitor.errors import UsageError
from mhc_monitor.metrics import METRICS, Direction, MetricName, MetricSpec
from mhc_monitor.rules import (
    ALERTS_GROUP,
    RECORDING_GROUP,
    SIDECAR_DOWN_ALERT,
    alert_name,
    format_duration,
    generate_rules,
)

pytestmark = pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool missing")

CUSTOM = AlertConfig(
    latency_warning_ms=20.0,
    latency_critical_ms=40.0,
    latency_emergency_ms=None,
    acceptance_rate_warning=0.8,
    acceptance_rate_critical=None,
    acceptance_rate_emergency=0.4,
    curvature_warning=0.1,
    energy_warning=3.3,
    sinkhorn_iters_warning=10.0,
    sinkhorn_iters_critical=20.0,
    sinkhorn_iters_emergency=50.0,
    statistics={"latency": "p99", "curvature": "max", "stability": "min"},
)
CONFIGS = [AlertConfig(), CUSTOM]
CONFIG_IDS = ["defaults", "custom"]


def _promtool(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["promtool", *args], capture_output=True, text=True, timeout=120, check=False, cwd=cwd
    )


def _go_float(value: float) -> str:
    """A float64 as Go's fmt %v prints it, which is how Prometheus renders {{ $value }}."""
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if value == 0:
        return "-0" if math.copysign(1.0, value) < 0 else "0"
    sign = "-" if value < 0 else ""
    parsed = Decimal(repr(abs(value))).normalize().as_tuple()
    digits = "".join(str(d) for d in parsed.digits)
    assert isinstance(parsed.exponent, int)
    point = len(digits) + parsed.exponent
    exponent = point - 1
    if exponent < -4 or exponent >= 6:
        mantissa = digits[0] + ("." + digits[1:] if len(digits) > 1 else "")
        return f"{sign}{mantissa}e{'-' if exponent < 0 else '+'}{abs(exponent):02d}"
    if point <= 0:
        return f"{sign}0.{'0' * -point}{digits}"
    if point >= len(digits):
        return sign + digits + "0" * (point - len(digits))
    return f"{sign}{digits[:point]}.{digits[point:]}"


@pytest.mark.parametrize(
    ("value", "expected"),
    [(0.05, "0.05"), (5e-05, "5e-05"), (100000.0, "100000"), (1e6, "1e+06"), (-2.5, "-2.5")],
)
def test_go_float_formatting_helper(value: float, expected: str) -> None:
    assert _go_float(value) == expected


def _load(text: str) -> dict[str, Any]:
    document: dict[str, Any] = yaml.safe_load(text)
    return document


def _groups(text: str) -> dict[str, list[dict[str, Any]]]:
    return {group["name"]: group["rules"] for group in _load(text)["groups"]}


@pytest.mark.parametrize(
    ("kwargs", "count"),
    [
        ({}, 15 + 32),
        ({"for_seconds": 60, "keep_firing_for_seconds": 300, "dashboard_url": "http://g/d/x"}, 47),
    ],
)
def test_promtool_check_rules_is_clean(tmp_path: Path, kwargs: dict[str, Any], count: int) -> None:
    (tmp_path / "rules.yml").write_text(generate_rules(AlertConfig(), **kwargs))
    result = _promtool("check", "rules", "rules.yml", cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {count} rules found" in result.stdout
    assert "WARNING" not in result.stdout + result.stderr


@pytest.mark.parametrize("config", CONFIGS, ids=CONFIG_IDS)
def test_one_alerting_rule_per_metric_and_configured_level(config: AlertConfig) -> None:
    rules = _groups(generate_rules(config))[ALERTS_GROUP]
    expected = [
        alert_name(spec.name, level)
        for spec in METRICS
        for level, _ in config.thresholds(spec.name)
    ]
    assert [rule["alert"] for rule in rules] == expected
    severities = {"warning": "warning", "critical": "error", "emergency": "critical"}
    for rule in rules:
        labels = rule["labels"]
        assert rule["alert"] == alert_name(labels["metric"], AlertLevel[labels["level"].upper()])
        assert labels["severity"] == severities[labels["level"]]
        assert "{{ $labels.instance }}" in rule["annotations"]["summary"]
        assert "{{ $value }}" in rule["annotations"]["description"]
        assert "for" not in rule and "keep_firing_for" not in rule
        assert "dashboard" not in rule["annotations"]


def test_sinkhorn_is_off_by_default_and_names_are_camel_case() -> None:
    names = [rule["alert"] for rule in _groups(generate_rules(AlertConfig()))[ALERTS_GROUP]]
    assert not any("Sinkhorn" in name for name in names)
    assert "MhcAcceptanceWarning" in names and "MhcLatencyEmergency" in names
    assert (
        alert_name("sinkhorn_iterations", AlertLevel.CRITICAL) == "MhcSinkhornIterationsCritical"
    )


def test_timing_and_dashboard_link() -> None:
    text = generate_rules(
        AlertConfig(), for_seconds=90, keep_firing_for_seconds=0.25, dashboard_url="http://g/d/u"
    )
    for rule in _groups(text)[ALERTS_GROUP]:
        assert rule["for"] == "90s"
        assert rule["keep_firing_for"] == "250ms"
        assert rule["annotations"]["dashboard"] == "http://g/d/u"


def test_sidecar_down_rule_only_with_a_scrape_job() -> None:
    assert SIDECAR_DOWN_ALERT not in generate_rules(AlertConfig())
    text = generate_rules(
        AlertConfig(), scrape_job="mhc", down_for_seconds=90, dashboard_url="http://g/d/u"
    )
    down = _groups(text)[ALERTS_GROUP][-1]
    assert down["alert"] == SIDECAR_DOWN_ALERT
    assert down["expr"] == 'up{job="mhc"} == 0'
    assert down["for"] == "90s"
    assert down["labels"] == {"severity": "error", "metric": "up", "level": "critical"}
    assert down["annotations"]["dashboard"] == "http://g/d/u"
    assert "{{ $labels.instance }}" in down["annotations"]["summary"]
    immediate = _groups(generate_rules(AlertConfig(), scrape_job="mhc", down_for_seconds=0))
    assert "for" not in immediate[ALERTS_GROUP][-1]


def test_for_by_metric_overrides_the_default_pending_time() -> None:
    text = generate_rules(AlertConfig(), for_seconds=60, for_by_metric={"latency": 0, "energy": 5})
    pending = {rule["alert"]: rule.get("for") for rule in _groups(text)[ALERTS_GROUP]}
    assert pending["MhcLatencyWarning"] is None
    assert pending["MhcEnergyEmergency"] == "5s"
    assert pending["MhcAcceptanceCritical"] == "60s"
    with pytest.raises(UsageError, match="unknown metric 'latency_ms'"):
        generate_rules(AlertConfig(), for_by_metric={"latency_ms": 1})
    with pytest.raises(UsageError):
        generate_rules(AlertConfig(), for_by_metric={"latency": -1})


@pytest.mark.parametrize(
    ("seconds", "expected"),
    [
        (0, "0s"),
        (1, "1s"),
        (90, "90s"),
        (0.25, "250ms"),
        (1.5, "1500ms"),
        (3600, "3600s"),
        (9e9, "9000000000s"),
    ],
)
def test_format_duration(seconds: float, expected: str) -> None:
    assert format_duration(seconds) == expected


@pytest.mark.parametrize("seconds", [-1.0, math.inf, math.nan, 0.0001, 9e9 + 1, 1e20])
def test_bad_durations_raise_usage_error(seconds: float) -> None:
    with pytest.raises(UsageError):
        generate_rules(AlertConfig(), for_seconds=seconds)
    with pytest.raises(UsageError):
        generate_rules(AlertConfig(), keep_firing_for_seconds=seconds)


def test_recording_rules_cover_every_metric() -> None:
    records = {
        rule["record"]: rule["expr"]
        for rule in _groups(generate_rules(AlertConfig()))[RECORDING_GROUP]
    }
    for spec in METRICS:
        short = spec.series.removeprefix("mhc_")
        assert records[f"mhc:{short}:p99_5m"] == (
            f"histogram_quantile(0.99, sum by (le, model) (rate({spec.series}_bucket[5m])))"
        )
        if spec.name is MetricName.CURVATURE:
            # Negative buckets: no _sum or _count on /metrics, so no mean.
            assert f"mhc:{short}:mean_5m" not in records
            assert records[f"mhc:{short}:samples_rate5m"] == (
                f'sum by (model) (rate({spec.series}_bucket{{le="+Inf"}}[5m]))'
            )
            continue
        assert records[f"mhc:{short}:mean_5m"] == (
            f"sum by (model) (rate({spec.series}_sum[5m])) / "
            f"sum by (model) (rate({spec.series}_count[5m]))"
        )
        assert records[f"mhc:{short}:samples_rate5m"] == (
            f"sum by (model) (rate({spec.series}_count[5m]))"
        )


# --- promtool unit tests: the boundary, on both sides, for every metric and level -------------


def _beyond(spec: MetricSpec, boundary: float) -> float:
    """The next recorded value past the boundary whose exposed gauge differs from its gauge."""
    if spec.direction is Direction.LOWER_IS_WORSE:
        target = -math.inf
    else:
        target = math.copysign(math.inf, boundary)
    value = math.nextafter(boundary, target)
    while value * spec.scale == boundary * spec.scale:
        value = math.nextafter(value, target)
    return value


def _boundary_series(config: AlertConfig) -> list[dict[str, Any]]:
    """One series per metric, level and side: at the boundary, one step beyond, back."""
    cases = []
    for spec in METRICS:
        for level, threshold in config.thresholds(spec.name):
            sides = [1.0, -1.0] if spec.direction is Direction.MAGNITUDE_IS_WORSE else [1.0]
            for side in sides:
                boundary = side * to_float32(threshold)
                recorded = [boundary, _beyond(spec, boundary), boundary]
                # The in-process evaluation, checked on its own: the boundary does not
                # reach this level, the next value does.
                levels = [config.evaluate(spec.name, value)[0] for value in recorded]
                assert levels[0] < level <= levels[1] and levels[2] == levels[0]
                cases.append(
                    {
                        "spec": spec,
                        "instance": f"{spec.name}-{level.name.lower()}-{side:+g}",
                        "recorded": recorded,
                        "gauge": [value * spec.scale for value in recorded],
                        "levels": levels,
                    }
                )
    return cases


def _unit_test_document(config: AlertConfig, rules: list[dict[str, Any]]) -> dict[str, Any]:
    cases = _boundary_series(config)
    input_series = []
    for case in cases:
        spec = case["spec"]
        statistic = config.statistic(spec.name)
        series = (
            f'{spec.window_series}{{stat="{statistic}", instance="{case["instance"]}", '
            'model="m1"}'
        )
        input_series.append(
            {"series": series, "values": " ".join(repr(value) for value in case["gauge"])}
        )

    alert_tests = []
    for minute in range(3):
        for rule in rules:
            level = AlertLevel[rule["labels"]["level"].upper()]
            expected = []
            for case in cases:
                spec = case["spec"]
                if str(spec.name) != rule["labels"]["metric"] or case["levels"][minute] < level:
                    continue
                shown = case["gauge"][minute]
                if spec.direction is Direction.MAGNITUDE_IS_WORSE:
                    shown = abs(shown)
                annotations = {
                    key: text.replace("{{ $labels.instance }}", case["instance"]).replace(
                        "{{ $value }}", _go_float(shown)
                    )
                    for key, text in rule["annotations"].items()
                }
                labels = {
                    **rule["labels"],
                    "stat": config.statistic(spec.name),
                    "instance": case["instance"],
                    "model": "m1",
                }
                expected.append({"exp_labels": labels, "exp_annotations": annotations})
            alert_tests.append(
                {"eval_time": f"{minute}m", "alertname": rule["alert"], "exp_alerts": expected}
            )
    return {
        "rule_files": ["rules.yml"],
        "evaluation_interval": "1m",
        "tests": [
            {"interval": "1m", "input_series": input_series, "alert_rule_test": alert_tests}
        ],
    }


@pytest.mark.parametrize("config", CONFIGS, ids=CONFIG_IDS)
def test_rules_fire_exactly_when_the_in_process_evaluation_does(
    tmp_path: Path, config: AlertConfig
) -> None:
    """On the float32 threshold nothing fires; the next value beyond fires; back resolves."""
    text = generate_rules(config)
    (tmp_path / "rules.yml").write_text(text)
    document = _unit_test_document(config, _groups(text)[ALERTS_GROUP])
    fired = sum(len(test["exp_alerts"]) for test in document["tests"][0]["alert_rule_test"])
    assert fired > 0
    (tmp_path / "test.yml").write_text(yaml.safe_dump(document, sort_keys=False))
    result = _promtool("test", "rules", "test.yml", cwd=tmp_path)
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]
    assert "SUCCESS" in result.stdout


def test_for_and_keep_firing_for_delay_firing_and_resolution(tmp_path: Path) -> None:
    """With for=2m and keep_firing_for=2m: pending at 1m, firing 2m..5m, resolved at 7m."""
    text = generate_rules(AlertConfig(), for_seconds=120, keep_firing_for_seconds=120)
    rule = next(r for r in _groups(text)[ALERTS_GROUP] if r["alert"] == "MhcEnergyWarning")
    (tmp_path / "rules.yml").write_text(text)
    labels = {**rule["labels"], "stat": "mean", "instance": "a"}
    annotations = {
        key: value.replace("{{ $labels.instance }}", "a")
        for key, value in rule["annotations"].items()
    }

    def expect(minute: int, value: float | None) -> dict[str, Any]:
        alerts = []
        if value is not None:
            shown = {
                k: v.replace("{{ $value }}", _go_float(value)) for k, v in annotations.items()
            }
            alerts.append({"exp_labels": labels, "exp_annotations": shown})
        return {"eval_time": f"{minute}m", "alertname": "MhcEnergyWarning", "exp_alerts": alerts}

    # Beyond at 0m..3m (the last value beyond is 150), at the threshold from 4m on.
    document = {
        "rule_files": ["rules.yml"],
        "evaluation_interval": "1m",
        "tests": [
            {
                "interval": "1m",
                "input_series": [
                    {
                        "series": 'mhc_energy_window{stat="mean", instance="a"}',
                        "values": "150x3 100x5",
                    }
                ],
                "alert_rule_test": [
                    expect(1, None),
                    expect(2, 150.0),
                    expect(3, 150.0),
                    expect(4, 150.0),
                    expect(7, None),
                ],
            }
        ],
    }
    (tmp_path / "test.yml").write_text(yaml.safe_dump(document, sort_keys=False))
    result = _promtool("test", "rules", "test.yml", cwd=tmp_path)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]


def test_rules_command_carries_the_config_lifecycle(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from mhc_monitor.cli import main

    config = tmp_path / "mhc.toml"
    config.write_text(
        "[thresholds.latency]\nfor = 30\n\n[lifecycle]\nfor = 5\nkeep_firing_for = 10\n"
    )
    runner = CliRunner()
    result = runner.invoke(main, ["rules", "--config", str(config)])
    assert result.exit_code == 0, result.output
    timing = {
        rule["alert"]: (rule.get("for"), rule.get("keep_firing_for"))
        for rule in _groups(result.output)[ALERTS_GROUP]
    }
    assert timing["MhcLatencyCritical"] == ("30s", "10s")
    assert timing["MhcAcceptanceWarning"] == ("5s", "10s")

    result = runner.invoke(
        main, ["rules", "--config", str(config), "--for", "0", "--keep-firing-for", "0"]
    )
    assert result.exit_code == 0, result.output
    timing = {
        rule["alert"]: (rule.get("for"), rule.get("keep_firing_for"))
        for rule in _groups(result.output)[ALERTS_GROUP]
    }
    assert set(timing.values()) == {(None, None)}


# --- hysteresis: with a clear margin, rules resolve when the in-process lifecycle does -------

MARGIN = 0.05
# Per metric, one value a minute: crossings, values between a threshold and its clear
# threshold (held), values past it (cleared), and an escalation that de-escalates.
HYSTERESIS_VALUES = {
    MetricName.ACCEPTANCE: [0.8, 0.69, 0.72, 0.74, 0.49, 0.51, 0.53, 0.6, 0.72, 0.75],
    MetricName.LATENCY: [40.0, 51.0, 48.0, 47.0, 101.0, 96.0, 94.0, 49.0, 30.0],
    MetricName.CURVATURE: [1.0, -2.1, -1.95, 1.85, 5.5, -4.8, 4.7, 0.5],
}


def _rule_states(spec: MetricSpec, values: list[float]) -> dict[AlertLevel, list[bool]]:
    """Each level's rule, firing or not per minute, by its definition: beyond the threshold,
    or firing before and not yet back to the clear threshold."""
    config = AlertConfig()
    states = {}
    for level, threshold in config.thresholds(spec.name):
        clear = clear_threshold(spec.name, threshold, MARGIN)
        firing, out = False, []
        for value in values:
            beyond = config.evaluate(spec.name, value)[0] >= level
            v = abs(value) if spec.direction is Direction.MAGNITUDE_IS_WORSE else value
            held = v < clear if spec.direction is Direction.LOWER_IS_WORSE else v > clear
            firing = beyond or (firing and held)
            out.append(firing)
        states[level] = out
    return states


def _lifecycle_levels(spec: MetricSpec, values: list[float]) -> list[AlertLevel]:
    """The in-process lifecycle's level per minute (INFO when no alert is active)."""
    config = AlertConfig()
    life = Lifecycle(
        config,
        LifecycleSettings(clear_margin=MARGIN, no_data_after_s=None),
        source="s",
        labels={},
    )
    levels = []
    for minute, value in enumerate(values):
        level, threshold = config.evaluate(spec.name, value)
        life.step(60.0 * minute, [Evaluation(spec.name, level, value, threshold, minute + 1)])
        active = [a for a in life.active() if a.state is AlertState.FIRING]
        levels.append(active[0].level if active else AlertLevel.INFO)
    return levels


@pytest.mark.parametrize("metric", list(HYSTERESIS_VALUES))
def test_rules_with_a_clear_margin_resolve_when_the_lifecycle_does(
    tmp_path: Path, metric: MetricName
) -> None:
    spec = next(s for s in METRICS if s.name is metric)
    values = HYSTERESIS_VALUES[metric]
    states = _rule_states(spec, values)
    # The highest firing rule is the in-process alert's level, minute by minute.
    top = [
        max((level for level, fired in states.items() if fired[m]), default=AlertLevel.INFO)
        for m in range(len(values))
    ]
    assert top == _lifecycle_levels(spec, values)
    assert any(s[m] and not s[m - 1] for s in states.values() for m in range(1, len(values)))

    text = generate_rules(AlertConfig(), clear_margin=MARGIN)
    rules = {r["alert"]: r for r in _groups(text)[ALERTS_GROUP] if r["labels"]["metric"] == metric}
    gauge = [value * spec.scale for value in values]
    series = f'{spec.window_series}{{stat="mean", instance="a"}}'
    tests = []
    for level, fired in states.items():
        rule = rules[alert_name(metric, level)]
        assert f'ALERTS{{alertname="{rule["alert"]}", alertstate="firing"}}' in rule["expr"]
        for minute, on in enumerate(fired):
            shown = (
                abs(gauge[minute])
                if spec.direction is Direction.MAGNITUDE_IS_WORSE
                else gauge[minute]
            )
            annotations = {
                key: text.replace("{{ $labels.instance }}", "a").replace(
                    "{{ $value }}", _go_float(shown)
                )
                for key, text in rule["annotations"].items()
            }
            labels = {**rule["labels"], "stat": "mean", "instance": "a"}
            expected = [{"exp_labels": labels, "exp_annotations": annotations}] if on else []
            tests.append(
                {"eval_time": f"{minute}m", "alertname": rule["alert"], "exp_alerts": expected}
            )
    document = {
        "rule_files": ["rules.yml"],
        "evaluation_interval": "1m",
        "tests": [
            {
                "interval": "1m",
                "input_series": [{"series": series, "values": " ".join(repr(g) for g in gauge)}],
                "alert_rule_test": tests,
            }
        ],
    }
    (tmp_path / "rules.yml").write_text(text)
    (tmp_path / "test.yml").write_text(yaml.safe_dump(document, sort_keys=False))
    result = _promtool("test", "rules", "test.yml", cwd=tmp_path)
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]


@pytest.mark.parametrize("margin", [-0.1, 1.0, math.nan])
def test_a_clear_margin_outside_zero_to_one_is_refused(margin: float) -> None:
    with pytest.raises(UsageError, match="clear margin of acceptance must be in"):
        generate_rules(AlertConfig(), clear_margin_by_metric={"acceptance": margin})


def test_no_margin_writes_plain_comparisons() -> None:
    for rule in _groups(generate_rules(AlertConfig()))[ALERTS_GROUP]:
        assert "ALERTS" not in rule["expr"]
