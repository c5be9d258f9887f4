"""Fault injection against a real Mosquitto and a real ``streamproc run`` process.

Each ``fault_*`` function builds its own broker and processor under ``workdir``,
plays the 60/40 episode (``config/scenarios/ne_60_40.toml``, bed ward7/bed03,
with live timestamps) through one fault, and returns a :class:`FaultResult`:

- the expected alarm (hypotension, active) counts as *delivered* only if it
  reached a subscriber **and** is retained on the broker afterwards (a fresh
  subscriber reads it back with the retain flag);
- *duplicate ids* counts every alarm id beyond the first seen for the episode
  (published payloads and the retained state) and every ``raised`` beyond the
  first (service log lines, and audit rows when the audit db is usable);
- *recovery_s* is the time from the end of the fault to the episode's alarm at
  a subscriber (what each fault calls "the end" is in ``recovery_what``).

The tests in ``test_faults.py`` assert on these results; ``scripts/faults.py``
runs each fault N times and tabulates them. Every wait is bounded.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
import math
import os
import random
import re
import resource
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from simulators.publisher import RETAINED_KINDS, MqttSink, kind_of, publish_stream
from simulators.scenario import (
    Scenario,
    load_scenario,
    merge,
    render_timed,
    scenario_dir,
    to_jsonl,
)
from streamproc.core.protocol.settings import Settings
from streamproc.shell.audit import AuditError, AuditLog
from streamproc.shell.config import ServiceSettings
from streamproc.shell.service.audit_link import AUDIT_RETRY_S
from tests.system.broker import MosquittoBroker, Received, Subscriber
from tests.system.service_helpers import Publisher, ServiceProcess, alarm, is_alarm

__all__ = [
    "FAULTS",
    "FaultResult",
    "StalledClient",
    "fault_audit_runtime",
    "fault_audit_unusable",
    "fault_broker_kill",
    "fault_clock_jump",
    "fault_hostile_input",
    "fault_processor_kill",
    "fault_slow_subscriber",
    "fault_stall",
    "markdown_table",
]

ALARMS = "icu/+/+/alarms/#"
UNIT, BED = "ward7", "bed03"
ALARM_TOPIC = f"icu/{UNIT}/{BED}/alarms/hypotension"
#: Scenario time (s) before which the 60/40 bed is still normal (the fall is 20-40 s,
#: the alarm is expected 40-90 s): data before it is sent before the fault.
BEFORE_FALL_S = 20.0
ALARM_TIMEOUT_S = 45.0
#: How long a processor may take to come up (its interpreter, imports and compiled code
#: load in 1.5-3 s on an idle host, 20+ s on one shared with a dozen busy processes).
STARTUP_S = 60.0


@dataclass
class FaultResult:
    """What one run of one fault showed."""

    fault: str
    recovery_what: str
    expected: int = 1
    delivered: int = 0
    duplicate_ids: int = 0
    #: ``cleared`` transitions the clean input does not give: an episode that must stay
    #: open cleared, a clear stamped before its raise or earlier than the clean stream's.
    false_cleared: int = 0
    recovery_s: float | None = None
    problems: list[str] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def lost(self) -> int:
        return self.expected - self.delivered

    @property
    def ok(self) -> bool:
        return (
            not self.problems
            and self.lost == 0
            and self.duplicate_ids == 0
            and self.false_cleared == 0
        )

    def summary(self) -> str:
        rec = "n/a" if self.recovery_s is None else f"{self.recovery_s:.2f} s"
        extra = ", ".join(f"{k}={v}" for k, v in self.details.items())
        return (
            f"{self.fault}: delivered {self.delivered}/{self.expected}, duplicate ids "
            f"{self.duplicate_ids}, false cleared {self.false_cleared}, recovery "
            f"({self.recovery_what}) {rec}; {extra}"
            + (f"; PROBLEMS: {self.problems}" if self.problems else "")
        )


# -- building blocks ----------------------------------------------------------


def headline(**changes: Any) -> Scenario:
    """The 60/40 patient on NE with live timestamps (its last sample is 'now')."""
    sc = load_scenario(scenario_dir() / "ne_60_40.toml")
    return dataclasses.replace(sc, t0=time.time() - sc.duration_s, **changes)


def timed_lines(sc: Scenario) -> list[tuple[float, dict[str, Any]]]:
    return [(t, line) for t, _, line in render_timed(sc)]


def split(
    timed: Sequence[tuple[float, dict[str, Any]]], at_s: float
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Recording lines sent before scenario time ``at_s``, and the rest."""
    return [ln for t, ln in timed if t < at_s], [ln for t, ln in timed if t >= at_s]


def wait_until(pred: Callable[[], bool], timeout: float, what: str, step: float = 0.05) -> float:
    """Poll ``pred`` until true; the seconds it took. ``TimeoutError`` naming ``what``."""
    start = time.monotonic()
    deadline = start + timeout
    while True:
        with contextlib.suppress(OSError):
            if pred():
                return time.monotonic() - start
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: not within {timeout:g} s")
        time.sleep(step)


def metric_sum(service: ServiceProcess, name: str) -> float:
    """The sum of every sample of ``name`` (all label sets) on /metrics."""
    total = 0.0
    for line in service.metrics().splitlines():
        if line.startswith("#"):
            continue
        key, _, value = line.rpartition(" ")
        if key == name or key.startswith(name + "{"):
            total += float(value)
    return total


def wait_accounted(service: ServiceProcess, total: int, timeout: float) -> tuple[float, float]:
    """Wait until messages in + rejected reach ``total``; returns (in, rejected)."""

    def counts() -> tuple[float, float]:
        return (
            metric_sum(service, "streamproc_messages_in_total"),
            metric_sum(service, "streamproc_messages_rejected_total"),
        )

    wait_until(lambda: sum(counts()) >= total, timeout, f"in + rejected reach {total}")
    return counts()


def healthz(service: ServiceProcess) -> tuple[int, dict[str, Any]]:
    """/healthz's HTTP status and body."""
    url = f"http://127.0.0.1:{service.metrics_port}/healthz"
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:
            return resp.status, dict(json.loads(resp.read()))
    except urllib.error.HTTPError as exc:
        return exc.code, dict(json.loads(exc.read()))


def connected(service: ServiceProcess) -> bool:
    return bool(service.health().get("broker_connected"))


def abp_count(lines: Sequence[Mapping[str, Any]]) -> int:
    return sum(1 for ln in lines if str(ln["topic"]).endswith("/abp"))


def wait_ingested(service: ServiceProcess, n_abp: int, timeout: float = 20.0) -> float:
    return wait_until(
        lambda: service.metric("streamproc_messages_in_total", kind="abp") >= n_abp,
        timeout,
        f"processor ingested {n_abp} abp chunks",
    )


ACTIVE = is_alarm("hypotension", state="active", unit=UNIT, bed=BED)


class Rig:
    """A broker, a processor, a gateway and an alarm observer under one workdir."""

    def __init__(
        self,
        workdir: Path,
        *,
        mosquitto_bin: Path | None = None,
        env: Mapping[str, str] | None = None,
        log_pipe: bool = False,
        broker_config: Sequence[str] = (),
    ) -> None:
        workdir.mkdir(parents=True, exist_ok=True)
        self.workdir = workdir
        self.broker = MosquittoBroker(
            binary=mosquitto_bin, workdir=workdir / "mosquitto", extra_config=broker_config
        )
        self.service = ServiceProcess(self.broker, workdir, env=env, log_pipe=log_pipe)
        self._closers: list[Callable[[], None]] = []

    def start(self) -> Rig:
        self.broker.start()
        self._closers.append(self.broker.close)
        self.service.start(wait=False)
        self._closers.append(self.service.close)
        self.service.wait_healthy(STARTUP_S)
        return self

    def on_close(self, closer: Callable[[], None]) -> None:
        """Run ``closer`` at :meth:`close` (before the processor and broker stop)."""
        self._closers.append(closer)

    def gateway(self) -> Publisher:
        pub = Publisher(self.broker)
        self._closers.append(lambda: _quiet(pub.close))
        return pub

    def observer(self, topic: str | Sequence[str] = ALARMS) -> Subscriber:
        sub = Subscriber(self.broker, topic, auto_reconnect=True, timeout=10).start()
        self._closers.append(sub.stop)
        return sub

    def close(self) -> None:
        for closer in reversed(self._closers):
            with contextlib.suppress(Exception):
                closer()
        self._closers.clear()


def _quiet(fn: Callable[[], None]) -> None:
    with contextlib.suppress(Exception):
        fn()


@contextlib.contextmanager
def rig(
    workdir: Path,
    *,
    mosquitto_bin: Path | None = None,
    env: Mapping[str, str] | None = None,
    log_pipe: bool = False,
    broker_config: Sequence[str] = (),
) -> Iterator[Rig]:
    r = Rig(
        workdir,
        mosquitto_bin=mosquitto_bin,
        env=env,
        log_pipe=log_pipe,
        broker_config=broker_config,
    )
    try:
        yield r.start()
    finally:
        r.close()


def check_episode(
    res: FaultResult,
    r: Rig,
    seen: Sequence[Received],
    *,
    audit: bool = True,
) -> None:
    """Fill delivered / duplicate_ids from what the subscribers saw, the broker retains,
    the service's log and (with ``audit``) its audit db."""
    mine = [alarm(m) for m in seen if m.topic == ALARM_TOPIC and m.payload]
    active = [a for a in mine if a.get("state") == "active"]
    ids = {a["alarm_id"] for a in mine}
    retained: dict[str, Any] | None = None
    try:
        with Subscriber(r.broker, ALARM_TOPIC, timeout=10) as late:
            msg = late.wait_for(lambda m: bool(m.payload), timeout=10)
        if msg.retain:
            retained = alarm(msg)
            ids.add(retained["alarm_id"])
        else:
            res.problems.append("the alarm topic's state came back without the retain flag")
    except TimeoutError:
        res.problems.append("no retained alarm state on the broker after the fault")
    if active and retained is not None and retained.get("state") in ("active", "acknowledged"):
        res.delivered = 1
    elif not active:
        res.problems.append("the episode's active alarm never reached a subscriber")
    elif retained is not None:
        res.problems.append(f"retained state is {retained.get('state')!r}, not active")
    raised_log = [
        ln
        for ln in r.service.log_lines()
        if ln.get("event") == "alarm"
        and ln.get("kind") == "hypotension"
        and ln.get("bed") == BED
        and ln.get("trigger") == "raised"
    ]
    # the 60/40 episode never clears: any cleared transition of it is a false one
    cleared = {
        (a["alarm_id"], round(float(a["ts"]), 2)) for a in mine if a.get("state") == "cleared"
    }
    if retained is not None and retained.get("state") == "cleared":
        cleared.add((retained["alarm_id"], round(float(retained["ts"]), 2)))
    raised_audit = 0
    if audit:
        try:
            rows = AuditLog(r.service.audit_db, readonly=True).query(
                unit=UNIT, bed=BED, kind="hypotension"
            )
        except AuditError as exc:
            res.problems.append(f"audit db unreadable: {exc}")
            rows = []
        raised_audit = [row.trigger for row in rows].count("raised")
        ids |= {row.alarm_id for row in rows}
        cleared |= {(row.alarm_id, round(row.ts, 2)) for row in rows if row.state == "cleared"}
        res.details["audit_raised"] = raised_audit
        if raised_audit == 0:
            res.problems.append("no 'raised' row in the audit db")
    res.details["log_raised"] = len(raised_log)
    res.details["alarm_ids"] = len(ids)
    res.duplicate_ids = max(len(ids) - 1, len(raised_log) - 1, raised_audit - 1, 0)
    res.false_cleared = len(cleared)


def _alarm_after(sub: Subscriber, t_ref: float, timeout: float = ALARM_TIMEOUT_S) -> float:
    """Wait for the episode's active alarm at ``sub``; seconds since ``t_ref`` (monotonic)."""
    sub.wait_for(ACTIVE, timeout=timeout)
    return time.monotonic() - t_ref


def _run(res: FaultResult, body: Callable[[], None]) -> FaultResult:
    """Run a fault's body; a timeout or a dead process becomes a recorded problem."""
    try:
        body()
    except (TimeoutError, RuntimeError, OSError) as exc:
        res.problems.append(f"{type(exc).__name__}: {str(exc)[:600]}")
    return res


# -- 1. broker SIGKILL ----------------------------------------------------------


def fault_broker_kill(workdir: Path, *, mosquitto_bin: Path | None = None) -> FaultResult:
    """The broker is SIGKILLed mid-episode (before the fall), down 1 s, restarted on the same
    port; the rest of the episode is published after the restart."""
    res = FaultResult("broker SIGKILL + restart", "broker restart -> alarm at subscriber")

    def body() -> None:
        timed = timed_lines(headline())
        before, after = split(timed, BEFORE_FALL_S + 10)
        with rig(workdir, mosquitto_bin=mosquitto_bin) as r:
            r.gateway().send(before)
            wait_ingested(r.service, abp_count(before))
            r.broker.kill()
            time.sleep(1.0)
            r.broker.start()
            t_end = time.monotonic()
            obs = r.observer()
            res.details["reconnect_s"] = round(
                wait_until(lambda: connected(r.service), 30, "processor reconnected"), 2
            )
            r.gateway().send(after)
            res.recovery_s = _alarm_after(obs, t_end)
            res.details["reconnects"] = int(r.service.metric("streamproc_broker_reconnects_total"))
            time.sleep(0.5)
            check_episode(res, r, obs.messages)

    return _run(res, body)


# -- 2. processor SIGKILL --------------------------------------------------------


def fault_processor_kill(workdir: Path, *, mosquitto_bin: Path | None = None) -> FaultResult:
    """The processor is SIGKILLed before the fall; the fall is published while it is down
    (queued by the broker for its persistent session); it is restarted."""
    res = FaultResult("processor SIGKILL + restart", "processor restart -> alarm at subscriber")

    def body() -> None:
        timed = timed_lines(headline())
        before, after = split(timed, BEFORE_FALL_S + 10)
        with rig(workdir, mosquitto_bin=mosquitto_bin) as r:
            obs = r.observer()
            gw = r.gateway()
            gw.send(before)
            wait_ingested(r.service, abp_count(before))
            r.service.kill()
            gw.send(after)  # acknowledged by the broker, queued for the offline session
            t_end = time.monotonic()
            r.service.start(wait=False)
            res.recovery_s = _alarm_after(obs, t_end)
            res.details["healthy_s"] = round(
                time.monotonic() - t_end + wait_until(lambda: connected(r.service), 30, "up"), 2
            )
            # everything sent while it was down was processed (abp counter restarts at 0)
            wait_ingested(r.service, abp_count(after))
            res.details["abp_after_restart"] = int(
                r.service.metric("streamproc_messages_in_total", kind="abp")
            )
            time.sleep(0.5)
            check_episode(res, r, obs.messages)

    return _run(res, body)


# -- 3. network stall (SIGSTOP broker) -----------------------------------------------


def fault_stall(
    workdir: Path, *, stall_s: float = 12.0, mosquitto_bin: Path | None = None
) -> FaultResult:
    """The broker is SIGSTOPped for ``stall_s`` (sockets open, nothing answered) while the
    fall is published; then SIGCONT."""
    res = FaultResult(f"network stall {stall_s:g} s (SIGSTOP broker)", "SIGCONT -> alarm")

    def body() -> None:
        timed = timed_lines(headline())
        before, after = split(timed, BEFORE_FALL_S + 10)
        with rig(workdir, mosquitto_bin=mosquitto_bin) as r:
            obs = r.observer()
            gw = r.gateway()
            gw.send(before)
            wait_ingested(r.service, abp_count(before))
            reconnects0 = r.service.metric("streamproc_broker_reconnects_total")
            t_pause = time.monotonic()
            r.broker.pause()
            infos = []
            for line in after:  # into the stalled broker: queued by the gateway's client/TCP
                data = json.dumps(line["payload"]).encode()
                infos.append(gw.client.publish(line["topic"], data, qos=1))
            drop_s: float | None = None
            while time.monotonic() - t_pause < stall_s:
                if drop_s is None and not connected(r.service):
                    drop_s = time.monotonic() - t_pause
                time.sleep(0.25)
            r.broker.resume()
            t_end = time.monotonic()
            res.recovery_s = _alarm_after(obs, t_end)
            for info in infos:
                info.wait_for_publish(30)
            res.details["reconnected_s"] = round(
                time.monotonic() - t_end + wait_until(lambda: connected(r.service), 60, "up"), 2
            )
            res.details["drop_detected_s"] = None if drop_s is None else round(drop_s, 1)
            res.details["reconnects"] = int(
                r.service.metric("streamproc_broker_reconnects_total") - reconnects0
            )
            wait_ingested(r.service, abp_count(before) + abp_count(after), 30)
            time.sleep(0.5)
            check_episode(res, r, obs.messages)

    return _run(res, body)


# -- 4. slow subscriber ----------------------------------------------------------------


class StalledClient:
    """A raw MQTT 3.1.1 client that subscribes (QoS 1) and then stops reading its socket.

    Its receive buffer is tiny, so the broker's writes to it back up at once. ``drain``
    later reads everything (acknowledging each QoS 1 PUBLISH) until a predicate holds.
    """

    def __init__(self, host: str, port: int, topic: str, *, rcvbuf: int = 2048) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.sock.settimeout(10)
        self.sock.connect((host, port))
        self._buf = bytearray()
        cid = f"slow-{time.monotonic_ns() % 10**9}".encode()
        # CONNECT: protocol "MQTT" level 4, clean session, keepalive 0 (never expires)
        var = b"\x00\x04MQTT\x04\x02\x00\x00" + len(cid).to_bytes(2, "big") + cid
        self.sock.sendall(b"\x10" + _varint(len(var)) + var)
        ptype, _, body = self._packet()
        if ptype != 2 or body[1] != 0:
            raise ConnectionRefusedError(f"CONNACK {body!r}")
        t = topic.encode()
        sub = b"\x00\x01" + len(t).to_bytes(2, "big") + t + b"\x01"
        self.sock.sendall(b"\x82" + _varint(len(sub)) + sub)
        ptype, _, body = self._packet()
        if ptype != 9 or body[-1] > 2:
            raise PermissionError(f"SUBACK {body!r}")
        self.received: list[Received] = []

    def _fill(self, n: int) -> None:
        while len(self._buf) < n:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("the broker closed the slow client's connection")
            self._buf += chunk

    def _packet(self) -> tuple[int, int, bytes]:
        self._fill(2)
        length, mult, i = 0, 1, 1
        while True:
            self._fill(i + 1)
            byte = self._buf[i]
            length += (byte & 0x7F) * mult
            mult *= 128
            i += 1
            if not byte & 0x80:
                break
        self._fill(i + length)
        head = self._buf[0]
        body = bytes(self._buf[i : i + length])
        del self._buf[: i + length]
        return head >> 4, head & 0x0F, body

    def buffered(self) -> int:
        """Bytes waiting, unread, in the client's socket (at most its receive buffer)."""
        try:
            return len(self.sock.recv(1 << 20, socket.MSG_PEEK | socket.MSG_DONTWAIT))
        except BlockingIOError:
            return 0

    def drain(self, until: Callable[[Received], bool], timeout: float) -> Received:
        """Read (and PUBACK) until a PUBLISH matching ``until`` arrives."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            ptype, flags, body = self._packet()
            if ptype != 3:
                continue
            qos = (flags >> 1) & 3
            tlen = int.from_bytes(body[:2], "big")
            topic = body[2 : 2 + tlen].decode()
            pos = 2 + tlen
            if qos:
                self.sock.sendall(b"\x40\x02" + body[pos : pos + 2])
                pos += 2
            msg = Received(topic, body[pos:], bool(flags & 1), qos)
            self.received.append(msg)
            if until(msg):
                return msg
        raise TimeoutError(f"slow client: no matching message in {timeout:g} s")

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.sendall(b"\xe0\x00")
        self.sock.close()


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n % 128, n // 128
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def fault_slow_subscriber(
    workdir: Path, *, other_beds: int = 5, mosquitto_bin: Path | None = None
) -> FaultResult:
    """A subscriber to everything (``icu/#``) stops reading while a ward of beds is played:
    ingest, the other beds' summaries and the fast subscriber are unaffected; the slow
    client, once it reads again, gets the alarm."""
    res = FaultResult("slow subscriber (stops reading)", "slow client reads again -> alarm")

    def body() -> None:
        sc = headline()
        stable = load_scenario(scenario_dir() / "stable.toml")
        others = [
            dataclasses.replace(stable, bed=f"bed{40 + i}", seed=100 + i, t0=sc.t0)
            for i in range(other_beds)
        ]
        lines = merge(sc, *others)
        beds = {sc.bed, *(o.bed for o in others)}
        with rig(workdir, mosquitto_bin=mosquitto_bin) as r:
            slow = StalledClient(r.broker.host, r.broker.port, "icu/#")
            r.on_close(slow.close)
            obs = r.observer()
            sums = r.observer("icu/+/+/summary")
            t0 = time.monotonic()
            r.gateway().send(lines)
            res.details["fast_alarm_s"] = round(_alarm_after(obs, t0), 2)
            res.details["ingest_s"] = round(
                time.monotonic() - t0 + wait_ingested(r.service, abp_count(lines), 30), 2
            )
            wait_until(
                lambda: {m.topic.split("/")[2] for m in sums.messages} >= beds,
                20,
                f"summaries of all {len(beds)} beds",
            )
            status, health = healthz(r.service)
            res.details["outbox"] = health.get("outbox")
            if status != 200 or health.get("ingress", 0) > 1000:
                res.problems.append(f"processor unhealthy with a slow subscriber: {health}")
            res.details["slow_backlog_msgs"] = len(lines)
            res.details["slow_socket_bytes"] = slow.buffered()
            t_end = time.monotonic()
            slow_msg = slow.drain(ACTIVE, timeout=60)
            res.recovery_s = time.monotonic() - t_end
            res.details["slow_read_msgs"] = len(slow.received)
            seen = [*obs.messages, slow_msg]
            check_episode(res, r, seen)

    return _run(res, body)


# -- 5. audit log unusable ---------------------------------------------------------------


def fault_audit_unusable(
    workdir: Path, *, mosquitto_bin: Path | None = None, path: Path | None = None
) -> FaultResult:
    """STREAMPROC_AUDIT_DB is a path that cannot be a database (an existing directory by
    default; ``/dev/full/audit.sqlite3`` also works): the processor starts, alarms, and says
    so loudly (log, metric, /healthz 503 degraded)."""
    res = FaultResult("audit db unusable", "episode published -> alarm")

    def body() -> None:
        bad = path or workdir / "audit-is-a-directory"
        if path is None:
            bad.mkdir(parents=True, exist_ok=True)
        with rig(workdir, mosquitto_bin=mosquitto_bin, env={"STREAMPROC_AUDIT_DB": str(bad)}) as r:
            status, health = healthz(r.service)
            res.details["healthz"] = f"{status} {health.get('status')}"
            if status != 503 or health.get("status") != "degraded":
                res.problems.append(f"/healthz not 503 degraded: {status} {health}")
            if health.get("audit") in (None, "ok"):
                res.problems.append(f"/healthz gives no audit reason: {health}")
            res.details["audit_reason"] = health.get("audit")
            failed = [ln for ln in r.service.log_lines() if ln.get("event") == "audit_failed"]
            if not failed or failed[0].get("level") not in (None, "error"):
                res.problems.append(f"no error-level audit_failed log line: {failed[:1]}")
            errors = r.service.metric("streamproc_audit_errors_total")
            res.details["audit_errors_total"] = int(errors)
            if errors < 1:
                res.problems.append("streamproc_audit_errors_total is 0")
            obs = r.observer()
            t0 = time.monotonic()
            r.gateway().send([ln for _, ln in timed_lines(headline())])
            res.recovery_s = _alarm_after(obs, t0)
            time.sleep(0.5)
            status, health = healthz(r.service)
            if status != 503:
                res.problems.append(f"/healthz went back to {status} with no audit trail")
            check_episode(res, r, obs.messages, audit=False)

    return _run(res, body)


# -- 5b. audit disk failing while the processor runs --------------------------------------

AUDIT_FAULTS = ("write_error", "file_replaced")


def _audit_ok(service: ServiceProcess) -> bool:
    status, health = healthz(service)
    return status == 200 and health.get("audit") == "ok" and health.get("audit_pending") == 0


def fault_audit_runtime(
    workdir: Path, *, how: str = "write_error", mosquitto_bin: Path | None = None
) -> FaultResult:
    """The audit db's disk fails while the processor runs, before the fall, and is back
    after the alarm: the alarm goes out during the fault, the fault is loud (error log
    ``audit_failed`` with a code, ``streamproc_audit_errors_total``, /healthz 503 degraded
    with the transitions waiting), and once the disk is back the processor reopens the db
    by itself and writes what waited: one ``raised`` row, nothing lost.

    ``how``:

    - ``write_error``: the processor's file-size limit (RLIMIT_FSIZE, set on the running
      process with prlimit) drops to 1 byte, so every write to the db and its WAL fails in
      the kernel (EFBIG; SQLite reports a disk I/O error), as root too; then it is lifted.
      The processor logs into a pipe here, so that its log is not hit as well.
    - ``file_replaced``: the db's directory is renamed away and a plain file put at its
      path (the open db now names nothing and no new one can be created there); then the
      file is removed and the directory moved back.
    """
    if how not in AUDIT_FAULTS:
        raise ValueError(f"how must be one of {AUDIT_FAULTS}, got {how!r}")
    res = FaultResult(
        f"audit disk fails mid-episode ({how.replace('_', ' ')})",
        "disk back -> audit caught up (/healthz ok)",
    )
    home = workdir / "audit"
    db = home / "audit.sqlite3"

    def body() -> None:
        home.mkdir(parents=True, exist_ok=True)
        timed = timed_lines(headline())
        before, after = split(timed, BEFORE_FALL_S + 10)
        env = {"STREAMPROC_AUDIT_DB": str(db)}
        with rig(workdir, mosquitto_bin=mosquitto_bin, env=env, log_pipe=True) as r:
            r.service.audit_db = db
            proc = r.service.proc
            assert proc is not None
            obs = r.observer()
            gw = r.gateway()
            gw.send(before)
            wait_ingested(r.service, abp_count(before))
            if not _audit_ok(r.service):
                res.problems.append(f"audit not healthy before the fault: {healthz(r.service)}")
            soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
            moved = workdir / "audit-moved-away"
            if how == "write_error":
                resource.prlimit(proc.pid, resource.RLIMIT_FSIZE, (1, hard))
            else:
                home.rename(moved)
                home.write_text("not a directory: the audit disk is gone\n")
            t_fault = time.monotonic()
            gw.send(after)
            res.details["alarm_during_fault_s"] = round(_alarm_after(obs, t_fault), 2)
            wait_until(
                lambda: healthz(r.service)[1].get("audit_pending", 0) >= 1,
                10,
                "the alarm's transition waiting for the audit",
            )
            status, health = healthz(r.service)
            res.details["healthz"] = f"{status} {health.get('status')}"
            res.details["audit_pending"] = health.get("audit_pending")
            if status != 503 or health.get("status") != "degraded":
                res.problems.append(f"/healthz not 503 degraded during the fault: {health}")

            def failed_lines() -> list[dict[str, Any]]:
                return [ln for ln in r.service.log_lines() if ln.get("event") == "audit_failed"]

            # written before /healthz says degraded, but it comes through a pipe and a
            # reader thread here, which may lag the HTTP answer on a busy host
            with contextlib.suppress(TimeoutError):
                wait_until(lambda: bool(failed_lines()), 5, "audit_failed line")
            failed = failed_lines()
            if not failed or failed[0].get("level") != "error" or not failed[0].get("code"):
                res.problems.append(f"no error-level audit_failed line with a code: {failed[:1]}")
            else:
                res.details["code"] = failed[0]["code"]
            time.sleep(AUDIT_RETRY_S + 0.5)  # at least one retry, which fails too
            res.details["audit_errors_total"] = int(
                r.service.metric("streamproc_audit_errors_total")
            )
            if res.details["audit_errors_total"] < 2:
                res.problems.append("streamproc_audit_errors_total < 2 (failure, failed retry)")
            if how == "write_error":
                resource.prlimit(proc.pid, resource.RLIMIT_FSIZE, (soft, hard))
            else:
                home.unlink()
                moved.rename(home)
            t_end = time.monotonic()
            res.recovery_s = wait_until(lambda: _audit_ok(r.service), 30, "audit recovered")

            def recovered_lines() -> list[dict[str, Any]]:
                return [ln for ln in r.service.log_lines() if ln.get("event") == "audit_recovered"]

            # the line is written before /healthz can say ok, but it reaches us through
            # the service's stdout pipe and a reader thread, which may lag the HTTP answer
            with contextlib.suppress(TimeoutError):
                wait_until(lambda: bool(recovered_lines()), 5, "audit_recovered line")
            recovered = recovered_lines()
            if not recovered:
                res.problems.append("no audit_recovered log line")
            else:
                res.details["written_after"] = recovered[-1].get("written")
            res.details["recovered_after_s"] = round(time.monotonic() - t_end, 2)
            if proc.poll() is not None:
                res.problems.append(f"the processor exited with {proc.returncode}")
            time.sleep(0.5)
            check_episode(res, r, obs.messages)

    return _run(res, body)


# -- 6. gateway clock jump ---------------------------------------------------------------


def shift_payload(line: Mapping[str, Any], dt: float) -> dict[str, Any]:
    payload = dict(line["payload"])
    for key in ("t0", "ts"):
        if key in payload:
            payload[key] = payload[key] + dt
    return {"topic": line["topic"], "payload": payload}


def fault_clock_jump(
    workdir: Path,
    *,
    jump_s: float = 3600.0,
    slice_s: tuple[float, float] = (30.0, 60.0),
    mosquitto_bin: Path | None = None,
) -> FaultResult:
    """The gateway's clock leaps forward by ``jump_s`` for a slice of the episode (during the
    fall) and comes back: no crash, one alarm, the counters account for every message."""
    res = FaultResult(f"gateway clock jump {jump_s:+g} s and back", "clock back -> alarm")

    def body() -> None:
        timed = timed_lines(headline())
        a, b = slice_s
        before = [ln for t, ln in timed if t < a]
        jumped = [shift_payload(ln, jump_s) for t, ln in timed if a <= t < b]
        after = [ln for t, ln in timed if t >= b]
        with rig(workdir, mosquitto_bin=mosquitto_bin) as r:
            obs = r.observer()
            gw = r.gateway()
            gw.send(before)
            gw.send(jumped)
            t_end = time.monotonic()
            gw.send(after)
            res.recovery_s = _alarm_after(obs, t_end)
            first = alarm(obs.wait_for(ACTIVE, timeout=1))
            # where the alarm sits in time: data time of the transition vs the wall clock
            res.details["alarm_ts_minus_now_s"] = round(first["ts"] - time.time())
            res.details["alarm_onset_minus_now_s"] = round(
                first.get("onset_ts", first["ts"]) - time.time()
            )
            total = len(before) + len(jumped) + len(after)

            n_in, n_rej = wait_accounted(r.service, total, 20)
            res.details.update(
                sent=total, jumped=len(jumped), accepted=int(n_in), rejected=int(n_rej)
            )
            if n_in + n_rej != total:
                res.problems.append(f"in {n_in} + rejected {n_rej} != sent {total}")
            if jump_s > 300 and int(n_rej) != len(jumped):
                # more than service.max_future_s ahead: refused as clock_skew, counted
                res.problems.append(f"{len(jumped)} future-stamped chunks, {n_rej} rejected")
            if res.details["alarm_ts_minus_now_s"] > 60:
                res.problems.append("the alarm is stamped in the future")
            internal = [ln for ln in r.service.log_lines() if ln.get("event") == "internal_error"]
            if internal:
                res.problems.append(f"internal errors: {internal[:2]}")
            if r.service.proc is None or r.service.proc.poll() is not None:
                res.problems.append("the processor exited")
            time.sleep(0.5)
            check_episode(res, r, obs.messages)

    return _run(res, body)


# -- 7. hostile input under load --------------------------------------------------------------


def hostile_messages(marker: str, now: float, max_bytes: int = 262_144) -> list[tuple[str, bytes]]:
    """One of each hostile class the service must refuse (see :func:`fault_hostile_input`)."""
    abp = "icu/ward7/bed03/abp"
    head = f'{{"t0": {now:.3f}, "fs": 125, "samples": ['.encode()
    oversize = head + b"80," * (max_bytes // 3) + b"80]}"
    many = head + b"80," * 30_000 + b"80]}"  # 30,001 samples, ~90 KB: under the byte cap
    return [
        (abp, oversize),  # too_large: bytes
        (abp, many),  # too_large: samples
        (abp, b"not json"),
        (abp, b"\xff\xfe" * 50),  # not UTF-8
        (abp, head + b"1e999]}"),  # not finite
        ("icu/ward7/bed03/vitals", f'{{"ts": {now}, "source": "art", "sbp": "{marker}"}}'.encode()),
        ("icu/ward7/bed03/patient", f'{{"ts": {now}, "profile": "Jane {marker}"}}'.encode()),
        (
            "icu/ward7/bed03/infusion",
            f'{{"ts": {now}, "drug": "{marker}", "rate": 1, "unit": "mcg/min"}}'.encode(),
        ),
        ("icu/../bed03/abp", b"{}"),  # bad_topic: '..' as a unit
        ("icu/ward7/bed.03/abp", b"{}"),  # a dot in the bed id
        ("icu/" + "u" * 65 + "/bed03/abp", b"{}"),  # unit id too long
        ("icu/ward 7/bed03/vitals", b"{}"),  # a space in the unit
        ("icu/ward7/bed03/ack", b'{"ts": 1, "alarm_id": 5}'),
    ]


def fault_hostile_input(
    workdir: Path,
    *,
    rounds: int = 100,
    flood_beds: int = 2000,
    max_beds: int = 500,
    mosquitto_bin: Path | None = None,
) -> FaultResult:
    """The 60/40 episode with hostile input interleaved, QoS 1: ``rounds`` x every class of
    :func:`hostile_messages` (payload over ``service.max_payload_bytes``, more samples than
    ``service.max_samples``, not JSON, not UTF-8, not finite, wrong types, unknown enum
    values carrying a marker that stands for a patient's name, topics with ``..``, an
    over-long id, a space), plus ``flood_beds`` new bed ids in another unit (``max_beds``
    = ``max_beds``) and patient messages whose extra fields carry the marker. The alarm
    arrives once; every message is accounted (in + rejected = sent); the beds held stay
    within the cap (the rest evicted, counted); the marker is nowhere in the log."""
    res = FaultResult("hostile input + bed-id flood", "start of publishing -> alarm")

    def body() -> None:
        marker = f"PHI-{uuid.uuid4().hex[:10]}"
        now = time.time()
        hostile = hostile_messages(marker, now) * rounds
        flood: list[tuple[str, bytes]] = []
        for i in range(flood_beds):
            topic = f"icu/ward9/flood{i:05d}"
            flood.append(
                (f"{topic}/vitals", f'{{"ts": {now}, "source": "nibp", "map": 80}}'.encode())
            )
            if i % 10 == 0:  # accepted, with fields the contract does not have (ignored)
                body_ = f'{{"ts": {now}, "name": "Jane {marker}", "mrn": "{marker}"}}'
                flood.append((f"{topic}/patient", body_.encode()))
        extra = hostile + flood
        episode = [ln for _, ln in timed_lines(headline())]
        env = {"STREAMPROC_MAX_BEDS": str(max_beds)}
        with rig(workdir, mosquitto_bin=mosquitto_bin, env=env) as r:
            obs = r.observer()
            gw = r.gateway()
            per_line = len(extra) // len(episode) + 1
            infos = []
            t0 = time.monotonic()
            for i, line in enumerate(episode):
                for topic, payload in extra[i * per_line : (i + 1) * per_line]:
                    infos.append(gw.client.publish(topic, payload, qos=1))
                gw.send([line])
            for info in infos:
                info.wait_for_publish(30)
            res.recovery_s = _alarm_after(obs, t0)
            total = len(extra) + len(episode)

            n_in, n_rej = wait_accounted(r.service, total, 60)
            by_reason = {
                reason: int(r.service.metric("streamproc_messages_rejected_total", reason=reason))
                for reason in ("too_large", "not_json", "not_utf8", "not_finite", "wrong_type",
                               "unknown_value", "bad_topic")
            }  # fmt: skip
            beds = int(healthz(r.service)[1].get("beds", -1))
            evicted = int(r.service.metric("streamproc_beds_evicted_total"))
            res.details.update(
                sent=total,
                hostile=len(hostile),
                flood_beds=flood_beds,
                accepted=int(n_in),
                rejected=int(n_rej),
                beds_held=beds,
                beds_evicted=evicted,
                **{f"rej_{k}": v for k, v in by_reason.items() if v},
            )
            if n_in + n_rej != total:
                res.problems.append(f"in {n_in} + rejected {n_rej} != sent {total}")
            if n_rej < len(hostile):
                res.problems.append(f"only {n_rej} of {len(hostile)} hostile messages refused")
            if not 0 < beds <= max_beds:
                res.problems.append(f"{beds} beds held with max_beds {max_beds}")
            if evicted < flood_beds + 1 - max_beds:
                res.problems.append(
                    f"{evicted} beds evicted, expected >= {flood_beds + 1 - max_beds}"
                )
            log_text = r.service.log_path.read_text(errors="replace")
            if marker in log_text:
                res.problems.append("the marker standing for a patient's name is in the log")
            res.details["log_mentions_marker"] = log_text.count(marker)
            events = [ln.get("event") for ln in r.service.log_lines()]
            for bad in ("internal_error", "alarm_closed_bed_evicted"):
                if bad in events:
                    res.problems.append(f"{bad} in the log")
            if r.service.proc is None or r.service.proc.poll() is not None:
                res.problems.append("the processor exited")
            time.sleep(0.5)
            check_episode(res, r, obs.messages)

    return _run(res, body)


# == issue 16: the inputs and the processes at the edges ==================================
#
# These faults send the scenarios through the simulator's own publisher
# (``simulators.publisher.MqttSink``: QoS 1, patient and infusion retained as the wire
# contract says) and check each episode with :func:`check_episodes`: delivered (seen
# and retained), one alarm id and one ``raised``, no false ``cleared``, and, for the
# input faults, raised at the data time the clean stream gives (``streamproc replay``
# of the same scenarios, :func:`clean_reference`).

#: Data time (s) a raise or clear may differ from the clean stream's (one chunk + a beat).
TIME_TOL_S = 1.5
#: A payload's ``ts`` is rounded to the ms; the audit db keeps the full float.
TS_ROUNDING_S = 0.001


def _same_transitions(seen: list[tuple[str, float]]) -> list[tuple[str, float]]:
    """One entry per transition: the same alarm id at the same data time, seen in the
    payloads (ts to the ms), the audit db (the full float) and the retained state.
    (Rounding both to 0.01 s counted one transition twice when it fell on a boundary:
    848.1453 -> 848.15, 848.145 -> 848.14.)"""
    out: list[tuple[str, float]] = []
    for alarm_id, ts in sorted(seen):
        if out and out[-1][0] == alarm_id and ts - out[-1][1] <= TS_ROUNDING_S:
            continue
        out.append((alarm_id, ts))
    return out


#: What a restarted processor's fresh beat detector and rolling window need before a hold
#: starts to count (s of data; measured: the raise comes 14.7-15.2 s of data after the
#: first chunk a restarted processor takes in a critical episode, the hold being 15 s).
RESTART_SLACK_S = 5.0
#: The processor's broker log lines we read (``log_type debug``: every packet).
DEBUG_LOG = ("log_type debug",)


def client_id(service: ServiceProcess) -> str:
    """The processor's MQTT client id (``streamproc-{instance}``, as the service makes it)."""
    return f"streamproc-{service.instance}"


def scenario(name: str, **changes: Any) -> Scenario:
    """``config/scenarios/{name}.toml`` with ``changes``."""
    return dataclasses.replace(load_scenario(scenario_dir() / f"{name}.toml"), **changes)


def ending_at(sc: Scenario, end: float, at_s: float | None = None) -> Scenario:
    """``sc`` with its ``t0`` put so that its scenario time ``at_s`` (default: its end)
    is the epoch time ``end``."""
    return dataclasses.replace(sc, t0=end - (sc.duration_s if at_s is None else at_s))


def ward_timed(*scs: Scenario) -> list[tuple[float, int, dict[str, Any]]]:
    """Several beds' lines with their epoch send times, in time order (as ``merge``)."""
    timed = [(sc.t0 + t, k, line) for sc in scs for t, k, line in render_timed(sc)]
    timed.sort(key=lambda e: (e[0], e[1]))
    return timed


def gateway_send(
    broker: MosquittoBroker, timed: Sequence[tuple[float, int, dict[str, Any]]]
) -> int:
    """Publish ``timed`` at once (no pacing) through the simulator's publisher; returns the
    count once the broker has acknowledged every message (QoS 1)."""
    if not timed:
        return 0
    with MqttSink(broker.url, timeout=10) as sink:
        stats = publish_stream(timed, sink, speed=0, t0=timed[0][0], flush_timeout=60)
    return stats.sent


def service_env(**settings: float | int | str) -> dict[str, str]:
    """``STREAMPROC_*`` variables for settings, e.g. ``monitor_stale_s=10``."""
    return {f"STREAMPROC_{k.upper()}": str(v) for k, v in settings.items()}


def rss_mb(service: ServiceProcess) -> float | None:
    """The processor's resident memory (MB), from /proc."""
    if service.proc is None:
        return None
    try:
        for line in Path(f"/proc/{service.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        return None
    return None


class BrokerLog:
    """The broker's log file read as it grows (with ``log_type debug``, a line per packet).

    Gives the broker's view of the processor: when it started delivering to it, and
    which messages it got PUBACKs for.
    """

    def __init__(self, broker: MosquittoBroker) -> None:
        self.path = broker.log_path

    def mark(self) -> int:
        """Where the log ends now (read from here on)."""
        try:
            return self.path.stat().st_size
        except FileNotFoundError:
            return 0

    def text(self, since: int = 0) -> str:
        with self.path.open("rb") as fh:
            fh.seek(since)
            return fh.read().decode(errors="replace")

    def wait_for(self, needle: str, since: int, timeout: float) -> float:
        """Poll (every ms) until a line containing ``needle`` is written after ``since``;
        returns ``time.monotonic()`` when it was seen."""
        deadline = time.monotonic() + timeout
        tail = ""
        with self.path.open("rb") as fh:
            fh.seek(since)
            while True:
                chunk = fh.read()
                if chunk:
                    tail = (tail + chunk.decode(errors="replace"))[-4096:]
                    if needle in tail:
                        return time.monotonic()
                elif time.monotonic() > deadline:
                    raise TimeoutError(f"broker log: no {needle!r} within {timeout:g} s")
                else:
                    time.sleep(0.001)

    def pubacks_from(self, client: str, since: int = 0) -> list[int]:
        """Packet ids of the PUBACKs the broker received from ``client`` after ``since``."""
        pattern = re.compile(rf"Received PUBACK from {re.escape(client)} \(Mid: (\d+)")
        return [int(m.group(1)) for m in pattern.finditer(self.text(since))]

    def publishes_to(self, client: str, since: int = 0) -> int:
        """PUBLISH packets the broker sent to ``client`` after ``since``."""
        return self.text(since).count(f"Sending PUBLISH to {client} (")


def read_retained(
    broker: MosquittoBroker,
    filters: str | Sequence[str],
    *,
    quiet_s: float = 1.0,
    timeout: float = 60.0,
) -> dict[str, dict[str, Any]]:
    """Every retained message under ``filters`` (topic -> JSON payload), read by a fresh
    subscriber until ``quiet_s`` pass without one; a state published meanwhile replaces
    it, an empty one (the topic emptied) removes it."""
    out: dict[str, dict[str, Any]] = {}
    with Subscriber(broker, filters, timeout=10) as sub:
        deadline = time.monotonic() + timeout
        seen = -1
        while len(sub.messages) != seen and time.monotonic() < deadline:
            seen = len(sub.messages)
            time.sleep(quiet_s)
        for m in sub.messages:
            if not m.payload:
                out.pop(m.topic, None)
                continue
            with contextlib.suppress(ValueError):
                out[m.topic] = dict(json.loads(m.payload))
    return out


# -- the clean stream and the episodes -------------------------------------------------


@dataclass(frozen=True, slots=True)
class Transition:
    """One alarm transition of the clean stream, its times in data seconds since ``t0``."""

    unit: str
    bed: str
    kind: str
    state: str
    trigger: str
    priority: str
    at_s: float
    onset_s: float


@functools.cache
def clean_reference(names: tuple[str, ...]) -> tuple[Transition, ...]:
    """What ``streamproc replay`` gives for the scenarios ``names`` played clean (the same
    engine as the live service, clocked by the data): every transition, in order."""
    scs = [scenario(n) for n in names]
    env = {k: v for k, v in os.environ.items() if not k.startswith("STREAMPROC_")}
    proc = subprocess.run(
        [sys.executable, "-m", "streamproc", "replay", "-"],
        input=to_jsonl(merge(*scs)),
        capture_output=True,
        env=env,
        timeout=300,
        check=True,
    )
    t0 = {(sc.unit, sc.bed): sc.t0 for sc in scs}
    out = []
    for raw in proc.stdout.splitlines():
        p = json.loads(raw)["payload"]
        start = t0[(p["unit"], p["bed"])]
        out.append(
            Transition(
                p["unit"],
                p["bed"],
                p["kind"],
                p["state"],
                p.get("trigger", ""),
                p["priority"],
                round(p["ts"] - start, 3),
                round(p["onset_ts"] - start, 3),
            )
        )
    return tuple(out)


@dataclass(frozen=True, slots=True)
class Episode:
    """One alarm episode a fault's input must give exactly once.

    ``raise_s``/``clear_s`` (data seconds since ``t0``) are the clean stream's: the raise
    must come within :data:`TIME_TOL_S` of it, a clear no earlier than it (``clear_s``
    None: the episode stays open, so any ``cleared`` is false); ``min_hold_s``: the raise
    is at least this long (data time) after the episode's ``onset_ts``; ``latest_s``: the
    raise comes no later (data seconds since ``t0``).
    """

    unit: str
    bed: str
    kind: str = "hypotension"
    t0: float = 0.0
    raise_s: float | None = None
    clear_s: float | None = None
    min_hold_s: float = 0.0
    latest_s: float | None = None

    @property
    def topic(self) -> str:
        return f"icu/{self.unit}/{self.bed}/alarms/{self.kind}"

    @property
    def name(self) -> str:
        return f"{self.bed}.{self.kind}"


def reference_episodes(
    scs: Sequence[Scenario],
    *,
    timing: bool = True,
    restart: bool = False,
    until_s: float | None = None,
) -> list[Episode]:
    """The episodes the clean stream of ``scs`` raises (their first raise per bed and kind,
    and their clear, up to scenario time ``until_s``), placed at each scenario's ``t0``.

    With ``timing`` the live raise must match the clean one, and a hypotension alarm
    that the clean stream holds for the protocol's ``hold_s`` (60 s) must be held as
    long (no duplicate or reordered data may shorten the hold).

    With ``restart`` (a processor killed or stopped mid-stream and restarted) the raise
    may be later than the clean one, but by no more than a hold (the critical one for a
    high-priority alarm) + :data:`RESTART_SLACK_S`: a processor restarted on the first
    message its predecessor had not finished raises by then, since the predecessor had
    acknowledged nothing past the alarm's raise before making it durable. Later means
    messages were acknowledged to the broker and never processed.
    """
    hyp = Settings().hypotension
    hold_s = hyp.hold_s
    ref = clean_reference(tuple(sc.name for sc in scs))
    episodes = []
    for sc in scs:
        mine = [
            tr
            for tr in ref
            if tr.unit == sc.unit
            and tr.bed == sc.bed
            and (until_s is None or tr.at_s <= until_s)
            and tr.at_s <= sc.duration_s
        ]
        for kind in dict.fromkeys(tr.kind for tr in mine):
            raised = next(tr for tr in mine if tr.kind == kind and tr.trigger == "raised")
            cleared = next((tr for tr in mine if tr.kind == kind and tr.state == "cleared"), None)
            held = raised.at_s - raised.onset_s
            episodes.append(
                Episode(
                    sc.unit,
                    sc.bed,
                    kind,
                    t0=sc.t0,
                    raise_s=raised.at_s if timing else None,
                    clear_s=None if cleared is None else cleared.at_s,
                    min_hold_s=(min(held, hold_s) - 0.5 if timing else 0.0),
                    latest_s=(
                        raised.at_s
                        + (hyp.critical_hold_s if raised.priority == "high" else hold_s)
                        + RESTART_SLACK_S
                        if restart
                        else None
                    ),
                )
            )
    return episodes


def check_episodes(
    res: FaultResult,
    r: Rig,
    seen: Sequence[Received],
    episodes: Sequence[Episode],
    *,
    audit: bool = True,
    other_kinds: bool = False,
) -> None:
    """Fill ``expected``/``delivered``/``duplicate_ids``/``false_cleared`` for ``episodes``
    from what the subscribers saw, what the broker retains, the service's log and the
    audit db. An alarm of another kind on an episode's bed is a problem unless
    ``other_kinds``."""
    res.expected = len(episodes)
    res.delivered = res.duplicate_ids = res.false_cleared = 0
    retained = read_retained(r.broker, sorted({ep.topic for ep in episodes}), quiet_s=0.5)
    log_lines = [ln for ln in r.service.log_lines() if ln.get("event") == "alarm"]
    rows = []
    if audit:
        try:
            rows = AuditLog(r.service.audit_db, readonly=True).query()
        except AuditError as exc:
            res.problems.append(f"audit db unreadable: {exc}")
    beds = {(ep.unit, ep.bed) for ep in episodes}
    kinds = {(ep.unit, ep.bed, ep.kind) for ep in episodes}
    if not other_kinds:
        others = sorted(
            {
                f"{a['bed']}.{a['kind']} {a['state']}"
                for a in (alarm(m) for m in seen if "/alarms/" in m.topic and m.payload)
                if (a["unit"], a["bed"]) in beds and (a["unit"], a["bed"], a["kind"]) not in kinds
            }
        )
        if others:
            res.problems.append(f"alarms the clean stream does not raise: {others}")
    for ep in episodes:
        mine = [alarm(m) for m in seen if m.topic == ep.topic and m.payload]
        ret = retained.get(ep.topic)
        mine_rows = [
            row for row in rows if (row.unit, row.bed, row.kind) == (ep.unit, ep.bed, ep.kind)
        ]
        ids = {a["alarm_id"] for a in mine} | {row.alarm_id for row in mine_rows}
        if ret is not None:
            ids.add(ret["alarm_id"])
        raised = sorted(
            (a for a in mine if a.get("trigger") == "raised"), key=lambda a: float(a["ts"])
        )
        n_log = sum(
            1
            for ln in log_lines
            if (ln.get("unit"), ln.get("bed"), ln.get("kind")) == (ep.unit, ep.bed, ep.kind)
            and ln.get("trigger") == "raised"
        )
        n_audit = sum(1 for row in mine_rows if row.trigger == "raised")
        want = ("cleared",) if ep.clear_s is not None else ("active", "acknowledged")
        state = None if ret is None else ret.get("state")
        if raised and state in want:
            res.delivered += 1
        elif not raised:
            res.problems.append(f"{ep.name}: never raised at a subscriber")
        else:
            res.problems.append(f"{ep.name}: retained state {state!r}, expected one of {want}")
        if audit and n_audit == 0:
            res.problems.append(f"{ep.name}: no 'raised' row in the audit db")
        res.duplicate_ids += max(len(ids) - 1, n_log - 1, n_audit - 1, 0)
        clears = [(a["alarm_id"], float(a["ts"])) for a in mine if a.get("state") == "cleared"]
        clears += [(row.alarm_id, row.ts) for row in mine_rows if row.state == "cleared"]
        if state == "cleared" and ret is not None:
            clears.append((ret["alarm_id"], float(ret["ts"])))
        cleared = _same_transitions(clears)
        _check_clears(res, ep, cleared, float(raised[0]["ts"]) if raised else math.inf)
        note = f"ids {len(ids)}, raised {len(raised)}/{n_log}/{n_audit}, cleared {len(cleared)}"
        if raised:
            note = f"{_check_raise(res, ep, raised[0])}, {note}"
        res.details[ep.name] = note


def _check_clears(
    res: FaultResult, ep: Episode, cleared: Iterable[tuple[str, float]], first: float
) -> None:
    """Count and name the false ``cleared`` transitions of ``ep`` (its first raise at
    ``first``): only one, at or after the clean stream's clearing, is legitimate."""
    legit = False
    for _, ts in sorted(cleared, key=lambda c: c[1]):
        ok = (
            ep.clear_s is not None
            and not legit
            and ts >= first
            and ts - ep.t0 >= ep.clear_s - TIME_TOL_S
        )
        if ok:
            legit = True
        else:
            res.false_cleared += 1
            res.problems.append(
                f"{ep.name}: false cleared at {ts - ep.t0:.1f} s of data"
                + ("" if math.isinf(first) else f" (raised at {first - ep.t0:.1f} s)")
            )
    if ep.clear_s is not None and not legit:
        res.problems.append(f"{ep.name}: never cleared (the clean stream clears it)")


def _check_raise(res: FaultResult, ep: Episode, raised: Mapping[str, Any]) -> str:
    """Check when ``ep`` was first raised against the clean stream; the detail's words."""
    at = float(raised["ts"]) - ep.t0
    held = float(raised["ts"]) - float(raised["onset_ts"])
    if ep.raise_s is not None and abs(at - ep.raise_s) > TIME_TOL_S:
        res.problems.append(
            f"{ep.name}: raised at {at:.1f} s of data, the clean stream at {ep.raise_s:.1f} s"
        )
    if ep.latest_s is not None and at > ep.latest_s:
        res.problems.append(
            f"{ep.name}: raised at {at:.1f} s of data, after {ep.latest_s:.1f} s: data "
            "acknowledged to the broker before the restart was never processed"
        )
    if held < ep.min_hold_s:
        res.problems.append(
            f"{ep.name}: raised {held:.1f} s of data after its onset, held "
            f"{ep.min_hold_s + 0.5:.1f} s in the clean stream"
        )
    return f"raised at {at:.1f} s (held {held:.1f} s)"


# -- 10. processor SIGKILL at a random instant of a backlog --------------------------------

#: The random kill instant is drawn in this window (s) after the broker starts delivering
#: the backlog to the restarted processor (the first PUBLISH to it in the broker's log).
KILL_WINDOW_S = (0.0, 0.05)
#: The same for the broker and the processor killed together: that broker saves its store
#: after every change, which slows its delivery of the backlog to about 1.5 s.
KILL_BOTH_WINDOW_S = (0.0, 1.5)
#: How long a restarted processor gets to deliver the alarm before it counts as lost.
RESTART_ALARM_S = STARTUP_S


def _backlog_rig(
    res: FaultResult, r: Rig, timed: Sequence[tuple[float, int, dict[str, Any]]]
) -> int:
    """With the processor's persistent session made (the rig started it), stop it
    (SIGTERM), queue ``timed`` for its session, and return the broker log's mark."""
    rc = r.service.terminate()
    if rc != 0:
        res.problems.append(f"the first processor exited {rc} on SIGTERM")
    res.details["backlog"] = gateway_send(r.broker, timed)
    return BrokerLog(r.broker).mark()


def _restarted_alarm(res: FaultResult, obs: Subscriber, t_end: float) -> float | None:
    """Seconds from ``t_end`` to the 60/40 alarm at ``obs``, waiting :data:`RESTART_ALARM_S`
    (None, and a problem saying so, when it does not come)."""
    try:
        took = _alarm_after(obs, t_end, RESTART_ALARM_S)
    except TimeoutError:
        res.problems.append(
            f"the alarm was lost: not delivered within {RESTART_ALARM_S:g} s of the restart "
            f"({res.details.get('acked_before_kill')} of {res.details.get('backlog')} "
            "messages had been acknowledged to the broker by the killed processor)"
        )
        return None
    time.sleep(0.5)  # anything else it publishes (a duplicate) has time to arrive
    return took


def _kill_at_random(
    r: Rig, log: BrokerLog, mark: int, delay: float, *, broker_too: bool = False
) -> float:
    """Start the processor on its backlog; SIGKILL it (and the broker) ``delay`` s after the
    broker's first PUBLISH to it. Returns the measured delay (s)."""
    r.service.start(wait=False)
    seen = log.wait_for(f"Sending PUBLISH to {client_id(r.service)} (", mark, STARTUP_S)
    time.sleep(max(0.0, seen + delay - time.monotonic()))
    proc = r.service.proc
    assert proc is not None
    proc.send_signal(signal.SIGKILL)
    at = time.monotonic() - seen
    if broker_too:
        r.broker.kill()
    r.service.kill()  # reaps it
    return at


def fault_kill_random(
    workdir: Path,
    *,
    seed: int = 0,
    window_s: tuple[float, float] = KILL_WINDOW_S,
    mosquitto_bin: Path | None = None,
) -> FaultResult:
    """The 60/40 episode queued whole (QoS 1) for the stopped processor's persistent
    session; the processor is started on it and SIGKILLed at a random instant (seeded:
    ``seed``) within ``window_s`` after the broker began delivering the backlog, then
    restarted. The alarm must come once, retained: whatever the killed processor had
    acknowledged to the broker it must have made durable first."""
    res = FaultResult(
        "processor SIGKILL at a random instant of a backlog", "restart -> alarm at subscriber"
    )
    delay = random.Random(f"kill_random/{seed}").uniform(*window_s)

    def body() -> None:
        sc = ending_at(scenario("ne_60_40"), time.time())
        with rig(workdir, mosquitto_bin=mosquitto_bin, broker_config=DEBUG_LOG) as r:
            obs = r.observer()
            log = BrokerLog(r.broker)
            mark = _backlog_rig(res, r, ward_timed(sc))
            res.details["kill_ms"] = round(1e3 * _kill_at_random(r, log, mark, delay), 1)
            cid = client_id(r.service)
            res.details["acked_before_kill"] = len(log.pubacks_from(cid, mark))
            t_end = time.monotonic()
            mark2 = log.mark()
            r.service.start(wait=False)
            res.recovery_s = _restarted_alarm(res, obs, t_end)
            res.details["delivered_after_restart"] = log.publishes_to(cid, mark2)
            check_episodes(
                res, r, obs.messages, reference_episodes([sc], timing=False, restart=True)
            )

    return _run(res, body)


# -- 11. broker and processor SIGKILLed together ------------------------------------------


def fault_kill_both(
    workdir: Path,
    *,
    seed: int = 0,
    window_s: tuple[float, float] = KILL_BOTH_WINDOW_S,
    mosquitto_bin: Path | None = None,
) -> FaultResult:
    """As :func:`fault_kill_random`, but the broker is SIGKILLed with the processor (a
    host or container crash), at a random instant within ``window_s`` of the start of
    the delivery. The broker saves its store after every change
    (``autosave_on_changes``), so what it acknowledged survives; both are restarted."""
    res = FaultResult(
        "broker + processor SIGKILL together in a backlog",
        "both restarted -> alarm at subscriber",
    )
    delay = random.Random(f"kill_both/{seed}").uniform(*window_s)

    def body() -> None:
        sc = ending_at(scenario("ne_60_40"), time.time())
        # with autosave_interval 1 (the harness's): the store is saved after every change
        durable = (*DEBUG_LOG, "autosave_on_changes true")
        with rig(workdir, mosquitto_bin=mosquitto_bin, broker_config=durable) as r:
            obs = r.observer()
            log = BrokerLog(r.broker)
            mark = _backlog_rig(res, r, ward_timed(sc))
            at = _kill_at_random(r, log, mark, delay, broker_too=True)
            res.details["kill_ms"] = round(1e3 * at, 1)
            res.details["acked_before_kill"] = len(log.pubacks_from(client_id(r.service), mark))
            t_end = time.monotonic()
            r.broker.start()
            r.service.start(wait=False)
            late = r.observer()
            res.recovery_s = _restarted_alarm(res, late, t_end)
            seen = [*obs.messages, *late.messages]
            check_episodes(res, r, seen, reference_episodes([sc], timing=False, restart=True))

    return _run(res, body)


# -- 12. duplicated, swapped and replayed input --------------------------------------------

INPUT_FAULTS = ("dup", "swap", "replay")
#: The beds of the input faults: the 60/40 patient (MAP 47: high priority on the
#: critical path) and a sustained MAP 53 that recovers (medium after the 60 s hold,
#: then cleared).
INPUT_BEDS = ("ne_60_40", "recovery")
#: The replaying gateway restarts this long (s of data) before the end of the episodes
#: (the 60/40 bed is 41 s past its alarm, the recovering bed 30 s before its clear) and
#: then re-sends its last :data:`REPLAY_S` seconds (the 60/40 bed's from before its fall)
#: before it goes on.
REPLAY_AT_S = 140.0
REPLAY_S = 120.0


def swap_pairs(
    timed: Sequence[tuple[float, int, dict[str, Any]]],
) -> list[tuple[float, int, dict[str, Any]]]:
    """Each bed's waveform chunks with adjacent ones swapped in pairs (1 0 3 2 ...), as two
    gateway threads would send them; other messages in place."""
    out: list[tuple[float, int, dict[str, Any]]] = []
    held: dict[str, tuple[float, int, dict[str, Any]]] = {}
    for item in timed:
        topic = str(item[2]["topic"])
        if not topic.endswith("/abp"):
            out.append(item)
        elif topic in held:
            out += [item, held.pop(topic)]
        else:
            held[topic] = item
    out += held.values()
    return out


def fault_input(
    workdir: Path, *, how: str = "dup", mosquitto_bin: Path | None = None
) -> FaultResult:
    """Two beds' episodes (:data:`INPUT_BEDS`, live timestamps) sent with a gateway fault:

    - ``dup``: every message published twice in a row (a gateway retrying at QoS 1);
    - ``swap``: each bed's adjacent waveform chunks swapped in pairs;
    - ``replay``: the gateway "restarts" (a new connection) :data:`REPLAY_AT_S` before the
      end, re-sends its last :data:`REPLAY_S` seconds, and goes on.

    The same alarms as the clean stream must come: each episode raised once, at the
    clean stream's data time (so held as long), the recovering bed cleared once no
    earlier than the clean stream clears it, nothing else raised or cleared."""
    if how not in INPUT_FAULTS:
        raise ValueError(f"how must be one of {INPUT_FAULTS}, got {how!r}")
    names = {
        "dup": "every message sent twice",
        "swap": "adjacent chunks swapped in pairs",
        "replay": f"gateway restarts, re-sends its last {REPLAY_S:g} s, goes on",
    }
    res = FaultResult(f"input: {names[how]}", "start of publishing -> 60/40 alarm")

    def body() -> None:
        now = time.time()
        scs = [ending_at(scenario(n), now) for n in INPUT_BEDS]
        clean = ward_timed(*scs)
        episodes = reference_episodes(scs)
        if how == "dup":
            parts = [[item for item in clean for _ in (0, 1)]]
        elif how == "swap":
            parts = [swap_pairs(clean)]
        else:
            cut = now - REPLAY_AT_S
            parts = [
                [item for item in clean if item[0] < cut],
                [item for item in clean if cut - REPLAY_S <= item[0] < cut],
                [item for item in clean if item[0] >= cut],
            ]
        with rig(workdir, mosquitto_bin=mosquitto_bin) as r:
            obs = r.observer()
            t0 = time.monotonic()
            sent = sum(gateway_send(r.broker, part) for part in parts)
            res.details["sent"] = sent
            with contextlib.suppress(TimeoutError):  # a missing alarm is judged below
                res.recovery_s = _alarm_after(obs, t0, 10)

            def accounted() -> float:
                return sum(
                    metric_sum(r.service, name)
                    for name in (
                        "streamproc_messages_in_total",
                        "streamproc_messages_rejected_total",
                        "streamproc_messages_dropped_total",
                    )
                )

            wait_until(lambda: accounted() >= sent, 30, f"{sent} messages accounted")
            time.sleep(1.0)  # five ticks: whatever the input caused has come out
            res.details["dropped"] = int(metric_sum(r.service, "streamproc_messages_dropped_total"))
            check_episodes(res, r, obs.messages, episodes)

    return _run(res, body)


# -- 13. SIGTERM mid-burst ------------------------------------------------------------------

#: The SIGTERM instant is drawn in this window (s) after the broker starts delivering the burst.
TERM_WINDOW_S = (0.0, 0.2)
#: Stable beds besides :data:`INPUT_BEDS` in the burst (more to read than to finish at once).
BURST_STABLE_BEDS = 4


def fault_sigterm_burst(
    workdir: Path,
    *,
    seed: int = 0,
    window_s: tuple[float, float] = TERM_WINDOW_S,
    mosquitto_bin: Path | None = None,
) -> FaultResult:
    """A ward's whole recording (the two :data:`INPUT_BEDS` and four stable beds) is
    published in one burst; the processor gets SIGTERM at a random instant (seeded)
    within ``window_s`` after the broker starts delivering it, must exit 0 within 20 s,
    and is restarted. Every alarm must come once; and, in the broker's view (its debug
    log), every message the stopped processor acknowledged must have been processed by
    it (its ``stopped`` log line counts what it processed)."""
    res = FaultResult("SIGTERM mid-burst + restart", "restart -> every episode raised")
    delay = random.Random(f"sigterm_burst/{seed}").uniform(*window_s)

    def body() -> None:
        now = time.time()
        scs = [ending_at(scenario(n), now) for n in INPUT_BEDS]
        stable = [
            ending_at(scenario("stable", bed=f"bed{40 + i}", seed=100 + i), now)
            for i in range(BURST_STABLE_BEDS)
        ]
        timed = ward_timed(*scs, *stable)
        episodes = reference_episodes(scs, timing=False, restart=True)
        with rig(workdir, mosquitto_bin=mosquitto_bin, broker_config=DEBUG_LOG) as r:
            obs = r.observer()
            log = BrokerLog(r.broker)
            cid = client_id(r.service)
            mark = log.mark()
            sent: list[int] = []
            sender = threading.Thread(target=lambda: sent.append(gateway_send(r.broker, timed)))
            sender.start()
            try:
                seen = log.wait_for(f"Sending PUBLISH to {cid} (", mark, STARTUP_S)
                time.sleep(max(0.0, seen + delay - time.monotonic()))
                res.details["term_ms"] = round(1e3 * (time.monotonic() - seen), 1)
                t_term = time.monotonic()
                rc = r.service.terminate(timeout=20)
                res.details["exit_s"] = round(time.monotonic() - t_term, 2)
            finally:
                sender.join(90)
            res.details["exit_status"] = rc
            if rc != 0:
                res.problems.append(f"the processor exited {rc} after SIGTERM (0 expected)")
            if not sent:
                raise RuntimeError("the gateway did not get the burst acknowledged")
            res.details["published"] = published = sent[0]
            acked = len(log.pubacks_from(cid, mark))
            stopped = [ln for ln in r.service.log_lines() if ln.get("event") == "stopped"]
            processed = int(stopped[-1].get("processed", -1)) if stopped else -1
            res.details.update(acked_by_stopped=acked, processed_by_stopped=processed)
            if processed < 0:
                res.problems.append("no 'stopped' log line with the count processed")
            elif acked > processed:
                res.details["acked_not_processed"] = acked - processed
                res.problems.append(
                    f"{acked - processed} messages acknowledged to the broker by the stopped "
                    f"processor were never processed (acked {acked}, processed {processed})"
                )
            r.service.start(wait=False)

            def all_raised() -> bool:
                got = {(alarm(m)["bed"], alarm(m)["kind"]) for m in obs.messages if m.payload}
                return all((ep.bed, ep.kind) in got for ep in episodes)

            res.recovery_s = wait_until(all_raised, RESTART_ALARM_S, "every episode raised")
            with contextlib.suppress(TimeoutError):
                wait_until(
                    lambda: (
                        metric_sum(r.service, "streamproc_messages_in_total") >= published - acked
                    ),
                    20,
                    "the rest of the burst processed after the restart",
                )
            res.details["in_after_restart"] = int(
                metric_sum(r.service, "streamproc_messages_in_total")
            )
            time.sleep(1.0)
            check_episodes(res, r, obs.messages, episodes)

    return _run(res, body)


# -- 14. restart with an acknowledged alarm and a bed gone silent --------------------------

#: Shortened so that the fault runs in half a minute (the protocol's are 300 s and 30 s).
ACK_SILENCE_S = 15.0
STALE_S = 10.0
#: Scenario second of the 60/40 episode that is "now" when the live part starts (the
#: alarm, 59 s, is behind it).
LIVE_FROM_S = 70.0
#: The silent bed's last data (s after the live part starts), then the restart (s after
#: the acknowledgement, and at least 2 s after the silent bed's last data went out).
SILENT_AFTER_S = 5.0
RESTART_AFTER_ACK_S = 4.0


class PacedGateway(threading.Thread):
    """Publishes timed lines when the wall clock reaches their data time (a live gateway:
    what is already due goes at once) through the simulator's
    :class:`~simulators.publisher.MqttSink`, and notes when each bed's last line went out."""

    def __init__(
        self, broker: MosquittoBroker, timed: Sequence[tuple[float, int, dict[str, Any]]]
    ) -> None:
        super().__init__(name="paced-gateway", daemon=True)
        self.sink = MqttSink(broker.url, timeout=10).connect()
        self.timed = list(timed)
        self.last_sent: dict[str, float] = {}
        self._halt = threading.Event()

    def run(self) -> None:
        for ts, _, line in self.timed:
            left = ts - time.time()
            if left > 0 and self._halt.wait(left):
                return
            topic = str(line["topic"])
            kind = kind_of(topic)
            self.sink.publish(
                topic, json.dumps(line["payload"]).encode(), qos=1, retain=kind in RETAINED_KINDS
            )
            self.last_sent[topic.split("/")[2]] = time.time()

    def stop(self) -> None:
        self._halt.set()
        self.join(5)
        self.sink.flush(5)
        self.sink.close()


def fault_restart_ack_silent(
    workdir: Path,
    *,
    ack_silence_s: float = ACK_SILENCE_S,
    stale_s: float = STALE_S,
    mosquitto_bin: Path | None = None,
) -> FaultResult:
    """The 60/40 bed (live, one chunk a second) in alarm, acknowledged; a second bed
    (``silent_bed``) sends its last data 5 s into the live part; 4 s after the
    acknowledgement (and at least 2 s after that last data) the processor is restarted
    (SIGTERM, start). ``alarms.ack_silence_s`` and
    ``monitor.stale_s`` are shortened (15 s, 10 s). The silence must end
    ``ack_silence_s`` after the acknowledgement, not after the restart; the silent bed
    must get ``data_stale`` ``stale_s`` after its last data (either, when it fell due
    while the processor was down, as soon as it is up again); one id each, nothing
    cleared."""
    res = FaultResult(
        "restart with an acknowledged alarm and a silent bed", "restart -> processor healthy"
    )

    def body() -> None:
        now = time.time()
        hl = ending_at(scenario("ne_60_40"), now, at_s=LIVE_FROM_S)
        quiet = ending_at(
            scenario("silent_bed", silent_after_s=LIVE_FROM_S + SILENT_AFTER_S),
            now,
            at_s=LIVE_FROM_S,
        )
        timed = ward_timed(hl, quiet)
        past = [x for x in timed if x[0] < now]
        live = [x for x in timed if now <= x[0] < now + 60]
        env = service_env(alarms_ack_silence_s=ack_silence_s, monitor_stale_s=stale_s)
        with rig(workdir, mosquitto_bin=mosquitto_bin, env=env) as r:
            obs = r.observer()
            gateway_send(r.broker, past)
            first = alarm(obs.wait_for(ACTIVE, timeout=ALARM_TIMEOUT_S))
            paced = PacedGateway(r.broker, live)
            r.on_close(paced.stop)
            ack = {"ts": time.time(), "alarm_id": first["alarm_id"], "by": "fault-harness"}
            r.gateway().send([{"topic": f"icu/{UNIT}/{BED}/ack", "payload": ack}])
            obs.wait_for(is_alarm("hypotension", state="acknowledged", bed=BED), timeout=10)
            t_ack = time.time()
            paced.start()
            wait_until(lambda: quiet.bed in paced.last_sent, 30, "the silent bed's data")
            quiet_end = max(
                float(ln["payload"]["t0"]) + len(ln["payload"]["samples"]) / quiet.fs
                for _, _, ln in live
                if str(ln["topic"]).endswith(f"/{quiet.bed}/abp")
            )
            wait_until(lambda: time.time() > quiet_end + 0.5, 30, "the silent bed silent")
            restart_at = max(t_ack + RESTART_AFTER_ACK_S, paced.last_sent[quiet.bed] + 2.0)
            time.sleep(max(0.0, restart_at - time.time()))
            r.service.terminate()
            t_restart = time.time()
            t_mono = time.monotonic()
            r.service.start(wait=False)
            wait_until(lambda: connected(r.service), STARTUP_S, "processor restarted")
            res.recovery_s = time.monotonic() - t_mono
            t_up = time.time()  # a transition due while it was down is due now
            res.details["restart_after_ack_s"] = round(t_restart - t_ack, 1)
            res.details["down_s"] = round(t_up - t_restart, 1)
            last_quiet = paced.last_sent.get(quiet.bed)
            if last_quiet is None or last_quiet > t_restart:
                raise RuntimeError("the silent bed's last data was not sent before the restart")
            res.details["silent_before_restart_s"] = round(t_restart - last_quiet, 1)
            expired = is_alarm("hypotension", bed=BED, trigger="ack_expired")
            stale = is_alarm("data_stale", state="active", bed=quiet.bed)
            # long enough to see a silence that restarted with the processor end
            deadline = max(t_up + ack_silence_s, last_quiet + stale_s) + 5
            while time.time() < deadline:
                if any(map(expired, obs.messages)) and any(map(stale, obs.messages)):
                    break
                time.sleep(0.2)
            # early: against the acknowledgement's own time; late: against when the
            # processor applied it (or when it was up again, if that was later)
            ends = [alarm(m) for m in obs.messages if expired(m)]
            if ends:
                end = float(ends[0]["ts"])
                res.details["silence_ended_after_ack_s"] = round(end - t_ack, 1)
                early = end - (float(ack["ts"]) + ack_silence_s)
                late = end - max(t_ack + ack_silence_s, t_up)
                res.details["silence_end_late_s"] = round(late, 1)
                if early < -1.0 or late > 2.5:
                    res.problems.append(
                        f"the silence ended {float(ends[0]['ts']) - t_ack:.1f} s after the "
                        f"acknowledgement (ack_silence_s {ack_silence_s:g}; the processor "
                        f"restarted {t_restart - t_ack:.1f} s after it, up again after "
                        f"{t_up - t_ack:.1f} s)"
                    )
            else:
                res.problems.append(
                    f"the silence never ended ({deadline - t_ack:.0f} s after the "
                    f"acknowledgement; ack_silence_s {ack_silence_s:g})"
                )
            # early: against the data time of its last sample (a restored last data time
            # may come from a summary, every summary_s); late: against its arrival (or
            # when the processor was up again, if that was later)
            stales = [alarm(m) for m in obs.messages if stale(m)]
            if stales:
                at = float(stales[0]["ts"])
                res.details["stale_after_last_data_s"] = round(at - last_quiet, 1)
                early = at - (min(quiet_end, last_quiet) + stale_s)
                late = at - max(last_quiet + stale_s, t_up)
                res.details["stale_late_s"] = round(late, 1)
                if early < -(ServiceSettings().summary_s + 1.0) or late > 2.5:
                    res.problems.append(
                        f"data_stale {float(stales[0]['ts']) - last_quiet:.1f} s after the "
                        f"silent bed's last data (stale_s {stale_s:g}; the processor was "
                        f"down from {t_restart - last_quiet:.1f} s to {t_up - last_quiet:.1f} s)"
                    )
            else:
                res.problems.append(
                    f"no data_stale for the bed silent since {t_restart - last_quiet:.1f} s "
                    f"before the restart ({deadline - last_quiet:.0f} s after its last data)"
                )
            paced.stop()
            episodes = [
                Episode(UNIT, BED, "hypotension", t0=hl.t0),
                Episode(quiet.unit, quiet.bed, "data_stale", t0=quiet.t0),
            ]
            check_episodes(res, r, obs.messages, episodes)

    return _run(res, body)


# -- 15. a flood of new bed ids ---------------------------------------------------------------

FLOOD_IDS = 50_000
FLOOD_MAX_BEDS = 2_000
#: Shortened so that flood beds go stale while they wait to be processed and while they are
#: held (the protocol's: 30 s; the live 60/40 bed sends every second).
FLOOD_STALE_S = 2.0
FLOOD_UNIT = "ward9"


def flood_lines(n: int, now: float, first: int = 0) -> list[tuple[float, int, dict[str, Any]]]:
    """One small ``vitals`` message (arterial-line numerics at target) from each of ``n``
    new beds of :data:`FLOOD_UNIT`."""
    body = {"ts": now, "source": "art", "sbp": 118, "dbp": 70, "map": 86, "hr": 80}
    return [
        (now, 1, {"topic": f"icu/{FLOOD_UNIT}/f{i:06d}/vitals", "payload": body})
        for i in range(first, first + n)
    ]


def send_flood(broker: MosquittoBroker, n: int, first: int) -> int:
    """``n`` new beds' messages at once (QoS 1, through the simulator's publisher: far
    faster than they are processed, so a backlog builds); returns the count once the
    broker has acknowledged them."""
    with MqttSink(broker.url, timeout=10) as sink:
        for _, _, line in flood_lines(n, time.time(), first):
            sink.publish(line["topic"], json.dumps(line["payload"]).encode(), qos=1)
        if not sink.flush(120):
            raise RuntimeError(f"the broker did not acknowledge {sink.pending} flood messages")
        return sink.sent


def fault_flood_ids(
    workdir: Path,
    *,
    ids: int = FLOOD_IDS,
    max_beds: int = FLOOD_MAX_BEDS,
    stale_s: float = FLOOD_STALE_S,
    rounds: int = 1,
    mosquitto_bin: Path | None = None,
) -> FaultResult:
    """``rounds`` x ``ids`` new bed ids (one small message each, QoS 1) with
    ``service.max_beds`` = ``max_beds``, while the 60/40 bed, in alarm, goes on sending
    live. The flood is sent at once, faster than it is processed, and
    ``monitor.stale_s`` is shortened to 2 s: beds go stale (legitimately) while they are
    held and are evicted while the processor ticks them. The 60/40 alarm stays once,
    open (the live bed may go stale and back when the processor falls that far behind);
    at the end (``stale_s`` later)
    the broker retains an active alarm or a summary for at most ``max_beds`` flood beds
    (an evicted bed leaves neither behind); the processor's RSS is reported after each
    round."""
    res = FaultResult(
        f"{ids * rounds:,} new bed ids, max_beds {max_beds:,}", "flood sent -> accounted"
    )

    def body() -> None:
        now = time.time()
        hl = ending_at(scenario("ne_60_40"), now, at_s=LIVE_FROM_S)
        timed = ward_timed(hl)
        env = service_env(max_beds=max_beds, monitor_stale_s=stale_s)
        with rig(workdir, mosquitto_bin=mosquitto_bin, env=env) as r:
            obs = r.observer()
            gateway_send(r.broker, [x for x in timed if x[0] < now])
            obs.wait_for(ACTIVE, timeout=ALARM_TIMEOUT_S)
            paced = PacedGateway(r.broker, [x for x in timed if x[0] >= now])
            r.on_close(paced.stop)
            paced.start()
            res.details["rss_mb_start"] = rss_mb(r.service)
            t0 = time.monotonic()
            for k in range(rounds):
                total = int(metric_sum(r.service, "streamproc_messages_in_total"))
                total += send_flood(r.broker, ids, k * ids)
                t_sent = time.monotonic()
                # the 60/40 bed's live chunks are counted too: at least the flood is in
                wait_accounted(r.service, total, 60 + ids / 200)
                res.recovery_s = time.monotonic() - t_sent
                res.details[f"rss_mb_round{k + 1}"] = rss_mb(r.service)
            res.details["flood_s"] = round(time.monotonic() - t0, 1)
            time.sleep(stale_s + 2.0)  # the beds still held go stale
            retained = read_retained(
                r.broker,
                [f"icu/{FLOOD_UNIT}/+/summary", f"icu/{FLOOD_UNIT}/+/alarms/#"],
                timeout=120,
            )
            summaries = {t.split("/")[2] for t in retained if t.endswith("/summary")}
            states = [
                (t.split("/")[2], p.get("state")) for t, p in retained.items() if "/alarms/" in t
            ]
            active = {bed for bed, state in states if state in ("active", "acknowledged")}
            res.details.update(
                beds_held=int(healthz(r.service)[1].get("beds", -1)),
                beds_evicted=int(r.service.metric("streamproc_beds_evicted_total")),
                retained_summaries=len(summaries),
                retained_active_beds=len(active),
                retained_cleared=sum(1 for _, state in states if state == "cleared"),
                rss_mb_end=rss_mb(r.service),
            )
            if len(active) > max_beds:
                res.problems.append(
                    f"{len(active):,} flood beds have a retained active alarm; at most "
                    f"{max_beds:,} are held, so {len(active) - max_beds:,}+ are for evicted beds"
                )
            if len(summaries) > max_beds:
                res.problems.append(
                    f"{len(summaries):,} flood beds have a retained summary; at most "
                    f"{max_beds:,} are held, so {len(summaries) - max_beds:,}+ are for evicted beds"
                )
            if r.service.proc is None or r.service.proc.poll() is not None:
                res.problems.append("the processor exited")
            paced.stop()
            episode = Episode(UNIT, BED, "hypotension", t0=hl.t0)
            check_episodes(res, r, obs.messages, [episode], other_kinds=True)

    return _run(res, body)


# -- table -------------------------------------------------------------------------------

FAULTS: dict[str, Callable[..., FaultResult]] = {
    "broker_kill": fault_broker_kill,
    "processor_kill": fault_processor_kill,
    "stall": fault_stall,
    "slow_subscriber": fault_slow_subscriber,
    "audit_unusable": fault_audit_unusable,
    "audit_write_error": functools.partial(fault_audit_runtime, how="write_error"),
    "audit_file_replaced": functools.partial(fault_audit_runtime, how="file_replaced"),
    "clock_jump": fault_clock_jump,
    "hostile_input": fault_hostile_input,
    # issue 16
    "kill_random": fault_kill_random,
    "kill_both": fault_kill_both,
    "dup_input": functools.partial(fault_input, how="dup"),
    "swap_input": functools.partial(fault_input, how="swap"),
    "replay_input": functools.partial(fault_input, how="replay"),
    "sigterm_burst": fault_sigterm_burst,
    "restart_ack_silent": fault_restart_ack_silent,
    "flood_ids": fault_flood_ids,
}


def markdown_table(results: Mapping[str, Sequence[FaultResult]]) -> str:
    """fault | tries | alarms expected | lost | duplicate ids | false cleared | recovery."""
    head = (
        "| fault | tries | alarms expected | lost | duplicate ids | false cleared "
        "| recovery median / max | recovery measured as | failed runs |"
    )
    rows = [
        head,
        "|---|---:|---:|---:|---:|---:|---|---|---:|",
    ]
    for runs in results.values():
        if not runs:
            continue
        recs = [r.recovery_s for r in runs if r.recovery_s is not None]
        rec = f"{statistics.median(recs):.2f} s / {max(recs):.2f} s" if recs else "n/a"
        rows.append(
            f"| {runs[0].fault} | {len(runs)} | {sum(r.expected for r in runs)} "
            f"| {sum(r.lost for r in runs)} | {sum(r.duplicate_ids for r in runs)} "
            f"| {sum(r.false_cleared for r in runs)} | {rec} "
            f"| {runs[0].recovery_what} | {sum(not r.ok for r in runs)} |"
        )
    return "\n".join(rows) + "\n"
