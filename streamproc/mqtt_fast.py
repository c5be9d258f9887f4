"""A batched read path for an :class:`aiomqtt.Client`: PUBLISH packets straight to a callback.

aiomqtt 2.x delivers each message through its own event-loop round: the socket
becomes readable, paho reads *one* packet (with a ``recv`` system call for
the fixed header, one per remaining-length byte and one for the body), the
message is wrapped, put on an :class:`asyncio.Queue`, and the consumer's
``async for`` creates a task and an :func:`asyncio.wait` to take it out. The
benchmark (``benchmarks/bench_service.py``) measured that at about 34 µs of
CPU per message on this machine before any processing: more than streamproc's
whole per-message processing.

:class:`FastReader` keeps aiomqtt for everything else (connection, TLS,
keepalive, subscriptions, publishing, disconnection) and replaces only the
reading side, before the client connects:

- the socket's reader callback reads until the socket is empty (at most
  ``budget`` packets per round, then yields to the loop and continues),
  instead of one packet per readiness event, through a 64 KiB buffer: a burst
  of packets costs one ``recv`` system call, not four per packet;
- the common packet, a PUBLISH at QoS 0 or 1 without MQTT 5 properties, is
  taken apart here (:func:`scan_publishes`) and handed to
  ``on_message(topic, payload)`` synchronously, in arrival order, with no
  per-message task, queue or wrapper object; paho's own path built an
  ``MQTTMessage`` and, under MQTT 5, two ``Properties`` objects per message,
  which the 5,000-bed profile showed as a fifth of the service's CPU;
- the PUBACKs of a read round leave as one packet buffer in one write (one
  ``send`` per round instead of one per message, a seventh of the CPU);
  whatever paho queues for sending (the service's publishes) is written in
  one flush per loop turn, instead of aiomqtt's ``call_soon_threadsafe`` +
  ``add_writer`` + ``remove_writer`` per packet; a writer is registered only
  while the socket's send buffer is full.

Every other packet (CONNACK, SUBACK, PUBACK of our publishes, PINGRESP, a
broker's DISCONNECT, QoS 2, a PUBLISH with properties or anything malformed)
goes to paho's own reader, whole and in order, so paho keeps its state and
its errors: it decides on everything this module does not recognise. A lost
connection is reported as paho reports it; the reader then fails the client's
``disconnected`` future exactly as aiomqtt's own reader does, and
:meth:`FastReader.wait_disconnected` raises :class:`aiomqtt.MqttError`.

It reaches into aiomqtt's and paho's private attributes (pinned: aiomqtt
``>=2.3,<3``, paho 2.x). :func:`FastReader.supported` checks that they are all
there; when they are not, the service falls back to ``client.messages`` and
logs it (``service.fast_read`` turns the fast path off by hand).
"""

from __future__ import annotations

import asyncio
import ssl
import struct
import threading
import time
from collections.abc import Callable
from typing import Any, Final, NamedTuple

import aiomqtt
import paho.mqtt.client as mqtt
from paho.mqtt.enums import MQTTErrorCode

__all__ = [
    "RECV_BUFFER",
    "SCAN_LIMIT",
    "SCAN_MORE",
    "SCAN_OTHER",
    "FastReader",
    "Sent",
    "puback_packets",
    "publish_packet",
    "remaining_length",
    "scan_publishes",
]

#: Bytes asked of the socket per ``recv`` system call.
RECV_BUFFER: Final = 65536
_AGAIN: Final = MQTTErrorCode.MQTT_ERR_AGAIN
_SUCCESS: Final = MQTTErrorCode.MQTT_ERR_SUCCESS
_CONN_LOST: Final = MQTTErrorCode.MQTT_ERR_CONN_LOST
_PUBACK: Final = 0x40  # the PUBACK packet type; with remaining length 2: 0x4002 then the id

#: :func:`scan_publishes` stopped at a packet that is not complete in the buffer.
SCAN_MORE: Final = 0
#: ... at a complete packet that is not a plain QoS 0/1 PUBLISH (paho reads it).
SCAN_OTHER: Final = 1
#: ... after ``limit`` packets.
SCAN_LIMIT: Final = 2
# the private attributes the fast path relies on
_CLIENT_ATTRS: Final = (
    "_client",
    "_loop",
    "_disconnected",
    "_on_socket_open",
    "_pending_publishes",
)
_PAHO_ATTRS: Final = (
    "_packet_read",
    "_loop_rc_handle",
    "_sock_recv",
    "_sock",
    "_in_packet",
    "_packet_queue",
    "_protocol",
    "_msgtime_mutex",
    "_handle_on_message",
    "on_socket_register_write",
    "on_socket_unregister_write",
    "want_write",
    "loop_write",
)


def _decode_topic(raw: bytes) -> str:
    # a topic that is not UTF-8 must not break the connection: replaced
    # characters make it an unknown topic, rejected and counted downstream
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.decode("utf-8", "replace")


def scan_publishes(
    buf: bytes,
    pos: int,
    *,
    v5: bool,
    limit: int,
    on_message: Callable[[str, bytes], None],
    acks: list[int],
) -> tuple[int, int, int]:
    """Take the plain PUBLISH packets from ``buf[pos:]``, in order, up to the first other one.

    A plain PUBLISH is complete in ``buf``, QoS 0 or 1, has a non-empty topic
    and, under MQTT 5 (``v5``), an empty property list: its topic and payload
    go to ``on_message``, the packet id of a QoS 1 one is appended to
    ``acks`` (the caller acknowledges them, in this order). Anything else --
    another packet type, QoS 2, properties (a topic alias among them),
    malformed lengths -- is left for paho, which knows the whole protocol.

    Returns ``(pos, packets, why)``: where the scan stopped, how many packets
    it took, and why it stopped: :data:`SCAN_MORE` (the packet at ``pos`` is
    not all in ``buf`` yet), :data:`SCAN_OTHER` (a complete packet that is not
    plain starts at ``pos``) or :data:`SCAN_LIMIT` (``limit`` packets taken).
    """
    end = len(buf)
    taken = 0
    while taken < limit:
        if end - pos < 2:
            return pos, taken, SCAN_MORE
        first = buf[pos]
        # the remaining length: 1 to 4 bytes of 7 bits, low bits first
        i = pos + 1
        byte = buf[i]
        i += 1
        length = byte & 0x7F
        shift = 7
        while byte & 0x80:
            if shift > 21:
                return pos, taken, SCAN_OTHER  # over 4 bytes: paho reports the error
            if i >= end:
                return pos, taken, SCAN_MORE
            byte = buf[i]
            i += 1
            length |= (byte & 0x7F) << shift
            shift += 7
        stop = i + length
        if stop > end:
            return pos, taken, SCAN_MORE
        # PUBLISH (type 3) at QoS 0 or 1 (bit 2 clear: not 2, not the invalid 3)
        if first & 0xF4 != 0x30 or length < 2:
            return pos, taken, SCAN_OTHER
        topic_end = i + 2 + ((buf[i] << 8) | buf[i + 1])
        j = topic_end
        if first & 0x02:
            j += 2
        if v5:
            if j >= stop or buf[j] != 0:
                return pos, taken, SCAN_OTHER  # properties (or none where due)
            j += 1
        if j > stop or topic_end == i + 2:
            return pos, taken, SCAN_OTHER  # lengths beyond the packet, or no topic
        on_message(_decode_topic(buf[i + 2 : topic_end]), buf[j:stop])
        if first & 0x02:
            acks.append((buf[topic_end] << 8) | buf[topic_end + 1])
        pos = stop
        taken += 1
    return pos, taken, SCAN_LIMIT


def puback_packets(ids: list[int]) -> bytes:
    """The PUBACK packets for ``ids``, in order, as one buffer (4 bytes each)."""
    return struct.pack(f"!{len(ids)}I", *[(_PUBACK << 24) | (2 << 16) | mid for mid in ids])


def publish_packet(topic: str, payload: bytes, *, retain: bool, v5: bool) -> bytes:
    """A QoS 0 PUBLISH packet (no properties under MQTT 5), as paho would build it."""
    name = topic.encode("utf-8")
    if not name or len(name) > 0xFFFF or "+" in topic or "#" in topic:
        raise ValueError(f"not a topic to publish to: {topic[:100]!r}")
    length = 2 + len(name) + len(payload) + (1 if v5 else 0)
    if length > 268_435_455:
        raise ValueError(f"payload too large for MQTT: {len(payload)} bytes")
    head = (b"\x31" if retain else b"\x30") + remaining_length(length)
    head += len(name).to_bytes(2, "big") + name
    if v5:
        head += b"\x00"  # no properties
    return head + payload


def remaining_length(n: int) -> bytes:
    """MQTT's variable-length encoding of a packet's remaining length (7 bits a byte)."""
    out = bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        if not n:
            out.append(byte)
            return bytes(out)
        out.append(byte | 0x80)


class Sent(NamedTuple):
    """A QoS 1 publish on its way: its packet id and the event its PUBACK sets."""

    mid: int
    event: asyncio.Event


class FastReader:
    """Install on a not-yet-connected client; messages go to ``on_message``."""

    __slots__ = (
        "_buf",
        "_client",
        "_flush_handle",
        "_loop_thread",
        "_on_message",
        "_orig_recv",
        "_out",
        "_paho",
        "_plain",
        "_pos",
        "_writer_fd",
        "budget",
    )

    def __init__(
        self,
        client: aiomqtt.Client,
        on_message: Callable[[str, bytes], None],
        *,
        budget: int = 1000,
    ) -> None:
        if not self.supported(client):
            raise TypeError(
                f"aiomqtt {getattr(aiomqtt, '__version__', '?')} lacks the internals the fast "
                "read path needs; use client.messages (service.fast_read = false)"
            )
        self._client = client
        self._paho: mqtt.Client = client._client
        self._on_message = on_message
        self.budget = budget
        self._buf = b""
        self._pos = 0
        self._plain = True
        self._orig_recv: Callable[[int], bytes] = self._paho._sock_recv
        paho = self._paho
        # paho's dispatcher matches every topic against its per-filter callbacks
        # (none are registered here) before calling on_message: skipped
        paho._handle_on_message = self._paho_message  # type: ignore[method-assign]
        paho._sock_recv = self._recv  # type: ignore[method-assign]
        original_open = client._on_socket_open

        def on_socket_open(pclient: mqtt.Client, userdata: Any, sock: Any) -> None:
            # aiomqtt's own handler registers its one-packet reader and the misc
            # task through call_soon_threadsafe; ours is queued after it and
            # replaces the reader for the same descriptor.
            original_open(pclient, userdata, sock)
            self._plain = not isinstance(sock, ssl.SSLSocket)
            # paho writes a byte to this socket pair on every queued packet (a PUBACK
            # per QoS 1 message) to wake its own network thread, which aiomqtt does
            # not run: a failing system call per message, dropped
            for name in ("_sockpairR", "_sockpairW"):
                pair = getattr(pclient, name, None)
                if pair is not None:
                    pair.close()
                    setattr(pclient, name, None)
            loop = client._loop
            loop.call_soon_threadsafe(loop.add_reader, sock.fileno(), self._on_readable)

        paho.on_socket_open = on_socket_open
        # writes: one flush per loop turn for everything queued in it (every PUBACK
        # of a read round), instead of aiomqtt's call_soon_threadsafe + add_writer +
        # remove_writer per packet
        self._loop_thread = threading.get_ident()
        self._flush_handle: asyncio.Handle | None = None
        self._out: list[bytes] = []  # packets built here, for the next flush
        self._writer_fd: int | None = None
        paho.on_socket_register_write = self._register_write
        paho.on_socket_unregister_write = self._unregister_write

    @staticmethod
    def supported(client: aiomqtt.Client) -> bool:
        """Whether this aiomqtt/paho has everything the fast path replaces."""
        paho = getattr(client, "_client", None)
        return all(hasattr(client, a) for a in _CLIENT_ATTRS) and all(
            hasattr(paho, a) for a in _PAHO_ATTRS
        )

    # ------------------------------------------------------------------ paho side
    def _paho_message(self, message: mqtt.MQTTMessage) -> None:
        """A PUBLISH that paho read (QoS 2, MQTT 5 properties): same callback."""
        payload = message.payload
        self._on_message(
            _decode_topic(message._topic), payload if type(payload) is bytes else bytes(payload)
        )

    def _recv(self, bufsize: int) -> bytes:
        """paho's ``_sock_recv`` for the packets paho reads: from the buffer first."""
        pos = self._pos
        buf = self._buf
        if pos >= len(buf):
            buf = self._orig_recv(RECV_BUFFER)  # raises BlockingIOError when empty
            if not buf:
                return buf  # connection closed: paho sees b"" and reports it
            self._buf = buf
            pos = 0
        end = pos + bufsize
        self._pos = end
        return buf[pos:end]

    def _on_readable(self) -> None:
        """Read packets until the socket and the buffer are empty (``budget`` per round)."""
        acks: list[int] = []
        try:
            self._read_round(acks)
        except Exception as exc:  # noqa: BLE001 - same contract as aiomqtt's reader
            disconnected = self._client._disconnected
            if not disconnected.done():
                disconnected.set_exception(exc)
        finally:
            if acks:
                self._out.append(puback_packets(acks))
            if self._out or self._flush_handle is not None:
                # the round's PUBACKs go out now, before the core takes the messages:
                # the broker's in-flight window (20 by default) refills while we work
                self._flush()

    def _queue_acks(self, acks: list[int]) -> None:
        self._out.append(puback_packets(acks))
        acks.clear()
        self._queue_out()

    def _queue_out(self) -> None:
        """Hand what this reader built (PUBACKs, QoS 0 publishes) to paho's queue, in order.

        As one buffer, one entry in paho's queue: one ``send`` for all of it
        (paho writes an entry per system call, and carries a partly written
        one over to the next flush). Queued as a PUBACK, the one kind paho
        does nothing with once written.
        """
        out = self._out
        if out:
            blob = out[0] if len(out) == 1 else b"".join(out)
            out.clear()
            self._paho._packet_queue(_PUBACK, blob, 0, 0)

    def _read_round(self, acks: list[int]) -> None:
        paho = self._paho
        if paho._in_packet["command"]:
            # a packet paho began to read before (not complete then): paho goes on
            rc = paho._packet_read()
            if rc != _SUCCESS:
                if rc != _AGAIN:
                    paho._loop_rc_handle(rc)
                return
        on_message = self._on_message
        v5 = paho._protocol == mqtt.MQTTv5
        left = self.budget
        buf, pos = self._buf, self._pos
        empty = False  # the kernel had no more at the last read
        while True:
            pos, taken, why = scan_publishes(
                buf, pos, v5=v5, limit=left, on_message=on_message, acks=acks
            )
            left -= taken
            if why == SCAN_OTHER:
                if acks:
                    self._queue_acks(acks)  # acknowledged in the order received
                self._buf, self._pos = buf, pos
                rc = paho._packet_read()  # the whole packet is in the buffer
                buf, pos = self._buf, self._pos
                if rc != _SUCCESS:
                    if rc != _AGAIN:
                        paho._loop_rc_handle(rc)
                    return
                if paho._sock is None:
                    return  # the broker said DISCONNECT: paho has closed and reported it
                left -= 1
            elif why == SCAN_MORE and not empty:
                try:
                    more = self._orig_recv(RECV_BUFFER)
                except BlockingIOError:
                    break
                except OSError:
                    more = b""
                if not more:  # the connection is gone (or broken): paho reports it
                    self._buf, self._pos = b"", 0
                    paho._loop_rc_handle(_CONN_LOST)
                    return
                with paho._msgtime_mutex:  # for paho's keepalive
                    paho._last_bytes_received = time.monotonic()
                buf = buf[pos:] + more if pos < len(buf) else more
                pos = 0
                # a short read of a plain socket: it is empty now (the loop's
                # level-triggered poll calls again for more); TLS may hold
                # decrypted bytes the descriptor does not show: read on
                empty = self._plain and len(more) < RECV_BUFFER
                continue
            elif why == SCAN_MORE:
                break
            if left <= 0:
                # budget spent: let the rest of the loop run, then go on even if the
                # kernel has nothing new (the rest may already sit in the buffer)
                self._client._loop.call_soon(self._on_readable)
                break
        self._buf, self._pos = buf, pos

    def _register_write(self, _pclient: mqtt.Client, _userdata: Any, _sock: Any) -> None:
        if threading.get_ident() != self._loop_thread:
            # paho connects from aiomqtt's executor thread: hand over to the loop
            self._client._loop.call_soon_threadsafe(self._flush)
        else:
            self._schedule_flush()

    def _schedule_flush(self) -> None:
        """Flush at the end of this loop turn (once, however much is queued meanwhile)."""
        if self._flush_handle is None:
            self._flush_handle = self._client._loop.call_soon(self._flush)

    def _unregister_write(self, _pclient: mqtt.Client, _userdata: Any, _sock: Any) -> None:
        if self._writer_fd is not None:
            self._client._loop.remove_writer(self._writer_fd)
            self._writer_fd = None

    def _flush(self) -> None:
        """Write what paho queued; if the socket is full, wait for it to drain."""
        self._queue_out()
        if self._flush_handle is not None:
            self._flush_handle.cancel()  # when called directly (end of a read round)
            self._flush_handle = None
        paho = self._paho
        try:
            paho.loop_write()
            sock = paho._sock
            if paho.want_write() and sock is not None and self._writer_fd is None:
                self._writer_fd = sock.fileno()
                self._client._loop.add_writer(self._writer_fd, self._flush)
        except Exception as exc:  # noqa: BLE001 - same contract as aiomqtt's writer
            disconnected = self._client._disconnected
            if not disconnected.done():
                disconnected.set_exception(exc)

    def publish_nowait(self, topic: str, payload: bytes, *, retain: bool) -> None:
        """Queue a QoS 0 message; it goes out with this loop turn's flush.

        For display data (bed summaries): nothing to confirm, so none of
        aiomqtt's per-message future, timeout and task, nor paho's per-packet
        bookkeeping (a message info, an ``on_publish`` call, a ``send`` each):
        the packet is built here and the turn's packets share one write.
        Raises :class:`aiomqtt.MqttCodeError` when not connected and
        :class:`ValueError` for a topic paho would refuse too.
        """
        paho = self._paho
        if paho._sock is None:
            raise aiomqtt.MqttCodeError(mqtt.MQTT_ERR_NO_CONN, "Could not publish message")
        self._out.append(
            publish_packet(topic, payload, retain=retain, v5=paho._protocol == mqtt.MQTTv5)
        )
        self._schedule_flush()

    def publish_qos1(self, topic: str, payload: bytes, *, retain: bool) -> Sent:
        """Queue a QoS 1 message for this turn's flush; :meth:`confirmed` awaits its PUBACK.

        For alarms. Several can be in flight at once (paho keeps at most its
        ``max_inflight_messages`` on the wire and queues the rest, in order):
        an alarm raised in the same batch as another no longer waits for the
        other's round trip. Raises :class:`aiomqtt.MqttCodeError` when paho
        refuses (not connected, queue full).
        """
        info = self._paho.publish(topic, payload, 1, retain)
        if info.rc != mqtt.MQTT_ERR_SUCCESS:
            raise aiomqtt.MqttCodeError(info.rc, "Could not publish message")
        event = asyncio.Event()
        # aiomqtt's on_publish sets the event registered under the message id; a
        # PUBACK is read in a later loop turn, never before this registration
        self._client._pending_publishes[info.mid] = event
        self._schedule_flush()
        return Sent(info.mid, event)

    async def confirmed(self, sent: Sent, *, timeout: float) -> None:
        """Return once the broker has acknowledged ``sent``.

        Raises :class:`aiomqtt.MqttError` when no PUBACK comes within ``timeout`` s.
        """
        try:
            async with asyncio.timeout(timeout):
                await sent.event.wait()
        except TimeoutError as exc:
            raise aiomqtt.MqttError(f"No PUBACK for an alarm within {timeout:g} s") from exc
        finally:
            self._client._pending_publishes.pop(sent.mid, None)

    def forget(self, sent: list[Sent]) -> None:
        """Stop waiting for these (the connection is gone; they will be sent again)."""
        pending = self._client._pending_publishes
        for one in sent:
            pending.pop(one.mid, None)

    def flush(self) -> None:
        """Write what is queued now, not at the end of the loop turn."""
        if self._flush_handle is not None or self._out:
            self._flush()

    # ------------------------------------------------------------------ asyncio side
    async def wait_disconnected(self) -> None:
        """Return never; raise :class:`aiomqtt.MqttError` once the connection is lost."""
        try:
            await asyncio.shield(self._client._disconnected)
        except Exception as exc:
            raise aiomqtt.MqttError("Disconnected during message reading") from exc
        raise aiomqtt.MqttError("Disconnected during message reading")
