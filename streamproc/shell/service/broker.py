"""The service's side of the broker: TLS, connection settings, subscriptions, PUBACK
waits, and one log line per failure that says what to check."""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import Callable
from typing import Final

import msgspec

from streamproc import __version__
from streamproc.shell import transport_mqtt5
from streamproc.shell import transport_paho as paho_transport
from streamproc.shell.config import ConfigError, StreamprocConfig, parse_broker_url
from streamproc.shell.logs import get_logger
from streamproc.shell.metrics import ServiceMetrics
from streamproc.shell.service.clock import Clock
from streamproc.shell.sharding import Shard, owned_units, parse_units, serves
from streamproc.shell.transport_paho import (
    ConnectionLostError,
    ConnectRefusedError,
    Inbound,
    MqttError,
    Settings,
    Will,
)
from streamproc.wire.outbound import encode_status
from streamproc.wire.topics import alarms_filter, inbound_filters, status_topic, summary_filter

__all__ = ["BrokerLink", "MqttConnection", "served_units", "tls_hint", "tls_reset_hint"]

#: A broker connection: the ``mqtt5`` codec's (MQTT 5) or paho's (3.1.1, or chosen by
#: ``service.transport = "paho"``); the same interface.
MqttConnection = paho_transport.Connection | transport_mqtt5.Connection

log = get_logger("streamproc.shell.service")

#: Session expiry asked of the broker: queued QoS 1 messages wait this long (s).
SESSION_EXPIRY_S: Final = 3600
#: MQTT 5 Receive Maximum: inbound QoS 1 messages the broker sends ahead of our PUBACKs
#: (which wait until they are processed and durable). Enough to keep the core busy for
#: tens of ms; small enough that a PUBACK for our own publish is not queued behind a
#: whole backlog (MQTT 3.1.1: the broker's max_inflight_messages, 20 by default).
RECEIVE_MAXIMUM: Final = 1000
#: A PUBACK is overdue when this long passes with nothing at all received (s).
PUBACK_WAIT_S: Final = 10.0
#: Most topic filters in one SUBSCRIBE or UNSUBSCRIBE packet (six per listed care unit).
SUBSCRIBE_BATCH: Final = 120
#: After the broker refused the credentials: the first retry in 5-10 s, doubling up to
#: 5 min (a wrong password is fixed by a person, not by hammering the broker).
AUTH_RETRY_BASE_S: Final = 10.0
AUTH_RETRY_CAP_S: Final = 300.0
#: Where the credentials come from, for the error that names them.
CREDENTIAL_SETTINGS: Final = (
    "service.username/service.password (STREAMPROC_USERNAME/STREAMPROC_PASSWORD)"
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


#: A TLS connection the broker reset, this client having no certificate (see below).
_RESET_HINT: Final = (
    "the broker closed the TLS connection before answering: if it requires a client "
    "certificate (require_certificate), set service.tls_cert and service.tls_key"
)


def tls_reset_hint(reason: str, broker: str, tls_cert: str) -> str | None:
    """What to check when a broker reset a TLS connection and no client certificate is
    configured; None otherwise.

    TLS 1.3: a broker that requires client certificates finishes the handshake, then
    sends its alert and closes. Whether the client then reads the alert
    (CERTIFICATE_REQUIRED), an EOF, or a reset of its CONNECT depends on timing (a busy
    host gives the reset): all three must name the setting.
    """
    reset = "RESET BY PEER" in reason.upper() or "ECONNRESET" in reason.upper()
    return _RESET_HINT if reset and broker.startswith("mqtts://") and not tls_cert else None


def served_units(status: bytes) -> tuple[str, ...]:
    """The listed units a status payload says its instance served (``()``: all, or unreadable)."""
    try:
        units = msgspec.json.decode(status).get("units") or []
        return parse_units(",".join(u for u in units if isinstance(u, str)))
    except (msgspec.DecodeError, AttributeError, TypeError, ValueError):
        return ()


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


def _mqtt_logger() -> logging.Logger:
    """The logger given to every MQTT client of one service (paho's messages go through
    it): the service's own, outside the ``logging`` tree, so that nothing is configured
    by importing or constructing the service."""
    logger = logging.Logger("streamproc.mqtt", logging.WARNING)
    logger.propagate = False
    logger.addHandler(_MqttLogBridge())
    return logger


def _tls_context(config: StreamprocConfig, tls: bool) -> ssl.SSLContext | None:
    """TLS for ``mqtts://`` or when a CA is set (None: plain MQTT), built once at start.

    The broker's certificate is verified against ``tls_ca`` (the system's CAs when
    empty) and must be valid for the broker URL's host; ``tls_cert``/``tls_key`` are
    this client's certificate for a listener that requires one. A file that cannot be
    loaded is a :class:`ConfigError` naming the setting.
    """
    svc = config.service
    if not (tls or svc.tls_ca):
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
                f"cannot load {svc.tls_cert!r} (key {svc.tls_key or 'in the same file'!r}): {exc}",
            ) from None
    elif svc.tls_key:
        raise ConfigError("service.tls_key", "is set but service.tls_cert is not")
    return context


class BrokerLink:
    """Where and how this instance connects, what it subscribes, and the connection now."""

    def __init__(self, config: StreamprocConfig, clock: Clock, metrics: ServiceMetrics) -> None:
        svc = config.service
        if not svc.broker:
            raise ConfigError("service.broker", "no broker configured (use --broker mqtt://...)")
        self.config = config
        self.clock = clock
        self.metrics = metrics
        self.address = parse_broker_url(svc.broker)
        self._tls = _tls_context(config, self.address.tls)
        self.root = svc.root
        listed = parse_units(svc.units)
        self.shard = Shard.parse(svc.shard) if svc.shard.strip() else None
        #: The listed care units this instance serves (those its shard owns); empty when
        #: no units are listed (every unit, or the shard's share of every unit).
        self.units = frozenset(owned_units(listed, self.shard))
        self.listed = listed
        #: unit -> served here? None: every unit (see streamproc.shell.sharding.serves)
        self.serves = serves(listed, self.shard)
        #: The listed units the previous run served, from its retained status (read on start)
        self.previous_units: tuple[str, ...] = ()
        self.client_id = svc.client_id or f"streamproc-{svc.instance}"
        self.logger = _mqtt_logger()
        #: The connection now (None: none); ``conn_id`` numbers the connections.
        self.mqtt: MqttConnection | None = None
        self.conn_id = 0
        self.connected = asyncio.Event()
        #: Why the broker connection is down (None: connected, or never tried yet).
        self.broker_error: str | None = None
        self.reconnects = 0

    def status(self, *, online: bool) -> bytes:
        return encode_status(
            self.config.service.instance,
            online=online,
            version=__version__,
            ts=self.clock.wall(),
            units=self.units,
            shard=self.shard,
        )

    def status_topic(self) -> str:
        return status_topic(self.root, self.config.service.instance)

    def settings(self, identifier: str, *, persistent: bool, with_will: bool) -> Settings:
        svc = self.config.service
        will = None
        if with_will:
            will = Will(self.status_topic(), self.status(online=False))
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

    def connection(
        self, settings: Settings, on_message: Callable[[Inbound], None]
    ) -> MqttConnection:
        """A connection by the configured transport (MQTT 3.1.1 is paho's in any case)."""
        if self.config.service.transport == "mqtt5" and settings.v5:
            return transport_mqtt5.Connection(settings, on_message, logger=self.logger)
        return paho_transport.Connection(settings, on_message, logger=self.logger)

    def lost(self) -> None:
        """The connection is gone: nothing read on it can be acknowledged any more (the
        broker sends it again on the next connection of the session)."""
        if self.mqtt is not None:
            self.mqtt.abort()
        self.mqtt = None
        self.set_connected(value=False)

    def set_connected(self, *, value: bool) -> None:
        if value:
            self.connected.set()
        else:
            self.connected.clear()
        self.metrics.broker_connected.set(1 if value else 0)

    # ------------------------------------------------------------------ failures
    def tls_failed(self, reason: str, phase: str) -> None:
        """One error line when a connection failed for a TLS reason, with what to check."""
        svc = self.config.service
        hint = tls_hint(reason) or tls_reset_hint(reason, svc.broker, svc.tls_cert)
        if hint is not None:
            log.error(
                "broker_tls_failed",
                phase=phase,
                reason=reason[:300],
                hint=hint,
                broker=svc.broker,
                tls_ca=svc.tls_ca or "(system CAs)",
                client_cert=bool(svc.tls_cert),
            )

    def failed(self, exc: MqttError, phase: str, delay: float, outbox: int) -> None:
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
        self.tls_failed(exc.reason, phase)
        log.warning(
            "broker_unavailable" if phase != "connect" else "broker_disconnected",
            phase=phase,
            reason=exc.reason,
            retry_in=round(delay, 2),
            outbox=outbox,
        )

    # ------------------------------------------------------------------ subscriptions
    def summary_filters(self) -> list[str]:
        """Retained summaries to restore last data times from: the served units' when listed."""
        if self.listed:
            return [summary_filter(self.root, unit) for unit in sorted(self.units)]
        return [summary_filter(self.root)]

    def alarm_filters(self) -> list[str]:
        """Retained alarm state to restore: the served units' when they are listed."""
        if self.listed:
            return [alarms_filter(self.root, unit) for unit in sorted(self.units)]
        return [alarms_filter(self.root)]

    @staticmethod
    async def subscribe(client: MqttConnection, filters: list[str]) -> None:
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

    async def subscribe_inbound(self, client: MqttConnection) -> None:
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
        gone = sorted({*self.listed, *self.previous_units} - served)
        stale = inbound_filters(self.root, units=gone)
        if self.listed:
            stale = inbound_filters(self.root) + stale
            wanted = inbound_filters(self.root, units=sorted(served))
        else:
            wanted = inbound_filters(self.root)
        for i in range(0, len(stale), SUBSCRIBE_BATCH):
            await client.unsubscribe(stale[i : i + SUBSCRIBE_BATCH], timeout=60)
        await self.subscribe(client, wanted)


async def wait_puback(conn: MqttConnection, puback: asyncio.Future[None] | None) -> None:
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


async def confirmed(puback: asyncio.Future[None] | None, what: str) -> None:
    """Wait for a QoS 1 publish's PUBACK; no answer within 10 s is a broken connection."""
    if puback is None:
        return
    try:
        async with asyncio.timeout(10):
            await puback
    except TimeoutError:
        raise ConnectionLostError(f"no PUBACK for the {what} within 10 s") from None
