"""``streamproc run`` over TLS, end to end, against the shipped Mosquitto configuration.

A CA, a broker certificate (localhost, 127.0.0.1) and a client certificate are made at test
time (:mod:`tests.system.tls_helpers`); the shipped ``config/mosquitto`` runs with its TLS block
enabled (passwords and ACLs as shipped). The real service connects with
``mqtts://127.0.0.1:<tls port>``, ``service.tls_ca`` and the processor's password (and its
client certificate when the listener requires one); the gateway, pump, EHR and dashboard
clients connect over TLS too. A wrong CA, a missing client certificate and an unreadable CA
file each fail with one clear log line (or a clear start error), never a silent retry loop.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from simulators.scenario import load_scenario, render, scenario_dir
from streamproc.shell.service.broker import tls_hint, tls_reset_hint
from tests.system.broker import (
    DEMO_PASSWORDS,
    PROCESSOR_TLS,
    TLS,
    MosquittoBroker,
    Subscriber,
    shipped_broker,
)
from tests.system.service_helpers import (
    ServiceProcess,
    alarm,
    is_alarm,
    processor_service,
    run_cli,
)
from tests.system.tls_helpers import Pki, make_pki

SENDER = {"abp": "ward7", "vitals": "ward7", "infusion": "pump", "patient": "ehr"}


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


def tls_broker(
    mosquitto_bin: Path, tmp_path: Path, pki: Pki, *, require_certificate: bool
) -> MosquittoBroker:
    """The shipped (TLS-only) config with the test certificates; ``ports[TLS]`` is the
    listener of every client but the processor, ``ports[PROCESSOR_TLS]`` the processor's."""
    broker = shipped_broker(
        tmp_path, binary=mosquitto_bin, certs=pki.dir, require_certificate=require_certificate
    )
    broker.start()
    assert len(broker.ports) == 3
    return broker


@pytest.fixture
def broker(mosquitto_bin: Path, tmp_path: Path, pki: Pki) -> Iterator[MosquittoBroker]:
    b = tls_broker(mosquitto_bin, tmp_path, pki, require_certificate=False)
    try:
        yield b
    finally:
        b.close()


def tls_client(
    broker: MosquittoBroker, pki: Pki, user: str, topics: list[str] | None = None
) -> Subscriber:
    """A paho client of ``user`` on the TLS listener, presenting the test client certificate
    (which a ``require_certificate`` listener asks of every client)."""
    port = broker.ports[PROCESSOR_TLS if user == "processor" else TLS]
    client = Subscriber((broker.host, port), topics, username=user, password=DEMO_PASSWORDS[user])
    client.client.tls_set(
        ca_certs=str(pki.ca), certfile=str(pki.client_cert), keyfile=str(pki.client_key)
    )
    return client


def play_episode_over_tls(broker: MosquittoBroker, pki: Pki) -> None:
    """The 60/40 episode on norepinephrine, each kind sent by its role, all over TLS."""
    sc = load_scenario(scenario_dir() / "ne_60_40.toml")
    sc = dataclasses.replace(sc, t0=time.time() - sc.duration_s)
    clients = {user: tls_client(broker, pki, user).start() for user in set(SENDER.values())}
    try:
        for line in render(sc):
            kind = line["topic"].rsplit("/", 1)[1]
            info = clients[SENDER[kind]].client.publish(
                line["topic"], json.dumps(line["payload"]), qos=1
            )
            info.wait_for_publish(10)
    finally:
        for client in clients.values():
            client.stop()


def wait_log(service: ServiceProcess, event: str, timeout: float = 20.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = [ln for ln in service.log_lines() if ln.get("event") == event]
        if found:
            return found[0]
        time.sleep(0.1)
    raise AssertionError(f"no {event} line in {timeout:g} s:\n{service.log_tail()}")


class TestTlsHint:
    @pytest.mark.parametrize(
        ("reason", "names"),
        [
            ("[SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed", "service.tls_ca"),
            ("[SSL: TLSV13_ALERT_CERTIFICATE_REQUIRED] tlsv13 alert", "service.tls_cert"),
            ("[SSL: WRONG_VERSION_NUMBER] wrong version number", "mqtts://"),
            ("[SSL: SOMETHING_ELSE] new in OpenSSL 9", "handshake"),
        ],
    )
    def test_tls_reasons_get_a_hint(self, reason: str, names: str) -> None:
        assert names in (tls_hint(reason) or "")

    @pytest.mark.parametrize("reason", ["Operation timed out", "[Errno 111] Connection refused"])
    def test_other_reasons_are_not_tls(self, reason: str) -> None:
        assert tls_hint(reason) is None

    def test_a_reset_tls_connection_without_a_client_certificate_names_it(self) -> None:
        """A broker that requires client certificates may reset the CONNECT before the
        client reads its alert (TLS 1.3, a busy host): the hint still names tls_cert."""
        reset = "[Errno 104] Connection reset by peer"
        assert "service.tls_cert" in (tls_reset_hint(reset, "mqtts://b:8883", "") or "")
        assert tls_reset_hint(reset, "mqtts://b:8883", "/etc/c.pem") is None  # has one
        assert tls_reset_hint(reset, "mqtt://b:1883", "") is None  # not TLS
        assert tls_reset_hint("[Errno 111] Connection refused", "mqtts://b:8883", "") is None


class TestTls:
    def assert_alarm_over_tls(self, broker: MosquittoBroker, pki: Pki) -> None:
        with tls_client(broker, pki, "dashboard", ["icu/+/+/alarms/#"]) as dashboard:
            play_episode_over_tls(broker, pki)
            msg = dashboard.wait_for(is_alarm("hypotension", state="active"), timeout=20)
        payload = alarm(msg)
        assert (payload["bed"], payload["priority"]) == ("bed03", "high")
        assert "vasopressin" in payload["recommendation"]
        with tls_client(broker, pki, "dashboard", ["icu/+/+/alarms/hypotension"]) as late:
            retained = late.wait_for(lambda m: m.retain, timeout=5)
        assert alarm(retained)["alarm_id"] == payload["alarm_id"]

    def test_alarm_flows_over_tls_with_password(
        self, broker: MosquittoBroker, pki: Pki, tmp_path: Path
    ) -> None:
        """TLS listener (server certificate checked against service.tls_ca, host name
        included) plus the processor's password: the 60/40 alarm reaches a dashboard that
        is itself on TLS, retained."""
        service = processor_service(broker, tmp_path / "svc", ca=pki.ca).start()
        try:
            assert service.health()["broker_connected"]
            self.assert_alarm_over_tls(broker, pki)
            assert not [ln for ln in service.log_lines() if ln.get("event") == "broker_tls_failed"]
        finally:
            service.close()

    def test_client_certificate_required(
        self, mosquitto_bin: Path, tmp_path: Path, pki: Pki
    ) -> None:
        """require_certificate true: with tls_cert/tls_key (and its password) the service
        connects and the alarm flows; without them the broker's refusal is one error line
        naming service.tls_cert, and the service keeps running (it retries)."""
        broker = tls_broker(mosquitto_bin, tmp_path, pki, require_certificate=True)
        try:
            service = processor_service(broker, tmp_path / "svc", ca=pki.ca, cert=pki).start()
            try:
                self.assert_alarm_over_tls(broker, pki)
            finally:
                service.close()
            bare = processor_service(broker, tmp_path / "bare", ca=pki.ca)
            bare.start(wait=False)
            try:
                line = wait_log(bare, "broker_tls_failed")
                assert line["level"] == "error"
                # TLS 1.3: the broker checks the client certificate after the handshake,
                # sends its alert and closes; when the client's CONNECT (written right
                # after the handshake) reaches the closed socket, the reset can discard
                # the alert before it is read, and OpenSSL reports an EOF instead, or the
                # socket reports the reset itself (seen on a busy host). Each way the
                # error line's hint names service.tls_cert.
                assert (
                    "CERTIFICATE_REQUIRED" in line["reason"]
                    or "EOF occurred in violation of protocol" in line["reason"]
                    or "Connection reset by peer" in line["reason"]
                ), line
                assert "service.tls_cert" in line["hint"]
                assert bare.proc is not None
                assert bare.proc.poll() is None  # still running, retrying
                assert not bare.health()["broker_connected"]
                assert bare.terminate() == 0
            finally:
                bare.close()
        finally:
            broker.close()

    def test_wrong_ca_is_one_clear_error(
        self, broker: MosquittoBroker, pki: Pki, tmp_path: Path
    ) -> None:
        """A CA that did not sign the broker's certificate: an error line saying the
        verification failed and to check service.tls_ca; the service stays up (degraded,
        retrying with backoff) and stops cleanly."""
        service = processor_service(broker, tmp_path / "svc", ca=pki.other_ca)
        service.start(wait=False)
        try:
            line = wait_log(service, "broker_tls_failed")
            assert line["level"] == "error"
            assert "CERTIFICATE_VERIFY_FAILED" in line["reason"]
            assert "service.tls_ca" in line["hint"]
            assert line["tls_ca"] == str(pki.other_ca)
            time.sleep(1.0)
            assert service.proc is not None
            assert service.proc.poll() is None
            status = service.health()
            assert (status["status"], status["broker_connected"]) == ("degraded", False)
            assert service.terminate() == 0
        finally:
            service.close()

    @pytest.mark.parametrize("setting", ["TLS_CA", "TLS_CERT"])
    def test_unreadable_file_stops_the_start(self, pki: Pki, tmp_path: Path, setting: str) -> None:
        """A CA or certificate file that cannot be loaded: exit status 2 and one line naming
        the setting, at once (not a traceback, not a retry loop)."""
        missing = tmp_path / "nope.pem"
        env = {"STREAMPROC_TLS_CA": str(pki.ca), f"STREAMPROC_{setting}": str(missing)}
        done = run_cli("run", "--broker", "mqtts://127.0.0.1:1", cwd=tmp_path, env=env, timeout=30)
        assert done.returncode == 2, done.stderr
        assert f"service.{setting.lower()}" in done.stderr
        assert str(missing) in done.stderr
        assert "Traceback" not in done.stderr
