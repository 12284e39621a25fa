"""The alert lifecycle as a pure state machine: time is whatever the test says."""

from __future__ import annotations

import math

import pytest

from mhc_monitor.alerts import AlertConfig, AlertLevel, make_dedup_key, to_float32
from mhc_monitor.config import LifecycleSettings
from mhc_monitor.delivery.lifecycle import (
    AlertKind,
    AlertState,
    Evaluation,
    EventKind,
    Lifecycle,
    Transition,
    clear_threshold,
)
from mhc_monitor.metrics import MetricName

CONFIG = AlertConfig()
SOURCE = "gpu-0"
LABELS = {"model": "m"}


def lifecycle(**settings: object) -> Lifecycle:
    return Lifecycle(CONFIG, LifecycleSettings(**settings), source=SOURCE, labels=LABELS)  # type: ignore[arg-type]


def evaluation(metric: str, value: float, total: int = 1) -> Evaluation:
    level, threshold = CONFIG.evaluate(metric, value)
    return Evaluation(MetricName(metric), level, value, threshold, total)


def run(
    life: Lifecycle, metric: str, values: list[float], start: float = 1000.0, dt: float = 1.0
) -> list[Transition]:
    out: list[Transition] = []
    for i, value in enumerate(values):
        out.extend(life.step(start + i * dt, [evaluation(metric, value, total=i + 1)]))
    return out


def events(transitions: list[Transition]) -> list[tuple[str, str]]:
    return [(str(t.event), t.alert.level.name) for t in transitions if t.event is not None]


@pytest.mark.parametrize(
    ("metric", "threshold", "margin", "value", "cleared"),
    [
        ("acceptance", 0.7, 0.02, 0.714, True),
        ("acceptance", 0.7, 0.02, 0.7139, False),
        ("acceptance", 0.7, 0.02, 0.705, False),
        ("latency", 50.0, 0.1, 45.0, True),
        ("latency", 50.0, 0.1, 45.01, False),
        ("latency", 50.0, 0.1, 30.0, True),
        ("curvature", 2.0, 0.05, -1.9, True),
        ("curvature", 2.0, 0.05, -1.95, False),
        ("stability", 0.9, 0.0, 0.9, True),
    ],
)
def test_clear_threshold_is_the_margin_towards_healthy(
    metric: str, threshold: float, margin: float, value: float, cleared: bool
) -> None:
    life = Lifecycle(
        CONFIG,
        LifecycleSettings(clear_margin=margin, no_data_after_s=None),
        source=SOURCE,
        labels=LABELS,
    )
    bad = -2.5 if metric == "curvature" else (0.69 if metric != "latency" else 60.0)
    if metric == "stability":
        bad = 0.85
    fired = run(life, metric, [bad])
    assert events(fired) == [("trigger", "WARNING")]
    later = life.step(2000.0, [evaluation(metric, value, total=2)])
    assert [t.event for t in later] == ([EventKind.RESOLVE] if cleared else [])
    expected = threshold * (1 - margin) if metric != "acceptance" else threshold * (1 + margin)
    if metric == "stability":
        expected = threshold * (1 + margin)
    assert clear_threshold(metric, threshold, margin) == pytest.approx(expected)


@pytest.mark.parametrize(
    ("metric", "values", "expected"),
    [
        # Bouncing around the warning threshold: one trigger, one resolve.
        (
            "acceptance",
            [0.69, 0.71, 0.69, 0.705, 0.699, 0.71, 0.69, 0.72],
            [("trigger", "WARNING"), ("resolve", "WARNING")],
        ),
        (
            "latency",
            [51.0, 49.0, 50.5, 46.0, 50.1, 49.9, 44.0],
            [("trigger", "WARNING"), ("resolve", "WARNING")],
        ),
        # Escalation and de-escalation are updates; one resolve.
        (
            "acceptance",
            [0.65, 0.45, 0.49, 0.505, 0.6, 0.75],
            [
                ("trigger", "WARNING"),
                ("update", "CRITICAL"),
                ("update", "WARNING"),
                ("resolve", "WARNING"),
            ],
        ),
        (
            "latency",
            [60.0, 600.0, 120.0, 70.0, 10.0],
            [
                ("trigger", "WARNING"),
                ("update", "EMERGENCY"),
                ("update", "CRITICAL"),
                ("update", "WARNING"),
                ("resolve", "WARNING"),
            ],
        ),
        ("acceptance", [0.9, 0.8, math.nan, 0.7], []),
    ],
)
def test_event_sequences(
    metric: str, values: list[float], expected: list[tuple[str, str]]
) -> None:
    life = lifecycle(clear_margin=0.02 if metric == "acceptance" else 0.1, no_data_after_s=None)
    transitions = run(life, metric, values)
    assert events(transitions) == expected
    keys = {t.dedup_key for t in transitions}
    assert keys <= {make_dedup_key(SOURCE, LABELS, metric)}
    assert life.active() == []


def test_for_duration_holds_an_alert_pending_then_fires() -> None:
    life = lifecycle(for_s=10.0, no_data_after_s=None)
    first = life.step(0.0, [evaluation("latency", 60.0)])
    assert [(t.previous, t.state, t.event) for t in first] == [
        (AlertState.OK, AlertState.PENDING, None)
    ]
    assert life.step(9.999, [evaluation("latency", 60.0)]) == []
    fired = life.step(10.0, [evaluation("latency", 120.0)])
    assert [(t.state, t.event, t.alert.level) for t in fired] == [
        (AlertState.FIRING, EventKind.TRIGGER, AlertLevel.CRITICAL)
    ]


def test_pending_that_recovers_never_fires() -> None:
    life = lifecycle(for_by_metric={"latency": 5.0}, no_data_after_s=None)
    transitions = run(life, "latency", [60.0, 60.0, 40.0, 60.0, 40.0], dt=2.0)
    assert [(t.previous, t.state) for t in transitions] == [
        (AlertState.OK, AlertState.PENDING),
        (AlertState.PENDING, AlertState.OK),
        (AlertState.OK, AlertState.PENDING),
        (AlertState.PENDING, AlertState.OK),
    ]
    assert all(t.event is None for t in transitions)


def test_repeat_interval_resends_while_firing() -> None:
    life = lifecycle(repeat_interval_s=100.0, no_data_after_s=None)
    times = [0.0, 50.0, 99.9, 100.0, 150.0, 200.0]
    got = [
        (at, str(t.event))
        for at in times
        for t in life.step(at, [evaluation("energy", 150.0)])
        if t.event is not None
    ]
    assert got == [(0.0, "trigger"), (100.0, "repeat"), (200.0, "repeat")]


def test_keep_firing_for_delays_the_resolve() -> None:
    life = lifecycle(keep_firing_for_s=30.0, no_data_after_s=None)
    assert events(life.step(0.0, [evaluation("energy", 150.0)])) == [("trigger", "WARNING")]
    assert life.step(10.0, [evaluation("energy", 10.0)]) == []
    assert life.step(39.0, [evaluation("energy", 10.0)]) == []
    assert events(life.step(40.0, [evaluation("energy", 10.0)])) == [("resolve", "WARNING")]


def test_an_empty_window_keeps_a_firing_alert_firing() -> None:
    life = lifecycle(no_data_after_s=None)
    run(life, "stability", [0.7])
    assert (
        life.step(5.0, [Evaluation(MetricName.STABILITY, AlertLevel.INFO, math.nan, None, 1)])
        == []
    )
    assert [a.state for a in life.active()] == [AlertState.FIRING]


def test_no_data_fires_after_the_quiet_time_and_resolves_on_a_sample() -> None:
    life = lifecycle(no_data_after_s=60.0)
    key = make_dedup_key(SOURCE, LABELS, "acceptance/no_data")
    seen = []
    totals = {0.0: 5, 30.0: 6, 89.0: 6, 90.0: 6, 200.0: 6, 201.0: 7}
    for at, total in totals.items():
        for t in life.step(at, [evaluation("acceptance", 0.9, total=total)]):
            seen.append((at, t.kind, str(t.event), t.dedup_key))
    assert seen == [
        (90.0, AlertKind.NO_DATA, "trigger", key),
        (201.0, AlertKind.NO_DATA, "resolve", key),
    ]


def test_a_metric_that_never_had_samples_raises_no_no_data_alert() -> None:
    life = lifecycle(no_data_after_s=1.0)
    for at in (0.0, 10.0, 1000.0):
        assert life.step(at, [evaluation("energy", math.nan, total=0)]) == []


def test_restored_firing_alert_resolves_when_it_clears() -> None:
    first = lifecycle(no_data_after_s=None)
    run(first, "latency", [200.0])
    active = first.active()
    second = lifecycle(no_data_after_s=None)
    second.restore(active)
    assert second.step(50.0, [evaluation("latency", 130.0)]) == []
    resolved = second.step(51.0, [evaluation("latency", 5.0)])
    assert events(resolved) == [("resolve", "CRITICAL")]
    assert resolved[0].dedup_key == active[0].dedup_key


def test_a_restored_alert_with_no_samples_since_the_restart_adds_a_no_data_alert() -> None:
    first = lifecycle(no_data_after_s=None)
    run(first, "latency", [200.0])
    second = lifecycle(no_data_after_s=60.0)
    second.restore(first.active())
    # The new process's window is empty and its sample count 0.
    assert second.step(5000.0, [evaluation("latency", math.nan, total=0)]) == []
    assert second.step(5059.0, [evaluation("latency", math.nan, total=0)]) == []
    fired = second.step(5060.0, [evaluation("latency", math.nan, total=0)])
    assert [(t.kind, t.event) for t in fired] == [(AlertKind.NO_DATA, EventKind.TRIGGER)]
    assert fired[0].alert.message == "latency has received no samples for 60 s (limit 60 s)"
    # A sample resolves the no-data alert; the restored threshold alert goes on from it.
    later = second.step(5061.0, [evaluation("latency", 130.0, total=1)])
    assert [(t.kind, t.event) for t in later] == [(AlertKind.NO_DATA, EventKind.RESOLVE)]


def test_float32_comparison_matches_the_recorded_samples() -> None:
    # 0.714 recorded is float32(0.714); it must count as back at the clear threshold.
    life = lifecycle(clear_margin=0.02, no_data_after_s=None)
    run(life, "acceptance", [0.69])
    resolved = life.step(5.0, [evaluation("acceptance", to_float32(0.714))])
    assert events(resolved) == [("resolve", "WARNING")]


@pytest.mark.parametrize(
    ("metric", "values", "messages"),
    [
        (
            # Critical at 0.45; 0.72 is within the warning threshold 0.7 but short of
            # its clear threshold 0.735: held at warning, and the message says so.
            "acceptance",
            [0.45, 0.72],
            [
                "acceptance mean 0.45 is below the critical threshold 0.5",
                "acceptance mean 0.72 has not yet cleared 0.735, the clear threshold of the "
                "warning level (threshold 0.7)",
            ],
        ),
        (
            # 0.6 is really below the warning threshold: a plain crossing.
            "acceptance",
            [0.45, 0.6],
            [
                "acceptance mean 0.45 is below the critical threshold 0.5",
                "acceptance mean 0.6 is below the warning threshold 0.7",
            ],
        ),
        (
            "latency",
            [120.0, 48.0],
            [
                "latency mean 120 ms is above the critical threshold 100 ms",
                "latency mean 48 ms has not yet cleared 47.5 ms, the clear threshold of the "
                "warning level (threshold 50 ms)",
            ],
        ),
    ],
)
def test_de_escalation_messages_say_why_the_level_holds(
    metric: str, values: list[float], messages: list[str]
) -> None:
    life = lifecycle(clear_margin=0.05, no_data_after_s=None)
    transitions = [t for t in run(life, metric, values) if t.event is not None]
    assert [t.alert.message for t in transitions] == messages
