"""Soak test: a simulated ward against a live streamproc, each bed checked against its ground truth.

``streamproc-sim soak`` subscribes to ``{root}/+/+/alarms/#`` (before anything
is published), publishes the ward as ``streamproc-sim publish`` does, waits a
grace period after the end, then runs ``simulators.scenario.check`` on every
bed's alarms and prints, per scenario: beds, expected alarm transitions, met,
missed, false (a ``state = "none"`` expectation violated), late (outside the
window), wrong (step or recommendation text), skipped.

Stale alarms of earlier runs are kept out two ways: retained messages (what the
broker replays on subscribe) are ignored, and every run uses fresh unit ids
(``s{seed}-{time}-w1``, ... unless ``--units``/``--unit-prefix``), so a service
that is still running from an earlier soak has no state for these beds either.

The service is either already running against the broker (``streamproc run
--broker URL``), or ``--spawn-service`` starts ``python -m streamproc run`` as a
child process (serving only the soak's units, with its own audit database in a
temporary directory) and stops it at the end. A spawned service is sampled every
``--sample-s`` (its RSS from ``/proc`` and its ``/metrics``): the report gives the
memory growth from the first sample after ``--warmup-s`` to the last
(:func:`memory_growth`), messages in and out, and the p99 of
``streamproc_processing_latency_seconds`` (:func:`histogram_quantile`), over the
whole run and after the warm-up.

Wall-clock alarms: the live service times ``data_stale`` on its own clock, so
at ``--speed S`` a bed that falls silent at data time ``q`` raises it ``stale_s``
*wall* seconds later, at data time ``q/S + stale_s`` rather than ``q + stale_s``.
The soak shifts those expectations' windows by ``q - q/S`` (and skips them at
``--speed 0``); every other alarm is timed on the data and checked as written.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Final

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from simulators.publisher import (
    MqttSink,
    PublishStats,
    SimError,
    clear_retained,
    parse_broker_url,
    retained_topics,
    send_ward,
    sim_client,
)
from simulators.scenario import Expectation, Scenario, check
from simulators.ward import Bed

__all__ = [
    "WALL_CLOCK_KINDS",
    "AlarmCollector",
    "BedResult",
    "SoakReport",
    "SpawnedService",
    "bucket_delta",
    "classify",
    "default_unit_prefix",
    "evaluate",
    "histogram_quantile",
    "live_expectations",
    "memory_growth",
    "run_soak",
    "scrape",
    "service_figures",
]

#: Alarm kinds the live service times on its own (wall) clock.
WALL_CLOCK_KINDS: Final = frozenset({"data_stale"})
_B36: Final = "0123456789abcdefghijklmnopqrstuvwxyz"


def default_unit_prefix(seed: int, now: float | None = None) -> str:
    """A unit prefix fresh for this run: ``s{seed}-{time in base 36}-w``."""
    n = int((time.time() if now is None else now) * 10) % 36**6
    digits = ""
    for _ in range(6):
        n, r = divmod(n, 36)
        digits = _B36[r] + digits
    return f"s{seed}-{digits}-w"


# --------------------------------------------------------------------------- alarms


class AlarmCollector:
    """Every live (not retained) alarm payload under ``{root}/+/+/alarms/#``, by bed.

    A paho client on its own network thread; :meth:`start` returns once the
    broker has acknowledged the subscription.
    """

    def __init__(
        self,
        url: str,
        root: str = "icu",
        *,
        units: Sequence[str] | None = None,
        timeout: float = 10.0,
    ) -> None:
        self.url = url
        self.units = None if units is None else frozenset(units)
        self.host, self.port, tls = parse_broker_url(url)
        self.filter = f"{root}/+/+/alarms/#"
        self.timeout = timeout
        self.client = sim_client(
            f"streamproc-sim-soak-{os.getpid()}-{uuid.uuid4().hex[:6]}", tls=tls
        )
        self.client.on_connect = self._on_connect
        self.client.on_subscribe = self._on_subscribe
        self.client.on_message = self._on_message
        self._subscribed = threading.Event()
        self._lock = threading.Lock()
        self.by_bed: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
        self.topics: set[str] = set()
        self.received = 0
        self.retained_ignored = 0
        self.undecodable = 0

    def _on_connect(
        self,
        client: mqtt.Client,
        _userdata: object,
        _flags: mqtt.ConnectFlags,
        reason_code: ReasonCode,
        _properties: Properties | None,
    ) -> None:
        if not reason_code.is_failure:
            client.subscribe(self.filter, qos=1)

    def _on_subscribe(
        self,
        _client: mqtt.Client,
        _userdata: object,
        _mid: int,
        _reason_codes: list[ReasonCode],
        _properties: Properties | None,
    ) -> None:
        self._subscribed.set()

    def _on_message(self, _client: mqtt.Client, _userdata: object, msg: mqtt.MQTTMessage) -> None:
        if msg.retain:
            self.retained_ignored += 1  # an earlier run's state, replayed on subscribe
            return
        if not msg.payload:
            return
        try:
            payload = json.loads(msg.payload)
            key = (str(payload["unit"]), str(payload["bed"]))
        except (ValueError, KeyError, TypeError):
            self.undecodable += 1
            return
        if self.units is not None and key[0] not in self.units:
            return  # another unit's alarm on a shared broker
        with self._lock:
            self.by_bed[key].append(payload)
            self.topics.add(msg.topic)
            self.received += 1

    def start(self) -> AlarmCollector:
        try:
            self.client.connect(self.host, self.port, keepalive=30)
        except OSError as exc:
            raise SimError(f"cannot connect to {self.url}: {exc}") from exc
        self.client.loop_start()
        if not self._subscribed.wait(self.timeout):
            self.stop()
            raise SimError(f"no SUBACK for {self.filter} from {self.url} in {self.timeout:g} s")
        return self

    def stop(self) -> None:
        with contextlib.suppress(Exception):
            self.client.disconnect()
        self.client.loop_stop()

    def alarms(self, unit: str, bed: str) -> list[dict[str, Any]]:
        with self._lock:
            return list(self.by_bed.get((unit, bed), ()))


# --------------------------------------------------------------------------- the service


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def scrape(text: str) -> dict[str, float]:
    """Prometheus text exposition as ``{"name{labels}": value}`` (comments skipped)."""
    out: dict[str, float] = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        key, _, value = line.rpartition(" ")
        with contextlib.suppress(ValueError):
            out[key] = float(value)
    return out


def _total(samples: dict[str, float], name: str) -> float:
    """The sum of every sample of ``name`` (all label sets)."""
    return sum(v for k, v in samples.items() if k == name or k.startswith(name + "{"))


LATENCY: Final = "streamproc_processing_latency_seconds"


def _buckets(samples: dict[str, float], name: str = LATENCY) -> list[tuple[float, float]]:
    """A histogram's cumulative buckets as ``[(upper bound, count), ...]``, ascending."""
    out = []
    prefix = name + '_bucket{le="'
    for key, value in samples.items():
        if key.startswith(prefix):
            bound = key[len(prefix) :].split('"', 1)[0]
            out.append((math.inf if bound == "+Inf" else float(bound), value))
    return sorted(out)


def histogram_quantile(q: float, buckets: Sequence[tuple[float, float]]) -> float | None:
    """The ``q`` quantile of cumulative histogram ``buckets`` (Prometheus' interpolation).

    Linear within the bucket the quantile falls in; the lowest bucket starts at 0; a
    quantile in the ``+Inf`` bucket is the highest finite bound. None without observations.
    """
    if not buckets or buckets[-1][1] <= 0:
        return None
    rank = q * buckets[-1][1]
    prev_bound, prev_count = 0.0, 0.0
    for bound, count in buckets:
        if count >= rank:
            if math.isinf(bound):
                return prev_bound
            if count == prev_count:
                return bound
            return prev_bound + (bound - prev_bound) * (rank - prev_count) / (count - prev_count)
        prev_bound, prev_count = bound, count
    return prev_bound  # pragma: no cover - the +Inf bucket holds every observation


def bucket_delta(
    earlier: Sequence[tuple[float, float]], later: Sequence[tuple[float, float]]
) -> list[tuple[float, float]]:
    """Cumulative buckets ``later`` minus ``earlier`` (the observations in between)."""
    base = dict(earlier)
    return [(bound, count - base.get(bound, 0.0)) for bound, count in later]


def memory_growth(samples: Sequence[dict[str, Any]], warmup_s: float) -> dict[str, Any]:
    """RSS growth from the first sample at or after ``warmup_s`` to the last, in %.

    Each sample has ``t_s`` (since the service was up) and ``rss_kb``.
    """
    rss = [(s["t_s"], s["rss_kb"]) for s in samples if s.get("rss_kb")]
    after = [(t, kb) for t, kb in rss if t >= warmup_s]
    out: dict[str, Any] = {
        "samples": len(rss),
        "warmup_s": warmup_s,
        "rss_mb_series": [[round(t, 1), round(kb / 1024, 1)] for t, kb in rss],
        "rss_mb_start": round(rss[0][1] / 1024, 1) if rss else None,
        "rss_mb_peak": round(max(kb for _, kb in rss) / 1024, 1) if rss else None,
    }
    if len(after) >= 2:
        (t0, first), (t1, last) = after[0], after[-1]
        out.update(
            rss_mb_after_warmup=round(first / 1024, 1),
            rss_mb_end=round(last / 1024, 1),
            growth_pct=round(100.0 * (last - first) / first, 2),
            measured_over_s=round(t1 - t0, 1),
        )
    else:
        out.update(growth_pct=None, note="fewer than two samples after the warm-up")
    return out


def service_figures(samples: Sequence[dict[str, Any]], warmup_s: float) -> dict[str, Any]:
    """Memory growth, messages in/out and processing-latency p99 from the service's samples."""
    if not samples:
        return {}
    last = samples[-1]
    figures: dict[str, Any] = {"memory": memory_growth(samples, warmup_s)}
    figures["messages"] = {
        k: int(last.get(k, 0))
        for k in ("messages_in", "rejected", "alarms_out", "ingress_dropped", "publish_dropped")
    }
    end = last.get("latency_buckets") or []
    p99 = histogram_quantile(0.99, end)
    warm = next((s for s in samples if s["t_s"] >= warmup_s), None)
    p99_after = None
    if warm is not None and warm is not last:
        p99_after = histogram_quantile(0.99, bucket_delta(warm.get("latency_buckets") or [], end))
    figures["latency"] = {
        "p99_ms": None if p99 is None else round(p99 * 1000, 2),
        "p99_ms_after_warmup": None if p99_after is None else round(p99_after * 1000, 2),
        "p50_ms": _ms(histogram_quantile(0.5, end)),
        "observations": int(end[-1][1]) if end else 0,
        "metric": LATENCY,
    }
    return figures


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 2)


def _proc_status_kb(pid: int, key: str) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return None


class SpawnedService:
    """``python -m streamproc run`` as a child: own instance, audit db, metrics port, units.

    Its broker session is persistent (the service asks for one); :meth:`stop`
    removes it and the retained status message, so a soak leaves no trace
    on a shared broker.
    """

    def __init__(
        self,
        url: str,
        *,
        units: Sequence[str],
        root: str = "icu",
        settings: Sequence[str] = (),
        instance: str | None = None,
        sample_s: float = 60.0,
    ) -> None:
        self.url = url
        self.root = root
        self.sample_s = sample_s
        #: One entry every ``sample_s`` while running (see :meth:`snapshot`), and one at the end.
        self.samples: list[dict[str, Any]] = []
        self._up_at = 0.0
        self._next_snapshot = 0.0
        self.units = list(units)
        self.settings = list(settings)
        self.instance = instance or f"sim-{uuid.uuid4().hex[:8]}"
        self.workdir = Path(tempfile.mkdtemp(prefix="streamproc-soak-"))
        self.log_path = self.workdir / "streamproc.log"
        self.metrics_port = _free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.max_ingress = 0
        self.max_outbox = 0
        self.peak_rss_kb = 0
        self._sampler: threading.Thread | None = None
        self._stop_sampling = threading.Event()
        self.exit_code: int | None = None

    def start(self, timeout: float = 40.0) -> SpawnedService:
        env = dict(os.environ)
        env.update(
            STREAMPROC_AUDIT_DB=str(self.workdir / "audit.sqlite3"),
            STREAMPROC_INSTANCE=self.instance,
            PYTHONUNBUFFERED="1",
        )
        args = [
            sys.executable,
            "-m",
            "streamproc",
            "run",
            "--broker",
            self.url,
            "--metrics-port",
            str(self.metrics_port),
            "--units",
            ",".join(self.units),
        ]
        if self.root != "icu":
            args += ["--set", f"service.root={self.root}"]
        for item in self.settings:
            args += ["--set", item]
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(  # noqa: S603 - our own interpreter and module
                args,
                cwd=self.workdir,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise SimError(
                    f"streamproc exited with {self.proc.returncode} at start:\n{self.log_tail()}"
                )
            health = self.health()
            if health and health.get("broker_connected"):
                self._up_at = time.monotonic()
                self._next_snapshot = self._up_at
                self._sampler = threading.Thread(target=self._sample, daemon=True)
                self._sampler.start()
                return self
            time.sleep(0.1)
        self.stop()
        raise SimError(f"streamproc not healthy within {timeout:g} s:\n{self.log_tail()}")

    def health(self) -> dict[str, Any] | None:
        url = f"http://127.0.0.1:{self.metrics_port}/healthz"
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:
                return dict(json.loads(resp.read()))
        except urllib.error.HTTPError as exc:  # 503 while degraded: the body still says why
            with contextlib.suppress(ValueError):
                return dict(json.loads(exc.read()))
            return None
        except (OSError, ValueError):
            return None

    def metric(self, name: str) -> float:
        """The sum of a metric's samples from /metrics (0 when absent or unreachable)."""
        url = f"http://127.0.0.1:{self.metrics_port}/metrics"
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:
                text = resp.read().decode()
        except OSError:
            return 0.0
        total = 0.0
        for line in text.splitlines():
            key, _, value = line.rpartition(" ")
            if key == name or key.startswith(name + "{"):
                with contextlib.suppress(ValueError):
                    total += float(value)
        return total

    def scrape(self) -> dict[str, float]:
        """Every sample of the service's /metrics ({} when unreachable)."""
        url = f"http://127.0.0.1:{self.metrics_port}/metrics"
        try:
            with urllib.request.urlopen(url, timeout=5) as resp:
                return scrape(resp.read().decode())
        except OSError:
            return {}

    def snapshot(self) -> dict[str, Any]:
        """Now: seconds since the service was up, its RSS, and its counters and latency."""
        m = self.scrape()
        snap: dict[str, Any] = {
            "t_s": round(time.monotonic() - self._up_at, 2),
            "rss_kb": self.rss_kb(),
            "messages_in": _total(m, "streamproc_messages_in_total"),
            "rejected": _total(m, "streamproc_messages_rejected_total"),
            "alarms_out": _total(m, "streamproc_alarms_total"),
            "ingress_dropped": _total(m, "streamproc_ingress_dropped_total"),
            "publish_dropped": _total(m, "streamproc_publish_dropped_total"),
            "beds": _total(m, "streamproc_beds_tracked"),
            "latency_buckets": _buckets(m),
        }
        self.samples.append(snap)
        return snap

    def _sample(self) -> None:
        while not self._stop_sampling.wait(0.5):
            self._sample_once()
            if time.monotonic() >= self._next_snapshot:
                self._next_snapshot += self.sample_s
                self.snapshot()

    def stop_sampling(self, timeout: float) -> None:
        """End the sampling thread (waiting up to ``timeout`` s for it): no sample after this."""
        self._stop_sampling.set()
        if self._sampler is not None:
            self._sampler.join(timeout)

    def _sample_once(self) -> None:
        health = self.health() or {}
        self.max_ingress = max(self.max_ingress, int(health.get("ingress", 0)))
        self.max_outbox = max(self.max_outbox, int(health.get("outbox", 0)))
        if self.proc is not None:
            hwm = _proc_status_kb(self.proc.pid, "VmHWM")
            if hwm:
                self.peak_rss_kb = max(self.peak_rss_kb, hwm)

    def rss_kb(self) -> int | None:
        return None if self.proc is None else _proc_status_kb(self.proc.pid, "VmRSS")

    def wait_drained(self, timeout: float = 120.0) -> bool:
        """Until the service has processed and published everything it received."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            health = self.health() or {}
            if health.get("ingress", 1) == 0 and health.get("outbox", 1) == 0:
                return True
            time.sleep(0.2)
        return False

    def log_tail(self, n: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return "(no log)"

    def stop(self, timeout: float = 20.0) -> int | None:
        """SIGTERM (then SIGKILL), and remove the service's session and status message."""
        self._stop_sampling.set()
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self._sample_once()
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.exit_code = self.proc.returncode
        with contextlib.suppress(SimError, OSError):
            self._forget_session()
        return self.exit_code

    def _forget_session(self) -> None:
        host, port, tls = parse_broker_url(self.url)
        done = threading.Event()
        client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=f"streamproc-{self.instance}",
            protocol=mqtt.MQTTv5,
        )
        if tls:
            client.tls_set()
        client.on_connect = lambda *_a: done.set()
        props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        props.SessionExpiryInterval = 0
        client.connect(host, port, clean_start=True, properties=props)
        client.loop_start()
        try:
            done.wait(5)
            info = client.publish(f"{self.root}/_status/{self.instance}", b"", qos=1, retain=True)
            info.wait_for_publish(5)
        finally:
            client.disconnect()
            client.loop_stop()

    def cleanup(self) -> None:
        shutil.rmtree(self.workdir, ignore_errors=True)


# --------------------------------------------------------------------------- checking


def live_expectations(
    sc: Scenario, speed: float, offset_s: float = 0.0
) -> tuple[Scenario, tuple[Expectation, ...]]:
    """``sc`` with its wall-clock expectations as the live service meets them at ``speed``.

    See the module's docstring; ``offset_s`` is how much later than the
    publishing start (the data time that was "now") the bed's ``t0`` is.
    Returns the scenario and the expectations that cannot be checked at this
    speed (``data_stale`` at speed 0).
    """
    if speed == 1:
        return sc, ()
    silent_at = offset_s + (sc.duration_s if sc.silent_after_s is None else sc.silent_after_s)
    keep: list[Expectation] = []
    skipped: list[Expectation] = []
    for exp in sc.expect:
        if exp.kind not in WALL_CLOCK_KINDS or exp.state == "none":
            keep.append(exp)
        elif speed <= 0:
            skipped.append(exp)
        else:
            shift = silent_at - silent_at / speed
            keep.append(replace(exp, after_s=exp.after_s - shift, before_s=exp.before_s - shift))
    return replace(sc, expect=tuple(keep)), tuple(skipped)


CATEGORIES: Final = ("met", "missed", "false", "late", "wrong")
"""``met``: as expected; ``missed``: an expected transition never came; ``false``: an alarm
that a ``state = "none"`` expectation forbids; ``late``: outside its window (early too);
``wrong``: the step or the recommendation's words differ."""


def classify(sc: Scenario, exp: Expectation, alarms: list[dict[str, Any]]) -> tuple[str, list[str]]:
    """One expectation's outcome (one of :data:`CATEGORIES`) and ``check``'s words for it."""
    problems = check(replace(sc, expect=(exp,)), alarms)
    if not problems:
        return "met", []
    if exp.state == "none":
        return "false", problems
    if any(": missed " in p for p in problems):
        return "missed", problems
    if any("expected within" in p for p in problems):
        return "late", problems
    return "wrong", problems


@dataclass(slots=True)
class BedResult:
    """One bed's outcome."""

    unit: str
    bed: str
    scenario: str
    seed: int
    counts: Counter[str] = field(default_factory=Counter)
    problems: list[str] = field(default_factory=list)
    skipped: int = 0
    alarms: int = 0

    @property
    def key(self) -> str:
        return f"{self.unit}/{self.bed}"


def evaluate(
    beds: Sequence[Bed],
    scenarios: Sequence[Scenario],
    collector: AlarmCollector,
    speed: float,
    start: float | None = None,
) -> list[BedResult]:
    """Check every bed's alarms against its (live-adjusted) expectations.

    ``start`` is the data time publishing started at (the beds' ``t0`` may be staggered).
    """
    results = []
    for bed, sc in zip(beds, scenarios, strict=True):
        offset = 0.0 if start is None else sc.t0 - start
        live, skipped = live_expectations(sc, speed, offset)
        alarms = collector.alarms(sc.unit, sc.bed)
        res = BedResult(
            sc.unit,
            sc.bed,
            sc.name,
            sc.seed,
            skipped=len(skipped) + len(bed.skipped),
            alarms=len(alarms),
        )
        for exp in live.expect:
            res.counts["expected" if exp.state != "none" else "no_alarm"] += 1
            category, problems = classify(live, exp, alarms)
            if category == "met" and exp.state == "none":
                category = "held"
            res.counts[category] += 1
            res.problems.extend(problems)
        results.append(res)
    return results


@dataclass(slots=True)
class SoakReport:
    """Everything a soak found, printable and as JSON."""

    results: list[BedResult]
    publish: PublishStats
    wall_s: float
    options: dict[str, Any]
    service: dict[str, Any] | None = None
    collector: dict[str, Any] = field(default_factory=dict)

    def per_scenario(self) -> dict[str, Counter[str]]:
        table: dict[str, Counter[str]] = defaultdict(Counter)
        for r in self.results:
            row = table[r.scenario]
            row["beds"] += 1
            for k, v in r.counts.items():
                row[k] += v
            row["skipped"] += r.skipped
            row["alarms"] += r.alarms
        return dict(sorted(table.items()))

    def totals(self) -> Counter[str]:
        total: Counter[str] = Counter()
        for row in self.per_scenario().values():
            total.update(row)
        return total

    @property
    def missed_beds(self) -> list[BedResult]:
        return [r for r in self.results if r.counts["missed"]]

    @property
    def problem_beds(self) -> list[BedResult]:
        return [r for r in self.results if r.problems]

    def as_dict(self) -> dict[str, Any]:
        return {
            "options": self.options,
            "wall_s": round(self.wall_s, 3),
            "publish": self.publish.as_dict(),
            "per_scenario": {k: dict(v) for k, v in self.per_scenario().items()},
            "totals": dict(self.totals()),
            "problems": {
                r.key: {"scenario": r.scenario, "seed": r.seed, "problems": r.problems}
                for r in self.problem_beds
            },
            "service": self.service,
            "collector": self.collector,
        }

    def render(self) -> Any:
        """A rich table per scenario, plus totals."""
        from rich.table import Table  # noqa: PLC0415 - rich only to print

        cols = (
            "beds",
            "expected",
            "met",
            "missed",
            "late",
            "wrong",
            "no_alarm",
            "false",
            "skipped",
            "alarms",
        )
        table = Table(title="streamproc-sim soak: alarms against ground truth")
        table.add_column("scenario")
        for c in cols:
            table.add_column(c, justify="right")
        for name, row in self.per_scenario().items():
            table.add_row(name, *(str(row[c]) for c in cols))
        total = self.totals()
        table.add_row("total", *(str(total[c]) for c in cols), style="bold")
        return table


# --------------------------------------------------------------------------- the run


def _wall_deadline(scenarios: Sequence[Scenario], speed: float, start: float) -> float:
    """The latest epoch time a wall-clock expectation's window closes (0 if none)."""
    latest = 0.0
    for sc in scenarios:
        live, _ = live_expectations(sc, speed, sc.t0 - start)
        for exp in live.expect:
            if exp.kind in WALL_CLOCK_KINDS and exp.state != "none":
                latest = max(latest, sc.t0 + exp.before_s)
    return latest


def run_soak(
    beds: list[Bed],
    *,
    url: str,
    speed: float,
    qos: int = 1,
    root: str = "icu",
    progress: bool = False,
    grace_s: float = 5.0,
    spawn_service: bool = False,
    service_settings: Sequence[str] = (),
    sample_s: float = 60.0,
    warmup_s: float = 0.0,
    clear: bool = True,
    options: dict[str, Any] | None = None,
    log: Callable[[str], None] | None = None,
) -> SoakReport:
    """Subscribe, (spawn the service,) publish the ward, wait, check every bed.

    ``log`` gets progress notes. A spawned service is sampled every ``sample_s`` (RSS and
    /metrics); its memory growth is counted from the first sample after ``warmup_s``.
    """

    def note(text: str) -> None:
        if log is not None:
            log(text)

    started = time.monotonic()
    units = sorted({b.scenario.unit for b in beds})
    collector = AlarmCollector(url, root, units=units).start()
    service: SpawnedService | None = None
    service_info: dict[str, Any] | None = None
    stats = PublishStats()
    try:
        if spawn_service:
            settings = list(service_settings)
            if speed != 1 and not any(x.startswith("service.max_future_s=") for x in settings):
                # accelerated data runs ahead of the wall clock by design: not the gateway
                # clock error service.max_future_s guards against (it would refuse it all)
                settings.append("service.max_future_s=0")
            service = SpawnedService(
                url, units=units, root=root, settings=settings, sample_s=sample_s
            )
            note(f"starting streamproc (instance {service.instance}, log {service.log_path})")
            service.start()
            note(f"streamproc running, pid {service.proc.pid if service.proc else '?'}")
        note(f"publishing {len(beds)} beds in units {units[0]}..{units[-1]} at speed {speed:g}")
        with MqttSink(url) as sink:
            stats, scenarios = send_ward(
                beds, sink, speed=speed, qos=qos, root=root, progress=progress
            )
        drained = None
        if service is not None:
            drained = service.wait_drained()
        deadline = max(time.time() + grace_s, _wall_deadline(scenarios, speed, stats.t0) + 1.0)
        note(f"published; waiting {max(deadline - time.time(), 0):.1f} s for late alarms")
        while time.time() < deadline:
            time.sleep(min(0.2, max(deadline - time.time(), 0.0)))
        results = evaluate(beds, scenarios, collector, speed, stats.t0)
        if service is not None:
            rss = service.rss_kb()
            service.stop_sampling(10)  # the last sample is this one
            service.snapshot()
            service_info = {
                "pid": service.proc.pid if service.proc else None,
                "instance": service.instance,
                "rss_mb": None if rss is None else round(rss / 1024, 1),
                "messages_in": service.metric("streamproc_messages_in_total"),
                "rejected": service.metric("streamproc_messages_rejected_total"),
                "ingress_dropped": service.metric("streamproc_ingress_dropped_total"),
                "drained": drained,
                "sample_s": sample_s,
                **service_figures(service.samples, warmup_s),
                "samples": [
                    {k: v for k, v in snap.items() if k != "latency_buckets"}
                    for snap in service.samples
                ],
            }
    finally:
        collector.stop()
        if service is not None:
            code = service.stop()
            if service_info is not None:
                service_info.update(
                    exit_code=code,
                    peak_rss_mb=round(service.peak_rss_kb / 1024, 1),
                    max_ingress=service.max_ingress,
                    max_outbox=service.max_outbox,
                )
            service.cleanup()
        if clear:
            # everything retained under the run's units: alarms, summaries, patient, infusion
            try:
                found = retained_topics(url, root, frozenset(units).__contains__)
                n = clear_retained(url, found | collector.topics | stats.retained_topics)
                note(f"cleared {n} retained topics")
            except SimError as exc:  # never hide why the run itself failed
                note(f"could not clear the retained topics: {exc}")
    return SoakReport(
        results=results,
        publish=stats,
        wall_s=time.monotonic() - started,
        options=dict(options or {}),
        service=service_info,
        collector={
            "alarm_messages": collector.received,
            "retained_ignored": collector.retained_ignored,
            "undecodable": collector.undecodable,
        },
    )
