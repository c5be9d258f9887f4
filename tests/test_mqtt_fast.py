"""The batched read path (streamproc.mqtt_fast) against a real Mosquitto."""

from __future__ import annotations

import asyncio
import struct
from typing import Any

import aiomqtt
import paho.mqtt.client as mqtt
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from paho.mqtt import _packet
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from streamproc.mqtt_fast import (
    SCAN_LIMIT,
    SCAN_MORE,
    SCAN_OTHER,
    FastReader,
    puback_packets,
    publish_packet,
    scan_publishes,
)
from tests.broker import MosquittoBroker

V3, V5 = aiomqtt.ProtocolVersion.V311, aiomqtt.ProtocolVersion.V5


def _client(
    broker: MosquittoBroker, ident: str, protocol: aiomqtt.ProtocolVersion = V3
) -> aiomqtt.Client:
    return aiomqtt.Client(
        "127.0.0.1", broker.port, identifier=ident, keepalive=10, protocol=protocol
    )


async def _publish_burst(broker: MosquittoBroker, n: int, qos: int) -> None:
    async with _client(broker, "burst-pub") as pub:
        for i in range(n):
            await pub.publish(f"t/{i % 7}", f"{i}".encode() * 40, qos=qos)


def _user_props() -> Properties:
    props = Properties(PacketTypes.PUBLISH)
    props.UserProperty = [("gateway", "gw-1")]
    return props


# -- packets as paho itself builds them (the reference for the scanner) ---------------


class _NoSocket:
    """Stands for a connected socket: paho queues packets (and never writes them here)."""

    def close(self) -> None:
        pass


def _paho_encoder(v5: bool) -> mqtt.Client:
    client = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5 if v5 else mqtt.MQTTv311)
    client._sock = _NoSocket()  # type: ignore[assignment]
    client.on_socket_register_write = lambda *_a: None  # and stay in the queue
    return client


def _paho_publish(
    v5: bool, topic: bytes, payload: bytes, qos: int, mid: int, *, props: bool = False
) -> bytes:
    client = _paho_encoder(v5)
    properties = _user_props() if props else None
    client._send_publish(mid, topic, payload, qos, retain=False, properties=properties)
    return bytes(client._out_packet.pop()["packet"])


def _is_plain(packet: bytes, v5: bool) -> bool:
    """The oracle: the packets the scanner must take (all others go to paho)."""
    if packet[0] & 0xF0 != 0x30 or (packet[0] >> 1) & 3 > 1:
        return False
    header, body = _split(packet)
    if not (body[0] << 8) | body[1]:
        return False  # no topic (a topic alias, or malformed before MQTT 5)
    decoded = _packet.decode_publish(header, body, mqtt.MQTTv5 if v5 else mqtt.MQTTv311)
    return not (v5 and decoded.properties is not None and not decoded.properties.isEmpty())


def _split(packet: bytes) -> tuple[int, bytes]:
    """(first byte, the rest after the remaining length) of the packet ``packet`` starts with."""
    i = _header_size(packet)
    return packet[0], packet[i : _packet_size(packet)]


def _header_size(packet: bytes) -> int:
    i = 1
    while packet[i] & 0x80:
        i += 1
    return i + 1


def _packet_size(packet: bytes) -> int:
    i, shift, length = 1, 0, 0
    while True:
        byte = packet[i]
        i += 1
        length |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            return i + length


_topics = st.binary(max_size=40)
_other_packets = st.sampled_from(
    [
        b"\xd0\x00",  # PINGRESP
        b"\x40\x02\x00\x07",  # PUBACK of one of our publishes
        b"\x90\x03\x00\x01\x01",  # SUBACK
        b"\x62\x02\x00\x09",  # PUBREL
    ]
)


@st.composite
def _streams(draw: st.DrawFn) -> tuple[bool, list[bytes]]:
    v5 = draw(st.booleans())
    packets: list[bytes] = []
    for _ in range(draw(st.integers(0, 12))):
        kind = draw(st.sampled_from(["plain", "plain", "plain", "props", "qos2", "other"]))
        if kind == "other":
            packets.append(draw(_other_packets))
            continue
        topic = draw(_topics)
        payload = draw(st.binary(max_size=300))
        mid = draw(st.integers(1, 0xFFFF))
        qos = 2 if kind == "qos2" else draw(st.integers(0, 1))
        packets.append(_paho_publish(v5, topic, payload, qos, mid, props=kind == "props" and v5))
    return v5, packets


class TestScanPublishes:
    """The scanner takes exactly the plain PUBLISH packets, however the bytes are cut."""

    @settings(max_examples=300, deadline=None)
    @given(stream=_streams(), data=st.data())
    def test_any_cut_same_messages(self, stream: tuple[bool, list[bytes]], data: Any) -> None:
        """Cut anywhere and fed piece by piece, the stream gives paho's own decoding,
        packet by packet, in order; every other packet is left whole for paho."""
        v5, packets = stream
        wire = b"".join(packets)
        cuts = sorted(data.draw(st.lists(st.integers(0, len(wire)), max_size=8)))
        pieces = [wire[a:b] for a, b in zip([0, *cuts], [*cuts, len(wire)], strict=True)]
        limit = data.draw(st.integers(1, 5))
        seen: list[tuple[Any, ...]] = []
        acks: list[int] = []
        buf, pos = b"", 0
        for piece in pieces:
            buf, pos = buf[pos:] + piece, 0
            while True:
                pos, taken, why = scan_publishes(
                    buf,
                    pos,
                    v5=v5,
                    limit=limit,
                    on_message=lambda t, p: seen.append(("pub", t, p)),
                    acks=acks,
                )
                assert 0 <= taken <= limit
                assert why != SCAN_LIMIT or taken == limit
                if why == SCAN_OTHER:  # paho reads it: exactly the next packet, whole
                    expected = packets[len(seen)]
                    assert buf[pos : pos + len(expected)] == expected
                    seen.append(("other", expected))
                    pos += len(expected)
                elif why == SCAN_MORE:
                    break
        assert pos == len(buf)
        assert len(seen) == len(packets)
        want_acks = []
        for packet, got in zip(packets, seen, strict=True):
            if not _is_plain(packet, v5):
                assert got == ("other", packet)
                continue
            header, body = _split(packet)
            ref = _packet.decode_publish(header, body, mqtt.MQTTv5 if v5 else mqtt.MQTTv311)
            assert got == ("pub", ref.topic.decode("utf-8", "replace"), ref.payload)
            if ref.qos == 1:
                want_acks.append(ref.mid)
        assert acks == want_acks

    @settings(max_examples=500, deadline=None)
    @given(junk=st.binary(max_size=64), v5=st.booleans())
    def test_hostile_bytes_never_raise(self, junk: bytes, v5: bool) -> None:
        """Arbitrary bytes: the scanner stops in bounds and whatever it takes, paho agrees on."""
        taken: list[tuple[str, bytes]] = []
        pos, n, why = scan_publishes(
            junk, 0, v5=v5, limit=100, on_message=lambda t, p: taken.append((t, p)), acks=[]
        )
        assert 0 <= pos <= len(junk)
        assert n == len(taken)
        assert why in (SCAN_MORE, SCAN_OTHER, SCAN_LIMIT)
        start = 0
        for topic, payload in taken:
            header, rest = _split(junk[start:])
            ref = _packet.decode_publish(header, rest, mqtt.MQTTv5 if v5 else mqtt.MQTTv311)
            assert (ref.topic.decode("utf-8", "replace"), ref.payload) == (topic, payload)
            start += _packet_size(junk[start:])
        assert start == pos

    @pytest.mark.parametrize("v5", [False, True])
    @pytest.mark.parametrize("retain", [False, True])
    def test_publish_packet_is_pahos(self, v5: bool, retain: bool) -> None:
        """A QoS 0 PUBLISH built here is byte for byte the one paho builds."""
        client = _paho_encoder(v5)
        for topic, payload in [("icu/w1/b1/summary", b"{}"), ("a/\u00e9", b"x" * 200)]:
            client._send_publish(0, topic.encode(), payload, 0, retain=retain)
            ref = bytes(client._out_packet.pop()["packet"])
            assert publish_packet(topic, payload, retain=retain, v5=v5) == ref

    def test_publish_packet_refuses_what_paho_refuses(self) -> None:
        """No wildcard or empty topic goes out: ValueError naming the topic."""
        for topic in ["", "icu/+/b1", "icu/#"]:
            with pytest.raises(ValueError, match="not a topic to publish to"):
                publish_packet(topic, b"", retain=False, v5=True)

    def test_pubacks(self) -> None:
        """PUBACKs, in order, 4 bytes each: type 0x40, length 2, the id."""
        ids = [1, 0xFFFF, 258]
        assert puback_packets(ids) == b"".join(struct.pack("!BBH", 0x40, 2, i) for i in ids)


class TestFastReader:
    """Messages reach the callback complete and in order; a lost broker is reported."""

    @pytest.mark.parametrize("protocol", [V3, V5])
    @pytest.mark.parametrize("qos", [0, 1])
    def test_burst_in_order(
        self, broker: MosquittoBroker, qos: int, protocol: aiomqtt.ProtocolVersion
    ) -> None:
        """A burst of 5,000 messages arrives whole, once each, in publish order (at QoS 1
        only if the batched PUBACKs reach the broker: it sends 20 unacknowledged at most)."""
        got: list[tuple[str, bytes]] = []
        n = 5000

        async def main() -> None:
            client = _client(broker, f"fast-{qos}", protocol)
            reader = FastReader(client, lambda t, p: got.append((t, p)), budget=100)
            async with client:
                await client.subscribe("t/#", qos=qos)
                waiter = asyncio.create_task(reader.wait_disconnected())
                await _publish_burst(broker, n, qos)
                async with asyncio.timeout(30):
                    while len(got) < n:
                        await asyncio.sleep(0.01)
                assert not waiter.done()
                waiter.cancel()

        asyncio.run(main())
        assert len(got) == n
        assert [int(p[: len(p) // 40]) for _, p in got] == list(range(n))
        assert got[8][0] == "t/1"

    def test_paho_reads_the_rest_in_order(self, broker: MosquittoBroker) -> None:
        """Messages paho decodes (MQTT 5 properties, QoS 2) arrive once each, those with
        properties in their place among the plain ones."""
        got: list[bytes] = []
        n = 600

        async def main() -> None:
            client = _client(broker, "fast-mixed", V5)
            reader = FastReader(client, lambda t, p: got.append(p), budget=7)
            async with client:
                await client.subscribe("t/#", qos=2)
                waiter = asyncio.create_task(reader.wait_disconnected())
                async with _client(broker, "mixed-pub", V5) as pub:
                    for i in range(n):
                        props = _user_props() if i % 5 == 0 else None
                        qos = 2 if i % 7 == 0 else 1
                        await pub.publish("t/x", b"%d" % i, qos=qos, properties=props)
                async with asyncio.timeout(30):
                    while len(got) < n:
                        await asyncio.sleep(0.01)
                await asyncio.sleep(0.2)  # a duplicate would arrive now
                assert not waiter.done()
                waiter.cancel()

        asyncio.run(main())
        # paho hands a QoS 2 message over at its PUBREL, a round trip later: MQTT orders
        # messages within a QoS level, and so does this path
        numbers = [int(p) for p in got]
        assert sorted(numbers) == list(range(n))
        assert [i for i in numbers if i % 7] == [i for i in range(n) if i % 7]
        assert [i for i in numbers if not i % 7] == list(range(0, n, 7))

    @pytest.mark.parametrize("protocol", [V3, V5])
    def test_publishes_reach_subscribers(
        self, broker: MosquittoBroker, protocol: aiomqtt.ProtocolVersion
    ) -> None:
        """QoS 0 publishes (retained) and a window of confirmed QoS 1 ones reach a
        subscriber in order; every QoS 1 one is confirmed by the broker."""
        n = 50
        heard: list[tuple[str, bytes, bool]] = []

        async def main() -> None:
            client = _client(broker, "fast-pub", protocol)
            reader = FastReader(client, lambda t, p: None)
            async with client, _client(broker, "listener") as listener:
                await listener.subscribe("out/#", qos=1)

                async def listen() -> None:
                    async for msg in listener.messages:
                        assert isinstance(msg.payload, bytes)
                        heard.append((str(msg.topic), msg.payload, msg.retain))

                task = asyncio.create_task(listen())
                sent = [reader.publish_qos1("out/alarm", b"%d" % i, retain=False) for i in range(n)]
                reader.flush()
                async with asyncio.timeout(10):
                    for one in sent:
                        await reader.confirmed(one, timeout=10)
                for i in range(n):
                    reader.publish_nowait(f"out/summary/{i}", b"s%d" % i, retain=True)
                async with asyncio.timeout(10):
                    while len(heard) < 2 * n:
                        await asyncio.sleep(0.01)
                task.cancel()
                assert client._pending_publishes == {}
            # retained: a late subscriber gets the summaries' last values
            async with _client(broker, "late") as late:
                await late.subscribe("out/summary/#")
                retained = set()
                async with asyncio.timeout(10):
                    async for msg in late.messages:
                        assert msg.retain
                        retained.add(str(msg.topic))
                        if len(retained) == n:
                            break

        asyncio.run(main())
        assert [p for t, p, _ in heard if t == "out/alarm"] == [b"%d" % i for i in range(n)]
        assert [p for t, p, _ in heard if t != "out/alarm"] == [b"s%d" % i for i in range(n)]

    def test_publish_when_offline_refused(self) -> None:
        """Not connected: a QoS 0 publish raises MqttCodeError rather than vanish."""

        async def main() -> None:
            client = aiomqtt.Client("127.0.0.1", 1, identifier="offline")
            reader = FastReader(client, lambda t, p: None)
            with pytest.raises(aiomqtt.MqttCodeError):
                reader.publish_nowait("out/x", b"", retain=False)

        asyncio.run(main())

    def test_broker_disconnect_raises(self, broker: MosquittoBroker) -> None:
        """A DISCONNECT from the broker (MQTT 5: session taken over by a client with the
        same id) goes to paho, and wait_disconnected raises MqttError."""

        async def main() -> None:
            client = _client(broker, "fast-taken", V5)
            reader = FastReader(client, lambda t, p: None)
            async with client:
                await client.subscribe("t/#", qos=1)
                waiter = asyncio.create_task(reader.wait_disconnected())
                async with _client(broker, "fast-taken", V5):
                    with pytest.raises(aiomqtt.MqttError):
                        async with asyncio.timeout(10):
                            await waiter

        asyncio.run(main())

    def test_broker_killed_raises(self, broker: MosquittoBroker) -> None:
        """When the broker dies, wait_disconnected raises aiomqtt.MqttError (no hang)."""

        async def main() -> None:
            client = _client(broker, "fast-kill")
            reader = FastReader(client, lambda t, p: None)
            async with client:
                await client.subscribe("t/#", qos=1)
                broker.kill()
                with pytest.raises(aiomqtt.MqttError):
                    async with asyncio.timeout(30):
                        await reader.wait_disconnected()

        asyncio.run(main())  # a hang would end in TimeoutError, not MqttError
        assert not broker.running

    def test_non_utf8_topic_is_passed_on_replaced(self) -> None:
        """A topic that is not UTF-8 reaches the callback with replacement characters."""
        got: list[tuple[str, bytes]] = []

        async def main() -> None:
            client = aiomqtt.Client("127.0.0.1", 1, identifier="offline")
            reader = FastReader(client, lambda t, p: got.append((t, p)))
            msg = mqtt.MQTTMessage(topic=b"icu/\xff\xfe/bed1/abp")
            msg.payload = b"{}"
            reader._paho_message(msg)

        asyncio.run(main())
        assert got == [("icu/\ufffd\ufffd/bed1/abp", b"{}")]

    def test_unsupported_client_refused(self) -> None:
        """Without the internals it replaces, FastReader says so and names the way out."""

        class Bare:
            pass

        assert not FastReader.supported(Bare())  # type: ignore[arg-type]
        with pytest.raises(TypeError, match="fast_read = false"):
            FastReader(Bare(), lambda t, p: None)  # type: ignore[arg-type]
