"""A restart keeps what the last run knew; an eviction is reported to the shell.

Live mode throughout (``Clock.WALL``): the alarm timers and the staleness
run on the processor's clock, which every call passes in as ``now``. A
"restart" is a new :class:`Engine` given the last published transition of each
alarm (what the retained topics hold) and each bed's last data time (what the
retained summaries hold).
"""

from __future__ import annotations

from streamproc.core.engine import Batch, BedActivity, Engine
from streamproc.core.monitor import Clock
from streamproc.core.protocol.alarms import Alarm, AlarmEvent, AlarmState, Priority, Trigger
from streamproc.core.protocol.messages import Ack, BedId, Vitals, VitalsSource
from streamproc.core.protocol.settings import AlarmSettings, MonitorSettings

T0 = 1_732_400_000.0
A, B, C = BedId("ward7", "a"), BedId("ward7", "b"), BedId("ward7", "c")
SILENCE = AlarmSettings().ack_silence_s
REANNOUNCE = AlarmSettings().reannounce_s
STALE = MonitorSettings().stale_s


def low(eng: Engine, bed: BedId, start: float, seconds: int) -> list[AlarmEvent]:
    """MAP 50 once a second (data time = arrival time + 0.1 s), ticked every second."""
    out: list[AlarmEvent] = []
    for k in range(seconds):
        now = start + k
        out += eng.receive(
            Batch([(bed, Vitals(now - 0.1, VitalsSource.ART, sbp=70, dbp=40, map=50), now)])
        )
        out += eng.tick(now)
    return out


def last_states(events: list[AlarmEvent]) -> list[AlarmEvent]:
    """The retained topics: the last transition of each bed and kind."""
    last: dict[tuple[BedId, str], AlarmEvent] = {}
    for ev in events:
        last[(ev.bed, ev.kind)] = ev
    return list(last.values())


def ticks(eng: Engine, start: float, end: float) -> list[tuple[float, AlarmEvent]]:
    """Tick every second from ``start`` to ``end``; each transition with its tick's time."""
    out = []
    now = start
    while now <= end:
        out += [(now, ev) for ev in eng.tick(now)]
        now += 1.0
    return out


class TestRestoreAcknowledged:
    """An acknowledgement's silence ends ``ack_silence_s`` after the acknowledgement."""

    def test_silence_ends_after_the_ack_not_after_the_restart(self) -> None:
        """Ack at t_ack, restart 100 s later, data flowing: ``ack_expired`` at t_ack + 300,
        not at restart + 300 (before the fix it came 100 s late)."""
        eng = Engine()
        events = low(eng, A, T0, 70)
        raised = next(e for e in events if e.kind == "hypotension")
        t_ack = T0 + 80.0
        events += eng.receive(Batch([(A, Ack(t_ack - 3.0, raised.alarm_id, "station-3"), t_ack)]))
        assert events[-1].acknowledged_at == t_ack
        restart = t_ack + 100.0
        fresh = Engine()
        assert fresh.restore(last_states(events), restart) == 1
        after = low(fresh, A, restart, 260)
        expired = [(e.ts, e.acknowledged_by) for e in after if e.trigger is Trigger.ACK_EXPIRED]
        assert expired == [(t_ack + SILENCE, "station-3")]

    def test_silence_already_over_ends_at_the_first_tick(self) -> None:
        """A silence that ran out while the processor was down ends at the first tick."""
        eng = Engine()
        events = low(eng, A, T0, 70)
        raised = next(e for e in events if e.kind == "hypotension")
        events += eng.receive(Batch([(A, Ack(T0 + 80, raised.alarm_id, "station-3"), T0 + 80)]))
        restart = T0 + 80 + SILENCE + 50
        fresh = Engine()
        fresh.restore(last_states(events), restart)
        first = fresh.tick(restart + 1)
        assert [(e.kind, e.trigger) for e in first] == [("hypotension", Trigger.ACK_EXPIRED)]

    def test_a_time_ahead_of_the_clock_counts_as_now(self) -> None:
        """An acknowledgement stamped after the restart's clock (the clock went back) is
        silenced from the restart: never longer than ``ack_silence_s`` from now."""
        alarm = Alarm(A, "hypotension", T0)
        alarm.apply(Trigger.RAISE, T0, priority=Priority.MEDIUM)
        acked = alarm.apply(Trigger.ACK, T0 + 10, by="s", at=T0 + 5_000)
        back = Alarm.restore(acked, T0 + 20)
        assert (back.ack_ts, back.last_announce) == (T0 + 20, T0)

    def test_a_state_without_the_times_falls_back(self) -> None:
        """A state published before ``acknowledged_at`` existed: the acknowledgement's own
        ``ts`` when the state is the acknowledgement, else the restart."""
        alarm = Alarm(A, "hypotension", T0)
        alarm.apply(Trigger.RAISE, T0, priority=Priority.MEDIUM)
        acked = alarm.apply(Trigger.ACK, T0 + 10, by="s")
        old = AlarmEvent(
            **{
                name: getattr(acked, name)
                for name in AlarmEvent.__slots__
                if name not in ("acknowledged_at", "announced_at")
            }
        )
        assert Alarm.restore(old, T0 + 50).ack_ts == T0 + 10
        updated = alarm.apply(Trigger.UPDATE, T0 + 20, details={"value": 50})
        old = AlarmEvent(
            **{
                name: getattr(updated, name)
                for name in AlarmEvent.__slots__
                if name not in ("acknowledged_at", "announced_at")
            }
        )
        assert Alarm.restore(old, T0 + 50).ack_ts == T0 + 50

    def test_reannouncement_goes_on_from_the_last_one(self) -> None:
        """An active alarm announced at t is re-announced at t + reannounce_s after a
        restart in between, not reannounce_s after the restart."""
        eng = Engine()
        events = low(eng, A, T0, 70)
        raised = next(e for e in events if e.kind == "hypotension")
        assert raised.announced_at is not None
        restart = raised.announced_at + 60.0
        fresh = Engine()
        fresh.restore(last_states(events), restart)
        after = low(fresh, A, restart, 100)
        again = [e.ts for e in after if e.trigger is Trigger.REANNOUNCE]
        assert again == [raised.announced_at + REANNOUNCE]


class TestRestoreSilentBed:
    """A bed that never sends again goes ``data_stale`` ``stale_s`` after its last data."""

    def test_bed_with_open_alarm_goes_stale_on_time(self) -> None:
        """Last data at t_last, restart 10 s later with that time: ``data_stale`` at
        t_last + stale_s, onset t_last (before the fix: never, the alarm stayed active)."""
        eng = Engine()
        events = low(eng, A, T0, 70)
        t_last = T0 + 69.0
        restart = t_last + 10.0
        fresh = Engine()
        fresh.restore(
            last_states(events), restart, activity={A: BedActivity(t_last, nibp_only=False)}
        )
        raised = [
            (now, e) for now, e in ticks(fresh, restart, restart + 60) if e.kind == "data_stale"
        ]
        assert [(now, e.state, e.onset_ts) for now, e in raised] == [
            (t_last + STALE, AlarmState.ACTIVE, t_last)
        ]

    def test_bed_without_alarm_goes_stale_on_time(self) -> None:
        """A bed monitored before the restart without an open alarm (only its summary
        tells of it) is monitored again and goes stale on time."""
        fresh = Engine()
        restart = T0 + 100.0
        fresh.restore([], restart, activity={B: BedActivity(T0 + 95.0)})
        assert fresh.get(B) is not None
        raised = [(now, e.bed) for now, e in ticks(fresh, restart, restart + 60)]
        assert raised == [(T0 + 95.0 + STALE, B)]

    def test_nibp_only_bed_keeps_its_longer_limit(self) -> None:
        """An NIBP-only bed's staleness limit is the NIBP reading's (900 s), also after a
        restart."""
        fresh = Engine()
        fresh.restore([], T0, activity={B: BedActivity(T0 - 10.0, nibp_only=True)})
        assert ticks(fresh, T0, T0 + 100) == []
        mon = fresh.get(B)
        assert mon is not None
        assert mon.status().nibp_only

    def test_bed_with_open_alarm_and_no_known_time_goes_stale_after_the_restart(self) -> None:
        """No last data time known (no retained summary): stale_s after the restart, not
        never."""
        eng = Engine()
        events = low(eng, A, T0, 70)
        restart = T0 + 200.0
        fresh = Engine()
        fresh.restore(last_states(events), restart)
        raised = [now for now, e in ticks(fresh, restart, restart + 60) if e.kind == "data_stale"]
        assert raised == [restart + STALE]

    def test_data_after_the_restart_wins(self) -> None:
        """A bed that sends again after the restart is not stale: its new data counts."""
        eng = Engine()
        events = low(eng, A, T0, 70)
        restart = T0 + 75.0
        fresh = Engine()
        fresh.restore(last_states(events), restart, activity={A: BedActivity(T0 + 69.0)})
        out = low(fresh, A, restart, 60)
        assert not [e for e in out if e.kind == "data_stale"]

    def test_room_is_kept_for_beds_with_alarms(self) -> None:
        """Beds known only by their last data fill the room under max_beds left by those
        with open alarms, the most recent first; none is evicted for them."""
        eng = Engine()
        events = low(eng, A, T0, 70)
        fresh = Engine(max_beds=2, report_evictions=True)
        restart = T0 + 80.0
        activity = {B: BedActivity(T0 + 50.0), C: BedActivity(T0 + 60.0)}
        fresh.restore(last_states(events), restart, activity=activity)
        assert {m.bed for m in fresh.beds()} == {A, C}
        assert fresh.take_evicted_beds() == []

    def test_replay_restores_no_clock(self) -> None:
        """On data time (replay) the processor's times mean nothing: only the alarms."""
        fresh = Engine(clock=Clock.DATA)
        fresh.restore([], T0, activity={B: BedActivity(T0 - 10.0)})
        assert len(fresh) == 0


class TestEvictionReport:
    """The engine tells the shell which beds it evicted (sans-I/O: a drained list)."""

    def test_evicted_beds_are_listed_once(self) -> None:
        """Past max_beds each evicted bed is listed, oldest first, and taken once."""
        eng = Engine(max_beds=2, report_evictions=True)
        for i, bed in enumerate((A, B, C, BedId("ward7", "d"))):
            eng.receive(Batch([(bed, Vitals(T0 + i, VitalsSource.ART, map=80), T0 + i)]))
        assert eng.take_evicted_beds() == [A, B]
        assert eng.take_evicted_beds() == []
        assert (eng.get(A), eng.get(C) is not None) == (None, True)

    def test_not_kept_unless_asked(self) -> None:
        """A caller that does not take them (replay) does not keep them."""
        eng = Engine(max_beds=1)
        for i in range(100):
            eng.receive(
                Batch([(BedId("w", f"b{i}"), Vitals(T0 + i, VitalsSource.ART, map=80), T0 + i)])
            )
        assert eng.stats.beds_evicted == 99
        assert eng.take_evicted_beds() == []

    def test_a_bed_with_data_since_the_ranking_is_not_evicted(self) -> None:
        """Evictions take the candidates of one ranking in turn; a candidate that got data
        after the ranking is passed over, and the next bed silent longest goes."""
        eng = Engine(max_beds=64, report_evictions=True)
        beds = [BedId("w", f"b{i:02d}") for i in range(64)]
        for i, bed in enumerate(beds):
            eng.receive(Batch([(bed, Vitals(T0 + i, VitalsSource.ART, map=80), T0 + i)]))
        eng.receive(
            Batch([(BedId("w", "new1"), Vitals(T0 + 70, VitalsSource.ART, map=80), T0 + 70)])
        )
        assert eng.take_evicted_beds() == [beds[0]]
        eng.receive(Batch([(beds[1], Vitals(T0 + 71, VitalsSource.ART, map=80), T0 + 71)]))
        eng.receive(
            Batch([(BedId("w", "new2"), Vitals(T0 + 72, VitalsSource.ART, map=80), T0 + 72)])
        )
        assert eng.take_evicted_beds() == [beds[2]]
        for i in range(3, 10):  # the next ones, past the ranking's length: ranked again
            eng.receive(
                Batch(
                    [
                        (
                            BedId("w", f"n{i}"),
                            Vitals(T0 + 80 + i, VitalsSource.ART, map=80),
                            T0 + 80 + i,
                        )
                    ]
                )
            )
        assert eng.take_evicted_beds() == beds[3:10]
        assert eng.get(beds[1]) is not None

    def test_open_alarms_closed_on_every_path(self) -> None:
        """Evicted on receive, on restore: every open alarm closed (``bed_evicted``) and
        the bed listed; a tick after raises nothing for it."""
        src = Engine()
        events = low(src, A, T0, 70) + low(src, B, T0, 70)
        eng = Engine(max_beds=1, report_evictions=True)
        restart = T0 + 80.0
        eng.restore(last_states(events), restart)
        assert eng.take_evicted_beds() == []  # not before its closing states are returned
        out = eng.tick(restart + 1)
        assert eng.take_evicted_beds() == [A]
        out += eng.receive(Batch([(C, Vitals(restart + 2, VitalsSource.ART, map=80), restart + 2)]))
        assert eng.take_evicted_beds() == [B]
        out += eng.tick(restart + STALE + 10)
        closed = [(e.bed, e.kind) for e in out if e.details.get("clear_reason") == "bed_evicted"]
        assert closed == [(A, "hypotension"), (B, "hypotension")]
        assert all(e.bed == C or e.state is AlarmState.CLEARED for e in out)


def normal(eng: Engine, bed: BedId, start: float, seconds: int, now: float) -> list[AlarmEvent]:
    """MAP 80 once a second from data time ``start``, all arriving around ``now`` (a
    broker re-delivering a backlog)."""
    out: list[AlarmEvent] = []
    for k in range(seconds):
        out += eng.receive(
            Batch(
                [
                    (
                        bed,
                        Vitals(start + k, VitalsSource.ART, sbp=110, dbp=65, map=80),
                        now + k * 1e-3,
                    )
                ]
            )
        )
    return out


class TestRestoreDataFloor:
    """After a crash the broker re-delivers the backlog the last run had not acknowledged,
    from its start: that old data must not clear or re-raise what the last run decided."""

    def test_redelivered_old_data_does_not_clear_a_restored_alarm(self) -> None:
        """Normal pressures re-delivered from before the raise clear nothing (the
        kill-at-a-random-instant fault: a false ``cleared``, then a second id)."""
        eng = Engine()
        events = normal(eng, A, T0 - 60, 60, T0 - 60) + low(eng, A, T0, 70)
        raised = next(e for e in events if e.kind == "hypotension")
        restart = T0 + 75
        fresh = Engine()
        assert fresh.restore(last_states(events), restart) == 1
        again = normal(fresh, A, T0 - 60, 60, restart)  # the backlog, from its start
        again += low(fresh, A, restart, 5)
        assert not [e for e in again if e.kind == "hypotension"]
        assert fresh.stats.dropped.get("duplicate", 0) >= 60
        alarm = fresh.monitor(A).alarms["hypotension"]
        assert alarm.alarm_id == raised.alarm_id
        assert alarm.state is AlarmState.ACTIVE

    def test_summary_time_is_a_floor_too(self) -> None:
        """A bed with no data-decided alarm: its summary's ``ts`` is the floor."""
        fresh = Engine()
        fresh.restore([], T0 + 100, activity={B: BedActivity(T0 + 99, data_ts=T0 + 50)})
        normal(fresh, B, T0, 51, T0 + 101)
        assert fresh.stats.dropped.get("duplicate", 0) == 51
        normal(fresh, B, T0 + 51, 3, T0 + 102)
        assert fresh.stats.dropped.get("duplicate", 0) == 51  # newer data is taken

    def test_tick_transitions_are_not_data_times(self) -> None:
        """A re-announcement's ``ts`` is the processor's clock: no floor from it."""
        ev = AlarmEvent(
            alarm_id="ward7.c.hypotension.1",
            kind="hypotension",
            state=AlarmState.ACTIVE,
            priority=Priority.HIGH,
            ts=T0 + 10_000,
            onset_ts=T0,
            bed=C,
            trigger=Trigger.REANNOUNCE,
            announce_count=2,
            audience="charge_nurse",
            acknowledged_by=None,
        )
        fresh = Engine()
        fresh.restore([ev], T0 + 10_000)
        normal(fresh, C, T0 + 100, 3, T0 + 10_001)
        assert fresh.stats.dropped.get("duplicate", 0) == 0


class TestIdsAfterManyEvictions:
    """Alarm ids stay unique for a bed that comes back after its retired ids were dropped."""

    def test_a_returning_bed_never_reuses_an_id(self) -> None:
        """The retired-id memory holds ``max_beds`` beds; a bed pushed out of it that
        comes back and raises the same kind at the same data time gets a new id (found by
        the core property: ``advisory_dose_unknown`` raised after cleared on one id)."""
        from streamproc.core.protocol.messages import Drug, Infusion, RateUnit  # noqa: PLC0415

        engine = Engine(max_beds=1, clock=Clock.DATA)
        ts = 1_732_400_030.0
        a, b, c = BedId("u", "a"), BedId("u", "b"), BedId("u", "c")
        dose_unknown = Infusion(ts, Drug.NOREPINEPHRINE, 1.0, RateUnit.MCG_MIN, running=True)
        first = engine.receive(Batch([(a, dose_unknown, ts)]))
        raised = [ev for ev in first if ev.trigger is Trigger.RAISE]
        assert raised, "an NE rate in mcg/min without a weight raises advisory_dose_unknown"
        seen = {ev.alarm_id for ev in raised}
        for other in (b, c):  # a evicted (its alarm closed), then pushed out of the memory
            engine.receive(Batch([(other, dose_unknown, ts)]))
        again = engine.receive(Batch([(a, dose_unknown, ts)]))
        raised_again = [ev for ev in again if ev.trigger is Trigger.RAISE and ev.bed == a]
        assert raised_again
        assert not seen & {ev.alarm_id for ev in raised_again}
