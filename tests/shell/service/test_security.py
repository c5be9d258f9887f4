"""The service's exposure at start: broker URLs without a scheme, where /metrics listens.

Real processes: ``python -m streamproc run`` is started as a child, as an
operator would start it.
"""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from streamproc.shell.config import ConfigError, parse_broker_url
from tests.system.broker import MosquittoBroker, free_port
from tests.system.service_helpers import ServiceProcess, run_cli

REPO = Path(__file__).resolve().parents[3]


class TestBrokerUrlWithoutScheme:
    """A broker address without mqtt:// or mqtts:// is refused, never guessed."""

    @pytest.mark.parametrize("url", ["localhost", "127.0.0.1:1883", "broker"])
    def test_parse_refuses(self, url: str) -> None:
        """parse_broker_url names the setting and both valid forms."""
        with pytest.raises(ConfigError, match=r"mqtt://.*mqtts://") as info:
            parse_broker_url(url)
        assert info.value.key == "service.broker"
        assert "no scheme" in info.value.reason

    def test_run_exits_2_naming_the_forms(self, tmp_path: Path) -> None:
        """`streamproc run --broker HOST:PORT` (as `--broker localhost`) stops at once with
        status 2 and the valid forms; it connects to nothing (no audit database is even
        created). A free port, not 1883: before the fix this connected to whatever
        listened there (the test then times out instead of touching a real broker)."""
        proc = run_cli("run", "--broker", f"localhost:{free_port()}", cwd=tmp_path)
        assert proc.returncode == 2, (proc.stdout, proc.stderr)
        assert "service.broker" in proc.stderr
        assert "mqtt://" in proc.stderr
        assert "mqtts://" in proc.stderr
        assert not (tmp_path / "audit.sqlite3").exists()

    def test_environment_too(self, tmp_path: Path) -> None:
        """STREAMPROC_BROKER without a scheme is refused the same way."""
        proc = run_cli("run", cwd=tmp_path, env={"STREAMPROC_BROKER": f"127.0.0.1:{free_port()}"})
        assert proc.returncode == 2
        assert "mqtts://" in proc.stderr

    def test_config_check_too(self, tmp_path: Path) -> None:
        """`streamproc config --check` refuses a settings file with such a broker."""
        settings = tmp_path / "site.toml"
        settings.write_text('[service]\nbroker = "localhost"\n')
        proc = run_cli("config", "--check", str(settings), cwd=tmp_path)
        assert proc.returncode == 2
        assert "service.broker" in proc.stderr
        assert "mqtts://" in proc.stderr

    @pytest.mark.parametrize("command", ["demo", "dashboard"])
    def test_demo_and_dashboard_too(self, tmp_path: Path, command: str) -> None:
        """`streamproc demo --broker` and `streamproc dashboard --broker` refuse it as well."""
        extra = ["--port", "0"] if command == "dashboard" else ["--no-dashboard"]
        proc = run_cli(command, "--broker", f"localhost:{free_port()}", *extra, cwd=tmp_path)
        assert proc.returncode == 2, (proc.stdout, proc.stderr)
        assert "mqtts://" in proc.stderr


def _reachable(host: str, port: int) -> bool:
    try:
        socket.create_connection((host, port), timeout=2).close()
    except OSError:
        return False
    return True


class TestMetricsBind:
    """/metrics and /healthz listen on the loopback only unless configured.

    127.0.0.2 is a loopback address too: a socket bound to 0.0.0.0 accepts
    there, one bound to 127.0.0.1 does not. So the test needs no other interface.
    """

    def test_loopback_by_default(self, broker: MosquittoBroker, tmp_path: Path) -> None:
        """By default the endpoint answers on 127.0.0.1 and nowhere else."""
        service = ServiceProcess(broker, tmp_path).start()
        try:
            assert service.health()["broker_connected"]
            assert _reachable("127.0.0.1", service.metrics_port)
            assert not _reachable("127.0.0.2", service.metrics_port)
        finally:
            service.close()

    def test_opened_by_setting(self, broker: MosquittoBroker, tmp_path: Path) -> None:
        """--metrics-host 0.0.0.0 (e.g. in a container scraped by Prometheus) opens it."""
        service = ServiceProcess(broker, tmp_path, args=["--metrics-host", "0.0.0.0"]).start()  # noqa: S104 - the point of the test
        try:
            assert _reachable("127.0.0.2", service.metrics_port)
        finally:
            service.close()

    def test_bad_host_refused(self, tmp_path: Path) -> None:
        """An empty or spaced address is a configuration error naming the setting."""
        port = str(free_port())
        proc = run_cli(
            "run", "--broker", "mqtt://127.0.0.1:1", "--metrics-port", port,
            "--set", "service.metrics_host= ", cwd=tmp_path,
        )  # fmt: skip
        assert proc.returncode == 2
        assert "service.metrics_host" in proc.stderr
