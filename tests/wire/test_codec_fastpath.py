"""A recording line's route (:func:`streamproc.wire.codec.read_record`) agrees with :func:`decode`.

``read_record`` of a line must give the same chunk or the same ``CodecError`` (code,
field, reason) as ``decode("abp", ...)`` of the line's payload, whether the kernel
reads the samples from the line's bytes or the exact read answers.
``read_chunk_row`` (a replay's batches: the same route stopped before the
``AbpChunk``) must answer only for a line ``read_record`` reads as a valid chunk,
with its numbers and samples. The packed sample array of the exact read must be
what ``np.asarray`` gave.
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
from streamproc.wire.codec import CodecError, decode, read_chunk_row, read_record
from streamproc.wire.topics import InboundTopic, parse_inbound
from tests.wire.test_codec import BAD, FUZZ, TS, VALID, field_dicts, plausible

TOPIC = "icu/ward7/bed03/abp"
KNOWN = {TOPIC: parse_inbound(TOPIC)}


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


def read_chunk(line: bytes, **kwargs: Any) -> Any:
    """The message ``read_record`` gives ``line`` (whose topic is an ``abp`` topic)."""
    topic, msg = read_record(line, parse_inbound, **kwargs)
    assert isinstance(topic, InboundTopic)
    assert str(topic.bed) == "ward7/bed03"
    assert topic.kind == "abp"
    return msg


def by_kernel(monkeypatch: pytest.MonkeyPatch) -> list[bytes]:
    """The documents whose chunk the kernel reads from here on."""
    docs: list[bytes] = []
    real = codec._abp_chunk  # noqa: SLF001 - spied on: the kernel route's own entry

    def spy(doc: bytes, *args: Any) -> Any:
        chunk = real(doc, *args)
        if chunk is not None:
            docs.append(doc)
        return chunk

    monkeypatch.setattr(codec, "_abp_chunk", spy)
    return docs


def check_agrees(payload: bytes, **limits: int) -> tuple[Any, ...]:
    """The line's route answers as ``decode`` does for its payload (batch read too)."""
    line = line_of(payload)
    ref = outcome(decode, "abp", payload, **limits)
    got = outcome(read_chunk, line, **limits)
    try:
        msgspec.json.decode(line, type=dict[str, msgspec.Raw])
    except (msgspec.DecodeError, RecursionError):  # the payload breaks the line too
        assert got[:3] in {("error", "bad_line", None), ("error", "too_deep", None)}
        return ref
    assert got == ref
    check_batch_read(line, ref, **limits)
    return ref


def check_batch_read(line: bytes, ref: tuple[Any, ...], **limits: int) -> bool:
    """``read_chunk_row`` answers only for a valid chunk, with ``decode``'s numbers."""
    out = np.full(70_000, np.nan)
    got = read_chunk_row(
        line,
        KNOWN.get,
        out,
        limits.get("max_bytes", codec.DEFAULT_MAX_BYTES),
        limits.get("max_samples", codec.DEFAULT_MAX_SAMPLES),
    )
    if got is None:
        return False
    assert ref[0] == "chunk", ref
    topic, t0, fs, n = got
    assert (topic, t0, fs, ref[3], (n,)) == (KNOWN[TOPIC], ref[1], ref[2], None, ref[5])
    assert out[:n].tobytes() == ref[6]
    return True


class TestSamplesArray:
    @pytest.mark.parametrize("n", [0, 1, 2, 125, 250, 4096, 4097, 20_000])
    def test_same_as_asarray(self, n: int) -> None:
        rng = np.random.default_rng(n)
        values = [float(x) for x in rng.normal(80.0, 30.0, n)] + [0.0, -0.0, 1e-310, 499.99]
        ref = np.asarray(values, dtype=np.float64)
        arr = codec._samples_array(values)  # noqa: SLF001 - the packer itself is tested
        assert arr.dtype == np.float64
        assert arr.shape == ref.shape
        assert arr.tobytes() == ref.tobytes()  # bit for bit (-0.0 and subnormals too)
        assert arr.flags.owndata
        assert arr.flags.c_contiguous
        assert arr.flags.aligned

    def test_packer_cache_is_bounded(self) -> None:
        for n in range(1, 200):
            codec._samples_array([1.0] * n)  # noqa: SLF001 - the packer cache's bound
            assert len(codec._PACKERS) <= codec._PACKERS_MAX  # noqa: SLF001 - the packer cache's bound
        assert all(n <= codec._PACKED_MAX for n in codec._PACKERS)  # noqa: SLF001 - the packer cache's bound


class TestReadRecord:
    def test_valid_line(self, monkeypatch: pytest.MonkeyPatch) -> None:
        payload = json.dumps(VALID["abp"]).encode()
        docs = by_kernel(monkeypatch)
        assert check_agrees(payload)[0] == "chunk"
        chunk = read_chunk(line_of(payload))
        assert chunk.samples.tolist() == VALID["abp"]["samples"]
        assert chunk.seq == 7
        assert not chunk.samples.flags.writeable
        # decode's payload, then the line's bytes (twice), by the kernel
        assert docs == [payload, line_of(payload), line_of(payload)]

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
    def test_not_read_from_the_line(self, line: bytes, monkeypatch: pytest.MonkeyPatch) -> None:
        """Anything but an ASCII line with an abp object payload: the envelope, then decode."""
        docs = by_kernel(monkeypatch)
        got = outcome(lambda: read_record(line, parse_inbound)[1])
        assert got[0] == "chunk" or got[1] in {*codec.ERROR_CODES, "bad_line"}
        assert line not in docs

    def test_line_over_max_bytes(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """A line over ``max_bytes`` is not read from the line (its payload may still fit)."""
        payload = json.dumps(VALID["abp"]).encode()
        line = line_of(payload)
        docs = by_kernel(monkeypatch)
        read_chunk(line, max_bytes=len(line))
        assert docs == [line]
        assert outcome(read_chunk, line, max_bytes=len(line) - 1) == outcome(decode, "abp", payload)
        assert docs == [line, payload, payload]  # (the route's decode, then the reference's)
        assert outcome(read_chunk, line, max_bytes=len(payload) - 1)[1] == "too_large"

    def test_bad_lines(self) -> None:
        """A line that is no record: ``bad_line`` (or ``too_deep``), a recording's codes."""
        for line, code in [
            (b"", "bad_line"),
            (b"null", "bad_line"),
            (b'{"topic": "icu/w/b/abp"}', "bad_line"),
            (b'{"topic": "icu/w/b/abp", "payload": "\\ud800"}', "bad_line"),
            (b"[" * 5000 + b"]" * 5000, "bad_line"),  # (not an object: no deeper)
            (b'{"topic": "t", "payload": ' + b"[" * 5000 + b"]" * 5000 + b"}", "too_deep"),
            (b'{"topic": "icu/w/abp", "payload": {}}', "bad_topic"),
        ]:
            with pytest.raises(CodecError) as info:
                read_record(line, parse_inbound)
            assert info.value.code == code, line

    def test_raw_string_payload(self) -> None:
        """A payload as it came off the wire (a JSON string) is decoded as its text."""
        payload = json.dumps(VALID["abp"])
        line = json.dumps({"topic": TOPIC, "payload": payload}).encode()
        assert outcome(read_chunk, line) == outcome(decode, "abp", payload.encode())

    def test_duplicate_keys_last_wins_as_in_decode(self) -> None:
        line = (
            b'{"topic":"x","payload":{"t0":1732400000,"fs":125,"samples":[1]},'
            b'"payload":{"t0":1732400001,"fs":250,"samples":[2,3],"samples":[4]},"topic":"'
            + TOPIC.encode()
            + b'"}'
        )
        envelope = msgspec.json.decode(line, type=dict[str, Any])
        assert outcome(read_chunk, line) == outcome(
            decode, "abp", json.dumps(envelope["payload"]).encode()
        )


class TestBatchRead:
    """The batch read: a valid chunk's numbers and samples, ``None`` when in any doubt."""

    def test_valid_line(self) -> None:
        """A valid chunk is read, its samples written to the array."""
        payload = json.dumps({**VALID["abp"], "seq": None}).encode()
        assert check_batch_read(line_of(payload), outcome(decode, "abp", payload))

    def test_no_room_hands_over(self) -> None:
        """An array too short for the samples: ``None`` (the caller empties its batch)."""
        n = len(VALID["abp"]["samples"])
        line = line_of(json.dumps({**VALID["abp"], "seq": None}).encode())
        assert read_chunk_row(line, KNOWN.get, np.empty(n - 1)) is None
        row = read_chunk_row(line, KNOWN.get, np.empty(n))
        assert row is not None
        assert row[3] == n

    @pytest.mark.parametrize(
        "changes",
        [{"seq": 2**63}, {"seq": -1}, {"fs": 0}, {"fs": 2000.5}, {"t0": 0}, {"samples": []}],
    )
    def test_invalid_chunks_hand_over(self, changes: dict[str, Any]) -> None:
        """Whatever ``decode`` refuses, the batch read leaves to it (no error raised here)."""
        payload = json.dumps({**VALID["abp"], "seq": None, **changes}).encode()
        assert outcome(decode, "abp", payload)[0] == "error"
        assert read_chunk_row(line_of(payload), KNOWN.get, np.empty(1000)) is None

    def test_other_lines_hand_over(self) -> None:
        """Not ASCII, an escape, not bytes, over the size limit, not a chunk, a ``seq``, an
        unknown topic: ``None``."""
        line = line_of(json.dumps({**VALID["abp"], "seq": None}).encode())
        out = np.empty(1000)
        assert read_chunk_row(line, KNOWN.get, out) is not None
        assert read_chunk_row(line.replace(b"}", rb', "n":"\u00e9"}', 1), KNOWN.get, out) is None
        assert read_chunk_row(line.replace(b"}", ', "n":"é"}'.encode(), 1), KNOWN.get, out) is None
        assert read_chunk_row(bytearray(line), KNOWN.get, out) is None  # type: ignore[arg-type]
        assert read_chunk_row(line, KNOWN.get, out, max_bytes=len(line) - 1) is None
        vitals = line_of(json.dumps(VALID["vitals"]).encode())
        assert read_chunk_row(vitals, KNOWN.get, out) is None
        assert read_chunk_row(line_of(json.dumps(VALID["abp"]).encode()), KNOWN.get, out) is None
        assert read_chunk_row(line, {}.get, out) is None
        other = {TOPIC: parse_inbound("icu/ward7/bed03/vitals")}
        assert read_chunk_row(line, other.get, out) is None


class TestRecordAgreesWithDecode:
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
        check_agrees(json.dumps({**VALID["abp"], **changes}).encode())

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
