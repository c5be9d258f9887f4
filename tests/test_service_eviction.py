"""The bed cap on a live service: evicting a bed with open alarms closes them on the broker.

``service.max_beds`` bounds the beds the core holds. When every bed has an open alarm, the
bed silent longest is evicted and its open alarms get a ``cleared`` transition with
``clear_reason = "bed_evicted"``: the retained state a dashboard reads says the alarm is
closed (and not resolved) instead of staying active forever for a bed nobody monitors.
"""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path

from simulators.scenario import load_scenario, render, scenario_dir
from tests.broker import MosquittoBroker, Subscriber
from tests.service_helpers import Publisher, ServiceProcess, alarm, is_alarm

UNIT = "ward7"


def episode(bed: str) -> list[dict[str, object]]:
    """The 60/40 patient on norepinephrine on ``bed``, stamped up to now."""
    sc = load_scenario(scenario_dir() / "ne_60_40.toml")
    sc = dataclasses.replace(sc, bed=bed, t0=time.time() - sc.duration_s)
    return list(render(sc))


class TestBedCapEviction:
    def test_evicted_bed_alarm_is_cleared_and_retained(
        self, broker: MosquittoBroker, tmp_path: Path
    ) -> None:
        """max_beds=2: bed01 and bed02 in hypotension, then bed03 sends one reading. bed01
        (silent longest) is evicted: its alarm's retained state becomes ``cleared`` with
        clear_reason bed_evicted and the same id; counted and logged; bed02 stays active."""
        service = ServiceProcess(broker, tmp_path, env={"STREAMPROC_MAX_BEDS": "2"}).start()
        gateway = Publisher(broker)
        try:
            with Subscriber(broker, "icu/+/+/alarms/#") as watch:
                for bed in ("bed01", "bed02"):
                    gateway.send(episode(bed))
                    watch.wait_for(is_alarm("hypotension", state="active", bed=bed), timeout=20)
                first = alarm(
                    watch.wait_for(is_alarm("hypotension", state="active", bed="bed01"), 1)
                )
                now = time.time()
                gateway.send(
                    [
                        {
                            "topic": f"icu/{UNIT}/bed03/vitals",
                            "payload": {"ts": now, "source": "art", "sbp": 120, "dbp": 70},
                        }
                    ]
                )
                closed = alarm(
                    watch.wait_for(is_alarm("hypotension", state="cleared", bed="bed01"), 10)
                )
            assert closed["alarm_id"] == first["alarm_id"]
            assert closed["clear_reason"] == "bed_evicted"
            assert "NOT resolved" in closed["clear_note"]
            assert closed["trigger"] == "cleared"
            # a dashboard connecting now reads the cleared state, retained
            with Subscriber(broker, f"icu/{UNIT}/+/alarms/hypotension") as late:
                time.sleep(0.5)
                retained = {m.topic: (m.retain, json.loads(m.payload)) for m in late.messages}
            flag, state = retained[f"icu/{UNIT}/bed01/alarms/hypotension"]
            assert (flag, state["state"], state["clear_reason"]) == (True, "cleared", "bed_evicted")
            flag, state = retained[f"icu/{UNIT}/bed02/alarms/hypotension"]
            assert (flag, state["state"]) == (True, "active")
            assert service.metric("streamproc_beds_evicted_total") == 1
            assert service.metric("streamproc_alarms_evicted_total") >= 1
            assert service.health()["beds"] == 2
            logged = [
                ln for ln in service.log_lines() if ln.get("event") == "alarm_closed_bed_evicted"
            ]
            assert [(ln["bed"], ln["level"]) for ln in logged if ln["kind"] == "hypotension"] == [
                ("bed01", "warning")
            ]
            assert logged[0]["max_beds"] == 2
        finally:
            gateway.close()
            service.close()
