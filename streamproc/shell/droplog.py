"""Log lines for the messages the core dropped by its data-time rules, rate-limited.

The core counts every drop (``EngineStats.dropped``) and leaves a notice for
the first drop per bed and reason (``Engine.take_drop_notices``). Here each
notice becomes one warning line (``event=message_dropped``, with unit, bed,
kind, reason and the data times), at most ``burst`` such lines per
``every_s``; after that, and for every drop that was only counted, one line
per ``every_s`` (``event=messages_dropped``) gives the counts by reason since
the last such line. A flood of duplicates or of new bed ids therefore costs a
few lines a minute, never one per message.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Final

from streamproc.core.signal.ordering import DropNotice, DropReason

__all__ = ["DropLog"]

#: First-drop lines per period at most.
BURST: Final = 20
#: Period of the summary line (s).
EVERY_S: Final = 60.0

_HINTS: Final = {
    DropReason.DUPLICATE: "data this bed sent already (a QoS 1 re-delivery or a gateway "
    "re-sending after its restart): harmless, taken once",
    DropReason.LATE: "older than what this bed sent since, past the reorder window: check "
    "the gateway's clock and its queues (monitor.reorder_window_s)",
}


class DropLog:
    """Writes the drop lines to ``log`` (a structlog logger) as ``report`` is called."""

    def __init__(self, log: Any, *, burst: int = BURST, every_s: float = EVERY_S) -> None:
        self._log = log
        self._burst = burst
        self._every_s = every_s
        self._period_start: float | None = None
        self._lines = 0
        self._suppressed = 0
        self._seen: dict[str, int] = {}

    def report(self, notices: Sequence[DropNotice], totals: Mapping[str, int], now: float) -> None:
        """The notices since the last call, the core's totals by reason, the time ``now``."""
        if self._period_start is None:
            self._period_start = now
        elif now - self._period_start >= self._every_s:
            self._summary(totals, now)
        for n in notices:
            if self._lines >= self._burst:
                self._suppressed += 1
                continue
            self._lines += 1
            self._log.warning(
                "message_dropped",
                unit=n.bed.unit,
                bed=n.bed.bed,
                kind=n.kind,
                reason=n.reason.value,
                ts=round(n.ts, 3),
                newest=None if n.newest is None else round(n.newest, 3),
                note="first of its reason for this bed; the next ones are only counted "
                "(streamproc_messages_dropped_total)",
                hint=_HINTS[n.reason],
            )

    def _summary(self, totals: Mapping[str, int], now: float) -> None:
        seen = self._seen
        moved = {r: t - seen.get(r, 0) for r, t in totals.items() if t != seen.get(r, 0)}
        if moved:
            self._log.info(
                "messages_dropped",
                counts=dict(sorted(moved.items())),
                first_lines_suppressed=self._suppressed,
                period_s=self._every_s,
            )
        self._seen = dict(totals)
        self._period_start = now
        self._lines = 0
        self._suppressed = 0
