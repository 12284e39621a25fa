"""Parsing sample batches sent by engines that are not written in Python.

Two shapes are accepted, as JSON objects:

    {"samples": [{"metric": "latency_ms", "value": 12.5}, ...]}     one object per sample
    {"latency_ms": [12.5, 13.0], "acceptance": [0.8]}               columnar

Keys are the ingestion keys of the metric specs (acceptance, curvature,
energy, latency_ms, stability, sinkhorn_iters). A batch is checked as a whole
before anything is recorded: a structural problem (unknown metric, wrong
shape) rejects the batch with a message naming it and records nothing. A value
of the wrong kind (a string, null, NaN, out of range) is a bad sample, not a
bad batch: it is dropped and counted per reason, like the library's calls.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from .errors import UsageError
from .metrics import METRICS, MetricSpec, spec_for_ingest_key
from .monitor import GeometricSpeculationMonitor

__all__ = ["INGEST_KEYS", "BatchResult", "IngestError", "parse_batch", "record_batch"]

INGEST_KEYS: tuple[str, ...] = tuple(spec.ingest_key for spec in METRICS)
_NUMBER_TYPES = frozenset({float, int})


class IngestError(UsageError):
    """A batch that cannot be recorded at all; the message names the problem."""


@dataclass
class BatchResult:
    """How many samples of a batch were accepted, and how many rejected per reason."""

    accepted: int = 0
    rejected: dict[str, int] = field(default_factory=dict)

    def add(self, accepted: int, rejected: dict[str, int]) -> None:
        """Fold one metric's outcome into the batch's."""
        self.accepted += accepted
        for reason, n in rejected.items():
            self.rejected[reason] = self.rejected.get(reason, 0) + n

    def to_dict(self) -> dict[str, Any]:
        """The reply body of an ingestion request."""
        return {
            "accepted": self.accepted,
            "rejected": sum(self.rejected.values()),
            "rejected_by_reason": dict(sorted(self.rejected.items())),
        }


def _unknown(key: object, where: str) -> IngestError:
    known = ", ".join(INGEST_KEYS)
    return IngestError(f"unknown metric {_short(key)}{where}; known metrics: {known}")


def parse_batch(body: Any) -> dict[MetricSpec, list[Any]]:
    """Group a decoded JSON batch by metric, or raise `IngestError` naming what is wrong."""
    if not isinstance(body, dict):
        raise IngestError(
            f"the body must be a JSON object, got a JSON {_json_kind(body)}; "
            'send {"samples": [{"metric": ..., "value": ...}]} or {"latency_ms": [...], ...}'
        )
    if "samples" in body:
        if len(body) != 1:
            extra = sorted(k for k in body if k != "samples")
            raise IngestError(f'a "samples" batch takes no other keys, got {extra}')
        return _parse_rows(body["samples"])
    return _parse_columns(body)


def _parse_rows(rows: Any) -> dict[MetricSpec, list[Any]]:
    if not isinstance(rows, list):
        raise IngestError(f'"samples" must be a JSON array, got a JSON {_json_kind(rows)}')
    grouped: dict[MetricSpec, list[Any]] = {}
    for i, row in enumerate(rows):
        if not isinstance(row, dict) or "metric" not in row or "value" not in row:
            raise IngestError(
                f'samples[{i}] must be an object with "metric" and "value", got {_short(row)}'
            )
        if len(row) != 2:
            extra = sorted(k for k in row if k not in ("metric", "value"))
            raise IngestError(f"samples[{i}] has unexpected keys {extra}")
        key = row["metric"]
        spec = spec_for_ingest_key(key) if isinstance(key, str) else None
        if spec is None:
            raise _unknown(key, f" in samples[{i}]")
        grouped.setdefault(spec, []).append(row["value"])
    return grouped


def _parse_columns(body: dict[str, Any]) -> dict[MetricSpec, list[Any]]:
    grouped: dict[MetricSpec, list[Any]] = {}
    for key, values in body.items():
        spec = spec_for_ingest_key(key)
        if spec is None:
            raise _unknown(key, "")
        if not isinstance(values, list):
            raise IngestError(
                f"{key!r} must map to a JSON array of numbers, got a JSON {_json_kind(values)}"
            )
        grouped[spec] = values
    return grouped


def record_batch(
    monitor: GeometricSpeculationMonitor, grouped: dict[MetricSpec, list[Any]]
) -> BatchResult:
    """Record a parsed batch; returns accepted and rejected counts."""
    result = BatchResult()
    for spec, values in grouped.items():
        if not values:
            continue
        if set(map(type, values)) <= _NUMBER_TYPES:
            result.add(*monitor.record_batch(spec.name, _as_array(values)))
        else:
            result.add(*_record_mixed(monitor, spec, values))
    return result


def _as_array(values: list[float]) -> npt.NDArray[np.float64] | list[float]:
    # JSON numbers only: converted once here, so the monitor checks the array as a whole.
    try:
        return np.asarray(values, dtype=np.float64)
    except OverflowError:
        # An integer beyond float range: the monitor classifies it sample by sample.
        return values


def _record_mixed(
    monitor: GeometricSpeculationMonitor, spec: MetricSpec, values: list[Any]
) -> tuple[int, dict[str, int]]:
    # JSON true/false and strings would pass numpy's conversion; they are bad samples here.
    numbers: list[float] = [v for v in values if v.__class__ in _NUMBER_TYPES]  # type: ignore[misc]
    accepted, rejected = monitor.record_batch(spec.name, numbers) if numbers else (0, {})
    bad = len(values) - len(numbers)
    if bad:
        monitor.count_rejected(spec.name, "invalid_type", bad)
        rejected = {**rejected, "invalid_type": rejected.get("invalid_type", 0) + bad}
    return accepted, rejected


def _json_kind(value: Any) -> str:
    kinds = {dict: "object", list: "array", str: "string", bool: "boolean", type(None): "null"}
    return kinds.get(type(value), "number")


def _short(value: Any) -> str:
    # Never the repr of a container: JSON nests 1024 deep, past Python's recursion limit.
    if isinstance(value, list):
        return f"a JSON array of {len(value)} items"
    if isinstance(value, dict):
        return f"a JSON object with keys {_truncate(repr(list(value)[:5]))}"
    return _truncate(repr(value))


def _truncate(text: str) -> str:
    return text if len(text) <= 60 else text[:57] + "..."
