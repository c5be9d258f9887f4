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

Truth of a scenario (:func:`scenario_truth`) is streamproc's
:func:`streamproc.apps.evaluation.truth.pressure_truth` over its ``[[pressure]]``
knots and patient messages. The generator's beats have an area-MAP 0.7-2.5 mmHg
above the knots' MAP (measured over its beat shape at the scenarios' pressures
and rates), so the truth errs on the side of "below target"; every scenario's
level is at least 2 mmHg from its target.

``--as-committed`` writes each ``--scenario`` file as committed (its own seed
and artifacts) as ``NNNN.jsonl`` + ``NNNN.truth.json`` (``NNNN`` its position):
how ``streamproc evaluate`` renders scenario TOML files it is given.
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
from streamproc.apps.evaluation.truth import (
    BedTruth,
    EvaluateError,
    Recording,
    Span,
    Truth,
    labels_recording,
    pressure_truth,
    write_truth,
)

__all__ = [
    "ARTIFACT_LENGTHS",
    "build_evalset",
    "labels_dir",
    "main",
    "random_artifacts",
    "scenario_file_recording",
    "scenario_recording",
    "scenario_truth",
    "write_as_committed",
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
_SEED_STRIDE: Final = 1000


def labels_dir() -> Path:
    """``config/labels`` of this checkout."""
    return Path(__file__).resolve().parent.parent / "config" / "labels"


def _data_end(sc: Scenario) -> float:
    return sc.duration_s if sc.silent_after_s is None else min(sc.duration_s, sc.silent_after_s)


def scenario_truth(sc: Scenario, *, min_episode_s: float | None = None) -> BedTruth:
    """The true episodes of a scenario, from its pressure knots (see the module's docstring)."""
    episodes, (profile, metric, target) = pressure_truth(
        [k[:3] for k in sc.knots],
        [(et, payload) for et, kind, payload in sc.events if kind == "patient"],
        data_end_s=_data_end(sc),
        min_episode_s=min_episode_s,
    )
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


def _save(dest: Path, stem: str, rec: Recording) -> Path:
    """``stem.jsonl`` and ``stem.truth.json`` in ``dest``; returns the first."""
    jsonl = dest / f"{stem}.jsonl"
    jsonl.write_bytes(b"".join(line + b"\n" for line in rec.lines))
    write_truth(dest / f"{stem}.truth.json", rec.truth)
    return jsonl


def write_as_committed(
    out: str | Path,
    scenarios: Sequence[str | Path],
    *,
    min_episode_s: float | None = None,
    root: str = "icu",
) -> list[Path]:
    """Each scenario file as committed, as ``NNNN.jsonl`` + truth (``NNNN``: its position)."""
    dest = Path(out)
    dest.mkdir(parents=True, exist_ok=True)
    return [
        _save(dest, f"{i:04d}", scenario_file_recording(p, min_episode_s=min_episode_s, root=root))
        for i, p in enumerate(scenarios)
    ]


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
        written.append(_save(dest, rec.name, rec))
        if on_file is not None:
            on_file(written[-1])

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
    parser.add_argument(
        "--as-committed",
        action="store_true",
        help="write each --scenario file as committed (its own seed and artifacts) as "
        "NNNN.jsonl + NNNN.truth.json, NNNN its position (streamproc evaluate FILE.toml)",
    )
    parser.add_argument(
        "--min-episode",
        type=float,
        help="with --as-committed: the shortest true episode, s (default: the protocol's hold)",
    )
    parser.add_argument("--root", default="icu", help="topic root (default: icu)")
    args = parser.parse_args(argv)
    try:
        if args.as_committed:
            written = write_as_committed(
                args.out, args.scenario or [], min_episode_s=args.min_episode, root=args.root
            )
        else:
            written = build_evalset(
                args.out,
                seeds=args.seeds,
                scenarios=args.scenario,
                labels=[] if args.no_real else args.labels,
                max_artifacts=args.max_artifacts,
                root=args.root,
            )
    except (EvaluateError, OSError) as exc:
        sys.stderr.write(f"simulators.evalset: {exc}\n")
        return 2
    sys.stderr.write(f"simulators.evalset: {len(written)} recordings in {args.out}\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
