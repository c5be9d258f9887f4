"""Engine memory soak: is memory flat over a long run with many beds? (in-process, no broker)

    python benchmarks/soak_memory.py [--beds 1000] [--minutes 30] [--speed 0] [--sample-s 60]
                                     [--warmup-min 5] [--chunk-s 1] [--no-tracemalloc] [--smoke]
    python benchmarks/soak_memory.py --churn [--rounds 4] [--ids 50000] [--max-beds 2000]

``--churn`` measures id churn instead: the live service's per-message path
(``Ingress.process_batch``: decode, core, publish queue, audit-free) and its
tick and summary passes, in-process and without a broker (what would be
published is dropped), take ``--rounds`` x ``--ids`` bed ids never seen before
(one art-line reading each, every other one a dopamine infusion too, whose
advisory is an open alarm at once; 100 ids per batch, 0.1 s of processor time
apart, a tick every 1,000 ids: evictions close open alarms and empty their
retained topics) with ``service.max_beds``
= ``--max-beds``. After each round it prints the RSS and what the engine and
the service hold per bed (monitors, retained alarm states, summary keys):
flat means the evicted beds left nothing behind.

Drives one :class:`~streamproc.core.engine.Engine` in data-clock (replay) mode
with ``--beds`` beds of synthetic arterial pressure for ``--minutes`` of
*simulated* time, as fast as possible (``--speed 0``, the default) or paced at
``--speed`` times real time. Each bed gets one ``--chunk-s`` ABP chunk per
step, cut from one of a few pre-synthesized waveforms (normotensive,
hypotensive 60/40, borderline, with line artifacts), plus occasional NIBP
vitals, infusion changes, patient updates and labs; the engine is ticked every
simulated second. Acks are sent for every alarm raised, so alarms go through
their whole life.

The bounded per-bed containers take a while to fill: the display trend keeps
``trend_points`` x ``trend_step_s`` (60 x 30 s = 30 min by default), and each bed
can hold one open alarm per kind. Growth measured before they are full is
filling, not a leak: use a warm-up of 30 min or more to judge flatness.

After ``--warmup-min`` of simulated time, every ``--sample-s`` of simulated
time it samples the process RSS (psutil) and the ``tracemalloc`` current size,
and prints the series, the growth from the first post-warm-up sample to the
last (in %), and the memory per bed (KB).

The broker-level soak (the whole service over MQTT) is ``streamproc-sim soak``;
this one isolates the engine.

``--smoke`` is a ~20 s configuration for CI (40 beds, 20 simulated minutes, a
sample every 60 s after a 10-minute warm-up); with ``--json`` the result is
printed as one JSON object too.
"""

from __future__ import annotations

import argparse
import gc
import json
import sys
import time
import tracemalloc
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import psutil

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from simulators.waveform import apply_artifact, synthesize_abp
from streamproc.core.engine import Batch, Engine
from streamproc.core.monitor import Clock
from streamproc.core.protocol.alarms import AlarmEvent, AlarmState, Trigger
from streamproc.core.protocol.messages import (
    AbpChunk,
    Ack,
    BedId,
    Drug,
    Infusion,
    Labs,
    Patient,
    Profile,
    RateUnit,
    Vitals,
    VitalsSource,
)

T0 = 1_732_400_000.0
FS = 125.0
TEMPLATE_S = 240.0


@dataclass
class SoakResult:
    beds: int
    minutes: float
    wall_s: float
    samples_fed: int
    events: int
    alarms_raised: int
    beds_in_engine: int
    series: list[dict[str, float]] = field(default_factory=list)
    rss_growth_pct: float = 0.0
    traced_growth_pct: float = 0.0
    rss_per_bed_kb: float = 0.0
    traced_per_bed_kb: float = 0.0


def templates() -> list[np.ndarray]:
    """A few waveforms the beds cycle through (each TEMPLATE_S long)."""
    n = TEMPLATE_S
    normal = synthesize_abp(duration_s=n, sbp=120.0, dbp=70.0, fs=FS, seed=1)
    hypo = synthesize_abp(duration_s=n, sbp=60.0, dbp=40.0, fs=FS, hr=110.0, seed=2)
    # normotensive, then a long dip below 65, then back up
    dip = synthesize_abp(
        duration_s=n,
        sbp=lambda t: np.where((t > 40) & (t < 160), 80.0, 115.0),
        dbp=lambda t: np.where((t > 40) & (t < 160), 48.0, 68.0),
        fs=FS,
        seed=3,
    )
    art = synthesize_abp(duration_s=n, sbp=110.0, dbp=65.0, fs=FS, seed=4)
    for i, kind in enumerate(("flush", "sampling", "zeroing", "disconnect", "clot")):
        art = apply_artifact(
            art, fs=FS, kind=kind, start_s=10.0 + 45.0 * i, duration_s=20.0, seed=i
        )
    hypo_art = apply_artifact(hypo, fs=FS, kind="calibration", start_s=100.0, duration_s=40.0)
    return [
        np.clip(x, -100.0, 500.0).astype(np.float64) for x in (normal, hypo, dip, art, hypo_art)
    ]


def rss_bytes() -> int:
    return int(psutil.Process().memory_info().rss)


def _context(
    phase: int, b: int, k: int, ts: float, *, profiles: list[Profile], drugs: list[Drug]
) -> list[Patient | Infusion | Labs | Vitals]:
    """Bed ``b``'s context messages at step ``k``: spread over the beds and time."""
    if phase == 0:
        return [Patient(ts, profile=profiles[b % len(profiles)], weight_kg=70.0 + b % 30)]
    if phase == 100:
        # NE always; one other drug at a time, the previous one stopped
        cycle = k // 600
        prev = drugs[(cycle - 1 + b) % len(drugs)]
        drug = drugs[(cycle + b) % len(drugs)]
        out: list[Patient | Infusion | Labs | Vitals] = []
        for d, on in ((prev, False), (Drug.NOREPINEPHRINE, True), (drug, True)):
            unit = RateUnit.U_MIN if d is Drug.VASOPRESSIN else RateUnit.MCG_KG_MIN
            rate = 0.03 if d is Drug.VASOPRESSIN else 0.05 * (1 + cycle % 4)
            out.append(Infusion(ts, d, rate, unit, running=on))
        return out
    if phase == 200:
        return [Labs(ts, lactate=1.0 + (k // 600) % 4, urine_ml_kg_h=0.4)]
    if phase == 300:
        return [Vitals(ts, VitalsSource.NIBP, sbp=100.0, dbp=60.0, hr=80.0)]
    return []


def run(
    *,
    beds: int,
    minutes: float,
    speed: float = 0.0,
    sample_s: float = 60.0,
    warmup_min: float = 5.0,
    chunk_s: float = 1.0,
    trace: bool = True,
    quiet: bool = False,
) -> SoakResult:
    tpl = templates()
    n_tpl = tpl[0].size
    per_chunk = round(chunk_s * FS)
    bed_ids = [BedId("soak", f"bed{i:05d}") for i in range(beds)]
    # each bed: a template and an offset into it (so beds are not in lockstep)
    rng = np.random.default_rng(0)
    which = [i % len(tpl) for i in range(beds)]
    offset = [int(rng.integers(0, n_tpl // per_chunk)) * per_chunk for _ in range(beds)]
    engine = Engine(max_beds=max(beds, 1), clock=Clock.DATA)
    profiles = list(Profile)
    drugs = list(Drug)

    if trace:
        tracemalloc.start()
    total_s = minutes * 60.0
    steps = int(total_s / chunk_s)
    next_sample = warmup_min * 60.0
    next_tick = 1.0
    series: list[dict[str, float]] = []
    samples_fed = events = raised = 0
    wall0 = time.perf_counter()
    open_ids: dict[BedId, list[str]] = {}

    for k in range(steps):
        sim_t = k * chunk_s
        now_base = T0 + sim_t
        for b, bed in enumerate(bed_ids):
            x = tpl[which[b]]
            a = (offset[b] + k * per_chunk) % n_tpl
            piece = x[a : a + per_chunk]
            if piece.size < per_chunk:
                piece = np.concatenate((piece, x[: per_chunk - piece.size]))
            chunk = AbpChunk(now_base, FS, np.ascontiguousarray(piece))
            samples_fed += per_chunk
            out = engine.receive(Batch([(bed, chunk, chunk.ts)]))
            phase = (k + b) % 600
            ts = chunk.ts
            for message in _context(phase, b, k, ts, profiles=profiles, drugs=drugs):
                out += engine.receive(Batch([(bed, message, ts)]))
            events += len(out)
            raised += _raised(out, bed, open_ids)
            # acknowledge what was raised a little later
            if phase == 450 and bed in open_ids:
                for aid in open_ids.pop(bed):
                    engine.receive(Batch([(bed, Ack(ts, aid, by="soak"), ts)]))
        end_t = sim_t + chunk_s
        next_tick, n_events, n_raised = _ticks(engine, next_tick, end_t)
        events += n_events
        raised += n_raised
        if speed > 0:
            lag = end_t / speed - (time.perf_counter() - wall0)
            if lag > 0:
                time.sleep(lag)
        if end_t >= next_sample - 1e-9:
            series.append(_sample(engine, end_t, wall0, trace=trace, quiet=quiet))
            next_sample += sample_s

    wall = time.perf_counter() - wall0
    if trace:
        tracemalloc.stop()
    res = SoakResult(
        beds=beds,
        minutes=minutes,
        wall_s=round(wall, 1),
        samples_fed=samples_fed,
        events=events,
        alarms_raised=raised,
        beds_in_engine=len(engine),
        series=series,
    )
    if len(series) >= 1:
        _growth(res, series[0], series[-1], trace=trace)
    return res


def _raised(out: list[AlarmEvent], bed: BedId, open_ids: dict[BedId, list[str]]) -> int:
    """How many of ``out`` were raised; their ids are kept to be acknowledged later."""
    n = 0
    for ev in out:
        if ev.trigger is Trigger.RAISE:
            n += 1
            open_ids.setdefault(bed, []).append(ev.alarm_id)
    return n


def _ticks(engine: Engine, next_tick: float, end_t: float) -> tuple[float, int, int]:
    """The engine's 1-s ticks up to ``end_t``: the next tick's time, events, raised."""
    events = raised = 0
    while next_tick <= end_t:
        for ev in engine.tick(T0 + next_tick):
            events += 1
            if ev.state is AlarmState.ACTIVE and ev.trigger is Trigger.RAISE:
                raised += 1
        next_tick += 1.0
    return next_tick, events, raised


def _sample(
    engine: Engine, sim_t: float, wall0: float, *, trace: bool, quiet: bool
) -> dict[str, float]:
    """One row of the soak's memory series (after a full collection), printed unless quiet."""
    gc.collect()
    row = {
        "sim_min": round(sim_t / 60.0, 2),
        "wall_s": round(time.perf_counter() - wall0, 1),
        "rss_mb": round(rss_bytes() / 2**20, 2),
        "traced_mb": round(tracemalloc.get_traced_memory()[0] / 2**20, 2) if trace else 0.0,
        "beds": len(engine),
        "window_max": max((len(m.window) for m in engine.beds()), default=0),
        "open_alarms": sum(len(m.alarms) for m in engine.beds()),
    }
    if not quiet:
        print(
            f"  sim {row['sim_min']:7.2f} min  wall {row['wall_s']:7.1f} s  "
            f"rss {row['rss_mb']:9.2f} MB  traced {row['traced_mb']:9.2f} MB  "
            f"beds {row['beds']}  open alarms {row['open_alarms']}",
            flush=True,
        )
    return row


def _growth(
    res: SoakResult, first: dict[str, float], last: dict[str, float], *, trace: bool
) -> None:
    """The series' growth from its first row to its last, and the memory per bed."""
    res.rss_growth_pct = round(100.0 * (last["rss_mb"] / first["rss_mb"] - 1.0), 2)
    if trace and first["traced_mb"] > 0:
        res.traced_growth_pct = round(100.0 * (last["traced_mb"] / first["traced_mb"] - 1.0), 2)
    res.rss_per_bed_kb = round(last["rss_mb"] * 1024 / max(res.beds, 1), 2)
    res.traced_per_bed_kb = round(last["traced_mb"] * 1024 / max(res.beds, 1), 2)


#: An infusion that raises an advisory at once (dopamine running).
INFUSION = b'{"ts":%.3f,"drug":"dopamine","rate":5,"unit":"mcg/kg/min","running":true}'


@dataclass
class ChurnResult:
    rounds: int
    ids_per_round: int
    max_beds: int
    wall_s: float
    series: list[dict[str, float]] = field(default_factory=list)
    rss_growth_pct: float = 0.0


def churn(
    *, rounds: int = 4, ids: int = 50_000, max_beds: int = 2_000, quiet: bool = False
) -> ChurnResult:
    """``rounds`` x ``ids`` new bed ids through the service's path (see the module doc)."""
    import asyncio  # noqa: PLC0415 - only this mode needs the service
    import io  # noqa: PLC0415

    from streamproc.shell.config import load_config  # noqa: PLC0415
    from streamproc.shell.logs import configure_logging  # noqa: PLC0415
    from streamproc.shell.service import SLICE_BEDS, Service  # noqa: PLC0415
    from streamproc.shell.service.clock import Clock  # noqa: PLC0415
    from streamproc.shell.service.queues import Arrived  # noqa: PLC0415

    configure_logging(json=True, level="error", stream=io.StringIO())
    clock = [T0]
    cfg = load_config(
        environ={},
        overrides={
            "service.broker": "mqtt://127.0.0.1:1",  # never connected: nothing is published
            "service.max_beds": max_beds,
            "service.audit_db": "",
        },
    )
    svc = Service(cfg, clock=Clock(wall=lambda: clock[0]))
    engine = svc.engine

    def published() -> None:
        """What the publisher would have sent, sent."""
        svc.queues.outbox.clear()
        svc.queues.summary_box.clear()

    def tick() -> None:
        for events in engine.tick_slices(clock[0], SLICE_BEDS):
            svc.outbox.take(events)
        asyncio.run(svc.summaries.publish())
        published()

    series: list[dict[str, float]] = []
    wall0 = time.perf_counter()
    n = 0
    for r in range(rounds):
        for start in range(0, ids, 100):
            batch = []
            for i in range(start, min(start + 100, ids)):
                n += 1
                bed = f"icu/churn/r{r}b{i:06d}"
                body = b'{"ts":%.3f,"source":"art","sbp":120,"dbp":70}' % clock[0]
                batch.append(Arrived(f"{bed}/vitals", body, clock[0]))
                if i % 2:  # an open alarm at once (an advisory): its eviction closes it
                    body = INFUSION % clock[0]
                    batch.append(Arrived(f"{bed}/infusion", body, clock[0]))
            svc.ingress.process_batch(batch)
            clock[0] += 0.1
            if start % 1_000 == 0:
                tick()
        tick()
        gc.collect()
        row = {
            "round": r + 1,
            "ids": n,
            "wall_s": round(time.perf_counter() - wall0, 1),
            "rss_mb": round(rss_bytes() / 2**20, 2),
            "beds": len(engine),
            "evicted": engine.stats.beds_evicted,
            "alarms_evicted": engine.stats.alarms_evicted,
            "retained_beds": len(svc.outbox.retained),
            "summary_beds": len(svc.summaries.shown),
        }
        series.append(row)
        if not quiet:
            print("  " + "  ".join(f"{k} {v}" for k, v in row.items()), flush=True)
    res = ChurnResult(rounds, ids, max_beds, round(time.perf_counter() - wall0, 1), series)
    if len(series) >= 2:
        res.rss_growth_pct = round(100.0 * (series[-1]["rss_mb"] / series[0]["rss_mb"] - 1.0), 2)
    return res


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--beds", type=int, default=1000)
    p.add_argument("--minutes", type=float, default=30.0, help="simulated minutes")
    p.add_argument("--speed", type=float, default=0.0, help="x real time; 0 = as fast as possible")
    p.add_argument("--sample-s", type=float, default=60.0, help="simulated s between samples")
    p.add_argument("--warmup-min", type=float, default=5.0, help="simulated min before sampling")
    p.add_argument("--chunk-s", type=float, default=1.0)
    p.add_argument("--no-tracemalloc", action="store_true")
    p.add_argument("--smoke", action="store_true", help="~20 s run for CI")
    p.add_argument("--json", action="store_true", help="also print the result as JSON")
    p.add_argument("--churn", action="store_true", help="bed-id churn through the service path")
    p.add_argument("--rounds", type=int, default=4, help="--churn: rounds of new ids")
    p.add_argument("--ids", type=int, default=50_000, help="--churn: new ids per round")
    p.add_argument("--max-beds", type=int, default=2_000, help="--churn: service.max_beds")
    a = p.parse_args(argv)
    if a.churn:
        print(
            f"soak_memory --churn: {a.rounds} x {a.ids:,} new bed ids, max_beds {a.max_beds:,}",
            flush=True,
        )
        churned = churn(rounds=a.rounds, ids=a.ids, max_beds=a.max_beds)
        print(
            f"soak_memory --churn: wall {churned.wall_s} s, RSS growth round 1 -> "
            f"{a.rounds}: {churned.rss_growth_pct:+.2f}%"
        )
        if a.json:
            print(json.dumps(asdict(churned)))
        return 0
    if a.smoke:
        a.beds, a.minutes, a.warmup_min, a.sample_s = 40, 20.0, 10.0, 60.0
    print(
        f"soak_memory: {a.beds} beds x {a.minutes:g} simulated min, chunk {a.chunk_s:g} s, "
        f"warm-up {a.warmup_min:g} min, sample every {a.sample_s:g} s, "
        f"tracemalloc {'off' if a.no_tracemalloc else 'on'}",
        flush=True,
    )
    res = run(
        beds=a.beds,
        minutes=a.minutes,
        speed=a.speed,
        sample_s=a.sample_s,
        warmup_min=a.warmup_min,
        chunk_s=a.chunk_s,
        trace=not a.no_tracemalloc,
    )
    print(
        f"soak_memory: wall {res.wall_s} s, {res.samples_fed:,} samples "
        f"({res.samples_fed / max(res.wall_s, 1e-9):,.0f}/s), {res.events} events, "
        f"{res.alarms_raised} raised, {res.beds_in_engine} beds in engine"
    )
    print(
        f"soak_memory: growth first->last post-warm-up sample: RSS {res.rss_growth_pct:+.2f}%, "
        f"tracemalloc {res.traced_growth_pct:+.2f}%"
    )
    print(
        f"soak_memory: per bed: RSS {res.rss_per_bed_kb:.1f} KB (whole process / beds), "
        f"traced {res.traced_per_bed_kb:.1f} KB"
    )
    if a.json:
        print(json.dumps(asdict(res)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
