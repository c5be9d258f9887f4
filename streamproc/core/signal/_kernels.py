"""Compiled per-sample loops of the beat detector (numba).

The detector's per-sample stages are sequential recurrences: the low-pass
biquad, the running sum of positive slopes, the causal sliding maximum of the
slope sum, the threshold crossings with their refractory period and the foot
search. Written as numpy calls they cost a dozen Python-level calls per chunk
(most of a 1 s chunk's time is call overhead, not arithmetic); compiled, one
call does all of them. ``beat_measures`` does the same for the per-beat sums.

Every function here is pure: arrays in, arrays out, no state kept between
calls (the caller carries it, packed as ``streamproc.core.signal.state`` declares:
the slot indices used here are that module's). The rules of a chunk they apply
(validity, sample times, continuity) are ``streamproc.core.protocol.messages``',
compiled in. ``.py_func`` of each is the same code run by the
interpreter; the tests check the compiled and interpreted versions agree.
"""

from __future__ import annotations

from typing import Any, Final

import numpy as np
from numba.typed import List

from streamproc.core import _compile
from streamproc.core._compile import jit
from streamproc.core.protocol.hold import (
    ALARM_OTHER,
    LINE_DAMPED,
    LINE_NO_PULSE,
    LINE_OK,
    LINE_RINGING,
    MOVE_NONE,
    T_VALID_RUN,
    at_target_flag,
    hold_observe,
    hypotension_move,
    observe_pressure,
    sbp_at_target_held,
    signal_invalid_due,
    signal_valid_again,
    suspend_sbp_runs,
    trend_due,
)
from streamproc.core.protocol.messages import CHUNK_OK, chunk_fault, continues, sample_time
from streamproc.core.signal.state import (
    B0,
    B_DBP,
    B_END,
    B_HR,
    B_MAP,
    B_ONSET,
    B_QUALITY,
    B_RISE,
    B_SBP,
    B_TO_PEAK,
    B_TURNS,
    C_ACK_VALUE,
    C_ALARM,
    C_FLAG_AT,
    C_FLAG_SBP,
    C_LAST,
    C_LINE,
    C_METRIC_SBP,
    C_RANK,
    C_REFRACTORY,
    C_SIGNAL_INVALID,
    C_TARGET,
    C_TREND_TS,
    C_WAKE,
    DQ_HEAD,
    DQ_LEN,
    FP_DELAY,
    FP_FRAC,
    FP_FS,
    FP_JUMP_TOLERANCE,
    FP_MIN_RR,
    FP_MIN_UP,
    FP_T0,
    IP_CONFIRM,
    IP_H,
    IP_LEARN_N,
    IP_MAX_N,
    IP_REFR,
    L_BAND_MMHG,
    L_BAND_PP,
    L_MAX_DBP,
    L_MAX_HR,
    L_MAX_JUMP,
    L_MAX_MAP,
    L_MAX_PLATEAU,
    L_MAX_PP,
    L_MAX_SBP,
    L_MIN_DBP,
    L_MIN_HR,
    L_MIN_MAP,
    L_MIN_PP,
    L_MIN_SBP,
    L_NO_PULSE_MAP,
    L_PULSE_PP,
    L_TURN_PP,
    LAST_CROSS,
    LEARNED,
    LEVEL_HISTORY,
    LIM_STALE_S,
    LINE_CLASSES,
    LQ_COUNT,
    LQ_HEAD,
    LQ_LAST_END,
    LQ_N,
    LQ_REF_MAP,
    LQ_REF_PEAK,
    LQ_REF_PP,
    LQ_RING,
    LV_HIST,
    LV_NHIST,
    LV_NSUSP,
    LV_SUSP,
    M_DBP,
    M_DECIDE,
    M_HR,
    M_LINE,
    M_MAP,
    M_OBS_TS,
    M_SBP,
    M_VALID_REF,
    M_VALUE,
    M_WIN_N,
    MF_CTX,
    MF_LINE,
    MF_MST,
    MF_PAR,
    MF_SIZE,
    MF_TIMERS,
    N_END,
    P_CLEAR_HOLD_S,
    P_CLEAR_MARGIN,
    P_CONTINUITY_S,
    P_CRITICAL_HOLD_S,
    P_CRITICAL_MAP,
    P_DAMPED_SHARPNESS,
    P_GAP_S,
    P_HOLD_S,
    P_LINE_BEATS,
    P_LINE_ENTER,
    P_LINE_LEAVE,
    P_LINE_REF_S,
    P_MIN_BEATS,
    P_NARROW_PP,
    P_PULSE_PP,
    P_RANK_HIGH,
    P_RANK_MEDIUM,
    P_RINGING_TURNS,
    P_SIGNAL_INVALID_S,
    P_SLOW_PEAK,
    P_TREND_STEP_S,
    P_VALID_CLEAR_S,
    P_WINDOW_S,
    P_WORSEN,
    PENDING,
    PREV_ABOVE,
    Q_JUMP,
    Q_NEGATIVE,
    Q_NO_PULSE,
    Q_OUT_OF_RANGE,
    Q_PREMATURE,
    Q_SATURATED,
    Q_SQUARE_WAVE,
    Q_VALID,
    ROWS_I,
    ROWS_N,
    SF_LEVELS,
    SI_PAR,
    SI_SIZE,
    SP_COEF,
    SP_FPAR,
    SP_LIMITS,
    SP_SIZE,
    STOP_CODE,
    STOP_TOUCHED,
    TAIL_K,
    W_DBP,
    W_END,
    W_HR,
    W_MAP,
    W_SBP,
    W_SORTED,
    W_VALUES,
    Y_LAST,
    Y_LEN,
    Z0,
    Z1,
)

__all__ = [
    "advance_beats",
    "classify",
    "detect",
    "detect_beats",
    "has_room",
    "judge_level",
    "measure_beat",
    "step_chunk",
    "step_chunks",
    "table_append",
    "table_new",
    "table_set",
]


@jit
def has_room(  # noqa: PLR0917 - the buffers a chunk of ``n`` samples writes to
    n: int,
    istate: np.ndarray,
    ssf: np.ndarray,
    dq: np.ndarray,
    ybuf: np.ndarray,
    rows: np.ndarray,
    refr: int,
    h: int,
) -> bool:
    """Whether a chunk of ``n`` samples fits the segment's buffers.

    ``ybuf`` takes the chunk's filtered samples after those held; ``ssf``, while
    the segment learns, the learning window's slope sums and the chunk's (it is
    not used afterwards); ``dq`` one more entry per slope sum scanned, but it
    never holds more than ``h`` before a push (the entries of the last ``h``
    samples); ``rows`` one beat per accepted crossing (at least ``refr``
    samples apart) and the one in progress.
    """
    learned = istate[LEARNED] != 0
    scanned = n if learned else istate[N_END] + n
    return (
        ybuf.size >= istate[Y_LEN] + n
        and (learned or ssf.size >= scanned)
        and dq.shape[0] >= min(istate[DQ_LEN] + scanned, h) + 1
        and rows.shape[0] >= scanned // refr + 2
    )


@jit
def detect(  # noqa: PLR0917 - one compiled call carries every stage's state
    x: np.ndarray,
    coef: np.ndarray,
    fstate: np.ndarray,
    istate: np.ndarray,
    c_tail: np.ndarray,
    ssf: np.ndarray,
    dq: np.ndarray,
    ybuf: np.ndarray,
    h: int,
    learn_n: int,
    refr: int,
    frac: float,
    min_up: float,
) -> np.ndarray:
    """Filter ``x``, find the accepted threshold crossings and their onsets.

    ``coef`` is ``(b0, b1, b2, a1, a2)`` of a biquad normalised to ``a0 = 1``
    (direct form II transposed, state in ``fstate[Z0:Z1+1]``). ``c_tail`` holds
    the last ``w`` values of the slope running sum, a ring whose oldest value is
    at ``istate[TAIL_K]`` (updated in place). ``ssf``
    takes the chunk's slope sums, after those of the learning window while it
    fills (kept there until it is complete). ``dq`` is the sliding maximum's
    monotonic deque of (segment index, slope sum) rows (moved to the start of
    its buffer when its end is reached), its head and length in
    ``istate[DQ_HEAD]``, ``istate[DQ_LEN]``: carried from chunk to chunk, so
    each slope sum enters it once. ``ybuf[:istate[Y_LEN]]`` holds the filtered
    samples from segment index ``istate[B0]`` on; the chunk's are appended.
    Every buffer must have room for the chunk (``has_room``); ``istate`` and
    ``fstate`` are updated in place.

    Returns the onsets (segment indices) of the accepted crossings; an onset
    at index 0 (an upstroke that began before the segment) is left out.
    """
    if istate[LEARNED] != 0:
        found = _scan_learned(x, coef, fstate, istate, c_tail, dq, ybuf, h, refr, frac, min_up)
    else:
        found = _scan_learning(
            x, coef, fstate, istate, c_tail, ssf, dq, ybuf, h, learn_n, refr, frac, min_up
        )
    # 4. onset: the foot, the first minimum of y in the w samples before the crossing
    w = c_tail.size
    b0 = istate[B0]
    no = 0
    for k in range(found.size):
        cross = found[k]
        lo = max(cross - w, b0)
        best = lo
        best_v = ybuf[lo - b0]
        for j in range(lo + 1, cross + 1):
            vj = ybuf[j - b0]
            if vj < best_v:
                best_v = vj
                best = j
        if best > 0:
            found[no] = best  # (no <= k: the crossings not yet read are untouched)
            no += 1
    return found[:no]


@jit
def _scan_learned(  # noqa: PLR0917 - ``detect``'s state, flat for the compiler
    x: np.ndarray,
    coef: np.ndarray,
    fstate: np.ndarray,
    istate: np.ndarray,
    c_tail: np.ndarray,
    dq: np.ndarray,
    ybuf: np.ndarray,
    h: int,
    refr: int,
    frac: float,
    min_up: float,
) -> np.ndarray:
    """``detect``'s stages 1-3 once the segment has learned: one pass over the samples.

    The same arithmetic, sample by sample, as ``_scan_learning`` (the filter, the
    slope sum, the sliding maximum, the crossings), fused into one loop so that
    their independent recurrences overlap. Returns the accepted crossings.
    """
    n = x.size
    w = c_tail.size
    start = istate[N_END]
    cb0, cb1, cb2, ca1, ca2 = coef[0], coef[1], coef[2], coef[3], coef[4]
    z0 = fstate[Z0]
    z1 = fstate[Z1]
    old = istate[Y_LEN]
    y_last = fstate[Y_LAST]
    c = fstate[C_LAST]
    tail = c_tail  # a ring: tail[k] is c at index (start + i - w)
    k = istate[TAIL_K]
    cap = dq.shape[0]
    head = istate[DQ_HEAD]
    tail_i = head + istate[DQ_LEN]
    prev_above = istate[PREV_ABOVE] == 1
    last = istate[LAST_CROSS]
    found = np.empty(n // refr + 1, np.int64)
    nf = 0
    for i in range(n):
        # 1. low-pass biquad
        xi = x[i]
        yi = z0 + cb0 * xi
        z0 = z1 + cb1 * xi - ca1 * yi
        z1 = cb2 * xi - ca2 * yi
        ybuf[old + i] = yi
        # 2. slope sum over the last w samples
        d = yi - y_last
        if d > 0.0:
            c += d
        y_last = yi
        v = c - tail[k]
        tail[k] = c
        k += 1
        if k == w:
            k = 0
        # 3. threshold crossing against the maximum of the last h slope sums. The
        # threshold is max(level * frac, min_up): a slope sum with v * frac <= min_up
        # cannot raise it, so it stays out of the deque (nor does it drop smaller
        # ones, which cannot either); and a sample with v <= min_up is never above.
        seg_i = start + i
        if v * frac > min_up:
            while tail_i > head and dq[tail_i - 1, 1] <= v:
                tail_i -= 1
            if tail_i == cap:  # at the end of the buffer: move the deque to its start
                for r in range(tail_i - head):  # (``has_room``: never full)
                    dq[r, 0] = dq[head + r, 0]
                    dq[r, 1] = dq[head + r, 1]
                tail_i -= head
                head = 0
            dq[tail_i, 0] = seg_i
            dq[tail_i, 1] = v
            tail_i += 1
            while dq[head, 0] <= seg_i - h:  # (it holds at most the last h slope sums)
                head += 1
        above = False
        if v > min_up:
            while tail_i > head and dq[head, 0] <= seg_i - h:
                head += 1
            level = dq[head, 1] if tail_i > head else 0.0
            above = v > max(level * frac, min_up)
        if above and not prev_above and seg_i - last >= refr:
            found[nf] = seg_i
            nf += 1
            last = seg_i
        prev_above = above
    fstate[Z0] = z0
    fstate[Z1] = z1
    istate[Y_LEN] = old + n
    istate[TAIL_K] = k
    fstate[C_LAST] = c
    fstate[Y_LAST] = y_last
    istate[N_END] = start + n
    istate[DQ_HEAD] = head
    istate[DQ_LEN] = tail_i - head
    istate[PREV_ABOVE] = 1 if prev_above else 0
    istate[LAST_CROSS] = last
    return found[:nf]


@jit
def _scan_learning(  # noqa: PLR0917 - ``detect``'s state, flat for the compiler
    x: np.ndarray,
    coef: np.ndarray,
    fstate: np.ndarray,
    istate: np.ndarray,
    c_tail: np.ndarray,
    ssf: np.ndarray,
    dq: np.ndarray,
    ybuf: np.ndarray,
    h: int,
    learn_n: int,
    refr: int,
    frac: float,
    min_up: float,
) -> np.ndarray:
    """``detect``'s stages 1-3 while the segment learns: stage by stage over the chunk.

    The slope sums are kept in ``ssf`` until the learning window is complete;
    then they are all scanned, the threshold level within the window being the
    maximum of the whole window. Returns the accepted crossings.
    """
    n = x.size
    w = c_tail.size
    start = istate[N_END]
    # 1. low-pass biquad
    cb0, cb1, cb2, ca1, ca2 = coef[0], coef[1], coef[2], coef[3], coef[4]
    z0 = fstate[Z0]
    z1 = fstate[Z1]
    old = istate[Y_LEN]
    for i in range(n):
        xi = x[i]
        yi = z0 + cb0 * xi
        z0 = z1 + cb1 * xi - ca1 * yi
        z1 = cb2 * xi - ca2 * yi
        ybuf[old + i] = yi
    fstate[Z0] = z0
    fstate[Z1] = z1
    istate[Y_LEN] = old + n
    # 2. slope sum over the last w samples: c[i] - c[i - w]
    y_last = fstate[Y_LAST] if start > 0 else ybuf[old]
    c = fstate[C_LAST]
    nh = start  # slope sums of the learning window held in ``ssf``
    tail = c_tail  # a ring: tail[k] is c at index (start + i - w)
    k = istate[TAIL_K]
    for i in range(n):
        yi = ybuf[old + i]
        d = yi - y_last
        if d > 0.0:
            c += d
        y_last = yi
        ssf[nh + i] = c - tail[k]
        tail[k] = c
        k += 1
        if k == w:
            k = 0
    istate[TAIL_K] = k
    fstate[C_LAST] = c
    fstate[Y_LAST] = y_last
    end = start + n
    istate[N_END] = end
    if end < learn_n:
        return np.empty(0, np.int64)  # still learning: keep every slope sum
    istate[LEARNED] = 1
    # 3. threshold crossings: level = max of the last h slope sums (none before the
    # segment), within the learning window the maximum of the whole window
    total = nh + n
    learn_level = 0.0
    for i in range(min(learn_n, total)):
        learn_level = max(learn_level, ssf[i])
    cap = dq.shape[0]
    head = istate[DQ_HEAD]
    tail_i = head + istate[DQ_LEN]
    prev_above = istate[PREV_ABOVE] == 1
    last = istate[LAST_CROSS]
    found = np.empty(total // refr + 1, np.int64)
    nf = 0
    for i in range(total):
        v = ssf[i]  # (segment index i)
        while tail_i > head and dq[tail_i - 1, 1] <= v:
            tail_i -= 1
        if tail_i == cap:  # at the end of the buffer: move the deque to its start
            for r in range(tail_i - head):  # (``has_room``: the buffer is never full)
                dq[r, 0] = dq[head + r, 0]
                dq[r, 1] = dq[head + r, 1]
            tail_i -= head
            head = 0
        dq[tail_i, 0] = i
        dq[tail_i, 1] = v
        tail_i += 1
        while dq[head, 0] <= i - h:
            head += 1
        level = learn_level if i < learn_n else dq[head, 1]
        thr = max(level * frac, min_up)
        above = v > thr
        if above and not prev_above and i - last >= refr:
            found[nf] = i
            nf += 1
            last = i
        prev_above = above
    istate[DQ_HEAD] = head
    istate[DQ_LEN] = tail_i - head
    istate[PREV_ABOVE] = 1 if prev_above else 0
    istate[LAST_CROSS] = last
    return found[:nf]


@jit
def measure_beat(  # noqa: PLR0917 - a beat and its bands, flat for the compiler
    y: np.ndarray, s: int, e: int, band_mmhg: float, band_pp: float, turn_pp: float
) -> tuple[float, float, float, float, float, float, float, float, int]:
    """One beat ``y[s:e]``: foot, mean, max, min, plateau share, the next beat's foot,
    steepest rise, turns and where the maximum is (samples from ``s``).

    The plateau share is the fraction of the beat's samples within
    ``min(band_mmhg, band_pp x pulse pressure)`` of its maximum. The steepest
    rise is the largest sample-to-sample increase of the upstroke, from the
    foot to the maximum (mmHg per sample). The turns count the changes of
    direction from the maximum on by more than ``turn_pp`` x pulse pressure
    (hysteresis: noise does not turn): the systolic peak is one, a dicrotic
    notch with its wave two more, a ringing line many. (Separate loops: the
    sums and the plateau count compile to vector code, the turns' cannot.)
    """
    total = 0.0
    top = y[s]
    low = y[s]
    at_top = s
    for j in range(s, e):
        v = y[j]
        total += v
        if v > top:
            top = v
            at_top = j
        low = min(low, v)
    foot = y[s]
    band = min(band_mmhg, band_pp * (top - foot))
    near = 0
    for j in range(s, e):
        if y[j] >= top - band:
            near += 1
    rise = 0.0
    for j in range(s + 1, at_top + 1):
        rise = max(rise, y[j] - y[j - 1])
    hyst = turn_pp * (top - foot)
    turns = 0
    up = True  # at the maximum: the pressure was rising
    extreme = top
    for j in range(at_top, e):
        v = y[j]
        if up:
            if v > extreme:
                extreme = v
            elif extreme - v > hyst:
                turns += 1
                up = False
                extreme = v
        elif v < extreme:
            extreme = v
        elif v - extreme > hyst:
            turns += 1
            up = True
            extreme = v
    length = e - s
    return foot, total / length, top, low, near / length, y[e], rise, float(turns), at_top - s


@jit
def _median_of(values: np.ndarray, scratch: np.ndarray) -> float:
    """Median of ``values`` (insertion-sorted into ``scratch``: there are a few)."""
    n = values.size
    for k in range(n):
        v = values[k]
        j = k
        while j > 0 and scratch[j - 1] > v:
            scratch[j] = scratch[j - 1]
            j -= 1
        scratch[j] = v
    mid = n // 2
    if n % 2:
        return float(scratch[mid])
    return float(0.5 * (scratch[mid - 1] + scratch[mid]))


@jit
def judge_level(  # noqa: PLR0917 - the check's parameters, flat for the compiler
    state: np.ndarray,
    value: float,
    below: float,
    above: float,
    confirm: int,
    tolerance: float,
    scratch: np.ndarray,
) -> bool:
    """Whether ``value`` is plausible against the median of the recent accepted values.

    A value more than ``below`` (fraction) under the reference, or more than
    ``above`` over it, is suspect. ``confirm`` consecutive suspects that agree
    with each other (spread within ``tolerance`` of their median) become the new
    reference: a real change is accepted after a few beats. Learns from
    ``value`` either way (``state`` updated in place, layout ``LV_*``).
    ``scratch`` has room for ``max(LEVEL_HISTORY, confirm)`` values.
    """
    nh = int(state[LV_NHIST])
    ns = int(state[LV_NSUSP])
    if nh > 0:
        ref = _median_of(state[LV_HIST : LV_HIST + nh], scratch)
        if value < ref * (1.0 - below) or value > ref * (1.0 + above):
            if ns == confirm:  # full: the oldest suspect leaves
                for j in range(ns - 1):
                    state[LV_SUSP + j] = state[LV_SUSP + j + 1]
                ns -= 1
            state[LV_SUSP + ns] = value
            ns += 1
            if ns >= confirm:
                susp = state[LV_SUSP : LV_SUSP + ns]
                level = _median_of(susp, scratch)
                if susp.max() - susp.min() <= tolerance * level:
                    keep = min(ns, LEVEL_HISTORY)
                    for j in range(keep):
                        state[LV_HIST + j] = state[LV_SUSP + ns - keep + j]
                    state[LV_NHIST] = keep
                    ns = 0
            state[LV_NSUSP] = ns
            return False
    if nh == LEVEL_HISTORY:  # full: the oldest value leaves
        for j in range(nh - 1):
            state[LV_HIST + j] = state[LV_HIST + j + 1]
        nh -= 1
    state[LV_HIST + nh] = value
    state[LV_NHIST] = nh + 1
    state[LV_NSUSP] = 0
    return True


@jit
def classify(  # noqa: PLR0917 - one compiled call for all of a chunk's beats
    y: np.ndarray,
    b0: int,
    found: np.ndarray,
    pending: int,
    t0: float,
    fs: float,
    delay: float,
    max_n: int,
    limits: np.ndarray,
    rhythm: np.ndarray,
    jump: np.ndarray,
    confirm: int,
    min_rr_fraction: float,
    jump_tolerance: float,
    out: np.ndarray,
) -> int:
    """The beats between consecutive onsets, measured and given a quality verdict.

    The onsets are ``pending`` (the onset of the beat in progress, -1 if none)
    followed by the newly ``found`` ones.

    Writes rows of ``B_COLUMNS`` to ``out`` (room for one per onset) and
    returns how many: onset and end (data times), SBP, DBP, MAP, HR, the
    quality code (``Q_*``, first that applies, as documented in
    ``streamproc.core.signal.beats``), and the morphology the line-quality judgement
    reads (``judge_line``): the upstroke's steepest rise, the turns and the
    time to the systolic peak. Beats longer than ``max_n`` samples are left
    out. ``rhythm`` and ``jump`` are the two level checks' states (``LV_*``),
    updated in place.
    """
    first = 0 if pending >= 0 else 1  # the first beat ends at found[first]
    if found.size - first < 1:
        return 0
    k_out = 0
    max_jump = limits[L_MAX_JUMP]
    start = pending if pending >= 0 else found[0]
    t_end = sample_time(t0, fs, start - delay)
    scratch = np.empty(max(LEVEL_HISTORY, confirm), np.float64)
    for k in range(first, found.size):
        begin = start
        start = found[k]
        n = start - begin
        t_start = t_end
        t_end = sample_time(t0, fs, start - delay)
        if n > max_n:
            continue  # a pause or a lost signal, not a beat
        dbp, mean_p, sbp, low, plateau, next_foot, rise, turns, at_top = measure_beat(
            y, begin - b0, start - b0, limits[L_BAND_MMHG], limits[L_BAND_PP], limits[L_TURN_PP]
        )
        pp = sbp - dbp
        hr = 60.0 * fs / n
        if low < 0.0:
            q = Q_NEGATIVE
        elif sbp >= limits[L_MAX_SBP]:
            q = Q_SATURATED
        elif plateau > limits[L_MAX_PLATEAU]:
            q = Q_SQUARE_WAVE
        elif (
            pp < limits[L_PULSE_PP]
            and limits[L_MIN_MAP] <= mean_p < limits[L_NO_PULSE_MAP]
            and limits[L_MIN_HR] <= hr <= limits[L_MAX_HR]
        ):
            q = Q_NO_PULSE  # a bump at a level no beating heart leaves: no pulse
        elif not (
            limits[L_MIN_SBP] <= sbp <= limits[L_MAX_SBP]
            and limits[L_MIN_DBP] <= dbp <= limits[L_MAX_DBP]
            and limits[L_MIN_MAP] <= mean_p <= limits[L_MAX_MAP]
            and limits[L_MIN_PP] <= pp <= limits[L_MAX_PP]
            and limits[L_MIN_HR] <= hr <= limits[L_MAX_HR]
        ):
            q = Q_OUT_OF_RANGE
        elif abs(next_foot - dbp) > max_jump * mean_p:
            q = Q_JUMP  # the level moved within the beat (a line back from a flat stretch)
        elif not judge_level(
            rhythm, float(n), 1.0 - min_rr_fraction, np.inf, confirm, jump_tolerance, scratch
        ):
            q = Q_PREMATURE
        elif not judge_level(jump, mean_p, max_jump, max_jump, confirm, jump_tolerance, scratch):
            q = Q_JUMP
        else:
            q = Q_VALID
        out[k_out, B_ONSET] = t_start
        out[k_out, B_END] = t_end
        out[k_out, B_SBP] = sbp
        out[k_out, B_DBP] = dbp
        out[k_out, B_MAP] = mean_p
        out[k_out, B_HR] = hr
        out[k_out, B_QUALITY] = q
        out[k_out, B_RISE] = rise * fs
        out[k_out, B_TURNS] = turns
        out[k_out, B_TO_PEAK] = at_top / fs
        k_out += 1
    return k_out


# ---------------------------------------------------------------------------
# The monitor's per-beat steps (``monitor.BedMonitor``): rolling window, medians,
# hold timers, and whether the beat needs the protocol's decisions at all.

# Why ``advance_beats`` stopped (``mst[M_DECIDE]``; 0: every beat taken).
DECIDE_BEAT = 1  # the last beat taken needs decisions (window not yet full)
DECIDE_OBSERVED = 2  # the last beat taken needs decisions on its observation


@jit
def _monitor_views(
    mf: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``mf``'s parts: timers, state, parameters, context, line-quality state."""
    return (
        mf[MF_TIMERS:MF_MST],
        mf[MF_MST:MF_PAR],
        mf[MF_PAR:MF_CTX],
        mf[MF_CTX:MF_LINE],
        mf[MF_LINE:MF_SIZE],
    )


#: Beats further apart than this (s) start the line-quality judgement afresh.
_LINE_GAP_S = 5.0


@jit
def beat_line_class(row: np.ndarray, par: np.ndarray, lq: np.ndarray) -> int:
    """What one beat (a ``classify`` row) says of the line: a ``LINE_*`` code, or -1.

    A ``no_pulse`` beat: no pulse. A valid beat with at least ``P_RINGING_TURNS``
    turns rings. One is damped whose pulse pressure is below ``P_PULSE_PP`` (at a
    mean a beating heart leaves), or whose upstroke is slow: its steepest rise,
    over that of a sine of the beat's rate and pulse pressure (``pi x PP x HR /
    60`` mmHg/s), below ``P_DAMPED_SHARPNESS`` (a sharp arterial upstroke is
    2.2-9 times a sine's on the real records; a line that has lost the pulse's
    higher harmonics leaves nearly a sine, 1.2-1.7); or, against the reference
    the line's fine beats left (``lq``), whose pulse pressure has narrowed below
    ``P_NARROW_PP`` of it at a mean within 10 % of it while its systolic peak
    comes ``P_SLOW_PEAK`` times later (a damping line; a bleeding patient's pulse
    narrows too, but its upstroke stays as quick). Any other beat (an
    artifact's) says nothing: -1.
    """
    q = row[B_QUALITY]
    if q == Q_NO_PULSE:
        return LINE_NO_PULSE
    if q != Q_VALID:
        return -1
    if row[B_TURNS] >= par[P_RINGING_TURNS]:
        return LINE_RINGING
    pp = row[B_SBP] - row[B_DBP]
    if pp < par[P_PULSE_PP]:
        return LINE_DAMPED
    if row[B_RISE] < par[P_DAMPED_SHARPNESS] * np.pi * pp * row[B_HR] / 60.0:
        return LINE_DAMPED
    ref_pp = lq[LQ_REF_PP]
    if (
        pp < par[P_NARROW_PP] * ref_pp  # (False while NaN: no reference yet)
        and abs(row[B_MAP] - lq[LQ_REF_MAP]) <= 0.1 * lq[LQ_REF_MAP]
        and row[B_TO_PEAK] >= par[P_SLOW_PEAK] * lq[LQ_REF_PEAK]
    ):
        return LINE_DAMPED
    return LINE_OK


@jit
def _follow(lq: np.ndarray, row: np.ndarray, alpha: float) -> None:
    """Move the line's reference (``LQ_REF_*``) towards the beat ``row`` by ``alpha``
    (the first beat sets it)."""
    pp = row[B_SBP] - row[B_DBP]
    if np.isnan(lq[LQ_REF_PP]):
        lq[LQ_REF_PP] = pp
        lq[LQ_REF_MAP] = row[B_MAP]
        lq[LQ_REF_PEAK] = row[B_TO_PEAK]
        return
    lq[LQ_REF_PP] += alpha * (pp - lq[LQ_REF_PP])
    lq[LQ_REF_MAP] += alpha * (row[B_MAP] - lq[LQ_REF_MAP])
    lq[LQ_REF_PEAK] += alpha * (row[B_TO_PEAK] - lq[LQ_REF_PEAK])


@jit
def judge_line(lq: np.ndarray, row: np.ndarray, par: np.ndarray, state: int) -> int:
    """The line's state (``LINE_*``, was ``state``) after one more beat (``classify`` row).

    The judgement in one place: the classes (``beat_line_class``) of the last
    ``P_LINE_BEATS`` beats that say something are kept (``lq``, updated in place;
    a pause of more than ``_LINE_GAP_S`` empties it). Once it is full, the line
    is without pulse, damped or ringing when at least ``P_LINE_ENTER`` of them say
    so (in that order), and fine again when at most ``P_LINE_LEAVE`` of them
    say what it was judged.
    """
    cls = beat_line_class(row, par, lq)
    if cls < 0:
        return state
    # the reference follows the fine beats over ``P_LINE_REF_S`` of data time, a damped
    # one ten times slower (a lasting change of the patient's pulse is learnt, in time)
    alpha = min((row[B_END] - row[B_ONSET]) / par[P_LINE_REF_S], 1.0)
    if cls == LINE_OK:
        _follow(lq, row, alpha)
    elif cls == LINE_DAMPED and not np.isnan(lq[LQ_REF_PP]):
        _follow(lq, row, 0.1 * alpha)
    last = lq[LQ_LAST_END]
    if not np.isnan(last) and (row[B_ONSET] - last > _LINE_GAP_S or row[B_END] < last):
        lq[LQ_N] = 0.0  # a pause, or data time went back: judge afresh
        lq[LQ_HEAD] = 0.0
        lq[LQ_COUNT : LQ_COUNT + LINE_CLASSES] = 0.0
    lq[LQ_LAST_END] = row[B_END]
    size = int(par[P_LINE_BEATS])
    n = int(lq[LQ_N])
    head = int(lq[LQ_HEAD])
    if n == size:  # full: the oldest leaves
        lq[LQ_COUNT + int(lq[LQ_RING + head])] -= 1.0
        head = (head + 1) % size
        n -= 1
    lq[LQ_RING + (head + n) % size] = cls
    lq[LQ_COUNT + cls] += 1.0
    lq[LQ_N] = n + 1
    lq[LQ_HEAD] = head
    if n + 1 < size:
        return state
    enter = par[P_LINE_ENTER]
    for bad in (LINE_NO_PULSE, LINE_DAMPED, LINE_RINGING):
        if lq[LQ_COUNT + bad] >= enter:
            return bad
    if state != LINE_OK and lq[LQ_COUNT + state] <= par[P_LINE_LEAVE]:
        return LINE_OK
    return state


@jit
def _sorted_median(win: np.ndarray, wn: int, col: int) -> float:
    """Median of the ``wn`` sorted values of window column ``col`` (``W_SORTED``)."""
    sc = col + W_SORTED
    mid = wn // 2
    if wn % 2:
        return float(win[mid, sc])
    return float(0.5 * (win[mid - 1, sc] + win[mid, sc]))


@jit
def _window_push(win: np.ndarray, wn: int, row: np.ndarray) -> None:
    """Append a beat (``classify`` row) as window row ``wn``; insert its values sorted."""
    win[wn, W_END] = row[B_END]
    win[wn, W_MAP] = row[B_MAP]
    win[wn, W_SBP] = row[B_SBP]
    win[wn, W_DBP] = row[B_DBP]
    win[wn, W_HR] = row[B_HR]
    for c in range(W_MAP, W_VALUES):
        sc = c + W_SORTED
        v = win[wn, c]
        j = wn
        while j > 0 and win[j - 1, sc] > v:
            win[j, sc] = win[j - 1, sc]
            j -= 1
        win[j, sc] = v


@jit
def _window_drop(win: np.ndarray, wn: int, drop: int) -> None:
    """Remove the ``drop`` oldest of the window's ``wn`` beats (and their sorted values)."""
    for r in range(drop):
        for c in range(W_MAP, W_VALUES):
            sc = c + W_SORTED
            v = win[r, c]
            n_sorted = wn - r
            j = 0
            while win[j, sc] != v:  # (it is there: the same float, copied)
                j += 1
            for k in range(j, n_sorted - 1):
                win[k, sc] = win[k + 1, sc]
    for r in range(wn - drop):
        for c in range(W_VALUES):
            win[r, c] = win[r + drop, c]


@jit
def advance_beats(
    rows: np.ndarray,
    i: int,
    win: np.ndarray,
    mf: np.ndarray,
    counts: np.ndarray,
) -> int:
    """Take beats (``classify`` rows) from ``rows[i]`` on, until one needs decisions.

    For each beat: the valid-run timer and the line's state (``judge_line``,
    ``mst[M_LINE]``: while it is not fine, an SBP target's readings are not
    judged); for a valid one the rolling window
    (beats ending within ``P_WINDOW_S`` of it; restarted when data time goes
    back), its medians once it holds ``P_MIN_BEATS``, the metric's value and
    the below / critical / recovered / SBP-at-target timers. Then whether
    anything the protocol decides could change with this beat (an alarm to
    raise, clear, escalate or worsen, an advisory flag that flips, a trend
    point or a re-announcement due, the signal-invalid alarm to clear, the
    line's state differing from the one its alarms show), judged
    from ``ctx``: if so the call stops after it (``mst[M_DECIDE]``) and the
    caller decides, in Python, exactly as for any other observation. A beat
    that changes nothing is only counted (``counts``: beats, valid beats).

    The timers and those decisions are the protocol's rules
    (``streamproc.core.protocol.hold``), called here, not copied: the monitor
    applies the same functions.

    Stops too, before taking a beat, when the window is full (the caller
    grows it and calls again). Returns the index of the next beat to take;
    ``win``, ``mf`` (timers, state), ``counts`` are updated in place.
    """
    timers, mst, par, ctx, lq = _monitor_views(mf)
    n = rows.shape[0]
    wn = int(mst[M_WIN_N])
    mst[M_DECIDE] = 0.0
    metric_sbp = ctx[C_METRIC_SBP] != 0.0
    target = ctx[C_TARGET]
    alarm = int(ctx[C_ALARM])
    rank = ctx[C_RANK]
    ack_value = ctx[C_ACK_VALUE]
    gap = par[P_GAP_S]
    while i < n:
        if wn == win.shape[0]:
            break  # no room: the caller grows the window
        onset = rows[i, B_ONSET]
        end = rows[i, B_END]
        valid = rows[i, B_QUALITY] == Q_VALID
        i += 1
        dur = end - onset
        counts[0] += 1.0
        hold_observe(timers, T_VALID_RUN, valid, end, dur, par[P_CONTINUITY_S])
        was = int(mst[M_LINE])
        line = judge_line(lq, rows[i - 1], par, was)
        mst[M_LINE] = line
        # SBP readings of a line that is not fine are not judged: the runs they had
        # begun are dropped, and they neither start, extend nor end one (the mean is)
        suspended = metric_sbp and line != LINE_OK
        if suspended and was == LINE_OK:
            suspend_sbp_runs(timers, end, dur, gap)
        if not valid:
            if line != ctx[C_LINE]:
                mst[M_DECIDE] = DECIDE_BEAT
                break
            continue
        counts[1] += 1.0
        mst[M_VALID_REF] = end
        decide = line != ctx[C_LINE] or (
            ctx[C_SIGNAL_INVALID] != 0.0 and signal_valid_again(timers, par[P_VALID_CLEAR_S])
        )
        # the rolling window
        if wn > 0 and end < win[wn - 1, W_END]:
            wn = 0  # data time went back (gateway clock): the window restarts
        _window_push(win, wn, rows[i - 1])
        wn += 1
        horizon = end - par[P_WINDOW_S]
        drop = 0
        while drop < wn and win[drop, W_END] < horizon:
            drop += 1
        if drop:
            _window_drop(win, wn, drop)
            wn -= drop
        if wn < par[P_MIN_BEATS]:
            if decide:
                mst[M_DECIDE] = DECIDE_BEAT
                break
            continue
        map_v = _sorted_median(win, wn, W_MAP)
        sbp_v = _sorted_median(win, wn, W_SBP)
        mst[M_MAP] = map_v
        mst[M_SBP] = sbp_v
        mst[M_DBP] = _sorted_median(win, wn, W_DBP)
        mst[M_HR] = _sorted_median(win, wn, W_HR)
        value = sbp_v if metric_sbp else map_v
        mst[M_VALUE] = value
        mst[M_OBS_TS] = end
        observe_pressure(
            timers,
            value,
            map_v,
            target,
            metric_sbp,
            suspended,
            end,
            dur,
            gap,
            par[P_CRITICAL_MAP],
            par[P_CLEAR_MARGIN],
        )
        # the protocol's rules (``rules``), as the monitor's decisions apply them
        if trend_due(end, ctx[C_TREND_TS], par[P_TREND_STEP_S]) or end >= ctx[C_WAKE]:
            decide = True
        move, _ = hypotension_move(
            timers,
            alarm,
            rank,
            ack_value,
            value,
            suspended,
            ctx[C_REFRACTORY] != 0.0,
            par[P_HOLD_S],
            par[P_CRITICAL_HOLD_S],
            par[P_CLEAR_HOLD_S],
            par[P_WORSEN],
            par[P_RANK_MEDIUM],
            par[P_RANK_HIGH],
        )
        if move != MOVE_NONE or alarm == ALARM_OTHER:
            decide = True
        flag_at = ctx[C_FLAG_AT] != 0.0
        if sbp_at_target_held(timers, par[P_HOLD_S]) != (ctx[C_FLAG_SBP] != 0.0) or (
            at_target_flag(value, target, suspended, flag_at) != flag_at
        ):
            decide = True
        if decide:
            mst[M_DECIDE] = DECIDE_OBSERVED
            break
    mst[M_WIN_N] = wn
    return i


# take them (numba's call costs grow with the number of arguments):


@jit
def _segment_views(
    sp: np.ndarray, si: np.ndarray, sf: np.ndarray
) -> tuple[
    np.ndarray,
    np.ndarray,
    np.ndarray,
    np.ndarray,
    np.ndarray,
    np.ndarray,
    np.ndarray,
    np.ndarray,
    np.ndarray,
]:
    """The parts of a segment's packed arrays.

    ``coef``, ``fpar``, ``limits``, ``istate``, ``ipar``, ``fstate``, the rhythm and
    MAP-jump level checks' states and ``c_tail``.
    """
    ipar = si[SI_PAR:SI_SIZE]
    width = LV_SUSP + ipar[IP_CONFIRM]
    tail = SF_LEVELS + 2 * width
    return (
        sp[SP_COEF:SP_FPAR],
        sp[SP_FPAR:SP_LIMITS],
        sp[SP_LIMITS:SP_SIZE],
        si[:SI_PAR],
        ipar,
        sf[:SF_LEVELS],
        sf[SF_LEVELS : SF_LEVELS + width],
        sf[SF_LEVELS + width : tail],
        sf[tail:],
    )


@jit
def detect_beats(  # noqa: PLR0917 - the segment's state, packed for the compiler
    x: np.ndarray,
    sp: np.ndarray,
    si: np.ndarray,
    sf: np.ndarray,
    ssf: np.ndarray,
    dq: np.ndarray,
    ybuf: np.ndarray,
    rows: np.ndarray,
) -> int:
    """One chunk of a segment: ``detect``, then ``classify`` the beats it completed.

    One compiled call for the whole chunk, on the segment's packed arrays
    (``SP_*``, ``SI_*``, ``SF_*``). The beat in progress (``istate[PENDING]``) and
    the first buffered sample (``istate[B0]``) are carried in ``istate``.
    Afterwards the filtered samples no future beat can need are dropped from
    ``ybuf``, and a beat in progress too long ago to end within ``max_beat_s`` is
    forgotten.

    Writes the beats (``classify`` rows) to ``rows`` and returns how many; -1,
    with nothing changed, when a buffer has no room for the chunk (see
    ``has_room``: the caller grows them and calls again).
    """
    coef, fpar, limits, istate, ipar, fstate, rhythm, jump, c_tail = _segment_views(sp, si, sf)
    if not has_room(x.size, istate, ssf, dq, ybuf, rows, ipar[IP_REFR], ipar[IP_H]):
        return -1
    b0 = istate[B0]
    w = c_tail.size
    found = detect(
        x,
        coef,
        fstate,
        istate,
        c_tail,
        ssf,
        dq,
        ybuf,
        ipar[IP_H],
        ipar[IP_LEARN_N],
        ipar[IP_REFR],
        fpar[FP_FRAC],
        fpar[FP_MIN_UP],
    )
    max_n = ipar[IP_MAX_N]
    pending = istate[PENDING]
    nb = 0
    if found.size:
        nb = classify(
            ybuf,
            b0,
            found,
            pending,
            fpar[FP_T0],
            fpar[FP_FS],
            fpar[FP_DELAY],
            max_n,
            limits,
            rhythm,
            jump,
            ipar[IP_CONFIRM],
            fpar[FP_MIN_RR],
            fpar[FP_JUMP_TOLERANCE],
            rows,
        )
        pending = found[-1]
    # forget samples no future beat can need
    n_end = istate[N_END]
    keep_from = n_end - w - 1
    if pending >= 0:
        # future onsets lie at or after n_end - w: too far for a beat?
        if n_end - w - pending > max_n:
            pending = -1
        else:
            keep_from = min(keep_from, pending)
    istate[PENDING] = pending
    if istate[LEARNED] != 0 and keep_from > b0:
        drop = keep_from - b0
        kept = istate[Y_LEN] - drop
        for j in range(kept):  # forwards: the ranges may overlap
            ybuf[j] = ybuf[drop + j]
        istate[Y_LEN] = kept
        istate[B0] = keep_from
    return nb


# What ``step_chunk`` returns.
STEP_DONE = 0  # every beat taken, nothing to decide
STEP_BEATS = 1  # ``rows[ROWS_I:ROWS_N]`` left, after a beat that needs decisions (or room)
STEP_SIGNAL = 2  # every beat taken; no valid beat for the signal-invalid alarm's time
STEP_ROOM = -1  # nothing done: a segment buffer must grow first


@jit
def step_chunk(  # noqa: PLR0917 - a segment's and a monitor's state, packed for the compiler
    x: np.ndarray,
    sp: np.ndarray,
    si: np.ndarray,
    sf: np.ndarray,
    ssf: np.ndarray,
    dq: np.ndarray,
    ybuf: np.ndarray,
    rows: np.ndarray,
    win: np.ndarray,
    mf: np.ndarray,
    counts: np.ndarray,
    ts: float,
) -> int:
    """A monitor's chunk in one call: ``detect_beats``, then ``advance_beats`` on its beats.

    ``ts`` is the chunk's data time (its newest sample). Returns ``STEP_DONE``
    when the monitor has nothing to do in Python (the usual chunk);
    ``STEP_BEATS`` when ``advance_beats`` stopped (``istate[ROWS_I]`` of
    ``istate[ROWS_N]`` rows taken): the monitor decides and takes the rest;
    ``STEP_SIGNAL`` when every beat was taken but no valid beat has come for
    ``P_SIGNAL_INVALID_S`` (the monitor raises that alarm, or finds it open);
    ``STEP_ROOM`` as ``detect_beats`` returns -1.
    """
    nb = detect_beats(x, sp, si, sf, ssf, dq, ybuf, rows)
    if nb < 0:
        return STEP_ROOM
    mst = mf[MF_MST:MF_PAR]
    si[ROWS_N] = nb
    i = 0
    mst[M_DECIDE] = 0.0
    if nb:
        i = advance_beats(rows[:nb], 0, win, mf, counts)
    si[ROWS_I] = i
    if i < nb or mst[M_DECIDE] != 0.0:
        return STEP_BEATS
    par = mf[MF_PAR:MF_CTX]
    if signal_invalid_due(ts, mst[M_VALID_REF], par[P_SIGNAL_INVALID_S]):
        return STEP_SIGNAL
    return STEP_DONE


# What ``step_chunks`` leaves in ``stop[STOP_CODE]`` for the chunk at the index it
# returns (when that is not the end): ``CHUNK_REFUSED``, or the ``STEP_*`` code.
CHUNK_REFUSED = -2  # nothing done: the caller takes the chunk the ordinary way


@jit
def step_chunks(  # noqa: PLR0917 - many beds' state, packed for the compiler
    x: np.ndarray,
    ends: np.ndarray,
    t0s: np.ndarray,
    fss: np.ndarray,
    slots: np.ndarray,
    start: int,
    table: Any,
    armed: np.ndarray,
    last_ts: np.ndarray,
    last_i: np.ndarray,
    mark: np.ndarray,
    touched: np.ndarray,
    epoch: int,
    counts: np.ndarray,
    lim: np.ndarray,
    stop: np.ndarray,
) -> int:
    """``step_chunk`` over many beds' chunks, in order, until one needs the caller.

    Chunk ``i`` is ``x[ends[i - 1]:ends[i]]`` (from 0 for the first), taken at
    ``t0s[i]``, ``fss[i]`` by the monitor in slot ``slots[i]`` (-1: none), whose
    segment's and monitor's arrays are ``table[slot]``: ``(sp, si, sf, ssf, dq,
    ybuf, rows, win, mf)``. A slot with ``armed[slot] == 0`` is one whose next
    chunk needs Python first; ``last_ts[slot]`` is its monitor's last waveform
    time. ``lim`` holds the staleness limit (``LIM_*``).

    Chunks from ``start`` on are taken while each is one the monitor would
    take with nothing to do in Python: a valid chunk (``messages.chunk_fault``)
    that continues its segment (``messages.continues``; not after a staleness gap),
    fits the buffers and leaves ``step_chunk`` with ``STEP_DONE``. Returns the
    index ``k`` of the first chunk that is not (``ends.size`` when all are);
    ``stop[STOP_CODE]`` says why: ``CHUNK_REFUSED`` (nothing was done with it)
    or the ``STEP_*`` code of a chunk taken whose remainder is the caller's.

    Every slot given a chunk by this call is listed once in
    ``touched[:stop[STOP_TOUCHED]]`` (``mark[slot] = epoch`` records it; the caller
    passes a new ``epoch`` per call), its last chunk's time in ``last_ts[slot]`` and
    index in ``last_i[slot]``.
    """
    n = ends.size
    nt = 0
    for i in range(start, n):
        a = ends[i - 1] if i > 0 else 0
        b = ends[i]
        s = slots[i]
        t0 = t0s[i]
        fs = fss[i]
        if s < 0 or armed[s] == 0 or chunk_fault(t0, fs, x[a:b]) != CHUNK_OK:
            return _stopped(stop, CHUNK_REFUSED, nt, i)
        sp, si, sf, ssf, dq, ybuf, rows, win, mf = table[s]
        seg_fs = sp[SP_FPAR + FP_FS]
        if not continues(t0, fs, seg_fs, sample_time(sp[SP_FPAR + FP_T0], seg_fs, si[N_END])):
            return _stopped(stop, CHUNK_REFUSED, nt, i)  # a new segment: the caller's
        if t0 - last_ts[s] > lim[LIM_STALE_S]:
            return _stopped(stop, CHUNK_REFUSED, nt, i)  # a restart after a gap
        ts = sample_time(t0, fs, b - a - 1)
        code = step_chunk(x[a:b], sp, si, sf, ssf, dq, ybuf, rows, win, mf, counts, ts)
        if code == STEP_ROOM:
            return _stopped(stop, CHUNK_REFUSED, nt, i)  # the caller grows a buffer
        last_ts[s] = ts
        last_i[s] = i
        if mark[s] != epoch:
            mark[s] = epoch
            touched[nt] = s
            nt += 1
        if code != STEP_DONE:
            return _stopped(stop, code, nt, i)
    stop[STOP_TOUCHED] = nt
    return n


@jit
def _stopped(stop: np.ndarray, code: int, nt: int, i: int) -> int:
    """``step_chunks``' return at chunk ``i``, for ``code``, with ``nt`` slots touched."""
    stop[STOP_CODE] = code
    stop[STOP_TOUCHED] = nt
    return i


# ``step_chunks``' table, a numba typed list made and changed by compiled (cached)
# calls: its Python methods compile their own code in every process (~1 s).
@jit
def table_new(item: Any) -> Any:
    """A typed list of ``item``'s type, holding ``item``."""
    table = List()
    table.append(item)
    return table


@jit
def table_append(table: Any, item: Any) -> None:
    """``table.append(item)``."""
    table.append(item)


@jit
def table_set(table: Any, i: int, item: Any) -> None:
    """``table[i] = item``."""
    table[i] = item


#: The digest of what this module's compiled functions take from other files
#: (``_compile.built_from``): checked below, so that a change there cannot load code
#: numba's cache built from the old one. The error says the new value.
BUILT_FROM: Final = "87fab1c036183ad6"
_compile.check_built_from(__name__, BUILT_FROM)
