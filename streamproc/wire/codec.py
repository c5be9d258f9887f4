"""Bytes in, typed core messages out: the one place that raises on bad input.

:func:`decode` turns the payload of an inbound MQTT message (wire contract v1,
``shared/spec/wire-format.md``) into one of the self-validating messages of
:mod:`streamproc.core.protocol.messages`. Whatever the bytes, it returns a message or
raises :class:`CodecError`, which carries a short machine-friendly ``code``
(a metric label), the message ``kind``, the offending ``field`` and a
``reason`` a person can act on.

Decoding is one ``msgspec`` pass into a wire ``Struct`` per kind (unknown
fields are ignored, ints are accepted where floats are expected, booleans and
strings are never numbers), then the core message is built from it; the core
constructors check ranges and raise ``InvalidMessageError``, which is turned
into a ``CodecError`` here. The work that only explains a failure is done on
the failure path, so that the hot path (``abp`` chunks) stays short.

An ``abp`` chunk is first read with its ``samples`` left as ``msgspec.Raw``
(msgspec still checks the JSON syntax of the whole payload, and the types of
the other fields), and a compiled kernel (:mod:`streamproc.wire._numparse`) reads the
numbers from the payload's bytes straight into the float64 array, without a
Python ``float`` per sample. The kernel answers only when it is certain to give
what ``msgspec`` gives, to the bit: one ``samples`` key and no backslash in
the document, plain numbers within Clinger's exact fast path (at most 18
digits, a mantissa up to ``2**53``, a power of ten up to ``1e22``), every one
within the pressure limits. For anything else, and so for every error, the
payload takes the exact path (``samples`` as ``list[float]``), which gives the
chunk or the error.

A recording line (``{"topic", "payload"}``, ``streamproc replay``) whose payload
is an ``abp`` chunk can be read in one pass with :func:`decode_abp_record` and
:func:`build_abp` (the same kernel, on the line's bytes), which give what
:func:`decode` gives (the same chunk or the same error) and answer ``None``
whenever the line needs the general path.
"""

from __future__ import annotations

import re
import struct
from collections.abc import Callable, Mapping
from enum import StrEnum
from typing import Any, Final, TypeVar

import msgspec
import numpy as np
import numpy.typing as npt

from streamproc.core.protocol.messages import (
    DRUG_NAMES,
    MAX_SAMPLES_PER_CHUNK,
    PRESSURE_LIMITS,
    TS_LIMITS,
    AbpChunk,
    Ack,
    Drug,
    Infusion,
    InvalidMessageError,
    Labs,
    Message,
    Patient,
    Profile,
    RateUnit,
    Vitals,
    VitalsSource,
)
from streamproc.wire import _numparse

__all__ = [
    "DEFAULT_MAX_BYTES",
    "DEFAULT_MAX_SAMPLES",
    "ERROR_CODES",
    "INBOUND_KINDS",
    "AbpPayload",
    "AbpRecord",
    "CodecError",
    "build_abp",
    "decode",
    "decode_abp_record",
    "kinds",
    "read_abp_line",
    "warm_up",
]

#: Message kinds that arrive on inbound topics, in the order of the contract.
INBOUND_KINDS: Final[tuple[str, ...]] = ("abp", "vitals", "infusion", "patient", "labs", "ack")
DEFAULT_MAX_BYTES: Final = 1_048_576
DEFAULT_MAX_SAMPLES: Final = MAX_SAMPLES_PER_CHUNK

#: Every value :attr:`CodecError.code` can take (so that a metric can
#: initialise its labels). ``bad_topic`` is used by ``streamproc.wire.topics``.
ERROR_CODES: Final[frozenset[str]] = frozenset(
    {
        "unknown_kind",  # the kind is not one of INBOUND_KINDS
        "clock_skew",  # (service) data time too far ahead of arrival: a gateway clock error
        "too_large",  # payload over max_bytes, or more samples than max_samples
        "too_deep",  # JSON nested deeper than the decoder's recursion limit
        "not_utf8",  # payload bytes are not UTF-8
        "not_json",  # payload is not (exactly one) JSON value
        "not_object",  # payload is JSON but not an object
        "missing_field",  # a required field is absent
        "wrong_type",  # a field has the wrong JSON type (bool/string for a number, ...)
        "not_finite",  # a number overflows a float (1e400), or a sample is null
        "out_of_range",  # a value the message cannot hold (fs <= 0, negative rate, ...)
        "empty",  # an empty sample array
        "inconsistent",  # fields contradict each other (sbp < dbp)
        "unknown_value",  # an enum value not in the contract (drug, unit, profile, source)
        "bad_topic",  # see streamproc.wire.topics.TopicError
    }
)


class CodecError(ValueError):
    """An inbound payload (or topic) the project cannot accept.

    ``CodecError(kind, field, reason, code=...)``; ``str(err)`` is
    ``"{kind}.{field}: {reason}"`` (leaving out whichever of kind and field is
    ``None``).

    Attributes:
        code: short machine-friendly category, one of :data:`ERROR_CODES`
            (suitable as a metric label).
        kind: the message kind being decoded, or ``None`` if unknown.
        field: the offending field as on the wire, or ``None`` when the
            payload as a whole is bad (not JSON, not an object, too large).
        reason: what is wrong, in words (lists the valid choices for enums).
    """

    def __init__(self, kind: str | None, field: str | None, reason: str, *, code: str) -> None:
        self.kind = kind
        self.field = field
        self.reason = reason
        self.code = code
        where = ".".join(part for part in (kind, field) if part)
        super().__init__(f"{where}: {reason}" if where else reason)

    def __reduce__(self) -> tuple[Any, ...]:
        # The default would call cls(*args), which does not match __init__.
        return (_rebuild_error, (type(self), self.args, dict(self.__dict__)))


def _rebuild_error(
    cls: type[CodecError], args: tuple[Any, ...], state: dict[str, Any]
) -> CodecError:
    err = cls.__new__(cls)
    err.args = args
    err.__dict__.update(state)
    return err


def kinds() -> tuple[str, ...]:
    """The inbound message kinds :func:`decode` accepts."""
    return INBOUND_KINDS


# --------------------------------------------------------------------------- wire structs
# One Struct per kind, as on the wire. Enum-valued fields are plain strings
# here and are looked up below, so that the error can list the valid choices.
# Optional fields accept an explicit JSON null as "absent".


class _AbpWire(msgspec.Struct, gc=False):
    t0: float
    fs: float
    samples: list[float]
    seq: int | None = None


class _AbpRawWire(msgspec.Struct, gc=False):
    """An ``abp`` payload whose ``samples`` stay JSON text (syntax checked, types not)."""

    t0: float
    fs: float
    samples: msgspec.Raw
    seq: int | None = None


class _VitalsWire(msgspec.Struct, gc=False):
    ts: float
    source: str
    sbp: float | None = None
    dbp: float | None = None
    map: float | None = None
    hr: float | None = None


class _InfusionWire(msgspec.Struct, gc=False):
    ts: float
    drug: str
    rate: float
    unit: str
    running: bool = True
    concentration: float | None = None


class _PatientWire(msgspec.Struct, gc=False):
    ts: float
    profile: str | None = None
    age: float | None = None
    weight_kg: float | None = None
    map_target: float | None = None
    sbp_target: float | None = None
    crystalloid_ml: float | None = None
    peritonitis: bool | None = None


class _LabsWire(msgspec.Struct, gc=False):
    ts: float
    lactate: float | None = None
    urine_ml_kg_h: float | None = None
    scvo2: float | None = None


class _AckWire(msgspec.Struct, gc=False):
    ts: float
    alarm_id: str
    by: str | None = None


_E = TypeVar("_E", bound=StrEnum)


def _lookup(kind: str, enum: type[_E], table: Mapping[str, _E], what: str, value: str) -> _E:
    member = table.get(value)
    if member is None:
        choices = ", ".join(m.value for m in enum)
        raise CodecError(
            kind,
            what,
            # the value itself is never echoed: a free-text field may hold a person's name,
            # and this reason goes to the log (the dead-letter topic keeps the payload)
            f"unknown {what} (a text of {len(value)} characters, not shown); "
            f"expected one of: {choices}",
            code="unknown_value",
        )
    return member


_UNITS: Final = {m.value: m for m in RateUnit}
_PROFILES: Final = {m.value: m for m in Profile}
_SOURCES: Final = {m.value: m for m in VitalsSource}
_SEQ_MAX: Final = 2**63 - 1


#: Packers of ``n`` doubles, by ``n``: ``Struct.pack_into`` fills a float64 array from a
#: list of floats in about half the time of ``np.asarray`` (the same values and flags).
_PACKERS: Final[dict[int, struct.Struct]] = {}
_PACKED_MAX: Final = 4096  # longer chunks take np.asarray (a packer's size grows with n)
_PACKERS_MAX: Final = 32  # distinct lengths kept (hostile input cannot grow the cache)


def _samples_array(samples: list[float]) -> np.ndarray[Any, np.dtype[np.float64]]:
    """``np.asarray(samples, dtype=np.float64)``, faster for the usual chunk lengths.

    ``samples`` holds only ``float`` objects (msgspec converts JSON integers), so
    packing them as C doubles gives exactly the values ``np.asarray`` would.
    """
    n = len(samples)
    packer = _PACKERS.get(n)
    if packer is None:
        if n > _PACKED_MAX:
            return np.asarray(samples, dtype=np.float64)
        if len(_PACKERS) >= _PACKERS_MAX:
            _PACKERS.clear()
        packer = _PACKERS[n] = struct.Struct(f"{n}d")  # native, as float64
    arr = np.empty(n)  # float64
    packer.pack_into(arr, 0, *samples)  # type: ignore[arg-type]  # ndarray is a buffer
    return arr


def _check_abp(n: int, seq: int | None, max_samples: int) -> None:
    """The codec's own checks of an ``abp`` chunk of ``n`` samples (the core checks the rest)."""
    if n > max_samples:
        raise CodecError(
            "abp",
            "samples",
            f"has {n} samples, more than the limit of {max_samples}",
            code="too_large",
        )
    if seq is not None and not 0 <= seq <= _SEQ_MAX:
        raise CodecError(
            "abp",
            "seq",
            f"must be an integer between 0 and 2**63-1, got {seq}",
            code="out_of_range",
        )


def _build_abp(w: _AbpWire, max_samples: int) -> AbpChunk:
    _check_abp(len(w.samples), w.seq, max_samples)
    return AbpChunk(w.t0, w.fs, _samples_array(w.samples), w.seq)


# --------------------------------------------------------------------------- abp fast path
# ``samples`` decoded as msgspec.Raw (msgspec still checks the JSON syntax of the
# whole document) and parsed from the document's bytes by a compiled kernel
# (streamproc.wire._numparse), without a Python float per sample. The kernel answers
# only when it is sure to give what the exact path gives; otherwise the exact
# path runs, which also makes every error.

_PRESSURE_LO, _PRESSURE_HI = PRESSURE_LIMITS
#: Length of the array handed to the kernel first: the last chunk's (when the
#: count differs, the kernel is called again with an array of that count).
_LAST_N: Final = [125]
_ABP_RAW: Final = msgspec.json.Decoder(_AbpRawWire)


def _parse_samples(doc: bytes, max_n: int) -> npt.NDArray[np.float64] | None:
    """The ``samples`` of the validated JSON document ``doc``, or ``None`` when not sure."""
    out = np.empty(_LAST_N[0])  # float64
    n = _numparse.parse_samples(doc, out, _PRESSURE_LO, _PRESSURE_HI, max_n)
    if n != out.size:
        if n <= 0:
            return None
        out = np.empty(n)
        if _numparse.parse_samples(doc, out, _PRESSURE_LO, _PRESSURE_HI, max_n) != n:
            return None  # pragma: no cover - the same bytes give the same count
        _LAST_N[0] = n
    return out


def _decode_abp_fast(data: bytes, max_samples: int) -> AbpChunk | None:
    """What :func:`decode` gives an ``abp`` payload when it is a chunk; ``None`` when unsure."""
    try:
        w = _ABP_RAW.decode(data)
    except (msgspec.MsgspecError, RecursionError):
        return None
    seq = w.seq
    if seq is not None and not 0 <= seq <= _SEQ_MAX:
        return None
    samples = _parse_samples(data, min(max_samples, MAX_SAMPLES_PER_CHUNK))
    if samples is None:
        return None
    try:
        return AbpChunk(w.t0, w.fs, samples, seq)
    except InvalidMessageError:
        return None


def _build_vitals(w: _VitalsWire, _max_samples: int) -> Vitals:
    source = _lookup("vitals", VitalsSource, _SOURCES, "source", w.source)
    return Vitals(w.ts, source, w.sbp, w.dbp, w.map, w.hr)


def _build_infusion(w: _InfusionWire, _max_samples: int) -> Infusion:
    # any name of DRUG_NAMES, in any case: "Noradrenaline" is norepinephrine
    drug = _lookup("infusion", Drug, DRUG_NAMES, "drug", w.drug.strip().casefold())
    unit = _lookup("infusion", RateUnit, _UNITS, "unit", w.unit)
    return Infusion(w.ts, drug, w.rate, unit, w.running, w.concentration)


def _build_patient(w: _PatientWire, _max_samples: int) -> Patient:
    profile = (
        None if w.profile is None else _lookup("patient", Profile, _PROFILES, "profile", w.profile)
    )
    return Patient(
        w.ts,
        profile,
        w.age,
        w.weight_kg,
        w.map_target,
        w.sbp_target,
        w.crystalloid_ml,
        w.peritonitis,
    )


def _build_labs(w: _LabsWire, _max_samples: int) -> Labs:
    return Labs(w.ts, w.lactate, w.urine_ml_kg_h, w.scvo2)


def _build_ack(w: _AckWire, _max_samples: int) -> Ack:
    return Ack(w.ts, w.alarm_id) if w.by is None else Ack(w.ts, w.alarm_id, w.by)


# kind -> (decoder created once, builder from wire struct to core message)
_KINDS: Final[dict[str, tuple[msgspec.json.Decoder[Any], Callable[[Any, int], Message]]]] = {
    "abp": (msgspec.json.Decoder(_AbpWire), _build_abp),
    "vitals": (msgspec.json.Decoder(_VitalsWire), _build_vitals),
    "infusion": (msgspec.json.Decoder(_InfusionWire), _build_infusion),
    "patient": (msgspec.json.Decoder(_PatientWire), _build_patient),
    "labs": (msgspec.json.Decoder(_LabsWire), _build_labs),
    "ack": (msgspec.json.Decoder(_AckWire), _build_ack),
}


# --------------------------------------------------------------------------- decode


def decode(
    kind: str,
    payload: bytes | bytearray | memoryview | str,
    *,
    max_bytes: int = DEFAULT_MAX_BYTES,
    max_samples: int = DEFAULT_MAX_SAMPLES,
) -> Message:
    """Decode one inbound payload of ``kind`` into a validated core message.

    Args:
        kind: one of :data:`INBOUND_KINDS` (the last level of the topic).
        payload: the raw MQTT payload (UTF-8 JSON), or its text.
        max_bytes: payloads larger than this (in UTF-8 bytes) are rejected
            before any parsing.
        max_samples: ``abp`` chunks with more samples are rejected.

    Returns:
        An :class:`AbpChunk`, :class:`Vitals`, :class:`Infusion`,
        :class:`Patient`, :class:`Labs` or :class:`Ack`.

    Raises:
        CodecError: for anything that is not a valid message of ``kind``;
            never any other exception, whatever the payload.
    """
    entry = _KINDS.get(kind)
    if entry is None:
        raise CodecError(
            None,
            None,
            f"unknown message kind {str(kind)[:80]!r}; expected one of: {', '.join(INBOUND_KINDS)}",
            code="unknown_kind",
        )
    data = _as_bytes(kind, payload, max_bytes)
    decoder, build = entry
    if kind == "abp":
        chunk = _decode_abp_fast(data, max_samples)
        if chunk is not None:
            return chunk
    try:
        wire = decoder.decode(data)
    except msgspec.ValidationError as exc:
        raise _from_validation(kind, str(exc)) from exc
    except msgspec.DecodeError as exc:
        raise CodecError(kind, None, f"not valid JSON: {exc}", code="not_json") from exc
    except RecursionError as exc:
        raise CodecError(kind, None, "JSON is nested too deeply", code="too_deep") from exc
    except UnicodeDecodeError as exc:  # pragma: no cover - _as_bytes checked UTF-8 already
        raise CodecError(kind, None, f"not valid UTF-8: {exc.reason}", code="not_utf8") from exc
    try:
        return build(wire, max_samples)
    except InvalidMessageError as exc:
        raise CodecError(kind, exc.field, exc.reason, code=_classify(wire, exc.field)) from exc


class AbpPayload(msgspec.Struct, gc=False):
    """The payload of an :class:`AbpRecord`: an ``abp`` chunk's fields, its samples as an array.

    ``samples`` is a new float64 array of the values; the checks are
    :func:`build_abp`'s.
    """

    t0: float
    fs: float
    samples: npt.NDArray[np.float64]
    seq: int | None


class AbpRecord(msgspec.Struct, gc=False):
    """A recording line ``{"topic": ..., "payload": {...}}`` read as an ``abp`` chunk in one pass.

    What :func:`decode_abp_record` returns; ``payload`` is turned into an
    :class:`AbpChunk` by :func:`build_abp` once the topic is known to be an
    ``abp`` topic.
    """

    topic: str
    payload: AbpPayload


class _AbpRecordRaw(msgspec.Struct, gc=False):
    topic: str
    payload: _AbpRawWire


class _AbpRecordWire(msgspec.Struct, gc=False):
    topic: str
    payload: _AbpWire


_ABP_RECORD_RAW: Final = msgspec.json.Decoder(_AbpRecordRaw)
_ABP_RECORD: Final = msgspec.json.Decoder(_AbpRecordWire)


def decode_abp_record(line: bytes, max_bytes: int = DEFAULT_MAX_BYTES) -> AbpRecord | None:
    """The fast path of a recording line whose payload is a well-formed ``abp`` object.

    Returns ``None`` (never raises) for any other line: another kind, a raw
    string payload, non-ASCII bytes, a line longer than ``max_bytes``, bad JSON,
    a wrong type... The caller then takes the general path (the line's
    envelope, then :func:`decode` of the payload), which classifies the line.
    When this returns a record, that path would have read the same topic and
    the same wire payload: the line is valid JSON (duplicate keys: the last
    one wins in both), the payload is within ``max_bytes`` (it is part of the
    line) and is UTF-8 (the line is ASCII).

    The samples of a ``bytes`` line are parsed by the compiled kernel when it is
    sure of them (and they lie within the pressure limits), else as a list of
    floats (what ``msgspec`` makes of them), which gives the same array.
    """
    if len(line) > max_bytes or not line.isascii():
        return None
    if type(line) is bytes:
        try:
            raw = _ABP_RECORD_RAW.decode(line)
        except (msgspec.MsgspecError, RecursionError):
            pass  # not a chunk the kernel reads: the exact decode below decides
        else:
            samples = _parse_samples(line, MAX_SAMPLES_PER_CHUNK)
            if samples is not None:
                w = raw.payload
                return AbpRecord(raw.topic, AbpPayload(w.t0, w.fs, samples, w.seq))
    try:
        rec = _ABP_RECORD.decode(line)
    except (msgspec.MsgspecError, RecursionError):
        return None
    wire = rec.payload
    samples = _samples_array(wire.samples)
    return AbpRecord(rec.topic, AbpPayload(wire.t0, wire.fs, samples, wire.seq))


class AbpLine(msgspec.Struct, gc=False):
    """What :func:`read_abp_line` read of a line: its topic and chunk, the samples aside."""

    topic: str
    t0: float
    fs: float
    n: int
    #: The chunk's ``seq`` (None: the gateway sends none).
    seq: int | None = None


_T0_LO, _T0_HI = TS_LIMITS


def read_abp_line(
    line: bytes,
    out: npt.NDArray[np.float64],
    max_bytes: int = DEFAULT_MAX_BYTES,
    max_samples: int = DEFAULT_MAX_SAMPLES,
) -> AbpLine | None:
    """A recording line that is certainly a valid ``abp`` chunk, its samples written to ``out``.

    The fast path of a batch (a chunk row of ``Engine.receive``): when this returns a
    record, :func:`decode_abp_record` then :func:`build_abp` give an
    :class:`AbpChunk` of this ``t0`` and ``fs`` whose samples are
    ``out[:n]``, without error (``out`` must have room for them: a longer
    chunk returns ``None``). ``None`` for any other line, and whenever in doubt:
    the caller takes the line the ordinary way, which classifies it.
    """
    if len(line) > max_bytes or type(line) is not bytes or not line.isascii():
        return None
    try:
        raw = _ABP_RECORD_RAW.decode(line)
    except (msgspec.MsgspecError, RecursionError):
        return None
    w = raw.payload
    seq, t0, fs = w.seq, w.t0, w.fs
    if (
        (seq is not None and not 0 <= seq <= _SEQ_MAX)
        or not _T0_LO <= t0 <= _T0_HI
        or not 1.0 <= fs <= 2000.0
    ):
        return None
    n = _numparse.parse_samples(
        line, out, _PRESSURE_LO, _PRESSURE_HI, min(max_samples, MAX_SAMPLES_PER_CHUNK)
    )
    if not 0 < n <= out.size:
        return None
    return AbpLine(raw.topic, t0, fs, n, seq)


def build_abp(payload: AbpPayload, max_samples: int = DEFAULT_MAX_SAMPLES) -> AbpChunk:
    """The :class:`AbpChunk` of an :attr:`AbpRecord.payload`, validated as :func:`decode` does.

    Raises:
        CodecError: with the code :func:`decode` gives the same payload.
    """
    samples = payload.samples
    n = samples.size
    _check_abp(n, payload.seq, max_samples)
    try:
        return AbpChunk(payload.t0, payload.fs, samples, payload.seq)
    except InvalidMessageError as exc:
        code = _abp_samples_code(n) if exc.field == "samples" else "out_of_range"
        raise CodecError("abp", exc.field, exc.reason, code=code) from exc


def _as_bytes(kind: str, payload: object, max_bytes: int) -> bytes:
    """Return the payload as UTF-8 bytes within ``max_bytes``, or raise."""
    if isinstance(payload, bytes):
        data = payload
    elif isinstance(payload, str):
        if len(payload) > max_bytes:  # each character is at least one byte
            raise _too_large(kind, len(payload), max_bytes)
        try:
            data = payload.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise CodecError(
                kind, None, f"text cannot be encoded as UTF-8: {exc.reason}", code="not_utf8"
            ) from exc
    elif isinstance(payload, bytearray | memoryview):
        size = payload.nbytes if isinstance(payload, memoryview) else len(payload)
        if size > max_bytes:
            raise _too_large(kind, size, max_bytes)
        data = bytes(payload)
    else:
        raise CodecError(
            kind,
            None,
            f"payload must be bytes or text, got {type(payload).__name__}",
            code="not_json",
        )
    if len(data) > max_bytes:
        raise _too_large(kind, len(data), max_bytes)
    if not data.isascii():
        try:
            data.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise CodecError(
                kind, None, f"not valid UTF-8 ({exc.reason} at byte {exc.start})", code="not_utf8"
            ) from exc
    return data


def _too_large(kind: str, size: int, max_bytes: int) -> CodecError:
    return CodecError(
        kind, None, f"payload of {size} bytes exceeds the limit of {max_bytes}", code="too_large"
    )


# "Expected `float`, got `bool` - at `$.samples[3]`" -> message, path
_VALIDATION_RE: Final = re.compile(r"(?P<msg>.*?)(?: - at `\$(?P<path>[^`]*)`)?", re.DOTALL)
_FIELD_RE: Final = re.compile(r"\.(?P<field>[^.\[]+)(?P<rest>.*)", re.DOTALL)
_MISSING_RE: Final = re.compile(r"Object missing required field `(?P<field>[^`]*)`")
_EXPECTED_RE: Final = re.compile(r"Expected `(?P<want>[^`]*)`, got `(?P<got>[^`]*)`")


def _from_validation(kind: str, text: str) -> CodecError:
    """Turn a msgspec ``ValidationError`` message into a :class:`CodecError`."""
    m = _VALIDATION_RE.fullmatch(text)
    msg, path = (m["msg"], m["path"] or "") if m else (text, "")
    fm = _FIELD_RE.fullmatch(path)
    field = fm["field"] if fm else None
    where = f" (at {field}{fm['rest']})" if fm and fm["rest"] else ""

    if missing := _MISSING_RE.fullmatch(msg):
        return CodecError(kind, missing["field"], "is required", code="missing_field")
    if expected := _EXPECTED_RE.fullmatch(msg):
        want, got = expected["want"], expected["got"]
        if field is None:
            return CodecError(
                kind, None, f"payload must be a JSON object, got {got}", code="not_object"
            )
        if field == "samples" and got == "null":
            return CodecError(
                kind,
                field,
                f"must all be finite numbers (no NaN/inf/null), got null{where}",
                code="not_finite",
            )
        return CodecError(
            kind, field, f"expected {_describe(want)}, got {got}{where}", code="wrong_type"
        )
    if msg == "Number out of range":
        return CodecError(
            kind, field, f"number is too large for a 64-bit float{where}", code="not_finite"
        )
    return CodecError(kind, field, f"{msg}{where}", code="wrong_type")


_TYPE_WORDS: Final = {
    "float": "a number",
    "float | null": "a number or null",
    "int": "an integer",
    "int | null": "an integer or null",
    "str": "a string",
    "str | null": "a string or null",
    "bool": "true or false",
    "bool | null": "true, false or null",
    "array": "an array of numbers",
}


def _describe(msgspec_type: str) -> str:
    return _TYPE_WORDS.get(msgspec_type, f"`{msgspec_type}`")


def _classify(wire: object, field: str) -> str:
    """The ``code`` for a core ``InvalidMessageError`` on ``field`` (failure path only)."""
    if isinstance(wire, _AbpWire) and field == "samples":
        return _abp_samples_code(len(wire.samples))
    if isinstance(wire, _VitalsWire) and field == "sbp" and wire.dbp is not None:
        # sbp on its own is fine, so it was rejected for being below dbp
        try:
            Vitals(wire.ts, VitalsSource.ART, sbp=wire.sbp)
        except InvalidMessageError:
            return "out_of_range"
        return "inconsistent"
    if isinstance(wire, _AckWire) and field == "alarm_id" and not wire.alarm_id:
        return "empty"
    return "out_of_range"


def _abp_samples_code(n: int) -> str:
    """The ``code`` for a core ``InvalidMessageError`` on the ``samples`` of ``n`` values."""
    if n == 0:
        return "empty"
    if n > MAX_SAMPLES_PER_CHUNK:
        return "too_large"
    return "out_of_range"


def warm_up() -> None:
    """Compile the ``abp`` fast path's kernel now rather than on the first chunk.

    numba compiles it on first use (or loads it from its on-disk cache, still a
    fraction of a second): the service and ``replay`` call this as they start.
    """
    decode("abp", b'{"t0":1700000000.0,"fs":125.0,"samples":[80.5,81.25]}')
    decode_abp_record(b'{"topic":"t","payload":{"t0":1700000000.0,"fs":125,"samples":[80]}}')
