"""The Server-Sent Events feed: ``GET /events``, one bounded queue per browser.

:class:`EventHub` fans every change out to the connected browsers. Each has a
bounded queue: one that does not keep up is dropped (its stream ends) and its
``EventSource`` reconnects and starts again from a fresh snapshot; memory never
grows with a slow client. :class:`EventStream` is the route: a snapshot first, then
the live events, with a heartbeat after each silence of ``heartbeat_s``.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any, Final

import msgspec
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from streamproc.apps.dashboard.auth import AuthError
from streamproc.apps.dashboard.security import Guard
from streamproc.apps.dashboard.state import DashboardState, now
from streamproc.apps.dashboard.web import refused
from streamproc.shell.logs import get_logger

__all__ = ["CLIENT_QUEUE_MAX", "HEARTBEAT_S", "EventHub", "EventStream", "sse_message"]

log = get_logger("streamproc.apps.dashboard")

#: Seconds of silence on a browser's stream before a heartbeat is sent.
HEARTBEAT_S: Final = 10.0
#: Events waiting for one browser; a browser this far behind is dropped.
CLIENT_QUEUE_MAX: Final = 256

_encoder: Final = msgspec.json.Encoder()


class _Client:
    __slots__ = ("dropped", "queue")

    def __init__(self, maxsize: int) -> None:
        self.queue: asyncio.Queue[bytes | None] = asyncio.Queue(maxsize)
        self.dropped = False


def sse_message(event: str, data: Any) -> bytes:
    """One Server-Sent Events message (compact JSON never contains a newline)."""
    return b"event: " + event.encode() + b"\ndata: " + _encoder.encode(data) + b"\n\n"


class EventHub:
    """Fans events out to every connected browser, each through a bounded queue."""

    def __init__(self, maxsize: int = CLIENT_QUEUE_MAX) -> None:
        self.maxsize = maxsize
        self._clients: set[_Client] = set()
        self.closed = False
        self.dropped_total = 0

    def __len__(self) -> int:
        return len(self._clients)

    def subscribe(self) -> _Client:
        client = _Client(self.maxsize)
        if self.closed:
            client.queue.put_nowait(None)
        else:
            self._clients.add(client)
        return client

    def unsubscribe(self, client: _Client) -> None:
        self._clients.discard(client)

    @staticmethod
    def _end(client: _Client) -> None:
        """Empty the client's queue and leave only the end-of-stream marker."""
        while not client.queue.empty():
            client.queue.get_nowait()
        client.queue.put_nowait(None)

    def broadcast(self, event: str, data: Any) -> None:
        """Queue one event for every browser; drop those whose queue is full."""
        if self.closed:
            return
        message = sse_message(event, data)
        for client in list(self._clients):
            try:
                client.queue.put_nowait(message)
            except asyncio.QueueFull:
                client.dropped = True
                self._clients.discard(client)
                self.dropped_total += 1
                self._end(client)
                log.warning("sse_client_dropped", reason="queue full", queue_max=self.maxsize)

    def close(self) -> None:
        """End every stream (server shutting down)."""
        self.closed = True
        for client in list(self._clients):
            self._end(client)
        self._clients.clear()


class EventStream:
    """``GET /events``: a reader's stream, the snapshot first, then every change."""

    def __init__(
        self, state: DashboardState, hub: EventHub, guard: Guard, heartbeat_s: float
    ) -> None:
        self.state = state
        self.hub = hub
        self.guard = guard
        self.heartbeat_s = heartbeat_s

    async def get(self, request: Request) -> Response:
        """The stream's response (a refusal if the request may not read)."""
        try:
            self.guard.reader(request)
        except AuthError as exc:
            return refused(exc, request)
        client = self.hub.subscribe()
        # subscribed before the snapshot is taken: no event can fall in between
        first = b"retry: 2000\n\n" + sse_message("snapshot", self.state.snapshot())
        return StreamingResponse(
            self._stream(client, first),
            media_type="text/event-stream",
            headers={"cache-control": "no-store", "x-accel-buffering": "no"},
        )

    async def _stream(self, client: _Client, first: bytes) -> AsyncIterator[bytes]:
        try:
            yield first
            while True:
                try:
                    async with asyncio.timeout(self.heartbeat_s):
                        item = await client.queue.get()
                except TimeoutError:
                    heartbeat = {"ts": now(), "connected": self.state.connected}
                    yield b": heartbeat\n" + sse_message("heartbeat", heartbeat)
                    continue
                if item is None:
                    return
                yield item
        finally:
            self.hub.unsubscribe(client)
