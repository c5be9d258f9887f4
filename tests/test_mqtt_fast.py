"""The batched read path (streamproc.mqtt_fast) against a real Mosquitto."""

from __future__ import annotations

import asyncio

import aiomqtt
import paho.mqtt.client as mqtt
import pytest

from streamproc.mqtt_fast import FastReader
from tests.broker import MosquittoBroker


def _client(broker: MosquittoBroker, ident: str) -> aiomqtt.Client:
    return aiomqtt.Client("127.0.0.1", broker.port, identifier=ident, keepalive=10)


async def _publish_burst(broker: MosquittoBroker, n: int, qos: int) -> None:
    async with _client(broker, "burst-pub") as pub:
        for i in range(n):
            await pub.publish(f"t/{i % 7}", f"{i}".encode() * 40, qos=qos)


class TestFastReader:
    """Messages reach the callback complete and in order; a lost broker is reported."""

    @pytest.mark.parametrize("qos", [0, 1])
    def test_burst_in_order(self, broker: MosquittoBroker, qos: int) -> None:
        """A burst of 5,000 messages arrives whole, once each, in publish order."""
        got: list[tuple[str, bytes]] = []
        n = 5000

        async def main() -> None:
            client = _client(broker, f"fast-{qos}")
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
