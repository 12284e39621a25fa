"""`mhc-monitor ingest` against a real sidecar on loopback.

`ingest` always runs as a subprocess, fed through a pipe or a file. The sidecar
runs on uvicorn in this process (`tests/sidecar.py`), so a test can read what it
recorded; one test runs `mhc-monitor serve` as a subprocess, as the README does.
Sidecars that refuse (an older version, an overloaded one) are the real app
behind a small ASGI wrapper that answers some requests itself.
"""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from conftest import free_port
from mhc_monitor import GeometricSpeculationMonitor
from mhc_monitor.service import create_app
from sidecar import running

TOKEN = "ingest-test-token"
ASKS_FOR_TOKEN = (
    "the sidecar answered 401: a valid bearer token is required (Authorization: Bearer ...)\n"
)


def ingest_env(**extra: str) -> dict[str, str]:
    """The test's environment without an ingest token, plus `extra`."""
    env = {k: v for k, v in os.environ.items() if k != "MHC_INGEST_TOKEN"}
    return {**env, **extra}


def run_ingest(
    url: str, data: bytes, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """`mhc-monitor ingest - --url URL ARGS` reading `data`, to completion."""
    done = subprocess.run(
        [sys.executable, "-m", "mhc_monitor", "ingest", "-", "--url", url, *args],
        input=data,
        env=env or ingest_env(),
        capture_output=True,
        timeout=60,
    )
    return subprocess.CompletedProcess(
        done.args, done.returncode, done.stdout.decode(), done.stderr.decode()
    )


class Ingest:
    """`mhc-monitor ingest -` fed through a pipe held open; its stderr read as it comes."""

    def __init__(self, url: str, *args: str, env: dict[str, str] | None = None) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "mhc_monitor", "ingest", "-", "--url", url, *args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env or ingest_env(),
        )
        self._stderr: queue.Queue[str | None] = queue.Queue()
        self._reader = threading.Thread(target=self._read_stderr, daemon=True)
        self._reader.start()

    def _read_stderr(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self._stderr.put(line.decode())
        self._stderr.put(None)

    def write(self, data: bytes) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(data)
        self.proc.stdin.flush()

    def stderr_line(self, timeout: float = 10) -> str | None:
        """The next line ingest writes to stderr; fails after `timeout` seconds."""
        return self._stderr.get(timeout=timeout)

    def finish(self, sig: int | None = None) -> tuple[int, str, str]:
        """Send `sig` (else close stdin); exit code, stdout and the rest of stderr."""
        assert self.proc.stdin is not None and self.proc.stdout is not None
        if sig is None:
            self.proc.stdin.close()
        else:
            self.proc.send_signal(sig)
        try:
            out = self.proc.stdout.read()
            code = self.proc.wait(timeout=20)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
            self.proc.wait(timeout=10)
        self._reader.join(timeout=10)
        rest = []
        while (line := self._stderr.get(timeout=5)) is not None:
            rest.append(line)
        if sig is not None:
            self.proc.stdin.close()
        return code, out.decode(), "".join(rest)


def wait_until(check: Callable[[], Any], *, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while not (result := check()):
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} within {timeout} s")
        time.sleep(0.02)
    return result


def new_monitor() -> GeometricSpeculationMonitor:
    return GeometricSpeculationMonitor(labels={"model": "m", "instance": "ingest-test"})


def lines(*objects: Any) -> bytes:
    return b"".join(json.dumps(o).encode() + b"\n" for o in objects)


def latencies(*values: float) -> bytes:
    return lines(*({"metric": "latency_ms", "value": v} for v in values))


@contextmanager
def sidecar(
    monitor: GeometricSpeculationMonitor, wrap: Callable[[Any], Any] = lambda app: app, **kw: Any
) -> Iterator[str]:
    with running(wrap(create_app(monitor, **kw))) as url:
        yield url


class Answering:
    """The sidecar app behind a wrapper that answers a request itself when `answer` says.

    `answer(n, body)` gets the request's number (from 1) and body; it returns None to
    pass the request on, else the status and error message to answer with.
    """

    def __init__(self, app: Any, answer: Callable[[int, bytes], tuple[int, str] | None]) -> None:
        self.app = app
        self.answer = answer
        self.requests = 0

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["path"] != "/v1/samples":
            await self.app(scope, receive, send)
            return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        self.requests += 1
        answer = self.answer(self.requests, body)
        if answer is None:
            sent = False

            async def replay() -> dict[str, Any]:
                nonlocal sent
                if sent:
                    later: dict[str, Any] = await receive()
                    return later
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}

            await self.app(scope, replay, send)
            return
        status, error = answer
        payload = json.dumps({"error": error}).encode()
        headers = [(b"content-type", b"application/json")]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": payload})


# --- B1: a batch goes out on time while the input is idle, and at a stop --------------


def test_tail_into_ingest_reaches_a_served_sidecar_while_the_pipe_stays_open(
    tmp_path: Path,
) -> None:
    port = free_port()
    serve = subprocess.Popen(
        [sys.executable, "-m", "mhc_monitor", "serve", "--port", str(port), "--store", ":memory:"],
        env=ingest_env(MHC_INGEST_TOKEN=TOKEN),
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"

    def taken() -> int:
        summary = httpx.get(f"{url}/v1/summary", timeout=2).json()
        return int(summary["samples_accepted_over_http"])

    def up() -> bool:
        assert serve.poll() is None, f"serve exited with {serve.returncode}"
        try:
            return httpx.get(f"{url}/healthz", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    try:
        wait_until(up, timeout=20, what="the sidecar did not answer")
        ingest = Ingest(url, "--flush-interval", "0.2", env=ingest_env(MHC_INGEST_TOKEN=TOKEN))
        ingest.write(lines({"latency_ms": [12.5, 13.0]}, {"acceptance": [0.8]}))
        wait_until(lambda: taken() == 3, timeout=10, what="3 samples did not arrive")
        assert ingest.proc.poll() is None

        ingest.write(b'{"latency_ms": [1\n')
        assert ingest.stderr_line() == (
            "line 3: malformed JSON: unexpected end of data: line 1 column 18 (char 17)\n"
        )
        ingest.write(latencies(14.0))
        wait_until(lambda: taken() == 4, timeout=10, what="the 4th sample did not arrive")
        code, out, err = ingest.finish(signal.SIGINT)
    finally:
        serve.terminate()
        serve.wait(timeout=20)

    assert (code, out, err) == (
        1,
        "delivered 4 samples: 4 accepted, 0 rejected; 1 bad line skipped\n",
        "stopped after line 4\n",
    )


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
@pytest.mark.parametrize(
    ("tail", "out", "err", "recorded"),
    [
        (
            latencies(3.0),
            "delivered 3 samples: 3 accepted, 0 rejected\n",
            "stopped after line 3\n",
            [1.0, 2.0, 3.0],
        ),
        # A line still without its end at the stop is not all there: it is not read.
        (
            b'{"latency_ms": [3.0',
            "delivered 2 samples: 2 accepted, 0 rejected\n",
            "stopped after line 2\n",
            [1.0, 2.0],
        ),
    ],
    ids=["whole-line", "cut-line"],
)
def test_a_stop_sends_what_is_held_and_exits_0(
    sig: int, tail: bytes, out: str, err: str, recorded: list[float]
) -> None:
    monitor = new_monitor()
    with sidecar(monitor) as url:
        ingest = Ingest(url, "--batch-size", "2", "--flush-interval", "600")
        ingest.write(latencies(1.0, 2.0))
        # A full batch arrived, so ingest is reading: the next samples are held.
        wait_until(
            lambda: monitor.window_values("latency") == [1.0, 2.0],
            timeout=10,
            what="the first batch did not arrive",
        )
        ingest.write(tail)

        assert ingest.finish(sig) == (0, out, err)
        assert monitor.window_values("latency") == recorded


def test_a_stop_with_the_sidecar_gone_says_what_was_not_delivered() -> None:
    monitor = new_monitor()
    with sidecar(monitor) as url:
        ingest = Ingest(url, "--batch-size", "2", "--flush-interval", "600")
        ingest.write(latencies(1.0, 2.0))
        wait_until(
            lambda: monitor.window_values("latency") == [1.0, 2.0],
            timeout=10,
            what="the first batch did not arrive",
        )
    ingest.write(latencies(3.0))
    code, out, err = ingest.finish(signal.SIGTERM)

    gone = f"could not reach the sidecar at {url}: ConnectError: [Errno 111] Connection refused"
    assert (code, out, err) == (
        1,
        "delivered 2 samples: 2 accepted, 0 rejected\n",
        f"{gone}\n1 sample not delivered: {gone}\nstopped after line 3\n",
    )


def test_end_of_input_sends_a_batch_smaller_than_batch_size() -> None:
    monitor = new_monitor()
    with sidecar(monitor) as url:
        done = run_ingest(
            url, latencies(5.0, 6.0) + b'{"latency_ms": [7.0]}', "--flush-interval", "600"
        )

    assert (done.returncode, done.stdout, done.stderr) == (
        0,
        "delivered 3 samples: 3 accepted, 0 rejected\n",
        "",
    )
    assert monitor.window_values("latency") == [5.0, 6.0, 7.0]


def test_non_finite_and_overflowing_samples_are_counted_by_reason() -> None:
    monitor = new_monitor()
    data = b'{"latency_ms": [1e400, NaN, -Infinity, 7.0, null]}\n' + latencies(8.0)
    with sidecar(monitor) as url:
        done = run_ingest(url, data)

    assert (done.returncode, done.stdout, done.stderr) == (
        0,
        "delivered 6 samples: 2 accepted, 4 rejected (infinite: 2, invalid_type: 1, nan: 1)\n",
        "",
    )
    assert monitor.window_values("latency") == [7.0, 8.0]


# --- B2: input that is not UTF-8 -------------------------------------------------------


@pytest.mark.parametrize(
    "bad",
    [
        b"\xff\xfe",
        b'{"metric": "latency_ms", "value": 1}\xe2\x82',  # cut multi-byte sequence
        b"\xc0\xaf",  # overlong encoding of "/"
        b"\xed\xa0\x80",  # a UTF-16 surrogate
        b'{"latency_ms": [\x80]}',
    ],
    ids=["ff-fe", "cut", "overlong", "surrogate", "continuation"],
)
def test_a_line_that_is_not_utf8_is_named_and_the_good_lines_go(bad: bytes) -> None:
    monitor = new_monitor()
    data = latencies(1.0) + bad + b"\n" + latencies(2.0) + b"\n\n" + latencies(3.0)
    with sidecar(monitor) as url:
        done = run_ingest(url, data)

    assert (done.returncode, done.stdout, done.stderr) == (
        1,
        "delivered 3 samples: 3 accepted, 0 rejected; 1 bad line skipped\n",
        "line 2: not UTF-8 text\n",
    )
    assert monitor.window_values("latency") == [1.0, 2.0, 3.0]


def test_a_line_longer_than_the_sidecar_takes_is_skipped() -> None:
    monitor = new_monitor()
    huge = b'{"latency_ms": [' + b"1," * (9 << 20) + b"1]}\n"
    with sidecar(monitor) as url:
        done = run_ingest(url, latencies(1.0) + huge + latencies(2.0))

    assert (done.returncode, done.stdout, done.stderr) == (
        1,
        "delivered 2 samples: 2 accepted, 0 rejected; 1 bad line skipped\n",
        "line 2: longer than 16777216 bytes, skipped\n",
    )
    assert monitor.window_values("latency") == [1.0, 2.0]


def test_a_byte_order_mark_and_crlf_line_ends_are_read() -> None:
    monitor = new_monitor()
    data = b'\xef\xbb\xbf{"latency_ms": [1.0]}\r\n{"latency_ms": [2.0]}\r\n'
    with sidecar(monitor) as url:
        done = run_ingest(url, data)

    assert (done.returncode, done.stdout, done.stderr) == (
        0,
        "delivered 2 samples: 2 accepted, 0 rejected\n",
        "",
    )
    assert monitor.window_values("latency") == [1.0, 2.0]


# --- B7: the bearer token --------------------------------------------------------------

SEVEN = latencies(*range(1, 8))


@pytest.mark.parametrize(
    ("env_token", "file_token", "args", "code", "out", "err"),
    [
        (
            None,
            None,
            (),
            1,
            "delivered 0 samples: 0 accepted, 0 rejected\n",
            ASKS_FOR_TOKEN + "7 samples not delivered: the sidecar requires a bearer token "
            "(set MHC_INGEST_TOKEN or --token-file)\n",
        ),
        (
            "wrong",
            None,
            (),
            1,
            "delivered 0 samples: 0 accepted, 0 rejected\n",
            ASKS_FOR_TOKEN + "7 samples not delivered: the sidecar refused the bearer token "
            "(set MHC_INGEST_TOKEN or --token-file)\n",
        ),
        (
            None,
            None,
            ("--batch-size", "2"),
            1,
            "delivered 0 samples: 0 accepted, 0 rejected\n",
            ASKS_FOR_TOKEN + "2 samples not delivered: the sidecar requires a bearer token "
            "(set MHC_INGEST_TOKEN or --token-file)\n"
            "stopped: input from line 3 on was not read\n",
        ),
        (None, "wrong\n", (), 1, "delivered 0 samples: 0 accepted, 0 rejected\n", None),
        (TOKEN, None, (), 0, "delivered 7 samples: 7 accepted, 0 rejected\n", ""),
        (None, f"{TOKEN}\n", (), 0, "delivered 7 samples: 7 accepted, 0 rejected\n", ""),
        ("wrong", f"{TOKEN}\n", (), 0, "delivered 7 samples: 7 accepted, 0 rejected\n", ""),
    ],
    ids=[
        "none",
        "wrong-env",
        "none-stops-reading",
        "wrong-file",
        "env",
        "file",
        "file-over-env",
    ],
)
def test_the_bearer_token(
    tmp_path: Path,
    env_token: str | None,
    file_token: str | None,
    args: tuple[str, ...],
    code: int,
    out: str,
    err: str | None,
) -> None:
    monitor = new_monitor()
    env = ingest_env(**({"MHC_INGEST_TOKEN": env_token} if env_token else {}))
    token_file = tmp_path / "ingest.token"
    if file_token is not None:
        token_file.write_text(file_token)
        args = (*args, "--token-file", str(token_file))
    if err is None:
        err = (
            ASKS_FOR_TOKEN + "7 samples not delivered: the sidecar refused the bearer token "
            f"(check --token-file {token_file})\n"
        )
    with sidecar(monitor, token=TOKEN) as url:
        done = run_ingest(url, SEVEN, *args, env=env)

    assert (done.returncode, done.stdout, done.stderr) == (code, out, err)
    assert monitor.window_values("latency") == (
        [1.0 * v for v in range(1, 8)] if code == 0 else []
    )


def test_an_empty_token_file_is_a_clear_error(tmp_path: Path) -> None:
    token_file = tmp_path / "ingest.token"
    token_file.write_text("\n")
    done = run_ingest("http://127.0.0.1:9", SEVEN, "--token-file", str(token_file))

    assert (done.returncode, done.stdout, done.stderr) == (
        1,
        "",
        f"Error: --token-file {token_file} is empty\n",
    )


def test_help_says_where_the_token_comes_from() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "mhc_monitor", "ingest", "--help"],
        capture_output=True,
        text=True,
        timeout=30,
        env=ingest_env(COLUMNS="200"),
    )
    text = " ".join(done.stdout.split())

    assert done.returncode == 0
    for part in (
        "A sidecar started with a token wants it as a bearer token: it is read from "
        "$MHC_INGEST_TOKEN, or from --token-file when given.",
        "--flush-interval FLOAT RANGE Seconds a sample is held at most before its batch goes "
        "out, also while idle. [default: 1.0; x>=0]",
        "--token-file FILE File holding the sidecar's bearer token [default: $MHC_INGEST_TOKEN]",
        "Exits 1 if any line was bad or any sample was not delivered.",
    ):
        assert part in text


# --- other refusals: the lines concerned are named, the other batches still go ---------


def refuses_energy(n: int, body: bytes) -> tuple[int, str] | None:
    """An older sidecar, which does not know the energy metric."""
    return (422, "unknown metric 'energy'") if b'"energy"' in body else None


def test_lines_an_older_sidecar_refuses_are_named_and_the_rest_delivered() -> None:
    monitor = new_monitor()
    data = lines(
        {"latency_ms": [1.0]},
        {"energy": [0.5], "latency_ms": [2.0]},
        {"latency_ms": [3.0]},
        {"latency_ms": [4.0]},
        {"metric": "energy", "value": 0.25},
        {"latency_ms": [5.0]},
    )
    with sidecar(monitor, lambda app: Answering(app, refuses_energy)) as url:
        done = run_ingest(url, data, "--batch-size", "4")

    assert (done.returncode, done.stdout, done.stderr) == (
        1,
        "delivered 4 samples: 4 accepted, 0 rejected\n",
        "line 2: the sidecar refused it (422): unknown metric 'energy'\n"
        "line 5: the sidecar refused it (422): unknown metric 'energy'\n"
        "3 samples not delivered: the sidecar refused their lines (422), named above\n",
    )
    assert monitor.window_values("latency") == [1.0, 3.0, 4.0, 5.0]
    assert monitor.window_values("energy") == []


def test_a_line_over_the_sidecars_body_limit_is_named() -> None:
    monitor = new_monitor()
    big = [float(v) for v in range(400)]
    data = lines({"latency_ms": [1.0]}, {"latency_ms": big}, {"latency_ms": [2.0]})
    with sidecar(monitor, max_body_bytes=1024) as url:
        done = run_ingest(url, data)

    assert (done.returncode, done.stdout, done.stderr) == (
        1,
        "delivered 2 samples: 2 accepted, 0 rejected\n",
        "line 2: the sidecar refused it (413): "
        "request body exceeds the limit of 1024 bytes; split the batch\n"
        "400 samples not delivered: the sidecar refused their lines (413), named above\n",
    )
    assert monitor.window_values("latency") == [1.0, 2.0]


def test_a_line_of_more_samples_than_batch_size_goes_in_pieces() -> None:
    monitor = GeometricSpeculationMonitor(window=40_000)
    values = [float(v % 997) for v in range(30_000)]
    data = lines({"latency_ms": values, "acceptance": [0.5, 0.75]})
    # One request with the whole line would be refused: 30 000 samples are ~150 kB.
    with sidecar(monitor, max_body_bytes=64 * 1024) as url:
        done = run_ingest(url, data, "--batch-size", "10000")

    assert (done.returncode, done.stdout, done.stderr) == (
        0,
        "delivered 30002 samples: 30002 accepted, 0 rejected\n",
        "",
    )
    assert monitor.window_values("latency") == values
    assert monitor.window_values("acceptance") == [0.5, 0.75]


def overloaded(first: int) -> Callable[[int, bytes], tuple[int, str] | None]:
    """A sidecar that answers 503 to its first `first` requests."""
    return lambda n, body: (503, "overloaded") if n <= first else None


@pytest.mark.parametrize(
    ("first", "code", "out", "err", "recorded"),
    [
        # Two tries fail, the third is delivered: nothing to tell.
        (2, 0, "delivered 4 samples: 4 accepted, 0 rejected\n", "", [1.0, 2.0, 3.0, 4.0]),
        # The first batch's three tries fail, the second batch goes.
        (
            3,
            1,
            "delivered 2 samples: 2 accepted, 0 rejected\n",
            "the sidecar answered 503: overloaded\n"
            "the sidecar takes samples again\n"
            "2 samples not delivered: the sidecar answered 503: overloaded\n",
            [3.0, 4.0],
        ),
        # Every try of both batches fails: told once, counted for both.
        (
            100,
            1,
            "delivered 0 samples: 0 accepted, 0 rejected\n",
            "the sidecar answered 503: overloaded\n"
            "4 samples not delivered: the sidecar answered 503: overloaded\n",
            [],
        ),
    ],
    ids=["retried", "one-batch-lost", "all-lost"],
)
def test_an_overloaded_sidecar_is_tried_again(
    first: int, code: int, out: str, err: str, recorded: list[float]
) -> None:
    monitor = new_monitor()
    with sidecar(monitor, lambda app: Answering(app, overloaded(first))) as url:
        done = run_ingest(url, latencies(1.0, 2.0, 3.0, 4.0), "--batch-size", "2")

    assert (done.returncode, done.stdout, done.stderr) == (code, out, err)
    assert monitor.window_values("latency") == recorded
