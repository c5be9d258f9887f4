"""The one-pass ``abp`` record path of :mod:`streamproc.wire.codec` agrees with :func:`decode`.

``decode_abp_record`` + ``build_abp`` (a recording line read in one pass) must give
the same chunk or the same ``CodecError`` (code, field, reason) as ``decode("abp", ...)``
of the line's payload, or hand the line over (``None``) when it cannot be sure;
the packed sample array must be what ``np.asarray`` gave. ``read_abp_line`` (a
replay's batches) must answer only for a line ``decode`` takes as a valid chunk,
with its numbers and samples.
"""

from __future__ import annotations

import json
from typing import Any

import msgspec
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from streamproc.core.protocol.messages import AbpChunk
from streamproc.wire import codec
from streamproc.wire.codec import (
    AbpRecord,
    CodecError,
    build_abp,
    decode,
    decode_abp_record,
    read_abp_line,
)
from tests.wire.test_codec import BAD, FUZZ, TS, VALID, field_dicts, plausible

TOPIC = "icu/ward7/bed03/abp"


def line_of(payload: bytes | str) -> bytes:
    text = payload if isinstance(payload, str) else payload.decode("utf-8", "surrogateescape")
    return f'{{"topic":"{TOPIC}","payload":{text}}}'.encode("utf-8", "surrogateescape")


def outcome(fn: Any, *args: Any, **kwargs: Any) -> tuple[Any, ...]:
    """What a decode gives, comparable: the chunk's numbers and array flags, or the error."""
    try:
        msg = fn(*args, **kwargs)
    except CodecError as err:
        return ("error", err.code, err.kind, err.field, err.reason, str(err))
    assert isinstance(msg, AbpChunk)
    s = msg.samples
    flags = (s.flags.writeable, s.flags.owndata, s.flags.c_contiguous, s.flags.aligned)
    return ("chunk", msg.t0, msg.fs, msg.seq, s.dtype.str, s.shape, s.tobytes(), flags)


def check_agrees(payload: bytes, **limits: int) -> AbpRecord | None:
    """The fast path answers like ``decode`` does, or not at all."""
    line = line_of(payload)
    rec = decode_abp_record(line, limits.get("max_bytes", codec.DEFAULT_MAX_BYTES))
    if rec is not None:
        assert rec.topic == TOPIC
        fast = outcome(build_abp, rec.payload, limits.get("max_samples", codec.DEFAULT_MAX_SAMPLES))
        assert fast == outcome(decode, "abp", payload, **limits)
    check_batch_read(line, payload, **limits)
    return rec


def check_batch_read(line: bytes, payload: bytes, **limits: int) -> bool:
    """``read_abp_line`` answers only for a valid chunk, with ``decode``'s numbers."""
    out = np.full(70_000, np.nan)
    got = read_abp_line(
        line,
        out,
        limits.get("max_bytes", codec.DEFAULT_MAX_BYTES),
        limits.get("max_samples", codec.DEFAULT_MAX_SAMPLES),
    )
    if got is None:
        return False
    ref = outcome(decode, "abp", payload, **limits)
    assert ref[0] == "chunk", ref
    assert (got.topic, got.t0, got.fs, (got.n,)) == (TOPIC, ref[1], ref[2], ref[5])
    assert out[: got.n].tobytes() == ref[6]
    return True


class TestSamplesArray:
    @pytest.mark.parametrize("n", [0, 1, 2, 125, 250, 4096, 4097, 20_000])
    def test_same_as_asarray(self, n: int) -> None:
        rng = np.random.default_rng(n)
        values = [float(x) for x in rng.normal(80.0, 30.0, n)] + [0.0, -0.0, 1e-310, 499.99]
        ref = np.asarray(values, dtype=np.float64)
        arr = codec._samples_array(values)
        assert arr.dtype == np.float64
        assert arr.shape == ref.shape
        assert arr.tobytes() == ref.tobytes()  # bit for bit (-0.0 and subnormals too)
        assert arr.flags.owndata
        assert arr.flags.c_contiguous
        assert arr.flags.aligned

    def test_packer_cache_is_bounded(self) -> None:
        for n in range(1, 200):
            codec._samples_array([1.0] * n)
            assert len(codec._PACKERS) <= codec._PACKERS_MAX
        assert all(n <= codec._PACKED_MAX for n in codec._PACKERS)


class TestDecodeAbpRecord:
    def test_valid_line(self) -> None:
        rec = check_agrees(json.dumps(VALID["abp"]).encode())
        assert rec is not None
        chunk = build_abp(rec.payload)
        assert chunk.samples.tolist() == VALID["abp"]["samples"]
        assert chunk.seq == 7
        assert not chunk.samples.flags.writeable

    @pytest.mark.parametrize(
        "line",
        [
            b"",
            b"null",
            b"[1]",
            b'{"topic": "icu/w/b/abp"}',
            b'{"payload": {"t0": 1732400000, "fs": 125, "samples": [80]}}',
            b'{"topic": "icu/w/b/abp", "payload": "{\\"t0\\": 1}"}',  # a raw string payload
            b'{"topic": 5, "payload": {"t0": 1732400000, "fs": 125, "samples": [80]}}',
            line_of(json.dumps(VALID["vitals"]).encode()),
            line_of(json.dumps({**VALID["abp"], "by": "S\u00fcd"}, ensure_ascii=False).encode()),
            line_of(b'{"t0": 1732400000, "fs": 125, "samples": [80], "x": "\xc0"}'),
            line_of(
                b'{"t0": 1732400000, "fs": 125, "samples": [80], "x": '
                + b"[" * 5000
                + b"]" * 5000
                + b"}"
            ),
            line_of(json.dumps(VALID["abp"]).encode()) + b" x",
            line_of(b'{"t0": 1732400000, "fs": 125, "samples": [80, NaN]}'),
        ],
    )
    def test_hands_over(self, line: bytes) -> None:
        """Anything but an ASCII line with an abp object payload goes to the general path."""
        assert decode_abp_record(line) is None

    def test_line_over_max_bytes_hands_over(self) -> None:
        line = line_of(json.dumps(VALID["abp"]).encode())
        assert decode_abp_record(line, len(line)) is not None
        assert decode_abp_record(line, len(line) - 1) is None

    def test_duplicate_keys_last_wins_as_in_decode(self) -> None:
        line = (
            b'{"topic":"x","payload":{"t0":1732400000,"fs":125,"samples":[1]},'
            b'"payload":{"t0":1732400001,"fs":250,"samples":[2,3],"samples":[4]},"topic":"'
            + TOPIC.encode()
            + b'"}'
        )
        rec = decode_abp_record(line)
        assert rec is not None
        assert rec.topic == TOPIC
        envelope = msgspec.json.decode(line, type=dict[str, Any])
        assert outcome(build_abp, rec.payload) == outcome(
            decode, "abp", json.dumps(envelope["payload"]).encode()
        )


class TestReadAbpLine:
    """The batch read: a valid chunk's numbers and samples, ``None`` when in any doubt."""

    def test_valid_line(self) -> None:
        """A valid chunk is read, its samples written to the array."""
        payload = json.dumps(VALID["abp"]).encode()
        assert check_batch_read(line_of(payload), payload)

    def test_no_room_hands_over(self) -> None:
        """An array too short for the samples: ``None`` (the caller empties its batch)."""
        n = len(VALID["abp"]["samples"])
        line = line_of(json.dumps(VALID["abp"]).encode())
        assert read_abp_line(line, np.empty(n - 1)) is None
        rec = read_abp_line(line, np.empty(n))
        assert rec is not None
        assert rec.n == n

    @pytest.mark.parametrize(
        "changes",
        [{"seq": 2**63}, {"seq": -1}, {"fs": 0}, {"fs": 2000.5}, {"t0": 0}, {"samples": []}],
    )
    def test_invalid_chunks_hand_over(self, changes: dict[str, Any]) -> None:
        """Whatever ``decode`` refuses, the batch read leaves to it (no error raised here)."""
        payload = json.dumps({**VALID["abp"], **changes}).encode()
        assert outcome(decode, "abp", payload)[0] == "error"
        assert read_abp_line(line_of(payload), np.empty(1000)) is None

    def test_other_lines_hand_over(self) -> None:
        """Not ASCII, an escape, not bytes, over the size limit, not a chunk: ``None``."""
        line = line_of(json.dumps(VALID["abp"]).encode())
        out = np.empty(1000)
        assert read_abp_line(line, out) is not None
        assert read_abp_line(line.replace(b"}", rb', "n":"\u00e9"}', 1), out) is None
        assert read_abp_line(line.replace(b"}", ', "n":"é"}'.encode(), 1), out) is None
        assert read_abp_line(bytearray(line), out) is None  # type: ignore[arg-type]
        assert read_abp_line(line, out, max_bytes=len(line) - 1) is None
        assert read_abp_line(line_of(json.dumps(VALID["vitals"]).encode()), out) is None


class TestBuildAbpAgreesWithDecode:
    @pytest.mark.parametrize(
        ("payload", "limits"),
        [
            (p, kw)
            for _id, kind, p, kw, _code, _field in BAD
            if kind == "abp" and isinstance(p, bytes)
        ],
        ids=[i for i, kind, p, *_ in BAD if kind == "abp" and isinstance(p, bytes)],
    )
    def test_bad_payloads(self, payload: bytes, limits: dict[str, int]) -> None:
        check_agrees(payload, **limits)

    @pytest.mark.parametrize(
        "changes",
        [
            {"samples": []},
            {"samples": [80.0] * 30_001},
            {"samples": [80.0] * 60_001},
            {"samples": [80, -100, 500, 0]},
            {"samples": [80, 500.0001]},
            {"samples": [-100.5]},
            {"seq": 2**63 - 1},
            {"seq": 2**63},
            {"seq": 0},
            {"seq": None},
            {"fs": 2000},
            {"fs": 0.999},
            {"t0": TS + 1e9},
        ],
    )
    def test_edges(self, changes: dict[str, Any]) -> None:
        rec = check_agrees(json.dumps({**VALID["abp"], **changes}).encode())
        assert rec is not None

    @pytest.mark.parametrize("max_samples", [1, 3, 4, 5])
    def test_max_samples(self, max_samples: int) -> None:
        check_agrees(json.dumps(VALID["abp"]).encode(), max_samples=max_samples)

    @FUZZ
    @given(obj=field_dicts)
    def test_fuzz_objects(self, obj: dict[str, object]) -> None:
        check_agrees(json.dumps(obj).encode())

    @FUZZ
    @given(changes=st.dictionaries(st.sampled_from(["t0", "fs", "samples", "seq"]), plausible))
    def test_fuzz_valid_with_changes(self, changes: dict[str, object]) -> None:
        check_agrees(json.dumps({**VALID["abp"], **changes}).encode())
