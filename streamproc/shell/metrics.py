"""Prometheus metrics and the small HTTP endpoint that serves them.

:class:`ServiceMetrics` owns its own :class:`prometheus_client.CollectorRegistry`
(never the process-global one), so tests and several service instances in
one process do not collide. Every metric is a public attribute the shell
moves directly (``metrics.broker_connected.set(1)``); the few that need a
translation from core types have a method (:meth:`ServiceMetrics.observe_alarm`,
:meth:`ServiceMetrics.rejected`, :meth:`ServiceMetrics.message_in`,
:meth:`ServiceMetrics.sync_engine`, :meth:`ServiceMetrics.alarms_open_from`).

:func:`serve_metrics` is a deliberately small HTTP/1.1 server on
:func:`asyncio.start_server` (no extra dependency): ``GET /metrics`` and
``GET /healthz``, one request per connection, bounded request size and time,
and no client can make it raise.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
from bisect import bisect_left
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any, Final

import numpy as np
import numpy.typing as npt
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    generate_latest,
)
from prometheus_client.core import HistogramMetricFamily

from streamproc import __version__
from streamproc.core.engine import Engine
from streamproc.core.protocol.alarms import AlarmEvent, Priority
from streamproc.core.signal.ordering import DropReason
from streamproc.shell.logs import get_logger
from streamproc.wire.codec import ERROR_CODES, INBOUND_KINDS

__all__ = [
    "LATENCY_BUCKETS",
    "MAX_REQUEST_BYTES",
    "PREFIX",
    "REQUEST_TIMEOUT_S",
    "HealthCheck",
    "ServiceMetrics",
    "render",
    "serve_metrics",
]

log = get_logger("streamproc.shell.metrics")

PREFIX: Final = "streamproc_"
#: Processing latency buckets (seconds): 50 µs to 1 s, roughly 1-2.5-5 per decade.
LATENCY_BUCKETS: Final[tuple[float, ...]] = (
    0.00005,
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
)

#: What a health check returns: healthy or not, and details for the JSON body.
HealthCheck = Callable[[], tuple[bool, Mapping[str, Any]]]


#: Batches up to this size are counted value by value (cheaper than numpy's calls).
_SMALL_BATCH = 4


class BatchHistogram:
    """A Prometheus histogram that takes a whole batch of observations in one call.

    prometheus-client's :class:`~prometheus_client.Histogram` costs a few µs
    per ``observe`` (a lock and a bucket search in Python); the service
    observes every message's latency, so it counts a batch with one numpy
    bucket search instead. Exposed exactly like a ``Histogram`` (``_bucket``
    with ``le``, ``_count``, ``_sum``).
    """

    def __init__(
        self,
        name: str,
        documentation: str,
        *,
        buckets: Sequence[float],
        registry: CollectorRegistry,
    ) -> None:
        self.name = name
        self.documentation = documentation
        self._bounds = np.asarray(sorted(buckets), np.float64)
        self._bound_list: list[float] = self._bounds.tolist()
        self._counts = np.zeros(self._bounds.size + 1, np.int64)  # last: above every bound
        self._sum = 0.0
        registry.register(self)

    def observe(self, value: float) -> None:
        """One observation."""
        self.observe_many(np.asarray([value], np.float64))

    def observe_list(self, values: list[float]) -> None:
        """A few values, by bisection (the buckets ``observe_many`` gives them)."""
        bounds = self._bound_list
        for v in values:
            # NaN above every bound, as numpy's searchsorted puts it
            self._counts[bisect_left(bounds, v) if v == v else len(bounds)] += 1  # noqa: PLR0124
            self._sum += v

    def observe_many(self, values: npt.NDArray[np.float64]) -> None:
        """Every value of ``values`` (``le`` buckets: a value equal to a bound counts in it)."""
        if values.size <= _SMALL_BATCH:
            # a few values (a live ward's batch is often one message): numpy's fixed
            # cost per call would exceed the work; the same buckets, by bisection
            self.observe_list(values.tolist())
            return
        idx = np.searchsorted(self._bounds, values, side="left")
        self._counts += np.bincount(idx, minlength=self._counts.size)
        self._sum += float(values.sum())

    def collect(self) -> Iterator[HistogramMetricFamily]:
        cumulative = np.cumsum(self._counts).tolist()
        buckets = [(repr(b), c) for b, c in zip(self._bounds.tolist(), cumulative, strict=False)]
        buckets.append(("+Inf", cumulative[-1]))
        yield HistogramMetricFamily(
            self.name, self.documentation, buckets=buckets, sum_value=self._sum
        )


class ServiceMetrics:
    """Every metric streamproc exports, in a registry of its own."""

    def __init__(self, *, version: str = __version__) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        reg = self.registry
        self._in_by_kind: dict[str, Any] = {}

        def name(short: str) -> str:
            return PREFIX + short

        # ---------------------------------------------------------------- inbound
        self.messages_in_total = Counter(
            name("messages_in"),
            "Inbound messages decoded and handed to the core, by kind.",
            ["kind"],
            registry=reg,
        )
        self.messages_rejected_total = Counter(
            name("messages_rejected"),
            "Inbound messages rejected by the codec or topic parser, by CodecError code.",
            ["reason"],
            registry=reg,
        )
        self.messages_dropped_total = Counter(
            name("messages_dropped"),
            "Inbound messages the core did not take by its data-time rules, by reason: "
            "duplicate (data the bed took already: a QoS 1 re-delivery, a gateway re-sending "
            "its last minutes), late (older than what the bed took, past the reorder window). "
            "Never errors of the processor; a steady rate of late points at a gateway.",
            ["reason"],
            registry=reg,
        )
        self.messages_foreign_total = Counter(
            name("messages_foreign"),
            "Inbound messages for care units another instance owns (service.shard without "
            "service.units), dropped unread. Not errors.",
            registry=reg,
        )
        # --------------------------------------------------------------- the core
        self.beats_total = Counter(
            name("beats"), "Beats detected in the arterial waveform.", registry=reg
        )
        self.beats_valid_total = Counter(
            name("beats_valid"), "Detected beats that passed the quality checks.", registry=reg
        )
        self.alarms_total = Counter(
            name("alarms"),
            "Alarm transitions published, by kind, priority and resulting state.",
            ["kind", "priority", "state"],
            registry=reg,
        )
        self.alarms_open = Gauge(
            name("alarms_open"),
            "Alarms raised and not cleared (active or acknowledged), by priority.",
            ["priority"],
            registry=reg,
        )
        self.processing_latency_seconds = BatchHistogram(
            name("processing_latency_seconds"),
            "Time from a message's arrival to the end of the batch that processed it.",
            buckets=LATENCY_BUCKETS,
            registry=reg,
        )
        self.loop_lag_seconds = BatchHistogram(
            name("loop_lag_seconds"),
            "How late the event loop ran a 20 ms watch timer: how long any message or alarm "
            "could have waited for the loop (GC pauses, long batches, a starved host).",
            buckets=LATENCY_BUCKETS,
            registry=reg,
        )
        self.beds_tracked = Gauge(
            name("beds_tracked"), "Beds the core currently holds state for.", registry=reg
        )
        self.beds_evicted_total = Counter(
            name("beds_evicted"), "Beds dropped to stay under max_beds.", registry=reg
        )
        self.alarms_evicted_total = Counter(
            name("alarms_evicted"),
            "Open alarms closed (state cleared, clear_reason bed_evicted) because their bed "
            "was evicted to stay under max_beds: no longer monitored, not resolved.",
            registry=reg,
        )
        # ----------------------------------------------------------------- broker
        self.broker_reconnects_total = Counter(
            name("broker_reconnects"), "Connections to the broker lost.", registry=reg
        )
        self.broker_connected = Gauge(
            name("broker_connected"), "1 while connected to the broker, else 0.", registry=reg
        )
        # ----------------------------------------------------------------- queues
        self.ingress_queue_depth = Gauge(
            name("ingress_queue_depth"), "Inbound messages waiting for the core.", registry=reg
        )
        self.ingress_lag_seconds = Gauge(
            name("ingress_lag_seconds"),
            "How far behind the gateways the core is: the processor's clock minus the data "
            "time of the newest waveform chunk in the last batch (a backlog in the broker or "
            "the socket shows here, not in ingress_queue_depth).",
            registry=reg,
        )
        self.ingress_dropped_total = Counter(
            name("ingress_dropped"),
            "Inbound messages dropped because the ingress queue was full (load shed).",
            registry=reg,
        )
        self.publish_queue_depth = Gauge(
            name("publish_queue_depth"), "Outbound messages waiting for the broker.", registry=reg
        )
        self.publish_dropped_total = Counter(
            name("publish_dropped"),
            "Queued transitions that gave way to newer ones while the broker was away "
            "(their topic's latest state is republished on reconnect).",
            registry=reg,
        )
        # ----------------------------------------------------------------- faults
        self.audit_errors_total = Counter(
            name("audit_errors"),
            "Failures of the audit log: every failed open, write or file check (retried).",
            registry=reg,
        )
        self.audit_pending = Gauge(
            name("audit_pending"),
            "Alarm transitions waiting in memory for the audit log to be usable again.",
            registry=reg,
        )
        self.audit_dropped_total = Counter(
            name("audit_dropped"),
            "Alarm transitions never written to the audit log (pending past queue_max).",
            registry=reg,
        )
        self.dead_letters_total = Counter(
            name("dead_letters"),
            "Rejected messages forwarded to the dead-letter topic.",
            registry=reg,
        )
        self.build_info = Gauge(
            name("build_info"),
            "Always 1; the labels say which build runs.",
            ["version"],
            registry=reg,
        )
        self.build_info.labels(version=version).set(1)

        # label values known in advance show up as 0 rather than being absent
        for kind in INBOUND_KINDS:
            self.messages_in_total.labels(kind=kind)
        for code in sorted(ERROR_CODES):
            self.messages_rejected_total.labels(reason=code)
        for prio in Priority:
            self.alarms_open.labels(priority=prio.value)
        for reason in DropReason:
            self.messages_dropped_total.labels(reason=reason.value)

        # last totals seen by sync_engine (the core keeps cumulative counts)
        self._beats_seen = 0
        self._beats_valid_seen = 0
        self._evicted_seen = 0
        self._alarms_evicted_seen = 0
        self._beds_tracked_seen = -1
        self._dropped_seen: dict[str, int] = {}

    # --------------------------------------------------------------------- methods
    def message_in(self, kind: str, n: int = 1) -> None:
        """``n`` messages of ``kind`` were decoded and handed to the core."""
        child = self._in_by_kind.get(kind)
        if child is None:
            child = self._in_by_kind[kind] = self.messages_in_total.labels(kind=kind)
        child.inc(n)

    def rejected(self, code: str) -> None:
        """A message was rejected with :attr:`streamproc.wire.codec.CodecError.code` ``code``."""
        self.messages_rejected_total.labels(reason=code).inc()

    def observe_alarm(self, event: AlarmEvent) -> None:
        """Count one published alarm transition."""
        self.alarms_total.labels(
            kind=event.kind, priority=event.priority.value, state=event.state.value
        ).inc()

    def observe_latencies(self, seconds: npt.NDArray[np.float64]) -> None:
        """A batch's processing latencies (negative ones, from clock steps, count as 0)."""
        self.processing_latency_seconds.observe_many(np.maximum(seconds, 0.0))

    def observe_batch(self, done: float, arrived: list[float]) -> None:
        """The processing latencies of a batch done at ``done``: :meth:`observe_latencies`
        of ``done`` minus each arrival, without numpy for the usual few messages."""
        if len(arrived) <= _SMALL_BATCH:
            self.processing_latency_seconds.observe_list([max(0.0, done - a) for a in arrived])
        else:
            self.observe_latencies(done - np.asarray(arrived, np.float64))

    def observe_latency(self, seconds: float) -> None:
        """One message took ``seconds`` from arrival to processed (negative clamps to 0)."""
        self.processing_latency_seconds.observe(max(0.0, seconds))

    def sync_engine(
        self,
        beats: int,
        beats_valid: int,
        beds_tracked: int,
        beds_evicted: int,
        alarms_evicted: int = 0,
    ) -> None:
        """Bring the core's cumulative counts (``EngineStats``) into the counters.

        Counters only move forward by the increase since the last call; a total
        lower than before (a new engine) is taken as a restart from zero.
        """
        # (called once per batch, and a live batch is often one message: only what
        # moved is touched, each metric update takes prometheus-client's lock)
        if beats != self._beats_seen or beats_valid != self._beats_valid_seen:
            self.beats_total.inc(_delta(beats, self._beats_seen))
            self.beats_valid_total.inc(_delta(beats_valid, self._beats_valid_seen))
            self._beats_seen, self._beats_valid_seen = beats, beats_valid
        if beds_evicted != self._evicted_seen or alarms_evicted != self._alarms_evicted_seen:
            self.beds_evicted_total.inc(_delta(beds_evicted, self._evicted_seen))
            self.alarms_evicted_total.inc(_delta(alarms_evicted, self._alarms_evicted_seen))
            self._evicted_seen, self._alarms_evicted_seen = beds_evicted, alarms_evicted
        if beds_tracked != self._beds_tracked_seen:
            self.beds_tracked.set(beds_tracked)
            self._beds_tracked_seen = beds_tracked

    def sync_dropped(self, dropped: Mapping[str, int]) -> None:
        """Bring the core's cumulative drops per reason (``EngineStats.dropped``) into
        ``messages_dropped_total`` (as :meth:`sync_engine`: by the increase)."""
        seen = self._dropped_seen
        for reason, total in dropped.items():
            before = seen.get(reason, 0)
            if total != before:
                self.messages_dropped_total.labels(reason=reason).inc(_delta(total, before))
                seen[reason] = total

    def set_alarms_open(
        self, counts: Mapping[Priority | str, int] | Mapping[Priority, int]
    ) -> None:
        """Set the open-alarm gauge per priority (priorities not named are 0)."""
        values = {str(prio): 0 for prio in Priority}
        for prio, n in counts.items():
            values[str(prio)] = n
        for prio, n in values.items():
            self.alarms_open.labels(priority=prio).set(n)

    def alarms_open_from(self, engine: Engine) -> None:
        """Count the open alarms of every bed the core holds."""
        self.set_alarms_open(engine.count_open_alarms())

    def value(self, name: str, labels: Mapping[str, str] | None = None) -> float | None:
        """A sample's current value (``name`` with or without the prefix), for tests and CLI."""
        full = name if name.startswith(PREFIX) else PREFIX + name
        return self.registry.get_sample_value(full, dict(labels) if labels else None)


def _delta(total: int, seen: int) -> int:
    return total - seen if total >= seen else total


def render(metrics: ServiceMetrics) -> bytes:
    """The Prometheus text exposition of ``metrics``."""
    return generate_latest(metrics.registry)


# ------------------------------------------------------------------------- HTTP

#: Largest request head (request line and headers) accepted.
MAX_REQUEST_BYTES: Final = 8192
#: A client has this long to send its request head.
REQUEST_TIMEOUT_S: Final = 5.0

_REQUEST_LINE = re.compile(r"([!#$%&'*+.^_`|~0-9A-Za-z-]+) (/[\x21-\x7e]*) HTTP/1\.[01]")
_REASONS: Final = {
    200: "OK",
    400: "Bad Request",
    404: "Not Found",
    405: "Method Not Allowed",
    408: "Request Timeout",
    431: "Request Header Fields Too Large",
    500: "Internal Server Error",
    503: "Service Unavailable",
}
_TEXT: Final = "text/plain; charset=utf-8"
_JSON: Final = "application/json"
_ROUTES: Final = frozenset({"/metrics", "/healthz"})


class _Response:
    __slots__ = ("body", "content_type", "extra", "status")

    def __init__(
        self,
        status: int,
        body: bytes,
        content_type: str = _TEXT,
        extra: Iterable[tuple[str, str]] = (),
    ) -> None:
        self.status = status
        self.body = body
        self.content_type = content_type
        self.extra = tuple(extra)

    def encode(self, *, head_only: bool = False) -> bytes:
        lines = [
            f"HTTP/1.1 {self.status} {_REASONS.get(self.status, 'Unknown')}",
            f"Content-Type: {self.content_type}",
            f"Content-Length: {len(self.body)}",
            "Cache-Control: no-store",
            "Connection: close",
            *(f"{k}: {v}" for k, v in self.extra),
        ]
        head = ("\r\n".join(lines) + "\r\n\r\n").encode("ascii")
        return head if head_only else head + self.body


def _plain(status: int, text: str | None = None) -> _Response:
    return _Response(status, ((text or _REASONS[status]) + "\n").encode())


def _health_response(health: HealthCheck) -> _Response:
    try:
        ok, details = health()
        body: dict[str, Any] = {"status": "ok" if ok else "degraded"}
        body.update((str(k), v) for k, v in details.items() if k != "status")
    except Exception as exc:  # noqa: BLE001 - a failing check is an unhealthy service
        log.warning("health_check_failed", error=repr(exc))
        ok = False
        body = {"status": "degraded", "error": f"health check failed: {type(exc).__name__}"}
    data = json.dumps(body, default=str, separators=(",", ":")).encode() + b"\n"
    return _Response(200 if ok else 503, data, _JSON)


def _route(head: bytes, metrics: ServiceMetrics, health: HealthCheck) -> tuple[_Response, bool]:
    """The response to a complete request head, and whether it was a HEAD request."""
    line = head.split(b"\r\n", 1)[0]
    try:
        text = line.decode("ascii")
    except UnicodeDecodeError:
        return _plain(400), False
    match = _REQUEST_LINE.fullmatch(text)
    if match is None:
        return _plain(400), False
    method, target = match.group(1), match.group(2)
    path = target.split("?", 1)[0]
    if path not in _ROUTES:
        return _plain(404), method == "HEAD"
    if method not in ("GET", "HEAD"):
        return _Response(405, b"Method Not Allowed\n", extra=[("Allow", "GET, HEAD")]), False
    if path == "/metrics":
        return _Response(200, render(metrics), CONTENT_TYPE_LATEST), method == "HEAD"
    return _health_response(health), method == "HEAD"


async def _read_head(reader: asyncio.StreamReader) -> bytes | _Response:
    try:
        async with asyncio.timeout(REQUEST_TIMEOUT_S):
            return await reader.readuntil(b"\r\n\r\n")
    except asyncio.LimitOverrunError:
        return _plain(431)
    except asyncio.IncompleteReadError as exc:
        # the client stopped sending before the end of the head
        return exc.partial if exc.partial.strip() else _plain(400)
    except TimeoutError:
        return _plain(408)


async def _handle(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    metrics: ServiceMetrics,
    health: HealthCheck,
) -> None:
    try:
        got = await _read_head(reader)
        head_only = False
        if isinstance(got, _Response):
            response = got
        else:
            try:
                response, head_only = _route(got, metrics, health)
            except Exception:
                log.exception("metrics_endpoint_error")
                response = _plain(500)
        writer.write(response.encode(head_only=head_only))
        await writer.drain()
    except OSError:
        pass  # the client went away; nothing to answer
    except Exception:  # no client may take the endpoint down
        log.exception("metrics_endpoint_error")
    finally:
        writer.close()
        with contextlib.suppress(Exception):
            await writer.wait_closed()


async def serve_metrics(
    metrics: ServiceMetrics,
    host: str,
    port: int,
    health: HealthCheck,
) -> asyncio.Server:
    """Serve ``GET /metrics`` and ``GET /healthz`` on ``host:port`` (0: any free port).

    Returns the started server; the bound port is
    ``server.sockets[0].getsockname()[1]``. Close it with ``server.close()``
    and ``await server.wait_closed()``.

    ``/healthz`` answers 200 ``{"status": "ok", ...details}`` when
    ``health()[0]`` is true, else 503 ``{"status": "degraded", ...details}``.
    Other paths are 404, other methods 405, malformed requests 400, request
    heads over :data:`MAX_REQUEST_BYTES` 431; every connection is closed after
    its response.
    """

    async def on_client(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _handle(reader, writer, metrics, health)

    return await asyncio.start_server(on_client, host, port, limit=MAX_REQUEST_BYTES)
