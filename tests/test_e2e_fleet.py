"""End to end: the exported bundle runs a fleet of three sidecars on a real Prometheus and
a real Alertmanager.

Three `mhc-monitor serve` processes with their own `instance` label each get a
steady, healthy workload. `mhc-monitor export` writes the bundle, with short
intervals and a webhook receiver on loopback; Prometheus and Alertmanager start
from its files as they are. One replica degrades to the critical, then the
emergency level: only its alerts reach the receiver, at PagerDuty's severities,
the milder levels inhibited; it recovers and the resolves arrive. Every
dashboard query, with Grafana's variables filled in, returns data from that
Prometheus, and so does every recording rule. Last, one sidecar stops and the
sidecar-down alert arrives.
"""

from __future__ import annotations

import json
import random
import re
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from mhc_monitor.rules import SIDECAR_DOWN_ALERT
from servers import Alertmanager, Budget, Prometheus, Sidecar, WebhookReceiver, wait_until

pytestmark = pytest.mark.e2e

#: Seconds the whole test may take, from the first sidecar to the last alert.
BUDGET_S = 150
WINDOW = 20
#: Seconds between two workload batches; each batch refills a whole window.
PACE_S = 0.2
REPLICAS = (("replica-a", "mhc-7b"), ("replica-b", "mhc-7b"), ("replica-c", "mhc-13b"))
DEGRADED = "replica-b"
STOPPED = "replica-c"
CRITICAL = "MhcAcceptanceCritical"
WARNING = "MhcAcceptanceWarning"
EMERGENCY = "MhcAcceptanceEmergency"


@dataclass
class Workload:
    """POSTs a window of samples to one sidecar every `PACE_S` seconds, from a thread."""

    url: str
    seed: int
    acceptance: float = 0.86
    stop: threading.Event = field(default_factory=threading.Event)
    errors: list[str] = field(default_factory=list)
    batches: int = 0
    thread: threading.Thread | None = None

    def start(self) -> None:
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def halt(self) -> None:
        """Stop sending and wait (10 s at most) for the last request to finish."""
        self.stop.set()
        if self.thread is not None:
            self.thread.join(timeout=10)

    def batch(self, rng: random.Random) -> dict[str, list[float]]:
        def around(centre: float, spread: float) -> list[float]:
            return [centre + rng.uniform(-spread, spread) for _ in range(WINDOW)]

        return {
            "acceptance": around(self.acceptance, 0.02),
            "latency_ms": around(12.0, 3.0),
            # Both signs: the curvature histogram has negative buckets.
            "curvature": around(0.0, 0.8),
            "energy": around(30.0, 5.0),
            "stability": around(0.97, 0.01),
            "sinkhorn_iters": [float(rng.randint(6, 12)) for _ in range(WINDOW)],
        }

    def run(self) -> None:
        rng = random.Random(self.seed)
        with httpx.Client(base_url=self.url, timeout=5) as client:
            while not self.stop.wait(PACE_S):
                try:
                    r = client.post("/v1/samples", json=self.batch(rng))
                    if r.status_code != 200 or r.json()["rejected"]:
                        self.errors.append(f"{r.status_code} {r.text[:200]}")
                    self.batches += 1
                except httpx.HTTPError as exc:
                    self.errors.append(repr(exc))


@dataclass
class Fleet:
    budget: Budget
    sidecars: dict[str, Sidecar]
    workloads: dict[str, Workload]
    bundle: Path
    prometheus: Prometheus
    alertmanager: Alertmanager
    receiver: WebhookReceiver


@pytest.fixture
def fleet(tmp_path: Path) -> Iterator[Fleet]:
    budget = Budget(BUDGET_S)
    sidecars: dict[str, Sidecar] = {}
    workloads: dict[str, Workload] = {}
    prometheus = Prometheus(tmp_path)
    alertmanager = Alertmanager(tmp_path)
    try:
        with WebhookReceiver() as receiver:
            for instance, model in REPLICAS:
                labels = {"instance": instance, "model": model}
                sidecars[instance] = Sidecar(tmp_path, labels, window=WINDOW).launch()
            for seed, (instance, sidecar) in enumerate(sidecars.items()):
                workloads[instance] = Workload(sidecar.wait_ready(budget.left(30)).url, seed)
            for workload in workloads.values():
                workload.start()

            bundle = tmp_path / "bundle"
            targets = [sidecar.address for sidecar in sidecars.values()]
            _export(bundle, targets, alertmanager, receiver, budget)
            alertmanager.ready_timeout = budget.left(30)
            alertmanager.start(bundle / "alertmanager.yml")
            prometheus.ready_timeout = budget.left(30)
            prometheus.start_with(bundle / "prometheus.yml")
            yield Fleet(budget, sidecars, workloads, bundle, prometheus, alertmanager, receiver)
    finally:
        for workload in workloads.values():
            workload.halt()
        prometheus.stop()
        alertmanager.stop()
        for sidecar in sidecars.values():
            sidecar.stop()
    for instance, workload in workloads.items():
        assert workload.thread is not None and not workload.thread.is_alive(), instance
        assert workload.errors == [], (instance, workload.errors[:5])
        assert workload.batches > 10, (instance, workload.batches)


def _export(
    bundle: Path,
    targets: list[str],
    alertmanager: Alertmanager,
    receiver: WebhookReceiver,
    budget: Budget,
) -> None:
    """`mhc-monitor export` with short intervals; Alertmanager's port is reserved already."""
    command = [sys.executable, "-m", "mhc_monitor", "export", str(bundle)]
    for target in targets:
        command += ["--target", target]
    command += [
        f"--alertmanager=127.0.0.1:{alertmanager.port}",
        "--prometheus-url=http://127.0.0.1:9090",
        "--scrape-interval=1",
        f"--webhook-url={receiver.url}",
        "--group-wait=1",
        "--group-interval=1",
        "--repeat-interval=3600",
        "--down-for=1",
    ]
    result = subprocess.run(
        command, capture_output=True, text=True, timeout=budget.left(30), check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr

    for tool, args in (
        ("promtool", ["check", "config", "prometheus.yml"]),
        ("amtool", ["check-config", "alertmanager.yml"]),
    ):
        path = shutil.which(tool)
        assert path, f"{tool} is required"
        check = subprocess.run(
            [path, *args],
            cwd=bundle,
            capture_output=True,
            text=True,
            timeout=budget.left(30),
            check=False,
        )
        assert check.returncode == 0, check.stdout + check.stderr


def test_fleet_alerts_inhibition_resolve_and_dashboard(fleet: Fleet) -> None:
    prom = fleet.prometheus
    started = time.monotonic()

    try:
        wait_until(
            lambda: _all_up(prom), timeout=fleet.budget.left(30), what="every target scraped"
        )
    except TimeoutError as exc:
        raise AssertionError(f"{exc}; targets: {_targets(prom)}") from None
    wait_until(
        lambda: _rules_loaded(prom),
        timeout=fleet.budget.left(30),
        what="the bundle's rules loaded",
    )

    # Healthy: the dashboard and every recording rule have data, and nothing fires.
    _assert_dashboard_has_data(fleet)
    _assert_recording_rules_have_data(fleet)
    assert prom.query('ALERTS{alertname=~"Mhc.+"}') == []

    # Degraded: one replica's acceptance window falls below the critical threshold.
    fleet.workloads[DEGRADED].acceptance = 0.4
    firing = wait_until(
        lambda: _notified(fleet.receiver, "firing"),
        timeout=fleet.budget.left(30),
        what="the critical alert at the webhook",
    )
    labels = firing["labels"]
    assert labels["alertname"] == CRITICAL
    assert labels["instance"] == DEGRADED
    assert labels["severity"] == "error"
    assert labels["level"] == "critical"
    assert labels["metric"] == "acceptance"
    assert labels["model"] == "mhc-7b"
    assert "below the critical threshold 0.5 on replica-b" in firing["annotations"]["summary"]

    # The warning of the same replica fires in Prometheus too, and Alertmanager holds
    # it back: inhibited by the critical alert, never sent.
    wait_until(
        lambda: _suppressed(fleet.alertmanager, WARNING, DEGRADED),
        timeout=fleet.budget.left(15),
        what="the warning alert inhibited in Alertmanager",
    )
    annotations = prom.query('ALERTS{alertname=~"Mhc.*", alertstate="firing"}')
    assert {(a["metric"]["alertname"], a["metric"]["instance"]) for a in annotations} == {
        (CRITICAL, DEGRADED),
        (WARNING, DEGRADED),
    }
    _assert_dashboard_has_data(fleet)
    # The in-process evaluation of the replica agrees with the rule.
    level = prom.query(f'mhc_alert_level{{instance="{DEGRADED}", metric="acceptance"}}')
    assert [sample["value"][1] for sample in level] == ["2"]

    # Worse: the emergency level pages at PagerDuty's "critical" and silences the
    # two milder levels.
    fleet.workloads[DEGRADED].acceptance = 0.2
    emergency = wait_until(
        lambda: _notified(fleet.receiver, "firing", EMERGENCY),
        timeout=fleet.budget.left(30),
        what="the emergency alert at the webhook",
    )
    assert emergency["labels"]["severity"] == "critical"
    assert emergency["labels"]["level"] == "emergency"
    assert emergency["labels"]["instance"] == DEGRADED
    for milder in (WARNING, CRITICAL):
        wait_until(
            lambda name=milder: _suppressed(fleet.alertmanager, name, DEGRADED),
            timeout=fleet.budget.left(15),
            what=f"{milder} inhibited",
        )

    # Recovered: the resolves arrive, for each level that was notified.
    fleet.workloads[DEGRADED].acceptance = 0.86
    for name in (EMERGENCY, CRITICAL):
        resolved = wait_until(
            lambda name=name: _notified(fleet.receiver, "resolved", name),
            timeout=fleet.budget.left(30),
            what=f"the resolve of {name} at the webhook",
        )
        assert resolved["labels"]["instance"] == DEGRADED
        assert resolved["endsAt"] > resolved["startsAt"]
    # A couple more group intervals: nothing else turns up.
    time.sleep(3)
    received = fleet.receiver.alerts()
    sent = [(alert["status"], alert["labels"]["alertname"]) for _, alert in received]
    assert sorted(set(sent)) == [
        ("firing", CRITICAL),
        ("firing", EMERGENCY),
        ("resolved", CRITICAL),
        ("resolved", EMERGENCY),
    ], sent
    assert {alert["labels"]["instance"] for _, alert in received} == {DEGRADED}
    assert {name for name, _ in received} == {"mhc-webhook"}

    # A replica that stops answering scrapes raises the sidecar-down alert.
    fleet.workloads[STOPPED].halt()
    fleet.sidecars[STOPPED].stop()
    down = wait_until(
        lambda: _notified(fleet.receiver, "firing", SIDECAR_DOWN_ALERT),
        timeout=fleet.budget.left(20),
        what="the sidecar-down alert at the webhook",
    )
    assert down["labels"]["instance"] == fleet.sidecars[STOPPED].address
    assert down["labels"]["job"] == "mhc-monitor"
    assert down["labels"]["severity"] == "error"
    assert time.monotonic() - started < 120


def _targets(prom: Prometheus) -> list[tuple[str, str, str, str]]:
    """(job, address, health, last error) of every scrape target."""
    active = httpx.get(f"{prom.url}/api/v1/targets", timeout=5).json()["data"]["activeTargets"]
    return [
        (t["labels"]["job"], t["discoveredLabels"]["__address__"], t["health"], t["lastError"])
        for t in active
    ]


def _all_up(prom: Prometheus) -> bool:
    up = sorted(job for job, _, health, _ in _targets(prom) if health == "up")
    return up == ["alertmanager", *["mhc-monitor"] * len(REPLICAS)]


def _rules_loaded(prom: Prometheus) -> bool:
    groups = httpx.get(f"{prom.url}/api/v1/rules", timeout=5).json()["data"]["groups"]
    rules = [rule for group in groups for rule in group["rules"]]
    return bool(rules) and all(rule["health"] == "ok" for rule in rules)


def _notified(
    receiver: WebhookReceiver, status: str, alertname: str | None = None
) -> dict[str, Any] | None:
    """The first alert received with `status` (and `alertname`, if given)."""
    for _, alert in receiver.alerts():
        if alert["status"] == status and alertname in (None, alert["labels"]["alertname"]):
            return alert
    return None


def _suppressed(am: Alertmanager, alertname: str, instance: str) -> bool:
    """Whether Alertmanager holds the alert, inhibited by another one."""
    params = {"filter": [f'alertname="{alertname}"', f'instance="{instance}"']}
    alerts = httpx.get(f"{am.url}/api/v2/alerts", params=params, timeout=5).json()
    return (
        len(alerts) == 1
        and alerts[0]["status"]["state"] == "suppressed"
        and bool(alerts[0]["status"]["inhibitedBy"])
    )


# --- the dashboard against the live Prometheus -----------------------------------------------


def _assert_dashboard_has_data(fleet: Fleet) -> None:
    """Every panel query returns a series, for every variable value Grafana would offer."""
    document = json.loads((fleet.bundle / "dashboard.json").read_text())
    prom = fleet.prometheus
    assert _bundle_interval(fleet.bundle) == "1s"
    choices = _variable_choices(document, prom)
    assert choices["job"] == ["mhc-monitor"]
    assert choices["instance"] == [instance for instance, _ in REPLICAS]
    assert choices["model"] == ["mhc-13b", "mhc-7b"]

    selections = [{name: ".*" for name in choices}]  # "All"
    selections += [{**selections[0], "instance": value} for value in choices["instance"]]
    selections += [{**selections[0], "model": value} for value in choices["model"]]
    exprs = [
        (panel["title"], target["expr"])
        for panel in document["panels"]
        for target in panel["targets"]
    ]
    assert len(exprs) >= 20

    queries = [
        (title, _fill(expr, selection)) for selection in selections for title, expr in exprs
    ]
    # Rates need a few scrapes; after that every query must answer at once.
    wait_until(
        lambda: not _empty(prom, queries),
        timeout=fleet.budget.left(20),
        what="data in every panel",
    )
    assert _empty(prom, queries) == []


def _empty(prom: Prometheus, queries: list[tuple[str, str]]) -> list[str]:
    """The queries, as "title: expr", whose result is empty."""
    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(prom.query, [expr for _, expr in queries]))
    return [
        f"{title}: {expr}"
        for (title, expr), result in zip(queries, results, strict=True)
        if not result
    ]


def _assert_recording_rules_have_data(fleet: Fleet) -> None:
    """Every recording rule of the bundle has a value, unless the sidecars lack its input."""
    scrape = httpx.get(f"{fleet.sidecars[DEGRADED].url}/metrics", timeout=5).text
    rules = yaml.safe_load((fleet.bundle / "rules.yml").read_text())
    queries = [
        (f"record {rule['record']}", rule["record"])
        for group in rules["groups"]
        for rule in group["rules"]
        if "record" in rule and _inputs_exposed(rule["expr"], scrape)
    ]
    assert len(queries) >= 30
    wait_until(
        lambda: not _empty(fleet.prometheus, queries),
        timeout=fleet.budget.left(20),
        what="a value for every recording rule",
    )


def _inputs_exposed(expr: str, scrape: str) -> bool:
    series = re.findall(r"\b(mhc_[a-z_]+)(?=[{\[])", expr)
    return all(re.search(rf"^{name}[{{ ]", scrape, re.MULTILINE) for name in series)


def _variable_choices(document: dict[str, Any], prom: Prometheus) -> dict[str, list[str]]:
    """The values of the query variables, resolved in order as Grafana does."""
    choices: dict[str, list[str]] = {}
    for variable in document["templating"]["list"]:
        if variable["type"] != "query":
            continue
        match = re.fullmatch(r"label_values\((.+), (\w+)\)", variable["query"])
        assert match, variable["query"]
        selector = _fill(match.group(1), {name: ".*" for name in choices})
        r = httpx.get(
            f"{prom.url}/api/v1/label/{match.group(2)}/values",
            params={"match[]": selector},
            timeout=5,
        )
        values: list[str] = r.json()["data"]
        assert values, variable["query"]
        choices[variable["name"]] = sorted(values)
    return choices


def _fill(expr: str, selection: dict[str, str]) -> str:
    """Grafana's interpolation for a 1 s scrape interval (the data source's timeInterval)."""
    # $__rate_interval = max(4 x scrape interval, $__interval + scrape interval).
    filled = expr.replace("$__rate_interval", "4s").replace("$__interval", "1s")
    for name, value in selection.items():
        filled = filled.replace(f"${name}", value)
    assert "$" not in filled, filled
    return filled


def _bundle_interval(bundle: Path) -> str:
    datasource = yaml.safe_load((bundle / "grafana/provisioning/datasources/mhc.yml").read_text())
    interval: str = datasource["datasources"][0]["jsonData"]["timeInterval"]
    return interval
