"""The engine: every bed's monitor behind one feed-in, events-out interface.

Sans-I/O after ``h11._connection``: the caller (the live service, ``replay``,
``evaluate``, a test) hands in typed messages with the time they arrived and
gets back the alarm transitions to publish. Nothing here reads a clock, a
socket or a file, so the live service and a replay run exactly the same code.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from streamproc.core.alarms import Alarm, AlarmEvent
from streamproc.core.messages import Ack, BedId, Message
from streamproc.core.monitor import BedMonitor, BedStatus
from streamproc.core.settings import Settings

__all__ = ["Engine", "EngineStats"]


@dataclass(slots=True)
class EngineStats:
    """Counters the shell exports as metrics."""

    messages: int = 0
    beats: int = 0
    beats_valid: int = 0
    acks_unknown: int = 0
    beds_evicted: int = 0


class Engine:
    """All beds. ``receive`` and ``tick`` return what to publish, in order."""

    def __init__(
        self, settings: Settings | None = None, *, max_beds: int = 10_000, data_clock: bool = False
    ) -> None:
        self.settings = settings or Settings()
        self.max_beds = max_beds
        self.data_clock = data_clock
        self._beds: dict[BedId, BedMonitor] = {}
        self.stats = EngineStats()
        self.now: float | None = None

    def __len__(self) -> int:
        return len(self._beds)

    def monitor(self, bed: BedId) -> BedMonitor:
        """The bed's monitor, created on first sight (oldest idle bed evicted past the cap)."""
        mon = self._beds.get(bed)
        if mon is None:
            if len(self._beds) >= self.max_beds:
                self._evict()
            mon = self._beds[bed] = BedMonitor(bed, self.settings, data_clock=self.data_clock)
        return mon

    def _evict(self) -> None:
        """Drop the bed silent for longest that has no open alarm (or the oldest at all)."""

        def idle(item: tuple[BedId, BedMonitor]) -> tuple[bool, float]:
            mon = item[1]
            return (bool(mon.alarms), mon.last_data_now or float("-inf"))

        victim = min(self._beds.items(), key=idle)[0]
        del self._beds[victim]
        self.stats.beds_evicted += 1

    def beds(self) -> Iterator[BedMonitor]:
        return iter(self._beds.values())

    def receive(self, bed: BedId, msg: Message, now: float) -> list[AlarmEvent]:
        """One message for ``bed`` that arrived at ``now``; returns the transitions."""
        self.stats.messages += 1
        self._advance(now)
        if isinstance(msg, Ack):
            mon = self._beds.get(bed)
            if mon is None or not mon.knows_alarm(msg.alarm_id):
                self.stats.acks_unknown += 1
                return []
        else:
            mon = self.monitor(bed)
        before = mon.beats_total, mon.beats_valid
        out = mon.receive(msg, now)
        self.stats.beats += mon.beats_total - before[0]
        self.stats.beats_valid += mon.beats_valid - before[1]
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
        for mon in self._beds.values():
            out.extend(mon.tick(now))
        return out

    def _advance(self, now: float) -> None:
        if self.now is None or now > self.now:
            self.now = now

    def restore(self, events: Iterable[AlarmEvent], now: float | None = None) -> int:
        """Adopt the open alarms last published before a restart; returns how many.

        ``now`` is the processor's time (their re-announcement timers restart from it).
        """
        n = 0
        for ev in events:
            if ev.state.value == "cleared":
                continue
            self.monitor(ev.bed).restore(Alarm.restore(ev, now))
            n += 1
        return n

    def status(self) -> list[BedStatus]:
        return [mon.status() for mon in self._beds.values()]
