"""What truly happened in a labelled recording: the oracle ``streamproc evaluate`` scores against.

A recording's truth is a :class:`Truth` (the sidecar ``NAME.truth.json``): per
bed, the protocol's target and the true hypotension episodes and artifacts.
It comes from one of two places:

- **synthetic data** (:func:`pressure_truth`, used by ``simulators.evalset``):
  the true pressure is the scenario's ``[[pressure]]`` knots, linear in
  between, with MAP = DBP + (SBP - DBP) / 3 at every instant. The target is the
  protocol's for the patient (:func:`protocol_target`: profile, age, explicit
  ``map_target``/``sbp_target``; default settings, SBP for trauma). A true
  episode is a stretch below the target that lasts at least the protocol's
  hold (60 s) or that holds MAP < 50 mmHg for 15 s (the critical fast path),
  within the data the bed sends;
- **real records** (:func:`labels_recording`): a labels TOML file names a WFDB
  record and lists its episodes and artifacts by hand.

Both are written from the protocol, not taken from the monitor, so that the
truth is an independent oracle.
"""

from __future__ import annotations

import math
import os
import re
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import msgspec
import numpy as np
import numpy.typing as npt

from streamproc.core.protocol.settings import HypotensionSettings, TargetSettings
from streamproc.wire.recordings import (
    PROFILES,
    RecordError,
    parse_infusion,
    read_abp,
    record_timed,
)

__all__ = [
    "ABP_DATA",
    "EPISODE_KINDS",
    "TRUTH_FORMAT",
    "BedTruth",
    "EvaluateError",
    "Labels",
    "LabelsError",
    "Recording",
    "Span",
    "Truth",
    "abp_data_dir",
    "default_min_episode_s",
    "labels_recording",
    "labels_truth",
    "load_labels",
    "pressure_truth",
    "protocol_target",
    "read_truth",
    "resolve_record",
    "write_truth",
]

TRUTH_FORMAT: Final = "streamproc-truth/1"
EPISODE_KINDS: Final = ("hypotension",)
#: The grid (s) on which the true pressure of synthetic data is sampled.
_GRID_S: Final = 0.05


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


# --------------------------------------------------------------------------- recordings


@dataclass(slots=True)
class Recording:
    """One recording (lines as ``streamproc replay`` reads them) and its truth."""

    name: str
    lines: Sequence[bytes]
    truth: Truth
    path: str = ""


def _runs(mask: npt.NDArray[np.bool_]) -> list[tuple[int, int]]:
    """``[a, b)`` index runs where ``mask`` is true."""
    edges = np.flatnonzero(np.diff(np.concatenate(([0], mask.astype(np.int8), [0]))))
    return list(zip(edges[::2].tolist(), edges[1::2].tolist(), strict=True))


def _opt_str(v: object) -> str | None:
    return None if v is None else str(v)


def _opt_float(v: object) -> float | None:
    return None if v is None else float(v)  # type: ignore[arg-type]


def pressure_truth(
    knots: Sequence[tuple[float, float, float]],
    patient: Sequence[tuple[float, Mapping[str, object]]],
    *,
    data_end_s: float,
    min_episode_s: float | None = None,
) -> tuple[list[Span], tuple[str, str, float]]:
    """The true episodes of a bed and its first ``(profile, metric, target)``.

    ``knots``: ``(t, sbp, dbp)``, linear in between; ``patient``: the patient
    messages ``(t, payload)`` in time order (each updates the last); the bed
    sends data up to ``data_end_s``. See the module's docstring for the rule.
    """
    hold = default_min_episode_s() if min_episode_s is None else min_episode_s
    hs = HypotensionSettings()
    end = data_end_s
    t = np.arange(0.0, end + 1e-9, _GRID_S)
    kt = np.array([k[0] for k in knots])
    sbp = np.interp(t, kt, np.array([k[1] for k in knots]))
    dbp = np.interp(t, kt, np.array([k[2] for k in knots]))
    mean = dbp + (sbp - dbp) / 3.0
    below = np.zeros(t.size, dtype=bool)
    current: dict[str, object] = {}
    first: tuple[str, str, float] | None = None
    changes = [(0.0, dict[str, object]()), *patient]
    for i, (et, payload) in enumerate(changes):
        current.update(payload)
        profile, metric, target = protocol_target(
            _opt_str(current.get("profile")),
            age=_opt_float(current.get("age")),
            map_target=_opt_float(current.get("map_target")),
            sbp_target=_opt_float(current.get("sbp_target")),
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
    return episodes, first or protocol_target(None)
