"""Load for the service benchmark: realistic ABP chunks for B beds, published with paho.

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

Publishing is paho-mqtt on its own network thread (``loop_start``), MQTT 3.1.1
like a gateway, TCP_NODELAY on, ``max_inflight_messages_set`` high and an
unbounded paho queue (``max_queued_messages_set(0)``), either

- *fast*: ``--messages N`` in bed round-robin order as fast as paho goes, then
  a QoS 1 fence message (its PUBACK means the broker has routed everything
  before it) -- for drain-rate measurements;
- *real time* (``--realtime``): each bed once a second, the beds spread evenly
  over the second, for ``--duration`` s, plus a ``bench/ping`` message every
  ``--ping-interval`` s stamped with the publisher's monotonic clock (the
  loopback floor under the same load). The publish time (monotonic, taken just
  before ``publish()``) of every probe-bed chunk is reported.

Run as a script it prints ``READY`` once connected and one JSON line of results
at the end, so that a benchmark can run it as a separate process (its own GIL).
"""

from __future__ import annotations

import argparse
import json
import math
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
        from streamproc.codec import decode  # noqa: PLC0415
        from streamproc.config import load_config  # noqa: PLC0415
        from streamproc.core.alarms import Trigger  # noqa: PLC0415
        from streamproc.core.engine import Engine  # noqa: PLC0415
        from streamproc.core.messages import BedId  # noqa: PLC0415

        settings = load_config(environ=environ).core
        out: dict[int, tuple[int, float]] = {}
        for i in self.spec.probes():
            engine = Engine(settings)
            bed = BedId(*self.spec.unit_bed(i))
            for k in range(self.spec.chunks):
                events = engine.receive(bed, decode("abp", self.payload(i, k)), self.spec.t0 + k)
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
    """paho, tuned to never block or drop on the client side.

    ``threaded``: paho's own network thread sends and reads (the drain: the
    publishing loop never waits for the socket). Otherwise (real time) the
    calling thread does all of the socket's work: ``publish`` writes at once,
    and :meth:`wait` reads acknowledgements while waiting for the next due
    time, so a message leaves when it is stamped, not when a second thread
    gets the GIL (up to the interpreter's 5 ms switch interval later, which the
    latency figures would have counted against the service).
    """

    def __init__(self, host: str, port: int, *, client_id: str = "", threaded: bool = True) -> None:
        self.acked = 0
        self._lock = threading.Lock()
        self._connected = threading.Event()
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv311
        )
        self.client.max_inflight_messages_set(1000)
        self.client.max_queued_messages_set(0)  # unbounded: paho never refuses a publish
        self.client.on_connect = lambda *_a: self._connected.set()
        self.client.on_publish = self._on_publish
        self.client.connect(host, port, keepalive=60)
        sock = self.client.socket()
        if isinstance(sock, socket.socket):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.threaded = threaded
        if threaded:
            self.client.loop_start()
            if not self._connected.wait(10):
                raise TimeoutError(f"no CONNACK from {host}:{port}")
        else:
            deadline = time.monotonic() + 10
            while not self._connected.is_set():
                if time.monotonic() > deadline:
                    raise TimeoutError(f"no CONNACK from {host}:{port}")
                self.client.loop(timeout=0.05)

    def wait(self, seconds: float) -> None:
        """Unthreaded: read acknowledgements (and keep alive) for ``seconds``."""
        if seconds > 0:
            self.client.loop(timeout=seconds)

    def _on_publish(self, *_args: Any) -> None:
        with self._lock:
            self.acked += 1

    def fence(self, timeout: float = 600.0) -> None:
        """Wait until the broker has routed everything published so far (QoS 1 PUBACK)."""
        info = self.client.publish(FENCE_TOPIC, b"", qos=1)
        if self.threaded:
            info.wait_for_publish(timeout)
        else:
            deadline = time.monotonic() + timeout
            while not info.is_published() and time.monotonic() < deadline:
                self.client.loop(timeout=0.05)
        if not info.is_published():
            raise TimeoutError("fence not acknowledged")

    def close(self) -> None:
        self.client.disconnect()
        if self.threaded:
            self.client.loop_stop()


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
    load: Load, pub: Publisher, duration: int, qos: int, ping_interval: float
) -> dict[str, Any]:
    """Every bed once a second for ``duration`` s, spread over the second; pings between."""
    spec = load.spec
    beds = spec.beds
    publish = pub.client.publish
    topics = load.topic_str
    probe = set(spec.probes())
    probe_times: dict[int, list[float]] = {i: [] for i in probe}
    # packets paho still held unsent when each probe chunk was published (its own queue:
    # a message stamped here leaves only after them)
    probe_backlog: dict[int, list[int]] = {i: [] for i in probe}
    out_packets = pub.client._out_packet  # (paho keeps no public count)
    start = time.monotonic() + 0.2
    next_ping = start
    pings = 0
    max_lag = 0.0
    sent = 0
    slot = 1.0 / beds
    for k in range(min(duration, spec.chunks)):
        for i in range(beds):
            due = start + k + i * slot
            while True:
                now = time.monotonic()
                if ping_interval > 0 and now >= next_ping:
                    publish(PING_TOPIC, repr(time.monotonic()).encode(), qos=0)
                    pings += 1
                    next_ping += ping_interval
                    continue
                if now >= due:
                    max_lag = max(max_lag, now - due)
                    break
                wait = min(due, next_ping) - now if ping_interval > 0 else due - now
                if wait > 0.0001:
                    if pub.threaded:
                        time.sleep(wait)
                    else:
                        pub.wait(wait)  # and read the PUBACKs meanwhile
                else:
                    break
            payload = load.payload(i, k)
            t_pub = time.monotonic()
            info = publish(topics[i], payload, qos=qos)
            if info.rc != mqtt.MQTT_ERR_SUCCESS:
                raise RuntimeError(f"publish refused by paho: {mqtt.error_string(info.rc)}")
            if i in probe:
                probe_times[i].append(t_pub)
                probe_backlog[i].append(len(out_packets))
            sent += 1
    end = time.monotonic()
    pub.fence()
    return {
        "published": sent,
        "seconds": end - start,
        "rate": sent / (end - start) if end > start else 0.0,
        "max_lag_s": max_lag,
        "pings": pings,
        "probe_times": {str(i): ts for i, ts in probe_times.items()},
        "probe_backlog": {str(i): n for i, n in probe_backlog.items()},
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
    # real time: one thread does the socket's work (exact send times)
    pub = Publisher(host, port, client_id=args.client_id, threaded=not args.realtime)
    print("READY", flush=True)
    try:
        if args.realtime:
            result = publish_realtime(load, pub, args.duration, args.qos, args.ping_interval)
        else:
            n = args.messages or spec.beds * spec.chunks
            result = publish_fast(load, pub, n, args.qos)
    finally:
        pub.close()
    result.update(spec=asdict(spec), build_s=build_s, mean_payload_bytes=load.mean_payload_bytes())
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
