"""``streamproc run``: the core on a real MQTT broker.

The I/O loop only moves bytes (after ``h11/examples/trio-server.py``): named
tasks in an :class:`asyncio.TaskGroup` read the broker into a bounded ingress
buffer, hand the core everything that arrived since the last pass in one
batch, tick the core with the wall clock, and publish the alarm transitions,
in order, QoS 1 and retained. Nothing decided is lost:

- alarms decided while the broker is away wait in the outbox (bounded, in
  memory) and in the audit log, and go out in order after the reconnect;
- a persistent session (fixed client id, clean start off) has the broker keep
  the QoS 1 messages that arrive while the processor is away;
- on start, open alarms are rebuilt from the retained alarm topics and the
  audit log, so a restarted processor keeps their ids and raises no duplicate.

A chunk runs one way through the parts: the transport's callback
(:meth:`.ingress.Ingress.on_inbound`) -> :mod:`.ingress` (topic, codec) -> the core
(``Engine.receive``) -> :mod:`.outbox` (and the metrics, :mod:`.audit_link`) -> the
transport; :mod:`.ledger` acknowledges the inbound messages once what they caused is
durable. :mod:`.restore` runs once before; :mod:`.summaries` and :mod:`.health` run
beside. This module builds the parts and runs their tasks.
"""

from __future__ import annotations

import asyncio
import signal
from typing import Any, Final

from streamproc import __version__
from streamproc.core.engine import Engine
from streamproc.shell.backoff import Backoff
from streamproc.shell.config import StreamprocConfig
from streamproc.shell.logs import get_logger
from streamproc.shell.metrics import ServiceMetrics, serve_metrics
from streamproc.shell.service.audit_link import AuditLink
from streamproc.shell.service.broker import (
    AUTH_RETRY_BASE_S,
    AUTH_RETRY_CAP_S,
    BrokerLink,
    confirmed,
)
from streamproc.shell.service.clock import Clock
from streamproc.shell.service.health import GcPolicy, watch_loop
from streamproc.shell.service.ingress import Ingress
from streamproc.shell.service.ledger import AckLedger
from streamproc.shell.service.outbox import Outbox
from streamproc.shell.service.queues import Queues
from streamproc.shell.service.restore import restore
from streamproc.shell.service.summaries import Summaries
from streamproc.shell.transport_paho import ConnectRefusedError, MqttError
from streamproc.wire.codec import warm_up

__all__ = ["SLICE_BEDS", "Service", "run_service"]

log = get_logger("streamproc.shell.service")

#: Beds ticked between two turns of the event loop.
SLICE_BEDS: Final = 100


class Service:
    """The live processor. ``await Service(config).run()`` until ``stop()``."""

    def __init__(
        self,
        config: StreamprocConfig,
        *,
        metrics: ServiceMetrics | None = None,
        clock: Clock | None = None,
    ) -> None:
        svc = config.service
        self.config = config
        self.clock = clock = clock or Clock()
        self.metrics = metrics = metrics or ServiceMetrics()
        self.link = link = BrokerLink(config, clock, metrics)
        #: Set while connected to the broker.
        self.connected = link.connected
        self.queues = queues = Queues(clock)
        self._gc = GcPolicy(timer=clock.mono)
        self.engine = engine = Engine(config.core, max_beds=svc.max_beds, report_evictions=True)
        warm_up()  # the codec's compiled fast path (the engine warms the core's)
        self.ledger = ledger = AckLedger(link, queues)
        self.audit = audit = AuditLink(config, clock, metrics, ledger, max_beds=engine.max_beds)
        self.summaries = summaries = Summaries(
            engine, queues, link.root, link.connected, svc.summary_s
        )
        self.outbox = outbox = Outbox(
            queues,
            metrics,
            ledger=ledger,
            audit=audit,
            summaries=summaries,
            engine=engine,
            root=link.root,
            queue_max=svc.queue_max,
        )
        self.ingress = Ingress(
            config,
            queues,
            metrics,
            link=link,
            engine=engine,
            outbox=outbox,
            ledger=ledger,
            summaries=summaries,
        )
        self._connections = 0
        #: How ``run`` ended: 0, or 1 when something could not be made durable.
        self.exit_status = 0

    # ------------------------------------------------------------------ lifecycle
    def stop(self) -> None:
        """Ask the service to finish: stop reading, process what was read, publish,
        acknowledge, go offline, return from ``run``."""
        self.queues.stop()

    async def run(self) -> None:
        """Run until :meth:`stop` (or SIGINT/SIGTERM when ``install_signals`` was called)."""
        link = self.link
        self.audit.open()
        log.info(
            "starting",
            broker=self.config.service.broker,
            root=link.root,
            client_id=link.client_id,
            version=__version__,
            units=sorted(link.units) or None,
            shard=None if link.shard is None else str(link.shard),
        )
        if link.listed and not link.units:
            log.warning("no_units_owned", listed=list(link.listed), shard=str(link.shard))
        try:
            await restore(
                link,
                self.queues,
                engine=self.engine,
                audit=self.audit,
                outbox=self.outbox,
                summaries=self.summaries,
            )
            async with asyncio.TaskGroup() as tg:
                tg.create_task(self._connection_loop(), name="mqtt-connection")
                tg.create_task(self.ingress.loop(), name="process")
                tg.create_task(self._tick_loop(), name="tick")
                tg.create_task(watch_loop(self.queues, self.metrics), name="loop-watch")
                tg.create_task(self.summaries.loop(), name="summaries")
        finally:
            self._finish()

    def _finish(self) -> None:
        """Write what the audit trail still waits for; say what could not be made durable."""
        unwritten = self.audit.close()
        ledger = self.ledger
        lost = len(ledger.undurable) + ledger.undurable_dropped
        if lost:
            log.error(
                "transitions_not_durable",
                transitions=lost,
                outbox=len(self.queues.outbox),
                action="neither published (PUBACK) nor written to the audit log: the "
                "messages that caused them were not acknowledged and the broker delivers "
                "them again to the next run; those dropped from a full outbox are lost",
            )
        self.exit_status = 1 if (unwritten or lost) else 0
        log.info(
            "stopped",
            processed=self.ingress.processed,
            acked=ledger.acked,
            left_for_next_run=self.ingress.left_for_next_run,
            exit_status=self.exit_status,
        )

    def install_signals(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, self.stop)

    def healthy(self) -> tuple[bool, dict[str, Any]]:
        link, audit = self.link, self.audit
        connected = link.connected.is_set()
        ok = connected and audit.failed is None
        return ok, {
            "broker_connected": connected,
            "broker": "ok" if connected else (link.broker_error or "connecting"),
            "unacked": self.ledger.unacked(),
            "audit": audit.failed or "ok",
            "audit_pending": 0 if audit.audit is None else audit.audit.pending,
            "beds": len(self.engine),
            "outbox": len(self.queues.outbox),
            "ingress": len(self.queues.ingress),
            "shard": None if link.shard is None else str(link.shard),
            "lag_s": round(self.ingress.lag_s, 3),
        }

    # ------------------------------------------------------------------ tasks
    async def _connection_loop(self) -> None:
        link, queues = self.link, self.queues
        backoff = Backoff()
        auth_backoff = Backoff(AUTH_RETRY_BASE_S, AUTH_RETRY_CAP_S, floor=0.5)
        while not queues.stopping.is_set():
            error: MqttError | None = None
            try:
                await self._session(backoff, auth_backoff)
            except* MqttError as group:
                first = group.exceptions[0]
                error = first if isinstance(first, MqttError) else MqttError(str(first))
            if error is None:
                return  # graceful stop: everything published, offline status sent
            link.lost()
            if queues.stopping.is_set() and not queues.outbox:
                return
            link.reconnects += 1
            self.metrics.broker_reconnects_total.inc()
            refused = isinstance(error, ConnectRefusedError) and error.auth
            delay = auth_backoff.next() if refused else backoff.next()
            link.failed(error, "connect", delay, len(queues.outbox))
            await queues.sleep(delay)
            if queues.stopping.is_set():
                log.error("stopped_with_unpublished", outbox=len(queues.outbox))
                return

    async def _session(self, backoff: Backoff, auth_backoff: Backoff) -> None:
        """One connection: subscribe, then read, publish and acknowledge until stopped."""
        link = self.link
        link.conn_id += 1
        conn = link.connection(
            link.settings(link.client_id, persistent=True, with_will=True),
            self.ingress.on_inbound,
        )
        link.mqtt = conn
        # a resumed session delivers its backlog right after the CONNACK, before the
        # SUBACKs: it goes to the ingress and waits there for the core
        await conn.connect()
        backoff.reset()
        auth_backoff.reset()
        link.broker_error = None
        # not waited for: its PUBACK may come after the backlog the broker sends first
        conn.publish(link.status_topic(), link.status(online=True), qos=1, retain=True)
        async with asyncio.TaskGroup() as tg:
            lost = tg.create_task(conn.wait_lost(), name="mqtt-connection-watch")
            await link.subscribe_inbound(conn)
            self._connections += 1
            if self._connections > 1:
                self.outbox.republish_retained()
            link.set_connected(value=True)
            log.info("connected", host=link.address.host, port=link.address.port)
            await self.outbox.publish_loop(conn)
            self.ledger.ack_ready()  # the last processed messages: acknowledged before we go
            offline = conn.publish(
                link.status_topic(), link.status(online=False), qos=1, retain=True
            )
            await confirmed(offline, "offline status")
            lost.cancel()
        await conn.disconnect()
        link.mqtt = None
        link.set_connected(value=False)

    async def _tick_loop(self) -> None:
        queues, clock, engine = self.queues, self.clock, self.engine
        step = self.config.service.tick_s
        while not queues.stopping.is_set():
            await queues.sleep(step)
            now = clock.wall()
            # in slices: the loop keeps reading and processing between them
            for events in self.engine.tick_slices(now, SLICE_BEDS):
                self.outbox.take(events)
                await asyncio.sleep(0)
            self.audit.poll(now)
            self._gc.step(clock.mono())
            self.metrics.set_alarms_open(engine.open_alarms)


async def run_service(config: StreamprocConfig) -> int:
    """Run the service with its metrics endpoint until SIGINT/SIGTERM; the exit status:
    0, or 1 when an alarm transition could not be made durable (not written to the audit
    log, or neither written nor published)."""
    service = Service(config)
    service.install_signals()
    server = None
    port = config.service.metrics_port
    if port:
        host = config.service.metrics_host
        server = await serve_metrics(service.metrics, host, port, service.healthy)
    try:
        await service.run()
    finally:
        if server is not None:
            server.close()
            await server.wait_closed()
    return service.exit_status
