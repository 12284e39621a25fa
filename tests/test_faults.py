"""Faults around alert delivery: a store that cannot be written, receivers that hang, SIGTERM.

The store faults are real, and real for root too (tests run as root, where a
chmod blocks nothing): a full disk is the sidecar's file size limit
(RLIMIT_FSIZE, set from outside with prlimit) at one byte, so the kernel
refuses every write of SQLite; a read-only store is its folder and files made
immutable (`chattr +i`, which needs CAP_LINUX_IMMUTABLE and ext4 or xfs). The
sidecar's log is read from a pipe, which neither touches. Receivers are the
contract-enforcing loopback receivers of `receivers.py`; every wait is bounded
by a deadline.
"""

from __future__ import annotations

import os
import re
import resource
import signal
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from conftest import free_port
from mhc_monitor import GeometricSpeculationMonitor
from mhc_monitor.alerts import make_dedup_key
from mhc_monitor.config import (
    AlertingSettings,
    DeliverySettings,
    LifecycleSettings,
    ReceiverSettings,
)
from mhc_monitor.delivery import Alerting, Store
from mhc_monitor.delivery.store import StoreError
from receivers import PagerDutyReceiver, Receiver, SlackReceiver
from test_cli_alerting import (
    ACCEPTANCE_KEY,
    KEY,
    SLACK_PATH,
    cli_env,
    post,
    serve_config,
    stop,
    wait_until,
)

LATENCY_KEY = make_dedup_key("cli-e2e", {"instance": "cli-e2e", "model": "m"}, "latency")


class Serve:
    """`mhc-monitor serve --config CONFIG`, its output collected from a pipe line by line."""

    def __init__(self, config: Path, env: dict[str, str], *, verbose: bool = False) -> None:
        args = ["-v"] if verbose else []
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "mhc_monitor", *args, "serve", "--config", str(config)],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        port = re.search(r"port = (\d+)", config.read_text())
        assert port is not None
        self.base = f"http://127.0.0.1:{port.group(1)}"
        self._lines: list[str] = []
        self._lock = threading.Lock()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        wait_until(self._healthy, timeout=20, what="the sidecar")

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            with self._lock:
                self._lines.append(line)

    def _healthy(self) -> bool:
        if self.proc.poll() is not None:
            raise AssertionError(f"serve exited early with {self.proc.returncode}:\n{self.log}")
        try:
            return httpx.get(f"{self.base}/healthz", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    @property
    def log(self) -> str:
        """Everything the process wrote so far."""
        with self._lock:
            return "".join(self._lines)

    def finish(self) -> tuple[int, float, str]:
        """SIGTERM it: (exit code, seconds it took, its whole output)."""
        code, took = stop(self.proc)
        self._reader.join(timeout=5)
        return code, took, self.log

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)
        self._reader.join(timeout=5)

    def get(self, path: str) -> httpx.Response:
        response = httpx.get(f"{self.base}{path}", timeout=5)
        assert response.status_code == 200, response.text
        return response

    def metric(self, name: str, labels: str = 'instance="cli-e2e",model="m"') -> float | None:
        match = re.search(
            rf"^{re.escape(name)}\{{{re.escape(labels)}\}} (\S+)$",
            self.get("/metrics").text,
            re.M,
        )
        return None if match is None else float(match.group(1))

    def queued(self) -> dict[str, int]:
        receivers = self.get("/v1/alerts").json()["receivers"]
        return {name: r["queued"] for name, r in receivers.items()}


@contextmanager
def serve(config: Path, env: dict[str, str], *, verbose: bool = False) -> Iterator[Serve]:
    sidecar = Serve(config, env, verbose=verbose)
    try:
        yield sidecar
    finally:
        sidecar.kill()


def file_size_limit(pid: int, limit: int | None) -> None:
    """Cap (or, with None, uncap) the size of every file process `pid` writes."""
    _, hard = resource.prlimit(pid, resource.RLIMIT_FSIZE)
    resource.prlimit(pid, resource.RLIMIT_FSIZE, (hard if limit is None else limit, hard))


def events(receiver: PagerDutyReceiver) -> list[tuple[str, str, str | None]]:
    return [
        (e["dedup_key"], e["event_action"], (e.get("payload") or {}).get("severity"))
        for e in receiver.accepted()
    ]


# -- the store cannot be written --------------------------------------------------------------

_STORE_FAILURE = re.compile(r" ERROR mhc_monitor\.delivery: alert store failure: (.+?);")


def chattr(flag: str, *paths: Path) -> None:
    """Set or clear the immutable attribute (`+i`, `-i`): writes fail even for root."""
    result = subprocess.run(
        ["chattr", flag, *map(str, paths)], capture_output=True, text=True, timeout=10
    )
    if result.returncode != 0:
        pytest.skip(f"chattr {flag} needs CAP_LINUX_IMMUTABLE on ext4/xfs: {result.stderr}")


@contextmanager
def store_fault(kind: str, pid: int, store: Path) -> Iterator[Callable[[], None]]:
    """Make every write of the sidecar's store fail; yields the call that ends the fault.

    "full": the kernel refuses writes past byte 1 of any file (RLIMIT_FSIZE), as a
    full disk does. "read-only": the store's folder and files become immutable.
    """
    if kind == "full":
        file_size_limit(pid, 1)
        yield lambda: file_size_limit(pid, None)
        return
    # The -shm file stays writable: SQLite maps it into memory, and only file writes are
    # what a read-only file system refuses first.
    paths = [store.parent, store, store.with_name(store.name + "-wal")]
    chattr("+i", *paths)
    try:
        yield lambda: chattr("-i", *paths)
    finally:
        # Whatever happened, leave nothing immutable behind (pytest removes tmp_path).
        subprocess.run(
            ["chattr", "-i", *(str(p) for p in paths if p.exists())],
            capture_output=True,
            timeout=10,
        )


@pytest.mark.e2e
@pytest.mark.parametrize("kind", ["full", "read-only"])
def test_a_store_that_cannot_be_written_holds_delivery_back_and_loses_nothing(
    tmp_path: Path, kind: str
) -> None:
    folder = tmp_path / "store"
    folder.mkdir()
    with PagerDutyReceiver() as pagerduty, ExitStack() as faults:
        config = serve_config(folder, pagerduty.url, free_port())
        with serve(config, cli_env(MHC_PAGERDUTY_ROUTING_KEY=KEY)) as sidecar:
            post(sidecar.base, {"acceptance": [0.6]})
            assert pagerduty.wait_for(lambda r: len(r.accepted()) == 1, timeout=10)
            assert sidecar.metric("mhc_alert_store_errors_total") == 0.0

            # Every write to the store fails from here on.
            lift = faults.enter_context(
                store_fault(kind, sidecar.proc.pid, folder / "alerts.sqlite3")
            )
            post(sidecar.base, {"latency_ms": [700.0]})
            post(sidecar.base, {"acceptance": [0.95]})

            def active() -> list[str]:
                return [a["metric"] for a in sidecar.get("/v1/alerts").json()["active"]]

            wait_until(lambda: active() == ["latency"], timeout=10, what="the latency alert")
            wait_until(
                lambda: (sidecar.metric("mhc_alert_store_errors_total") or 0) >= 5,
                timeout=10,
                what="store errors on /metrics",
            )
            # Monitoring goes on: samples are taken, counted and exposed.
            post(sidecar.base, {"energy": [1.0, 2.0, 3.0]})
            summary = sidecar.get("/v1/summary").json()
            assert (summary["metrics"]["energy"]["total"], summary["level"]) == (3, "emergency")
            assert sidecar.metric("mhc_energy_count") == 3.0
            failures_during = _STORE_FAILURE.findall(sidecar.log)

            lift()
            assert pagerduty.wait_for(lambda r: len(r.accepted()) == 3, timeout=10)
            wait_until(lambda: sidecar.queued() == {"pagerduty": 0}, timeout=10, what="no queue")
            history = sidecar.get("/v1/alerts").json()["history"]
            errors = sidecar.metric("mhc_alert_store_errors_total")
            code, took, log = sidecar.finish()

        # The two changes during the fault may share an evaluation: no order between them.
        got = events(pagerduty)
        assert got[0] == (ACCEPTANCE_KEY, "trigger", "warning")
        assert sorted(got[1:], key=str) == sorted(
            [(LATENCY_KEY, "trigger", "critical"), (ACCEPTANCE_KEY, "resolve", None)], key=str
        )
        assert pagerduty.rejected() == []
    assert sorted((h["metric"], h["event"]) for h in history) == [
        ("acceptance", "resolve"),
        ("acceptance", "trigger"),
        ("latency", "trigger"),
    ]
    for entry in history:
        assert [(n["receiver"], n["status"]) for n in entry["notifications"]] == [
            ("pagerduty", "delivered")
        ]
    path = folder / "alerts.sqlite3"
    # One line for the failure, however many operations failed, and one for its end. The
    # kernel refuses a write (EIO to SQLite) or cuts it short (SQLITE_FULL).
    assert len(failures_during) == 1, failures_during
    assert re.fullmatch(
        rf"alert store {re.escape(str(path))}: (disk I/O error|database or disk is full)",
        failures_during[0],
    )
    assert _STORE_FAILURE.findall(log) == failures_during
    assert errors is not None and errors >= 5
    assert len(re.findall(r"alert store works again \(\d+ failed operations in all\)", log)) == 1
    assert (code, took < 5) == (0, True)
    assert "Traceback" not in log


class FullDisk(Store):
    """A real SQLite store whose every write fails while `full` is set, as on a full disk."""

    full = False

    @contextmanager
    def _transaction(self) -> Iterator[Any]:
        if self.full:
            raise StoreError(f"alert store {self.path}: database or disk is full")
        with super()._transaction() as db:
            yield db


FAST = DeliverySettings(timeout_s=2.0, backoff_initial_s=0.01, backoff_max_s=0.05, jitter=0.5)


def pagerduty_settings(
    receiver: PagerDutyReceiver, delivery: DeliverySettings = FAST
) -> AlertingSettings:
    return AlertingSettings(
        lifecycle=LifecycleSettings(no_data_after_s=None),
        delivery=delivery,
        receivers=(
            ReceiverSettings.pagerduty(KEY, url=receiver.url, rate_per_minute=60_000, burst=100),
        ),
    )


def library_monitor() -> GeometricSpeculationMonitor:
    return GeometricSpeculationMonitor(window=1, labels={"model": "m"}, source="gpu-0")


@pytest.mark.e2e
def test_a_delivery_the_store_cannot_mark_is_not_sent_again(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("INFO", logger="mhc_monitor")
    store = FullDisk(tmp_path / "alerts.sqlite3")
    with PagerDutyReceiver() as pagerduty:
        pagerduty.delay(0.5)  # the event is taken at once, the answer comes later
        alerting = Alerting(library_monitor(), pagerduty_settings(pagerduty), store)
        alerting.start()
        try:
            alerting.monitor.record_acceptance(0.6)
            alerting.step()
            assert pagerduty.wait_for(lambda r: len(r.exchanges()) == 1, timeout=5)
            store.full = True  # before the answer: "delivered" cannot be written down
            alerting.monitor.record_acceptance(0.95)
            alerting.step()
            time.sleep(2.0)
            during = (len(pagerduty.exchanges()), alerting.dispatcher.counts()["pagerduty"])
            errors_during = alerting.store_errors

            pagerduty.delay(0)
            store.full = False
            assert alerting.flush(10)
        finally:
            alerting.stop(2)
        assert events(pagerduty) == [
            (make_dedup_key("gpu-0", {"model": "m"}, "acceptance"), "trigger", "warning"),
            (make_dedup_key("gpu-0", {"model": "m"}, "acceptance"), "resolve", None),
        ]
    # In two seconds of a full disk, the delivered trigger was not sent again.
    assert during == (
        1,
        {"outcomes": {"sent": 1, "retried": 0, "failed": 0, "dropped": 0}, "failures": {}},
    )
    assert errors_during >= 3  # the mark, retried every second, and the resolve's record
    assert store.counts() == {"delivered": 2}
    assert alerting.dispatcher.counts()["pagerduty"]["outcomes"]["sent"] == 2
    messages = [(r.levelname, r.getMessage()) for r in caplog.records]
    failures = [m for level, m in messages if "alert store failure" in m]
    assert [level for level, m in messages if "alert store failure" in m] == ["ERROR"]
    assert failures == [
        f"alert store failure: alert store {store.path}: database or disk is full; "
        "monitoring goes on, notifications wait in memory until the store can be written"
    ]
    assert [m for _, m in messages if "works again" in m] == [
        f"alert store works again ({alerting.store_errors} failed operations in all)"
    ]


def test_stopping_while_the_store_cannot_be_written_says_what_is_lost(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("INFO", logger="mhc_monitor")
    store = FullDisk(tmp_path / "alerts.sqlite3")
    alerting = Alerting(library_monitor(), AlertingSettings(delivery=FAST), store)
    alerting.start()
    store.full = True
    alerting.monitor.record_latency(700.0)
    alerting.step()
    alerting.monitor.record_latency(5.0)
    alerting.step()
    assert alerting.stop(2)
    store.full = False
    assert store.counts() == {}
    errors = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert errors == [
        f"alert store failure: alert store {store.path}: database or disk is full; "
        "monitoring goes on, notifications wait in memory until the store can be written",
        "2 alert state change(s) and their notifications are lost: "
        "the alert store cannot be written",
    ]


def test_state_changes_the_store_refused_are_stored_and_sent_at_the_stop(tmp_path: Path) -> None:
    store = FullDisk(tmp_path / "alerts.sqlite3")
    alerting = Alerting(library_monitor(), AlertingSettings(delivery=FAST), store)
    alerting.start()
    store.full = True
    alerting.monitor.record_latency(700.0)
    alerting.step()
    alerting.monitor.record_latency(5.0)
    alerting.step()
    store.full = False  # writable again, just before the stop
    assert alerting.stop(2)
    assert store.counts() == {"delivered": 2}
    assert alerting.dispatcher.counts()["log"]["outcomes"]["sent"] == 2


# -- receivers slower than the timeout -------------------------------------------------------

#: How long the receivers hang in the stall test ("minutes", compressed; set more to soak).
STALL_S = float(os.environ.get("MHC_STALL_SECONDS", "24"))
SLOW = DeliverySettings(timeout_s=0.25, backoff_initial_s=0.05, backoff_max_s=0.5, jitter=0.5)
_RECORDS_PER_BATCH = 4000


def rss_kib(pid: int) -> int:
    """Resident memory of process `pid`, in KiB."""
    status = Path(f"/proc/{pid}/status").read_text()
    match = re.search(r"^VmRSS:\s+(\d+) kB$", status, re.M)
    assert match is not None
    return int(match.group(1))


def record_seconds(monitor: GeometricSpeculationMonitor) -> float:
    """Seconds per `record_*` call, over one batch of calls on metrics that stay healthy."""
    started = time.perf_counter()
    for i in range(_RECORDS_PER_BATCH // 2):
        monitor.record_energy(float(i % 50))
        monitor.record_curvature(0.25)
    return (time.perf_counter() - started) / _RECORDS_PER_BATCH


def distinct_in_order(bodies: list[Any]) -> list[Any]:
    """Bodies with repeats of the one before removed: a retry resends the same body."""
    result: list[Any] = []
    for body in bodies:
        if not result or result[-1] != body:
            result.append(body)
    return result


def two_receiver_config(
    tmp_path: Path,
    pagerduty: PagerDutyReceiver,
    port: int,
    delivery: DeliverySettings | None = None,
) -> Path:
    """`serve_config` plus Slack (its URL from the environment), with `delivery`'s timings."""
    config = serve_config(tmp_path, pagerduty.url, port)
    text = config.read_text()
    if delivery is not None:
        text = text.replace("timeout = 1\n", f"timeout = {delivery.timeout_s}\n")
        text = text.replace("backoff_max = 0.2\n", f"backoff_max = {delivery.backoff_max_s}\n")
    config.write_text(text + "\n[receivers.slack]\nrate_per_minute = 60000\nburst = 100\n")
    return config


@pytest.mark.e2e
def test_receivers_slower_than_the_timeout_cost_no_memory_no_hot_path_time_and_no_alert(
    tmp_path: Path,
) -> None:
    with (
        PagerDutyReceiver() as pagerduty,
        SlackReceiver(webhook_path=SLACK_PATH) as slack,
        PagerDutyReceiver() as library_pagerduty,
    ):
        receivers: list[Receiver] = [pagerduty, slack, library_pagerduty]
        env = cli_env(MHC_PAGERDUTY_ROUTING_KEY=KEY, MHC_SLACK_WEBHOOK_URL=slack.url)
        library = Alerting(
            library_monitor(),
            AlertingSettings(
                lifecycle=LifecycleSettings(no_data_after_s=None),
                delivery=SLOW,
                receivers=pagerduty_settings(library_pagerduty).receivers,
                interval_s=0.05,
            ),
            tmp_path / "library.sqlite3",
        )
        library.start()
        try:
            with serve(
                two_receiver_config(tmp_path, pagerduty, free_port(), SLOW), env
            ) as sidecar:
                flips = 0

                def flip() -> None:
                    nonlocal flips
                    value = 0.2 if flips % 2 == 0 else 0.95
                    post(sidecar.base, {"acceptance": [value]})
                    library.monitor.record_acceptance(value)
                    flips += 1

                # Warm up both with one incident, then time the hot path with receivers answering.
                flip()
                time.sleep(0.3)
                flip()
                wait_until(
                    lambda: sidecar.queued() == {"pagerduty": 0, "slack": 0},
                    timeout=10,
                    what="the warm-up incident delivered",
                )
                assert library.flush(10)
                reference = [record_seconds(library.monitor) for _ in range(7)]

                for receiver in receivers:
                    receiver.delay(3.0)  # twelve times the client's timeout
                started = time.monotonic()
                stalled: list[float] = []
                scrapes: list[float] = []
                rss_early: int | None = None
                while time.monotonic() - started < STALL_S:
                    flip()
                    stalled.append(record_seconds(library.monitor))
                    scrape_started = time.monotonic()
                    sidecar.get("/metrics")
                    scrapes.append(time.monotonic() - scrape_started)
                    if rss_early is None and time.monotonic() - started >= STALL_S / 4:
                        rss_early = rss_kib(sidecar.proc.pid)
                    time.sleep(max(0.0, 1.0 - (time.monotonic() - scrape_started)))
                rss_late = rss_kib(sidecar.proc.pid)
                if flips % 2:
                    flip()  # end resolved, so every incident is a trigger and its resolve
                stalled_view = sidecar.get("/v1/alerts").json()["receivers"]

                for receiver in receivers:
                    receiver.delay(0)
                wait_until(
                    lambda: sidecar.queued() == {"pagerduty": 0, "slack": 0},
                    timeout=30,
                    what="the sidecar's queue delivered",
                )
                assert library.flush(30)
                history = sidecar.get("/v1/alerts").json()["history"]
                code, _, log = sidecar.finish()
        finally:
            library.stop(2)

        incidents = flips // 2
        pd_actions = [
            (e["dedup_key"], e["event_action"]) for e in distinct_in_order(pagerduty.accepted())
        ]
        assert pd_actions == [(ACCEPTANCE_KEY, "trigger"), (ACCEPTANCE_KEY, "resolve")] * incidents
        library_key = make_dedup_key("gpu-0", {"model": "m"}, "acceptance")
        library_actions = [
            (e["dedup_key"], e["event_action"])
            for e in distinct_in_order(library_pagerduty.accepted())
        ]
        assert library_actions == [(library_key, "trigger"), (library_key, "resolve")] * incidents
        headlines = [m["text"].split(":")[0] for m in distinct_in_order(slack.accepted())]
        assert (
            headlines
            == [
                "[EMERGENCY] acceptance on cli-e2e",
                "[RESOLVED] acceptance on cli-e2e",
            ]
            * incidents
        )
        for receiver in receivers:
            assert receiver.rejected() == []

    # The stall was real: attempts timed out and were retried.
    for name in ("pagerduty", "slack"):
        assert stalled_view[name]["failures"].get("timeout", 0) >= 10, stalled_view
        assert stalled_view[name]["queued"] >= 1
    assert library.dispatcher.counts()["pagerduty"]["failures"]["timeout"] >= 10
    assert len(history) == min(50, 2 * incidents)  # the view shows the latest 50
    for entry in history:
        assert sorted(n["status"] for n in entry["notifications"]) == ["delivered", "delivered"]
    # Memory: a bounded growth over the stall, not one per attempt.
    assert rss_early is not None
    assert rss_late - rss_early < 8 * 1024, (rss_early, rss_late)
    # The hot path: as fast as before the stall (a generous ratio of best batches).
    ratio = min(stalled) / min(reference)
    assert ratio < 3.0, (reference, stalled)
    assert statistics.median(stalled) / statistics.median(reference) < 5.0, (reference, stalled)
    assert max(scrapes) < 2.0, scrapes
    # Each receiver's failure is logged once, and so is its end.
    for name in ("pagerduty", "slack"):
        failed = re.findall(
            rf"WARNING \S+: delivery to {name} failed: retryable: timeout \(no answer within "
            r"the timeout\);",
            log,
        )
        assert len(failed) == 1, log[-3000:]
        assert log.count(f"delivery to {name} works again") == 1
    assert "Traceback" not in log
    assert code == 0
    print(
        f"stall {STALL_S:g} s: rss {rss_early} -> {rss_late} KiB; record_* "
        f"{min(reference) * 1e9:.0f} ns before, {min(stalled) * 1e9:.0f} ns during; "
        f"slowest scrape {max(scrapes) * 1e3:.0f} ms"
    )


# -- SIGTERM while a receiver is down ----------------------------------------------------------


def refused(base: str) -> bool:
    try:
        httpx.get(f"{base}/healthz", timeout=0.5)
    except httpx.ConnectError:
        return True
    except httpx.HTTPError:
        return False
    return False


@pytest.mark.e2e
def test_sigterm_flushes_the_receiver_that_works_and_keeps_the_rest(tmp_path: Path) -> None:
    pagerduty = PagerDutyReceiver().start()
    pagerduty.stop()  # the port is known and refuses connections
    with SlackReceiver(webhook_path=SLACK_PATH) as slack:
        slack.delay(0.3)  # Slack answers, slowly: its queue is not empty at SIGTERM
        env = cli_env(MHC_PAGERDUTY_ROUTING_KEY=KEY, MHC_SLACK_WEBHOOK_URL=slack.url)
        config = two_receiver_config(tmp_path, pagerduty, free_port())
        with serve(config, env) as sidecar:
            for value in (0.2, 0.95, 0.2, 0.95):
                post(sidecar.base, {"acceptance": [value]})
                time.sleep(0.15)
            wait_until(
                lambda: len(sidecar.get("/v1/alerts").json()["history"]) == 4,
                timeout=10,
                what="four transitions",
            )
            at_sigterm = len(slack.accepted())
            started = time.monotonic()
            sidecar.proc.send_signal(signal.SIGTERM)
            # It stops taking requests at once, while it still delivers.
            wait_until(lambda: refused(sidecar.base), timeout=3, what="the port closed")
            wait_until(
                lambda: "stopping: delivering queued notifications for up to 3 s" in sidecar.log,
                timeout=3,
                what="the stop",
            )
            still_running = sidecar.proc.poll() is None
            # A supervisor asking again does not cut the last deliveries short.
            code, _, log = sidecar.finish()
            took = time.monotonic() - started
        delivered_at_exit = len(slack.accepted())

        pagerduty.start()
        try:
            with serve(config, env) as second:
                assert pagerduty.wait_for(lambda r: len(r.accepted()) == 4, timeout=10)
                wait_until(
                    lambda: second.queued() == {"pagerduty": 0, "slack": 0},
                    timeout=10,
                    what="an empty outbox",
                )
                second_code, _, _ = second.finish()
        finally:
            pagerduty.stop()
        assert [(e["dedup_key"], e["event_action"]) for e in pagerduty.accepted()] == [
            (ACCEPTANCE_KEY, "trigger"),
            (ACCEPTANCE_KEY, "resolve"),
        ] * 2
        # Slack got everything before the first exit, and nothing twice.
        assert len(slack.accepted()) == 4
        assert slack.rejected() == []

    assert at_sigterm < 4 and delivered_at_exit == 4
    assert still_running
    assert (code, second_code, took < 6) == (0, 0, True)
    assert re.search(
        rf"4 undelivered notification\(s\) left in {re.escape(str(tmp_path))}/alerts.sqlite3", log
    ), log[-2000:]
    assert "already stopping: delivering queued notifications for a few seconds" in log
    assert "Traceback" not in log
