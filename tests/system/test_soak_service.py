"""CI version of the service soak: ``benchmarks/soak.py --ci`` on the suite's own Mosquitto.

100 beds (every scenario of ``config/scenarios``) for one minute of wall time at speed 5
against a spawned ``streamproc run``: every expected alarm must arrive, none that a
scenario forbids, every message must reach the service, and the service must run to the
end and stop cleanly. Memory, latency and speed are reported, never judged here (the
30-minute, 1,000-bed run is by hand: docs/reliability.md).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.system.broker import MosquittoBroker

REPO = Path(__file__).resolve().parents[2]


def test_soak_60_s_no_missed_alarm_no_crash(broker: MosquittoBroker, tmp_path: Path) -> None:
    out = tmp_path / "soak.json"
    env = {k: v for k, v in os.environ.items() if not k.startswith("STREAMPROC_")}
    result = subprocess.run(  # noqa: S603 - our own interpreter and script
        [
            sys.executable,
            str(REPO / "benchmarks" / "soak.py"),
            "--ci",
            "--broker",
            broker.url,
            "--json",
            str(out),
            "--md",
            str(tmp_path / "soak.md"),
        ],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    output = result.stdout[-6000:] + result.stderr[-3000:]
    assert result.returncode == 0, output
    summary = json.loads(out.read_text())["summary"]
    assert summary["beds"] == 100
    alarms, messages = summary["alarms"], summary["messages"]
    assert alarms["expected"] >= 50, output
    assert (alarms["missed"], alarms["false"]) == (0, 0), output
    assert alarms["met"] + alarms["late"] + alarms["wrong"] == alarms["expected"]
    assert messages["sent"] > 20_000
    assert messages["lost_broker_to_service"] == 0, output
    assert (messages["rejected"], messages["shed"]) == (0, 0), output
    assert messages["alarm_transitions_out"] > 0
    assert summary["service"]["exit_code"] == 0
    # the figures the long run reports are there
    memory = summary["memory"]
    assert memory["samples"] >= 4
    assert memory["growth_pct"] is not None
    assert summary["latency"]["p99_ms"] is not None
    assert "| verdict | ok |" in (tmp_path / "soak.md").read_text()
