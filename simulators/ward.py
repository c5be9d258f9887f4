"""A ward of simulated beds: which scenario runs on which bed, and their messages in time order.

:func:`build_ward` assigns scenarios to ``N`` beds by weight (deterministically:
a smooth weighted round-robin, so six beds over six equally weighted scenarios
get one each), gives every bed its own unit/bed id and seed (``seed + bed
index``), and optionally stretches or cuts every scenario to one duration.

:func:`ward_stream` yields the ward's recording lines in time order, lazily.
Each bed's waveform is synthesised once (``simulators.scenario.waveform``) and
kept as centi-mmHg integers (2 bytes a sample when the values fit, else 4), and
its chunks are cut from that array only when they are due: 500 beds x 10 min at
125 Hz hold about 75 MB of samples instead of the ~1.2 GB that whole rendered
scenarios (Python lists of floats) would take. The lines are the ones
``simulators.scenario.render_timed``/``merge`` produce: same topics, times,
order and sample values (a ``-0.0`` sample comes out as ``0.0``);
``tests/simulators/test_publisher.py`` checks this for every scenario file.
"""

from __future__ import annotations

import heapq
import math
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Final

import numpy as np
import numpy.typing as npt

from simulators.scenario import (
    Expectation,
    Scenario,
    chunk_runs,
    load_scenario,
    render_timed,
    scenario_dir,
    waveform,
)
from streamproc.wire.recordings import Timed

__all__ = [
    "BEDS_PER_UNIT",
    "Bed",
    "Compact",
    "WardError",
    "bed_stream",
    "build_ward",
    "parse_duration",
    "parse_mix",
    "prepare",
    "resolve_scenarios",
    "unit_names",
    "ward_stream",
]

BEDS_PER_UNIT: Final = 20
_IDENT_RE: Final = re.compile(r"[A-Za-z0-9_-]{1,64}")
_DURATION_RE: Final = re.compile(
    r"(?:(\d+(?:\.\d*)?)h)?(?:(\d+(?:\.\d*)?)m)?(?:(\d+(?:\.\d*)?)s?)?"
)
_INT16: Final = np.iinfo(np.int16)
_INT32: Final = np.iinfo(np.int32)

Compact = tuple[npt.NDArray[np.integer[Any]], int, npt.NDArray[np.intp]]
"""A bed's waveform as centi-mmHg integers, the value that marks a missing sample, and the
indices of the samples that round to ``-0.0``."""


class WardError(ValueError):
    """A ward that cannot be built (unknown scenario, bad mix, too few units...)."""


@dataclass(frozen=True, slots=True)
class Bed:
    """One simulated bed: its index in the ward and the scenario it runs (ids, seed, t0 set)."""

    index: int
    scenario: Scenario
    skipped: tuple[Expectation, ...] = ()
    """Expectations dropped because the bed's duration cuts their window."""

    @property
    def key(self) -> tuple[str, str]:
        return self.scenario.unit, self.scenario.bed


# --------------------------------------------------------------------------- parsing


def parse_duration(text: str) -> float:
    """``600``, ``600s``, ``10m``, ``1h``, ``2m30s`` -> seconds (> 0)."""
    s = text.strip().lower()
    m = _DURATION_RE.fullmatch(s)
    if not s or m is None or not any(m.groups()):
        raise WardError(f"expected a duration like 600, 90s, 10m or 1h, got {text!r}")
    h, mi, sec = (float(g) if g else 0.0 for g in m.groups())
    total = h * 3600 + mi * 60 + sec
    if not (total > 0 and math.isfinite(total)):
        raise WardError(f"duration must be > 0, got {text!r}")
    return total


def parse_mix(text: str) -> dict[str, float]:
    """``ne_60_40=3,recovery=1`` -> ``{"ne_60_40": 3.0, "recovery": 1.0}`` (weights >= 0)."""
    mix: dict[str, float] = {}
    for item in (p.strip() for p in text.split(",")):
        if not item:
            continue
        name, sep, weight = item.partition("=")
        try:
            value = float(weight) if sep else 1.0
        except ValueError:
            raise WardError(f"--mix: bad weight in {item!r} (expected name=weight)") from None
        if not (value >= 0 and math.isfinite(value)):
            raise WardError(f"--mix: weight must be >= 0, got {item!r}")
        mix[name.strip()] = value
    if not mix or not any(mix.values()):
        raise WardError(f"--mix: no scenario with a positive weight in {text!r}")
    return mix


def resolve_scenarios(
    paths: Sequence[str | Path] = (), mix: Mapping[str, float] | None = None
) -> list[tuple[Scenario, float]]:
    """The scenarios to mix and their weights.

    ``paths`` (default: every ``*.toml`` in ``config/scenarios``, sorted) are the
    candidates; a ``mix`` names them by scenario name or file stem with a weight
    (a name not among the candidates is looked up in ``config/scenarios``).
    Without a mix every candidate weighs 1.
    """
    files = [Path(p) for p in paths] or sorted(scenario_dir().glob("*.toml"))
    if not files:
        raise WardError(f"no scenario files (none given, none in {scenario_dir()})")
    loaded: list[tuple[str, Scenario]] = []
    for f in files:
        if not f.is_file():
            raise WardError(f"no such scenario file: {f}")
        loaded.append((f.stem, load_scenario(f)))
    if mix is None:
        return [(sc, 1.0) for _, sc in loaded]
    out: list[tuple[Scenario, float]] = []
    for name, weight in mix.items():
        found = next((sc for stem, sc in loaded if name in {stem, sc.name}), None)
        if found is None:
            candidate = scenario_dir() / f"{name}.toml"
            if not candidate.is_file():
                names = sorted({sc.name for _, sc in loaded})
                raise WardError(f"--mix: unknown scenario {name!r}; known: {', '.join(names)}")
            found = load_scenario(candidate)
        if weight > 0:
            out.append((found, weight))
    return out


def unit_names(beds: int, *, units: Sequence[str] = (), prefix: str = "ward") -> list[str]:
    """The units the beds fill, ``BEDS_PER_UNIT`` each: the given ones, else ``{prefix}1..K``."""
    need = max(1, math.ceil(beds / BEDS_PER_UNIT))
    names = list(units) if units else [f"{prefix}{k}" for k in range(1, need + 1)]
    for name in names:
        if not _IDENT_RE.fullmatch(name):
            raise WardError(f"unit id {name!r} does not match [A-Za-z0-9_-]{{1,64}}")
    if len(set(names)) != len(names):
        raise WardError(f"duplicate unit ids in {names}")
    if len(names) < need:
        raise WardError(
            f"{beds} beds need {need} units of {BEDS_PER_UNIT} beds; only {len(names)} given"
        )
    return names


def _assign(weights: Sequence[float], n: int) -> list[int]:
    """Smooth weighted round-robin: ``n`` picks in proportion to ``weights``, interleaved."""
    total = sum(weights)
    current = [0.0] * len(weights)
    picks = []
    for _ in range(n):
        for i, w in enumerate(weights):
            current[i] += w
        best = max(range(len(weights)), key=lambda i: current[i])
        current[best] -= total
        picks.append(best)
    return picks


def _fit(sc: Scenario, duration_s: float) -> tuple[Scenario, tuple[Expectation, ...]]:
    """Stretch (the last pressure holds) or cut a scenario to ``duration_s``."""
    if duration_s == sc.duration_s:
        return sc, ()
    keep = tuple(e for e in sc.expect if e.state == "none" or e.before_s <= duration_s)
    skipped = tuple(e for e in sc.expect if e not in keep)
    artifacts = tuple(a for a in sc.artifacts if a[1] < duration_s)
    return replace(sc, duration_s=duration_s, artifacts=artifacts, expect=keep), skipped


def build_ward(
    choices: Sequence[tuple[Scenario, float]],
    beds: int,
    *,
    seed: int = 0,
    units: Sequence[str] = (),
    unit_prefix: str = "ward",
    t0: float | None = None,
    duration_s: float | None = None,
) -> list[Bed]:
    """``beds`` beds: scenarios by weight, ids ``{unit}/bed001..``, seeds ``seed + index``.

    ``t0`` (default: each scenario's own) is every bed's start time;
    ``duration_s`` stretches or cuts every scenario (expectations whose window
    ends after it are dropped and listed in :attr:`Bed.skipped`).
    """
    if beds < 1:
        raise WardError(f"--beds must be >= 1, got {beds}")
    if not choices:
        raise WardError("no scenario to run")
    names = unit_names(beds, units=units, prefix=unit_prefix)
    picks = _assign([w for _, w in choices], beds)
    out = []
    for i, pick in enumerate(picks):
        base = choices[pick][0]
        sc = replace(
            base,
            unit=names[i // BEDS_PER_UNIT],
            bed=f"bed{i % BEDS_PER_UNIT + 1:03d}",
            seed=seed + i,
            t0=base.t0 if t0 is None else t0,
        )
        skipped: tuple[Expectation, ...] = ()
        if duration_s is not None:
            sc, skipped = _fit(sc, duration_s)
        out.append(Bed(i, sc, skipped))
    return out


# --------------------------------------------------------------------------- streams


def _compact(x: npt.NDArray[np.float64]) -> Compact:
    """Samples as integers of 0.01 mmHg (``round(v, 2)``'s value), the NaN sentinel, and
    where ``round`` gives ``-0.0`` (kept so that recordings match ``render_timed`` byte for byte).
    """
    nan = np.isnan(x)
    scaled = np.where(nan, 0.0, x * 100.0)
    cents = np.rint(scaled)
    # rint(x * 100) is round(x, 2) except within rounding error of a tie: redo those exactly
    near = np.flatnonzero(np.abs(scaled - np.floor(scaled) - 0.5) < 1e-6)
    for i in near.tolist():
        if not nan[i]:
            cents[i] = round(round(float(x[i]), 2) * 100)
    lo, hi = (float(cents.min()), float(cents.max())) if cents.size else (0.0, 0.0)
    out: npt.NDArray[np.integer[Any]]
    if _INT16.min < lo and hi <= _INT16.max:
        out, missing = cents.astype(np.int16), int(_INT16.min)
    else:
        out, missing = cents.astype(np.int32), int(_INT32.min)
    out[nan] = missing
    negative_zero: npt.NDArray[np.intp] = np.flatnonzero((cents == 0) & (x < 0))
    return out, missing, negative_zero


def prepare(sc: Scenario) -> Compact | None:
    """Synthesise a bed's waveform (``None`` when it has none); independent of ids and t0."""
    if not (sc.waveform and sc.knots):
        return None
    return _compact(waveform(sc))


def _chunks(
    sc: Scenario, prefix: str, end: float, compact: Compact | None
) -> Iterator[tuple[float, int, dict[str, Any]]]:
    """The waveform chunks of ``render_timed``: (scenario time, 1, line)."""
    cents, missing, negative_zero = compact if compact is not None else _compact(waveform(sc))

    n_end = min(cents.size, round(end * sc.fs))
    topic = f"{prefix}/abp"
    for a, b in chunk_runs(cents[:n_end] != missing, max(1, round(sc.chunk_s * sc.fs))):
        samples = (cents[a:b] / 100.0).tolist()
        if negative_zero.size:
            lo, hi = np.searchsorted(negative_zero, (a, b)).tolist()
            for j in negative_zero[lo:hi].tolist():
                samples[j - a] = -0.0
        payload = {"t0": round(sc.t0 + float(a) / sc.fs, 6), "fs": sc.fs, "samples": samples}
        yield float(b) / sc.fs, 1, {"topic": topic, "payload": payload}


def bed_stream(sc: Scenario, root: str = "icu", compact: Compact | None = None) -> Iterator[Timed]:
    """One bed's lines in time order with their data time (``sc.t0`` + send time), lazily.

    ``compact`` is the bed's waveform from :func:`prepare`; without it the
    waveform is synthesised at the first ``next()``.
    """
    # everything but the waveform (context events, numerics, ...) exactly as render_timed has it
    parts: list[Iterable[tuple[float, int, dict[str, Any]]]] = [
        render_timed(replace(sc, waveform=False), root)
    ]
    if sc.waveform and sc.knots:
        prefix = f"{root}/{sc.unit}/{sc.bed}"
        end = sc.duration_s if sc.silent_after_s is None else min(sc.duration_s, sc.silent_after_s)
        parts.append(_chunks(sc, prefix, end, compact))
    for t, k, line in heapq.merge(*parts, key=lambda e: (e[0], e[1])):
        yield sc.t0 + t, k, line


def ward_stream(
    scenarios: Sequence[Scenario],
    root: str = "icu",
    compacts: Sequence[Compact | None] | None = None,
) -> Iterator[Timed]:
    """Every bed's lines interleaved in time order, as ``simulators.scenario.merge``.

    Lines of the same time and order keep the beds' order. ``compacts`` are the
    beds' waveforms from :func:`prepare` (else each is synthesised when the
    stream starts: heapq.merge takes a first line of every bed).
    """
    packed = list(compacts) if compacts is not None else [None] * len(scenarios)
    if len(packed) != len(scenarios):
        raise WardError("one prepared waveform per scenario, please")
    return heapq.merge(
        *(bed_stream(sc, root, c) for sc, c in zip(scenarios, packed, strict=True)),
        key=lambda e: (e[0], e[1]),
    )
