"""What the dashboard knows: the latest alarm, summary and status read, and the broker link.

:class:`DashboardState` is filled by the MQTT bridge (:mod:`.app`) and read by the
event stream (:mod:`.events`) and the API (:mod:`.api`, :mod:`.ack`).
"""

from __future__ import annotations

import time
from typing import Any

from streamproc.core.protocol.alarms import AlarmState
from streamproc.core.protocol.escalation import DISCLAIMER
from streamproc.core.protocol.messages import BedId

__all__ = ["DashboardState", "NotConnectedError", "now"]

_OPEN: tuple[str, ...] = (AlarmState.ACTIVE.value, AlarmState.ACKNOWLEDGED.value)


def now() -> float:
    """Wall-clock seconds, to the millisecond: every ``ts`` the dashboard writes."""
    return round(time.time(), 3)


class NotConnectedError(RuntimeError):
    """The bridge has no broker connection right now."""


class DashboardState:
    """The latest of everything the bridge has read, and whether it is connected.

    Every entry is stored as the data of the event that announces it (see
    :meth:`alarm_entry` and friends), so that a snapshot is made of the same
    objects as the live events.
    """

    def __init__(self, root: str, station: str, broker: str) -> None:
        self.root = root
        self.station = station
        self.broker = broker
        #: alarm topic -> ``alarm`` event data
        self.alarms: dict[str, dict[str, Any]] = {}
        #: ``unit/bed`` -> ``summary`` event data
        self.summaries: dict[str, dict[str, Any]] = {}
        #: instance -> ``status`` event data
        self.statuses: dict[str, dict[str, Any]] = {}
        self.connected = False
        self.error: str | None = None
        self.changed_ts = now()
        self.ignored = 0

    def bridge(self) -> dict[str, Any]:
        """The ``bridge`` event data: is the dashboard connected to the broker."""
        return {
            "connected": self.connected,
            "broker": self.broker,
            "error": self.error,
            "since": self.changed_ts,
        }

    def clear(self) -> None:
        self.alarms.clear()
        self.summaries.clear()
        self.statuses.clear()

    def open_alarm(self, alarm_id: str, bed: BedId) -> dict[str, Any] | None:
        """The open (active or acknowledged) alarm with this id on this bed, if any."""
        for entry in self.alarms.values():
            payload = entry["alarm"]
            if (
                payload is not None
                and payload.get("alarm_id") == alarm_id
                and entry["unit"] == bed.unit
                and entry["bed"] == bed.bed
                and payload.get("state") in _OPEN
            ):
                return dict(payload)
        return None

    def snapshot(self) -> dict[str, Any]:
        """Everything at once: the ``snapshot`` event and ``GET /api/state``."""
        return {
            "version": 1,
            "ts": now(),
            "root": self.root,
            "station": self.station,
            "disclaimer": DISCLAIMER,
            "bridge": self.bridge(),
            "alarms": list(self.alarms.values()),
            "summaries": list(self.summaries.values()),
            "statuses": list(self.statuses.values()),
        }
