"""``streamproc demo``: private broker, service, simulator and view in one command."""

from __future__ import annotations

import asyncio
import io
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from streamproc.apps.demo import DemoBroker, build_ward, run_demo


def _parent(pid: str) -> int:
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().split()[3])
    except OSError:
        return -1


def demo_output(**kwargs: object) -> str:
    out = io.StringIO()
    rc = asyncio.run(run_demo(out=out, dashboard_port=0, **kwargs))  # type: ignore[arg-type]
    assert rc == 0
    return out.getvalue()


class TestDemo:
    def test_command_shows_headline_alarm_within_a_minute(self, tmp_path: Path) -> None:
        """The README's command, as a process: the 60/40 bed's high-priority alarm with
        vasopressin 0.03 U/min is printed well within a minute."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("STREAMPROC_")}
        start = time.monotonic()
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "streamproc",
                "demo",
                "--no-live",
                "--linger",
                "0",
                "--dashboard-port",
                "0",
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            cwd=tmp_path,
            env=env,
            text=True,
        )
        assert proc.stdout is not None
        seen_at = None
        lines = []
        dashboard = None
        with proc.stdout:
            for line in proc.stdout:
                lines.append(line)
                if line.startswith("dashboard: http://127.0.0.1:"):
                    dashboard = line.split(": ", 1)[1].strip()
                if "demo/bed03 hypotension active" in line and seen_at is None:
                    seen_at = time.monotonic() - start
                    assert "[HIGH" in line
                    assert "vasopressin 0.03 U/min" in line
                    proc.terminate()
        assert proc.wait(30) == 0  # SIGTERM ends the demo cleanly
        assert seen_at is not None, "".join(lines)
        assert seen_at < 60
        assert dashboard is not None, "".join(lines)
        leftover = subprocess.run(
            ["/usr/bin/pgrep", "-f", "mosquitto -c /tmp/streamproc-demo"],
            capture_output=True,
            text=True,
            check=False,
        ).stdout.split()
        assert str(proc.pid) not in leftover
        assert not [p for p in leftover if _parent(p) == proc.pid]
        print(f"\nheadline alarm shown {seen_at:.1f} s after `streamproc demo` started")  # noqa: T201

    def test_amqtt_fallback(self) -> None:
        """Without mosquitto, amqtt in-process (MQTT 3.1.1, 127.0.0.1) carries the same demo."""
        text = demo_output(embedded="amqtt", speed=60.0, live=False, linger_s=1.0)
        assert "private amqtt on 127.0.0.1" in text
        assert "[HIGH  ] demo/bed03 hypotension active" in text
        assert "demo/bed08 advisory_dopamine active" in text
        assert "demo/bed07" not in text  # the stable patient never alarms

    def test_accelerated_data_is_not_refused_as_clock_skew(
        self, capfd: pytest.CaptureFixture[str]
    ) -> None:
        """At speed 60 the ward's data runs minutes ahead of the clock: the demo's service
        allows for it, so none of the demo's own messages is rejected (clock_skew)."""
        text = demo_output(embedded="mosquitto", speed=60.0, live=False, linger_s=0.5)
        assert "demo finished" in text
        err = capfd.readouterr().err
        assert '"rejected"' not in err, err[-3000:]

    def test_live_view_renders_beds(self) -> None:
        """The live table names every bed, its target and the recommended step."""
        text = demo_output(embedded="mosquitto", speed=60.0, live=True, linger_s=0.5)
        for bed in ("bed03", "bed04", "bed05", "bed06", "bed07", "bed08"):
            assert bed in text
        assert "recommended next step" in text
        assert "SBP 80" in text  # the trauma bed's target
        assert "not an order" in text


class TestDemoParts:
    def test_ward_is_the_headline_first(self) -> None:
        """Six beds, the 60/40 patient on NE first, lines in time order."""
        beds, lines = build_ward(1_800_000_000.0)
        assert [b for b, _, _ in beds] == ["bed03", "bed04", "bed05", "bed06", "bed07", "bed08"]
        assert beds[0][1] == "ne_60_40"
        times = [t for t, _ in lines]
        assert times == sorted(times)

    def test_broker_kinds(self) -> None:
        """An unknown broker kind is refused with the valid choices."""
        with pytest.raises(ValueError, match="auto, mosquitto or amqtt"):
            DemoBroker("rabbit")
        assert DemoBroker("amqtt").mqtt_version == 4
