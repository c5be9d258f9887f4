"""The bed cap on a live service: an evicted bed leaves nothing behind on the broker.

``service.max_beds`` bounds the beds the core holds. When every bed has an open alarm, the
bed silent longest is evicted and its open alarms get a ``cleared`` transition with
``clear_reason = "bed_evicted"`` (a dashboard watching sees it closed, not resolved); then
every retained topic of the bed (its alarms, its summary) is emptied, MQTT's way to delete
a retained message, so that nothing stays on the broker for a bed nobody monitors.
"""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path

from simulators.scenario import load_scenario, render, scenario_dir
from tests.system.broker import MosquittoBroker, Subscriber
from tests.system.service_helpers import Publisher, ServiceProcess, alarm, is_alarm

UNIT = "ward7"


def episode(bed: str) -> list[dict[str, object]]:
    """The 60/40 patient on norepinephrine on ``bed``, stamped up to now."""
    sc = load_scenario(scenario_dir() / "ne_60_40.toml")
    sc = dataclasses.replace(sc, bed=bed, t0=time.time() - sc.duration_s)
    return list(render(sc))


class TestBedCapEviction:
    def test_evicted_bed_alarm_is_closed_then_its_topic_emptied(
        self, broker: MosquittoBroker, tmp_path: Path
    ) -> None:
        """max_beds=2: bed01 and bed02 in hypotension, then bed03 sends one reading. bed01
        (silent longest) is evicted: its alarm goes ``cleared`` with clear_reason bed_evicted
        and the same id, then its topic is emptied (nothing retained); counted and logged;
        bed02 stays active."""
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
                # then the topic is emptied: the retained state is deleted
                gone = watch.wait_for(
                    lambda m: m.topic == f"icu/{UNIT}/bed01/alarms/hypotension" and not m.payload,
                    10,
                )
            assert closed["alarm_id"] == first["alarm_id"]
            assert closed["clear_reason"] == "bed_evicted"
            assert "NOT resolved" in closed["clear_note"]
            assert closed["trigger"] == "cleared"
            assert gone.payload == b""
            # a dashboard connecting now reads nothing for bed01, bed02 still active
            with Subscriber(broker, f"icu/{UNIT}/+/alarms/hypotension") as late:
                time.sleep(0.5)
                retained = {m.topic: json.loads(m.payload) for m in late.messages if m.retain}
            assert f"icu/{UNIT}/bed01/alarms/hypotension" not in retained
            assert retained[f"icu/{UNIT}/bed02/alarms/hypotension"]["state"] == "active"
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


def retained_state(broker: MosquittoBroker, unit: str) -> dict[str, dict[str, object]]:
    """Every non-empty retained alarm state and summary of ``unit``, by topic."""
    with Subscriber(broker, [f"icu/{unit}/+/alarms/#", f"icu/{unit}/+/summary"]) as late:
        time.sleep(1.0)
        return {m.topic: json.loads(m.payload) for m in late.messages if m.retain and m.payload}


class TestIdFlood:
    def test_flood_of_new_ids_leaves_nothing_retained_for_evicted_beds(
        self, broker: MosquittoBroker, tmp_path: Path
    ) -> None:
        """max_beds=100; 1,500 new bed ids send one reading each, in bursts while ticks
        (staleness after 1 s) and summaries run. Afterwards the broker holds retained state
        (an open alarm, a summary) for at most the 100 beds monitored: every evicted bed's
        topics were emptied (before the fix: retained active ``data_stale`` alarms and
        summaries for hundreds of beds nobody monitors, the tick raising ``data_stale`` for
        beds evicted between its slices)."""
        n, cap = 1_500, 100
        service = ServiceProcess(
            broker,
            tmp_path,
            env={
                "STREAMPROC_MAX_BEDS": str(cap),
                "STREAMPROC_MONITOR_STALE_S": "1",
                "STREAMPROC_SUMMARY_S": "0.5",
            },
        ).start()
        gateway = Publisher(broker)
        try:
            for start in range(0, n, 100):
                now = time.time()
                gateway.send(
                    {
                        "topic": f"icu/flood/f{i:05d}/vitals",
                        "payload": {"ts": now, "source": "art", "sbp": 120, "dbp": 70},
                    }
                    for i in range(start, start + 100)
                )
                time.sleep(0.3)  # ticks and summaries run between the bursts
            deadline = time.monotonic() + 30
            while service.metric("streamproc_beds_evicted_total") < n - cap:
                assert time.monotonic() < deadline, service.log_tail()
                time.sleep(0.2)
            time.sleep(2.5)  # the last beds go stale; ticks and summaries go on
            while service.health()["outbox"]:
                assert time.monotonic() < deadline + 30, service.log_tail()
                time.sleep(0.2)
            state = retained_state(broker, "flood")
        finally:
            gateway.close()
            service.close()
        alarms = {t: p for t, p in state.items() if "/alarms/" in t}
        summaries = {t: p for t, p in state.items() if t.endswith("/summary")}
        open_beds = {p["bed"] for p in alarms.values() if p["state"] != "cleared"}
        summary_beds = {p["bed"] for p in summaries.values()}
        assert summary_beds  # the comparison is about something: summaries were published
        assert len(open_beds | summary_beds) <= cap, (len(open_beds), len(summary_beds))
        assert len(alarms) <= cap  # one alarm kind (data_stale) per monitored bed at most
