"""``streamproc-sim record`` / ``publish-record``: real WFDB records to a recording or a broker."""

from __future__ import annotations

import json
import math
from pathlib import Path

import msgspec

from simulators.cli import main
from streamproc.apps.replay import replay_lines
from streamproc.shell.config import load_config
from tests.abp_data import abp_records
from tests.system.broker import MosquittoBroker, Subscriber

S00001 = "s00001-2896-10-10-00-31"


def replay(data: bytes) -> tuple[list[dict[str, object]], int]:
    """Alarm payloads and beat count of ``streamproc replay`` over a recording."""
    out: list[bytes] = []
    summary = replay_lines(data.splitlines(), load_config(None), out.append)
    assert not summary.rejected, summary.rejected
    return [msgspec.json.decode(line)["payload"] for line in out], summary.beats_valid


def abp_lines(path: Path) -> list[dict[str, object]]:
    lines = [json.loads(raw) for raw in path.read_bytes().splitlines()]
    return [line["payload"] for line in lines if line["topic"].endswith("/abp")]


class TestRecordToReplay:
    def test_041s_gives_beats_and_no_hypotension(self, tmp_path: Path) -> None:
        """041s (MAP ~56 for only 16 s) on norepinephrine: valid beats, but no hypotension
        alarm (the hold is 60 s)."""
        out = tmp_path / "041s.jsonl"
        rc = main(
            [
                "record",
                str(abp_records() / "041s" / "041s"),
                "--out",
                str(out),
                "--profile",
                "standard",
                "--infusion",
                "norepinephrine:0.2:mcg/kg/min",
            ]
        )
        assert rc == 0
        alarms, beats = replay(out.read_bytes())
        assert beats >= 20
        assert not [a for a in alarms if a["kind"] == "hypotension"]

    def test_s00001_span_no_hypotension_and_no_nan(self, tmp_path: Path) -> None:
        """s00001's ABP span (calibration, zeroing, flush artifacts, a 60 s gap) on
        norepinephrine: no hypotension alarm, and no chunk carries a NaN."""
        out = tmp_path / "s00001.jsonl"
        rc = main(
            [
                "record",
                str(abp_records() / "s00001" / S00001),
                "--out",
                str(out),
                "--infusion",
                "norepinephrine:0.2:mcg/kg/min",
                "--unit",
                "w9",
                "--bed",
                "b2",
            ]
        )
        assert rc == 0
        chunks = abp_lines(out)
        assert sum(len(c["samples"]) for c in chunks) == 60000  # type: ignore[arg-type]
        assert not any(math.isnan(v) for c in chunks for v in c["samples"])  # type: ignore[attr-defined]
        assert "NaN" not in out.read_text()
        alarms, beats = replay(out.read_bytes())
        assert beats > 300
        assert not [a for a in alarms if a["kind"] == "hypotension"]
        assert {(a["unit"], a["bed"]) for a in alarms} <= {("w9", "b2")}

    def test_explicit_sample_range(self, tmp_path: Path) -> None:
        """--sampfrom/--sampto read just that range (here the clean last 30 s of s00001's ABP)."""
        out = tmp_path / "part.jsonl"
        start = 14495865 - 30 * 125
        rc = main(
            [
                "record",
                str(abp_records() / "s00001" / S00001),
                "--sampfrom",
                str(start),
                "--sampto",
                "14495865",
                "--chunk-s",
                "2",
                "--t0",
                "1800000000",
                "--out",
                str(out),
            ]
        )
        assert rc == 0
        chunks = abp_lines(out)
        assert len(chunks) == 15
        assert chunks[0]["t0"] == 1_800_000_000.0


class TestPublishRecord:
    def test_publishes_every_chunk(self, broker: MosquittoBroker) -> None:
        """publish-record at --speed 0: the context and all 16 chunks of 041s reach the broker."""
        with Subscriber(broker, "icu/#") as sub:
            rc = main(
                [
                    "publish-record",
                    str(abp_records() / "041s" / "041s"),
                    "--broker",
                    broker.url,
                    "--speed",
                    "0",
                    "--profile",
                    "standard",
                ]
            )
            assert rc == 0
            msgs = sub.wait_for_count(17, timeout=5)
        assert sorted({m.topic for m in msgs}) == ["icu/ward7/bed01/abp", "icu/ward7/bed01/patient"]
