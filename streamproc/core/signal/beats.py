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
- ``no_pulse``: a pulse pressure below ``pulse_min_pp_mmhg`` at a mean below
  ``no_pulse_below_map`` (and not below ``min_map``): a bump no beating heart
  leaves (a noisy level near 18 mmHg with 4 mmHg bumps is no pulse; a patient
  in shock at 45/27 has one);
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

Each beat's row also carries what the line-quality judgement
(``_kernels.judge_line``, run by the monitor's compiled per-beat path) reads of
its shape: the upstroke's steepest rise, the turns (changes of direction from
the systolic peak on, past ``turn_fraction`` of the pulse pressure: peak,
notch, ringing) and the time to the peak.

Pure: no I/O, no logging, no clock.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from enum import StrEnum
from typing import Final

import numpy as np
import numpy.typing as npt

from streamproc.core.protocol.messages import AbpChunk, continues, sample_time
from streamproc.core.protocol.settings import BeatSettings
from streamproc.core.signal import _kernels, state

__all__ = ["Beat", "BeatDetector", "BeatQuality", "beats_from_rows", "warm_up", "warm_up_chunks"]

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]

#: The low-pass cut-off never exceeds this fraction of the sampling rate.
_MAX_CUTOFF_FRACTION: Final = 0.45


class BeatQuality(StrEnum):
    """Signal-quality verdict of one beat: ``valid`` or the reason it is not."""

    VALID = "valid"
    OUT_OF_RANGE = "out_of_range"  # SBP/DBP/MAP/pulse pressure/HR outside physiology
    JUMP = "jump"  # implausible beat-to-beat change (of MAP, not yet confirmed; or of the foot)
    SQUARE_WAVE = "square_wave"  # fast-flush / calibration plateau
    SATURATED = "saturated"  # at the top or bottom of the transducer's range
    NEGATIVE = "negative"  # below zero: calibration signal or zeroing offset
    PREMATURE = "premature"  # much shorter than the recent beats: split by an artifact, or ectopic
    NO_PULSE = "no_pulse"  # a bump too small at a level too low to be an arterial pulse


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


#: A segment's buffers start empty and grow to what a chunk needs and this much more
#: (a bed's chunks are alike: the first few sizes them for good).
_GROWTH: Final = 1.25

_STEP_ROOM: Final = _kernels.STEP_ROOM

#: ``state.Q_*`` code -> verdict.
_QUALITY: Final = {
    state.Q_VALID: BeatQuality.VALID,
    state.Q_NEGATIVE: BeatQuality.NEGATIVE,
    state.Q_SATURATED: BeatQuality.SATURATED,
    state.Q_SQUARE_WAVE: BeatQuality.SQUARE_WAVE,
    state.Q_OUT_OF_RANGE: BeatQuality.OUT_OF_RANGE,
    state.Q_JUMP: BeatQuality.JUMP,
    state.Q_PREMATURE: BeatQuality.PREMATURE,
    state.Q_NO_PULSE: BeatQuality.NO_PULSE,
}

_NO_ROWS: Final[FloatArray] = np.empty((0, state.B_COLUMNS), np.float64)
_NO_ROWS.flags.writeable = False


def beats_from_rows(rows: FloatArray) -> list[Beat]:
    """``_kernels.classify`` rows as :class:`Beat` objects."""
    return [
        Beat(onset, end, sbp, dbp, mean_p, hr, _QUALITY[int(q)])
        for onset, end, sbp, dbp, mean_p, hr, q, *_ in rows.tolist()
    ]


@functools.lru_cache(maxsize=16)
def _limits(st: BeatSettings) -> FloatArray:
    """The quality limits of ``st`` in ``_kernels.classify``'s layout (``L_*``)."""
    lim = np.empty(state.L_SIZE, np.float64)
    lim[state.L_MAX_SBP] = st.max_sbp
    lim[state.L_MAX_PLATEAU] = st.max_plateau_fraction
    lim[state.L_MIN_SBP] = st.min_sbp
    lim[state.L_MIN_DBP] = st.min_dbp
    lim[state.L_MAX_DBP] = st.max_dbp
    lim[state.L_MIN_MAP] = st.min_map
    lim[state.L_MAX_MAP] = st.max_map
    lim[state.L_MIN_PP] = st.min_pulse_pressure
    lim[state.L_MAX_PP] = st.max_pulse_pressure
    lim[state.L_MIN_HR] = st.min_hr
    lim[state.L_MAX_HR] = st.max_hr
    lim[state.L_MAX_JUMP] = st.max_jump_fraction
    lim[state.L_BAND_MMHG] = st.plateau_band_mmhg
    lim[state.L_BAND_PP] = st.plateau_band_pp_fraction
    lim[state.L_TURN_PP] = st.turn_fraction
    lim[state.L_PULSE_PP] = st.pulse_min_pp_mmhg
    lim[state.L_NO_PULSE_MAP] = st.no_pulse_below_map
    lim.flags.writeable = False
    return lim


#: ``scipy.signal.besselap(2, norm="mag")``: the analog prototype's pole (with its
#: conjugate) and gain, to the bit (the design below is scipy's ``bessel(2, ...,
#: norm="mag", fs=fs)`` step by step in numpy: importing ``scipy.signal`` costs
#: ~0.8 s of every start; ``tests/shell/test_warm.py`` checks it equals scipy's).
_BESSEL2_POLE: Final = complex(
    float.fromhex("-0x1.1a028b781f982p+0"), float.fromhex("0x1.45a3146a88452p-1")
)
_BESSEL2_GAIN: Final = float.fromhex("0x1.9e3779b97f4a0p+0")


def _bessel2(cutoff: float, fs: float) -> tuple[FloatArray, FloatArray]:
    """``scipy.signal.bessel(2, cutoff, fs=fs, norm="mag")``: ``(b, a)``."""
    wn = np.asarray(cutoff, np.float64) / (fs / 2)
    warped = float(2 * 2.0 * np.tan(np.pi * wn / 2.0))  # pre-warped (iirfilter, fs=2)
    # lp2lp_zpk: no zeros, the poles scaled by ``warped``
    p = warped * np.array([_BESSEL2_POLE, _BESSEL2_POLE.conjugate()], np.complex128)
    k = _BESSEL2_GAIN * warped**2
    # bilinear_zpk (fs=2): both zeros at Nyquist
    fs2 = 2.0 * 2.0
    p_z = (fs2 + p) / (fs2 - p)
    k_z = k * np.real(np.prod(fs2 - np.zeros(0, np.float64)) / np.prod(fs2 - p))
    # zpk2tf
    b = np.ones(1, np.float64)
    for zero in -np.ones(2, np.float64):
        b = np.convolve(b, np.stack((np.float64(1.0), -zero)), mode="full")
    b = np.multiply(np.atleast_1d(np.asarray(k_z, np.float64)), b)
    a = np.ones(1, np.complex128)
    for pole in p_z:
        a = np.convolve(a, np.stack((np.complex128(1.0), -pole)), mode="full")
    return b, np.real(a).copy()


def _lfilter_zi(b: FloatArray, a: FloatArray) -> FloatArray:
    """``scipy.signal.lfilter_zi(b, a)`` of a biquad (``a[0] == 1``)."""
    i_minus_a = np.eye(2) - np.array([[-a[1], -a[2]], [1.0, 0.0]]).T
    return np.asarray(np.linalg.solve(i_minus_a, b[1:] - a[1:] * b[0]), np.float64)


def _group_delay(b: FloatArray, a: FloatArray, f: float, fs: float) -> float:
    """``scipy.signal.group_delay((b, a), w=[f], fs=fs)[1][0]``, in samples."""
    w = 2 * np.pi * np.atleast_1d(np.float64(f)) / fs
    c = np.convolve(b, np.conjugate(a[::-1]))
    cr = c * np.arange(c.size)
    z = np.exp(-1j * w)
    gd = np.real(np.polyval(cr[::-1], z) / np.polyval(c[::-1], z)) - a.size + 1
    return float(gd[0])


@functools.lru_cache(maxsize=64)
def _design(cutoff: float, fs: float) -> tuple[FloatArray, FloatArray, float]:
    """The low-pass filter for ``fs``: biquad coefficients, unit initial state, group delay.

    Designed once per sampling rate (a new segment starts at every gap, and
    the design costs more than filtering a chunk).
    """
    b, a = _bessel2(cutoff, fs)
    b = np.asarray(b, np.float64) / a[0]
    a = np.asarray(a, np.float64) / a[0]
    zi = _lfilter_zi(b, a)
    coef = np.array([b[0], b[1], b[2], a[1], a[2]], np.float64)
    for arr in (coef, zi):
        arr.flags.writeable = False
    delay = _group_delay(b, a, 1.0, fs)
    return coef, zi, delay


class _Segment:
    """Detection state over one continuous run of samples."""

    __slots__ = (
        "arrays",
        "dq",
        "expected_t0",
        "fs",
        "ipar",
        "istate",
        "learning",
        "n_end",
        "rows",
        "sf",
        "si",
        "sp",
        "ssf",
        "t0",
        "ybuf",
    )

    def __init__(self, settings: BeatSettings, t0: float, fs: float, first: float) -> None:
        self.t0 = t0
        self.fs = fs
        self.n_end = 0  # samples seen (``istate[N_END]``, kept here too for a cheap check)
        self.learning = True  # until the learning window is complete (``istate[LEARNED]``)
        self.expected_t0 = t0  # where the next chunk must start (``messages.continues``)
        cutoff = min(settings.lowpass_hz, _MAX_CUTOFF_FRACTION * fs)
        # 2nd-order Bessel: a flat group delay keeps the pulse's shape, and its
        # step response barely overshoots (0.4%), so a flush plateau stays
        # flat. A single biquad: lfilter's direct form is as accurate as
        # sections here, and much cheaper to call on small chunks.
        coef, zi_unit, delay = _design(cutoff, fs)
        w = max(round(settings.ssf_window_s * fs), 1)
        h = max(round(settings.threshold_window_s * fs), 1) | 1  # odd: exact causal maximum
        confirm = max(settings.jump_confirm_beats, 1)
        # the compiled loops' parameters and carried state, packed (``state.SP_*``,
        # ``SI_*``, ``SF_*``; see ``_kernels.detect``)
        self.sp: FloatArray = np.empty(state.SP_SIZE, np.float64)
        self.sp[state.SP_COEF : state.SP_FPAR] = coef
        fpar = self.sp[state.SP_FPAR : state.SP_LIMITS]
        fpar[state.FP_FRAC] = settings.threshold_fraction
        fpar[state.FP_MIN_UP] = settings.min_upstroke_mmhg
        fpar[state.FP_T0] = t0
        fpar[state.FP_FS] = fs
        fpar[state.FP_DELAY] = delay
        fpar[state.FP_MIN_RR] = settings.min_rr_fraction
        fpar[state.FP_JUMP_TOLERANCE] = settings.jump_confirm_fraction
        self.sp[state.SP_LIMITS : state.SP_SIZE] = _limits(settings)
        self.si = np.zeros(state.SI_SIZE, np.int64)
        self.istate = self.si[state.SI_STATE : state.SI_PAR]
        self.ipar = self.si[state.SI_PAR : state.SI_SIZE]
        self.istate[state.PREV_ABOVE] = 1
        self.istate[state.LAST_CROSS] = -(1 << 62)
        self.istate[state.PENDING] = -1  # no beat in progress
        self.ipar[state.IP_H] = h
        self.ipar[state.IP_LEARN_N] = min(max(round(settings.learning_s * fs), 1), h)
        self.ipar[state.IP_REFR] = max(round(settings.refractory_s * fs), w + 1)
        self.ipar[state.IP_MAX_N] = round(settings.max_beat_s * fs)
        self.ipar[state.IP_CONFIRM] = confirm
        # filter state, the two plausibility checks' states (``_kernels.judge_level``:
        # rhythm, MAP jumps), the last w running sums of the slopes
        self.sf: FloatArray = np.zeros(
            state.SF_LEVELS + 2 * (state.LV_SUSP + confirm) + w, np.float64
        )
        self.sf[state.SF_FSTATE + state.Z0 : state.SF_FSTATE + state.Z1 + 1] = zi_unit * first
        # buffers the compiled loops write to (lengths in ``istate``), grown when needed:
        # filtered samples, slope sums, the sliding maximum's deque of (segment index,
        # slope sum), the beats a chunk completed
        self.ybuf: FloatArray = np.empty(0, np.float64)
        self.ssf: FloatArray = np.empty(0, np.float64)
        self.dq: FloatArray = np.empty((0, 2), np.float64)
        self.rows: FloatArray = np.empty((0, state.B_COLUMNS), np.float64)
        self.arrays = self._arrays()

    def _arrays(
        self,
    ) -> tuple[FloatArray, IntArray, FloatArray, FloatArray, FloatArray, FloatArray, FloatArray]:
        """What ``_kernels.detect_beats`` and ``step_chunk`` take after the samples."""
        return (self.sp, self.si, self.sf, self.ssf, self.dq, self.ybuf, self.rows)

    def grow(self, n: int) -> None:
        """Make room in every buffer for a chunk of ``n`` samples (``_kernels.has_room``)."""
        ist = self.istate
        learned = bool(ist[state.LEARNED])
        scanned = n if learned else int(ist[state.N_END]) + n
        y_len = int(ist[state.Y_LEN])
        if self.ybuf.size < y_len + n:
            grown = np.empty(int((y_len + n) * _GROWTH), np.float64)
            grown[:y_len] = self.ybuf[:y_len]
            self.ybuf = grown
        if not learned and self.ssf.size < scanned:
            grown = np.empty(int(scanned * _GROWTH), np.float64)
            grown[: self.ssf.size] = self.ssf  # (the learning window's slope sums)
            self.ssf = grown
        head, size = int(ist[state.DQ_HEAD]), int(ist[state.DQ_LEN])
        need_dq = min(size + scanned, int(self.ipar[state.IP_H])) + 1
        if self.dq.shape[0] < need_dq:
            grown = np.empty((int(need_dq * _GROWTH), 2), np.float64)
            grown[:size] = self.dq[head : head + size]
            self.dq = grown
            ist[state.DQ_HEAD] = 0
        need_rows = scanned // int(self.ipar[state.IP_REFR]) + 2
        if self.rows.shape[0] < need_rows:
            self.rows = np.empty((int(need_rows * _GROWTH), state.B_COLUMNS), np.float64)
        self.arrays = self._arrays()

    def took(self, n: int) -> None:
        """``n`` more samples taken: where the next chunk must start to continue.

        Once the learning window is complete its slope sums are dropped (the
        learned detector keeps none), and the deque, sized for scanning the
        whole window at once, shrinks to what a chunk like this one needs.
        """
        self.n_end += n
        self.expected_t0 = sample_time(self.t0, self.fs, self.n_end)
        if self.learning and self.si[state.LEARNED]:
            self.learning = False
            self.ssf = np.empty(0, np.float64)
            head, size = int(self.istate[state.DQ_HEAD]), int(self.istate[state.DQ_LEN])
            need = min(size + n, int(self.ipar[state.IP_H])) + 1
            if self.dq.shape[0] > int(need * _GROWTH):
                dq = np.empty((int(need * _GROWTH), 2), np.float64)
                dq[:size] = self.dq[head : head + size]
                self.dq = dq
                self.istate[state.DQ_HEAD] = 0
            self.arrays = self._arrays()

    def feed(self, x: FloatArray) -> FloatArray:
        """The beats ``x`` completed, as ``_kernels.classify`` rows (``B_*`` columns)."""
        while True:
            nb = _kernels.detect_beats(x, *self.arrays)
            if nb >= 0:
                self.took(x.size)
                return self.rows[:nb].copy()
            self.grow(x.size)


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
        return beats_from_rows(self.feed_rows(chunk))

    def feed_rows(self, chunk: AbpChunk) -> FloatArray:
        """:meth:`feed`, the beats as ``_kernels.classify`` rows (no objects made)."""
        return self.segment(chunk).feed(chunk.samples)

    def segment(self, chunk: AbpChunk) -> _Segment:
        """The segment ``chunk`` belongs to: the current one, or a new one it starts."""
        seg = self._segment
        if seg is None or not continues(chunk.t0, chunk.fs, seg.fs, seg.expected_t0):
            seg = _Segment(self.settings, chunk.t0, chunk.fs, float(chunk.samples[0]))
            self._segment = seg
        return seg

    def current(self) -> _Segment | None:
        """The segment the next chunk continues, if any."""
        return self._segment

    def synced(self) -> None:
        """After ``_kernels.step_chunks`` took chunks of the current segment: where the
        next one must start (what :meth:`step` records of each chunk it takes)."""
        seg = self._segment
        if seg is not None:
            seg.n_end = n_end = int(seg.istate[state.N_END])
            seg.expected_t0 = sample_time(seg.t0, seg.fs, n_end)

    def stepped_rows(self) -> tuple[FloatArray, int]:
        """After :meth:`step`: the chunk's beats (``classify`` rows) and how many were taken."""
        seg = self._segment
        if seg is None:
            raise RuntimeError("stepped_rows() before any step()")
        ist = seg.istate
        return seg.rows[: int(ist[state.ROWS_N])], int(ist[state.ROWS_I])

    def step(
        self, chunk: AbpChunk, ts: float, win: FloatArray, mf: FloatArray, counts: FloatArray
    ) -> int:
        """``_kernels.step_chunk`` on ``chunk`` (dated ``ts``): one of its ``STEP_*`` results.

        ``win``, ``mf``, ``counts`` are the monitor's (see ``BedMonitor``); the
        beats it wrote are :meth:`stepped_rows`. Never ``STEP_ROOM``:
        the buffers are grown and the chunk taken. (:meth:`segment`, inlined:
        this runs for every chunk of every bed.)
        """
        seg = self._segment
        x = chunk.samples
        if seg is None or not continues(chunk.t0, chunk.fs, seg.fs, seg.expected_t0):
            seg = self.segment(chunk)
        while True:
            code: int = _kernels.step_chunk(x, *seg.arrays, win, mf, counts, ts)
            if code != _STEP_ROOM:
                if seg.learning:
                    seg.took(x.size)
                else:  # ``took``, inlined for the usual chunk
                    n_end = seg.n_end = seg.n_end + x.size
                    seg.expected_t0 = sample_time(seg.t0, seg.fs, n_end)
                return code
            seg.grow(x.size)


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
    det = BeatDetector(BeatSettings())
    for chunk in warm_up_chunks():
        det.feed(chunk)
    _warm.append(True)


def warm_up_chunks() -> list[AbpChunk]:
    """Four 1-s chunks of a plain pulse: what the warm-ups run through the compiled loops."""
    fs = 125.0
    t = np.arange(4 * 125) / fs
    x = 80.0 + 20.0 * np.maximum(np.sin(2.0 * np.pi * 1.2 * t), 0.0) ** 2
    return [AbpChunk(1.0e9 + k, fs, x[k * 125 : (k + 1) * 125].copy()) for k in range(4)]
