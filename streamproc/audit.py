"""A durable audit trail of alarm transitions (SQLite, stdlib ``sqlite3``).

Every :class:`~streamproc.core.alarms.AlarmEvent` the service publishes is
appended here with the JSON payload exactly as published, the data time of
the transition (``ts``) and the wall time the shell recorded it
(``recorded_at``, passed in by the caller: this module never reads a clock).
After a restart :meth:`AuditLog.open_alarms` gives back each alarm's last
state that was not cleared, to rebuild the engine's alarms.

The audit is shell, and it must never crash the service: every SQLite failure
(disk full, read-only file, database locked, not a database) is raised as one
:class:`AuditError` naming the file and the reason, which the caller reports
loudly while it keeps alarming. A failed batch is rolled back as a whole.

The connection may be used from any one thread at a time (e.g. through
``asyncio.to_thread``); a lock serialises calls.
"""

from __future__ import annotations

import os
import sqlite3
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Any, Final, Self

import msgspec

from streamproc.codec import CodecError
from streamproc.core.alarms import AlarmEvent, AlarmState
from streamproc.core.messages import BedId
from streamproc.outbound import decode_alarm, encode_alarm

__all__ = [
    "SCHEMA_VERSION",
    "AuditError",
    "AuditLog",
    "AuditRow",
    "format_table",
    "iso_utc",
    "row_json",
]

_COLUMNS: Final = (
    "id",
    "alarm_id",
    "unit",
    "bed",
    "kind",
    "state",
    "priority",
    "trigger",
    "ts",
    "onset_ts",
    "recorded_at",
    "payload",
)

_SCHEMA: Final = (
    """
    CREATE TABLE IF NOT EXISTS transitions (
        id INTEGER PRIMARY KEY,
        alarm_id TEXT NOT NULL,
        unit TEXT NOT NULL,
        bed TEXT NOT NULL,
        kind TEXT NOT NULL,
        state TEXT NOT NULL,
        priority TEXT NOT NULL,
        trigger TEXT NOT NULL,
        ts REAL NOT NULL,
        onset_ts REAL NOT NULL,
        recorded_at REAL NOT NULL,
        payload TEXT NOT NULL
    )
    """,
    "CREATE INDEX IF NOT EXISTS transitions_bed_ts ON transitions (unit, bed, ts)",
    "CREATE INDEX IF NOT EXISTS transitions_alarm ON transitions (alarm_id)",
)

#: Kept in SQLite's ``user_version``; writing it at every open also proves the
#: file is writable before the first alarm needs it.
SCHEMA_VERSION: Final = 1

_INSERT: Final = (
    "INSERT INTO transitions (alarm_id, unit, bed, kind, state, priority, trigger, ts, "
    "onset_ts, recorded_at, payload) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)

# The last transition of every alarm (the highest id per alarm_id), if not cleared.
_OPEN: Final = (
    "SELECT t.id, t.payload FROM transitions AS t "
    "JOIN (SELECT alarm_id, MAX(id) AS last FROM transitions GROUP BY alarm_id) AS m "
    "ON t.id = m.last WHERE t.state != ? ORDER BY t.id"
)


class AuditError(RuntimeError):
    """The audit trail could not be opened, written or read.

    Attributes:
        path: the database file.
        reason: what went wrong, in words (SQLite's message when it is SQLite's).
    """

    def __init__(self, path: str | Path, reason: str) -> None:
        self.path = str(path)
        self.reason = reason
        super().__init__(f"audit log {self.path}: {reason}")


@dataclass(frozen=True, slots=True)
class AuditRow:
    """One recorded transition, as stored."""

    id: int
    alarm_id: str
    unit: str
    bed: str
    kind: str
    state: str
    priority: str
    trigger: str
    ts: float  # data time of the transition (epoch s)
    onset_ts: float
    recorded_at: float  # wall time the shell recorded it (epoch s)
    payload: str  # the JSON payload exactly as published

    @property
    def bed_id(self) -> BedId:
        return BedId(self.unit, self.bed)

    def event(self) -> AlarmEvent:
        """The published event, decoded back from the stored payload."""
        return decode_alarm(self.payload.encode("utf-8"))

    def as_dict(self) -> dict[str, Any]:
        """The row with the payload parsed (for JSON output)."""
        out: dict[str, Any] = {name: getattr(self, name) for name in _COLUMNS}
        out["payload"] = msgspec.json.decode(self.payload)
        return out


def _describe(exc: sqlite3.Error) -> str:
    name = getattr(exc, "sqlite_errorname", None)
    return f"{exc} ({name})" if name else str(exc)


class AuditLog:
    """The audit trail in one SQLite file (WAL journal, ``synchronous=NORMAL``).

    Args:
        path: the database file; created (with its table) if absent. Its
            directory must exist.
        readonly: open without writing anything (the file must exist and
            hold the table); any write then fails with :class:`AuditError`.
        busy_timeout_s: how long a write waits for another connection's lock
            before failing as "database is locked".
    """

    def __init__(
        self, path: str | Path, *, readonly: bool = False, busy_timeout_s: float = 2.0
    ) -> None:
        self.path = Path(path)
        self.readonly = readonly
        self._lock = threading.Lock()
        parent = self.path.parent
        if not parent.is_dir():
            raise AuditError(self.path, f"directory {parent} does not exist")
        if self.path.is_dir():
            raise AuditError(self.path, "is a directory, not a database file")
        if readonly and not self.path.is_file():
            raise AuditError(self.path, "no such file")
        conn: sqlite3.Connection | None = None
        try:
            conn = sqlite3.connect(
                f"{self.path.resolve().as_uri()}?mode={'ro' if readonly else 'rwc'}",
                uri=True,
                timeout=busy_timeout_s,
                isolation_level=None,  # transactions are explicit (BEGIN IMMEDIATE)
                check_same_thread=False,  # guarded by self._lock
            )
            problem = self._check_readable(conn) if readonly else self._prepare(conn)
        except sqlite3.Error as exc:
            if conn is not None:
                conn.close()
            reason = _describe(exc)
            if not readonly and not os.access(parent, os.W_OK):
                reason += f" (directory {parent} is not writable)"
            raise AuditError(self.path, f"cannot open: {reason}") from exc
        if problem is not None:
            conn.close()
            raise AuditError(self.path, problem)
        self._conn: sqlite3.Connection | None = conn

    # -- plumbing ------------------------------------------------------------

    @staticmethod
    def _check_readable(conn: sqlite3.Connection) -> str | None:
        found = conn.execute(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'transitions'"
        ).fetchone()
        return None if found else "not a streamproc audit log (no transitions table)"

    @staticmethod
    def _prepare(conn: sqlite3.Connection) -> str | None:
        """WAL, synchronous=NORMAL, and the table and its indexes."""
        mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
        if str(mode).lower() != "wal":
            return f"could not enable the WAL journal (journal_mode is {mode!r})"
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.execute("BEGIN IMMEDIATE")
        try:
            for statement in _SCHEMA:
                conn.execute(statement)
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA_VERSION:
                conn.execute("ROLLBACK")
                return f"written by a newer streamproc (schema {version} > {SCHEMA_VERSION})"
            conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        return None

    @contextmanager
    def _connection(self) -> Iterator[sqlite3.Connection]:
        """The open connection under the lock; SQLite errors become AuditError."""
        with self._lock:
            if self._conn is None:
                raise AuditError(self.path, "the audit log is closed")
            try:
                yield self._conn
            except sqlite3.Error as exc:
                raise AuditError(self.path, _describe(exc)) from exc

    # -- writing -------------------------------------------------------------

    def append(self, events: Sequence[AlarmEvent], recorded_at: float) -> None:
        """Record a batch of transitions in one transaction (all or none)."""
        if not events:
            return
        rows = [
            (
                ev.alarm_id,
                ev.bed.unit,
                ev.bed.bed,
                ev.kind,
                ev.state.value,
                ev.priority.value,
                ev.trigger.value,
                ev.ts,
                ev.onset_ts,
                recorded_at,
                encode_alarm(ev).decode("utf-8"),
            )
            for ev in events
        ]
        with self._connection() as conn:
            conn.execute("BEGIN IMMEDIATE")
            try:
                conn.executemany(_INSERT, rows)
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise

    # -- reading -------------------------------------------------------------

    def query(
        self,
        *,
        unit: str | None = None,
        bed: str | None = None,
        since: float | None = None,
        kind: str | None = None,
        limit: int | None = None,
    ) -> list[AuditRow]:
        """Recorded transitions in the order they were written.

        ``since`` is a data time (``ts >= since``); ``limit`` keeps the first
        ``limit`` rows that match.
        """
        where: list[str] = []
        params: list[Any] = []
        for column, value in (("unit", unit), ("bed", bed), ("kind", kind)):
            if value is not None:
                where.append(f"{column} = ?")
                params.append(value)
        if since is not None:
            where.append("ts >= ?")
            params.append(float(since))
        sql = f"SELECT {', '.join(_COLUMNS)} FROM transitions"  # noqa: S608 - fixed names
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY id"
        if limit is not None:
            sql += " LIMIT ?"
            params.append(int(limit))
        with self._connection() as conn:
            fetched = conn.execute(sql, params).fetchall()
        return [AuditRow(*row) for row in fetched]

    def open_alarms(self) -> list[AlarmEvent]:
        """Each alarm's last recorded state, for those not cleared (oldest first)."""
        with self._connection() as conn:
            fetched = conn.execute(_OPEN, (AlarmState.CLEARED.value,)).fetchall()
        events = []
        for row_id, payload in fetched:
            try:
                events.append(decode_alarm(str(payload).encode("utf-8")))
            except CodecError as exc:
                raise AuditError(
                    self.path, f"row {row_id}: stored payload unreadable: {exc}"
                ) from exc
        return events

    def schema_version(self) -> int:
        """The file's schema version (SQLite ``user_version``)."""
        with self._connection() as conn:
            return int(conn.execute("PRAGMA user_version").fetchone()[0])

    def journal_mode(self) -> str:
        """SQLite's journal mode for this file (``wal`` once opened for writing)."""
        with self._connection() as conn:
            return str(conn.execute("PRAGMA journal_mode").fetchone()[0]).lower()

    # -- lifetime ------------------------------------------------------------

    def close(self) -> None:
        """Close the connection (idempotent)."""
        with self._lock:
            if self._conn is not None:
                try:
                    self._conn.close()
                except sqlite3.Error as exc:  # pragma: no cover - close rarely fails
                    raise AuditError(self.path, _describe(exc)) from exc
                finally:
                    self._conn = None

    @property
    def closed(self) -> bool:
        return self._conn is None

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<AuditLog {self.path}{' (read-only)' if self.readonly else ''}>"


# -- presentation (the ``streamproc audit`` command) -----------------------------

_HEADERS: Final = ("time (UTC)", "bed", "kind", "state", "priority", "trigger", "alarm_id")


def iso_utc(ts: float) -> str:
    """Epoch seconds as ISO-8601 UTC with milliseconds, e.g. ``2024-11-23T22:13:20.000Z``."""
    return datetime.fromtimestamp(ts, tz=UTC).isoformat(timespec="milliseconds")[:-6] + "Z"


def format_table(rows: Sequence[AuditRow]) -> str:
    """The rows as an aligned text table with a header line."""
    cells = [
        (iso_utc(r.ts), f"{r.unit}/{r.bed}", r.kind, r.state, r.priority, r.trigger, r.alarm_id)
        for r in rows
    ]
    widths = [max(len(str(c)) for c in column) for column in zip(_HEADERS, *cells, strict=True)]
    return "\n".join(
        "  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)).rstrip()
        for line in (_HEADERS, *cells)
    )


def row_json(row: AuditRow) -> str:
    """One row as a JSON line (the payload as an object, not a string)."""
    return msgspec.json.encode(row.as_dict()).decode("utf-8")
