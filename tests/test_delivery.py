"""Delivery to contract-checking PagerDuty and Slack receivers on loopback, with faults."""

from __future__ import annotations

import json
import logging
import random
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from mhc_monitor import GeometricSpeculationMonitor
from mhc_monitor.alerts import AlertConfig, make_dedup_key
from mhc_monitor.config import (
    AlertingSettings,
    DeliverySettings,
    LifecycleSettings,
    ReceiverSettings,
    load_config,
)
from mhc_monitor.delivery import Alerting
from mhc_monitor.delivery.dispatcher import TokenBucket, backoff_delay
from mhc_monitor.delivery.notifiers import classify_status, parse_retry_after
from mhc_monitor.pagerduty import pagerduty_severity
from receivers import PagerDutyReceiver, SlackReceiver

ROUTING_KEY = "R0uTiNgKeY0123456789abcdefABCDEF"
FAST = DeliverySettings(timeout_s=2.0, backoff_initial_s=0.01, backoff_max_s=0.05, jitter=0.5)


@pytest.fixture
def pagerduty() -> Iterator[PagerDutyReceiver]:
    with PagerDutyReceiver() as receiver:
        yield receiver


@pytest.fixture
def slack() -> Iterator[SlackReceiver]:
    with SlackReceiver() as receiver:
        yield receiver


def settings(
    pagerduty: PagerDutyReceiver | None,
    slack: SlackReceiver | None = None,
    delivery: DeliverySettings = FAST,
    margin: float = 0.02,
) -> AlertingSettings:
    receivers = []
    if pagerduty is not None:
        receivers.append(
            ReceiverSettings.pagerduty(
                ROUTING_KEY, url=pagerduty.url, rate_per_minute=60_000, burst=100
            )
        )
    if slack is not None:
        receivers.append(ReceiverSettings.slack(slack.url, rate_per_minute=60_000, burst=100))
    return AlertingSettings(
        lifecycle=LifecycleSettings(clear_margin=margin, no_data_after_s=None),
        delivery=delivery,
        receivers=tuple(receivers),
    )


def monitor() -> GeometricSpeculationMonitor:
    return GeometricSpeculationMonitor(window=1, labels={"model": "m"}, source="gpu-0")


def drive(alerting: Alerting, values: list[float], record: str = "record_acceptance") -> None:
    now = time.time()
    for i, value in enumerate(values):
        getattr(alerting.monitor, record)(value)
        alerting.step(now + i * 0.001)


def pd_events(receiver: PagerDutyReceiver) -> list[tuple[str, str, str | None]]:
    return [
        (e["dedup_key"], e["event_action"], (e.get("payload") or {}).get("severity"))
        for e in receiver.accepted()
    ]


BOUNCE = [0.69, 0.71, 0.69, 0.705, 0.699, 0.71, 0.69, 0.72]
ESCALATION = [0.65, 0.45, 0.6, 0.75]


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        (BOUNCE, [("trigger", "warning"), ("resolve", None)]),
        (
            ESCALATION,
            [
                ("trigger", "warning"),
                ("trigger", "error"),
                ("trigger", "warning"),
                ("resolve", None),
            ],
        ),
    ],
)
def test_pagerduty_gets_one_event_per_state(
    pagerduty: PagerDutyReceiver, values: list[float], expected: list[tuple[str, str | None]]
) -> None:
    alerting = Alerting(monitor(), settings(pagerduty))
    alerting.start()
    try:
        drive(alerting, values)
        assert alerting.flush(10)
    finally:
        alerting.stop(2)
    key = make_dedup_key("gpu-0", {"model": "m"}, "acceptance")
    assert pd_events(pagerduty) == [(key, action, sev) for action, sev in expected]
    assert pagerduty.rejected() == []
    assert expected[1][1] in (
        None,
        pagerduty_severity(AlertConfig().evaluate("acceptance", 0.45)[0]),
    )


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_half_of_all_requests_failing_loses_and_repeats_nothing(
    pagerduty: PagerDutyReceiver, slack: SlackReceiver, seed: int
) -> None:
    pagerduty.fail_ratio(0.5, seed=seed, retry_after=0.01)
    slack.fail_ratio(0.5, seed=seed + 100, retry_after=0.01)
    alerting = Alerting(monitor(), settings(pagerduty, slack), rng=random.Random(seed))
    alerting.start()
    try:
        drive(alerting, ESCALATION)
        drive(alerting, [3.0, 600.0, 1.0], record="record_latency")
        assert alerting.flush(20)
    finally:
        alerting.stop(2)
    accepted = pd_events(pagerduty)
    acc = make_dedup_key("gpu-0", {"model": "m"}, "acceptance")
    lat = make_dedup_key("gpu-0", {"model": "m"}, "latency")
    assert Counter(accepted) == Counter(
        [
            (acc, "trigger", "warning"),
            (acc, "trigger", "error"),
            (acc, "trigger", "warning"),
            (acc, "resolve", None),
            (lat, "trigger", "critical"),
            (lat, "resolve", None),
        ]
    )
    # Per dedup key, in order: a resolve never overtakes its trigger.
    assert [a for k, a, _ in accepted if k == acc] == ["trigger"] * 3 + ["resolve"]
    headlines = [m["text"].split(":")[0] for m in slack.accepted()]
    assert sorted(headlines) == sorted(
        [
            "[WARNING] acceptance on gpu-0",
            "[CRITICAL] acceptance on gpu-0",
            "[WARNING] acceptance on gpu-0",
            "[RESOLVED] acceptance on gpu-0",
            "[EMERGENCY] latency on gpu-0",
            "[RESOLVED] latency on gpu-0",
        ]
    )
    assert pagerduty.faults() and slack.faults()
    counts = alerting.dispatcher.counts()
    assert counts["pagerduty"]["outcomes"]["sent"] == 6
    assert counts["pagerduty"]["outcomes"]["retried"] == len(pagerduty.faults())
    assert counts["slack"]["outcomes"]["retried"] == len(slack.faults())


def test_retry_after_is_honoured(pagerduty: PagerDutyReceiver) -> None:
    pagerduty.rate_limit_next(1, retry_after=1)
    seen: dict[int, float] = {}

    def note(receiver: PagerDutyReceiver) -> bool:
        seen.setdefault(len(receiver.exchanges()), time.monotonic())
        return len(receiver.accepted()) == 1

    alerting = Alerting(monitor(), settings(pagerduty))
    alerting.start()
    try:
        drive(alerting, [0.6])
        assert pagerduty.wait_for(note, timeout=10)
    finally:
        alerting.stop(2)
    assert [e.status for e in pagerduty.exchanges()] == [429, 202]
    # The backoff alone would retry after 10 ms; the receiver asked for a second.
    assert seen[2] - seen[1] >= 0.95
    counts = alerting.dispatcher.counts()["pagerduty"]
    assert counts["failures"] == {"rate_limited": 1}


def test_a_400_is_permanent_counted_and_not_retried(pagerduty: PagerDutyReceiver) -> None:
    pagerduty.fail_next(1, status=400)
    alerting = Alerting(monitor(), settings(pagerduty))
    alerting.start()
    try:
        drive(alerting, [0.6, 0.9])
        assert alerting.flush(10)
        time.sleep(0.1)
    finally:
        alerting.stop(2)
    assert [e.status for e in pagerduty.exchanges()] == [400, 202]
    assert [a for _, a, _ in pd_events(pagerduty)] == ["resolve"]
    counts = alerting.dispatcher.counts()["pagerduty"]
    assert counts["outcomes"] == {"sent": 1, "retried": 0, "failed": 1, "dropped": 0}
    assert counts["failures"] == {"client_error": 1}
    registry = CollectorRegistry(auto_describe=False)
    registry.register(alerting.collector())
    assert (
        registry.get_sample_value(
            "mhc_notifications_total", {"model": "m", "receiver": "pagerduty", "outcome": "failed"}
        )
        == 1.0
    )


def test_stop_leaves_the_rest_in_the_outbox_and_a_new_process_resumes(
    pagerduty: PagerDutyReceiver, tmp_path: Path
) -> None:
    store = tmp_path / "alerts.sqlite3"
    pagerduty.stop()
    first = Alerting(monitor(), settings(pagerduty), store)
    first.start()
    drive(first, [0.6, 0.4, 0.9])
    time.sleep(0.2)
    view = first.receivers_view()["receivers"]["pagerduty"]
    assert view["queued"] == 3
    assert view["outcomes"]["retried"] >= 1
    assert view["failures"].keys() == {"network"}
    assert first.stop(0.2)

    pagerduty.start()
    second = Alerting(monitor(), settings(pagerduty), store)
    second.start()
    try:
        assert second.flush(10)
    finally:
        second.stop(2)
    assert [(a, s) for _, a, s in pd_events(pagerduty)] == [
        ("trigger", "warning"),
        ("trigger", "error"),
        ("resolve", None),
    ]


def test_a_firing_alert_survives_a_restart_and_resolves(
    pagerduty: PagerDutyReceiver, tmp_path: Path
) -> None:
    store = tmp_path / "alerts.sqlite3"
    first = Alerting(monitor(), settings(pagerduty), store)
    first.start()
    drive(first, [0.6])
    assert first.flush(10)
    first.stop(1)
    second = Alerting(monitor(), settings(pagerduty), store)
    assert [a["state"] for a in second.alerts_view()["active"]] == ["firing"]
    second.start()
    try:
        drive(second, [0.95])
        assert second.flush(10)
    finally:
        second.stop(1)
    assert [a for _, a, _ in pd_events(pagerduty)] == ["trigger", "resolve"]


def test_alerts_view_shows_history_with_outcomes(pagerduty: PagerDutyReceiver) -> None:
    alerting = Alerting(monitor(), settings(pagerduty))
    alerting.start()
    try:
        drive(alerting, [0.6])
        assert alerting.flush(10)
        view = alerting.alerts_view()
    finally:
        alerting.stop(1)
    json.dumps(view, allow_nan=False)
    (active,) = view["active"]
    assert active["metric"] == "acceptance"
    assert active["state"] == "firing"
    assert active["level"] == "warning"
    assert active["age_seconds"] >= 0
    (entry,) = view["history"]
    assert (entry["previous"], entry["state"], entry["event"]) == ("ok", "firing", "trigger")
    assert [(n["receiver"], n["status"], n["attempts"]) for n in entry["notifications"]] == [
        ("pagerduty", "delivered", 1)
    ]


def test_no_receiver_means_the_log(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="mhc_monitor")
    alerting = Alerting(monitor(), AlertingSettings(delivery=FAST))
    alerting.start()
    try:
        drive(alerting, [0.6, 0.95])
        assert alerting.flush(5)
    finally:
        alerting.stop(1)
    lines = [
        r.getMessage() for r in caplog.records if r.name == "mhc_monitor.delivery.notifiers.log"
    ]
    assert [line.split()[1] for line in lines] == ["trigger", "resolve"]
    assert alerting.dispatcher.counts()["log"]["outcomes"]["sent"] == 2


def test_secrets_never_leak(
    pagerduty: PagerDutyReceiver,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    key_marker = "SeCrEtKeYmArKeR0123456789abcdefZ"
    url_marker = "SLACKSECRETMARKER7c1e"
    with SlackReceiver(webhook_path=f"/services/T0/B0/{url_marker}") as slack:
        monkeypatch.setenv("MHC_PAGERDUTY_ROUTING_KEY", key_marker)
        monkeypatch.setenv("MHC_SLACK_WEBHOOK_URL", slack.url)
        config = tmp_path / "mhc.toml"
        config.write_text(
            f'[receivers.pagerduty]\nurl = "{pagerduty.url}"\n'
            "[receivers.slack]\nrate_per_minute = 6000\n"
            "[delivery]\nbackoff_initial = 0.01\nbackoff_max = 0.02\n"
        )
        caplog.set_level(logging.DEBUG)
        # The CLI turns httpx's request lines down; this test reads them, whatever ran before.
        caplog.set_level(logging.DEBUG, logger="httpx")
        loaded = load_config(config)
        store = tmp_path / "alerts.sqlite3"
        slack.fail_next(2, status=503)
        pagerduty.fail_next(1, status=400)
        alerting = Alerting(monitor(), loaded.alerting, store)
        alerting.start()
        try:
            drive(alerting, [0.6, 0.9])
            assert alerting.flush(10)
        finally:
            alerting.stop(2)
        assert len(slack.accepted()) == 2
    registry = CollectorRegistry(auto_describe=False)
    registry.register(alerting.collector())
    exposed = generate_latest(registry).decode()
    texts: list[Any] = [
        caplog.text,
        exposed,
        repr(loaded),
        str(loaded),
        json.dumps(alerting.alerts_view()),
        json.dumps(alerting.receivers_view()),
        store.read_bytes().decode("latin-1"),
    ]
    for text in texts:
        assert key_marker not in text
        assert url_marker not in text
    assert "mhc_notification_failures_total" in exposed
    # httpx logs each request line; the webhook path in it is replaced.
    assert 'HTTP Request: POST *** "HTTP/1.0 503' in caplog.text
    assert "alert store failure" not in caplog.text


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        (200, ("delivered", "ok")),
        (202, ("delivered", "ok")),
        (400, ("permanent", "client_error")),
        (403, ("permanent", "client_error")),
        (404, ("permanent", "client_error")),
        (408, ("retryable", "client_timeout")),
        (429, ("retryable", "rate_limited")),
        (500, ("retryable", "server_error")),
        (503, ("retryable", "server_error")),
    ],
)
def test_status_classification(status: int, expected: tuple[str, str]) -> None:
    assert classify_status(status) == expected


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("3", 3.0),
        ("0.5", 0.5),
        ("-1", 0.0),
        ("soon", None),
        (None, None),
        ("Wed, 21 Oct 2015 07:28:10 GMT", 10.0),
    ],
)
def test_retry_after_parsing(header: str | None, expected: float | None) -> None:
    now = 1445412480.0  # 2015-10-21 07:28:00 UTC
    assert parse_retry_after(header, now) == expected


def test_backoff_doubles_caps_and_never_undercuts_retry_after() -> None:
    delivery = DeliverySettings(backoff_initial_s=1.0, backoff_max_s=8.0, jitter=0.0)
    rng = random.Random(0)
    assert [backoff_delay(n, delivery, None, rng) for n in range(1, 6)] == [1, 2, 4, 8, 8]
    assert backoff_delay(1, delivery, 30.0, rng) == 30.0
    jittered = DeliverySettings(backoff_initial_s=1.0, backoff_max_s=8.0, jitter=0.5)
    delays = [backoff_delay(3, jittered, None, rng) for _ in range(200)]
    assert min(delays) >= 2.0 and max(delays) <= 4.0 and len(set(delays)) > 100


def test_token_bucket_paces_to_its_rate() -> None:
    bucket = TokenBucket(rate_per_s=2.0, burst=3, now=0.0)
    sent = []
    now = 0.0
    while len(sent) < 9:
        wait = bucket.wait_time(now)
        now += wait
        bucket.take(now)
        sent.append(now)
    assert sent == pytest.approx([0, 0, 0, 0.5, 1.0, 1.5, 2.0, 2.5, 3.0])
