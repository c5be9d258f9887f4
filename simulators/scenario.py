"""Scenarios as data: a patient's pressures, drugs and artifacts over time, with ground truth.

A scenario file (TOML, in ``config/scenarios/``) describes one bed:

```toml
name = "ne_60_40"
duration_s = 240
[patient]            # the retained patient message at t = 0 (optional)
profile = "standard"
[[pressure]]         # knots of the SBP/DBP/HR trajectory, linear between them
t = 0
sbp = 112
dbp = 68
hr = 88
[[infusion]]         # infusion messages at time t
t = 0
drug = "norepinephrine"
rate = 0.35
unit = "mcg/kg/min"
[[artifact]]         # artifacts laid over the waveform
kind = "flush"
start_s = 100
duration_s = 2
[[expect]]           # ground truth: an alarm transition expected in a window
kind = "hypotension"
state = "active"
priority = "high"
after_s = 30
before_s = 120
```

``render`` turns a scenario into recording lines (the wire contract's JSON
Lines), waveform chunks and context messages in time order.
"""

from __future__ import annotations

import argparse
import sys
import tomllib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec
import numpy as np

from simulators.waveform import apply_artifact, synthesize_abp
from streamproc.wire.recordings import DEFAULT_T0

__all__ = [
    "Expectation",
    "Scenario",
    "check",
    "chunk_runs",
    "load_scenario",
    "merge",
    "render",
    "render_timed",
    "scenario_dir",
    "to_jsonl",
    "ward_timed",
]

_KINDS = ("infusion", "labs", "patient", "vitals", "ack")


def scenario_dir() -> Path:
    """``config/scenarios`` of this checkout."""
    return Path(__file__).resolve().parent.parent / "config" / "scenarios"


@dataclass(frozen=True, slots=True)
class Expectation:
    """One expected alarm transition (or, with ``state = "none"``, its absence)."""

    kind: str
    state: str = "active"
    priority: str | None = None
    after_s: float = 0.0
    before_s: float = float("inf")
    step: str | None = None
    contains: str | None = None


@dataclass(frozen=True, slots=True)
class Scenario:
    """One bed's story, ready to render."""

    name: str
    duration_s: float
    knots: tuple[tuple[float, float, float, float], ...]
    unit: str = "ward7"
    bed: str = "bed01"
    fs: float = 125.0
    seed: int = 0
    chunk_s: float = 1.0
    t0: float = DEFAULT_T0
    af: bool = False
    noise_mmhg: float = 0.3
    waveform: bool = True
    #: Monitor numerics to send as ``vitals``: None, "art" (continuous) or "nibp" (cuff).
    numerics: str | None = None
    numerics_every_s: float = 2.0
    silent_after_s: float | None = None
    description: str = ""
    events: tuple[tuple[float, str, dict[str, Any]], ...] = ()
    artifacts: tuple[tuple[str, float, float], ...] = ()
    expect: tuple[Expectation, ...] = field(default_factory=tuple)


def load_scenario(path: str | Path, **overrides: Any) -> Scenario:
    """Read a scenario file; keyword arguments override its top-level values."""
    with Path(path).open("rb") as fh:
        data = tomllib.load(fh)
    data.update(overrides)
    knots = tuple(
        (float(k["t"]), float(k["sbp"]), float(k["dbp"]), float(k.get("hr", 85.0)))
        for k in data.get("pressure", [])
    )
    events: list[tuple[float, str, dict[str, Any]]] = []
    if "patient" in data:
        events.append((float(data["patient"].pop("t", 0.0)), "patient", data["patient"]))
    for kind in _KINDS:
        if kind == "patient":
            continue
        for raw in data.get(kind, []):
            item = dict(raw)
            events.append((float(item.pop("t")), kind, item))
    events.extend(
        (float(p.pop("t")), "patient", p) for p in (dict(x) for x in data.get("patient_update", []))
    )
    return Scenario(
        name=str(data.get("name", Path(path).stem)),
        description=str(data.get("description", "")),
        duration_s=float(data["duration_s"]),
        knots=knots,
        unit=str(data.get("unit", "ward7")),
        bed=str(data.get("bed", "bed01")),
        fs=float(data.get("fs", 125.0)),
        seed=int(data.get("seed", 0)),
        chunk_s=float(data.get("chunk_s", 1.0)),
        t0=float(data.get("t0", DEFAULT_T0)),
        af=bool(data.get("af", False)),
        noise_mmhg=float(data.get("noise_mmhg", 0.3)),
        waveform=bool(data.get("waveform", True)),
        numerics=data.get("numerics"),
        numerics_every_s=float(data.get("numerics_every_s", 2.0)),
        silent_after_s=data.get("silent_after_s"),
        events=tuple(sorted(events, key=lambda e: e[0])),
        artifacts=tuple(
            (str(a["kind"]), float(a["start_s"]), float(a["duration_s"]))
            for a in data.get("artifact", [])
        ),
        expect=tuple(Expectation(**e) for e in data.get("expect", [])),
    )


def _trajectory(knots: tuple[tuple[float, float, float, float], ...], col: int) -> Any:
    ts = np.array([k[0] for k in knots])
    vs = np.array([k[col] for k in knots])

    def f(t: np.ndarray) -> np.ndarray:
        return np.asarray(np.interp(t, ts, vs), dtype=np.float64)

    return f


def waveform(sc: Scenario) -> np.ndarray:
    """The scenario's ABP samples (NaN where a gap artifact removes them)."""
    x = synthesize_abp(
        duration_s=sc.duration_s,
        sbp=_trajectory(sc.knots, 1),
        dbp=_trajectory(sc.knots, 2),
        hr=_trajectory(sc.knots, 3),
        fs=sc.fs,
        seed=sc.seed,
        af=sc.af,
        noise_mmhg=sc.noise_mmhg,
    )
    for i, (kind, start, dur) in enumerate(sc.artifacts):
        x = apply_artifact(
            x, fs=sc.fs, kind=kind, start_s=start, duration_s=dur, seed=sc.seed * 1000 + i
        )
    return x


def render(sc: Scenario, root: str = "icu") -> list[dict[str, Any]]:
    """Recording lines (``{"topic", "payload"}`` dicts) in time order."""
    return [line for _, _, line in render_timed(sc, root)]


def merge(*scenarios: Scenario, root: str = "icu") -> list[dict[str, Any]]:
    """Several beds' recordings interleaved in time order (for ward recordings)."""
    timed: list[tuple[float, int, dict[str, Any]]] = []
    for sc in scenarios:
        timed.extend((sc.t0 + t, k, line) for t, k, line in render_timed(sc, root))
    timed.sort(key=lambda e: (e[0], e[1]))
    return [line for _, _, line in timed]


def render_timed(sc: Scenario, root: str = "icu") -> list[tuple[float, int, dict[str, Any]]]:
    """Recording lines with the scenario time (s) at which each is sent."""
    timed: list[tuple[float, int, dict[str, Any]]] = []
    prefix = f"{root}/{sc.unit}/{sc.bed}"
    end = sc.duration_s if sc.silent_after_s is None else min(sc.duration_s, sc.silent_after_s)
    for t, kind, payload in sc.events:
        if t > end:
            continue
        timed.append((t, 0, {"topic": f"{prefix}/{kind}", "payload": {"ts": sc.t0 + t, **payload}}))
    if sc.numerics is not None and sc.knots:
        if sc.numerics not in ("art", "nibp"):
            raise ValueError(f"{sc.name}: numerics must be 'art' or 'nibp', got {sc.numerics!r}")
        sbp_f, dbp_f, hr_f = (_trajectory(sc.knots, c) for c in (1, 2, 3))
        times = np.arange(0.0, end + 1e-9, sc.numerics_every_s)
        sbp, dbp, hr = sbp_f(times), dbp_f(times), hr_f(times)
        for t, s_, d_, h_ in zip(times, sbp, dbp, hr, strict=True):
            vitals: dict[str, Any] = {
                "ts": round(sc.t0 + float(t), 3),
                "source": sc.numerics,
                "sbp": round(float(s_)),
                "dbp": round(float(d_)),
                "hr": round(float(h_)),
            }
            if sc.numerics == "art":
                vitals["map"] = round(float(d_ + (s_ - d_) / 3.0))
            timed.append((float(t), 1, {"topic": f"{prefix}/vitals", "payload": vitals}))
    if sc.waveform and sc.knots:
        x = waveform(sc)
        n_end = min(x.size, round(end * sc.fs))
        for a, b in chunk_runs(~np.isnan(x[:n_end]), max(1, round(sc.chunk_s * sc.fs))):
            payload = {
                "t0": round(sc.t0 + float(a) / sc.fs, 6),
                "fs": sc.fs,
                "samples": [round(float(v), 2) for v in x[a:b]],
            }
            timed.append((float(b) / sc.fs, 1, {"topic": f"{prefix}/abp", "payload": payload}))
    timed.sort(key=lambda e: (e[0], e[1]))
    return timed


def chunk_runs(valid: np.ndarray, n_chunk: int) -> Iterator[tuple[int, int]]:
    """Sample ranges ``[a, b)`` of the waveform chunks: ``n_chunk`` samples each,
    split around invalid samples (a gap inside a chunk makes each run its own chunk)."""
    for i in range(0, valid.size, n_chunk):
        good = valid[i : i + n_chunk]
        if not good.any():
            continue
        edges = np.flatnonzero(np.diff(np.concatenate(([0], good.astype(np.int8), [0]))))
        for a, b in zip(edges[::2].tolist(), edges[1::2].tolist(), strict=True):
            yield i + a, i + b


def to_jsonl(lines: list[dict[str, Any]]) -> bytes:
    """The recording as bytes (one JSON object per line)."""
    enc = msgspec.json.Encoder()
    return b"".join(enc.encode(line) + b"\n" for line in lines)


def check(sc: Scenario, alarms: list[dict[str, Any]]) -> list[str]:
    """Compare alarm payloads of this scenario's bed with its ground truth.

    Returns the problems found (empty when every expectation holds): a
    missing or late transition, or one that should not have happened.
    """
    mine = [a for a in alarms if a.get("unit") == sc.unit and a.get("bed") == sc.bed]
    problems: list[str] = []
    for exp in sc.expect:
        same_kind = [a for a in mine if a["kind"] == exp.kind]
        if exp.state == "none":
            if same_kind:
                first = same_kind[0]
                problems.append(
                    f"{sc.name}: unexpected {exp.kind} {first['state']} at "
                    f"t={first['ts'] - sc.t0:.1f} s"
                )
            continue
        hits = [
            a
            for a in same_kind
            if a["state"] == exp.state and (exp.priority is None or a["priority"] == exp.priority)
        ]
        if not hits:
            seen = sorted({(a["state"], a["priority"]) for a in same_kind})
            problems.append(
                f"{sc.name}: missed {exp.kind} {exp.state} {exp.priority or ''}"
                f" (saw {seen or 'nothing'})"
            )
            continue
        t = hits[0]["ts"] - sc.t0
        if not exp.after_s <= t <= exp.before_s:
            problems.append(
                f"{sc.name}: {exp.kind} {exp.state} at t={t:.1f} s, expected within "
                f"[{exp.after_s:g}, {exp.before_s:g}] s"
            )
        if exp.step is not None and hits[0].get("step") != exp.step:
            problems.append(f"{sc.name}: step {hits[0].get('step')!r}, expected {exp.step!r}")
        if exp.contains is not None and exp.contains not in str(hits[0].get("recommendation")):
            problems.append(f"{sc.name}: recommendation lacks {exp.contains!r}")
    return problems


def ward_timed(
    scenarios: Sequence[Scenario], root: str = "icu"
) -> list[tuple[float, int, dict[str, Any]]]:
    """Beds that start together: their lines merged by scenario time (s), as ``render_timed``."""
    timed = [entry for sc in scenarios for entry in render_timed(sc, root)]
    timed.sort(key=lambda e: (e[0], e[1]))
    return timed


def main(argv: list[str] | None = None) -> int:
    """``python -m simulators.scenario FILE.toml [--out F.jsonl]``: render a recording."""
    parser = argparse.ArgumentParser(
        prog="python -m simulators.scenario",
        description="Render a scenario file into a recording (JSON Lines) for streamproc replay.",
    )
    parser.add_argument("scenario", nargs="+", help="scenario TOML file(s); several make a ward")
    parser.add_argument("--out", help="output file (default: standard output)")
    parser.add_argument("--seed", type=int, help="override the scenarios' seeds")
    parser.add_argument("--root", default="icu", help="topic root (default: icu)")
    parser.add_argument("--unit", help="override the scenarios' unit")
    parser.add_argument(
        "--bed", action="append", help="override the beds: one per scenario file, in order"
    )
    parser.add_argument("--t0", type=float, help="override the scenarios' start (epoch s)")
    parser.add_argument(
        "--timed",
        action="store_true",
        help="write [t, line] per line, t the scenario time (s) at which it is sent, the "
        "beds starting together (streamproc demo)",
    )
    args = parser.parse_args(argv)
    if args.bed is not None and len(args.bed) != len(args.scenario):
        parser.error("--bed must be given once per scenario file")
    extra: dict[str, Any] = {"seed": args.seed, "unit": args.unit, "t0": args.t0}
    extra = {key: value for key, value in extra.items() if value is not None}
    beds = args.bed or [None] * len(args.scenario)
    scenarios = [
        load_scenario(p, **extra, **({} if bed is None else {"bed": bed}))
        for p, bed in zip(args.scenario, beds, strict=True)
    ]
    if args.timed:
        enc = msgspec.json.Encoder()
        data = b"".join(
            enc.encode((t, line)) + b"\n" for t, _, line in ward_timed(scenarios, args.root)
        )
    else:
        data = to_jsonl(merge(*scenarios, root=args.root))
    if args.out:
        Path(args.out).write_bytes(data)
    else:
        sys.stdout.buffer.write(data)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
