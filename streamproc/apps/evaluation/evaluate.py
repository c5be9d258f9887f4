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
in memory, its truth derived from its pressure knots), or from a labels TOML
file for a real WFDB record (see ``docs/evaluation.md``).

``--sweep section.key=v1,v2,...`` runs the same data under each value of one
numeric setting and tabulates the trade-off. ``--report FILE.html`` draws
every bed's pressures, truth and alarms (matplotlib, imported only then).
"""

from __future__ import annotations

import argparse
import math
import os
import re
import statistics
import sys
import tomllib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import msgspec
import numpy as np
import numpy.typing as npt

from streamproc.apps.evaluation.agreement import Agreement, agreement_table, record_agreement
from streamproc.apps.replay import Replayer
from streamproc.core.engine import Engine
from streamproc.core.protocol.alarms import (
    HYPOTENSION,
    SIGNAL_INVALID,
    STALE,
    AlarmEvent,
    AlarmState,
    Trigger,
)
from streamproc.core.protocol.messages import AbpChunk, BedId, Message, Vitals
from streamproc.core.protocol.settings import HypotensionSettings, Settings, TargetSettings
from streamproc.core.signal.beats import BeatDetector
from streamproc.shell.config import ConfigError, StreamprocConfig, load_config, parse_assignment

__all__ = [
    "ABP_DATA",
    "PROFILES",
    "TECHNICAL",
    "AlarmSpan",
    "BedResult",
    "BedTruth",
    "EpisodeResult",
    "EvaluateError",
    "Evaluation",
    "Labels",
    "LabelsError",
    "Metrics",
    "Recording",
    "Span",
    "Sweep",
    "Trace",
    "Truth",
    "abp_data_dir",
    "add_arguments",
    "evaluate",
    "format_tables",
    "labels_recording",
    "load_inputs",
    "load_labels",
    "protocol_target",
    "read_truth",
    "resolve_record",
    "run_command",
    "score_bed",
    "summarize",
    "sweep",
    "write_truth",
]

TRUTH_FORMAT: Final = "streamproc-truth/1"
TECHNICAL: Final = (SIGNAL_INVALID, STALE)
PROFILES: Final = ("standard", "chronic_hypertension", "elderly", "trauma", "trauma_tbi")
EPISODE_KINDS: Final = ("hypotension",)
#: An alarm raised this long before an episode, or after its end, still belongs to it.
DEFAULT_TOLERANCE_S: Final = 30.0
DAY_S: Final = 86_400.0


class EvaluateError(ValueError):
    """Input that cannot be evaluated (missing truth, unreadable file): the user's fault."""


class LabelsError(EvaluateError):
    """A labels file is wrong. ``field`` names the offending key (``episode[1].end_s``)."""

    def __init__(self, path: str, field: str, reason: str) -> None:
        self.path = path
        self.field = field
        self.reason = reason
        super().__init__(f"{path}: {field}: {reason}")


# --------------------------------------------------------------------------- truth


class Span(msgspec.Struct, forbid_unknown_fields=True, frozen=True, omit_defaults=True):
    """A stretch of a bed's data, in seconds from the bed's ``t0``."""

    start_s: float
    end_s: float
    kind: str = "hypotension"
    note: str = ""


class BedTruth(msgspec.Struct, forbid_unknown_fields=True):
    """What truly happened on one bed of a recording.

    ``unit``/``bed`` ``None`` match the recording's only bed; ``t0`` ``None``
    is that bed's first data time. ``profile``/``metric``/``target`` are the
    protocol's (default settings), not the run's: a sweep of a target does not
    move the truth.
    """

    unit: str | None = None
    bed: str | None = None
    scenario: str = ""
    source: str = "synthetic"
    profile: str = "standard"
    metric: str = "map"
    target: float = 65.0
    t0: float | None = None
    duration_s: float | None = None
    episodes: list[Span] = []
    artifacts: list[Span] = []


class Truth(msgspec.Struct, forbid_unknown_fields=True):
    """The sidecar ``NAME.truth.json`` of a recording ``NAME.jsonl``."""

    recording: str
    beds: list[BedTruth]
    format: str = TRUTH_FORMAT


_truth_encoder: Final = msgspec.json.Encoder()


def write_truth(path: str | Path, truth: Truth) -> None:
    Path(path).write_bytes(msgspec.json.format(_truth_encoder.encode(truth), indent=1) + b"\n")


def read_truth(path: str | Path) -> Truth:
    try:
        truth = msgspec.json.decode(Path(path).read_bytes(), type=Truth)
    except OSError as exc:
        raise EvaluateError(f"{path}: cannot read: {exc}") from None
    except msgspec.ValidationError as exc:
        field, reason = _split_validation(str(exc))
        raise EvaluateError(f"{path}: {field}: {reason}") from None
    except msgspec.DecodeError as exc:
        raise EvaluateError(f"{path}: not valid JSON: {exc}") from None
    if truth.format != TRUTH_FORMAT:
        raise EvaluateError(f"{path}: format {truth.format!r}, expected {TRUTH_FORMAT!r}")
    return truth


def protocol_target(
    profile: str | None,
    *,
    age: float | None = None,
    map_target: float | None = None,
    sbp_target: float | None = None,
    targets: TargetSettings | None = None,
) -> tuple[str, str, float]:
    """``(profile, metric, target)`` by the protocol's table (section 2), default settings.

    Written from the protocol, not taken from the monitor, so that the truth is
    an independent oracle.
    """
    t = targets or TargetSettings()
    if profile is None:
        profile = "elderly" if age is not None and age > t.elderly_age else "standard"
    if map_target is not None:
        return profile, "map", float(map_target)
    if sbp_target is not None:
        return profile, "sbp", float(sbp_target)
    table = {
        "standard": ("map", t.standard_map),
        "chronic_hypertension": ("map", t.chronic_hypertension_map),
        "elderly": ("map", t.elderly_map),
        "trauma": ("sbp", t.trauma_sbp),
        "trauma_tbi": ("map", t.trauma_tbi_map),
    }
    metric, value = table[profile]
    return profile, metric, value


def default_min_episode_s() -> float:
    """A true episode lasts at least the protocol's hold time (default setting, 60 s)."""
    return HypotensionSettings().hold_s


# --------------------------------------------------------------------------- labels


class Labels(msgspec.Struct, forbid_unknown_fields=True):
    """A labels file: a real WFDB record and what truly happens in it."""

    record: str
    name: str = ""
    description: str = ""
    channel: str = "ABP"
    sampfrom: int | None = None
    sampto: int | None = None
    unit: str = "real"
    bed: str = ""
    profile: str = "standard"
    age: float | None = None
    weight_kg: float | None = None
    map_target: float | None = None
    sbp_target: float | None = None
    infusions: list[str] = []
    episode: list[Span] = []
    artifact: list[Span] = []


_AT_RE: Final = re.compile(r"^(?P<reason>.*?)(?: - at `\$\.?(?P<path>[^`]*)`)?$", re.DOTALL)
_FIELD_RE: Final = re.compile(r"(?:required|unknown) field `(?P<name>[^`]+)`")


def _split_validation(message: str) -> tuple[str, str]:
    """A msgspec validation message as ``(field path, reason)``."""
    m = _AT_RE.match(message)
    reason, path = (m["reason"], m["path"] or "") if m else (message, "")
    named = _FIELD_RE.search(reason)
    if named:
        path = f"{path}.{named['name']}" if path else named["name"]
    return path or "(top level)", reason


_IDENT_RE: Final = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


def _check_spans(path: str, name: str, spans: Sequence[Span], *, episodes: bool) -> None:
    for i, sp in enumerate(spans):
        where = f"{name}[{i}]"
        for key in ("start_s", "end_s"):
            value = getattr(sp, key)
            if not (math.isfinite(value) and value >= 0):
                raise LabelsError(path, f"{where}.{key}", f"must be a number >= 0, got {value!r}")
        if sp.end_s <= sp.start_s:
            raise LabelsError(
                path, f"{where}.end_s", f"must be after start_s ({sp.start_s:g}), got {sp.end_s:g}"
            )
        if episodes and sp.kind not in EPISODE_KINDS:
            raise LabelsError(
                path, f"{where}.kind", f"must be one of {', '.join(EPISODE_KINDS)}, got {sp.kind!r}"
            )


def load_labels(path: str | Path) -> Labels:
    """Read and check a labels file; errors name the field."""
    p = str(path)
    try:
        with Path(path).open("rb") as fh:
            data = tomllib.load(fh)
    except OSError as exc:
        raise LabelsError(p, "(file)", f"cannot read: {exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise LabelsError(p, "(file)", f"not valid TOML: {exc}") from None
    try:
        labels = msgspec.convert(data, Labels)
    except msgspec.ValidationError as exc:
        field_name, reason = _split_validation(str(exc))
        raise LabelsError(p, field_name, reason) from None
    if not labels.record.strip():
        raise LabelsError(p, "record", "must name a WFDB record")
    if labels.profile not in PROFILES:
        raise LabelsError(
            p, "profile", f"must be one of {', '.join(PROFILES)}, got {labels.profile!r}"
        )
    name = labels.name or Path(path).stem
    for key, value in (("unit", labels.unit), ("bed", labels.bed or name)):
        if not _IDENT_RE.match(value):
            raise LabelsError(p, key, f"must match [A-Za-z0-9_-]{{1,64}}, got {value!r}")
    _check_spans(p, "episode", labels.episode, episodes=True)
    _check_spans(p, "artifact", labels.artifact, episodes=False)
    for i, text in enumerate(labels.infusions):
        if text.count(":") != 2:
            raise LabelsError(p, f"infusions[{i}]", f"expected DRUG:RATE:UNIT, got {text!r}")
    return labels


#: The real records the repository carries (``data/abp/``, with their README and licence).
ABP_DATA = Path(__file__).resolve().parents[3] / "data" / "abp"


def abp_data_dir() -> Path:
    """The real records: ``$STREAMPROC_ABP_DATA``, else the repository's ``data/abp``."""
    env = os.environ.get("STREAMPROC_ABP_DATA")
    return Path(env) if env else ABP_DATA


def resolve_record(labels: Labels, labels_path: Path) -> Path:
    rec = Path(labels.record)
    if rec.is_absolute():
        return rec
    for base in (labels_path.parent, abp_data_dir()):
        cand = base / rec
        if cand.with_name(cand.name + ".hea").is_file():
            return cand
    raise LabelsError(
        str(labels_path),
        "record",
        f"no WFDB record {labels.record!r} next to the labels file or in {abp_data_dir()} "
        "(set STREAMPROC_ABP_DATA to the folder of the real records)",
    )


def labels_truth(labels: Labels, *, name: str, t0: float | None, wildcard: bool) -> BedTruth:
    profile, metric, target = protocol_target(
        labels.profile,
        age=labels.age,
        map_target=labels.map_target,
        sbp_target=labels.sbp_target,
    )
    return BedTruth(
        unit=None if wildcard else labels.unit,
        bed=None if wildcard else (labels.bed or name),
        scenario=name,
        source="real",
        profile=profile,
        metric=metric,
        target=target,
        t0=t0,
        episodes=list(labels.episode),
        artifacts=list(labels.artifact),
    )


_line_encoder: Final = msgspec.json.Encoder()


def labels_recording(path: str | Path, *, root: str = "icu") -> Recording:
    """The recording of the WFDB record a labels file names, with the labels as truth."""
    from simulators.records import (  # noqa: PLC0415 - wfdb is slow and only needed here
        RecordError,
        parse_infusion,
        read_abp,
        record_timed,
    )

    labels = load_labels(path)
    lpath = Path(path)
    name = labels.name or lpath.stem
    record = resolve_record(labels, lpath)
    patient: dict[str, Any] = {"profile": labels.profile}
    for key in ("age", "weight_kg", "map_target", "sbp_target"):
        if getattr(labels, key) is not None:
            patient[key] = getattr(labels, key)
    context: list[tuple[str, dict[str, Any]]] = [("patient", patient)]
    try:
        context.extend(("infusion", parse_infusion(text)) for text in labels.infusions)
        rec = read_abp(
            record, channel=labels.channel, sampfrom=labels.sampfrom, sampto=labels.sampto
        )
        timed = record_timed(
            rec, unit=labels.unit, bed=labels.bed or name, root=root, context=context
        )
    except RecordError as exc:
        raise LabelsError(str(lpath), "record", str(exc)) from None
    truth = labels_truth(labels, name=name, t0=rec.start_time, wildcard=False)
    truth.duration_s = rec.duration_s
    lines = [_line_encoder.encode(line) for _, _, line in timed]
    return Recording(
        name=name, lines=lines, truth=Truth(recording=name, beds=[truth]), path=str(lpath)
    )


# --------------------------------------------------------------------------- inputs


@dataclass(slots=True)
class Recording:
    """One recording (lines as ``streamproc replay`` reads them) and its truth."""

    name: str
    lines: Sequence[bytes]
    truth: Truth
    path: str = ""


def _toml_kind(path: Path) -> str:
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
    out: list[Recording] = []
    for p in files:
        if p.suffix == ".toml":
            if _toml_kind(p) == "labels":
                out.append(labels_recording(p, root=root))
            else:
                from simulators.evalset import scenario_file_recording  # noqa: PLC0415

                out.append(scenario_file_recording(p, min_episode_s=min_episode_s, root=root))
            continue
        name = p.name.removesuffix(".jsonl")
        tpath = _truth_path(p)
        if tpath.is_file():
            truth = read_truth(tpath)
        elif extra:
            truth = Truth(
                recording=name,
                beds=[
                    labels_truth(lab, name=lab.name or name, t0=None, wildcard=True)
                    for lab in extra
                ],
            )
        else:
            raise EvaluateError(f"{p}: no ground truth (expected {tpath.name}, or give --labels)")
        try:
            lines = p.read_bytes().splitlines()
        except OSError as exc:
            raise EvaluateError(f"{p}: cannot read: {exc}") from None
        out.append(Recording(name=name, lines=lines, truth=truth, path=str(p)))
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


class _ObservingEngine(Engine):
    """The engine, plus each bed's data span and (for plots) its beats and rolling values.

    The beats for the plot come from a second :class:`BeatDetector` with the
    same settings over the same chunks (the detector is pure, so they are the
    engine's beats); the rolling values are read from the monitor's status.
    """

    def __init__(self, settings: Settings, *, max_beds: int, collect: bool) -> None:
        super().__init__(settings, max_beds=max_beds, data_clock=True)
        self.spans: dict[BedId, list[float]] = {}
        self.collect = collect
        self.traces: dict[BedId, Trace] = {}
        self._detectors: dict[BedId, BeatDetector] = {}

    def receive(self, bed: BedId, msg: Message, now: float) -> list[AlarmEvent]:
        out = super().receive(bed, msg, now)
        if isinstance(msg, AbpChunk):
            lo, hi = msg.t0, msg.ts
        elif isinstance(msg, Vitals):
            lo = hi = msg.ts
        else:
            return out
        self._extend_span(bed, lo, hi)
        if self.collect:
            self._observe(bed, msg)
        return out

    def receive_chunks(
        self,
        beds: Sequence[BedId],
        *,
        t0: npt.NDArray[np.float64],
        fs: npt.NDArray[np.float64],
        ends: npt.NDArray[np.int64],
        samples: npt.NDArray[np.float64],
        nows: npt.NDArray[np.float64],
    ) -> list[AlarmEvent]:
        if self.collect:  # the plot follows each chunk: one at a time, through ``receive``
            out: list[AlarmEvent] = []
            start = 0
            for i, bed in enumerate(beds):
                end = int(ends[i])
                chunk = AbpChunk(float(t0[i]), float(fs[i]), samples[start:end].copy())
                out.extend(self.receive(bed, chunk, float(nows[i])))
                start = end
            return out
        out = super().receive_chunks(beds, t0=t0, fs=fs, ends=ends, samples=samples, nows=nows)
        ts = t0 + (np.diff(ends, prepend=0) - 1) / fs  # (each chunk's ``AbpChunk.ts``)
        for bed, lo, hi in zip(beds, t0.tolist(), ts.tolist(), strict=True):
            self._extend_span(bed, lo, hi)
        return out

    def _extend_span(self, bed: BedId, lo: float, hi: float) -> None:
        """``bed``'s data span now covers ``lo`` to ``hi`` too."""
        span = self.spans.get(bed)
        if span is None:
            self.spans[bed] = [lo, hi]
        else:
            span[0] = min(span[0], lo)
            span[1] = max(span[1], hi)

    def _observe(self, bed: BedId, msg: AbpChunk | Vitals) -> None:
        trace = self.traces.setdefault(bed, Trace())
        if isinstance(msg, AbpChunk):
            det = self._detectors.get(bed)
            if det is None:
                det = self._detectors[bed] = BeatDetector(self.settings.beats)
            trace.beats.extend((0.5 * (b.onset + b.end), b.map, b.valid) for b in det.feed(msg))
        st = self.monitor(bed).status()
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
    engine = _ObservingEngine(config.core, max_beds=config.service.max_beds, collect=collect)
    rp = Replayer(config, _discard, engine=engine)
    events: list[AlarmEvent] = []
    rp.on_event = events.append
    rp.feed_lines(rec.lines)
    summary = rp.finish()
    beds = list(engine.spans)
    pairs = _match(rec.truth, beds)
    matched = {b for b, _ in pairs}
    results = []
    for bed, bt in pairs:
        lo, hi = engine.spans[bed]
        res = score_bed(
            bt,
            [ev for ev in events if ev.bed == bed],
            (lo, hi),
            tolerance_s=tolerance_s,
            recording=rec.name,
            unit=bed.unit,
            bed=bed.bed,
        )
        res.trace = engine.traces.get(bed)
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


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The options of ``streamproc evaluate``."""
    p.add_argument(
        "inputs",
        nargs="+",
        metavar="DIR|FILE",
        help="recordings with truth: NAME.jsonl (+ NAME.truth.json), scenario or labels "
        "TOML files, or directories of them",
    )
    p.add_argument("--config", help="TOML settings file (defaults: the protocol's)")
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override one setting, e.g. --set hypotension.hold_s=90 (repeatable)",
    )
    p.add_argument(
        "--sweep",
        metavar="KEY=V1,V2,...",
        help="what-if: run again under each value of one numeric setting "
        "(section.key or a unique key), e.g. --sweep hold_s=30,60,120",
    )
    p.add_argument(
        "--labels",
        action="append",
        default=[],
        metavar="FILE",
        help="labels TOML used as the truth of .jsonl recordings that have no sidecar",
    )
    p.add_argument(
        "--tolerance",
        type=float,
        default=DEFAULT_TOLERANCE_S,
        metavar="S",
        help="an alarm this close before/after an episode belongs to it (default %(default)g s)",
    )
    p.add_argument(
        "--min-episode",
        type=float,
        metavar="S",
        help="scenario truth: below target for at least this long is an episode "
        "(default: the protocol's hold, 60 s)",
    )
    p.add_argument("--report", metavar="FILE.html", help="write a self-contained HTML report")
    p.add_argument("--png-dir", metavar="DIR", help="also write each bed's figure as a PNG")
    p.add_argument(
        "--max-figures",
        type=int,
        default=40,
        metavar="N",
        help="at most N figures (beds with misses or false alarms first; default %(default)s)",
    )
    p.add_argument("--json", metavar="FILE", help="write every figure as JSON")
    p.add_argument(
        "--progress",
        action="store_true",
        help="show a progress bar (default: when stderr is a TTY)",
    )


def _err(text: str) -> None:
    sys.stderr.write(f"streamproc: evaluate: {text}\n")


def run_command(args: argparse.Namespace) -> int:
    """``streamproc evaluate``: exit 0 done, 2 bad options or input."""
    try:
        config = load_config(args.config, assignments=args.set)
        sweep_spec = parse_sweep(args.sweep, config) if args.sweep else None
        recordings = load_inputs(
            args.inputs,
            labels=args.labels,
            min_episode_s=args.min_episode,
            root=config.service.root,
        )
    except (ConfigError, EvaluateError) as exc:
        _err(str(exc))
        return 2
    drawing = bool(args.report or args.png_dir)
    total = len(recordings) * (1 + (len(sweep_spec[1]) if sweep_spec else 0))
    show = args.progress or sys.stderr.isatty()
    with _ProgressBar(show, total) as advance:
        try:
            ev = evaluate(
                recordings,
                config,
                tolerance_s=args.tolerance,
                collect=drawing,
                label="base",
                advance=advance,
            )
            sw = (
                sweep(
                    recordings,
                    sweep_spec[0],
                    sweep_spec[1],
                    config_path=args.config,
                    assignments=args.set,
                    tolerance_s=args.tolerance,
                    advance=advance,
                )
                if sweep_spec
                else None
            )
        except (ConfigError, EvaluateError) as exc:
            _err(str(exc))
            return 2
    sys.stdout.write(
        f"streamproc evaluate: {len(recordings)} recordings, {len(ev.beds)} beds, "
        f"{ev.overall.monitored_s / 3600:.2f} bed-hours; tolerance {args.tolerance:g} s"
        + (f"; settings {' '.join(args.set)}" if args.set else "")
        + "\n\n"
    )
    sys.stdout.write(format_tables(ev, sw) + "\n")
    agreement = _agreement(recordings, config)
    if agreement:
        sys.stdout.write(
            "\nbeats against the ECG's R waves, MAP against the monitor's own numeric "
            "(docs/evaluation.md):\n" + agreement_table(agreement) + "\n"
        )
    if args.json:
        doc = {"settings": list(args.set), "tolerance_s": args.tolerance, **ev.as_dict()}
        if sw is not None:
            doc["sweep"] = sw.as_dict()
        if agreement:
            doc["agreement"] = msgspec.to_builtins(agreement)
        Path(args.json).write_bytes(msgspec.json.format(msgspec.json.encode(doc), indent=1))
    if drawing:
        from streamproc.apps.evaluation.report import write_figures, write_report  # noqa: PLC0415 - matplotlib

        cache: dict[int, bytes] = {}
        if args.png_dir:
            n = write_figures(ev, Path(args.png_dir), max_figures=args.max_figures, cache=cache)
            sys.stderr.write(f"streamproc evaluate: {n} figures in {args.png_dir}\n")
        if args.report:
            write_report(
                Path(args.report),
                ev,
                sw,
                max_figures=args.max_figures,
                title=f"streamproc evaluation ({len(recordings)} recordings)",
                settings=list(args.set),
                cache=cache,
            )
            sys.stderr.write(f"streamproc evaluate: report {args.report}\n")
    return 0


def _agreement(recordings: Sequence[Recording], config: StreamprocConfig) -> list[Agreement]:
    """The agreement with their own references of the real records among the inputs."""
    out = []
    for r in recordings:
        if not (r.path.endswith(".toml") and _toml_kind(Path(r.path)) == "labels"):
            continue
        labels = load_labels(r.path)
        out.append(
            record_agreement(
                r.name,
                resolve_record(labels, Path(r.path)),
                artifacts=[(a.start_s, a.end_s) for a in labels.artifact],
                channel=labels.channel,
                sampfrom=labels.sampfrom,
                sampto=labels.sampto,
                settings=config.core,
            )
        )
    return out


class _ProgressBar:
    """A rich progress bar on stderr, or nothing; yields the function that advances it."""

    def __init__(self, show: bool, total: int) -> None:
        self.show = show
        self.total = total
        self._bar: Any = None

    def __enter__(self) -> Callable[[], None] | None:
        if not self.show:
            return None
        from rich.console import Console  # noqa: PLC0415
        from rich.progress import Progress  # noqa: PLC0415

        self._bar = Progress(console=Console(stderr=True), transient=True)
        self._bar.start()
        task = self._bar.add_task("evaluating", total=self.total)

        def advance() -> None:
            self._bar.advance(task)

        return advance

    def __exit__(self, *exc: object) -> None:
        if self._bar is not None:
            self._bar.stop()
