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
from collections import deque
from dataclasses import dataclass
from enum import StrEnum
from typing import Final

import numpy as np
import numpy.typing as npt
from scipy.ndimage import maximum_filter1d
from scipy.signal import bessel, group_delay, lfilter, lfilter_zi

from streamproc.core.messages import AbpChunk
from streamproc.core.settings import BeatSettings

__all__ = ["Beat", "BeatDetector", "BeatQuality"]

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
        self._history: deque[float] = deque(maxlen=_HISTORY)
        self._suspects: deque[float] = deque(maxlen=self._confirm)

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
                if len(suspects) >= self._confirm:
                    level = _median(suspects)
                    if max(suspects) - min(suspects) <= self._tolerance * level:
                        history.clear()
                        history.extend(suspects)
                        suspects.clear()
                return False
        history.append(value)
        self._suspects.clear()
        return True


def _median(values: deque[float]) -> float:
    s = sorted(values)
    mid = len(s) // 2
    return s[mid] if len(s) % 2 else 0.5 * (s[mid - 1] + s[mid])


@functools.lru_cache(maxsize=64)
def _design(cutoff: float, fs: float) -> tuple[FloatArray, FloatArray, FloatArray, float]:
    """The low-pass filter for ``fs``: coefficients, unit initial state, group delay.

    Designed once per sampling rate (a new segment starts at every gap, and
    scipy's design costs more than filtering a chunk).
    """
    b, a = bessel(2, cutoff, fs=fs, norm="mag")
    b = np.asarray(b, np.float64)
    a = np.asarray(a, np.float64)
    zi = np.asarray(lfilter_zi(b, a), np.float64)
    for arr in (b, a, zi):
        arr.flags.writeable = False
    delay = float(group_delay((b, a), w=[1.0], fs=fs)[1][0])
    return b, a, zi, delay


class _Segment:
    """Detection state over one continuous run of samples."""

    __slots__ = (
        "a",
        "b",
        "b0",
        "c_last",
        "c_tail",
        "delay",
        "fs",
        "h",
        "jump",
        "last_cross",
        "learn_n",
        "learned",
        "max_beat_n",
        "n_end",
        "pending",
        "prev_above",
        "refr",
        "rhythm",
        "settings",
        "ssf_hist",
        "t0",
        "w",
        "y_buf",
        "zi",
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
        self.b, self.a, zi_unit, self.delay = _design(cutoff, fs)
        self.zi: FloatArray = zi_unit * first
        self.w = max(round(settings.ssf_window_s * fs), 1)
        h = max(round(settings.threshold_window_s * fs), 1)
        self.h = h | 1  # odd: the causal maximum filter's origin is exact
        self.learn_n = min(max(round(settings.learning_s * fs), 1), self.h)
        self.refr = max(round(settings.refractory_s * fs), self.w + 1)
        self.max_beat_n = round(settings.max_beat_s * fs)
        self.n_end = 0
        self.b0 = 0
        self.y_buf: FloatArray = np.empty(0, np.float64)
        self.c_last = 0.0
        self.c_tail: FloatArray = np.zeros(self.w, np.float64)
        self.ssf_hist: FloatArray = np.empty(0, np.float64)
        self.learned = False
        self.prev_above = True
        self.last_cross = -(1 << 62)
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
        return self.t0 + self.n_end / self.fs

    def feed(self, x: FloatArray) -> list[Beat]:
        st = self.settings
        w = self.w
        n_new = x.size
        start = self.n_end
        y, self.zi = lfilter(self.b, self.a, x, zi=self.zi)
        y = np.asarray(y, np.float64)
        y_last = self.y_buf[-1] if self.y_buf.size else y[0]
        # Running sum of the positive slopes: strictly sequential, so the same
        # numbers come out however the samples were chunked.
        c = np.empty(n_new + 1, np.float64)
        c[0] = self.c_last
        np.subtract(y[1:], y[:-1], out=c[2:])
        c[1] = y[0] - y_last
        np.maximum(c[1:], 0.0, out=c[1:])
        np.cumsum(c, out=c)
        c_new = c[1:]
        self.c_last = float(c_new[-1])
        c_ext = np.concatenate((self.c_tail, c_new))
        ssf = c_new - c_ext[:n_new]
        self.c_tail = c_ext[-w:]
        self.y_buf = np.concatenate((self.y_buf, y))
        self.n_end = start + n_new
        ssf_ext = np.concatenate((self.ssf_hist, ssf))

        if not self.learned:
            if self.n_end < self.learn_n:
                self.ssf_hist = ssf_ext
                return []
            # Learning done: scan the whole segment so far, with the level of
            # the learning window for its own samples.
            self.learned = True
            level = maximum_filter1d(ssf_ext, self.h, origin=self.h // 2, mode="constant")
            level[: self.learn_n] = float(ssf_ext[: self.learn_n].max())
            ssf_scan = ssf_ext
            scan_from = 0
        else:
            level = maximum_filter1d(ssf_ext, self.h, origin=self.h // 2, mode="constant")
            level = level[self.ssf_hist.size :]
            ssf_scan = ssf
            scan_from = start
        self.ssf_hist = ssf_ext[-(self.h - 1) :] if self.h > 1 else ssf_ext[:0]

        thr = np.maximum(level * st.threshold_fraction, st.min_upstroke_mmhg)
        above = ssf_scan > thr
        rising = np.empty(above.size, np.bool_)
        rising[0] = above[0] and not self.prev_above
        np.greater(above[1:], above[:-1], out=rising[1:])
        self.prev_above = bool(above[-1])
        candidates = np.flatnonzero(rising)
        beats: list[Beat] = []
        if candidates.size:
            accepted: list[int] = []
            last = self.last_cross
            refr = self.refr
            for cand in (candidates + scan_from).tolist():
                if cand - last >= refr:
                    accepted.append(cand)
                    last = cand
            self.last_cross = last
            if accepted:
                beats = self._onsets_to_beats(accepted)
        self._trim()
        return beats

    def _onsets_to_beats(self, crossings: list[int]) -> list[Beat]:
        """Turn accepted crossings into onsets, and the completed beats into :class:`Beat`."""
        w = self.w
        b0 = self.b0
        y = self.y_buf
        onsets = [] if self.pending is None else [self.pending]
        for cross in crossings:
            lo = max(cross - w, b0)
            onset = lo + int(y[lo - b0 : cross + 1 - b0].argmin())
            if onset > 0:  # at 0, the upstroke began before the segment: no foot
                onsets.append(onset)
        if not onsets:
            return []
        self.pending = onsets[-1]
        if len(onsets) < 2:
            return []
        on = np.asarray(onsets, np.int64)
        lengths = np.diff(on)
        starts = on[:-1] - on[0]
        span = y[onsets[0] - b0 : onsets[-1] - b0]
        feet = y[on - b0]
        sums = np.add.reduceat(span, starts)
        tops = np.maximum.reduceat(span, starts)
        lows = np.minimum.reduceat(span, starts)
        st = self.settings
        # Share of each beat's samples near its maximum (a square wave's plateau).
        band = np.minimum(st.plateau_band_mmhg, st.plateau_band_pp_fraction * (tops - feet[:-1]))
        near_top = span >= np.repeat(tops - band, lengths)
        plateau = np.add.reduceat(near_top, starts, dtype=np.int64) / lengths
        return self._classify(
            onsets=onsets,
            feet=feet.tolist(),
            means=(sums / lengths).tolist(),
            tops=tops.tolist(),
            lows=lows.tolist(),
            plateaus=plateau.tolist(),
        )

    def _classify(
        self,
        *,
        onsets: list[int],
        feet: list[float],
        means: list[float],
        tops: list[float],
        lows: list[float],
        plateaus: list[float],
    ) -> list[Beat]:
        """Quality verdicts, in order of precedence; the beats in order."""
        st = self.settings
        fs = self.fs
        t0 = self.t0
        delay = self.delay
        max_n = self.max_beat_n
        out: list[Beat] = []
        t_end = t0 + (onsets[0] - delay) / fs
        for k, mean_p in enumerate(means):
            n = onsets[k + 1] - onsets[k]
            t_start = t_end
            t_end = t0 + (onsets[k + 1] - delay) / fs
            if n > max_n:
                continue  # a pause or a lost signal, not a beat
            sbp = tops[k]
            dbp = feet[k]
            pp = sbp - dbp
            hr = 60.0 * fs / n
            if lows[k] < 0.0:
                q = BeatQuality.NEGATIVE
            elif sbp >= st.max_sbp:
                q = BeatQuality.SATURATED
            elif plateaus[k] > st.max_plateau_fraction:
                q = BeatQuality.SQUARE_WAVE
            elif not (
                st.min_sbp <= sbp <= st.max_sbp
                and st.min_dbp <= dbp <= st.max_dbp
                and st.min_map <= mean_p <= st.max_map
                and st.min_pulse_pressure <= pp <= st.max_pulse_pressure
                and st.min_hr <= hr <= st.max_hr
            ):
                q = BeatQuality.OUT_OF_RANGE
            elif abs(feet[k + 1] - dbp) > st.max_jump_fraction * mean_p:
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
        keep_from = self.n_end - self.w - 1
        pending = self.pending
        if pending is not None:
            # Future onsets lie at or after n_end - w: too far for a beat?
            if self.n_end - self.w - pending > self.max_beat_n:
                self.pending = None
            else:
                keep_from = min(keep_from, pending)
        if not self.learned:
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
