"""The packed per-bed state of the compiled loops, declared once.

The compiled loops (``streamproc.core.signal._kernels``) keep a bed's state in a
few flat numpy arrays (numba's calls cost more per argument, and a typed list of
a few arrays per bed is what ``step_chunks`` walks). This module declares every
one of them: its slots in order, each with its width (one value unless said),
and the codes stored in them. Every index below is derived from the order of
the declaration (:meth:`Layout.slot` hands out the next free place), never
numbered by hand: to add a slot, declare it where it belongs and the ones after
it move.

The indices are plain module-level ints: numba reads them as compile-time
constants when it compiles the loops (``_kernels`` imports them), Python reads
the same names (``state.M_VALUE``).

A segment (``beats._Segment``) packs ``sp`` (its float parameters: ``SP_*``),
``si`` (``istate`` then ``ipar``: ``SI_*``) and ``sf`` (``fstate``, the two level
checks, the slope tail: ``SF_*``); a monitor (``monitor.BedMonitor``) packs
``mf`` (hold timers, latest values, parameters, context, line judgement:
``MF_*``) beside its rolling window ``win`` (``W_*`` columns). Beats travel as
``classify`` rows (``B_*`` columns).

Pure: no I/O, no clock.
"""

from __future__ import annotations

from typing import Final

import numpy as np
import numpy.typing as npt

from streamproc.core.protocol.hold import HOLD_COLUMNS, LINE_STATES, T_ROWS

__all__ = ["ChunkArrays", "Codes", "FloatArray", "Layout", "SegmentArrays"]


class Layout:
    """A packed array's slots, as declared: each :meth:`slot` takes the next places.

    ``dtype`` is the array's element type; :attr:`size` is how many places have
    been declared so far (after the last slot: the array's length, or the part's).
    """

    __slots__ = ("dtype", "size")

    def __init__(self, dtype: type[np.generic]) -> None:
        self.dtype = np.dtype(dtype)
        self.size = 0

    def slot(self, width: int = 1) -> int:
        """The index of a slot of ``width`` places, after those declared before it."""
        at = self.size
        self.size += width
        return at


class Codes:
    """Codes stored in a slot (0, 1, 2, ... in the order declared); :attr:`count` of them."""

    __slots__ = ("count",)

    def __init__(self) -> None:
        self.count = 0

    def code(self) -> int:
        """The next code."""
        at = self.count
        self.count += 1
        return at


# ---------------------------------------------------------------------------
# The arrays as the compiled loops take them.

FloatArray = npt.NDArray[np.float64]
#: A segment's arrays as the compiled loops take them: ``sp, si, sf, ssf, dq, ybuf, rows``.
SegmentArrays = tuple[
    FloatArray, npt.NDArray[np.int64], FloatArray, FloatArray, FloatArray, FloatArray, FloatArray
]
#: ``_kernels.step_chunks``' view of a bed: its segment's arrays, then its rolling
#: window and packed state (``win, mf``).
ChunkArrays = tuple[
    FloatArray,
    npt.NDArray[np.int64],
    FloatArray,
    FloatArray,
    FloatArray,
    FloatArray,
    FloatArray,
    FloatArray,
    FloatArray,
]


# ---------------------------------------------------------------------------
# A segment (``beats._Segment``; ``_kernels.detect_beats``).

# ``istate``: a segment's integer state.
_ISTATE: Final = Layout(np.int64)
N_END: Final = _ISTATE.slot()  # samples of the segment seen so far
LEARNED: Final = _ISTATE.slot()  # 1 once the learning window is complete
PREV_ABOVE: Final = _ISTATE.slot()  # 1 when the last sample was above the threshold
LAST_CROSS: Final = _ISTATE.slot()  # segment index of the last accepted crossing
PENDING: Final = _ISTATE.slot()  # onset of the beat in progress (-1: none); ``detect_beats`` only
B0: Final = _ISTATE.slot()  # segment index of ``ybuf[0]``
DQ_HEAD: Final = _ISTATE.slot()  # the sliding maximum's deque: head slot in its ring
DQ_LEN: Final = _ISTATE.slot()  # and length
Y_LEN: Final = _ISTATE.slot()  # filtered samples held in ``ybuf``
ROWS_N: Final = _ISTATE.slot()  # beats ``step_chunk`` wrote to ``rows``
ROWS_I: Final = _ISTATE.slot()  # and how many of them ``advance_beats`` took
TAIL_K: Final = _ISTATE.slot()  # slot of ``c_tail`` holding the running sum ``w`` samples back
I_SIZE: Final = _ISTATE.size

# ``ipar``: its integer parameters.
_IPAR: Final = Layout(np.int64)
IP_H: Final = _IPAR.slot()  # samples of the threshold window (odd)
IP_LEARN_N: Final = _IPAR.slot()  # samples of the learning window
IP_REFR: Final = _IPAR.slot()  # refractory samples
IP_MAX_N: Final = _IPAR.slot()  # most samples of a beat
IP_CONFIRM: Final = _IPAR.slot()  # suspect values a level check needs to confirm
IP_SIZE: Final = _IPAR.size

# ``fstate``: its float state.
_FSTATE: Final = Layout(np.float64)
Z0: Final = _FSTATE.slot()  # biquad state
Z1: Final = _FSTATE.slot()
C_LAST: Final = _FSTATE.slot()  # running sum of positive slopes at the last sample
Y_LAST: Final = _FSTATE.slot()  # filtered value of the last sample
F_SIZE: Final = _FSTATE.size

# ``fpar``: its float parameters.
_FPAR: Final = Layout(np.float64)
FP_FRAC: Final = _FPAR.slot()  # threshold fraction of the slope-sum level
FP_MIN_UP: Final = _FPAR.slot()  # least upstroke (mmHg)
FP_T0: Final = _FPAR.slot()  # data time of the segment's first sample
FP_FS: Final = _FPAR.slot()  # its sampling rate
FP_DELAY: Final = _FPAR.slot()  # the filter's group delay (samples)
FP_MIN_RR: Final = _FPAR.slot()  # ``BeatSettings.min_rr_fraction``
FP_JUMP_TOLERANCE: Final = _FPAR.slot()  # ``BeatSettings.jump_confirm_fraction``
FP_SIZE: Final = _FPAR.size

# ``limits``: the beat quality limits of ``classify`` (from ``BeatSettings``).
_LIMITS: Final = Layout(np.float64)
L_MAX_SBP: Final = _LIMITS.slot()
L_MAX_PLATEAU: Final = _LIMITS.slot()
L_MIN_SBP: Final = _LIMITS.slot()
L_MIN_DBP: Final = _LIMITS.slot()
L_MAX_DBP: Final = _LIMITS.slot()
L_MIN_MAP: Final = _LIMITS.slot()
L_MAX_MAP: Final = _LIMITS.slot()
L_MIN_PP: Final = _LIMITS.slot()
L_MAX_PP: Final = _LIMITS.slot()
L_MIN_HR: Final = _LIMITS.slot()
L_MAX_HR: Final = _LIMITS.slot()
L_MAX_JUMP: Final = _LIMITS.slot()
L_BAND_MMHG: Final = _LIMITS.slot()
L_BAND_PP: Final = _LIMITS.slot()
L_TURN_PP: Final = _LIMITS.slot()
L_PULSE_PP: Final = _LIMITS.slot()
L_NO_PULSE_MAP: Final = _LIMITS.slot()
L_SIZE: Final = _LIMITS.size

#: Values a level check keeps as its reference (the median of these).
LEVEL_HISTORY: Final = 8
# A level check's state (``_kernels.judge_level``): counts, then the values.
_LEVEL: Final = Layout(np.float64)
LV_NHIST: Final = _LEVEL.slot()
LV_NSUSP: Final = _LEVEL.slot()
LV_HIST: Final = _LEVEL.slot(LEVEL_HISTORY)
LV_SUSP: Final = _LEVEL.slot()  # then ``ipar[IP_CONFIRM]`` values (the row's width varies)

# The segment's small arrays packed in three, as ``detect_beats`` and ``step_chunk`` take
# them. ``sp``: the filter's coefficients (b0, b1, b2, a1, a2), ``fpar``, ``limits``.
_SP: Final = Layout(np.float64)
SP_COEF: Final = _SP.slot(5)
SP_FPAR: Final = _SP.slot(FP_SIZE)
SP_LIMITS: Final = _SP.slot(L_SIZE)
SP_SIZE: Final = _SP.size
# ``si``: ``istate`` then ``ipar``.
_SI: Final = Layout(np.int64)
SI_STATE: Final = _SI.slot(I_SIZE)
SI_PAR: Final = _SI.slot(IP_SIZE)
SI_SIZE: Final = _SI.size
# ``sf``: ``fstate``, then the rhythm and MAP-jump level checks' rows (``LV_SUSP +
# confirm`` each), then ``c_tail`` (the rest: the last ``w`` slope running sums).
_SF: Final = Layout(np.float64)
SF_FSTATE: Final = _SF.slot(F_SIZE)
SF_LEVELS: Final = _SF.slot()  # (its width varies with ``confirm`` and ``w``)

# ---------------------------------------------------------------------------
# A beat: the columns of ``classify``'s rows.

_BEAT: Final = Layout(np.float64)
B_ONSET: Final = _BEAT.slot()  # data times of the beat's onset and end
B_END: Final = _BEAT.slot()
B_SBP: Final = _BEAT.slot()
B_DBP: Final = _BEAT.slot()
B_MAP: Final = _BEAT.slot()
B_HR: Final = _BEAT.slot()
B_QUALITY: Final = _BEAT.slot()  # a ``Q_*`` code
B_RISE: Final = _BEAT.slot()  # steepest rise of the upstroke, mmHg/s
B_TURNS: Final = _BEAT.slot()  # changes of direction (``measure_beat``)
B_TO_PEAK: Final = _BEAT.slot()  # time from the onset to the systolic maximum, s
B_COLUMNS: Final = _BEAT.size

# Beat quality codes of ``classify`` (the order of ``beats.BeatQuality``'s checks).
_QUALITY: Final = Codes()
Q_VALID: Final = _QUALITY.code()
Q_NEGATIVE: Final = _QUALITY.code()
Q_SATURATED: Final = _QUALITY.code()
Q_SQUARE_WAVE: Final = _QUALITY.code()
Q_OUT_OF_RANGE: Final = _QUALITY.code()
Q_JUMP: Final = _QUALITY.code()
Q_PREMATURE: Final = _QUALITY.code()
Q_NO_PULSE: Final = _QUALITY.code()

# ---------------------------------------------------------------------------
# A monitor (``monitor.BedMonitor``; ``_kernels.advance_beats``).

# The hold timers (``MF_TIMERS``): their layout is the hold rule's, ``protocol.hold``.

# The rolling window's columns: its beats (end, MAP, SBP, DBP, HR) in order of end,
# then each value column kept sorted on its own (column c's at c + ``W_SORTED``).
_WINDOW: Final = Layout(np.float64)
W_END: Final = _WINDOW.slot()
W_MAP: Final = _WINDOW.slot()
W_SBP: Final = _WINDOW.slot()
W_DBP: Final = _WINDOW.slot()
W_HR: Final = _WINDOW.slot()
W_VALUES: Final = _WINDOW.size
W_SORTED: Final = _WINDOW.slot(W_VALUES - W_MAP) - W_MAP
W_COLUMNS: Final = _WINDOW.size

# ``mst``: the monitor's latest values (NaN: none yet), kept here so that the compiled
# path updates them without handing them back.
_MST: Final = Layout(np.float64)
M_WIN_N: Final = _MST.slot()  # beats in the rolling window
M_VALID_REF: Final = _MST.slot()  # end of the last valid beat, or where the waveform (re)started
M_MAP: Final = _MST.slot()  # the last medians computed (or a numeric's values)
M_SBP: Final = _MST.slot()
M_DBP: Final = _MST.slot()
M_HR: Final = _MST.slot()
M_VALUE: Final = _MST.slot()  # the target metric's value, and its data time
M_OBS_TS: Final = _MST.slot()
M_DECIDE: Final = _MST.slot()  # why ``advance_beats`` stopped: 0 all taken; ``DECIDE_*``
M_LINE: Final = _MST.slot()  # the line's state as ``judge_line`` judges it (``LINE_*``)
M_SIZE: Final = _MST.size

# ``ctx``: what the decisions depend on, from the monitor's Python state.
_CTX: Final = Layout(np.float64)
C_METRIC_SBP: Final = _CTX.slot()  # 1 when the target is on SBP, 0 on MAP
C_TARGET: Final = _CTX.slot()
C_SIGNAL_INVALID: Final = _CTX.slot()  # 1 when the signal-invalid alarm is open
C_ALARM: Final = _CTX.slot()  # hypotension alarm: an ``ALARM_*`` code
C_RANK: Final = _CTX.slot()  # its priority's rank
C_ACK_VALUE: Final = _CTX.slot()  # the value it was acknowledged at (NaN: none)
C_REFRACTORY: Final = _CTX.slot()  # 1 on the refractory step
C_FLAG_SBP: Final = _CTX.slot()  # the advisories' flags as last evaluated
C_FLAG_AT: Final = _CTX.slot()
C_WAKE: Final = _CTX.slot()  # data time from which a re-announcement may be due (inf: none)
C_TREND_TS: Final = _CTX.slot()  # data time of the last trend point (NaN: none)
C_LINE: Final = _CTX.slot()  # the line state the monitor's alarms show (``LINE_*``)
C_SIZE: Final = _CTX.size

# ``par``: the parameters, from the settings.
_PAR: Final = Layout(np.float64)
P_WINDOW_S: Final = _PAR.slot()
P_MIN_BEATS: Final = _PAR.slot()
P_CONTINUITY_S: Final = _PAR.slot()
P_GAP_S: Final = _PAR.slot()
P_CRITICAL_MAP: Final = _PAR.slot()
P_CLEAR_MARGIN: Final = _PAR.slot()
P_HOLD_S: Final = _PAR.slot()
P_CRITICAL_HOLD_S: Final = _PAR.slot()
P_CLEAR_HOLD_S: Final = _PAR.slot()
P_VALID_CLEAR_S: Final = _PAR.slot()
P_TREND_STEP_S: Final = _PAR.slot()
P_WORSEN: Final = _PAR.slot()
P_RANK_MEDIUM: Final = _PAR.slot()
P_RANK_HIGH: Final = _PAR.slot()
P_SIGNAL_INVALID_S: Final = _PAR.slot()
P_LINE_BEATS: Final = _PAR.slot()  # the line-quality judgement's settings (``judge_line``)
P_LINE_ENTER: Final = _PAR.slot()
P_LINE_LEAVE: Final = _PAR.slot()
P_DAMPED_SHARPNESS: Final = _PAR.slot()
P_RINGING_TURNS: Final = _PAR.slot()
P_PULSE_PP: Final = _PAR.slot()
P_LINE_REF_S: Final = _PAR.slot()
P_NARROW_PP: Final = _PAR.slot()
P_SLOW_PEAK: Final = _PAR.slot()
P_SIZE: Final = _PAR.size

# The line's state (``M_LINE``, ``C_LINE``): what its recent beats say of it.
# (its codes, ``hold.LINE_*``, are the protocol's: the line's alarms are keyed by them)
LINE_CLASSES: Final = LINE_STATES  # what one beat can say of the line (-1: nothing)
#: Most beats the judgement keeps (``BeatSettings.line_beats``).
LINE_MAX_BEATS: Final = 32

# ``lq``: the line judgement's state: the beats' classes in a ring, the count of each.
_LQ: Final = Layout(np.float64)
LQ_N: Final = _LQ.slot()  # beats in the ring
LQ_HEAD: Final = _LQ.slot()  # slot of the oldest
LQ_LAST_END: Final = _LQ.slot()  # end of the last beat judged (NaN: none)
LQ_REF_PP: Final = _LQ.slot()  # the reference the line's fine beats leave: pulse pressure,
LQ_REF_MAP: Final = _LQ.slot()  # MAP, time to the systolic peak (NaN: none yet)
LQ_REF_PEAK: Final = _LQ.slot()
LQ_COUNT: Final = _LQ.slot(LINE_CLASSES)
LQ_RING: Final = _LQ.slot(LINE_MAX_BEATS)
LQ_SIZE: Final = _LQ.size

# ``mf``: a monitor's float arrays packed in one, as ``advance_beats`` and ``step_chunk``
# take them.
_MF: Final = Layout(np.float64)
MF_TIMERS: Final = _MF.slot(T_ROWS * HOLD_COLUMNS)
MF_MST: Final = _MF.slot(M_SIZE)
MF_PAR: Final = _MF.slot(P_SIZE)
MF_CTX: Final = _MF.slot(C_SIZE)
MF_LINE: Final = _MF.slot(LQ_SIZE)
MF_SIZE: Final = _MF.size

# ---------------------------------------------------------------------------
# Many beds' chunks in one call (``_kernels.step_chunks``).

# ``stop``: what it leaves for the caller.
_STOP: Final = Layout(np.int64)
STOP_CODE: Final = _STOP.slot()  # ``CHUNK_REFUSED`` or a ``STEP_*`` code
STOP_TOUCHED: Final = _STOP.slot()  # how many slots ``touched`` lists
STOP_SIZE: Final = _STOP.size

# ``lim``: what ``step_chunks`` is told beside the chunk rule (``messages.chunk_fault``).
_LIM: Final = Layout(np.float64)
LIM_STALE_S: Final = _LIM.slot()  # a bed's data older than this: its next chunk restarts it
LIM_SIZE: Final = _LIM.size
