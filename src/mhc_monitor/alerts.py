"""Alert levels, thresholds and the evaluation of one statistic against them.

A metric crosses a threshold only strictly beyond it: acceptance 0.7 is INFO,
0.69 is WARNING. Samples are stored as float32, so thresholds are compared at
float32 precision too: recording exactly the threshold value never alerts.
"""

from __future__ import annotations

import enum
import hashlib
import itertools
import math
import struct
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from datetime import datetime
from types import MappingProxyType

from .errors import ConfigError
from .metrics import METRICS, STATISTICS, Direction, MetricName, MetricSpec, spec_for

__all__ = [
    "DEDUP_KEY_MAX",
    "Alert",
    "AlertConfig",
    "AlertLevel",
    "clear_threshold",
    "describe_clearing",
    "describe_crossing",
    "describe_holding",
    "format_reading",
    "make_dedup_key",
    "to_float32",
]

DEDUP_KEY_MAX = 255
_HASH_LEN = 64


class AlertLevel(enum.IntEnum):
    """Severity of a metric's state, ordered: INFO < WARNING < CRITICAL < EMERGENCY."""

    INFO = 0
    WARNING = 1
    CRITICAL = 2
    EMERGENCY = 3


_LEVELS_UP = (AlertLevel.WARNING, AlertLevel.CRITICAL, AlertLevel.EMERGENCY)


def to_float32(value: float) -> float:
    """`value` rounded to the nearest float32, as a Python float."""
    result: float = struct.unpack("f", struct.pack("f", value))[0]
    return result


@dataclass(frozen=True)
class AlertConfig:
    """Warning, critical and emergency thresholds per metric, and the statistic evaluated.

    Lower-is-worse metrics (acceptance, stability) need warning > critical >
    emergency; the others need warning < critical < emergency. A threshold of
    None switches that level off (Sinkhorn iterations are off by default).
    `statistics` maps a metric name to one of `STATISTICS`; unnamed metrics use
    the mean. Construction raises `ConfigError` naming every problem.
    """

    acceptance_rate_warning: float | None = 0.7
    acceptance_rate_critical: float | None = 0.5
    acceptance_rate_emergency: float | None = 0.3
    curvature_warning: float | None = 2.0
    curvature_critical: float | None = 5.0
    curvature_emergency: float | None = 10.0
    energy_warning: float | None = 100.0
    energy_critical: float | None = 500.0
    energy_emergency: float | None = 1000.0
    latency_warning_ms: float | None = 50.0
    latency_critical_ms: float | None = 100.0
    latency_emergency_ms: float | None = 500.0
    stability_warning: float | None = 0.9
    stability_critical: float | None = 0.8
    stability_emergency: float | None = 0.5
    sinkhorn_iters_warning: float | None = None
    sinkhorn_iters_critical: float | None = None
    sinkhorn_iters_emergency: float | None = None
    statistics: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        problems = _threshold_problems(self) + _statistic_problems(self.statistics)
        if problems:
            raise ConfigError("invalid AlertConfig: " + "; ".join(problems))
        normalized = {str(MetricName(k)): v for k, v in self.statistics.items()}
        object.__setattr__(self, "statistics", MappingProxyType(normalized))

    def __hash__(self) -> int:
        return hash(tuple(getattr(self, f.name) for f in fields(self) if f.name != "statistics"))

    def thresholds(self, metric: str) -> tuple[tuple[AlertLevel, float], ...]:
        """The configured (level, threshold) pairs of a metric, warning first, recorded units."""
        spec = spec_for(metric)
        pairs = []
        for level in _LEVELS_UP:
            value = getattr(self, threshold_field(spec, level))
            if value is not None:
                pairs.append((level, float(value)))
        return tuple(pairs)

    def statistic(self, metric: str) -> str:
        """The statistic a metric is evaluated on ("mean" unless configured)."""
        return self.statistics.get(str(MetricName(metric)), "mean")

    def evaluate(self, metric: str, value: float) -> tuple[AlertLevel, float | None]:
        """The level of `value` for `metric` and the threshold it crossed (None at INFO).

        NaN (an empty window) is INFO.
        """
        spec = spec_for(metric)
        if math.isnan(value):
            return AlertLevel.INFO, None
        if spec.direction is Direction.MAGNITUDE_IS_WORSE:
            value = abs(value)
        crossed: tuple[AlertLevel, float | None] = (AlertLevel.INFO, None)
        for level, threshold in self.thresholds(metric):
            if _beyond(spec, value, to_float32(threshold)):
                crossed = (level, threshold)
        return crossed


def threshold_field(spec: MetricSpec, level: AlertLevel) -> str:
    """The `AlertConfig` field holding `spec`'s threshold for `level`."""
    return f"{spec.config_prefix}_{level.name.lower()}{spec.config_suffix}"


def clear_threshold(metric: str, threshold: float, margin: float) -> float:
    """The value a firing alert at `threshold` must get back to (inclusive) to clear.

    `margin` is relative and moves the threshold towards healthy: up for a
    lower-is-worse metric, down (in magnitude for curvature) for the others.
    """
    if spec_for(metric).direction is Direction.LOWER_IS_WORSE:
        return threshold * (1.0 + margin)
    return threshold * (1.0 - margin)


def _beyond(spec: MetricSpec, value: float, threshold: float) -> bool:
    if spec.direction is Direction.LOWER_IS_WORSE:
        return value < threshold
    return value > threshold


def _threshold_problems(config: AlertConfig) -> list[str]:
    problems: list[str] = []
    for spec in METRICS:
        set_values: list[tuple[str, float]] = []
        for level in _LEVELS_UP:
            name = threshold_field(spec, level)
            value = getattr(config, name)
            if value is None:
                continue
            if isinstance(value, bool) or not isinstance(value, int | float):
                problems.append(f"{name} must be a number, got {type(value).__name__}")
                continue
            if not math.isfinite(value):
                problems.append(f"{name} must be finite, got {value!r}")
                continue
            low = 0.0 if spec.direction is Direction.MAGNITUDE_IS_WORSE else spec.lower
            if not low <= value <= spec.upper:
                problems.append(f"{name}={value!r} is outside {spec.name}'s domain")
                continue
            set_values.append((name, float(value)))
        problems.extend(_order_problems(spec, set_values))
    return problems


def _order_problems(spec: MetricSpec, values: list[tuple[str, float]]) -> list[str]:
    problems = []
    lower_worse = spec.direction is Direction.LOWER_IS_WORSE
    for (name_a, a), (name_b, b) in itertools.pairwise(values):
        ok = a > b if lower_worse else a < b
        if not ok:
            relation = "above" if lower_worse else "below"
            problems.append(
                f"{name_a}={a!r} must be strictly {relation} {name_b}={b!r} "
                f"({spec.name} is worse when {spec.direction.value})"
            )
    return problems


def _statistic_problems(statistics: object) -> list[str]:
    if not isinstance(statistics, Mapping):
        kind = type(statistics).__name__
        return [f"statistics must be a mapping of metric name to statistic, got {kind}"]
    problems = []
    for metric, stat in statistics.items():
        if metric not in MetricName.__members__.values():
            known = ", ".join(m.value for m in MetricName)
            problems.append(f"statistics names unknown metric {metric!r} (known: {known})")
        elif stat not in STATISTICS:
            problems.append(
                f"statistics[{metric!r}]={stat!r} is not one of {', '.join(STATISTICS)}"
            )
    return problems


def make_dedup_key(source: str, labels: Mapping[str, str], metric: str) -> str:
    """A key that names one problem: the same for every level and time of it.

    Built from the source, the sorted labels and the metric; a key longer than
    255 characters keeps its head and ends in a SHA-256 of the whole, so two
    distinct problems never share a key.
    """
    label_text = ",".join(f"{k}={labels[k]}" for k in sorted(labels))
    key = f"mhc-monitor/{source}/{metric}/{label_text}"
    if len(key) <= DEDUP_KEY_MAX:
        return key
    digest = hashlib.sha256(key.encode("utf-8")).hexdigest()
    return key[: DEDUP_KEY_MAX - _HASH_LEN - 1] + "~" + digest


def format_reading(value: float, reference: float) -> str:
    """`value` with the fewest significant digits (6 at least) that tell it from `reference`.

    A mean of 0.4999999 beside a threshold of 0.5 reads "0.4999999", not "0.5", so a
    message never says a value is below a threshold that it appears to equal.
    """
    for digits in range(6, 18):
        text = f"{value:.{digits}g}"
        if value == reference or float(text) != reference:
            return text
    return repr(value)


def _unit(spec: MetricSpec) -> str:
    return " ms" if spec.name is MetricName.LATENCY else ""


def _shown(spec: MetricSpec, statistic: str, value: float) -> tuple[str, float]:
    if spec.direction is Direction.MAGNITUDE_IS_WORSE:
        return f"|{statistic}|", abs(value)
    return statistic, value


def describe_crossing(
    spec: MetricSpec, statistic: str, value: float, level: AlertLevel, threshold: float
) -> str:
    """A one-line human message for a crossing, in recorded units."""
    unit = _unit(spec)
    shown, shown_value = _shown(spec, statistic, value)
    relation = "below" if spec.direction is Direction.LOWER_IS_WORSE else "above"
    return (
        f"{spec.name} {shown} {format_reading(shown_value, threshold)}{unit} is {relation} "
        f"the {level.name.lower()} threshold {threshold:g}{unit}"
    )


def describe_holding(
    spec: MetricSpec,
    statistic: str,
    value: float,
    level: AlertLevel,
    threshold: float,
    clear: float,
) -> str:
    """A one-line human message for an alert held at `level` by hysteresis: the value is
    back within the level's threshold but not yet past its clear threshold."""
    unit = _unit(spec)
    shown, shown_value = _shown(spec, statistic, value)
    return (
        f"{spec.name} {shown} {format_reading(shown_value, clear)}{unit} has not yet cleared "
        f"{clear:.6g}{unit}, the clear threshold of the {level.name.lower()} level "
        f"(threshold {threshold:g}{unit})"
    )


def describe_clearing(
    spec: MetricSpec, statistic: str, value: float, level: AlertLevel, clear: float
) -> str:
    """A one-line human message for a firing alert whose value is back past its clear threshold."""
    unit = _unit(spec)
    shown, shown_value = _shown(spec, statistic, value)
    return (
        f"{spec.name} {shown} {format_reading(shown_value, clear)}{unit} is back past the "
        f"clear threshold {clear:.6g}{unit} (was {level.name.lower()})"
    )


@dataclass(frozen=True)
class Alert:
    """One metric beyond a threshold, as evaluated at `timestamp` (aware, UTC).

    `value` is the evaluated `statistic` of the window and `threshold` the
    highest threshold it crossed, both in recorded units (latency in ms).
    `dedup_key` names the problem across levels and time.
    """

    metric: MetricName
    level: AlertLevel
    value: float
    threshold: float
    message: str
    source: str
    labels: Mapping[str, str]
    timestamp: datetime
    dedup_key: str
    statistic: str = "mean"
