"""The alarm state machine: one transition table, illegal moves raise.

After ``h11._state``: every legal move of an alarm is a row of
:data:`TRANSITIONS`; anything else raises :class:`IllegalTransitionError`
naming the state and the trigger and listing what the state allows. An
:class:`Alarm` is one episode of one alarm kind on one bed, with an id that
stays the same from its rising to its clearing. Every transition yields an
:class:`AlarmEvent`: the snapshot the service publishes (retained) and the
audit trail keeps.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from types import MappingProxyType
from typing import Any, Final

from streamproc.core.protocol.messages import BedId

__all__ = [
    "HYPOTENSION",
    "LINE_DAMPED",
    "LINE_RINGING",
    "NO_PULSE",
    "SIGNAL_INVALID",
    "STALE",
    "TRANSITIONS",
    "Alarm",
    "AlarmEvent",
    "AlarmState",
    "IllegalTransitionError",
    "Priority",
    "Trigger",
    "make_alarm_id",
]


#: The alarm kinds the monitor raises, besides the advisories (``escalation.AdvisoryKind``).
HYPOTENSION: Final = "hypotension"
SIGNAL_INVALID: Final = "abp_signal_invalid"
STALE: Final = "data_stale"
LINE_DAMPED: Final = "abp_line_damped"
LINE_RINGING: Final = "abp_line_ringing"
NO_PULSE: Final = "abp_no_pulse"


class AlarmState(StrEnum):
    """Where an alarm is in its life (wire values)."""

    ACTIVE = "active"
    ACKNOWLEDGED = "acknowledged"
    CLEARED = "cleared"


class Priority(StrEnum):
    """IEC 60601-1-8 priorities (wire values)."""

    LOW = "low"
    MEDIUM = "medium"
    HIGH = "high"

    @property
    def rank(self) -> int:
        return _RANK[self]


_RANK: Final = {Priority.LOW: 0, Priority.MEDIUM: 1, Priority.HIGH: 2}


class Trigger(StrEnum):
    """What moves an alarm; published as the event's ``trigger``."""

    RAISE = "raised"
    ACK = "acknowledged"
    REANNOUNCE = "reannounced"
    ESCALATE = "escalated"
    WORSEN = "worsened"
    ACK_EXPIRED = "ack_expired"
    UPDATE = "updated"
    CLEAR = "cleared"


#: The whole life of an alarm. ``None`` is "no alarm yet".
TRANSITIONS: Final[Mapping[tuple[AlarmState | None, Trigger], AlarmState]] = MappingProxyType(
    {
        (None, Trigger.RAISE): AlarmState.ACTIVE,
        (AlarmState.ACTIVE, Trigger.ACK): AlarmState.ACKNOWLEDGED,
        (AlarmState.ACTIVE, Trigger.REANNOUNCE): AlarmState.ACTIVE,
        (AlarmState.ACTIVE, Trigger.ESCALATE): AlarmState.ACTIVE,
        (AlarmState.ACTIVE, Trigger.UPDATE): AlarmState.ACTIVE,
        (AlarmState.ACTIVE, Trigger.CLEAR): AlarmState.CLEARED,
        (AlarmState.ACKNOWLEDGED, Trigger.WORSEN): AlarmState.ACTIVE,
        (AlarmState.ACKNOWLEDGED, Trigger.ACK_EXPIRED): AlarmState.ACTIVE,
        (AlarmState.ACKNOWLEDGED, Trigger.UPDATE): AlarmState.ACKNOWLEDGED,
        (AlarmState.ACKNOWLEDGED, Trigger.CLEAR): AlarmState.CLEARED,
    }
)

#: Audience widens with each unacknowledged re-announcement.
AUDIENCES: Final = ("bedside", "charge_nurse", "physician")


class IllegalTransitionError(RuntimeError):
    """The core tried a move the table does not allow: a bug in streamproc.

    Attributes:
        state: the alarm's state (None before it was raised).
        trigger: the move that was tried.
        allowed: the triggers the state allows.
    """

    def __init__(self, kind: str, state: AlarmState | None, trigger: Trigger) -> None:
        self.kind = kind
        self.state = state
        self.trigger = trigger
        self.allowed = tuple(t.value for (s, t) in TRANSITIONS if s == state)
        name = state.value if state is not None else "(not raised)"
        super().__init__(
            f"{kind} alarm: cannot apply {trigger.value!r} in state {name!r}; "
            f"allowed: {', '.join(self.allowed) or 'nothing (terminal state)'}"
        )


def make_alarm_id(bed: BedId, kind: str, onset_ts: float) -> str:
    """A deterministic id, unique per bed, kind and episode onset (ms)."""
    return f"{bed.unit}.{bed.bed}.{kind}.{round(onset_ts * 1000)}"


@dataclass(frozen=True, slots=True)
class AlarmEvent:
    """One published alarm state: what subscribers read and the audit keeps."""

    bed: BedId
    kind: str
    alarm_id: str
    state: AlarmState
    priority: Priority
    ts: float
    onset_ts: float
    trigger: Trigger
    announce_count: int
    audience: str
    acknowledged_by: str | None
    details: Mapping[str, Any] = field(default_factory=dict)
    #: The processor's time of the acknowledgement that silences the alarm (set while it
    #: is ``acknowledged``): its silence ends ``ack_silence_s`` after, restart or not.
    acknowledged_at: float | None = None
    #: The processor's time of the alarm's last announcement (raised, re-announced,
    #: worsened, ack expired) while open: the next re-announcement is due from it.
    announced_at: float | None = None

    def payload(self) -> dict[str, Any]:
        """The wire payload: the contract's required fields first, then the rest."""
        out: dict[str, Any] = {
            "alarm_id": self.alarm_id,
            "kind": self.kind,
            "state": self.state.value,
            "priority": self.priority.value,
            "ts": round(self.ts, 3),
            "onset_ts": round(self.onset_ts, 3),
            "unit": self.bed.unit,
            "bed": self.bed.bed,
        }
        out.update(self.details)
        out["trigger"] = self.trigger.value
        out["announce_count"] = self.announce_count
        out["audience"] = self.audience
        if self.acknowledged_by is not None:
            out["acknowledged_by"] = self.acknowledged_by
        if self.acknowledged_at is not None:
            out["acknowledged_at"] = round(self.acknowledged_at, 3)
        if self.announced_at is not None:
            out["announced_at"] = round(self.announced_at, 3)
        return out


class Alarm:
    """One episode of one alarm kind on one bed."""

    __slots__ = (
        "ack_ts",
        "ack_value",
        "acknowledged_by",
        "alarm_id",
        "announce_count",
        "bed",
        "details",
        "kind",
        "last_announce",
        "onset_ts",
        "priority",
        "state",
    )

    def __init__(self, bed: BedId, kind: str, onset_ts: float, alarm_id: str | None = None) -> None:
        self.bed = bed
        self.kind = kind
        self.onset_ts = onset_ts
        self.alarm_id = alarm_id or make_alarm_id(bed, kind, onset_ts)
        self.state: AlarmState | None = None
        self.priority = Priority.LOW
        self.announce_count = 0
        self.last_announce = onset_ts
        self.ack_ts: float | None = None
        self.ack_value: float | None = None
        self.acknowledged_by: str | None = None
        self.details: dict[str, Any] = {}

    @property
    def open(self) -> bool:
        """Raised and not cleared."""
        return self.state in (AlarmState.ACTIVE, AlarmState.ACKNOWLEDGED)

    def allows(self, trigger: Trigger) -> bool:
        return (self.state, trigger) in TRANSITIONS

    @property
    def audience(self) -> str:
        return AUDIENCES[min(self.announce_count, len(AUDIENCES) - 1)]

    def apply(
        self,
        trigger: Trigger,
        ts: float,
        *,
        priority: Priority | None = None,
        details: Mapping[str, Any] | None = None,
        by: str | None = None,
        value: float | None = None,
        at: float | None = None,
    ) -> AlarmEvent:
        """Move by ``trigger`` at data time ``ts``; return the event to publish.

        ``at`` is the processor's time of the move (default ``ts``): the
        re-announcement and acknowledgement timers run on it, so that a
        gateway's clock offset cannot make them fire early or never.
        """
        at = ts if at is None else at
        try:
            new_state = TRANSITIONS[(self.state, trigger)]
        except KeyError:
            raise IllegalTransitionError(self.kind, self.state, trigger) from None
        self.state = new_state
        if priority is not None:
            self.priority = priority
        if details:
            self.details.update(details)
        if trigger is Trigger.ACK:
            self.ack_ts = at
            self.ack_value = value
            self.acknowledged_by = by
        elif trigger in (Trigger.WORSEN, Trigger.ACK_EXPIRED):
            self.ack_ts = None
            self.ack_value = None
            self.last_announce = at
        elif trigger is Trigger.REANNOUNCE:
            self.announce_count += 1
            self.last_announce = at
        elif trigger is Trigger.RAISE:
            self.last_announce = at
        return AlarmEvent(
            bed=self.bed,
            kind=self.kind,
            alarm_id=self.alarm_id,
            state=new_state,
            priority=self.priority,
            ts=ts,
            onset_ts=self.onset_ts,
            trigger=trigger,
            announce_count=self.announce_count,
            audience=self.audience,
            acknowledged_by=self.acknowledged_by,
            details=MappingProxyType(dict(self.details)),
            acknowledged_at=self.ack_ts if new_state is AlarmState.ACKNOWLEDGED else None,
            announced_at=None if new_state is AlarmState.CLEARED else self.last_announce,
        )

    @classmethod
    def restore(cls, event: AlarmEvent, at: float | None = None) -> Alarm:
        """Rebuild an open alarm from its last published state (after a restart).

        ``at`` is the processor's time now. The timers go on from where the last run
        left them, on the processor's clock: an acknowledgement's silence ends
        ``ack_silence_s`` after ``event.acknowledged_at`` and the next re-announcement
        is due ``reannounce_s`` after ``event.announced_at``, so a restart neither
        lengthens a silence nor delays a re-announcement. A time later than ``at``
        (the clock went back, or the last run's host was ahead) counts as ``at``: the
        timers then run from the restart, never longer than that. A state published
        before those fields existed falls back to: the acknowledgement's own ``ts``
        when the state is the acknowledgement itself, else ``at``.
        """
        at = event.ts if at is None else at
        alarm = cls(event.bed, event.kind, event.onset_ts, alarm_id=event.alarm_id)
        alarm.state = event.state
        alarm.priority = event.priority
        alarm.announce_count = event.announce_count
        announced = event.announced_at
        alarm.last_announce = at if announced is None else min(announced, at)
        alarm.acknowledged_by = event.acknowledged_by
        if event.state is AlarmState.ACKNOWLEDGED:
            acked = event.acknowledged_at
            if acked is None and event.trigger is Trigger.ACK:
                acked = event.ts
            alarm.ack_ts = at if acked is None else min(acked, at)
        alarm.details = dict(event.details)
        return alarm
