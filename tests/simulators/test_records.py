"""Real WFDB records as abp messages: reading, gaps, recordings, replay, publishing."""

from __future__ import annotations

import json
import math
from pathlib import Path

import msgspec
import numpy as np
import pytest

from simulators.cli import main
from simulators.records import (
    RecordError,
    channel_span,
    context_messages,
    parse_infusion,
    read_abp,
    record_timed,
)
from simulators.scenario import DEFAULT_T0
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


class TestReadAbp:
    def test_041s_multi_segment(self) -> None:
        """041s: 16 s at 125 Hz, no gaps, base time 1994 (outside streamproc's range)."""
        rec = read_abp(abp_records() / "041s" / "041s")
        assert rec.fs == 125.0
        assert rec.samples.size == 2000
        assert not np.isnan(rec.samples).any()
        assert rec.base_time is not None
        assert rec.start_time == DEFAULT_T0

    def test_mixedsignals_keeps_every_frame_sample(self) -> None:
        """mixedsignals: ABP has 2 samples a frame, read at 124.945 Hz; 192 leading NaN."""
        rec = read_abp(abp_records() / "mixedsignals" / "mixedsignals")
        assert rec.fs == pytest.approx(124.945)
        assert rec.samples.size == 28800
        assert int(np.isnan(rec.samples).sum()) == 192
        assert rec.base_time is None

    def test_s00001_reads_only_the_abp_span(self) -> None:
        """s00001: the span of the ABP segments (540 s, a 60 s gap), found from the headers."""
        base = abp_records() / "s00001" / S00001
        assert channel_span(base) == (14428365, 14495865)
        rec = read_abp(base)
        assert rec.sampfrom == 14428365
        assert rec.samples.size == 67500
        assert int(np.isnan(rec.samples).sum()) == 7500

    def test_errors(self, tmp_path: Path) -> None:
        """A missing record or channel is a RecordError that says what is wrong."""
        with pytest.raises(RecordError, match="no WFDB header"):
            read_abp(tmp_path / "nothing")
        with pytest.raises(RecordError, match="PAP2"):
            read_abp(abp_records() / "041s" / "041s", channel="PAP2")


class TestContext:
    def test_infusion_and_patient(self) -> None:
        """--infusion DRUG:RATE:UNIT and --profile become the contract's payloads."""
        assert parse_infusion("norepinephrine:0.2:mcg/kg/min") == {
            "drug": "norepinephrine",
            "rate": 0.2,
            "unit": "mcg/kg/min",
            "running": True,
        }
        msgs = context_messages(profile="elderly", age=81, infusions=["vasopressin:0.03:U/min"])
        assert msgs[0] == ("patient", {"profile": "elderly", "age": 81})
        assert msgs[1][0] == "infusion"
        for bad in ("norepinephrine:0.2", "saline:1:mL/h", "norepinephrine:x:mcg/min"):
            with pytest.raises(RecordError):
                parse_infusion(bad)
        with pytest.raises(RecordError):
            context_messages(profile="giant")

    def test_nan_runs_split_chunks(self) -> None:
        """A NaN run inside a chunk splits it; all-NaN chunks are not sent; t0s line up."""
        rec = read_abp(abp_records() / "mixedsignals" / "mixedsignals")
        lines = record_timed(rec, t0=1_800_000_000.0)
        chunks = [line["payload"] for _, _, line in lines]
        first = chunks[0]
        # the first 192 samples (1.54 s) are NaN: the first chunk starts after them
        assert first["t0"] == pytest.approx(1_800_000_000.0 + 192 / rec.fs, abs=1e-5)
        assert sum(len(c["samples"]) for c in chunks) == 28800 - 192
        assert not any(math.isnan(v) for c in chunks for v in c["samples"])


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
