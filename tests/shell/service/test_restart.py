"""A restarted ``streamproc run`` keeps what the last run knew (real broker, real processes).

An acknowledgement's silence ends ``ack_silence_s`` after the acknowledgement, not after the
restart; a bed that sent its last data shortly before the restart and never sends again goes
``data_stale`` ``stale_s`` after its last data. Both are judged on the processor's clock,
which the alarm payloads carry (``ts`` of the ``ack_expired`` and ``data_stale``
transitions is the processor's time of the tick that decided them).
"""

from __future__ import annotations

import time
from pathlib import Path

from tests.shell.service.test_eviction import episode
from tests.system.broker import MosquittoBroker, Subscriber
from tests.system.service_helpers import Publisher, ServiceProcess, alarm, is_alarm

UNIT = "ward7"
STALE_S = 30.0
SILENCE_S = 30.0
#: A tick every 0.2 s (tests/system/service_helpers.py), plus scheduling on a busy host.
LATE_S = 3.0
#: The processor is down this long between the stop and the start.
DOWN_S = 6.0


class TestRestart:
    def test_restart_keeps_ack_silence_and_last_data(
        self, broker: MosquittoBroker, tmp_path: Path
    ) -> None:
        """bed01 and bed02 in hypotension; bed01's alarm acknowledged; both silent from
        then on. The processor is stopped and started again DOWN_S later. bed01's silence
        ends SILENCE_S after the acknowledgement (before the fix: after the restart) and
        bed02 goes data_stale STALE_S after its last data (before the fix: never), with
        the same hypotension ids as before the restart."""
        env = {
            "STREAMPROC_MONITOR_STALE_S": str(STALE_S),
            "STREAMPROC_ALARMS_ACK_SILENCE_S": str(SILENCE_S),
        }
        first = ServiceProcess(broker, tmp_path, env=env).start()
        second: ServiceProcess | None = None
        gateway = Publisher(broker)
        try:
            with Subscriber(broker, f"icu/{UNIT}/+/alarms/#") as watch:
                data_from = time.time()
                for bed in ("bed01", "bed02"):
                    gateway.send(episode(bed))
                raised = {
                    bed: alarm(watch.wait_for(is_alarm("hypotension", state="active", bed=bed), 20))
                    for bed in ("bed01", "bed02")
                }
                sent = sum(len(episode(b)) for b in ("bed01", "bed02"))
                deadline = time.monotonic() + 20
                while (
                    first.metric("streamproc_messages_in_total", kind="abp")
                    + first.metric("streamproc_messages_in_total", kind="infusion")
                    + first.metric("streamproc_messages_in_total", kind="patient")
                    < sent
                ):
                    assert time.monotonic() < deadline, first.log_tail()
                    time.sleep(0.1)
                data_until = time.time()  # every message processed: the last data is older
                acked_from = time.time()
                gateway.send(
                    [
                        {
                            "topic": f"icu/{UNIT}/bed01/ack",
                            "payload": {
                                "ts": acked_from,
                                "alarm_id": raised["bed01"]["alarm_id"],
                                "by": "station-3",
                            },
                        }
                    ]
                )
                watch.wait_for(is_alarm("hypotension", state="acknowledged", bed="bed01"), 10)
                acked_until = time.time()
                assert first.terminate() == 0
                time.sleep(DOWN_S)
                watch.clear()
                restarted = time.time()
                second = ServiceProcess(broker, tmp_path, env=env).start()
                expired = alarm(
                    watch.wait_for(
                        is_alarm("hypotension", bed="bed01", trigger="ack_expired"),
                        SILENCE_S + 10,
                    )
                )
                stale = alarm(watch.wait_for(is_alarm("data_stale", bed="bed02"), STALE_S + 10))
            assert restarted < data_from + STALE_S - 5  # the checks below are about the restart
            assert restarted < acked_from + SILENCE_S - 5
            # the silence ends SILENCE_S after the acknowledgement, on the processor's clock
            assert acked_from + SILENCE_S <= expired["ts"] <= acked_until + SILENCE_S + LATE_S
            assert expired["alarm_id"] == raised["bed01"]["alarm_id"]
            assert expired["state"] == "active"
            # bed02: data_stale STALE_S after its last data, the restored alarm kept
            assert stale["state"] == "active"
            assert data_from + STALE_S <= stale["ts"] <= data_until + STALE_S + LATE_S
            assert data_from <= stale["onset_ts"] <= data_until
            restored = [ln for ln in second.log_lines() if ln.get("event") == "restored"]
            assert restored[-1]["open_alarms"] >= 2
            with Subscriber(broker, f"icu/{UNIT}/bed02/alarms/hypotension") as late:
                held = alarm(late.wait_for(lambda m: m.retain and bool(m.payload), 5))
            assert held["alarm_id"] == raised["bed02"]["alarm_id"]
        finally:
            gateway.close()
            first.close()
            if second is not None:
                second.close()
