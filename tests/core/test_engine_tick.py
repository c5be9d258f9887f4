"""Engine.tick_slices: the transitions of one tick, in slices an I/O loop can interleave."""

from __future__ import annotations

import numpy as np
import pytest

from simulators.waveform import synthesize_abp
from streamproc.core.engine import Batch, Engine
from streamproc.core.protocol.alarms import AlarmEvent, AlarmState, Priority
from streamproc.core.protocol.messages import (
    AbpChunk,
    BedId,
    Drug,
    Infusion,
    RateUnit,
    Vitals,
    VitalsSource,
)

T0 = 1_700_000_000.0


def _ward(n_beds: int) -> Engine:
    """Beds that stream 20 s of 60/40 waveform on NE, then go silent."""
    eng = Engine()
    x = synthesize_abp(duration_s=20, sbp=60.0, dbp=40.0, hr=90.0, seed=1)
    for i in range(n_beds):
        bed = BedId("w1", f"b{i:03d}")
        eng.receive(Batch([(bed, Infusion(T0, Drug.NOREPINEPHRINE, 0.3, RateUnit.MCG_KG_MIN), T0)]))
        for k in range(20):
            chunk = AbpChunk(T0 + k, 125.0, np.ascontiguousarray(x[k * 125 : (k + 1) * 125]))
            eng.receive(Batch([(bed, chunk, T0 + k + 1)]))
    return eng


class TestTickSlices:
    """Slicing a tick changes when the caller gets the events, not which or in what order."""

    @pytest.mark.parametrize("size", [1, 7, 256])
    def test_same_events_as_tick(self, size: int) -> None:
        """Staleness after silence: the sliced tick yields exactly tick()'s transitions."""
        whole, sliced = _ward(23), _ward(23)
        now = T0 + 20 + 60.0  # long past the stale limit: every bed goes data_stale
        expected = [ev.payload() for ev in whole.tick(now)]
        slices = list(sliced.tick_slices(now, size))
        assert len(slices) == -(-23 // size)
        got = [ev.payload() for part in slices for ev in part]
        assert expected  # the comparison is about something
        assert got == expected

    @pytest.mark.parametrize("size", [1, 7, 256])
    def test_counts_open_alarms(self, size: int) -> None:
        """After a whole pass, open_alarms holds the open alarms per priority, as
        counted bed by bed, by tick() and by every slicing alike."""
        whole, sliced = _ward(23), _ward(23)
        now = T0 + 20 + 60.0
        whole.tick(now)
        assert sliced.open_alarms == {}  # no pass yet
        for _ in sliced.tick_slices(now, size):
            pass
        recount: dict[Priority, int] = {}
        for mon in sliced.beds():
            for alarm in mon.alarms.values():
                if alarm.open:
                    recount[alarm.priority] = recount.get(alarm.priority, 0) + 1
        assert sum(recount.values()) >= 23  # hypotension and data_stale on every bed
        assert sliced.open_alarms == recount == whole.open_alarms

    def test_bad_size(self) -> None:
        """A slice of no beds is refused with the value named."""
        with pytest.raises(ValueError, match="at least 1, got 0"):
            list(Engine().tick_slices(T0, 0))


class TestTickSlicesEviction:
    """A bed evicted while the slices of a tick are taken is not ticked."""

    def test_never_raises_for_a_bed_evicted_between_slices(self) -> None:
        """Four beds silent past stale_s, the last one silent longest; after the first
        slice a new bed evicts it: no later slice raises anything for it (before the fix
        its tick raised ``data_stale`` for a bed nobody monitors, retained for ever)."""
        eng = _ward(4)
        eng.max_beds = 4
        for i in range(3):  # b003 is now the bed silent longest
            bed = BedId("w1", f"b{i:03d}")
            eng.receive(Batch([(bed, Vitals(T0 + 40, VitalsSource.ART, map=50.0), T0 + 40)]))
        now = T0 + 80.0  # every bed past stale_s (30 s)
        out: list[AlarmEvent] = []
        slices = eng.tick_slices(now, 1)
        out.extend(next(slices))  # b000 is ticked: goes data_stale
        newcomer = BedId("w1", "new")
        before = {m.bed for m in eng.beds()}
        out.extend(eng.receive(Batch([(newcomer, Vitals(now, VitalsSource.ART, map=80.0), now)])))
        (gone,) = before - {m.bed for m in eng.beds()}
        assert gone == BedId("w1", "b003")
        for part in slices:
            out.extend(part)
        # its open alarm (hypotension) is closed by the eviction, and that is all
        assert [(e.kind, e.state, e.details.get("clear_reason")) for e in out if e.bed == gone] == [
            ("hypotension", AlarmState.CLEARED, "bed_evicted")
        ]
        # the beds still monitored were ticked as usual
        stale = {e.bed for e in out if e.kind == "data_stale" and e.state is AlarmState.ACTIVE}
        assert stale == {BedId("w1", f"b{i:03d}") for i in range(3)}
