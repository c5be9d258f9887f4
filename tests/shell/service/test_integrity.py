"""Issue 16, live: a gateway that re-sends its last minutes changes nothing on the broker.

A real Mosquitto and a real ``streamproc run`` (the fixtures of
``tests/shell/service/test_service.py``): the 60/40 episode, then its last 300 messages
again as a gateway re-sends them after its restart.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from simulators.scenario import Scenario, load_scenario, render, scenario_dir
from tests.system.broker import MosquittoBroker, Subscriber
from tests.system.service_helpers import Publisher, ServiceProcess, alarm, is_alarm

ALARMS = "icu/+/+/alarms/#"


def headline() -> Scenario:
    """The 60/40 patient on NE, with data timestamps up to now (a live gateway)."""
    sc = load_scenario(scenario_dir() / "ne_60_40.toml")
    return dataclasses.replace(sc, t0=time.time() - sc.duration_s)


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


class TestGatewayRestart:
    def test_resent_minutes_change_nothing(
        self, broker: MosquittoBroker, service: ServiceProcess, gateway: Publisher
    ) -> None:
        """The episode, then its last 300 messages again: no ``cleared``, no new id; the
        re-sent messages are counted as dropped duplicates and logged once."""
        lines = render(headline())
        with Subscriber(broker, ALARMS) as sub:
            gateway.send(lines)
            first = alarm(sub.wait_for(is_alarm("hypotension", state="active"), timeout=15))
            resent = lines[-300:]
            gateway.send(resent)
            deadline = time.monotonic() + 15
            dup = 0.0
            while time.monotonic() < deadline:
                dup = service.metric("streamproc_messages_dropped_total", reason="duplicate")
                if dup >= len(resent):
                    break
                time.sleep(0.2)
            time.sleep(0.5)  # (a transition the re-send caused would be out by now)
            seen = [json.loads(m.payload) for m in sub.messages if "hypotension" in m.topic]
        assert not [p for p in seen if p["state"] == "cleared"]
        assert {p["alarm_id"] for p in seen} == {first["alarm_id"]}
        assert dup == len(resent)
        assert service.metric("streamproc_messages_dropped_total", reason="late") == 0
        logged = [x for x in service.log_lines() if x.get("event") == "message_dropped"]
        assert [(x["bed"], x["reason"]) for x in logged] == [("bed03", "duplicate")]
