"""The dashboard server (``streamproc.apps.dashboard``): fan-out, the MQTT bridge, the HTTP API.

The API tests run the real server (uvicorn, on a free port, in a background
thread) against a real Mosquitto; the event stream is read over a real HTTP
connection. The server is signed in to as a browser would be: the token
address sets the session cookie, and every POST carries the page's Origin.
Who may do what (sign-in, Host, Origin, forged identities) is
``tests/apps/dashboard/test_auth.py``.
"""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Self
from urllib.parse import urlsplit

import pytest

from streamproc.apps.dashboard import (
    DashboardState,
    EventHub,
    MqttBridge,
    create_app,
    kinds,
    serve_dashboard,
)
from streamproc.apps.dashboard.auth import AuthConfig, add_user
from streamproc.apps.dashboard.events import sse_message
from streamproc.apps.dashboard.state import NotConnectedError
from streamproc.core.protocol.alarms import (
    HYPOTENSION,
    LINE_DAMPED,
    LINE_RINGING,
    NO_PULSE,
    SIGNAL_INVALID,
    STALE,
    AlarmState,
    Trigger,
)
from streamproc.core.protocol.escalation import AdvisoryKind
from streamproc.core.protocol.messages import BedId
from streamproc.wire.topics import TopicError
from tests.system.broker import (
    DEMO_PASSWORDS,
    PROCESSOR_TLS,
    MosquittoBroker,
    Subscriber,
    free_port,
    processor_ca,
    publish,
    shipped_broker,
)

REPO = Path(__file__).resolve().parents[3]
STATIC = REPO / "streamproc" / "apps" / "dashboard" / "static"
#: The page's script modules (static/main.js imports the others).
STATIC_JS = ("main.js", "api.js", "account.js", "alarms.js", "render.js", "dom.js", "state.js")
DISCLAIMER = "Decision support only, not an order: confirm at the bedside."
#: The test servers' sign-in token (the identity it gives is the server's station).
TOKEN = "test-token-0123456789abcdef"  # noqa: S105 - the tests' own


# --------------------------------------------------------------------------- helpers


def alarm_payload(
    unit: str = "ward7",
    bed: str = "bed03",
    kind: str = "hypotension",
    *,
    state: str = "active",
    priority: str = "high",
    alarm_id: str | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """An alarm state as the processor publishes it (the contract's fields, and a few more)."""
    ts = time.time()
    out: dict[str, Any] = {
        "alarm_id": alarm_id or f"{unit}.{bed}.{kind}.{round(ts * 1000)}",
        "kind": kind,
        "state": state,
        "priority": priority,
        "ts": round(ts, 3),
        "onset_ts": round(ts - 90, 3),
        "unit": unit,
        "bed": bed,
    }
    if kind == "hypotension":
        out.update(
            metric="map",
            value=47.0,
            target=65.0,
            profile="standard",
            on_norepinephrine=True,
            recommendation="On norepinephrine and still below target: consider adding "
            "vasopressin 0.03 U/min. Check first: volume. " + DISCLAIMER,
            step="add_vasopressin",
            checks=["volume"],
            cautions=[],
            running=["norepinephrine"],
            disclaimer=DISCLAIMER,
        )
    out.update(trigger="raised", announce_count=0, audience="bedside")
    out.update(extra)
    return out


def summary_payload(unit: str = "ward7", bed: str = "bed03", map_: float = 47.0) -> dict[str, Any]:
    return {
        "unit": unit,
        "bed": bed,
        "ts": round(time.time(), 3),
        "map": map_,
        "sbp": 60.0,
        "dbp": 40.0,
        "hr": 118.0,
        "metric": "map",
        "target": 65.0,
        "profile": "standard",
        "infusions": [{"drug": "norepinephrine", "rate": 0.35, "unit": "mcg/kg/min"}],
        "open_alarms": ["hypotension"],
        "trend": [85.0, 70.0, 50.0, 47.0],
        "trend_step_s": 30.0,
    }


def status_payload(instance: str = "test-1", state: str = "online") -> dict[str, Any]:
    return {
        "instance": instance,
        "state": state,
        "version": "0.1.0",
        "ts": round(time.time(), 3),
        "units": None,
    }


def put(broker: MosquittoBroker, topic: str, payload: dict[str, Any] | bytes) -> None:
    """Publish one retained message (QoS 1) and wait for the broker's ack."""
    body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    publish(broker, topic, body, retain=True)


class DashboardServer:
    """``serve_dashboard`` on a free port, in a thread with its own event loop.

    ``auth`` defaults to token sign-in (:data:`TOKEN`, acknowledging as the
    server's station); with ``sign_in`` the token address is opened at start and
    the session cookie is sent with every later request, as a browser does.
    """

    def __init__(
        self,
        broker_url: str,
        *,
        auth: AuthConfig | None = None,
        sign_in: bool = True,
        **options: Any,
    ) -> None:
        self.broker_url = broker_url
        self.auth = auth or AuthConfig(
            token=TOKEN, token_identity=options.get("station", "station-1")
        )
        self.options = {**options, "auth": self.auth}
        self.sign_in = sign_in
        self.cookie = ""
        self.printed_url = ""
        self.url = ""
        self.port = 0
        self._ready = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="dashboard", daemon=True)

    def _run(self) -> None:
        try:
            asyncio.run(self._main())
        except BaseException as exc:  # noqa: BLE001 - re-raised by stop()
            self._error = exc
            self._ready.set()

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()

        def ready(url: str) -> None:
            self.printed_url = url
            self.url = url.split("?", 1)[0].rstrip("/")
            self.port = int(self.url.rsplit(":", 1)[1])
            self._ready.set()

        await serve_dashboard(
            self.broker_url, port=0, stop=self._stop, on_ready=ready, **self.options
        )

    def start(self, timeout: float = 10.0) -> Self:
        self._thread.start()
        if not self._ready.wait(timeout):
            raise TimeoutError(f"dashboard did not start in {timeout} s")
        if self._error is not None:
            raise self._error
        if self.sign_in and self.auth.token:
            self.sign_in_with_token()
        return self

    def sign_in_with_token(self) -> None:
        """Open the token address, as the user does: keep the session cookie it sets."""
        status, headers, _ = self.request("GET", f"/?token={self.auth.token}", cookie=False)
        assert status == 303, status
        assert headers["location"] == "/"
        self.cookie = headers["set-cookie"].split(";", 1)[0]

    def stop(self, timeout: float = 10.0) -> None:
        if self._loop is not None and self._stop is not None and self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(timeout)
        assert not self._thread.is_alive(), "dashboard did not stop"
        if self._error is not None:
            raise self._error

    # -- HTTP ----------------------------------------------------------------

    def request(
        self,
        method: str,
        path: str,
        body: bytes | None = None,
        headers: dict[str, str] | None = None,
        *,
        cookie: bool = True,
        origin: bool = True,
    ) -> tuple[int, dict[str, str], bytes]:
        """One request; with the session cookie, and for a POST the page's Origin, unless
        told otherwise (``headers`` may replace either, or the Host)."""
        sent: dict[str, str] = {}
        if cookie and self.cookie:
            sent["cookie"] = self.cookie
        if origin and method == "POST":
            sent["origin"] = self.url
        sent.update(headers or {})
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        try:
            conn.request(method, path, body=body, headers=sent)
            resp = conn.getresponse()
            return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
        finally:
            conn.close()

    def get_json(self, path: str) -> tuple[int, Any]:
        status, _, body = self.request("GET", path)
        return status, json.loads(body)

    def post_json(
        self,
        path: str,
        data: Any,
        content_type: str = "application/json",
        headers: dict[str, str] | None = None,
        **options: bool,
    ) -> tuple[int, Any]:
        raw = data if isinstance(data, bytes) else json.dumps(data).encode()
        sent = {"content-type": content_type, **(headers or {})}
        status, _, body = self.request("POST", path, raw, sent, **options)
        return status, json.loads(body)

    def wait_state(self, predicate: Callable[[dict[str, Any]], bool], timeout: float = 10.0) -> Any:
        """Poll ``/api/state`` until ``predicate(state)`` holds; return that state."""
        deadline = time.monotonic() + timeout
        state: Any = None
        while time.monotonic() < deadline:
            _, state = self.get_json("/api/state")
            if predicate(state):
                return state
            time.sleep(0.05)
        raise TimeoutError(f"state condition not met in {timeout} s; last state: {state}")

    def events(self, timeout: float = 10.0) -> SseStream:
        return SseStream(self.port, timeout, self.cookie)


class SseStream:
    """A real HTTP connection to ``/events``, parsed into (event, data) pairs."""

    def __init__(self, port: int, timeout: float, cookie: str = "") -> None:
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
        headers = {"accept": "text/event-stream"}
        if cookie:
            headers["cookie"] = cookie
        self.conn.request("GET", "/events", headers=headers)
        self.response = self.conn.getresponse()
        self.comments: list[str] = []

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.response.close()
        self.conn.close()

    def next(self) -> tuple[str, Any] | None:
        """The next event (``None`` when the server ended the stream)."""
        event, data = "message", []
        while True:
            line = self.response.readline()
            if not line:
                return None
            text = line.decode().rstrip("\r\n")
            if not text:
                if data:
                    return event, json.loads("\n".join(data))
                event = "message"
                continue
            if text.startswith(":"):
                self.comments.append(text[1:].strip())
            elif text.startswith("event:"):
                event = text[6:].strip()
            elif text.startswith("data:"):
                data.append(text[5:].strip())

    def wait_for(
        self, name: str, predicate: Callable[[Any], bool] = lambda _d: True, timeout: float = 10.0
    ) -> Any:
        deadline = time.monotonic() + timeout
        seen = []
        while time.monotonic() < deadline:
            item = self.next()
            if item is None:
                raise EOFError(f"stream ended before a matching {name!r}; saw {seen}")
            seen.append(item[0])
            if item[0] == name and predicate(item[1]):
                return item[1]
        raise TimeoutError(f"no matching {name!r} event in {timeout} s; saw {seen}")


@pytest.fixture
def dashboard(broker: MosquittoBroker) -> Iterator[DashboardServer]:
    """The dashboard on a free port, connected to the test broker (MQTT 5)."""
    server = DashboardServer(broker.url, station="station-9", heartbeat_s=0.5).start()
    try:
        server.wait_state(lambda s: s["bridge"]["connected"], timeout=10)
        yield server
    finally:
        server.stop()


def _bridge(root: str = "icu") -> tuple[MqttBridge, DashboardState, EventHub]:
    state = DashboardState(root, "station-1", "127.0.0.1:1")
    hub = EventHub(8)
    return MqttBridge("mqtt://127.0.0.1:1", state, hub, root=root), state, hub


# --------------------------------------------------------------------------- units


class TestEventHub:
    def test_broadcast_reaches_every_client(self) -> None:
        """Each subscriber gets the same encoded SSE message."""

        async def go() -> None:
            hub = EventHub(4)
            a, b = hub.subscribe(), hub.subscribe()
            hub.broadcast("alarm", {"x": 1})
            assert a.queue.get_nowait() == b.queue.get_nowait() == sse_message("alarm", {"x": 1})
            assert len(hub) == 2

        asyncio.run(go())

    def test_slow_client_is_dropped_not_buffered(self) -> None:
        """A client whose bounded queue is full is dropped: its stream ends, memory stays bounded."""

        async def go() -> None:
            hub = EventHub(3)
            slow, fast = hub.subscribe(), hub.subscribe()
            for i in range(3):
                hub.broadcast("summary", {"i": i})
                fast.queue.get_nowait()
            hub.broadcast("summary", {"i": 3})
            assert slow.dropped
            assert not fast.dropped
            assert slow.queue.qsize() == 1
            assert slow.queue.get_nowait() is None
            assert len(hub) == 1
            assert hub.dropped_total == 1
            assert fast.queue.get_nowait() == sse_message("summary", {"i": 3})

        asyncio.run(go())

    def test_close_ends_every_stream(self) -> None:
        """After close, current and later subscribers get the end marker only."""

        async def go() -> None:
            hub = EventHub(4)
            a = hub.subscribe()
            hub.broadcast("alarm", {})
            hub.close()
            assert a.queue.get_nowait() is None
            assert hub.subscribe().queue.get_nowait() is None
            hub.broadcast("alarm", {})  # ignored once closed
            assert len(hub) == 0

        asyncio.run(go())

    def test_sse_framing(self) -> None:
        """One event line, one data line of compact JSON, a blank line."""
        msg = sse_message("alarm", {"text": "a\nb"})
        assert msg == b'event: alarm\ndata: {"text":"a\\nb"}\n\n'


class TestMqttBridgeHandle:
    def test_alarm_summary_status_are_kept_and_announced(self) -> None:
        """Valid messages land in the state and go to the hub as their event."""

        async def go() -> None:
            bridge, state, hub = _bridge()
            client = hub.subscribe()
            assert bridge.handle(
                "icu/ward7/bed03/alarms/hypotension", json.dumps(alarm_payload()).encode()
            )
            assert bridge.handle("icu/ward7/bed03/summary", json.dumps(summary_payload()).encode())
            assert bridge.handle("icu/_status/test-1", json.dumps(status_payload()).encode())
            snap = state.snapshot()
            assert [a["kind"] for a in snap["alarms"]] == ["hypotension"]
            assert snap["summaries"][0]["summary"]["map"] == 47.0
            assert snap["statuses"][0]["status"]["state"] == "online"
            events = [client.queue.get_nowait() for _ in range(3)]
            assert [e.split(b"\n")[0] for e in events if e] == [
                b"event: alarm",
                b"event: summary",
                b"event: status",
            ]

        asyncio.run(go())

    def test_empty_payload_removes(self) -> None:
        """An emptied retained topic removes the entry (and says so with a null)."""
        bridge, state, _ = _bridge()
        topic = "icu/ward7/bed03/alarms/hypotension"
        bridge.handle(topic, json.dumps(alarm_payload()).encode())
        assert bridge.handle(topic, b"")
        assert state.alarms == {}

    @pytest.mark.parametrize(
        ("topic", "payload"),
        [
            ("icu/ward7/bed03/alarms/hypotension", b"not json"),
            ("icu/ward7/bed03/alarms/hypotension", b"[1, 2]"),
            ("icu/ward7/bed03/alarms/hypotension", b'{"state": "active"}'),
            (
                "icu/ward7/bed03/alarms/hypotension",
                json.dumps(alarm_payload(state="exploded")).encode(),
            ),
            (
                "icu/ward7/bed03/alarms/hypotension",
                json.dumps(alarm_payload(bed="bed04")).encode(),
            ),
            ("icu/ward7/bed03/alarms/Hypo-Tension", json.dumps(alarm_payload()).encode()),
            ("icu/ward7/bed03/alarms/a/b", json.dumps(alarm_payload()).encode()),
            ("other/ward7/bed03/summary", json.dumps(summary_payload()).encode()),
            ("icu/ward 7/bed03/summary", json.dumps(summary_payload()).encode()),
            ("icu/_status/bad instance", json.dumps(status_payload()).encode()),
            ("icu/_status/x", b'{"state": "sleeping"}'),
            ("icu/ward7/bed03/summary", b"{" + b" " * (300 * 1024) + b"}"),
        ],
    )
    def test_malformed_is_ignored(self, topic: str, payload: bytes) -> None:
        """Bad topics and payloads are counted and never stored or raised."""
        bridge, state, _ = _bridge()
        assert not bridge.handle(topic, payload)
        assert state.ignored == 1
        assert not state.alarms
        assert not state.summaries
        assert not state.statuses

    def test_entries_are_capped(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """Past the cap, new alarm topics, beds and instances are ignored; known ones update."""
        monkeypatch.setattr("streamproc.apps.dashboard.app.MAX_ENTRIES", 1)
        bridge, state, _ = _bridge()
        for bed in ("bed01", "bed02"):
            bridge.handle(
                f"icu/ward7/{bed}/alarms/hypotension", json.dumps(alarm_payload(bed=bed)).encode()
            )
            bridge.handle(f"icu/ward7/{bed}/summary", json.dumps(summary_payload(bed=bed)).encode())
            bridge.handle(f"icu/_status/p-{bed}", json.dumps(status_payload(f"p-{bed}")).encode())
        assert (len(state.alarms), len(state.summaries), len(state.statuses)) == (1, 1, 1)
        assert state.ignored == 3
        assert bridge.handle("icu/ward7/bed01/summary", b"")  # removing is always possible
        assert state.summaries == {}

    def test_multi_level_root(self) -> None:
        """A root of several levels is honoured."""
        bridge, state, _ = _bridge("hospital/icu")
        assert bridge.handle(
            "hospital/icu/ward7/bed03/alarms/hypotension", json.dumps(alarm_payload()).encode()
        )
        assert not bridge.handle(
            "icu/ward7/bed03/alarms/hypotension", json.dumps(alarm_payload()).encode()
        )
        assert len(state.alarms) == 1

    def test_publish_ack_needs_a_connection(self) -> None:
        """Without a broker connection, acknowledging fails clearly."""
        bridge, _, _ = _bridge()
        with pytest.raises(NotConnectedError):
            asyncio.run(bridge.publish_ack(BedId("ward7", "bed03"), "x", "station-1"))

    def test_bad_options(self) -> None:
        """A bad MQTT version, root or station is refused when the app is built."""
        with pytest.raises(ValueError, match="mqtt_version"):
            create_app("mqtt://127.0.0.1:1883", mqtt_version=3)
        with pytest.raises(TopicError):
            create_app("mqtt://127.0.0.1:1883", root="icu/+")
        with pytest.raises(ValueError, match="station"):
            create_app("mqtt://127.0.0.1:1883", station="")
        with pytest.raises(ValueError, match=r"service\.broker"):
            create_app("http://127.0.0.1:1883")


# --------------------------------------------------------------------------- HTTP + broker

ALARM_TOPIC = "icu/ward7/bed03/alarms/hypotension"


class TestApiState:
    def test_retained_state_is_served(self, broker: MosquittoBroker) -> None:
        """Retained alarm, summary and status published before the start are in /api/state."""
        put(broker, ALARM_TOPIC, alarm_payload(alarm_id="a-1"))
        put(broker, "icu/ward7/bed03/summary", summary_payload())
        put(broker, "icu/_status/test-1", status_payload())
        server = DashboardServer(broker.url, station="station-9").start()
        try:
            state = server.wait_state(
                lambda s: s["alarms"] and s["summaries"] and s["statuses"], timeout=10
            )
        finally:
            server.stop()
        assert state["station"] == "station-9"
        assert state["root"] == "icu"
        assert state["disclaimer"] == DISCLAIMER
        assert state["bridge"]["connected"] is True
        [alarm] = state["alarms"]
        assert (alarm["topic"], alarm["unit"], alarm["bed"], alarm["kind"]) == (
            ALARM_TOPIC,
            "ward7",
            "bed03",
            "hypotension",
        )
        assert alarm["alarm"]["alarm_id"] == "a-1"
        assert state["summaries"][0]["summary"]["trend"] == [85.0, 70.0, 50.0, 47.0]
        assert state["statuses"][0]["instance"] == "test-1"

    def test_healthz(self, dashboard: DashboardServer) -> None:
        """/healthz: 200 and broker_connected while the bridge is connected."""
        status, body = dashboard.get_json("/healthz")
        assert status == 200
        assert body["status"] == "ok"
        assert body["broker_connected"] is True

    def test_healthz_degraded_without_broker(self) -> None:
        """With no broker reachable: 503 degraded, and the state says disconnected."""
        server = DashboardServer(f"mqtt://127.0.0.1:{free_port()}").start()
        try:
            status, body = server.get_json("/healthz")
            _, state = server.get_json("/api/state")
        finally:
            server.stop()
        assert status == 503
        assert body["status"] == "degraded"
        assert body["broker_connected"] is False
        assert state["bridge"]["connected"] is False

    def test_page_and_assets(self, dashboard: DashboardServer) -> None:
        """The page, its script modules and style come from the package, with a strict CSP."""
        status, headers, body = dashboard.request("GET", "/")
        assert status == 200
        assert headers["content-type"].startswith("text/html")
        assert DISCLAIMER.encode() in body
        assert b'<script type="module" src="/static/main.js">' in body
        assert "script-src 'self'" in headers["content-security-policy"]
        assert headers["x-content-type-options"] == "nosniff"
        assets = [(name, "text/javascript") for name in STATIC_JS] + [("style.css", "text/css")]
        for name, kind in assets:
            status, headers, body = dashboard.request("GET", f"/static/{name}")
            assert status == 200
            assert headers["content-type"].startswith(kind)
            assert body
        for bad in ("/static/nope.js", "/static/index.html", "/static/..%2Fapp.py"):
            assert dashboard.request("GET", bad)[0] == 404

    def test_every_module_the_page_imports_is_served(self) -> None:
        """Each ``import ... from "./x.js"`` of the page's modules names a served file, and
        every served script is imported by one (main.js is the page's own)."""
        imported = {"main.js"}
        for name in STATIC_JS:
            text = (STATIC / name).read_text()
            imported |= set(re.findall(r'from "\./([a-z]+\.js)"', text))
        assert imported == set(STATIC_JS)
        assert {p.name for p in STATIC.glob("*.js")} == set(STATIC_JS)


class TestKinds:
    """The alarm kinds the page shows are the server's (``GET /api/kinds``, kinds.py)."""

    def test_served_from_the_core_names(self, dashboard: DashboardServer) -> None:
        """/api/kinds is kinds.catalog(): every kind the core raises with its label and
        group, the core's priorities (rank, mark, word), triggers and audiences."""
        status, body = dashboard.get_json("/api/kinds")
        assert status == 200
        assert body == json.loads(json.dumps(kinds.catalog()))
        raised = {HYPOTENSION, STALE, SIGNAL_INVALID, LINE_DAMPED, LINE_RINGING, NO_PULSE}
        raised |= {str(k) for k in AdvisoryKind}
        assert set(body["kinds"]) == raised
        assert body["kinds"]["hypotension"] == {"label": "Hypotension", "group": "patient"}
        assert body["kinds"]["data_stale"]["group"] == "technical"
        assert body["kinds"]["advisory_dopamine"]["group"] == "advisory"
        assert body["hypotension"] == HYPOTENSION
        assert body["priorities"] == {
            "high": {"rank": 2, "mark": "!!!", "word": "HIGH"},
            "medium": {"rank": 1, "mark": "!!", "word": "MEDIUM"},
            "low": {"rank": 0, "mark": "!", "word": "LOW"},
        }
        assert body["triggers"] == {t.name.lower(): t.value for t in Trigger}
        assert body["audiences"]["charge_nurse"] == "charge nurse"

    def test_no_kind_written_in_javascript(self) -> None:
        """No script of the page names a kind, a trigger (other than the alarm states,
        which are the payload's contract), a priority or a label: they come from the
        server, so a new kind changes nothing in JavaScript."""
        catalog = kinds.catalog()
        states = {s.value for s in AlarmState}
        names = [*catalog["kinds"], *catalog["priorities"]]
        names += [p["word"] for p in catalog["priorities"].values()]
        triggers = set(catalog["triggers"].values()) - states
        labels = [k["label"] for k in catalog["kinds"].values()]
        for name in STATIC_JS:
            text = (STATIC / name).read_text()
            for word in names:
                assert f'"{word}"' not in text, (name, word)
            for trigger in triggers:
                assert not re.search(f'[!=]== "{trigger}"', text), (name, trigger)
            for label in labels:
                assert f'"{label}"' not in text, (name, label)


class TestEvents:
    def test_snapshot_then_live_alarm(self, broker: MosquittoBroker) -> None:
        """/events starts with the whole state, then streams a new alarm as it is published."""
        put(broker, ALARM_TOPIC, alarm_payload(alarm_id="first"))
        server = DashboardServer(broker.url, heartbeat_s=5).start()
        try:
            server.wait_state(lambda s: bool(s["alarms"]))
            with server.events(timeout=10) as stream:
                first = stream.next()
                assert first is not None
                name, snap = first
                assert name == "snapshot"
                assert [a["alarm"]["alarm_id"] for a in snap["alarms"]] == ["first"]
                assert snap["bridge"]["connected"] is True
                put(broker, "icu/ward7/bed05/alarms/hypotension", alarm_payload(bed="bed05"))
                live = stream.wait_for("alarm", lambda d: d["bed"] == "bed05", timeout=10)
                assert live["alarm"]["state"] == "active"
                assert live["topic"] == "icu/ward7/bed05/alarms/hypotension"
                put(broker, "icu/ward7/bed05/summary", summary_payload(bed="bed05", map_=52.0))
                summary = stream.wait_for("summary", timeout=10)
                assert summary["summary"]["map"] == 52.0
                put(broker, "icu/_status/test-1", status_payload(state="offline"))
                status = stream.wait_for("status", timeout=10)
                assert status["status"]["state"] == "offline"
        finally:
            server.stop()

    def test_heartbeat_when_idle(self, dashboard: DashboardServer) -> None:
        """A quiet stream carries a heartbeat comment and event (here every 0.5 s)."""
        with dashboard.events(timeout=10) as stream:
            assert stream.wait_for("snapshot")
            beat = stream.wait_for("heartbeat", timeout=5)
            assert beat["connected"] is True
            assert beat["ts"] > 0
            assert "heartbeat" in stream.comments

    def test_broker_loss_and_return(self, broker: MosquittoBroker) -> None:
        """The bridge reports the broker gone, reconnects, and rebuilds from the retained state."""
        put(broker, ALARM_TOPIC, alarm_payload(alarm_id="kept"))
        server = DashboardServer(broker.url, heartbeat_s=5).start()
        try:
            server.wait_state(lambda s: bool(s["alarms"]))
            with server.events(timeout=20) as stream:
                assert stream.wait_for("snapshot")
                broker.stop()
                down = stream.wait_for("bridge", lambda d: not d["connected"], timeout=20)
                assert down["error"]
                assert server.get_json("/healthz")[0] == 503
                broker.start()
                again = stream.wait_for("snapshot", lambda d: d["bridge"]["connected"], timeout=20)
                assert again["alarms"] == []  # rebuilt: the retained ones follow as events
                kept = stream.wait_for("alarm", timeout=10)
                assert kept["alarm"]["alarm_id"] == "kept"
        finally:
            server.stop()

    def test_stop_ends_open_streams(self, broker: MosquittoBroker) -> None:
        """Stopping the server ends the open event streams instead of hanging on them."""
        server = DashboardServer(broker.url, heartbeat_s=30).start()
        stream = server.events(timeout=10)
        try:
            assert stream.wait_for("snapshot")
            started = time.monotonic()
            server.stop()
            assert stream.next() is None
            assert time.monotonic() - started < 5
        finally:
            stream.close()


class TestAck:
    @pytest.fixture
    def with_alarm(self, broker: MosquittoBroker, dashboard: DashboardServer) -> str:
        alarm_id = "ward7.bed03.hypotension.1"
        put(broker, ALARM_TOPIC, alarm_payload(alarm_id=alarm_id))
        dashboard.wait_state(lambda s: bool(s["alarms"]))
        return alarm_id

    def test_ack_is_published(
        self, broker: MosquittoBroker, dashboard: DashboardServer, with_alarm: str
    ) -> None:
        """POST /api/ack publishes {ts, alarm_id, by} on the bed's ack topic at QoS 1,
        ``by`` being the signed-in identity (a token sign-in: the server's station)."""
        with Subscriber(broker, "icu/+/+/ack", qos=1) as sub:
            before = time.time()
            status, body = dashboard.post_json(
                "/api/ack", {"alarm_id": with_alarm, "unit": "ward7", "bed": "bed03"}
            )
            assert status == 202, body
            msg = sub.wait_for(timeout=5)
        assert msg.topic == "icu/ward7/bed03/ack"
        assert msg.qos == 1
        assert not msg.retain
        payload = json.loads(msg.payload)
        assert set(payload) == {"ts", "alarm_id", "by"}
        assert payload["alarm_id"] == with_alarm
        assert payload["by"] == "station-9"
        assert before - 1 <= payload["ts"] <= time.time() + 1
        assert body["topic"] == "icu/ward7/bed03/ack"
        assert body["payload"] == payload

    @pytest.mark.parametrize(
        ("change", "field"),
        [
            ({"alarm_id": None}, "alarm_id"),
            ({"alarm_id": 5}, "alarm_id"),
            ({"alarm_id": ""}, "alarm_id"),
            ({"alarm_id": "x" * 201}, "alarm_id"),
            ({"alarm_id": "a\nb"}, "alarm_id"),
            ({"unit": None}, "unit"),
            ({"bed": ["bed03"]}, "bed"),
            ({"unit": "+"}, "unit"),
            ({"unit": "#"}, "unit"),
            ({"unit": ".."}, "unit"),
            ({"unit": "ward7/bed03"}, "unit"),
            ({"unit": ""}, "unit"),
            ({"bed": "bed03/alarms"}, "bed"),
            ({"bed": "+"}, "bed"),
            ({"bed": "x" * 65}, "bed"),
        ],
    )
    def test_bad_field_is_400_naming_it(
        self,
        broker: MosquittoBroker,
        dashboard: DashboardServer,
        with_alarm: str,
        change: dict[str, Any],
        field: str,
    ) -> None:
        """A missing, mistyped, oversized, wildcard or traversal value: 400 naming the field."""
        body = {"alarm_id": with_alarm, "unit": "ward7", "bed": "bed03"}
        body.update(change)
        body = {k: v for k, v in body.items() if v is not None}
        with Subscriber(broker, "#", qos=1) as sub:
            sub.wait_for(timeout=5)  # the retained alarm
            sub.clear()
            status, reply = dashboard.post_json("/api/ack", body)
            assert status == 400, reply
            assert reply["field"] == field
            assert reply["error"]
            time.sleep(0.2)
            assert not [m for m in sub.messages if m.topic.endswith("/ack")]

    @pytest.mark.parametrize("raw", [b"not json", b"[]", b'"x"', b""])
    def test_body_not_an_object(self, dashboard: DashboardServer, raw: bytes) -> None:
        """A body that is not a JSON object: 400 naming the body."""
        status, reply = dashboard.post_json("/api/ack", raw)
        assert status == 400
        assert reply["field"] == "body"

    def test_oversized_body(self, dashboard: DashboardServer) -> None:
        """A huge body is refused before it is parsed."""
        status, reply = dashboard.post_json("/api/ack", b"{" + b" " * 10_000 + b"}")
        assert status == 413
        assert reply["field"] == "body"

    def test_not_json_content_type(self, dashboard: DashboardServer, with_alarm: str) -> None:
        """Only application/json is taken (a cross-site form cannot send it without CORS)."""
        status, reply = dashboard.post_json(
            "/api/ack",
            {"alarm_id": with_alarm, "unit": "ward7", "bed": "bed03"},
            content_type="text/plain",
        )
        assert status == 415
        assert reply["field"] == "content-type"

    def test_unknown_or_other_bed_alarm_is_409(
        self, dashboard: DashboardServer, with_alarm: str
    ) -> None:
        """An alarm id that is not open on that bed is refused: no ack of the wrong patient."""
        for unit, bed, alarm_id in (("ward7", "bed03", "nope"), ("ward7", "bed04", with_alarm)):
            status, reply = dashboard.post_json(
                "/api/ack", {"alarm_id": alarm_id, "unit": unit, "bed": bed}
            )
            assert status == 409
            assert reply["field"] == "alarm_id"

    def test_get_is_not_allowed(self, dashboard: DashboardServer) -> None:
        """Acknowledging needs a POST."""
        assert dashboard.request("GET", "/api/ack")[0] == 405

    def test_503_when_not_connected(self) -> None:
        """No broker connection: 503, nothing pretended."""
        server = DashboardServer(f"mqtt://127.0.0.1:{free_port()}").start()
        try:
            status, reply = server.post_json(
                "/api/ack", {"alarm_id": "a", "unit": "ward7", "bed": "bed03"}
            )
        finally:
            server.stop()
        assert status == 503
        assert "not connected" in reply["error"]


class TestMqtt311:
    def test_state_and_ack_over_mqtt_3_1_1(self, broker: MosquittoBroker) -> None:
        """With mqtt_version=4 (brokers without MQTT 5, e.g. amqtt) reading and acking work."""
        put(broker, ALARM_TOPIC, alarm_payload(alarm_id="v4"))
        server = DashboardServer(broker.url, mqtt_version=4).start()
        try:
            server.wait_state(lambda s: bool(s["alarms"]))
            with Subscriber(broker, "icu/+/+/ack", qos=1, protocol=4) as sub:
                status, _ = server.post_json(
                    "/api/ack", {"alarm_id": "v4", "unit": "ward7", "bed": "bed03"}
                )
                assert status == 202
                assert json.loads(sub.wait_for(timeout=5).payload)["by"] == "station-1"
        finally:
            server.stop()


class TestShippedBrokerSecurity:
    def test_dashboard_user_reads_and_acknowledges(
        self, mosquitto_bin: Path, tmp_path: Path
    ) -> None:
        """With the shipped passwords and ACL, the `dashboard` user reads the state and acks."""
        secure = shipped_broker(tmp_path, binary=mosquitto_bin)
        secure.start()
        try:
            processor = Subscriber(
                (secure.host, secure.ports[PROCESSOR_TLS]),
                "icu/+/+/ack",
                username="processor",
                password=DEMO_PASSWORDS["processor"],
            )
            processor.client.tls_set(ca_certs=str(processor_ca(secure)))
            with processor:
                processor.publish(
                    ALARM_TOPIC, json.dumps(alarm_payload(alarm_id="sec-1")), retain=True
                )
                processor.publish(
                    "icu/ward7/bed03/summary", json.dumps(summary_payload()), retain=True
                )
                processor.publish("icu/_status/p-1", json.dumps(status_payload("p-1")), retain=True)
                server = DashboardServer(
                    secure.url, username="dashboard", password=DEMO_PASSWORDS["dashboard"]
                ).start()
                try:
                    server.wait_state(lambda s: s["alarms"] and s["summaries"] and s["statuses"])
                    status, _ = server.post_json(
                        "/api/ack",
                        {"alarm_id": "sec-1", "unit": "ward7", "bed": "bed03"},
                    )
                    assert status == 202
                    ack = json.loads(processor.wait_for(timeout=5).payload)
                    assert ack["alarm_id"] == "sec-1"
                finally:
                    server.stop()
        finally:
            secure.close()


class TestCli:
    def test_dashboard_command_serves_and_stops_on_sigterm(self, broker: MosquittoBroker) -> None:
        """`streamproc dashboard --port 0` prints its URL, serves /healthz, exits 0 on SIGTERM."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("STREAMPROC_")}
        env["PYTHONUNBUFFERED"] = "1"
        proc = subprocess.Popen(  # noqa: S603 - our own interpreter and module
            [
                sys.executable,
                "-m",
                "streamproc",
                "dashboard",
                "--broker",
                broker.url,
                "--port",
                "0",
                "--station",
                "station-2",
                "--log-level",
                "warning",
            ],
            cwd=REPO,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        try:
            assert proc.stdout is not None
            line = proc.stdout.readline().decode()
            assert "streamproc dashboard: http://127.0.0.1:" in line, line
            printed = urlsplit(line.split()[2])
            # nothing else configured: a one-off token in the address, as Jupyter prints
            assert printed.query.startswith("token=")
            assert len(printed.query) > len("token=") + 20
            port = printed.port
            deadline = time.monotonic() + 10
            body: dict[str, Any] = {}
            while time.monotonic() < deadline:
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
                try:
                    conn.request("GET", "/healthz")
                    body = json.loads(conn.getresponse().read())
                finally:
                    conn.close()
                if body.get("broker_connected"):
                    break
                time.sleep(0.1)
            assert body.get("broker_connected") is True
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(10) == 0
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(5)
            for pipe in (proc.stdout, proc.stderr):
                if pipe is not None:
                    pipe.close()

    def test_users_file_means_no_token(self, broker: MosquittoBroker, tmp_path: Path) -> None:
        """With --users, the printed address has no token (password sign-in only); a
        malformed credentials file stops the start with status 2 naming file and line."""
        users = tmp_path / "users"
        add_user(users, "alice", "a-long-password")
        env = {k: v for k, v in os.environ.items() if not k.startswith("STREAMPROC_")}
        env["PYTHONUNBUFFERED"] = "1"
        command = [sys.executable, "-m", "streamproc", "dashboard", "--broker", broker.url]
        proc = subprocess.Popen(  # noqa: S603 - our own interpreter and module
            [*command, "--port", "0", "--users", str(users)],
            cwd=REPO,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
        )
        try:
            assert proc.stdout is not None
            line = proc.stdout.readline().decode()
            assert "http://127.0.0.1:" in line, line
            assert "token" not in line
        finally:
            proc.terminate()
            proc.wait(10)
            if proc.stdout is not None:
                proc.stdout.close()
        users.write_text("alice:not-a-hash\n")
        bad = subprocess.run(  # noqa: S603
            [*command, "--port", "0", "--users", str(users)],
            cwd=REPO,
            env=env,
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        assert bad.returncode == 2
        assert f"{users}:1" in bad.stderr

    def test_bad_root_is_a_usage_error(self) -> None:
        """A root with a wildcard stops the start with status 2 and a message."""
        proc = subprocess.run(
            [
                sys.executable,
                "-m",
                "streamproc",
                "dashboard",
                "--broker",
                "mqtt://127.0.0.1:1",
                "--root",
                "icu/+",
            ],
            cwd=REPO,
            capture_output=True,
            timeout=30,
            check=False,
        )
        assert proc.returncode == 2
        assert b"root" in proc.stderr
