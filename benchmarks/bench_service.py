"""``streamproc run`` beside count-only paho and aiomqtt consumers and a naive pipeline.

    python benchmarks/bench_service.py [--messages 200000] [--beds 1000] [--qos 1|0]
        [--mqtt 5|4] [--repeat 3] [--duration 30] [--latency-beds 1000,5000]
        [--only paho,bare,naive,service,latency] [--mode backlog|live] [--py-spy PREFIX]
        [--service-env KEY=VALUE] [--wake-latency-us 0|-1] [--json FILE] [--smoke]

Runs from the repository root (``benchmarks/README.md`` explains every number).
Every measurement gets a fresh Mosquitto (``tests.system.broker.MosquittoBroker``:
``set_tcp_nodelay true``, no persistence, ``max_queued_messages 0`` and
``max_queued_bytes 0`` -- no per-client limit, so the broker never drops for a
slow consumer -- ``queue_qos0_messages true`` and ``max_inflight_messages``
``--max-inflight``, default 1000) and the load of ``benchmarks/load.py``:
``--beds`` beds, one ~820-byte 125-sample ABP chunk per bed per second of
data, a tenth of the beds going to 60/40 mmHg so that the service raises
alarms.

1. Drain rate (``--messages`` N, ``--repeat`` times, the three in turn):

   - *paho*: a paho-mqtt consumer that only counts (``benchmarks/consumers.py``), in
     paho's own network loop with its automatic acknowledgement: the baseline (the
     library under the service's transport; target: streamproc >= 0.8x its rate);
   - *bare*: an aiomqtt consumer that only counts;
   - *naive*: the same consumer doing orjson + sosfilt + find_peaks + a ring
     mean per message;
   - *streamproc*: ``python -m streamproc run`` (its /metrics
     ``streamproc_messages_in_total{kind="abp"}``, its CPU from psutil).

   ``--mode backlog`` (default): the consumer subscribes with a persistent
   session and goes offline, the N messages are published into the broker,
   then the consumer reconnects and drains them: nothing else runs during the
   drain (the publisher would steal one of the two cores), and the backlog is
   always ahead of the consumer. The rate is N / (time from the consumer's
   connection to its N-th message) -- from the connection rather than the
   first message because the service reads a backlog into memory before its
   first message is processed (its SUBACKs come after the backlog). A run
   with loss or a broker reconnect is shown in brackets and left out of the
   medians. ``--mode live``:
   the consumer is online and the publisher blasts N messages at it; the rate
   is then bounded by the publisher too.

2. Real time (``--duration`` s at each of ``--latency-beds``): the service on a
   fresh broker, every bed publishing one chunk per second. Reported: loss,
   CPU per message, the processing-latency histogram's p50/p99 (arrival in the
   service to the end of its batch), the end-to-end alarm latency, and RSS per
   bed. End to end: for each probe bed the chunk that completes the alarm
   condition is known in advance (``Load.triggers`` runs the same engine
   offline on the same bytes and finds the chunk and the alarm's data time);
   the latency is the alarm's arrival at a subscriber in this process minus the
   moment the publisher process called ``publish()`` for that chunk (both
   ``CLOCK_MONOTONIC``, shared by all processes). The alarm's ``ts`` is checked
   against the offline one. ``bench/ping`` messages stamped by the publisher
   give the broker's loopback floor under the same load. The critical hold is
   shortened (``--critical-hold``, default 5 s instead of 15 s) so that the
   alarms fall inside the run; it changes when the alarm fires, not its cost.
   RSS per bed = (RSS with all beds active at the end of the run - RSS of the
   idle, connected service) / beds.

Host: during the run the CPUs' wake-up latency is held at
``--wake-latency-us`` (default 0) through the kernel's PM QoS interface
(``/dev/cpu_dma_latency``, root only), as the ``tuned`` profiles
*latency-performance* and *network-latency* do on a host tuned for latency
(``docs/scaling.md``): on this machine's VMs an idle vCPU halts and the host
takes up to milliseconds to wake it, several times per alarm's path
(publisher, broker, service, broker, subscriber). The first line says
whether it was held; ``--wake-latency-us -1`` measures the host as it is.

Speed targets are flagged, never fatal. The exit status is 1 if any message
or expected alarm was lost or any process crashed, else 0. ``--smoke`` is a
~20 s version of all of it (CI: it fails only on loss or a crash).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import math
import os
import platform
import re
import shutil
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import psutil
from paho.mqtt.enums import CallbackAPIVersion

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
if str(REPO) not in sys.path:
    sys.path.insert(1, str(REPO))  # for tests.system.broker / tests.system.service_helpers

from load import PING_TOPIC, Load, LoadSpec  # noqa: E402

from simulators.soak import bucket_delta, histogram_quantile  # noqa: E402
from tests.system.broker import MosquittoBroker, find_mosquitto  # noqa: E402
from tests.system.service_helpers import ServiceProcess  # noqa: E402

TARGET_VS_PAHO = 0.8
TARGET_VS_NAIVE = 3.0
TARGET_P99_MS = 5.0
TARGET_KB_PER_BED = 20.0
T0_DATA = 1_732_400_000.0  # data time of the drain loads' first chunk


class BenchError(RuntimeError):
    """A process crashed or misbehaved: the run cannot be trusted (exit 1)."""


# ----------------------------------------------------------------------------- helpers


def broker_for(args: argparse.Namespace) -> MosquittoBroker:
    return MosquittoBroker(
        persistence=False,
        extra_config=[
            "max_queued_messages 0",
            "max_queued_bytes 0",
            "queue_qos0_messages true",
            f"max_inflight_messages {args.max_inflight}",
        ],
    ).start()


def service_env(args: argparse.Namespace, **extra: str) -> dict[str, str]:
    env = {
        "STREAMPROC_TICK_S": "1.0",
        "STREAMPROC_MQTT_VERSION": str(args.mqtt),
        "STREAMPROC_HYPOTENSION_CRITICAL_HOLD_S": str(args.critical_hold),
    }
    env.update(extra)
    for item in args.service_env:
        key, _, value = item.partition("=")
        env[key] = value
    return env


def trigger_env(args: argparse.Namespace) -> dict[str, str]:
    return {k: v for k, v in service_env(args).items() if k.startswith("STREAMPROC_HYPOTENSION")}


_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})? (\S+)$")


@dataclass
class Scrape:
    t: float
    values: dict[str, float]
    buckets: list[tuple[float, float]]  # (le, cumulative count), +inf last
    cpu: float = 0.0
    loop_buckets: list[tuple[float, float]] = dataclasses.field(default_factory=list)
    rss: int = 0

    @property
    def abp(self) -> float:
        return self.values.get('streamproc_messages_in_total{kind="abp"}', 0.0)

    @property
    def dropped(self) -> float:
        return self.values.get("streamproc_ingress_dropped_total", 0.0)


def scrape(port: int, proc: psutil.Process | None = None) -> Scrape | None:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
            text = resp.read().decode()
    except (OSError, ValueError):
        return None
    t = time.monotonic()
    values: dict[str, float] = {}
    buckets: list[tuple[float, float]] = []
    loop_buckets: list[tuple[float, float]] = []
    for line in text.splitlines():
        m = _SAMPLE.match(line)
        if m is None:
            continue
        name, labels, value = m.group(1), m.group(2) or "", float(m.group(3))
        if name == "streamproc_processing_latency_seconds_bucket":
            le = labels.split('le="', 1)[1].split('"', 1)[0]
            buckets.append((math.inf if le == "+Inf" else float(le), value))
        elif name == "streamproc_loop_lag_seconds_bucket":
            le = labels.split('le="', 1)[1].split('"', 1)[0]
            loop_buckets.append((math.inf if le == "+Inf" else float(le), value))
        else:
            values[name + labels] = value
    sample = Scrape(t, values, sorted(buckets), loop_buckets=sorted(loop_buckets))
    if proc is not None:
        with contextlib.suppress(psutil.Error):
            cpu = proc.cpu_times()
            sample.cpu = cpu.user + cpu.system
            sample.rss = proc.memory_info().rss
    return sample


def _max_bucket(buckets: list[tuple[float, float]]) -> float | None:
    """Upper bound of the highest non-empty bucket (inf: beyond the last finite bound)."""
    top = None
    prev = 0.0
    for le, count in buckets:
        if count > prev:
            top = le
        prev = count
    return top


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    xs = sorted(values)
    pos = q * (len(xs) - 1)
    lo = math.floor(pos)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


def median(values: list[float | None]) -> float | None:
    xs = [v for v in values if v is not None]
    return statistics.median(xs) if xs else None


class Watch:
    """A paho subscriber in this process: alarm messages and pings with their arrival time."""

    def __init__(self, broker: MosquittoBroker, root: str = "icu") -> None:
        self.received: list[tuple[float, str, bytes]] = []
        self._lock = threading.Lock()
        self._subscribed = threading.Event()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv311)
        self.client.on_connect = self._on_connect
        self.client.on_subscribe = lambda *_a: self._subscribed.set()
        self.client.on_message = self._on_message
        self.filters = [(f"{root}/+/+/alarms/hypotension", 1), (PING_TOPIC, 0)]
        self.client.connect(broker.host, broker.port, keepalive=30)
        sock = self.client.socket()
        if isinstance(sock, socket.socket):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.client.loop_start()
        if not self._subscribed.wait(10):
            raise BenchError("alarm subscriber: no SUBACK")

    def _on_connect(self, client: mqtt.Client, *_a: Any) -> None:
        client.subscribe(self.filters)

    def _on_message(self, _c: mqtt.Client, _u: object, msg: mqtt.MQTTMessage) -> None:
        t = time.monotonic()
        with self._lock:
            self.received.append((t, msg.topic, bytes(msg.payload)))

    def alarms(self) -> dict[str, tuple[float, dict[str, Any]]]:
        """First raise of each bed's hypotension alarm: topic -> (arrival, payload)."""
        out: dict[str, tuple[float, dict[str, Any]]] = {}
        with self._lock:
            items = list(self.received)
        for t, topic, payload in items:
            if topic == PING_TOPIC or not payload or topic in out:
                continue
            data = json.loads(payload)
            if data.get("state") == "active" and data.get("trigger") == "raised":
                out[topic] = (t, data)
        return out

    def ping_latencies(self) -> list[float]:
        with self._lock:
            return [t - float(p) for t, topic, p in self.received if topic == PING_TOPIC]

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def run_json(cmd: list[str], what: str, timeout: float) -> dict[str, Any]:
    """Run a child that prints a JSON line last; its result, or BenchError."""
    try:
        proc = subprocess.run(  # noqa: S603 - our own interpreter and scripts
            cmd, capture_output=True, text=True, timeout=timeout, cwd=REPO, check=False
        )
    except subprocess.TimeoutExpired as exc:
        raise BenchError(f"{what}: no result in {timeout:g} s") from exc
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if proc.returncode != 0 or not lines:
        raise BenchError(f"{what} exited {proc.returncode}:\n{proc.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(lines[-1])
    return result


def publisher_cmd(args: argparse.Namespace, broker: MosquittoBroker, *extra: str) -> list[str]:
    return [
        sys.executable,
        str(HERE / "load.py"),
        "--broker",
        broker.url,
        "--beds",
        str(args.beds),
        "--qos",
        str(args.qos),
        "--alarm-fraction",
        str(args.alarm_fraction),
        *extra,
    ]


def drain_spec(args: argparse.Namespace) -> LoadSpec:
    return LoadSpec(
        beds=args.beds,
        chunks=math.ceil(args.messages / args.beds),
        t0=T0_DATA,
        alarm_fraction=args.alarm_fraction,
        drop_first=5.0,
        drop_last=max(5.0, min(60.0, args.messages / args.beds - 20)),
    )


def publish_backlog(args: argparse.Namespace, broker: MosquittoBroker) -> dict[str, Any]:
    spec = drain_spec(args)
    return run_json(
        publisher_cmd(
            args,
            broker,
            "--messages",
            str(args.messages),
            "--t0",
            repr(spec.t0),
            "--drop-first",
            str(spec.drop_first),
            "--drop-last",
            str(spec.drop_last),
        ),
        "publisher",
        timeout=600,
    )


#: GIL switch interval of this process (see ``main``).
SWITCH_INTERVAL_S = 0.0002


def start_publisher(
    args: argparse.Namespace, broker: MosquittoBroker, *extra: str
) -> subprocess.Popen[str]:
    proc = subprocess.Popen(  # noqa: S603 - our own interpreter and script
        publisher_cmd(args, broker, *extra),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=REPO,
    )
    line = proc.stdout.readline() if proc.stdout is not None else ""
    if line.strip() != "READY":
        proc.kill()
        _, err = proc.communicate()
        raise BenchError(f"publisher did not start: {line!r}\n{err[-3000:]}")
    return proc


class PublisherOutput:
    """Collect a running publisher's output on a thread (its result can exceed a pipe buffer)."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self.proc = proc
        self.out = self.err = ""
        self.thread = threading.Thread(target=self._collect, daemon=True)
        self.thread.start()

    def _collect(self) -> None:
        self.out, self.err = self.proc.communicate()

    def running(self) -> bool:
        return self.thread.is_alive()

    def result(self, timeout: float) -> dict[str, Any]:
        self.thread.join(timeout)
        if self.thread.is_alive():
            self.proc.kill()
            raise BenchError("publisher did not finish")
        lines = [ln for ln in self.out.splitlines() if ln.startswith("{")]
        if self.proc.returncode != 0 or not lines:
            raise BenchError(f"publisher exited {self.proc.returncode}:\n{self.err[-3000:]}")
        result: dict[str, Any] = json.loads(lines[-1])
        return result


# ----------------------------------------------------------------------------- drain


def drain_reference(args: argparse.Namespace, kind: str, rep: int) -> dict[str, Any]:
    """The paho, bare or naive consumer: drain N messages (one fresh broker)."""
    with broker_for(args) as broker:
        base = [
            sys.executable,
            str(HERE / "consumers.py"),
            "--kind",
            kind,
            "--broker",
            broker.url,
            "--client-id",
            f"bench-{kind}-{rep}",
            "--expect",
            str(args.messages),
            "--mqtt",
            str(args.mqtt),
            "--idle-timeout",
            str(args.idle_timeout),
        ]
        if args.mode == "backlog":
            run_json([*base, "--phase", "prime"], f"{kind} consumer (prime)", 60)
            pub = publish_backlog(args, broker)
            res = run_json([*base, "--phase", "drain"], f"{kind} consumer", args.timeout)
        else:
            proc = subprocess.Popen(  # noqa: S603 - our own interpreter and script
                [*base, "--phase", "live"],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                cwd=REPO,
            )
            if proc.stdout is None or proc.stdout.readline().strip() != "READY":
                proc.kill()
                raise BenchError(f"{kind} consumer did not start: {proc.communicate()[1][-2000:]}")
            pub = publish_backlog(args, broker)
            out, err = proc.communicate(timeout=args.timeout)
            lines = [ln for ln in out.splitlines() if ln.startswith("{")]
            if proc.returncode != 0 or not lines:
                raise BenchError(f"{kind} consumer exited {proc.returncode}:\n{err[-3000:]}")
            res = json.loads(lines[-1])
    if args.mode == "backlog":
        rate, cpu = res["rate_from_connect"], res["cpu_us_per_msg_from_connect"]
    else:
        rate, cpu = res["rate"], res["cpu_us_per_msg"]
    return {
        "kind": kind,
        "published": pub["published"],
        "publish_rate": pub["rate"],
        "count": res["count"],
        "loss": pub["published"] - res["count"],
        "rate": rate,
        "cpu_us_per_msg": cpu,
        "seconds": res["seconds_from_connect"] if args.mode == "backlog" else res["seconds"],
        "raw": res,
    }


def _broker_connections(broker_port: int, proc: psutil.Process) -> set[int]:
    """Local ports of the service's TCP connections to the broker, now."""
    with contextlib.suppress(psutil.Error):
        return {
            c.laddr.port
            for c in proc.net_connections("tcp")
            if c.raddr and c.raddr.port == broker_port
        }
    return set()


def _pid(svc: ServiceProcess) -> int:
    if svc.proc is None:
        raise BenchError("streamproc was not started")
    return svc.proc.pid


def follow_service(
    svc: ServiceProcess,
    expect: int,
    args: argparse.Namespace,
    *,
    broker_port: int | None = None,
    on_connect: Callable[[], None] | None = None,
) -> tuple[list[Scrape], float | None]:
    """Poll /metrics until ``expect`` abp messages were processed, or no progress.

    Progress is the counter moving, or the service busy (CPU at least half the
    wall time: reading a backlog before processing it). With ``broker_port``,
    also watch the service's TCP connections to the broker every few ms until
    one has stayed open 2 s (the restore client's closes after ~0.5 s) or
    messages are processed, and return when that session connection opened.
    """
    proc = psutil.Process(_pid(svc))
    samples: list[Scrape] = []
    seen: dict[int, float] = {}
    session: int | None = None
    watching = broker_port is not None
    last_count, last_change, last_cpu = -1.0, time.monotonic(), 0.0
    next_scrape = 0.0
    while True:
        if svc.proc is None or svc.proc.poll() is not None:
            raise BenchError(f"streamproc exited:\n{svc.log_tail()}")
        now = time.monotonic()
        if watching and broker_port is not None:
            current = _broker_connections(broker_port, proc)
            for port in current:
                seen.setdefault(port, now)
            if current and on_connect is not None:
                on_connect()
                on_connect = None
            settled = [p for p in current if now - seen[p] >= 2.0]
            if settled:
                session, watching = settled[0], False
        if now >= next_scrape:
            next_scrape = now + args.poll
            sample = scrape(svc.metrics_port, proc)
            if sample is not None:
                samples.append(sample)
                if watching and sample.abp > 0:
                    current = _broker_connections(broker_port or 0, proc)
                    if current:
                        session = max(current, key=lambda p: seen.get(p, now))
                    watching = False
                busy = sample.cpu - last_cpu >= 0.5 * (sample.t - last_change)
                if sample.abp != last_count or busy:
                    last_count, last_change, last_cpu = sample.abp, sample.t, sample.cpu
                if sample.abp >= expect:
                    break
        if now - last_change > args.idle_timeout:
            break
        time.sleep(0.004 if watching else 0.01)
    return samples, seen.get(session) if session is not None else None


def _cpu_at(proc_samples: list[Scrape], t: float) -> float:
    """The service CPU time at ``t`` (interpolated between scrapes)."""
    before = [s for s in proc_samples if s.t <= t]
    after = [s for s in proc_samples if s.t >= t]
    if not before:
        return after[0].cpu if after else 0.0
    if not after:
        return before[-1].cpu
    a, b = before[-1], after[0]
    if b.t == a.t:
        return a.cpu
    return a.cpu + (b.cpu - a.cpu) * (t - a.t) / (b.t - a.t)


def drain_service(
    args: argparse.Namespace, rep: int, workroot: Path, triggers: dict[int, tuple[int, float]]
) -> dict[str, Any]:
    """``streamproc run``: drain N messages (one fresh broker)."""
    workdir = workroot / f"service-drain-{rep}"
    workdir.mkdir()
    env = service_env(args, STREAMPROC_QUEUE_MAX=str(args.messages + 100_000))
    profile = None
    with broker_for(args) as broker:
        svc = ServiceProcess(broker, workdir, env=env, instance=f"bench{rep}")
        watch = None
        try:
            if args.mode == "backlog":
                svc.start()  # the persistent session and its subscriptions
                rc = svc.terminate()
                if rc != 0:
                    raise BenchError(f"streamproc exited {rc} on SIGTERM:\n{svc.log_tail()}")
                pub = publish_backlog(args, broker)
                watch = Watch(broker)
                svc.start(wait=False)
                spy: list[subprocess.Popen[bytes] | None] = []
                if args.py_spy and rep == 0:
                    # from the first connection on: the imports are not what is measured
                    path = args.py_spy + "-drain.txt"
                    pid = _pid(svc)
                    on_connect = lambda: spy.append(start_py_spy(path, pid))  # noqa: E731
                else:
                    on_connect = None
                samples, t_connect = follow_service(
                    svc, args.messages, args, broker_port=broker.port, on_connect=on_connect
                )
                profile = spy[0] if spy else None
            else:
                svc.start()
                watch = Watch(broker)
                if args.py_spy and rep == 0:
                    profile = start_py_spy(args.py_spy + "-drain.txt", _pid(svc))
                box: dict[str, Any] = {}
                thread = threading.Thread(
                    target=lambda: box.update(publish_backlog(args, broker)), daemon=True
                )
                thread.start()
                samples, t_connect = follow_service(svc, args.messages, args)
                thread.join(600)
                pub = box
                t_connect = None
            if profile is not None:
                stop_py_spy(profile)
            time.sleep(args.alarm_grace)
            final = scrape(svc.metrics_port)
            rc = svc.terminate()
            if rc != 0:
                raise BenchError(f"streamproc exited {rc} on SIGTERM:\n{svc.log_tail()}")
            shed_logs = sum(
                1 for line in svc.log_lines() if line.get("event") == "ingress_full_shedding"
            )
        finally:
            if watch is not None:
                watch.close()
            svc.close()
    count = samples[-1].abp if samples else 0.0
    moving = [s for s in samples if s.abp > 0]
    done = next((s for s in samples if s.abp >= count), None)
    rate = cpu_us = seconds = None
    if done is not None and moving:
        if t_connect is not None:
            start_t, start_count, start_cpu = t_connect, 0.0, _cpu_at(samples, t_connect)
        else:
            first = moving[0]
            start_t, start_count, start_cpu = first.t, first.abp, first.cpu
        n = done.abp - start_count
        if n > 0 and done.t > start_t:
            seconds = done.t - start_t
            rate = n / seconds
            cpu_us = (done.cpu - start_cpu) / n * 1e6
    published = int(pub.get("published", 0))
    expected = {i: v for i, v in triggers.items() if v[0] * args.beds + i < published}
    got = watch.alarms() if watch is not None else {}
    alarms_ok = _match_alarms(drain_spec(args), expected, got)
    return {
        "kind": "streamproc",
        "published": published,
        "publish_rate": pub.get("rate"),
        "count": int(count),
        "loss": published - int(final.abp if final else count),
        "dropped": int(final.dropped if final else 0),
        "shed_log_lines": shed_logs,
        "rate": rate,
        "cpu_us_per_msg": cpu_us,
        "seconds": seconds,
        "alarms_expected": len(expected),
        "alarms_received": alarms_ok["matched"],
        "alarms_ts_mismatch": alarms_ok["mismatch"],
        "peak_rss_mb": max((s.rss for s in samples), default=0) / 2**20,
        "ingress_queue_max": max(
            (s.values.get("streamproc_ingress_queue_depth", 0.0) for s in samples), default=0.0
        ),
        "reconnects": int(
            final.values.get("streamproc_broker_reconnects_total", 0) if final else 0
        ),
    }


def _match_alarms(
    spec: LoadSpec,
    expected: dict[int, tuple[int, float]],
    got: dict[str, tuple[float, dict[str, Any]]],
) -> dict[str, Any]:
    matched = mismatch = 0
    arrivals: dict[int, float] = {}
    for i, (_, ts) in expected.items():
        unit, bed = spec.unit_bed(i)
        hit = got.get(f"{spec.root}/{unit}/{bed}/alarms/hypotension")
        if hit is None:
            continue
        if abs(float(hit[1]["ts"]) - ts) > 0.0015:
            mismatch += 1
            continue
        matched += 1
        arrivals[i] = hit[0]
    return {"matched": matched, "mismatch": mismatch, "arrivals": arrivals}


# ----------------------------------------------------------------------------- real time


def realtime(args: argparse.Namespace, beds: int, rep: int, workroot: Path) -> dict[str, Any]:
    duration = args.duration
    drop_first = min(args.drop_first, max(0.0, duration - args.critical_hold - 9))
    drop_last = max(drop_first, duration - args.critical_hold - 9)
    t0 = float(round(time.time()))
    spec = LoadSpec(
        beds=beds,
        chunks=duration,
        t0=t0,
        alarm_fraction=args.alarm_fraction,
        drop_first=drop_first,
        drop_last=drop_last,
    )
    triggers = Load(spec).triggers(trigger_env(args))
    workdir = workroot / f"service-rt-{beds}-{rep}"
    workdir.mkdir()
    profile = None
    with broker_for(args) as broker:
        svc = ServiceProcess(broker, workdir, env=service_env(args), instance=f"rt{rep}")
        watch = None
        pub_proc = None
        try:
            svc.start()
            proc = psutil.Process(_pid(svc))
            time.sleep(args.settle)
            idle = [scrape(svc.metrics_port, proc) for _ in range(3)]
            rss_before = statistics.median(s.rss for s in idle if s is not None)
            watch = Watch(broker)
            local = argparse.Namespace(**{**vars(args), "beds": beds})
            pub_proc = start_publisher(
                local,
                broker,
                "--realtime",
                "--duration",
                str(duration),
                "--t0",
                repr(t0),
                "--drop-first",
                str(drop_first),
                "--drop-last",
                str(drop_last),
            )
            pub_out = PublisherOutput(pub_proc)
            t_start = time.monotonic()
            host_before = host_cpu()
            if args.py_spy and rep == 0:
                profile = start_py_spy(f"{args.py_spy}-realtime-{beds}.txt", _pid(svc))
            timeline: list[Scrape] = []
            warm: Scrape | None = None
            while pub_out.running():
                if svc.proc is None or svc.proc.poll() is not None:
                    raise BenchError(f"streamproc exited:\n{svc.log_tail()}")
                sample = scrape(svc.metrics_port, proc)
                if sample is not None:
                    timeline.append(sample)
                    if warm is None and sample.t - t_start >= args.warmup:
                        warm = sample
                time.sleep(0.5)
            host_after = host_cpu()
            pub = pub_out.result(60)
            if profile is not None:
                stop_py_spy(profile)
            published = int(pub["published"])
            # let the service catch up (if it can), then give the last alarms time to arrive
            tail, _ = follow_service(svc, published, args)
            time.sleep(args.alarm_grace)
            final = scrape(svc.metrics_port, proc)
            rc = svc.terminate()
            if rc != 0:
                raise BenchError(f"streamproc exited {rc} on SIGTERM:\n{svc.log_tail()}")
            shed_logs = sum(
                1 for line in svc.log_lines() if line.get("event") == "ingress_full_shedding"
            )
        finally:
            if pub_proc is not None and pub_proc.poll() is None:
                pub_proc.kill()
            if watch is not None:
                watch.close()
            svc.close()
    if final is None or not timeline:
        raise BenchError("no metrics from the service")
    loaded = timeline[-1]  # the last scrape while the publisher was still running
    warm = warm or timeline[0]
    lat_buckets = bucket_delta(warm.buckets, final.buckets)
    n_cpu = loaded.abp - warm.abp
    cpu_us = (loaded.cpu - warm.cpu) / n_cpu * 1e6 if n_cpu > 0 else None
    # end-to-end alarm latency
    expected = {i: v for i, v in triggers.items() if v[0] < published // beds}
    got = watch.alarms()
    match = _match_alarms(spec, expected, got)
    probe_times = pub["probe_times"]
    e2e = [
        (arrival - probe_times[str(i)][expected[i][0]]) * 1e3
        for i, arrival in match["arrivals"].items()
    ]
    pings = [x * 1e3 for x in watch.ping_latencies()]
    rss_after = loaded.rss
    box_busy, box_steal = cpu_shares(host_before, host_after)
    return {
        "beds": beds,
        "duration": duration,
        "published": published,
        "publish_rate": pub["rate"],
        "publisher_max_lag_s": pub["max_lag_s"],
        "publisher_cpu_us_per_msg": pub.get("cpu_us_per_msg"),
        # the whole machine while the load ran: its busy share, and the share the
        # hypervisor gave to other guests (steal) -- the noise behind a bad p99
        "host_busy": box_busy,
        "host_steal": box_steal,
        "count": int(final.abp),
        "loss": published - int(final.abp),
        "reconnects": int(final.values.get("streamproc_broker_reconnects_total", 0)),
        "dropped": int(final.dropped),
        "shed_log_lines": shed_logs,
        "caught_up_s": (tail[-1].t - loaded.t) if tail else None,
        "cpu_us_per_msg": cpu_us,
        "cpu_share": (loaded.cpu - warm.cpu) / (loaded.t - warm.t) if loaded.t > warm.t else None,
        "proc_p50_ms": _ms(histogram_quantile(0.5, lat_buckets)),
        "proc_p99_ms": _ms(histogram_quantile(0.99, lat_buckets)),
        # how late the service's event loop ran its 20 ms watch timer: its own stalls
        "loop_lag_p99_ms": _ms(
            histogram_quantile(0.99, bucket_delta(warm.loop_buckets, final.loop_buckets))
        ),
        "loop_lag_max_ms": _ms(_max_bucket(bucket_delta(warm.loop_buckets, final.loop_buckets))),
        "alarms_expected": len(expected),
        "alarms_received": match["matched"],
        "alarms_ts_mismatch": match["mismatch"],
        "e2e_ms": sorted(e2e),
        # (chunk index of the triggering chunk = seconds into the run, latency ms): when
        # the slow alarms happened
        "e2e_by_chunk": sorted(
            (expected[i][0], round((arrival - probe_times[str(i)][expected[i][0]]) * 1e3, 2))
            for i, arrival in match["arrivals"].items()
        ),
        # packets the publisher still held unsent when it stamped each alarm's chunk
        "publisher_backlog_by_chunk": sorted(
            (expected[i][0], pub["probe_backlog"][str(i)][expected[i][0]])
            for i in match["arrivals"]
        ),
        "e2e_p50_ms": percentile(e2e, 0.5),
        "e2e_p99_ms": percentile(e2e, 0.99),
        "e2e_max_ms": max(e2e) if e2e else None,
        "ping_p50_ms": percentile(pings, 0.5),
        "ping_p99_ms": percentile(pings, 0.99),
        "rss_before_mb": rss_before / 2**20,
        "rss_after_mb": rss_after / 2**20,
        "kb_per_bed": (rss_after - rss_before) / beds / 1024,
        "rss_timeline_mb": [round(s.rss / 2**20, 1) for s in timeline],
        "publish_queue_max": max(
            (s.values.get("streamproc_publish_queue_depth", 0.0) for s in timeline), default=0.0
        ),
        "ingress_queue_max": max(
            (s.values.get("streamproc_ingress_queue_depth", 0.0) for s in timeline), default=0.0
        ),
    }


def host_cpu() -> tuple[int, int, int] | None:
    """(all, busy, steal) jiffies of the whole machine so far (/proc/stat), or None."""
    try:
        with Path("/proc/stat").open() as f:
            fields = [int(x) for x in f.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    total = sum(
        fields[:8]
    )  # user nice system idle iowait irq softirq steal (guest counted in user)
    idle = fields[3] + fields[4]
    steal = fields[7] if len(fields) > 7 else 0
    return total, total - idle - steal, steal


def cpu_shares(
    before: tuple[int, int, int] | None, after: tuple[int, int, int] | None
) -> tuple[float | None, float | None]:
    """(busy, stolen) shares of the machine's CPU time between two :func:`host_cpu` reads."""
    if before is None or after is None or after[0] <= before[0]:
        return None, None
    total = after[0] - before[0]
    return (after[1] - before[1]) / total, (after[2] - before[2]) / total


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else seconds * 1e3


# ----------------------------------------------------------------------------- profiling


def start_py_spy(path: str, pid: int) -> subprocess.Popen[bytes] | None:
    exe = shutil.which("py-spy")
    if exe is None:
        print("(py-spy not found: no profile)")
        return None
    return subprocess.Popen(  # noqa: S603 - py-spy on our own child
        [exe, "record", "-p", str(pid), "-o", path, "-f", "raw", "-r", "200", "--nonblocking"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def stop_py_spy(proc: subprocess.Popen[bytes]) -> None:
    proc.send_signal(2)  # SIGINT: py-spy writes its output and exits
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()


#: Frames that only wrap the event loop: left out of the inclusive list.
_WRAPPERS = (
    "<frozen runpy>",
    "asyncio/runners.py",
    "asyncio/base_events.py",
    "asyncio/events.py",
    "streamproc/__main__.py",
    "streamproc/apps/cli.py",
)


def _function(frame: str) -> str:
    """``name (path:line)`` -> ``name (path)``: one entry per function."""
    name, _, where = frame.partition(" (")
    path = where.rstrip(")").rsplit(":", 1)[0]
    return f"{name} ({path})" if path else name


def summarize_profile(path: str, top: int = 20) -> str:
    """The busiest functions of a py-spy raw (collapsed stacks) file, self and inclusive.

    Shares are of the samples in which the process was not idle (not waiting
    in ``select``).
    """
    own: dict[str, int] = {}
    incl: dict[str, int] = {}
    total = idle = 0
    try:
        lines = Path(path).read_text().splitlines()
    except OSError:
        return f"(no profile at {path})"
    for line in lines:
        stack, _, n_text = line.rpartition(" ")
        if not stack or not n_text.isdigit():
            continue
        n = int(n_text)
        frames = [_function(f) for f in stack.split(";")]
        if frames[-1].startswith(("EpollSelector.select", "select (")):
            idle += n
            continue
        total += n
        own[frames[-1]] = own.get(frames[-1], 0) + n
        for frame in set(frames):
            incl[frame] = incl.get(frame, 0) + n
    if not total:
        return f"(empty profile at {path})"
    busy = [(f, n) for f, n in incl.items() if not any(w in f for w in _WRAPPERS)]
    head = (
        f"profile {path}: {total + idle} samples, {idle / (total + idle):.0%} idle in select; "
        "shares of the busy samples:"
    )
    out = [head, "  self:"]
    out += [f"    {n / total:6.1%}  {f}" for f, n in sorted(own.items(), key=lambda x: -x[1])[:top]]
    out.append("  inclusive:")
    out += [f"    {n / total:6.1%}  {f}" for f, n in sorted(busy, key=lambda x: -x[1])[:top]]
    return "\n".join(out)


# ----------------------------------------------------------------------------- report


WAKE_LATENCY_DEV = "/dev/cpu_dma_latency"


def hold_wake_latency(us: int) -> int | None:
    """Ask the kernel (PM QoS) to keep the CPUs' wake-up latency at most ``us`` µs.

    While the returned descriptor stays open, idle CPUs poll instead of
    halting (on a VM, a halted vCPU is woken by the host, which on this
    machine's kind took milliseconds at times: the loopback floor's own p99
    swung from 2 to 30 ms between runs). It is the setting of the ``tuned``
    profiles *latency-performance* / *network-latency* that
    ``docs/scaling.md`` recommends for a host running the service. Needs
    root; ``None`` when not possible (the run goes on, and says so).
    """
    try:
        fd = os.open(WAKE_LATENCY_DEV, os.O_WRONLY)
    except OSError:
        return None
    try:
        os.write(fd, struct.pack("i", us))
    except OSError:
        os.close(fd)
        return None
    return fd


def machine() -> dict[str, Any]:
    model = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    mosq = ""
    with contextlib.suppress(Exception):
        binary = find_mosquitto()
        if binary is not None:
            out = subprocess.run(  # noqa: S603 - the broker binary, for its version
                [str(binary), "-h"], capture_output=True, text=True, timeout=5, check=False
            )
            mosq = (out.stdout or out.stderr).splitlines()[0]
    return {
        "nproc": os.cpu_count(),
        "cpu": model,
        "python": platform.python_version(),
        "mosquitto": mosq,
        "load_avg": os.getloadavg(),
    }


def fmt(value: float | None, spec: str = ",.0f", none: str = "-") -> str:
    return none if value is None else format(value, spec)


def flag(ok: bool | None) -> str:
    return "n/a" if ok is None else ("met" if ok else "NOT MET")


def valid(run: dict[str, Any]) -> bool:
    return run["loss"] <= 0 and not run.get("dropped") and not run.get("reconnects")


@dataclass
class Report:
    drains: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    realtime: dict[int, list[dict[str, Any]]] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)

    def med(self, kind: str, key: str) -> float | None:
        """Median over the valid runs (no loss, no reconnect: a rate that means something)."""
        return median([r.get(key) for r in self.drains.get(kind, []) if valid(r)])

    def total_loss(self) -> int:
        loss = 0
        for runs in self.drains.values():
            for r in runs:
                loss += max(0, r["loss"]) + r.get("dropped", 0)
                loss += r.get("alarms_expected", 0) - r.get("alarms_received", 0)
        for runs in self.realtime.values():
            for r in runs:
                loss += max(0, r["loss"]) + r["dropped"]
                loss += r["alarms_expected"] - r["alarms_received"]
        return loss


def print_report(args: argparse.Namespace, rep: Report) -> dict[str, Any]:
    names = {
        "paho": "bare paho",
        "bare": "bare aiomqtt",
        "naive": "naive pipeline",
        "streamproc": "streamproc run",
    }
    summary: dict[str, Any] = {}
    if rep.drains:
        n_runs = max(len(v) for v in rep.drains.values())
        print()
        print(
            f"== drain: {args.messages:,} msgs x {args.beds} beds, QoS {args.qos}, "
            f"MQTT {'5' if args.mqtt == 5 else '3.1.1'}, {args.mode} mode, "
            f"median of {n_runs} run(s)"
        )
        print(
            f"{'consumer':<16}{'rate msg/s':>12}{'CPU us/msg':>12}{'loss':>8}{'dropped':>9}"
            f"{'runs (msg/s)':>30}"
        )
        for kind in ("paho", "bare", "naive", "streamproc"):
            runs = rep.drains.get(kind)
            if not runs:
                continue
            # a run that lost messages or reconnected: its rate in brackets, left out of the median
            rates = " ".join(fmt(r["rate"]) if valid(r) else f"({fmt(r['rate'])})" for r in runs)
            rate, cpu = rep.med(kind, "rate"), rep.med(kind, "cpu_us_per_msg")
            dropped = sum(r.get("dropped", 0) for r in runs) if kind == "streamproc" else None
            print(
                f"{names[kind]:<16}{fmt(rate):>12}{fmt(cpu, '.1f'):>12}"
                f"{sum(r['loss'] for r in runs):>8}{fmt(dropped, 'd'):>9}{rates:>30}"
            )
            summary[kind] = {"rate": rate, "cpu_us_per_msg": cpu}
        svc, bare = rep.med("streamproc", "rate"), rep.med("bare", "rate")
        paho, naive = rep.med("paho", "rate"), rep.med("naive", "rate")
        vs_paho = svc / paho if svc and paho else None
        vs_bare = svc / bare if svc and bare else None
        vs_naive = svc / naive if svc and naive else None
        paired = [
            s["rate"] / p["rate"]
            for s, p in zip(
                rep.drains.get("streamproc", []), rep.drains.get("paho", []), strict=False
            )
            if valid(s) and valid(p) and p["rate"]
        ]
        print(
            f"ratios: streamproc/paho {fmt(vs_paho, '.2f')} (per run: "
            f"{' '.join(fmt(r, '.2f') for r in paired) or '-'}; target >= {TARGET_VS_PAHO}: "
            f"{flag(None if vs_paho is None else vs_paho >= TARGET_VS_PAHO)}); "
            f"streamproc/bare aiomqtt {fmt(vs_bare, '.2f')}; "
            f"streamproc/naive {fmt(vs_naive, '.2f')} (target >= {TARGET_VS_NAIVE:g}: "
            f"{flag(None if vs_naive is None else vs_naive >= TARGET_VS_NAIVE)})"
        )
        if "streamproc" in rep.drains:
            runs = rep.drains["streamproc"]
            print(
                f"streamproc drain alarms: {sum(r['alarms_received'] for r in runs)}/"
                f"{sum(r['alarms_expected'] for r in runs)} received "
                f"({sum(r['alarms_ts_mismatch'] for r in runs)} with an unexpected ts); "
                f"broker reconnects {sum(r['reconnects'] for r in runs)}; "
                f"peak RSS {fmt(median([r['peak_rss_mb'] for r in runs]), '.0f')} MB with up to "
                f"{fmt(median([r['ingress_queue_max'] for r in runs]))} messages in its ingress"
            )
        summary["ratio_vs_paho"], summary["ratio_vs_bare"] = vs_paho, vs_bare
        summary["ratio_vs_naive"] = vs_naive
    for beds, runs in rep.realtime.items():
        print()
        print(
            f"== real time: {beds} beds x {args.duration} s ({beds} msg/s), QoS {args.qos}, "
            f"median of {len(runs)} run(s)"
        )

        def m(key: str, runs: list[dict[str, Any]] = runs) -> float | None:
            return median([r.get(key) for r in runs])

        loss = sum(max(0, r["loss"]) for r in runs)
        dropped = sum(r["dropped"] for r in runs)
        print(
            f"published {sum(r['published'] for r in runs):,} (publisher lag max "
            f"{fmt(max(r['publisher_max_lag_s'] for r in runs) * 1e3, '.0f')} ms); "
            f"loss {loss}; ingress dropped {dropped}; "
            f"reconnects {sum(r['reconnects'] for r in runs)}; "
            f"service CPU {fmt(m('cpu_us_per_msg'), '.0f')} us/msg "
            f"({fmt((m('cpu_share') or 0) * 100, '.0f')}% of a core)"
        )
        p99 = m("e2e_p99_ms")
        print(
            f"alarm latency e2e: p50 {fmt(m('e2e_p50_ms'), '.2f')} ms, p99 "
            f"{fmt(p99, '.2f')} ms, max {fmt(m('e2e_max_ms'), '.2f')} ms over "
            f"{sum(r['alarms_received'] for r in runs)}/{sum(r['alarms_expected'] for r in runs)} "
            f"alarms (target p99 <= {TARGET_P99_MS:g} ms: "
            f"{flag(None if p99 is None else p99 <= TARGET_P99_MS)})"
        )
        print(
            f"processing latency (histogram): p50 {fmt(m('proc_p50_ms'), '.2f')} ms, "
            f"p99 {fmt(m('proc_p99_ms'), '.2f')} ms; loopback floor (ping): p50 "
            f"{fmt(m('ping_p50_ms'), '.2f')} ms, p99 {fmt(m('ping_p99_ms'), '.2f')} ms"
        )
        print(
            f"service event-loop lag (20 ms watch timer): p99 {fmt(m('loop_lag_p99_ms'), '.2f')}"
            f" ms, worst bucket <= {fmt(m('loop_lag_max_ms'), '.1f')} ms"
        )
        print(
            f"machine while loaded: {fmt((m('host_busy') or 0) * 100, '.0f')}% busy, "
            f"{fmt((m('host_steal') or 0) * 100, '.1f')}% stolen by the hypervisor; "
            f"publisher {fmt(m('publisher_cpu_us_per_msg'), '.0f')} us/msg; per run "
            "(e2e p99 ms / steal %): "
            + ", ".join(
                f"{fmt(r['e2e_p99_ms'], '.1f')}/{fmt((r.get('host_steal') or 0) * 100, '.1f')}"
                for r in runs
            )
        )
        kb = m("kb_per_bed")
        print(
            f"RSS per bed: {fmt(kb, '.1f')} KB (idle {fmt(m('rss_before_mb'), '.0f')} MB -> "
            f"{fmt(m('rss_after_mb'), '.0f')} MB; target <= {TARGET_KB_PER_BED:g} KB: "
            f"{flag(None if kb is None else kb <= TARGET_KB_PER_BED)})"
        )
        summary[f"realtime_{beds}"] = {
            k: m(k)
            for k in (
                "e2e_p50_ms",
                "e2e_p99_ms",
                "e2e_max_ms",
                "proc_p50_ms",
                "proc_p99_ms",
                "ping_p50_ms",
                "ping_p99_ms",
                "cpu_us_per_msg",
                "kb_per_bed",
                "host_busy",
                "host_steal",
                "publisher_cpu_us_per_msg",
            )
        }
    print()
    total = rep.total_loss()
    print(f"loss (messages + alarms, all runs): {total}; crashes: {len(rep.errors)}")
    for err in rep.errors:
        print(f"ERROR: {err}")
    return summary


# ----------------------------------------------------------------------------- main


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=200_000, help="drain: messages")
    parser.add_argument("--beds", type=int, default=1000, help="beds in the drain load")
    parser.add_argument("--qos", type=int, choices=(0, 1), default=1, help="publish QoS")
    parser.add_argument(
        "--mqtt",
        type=int,
        choices=(4, 5),
        default=5,
        help="protocol of the consumers and the service (5, or 4 = 3.1.1)",
    )
    parser.add_argument("--mode", choices=("backlog", "live"), default="backlog")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--duration", type=int, default=30, help="real time: seconds")
    parser.add_argument(
        "--latency-beds", default="1000", help="real time: bed counts, e.g. 1000,5000"
    )
    parser.add_argument("--only", default="paho,bare,naive,service,latency")
    parser.add_argument("--alarm-fraction", type=float, default=0.1)
    parser.add_argument("--critical-hold", type=float, default=5.0)
    parser.add_argument("--drop-first", type=float, default=2.0)
    parser.add_argument("--warmup", type=float, default=5.0, help="real time: s before measuring")
    parser.add_argument(
        "--max-inflight",
        type=int,
        default=1000,
        help="mosquitto max_inflight_messages (its own default, and the shipped config's: 20)",
    )
    parser.add_argument("--poll", type=float, default=0.1, help="/metrics polling period (s)")
    parser.add_argument("--idle-timeout", type=float, default=20.0)
    parser.add_argument("--timeout", type=float, default=900.0)
    parser.add_argument("--alarm-grace", type=float, default=1.0)
    parser.add_argument("--settle", type=float, default=2.0, help="idle s before the RSS baseline")
    parser.add_argument("--service-env", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument(
        "--wake-latency-us",
        type=int,
        default=0,
        help="hold the CPUs' wake-up latency (PM QoS, /dev/cpu_dma_latency) at this many us "
        "during the run, as a latency-tuned host does; -1: leave the host as it is",
    )
    parser.add_argument("--py-spy", metavar="PREFIX", help="profile the service with py-spy")
    parser.add_argument("--json", metavar="FILE", help="write every figure here")
    parser.add_argument("--smoke", action="store_true", help="~20 s; fails only on loss/crash")
    args = parser.parse_args(argv)
    if args.smoke:
        args.messages = min(args.messages, 3000)
        args.beds = min(args.beds, 50)
        args.repeat = 1
        args.duration = min(args.duration, 6)
        args.latency_beds = "50"
        args.critical_hold = 2.0
        args.drop_first = 0.0
        args.warmup = 2.0
        args.idle_timeout = 10.0
        args.timeout = 60.0
        args.poll = 0.05
        args.alarm_grace = 0.5
        args.settle = 0.5
        args.wake_latency_us = -1  # CI: leave the host alone
    return args


def _hold_wake_latency(args: argparse.Namespace, info: dict[str, Any]) -> str:
    """Hold the CPU wake-up latency as asked, for the whole run (``info`` records it);
    the words that say so."""
    held = hold_wake_latency(args.wake_latency_us) if args.wake_latency_us >= 0 else None
    if held is not None:
        info["wake_latency_us"] = args.wake_latency_us
        wake = f"CPU wake-up latency held at {args.wake_latency_us} us ({WAKE_LATENCY_DEV})"
    elif args.wake_latency_us >= 0:
        info["wake_latency_us"] = None
        wake = f"CPU wake-up latency NOT held ({WAKE_LATENCY_DEV} not writable: not root?)"
    else:
        info["wake_latency_us"] = None
        wake = "CPU wake-up latency left as the host has it (--wake-latency-us -1)"
    return wake


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    # the alarm subscriber (Watch) stamps arrivals on paho's thread: while this
    # thread parses a /metrics scrape it would wait up to the default 5 ms
    # switch interval for the GIL, and that wait would count as service latency
    sys.setswitchinterval(SWITCH_INTERVAL_S)
    only = {x.strip() for x in args.only.split(",") if x.strip()}
    info = machine()
    wake = _hold_wake_latency(args, info)
    print(
        f"machine: {info['nproc']} CPU ({info['cpu']}), Python {info['python']}, "
        f"{info['mosquitto']}, load avg {' '.join(f'{x:.2f}' for x in info['load_avg'])}; "
        f"{wake}"
    )
    report = Report()
    t_all = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="bench-service-") as tmp:
        workroot = Path(tmp)
        spec = drain_spec(args)
        if {"paho", "bare", "naive", "service"} & only:
            t = time.perf_counter()
            load = Load(spec)
            triggers = load.triggers(trigger_env(args)) if "service" in only else {}
            print(
                f"load: {args.beds} beds, {spec.chunks} chunks each, "
                f"{load.mean_payload_bytes():.0f} B/chunk, {len(spec.probes())} probe beds; "
                f"triggers computed in {time.perf_counter() - t:.1f} s"
            )
        for rep in range(args.repeat):
            for kind in ("paho", "service", "bare", "naive"):
                if kind not in only:
                    continue
                try:
                    if kind == "service":
                        res = drain_service(args, rep, workroot, triggers)
                    else:
                        res = drain_reference(args, kind, rep)
                except BenchError as exc:
                    report.errors.append(f"{kind} drain run {rep + 1}: {exc}")
                    print(f"ERROR {kind} run {rep + 1}: {exc}")
                    continue
                key = "streamproc" if kind == "service" else kind
                report.drains.setdefault(key, []).append(res)
                print(
                    f"  [{time.monotonic() - t_all:5.1f} s] run {rep + 1} {key:<10} "
                    f"{fmt(res['rate'])} msg/s, "
                    f"{fmt(res['cpu_us_per_msg'], '.1f')} us/msg, loss {res['loss']}"
                    + (f", dropped {res['dropped']}" if "dropped" in res else ""),
                    flush=True,
                )
        if "latency" in only:
            for beds in [int(b) for b in args.latency_beds.split(",") if b.strip()]:
                for rep in range(args.repeat):
                    try:
                        res = realtime(args, beds, rep, workroot)
                    except BenchError as exc:
                        report.errors.append(f"real time {beds} beds run {rep + 1}: {exc}")
                        print(f"ERROR real time {beds} run {rep + 1}: {exc}")
                        continue
                    report.realtime.setdefault(beds, []).append(res)
                    print(
                        f"  [{time.monotonic() - t_all:5.1f} s] real time {beds} beds "
                        f"run {rep + 1}: loss {res['loss']}, e2e p99 "
                        f"{fmt(res['e2e_p99_ms'], '.2f')} ms, "
                        f"{fmt(res['kb_per_bed'], '.1f')} KB/bed",
                        flush=True,
                    )
    summary = print_report(args, report)
    print(f"total time {time.monotonic() - t_all:.0f} s")
    if args.py_spy:
        prefix = Path(args.py_spy)
        for path in sorted(prefix.parent.glob(f"{prefix.name}-*.txt")):
            print(summarize_profile(str(path)))
    if args.json:
        Path(args.json).write_text(
            json.dumps(
                {
                    "machine": info,
                    "args": vars(args),
                    "summary": summary,
                    "drains": report.drains,
                    "realtime": {str(k): v for k, v in report.realtime.items()},
                    "errors": report.errors,
                    "loss": report.total_loss(),
                },
                indent=2,
                default=str,
            )
        )
    return 1 if report.errors or report.total_loss() > 0 else 0


if __name__ == "__main__":
    sys.exit(main())
