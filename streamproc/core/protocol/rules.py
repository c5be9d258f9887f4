"""When a trigger fires: every decision of the alarm protocol, each written once.

The alarm table (:mod:`streamproc.core.protocol.alarms`) says which moves are legal;
this module and :mod:`streamproc.core.protocol.hold` say when each one is due. A
newcomer who must change a clinical rule changes it there and nowhere else:

* on an observation of the pressure (in :mod:`~streamproc.core.protocol.hold`, compiled
  into the per-beat loop and called as plain Python by the monitor, so that the loop
  that skips idle beats cannot disagree with the decisions it hands beats to): the hold
  rule (``hold.hold_observe``, ``hold.hold_held``) and the conditions the hold timers
  follow (``hold.observe_pressure``, ``hold.suspend_sbp_runs``); the hypotension
  alarm's raise, clear, escalate, worsen (``hold.hypotension_move``; its trigger:
  :data:`MOVE_TRIGGERS`, its priority: :func:`priority_of_rank`), and here its update
  (:func:`advice_changed`, :func:`suspension_changed`); a trend point
  (``hold.trend_due``), the advisories' flags (``hold.sbp_at_target_held``,
  ``hold.at_target_flag``), the signal-invalid alarm (``hold.signal_invalid_due``,
  ``hold.signal_valid_again``);
* here, on the processor's clock: re-announcement and the end of an acknowledgement's
  silence (:func:`announcement_due`, :func:`announcement_wake`), stale data
  (:func:`stale_due`);
* here: the line's technical alarms (:data:`LINE_ALARMS`, :func:`line_alarm`) and what
  they suspend (:func:`sbp_suspended`);
* here: which advisories hold (:func:`advisories`);
* here: what a bed's eviction closes (:func:`eviction_closes`, :func:`eviction_ts`).

(``hold`` is a module of its own because the compiled loop imports it: it imports
nothing of the protocol's types, which this module needs.)

Pure: facts in, decisions out; the monitor (``streamproc.core.monitor``) gathers the
facts and applies the transitions, the engine applies an eviction's.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Final

from streamproc.core.protocol import hold
from streamproc.core.protocol.alarms import (
    HYPOTENSION,
    LINE_DAMPED,
    LINE_RINGING,
    NO_PULSE,
    Alarm,
    AlarmState,
    Priority,
    Trigger,
)
from streamproc.core.protocol.escalation import (
    ADVISORY_REASONS,
    AdvisoryKind,
    dose_unknown_reason,
    running,
    vasopressin_u_min,
)
from streamproc.core.protocol.messages import Drug, Infusion, Profile

if TYPE_CHECKING:
    from streamproc.core.protocol.settings import AlarmSettings, Settings

__all__ = [
    "ADVICE_KEYS",
    "LINE_ALARMS",
    "LINE_KINDS",
    "MOVE_TRIGGERS",
    "SUSPENDED_TEXT",
    "advice_changed",
    "advisories",
    "alarm_code",
    "announcement_due",
    "announcement_wake",
    "eviction_closes",
    "eviction_ts",
    "line_alarm",
    "line_alarm_kind",
    "priority_of_rank",
    "sbp_suspended",
    "stale_due",
    "suspension_changed",
]

# ---------------------------------------------------------------------------
# The hypotension alarm on an observation (the rules themselves: ``hold``)

#: What the hypotension alarm's advice is: a change of one republishes it (``updated``).
ADVICE_KEYS: Final = ("step", "target", "profile", "recommendation")


def advice_changed(shown: Mapping[str, Any], now: Mapping[str, Any]) -> bool:
    """Whether an open hypotension alarm whose details are ``shown`` is updated to the
    details ``now`` (a step of the ladder, the target, the profile, the recommendation:
    a dose crossing the high-dose threshold, say)."""
    return any(shown.get(k) != now[k] for k in ADVICE_KEYS)


def suspension_changed(shown: Mapping[str, Any], suspended: str | None) -> bool:
    """Whether an open hypotension alarm whose details are ``shown`` is updated because
    its SBP's suspension (``sbp_suspended``: why, or None) changed."""
    return shown.get("sbp_suspended") != suspended


#: The trigger of each move ``hold.hypotension_move`` finds due.
MOVE_TRIGGERS: Final[Mapping[int, Trigger]] = {
    hold.MOVE_RAISE: Trigger.RAISE,
    hold.MOVE_CLEAR: Trigger.CLEAR,
    hold.MOVE_ESCALATE: Trigger.ESCALATE,
    hold.MOVE_WORSEN: Trigger.WORSEN,
}


def alarm_code(alarm: Alarm | None) -> int:
    """``alarm``'s state as ``hold.hypotension_move`` takes it (``hold.ALARM_*``)."""
    if alarm is None:
        return hold.ALARM_NONE
    if alarm.state is AlarmState.ACTIVE:
        return hold.ALARM_ACTIVE
    if alarm.state is AlarmState.ACKNOWLEDGED:
        return hold.ALARM_ACKED
    return hold.ALARM_OTHER


def priority_of_rank(rank: float) -> Priority:
    """The priority of a rank ``hold.hypotension_move`` wants."""
    return Priority.HIGH if rank == Priority.HIGH.rank else Priority.MEDIUM


# ---------------------------------------------------------------------------
# The line's technical alarms (the line's state: ``_kernels.judge_line``)

#: ``hold.LINE_*`` -> the technical alarm that says so, its priority and its words.
LINE_ALARMS: Final[Mapping[int, tuple[str, Priority, str, str]]] = {
    hold.LINE_DAMPED: (
        LINE_DAMPED,
        Priority.MEDIUM,
        "line damped",
        (
            "Arterial line over-damped or clotting (slow upstroke, no dicrotic notch, narrow "
            "pulse pressure at a steady mean): flush and check the line (clot, kink, air, loose "
            "connection, closed stopcock), re-zero the transducer. The mean pressure is still "
            "usable; the systolic reads low and the diastolic high."
        ),
    ),
    hold.LINE_RINGING: (
        LINE_RINGING,
        Priority.LOW,
        "line ringing",
        (
            "Arterial line under-damped (the pulse rings): the systolic reads high and the "
            "diastolic low. Check the line for air bubbles and excess tubing, check it with a "
            "fast-flush test, re-zero. The mean pressure is still usable."
        ),
    ),
    hold.LINE_NO_PULSE: (
        NO_PULSE,
        Priority.HIGH,
        "no pulse on the trace",
        (
            "No arterial pulse on the trace: check the patient's pulse now. If the patient "
            "has a pulse, the line is disconnected, clotted or kinked, or the stopcock is "
            "turned: flush and check the line, re-zero. No MAP is taken from this trace."
        ),
    ),
}


#: On a line alarm of an SBP-target bed: what its state suspends.
SUSPENDED_TEXT: Final = (
    "SBP-based decisions suspended (the SBP target, the premature-norepinephrine advisory): "
    "the systolic of this line is not reliable; MAP-based ones go on."
)

#: The line's technical alarm kinds.
LINE_KINDS: Final = (LINE_DAMPED, LINE_RINGING, NO_PULSE)


def line_alarm_kind(line: int) -> str | None:
    """The technical alarm a line state (``hold.LINE_*``) keeps open, or None."""
    return None if line == hold.LINE_OK else LINE_ALARMS[line][0]


def sbp_suspended(line: int, metric: str) -> str | None:
    """Why the readings of an SBP target (``metric``) are not judged in line state
    ``line``, or None: while the line is not fine its systolic is not reliable."""
    if line == hold.LINE_OK or metric != "sbp":
        return None
    return LINE_ALARMS[line][2]


def line_alarm(line: int, metric: str) -> tuple[str, Priority, str, dict[str, Any]] | None:
    """The technical alarm raised in line state ``line`` (None when the line is fine):
    its kind, priority, reason and details; on an SBP target it says what it suspends."""
    if line == hold.LINE_OK:
        return None
    kind, priority, _, reason = LINE_ALARMS[line]
    extra: dict[str, Any] = {}
    suspended = sbp_suspended(line, metric)
    if suspended is not None:
        reason = f"{reason} {SUSPENDED_TEXT}"
        extra["sbp_suspended"] = suspended
    return kind, priority, reason, extra


# ---------------------------------------------------------------------------
# The timers on the processor's clock


def announcement_due(
    alarm: Alarm, now: float, als: AlarmSettings
) -> tuple[Trigger, Priority | None] | None:
    """The timer move due on ``alarm`` at ``now`` and the priority it sets, or None.

    An active alarm is re-announced every ``reannounce_s`` (its audience widens); the
    hypotension alarm goes high at its ``escalate_after_reannounces``-th. An
    acknowledged one is active again ``ack_silence_s`` after the acknowledgement.
    """
    if alarm.state is AlarmState.ACTIVE and now - alarm.last_announce >= als.reannounce_s:
        prio = None
        if (
            alarm.kind == HYPOTENSION
            and als.escalate_after_reannounces
            and alarm.announce_count + 1 >= als.escalate_after_reannounces
        ):
            prio = Priority.HIGH
        return Trigger.REANNOUNCE, prio
    if (
        alarm.state is AlarmState.ACKNOWLEDGED
        and alarm.ack_ts is not None
        and now - alarm.ack_ts >= als.ack_silence_s
    ):
        return Trigger.ACK_EXPIRED, None
    return None


def announcement_wake(alarms: Iterable[Alarm], als: AlarmSettings) -> float:
    """The earliest time :func:`announcement_due` may find a move on ``alarms`` (inf: never)."""
    wake = math.inf
    for a in alarms:
        if a.state is AlarmState.ACTIVE:
            wake = min(wake, a.last_announce + als.reannounce_s)
        elif a.state is AlarmState.ACKNOWLEDGED and a.ack_ts is not None:
            wake = min(wake, a.ack_ts + als.ack_silence_s)
    return wake


def stale_due(
    now: float, last_data: float | None, nibp_only: bool, stale_s: float, nibp_stands_s: float
) -> bool:
    """Whether data last arrived at ``last_data`` (None: never) is stale at ``now``.

    The limit is ``monitor.stale_s``, or ``hypotension.nibp_stands_s`` for a bed that
    has sent only non-invasive pressures (it stands on its last cuff reading longer).
    """
    return last_data is not None and now - last_data >= (nibp_stands_s if nibp_only else stale_s)


# ---------------------------------------------------------------------------
# The advisories


def advisories(  # noqa: PLR0917 - the facts the advisories read, as the monitor has them
    settings: Settings,
    ts: float,
    infusions: Mapping[Drug, Infusion],
    weight_kg: float | None,
    profile: Profile,
    sbp_at_target_held: bool,
    labs: Mapping[str, tuple[float, float]],
    prev_labs: Mapping[str, tuple[float, float]],
    ne_doses: Sequence[tuple[float, float, str]],
    *,
    at_target: bool,
    hypotension_open: bool,
) -> dict[AdvisoryKind, str]:
    """The advisories that hold at ``ts`` and their reasons (the others are cleared).

    ``sbp_at_target_held``: an SBP target reached for ``hold_s``; ``labs`` and
    ``prev_labs``: the last two results per lab (time, value); ``ne_doses``: the last
    two norepinephrine doses (time, dose, unit); ``at_target``: the metric at its
    target now.
    """
    ms = settings.monitor
    on = running(infusions)
    holds: dict[AdvisoryKind, str] = {}
    if Drug.DOPAMINE in on:
        holds[AdvisoryKind.DOPAMINE] = ADVISORY_REASONS[AdvisoryKind.DOPAMINE]
    if Drug.PHENYLEPHRINE in on:
        holds[AdvisoryKind.PHENYLEPHRINE] = ADVISORY_REASONS[AdvisoryKind.PHENYLEPHRINE]
    if Drug.VASOPRESSIN in on:
        u_min = vasopressin_u_min(infusions[Drug.VASOPRESSIN])
        if u_min is not None and u_min > ms.vasopressin_max_u_min:
            holds[AdvisoryKind.VASOPRESSIN_DOSE] = (
                f"{ADVISORY_REASONS[AdvisoryKind.VASOPRESSIN_DOSE]} Now {u_min:.3g} U/min."
            )
        if Drug.NOREPINEPHRINE not in on:
            holds[AdvisoryKind.VASOPRESSIN_WITHOUT_NE] = ADVISORY_REASONS[
                AdvisoryKind.VASOPRESSIN_WITHOUT_NE
            ]
    if profile is Profile.TRAUMA and Drug.NOREPINEPHRINE in on and sbp_at_target_held:
        holds[AdvisoryKind.PREMATURE_NE_TRAUMA] = ADVISORY_REASONS[AdvisoryKind.PREMATURE_NE_TRAUMA]
    fresh = {k: v for k, (t, v) in labs.items() if ts - t <= ms.labs_valid_s}
    abnormal = []
    if fresh.get("lactate", 0.0) > ms.lactate_high:
        abnormal.append(f"lactate {fresh['lactate']:g} mmol/L")
    if "urine_ml_kg_h" in fresh and fresh["urine_ml_kg_h"] < ms.urine_low_ml_kg_h:
        abnormal.append(f"urine {fresh['urine_ml_kg_h']:g} mL/kg/h")
    if "scvo2" in fresh and fresh["scvo2"] < ms.scvo2_low:
        abnormal.append(f"ScvO2 {fresh['scvo2']:g}%")
    if abnormal and at_target and not hypotension_open:
        holds[AdvisoryKind.PERFUSION] = (
            f"{ADVISORY_REASONS[AdvisoryKind.PERFUSION]} ({', '.join(abnormal)})"
        )
    if _vasoconstriction(ts, ms.labs_valid_s, on, labs, prev_labs, ne_doses):
        holds[AdvisoryKind.VASOCONSTRICTION] = ADVISORY_REASONS[AdvisoryKind.VASOCONSTRICTION]
    unknown = dose_unknown_reason(infusions, weight_kg)
    if unknown is not None:
        holds[AdvisoryKind.DOSE_UNKNOWN] = unknown
    return holds


def _vasoconstriction(  # noqa: PLR0917 - the facts, as ``advisories`` has them
    ts: float,
    window: float,
    on: frozenset[Drug] | set[Drug],
    labs: Mapping[str, tuple[float, float]],
    prev_labs: Mapping[str, tuple[float, float]],
    ne_doses: Sequence[tuple[float, float, str]],
) -> bool:
    """Norepinephrine raised (same unit) within ``window`` while urine fell and lactate
    rose between their last two results, all within ``window``."""
    if Drug.NOREPINEPHRINE not in on or len(ne_doses) < 2:
        return False
    (t0, d0, u0), (_, d1, u1) = ne_doses
    if u0 != u1 or d1 <= d0 or ts - t0 > window:
        return False
    for name, worse in (("urine_ml_kg_h", -1.0), ("lactate", 1.0)):
        if name not in labs or name not in prev_labs:
            return False
        (ta, a), (_, b) = prev_labs[name], labs[name]
        if ts - ta > window or (b - a) * worse <= 0:
            return False
    return True


# ---------------------------------------------------------------------------
# Eviction


def eviction_closes(alarm: Alarm) -> bool:
    """Whether the eviction of ``alarm``'s bed closes it: every open alarm (cleared, NOT
    resolved: nobody watches the bed any more)."""
    return alarm.open


def eviction_ts(alarm: Alarm, now: float, obs_ts: float | None) -> tuple[float, float]:
    """When an eviction at ``now`` clears ``alarm``: the processor's time of the move
    (never before the bed's last observation ``obs_ts``) and its data time (nor before
    the alarm's last announcement)."""
    if obs_ts is not None:
        now = max(now, obs_ts)
    return now, max(now, alarm.last_announce)
