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
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import itertools
import logging
import math
import random
import signal
import ssl
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final, NamedTuple
from urllib.parse import urlsplit

import msgspec

from streamproc import __version__
from streamproc.core.engine import BED_EVICTED, Batch, BedActivity, Engine
from streamproc.core.monitor import BedMonitor
from streamproc.core.protocol.alarms import AlarmEvent, AlarmState
from streamproc.core.protocol.messages import Ack, BedId, Message
from streamproc.shell import transport_mqtt5
from streamproc.shell import transport_paho as paho_transport
from streamproc.shell.audit import AuditError, AuditTrail
from streamproc.shell.config import BROKER_URL_FORMS, ConfigError, StreamprocConfig
from streamproc.shell.droplog import DropLog
from streamproc.shell.logs import get_logger
from streamproc.shell.metrics import Metrics, serve_metrics
from streamproc.shell.sharding import Shard, owned_units, parse_units, serves
from streamproc.shell.transport_paho import (
    ConnectionLostError,
    ConnectRefusedError,
    Inbound,
    MqttError,
    PublishRefusedError,
    Settings,
    Will,
)
from streamproc.wire.codec import CodecError, decode, warm_up
from streamproc.wire.outbound import decode_alarm, encode_alarm, encode_summary
from streamproc.wire.topics import (
    alarm_topic,
    alarms_filter,
    inbound_filters,
    parse_alarm_topic,
    parse_inbound,
    status_topic,
    summary_filter,
    summary_topic,
)

#: A broker connection: the ``mqtt5`` codec's (MQTT 5) or paho's (3.1.1, or chosen by
#: ``service.transport = "paho"``); the same interface.
MqttConnection = paho_transport.Connection | transport_mqtt5.Connection

__all__ = [
    "BROKER_URL_FORMS",
    "Backoff",
    "BrokerAddress",
    "Outgoing",
    "Service",
    "parse_broker_url",
    "run_service",
]

#: Move what is alive to the GC's permanent generation this often (s): see GcPolicy.
GC_FREEZE_S: Final = 30.0
#: Unfreeze and collect everything this often (s).
GC_FULL_S: Final = 3600.0
#: Period of the event-loop watch timer (s): its lateness is the loop lag metric.
LOOP_WATCH_S: Final = 0.02
#: Beds ticked or summarised between two turns of the event loop.
SLICE_BEDS: Final = 100
#: Data older than this when processed (s) means the service is falling behind: logged.
LAG_WARN_S: Final = 10.0
#: At most one falling_behind log line per this many seconds.
LAG_WARN_EVERY_S: Final = 30.0

log = get_logger("streamproc.shell.service")

#: Session expiry asked of the broker: queued QoS 1 messages wait this long (s).
SESSION_EXPIRY_S: Final = 3600
#: Most inbound messages handed to the core in one pass (then the loop breathes).
BATCH_MAX: Final = 100
#: MQTT 5 Receive Maximum: inbound QoS 1 messages the broker sends ahead of our PUBACKs
#: (which wait until they are processed and durable). Enough to keep the core busy for
#: tens of ms; small enough that a PUBACK for our own publish is not queued behind a
#: whole backlog (MQTT 3.1.1: the broker's max_inflight_messages, 20 by default).
RECEIVE_MAXIMUM: Final = 1000
#: A PUBACK is overdue when this long passes with nothing at all received (s).
PUBACK_WAIT_S: Final = 10.0
#: Alarms in flight at once (each confirmed by its PUBACK); below Mosquitto's
#: and paho's default in-flight limit (20), so none waits in paho's queue.
PUBLISH_WINDOW: Final = 16
#: Most bed summaries published between two looks at the alarm outbox and the ingress.
SUMMARY_BURST: Final = 20
#: Beds whose summaries are built between two turns of the event loop.
SUMMARY_SLICE_BEDS: Final = 25
#: Summaries go out in shares, one every this many seconds (each bed every summary_s).
SUMMARY_STEP_S: Final = 0.1
#: Longest a summary step waits for the ingress to empty (s).
SUMMARY_YIELD_MAX_S: Final = 1.0
#: How long to wait for retained alarm state on start when none is arriving.
RESTORE_QUIET_S: Final = 0.5
RESTORE_MAX_S: Final = 10.0
#: Most topic filters in one SUBSCRIBE or UNSUBSCRIBE packet (six per listed care unit).
SUBSCRIBE_BATCH: Final = 120
#: A failed audit log is retried (reopened) this often (s); a healthy one's file checked.
AUDIT_RETRY_S: Final = 2.0
#: While the audit log stays failed, one error line per this many failed retries.
AUDIT_LOG_EVERY: Final = 30
#: After the broker refused the credentials: the first retry in 5-10 s, doubling up to
#: 5 min (a wrong password is fixed by a person, not by hammering the broker).
AUTH_RETRY_BASE_S: Final = 10.0
AUTH_RETRY_CAP_S: Final = 300.0
#: Where the credentials come from, for the error that names them.
CREDENTIAL_SETTINGS: Final = (
    "service.username/service.password (STREAMPROC_USERNAME/STREAMPROC_PASSWORD)"
)


@dataclass(frozen=True, slots=True)
class BrokerAddress:
    """Where the broker is: ``mqtt://host:port`` or ``mqtts://host:port`` (TLS)."""

    host: str
    port: int
    tls: bool


def parse_broker_url(url: str) -> BrokerAddress:
    """``mqtt://host[:port]`` (1883) or ``mqtts://host[:port]`` (8883).

    A URL without a scheme (``localhost``, ``broker:1883``) is refused: guessing
    plain MQTT would send the credentials in clear to whatever listens there.
    """
    if "://" not in url:
        raise ConfigError("service.broker", f"{url!r} has no scheme: use {BROKER_URL_FORMS}")
    parts = urlsplit(url)
    if parts.scheme not in ("mqtt", "mqtts", "tcp", "ssl"):
        raise ConfigError("service.broker", f"{url!r}: use {BROKER_URL_FORMS}")
    tls = parts.scheme in ("mqtts", "ssl")
    try:
        port = parts.port or (8883 if tls else 1883)
    except ValueError:
        raise ConfigError("service.broker", f"bad port in {url!r}") from None
    if not parts.hostname:
        raise ConfigError("service.broker", f"no host in {url!r}")
    return BrokerAddress(parts.hostname, port, tls)


class Backoff:
    """Exponential backoff with jitter (after aiomqtt's reconnect example).

    The n-th delay is drawn from ``[floor * d, d]`` with ``d = min(cap, base * 2**n)``:
    ``floor`` 0 is full jitter; 0.5 keeps every delay at least half its step.
    """

    def __init__(
        self,
        base: float = 0.2,
        cap: float = 10.0,
        rng: Callable[[float, float], float] = random.uniform,
        *,
        floor: float = 0.0,
    ) -> None:
        self.base = base
        self.cap = cap
        self.floor = floor
        self.attempt = 0
        self._rng = rng

    def next(self) -> float:
        step = min(self.cap, self.base * 2**self.attempt)
        delay = self._rng(self.floor * step, step)
        self.attempt = min(self.attempt + 1, 30)
        return max(delay, 0.05)

    def reset(self) -> None:
        self.attempt = 0


@dataclass(slots=True)
class _Inbound:
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


def _finite(value: object) -> bool:
    """A JSON number (not a bool) that is finite."""
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _served_units(status: bytes) -> tuple[str, ...]:
    """The listed units a status payload says its instance served (``()``: all, or unreadable)."""
    try:
        units = msgspec.json.decode(status).get("units") or []
        return parse_units(",".join(u for u in units if isinstance(u, str)))
    except (msgspec.DecodeError, AttributeError, TypeError, ValueError):
        return ()


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


#: What a TLS failure most likely means, by a fragment of OpenSSL's message (first match).
_TLS_HINTS: Final = (
    (
        "CERTIFICATE_VERIFY_FAILED",
        (
            "the broker's certificate is not signed by service.tls_ca (or not issued for "
            "the host of service.broker): check both"
        ),
    ),
    (
        "CERTIFICATE_REQUIRED",
        "the broker requires a client certificate: set service.tls_cert and service.tls_key",
    ),
    (
        "BAD_CERTIFICATE",
        "the broker refused this client's certificate: check service.tls_cert/tls_key",
    ),
    (
        "UNKNOWN_CA",
        "the broker does not trust the CA that signed service.tls_cert",
    ),
    (
        "WRONG_VERSION_NUMBER",
        "the broker's port does not speak TLS: use its TLS listener (mqtts://host:8883)",
    ),
    (
        "SSL",
        (
            "the TLS handshake with the broker failed: check service.tls_ca, "
            "service.tls_cert, service.tls_key and the broker's TLS listener"
        ),
    ),
)


def tls_hint(reason: str) -> str | None:
    """What to check when a connection failed for a TLS reason; None if it is not TLS."""
    upper = reason.upper()
    return next((hint for fragment, hint in _TLS_HINTS if fragment in upper), None)


class _MqttLogBridge(logging.Handler):
    """The MQTT client's own warnings and errors (e.g. a TLS alert read from the socket)
    as JSON log lines, instead of bare text on stderr."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            message = record.getMessage()[:300]
        except Exception:  # noqa: BLE001 - a bad log record must not break the client
            return
        hint = tls_hint(message)
        if hint is not None:
            log.error("broker_tls_failed", phase="socket", reason=message, hint=hint)
        else:
            log.warning("mqtt_client", message=message)


#: The logger given to every MQTT client (paho's messages go through it).
_MQTT_LOG: Final = logging.getLogger("streamproc.mqtt")
_MQTT_LOG.setLevel(logging.WARNING)
_MQTT_LOG.propagate = False
_MQTT_LOG.addHandler(_MqttLogBridge())


class GcPolicy:
    """Keep Python's cyclic garbage collector from pausing the loop for 100+ ms.

    With thousands of beds the heap holds ~10^6 tracked objects, and a full
    (generation 2) collection walks all of them: measured 150 ms at 5,000
    beds, i.e. alarms delayed by that much. The core allocates no reference
    cycles (tests/shell/test_gc.py: zero unreachable objects after a ward's worth of
    messages, ticks and alarms), so its long-lived state need not be walked:
    every ``freeze_s`` the young generations are collected and everything
    alive is moved to the permanent generation (:func:`gc.freeze`). Once per
    ``full_s`` everything is unfrozen and fully collected, so cycles made
    elsewhere (asyncio, exceptions) cannot accumulate; that one pause is logged.
    """

    __slots__ = ("freeze_s", "full_s", "next_freeze", "next_full")

    def __init__(self, *, freeze_s: float = GC_FREEZE_S, full_s: float = GC_FULL_S) -> None:
        self.freeze_s = freeze_s
        self.full_s = full_s
        self.next_freeze = 0.0
        self.next_full: float | None = None

    def step(self, mono: float) -> None:
        """Call from a periodic task with ``time.monotonic()``."""
        if self.next_full is None:
            self.next_full = mono + self.full_s
        if mono >= self.next_full:
            self.next_full = mono + self.full_s
            t = time.perf_counter()
            gc.unfreeze()
            freed = gc.collect()
            gc.freeze()
            log.info("gc_full", freed=freed, pause_ms=round((time.perf_counter() - t) * 1e3, 1))
            self.next_freeze = mono + self.freeze_s
        elif mono >= self.next_freeze:
            self.next_freeze = mono + self.freeze_s
            gc.collect(1)
            gc.freeze()


class Service:
    """The live processor. ``await Service(config).run()`` until ``stop()``."""

    def __init__(
        self,
        config: StreamprocConfig,
        *,
        metrics: Metrics | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        svc = config.service
        if not svc.broker:
            raise ConfigError("service.broker", "no broker configured (use --broker mqtt://...)")
        self.config = config
        self.address = parse_broker_url(svc.broker)
        self._tls = self._tls_context()
        dead = svc.dead_letter_topic
        if dead and (any(c in dead for c in "+#\0") or "//" in dead or dead.startswith("/")):
            raise ConfigError("service.dead_letter_topic", f"must be a plain topic, got {dead!r}")
        self.root = svc.root
        self.clock = clock
        self.metrics = metrics or Metrics()
        self._gc = GcPolicy()
        self.engine = Engine(config.core, max_beds=svc.max_beds, report_evictions=True)
        warm_up()  # the codec's compiled fast path (the engine warms the core's)
        listed = parse_units(svc.units)
        self.shard = Shard.parse(svc.shard) if svc.shard.strip() else None
        #: The listed care units this instance serves (those its shard owns); empty when
        #: no units are listed (every unit, or the shard's share of every unit).
        self.units = frozenset(owned_units(listed, self.shard))
        self._listed = listed
        #: unit -> served here? None: every unit (see streamproc.shell.sharding.serves)
        self._serves = serves(listed, self.shard)
        #: The listed units the previous run served, from its retained status (read on start)
        self._previous_units: tuple[str, ...] = ()
        self.client_id = svc.client_id or f"streamproc-{svc.instance}"
        self._ingress: deque[_Inbound] = deque()
        self._ingress_event = asyncio.Event()
        self._outbox: deque[Outgoing] = deque()
        self._outbox_event = asyncio.Event()
        self._yield_wake = asyncio.Event()
        self._stopping = asyncio.Event()
        self._ready = asyncio.Event()
        self.connected = asyncio.Event()
        self.audit: AuditTrail | None = None
        self.audit_failed: str | None = None
        self._audit_dropped = 0
        #: Per bed, the last state enqueued per alarm topic: republished after a reconnect
        #: so that a broker that lost its retained store (crash before autosave) has it
        #: back, and emptied on the broker when the bed is evicted. Every per-bed cache
        #: here is pruned when the engine evicts the bed (``_forget_evicted``).
        self._retained: dict[BedId, dict[str, bytes]] = {}
        self._connections = 0
        #: Per bed whose summary is (or may be) retained on the broker: what it last showed.
        self._summaries: dict[BedId, tuple[object, ...]] = {}
        self._summary_box: OrderedDict[str, bytes] = OrderedDict()
        #: Retained summaries read on start: each bed's last data time (processor clock).
        self._activity: dict[BedId, BedActivity] = {}
        self._summary_beds: set[BedId] = set()
        self._unrecorded: list[AlarmEvent] = []  # for the audit trail, just after publishing
        self._record_scheduled = False
        self.reconnects = 0
        self.processed = 0
        self.dropped = 0
        self.outbox_dropped = 0
        self.internal_errors = 0
        # -- at-least-once: what is acknowledged to the broker, and when
        #: The connection now (None: none); ``_conn_id`` numbers the connections.
        self._mqtt: MqttConnection | None = None
        self._conn_id = 0
        #: The last alarm transition numbered (each gets the next number, ``seq``).
        self._seq = 0
        #: Transitions not yet durable (neither PUBACKed nor in the audit log), by seq, in order.
        self._undurable: dict[int, AlarmEvent] = {}
        #: Processed inbound messages waiting for their ack: (seq they wait for, conn, mids)
        self._ack_wait: deque[tuple[int, int, list[int]]] = deque()
        #: The last seq handed to the audit trail; the audit credits (seq, that] at most.
        self._audit_handed = 0
        self._audit_credit_from = 0
        self._audit_drops_seen = 0
        #: Transitions given up for publishing (outbox full) that the audit did not take.
        self.undurable_dropped = 0
        self.acked = 0
        #: Messages that arrived after the stop began: not taken, not acknowledged.
        self.left_for_next_run = 0
        #: Why the broker connection is down (None: connected, or never tried yet).
        self.broker_error: str | None = None
        #: How ``run`` ended: 0, or 1 when something could not be made durable.
        self.exit_status = 0
        self._drop_log = DropLog(log)  # the core's data-time drops, rate-limited

    # ------------------------------------------------------------------ lifecycle
    def stop(self) -> None:
        """Ask the service to finish: stop reading, process what was read, publish,
        acknowledge, go offline, return from ``run``."""
        self._stopping.set()
        self._ingress_event.set()
        self._outbox_event.set()
        self._yield_wake.set()

    async def run(self) -> None:
        """Run until :meth:`stop` (or SIGINT/SIGTERM when ``install_signals`` was called)."""
        self._open_audit()
        log.info(
            "starting",
            broker=self.config.service.broker,
            root=self.root,
            client_id=self.client_id,
            version=__version__,
            units=sorted(self.units) or None,
            shard=None if self.shard is None else str(self.shard),
        )
        if self._listed and not self.units:
            log.warning("no_units_owned", listed=list(self._listed), shard=str(self.shard))
        try:
            await self._restore()
            async with asyncio.TaskGroup() as tg:
                tg.create_task(self._connection_loop(), name="mqtt-connection")
                tg.create_task(self._process_loop(), name="process")
                tg.create_task(self._tick_loop(), name="tick")
                tg.create_task(self._watch_loop(), name="loop-watch")
                tg.create_task(self._summary_loop(), name="summaries")
        finally:
            self._record_pending()
            unwritten = 0
            if self.audit is not None:
                unwritten = self.audit.close(self.clock())
                self._credit_audit()
                if unwritten:
                    log.error("audit_unwritten", path=str(self.audit.path), transitions=unwritten)
            lost = len(self._undurable) + self.undurable_dropped
            if lost:
                log.error(
                    "transitions_not_durable",
                    transitions=lost,
                    outbox=len(self._outbox),
                    action="neither published (PUBACK) nor written to the audit log: the "
                    "messages that caused them were not acknowledged and the broker delivers "
                    "them again to the next run; those dropped from a full outbox are lost",
                )
            self.exit_status = 1 if (unwritten or lost) else 0
            log.info(
                "stopped",
                processed=self.processed,
                acked=self.acked,
                left_for_next_run=self.left_for_next_run,
                exit_status=self.exit_status,
            )

    def install_signals(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, self.stop)

    def healthy(self) -> tuple[bool, dict[str, Any]]:
        ok = self.connected.is_set() and self.audit_failed is None
        return ok, {
            "broker_connected": self.connected.is_set(),
            "broker": "ok" if self.connected.is_set() else (self.broker_error or "connecting"),
            "unacked": sum(len(mids) for _, _, mids in self._ack_wait),
            "audit": self.audit_failed or "ok",
            "audit_pending": 0 if self.audit is None else self.audit.pending,
            "beds": len(self.engine),
            "outbox": len(self._outbox),
            "ingress": len(self._ingress),
            "shard": None if self.shard is None else str(self.shard),
            "lag_s": round(self.lag_s, 3),
        }

    # ------------------------------------------------------------------ audit
    def _open_audit(self) -> None:
        path = self.config.service.audit_db
        if not path:
            return
        self.audit = AuditTrail(
            path,
            on_error=self._audit_fault,
            on_recovered=self._audit_recovered,
            retry_s=AUDIT_RETRY_S,
            max_pending=self.config.service.queue_max,
        )
        self.audit.open(self.clock())

    def _audit_fault(self, exc: AuditError, attempt: int = 1) -> None:
        """The audit log failed (at start, on a write, on a retry): loud, never fatal."""
        self.audit_failed = exc.reason
        self.metrics.audit_errors_total.inc()
        if attempt == 1 or attempt % AUDIT_LOG_EVERY == 0:
            log.error(
                "audit_failed",
                path=str(exc.path),
                code=exc.code,
                reason=exc.reason,
                attempt=attempt,
                pending=0 if self.audit is None else self.audit.pending,
                retry_every_s=AUDIT_RETRY_S,
                action="alarming continues; transitions wait in memory and are written "
                "when the audit log is usable again",
            )

    def _audit_recovered(self, down_s: float, written: int) -> None:
        self.audit_failed = None
        log.warning(
            "audit_recovered",
            path=str(self.config.service.audit_db),
            down_s=round(down_s, 2),
            written=written,
        )

    def _audit_poll(self, now: float) -> None:
        """Retry a failed audit log (or check a healthy one's file); export its backlog."""
        audit = self.audit
        if audit is None:
            return
        audit.poll(now)
        self._credit_audit()
        self.metrics.audit_pending.set(audit.pending)
        if audit.dropped > self._audit_dropped:
            new, self._audit_dropped = audit.dropped - self._audit_dropped, audit.dropped
            self.metrics.audit_dropped_total.inc(new)
            log.error("audit_dropped", transitions=new, total=audit.dropped)

    def _record(self, events: list[AlarmEvent]) -> None:
        if self.audit is None or not events:
            return
        self.audit.append(events, recorded_at=self.clock())
        self.metrics.audit_pending.set(self.audit.pending)

    # ------------------------------------------------------------------ restore
    def _tls_context(self) -> ssl.SSLContext | None:
        """TLS for ``mqtts://`` or when a CA is set (None: plain MQTT), built once at start.

        The broker's certificate is verified against ``tls_ca`` (the system's CAs when
        empty) and must be valid for the broker URL's host; ``tls_cert``/``tls_key`` are
        this client's certificate for a listener that requires one. A file that cannot be
        loaded is a :class:`ConfigError` naming the setting.
        """
        svc = self.config.service
        if not (self.address.tls or svc.tls_ca):
            return None
        try:
            context = ssl.create_default_context(cafile=svc.tls_ca or None)
        except OSError as exc:  # ssl.SSLError is an OSError
            raise ConfigError("service.tls_ca", f"cannot load {svc.tls_ca!r}: {exc}") from None
        if svc.tls_cert:
            try:
                context.load_cert_chain(svc.tls_cert, svc.tls_key or None)
            except OSError as exc:
                raise ConfigError(
                    "service.tls_cert",
                    f"cannot load {svc.tls_cert!r} (key {svc.tls_key or 'in the same file'!r}): "
                    f"{exc}",
                ) from None
        elif svc.tls_key:
            raise ConfigError("service.tls_key", "is set but service.tls_cert is not")
        return context

    def _tls_failed(self, reason: str, phase: str) -> None:
        """One error line when a connection failed for a TLS reason, with what to check."""
        hint = tls_hint(reason)
        if hint is not None:
            svc = self.config.service
            log.error(
                "broker_tls_failed",
                phase=phase,
                reason=reason[:300],
                hint=hint,
                broker=svc.broker,
                tls_ca=svc.tls_ca or "(system CAs)",
                client_cert=bool(svc.tls_cert),
            )

    def _settings(self, identifier: str, *, persistent: bool, with_will: bool) -> Settings:
        svc = self.config.service
        will = None
        if with_will:
            will = Will(status_topic(self.root, svc.instance), self._status(online=False))
        return Settings(
            host=self.address.host,
            port=self.address.port,
            client_id=identifier,
            v5=svc.mqtt_version == 5,
            persistent=persistent,
            session_expiry_s=SESSION_EXPIRY_S,
            username=svc.username or None,
            password=svc.password or None,
            tls=self._tls,
            will=will,
            keepalive=10,
            connect_timeout_s=10.0,
            receive_maximum=RECEIVE_MAXIMUM,
        )

    def _connection(
        self, settings: Settings, on_message: Callable[[Inbound], None], *, logger: logging.Logger
    ) -> MqttConnection:
        """A connection by the configured transport (MQTT 3.1.1 is paho's in any case)."""
        if self.config.service.transport == "mqtt5" and settings.v5:
            return transport_mqtt5.Connection(settings, on_message, logger=logger)
        return paho_transport.Connection(settings, on_message, logger=logger)

    def _broker_failed(self, exc: MqttError, phase: str, delay: float) -> None:
        """One log line for a failed connection: an error naming the settings when the
        broker refused the credentials, a TLS hint when it was TLS, else a warning."""
        self.broker_error = exc.reason[:300]
        if isinstance(exc, ConnectRefusedError) and exc.auth:
            self.broker_error = (
                f"auth_refused: {exc.reason}: check {CREDENTIAL_SETTINGS} and the broker's "
                "password file and ACL"
            )
            log.error(
                "broker_auth_refused",
                phase=phase,
                reason=exc.reason,
                code=exc.code,
                username=self.config.service.username or None,
                settings=CREDENTIAL_SETTINGS,
                action="the broker refused this login: fix the credentials (or the broker's "
                "password file and ACL); retrying with a long backoff",
                retry_in=round(delay, 1),
            )
            return
        self._tls_failed(exc.reason, phase)
        log.warning(
            "broker_unavailable" if phase != "connect" else "broker_disconnected",
            phase=phase,
            reason=exc.reason,
            retry_in=round(delay, 2),
            outbox=len(self._outbox),
        )

    async def _restore(self) -> None:
        """Adopt what the last run knew: open alarms from the audit log and the retained
        topics (the newer wins), with their acknowledgement silences and announcement
        times, and each bed's last data time from its retained summary (see
        ``docs/reliability.md``, restart)."""
        latest: dict[str, AlarmEvent] = {}
        if self.audit is not None:
            for ev in self.audit.open_alarms(self.clock()):
                latest[ev.alarm_id] = ev
        retained_topics: dict[BedId, dict[str, bytes]] = {}
        retained = await self._read_retained_alarms(retained_topics)
        republish: list[AlarmEvent] = []
        for ev in retained:
            if self._serves is not None and not self._serves(ev.bed.unit):
                continue  # another instance's care unit
            mine = latest.get(ev.alarm_id)
            if mine is None or ev.ts >= mine.ts:
                latest[ev.alarm_id] = ev
        for ev in latest.values():
            known = next((r for r in retained if r.alarm_id == ev.alarm_id), None)
            if known is None or known.ts < ev.ts:
                republish.append(ev)  # decided but never published before the restart
        # one open alarm per bed and kind: the newest
        per_kind: dict[tuple[object, str], AlarmEvent] = {}
        for ev in sorted(latest.values(), key=lambda e: e.ts):
            if ev.state is not AlarmState.CLEARED:
                per_kind[(ev.bed, ev.kind)] = ev
        # the cleared ones too: their ids are never issued again (a re-delivered
        # retained context message may raise the same kind at the same data time)
        cleared = [ev for ev in latest.values() if ev.state is AlarmState.CLEARED]
        activity, self._activity = self._activity, {}
        n = self.engine.restore([*cleared, *per_kind.values()], self.clock(), activity=activity)
        # what is retained for the beds monitored now is theirs: emptied if they are evicted
        for bed, topics in retained_topics.items():
            if self.engine.get(bed) is not None:
                self._retained.setdefault(bed, {}).update(topics)
        for bed in self._summary_beds:
            if self.engine.get(bed) is not None:
                self._summaries.setdefault(bed, ())  # (shows nothing yet: republished)
        self._summary_beds = set()
        for ev in republish:
            self._enqueue_alarm(ev)
        log.info(
            "restored",
            open_alarms=n,
            from_retained=len(retained),
            republish=len(republish),
            beds=len(self.engine),
            last_data_known=len(activity),
        )

    def _take_retained_summary(self, topic: str, payload: bytes) -> None:
        """A retained summary read on start: the bed's last data time, if it says so."""
        try:
            data = msgspec.json.decode(payload)
            bed = BedId(str(data["unit"]), str(data["bed"]))
        except (msgspec.DecodeError, KeyError, TypeError, ValueError):
            log.warning("restore_skipped", topic=topic[:200], reason="unreadable summary")
            return
        if summary_topic(self.root, bed) != topic:
            log.warning("restore_skipped", topic=topic[:200], reason="summary of another bed")
            return
        if self._serves is not None and not self._serves(bed.unit):
            return  # another instance's care unit
        self._summary_beds.add(bed)
        last, ts = data.get("last_data"), data.get("ts")
        if _finite(last):
            self._activity[bed] = BedActivity(
                float(last),
                nibp_only=data.get("nibp_only") is True,
                data_ts=float(ts) if _finite(ts) else None,
            )

    async def _read_retained_alarms(
        self, topics: dict[BedId, dict[str, bytes]] | None = None
    ) -> list[AlarmEvent]:
        """The retained alarm states (and, into ``topics``, each bed's retained alarm
        topics with their payloads), the retained summaries (see
        :meth:`_take_retained_summary`) and this instance's last status."""
        events: list[AlarmEvent] = []
        backoff = Backoff()
        auth_backoff = Backoff(AUTH_RETRY_BASE_S, AUTH_RETRY_CAP_S, floor=0.5)
        deadline = time.monotonic() + RESTORE_MAX_S * 3
        own_status = status_topic(self.root, self.config.service.instance)
        received: asyncio.Queue[Inbound] = asyncio.Queue()
        while not self._stopping.is_set():
            conn = self._connection(
                self._settings(f"{self.client_id}-restore", persistent=False, with_will=False),
                received.put_nowait,
                logger=_MQTT_LOG,
            )
            try:
                await conn.connect()
                summary_levels = summary_filter(self.root).count("/")
                await self._subscribe(
                    conn, [*self._alarm_filters(), *self._summary_filters(), own_status]
                )
                end = time.monotonic() + RESTORE_MAX_S
                while time.monotonic() < end:
                    try:
                        async with asyncio.timeout(RESTORE_QUIET_S):
                            message = await received.get()
                    except TimeoutError:
                        break
                    conn.ack(message.mid, message.qos)
                    if not message.retain or not message.payload:
                        continue  # live traffic, or an emptied retained topic
                    if message.topic == own_status:
                        self._previous_units = _served_units(message.payload)
                        continue
                    if message.topic.count("/") == summary_levels:
                        self._take_retained_summary(message.topic, message.payload)
                        continue
                    try:
                        bed, _ = parse_alarm_topic(message.topic, self.root)
                        events.append(decode_alarm(message.payload))
                        if topics is not None:
                            topics.setdefault(bed, {})[message.topic] = message.payload
                    except CodecError as exc:
                        log.warning("restore_skipped", topic=message.topic, reason=str(exc))
                await conn.disconnect()
            except MqttError as exc:
                conn.abort()
                refused = isinstance(exc, ConnectRefusedError) and exc.auth
                if not refused and time.monotonic() > deadline:
                    log.error("restore_gave_up", reason=exc.reason)  # noqa: TRY400
                    return events
                delay = auth_backoff.next() if refused else backoff.next()
                self._broker_failed(exc, "restore", delay)
                await self._sleep(delay)
            else:
                self.broker_error = None
                return events
        return events

    # ------------------------------------------------------------------ connection
    def _status(self, *, online: bool) -> bytes:
        svc = self.config.service
        return msgspec.json.encode(
            {
                "instance": svc.instance,
                "state": "online" if online else "offline",
                "version": __version__,
                "ts": round(self.clock(), 3),
                "units": sorted(self.units) or None,
                "shard": None if self.shard is None else str(self.shard),
            }
        )

    # ------------------------------------------------------------------ subscriptions
    def _summary_filters(self) -> list[str]:
        """Retained summaries to restore last data times from: the served units' when listed."""
        if self._listed:
            return [summary_filter(self.root, unit) for unit in sorted(self.units)]
        return [summary_filter(self.root)]

    def _alarm_filters(self) -> list[str]:
        """Retained alarm state to restore: the served units' when they are listed."""
        if self._listed:
            return [alarms_filter(self.root, unit) for unit in sorted(self.units)]
        return [alarms_filter(self.root)]

    @staticmethod
    async def _subscribe(client: MqttConnection, filters: list[str]) -> None:
        for i in range(0, len(filters), SUBSCRIBE_BATCH):
            part = filters[i : i + SUBSCRIBE_BATCH]
            codes = await client.subscribe([(flt, 1) for flt in part], timeout=60)
            refused = [flt for flt, code in zip(part, codes, strict=False) if code >= 0x80]
            if refused:
                log.error(
                    "subscribe_refused",
                    filters=refused[:10],
                    codes=sorted(set(codes)),
                    action="the broker's ACL does not let this user read these topics",
                )

    async def _subscribe_inbound(self, client: MqttConnection) -> None:
        """QoS 1 subscriptions to the inbound kinds of the served units when they are listed
        (the broker then partitions: nothing else reaches this instance), else of all units.

        The persistent session keeps what an earlier configuration subscribed, and Mosquitto
        delivers a message once per matching subscription: overlapping filters would feed the
        core every message twice. So the filters this configuration does not want are dropped
        first: the all-units ones (with listed units), those of listed units another shard
        owns, and those of units the previous run served (its retained status says which).
        Unsubscribing a filter the session does not have is harmless.
        """
        served = set(self.units)
        gone = sorted({*self._listed, *self._previous_units} - served)
        stale = inbound_filters(self.root, units=gone)
        if self._listed:
            stale = inbound_filters(self.root) + stale
            wanted = inbound_filters(self.root, units=sorted(served))
        else:
            wanted = inbound_filters(self.root)
        for i in range(0, len(stale), SUBSCRIBE_BATCH):
            await client.unsubscribe(stale[i : i + SUBSCRIBE_BATCH], timeout=60)
        await self._subscribe(client, wanted)

    async def _sleep(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                await self._stopping.wait()

    async def _connection_loop(self) -> None:
        backoff = Backoff()
        auth_backoff = Backoff(AUTH_RETRY_BASE_S, AUTH_RETRY_CAP_S, floor=0.5)
        while not self._stopping.is_set():
            error: MqttError | None = None
            try:
                await self._session(backoff, auth_backoff)
            except* MqttError as group:
                first = group.exceptions[0]
                error = first if isinstance(first, MqttError) else MqttError(str(first))
            if error is None:
                return  # graceful stop: everything published, offline status sent
            self._lost_connection()
            if self._stopping.is_set() and not self._outbox:
                return
            self.reconnects += 1
            self.metrics.broker_reconnects_total.inc()
            refused = isinstance(error, ConnectRefusedError) and error.auth
            delay = auth_backoff.next() if refused else backoff.next()
            self._broker_failed(error, "connect", delay)
            await self._sleep(delay)
            if self._stopping.is_set():
                log.error("stopped_with_unpublished", outbox=len(self._outbox))
                return

    def _lost_connection(self) -> None:
        """The connection is gone: nothing read on it can be acknowledged any more (the
        broker sends it again on the next connection of the session)."""
        if self._mqtt is not None:
            self._mqtt.abort()
        self._mqtt = None
        self.connected.clear()
        self.metrics.broker_connected.set(0)

    async def _session(self, backoff: Backoff, auth_backoff: Backoff) -> None:
        """One connection: subscribe, then read, publish and acknowledge until stopped."""
        svc = self.config.service
        self._conn_id += 1
        conn = self._connection(
            self._settings(self.client_id, persistent=True, with_will=True),
            self._on_inbound,
            logger=_MQTT_LOG,
        )
        self._mqtt = conn
        # a resumed session delivers its backlog right after the CONNACK, before the
        # SUBACKs: it goes to the ingress and waits there for the core
        await conn.connect()
        backoff.reset()
        auth_backoff.reset()
        self.broker_error = None
        # not waited for: its PUBACK may come after the backlog the broker sends first
        conn.publish(
            status_topic(self.root, svc.instance), self._status(online=True), qos=1, retain=True
        )
        async with asyncio.TaskGroup() as tg:
            lost = tg.create_task(conn.wait_lost(), name="mqtt-connection-watch")
            await self._subscribe_inbound(conn)
            self._connections += 1
            if self._connections > 1:
                self._republish_retained()
            self.connected.set()
            self.metrics.broker_connected.set(1)
            log.info("connected", host=self.address.host, port=self.address.port)
            await self._publish_loop(conn)
            self._ack_ready()  # the last processed messages: acknowledged before we go
            offline = conn.publish(
                status_topic(self.root, svc.instance),
                self._status(online=False),
                qos=1,
                retain=True,
            )
            await self._confirmed(offline, "offline status")
            lost.cancel()
        await conn.disconnect()
        self._mqtt = None
        self.connected.clear()
        self.metrics.broker_connected.set(0)

    @staticmethod
    async def _puback(conn: MqttConnection, puback: asyncio.Future[None] | None) -> None:
        """Wait for a PUBACK. It may sit behind a backlog the broker is sending us, so it
        is late only when ``PUBACK_WAIT_S`` pass with nothing at all received (a dead
        connection is found sooner by the keepalive)."""
        if puback is None:
            return
        while True:
            seen = conn.received
            try:
                async with asyncio.timeout(PUBACK_WAIT_S):
                    await asyncio.shield(puback)
            except TimeoutError:
                if conn.received == seen:
                    raise ConnectionLostError(
                        f"no PUBACK and nothing received for {PUBACK_WAIT_S:g} s"
                    ) from None
            else:
                return

    @staticmethod
    async def _confirmed(puback: asyncio.Future[None] | None, what: str) -> None:
        """Wait for a QoS 1 publish's PUBACK; no answer within 10 s is a broken connection."""
        if puback is None:
            return
        try:
            async with asyncio.timeout(10):
                await puback
        except TimeoutError:
            raise ConnectionLostError(f"no PUBACK for the {what} within 10 s") from None

    def _on_inbound(self, message: Inbound) -> None:
        """One message off the socket, into the ingress; past ``queue_max`` waiting, the
        socket is not read any more until the core has caught up (the broker holds the
        rest: nothing is shed, nothing acknowledged before it is processed).

        Once stopping, messages are left unprocessed and unacknowledged: the broker
        delivers them again to the next run's session (the socket is still read, for
        the PUBACKs of what this run publishes until it goes).
        """
        if self._stopping.is_set():
            self.left_for_next_run += 1
            return
        ingress = self._ingress
        ingress.append(
            _Inbound(
                message.topic,
                message.payload,
                self.clock(),
                message.mid if message.qos else 0,
                self._conn_id,
            )
        )
        self._ingress_event.set()
        if len(ingress) >= self.config.service.queue_max and self._mqtt is not None:
            self._mqtt.pause_reading()

    # ------------------------------------------------------------------ acknowledgement
    def _numbered(self, ev: AlarmEvent) -> int:
        """Number a new transition; it is not durable until published or audited."""
        self._seq += 1
        self._undurable[self._seq] = ev
        return self._seq

    def _durable_upto(self) -> int:
        """Every transition numbered up to this one is durable."""
        return next(iter(self._undurable), self._seq + 1) - 1

    def _ack_ready(self) -> None:
        """Acknowledge, in the order received, the processed messages whose transitions are
        all durable; those read on an earlier connection are left for the broker to resend."""
        wait = self._ack_wait
        if not wait:
            return
        durable = self._durable_upto()
        conn = self._mqtt
        n = 0
        while wait and wait[0][0] <= durable:
            _, conn_id, mids = wait.popleft()
            if conn is not None and conn_id == self._conn_id:
                for mid in mids:
                    conn.ack(mid)
                n += len(mids)
        self.acked += n
        if self._stopping.is_set() and conn is not None:
            conn.flush()

    def _credit_audit(self) -> None:
        """Transitions the audit trail has written are durable (unless it gave some up)."""
        audit = self.audit
        if audit is None:
            return
        if audit.dropped != self._audit_drops_seen:
            # it gave up some of those handed so far (which, it does not say): for them
            # only a PUBACK counts now
            self._audit_drops_seen = audit.dropped
            self._audit_credit_from = self._audit_handed
        if audit.pending or not self._undurable:
            return
        upto, after = self._audit_handed, self._audit_credit_from
        for seq in [s for s in self._undurable if after < s <= upto]:
            del self._undurable[seq]
        self._ack_ready()

    async def _yield_to_ingress(self, *, alarms_first: bool = False) -> None:
        """Let the core take what is waiting before display work (summaries) runs.

        Summaries are bulk work (at 5,000 beds, 2,500 a second); done while chunks
        wait, they delayed the alarms those chunks would raise. They wait for an
        empty ingress, at most ``SUMMARY_YIELD_MAX_S`` (an overloaded service still
        refreshes its displays, more slowly). ``alarms_first``: the publisher stops
        waiting as soon as an alarm is queued (it goes out before any summary).
        """
        await asyncio.sleep(0)
        deadline = time.monotonic() + SUMMARY_YIELD_MAX_S
        wake = self._yield_wake  # set when the ingress empties, an alarm is queued, or on stop
        while self._ingress and not (alarms_first and self._outbox) and not self._stopping.is_set():
            left = deadline - time.monotonic()
            if left <= 0:
                return
            wake.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(left):
                    await wake.wait()

    async def _publish_loop(self, conn: MqttConnection) -> None:
        """Alarms first, in order, QoS 1 (each confirmed); then bed summaries, QoS 0.

        Summaries are display data, replaced every few seconds: they never wait
        for a PUBACK and never delay an alarm; a burst of them goes out in one
        loop turn's write.
        """
        outbox = self._outbox
        summaries = self._summary_box
        while True:
            while outbox or summaries:
                while outbox:
                    await self._publish_window(conn)
                if summaries:
                    await self._yield_to_ingress(alarms_first=True)
                for _ in range(min(len(summaries), SUMMARY_BURST)):
                    if outbox:
                        break  # an alarm came in meanwhile: it goes first
                    topic, payload = summaries.popitem(last=False)
                    conn.publish(topic, payload, qos=0, retain=True)
                await asyncio.sleep(0)
            if self._stopping.is_set() and not self._ingress and self._drained:
                return
            self._outbox_event.clear()
            if outbox or summaries:
                continue
            await self._outbox_event.wait()

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
        outbox = self._outbox
        window = [outbox.popleft() for _ in range(min(len(outbox), PUBLISH_WINDOW))]
        done = 0
        try:
            sent = [
                conn.publish(item.topic, item.payload, qos=1, retain=item.retain) for item in window
            ]
            conn.flush()  # on the wire before this task first waits
            for item, puback in zip(window, sent, strict=True):
                try:
                    await self._puback(conn, puback)
                except PublishRefusedError as exc:
                    self.metrics.publish_dropped_total.inc()
                    self._give_up(item.seq)
                    log.error(  # noqa: TRY400 - the broker's answer, not a bug: no traceback
                        "publish_refused",
                        topic=item.topic[:200],
                        code=exc.code,
                        reason=exc.reason,
                        action="the broker's ACL does not let this user publish there",
                    )
                else:
                    if item.seq:
                        self._undurable.pop(item.seq, None)
                done += 1
        finally:
            if done < len(window):
                outbox.extendleft(reversed(window[done:]))
            self.metrics.publish_queue_depth.set(len(outbox))
            if done:
                self._ack_ready()

    # ------------------------------------------------------------------ processing
    _drained = False
    _unrecorded_upto = 0
    lag_s = 0.0  # the processor's clock minus the newest waveform data time processed
    _lag_warned_at = -math.inf

    def _give_up(self, seq: int) -> None:
        """A transition that will not be published: durable only if the audit has it."""
        gone = seq and self._undurable.pop(seq, None) is not None
        if gone and (self.audit is None or not self.audit.healthy):
            self.undurable_dropped += 1

    def _bounded_append(self, item: Outgoing) -> None:
        """Queue for publishing; past ``queue_max`` the oldest entry gives way (counted).

        A transition that gives way is still in the audit log, and its topic's
        latest state is republished after the reconnect, so subscribers lose
        intermediate steps, never the current state.
        """
        if len(self._outbox) >= self.config.service.queue_max:
            self._give_up(self._outbox.popleft().seq)
            self.outbox_dropped += 1
            self.metrics.publish_dropped_total.inc()
            if self.outbox_dropped % 1000 == 1:
                log.warning("outbox_full", depth=len(self._outbox), dropped=self.outbox_dropped)
        self._outbox.append(item)

    def _republish_retained(self) -> None:
        """Put every alarm topic's last state in front of the outbox (idempotent)."""
        pending = {item.topic for item in self._outbox}
        again = [
            Outgoing(t, p, retain=True)
            for topics in self._retained.values()
            for t, p in topics.items()
            if t not in pending
        ]
        self._outbox.extendleft(reversed(again))
        if again:
            log.info("republishing_alarm_state", topics=len(again))
            self._outbox_event.set()

    def _enqueue_alarm(self, ev: AlarmEvent, seq: int = 0) -> None:
        """Queue an alarm transition (``seq``: its number, 0 for one already durable)."""
        topic, payload = alarm_topic(self.root, ev.bed, ev.kind), encode_alarm(ev)
        topics = self._retained.get(ev.bed)
        if topics is None:
            topics = self._retained[ev.bed] = {}
        topics[topic] = payload
        self._bounded_append(Outgoing(topic, payload, retain=True, seq=seq))
        self.metrics.observe_alarm(ev)
        self._outbox_event.set()
        self._yield_wake.set()  # a publisher waiting for the core goes now (alarms first)

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
            for topic in self._retained.pop(bed, {}):
                self._bounded_append(Outgoing(topic, b"", retain=True))
                cleared += 1
            self._activity.pop(bed, None)
            if self._summaries.pop(bed, None) is not None:
                topic = summary_topic(self.root, bed)
                self._summary_box.pop(topic, None)
                self._bounded_append(Outgoing(topic, b"", retain=True))
                cleared += 1
        if cleared:
            self.metrics.publish_queue_depth.set(len(self._outbox))
            self._outbox_event.set()

    def _publish_events(self, events: list[AlarmEvent]) -> None:
        """Queue the alarms for publishing; record and log them right after.

        The audit trail's commit (0.1-0.3 ms, once 5 ms at 5,000 beds) and the
        log lines come after the publisher has put the alarms on the wire:
        they are scheduled behind the publisher's wake-up, not done first.
        :meth:`run` writes whatever is still waiting before it closes the
        trail.
        """
        if not events:
            return
        for ev in events:
            self._enqueue_alarm(ev, self._numbered(ev))
        self.metrics.publish_queue_depth.set(len(self._outbox))
        self._unrecorded.extend(events)
        self._unrecorded_upto = self._seq
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # no loop (a test driving the service by hand): now
            self._record_pending()
            return
        if not self._record_scheduled:
            self._record_scheduled = True
            loop.call_soon(self._record_pending)

    def _record_pending(self) -> None:
        """Write the alarm transitions waiting for the audit trail, and log them."""
        self._record_scheduled = False
        events, self._unrecorded = self._unrecorded, []
        if not events:
            return
        self._record(events)
        self._audit_handed = self._unrecorded_upto
        self._credit_audit()
        for ev in events:
            log.info(
                "alarm",
                unit=ev.bed.unit,
                bed=ev.bed.bed,
                kind=ev.kind,
                state=ev.state.value,
                priority=ev.priority.value,
                trigger=ev.trigger.value,
                alarm_id=ev.alarm_id,
            )
            if ev.details.get("clear_reason") == BED_EVICTED:
                log.warning(
                    "alarm_closed_bed_evicted",
                    unit=ev.bed.unit,
                    bed=ev.bed.bed,
                    kind=ev.kind,
                    alarm_id=ev.alarm_id,
                    max_beds=self.engine.max_beds,
                    action="the bed is no longer monitored: raise service.max_beds",
                )

    def _dead_letter(self, item: _Inbound, exc: CodecError) -> None:
        topic = self.config.service.dead_letter_topic
        if not topic:
            return
        self.metrics.dead_letters_total.inc()
        body = msgspec.json.encode(
            {
                "topic": item.topic[:300],
                "code": exc.code,
                "field": exc.field,
                "reason": exc.reason[:300],
                "payload": item.payload[:2048].decode("utf-8", "replace"),
                "ts": round(item.arrived, 3),
            }
        )
        self._bounded_append(Outgoing(topic, body, retain=False))
        self._outbox_event.set()

    def process_batch(self, batch: list[_Inbound]) -> None:
        """Decode and hand one batch to the core; publish what it decides."""
        svc = self.config.service
        taken = Batch()
        sent: list[_Inbound] = []  # the items of ``taken``
        add, keep = taken.add, sent.append
        metrics = self.metrics
        serves_unit = self._serves
        max_future = svc.max_future_s
        kinds: dict[str, int] = {}  # messages handed to the core, counted once per batch
        newest = -math.inf  # data time of the newest waveform chunk
        for item in batch:
            try:
                topic = parse_inbound(item.topic, self.root)
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
                metrics.rejected(exc.code)
                log.warning(
                    "rejected",
                    topic=item.topic[:200],
                    code=exc.code,
                    field=exc.field,
                    reason=exc.reason[:300],
                )
                self._dead_letter(item, exc)
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
        done = self.clock()
        metrics.observe_batch(done, [item.arrived for item in batch])
        if newest > -math.inf:
            self._note_lag(done, max(0.0, done - newest))
        st = self.engine.stats
        metrics.sync_engine(
            st.beats, st.beats_valid, len(self.engine), st.beds_evicted, st.alarms_evicted
        )
        if st.dropped:
            metrics.sync_dropped(st.dropped)
            self._drop_log.report(self.engine.take_drop_notices(), st.dropped, done)
        self._publish_events(events)
        self._forget_evicted()

    def _to_core(self, batch: Batch, items: list[_Inbound]) -> list[AlarmEvent]:
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
                kind = parse_inbound(topic, self.root).kind
                log.exception("internal_error", topic=topic[:200], kind=kind)
                items = items[k + 1 :]
                rest = zip(batch.beds, batch.messages, batch.nows, strict=True)
                batch = Batch(itertools.islice(rest, k + 1, None))  # type: ignore[arg-type]
            else:
                return events + done if events else done

    def _note_lag(self, now: float, lag: float) -> None:
        """Export how far behind the data the core is; say so when it is falling behind."""
        self.lag_s = lag
        self.metrics.ingress_lag_seconds.set(lag)
        if lag > LAG_WARN_S and now - self._lag_warned_at >= LAG_WARN_EVERY_S:
            self._lag_warned_at = now
            log.warning(
                "falling_behind",
                lag_s=round(lag, 1),
                ingress=len(self._ingress),
                hint="more data than one instance processes: shard the care units "
                "(docs/scaling.md) or check the gateways' clocks",
            )

    async def _process_loop(self) -> None:
        ingress = self._ingress
        while True:
            await self._ingress_event.wait()
            self._ingress_event.clear()
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
            self._yield_wake.set()  # display work waiting for an empty ingress goes now
            if self._stopping.is_set():
                self._final_summaries()
                self._drained = True
                self._outbox_event.set()
                return

    def _processed(self, batch: list[_Inbound]) -> None:
        """The core has taken ``batch``: acknowledge it once what it caused is durable."""
        wait = self._ack_wait
        conn_id: int = -1
        mids: list[int] | None = None
        for item in batch:
            if item.mid:
                if item.conn != conn_id or mids is None:
                    conn_id, mids = item.conn, []
                    wait.append((self._seq, conn_id, mids))
                mids.append(item.mid)
        if mids is not None:
            self._ack_ready()
        conn = self._mqtt
        if (
            conn is not None
            and not self._stopping.is_set()
            and len(self._ingress) < (self.config.service.queue_max * 9 // 10)
        ):
            conn.resume_reading()

    async def _publish_summaries(self, part: int = 0, parts: int = 1) -> None:
        """Summaries (latest pressures, target, drugs, trend) of every ``parts``-th bed
        from ``part`` on, of those whose summary changed.

        In slices of ``SUMMARY_SLICE_BEDS`` beds with the loop free in between: at
        thousands of beds building every summary at once held the loop long
        enough to delay alarms by a quarter of a second.
        """
        engine = self.engine
        monitors = list(engine.beds())[part::parts]
        for i in range(0, len(monitors), SUMMARY_SLICE_BEDS):
            for mon in monitors[i : i + SUMMARY_SLICE_BEDS]:
                if engine.get(mon.bed) is mon:  # (else evicted since: its summary is gone)
                    self._queue_summary(mon)
            self._outbox_event.set()
            await self._yield_to_ingress()

    def _final_summaries(self) -> None:
        """On a graceful stop, every changed summary goes out before the offline status:
        the next run reads each bed's last data time from it (``_take_retained_summary``)."""
        if self.config.service.summary_s > 0:
            for mon in self.engine.beds():
                self._queue_summary(mon)

    def _queue_summary(self, mon: BedMonitor) -> None:
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
        if self._summaries.get(st.bed) == key:
            return
        self._summaries[st.bed] = key
        topic = summary_topic(self.root, st.bed)
        self._summary_box.pop(topic, None)
        self._summary_box[topic] = encode_summary(st)  # only the latest per bed waits

    async def _tick_loop(self) -> None:
        step = self.config.service.tick_s
        while not self._stopping.is_set():
            await self._sleep(step)
            now = self.clock()
            # in slices: the loop keeps reading and processing between them
            for events in self.engine.tick_slices(now, SLICE_BEDS):
                self._publish_events(events)
                self._forget_evicted()
                await asyncio.sleep(0)
            self._audit_poll(now)
            self._gc.step(time.monotonic())
            self.metrics.set_alarms_open(self.engine.open_alarms)

    async def _summary_loop(self) -> None:
        """Each bed's summary every ``summary_s``, in their own task: under load they wait
        for the core (``_yield_to_ingress``), and ticks must not wait with them.

        Spread over the period (a share of the beds every ``SUMMARY_STEP_S``), not
        all at once: at 5,000 beds a pass every 2 s was a burst of 5,000 builds and
        retained publishes, for this loop and for the broker, and the alarms
        raised in those seconds came late (p99 2-7 ms slower than in the others).
        """
        every = self.config.service.summary_s
        if every <= 0:
            return
        parts = max(1, round(every / SUMMARY_STEP_S))
        part = 0
        while not self._stopping.is_set():
            if self.connected.is_set():
                await self._publish_summaries(part, parts)
            part = (part + 1) % parts
            await self._sleep(every / parts)

    async def _watch_loop(self) -> None:
        """Measure how late the loop runs a short timer (streamproc_loop_lag_seconds)."""
        step = LOOP_WATCH_S
        observe = self.metrics.loop_lag_seconds.observe
        while not self._stopping.is_set():
            t = time.monotonic()
            await self._sleep(step)
            observe(max(0.0, time.monotonic() - t - step))


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
