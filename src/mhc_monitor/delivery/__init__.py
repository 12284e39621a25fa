"""Alert delivery: lifecycle, SQLite outbox and notifiers behind one facade, `Alerting`.

    monitor --evaluate--> Lifecycle.step --> Store (history + outbox) --> Dispatcher --> notifiers

An evaluator thread steps the lifecycle every `interval_s` on the real clock;
one dispatcher thread per receiver drains the outbox. The monitor's hot path
never waits on either.

A store that cannot be written (a full disk, a read-only file system) stops
nothing but delivery: evaluation, `/metrics` and the views go on, the failure
is counted (`mhc_alert_store_errors_total`) and logged once until it changes or
ends, state changes wait in memory, and delivery resumes once a write succeeds.
"""

from __future__ import annotations

import logging
import math
import random
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from prometheus_client.registry import Collector

from ..alerts import AlertLevel
from ..config import AlertingSettings
from ..metrics import METRICS
from ..monitor import GeometricSpeculationMonitor
from .dispatcher import DeliveryCollector, Dispatcher
from .lifecycle import (
    ActiveAlert,
    AlertKind,
    AlertState,
    Evaluation,
    EventKind,
    Lifecycle,
    Transition,
)
from .notifiers import build_notifier
from .store import MEMORY, Store, StoreError

__all__ = [
    "MEMORY",
    "AlertState",
    "Alerting",
    "Evaluation",
    "Lifecycle",
    "Store",
    "Transition",
    "describe_transition",
]

logger = logging.getLogger(__name__)

_PRUNE_EVERY_S = 3600.0
_HISTORY_SHOWN = 50


class Alerting:
    """Turns a monitor's evaluations into delivered notifications.

    `store_path` is the SQLite file (history and outbox; `MEMORY` keeps them in
    memory only) or an open `Store`. Construction restores firing alerts from the store, so an
    alert that cleared while the process was down is resolved; `start()` runs
    the evaluator and the dispatcher, and undelivered notifications of an
    earlier process are delivered first. `step()` evaluates once, on demand.
    """

    def __init__(
        self,
        monitor: GeometricSpeculationMonitor,
        settings: AlertingSettings | None = None,
        store_path: str | Path | Store = MEMORY,
        *,
        clock: Callable[[], float] = time.time,
        rng: random.Random | None = None,
    ) -> None:
        self.monitor = monitor
        self.settings = settings or AlertingSettings()
        self._clock = clock
        self._store_errors = 0
        self._store_failing: str | None = None
        self._errors_lock = threading.Lock()
        self.store = store_path if isinstance(store_path, Store) else Store(store_path)
        self.receivers = self.settings.effective_receivers()
        timeout = self.settings.delivery.timeout_s
        self._notifiers = [build_notifier(r, timeout) for r in self.receivers]
        self.lifecycle = Lifecycle(
            monitor.config, self.settings.lifecycle, source=monitor.source, labels=monitor.labels
        )
        self._restore()
        self.dispatcher = Dispatcher(
            self.store,
            self._notifiers,
            self.receivers,
            self.settings.delivery,
            clock=clock,
            rng=rng,
            on_store_error=self._store_error,
            on_store_ok=self._store_ok,
        )
        self._unrecorded: list[Transition] = []
        # The level each firing alert was last logged at, to tell escalation from de-escalation.
        self._levels = {a.dedup_key: a.level for a in self.lifecycle.active()}
        self._step_lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._last_prune = 0.0

    def _restore(self) -> None:
        try:
            stored = self.store.active()
        except StoreError as exc:
            self._store_error(exc)
            return
        mine = []
        for alert in stored:
            if alert.dedup_key == self.lifecycle.dedup_key(alert.metric, alert.kind):
                mine.append(alert)
            else:
                # TODO: a firing alert stored under other labels or another source is never
                # resolved at the receivers; it stays open there until closed by hand.
                logger.warning(
                    "alert %s in the store belongs to other labels or another source; "
                    "not taken up",
                    alert.dedup_key,
                )
        self.lifecycle.restore(mine)

    def _store_error(self, exc: StoreError) -> None:
        """Count a failed store operation; log it once until the failure changes or ends."""
        message = str(exc)
        with self._errors_lock:
            self._store_errors += 1
            repeated = self._store_failing == message
            self._store_failing = message
        if not repeated:
            logger.error(
                "alert store failure: %s; monitoring goes on, notifications wait in memory "
                "until the store can be written",
                message,
            )

    def _store_ok(self) -> None:
        """A store write succeeded: log the end of a failure once."""
        with self._errors_lock:
            was_failing = self._store_failing is not None
            self._store_failing = None
            errors = self._store_errors
        if was_failing:
            logger.warning("alert store works again (%d failed operations in all)", errors)

    @property
    def store_errors(self) -> int:
        """How many store operations have failed."""
        with self._errors_lock:
            return self._store_errors

    # running ----------------------------------------------------------------------------

    def start(self) -> None:
        """Start the dispatcher and the evaluator thread."""
        if self._thread is not None:
            return
        self.dispatcher.start()
        self._thread = threading.Thread(
            target=self._evaluate_forever, name="mhc-alerting", daemon=True
        )
        self._thread.start()

    def _evaluate_forever(self) -> None:
        failing = False
        while not self._stop.is_set():
            try:
                self.step()
                failing = False
            except Exception:
                # One log per streak of failures: the next evaluation may well work.
                if not failing:
                    logger.exception("alert evaluation failed")
                failing = True
            self._stop.wait(self.settings.interval_s)

    def stop(self, timeout: float = 5.0) -> bool:
        """Stop evaluating, deliver what can be delivered within `timeout` s, then stop.

        The rest stays in the outbox for the next process. Returns True when
        every thread stopped. The store stays open for the views until `close()`.
        """
        deadline = time.monotonic() + timeout
        self._stop.set()
        if self._thread is not None:
            self._thread.join(max(0.0, deadline - time.monotonic()))
        self._record_unrecorded()
        stopped = self.dispatcher.stop(max(0.0, deadline - time.monotonic()))
        if stopped and (self._thread is None or not self._thread.is_alive()):
            for notifier in self._notifiers:
                notifier.close()
            return True
        return False

    def _record_unrecorded(self) -> None:
        """One last try to store state changes a failing store refused; say if they are lost."""
        with self._step_lock:
            if not self._unrecorded:
                return
            try:
                names = [r.name for r in self.receivers]
                self.store.record(self._unrecorded, names, self.lifecycle.active())
                self._unrecorded = []
                self._store_ok()
                self.dispatcher.wake()
            except StoreError as exc:
                self._store_error(exc)
                logger.error(
                    "%d alert state change(s) and their notifications are lost: "
                    "the alert store cannot be written",
                    len(self._unrecorded),
                )

    def close(self, timeout: float = 5.0) -> None:
        """`stop(timeout)`, then close the store."""
        if self.stop(timeout):
            self.store.close()

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def evaluations(self) -> list[Evaluation]:
        """Every metric of the monitor, evaluated now."""
        result = []
        for spec in METRICS:
            level, value, threshold = self.monitor.evaluate(spec.name)
            total = self.monitor.histogram(spec.name).count
            result.append(Evaluation(spec.name, level, value, threshold, total))
        return result

    def step(
        self, now: float | None = None, evaluations: list[Evaluation] | None = None
    ) -> list[Transition]:
        """Evaluate once (or take `evaluations`), advance the lifecycle and queue notifications.

        Transitions that could not be stored are kept and stored with the next step.
        """
        with self._step_lock:
            at = self._clock() if now is None else now
            evaluated = self.evaluations() if evaluations is None else evaluations
            transitions = self.lifecycle.step(at, evaluated)
            for transition in transitions:
                self._log_transition(transition)
            pending = self._unrecorded + transitions
            if pending:
                try:
                    names = [r.name for r in self.receivers]
                    self.store.record(pending, names, self.lifecycle.active())
                    self._unrecorded = []
                    self._store_ok()
                except StoreError as exc:
                    # TODO: while the store cannot be written, state changes and their
                    # notifications wait here, in memory without a bound, and are not
                    # delivered: a disk that stays full holds back every page until it is freed.
                    self._store_error(exc)
                    self._unrecorded = pending
                self.dispatcher.wake()
            self._prune(at)
            return transitions

    def _log_transition(self, transition: Transition) -> None:
        """One line per state change: INFO when it notifies, DEBUG for pending and back to ok.

        A metric hovering at a threshold with a `for` time goes pending and back
        often; only what reaches a receiver belongs in an operator's log.
        """
        key = transition.dedup_key
        level = transition.alert.level
        previous = self._levels.get(key)
        if transition.state is AlertState.FIRING:
            self._levels[key] = level
        else:
            self._levels.pop(key, None)
        logger.log(
            logging.DEBUG if transition.event is None else logging.INFO,
            "%s alert %s: %s (dedup_key %s)",
            _alert_name(transition),
            describe_transition(transition, previous),
            transition.alert.message,
            key,
        )

    def _prune(self, now: float) -> None:
        if now - self._last_prune < _PRUNE_EVERY_S:
            return
        self._last_prune = now
        try:
            self.store.prune(now - self.settings.delivery.keep_history_s)
        except StoreError as exc:
            self._store_error(exc)

    def flush(self, timeout: float = 5.0) -> bool:
        """Wait until every queued notification is delivered or given up (started only)."""
        return self.dispatcher.flush(timeout)

    # views ------------------------------------------------------------------------------

    def collector(self) -> Collector:
        """A prometheus_client collector of delivery counters and outbox gauges."""
        return DeliveryCollector(
            self.dispatcher, self.monitor.labels, lambda: self.store_errors, self._clock
        )

    def alerts_view(self) -> dict[str, Any]:
        """Active alerts with their age, recent history with notification outcomes (JSON-ready)."""
        now = self._clock()
        with self._step_lock:
            active = self.lifecycle.active()
        try:
            history = self.store.history(_HISTORY_SHOWN)
        except StoreError as exc:
            self._store_error(exc)
            history = []
        for entry in history:
            entry["at"] = _iso(entry["at"])
            for note in entry["notifications"]:
                note["updated"] = None if note["updated"] is None else _iso(note["updated"])
        return {
            "active": [_active_view(a, now) for a in active],
            "history": history,
            "receivers": self.receivers_view()["receivers"],
        }

    def receivers_view(self) -> dict[str, Any]:
        """Per receiver: kind, queued notifications, age of the oldest, outcome counters."""
        now = self._clock()
        try:
            pending = self.store.pending_by_receiver()
        except StoreError as exc:
            self._store_error(exc)
            pending = {}
        counts = self.dispatcher.counts()
        receivers = {}
        for receiver in self.receivers:
            queued, oldest = pending.get(receiver.name, (0, now))
            receivers[receiver.name] = {
                "kind": receiver.kind,
                "queued": queued,
                "oldest_undelivered_seconds": round(max(0.0, now - oldest), 3) if queued else 0.0,
                **counts.get(receiver.name, {"outcomes": {}, "failures": {}}),
            }
        return {"receivers": receivers, "store_errors": self.store_errors}


def describe_transition(transition: Transition, previous: AlertLevel | None = None) -> str:
    """What a transition did, in words: "firing at warning", "escalated to critical", ...

    `previous` is the level the alert fired at before, if known, to tell an
    escalation from a de-escalation.
    """
    level = transition.alert.level.name.lower()
    event = transition.event
    if event is EventKind.TRIGGER:
        return f"firing at {level}"
    if event is EventKind.UPDATE:
        if previous is not None and transition.alert.level < previous:
            return f"de-escalated to {level}"
        return f"escalated to {level}" if previous is not None else f"now {level}"
    if event is EventKind.REPEAT:
        return f"still firing at {level} (repeat)"
    if event is EventKind.RESOLVE:
        return "resolved"
    if transition.state is AlertState.PENDING:
        return f"pending at {level}"
    return "back to ok before it fired"


def _alert_name(transition: Transition) -> str:
    metric = str(transition.alert.metric)
    return f"{metric} no-data" if transition.kind is AlertKind.NO_DATA else metric


def _iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).isoformat()


def _number(value: float) -> float | None:
    return value if math.isfinite(value) else None


def _active_view(alert: ActiveAlert, now: float) -> dict[str, Any]:
    started = alert.fired_at if alert.fired_at is not None else alert.since
    return {
        "dedup_key": alert.dedup_key,
        "metric": str(alert.metric),
        "kind": str(alert.kind),
        "state": str(alert.state),
        "level": alert.level.name.lower(),
        "value": _number(alert.value),
        "threshold": _number(alert.threshold),
        "message": alert.message,
        "since": _iso(started),
        "age_seconds": round(max(0.0, now - started), 3),
    }
