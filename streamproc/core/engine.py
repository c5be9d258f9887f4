"""The engine: every bed's monitor behind one feed-in, events-out interface.

Sans-I/O after ``h11._connection``: the caller (the live service, ``replay``,
``evaluate``, a test) hands in typed messages with the time they arrived and
gets back the alarm transitions to publish. Nothing here reads a clock, a
socket or a file, so the live service and a replay run exactly the same code.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from streamproc.core import _kernels
from streamproc.core.alarms import Alarm, AlarmEvent, Priority, Trigger
from streamproc.core.lanes import Lanes
from streamproc.core.messages import (
    MAX_SAMPLES_PER_CHUNK,
    PRESSURE_LIMITS,
    TS_LIMITS,
    AbpChunk,
    Ack,
    BedId,
    Message,
)
from streamproc.core.monitor import BedMonitor, BedStatus, alarm_id_number, warm_up
from streamproc.core.ordering import DropNotice, Drops
from streamproc.core.settings import Settings

__all__ = ["BED_EVICTED", "Engine", "EngineStats"]

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
    #: Messages not taken, by reason (``streamproc.core.ordering.DropReason``: a
    #: ``duplicate`` of data taken, ``late`` data older than what was taken).
    dropped: dict[str, int] = field(default_factory=dict)


def _count_open(mon: BedMonitor, counts: dict[Priority, int]) -> None:
    for alarm in mon.alarms.values():
        if alarm.open:
            counts[alarm.priority] = counts.get(alarm.priority, 0) + 1


class Engine:
    """All beds. ``receive`` and ``tick`` return what to publish, in order."""

    def __init__(
        self, settings: Settings | None = None, *, max_beds: int = 10_000, data_clock: bool = False
    ) -> None:
        self.settings = settings or Settings()
        warm_up()  # compile the detector's loops now, not on the first chunk
        self.max_beds = max_beds
        self.data_clock = data_clock
        self._beds: dict[BedId, BedMonitor] = {}
        #: Messages dropped by the beds' data-time rules (``streamproc.core.ordering``).
        self._drops = Drops()
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
        ``tick``, so that no bed nobody monitors keeps an active state retained.
        """

        def idle(item: tuple[BedId, BedMonitor]) -> tuple[bool, float]:
            mon = item[1]
            return (bool(mon.alarms), mon.last_data_now or float("-inf"))

        victim, mon = min(self._beds.items(), key=idle)
        del self._beds[victim]
        self._lanes.release(victim)
        self._stats.beds_evicted += 1
        self._retire_ids(victim, mon.id_numbers())
        if mon.alarms:
            self._close_evicted(mon)

    def _close_evicted(self, mon: BedMonitor) -> None:
        now = self.now if self.now is not None else mon.now
        if mon.obs_ts is not None:
            now = max(now, mon.obs_ts)
        note = (
            f"Closed, NOT resolved: the processor reached its limit of {self.max_beds} beds "
            "and stopped monitoring this one (the bed silent longest). Check the patient "
            "and the monitor's connection."
        )
        for alarm in list(mon.alarms.values()):
            if alarm.open:
                self._evicted.append(
                    alarm.apply(
                        Trigger.CLEAR,
                        max(now, alarm.last_announce),
                        details={"clear_reason": BED_EVICTED, "clear_note": note},
                        at=None if self.data_clock else now,
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
                out.extend(self.receive(beds[k], chunk, float(nows[k])))
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
        the slices are taken are ticked at the next call.
        """
        if size < 1:
            raise ValueError(f"size must be at least 1, got {size}")
        self._advance(now)
        monitors = list(self._beds.values())
        counts: dict[Priority, int] = {}
        for i in range(0, max(len(monitors), 1), size):  # one (empty) slice with no beds
            out: list[AlarmEvent] = []
            for mon in monitors[i : i + size]:
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

    def restore(self, events: Iterable[AlarmEvent], now: float | None = None) -> int:
        """Adopt the alarms last published before a restart; returns how many open ones.

        ``events`` are the last transition of each alarm (the retained topics).
        An open alarm is adopted (``now`` is the processor's time: its
        re-announcement timer restarts from it). A cleared one only teaches the
        bed's alarm-id numbers: a context message the broker re-delivers after the
        restart (a retained infusion, same data time) may raise its kind again,
        and that new episode must not get the id of the one already cleared.
        """
        if now is not None:
            self._advance(now)
        n = 0
        for ev in events:
            if ev.state.value == "cleared":
                self._retire_id(ev)
                continue
            self.monitor(ev.bed).restore(Alarm.restore(ev, now))
            n += 1
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
