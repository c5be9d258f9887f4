"""The service's MQTT connection: paho-mqtt 2.x on the asyncio loop, public API only.

paho's external-loop API does the protocol (``socket()``, ``loop_read()``,
``loop_write()``, ``loop_misc()``, ``want_write()`` and the socket callbacks, as
in paho's own asyncio example); this module only moves readiness between the
event loop and paho, and turns paho's callbacks into futures:

- **Manual acknowledgement** (``Client(manual_ack=True)``): an inbound QoS 1
  message is handed to ``on_message`` with its packet id, and no PUBACK leaves
  until the caller says :meth:`Connection.ack`. The service acknowledges once the
  message was processed and what it caused is durable: a processor killed
  before that gets the message again from its persistent session.
- Reads: when the socket is readable, up to ``read_budget`` packets are taken
  in one go (``loop_read()`` reads one packet per call here), then the loop
  runs again; :meth:`Connection.pause_reading` stops taking packets (the
  broker then keeps the rest: TCP and its in-flight window hold them back).
- Writes: whatever paho queues in a loop turn (PUBACKs, publishes) is written
  at the end of that turn; a writer is registered only while the socket's
  send buffer is full.
- QoS 1 publishes resolve a future on their PUBACK (:meth:`Connection.publish`);
  subscriptions on their SUBACK.
- A refused CONNACK is :class:`ConnectRefusedError` (``auth`` set when it refused the
  credentials); a lost connection is :class:`ConnectionLostError`.

Nothing here reads or sets a private attribute of paho.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import ssl
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Final, NamedTuple

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

__all__ = [
    "AUTH_REFUSED_CODES",
    "ConnectRefusedError",
    "Connection",
    "ConnectionLostError",
    "Inbound",
    "MqttError",
    "PublishRefusedError",
    "Settings",
    "Will",
]

#: CONNACK reason codes that refuse the credentials: MQTT 5's "Bad User Name or
#: Password" (134) and "Not authorized" (135); paho maps MQTT 3.1.1's return codes
#: 4 and 5 onto the same two.
AUTH_REFUSED_CODES: Final = frozenset({134, 135})
#: Packets taken from the socket per readiness event before the loop runs again.
READ_BUDGET: Final = 200
#: How often paho's keepalive bookkeeping (``loop_misc``) runs (s).
MISC_EVERY_S: Final = 1.0


class MqttError(Exception):
    """The broker connection failed; ``reason`` says how, in words."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)


class ConnectionLostError(MqttError):
    """The connection broke (network, broker gone, keepalive, a protocol error)."""


class ConnectRefusedError(MqttError):
    """The broker answered CONNECT with a refusal.

    Attributes:
        code: the CONNACK reason code (MQTT 5 numbering).
        auth: the broker refused the credentials (bad username or password, not
            authorised): a configuration error, not a broker outage.
    """

    def __init__(self, code: int, reason: str) -> None:
        self.code = code
        self.auth = code in AUTH_REFUSED_CODES
        super().__init__(f"connection refused by the broker: {reason} (code {code})")


class PublishRefusedError(MqttError):
    """The broker answered a QoS 1 PUBLISH with a failure reason code (e.g. not authorised)."""

    def __init__(self, topic: str, code: int, reason: str) -> None:
        self.topic = topic
        self.code = code
        super().__init__(f"publish to {topic!r} refused by the broker: {reason} (code {code})")


@dataclass(frozen=True, slots=True)
class Will:
    """The Last Will: published (QoS 1) by the broker if the connection dies unannounced."""

    topic: str
    payload: bytes
    retain: bool = True


@dataclass(frozen=True, slots=True)
class Settings:
    """How to connect. ``persistent``: fixed session kept ``session_expiry_s`` by the broker."""

    host: str
    port: int
    client_id: str
    v5: bool = True
    persistent: bool = False
    session_expiry_s: int = 3600
    username: str | None = None
    password: str | None = None
    tls: ssl.SSLContext | None = None
    will: Will | None = None
    keepalive: int = 10
    connect_timeout_s: float = 10.0
    #: MQTT 5: at most this many QoS 1 messages unacknowledged towards us (the broker's
    #: window; under 3.1.1 its max_inflight_messages is). None: the broker's default.
    receive_maximum: int | None = None


class Inbound(NamedTuple):
    """One received PUBLISH. ``mid`` and ``qos`` are what :meth:`Connection.ack` takes.

    (A named tuple: one is built per message, and a tuple is the cheapest to build.)
    """

    topic: str
    payload: bytes
    mid: int
    qos: int
    retain: bool


def _topic(message: paho.MQTTMessage) -> str:
    try:
        return message.topic
    except UnicodeDecodeError:  # brokers refuse such topics; rejected downstream if one came
        return "\ufffd"


class Connection:
    """One MQTT connection on the running event loop.

    ``on_message`` is called synchronously, in arrival order, for every PUBLISH
    (QoS 0 and 1); QoS 1 ones must be acknowledged with :meth:`ack`, in the order
    they arrived (MQTT requires PUBACKs in order).
    """

    def __init__(
        self,
        settings: Settings,
        on_message: Callable[[Inbound], None],
        *,
        logger: logging.Logger | None = None,
        read_budget: int = READ_BUDGET,
    ) -> None:
        self.settings = settings
        self.read_budget = read_budget
        self._on_message = on_message
        self._loop = asyncio.get_running_loop()
        self._loop_thread = threading.get_ident()
        client = paho.Client(
            CallbackAPIVersion.VERSION2,
            client_id=settings.client_id,
            clean_session=None if settings.v5 else not settings.persistent,
            protocol=paho.MQTTv5 if settings.v5 else paho.MQTTv311,
            manual_ack=True,
        )
        if logger is not None:
            client.enable_logger(logger)
        if settings.username is not None:
            client.username_pw_set(settings.username, settings.password)
        if settings.tls is not None:
            client.tls_set_context(settings.tls)
        if settings.will is not None:
            client.will_set(settings.will.topic, settings.will.payload, 1, settings.will.retain)
        client.connect_timeout = settings.connect_timeout_s
        client.max_queued_messages_set(0)  # never refuse a publish: the caller bounds them
        client.on_connect = self._handle_connect
        client.on_disconnect = self._handle_disconnect
        client.on_message = self._handle_message
        client.on_publish = self._handle_publish
        client.on_subscribe = self._handle_suback
        client.on_unsubscribe = self._handle_suback
        client.on_socket_close = self._handle_socket_close
        self._client = client
        self._connack: asyncio.Future[bool] = self._loop.create_future()
        self._lost: asyncio.Future[None] = self._loop.create_future()
        self._acks: dict[int, tuple[str, asyncio.Future[None]]] = {}  # publish mid -> waiter
        self._subacks: dict[int, asyncio.Future[list[int]]] = {}
        self._fd: int | None = None
        self._reading = False
        self._writer = False
        self._flush_handle: asyncio.Handle | None = None
        self._misc: asyncio.TimerHandle | None = None
        self._progress = 0  # packets handed to a callback: loop_read made progress
        self.received = 0

    # ------------------------------------------------------------------ connect
    async def connect(self) -> bool:
        """Connect and wait for the CONNACK; the session-present flag.

        Raises :class:`ConnectRefusedError` or :class:`MqttError` (with the socket or
        TLS error's text) and leaves nothing open.
        """
        s = self.settings
        props = None
        if s.v5 and (s.persistent or s.receive_maximum):
            props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
            if s.persistent:
                props.SessionExpiryInterval = s.session_expiry_s
            if s.receive_maximum:
                props.ReceiveMaximum = s.receive_maximum
        clean_start: Any = (not s.persistent) if s.v5 else paho.MQTT_CLEAN_START_FIRST_ONLY
        try:
            # blocking (DNS, TCP, TLS handshake, CONNECT written): in a thread, so that the
            # loop keeps ticking and processing while a broker is slow or unreachable
            await self._loop.run_in_executor(
                None,
                lambda: self._client.connect(
                    s.host, s.port, s.keepalive, clean_start=clean_start, properties=props
                ),
            )
        except (OSError, ValueError) as exc:  # ssl.SSLError is an OSError
            self._close_socket()
            raise MqttError(str(exc) or type(exc).__name__) from None
        sock = self._client.socket()
        if not isinstance(sock, socket.socket):  # ssl.SSLSocket is one
            self._close_socket()
            raise MqttError("no TCP socket after connect")
        with contextlib.suppress(OSError):
            # an alarm is one small packet: sent now, not held back by Nagle's algorithm
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._client.on_socket_register_write = self._register_write
        self._client.on_socket_unregister_write = self._unregister_write
        self._attach(sock)
        self._flush()  # whatever paho queued from its thread (the CONNECT, if not yet out)
        self._misc = self._loop.call_later(MISC_EVERY_S, self._loop_misc)
        try:
            async with asyncio.timeout(s.connect_timeout_s):
                return await asyncio.shield(self._connack)
        except TimeoutError:
            self.abort()
            raise MqttError(f"no CONNACK within {s.connect_timeout_s:g} s") from None
        except MqttError:
            self.abort()
            raise

    @property
    def connected(self) -> bool:
        return self._connack.done() and not self._lost.done()

    async def wait_lost(self) -> None:
        """Return never; raise :class:`ConnectionLostError` once the connection is gone."""
        await asyncio.shield(self._lost)
        raise ConnectionLostError("disconnected")  # pragma: no cover - _lost only fails

    # ------------------------------------------------------------------ reading
    def pause_reading(self) -> None:
        """Take no more packets from the socket (the broker holds them)."""
        if self._reading and self._fd is not None:
            self._loop.remove_reader(self._fd)
        self._reading = False

    def resume_reading(self) -> None:
        if not self._reading and self._fd is not None and not self._lost.done():
            self._loop.add_reader(self._fd, self._on_readable)
            self._reading = True

    def _on_readable(self) -> None:
        if not self._reading:
            return
        client = self._client
        for _ in range(self.read_budget):
            before = self._progress
            rc = client.loop_read()
            if rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
                self._fail(f"read failed: {paho.error_string(rc)}")
                return
            if self._progress == before or not self._reading:
                # the socket is empty, or a packet without a callback (PINGRESP):
                # the loop's level-triggered poll calls again if more is there
                break
        sock = client.socket()
        if isinstance(sock, ssl.SSLSocket) and self._reading and sock.pending():
            # TLS: decrypted bytes wait in the SSL object, which the poll does not see
            self._loop.call_soon(self._on_readable)

    def _handle_message(self, _c: paho.Client, _u: Any, message: paho.MQTTMessage) -> None:
        self._progress += 1
        self.received += 1
        payload = message.payload
        self._on_message(
            Inbound(
                _topic(message),
                payload if type(payload) is bytes else bytes(payload),
                message.mid,
                message.qos,
                bool(message.retain),
            )
        )

    def ack(self, mid: int, qos: int = 1) -> None:
        """Acknowledge a received QoS 1 message (the PUBACK goes out this loop turn)."""
        if qos and not self._lost.done():
            self._client.ack(mid, qos)

    # ------------------------------------------------------------------ writing
    def _register_write(self, _c: paho.Client, _u: Any, _sock: Any) -> None:
        if threading.get_ident() != self._loop_thread:
            self._loop.call_soon_threadsafe(self._flush)
        elif self._flush_handle is None:
            self._flush_handle = self._loop.call_soon(self._flush)

    def _unregister_write(self, _c: paho.Client, _u: Any, _sock: Any) -> None:
        if self._writer and self._fd is not None:
            self._loop.remove_writer(self._fd)
        self._writer = False

    def _flush(self) -> None:
        """Write what paho queued; if the socket is full, wait until it is writable."""
        if self._flush_handle is not None:
            self._flush_handle.cancel()
            self._flush_handle = None
        client = self._client
        if client.socket() is None:
            return
        # paho reports each written QoS 0 publish through on_publish (building a
        # ReasonCode and a Properties for it): not wanted, and its packet id may equal a
        # waiting QoS 1 one's. PUBACKs are only read, never during a write.
        client.on_publish = None
        try:
            rc = client.loop_write()
        finally:
            client.on_publish = self._handle_publish
        if rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
            self._fail(f"write failed: {paho.error_string(rc)}")
            return
        if client.want_write() and not self._writer and self._fd is not None:
            self._loop.add_writer(self._fd, self._flush)
            self._writer = True

    def flush(self) -> None:
        """Write what is queued now rather than at the end of the loop turn."""
        if self._flush_handle is not None:
            self._flush()

    def _loop_misc(self) -> None:
        self._misc = None
        if self._lost.done():
            return
        if self._client.loop_misc() != MQTTErrorCode.MQTT_ERR_SUCCESS and not self._lost.done():
            self._fail("keepalive: no answer from the broker")
            return
        self._misc = self._loop.call_later(MISC_EVERY_S, self._loop_misc)

    # ------------------------------------------------------------------ publish / subscribe
    def publish(
        self, topic: str, payload: bytes, *, qos: int, retain: bool
    ) -> asyncio.Future[None] | None:
        """Queue a message for this turn's write; for QoS 1 a future set on its PUBACK.

        The future fails with :class:`PublishRefusedError` on a failure reason code and
        with :class:`ConnectionLostError` if the connection goes first. Raises
        :class:`MqttError` when not connected, :class:`ValueError` for a topic paho
        refuses.
        """
        if self._lost.done():
            raise ConnectionLostError("not connected")
        info = self._client.publish(topic, payload, qos, retain)
        if info.rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
            raise MqttError(f"publish refused: {paho.error_string(info.rc)}")
        if not qos:
            return None
        done: asyncio.Future[None] = self._loop.create_future()
        # the PUBACK is read in a later loop turn: the waiter is registered before it
        self._acks[info.mid] = (topic, done)
        return done

    def _handle_publish(
        self, _c: paho.Client, _u: Any, mid: int, reason: ReasonCode, _p: Any
    ) -> None:
        self._progress += 1
        waiter = self._acks.pop(mid, None)
        if waiter is None or waiter[1].done():
            return
        topic, done = waiter
        if reason.is_failure:
            done.set_exception(PublishRefusedError(topic, reason.value, str(reason)))
        else:
            done.set_result(None)

    async def subscribe(self, filters: Sequence[tuple[str, int]], *, timeout: float) -> list[int]:
        """Subscribe and wait for the SUBACK; its reason codes, one per filter."""
        rc, mid = self._client.subscribe(list(filters))
        return await self._await_suback(rc, mid, timeout, "SUBACK")

    async def unsubscribe(self, filters: Sequence[str], *, timeout: float) -> list[int]:
        rc, mid = self._client.unsubscribe(list(filters))
        return await self._await_suback(rc, mid, timeout, "UNSUBACK")

    async def _await_suback(
        self, rc: MQTTErrorCode, mid: int | None, timeout: float, what: str
    ) -> list[int]:
        if rc != MQTTErrorCode.MQTT_ERR_SUCCESS or mid is None:
            raise MqttError(f"cannot send: {paho.error_string(rc)}")
        done: asyncio.Future[list[int]] = self._loop.create_future()
        self._subacks[mid] = done
        self._lost.add_done_callback(lambda _f: done.done() or done.cancel())
        try:
            async with asyncio.timeout(timeout):
                await asyncio.shield(done)
        except TimeoutError:
            raise MqttError(f"no {what} within {timeout:g} s") from None
        except asyncio.CancelledError:
            if self._lost.done() and done.cancelled():
                raise ConnectionLostError(f"disconnected while waiting for the {what}") from None
            raise
        finally:
            self._subacks.pop(mid, None)
        return done.result()

    def _handle_suback(
        self, _c: paho.Client, _u: Any, mid: int, reasons: list[ReasonCode], _p: Any
    ) -> None:
        self._progress += 1
        done = self._subacks.get(mid)
        if done is not None and not done.done():
            done.set_result([r.value for r in reasons])

    # ------------------------------------------------------------------ connection state
    def _handle_connect(
        self, _c: paho.Client, _u: Any, flags: Any, reason: ReasonCode, _p: Any
    ) -> None:
        self._progress += 1
        if self._connack.done():
            return
        if reason.is_failure:
            self._connack.set_exception(ConnectRefusedError(reason.value, str(reason)))
        else:
            self._connack.set_result(bool(flags.session_present))

    def _handle_disconnect(
        self, _c: paho.Client, _u: Any, _flags: Any, reason: ReasonCode, _p: Any
    ) -> None:
        self._progress += 1
        text = str(reason) if reason.is_failure else "connection closed"
        self._fail(text)

    def _attach(self, sock: Any) -> None:
        if self._fd is None and not self._lost.done() and sock.fileno() >= 0:
            self._fd = sock.fileno()
            self.resume_reading()

    def _handle_socket_close(self, _c: paho.Client, _u: Any, _sock: Any) -> None:
        self._remove_fd()

    def _fail(self, reason: str) -> None:
        """The connection is over: every waiter learns it; nothing more is read or written."""
        self._remove_fd()
        error = ConnectionLostError(reason)
        if not self._connack.done():
            self._connack.set_exception(error)
            self._connack.exception()  # retrieved: connect() may never await it
        if not self._lost.done():
            self._lost.set_exception(error)
            self._lost.exception()
        for _topic_name, done in self._acks.values():
            if not done.done():
                done.set_exception(error)
                done.exception()
        self._acks.clear()
        if self._misc is not None:
            self._misc.cancel()
            self._misc = None
        self._close_socket()

    def _remove_fd(self) -> None:
        if self._fd is not None:
            if self._reading:
                self._loop.remove_reader(self._fd)
            if self._writer:
                self._loop.remove_writer(self._fd)
        self._reading = self._writer = False
        self._fd = None
        if self._flush_handle is not None:
            self._flush_handle.cancel()
            self._flush_handle = None

    def _close_socket(self) -> None:
        sock = self._client.socket()
        if sock is not None:
            self._remove_fd()
            with contextlib.suppress(OSError):
                sock.close()

    async def disconnect(self, *, timeout: float = 5.0) -> None:
        """Write what is queued, say DISCONNECT (no Last Will), close."""
        if self._lost.done():
            return
        self._client.disconnect()
        self._flush()
        with contextlib.suppress(MqttError, TimeoutError):
            async with asyncio.timeout(timeout):
                await self.wait_lost()
        self._fail("disconnected")

    def abort(self) -> None:
        """Close the socket now, sending nothing (the broker publishes the Last Will)."""
        self._fail("aborted")
