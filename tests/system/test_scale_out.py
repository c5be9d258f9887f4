"""Scale-out: two real ``streamproc run`` instances split the care units of one Mosquitto.

Both instances are given the same unit list and shards ``0/2`` and ``1/2``; the units are
chosen so that each shard owns two, and every unit has a 60/40 patient on norepinephrine.
Every wait is bounded. See docs/scaling.md.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import pytest

from simulators.scenario import Scenario, load_scenario, render_timed, scenario_dir
from streamproc.shell.audit import AuditLog, AuditRow
from streamproc.shell.sharding import owner
from tests.system.broker import MosquittoBroker, Received, Subscriber
from tests.system.service_helpers import Publisher, ServiceProcess, alarm, is_alarm

ALARMS = "icu/+/+/alarms/#"
UNITS = ("ward1", "ward2", "ward3", "ward4")
OWNER = {unit: owner(unit, 2) for unit in UNITS}  # ward1, ward4 -> 0; ward2, ward3 -> 1
#: the 60/40 alarm is active well before this scenario time; the rest follows the kill
SPLIT_S = 150.0
WAIT_S = 30.0  # bound on every wait for an alarm or for ingestion


def patient(unit: str, bed: str, t0: float) -> Scenario:
    """The 60/40 patient on norepinephrine (config/scenarios/ne_60_40.toml) in ``unit/bed``."""
    sc = load_scenario(scenario_dir() / "ne_60_40.toml")
    return dataclasses.replace(sc, unit=unit, bed=bed, t0=t0)


def lines_of(scenarios: Iterable[Scenario], lo: float, hi: float) -> list[dict[str, Any]]:
    """The recording lines of ``scenarios`` sent in scenario time [lo, hi), interleaved."""
    timed = [(t, k, line) for sc in scenarios for t, k, line in render_timed(sc) if lo <= t < hi]
    timed.sort(key=lambda e: (e[0], e[1]))
    return [line for _, _, line in timed]


def abp_count(lines: Iterable[dict[str, Any]], units: Iterable[str]) -> int:
    wanted = tuple(f"icu/{u}/" for u in units)
    return sum(1 for ln in lines if ln["topic"].endswith("/abp") and ln["topic"].startswith(wanted))


def wait_until(pred: Callable[[], bool], what: str, timeout: float = WAIT_S) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: not within {timeout:g} s")
        time.sleep(0.1)


def audit_rows(path: Path) -> list[AuditRow]:
    with AuditLog(path, readonly=True) as log:
        return log.query()


def hypotension(messages: Iterable[Received], unit: str, bed: str) -> list[dict[str, Any]]:
    pred = is_alarm("hypotension", unit=unit, bed=bed)
    return [alarm(m) for m in messages if pred(m)]


def ack(pub: Publisher, unit: str, bed: str, alarm_id: str, by: str) -> None:
    body = {"ts": time.time(), "alarm_id": alarm_id, "by": by}
    pub.raw(f"icu/{unit}/{bed}/ack", json.dumps(body).encode())


@pytest.fixture
def shards(broker: MosquittoBroker, tmp_path: Path) -> Iterator[list[ServiceProcess]]:
    """Two instances, shard 0/2 and 1/2 of the same unit list, each with its own workdir."""
    procs = []
    for index in (0, 1):
        workdir = tmp_path / f"shard-{index}"
        workdir.mkdir()
        args = ["--units", ",".join(UNITS), "--shard", f"{index}/2"]
        procs.append(ServiceProcess(broker, workdir, instance=f"shard-{index}", args=args))
    try:
        for proc in procs:
            proc.start()
        yield procs
    finally:
        for proc in procs:
            proc.close()


class TestTwoInstances:
    def test_units_are_split(self) -> None:
        """The chosen units give each shard two of the four (so both carry alarming beds)."""
        assert sorted(u for u in UNITS if OWNER[u] == 0) == ["ward1", "ward4"]
        assert sorted(u for u in UNITS if OWNER[u] == 1) == ["ward2", "ward3"]

    def test_split_kill_restart_no_alarm_lost(
        self, broker: MosquittoBroker, shards: list[ServiceProcess], tmp_path: Path
    ) -> None:
        """Four units, one 60/40 bed each, over two instances: each bed's alarm is raised
        once, by the owner of its unit, and the broker delivers each instance only its own
        units. Shard 1 is then SIGKILLed mid-episode; while it is down the episodes go on,
        a bed of its units falls, and an alarm of each shard is acknowledged. Shard 1 comes
        back on another host (a fresh audit database): it adopts its units' open alarms from
        the retained topics only (same alarm_id; the queued ack continues that alarm), raises
        the fallen bed's alarm, and nothing is lost or raised twice. Shard 0 is unaffected."""
        s0, s1 = shards
        t0 = time.time() - 240.0  # the episodes end now, as from a live gateway
        beds = [patient(unit, "bed01", t0) for unit in UNITS]
        late = patient("ward3", "bed09", t0)  # falls while shard 1 is down
        before = lines_of(beds, 0.0, SPLIT_S)
        after = lines_of(beds, SPLIT_S, 1e9) + lines_of([late], 0.0, 1e9)
        own = {i: [u for u in UNITS if OWNER[u] == i] for i in (0, 1)}

        observer = Subscriber(broker, ALARMS, auto_reconnect=True, timeout=10).start()
        gateway = Publisher(broker)
        try:
            # -- 1. both up: every bed's alarm, raised by its unit's owner only
            gateway.send(before)
            first: dict[str, str] = {}
            for unit in UNITS:
                msg = observer.wait_for(
                    is_alarm("hypotension", state="active", unit=unit, bed="bed01"), WAIT_S
                )
                first[unit] = alarm(msg)["alarm_id"]
            for i, proc in enumerate(shards):
                n = abp_count(before, own[i])
                wait_until(
                    lambda p=proc, n=n: p.metric("streamproc_messages_in_total", kind="abp") >= n,
                    f"shard {i} ingested {n} chunks",
                )
                # the broker partitions: not one message of the other shard's units arrived
                assert proc.metric("streamproc_messages_in_total", kind="abp") == n
                assert proc.metric("streamproc_messages_foreign_total") == 0
                rows = audit_rows(proc.audit_db)
                assert {r.unit for r in rows} == set(own[i])
                for unit in own[i]:
                    raised = [r for r in rows if r.unit == unit and r.kind == "hypotension"]
                    assert [r.trigger for r in raised].count("raised") == 1
                    assert {r.alarm_id for r in raised} == {first[unit]}
            with Subscriber(broker, "icu/_status/+") as status:
                for i in (0, 1):
                    st = json.loads(
                        status.wait_for(lambda m, i=i: m.topic.endswith(f"shard-{i}")).payload
                    )
                    assert (st["state"], st["shard"], st["units"]) == ("online", f"{i}/2", own[i])

            # -- 2. shard 1 SIGKILLed mid-episode; the ward goes on
            s1.kill()
            old_audit = s1.audit_db
            gateway.send(after)  # queued by the broker for shard 1's persistent session
            ack(gateway, "ward1", "bed01", first["ward1"], "station-0")
            ack(gateway, "ward2", "bed01", first["ward2"], "station-1")
            acked = observer.wait_for(
                is_alarm("hypotension", state="acknowledged", unit="ward1", bed="bed01"), WAIT_S
            )
            assert alarm(acked)["alarm_id"] == first["ward1"]  # shard 0 answers while 1 is down
            assert not hypotension(observer.messages, "ward3", "bed09")  # nobody else raised it
            down = [m.topic for m in observer.messages]

            # -- 3. shard 1 restarts on a fresh host: its state comes from the retained topics
            s1.audit_db = s1.workdir / "audit-new-host.sqlite3"
            s1.start()
            acked = observer.wait_for(
                is_alarm("hypotension", state="acknowledged", unit="ward2", bed="bed01"), WAIT_S
            )
            assert alarm(acked)["alarm_id"] == first["ward2"]
            observer.wait_for(
                is_alarm("hypotension", state="active", unit="ward3", bed="bed09"), WAIT_S
            )
            n_after = abp_count(after, own[1])
            wait_until(
                lambda: s1.metric("streamproc_messages_in_total", kind="abp") >= n_after,
                f"restarted shard 1 ingested the {n_after} chunks sent while it was down",
            )
            n0 = abp_count(before + after, own[0])
            wait_until(
                lambda: s0.metric("streamproc_messages_in_total", kind="abp") >= n0,
                f"shard 0 ingested all {n0} of its chunks",
            )
            time.sleep(1.0)  # anything raised twice would arrive now
            seen = observer.messages
        finally:
            gateway.close()
            observer.stop()

        restored = [ln for ln in s1.log_lines() if ln.get("event") == "restored"][-1]
        # only its own units' retained alarms were read, and each of its beds' alarm adopted
        assert restored["from_retained"] == len({t for t in down if t.split("/")[1] in own[1]})
        assert restored["open_alarms"] >= len(own[1])

        # no alarm lost, none raised twice: one alarm_id per bed, the first one, still open
        for unit in UNITS:
            history = hypotension(seen, unit, "bed01")
            assert {a["alarm_id"] for a in history} == {first[unit]}, unit
            assert history[-1]["state"] in ("active", "acknowledged"), unit
        late_history = hypotension(seen, "ward3", "bed09")
        assert len({a["alarm_id"] for a in late_history}) == 1
        with Subscriber(broker, ALARMS) as retained:
            retained.wait_until(
                lambda ms: (
                    len(hypotension(ms, "ward3", "bed09")) == 1
                    and all(len(hypotension(ms, u, "bed01")) == 1 for u in UNITS)
                ),
                timeout=10,
            )
            assert all(m.retain for m in retained.messages)

        # the audit trails: shard 0 raised only its beds, once; shard 1's two lives together
        # raised each of its beds once, the new host none of the adopted ones
        rows0 = audit_rows(s0.audit_db)
        rows1_old, rows1_new = audit_rows(old_audit), audit_rows(s1.audit_db)
        assert {r.unit for r in rows0} == set(own[0])
        assert {r.unit for r in rows1_old + rows1_new} == set(own[1])
        for unit in UNITS:
            rows = [r for r in rows0 + rows1_old + rows1_new if r.unit == unit]
            hypo = [r for r in rows if r.kind == "hypotension" and r.bed == "bed01"]
            assert [r.trigger for r in hypo].count("raised") == 1, unit
        assert not [r for r in rows1_new if r.trigger == "raised" and r.bed == "bed01"]
        late_rows = [r for r in rows1_new if (r.bed, r.kind) == ("bed09", "hypotension")]
        assert [r.trigger for r in late_rows].count("raised") == 1

        # shard 0 never noticed: same process, never reconnected, nothing foreign received
        assert s0.proc is not None
        assert s0.proc.poll() is None
        assert s0.metric("streamproc_broker_reconnects_total") == 0
        assert s0.metric("streamproc_messages_in_total", kind="abp") == n0
        assert s0.metric("streamproc_messages_foreign_total") == 0


class TestReconfiguration:
    def test_resumed_session_drops_filters_of_units_no_longer_served(
        self, broker: MosquittoBroker, tmp_path: Path
    ) -> None:
        """One instance (one persistent session) started four times: all units; --units
        ward1,ward2; the same list with --shard 0/2 (owns ward1); --shard 0/2 alone. The
        session keeps old subscriptions and Mosquitto delivers once per matching filter, so
        each start drops the filters it no longer wants (the all-units ones, a listed unit
        another shard owns, the units its retained status says the previous run served):
        every message arrives once, and ward2's not at all while it is not wanted."""
        assert (OWNER["ward1"], OWNER["ward2"]) == (0, 1)
        proc = ServiceProcess(broker, tmp_path, instance="reconf")
        phases: list[tuple[list[str], float, float]] = [  # args, vitals in, foreign
            ([], 2, 0),  # every unit: both vitals processed
            (["--units", "ward1,ward2"], 2, 0),
            (["--units", "ward1,ward2", "--shard", "0/2"], 1, 0),  # ward2 not delivered
            (["--shard", "0/2"], 1, 1),  # all delivered (once), ward2 dropped here
        ]
        gateway = Publisher(broker)
        try:
            for args, expected, foreign in phases:
                proc.args = args
                proc.start()
                try:
                    for unit in ("ward2", "ward1"):  # ward1 last: once it is in, ward2 was due
                        line = {"ts": time.time(), "source": "nibp", "sbp": 120, "dbp": 70}
                        gateway.raw(f"icu/{unit}/bed01/vitals", json.dumps(line).encode())
                    wait_until(
                        lambda n=expected: (
                            proc.metric("streamproc_messages_in_total", kind="vitals") >= n
                        ),
                        f"{args}: {expected} vitals processed",
                    )
                    time.sleep(0.3)
                    assert proc.metric("streamproc_messages_in_total", kind="vitals") == expected
                    assert proc.metric("streamproc_messages_foreign_total") == foreign, args
                finally:
                    assert proc.terminate() == 0
        finally:
            gateway.close()
            proc.close()


class TestShardWithoutUnitList:
    def test_each_instance_reads_all_and_serves_its_share(
        self, broker: MosquittoBroker, tmp_path: Path
    ) -> None:
        """With --shard but no --units, both instances receive every unit (the cost of not
        listing them) and each alarms only for the units its shard owns; the others are
        counted as foreign, never as rejected."""
        env = {"STREAMPROC_HYPOTENSION_HOLD_S": "2", "STREAMPROC_HYPOTENSION_CRITICAL_HOLD_S": "60"}
        procs = []
        try:
            for index in (0, 1):
                workdir = tmp_path / f"shard-{index}"
                workdir.mkdir()
                procs.append(
                    ServiceProcess(
                        broker,
                        workdir,
                        instance=f"h{index}",
                        env=env,
                        args=["--shard", f"{index}/2"],
                    ).start()
                )
            with Subscriber(broker, ALARMS) as sub:
                gateway = Publisher(broker)
                try:
                    gateway.send(
                        {
                            "topic": f"icu/{unit}/bed01/vitals",
                            "payload": {"ts": time.time(), "source": "nibp", "sbp": 60, "dbp": 40},
                        }
                        for unit in UNITS
                    )
                finally:
                    gateway.close()
                for unit in UNITS:
                    sub.wait_for(is_alarm("hypotension", state="active", unit=unit), WAIT_S)
            for index, proc in enumerate(procs):
                mine = [u for u in UNITS if OWNER[u] == index]
                wait_until(
                    lambda p=proc: p.metric("streamproc_messages_foreign_total") >= 2,
                    f"h{index} counted the other shard's messages",
                )
                assert proc.metric("streamproc_messages_in_total", kind="vitals") == len(mine)
                assert proc.metric("streamproc_messages_foreign_total") == len(UNITS) - len(mine)
                assert proc.metric("streamproc_messages_rejected_total", reason="bad_topic") == 0
                rows = audit_rows(proc.audit_db)
                assert {r.unit for r in rows if r.trigger == "raised"} == set(mine)
                assert not [ln for ln in proc.log_lines() if ln.get("event") == "rejected"]
        finally:
            for proc in procs:
                proc.close()
