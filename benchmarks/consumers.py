"""Reference consumers for the service benchmark, each run as its own process.

    python benchmarks/consumers.py --kind paho|bare|naive --broker URL --client-id ID \
        --phase prime|drain|live --expect N [--qos 1]

``paho`` is a paho-mqtt 2.x client (the library under ``streamproc run``'s transport) in
its own network loop (``loop_forever``), with its automatic acknowledgement, that only
counts: the floor of any consumer on paho, the drain benchmark's baseline. The others
are aiomqtt clients set up like ``streamproc run``'s (MQTT 5 or, with
``--mqtt 4``, 3.1.1; a persistent session: fixed client id, clean start off,
session expiry 1 h; the inbound
filters ``icu/+/+/{kind}`` at QoS 1; an unbounded incoming queue), so that the
only difference from the service is what is done per message:

- ``bare``: nothing -- count the message (the floor any aiomqtt consumer pays);
- ``naive``: a per-message pipeline: ``orjson.loads``, then per bed (the
  topic) ``scipy.signal.sosfilt`` with its carried ``zi`` (2nd-order Bessel
  low-pass at 16 Hz, as the service's beat detector), ``find_peaks`` on the
  filtered chunk and the mean of a 10 s ring buffer of filtered samples.

Phases: ``prime`` subscribes and disconnects (the broker keeps the session and
queues what arrives for it); ``drain`` reconnects to that session without
subscribing and counts until ``--expect`` messages arrived (or nothing came
for ``--idle-timeout`` s); ``live`` subscribes, prints ``READY`` and counts.

Prints one JSON line: ``count``, ``seconds`` (first to last message), ``rate``
((count - 1) / seconds), ``cpu_s`` (this process's user + system time over
the same span, from ``getrusage(RUSAGE_SELF)``) and ``cpu_us_per_msg``; and
the same from the connection (CONNACK) to the last message
(``seconds_from_connect``, ``rate_from_connect`` = count / that,
``cpu_us_per_msg_from_connect``), which is what a backlog drain reports.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import sys
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

import aiomqtt
import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

KINDS = ("abp", "vitals", "infusion", "patient", "labs", "ack")
FS = 125.0
RING_S = 10.0


def cpu_seconds() -> float:
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


def naive_handler() -> Callable[[aiomqtt.Message], None]:
    """The per-message pipeline, with its per-bed state."""
    # imported here: the bare consumer does not pay for loading them
    import numpy as np  # noqa: PLC0415
    import orjson  # noqa: PLC0415
    from scipy.signal import bessel, find_peaks, sosfilt, sosfilt_zi  # noqa: PLC0415

    sos = bessel(2, 16.0, fs=FS, output="sos", norm="mag")
    zi0 = sosfilt_zi(sos)
    ring_n = int(RING_S * FS)
    distance = int(0.25 * FS)
    beds: dict[str, list[Any]] = {}  # topic -> [zi, ring, pos, peaks, mean]

    def handle(message: aiomqtt.Message) -> None:
        data = orjson.loads(message.payload)  # type: ignore[arg-type]
        x = np.asarray(data["samples"], dtype=np.float64)
        key = message.topic.value
        st = beds.get(key)
        if st is None:
            st = beds[key] = [zi0 * x[0], np.full(ring_n, x[0]), 0, 0, 0.0]
        y, st[0] = sosfilt(sos, x, zi=st[0])
        peaks, _ = find_peaks(y, distance=distance)
        ring, pos = st[1], st[2]
        n = min(y.size, ring_n)
        end = pos + n
        if end <= ring_n:
            ring[pos:end] = y[-n:]
        else:
            first = ring_n - pos
            ring[pos:] = y[-n : -n + first]
            ring[: end - ring_n] = y[-n + first :]
        st[2] = end % ring_n
        st[3] += len(peaks)
        st[4] = float(ring.mean())

    return handle


def run_paho(args: argparse.Namespace) -> dict[str, Any]:
    """The count-only paho consumer (same session settings as the others)."""
    parts = urlsplit(args.broker)
    v5 = args.mqtt == 5
    client = mqtt.Client(
        mqtt.CallbackAPIVersion.VERSION2,
        client_id=args.client_id,
        protocol=mqtt.MQTTv5 if v5 else mqtt.MQTTv311,
        clean_session=None if v5 else False,
    )
    client.max_queued_messages_set(0)
    props = None
    if v5:
        props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        props.SessionExpiryInterval = 3600
    state: dict[str, Any] = {"count": 0, "t_first": 0.0, "t_last": 0.0, "cpu_first": 0.0}
    state["cpu_last"] = 0.0
    subscribed: list[int] = []

    def on_connect(c: mqtt.Client, _u: object, _f: object, _rc: object, _p: object) -> None:
        state["t_connect"] = time.perf_counter()
        state["cpu_connect"] = cpu_seconds()
        if args.phase in ("prime", "live"):
            _, mid = c.subscribe([(f"{args.root}/+/+/{kind}", args.qos) for kind in KINDS])
            subscribed.append(mid or 0)

    def on_subscribe(c: mqtt.Client, _u: object, _mid: int, _rc: object, _p: object) -> None:
        if args.phase == "prime":
            c.disconnect()
        else:
            print("READY", flush=True)

    def on_message(c: mqtt.Client, _u: object, _m: mqtt.MQTTMessage) -> None:
        n = state["count"] = state["count"] + 1
        if n == 1:
            state["t_first"], state["cpu_first"] = time.perf_counter(), cpu_seconds()
        state["t_last"] = time.perf_counter()
        if n >= args.expect:
            state["cpu_last"] = cpu_seconds()
            c.disconnect()

    client.on_connect = on_connect
    client.on_subscribe = on_subscribe
    client.on_message = on_message
    client.connect(
        parts.hostname or "127.0.0.1",
        parts.port or 1883,
        30,
        clean_start=False if v5 else mqtt.MQTT_CLEAN_START_FIRST_ONLY,
        properties=props,
    )
    if args.phase == "prime":
        client.loop_forever()
        return {"phase": "prime", "ok": True}
    # stop when nothing came for --idle-timeout s (a lost message must not hang the bench)
    client.loop_start()
    seen, idle_since = -1, time.monotonic()
    while client.is_connected() or state["count"] == 0:
        time.sleep(0.25)
        if state["count"] != seen:
            seen, idle_since = state["count"], time.monotonic()
        elif time.monotonic() - idle_since > args.idle_timeout:
            client.disconnect()
            break
        if state["count"] >= args.expect:
            break
    client.loop_stop()
    count = state["count"]
    if not state["cpu_last"]:
        state["cpu_last"] = cpu_seconds()
    seconds = state["t_last"] - state["t_first"] if count > 1 else 0.0
    cpu = state["cpu_last"] - state["cpu_first"] if count > 1 else 0.0
    from_connect = state["t_last"] - state.get("t_connect", state["t_first"])
    cpu_from_connect = state["cpu_last"] - state.get("cpu_connect", state["cpu_first"])
    return {
        "phase": args.phase,
        "kind": "paho",
        "count": count,
        "seconds": seconds,
        "rate": (count - 1) / seconds if seconds > 0 else 0.0,
        "cpu_s": cpu,
        "cpu_us_per_msg": cpu / (count - 1) * 1e6 if count > 1 else 0.0,
        "seconds_from_connect": from_connect,
        "rate_from_connect": count / from_connect if count and from_connect > 0 else 0.0,
        "cpu_us_per_msg_from_connect": cpu_from_connect / count * 1e6 if count else 0.0,
        "timed_out": count < args.expect,
    }


def _client(args: argparse.Namespace) -> aiomqtt.Client:
    parts = urlsplit(args.broker)
    v5 = args.mqtt == 5
    props = None
    if v5:
        props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        props.SessionExpiryInterval = 3600
    return aiomqtt.Client(
        parts.hostname or "127.0.0.1",
        parts.port or 1883,
        identifier=args.client_id,
        protocol=aiomqtt.ProtocolVersion.V5 if v5 else aiomqtt.ProtocolVersion.V311,
        clean_start=False if v5 else mqtt.MQTT_CLEAN_START_FIRST_ONLY,
        clean_session=None if v5 else False,
        properties=props,
        keepalive=30,
        timeout=30,
        max_queued_incoming_messages=0,
    )


async def run(args: argparse.Namespace) -> dict[str, Any]:
    handle = naive_handler() if args.kind == "naive" else None
    async with _client(args) as client:
        t_connect = time.perf_counter()
        cpu_connect = cpu_seconds()
        if args.phase in ("prime", "live"):
            for kind in KINDS:
                await client.subscribe(f"{args.root}/+/+/{kind}", qos=args.qos)
        if args.phase == "prime":
            return {"phase": "prime", "ok": True}
        if args.phase == "live":
            print("READY", flush=True)
        count = 0
        t_first = t_last = 0.0
        cpu_first = cpu_last = 0.0
        last_progress = time.monotonic()

        async def watchdog(reader: asyncio.Task[None]) -> None:
            nonlocal last_progress
            seen = -1
            while not reader.done():
                await asyncio.sleep(0.25)
                if count != seen:
                    seen = count
                    last_progress = time.monotonic()
                elif time.monotonic() - last_progress > args.idle_timeout:
                    reader.cancel()
                    return

        async def reader() -> None:
            nonlocal count, t_first, t_last, cpu_first, cpu_last
            expect = args.expect
            async for message in client.messages:
                if count == 0:
                    t_first = time.perf_counter()
                    cpu_first = cpu_seconds()
                if handle is not None:
                    handle(message)
                count += 1
                if count >= expect:
                    break
            t_last = time.perf_counter()
            cpu_last = cpu_seconds()

        task = asyncio.create_task(reader())
        dog = asyncio.create_task(watchdog(task))
        try:
            await task
        except asyncio.CancelledError:
            t_last = time.perf_counter()
            cpu_last = cpu_seconds()
        dog.cancel()
        seconds = t_last - t_first if count > 1 else 0.0
        cpu = cpu_last - cpu_first if count > 1 else 0.0
        from_connect = t_last - t_connect
        cpu_from_connect = cpu_last - cpu_connect
        return {
            "phase": args.phase,
            "kind": args.kind,
            "count": count,
            "seconds": seconds,
            "rate": (count - 1) / seconds if seconds > 0 else 0.0,
            "cpu_s": cpu,
            "cpu_us_per_msg": cpu / (count - 1) * 1e6 if count > 1 else 0.0,
            "seconds_from_connect": from_connect,
            "rate_from_connect": count / from_connect if count and from_connect > 0 else 0.0,
            "cpu_us_per_msg_from_connect": cpu_from_connect / count * 1e6 if count else 0.0,
            "timed_out": count < args.expect,
        }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kind", choices=("paho", "bare", "naive"), required=True)
    parser.add_argument("--broker", required=True)
    parser.add_argument("--client-id", required=True)
    parser.add_argument("--phase", choices=("prime", "drain", "live"), required=True)
    parser.add_argument("--expect", type=int, default=0)
    parser.add_argument("--qos", type=int, choices=(0, 1), default=1, help="subscription QoS")
    parser.add_argument("--root", default="icu")
    parser.add_argument("--mqtt", type=int, choices=(4, 5), default=5, help="protocol: 5 or 3.1.1")
    parser.add_argument("--idle-timeout", type=float, default=15.0)
    args = parser.parse_args(argv)
    result = run_paho(args) if args.kind == "paho" else asyncio.run(run(args))
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
