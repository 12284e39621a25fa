"""The alert store: history, active alerts and the notification outbox, in one SQLite file.

A notification is written to the outbox in the same transaction as the state
change that caused it, before anyone tries to send it, and is marked delivered
only once its receiver accepted it: a crash or `kill -9` at any moment loses
nothing, and the next process on the same file resumes delivery (at least
once, with the same dedup key). WAL mode lets readers (`/v1/alerts`) run while
the dispatcher writes. Secrets are never stored: rows hold the alert, and the
notifier formats the request when it sends.
"""

from __future__ import annotations

import json
import math
import sqlite3
import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from types import MappingProxyType
from typing import Any

from ..alerts import Alert, AlertLevel
from ..errors import MonitorError
from ..metrics import MetricName
from .lifecycle import ActiveAlert, AlertKind, AlertState, Transition

__all__ = ["MEMORY", "OutboxItem", "Store", "StoreError", "alert_from_json", "alert_to_json"]

#: The path of a store that lives in memory only (for the library and tests).
MEMORY = ":memory:"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS history (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    at REAL NOT NULL,
    dedup_key TEXT NOT NULL,
    metric TEXT NOT NULL,
    kind TEXT NOT NULL,
    previous TEXT NOT NULL,
    state TEXT NOT NULL,
    event TEXT,
    level TEXT NOT NULL,
    value REAL,
    threshold REAL,
    message TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS active (
    dedup_key TEXT PRIMARY KEY,
    data TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS outbox (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    history_id INTEGER NOT NULL,
    receiver TEXT NOT NULL,
    dedup_key TEXT NOT NULL,
    action TEXT NOT NULL,
    alert TEXT NOT NULL,
    created REAL NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt REAL NOT NULL,
    status TEXT NOT NULL DEFAULT 'pending',
    reason TEXT,
    updated REAL
);
CREATE INDEX IF NOT EXISTS outbox_queue ON outbox (receiver, status, id);
CREATE INDEX IF NOT EXISTS outbox_history ON outbox (history_id);
"""


class StoreError(MonitorError):
    """The alert store could not be read or written."""


@dataclass(frozen=True)
class OutboxItem:
    """One notification waiting for its receiver."""

    id: int
    receiver: str
    action: str
    alert: Alert
    created: float
    attempts: int
    next_attempt: float


def alert_to_json(alert: Alert) -> str:
    """An alert as JSON text (NaN kept as NaN), for the outbox."""
    return json.dumps(
        {
            "metric": str(alert.metric),
            "level": int(alert.level),
            "value": alert.value,
            "threshold": alert.threshold,
            "message": alert.message,
            "source": alert.source,
            "labels": dict(alert.labels),
            "timestamp": alert.timestamp.isoformat(),
            "dedup_key": alert.dedup_key,
            "statistic": alert.statistic,
        }
    )


def alert_from_json(text: str) -> Alert:
    """The alert `alert_to_json` wrote."""
    data = json.loads(text)
    return Alert(
        metric=MetricName(data["metric"]),
        level=AlertLevel(data["level"]),
        value=float(data["value"]),
        threshold=float(data["threshold"]),
        message=data["message"],
        source=data["source"],
        labels=MappingProxyType(dict(data["labels"])),
        timestamp=datetime.fromisoformat(data["timestamp"]),
        dedup_key=data["dedup_key"],
        statistic=data["statistic"],
    )


def _active_to_json(active: ActiveAlert) -> str:
    return json.dumps(
        {
            "dedup_key": active.dedup_key,
            "metric": str(active.metric),
            "kind": str(active.kind),
            "state": str(active.state),
            "level": int(active.level),
            "value": active.value,
            "threshold": active.threshold,
            "message": active.message,
            "since": active.since,
            "fired_at": active.fired_at,
            "last_sent": active.last_sent,
        }
    )


def _active_from_json(text: str) -> ActiveAlert:
    data = json.loads(text)
    return ActiveAlert(
        dedup_key=data["dedup_key"],
        metric=MetricName(data["metric"]),
        kind=AlertKind(data["kind"]),
        state=AlertState(data["state"]),
        level=AlertLevel(data["level"]),
        value=float(data["value"]),
        threshold=float(data["threshold"]),
        message=data["message"],
        since=float(data["since"]),
        fired_at=data["fired_at"],
        last_sent=data["last_sent"],
    )


def _make_folder(folder: Path) -> None:
    """Create the store's folder; a file in the way is named as such, not as "File exists"."""
    for part in (folder, *folder.parents):
        if part.exists() and not part.is_dir():
            raise NotADirectoryError(f"{part} is not a folder")
    folder.mkdir(parents=True, exist_ok=True)


def _real(value: float) -> float | None:
    return value if math.isfinite(value) else None


class Store:
    """The SQLite alert store; every method is thread-safe and raises `StoreError`.

    `path` is a file (created when missing, WAL mode) or `MEMORY`.
    """

    def __init__(self, path: str | Path = MEMORY) -> None:
        self.path = str(path)
        self._lock = threading.RLock()
        try:
            if self.path != MEMORY:
                _make_folder(Path(self.path).parent)
            self._db = sqlite3.connect(
                self.path, isolation_level=None, check_same_thread=False, timeout=10.0
            )
            if self.path != MEMORY:
                self._db.execute("PRAGMA journal_mode=WAL")
                # FULL: a notification acknowledged as written survives a crash of the host too.
                self._db.execute("PRAGMA synchronous=FULL")
            self._db.executescript(_SCHEMA)
        except (sqlite3.Error, OSError) as exc:
            raise StoreError(f"cannot open the alert store {self.path}: {exc}") from exc

    def close(self) -> None:
        """Close the database; later calls raise `StoreError`."""
        with self._lock:
            self._db.close()

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            try:
                self._db.execute("BEGIN IMMEDIATE")
                try:
                    yield self._db
                except BaseException:
                    self._db.execute("ROLLBACK")
                    raise
                self._db.execute("COMMIT")
            except sqlite3.Error as exc:
                self._abandon()
                raise StoreError(f"alert store {self.path}: {exc}") from exc

    def _abandon(self) -> None:
        """Roll back a transaction a failed COMMIT left open (SQLite ends most itself)."""
        try:
            if self._db.in_transaction:
                self._db.execute("ROLLBACK")
        except sqlite3.Error:
            pass  # the connection is unusable; the next operation reports it

    def _query(self, sql: str, args: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        with self._lock:
            try:
                return list(self._db.execute(sql, args).fetchall())
            except sqlite3.Error as exc:
                raise StoreError(f"alert store {self.path}: {exc}") from exc

    # writing ----------------------------------------------------------------------------

    def record(
        self,
        transitions: Sequence[Transition],
        receivers: Sequence[str],
        active: Sequence[ActiveAlert],
    ) -> int:
        """Write transitions, their notifications (one per receiver) and the active alerts.

        One transaction: either all of it is stored or none. Returns how many
        notifications were queued.
        """
        queued = 0
        with self._transaction() as db:
            for t in transitions:
                history_id = self._insert_history(db, t)
                if t.action is None:
                    continue
                body = alert_to_json(t.alert)
                for receiver in receivers:
                    db.execute(
                        "INSERT INTO outbox (history_id, receiver, dedup_key, action, alert,"
                        " created, next_attempt) VALUES (?, ?, ?, ?, ?, ?, ?)",
                        (history_id, receiver, t.dedup_key, t.action, body, t.at, t.at),
                    )
                    queued += 1
            db.execute("DELETE FROM active")
            db.executemany(
                "INSERT INTO active (dedup_key, data) VALUES (?, ?)",
                [(a.dedup_key, _active_to_json(a)) for a in active],
            )
        return queued

    @staticmethod
    def _insert_history(db: sqlite3.Connection, t: Transition) -> int:
        cursor = db.execute(
            "INSERT INTO history (at, dedup_key, metric, kind, previous, state, event, level,"
            " value, threshold, message) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                t.at,
                t.dedup_key,
                str(t.alert.metric),
                str(t.kind),
                str(t.previous),
                str(t.state),
                None if t.event is None else str(t.event),
                AlertLevel(t.alert.level).name.lower(),
                _real(t.alert.value),
                _real(t.alert.threshold),
                t.alert.message,
            ),
        )
        assert cursor.lastrowid is not None
        return cursor.lastrowid

    def mark_delivered(self, item_id: int, now: float) -> None:
        """The receiver accepted the notification."""
        self._finish(item_id, "delivered", None, now)

    def mark_failed(self, item_id: int, reason: str, now: float) -> None:
        """The receiver refused the notification for good."""
        self._finish(item_id, "failed", reason, now)

    def mark_dropped(self, item_id: int, reason: str, now: float) -> None:
        """The notification was given up without a permanent refusal (too old, no receiver)."""
        self._finish(item_id, "dropped", reason, now)

    def _finish(self, item_id: int, status: str, reason: str | None, now: float) -> None:
        with self._transaction() as db:
            db.execute(
                "UPDATE outbox SET status = ?, reason = ?, updated = ?,"
                " attempts = attempts + (? != 'dropped') WHERE id = ?",
                (status, reason, now, status, item_id),
            )

    def mark_retry(self, item_id: int, reason: str, next_attempt: float, now: float) -> None:
        """A retryable failure: try again at `next_attempt`."""
        with self._transaction() as db:
            db.execute(
                "UPDATE outbox SET attempts = attempts + 1, reason = ?, next_attempt = ?,"
                " updated = ? WHERE id = ?",
                (reason, next_attempt, now, item_id),
            )

    def drop_receiver(self, receiver: str, reason: str, now: float) -> int:
        """Give up every undelivered notification of a receiver; returns how many."""
        with self._transaction() as db:
            return db.execute(
                "UPDATE outbox SET status = 'dropped', reason = ?, updated = ?"
                " WHERE receiver = ? AND status = 'pending'",
                (reason, now, receiver),
            ).rowcount

    def prune(self, before: float) -> int:
        """Forget history and finished notifications older than `before`; returns rows removed."""
        with self._transaction() as db:
            removed = db.execute(
                "DELETE FROM outbox WHERE status != 'pending' AND created < ?", (before,)
            ).rowcount
            removed += db.execute(
                "DELETE FROM history WHERE at < ? AND id NOT IN"
                " (SELECT history_id FROM outbox WHERE status = 'pending')",
                (before,),
            ).rowcount
        return removed

    # reading ----------------------------------------------------------------------------

    def active(self) -> list[ActiveAlert]:
        """The active alerts of the last `record`."""
        rows = self._query("SELECT data FROM active ORDER BY dedup_key")
        return [_active_from_json(row[0]) for row in rows]

    def next_pending(self, receiver: str) -> OutboxItem | None:
        """The oldest undelivered notification of a receiver (delivery is in order)."""
        rows = self._query(
            "SELECT id, receiver, action, alert, created, attempts, next_attempt FROM outbox"
            " WHERE receiver = ? AND status = 'pending' ORDER BY id LIMIT 1",
            (receiver,),
        )
        if not rows:
            return None
        row = rows[0]
        return OutboxItem(row[0], row[1], row[2], alert_from_json(row[3]), row[4], row[5], row[6])

    def pending_by_receiver(self) -> dict[str, tuple[int, float]]:
        """Per receiver with undelivered notifications: (how many, creation time of the oldest)."""
        rows = self._query(
            "SELECT receiver, COUNT(*), MIN(created) FROM outbox WHERE status = 'pending'"
            " GROUP BY receiver"
        )
        return {row[0]: (int(row[1]), float(row[2])) for row in rows}

    def history(self, limit: int = 50) -> list[dict[str, Any]]:
        """The latest transitions, newest first, each with its notifications and outcomes."""
        rows = self._query(
            "SELECT id, at, dedup_key, metric, kind, previous, state, event, level, value,"
            " threshold, message FROM history ORDER BY id DESC LIMIT ?",
            (limit,),
        )
        if not rows:
            return []
        ids = [row[0] for row in rows]
        marks = ",".join("?" * len(ids))
        notes = self._query(
            "SELECT history_id, receiver, action, status, attempts, reason, updated FROM outbox"
            f" WHERE history_id IN ({marks}) ORDER BY id",
            ids,
        )
        by_history: dict[int, list[dict[str, Any]]] = {}
        for n in notes:
            by_history.setdefault(n[0], []).append(
                {
                    "receiver": n[1],
                    "action": n[2],
                    "status": n[3],
                    "attempts": n[4],
                    "reason": n[5],
                    "updated": n[6],
                }
            )
        names = ("id", "at", "dedup_key", "metric", "kind", "previous", "state", "event")
        result = []
        for row in rows:
            entry: dict[str, Any] = dict(zip(names, row[:8], strict=True))
            entry.update(level=row[8], value=row[9], threshold=row[10], message=row[11])
            entry["notifications"] = by_history.get(row[0], [])
            result.append(entry)
        return result

    def counts(self) -> Mapping[str, int]:
        """Outbox rows per status, for the tests and the receivers view."""
        rows = self._query("SELECT status, COUNT(*) FROM outbox GROUP BY status")
        return {row[0]: int(row[1]) for row in rows}
