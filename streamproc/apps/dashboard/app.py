"""The dashboard server: an MQTT bridge, a Server-Sent Events feed, a small JSON API.

One asyncio event loop runs everything:

- :class:`MqttBridge` subscribes to ``{root}/+/+/alarms/#``, ``{root}/+/+/summary``
  and ``{root}/_status/#`` (MQTT 5 by default, 3.1.1 with ``mqtt_version=4``),
  keeps the latest of each in :class:`DashboardState` (per alarm topic its last
  payload, per bed its summary, per processor instance its status) and
  reconnects with jittered exponential backoff. After each (re)connection the
  state is rebuilt from what the broker has retained.
- :class:`EventHub` fans every change out to the browsers connected to
  ``GET /events`` (Server-Sent Events). Each browser has a bounded queue: one
  that does not keep up is dropped (its stream ends) and its ``EventSource``
  reconnects and starts again from a fresh snapshot; memory never grows with
  a slow client.
- ``POST /api/ack`` publishes an acknowledgement on ``{root}/{unit}/{bed}/ack``
  (QoS 1) by the signed-in user; the processor decides what it means and
  publishes the new alarm state, which comes back through the bridge.
- :mod:`streamproc.apps.dashboard.auth` decides who is there: every request's
  ``Host`` is checked, reading needs a signed-in user (unless the site opens
  it), writing needs one and the page's own ``Origin``.

The contract (event names and payloads) is described in ``docs/dashboard.md``.
Everything shown is decision support for clinicians, never orders.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.resources
import secrets
import signal
import socket
import ssl
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any, Final

import aiomqtt
import msgspec
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from streamproc import __version__
from streamproc.apps.dashboard.auth import AuthConfig, Authenticator, AuthError, Identity
from streamproc.core.protocol.escalation import DISCLAIMER
from streamproc.core.protocol.messages import IDENT_RE, BedId, InvalidMessageError
from streamproc.shell.logs import get_logger
from streamproc.shell.service import Backoff, parse_broker_url
from streamproc.wire.topics import (
    DEFAULT_ROOT,
    STATUS_LEVEL,
    TopicError,
    alarms_filter,
    inbound_topic,
    parse_alarm_topic,
    status_filter,
    summary_filter,
)

__all__ = [
    "CLIENT_QUEUE_MAX",
    "HEARTBEAT_S",
    "MAX_LOGIN_BYTES",
    "DashboardState",
    "EventHub",
    "MqttBridge",
    "NotConnectedError",
    "bind_socket",
    "create_app",
    "serve_dashboard",
]

log = get_logger("streamproc.apps.dashboard")

#: Seconds of silence on a browser's stream before a heartbeat is sent.
HEARTBEAT_S: Final = 10.0
#: Events waiting for one browser; a browser this far behind is dropped.
CLIENT_QUEUE_MAX: Final = 256
#: Payloads larger than this are ignored (an alarm is well under 4 KB).
MAX_PAYLOAD_BYTES: Final = 256 * 1024
#: At most this many alarm topics, beds and instances each are kept.
MAX_ENTRIES: Final = 10_000
#: Largest ``POST /api/ack`` body read.
MAX_ACK_BYTES: Final = 4096
#: Largest ``POST /api/login`` body read.
MAX_LOGIN_BYTES: Final = 4096
#: How long ``POST /api/ack`` waits for the broker's PUBACK.
ACK_TIMEOUT_S: Final = 5.0
#: The page's files, served from the package (no build step, nothing external).
STATIC_FILES: Final = {
    "index.html": "text/html; charset=utf-8",
    "app.js": "text/javascript; charset=utf-8",
    "style.css": "text/css; charset=utf-8",
}
_STATES: Final = frozenset({"active", "acknowledged", "cleared"})
_PRIORITIES: Final = frozenset({"high", "medium", "low"})
_MAX_ALARM_ID: Final = 200
_MAX_BY: Final = 64
_SECURITY_HEADERS: Final = (
    (
        b"content-security-policy",
        (
            b"default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
            b"connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
        ),
    ),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"x-frame-options", b"DENY"),
)

_encoder: Final = msgspec.json.Encoder()


def _now() -> float:
    return round(time.time(), 3)


# --------------------------------------------------------------------------- state


class DashboardState:
    """The latest of everything the bridge has read, and whether it is connected.

    Every entry is stored as the data of the event that announces it (see
    :meth:`alarm_entry` and friends), so that a snapshot is made of the same
    objects as the live events.
    """

    def __init__(self, root: str, station: str, broker: str) -> None:
        self.root = root
        self.station = station
        self.broker = broker
        #: alarm topic -> ``alarm`` event data
        self.alarms: dict[str, dict[str, Any]] = {}
        #: ``unit/bed`` -> ``summary`` event data
        self.summaries: dict[str, dict[str, Any]] = {}
        #: instance -> ``status`` event data
        self.statuses: dict[str, dict[str, Any]] = {}
        self.connected = False
        self.error: str | None = None
        self.changed_ts = _now()
        self.ignored = 0

    def bridge(self) -> dict[str, Any]:
        """The ``bridge`` event data: is the dashboard connected to the broker."""
        return {
            "connected": self.connected,
            "broker": self.broker,
            "error": self.error,
            "since": self.changed_ts,
        }

    def clear(self) -> None:
        self.alarms.clear()
        self.summaries.clear()
        self.statuses.clear()

    def open_alarm(self, alarm_id: str, bed: BedId) -> dict[str, Any] | None:
        """The open (active or acknowledged) alarm with this id on this bed, if any."""
        for entry in self.alarms.values():
            payload = entry["alarm"]
            if (
                payload is not None
                and payload.get("alarm_id") == alarm_id
                and entry["unit"] == bed.unit
                and entry["bed"] == bed.bed
                and payload.get("state") in ("active", "acknowledged")
            ):
                return dict(payload)
        return None

    def snapshot(self) -> dict[str, Any]:
        """Everything at once: the ``snapshot`` event and ``GET /api/state``."""
        return {
            "version": 1,
            "ts": _now(),
            "root": self.root,
            "station": self.station,
            "disclaimer": DISCLAIMER,
            "bridge": self.bridge(),
            "alarms": list(self.alarms.values()),
            "summaries": list(self.summaries.values()),
            "statuses": list(self.statuses.values()),
        }


# --------------------------------------------------------------------------- fan-out


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


# --------------------------------------------------------------------------- MQTT bridge


class NotConnectedError(RuntimeError):
    """The bridge has no broker connection right now."""


class MqttBridge:
    """Subscribes to alarm, summary and status topics; publishes acknowledgements."""

    def __init__(
        self,
        broker_url: str,
        state: DashboardState,
        hub: EventHub,
        *,
        root: str = DEFAULT_ROOT,
        mqtt_version: int = 5,
        username: str | None = None,
        password: str | None = None,
        client_id: str | None = None,
        keepalive: int = 10,
        tls_ca: str | None = None,
    ) -> None:
        if mqtt_version not in (4, 5):
            raise ValueError(
                f"mqtt_version must be 5 (MQTT 5) or 4 (MQTT 3.1.1), not {mqtt_version}"
            )
        self.address = parse_broker_url(broker_url)
        self.state = state
        self.hub = hub
        self.root = root
        self.root_levels = tuple(root.split("/"))
        self.mqtt_version = mqtt_version
        self.username = username
        self.password = password
        self.client_id = client_id or f"spdash-{secrets.token_hex(6)}"
        self.tls_ca = tls_ca
        self.keepalive = keepalive
        self.filters = (alarms_filter(root), summary_filter(root), status_filter(root))
        self.connections = 0
        self._client: aiomqtt.Client | None = None

    @property
    def connected(self) -> bool:
        return self._client is not None

    def _make_client(self) -> aiomqtt.Client:
        v5 = self.mqtt_version == 5
        return aiomqtt.Client(
            self.address.host,
            self.address.port,
            identifier=self.client_id,
            username=self.username or None,
            password=self.password or None,
            protocol=aiomqtt.ProtocolVersion.V5 if v5 else aiomqtt.ProtocolVersion.V311,
            clean_session=None if v5 else True,
            tls_context=(
                ssl.create_default_context(cafile=self.tls_ca)
                if self.address.tls or self.tls_ca
                else None
            ),
            keepalive=self.keepalive,
            timeout=10,
        )

    def _set_connected(self, client: aiomqtt.Client | None, error: str | None = None) -> None:
        self._client = client
        self.state.connected = client is not None
        self.state.error = error
        self.state.changed_ts = _now()
        if client is not None:
            # rebuilt from what the broker retains: nothing stale survives a reconnect
            self.state.clear()
            self.hub.broadcast("snapshot", self.state.snapshot())
        else:
            self.hub.broadcast("bridge", self.state.bridge())

    async def run(self) -> None:
        """Connect, read, reconnect with backoff; until cancelled."""
        backoff = Backoff(base=0.5, cap=10.0)
        while True:
            error = "connection closed"
            try:
                async with self._make_client() as client:
                    for flt in self.filters:
                        await client.subscribe(flt, qos=1)
                    backoff.reset()
                    self.connections += 1
                    self._set_connected(client)
                    log.info(
                        "dashboard_connected",
                        host=self.address.host,
                        port=self.address.port,
                        mqtt_version=self.mqtt_version,
                    )
                    async for message in client.messages:
                        raw = message.payload
                        if isinstance(raw, bytes | bytearray):
                            data = bytes(raw)
                        elif raw is None:
                            data = b""
                        else:
                            data = str(raw).encode()
                        self.handle(str(message.topic), data)
            except aiomqtt.MqttError as exc:
                error = str(exc) or type(exc).__name__
            self._set_connected(None, error)
            delay = backoff.next()
            log.warning("dashboard_disconnected", reason=error, retry_in=round(delay, 2))
            await asyncio.sleep(delay)

    # -- reading -------------------------------------------------------------

    def _ignore(self, topic: str, reason: str) -> bool:
        self.state.ignored += 1
        log.debug("dashboard_ignored", topic=topic[:200], reason=reason)
        return False

    @staticmethod
    def _decode(payload: bytes) -> dict[str, Any] | None:
        try:
            data = msgspec.json.decode(payload)
        except msgspec.DecodeError:
            return None
        return data if isinstance(data, dict) else None

    def handle(self, topic: str, payload: bytes) -> bool:
        """Take one message into the state and announce it; False if it was ignored.

        An empty payload (a retained topic being removed) removes the entry.
        """
        if len(payload) > MAX_PAYLOAD_BYTES:
            return self._ignore(topic, "payload too large")
        levels = topic.split("/")
        n = len(self.root_levels)
        if tuple(levels[:n]) != self.root_levels:
            return self._ignore(topic, "not under root")
        rest = levels[n:]
        data = None
        if payload:
            data = self._decode(payload)
            if data is None:
                return self._ignore(topic, "not a JSON object")
        if len(rest) == 2 and rest[0] == STATUS_LEVEL:
            return self._status(topic, rest[1], data)
        if len(rest) == 3 and rest[2] == "summary":
            return self._summary(topic, rest[0], rest[1], data)
        return self._alarm(topic, data)

    def _status(self, topic: str, instance: str, data: dict[str, Any] | None) -> bool:
        if not IDENT_RE.fullmatch(instance):
            return self._ignore(topic, "bad instance")
        if data is not None and data.get("state") not in ("online", "offline"):
            return self._ignore(topic, "status state must be online or offline")
        entry = {"topic": topic, "instance": instance, "status": data}
        if not self._store(self.state.statuses, instance, entry, data):
            return self._ignore(topic, "too many instances")
        self.hub.broadcast("status", entry)
        return True

    def _summary(self, topic: str, unit: str, bed: str, data: dict[str, Any] | None) -> bool:
        try:
            bed_id = BedId(unit, bed)
        except InvalidMessageError:
            return self._ignore(topic, "bad unit or bed")
        if data is not None:
            data["unit"], data["bed"] = bed_id.unit, bed_id.bed
        entry = {"topic": topic, "unit": unit, "bed": bed, "summary": data}
        if not self._store(self.state.summaries, str(bed_id), entry, data):
            return self._ignore(topic, "too many beds")
        self.hub.broadcast("summary", entry)
        return True

    def _alarm(self, topic: str, data: dict[str, Any] | None) -> bool:
        try:
            bed_id, kind = parse_alarm_topic(topic, self.root)
        except TopicError:
            return self._ignore(topic, "not an alarm, summary or status topic")
        if data is not None:
            if not isinstance(data.get("alarm_id"), str) or not data["alarm_id"]:
                return self._ignore(topic, "alarm without alarm_id")
            if data.get("state") not in _STATES or data.get("priority") not in _PRIORITIES:
                return self._ignore(topic, "alarm state or priority not in the contract")
            if (data.get("unit"), data.get("bed")) != (bed_id.unit, bed_id.bed):
                return self._ignore(topic, "alarm unit/bed differ from its topic")
            data["kind"] = kind
        entry: dict[str, Any] = {
            "topic": topic,
            "unit": bed_id.unit,
            "bed": bed_id.bed,
            "kind": kind,
            "alarm": data,
        }
        if not self._store(self.state.alarms, topic, entry, data):
            return self._ignore(topic, "too many alarm topics")
        self.hub.broadcast("alarm", entry)
        return True

    @staticmethod
    def _store(
        table: dict[str, dict[str, Any]],
        key: str,
        entry: dict[str, Any],
        payload: dict[str, Any] | None,
    ) -> bool:
        """Keep (or, for a removed retained message, drop) one entry; False when full."""
        if payload is None:
            table.pop(key, None)
            return True
        if key not in table and len(table) >= MAX_ENTRIES:
            return False
        table[key] = entry
        return True

    # -- writing -------------------------------------------------------------

    async def publish_ack(
        self, bed: BedId, alarm_id: str, by: str, *, method: str | None = None
    ) -> tuple[str, dict[str, Any]]:
        """Publish ``{"ts", "alarm_id", "by"}`` on the bed's ack topic, QoS 1; topic, payload.

        ``by`` is the signed-in identity; ``method`` (how it signed in) goes to the log.
        """
        client = self._client
        if client is None:
            raise NotConnectedError("the dashboard is not connected to the broker")
        topic = inbound_topic(self.root, bed, "ack")
        payload = {"ts": _now(), "alarm_id": alarm_id, "by": by}
        try:
            await client.publish(topic, _encoder.encode(payload), qos=1, timeout=ACK_TIMEOUT_S)
        except aiomqtt.MqttError as exc:
            raise NotConnectedError(f"the broker did not take the acknowledgement: {exc}") from exc
        log.info(
            "ack_published", unit=bed.unit, bed=bed.bed, alarm_id=alarm_id, by=by, method=method
        )
        return topic, payload


# --------------------------------------------------------------------------- HTTP


class _SecurityHeaders:
    """Adds a strict Content-Security-Policy (and friends) to every response."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), *_SECURITY_HEADERS]
            await send(message)

        await self.app(scope, receive, send_with_headers)


class _HostCheck:
    """Refuses (403) every request whose ``Host`` is not an allowed name (DNS rebinding)."""

    def __init__(self, app: ASGIApp, auth: Authenticator) -> None:
        self.app = app
        self.auth = auth

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            host = None
            for name, value in scope.get("headers", ()):
                if name == b"host":
                    host = value.decode("latin-1")
                    break
            try:
                self.auth.check_host(host)
            except AuthError as exc:
                log.warning("dashboard_refused", status=exc.status, reason=exc.reason)
                await _error(exc.status, exc.reason, exc.field)(scope, receive, send)
                return
        await self.app(scope, receive, send)


def _error(status: int, message: str, field: str | None) -> JSONResponse:
    return JSONResponse({"error": message, "field": field}, status_code=status)


def _refused(exc: AuthError, request: Request) -> JSONResponse:
    client = request.client.host if request.client else None
    log.warning(
        "dashboard_refused",
        status=exc.status,
        reason=exc.reason,
        path=request.url.path,
        client=client,
    )
    headers = {"www-authenticate": 'Cookie realm="streamproc"'} if exc.status == 401 else None
    return JSONResponse(
        {"error": exc.reason, "field": exc.field}, status_code=exc.status, headers=headers
    )


async def _read_json(request: Request, limit: int) -> dict[str, Any] | JSONResponse:
    """The request's JSON object body, or the error response saying what is wrong."""
    if request.headers.get("content-type", "").split(";")[0].strip() != "application/json":
        return _error(415, "send the body as application/json", "content-type")
    raw = bytearray()
    async for chunk in request.stream():
        raw += chunk
        if len(raw) > limit:
            return _error(413, f"the body must be at most {limit} bytes", "body")
    try:
        body = msgspec.json.decode(bytes(raw))
    except msgspec.DecodeError:
        body = None
    if not isinstance(body, dict):
        return _error(400, "the body must be a JSON object", "body")
    return body


def _printable(value: str) -> bool:
    return value.isprintable() and value.strip() == value


def _load_static() -> dict[str, bytes]:
    folder = importlib.resources.files("streamproc.apps.dashboard").joinpath("static")
    return {name: folder.joinpath(name).read_bytes() for name in STATIC_FILES}


def create_app(
    broker_url: str,
    *,
    root: str = DEFAULT_ROOT,
    station: str = "station-1",
    mqtt_version: int = 5,
    username: str | None = None,
    password: str | None = None,
    heartbeat_s: float = HEARTBEAT_S,
    client_queue_max: int = CLIENT_QUEUE_MAX,
    auth: AuthConfig | None = None,
    tls_ca: str | None = None,
) -> Starlette:
    """The dashboard application; its MQTT bridge runs while the app's lifespan does.

    ``app.state.dashboard``, ``app.state.hub``, ``app.state.bridge`` and
    ``app.state.auth`` are the :class:`DashboardState`, :class:`EventHub`,
    :class:`MqttBridge` and :class:`~streamproc.apps.dashboard.auth.Authenticator`.
    Without ``auth``, a random token is the only way in (``app.state.auth.config.token``):
    closed by default.

    Raises:
        ConfigError: the broker URL cannot be used.
        TopicError: ``root`` is not a valid topic root.
        ValueError: ``station`` or ``mqtt_version`` is not valid.
    """
    alarms_filter(root)  # validates the root
    if not (0 < len(station) <= _MAX_BY and _printable(station)):
        raise ValueError(f"station must be 1 to {_MAX_BY} printable characters, got {station!r}")
    address = parse_broker_url(broker_url)
    if tls_ca is not None and not Path(tls_ca).is_file():
        raise ValueError(f"tls_ca: no such file {tls_ca!r} (the broker's CA certificate)")
    state = DashboardState(root, station, f"{address.host}:{address.port}")
    hub = EventHub(client_queue_max)
    bridge = MqttBridge(
        broker_url,
        state,
        hub,
        root=root,
        mqtt_version=mqtt_version,
        username=username,
        password=password,
        tls_ca=tls_ca,
    )
    if auth is None:
        auth = AuthConfig(token=secrets.token_urlsafe(24), token_identity=station)
    authn = Authenticator(auth)
    static = _load_static()

    def who(request: Request) -> Identity | None:
        client = request.client.host if request.client else None
        return authn.identify(request.headers, request.cookies, client)

    def reader(request: Request) -> Identity | None:
        """The identity of a request that may read (``None`` if open reading); raises 401."""
        identity = who(request)
        if identity is None and not auth.public_read:
            raise AuthError(401, "sign in to see the ward", None)
        return identity

    def https(request: Request) -> bool:
        return request.url.scheme == "https"

    def asset(name: str) -> Response:
        return Response(
            static[name],
            media_type=STATIC_FILES[name],
            headers={"cache-control": "no-cache"},
        )

    async def index(request: Request) -> Response:
        token = request.query_params.get("token")
        if token is None:
            return asset("index.html")
        identity = authn.check_token(token)
        if identity is None:
            log.warning("dashboard_refused", status=401, reason="wrong token", path="/")
            return PlainTextResponse(
                "Wrong or expired token: open the address the dashboard server printed.",
                status_code=401,
            )
        # the token leaves the address bar (and the history) at once, as Jupyter does
        response = Response(status_code=303, headers={"location": "/"})
        cookie = authn.cookie_header(authn.session_cookie(identity), https=https(request))
        response.headers.append("set-cookie", cookie)
        log.info("dashboard_signed_in", user=identity.name, method=identity.method)
        return response

    async def static_file(request: Request) -> Response:
        name = request.path_params["name"]
        if name not in STATIC_FILES or name == "index.html":
            return _error(404, "no such file", "name")
        return asset(name)

    async def api_state(request: Request) -> Response:
        try:
            reader(request)
        except AuthError as exc:
            return _refused(exc, request)
        return JSONResponse(state.snapshot(), headers={"cache-control": "no-store"})

    async def api_me(request: Request) -> Response:
        try:
            identity = who(request)
        except AuthError as exc:
            return _refused(exc, request)
        body = {
            "user": None if identity is None else identity.name,
            "method": None if identity is None else identity.method,
            "can_read": identity is not None or auth.public_read,
            "can_write": identity is not None,
            "methods": list(auth.methods),
            "public_read": auth.public_read,
        }
        return JSONResponse(body, headers={"cache-control": "no-store"})

    async def api_login(request: Request) -> Response:
        try:
            authn.check_origin(request.headers.get("origin"), request.headers.get("host"))
        except AuthError as exc:
            return _refused(exc, request)
        body = await _read_json(request, MAX_LOGIN_BYTES)
        if isinstance(body, JSONResponse):
            return body
        name, password = body.get("username"), body.get("password")
        if not isinstance(name, str) or not isinstance(password, str):
            return _error(400, "username and password are required strings", "username")
        try:
            identity = await asyncio.to_thread(authn.login, name, password)
        except AuthError as exc:
            return _refused(exc, request)
        response = JSONResponse({"ok": True, "user": identity.name, "method": identity.method})
        cookie = authn.cookie_header(authn.session_cookie(identity), https=https(request))
        response.headers.append("set-cookie", cookie)
        log.info("dashboard_signed_in", user=identity.name, method=identity.method)
        return response

    async def api_logout(request: Request) -> Response:
        try:
            authn.check_origin(request.headers.get("origin"), request.headers.get("host"))
        except AuthError as exc:
            return _refused(exc, request)
        response = JSONResponse({"ok": True})
        response.headers.append(
            "set-cookie", authn.cookie_header("", https=https(request), clear=True)
        )
        return response

    async def healthz(_request: Request) -> Response:
        body = {
            "status": "ok" if state.connected else "degraded",
            "broker_connected": state.connected,
            "broker_error": state.error,
            "clients": len(hub),
            "clients_dropped": hub.dropped_total,
            "alarms": len(state.alarms),
            "beds": len(state.summaries),
            "instances": len(state.statuses),
            "ignored_messages": state.ignored,
            "version": __version__,
        }
        return JSONResponse(body, status_code=200 if state.connected else 503)

    async def events(request: Request) -> Response:
        try:
            reader(request)
        except AuthError as exc:
            return _refused(exc, request)
        client = hub.subscribe()
        # subscribed before the snapshot is taken: no event can fall in between
        first = b"retry: 2000\n\n" + sse_message("snapshot", state.snapshot())

        async def stream() -> AsyncIterator[bytes]:
            try:
                yield first
                while True:
                    try:
                        async with asyncio.timeout(heartbeat_s):
                            item = await client.queue.get()
                    except TimeoutError:
                        heartbeat = {"ts": _now(), "connected": state.connected}
                        yield b": heartbeat\n" + sse_message("heartbeat", heartbeat)
                        continue
                    if item is None:
                        return
                    yield item
            finally:
                hub.unsubscribe(client)

        return StreamingResponse(
            stream(),
            media_type="text/event-stream",
            headers={"cache-control": "no-store", "x-accel-buffering": "no"},
        )

    async def ack(request: Request) -> Response:
        # who, from where: before the body is even read
        try:
            authn.check_origin(request.headers.get("origin"), request.headers.get("host"))
            identity = who(request)
            if identity is None:
                raise AuthError(401, "sign in to acknowledge", None)  # noqa: TRY301
        except AuthError as exc:
            return _refused(exc, request)
        body = await _read_json(request, MAX_ACK_BYTES)
        if isinstance(body, JSONResponse):
            return body
        if "by" in body:
            forged = AuthError(403, "the acknowledgement is by the signed-in user: no 'by'", "by")
            return _refused(forged, request)
        for name in ("alarm_id", "unit", "bed"):
            if not isinstance(body.get(name), str):
                return _error(400, f"{name} is required and must be a string", name)
        alarm_id: str = body["alarm_id"]
        by = identity.name
        if not (0 < len(alarm_id) <= _MAX_ALARM_ID and _printable(alarm_id)):
            return _error(
                400, f"alarm_id must be 1 to {_MAX_ALARM_ID} printable characters", "alarm_id"
            )
        try:
            bed = BedId(body["unit"], body["bed"])
            inbound_topic(root, bed, "ack")
        except (InvalidMessageError, TopicError) as exc:
            field = exc.field or "unit"
            return _error(400, f"{field} must match [A-Za-z0-9_-]{{1,64}}", field)
        if not state.connected:
            return _error(503, "the dashboard is not connected to the broker", None)
        if state.open_alarm(alarm_id, bed) is None:
            return _error(409, "no open alarm with this alarm_id on this bed", "alarm_id")
        try:
            topic, payload = await bridge.publish_ack(bed, alarm_id, by, method=identity.method)
        except NotConnectedError as exc:
            return _error(503, str(exc), None)
        return JSONResponse({"ok": True, "topic": topic, "payload": payload}, status_code=202)

    @contextlib.asynccontextmanager
    async def lifespan(_app: Starlette) -> AsyncIterator[None]:
        task = asyncio.create_task(bridge.run(), name="dashboard-mqtt-bridge")
        try:
            yield
        finally:
            hub.close()
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    app = Starlette(
        routes=[
            Route("/", index),
            Route("/static/{name}", static_file),
            Route("/events", events),
            Route("/api/state", api_state),
            Route("/api/ack", ack, methods=["POST"]),
            Route("/api/me", api_me),
            Route("/api/login", api_login, methods=["POST"]),
            Route("/api/logout", api_logout, methods=["POST"]),
            Route("/healthz", healthz),
        ],
        lifespan=lifespan,
    )
    app.add_middleware(_HostCheck, auth=authn)
    app.add_middleware(_SecurityHeaders)
    app.state.dashboard = state
    app.state.hub = hub
    app.state.bridge = bridge
    app.state.auth = authn
    return app


# --------------------------------------------------------------------------- serving


def bind_socket(host: str = "127.0.0.1", port: int = 0) -> socket.socket:
    """A listening TCP socket (port 0: a free one; read it with ``getsockname()``)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(128)
        sock.set_inheritable(True)
    except OSError:
        sock.close()
        raise
    return sock


class _Server(uvicorn.Server):
    """uvicorn without its own signal handling, ending the SSE streams on shutdown."""

    def __init__(self, config: uvicorn.Config, hub: EventHub) -> None:
        super().__init__(config)
        self._hub = hub

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield  # the caller (the CLI, or the demo) owns the process's signals

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        self._hub.close()  # open event streams end, so connections close at once
        await super().shutdown(sockets)


def _url(sock: socket.socket, token: str | None = None) -> str:
    """The page's address; with the sign-in token in it when there is one (as Jupyter does)."""
    host, port = sock.getsockname()[:2]
    if host in ("0.0.0.0", "::"):  # noqa: S104 - a wildcard bind is shown as the loopback
        host = "127.0.0.1" if host == "0.0.0.0" else "::1"  # noqa: S104
    shown = f"[{host}]" if ":" in host else host
    query = f"?token={token}" if token else ""
    return f"http://{shown}:{port}/{query}"


async def serve_dashboard(
    broker_url: str,
    *,
    host: str = "127.0.0.1",
    port: int = 8080,
    root: str = DEFAULT_ROOT,
    station: str = "station-1",
    mqtt_version: int = 5,
    username: str | None = None,
    password: str | None = None,
    sock: socket.socket | None = None,
    stop: asyncio.Event | None = None,
    on_ready: Callable[[str], object] | None = None,
    handle_signals: bool = False,
    heartbeat_s: float = HEARTBEAT_S,
    auth: AuthConfig | None = None,
    tls_ca: str | None = None,
) -> None:
    """Serve the dashboard until ``stop`` is set (or SIGINT/SIGTERM with ``handle_signals``).

    Pass ``port=0`` (or a socket from :func:`bind_socket`) for a free port;
    ``on_ready`` is called with the page's URL (the bound port in it, and the
    sign-in token when token sign-in is on) once the server accepts
    connections. Without ``auth`` a random token is the only way in. Returns
    when the server has stopped; open event streams are ended first, so
    browsers see the server go away at once.
    """
    app = create_app(
        broker_url,
        root=root,
        station=station,
        mqtt_version=mqtt_version,
        username=username,
        password=password,
        heartbeat_s=heartbeat_s,
        auth=auth,
        tls_ca=tls_ca,
    )
    own_socket = sock is None
    listener = bind_socket(host, port) if sock is None else sock
    config = uvicorn.Config(
        app,
        log_config=None,
        log_level="warning",
        access_log=False,
        http="h11",
        ws="none",
        lifespan="on",
        # the client address is the TCP peer's: uvicorn would otherwise take
        # X-Forwarded-For from 127.0.0.1, and a local process could pose as the
        # trusted single-sign-on proxy
        proxy_headers=False,
        timeout_graceful_shutdown=3,
    )
    server = _Server(config, app.state.hub)
    stopping = stop if stop is not None else asyncio.Event()
    loop = asyncio.get_running_loop()
    signals = (signal.SIGINT, signal.SIGTERM) if handle_signals else ()
    for sig in signals:
        loop.add_signal_handler(sig, stopping.set)

    async def watch() -> None:
        while not server.started:
            await asyncio.sleep(0.02)
        log.info("dashboard_listening", url=_url(listener))  # never the token in a log
        if on_ready is not None:
            on_ready(_url(listener, app.state.auth.config.token))
        await stopping.wait()
        server.should_exit = True

    watcher = asyncio.create_task(watch(), name="dashboard-watch")
    try:
        await server.serve(sockets=[listener])
    finally:
        watcher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watcher
        for sig in signals:
            loop.remove_signal_handler(sig)
        if own_socket:
            listener.close()
