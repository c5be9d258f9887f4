"""The queues between the service's parts and the events that wake their tasks.

A chunk runs one way through them: the socket's callback appends to ``ingress``
(:mod:`.ingress`), the core's decisions go to ``outbox`` (alarms, QoS 1, in order)
and ``summary_box`` (display data, QoS 0), and the publisher (:mod:`.outbox`)
writes them to the transport.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import OrderedDict, deque
from dataclasses import dataclass
from typing import Final, NamedTuple

from streamproc.shell.service.clock import Clock

__all__ = ["SUMMARY_YIELD_MAX_S", "Arrived", "Outgoing", "Queues"]

#: Longest display work (a summary step, a summary burst) waits for the ingress to empty (s).
SUMMARY_YIELD_MAX_S: Final = 1.0


@dataclass(slots=True)
class Arrived:
    """An inbound message waiting in the ingress for the core."""

    topic: str
    payload: bytes
    arrived: float
    #: packet id to acknowledge once processed and durable (0: QoS 0, nothing to ack)
    mid: int = 0
    #: the connection it came on (a packet id means nothing on another connection)
    conn: int = 0


class Outgoing(NamedTuple):
    """A message waiting in the outbox. ``seq``: the alarm transition it carries (0: none)."""

    topic: str
    payload: bytes
    retain: bool
    seq: int = 0


class Queues:
    """The ingress, the outbox, the summary box and the events of the service's tasks."""

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.ingress: deque[Arrived] = deque()
        self.ingress_event = asyncio.Event()
        self.outbox: deque[Outgoing] = deque()
        #: topic -> payload: only the latest summary per bed waits
        self.summary_box: OrderedDict[str, bytes] = OrderedDict()
        self.outbox_event = asyncio.Event()
        #: set when the ingress empties, an alarm is queued, or on stop
        self.yield_wake = asyncio.Event()
        self.stopping = asyncio.Event()
        #: the core has taken the last of the ingress after the stop began
        self.drained = False

    def stop(self) -> None:
        self.stopping.set()
        self.ingress_event.set()
        self.outbox_event.set()
        self.yield_wake.set()

    async def sleep(self, seconds: float) -> None:
        """Sleep, or less if the service is stopped meanwhile."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                await self.stopping.wait()

    async def yield_to_ingress(self, *, alarms_first: bool = False) -> None:
        """Let the core take what is waiting before display work (summaries) runs.

        Summaries are bulk work (at 5,000 beds, 2,500 a second); done while chunks
        wait, they delayed the alarms those chunks would raise. They wait for an
        empty ingress, at most ``SUMMARY_YIELD_MAX_S`` (an overloaded service still
        refreshes its displays, more slowly). ``alarms_first``: the publisher stops
        waiting as soon as an alarm is queued (it goes out before any summary).
        """
        await asyncio.sleep(0)
        mono = self.clock.mono
        deadline = mono() + SUMMARY_YIELD_MAX_S
        wake = self.yield_wake
        while self.ingress and not (alarms_first and self.outbox) and not self.stopping.is_set():
            left = deadline - mono()
            if left <= 0:
                return
            wake.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(left):
                    await wake.wait()
