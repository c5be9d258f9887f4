"""How streamproc's beats and MAP agree with a real record's own references.

``streamproc evaluate`` scores alarms against labelled episodes; this module asks the
question under them, on each real record the labels name (``config/labels/*.toml``):

- **beats**: the record's ECG is the reference. Every heartbeat's pressure pulse follows
  its R wave by the pulse arrival time (about 0.1-0.4 s to the foot of an arterial
  pulse), so an R wave (found by wfdb's XQRS detector on the first ECG lead of the
  record) with a detected pulse onset ``PAT_WINDOW_S`` after it is a true positive,
  one without a false negative, and an onset with no R wave before it a false
  positive. Scored where both signals exist, outside the labelled artifact spans
  (``ARTIFACT_MARGIN_S`` either side) and after each waveform segment's learning time.
  Sensitivity is TP / (TP + FN), positive predictivity TP / (TP + FP), for every
  detected beat and for the beats judged valid (those the MAP is made of).
- **MAP**: the monitor's own numeric. A record ``NAME`` with a numerics record
  ``NAMEn`` beside it (MIMIC-II layout, one value a minute) gives ``ABPMean``; each
  value > 0 inside the scored time is compared with the engine's rolling MAP at that
  moment (bias, SD and the largest difference).

The beats and rolling MAP are the engine's own (:class:`streamproc.core.engine.Engine`
over 1-s chunks, data clock): nothing here re-implements a rule of the protocol.
"""

from __future__ import annotations

import dataclasses
import math
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import numpy as np
import numpy.typing as npt

from streamproc.core.engine import Batch, Engine
from streamproc.core.monitor import Clock
from streamproc.core.protocol.messages import AbpChunk, BedId, Message, sample_time
from streamproc.core.protocol.settings import Settings
from streamproc.core.signal.beats import Beat, beats_from_rows
from streamproc.wire.recordings import read_abp

__all__ = [
    "ARTIFACT_MARGIN_S",
    "ECG_LEADS",
    "PAT_WINDOW_S",
    "Agreement",
    "BeatScore",
    "MapScore",
    "agreement_table",
    "match_beats",
    "record_agreement",
]

#: An R wave and a pulse onset this long after it (s) are one heartbeat.
PAT_WINDOW_S: Final = (0.02, 0.5)
#: Beats this close to a labelled artifact span (s) are not scored.
ARTIFACT_MARGIN_S: Final = 2.0
#: ECG leads tried for the reference, in this order.
ECG_LEADS: Final = ("II", "I", "III", "V", "MCL1", "AVR", "AVF", "AVL")
#: The monitor's mean arterial pressure in a MIMIC-II numerics record.
_NUMERIC_MAP: Final = "ABPMean"
_CHUNK_S: Final = 1.0
#: The chunks' data time of the record's first sample (any plausible epoch time).
_EPOCH: Final = 1_700_000_000.0

FloatArray = npt.NDArray[np.float64]


@dataclass(frozen=True, slots=True)
class BeatScore:
    """Detected pulse onsets against ECG R waves (counts in the scored time)."""

    lead: str
    reference: int
    tp: int
    fn: int
    fp: int

    @property
    def sensitivity(self) -> float | None:
        n = self.tp + self.fn
        return self.tp / n if n else None

    @property
    def ppv(self) -> float | None:
        n = self.tp + self.fp
        return self.tp / n if n else None


@dataclass(frozen=True, slots=True)
class MapScore:
    """The engine's rolling MAP against the monitor's numeric (``ours - monitor``)."""

    pairs: tuple[tuple[float, float, float], ...]  # (seconds from start, monitor, ours)

    @property
    def n(self) -> int:
        return len(self.pairs)

    def _diffs(self) -> FloatArray:
        return np.array([ours - mon for _, mon, ours in self.pairs], np.float64)

    @property
    def bias(self) -> float | None:
        return float(self._diffs().mean()) if self.pairs else None

    @property
    def sd(self) -> float | None:
        return float(self._diffs().std(ddof=1)) if self.n > 1 else None

    @property
    def max_abs(self) -> float | None:
        return float(np.abs(self._diffs()).max()) if self.pairs else None


@dataclass(frozen=True, slots=True)
class Agreement:
    """One record's agreement with its references."""

    name: str
    scored_s: float
    beats_all: BeatScore | None
    beats_valid: BeatScore | None
    #: The rolling MAP (what the alarms judge) at each numeric's time.
    map: MapScore | None
    #: The mean of the valid beats' MAP over the minute before each numeric's time.
    map_minute: MapScore | None
    notes: tuple[str, ...] = field(default=())


def match_beats(
    reference: Sequence[float], detected: Sequence[float], window: tuple[float, float]
) -> tuple[int, int, int]:
    """``(tp, fn, fp)``: each reference time paired with the first unpaired detected time
    ``window[0]`` to ``window[1]`` after it (both sorted)."""
    lo, hi = window
    det = sorted(detected)
    used = [False] * len(det)
    j0 = 0
    tp = 0
    for r in sorted(reference):
        while j0 < len(det) and det[j0] < r + lo:
            j0 += 1
        j = j0
        while j < len(det) and det[j] <= r + hi:
            if not used[j]:
                used[j] = True
                tp += 1
                break
            j += 1
    return tp, len(reference) - tp, len(det) - sum(used)


def _runs(valid: npt.NDArray[np.bool_]) -> list[tuple[int, int]]:
    """``[start, end)`` index runs where ``valid`` holds."""
    edges = np.flatnonzero(np.diff(np.concatenate(([0], valid.astype(np.int8), [0]))))
    return [(int(a), int(b)) for a, b in zip(edges[::2], edges[1::2], strict=True)]


def _engine_pass(
    samples: FloatArray, fs: float, settings: Settings
) -> tuple[list[Beat], list[tuple[float, float | None]], list[tuple[float, float]]]:
    """The engine over the record in 1-s chunks: its beats, its rolling MAP after each
    chunk ``(ts, map)`` and the waveform's runs ``(start, end)``, all in seconds from the
    first sample (the labels' clock; the chunks are dated from ``_EPOCH``)."""
    beats: list[Beat] = []

    def observe(_bed: BedId, _msg: Message, rows: FloatArray) -> None:
        beats.extend(beats_from_rows(rows))

    engine = Engine(settings, max_beds=1, clock=Clock.DATA, observer=observe)
    bed = BedId("agreement", "bed")
    batch = Batch()
    rolling: list[tuple[float, float | None]] = []
    runs: list[tuple[float, float]] = []
    n_chunk = max(1, round(_CHUNK_S * fs))
    for a, b in _runs(~np.isnan(samples)):
        runs.append((a / fs, b / fs))
        for i in range(a, b, n_chunk):
            chunk = AbpChunk(
                sample_time(_EPOCH, fs, i), fs, samples[i : min(i + n_chunk, b)].copy()
            )
            batch.clear()
            batch.add(bed, chunk, chunk.ts)
            engine.receive(batch)
            rolling.append((chunk.ts - _EPOCH, engine.monitor(bed).status().map))
    return (
        [dataclasses.replace(b, onset=b.onset - _EPOCH, end=b.end - _EPOCH) for b in beats],
        rolling,
        runs,
    )


def _ecg_leads(base: str, sampfrom: int, sampto: int | None) -> list[tuple[str, FloatArray, float]]:
    """The record's ECG leads over the same frames as the ABP: name, mV, fs."""
    import wfdb  # noqa: PLC0415 - slow to import; only this command needs it

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # (a multi-segment header lists no channels itself)
        names = list(wfdb.rdrecord(base, sampfrom=sampfrom, sampto=sampfrom + 1).sig_name or [])
    leads = []
    for lead in (name for name in ECG_LEADS if name in names):
        kwargs: dict[str, Any] = {"channel_names": [lead], "smooth_frames": False}
        kwargs["sampfrom"] = sampfrom
        if sampto is not None:
            kwargs["sampto"] = sampto
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            rec = wfdb.rdrecord(base, **kwargs)
        per_frame = int(rec.samps_per_frame[0]) if rec.samps_per_frame else 1
        leads.append((lead, np.asarray(rec.e_p_signal[0], np.float64), float(rec.fs) * per_frame))
    return leads


def _r_waves(ecg: FloatArray, fs: float) -> FloatArray:
    """R-wave times (s from the first sample) by wfdb's XQRS, run on each NaN-free run."""
    from wfdb import processing  # noqa: PLC0415

    times: list[float] = []
    for a, b in _runs(~np.isnan(ecg)):
        if (b - a) < 10 * fs:
            continue  # too short for XQRS to learn
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            idx = processing.xqrs_detect(sig=ecg[a:b], fs=fs, verbose=False)
        times.extend((a + int(i)) / fs for i in idx)
    return np.asarray(times, np.float64)


def _reference(base: str, sampfrom: int, sampto: int | None) -> tuple[str, FloatArray] | None:
    """The lead whose R waves make the most plausible rhythm (the most R waves at a median
    rate of 30-220 /min: a saturated or noisy lead gives none or nonsense) and its R waves."""
    best: tuple[str, FloatArray] | None = None
    for lead, sig, fs in _ecg_leads(base, sampfrom, sampto):
        r = _r_waves(sig, fs)
        if r.size < 3 or not 60 / 220 <= float(np.median(np.diff(r))) <= 2.0:
            continue
        if best is None or r.size > best[1].size:
            best = (lead, r)
    return best


def _numerics(base: str) -> tuple[FloatArray, FloatArray, float] | None:
    """``(times s from the record's start, ABPMean, numerics fs)`` of ``base + 'n'``."""
    import wfdb  # noqa: PLC0415

    path = base + "n"
    if not Path(path + ".hea").is_file():
        return None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        rec = wfdb.rdrecord(path)
    if _NUMERIC_MAP not in (rec.sig_name or []):
        return None
    values = np.asarray(rec.p_signal[:, rec.sig_name.index(_NUMERIC_MAP)], np.float64)
    fs = float(rec.fs)
    return np.arange(values.size) / fs, values, fs


def _scored(
    t: float,
    runs: Iterable[tuple[float, float]],
    artifacts: Iterable[tuple[float, float]],
    learn_s: float,
) -> bool:
    if not any(a + learn_s <= t < b for a, b in runs):
        return False
    return not any(a - ARTIFACT_MARGIN_S <= t <= b + ARTIFACT_MARGIN_S for a, b in artifacts)


def record_agreement(
    name: str,
    record: str | Path,
    *,
    artifacts: Sequence[tuple[float, float]] = (),
    channel: str = "ABP",
    sampfrom: int | None = None,
    sampto: int | None = None,
    settings: Settings | None = None,
) -> Agreement:
    """The agreement of one real record with its references (``artifacts``: the labelled
    artifact spans, seconds from the first ABP sample, left out of the scores)."""
    settings = settings or Settings()
    rec = read_abp(record, channel=channel, sampfrom=sampfrom, sampto=sampto)
    beats, rolling, runs = _engine_pass(rec.samples, rec.fs, settings)
    learn = settings.beats.learning_s
    notes: list[str] = []

    def keep(t: float) -> bool:
        return _scored(t, runs, artifacts, learn)

    end = max((b for _, b in runs), default=0.0)
    scored_s = sum(keep(t) for t in np.arange(0.0, end, 0.1).tolist()) * 0.1

    beats_all = beats_valid = None
    ref = _reference(str(record), rec.sampfrom, sampto)
    if ref is None:
        notes.append("no usable ECG lead: beats not scored")
    else:
        lead, r_all = ref
        r = [t for t in r_all.tolist() if keep(t)]
        onsets = [b.onset for b in beats if keep(b.onset)]
        valid = [b.onset for b in beats if b.valid and keep(b.onset)]
        beats_all = BeatScore(lead, len(r), *match_beats(r, onsets, PAT_WINDOW_S))
        beats_valid = BeatScore(lead, len(r), *match_beats(r, valid, PAT_WINDOW_S))
    map_score = map_minute = None
    numerics = _numerics(str(record))
    if numerics is None:
        notes.append("no numerics record: MAP not compared")
    else:
        times, values, _ = numerics
        offset = rec.sampfrom / rec.fs  # the numerics count from the record's start
        ts = np.array([t for t, _ in rolling])
        pairs, minute = [], []
        for t_rec, value in zip(times.tolist(), values.tolist(), strict=True):
            t = t_rec - offset
            if not (value > 0 and keep(t)) or ts.size == 0:
                continue
            k = int(np.searchsorted(ts, t, side="right")) - 1
            ours = rolling[k][1] if k >= 0 and t - ts[k] <= _CHUNK_S else None
            if ours is not None and not math.isnan(ours):
                pairs.append((round(t, 1), float(value), round(float(ours), 1)))
            last = [b.map for b in beats if b.valid and t - 60.0 <= b.end <= t]
            if last:
                minute.append((round(t, 1), float(value), round(float(np.mean(last)), 1)))
        map_score, map_minute = MapScore(tuple(pairs)), MapScore(tuple(minute))
    return Agreement(
        name=name,
        scored_s=round(scored_s, 1),
        beats_all=beats_all,
        beats_valid=beats_valid,
        map=map_score,
        map_minute=map_minute,
        notes=tuple(notes),
    )


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:.1f} %"


def _mm(x: float | None) -> str:
    return "n/a" if x is None else f"{x:+.1f}"


def agreement_table(results: Sequence[Agreement]) -> str:
    """The results as a Markdown table (what docs/evaluation.md carries)."""
    header = (
        "| record | scored s | ECG lead | R waves | Se (all beats) | +P (all) | "
        "Se (valid beats) | +P (valid) | MAP pairs | rolling MAP - monitor: bias, SD, max | "
        "minute mean - monitor: bias, SD, max |"
    )
    rows = [header, "|" + "---|" * 11]
    for a in results:
        ba, bv = a.beats_all, a.beats_valid
        rows.append(
            f"| {a.name} | {a.scored_s:.0f} | {ba.lead if ba else 'none'} | "
            f"{ba.reference if ba else 'n/a'} | "
            f"{_pct(ba.sensitivity if ba else None)} | {_pct(ba.ppv if ba else None)} | "
            f"{_pct(bv.sensitivity if bv else None)} | {_pct(bv.ppv if bv else None)} | "
            f"{a.map.n if a.map else 'n/a'} | {_map_cell(a.map)} | {_map_cell(a.map_minute)} |"
        )
    return "\n".join(rows)


def _map_cell(m: MapScore | None) -> str:
    if m is None or not m.n:
        return "n/a"
    sd = "n/a" if m.sd is None else f"{m.sd:.1f}"
    return f"{_mm(m.bias)}, {sd}, {m.max_abs:.1f} mmHg"
