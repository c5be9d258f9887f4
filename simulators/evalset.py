"""The labelled evaluation set for ``streamproc evaluate``: scenarios x seeds, plus real records.

    python -m simulators.evalset --out evalset --seeds 10
    streamproc evaluate evalset --report evalset.html

For every scenario of ``config/scenarios`` and every seed ``k`` it writes
``NAME-seedKK.jsonl`` (a one-bed recording) and ``NAME-seedKK.truth.json``
(its ground truth); for every labels file of ``config/labels`` the real record
it names, converted the same way. Nothing generated is committed: the
generator and the labels are.

Seed ``k`` renders the scenario with waveform seed ``scenario.seed + 1000 k``
(beat timing, respiratory swing, noise) and lays 0-3 random line artifacts
(kinds and lengths below) over its waveform. Artifacts are placed **outside**
the true episodes, at least ``margin_s`` (30 s) from their edges, and apart
from each other: the truth stays exact (an artifact inside an episode would
remove the valid data the alarm needs, and whether the processor "should"
then alarm is not defined), so sensitivity measures detection and the
artifacts measure false and technical alarms. The truth lists every artifact
(the scenario's own and the random ones); an alarm raised inside one is false.

Truth of a scenario (:func:`scenario_truth`): the true pressure is the
``[[pressure]]`` knots, linear in between, with MAP = DBP + (SBP - DBP) / 3 at
every instant. The generator's beats have an area-MAP 0.7-2.5 mmHg above that
(measured over its beat shape at the scenarios' pressures and rates), so the
truth errs on the side of "below target"; every scenario's level is at least
2 mmHg from its target. The target is the protocol's for the patient (profile, age,
explicit ``map_target``/``sbp_target``; default settings, SBP for trauma). A
true episode is a stretch below the target that lasts at least the protocol's
hold (60 s) or that holds MAP < 50 mmHg for 15 s (the critical fast path),
within the data the bed sends.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import zlib
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Final

import numpy as np

from simulators.scenario import Scenario, load_scenario, render, scenario_dir, to_jsonl
from streamproc.apps.evaluation.evaluate import (
    BedTruth,
    EvaluateError,
    Recording,
    Span,
    Truth,
    default_min_episode_s,
    labels_recording,
    protocol_target,
    write_truth,
)
from streamproc.core.protocol.settings import HypotensionSettings

__all__ = [
    "ARTIFACT_LENGTHS",
    "build_evalset",
    "labels_dir",
    "main",
    "random_artifacts",
    "scenario_file_recording",
    "scenario_recording",
    "scenario_truth",
]

#: Length range (s) of each random artifact kind.
ARTIFACT_LENGTHS: Final[dict[str, tuple[float, float]]] = {
    "flush": (2.0, 5.0),
    "sampling": (8.0, 25.0),
    "overdamped": (15.0, 40.0),
    "underdamped": (10.0, 30.0),
    "zeroing": (8.0, 25.0),
    "disconnect": (10.0, 45.0),
    "calibration": (10.0, 30.0),
    "clot": (20.0, 45.0),
    "gap": (2.0, 20.0),
}
_GRID_S: Final = 0.05
_SEED_STRIDE: Final = 1000


def labels_dir() -> Path:
    """``config/labels`` of this checkout."""
    return Path(__file__).resolve().parent.parent / "config" / "labels"


def _data_end(sc: Scenario) -> float:
    return sc.duration_s if sc.silent_after_s is None else min(sc.duration_s, sc.silent_after_s)


def _runs(mask: np.ndarray) -> list[tuple[int, int]]:
    """``[a, b)`` index runs where ``mask`` is true."""
    edges = np.flatnonzero(np.diff(np.concatenate(([0], mask.astype(np.int8), [0]))))
    return list(zip(edges[::2].tolist(), edges[1::2].tolist(), strict=True))


def scenario_truth(sc: Scenario, *, min_episode_s: float | None = None) -> BedTruth:
    """The true episodes of a scenario, from its pressure knots (see the module's docstring)."""
    hold = default_min_episode_s() if min_episode_s is None else min_episode_s
    hs = HypotensionSettings()
    end = _data_end(sc)
    t = np.arange(0.0, end + 1e-9, _GRID_S)
    kt = np.array([k[0] for k in sc.knots])
    sbp = np.interp(t, kt, np.array([k[1] for k in sc.knots]))
    dbp = np.interp(t, kt, np.array([k[2] for k in sc.knots]))
    mean = dbp + (sbp - dbp) / 3.0
    below = np.zeros(t.size, dtype=bool)
    patient: dict[str, object] = {}
    first: tuple[str, str, float] | None = None
    changes = [(0.0, dict[str, object]())] + [
        (et, payload) for et, kind, payload in sc.events if kind == "patient"
    ]
    for i, (et, payload) in enumerate(changes):
        patient.update(payload)
        profile, metric, target = protocol_target(
            _opt_str(patient.get("profile")),
            age=_opt_float(patient.get("age")),
            map_target=_opt_float(patient.get("map_target")),
            sbp_target=_opt_float(patient.get("sbp_target")),
        )
        if et <= 0.0 or first is None:
            first = (profile, metric, target)
        nxt = changes[i + 1][0] if i + 1 < len(changes) else float("inf")
        sel = (t >= et) & (t < nxt)
        below[sel] = (mean if metric == "map" else sbp)[sel] < target
    critical = mean < hs.critical_map
    episodes = []
    for a, b in _runs(below):
        long_enough = (b - a) * _GRID_S >= hold - 1e-9
        crit = any((d - c) * _GRID_S >= hs.critical_hold_s - 1e-9 for c, d in _runs(critical[a:b]))
        if long_enough or crit:
            episodes.append(
                Span(round(float(t[a]), 2), round(min(float(t[b - 1]) + _GRID_S, end), 2))
            )
    profile, metric, target = first or protocol_target(None)
    return BedTruth(
        unit=sc.unit,
        bed=sc.bed,
        scenario=sc.name,
        source="synthetic",
        profile=profile,
        metric=metric,
        target=target,
        t0=sc.t0,
        duration_s=sc.duration_s,
        episodes=episodes,
        artifacts=[Span(round(s, 3), round(s + d, 3), kind=kind) for kind, s, d in sc.artifacts],
    )


def _opt_str(v: object) -> str | None:
    return None if v is None else str(v)


def _opt_float(v: object) -> float | None:
    return None if v is None else float(v)  # type: ignore[arg-type]


def random_artifacts(
    sc: Scenario,
    truth: BedTruth,
    rng: np.random.Generator,
    *,
    max_count: int = 3,
    margin_s: float = 30.0,
    spacing_s: float = 5.0,
) -> tuple[tuple[str, float, float], ...]:
    """0..``max_count`` random ``(kind, start_s, duration_s)`` away from the episodes."""
    if not sc.waveform or max_count <= 0:
        return ()
    end = _data_end(sc)
    busy = [(e.start_s - margin_s, e.end_s + margin_s) for e in truth.episodes]
    busy += [(a.start_s - spacing_s, a.end_s + spacing_s) for a in truth.artifacts]
    kinds = sorted(ARTIFACT_LENGTHS)
    out: list[tuple[str, float, float]] = []
    for _ in range(int(rng.integers(0, max_count + 1))):
        kind = kinds[int(rng.integers(len(kinds)))]
        lo, hi = ARTIFACT_LENGTHS[kind]
        dur = round(float(rng.uniform(lo, hi)), 1)
        for _try in range(50):
            start = round(float(rng.uniform(5.0, end - dur - 5.0)), 1) if end - dur > 10 else -1.0
            if start < 0:
                break
            stop = start + dur
            if all(stop <= b0 or start >= b1 for b0, b1 in busy):
                out.append((kind, start, dur))
                busy.append((start - spacing_s, stop + spacing_s))
                break
    return tuple(sorted(out, key=lambda a: a[1]))


def scenario_recording(
    sc: Scenario,
    *,
    name: str | None = None,
    min_episode_s: float | None = None,
    root: str = "icu",
) -> Recording:
    """A scenario rendered in memory, with its truth."""
    label = name or sc.name
    truth = scenario_truth(sc, min_episode_s=min_episode_s)
    lines = to_jsonl(render(sc, root=root)).splitlines()
    return Recording(name=label, lines=lines, truth=Truth(recording=label, beds=[truth]))


def scenario_file_recording(
    path: str | Path, *, min_episode_s: float | None = None, root: str = "icu"
) -> Recording:
    """A scenario TOML file, rendered in memory (as committed: its own seed and artifacts)."""
    try:
        sc = load_scenario(path)
    except (OSError, KeyError, ValueError, TypeError) as exc:
        raise EvaluateError(f"{path}: not a usable scenario: {exc!r}") from None
    rec = scenario_recording(sc, min_episode_s=min_episode_s, root=root)
    rec.path = str(path)
    return rec


def seeded(sc: Scenario, k: int, *, max_artifacts: int = 3) -> Scenario:
    """Seed ``k`` of a scenario: another waveform seed and random artifacts."""
    rng = np.random.default_rng([k, zlib.crc32(sc.name.encode())])
    base = dataclasses.replace(sc, seed=sc.seed + _SEED_STRIDE * k)
    extra = random_artifacts(base, scenario_truth(base), rng, max_count=max_artifacts)
    return dataclasses.replace(base, artifacts=base.artifacts + extra)


def build_evalset(
    out: str | Path,
    *,
    seeds: int = 10,
    scenarios: Sequence[str | Path] | None = None,
    labels: Sequence[str | Path] | None = None,
    max_artifacts: int = 3,
    root: str = "icu",
    on_file: Callable[[Path], None] | None = None,
) -> list[Path]:
    """Write the evaluation set into ``out``; returns the recordings written."""
    dest = Path(out)
    dest.mkdir(parents=True, exist_ok=True)
    paths = sorted(scenario_dir().glob("*.toml")) if scenarios is None else list(scenarios)
    label_files = sorted(labels_dir().glob("*.toml")) if labels is None else list(labels)
    written: list[Path] = []

    def save(rec: Recording) -> None:
        jsonl = dest / f"{rec.name}.jsonl"
        jsonl.write_bytes(b"".join(line + b"\n" for line in rec.lines))
        write_truth(dest / f"{rec.name}.truth.json", rec.truth)
        written.append(jsonl)
        if on_file is not None:
            on_file(jsonl)

    for p in paths:
        base = load_scenario(p)
        for k in range(seeds):
            sc = seeded(base, k, max_artifacts=max_artifacts)
            save(scenario_recording(sc, name=f"{base.name}-seed{k:02d}", root=root))
    for lp in label_files:
        save(labels_recording(lp, root=root))
    return written


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m simulators.evalset --out DIR [--seeds N]``."""
    parser = argparse.ArgumentParser(
        prog="python -m simulators.evalset",
        description="Write the labelled evaluation set (recordings + truth) for streamproc "
        "evaluate: every scenario under several seeds with random artifacts, and the real "
        "records named by config/labels.",
    )
    parser.add_argument("--out", required=True, help="output directory")
    parser.add_argument("--seeds", type=int, default=10, help="seeds per scenario (default 10)")
    parser.add_argument(
        "--scenario", action="append", help="only these scenario files (default: all)"
    )
    parser.add_argument(
        "--labels", action="append", help="only these labels files (default: config/labels)"
    )
    parser.add_argument("--no-real", action="store_true", help="leave the real records out")
    parser.add_argument(
        "--max-artifacts", type=int, default=3, help="random artifacts per recording, 0..N"
    )
    args = parser.parse_args(argv)
    try:
        written = build_evalset(
            args.out,
            seeds=args.seeds,
            scenarios=args.scenario,
            labels=[] if args.no_real else args.labels,
            max_artifacts=args.max_artifacts,
        )
    except (EvaluateError, OSError) as exc:
        sys.stderr.write(f"simulators.evalset: {exc}\n")
        return 2
    sys.stderr.write(f"simulators.evalset: {len(written)} recordings in {args.out}\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
