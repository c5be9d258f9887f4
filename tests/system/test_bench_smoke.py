"""CI smoke of the service benchmark: ``benchmarks/bench_service.py --smoke``.

About 20 s (more under coverage): a small drain by the bare consumer, the
naive pipeline and ``streamproc run``, then a few seconds of real-time load
with alarms. It fails only on loss (messages or alarms) or a crashed process,
never on speed; here we also check that the report's table was printed.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

TABLE_LINES = (
    "== drain:",
    "bare aiomqtt",
    "naive pipeline",
    "streamproc run",
    "ratios: streamproc/paho",
    "streamproc drain alarms:",
    "== real time:",
    "alarm latency e2e:",
    "processing latency (histogram):",
    "RSS per bed:",
    "loss (messages + alarms, all runs): 0; crashes: 0",
)


def test_bench_service_smoke(mosquitto_bin: Path, tmp_path: Path) -> None:
    env = {**os.environ, "MOSQUITTO_BIN": str(mosquitto_bin)}
    env = {k: v for k, v in env.items() if not k.startswith("STREAMPROC_")}
    result = subprocess.run(  # noqa: S603 - our own interpreter and script
        [
            sys.executable,
            str(REPO / "benchmarks" / "bench_service.py"),
            "--smoke",
            "--json",
            str(tmp_path / "smoke.json"),
        ],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-6000:]
    missing = [line for line in TABLE_LINES if line not in result.stdout]
    assert not missing, f"missing {missing} in:\n{result.stdout[-6000:]}"
    assert (tmp_path / "smoke.json").is_file()
