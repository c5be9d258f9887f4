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

- the socket's reader callback reads packets until the socket is empty (at
  most ``budget`` per round, then yields to the loop and continues), instead
  of one packet per readiness event;
- paho's ``recv`` goes through a 64 KiB buffer, so a burst of packets costs
  one system call, not four per packet;
- each PUBLISH is handed to ``on_message(topic, payload)`` synchronously, in
  arrival order, with no per-message task, queue or wrapper object;
- what paho queues for sending (the PUBACKs of a read round, the service's
  publishes) is written in one flush per loop turn, instead of aiomqtt's
  ``call_soon_threadsafe`` + ``add_writer`` + ``remove_writer`` per packet; a
  writer is registered only while the socket's send buffer is full.

Paho still parses every packet, answers QoS 1 with PUBACK after the callback
returns, and reports a lost connection; the reader then fails the client's
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
import threading
from collections.abc import Callable
from typing import Any, Final

import aiomqtt
import paho.mqtt.client as mqtt
from paho.mqtt.enums import MQTTErrorCode

__all__ = ["RECV_BUFFER", "FastReader"]

#: Bytes asked of the socket per ``recv`` system call.
RECV_BUFFER: Final = 65536
_AGAIN: Final = MQTTErrorCode.MQTT_ERR_AGAIN
_SUCCESS: Final = MQTTErrorCode.MQTT_ERR_SUCCESS
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
    "_handle_on_message",
    "on_socket_register_write",
    "on_socket_unregister_write",
    "want_write",
    "loop_write",
)


class FastReader:
    """Install on a not-yet-connected client; messages go to ``on_message``."""

    __slots__ = (
        "_buf",
        "_client",
        "_drained",
        "_flush_handle",
        "_loop_thread",
        "_on_message",
        "_orig_recv",
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
        # the last read from the kernel returned less than asked: the socket was
        # empty then (plain TCP only: TLS may hold decrypted bytes the fd does not show)
        self._drained = False
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
        # a topic that is not UTF-8 must not break the connection: replaced
        # characters make it an unknown topic, rejected and counted downstream
        topic_bytes: bytes = message._topic
        try:
            topic = topic_bytes.decode("utf-8")
        except UnicodeDecodeError:
            topic = topic_bytes.decode("utf-8", "replace")
        payload = message.payload
        self._on_message(topic, payload if type(payload) is bytes else bytes(payload))

    def _recv(self, bufsize: int) -> bytes:
        """paho's ``_sock_recv`` through a buffer: one system call per burst."""
        pos = self._pos
        buf = self._buf
        if pos >= len(buf):
            if self._drained:
                # the kernel had no more at the last read of this round: no system call
                # just to hear EAGAIN (the loop's level-triggered poll wakes us for more)
                raise BlockingIOError
            buf = self._orig_recv(RECV_BUFFER)  # raises BlockingIOError when empty
            if not buf:
                return buf  # connection closed: paho sees b"" and reports it
            self._buf = buf
            self._drained = self._plain and len(buf) < RECV_BUFFER
            pos = 0
        end = pos + bufsize
        self._pos = end
        return buf[pos:end]

    def _on_readable(self) -> None:
        """Read packets until the socket and the buffer are empty (``budget`` per round)."""
        paho = self._paho
        self._drained = False  # the poll says there is more: ask the kernel
        try:
            for _ in range(self.budget):
                rc = paho._packet_read()
                if rc == _AGAIN:
                    return
                if rc != _SUCCESS:
                    paho._loop_rc_handle(rc)
                    return
            # budget spent: let the rest of the loop run, then go on even if the
            # kernel has nothing new (the rest may already sit in our buffer)
            if self._pos < len(self._buf):
                self._client._loop.call_soon(self._on_readable)
        except Exception as exc:  # noqa: BLE001 - same contract as aiomqtt's reader
            disconnected = self._client._disconnected
            if not disconnected.done():
                disconnected.set_exception(exc)
        finally:
            self._drained = False  # only this round skips the system call
            if self._flush_handle is not None:
                # the round's PUBACKs go out now, before the core takes the messages:
                # the broker's in-flight window (20 by default) refills while we work
                self._flush()

    def _register_write(self, _pclient: mqtt.Client, _userdata: Any, _sock: Any) -> None:
        loop = self._client._loop
        if threading.get_ident() != self._loop_thread:
            # paho connects from aiomqtt's executor thread: hand over to the loop
            loop.call_soon_threadsafe(self._flush)
        elif self._flush_handle is None:
            self._flush_handle = loop.call_soon(self._flush)

    def _unregister_write(self, _pclient: mqtt.Client, _userdata: Any, _sock: Any) -> None:
        if self._writer_fd is not None:
            self._client._loop.remove_writer(self._writer_fd)
            self._writer_fd = None

    def _flush(self) -> None:
        """Write what paho queued; if the socket is full, wait for it to drain."""
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
        aiomqtt's per-message future, timeout and task; many summaries queued
        in one turn share one write. Raises :class:`aiomqtt.MqttCodeError`
        when paho refuses (not connected, queue full).
        """
        info = self._paho.publish(topic, payload, 0, retain)
        if info.rc != mqtt.MQTT_ERR_SUCCESS:
            raise aiomqtt.MqttCodeError(info.rc, "Could not publish message")

    async def publish_confirmed(
        self, topic: str, payload: bytes, *, retain: bool, timeout: float
    ) -> None:
        """Publish at QoS 1, written at once; return when the broker has acknowledged it.

        For alarms: aiomqtt's ``publish`` leaves the write to a callback that
        runs after whatever the loop had already scheduled (a batch of chunks
        to process); here the packet is on the socket before this coroutine
        first waits. The PUBACK is awaited as aiomqtt does (its ``on_publish``
        sets the event registered under the message id). Raises
        :class:`aiomqtt.MqttCodeError` when paho refuses, :class:`aiomqtt.MqttError`
        when no PUBACK comes within ``timeout`` seconds.
        """
        info = self._paho.publish(topic, payload, 1, retain)
        if info.rc != mqtt.MQTT_ERR_SUCCESS:
            raise aiomqtt.MqttCodeError(info.rc, "Could not publish message")
        if self._flush_handle is not None:
            self._flush()
        if info.is_published():
            return
        confirmed = asyncio.Event()
        pending = self._client._pending_publishes
        pending[info.mid] = confirmed
        try:
            async with asyncio.timeout(timeout):
                await confirmed.wait()
        except TimeoutError as exc:
            raise aiomqtt.MqttError(f"No PUBACK for an alarm within {timeout:g} s") from exc
        finally:
            pending.pop(info.mid, None)

    # ------------------------------------------------------------------ asyncio side
    async def wait_disconnected(self) -> None:
        """Return never; raise :class:`aiomqtt.MqttError` once the connection is lost."""
        try:
            await asyncio.shield(self._client._disconnected)
        except Exception as exc:
            raise aiomqtt.MqttError("Disconnected during message reading") from exc
        raise aiomqtt.MqttError("Disconnected during message reading")
