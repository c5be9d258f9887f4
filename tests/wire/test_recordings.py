"""Real WFDB records as abp messages: reading, gaps, context messages, recording lines."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from streamproc.wire.recordings import (
    DEFAULT_T0,
    RecordError,
    channel_span,
    context_messages,
    parse_infusion,
    read_abp,
    record_timed,
)
from tests.abp_data import abp_records

S00001 = "s00001-2896-10-10-00-31"


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
