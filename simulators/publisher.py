"""Send a ward's (or a record's) messages: to a broker, paced in data time, or to a recording file.

:class:`MqttSink` is a paho-mqtt client with its own network thread
(``loop_start``): the caller publishes from its thread and the network thread
writes and collects the PUBACKs, which keeps thousands of messages a second
cheap. :func:`publish_stream` paces a time-ordered stream: a line whose data
time is ``ts`` is due ``(ts - t0) / speed`` wall seconds after the start; every
line due within :data:`BATCH_S` is sent at once, then the loop sleeps until the
next one (``speed`` 0: no pacing). Context messages (patient, infusion, labs,
ack) go at QoS 1, patient and infusion retained as the wire contract says;
``abp`` and ``vitals`` at the chosen QoS. :func:`write_recording` writes the
same stream as JSON Lines for ``streamproc replay``.
"""

from __future__ import annotations

import os
import resource
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from typing import IO, Any, Final
from urllib.parse import urlsplit

import msgspec
import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from simulators.scenario import Scenario
from simulators.ward import Bed, Compact, prepare, ward_stream
from streamproc.wire.recordings import Timed

__all__ = [
    "BATCH_S",
    "CONTEXT_KINDS",
    "RETAINED_KINDS",
    "MqttSink",
    "ProgressView",
    "PublishStats",
    "SimError",
    "clear_retained",
    "parse_broker_url",
    "peak_rss_mb",
    "publish_stream",
    "retained_topics",
    "send_ward",
    "stagger_offset",
    "write_recording",
    "write_ward",
]

#: Lines due within this many seconds of now are sent together, without sleeping.
BATCH_S: Final = 0.010
#: Sent at QoS 1 whatever ``--qos`` says.
CONTEXT_KINDS: Final = frozenset({"patient", "infusion", "labs", "ack"})
#: Retained, as the wire contract says.
RETAINED_KINDS: Final = frozenset({"patient", "infusion"})
#: Publishing pauses while this many messages wait for the broker (bounds memory).
MAX_PENDING: Final = 20_000

_encoder: Final = msgspec.json.Encoder()


class SimError(RuntimeError):
    """The simulator cannot go on (broker unreachable, bad option...): the message says why."""


def parse_broker_url(url: str) -> tuple[str, int, bool]:
    """``mqtt://host[:port]`` or ``mqtts://host[:port]`` -> (host, port, tls).

    Without a scheme the URL is refused (never guessed as plain MQTT).
    """
    parts = urlsplit(url)
    if "://" not in url or parts.scheme not in {"mqtt", "mqtts"} or not parts.hostname:
        raise SimError(
            f"expected a broker URL mqtt://host[:port] (plain, 1883) or "
            f"mqtts://host[:port] (TLS, 8883), got {url!r}"
        )
    tls = parts.scheme == "mqtts"
    try:
        port = parts.port or (8883 if tls else 1883)
    except ValueError:
        raise SimError(f"bad port in broker URL {url!r}") from None
    return parts.hostname, port, tls


def peak_rss_mb() -> float:
    """This process's peak resident set size (MB)."""
    kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return kb / 1024.0 if sys.platform != "darwin" else kb / 1024.0 / 1024.0


def kind_of(topic: str) -> str:
    """The message kind: the last topic level (``alarms/...`` is not sent by the simulator)."""
    return topic.rsplit("/", 1)[-1]


# --------------------------------------------------------------------------- MQTT


def sim_client(client_id: str = "", *, tls: bool = False) -> mqtt.Client:
    """A paho client for the simulator, with credentials from the environment.

    ``STREAMPROC_SIM_USERNAME`` / ``STREAMPROC_SIM_PASSWORD`` log in to a broker
    that refuses anonymous clients (the shipped config: the ``simulator`` role);
    ``STREAMPROC_SIM_TLS_CA`` is the CA file an ``mqtts://`` broker is checked
    against (default: the system's CAs).
    """
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv311)
    if tls:
        client.tls_set(ca_certs=os.environ.get("STREAMPROC_SIM_TLS_CA") or None)
    user = os.environ.get("STREAMPROC_SIM_USERNAME")
    if user:
        client.username_pw_set(user, os.environ.get("STREAMPROC_SIM_PASSWORD"))
    return client


class MqttSink:
    """A connected paho client publishing from the caller's thread; counts what the broker took.

    ``acked`` counts PUBACKs (QoS 1) and QoS 0 messages written to the socket.
    """

    def __init__(self, url: str, *, client_id: str | None = None, timeout: float = 10.0) -> None:
        self.url = url
        self.host, self.port, tls = parse_broker_url(url)
        self.client = sim_client(
            client_id or f"streamproc-sim-{os.getpid()}-{uuid.uuid4().hex[:6]}", tls=tls
        )
        self.client.max_inflight_messages_set(1000)
        self.client.max_queued_messages_set(0)
        self.client.on_connect = self._on_connect
        self.client.on_publish = self._on_publish
        self.timeout = timeout
        self.sent = 0
        self.acked = 0
        self.errors = 0
        self._lock = threading.Lock()
        self._connected = threading.Event()
        self._refused: str | None = None

    def _on_connect(
        self,
        _client: mqtt.Client,
        _userdata: object,
        _flags: mqtt.ConnectFlags,
        reason_code: ReasonCode,
        _properties: Properties | None,
    ) -> None:
        if reason_code.is_failure:
            self._refused = str(reason_code)
        self._connected.set()

    def _on_publish(
        self,
        _client: mqtt.Client,
        _userdata: object,
        _mid: int,
        _reason_code: ReasonCode,
        _properties: Properties | None,
    ) -> None:
        with self._lock:
            self.acked += 1

    def connect(self) -> MqttSink:
        try:
            self.client.connect(self.host, self.port, keepalive=30)
        except OSError as exc:
            raise SimError(f"cannot connect to {self.url}: {exc}") from exc
        self.client.loop_start()
        if not self._connected.wait(self.timeout) or self._refused:
            self.client.loop_stop()
            why = self._refused or f"no CONNACK in {self.timeout:g} s"
            raise SimError(f"broker {self.url} refused the connection: {why}")
        return self

    def publish(self, topic: str, payload: bytes, *, qos: int, retain: bool = False) -> None:
        info = self.client.publish(topic, payload, qos=qos, retain=retain)
        self.sent += 1
        dropped = info.rc == mqtt.MQTT_ERR_QUEUE_SIZE or (
            qos == 0 and info.rc != mqtt.MQTT_ERR_SUCCESS
        )
        if dropped:
            # QoS 0 while disconnected is dropped (QoS 1 stays queued and is resent on reconnect)
            self.errors += 1
            with self._lock:
                self.acked += 1

    @property
    def pending(self) -> int:
        return self.sent - self.acked

    def flush(self, timeout: float = 30.0) -> bool:
        """Wait until the broker has taken everything sent; whether it did within ``timeout``."""
        deadline = time.monotonic() + timeout
        while self.pending > 0:
            if time.monotonic() > deadline:
                return False
            time.sleep(0.01)
        return True

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()

    def __enter__(self) -> MqttSink:
        return self.connect()

    def __exit__(self, *exc: object) -> None:
        self.close()


def clear_retained(url: str, topics: Iterable[str], *, timeout: float = 30.0) -> int:
    """Empty retained messages on ``topics`` (QoS 1): the broker forgets them. Returns how many."""
    n = 0
    with MqttSink(url) as sink:
        for topic in sorted(set(topics)):
            sink.publish(topic, b"", qos=1, retain=True)
            n += 1
        if not sink.flush(timeout):
            raise SimError(f"clearing retained topics: {sink.pending} not acknowledged")
    return n


def retained_topics(
    url: str,
    root: str,
    wanted: Callable[[str], bool],
    *,
    quiet_s: float = 0.5,
    max_s: float = 30.0,
) -> set[str]:
    """The topics under ``root`` holding a retained message whose unit ``wanted(unit)`` accepts.

    Subscribes to ``{root}/#`` and collects what the broker replays until it has
    been quiet for ``quiet_s`` (at most ``max_s``).
    """
    host, port, tls = parse_broker_url(url)
    root_levels = len(root.split("/"))
    found: set[str] = set()
    last = [time.monotonic()]
    ready = threading.Event()
    client = sim_client(tls=tls)

    def on_connect(c: mqtt.Client, *_: Any) -> None:
        c.subscribe(f"{root}/#", qos=1)

    def on_subscribe(*_: Any) -> None:
        last[0] = time.monotonic()
        ready.set()

    def on_message(_c: mqtt.Client, _u: object, msg: mqtt.MQTTMessage) -> None:
        last[0] = time.monotonic()
        levels = msg.topic.split("/")
        if msg.retain and msg.payload and len(levels) > root_levels and wanted(levels[root_levels]):
            found.add(msg.topic)

    client.on_connect = on_connect
    client.on_subscribe = on_subscribe
    client.on_message = on_message
    try:
        client.connect(host, port, keepalive=30)
    except OSError as exc:
        raise SimError(f"cannot connect to {url}: {exc}") from exc
    client.loop_start()
    try:
        if not ready.wait(10):
            raise SimError(f"no SUBACK from {url}")
        end = time.monotonic() + max_s
        while time.monotonic() < end and time.monotonic() - last[0] < quiet_s:
            time.sleep(0.05)
    finally:
        client.disconnect()
        client.loop_stop()
    return found


# --------------------------------------------------------------------------- stats


@dataclass(slots=True)
class PublishStats:
    """What was sent, how fast."""

    beds: int = 0
    by_kind: Counter[str] = field(default_factory=Counter)
    speed: float = 0.0
    wall_s: float = 0.0
    prepare_s: float = 0.0
    t0: float = 0.0
    last_ts: float | None = None
    data_total_s: float = 0.0
    acked: int = 0
    errors: int = 0
    max_lag_s: float = 0.0
    retained_topics: set[str] = field(default_factory=set)
    out: str | None = None

    @property
    def sent(self) -> int:
        return sum(self.by_kind.values())

    @property
    def data_s(self) -> float:
        return 0.0 if self.last_ts is None else max(self.last_ts - self.t0, 0.0)

    @property
    def achieved_speed(self) -> float:
        return self.data_s / self.wall_s if self.wall_s > 0 else 0.0

    @property
    def rate(self) -> float:
        return self.sent / self.wall_s if self.wall_s > 0 else 0.0

    def summary(self) -> str:
        kinds = ", ".join(f"{k} {v:,}" for k, v in sorted(self.by_kind.items()))
        asked = "as fast as possible" if self.speed <= 0 else f"asked {self.speed:g}x"
        where = f" to {self.out}" if self.out else ""
        parts = [
            (
                f"streamproc-sim: {self.sent:,} messages ({kinds or 'none'}){where} from "
                f"{self.beds} beds: {self.data_s:.1f} s of data in {self.wall_s:.1f} s wall"
            ),
        ]
        if self.out is None:
            parts.append(f"speed {self.achieved_speed:.2f}x ({asked})")
            parts.append(f"{self.rate:,.0f} msg/s")
            parts.append(f"max lag {self.max_lag_s:.2f} s")
            if self.errors:
                parts.append(f"{self.errors} dropped while disconnected")
        parts.append(f"prepare {self.prepare_s:.1f} s, peak RSS {peak_rss_mb():.0f} MB")
        return ", ".join(parts)

    def as_dict(self) -> dict[str, Any]:
        return {
            "beds": self.beds,
            "messages": self.sent,
            "by_kind": dict(sorted(self.by_kind.items())),
            "speed_asked": self.speed,
            "speed_achieved": round(self.achieved_speed, 3),
            "data_s": round(self.data_s, 3),
            "wall_s": round(self.wall_s, 3),
            "rate_msg_s": round(self.rate, 1),
            "max_lag_s": round(self.max_lag_s, 3),
            "prepare_s": round(self.prepare_s, 3),
            "dropped": self.errors,
            "peak_rss_mb": round(peak_rss_mb(), 1),
        }


# --------------------------------------------------------------------------- progress


class ProgressView:
    """A rich live panel: messages sent, rate, beds, simulated time, speed."""

    def __init__(self, stats: PublishStats, *, title: str = "streamproc-sim") -> None:
        from rich.console import Console  # noqa: PLC0415 - only when a view is wanted
        from rich.live import Live  # noqa: PLC0415

        self.stats = stats
        self.title = title
        self.console = Console(stderr=True)
        self._live = Live(console=self.console, refresh_per_second=4, transient=False)
        self._last = (time.monotonic(), 0)
        self._rate = 0.0
        self.pending = 0

    def __enter__(self) -> ProgressView:
        self._live.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.update(force=True)
        self._live.__exit__(None, None, None)
        if not self.console.is_terminal:
            self.console.line()  # the final panel ends without a newline when not a terminal

    def update(self, *, force: bool = False) -> None:
        from rich.table import Table  # noqa: PLC0415

        now = time.monotonic()
        last_t, last_n = self._last
        if now - last_t < 0.25 and not force:
            return
        s = self.stats
        if now > last_t:
            self._rate = (s.sent - last_n) / (now - last_t)
        self._last = (now, s.sent)
        table = Table(title=self.title, show_header=False, expand=False)
        table.add_column(style="bold")
        table.add_column(justify="right")
        table.add_row("beds", f"{s.beds:,}")
        table.add_row("messages sent", f"{s.sent:,}")
        table.add_row("awaiting broker", f"{self.pending:,}")
        table.add_row("rate", f"{self._rate:,.0f} msg/s")
        total = f" / {s.data_total_s:,.0f}" if s.data_total_s else ""
        table.add_row("simulated time", f"{s.data_s:,.1f}{total} s")
        table.add_row("wall time", f"{s.wall_s:,.1f} s")
        asked = "max" if s.speed <= 0 else f"{s.speed:g}x"
        table.add_row("speed", f"{s.achieved_speed:.2f}x (asked {asked})")
        self._live.update(table)


# --------------------------------------------------------------------------- sending


def _encode(payload: Any) -> bytes:
    return payload.encode() if isinstance(payload, str) else _encoder.encode(payload)


def publish_stream(
    stream: Iterable[Timed],
    sink: MqttSink,
    *,
    speed: float,
    t0: float,
    qos: int = 1,
    stats: PublishStats | None = None,
    on_progress: Callable[[], None] | None = None,
    flush_timeout: float = 60.0,
) -> PublishStats:
    """Publish a time-ordered stream, ``speed`` times faster than its data clock (0: no pacing).

    ``t0`` is the data time that maps to the start. Returns when the broker has
    acknowledged everything (or ``flush_timeout`` passed).
    """
    st = stats if stats is not None else PublishStats()
    st.speed, st.t0 = speed, t0
    start = time.monotonic()
    for n, (ts, _, line) in enumerate(stream, 1):
        if speed > 0:
            due = start + (ts - t0) / speed
            delay = due - time.monotonic()
            if delay > BATCH_S:
                if on_progress is not None:
                    st.wall_s = time.monotonic() - start
                    on_progress()
                time.sleep(delay)
            elif -delay > st.max_lag_s:
                st.max_lag_s = -delay
        topic = line["topic"]
        kind = kind_of(topic)
        retain = kind in RETAINED_KINDS
        if retain:
            st.retained_topics.add(topic)
        sink.publish(
            topic,
            _encode(line["payload"]),
            qos=1 if kind in CONTEXT_KINDS else qos,
            retain=retain,
        )
        st.by_kind[kind] += 1
        st.last_ts = ts
        while sink.pending > MAX_PENDING:
            time.sleep(0.002)
        if on_progress is not None and not n % 256:
            st.wall_s = time.monotonic() - start
            on_progress()
    ok = sink.flush(flush_timeout)
    st.wall_s = time.monotonic() - start
    st.acked, st.errors = sink.acked, sink.errors
    if on_progress is not None:
        on_progress()
    if not ok:
        raise SimError(
            f"the broker did not acknowledge {sink.pending} messages within {flush_timeout:g} s"
        )
    return st


def write_recording(
    stream: Iterable[Timed], out: IO[bytes], *, stats: PublishStats | None = None
) -> PublishStats:
    """Write the stream as recording lines (JSON Lines) without pacing."""
    st = stats if stats is not None else PublishStats()
    start = time.monotonic()
    first = True
    for ts, _, line in stream:
        if first:
            st.t0, first = (st.t0 or ts), False
        out.write(_encoder.encode(line))
        out.write(b"\n")
        st.by_kind[kind_of(line["topic"])] += 1
        st.last_ts = ts
    st.wall_s = time.monotonic() - start
    return st


# --------------------------------------------------------------------------- wards


def prepare_ward(beds: Iterable[Bed]) -> tuple[list[Compact | None], float]:
    """Every bed's waveform (the slow part, done before the clock starts) and the time it took."""
    start = time.monotonic()
    compacts = [prepare(b.scenario) for b in beds]
    return compacts, time.monotonic() - start


def stagger_offset(index: int, chunk_s: float = 1.0) -> float:
    """Bed ``index``'s start offset: the golden-ratio sequence spreads any number of beds
    evenly over ``[0, chunk_s)`` (ms resolution)."""
    return round((index * 0.6180339887498949) % 1.0 * chunk_s, 3)


def send_ward(
    beds: list[Bed],
    sink: MqttSink,
    *,
    speed: float,
    qos: int = 1,
    root: str = "icu",
    progress: bool = False,
    t0: float | None = None,
    stagger: bool = True,
    on_start: Callable[[list[Scenario]], None] | None = None,
) -> tuple[PublishStats, list[Scenario]]:
    """Publish a ward paced at ``speed``; ``t0`` (default: now, once the waveforms are ready).

    With ``stagger`` bed ``i`` starts :func:`stagger_offset` later than ``t0``
    (under one chunk), so that the beds' chunks are spread over each second
    instead of all falling due at once. Returns the stats and the beds'
    scenarios with their own ``t0`` (what ``scenario.check`` needs; ``stats.t0``
    is the common start). ``on_start`` is called with them before the first message.
    """
    compacts, prepare_s = prepare_ward(beds)
    start = time.time() if t0 is None else t0
    scenarios = [
        replace(
            b.scenario, t0=start + (stagger_offset(b.index, b.scenario.chunk_s) if stagger else 0)
        )
        for b in beds
    ]
    stats = PublishStats(
        beds=len(beds),
        prepare_s=prepare_s,
        data_total_s=max((sc.t0 - start + sc.duration_s for sc in scenarios), default=0.0),
    )
    if on_start is not None:
        on_start(scenarios)
    stream = ward_stream(scenarios, root, compacts)
    del compacts
    if not progress:
        publish_stream(stream, sink, speed=speed, t0=start, qos=qos, stats=stats)
        return stats, scenarios
    with ProgressView(stats) as view:

        def tick() -> None:
            view.pending = sink.pending
            view.update()

        publish_stream(stream, sink, speed=speed, t0=start, qos=qos, stats=stats, on_progress=tick)
    return stats, scenarios


def write_ward(
    beds: list[Bed], out: IO[bytes], *, root: str = "icu", t0: float | None = None
) -> PublishStats:
    """Write a ward's recording (JSON Lines, time order); ``t0`` default: the scenarios' own."""
    compacts, prepare_s = prepare_ward(beds)
    scenarios = [b.scenario if t0 is None else replace(b.scenario, t0=t0) for b in beds]
    stats = PublishStats(beds=len(beds), prepare_s=prepare_s)
    stats.t0 = min((sc.t0 for sc in scenarios), default=0.0)
    stream = ward_stream(scenarios, root, compacts)
    del compacts
    return write_recording(stream, out, stats=stats)
