"""Sending JSON-lines telemetry to a running sidecar (`mhc-monitor ingest`).

Input is read as bytes and decoded line by line, so a line that is not UTF-8,
not JSON or not a sample batch is reported and skipped while the others go.
Samples are held until they reach `batch_size` or the oldest held line is
`flush_interval` seconds old, also while the input is idle (`tail -F`); a
line of more than `batch_size` samples goes in pieces of that size. When a
stop is asked for, what is held, and what a pipe already holds, is sent first.

Every POST is classified:

    delivered              200; the sidecar counted each sample accepted or rejected
    retryable              408, 429, 5xx, no connection: tried again, then not delivered
    no answer              a timeout or a broken connection once the batch was sent:
                           not delivered, and not tried again, which could double it
    refused for content    400, 413, 422: the batch is split until the lines the
                           sidecar refuses are named; the other lines are delivered
    refused for the stream 401, 403 and any other 4xx: nothing more is sent or read
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import select
import stat
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import IO, Any

import httpx
import orjson

from .errors import UsageError
from .ingest import IngestError, decode_batch, parse_batch

__all__ = ["IngestClient", "IngestReport"]

logger = logging.getLogger(__name__)

_CHUNK_BYTES = 1 << 16
#: Most bytes read from a pipe after a stop, so a writer that keeps writing cannot hold it.
_DRAIN_BYTES = 16 << 20
#: Longest line held: the sidecar's default body limit, so a longer one could not go.
_LINE_BYTES_MAX = 16 << 20
#: Longest wait for input before the flush deadline and the stop request are looked at again.
_POLL_S = 0.1
#: Pauses before the second and third try of a retryable POST.
_RETRY_DELAYS_S = (0.25, 1.0)
_CONTENT_STATUSES = frozenset({400, 413, 422})
_RETRY_STATUSES = frozenset({408, 429})
#: Failures before the request was sent, so trying again cannot record a sample twice.
_UNSENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)


@dataclass
class IngestReport:
    """What happened to a stream of lines, counted in samples (bad lines in lines).

    `delivered` samples reached the sidecar, which counted each one `accepted` or
    `rejected` (a bad value); `not_delivered` samples did not reach it, per reason.
    `unread_from` is the first line not read when a refusal stopped the stream;
    `stopped_after` the last line read when a stop was asked for.
    """

    delivered: int = 0
    accepted: int = 0
    rejected: int = 0
    rejected_by_reason: dict[str, int] = field(default_factory=dict)
    bad_lines: int = 0
    not_delivered: int = 0
    not_delivered_by_reason: dict[str, int] = field(default_factory=dict)
    unread_from: int | None = None
    stopped_after: int | None = None

    @property
    def complete(self) -> bool:
        """Whether every line was read, was good, and reached the sidecar."""
        return not (self.bad_lines or self.not_delivered or self.unread_from)

    def rejected_text(self) -> str:
        """Rejections per reason, as "reason: n, ..."."""
        return ", ".join(f"{r}: {n}" for r, n in sorted(self.rejected_by_reason.items()))


@dataclass(frozen=True)
class _Options:
    url: str
    batch_size: int
    flush_interval: float
    has_token: bool
    token_hint: str
    on_problem: Callable[[str], None]


@dataclass(frozen=True)
class _Line:
    number: int
    columns: dict[str, list[Any]]
    size: int


class _StreamRefused(Exception):
    """The sidecar refuses every batch of this stream (authentication, wrong endpoint)."""


class IngestClient:
    """Batches samples from JSON lines and posts them to `POST /v1/samples` as columnar JSON.

    `token` is sent as a bearer token; `token_hint` says how a user supplies one and
    goes into the message when the sidecar asks for it. Problems (bad lines, refused
    lines, an unreachable sidecar) go to `on_problem` as they happen, a repeated
    delivery failure once until it changes; without `on_problem` they are logged.
    """

    def __init__(
        self,
        url: str,
        *,
        token: str | None = None,
        batch_size: int = 10000,
        flush_interval: float = 1.0,
        timeout: float = 10,
        token_hint: str = "",
        on_problem: Callable[[str], None] | None = None,
    ) -> None:
        if not url.startswith(("http://", "https://")):
            raise UsageError(f"--url must start with http:// or https://, got {url!r}")
        if batch_size < 1 or flush_interval < 0:
            raise UsageError(
                f"batch_size must be >= 1 and flush_interval >= 0, "
                f"got {batch_size} and {flush_interval}"
            )
        headers = {"content-type": "application/json"}
        if token:
            headers["authorization"] = f"Bearer {token}"
        base_url = url.rstrip("/")
        self._client = httpx.Client(base_url=base_url, headers=headers, timeout=timeout)
        self._options = _Options(
            url=base_url,
            batch_size=batch_size,
            flush_interval=flush_interval,
            has_token=bool(token),
            token_hint=token_hint,
            on_problem=on_problem or logger.warning,
        )

    def send_stream(
        self, source: IO[bytes], *, stop: threading.Event | None = None
    ) -> IngestReport:
        """Send the JSON lines of `source` until its end, or until `stop` is set.

        Either way what is held is sent before returning. A stream with a file
        descriptor is polled, so batches go out on time while it is idle; any other
        (an in-memory buffer) is read straight through. The client is closed after.
        """
        stop = stop or threading.Event()
        with self._client:
            run = _Run(self._options, self._post, stop)
            run.read(_chunks(source, stop))
        return run.report

    def _post(self, columns: dict[str, list[Any]]) -> httpx.Response:
        return self._client.post("/v1/samples", content=_encode(columns))


def _encode(columns: dict[str, list[Any]]) -> bytes:
    """The batch as JSON; NaN and infinities as the literals the sidecar counts by reason.

    orjson writes them as null, which the sidecar could only count as of the wrong type.
    """
    body = orjson.dumps(columns)
    if b"null" not in body:
        return body
    return json.dumps(columns, separators=(",", ":")).encode()


def _pieces(line: _Line, most: int) -> Iterator[_Line]:
    """`line` cut into pieces of at most `most` samples, so a long line fits in requests."""
    if line.size <= most:
        yield line
        return
    piece: dict[str, list[Any]] = {}
    room = most
    for key, values in line.columns.items():
        start = 0
        while start < len(values):
            taken = values[start : start + room]
            piece.setdefault(key, []).extend(taken)
            start += len(taken)
            room -= len(taken)
            if room == 0:
                yield _Line(line.number, piece, most)
                piece, room = {}, most
    if piece:
        yield _Line(line.number, piece, most - room)


class _Run:
    """One stream's state: held lines, the report, the last delivery failure told."""

    def __init__(
        self,
        options: _Options,
        post: Callable[[dict[str, list[Any]]], httpx.Response],
        stop: threading.Event,
    ) -> None:
        self.options = options
        self.post_columns = post
        self.stop = stop
        self.report = IngestReport()
        self.held: list[_Line] = []
        self.held_size = 0
        self.oldest = 0.0
        self.last_failure: str | None = None
        self.number = 0

    def read(self, chunks: Iterator[bytes | None]) -> None:
        """Cut chunks into lines and send them; a None chunk means the input is idle."""
        try:
            rest = self.cut(chunks)
        except _StreamRefused:
            self.report.unread_from = self.number + 1
            return
        with contextlib.suppress(_StreamRefused):
            if self.stop.is_set():
                # A last line without its end is not all there yet: it stays unread.
                self.report.stopped_after = self.number
            elif rest:
                self.number += 1
                self.add(self.number, rest)
            self.flush()

    def cut(self, chunks: Iterator[bytes | None]) -> bytes:
        """Add every whole line of `chunks`; the bytes after the last end of line."""
        rest = b""
        too_long = False
        for chunk in chunks:
            if chunk:
                *lines, rest = (rest + chunk).split(b"\n")
                for raw in lines:
                    self.number += 1
                    if too_long:  # the end of a line already told and skipped
                        too_long = False
                        continue
                    self.add(self.number, raw)
                if len(rest) > _LINE_BYTES_MAX and not too_long:
                    self.bad(self.number + 1, f"longer than {_LINE_BYTES_MAX} bytes, skipped")
                    too_long = True
                if too_long:
                    rest = b""
            self.flush_if_due()
        return rest

    def add(self, number: int, raw: bytes) -> None:
        """Parse one line and hold its samples; a bad line is told and counted."""
        line = self.parse(number, raw)
        if line is None or not line.size:
            return
        for piece in _pieces(line, self.options.batch_size):
            if not self.held:
                self.oldest = time.monotonic()
            self.held.append(piece)
            self.held_size += piece.size
            if self.held_size >= self.options.batch_size:
                self.flush()

    def parse(self, number: int, raw: bytes) -> _Line | None:
        try:
            # A byte-order mark some editors write is not part of the first line.
            text = raw.decode("utf-8-sig" if number == 1 else "utf-8")
        except UnicodeDecodeError:
            self.bad(number, "not UTF-8 text")
            return None
        if not text.strip():
            return None
        try:
            decoded = decode_batch(text.encode())
            if isinstance(decoded, dict) and "metric" in decoded and "samples" not in decoded:
                decoded = {"samples": [decoded]}
            grouped = parse_batch(decoded)
        except IngestError as exc:
            self.bad(number, str(exc))
            return None
        columns = {spec.ingest_key: values for spec, values in grouped.items()}
        return _Line(number, columns, sum(map(len, columns.values())))

    def bad(self, number: int, message: str) -> None:
        self.report.bad_lines += 1
        self.options.on_problem(f"line {number}: {message}")

    def flush_if_due(self) -> None:
        if self.held and time.monotonic() - self.oldest >= self.options.flush_interval:
            self.flush()

    def flush(self) -> None:
        """Send what is held as one batch."""
        lines, self.held, self.held_size = self.held, [], 0
        if lines:
            self.send(lines)

    def send(self, lines: list[_Line]) -> None:
        """Post `lines` as one batch; split it while the sidecar refuses its content."""
        size = sum(line.size for line in lines)
        response = self.post(lines, size)
        if response is None:
            return
        status = response.status_code
        if status == 200:
            self.delivered(response, size)
        elif status in _CONTENT_STATUSES and len(lines) > 1:
            half = len(lines) // 2
            self.send(lines[:half])
            self.send(lines[half:])
        elif status in _CONTENT_STATUSES:
            self.options.on_problem(
                f"line {lines[0].number}: the sidecar refused it ({status}): {_message(response)}"
            )
            self.lost(size, f"the sidecar refused their lines ({status}), named above")
        else:
            self.fail(f"the sidecar answered {status}: {_message(response)}")
            self.lost(size, self.refusal(status))
            raise _StreamRefused

    def post(self, lines: list[_Line], size: int) -> httpx.Response | None:
        """The sidecar's final answer to one batch; None when it was not delivered."""
        columns: dict[str, list[Any]] = {}
        for line in lines:
            for key, values in line.columns.items():
                columns.setdefault(key, []).extend(values)
        for delay in (*_RETRY_DELAYS_S, None):
            try:
                response = self.post_columns(columns)
            except _UNSENT as exc:
                failure = f"could not reach the sidecar at {self.options.url}: {_describe(exc)}"
            except httpx.HTTPError as exc:
                # The batch went out: trying again could record its samples twice.
                failure = (
                    f"no answer from the sidecar at {self.options.url} ({_describe(exc)}); "
                    "its samples may have been recorded"
                )
                delay = None
            else:
                if not _retryable(response.status_code):
                    return response
                failure = f"the sidecar answered {response.status_code}: {_message(response)}"
            if delay is None or self.stop.wait(delay):
                break
        self.fail(failure)
        self.lost(size, failure)
        return None

    def delivered(self, response: httpx.Response, size: int) -> None:
        try:
            body = response.json()
            accepted, rejected = int(body["accepted"]), int(body["rejected"])
            by_reason = {str(r): int(n) for r, n in body["rejected_by_reason"].items()}
        except (ValueError, KeyError, TypeError, AttributeError):
            self.fail(f"the sidecar's 200 answer is not an ingestion reply: {response.text[:80]}")
            self.lost(size, "the answer was not a sidecar's (is --url the sidecar?)")
            return
        if self.last_failure is not None:
            self.options.on_problem("the sidecar takes samples again")
            self.last_failure = None
        report = self.report
        report.delivered += size
        report.accepted += accepted
        report.rejected += rejected
        for reason, n in by_reason.items():
            report.rejected_by_reason[reason] = report.rejected_by_reason.get(reason, 0) + n

    def fail(self, failure: str) -> None:
        if failure != self.last_failure:
            self.options.on_problem(failure)
            self.last_failure = failure

    def lost(self, size: int, reason: str) -> None:
        report = self.report
        report.not_delivered += size
        report.not_delivered_by_reason[reason] = (
            report.not_delivered_by_reason.get(reason, 0) + size
        )

    def refusal(self, status: int) -> str:
        if status == 401 and not self.options.has_token:
            text = "the sidecar requires a bearer token"
        elif status in (401, 403):
            text = "the sidecar refused the bearer token"
        else:
            return f"the sidecar refused the stream ({status}): is --url the sidecar?"
        return f"{text} ({self.options.token_hint})" if self.options.token_hint else text


def _chunks(source: IO[bytes], stop: threading.Event) -> Iterator[bytes | None]:
    """The bytes of `source` as they come; None whenever nothing came for a while."""
    try:
        fd = source.fileno()
    except (AttributeError, OSError, ValueError):
        # No file descriptor (an in-memory buffer): nothing to wait for.
        while not stop.is_set() and (chunk := source.read(_CHUNK_BYTES)):
            yield chunk
        return
    while not stop.is_set():
        # TODO: select() takes no pipes on Windows, where ingest cannot read stdin yet.
        ready, _, _ = select.select([fd], [], [], _POLL_S)
        if not ready:
            yield None
            continue
        chunk = os.read(fd, _CHUNK_BYTES)
        if not chunk:
            return
        yield chunk
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        yield from _written_before_stop(fd)


def _written_before_stop(fd: int) -> Iterator[bytes]:
    # What a pipe already holds at a stop was written to be sent (`tail -F | ingest`,
    # Ctrl-C stopping both); a file's rest was not, so only pipes and the like are drained.
    drained = 0
    while drained < _DRAIN_BYTES and select.select([fd], [], [], 0)[0]:
        chunk = os.read(fd, _CHUNK_BYTES)
        if not chunk:
            return
        drained += len(chunk)
        yield chunk


def _retryable(status: int) -> bool:
    return status in _RETRY_STATUSES or status >= 500


def _describe(exc: httpx.HTTPError) -> str:
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _message(response: httpx.Response) -> str:
    try:
        return str(response.json()["error"])
    except (ValueError, KeyError, TypeError):
        return response.text[:200]
