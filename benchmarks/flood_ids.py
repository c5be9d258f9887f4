"""A flood of new bed ids against a live service: what stays retained on the broker?

    python benchmarks/flood_ids.py [--ids 50000] [--max-beds 2000] [--stale-s 5]

Starts its own Mosquitto (``tests/system/broker.py``) and a real ``streamproc run``
(``tests/system/service_helpers.py``) with ``service.max_beds`` = ``--max-beds``, sends
``--ids`` bed ids never seen before (one art-line reading each, QoS 1, in bursts
of 1,000), waits until every bed past the cap is evicted, ``--stale-s`` has
passed and the outbox is empty, then reads the retained alarm states and
summaries of the flooded unit. With evictions that close everything, only the
beds still monitored (at most ``--max-beds``) have retained state.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.system.broker import MosquittoBroker, Subscriber, find_mosquitto
from tests.system.service_helpers import Publisher, ServiceProcess

T = TypeVar("T")


def _ask(call: Callable[..., T], *args: str, default: T) -> T:
    """``call(*args)``, or ``default`` when the service's HTTP endpoint is too busy to answer
    within its timeout (before the eviction fix it was, for tens of seconds)."""
    try:
        return call(*args)
    except OSError:  # (a socket timeout is an OSError)
        return default


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--ids", type=int, default=50_000)
    p.add_argument("--max-beds", type=int, default=2_000)
    p.add_argument("--stale-s", type=float, default=5.0, help="monitor.stale_s")
    a = p.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="flood-") as tmp:
        work = Path(tmp)
        broker = MosquittoBroker(binary=find_mosquitto(), workdir=work / "mosquitto")
        broker.start()
        env = {"STREAMPROC_MAX_BEDS": str(a.max_beds), "STREAMPROC_MONITOR_STALE_S": str(a.stale_s)}
        service = ServiceProcess(broker, work, env=env).start()
        gateway = Publisher(broker)
        try:
            t0 = time.monotonic()
            for start in range(0, a.ids, 1_000):
                now = time.time()
                gateway.send(
                    {
                        "topic": f"icu/flood/f{i:06d}/vitals",
                        "payload": {"ts": now, "source": "art", "sbp": 120, "dbp": 70},
                    }
                    for i in range(start, min(start + 1_000, a.ids))
                )
            sent = time.monotonic() - t0
            while _ask(service.metric, "streamproc_beds_evicted_total", default=0.0) < (
                a.ids - a.max_beds
            ):
                time.sleep(0.5)
            evicted = time.monotonic() - t0
            time.sleep(a.stale_s + 3.0)
            while _ask(service.health, default={"outbox": 1})["outbox"]:
                time.sleep(0.5)
            with Subscriber(broker, ["icu/flood/+/alarms/#", "icu/flood/+/summary"]) as late:
                time.sleep(3.0)
                held = [m for m in late.messages if m.retain and m.payload]
            beds = _ask(service.health, default={"beds": None})["beds"]
        finally:
            gateway.close()
            service.close()
            broker.close()
    alarms = [json.loads(m.payload) for m in held if "/alarms/" in m.topic]
    result = {
        "ids": a.ids,
        "max_beds": a.max_beds,
        "sent_s": round(sent, 1),
        "all_evicted_s": round(evicted, 1),
        "beds_held": beds,
        "retained_open_alarms": sum(x["state"] != "cleared" for x in alarms),
        "retained_alarms": len(alarms),
        "retained_summaries": sum(m.topic.endswith("/summary") for m in held),
        "beds_with_retained_state": len({m.topic.split("/")[2] for m in held}),
    }
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
