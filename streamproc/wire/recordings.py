"""Real arterial-pressure records (WFDB) as ``abp`` messages, for evaluate and the simulator.

:func:`read_abp` reads one channel (default ``ABP``) of a WFDB record in
physical units (mmHg), whatever its layout:

- a single-segment record whose ABP has several samples per frame
  (``mixedsignals``: 2 per 62.47 Hz frame) is read with ``smooth_frames=False``
  so that every sample is kept, at ``fs * samples_per_frame``;
- a fixed-layout multi-segment record (``041s``) is read whole;
- a variable-layout multi-segment record (``s00001-...``) is read only over the
  span from the first to the last segment that has the channel (unless
  ``sampfrom``/``sampto`` are given): the whole master record may refer to
  segment files that are not there, and hours of ECG are of no use here.

Missing samples stay NaN. :func:`record_timed` turns the samples into
recording lines: ``abp`` chunks of ``chunk_s`` (1 s) that are split around
every NaN run, so that no chunk carries a NaN, and the chosen context messages
(patient profile, infusions) at the start.

``wfdb`` is imported lazily, and under ``warnings.catch_warnings()``: its import
emits a pandas deprecation warning (and the test suite turns warnings into errors).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC
from pathlib import Path
from typing import Any, Final

import numpy as np
import numpy.typing as npt

from streamproc.core.protocol.messages import TS_LIMITS

__all__ = [
    "DEFAULT_T0",
    "DRUGS",
    "DRUG_UNITS",
    "PROFILES",
    "AbpRecord",
    "RecordError",
    "Timed",
    "channel_span",
    "context_messages",
    "parse_infusion",
    "read_abp",
    "record_timed",
]

PROFILES: Final = ("standard", "chronic_hypertension", "elderly", "trauma", "trauma_tbi")
DRUGS: Final = (
    "norepinephrine",
    "vasopressin",
    "epinephrine",
    "dobutamine",
    "dopamine",
    "phenylephrine",
)
DRUG_UNITS: Final = ("mcg/kg/min", "mcg/min", "U/min", "mL/h")
#: The start of a recording whose date the wire contract cannot carry (2024-11-23 22:13:20 UTC).
DEFAULT_T0: Final = 1_732_400_000.0

#: A recording line with its data time (epoch s, when it is sent) and its order
#: among lines of the same time (0: context, 1: waveform).
Timed = tuple[float, int, dict[str, Any]]


class RecordError(ValueError):
    """A record that cannot be read or used (missing file, no such channel...)."""


@dataclass(frozen=True, slots=True)
class AbpRecord:
    """One channel of a record.

    Attributes:
        name: the record's path as given.
        samples: mmHg, NaN where the record has no valid sample.
        fs: sampling rate of this channel (Hz).
        base_time: epoch seconds (UTC) of ``samples[0]`` when the header has a
            date and a time, else ``None``.
        sampfrom: index of ``samples[0]`` in the record (frames).
        channel: the channel's name.
    """

    name: str
    samples: npt.NDArray[np.float64]
    fs: float
    base_time: float | None
    sampfrom: int = 0
    channel: str = "ABP"

    @property
    def duration_s(self) -> float:
        return self.samples.size / self.fs

    @property
    def start_time(self) -> float:
        """The base time if the wire contract can carry it (2000..2200), else ``DEFAULT_T0``.

        De-identified records shift their dates (041s: 1994, s00001: 2896);
        streamproc rejects such timestamps as implausible.
        """
        if self.base_time is not None and TS_LIMITS[0] <= self.base_time < TS_LIMITS[1]:
            return self.base_time
        return DEFAULT_T0


def _wfdb() -> Any:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import wfdb  # noqa: PLC0415 - slow, and warns on import: only when a record is read

    return wfdb


def _record_base(path: str | Path) -> str:
    """WFDB wants the record name without the ``.hea`` suffix."""
    text = str(path)
    return text[: -len(".hea")] if text.endswith(".hea") else text


def channel_span(path: str | Path, channel: str = "ABP") -> tuple[int, int] | None:
    """``(sampfrom, sampto)`` of a multi-segment record's segments that carry ``channel``.

    ``None`` when the record is a single segment or every segment has the
    channel (read it whole). Raises :class:`RecordError` when no segment has it.
    """
    wfdb = _wfdb()
    base = _record_base(path)
    try:
        header = wfdb.rdheader(base, rd_segments=True)
    except (OSError, ValueError) as exc:
        raise RecordError(f"{path}: cannot read the header: {exc}") from exc
    segments = getattr(header, "segments", None)
    if segments is None:
        return None
    start, spans, total = 0, [], 0
    for seg, length in zip(segments, header.seg_len, strict=True):
        if seg is not None and length > 0:
            total += 1
            if channel in (seg.sig_name or []):
                spans.append((start, start + int(length)))
        start += int(length)
    if not spans:
        raise RecordError(f"{path}: no segment has a {channel!r} channel")
    if len(spans) == total:
        return None
    return spans[0][0], spans[-1][1]


def read_abp(
    path: str | Path,
    *,
    channel: str = "ABP",
    sampfrom: int | None = None,
    sampto: int | None = None,
) -> AbpRecord:
    """One channel of a WFDB record in mmHg (see the module's docstring for the layouts)."""
    wfdb = _wfdb()
    base = _record_base(path)
    if not Path(base + ".hea").is_file():
        raise RecordError(f"{path}: no WFDB header {base}.hea")
    if sampfrom is None and sampto is None:
        span = channel_span(base, channel)
        if span is not None:
            sampfrom, sampto = span
    kwargs: dict[str, Any] = {"channel_names": [channel], "smooth_frames": False}
    if sampfrom is not None:
        kwargs["sampfrom"] = sampfrom
    if sampto is not None:
        kwargs["sampto"] = sampto
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            rec = wfdb.rdrecord(base, **kwargs)
    except (OSError, ValueError) as exc:
        raise RecordError(f"{path}: cannot read {channel!r}: {exc}") from exc
    if not rec.sig_name or rec.sig_name[0] != channel or not rec.e_p_signal:
        raise RecordError(f"{path}: no {channel!r} channel (has {rec.sig_name})")
    per_frame = int(rec.samps_per_frame[0]) if rec.samps_per_frame else 1
    samples = np.asarray(rec.e_p_signal[0], dtype=np.float64)
    units = (rec.units or ["mmHg"])[0]
    if units.lower() not in {"mmhg", "mm hg"}:
        raise RecordError(f"{path}: {channel!r} is in {units!r}, not mmHg")
    when = rec.base_datetime
    base_time = None if when is None else when.replace(tzinfo=UTC).timestamp()
    return AbpRecord(
        name=str(path),
        samples=samples,
        fs=float(rec.fs) * per_frame,
        base_time=base_time,
        sampfrom=int(sampfrom or 0),
        channel=channel,
    )


def parse_infusion(text: str) -> dict[str, Any]:
    """``norepinephrine:0.2:mcg/kg/min`` -> an infusion payload (without ``ts``)."""
    parts = text.split(":")
    if len(parts) != 3:
        raise RecordError(f"expected DRUG:RATE:UNIT (e.g. norepinephrine:0.2:mcg/kg/min), {text!r}")
    drug, rate_text, unit = (p.strip() for p in parts)
    if drug not in DRUGS:
        raise RecordError(f"unknown drug {drug!r}; expected one of {', '.join(DRUGS)}")
    if unit not in DRUG_UNITS:
        raise RecordError(f"unknown rate unit {unit!r}; expected one of {', '.join(DRUG_UNITS)}")
    try:
        rate = float(rate_text)
    except ValueError:
        raise RecordError(f"bad infusion rate {rate_text!r} in {text!r}") from None
    if not (rate >= 0 and math.isfinite(rate)):
        raise RecordError(f"infusion rate must be >= 0, got {text!r}")
    return {"drug": drug, "rate": rate, "unit": unit, "running": rate > 0}


def context_messages(
    *,
    profile: str | None = None,
    weight_kg: float | None = None,
    age: float | None = None,
    map_target: float | None = None,
    infusions: Sequence[str] = (),
) -> list[tuple[str, dict[str, Any]]]:
    """The patient and infusion messages (kind, payload without ``ts``) sent at the start."""
    out: list[tuple[str, dict[str, Any]]] = []
    patient: dict[str, Any] = {}
    if profile is not None:
        if profile not in PROFILES:
            raise RecordError(f"unknown profile {profile!r}; expected one of {', '.join(PROFILES)}")
        patient["profile"] = profile
    given = {"weight_kg": weight_kg, "age": age, "map_target": map_target}
    patient.update({key: value for key, value in given.items() if value is not None})
    if patient:
        out.append(("patient", patient))
    out.extend(("infusion", parse_infusion(text)) for text in infusions)
    return out


def record_timed(
    rec: AbpRecord,
    *,
    unit: str = "ward7",
    bed: str = "bed01",
    root: str = "icu",
    t0: float | None = None,
    chunk_s: float = 1.0,
    context: Sequence[tuple[str, dict[str, Any]]] = (),
) -> list[Timed]:
    """Recording lines with their data time, in time order (as ``ward.ward_stream``).

    ``t0`` (default: :attr:`AbpRecord.start_time`) is the time of the first
    sample. A chunk is sent when its last sample is due; a NaN run splits it,
    and an all-NaN chunk is not sent at all.
    """
    if not (chunk_s > 0 and math.isfinite(chunk_s)):
        raise RecordError(f"chunk_s must be > 0, got {chunk_s!r}")
    start = rec.start_time if t0 is None else t0
    prefix = f"{root}/{unit}/{bed}"
    timed: list[Timed] = [
        (start, 0, {"topic": f"{prefix}/{kind}", "payload": {"ts": start, **payload}})
        for kind, payload in context
    ]
    x = rec.samples
    fs = rec.fs
    cents = np.rint(np.where(np.isfinite(x), x, 0.0) * 100.0) / 100.0
    good_all = np.isfinite(x)
    n_chunk = max(1, round(chunk_s * fs))
    for i in range(0, x.size, n_chunk):
        good = good_all[i : i + n_chunk]
        if not good.any():
            continue
        edges = np.flatnonzero(np.diff(np.concatenate(([0], good.astype(np.int8), [0]))))
        for a, b in zip(edges[::2].tolist(), edges[1::2].tolist(), strict=True):
            payload = {
                "t0": round(start + (i + a) / fs, 6),
                "fs": fs,
                "samples": cents[i + a : i + b].tolist(),
            }
            timed.append((start + (i + b) / fs, 1, {"topic": f"{prefix}/abp", "payload": payload}))
    timed.sort(key=lambda e: (e[0], e[1]))
    return timed
