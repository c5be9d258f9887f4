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
import resource
import socket
import statistics
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from simulators.scenario import Scenario, load_scenario, merge, render_timed, scenario_dir
from streamproc.audit import AuditError, AuditLog
from streamproc.service import AUDIT_RETRY_S
from tests.broker import MosquittoBroker, Received, Subscriber
from tests.service_helpers import Publisher, ServiceProcess, alarm, is_alarm

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


@dataclass
class FaultResult:
    """What one run of one fault showed."""

    fault: str
    recovery_what: str
    expected: int = 1
    delivered: int = 0
    duplicate_ids: int = 0
    recovery_s: float | None = None
    problems: list[str] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def lost(self) -> int:
        return self.expected - self.delivered

    @property
    def ok(self) -> bool:
        return not self.problems and self.lost == 0 and self.duplicate_ids == 0

    def summary(self) -> str:
        rec = "n/a" if self.recovery_s is None else f"{self.recovery_s:.2f} s"
        extra = ", ".join(f"{k}={v}" for k, v in self.details.items())
        return (
            f"{self.fault}: delivered {self.delivered}/{self.expected}, duplicate ids "
            f"{self.duplicate_ids}, recovery ({self.recovery_what}) {rec}; {extra}"
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
    ) -> None:
        workdir.mkdir(parents=True, exist_ok=True)
        self.workdir = workdir
        self.broker = MosquittoBroker(binary=mosquitto_bin, workdir=workdir / "mosquitto")
        self.service = ServiceProcess(self.broker, workdir, env=env, log_pipe=log_pipe)
        self._closers: list[Callable[[], None]] = []

    def start(self) -> Rig:
        self.broker.start()
        self._closers.append(self.broker.close)
        self.service.start()
        self._closers.append(self.service.close)
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
) -> Iterator[Rig]:
    r = Rig(workdir, mosquitto_bin=mosquitto_bin, env=env, log_pipe=log_pipe)
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
        res.details["audit_raised"] = raised_audit
        if raised_audit == 0:
            res.problems.append("no 'raised' row in the audit db")
    res.details["log_raised"] = len(raised_log)
    res.details["alarm_ids"] = len(ids)
    res.duplicate_ids = max(len(ids) - 1, len(raised_log) - 1, raised_audit - 1, 0)


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
            failed = [ln for ln in r.service.log_lines() if ln.get("event") == "audit_failed"]
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
}


def markdown_table(results: Mapping[str, Sequence[FaultResult]]) -> str:
    """fault | tries | alarms expected | lost | duplicate ids | recovery median / max."""
    head = (
        "| fault | tries | alarms expected | lost | duplicate ids | recovery median / max "
        "| recovery measured as | failed runs |"
    )
    rows = [
        head,
        "|---|---:|---:|---:|---:|---|---|---:|",
    ]
    for runs in results.values():
        if not runs:
            continue
        recs = [r.recovery_s for r in runs if r.recovery_s is not None]
        rec = f"{statistics.median(recs):.2f} s / {max(recs):.2f} s" if recs else "n/a"
        rows.append(
            f"| {runs[0].fault} | {len(runs)} | {sum(r.expected for r in runs)} "
            f"| {sum(r.lost for r in runs)} | {sum(r.duplicate_ids for r in runs)} | {rec} "
            f"| {runs[0].recovery_what} | {sum(not r.ok for r in runs)} |"
        )
    return "\n".join(rows) + "\n"
