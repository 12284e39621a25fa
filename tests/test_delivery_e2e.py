"""Crash safety: a process killed with SIGKILL loses no notification; the next one delivers it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import httpx
import pytest

from conftest import free_port
from mhc_monitor.alerts import make_dedup_key
from receivers import PagerDutyReceiver

ROOT = Path(__file__).resolve().parent.parent
KEY = "abcdefABCDEF0123456789abcdef0123"

pytestmark = pytest.mark.e2e

SIDECAR = """
import sys, time, uvicorn
from mhc_monitor import GeometricSpeculationMonitor
from mhc_monitor.config import load_config
from mhc_monitor.delivery import Alerting
from mhc_monitor.service import create_app

settings = load_config(sys.argv[1])
monitor = GeometricSpeculationMonitor(
    settings.alert_config, window=settings.window, labels=settings.labels, source="e2e"
)
alerting = Alerting(monitor, settings.alerting, settings.service.store_path)
alerting.start()
app = create_app(monitor, alerting=alerting)
uvicorn.run(app, host="127.0.0.1", port=settings.service.port, log_level="warning")
"""


def write_config(tmp_path: Path, receiver_url: str, port: int) -> Path:
    config = tmp_path / "mhc.toml"
    config.write_text(
        textwrap.dedent(
            f"""\
            [monitor]
            window = 1
            [lifecycle]
            interval = 0.05
            no_data_after = 0
            [delivery]
            timeout = 1
            backoff_initial = 0.05
            backoff_max = 0.1
            [receivers.pagerduty]
            url = "{receiver_url}"
            rate_per_minute = 60000
            burst = 100
            [service]
            port = {port}
            store = "{tmp_path / "alerts.sqlite3"}"
            """
        )
    )
    return config


def start_sidecar(config: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "MHC_PAGERDUTY_ROUTING_KEY": KEY}
    return subprocess.Popen(
        [sys.executable, "-c", SIDECAR, str(config)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


def wait_http(url: str, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            time.sleep(0.05)
    raise AssertionError(f"{url} did not come up within {timeout} s")


def post(base: str, body: dict[str, list[float]]) -> None:
    response = httpx.post(
        f"{base}/v1/samples",
        content=json.dumps(body),
        timeout=5,
        headers={"Content-Type": "application/json"},
    )
    assert response.status_code == 200, response.text


def wait_alerts(base: str, predicate: object, timeout: float = 10.0) -> dict[str, object]:
    deadline = time.monotonic() + timeout
    while True:
        view = httpx.get(f"{base}/v1/alerts", timeout=2).json()
        if predicate(view):  # type: ignore[operator]
            return view  # type: ignore[no-any-return]
        if time.monotonic() > deadline:
            raise AssertionError(f"alerts never reached the expected state: {view}")
        time.sleep(0.05)


def test_sigkilled_sidecar_loses_no_notification(tmp_path: Path) -> None:
    receiver = PagerDutyReceiver().start()
    receiver.stop()  # the port is known and refuses connections
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    config = write_config(tmp_path, receiver.url, port)
    first = start_sidecar(config)
    try:
        wait_http(f"{base}/healthz")
        post(base, {"acceptance": [0.6]})
        wait_alerts(base, lambda v: len(v["history"]) == 1)
        post(base, {"latency_ms": [700.0]})
        post(base, {"acceptance": [0.95]})

        def queued(view: dict[str, object]) -> bool:
            pd = view["receivers"]["pagerduty"]  # type: ignore[index]
            return pd["queued"] == 3 and pd["outcomes"]["retried"] >= 1  # type: ignore[no-any-return,index]

        wait_alerts(base, queued)
        metrics = httpx.get(f"{base}/metrics", timeout=2).text
        assert 'mhc_notification_queue{receiver="pagerduty"} 3.0' in metrics
        assert KEY not in metrics
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=10)
    assert first.returncode == -signal.SIGKILL

    receiver.start()
    second = start_sidecar(config)
    try:
        wait_http(f"{base}/healthz")
        assert receiver.wait_for(lambda r: len(r.accepted()) >= 3, timeout=15)
        # The latency alert still fires: the new process took it up from the store.
        view = wait_alerts(base, lambda v: v["receivers"]["pagerduty"]["queued"] == 0)  # type: ignore[index]
        assert [a["metric"] for a in view["active"]] == ["latency"]  # type: ignore[index]
    finally:
        second.send_signal(signal.SIGTERM)
        second.wait(timeout=10)
        receiver.stop()
    acc = make_dedup_key("e2e", {}, "acceptance")
    lat = make_dedup_key("e2e", {}, "latency")
    got = [(e["dedup_key"], e["event_action"]) for e in receiver.accepted()]
    assert sorted(got) == sorted([(acc, "trigger"), (lat, "trigger"), (acc, "resolve")])
    assert [a for k, a in got if k == acc] == ["trigger", "resolve"]
