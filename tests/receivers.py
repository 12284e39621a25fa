"""Local PagerDuty and Slack receivers that enforce the published contracts, for tests.

Both are real HTTP servers on 127.0.0.1 (a port chosen by the OS), each running
in a background thread, so a client under test talks to them exactly as it
would talk to events.pagerduty.com or hooks.slack.com:

    with PagerDutyReceiver() as pagerduty:
        httpx.post(pagerduty.url, content=body, headers={"Content-Type": "application/json"})
        assert pagerduty.wait_for(lambda r: len(r.accepted()) == 1, timeout=5)

`PagerDutyReceiver` answers POST /v2/enqueue. It validates the body against
the request schema of `/enqueue` in the Events v2 OpenAPI document
(shared/contracts/pagerduty-events-v2.openapi.json, with its $refs resolved) and
against the documented limits that schema lacks: routing key of 32 characters,
summary of at most 1024 characters, dedup_key of at most 255, payload required
for a trigger, dedup_key required for acknowledge and resolve, a body of at
most 512 KB. It answers 202 {"status": "success", "message": "Event processed",
"dedup_key": ...} or 400 {"status": "invalid event", "message": ..., "errors": [...]}.

`SlackReceiver` answers POST /services/... . It requires Content-Type
application/json and a JSON object with `text`, `attachments` or `blocks`;
every displayed string may hold `&`, `<` and `>` only as the entities `&amp;`,
`&lt;`, `&gt;` or inside a Slack link or mention (`<https://...|label>`,
`<@U123>`, `<#C123>`, `<!here>`); text at most 40,000 characters, at most 100
attachments and 50 blocks. It answers 200 "ok" or 400 with Slack's plain-text
error code ("invalid_payload", "no_text", "too_many_attachments"); an unknown
path gets 404 "no_service".

Fault plan, common to both (every call is thread-safe and takes effect for the
next request):

    fail_next(n, status=500)         the next n requests get `status`
    rate_limit_next(n, retry_after=1) the next n requests get 429 with Retry-After
    delay(seconds)                   every answer waits this long (0 switches it off)
    fail_ratio(ratio, seed=0)        that share of requests fails with 500 or 429,
                                     drawn from random.Random(seed): deterministic
    clear_faults()                   back to answering normally
    stop() / start()                 close the port (connections are refused) and
                                     open the same port again

Planned faults form one queue: `fail_next(2)` then `rate_limit_next(1)` answers
500, 500, 429. A planned fault wins over `fail_ratio`. A faulted request is not
validated and not accepted. A delayed request is decided and recorded before the
wait, as a real service may process an event whose answer the client never
reads.

Records: `accepted()` (parsed JSON bodies of accepted events, in arrival order),
`rejected()` (contract violations, with the reasons), `faults()` (injected
failures) and `exchanges()` (all of them). `wait_for(predicate, timeout)` waits,
without polling, until `predicate(receiver)` holds, and returns False once the
timeout has passed; the predicate runs under the receiver's lock, so it should
only read the records. `reset()` forgets records and faults.

The OpenAPI document is read from $MHC_PAGERDUTY_OPENAPI, else from
tests/contracts/, else from $MHC_SHARED_DIR/contracts/ (default ../shared, as in
conftest.py).
"""

from __future__ import annotations

import json
import os
import random
import re
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import jsonschema
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT7

__all__ = [
    "PAGERDUTY_SCHEMA_PATH",
    "Exchange",
    "PagerDutyReceiver",
    "Receiver",
    "SlackReceiver",
    "pagerduty_event_validator",
    "pagerduty_problems",
    "slack_escaping_problems",
    "slack_problems",
]

_SCHEMA_NAME = "pagerduty-events-v2.openapi.json"
_ROOT = Path(__file__).resolve().parent.parent
# TODO: the contract lives beside the repository (shared/contracts); until a copy is
# committed under tests/contracts/, a clone without ../shared needs $MHC_SHARED_DIR.
_SCHEMA_CANDIDATES = (
    _ROOT / "tests" / "contracts" / _SCHEMA_NAME,
    Path(os.environ.get("MHC_SHARED_DIR", _ROOT.parent / "shared")) / "contracts" / _SCHEMA_NAME,
)
#: The Events v2 OpenAPI document: $MHC_PAGERDUTY_OPENAPI, else the first copy found.
PAGERDUTY_SCHEMA_PATH = Path(
    os.environ.get("MHC_PAGERDUTY_OPENAPI")
    or next((p for p in _SCHEMA_CANDIDATES if p.is_file()), _SCHEMA_CANDIDATES[-1])
)
_BODY_MAX = 1024 * 1024


@dataclass(frozen=True)
class Exchange:
    """One request a receiver answered: its outcome ("accepted", "rejected", "fault")."""

    method: str
    path: str
    status: int
    outcome: str
    reasons: tuple[str, ...]
    body: Any
    headers: Mapping[str, str]

    @property
    def reason(self) -> str:
        """The reasons joined into one line ("" when accepted)."""
        return "; ".join(self.reasons)


@dataclass(frozen=True)
class _Answer:
    status: int
    content_type: str
    body: bytes
    headers: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class _Fault:
    status: int
    retry_after: float | None


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    # The default backlog of 5 drops connections of a burst, which then wait a second
    # for the SYN to be sent again.
    request_queue_size = 128

    def __init__(self, address: tuple[str, int], receiver: Receiver) -> None:
        self.receiver = receiver
        super().__init__(address, _Handler)


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def do_POST(self) -> None:
        self._serve("POST")

    def do_GET(self) -> None:
        self._serve("GET")

    def do_PUT(self) -> None:
        self._serve("PUT")

    def _serve(self, method: str) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        receiver = self.server.receiver
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            # TODO: chunked request bodies are refused with 411; a client that streams its
            # body (no Content-Length) cannot be tested against these receivers.
            answer = receiver.refuse(method, self.path, 411, "chunked body without Content-Length")
        elif length > _BODY_MAX:
            # Drained, so that the client reads the answer instead of a connection reset.
            _discard(self.rfile, min(length, 64 * _BODY_MAX))
            answer = receiver.refuse(
                method, self.path, 413, f"body of {length} bytes is too large"
            )
        else:
            raw = self.rfile.read(length)
            headers = {k.lower(): v for k, v in self.headers.items()}
            answer = receiver.handle(method, self.path, headers, raw)
        receiver.pause()
        self.send_response(answer.status)
        self.send_header("Content-Type", answer.content_type)
        self.send_header("Content-Length", str(len(answer.body)))
        for name, value in answer.headers:
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(answer.body)

    def log_message(self, format: str, *args: Any) -> None:
        # Tests read the records, not stderr.
        return


class Receiver:
    """A contract-checking HTTP receiver on 127.0.0.1 with a programmable fault plan.

    Subclasses say which paths exist and how a body is judged; this class owns
    the server thread, the fault plan and the records.
    """

    #: The path clients post to; `url` is the server address plus this path.
    path = "/"

    def __init__(self, *, host: str = "127.0.0.1", port: int = 0) -> None:
        self.host = host
        self._port = port
        self._lock = threading.RLock()
        self._changed = threading.Condition(self._lock)
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()
        self._exchanges: list[Exchange] = []
        self._planned: deque[_Fault] = deque()
        self._delay = 0.0
        self._ratio = 0.0
        self._ratio_rng = random.Random(0)
        self._ratio_statuses: tuple[int, ...] = (500, 429)
        self._ratio_retry_after = 1.0

    # lifecycle -----------------------------------------------------------------

    def start(self) -> Self:
        """Listen (on the same port as before, after a `stop()`); a no-op when running."""
        with self._lock:
            if self._server is not None:
                return self
            server = _Server((self.host, self._port), self)
            self._port = server.server_address[1]
            self._server = server
            self._stopping.clear()
            self._thread = threading.Thread(
                target=server.serve_forever,
                kwargs={"poll_interval": 0.05},
                name=f"{type(self).__name__}:{self._port}",
                daemon=True,
            )
            self._thread.start()
        return self

    def stop(self) -> None:
        """Close the listening socket: new connections are refused until `start()`."""
        with self._lock:
            server, thread = self._server, self._thread
            self._server = self._thread = None
            self._stopping.set()
        if server is not None:
            server.shutdown()
            server.server_close()
        if thread is not None:
            thread.join(timeout=5)

    @property
    def running(self) -> bool:
        """Whether the port is open."""
        with self._lock:
            return self._server is not None

    @property
    def port(self) -> int:
        """The TCP port (chosen by the OS on the first `start()`, kept afterwards)."""
        return self._port

    @property
    def base_url(self) -> str:
        """http://127.0.0.1:<port>, without a path."""
        return f"http://{self.host}:{self._port}"

    @property
    def url(self) -> str:
        """The full URL a client posts to."""
        return self.base_url + self.path

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    # fault plan ----------------------------------------------------------------

    def fail_next(self, n: int, status: int = 500) -> None:
        """Answer the next `n` requests with `status` (after any faults already planned)."""
        with self._lock:
            self._planned.extend(_Fault(status, None) for _ in range(n))

    def rate_limit_next(self, n: int, retry_after: float = 1) -> None:
        """Answer the next `n` requests with 429 and a Retry-After of `retry_after` seconds."""
        with self._lock:
            self._planned.extend(_Fault(429, retry_after) for _ in range(n))

    def delay(self, seconds: float) -> None:
        """Hold every answer for `seconds` (0 switches the delay off); `stop()` cuts it short."""
        with self._lock:
            self._delay = max(0.0, float(seconds))

    def fail_ratio(
        self,
        ratio: float,
        *,
        seed: int = 0,
        statuses: tuple[int, ...] = (500, 429),
        retry_after: float = 1,
    ) -> None:
        """Fail that share of requests with a status drawn from `statuses`, reproducibly.

        Request i fails when the i-th draw of `random.Random(seed)` is below
        `ratio`; its status is the next draw's choice among `statuses`.
        """
        if not 0.0 <= ratio <= 1.0:
            raise ValueError(f"ratio must be in [0, 1], got {ratio}")
        with self._lock:
            self._ratio = ratio
            self._ratio_rng = random.Random(seed)
            self._ratio_statuses = statuses
            self._ratio_retry_after = retry_after

    def clear_faults(self) -> None:
        """Drop planned faults, the delay and the failure ratio."""
        with self._lock:
            self._planned.clear()
            self._delay = 0.0
            self._ratio = 0.0

    def reset(self) -> None:
        """Forget all records and faults."""
        with self._lock:
            self.clear_faults()
            self._exchanges.clear()

    # records -------------------------------------------------------------------

    def exchanges(self) -> list[Exchange]:
        """Every answered request, in arrival order."""
        with self._lock:
            return list(self._exchanges)

    def accepted(self) -> list[Any]:
        """The parsed JSON bodies of accepted requests, in arrival order."""
        return [e.body for e in self.exchanges() if e.outcome == "accepted"]

    def rejected(self) -> list[Exchange]:
        """Requests refused for breaking the contract, with their reasons."""
        return [e for e in self.exchanges() if e.outcome == "rejected"]

    def faults(self) -> list[Exchange]:
        """Requests answered by an injected fault."""
        return [e for e in self.exchanges() if e.outcome == "fault"]

    def wait_for(self, predicate: Callable[[Self], bool], timeout: float = 5.0) -> bool:
        """Wait until `predicate(self)` holds; False once `timeout` seconds have passed."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while not predicate(self):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._changed.wait(remaining)
        return True

    # request handling (called from server threads) ----------------------------

    def handle(self, method: str, path: str, headers: Mapping[str, str], raw: bytes) -> _Answer:
        """Judge one request, record it and return the answer to send."""
        fault = self._next_fault()
        body = _loads(raw)
        if fault is not None:
            answer = self.fault_answer(fault)
            self._record(method, path, answer.status, "fault", (), body, headers)
            return answer
        status, reasons, answer = self.judge(method, path, headers, raw)
        outcome = "accepted" if status < 300 else "rejected"
        self._record(method, path, status, outcome, tuple(reasons), body, headers)
        return answer

    def refuse(self, method: str, path: str, status: int, reason: str) -> _Answer:
        """Record and answer a request refused before its body was read."""
        self._record(method, path, status, "rejected", (reason,), None, {})
        return _Answer(status, "text/plain", reason.encode("utf-8"))

    def pause(self) -> None:
        """Wait out the configured delay, or less when the receiver stops."""
        with self._lock:
            seconds = self._delay
        if seconds > 0:
            self._stopping.wait(seconds)

    def judge(
        self, method: str, path: str, headers: Mapping[str, str], raw: bytes
    ) -> tuple[int, list[str], _Answer]:
        """Status, reasons and answer for a request without an injected fault."""
        raise NotImplementedError

    def fault_answer(self, fault: _Fault) -> _Answer:
        """The answer that carries an injected fault."""
        extra = (
            () if fault.retry_after is None else (("Retry-After", _seconds(fault.retry_after)),)
        )
        return _Answer(fault.status, "text/plain", b"injected fault", extra)

    def _next_fault(self) -> _Fault | None:
        with self._lock:
            if self._planned:
                return self._planned.popleft()
            if self._ratio > 0 and self._ratio_rng.random() < self._ratio:
                status = self._ratio_rng.choice(self._ratio_statuses)
                return _Fault(status, self._ratio_retry_after if status == 429 else None)
            return None

    def _record(
        self,
        method: str,
        path: str,
        status: int,
        outcome: str,
        reasons: tuple[str, ...],
        body: Any,
        headers: Mapping[str, str],
    ) -> None:
        exchange = Exchange(method, path, status, outcome, reasons, body, dict(headers))
        with self._changed:
            self._exchanges.append(exchange)
            self._changed.notify_all()


def _discard(stream: Any, length: int) -> None:
    while length > 0:
        chunk = stream.read(min(length, 65536))
        if not chunk:
            return
        length -= len(chunk)


def _loads(raw: bytes) -> Any:
    try:
        return json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        return None


def _seconds(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)


def _is_json(headers: Mapping[str, str]) -> bool:
    media_type = headers.get("content-type", "").split(";")[0].strip().lower()
    return media_type == "application/json"


# PagerDuty -------------------------------------------------------------------------------

_PD_ROUTING_KEY_LENGTH = 32
_PD_SUMMARY_MAX = 1024
_PD_DEDUP_KEY_MAX = 255
_PD_EVENT_MAX = 512 * 1024
_PD_SCHEMA_POINTER = "#/paths/~1enqueue/post/requestBody/content/application~1json/schema"


def pagerduty_event_validator(path: Path = PAGERDUTY_SCHEMA_PATH) -> jsonschema.Draft7Validator:
    """A validator for the `/enqueue` request body of the Events v2 OpenAPI document.

    OpenAPI 3.0 schemas are a JSON Schema draft 4/7 dialect; draft 7 reads this
    one as written. `date-time` is checked (an aware ISO-8601 time); the
    document's `url` format is not a JSON Schema format and is left alone.
    """
    document = json.loads(path.read_text(encoding="utf-8"))
    uri = "urn:pagerduty:events-v2"
    resource = Resource.from_contents(document, default_specification=DRAFT7)
    registry: Registry[Any] = Registry().with_resource(uri, resource)
    checker = jsonschema.FormatChecker(formats=())
    checker.checks("date-time", raises=ValueError)(_is_aware_datetime)
    return jsonschema.Draft7Validator(
        {"$ref": uri + _PD_SCHEMA_POINTER}, registry=registry, format_checker=checker
    )


def _is_aware_datetime(value: object) -> bool:
    if not isinstance(value, str):
        return True
    return "T" in value and datetime.fromisoformat(value).tzinfo is not None


def pagerduty_problems(event: Any, validator: jsonschema.Draft7Validator) -> list[str]:
    """Every way `event` breaks the Events v2 schema or its documented limits ([] when valid)."""
    problems = [_schema_problem(error) for error in _sorted_errors(validator, event)]
    if not isinstance(event, dict):
        return problems
    key = event.get("routing_key")
    if isinstance(key, str) and len(key) != _PD_ROUTING_KEY_LENGTH:
        problems.append("Length of 'routing_key' is incorrect (should be 32 characters)")
    dedup_key = event.get("dedup_key")
    if isinstance(dedup_key, str) and len(dedup_key) > _PD_DEDUP_KEY_MAX:
        problems.append(f"'dedup_key' is longer than {_PD_DEDUP_KEY_MAX} characters")
    action = event.get("event_action")
    if action in ("acknowledge", "resolve") and not dedup_key:
        problems.append(f"'dedup_key' is required for event_action {action}")
    if action == "trigger":
        problems.extend(_trigger_problems(event.get("payload")))
    return problems


def _sorted_errors(validator: jsonschema.Draft7Validator, event: Any) -> Iterator[Any]:
    return iter(sorted(validator.iter_errors(event), key=lambda e: list(e.absolute_path)))


def _schema_problem(error: Any) -> str:
    where = ".".join(str(p) for p in error.absolute_path) or "event"
    return f"'{where}': {error.message}"


def _trigger_problems(payload: Any) -> list[str]:
    if payload is None:
        return ["'payload' is required for event_action trigger"]
    if not isinstance(payload, dict):
        return []
    problems = []
    summary = payload.get("summary")
    if isinstance(summary, str):
        if not summary.strip():
            problems.append("'payload.summary' is missing or blank")
        elif len(summary) > _PD_SUMMARY_MAX:
            problems.append(
                f"'payload.summary' has {len(summary)} characters, at most {_PD_SUMMARY_MAX}"
            )
    source = payload.get("source")
    if isinstance(source, str) and not source.strip():
        problems.append("'payload.source' is missing or blank")
    return problems


class PagerDutyReceiver(Receiver):
    """The PagerDuty Events API v2 (POST /v2/enqueue), checked against its OpenAPI schema."""

    path = "/v2/enqueue"

    def __init__(self, *, host: str = "127.0.0.1", port: int = 0) -> None:
        super().__init__(host=host, port=port)
        self._validator = pagerduty_event_validator()

    def judge(
        self, method: str, path: str, headers: Mapping[str, str], raw: bytes
    ) -> tuple[int, list[str], _Answer]:
        """202 for a valid event, 400 with the reasons otherwise, 404/405 off the endpoint."""
        if path.split("?")[0] != self.path:
            return 404, [f"no endpoint {path}"], _json_answer(404, {"status": "not found"})
        if method != "POST":
            reason = f"method {method} not allowed"
            return 405, [reason], _json_answer(405, {"status": "method not allowed"})
        if not _is_json(headers):
            return self._invalid(["Content-Type must be application/json"])
        if len(raw) > _PD_EVENT_MAX:
            return self._invalid([f"event is larger than {_PD_EVENT_MAX} bytes"])
        event = _loads(raw)
        if event is None:
            reasons = ["JSON parse error"]
            body = {
                "status": "Unrecognized object",
                "message": "Event object format is unrecognized",
                "errors": reasons,
            }
            return 400, reasons, _json_answer(400, body)
        problems = pagerduty_problems(event, self._validator)
        if problems:
            return self._invalid(problems)
        dedup_key = event.get("dedup_key") or uuid.uuid4().hex
        body = {"status": "success", "message": "Event processed", "dedup_key": dedup_key}
        return 202, [], _json_answer(202, body)

    def fault_answer(self, fault: _Fault) -> _Answer:
        """A JSON error body, as the Events API sends with 429 and 5xx."""
        answer = super().fault_answer(fault)
        body = {"status": "error", "message": f"injected fault {fault.status}"}
        return _Answer(fault.status, "application/json", json.dumps(body).encode(), answer.headers)

    @staticmethod
    def _invalid(reasons: list[str]) -> tuple[int, list[str], _Answer]:
        body = {"status": "invalid event", "message": "Event object is invalid", "errors": reasons}
        return 400, reasons, _json_answer(400, body)


def _json_answer(status: int, body: Mapping[str, Any]) -> _Answer:
    return _Answer(status, "application/json", json.dumps(body).encode("utf-8"))


# Slack -----------------------------------------------------------------------------------

_SLACK_TEXT_MAX = 40_000
_SLACK_ATTACHMENTS_MAX = 100
_SLACK_BLOCKS_MAX = 50
# A link or mention is the one place `<` and `>` stand raw; its label is display text.
_SLACK_LINK = re.compile(r"<(?:https?://|mailto:|[@#!])[^<>\s|]*(?:\|(?P<label>[^<>]*))?>")
_SLACK_ENTITY = re.compile(r"&(?:amp|lt|gt);")
_SLACK_CONTROL = re.compile(r"[&<>]")
_ATTACHMENT_TEXT_KEYS = ("fallback", "pretext", "title", "text", "footer", "author_name")


def slack_escaping_problems(text: str, where: str) -> list[str]:
    """The raw `&`, `<`, `>` in `text` that are neither an entity nor a link or mention."""
    labels_only = _SLACK_LINK.sub(lambda m: m.group("label") or "", text)
    stripped = _SLACK_ENTITY.sub("", labels_only)
    found = sorted(set(_SLACK_CONTROL.findall(stripped)))
    if not found:
        return []
    return [f"{where} has unescaped {' '.join(repr(c) for c in found)}"]


def slack_problems(message: Any) -> tuple[str, list[str]]:
    """Slack's error code and every reason `message` breaks the webhook contract."""
    if not isinstance(message, dict):
        return "invalid_payload", ["body is not a JSON object"]
    text, attachments, blocks = (message.get(k) for k in ("text", "attachments", "blocks"))
    if not (text or attachments or blocks):
        return "no_text", ["no text, attachments or blocks"]
    if isinstance(attachments, list) and len(attachments) > _SLACK_ATTACHMENTS_MAX:
        count = len(attachments)
        return "too_many_attachments", [f"{count} attachments, at most {_SLACK_ATTACHMENTS_MAX}"]

    problems: list[str] = []
    if text is not None:
        problems.extend(_slack_text_problems(text, "text", _SLACK_TEXT_MAX))
    if attachments is not None:
        problems.extend(_attachments_problems(attachments))
    if blocks is not None:
        problems.extend(_blocks_problems(blocks))
    channel = message.get("channel")
    if channel is not None and not (isinstance(channel, str) and channel.strip()):
        problems.append("channel must be a non-empty string")
    return ("invalid_payload" if problems else "ok"), problems


def _slack_text_problems(value: Any, where: str, limit: int) -> list[str]:
    if not isinstance(value, str):
        return [f"{where} must be a string"]
    problems = slack_escaping_problems(value, where)
    if len(value) > limit:
        problems.append(f"{where} has {len(value)} characters, at most {limit}")
    return problems


def _attachments_problems(attachments: Any) -> list[str]:
    if not isinstance(attachments, list):
        return ["attachments must be a list"]
    problems: list[str] = []
    for i, attachment in enumerate(attachments):
        where = f"attachments[{i}]"
        if not isinstance(attachment, dict):
            problems.append(f"{where} must be an object")
            continue
        for key in _ATTACHMENT_TEXT_KEYS:
            if key in attachment:
                problems.extend(
                    _slack_text_problems(attachment[key], f"{where}.{key}", _SLACK_TEXT_MAX)
                )
        if "footer" in attachment and len(str(attachment["footer"])) > 300:
            problems.append(f"{where}.footer is longer than 300 characters")
        problems.extend(_fields_problems(attachment.get("fields", []), where))
    return problems


def _fields_problems(fields: Any, where: str) -> list[str]:
    if not isinstance(fields, list):
        return [f"{where}.fields must be a list"]
    problems: list[str] = []
    for j, field in enumerate(fields):
        if not isinstance(field, dict):
            problems.append(f"{where}.fields[{j}] must be an object")
            continue
        for key in ("title", "value"):
            if key in field:
                name = f"{where}.fields[{j}].{key}"
                problems.extend(_slack_text_problems(field[key], name, _SLACK_TEXT_MAX))
    return problems


def _blocks_problems(blocks: Any) -> list[str]:
    if not isinstance(blocks, list):
        return ["blocks must be a list"]
    if len(blocks) > _SLACK_BLOCKS_MAX:
        return [f"{len(blocks)} blocks, at most {_SLACK_BLOCKS_MAX}"]
    problems: list[str] = []
    for where, text in _block_texts(blocks, "blocks"):
        problems.extend(_slack_text_problems(text, where, _SLACK_TEXT_MAX))
    return problems


def _block_texts(node: Any, where: str) -> Iterator[tuple[str, Any]]:
    if isinstance(node, list):
        for i, item in enumerate(node):
            yield from _block_texts(item, f"{where}[{i}]")
    elif isinstance(node, dict):
        for key, value in node.items():
            if key == "text" and not isinstance(value, dict | list):
                yield f"{where}.text", value
            else:
                yield from _block_texts(value, f"{where}.{key}")


class SlackReceiver(Receiver):
    """A Slack incoming webhook (POST /services/...), checked for escaping and limits."""

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        webhook_path: str = "/services/T00000000/B00000000/XXXXXXXXXXXXXXXXXXXXXXXX",
    ) -> None:
        if not webhook_path.startswith("/services/"):
            raise ValueError("a Slack webhook path starts with /services/")
        super().__init__(host=host, port=port)
        self.path = webhook_path

    def judge(
        self, method: str, path: str, headers: Mapping[str, str], raw: bytes
    ) -> tuple[int, list[str], _Answer]:
        """200 "ok" for a valid message, 400 with Slack's error code otherwise."""
        if not path.startswith("/services/"):
            return 404, [f"no webhook at {path}"], _text_answer(404, "no_service")
        if method != "POST":
            return 405, [f"method {method} not allowed"], _text_answer(405, "invalid_method")
        if not _is_json(headers):
            return (
                400,
                ["Content-Type must be application/json"],
                _text_answer(400, "invalid_payload"),
            )
        message = _loads(raw)
        if message is None:
            return 400, ["body is not JSON"], _text_answer(400, "invalid_payload")
        code, problems = slack_problems(message)
        if problems:
            return 400, problems, _text_answer(400, code)
        return 200, [], _text_answer(200, "ok")

    def fault_answer(self, fault: _Fault) -> _Answer:
        """Slack's plain-text answers: "rate_limited" with 429, a server error otherwise."""
        answer = super().fault_answer(fault)
        text = "rate_limited" if fault.status == 429 else "internal_error"
        return _Answer(fault.status, "text/plain", text.encode(), answer.headers)


def _text_answer(status: int, text: str) -> _Answer:
    return _Answer(status, "text/plain; charset=utf-8", text.encode("utf-8"))
