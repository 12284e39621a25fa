"""The six monitored metrics: names, units, domains, directions and defaults.

Every other module reads its facts about a metric from here: the record call,
the ingestion key, the exposed series names, the domain a sample must lie in,
which direction is worse, and the histogram bucket boundaries.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

__all__ = [
    "FLOAT32_MAX",
    "METRICS",
    "STATISTICS",
    "Direction",
    "MetricName",
    "MetricSpec",
    "spec_for",
    "spec_for_ingest_key",
]

#: The largest finite float32: samples are stored as float32, so larger magnitudes overflow.
FLOAT32_MAX = 3.4028234663852886e38
_FMAX = FLOAT32_MAX


class MetricName(enum.StrEnum):
    """The metric names, as used in labels (`metric="latency"`) and in configuration."""

    ACCEPTANCE = "acceptance"
    CURVATURE = "curvature"
    ENERGY = "energy"
    LATENCY = "latency"
    STABILITY = "stability"
    SINKHORN_ITERATIONS = "sinkhorn_iterations"


class Direction(enum.Enum):
    """Which way a metric gets worse."""

    LOWER_IS_WORSE = "lower"
    HIGHER_IS_WORSE = "higher"
    MAGNITUDE_IS_WORSE = "magnitude"


#: The statistics a metric can be evaluated on, in the order the summary reports them.
STATISTICS: tuple[str, ...] = ("mean", "p50", "p90", "p95", "p99", "min", "max", "last")


@dataclass(frozen=True, slots=True)
class MetricSpec:
    """What the monitor knows about one metric.

    `lower` and `upper` bound the domain inclusively; `scale` converts a recorded
    value into the base unit exposed on `/metrics` (latency: ms to seconds).
    `buckets` are histogram boundaries in recorded units, before the alert
    thresholds are merged in.
    """

    name: MetricName
    record_call: str
    ingest_key: str
    config_prefix: str
    unit: str
    series: str
    window_series: str
    help: str
    direction: Direction
    lower: float
    upper: float
    integer: bool
    scale: float
    buckets: tuple[float, ...]

    @property
    def config_suffix(self) -> str:
        """The unit suffix of this metric's `AlertConfig` threshold fields ("_ms" or "")."""
        return "_ms" if self.name is MetricName.LATENCY else ""


METRICS: tuple[MetricSpec, ...] = (
    MetricSpec(
        name=MetricName.ACCEPTANCE,
        record_call="record_acceptance",
        ingest_key="acceptance",
        config_prefix="acceptance_rate",
        unit="ratio",
        series="mhc_acceptance_ratio",
        window_series="mhc_acceptance_window_ratio",
        help="Draft-token acceptance rate per decoding step (accepted / drafted).",
        direction=Direction.LOWER_IS_WORSE,
        lower=0.0,
        upper=1.0,
        integer=False,
        scale=1.0,
        buckets=(0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 1.0),
    ),
    MetricSpec(
        name=MetricName.CURVATURE,
        record_call="record_curvature",
        ingest_key="curvature",
        config_prefix="curvature",
        unit="",
        series="mhc_curvature",
        window_series="mhc_curvature_window",
        help="Curvature of the embedding geometry (evaluated by magnitude).",
        direction=Direction.MAGNITUDE_IS_WORSE,
        lower=-_FMAX,
        upper=_FMAX,
        integer=False,
        scale=1.0,
        buckets=(-10.0, -5.0, -2.0, -1.0, -0.5, 0.0, 0.5, 1.0, 2.0, 5.0, 10.0),
    ),
    MetricSpec(
        name=MetricName.ENERGY,
        record_call="record_energy",
        ingest_key="energy",
        config_prefix="energy",
        unit="",
        series="mhc_energy",
        window_series="mhc_energy_window",
        help="Squared norm of the mHC residual streams.",
        direction=Direction.HIGHER_IS_WORSE,
        lower=0.0,
        upper=_FMAX,
        integer=False,
        scale=1.0,
        buckets=(1.0, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 5000.0),
    ),
    MetricSpec(
        name=MetricName.LATENCY,
        record_call="record_latency",
        ingest_key="latency_ms",
        config_prefix="latency",
        unit="seconds",
        series="mhc_latency_seconds",
        window_series="mhc_latency_window_seconds",
        help="Wall time of one decoding step.",
        direction=Direction.HIGHER_IS_WORSE,
        lower=0.0,
        upper=_FMAX,
        integer=False,
        scale=0.001,
        buckets=(1.0, 2.5, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0),
    ),
    MetricSpec(
        name=MetricName.STABILITY,
        record_call="record_stability",
        ingest_key="stability",
        config_prefix="stability",
        unit="ratio",
        series="mhc_stability_ratio",
        window_series="mhc_stability_window_ratio",
        help="Norm preservation of the composite mHC mixing (1 = doubly stochastic).",
        direction=Direction.LOWER_IS_WORSE,
        lower=0.0,
        upper=1.0,
        integer=False,
        scale=1.0,
        buckets=(0.1, 0.25, 0.5, 0.6, 0.7, 0.8, 0.85, 0.9, 0.95, 0.99, 1.0),
    ),
    MetricSpec(
        name=MetricName.SINKHORN_ITERATIONS,
        record_call="record_sinkhorn_iters",
        ingest_key="sinkhorn_iters",
        config_prefix="sinkhorn_iters",
        unit="",
        series="mhc_sinkhorn_iterations",
        window_series="mhc_sinkhorn_iterations_window",
        help="Sinkhorn-Knopp iterations used to project the mixing matrix.",
        direction=Direction.HIGHER_IS_WORSE,
        lower=0.0,
        upper=float(2**53),
        integer=True,
        scale=1.0,
        buckets=(1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0, 1000.0),
    ),
)

_BY_NAME = {spec.name: spec for spec in METRICS}
_BY_INGEST_KEY = {spec.ingest_key: spec for spec in METRICS}


def spec_for(name: str) -> MetricSpec:
    """The spec of a metric by its name (`"latency"`); raises `KeyError` for an unknown one."""
    return _BY_NAME[MetricName(name)]


def spec_for_ingest_key(key: str) -> MetricSpec | None:
    """The spec for an ingestion key (`"latency_ms"`), or None when the key is unknown."""
    return _BY_INGEST_KEY.get(key)
