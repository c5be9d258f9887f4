"""Ingress: messages off the socket into a bounded buffer; in batches, decoded and
handed to the core, whose decisions go to the outbox; each batch acknowledged to the
broker once what it caused is durable (:mod:`.ledger`)."""

from __future__ import annotations

import asyncio
import itertools
import math
from typing import Final

from streamproc.core.engine import Batch, Engine
from streamproc.core.protocol.alarms import AlarmEvent
from streamproc.core.protocol.messages import Ack, Message
from streamproc.shell.config import ConfigError, StreamprocConfig
from streamproc.shell.droplog import DropLog
from streamproc.shell.logs import get_logger
from streamproc.shell.metrics import ServiceMetrics
from streamproc.shell.service.broker import BrokerLink
from streamproc.shell.service.ledger import AckLedger
from streamproc.shell.service.outbox import Outbox
from streamproc.shell.service.queues import Arrived, Outgoing, Queues
from streamproc.shell.service.summaries import Summaries
from streamproc.shell.transport_paho import Inbound
from streamproc.wire.codec import CodecError, decode
from streamproc.wire.outbound import encode_dead_letter
from streamproc.wire.topics import parse_inbound

__all__ = ["BATCH_MAX", "LAG_WARN_EVERY_S", "LAG_WARN_S", "Ingress"]

log = get_logger("streamproc.shell.service")

#: Most inbound messages handed to the core in one pass (then the loop breathes).
BATCH_MAX: Final = 100
#: Data older than this when processed (s) means the service is falling behind: logged.
LAG_WARN_S: Final = 10.0
#: At most one falling_behind log line per this many seconds.
LAG_WARN_EVERY_S: Final = 30.0


def _check_clock(kind: str, msg: Message, arrived: float, max_future: float) -> None:
    """Refuse data stamped too far ahead of its arrival: a gateway clock error, not a patient."""
    ahead = msg.ts - arrived
    if ahead > max_future and not isinstance(msg, Ack):
        raise CodecError(
            kind,
            "ts",
            f"data time is {ahead:.0f} s ahead of the processor's clock (more than "
            f"service.max_future_s={max_future:g}): check the gateway's clock",
            code="clock_skew",
        )


class Ingress:
    """From the socket's callback to the core, one batch at a time."""

    def __init__(
        self,
        config: StreamprocConfig,
        queues: Queues,
        metrics: ServiceMetrics,
        *,
        link: BrokerLink,
        engine: Engine,
        outbox: Outbox,
        ledger: AckLedger,
        summaries: Summaries,
    ) -> None:
        svc = config.service
        dead = svc.dead_letter_topic
        if dead and (any(c in dead for c in "+#\0") or "//" in dead or dead.startswith("/")):
            raise ConfigError("service.dead_letter_topic", f"must be a plain topic, got {dead!r}")
        self.settings = svc
        self.queues = queues
        self.queue = queues.ingress
        self._now = queues.clock.wall
        self.metrics = metrics
        self.link = link
        self.engine = engine
        self.outbox = outbox
        self.ledger = ledger
        self.summaries = summaries
        self.processed = 0
        self.internal_errors = 0
        #: Messages that arrived after the stop began: not taken, not acknowledged.
        self.left_for_next_run = 0
        #: The processor's clock minus the newest waveform data time processed.
        self.lag_s = 0.0
        self._lag_warned_at = -math.inf
        self._drop_log = DropLog(log)  # the core's data-time drops, rate-limited

    def on_inbound(self, message: Inbound) -> None:
        """One message off the socket, into the ingress; past ``queue_max`` waiting, the
        socket is not read any more until the core has caught up (the broker holds the
        rest: nothing is shed, nothing acknowledged before it is processed).

        Once stopping, messages are left unprocessed and unacknowledged: the broker
        delivers them again to the next run's session (the socket is still read, for
        the PUBACKs of what this run publishes until it goes).
        """
        queues = self.queues
        if queues.stopping.is_set():
            self.left_for_next_run += 1
            return
        ingress = self.queue
        link = self.link
        ingress.append(
            Arrived(
                message.topic,
                message.payload,
                self._now(),
                message.mid if message.qos else 0,
                link.conn_id,
            )
        )
        queues.ingress_event.set()
        if len(ingress) >= self.settings.queue_max and link.mqtt is not None:
            link.mqtt.pause_reading()

    async def loop(self) -> None:
        queues = self.queues
        ingress = self.queue
        while True:
            await queues.ingress_event.wait()
            queues.ingress_event.clear()
            while ingress:
                # bounded batches: the loop must keep answering the broker (keepalive)
                n = min(len(ingress), BATCH_MAX)
                batch = [ingress.popleft() for _ in range(n)]
                self.metrics.ingress_queue_depth.set(len(ingress))
                self.process_batch(batch)
                self._processed(batch)
                if ingress:
                    await asyncio.sleep(0)  # let the reader and publisher run
                # (else waiting for the next message yields to them anyway)
            queues.yield_wake.set()  # display work waiting for an empty ingress goes now
            if queues.stopping.is_set():
                self.summaries.final()
                queues.drained = True
                queues.outbox_event.set()
                return

    def _processed(self, batch: list[Arrived]) -> None:
        """The core has taken ``batch``: acknowledge it once what it caused is durable;
        read the socket again once the ingress has room."""
        self.ledger.processed(batch)
        conn = self.link.mqtt
        if (
            conn is not None
            and not self.queues.stopping.is_set()
            and len(self.queue) < (self.settings.queue_max * 9 // 10)
        ):
            conn.resume_reading()

    def process_batch(self, batch: list[Arrived]) -> None:
        """Decode and hand one batch to the core; publish what it decides."""
        svc = self.settings
        root = self.link.root
        engine = self.engine
        taken = Batch()
        sent: list[Arrived] = []  # the items of ``taken``
        add, keep = taken.add, sent.append
        metrics = self.metrics
        serves_unit = self.link.serves
        max_future = svc.max_future_s
        kinds: dict[str, int] = {}  # messages handed to the core, counted once per batch
        newest = -math.inf  # data time of the newest waveform chunk
        for item in batch:
            try:
                topic = parse_inbound(item.topic, root)
                if serves_unit is not None and not serves_unit(topic.bed.unit):
                    metrics.messages_foreign_total.inc()  # another instance's unit: no error
                    continue
                msg = decode(
                    topic.kind,
                    item.payload,
                    max_bytes=svc.max_payload_bytes,
                    max_samples=svc.max_samples,
                )
                if max_future:
                    _check_clock(topic.kind, msg, item.arrived, max_future)
            except CodecError as exc:
                self._rejected(item, exc)
                continue
            kinds[topic.kind] = kinds.get(topic.kind, 0) + 1
            if topic.kind == "abp" and msg.ts > newest:
                newest = msg.ts
            add(topic.bed, msg, item.arrived)
            keep(item)
        events = self._to_core(taken, sent)
        for kind, n in kinds.items():
            metrics.message_in(kind, n)
        self.processed += len(batch)
        done = self._now()
        metrics.observe_batch(done, [item.arrived for item in batch])
        if newest > -math.inf:
            self._note_lag(done, max(0.0, done - newest))
        st = engine.stats
        metrics.sync_engine(
            st.beats, st.beats_valid, len(engine), st.beds_evicted, st.alarms_evicted
        )
        if st.dropped:
            metrics.sync_dropped(st.dropped)
            self._drop_log.report(engine.take_drop_notices(), st.dropped, done)
        self.outbox.take(events)

    def _to_core(self, batch: Batch, items: list[Arrived]) -> list[AlarmEvent]:
        """``batch`` (of ``items``) to the core: its transitions. A core bug on one message
        must not stop the ward: it is logged and the messages after it are taken."""
        events: list[AlarmEvent] = []
        while True:
            try:
                done = self.engine.receive(batch)
            except Exception:
                k = batch.taken
                events += batch.decided
                self.internal_errors += 1
                topic = items[k].topic
                kind = parse_inbound(topic, self.link.root).kind
                log.exception("internal_error", topic=topic[:200], kind=kind)
                items = items[k + 1 :]
                rest = zip(batch.beds, batch.messages, batch.nows, strict=True)
                batch = Batch(itertools.islice(rest, k + 1, None))  # type: ignore[arg-type]
            else:
                return events + done if events else done

    def _rejected(self, item: Arrived, exc: CodecError) -> None:
        """A message the codec refused: counted, logged, and sent to the dead-letter topic."""
        self.metrics.rejected(exc.code)
        log.warning(
            "rejected",
            topic=item.topic[:200],
            code=exc.code,
            field=exc.field,
            reason=exc.reason[:300],
        )
        topic = self.settings.dead_letter_topic
        if not topic:
            return
        self.metrics.dead_letters_total.inc()
        body = encode_dead_letter(item.topic, item.payload, exc, item.arrived)
        self.outbox.append(Outgoing(topic, body, retain=False))
        self.queues.outbox_event.set()

    def _note_lag(self, now: float, lag: float) -> None:
        """Export how far behind the data the core is; say so when it is falling behind."""
        self.lag_s = lag
        self.metrics.ingress_lag_seconds.set(lag)
        if lag > LAG_WARN_S and now - self._lag_warned_at >= LAG_WARN_EVERY_S:
            self._lag_warned_at = now
            log.warning(
                "falling_behind",
                lag_s=round(lag, 1),
                ingress=len(self.queue),
                hint="more data than one instance processes: shard the care units "
                "(docs/scaling.md) or check the gateways' clocks",
            )
