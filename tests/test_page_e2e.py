"""End to end: the live page in headless Chromium, against `mhc-monitor demo` and a sidecar.

The demo degrades its draft model after a while and then recovers: the page's
acceptance badge and its alert list follow, live, without a reload. Outside text
(a label, alert messages, receiver names) carrying markup renders as text.
"""

from __future__ import annotations

import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.registry import Collector

from conftest import ROOT, free_port
from mhc_monitor import GeometricSpeculationMonitor
from mhc_monitor.service import create_app
from servers import wait_until
from sidecar import running

pytestmark = pytest.mark.e2e

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
SCRIPT = "<script>alert(1)</script>"
METRICS = ("acceptance", "curvature", "energy", "latency", "stability", "sinkhorn_iterations")
DEGRADE_AFTER = 14.0
DEGRADE_FOR = 12.0
ARTIFACTS = ROOT / "artifacts"

sync_api = pytest.importorskip("playwright.sync_api")
if shutil.which(CHROMIUM) is None:
    pytest.skip(f"{CHROMIUM} is not installed (apt-get install chromium)", allow_module_level=True)


class Browser:
    """A headless Chromium page that records console errors, page errors and dialogs."""

    def __init__(self, page: Any) -> None:
        self.page = page
        self.errors: list[str] = []
        self.dialogs: list[str] = []
        page.on("console", self._console)
        page.on("pageerror", lambda exc: self.errors.append(f"pageerror: {exc}"))
        page.on("dialog", self._dialog)

    def _console(self, message: Any) -> None:
        if message.type == "error":
            self.errors.append(f"console: {message.text}")

    def _dialog(self, dialog: Any) -> None:
        self.dialogs.append(dialog.message)
        dialog.dismiss()

    def wait(self, expression: str, *, timeout: float, arg: Any = None) -> Any:
        """Wait until `expression` (a JS function) is truthy, at most `timeout` seconds."""
        return self.page.wait_for_function(expression, arg=arg, timeout=timeout * 1000)

    def evaluate(self, expression: str, arg: Any = None) -> Any:
        return self.page.evaluate(expression, arg)


@pytest.fixture(scope="module")
def chromium() -> Iterator[Any]:
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture
def browser(chromium: Any) -> Iterator[Browser]:
    context = chromium.new_context(viewport={"width": 1500, "height": 1000})
    try:
        yield Browser(context.new_page())
    finally:
        context.close()


@pytest.fixture
def demo(tmp_path: Path) -> Iterator[tuple[str, float]]:
    """`mhc-monitor demo` degrading after DEGRADE_AFTER s; yields its URL and start time."""
    port = free_port()
    log_path = tmp_path / "demo.log"
    log = log_path.open("wb")
    command = [
        sys.executable,
        "-m",
        "mhc_monitor",
        "demo",
        "--port",
        str(port),
        "--duration",
        "120",
        "--rate",
        "400",
        "--window",
        "400",
        "--degrade-after",
        str(DEGRADE_AFTER),
        "--degrade-for",
        str(DEGRADE_FOR),
        "--quiet",
        "--label",
        f"model={SCRIPT}",
        "--label",
        "instance=page-e2e",
    ]
    started = time.monotonic()
    proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, cwd=tmp_path)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until(
            lambda: httpx.get(f"{url}/healthz", timeout=2).status_code == 200,
            timeout=30,
            what="the demo's sidecar",
        )
        yield url, started
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
        log.close()


CHARTS_DRAWN = """(metrics) => metrics.every((name) => {
    const plot = document.getElementById('chart-' + name);
    if (!plot) return false;
    const points = plot.querySelectorAll('.scatterlayer path.point').length;
    const line = plot.querySelector('.scatterlayer path.js-line');
    return points >= 20 && line !== null && /L/.test(line.getAttribute('d') || '');
})"""

CHART_CONTENT = """(name) => {
    const plot = document.getElementById('chart-' + name);
    const line = plot.querySelector('.scatterlayer path.js-line');
    return {
        points: plot.querySelectorAll('.scatterlayer path.point').length,
        segments: (line.getAttribute('d').match(/L/g) || []).length,
        shapes: plot.querySelectorAll('.shapelayer path').length,
        labels: Array.from(plot.querySelectorAll('.annotation-text')).map((t) => t.textContent),
        ticks: plot.querySelectorAll('.ytick').length,
    };
}"""

BADGE = """(name) => {
    const b = document.getElementById('badge-' + name);
    return b && {level: b.dataset.level, text: b.textContent, shape: !!b.querySelector('svg')};
}"""

ACTIVE_ROW = "(name) => !!document.querySelector('#active tr[data-metric=\"' + name + '\"]')"


def _seconds_left(started: float, at: float) -> float:
    return max(0.0, at - (time.monotonic() - started))


def test_live_page_follows_the_demo_through_degradation_and_recovery(
    browser: Browser, demo: tuple[str, float]
) -> None:
    url, started = demo
    browser.page.goto(url + "/", wait_until="load", timeout=30_000)

    browser.wait(CHARTS_DRAWN, arg=list(METRICS), timeout=max(5.0, DEGRADE_AFTER - 4))
    for name in METRICS:
        content = browser.evaluate(CHART_CONTENT, name)
        assert content["points"] >= 20, (name, content)
        assert content["segments"] >= 1, (name, content)
        assert content["ticks"] >= 3, (name, content)
    acceptance = browser.evaluate(CHART_CONTENT, "acceptance")
    assert acceptance["segments"] >= 3, acceptance
    # Three bands, each with its threshold line, labelled in words, not colour alone.
    assert acceptance["shapes"] == 6, acceptance
    assert acceptance["labels"] == ["warning", "critical", "emergency"]
    assert browser.evaluate(CHART_CONTENT, "energy")["labels"] == [
        "warning",
        "critical",
        "emergency",
    ]
    # Curvature is judged by magnitude: its warning band shows on both sides of zero.
    assert browser.evaluate(CHART_CONTENT, "curvature")["labels"] == ["warning", "warning"]
    assert browser.evaluate(CHART_CONTENT, "sinkhorn_iterations")["shapes"] == 0

    assert time.monotonic() - started < DEGRADE_AFTER, "the page took too long to draw"
    assert browser.evaluate(BADGE, "acceptance") == {"level": "info", "text": "OK", "shape": True}
    assert "worse when lower" in browser.page.inner_text("#chart-acceptance >> xpath=..")

    labels = browser.page.locator("#labels li").all_inner_texts()
    assert f"model={SCRIPT}" in labels
    assert browser.evaluate("() => document.scripts.length") == 2
    uptime = browser.page.inner_text("#uptime")
    assert re.fullmatch(r"\d+ s", uptime), uptime
    assert browser.page.inner_text("#rate").endswith(" samples/s")

    # Degradation: acceptance falls, its badge goes up a level and the alert is listed.
    browser.wait(
        "(name) => { const b = document.getElementById('badge-' + name);"
        " return b && b.dataset.level !== 'info'; }",
        arg="acceptance",
        timeout=_seconds_left(started, DEGRADE_AFTER) + 10,
    )
    badge = browser.evaluate(BADGE, "acceptance")
    assert badge["level"] in {"warning", "critical", "emergency"}
    assert badge["text"] == badge["level"].upper() and badge["shape"]
    browser.wait(ACTIVE_ROW, arg="acceptance", timeout=5)
    row = browser.page.inner_text('#active tr[data-metric="acceptance"]')
    assert "acceptance" in row and "below" in row
    assert browser.evaluate(BADGE, "overall")["level"] != "info"
    browser.wait("() => document.querySelectorAll('#history tbody tr').length > 0", timeout=5)
    ARTIFACTS.mkdir(exist_ok=True)
    time.sleep(2)
    browser.page.screenshot(path=str(ARTIFACTS / "page.png"), full_page=True)

    # Recovery: the badge returns to OK and the alert leaves the active list.
    browser.wait(
        "(name) => { const b = document.getElementById('badge-' + name);"
        " return b && b.dataset.level === 'info'"
        " && !document.querySelector('#active tr[data-metric=\"' + name + '\"]'); }",
        arg="acceptance",
        timeout=_seconds_left(started, DEGRADE_AFTER + DEGRADE_FOR) + 15,
    )
    assert "live" in browser.page.inner_text("#status")

    assert browser.errors == []
    assert browser.dialogs == []


class _NoMetrics(Collector):
    def collect(self) -> Iterator[Any]:
        return iter(())


class HostileAlerts:
    """An alert source whose every string carries markup, as a hostile or careless one might."""

    def __init__(self) -> None:
        self.message = f'{SCRIPT}<img src=x onerror="alert(2)"> acceptance is low'

    def collector(self) -> Collector:
        return _NoMetrics()

    def alerts_view(self) -> dict[str, Any]:
        note = {
            "receiver": f"<b>{SCRIPT}</b>",
            "action": "trigger",
            "status": "failed",
            "attempts": 3,
            "reason": "<i onmouseover=alert(3)>HTTP 400</i>",
            "updated": None,
        }
        return {
            "active": [
                {
                    "metric": "acceptance",
                    "level": "critical",
                    "state": "firing",
                    "value": 0.4,
                    "threshold": 0.5,
                    "message": self.message,
                    "age_seconds": 75.0,
                }
            ],
            "history": [
                {
                    "at": "2026-01-01T00:00:00+00:00",
                    "metric": "acceptance",
                    "previous": "ok",
                    "state": "firing",
                    "event": "trigger",
                    "level": "critical",
                    "message": self.message,
                    "notifications": [note],
                }
            ],
            "receivers": {
                f"<u>{SCRIPT}</u>": {
                    "kind": "slack",
                    "queued": 2,
                    "oldest_undelivered_seconds": 30.0,
                    "outcomes": {"delivered": 0, "failed": 1},
                    "failures": {},
                }
            },
        }


def test_outside_text_renders_as_text(browser: Browser) -> None:
    monitor = GeometricSpeculationMonitor(labels={"model": SCRIPT, "team": "<b>ml</b>"})
    for _ in range(50):
        monitor.record_acceptance(0.4)
        monitor.record_latency(12.0)
    monitor.record_acceptance(float("nan"))
    monitor.record_many("latency", [-1.0, -2.0, 5.0])
    with running(create_app(monitor, alerting=HostileAlerts())) as url:
        browser.page.goto(url + "/", wait_until="load", timeout=30_000)
        browser.wait(ACTIVE_ROW, arg="acceptance", timeout=10)
        browser.wait("() => document.querySelectorAll('#receivers tbody tr').length", timeout=5)

        hostile = HostileAlerts().message
        assert browser.page.inner_text('#active tr[data-metric="acceptance"] td.message') == (
            hostile
        )
        assert hostile in browser.page.inner_text("#history")
        assert f"<b>{SCRIPT}</b> trigger: failed, 3 attempts" in browser.page.inner_text(
            "#history"
        )
        receiver = browser.page.inner_text("#receivers tbody tr")
        assert receiver.split("\t")[:4] == [f"<u>{SCRIPT}</u>", "slack", "2", "30 s"]
        rejected = browser.page.locator("#rejected tbody tr").all_inner_texts()
        assert rejected == ["acceptance\tnan\t1", "latency\tout_of_range\t2"]
        assert "1 min 15 s" in browser.page.inner_text("#active")
        labels = browser.page.locator("#labels li").all_inner_texts()
        assert labels == [f"model={SCRIPT}", "team=<b>ml</b>"]
        injected = browser.evaluate(
            "() => document.querySelectorAll('main img, main b, main u, main i, main script,"
            " header b').length + document.scripts.length"
        )
        assert injected == 2  # the page's own two scripts, nothing else
        browser.page.hover("#active td.message")
        time.sleep(1.5)
    assert browser.dialogs == []
    assert browser.errors == []


class BrokenAlerts(HostileAlerts):
    """An alert source whose view fails, as a store that cannot be read would."""

    def alerts_view(self) -> dict[str, Any]:
        raise RuntimeError("the alert store cannot be read")


def test_alerts_that_cannot_be_read_leave_the_page_live(browser: Browser) -> None:
    monitor = GeometricSpeculationMonitor()
    monitor.record_acceptance(0.9)
    with running(create_app(monitor, alerting=BrokenAlerts())) as url:
        browser.page.goto(url + "/", wait_until="load", timeout=30_000)
        browser.wait(
            "() => document.getElementById('active').textContent.includes('unavailable')",
            timeout=10,
        )
        assert browser.evaluate(BADGE, "acceptance")["level"] == "info"
        assert "live" in browser.page.inner_text("#status")
    # The browser logs the failed request itself; the page adds no error of its own.
    assert [e for e in browser.errors if "500" not in e] == []


def test_the_page_says_when_the_sidecar_stops_answering(browser: Browser) -> None:
    monitor = GeometricSpeculationMonitor()
    with running(create_app(monitor)) as url:
        browser.page.goto(url + "/", wait_until="load", timeout=30_000)
        browser.wait(
            "() => document.getElementById('status').textContent.includes('live')", timeout=10
        )
    browser.wait(
        "() => document.getElementById('status').textContent.includes('stale')", timeout=15
    )
    assert browser.page.inner_text("#status").startswith("○ stale: no answer for ")
    assert browser.page.locator("#chart-acceptance").count() == 1
    assert browser.dialogs == []


class NoDataAlerts(HostileAlerts):
    """An alert source with a firing no-data alert for latency, as a stalled engine gives."""

    def alerts_view(self) -> dict[str, Any]:
        view = super().alerts_view()
        view["active"] = [
            {
                "metric": "latency",
                "kind": "no_data",
                "level": "critical",
                "state": "firing",
                "value": 8.5,
                "threshold": 3.0,
                "message": "latency has received no samples for 8.5 s",
                "age_seconds": 5.5,
            }
        ]
        view["receivers"] = {}
        return view


def test_a_no_data_alert_sets_the_level_so_a_stalled_engine_does_not_read_ok(
    browser: Browser,
) -> None:
    monitor = GeometricSpeculationMonitor()
    for _ in range(20):
        monitor.record_latency(5.0)  # a healthy window, then silence
        monitor.record_acceptance(0.9)
    with running(create_app(monitor, alerting=NoDataAlerts())) as url:
        browser.page.goto(url + "/", wait_until="load", timeout=30_000)
        browser.wait(ACTIVE_ROW, arg="latency", timeout=10)
        assert browser.evaluate(BADGE, "latency")["level"] == "critical"
        assert browser.evaluate(BADGE, "acceptance")["level"] == "info"
        assert browser.evaluate(BADGE, "overall")["level"] == "critical"
        cells = browser.page.locator('#active tr[data-metric="latency"] td').all_inner_texts()
        assert cells[3:5] == ["8.5 s", "3 s"]
    assert browser.errors == []
