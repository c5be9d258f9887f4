"""Metrics: counters move with the shell's calls; the HTTP endpoint answers safely."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import Any

import numpy as np
import pytest
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry

import streamproc.shell.metrics
from streamproc import __version__
from streamproc.core.engine import Batch, Engine
from streamproc.core.monitor import Clock
from streamproc.core.protocol.alarms import Alarm, AlarmEvent, AlarmState, Priority, Trigger
from streamproc.core.protocol.messages import BedId
from streamproc.shell.metrics import MAX_REQUEST_BYTES, ServiceMetrics, render, serve_metrics
from streamproc.wire.codec import ERROR_CODES, INBOUND_KINDS

BED = BedId("ICU1", "B07")


def _event(
    state: AlarmState = AlarmState.ACTIVE,
    priority: Priority = Priority.HIGH,
    kind: str = "hypotension",
) -> AlarmEvent:
    return AlarmEvent(
        bed=BED,
        kind=kind,
        alarm_id=f"ICU1.B07.{kind}.1000",
        state=state,
        priority=priority,
        ts=2.0,
        onset_ts=1.0,
        trigger=Trigger.RAISE,
        announce_count=0,
        audience="bedside",
        acknowledged_by=None,
    )


class TestMetrics:
    def test_own_registry_so_instances_do_not_collide(self) -> None:
        a, b = ServiceMetrics(), ServiceMetrics()
        a.message_in("abp")
        assert a.value("messages_in_total", {"kind": "abp"}) == 1
        assert b.value("messages_in_total", {"kind": "abp"}) == 0
        assert a.registry is not b.registry

    def test_messages_in_by_kind(self) -> None:
        m = ServiceMetrics()
        for kind in INBOUND_KINDS:
            assert m.value("messages_in_total", {"kind": kind}) == 0
        m.message_in("abp")
        m.message_in("abp", n=4)
        m.message_in("vitals")
        get = m.registry.get_sample_value
        assert get("streamproc_messages_in_total", {"kind": "abp"}) == 5
        assert get("streamproc_messages_in_total", {"kind": "vitals"}) == 1
        assert get("streamproc_messages_in_total", {"kind": "labs"}) == 0

    def test_rejected_reasons_preinitialised(self) -> None:
        m = ServiceMetrics()
        for code in ERROR_CODES:
            assert m.value("messages_rejected_total", {"reason": code}) == 0
        m.rejected("not_json")
        m.rejected("not_json")
        m.rejected("bad_topic")
        assert m.value("messages_rejected_total", {"reason": "not_json"}) == 2
        assert m.value("messages_rejected_total", {"reason": "bad_topic"}) == 1
        text = render(m).decode()
        assert 'streamproc_messages_rejected_total{reason="too_deep"} 0.0' in text

    def test_observe_alarm_counts_transitions(self) -> None:
        m = ServiceMetrics()
        m.observe_alarm(_event())
        m.observe_alarm(_event())
        m.observe_alarm(_event(state=AlarmState.CLEARED, priority=Priority.MEDIUM))
        labels = {"kind": "hypotension", "priority": "high", "state": "active"}
        assert m.value("alarms_total", labels) == 2
        labels = {"kind": "hypotension", "priority": "medium", "state": "cleared"}
        assert m.value("alarms_total", labels) == 1

    def test_alarms_open_from_engine(self) -> None:
        m = ServiceMetrics()
        for prio in Priority:
            assert m.value("alarms_open", {"priority": prio.value}) == 0
        engine = Engine()
        mon = engine.monitor(BED)
        for kind, prio in (("a", Priority.HIGH), ("b", Priority.HIGH), ("c", Priority.LOW)):
            alarm = Alarm(BED, kind, 1.0)
            alarm.apply(Trigger.RAISE, 1.0, priority=prio)
            mon.alarms[kind] = alarm
        cleared = Alarm(BED, "d", 1.0)
        cleared.apply(Trigger.RAISE, 1.0, priority=Priority.MEDIUM)
        cleared.apply(Trigger.CLEAR, 2.0)
        mon.alarms["d"] = cleared
        m.alarms_open_from(engine)
        assert m.value("alarms_open", {"priority": "high"}) == 2
        assert m.value("alarms_open", {"priority": "low"}) == 1
        assert m.value("alarms_open", {"priority": "medium"}) == 0
        m.alarms_open_from(Engine())
        assert m.value("alarms_open", {"priority": "high"}) == 0

    def test_set_alarms_open(self) -> None:
        m = ServiceMetrics()
        m.set_alarms_open({Priority.HIGH: 3, "low": 1})
        m.set_alarms_open({Priority.LOW: 2})
        assert m.value("alarms_open", {"priority": "high"}) == 0
        assert m.value("alarms_open", {"priority": "low"}) == 2

    def test_sync_engine_moves_counters_by_the_increase(self) -> None:
        m = ServiceMetrics()
        m.sync_engine(10, 8, 3, 0)
        m.sync_engine(15, 12, 4, 1)
        assert m.value("beats_total") == 15
        assert m.value("beats_valid_total") == 12
        assert m.value("beds_tracked") == 4
        assert m.value("beds_evicted_total") == 1
        m.sync_engine(15, 12, 2, 1)  # nothing new
        assert m.value("beats_total") == 15
        assert m.value("beds_tracked") == 2
        m.sync_engine(5, 5, 1, 0)  # a new engine counts from zero again
        assert m.value("beats_total") == 20
        assert m.value("beats_valid_total") == 17
        assert m.value("beds_evicted_total") == 1

    @pytest.mark.parametrize("n", [1, 3, 4, 5, 40])
    def test_observe_batch_equals_observe_latencies(self, n: int) -> None:
        """A batch's latencies from its arrivals: the histogram ``observe_latencies`` makes,
        small batches (no numpy) and large alike; a clock step back counts as 0."""
        done = 1_000.0
        arrived = [done - 0.0001 * k * k for k in range(n)]
        arrived[0] = done + 0.5  # arrived "after" done: a clock step
        a, b = ServiceMetrics(), ServiceMetrics()
        a.observe_batch(done, arrived)
        b.observe_latencies(done - np.asarray(arrived))
        (ha,) = a.processing_latency_seconds.collect()
        (hb,) = b.processing_latency_seconds.collect()
        buckets = [(s.labels["le"], s.value) for s in ha.samples if s.name.endswith("_bucket")]
        assert buckets == [
            (s.labels["le"], s.value) for s in hb.samples if s.name.endswith("_bucket")
        ]
        total = {s.name.rsplit("_", 1)[1]: s.value for s in ha.samples if "le" not in s.labels}
        other = {s.name.rsplit("_", 1)[1]: s.value for s in hb.samples if "le" not in s.labels}
        assert total["sum"] == pytest.approx(other["sum"], rel=1e-12)
        assert total["count"] == other["count"] == n
        assert buckets[-1] == ("+Inf", n)

    def test_sync_engine_counts_alarms_closed_by_eviction(self) -> None:
        m = ServiceMetrics()
        assert m.value("alarms_evicted_total") == 0
        m.sync_engine(0, 0, 2, 1, alarms_evicted=2)
        m.sync_engine(0, 0, 2, 2, alarms_evicted=3)
        assert m.value("alarms_evicted_total") == 3

    def test_plain_counters_and_gauges(self) -> None:
        m = ServiceMetrics()
        m.broker_connected.set(1)
        m.broker_reconnects_total.inc()
        m.ingress_queue_depth.set(7)
        m.ingress_dropped_total.inc(3)
        m.publish_queue_depth.set(2)
        m.audit_errors_total.inc()
        m.dead_letters_total.inc()
        assert m.value("broker_connected") == 1
        assert m.value("broker_reconnects_total") == 1
        assert m.value("ingress_queue_depth") == 7
        assert m.value("ingress_dropped_total") == 3
        assert m.value("publish_queue_depth") == 2
        assert m.value("audit_errors_total") == 1
        assert m.value("dead_letters_total") == 1

    def test_latency_histogram(self) -> None:
        m = ServiceMetrics()
        m.observe_latency(0.00004)
        m.observe_latency(0.003)
        m.observe_latency(-1.0)  # clock skew clamps to zero
        m.processing_latency_seconds.observe(2.0)
        assert m.value("processing_latency_seconds_count") == 4
        assert m.value("processing_latency_seconds_bucket", {"le": "5e-05"}) == 2
        assert m.value("processing_latency_seconds_bucket", {"le": "0.005"}) == 3
        assert m.value("processing_latency_seconds_bucket", {"le": "1.0"}) == 3
        assert m.value("processing_latency_seconds_bucket", {"le": "+Inf"}) == 4

    def test_build_info(self) -> None:
        m = ServiceMetrics()
        assert m.value("build_info", {"version": __version__}) == 1
        assert ServiceMetrics(version="9.9").value("build_info", {"version": "9.9"}) == 1

    def test_render_is_text_exposition(self) -> None:
        text = render(ServiceMetrics()).decode()
        assert "# TYPE streamproc_messages_in_total counter" in text
        assert "# TYPE streamproc_processing_latency_seconds histogram" in text
        assert "# TYPE streamproc_alarms_open gauge" in text
        for line in text.splitlines():
            assert line.startswith(("# ", "streamproc_")), line


# ---------------------------------------------------------------------------- HTTP


def _healthy() -> tuple[bool, dict[str, Any]]:
    return True, {"broker_connected": True, "beds": 3}


def _degraded() -> tuple[bool, dict[str, Any]]:
    return False, {"broker_connected": False, "audit": "disk full", "status": "ignored"}


def _broken() -> tuple[bool, dict[str, Any]]:
    raise RuntimeError("health check itself failed")


Health = Callable[[], tuple[bool, dict[str, Any]]]


async def _exchange(port: int, request: bytes, *, half_close: bool = False) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(request)
        await writer.drain()
        if half_close:
            writer.write_eof()
        async with asyncio.timeout(5):
            return await reader.read()  # the server closes after its response
    finally:
        writer.close()
        await writer.wait_closed()


def _parse(raw: bytes) -> tuple[int, dict[str, str], bytes]:
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode("ascii").split("\r\n")
    status = int(lines[0].split(" ")[1])
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return status, headers, body


def _with_server(
    check: Callable[[int, ServiceMetrics], Awaitable[None]], health: Health = _healthy
) -> None:
    async def main() -> None:
        metrics = ServiceMetrics()
        server = await serve_metrics(metrics, "127.0.0.1", 0, health)
        try:
            port = server.sockets[0].getsockname()[1]
            assert port > 0
            await check(port, metrics)
        finally:
            server.close()
            await server.wait_closed()

    asyncio.run(main())


def _get(path: str, method: str = "GET") -> bytes:
    return f"{method} {path} HTTP/1.1\r\nHost: localhost\r\n\r\n".encode()


class TestEndpoint:
    def test_metrics(self) -> None:
        async def check(port: int, metrics: ServiceMetrics) -> None:
            metrics.message_in("abp", 3)
            status, headers, body = _parse(await _exchange(port, _get("/metrics")))
            assert status == 200
            assert headers["content-type"] == CONTENT_TYPE_LATEST
            assert headers["connection"] == "close"
            assert int(headers["content-length"]) == len(body)
            assert b'streamproc_messages_in_total{kind="abp"} 3.0' in body

        _with_server(check)

    def test_head_has_no_body(self) -> None:
        async def check(port: int, metrics: ServiceMetrics) -> None:
            status, headers, body = _parse(await _exchange(port, _get("/metrics", "HEAD")))
            assert status == 200
            assert int(headers["content-length"]) > 0
            assert body == b""

        _with_server(check)

    def test_query_string_ignored(self) -> None:
        async def check(port: int, metrics: ServiceMetrics) -> None:
            status, _, _ = _parse(await _exchange(port, _get("/metrics?name[]=x")))
            assert status == 200

        _with_server(check)

    def test_healthz_ok(self) -> None:
        async def check(port: int, metrics: ServiceMetrics) -> None:
            status, headers, body = _parse(await _exchange(port, _get("/healthz")))
            assert status == 200
            assert headers["content-type"] == "application/json"
            assert json.loads(body) == {"status": "ok", "broker_connected": True, "beds": 3}

        _with_server(check)

    @pytest.mark.parametrize("health", [_degraded, _broken])
    def test_healthz_degraded(self, health: Health) -> None:
        async def check(port: int, metrics: ServiceMetrics) -> None:
            status, _, body = _parse(await _exchange(port, _get("/healthz")))
            assert status == 503
            doc = json.loads(body)
            assert doc["status"] == "degraded"
            if health is _degraded:
                assert doc["audit"] == "disk full"
            else:
                assert "RuntimeError" in doc["error"]

        _with_server(check, health)

    def test_unknown_path_404(self) -> None:
        async def check(port: int, metrics: ServiceMetrics) -> None:
            status, _, _ = _parse(await _exchange(port, _get("/nope")))
            assert status == 404
            status, _, _ = _parse(await _exchange(port, _get("/")))
            assert status == 404

        _with_server(check)

    @pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "OPTIONS"])
    def test_other_methods_405(self, method: str) -> None:
        async def check(port: int, metrics: ServiceMetrics) -> None:
            status, headers, _ = _parse(await _exchange(port, _get("/metrics", method)))
            assert status == 405
            assert headers["allow"] == "GET, HEAD"

        _with_server(check)

    @pytest.mark.parametrize(
        "request_bytes",
        [
            b"garbage\r\n\r\n",
            b"GET\r\n\r\n",
            b"GET /metrics\r\n\r\n",
            b"GET /metrics HTTP/2.0\r\n\r\n",
            b"GET metrics HTTP/1.1\r\n\r\n",
            b"GET  /metrics HTTP/1.1\r\n\r\n",
            b"G\xffT /metrics HTTP/1.1\r\n\r\n",
            b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n",  # a TLS hello
            b"\r\n\r\n",
        ],
    )
    def test_garbage_400(self, request_bytes: bytes) -> None:
        async def check(port: int, metrics: ServiceMetrics) -> None:
            status, _, _ = _parse(await _exchange(port, request_bytes))
            assert status == 400

        _with_server(check)

    def test_truncated_request_400(self) -> None:
        """A client that sends part of a line and stops sending gets 400."""

        async def check(port: int, metrics: ServiceMetrics) -> None:
            raw = await _exchange(port, b"NOT HTTP", half_close=True)
            assert _parse(raw)[0] == 400

        _with_server(check)

    def test_oversized_head_rejected(self) -> None:
        async def check(port: int, metrics: ServiceMetrics) -> None:
            big = b"GET /metrics HTTP/1.1\r\nX-Big: " + b"a" * (MAX_REQUEST_BYTES + 100)
            status, _, _ = _parse(await _exchange(port, big + b"\r\n\r\n"))
            assert status == 431
            # and the server is still there
            status, _, _ = _parse(await _exchange(port, _get("/healthz")))
            assert status == 200

        _with_server(check)

    def test_slow_client_times_out(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """A client that opens a connection and never finishes its request is let go."""
        monkeypatch.setattr(streamproc.shell.metrics, "REQUEST_TIMEOUT_S", 0.05)

        async def check(port: int, metrics: ServiceMetrics) -> None:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(b"GET /metrics HTTP/1.1\r\n")
            async with asyncio.timeout(5):
                raw = await reader.read()
            writer.close()
            await writer.wait_closed()
            assert _parse(raw)[0] == 408

        _with_server(check)

    def test_client_that_disconnects_does_not_hurt(self) -> None:
        async def check(port: int, metrics: ServiceMetrics) -> None:
            for _ in range(3):
                _, writer = await asyncio.open_connection("127.0.0.1", port)
                writer.write(b"GET /met")
                writer.close()
                await writer.wait_closed()
            _, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.close()
            await writer.wait_closed()
            status, _, _ = _parse(await _exchange(port, _get("/metrics")))
            assert status == 200

        _with_server(check)

    def test_concurrent_requests(self) -> None:
        async def check(port: int, metrics: ServiceMetrics) -> None:
            raws = await asyncio.gather(*(_exchange(port, _get("/healthz")) for _ in range(20)))
            assert {_parse(raw)[0] for raw in raws} == {200}

        _with_server(check)


class TestBatchHistogram:
    """Small batches (counted value by value) and large ones (numpy) fill the same buckets."""

    @staticmethod
    def _hist() -> streamproc.shell.metrics.BatchHistogram:
        return streamproc.shell.metrics.BatchHistogram(
            "t_seconds", "test", buckets=(0.001, 0.01, 0.1), registry=CollectorRegistry()
        )

    @staticmethod
    def _buckets(hist: streamproc.shell.metrics.BatchHistogram) -> list[tuple[str, float]]:
        (family,) = hist.collect()
        return [(s.labels.get("le", s.name), s.value) for s in family.samples]

    def test_small_equals_large(self) -> None:
        """On the bounds, between them, above them and NaN: one at a time == all at once."""
        values = [0.0, 0.001, 0.0011, 0.01, 0.05, 0.1, 0.2, 7.0, float("nan"), 0.0005]
        small, large = self._hist(), self._hist()
        for v in values:
            small.observe_many(np.array([v]))
        large.observe_many(np.array(values))
        assert self._buckets(small)[:4] == self._buckets(large)[:4]
        # a value equal to a bound counts in it (le); NaN only in +Inf
        counts = dict(self._buckets(small))
        assert counts["0.001"] == 3
        assert counts["0.01"] == 5
        assert counts["0.1"] == 7
        assert counts["+Inf"] == 10


class TestDroppedMessages:
    """``streamproc_messages_dropped_total{reason}``: the core's data-time drops."""

    def test_reasons_preinitialised(self) -> None:
        """Every drop reason shows up as 0 before any drop."""
        m = ServiceMetrics()
        for reason in ("duplicate", "late"):
            assert m.value("messages_dropped_total", {"reason": reason}) == 0

    def test_sync_dropped_from_a_real_engine(self) -> None:
        """A chunk sent twice and one older than what was taken move the counter by reason."""
        from streamproc.core.protocol.messages import AbpChunk  # noqa: PLC0415 - only this test

        eng = Engine(clock=Clock.DATA)
        m = ServiceMetrics()
        x = np.full(125, 80.0)
        first = AbpChunk(1.7e9, 125.0, x)
        second = AbpChunk(1.7e9 + 1.0, 125.0, x)
        for chunk in (first, second, second):
            eng.receive(Batch([(BED, chunk, chunk.ts)]))
        m.sync_dropped(eng.stats.dropped)
        assert m.value("messages_dropped_total", {"reason": "duplicate"}) == 1
        eng.receive(Batch([(BED, AbpChunk(1.7e9 - 5.0, 125.0, x), second.ts)]))
        m.sync_dropped(eng.stats.dropped)
        m.sync_dropped(eng.stats.dropped)  # nothing new: no move
        assert m.value("messages_dropped_total", {"reason": "duplicate"}) == 1
        assert m.value("messages_dropped_total", {"reason": "late"}) == 1
