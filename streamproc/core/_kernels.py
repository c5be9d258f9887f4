"""Compiled per-sample loops of the beat detector (numba).

The detector's per-sample stages are sequential recurrences: the low-pass
biquad, the running sum of positive slopes, the causal sliding maximum of the
slope sum, the threshold crossings with their refractory period and the foot
search. Written as numpy calls they cost a dozen Python-level calls per chunk
(most of a 1 s chunk's time is call overhead, not arithmetic); compiled, one
call does all of them. ``beat_measures`` does the same for the per-beat sums.

Every function here is pure: arrays in, arrays out, no state kept between
calls (the caller carries it). ``.py_func`` of each is the same code run by the
interpreter; the tests check the compiled and interpreted versions agree.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar, cast

import numba
import numpy as np

__all__ = ["beat_measures", "detect"]

_F = TypeVar("_F", bound=Callable[..., Any])


def _jit(fn: _F) -> _F:
    """``numba.njit``, with its on-disk cache where numba finds a writable place for it.

    Without one (a read-only install and no writable home; ``NUMBA_CACHE_DIR`` names
    one), numba refuses ``cache=True`` at decoration time: compile per process instead
    of failing to import.
    """
    try:
        return cast("_F", numba.njit(cache=True, nogil=True)(fn))
    except RuntimeError:  # "cannot cache function ...: no locator available"
        return cast("_F", numba.njit(cache=False, nogil=True)(fn))


# Integer state slots of ``detect`` (``istate``).
N_END = 0  # samples of the segment seen so far
LEARNED = 1  # 1 once the learning window is complete
PREV_ABOVE = 2  # 1 when the last sample was above the threshold
LAST_CROSS = 3  # segment index of the last accepted crossing
# Float state slots (``fstate``).
Z0 = 0  # biquad state
Z1 = 1
C_LAST = 2  # running sum of positive slopes at the last sample
Y_LAST = 3  # filtered value of the last sample


@_jit
def detect(  # noqa: PLR0917 - one compiled call carries every stage's state
    x: np.ndarray,
    coef: np.ndarray,
    fstate: np.ndarray,
    istate: np.ndarray,
    c_tail: np.ndarray,
    ssf_hist: np.ndarray,
    y_buf: np.ndarray,
    b0: int,
    h: int,
    learn_n: int,
    refr: int,
    frac: float,
    min_up: float,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Filter ``x``, find the accepted threshold crossings and their onsets.

    ``coef`` is ``(b0, b1, b2, a1, a2)`` of a biquad normalised to ``a0 = 1``
    (direct form II transposed, state in ``fstate[Z0:Z1+1]``). ``c_tail`` holds
    the last ``w`` values of the slope running sum (updated in place);
    ``ssf_hist`` the slope sums the sliding maximum still needs (the whole
    segment while learning). ``y_buf`` holds the filtered samples from segment
    index ``b0`` on. ``istate``/``fstate`` are updated in place.

    Returns the new ``y_buf`` (old + this chunk, from ``b0``), the new
    ``ssf_hist`` and the onsets (segment indices) of the accepted crossings;
    an onset at index 0 (an upstroke that began before the segment) is left out.
    """
    n = x.size
    w = c_tail.size
    start = istate[N_END]
    # 1. low-pass biquad
    cb0, cb1, cb2, ca1, ca2 = coef[0], coef[1], coef[2], coef[3], coef[4]
    z0 = fstate[Z0]
    z1 = fstate[Z1]
    old = y_buf.size
    ybuf = np.empty(old + n, np.float64)
    ybuf[:old] = y_buf
    for i in range(n):
        xi = x[i]
        yi = z0 + cb0 * xi
        z0 = z1 + cb1 * xi - ca1 * yi
        z1 = cb2 * xi - ca2 * yi
        ybuf[old + i] = yi
    fstate[Z0] = z0
    fstate[Z1] = z1
    # 2. slope sum over the last w samples: c[i] - c[i - w]
    y_last = fstate[Y_LAST] if start > 0 else ybuf[old]
    c = fstate[C_LAST]
    nh = ssf_hist.size
    ssf_ext = np.empty(nh + n, np.float64)
    ssf_ext[:nh] = ssf_hist
    tail = c_tail.copy()  # ring: tail[k % w] is c at index (start + k - w)
    for i in range(n):
        yi = ybuf[old + i]
        d = yi - y_last
        if d > 0.0:
            c += d
        y_last = yi
        k = i % w
        ssf_ext[nh + i] = c - tail[k]
        tail[k] = c
    # re-order the ring so c_tail[j] is c at index (end - w + j)
    r = n % w
    for j in range(w):
        c_tail[j] = tail[(r + j) % w]
    fstate[C_LAST] = c
    fstate[Y_LAST] = y_last
    end = start + n
    istate[N_END] = end

    onsets = np.empty(0, np.int64)
    if istate[LEARNED] == 0:
        if end < learn_n:
            return ybuf, ssf_ext, onsets
        istate[LEARNED] = 1
        scan_from = 0  # segment index of ssf_ext[0]
        scan_off = 0  # first ssf_ext index to scan
    else:
        scan_from = start - nh
        scan_off = nh
    # 3. threshold crossings: level = max of the last h slope sums (0 before the segment)
    total = ssf_ext.size
    learn_level = 0.0
    if scan_off == 0:
        for i in range(min(learn_n, total)):
            learn_level = max(learn_level, ssf_ext[i])
    dq = np.empty(total, np.int64)  # monotonic deque of indices (decreasing values)
    head = 0
    tail_i = 0
    prev_above = istate[PREV_ABOVE] == 1
    last = istate[LAST_CROSS]
    found = np.empty(n + nh, np.int64)
    nf = 0
    for i in range(total):
        v = ssf_ext[i]
        while tail_i > head and ssf_ext[dq[tail_i - 1]] <= v:
            tail_i -= 1
        dq[tail_i] = i
        tail_i += 1
        while dq[head] <= i - h:
            head += 1
        if i < scan_off:
            continue
        seg_i = scan_from + i
        level = learn_level if (scan_off == 0 and i < learn_n) else ssf_ext[dq[head]]
        thr = max(level * frac, min_up)
        above = v > thr
        if above and not prev_above and seg_i - last >= refr:
            found[nf] = seg_i
            nf += 1
            last = seg_i
        prev_above = above
    istate[PREV_ABOVE] = 1 if prev_above else 0
    istate[LAST_CROSS] = last
    # 4. onset: the foot, the first minimum of y in the w samples before the crossing
    onsets = np.empty(nf, np.int64)
    no = 0
    for k in range(nf):
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
            onsets[no] = best
            no += 1
    keep = min(total, h - 1) if h > 1 else 0
    return ybuf, ssf_ext[total - keep :].copy(), onsets[:no]


@_jit
def beat_measures(
    y: np.ndarray, b0: int, onsets: np.ndarray, band_mmhg: float, band_pp: float
) -> np.ndarray:
    """Per beat (between consecutive onsets): foot, mean, max, min, plateau share, next foot.

    Returns a ``(len(onsets) - 1, 6)`` array; the plateau share is the fraction
    of the beat's samples within ``min(band_mmhg, band_pp x pulse pressure)``
    of its maximum.
    """
    nb = onsets.size - 1
    out = np.empty((max(nb, 0), 6), np.float64)
    for k in range(nb):
        s = onsets[k] - b0
        e = onsets[k + 1] - b0
        total = 0.0
        top = y[s]
        low = y[s]
        for j in range(s, e):
            v = y[j]
            total += v
            top = max(top, v)
            low = min(low, v)
        foot = y[s]
        band = min(band_mmhg, band_pp * (top - foot))
        near = 0
        for j in range(s, e):
            if y[j] >= top - band:
                near += 1
        length = e - s
        out[k, 0] = foot
        out[k, 1] = total / length
        out[k, 2] = top
        out[k, 3] = low
        out[k, 4] = near / length
        out[k, 5] = y[e]
    return out
