"""streamproc.transport (paho) and streamproc.transport_mqtt5 (the mqtt5 codec) against a
real Mosquitto: manual acknowledgement, publish confirmations, refusals, a lost
connection, keepalive, pausing. Every test runs on both; MQTT 3.1.1 only on paho."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest

from streamproc import transport, transport_mqtt5
from streamproc.transport import (
    ConnectionLostError,
    ConnectRefusedError,
    Inbound,
    MqttError,
    PublishRefusedError,
    Settings,
)
from tests.broker import MosquittoBroker, publish
from tests.test_stack import DEMO_PASSWORDS, shipped_mosquitto_config


@pytest.fixture
def secure_broker(mosquitto_bin: Path, tmp_path: Path) -> Iterator[MosquittoBroker]:
    """Mosquitto with the shipped config, password file and ACL."""
    conf = shipped_mosquitto_config(tmp_path / "config")
    broker = MosquittoBroker(binary=mosquitto_bin, workdir=tmp_path / "broker", config_file=conf)
    try:
        broker.start()
        yield broker
    finally:
        broker.close()


Connection = transport.Connection | transport_mqtt5.Connection
#: (implementation, MQTT 5?): paho speaks both versions, the mqtt5 transport MQTT 5 only.
VERSIONS = [
    pytest.param(transport.Connection, True, id="paho-v5"),
    pytest.param(transport.Connection, False, id="paho-v311"),
    pytest.param(transport_mqtt5.Connection, True, id="mqtt5-v5"),
]
IMPLEMENTATIONS = [
    pytest.param(transport.Connection, id="paho"),
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
