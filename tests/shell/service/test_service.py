"""``streamproc run`` against a real Mosquitto that the tests start, kill and restart."""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from simulators.scenario import Scenario, load_scenario, render, scenario_dir
from streamproc.shell.audit import AuditLog
from tests.system.broker import MosquittoBroker, Subscriber
from tests.system.service_helpers import Publisher, ServiceProcess, alarm, is_alarm

ALARMS = "icu/+/+/alarms/#"


def headline(t0: float | None = None, **changes: Any) -> Scenario:
    """The 60/40 patient on NE, with data timestamps from now (a live gateway)."""
    sc = load_scenario(scenario_dir() / "ne_60_40.toml")
    return dataclasses.replace(sc, t0=time.time() - sc.duration_s if t0 is None else t0, **changes)


@pytest.fixture
def service(broker: MosquittoBroker, tmp_path: Path) -> Iterator[ServiceProcess]:
    proc = ServiceProcess(broker, tmp_path).start()
    try:
        yield proc
    finally:
        proc.close()


@pytest.fixture
def gateway(broker: MosquittoBroker) -> Iterator[Publisher]:
    pub = Publisher(broker)
    try:
        yield pub
    finally:
        pub.close()


class TestLive:
    def test_headline_alarm_retained_for_late_subscriber(
        self, broker: MosquittoBroker, service: ServiceProcess, gateway: Publisher
    ) -> None:
        """The 60/40 episode through the broker: a late subscriber reads the retained alarm."""
        t_start = time.monotonic()
        gateway.send(render(headline()))
        with Subscriber(broker, ALARMS) as early:
            early.wait_for(is_alarm("hypotension", state="active"), timeout=15)
        latency = time.monotonic() - t_start
        with Subscriber(broker, ALARMS) as late:
            msg = late.wait_for(is_alarm("hypotension"), timeout=5)
        assert msg.retain
        assert msg.topic == "icu/ward7/bed03/alarms/hypotension"
        p = alarm(msg)
        assert (p["state"], p["priority"]) == ("active", "high")
        assert "vasopressin 0.03 U/min" in p["recommendation"]
        with Subscriber(broker, "icu/+/+/summary") as sums:
            summary = json.loads(
                sums.wait_for(
                    # the summary after the whole episode (under load one may come mid-way)
                    lambda m: (
                        json.loads(m.payload)["open_alarms"] == ["hypotension"]
                        and len(json.loads(m.payload)["trend"]) >= 7
                    ),
                    timeout=30,
                ).payload
            )
        assert (summary["unit"], summary["bed"], summary["metric"]) == ("ward7", "bed03", "map")
        assert 44 <= summary["map"] <= 50
        assert summary["target"] == 65
        assert summary["open_alarms"] == ["hypotension"]
        assert summary["infusions"] == [
            {"drug": "norepinephrine", "rate": 0.35, "unit": "mcg/kg/min"}
        ]
        assert len(summary["trend"]) >= 7  # one point per 30 s of the 240 s episode
        assert summary["trend"][0] > 65 > summary["trend"][-1]
        deadline = time.monotonic() + 10
        while service.metric("streamproc_messages_in_total", kind="abp") < 240:
            assert time.monotonic() < deadline, service.metrics()
            time.sleep(0.1)
        assert service.metric("streamproc_messages_in_total", kind="abp") == 240
        print(f"\n240 chunks published and the alarm received in {latency:.2f} s")  # noqa: T201

    def test_mqtt311_session(
        self, broker: MosquittoBroker, tmp_path: Path, gateway: Publisher
    ) -> None:
        """Under MQTT 3.1.1 (service.mqtt_version = 4) the 60/40 alarm arrives and every
        chunk is processed and acknowledged."""
        proc = ServiceProcess(broker, tmp_path, env={"STREAMPROC_MQTT_VERSION": "4"}).start()
        try:
            gateway.send(render(headline()))
            with Subscriber(broker, ALARMS) as sub:
                msg = sub.wait_for(is_alarm("hypotension", state="active"), timeout=20)
            assert alarm(msg)["priority"] == "high"
            deadline = time.monotonic() + 15
            while proc.health().get("unacked", 1) or (
                proc.metric("streamproc_messages_in_total", kind="abp") < 240
            ):
                assert time.monotonic() < deadline, proc.health()
                time.sleep(0.1)
        finally:
            proc.close()

    def test_status_online_and_offline(self, broker: MosquittoBroker, tmp_path: Path) -> None:
        """Retained status: online while running; offline after SIGTERM (graceful) and after
        SIGKILL (the Last Will)."""
        for stop in ("terminate", "kill"):
            proc = ServiceProcess(broker, tmp_path, instance=f"st-{stop}").start()
            topic = f"icu/_status/st-{stop}"
            with Subscriber(broker, topic) as sub:
                assert json.loads(sub.wait_for(timeout=5).payload)["state"] == "online"
            getattr(proc, stop)()
            with Subscriber(broker, topic) as sub:
                sub.wait_for(lambda m: json.loads(m.payload)["state"] == "offline", timeout=20)

    def test_ack_changes_state(
        self, broker: MosquittoBroker, service: ServiceProcess, gateway: Publisher
    ) -> None:
        """A dashboard's ack moves the alarm to acknowledged, with who acknowledged."""
        with Subscriber(broker, ALARMS) as sub:
            gateway.send(render(headline()))
            active = alarm(sub.wait_for(is_alarm("hypotension", state="active"), timeout=15))
            gateway.raw(
                "icu/ward7/bed03/ack",
                json.dumps(
                    {"ts": time.time(), "alarm_id": active["alarm_id"], "by": "station-3"}
                ).encode(),
            )
            acked = alarm(sub.wait_for(is_alarm("hypotension", state="acknowledged"), timeout=10))
        assert acked["alarm_id"] == active["alarm_id"]
        assert acked["acknowledged_by"] == "station-3"
        # the audit row is written beside the publish, not before it: give it a moment
        deadline = time.monotonic() + 10
        states: list[str] = []
        while time.monotonic() < deadline:
            rows = AuditLog(service.audit_db).query(unit="ward7", bed="bed03", kind="hypotension")
            states = [r.state for r in rows][:2]
            if len(states) == 2:
                break
            time.sleep(0.1)
        assert states == ["active", "acknowledged"]

    def test_garbage_does_not_stop_the_episode(
        self, broker: MosquittoBroker, service: ServiceProcess, gateway: Publisher
    ) -> None:
        """10,000 bad messages interleaved with an episode: its alarm arrives, rejects counted."""
        lines = render(headline())
        bad: list[tuple[str, bytes]] = [
            ("icu/ward7/bed03/abp", b"not json"),
            ("icu/ward7/bed03/abp", b'{"t0": 1, "fs": 125, "samples": [1]}'),
            ("icu/ward7/bed03/abp", b'{"t0": 1732400000, "fs": -1, "samples": [80]}'),
            ("icu/ward7/bed03/vitals", b'{"ts": 1732400000, "source": "art", "sbp": "high"}'),
            (
                "icu/ward7/bed03/infusion",
                b'{"ts": 1732400000, "drug": "unknown", "rate": 1, "unit": "mcg/min"}',
            ),
            ("icu/ward7/bed%03/abp", b"{}"),
            ("icu/" + "u" * 65 + "/bed03/abp", b"{}"),  # unit id too long
            ("icu/ward7/bed03/abp", b"\xff\xfe" * 50),
        ]
        n_bad = 10_000
        with Subscriber(broker, ALARMS) as sub:
            t_start = time.monotonic()
            for i in range(n_bad):
                topic, payload = bad[i % len(bad)]
                gateway.client.publish(topic, payload, qos=0)
                if i % (n_bad // len(lines)) == 0 and lines:
                    gateway.send([lines.pop(0)])
            gateway.send(lines)
            sub.wait_for(is_alarm("hypotension", state="active", priority="high"), timeout=30)
            elapsed = time.monotonic() - t_start
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            rejected = sum(
                service.metric("streamproc_messages_rejected_total", reason=r)
                for r in (
                    "not_json",
                    "out_of_range",
                    "wrong_type",
                    "unknown_value",
                    "bad_topic",
                    "not_utf8",
                    "missing_field",
                    "not_object",
                )
            )
            if rejected >= n_bad:
                break
            time.sleep(0.2)
        assert rejected == n_bad
        assert service.proc is not None
        assert service.proc.poll() is None
        rejects = [line for line in service.log_lines() if line.get("event") == "rejected"]
        assert len(rejects) == n_bad
        assert {"topic", "code", "reason"} <= set(rejects[0])
        assert not any("payload" in line or "samples" in line for line in rejects)
        rate = (n_bad + 240) / elapsed
        print(f"\n{n_bad} garbage + 240 chunks handled at {rate:,.0f} msg/s")  # noqa: T201


class TestDeadLetter:
    def test_rejects_republished_with_reason(
        self, broker: MosquittoBroker, tmp_path: Path, gateway: Publisher
    ) -> None:
        """With a dead-letter topic set, each reject is republished there with its reason."""
        proc = ServiceProcess(broker, tmp_path, env={"STREAMPROC_DEAD_LETTER_TOPIC": "icu/_dead"})
        proc.start()
        try:
            with Subscriber(broker, "icu/_dead") as sub:
                gateway.raw("icu/ward1/bed1/vitals", b'{"ts": 1732400000, "source": "cuff"}')
                dead = json.loads(sub.wait_for(timeout=10).payload)
            assert dead["topic"] == "icu/ward1/bed1/vitals"
            assert dead["code"] == "unknown_value"
            assert dead["field"] == "source"
            assert "art" in dead["reason"]
            assert proc.metric("streamproc_dead_letters_total") == 1
        finally:
            proc.close()


class TestFaults:
    def test_broker_killed_alarm_decided_meanwhile_arrives(
        self, broker: MosquittoBroker, tmp_path: Path, gateway: Publisher
    ) -> None:
        """Broker SIGKILLed right after an NIBP 60/40: the alarm decided while it is down (hold
        3 s on the standing reading) is published after the restart, once, with one id."""
        proc = ServiceProcess(
            broker,
            tmp_path,
            env={
                "STREAMPROC_HYPOTENSION_HOLD_S": "3",
                "STREAMPROC_HYPOTENSION_CRITICAL_HOLD_S": "60",
            },
        )
        proc.start()
        try:
            gateway.send(
                [
                    {
                        "topic": "icu/ward2/bed1/vitals",
                        "payload": {"ts": time.time(), "source": "nibp", "sbp": 60, "dbp": 40},
                    }
                ]
            )
            time.sleep(0.5)  # received, not yet alarmed (hold 3 s)
            broker.kill()
            time.sleep(5)  # the alarm is decided now, with no broker
            t_restart = time.monotonic()
            broker.restart()
            with Subscriber(broker, ALARMS) as sub:
                msg = sub.wait_for(is_alarm("hypotension", state="active"), timeout=30)
                reconnect_s = time.monotonic() - t_restart
                time.sleep(1.0)
                hypo = [alarm(m) for m in sub.messages if is_alarm("hypotension")(m)]
            assert msg.topic == "icu/ward2/bed1/alarms/hypotension"
            assert len({a["alarm_id"] for a in hypo}) == 1
            rows = AuditLog(proc.audit_db).query(kind="hypotension")
            assert [r.state for r in rows] == ["active"]
            assert proc.metric("streamproc_broker_reconnects_total") >= 1
            print(f"\nalarm delivered {reconnect_s:.2f} s after the broker restart")  # noqa: T201
        finally:
            proc.close()

    def test_broker_killed_mid_episode_no_loss_no_duplicate(
        self, broker: MosquittoBroker, service: ServiceProcess, gateway: Publisher
    ) -> None:
        """Alarm raised, broker SIGKILLed at once (before any autosave) and restarted, episode
        goes on: the alarm state is back on the broker (republished by the processor), with
        the same id, raised once, and the gateway's later data is processed."""
        sc = headline()
        lines = render(sc)
        with Subscriber(broker, ALARMS) as sub:
            gateway.send(lines[:120])
            first = alarm(sub.wait_for(is_alarm("hypotension", state="active"), timeout=15))
        broker.kill()
        broker.restart()
        service.wait_healthy(timeout=30)
        pub = Publisher(broker)
        try:
            pub.send(lines[120:])
        finally:
            pub.close()
        time.sleep(1.0)
        with Subscriber(broker, ALARMS) as late:
            msg = late.wait_for(is_alarm("hypotension"), timeout=10)
        assert alarm(msg)["alarm_id"] == first["alarm_id"]
        rows = AuditLog(service.audit_db).query(kind="hypotension")
        assert [r.trigger for r in rows].count("raised") == 1

    @pytest.mark.parametrize("how", ["terminate", "kill"])
    def test_processor_restart_keeps_alarm_id(
        self, broker: MosquittoBroker, tmp_path: Path, gateway: Publisher, how: str
    ) -> None:
        """Processor stopped (SIGTERM or SIGKILL) mid-episode and restarted: the open alarm
        keeps its id and is not raised twice; data sent while it was away is processed."""
        sc = headline()
        lines = render(sc)
        proc = ServiceProcess(broker, tmp_path).start()
        try:
            with Subscriber(broker, ALARMS) as sub:
                gateway.send(lines[:150])
                first = alarm(sub.wait_for(is_alarm("hypotension", state="active"), timeout=15))
            getattr(proc, how)()
            gateway.send(lines[150:])  # queued by the broker for the persistent session
            gateway.raw(
                "icu/ward7/bed03/ack",
                json.dumps({"ts": time.time(), "alarm_id": first["alarm_id"], "by": "s9"}).encode(),
            )
            proc.start()
            with Subscriber(broker, ALARMS) as sub:
                acked = alarm(
                    sub.wait_for(is_alarm("hypotension", state="acknowledged"), timeout=20)
                )
            assert acked["alarm_id"] == first["alarm_id"]
            rows = AuditLog(proc.audit_db).query(kind="hypotension")
            assert [r.trigger for r in rows].count("raised") == 1
            assert {r.alarm_id for r in rows} == {first["alarm_id"]}
        finally:
            proc.close()
