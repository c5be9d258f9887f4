"""CI smoke of the engine memory soak: ``benchmarks/soak_memory.py --smoke``."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_soak_memory_smoke_is_flat() -> None:
    """40 beds x 20 simulated minutes: memory after the warm-up grows by little."""
    proc = subprocess.run(  # noqa: S603 (our own script)
        [sys.executable, str(REPO / "benchmarks" / "soak_memory.py"), "--smoke", "--json"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    res = json.loads(proc.stdout.strip().splitlines()[-1])
    assert res["beds_in_engine"] == 40
    assert len(res["series"]) >= 5
    assert res["alarms_raised"] > 0  # the alarms' life is exercised, not only quiet beds
    # generous: the trend (60 points, one per 30 s) is still filling during the smoke
    assert res["rss_growth_pct"] < 10.0, proc.stdout
    assert res["traced_growth_pct"] < 30.0, proc.stdout
