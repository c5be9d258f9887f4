"""Streaming pulse-onset detection on arterial pressure, and per-beat measures.

The detector follows Zong's ``wabp`` (Zong et al., Computers in Cardiology
2003) in spirit, vectorised over each chunk:

1. low-pass filter (2nd-order Bessel, -3 dB at ``lowpass_hz``), its state carried
   from chunk to chunk;
2. slope-sum function (SSF): the sum of the positive first differences of the
   filtered pressure over the last ``ssf_window_s``;
3. adaptive threshold: ``threshold_fraction`` of the SSF peak level, the
   largest SSF of the last ``threshold_window_s``. After a learning phase of
   ``learning_s`` at the start of each segment (the level of the whole
   learning window), the level follows the recent peaks, and when no upstroke
   as large as the old ones comes for ``threshold_window_s`` the old peaks
   leave the window: the threshold falls and detection re-acquires after an
   amplitude drop. (wabp keeps a running mean of the detected peaks instead;
   a windowed maximum needs no per-beat feedback, so it is computed exactly
   and vectorised over a whole chunk.) It never falls below
   ``min_upstroke_mmhg``: a flat or disconnected line yields no beats;
4. a pulse is an upward crossing of the threshold, at least ``refractory_s``
   after the previous one; its onset is the foot of the upstroke, the minimum
   of the filtered pressure in the ``ssf_window_s`` before the crossing.

A beat runs from one onset to the next and is emitted when the next onset is
found. SBP is the beat's maximum, DBP the pressure at its onset, MAP the mean
of the samples over the beat (area / duration, not ``DBP + PP/3``), HR
``60 / duration`` (all on the filtered pressure; onset times are corrected for
the filter's group delay).

Everything depends on sample indices counted from the start of a segment,
never on how the waveform was cut into chunks: the filter and the running
sums are sequential with carried state, the sliding maximum is exact, so
chunkings give the same beats (floats to rounding). A chunk that does not
continue the previous one (time gap or overlap of more than half a sample, or
a different ``fs``) starts a new segment: the partial beat is dropped and the
detector learns again.

Each beat gets a :class:`BeatQuality` verdict, the first of these that applies:

- ``negative``: a sample below 0 mmHg (calibration signal, zero offset);
- ``saturated``: SBP at or beyond ``max_sbp`` (top of the transducer's range);
- ``square_wave``: more than ``max_plateau_fraction`` of the beat within
  ``plateau_band_mmhg`` (at most ``plateau_band_pp_fraction`` of the pulse
  pressure) of its maximum: a fast-flush or calibration plateau;
- ``out_of_range``: SBP, DBP, MAP, pulse pressure or HR outside the ranges;
- ``jump``: the beat ends on a foot more than ``max_jump_fraction`` x MAP
  away from the foot it started on (the line came back from a flat stretch
  within the beat);
- ``premature``: shorter than ``min_rr_fraction`` of the median of the recent
  beats (a beat split by an artifact, or an ectopic beat);
- ``jump``: MAP more than ``max_jump_fraction`` from the median of the recent
  valid beats.

A genuine low pressure with a small pulse (38/25 mmHg) is none of these, and
valid. ``jump_confirm_beats`` consecutive suspect beats (of the last two
checks) that agree with each other (spread within ``jump_confirm_fraction``)
become the new reference: the beats after them are judged against it, so a
real sudden change of pressure or rate becomes valid within a few beats.
Beats longer than ``max_beat_s`` (pauses, lost signal) are not emitted.

Pure: no I/O, no logging, no clock.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from enum import StrEnum
from typing import Final

import numpy as np
import numpy.typing as npt
from scipy.signal import bessel, group_delay, lfilter_zi

from streamproc.core import _kernels
from streamproc.core.messages import AbpChunk
from streamproc.core.settings import BeatSettings

__all__ = ["Beat", "BeatDetector", "BeatQuality", "warm_up"]

FloatArray = npt.NDArray[np.float64]

#: The low-pass cut-off never exceeds this fraction of the sampling rate.
_MAX_CUTOFF_FRACTION: Final = 0.45
#: Recent accepted beats whose median is the reference of the jump and rhythm checks.
_HISTORY: Final = 8


class BeatQuality(StrEnum):
    """Signal-quality verdict of one beat: ``valid`` or the reason it is not."""

    VALID = "valid"
    OUT_OF_RANGE = "out_of_range"  # SBP/DBP/MAP/pulse pressure/HR outside physiology
    JUMP = "jump"  # implausible beat-to-beat change (of MAP, not yet confirmed; or of the foot)
    SQUARE_WAVE = "square_wave"  # fast-flush / calibration plateau
    SATURATED = "saturated"  # at the top or bottom of the transducer's range
    NEGATIVE = "negative"  # below zero: calibration signal or zeroing offset
    PREMATURE = "premature"  # much shorter than the recent beats: split by an artifact, or ectopic


@dataclass(frozen=True, slots=True)
class Beat:
    """One beat, from its pulse onset to the next beat's onset (data times, epoch s)."""

    onset: float
    end: float
    sbp: float
    dbp: float
    map: float
    hr: float
    quality: BeatQuality

    @property
    def valid(self) -> bool:
        return self.quality is BeatQuality.VALID


class _LevelCheck:
    """Plausibility of a beat measure against the median of recent accepted beats.

    A value more than ``below`` (fraction) under the reference, or more than
    ``above`` over it, is suspect. ``confirm`` consecutive suspects that agree
    with each other (spread within ``tolerance`` of their median) become the
    new reference: a real change is accepted after a few beats.
    """

    __slots__ = ("_above", "_below", "_confirm", "_history", "_suspects", "_tolerance")

    def __init__(self, *, below: float, above: float, confirm: int, tolerance: float) -> None:
        self._below = below
        self._above = above
        self._confirm = max(confirm, 1)
        self._tolerance = tolerance
        # plain lists capped by hand: a deque costs ~600 bytes even empty, per bed
        self._history: list[float] = []
        self._suspects: list[float] = []

    def judge(self, value: float) -> bool:
        """Whether ``value`` is plausible; learn from it either way."""
        history = self._history
        if history:
            ordered = sorted(history)
            mid = len(ordered) // 2
            ref = ordered[mid] if len(ordered) % 2 else 0.5 * (ordered[mid - 1] + ordered[mid])
            if value < ref * (1.0 - self._below) or value > ref * (1.0 + self._above):
                suspects = self._suspects
                suspects.append(value)
                if len(suspects) > self._confirm:
                    del suspects[0]
                if len(suspects) >= self._confirm:
                    level = _median(suspects)
                    if max(suspects) - min(suspects) <= self._tolerance * level:
                        history[:] = suspects[-_HISTORY:]
                        suspects.clear()
                return False
        history.append(value)
        if len(history) > _HISTORY:
            del history[0]
        self._suspects.clear()
        return True


def _median(values: list[float]) -> float:
    s = sorted(values)
    mid = len(s) // 2
    return s[mid] if len(s) % 2 else 0.5 * (s[mid - 1] + s[mid])


@functools.lru_cache(maxsize=64)
def _design(cutoff: float, fs: float) -> tuple[FloatArray, FloatArray, float]:
    """The low-pass filter for ``fs``: biquad coefficients, unit initial state, group delay.

    Designed once per sampling rate (a new segment starts at every gap, and
    scipy's design costs more than filtering a chunk).
    """
    b, a = bessel(2, cutoff, fs=fs, norm="mag")
    b = np.asarray(b, np.float64) / a[0]
    a = np.asarray(a, np.float64) / a[0]
    zi = np.asarray(lfilter_zi(b, a), np.float64)
    coef = np.array([b[0], b[1], b[2], a[1], a[2]], np.float64)
    for arr in (coef, zi):
        arr.flags.writeable = False
    delay = float(group_delay((b, a), w=[1.0], fs=fs)[1][0])
    return coef, zi, delay


class _Segment:
    """Detection state over one continuous run of samples."""

    __slots__ = (
        "b0",
        "c_tail",
        "coef",
        "delay",
        "fs",
        "fstate",
        "h",
        "istate",
        "jump",
        "learn_n",
        "max_beat_n",
        "pending",
        "refr",
        "rhythm",
        "settings",
        "ssf_hist",
        "t0",
        "w",
        "y_buf",
    )

    def __init__(self, settings: BeatSettings, t0: float, fs: float, first: float) -> None:
        self.settings = settings
        self.t0 = t0
        self.fs = fs
        cutoff = min(settings.lowpass_hz, _MAX_CUTOFF_FRACTION * fs)
        # 2nd-order Bessel: a flat group delay keeps the pulse's shape, and its
        # step response barely overshoots (0.4%), so a flush plateau stays
        # flat. A single biquad: lfilter's direct form is as accurate as
        # sections here, and much cheaper to call on small chunks.
        self.coef, zi_unit, self.delay = _design(cutoff, fs)
        # carried state of the compiled loops (see ``_kernels.detect``)
        self.fstate: FloatArray = np.zeros(4, np.float64)
        self.fstate[_kernels.Z0 : _kernels.Z1 + 1] = zi_unit * first
        self.istate = np.zeros(4, np.int64)
        self.istate[_kernels.PREV_ABOVE] = 1
        self.istate[_kernels.LAST_CROSS] = -(1 << 62)
        self.w = max(round(settings.ssf_window_s * fs), 1)
        h = max(round(settings.threshold_window_s * fs), 1)
        self.h = h | 1  # odd: the causal maximum filter's origin is exact
        self.learn_n = min(max(round(settings.learning_s * fs), 1), self.h)
        self.refr = max(round(settings.refractory_s * fs), self.w + 1)
        self.max_beat_n = round(settings.max_beat_s * fs)
        self.b0 = 0
        self.y_buf: FloatArray = np.empty(0, np.float64)
        self.c_tail: FloatArray = np.zeros(self.w, np.float64)
        self.ssf_hist: FloatArray = np.empty(0, np.float64)
        self.pending: int | None = None
        self.jump = _LevelCheck(
            below=settings.max_jump_fraction,
            above=settings.max_jump_fraction,
            confirm=settings.jump_confirm_beats,
            tolerance=settings.jump_confirm_fraction,
        )
        self.rhythm = _LevelCheck(
            below=1.0 - settings.min_rr_fraction,
            above=math.inf,
            confirm=settings.jump_confirm_beats,
            tolerance=settings.jump_confirm_fraction,
        )

    @property
    def expected_t0(self) -> float:
        return self.t0 + int(self.istate[_kernels.N_END]) / self.fs

    def feed(self, x: FloatArray) -> list[Beat]:
        st = self.settings
        self.y_buf, self.ssf_hist, onsets = _kernels.detect(
            x,
            self.coef,
            self.fstate,
            self.istate,
            self.c_tail,
            self.ssf_hist,
            self.y_buf,
            self.b0,
            self.h,
            self.learn_n,
            self.refr,
            st.threshold_fraction,
            st.min_upstroke_mmhg,
        )
        beats: list[Beat] = []
        if onsets.size:
            beats = self._onsets_to_beats(onsets.tolist())
        self._trim()
        return beats

    def _onsets_to_beats(self, found: list[int]) -> list[Beat]:
        """Turn new onsets into the completed beats (each up to the next onset)."""
        onsets = found if self.pending is None else [self.pending, *found]
        self.pending = onsets[-1]
        if len(onsets) < 2:
            return []
        st = self.settings
        m = _kernels.beat_measures(
            self.y_buf,
            self.b0,
            np.asarray(onsets, np.int64),
            st.plateau_band_mmhg,
            st.plateau_band_pp_fraction,
        )
        return self._classify(onsets, m.tolist())

    def _classify(self, onsets: list[int], measures: list[list[float]]) -> list[Beat]:
        """Quality verdicts, in order of precedence; the beats in order.

        ``measures`` rows are ``beat_measures``'s: foot, mean, max, min,
        plateau share, next foot.
        """
        st = self.settings
        fs = self.fs
        t0 = self.t0
        delay = self.delay
        max_n = self.max_beat_n
        out: list[Beat] = []
        t_end = t0 + (onsets[0] - delay) / fs
        for k, (dbp, mean_p, sbp, low, plateau, next_foot) in enumerate(measures):
            n = onsets[k + 1] - onsets[k]
            t_start = t_end
            t_end = t0 + (onsets[k + 1] - delay) / fs
            if n > max_n:
                continue  # a pause or a lost signal, not a beat
            pp = sbp - dbp
            hr = 60.0 * fs / n
            if low < 0.0:
                q = BeatQuality.NEGATIVE
            elif sbp >= st.max_sbp:
                q = BeatQuality.SATURATED
            elif plateau > st.max_plateau_fraction:
                q = BeatQuality.SQUARE_WAVE
            elif not (
                st.min_sbp <= sbp <= st.max_sbp
                and st.min_dbp <= dbp <= st.max_dbp
                and st.min_map <= mean_p <= st.max_map
                and st.min_pulse_pressure <= pp <= st.max_pulse_pressure
                and st.min_hr <= hr <= st.max_hr
            ):
                q = BeatQuality.OUT_OF_RANGE
            elif abs(next_foot - dbp) > st.max_jump_fraction * mean_p:
                # The beat ends on a foot far from the one it started on: the
                # level moved within the beat (a line returning from a flat
                # stretch), not a physiological beat.
                q = BeatQuality.JUMP
            elif not self.rhythm.judge(n):
                q = BeatQuality.PREMATURE
            elif not self.jump.judge(mean_p):
                q = BeatQuality.JUMP
            else:
                q = BeatQuality.VALID
            out.append(Beat(t_start, t_end, sbp, dbp, mean_p, hr, q))
        return out

    def _trim(self) -> None:
        """Forget samples no future beat can need."""
        n_end = int(self.istate[_kernels.N_END])
        keep_from = n_end - self.w - 1
        pending = self.pending
        if pending is not None:
            # Future onsets lie at or after n_end - w: too far for a beat?
            if n_end - self.w - pending > self.max_beat_n:
                self.pending = None
            else:
                keep_from = min(keep_from, pending)
        if not self.istate[_kernels.LEARNED]:
            return
        keep_from = max(keep_from, self.b0)
        if keep_from > self.b0:
            self.y_buf = self.y_buf[keep_from - self.b0 :]
            self.b0 = keep_from


class BeatDetector:
    """Feed chunks of one bed's ABP; get back the beats each chunk completed."""

    __slots__ = ("_segment", "settings")

    def __init__(self, settings: BeatSettings) -> None:
        self.settings = settings
        self._segment: _Segment | None = None

    def reset(self) -> None:
        """Forget everything: the next chunk starts a new segment."""
        self._segment = None

    def feed(self, chunk: AbpChunk) -> list[Beat]:
        """Process one chunk; return the beats whose next onset it contained.

        A chunk that does not continue the previous one (start more than half
        a sample away from where the previous ended, or another ``fs``) starts
        a new segment: the beat in progress is dropped and detection re-learns.
        """
        x = chunk.samples
        seg = self._segment
        if (
            seg is None
            or chunk.fs != seg.fs
            or math.fabs(chunk.t0 - seg.expected_t0) > 0.5 / seg.fs
        ):
            seg = _Segment(self.settings, chunk.t0, chunk.fs, float(x[0]))
            self._segment = seg
        return seg.feed(x)


_warm: list[bool] = []


def warm_up() -> None:
    """Get the compiled loops ready now rather than on the first live chunk.

    numba compiles ``_kernels`` on first use (or loads them from its on-disk
    cache, still a fraction of a second): done here, once per process, with
    the same argument types the detector passes, so that the first chunks of a
    ward do not wait for it.
    """
    if _warm:
        return
    fs = 125.0
    t = np.arange(4 * 125) / fs
    x = 80.0 + 20.0 * np.maximum(np.sin(2.0 * np.pi * 1.2 * t), 0.0) ** 2
    det = BeatDetector(BeatSettings())
    for k in range(4):
        det.feed(AbpChunk(1.0e9 + k, fs, x[k * 125 : (k + 1) * 125].copy()))
    y = np.asarray(x, np.float64)
    _kernels.beat_measures(y, 0, np.array([0, 100, 200], np.int64), 5.0, 0.1)
    _warm.append(True)
