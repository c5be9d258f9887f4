"""``streamproc evaluate``: the alarms of a replay scored against ground truth.

Recordings with a known truth go through exactly the engine that ``replay``
runs (a :class:`~streamproc.apps.replay.Replayer`, clock from the data). Every
alarm transition is collected with ``on_event`` and compared with the truth of
its bed:

- **sensitivity**: true hypotension episodes during which (or within
  ``tolerance_s`` after which) a hypotension alarm was open, over all episodes;
- **false alarms per bed-day**: hypotension alarms raised outside every true
  episode (widened by ``tolerance_s`` on both sides) or inside a labelled
  artifact stretch, per day of monitored time (the sum over beds of each bed's
  data span, first to last pressure sample or numeric);
- **latency**: from an episode's onset to the alarm (median, p90, max);
- **time in alarm**: the share of monitored time with an open hypotension alarm;
- **technical alarms** (``abp_signal_invalid``, ``data_stale``) raised, and
  **re-announcements** (``reannounced`` transitions, i.e. without acknowledgement).

Truth comes from a sidecar ``NAME.truth.json`` next to ``NAME.jsonl`` (what
``python -m simulators.evalset`` writes), from a scenario TOML file (rendered
by the simulator in its own process, its truth derived from its pressure knots),
or from a labels TOML file for a real WFDB record (see
:mod:`streamproc.apps.evaluation.truth` and ``docs/evaluation.md``).

``--sweep section.key=v1,v2,...`` runs the same data under each value of one
numeric setting and tabulates the trade-off. ``--report FILE.html`` draws
every bed's pressures, truth and alarms (matplotlib, imported only then).
"""

from __future__ import annotations

import math
import statistics
import subprocess
import sys
import tempfile
import tomllib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import numpy as np
import numpy.typing as npt

from streamproc.apps.evaluation.truth import (
    EPISODE_KINDS,
    BedTruth,
    EvaluateError,
    Labels,
    Recording,
    Truth,
    labels_recording,
    labels_truth,
    load_labels,
    read_truth,
)
from streamproc.apps.replay import Replayer
from streamproc.core.engine import Engine
from streamproc.core.monitor import Clock
from streamproc.core.protocol.alarms import (
    HYPOTENSION,
    SIGNAL_INVALID,
    STALE,
    AlarmEvent,
    AlarmState,
    Trigger,
)
from streamproc.core.protocol.messages import AbpChunk, BedId, Message, Vitals
from streamproc.core.signal.beats import beats_from_rows
from streamproc.shell.config import ConfigError, StreamprocConfig, load_config, parse_assignment

__all__ = [
    "TECHNICAL",
    "AlarmSpan",
    "BedResult",
    "EpisodeResult",
    "Evaluation",
    "Metrics",
    "Sweep",
    "Trace",
    "evaluate",
    "format_tables",
    "load_inputs",
    "scenario_recordings",
    "score_bed",
    "summarize",
    "sweep",
    "toml_kind",
]

TECHNICAL: Final = (SIGNAL_INVALID, STALE)
#: An alarm raised this long before an episode, or after its end, still belongs to it.
DEFAULT_TOLERANCE_S: Final = 30.0
DAY_S: Final = 86_400.0


# --------------------------------------------------------------------------- inputs


def toml_kind(path: Path) -> str:
    try:
        with path.open("rb") as fh:
            data = tomllib.load(fh)
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise EvaluateError(f"{path}: cannot read as TOML: {exc}") from None
    if "record" in data:
        return "labels"
    if "duration_s" in data:
        return "scenario"
    raise EvaluateError(
        f"{path}: neither a scenario (duration_s, [[pressure]]) nor a labels file (record = ...)"
    )


def _truth_path(jsonl: Path) -> Path:
    return jsonl.with_name(jsonl.name.removesuffix(".jsonl") + ".truth.json")


def load_inputs(
    paths: Iterable[str | Path],
    *,
    labels: Sequence[str | Path] = (),
    min_episode_s: float | None = None,
    root: str = "icu",
) -> list[Recording]:
    """Recordings with their truth from files and directories.

    A directory contributes its ``*.jsonl`` files that have a ``*.truth.json``
    sidecar and its ``*.toml`` files (scenarios or labels). A ``.jsonl`` given
    by name needs a sidecar, or ``labels`` (applied to its only bed, times
    from its first data).
    """
    files: list[Path] = []
    for item in paths:
        p = Path(item)
        if p.is_dir():
            found = sorted(
                [q for q in p.glob("*.jsonl") if _truth_path(q).is_file()] + list(p.glob("*.toml"))
            )
            if not found:
                raise EvaluateError(
                    f"{p}: no recordings with truth (*.jsonl + *.truth.json, *.toml)"
                )
            files.extend(found)
        elif p.is_file():
            files.append(p)
        else:
            raise EvaluateError(f"no such file or directory: {p}")
    extra = [load_labels(x) for x in labels]
    out: list[Recording | None] = []
    scenarios: list[Path] = []
    for p in files:
        if p.suffix != ".toml":
            out.append(_jsonl_recording(p, extra))
        elif toml_kind(p) == "labels":
            out.append(labels_recording(p, root=root))
        else:
            out.append(None)  # rendered below, all in one simulator process
            scenarios.append(p)
    rendered = iter(scenario_recordings(scenarios, min_episode_s=min_episode_s, root=root))
    return [rec if rec is not None else next(rendered) for rec in out]


def _jsonl_recording(p: Path, extra: Sequence[Labels]) -> Recording:
    name = p.name.removesuffix(".jsonl")
    tpath = _truth_path(p)
    if tpath.is_file():
        truth = read_truth(tpath)
    elif extra:
        truth = Truth(
            recording=name,
            beds=[
                labels_truth(lab, name=lab.name or name, t0=None, wildcard=True) for lab in extra
            ],
        )
    else:
        raise EvaluateError(f"{p}: no ground truth (expected {tpath.name}, or give --labels)")
    try:
        lines = p.read_bytes().splitlines()
    except OSError as exc:
        raise EvaluateError(f"{p}: cannot read: {exc}") from None
    return Recording(name=name, lines=lines, truth=truth, path=str(p))


def scenario_recordings(
    paths: Sequence[Path], *, min_episode_s: float | None = None, root: str = "icu"
) -> list[Recording]:
    """Scenario TOML files rendered as committed (their own seed and artifacts), with truth.

    The waveform generator is the simulator's, and ``simulators/`` depends on
    streamproc, never the reverse: the files are rendered by the simulator as its
    own process (``python -m simulators.evalset --as-committed``), which writes
    each one's recording and truth (:func:`~streamproc.apps.evaluation.truth.pressure_truth`)
    into a temporary directory, read back here.
    """
    if not paths:
        return []
    with tempfile.TemporaryDirectory(prefix="streamproc-evaluate-") as tmp:
        argv = [sys.executable, "-m", "simulators.evalset", "--out", tmp, "--as-committed"]
        argv += ["--root", root, "--no-real"]
        if min_episode_s is not None:
            argv += ["--min-episode", repr(min_episode_s)]
        for p in paths:
            argv += ["--scenario", str(p)]
        done = subprocess.run(argv, capture_output=True, text=True, check=False)  # noqa: S603
        if done.returncode != 0:
            said = done.stderr.strip().splitlines() or [f"exit status {done.returncode}"]
            raise EvaluateError(said[-1].removeprefix("simulators.evalset: "))
        out = []
        for i, p in enumerate(paths):
            jsonl = Path(tmp) / f"{i:04d}.jsonl"
            truth = read_truth(_truth_path(jsonl))
            lines = jsonl.read_bytes().splitlines()
            out.append(Recording(name=truth.recording, lines=lines, truth=truth, path=str(p)))
    return out


# --------------------------------------------------------------------------- results


@dataclass(slots=True)
class AlarmSpan:
    """One alarm (one ``alarm_id``) from its raising to its clearing (epoch s)."""

    alarm_id: str
    kind: str
    raised: float
    cleared: float | None = None
    #: ``(ts, priority)`` at each transition, for the plot's coloured band.
    priorities: list[tuple[float, str]] = field(default_factory=list)
    reannounced: int = 0
    false: bool = False

    def end(self, data_end: float) -> float:
        return self.cleared if self.cleared is not None else max(data_end, self.raised)


@dataclass(slots=True)
class EpisodeResult:
    start: float
    end: float
    detected: bool
    latency_s: float | None


@dataclass(slots=True)
class Trace:
    """What the plot shows of a bed: its beats and the monitor's rolling values."""

    #: ``(mid-beat time, MAP, valid)``.
    beats: list[tuple[float, float, bool]] = field(default_factory=list)
    #: ``(ts, rolling MAP, rolling SBP)`` after each pressure message.
    rolling: list[tuple[float, float | None, float | None]] = field(default_factory=list)


@dataclass(slots=True)
class BedResult:
    """One bed of one recording, scored."""

    recording: str
    unit: str
    bed: str
    scenario: str
    source: str
    profile: str
    metric: str
    target: float
    t0: float
    start: float
    end: float
    episodes: list[EpisodeResult]
    hypotension: list[AlarmSpan]
    technical: list[AlarmSpan]
    artifacts: list[tuple[float, float, str]]
    reannounced: int
    trace: Trace | None = None

    @property
    def monitored_s(self) -> float:
        return max(self.end - self.start, 0.0)

    @property
    def false_alarms(self) -> int:
        return sum(a.false for a in self.hypotension)

    @property
    def missed(self) -> int:
        return sum(not e.detected for e in self.episodes)

    @property
    def alarm_s(self) -> float:
        """Time with an open hypotension alarm, within the data span."""
        total = 0.0
        for a in self.hypotension:
            lo, hi = max(a.raised, self.start), min(a.end(self.end), self.end)
            total += max(hi - lo, 0.0)
        return total


def _spans(events: Iterable[AlarmEvent], kinds: Iterable[str]) -> list[AlarmSpan]:
    wanted = set(kinds)
    by_id: dict[str, AlarmSpan] = {}
    for ev in events:
        if ev.kind not in wanted:
            continue
        span = by_id.get(ev.alarm_id)
        if span is None:
            span = by_id[ev.alarm_id] = AlarmSpan(ev.alarm_id, ev.kind, ev.ts)
        if ev.trigger is Trigger.REANNOUNCE:
            span.reannounced += 1
        if ev.state is AlarmState.CLEARED:
            span.cleared = ev.ts
        else:
            span.priorities.append((ev.ts, ev.priority.value))
    return sorted(by_id.values(), key=lambda a: a.raised)


def score_bed(
    truth: BedTruth,
    events: Sequence[AlarmEvent],
    data_span: tuple[float, float],
    *,
    tolerance_s: float = DEFAULT_TOLERANCE_S,
    recording: str = "",
    unit: str = "",
    bed: str = "",
) -> BedResult:
    """Match one bed's alarm transitions with its truth.

    An episode is detected when a hypotension alarm is open at some time in
    ``[start, end + tolerance_s]``; its latency is from ``start`` to the
    alarm's raising (0 when an alarm was already open). A hypotension alarm is
    false when raised inside a labelled artifact stretch, or outside every
    ``[start - tolerance_s, end + tolerance_s]``.
    """
    start, end = data_span
    t0 = truth.t0 if truth.t0 is not None else start
    hypo = _spans(events, (HYPOTENSION,))
    tech = _spans(events, TECHNICAL)
    artifacts = [(t0 + a.start_s, t0 + a.end_s, a.kind) for a in truth.artifacts]
    episodes = [
        (t0 + e.start_s, min(t0 + e.end_s, end))
        for e in truth.episodes
        if e.kind in EPISODE_KINDS and t0 + e.start_s < end
    ]
    for a in hypo:
        in_artifact = any(lo <= a.raised <= hi for lo, hi, _ in artifacts)
        near = any(s - tolerance_s <= a.raised <= e + tolerance_s for s, e in episodes)
        a.false = in_artifact or not near
    results = []
    for s, e in episodes:
        hits = [max(a.raised, s) for a in hypo if a.raised <= e + tolerance_s and a.end(end) >= s]
        when = min(hits) if hits else None
        results.append(EpisodeResult(s, e, when is not None, None if when is None else when - s))
    return BedResult(
        recording=recording,
        unit=unit,
        bed=bed,
        scenario=truth.scenario or recording,
        source=truth.source,
        profile=truth.profile,
        metric=truth.metric,
        target=truth.target,
        t0=t0,
        start=start,
        end=end,
        episodes=results,
        hypotension=hypo,
        technical=tech,
        artifacts=artifacts,
        reannounced=sum(a.reannounced for a in _spans(events, {ev.kind for ev in events})),
    )


# --------------------------------------------------------------------------- metrics


def _percentile(values: Sequence[float], q: float) -> float:
    """Linear-interpolated percentile (as numpy's default)."""
    s = sorted(values)
    pos = (len(s) - 1) * q / 100.0
    lo = math.floor(pos)
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (pos - lo)


@dataclass(slots=True)
class Metrics:
    """The figures of a group of beds."""

    group: str
    beds: int = 0
    monitored_s: float = 0.0
    episodes: int = 0
    detected: int = 0
    hypotension_alarms: int = 0
    false_alarms: int = 0
    alarm_s: float = 0.0
    technical: int = 0
    reannounced: int = 0
    latencies: list[float] = field(default_factory=list)

    def add(self, b: BedResult) -> None:
        self.beds += 1
        self.monitored_s += b.monitored_s
        self.episodes += len(b.episodes)
        self.detected += sum(e.detected for e in b.episodes)
        self.hypotension_alarms += len(b.hypotension)
        self.false_alarms += b.false_alarms
        self.alarm_s += b.alarm_s
        self.technical += len(b.technical)
        self.reannounced += b.reannounced
        self.latencies.extend(e.latency_s for e in b.episodes if e.latency_s is not None)

    @property
    def bed_days(self) -> float:
        return self.monitored_s / DAY_S

    @property
    def sensitivity(self) -> float | None:
        return self.detected / self.episodes if self.episodes else None

    def _per_day(self, n: int) -> float | None:
        return n / self.bed_days if self.monitored_s > 0 else None

    @property
    def false_per_bed_day(self) -> float | None:
        return self._per_day(self.false_alarms)

    @property
    def technical_per_bed_day(self) -> float | None:
        return self._per_day(self.technical)

    @property
    def time_in_alarm(self) -> float | None:
        return self.alarm_s / self.monitored_s if self.monitored_s > 0 else None

    @property
    def latency_median(self) -> float | None:
        return statistics.median(self.latencies) if self.latencies else None

    @property
    def latency_p90(self) -> float | None:
        return _percentile(self.latencies, 90.0) if self.latencies else None

    @property
    def latency_max(self) -> float | None:
        return max(self.latencies) if self.latencies else None

    def as_dict(self) -> dict[str, Any]:
        return {
            "group": self.group,
            "beds": self.beds,
            "monitored_h": round(self.monitored_s / 3600.0, 4),
            "bed_days": round(self.bed_days, 5),
            "episodes": self.episodes,
            "detected": self.detected,
            "sensitivity": self.sensitivity,
            "hypotension_alarms": self.hypotension_alarms,
            "false_alarms": self.false_alarms,
            "false_alarms_per_bed_day": self.false_per_bed_day,
            "latency_median_s": self.latency_median,
            "latency_p90_s": self.latency_p90,
            "latency_max_s": self.latency_max,
            "time_in_alarm": self.time_in_alarm,
            "technical_alarms": self.technical,
            "technical_per_bed_day": self.technical_per_bed_day,
            "reannounced": self.reannounced,
        }


def summarize(beds: Iterable[BedResult], key: Callable[[BedResult], str]) -> list[Metrics]:
    """Metrics per group (``key``), groups in order of first appearance."""
    groups: dict[str, Metrics] = {}
    for b in beds:
        k = key(b)
        groups.setdefault(k, Metrics(k)).add(b)
    return list(groups.values())


@dataclass(slots=True)
class Evaluation:
    """All beds of all recordings, scored under one configuration."""

    beds: list[BedResult]
    label: str = ""
    untruthed: list[str] = field(default_factory=list)
    rejected_lines: int = 0

    @property
    def overall(self) -> Metrics:
        m = Metrics("all")
        for b in self.beds:
            m.add(b)
        return m

    def by_source(self) -> list[Metrics]:
        return summarize(self.beds, lambda b: b.source)

    def by_profile(self) -> list[Metrics]:
        return sorted(summarize(self.beds, lambda b: b.profile), key=lambda m: m.group)

    def by_scenario(self) -> list[Metrics]:
        return sorted(summarize(self.beds, lambda b: b.scenario), key=lambda m: m.group)

    def as_dict(self) -> dict[str, Any]:
        return {
            "label": self.label,
            "overall": self.overall.as_dict(),
            "by_source": [m.as_dict() for m in self.by_source()],
            "by_profile": [m.as_dict() for m in self.by_profile()],
            "by_scenario": [m.as_dict() for m in self.by_scenario()],
            "beds_without_truth": self.untruthed,
            "rejected_lines": self.rejected_lines,
            "beds": [_bed_dict(b) for b in self.beds],
        }


def _bed_dict(b: BedResult) -> dict[str, Any]:
    def rel(t: float | None) -> float | None:
        return None if t is None else round(t - b.t0, 3)

    return {
        "recording": b.recording,
        "unit": b.unit,
        "bed": b.bed,
        "scenario": b.scenario,
        "source": b.source,
        "profile": b.profile,
        "metric": b.metric,
        "target": b.target,
        "t0": b.t0,
        "data_start_s": rel(b.start),
        "data_end_s": rel(b.end),
        "episodes": [
            {
                "start_s": rel(e.start),
                "end_s": rel(e.end),
                "detected": e.detected,
                "latency_s": None if e.latency_s is None else round(e.latency_s, 3),
            }
            for e in b.episodes
        ],
        "hypotension_alarms": [
            {
                "raised_s": rel(a.raised),
                "cleared_s": rel(a.cleared),
                "false": a.false,
                "priority": a.priorities[-1][1] if a.priorities else None,
                "reannounced": a.reannounced,
            }
            for a in b.hypotension
        ],
        "technical_alarms": [
            {"kind": a.kind, "raised_s": rel(a.raised), "cleared_s": rel(a.cleared)}
            for a in b.technical
        ],
        "reannounced": b.reannounced,
    }


# --------------------------------------------------------------------------- running


class _Observed:
    """Each bed's data span and (for plots) its beats and rolling values, as the engine
    tells of every message it takes (its :data:`~streamproc.core.engine.Observer`).

    The beats are the engine's own; the rolling values are read from the monitor's status.
    """

    def __init__(self, *, collect: bool) -> None:
        self.spans: dict[BedId, list[float]] = {}
        self.collect = collect
        self.traces: dict[BedId, Trace] = {}
        self.engine: Engine | None = None

    def __call__(self, bed: BedId, msg: Message, beats: npt.NDArray[np.float64]) -> None:
        if isinstance(msg, AbpChunk):
            lo, hi = msg.t0, msg.ts
        elif isinstance(msg, Vitals):
            lo = hi = msg.ts
        else:
            return
        span = self.spans.get(bed)
        if span is None:
            self.spans[bed] = [lo, hi]
        else:
            span[0] = min(span[0], lo)
            span[1] = max(span[1], hi)
        if self.collect and self.engine is not None:
            trace = self.traces.setdefault(bed, Trace())
            trace.beats.extend(
                (0.5 * (b.onset + b.end), b.map, b.valid) for b in beats_from_rows(beats)
            )
            st = self.engine.monitor(bed).status()
            if st.ts is not None and (not trace.rolling or trace.rolling[-1][0] != st.ts):
                trace.rolling.append((st.ts, st.map, st.sbp))


def _discard(_line: bytes) -> None:
    return None


def _match(truth: Truth, beds: Sequence[BedId]) -> list[tuple[BedId, BedTruth]]:
    pairs: list[tuple[BedId, BedTruth]] = []
    for bt in truth.beds:
        if bt.unit is None and bt.bed is None:
            if len(beds) != 1:
                raise EvaluateError(
                    f"{truth.recording}: truth without unit/bed, but the recording has "
                    f"{len(beds)} beds"
                )
            pairs.append((beds[0], bt))
            continue
        for b in beds:
            if (bt.unit is None or bt.unit == b.unit) and (bt.bed is None or bt.bed == b.bed):
                pairs.append((b, bt))
                break
    return pairs


def run_recording(
    rec: Recording,
    config: StreamprocConfig,
    *,
    tolerance_s: float = DEFAULT_TOLERANCE_S,
    collect: bool = False,
) -> tuple[list[BedResult], list[str], int]:
    """Replay one recording; returns its scored beds, the beds without truth and bad lines."""
    observed = _Observed(collect=collect)
    engine = Engine(
        config.core, max_beds=config.service.max_beds, clock=Clock.DATA, observer=observed
    )
    observed.engine = engine
    rp = Replayer(config, _discard, engine=engine)
    events: list[AlarmEvent] = []
    rp.on_event = events.append
    rp.feed_lines(rec.lines)
    summary = rp.finish()
    beds = list(observed.spans)
    pairs = _match(rec.truth, beds)
    matched = {b for b, _ in pairs}
    results = []
    for bed, bt in pairs:
        lo, hi = observed.spans[bed]
        res = score_bed(
            bt,
            [ev for ev in events if ev.bed == bed],
            (lo, hi),
            tolerance_s=tolerance_s,
            recording=rec.name,
            unit=bed.unit,
            bed=bed.bed,
        )
        res.trace = observed.traces.get(bed)
        results.append(res)
    untruthed = [f"{rec.name}:{b}" for b in beds if b not in matched]
    return results, untruthed, sum(summary.rejected.values())


def evaluate(
    recordings: Sequence[Recording],
    config: StreamprocConfig | None = None,
    *,
    tolerance_s: float = DEFAULT_TOLERANCE_S,
    collect: bool = False,
    label: str = "",
    advance: Callable[[], None] | None = None,
) -> Evaluation:
    """Replay every recording under ``config`` and score it (the Python API)."""
    cfg = config if config is not None else load_config(environ={})
    out = Evaluation(beds=[], label=label)
    for rec in recordings:
        beds, untruthed, rejected = run_recording(
            rec, cfg, tolerance_s=tolerance_s, collect=collect
        )
        out.beds.extend(beds)
        out.untruthed.extend(untruthed)
        out.rejected_lines += rejected
        if advance is not None:
            advance()
    return out


@dataclass(slots=True)
class Sweep:
    """One numeric setting over several values: the trade-off table."""

    key: str
    values: list[str]
    results: list[Evaluation]

    def rows(self) -> list[tuple[str, Metrics]]:
        return [(v, e.overall) for v, e in zip(self.values, self.results, strict=True)]

    def as_dict(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "rows": [{"value": v, **m.as_dict()} for v, m in self.rows()],
        }


def parse_sweep(text: str, config: StreamprocConfig) -> tuple[str, list[str]]:
    """``hold_s=30,60,120`` -> ``("hypotension.hold_s", ["30", "60", "120"])``."""
    section, key, values = parse_assignment(text)
    obj = config.service if section == "service" else getattr(config.core, section, None)
    current = getattr(obj, key, None) if obj is not None else None
    dotted = f"{section}.{key}"
    if obj is None or current is None:
        raise ConfigError(dotted, "unknown setting")
    if isinstance(current, bool) or not isinstance(current, int | float):
        raise ConfigError(dotted, f"is not a numeric setting (it is {current!r})")
    items = [v.strip() for v in values.split(",") if v.strip()]
    if not items:
        raise ConfigError(dotted, "expected values: --sweep key=v1,v2,...")
    for v in items:
        try:
            float(v)
        except ValueError:
            raise ConfigError(dotted, f"must be a number, got {v!r}") from None
    return dotted, items


def sweep(
    recordings: Sequence[Recording],
    key: str,
    values: Sequence[str],
    *,
    config_path: str | Path | None = None,
    assignments: Sequence[str] = (),
    environ: dict[str, str] | None = None,
    tolerance_s: float = DEFAULT_TOLERANCE_S,
    advance: Callable[[], None] | None = None,
) -> Sweep:
    """The same recordings under each value of one setting."""
    results = []
    for v in values:
        cfg = load_config(config_path, assignments=[*assignments, f"{key}={v}"], environ=environ)
        results.append(
            evaluate(recordings, cfg, tolerance_s=tolerance_s, label=f"{key}={v}", advance=advance)
        )
    return Sweep(key=key, values=list(values), results=results)


# --------------------------------------------------------------------------- tables


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:.1f}%"


def _num(x: float | None, fmt: str = ".1f") -> str:
    return "n/a" if x is None else format(x, fmt)


COLUMNS: Final = (
    "group",
    "beds",
    "hours",
    "episodes",
    "detected",
    "sensitivity",
    "false",
    "false/bed-day",
    "lat med s",
    "lat p90 s",
    "lat max s",
    "in alarm",
    "technical",
    "tech/bed-day",
    "reannounced",
)


def metrics_row(m: Metrics) -> list[str]:
    return [
        m.group,
        str(m.beds),
        f"{m.monitored_s / 3600:.2f}",
        str(m.episodes),
        str(m.detected),
        _pct(m.sensitivity),
        str(m.false_alarms),
        _num(m.false_per_bed_day),
        _num(m.latency_median),
        _num(m.latency_p90),
        _num(m.latency_max),
        _pct(m.time_in_alarm),
        str(m.technical),
        _num(m.technical_per_bed_day),
        str(m.reannounced),
    ]


def _align(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]

    def fmt(r: Sequence[str]) -> str:
        cells = [r[0].ljust(widths[0])] + [
            c.rjust(w) for c, w in zip(r[1:], widths[1:], strict=True)
        ]
        return "  ".join(cells).rstrip()

    return [fmt(header), "  ".join("-" * w for w in widths), *(fmt(r) for r in rows)]


def sweep_header(key: str) -> list[str]:
    return [key, *COLUMNS[1:]]


def format_tables(ev: Evaluation, sw: Sweep | None = None) -> str:
    """The summary as aligned text: overall, by profile, by scenario, then the sweep."""
    out: list[str] = []
    sections = [
        ("overall", [ev.overall, *ev.by_source()]),
        ("by profile", ev.by_profile()),
        ("by scenario / record", ev.by_scenario()),
    ]
    for title, ms in sections:
        out.append(f"## {title}")
        out.extend(_align(COLUMNS, [metrics_row(m) for m in ms]))
        out.append("")
    if sw is not None:
        out.append(f"## what-if: {sw.key}")
        rows = [[v, *metrics_row(m)[1:]] for v, m in sw.rows()]
        out.extend(_align(sweep_header(sw.key), rows))
        out.append("")
    if ev.untruthed:
        out.append(f"beds without truth (not scored): {', '.join(ev.untruthed)}")
    return "\n".join(out)


# --------------------------------------------------------------------------- command line
