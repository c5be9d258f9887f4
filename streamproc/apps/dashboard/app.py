"""The dashboard server: an MQTT bridge, a Server-Sent Events feed, a small JSON API.

One asyncio event loop runs everything. This module is the MQTT bridge and the wiring;
each route lives with its concern:

- :class:`MqttBridge` subscribes to ``{root}/+/+/alarms/#``, ``{root}/+/+/summary``
  and ``{root}/_status/#`` (MQTT 5 by default, 3.1.1 with ``mqtt_version=4``),
  keeps the latest of each in :class:`~streamproc.apps.dashboard.state.DashboardState`
  (per alarm topic its last payload, per bed its summary, per processor instance its
  status) and reconnects with jittered exponential backoff. After each (re)connection
  the state is rebuilt from what the broker has retained.
- :mod:`streamproc.apps.dashboard.events`: the :class:`EventHub` fans every change out
  to the browsers connected to ``GET /events`` (Server-Sent Events), each through a
  bounded queue: one that does not keep up is dropped (its stream ends) and its
  ``EventSource`` reconnects and starts again from a fresh snapshot; memory never
  grows with a slow client.
- :mod:`streamproc.apps.dashboard.ack`: ``POST /api/ack`` publishes an acknowledgement
  on ``{root}/{unit}/{bed}/ack`` (QoS 1) by the signed-in user; the processor decides
  what it means and publishes the new alarm state, which comes back through the bridge.
- :mod:`streamproc.apps.dashboard.api` (the other JSON endpoints) and
  :mod:`streamproc.apps.dashboard.pages` (the page and its files).
- :mod:`streamproc.apps.dashboard.security` asks
  :mod:`streamproc.apps.dashboard.auth` who is there: every request's ``Host`` is
  checked, reading needs a signed-in user (unless the site opens it), writing needs
  one and the page's own ``Origin``.

The contract (event names and payloads) is described in ``docs/dashboard.md``.
Everything shown is decision support for clinicians, never orders.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import signal
import socket
import ssl
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any, Final

import aiomqtt
import msgspec
import uvicorn
from starlette.applications import Starlette
from starlette.routing import Route

from streamproc.apps.dashboard.ack import Acknowledge
from streamproc.apps.dashboard.api import Api
from streamproc.apps.dashboard.auth import AuthConfig, Authenticator
from streamproc.apps.dashboard.events import CLIENT_QUEUE_MAX, HEARTBEAT_S, EventHub, EventStream
from streamproc.apps.dashboard.pages import Pages
from streamproc.apps.dashboard.security import Guard, HostCheck, SecurityHeaders
from streamproc.apps.dashboard.state import DashboardState, NotConnectedError, now
from streamproc.apps.dashboard.web import printable
from streamproc.core.protocol.alarms import AlarmState, Priority
from streamproc.core.protocol.messages import BedId
from streamproc.shell.backoff import Backoff
from streamproc.shell.config import parse_broker_url
from streamproc.shell.logs import get_logger
from streamproc.wire.topics import (
    DEFAULT_ROOT,
    TopicError,
    alarms_filter,
    inbound_topic,
    parse_alarm_topic,
    parse_status_topic,
    parse_summary_topic,
    status_filter,
    summary_filter,
    under_root,
)

__all__ = [
    "MqttBridge",
    "bind_socket",
    "create_app",
    "serve_dashboard",
]

log = get_logger("streamproc.apps.dashboard")

#: Payloads larger than this are ignored (an alarm is well under 4 KB).
MAX_PAYLOAD_BYTES: Final = 256 * 1024
#: At most this many alarm topics, beds and instances each are kept.
MAX_ENTRIES: Final = 10_000
#: How long ``POST /api/ack`` waits for the broker's PUBACK.
ACK_TIMEOUT_S: Final = 5.0
_STATES: Final = frozenset(state.value for state in AlarmState)
_PRIORITIES: Final = frozenset(priority.value for priority in Priority)
_MAX_BY: Final = 64

_encoder: Final = msgspec.json.Encoder()


# --------------------------------------------------------------------------- MQTT bridge


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
        self.state.changed_ts = now()
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
        if not under_root(topic, self.root):
            return self._ignore(topic, "not under root")
        data = None
        if payload:
            data = self._decode(payload)
            if data is None:
                return self._ignore(topic, "not a JSON object")
        try:
            instance = parse_status_topic(topic, self.root)
        except TopicError as exc:
            if exc.field is not None:
                return self._ignore(topic, "bad instance")
        else:
            return self._status(topic, instance, data)
        try:
            bed_id = parse_summary_topic(topic, self.root)
        except TopicError as exc:
            if exc.field is not None:
                return self._ignore(topic, "bad unit or bed")
        else:
            return self._summary(topic, bed_id, data)
        return self._alarm(topic, data)

    def _status(self, topic: str, instance: str, data: dict[str, Any] | None) -> bool:
        if data is not None and data.get("state") not in ("online", "offline"):
            return self._ignore(topic, "status state must be online or offline")
        entry = {"topic": topic, "instance": instance, "status": data}
        if not self._store(self.state.statuses, instance, entry, data):
            return self._ignore(topic, "too many instances")
        self.hub.broadcast("status", entry)
        return True

    def _summary(self, topic: str, bed_id: BedId, data: dict[str, Any] | None) -> bool:
        if data is not None:
            data["unit"], data["bed"] = bed_id.unit, bed_id.bed
        entry = {"topic": topic, "unit": bed_id.unit, "bed": bed_id.bed, "summary": data}
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
        payload = {"ts": now(), "alarm_id": alarm_id, "by": by}
        try:
            await client.publish(topic, _encoder.encode(payload), qos=1, timeout=ACK_TIMEOUT_S)
        except aiomqtt.MqttError as exc:
            raise NotConnectedError(f"the broker did not take the acknowledgement: {exc}") from exc
        log.info(
            "ack_published", unit=bed.unit, bed=bed.bed, alarm_id=alarm_id, by=by, method=method
        )
        return topic, payload


# --------------------------------------------------------------------------- HTTP


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
    if not (0 < len(station) <= _MAX_BY and printable(station)):
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
    guard = Guard(authn)
    pages = Pages(guard)
    api = Api(state, hub, guard)
    events = EventStream(state, hub, guard, heartbeat_s)
    ack = Acknowledge(state, guard, bridge.publish_ack, root)
    app = Starlette(
        routes=[
            Route("/", pages.index),
            Route("/static/{name}", pages.static_file),
            Route("/events", events.get),
            Route("/api/state", api.snapshot),
            Route("/api/ack", ack.post, methods=["POST"]),
            Route("/api/me", api.me),
            Route("/api/kinds", api.kinds),
            Route("/api/login", api.login, methods=["POST"]),
            Route("/api/logout", api.logout, methods=["POST"]),
            Route("/healthz", api.healthz),
        ],
        lifespan=_lifespan(bridge, hub),
    )
    app.add_middleware(HostCheck, auth=authn)
    app.add_middleware(SecurityHeaders)
    app.state.dashboard = state
    app.state.hub = hub
    app.state.bridge = bridge
    app.state.auth = authn
    return app


def _lifespan(
    bridge: MqttBridge, hub: EventHub
) -> Callable[[Starlette], contextlib.AbstractAsyncContextManager[None]]:
    """The app's lifespan: the bridge runs while it does; open streams end first."""

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

    return lifespan


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
