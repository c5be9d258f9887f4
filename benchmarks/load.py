"""Load for the service benchmark: realistic ABP chunks for B beds, published over MQTT.

    python benchmarks/load.py --broker mqtt://127.0.0.1:1883 --beds 1000 --messages 200000
    python benchmarks/load.py --broker mqtt://127.0.0.1:1883 --beds 1000 --realtime --duration 30

Every bed sends one ``abp`` chunk per second of data: 125 samples at 125 Hz,
about 800 bytes of JSON (``{"t0": ..., "fs": 125.0, "samples": [...], "seq": k}``,
samples rounded to 0.01 mmHg as the simulator's gateway sends them). A bed's
chunks are contiguous in data time (``t0 + k``), so the service's beat detector
sees real beats across chunk boundaries.

The waveforms come from :func:`simulators.waveform.synthesize_abp`: a few
normal templates (MAP 75-100 mmHg, 60-105 beats/min), each bed reading one of
them from its own offset, plus *probe beds* (``alarm_fraction`` of the beds)
whose pressure steps from normal to 60/40 mmHg at a time spread between
``drop_first`` and ``drop_last`` s: the service raises a critical
``hypotension`` alarm for them, and :func:`Load.triggers` finds, by running
the same engine offline on the same bytes, which chunk completes the condition
(the alarm-latency reference). Payload bytes are pre-encoded per template
second; a message is three byte strings joined.

Publishing is MQTT 3.1.1 like a gateway, TCP_NODELAY on, either

- *fast*: ``--messages N`` in bed round-robin order as fast as paho goes (on
  its own network thread, no in-flight limit: with one, paho walks every
  unacknowledged message on each PUBACK; an unbounded queue), then a QoS 1
  fence message (its PUBACK means the broker has routed everything before
  it) -- for drain-rate measurements;
- *real time* (``--realtime``): each bed once a second, the beds spread evenly
  over the second, for ``--duration`` s, plus a ``bench/ping`` message every
  ``--ping-interval`` s stamped with the publisher's monotonic clock (the
  loopback floor under the same load). The publish time (monotonic, taken just
  before the write) of every probe-bed chunk is reported. The publisher here
  is :class:`RawPublisher`, not paho: on a 2-core machine it shares the cores
  with the service it measures, and paho's per-message work took half a core
  at 5,000 msg/s (33 µs a message instead of about 105); its CPU per message
  is reported (``cpu_us_per_msg``).

Run as a script it prints ``READY`` once connected and one JSON line of results
at the end, so that a benchmark can run it as a separate process (its own GIL).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import select
import socket
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from typing import Any
from urllib.parse import urlsplit

import msgspec
import numpy as np
import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from simulators.waveform import synthesize_abp

FS = 125.0
CHUNK_N = 125  # samples per chunk: one second at 125 Hz
#: Normal templates (sbp, dbp, hr): MAP roughly 75-100 mmHg, far from any target.
TEMPLATES: tuple[tuple[float, float, float], ...] = (
    (120.0, 70.0, 80.0),
    (135.0, 75.0, 72.0),
    (110.0, 65.0, 95.0),
    (145.0, 80.0, 64.0),
    (125.0, 68.0, 88.0),
    (115.0, 62.0, 105.0),
    (140.0, 78.0, 60.0),
    (128.0, 72.0, 76.0),
)
#: Beds read their template from an offset in [0, MAX_OFFSET) s.
MAX_OFFSET = 60
PROBE_LOW = (60.0, 40.0)
FENCE_TOPIC = "bench/fence"
#: At most this many QoS 1 messages waiting for their PUBACK (paho's ids are 16-bit).
MAX_UNACKED = 30_000
PING_TOPIC = "bench/ping"

_enc = msgspec.json.Encoder()


@dataclass(frozen=True, slots=True)
class LoadSpec:
    """What to generate: enough to rebuild the same bytes in another process."""

    beds: int
    chunks: int  # per bed, one second of data each
    t0: float  # data time of every bed's first chunk
    alarm_fraction: float = 0.1
    drop_first: float = 5.0  # s of data at which the first probe bed goes to 60/40
    drop_last: float = 20.0  # ... and the last
    root: str = "icu"
    seed: int = 0

    @property
    def probe_step(self) -> int:
        if self.alarm_fraction <= 0:
            return 0
        return max(1, round(1.0 / self.alarm_fraction))

    def is_probe(self, i: int) -> bool:
        step = self.probe_step
        return step > 0 and i % step == step // 2

    def probes(self) -> list[int]:
        return [i for i in range(self.beds) if self.is_probe(i)]

    def unit_bed(self, i: int) -> tuple[str, str]:
        return f"w{i // 100:03d}", f"b{i:05d}"

    def topic(self, i: int) -> str:
        unit, bed = self.unit_bed(i)
        return f"{self.root}/{unit}/{bed}/abp"


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


def _encode_chunks(x: np.ndarray, n_chunks: int) -> list[bytes]:
    cents = np.round(x[: n_chunks * CHUNK_N], 2)
    return [_enc.encode(cents[k * CHUNK_N : (k + 1) * CHUNK_N].tolist()) for k in range(n_chunks)]


class Load:
    """The pre-generated load of a :class:`LoadSpec` (deterministic)."""

    def __init__(self, spec: LoadSpec) -> None:
        self.spec = spec
        n_tpl = spec.chunks + MAX_OFFSET
        self._templates = [
            _encode_chunks(
                synthesize_abp(duration_s=n_tpl, sbp=s, dbp=d, hr=hr, seed=spec.seed + j),
                n_tpl,
            )
            for j, (s, d, hr) in enumerate(TEMPLATES)
        ]
        probes = spec.probes()
        self.drop_s: dict[int, float] = {}
        self._probe_chunks: dict[int, list[bytes]] = {}
        for n, i in enumerate(probes):
            frac = n / (len(probes) - 1) if len(probes) > 1 else 0.0
            drop = spec.drop_first + (spec.drop_last - spec.drop_first) * frac
            self.drop_s[i] = drop
            s, d, hr = TEMPLATES[i % len(TEMPLATES)]
            lo_s, lo_d = PROBE_LOW
            x = synthesize_abp(
                duration_s=spec.chunks,
                sbp=lambda t, s=s, lo=lo_s, at=drop: np.where(t < at, s, lo),
                dbp=lambda t, d=d, lo=lo_d, at=drop: np.where(t < at, d, lo),
                hr=hr,
                seed=spec.seed + 1000 + i,
            )
            self._probe_chunks[i] = _encode_chunks(x, spec.chunks)
        self.topics = [spec.topic(i).encode() for i in range(spec.beds)]
        self.topic_str = [spec.topic(i) for i in range(spec.beds)]
        self._t0 = [repr(spec.t0 + k).encode() for k in range(spec.chunks)]

    def payload(self, i: int, k: int) -> bytes:
        """Bed ``i``'s chunk ``k`` (data time ``t0 + k``)."""
        probe = self._probe_chunks.get(i)
        if probe is not None:
            body = probe[k]
        else:
            tpl = self._templates[i % len(self._templates)]
            body = tpl[(i * 37) % MAX_OFFSET + k]
        return (
            b'{"t0":'
            + self._t0[k]
            + b',"fs":125.0,"samples":'
            + body
            + b',"seq":'
            + str(k).encode()
            + b"}"
        )

    def order(self, n: int | None = None) -> Iterator[tuple[int, int]]:
        """``(bed, chunk)``, round-robin (chunk 0 of every bed, then 1...), ``n`` at most."""
        total = self.spec.beds * self.spec.chunks if n is None else n
        sent = 0
        for k in range(self.spec.chunks):
            for i in range(self.spec.beds):
                if sent >= total:
                    return
                yield i, k
                sent += 1

    def mean_payload_bytes(self, sample: int = 200) -> float:
        sizes = [len(self.payload(i % self.spec.beds, i % self.spec.chunks)) for i in range(sample)]
        return sum(sizes) / len(sizes)

    def triggers(self, environ: dict[str, str]) -> dict[int, tuple[int, float]]:
        """For each probe bed: (chunk index, alarm ts) of its first ``hypotension`` raise.

        Runs the service's engine offline, with the settings ``environ`` gives it
        (``STREAMPROC_*``), on exactly the bytes that are published: the alarm's
        data time ``ts`` and which chunk completes the condition depend on the
        data only, so the live service raises the same alarm on the same chunk.
        """
        # imported here: the publisher process has no use for the engine (nor scipy)
        from streamproc.core.engine import Batch, Engine  # noqa: PLC0415
        from streamproc.core.protocol.alarms import Trigger  # noqa: PLC0415
        from streamproc.core.protocol.messages import BedId  # noqa: PLC0415
        from streamproc.shell.config import load_config  # noqa: PLC0415
        from streamproc.wire.codec import decode  # noqa: PLC0415

        settings = load_config(environ=environ).core
        out: dict[int, tuple[int, float]] = {}
        for i in self.spec.probes():
            engine = Engine(settings)
            bed = BedId(*self.spec.unit_bed(i))
            for k in range(self.spec.chunks):
                events = engine.receive(
                    Batch([(bed, decode("abp", self.payload(i, k)), self.spec.t0 + k)])
                )
                hit = next(
                    (e for e in events if e.kind == "hypotension" and e.trigger is Trigger.RAISE),
                    None,
                )
                if hit is not None:
                    out[i] = (k, round(hit.ts, 3))
                    break
        return out


# ----------------------------------------------------------------------------- publishing


def parse_broker(url: str) -> tuple[str, int]:
    parts = urlsplit(url if "://" in url else f"mqtt://{url}")
    return parts.hostname or "127.0.0.1", parts.port or 1883


class Publisher:
    """paho on its own network thread, tuned to never block or drop on the client side
    (the drain: the publishing loop never waits for the socket)."""

    def __init__(self, host: str, port: int, *, client_id: str = "") -> None:
        self.acked = 0
        self._lock = threading.Lock()
        self._connected = threading.Event()
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv311
        )
        self.client.max_inflight_messages_set(0)
        self.client.max_queued_messages_set(0)  # unbounded: paho never refuses a publish
        self.client.on_connect = lambda *_a: self._connected.set()
        self.client.on_publish = self._on_publish
        self.client.connect(host, port, keepalive=60)
        sock = self.client.socket()
        if isinstance(sock, socket.socket):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.client.loop_start()
        if not self._connected.wait(10):
            raise TimeoutError(f"no CONNACK from {host}:{port}")

    def _on_publish(self, *_args: Any) -> None:
        with self._lock:
            self.acked += 1

    def fence(self, timeout: float = 600.0) -> None:
        """Wait until the broker has routed everything published so far (QoS 1 PUBACK)."""
        info = self.client.publish(FENCE_TOPIC, b"", qos=1)
        info.wait_for_publish(timeout)
        if not info.is_published():
            raise TimeoutError("fence not acknowledged")

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


class RawPublisher:
    """A minimal MQTT 3.1.1 publisher on a plain socket, for the real-time load.

    A load generator on the machine it measures takes CPU from the service:
    paho, with its per-message objects (a message info, a ``Properties`` and a
    ``ReasonCode`` per PUBACK, even under 3.1.1), took about 105 µs of CPU per
    message, half a core at 5,000 msg/s. This one sends what is due as one
    write, stamps it just before, and only counts the PUBACKs (Mosquitto
    acknowledges QoS 1 in the order it received them): a gateway's work
    and nothing more. It speaks just enough MQTT for that (CONNECT,
    PUBLISH at QoS 0/1, PUBACK, PINGREQ, DISCONNECT) and fails loudly on
    anything else.
    """

    def __init__(self, host: str, port: int, *, client_id: str = "", keepalive: int = 60) -> None:
        self.sock = socket.create_connection((host, port), timeout=10)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        ident = (client_id or f"bench-load-{os.getpid()}").encode()
        body = b"\x00\x04MQTT\x04\x02" + keepalive.to_bytes(2, "big") + _str16(ident)
        self.sock.sendall(b"\x10" + remaining_length(len(body)) + body)
        connack = self._read_exact(4)
        if connack[:2] != b"\x20\x02" or connack[3] != 0:
            raise ConnectionError(f"CONNACK refused: {connack!r}")
        self.sock.settimeout(0.0)  # non-blocking from now on
        self.keepalive = keepalive
        self.last_out = time.monotonic()
        self.sent_qos1 = 0
        self.acked = 0
        self._mid = 0
        self._inbuf = b""
        self._out: list[bytes] = []

    def _read_exact(self, n: int) -> bytes:
        data = b""
        while len(data) < n:
            more = self.sock.recv(n - len(data))
            if not more:
                raise ConnectionError("the broker closed the connection")
            data += more
        return data

    def queue(self, topic: bytes, payload: bytes, qos: int) -> None:
        """Add a PUBLISH to the next :meth:`send` (``topic`` already UTF-8)."""
        if qos:
            self._mid = self._mid % 0xFFFF + 1
            self.sent_qos1 += 1
            var = _str16(topic) + self._mid.to_bytes(2, "big")
            first = b"\x32"
        else:
            var = _str16(topic)
            first = b"\x30"
        self._out.append(first + remaining_length(len(var) + len(payload)) + var + payload)

    def send(self) -> None:
        """Write everything queued, in order, as one write (blocking until it is out)."""
        if not self._out:
            return
        data = b"".join(self._out)
        self._out.clear()
        view = memoryview(data)
        while view:
            try:
                n = self.sock.send(view)
            except BlockingIOError:
                select.select([], [self.sock], [], 1.0)
                continue
            view = view[n:]
        self.last_out = time.monotonic()

    def wait(self, seconds: float) -> None:
        """Read acknowledgements for up to ``seconds`` (at once if none is due)."""
        if seconds > 0:
            select.select([self.sock], [], [], seconds)
        self.read()
        if time.monotonic() - self.last_out > self.keepalive / 2:
            self._out.append(b"\xc0\x00")  # PINGREQ
            self.send()

    def read(self) -> None:
        while True:
            try:
                data = self.sock.recv(65536)
            except BlockingIOError:
                break
            if not data:
                raise ConnectionError("the broker closed the connection")
            self._parse(self._inbuf + data if self._inbuf else data)

    def _parse(self, buf: bytes) -> None:
        pos, end = 0, len(buf)
        while end - pos >= 2:
            first = buf[pos]
            if first == 0x40 and buf[pos + 1] == 2:  # PUBACK: 4 bytes
                if end - pos < 4:
                    break
                self.acked += 1
                pos += 4
            elif first == 0xD0 and buf[pos + 1] == 0:  # PINGRESP
                pos += 2
            else:
                raise ConnectionError(f"unexpected packet from the broker: {buf[pos : pos + 8]!r}")
        self._inbuf = buf[pos:]

    def fence(self, timeout: float = 600.0) -> None:
        """Wait until every QoS 1 message sent so far is acknowledged."""
        self.send()
        deadline = time.monotonic() + timeout
        while self.acked < self.sent_qos1:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{self.sent_qos1 - self.acked} publishes not acknowledged")
            self.wait(0.05)

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.send()
            self.sock.settimeout(5.0)
            self.sock.sendall(b"\xe0\x00")  # DISCONNECT
        self.sock.close()


def _str16(data: bytes) -> bytes:
    return len(data).to_bytes(2, "big") + data


def publish_fast(load: Load, pub: Publisher, n: int, qos: int) -> dict[str, Any]:
    """``n`` messages as fast as paho goes; returns counts and the publish rate."""
    publish = pub.client.publish
    topics = load.topic_str
    t = time.perf_counter()
    sent = 0
    for i, k in load.order(n):
        # QoS 1: paho keys unacknowledged messages by their 16-bit id, so keep
        # fewer than 65535 of them outstanding (a colliding id is refused)
        while qos > 0 and sent - pub.acked >= MAX_UNACKED:
            time.sleep(0.001)
        info = publish(topics[i], load.payload(i, k), qos=qos)
        if info.rc != mqtt.MQTT_ERR_SUCCESS:
            raise RuntimeError(f"publish refused by paho: {mqtt.error_string(info.rc)}")
        sent += 1
    t_calls = time.perf_counter() - t
    pub.fence()
    deadline = time.monotonic() + 120
    while qos > 0 and pub.acked < sent + 1 and time.monotonic() < deadline:
        time.sleep(0.01)
    elapsed = time.perf_counter() - t
    return {
        "published": sent,
        "acked": pub.acked - 1 if qos > 0 else None,
        "seconds": elapsed,
        "publish_calls_s": t_calls,
        "rate": sent / elapsed if elapsed > 0 else 0.0,
    }


def publish_realtime(
    load: Load,
    pub: RawPublisher,
    duration: int,
    qos: int,
    *,
    ping_interval: float,
    tick: float = 0.001,
) -> dict[str, Any]:
    """Every bed once a second for ``duration`` s, spread over the second; pings between.

    The publisher wakes at most every ``tick`` s and sends what has fallen due
    since (at 5,000 beds and 1 ms, about 5 messages) in one write, as gateways
    on their own timers would. Each write is stamped just before it starts:
    a message's lateness against its slot (at most about ``tick``, reported
    as ``max_lag_s``) is not counted as latency.
    """
    spec = load.spec
    beds = spec.beds
    topics = load.topics
    probe = set(spec.probes())
    probe_times: dict[int, list[float]] = {i: [] for i in probe}
    ping_topic = PING_TOPIC.encode()
    cpu0 = time.process_time()
    start = time.monotonic() + 0.2
    next_ping = start
    pings = 0
    max_lag = 0.0
    sent = 0
    slot = 1.0 / beds
    n_chunks = min(duration, spec.chunks)
    total = beds * n_chunks
    while sent < total:
        now = time.monotonic()
        due_now = min(total, int((now - start) / slot) + 1) if now >= start else 0
        if due_now <= sent and now < next_ping:
            # nothing due: wait for the next slot (or ping), at least ``tick``
            nxt = min(start + sent * slot, next_ping) if ping_interval > 0 else start + sent * slot
            pub.wait(max(nxt - now, tick))
            continue
        probes_here: list[int] = []
        for n in range(sent, due_now):
            k, i = divmod(n, beds)
            pub.queue(topics[i], load.payload(i, k), qos)
            if i in probe:
                probes_here.append(i)
        if due_now > sent:
            max_lag = max(max_lag, now - (start + sent * slot))
            sent = due_now
        stamp = time.monotonic()
        if ping_interval > 0 and stamp >= next_ping:
            pub.queue(ping_topic, repr(stamp).encode(), 0)
            pings += 1
            next_ping += ping_interval
        for i in probes_here:
            probe_times[i].append(stamp)
        pub.send()
    end = time.monotonic()
    cpu = time.process_time() - cpu0
    pub.fence()
    return {
        "published": sent,
        "cpu_us_per_msg": cpu / sent * 1e6 if sent else None,
        "seconds": end - start,
        "rate": sent / (end - start) if end > start else 0.0,
        "max_lag_s": max_lag,
        "pings": pings,
        "probe_times": {str(i): ts for i, ts in probe_times.items()},
        # nothing waits in a client-side queue: every write is complete when it returns
        "probe_backlog": {str(i): [0] * len(ts) for i, ts in probe_times.items()},
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--broker", required=True, help="mqtt://host:port")
    parser.add_argument("--beds", type=int, default=1000)
    parser.add_argument("--messages", type=int, help="fast mode: publish this many (default all)")
    parser.add_argument("--chunks", type=int, help="chunks per bed (default: enough)")
    parser.add_argument("--realtime", action="store_true", help="1 chunk per bed per second")
    parser.add_argument("--duration", type=int, default=30, help="real time: seconds")
    parser.add_argument("--qos", type=int, choices=(0, 1), default=0)
    parser.add_argument("--t0", type=float, help="data time of chunk 0 (default: now)")
    parser.add_argument("--alarm-fraction", type=float, default=0.1)
    parser.add_argument("--drop-first", type=float, default=5.0)
    parser.add_argument("--drop-last", type=float, default=20.0)
    parser.add_argument("--ping-interval", type=float, default=0.1)
    parser.add_argument(
        "--tick", type=float, default=0.001, help="real time: s between the publisher's wake-ups"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--client-id", default="")
    args = parser.parse_args(argv)

    if args.realtime:
        chunks = args.chunks or args.duration
    else:
        n = args.messages or args.beds * (args.chunks or 60)
        chunks = args.chunks or math.ceil(n / args.beds)
    spec = LoadSpec(
        beds=args.beds,
        chunks=chunks,
        t0=args.t0 if args.t0 is not None else float(round(time.time())),
        alarm_fraction=args.alarm_fraction,
        drop_first=args.drop_first,
        drop_last=args.drop_last,
        seed=args.seed,
    )
    t = time.perf_counter()
    load = Load(spec)
    build_s = time.perf_counter() - t
    host, port = parse_broker(args.broker)
    if args.realtime:
        raw = RawPublisher(host, port, client_id=args.client_id)
        print("READY", flush=True)
        try:
            result = publish_realtime(
                load, raw, args.duration, args.qos, ping_interval=args.ping_interval, tick=args.tick
            )
        finally:
            raw.close()
    else:
        pub = Publisher(host, port, client_id=args.client_id)
        print("READY", flush=True)
        try:
            n = args.messages or spec.beds * spec.chunks
            result = publish_fast(load, pub, n, args.qos)
        finally:
            pub.close()
    result.update(spec=asdict(spec), build_s=build_s, mean_payload_bytes=load.mean_payload_bytes())
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
