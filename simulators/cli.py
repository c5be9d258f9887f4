"""``streamproc-sim``: simulated wards and real records, to a broker or a recording; soak tests.

    streamproc-sim publish [SCENARIO.toml ...] --beds 50 --broker mqtt://127.0.0.1:1883 --speed 10
    streamproc-sim publish --beds 3 --out ward.jsonl        # then: streamproc replay ward.jsonl
    streamproc-sim record /work/shared/data/abp/041s/041s --out 041s.jsonl --profile standard
    streamproc-sim publish-record REC --broker mqtt://... --infusion norepinephrine:0.2:mcg/kg/min
    streamproc-sim soak --beds 200 --duration 10m --speed 10 --broker mqtt://... --spawn-service
    streamproc-sim clear --broker mqtt://... --unit-prefix s0-abc123-w

Exit status: 0 done; 1 a soak missed an expected alarm (or, with ``--strict``,
found any problem); 2 bad options or input; 3 the broker or the service failed.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import IO, Any

import numpy as np

from simulators.publisher import (
    MqttSink,
    PublishStats,
    SimError,
    clear_retained,
    parse_broker_url,
    publish_stream,
    retained_topics,
    send_ward,
    write_recording,
    write_ward,
)
from simulators.soak import default_unit_prefix, run_soak
from simulators.ward import (
    Bed,
    WardError,
    build_ward,
    parse_duration,
    parse_mix,
    resolve_scenarios,
)
from streamproc.wire.recordings import RecordError, context_messages, read_abp, record_timed

__all__ = ["build_parser", "main"]

EXIT_MISSED = 1
EXIT_USAGE = 2
EXIT_FAILED = 3


def _say(text: str, *, err: bool = False) -> None:
    """One line of the command's report (stdout, or stderr when stdout carries data)."""
    print(text, file=sys.stderr if err else sys.stdout, flush=True)


# --------------------------------------------------------------------------- argument types


def _speed(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number >= 0, got {text!r}") from None
    if not (value >= 0 and math.isfinite(value)):
        raise argparse.ArgumentTypeError(f"expected a number >= 0, got {text!r}")
    return value


def _duration(text: str) -> float:
    try:
        return parse_duration(text)
    except WardError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _mix(text: str) -> dict[str, float]:
    try:
        return parse_mix(text)
    except WardError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _t0(text: str) -> str | float:
    if text in {"now", "record", "scenario"}:
        return text
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected now, record, scenario or epoch seconds, got {text!r}"
        ) from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"expected finite epoch seconds, got {text!r}")
    return value


def _beds(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {text!r}")
    return value


# --------------------------------------------------------------------------- shared options


def _add_ward_options(p: argparse.ArgumentParser, *, soak: bool) -> None:
    p.add_argument(
        "scenarios",
        nargs="*",
        metavar="SCENARIO.toml",
        help="scenario files to mix (default: every file in config/scenarios)",
    )
    p.add_argument("--beds", type=_beds, help="number of beds (default: one per scenario)")
    p.add_argument(
        "--mix",
        type=_mix,
        metavar="NAME=W,...",
        help="scenario weights by name, e.g. ne_60_40=3,recovery=1 (default: all equal)",
    )
    p.add_argument("--seed", type=int, default=0, help="bed i runs with seed SEED + i (default 0)")
    p.add_argument(
        "--duration",
        type=_duration,
        metavar="D",
        help="stretch or cut every bed's scenario to D (600, 90s, 10m, 1h); the last "
        "pressure holds. Default: each scenario's own length",
    )
    p.add_argument(
        "--units",
        metavar="U1,U2",
        help="unit ids, 20 beds each (default: PREFIX1, PREFIX2, ...)",
    )
    p.add_argument(
        "--unit-prefix",
        metavar="PREFIX",
        help="prefix of generated unit ids (default: "
        + ("fresh per run, s{seed}-{time}-w" if soak else "ward")
        + ")",
    )
    p.add_argument("--root", default="icu", help="topic root (default icu)")


def _broker_url(text: str) -> str:
    """``--broker``: checked at once (exit 2), never guessed without a scheme."""
    try:
        parse_broker_url(text)
    except SimError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text


def _add_broker_options(p: argparse.ArgumentParser, *, required: bool) -> None:
    p.add_argument(
        "--broker",
        required=required,
        type=_broker_url,
        metavar="URL",
        help="mqtt://host:port (mqtts:// for TLS)",
    )
    p.add_argument(
        "--speed",
        type=_speed,
        default=1.0,
        help="data time runs SPEED times faster than the wall clock (default 1; 0: no pacing)",
    )
    p.add_argument(
        "--as-fast-as-possible",
        action="store_true",
        help="no pacing (same as --speed 0)",
    )
    p.add_argument(
        "--qos",
        type=int,
        choices=(0, 1),
        default=1,
        help="QoS of abp and vitals (context messages always go at QoS 1; default 1)",
    )
    p.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="live progress display (default: when stdout is a terminal)",
    )


def _add_record_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("record", metavar="WFDB_RECORD", help="record path without .hea, e.g. 041s/041s")
    p.add_argument("--channel", default="ABP", help="the pressure channel (default ABP)")
    p.add_argument(
        "--sampfrom",
        type=int,
        help="first sample (default: the span of the segments that have the channel)",
    )
    p.add_argument("--sampto", type=int, help="end sample (exclusive)")
    p.add_argument("--unit", default="ward7", help="unit id (default ward7)")
    p.add_argument("--bed", default="bed01", help="bed id (default bed01)")
    p.add_argument("--root", default="icu", help="topic root (default icu)")
    p.add_argument("--chunk-s", type=float, default=1.0, help="seconds per abp chunk (default 1)")
    p.add_argument(
        "--profile",
        choices=("standard", "chronic_hypertension", "elderly", "trauma", "trauma_tbi"),
        help="send a patient message with this profile",
    )
    p.add_argument("--weight-kg", type=float, help="patient weight, in the patient message")
    p.add_argument("--age", type=float, help="patient age, in the patient message")
    p.add_argument("--map-target", type=float, help="MAP target, in the patient message")
    p.add_argument(
        "--infusion",
        action="append",
        default=[],
        metavar="DRUG:RATE:UNIT",
        help="an infusion message at the start, e.g. norepinephrine:0.2:mcg/kg/min (repeatable)",
    )


# --------------------------------------------------------------------------- helpers


def _ward(args: argparse.Namespace, *, unit_prefix: str, t0: float | None = None) -> list[Bed]:
    choices = resolve_scenarios(args.scenarios, args.mix)
    beds = args.beds if args.beds is not None else len(choices)
    units = [u.strip() for u in args.units.split(",") if u.strip()] if args.units else []
    return build_ward(
        choices,
        beds,
        seed=args.seed,
        units=units,
        unit_prefix=unit_prefix,
        t0=t0,
        duration_s=args.duration,
    )


def _progress(args: argparse.Namespace) -> bool:
    return bool(sys.stdout.isatty() if args.progress is None else args.progress)


def _speed_of(args: argparse.Namespace) -> float:
    return 0.0 if args.as_fast_as_possible else float(args.speed)


@contextlib.contextmanager
def _output(path: str) -> Iterator[IO[bytes]]:
    if path == "-":
        yield sys.stdout.buffer
        sys.stdout.buffer.flush()
        return
    target = Path(path)
    tmp = target.with_name(target.name + ".part")
    with tmp.open("wb") as fh:
        yield fh
    tmp.replace(target)


# --------------------------------------------------------------------------- commands


def _cmd_publish(args: argparse.Namespace) -> int:
    if (args.out is None) == (args.broker is None):
        raise WardError("publish: give --broker URL or --out FILE (one of them)")
    prefix = args.unit_prefix or "ward"
    if args.out is not None:
        t0 = args.t0 if isinstance(args.t0, float) else (time.time() if args.t0 == "now" else None)
        beds = _ward(args, unit_prefix=prefix)
        with _output(args.out) as fh:
            stats = write_ward(beds, fh, root=args.root, t0=t0)
        stats.out = args.out
        _say(stats.summary(), err=args.out == "-")
        return 0
    beds = _ward(args, unit_prefix=prefix)
    t0 = args.t0 if isinstance(args.t0, float) else None
    if args.t0 == "scenario":
        t0 = beds[0].scenario.t0
    with MqttSink(args.broker) as sink:
        stats, _ = send_ward(
            beds,
            sink,
            speed=_speed_of(args),
            qos=args.qos,
            root=args.root,
            progress=_progress(args),
            t0=t0,
        )
    _say(stats.summary())
    return 0


def _record_lines(args: argparse.Namespace, *, default_t0: str) -> tuple[list[Any], str]:
    rec = read_abp(args.record, channel=args.channel, sampfrom=args.sampfrom, sampto=args.sampto)
    mode = args.t0 if args.t0 is not None else default_t0
    note = ""
    if mode == "now":
        t0 = time.time()
    elif isinstance(mode, float):
        t0 = mode
    else:
        t0 = rec.start_time
        if rec.base_time is None:
            note = "the record has no base date/time: t0 = recordings.DEFAULT_T0"
        elif t0 != rec.base_time:
            note = (
                f"the record's base time ({rec.base_time:.0f}) is outside 2000..2200, which "
                "streamproc rejects: t0 = recordings.DEFAULT_T0"
            )
    context = context_messages(
        profile=args.profile,
        weight_kg=args.weight_kg,
        age=args.age,
        map_target=args.map_target,
        infusions=args.infusion,
    )
    lines = record_timed(
        rec,
        unit=args.unit,
        bed=args.bed,
        root=args.root,
        t0=t0,
        chunk_s=args.chunk_s,
        context=context,
    )
    head = (
        f"{args.record}: {args.channel} {rec.samples.size:,} samples at {rec.fs:g} Hz "
        f"({rec.duration_s:.1f} s, {int(np.isnan(rec.samples).sum()):,}"
        f" missing), from sample {rec.sampfrom:,}"
    )
    return lines, head + (f"; {note}" if note else "")


def _cmd_record(args: argparse.Namespace) -> int:
    lines, head = _record_lines(args, default_t0="record")
    _say(head, err=args.out == "-")
    stats = PublishStats(beds=1, t0=lines[0][0] if lines else 0.0, out=args.out)
    with _output(args.out) as fh:
        write_recording(lines, fh, stats=stats)
    _say(stats.summary(), err=args.out == "-")
    return 0


def _cmd_publish_record(args: argparse.Namespace) -> int:
    lines, head = _record_lines(args, default_t0="now")
    _say(head)
    t0 = lines[0][0] if lines else time.time()
    stats = PublishStats(beds=1, data_total_s=(lines[-1][0] - t0) if lines else 0.0)
    with MqttSink(args.broker) as sink:
        publish_stream(lines, sink, speed=_speed_of(args), t0=t0, qos=args.qos, stats=stats)
    _say(stats.summary())
    return 0


def _cmd_soak(args: argparse.Namespace) -> int:
    from rich.console import Console  # noqa: PLC0415 - rich only for the report

    # a fixed width when piped, so that the table is not squeezed into 80 columns
    console = Console(width=None if sys.stdout.isatty() else 132)
    prefix = args.unit_prefix or default_unit_prefix(args.seed)
    beds = _ward(args, unit_prefix=prefix)
    speed = _speed_of(args)
    options = {
        "broker": args.broker,
        "beds": len(beds),
        "speed": speed,
        "duration_s": args.duration,
        "seed": args.seed,
        "mix": args.mix,
        "units": sorted({b.scenario.unit for b in beds}),
        "root": args.root,
        "qos": args.qos,
        "spawn_service": args.spawn_service,
        "sample_s": args.sample_s,
        "warmup_s": args.warmup_s,
    }
    report = run_soak(
        beds,
        url=args.broker,
        speed=speed,
        qos=args.qos,
        root=args.root,
        progress=_progress(args),
        grace_s=args.grace,
        spawn_service=args.spawn_service,
        service_settings=args.service_set,
        sample_s=args.sample_s,
        warmup_s=args.warmup_s,
        clear=not args.keep_retained,
        options=options,
        log=lambda text: _say(f"soak: {text}", err=True),
    )
    console.print(report.render())
    for res in report.problem_beds:
        for problem in res.problems:
            _say(f"  {res.key} (seed {res.seed}): {problem}")
    total = report.totals()
    _say(report.publish.summary())
    if report.service is not None:
        svc = report.service
        lost = report.publish.sent - svc["messages_in"] - svc["rejected"]
        _say(
            f"streamproc (pid {svc['pid']}): peak RSS {svc.get('peak_rss_mb')} MB, "
            f"{svc['messages_in']:,.0f} of {report.publish.sent:,} messages in"
            + (f" ({lost:,.0f} lost between the broker and the service)" if lost else "")
            + f", {svc['rejected']:,.0f} rejected, {svc['ingress_dropped']:,.0f} shed, "
            f"max backlog {svc.get('max_ingress')} in / {svc.get('max_outbox')} out, "
            f"drained {svc['drained']}"
        )
        mem, lat, msgs = (
            svc.get("memory") or {},
            svc.get("latency") or {},
            svc.get("messages") or {},
        )
        if mem:
            growth = mem.get("growth_pct")
            _say(
                f"streamproc memory: {mem['samples']} samples every {svc['sample_s']:g} s; "
                + (
                    f"RSS {mem['rss_mb_after_warmup']} MB after the {mem['warmup_s']:g} s "
                    f"warm-up -> {mem['rss_mb_end']} MB at the end ({growth:+.2f}% over "
                    f"{mem['measured_over_s']:g} s)"
                    if growth is not None
                    else f"growth not measured ({mem.get('note')})"
                )
                + f"; peak {mem['rss_mb_peak']} MB"
            )
        if lat:
            _say(
                f"streamproc processing latency: p99 {lat['p99_ms']} ms "
                f"(after the warm-up {lat['p99_ms_after_warmup']} ms), p50 {lat['p50_ms']} ms, "
                f"{lat['observations']:,} messages; out: {msgs.get('alarms_out', 0):,} alarm "
                f"transitions ({report.collector['alarm_messages']:,} received by the soak)"
            )
    _say(
        f"soak: {len(beds)} beds, {total['expected']} expected alarm transitions: "
        f"{total['met']} met, {total['missed']} missed, {total['late']} late, "
        f"{total['wrong']} wrong; {total['false']} false of {total['no_alarm']} no-alarm checks; "
        f"{report.collector['alarm_messages']} alarm messages; {report.wall_s:.1f} s wall"
    )
    if args.report:
        Path(args.report).write_text(json.dumps(report.as_dict(), indent=2) + "\n")
        _say(f"soak: report written to {args.report}")
    if report.missed_beds:
        _say("soak: MISSED expected alarms on " + ", ".join(r.key for r in report.missed_beds))
        return EXIT_MISSED
    if args.strict and report.problem_beds:
        _say("soak: problems on " + ", ".join(r.key for r in report.problem_beds))
        return EXIT_MISSED
    return 0


def _cmd_clear(args: argparse.Namespace) -> int:
    units = {u.strip() for u in (args.units or "").split(",") if u.strip()}
    prefix = args.unit_prefix
    if not units and not prefix:
        raise WardError("clear: give --units or --unit-prefix")

    def wanted(unit: str) -> bool:
        return unit in units or (bool(prefix) and unit.startswith(prefix))

    topics = retained_topics(args.broker, args.root, wanted, max_s=args.max_wait)
    n = clear_retained(args.broker, topics)
    _say(f"streamproc-sim: cleared {n} retained topics under {args.root}/")
    return 0


# --------------------------------------------------------------------------- parser


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="streamproc-sim",
        description="Simulated ICU beds (scenario files) and real WFDB records as streamproc's "
        "wire messages: to an MQTT broker, paced, or to a recording for streamproc replay; "
        "and soak tests of a live service against the scenarios' ground truth.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    pb = sub.add_parser(
        "publish",
        help="a ward of simulated beds, to a broker (paced) or to a recording file",
        description="Builds a ward: --beds beds, scenarios chosen by --mix weights (default "
        "every file in config/scenarios, equally), ids {unit}/bed001.. with 20 beds a unit, "
        "seed SEED + bed index. With --broker, publishes in time order, SPEED times faster "
        "than real time (t0 = now); with --out, writes the recording and exits.",
    )
    _add_ward_options(pb, soak=False)
    _add_broker_options(pb, required=False)
    pb.add_argument("--out", metavar="FILE.jsonl", help="write a recording instead (- for stdout)")
    pb.add_argument(
        "--t0",
        type=_t0,
        help="data time of the start: now, scenario or epoch seconds (default: now with "
        "--broker, the scenarios' own with --out)",
    )
    pb.set_defaults(func=_cmd_publish)

    rc = sub.add_parser(
        "record",
        help="a WFDB record as a recording (abp chunks, NaN runs as gaps)",
        description="Reads one channel of a WFDB record and writes it as abp chunks "
        "(split around missing samples) plus the chosen context messages.",
    )
    _add_record_options(rc)
    rc.add_argument("--out", required=True, metavar="FILE.jsonl", help="recording (- for stdout)")
    rc.add_argument(
        "--t0",
        type=_t0,
        help="record (default: its base time if 2000..2200, else a fixed time), now, or epoch s",
    )
    rc.set_defaults(func=_cmd_record)

    pr = sub.add_parser(
        "publish-record",
        help="a WFDB record to a broker, paced",
        description="As 'record', published to a broker at --speed (t0 = now by default).",
    )
    _add_record_options(pr)
    _add_broker_options(pr, required=True)
    pr.add_argument("--t0", type=_t0, help="now (default), record, or epoch seconds")
    pr.set_defaults(func=_cmd_publish_record)

    sk = sub.add_parser(
        "soak",
        help="publish a ward to a live service and check every bed's alarms",
        description="Subscribes to {root}/+/+/alarms/# (retained messages are ignored), "
        "publishes the ward on fresh unit ids, waits --grace seconds after the end, checks "
        "every bed with simulators.scenario.check and prints per scenario: beds, expected, "
        "met, missed, late, wrong, false. A streamproc service must be running against the "
        "broker, or use --spawn-service. Exits 1 if an expected alarm was missed.",
    )
    _add_ward_options(sk, soak=True)
    _add_broker_options(sk, required=True)
    sk.add_argument(
        "--spawn-service",
        action="store_true",
        help="start 'python -m streamproc run' for the soak's units and stop it at the end",
    )
    sk.add_argument(
        "--service-set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a setting for the spawned service (repeatable)",
    )
    sk.add_argument(
        "--grace",
        type=float,
        default=5.0,
        help="seconds to wait for late alarms after the last message (default 5)",
    )
    sk.add_argument(
        "--sample-s",
        type=float,
        default=60.0,
        help="with --spawn-service: sample its RSS and /metrics every SAMPLE_S s (default 60)",
    )
    sk.add_argument(
        "--warmup-s",
        type=float,
        default=0.0,
        help="memory growth is counted from the first sample after WARMUP_S s (default 0)",
    )
    sk.add_argument("--report", metavar="FILE.json", help="write the full report as JSON")
    sk.add_argument(
        "--keep-retained",
        action="store_true",
        help="leave the run's retained alarm, patient and infusion topics on the broker",
    )
    sk.add_argument(
        "--strict", action="store_true", help="exit 1 on any problem, not only a missed alarm"
    )
    sk.set_defaults(func=_cmd_soak)

    cl = sub.add_parser(
        "clear",
        help="empty the retained topics of some units (after a soak with --keep-retained)",
    )
    cl.add_argument("--broker", required=True, type=_broker_url, metavar="URL")
    cl.add_argument("--root", default="icu")
    cl.add_argument("--units", metavar="U1,U2", help="these units")
    cl.add_argument("--unit-prefix", metavar="PREFIX", help="every unit whose id starts so")
    cl.add_argument(
        "--max-wait", type=float, default=30.0, help="most seconds to collect retained topics"
    )
    cl.set_defaults(func=_cmd_clear)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args))
    except (WardError, RecordError) as exc:
        _say(f"streamproc-sim: {exc}", err=True)
        return EXIT_USAGE
    except SimError as exc:
        _say(f"streamproc-sim: {exc}", err=True)
        return EXIT_FAILED
    except KeyboardInterrupt:
        _say("streamproc-sim: interrupted", err=True)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
