"""The protocol's rules, each written once: what each says, and that the loop runs it.

``streamproc.core.protocol.hold`` holds the decisions on one observation (compiled
into ``_kernels.advance_beats``, plain Python in the monitor);
``streamproc.core.protocol.rules`` the others (re-announcement, stale data,
advisories, eviction).
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from streamproc.core import _compile
from streamproc.core.protocol import hold, rules
from streamproc.core.protocol.alarms import Alarm, AlarmState, Priority, Trigger
from streamproc.core.protocol.escalation import AdvisoryKind
from streamproc.core.protocol.messages import BedId, Drug, Infusion, Profile, RateUnit
from streamproc.core.protocol.settings import Settings
from streamproc.core.signal import _kernels

BED = BedId("ward7", "bed03")
T0 = 1_700_000_000.0
SETTINGS = Settings()
MEDIUM, HIGH = Priority.MEDIUM.rank, Priority.HIGH.rank


def timers() -> np.ndarray:
    """A bed's hold timers, none holding."""
    t = np.empty(hold.T_ROWS * hold.HOLD_COLUMNS, np.float64)
    t.reshape(hold.T_ROWS, hold.HOLD_COLUMNS)[:] = (math.nan, math.nan, 0.0)
    return t


def held_for(row: int, seconds: float) -> np.ndarray:
    """Timers where ``row`` has held for ``seconds`` (one-second observations)."""
    t = timers()
    for k in range(1, int(seconds) + 1):
        hold.hold_observe(t, row, holds=True, ts=100.0 + k, dt=1.0, max_gap=5.0)
    return t


def move(
    t: np.ndarray,
    alarm: int,
    rank: float = 0.0,
    *,
    ack_value: float = math.nan,
    value: float = 60.0,
    suspended: bool = False,
    refractory: bool = False,
) -> tuple[int, float]:
    """``hold.hypotension_move`` with the default settings."""
    hs = SETTINGS.hypotension
    return hold.hypotension_move(
        t,
        alarm,
        rank,
        ack_value,
        value,
        suspended,
        refractory,
        hs.hold_s,
        hs.critical_hold_s,
        hs.clear_hold_s,
        SETTINGS.alarms.worsen_mmhg,
        MEDIUM,
        HIGH,
    )


def alarm(state: AlarmState, *, kind: str = "hypotension", at: float = 160.0) -> Alarm:
    a = Alarm(BED, kind, 100.0)
    a.apply(Trigger.RAISE, at, priority=Priority.MEDIUM)
    if state is AlarmState.ACKNOWLEDGED:
        a.apply(Trigger.ACK, at + 10.0, by="nurse", value=55.0)
    return a


class TestHold:
    """``hold``: the hold rule and the decisions on one observation."""

    def test_hold_counts_valid_time(self) -> None:
        """A condition that holds accumulates the valid time its observations stand for."""
        t = timers()
        for k in range(1, 6):
            hold.hold_observe(t, hold.T_BELOW, holds=True, ts=100.0 + k, dt=1.0, max_gap=5.0)
        assert t[hold.T_BELOW * hold.HOLD_COLUMNS + hold.HOLD_START] == 100.0
        assert hold.hold_held(t, hold.T_BELOW, 5.0)
        assert not hold.hold_held(t, hold.T_BELOW, 5.1)

    def test_false_observation_ends_the_run(self) -> None:
        """One observation where the condition does not hold resets the timer."""
        t = held_for(hold.T_BELOW, 10)
        hold.hold_observe(t, hold.T_BELOW, holds=False, ts=111.0, dt=1.0, max_gap=5.0)
        assert not hold.hold_held(t, hold.T_BELOW, 0.0)
        assert math.isnan(t[hold.T_BELOW * hold.HOLD_COLUMNS + hold.HOLD_START])

    def test_short_gap_neither_breaks_nor_counts(self) -> None:
        """A gap in valid data up to ``max_gap`` keeps the run; it does not count."""
        t = held_for(hold.T_BELOW, 5)  # up to 105
        hold.hold_observe(t, hold.T_BELOW, holds=True, ts=110.0, dt=1.0, max_gap=5.0)  # 4 s gap
        at = hold.T_BELOW * hold.HOLD_COLUMNS
        assert (t[at + hold.HOLD_START], t[at + hold.HOLD_ACCUM]) == (100.0, 6.0)

    def test_long_gap_restarts_the_run(self) -> None:
        """A gap longer than ``max_gap`` starts the run again after it."""
        t = held_for(hold.T_BELOW, 5)
        hold.hold_observe(t, hold.T_BELOW, holds=True, ts=120.0, dt=1.0, max_gap=5.0)  # 14 s gap
        at = hold.T_BELOW * hold.HOLD_COLUMNS
        assert (t[at + hold.HOLD_START], t[at + hold.HOLD_ACCUM]) == (119.0, 1.0)

    def test_suspended_sbp_judges_only_the_map(self) -> None:
        """While an SBP target's line is not fine, only the MAP's timer follows readings."""
        hs = SETTINGS.hypotension
        t = timers()
        hold.observe_pressure(
            t,
            70.0,
            40.0,
            90.0,
            metric_sbp=True,
            suspended=True,
            ts=101.0,
            dt=1.0,
            gap=5.0,
            critical_map=hs.critical_map,
            clear_margin=hs.clear_margin,
        )
        assert hold.hold_held(t, hold.T_CRITICAL, 1.0)
        assert not hold.hold_held(t, hold.T_BELOW, 0.0)
        assert not hold.hold_held(t, hold.T_SBP_AT_TARGET, 0.0)

    def test_raise_after_hold_or_at_once_when_critical(self) -> None:
        """No alarm: raised once below target for ``hold_s`` (medium), or MAP critical (high)."""
        hs = SETTINGS.hypotension
        assert move(held_for(hold.T_BELOW, hs.hold_s - 1), hold.ALARM_NONE)[0] == hold.MOVE_NONE
        assert move(held_for(hold.T_BELOW, hs.hold_s), hold.ALARM_NONE) == (
            hold.MOVE_RAISE,
            MEDIUM,
        )
        critical = held_for(hold.T_CRITICAL, hs.critical_hold_s)
        assert move(critical, hold.ALARM_NONE) == (hold.MOVE_RAISE, HIGH)

    def test_clear_escalate_worsen(self) -> None:
        """Recovered for ``clear_hold_s`` clears; a higher priority escalates an active
        alarm and worsens an acknowledged one; so does a value ``worsen_mmhg`` below the
        acknowledged one, unless the SBP is suspended."""
        hs = SETTINGS.hypotension
        assert move(held_for(hold.T_RECOVERED, hs.clear_hold_s), hold.ALARM_ACTIVE, MEDIUM) == (
            hold.MOVE_CLEAR,
            MEDIUM,
        )
        assert move(timers(), hold.ALARM_ACTIVE, MEDIUM, refractory=True)[0] == hold.MOVE_ESCALATE
        assert move(timers(), hold.ALARM_ACKED, MEDIUM, refractory=True)[0] == hold.MOVE_WORSEN
        worse = 60.0 - SETTINGS.alarms.worsen_mmhg
        assert move(timers(), hold.ALARM_ACKED, MEDIUM, ack_value=60.0, value=worse)[0] == (
            hold.MOVE_WORSEN
        )
        assert move(
            timers(), hold.ALARM_ACKED, MEDIUM, ack_value=60.0, value=worse, suspended=True
        )[0] == (hold.MOVE_NONE)
        assert move(timers(), hold.ALARM_ACTIVE, MEDIUM, ack_value=60.0, value=worse)[0] == (
            hold.MOVE_NONE
        )

    def test_trend_flag_signal(self) -> None:
        """A trend point every step (and when data time goes back); the at-target flag
        stays while suspended; signal invalid after ``signal_invalid_s`` without a beat."""
        assert hold.trend_due(100.0, math.nan, 30.0)
        assert not hold.trend_due(129.0, 100.0, 30.0)
        assert hold.trend_due(130.0, 100.0, 30.0)
        assert hold.trend_due(90.0, 100.0, 30.0)
        assert hold.at_target_flag(70.0, 65.0, suspended=False, previous=False)
        assert not hold.at_target_flag(70.0, 65.0, suspended=True, previous=False)
        assert hold.signal_invalid_due(130.0, 100.0, 30.0)
        assert not hold.signal_invalid_due(129.9, 100.0, 30.0)

    def test_the_loop_runs_these_rules(self) -> None:
        """The compiled loop calls the rules (no copy of them in ``_kernels``), and its
        compiled module declares them in what it is built from (``BUILT_FROM``)."""
        assert not hasattr(_kernels, "observe_timer")
        assert not hasattr(_kernels, "timer_held")
        compiled = getattr(_kernels.advance_beats, "py_func", _kernels.advance_beats).__globals__
        assert compiled["hold_observe"] is hold.hold_observe
        assert compiled["hypotension_move"] is hold.hypotension_move
        assert _compile.built_from(_kernels.__name__) == _kernels.BUILT_FROM


class TestRules:
    """``rules``: updates, re-announcement, stale data, line alarms, advisories, eviction."""

    def test_reannounce_and_escalate(self) -> None:
        """An active alarm is re-announced every ``reannounce_s``; hypotension goes high at
        its ``escalate_after_reannounces``-th; other kinds keep their priority."""
        als = SETTINGS.alarms
        a = alarm(AlarmState.ACTIVE)
        assert rules.announcement_due(a, 160.0 + als.reannounce_s - 0.1, als) is None
        due = rules.announcement_due(a, 160.0 + als.reannounce_s, als)
        assert due == (Trigger.REANNOUNCE, None)
        a.announce_count = als.escalate_after_reannounces - 1
        assert rules.announcement_due(a, 1e6, als) == (Trigger.REANNOUNCE, Priority.HIGH)
        other = alarm(AlarmState.ACTIVE, kind="data_stale")
        other.announce_count = 5
        assert rules.announcement_due(other, 1e6, als) == (Trigger.REANNOUNCE, None)

    def test_ack_silence_ends(self) -> None:
        """An acknowledged alarm is active again ``ack_silence_s`` after the acknowledgement;
        the wake time is the earliest of the timers."""
        als = SETTINGS.alarms
        a = alarm(AlarmState.ACKNOWLEDGED)
        assert rules.announcement_due(a, 170.0 + als.ack_silence_s - 0.1, als) is None
        assert rules.announcement_due(a, 170.0 + als.ack_silence_s, als) == (
            Trigger.ACK_EXPIRED,
            None,
        )
        b = alarm(AlarmState.ACTIVE, at=200.0)
        assert rules.announcement_wake([a, b], als) == min(
            170.0 + als.ack_silence_s, 200.0 + als.reannounce_s
        )
        assert rules.announcement_wake([], als) == math.inf

    def test_stale(self) -> None:
        """No data for ``stale_s`` is stale; a cuff-only bed stands ``nibp_stands_s``."""
        stale_s, nibp_s = SETTINGS.monitor.stale_s, SETTINGS.hypotension.nibp_stands_s
        assert not rules.stale_due(
            1e6, None, nibp_only=False, stale_s=stale_s, nibp_stands_s=nibp_s
        )
        assert rules.stale_due(
            100.0 + stale_s, 100.0, nibp_only=False, stale_s=stale_s, nibp_stands_s=nibp_s
        )
        assert not rules.stale_due(
            100.0 + stale_s, 100.0, nibp_only=True, stale_s=stale_s, nibp_stands_s=nibp_s
        )
        assert rules.stale_due(
            100.0 + nibp_s, 100.0, nibp_only=True, stale_s=stale_s, nibp_stands_s=nibp_s
        )

    def test_advisories(self) -> None:
        """Dopamine running is advised against; vasopressin without norepinephrine too."""
        infusions = {
            Drug.DOPAMINE: Infusion(T0, Drug.DOPAMINE, 5.0, RateUnit.MCG_KG_MIN),
            Drug.VASOPRESSIN: Infusion(T0, Drug.VASOPRESSIN, 0.03, RateUnit.U_MIN),
        }
        holds = rules.advisories(
            SETTINGS,
            T0 + 1.0,
            infusions,
            70.0,
            Profile.STANDARD,
            sbp_at_target_held=False,
            labs={},
            prev_labs={},
            ne_doses=[],
            at_target=True,
            hypotension_open=False,
        )
        assert set(holds) == {AdvisoryKind.DOPAMINE, AdvisoryKind.VASOPRESSIN_WITHOUT_NE}

    def test_hypotension_move_triggers(self) -> None:
        """Each move is the table's trigger; a rank gives its priority."""
        assert rules.MOVE_TRIGGERS[hold.MOVE_RAISE] is Trigger.RAISE
        assert rules.MOVE_TRIGGERS[hold.MOVE_WORSEN] is Trigger.WORSEN
        assert rules.priority_of_rank(HIGH) is Priority.HIGH
        assert rules.alarm_code(None) == hold.ALARM_NONE
        assert rules.alarm_code(alarm(AlarmState.ACKNOWLEDGED)) == hold.ALARM_ACKED

    def test_hypotension_update(self) -> None:
        """An open hypotension alarm is republished when its advice changes (step, target,
        profile, recommendation) or its SBP's suspension does; not for a new value."""
        shown = {"step": "add_vasopressin", "target": 65.0, "profile": "standard"}
        shown["recommendation"] = "Add vasopressin."
        assert not rules.advice_changed(shown, {**shown, "value": 50.0})
        assert rules.advice_changed(shown, {**shown, "target": 80.0})
        assert not rules.suspension_changed(shown, None)
        assert rules.suspension_changed(shown, "line damped")
        assert rules.suspension_changed({**shown, "sbp_suspended": "line damped"}, None)

    def test_line_alarms(self) -> None:
        """A line that is not fine keeps its technical alarm open (no pulse: high); on an SBP
        target it suspends the SBP's decisions and says so; a fine line raises nothing."""
        assert rules.line_alarm(hold.LINE_OK, "sbp") is None
        assert rules.line_alarm_kind(hold.LINE_OK) is None
        no_pulse = rules.line_alarm(hold.LINE_NO_PULSE, "map")
        assert no_pulse is not None
        kind, priority, reason, extra = no_pulse
        assert (kind, priority, extra) == ("abp_no_pulse", Priority.HIGH, {})
        assert rules.SUSPENDED_TEXT not in reason
        damped = rules.line_alarm(hold.LINE_DAMPED, "sbp")
        assert damped is not None
        assert damped[2].endswith(rules.SUSPENDED_TEXT)
        assert damped[3] == {"sbp_suspended": rules.sbp_suspended(hold.LINE_DAMPED, "sbp")}
        assert rules.sbp_suspended(hold.LINE_DAMPED, "map") is None
        assert set(rules.LINE_KINDS) == {v[0] for v in rules.LINE_ALARMS.values()}

    @pytest.mark.parametrize("state", [AlarmState.ACTIVE, AlarmState.ACKNOWLEDGED])
    def test_eviction_closes_open_alarms(self, state: AlarmState) -> None:
        """An eviction clears every open alarm, never before the bed's last observation
        (its processor's time) nor the alarm's last announcement (its data time)."""
        a = alarm(state)
        assert rules.eviction_closes(a)
        assert rules.eviction_ts(a, 150.0, None) == (150.0, 160.0)
        assert rules.eviction_ts(a, 150.0, 170.0) == (170.0, 170.0)
        a.apply(Trigger.CLEAR, 300.0)
        assert not rules.eviction_closes(a)
