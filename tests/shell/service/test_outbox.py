"""The outbox is bounded and republishes every alarm topic's last state (no broker needed)."""

from __future__ import annotations

from streamproc.core.protocol.alarms import Alarm, Priority, Trigger
from streamproc.core.protocol.messages import BedId
from streamproc.shell.config import load_config
from streamproc.shell.service import Service


class TestOutbox:
    def test_bounded_and_republished(self) -> None:
        """Past queue_max the oldest queued transition gives way (counted); after a
        reconnect every alarm topic's latest state goes out first, once."""
        cfg = load_config(
            environ={}, overrides={"service.broker": "mqtt://127.0.0.1:1", "service.queue_max": 3}
        )
        svc = Service(cfg)
        events = []
        for i in range(5):
            a = Alarm(BedId("w", f"b{i}"), "hypotension", 100.0 + i)
            events.append(a.apply(Trigger.RAISE, 160.0 + i, priority=Priority.HIGH))
        for ev in events:
            svc.outbox.enqueue_alarm(ev)
        assert [item.topic for item in svc.outbox.queue] == [
            f"icu/w/b{i}/alarms/hypotension" for i in (2, 3, 4)
        ]
        assert svc.outbox.dropped == 2
        svc.outbox.republish_retained()
        topics = [item.topic for item in svc.outbox.queue]
        assert topics[:2] == ["icu/w/b0/alarms/hypotension", "icu/w/b1/alarms/hypotension"]
        assert sorted(topics) == sorted(set(topics))
