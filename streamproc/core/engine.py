"""The engine: every bed's monitor behind one feed-in, events-out interface.

Sans-I/O after ``h11._connection``: the caller (the live service, ``replay``,
``evaluate``, a test) hands in typed messages with the time they arrived and
gets back the alarm transitions to publish. Nothing here reads a clock, a
socket or a file, so the live service and a replay run exactly the same code.
"""

from __future__ import annotations

import heapq
from collections import OrderedDict
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Final

import numpy as np
import numpy.typing as npt

from streamproc.core.monitor import (
    BedMonitor,
    BedStatus,
    alarm_id_number,
    warm_up,
)
from streamproc.core.protocol import rules
from streamproc.core.protocol.alarms import HYPOTENSION, Alarm, AlarmEvent, Priority, Trigger
from streamproc.core.protocol.messages import (
    MAX_SAMPLES_PER_CHUNK,
    PRESSURE_LIMITS,
    TS_LIMITS,
    AbpChunk,
    Ack,
    BedId,
    Message,
)
from streamproc.core.protocol.settings import Settings
from streamproc.core.signal import _kernels
from streamproc.core.signal.lanes import Lanes
from streamproc.core.signal.ordering import DropNotice, Drops

__all__ = ["BED_EVICTED", "BedActivity", "Engine", "EngineStats"]

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


def _count_open(mon: BedMonitor, counts: dict[Priority, int]) -> None:
    for alarm in mon.alarms.values():
        if alarm.open:
            counts[alarm.priority] = counts.get(alarm.priority, 0) + 1


class Engine:
    """All beds. ``receive`` and ``tick`` return what to publish, in order."""

    def __init__(
        self,
        settings: Settings | None = None,
        *,
        max_beds: int = 10_000,
        data_clock: bool = False,
        report_evictions: bool = False,
    ) -> None:
        self.settings = settings or Settings()
        warm_up()  # compile the detector's loops now, not on the first chunk
        self.max_beds = max_beds
        self.data_clock = data_clock
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
        #: Open alarms per priority after the last complete tick (counted by the tick
        #: as it visits every bed: a separate count of 5,000 beds held a loop 4 ms).
        self.open_alarms: dict[Priority, int] = {}
        #: The beds' slots for ``receive_chunks`` (``_kernels.step_chunks``).
        self._lanes = Lanes()
        lim = np.empty(_kernels.LIM_SIZE, np.float64)
        lim[_kernels.LIM_T0_LO], lim[_kernels.LIM_T0_HI] = TS_LIMITS
        lim[_kernels.LIM_X_LO], lim[_kernels.LIM_X_HI] = PRESSURE_LIMITS
        lim[_kernels.LIM_MAX_N] = MAX_SAMPLES_PER_CHUNK
        lim[_kernels.LIM_STALE_S] = self.settings.monitor.stale_s
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
                data_clock=self.data_clock,
                counts=self._counts,
                drops=self._drops,
            )
            retired = self._retired_ids.pop(bed, None)
            if retired is not None:
                mon.adopt_id_numbers(retired)
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

    def receive(self, bed: BedId, msg: Message, now: float) -> list[AlarmEvent]:
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

    def receive_chunks(
        self,
        beds: Sequence[BedId],
        *,
        t0: npt.NDArray[np.float64],
        fs: npt.NDArray[np.float64],
        ends: npt.NDArray[np.int64],
        samples: npt.NDArray[np.float64],
        nows: npt.NDArray[np.float64],
    ) -> list[AlarmEvent]:
        """Many beds' ``abp`` chunks at once, e.g. a replay's lines between two ticks.

        The same as, for each ``i`` in order, ``receive(beds[i], AbpChunk(t0[i],
        fs[i], samples[ends[i - 1]:ends[i]]), nows[i])`` (from 0 for the first):
        the same transitions in the same order, the same state after (``samples``
        is read, never kept: the caller may reuse it). The chunks
        a bed's monitor takes with nothing to decide (nearly all) are taken by one
        compiled call (``_kernels.step_chunks``); it stops at any other, which
        takes the ordinary way, and goes on after it.

        Raises:
            InvalidMessageError: for the first chunk ``AbpChunk`` refuses (the
                chunks before it are taken).
            ValueError: the arrays do not describe chunks (lengths that differ,
                ``ends`` falling or past the samples); nothing is taken.
        """
        n = len(beds)
        if not (t0.size == fs.size == ends.size == nows.size == n):
            raise ValueError(
                f"beds, t0, fs, ends and nows must have one entry per chunk: {n}, "
                f"{t0.size}, {fs.size}, {ends.size}, {nows.size}"
            )
        if n and (
            int(ends[0]) < 0 or int(ends[-1]) > samples.size or bool((ends[1:] < ends[:-1]).any())
        ):
            raise ValueError(
                f"ends must rise from 0 to at most samples.size ({samples.size}): "
                f"got {ends.tolist()[:20]}"
            )
        lanes = self._lanes
        slot_of, monitors, versions = lanes.slot_of, lanes.monitors, lanes.versions
        slots = np.empty(n, np.int64)
        for i, bed in enumerate(beds):
            s = slot_of.get(bed)
            if s is None:
                mon = self._beds.get(bed)
                if mon is None:
                    slots[i] = -1  # a new bed: ``receive`` makes its monitor
                    continue
                s = lanes.slot(bed, mon)
            if monitors[s].version != versions[s]:  # type: ignore[union-attr]
                lanes.arm(s)  # (a slot in ``slot_of`` has its monitor)
            slots[i] = s
        out: list[AlarmEvent] = []
        stop = lanes.stop
        i = 0
        while i < n:
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
            code = int(stop[_kernels.STOP_CODE]) if k < n else _kernels.STEP_DONE
            end = k if code == _kernels.CHUNK_REFUSED else min(k + 1, n)  # taken: [i, end)
            if end > i:
                self._stats.messages += end - i
                self._advance(float(nows[i:end].max()))
                touched = lanes.touched[: stop[_kernels.STOP_TOUCHED]]
                for s, now, ts in zip(
                    touched.tolist(),
                    nows[lanes.last_i[touched]].tolist(),
                    lanes.last_ts[touched].tolist(),
                    strict=True,
                ):
                    monitors[s].chunks_taken(now, ts)
            if k == n:
                break
            s = int(slots[k])
            if code == _kernels.CHUNK_REFUSED:
                a = int(ends[k - 1]) if k else 0
                chunk = AbpChunk(float(t0[k]), float(fs[k]), samples[a : ends[k]].copy())
                evicted = self._stats.beds_evicted
                out.extend(self.receive(beds[k], chunk, float(nows[k])))
                if self._stats.beds_evicted != evicted:
                    self._forget_slots(beds, slots, k + 1)
            else:
                mon = lanes.monitor(s)
                out.extend(mon.finish_chunk(float(t0[k]), float(lanes.last_ts[s]), code))
            if s < 0:  # a new bed's first chunk: its monitor now exists, its next go here
                bed = beds[k]
                mon = self._beds.get(bed)
                if mon is not None:
                    s = lanes.slot(bed, mon)
                    for j in range(k + 1, n):
                        if beds[j] == bed:
                            slots[j] = s
            if s >= 0:
                lanes.arm(s)
            i = k + 1
        return out

    def _forget_slots(self, beds: Sequence[BedId], slots: npt.NDArray[np.int64], i: int) -> None:
        """After an eviction in ``receive_chunks``: the chunks from ``i`` on of a bed no
        longer in its slot (evicted; the slot freed, maybe given to another bed) take
        the ordinary way (-1), never another bed's slot."""
        monitors = self._lanes.monitors
        for j in range(i, len(beds)):
            s = int(slots[j])
            if s >= 0 and monitors[s] is not self._beds.get(beds[j]):
                slots[j] = -1

    def receive_many(self, items: Iterable[tuple[BedId, Message, float]]) -> list[AlarmEvent]:
        """A batch, e.g. what arrived within one tick; same result as one at a time."""
        out: list[AlarmEvent] = []
        for bed, msg, now in items:
            out.extend(self.receive(bed, msg, now))
        return out

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
        while len(self._retired_ids) > self.max_beds:
            self._retired_ids.popitem(last=False)

    def status(self) -> list[BedStatus]:
        return [mon.status() for mon in self._beds.values()]
