"""A refused broker login is a configuration error, said loudly, retried slowly.

Real Mosquitto with the shipped configuration (passwords and ACL), real ``streamproc run``.
"""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest

from tests.system.broker import MosquittoBroker
from tests.system.service_helpers import ServiceProcess, processor_service

#: How long the refused processor is watched.
WATCH_S = 8.0


def refused_logins(broker: MosquittoBroker) -> int:
    """Connections the broker refused for their credentials (from its log)."""
    text = broker.log_path.read_text(errors="replace")
    return len(re.findall(r"not authori[sz]ed", text, flags=re.IGNORECASE))


class TestRefusedLogin:
    @pytest.mark.parametrize("mqtt_version", ["5", "4"])
    def test_wrong_password_is_a_named_error_with_long_backoff(
        self, secure_broker: MosquittoBroker, tmp_path: Path, mqtt_version: str
    ) -> None:
        """A wrong processor password: an error line ``broker_auth_refused`` naming
        service.username/service.password, /healthz 503 with the reason, and a few attempts
        in 8 s (backoff from 5-10 s up), not main's retry every 0.1 s."""
        proc = processor_service(
            secure_broker,
            tmp_path,
            env={
                "STREAMPROC_PASSWORD": "not-the-password",
                "STREAMPROC_MQTT_VERSION": mqtt_version,
            },
        )
        proc.start(wait=False)
        try:
            deadline = time.monotonic() + 20
            while not any(ln.get("event") == "broker_auth_refused" for ln in _lines(proc)):
                assert time.monotonic() < deadline, proc.log_tail()
                assert proc.proc is not None
                assert proc.proc.poll() is None, proc.log_tail()
                time.sleep(0.1)
            first = refused_logins(secure_broker)
            time.sleep(WATCH_S)
            attempts = refused_logins(secure_broker) - first
            assert attempts <= 2, f"{attempts} refused logins in {WATCH_S} s"
            line = next(ln for ln in _lines(proc) if ln.get("event") == "broker_auth_refused")
            assert line["level"] == "error"
            assert "service.username" in line["settings"]
            assert "service.password" in line["settings"]
            assert "STREAMPROC_PASSWORD" in line["settings"]
            assert line["retry_in"] >= 5
            health = proc.health()
            assert health["status"] == "degraded"
            assert health["broker_connected"] is False
            assert health["broker"].startswith("auth_refused")
            assert "service.password" in health["broker"]
            assert proc.proc is not None
            assert proc.proc.poll() is None  # still running: it waits for a fix
            assert proc.terminate() == 0
        finally:
            proc.close()

    def test_right_password_connects(self, secure_broker: MosquittoBroker, tmp_path: Path) -> None:
        """The same service with the processor's password (on the processor's own TLS
        listener, as the shipped config has it) is healthy, with no such error."""
        proc = processor_service(secure_broker, tmp_path)
        try:
            proc.start()  # (inside the try: a start that fails still closes the process)
            assert proc.health()["broker"] == "ok"
            assert not any(ln.get("event") == "broker_auth_refused" for ln in _lines(proc))
        finally:
            proc.close()


def _lines(proc: ServiceProcess) -> list[dict[str, object]]:
    try:
        return proc.log_lines()
    except OSError:
        return []
