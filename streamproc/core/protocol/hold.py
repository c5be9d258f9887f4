"""The protocol's decisions on one observation, compiled into the per-beat loop.

Part of the protocol's rules (:mod:`streamproc.core.protocol.rules` says when every
trigger fires and points here for these): the hold rule (:func:`hold_observe`,
:func:`hold_held`) and the conditions the hold timers follow
(:func:`observe_pressure`, :func:`suspend_sbp_runs`), the hypotension alarm's move on
an observation (:func:`hypotension_move`), a trend point (:func:`trend_due`), the
advisories' flags (:func:`sbp_at_target_held`, :func:`at_target_flag`), the
signal-invalid alarm (:func:`signal_invalid_due`, :func:`signal_valid_again`).

Each is written once and runs two ways (:func:`streamproc.core._compile.jitable`):
compiled into the per-beat loop (``_kernels.advance_beats``), which takes the beats on
which nothing is due, and as plain Python in the monitor (``streamproc.core.monitor``),
which decides on the others: the loop cannot disagree with the decisions it hands
beats to. So they take scalars and the hold timers' flat array (NaN for "none"), and
this module imports nothing of the protocol's types: the compiled loop imports it.
"""

from __future__ import annotations

import math
from typing import Final

import numpy as np

from streamproc.core._compile import jitable

__all__ = [
    "ALARM_ACKED",
    "ALARM_ACTIVE",
    "ALARM_NONE",
    "ALARM_OTHER",
    "HOLD_ACCUM",
    "HOLD_COLUMNS",
    "HOLD_LAST",
    "HOLD_START",
    "LINE_DAMPED",
    "LINE_NO_PULSE",
    "LINE_OK",
    "LINE_RINGING",
    "LINE_STATES",
    "MOVE_CLEAR",
    "MOVE_ESCALATE",
    "MOVE_NONE",
    "MOVE_RAISE",
    "MOVE_WORSEN",
    "T_BELOW",
    "T_CRITICAL",
    "T_RECOVERED",
    "T_ROWS",
    "T_SBP_AT_TARGET",
    "T_VALID_RUN",
    "at_target_flag",
    "hold_held",
    "hold_observe",
    "hypotension_move",
    "observe_pressure",
    "sbp_at_target_held",
    "signal_invalid_due",
    "signal_valid_again",
    "suspend_sbp_runs",
    "trend_due",
]

# ---------------------------------------------------------------------------
# The hold rule

#: A hold timer's slots: where its run started, its last observation, the valid time it
#: has accumulated (NaN start: not holding).
HOLD_START: Final = 0
HOLD_LAST: Final = 1
HOLD_ACCUM: Final = 2
HOLD_COLUMNS: Final = 3

#: The hold timers of a bed (rows of ``HOLD_COLUMNS`` slots each, one after the other).
T_VALID_RUN: Final = 0  # valid beats without a break (clears the signal-invalid alarm)
T_BELOW: Final = 1  # the metric below its target (raises hypotension)
T_CRITICAL: Final = 2  # the MAP below the critical MAP (raises sooner, high)
T_RECOVERED: Final = 3  # the metric at its target plus the clear margin (clears)
T_SBP_AT_TARGET: Final = 4  # an SBP target reached (premature-norepinephrine advisory)
T_ROWS: Final = 5

# The line's state as the signal judges it from its recent beats (``_kernels.judge_line``,
# ``state.M_LINE``): the codes the line's technical alarms are keyed by
# (``rules.LINE_ALARMS``).
LINE_OK: Final = 0
LINE_DAMPED: Final = 1  # over-damped or clotting: slow upstroke, narrow pulse
LINE_RINGING: Final = 2  # under-damped: the pulse rings (systolic over-read)
LINE_NO_PULSE: Final = 3  # no arterial pulse on the trace
LINE_STATES: Final = 4


@jitable
def hold_observe(  # noqa: PLR0917 - a timer and one observation, flat for the compiler
    timers: np.ndarray, row: int, holds: bool, ts: float, dt: float, max_gap: float
) -> None:
    """One observation of hold timer ``row``: whether its condition ``holds`` at data time
    ``ts``, standing for ``dt`` of valid time.

    A false observation ends the run; a gap in valid data longer than ``max_gap`` ends
    it too (the run starts again at ``ts - dt``), but shorter gaps (artifact) neither
    break it nor count towards it.
    """
    at = row * HOLD_COLUMNS
    if not holds:
        timers[at + HOLD_START] = math.nan
        timers[at + HOLD_LAST] = math.nan
        timers[at + HOLD_ACCUM] = 0.0
        return
    start = timers[at + HOLD_START]
    last = timers[at + HOLD_LAST]
    if math.isnan(start) or (not math.isnan(last) and ts - dt - last > max_gap):
        timers[at + HOLD_START] = ts - dt
        timers[at + HOLD_ACCUM] = 0.0
    timers[at + HOLD_ACCUM] += dt
    timers[at + HOLD_LAST] = ts


@jitable
def hold_held(timers: np.ndarray, row: int, duration: float) -> bool:
    """Whether hold timer ``row`` has held for ``duration`` of valid data time."""
    at = row * HOLD_COLUMNS
    return (not math.isnan(timers[at + HOLD_START])) and timers[at + HOLD_ACCUM] >= duration - 1e-9


@jitable
def observe_pressure(  # noqa: PLR0917 - an observation and its settings, flat for the compiler
    timers: np.ndarray,
    value: float,
    map_value: float,
    target: float,
    metric_sbp: bool,
    suspended: bool,
    ts: float,
    dt: float,
    gap: float,
    critical_map: float,
    clear_margin: float,
) -> None:
    """An observation of the target's metric (``value``) and the MAP (NaN: none) at data
    time ``ts``, standing for ``dt``: the below / critical / recovered / SBP-at-target
    timers.

    While the SBP of a line is ``suspended`` (the line is not fine, an SBP target) those
    readings neither start, extend nor end a run of the SBP's timers; the MAP's are judged.
    """
    hold_observe(timers, T_CRITICAL, map_value < critical_map, ts, dt, gap)
    if not suspended:
        hold_observe(timers, T_BELOW, value < target, ts, dt, gap)
        hold_observe(timers, T_RECOVERED, value >= target + clear_margin, ts, dt, gap)
    if not metric_sbp:
        hold_observe(timers, T_SBP_AT_TARGET, holds=False, ts=ts, dt=dt, max_gap=gap)
    elif not suspended:
        hold_observe(timers, T_SBP_AT_TARGET, value >= target, ts, dt, gap)


@jitable
def suspend_sbp_runs(timers: np.ndarray, ts: float, dt: float, gap: float) -> None:
    """The line stopped being fine under an SBP target: the runs its SBP had begun end."""
    hold_observe(timers, T_BELOW, holds=False, ts=ts, dt=dt, max_gap=gap)
    hold_observe(timers, T_RECOVERED, holds=False, ts=ts, dt=dt, max_gap=gap)
    hold_observe(timers, T_SBP_AT_TARGET, holds=False, ts=ts, dt=dt, max_gap=gap)


# ---------------------------------------------------------------------------
# The hypotension alarm on an observation

#: The hypotension alarm's state as :func:`hypotension_move` takes it (``rules.alarm_code``).
ALARM_NONE: Final = 0
ALARM_ACTIVE: Final = 1
ALARM_ACKED: Final = 2
ALARM_OTHER: Final = 3  # (a state these rules do not move: the caller decides)

#: What :func:`hypotension_move` finds due (``rules.MOVE_TRIGGERS``: the trigger of each).
MOVE_NONE: Final = 0
MOVE_RAISE: Final = 1
MOVE_CLEAR: Final = 2
MOVE_ESCALATE: Final = 3
MOVE_WORSEN: Final = 4


@jitable
def hypotension_move(  # noqa: PLR0917 - the alarm, the observation, the settings: flat
    timers: np.ndarray,
    alarm: int,
    rank: float,
    ack_value: float,
    value: float,
    suspended: bool,
    refractory: bool,
    hold_s: float,
    critical_hold_s: float,
    clear_hold_s: float,
    worsen_mmhg: float,
    rank_medium: float,
    rank_high: float,
) -> tuple[int, float]:
    """The hypotension alarm's move on an observation whose hold timers are counted, and
    the priority's rank it wants.

    ``alarm`` is its state (``ALARM_*``), ``rank`` its priority's, ``ack_value`` the value
    it was acknowledged at (NaN: none). It wants high priority when the MAP has been
    critical for ``critical_hold_s`` or the ladder is refractory, else medium (the
    priorities' ranks: ``rank_high``, ``rank_medium``). Raised
    when the metric has been below target for ``hold_s`` (or critical); cleared once it
    has recovered for ``clear_hold_s``; an active one escalates to a higher priority
    wanted; an acknowledged one worsens on a higher priority wanted or on a value
    ``worsen_mmhg`` below the acknowledged one (not while the SBP is ``suspended``).
    """
    critical = hold_held(timers, T_CRITICAL, critical_hold_s)
    want = rank_high if critical or refractory else rank_medium
    if alarm == ALARM_NONE:
        if critical or hold_held(timers, T_BELOW, hold_s):
            return MOVE_RAISE, want
        return MOVE_NONE, want
    if hold_held(timers, T_RECOVERED, clear_hold_s):
        return MOVE_CLEAR, want
    if alarm == ALARM_ACTIVE and want > rank:
        return MOVE_ESCALATE, want
    if alarm == ALARM_ACKED and (
        want > rank
        or (not suspended and not math.isnan(ack_value) and value <= ack_value - worsen_mmhg)
    ):
        return MOVE_WORSEN, want
    return MOVE_NONE, want


@jitable
def trend_due(ts: float, trend_ts: float, step_s: float) -> bool:
    """Whether an observation at ``ts`` adds a trend point (the last at ``trend_ts``, NaN:
    none): every ``step_s`` of data time, and at once when data time went back."""
    return bool(math.isnan(trend_ts) or ts < trend_ts or ts - trend_ts >= step_s)


@jitable
def at_target_flag(value: float, target: float, suspended: bool, previous: bool) -> bool:
    """The advisories' at-target flag after an observation of ``value``: unchanged
    (``previous``) while the SBP is ``suspended``."""
    return previous if suspended else value >= target


@jitable
def sbp_at_target_held(timers: np.ndarray, hold_s: float) -> bool:
    """The advisories' SBP flag: an SBP target reached for ``hold_s`` (the trauma
    patient's premature-norepinephrine advisory)."""
    return hold_held(timers, T_SBP_AT_TARGET, hold_s)


@jitable
def signal_valid_again(timers: np.ndarray, valid_clear_s: float) -> bool:
    """Whether the signal-invalid alarm clears: valid beats without a break (the
    ``T_VALID_RUN`` timer) for ``valid_clear_s``."""
    return hold_held(timers, T_VALID_RUN, valid_clear_s)


@jitable
def signal_invalid_due(ts: float, valid_ref: float, signal_invalid_s: float) -> bool:
    """Whether the signal-invalid alarm is due at data time ``ts``: no valid beat since
    ``valid_ref`` (the last one's end, or where the waveform started) for that long."""
    return ts - valid_ref >= signal_invalid_s
