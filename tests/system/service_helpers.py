"""Run the real ``streamproc run`` process against a test broker, and feed it.

The one launcher of the service for tests, faults and benchmarks: :class:`ServiceProcess`
(a running service), :func:`processor_service` (the same, as the compose file runs it:
the processor account over TLS) and :func:`run_cli` (``python -m streamproc ...`` to its
exit: start-up refusals).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Self

import paho.mqtt.client as mqtt

from tests.system.broker import (
    DEMO_PASSWORDS,
    PROCESSOR_TLS,
    MosquittoBroker,
    Received,
    Subscriber,
    free_port,
    processor_ca,
)
from tests.system.tls_helpers import Pki

REPO = Path(__file__).resolve().parents[2]


class ServiceProcess:
    """``python -m streamproc run`` as a child process, with its own audit db and metrics port."""

    def __init__(
        self,
        broker: MosquittoBroker,
        workdir: Path,
        *,
        env: Mapping[str, str] | None = None,
        instance: str = "test-1",
        args: Iterable[str] = (),
        log_pipe: bool = False,
        python: str = sys.executable,
    ) -> None:
        self.broker = broker
        self.python = python
        self.workdir = workdir
        self.instance = instance
        self.metrics_port = free_port()
        self.audit_db = workdir / "audit.sqlite3"
        self.log_path = workdir / f"streamproc-{instance}.log"
        self.extra_env = dict(env or {})
        self.args = list(args)
        self.proc: subprocess.Popen[bytes] | None = None
        self._log: Any = None
        #: The child writes its log into a pipe that this process copies to ``log_path``
        #: (so that a fault limiting the child's file writes does not silence its log).
        self.log_pipe = log_pipe
        self._copier: threading.Thread | None = None

    def start(self, *, wait: bool = True) -> Self:
        env = {k: v for k, v in os.environ.items() if not k.startswith("STREAMPROC_")}
        env.update(
            STREAMPROC_AUDIT_DB=str(self.audit_db),
            STREAMPROC_INSTANCE=self.instance,
            STREAMPROC_TICK_S="0.2",
            PYTHONUNBUFFERED="1",
        )
        env.update(self.extra_env)
        self._log = self.log_path.open("ab", buffering=0 if self.log_pipe else -1)
        self.proc = subprocess.Popen(  # noqa: S603 - our own interpreter and module
            [
                self.python,
                "-m",
                "streamproc",
                "run",
                "--broker",
                self.broker.url,
                "--metrics-port",
                str(self.metrics_port),
                *self.args,
            ],
            cwd=self.workdir,
            env=env,
            stdout=subprocess.PIPE if self.log_pipe else self._log,
            stderr=subprocess.STDOUT,
        )
        if self.log_pipe:
            self._copier = threading.Thread(
                target=_copy_lines, args=(self.proc.stdout, self._log), daemon=True
            )
            self._copier.start()
        if wait:
            self.wait_healthy()
        return self

    def wait_healthy(self, timeout: float = 20.0) -> None:
        """Until /healthz says the broker is connected."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"streamproc exited {self.proc.returncode}:\n{self.log_tail()}")
            with contextlib.suppress(OSError):
                health = self.health()
                if health.get("broker_connected"):
                    return
            time.sleep(0.1)
        raise TimeoutError(f"streamproc not healthy in {timeout} s:\n{self.log_tail()}")

    def health(self) -> dict[str, Any]:
        try:
            with urllib.request.urlopen(
                f"http://127.0.0.1:{self.metrics_port}/healthz", timeout=2
            ) as resp:
                return dict(json.loads(resp.read()))
        except urllib.error.HTTPError as exc:  # 503 while degraded
            return dict(json.loads(exc.read()))

    def metrics(self) -> str:
        with urllib.request.urlopen(
            f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=2
        ) as resp:
            return str(resp.read().decode())

    def metric(self, name: str, **labels: str) -> float:
        """One sample's value from /metrics (0 when absent)."""
        want = name + (
            "{" + ",".join(f'{k}="{v}"' for k, v in sorted(labels.items())) + "}" if labels else ""
        )
        for line in self.metrics().splitlines():
            if line.startswith("#"):
                continue
            key, _, value = line.rpartition(" ")
            if key == want or (not labels and key == name):
                return float(value)
        return 0.0

    def log_tail(self, n: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return "(no log)"

    def log_lines(self) -> list[dict[str, Any]]:
        out = []
        for line in self.log_path.read_text(errors="replace").splitlines():
            with contextlib.suppress(ValueError):
                out.append(json.loads(line))
        return out

    def terminate(self, timeout: float = 15.0) -> int:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        return self.wait(timeout)

    def kill(self) -> int:
        assert self.proc is not None
        self.proc.kill()
        return self.wait(5.0)

    def wait(self, timeout: float) -> int:
        """The exit code once the process ends (killed after ``timeout`` s); its log closed."""
        assert self.proc is not None
        try:
            rc = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            rc = self.proc.wait(5)
        if self._copier is not None:
            self._copier.join(5)
            self._copier = None
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        if self._log is not None:
            self._log.close()
            self._log = None
        return rc

    def close(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.kill()


def processor_service(
    broker: MosquittoBroker,
    workdir: Path,
    *,
    ca: Path | None = None,
    cert: Pki | None = None,
    env: Mapping[str, str] | None = None,
) -> ServiceProcess:
    """`streamproc run` as the compose file runs it (start it): the processor account, over
    TLS to its own listener of the shipped configuration, checked against ``ca`` (default:
    the CA :func:`tests.system.broker.shipped_broker` made), presenting ``cert``'s client
    certificate when given; ``env`` is applied last."""
    tls = {
        "STREAMPROC_USERNAME": "processor",
        "STREAMPROC_PASSWORD": DEMO_PASSWORDS["processor"],
        "STREAMPROC_TLS_CA": str(ca if ca is not None else processor_ca(broker)),
    }
    if cert is not None:
        tls["STREAMPROC_TLS_CERT"] = str(cert.client_cert)
        tls["STREAMPROC_TLS_KEY"] = str(cert.client_key)
    workdir.mkdir(parents=True, exist_ok=True)
    return ServiceProcess(
        broker,
        workdir,
        env={**tls, **(env or {})},
        args=["--broker", f"mqtts://127.0.0.1:{broker.ports[PROCESSOR_TLS]}"],
    )


def run_cli(
    *args: str, cwd: Path, env: Mapping[str, str] | None = None, timeout: float = 20
) -> subprocess.CompletedProcess[str]:
    """``python -m streamproc <args>`` to its exit (text output captured): the environment
    without ``STREAMPROC_*``, the audit database in ``cwd``, then ``env``."""
    full = {k: v for k, v in os.environ.items() if not k.startswith("STREAMPROC_")}
    full["STREAMPROC_AUDIT_DB"] = str(cwd / "audit.sqlite3")
    full.update(env or {})
    return subprocess.run(  # noqa: S603 - our own interpreter and module
        [sys.executable, "-m", "streamproc", *args],
        cwd=cwd,
        env=full,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def _copy_lines(source: Any, sink: Any) -> None:
    """Copy a child's output pipe to a file, line by line, until it closes."""
    with contextlib.suppress(OSError, ValueError):
        for line in iter(source.readline, b""):
            sink.write(line)


class Publisher:
    """A gateway: publishes recording lines at QoS 1 and waits for every PUBACK."""

    def __init__(self, broker: MosquittoBroker) -> None:
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
        self.client.connect(broker.host, broker.port)
        self.client.loop_start()

    def send(self, lines: Iterable[Mapping[str, Any]], *, qos: int = 1) -> int:
        infos = []
        for line in lines:
            payload = line["payload"]
            body = payload.encode() if isinstance(payload, str) else json.dumps(payload).encode()
            infos.append(self.client.publish(line["topic"], body, qos=qos))
        for info in infos:
            info.wait_for_publish(10)
        return len(infos)

    def raw(self, topic: str, payload: bytes, *, qos: int = 1) -> None:
        self.client.publish(topic, payload, qos=qos).wait_for_publish(10)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def alarm(msg: Received) -> dict[str, Any]:
    return dict(json.loads(msg.payload))


def is_alarm(kind: str, **fields: Any) -> Any:
    """A predicate for Subscriber.wait_for: an alarm of ``kind`` with these payload fields."""

    def pred(msg: Received) -> bool:
        if "/alarms/" not in msg.topic or not msg.payload:
            return False
        p = alarm(msg)
        return p.get("kind") == kind and all(p.get(k) == v for k, v in fields.items())

    return pred


__all__ = [
    "Publisher",
    "ServiceProcess",
    "Subscriber",
    "alarm",
    "is_alarm",
    "processor_service",
    "run_cli",
]
