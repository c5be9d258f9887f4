"""At-least-once processing: an inbound message is acknowledged to the broker only once the
engine took it and what it caused is durable; SIGTERM finishes what was taken; the exit
status says whether everything was made durable.

Real Mosquitto (tests/system/broker.py), real ``streamproc run`` processes, real signals.
"""

from __future__ import annotations

import dataclasses
import json
import os
import random
import re
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from simulators.scenario import load_scenario, render, scenario_dir
from streamproc.core.engine import Batch, Engine
from streamproc.shell.audit import AuditLog
from streamproc.shell.config import load_config
from streamproc.wire.codec import decode
from streamproc.wire.topics import parse_inbound
from tests.system.broker import MosquittoBroker, Subscriber
from tests.system.service_helpers import Publisher, ServiceProcess, alarm

#: Hypotension raised 3 s of data after MAP falls (the escalation far later): the alarm
#: comes from a short backlog, so that a kill lands in its processing often.
SHORT_HOLD = {"STREAMPROC_HYPOTENSION_HOLD_S": "3", "STREAMPROC_HYPOTENSION_CRITICAL_HOLD_S": "60"}
#: Kill tries per run (CI); ``STREAMPROC_TEST_KILL_TRIES`` raises it (e.g. to show main's loss).
KILL_TRIES = int(os.environ.get("STREAMPROC_TEST_KILL_TRIES", "10"))
BEDS_PER_TRY = 6


@pytest.fixture
def debug_broker(mosquitto_bin: Path, tmp_path: Path) -> Iterator[MosquittoBroker]:
    """Mosquitto logging every packet (``log_type debug``): the PUBACKs it received."""
    broker = MosquittoBroker(
        binary=mosquitto_bin, workdir=tmp_path / "mosquitto", extra_config=["log_type debug"]
    )
    try:
        broker.start()
        yield broker
    finally:
        broker.close()


def episode_until_alarm(bed: str, seed: int) -> list[dict[str, Any]]:
    """The 60/40 episode of ``bed`` up to and including the chunk that raises hypotension
    (found by running the engine on it here, with the same settings as the service)."""
    sc = load_scenario(scenario_dir() / "ne_60_40.toml")
    sc = dataclasses.replace(sc, bed=bed, seed=seed, t0=time.time() - sc.duration_s)
    lines = render(sc)
    engine = Engine(load_config(environ=SHORT_HOLD).core)
    for i, line in enumerate(lines):
        topic = parse_inbound(line["topic"], "icu")
        payload = line["payload"]
        body = payload.encode() if isinstance(payload, str) else json.dumps(payload).encode()
        events = engine.receive(Batch([(topic.bed, decode(topic.kind, body), time.time())]))
        if any(ev.kind == "hypotension" for ev in events):
            return lines[: i + 1]
    raise AssertionError("the episode raised no hypotension offline")


def interleave(per_bed: list[list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """Round robin over the beds (their chunks share data times: a ward, second by second)."""
    out: list[dict[str, Any]] = []
    for i in range(max(len(lines) for lines in per_bed)):
        out.extend(lines[i] for lines in per_bed if i < len(lines))
    return out


def wait_online(status: Subscriber, after: float, timeout: float = 30.0) -> None:
    """Until the instance's status says online with a time stamp after ``after``."""

    def online(msg: Any) -> bool:
        if not msg.payload:
            return False
        body = json.loads(msg.payload)
        return bool(body.get("state") == "online" and body.get("ts", 0) > after)

    status.wait_for(online, timeout=timeout)


class TestKillAtRandomInstant:
    @pytest.mark.slow
    def test_backlog_alarm_survives_kill(self, broker: MosquittoBroker, tmp_path: Path) -> None:
        """A backlog whose last chunks raise alarms waits for the persistent session; the
        processor is SIGKILLed 0-30 ms after it came online (seeded random instants) and
        restarted: every bed's alarm is delivered, raised once, under one id (the broker
        redelivers what was read but not yet durable). Main acknowledged on read, so a
        kill between the read and the audit write lost alarms for good."""
        rng = random.Random(16_4)
        env = dict(SHORT_HOLD)
        proc = ServiceProcess(broker, tmp_path, env=env).start()  # the session and its filters
        assert proc.terminate() == 0
        gateway = Publisher(broker)
        status = Subscriber(broker, f"icu/_status/{proc.instance}").start()
        lost: list[str] = []
        try:
            for attempt in range(KILL_TRIES):
                beds = [f"k{attempt}b{j}" for j in range(BEDS_PER_TRY)]
                gateway.send(
                    interleave([episode_until_alarm(bed, seed=j) for j, bed in enumerate(beds)])
                )
                delay = rng.uniform(0.0, 0.030)
                started = time.time()
                proc.start(wait=False)
                wait_online(status, started)
                time.sleep(delay)
                proc.kill()
                proc.start()
                with Subscriber(broker, "icu/ward7/+/alarms/hypotension") as sub:
                    try:
                        sub.wait_until(
                            lambda ms, beds=beds: {m.topic.split("/")[2] for m in ms} >= set(beds),
                            timeout=20,
                        )
                    except TimeoutError:
                        got = {m.topic.split("/")[2] for m in sub.messages}
                        lost.extend(
                            f"try {attempt} ({delay * 1e3:.1f} ms): {b}"
                            for b in beds
                            if b not in got
                        )
                    retained = {m.topic.split("/")[2]: alarm(m) for m in sub.messages if m.retain}
                assert proc.terminate() == 0, proc.log_tail()
                rows = AuditLog(proc.audit_db).query(kind="hypotension")
                for bed in beds:
                    mine = [r for r in rows if r.bed == bed]
                    if not mine:
                        continue  # counted above when its alarm never came
                    assert len({r.alarm_id for r in mine}) == 1, (attempt, bed, mine)
                    assert [r.trigger for r in mine].count("raised") == 1, (attempt, bed, mine)
                    if bed in retained:
                        assert retained[bed]["alarm_id"] == mine[0].alarm_id
        finally:
            status.stop()
            gateway.close()
            proc.close()
        assert not lost, f"{len(lost)} alarms lost in {KILL_TRIES} tries: {lost}"


def _acked_topics(broker: MosquittoBroker, client_id: str) -> tuple[list[str], list[str]]:
    """From the broker's debug log: the topics of the QoS 1 messages it sent ``client_id``,
    and of those the client acknowledged (a PUBACK's packet id names the last message sent
    with that id)."""
    sent_re = re.compile(
        rf"Sending PUBLISH to {re.escape(client_id)} \(d\d, q1, r\d, m(\d+), '([^']*)'"
    )
    ack_re = re.compile(rf"Received PUBACK from {re.escape(client_id)} \(Mid: (\d+)")
    by_mid: dict[str, str] = {}
    sent: list[str] = []
    acked: list[str] = []
    for line in broker.log_path.read_text(errors="replace").splitlines():
        m = sent_re.search(line)
        if m:
            by_mid[m.group(1)] = m.group(2)
            sent.append(m.group(2))
            continue
        m = ack_re.search(line)
        if m and m.group(1) in by_mid:
            acked.append(by_mid.pop(m.group(1)))
    return sent, acked


class TestSigtermMidBurst:
    def test_acked_exactly_what_was_processed(
        self, debug_broker: MosquittoBroker, tmp_path: Path
    ) -> None:
        """3,000 messages on distinct topics (each rejected with a log line naming its
        topic: proof it was processed) are being published when SIGTERM comes: every
        message the broker got a PUBACK for was processed, every processed one was
        acknowledged before the exit, and the rest are delivered to the next run."""
        proc = ServiceProcess(debug_broker, tmp_path).start()
        gateway = Publisher(debug_broker)
        n = 3000
        topics = [f"icu/burst/b{i:04d}/vitals" for i in range(n)]
        try:
            for i, topic in enumerate(topics):
                gateway.client.publish(topic, b"not json", qos=1)
                if i == n // 3:
                    time.sleep(0.05)
                    assert proc.proc is not None
                    proc.proc.send_signal(signal.SIGTERM)
            assert proc.wait(20) == 0, proc.log_tail()
            first = {ln["topic"] for ln in proc.log_lines() if ln.get("event") == "rejected"}
            sent, acked = _acked_topics(debug_broker, "streamproc-test-1")
            assert sent, "the broker's debug log shows no delivery"
            assert 0 < len(first) < n, "SIGTERM was not mid-burst"
            assert set(acked) <= first, sorted(set(acked) - first)[:5]  # acked => processed
            assert first <= set(acked), sorted(first - set(acked))[:5]  # processed => acked
            gateway.send([])  # the gateway's publishes are all with the broker by now
            proc.start()
            deadline = time.monotonic() + 30
            while True:
                seen = {ln["topic"] for ln in proc.log_lines() if ln.get("event") == "rejected"}
                if seen >= set(topics) or time.monotonic() > deadline:
                    break
                time.sleep(0.2)
            assert set(topics) - seen == set(), "messages neither processed nor redelivered"
        finally:
            gateway.close()
            proc.close()


class TestExitStatus:
    @pytest.mark.parametrize("audit_ok", [True, False])
    def test_sigterm_exit_says_whether_audit_written(
        self, broker: MosquittoBroker, tmp_path: Path, audit_ok: bool
    ) -> None:
        """An alarm raised and published, then SIGTERM: exit 0 when the audit log has it;
        exit 1 (and an error line) when the audit log could not be written (here its path
        is a directory), instead of main's 0."""
        env = dict(SHORT_HOLD)
        if not audit_ok:
            bad = tmp_path / "audit-is-a-directory"
            bad.mkdir()
            env["STREAMPROC_AUDIT_DB"] = str(bad)
        proc = ServiceProcess(broker, tmp_path, env=env).start()
        gateway = Publisher(broker)
        try:
            with Subscriber(broker, "icu/+/+/alarms/hypotension") as sub:
                gateway.send(episode_until_alarm("bed01", seed=1))
                sub.wait_for(lambda m: bool(m.payload), timeout=20)
            rc = proc.terminate()
            events = {ln.get("event") for ln in proc.log_lines()}
            if audit_ok:
                assert rc == 0, proc.log_tail()
                assert "audit_unwritten" not in events
            else:
                assert rc == 1, proc.log_tail()
                assert "audit_unwritten" in events
        finally:
            gateway.close()
            proc.close()
