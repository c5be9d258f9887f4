"""The audit trail: every alarm transition, durably, and the open alarms back after a restart."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streamproc.apps.cli import main
from streamproc.core.protocol.alarms import Alarm, AlarmEvent, AlarmState, Priority, Trigger
from streamproc.core.protocol.messages import BedId
from streamproc.shell.audit import (
    SCHEMA_VERSION,
    AuditError,
    AuditLog,
    AuditRow,
    AuditTrail,
    format_table,
    iso_utc,
)
from streamproc.shell.config import ServiceSettings
from streamproc.wire.outbound import encode_alarm

BED3 = BedId("ward7", "bed03")
BED4 = BedId("ward7", "bed04")
ICU2 = BedId("icu2", "bed01")
T0 = 1_732_400_000.0  # 2024-11-23T22:13:20Z
DETAILS = {"metric": "map", "value": 52.0, "target": 65.0, "on_norepinephrine": True}


def hypotension_life(bed: BedId = BED3, onset: float = T0) -> list[AlarmEvent]:
    """Raised, acknowledged, cleared."""
    alarm = Alarm(bed, "hypotension", onset)
    return [
        alarm.apply(Trigger.RAISE, onset + 60.0, priority=Priority.HIGH, details=DETAILS),
        alarm.apply(Trigger.ACK, onset + 75.5, by="station-3", value=52.0),
        alarm.apply(Trigger.CLEAR, onset + 300.0),
    ]


def stale_raised(bed: BedId = BED4, onset: float = T0 + 10.0) -> list[AlarmEvent]:
    """A data_stale alarm raised and re-announced, still open."""
    alarm = Alarm(bed, "data_stale", onset)
    return [
        alarm.apply(Trigger.RAISE, onset, priority=Priority.MEDIUM, details={"reason": "no abp"}),
        alarm.apply(Trigger.REANNOUNCE, onset + 120.0),
    ]


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "audit.sqlite3"


@pytest.fixture
def log(db: Path) -> Iterator[AuditLog]:
    with AuditLog(db) as opened:
        yield opened


def fill(log: AuditLog) -> list[AlarmEvent]:
    """Three beds' transitions, appended in two batches; returns them in order."""
    first = hypotension_life()
    second = [*stale_raised(), *hypotension_life(ICU2, T0 + 1000.0)[:2]]
    log.append(first, recorded_at=5000.0)
    log.append(second, recorded_at=5001.0)
    return first + second


class TestAppendAndQuery:
    def test_round_trip_keeps_every_field(self, log: AuditLog) -> None:
        """Each event comes back as one row, in order, with the payload exactly as published."""
        events = fill(log)
        rows = log.query()
        assert [r.id for r in rows] == list(range(1, len(events) + 1))
        for row, event in zip(rows, events, strict=True):
            assert row.alarm_id == event.alarm_id
            assert (row.unit, row.bed) == (event.bed.unit, event.bed.bed)
            assert row.bed_id == event.bed
            assert (row.kind, row.state) == (event.kind, event.state.value)
            assert (row.priority, row.trigger) == (event.priority.value, event.trigger.value)
            assert (row.ts, row.onset_ts) == (event.ts, event.onset_ts)
            assert row.payload.encode() == encode_alarm(event)
            assert row.event() == event
        assert [r.recorded_at for r in rows] == [5000.0] * 3 + [5001.0] * 4

    def test_filters(self, log: AuditLog) -> None:
        """unit, bed, kind, since (data time, inclusive) and limit narrow the rows."""
        fill(log)
        assert {r.unit for r in log.query(unit="icu2")} == {"icu2"}
        assert len(log.query(unit="icu2")) == 2
        assert [r.bed for r in log.query(unit="ward7", bed="bed04")] == ["bed04", "bed04"]
        assert [r.kind for r in log.query(kind="data_stale")] == ["data_stale", "data_stale"]
        since = log.query(since=T0 + 75.5)
        assert min(r.ts for r in since) == T0 + 75.5
        assert len(since) == 5  # not the raises at T0+60 (bed03) and T0+10 (stale)
        assert [r.id for r in log.query(limit=2)] == [1, 2]
        assert log.query(unit="ward7", bed="bed03", kind="hypotension", since=T0 + 100) == [
            log.query()[2]
        ]
        assert log.query(unit="nowhere") == []

    def test_empty_batch_is_a_no_op(self, log: AuditLog) -> None:
        """Appending nothing writes nothing and does not fail."""
        log.append([], recorded_at=1.0)
        assert log.query() == []

    def test_rows_are_frozen(self, log: AuditLog) -> None:
        """An AuditRow is a read-only record."""
        fill(log)
        row = log.query(limit=1)[0]
        assert isinstance(row, AuditRow)
        with pytest.raises(AttributeError):
            row.state = "cleared"  # type: ignore[misc]


class TestOpenAlarms:
    def test_last_non_cleared_state_per_alarm(self, log: AuditLog) -> None:
        """A cleared alarm is gone; each open one is its last transition, oldest alarm first."""
        events = fill(log)
        opened = log.open_alarms()
        stale_last = events[4]  # the re-announcement
        icu2_last = events[6]  # the acknowledgement on icu2
        assert opened == [stale_last, icu2_last]
        assert [e.state for e in opened] == [AlarmState.ACTIVE, AlarmState.ACKNOWLEDGED]
        assert opened[0].announce_count == 1
        assert opened[1].acknowledged_by == "station-3"
        assert dict(opened[1].details) == DETAILS

    def test_restores_the_engine_alarm(self, log: AuditLog) -> None:
        """What open_alarms gives back rebuilds an Alarm that continues where it stopped."""
        fill(log)
        acked = next(e for e in log.open_alarms() if e.state is AlarmState.ACKNOWLEDGED)
        alarm = Alarm.restore(acked)
        cleared = alarm.apply(Trigger.CLEAR, acked.ts + 100.0)
        assert cleared.alarm_id == acked.alarm_id
        assert cleared.priority is Priority.HIGH
        assert cleared.state is AlarmState.CLEARED

    def test_restart_keeps_the_ack_silence(self, log: AuditLog) -> None:
        """The audit keeps when the acknowledgement was taken (``acknowledged_at``, the
        processor's time) and when the alarm was last announced, even when a later
        transition (an update) is the last one: a restart 100 s after the acknowledgement
        ends the silence 300 s after it, not 300 s after the restart."""
        alarm = Alarm(BED3, "hypotension", T0)
        events = [
            alarm.apply(Trigger.RAISE, T0 + 60.0, priority=Priority.HIGH, at=T0 + 61.0),
            alarm.apply(Trigger.ACK, T0 + 75.0, by="station-3", value=52.0, at=T0 + 76.5),
            alarm.apply(Trigger.UPDATE, T0 + 90.0, details={"value": 50.0}, at=T0 + 91.0),
        ]
        log.append(events, recorded_at=T0 + 91.0)
        (opened,) = log.open_alarms()
        assert (opened.acknowledged_at, opened.announced_at) == (T0 + 76.5, T0 + 61.0)
        back = Alarm.restore(opened, T0 + 176.5)
        assert (back.ack_ts, back.last_announce, back.acknowledged_by) == (
            T0 + 76.5,
            T0 + 61.0,
            "station-3",
        )

    def test_reopened_after_clear_is_a_new_alarm(self, log: AuditLog) -> None:
        """A new episode after a clear has its own id and is open; the old one stays closed."""
        old = hypotension_life()
        new = Alarm(BED3, "hypotension", T0 + 600.0).apply(
            Trigger.RAISE, T0 + 660.0, priority=Priority.MEDIUM
        )
        log.append([*old, new], recorded_at=1.0)
        assert log.open_alarms() == [new]

    def test_empty_log_has_no_open_alarms(self, log: AuditLog) -> None:
        """A fresh audit log restores nothing."""
        assert log.open_alarms() == []

    @settings(max_examples=40, deadline=None)
    @given(
        st.lists(
            st.tuples(st.integers(0, 3), st.sampled_from(list(Trigger))),
            min_size=1,
            max_size=40,
        )
    )
    def test_matches_the_alarms_in_memory(
        self, tmp_path_factory: pytest.TempPathFactory, moves: list[tuple[int, Trigger]]
    ) -> None:
        """For any run of legal moves on four alarms, open_alarms is their open last states."""
        alarms = [Alarm(BED3, f"kind{i}", T0 + i) for i in range(4)]
        events: list[AlarmEvent] = []
        ts = T0 + 10.0
        for index, trigger in moves:
            alarm = alarms[index]
            if alarm.allows(trigger):
                ts += 1.0
                events.append(alarm.apply(trigger, ts, priority=Priority.MEDIUM))
        path = tmp_path_factory.mktemp("prop") / "audit.sqlite3"
        with AuditLog(path) as log:
            log.append(events, recorded_at=0.0)
            restored = log.open_alarms()
        last = {e.alarm_id: e for e in events}
        expected = sorted(
            (e for e in last.values() if e.state is not AlarmState.CLEARED),
            key=lambda e: max(i for i, x in enumerate(events) if x.alarm_id == e.alarm_id),
        )
        assert restored == expected
        assert {e.alarm_id for e in restored} == {a.alarm_id for a in alarms if a.open}


class TestDurability:
    def test_wal_and_synchronous_normal(self, log: AuditLog, db: Path) -> None:
        """The file is in WAL mode (seen from another connection too) with synchronous=NORMAL."""
        assert log.journal_mode() == "wal"
        other = sqlite3.connect(db)
        try:
            assert other.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        finally:
            other.close()
        # synchronous is per connection: read it from the log's own (NORMAL is 1)
        assert log._conn is not None  # noqa: SLF001 - the log's own connection's pragma
        assert log._conn.execute("PRAGMA synchronous").fetchone()[0] == 1  # noqa: SLF001 - the log's own connection's pragma

    def test_survives_close_and_reopen(self, db: Path) -> None:
        """Rows written, the file closed and opened again: everything is still there."""
        with AuditLog(db) as first:
            events = fill(first)
            before = first.query()
        assert first.closed
        with AuditLog(db) as again:
            assert again.query() == before
            assert again.open_alarms() == [events[4], events[6]]
            again.append(stale_raised(BED3, T0 + 9000.0), recorded_at=6000.0)
            assert [r.id for r in again.query()][-2:] == [8, 9]

    def test_schema_and_indexes(self, log: AuditLog, db: Path) -> None:
        """The table has the documented columns and both indexes exist."""
        conn = sqlite3.connect(db)
        try:
            columns = [row[1] for row in conn.execute("PRAGMA table_info(transitions)")]
            indexes = {
                row[0]: [c[2] for c in conn.execute(f"PRAGMA index_info({row[0]})")]
                for row in conn.execute(
                    "SELECT name FROM sqlite_master WHERE type = 'index' "
                    "AND tbl_name = 'transitions'"
                )
            }
        finally:
            conn.close()
        assert columns == [
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
        ]
        assert sorted(indexes.values()) == [["alarm_id"], ["unit", "bed", "ts"]]
        assert log.schema_version() == SCHEMA_VERSION == 1

    def test_newer_schema_is_refused(self, db: Path) -> None:
        """A file from a newer streamproc (higher user_version) is not written into."""
        AuditLog(db).close()
        conn = sqlite3.connect(db)
        conn.execute("PRAGMA user_version = 99")
        conn.commit()
        conn.close()
        with pytest.raises(AuditError, match="newer streamproc"):
            AuditLog(db)

    def test_close_is_idempotent_and_final(self, db: Path) -> None:
        """close() twice is fine; using a closed log is an AuditError, not a crash."""
        log = AuditLog(db)
        log.close()
        log.close()
        with pytest.raises(AuditError, match="closed"):
            log.append(hypotension_life(), recorded_at=0.0)


class TestErrors:
    def test_missing_directory(self, tmp_path: Path) -> None:
        """A path in a directory that does not exist is refused with path and reason."""
        path = tmp_path / "no" / "such" / "audit.sqlite3"
        with pytest.raises(AuditError) as info:
            AuditLog(path)
        assert info.value.path == str(path)
        assert "does not exist" in info.value.reason
        assert info.value.code == "no_directory"
        assert str(path) in str(info.value)
        assert isinstance(info.value, RuntimeError)
        assert not path.parent.exists()

    def test_path_is_a_directory(self, tmp_path: Path) -> None:
        """A directory where the file should be is refused clearly."""
        with pytest.raises(AuditError, match="is a directory"):
            AuditLog(tmp_path)

    def test_not_a_database(self, tmp_path: Path) -> None:
        """A file that is not SQLite fails at open as an AuditError naming SQLite's reason."""
        path = tmp_path / "notes.txt"
        path.write_text("this is not a database, just text long enough to matter\n" * 20)
        with pytest.raises(AuditError, match="not a database") as info:
            AuditLog(path)
        assert info.value.reason.startswith("cannot open")

    def test_read_only_database(self, log: AuditLog, db: Path) -> None:
        """A database SQLite may only read refuses writes as an AuditError.

        Simulated: the tests run as root, where chmod does not stop writes, so
        the file is opened read-only through SQLite (``mode=ro``), which is how
        SQLite itself sees a read-only file.
        """
        fill(log)
        with AuditLog(db, readonly=True) as reader:
            assert len(reader.query()) == 7
            with pytest.raises(AuditError, match="readonly") as info:
                reader.append(stale_raised(BED3), recorded_at=0.0)
        assert info.value.path == str(db)
        assert len(log.query()) == 7

    def test_read_only_open_of_a_foreign_database(self, tmp_path: Path) -> None:
        """A read-only open of an SQLite file without the table says it is not an audit log."""
        path = tmp_path / "other.sqlite3"
        conn = sqlite3.connect(path)
        conn.execute("CREATE TABLE t (x)")
        conn.commit()
        conn.close()
        with pytest.raises(AuditError, match="not a streamproc audit log"):
            AuditLog(path, readonly=True)
        with pytest.raises(AuditError, match="no such file"):
            AuditLog(tmp_path / "absent.sqlite3", readonly=True)

    def test_locked_database(self, db: Path) -> None:
        """Another connection holding the write lock: AuditError after the busy timeout.

        Not simulated: a second real connection takes an exclusive lock.
        """
        with AuditLog(db, busy_timeout_s=0.05) as log:
            other = sqlite3.connect(db, isolation_level=None)
            try:
                other.execute("BEGIN EXCLUSIVE")
                with pytest.raises(AuditError, match="locked") as info:
                    log.append(hypotension_life(), recorded_at=0.0)
                assert "locked" in info.value.reason
                other.execute("ROLLBACK")
            finally:
                other.close()
            log.append(hypotension_life(), recorded_at=0.0)  # usable again afterwards
            assert len(log.query()) == 3

    def test_disk_full_rolls_back_the_whole_batch(self, log: AuditLog) -> None:
        """Disk full mid-batch: AuditError, none of the batch is kept, the log stays usable.

        Simulated: SQLite's ``max_page_count`` caps the file at its current
        size, which makes SQLite report SQLITE_FULL exactly as a full disk does.
        """
        log.append(hypotension_life(), recorded_at=0.0)
        assert log._conn is not None  # noqa: SLF001 - a full disk, simulated on its connection
        pages = log._conn.execute("PRAGMA page_count").fetchone()[0]  # noqa: SLF001 - a full disk, simulated on its connection
        log._conn.execute(f"PRAGMA max_page_count = {pages}")  # noqa: SLF001 - a full disk, simulated on its connection
        big = {"note": "x" * 20_000}
        batch = [
            Alarm(BED4, f"kind{i}", T0).apply(Trigger.RAISE, T0, details=big) for i in range(20)
        ]
        with pytest.raises(AuditError, match="full") as info:
            log.append(batch, recorded_at=1.0)
        assert info.value.code == "SQLITE_FULL"
        assert len(log.query()) == 3  # nothing of the failed batch
        log._conn.execute("PRAGMA max_page_count = 1073741823")  # noqa: SLF001 - a full disk, simulated on its connection
        log.append(batch[:1], recorded_at=2.0)
        assert len(log.query()) == 4


class Hooks:
    """What an AuditTrail reported: (code, attempt) per failure, (down_s, written) per recovery."""

    def __init__(self) -> None:
        self.errors: list[tuple[str, int]] = []
        self.recovered: list[tuple[float, int]] = []

    def trail(self, path: Path, **kw: float) -> AuditTrail:
        return AuditTrail(
            path,
            on_error=lambda exc, attempt: self.errors.append((exc.code, attempt)),
            on_recovered=lambda down, written: self.recovered.append((down, written)),
            **kw,  # type: ignore[arg-type]
        )


class TestTrail:
    """AuditTrail: the audit failing while the service runs, and catching up afterwards.

    Not simulated: the database's directory is really renamed away (as root, chmod
    would not stop a write), so the open file is no longer at its path and a new one
    cannot be created there until the directory is back.
    """

    def test_healthy_writes_at_once(self, db: Path) -> None:
        hooks = Hooks()
        trail = hooks.trail(db)
        assert trail.open(0.0)
        trail.append(hypotension_life(), recorded_at=1.0)
        assert (trail.healthy, trail.pending) == (True, 0)
        assert trail.close(2.0) == 0
        assert len(AuditLog(db, readonly=True).query()) == 3
        assert hooks.errors == []

    def test_directory_moved_away_mid_run_then_back(self, tmp_path: Path) -> None:
        """The directory goes away while open: the next write notices (file_replaced), the
        transitions wait; retries fail (no_directory) every retry_s until it is back; then
        everything is written in order, once, and the recovery is reported."""
        home = tmp_path / "audit"
        home.mkdir()
        db = home / "audit.sqlite3"
        hooks = Hooks()
        trail = hooks.trail(db, retry_s=2.0)
        assert trail.open(0.0)
        first, second, third = hypotension_life()
        trail.append([first], recorded_at=1.0)
        home.rename(tmp_path / "elsewhere")
        trail.append([second], recorded_at=2.0)
        assert hooks.errors == [("file_replaced", 1)]
        assert (trail.healthy, trail.pending, trail.error is not None) == (False, 1, True)
        trail.append([third], recorded_at=3.0)  # waits: no attempt before the retry time
        assert (len(hooks.errors), trail.pending) == (1, 2)
        trail.poll(3.9)  # too early
        assert len(hooks.errors) == 1
        trail.poll(4.0)
        assert hooks.errors[-1] == ("no_directory", 2)
        (tmp_path / "elsewhere").rename(home)
        trail.poll(5.0)  # next retry is at 6.0
        assert trail.error is not None
        trail.poll(6.0)
        assert hooks.recovered == [(4.0, 2)]
        assert (trail.healthy, trail.pending, trail.error) == (True, 0, None)
        rows = AuditLog(db, readonly=True).query()
        assert [(r.trigger, r.recorded_at) for r in rows] == [
            ("raised", 1.0),
            ("acknowledged", 2.0),
            ("cleared", 3.0),
        ]
        assert trail.close(7.0) == 0

    def test_file_replaced_by_another_is_noticed_by_poll(self, tmp_path: Path) -> None:
        """A healthy trail checks its file every retry_s: replaced by another file, it reopens
        the path (the new file) and says so."""
        db = tmp_path / "audit.sqlite3"
        hooks = Hooks()
        trail = hooks.trail(db, retry_s=1.0)
        assert trail.open(0.0)
        db.rename(tmp_path / "old.sqlite3")
        (tmp_path / "audit.sqlite3-wal").unlink(missing_ok=True)
        (tmp_path / "audit.sqlite3-shm").unlink(missing_ok=True)
        AuditLog(db).close()  # someone else's new, empty audit file at the path
        trail.poll(1.0)
        assert hooks.errors == [("file_replaced", 1)]
        trail.poll(2.0)
        assert hooks.recovered == [(1.0, 0)]
        trail.append(hypotension_life(), recorded_at=3.0)
        assert len(AuditLog(db, readonly=True).query()) == 3
        trail.close(4.0)

    def test_unusable_at_start_recovers_later(self, tmp_path: Path) -> None:
        """A directory where the file should be: open fails (is_directory); once it is gone,
        the next retry creates the database and writes what waited."""
        db = tmp_path / "audit.sqlite3"
        db.mkdir()
        hooks = Hooks()
        trail = hooks.trail(db, retry_s=1.0)
        assert not trail.open(0.0)
        assert trail.open_alarms(0.0) == []
        trail.append(stale_raised(), recorded_at=0.5)
        trail.poll(1.0)
        assert hooks.errors == [("is_directory", 1), ("is_directory", 2)]
        db.rmdir()
        trail.poll(2.0)
        assert hooks.recovered == [(2.0, 2)]
        assert trail.open_alarms(2.0)[0].kind == "data_stale"
        trail.close(3.0)

    def test_pending_is_bounded(self, tmp_path: Path) -> None:
        """Past max_pending the oldest waiting batches give way, counted."""
        db = tmp_path / "audit.sqlite3"
        db.mkdir()
        trail = Hooks().trail(db, max_pending=4)
        trail.open(0.0)
        for i in range(5):
            trail.append(stale_raised(onset=T0 + i), recorded_at=float(i))
        assert (trail.pending, trail.dropped) == (4, 6)
        assert trail.close(1.0) == 4  # still a directory: left unwritten, and said so

    def test_close_writes_what_waits_when_it_can(self, tmp_path: Path) -> None:
        db = tmp_path / "audit.sqlite3"
        db.mkdir()
        trail = Hooks().trail(db, retry_s=60.0)
        trail.open(0.0)
        trail.append(stale_raised(), recorded_at=1.0)
        db.rmdir()
        assert trail.close(2.0) == 0
        assert len(AuditLog(db, readonly=True).query()) == 2


class TestCli:
    def test_table(self, log: AuditLog, db: Path, capsys: pytest.CaptureFixture[str]) -> None:
        """An aligned table: header, ISO UTC data time, bed, kind, state, priority, trigger, id."""
        fill(log)
        assert main(["audit", "--db", str(db)]) == 0
        lines = capsys.readouterr().out.splitlines()
        assert lines[0].split() == [
            "time",
            "(UTC)",
            "bed",
            "kind",
            "state",
            "priority",
            "trigger",
            "alarm_id",
        ]
        assert len(lines) == 8
        first = lines[1].split()
        assert first == [
            "2024-11-23T22:14:20.000Z",
            "ward7/bed03",
            "hypotension",
            "active",
            "high",
            "raised",
            f"ward7.bed03.hypotension.{round(T0 * 1000)}",
        ]
        # aligned: every column starts at the same offset on every line
        starts = [lines[0].index(h) for h in ("bed", "kind", "state", "priority", "trigger")]
        for line in lines[1:]:
            assert all(line[s - 2 : s] == "  " and line[s] != " " for s in starts)

    def test_filters(self, log: AuditLog, db: Path, capsys: pytest.CaptureFixture[str]) -> None:
        """--bed UNIT/BED, --bed UNIT, --kind and --since (epoch and ISO) select rows."""
        fill(log)

        def run(*extra: str) -> list[str]:
            assert main(["audit", "--db", str(db), *extra]) == 0
            return capsys.readouterr().out.splitlines()[1:]

        assert {line.split()[1] for line in run("--bed", "ward7/bed04")} == {"ward7/bed04"}
        assert len(run("--bed", "ward7")) == 5
        assert {line.split()[2] for line in run("--kind", "data_stale")} == {"data_stale"}
        assert len(run("--since", str(T0 + 1000))) == 2
        assert len(run("--since", "2024-11-23T22:29:59Z")) == 2  # T0 + 999 s
        assert len(run("--since", "2024-11-23T22:29:59")) == 2  # no offset: UTC
        assert len(run("--since", "2024-11-23T23:29:59+01:00")) == 2
        assert len(run("--limit", "1")) == 1

    def test_json_lines(self, log: AuditLog, db: Path, capsys: pytest.CaptureFixture[str]) -> None:
        """--json prints one object per transition, the published payload as an object."""
        events = fill(log)
        assert main(["audit", "--db", str(db), "--json", "--bed", "icu2/bed01"]) == 0
        rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
        assert [r["state"] for r in rows] == ["active", "acknowledged"]
        assert rows[1]["payload"] == json.loads(encode_alarm(events[6]))
        assert rows[1]["recorded_at"] == 5001.0
        assert rows[1]["id"] == 7

    def test_missing_file(self, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
        """A database that does not exist: exit 2, a clear message, and no file created."""
        path = tmp_path / "absent.sqlite3"
        assert main(["audit", "--db", str(path)]) == 2
        assert f"no such file: {path}" in capsys.readouterr().err
        assert not path.exists()

    def test_no_matches(self, log: AuditLog, db: Path, capsys: pytest.CaptureFixture[str]) -> None:
        """Nothing matching: exit 0, nothing on stdout, a note on stderr."""
        fill(log)
        assert main(["audit", "--db", str(db), "--kind", "nothing"]) == 0
        captured = capsys.readouterr()
        assert captured.out == ""
        assert "no matching transitions" in captured.err

    def test_unreadable_file(self, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
        """A file that is not an audit log: exit 1 with the audit error."""
        path = tmp_path / "junk.sqlite3"
        path.write_bytes(b"junk" * 500)
        assert main(["audit", "--db", str(path)]) == 1
        assert "audit log" in capsys.readouterr().err

    @pytest.mark.parametrize(
        ("option", "value"),
        [("--since", "yesterday"), ("--since", "nan"), ("--bed", "ward 7/bed03"), ("--bed", "a/")],
    )
    def test_bad_arguments(
        self, db: Path, option: str, value: str, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """Unparseable --since or --bed: argparse's usage error (exit 2) naming the value."""
        with pytest.raises(SystemExit) as info:
            main(["audit", "--db", str(db), option, value])
        assert info.value.code == 2
        assert repr(value) in capsys.readouterr().err

    def test_default_database(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """Without --db it reads ServiceSettings().audit_db (relative to the working directory)."""
        monkeypatch.chdir(tmp_path)
        with AuditLog(tmp_path / ServiceSettings().audit_db) as log:
            log.append(stale_raised(), recorded_at=0.0)
        assert main(["audit", "--json"]) == 0
        assert len(capsys.readouterr().out.splitlines()) == 2


def test_format_helpers() -> None:
    """iso_utc is UTC with milliseconds; an empty table is just its header."""
    assert iso_utc(T0 + 0.25) == "2024-11-23T22:13:20.250Z"
    assert format_table([]).split() == [
        "time",
        "(UTC)",
        "bed",
        "kind",
        "state",
        "priority",
        "trigger",
        "alarm_id",
    ]
