"""On start, adopt what the last run knew: open alarms from the audit log and the
retained alarm topics (the newer wins), with their acknowledgement silences and
announcement times, and each bed's last data time from its retained summary, so a
restarted processor keeps their ids and raises no duplicate (``docs/reliability.md``,
restart)."""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Final

import msgspec

from streamproc.core.engine import BedActivity, Engine
from streamproc.core.protocol.alarms import AlarmEvent, AlarmState
from streamproc.core.protocol.messages import BedId
from streamproc.shell.backoff import Backoff
from streamproc.shell.logs import get_logger
from streamproc.shell.service.audit_link import AuditLink
from streamproc.shell.service.broker import (
    AUTH_RETRY_BASE_S,
    AUTH_RETRY_CAP_S,
    BrokerLink,
    MqttConnection,
    served_units,
)
from streamproc.shell.service.outbox import Outbox
from streamproc.shell.service.queues import Queues
from streamproc.shell.service.summaries import Summaries
from streamproc.shell.transport_paho import ConnectRefusedError, Inbound, MqttError
from streamproc.wire.codec import CodecError
from streamproc.wire.outbound import decode_alarm
from streamproc.wire.topics import parse_alarm_topic, summary_filter, summary_topic

__all__ = ["RESTORE_MAX_S", "RESTORE_QUIET_S", "restore"]

log = get_logger("streamproc.shell.service")

#: How long to wait for retained alarm state on start when none is arriving.
RESTORE_QUIET_S: Final = 0.5
RESTORE_MAX_S: Final = 10.0


def _finite(value: object) -> bool:
    """A JSON number (not a bool) that is finite."""
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


@dataclass(slots=True)
class _Retained:
    """What the broker retains for this instance, read on start."""

    alarms: list[AlarmEvent] = field(default_factory=list)
    #: each bed's retained alarm topics with their payloads
    topics: dict[BedId, dict[str, bytes]] = field(default_factory=dict)
    #: each bed's last data time, from its retained summary (processor clock)
    activity: dict[BedId, BedActivity] = field(default_factory=dict)
    #: the beds with a retained summary
    summary_beds: set[BedId] = field(default_factory=set)


async def restore(
    link: BrokerLink,
    queues: Queues,
    *,
    engine: Engine,
    audit: AuditLink,
    outbox: Outbox,
    summaries: Summaries,
) -> None:
    """Adopt the open alarms of the audit log and the retained topics, republish those
    decided but never published, and give the engine each bed's last data time."""
    latest: dict[str, AlarmEvent] = {}
    if audit.audit is not None:
        for ev in audit.audit.open_alarms(link.clock.wall()):
            latest[ev.alarm_id] = ev
    got = _Retained()
    await _Reader(link, queues, got).read()
    retained = got.alarms
    republish = _merge(latest, retained, link.serves)
    n = engine.restore(_to_adopt(latest), link.clock.wall(), activity=got.activity)
    # what is retained for the beds monitored now is theirs: emptied if they are evicted
    for bed, topics in got.topics.items():
        if engine.get(bed) is not None:
            outbox.retained.setdefault(bed, {}).update(topics)
    for bed in got.summary_beds:
        if engine.get(bed) is not None:
            summaries.shown.setdefault(bed, ())  # (shows nothing yet: republished)
    for ev in republish:
        outbox.enqueue_alarm(ev)
    log.info(
        "restored",
        open_alarms=n,
        from_retained=len(retained),
        republish=len(republish),
        beds=len(engine),
        last_data_known=len(got.activity),
    )


def _merge(
    latest: dict[str, AlarmEvent],
    retained: list[AlarmEvent],
    serves: Callable[[str], bool] | None,
) -> list[AlarmEvent]:
    """Merge the retained states of the served units into ``latest`` (by alarm id, the
    newer wins); the ones to republish: decided but never published before the restart."""
    for ev in retained:
        if serves is not None and not serves(ev.bed.unit):
            continue  # another instance's care unit
        mine = latest.get(ev.alarm_id)
        if mine is None or ev.ts >= mine.ts:
            latest[ev.alarm_id] = ev
    republish: list[AlarmEvent] = []
    for ev in latest.values():
        known = next((r for r in retained if r.alarm_id == ev.alarm_id), None)
        if known is None or known.ts < ev.ts:
            republish.append(ev)  # decided but never published before the restart
    return republish


def _to_adopt(latest: dict[str, AlarmEvent]) -> list[AlarmEvent]:
    """The cleared states, then one open alarm per bed and kind (the newest)."""
    per_kind: dict[tuple[object, str], AlarmEvent] = {}
    for ev in sorted(latest.values(), key=lambda e: e.ts):
        if ev.state is not AlarmState.CLEARED:
            per_kind[(ev.bed, ev.kind)] = ev
    # the cleared ones too: their ids are never issued again (a re-delivered
    # retained context message may raise the same kind at the same data time)
    cleared = [ev for ev in latest.values() if ev.state is AlarmState.CLEARED]
    return [*cleared, *per_kind.values()]


class _Reader:
    """Reads the retained alarm states, summaries and this instance's last status."""

    def __init__(self, link: BrokerLink, queues: Queues, into: _Retained) -> None:
        self.link = link
        self.queues = queues
        self.into = into
        self.own_status = link.status_topic()
        self.summary_levels = summary_filter(link.root).count("/")

    async def read(self) -> None:
        """Connect (retrying) and read until ``RESTORE_QUIET_S`` pass with nothing new."""
        link = self.link
        mono = link.clock.mono
        backoff = Backoff()
        auth_backoff = Backoff(AUTH_RETRY_BASE_S, AUTH_RETRY_CAP_S, floor=0.5)
        deadline = mono() + RESTORE_MAX_S * 3
        received: asyncio.Queue[Inbound] = asyncio.Queue()
        while not self.queues.stopping.is_set():
            conn = link.connection(
                link.settings(f"{link.client_id}-restore", persistent=False, with_will=False),
                received.put_nowait,
            )
            try:
                await conn.connect()
                await link.subscribe(
                    conn, [*link.alarm_filters(), *link.summary_filters(), self.own_status]
                )
                await self._drain(conn, received)
                await conn.disconnect()
            except MqttError as exc:
                conn.abort()
                refused = isinstance(exc, ConnectRefusedError) and exc.auth
                if not refused and mono() > deadline:
                    log.error("restore_gave_up", reason=exc.reason)  # noqa: TRY400
                    return
                delay = auth_backoff.next() if refused else backoff.next()
                link.failed(exc, "restore", delay, len(self.queues.outbox))
                await self.queues.sleep(delay)
            else:
                link.broker_error = None
                return

    async def _drain(self, conn: MqttConnection, received: asyncio.Queue[Inbound]) -> None:
        mono = self.link.clock.mono
        end = mono() + RESTORE_MAX_S
        while mono() < end:
            try:
                async with asyncio.timeout(RESTORE_QUIET_S):
                    message = await received.get()
            except TimeoutError:
                break
            conn.ack(message.mid, message.qos)
            if message.retain and message.payload:  # (else live traffic, or emptied)
                self._take(message.topic, message.payload)

    def _take(self, topic: str, payload: bytes) -> None:
        if topic == self.own_status:
            self.link.previous_units = served_units(payload)
        elif topic.count("/") == self.summary_levels:
            self._take_summary(topic, payload)
        else:
            try:
                bed, _ = parse_alarm_topic(topic, self.link.root)
                self.into.alarms.append(decode_alarm(payload))
                self.into.topics.setdefault(bed, {})[topic] = payload
            except CodecError as exc:
                log.warning("restore_skipped", topic=topic, reason=str(exc))

    def _take_summary(self, topic: str, payload: bytes) -> None:
        """A retained summary read on start: the bed's last data time, if it says so."""
        try:
            data = msgspec.json.decode(payload)
            bed = BedId(str(data["unit"]), str(data["bed"]))
        except (msgspec.DecodeError, KeyError, TypeError, ValueError):
            log.warning("restore_skipped", topic=topic[:200], reason="unreadable summary")
            return
        if summary_topic(self.link.root, bed) != topic:
            log.warning("restore_skipped", topic=topic[:200], reason="summary of another bed")
            return
        serves = self.link.serves
        if serves is not None and not serves(bed.unit):
            return  # another instance's care unit
        self.into.summary_beds.add(bed)
        last, ts = data.get("last_data"), data.get("ts")
        if _finite(last):
            self.into.activity[bed] = BedActivity(
                float(last),
                nibp_only=data.get("nibp_only") is True,
                data_ts=float(ts) if _finite(ts) else None,
            )
