"""At-least-once: which alarm transitions are durable, and which inbound messages may
therefore be acknowledged to the broker.

A transition is durable once PUBACKed or written to the audit log. An inbound
message is acknowledged, in the order received, once every transition numbered up
to its processing is durable; one read on an earlier connection is left for the
broker to send again.
"""

from __future__ import annotations

from collections import deque

from streamproc.core.protocol.alarms import AlarmEvent
from streamproc.shell.service.broker import BrokerLink
from streamproc.shell.service.queues import Arrived, Queues

__all__ = ["AckLedger"]


class AckLedger:
    """The transitions not yet durable and the processed messages waiting for their ack."""

    def __init__(self, link: BrokerLink, queues: Queues) -> None:
        self.link = link
        self.queues = queues
        #: The last alarm transition numbered (each gets the next number, ``seq``).
        self.seq = 0
        #: Transitions not yet durable (neither PUBACKed nor in the audit log), by seq, in order.
        self.undurable: dict[int, AlarmEvent] = {}
        #: Processed inbound messages waiting for their ack: (seq they wait for, conn, mids)
        self.ack_wait: deque[tuple[int, int, list[int]]] = deque()
        #: Transitions given up for publishing (outbox full) that the audit did not take.
        self.undurable_dropped = 0
        self.acked = 0

    def numbered(self, ev: AlarmEvent) -> int:
        """Number a new transition; it is not durable until published or audited."""
        self.seq += 1
        self.undurable[self.seq] = ev
        return self.seq

    def give_up(self, seq: int, *, audited: bool) -> None:
        """A transition that will not be published: durable only if the audit has it."""
        gone = seq and self.undurable.pop(seq, None) is not None
        if gone and not audited:
            self.undurable_dropped += 1

    def credit(self, after: int, upto: int) -> None:
        """The transitions numbered in ``(after, upto]`` are in the audit log."""
        undurable = self.undurable
        if not undurable:
            return
        for seq in [s for s in undurable if after < s <= upto]:
            del undurable[seq]
        self.ack_ready()

    def unacked(self) -> int:
        return sum(len(mids) for _, _, mids in self.ack_wait)

    def processed(self, batch: list[Arrived]) -> None:
        """The core has taken ``batch``: acknowledge it once what it caused is durable."""
        wait = self.ack_wait
        conn_id: int = -1
        mids: list[int] | None = None
        for item in batch:
            if item.mid:
                if item.conn != conn_id or mids is None:
                    conn_id, mids = item.conn, []
                    wait.append((self.seq, conn_id, mids))
                mids.append(item.mid)
        if mids is not None:
            self.ack_ready()

    def ack_ready(self) -> None:
        """Acknowledge, in the order received, the processed messages whose transitions are
        all durable; those read on an earlier connection are left for the broker to resend."""
        wait = self.ack_wait
        if not wait:
            return
        # every transition numbered up to this one is durable
        durable = next(iter(self.undurable), self.seq + 1) - 1
        link = self.link
        conn, current = link.mqtt, link.conn_id
        n = 0
        while wait and wait[0][0] <= durable:
            _, conn_id, mids = wait.popleft()
            if conn is not None and conn_id == current:
                for mid in mids:
                    conn.ack(mid)
                n += len(mids)
        self.acked += n
        if self.queues.stopping.is_set() and conn is not None:
            conn.flush()
