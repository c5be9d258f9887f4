"""A real Mosquitto for tests, and small synchronous MQTT clients to observe it.

:class:`MosquittoBroker` runs ``mosquitto`` as a subprocess on a free port of
127.0.0.1 with its own configuration, data (persistence) directory and log
file, all under one working directory. It can be stopped (SIGTERM: the
in-memory database is saved), killed (SIGKILL: only what was autosaved
survives), restarted on the same port and data directory, and paused/resumed
(SIGSTOP/SIGCONT) to simulate a broker that hangs without closing sockets.

:func:`shipped_broker` is the same broker running the shipped configuration
(``config/mosquitto``: passwords, ACL, TLS listeners) from a temporary copy
(:func:`shipped_mosquitto_config`); the ``secure_broker`` fixture of
``tests/conftest.py`` starts one.

:class:`Subscriber` is a paho-mqtt (v2 callback API) client running its network
loop on a background thread; it records every message it receives (topic,
payload bytes, retain flag, QoS) and lets a test wait for one with a bounded
timeout. :func:`publish` and :func:`collect` are one-shot conveniences.

Nothing here touches a broker the test did not start: the system's Mosquitto
on 1883 is never used.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Literal, Self

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from tests.system.tls_helpers import make_pki

__all__ = [
    "BrokerError",
    "MosquittoBroker",
    "Received",
    "Subscriber",
    "collect",
    "find_mosquitto",
    "free_port",
    "processor_ca",
    "publish",
    "shipped_broker",
    "shipped_mosquitto_config",
]

HOST = "127.0.0.1"
REPO = Path(__file__).resolve().parents[2]
#: Where mosquitto is commonly installed when it is not on PATH (it lives in sbin).
_CANDIDATES = (
    "/usr/sbin/mosquitto",
    "/usr/local/sbin/mosquitto",
    "/opt/homebrew/sbin/mosquitto",
    "/usr/local/opt/mosquitto/sbin/mosquitto",
)
#: Directives the harness owns when it runs a custom configuration file: the
#: port, persistence and log must be the harness's own so that tests never
#: collide with each other or with the system broker.
_OWNED = frozenset(
    {
        "port",
        "bind_address",
        "persistence",
        "persistence_location",
        "persistence_file",
        "autosave_interval",
        "autosave_on_changes",
        "log_dest",
        "pid_file",
        "user",
    }
)

# Safety net: any broker process still alive when the interpreter exits is killed.
_LIVE: set[subprocess.Popen[bytes]] = set()


@atexit.register
def _reap_all() -> None:  # pragma: no cover - only runs if a test leaked a broker
    for proc in list(_LIVE):
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=5)
        _LIVE.discard(proc)


class BrokerError(RuntimeError):
    """The broker could not be started or stopped; the message ends with its log's tail."""


def find_mosquitto() -> Path | None:
    """``$MOSQUITTO_BIN``, else ``mosquitto`` on PATH, else the usual sbin places."""
    env = os.environ.get("MOSQUITTO_BIN")
    if env:
        return Path(env) if Path(env).is_file() else None
    found = shutil.which("mosquitto")
    if found:
        return Path(found)
    for candidate in _CANDIDATES:
        if os.access(candidate, os.X_OK):
            return Path(candidate)
    return None


def free_port(host: str = HOST) -> int:
    """A TCP port free right now on ``host`` (bind to 0, read it, close)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def _port_bindable(host: str, port: int) -> bool:
    """Whether a listener could bind ``port`` now (with SO_REUSEADDR, as mosquitto does)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
        return True


def _accepts(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.25):
            return True
    except OSError:
        return False


class MosquittoBroker:
    """One Mosquitto process owned by a test.

    Args:
        binary: the ``mosquitto`` executable (default: :func:`find_mosquitto`).
        workdir: directory for the config, data and log (default: a new temp
            directory, removed by :meth:`close`).
        extra_config: lines appended to the configuration (later lines win
            for single-valued options, e.g. ``allow_anonymous false``).
        config_file: run this configuration (e.g. the shipped one, with
            passwords and ACLs) instead of the generated one. Its ``listener``
            lines are rebound to free ports on 127.0.0.1 (the first is
            :attr:`port`, all are in :attr:`ports`); its port, persistence,
            log, pid and user directives are replaced by the harness's own.
            Mosquitto runs in the file's directory, so relative paths in it
            (password_file, acl_file, certificates) resolve as they would
            next to the file.
        persistence: keep a persistence database in :attr:`data_dir`.
        autosave_interval: seconds between autosaves (what survives a kill).
        start_timeout: how long :meth:`start` waits for the port.
        stop_timeout: how long :meth:`stop` waits after SIGTERM before SIGKILL.
    """

    host: str = HOST

    def __init__(
        self,
        *,
        binary: str | Path | None = None,
        workdir: str | Path | None = None,
        extra_config: Sequence[str] = (),
        config_file: str | Path | None = None,
        persistence: bool = True,
        autosave_interval: int = 1,
        start_timeout: float = 10.0,
        stop_timeout: float = 5.0,
    ) -> None:
        found = Path(binary) if binary is not None else find_mosquitto()
        if found is None:
            raise BrokerError("mosquitto binary not found (set MOSQUITTO_BIN or put it on PATH)")
        self.binary = found
        self._owns_workdir = workdir is None
        self.workdir = (
            Path(tempfile.mkdtemp(prefix="mosquitto-test-")) if workdir is None else Path(workdir)
        )
        self.extra_config = tuple(extra_config)
        self.config_file = Path(config_file).resolve() if config_file is not None else None
        self.persistence = persistence
        self.autosave_interval = autosave_interval
        self.start_timeout = start_timeout
        self.stop_timeout = stop_timeout
        self.data_dir = self.workdir / "data"
        self.config_path = self.workdir / "mosquitto.conf"
        self.log_path = self.workdir / "mosquitto.log"
        self.output_path = self.workdir / "mosquitto.out"
        self._ports: tuple[int, ...] = ()
        self._proc: subprocess.Popen[bytes] | None = None
        self._paused = False

    # -- addresses -----------------------------------------------------------

    @property
    def ports(self) -> tuple[int, ...]:
        """Every TCP listener's port (fixed by the first :meth:`start`)."""
        if not self._ports:
            raise BrokerError("the broker has not been started yet: it has no port")
        return self._ports

    @property
    def port(self) -> int:
        """The first listener's port."""
        return self.ports[0]

    @property
    def url(self) -> str:
        return f"mqtt://{self.host}:{self.port}"

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    @property
    def running(self) -> bool:
        """The process exists and has not exited (it may be paused)."""
        return self._proc is not None and self._proc.poll() is None

    @property
    def paused(self) -> bool:
        return self._paused

    @property
    def persistence_file(self) -> Path:
        return self.data_dir / "mosquitto.db"

    # -- configuration -------------------------------------------------------

    def _common_lines(self) -> list[str]:
        lines = [
            f"persistence {'true' if self.persistence else 'false'}",
            f"persistence_location {self.data_dir}/",
            f"autosave_interval {self.autosave_interval}",
            f"log_dest file {self.log_path}",
        ]
        if os.geteuid() == 0:
            # as root mosquitto drops to user "mosquitto", who cannot write here
            lines.append("user root")
        return lines

    def _generated_config(self) -> str:
        lines = [
            "# generated by tests/system/broker.py",
            f"listener {self.port} {self.host}",
            "allow_anonymous true",
            "set_tcp_nodelay true",
            "max_queued_messages 100000",
            "log_type error",
            "log_type warning",
            "log_type notice",
            "log_type information",
            "connection_messages true",
            *self._common_lines(),
            *self.extra_config,
        ]
        return "\n".join(lines) + "\n"

    def _listener_count(self) -> int:
        if self.config_file is None:
            return 1
        count = 0
        for raw in self.config_file.read_text().splitlines():
            words = raw.split()
            if len(words) >= 2 and words[0] == "listener" and words[1] != "0":
                count += 1
        return max(count, 1)

    def _custom_config(self, source: Path) -> str:
        out = [f"# generated by tests/system/broker.py from {source}"]
        ports = iter(self.ports)
        seen_listener = False
        for raw in source.read_text().splitlines():
            words = raw.split()
            if not words or words[0].startswith("#"):
                out.append(raw)
                continue
            directive = words[0]
            if directive == "listener" and len(words) >= 2 and words[1] != "0":
                out.append(f"listener {next(ports)} {self.host}")
                seen_listener = True
            elif directive in _OWNED:
                out.append(f"# (replaced by the test harness) {raw}")
            else:
                out.append(raw)
        if not seen_listener:
            out.insert(1, f"listener {self.port} {self.host}")
        out += ["# test harness", *self._common_lines(), *self.extra_config]
        return "\n".join(out) + "\n"

    def _write_config(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.data_dir.mkdir(exist_ok=True)
        if self.config_file is None:
            text = self._generated_config()
        else:
            text = self._custom_config(self.config_file)
        self.config_path.write_text(text)

    # -- lifecycle -----------------------------------------------------------

    def log_tail(self, lines: int = 30) -> str:
        """The last lines of the broker's log and of its stdout/stderr."""
        parts = []
        for path in (self.log_path, self.output_path):
            if path.is_file():
                text = path.read_text(errors="replace").splitlines()[-lines:]
                if text:
                    parts.append(f"--- {path.name} ---\n" + "\n".join(text))
        return "\n".join(parts) or "(no log output)"

    def start(self) -> Self:
        """Start mosquitto and wait until its port accepts connections.

        The first start picks free ports; every later start (see
        :meth:`restart`) reuses them and the same data directory.
        """
        if self.running:
            raise BrokerError(f"broker already running (pid {self.pid}) on port {self.port}")
        first = not self._ports
        attempts = 3 if first else 1
        for attempt in range(attempts):
            if first:
                self._ports = tuple(free_port(self.host) for _ in range(self._listener_count()))
            else:
                self._wait_port_free()
            self._write_config()
            try:
                self._spawn_and_wait()
            except BrokerError:
                # another process may have taken a freshly picked port in between
                if attempt + 1 < attempts and "Address already in use" in self.log_tail():
                    continue
                raise
            return self
        raise AssertionError("unreachable")  # pragma: no cover

    def _spawn_and_wait(self) -> None:
        cwd = self.config_file.parent if self.config_file is not None else self.workdir
        with self.output_path.open("ab") as out:
            proc = subprocess.Popen(  # noqa: S603 - a fixed binary and our own config
                [str(self.binary), "-c", str(self.config_path)],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=cwd,
                start_new_session=True,
            )
        self._proc = proc
        self._paused = False
        _LIVE.add(proc)
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                self._forget()
                raise BrokerError(
                    f"mosquitto exited with status {proc.returncode} during start "
                    f"(port {self.port}, config {self.config_path}):\n{self.log_tail()}"
                )
            if all(_accepts(self.host, p) for p in self.ports):
                return
            time.sleep(0.02)
        self._terminate(signal.SIGKILL)
        raise BrokerError(
            f"mosquitto did not accept connections on {self.host}:{self.port} within "
            f"{self.start_timeout:g} s (config {self.config_path}):\n{self.log_tail()}"
        )

    def _wait_port_free(self) -> None:
        deadline = time.monotonic() + self.start_timeout
        while not all(_port_bindable(self.host, p) for p in self.ports):
            if time.monotonic() > deadline:
                raise BrokerError(
                    f"port(s) {self.ports} still in use {self.start_timeout:g} s after the "
                    "broker stopped"
                )
            time.sleep(0.05)

    def _forget(self) -> None:
        if self._proc is not None:
            _LIVE.discard(self._proc)
        self._proc = None
        self._paused = False

    def _terminate(self, sig: signal.Signals) -> int | None:
        """Send ``sig`` (SIGCONT first if paused), wait, and forget the process."""
        proc = self._proc
        if proc is None:
            return None
        if proc.poll() is None:
            if self._paused and sig != signal.SIGKILL:
                with contextlib.suppress(ProcessLookupError):
                    proc.send_signal(signal.SIGCONT)
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(sig)
            try:
                proc.wait(timeout=self.stop_timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=self.stop_timeout)
                self._forget()
                raise BrokerError(
                    f"mosquitto ignored {sig.name} for {self.stop_timeout:g} s and was killed:\n"
                    f"{self.log_tail()}"
                ) from None
        self._forget()
        return proc.returncode

    def stop(self) -> int | None:
        """SIGTERM and wait: mosquitto saves its database and exits. Returns its status."""
        return self._terminate(signal.SIGTERM)

    def kill(self) -> int | None:
        """SIGKILL: a crash. Only what the last autosave wrote survives a restart."""
        return self._terminate(signal.SIGKILL)

    def restart(self) -> Self:
        """Stop if running, then start on the same port(s) and data directory."""
        if not self._ports:
            raise BrokerError("restart() before start(): there is no port to reuse")
        self.stop()
        return self.start()

    def pause(self) -> None:
        """SIGSTOP: the process hangs; its sockets stay open but nothing is answered."""
        if not self.running or self._proc is None:
            raise BrokerError("cannot pause: the broker is not running")
        self._proc.send_signal(signal.SIGSTOP)
        self._paused = True

    def resume(self) -> None:
        """SIGCONT after :meth:`pause`."""
        if not self.running or self._proc is None:
            raise BrokerError("cannot resume: the broker is not running")
        self._proc.send_signal(signal.SIGCONT)
        self._paused = False

    def close(self) -> None:
        """Stop (or kill, if it will not stop) and remove a temp workdir we created."""
        try:
            if self.running:
                try:
                    self.stop()
                except BrokerError:
                    self.kill()
        finally:
            self._forget()
            if self._owns_workdir:
                shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> Self:
        if not self.running:
            self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        where = f"{self.host}:{self._ports[0]}" if self._ports else "(not started)"
        state = "paused" if self._paused else "running" if self.running else "stopped"
        return f"<MosquittoBroker {where} {state} pid={self.pid}>"


# -- clients ------------------------------------------------------------------


# -- the shipped configuration (config/mosquitto) ----------------------------------------

MOSQUITTO_DIR = REPO / "config" / "mosquitto"
#: Where the compose file mounts config/mosquitto and the broker's certificates.
CONTAINER_CONFIG_DIR = "/mosquitto/config"
CONTAINER_CERTS_DIR = "/mosquitto/certs"
#: The shipped listeners, in the order of mosquitto.conf (so of MosquittoBroker.ports):
#: plain loopback, TLS for every client but the processor, TLS for the processor only.
PLAIN, TLS, PROCESSOR_TLS = 0, 1, 2
#: The password files the config names, and the committed demo copies of them.
PASSWORD_FILES = {"passwd": "passwd.demo", "passwd-processor": "passwd-processor.demo"}
#: The demo credentials of config/mosquitto/passwd.demo and passwd-processor.demo
#: (documented there as DEMO ONLY). ward7 and ward8 are the gateways of those units.
DEMO_PASSWORDS = {
    "ward7": "ward7-demo-only",
    "ward8": "ward8-demo-only",
    "pump": "pump-demo-only",
    "ehr": "ehr-demo-only",
    "processor": "processor-demo-only",
    "dashboard": "dashboard-demo-only",
    "simulator": "simulator-demo-only",
    "healthcheck": "healthcheck-demo-only",
}


def shipped_mosquitto_config(dest: Path, *, certs: Path | None = None) -> Path:
    """Copy ``config/mosquitto`` to ``dest`` and return the copy's ``mosquitto.conf``.

    The copy gets the demo password files under the names the config reads
    (``passwd``, ``passwd-processor``: a site's own, never committed), its
    ``password_file``, ``acl_file`` and certificate paths pointed at the copy,
    and certificates: ``certs`` (``ca.crt``, ``server.crt``, ``server.key``), or
    throwaway ones made in ``dest/certs`` (:func:`tests.system.tls_helpers.make_pki`).
    The test harness rewrites the listeners, persistence and log itself.
    """
    shutil.copytree(MOSQUITTO_DIR, dest, ignore=shutil.ignore_patterns(*PASSWORD_FILES, "certs"))
    for real, demo in PASSWORD_FILES.items():
        shutil.copyfile(dest / demo, dest / real)
    if certs is None:
        certs = make_pki(dest / "certs").dir
    conf = dest / "mosquitto.conf"
    out: list[str] = []
    rewritten: dict[str, int] = {"password_file": 0, "acl_file": 0}
    for raw in conf.read_text().splitlines():
        line = raw.replace(CONTAINER_CERTS_DIR, str(certs))
        words = line.split()
        if words and words[0] in rewritten:
            name = Path(words[1]).name
            assert words[1] == f"{CONTAINER_CONFIG_DIR}/{name}", line
            line = f"{words[0]} {dest / name}"
            rewritten[words[0]] += 1
        out.append(line)
    assert rewritten == {"password_file": 3, "acl_file": 3}, rewritten
    conf.write_text("\n".join(out) + "\n")
    return conf


def shipped_broker(
    root: Path,
    *,
    binary: str | Path | None = None,
    certs: Path | None = None,
    require_certificate: bool = False,
) -> MosquittoBroker:
    """A :class:`MosquittoBroker` (not started) on the shipped configuration.

    The copy of ``config/mosquitto`` is made in ``root/config``
    (:func:`shipped_mosquitto_config`, with ``certs`` or throwaway ones), the
    broker's data and log go to ``root/broker``. ``require_certificate`` turns on
    the TLS listeners' client-certificate check (off in the shipped file).
    """
    conf = shipped_mosquitto_config(root / "config", certs=certs)
    if require_certificate:
        text = conf.read_text()
        assert text.count("require_certificate false") == 2
        conf.write_text(text.replace("require_certificate false", "require_certificate true"))
    return MosquittoBroker(binary=binary, workdir=root / "broker", config_file=conf)


def processor_ca(broker: MosquittoBroker) -> Path:
    """The CA file of a broker started from :func:`shipped_mosquitto_config` (made certs)."""
    assert broker.config_file is not None
    return broker.config_file.parent / "certs" / "ca.crt"


# -- clients ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Received:
    """One message as a subscriber saw it."""

    topic: str
    payload: bytes
    retain: bool
    qos: int


Protocol = Literal[5, 4]  # MQTT 5 or 3.1.1


class Subscriber:
    """A synchronous paho client that records what it receives on a background thread.

    Args:
        broker: the broker (or ``(host, port)``) to connect to.
        topic_filter: filter(s) to subscribe to on every connect; ``None``
            to subscribe to nothing (e.g. to show that a persistent session
            delivers without a new subscription).
        qos: subscription QoS.
        client_id: fixed id (needed for a persistent session); default random.
        clean_start: ``False`` resumes a persistent session (MQTT 5 clean
            start, or MQTT 3.1.1 clean session).
        protocol: 5 (MQTT 5) or 4 (MQTT 3.1.1).
        session_expiry: MQTT 5 session expiry (s) when ``clean_start`` is
            False; without it an MQTT 5 session ends at disconnect.
        username, password: credentials, if the broker wants them.
        timeout: bound on the CONNACK and SUBACK waits in :meth:`start`.
        auto_reconnect: let paho reconnect (and re-subscribe) after a drop.
    """

    def __init__(
        self,
        broker: MosquittoBroker | tuple[str, int],
        topic_filter: str | Sequence[str] | None = "#",
        *,
        qos: int = 1,
        client_id: str = "",
        clean_start: bool = True,
        protocol: Protocol = 5,
        session_expiry: int = 300,
        username: str | None = None,
        password: str | None = None,
        timeout: float = 5.0,
        auto_reconnect: bool = False,
    ) -> None:
        if isinstance(broker, MosquittoBroker):
            self.host, self.port = broker.host, broker.port
        else:
            self.host, self.port = broker
        filters = [topic_filter] if isinstance(topic_filter, str) else list(topic_filter or [])
        self.filters: list[str] = filters
        self.qos = qos
        self.clean_start = clean_start
        self.protocol = protocol
        self.session_expiry = session_expiry
        self.timeout = timeout
        self._cond = threading.Condition()
        self._messages: list[Received] = []
        self._connack = threading.Event()  # set by the first CONNACK, never cleared
        self._connected = threading.Event()  # set while the connection is up
        self._subscribed = threading.Event()
        self._connect_error: str | None = None
        self._sub_error: str | None = None
        self.session_present: bool | None = None
        self.connects = 0
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=client_id,
            protocol=mqtt.MQTTv5 if protocol == 5 else mqtt.MQTTv311,
            clean_session=None if protocol == 5 else clean_start,
            reconnect_on_failure=auto_reconnect,
        )
        if username is not None:
            self.client.username_pw_set(username, password)
        self.client.on_connect = self._on_connect
        self.client.on_subscribe = self._on_subscribe
        self.client.on_message = self._on_message
        self.client.on_disconnect = self._on_disconnect
        self._started = False

    # paho callbacks (run on paho's thread: keep them trivial, never raise)

    def _on_connect(
        self,
        client: mqtt.Client,
        userdata: object,
        flags: mqtt.ConnectFlags,
        reason_code: ReasonCode,
        properties: Properties | None,
    ) -> None:
        if reason_code.is_failure:
            self._connect_error = str(reason_code)
            self._connack.set()
            return
        self.session_present = flags.session_present
        self.connects += 1
        if self.filters:
            client.subscribe([(f, self.qos) for f in self.filters])
        else:
            self._subscribed.set()
        self._connected.set()
        self._connack.set()

    def _on_subscribe(
        self,
        client: mqtt.Client,
        userdata: object,
        mid: int,
        reason_codes: list[ReasonCode],
        properties: Properties | None,
    ) -> None:
        failed = [str(rc) for rc in reason_codes if rc.is_failure]
        if failed:
            self._sub_error = ", ".join(failed)
        self._subscribed.set()

    def _on_message(self, client: mqtt.Client, userdata: object, msg: mqtt.MQTTMessage) -> None:
        received = Received(msg.topic, bytes(msg.payload), bool(msg.retain), int(msg.qos))
        with self._cond:
            self._messages.append(received)
            self._cond.notify_all()

    def _on_disconnect(
        self,
        client: mqtt.Client,
        userdata: object,
        flags: mqtt.DisconnectFlags,
        reason_code: ReasonCode,
        properties: Properties | None,
    ) -> None:
        self._connected.clear()

    # control

    def start(self) -> Self:
        """Connect, wait for CONNACK and (if subscribing) SUBACK, within ``timeout``."""
        properties = None
        clean: mqtt.CleanStartOption = mqtt.MQTT_CLEAN_START_FIRST_ONLY
        if self.protocol == 5:
            clean = self.clean_start
            if not self.clean_start:
                properties = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
                properties.SessionExpiryInterval = self.session_expiry
        self.client.connect(
            self.host, self.port, keepalive=30, clean_start=clean, properties=properties
        )
        self.client.loop_start()
        self._started = True
        if not self._connack.wait(self.timeout):
            self.stop()
            raise TimeoutError(f"no CONNACK from {self.host}:{self.port} in {self.timeout:g} s")
        if self._connect_error is not None:
            error = self._connect_error
            self.stop()
            raise ConnectionRefusedError(f"broker refused the connection: {error}")
        if not self._subscribed.wait(self.timeout):
            self.stop()
            raise TimeoutError(f"no SUBACK for {self.filters} in {self.timeout:g} s")
        if self._sub_error is not None:
            error = self._sub_error
            self.stop()
            raise PermissionError(f"subscription to {self.filters} refused: {error}")
        return self

    def stop(self) -> None:
        """Disconnect cleanly (a persistent session stays on the broker) and stop the loop."""
        if not self._started:
            return
        self._started = False
        with contextlib.suppress(Exception):
            self.client.disconnect()
        self.client.loop_stop()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def connected(self) -> bool:
        return self._connected.is_set() and self._connect_error is None

    # observation

    @property
    def messages(self) -> list[Received]:
        """A snapshot of everything received so far, in arrival order."""
        with self._cond:
            return list(self._messages)

    def clear(self) -> None:
        with self._cond:
            self._messages.clear()

    def wait_for(
        self, predicate: Callable[[Received], bool] = lambda _m: True, timeout: float = 5.0
    ) -> Received:
        """The first message (already received or arriving) matching ``predicate``.

        Raises ``TimeoutError`` listing what did arrive.
        """
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for message in self._messages:
                    if predicate(message):
                        return message
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    seen = [(m.topic, m.payload[:80]) for m in self._messages]
                    raise TimeoutError(
                        f"no matching message in {timeout:g} s; received {len(seen)}: {seen}"
                    )
                self._cond.wait(remaining)

    def wait_until(
        self, predicate: Callable[[list[Received]], bool], timeout: float = 5.0
    ) -> list[Received]:
        """Wait until ``predicate(messages so far)`` holds; return those messages."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while not predicate(list(self._messages)):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    seen = [(m.topic, m.payload[:80]) for m in self._messages]
                    raise TimeoutError(
                        f"condition not met in {timeout:g} s; received {len(seen)}: {seen}"
                    )
                self._cond.wait(remaining)
            return list(self._messages)

    def wait_for_count(self, count: int, timeout: float = 5.0) -> list[Received]:
        """Wait until at least ``count`` messages have arrived; return them all."""
        return self.wait_until(lambda ms: len(ms) >= count, timeout)

    def publish(
        self,
        topic: str,
        payload: bytes | str,
        *,
        qos: int = 1,
        retain: bool = False,
        timeout: float | None = 5.0,
    ) -> mqtt.MQTTMessageInfo:
        """Publish on this connection; with a ``timeout``, wait for the broker's ack.

        With ``timeout=None`` it returns at once: check ``info.is_published()``.
        """
        info = self.client.publish(topic, payload, qos=qos, retain=retain)
        if timeout is not None:
            info.wait_for_publish(timeout)
            if qos > 0 and not info.is_published():
                raise TimeoutError(f"publish to {topic!r} not acknowledged in {timeout:g} s")
        return info


def publish(
    broker: MosquittoBroker | tuple[str, int],
    topic: str,
    payload: bytes | str,
    *,
    qos: int = 1,
    retain: bool = False,
    timeout: float = 5.0,
    username: str | None = None,
    password: str | None = None,
) -> None:
    """Connect, publish one message, wait for the broker's ack, disconnect."""
    with Subscriber(broker, None, timeout=timeout, username=username, password=password) as client:
        client.publish(topic, payload, qos=qos, retain=retain, timeout=timeout)


def collect(
    broker: MosquittoBroker | tuple[str, int],
    topic_filter: str | Sequence[str],
    *,
    until: Callable[[list[Received]], bool],
    timeout: float = 5.0,
    qos: int = 1,
) -> list[Received]:
    """Subscribe, wait until ``until(messages)`` holds, return the messages."""
    with Subscriber(broker, topic_filter, qos=qos, timeout=timeout) as sub:
        return sub.wait_until(until, timeout)
