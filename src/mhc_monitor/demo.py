"""`mhc-monitor demo`: the embedded engine, monitored, served and summarised live."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any, Protocol

from .alerts import AlertLevel
from .config import AlertingSettings, LifecycleSettings
from .metrics import METRICS, MetricName
from .monitor import GeometricSpeculationMonitor, MonitorSummary
from .service import AlertSource, create_app

__all__ = ["DEMO_ALERTING", "format_summary_line", "run_demo"]

logger = logging.getLogger(__name__)

#: The demo's alerting without a configuration file: evaluated four times a second, so a
#: window that turns over in about a second shows an alert fire, escalate and resolve.
DEMO_ALERTING = AlertingSettings(lifecycle=LifecycleSettings(for_s=0.0), interval_s=0.25)

_SHORT = {
    MetricName.ACCEPTANCE: ("acceptance", "{:.3f}"),
    MetricName.LATENCY: ("latency", "{:.2f}ms"),
    MetricName.SINKHORN_ITERATIONS: ("sinkhorn", "{:.1f}"),
    MetricName.STABILITY: ("stability", "{:.3f}"),
    MetricName.ENERGY: ("energy", "{:.2f}"),
    MetricName.CURVATURE: ("curvature", "{:+.3f}"),
}
_LEVEL_MARK = {
    AlertLevel.INFO: "ok",
    AlertLevel.WARNING: "WARN",
    AlertLevel.CRITICAL: "CRIT",
    AlertLevel.EMERGENCY: "EMERG",
}


class _Server(Protocol):
    host: str
    port: int

    def run(self) -> None: ...

    def stop(self) -> None: ...


def format_summary_line(summary: MonitorSummary, elapsed: float, steps: int) -> str:
    """One compact line: time, steps and rate, overall level, each metric's value and level."""
    rate = steps / elapsed if elapsed > 0 else 0.0
    parts = [
        f"{elapsed:6.1f}s",
        f"steps {steps} ({rate:.0f}/s)",
        f"level {summary.level.name}",
    ]
    for spec in METRICS:
        m = summary.metrics[spec.name.value]
        name, fmt = _SHORT[spec.name]
        value = "-" if m.stats.count == 0 else fmt.format(m.value)
        parts.append(f"{name} {value} {_LEVEL_MARK[m.level]}")
    return "  ".join(parts)


def run_demo(
    monitor: GeometricSpeculationMonitor,
    *,
    server_factory: Callable[[Any], _Server],
    duration: float,
    degrade_after: float | None,
    degrade_for: float | None,
    seed: int,
    echo: Callable[[str], None] | None,
    alerting: AlertSource | None = None,
    summary_every: float = 2.0,
    rate: float = 0.0,
    token: str | None = None,
) -> int:
    """Run the workload into `monitor` with the sidecar serving it; returns the steps run.

    Stops after `duration` seconds (0: never) or when the server is told to
    exit (Ctrl-C, SIGTERM). `rate` caps the engine's steps per second (0: as
    fast as one core runs it). `token`, when given, guards the sidecar's
    POST /v1/samples as in `create_app`.
    """
    from .workload import run_workload

    server = server_factory(create_app(monitor, alerting=alerting, token=token))
    stop = threading.Event()
    steps = [0]
    started = time.monotonic()

    interval = 1.0 / rate if rate else 0.0

    def count(_: object) -> None:
        steps[0] += 1
        if interval:
            # Pace the engine: sleep until this step's slot, never to catch up on a backlog.
            behind = started + steps[0] * interval - time.monotonic()
            if behind > 0:
                time.sleep(behind)

    recover_after = None
    if degrade_after is not None and degrade_for is not None:
        recover_after = degrade_after + degrade_for

    def work() -> None:
        try:
            run_workload(
                monitor,
                stop=stop,
                degrade_after=degrade_after,
                recover_after=recover_after,
                seed=seed,
                on_step=count,
            )
        except Exception:
            logger.exception("the demo workload failed; stopping")
            server.stop()

    worker = threading.Thread(target=work, name="mhc-demo-workload", daemon=True)

    def supervise() -> None:
        next_line = started + summary_every
        while not stop.wait(0.1):
            now = time.monotonic()
            if duration and now - started >= duration:
                server.stop()
                return
            if echo is not None and now >= next_line:
                echo(format_summary_line(monitor.get_summary(), now - started, steps[0]))
                next_line += summary_every

    supervisor = threading.Thread(target=supervise, name="mhc-demo-summary", daemon=True)
    if echo is not None:
        echo(
            f"mhc-monitor demo: live page on http://{server.host}:{server.port}/ "
            "(also /metrics, /v1/summary, /v1/alerts); Ctrl-C stops"
        )
    worker.start()
    supervisor.start()
    try:
        server.run()
    finally:
        stop.set()
        worker.join(timeout=10)
        supervisor.join(timeout=5)
    if echo is not None:
        elapsed = time.monotonic() - started
        echo(format_summary_line(monitor.get_summary(), elapsed, steps[0]))
        echo(f"stopped after {elapsed:.1f} s and {steps[0]} steps")
    return steps[0]
