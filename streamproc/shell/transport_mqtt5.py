"""The service's MQTT 5 connection: the ``mqtt5`` sans-I/O codec under an asyncio protocol.

Same interface as :mod:`streamproc.shell.transport_paho` (``Connection`` with ``connect``,
``subscribe``, ``unsubscribe``, ``publish``, ``ack``, ``pause_reading`` /
``resume_reading``, ``flush``, ``wait_lost``, ``disconnect``, ``abort``; the same
``Settings``, ``Will``, ``Inbound`` and errors), but the protocol is done here and
every packet is read and written by ``mqtt5`` (a Rust codec; the one aiomqtt 3 uses):

- **MQTT 5 only** (``Settings.v5`` must be true; 3.1.1 stays on the paho transport).
- Reads: ``data_received`` parses every complete packet of the chunk in a loop (no
  task per message); each PUBLISH goes to ``on_message`` synchronously, in order. At
  most ``read_budget`` packets are taken per loop turn, the rest continue in the
  next turn; :meth:`Connection.pause_reading` stops both the socket and the parsing
  of what is already buffered (the broker holds the rest).
- **Manual acknowledgement**: an inbound QoS 1 message gets its PUBACK only when
  :meth:`Connection.ack` is called; every packet queued in a loop turn (PUBACKs,
  publishes) leaves in one ``write`` at the end of the turn.
- QoS 1 publishes get packet ids and resolve a future on their PUBACK (a failure
  reason code: :class:`PublishRefusedError`); no more are in flight than the broker's
  Receive Maximum (the others wait, in order).
- Keepalive: a PINGREQ when nothing was sent, or nothing received, for about
  ``keepalive`` seconds; no packet at all from the broker for 1.5 keepalives with a
  ping unanswered is a lost connection (also while we keep writing).
- TLS is asyncio's (``ssl=`` the settings' context, ``server_hostname`` the host).

Nothing here reads or sets a private attribute of a library.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
from collections import deque
from collections.abc import Callable, Sequence
from typing import Final

import mqtt5

from streamproc.shell.transport_paho import (
    ConnectionLostError,
    ConnectRefusedError,
    Inbound,
    MqttError,
    PublishRefusedError,
    Settings,
)

__all__ = ["Connection"]

#: Packets parsed per loop turn before the loop runs again.
READ_BUDGET: Final = 200
#: How often the keepalive is checked (s).
KEEPALIVE_CHECK_S: Final = 1.0

_PUBLISH = mqtt5.PublishPacket
_PUBACK = mqtt5.PubAckPacket
_QOS = (mqtt5.QoS.AT_MOST_ONCE, mqtt5.QoS.AT_LEAST_ONCE)


def _words(code: int, enum: type[mqtt5.ConnAckReasonCode | mqtt5.PubAckReasonCode]) -> str:
    """A reason code in words ("not authorized"), its number if the enum lacks it."""
    try:
        return enum(code).name.replace("_", " ").lower().capitalize()
    except ValueError:
        return f"reason code {code}"


def _packet_length(buf: memoryview) -> int | None:
    """The length of the packet at the head of ``buf`` (fixed header included), or
    None if even the fixed header is incomplete."""
    multiplier = 1
    value = 0
    for i in range(1, min(len(buf), 5)):
        byte = buf[i]
        value += (byte & 0x7F) * multiplier
        if not byte & 0x80:
            return i + 1 + value
        multiplier *= 128
    return None


class _Protocol(asyncio.Protocol):
    """Hands the asyncio transport's events to the connection."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn

    def data_received(self, data: bytes) -> None:
        self.conn.feed(data)

    def connection_lost(self, exc: Exception | None) -> None:
        reason = (str(exc) or type(exc).__name__) if exc else "connection closed by the broker"
        self.conn.end(reason)


class Connection:
    """One MQTT 5 connection on the running event loop.

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
        if not settings.v5:
            raise ValueError("the mqtt5 transport speaks MQTT 5 only: use the paho transport")
        self.settings = settings
        self.read_budget = read_budget
        self._on_message = on_message
        self._log = logger
        self._loop = asyncio.get_running_loop()
        self._transport: asyncio.Transport | None = None
        self._connack: asyncio.Future[bool] = self._loop.create_future()
        self._lost: asyncio.Future[None] = self._loop.create_future()
        self._buf = b""
        self._out: list[bytes] = []
        self._flush_handle: asyncio.Handle | None = None
        self._more_handle: asyncio.Handle | None = None
        self._paused = False  # the caller's pause_reading
        self._socket_paused = False
        self._next_id = 0
        self._acks: dict[int, tuple[str, asyncio.Future[None]]] = {}  # publish id -> waiter
        self._subacks: dict[int, asyncio.Future[list[int]]] = {}
        self._quota = 65535  # QoS 1 publishes the broker takes unacknowledged
        self._waiting: deque[bytes] = deque()  # QoS 1 publishes over the quota, in order
        self._keepalive = settings.keepalive
        self._last_out = 0.0
        self._last_in = 0.0
        self._ping_sent: float | None = None
        self._ticker: asyncio.TimerHandle | None = None
        self.received = 0

    # ------------------------------------------------------------------ connect
    async def connect(self) -> bool:
        """Connect and wait for the CONNACK; the session-present flag.

        Raises :class:`ConnectRefusedError` or :class:`MqttError` (with the socket or
        TLS error's text) and leaves nothing open.
        """
        s = self.settings
        will = None
        if s.will is not None:
            will = mqtt5.Will(
                s.will.topic,
                payload=s.will.payload,
                qos=mqtt5.QoS.AT_LEAST_ONCE,
                retain=s.will.retain,
            )
        connect = mqtt5.ConnectPacket(
            s.client_id,
            username=s.username,
            password=None if s.password is None else s.password.encode(),
            clean_start=not s.persistent,
            will=will,
            keep_alive=s.keepalive,
            session_expiry_interval=s.session_expiry_s if s.persistent else 0,
            receive_max=s.receive_maximum or 65535,
        )
        try:
            async with asyncio.timeout(s.connect_timeout_s):
                transport, _ = await self._loop.create_connection(
                    lambda: _Protocol(self),
                    s.host,
                    s.port,
                    ssl=s.tls,
                    server_hostname=s.host if s.tls is not None else None,
                )
        except TimeoutError:
            raise MqttError(f"no connection within {s.connect_timeout_s:g} s") from None
        except (OSError, ValueError) as exc:  # ssl.SSLError is an OSError
            raise MqttError(_os_reason(exc)) from None
        self._transport = transport
        sock = transport.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                # an alarm is one small packet: sent now, not held back by Nagle's algorithm
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._last_in = self._loop.time()
        self._queue(connect.write())
        self._flush()
        try:
            async with asyncio.timeout(s.connect_timeout_s):
                present = await asyncio.shield(self._connack)
        except TimeoutError:
            self.abort()
            raise MqttError(f"no CONNACK within {s.connect_timeout_s:g} s") from None
        except MqttError:
            self.abort()
            raise
        if self._keepalive:
            self._ticker = self._loop.call_later(KEEPALIVE_CHECK_S, self._tick)
        return present

    @property
    def connected(self) -> bool:
        return self._connack.done() and not self._lost.done()

    async def wait_lost(self) -> None:
        """Return never; raise :class:`ConnectionLostError` once the connection is gone."""
        await asyncio.shield(self._lost)
        raise ConnectionLostError("disconnected")  # pragma: no cover - _lost only fails

    # ------------------------------------------------------------------ reading
    def pause_reading(self) -> None:
        """Take no more packets (the broker holds them); what was read stays buffered."""
        self._paused = True
        self._pause_socket()

    def resume_reading(self) -> None:
        if not self._paused or self._lost.done():
            return
        self._paused = False
        if self._buf:
            self._continue_soon()  # the packets read before the pause first
        else:
            self._resume_socket()

    def _pause_socket(self) -> None:
        if not self._socket_paused and self._transport is not None and not self._lost.done():
            self._transport.pause_reading()
            self._socket_paused = True

    def _resume_socket(self) -> None:
        if self._socket_paused and self._transport is not None and not self._lost.done():
            self._transport.resume_reading()
            self._socket_paused = False

    def _continue_soon(self) -> None:
        if self._more_handle is None:
            self._more_handle = self._loop.call_soon(self._continue)

    def _continue(self) -> None:
        self._more_handle = None
        if self._paused or self._lost.done():
            return
        if self._buf:
            self.feed(b"")
        if not self._paused and not self._buf_has_packet():
            self._resume_socket()

    def _buf_has_packet(self) -> bool:
        n = _packet_length(memoryview(self._buf))
        return n is not None and n <= len(self._buf)

    def feed(self, data: bytes) -> None:
        """Bytes from the socket (``b""``: none new): parse every complete packet buffered,
        up to the read budget. Called by the asyncio protocol, in arrival order."""
        buf = self._buf + data if self._buf else data
        self._last_in = self._loop.time()
        view = memoryview(buf)
        end = len(buf)
        offset = 0
        budget = self.read_budget
        read = mqtt5.read
        on_message = self._on_message
        try:
            while offset < end:
                if self._paused or self._lost.done():
                    break
                if budget == 0:
                    # the loop runs first; the socket waits until the buffer is parsed
                    self._pause_socket()
                    self._continue_soon()
                    break
                try:
                    packet, n = read(view[offset:])
                except IndexError:  # "Not enough bytes": the packet's rest comes later
                    length = _packet_length(view[offset:])
                    if length is not None and length <= end - offset:
                        self._protocol_error("malformed packet from the broker")
                        return
                    break
                except ValueError as exc:
                    self._protocol_error(f"malformed packet from the broker: {exc}")
                    return
                offset += n
                budget -= 1
                if type(packet) is _PUBLISH:
                    self.received += 1
                    qos = int(packet.qos)  # mqtt5.QoS is no int (and always truthy)
                    if qos > 1:
                        self._protocol_error("QoS 2 PUBLISH received (subscriptions are QoS <= 1)")
                        return
                    on_message(
                        Inbound(
                            packet.topic,
                            packet.payload,
                            packet.packet_id or 0,
                            qos,
                            packet.retain,
                        )
                    )
                else:
                    self._control(packet)
        finally:
            view.release()
        if self._lost.done():
            return
        self._buf = buf[offset:] if offset < end else b""
        if self._buf and self._paused:
            self._pause_socket()

    def _control(self, packet: mqtt5.Packet) -> None:
        """Every packet but PUBLISH."""
        if isinstance(packet, mqtt5.PubAckPacket):
            self._puback(packet)
        elif isinstance(packet, mqtt5.PingRespPacket):
            self._ping_sent = None
        elif isinstance(packet, mqtt5.SubAckPacket | mqtt5.UnsubAckPacket):
            done = self._subacks.get(packet.packet_id)
            if done is not None and not done.done():
                done.set_result([int(c) for c in packet.reason_codes])
        elif isinstance(packet, mqtt5.ConnAckPacket):
            self._handle_connack(packet)
        elif isinstance(packet, mqtt5.DisconnectPacket):
            code = int(packet.reason_code)
            reason = packet.reason_str or packet.reason_code.name.replace("_", " ").lower()
            self.end(f"the broker disconnected: {reason} (code {code})")
        else:
            self._protocol_error(f"unexpected {type(packet).__name__} from the broker")

    def _handle_connack(self, packet: mqtt5.ConnAckPacket) -> None:
        if self._connack.done():
            self._protocol_error("a second CONNACK")
            return
        code = int(packet.reason_code)
        if code >= 0x80:
            self._connack.set_exception(
                ConnectRefusedError(code, _words(code, mqtt5.ConnAckReasonCode))
            )
            return
        self._quota = packet.receive_max or 65535
        if packet.server_keep_alive is not None:
            self._keepalive = packet.server_keep_alive
        self._connack.set_result(bool(packet.session_present))

    def ack(self, mid: int, qos: int = 1) -> None:
        """Acknowledge a received QoS 1 message (the PUBACK goes out this loop turn)."""
        if qos and not self._lost.done():
            self._queue(_PUBACK(mid).write())

    # ------------------------------------------------------------------ writing
    def _queue(self, data: bytes) -> None:
        self._out.append(data)
        if self._flush_handle is None:
            self._flush_handle = self._loop.call_soon(self._flush)

    def _flush(self) -> None:
        """Write everything queued in one ``write``."""
        if self._flush_handle is not None:
            self._flush_handle.cancel()
            self._flush_handle = None
        out = self._out
        if not out or self._transport is None or self._lost.done():
            return
        self._out = []
        self._transport.write(out[0] if len(out) == 1 else b"".join(out))
        self._last_out = self._loop.time()

    def flush(self) -> None:
        """Write what is queued now rather than at the end of the loop turn."""
        if self._out:
            self._flush()

    def _tick(self) -> None:
        """Keepalive: a PINGREQ when nothing was sent, or nothing received, for about a
        keepalive; gone when a ping went unanswered and nothing at all came for 1.5
        keepalives (a backlog delays a PINGRESP but keeps data coming)."""
        self._ticker = None
        if self._lost.done():
            return
        now = self._loop.time()
        keepalive = self._keepalive
        silent = now - self._last_in
        if self._ping_sent is not None:
            if now - self._ping_sent >= keepalive and silent >= 1.5 * keepalive:
                self.end("keepalive: no answer from the broker")
                return
        elif now - self._last_out >= keepalive * 0.75 or silent >= keepalive:
            self._ping_sent = now
            self._queue(mqtt5.PingReqPacket().write())
        self._ticker = self._loop.call_later(KEEPALIVE_CHECK_S, self._tick)

    # ------------------------------------------------------------------ publish / subscribe
    def _packet_id(self) -> int:
        for _ in range(65535):
            self._next_id = self._next_id % 65535 + 1
            pid = self._next_id
            if pid not in self._acks and pid not in self._subacks:
                return pid
        raise MqttError("no free packet id: 65,535 packets unacknowledged")

    def publish(
        self, topic: str, payload: bytes, *, qos: int, retain: bool
    ) -> asyncio.Future[None] | None:
        """Queue a message for this turn's write; for QoS 1 a future set on its PUBACK.

        The future fails with :class:`PublishRefusedError` on a failure reason code and
        with :class:`ConnectionLostError` if the connection goes first. Raises
        :class:`MqttError` when not connected, :class:`ValueError` for a topic MQTT
        does not allow (empty, or with a wildcard).
        """
        if self._lost.done():
            raise ConnectionLostError("not connected")
        if not topic or "+" in topic or "#" in topic:
            raise ValueError(f"invalid topic to publish to: {topic!r}")
        if not qos:
            self._queue(_PUBLISH(topic, payload, retain=retain).write())
            return None
        pid = self._packet_id()
        data = _PUBLISH(topic, payload, qos=_QOS[1], retain=retain, packet_id=pid).write()
        done: asyncio.Future[None] = self._loop.create_future()
        self._acks[pid] = (topic, done)
        if self._quota > 0 and not self._waiting:
            self._quota -= 1
            self._queue(data)
        else:
            self._waiting.append(data)  # sent when a PUBACK frees the broker's window
        return done

    def _puback(self, packet: mqtt5.PubAckPacket) -> None:
        waiter = self._acks.pop(packet.packet_id, None)
        if waiter is None:
            return  # not ours (a duplicate): nothing was in flight with that id
        if self._waiting:
            self._queue(self._waiting.popleft())
        else:
            self._quota += 1
        topic, done = waiter
        if done.done():
            return
        code = int(packet.reason_code)
        if code >= 0x80:
            reason = packet.reason_str or _words(code, mqtt5.PubAckReasonCode)
            done.set_exception(PublishRefusedError(topic, code, reason))
        else:
            done.set_result(None)

    async def subscribe(self, filters: Sequence[tuple[str, int]], *, timeout: float) -> list[int]:
        """Subscribe and wait for the SUBACK; its reason codes, one per filter."""
        pid = self._packet_id()
        topic_filters = [
            # retained flag only on messages sent because of the subscription (as paho)
            mqtt5.TopicFilter(f, max_qos=_QOS[min(q, 1)], retain_as_published=False)
            for f, q in filters
        ]
        return await self._request(pid, mqtt5.SubscribePacket(pid, topic_filters).write(), timeout)

    async def unsubscribe(self, filters: Sequence[str], *, timeout: float) -> list[int]:
        pid = self._packet_id()
        packet = mqtt5.UnsubscribePacket(pid, list(filters))
        return await self._request(pid, packet.write(), timeout, "UNSUBACK")

    async def _request(
        self, pid: int, data: bytes, timeout: float, what: str = "SUBACK"
    ) -> list[int]:
        if self._lost.done():
            raise ConnectionLostError("not connected")
        done: asyncio.Future[list[int]] = self._loop.create_future()
        self._subacks[pid] = done
        self._queue(data)
        try:
            async with asyncio.timeout(timeout):
                return await asyncio.shield(done)
        except TimeoutError:
            raise MqttError(f"no {what} within {timeout:g} s") from None
        except asyncio.CancelledError:
            if self._lost.done() and done.cancelled():
                raise ConnectionLostError(f"disconnected while waiting for the {what}") from None
            raise
        finally:
            self._subacks.pop(pid, None)

    # ------------------------------------------------------------------ connection state
    def _protocol_error(self, reason: str) -> None:
        if self._log is not None:
            self._log.warning("mqtt protocol error: %s", reason)
        self.end(reason)

    def end(self, reason: str) -> None:
        """The connection is over (socket lost, protocol error, disconnect): every waiter
        learns it, with ``reason``; nothing more is read or written."""
        error = ConnectionLostError(reason)
        if not self._connack.done():
            self._connack.set_exception(error)
            self._connack.exception()  # retrieved: connect() may never await it
        if not self._lost.done():
            self._lost.set_exception(error)
            self._lost.exception()
        for _topic, done in self._acks.values():
            if not done.done():
                done.set_exception(error)
                done.exception()
        self._acks.clear()
        self._waiting.clear()
        for waiter in self._subacks.values():
            if not waiter.done():
                waiter.cancel()
        for handle in (self._ticker, self._flush_handle, self._more_handle):
            if handle is not None:
                handle.cancel()
        self._ticker = self._flush_handle = self._more_handle = None
        self._out = []
        self._buf = b""
        transport = self._transport
        if transport is not None and not transport.is_closing():
            transport.abort()

    async def disconnect(self, *, timeout: float = 5.0) -> None:
        """Write what is queued, say DISCONNECT (no Last Will), close."""
        if self._lost.done() or self._transport is None:
            return
        self._queue(mqtt5.DisconnectPacket().write())
        self._flush()
        self._transport.close()  # after the buffered bytes are written
        with contextlib.suppress(MqttError, TimeoutError):
            async with asyncio.timeout(timeout):
                await self.wait_lost()
        self.end("disconnected")

    def abort(self) -> None:
        """Close the socket now, sending nothing (the broker publishes the Last Will)."""
        self.end("aborted")


def _os_reason(exc: BaseException) -> str:
    """A socket error in words that name the cause (asyncio's "Connect call failed"
    gets the errno's "Connection refused")."""
    text = str(exc) or type(exc).__name__
    if isinstance(exc, OSError) and exc.errno is not None:
        name = os.strerror(exc.errno)
        if name.lower() not in text.lower():
            return f"{name}: {text}"
    return text
