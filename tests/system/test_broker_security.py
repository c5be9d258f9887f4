"""The shipped broker security (config/mosquitto: passwords and ACL), proved with real clients.

A real Mosquitto runs the shipped ``mosquitto.conf`` (the TLS-only profile),
the demo password files and ``acl`` (paths rewritten to a temporary copy,
throwaway certificates: :func:`tests.system.broker.shipped_broker`, the ``secure_broker`` fixture).
Clients are paho MQTT 5 clients (:class:`tests.system.broker.Subscriber`) logging in
with the demo credentials: the processor over TLS on its own listener, the
others on the loopback listener (the same password file, ACL and client-id
rule as their TLS listener, which ``TestClientIdTakeover`` uses too). A denied publish is proved twice: the broker's
PUBACK carries reason code 135 ("Not authorized"), and a subscriber allowed to
read the topic never receives it. "Never" is made exact with a sentinel: after
the PUBACK, a message the observer may read is published and awaited; the
broker handled the denied publish before that, so anything it delivered would
have arrived first. The last class runs the real service as the processor user.
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from simulators.scenario import load_scenario, render, scenario_dir
from tests.system.broker import (
    DEMO_PASSWORDS,
    PLAIN,
    PROCESSOR_TLS,
    TLS,
    MosquittoBroker,
    Received,
    Subscriber,
    processor_ca,
)
from tests.system.service_helpers import alarm, is_alarm, processor_service

NOT_AUTHORIZED = 135
INBOUND = ("abp", "vitals", "infusion", "patient", "labs", "ack")
#: What a processor-role observer reads: every inbound kind and the alarms.
OBSERVED = [f"icu/+/+/{kind}" for kind in INBOUND] + ["icu/+/+/alarms/#"]
#: Who sends which inbound kind in the stack (ward7's gateway: the scenario's unit).
SENDER = {
    "abp": "ward7",
    "vitals": "ward7",
    "infusion": "pump",
    "patient": "ehr",
    "labs": "ehr",
}
ALARM = json.dumps(
    {
        "alarm_id": "w1.b1.hypotension.1",
        "kind": "hypotension",
        "state": "cleared",
        "priority": "high",
        "ts": 1.0,
        "onset_ts": 0.0,
        "unit": "w1",
        "bed": "b1",
    }
)


def login(
    broker: MosquittoBroker,
    user: str,
    topic_filter: str | list[str] | None = None,
    *,
    protocol: int = 5,
    listener: int | None = None,
    client_id: str = "",
) -> Subscriber:
    """A client of ``user`` with its demo password (start it: ``with login(...) as c``).

    The processor connects over TLS to its own listener, the others to the
    loopback one; ``listener`` (PLAIN, TLS, PROCESSOR_TLS) chooses another.
    """
    if listener is None:
        listener = PROCESSOR_TLS if user == "processor" else PLAIN
    client = Subscriber(
        (broker.host, broker.ports[listener]),
        topic_filter,
        username=user,
        password=DEMO_PASSWORDS[user],
        protocol=5 if protocol == 5 else 4,
        client_id=client_id,
    )
    if listener != PLAIN:
        client.client.tls_set(ca_certs=str(processor_ca(broker)))
    return client


@pytest.fixture
def observer(secure_broker: MosquittoBroker) -> Iterator[Subscriber]:
    """A processor-role client reading every inbound kind and the alarms."""
    with login(secure_broker, "processor", OBSERVED) as client:
        yield client


class Acks:
    """Records the PUBACK reason code of every QoS 1 publish of one client."""

    def __init__(self, client: Subscriber) -> None:
        self._cond = threading.Condition()
        self.codes: dict[int, ReasonCode] = {}
        client.client.on_publish = self._on_publish

    def _on_publish(
        self,
        client: object,
        userdata: object,
        mid: int,
        reason_code: ReasonCode,
        properties: Properties | None,
    ) -> None:
        with self._cond:
            self.codes[mid] = reason_code
            self._cond.notify_all()

    def wait(self, mids: list[int], timeout: float = 10.0) -> list[ReasonCode]:
        """The reason codes of these message ids, in order, once all have been acked."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while not all(m in self.codes for m in mids):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError(f"{len(mids)} publishes not acknowledged in {timeout:g} s")
                self._cond.wait(remaining)
            return [self.codes[m] for m in mids]


def publish_as(
    broker: MosquittoBroker, user: str, topic: str, payload: str = "{}", *, retain: bool = False
) -> ReasonCode:
    """Publish once as ``user`` (MQTT 5, QoS 1) and return the PUBACK's reason code."""
    with login(broker, user) as client:
        acks = Acks(client)
        info = client.client.publish(topic, payload, qos=1, retain=retain)
        return acks.wait([info.mid], timeout=5.0)[0]


def sentinel(broker: MosquittoBroker, observer: Subscriber) -> None:
    """Publish a message the observer may read and wait until it has arrived."""
    marker = uuid.uuid4().hex
    rc = publish_as(broker, "ward7", f"icu/ward7/s{marker[:8]}/abp", marker)
    assert not rc.is_failure, rc
    observer.wait_for(lambda m: m.payload == marker.encode(), timeout=5)


def assert_allowed(
    broker: MosquittoBroker, observer: Subscriber, user: str, topic: str, *, retain: bool = False
) -> Received:
    """``user`` may publish ``topic``: a success PUBACK, and the observer receives it."""
    marker = json.dumps({"ts": time.time(), "marker": uuid.uuid4().hex})
    rc = publish_as(broker, user, topic, marker, retain=retain)
    assert not rc.is_failure, f"{user} -> {topic}: {rc}"
    return observer.wait_for(lambda m: m.topic == topic and m.payload == marker.encode(), 5)


def assert_denied(broker: MosquittoBroker, observer: Subscriber, user: str, topic: str) -> None:
    """``user`` may not publish ``topic``: PUBACK 135, and the observer never sees it."""
    rc = publish_as(broker, user, topic, '{"forged": true}')
    assert rc.value == NOT_AUTHORIZED, f"{user} -> {topic}: {rc}"
    sentinel(broker, observer)
    assert not [m for m in observer.messages if m.topic == topic], f"{topic} was delivered"


class TestAuthentication:
    """password_file and allow_anonymous false: who may connect at all."""

    def test_anonymous_refused(self, secure_broker: MosquittoBroker) -> None:
        """A client without credentials gets a refused CONNACK."""
        with pytest.raises(ConnectionRefusedError, match="Not authorized"):
            Subscriber(secure_broker, None).start()
        anonymous = Subscriber((secure_broker.host, secure_broker.ports[PROCESSOR_TLS]), None)
        anonymous.client.tls_set(ca_certs=str(processor_ca(secure_broker)))
        with pytest.raises(ConnectionRefusedError, match="Not authorized"):
            anonymous.start()

    def test_wrong_password_refused(self, secure_broker: MosquittoBroker) -> None:
        """A known user with a wrong password is refused."""
        with pytest.raises(ConnectionRefusedError):
            Subscriber(
                secure_broker,
                None,
                username="processor",
                password="wrong",  # noqa: S106 - wrong on purpose
            ).start()

    def test_unknown_user_refused(self, secure_broker: MosquittoBroker) -> None:
        """A user not in the password file is refused, whatever the password."""
        with pytest.raises(ConnectionRefusedError):
            Subscriber(
                secure_broker, None, username="intruder", password=DEMO_PASSWORDS["ward7"]
            ).start()

    @pytest.mark.parametrize("user", sorted(DEMO_PASSWORDS))
    def test_demo_user_logs_in(self, secure_broker: MosquittoBroker, user: str) -> None:
        """Every documented demo password matches its hash in the shipped passwd."""
        with login(secure_broker, user) as client:
            assert client.connected


class TestGatewayRole:
    """A care unit's gateway (account named as the unit): writes its own unit's abp and
    vitals, nothing else, reads nothing."""

    @pytest.mark.parametrize("kind", ["abp", "vitals"])
    def test_publishes_monitor_data(
        self, secure_broker: MosquittoBroker, observer: Subscriber, kind: str
    ) -> None:
        """ward7's gateway: its unit's abp and vitals reach a processor-role subscriber."""
        assert_allowed(secure_broker, observer, "ward7", f"icu/ward7/b1/{kind}")

    @pytest.mark.parametrize(
        ("user", "topic"),
        [
            ("ward7", "icu/ward8/bed01/abp"),
            ("ward7", "icu/ward8/bed01/vitals"),
            ("ward8", "icu/ward7/bed03/abp"),
            ("ward7", "icu/w1/b1/abp"),
            ("ward7", "icu/ward7x/b1/abp"),
        ],
    )
    def test_cannot_publish_to_another_unit(
        self, secure_broker: MosquittoBroker, observer: Subscriber, user: str, topic: str
    ) -> None:
        """A gateway cannot send another unit's patients' data: PUBACK 135, and the
        message never reaches a subscriber (issue 18: gateways shared one account that
        could publish to every unit)."""
        assert_denied(secure_broker, observer, user, topic)

    @pytest.mark.parametrize(
        "topic",
        [
            "icu/ward7/b1/alarms/hypotension",
            "icu/ward7/b1/infusion",
            "icu/ward7/b1/patient",
            "icu/ward7/b1/ack",
        ],
    )
    def test_cannot_publish_other_kinds(
        self, secure_broker: MosquittoBroker, observer: Subscriber, topic: str
    ) -> None:
        """A gateway cannot forge an alarm (or drugs, profiles, acks), even of its own
        unit: PUBACK 135, and nobody receives it."""
        assert_denied(secure_broker, observer, "ward7", topic)

    def test_mqtt311_forgery_is_dropped_silently(
        self, secure_broker: MosquittoBroker, observer: Subscriber
    ) -> None:
        """With MQTT 3.1.1 the PUBACK cannot say "not authorized": the publish looks
        acknowledged, but the alarm never reaches a subscriber."""
        topic = "icu/ward7/b1/alarms/hypotension"
        with login(secure_broker, "ward7", protocol=4) as client:
            client.publish(topic, ALARM, qos=1, timeout=5.0)  # acknowledged, no error
        sentinel(secure_broker, observer)
        assert not [m for m in observer.messages if m.topic == topic]

    def test_reads_nothing(self, secure_broker: MosquittoBroker) -> None:
        """A gateway subscribed to the alarms gets none (a dashboard gets the same one).

        Mosquitto 2.0.11 grants the subscription and filters every delivery
        against the ACL; a release that refuses it in the SUBACK denies it too.
        """
        rc = publish_as(
            secure_broker, "processor", "icu/w1/b1/alarms/hypotension", ALARM, retain=True
        )
        assert not rc.is_failure
        gateway = login(secure_broker, "ward7", ["icu/+/+/alarms/#", "#"])
        try:
            gateway.start()
        except PermissionError:
            return  # refused at subscription time: nothing can be delivered
        try:
            with login(secure_broker, "dashboard", "icu/+/+/alarms/#") as dashboard:
                dashboard.wait_for(lambda m: m.topic.endswith("/alarms/hypotension"), 5)
            time.sleep(0.3)  # the retained copy goes to both right after their SUBACKs
            assert gateway.messages == []
        finally:
            gateway.stop()


class TestPumpRole:
    """pump: writes infusion only."""

    def test_publishes_infusion(self, secure_broker: MosquittoBroker, observer: Subscriber) -> None:
        """A pump's infusion state reaches the processor, and stays retained for a
        processor that subscribes later (a restart)."""
        msg = assert_allowed(secure_broker, observer, "pump", "icu/w1/b1/infusion", retain=True)
        with login(secure_broker, "processor", "icu/+/+/infusion") as late:
            again = late.wait_for(lambda m: m.payload == msg.payload, timeout=5)
        assert again.retain

    @pytest.mark.parametrize("kind", ["abp", "vitals", "alarms/hypotension"])
    def test_cannot_publish_abp(
        self, secure_broker: MosquittoBroker, observer: Subscriber, kind: str
    ) -> None:
        """A pump cannot publish waveforms, numerics or alarms."""
        assert_denied(secure_broker, observer, "pump", f"icu/w1/b1/{kind}")


class TestEhrRole:
    """ehr: writes patient and labs only."""

    @pytest.mark.parametrize("kind", ["patient", "labs"])
    def test_publishes_context(
        self, secure_broker: MosquittoBroker, observer: Subscriber, kind: str
    ) -> None:
        """The EHR's patient profile and labs reach the processor."""
        assert_allowed(secure_broker, observer, "ehr", f"icu/w1/b1/{kind}")

    @pytest.mark.parametrize("kind", ["abp", "infusion", "alarms/hypotension"])
    def test_cannot_publish_others(
        self, secure_broker: MosquittoBroker, observer: Subscriber, kind: str
    ) -> None:
        """The EHR cannot publish waveforms, drugs or alarms."""
        assert_denied(secure_broker, observer, "ehr", f"icu/w1/b1/{kind}")


class TestDashboardRole:
    """dashboard: reads alarms, status and vitals; writes acks only."""

    def test_reads_retained_alarms_and_status(self, secure_broker: MosquittoBroker) -> None:
        """A dashboard that connects later reads the retained alarm and processor status."""
        for topic, payload in (
            ("icu/w1/b1/alarms/hypotension", ALARM),
            ("icu/_status/streamproc-1", '{"state": "online"}'),
        ):
            rc = publish_as(secure_broker, "processor", topic, payload, retain=True)
            assert not rc.is_failure, rc
        with login(secure_broker, "dashboard", ["icu/+/+/alarms/#", "icu/_status/#"]) as dash:
            got = dash.wait_for_count(2, timeout=5)
        assert {(m.topic, m.retain) for m in got} == {
            ("icu/w1/b1/alarms/hypotension", True),
            ("icu/_status/streamproc-1", True),
        }

    def test_reads_vitals(self, secure_broker: MosquittoBroker) -> None:
        """A dashboard reads the gateways' numerics (the latest MAP)."""
        with login(secure_broker, "dashboard", "icu/+/+/vitals") as dashboard:
            rc = publish_as(secure_broker, "ward7", "icu/ward7/b1/vitals", '{"map": 47}')
            assert not rc.is_failure
            dashboard.wait_for(lambda m: m.topic == "icu/ward7/b1/vitals", timeout=5)

    def test_acknowledges(self, secure_broker: MosquittoBroker, observer: Subscriber) -> None:
        """A dashboard's ack reaches the processor."""
        assert_allowed(secure_broker, observer, "dashboard", "icu/w1/b1/ack")

    @pytest.mark.parametrize("kind", ["vitals", "abp", "alarms/hypotension"])
    def test_cannot_publish_data_or_alarms(
        self, secure_broker: MosquittoBroker, observer: Subscriber, kind: str
    ) -> None:
        """A dashboard cannot publish vitals or waveforms, nor raise or clear an alarm."""
        assert_denied(secure_broker, observer, "dashboard", f"icu/w1/b1/{kind}")


class TestSimulatorRole:
    """simulator: gateway + pump + EHR rights; reads alarms and status."""

    @pytest.mark.parametrize("kind", ["abp", "vitals", "infusion", "patient", "labs"])
    def test_publishes_every_inbound_kind(
        self, secure_broker: MosquittoBroker, observer: Subscriber, kind: str
    ) -> None:
        """The simulator plays gateway, pump and EHR."""
        assert_allowed(secure_broker, observer, "simulator", f"icu/w1/b1/{kind}")

    @pytest.mark.parametrize("kind", ["alarms/hypotension", "ack"])
    def test_cannot_publish_alarms_or_acks(
        self, secure_broker: MosquittoBroker, observer: Subscriber, kind: str
    ) -> None:
        """The simulator cannot forge alarms or acknowledge them."""
        assert_denied(secure_broker, observer, "simulator", f"icu/w1/b1/{kind}")

    def test_reads_alarms(self, secure_broker: MosquittoBroker) -> None:
        """The simulator (soak) reads the retained alarms back."""
        rc = publish_as(
            secure_broker, "processor", "icu/w1/b1/alarms/hypotension", ALARM, retain=True
        )
        assert not rc.is_failure
        with login(secure_broker, "simulator", "icu/+/+/alarms/#") as sim:
            assert sim.wait_for(timeout=5).retain

    def test_streamproc_sim_logs_in_from_the_environment(
        self, secure_broker: MosquittoBroker, observer: Subscriber
    ) -> None:
        """`streamproc-sim publish` as the compose file runs it: over TLS (CA from
        STREAMPROC_SIM_TLS_CA), credentials from STREAMPROC_SIM_USERNAME/PASSWORD; the
        ward's messages reach the processor role."""
        env = dict(
            os.environ,
            STREAMPROC_SIM_USERNAME="simulator",
            STREAMPROC_SIM_PASSWORD=DEMO_PASSWORDS["simulator"],
            STREAMPROC_SIM_TLS_CA=str(processor_ca(secure_broker)),
        )
        tls_url = f"mqtts://127.0.0.1:{secure_broker.ports[TLS]}"
        done = subprocess.run(  # noqa: S603 - our own entry point
            [
                sys.executable,
                "-m",
                "simulators.cli",
                "publish",
                str(scenario_dir() / "stable.toml"),
                "--beds",
                "1",
                "--duration",
                "5s",
                "--broker",
                tls_url,
                "--as-fast-as-possible",
            ],
            capture_output=True,
            text=True,
            timeout=60,
            env=env,
            check=False,
        )
        assert done.returncode == 0, done.stdout + done.stderr
        observer.wait_for(lambda m: m.topic.endswith("/abp"), timeout=10)
        observer.wait_for(lambda m: m.topic.endswith("/infusion"), timeout=10)
        env.pop("STREAMPROC_SIM_USERNAME")
        refused = subprocess.run(  # noqa: S603
            [
                sys.executable,
                "-m",
                "simulators.cli",
                "publish",
                str(scenario_dir() / "stable.toml"),
                "--beds",
                "1",
                "--duration",
                "5s",
                "--broker",
                tls_url,
                "--as-fast-as-possible",
            ],
            capture_output=True,
            text=True,
            timeout=60,
            env=env,
            check=False,
        )
        assert refused.returncode != 0


class TestProcessorRole:
    """processor: the real streamproc service under the shipped ACL."""

    def test_cannot_forge_inbound_data(
        self, secure_broker: MosquittoBroker, observer: Subscriber
    ) -> None:
        """The processor reads monitor data but cannot publish it."""
        assert_denied(secure_broker, observer, "processor", "icu/w1/b1/abp")

    def test_reads_its_previous_status(self, secure_broker: MosquittoBroker) -> None:
        """A restarting processor reads its own retained status back (which care units its
        previous run subscribed to, so that it can drop filters it no longer wants)."""
        status = '{"state": "offline", "units": ["ward1"]}'
        rc = publish_as(secure_broker, "processor", "icu/_status/shard-0", status, retain=True)
        assert not rc.is_failure, rc
        with login(secure_broker, "processor", "icu/_status/shard-0") as restarted:
            got = restarted.wait_for(timeout=5)
        assert (got.retain, got.payload.decode()) == (True, status)

    def test_alarm_reaches_dashboard(self, secure_broker: MosquittoBroker, tmp_path: Path) -> None:
        """The 60/40 episode on norepinephrine, sent by gateway, pump and EHR with
        their own logins, makes the real service (processor login) publish its
        status and a retained high-priority hypotension alarm that a dashboard reads."""
        workdir = tmp_path / "svc"
        workdir.mkdir()
        service = processor_service(secure_broker, workdir)
        senders = {user: login(secure_broker, user) for user in sorted(set(SENDER.values()))}
        try:
            for client in senders.values():
                client.start()
            service.start()
            sc = load_scenario(scenario_dir() / "ne_60_40.toml")
            sc = dataclasses.replace(sc, t0=time.time() - sc.duration_s)
            acks = {user: Acks(client) for user, client in senders.items()}
            sent: dict[str, list[int]] = {user: [] for user in senders}
            kinds: set[str] = set()
            previous = None
            for line in render(sc):
                kind = line["topic"].rsplit("/", 1)[1]
                kinds.add(kind)
                user = SENDER[kind]
                if previous is not None and user != previous:
                    acks[previous].wait(sent[previous])  # keep the recording's order
                info = senders[user].client.publish(
                    line["topic"],
                    json.dumps(line["payload"]),
                    qos=1,
                    retain=kind in ("patient", "infusion"),
                )
                sent[user].append(info.mid)
                previous = user
            for user, mids in sent.items():
                failed = [str(rc) for rc in acks[user].wait(mids, timeout=20) if rc.is_failure]
                assert not failed, f"{user}: {failed}"
            assert {"abp", "infusion", "patient"} <= kinds

            with login(secure_broker, "dashboard", "icu/+/+/alarms/#") as dashboard:
                try:
                    dashboard.wait_for(is_alarm("hypotension", state="active"), timeout=20)
                except TimeoutError:
                    pytest.fail(f"no alarm; service log:\n{service.log_tail()}")
            filters = ["icu/+/+/alarms/#", "icu/_status/#", "icu/+/+/summary"]
            with login(secure_broker, "dashboard", filters) as late:
                msg = late.wait_for(is_alarm("hypotension"), timeout=5)
                status = late.wait_for(lambda m: m.topic == "icu/_status/test-1", timeout=5)
                summary = late.wait_for(lambda m: m.topic.endswith("/summary"), timeout=10)
            assert json.loads(summary.payload)["bed"] == "bed03"
            assert msg.retain
            assert msg.topic == "icu/ward7/bed03/alarms/hypotension"
            payload = alarm(msg)
            assert (payload["state"], payload["priority"]) == ("active", "high")
            assert json.loads(status.payload)["state"] == "online"
            assert service.health()["broker_connected"]
        finally:
            for client in senders.values():
                client.stop()
            service.close()

    def test_dead_letters(self, secure_broker: MosquittoBroker, tmp_path: Path) -> None:
        """The processor may publish to the dead-letter topic icu/_dead: a malformed
        gateway message shows up there with its reason."""
        workdir = tmp_path / "svc"
        workdir.mkdir()
        service = processor_service(
            secure_broker, workdir, env={"STREAMPROC_DEAD_LETTER_TOPIC": "icu/_dead"}
        )
        try:
            service.start()
            with login(secure_broker, "processor", "icu/_dead") as dead:
                rc = publish_as(secure_broker, "ward7", "icu/ward7/b1/abp", "not json")
                assert not rc.is_failure
                try:
                    msg = dead.wait_for(timeout=10)
                except TimeoutError:
                    pytest.fail(f"no dead letter; service log:\n{service.log_tail()}")
            letter = json.loads(msg.payload)
            assert letter["topic"] == "icu/ward7/b1/abp"
            assert letter["reason"]
        finally:
            service.close()


class TestClientIdTakeover:
    """Nobody can knock the processor off the broker by presenting its client id.

    On the listeners other accounts use, the client id is replaced by the user
    name (use_username_as_clientid); the processor's own listener takes the
    processor account only. Before: a `gateway` login with the id
    `streamproc-streamproc-1` made Mosquitto drop the processor (issue 18).
    """

    @pytest.mark.parametrize("listener", [PLAIN, TLS])
    def test_other_account_with_the_processors_id(
        self, secure_broker: MosquittoBroker, tmp_path: Path, listener: int
    ) -> None:
        """ward7's gateway connects (4 times) with the processor's client id: it is
        let in as itself, and the processor stays connected, never reconnecting."""
        service = processor_service(secure_broker, tmp_path)
        try:
            service.start()
            assert service.metric("streamproc_broker_reconnects_total") == 0
            client_id = f"streamproc-{service.instance}"
            for _ in range(4):
                with login(
                    secure_broker, "ward7", None, listener=listener, client_id=client_id
                ) as intruder:
                    time.sleep(0.3)
                    assert intruder.connected  # let in, as itself
                time.sleep(0.3)
            time.sleep(1.0)  # a dropped processor would be reconnecting by now
            health = service.health()
            assert health["broker_connected"], service.log_tail()
            assert service.metric("streamproc_broker_reconnects_total") == 0, service.log_tail()
            assert "already connected" not in secure_broker.log_tail(400)
        finally:
            service.close()

    @pytest.mark.parametrize("user", ["ward7", "dashboard", "simulator", "pump"])
    def test_processor_listener_refuses_other_accounts(
        self, secure_broker: MosquittoBroker, user: str
    ) -> None:
        """Only processor accounts can log in where client ids are kept as sent."""
        with pytest.raises(ConnectionRefusedError):
            login(
                secure_broker, user, listener=PROCESSOR_TLS, client_id="streamproc-test-1"
            ).start()

    def test_processor_keeps_its_own_ids(self, secure_broker: MosquittoBroker) -> None:
        """On its listener the processor's persistent session and its restore
        connection are two clients (two ids) at once: neither throws the other off."""
        with (
            login(secure_broker, "processor", client_id="streamproc-p-1") as main,
            login(secure_broker, "processor", client_id="streamproc-p-1-restore") as restore,
        ):
            time.sleep(0.5)
            assert main.connected
            assert restore.connected
