"""A durable audit trail of alarm transitions (SQLite, stdlib ``sqlite3``).

Every :class:`~streamproc.core.protocol.alarms.AlarmEvent` the service publishes is
appended here with the JSON payload exactly as published, the data time of
the transition (``ts``) and the wall time the shell recorded it
(``recorded_at``, passed in by the caller: this module never reads a clock).
After a restart :meth:`AuditLog.open_alarms` gives back each alarm's last
state that was not cleared, to rebuild the engine's alarms.

The audit is shell, and it must never crash the service: every SQLite failure
(disk full, read-only file, database locked, not a database) is raised as one
:class:`AuditError` naming the file, a short code and the reason, which the
caller reports loudly while it keeps alarming. A failed batch is rolled back as
a whole. :class:`AuditTrail` is what the service holds: an :class:`AuditLog`
that outlives its disk failing (transitions wait in memory, bounded, and are
written once the file can be reopened).

The connection may be used from any one thread at a time (e.g. through
``asyncio.to_thread``); a lock serialises calls.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import threading
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Any, Final, Self

import msgspec

from streamproc.core.protocol.alarms import AlarmEvent, AlarmState
from streamproc.core.protocol.messages import BedId
from streamproc.wire.codec import CodecError
from streamproc.wire.outbound import decode_alarm, encode_alarm

__all__ = [
    "SCHEMA_VERSION",
    "AuditError",
    "AuditLog",
    "AuditRow",
    "AuditTrail",
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
        code: a short stable code for logs and alerts: SQLite's error name when it is
            SQLite's (``SQLITE_FULL``, ``SQLITE_IOERR_WRITE``, ``SQLITE_READONLY``, ...),
            else one of ``no_directory``, ``is_directory``, ``no_such_file``,
            ``file_replaced``, ``closed``, ``not_an_audit_log``, ``audit_error``.
    """

    def __init__(self, path: str | Path, reason: str, code: str = "audit_error") -> None:
        self.path = str(path)
        self.reason = reason
        self.code = code
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


def _code(exc: sqlite3.Error) -> str:
    return str(getattr(exc, "sqlite_errorname", None) or "sqlite_error")


def _identity(path: Path) -> tuple[int, int] | None:
    """The file's (device, inode), or None when nothing is there."""
    try:
        st = path.stat()
    except OSError:
        return None
    return st.st_dev, st.st_ino


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
            raise AuditError(self.path, f"directory {parent} does not exist", "no_directory")
        if self.path.is_dir():
            raise AuditError(self.path, "is a directory, not a database file", "is_directory")
        if readonly and not self.path.is_file():
            raise AuditError(self.path, "no such file", "no_such_file")
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
            raise AuditError(self.path, f"cannot open: {reason}", _code(exc)) from exc
        if problem is not None:
            conn.close()
            raise AuditError(self.path, problem, "not_an_audit_log")
        self._conn: sqlite3.Connection | None = conn
        #: (device, inode) of the file opened: see :meth:`check_file`.
        self._identity = _identity(self.path)

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
                raise AuditError(self.path, "the audit log is closed", "closed")
            try:
                yield self._conn
            except sqlite3.Error as exc:
                raise AuditError(self.path, _describe(exc), _code(exc)) from exc

    def check_file(self) -> None:
        """Raise :class:`AuditError` (``file_replaced``) unless the path still names the file
        that was opened.

        SQLite keeps writing to an open file that was moved, deleted or replaced (its
        directory renamed away, another file put in its place): every row would go where
        nobody looks. One ``stat`` tells.
        """
        now = _identity(self.path)
        if now != self._identity:
            what = "is gone" if now is None else "is now another file"
            raise AuditError(
                self.path,
                f"the database file was moved, deleted or replaced since it was opened "
                f"(the path {what}): rows written now would be lost",
                "file_replaced",
            )

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


# -- the service's audit trail: an AuditLog that outlives its disk failing ----------

#: ``on_error(error, attempt)``: attempt 1 is the failure beginning, then each failed retry.
AuditErrorHook = Callable[[AuditError, int], None]
#: ``on_recovered(down_s, written)``: the failure lasted ``down_s``; ``written`` rows caught up.
AuditRecoveredHook = Callable[[float, int], None]


class AuditTrail:
    """The audit trail the service holds; it never raises.

    It wraps an :class:`AuditLog` on ``path``. When the file cannot be opened or a write
    fails (disk full, I/O error, read-only file system, the file moved, deleted or replaced
    while open: see :meth:`AuditLog.check_file`), the connection is closed, ``on_error``
    is called, and the transitions wait in memory, in order, up to ``max_pending`` (beyond
    it the oldest batch gives way, counted in :attr:`dropped`). :meth:`poll`, called by
    the service's tick, tries to reopen the file every ``retry_s``; once it can, what
    waited is written in order and ``on_recovered`` is called. While the trail is healthy,
    :meth:`poll` checks every ``retry_s`` that the path still names the file opened.

    Every method takes the time from the caller (the shell's clock); nothing here reads one.

    Attributes:
        error: the current failure, or None while the trail is healthy.
        pending: transitions waiting to be written.
        dropped: transitions given up (pending past ``max_pending``), since the start.
        failures: failed attempts (open or write), since the start.
    """

    def __init__(
        self,
        path: str | Path,
        *,
        on_error: AuditErrorHook,
        on_recovered: AuditRecoveredHook,
        retry_s: float = 2.0,
        max_pending: int = 100_000,
    ) -> None:
        self.path = Path(path)
        self.retry_s = retry_s
        self.max_pending = max_pending
        self._on_error = on_error
        self._on_recovered = on_recovered
        self._log: AuditLog | None = None
        self._queue: deque[tuple[Sequence[AlarmEvent], float]] = deque()
        self.error: AuditError | None = None
        self.pending = 0
        self.dropped = 0
        self.failures = 0
        self._attempts = 0
        self._failed_at: float | None = None
        self._next = 0.0  # next retry (failed) or file check (healthy)

    @property
    def healthy(self) -> bool:
        return self.error is None and self._log is not None

    def open(self, now: float) -> bool:
        """Open the file (at start); False (reported through ``on_error``) if it cannot be."""
        try:
            self._log = AuditLog(self.path)
        except AuditError as exc:
            self._fail(exc, now)
            return False
        self._next = now + self.retry_s
        self._flush(now)
        return self.error is None

    def open_alarms(self, now: float) -> list[AlarmEvent]:
        """The open alarms recorded before a restart ([] if the file cannot be read)."""
        if self._log is None:
            return []
        try:
            return self._log.open_alarms()
        except AuditError as exc:
            self._fail(exc, now)
            return []

    def append(self, events: Sequence[AlarmEvent], recorded_at: float) -> None:
        """Record a batch now, or keep it for when the file is usable again."""
        if not events:
            return
        self._queue.append((events, recorded_at))
        self.pending += len(events)
        while self.pending > self.max_pending and len(self._queue) > 1:
            old, _ = self._queue.popleft()
            self.pending -= len(old)
            self.dropped += len(old)
        if self.error is None and self._log is not None:
            self._flush(recorded_at)

    def poll(self, now: float) -> None:
        """Time passes: retry a failed trail, or check a healthy one's file, every ``retry_s``."""
        if now < self._next:
            return
        self._next = now + self.retry_s
        if self.error is None:
            if self._log is not None:
                try:
                    self._log.check_file()
                except AuditError as exc:
                    self._fail(exc, now)
            return
        try:
            log = AuditLog(self.path)
        except AuditError as exc:
            self._fail(exc, now)
            return
        self._log = log
        self.error = None
        written = self._flush(now)
        if self.error is None:
            down = 0.0 if self._failed_at is None else now - self._failed_at
            self._failed_at = None
            self._attempts = 0
            self._on_recovered(down, written)

    def close(self, now: float) -> int:
        """A last attempt to write what waits, then close; the transitions left unwritten."""
        if self._queue:
            if self.error is not None:
                self._next = now
                self.poll(now)
            elif self._log is not None:
                self._flush(now)
        if self._log is not None:
            with contextlib.suppress(AuditError):
                self._log.close()
            self._log = None
        return self.pending

    def _flush(self, now: float) -> int:
        """Write the waiting batches in order; on a failure, stop (the rest waits)."""
        log = self._log
        written = 0
        if log is None:
            return 0
        try:
            log.check_file()
            while self._queue:
                events, recorded_at = self._queue[0]
                log.append(events, recorded_at)
                self._queue.popleft()
                self.pending -= len(events)
                written += len(events)
        except AuditError as exc:
            self._fail(exc, now)
        return written

    def _fail(self, exc: AuditError, now: float) -> None:
        if self._failed_at is None:
            self._failed_at = now
            self._attempts = 0
        self._attempts += 1
        self.failures += 1
        self.error = exc
        self._next = now + self.retry_s
        if self._log is not None:
            with contextlib.suppress(AuditError):
                self._log.close()
            self._log = None
        self._on_error(exc, self._attempts)

    def __repr__(self) -> str:
        state = "ok" if self.healthy else f"failed: {self.error}"
        return f"<AuditTrail {self.path} {state}, {self.pending} pending>"


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
