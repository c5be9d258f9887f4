"""Bed summaries (latest pressures, target, drugs, trend): display data, QoS 0, retained,
built in slices and spread over the period so that they never delay an alarm."""

from __future__ import annotations

import asyncio
from typing import Final

from streamproc.core.engine import Engine
from streamproc.core.monitor import BedMonitor
from streamproc.core.protocol.messages import BedId
from streamproc.shell.service.queues import Queues
from streamproc.wire.outbound import encode_summary
from streamproc.wire.topics import summary_topic

__all__ = ["SUMMARY_SLICE_BEDS", "SUMMARY_STEP_S", "Summaries"]

#: Beds whose summaries are built between two turns of the event loop.
SUMMARY_SLICE_BEDS: Final = 25
#: Summaries go out in shares, one every this many seconds (each bed every summary_s).
SUMMARY_STEP_S: Final = 0.1


class Summaries:
    """What each bed's retained summary last showed, and the summaries to send."""

    def __init__(
        self, engine: Engine, queues: Queues, root: str, connected: asyncio.Event, every: float
    ) -> None:
        self.engine = engine
        self.queues = queues
        self.root = root
        self.connected = connected
        self.every = every
        #: Per bed whose summary is (or may be) retained on the broker: what it last showed.
        self.shown: dict[BedId, tuple[object, ...]] = {}

    def queue(self, mon: BedMonitor) -> None:
        """Put the bed's summary in the summary box if it changed since the last one."""
        st = mon.status()
        key = (
            st.ts,
            st.open_alarms,
            st.infusions,
            st.target,
            len(st.trend),
            st.last_data,
            st.nibp_only,
        )
        if self.shown.get(st.bed) == key:
            return
        self.shown[st.bed] = key
        topic = summary_topic(self.root, st.bed)
        box = self.queues.summary_box
        box.pop(topic, None)
        box[topic] = encode_summary(st)  # only the latest per bed waits

    def forget(self, bed: BedId) -> str | None:
        """The bed is gone: its retained summary topic to empty (None: it has none)."""
        if self.shown.pop(bed, None) is None:
            return None
        topic = summary_topic(self.root, bed)
        self.queues.summary_box.pop(topic, None)
        return topic

    async def publish(self, part: int = 0, parts: int = 1) -> None:
        """Summaries of every ``parts``-th bed from ``part`` on, of those whose summary
        changed.

        In slices of ``SUMMARY_SLICE_BEDS`` beds with the loop free in between: at
        thousands of beds building every summary at once held the loop long
        enough to delay alarms by a quarter of a second.
        """
        engine = self.engine
        queues = self.queues
        monitors = list(engine.beds())[part::parts]
        for i in range(0, len(monitors), SUMMARY_SLICE_BEDS):
            for mon in monitors[i : i + SUMMARY_SLICE_BEDS]:
                if engine.get(mon.bed) is mon:  # (else evicted since: its summary is gone)
                    self.queue(mon)
            queues.outbox_event.set()
            await queues.yield_to_ingress()

    def final(self) -> None:
        """On a graceful stop, every changed summary goes out before the offline status:
        the next run reads each bed's last data time from it (see :mod:`.restore`)."""
        if self.every > 0:
            for mon in self.engine.beds():
                self.queue(mon)

    async def loop(self) -> None:
        """Each bed's summary every ``summary_s``, in their own task: under load they wait
        for the core (``Queues.yield_to_ingress``), and ticks must not wait with them.

        Spread over the period (a share of the beds every ``SUMMARY_STEP_S``), not
        all at once: at 5,000 beds a pass every 2 s was a burst of 5,000 builds and
        retained publishes, for this loop and for the broker, and the alarms
        raised in those seconds came late (p99 2-7 ms slower than in the others).
        """
        every = self.every
        if every <= 0:
            return
        parts = max(1, round(every / SUMMARY_STEP_S))
        part = 0
        stopping = self.queues.stopping
        while not stopping.is_set():
            if self.connected.is_set():
                await self.publish(part, parts)
            part = (part + 1) % parts
            await self.queues.sleep(every / parts)
