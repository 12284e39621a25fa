"""End to end: `mhc-monitor demo` in a subprocess, scraped by a real Prometheus."""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from conftest import free_port
from servers import Prometheus, wait_until

pytestmark = pytest.mark.e2e


@pytest.fixture
def demo(tmp_path: Path) -> Iterator[str]:
    port = free_port()
    log = (tmp_path / "demo.log").open("wb")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "mhc_monitor",
            "demo",
            "--port",
            str(port),
            "--duration",
            "120",
            "--window",
            "200",
            "--label",
            "model=demo-ngram",
            "--label",
            "instance=e2e",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until(
            lambda: httpx.get(f"{url}/healthz", timeout=2).status_code == 200,
            timeout=60,
            what="the demo's sidecar",
        )
        yield url
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            code = proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise
        log.close()
        assert code == 0, (tmp_path / "demo.log").read_text()[-3000:]


def test_demo_is_scraped_by_a_real_prometheus(demo: str, tmp_path: Path) -> None:
    target = demo.removeprefix("http://")
    with Prometheus(tmp_path).start([target]) as prom:

        def value(expr: str) -> float | None:
            result = prom.query(expr)
            return float(result[0]["value"][1]) if result else None

        acceptance = wait_until(
            lambda: value('mhc_acceptance_window_ratio{stat="mean",instance="e2e"}'),
            timeout=60,
            what="acceptance series in Prometheus",
        )
        latency = wait_until(
            lambda: value('mhc_latency_window_seconds{stat="mean",model="demo-ngram"}'),
            timeout=30,
            what="latency series in Prometheus",
        )
        sinkhorn = wait_until(
            lambda: value('mhc_sinkhorn_iterations_window{stat="mean"}'),
            timeout=30,
            what="Sinkhorn series in Prometheus",
        )
        assert 0.5 < acceptance <= 1.0
        assert 0.0 < latency < 0.05
        assert 1.0 <= sinkhorn < 1000
        rate = wait_until(
            lambda: value("rate(mhc_latency_seconds_count[5s])"),
            timeout=30,
            what="a positive step rate",
        )
        assert rate > 1
        up = prom.query('up{job="mhc"}')
        assert up[0]["value"][1] == "1"

    scrape = httpx.get(f"{demo}/metrics", timeout=5).text
    promtool = shutil.which("promtool")
    assert promtool
    check = subprocess.run(
        [promtool, "check", "metrics"], input=scrape, capture_output=True, text=True, timeout=30
    )
    assert (check.returncode, check.stdout, check.stderr) == (0, "", "")
