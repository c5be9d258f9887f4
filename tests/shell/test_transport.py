"""streamproc.shell.transport_paho (paho) and streamproc.shell.transport_mqtt5 (the mqtt5 codec) against a
real Mosquitto: manual acknowledgement, publish confirmations, refusals, a lost
connection, keepalive, pausing. Every test runs on both; MQTT 3.1.1 only on paho."""

from __future__ import annotations

import asyncio
import itertools

import mqtt5
import pytest
from hypothesis import given
from hypothesis import settings as settings_hypothesis
from hypothesis import strategies as st

from streamproc.shell import transport_mqtt5, transport_paho
from streamproc.shell.transport_paho import (
    ConnectionLostError,
    ConnectRefusedError,
    Inbound,
    MqttError,
    PublishRefusedError,
    Settings,
)
from tests.system.broker import DEMO_PASSWORDS, MosquittoBroker, publish

Connection = transport_paho.Connection | transport_mqtt5.Connection
#: (implementation, MQTT 5?): paho speaks both versions, the mqtt5 transport MQTT 5 only.
VERSIONS = [
    pytest.param(transport_paho.Connection, True, id="paho-v5"),
    pytest.param(transport_paho.Connection, False, id="paho-v311"),
    pytest.param(transport_mqtt5.Connection, True, id="mqtt5-v5"),
]
IMPLEMENTATIONS = [
    pytest.param(transport_paho.Connection, id="paho"),
    pytest.param(transport_mqtt5.Connection, id="mqtt5"),
]


def settings(broker: MosquittoBroker, client_id: str = "t-1", **kw: object) -> Settings:
    return Settings(broker.host, broker.port, client_id, **kw)  # type: ignore[arg-type]


async def received(box: list[Inbound], n: int, timeout: float = 5.0) -> None:
    async with asyncio.timeout(timeout):
        while len(box) < n:
            await asyncio.sleep(0.01)


class TestConnection:
    @pytest.mark.parametrize(("impl", "v5"), VERSIONS)
    def test_unacknowledged_messages_come_again(
        self, broker: MosquittoBroker, impl: type[Connection], v5: bool
    ) -> None:
        """Manual acknowledgement: of 10 QoS 1 messages the first 4 are acknowledged; after
        the connection is dropped (no DISCONNECT) the persistent session delivers the 6
        others again, and not the 4."""

        async def main() -> None:
            s = settings(broker, persistent=True, v5=v5)
            box: list[Inbound] = []
            conn = impl(s, box.append)
            await conn.connect()
            assert await conn.subscribe([("t/#", 1)], timeout=5) == [1]
            for i in range(10):
                publish(broker, f"t/{i}", b"x", qos=1)
            await received(box, 10)
            assert [m.topic for m in box] == [f"t/{i}" for i in range(10)]
            assert all(m.qos == 1 and m.mid for m in box)
            for m in box[:4]:
                conn.ack(m.mid, m.qos)
            conn.flush()
            await asyncio.sleep(0.3)  # the PUBACKs reach the broker
            conn.abort()
            again: list[Inbound] = []
            conn = impl(s, again.append)
            assert await conn.connect() is True  # session present
            await received(again, 6)
            await asyncio.sleep(0.3)
            assert [m.topic for m in again] == [f"t/{i}" for i in range(4, 10)]
            await conn.disconnect()

        asyncio.run(main())

    @pytest.mark.parametrize("impl", IMPLEMENTATIONS)
    def test_publish_confirmed_and_loss_reported(
        self, broker: MosquittoBroker, impl: type[Connection]
    ) -> None:
        """A QoS 1 publish's future resolves on its PUBACK; once the broker is killed the
        connection reports ConnectionLostError and publishing raises."""

        async def main() -> None:
            conn = impl(settings(broker), lambda _m: None)
            await conn.connect()
            done = conn.publish("a/b", b"1", qos=1, retain=False)
            assert done is not None
            await asyncio.wait_for(done, 5)
            assert conn.publish("a/b", b"0", qos=0, retain=False) is None
            broker.kill()
            with pytest.raises(ConnectionLostError):
                await asyncio.wait_for(conn.wait_lost(), 15)
            with pytest.raises(ConnectionLostError):
                conn.publish("a/b", b"2", qos=1, retain=False)

        asyncio.run(main())

    @pytest.mark.parametrize("impl", IMPLEMENTATIONS)
    def test_unreachable_broker(self, broker: MosquittoBroker, impl: type[Connection]) -> None:
        """Nothing listening: MqttError with the socket's reason, nothing left open."""

        async def main() -> None:
            port = broker.port
            broker.stop()
            conn = impl(Settings(broker.host, port, "t-x"), lambda _m: None)
            with pytest.raises(MqttError, match="refused"):
                await conn.connect()

        asyncio.run(main())


class TestRefusals:
    @pytest.mark.parametrize(("impl", "v5"), VERSIONS)
    def test_wrong_password_is_an_auth_refusal(
        self, secure_broker: MosquittoBroker, impl: type[Connection], v5: bool
    ) -> None:
        """A wrong password: ConnectRefusedError with auth set (MQTT 5 code 134/135; 3.1.1's
        return codes 4/5 mapped onto them)."""

        async def main() -> None:
            s = settings(secure_broker, username="processor", password="wrong", v5=v5)  # noqa: S106
            with pytest.raises(ConnectRefusedError) as info:
                await impl(s, lambda _m: None).connect()
            assert info.value.auth
            assert info.value.code in (134, 135)

        asyncio.run(main())

    @pytest.mark.parametrize("impl", IMPLEMENTATIONS)
    def test_publish_denied_by_acl(
        self, secure_broker: MosquittoBroker, impl: type[Connection]
    ) -> None:
        """The dashboard may not publish monitor data: the PUBACK's reason code 135 fails
        the future with PublishRefusedError naming the topic. (The dashboard, not the
        processor: the shipped config admits the processor only on its TLS listener.)"""

        async def main() -> None:
            s = settings(secure_broker, username="dashboard", password=DEMO_PASSWORDS["dashboard"])
            conn = impl(s, lambda _m: None)
            await conn.connect()
            done = conn.publish("icu/w1/b1/abp", b"{}", qos=1, retain=False)
            assert done is not None
            with pytest.raises(PublishRefusedError) as info:
                await asyncio.wait_for(done, 5)
            assert (info.value.code, info.value.topic) == (135, "icu/w1/b1/abp")
            await conn.disconnect()

        asyncio.run(main())


class TestFlow:
    @pytest.mark.parametrize("impl", IMPLEMENTATIONS)
    def test_pause_stops_delivery_mid_batch(
        self, broker: MosquittoBroker, impl: type[Connection]
    ) -> None:
        """A backlog of 200 QoS 1 messages arrives at once; the callback pauses reading
        at the 5th: no 6th is delivered until resume_reading, then the other 195 come,
        in order, none twice."""

        async def main() -> None:
            s = settings(broker, "t-pause", persistent=True, receive_maximum=1000)
            conn = impl(s, lambda _m: None)
            await conn.connect()
            await conn.subscribe([("p/#", 1)], timeout=5)
            await conn.disconnect()
            for i in range(200):
                publish(broker, f"p/{i}", b"x", qos=1)
            box: list[Inbound] = []

            def take(m: Inbound) -> None:
                box.append(m)
                if len(box) == 5:
                    conn.pause_reading()

            conn = impl(s, take)
            assert await conn.connect() is True
            await received(box, 5)
            await asyncio.sleep(0.5)  # the rest is on its way or buffered: none delivered
            assert len(box) == 5
            conn.resume_reading()
            await received(box, 200)
            await asyncio.sleep(0.2)
            assert [m.topic for m in box] == [f"p/{i}" for i in range(200)]
            for m in box:
                conn.ack(m.mid, m.qos)
            await conn.disconnect()

        asyncio.run(main())

    @pytest.mark.parametrize("impl", IMPLEMENTATIONS)
    def test_keepalive_holds_an_idle_connection_and_finds_a_frozen_broker(
        self, broker: MosquittoBroker, impl: type[Connection]
    ) -> None:
        """keepalive 1 s: an idle connection lives on (pings) for 4 s; a broker frozen
        with SIGSTOP (no FIN, no RST) is reported lost within a few seconds."""

        async def main() -> None:
            conn = impl(settings(broker, keepalive=1), lambda _m: None)
            await conn.connect()
            await asyncio.sleep(4)
            assert conn.connected
            broker.pause()
            try:
                with pytest.raises(ConnectionLostError):
                    await asyncio.wait_for(conn.wait_lost(), 6)
            finally:
                broker.resume()

        asyncio.run(main())

    @pytest.mark.parametrize("impl", IMPLEMENTATIONS)
    def test_keepalive_finds_a_frozen_broker_while_we_keep_publishing(
        self, broker: MosquittoBroker, impl: type[Connection]
    ) -> None:
        """keepalive 1 s, a QoS 0 publish every 0.1 s (so we are never idle on the
        sending side): a broker frozen with SIGSTOP is still reported lost."""

        async def main() -> None:
            conn = impl(settings(broker, keepalive=1), lambda _m: None)
            await conn.connect()

            async def chatter() -> None:
                while conn.connected:
                    conn.publish("chat", b"x", qos=0, retain=False)
                    await asyncio.sleep(0.1)

            task = asyncio.create_task(chatter())
            await asyncio.sleep(2)
            assert conn.connected
            broker.pause()
            try:
                with pytest.raises(ConnectionLostError):
                    await asyncio.wait_for(conn.wait_lost(), 8)
            finally:
                broker.resume()
                task.cancel()

        asyncio.run(main())


async def _fake_broker(chunks: list[bytes]) -> tuple[asyncio.Server, int]:
    """A TCP server that answers the CONNECT with a CONNACK, then sends ``chunks``, each
    in its own write with a pause between (so the client reads them apart)."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await reader.read(1024)  # the CONNECT
            writer.write(mqtt5.ConnAckPacket().write())
            for chunk in chunks:
                writer.write(chunk)
                await writer.drain()
                await asyncio.sleep(0.002)
            await reader.read(1024)
        except OSError:
            pass  # the client closed first
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1]


def _split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts} | {0, len(data)})
    return [data[a:b] for a, b in itertools.pairwise(points) if b > a]


class TestMqtt5Codec:
    @settings_hypothesis(max_examples=25, deadline=None)
    @given(
        messages=st.lists(
            st.tuples(st.sampled_from(["a", "b/c", "icu/w1/b1/abp"]), st.binary(max_size=300)),
            min_size=1,
            max_size=20,
        ),
        cuts=st.lists(st.integers(min_value=0), max_size=12),
    )
    def test_packets_split_anywhere_come_whole_and_in_order(
        self, messages: list[tuple[str, bytes]], cuts: list[int]
    ) -> None:
        """PUBLISH packets cut at any byte (a header, a topic, a payload) and in any
        number of reads are delivered whole, in order, each once."""
        wire = b"".join(
            mqtt5.PublishPacket(t, p, qos=mqtt5.QoS.AT_LEAST_ONCE, packet_id=i + 1).write()
            for i, (t, p) in enumerate(messages)
        )

        async def main() -> None:
            server, port = await _fake_broker(_split(wire, cuts))
            box: list[Inbound] = []
            conn = transport_mqtt5.Connection(Settings("127.0.0.1", port, "t"), box.append)
            try:
                await conn.connect()
                await received(box, len(messages))
                await asyncio.sleep(0.01)
                assert [(m.topic, m.payload, m.mid, m.qos) for m in box] == [
                    (t, p, i + 1, 1) for i, (t, p) in enumerate(messages)
                ]
            finally:
                conn.abort()
                server.close()
                await asyncio.sleep(0.01)  # the handler sees the close and closes its side

        asyncio.run(main())

    @settings_hypothesis(max_examples=25, deadline=None)
    @given(garbage=st.binary(min_size=1, max_size=64))
    def test_hostile_bytes_end_the_connection_not_the_process(self, garbage: bytes) -> None:
        """After a valid PUBLISH, arbitrary bytes from the "broker": the valid message is
        delivered; whatever the bytes are, no exception escapes, and a byte stream that
        is no MQTT ends the connection with ConnectionLostError."""

        good = mqtt5.PublishPacket("a", b"1").write()

        async def main() -> None:
            server, port = await _fake_broker([good + garbage])
            box: list[Inbound] = []
            conn = transport_mqtt5.Connection(Settings("127.0.0.1", port, "t"), box.append)
            try:
                await conn.connect()
                await received(box, 1)
                try:
                    async with asyncio.timeout(0.2):
                        await conn.wait_lost()
                except ConnectionLostError:
                    pass  # a malformed packet, or the garbage was a DISCONNECT
                except TimeoutError:
                    pass  # an incomplete packet: waiting for its rest is right
                assert box[0] == Inbound("a", b"1", 0, 0, retain=False)
            finally:
                conn.abort()
                server.close()
                await asyncio.sleep(0.01)  # the handler sees the close and closes its side

        asyncio.run(main())


class TestMqtt5Only:
    def test_mqtt_311_is_refused(self, broker: MosquittoBroker) -> None:
        """The mqtt5 transport speaks MQTT 5 only: asked for 3.1.1 it says so at once."""

        async def main() -> None:
            with pytest.raises(ValueError, match="MQTT 5 only"):
                transport_mqtt5.Connection(settings(broker, v5=False), lambda _m: None)

        asyncio.run(main())
