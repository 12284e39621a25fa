"""Sending JSON-lines telemetry to a running sidecar (`mhc-monitor ingest`)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import httpx
import orjson

from .errors import MonitorError
from .ingest import IngestError, parse_batch

__all__ = ["IngestClient", "IngestReport"]


@dataclass
class IngestReport:
    """What happened to a stream of lines: samples sent, accepted, rejected, lines skipped."""

    sent: int = 0
    accepted: int = 0
    rejected: int = 0
    rejected_by_reason: dict[str, int] = field(default_factory=dict)
    bad_lines: int = 0
    failed: int = 0
    problems: list[str] = field(default_factory=list)

    def rejected_text(self) -> str:
        """Rejections per reason, as "reason: n, ..."."""
        return ", ".join(f"{r}: {n}" for r, n in sorted(self.rejected_by_reason.items()))


class IngestClient:
    """Batches samples from lines and posts them to `POST /v1/samples` as columnar JSON."""

    def __init__(
        self, url: str, *, token: str | None = None, batch_size: int = 10000, timeout: float = 10
    ) -> None:
        if not url.startswith(("http://", "https://")):
            raise MonitorError(f"--url must start with http:// or https://, got {url!r}")
        headers = {"content-type": "application/json"}
        if token:
            headers["authorization"] = f"Bearer {token}"
        self._client = httpx.Client(base_url=url.rstrip("/"), headers=headers, timeout=timeout)
        self._batch_size = batch_size

    def send_lines(self, lines: Iterable[tuple[int, str]]) -> IngestReport:
        """Parse numbered lines, skip (and report) bad ones, send the rest in batches."""
        report = IngestReport()
        pending: dict[str, list[Any]] = {}
        size = 0
        with self._client:
            for number, line in lines:
                if not line.strip():
                    continue
                columns = self._parse_line(number, line, report)
                for key, values in columns.items():
                    pending.setdefault(key, []).extend(values)
                    size += len(values)
                if size >= self._batch_size:
                    self._post(pending, size, report)
                    pending, size = {}, 0
            if size:
                self._post(pending, size, report)
        return report

    def _parse_line(self, number: int, line: str, report: IngestReport) -> dict[str, list[Any]]:
        try:
            decoded = orjson.loads(line)
            if isinstance(decoded, dict) and "metric" in decoded and "samples" not in decoded:
                decoded = {"samples": [decoded]}
            grouped = parse_batch(decoded)
        except orjson.JSONDecodeError as exc:
            return self._bad(number, f"malformed JSON: {exc}", report)
        except IngestError as exc:
            return self._bad(number, str(exc), report)
        return {spec.ingest_key: values for spec, values in grouped.items()}

    @staticmethod
    def _bad(number: int, message: str, report: IngestReport) -> dict[str, list[Any]]:
        report.bad_lines += 1
        report.problems.append(f"line {number}: {message}")
        return {}

    def _post(self, columns: dict[str, list[Any]], size: int, report: IngestReport) -> None:
        report.sent += size
        try:
            response = self._client.post("/v1/samples", content=orjson.dumps(columns))
        except httpx.HTTPError as exc:
            report.failed += size
            report.problems.append(f"could not reach the sidecar: {exc}")
            return
        if response.status_code != 200:
            report.failed += size
            report.problems.append(
                f"sidecar answered {response.status_code}: {_message(response)}"
            )
            return
        body = response.json()
        report.accepted += body["accepted"]
        report.rejected += body["rejected"]
        for reason, n in body["rejected_by_reason"].items():
            report.rejected_by_reason[reason] = report.rejected_by_reason.get(reason, 0) + n


def _message(response: httpx.Response) -> str:
    try:
        return str(response.json()["error"])
    except (ValueError, KeyError, TypeError):
        return response.text[:200]
