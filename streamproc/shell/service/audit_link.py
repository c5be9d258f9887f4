"""The service's side of the audit trail: opening it, retrying it when it fails,
writing the alarm transitions (and their log lines) just after they are published,
and crediting what it wrote as durable."""

from __future__ import annotations

import asyncio
from typing import Final

from streamproc.core.engine import BED_EVICTED
from streamproc.core.protocol.alarms import AlarmEvent
from streamproc.shell.audit import AuditError, AuditTrail
from streamproc.shell.config import StreamprocConfig
from streamproc.shell.logs import get_logger
from streamproc.shell.metrics import ServiceMetrics
from streamproc.shell.service.clock import Clock
from streamproc.shell.service.ledger import AckLedger

__all__ = ["AUDIT_RETRY_S", "AuditLink"]

log = get_logger("streamproc.shell.service")

#: A failed audit log is retried (reopened) this often (s); a healthy one's file checked.
AUDIT_RETRY_S: Final = 2.0
#: While the audit log stays failed, one error line per this many failed retries.
AUDIT_LOG_EVERY: Final = 30


class AuditLink:
    """The audit trail (None when ``service.audit_db`` is empty) as the service uses it."""

    def __init__(
        self,
        config: StreamprocConfig,
        clock: Clock,
        metrics: ServiceMetrics,
        ledger: AckLedger,
        *,
        max_beds: int,
    ) -> None:
        self.config = config
        self.clock = clock
        self.metrics = metrics
        self.ledger = ledger
        self.max_beds = max_beds
        self.audit: AuditTrail | None = None
        #: Why the audit log is failing (None: it is not).
        self.failed: str | None = None
        self._dropped = 0
        #: Transitions waiting for the audit trail (written just after publishing).
        self._unrecorded: list[AlarmEvent] = []
        self._unrecorded_upto = 0
        self._scheduled = False
        #: The last seq handed to the audit trail; the audit credits (seq, that] at most.
        self._handed = 0
        self._credit_from = 0
        self._drops_seen = 0

    @property
    def healthy(self) -> bool:
        """Whether a transition given to the trail now is written (none: it is not)."""
        return self.audit is not None and self.audit.healthy

    def open(self) -> None:
        path = self.config.service.audit_db
        if not path:
            return
        self.audit = AuditTrail(
            path,
            on_error=self._fault,
            on_recovered=self._recovered,
            retry_s=AUDIT_RETRY_S,
            max_pending=self.config.service.queue_max,
        )
        self.audit.open(self.clock.wall())

    def close(self) -> int:
        """Write what waits and close; the number of transitions left unwritten."""
        self.record_pending()
        if self.audit is None:
            return 0
        unwritten = self.audit.close(self.clock.wall())
        self.credit()
        if unwritten:
            log.error("audit_unwritten", path=str(self.audit.path), transitions=unwritten)
        return unwritten

    def _fault(self, exc: AuditError, attempt: int = 1) -> None:
        """The audit log failed (at start, on a write, on a retry): loud, never fatal."""
        self.failed = exc.reason
        self.metrics.audit_errors_total.inc()
        if attempt == 1 or attempt % AUDIT_LOG_EVERY == 0:
            log.error(
                "audit_failed",
                path=str(exc.path),
                code=exc.code,
                reason=exc.reason,
                attempt=attempt,
                pending=0 if self.audit is None else self.audit.pending,
                retry_every_s=AUDIT_RETRY_S,
                action="alarming continues; transitions wait in memory and are written "
                "when the audit log is usable again",
            )

    def _recovered(self, down_s: float, written: int) -> None:
        self.failed = None
        log.warning(
            "audit_recovered",
            path=str(self.config.service.audit_db),
            down_s=round(down_s, 2),
            written=written,
        )

    def poll(self, now: float) -> None:
        """Retry a failed audit log (or check a healthy one's file); export its backlog."""
        audit = self.audit
        if audit is None:
            return
        audit.poll(now)
        self.credit()
        self.metrics.audit_pending.set(audit.pending)
        if audit.dropped > self._dropped:
            new, self._dropped = audit.dropped - self._dropped, audit.dropped
            self.metrics.audit_dropped_total.inc(new)
            log.error("audit_dropped", transitions=new, total=audit.dropped)

    def credit(self) -> None:
        """Transitions the audit trail has written are durable (unless it gave some up)."""
        audit = self.audit
        if audit is None:
            return
        if audit.dropped != self._drops_seen:
            # it gave up some of those handed so far (which, it does not say): for them
            # only a PUBACK counts now
            self._drops_seen = audit.dropped
            self._credit_from = self._handed
        if not audit.pending:
            self.ledger.credit(self._credit_from, self._handed)

    def later(self, events: list[AlarmEvent]) -> None:
        """Record and log ``events`` (just queued for publishing) right after.

        The audit trail's commit (0.1-0.3 ms, once 5 ms at 5,000 beds) and the
        log lines come after the publisher has put the alarms on the wire:
        they are scheduled behind the publisher's wake-up, not done first.
        :meth:`close` writes whatever is still waiting before it closes the trail.
        """
        self._unrecorded.extend(events)
        self._unrecorded_upto = self.ledger.seq
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # no loop (a test driving the service by hand): now
            self.record_pending()
            return
        if not self._scheduled:
            self._scheduled = True
            loop.call_soon(self.record_pending)

    def record_pending(self) -> None:
        """Write the alarm transitions waiting for the audit trail, and log them."""
        self._scheduled = False
        events, self._unrecorded = self._unrecorded, []
        if not events:
            return
        if self.audit is not None:
            self.audit.append(events, recorded_at=self.clock.wall())
            self.metrics.audit_pending.set(self.audit.pending)
        self._handed = self._unrecorded_upto
        self.credit()
        for ev in events:
            log.info(
                "alarm",
                unit=ev.bed.unit,
                bed=ev.bed.bed,
                kind=ev.kind,
                state=ev.state.value,
                priority=ev.priority.value,
                trigger=ev.trigger.value,
                alarm_id=ev.alarm_id,
            )
            if ev.details.get("clear_reason") == BED_EVICTED:
                log.warning(
                    "alarm_closed_bed_evicted",
                    unit=ev.bed.unit,
                    bed=ev.bed.bed,
                    kind=ev.kind,
                    alarm_id=ev.alarm_id,
                    max_beds=self.max_beds,
                    action="the bed is no longer monitored: raise service.max_beds",
                )
