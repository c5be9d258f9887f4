"""``Engine.receive`` of a batch: many beds' messages in one call, the same as one at a time.

A ward of bundled scenarios (hypotension on NE, recovery, artefacts, a dip, a
bed with vasopressin, NIBP only, a silent bed) is played through two engines:
one takes every message in a batch of its own, the other hands the messages
between two ticks to ``receive`` in one batch, the waveform chunks as chunk
rows (``Batch.add_chunk``, the compiled path), cut into batches wherever Hypothesis
likes, with chunks dropped (gaps, new segments), beds evicted (a small
``max_beds``), on data time and on the processor's clock. The transitions, the
counters and every bed's status must be the same.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from functools import cache
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from simulators.scenario import load_scenario, merge, scenario_dir
from streamproc.core.engine import Batch, Engine
from streamproc.core.monitor import BedMonitor, Clock
from streamproc.core.protocol.alarms import AlarmEvent
from streamproc.core.protocol.messages import (
    TS_LIMITS,
    AbpChunk,
    BedId,
    InvalidMessageError,
    Message,
)
from streamproc.core.protocol.settings import BeatSettings, MonitorSettings, Settings
from streamproc.core.signal.beats import BeatDetector, beats_from_rows
from streamproc.core.signal.lanes import Lanes
from streamproc.wire.codec import decode
from streamproc.wire.topics import parse_inbound

SCENARIOS = (
    "ne_60_40",
    "recovery",
    "artifacts",
    "transient_dip",
    "ne_vasopressin_60_40",
    "nibp_only",
    "silent_bed",
    "stable",
)

#: ("msg", bed, message, now) or ("tick", None, None, now), in arrival order.
Op = tuple[str, BedId | None, Message | None, float]


@cache
def ward() -> tuple[tuple[BedId, Message], ...]:
    """The scenarios' messages, one bed each, in the order a gateway sends them."""
    beds = [
        load_scenario(scenario_dir() / f"{name}.toml", bed=f"bed{i:02d}")
        for i, name in enumerate(SCENARIOS)
    ]
    out = []
    for rec in merge(*beds):
        topic = parse_inbound(rec["topic"], "icu")
        out.append((topic.bed, decode(topic.kind, json.dumps(rec["payload"]).encode())))
    return tuple(out)


def schedule(
    drop: frozenset[int] = frozenset(),
    *,
    live: bool = False,
    ticks: bool = True,
    refs: frozenset[int] = frozenset(),
    again: frozenset[int] = frozenset(),
    swap: frozenset[int] = frozenset(),
) -> list[Op]:
    """The ward's messages (those at ``drop`` left out) with a tick at each whole second.

    ``live``: each message arrives 50 ms after its data time, ticks on that clock.
    ``refs``: the chunks there claim another sampling rate (a new segment each).
    ``again``: those messages are sent a second time, ten messages later (QoS 1).
    ``swap``: those messages change places with the next (two gateway threads).
    """
    msgs = list(enumerate(ward()))
    for i in sorted(swap):
        if i + 1 < len(msgs):
            msgs[i], msgs[i + 1] = msgs[i + 1], msgs[i]
    for i in sorted(again, reverse=True):
        if i < len(msgs):
            msgs.insert(min(i + 11, len(msgs)), msgs[i])
    ops: list[Op] = []
    next_tick: float | None = None
    for i, (bed, msg) in msgs:
        if i in drop:
            continue
        if i in refs and isinstance(msg, AbpChunk):
            msg = AbpChunk(msg.t0, msg.fs * 2.0, msg.samples)  # noqa: PLW2901
        ts = msg.ts
        now = ts + 0.05 if live else ts
        if next_tick is None:
            next_tick = math.floor(now) + 1.0
        while now >= next_tick:
            if ticks:
                ops.append(("tick", None, None, next_tick))
            next_tick += 1.0
        ops.append(("msg", bed, msg, now))
    return ops


def one_at_a_time(eng: Engine, ops: list[Op]) -> list[AlarmEvent]:
    out: list[AlarmEvent] = []
    for kind, bed, msg, now in ops:
        if kind == "tick":
            out.extend(eng.tick(now))
        else:
            assert bed is not None
            assert msg is not None
            out.extend(eng.receive(Batch([(bed, msg, now)])))
    return out


def batches(ops: list[Op], cuts: frozenset[int]) -> Iterator[list[Op] | Op]:
    """Runs of messages (split after each index in ``cuts``), and the ticks."""
    run: list[Op] = []
    for i, op in enumerate(ops):
        if op[0] == "msg":
            run.append(op)
            if i in cuts:
                yield run
                run = []
            continue
        if run:
            yield run
            run = []
        yield op
    if run:
        yield run


def rows(
    beds: list[BedId],
    t0: Any,
    fs: Any,
    ends: Any,
    samples: np.ndarray,
    nows: Any,
) -> Batch:
    """Chunks as a batch's chunk rows (``Batch.add_chunk``)."""
    batch = Batch(samples=samples)
    for bed, t, f, end, now in zip(
        beds,
        np.asarray(t0).tolist(),
        np.asarray(fs).tolist(),
        np.asarray(ends).tolist(),
        np.asarray(nows).tolist(),
        strict=True,
    ):
        batch.add_chunk(bed, t, f, end, now)
    return batch


def take_batch(eng: Engine, run: list[Op]) -> list[AlarmEvent]:
    """The run in one batch: its chunks as chunk rows, the other messages typed."""
    chunks = [op[2] for op in run if isinstance(op[2], AbpChunk)]
    batch = Batch(samples=np.concatenate([np.zeros(0), *(c.samples for c in chunks)]))
    end = 0
    for _, bed, msg, now in run:
        assert bed is not None
        assert msg is not None
        if isinstance(msg, AbpChunk):
            end += msg.samples.size
            batch.add_chunk(bed, msg.t0, msg.fs, end, now)
        else:
            batch.add(bed, msg, now)
    return eng.receive(batch)


def in_batches(eng: Engine, ops: list[Op], cuts: frozenset[int]) -> list[AlarmEvent]:
    out: list[AlarmEvent] = []
    for item in batches(ops, cuts):
        if isinstance(item, list):
            out.extend(take_batch(eng, item))
        else:
            out.extend(one_at_a_time(eng, [item]))
    return out


def _inner(mon: BedMonitor) -> tuple[object, ...]:
    """What a monitor keeps between chunks besides its status."""
    seg = mon.detector.current()
    parts: tuple[object, ...] = (
        mon.now,
        mon.last_data_now,
        mon.last_wave_ts,
        mon.nibp_only,
        mon.holding,
    )
    if seg is not None:
        parts += (seg.learning, seg.n_end, seg.expected_t0, seg.ssf.size, seg.dq.shape)
    return parts


def snapshot(eng: Engine, events: list[AlarmEvent]) -> dict[str, Any]:
    return {
        "events": [ev.payload() for ev in events],
        "stats": eng.stats,
        "now": eng.now,
        "status": sorted((str(st.bed), st) for st in eng.status()),
        "open": eng.count_open_alarms(),
        "inner": sorted((str(mon.bed), _inner(mon)) for mon in eng.beds()),
    }


def compare(ops: list[Op], cuts: frozenset[int], **engine: Any) -> dict[str, Any]:
    ref = Engine(**engine)
    expected = snapshot(ref, one_at_a_time(ref, ops))
    eng = Engine(**engine)
    got = snapshot(eng, in_batches(eng, ops, cuts))
    assert got == expected
    return got


def compare_stepwise(ops: list[Op], **engine: Any) -> None:
    """:func:`compare` (a batch per run of chunks), each bed's inner state checked after every run."""
    ref, eng = Engine(**engine), Engine(**engine)
    done = 0
    for item in batches(ops, frozenset()):
        run = item if isinstance(item, list) else [item]
        assert one_at_a_time(ref, run) == (
            take_batch(eng, run) if isinstance(item, list) else one_at_a_time(eng, run)
        )
        done += len(run)
        inner = {str(mon.bed): _inner(mon) for mon in eng.beds()}
        assert inner == {str(mon.bed): _inner(mon) for mon in ref.beds()}, done


class TestSameAsOneAtATime:
    """A batch decides exactly what its messages decide one at a time."""

    def test_ward_in_tick_batches(self) -> None:
        """The ward, a batch between two ticks (what a replay hands over): same alarms."""
        got = compare(schedule(frozenset(), live=False), frozenset(), clock=Clock.DATA)
        states = {e["state"] for e in got["events"]}
        assert {"active", "cleared"} <= states  # the comparison is about something

    def test_ward_state_after_every_batch(self) -> None:
        """Not only in the end: every bed's inner state is the same after every batch."""
        compare_stepwise(schedule(), clock=Clock.DATA)

    def test_long_learning_window(self) -> None:
        """A segment learns over ten chunks: they take the ordinary way, whatever fits."""
        slow = Settings(beats=BeatSettings(learning_s=10.0))
        compare_stepwise(schedule(refs=frozenset(range(300, 4000, 397))), settings=slow)

    def test_live_clock(self) -> None:
        """On the processor's clock (arrival 50 ms after data time) too."""
        got = compare(schedule(frozenset(), live=True), frozenset())
        assert got["events"]

    def test_evictions(self) -> None:
        """With room for three beds of eight: beds come and go mid-batch, same decisions."""
        got = compare(schedule(frozenset(), live=False), frozenset(), clock=Clock.DATA, max_beds=3)
        assert got["stats"].beds_evicted > 0

    def test_staleness_shorter_than_a_chunk(self) -> None:
        """A staleness limit below a sample period: every chunk restarts the waveform (and
        with it the signal-invalid alarm's clock; no ticks, which would find every bed stale)."""
        tight = Settings(monitor=MonitorSettings(stale_s=0.005))
        ops = schedule(frozenset(), live=False, ticks=False)
        got = compare(ops, frozenset(), settings=tight, clock=Clock.DATA)
        assert got["events"]

    @settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(
        cuts=st.frozensets(st.integers(0, 4000), max_size=300),
        drop=st.frozensets(st.integers(0, 4000), max_size=40),
        refs=st.frozensets(st.integers(0, 4000), max_size=10),
        live=st.booleans(),
        max_beds=st.sampled_from([2, 5, 100]),
    )
    def test_any_batches(
        self,
        cuts: frozenset[int],
        drop: frozenset[int],
        refs: frozenset[int],
        live: bool,
        max_beds: int,
    ) -> None:
        """Batches cut anywhere, messages dropped (gaps), sampling rates changed (new
        segments), evictions, either clock: the same."""
        ops = schedule(drop, live=live, refs=refs)
        compare(ops, cuts, clock=Clock.WALL if live else Clock.DATA, max_beds=max_beds)

    @settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(
        cuts=st.frozensets(st.integers(0, 4000), max_size=300),
        again=st.frozensets(st.integers(0, 1800), max_size=200),
        swap=st.frozensets(st.integers(0, 1800), max_size=200),
        drop=st.frozensets(st.integers(0, 1800), max_size=10),
        live=st.booleans(),
    )
    def test_any_batches_with_repeats_and_reordering(
        self,
        cuts: frozenset[int],
        again: frozenset[int],
        swap: frozenset[int],
        drop: frozenset[int],
        live: bool,
    ) -> None:
        """Messages sent twice, neighbours swapped, some lost (held chunks, gaps accepted
        past the reorder window, duplicates and late data dropped): the same in batches."""
        ops = schedule(drop, live=live, again=again, swap=swap)
        got = compare(ops, cuts, clock=Clock.WALL if live else Clock.DATA)
        if again - drop and min(again - drop) < len(ward()):
            assert got["stats"].dropped  # (a message sent twice is taken once)

    def test_ward_repeated_and_swapped_same_as_clean(self) -> None:
        """Every tenth message again and every seventh pair swapped: the clean ward's alarms."""
        clean = compare(schedule(), frozenset(), clock=Clock.DATA)
        n = len(ward())
        messy = schedule(again=frozenset(range(0, n, 10)), swap=frozenset(range(50, n, 7)))
        got = compare(messy, frozenset(range(0, 5000, 13)), clock=Clock.DATA)
        assert got["events"] == clean["events"]
        assert got["stats"].dropped["duplicate"] > 0

    def test_sampling_rate_changes(self) -> None:
        """A chunk that claims another rate starts a new segment in both."""
        refs = frozenset(range(300, 4000, 97))
        compare(schedule(refs=refs), frozenset(), clock=Clock.DATA)

    def test_most_chunks_skip_python(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """The batches are what they claim: few chunks reach ``BedMonitor.receive``."""
        calls: list[int] = []
        real = BedMonitor.receive

        def spy(mon: BedMonitor, msg: Message, now: float) -> list[AlarmEvent]:
            calls.append(isinstance(msg, AbpChunk))
            return real(mon, msg, now)

        monkeypatch.setattr(BedMonitor, "receive", spy)
        ops = schedule(frozenset(), live=False)
        in_batches(Engine(clock=Clock.DATA), ops, frozenset())
        n_chunks = sum(1 for op in ops if isinstance(op[2], AbpChunk))
        assert n_chunks > 1000
        assert sum(calls) < n_chunks / 10


class TestContract:
    """What ``receive`` refuses, and what it says when a message raises."""

    def test_invalid_chunk_raises_after_taking_the_ones_before(self) -> None:
        """An out-of-range sample raises as ``AbpChunk`` would; the chunks before it count."""
        run = [op for op in schedule(frozenset(), live=False)[:400] if op[0] == "msg"]
        run = [op for op in run if isinstance(op[2], AbpChunk)][:60]
        bad = 40
        chunks = [op[2] for op in run]
        x = np.concatenate([c.samples for c in chunks])  # type: ignore[union-attr]
        ends = np.cumsum([c.samples.size for c in chunks]).astype(np.int64)  # type: ignore[union-attr]
        x[ends[bad - 1] + 3] = 900.0
        eng = Engine(clock=Clock.DATA)
        with pytest.raises(InvalidMessageError) as info:
            eng.receive(
                rows(
                    [op[1] for op in run],  # type: ignore[misc]
                    t0=np.array([c.t0 for c in chunks]),  # type: ignore[union-attr]
                    fs=np.array([c.fs for c in chunks]),  # type: ignore[union-attr]
                    ends=ends,
                    samples=x,
                    nows=np.array([op[3] for op in run]),
                )
            )
        assert info.value.field == "samples"
        ref = Engine(clock=Clock.DATA)
        one_at_a_time(ref, run[:bad])
        assert eng.stats == ref.stats
        assert eng.status() == ref.status()

    def test_data_time_past_the_last_valid_one(self) -> None:
        """A stream that runs past the latest valid data time: the chunk that crosses it
        raises, as ``AbpChunk`` does, though it continues its segment."""
        bed = BedId("w", "b")
        t0 = TS_LIMITS[1] - 5.0
        pulse = 80.0 + 30.0 * np.maximum(np.sin(np.arange(125) * 2 * np.pi / 100.0), 0.0)
        eng = Engine(clock=Clock.DATA)
        for k in range(4):  # past learning: the next chunks reach the compiled call
            eng.receive(Batch([(bed, AbpChunk(t0 + k, 125.0, pulse.copy()), t0 + k)]))
        starts = t0 + np.arange(4.0, 8.0)
        with pytest.raises(InvalidMessageError) as info:
            eng.receive(
                rows(
                    [bed] * 4,
                    t0=starts,
                    fs=np.full(4, 125.0),
                    ends=np.arange(1, 5, dtype=np.int64) * 125,
                    samples=np.tile(pulse, 4),
                    nows=starts + 124 / 125,
                )
            )
        assert info.value.field == "t0"
        assert eng.stats.messages == 6  # t0 + 5 is the last valid start (TS_LIMITS[1])

    def test_a_chunk_over_the_sample_limit(self) -> None:
        """After chunks of 60,000 samples (buffers that large), one of 60,001 that
        continues them raises as ``AbpChunk`` does."""
        bed = BedId("w", "b")
        fs, n = 125.0, 60_000
        x = 80.0 + 30.0 * np.maximum(np.sin(np.arange(n + 1) * 2 * np.pi / 100.0), 0.0)
        eng = Engine(clock=Clock.DATA)
        t = 1.7e9
        for _ in range(2):
            eng.receive(Batch([(bed, AbpChunk(t, fs, x[:n].copy()), t)]))
            t += n / fs
        with pytest.raises(InvalidMessageError) as info:
            eng.receive(
                rows(
                    [bed],
                    t0=np.array([t]),
                    fs=np.array([fs]),
                    ends=np.array([n + 1], np.int64),
                    samples=x,
                    nows=np.array([t]),
                )
            )
        assert info.value.field == "samples"
        assert eng.stats.messages == 2

    def test_ends_must_rise_within_the_samples(self) -> None:
        """``ends`` falling, or past the samples: a ValueError before anything is taken."""
        eng = Engine()
        bed = BedId("w", "b")
        for ends in ([125, 100], [125, 251]):
            with pytest.raises(ValueError, match="ends must rise"):
                eng.receive(
                    rows(
                        [bed, bed],
                        t0=np.array([1.7e9, 1.7e9 + 1]),
                        fs=np.array([125.0, 125.0]),
                        ends=np.array(ends, np.int64),
                        samples=np.full(250, 80.0),
                        nows=np.array([1.7e9, 1.7e9 + 1]),
                    )
                )
        assert eng.stats.messages == 0

    @settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(
        st.lists(
            st.tuples(
                st.sampled_from([BedId("w", "a"), BedId("w", "b")]),
                st.one_of(  # mostly a continuation (the offset from where the bed ended)
                    st.just(0.0),
                    st.just(0.0),
                    st.floats(-5.0, 5.0),
                    st.sampled_from([math.nan, math.inf, -1e12, 1e12]),
                ),
                st.one_of(
                    st.just(125.0),
                    st.just(125.0),
                    st.floats(-10.0, 3000.0),
                    st.sampled_from([math.nan, 0.0]),
                ),
                st.integers(0, 300),
                st.one_of(
                    st.just(None),  # a pulse
                    st.floats(allow_nan=True, allow_infinity=True),
                    st.sampled_from([math.nan, math.inf, 500.5, -100.5]),
                ),
            ),
            max_size=40,
        )
    )
    def test_hostile_chunks(
        self, specs: list[tuple[BedId, float, float, int, float | None]]
    ) -> None:
        """Any numbers: the same as ``AbpChunk`` + ``receive`` one at a time, error included.

        Both beds first take four plain seconds, so that the hostile chunks find
        them past learning, where the compiled call takes a bed's chunks.
        """
        t_end = {BedId("w", "a"): 1.7e9, BedId("w", "b"): 1.7e9 + 0.3}
        warm = [(bed, 0.0, 125.0, 125, None) for _ in range(4) for bed in t_end]
        specs = warm + specs
        beds, t0s, fss, parts = [], [], [], []
        pulse = 80.0 + 30.0 * np.maximum(np.sin(np.arange(300) * 2 * np.pi / 100.0), 0.0)
        for bed, offset, fs, n, value in specs:
            t0 = t_end[bed] + offset
            beds.append(bed)
            t0s.append(t0)
            fss.append(fs)
            parts.append(pulse[:n].copy() if value is None else np.full(n, value))
            if fs > 0 and math.isfinite(t0 + n / fs):
                t_end[bed] = t0 + n / fs
        ends = np.cumsum([p.size for p in parts]).astype(np.int64)
        samples = np.concatenate([np.zeros(0), *parts])
        ref = Engine(clock=Clock.DATA)
        ref_error = None
        for bed, t0, fs, x in zip(beds, t0s, fss, parts, strict=True):
            try:
                chunk = AbpChunk(t0, fs, x)
            except InvalidMessageError as exc:
                ref_error = (exc.field, exc.reason)
                break
            ref.receive(Batch([(bed, chunk, chunk.ts)]))
        eng = Engine(clock=Clock.DATA)
        nows = np.array(
            [t + (p.size - 1) / f if f else t for t, f, p in zip(t0s, fss, parts, strict=True)]
        )
        error = None
        with np.errstate(all="ignore"):
            try:
                eng.receive(
                    rows(
                        beds,
                        t0=np.array(t0s),
                        fs=np.array(fss),
                        ends=ends,
                        samples=samples,
                        nows=nows,
                    )
                )
            except InvalidMessageError as exc:
                error = (exc.field, exc.reason)
        assert error == ref_error
        assert eng.stats == ref.stats
        assert eng.status() == ref.status()

    def test_a_raise_says_what_was_taken(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """A message that raises (a bug): ``taken`` messages were taken before it, with the
        transitions ``decided``; the ones after it can be handed in again."""
        ops = [op for op in schedule(frozenset(), live=True) if op[0] == "msg"]
        bad = ops[1200][2]
        real = BedMonitor.receive

        def buggy(mon: BedMonitor, msg: Message, now: float) -> list[AlarmEvent]:
            if msg is bad:
                raise RuntimeError("a bug")
            return real(mon, msg, now)

        monkeypatch.setattr(BedMonitor, "receive", buggy)
        eng = Engine()
        batch = Batch((bed, msg, now) for _, bed, msg, now in ops)  # type: ignore[misc]
        with pytest.raises(RuntimeError, match="a bug"):
            eng.receive(batch)
        assert batch.taken == 1200
        ref = Engine()
        assert batch.decided == one_at_a_time(ref, ops[:1200])
        rest = Batch((bed, msg, now) for _, bed, msg, now in ops[1201:])  # type: ignore[misc]
        assert eng.receive(rest) == one_at_a_time(ref, ops[1201:])
        assert eng.status() == ref.status()


class TestObserver:
    """An observer is told of every message with the beats it completed."""

    def test_the_beats_are_the_detectors(self) -> None:
        """On clean data the beats are what a beat detector finds in the same chunks, and
        the transitions are those of an engine without an observer."""
        ops = schedule(frozenset(), live=False)
        told: list[tuple[BedId, Message, np.ndarray]] = []
        eng = Engine(clock=Clock.DATA, observer=lambda *seen: told.append(seen))
        got = in_batches(eng, ops, frozenset(range(0, 5000, 7)))
        ref = Engine(clock=Clock.DATA)
        assert got == one_at_a_time(ref, ops)

        def key(msg: Message | None) -> object:
            if isinstance(msg, AbpChunk):  # (a chunk row is told as a chunk of its own)
                return (msg.t0, msg.fs, msg.samples.tolist())
            return msg

        assert [(bed, key(msg)) for bed, msg, _ in told] == [
            (bed, key(msg)) for kind, bed, msg, _ in ops if kind == "msg"
        ]
        detectors: dict[BedId, BeatDetector] = {}
        n = 0
        for bed, msg, beats in told:
            if not isinstance(msg, AbpChunk):
                assert beats.shape[0] == 0
                continue
            det = detectors.setdefault(bed, BeatDetector(ref.settings.beats))
            want = det.feed(msg)
            assert beats_from_rows(beats) == want
            n += len(want)
        assert n == ref.stats.beats > 1000


class TestLanes:
    """The slot table behind a batch's chunk rows."""

    def test_slots_are_reused_and_free_ones_refused(self) -> None:
        """A released slot is given to the next bed; asking a free slot's monitor raises."""
        lanes = Lanes()
        a, b = BedId("w", "a"), BedId("w", "b")
        mon_a, mon_b = BedMonitor(a, Settings()), BedMonitor(b, Settings())
        sa = lanes.slot(a, mon_a)
        assert lanes.slot(a, mon_a) == sa
        lanes.release(a)
        assert len(lanes) == 0
        with pytest.raises(LookupError, match="free"):
            lanes.monitor(sa)
        assert lanes.slot(b, mon_b) == sa
        assert lanes.monitor(sa) is mon_b

    def test_a_bed_without_waveform_is_not_armed(self) -> None:
        """No chunk yet: the kernel must refuse the bed's first chunk (``receive`` takes it)."""
        lanes = Lanes()
        bed = BedId("w", "a")
        s = lanes.slot(bed, BedMonitor(bed, Settings()))
        lanes.arm(s)
        assert lanes.armed[s] == 0


class TestEvictionInABatch:
    """A bed evicted inside one ``receive`` call never reaches another bed's slot."""

    def test_evicted_beds_chunks_never_go_to_the_bed_in_its_old_slot(self) -> None:
        """max_beds 2: a and b stream; in one batch a new bed c evicts a (silent longest)
        and takes a's freed slot; a keeps sending, one second of data ahead of c, so that
        a's chunk continues c's segment exactly. Each of a's chunks must still be a's (a
        new monitor), as when taken one at a time: same transitions, same states."""
        from simulators.waveform import synthesize_abp  # noqa: PLC0415

        fs = 125.0
        x = synthesize_abp(duration_s=40, sbp=60.0, dbp=40.0, hr=90.0, fs=fs, seed=3)
        y = synthesize_abp(duration_s=40, sbp=120.0, dbp=70.0, hr=70.0, fs=fs, seed=4)
        t = TS_LIMITS[0] + 1_000_000.0
        a, b, c = BedId("w", "a"), BedId("w", "b"), BedId("w", "c")

        def chunk(wave: np.ndarray, k: int) -> AbpChunk:
            return AbpChunk(t + k, fs, np.ascontiguousarray(wave[k * 125 : (k + 1) * 125]))

        ops: list[Op] = []
        for k in range(5):  # before the batch: a, then b (b's data the newer)
            ops.append(("msg", a, chunk(x, k), t + k + 0.5))
            ops.append(("msg", b, chunk(y, k), t + k + 0.6))
        batch: list[Op] = []
        for k in range(10, 30):  # c from t+10, a from t+11: a's chunk follows c's
            batch.append(("msg", c, chunk(y, k), t + 31.0))
            batch.append(("msg", a, chunk(x, k + 1), t + 31.0))
        ref, eng = Engine(max_beds=2), Engine(max_beds=2)
        expected = one_at_a_time(ref, ops) + one_at_a_time(ref, batch)
        got = one_at_a_time(eng, ops) + take_batch(eng, batch)
        assert eng.stats.beds_evicted == ref.stats.beds_evicted >= 2
        assert [e.payload() for e in got] == [e.payload() for e in expected]
        assert snapshot(eng, got) == snapshot(ref, expected)
