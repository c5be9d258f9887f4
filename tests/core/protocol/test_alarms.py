"""The alarm state machine: the table is the whole truth."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from streamproc.core.protocol.alarms import (
    TRANSITIONS,
    Alarm,
    AlarmState,
    IllegalTransitionError,
    Priority,
    Trigger,
    make_alarm_id,
)
from streamproc.core.protocol.messages import BedId

BED = BedId("ward7", "bed03")


def raised(priority: Priority = Priority.MEDIUM) -> Alarm:
    alarm = Alarm(BED, "hypotension", 100.0)
    alarm.apply(Trigger.RAISE, 160.0, priority=priority)
    return alarm


class TestTransitions:
    def test_raise_ack_clear(self) -> None:
        """The usual life: raised active, acknowledged, cleared; the id never changes."""
        alarm = Alarm(BED, "hypotension", 100.0)
        ev1 = alarm.apply(Trigger.RAISE, 160.0, priority=Priority.HIGH)
        ev2 = alarm.apply(Trigger.ACK, 170.0, by="station-3", value=47.0)
        ev3 = alarm.apply(Trigger.CLEAR, 400.0)
        assert [e.state for e in (ev1, ev2, ev3)] == [
            AlarmState.ACTIVE,
            AlarmState.ACKNOWLEDGED,
            AlarmState.CLEARED,
        ]
        assert {e.alarm_id for e in (ev1, ev2, ev3)} == {alarm.alarm_id}
        assert ev2.acknowledged_by == "station-3"
        assert ev3.priority is Priority.HIGH

    def test_cleared_is_terminal(self) -> None:
        """Nothing moves a cleared alarm; the error names the state and what is allowed."""
        alarm = raised()
        alarm.apply(Trigger.CLEAR, 200.0)
        with pytest.raises(IllegalTransitionError) as info:
            alarm.apply(Trigger.ACK, 210.0)
        assert info.value.state is AlarmState.CLEARED
        assert info.value.allowed == ()
        assert "'cleared'" in str(info.value)

    def test_ack_of_unraised_alarm_is_illegal(self) -> None:
        """An alarm must be raised before anything else; the message lists 'raised'."""
        with pytest.raises(IllegalTransitionError, match="allowed: raised"):
            Alarm(BED, "hypotension", 1.0).apply(Trigger.ACK, 2.0)

    def test_worsen_breaks_through_ack(self) -> None:
        """An acknowledged alarm that worsens is active again, with the new priority."""
        alarm = raised()
        alarm.apply(Trigger.ACK, 170.0, value=55.0)
        ev = alarm.apply(Trigger.WORSEN, 180.0, priority=Priority.HIGH)
        assert ev.state is AlarmState.ACTIVE
        assert ev.priority is Priority.HIGH
        assert alarm.ack_value is None

    def test_worsen_needs_ack(self) -> None:
        """An active alarm escalates; it cannot 'worsen through' an ack it does not have."""
        with pytest.raises(IllegalTransitionError):
            raised().apply(Trigger.WORSEN, 180.0)

    def test_reannounce_widens_audience(self) -> None:
        """Each unacknowledged re-announcement counts and reaches a wider audience."""
        alarm = raised()
        assert alarm.audience == "bedside"
        ev = alarm.apply(Trigger.REANNOUNCE, 280.0)
        assert ev.announce_count == 1
        assert ev.audience == "charge_nurse"
        alarm.apply(Trigger.REANNOUNCE, 400.0)
        assert alarm.apply(Trigger.REANNOUNCE, 520.0).audience == "physician"

    def test_payload_has_contract_fields_first(self) -> None:
        """The wire payload starts with the contract's required fields, in order."""
        ev = raised().apply(Trigger.UPDATE, 170.0, details={"metric": "map", "value": 47.0})
        keys = list(ev.payload())
        assert keys[:8] == [
            "alarm_id",
            "kind",
            "state",
            "priority",
            "ts",
            "onset_ts",
            "unit",
            "bed",
        ]
        assert ev.payload()["value"] == 47.0

    def test_restore_keeps_id_and_state(self) -> None:
        """An alarm rebuilt from its last event carries on with the same id and state."""
        alarm = raised(Priority.HIGH)
        ev = alarm.apply(Trigger.ACK, 170.0, by="s1")
        back = Alarm.restore(ev)
        assert (back.alarm_id, back.state, back.priority) == (
            alarm.alarm_id,
            AlarmState.ACKNOWLEDGED,
            Priority.HIGH,
        )
        assert back.apply(Trigger.CLEAR, 300.0).alarm_id == alarm.alarm_id

    def test_alarm_id_is_deterministic(self) -> None:
        """Same bed, kind and onset: same id (replays are byte-identical)."""
        assert make_alarm_id(BED, "hypotension", 1.2345) == "ward7.bed03.hypotension.1234"
        assert (
            make_alarm_id(BED, "hypotension", 1.2345) == Alarm(BED, "hypotension", 1.2345).alarm_id
        )


class TestStateMachineProperty:
    @given(st.lists(st.sampled_from(list(Trigger)), max_size=30))
    def test_never_illegal_state(self, triggers: list[Trigger]) -> None:
        """Any sequence of triggers either follows the table or raises; state stays legal."""
        alarm = Alarm(BED, "hypotension", 0.0)
        for i, trig in enumerate(triggers):
            before = alarm.state
            if (before, trig) in TRANSITIONS:
                ev = alarm.apply(trig, float(i))
                assert ev.state is TRANSITIONS[(before, trig)]
            else:
                with pytest.raises(IllegalTransitionError):
                    alarm.apply(trig, float(i))
                assert alarm.state is before
            assert alarm.state is None or alarm.state in AlarmState
