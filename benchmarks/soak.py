"""The service soak: a large ward for a long time against a real ``streamproc run``.

    python benchmarks/soak.py                                   # 1,000 beds, speed 5, 30 min wall
    python benchmarks/soak.py --beds 200 --minutes 3 --sample-s 20 --warmup-s 60   # a trial
    python benchmarks/soak.py --ci                              # the 60-second CI version
    python benchmarks/soak.py --broker mqtt://host:1883         # your broker instead of ours

It wraps ``streamproc-sim soak --spawn-service`` (``simulators/soak.py``): a ward of
``--beds`` beds (every scenario of ``config/scenarios``, mixed, each stretched to
``--minutes`` x ``--speed`` minutes of data) is published at ``--speed`` times real time
to a Mosquitto of its own (``tests/system/broker.py``: free port, temp dir) or ``--broker``,
while a spawned ``python -m streamproc run`` serves the ward's units; every bed's alarms
are checked against its scenario's ground truth. The service is sampled every
``--sample-s`` seconds (its RSS from ``/proc`` and its ``/metrics``).

Reported (stdout, ``--json`` and ``--md``): missed / late / wrong / false alarms against
ground truth; messages sent, in (``streamproc_messages_in_total``), rejected, shed, and
out (alarm transitions published, and received by the soak's subscriber); the service's
RSS series and its growth from the first sample after ``--warmup-s`` to the last (the
per-bed containers fill during the first 30 minutes of *data*: the trend keeps 60 points
of 30 s, so judge flatness after that); the p50/p99 of
``streamproc_processing_latency_seconds`` (arrival to processed) over the run and after
the warm-up; the service's exit status.

Exit status 1 if an expected alarm was missed, a forbidden one fired, a message was lost
between the broker and the service, refused (the simulator sends only valid data) or shed,
or the service crashed; 0 otherwise. Speed, latency and memory figures are reported, never
judged (the machine may be shared).

At ``--speed`` S the data runs ahead of the wall clock (by (S - 1) x the elapsed time),
so the spawned service runs with ``service.max_future_s=0``: its guard against gateway
clocks running ahead would otherwise refuse everything after the first minutes.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from simulators.cli import main as sim_main  # noqa: E402
from tests.system.broker import MosquittoBroker  # noqa: E402

#: The CI version: 100 beds at speed 5 for one minute of wall time (5 min of data).
CI = {"beds": 100, "speed": 5.0, "minutes": 1.0, "sample_s": 10.0, "warmup_s": 20.0}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--beds", type=int, default=1000, help="beds (default 1000)")
    p.add_argument("--speed", type=float, default=5.0, help="data time / wall time (default 5)")
    p.add_argument(
        "--minutes", type=float, default=30.0, help="wall minutes of publishing (default 30)"
    )
    p.add_argument("--sample-s", type=float, default=60.0, help="service sample period (60)")
    p.add_argument(
        "--warmup-s", type=float, default=600.0, help="memory growth counted after this (600)"
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--mix", help="scenario weights, e.g. ne_60_40=3,stable=1 (default: all)")
    p.add_argument("--broker", help="use this broker (default: a Mosquitto of our own)")
    p.add_argument("--service-set", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--json", type=Path, help="write the summary (and the raw report) here")
    p.add_argument("--md", type=Path, help="write the summary as markdown here")
    p.add_argument("--ci", action="store_true", help="the 60-second CI version: " + str(CI))
    args = p.parse_args(argv)
    if args.ci:
        for key, value in CI.items():
            setattr(args, key, value)
    if args.beds < 1 or args.speed <= 0 or args.minutes <= 0 or args.sample_s <= 0:
        p.error("--beds, --speed, --minutes and --sample-s must be positive")
    return args


@contextlib.contextmanager
def broker_url(url: str | None, workdir: Path) -> Iterator[str]:
    if url:
        yield url
        return
    broker = MosquittoBroker(
        workdir=workdir / "mosquitto",
        persistence=False,
        extra_config=["max_queued_messages 0", "max_inflight_messages 1000"],
    )
    broker.start()
    try:
        yield broker.url
    finally:
        broker.close()


def summarise(report: dict[str, Any], args: argparse.Namespace, rc: int) -> dict[str, Any]:
    """The figures of the issue: alarms against ground truth, messages, memory, latency."""
    totals = report.get("totals", {})
    svc = report.get("service") or {}
    pub = report.get("publish", {})
    msgs = svc.get("messages", {})
    sent = int(pub.get("messages", 0))
    lost = sent - int(svc.get("messages_in", 0)) - int(svc.get("rejected", 0))
    crashed = svc.get("exit_code") not in (0, None) or not svc
    out = {
        "command": "python benchmarks/soak.py " + " ".join(args.argv),
        "when_utc": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "beds": args.beds,
        "speed": args.speed,
        "wall_s": report.get("wall_s"),
        "data_per_bed_s": args.minutes * 60 * args.speed,
        "alarms": {
            k: int(totals.get(k, 0))
            for k in ("expected", "met", "missed", "late", "wrong", "no_alarm", "false", "skipped")
        },
        "messages": {
            "sent": sent,
            "in": int(svc.get("messages_in", 0)),
            "rejected": int(svc.get("rejected", 0)),
            "shed": int(svc.get("ingress_dropped", 0)),
            "lost_broker_to_service": lost,
            "alarm_transitions_out": int(msgs.get("alarms_out", 0)),
            "alarm_messages_received": int(report.get("collector", {}).get("alarm_messages", 0)),
            "speed_achieved": pub.get("speed_achieved"),
            "max_publish_lag_s": pub.get("max_lag_s"),
        },
        "memory": svc.get("memory", {}),
        "latency": svc.get("latency", {}),
        "service": {
            "exit_code": svc.get("exit_code"),
            "peak_rss_mb": svc.get("peak_rss_mb"),
            "max_ingress": svc.get("max_ingress"),
            "max_outbox": svc.get("max_outbox"),
        },
        "soak_exit_status": rc,
    }
    out["ok"] = (
        rc == 0
        and out["alarms"]["missed"] == 0
        and out["alarms"]["false"] == 0
        and lost == 0
        and out["messages"]["rejected"] == 0  # the simulator sends only valid messages
        and out["messages"]["shed"] == 0
        and not crashed
    )
    return out


def markdown(s: dict[str, Any]) -> str:
    a, m, mem, lat = s["alarms"], s["messages"], s["memory"], s["latency"]
    growth = mem.get("growth_pct")
    growth_text = "n/a" if growth is None else f"{growth:+.2f}%"
    rows = [
        (
            "beds x data per bed",
            f"{s['beds']:,} x {s['data_per_bed_s'] / 60:g} min at speed {s['speed']:g}",
        ),
        ("wall time", f"{(s['wall_s'] or 0) / 60:.1f} min"),
        (
            "alarms against ground truth",
            (
                f"{a['met']}/{a['expected']} met; missed {a['missed']}, late {a['late']}, "
                f"wrong {a['wrong']}; false {a['false']} of {a['no_alarm']} no-alarm checks"
            ),
        ),
        (
            "messages",
            (
                f"{m['sent']:,} sent, {m['in']:,} in, {m['rejected']:,} rejected, "
                f"{m['shed']:,} shed, {m['lost_broker_to_service']:,} lost; out: "
                f"{m['alarm_transitions_out']:,} alarm transitions "
                f"({m['alarm_messages_received']:,} received)"
            ),
        ),
        (
            "publishing speed achieved",
            f"{m['speed_achieved']}x (max lag {m['max_publish_lag_s']} s)",
        ),
        (
            "service RSS",
            (
                f"{mem.get('rss_mb_after_warmup')} MB after {mem.get('warmup_s', 0):g} s -> "
                f"{mem.get('rss_mb_end')} MB ({growth_text} over {mem.get('measured_over_s')} s, "
                f"{mem.get('samples')} samples); peak {mem.get('rss_mb_peak')} MB"
            ),
        ),
        (
            "processing latency",
            (
                f"p99 {lat.get('p99_ms')} ms (after warm-up {lat.get('p99_ms_after_warmup')} ms), "
                f"p50 {lat.get('p50_ms')} ms over {lat.get('observations', 0):,} messages"
            ),
        ),
        ("service exit status", str(s["service"]["exit_code"])),
        ("verdict", "ok" if s["ok"] else "FAILED"),
    ]
    lines = [f"`{s['command']}` ({s['when_utc']})", "", "| figure | value |", "|---|---|"]
    lines += [f"| {k} | {v} |" for k, v in rows]
    series = mem.get("rss_mb_series") or []
    if series:
        points = ", ".join(f"{t:g}: {mb:g}" for t, mb in series)
        lines += ["", f"RSS (MB) by seconds since the service was up: {points}"]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    with tempfile.TemporaryDirectory(prefix="streamproc-bench-soak-") as tmp:
        work = Path(tmp)
        raw = work / "report.json"
        with broker_url(args.broker, work) as url:
            sim_args = [
                "soak",
                "--beds",
                str(args.beds),
                "--duration",
                f"{args.minutes * 60 * args.speed:g}s",
                "--speed",
                f"{args.speed:g}",
                "--seed",
                str(args.seed),
                "--broker",
                url,
                "--spawn-service",
                "--sample-s",
                f"{args.sample_s:g}",
                "--warmup-s",
                f"{args.warmup_s:g}",
                "--report",
                str(raw),
                "--no-progress",
            ]
            if args.mix:
                sim_args += ["--mix", args.mix]
            for item in args.service_set:
                sim_args += ["--service-set", item]
            rc = sim_main(sim_args)
        report = json.loads(raw.read_text()) if raw.is_file() else {}
    summary = summarise(report, args, rc)
    text = markdown(summary)
    print("\n" + text)
    if args.json is not None:
        args.json.write_text(json.dumps({"summary": summary, "report": report}, indent=2) + "\n")
    if args.md is not None:
        args.md.write_text(text)
    return 0 if summary["ok"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
