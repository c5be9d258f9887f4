"""Synthetic arterial-pressure waveforms and line artifacts, for tests and load.

Everything here is seeded and reproducible, and uses numpy only.

A beat has a fast upstroke from the foot (diastolic pressure) to a rounded
systolic peak, a systolic decline to the dicrotic notch with a small dicrotic
wave after it, and an exponential diastolic run-off back to the next foot.
Systole lasts about as long as a real left-ventricular ejection (it shortens a
little as the heart rate rises); diastole takes the rest of the interval. Each
beat's maximum is ``sbp(t)`` and its foot ``dbp(t)`` (``t`` = the beat's
onset), plus the respiratory swing and the measurement noise, so that
``sbp=60, dbp=40`` gives beats whose area-mean (MAP) is about 47 mmHg.

:func:`synthesize_abp` returns the samples. :func:`synthesize_abp_beats` takes
the same arguments and also returns the true onset times, for tests that count
beats. :func:`apply_artifact` overlays one of :data:`ARTIFACT_KINDS` on a copy.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

__all__ = [
    "ARTIFACT_KINDS",
    "SyntheticAbp",
    "Trajectory",
    "apply_artifact",
    "synthesize_abp",
    "synthesize_abp_beats",
]

FloatArray = npt.NDArray[np.float64]

Trajectory = float | Callable[[np.ndarray], np.ndarray]
"""A value, or a function of time (s from the start, an array) giving values."""

ARTIFACT_KINDS: tuple[str, ...] = (
    "flush",
    "sampling",
    "overdamped",
    "underdamped",
    "zeroing",
    "disconnect",
    "calibration",
    "clot",
    "gap",
    "pulseless",
)

# Beat shape, as fractions of the pulse pressure above the foot.
_NOTCH_LEVEL = 0.45  # pressure at the dicrotic notch
_DICROTIC_AMP = 0.12  # height of the dicrotic wave after the notch
_DICROTIC_S = 0.12  # duration of the dicrotic wave
_RUNOFF_TAU_S = 0.30  # time constant of the diastolic run-off


@dataclass(frozen=True, slots=True)
class SyntheticAbp:
    """A synthetic recording and its truth.

    Attributes:
        samples: pressure in mmHg, ``samples[i]`` at ``i / fs`` s.
        fs: sampling rate in Hz.
        onsets_s: true pulse onsets (feet), in s from the start, within the
            recording (the first beat may have started before ``0``).
    """

    samples: FloatArray
    fs: float
    onsets_s: FloatArray

    @property
    def complete_beats(self) -> int:
        """Number of beats whose onset and end both lie inside the recording."""
        return max(int(self.onsets_s.size) - 1, 0)


def _evaluate(traj: Trajectory, t: FloatArray, name: str) -> FloatArray:
    if callable(traj):
        values = np.asarray(traj(t), dtype=np.float64)
        if values.shape != t.shape:
            values = np.broadcast_to(values, t.shape).astype(np.float64)
    else:
        values = np.full(t.shape, float(traj), dtype=np.float64)
    if not np.isfinite(values).all():
        raise ValueError(f"{name} trajectory gave a non-finite value")
    return values


def synthesize_abp_beats(
    *,
    duration_s: float,
    sbp: Trajectory,
    dbp: Trajectory,
    fs: float = 125.0,
    hr: Trajectory = 80.0,
    seed: int = 0,
    hrv: float = 0.03,
    resp_mmhg: float = 2.0,
    resp_rate_bpm: float = 14.0,
    noise_mmhg: float = 0.3,
    af: bool = False,
) -> SyntheticAbp:
    """Like :func:`synthesize_abp`, and also return the true beat onsets."""
    if not (duration_s > 0 and math.isfinite(duration_s)):
        raise ValueError(f"duration_s must be > 0, got {duration_s!r}")
    if not (fs > 0 and math.isfinite(fs)):
        raise ValueError(f"fs must be > 0, got {fs!r}")
    rng = np.random.default_rng(seed)
    n = round(duration_s * fs)
    t = np.arange(n, dtype=np.float64) / fs

    # Beat schedule: integrate the heart rate into a beat phase on a fine grid,
    # place a beat at every whole phase, then perturb the intervals (HRV,
    # respiratory sinus arrhythmia, or atrial fibrillation's irregular rhythm).
    pad_s = 4.0  # beats start before 0 so the recording opens mid-beat
    grid = np.arange(-pad_s, duration_s + pad_s, 0.01)
    rate = np.clip(_evaluate(hr, np.maximum(grid, 0.0), "hr"), 15.0, 300.0)
    phase = np.concatenate(([0.0], np.cumsum(rate[:-1] / 60.0 * 0.01)))
    phase += rng.uniform(0.0, 1.0)
    whole = np.arange(math.ceil(phase[0]), math.floor(phase[-1]) + 1, dtype=np.float64)
    base = np.interp(whole, phase, grid)
    rr = np.diff(base)
    resp_phase0 = rng.uniform(0.0, 2 * math.pi)
    resp_w = 2 * math.pi * resp_rate_bpm / 60.0
    if af:
        factor = rng.uniform(0.7, 1.3, rr.size)
    else:
        rsa = 0.5 * hrv * np.sin(resp_w * base[:-1] + resp_phase0)
        factor = 1.0 + hrv * rng.standard_normal(rr.size) + rsa
    rr = np.maximum(rr * np.clip(factor, 0.3, 3.0), 0.26)
    onsets = base[0] + np.concatenate(([0.0], np.cumsum(rr)))
    onsets = onsets[onsets < duration_s + 2.0]
    if onsets.size < 2 or onsets[0] > 0.0:
        raise ValueError("duration too short for one beat")
    rr = np.diff(onsets)
    starts = onsets[:-1]
    k_count = starts.size

    foot = _evaluate(dbp, np.maximum(starts, 0.0), "dbp")
    peak = _evaluate(sbp, np.maximum(starts, 0.0), "sbp")
    pp = np.maximum(peak - foot, 0.0)
    if af:
        # Frank-Starling: a beat after a short interval ejects less, one after
        # a long interval more. Scaled so the mean pulse pressure is unchanged.
        prev = np.concatenate(([rr[0]], rr[:-1]))
        scale = np.sqrt(prev / np.mean(prev))
        pp = pp * scale / np.mean(scale)
    next_foot = np.concatenate((foot[1:], foot[-1:]))

    # Systolic timing (Weissler's LVET ~ 413 - 1.7 HR ms), kept within the beat.
    inst_hr = 60.0 / rr
    t_notch = np.clip(0.413 - 0.0017 * inst_hr, 0.12, None)
    t_notch = np.minimum(t_notch, 0.5 * rr)
    t_up = np.clip(0.11 * rr, 0.05, 0.09)
    t_up = np.minimum(t_up, 0.4 * t_notch)

    k = np.clip(np.searchsorted(starts, t, side="right") - 1, 0, k_count - 1)
    tau = t - starts[k]
    beat_len = rr[k]
    tu = t_up[k]
    tn = t_notch[k]
    shape = np.empty(n, dtype=np.float64)
    # Upstroke: half a cosine from the foot to the peak.
    up = tau < tu
    shape[up] = 0.5 - 0.5 * np.cos(np.pi * tau[up] / tu[up])
    # Systolic decline: half a cosine from the peak to the notch.
    sys = (~up) & (tau < tn)
    x = (tau[sys] - tu[sys]) / (tn[sys] - tu[sys])
    shape[sys] = _NOTCH_LEVEL + (1.0 - _NOTCH_LEVEL) * 0.5 * (1.0 + np.cos(np.pi * x))
    # Diastole: exponential run-off from the notch that reaches the foot at
    # the beat's end, plus the dicrotic wave.
    dia = tau >= tn
    d = tau[dia] - tn[dia]
    rest = beat_len[dia] - tn[dia]
    end = np.exp(-rest / _RUNOFF_TAU_S)
    runoff = (np.exp(-d / _RUNOFF_TAU_S) - end) / (1.0 - end)
    wave_len = np.minimum(_DICROTIC_S, 0.8 * rest)
    in_wave = d < wave_len
    wave = np.where(in_wave, np.sin(np.pi * np.minimum(d / wave_len, 1.0)) ** 2, 0.0)
    shape[dia] = _NOTCH_LEVEL * runoff + _DICROTIC_AMP * wave * runoff

    baseline = foot[k] + (next_foot[k] - foot[k]) * np.clip(tau / beat_len, 0.0, 1.0)
    samples = baseline + pp[k] * shape
    samples += resp_mmhg * np.sin(resp_w * t + resp_phase0)
    if noise_mmhg > 0:
        samples += noise_mmhg * rng.standard_normal(n)
    inside = onsets[(onsets >= 0.0) & (onsets < n / fs)]
    return SyntheticAbp(samples=samples, fs=fs, onsets_s=inside)


def synthesize_abp(
    *,
    duration_s: float,
    sbp: Trajectory,
    dbp: Trajectory,
    fs: float = 125.0,
    hr: Trajectory = 80.0,
    seed: int = 0,
    hrv: float = 0.03,
    resp_mmhg: float = 2.0,
    resp_rate_bpm: float = 14.0,
    noise_mmhg: float = 0.3,
    af: bool = False,
) -> np.ndarray:
    """Synthesize ``duration_s`` of arterial pressure (mmHg) sampled at ``fs`` Hz.

    Args:
        duration_s: length of the recording.
        sbp, dbp: systolic peak and diastolic foot, each a value or a function
            of time (s from the start, array in, array out).
        fs: sampling rate in Hz.
        hr: heart rate in beats/min, a value or a function of time.
        seed: seed of the random generator (same seed, same samples).
        hrv: beat-to-beat variability of the intervals (fraction, s.d.).
        resp_mmhg: amplitude of the respiratory swing of the whole waveform.
        resp_rate_bpm: respiratory rate.
        noise_mmhg: s.d. of white measurement noise.
        af: atrial fibrillation: irregularly irregular intervals (±30%) and a
            pulse pressure that follows the preceding interval.

    Returns:
        A float64 array of ``round(duration_s * fs)`` samples.
    """
    return synthesize_abp_beats(
        duration_s=duration_s,
        sbp=sbp,
        dbp=dbp,
        fs=fs,
        hr=hr,
        seed=seed,
        hrv=hrv,
        resp_mmhg=resp_mmhg,
        resp_rate_bpm=resp_rate_bpm,
        noise_mmhg=noise_mmhg,
        af=af,
    ).samples


def _second_order_kernel(fs: float, fn_hz: float, zeta: float, length_s: float) -> FloatArray:
    """Impulse response of a catheter-transducer (second-order) system, unit DC gain."""
    t = np.arange(max(round(length_s * fs), 2), dtype=np.float64) / fs
    wn = 2 * math.pi * fn_hz
    if zeta < 1.0:
        wd = wn * math.sqrt(1.0 - zeta * zeta)
        h = np.exp(-zeta * wn * t) * np.sin(wd * t)
    else:
        root = math.sqrt(zeta * zeta - 1.0)
        h = np.exp((-zeta + root) * wn * t) - np.exp((-zeta - root) * wn * t)
    # Sample at mid-interval so the first tap is not lost to sin(0) = 0.
    h = np.concatenate(([h[1] / 2.0], h[1:]))
    return np.asarray(h / h.sum(), dtype=np.float64)


def _filtered(signal: FloatArray, kernel: FloatArray) -> FloatArray:
    """Causal convolution, with the first sample repeated before the start."""
    pad = np.full(kernel.size - 1, signal[0])
    out = np.convolve(np.concatenate((pad, signal)), kernel, mode="valid")
    return np.asarray(out, dtype=np.float64)


def _ramp(n: int, rise: int) -> FloatArray:
    """Weights 0..1..1..0 over ``n`` samples, rising and falling over ``rise`` samples."""
    w = np.ones(n, dtype=np.float64)
    r = min(rise, n // 2)
    if r > 0:
        edge = 0.5 - 0.5 * np.cos(np.pi * (np.arange(r) + 0.5) / r)
        w[:r] = edge
        w[n - r :] = edge[::-1]
    return w


def apply_artifact(
    samples: np.ndarray,
    *,
    fs: float,
    kind: str,
    start_s: float,
    duration_s: float,
    seed: int = 0,
) -> np.ndarray:
    """Return a copy of ``samples`` with one line artifact from ``start_s`` for ``duration_s``.

    Kinds (:data:`ARTIFACT_KINDS`):

    - ``flush``: fast-flush square wave, a plateau at 250-300 mmHg then a
      ringing release back to the waveform;
    - ``sampling``: stopcock turned to the syringe for a blood sample: the
      pressure falls to a low, flat level with aspiration dips, then returns;
    - ``overdamped``: pulse smoothed by an over-damped line (mean preserved);
    - ``underdamped``: under-damped line (resonance 10 Hz, damping 0.1): overshoot, ringing;
    - ``zeroing``: transducer open to air for zeroing: flat at 0 mmHg;
    - ``disconnect``: transducer disconnected: flat near 0 with a little noise;
    - ``calibration``: monitor calibration square wave between negative and
      positive levels (as at the start of MIMIC-II record s00001);
    - ``clot``: a clot forming: progressively heavier damping to a nearly flat line;
    - ``gap``: missing samples (NaN), as a recorder stores them;
    - ``pulseless``: no arterial pulse: a noisy level of 15-25 mmHg with small
      regular bumps (3-7 mmHg, 50-100/min: ventilation, a pump, a line that
      still moves), as a trace without cardiac output or a disconnected,
      clotted line shows it.

    Raises:
        ValueError: for an unknown ``kind`` (the message lists the kinds), or
            an artifact that does not overlap the samples.
    """
    if kind not in ARTIFACT_KINDS:
        raise ValueError(f"unknown artifact kind {kind!r}; expected one of {ARTIFACT_KINDS}")
    src = np.asarray(samples, dtype=np.float64)
    out = src.copy()
    i0 = max(round(start_s * fs), 0)
    i1 = min(round((start_s + duration_s) * fs), src.size)
    if i1 <= i0:
        raise ValueError("artifact does not overlap the samples")
    n = i1 - i0
    rng = np.random.default_rng(seed)
    t = np.arange(n, dtype=np.float64) / fs
    seg = src[i0:i1]

    if kind == "gap":
        out[i0:i1] = np.nan
    elif kind == "zeroing":
        w = _ramp(n, max(round(0.05 * fs), 1))
        out[i0:i1] = (1 - w) * seg + w * (0.05 * rng.standard_normal(n))
    elif kind == "disconnect":
        wander = 0.3 * np.sin(2 * math.pi * 0.2 * t + rng.uniform(0, 2 * math.pi))
        flat = wander + 0.2 * rng.standard_normal(n)
        w = _ramp(n, max(round(0.05 * fs), 1))
        out[i0:i1] = (1 - w) * seg + w * flat
    elif kind == "flush":
        level = rng.uniform(250.0, 300.0)
        ring_n = min(round(0.4 * fs), n // 2)
        hold_n = n - ring_n
        rise = np.clip(t[:hold_n] / 0.03, 0.0, 1.0)
        plateau = level + 0.5 * rng.standard_normal(hold_n)
        out[i0 : i0 + hold_n] = seg[0] + (plateau - seg[0]) * rise
        tr = t[:ring_n]
        ring = np.exp(-tr / 0.05) * np.cos(2 * math.pi * 11.0 * tr)
        tail = seg[hold_n:]
        out[i0 + hold_n : i1] = tail + (level - tail[0]) * ring
    elif kind == "sampling":
        level = rng.uniform(5.0, 15.0)
        dips = -8.0 * np.clip(np.sin(2 * math.pi * 0.5 * t), 0.0, None) ** 4
        flat = level + dips + 0.2 * rng.standard_normal(n)
        w = _ramp(n, max(round(0.1 * fs), 1))
        out[i0:i1] = (1 - w) * seg + w * flat
    elif kind in {"overdamped", "underdamped"}:
        if kind == "overdamped":
            kernel = _second_order_kernel(fs, 1.2, 1.5, 3.0)
        else:
            kernel = _second_order_kernel(fs, 10.0, 0.1, 1.0)
        lead = min(i0, kernel.size)
        damped = _filtered(src[i0 - lead : i1], kernel)[lead:]
        w = _ramp(n, max(round(0.3 * fs), 1))
        out[i0:i1] = (1 - w) * seg + w * damped
    elif kind == "calibration":
        out[i0:i1] = _calibration_signal(t)
    elif kind == "pulseless":
        level = rng.uniform(15.0, 25.0)
        amp = rng.uniform(3.0, 7.0)
        period = 60.0 / rng.uniform(50.0, 100.0)
        phase = (t + rng.uniform(0.0, period)) % period
        up_s = 0.15  # a quick rise, then a slow fall: what a detector takes for a beat
        bump = np.where(
            phase < up_s,
            0.5 - 0.5 * np.cos(np.pi * phase / up_s),
            np.exp(-(phase - up_s) / (0.25 * period)),
        )
        flat = level + amp * bump + 0.3 * rng.standard_normal(n)
        w = _ramp(n, max(round(0.3 * fs), 1))
        out[i0:i1] = (1 - w) * seg + w * flat
    else:  # clot
        # Damping that grows over the artifact: the pulse shrinks towards a
        # nearly flat line at the mean, then the flushed line comes back.
        lead = min(i0, round(3 * fs))
        history = src[i0 - lead : i1]
        light = _filtered(history, _second_order_kernel(fs, 2.0, 1.2, 3.0))[lead:]
        heavy = _filtered(history, _second_order_kernel(fs, 0.5, 2.0, 6.0))[lead:]
        frac = t / max(float(t[-1]), 1e-9)
        a = np.clip(2 * frac, 0.0, 1.0)
        b = np.clip(2 * frac - 1.0, 0.0, 1.0)
        damped = (1 - a) * seg + a * ((1 - b) * light + b * heavy)
        w = _ramp(n, max(round(0.3 * fs), 1))
        w[: n // 2] = 1.0
        out[i0:i1] = (1 - w) * seg + w * damped
    return out


def _calibration_signal(t: FloatArray) -> FloatArray:
    """A monitor's calibration square wave, after the first 35 s of MIMIC-II s00001.

    3 s blocks toggling fast (16 steps/s, low one step in three) between
    -72/-24, -24/+24 and -16/+16 mmHg, in turn; the last fifth (at most 9 s
    from the start) toggles between +16 and +48 mmHg.
    """
    step = np.floor(t * 16.0)
    block = np.floor(t / 3.0).astype(np.int64) % 3
    lows = np.array([-72.0, -24.0, -16.0])[block]
    highs = np.array([-24.0, 24.0, 16.0])[block]
    sq = np.where(step % 3 == 0, lows, highs)
    late = t >= min(9.0, 0.8 * (float(t[-1]) + (t[1] - t[0] if t.size > 1 else 0.0)))
    positive = np.where(step % 4 == 0, 16.0, 48.0)
    return np.asarray(np.where(late, positive, sq), dtype=np.float64)
