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
The literals NaN, Infinity and -Infinity, which Python's `json.dumps` writes,
are such bad samples too, and so is a number beyond the float range (1e400).
A key given twice in the batch object or in a row is refused: JSON parsers
keep only one of them, losing samples without a word.
"""

from __future__ import annotations

import itertools
import json
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt
import orjson

from .errors import UsageError
from .metrics import METRICS, MetricSpec, spec_for_ingest_key
from .monitor import GeometricSpeculationMonitor

__all__ = [
    "INGEST_KEYS",
    "BatchResult",
    "IngestError",
    "MalformedBatch",
    "decode_batch",
    "parse_batch",
    "parse_body",
    "quote",
    "record_batch",
    "shorten",
]

INGEST_KEYS: tuple[str, ...] = tuple(spec.ingest_key for spec in METRICS)
_NUMBER_TYPES = frozenset({float, int})
_NON_FINITE = (b"NaN", b"Infinity")  # -Infinity contains the second
_ORJSON_OVERFLOW = "number is infinity when parsed as double"
_NON_FINITE_NOTE = "NaN, Infinity and -Infinity are accepted, as dropped samples"
_ONCE = "send each key once (nothing was recorded)"


class IngestError(UsageError):
    """A batch that cannot be recorded at all; the message names the problem."""


class MalformedBatch(IngestError):
    """A body that is not JSON at all; the message gives the position of the fault."""


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


def parse_body(raw: bytes) -> dict[MetricSpec, list[Any]]:
    """Decode and group a request body, or raise `IngestError` (`MalformedBatch` if not JSON)."""
    body = decode_batch(raw)
    grouped = parse_batch(body)
    # Only now are the keys known to be few and short, so counting them in `raw` is cheap.
    _refuse_duplicate_keys(raw, body)
    return grouped


def decode_batch(raw: bytes) -> Any:
    """Decode a JSON body; NaN, Infinity and -Infinity literals decode to floats.

    orjson decodes ordinary bodies; only a body it refuses that contains one of
    those literals, or a number beyond the float range (1e400), is decoded again
    by `json`, which takes both: such numbers become infinities, dropped and
    counted like any other infinite sample.
    """
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        overflow = str(exc).startswith(_ORJSON_OVERFLOW)
        if not overflow and not any(literal in raw for literal in _NON_FINITE):
            raise MalformedBatch(f"malformed JSON: {exc}") from exc
    return _decode_non_finite(raw)


def _json_int(digits: str) -> int | float:
    # As orjson reads them: an integer past 64 bits is a float (infinity past the float range;
    # Python would refuse one of over 4300 digits).
    return int(digits) if len(digits) <= 18 else float(digits)


def _decode_non_finite(raw: bytes) -> Any:
    try:
        return json.loads(raw.decode("utf-8"), parse_int=_json_int)
    except RecursionError as exc:
        # Python's recursion limit bounds the depth, a little below orjson's 1024 levels.
        raise MalformedBatch("malformed JSON: depth limit exceeded") from exc
    except json.JSONDecodeError as exc:
        note = f" ({_NON_FINITE_NOTE})" if any(lit in raw for lit in _NON_FINITE) else ""
        raise MalformedBatch(f"malformed JSON: {exc}{note}") from exc
    except ValueError as exc:  # not UTF-8, or an integer of over 4300 digits
        raise MalformedBatch(f"malformed JSON: {shorten(str(exc), 200)}") from exc


def _refuse_duplicate_keys(raw: bytes, body: dict[str, Any]) -> None:
    # Each member of each object has one colon outside strings: with no more colons than
    # the members parsed, none was repeated. Batches of numbers end here.
    rows = body.get("samples")
    members = len(body) + (2 * len(rows) if isinstance(rows, list) else 0)
    if not _more_colons_than(raw, members):
        return
    # A key's quoted name occurs once in the bytes unless it is repeated, written with
    # escapes, or also a string value; only then is the body parsed again to be sure.
    if (
        rows is None
        and b"\\" not in raw
        and all(raw.count(b'"%s"' % k.encode()) == 1 for k in body)
    ):
        return
    pairs = _pairs(raw)
    repeated = _repeated(pairs)
    if repeated is not None:
        raise IngestError(f"duplicate key {quote(repeated)} in the batch object; {_ONCE}")
    for i, row in enumerate(dict(pairs).get("samples", [])):
        repeated = _repeated(row)
        if repeated is not None:
            raise IngestError(f"duplicate key {quote(repeated)} in samples[{i}]; {_ONCE}")


def _pairs(raw: bytes) -> list[tuple[str, Any]]:
    # Every object as its list of (key, value) pairs, repeats included.
    try:
        pairs: list[tuple[str, Any]] = json.loads(raw.decode("utf-8"), object_pairs_hook=list)
    except RecursionError as exc:
        raise MalformedBatch("malformed JSON: depth limit exceeded") from exc
    except ValueError as exc:
        raise MalformedBatch(f"malformed JSON: {shorten(str(exc), 200)}") from exc
    return pairs


def _repeated(pairs: list[tuple[str, Any]]) -> str | None:
    counts = Counter(key for key, _ in pairs)
    return next((key for key, n in counts.items() if n > 1), None)


def _more_colons_than(raw: bytes, n: int) -> bool:
    if n > 32:
        return raw.count(b":") > n
    at = -1
    for _ in range(n + 1):
        at = raw.find(b":", at + 1)  # memchr, several times faster than bytes.count
        if at < 0:
            return False
    return True


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
            raise IngestError(f'a "samples" batch takes no other keys, got {_keys(extra)}')
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
            raise IngestError(f"samples[{i}] has unexpected keys {_keys(extra)}")
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
                f"{quote(key)} must map to a JSON array of numbers, "
                f"got a JSON {_json_kind(values)}"
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
        return f"a JSON object with keys {shorten(_keys(list(itertools.islice(value, 6))), 200)}"
    return quote(value)


def _keys(keys: list[Any]) -> str:
    shown = ", ".join(quote(k) for k in keys[:5])
    return f"[{shown}, ...]" if len(keys) > 5 else f"[{shown}]"


def quote(value: object) -> str:
    """`repr(value)`, cut to 60 characters: an error message never echoes a whole input."""
    if isinstance(value, str) and len(value) > 60:
        value = value[:60]  # the repr of a prefix: never of a whole 3 MB key
    return shorten(repr(value))


def shorten(text: str, limit: int = 60) -> str:
    """`text`, cut to `limit` characters with "..." when longer."""
    return text if len(text) <= limit else text[: limit - 3] + "..."
