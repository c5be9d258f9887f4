"""The test broker harness itself: a real Mosquitto that stops, crashes, restarts and hangs."""

from __future__ import annotations

import socket
import time
from pathlib import Path

import pytest

from tests.system.broker import (
    BrokerError,
    MosquittoBroker,
    Subscriber,
    collect,
    free_port,
    publish,
)


def _accepts(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def _wait_for_autosave(broker: MosquittoBroker, needle: bytes, timeout: float = 5.0) -> None:
    """Wait until the persistence file holds ``needle`` (an autosave has run)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        path = broker.persistence_file
        if path.is_file() and needle in path.read_bytes():
            return
        time.sleep(0.05)
    raise TimeoutError(f"{needle!r} not autosaved to {broker.persistence_file} in {timeout} s")


class TestLifecycle:
    def test_starts_on_a_private_port(self, broker: MosquittoBroker) -> None:
        """The fixture's broker listens on 127.0.0.1 on its own port, never the system's 1883."""
        assert broker.running
        assert broker.port != 1883
        assert broker.url == f"mqtt://127.0.0.1:{broker.port}"
        assert _accepts(broker.port)
        config = broker.config_path.read_text()
        assert f"listener {broker.port} 127.0.0.1" in config
        assert f"persistence_location {broker.data_dir}/" in config

    def test_round_trip_and_retain_flag(self, broker: MosquittoBroker) -> None:
        """A subscriber sees a live message (retain False) and a retained one (retain True)."""
        publish(broker, "t/retained", b"kept", retain=True)
        with Subscriber(broker, "t/#") as sub:
            old = sub.wait_for(lambda m: m.topic == "t/retained")
            publish(broker, "t/live", b"now")
            new = sub.wait_for(lambda m: m.topic == "t/live")
        assert (old.payload, old.retain, old.qos) == (b"kept", True, 1)
        assert (new.payload, new.retain) == (b"now", False)

    def test_stop_closes_the_port(self, broker: MosquittoBroker) -> None:
        """After stop() the process is gone and the port refuses connections."""
        status = broker.stop()
        assert status == 0
        assert not broker.running
        assert not _accepts(broker.port)

    def test_context_manager_cleans_up(self, mosquitto_bin: Path) -> None:
        """``with MosquittoBroker()`` starts it, and stops it and removes its temp dir on exit."""
        with MosquittoBroker(binary=mosquitto_bin) as b:
            port, workdir = b.port, b.workdir
            assert _accepts(port)
            assert workdir.is_dir()
        assert not b.running
        assert not _accepts(port)
        assert not workdir.exists()

    def test_bad_config_fails_with_the_log(self, mosquitto_bin: Path, tmp_path: Path) -> None:
        """A config mosquitto refuses makes start() fail at once, quoting mosquitto's output."""
        b = MosquittoBroker(
            binary=mosquitto_bin, workdir=tmp_path, extra_config=["no_such_option 1"]
        )
        try:
            with pytest.raises(BrokerError, match="exited with status") as info:
                b.start()
            assert "no_such_option" in str(info.value)
            assert not b.running
        finally:
            b.close()

    def test_custom_config_file(self, mosquitto_bin: Path, tmp_path: Path) -> None:
        """A shipped-style config keeps its own rules; its listener moves to a free port."""
        shipped = tmp_path / "shipped" / "mosquitto.conf"
        shipped.parent.mkdir()
        shipped.write_text(
            "per_listener_settings false\n"
            "listener 1883\n"
            "allow_anonymous false\n"
            "persistence_location /var/lib/mosquitto/\n"
            "log_dest syslog\n"
        )
        with MosquittoBroker(binary=mosquitto_bin, config_file=shipped) as b:
            assert b.port != 1883
            text = b.config_path.read_text()
            assert f"listener {b.port} 127.0.0.1" in text
            assert "# (replaced by the test harness) persistence_location /var/lib" in text
            # the shipped rule (no anonymous clients) is in force
            with pytest.raises(ConnectionRefusedError):
                Subscriber(b, "#", timeout=3).start()


class TestPersistence:
    def test_retained_survives_stop_and_restart(self, broker: MosquittoBroker) -> None:
        """A retained QoS 1 message is saved on SIGTERM and served again after restart()."""
        port = broker.port
        publish(broker, "icu/w/b/alarms/hypotension", b'{"state":"active"}', retain=True)
        broker.stop()
        broker.restart()
        assert broker.port == port
        got = collect(broker, "icu/#", until=lambda ms: len(ms) >= 1, timeout=5)
        assert [(m.topic, m.payload, m.retain) for m in got] == [
            ("icu/w/b/alarms/hypotension", b'{"state":"active"}', True)
        ]

    @pytest.mark.parametrize("protocol", [5, 4], ids=["mqtt5", "mqtt311"])
    def test_persistent_session_gets_what_it_missed(
        self, broker: MosquittoBroker, protocol: int
    ) -> None:
        """A fixed-id, non-clean session receives the QoS 1 messages sent while it was away."""
        options = {"client_id": f"audit-sub-{protocol}", "clean_start": False}
        first = Subscriber(broker, "icu/+/+/ack", protocol=protocol, **options)  # type: ignore[arg-type]
        with first:
            pass  # subscribed, then disconnected cleanly: the session stays on the broker
        for i in range(3):
            publish(broker, "icu/w/b/ack", f"ack-{i}".encode(), qos=1)
        # reconnect WITHOUT subscribing: only the stored session can deliver these
        with Subscriber(broker, None, protocol=protocol, **options) as again:  # type: ignore[arg-type]
            got = again.wait_for_count(3, timeout=5)
            assert again.session_present is True
        assert [m.payload for m in got] == [b"ack-0", b"ack-1", b"ack-2"]
        assert {m.qos for m in got} == {1}

    def test_clean_session_gets_nothing_it_missed(self, broker: MosquittoBroker) -> None:
        """The control case: a clean session starts empty and receives nothing old."""
        with Subscriber(broker, "icu/#", client_id="clean-sub"):
            pass
        publish(broker, "icu/w/b/ack", b"missed")
        with Subscriber(broker, None, client_id="clean-sub") as again:
            assert again.session_present is False
            with pytest.raises(TimeoutError):
                again.wait_for(timeout=0.5)


class TestCrash:
    def test_kill_then_restart_on_the_same_port(self, broker: MosquittoBroker) -> None:
        """After SIGKILL the broker restarts on its port with what the autosave had written."""
        port = broker.port
        publish(broker, "icu/w/b/patient", b"saved-before-crash", retain=True)
        _wait_for_autosave(broker, b"saved-before-crash")
        status = broker.kill()
        assert status == -9
        assert not _accepts(port)
        broker.restart()
        assert broker.port == port
        assert _accepts(port)
        got = collect(broker, "icu/#", until=lambda ms: len(ms) >= 1, timeout=5)
        assert got[0].payload == b"saved-before-crash"
        assert got[0].retain

    def test_kill_loses_what_was_not_autosaved(self, mosquitto_bin: Path, tmp_path: Path) -> None:
        """With autosave far away a kill is a real crash: the retained message is gone."""
        with MosquittoBroker(binary=mosquitto_bin, workdir=tmp_path, autosave_interval=3600) as b:
            publish(b, "icu/w/b/patient", b"unsaved", retain=True)
            b.kill()
            b.restart()
            with Subscriber(b, "icu/#") as sub, pytest.raises(TimeoutError):
                sub.wait_for(timeout=0.5)

    def test_restart_requires_a_first_start(self, mosquitto_bin: Path, tmp_path: Path) -> None:
        """restart() before start() has no port to reuse and says so."""
        b = MosquittoBroker(binary=mosquitto_bin, workdir=tmp_path)
        with pytest.raises(BrokerError, match="before start"):
            b.restart()
        with pytest.raises(BrokerError, match="not been started"):
            _ = b.url


class TestPause:
    def test_paused_broker_holds_messages_until_resumed(self, broker: MosquittoBroker) -> None:
        """While SIGSTOPped nothing is acknowledged or delivered; after SIGCONT all of it is."""
        with Subscriber(broker, "icu/#") as sub, Subscriber(broker, None) as pub:
            broker.pause()
            assert broker.paused
            assert broker.running
            info = pub.publish("icu/w/b/vitals", b"during-pause", timeout=None)
            time.sleep(0.5)
            assert not info.is_published()
            assert sub.messages == []
            broker.resume()
            info.wait_for_publish(5)
            assert info.is_published()
            got = sub.wait_for(lambda m: m.payload == b"during-pause", timeout=5)
            assert got.topic == "icu/w/b/vitals"

    def test_new_connection_hangs_while_paused(self, broker: MosquittoBroker) -> None:
        """The port still accepts TCP (the kernel does) but no CONNACK comes back."""
        broker.pause()
        try:
            with pytest.raises(TimeoutError, match="no CONNACK"):
                Subscriber(broker, "#", timeout=0.5).start()
        finally:
            broker.resume()
        with Subscriber(broker, "#", timeout=5) as sub:
            assert sub.connected

    def test_stop_and_kill_work_on_a_paused_broker(self, broker: MosquittoBroker) -> None:
        """stop() continues a paused broker before SIGTERM, so teardown never hangs."""
        broker.pause()
        assert broker.stop() == 0
        assert not broker.running
        broker.start()
        broker.pause()
        assert broker.kill() == -9


def test_free_port_is_bindable() -> None:
    """free_port() returns a port nobody listens on."""
    port = free_port()
    assert 1024 <= port <= 65535
    assert not _accepts(port)
