"""The engine: every bed's monitor behind one feed-in, events-out interface.

Sans-I/O after ``h11._connection``: the caller (the live service, ``replay``,
``evaluate``, a test) hands in a :class:`Batch` of typed messages, each with the
time it arrived (:meth:`Engine.receive`), lets time pass (:meth:`Engine.tick`) and
gets back the alarm transitions to publish. Nothing here reads a clock, a socket or
a file. The clock the alarm timers run on is the engine's :class:`Clock`, decided
once when it is made: the processor's (live) or the data's (replay, evaluation).
"""

from __future__ import annotations

import heapq
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Final, TypeAlias

import numpy as np
import numpy.typing as npt

from streamproc.core.monitor import (
    BedMonitor,
    BedStatus,
    Clock,
    alarm_id_number,
    warm_up,
)
from streamproc.core.protocol import rules
from streamproc.core.protocol.alarms import HYPOTENSION, Alarm, AlarmEvent, Priority, Trigger
from streamproc.core.protocol.messages import (
    AbpChunk,
    Ack,
    BedId,
    Message,
)
from streamproc.core.protocol.settings import Settings
from streamproc.core.signal import _kernels, state
from streamproc.core.signal.lanes import Lanes
from streamproc.core.signal.ordering import DropNotice, Drops

__all__ = ["BED_EVICTED", "Batch", "BedActivity", "Engine", "EngineStats", "Observer"]

#: ``clear_reason`` of the ``cleared`` transition that closes an evicted bed's open alarms.
BED_EVICTED = "bed_evicted"


@dataclass(slots=True)
class EngineStats:
    """Counters the shell exports as metrics."""

    messages: int = 0
    beats: int = 0
    beats_valid: int = 0
    acks_unknown: int = 0
    beds_evicted: int = 0
    #: Open alarms closed (``cleared``, ``clear_reason`` = ``bed_evicted``) by an eviction.
    alarms_evicted: int = 0
    #: Messages not taken, by reason (``streamproc.core.signal.ordering.DropReason``: a
    #: ``duplicate`` of data taken, ``late`` data older than what was taken).
    dropped: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class BedActivity:
    """What a restarted engine is told of a bed's data before the restart.

    Attributes:
        last_data: the processor's time (epoch s) the bed's last data arrived.
        nibp_only: whether it had sent only non-invasive pressures (its staleness
            limit is then ``hypotension.nibp_stands_s``, else ``monitor.stale_s``).
    """

    last_data: float
    nibp_only: bool = False
    #: The data time of the bed's latest pressure observation (its summary's ``ts``).
    data_ts: float | None = None


#: A bed's eviction rank: beds with open alarms last, then the one silent longest.
_IdleKey = tuple[bool, float]


def _idle_key(mon: BedMonitor) -> _IdleKey:
    return (bool(mon.alarms), mon.last_data_now or float("-inf"))


#: Eviction candidates ranked per scan of every bed: at most this many ...
_VICTIMS_MAX: Final = 256
#: ... and at most this share of ``max_beds`` (the ranking's age is bounded by it).
_VICTIMS_SHARE: Final = 32


def _rank(item: tuple[_IdleKey, BedId, BedMonitor]) -> _IdleKey:
    return item[0]


#: Transitions of a ``hypotension`` alarm decided by its data (their ``ts`` is a data
#: time; a tick's re-announcement or ack expiry is on the processor's clock, an
#: acknowledgement on the dashboard's).
_DATA_TRIGGERS: Final = frozenset(
    {Trigger.RAISE, Trigger.ESCALATE, Trigger.WORSEN, Trigger.UPDATE, Trigger.CLEAR}
)


def _data_floors(
    events: Iterable[AlarmEvent], activity: Mapping[BedId, BedActivity]
) -> dict[BedId, float]:
    """Per bed, the data time up to which the last run had surely taken its data: the
    latest of its summary's ``ts`` and its ``hypotension`` transitions decided by data.

    After a crash the broker re-delivers what the last run had not acknowledged, from
    the start of that backlog: without this floor the old data would be taken again by
    the new run and could clear (or re-raise under a new id) an alarm the last run had
    decided on later data (issue 16: a processor killed mid-backlog).
    """
    floors = {bed: act.data_ts for bed, act in activity.items() if act.data_ts is not None}
    for ev in events:
        if (
            ev.kind == HYPOTENSION
            and ev.trigger in _DATA_TRIGGERS
            and ev.details.get("clear_reason") != BED_EVICTED
        ):
            floors[ev.bed] = max(floors.get(ev.bed, ev.ts), ev.ts)
    return floors


#: What :meth:`Engine.receive` tells an observer of each message it takes (evaluation):
#: the bed, the message and the beats the bed's detector completed while taking it
#: (``_kernels.classify`` rows; none for a message that is not a chunk, nor for a chunk
#: the bed dropped or holds for reordering; a message that releases held chunks tells
#: the beats of the last chunk it took, and a tick that releases them tells nothing).
Observer: TypeAlias = Callable[[BedId, Message, npt.NDArray[np.float64]], None]

_NO_BEATS: Final = np.empty((0, state.B_COLUMNS), np.float64)
_NO_BEATS.flags.writeable = False
_NO_SAMPLES: Final = np.empty(0, np.float64)
_NO_SAMPLES.flags.writeable = False


class Batch:
    """What :meth:`Engine.receive` takes: messages for beds, in the order they arrived.

    Each has its bed and the time it arrived (``now``: the processor's, or its data
    time on the data clock). A message is added typed (:meth:`add`), or, for an
    ``abp`` chunk whose samples a reader wrote straight into :attr:`samples` (a
    replay's lines), as that chunk's row (:meth:`add_chunk`: no :class:`AbpChunk`
    is made; the engine checks the row as ``AbpChunk`` would). :attr:`samples` is
    read, never kept: the caller may reuse it once ``receive`` has returned.

    After ``receive`` raised, :attr:`taken` is how many messages it took before the
    one that raised and :attr:`decided` their transitions (:meth:`Engine.receive`).
    """

    __slots__ = ("beds", "decided", "ends", "fs", "messages", "nows", "samples", "t0", "taken")

    def __init__(
        self,
        messages: Iterable[tuple[BedId, Message, float]] = (),
        samples: npt.NDArray[np.float64] | None = None,
    ) -> None:
        self.beds: list[BedId] = []
        #: Each message, or ``None`` for a chunk's row.
        self.messages: list[Message | None] = []
        self.nows: list[float] = []
        #: The chunk rows (in order): start, sampling rate, where the samples end.
        self.t0: list[float] = []
        self.fs: list[float] = []
        self.ends: list[int] = []
        self.samples: npt.NDArray[np.float64] = _NO_SAMPLES if samples is None else samples
        self.taken = 0
        self.decided: list[AlarmEvent] = []
        for bed, msg, now in messages:
            self.add(bed, msg, now)

    def __len__(self) -> int:
        return len(self.beds)

    def add(self, bed: BedId, msg: Message, now: float) -> None:
        """``msg`` for ``bed``, arrived at ``now``."""
        self.beds.append(bed)
        self.messages.append(msg)
        self.nows.append(now)

    def add_chunk(self, bed: BedId, t0: float, fs: float, end: int, now: float) -> None:
        """An ``abp`` chunk for ``bed`` arrived at ``now``: from ``t0`` at ``fs``, its samples
        ``samples[e:end]`` (``e`` where the previous row's end, else 0)."""
        self.beds.append(bed)
        self.messages.append(None)
        self.nows.append(now)
        self.t0.append(t0)
        self.fs.append(fs)
        self.ends.append(end)

    def clear(self) -> None:
        """Empty, for the next messages (:attr:`samples` kept)."""
        self.beds.clear()
        self.messages.clear()
        self.nows.clear()
        if self.ends:
            self.t0.clear()
            self.fs.clear()
            self.ends.clear()


def _count_open(mon: BedMonitor, counts: dict[Priority, int]) -> None:
    for alarm in mon.alarms.values():
        if alarm.open:
            counts[alarm.priority] = counts.get(alarm.priority, 0) + 1


class Engine:
    """All beds. ``receive`` and ``tick`` return what to publish, in order.

    ``clock``: what the alarm timers run on (:class:`Clock`). ``observer``: told of
    every message ``receive`` takes, with the beats it completed (:data:`Observer`);
    the engine then takes the messages one by one, never many chunks in one call.
    """

    def __init__(
        self,
        settings: Settings | None = None,
        *,
        max_beds: int = 10_000,
        clock: Clock = Clock.WALL,
        report_evictions: bool = False,
        observer: Observer | None = None,
    ) -> None:
        self.settings = settings or Settings()
        warm_up()  # compile the detector's loops now, not on the first chunk
        self.max_beds = max_beds
        self.clock: Final = clock
        #: Whether the alarm timers run on data time (``clock`` is ``Clock.DATA``).
        self.data_clock: Final = clock is Clock.DATA
        self._observer = observer
        self._beds: dict[BedId, BedMonitor] = {}
        #: Messages dropped by the beds' data-time rules (``streamproc.core.signal.ordering``).
        self._drops = Drops()
        #: Whether evicted beds are kept for :meth:`take_evicted_beds` (a caller that
        #: holds state per bed, such as the live service, asks for them; one that
        #: never takes them would keep them all).
        self.report_evictions = report_evictions
        self._evicted_beds: list[BedId] = []
        #: Eviction candidates, the next victim last: ``(rank, bed, monitor)`` as ranked
        #: by the last scan of every bed (see :meth:`_next_victim`).
        self._victims: list[tuple[_IdleKey, BedId, BedMonitor]] = []
        self._stats = EngineStats(dropped=self._drops.counts)
        #: Beats and valid beats, counted by every bed's compiled path.
        self._counts = np.zeros(2, np.float64)
        self.now: float | None = None
        #: Transitions decided by an eviction, returned by the next ``receive`` or ``tick``.
        self._evicted: list[AlarmEvent] = []
        #: Evicted beds' last alarm-id numbers per kind (at most ``max_beds`` beds): a bed
        #: that comes back never reuses the id of an episode closed by its eviction.
        self._retired_ids: OrderedDict[BedId, dict[str, int]] = OrderedDict()
        #: Per kind, the highest id number of the beds pushed out of ``_retired_ids``: a bed
        #: not remembered there never issues an id at or below it (ids stay unique).
        self._forgotten_ids: dict[str, int] = {}
        #: Open alarms per priority after the last complete tick (counted by the tick
        #: as it visits every bed: a separate count of 5,000 beds held a loop 4 ms).
        self.open_alarms: dict[Priority, int] = {}
        #: The beds' slots for a batch's chunk rows (``_kernels.step_chunks``).
        self._lanes: Lanes[BedMonitor] = Lanes()
        lim = np.empty(state.LIM_SIZE, np.float64)
        lim[state.LIM_STALE_S] = self.settings.monitor.stale_s
        self._lim = lim

    @property
    def stats(self) -> EngineStats:
        """The counters, up to date."""
        st = self._stats
        counts = self._counts
        st.beats = int(counts[0])
        st.beats_valid = int(counts[1])
        return st

    def __len__(self) -> int:
        return len(self._beds)

    def get(self, bed: BedId) -> BedMonitor | None:
        """The bed's monitor if the engine holds one (never creates one)."""
        return self._beds.get(bed)

    def take_evicted_beds(self) -> list[BedId]:
        """The beds evicted since the last call, oldest first (with ``report_evictions``).

        Sans-I/O: the engine closes an evicted bed's open alarms itself (``cleared``,
        ``clear_reason`` = ``bed_evicted``, returned by ``receive``/``tick`` like any
        transition); what the caller holds for the bed (retained topics, caches) is
        the caller's to drop. A bed listed here may have come back since (new data
        makes a new monitor): :meth:`get` says whether it is monitored now. A bed is
        listed once the ``cleared`` transitions that closed its alarms have been
        returned (evictions while restoring return them with the next ``receive`` or
        ``tick``): a caller that clears the bed's retained state after publishing
        what those calls returned clears it after the closing states, never before.
        """
        if self._evicted:
            return []
        out, self._evicted_beds = self._evicted_beds, []
        return out

    def monitor(self, bed: BedId) -> BedMonitor:
        """The bed's monitor, created on first sight (oldest idle bed evicted past the cap)."""
        mon = self._beds.get(bed)
        if mon is None:
            if len(self._beds) >= self.max_beds:
                self._evict()
            mon = self._beds[bed] = BedMonitor(
                bed,
                self.settings,
                clock=self.clock,
                counts=self._counts,
                drops=self._drops,
            )
            retired = self._retired_ids.pop(bed, None)
            mon.adopt_id_numbers(self._forgotten_ids if retired is None else retired)
        return mon

    def _evict(self) -> None:
        """Drop the bed silent for longest that has no open alarm (or the oldest at all).

        When every bed has an open alarm, the victim's open alarms are closed, never left
        behind: each gets a ``cleared`` transition with ``clear_reason`` = ``bed_evicted``
        (and a note saying it is not resolved), returned first by the next ``receive`` or
        ``tick``, so that no bed nobody monitors keeps an active state retained. The bed
        is listed for :meth:`take_evicted_beds`.
        """
        victim = self._next_victim()
        mon = self._beds.pop(victim)
        self._lanes.release(victim)
        self._stats.beds_evicted += 1
        self._retire_ids(victim, mon.id_numbers())
        if mon.alarms:
            self._close_evicted(mon)
        if self.report_evictions:
            self._evicted_beds.append(victim)

    def _next_victim(self) -> BedId:
        """The bed to evict: the first by ``_idle_key`` (no open alarm, then silent longest).

        One scan of every bed ranks the first ``max_beds / 32`` (at most 256) and the
        evictions that follow take them in turn, each checked again first: a candidate
        gone, or whose rank changed since (data arrived, an alarm opened or closed), is
        passed over. A flood of new ids thus costs one scan per that many evictions,
        not one per eviction (at 2,000 beds a scan takes ~0.6 ms). A bed that became a
        better victim after the scan (an alarm closed with no data since, or a new bed
        that sent no data) waits for the next scan; a bed that sent data since is never
        evicted on the strength of the old ranking.
        """
        beds = self._beds
        victims = self._victims
        while victims:
            key, bed, mon = victims.pop()
            if beds.get(bed) is mon and _idle_key(mon) == key:
                return bed
        size = max(1, min(_VICTIMS_MAX, self.max_beds // _VICTIMS_SHARE))
        ranked = heapq.nsmallest(
            size, ((_idle_key(mon), bed, mon) for bed, mon in beds.items()), key=_rank
        )
        ranked.reverse()
        key, bed, _ = ranked.pop()
        self._victims = ranked
        return bed

    def _close_evicted(self, mon: BedMonitor) -> None:
        now = self.now if self.now is not None else mon.now
        note = (
            f"Closed, NOT resolved: the processor reached its limit of {self.max_beds} beds "
            "and stopped monitoring this one (the bed silent longest). Check the patient "
            "and the monitor's connection."
        )
        for alarm in list(mon.alarms.values()):
            if rules.eviction_closes(alarm):
                at, ts = rules.eviction_ts(alarm, now, mon.obs_ts)
                self._evicted.append(
                    alarm.apply(
                        Trigger.CLEAR,
                        ts,
                        details={"clear_reason": BED_EVICTED, "clear_note": note},
                        at=None if self.data_clock else at,
                    )
                )
                self._stats.alarms_evicted += 1
        mon.alarms.clear()

    def _take_evicted(self, out: list[AlarmEvent]) -> list[AlarmEvent]:
        """``out`` after the transitions of evictions not yet returned."""
        if not self._evicted:
            return out
        evicted, self._evicted = self._evicted, []
        return evicted + out

    def take_drop_notices(self) -> list[DropNotice]:
        """The first dropped message per bed and reason since the last call (for the log)."""
        return self._drops.take_notices()

    def beds(self) -> Iterator[BedMonitor]:
        return iter(self._beds.values())

    def receive(self, batch: Batch) -> list[AlarmEvent]:
        """The messages of ``batch``, in order; returns the transitions, in order.

        A run of chunk rows (:meth:`Batch.add_chunk`) goes to the compiled path
        (:meth:`_take_chunks`), the same as each chunk taken alone; a typed message
        goes to its bed's monitor (:meth:`_take`); with an observer, every message
        is taken alone and the observer told (:data:`Observer`).

        Raises:
            InvalidMessageError: for the first chunk row ``AbpChunk`` refuses.
            ValueError: the chunk rows do not describe chunks (``ends`` falling or
                past the samples); nothing of their run is taken.
            Exception: whatever a message raised (a bug); then ``batch.taken``
                messages were taken before it and ``batch.decided`` holds their
                transitions (a caller that goes on takes the rest after it).
        """
        if batch.ends or self._observer is not None:
            out: list[AlarmEvent] = []
            batch.decided = out
            self._take_rows(batch, out)
            return out
        # typed messages only (the service, a test; inline: no work added to each message)
        beds = batch.beds
        if len(beds) == 1:  # one alone (a replay's line that is not in a batch)
            try:
                return self._take(beds[0], batch.messages[0], batch.nows[0])  # type: ignore[arg-type]
            except BaseException:
                batch.taken, batch.decided = 0, []
                raise
        out = []
        batch.decided = out
        take = self._take
        i = 0
        try:
            for i, (bed, msg, now) in enumerate(  # noqa: B007 - ``i`` read when one raises
                zip(beds, batch.messages, batch.nows, strict=True)
            ):
                out += take(bed, msg, now)  # type: ignore[arg-type]
        except BaseException:
            batch.taken = i
            raise
        return out

    def _take_rows(self, batch: Batch, out: list[AlarmEvent]) -> None:
        """A batch with chunk rows, or any batch with an observer."""
        batch.taken = 0
        observer = self._observer
        n = len(batch.beds)
        if observer is not None:
            self._take_observed(batch, out, observer)
        elif len(batch.ends) == n:  # chunk rows only (a replay's lines between two ticks)
            self._take_chunks(batch, 0, n, out)
        else:
            self._take_mixed(batch, out)

    def _take_mixed(self, batch: Batch, out: list[AlarmEvent]) -> None:
        """A batch of typed messages and chunk rows: each run of chunk rows in one go."""
        messages = batch.messages
        n = len(messages)
        i = 0
        while i < n:
            msg = messages[i]
            batch.taken = i
            if msg is not None:
                out.extend(self._take(batch.beds[i], msg, batch.nows[i]))
                i += 1
                continue
            j = i + 1
            while j < n and messages[j] is None:
                j += 1
            self._take_chunks(batch, i, j, out)
            i = j

    def _take_observed(self, batch: Batch, out: list[AlarmEvent], observe: Observer) -> None:
        """The messages of ``batch`` one by one, ``observe`` told of each."""
        counts = self._counts
        row = 0
        ends, samples = batch.ends, batch.samples
        for i in range(len(batch.beds)):
            batch.taken = i
            bed, msg, now = batch.beds[i], batch.messages[i], batch.nows[i]
            if msg is None:
                a = ends[row - 1] if row else 0
                msg = AbpChunk(batch.t0[row], batch.fs[row], samples[a : ends[row]].copy())
                row += 1
            beats = counts[0]
            out.extend(self._take(bed, msg, now))
            observe(bed, msg, self._beats(bed, int(counts[0] - beats)))

    def _beats(self, bed: BedId, n: int) -> npt.NDArray[np.float64]:
        """The last ``n`` beats ``bed``'s detector completed (at most its last chunk's)."""
        mon = self._beds.get(bed)
        if n <= 0 or mon is None or mon.detector.current() is None:
            return _NO_BEATS
        rows, _ = mon.detector.stepped_rows()
        return rows[max(0, rows.shape[0] - n) :].copy()

    def _take(self, bed: BedId, msg: Message, now: float) -> list[AlarmEvent]:
        """One message for ``bed`` that arrived at ``now``; returns the transitions."""
        self._stats.messages += 1
        if self.now is None or now > self.now:
            self.now = now
        if isinstance(msg, Ack):
            mon = self._beds.get(bed)
            if mon is None or not mon.knows_alarm(msg.alarm_id):
                self._stats.acks_unknown += 1
                return self._take_evicted([])
        else:
            mon = self._beds.get(bed) or self.monitor(bed)
        out = mon.receive(msg, now)
        return self._take_evicted(out) if self._evicted else out

    def _take_chunks(self, batch: Batch, start: int, end: int, out: list[AlarmEvent]) -> None:
        """Messages ``start`` to ``end`` of ``batch``, all chunk rows: many beds' chunks at once.

        The same as taking each alone (:meth:`_take` of its ``AbpChunk``): the same
        transitions in the same order, the same state after. The chunks a bed's
        monitor takes with nothing to decide (nearly all) are taken by one compiled
        call (``_kernels.step_chunks``); it stops at any other, which takes the
        ordinary way, and goes on after it.
        """
        first = batch.messages[:start].count(None) if start else 0
        last = first + end - start
        ends = np.array(batch.ends if last == len(batch.ends) else batch.ends[:last], np.int64)
        samples = batch.samples
        if last and (
            int(ends[0]) < 0 or int(ends[-1]) > samples.size or bool((ends[1:] < ends[:-1]).any())
        ):
            raise ValueError(
                f"ends must rise from 0 to at most samples.size ({samples.size}): "
                f"got {ends.tolist()[:20]}"
            )
        beds = batch.beds
        if start or end < len(beds):  # (the chunk rows up to the run's last: the run's
            # rows keep their samples' offsets; the rows before it, taken already, are
            # not looked at)
            beds = [beds[start]] * first + beds[start:end]
            nows = np.array([0.0] * first + batch.nows[start:end])
        else:
            nows = np.array(batch.nows)
        t0, fs = batch.t0, batch.fs
        if last < len(t0):
            t0, fs = t0[:last], fs[:last]
        self._step_chunks(
            beds, np.array(t0), np.array(fs), ends, samples, nows, first, out, batch, start - first
        )

    def _step_chunks(  # noqa: PLR0917 - a batch's chunk rows as the compiled call takes them
        self,
        beds: Sequence[BedId],
        t0: npt.NDArray[np.float64],
        fs: npt.NDArray[np.float64],
        ends: npt.NDArray[np.int64],
        samples: npt.NDArray[np.float64],
        nows: npt.NDArray[np.float64],
        i: int,
        out: list[AlarmEvent],
        batch: Batch,
        shift: int,
    ) -> None:
        """Rows ``i`` on of the arrays (``batch``'s message ``k + shift`` is row ``k``)."""
        n = len(beds)
        lanes = self._lanes
        monitors = lanes.monitors
        slots = self._slots(beds, i)
        stop = lanes.stop
        while i < n:
            batch.taken = i + shift
            lanes.epoch += 1
            k = _kernels.step_chunks(
                samples,
                ends,
                t0,
                fs,
                slots,
                i,
                lanes.table,
                lanes.armed,
                lanes.last_ts,
                lanes.last_i,
                lanes.mark,
                lanes.touched,
                lanes.epoch,
                self._counts,
                self._lim,
                stop,
            )
            code = int(stop[state.STOP_CODE]) if k < n else _kernels.STEP_DONE
            end = k if code == _kernels.CHUNK_REFUSED else min(k + 1, n)  # taken: [i, end)
            if end > i:
                self._stats.messages += end - i
                self._advance(float(nows[i:end].max()))
                touched = lanes.touched[: stop[state.STOP_TOUCHED]]
                for s, now, ts in zip(
                    touched.tolist(),
                    nows[lanes.last_i[touched]].tolist(),
                    lanes.last_ts[touched].tolist(),
                    strict=True,
                ):
                    monitors[s].chunks_taken(now, ts)
            if k == n:
                break
            batch.taken = k + shift
            s = int(slots[k])
            if code == _kernels.CHUNK_REFUSED:
                a = int(ends[k - 1]) if k else 0
                chunk = AbpChunk(float(t0[k]), float(fs[k]), samples[a : ends[k]].copy())
                evicted = self._stats.beds_evicted
                out.extend(self._take(beds[k], chunk, float(nows[k])))
                if self._stats.beds_evicted != evicted:
                    self._forget_slots(beds, slots, k + 1)
            else:
                mon = lanes.monitor(s)
                out.extend(mon.finish_chunk(float(t0[k]), float(lanes.last_ts[s]), code))
            if s < 0:  # a new bed's first chunk: its monitor now exists, its next go here
                bed = beds[k]
                made = self._beds.get(bed)
                if made is not None:
                    s = lanes.slot(bed, made)
                    for j in range(k + 1, n):
                        if beds[j] == bed:
                            slots[j] = s
            if s >= 0:
                lanes.arm(s)
            i = k + 1

    def _slots(self, beds: Sequence[BedId], i: int) -> npt.NDArray[np.int64]:
        """Each bed's slot from row ``i`` on, armed if its monitor changed (-1: a new bed,
        ``_take`` makes its monitor)."""
        lanes = self._lanes
        slot_of, monitors, versions = lanes.slot_of, lanes.monitors, lanes.versions
        slots = np.full(len(beds), -1, np.int64)
        for k in range(i, len(beds)):
            bed = beds[k]
            s = slot_of.get(bed)
            if s is None:
                mon = self._beds.get(bed)
                if mon is None:
                    continue
                s = lanes.slot(bed, mon)
            if monitors[s].version != versions[s]:  # type: ignore[union-attr]
                lanes.arm(s)  # (a slot in ``slot_of`` has its monitor)
            slots[k] = s
        return slots

    def _forget_slots(self, beds: Sequence[BedId], slots: npt.NDArray[np.int64], i: int) -> None:
        """After an eviction in ``_step_chunks``: the chunks from ``i`` on of a bed no
        longer in its slot (evicted; the slot freed, maybe given to another bed) take
        the ordinary way (-1), never another bed's slot."""
        monitors = self._lanes.monitors
        for j in range(i, len(beds)):
            s = int(slots[j])
            if s >= 0 and monitors[s] is not self._beds.get(beds[j]):
                slots[j] = -1

    def tick(self, now: float) -> list[AlarmEvent]:
        """Time passes on every bed (staleness, re-announcements, standing NIBP)."""
        self._advance(now)
        out: list[AlarmEvent] = []
        counts: dict[Priority, int] = {}
        for mon in list(self._beds.values()):
            events = mon.tick(now)
            if events:
                out.extend(events)
            if mon.alarms:
                _count_open(mon, counts)
        self.open_alarms = counts
        return self._take_evicted(out)

    def tick_slices(self, now: float, size: int = 256) -> Iterator[list[AlarmEvent]]:
        """:meth:`tick` in slices of ``size`` beds, for a caller that must stay responsive.

        The same transitions as ``tick(now)``, in the same order, split so that
        an I/O loop can take other work between slices (at 5,000 beds one
        ``tick`` holds the loop for tens of milliseconds). Beds added while
        the slices are taken are ticked at the next call; a bed evicted while
        they are taken is not ticked (nothing is raised for a bed that is gone,
        nor for the monitor it had if it came back meanwhile).
        """
        if size < 1:
            raise ValueError(f"size must be at least 1, got {size}")
        self._advance(now)
        beds = self._beds
        monitors = list(beds.values())
        counts: dict[Priority, int] = {}
        for i in range(0, max(len(monitors), 1), size):  # one (empty) slice with no beds
            out: list[AlarmEvent] = []
            for mon in monitors[i : i + size]:
                if beds.get(mon.bed) is not mon:
                    continue  # evicted between two slices
                out.extend(mon.tick(now))
                if mon.alarms:
                    _count_open(mon, counts)
            yield self._take_evicted(out)
        self.open_alarms = counts

    def count_open_alarms(self) -> dict[Priority, int]:
        """Open alarms per priority now, counted bed by bed (``open_alarms`` is the
        count the last tick made on its way)."""
        counts: dict[Priority, int] = {}
        for mon in self._beds.values():
            if mon.alarms:
                _count_open(mon, counts)
        return counts

    def _advance(self, now: float) -> None:
        if self.now is None or now > self.now:
            self.now = now

    def restore(
        self,
        events: Iterable[AlarmEvent],
        now: float | None = None,
        *,
        activity: Mapping[BedId, BedActivity] | None = None,
    ) -> int:
        """Adopt what the last run knew before a restart; returns how many open alarms.

        ``events`` are the last transition of each alarm (the retained topics).
        An open alarm is adopted with its id, state and timers (``now`` is the
        processor's time; see :meth:`Alarm.restore`: an acknowledgement's
        silence and the re-announcement go on from the last run's times). A
        cleared one only teaches the bed's alarm-id numbers: a context message
        the broker re-delivers after the restart (a retained infusion, same data
        time) may raise its kind again, and that new episode must not get the
        id of the one already cleared.

        ``activity`` is each bed's last data time before the restart (the
        processor's clock, see :class:`BedActivity`), so that a bed that never
        sends again goes ``data_stale`` ``stale_s`` after its last data, as it
        would have without the restart. On the processor's clock only (not with
        ``data_clock``) and with ``now``: every bed with an open alarm gets its
        time, or ``now`` when none is known (it then goes stale ``stale_s``
        after the restart at the latest); the other beds listed get a monitor
        too, the most recent first, while there is room under ``max_beds``.
        """
        if now is not None:
            self._advance(now)
        n = 0
        events = list(events)
        for ev in events:
            if ev.state.value == "cleared":
                self._retire_id(ev)
                continue
            self.monitor(ev.bed).restore(Alarm.restore(ev, now))
            n += 1
        if now is None or self.data_clock:
            return n
        known = activity or {}
        for bed, mon in self._beds.items():
            if mon.alarms:
                act = known.get(bed) or BedActivity(now)
                mon.restore_last_data(act.last_data, nibp_only=act.nibp_only, now=now)
        for bed, act in sorted(known.items(), key=lambda item: -item[1].last_data):
            if bed in self._beds:
                continue
            if len(self._beds) >= self.max_beds:
                break
            self.monitor(bed).restore_last_data(act.last_data, nibp_only=act.nibp_only, now=now)
        # (after the last data times: a floor of a bed with no monitor yet makes one)
        for bed, floor in _data_floors(events, known).items():
            if bed in self._beds or len(self._beds) < self.max_beds:
                self.restore_data_time(bed, floor)
        return n

    def restore_data_time(self, bed: BedId, ts: float) -> None:
        """After a restart: the last run took ``bed``'s data up to data time ``ts``
        (:meth:`BedMonitor.restore_data_time`: re-delivered older data is dropped)."""
        self.monitor(bed).restore_data_time(ts)

    def _retire_id(self, ev: AlarmEvent) -> None:
        """Never issue ``ev``'s alarm id (a cleared episode's) for the bed again."""
        number = alarm_id_number(ev.alarm_id)
        if number is None:
            return  # not an id this engine makes: it cannot collide
        mon = self._beds.get(ev.bed)
        if mon is not None:
            mon.adopt_id_numbers({ev.kind: number})
        else:
            self._retire_ids(ev.bed, {ev.kind: number})

    def _retire_ids(self, bed: BedId, numbers: dict[str, int]) -> None:
        """Keep ``bed``'s last id numbers while it has no monitor (at most ``max_beds`` beds)."""
        if not numbers:
            return
        retired = self._retired_ids.setdefault(bed, {})
        for kind, number in numbers.items():
            retired[kind] = max(retired.get(kind, -1), number)
        forgotten = self._forgotten_ids
        while len(self._retired_ids) > self.max_beds:
            for kind, number in self._retired_ids.popitem(last=False)[1].items():
                forgotten[kind] = max(forgotten.get(kind, -1), number)

    def status(self) -> list[BedStatus]:
        return [mon.status() for mon in self._beds.values()]
