"""The alert lifecycle: ok -> pending -> firing -> resolved, as a pure state machine.

`Lifecycle.step(now, evaluations)` takes the time and one evaluation per
metric and returns the transitions it caused; nothing else moves it, so a test
controls time exactly and a background evaluator calls it on the real clock.

- A metric beyond a threshold is pending for its `for` time, then fires.
- A firing alert changes level without hysteresis upwards and with it
  downwards, and clears only once the value is past the clear threshold of
  every level (the threshold moved by the relative clear margin towards
  healthy): a value bouncing around a threshold fires once and resolves once.
- Escalation and de-escalation are updates of the same alert (same dedup key).
- A firing alert is sent again every repeat interval.
- A metric that had samples and gets none for `no_data_after` fires a
  separate "no data" alert: a dead engine must not look healthy.
- An empty window (NaN) keeps a firing alert firing: no data is not health.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from types import MappingProxyType

from ..alerts import (
    Alert,
    AlertConfig,
    AlertLevel,
    clear_threshold,
    describe_clearing,
    describe_crossing,
    describe_holding,
    make_dedup_key,
    to_float32,
)
from ..config import LifecycleSettings
from ..metrics import Direction, MetricName, spec_for

__all__ = [
    "ActiveAlert",
    "AlertKind",
    "AlertState",
    "Evaluation",
    "EventKind",
    "Lifecycle",
    "Transition",
    "clear_threshold",
]


class AlertState(enum.StrEnum):
    """Where an alert is in its lifecycle."""

    OK = "ok"
    PENDING = "pending"
    FIRING = "firing"
    RESOLVED = "resolved"


class EventKind(enum.StrEnum):
    """The notification a transition asks for."""

    TRIGGER = "trigger"
    UPDATE = "update"
    REPEAT = "repeat"
    RESOLVE = "resolve"


class AlertKind(enum.StrEnum):
    """A threshold alert, or a metric that stopped receiving samples."""

    THRESHOLD = "threshold"
    NO_DATA = "no_data"


@dataclass(frozen=True)
class Evaluation:
    """One metric evaluated at one moment: level, value, threshold, samples ever recorded."""

    metric: MetricName
    level: AlertLevel
    value: float
    threshold: float | None
    samples_total: int


@dataclass(frozen=True)
class ActiveAlert:
    """An alert that is pending or firing, as kept in the store across restarts."""

    dedup_key: str
    metric: MetricName
    kind: AlertKind
    state: AlertState
    level: AlertLevel
    value: float
    threshold: float
    message: str
    since: float
    fired_at: float | None
    last_sent: float | None


@dataclass(frozen=True)
class Transition:
    """One state change of one alert; `event` is the notification to send, if any."""

    at: float
    previous: AlertState
    state: AlertState
    event: EventKind | None
    kind: AlertKind
    alert: Alert

    @property
    def dedup_key(self) -> str:
        """The alert's dedup key."""
        return self.alert.dedup_key

    @property
    def action(self) -> str | None:
        """The receiver action: "trigger" (trigger, update, repeat), "resolve", or None."""
        if self.event is None:
            return None
        return "resolve" if self.event is EventKind.RESOLVE else "trigger"


def _is_cleared(metric: str, value: float, clear: float) -> bool:
    spec = spec_for(metric)
    # float32, as the samples and the thresholds are compared in alerts.py.
    v, c = to_float32(value), to_float32(clear)
    if spec.direction is Direction.LOWER_IS_WORSE:
        return v >= c
    if spec.direction is Direction.MAGNITUDE_IS_WORSE:
        return abs(v) <= c
    return v <= c


@dataclass
class _Track:
    active: ActiveAlert
    clear_since: float | None = None


@dataclass
class _Data:
    total: int | None = None
    changed: float = 0.0
    had_data: bool = False


class Lifecycle:
    """The alerts of one monitor (one source and label set), driven by `step`.

    Not thread-safe: one caller drives it (the evaluator thread, or a test).
    """

    def __init__(
        self,
        config: AlertConfig,
        settings: LifecycleSettings,
        *,
        source: str,
        labels: Mapping[str, str],
    ) -> None:
        self.config = config
        self.settings = settings
        self.source = source
        self.labels: Mapping[str, str] = MappingProxyType(dict(labels))
        self._tracks: dict[str, _Track] = {}
        self._data: dict[MetricName, _Data] = {}

    def dedup_key(self, metric: str, kind: AlertKind = AlertKind.THRESHOLD) -> str:
        """The dedup key of a metric's threshold alert (as the monitor's) or no-data alert."""
        name = str(MetricName(metric))
        if kind is AlertKind.NO_DATA:
            name = f"{name}/no_data"
        return make_dedup_key(self.source, self.labels, name)

    def active(self) -> list[ActiveAlert]:
        """The pending and firing alerts, by dedup key."""
        return [self._tracks[k].active for k in sorted(self._tracks)]

    def restore(self, alerts: Iterable[ActiveAlert]) -> None:
        """Take up firing alerts from a previous run, so they resolve when they clear.

        Pending alerts start over. A restored no-data alert keeps firing until a
        sample arrives. A metric with a restored threshold alert counts as having
        had samples, quiet from the restart: if none arrive, its no-data alert fires
        too, rather than the old alert standing for a live engine.
        """
        for alert in alerts:
            if alert.state is not AlertState.FIRING:
                continue
            self._tracks[alert.dedup_key] = _Track(alert)
            if alert.kind is AlertKind.NO_DATA:
                quiet_since = alert.since - (self.settings.no_data_after_s or 0.0)
                self._data[alert.metric] = _Data(None, quiet_since, True)
            else:
                self._data.setdefault(alert.metric, _Data(None, math.nan, True))

    def step(self, now: float, evaluations: Iterable[Evaluation]) -> list[Transition]:
        """Advance every alert to `now` (seconds since the epoch) and return the transitions."""
        transitions: list[Transition] = []
        for evaluation in evaluations:
            transitions.extend(self._step_threshold(now, evaluation))
            transitions.extend(self._step_no_data(now, evaluation))
        return transitions

    # threshold alerts -------------------------------------------------------------------

    def _step_threshold(self, now: float, ev: Evaluation) -> list[Transition]:
        key = self.dedup_key(ev.metric)
        track = self._tracks.get(key)
        if track is None:
            if ev.level is AlertLevel.INFO or ev.threshold is None:
                return []
            return self._start(now, key, ev)
        if track.active.state is AlertState.PENDING:
            return self._step_pending(now, key, track, ev)
        return self._step_firing(now, key, track, ev)

    def _start(self, now: float, key: str, ev: Evaluation) -> list[Transition]:
        assert ev.threshold is not None
        active = ActiveAlert(
            dedup_key=key,
            metric=ev.metric,
            kind=AlertKind.THRESHOLD,
            state=AlertState.PENDING,
            level=ev.level,
            value=ev.value,
            threshold=ev.threshold,
            message=self._crossing(ev.metric, ev.value, ev.level, ev.threshold),
            since=now,
            fired_at=None,
            last_sent=None,
        )
        if self.settings.for_of(ev.metric) <= 0:
            return [self._fire(now, key, active, AlertState.OK)]
        self._tracks[key] = _Track(active)
        return [self._transition(now, AlertState.OK, active, None)]

    def _step_pending(
        self, now: float, key: str, track: _Track, ev: Evaluation
    ) -> list[Transition]:
        if ev.level is AlertLevel.INFO or ev.threshold is None:
            del self._tracks[key]
            ok = replace(track.active, state=AlertState.OK, value=ev.value)
            return [self._transition(now, AlertState.PENDING, ok, None)]
        active = replace(
            track.active,
            level=ev.level,
            value=ev.value,
            threshold=ev.threshold,
            message=self._crossing(ev.metric, ev.value, ev.level, ev.threshold),
        )
        track.active = active
        if now - active.since >= self.settings.for_of(ev.metric):
            return [self._fire(now, key, active, AlertState.PENDING)]
        return []

    def _fire(self, now: float, key: str, active: ActiveAlert, previous: AlertState) -> Transition:
        firing = replace(active, state=AlertState.FIRING, since=now, fired_at=now, last_sent=now)
        self._tracks[key] = _Track(firing)
        return self._transition(now, previous, firing, EventKind.TRIGGER)

    def _step_firing(
        self, now: float, key: str, track: _Track, ev: Evaluation
    ) -> list[Transition]:
        current = track.active
        if math.isnan(ev.value):
            return self._maybe_repeat(now, track)
        level = max(ev.level, self._held_level(ev.metric, ev.value, current.level))
        if level is AlertLevel.INFO:
            if track.clear_since is None:
                track.clear_since = now
            if now - track.clear_since >= self.settings.keep_firing_for_s:
                return [self._resolve(now, key, track, ev.value)]
            return self._maybe_repeat(now, track)
        track.clear_since = None
        if level != current.level:
            threshold = self._threshold_of(ev.metric, level)
            if level == ev.level:
                message = self._crossing(ev.metric, ev.value, level, threshold)
            else:
                message = self._holding(ev.metric, ev.value, level, threshold)
            updated = replace(
                current,
                level=level,
                value=ev.value,
                threshold=threshold,
                message=message,
                last_sent=now,
            )
            track.active = updated
            return [self._transition(now, AlertState.FIRING, updated, EventKind.UPDATE)]
        track.active = replace(current, value=ev.value)
        return self._maybe_repeat(now, track)

    def _maybe_repeat(self, now: float, track: _Track) -> list[Transition]:
        current = track.active
        last = current.last_sent if current.last_sent is not None else current.since
        if now - last < self.settings.repeat_interval_s:
            return []
        track.active = replace(current, last_sent=now)
        return [self._transition(now, AlertState.FIRING, track.active, EventKind.REPEAT)]

    def _resolve(self, now: float, key: str, track: _Track, value: float) -> Transition:
        del self._tracks[key]
        current = track.active
        if current.kind is AlertKind.NO_DATA:
            message = f"{current.metric} is receiving samples again"
        else:
            margin = self.settings.margin_of(current.metric)
            clear = clear_threshold(current.metric, current.threshold, margin)
            statistic = self.config.statistic(current.metric)
            spec = spec_for(current.metric)
            message = describe_clearing(spec, statistic, value, current.level, clear)
        resolved = replace(current, state=AlertState.RESOLVED, value=value, message=message)
        return self._transition(now, AlertState.FIRING, resolved, EventKind.RESOLVE)

    def _held_level(self, metric: MetricName, value: float, current: AlertLevel) -> AlertLevel:
        """The highest level up to `current` whose clear threshold `value` has not reached."""
        margin = self.settings.margin_of(metric)
        thresholds = dict(self.config.thresholds(metric))
        for level in sorted(thresholds, reverse=True):
            if level > current:
                continue
            if not _is_cleared(metric, value, clear_threshold(metric, thresholds[level], margin)):
                return level
        return AlertLevel.INFO

    def _threshold_of(self, metric: MetricName, level: AlertLevel) -> float:
        return dict(self.config.thresholds(metric))[level]

    def _crossing(self, metric: MetricName, value: float, level: AlertLevel, t: float) -> str:
        statistic = self.config.statistic(metric)
        return describe_crossing(spec_for(metric), statistic, value, level, t)

    def _holding(self, metric: MetricName, value: float, level: AlertLevel, t: float) -> str:
        clear = clear_threshold(metric, t, self.settings.margin_of(metric))
        statistic = self.config.statistic(metric)
        return describe_holding(spec_for(metric), statistic, value, level, t, clear)

    # no-data alerts ---------------------------------------------------------------------

    def _step_no_data(self, now: float, ev: Evaluation) -> list[Transition]:
        after = self.settings.no_data_after_s
        data = self._data.setdefault(ev.metric, _Data())
        if data.total is None:
            # First sight: a restored no-data alert keeps the quiet time it had.
            if not data.had_data or math.isnan(data.changed):
                data.changed = now
            data.total = ev.samples_total
            data.had_data = data.had_data or ev.samples_total > 0
        elif data.total != ev.samples_total:
            data.changed = now
            data.total = ev.samples_total
            data.had_data = data.had_data or ev.samples_total > 0
        key = self.dedup_key(ev.metric, AlertKind.NO_DATA)
        track = self._tracks.get(key)
        quiet = now - data.changed
        stale = after is not None and data.had_data and quiet >= after
        if track is None:
            if not stale or after is None:
                return []
            return [
                self._fire(
                    now, key, self._no_data_alert(ev.metric, quiet, after, now), AlertState.OK
                )
            ]
        if not stale:
            return [self._resolve(now, key, track, quiet)]
        track.active = replace(track.active, value=quiet)
        return self._maybe_repeat(now, track)

    def _no_data_alert(
        self, metric: MetricName, quiet: float, after: float, now: float
    ) -> ActiveAlert:
        return ActiveAlert(
            dedup_key=self.dedup_key(metric, AlertKind.NO_DATA),
            metric=metric,
            kind=AlertKind.NO_DATA,
            state=AlertState.PENDING,
            level=self.settings.no_data_level,
            value=quiet,
            threshold=after,
            message=f"{metric} has received no samples for {quiet:.0f} s (limit {after:g} s)",
            since=now,
            fired_at=None,
            last_sent=None,
        )

    # alerts -----------------------------------------------------------------------------

    def _transition(
        self, now: float, previous: AlertState, active: ActiveAlert, event: EventKind | None
    ) -> Transition:
        return Transition(
            at=now,
            previous=previous,
            state=active.state,
            event=event,
            kind=active.kind,
            alert=self.alert_of(active, now),
        )

    def alert_of(self, active: ActiveAlert, now: float) -> Alert:
        """The `Alert` a notifier formats for an active alert at `now`."""
        return Alert(
            metric=active.metric,
            level=active.level,
            value=active.value,
            threshold=active.threshold,
            message=active.message,
            source=self.source,
            labels=self.labels,
            timestamp=datetime.fromtimestamp(now, UTC),
            dedup_key=active.dedup_key,
            statistic="samples"
            if active.kind is AlertKind.NO_DATA
            else self.config.statistic(active.metric),
        )
