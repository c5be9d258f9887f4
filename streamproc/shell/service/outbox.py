"""The outbox: the core's alarm transitions, in order, QoS 1 and retained, published in
windows (each confirmed by its PUBACK, which makes it durable); bed summaries after
them, QoS 0. Nothing decided is lost while the broker is away: it waits here (bounded)
and in the audit log, and goes out in order after the reconnect."""

from __future__ import annotations

import asyncio
from typing import Final

from streamproc.core.engine import Engine
from streamproc.core.protocol.alarms import AlarmEvent
from streamproc.core.protocol.messages import BedId
from streamproc.shell.logs import get_logger
from streamproc.shell.metrics import ServiceMetrics
from streamproc.shell.service.audit_link import AuditLink
from streamproc.shell.service.broker import MqttConnection, wait_puback
from streamproc.shell.service.ledger import AckLedger
from streamproc.shell.service.queues import Outgoing, Queues
from streamproc.shell.service.summaries import Summaries
from streamproc.shell.transport_paho import PublishRefusedError
from streamproc.wire.outbound import encode_alarm
from streamproc.wire.topics import alarm_topic

__all__ = ["PUBLISH_WINDOW", "SUMMARY_BURST", "Outbox"]

log = get_logger("streamproc.shell.service")

#: Alarms in flight at once (each confirmed by its PUBACK); below Mosquitto's
#: and paho's default in-flight limit (20), so none waits in paho's queue.
PUBLISH_WINDOW: Final = 16
#: Most bed summaries published between two looks at the alarm outbox and the ingress.
SUMMARY_BURST: Final = 20


class Outbox:
    """What goes out to the broker, and each alarm topic's last state."""

    def __init__(
        self,
        queues: Queues,
        metrics: ServiceMetrics,
        *,
        ledger: AckLedger,
        audit: AuditLink,
        summaries: Summaries,
        engine: Engine,
        root: str,
        queue_max: int,
    ) -> None:
        self.queues = queues
        self.queue = queues.outbox
        self.metrics = metrics
        self.ledger = ledger
        self.audit = audit
        self.summaries = summaries
        self.engine = engine
        self.root = root
        self.queue_max = queue_max
        #: Per bed, the last state enqueued per alarm topic: republished after a reconnect
        #: so that a broker that lost its retained store (crash before autosave) has it
        #: back, and emptied on the broker when the bed is evicted. Every per-bed cache
        #: is pruned when the engine evicts the bed (:meth:`take`).
        self.retained: dict[BedId, dict[str, bytes]] = {}
        self.dropped = 0

    # ------------------------------------------------------------------ queueing
    def append(self, item: Outgoing) -> None:
        """Queue for publishing; past ``queue_max`` the oldest entry gives way (counted).

        A transition that gives way is still in the audit log, and its topic's
        latest state is republished after the reconnect, so subscribers lose
        intermediate steps, never the current state.
        """
        queue = self.queue
        if len(queue) >= self.queue_max:
            self.ledger.give_up(queue.popleft().seq, audited=self.audit.healthy)
            self.dropped += 1
            self.metrics.publish_dropped_total.inc()
            if self.dropped % 1000 == 1:
                log.warning("outbox_full", depth=len(queue), dropped=self.dropped)
        queue.append(item)

    def enqueue_alarm(self, ev: AlarmEvent, seq: int = 0) -> None:
        """Queue an alarm transition (``seq``: its number, 0 for one already durable)."""
        topic, payload = alarm_topic(self.root, ev.bed, ev.kind), encode_alarm(ev)
        topics = self.retained.get(ev.bed)
        if topics is None:
            topics = self.retained[ev.bed] = {}
        topics[topic] = payload
        self.append(Outgoing(topic, payload, retain=True, seq=seq))
        self.metrics.observe_alarm(ev)
        self.queues.outbox_event.set()
        self.queues.yield_wake.set()  # a publisher waiting for the core goes now (alarms first)

    def take(self, events: list[AlarmEvent]) -> None:
        """What one engine call decided: its transitions queued, then its evicted beds
        forgotten."""
        if events:
            ledger = self.ledger
            for ev in events:
                self.enqueue_alarm(ev, ledger.numbered(ev))
            self.metrics.publish_queue_depth.set(len(self.queue))
            self.audit.later(events)
        self._forget_evicted()

    def _forget_evicted(self) -> None:
        """Drop what this service holds for each bed the engine evicted, on the broker too.

        Called after the transitions of the same engine call are queued (the engine
        lists a bed once the ``cleared`` transitions closing its alarms have been
        returned), so each of the bed's retained alarm topics gets its closing state
        and then an empty retained message (MQTT's way to delete a retained message),
        in order, QoS 1; its retained summary is emptied the same way (a summary still
        waiting to go out is dropped first). A bed that came back since (new data, a
        new monitor) keeps its topics and caches: its own transitions follow.
        """
        engine = self.engine
        evicted = engine.take_evicted_beds()
        if not evicted:
            return
        cleared = 0
        for bed in evicted:
            if engine.get(bed) is not None:
                continue
            for topic in self.retained.pop(bed, {}):
                self.append(Outgoing(topic, b"", retain=True))
                cleared += 1
            summary = self.summaries.forget(bed)
            if summary is not None:
                self.append(Outgoing(summary, b"", retain=True))
                cleared += 1
        if cleared:
            self.metrics.publish_queue_depth.set(len(self.queue))
            self.queues.outbox_event.set()

    def republish_retained(self) -> None:
        """Put every alarm topic's last state in front of the outbox (idempotent)."""
        pending = {item.topic for item in self.queue}
        again = [
            Outgoing(t, p, retain=True)
            for topics in self.retained.values()
            for t, p in topics.items()
            if t not in pending
        ]
        self.queue.extendleft(reversed(again))
        if again:
            log.info("republishing_alarm_state", topics=len(again))
            self.queues.outbox_event.set()

    # ------------------------------------------------------------------ publishing
    async def publish_loop(self, conn: MqttConnection) -> None:
        """Alarms first, in order, QoS 1 (each confirmed); then bed summaries, QoS 0.

        Summaries are display data, replaced every few seconds: they never wait
        for a PUBACK and never delay an alarm; a burst of them goes out in one
        loop turn's write.
        """
        queues = self.queues
        outbox = self.queue
        summaries = queues.summary_box
        while True:
            while outbox or summaries:
                while outbox:
                    await self._publish_window(conn)
                if summaries:
                    await queues.yield_to_ingress(alarms_first=True)
                for _ in range(min(len(summaries), SUMMARY_BURST)):
                    if outbox:
                        break  # an alarm came in meanwhile: it goes first
                    topic, payload = summaries.popitem(last=False)
                    conn.publish(topic, payload, qos=0, retain=True)
                await asyncio.sleep(0)
            if queues.stopping.is_set() and not queues.ingress and queues.drained:
                return
            queues.outbox_event.clear()
            if outbox or summaries:
                continue
            await queues.outbox_event.wait()

    async def _publish_window(self, conn: MqttConnection) -> None:
        """Up to ``PUBLISH_WINDOW`` messages from the outbox's head, in flight together.

        All are written at once, in order (MQTT keeps one client's QoS 1
        messages in order), then each PUBACK is awaited: an alarm raised in
        the same batch as others no longer waits for their round trips. A
        PUBACK makes its transition durable, which may let the messages that
        caused it be acknowledged. Until confirmed they are not lost: whatever
        is unconfirmed when the connection fails goes back to the head of the
        outbox, in order, and is sent again after the reconnect (QoS 1: at
        least once).
        """
        outbox = self.queue
        ledger = self.ledger
        window = [outbox.popleft() for _ in range(min(len(outbox), PUBLISH_WINDOW))]
        done = 0
        try:
            sent = [
                conn.publish(item.topic, item.payload, qos=1, retain=item.retain) for item in window
            ]
            conn.flush()  # on the wire before this task first waits
            for item, puback in zip(window, sent, strict=True):
                try:
                    await wait_puback(conn, puback)
                except PublishRefusedError as exc:
                    self.metrics.publish_dropped_total.inc()
                    ledger.give_up(item.seq, audited=self.audit.healthy)
                    log.error(  # noqa: TRY400 - the broker's answer, not a bug: no traceback
                        "publish_refused",
                        topic=item.topic[:200],
                        code=exc.code,
                        reason=exc.reason,
                        action="the broker's ACL does not let this user publish there",
                    )
                else:
                    if item.seq:
                        ledger.undurable.pop(item.seq, None)
                done += 1
        finally:
            if done < len(window):
                outbox.extendleft(reversed(window[done:]))
            self.metrics.publish_queue_depth.set(len(outbox))
            if done:
                ledger.ack_ready()
