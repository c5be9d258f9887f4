"""Data-time integrity per bed (``streamproc.core.signal.ordering``): repeats and old data change nothing.

The headline waveform (60/40 mmHg on norepinephrine, 125 Hz, cut into
one-second chunks) is sent as a gateway may send it: twice (QoS 1), out of
order (two gateway threads), with its last minutes again (a gateway restart),
and the engine must decide exactly what it decides on the clean stream.
"""

from __future__ import annotations

import random
from functools import cache
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from simulators.scenario import load_scenario, scenario_dir, waveform
from streamproc.core.engine import Batch, Engine
from streamproc.core.monitor import Clock
from streamproc.core.protocol.alarms import AlarmEvent
from streamproc.core.protocol.messages import (
    AbpChunk,
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
from streamproc.core.protocol.settings import InvalidSettingError, MonitorSettings, Settings
from streamproc.core.signal.ordering import DropReason

BED = BedId("ward7", "bed03")
OTHER = BedId("ward7", "bed04")


@cache
def headline() -> tuple[float, float, np.ndarray]:
    sc = load_scenario(scenario_dir() / "ne_60_40.toml")
    return sc.t0, sc.fs, waveform(sc)


@cache
def clean_chunks() -> tuple[AbpChunk, ...]:
    """The headline waveform in one-second chunks, in order."""
    t0, fs, x = headline()
    n = round(fs)
    return tuple(
        AbpChunk(t0 + a / fs, fs, np.ascontiguousarray(x[a : a + n])) for a in range(0, x.size, n)
    )


def ne(ts: float) -> Infusion:
    return Infusion(ts, Drug.NOREPINEPHRINE, 0.3, RateUnit.MCG_KG_MIN)


def engine(**monitor: Any) -> Engine:
    return Engine(Settings(monitor=MonitorSettings(**monitor)), clock=Clock.DATA)


def run(
    chunks: list[AbpChunk] | tuple[AbpChunk, ...], eng: Engine | None = None
) -> tuple[list[dict[str, Any]], Engine]:
    """The engine over NE then ``chunks``, each arriving at its data time; payloads out."""
    eng = eng if eng is not None else engine()
    first = clean_chunks()[0].t0
    out = eng.receive(Batch([(BED, ne(first), first)]))
    for c in chunks:
        out.extend(eng.receive(Batch([(BED, c, c.ts)])))
    return [ev.payload() for ev in out], eng


def run_in_batches(
    chunks: list[AbpChunk], cuts: set[int], eng: Engine | None = None
) -> tuple[list[dict[str, Any]], Engine]:
    """:func:`run`, the chunks handed in as batches' chunk rows, cut after ``cuts``."""
    eng = eng if eng is not None else engine()
    first = clean_chunks()[0].t0
    events: list[AlarmEvent] = eng.receive(Batch([(BED, ne(first), first)]))
    start = 0
    for i in range(len(chunks)):
        if i in cuts or i == len(chunks) - 1:
            part = chunks[start : i + 1]
            batch = Batch(samples=np.concatenate([c.samples for c in part]))
            ends = np.cumsum([c.samples.size for c in part]).tolist()
            for c, end in zip(part, ends, strict=True):
                batch.add_chunk(BED, c.t0, c.fs, end, c.ts)
            events.extend(eng.receive(batch))
            start = i + 1
    return [ev.payload() for ev in events], eng


@cache
def reference() -> tuple[list[dict[str, Any]], int, int]:
    """The clean stream's alarms, beats and valid beats."""
    out, eng = run(clean_chunks())
    assert [p["kind"] for p in out] == ["hypotension", "hypotension"]  # raised, re-announced
    return out, eng.stats.beats, eng.stats.beats_valid


def with_seq(chunks: list[AbpChunk] | tuple[AbpChunk, ...]) -> list[AbpChunk]:
    return [AbpChunk(c.t0, c.fs, c.samples, seq) for seq, c in enumerate(chunks)]


class TestDuplicateChunks:
    """A chunk that repeats one already taken is dropped and counted as ``duplicate``."""

    def test_every_chunk_twice_same_as_once(self) -> None:
        """Each chunk sent twice (QoS 1): the alarms, beats and hold of the clean stream."""
        doubled = [c for c in clean_chunks() for _ in range(2)]
        out, eng = run(doubled)
        ref, beats, valid = reference()
        assert out == ref
        assert (eng.stats.beats, eng.stats.beats_valid) == (beats, valid)
        assert eng.stats.dropped == {"duplicate": len(clean_chunks())}

    def test_replay_of_last_minutes_changes_nothing(self) -> None:
        """The stream, then its last 200 chunks again (a gateway restart): nothing more."""
        chunks = clean_chunks()
        out, eng = run([*chunks, *chunks[-200:]])
        assert out == reference()[0]
        assert eng.stats.dropped == {"duplicate": 200}

    def test_recut_repeat_is_a_duplicate(self) -> None:
        """Data taken, sent again cut differently (one 3-s chunk): still a duplicate."""
        chunks = clean_chunks()
        _, eng = run(chunks[:10])
        a, b, c = chunks[4:7]
        recut = AbpChunk(a.t0, a.fs, np.concatenate([a.samples, b.samples, c.samples]))
        assert eng.receive(Batch([(BED, recut, chunks[9].ts)])) == []
        assert eng.stats.dropped == {"duplicate": 1}

    def test_overlap_on_the_grid_is_trimmed_to_its_new_samples(self) -> None:
        """A chunk that re-sends the end of what was taken and continues: its new part is taken."""
        chunks = clean_chunks()
        t0, fs, x = headline()
        overlapping = [
            AbpChunk(t0 + a / fs, fs, np.ascontiguousarray(x[a : a + 250]))
            for a in range(0, x.size, 125)
        ]  # two seconds each, one second of it already taken
        out, eng = run(overlapping)
        ref, beats, valid = reference()
        assert out == ref
        assert (eng.stats.beats, eng.stats.beats_valid) == (beats, valid)
        assert eng.stats.dropped == {"duplicate": 1}  # the last: all of it taken before
        assert len(overlapping) == len(chunks)

    def test_same_seq_restamped_is_a_duplicate(self) -> None:
        """A re-send with the ``seq`` of a chunk taken and a re-stamped ``t0`` is dropped."""
        chunks = with_seq(clean_chunks()[:10])
        _, eng = run(chunks)
        last = chunks[-1]
        mon = eng.monitor(BED)
        before = mon.last_wave_ts
        restamped = AbpChunk(last.t0 + 0.2, last.fs, last.samples, last.seq)
        assert eng.receive(Batch([(BED, restamped, restamped.ts)])) == []
        assert eng.stats.dropped == {"duplicate": 1}
        assert mon.last_wave_ts == before

    def test_seq_again_far_ahead_is_new_data(self) -> None:
        """A gateway that restarts its ``seq`` counter: data past the window is taken."""
        chunks = clean_chunks()
        seqs = with_seq(chunks[:10])
        _, eng = run(seqs)
        later = chunks[40]
        eng.receive(Batch([(BED, AbpChunk(later.t0, later.fs, later.samples, 0), later.ts)]))
        assert eng.stats.dropped == {}
        assert eng.monitor(BED).last_wave_ts == later.ts

    def test_duplicate_of_a_held_chunk(self) -> None:
        """A chunk held after a gap, sent again while held: dropped, taken once."""
        chunks = clean_chunks()
        _, eng = run(chunks[:10])
        eng.receive(Batch([(BED, chunks[11], chunks[11].ts)]))
        eng.receive(Batch([(BED, chunks[11], chunks[11].ts)]))
        assert eng.stats.dropped == {"duplicate": 1}
        eng.receive(Batch([(BED, chunks[10], chunks[11].ts)]))
        assert eng.monitor(BED).last_wave_ts == chunks[11].ts


class TestReorderedChunks:
    """Chunks out of order within ``monitor.reorder_window_s`` are taken in order."""

    def test_pairs_swapped_same_as_clean(self) -> None:
        """Neighbours swapped in pairs (two gateway threads; the first chunk first)."""
        chunks = list(clean_chunks())
        swapped = [chunks[0]]
        for i in range(1, len(chunks) - 1, 2):
            swapped += [chunks[i + 1], chunks[i]]
        swapped += chunks[len(swapped) :]
        assert sorted(c.t0 for c in swapped) == [c.t0 for c in chunks]
        out, eng = run(swapped)
        ref, beats, valid = reference()
        assert out == ref
        assert (eng.stats.beats, eng.stats.beats_valid) == (beats, valid)
        assert eng.stats.dropped == {}

    @pytest.mark.parametrize("seqs", [False, True])
    def test_first_pair_swapped(self, seqs: bool) -> None:
        """Every pair swapped, the first too (the stream's first chunk overtaken by its
        successor): taken in order, nothing dropped, the clean stream's alarms and beats."""
        chunks = list(clean_chunks())
        if seqs:
            chunks = with_seq(chunks)
        swapped = []
        for i in range(0, len(chunks) - 1, 2):
            swapped += [chunks[i + 1], chunks[i]]
        swapped += chunks[len(swapped) :]
        out, eng = run(swapped)
        ref, beats, valid = reference()
        assert out == ref
        assert (eng.stats.beats, eng.stats.beats_valid) == (beats, valid)
        assert eng.stats.dropped == {}

    def test_first_pair_swapped_in_batches(self) -> None:
        """The same through batches of chunk rows, whatever the batch cuts."""
        chunks = list(clean_chunks())
        swapped = [chunks[1], chunks[0], *chunks[2:]]
        for cuts in (set(), {1}, {2}, {1, 2, 3}):
            out, eng = run_in_batches(swapped, cuts)
            ref, beats, valid = reference()
            assert out == ref
            assert (eng.stats.beats, eng.stats.beats_valid) == (beats, valid)
            assert eng.stats.dropped == {}

    def test_overtaken_after_learning_is_late(self) -> None:
        """Once the stream's segment has learnt (beats may have been decided), a chunk
        from before its start is late, as any other."""
        chunks = clean_chunks()
        _, eng = run(chunks[1:8])
        eng.receive(Batch([(BED, chunks[0], chunks[8].ts)]))
        assert eng.stats.dropped == {"late": 1}

    def test_held_while_a_gap_is_open(self) -> None:
        """After a gap the bed holds its chunks (the batch kernel leaves it to ``receive``)."""
        chunks = clean_chunks()
        _, eng = run(chunks[:10])
        mon = eng.monitor(BED)
        assert mon.chunk_state() is not None
        eng.receive(Batch([(BED, chunks[11], chunks[11].ts)]))
        eng.receive(Batch([(BED, chunks[12], chunks[12].ts)]))
        assert mon.chunk_state() is None
        assert mon.last_wave_ts == chunks[9].ts  # nothing past the gap taken yet
        eng.receive(Batch([(BED, chunks[10], chunks[12].ts)]))
        assert mon.last_wave_ts == chunks[12].ts  # the gap filled: all three in order
        assert mon.chunk_state() is not None

    def test_gap_accepted_once_held_data_passes_the_window(self) -> None:
        """A chunk missing for good: the held data is taken once it reaches past the window."""
        chunks = clean_chunks()
        _, eng = run(chunks[:10])
        mon = eng.monitor(BED)
        for c in chunks[11:15]:  # 5 s past the gap's start: within the window
            eng.receive(Batch([(BED, c, c.ts)]))
        assert mon.last_wave_ts == chunks[9].ts
        eng.receive(Batch([(BED, chunks[15], chunks[15].ts)]))  # 6 s: past it
        assert mon.last_wave_ts == chunks[15].ts
        assert not mon.holding

    def test_long_gap_taken_at_once(self) -> None:
        """Data after a gap longer than the window (a disconnection) is taken at once."""
        chunks = clean_chunks()
        _, eng = run(chunks[:10])
        eng.receive(Batch([(BED, chunks[30], chunks[30].ts)]))
        assert eng.monitor(BED).last_wave_ts == chunks[30].ts

    def test_window_zero_never_holds(self) -> None:
        """``reorder_window_s = 0``: every gap is accepted at once."""
        chunks = clean_chunks()
        _, eng = run(chunks[:10], engine(reorder_window_s=0.0))
        eng.receive(Batch([(BED, chunks[11], chunks[11].ts)]))
        assert eng.monitor(BED).last_wave_ts == chunks[11].ts

    def test_tick_releases_held_chunks_after_the_window(self) -> None:
        """A bed that goes silent while holding: a tick ``reorder_window_s`` later takes them."""
        chunks = clean_chunks()
        _, eng = run(chunks[:10])
        mon = eng.monitor(BED)
        arrived = chunks[11].ts
        eng.receive(Batch([(BED, chunks[11], arrived)]))
        eng.tick(arrived + 4.9)
        assert mon.last_wave_ts == chunks[9].ts
        eng.tick(arrived + 5.0)
        assert mon.last_wave_ts == chunks[11].ts
        assert mon.last_data_now == arrived + 5.0  # taken at the tick's time


class TestLateChunks:
    """Data older than what the bed took, and no repeat of it, is dropped as ``late``."""

    def test_missing_chunk_after_the_window_is_late(self) -> None:
        """The missing chunk arriving after its gap was accepted: dropped, counted ``late``."""
        chunks = clean_chunks()
        _, eng = run(chunks[:10])
        for c in chunks[11:20]:
            eng.receive(Batch([(BED, c, c.ts)]))
        mon = eng.monitor(BED)
        assert mon.last_wave_ts == chunks[19].ts
        assert eng.receive(Batch([(BED, chunks[10], chunks[19].ts)])) == []
        assert eng.stats.dropped == {"late": 1}
        assert mon.last_wave_ts == chunks[19].ts
        assert mon.chunk_state() is not None  # the bed's next chunk still takes the kernel

    def test_late_data_clears_nothing(self) -> None:
        """Old normal pressure after a raised alarm neither clears nor re-raises it."""
        chunks = clean_chunks()
        out, eng = run(chunks)
        assert out[0]["state"] == "active"
        t0, fs, x = headline()
        normal = AbpChunk(t0 - 100.0, fs, x[:7500] + 40.0)  # a minute at about 100/80
        assert eng.receive(Batch([(BED, normal, chunks[-1].ts)])) == []
        assert eng.stats.dropped == {"late": 1}

    def test_late_data_does_not_end_data_stale(self) -> None:
        """A silent bed whose gateway sends only old data stays ``data_stale``."""
        chunks = clean_chunks()
        eng = Engine()  # live: the processor's clock
        for c in chunks[:20]:
            eng.receive(Batch([(BED, c, c.ts)]))
        now = chunks[19].ts + 31.0
        assert [e.kind for e in eng.tick(now)] == ["data_stale"]
        assert eng.receive(Batch([(BED, chunks[5], now + 1.0)])) == []
        assert "data_stale" in eng.monitor(BED).alarms


class TestVitalsOrder:
    """``vitals`` by ``ts``: a repeat is a ``duplicate``, an older reading ``late``."""

    def reading(
        self, ts: float, map_: float = 50.0, source: VitalsSource = VitalsSource.ART
    ) -> Vitals:
        return Vitals(ts, source, sbp=map_ + 20.0, dbp=map_ - 10.0, map=map_)

    def test_duplicate_reading_dropped(self) -> None:
        """The same reading twice is taken once."""
        eng = engine()
        t = 1_732_400_000.0
        eng.receive(Batch([(BED, self.reading(t), t)]))
        eng.receive(Batch([(BED, self.reading(t), t)]))
        assert eng.stats.dropped == {"duplicate": 1}

    def test_older_reading_is_late(self) -> None:
        """A reading dated before the newest is dropped and does not move the hold timers."""
        eng = engine()
        t = 1_732_400_000.0
        for k in range(5):
            eng.receive(Batch([(BED, self.reading(t + k), t + k)]))
        mon = eng.monitor(BED)
        below = (mon.below.start, mon.below.accum)
        eng.receive(Batch([(BED, self.reading(t + 2.5, 90.0), t + 5)]))
        assert eng.stats.dropped == {"late": 1}
        assert (mon.below.start, mon.below.accum) == below
        assert mon.value == 50.0

    def test_older_repeat_is_a_duplicate(self) -> None:
        """A reading taken a few readings ago, sent again: a duplicate, not late."""
        eng = engine()
        t = 1_732_400_000.0
        for k in range(5):
            eng.receive(Batch([(BED, self.reading(t + k), t + k)]))
        eng.receive(Batch([(BED, self.reading(t + 2), t + 5)]))
        assert eng.stats.dropped == {"duplicate": 1}

    def test_same_time_other_source_taken(self) -> None:
        """An NIBP reading at the time of the last art-line numeric is a reading of its own."""
        eng = engine()
        t = 1_732_400_000.0
        eng.receive(Batch([(BED, self.reading(t), t)]))
        eng.receive(Batch([(BED, self.reading(t, 55.0, VitalsSource.NIBP), t)]))
        assert eng.stats.dropped == {}
        assert eng.monitor(BED).value == 55.0

    def test_replayed_numerics_change_nothing(self) -> None:
        """Two minutes of numerics below target, then the same again: one alarm, no clear."""
        eng = engine()
        t = 1_732_400_000.0
        msgs = [self.reading(t + k) for k in range(120)]
        out = [e for m in msgs for e in eng.receive(Batch([(BED, m, m.ts)]))]
        assert [(e.kind, e.state.value) for e in out] == [("hypotension", "active")]
        again = [e for m in msgs for e in eng.receive(Batch([(BED, m, t + 130)]))]
        assert again == []
        assert eng.stats.dropped == {"duplicate": 8, "late": 112}


class TestContextOrder:
    """``infusion`` (per drug), ``patient``, ``labs`` again or older change nothing."""

    def test_infusion_resent_same_is_duplicate(self) -> None:
        """A pump's retained state re-delivered: no event, counted."""
        out, eng = run(clean_chunks())
        first = clean_chunks()[0].t0
        assert eng.receive(Batch([(BED, ne(first), clean_chunks()[-1].ts)])) == []
        assert eng.stats.dropped == {"duplicate": 1}
        assert out == reference()[0]

    def test_older_infusion_is_late(self) -> None:
        """An infusion state dated before the drug's newest is not taken (it would undo it)."""
        eng = engine()
        t = 1_732_400_000.0
        eng.receive(
            Batch([(BED, Infusion(t + 10, Drug.NOREPINEPHRINE, 0.3, RateUnit.MCG_KG_MIN), t + 10)])
        )
        eng.receive(
            Batch([(BED, Infusion(t, Drug.NOREPINEPHRINE, 0.1, RateUnit.MCG_KG_MIN), t + 11)])
        )
        assert eng.stats.dropped == {"late": 1}
        assert eng.monitor(BED).infusions[Drug.NOREPINEPHRINE].rate == 0.3

    def test_another_drug_is_its_own_stream(self) -> None:
        """An older state of another drug is taken (each drug's pump has its own clock)."""
        eng = engine()
        t = 1_732_400_000.0
        eng.receive(
            Batch([(BED, Infusion(t + 10, Drug.NOREPINEPHRINE, 0.3, RateUnit.MCG_KG_MIN), t + 10)])
        )
        eng.receive(Batch([(BED, Infusion(t, Drug.VASOPRESSIN, 0.03, RateUnit.U_MIN), t + 11)]))
        assert eng.stats.dropped == {}
        assert Drug.VASOPRESSIN in eng.monitor(BED).infusions

    def test_same_time_new_content_taken(self) -> None:
        """Two updates of a drug within the same second: the second is taken."""
        eng = engine()
        t = 1_732_400_000.0
        eng.receive(Batch([(BED, Infusion(t, Drug.NOREPINEPHRINE, 0.3, RateUnit.MCG_KG_MIN), t)]))
        eng.receive(Batch([(BED, Infusion(t, Drug.NOREPINEPHRINE, 0.5, RateUnit.MCG_KG_MIN), t)]))
        assert eng.stats.dropped == {}
        assert eng.monitor(BED).infusions[Drug.NOREPINEPHRINE].rate == 0.5

    def test_patient_and_labs(self) -> None:
        """Patient and labs: the same again is a duplicate, an older one late."""
        eng = engine()
        t = 1_732_400_000.0
        p = Patient(t + 5, profile=Profile.ELDERLY)
        eng.receive(Batch([(BED, p, t + 5)]))
        eng.receive(Batch([(BED, p, t + 6)]))
        eng.receive(Batch([(BED, Patient(t, profile=Profile.TRAUMA), t + 7)]))
        assert eng.monitor(BED).profile is Profile.ELDERLY
        labs = Labs(t + 5, lactate=4.0)
        eng.receive(Batch([(BED, labs, t + 8)]))
        eng.receive(Batch([(BED, labs, t + 9)]))
        eng.receive(Batch([(BED, Labs(t, lactate=1.0), t + 9)]))
        assert eng.monitor(BED).labs["lactate"] == (t + 5, 4.0)
        assert eng.stats.dropped == {"duplicate": 2, "late": 2}


class TestDropNotices:
    """The first drop per bed and reason is left for the shell's log; the rest only counted."""

    def test_first_per_bed_and_reason(self) -> None:
        """Many duplicates and a late chunk on two beds: one notice per bed and reason."""
        chunks = clean_chunks()
        eng = engine()
        for bed in (BED, OTHER):
            for c in chunks[:20]:
                eng.receive(Batch([(bed, c, c.ts)]))
            for c in chunks[5:15]:
                eng.receive(Batch([(bed, c, c.ts)]))
        notices = eng.take_drop_notices()
        assert [(n.bed, n.kind, n.reason) for n in notices] == [
            (BED, "abp", DropReason.DUPLICATE),
            (OTHER, "abp", DropReason.DUPLICATE),
        ]
        assert notices[0].ts == chunks[5].t0
        assert notices[0].newest == chunks[19].ts
        assert eng.take_drop_notices() == []
        assert eng.stats.dropped == {"duplicate": 20}
        eng.receive(
            Batch([(BED, AbpChunk(chunks[0].t0 - 10, 125.0, chunks[0].samples), chunks[19].ts)])
        )
        assert [(n.bed, n.reason) for n in eng.take_drop_notices()] == [(BED, DropReason.LATE)]


class TestReorderSetting:
    """``monitor.reorder_window_s``: zero allowed, negative refused."""

    def test_negative_refused(self) -> None:
        """A negative window is the operator's mistake, named by its key."""
        with pytest.raises(InvalidSettingError, match=r"monitor\.reorder_window_s"):
            MonitorSettings(reorder_window_s=-1.0)

    def test_zero_and_default(self) -> None:
        """Zero disables reordering; the default is a few seconds of data."""
        assert MonitorSettings(reorder_window_s=0.0).reorder_window_s == 0.0
        assert 2.0 <= MonitorSettings().reorder_window_s <= 10.0


def perturbed(rng: random.Random, dup_p: float, max_shift: float) -> list[AbpChunk]:
    """The clean chunks, each moved later by up to ``max_shift`` chunks and some sent
    again at any later moment (the first chunk stays first: it starts the bed's clock)."""
    chunks = clean_chunks()
    items: list[tuple[float, AbpChunk]] = [(-1.0, chunks[0])]
    for i, c in enumerate(chunks[1:], 1):
        items.append((i + rng.uniform(0.0, max_shift), c))
        if rng.random() < dup_p:
            items.append((i + rng.uniform(0.0, 60.0), c))
    items.sort(key=lambda item: item[0])
    return [c for _, c in items]


class TestAnyInterleavingSameAlarms:
    """Hypothesis: duplicates and reorderings within the window give the clean stream's alarms."""

    @settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(
        st.integers(0, 2**32 - 1),
        st.floats(0.0, 0.6),
        st.floats(0.0, 3.5),
        st.booleans(),
    )
    def test_receive(self, seed: int, dup_p: float, max_shift: float, seqs: bool) -> None:
        """One at a time (``receive``), with or without ``seq``: the clean alarms and beats."""
        chunks = perturbed(random.Random(seed), dup_p, max_shift)
        if seqs:
            index = {c.t0: i for i, c in enumerate(clean_chunks())}
            chunks = [AbpChunk(c.t0, c.fs, c.samples, index[c.t0]) for c in chunks]
        out, eng = run(chunks)
        ref, beats, valid = reference()
        assert out == ref
        assert (eng.stats.beats, eng.stats.beats_valid) == (beats, valid)
        assert sum(eng.stats.dropped.values()) == len(chunks) - len(clean_chunks())

    @settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(
        st.integers(0, 2**32 - 1),
        st.floats(0.0, 0.6),
        st.floats(0.0, 3.5),
        st.sets(st.integers(0, 400), max_size=60),
    )
    def test_chunk_rows(self, seed: int, dup_p: float, max_shift: float, cuts: set[int]) -> None:
        """In batches of chunk rows cut anywhere: the clean alarms, and what the chunks
        one by one decide on the same stream, state and counters included."""
        chunks = perturbed(random.Random(seed), dup_p, max_shift)
        out, eng = run_in_batches(chunks, cuts)
        assert out == reference()[0]
        one, eng1 = run(chunks)
        assert out == one
        assert eng.stats == eng1.stats
        assert eng.monitor(BED).status() == eng1.monitor(BED).status()


class TestRestoreDataTime:
    """``Engine.restore_data_time``: after a restart, the last run's data is not taken again."""

    def test_redelivered_chunks_dropped_new_ones_taken(self) -> None:
        """Chunks up to the restored time are duplicates; one straddling it is trimmed."""
        chunks = clean_chunks()
        eng = engine()
        eng.restore_data_time(BED, chunks[9].t_end)
        for c in chunks[:10]:
            assert eng.receive(Batch([(BED, c, c.ts)])) == []
        assert eng.stats.dropped == {"duplicate": 10}
        mon = eng.monitor(BED)
        assert mon.last_wave_ts is None
        _, fs, x = headline()
        straddling = AbpChunk(chunks[9].t0, fs, np.ascontiguousarray(x[1125:1375]))
        eng.receive(Batch([(BED, straddling, straddling.ts)]))
        assert mon.last_wave_ts == straddling.ts
        assert mon.detector.current() is not None
        assert mon.detector.current().t0 == chunks[10].t0

    def test_vitals_up_to_it_dropped_context_taken(self) -> None:
        """Numerics dated up to the restored time are dropped; an infusion is taken again."""
        eng = engine()
        t = 1_732_400_000.0
        eng.restore_data_time(BED, t + 10)
        eng.receive(Batch([(BED, Vitals(t + 10, VitalsSource.ART, map=50.0), t + 11)]))
        eng.receive(Batch([(BED, ne(t), t + 11)]))
        assert eng.stats.dropped == {"duplicate": 1}
        assert Drug.NOREPINEPHRINE in eng.monitor(BED).infusions
        eng.receive(Batch([(BED, Vitals(t + 11, VitalsSource.ART, map=50.0), t + 11)]))
        assert eng.monitor(BED).value == 50.0

    def test_no_effect_once_data_came(self) -> None:
        """A bed that already took new data keeps its own data clock."""
        chunks = clean_chunks()
        _, eng = run(chunks[:5])
        eng.restore_data_time(BED, chunks[20].t_end)
        eng.receive(Batch([(BED, chunks[5], chunks[5].ts)]))
        assert eng.stats.dropped == {}
