"""The dispatcher: one background thread per receiver drains that receiver's outbox.

Each receiver's notifications go out in the order they were written (a resolve
never overtakes its trigger), paced by a token bucket, retried with
exponential backoff and jitter on a retryable failure, never sooner than the
receiver's Retry-After. A permanent failure is logged once, counted and not
retried. When the store refuses to record an attempt's outcome, the worker
keeps it and sends nothing more until the store takes it, so a full disk does
not turn into the same notification sent over and over. Nothing on the path
of `record_*` waits on any of this.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from ..config import DeliverySettings, ReceiverSettings
from .notifiers import AttemptResult, Notifier
from .store import OutboxItem, Store, StoreError

__all__ = ["OUTCOMES", "DeliveryCollector", "Dispatcher", "TokenBucket", "backoff_delay"]

logger = logging.getLogger(__name__)

#: The outcomes counted per receiver on `mhc_notifications_total`.
OUTCOMES: tuple[str, ...] = ("sent", "retried", "failed", "dropped")
_IDLE_POLL_S = 1.0
_STORE_RETRY_S = 1.0
#: A store write kept to be retried, when the store refused it.
_Write = Callable[[], None]


class TokenBucket:
    """At most `burst` events at once, refilled at `rate_per_s`."""

    def __init__(self, rate_per_s: float, burst: int, now: float) -> None:
        self.rate = rate_per_s
        self.burst = float(burst)
        self._tokens = float(burst)
        self._stamp = now

    def _refill(self, now: float) -> None:
        elapsed = max(0.0, now - self._stamp)
        self._tokens = min(self.burst, self._tokens + elapsed * self.rate)
        self._stamp = now

    def wait_time(self, now: float) -> float:
        """Seconds until a token is available (0 when one is)."""
        self._refill(now)
        if self._tokens >= 1.0:
            return 0.0
        return (1.0 - self._tokens) / self.rate

    def take(self, now: float) -> None:
        """Spend one token (the caller waited `wait_time` first)."""
        self._refill(now)
        self._tokens -= 1.0


def backoff_delay(
    attempts: int, settings: DeliverySettings, retry_after: float | None, rng: random.Random
) -> float:
    """Seconds before the next try after `attempts` failed ones: exponential, jittered, capped.

    Never less than `retry_after`.
    """
    base = min(settings.backoff_max_s, settings.backoff_initial_s * 2.0 ** (attempts - 1))
    delay = base * (1.0 - settings.jitter * rng.random())
    return max(delay, retry_after or 0.0)


@dataclass
class _Counts:
    outcomes: dict[str, int] = field(default_factory=lambda: dict.fromkeys(OUTCOMES, 0))
    failures: dict[str, int] = field(default_factory=dict)
    logged: tuple[str, int | None] | None = None


class Dispatcher:
    """Delivers the outbox of a `Store` through notifiers, one worker thread per receiver."""

    def __init__(
        self,
        store: Store,
        notifiers: Sequence[Notifier],
        receivers: Sequence[ReceiverSettings],
        settings: DeliverySettings,
        *,
        clock: Callable[[], float] = time.time,
        rng: random.Random | None = None,
        on_store_error: Callable[[StoreError], None] | None = None,
        on_store_ok: Callable[[], None] | None = None,
    ) -> None:
        self.store = store
        self.settings = settings
        self._notifiers = {n.name: n for n in notifiers}
        self._rates = {r.name: r for r in receivers}
        self._clock = clock
        self._rng = rng or random.Random()
        self._on_store_error = on_store_error or (lambda exc: None)
        self._on_store_ok = on_store_ok or (lambda: None)
        self._lock = threading.Lock()
        self._counts = {name: _Counts() for name in self._notifiers}
        self._wake = {name: threading.Event() for name in self._notifiers}
        self._threads: list[threading.Thread] = []
        self._stopping = threading.Event()
        self._deadline = float("inf")

    @property
    def receivers(self) -> list[str]:
        """The receiver names, in configuration order."""
        return list(self._notifiers)

    def start(self) -> None:
        """Drop notifications for receivers no longer configured, then start one worker each."""
        self._drop_unknown()
        for name in self._notifiers:
            thread = threading.Thread(
                target=self._run, args=(name,), name=f"mhc-delivery-{name}", daemon=True
            )
            thread.start()
            self._threads.append(thread)

    def wake(self) -> None:
        """Tell every worker that the outbox has new notifications."""
        for event in self._wake.values():
            event.set()

    def stop(self, timeout: float) -> bool:
        """Deliver what can be delivered within `timeout` seconds, then stop the workers.

        Returns True when every worker has stopped; undelivered notifications
        stay in the outbox for the next start.
        """
        self._deadline = time.monotonic() + max(0.0, timeout)
        self._stopping.set()
        self.wake()
        for thread in self._threads:
            thread.join(max(0.0, self._deadline - time.monotonic()) + 0.05)
        return not any(t.is_alive() for t in self._threads)

    # the worker -------------------------------------------------------------------------

    def _run(self, name: str) -> None:
        notifier = self._notifiers[name]
        rate = self._rates.get(name)
        per_s = (rate.rate_per_minute if rate else 60.0) / 60.0
        bucket = TokenBucket(per_s, rate.burst if rate else 1, time.monotonic())
        wake = self._wake[name]
        # The outcome of the last attempt when the store refused it. Until it is written,
        # nothing else is sent: the item is still pending in the store and would go out again.
        unsaved: _Write | None = None
        while True:
            if unsaved is not None:
                if not self._save(unsaved):
                    # TODO: a notification delivered but not marked when the process stops
                    # is sent again by the next one (at least once still holds).
                    if self._stopping.wait(_STORE_RETRY_S):
                        return
                    continue
                unsaved = None
            item = self._next(name)
            if item is None:
                if self._stopping.is_set():
                    return
                wake.wait(_IDLE_POLL_S)
                wake.clear()
                continue
            now = self._clock()
            if now - item.created > self.settings.max_age_s:
                unsaved = self._finish(item, "dropped", "expired", now)
                continue
            delay = max(item.next_attempt - now, bucket.wait_time(time.monotonic()))
            if delay > 0:
                if self._stopping.is_set() and time.monotonic() + delay > self._deadline:
                    return
                wake.wait(delay)
                wake.clear()
                continue
            if self._stopping.is_set() and time.monotonic() >= self._deadline:
                return
            bucket.take(time.monotonic())
            result = notifier.send(item.alert, item.action)
            unsaved = self._settle(item, result)

    def _next(self, name: str) -> OutboxItem | None:
        try:
            return self.store.next_pending(name)
        except StoreError as exc:
            self._on_store_error(exc)
            self._stopping.wait(_STORE_RETRY_S)
            return None

    def _save(self, write: _Write) -> bool:
        """Write an attempt's outcome to the store; False (and counted) when the store refuses."""
        try:
            write()
        except StoreError as exc:
            self._on_store_error(exc)
            return False
        self._on_store_ok()
        return True

    def _settle(self, item: OutboxItem, result: AttemptResult) -> _Write | None:
        """Count and log an attempt and store its outcome; the write the store refused, if any."""
        now = self._clock()
        if result.outcome == "delivered":
            unsaved = self._finish(item, "sent", None, now)
            self._log_recovery(item.receiver)
            return unsaved
        if result.outcome == "retryable":
            delay = backoff_delay(item.attempts + 1, self.settings, result.retry_after, self._rng)
            self._count(item.receiver, "retried", result.reason)
            self._log_failure(item.receiver, result, f"retrying in {delay:.3g} s")

            def retry() -> None:
                self.store.mark_retry(item.id, result.reason, now + delay, now)

            return None if self._save(retry) else retry
        unsaved = self._finish(item, "failed", result.reason, now)
        self._log_failure(item.receiver, result, "not retried")
        return unsaved

    def _finish(
        self, item: OutboxItem, outcome: str, reason: str | None, now: float
    ) -> _Write | None:
        """Count a final outcome and store it; the write the store refused, if any."""
        self._count(item.receiver, outcome, reason)

        def finish() -> None:
            if outcome == "sent":
                self.store.mark_delivered(item.id, now)
            elif outcome == "failed":
                self.store.mark_failed(item.id, reason or "", now)
            else:
                self.store.mark_dropped(item.id, reason or "", now)

        return None if self._save(finish) else finish

    def _drop_unknown(self) -> None:
        try:
            pending = self.store.pending_by_receiver()
            now = self._clock()
            for receiver in pending:
                if receiver in self._notifiers:
                    continue
                dropped = self.store.drop_receiver(receiver, "unknown_receiver", now)
                with self._lock:
                    counts = self._counts.setdefault(receiver, _Counts())
                    counts.outcomes["dropped"] += dropped
                    counts.failures["unknown_receiver"] = dropped
                logger.warning(
                    "dropped %d undelivered notification(s) for receiver %s, "
                    "which is no longer configured",
                    dropped,
                    receiver,
                )
        except StoreError as exc:
            self._on_store_error(exc)

    # counting and logging ---------------------------------------------------------------

    def _count(self, receiver: str, outcome: str, reason: str | None) -> None:
        with self._lock:
            counts = self._counts.setdefault(receiver, _Counts())
            counts.outcomes[outcome] += 1
            if outcome != "sent" and reason:
                counts.failures[reason] = counts.failures.get(reason, 0) + 1

    def _log_failure(self, receiver: str, result: AttemptResult, what: str) -> None:
        key = (result.reason, result.status)
        with self._lock:
            counts = self._counts[receiver]
            repeated = counts.logged == key
            counts.logged = key
        # A failure that repeats is logged once until it changes.
        level = logging.DEBUG if repeated else logging.WARNING
        logger.log(level, "delivery to %s failed: %s; %s", receiver, result.describe(), what)

    def _log_recovery(self, receiver: str) -> None:
        with self._lock:
            counts = self._counts[receiver]
            was_failing = counts.logged is not None
            counts.logged = None
        if was_failing:
            logger.info("delivery to %s works again", receiver)

    def counts(self) -> dict[str, dict[str, dict[str, int]]]:
        """Per receiver: {"outcomes": {outcome: n}, "failures": {reason: n}}."""
        with self._lock:
            return {
                name: {"outcomes": dict(c.outcomes), "failures": dict(c.failures)}
                for name, c in self._counts.items()
            }

    def flush(self, timeout: float) -> bool:
        """Wait until no notification is undelivered; False once `timeout` has passed."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                if not self.store.pending_by_receiver():
                    return True
            except StoreError as exc:
                self._on_store_error(exc)
            if time.monotonic() >= deadline:
                return False
            self.wake()
            time.sleep(0.01)


class DeliveryCollector(Collector):
    """Delivery counters and outbox gauges for prometheus_client.

    `labels` are the monitor's constant labels, carried by every series.
    """

    def __init__(
        self,
        dispatcher: Dispatcher,
        labels: Mapping[str, str],
        store_errors: Callable[[], int],
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._dispatcher = dispatcher
        self._names = list(labels)
        self._values = [labels[n] for n in self._names]
        self._store_errors = store_errors
        self._clock = clock

    def describe(self) -> list[Metric]:
        return []

    def collect(self) -> Iterator[Metric]:
        names, values = self._names, self._values
        sent = CounterMetricFamily(
            "mhc_notifications",
            "Notification attempts by receiver and outcome (sent, retried, failed, dropped).",
            labels=[*names, "receiver", "outcome"],
        )
        failures = CounterMetricFamily(
            "mhc_notification_failures",
            "Failed notification attempts by receiver and reason.",
            labels=[*names, "receiver", "reason"],
        )
        counts = self._dispatcher.counts()
        for receiver, c in counts.items():
            for outcome in OUTCOMES:
                sent.add_metric([*values, receiver, outcome], c["outcomes"][outcome])
            for reason, n in sorted(c["failures"].items()):
                failures.add_metric([*values, receiver, reason], n)
        yield sent
        yield failures
        yield from self._queue_families(list(counts))
        errors = CounterMetricFamily(
            "mhc_alert_store_errors",
            "Alert store (SQLite) operations that failed.",
            labels=names,
        )
        errors.add_metric(values, self._store_errors())
        yield errors

    def _queue_families(self, receivers: list[str]) -> Iterator[Metric]:
        names, values = self._names, self._values
        queue = GaugeMetricFamily(
            "mhc_notification_queue",
            "Notifications in the outbox not yet delivered, by receiver.",
            labels=[*names, "receiver"],
        )
        oldest = GaugeMetricFamily(
            "mhc_notification_oldest_undelivered_seconds",
            "Age of the oldest undelivered notification by receiver (0 when none).",
            labels=[*names, "receiver"],
        )
        try:
            pending = self._dispatcher.store.pending_by_receiver()
        except StoreError as exc:
            self._dispatcher._on_store_error(exc)
            pending = {}
        now = self._clock()
        for receiver in receivers:
            count, created = pending.get(receiver, (0, now))
            queue.add_metric([*values, receiver], count)
            oldest.add_metric([*values, receiver], max(0.0, now - created) if count else 0.0)
        yield queue
        yield oldest
