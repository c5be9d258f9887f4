"""The per-bed monitor and the engine, driven by numerics (no waveform, no network).

Art-line numerics arrive once a second here, so every hold time is exact to
the second and each test reads as the protocol does.
"""

from __future__ import annotations

from collections.abc import Iterable

import pytest

from streamproc.core.engine import Batch, Engine
from streamproc.core.protocol.alarms import AlarmEvent, AlarmState, Priority, Trigger
from streamproc.core.protocol.messages import (
    Ack,
    BedId,
    Drug,
    Infusion,
    Labs,
    Patient,
    Profile,
    RateUnit,
    Vitals,
    VitalsSource,
)
from streamproc.core.protocol.settings import HypotensionSettings, Settings

T0 = 1_732_400_000.0
BED = BedId("ward7", "bed03")


class Bed:
    """A little driver: numerics once a second, context when asked, events collected."""

    def __init__(self, engine: Engine | None = None, bed: BedId = BED) -> None:
        self.engine = engine if engine is not None else Engine()
        self.bed = bed
        self.t = T0
        self.events: list[AlarmEvent] = []

    def send(self, msg: object, now: float | None = None) -> list[AlarmEvent]:
        out = self.engine.receive(Batch([(self.bed, msg, self.t if now is None else now)]))  # type: ignore[arg-type]
        self.events.extend(out)
        return out

    def ne(self, rate: float = 0.3, running: bool = True) -> None:
        self.send(Infusion(self.t, Drug.NOREPINEPHRINE, rate, RateUnit.MCG_KG_MIN, running))

    def drug(self, drug: Drug, rate: float, unit: RateUnit) -> None:
        self.send(Infusion(self.t, drug, rate, unit))

    def pressure(
        self,
        seconds: int,
        sbp: float,
        dbp: float,
        map_: float | None = None,
        source: VitalsSource = VitalsSource.ART,
        every: int = 1,
    ) -> None:
        for _ in range(0, seconds, every):
            self.t += every
            self.send(Vitals(self.t, source, sbp=sbp, dbp=dbp, map=map_))
            self.events.extend(self.engine.tick(self.t))

    def silence(self, seconds: int) -> None:
        for _ in range(seconds):
            self.t += 1
            self.events.extend(self.engine.tick(self.t))

    def of(self, kind: str) -> list[AlarmEvent]:
        return [e for e in self.events if e.kind == kind]

    def first(self, kind: str, state: AlarmState) -> AlarmEvent:
        return next(e for e in self.of(kind) if e.state is state)


def kinds(events: Iterable[AlarmEvent]) -> set[str]:
    return {e.kind for e in events}


class TestSustainedHypotension:
    def test_60_40_on_ne_is_high_priority_with_vasopressin(self) -> None:
        """MAP 47 on NE: the critical fast path raises high priority at 15 s, add vasopressin."""
        b = Bed()
        b.ne()
        b.pressure(30, 110, 70)
        b.pressure(60, 60, 40)
        ev = b.first("hypotension", AlarmState.ACTIVE)
        assert ev.priority is Priority.HIGH
        assert ev.ts - ev.onset_ts == pytest.approx(15.0)
        assert ev.onset_ts == pytest.approx(T0 + 31)
        p = ev.payload()
        assert p["metric"] == "map"
        assert p["value"] == pytest.approx(46.7, abs=0.1)
        assert p["target"] == 65.0
        assert p["on_norepinephrine"] is True
        assert p["step"] == "add_vasopressin"
        assert "vasopressin 0.03 U/min" in p["recommendation"]
        assert "not an order" in p["recommendation"]

    def test_medium_after_hold(self) -> None:
        """MAP 58 (below 65, above 50) raises medium priority after exactly the 60 s hold."""
        b = Bed()
        b.pressure(10, 110, 70)
        b.pressure(120, 75, 50, map_=58)
        ev = b.first("hypotension", AlarmState.ACTIVE)
        assert ev.priority is Priority.MEDIUM
        assert ev.ts - ev.onset_ts == pytest.approx(60.0)
        assert ev.payload()["step"] == "assess_volume_start_norepinephrine"
        assert len([e for e in b.of("hypotension") if e.trigger is Trigger.RAISE]) == 1

    def test_transient_dip_no_alarm(self) -> None:
        """A 59 s dip is shorter than the hold: nothing raised."""
        b = Bed()
        b.pressure(10, 110, 70)
        b.pressure(59, 75, 50, map_=58)
        b.pressure(120, 110, 70)
        assert b.of("hypotension") == []

    def test_recovery_clears_with_hysteresis(self) -> None:
        """Back at target (65) is not enough; target + 2 for 30 s clears."""
        b = Bed()
        b.pressure(70, 75, 50, map_=58)
        assert b.of("hypotension")
        b.pressure(60, 90, 55, map_=66)  # at target, below target + 2
        assert all(e.state is not AlarmState.CLEARED for e in b.of("hypotension"))
        start = b.t + 1  # the first reading at target + 2
        b.pressure(40, 95, 60, map_=70)
        cleared = b.first("hypotension", AlarmState.CLEARED)
        assert cleared.ts - start == pytest.approx(30.0)

    def test_new_episode_new_id(self) -> None:
        """After clearing, a second episode gets a new id."""
        b = Bed()
        b.pressure(70, 75, 50, map_=58)
        b.pressure(40, 95, 60, map_=75)
        b.pressure(70, 75, 50, map_=58)
        ids = [e.alarm_id for e in b.of("hypotension") if e.trigger is Trigger.RAISE]
        assert len(ids) == 2
        assert ids[0] != ids[1]

    def test_gap_in_data_does_not_count(self) -> None:
        """30 s with no data inside a low run neither counts towards the hold nor breaks it."""
        b = Bed()
        b.pressure(40, 75, 50, map_=58)
        b.silence(30)
        b.pressure(19, 75, 50, map_=58)  # 39 + 18 s of low data
        assert b.of("hypotension") == []
        b.pressure(3, 75, 50, map_=58)
        assert b.first("hypotension", AlarmState.ACTIVE).onset_ts == pytest.approx(T0 + 1)


class TestProfiles:
    @pytest.mark.parametrize(
        ("patient", "sbp", "dbp", "map_", "alarm", "metric", "target"),
        [
            ({"profile": Profile.STANDARD}, 90, 55, 67, False, "map", 65),
            ({"profile": Profile.CHRONIC_HYPERTENSION}, 90, 55, 67, True, "map", 70),
            ({"profile": Profile.ELDERLY}, 85, 50, 62, False, "map", 60),
            ({"age": 81}, 85, 50, 62, False, "map", 60),
            ({"age": 70}, 85, 50, 62, True, "map", 65),
            ({"profile": Profile.TRAUMA}, 85, 45, 58, False, "sbp", 80),
            ({"profile": Profile.TRAUMA}, 75, 45, 55, True, "sbp", 80),
            ({"profile": Profile.TRAUMA_TBI}, 85, 50, 62, True, "map", 65),
            ({"profile": Profile.TRAUMA_TBI, "map_target": 80}, 100, 65, 77, True, "map", 80),
            ({"profile": Profile.STANDARD, "sbp_target": 90}, 85, 60, 68, True, "sbp", 90),
        ],
    )
    def test_target_by_profile(
        self,
        patient: dict[str, object],
        sbp: float,
        dbp: float,
        map_: float,
        alarm: bool,
        metric: str,
        target: float,
    ) -> None:
        """Each profile (and explicit target) decides which metric is judged against what."""
        b = Bed()
        b.send(Patient(T0, **patient))  # type: ignore[arg-type]
        b.pressure(90, sbp, dbp, map_=map_)
        raised = b.of("hypotension")
        assert bool(raised) is alarm
        mon = b.engine.monitor(BED)
        assert mon.target() == (metric, target)
        if alarm:
            assert raised[0].payload()["metric"] == metric
            assert raised[0].payload()["target"] == target


class TestNibp:
    def test_nibp_reading_stands_until_next(self) -> None:
        """One NIBP 70/45 (MAP 53) stands: the alarm comes 60 s later, on ticks alone."""
        b = Bed()
        b.send(Vitals(b.t, VitalsSource.NIBP, sbp=70, dbp=45))
        b.silence(59)
        assert b.of("hypotension") == []
        b.silence(2)
        ev = b.first("hypotension", AlarmState.ACTIVE)
        assert ev.payload()["value"] == pytest.approx(53.3, abs=0.1)
        assert "arterial catheter" in ev.payload()["recommendation"]

    def test_nibp_only_bed_not_stale_between_readings(self) -> None:
        """Five minutes between cuff readings is normal, not stale data."""
        b = Bed()
        for _ in range(3):
            b.send(Vitals(b.t, VitalsSource.NIBP, sbp=120, dbp=70))
            b.silence(300)
        assert b.of("data_stale") == []

    def test_numerics_ignored_while_waveform_fresh(self) -> None:
        """Art numerics do not drive the condition while the waveform is arriving."""
        b = Bed()
        mon = b.engine.monitor(BED)
        mon.last_wave_ts = b.t + 200  # a waveform is (pretend) arriving
        b.pressure(90, 60, 40)
        assert b.of("hypotension") == []


class TestAcknowledge:
    def setup_bed(self) -> tuple[Bed, AlarmEvent]:
        b = Bed()
        b.ne()
        b.pressure(70, 75, 50, map_=58)
        return b, b.first("hypotension", AlarmState.ACTIVE)

    def test_ack_changes_state_and_silences(self) -> None:
        """An ack moves the alarm to acknowledged and stops re-announcement for 300 s."""
        b, ev = self.setup_bed()
        out = b.send(Ack(b.t, ev.alarm_id, "station-3"))
        assert [e.state for e in out] == [AlarmState.ACKNOWLEDGED]
        assert out[0].acknowledged_by == "station-3"
        b.pressure(290, 75, 50, map_=58)
        assert not [e for e in b.of("hypotension") if e.trigger is Trigger.REANNOUNCE]
        b.pressure(20, 75, 50, map_=58)
        expired = [e for e in b.of("hypotension") if e.trigger is Trigger.ACK_EXPIRED]
        assert len(expired) == 1
        assert expired[0].state is AlarmState.ACTIVE

    def test_duplicate_and_unknown_ack(self) -> None:
        """A second ack changes nothing; an ack for no known alarm is counted."""
        b, ev = self.setup_bed()
        b.send(Ack(b.t, ev.alarm_id, "s1"))
        assert b.send(Ack(b.t, ev.alarm_id, "s2")) == []
        assert b.send(Ack(b.t, "nope", "s2")) == []
        assert b.engine.stats.acks_unknown == 1

    def test_worsening_breaks_through(self) -> None:
        """MAP falling 5 mmHg below its value at the ack re-activates the alarm."""
        b, ev = self.setup_bed()
        b.send(Ack(b.t, ev.alarm_id, "s1"))
        b.pressure(5, 70, 48, map_=54)
        assert b.of("hypotension")[-1].state is AlarmState.ACKNOWLEDGED
        b.pressure(5, 68, 45, map_=53)
        last = b.of("hypotension")[-1]
        assert (last.trigger, last.state) == (Trigger.WORSEN, AlarmState.ACTIVE)

    def test_critical_breaks_through_and_escalates(self) -> None:
        """Crossing the critical threshold (MAP < 50 for 15 s) re-activates as high."""
        b, ev = self.setup_bed()
        b.pressure(10, 70, 48, map_=54)
        b.send(Ack(b.t, ev.alarm_id, "s1"))  # acknowledged at MAP 54
        b.pressure(14, 60, 45, map_=49.9)  # 4.1 lower: not yet a worsening
        assert b.of("hypotension")[-1].state is AlarmState.ACKNOWLEDGED
        b.pressure(2, 60, 45, map_=49.9)
        last = b.of("hypotension")[-1]
        assert (last.trigger, last.state, last.priority) == (
            Trigger.WORSEN,
            AlarmState.ACTIVE,
            Priority.HIGH,
        )


class TestReannounce:
    def test_unacknowledged_reannounced_and_escalated(self) -> None:
        """Every 120 s unacknowledged: re-announced; after two, medium becomes high."""
        b = Bed()
        b.pressure(70, 75, 50, map_=58)
        b.pressure(245, 75, 50, map_=58)
        re = [e for e in b.of("hypotension") if e.trigger is Trigger.REANNOUNCE]
        assert [e.announce_count for e in re] == [1, 2]
        assert re[0].priority is Priority.MEDIUM
        assert re[1].priority is Priority.HIGH
        assert re[1].audience == "physician"


class TestContext:
    def test_starting_vasopressin_updates_recommendation(self) -> None:
        """While the alarm is open, starting vasopressin republishes the next step."""
        b = Bed()
        b.ne()
        b.pressure(40, 60, 40)
        b.drug(Drug.VASOPRESSIN, 0.03, RateUnit.U_MIN)
        upd = b.of("hypotension")[-1]
        assert upd.trigger is Trigger.UPDATE
        assert upd.payload()["step"] == "add_epinephrine_or_dobutamine"

    def test_refractory_is_high(self) -> None:
        """Three agents running and still low: high priority, senior review."""
        b = Bed()
        b.ne()
        b.drug(Drug.VASOPRESSIN, 0.03, RateUnit.U_MIN)
        b.drug(Drug.EPINEPHRINE, 0.1, RateUnit.MCG_KG_MIN)
        b.pressure(70, 75, 50, map_=58)
        ev = b.first("hypotension", AlarmState.ACTIVE)
        assert ev.priority is Priority.HIGH
        assert ev.payload()["step"] == "refractory_shock_senior_review"


class TestAdvisories:
    def test_dopamine_raised_and_cleared(self) -> None:
        """Dopamine running raises its advisory (low); stopping it clears it."""
        b = Bed()
        b.drug(Drug.DOPAMINE, 5, RateUnit.MCG_KG_MIN)
        ev = b.first("advisory_dopamine", AlarmState.ACTIVE)
        assert ev.priority is Priority.LOW
        assert "mortality" in ev.payload()["reason"]
        b.send(Infusion(b.t, Drug.DOPAMINE, 5, RateUnit.MCG_KG_MIN, running=False))
        assert b.of("advisory_dopamine")[-1].state is AlarmState.CLEARED

    def test_vasopressin_overdose_and_monotherapy(self) -> None:
        """Vasopressin 0.06 U/min alone: over the 0.04 ceiling, and without NE."""
        b = Bed()
        b.drug(Drug.VASOPRESSIN, 0.06, RateUnit.U_MIN)
        assert kinds(b.events) == {"advisory_vasopressin_dose", "advisory_vasopressin_without_ne"}
        b.ne()
        b.drug(Drug.VASOPRESSIN, 0.03, RateUnit.U_MIN)
        assert all(e.state is AlarmState.CLEARED for e in b.events[-2:])

    def test_phenylephrine(self) -> None:
        """Phenylephrine running raises its advisory."""
        b = Bed()
        b.drug(Drug.PHENYLEPHRINE, 1.0, RateUnit.MCG_KG_MIN)
        assert kinds(b.events) == {"advisory_phenylephrine"}

    def test_premature_ne_in_trauma(self) -> None:
        """Trauma without brain injury, NE running, SBP >= 80 for the hold: advisory."""
        b = Bed()
        b.send(Patient(T0, profile=Profile.TRAUMA))
        b.ne(0.1)
        b.pressure(59, 95, 55)
        assert b.of("advisory_premature_ne_trauma") == []
        b.pressure(2, 95, 55)
        assert b.first("advisory_premature_ne_trauma", AlarmState.ACTIVE)
        b.ne(0.1, running=False)
        assert b.of("advisory_premature_ne_trauma")[-1].state is AlarmState.CLEARED

    def test_perfusion_despite_map_at_target(self) -> None:
        """MAP at target with lactate 3.1: consider dobutamine; not while hypotensive."""
        b = Bed()
        b.pressure(20, 110, 70)
        b.send(Labs(b.t, lactate=3.1, scvo2=64))
        ev = b.first("advisory_perfusion", AlarmState.ACTIVE)
        assert "lactate 3.1" in ev.payload()["reason"]
        assert "dobutamine" in ev.payload()["reason"]
        b.pressure(70, 75, 50, map_=58)
        assert b.of("advisory_perfusion")[-1].state is AlarmState.CLEARED

    def test_excessive_vasoconstriction(self) -> None:
        """Rising NE, falling urine and rising lactate together raise the advisory."""
        b = Bed()
        b.pressure(5, 110, 70)
        b.ne(0.2)
        b.send(Labs(b.t, lactate=2.5, urine_ml_kg_h=0.6))
        b.pressure(5, 110, 70)
        b.ne(0.4)
        assert b.of("advisory_vasoconstriction") == []
        b.send(Labs(b.t, lactate=3.5, urine_ml_kg_h=0.3))
        assert b.first("advisory_vasoconstriction", AlarmState.ACTIVE)


class TestTechnical:
    def test_stale_raised_and_cleared(self) -> None:
        """A bed that was sending and goes silent 30 s: data_stale; data again clears it."""
        b = Bed()
        b.pressure(10, 110, 70)
        b.silence(29)
        assert b.of("data_stale") == []
        b.silence(1)
        ev = b.first("data_stale", AlarmState.ACTIVE)
        assert ev.priority is Priority.LOW
        assert ev.onset_ts == pytest.approx(T0 + 10)
        b.pressure(1, 110, 70)
        assert b.of("data_stale")[-1].state is AlarmState.CLEARED

    def test_restore_does_not_duplicate(self) -> None:
        """An engine restored from the last published events keeps ids, raises nothing new."""
        b = Bed()
        b.ne()
        b.pressure(70, 60, 40)
        last = {e.kind: e for e in b.events}
        fresh = Bed(Engine())
        fresh.t = b.t
        assert fresh.engine.restore(last.values()) == 1
        fresh.ne()
        fresh.pressure(60, 60, 40)
        hyp = fresh.of("hypotension")
        assert not [e for e in hyp if e.trigger is Trigger.RAISE]
        assert {e.alarm_id for e in hyp} <= {last["hypotension"].alarm_id}


class TestStatus:
    def test_status_and_trend(self) -> None:
        """The bed's status carries the latest pressures, target, drugs and a 30 s trend."""
        b = Bed()
        b.ne(0.2)
        b.pressure(95, 110, 70, map_=83)
        b.pressure(65, 60, 40)
        st = b.engine.monitor(BED).status()
        assert st.map == pytest.approx(46.7, abs=0.1)
        assert (st.metric, st.target, st.profile) == ("map", 65.0, "standard")
        assert st.infusions == (("norepinephrine", 0.2, "mcg/kg/min"),)
        assert st.open_alarms == ("hypotension",)
        assert st.trend[:4] == (83.0, 83.0, 83.0, 83.0)
        assert st.trend[-1] == pytest.approx(46.7, abs=0.1)
        assert len(st.trend) == 6  # one point per 30 s over 160 s
        assert st.ts == b.t


class TestEngine:
    def test_bed_cap_evicts_idle_bed(self) -> None:
        """Past max_beds, the bed idle longest (without alarms) is evicted and counted."""
        eng = Engine(max_beds=3)
        for i in range(5):
            eng.receive(
                Batch([(BedId("u", f"b{i}"), Vitals(T0 + i, VitalsSource.ART, map=80), T0 + i)])
            )
        assert len(eng) == 3
        assert eng.stats.beds_evicted == 2
        assert {m.bed.bed for m in eng.beds()} == {"b2", "b3", "b4"}
        assert eng.stats.alarms_evicted == 0

    def test_evicting_a_bed_with_open_alarms_clears_them(self) -> None:
        """When every bed has an open alarm, the bed silent longest is evicted and its open
        alarms are closed with a legal ``cleared`` transition (same id, clear_reason
        bed_evicted, a note that it is not resolved), returned before the new bed's output."""
        eng = Engine(max_beds=2)
        a = Bed(eng, BedId("u", "a"))
        b = Bed(eng, BedId("u", "b"))
        a.ne()
        a.pressure(30, 60, 40)  # critical: high-priority hypotension after 15 s
        b.t = a.t
        b.pressure(20, 60, 40)  # a is silent 20 s: not yet stale
        b.send(Ack(b.t, b.first("hypotension", AlarmState.ACTIVE).alarm_id, "station-3"))
        opened = a.first("hypotension", AlarmState.ACTIVE)
        c = Bed(eng, BedId("u", "c"))
        c.t = b.t + 1
        out = c.send(Vitals(c.t, VitalsSource.ART, map=80))
        assert [(e.bed.bed, e.kind, e.state, e.trigger) for e in out] == [
            ("a", "hypotension", AlarmState.CLEARED, Trigger.CLEAR)
        ]
        ev = out[0]
        assert ev.alarm_id == opened.alarm_id
        assert ev.ts == c.t  # the processor's time of the eviction
        p = ev.payload()
        assert p["clear_reason"] == "bed_evicted"
        assert "NOT resolved" in p["clear_note"]
        assert (p["state"], p["trigger"]) == ("cleared", "cleared")
        assert {m.bed.bed for m in eng.beds()} == {"b", "c"}
        assert (eng.stats.beds_evicted, eng.stats.alarms_evicted) == (1, 1)
        # a bed without open alarms goes first, silently
        d = Bed(eng, BedId("u", "d"))
        d.t = c.t + 1
        assert d.send(Vitals(d.t, VitalsSource.ART, map=80)) == []
        assert {m.bed.bed for m in eng.beds()} == {"b", "d"}
        # d falls too; the next eviction takes b (acknowledged alarm): closed the same way
        d.pressure(20, 60, 40)
        e = Bed(eng, BedId("u", "e"))
        e.t = d.t + 1
        out = e.send(Vitals(e.t, VitalsSource.ART, map=80))
        assert [(x.bed.bed, x.state) for x in out] == [("b", AlarmState.CLEARED)]
        assert out[0].payload()["acknowledged_by"] == "station-3"
        assert (eng.stats.beds_evicted, eng.stats.alarms_evicted) == (3, 2)
        # nothing is returned twice
        assert eng.tick(e.t + 1) == []

    def test_evicted_bed_coming_back_gets_a_new_alarm_id(self) -> None:
        """An evicted bed that sends the same message again opens a new episode with a
        new id, never the id of the episode its eviction closed (found by the fuzzer)."""
        eng = Engine(max_beds=1)
        a, b = BedId("u", "a"), BedId("u", "b")
        vaso = Infusion(T0, Drug.VASOPRESSIN, 0.03, RateUnit.U_MIN)
        (raised,) = eng.receive(Batch([(a, vaso, T0)]))
        assert raised.kind == "advisory_vasopressin_without_ne"
        (closed,) = eng.receive(Batch([(b, Vitals(T0 + 1, VitalsSource.ART, map=80), T0 + 1)]))
        assert (closed.alarm_id, closed.state) == (raised.alarm_id, AlarmState.CLEARED)
        out = eng.receive(Batch([(a, vaso, T0 + 2)]))  # the pump re-sends; b is evicted silently
        again = [e for e in out if e.bed == a]
        assert [e.state for e in again] == [AlarmState.ACTIVE]
        assert again[0].alarm_id != raised.alarm_id

    def test_restart_after_an_eviction_never_reuses_its_id(self) -> None:
        """After a restart, a re-delivered infusion (same data time) raises its advisory
        again with a new id, not that of the episode an eviction closed before the
        restart (the cleared event is restored too; found by the fuzzer)."""
        eng = Engine(max_beds=1)
        a, b = BedId("u", "a"), BedId("u", "b")
        vaso = Infusion(T0, Drug.VASOPRESSIN, 0.03, RateUnit.U_MIN)
        (raised,) = eng.receive(Batch([(a, vaso, T0)]))
        (closed,) = eng.receive(Batch([(b, Vitals(T0 + 1, VitalsSource.ART, map=80), T0 + 1)]))
        assert closed.state is AlarmState.CLEARED
        fresh = Engine(max_beds=1)
        assert fresh.restore([closed], T0 + 2) == 0  # nothing open to adopt
        out = fresh.receive(
            Batch([(a, vaso, T0 + 2)])
        )  # the broker re-delivers the retained infusion
        assert [e.state for e in out] == [AlarmState.ACTIVE]
        assert out[0].alarm_id != raised.alarm_id
        # a cleared id of a bed already present (restored with another alarm) too
        both = Engine()
        both.receive(Batch([(a, Vitals(T0, VitalsSource.ART, map=80), T0)]))
        assert both.restore([closed], T0 + 2) == 0
        (again,) = both.receive(Batch([(a, vaso, T0 + 2)]))
        assert again.alarm_id != raised.alarm_id

    def test_eviction_while_restoring_is_returned_by_the_next_tick(self) -> None:
        """More open alarms restored than max_beds: the extra beds' alarms are closed and
        come out of the next tick."""
        src = Engine()
        events = []
        for name in ("a", "b", "c"):
            bed = Bed(src, BedId("u", name))
            bed.pressure(30, 60, 40)
            events.append(bed.first("hypotension", AlarmState.ACTIVE))
        eng = Engine(max_beds=2)
        assert eng.restore(events, T0 + 100) == 3
        out = eng.tick(T0 + 101)
        assert [(e.bed.bed, e.state, e.payload()["clear_reason"]) for e in out] == [
            ("a", AlarmState.CLEARED, "bed_evicted")
        ]
        assert out[0].ts == T0 + 100

    def test_settings_change_hold(self) -> None:
        """The hold time is a setting: 30 s raises twice as fast."""
        eng = Engine(Settings(hypotension=HypotensionSettings(hold_s=30)))
        b = Bed(eng)
        b.pressure(40, 75, 50, map_=58)
        ev = b.first("hypotension", AlarmState.ACTIVE)
        assert ev.ts - ev.onset_ts == pytest.approx(30.0)
