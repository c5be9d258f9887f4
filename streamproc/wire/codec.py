"""Bytes in, typed core messages out: the one place that raises on bad input.

:func:`decode` turns the payload of an inbound MQTT message (wire contract v1,
``shared/spec/wire-format.md``) into one of the self-validating messages of
:mod:`streamproc.core.protocol.messages`. Whatever the bytes, it returns a message or
raises :class:`CodecError`, which carries a short machine-friendly ``code``
(a metric label), the message ``kind``, the offending ``field`` and a
``reason`` a person can act on. :func:`read_record` does the same for a line of
a recording (``{"topic", "payload"}``, ``streamproc replay``): the same route per
kind, the envelope around it.

The schema of each message is the core message itself: its fields (names,
order, types, defaults) are read from the core class by :func:`_wire_struct`,
which makes the ``msgspec`` Struct the bytes are decoded into (an enum is its
text on the wire, looked up here so that an error can list the choices), and
its limits are the checks of the core constructor, which raises
``InvalidMessageError``, turned into a ``CodecError`` here. Decoding is one
``msgspec`` pass (unknown fields are ignored, ints are accepted where floats are
expected, booleans and strings are never numbers), then the core message is
built. The work that only explains a failure is done on the failure path.

One route per kind. For every kind but ``abp``: the Struct, then the core
message. For ``abp`` (:func:`_decode_abp`, :func:`_abp_chunk`): the payload is
read with its ``samples`` left as ``msgspec.Raw`` (msgspec still checks the JSON
syntax of the whole payload, and the types of the other fields), and a compiled
kernel (:mod:`streamproc.wire._numparse`) reads the numbers from the bytes
straight into the float64 array, without a Python ``float`` per sample. The
kernel answers only when it is certain to give what ``msgspec`` gives, to the
bit: one ``samples`` key and no backslash in the document, plain numbers within
Clinger's exact fast path (at most 18 digits, a mantissa up to ``2**53``, a
power of ten up to ``1e22``), every one within the pressure limits. For anything
else, and so for every error, the payload takes the exact read of the same
route (``samples`` as ``list[float]``), which gives the chunk or the error.
A recording line's ``abp`` payload takes the same kernel on the line's bytes;
a replay's batch (:func:`read_chunk_row`) takes the same route, stopped before
the ``AbpChunk`` is made, and leaves any line it is unsure of to :func:`read_record`.
"""

from __future__ import annotations

import dataclasses
import functools
import operator
import re
import struct
from collections.abc import Callable, Mapping
from enum import StrEnum
from typing import Any, Final, Protocol, TypeVar, get_args, get_type_hints

import msgspec
import numpy as np
import numpy.typing as npt

from streamproc.core.protocol.messages import (
    DRUG_NAMES,
    FS_LIMITS,
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
    "CodecError",
    "decode",
    "kinds",
    "read_chunk_row",
    "read_record",
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


# --------------------------------------------------------------------------- the schema
# The Struct of each kind is made from the core message's own fields (names, order,
# types, defaults): the core message is the schema, written once. On the wire an enum
# is its text (looked up below, so that the error can list the valid choices) and an
# optional field accepts an explicit JSON null as "absent".

_REQUIRED: Final = (dataclasses.MISSING, msgspec.NODEFAULT)


def _message_fields(message: type) -> list[tuple[str, Any, Any]]:
    """``(name, type, default)`` of each field of a core message, in order."""
    hints = get_type_hints(message)
    if dataclasses.is_dataclass(message):
        return [(f.name, hints[f.name], f.default) for f in dataclasses.fields(message)]
    return [(f.name, hints[f.name], f.default) for f in msgspec.structs.fields(message)]


def _enum_of(hint: Any) -> type[StrEnum] | None:
    """The enum a field's type holds (``E`` or ``E | None``), if any."""
    for t in (hint, *get_args(hint)):
        if isinstance(t, type) and issubclass(t, StrEnum):
            return t
    return None


def _wire_type(hint: Any) -> Any:
    """A core field's type as on the wire: an enum is its text."""
    args = get_args(hint)
    if type(None) in args:
        return functools.reduce(operator.or_, (_wire_type(a) for a in args))
    return str if _enum_of(hint) is not None else hint


def _wire_struct(message: type, name: str, **types: Any) -> Any:
    """The ``msgspec`` Struct of ``message`` as on the wire.

    ``types`` gives the wire type of a field that has no JSON type of its own
    (``samples``) or whose JSON null means the core default (``Ack.by``).
    """
    fields: list[tuple[str, Any] | tuple[str, Any, Any]] = []
    for field, hint, default in _message_fields(message):
        wire = types.get(field, _wire_type(hint))
        if default in _REQUIRED:
            fields.append((field, wire))
        else:
            nullable = default is not None and type(None) in get_args(wire)
            fields.append((field, wire, None if nullable else default))
    return msgspec.defstruct(name, fields, gc=False)


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


def _drug_name(value: str) -> str:
    # any name of DRUG_NAMES, in any case: "Noradrenaline" is norepinephrine
    return value.strip().casefold()


#: The names each enum is looked up by, and how a wire text is made one of them.
_ENUM_NAMES: Final[Mapping[type[StrEnum], tuple[Mapping[str, Any], Callable[[str], str]]]] = {
    Drug: (DRUG_NAMES, _drug_name),
    **{e: ({m.value: m for m in e}, str) for e in (RateUnit, Profile, VitalsSource)},
}


def _field_converter(
    kind: str, field: str, hint: Any, default: Any, wire: Any
) -> Callable[[Any], Any] | None:
    """What turns a wire value of ``field`` into the core's (``None``: it is the core's)."""
    enum = _enum_of(hint)
    if enum is not None:
        names, spelling = _ENUM_NAMES[enum]

        def convert(value: str | None) -> Any:
            if value is None:
                return None
            return _lookup(kind, enum, names, field, spelling(value))

        return convert
    if default not in _REQUIRED and default is not None and wire is None:
        return lambda value: default if value is None else value
    return None


def _builder(kind: str, message: type, struct: Any) -> Callable[[Any, int], Message]:
    """The core ``message`` of a decoded wire ``struct`` (the core constructor checks it)."""
    wire_defaults = {f.name: f.default for f in msgspec.structs.fields(struct)}
    converters = [
        (i, convert)
        for i, (field, hint, default) in enumerate(_message_fields(message))
        if (convert := _field_converter(kind, field, hint, default, wire_defaults[field]))
    ]
    astuple = msgspec.structs.astuple

    def build(w: Any, _max_samples: int) -> Message:
        args = list(astuple(w))
        for i, convert in converters:
            args[i] = convert(args[i])
        return message(*args)  # type: ignore[no-any-return]

    return build


_AbpWire: Final = _wire_struct(AbpChunk, "_AbpWire", samples=list[float])
#: An ``abp`` payload whose ``samples`` stay JSON text (syntax checked, types not).
_AbpHead: Final = _wire_struct(AbpChunk, "_AbpHead", samples=msgspec.Raw)
_VitalsWire: Final = _wire_struct(Vitals, "_VitalsWire")
_InfusionWire: Final = _wire_struct(Infusion, "_InfusionWire")
_PatientWire: Final = _wire_struct(Patient, "_PatientWire")
_LabsWire: Final = _wire_struct(Labs, "_LabsWire")
_AckWire: Final = _wire_struct(Ack, "_AckWire", by=str | None)

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


def _build_abp(w: Any, max_samples: int) -> AbpChunk:
    _check_abp(len(w.samples), w.seq, max_samples)
    return AbpChunk(w.t0, w.fs, _samples_array(w.samples), w.seq)


# kind -> (decoder created once, builder from wire struct to core message): the exact read
_KINDS: Final[dict[str, tuple[msgspec.json.Decoder[Any], Callable[[Any, int], Message]]]] = {
    "abp": (msgspec.json.Decoder(_AbpWire), _build_abp),
    **{
        kind: (msgspec.json.Decoder(wire), _builder(kind, message, wire))
        for kind, message, wire in (
            ("vitals", Vitals, _VitalsWire),
            ("infusion", Infusion, _InfusionWire),
            ("patient", Patient, _PatientWire),
            ("labs", Labs, _LabsWire),
            ("ack", Ack, _AckWire),
        )
    },
}


# --------------------------------------------------------------------------- abp
# ``samples`` decoded as msgspec.Raw (msgspec still checks the JSON syntax of the
# whole document) and parsed from the document's bytes by a compiled kernel
# (streamproc.wire._numparse), without a Python float per sample. The kernel answers
# only when it is sure to give what the exact read gives; otherwise the exact
# read runs, which also makes every error.

_PRESSURE_LO, _PRESSURE_HI = PRESSURE_LIMITS
_T0_LO, _T0_HI = TS_LIMITS
_FS_LO, _FS_HI = FS_LIMITS
#: Length of the array handed to the kernel first: the last chunk's (when the
#: count differs, the kernel is called again with an array of that count).
_LAST_N: Final = [125]
_ABP_HEAD: Final = msgspec.json.Decoder(_AbpHead)


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


def _abp_chunk(doc: bytes, head: Any, max_samples: int) -> AbpChunk | None:
    """The chunk of ``head`` (an ``_AbpHead`` read from ``doc``), its samples read from ``doc``.

    ``None`` whenever the kernel is unsure or the chunk is not valid: the exact
    read then gives the chunk or the error.
    """
    seq = head.seq
    if seq is not None and not 0 <= seq <= _SEQ_MAX:
        return None
    samples = _parse_samples(doc, min(max_samples, MAX_SAMPLES_PER_CHUNK))
    if samples is None:
        return None
    try:
        return AbpChunk(head.t0, head.fs, samples, seq)
    except InvalidMessageError:
        return None


def _decode_abp(data: bytes, max_samples: int) -> AbpChunk | None:
    """The chunk of an ``abp`` payload by the kernel; ``None`` when the exact read must answer."""
    try:
        head = _ABP_HEAD.decode(data)
    except (msgspec.MsgspecError, RecursionError):
        return None
    return _abp_chunk(data, head, max_samples)


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
    if kind == "abp":
        chunk = _decode_abp(data, max_samples)
        if chunk is not None:
            return chunk
    decoder, build = entry
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


# --------------------------------------------------------------------------- recordings


class _Routed(Protocol):
    """A parsed inbound topic: what :func:`read_record` needs of it is its kind."""

    @property
    def kind(self) -> str: ...


_T = TypeVar("_T", bound=_Routed)


class _Line(msgspec.Struct, gc=False):
    """A recording line's envelope, its payload as it is."""

    topic: str
    payload: msgspec.Raw


_LINE: Final = msgspec.json.Decoder(_Line)
_TEXT: Final = msgspec.json.Decoder(str)
#: A line whose payload is an ``abp`` object, read in one pass with :data:`_ABP_HEAD`'s schema.
_ABP_LINE: Final[msgspec.json.Decoder[Any]] = msgspec.json.Decoder(
    msgspec.defstruct("_AbpLine", [("topic", str), ("payload", _AbpHead)], gc=False)
)


def read_record(
    line: bytes,
    topic_of: Callable[[str], _T],
    *,
    max_bytes: int = DEFAULT_MAX_BYTES,
    max_samples: int = DEFAULT_MAX_SAMPLES,
) -> tuple[_T, Message]:
    """The topic and message of a recording line ``{"topic": ..., "payload": ...}``.

    The payload is a JSON object or, as it came off the wire, a JSON string; its
    topic is read by ``topic_of`` (which raises :class:`CodecError` for a bad
    one), its payload is decoded as :func:`decode` decodes it for the topic's
    kind. An ``abp`` payload's samples are read by the kernel from the line's bytes.

    Raises:
        CodecError: as :func:`decode`, or with the code ``"bad_line"`` (a
            recording's own: not a ``{"topic", "payload"}`` object) or
            ``"too_deep"`` for a line that is not a record.
    """
    # (the payload is part of the line: within max_bytes, and UTF-8 when the line is ASCII)
    if len(line) <= max_bytes and type(line) is bytes and line.isascii():
        try:
            rec = _ABP_LINE.decode(line)
        except (msgspec.MsgspecError, RecursionError):
            pass  # not an abp object: the envelope first, below
        else:
            topic = topic_of(rec.topic)
            if topic.kind == "abp":
                chunk = _abp_chunk(line, rec.payload, max_samples)
                if chunk is not None:
                    return topic, chunk
    try:
        env = _LINE.decode(line)
    except (msgspec.DecodeError, msgspec.ValidationError, UnicodeDecodeError) as exc:
        raise CodecError(None, None, f"not a recording line: {exc}", code="bad_line") from exc
    except RecursionError as exc:  # nested deeper than msgspec's limit
        raise CodecError(None, None, "JSON is nested too deeply", code="too_deep") from exc
    raw: bytes | memoryview = memoryview(env.payload)
    if raw[:1] == b'"':
        try:
            raw = _TEXT.decode(raw).encode("utf-8", "surrogatepass")
        except (msgspec.DecodeError, UnicodeError) as exc:
            raise CodecError(None, "payload", f"not a JSON text: {exc}", code="bad_line") from exc
    topic = topic_of(env.topic)
    return topic, decode(topic.kind, raw, max_bytes=max_bytes, max_samples=max_samples)


def read_chunk_row(
    line: bytes,
    topic_of: Callable[[str], _T | None],
    out: npt.NDArray[np.float64],
    max_bytes: int = DEFAULT_MAX_BYTES,
    max_samples: int = DEFAULT_MAX_SAMPLES,
) -> tuple[_T, float, float, int] | None:
    """:func:`read_record`'s ``abp`` route for a batch: ``(topic, t0, fs, n)``, samples in ``out``.

    The same line schema and kernel as :func:`read_record`, stopped before the
    :class:`AbpChunk` is made (a replay's batch takes the chunk as a row of
    arrays; making the message costs about a tenth of a replay's line): the
    samples are written to ``out[:n]``, the chunk's fields come back as read.
    It answers only for a line that :func:`read_record` would read as a valid
    chunk without ``seq``, of a topic ``topic_of`` knows (``None``: unknown);
    ``None`` for any other line and whenever in doubt: the caller then takes
    :func:`read_record`, which answers (or raises). Never raises.
    """
    if len(line) > max_bytes or type(line) is not bytes or not line.isascii():
        return None
    try:
        rec = _ABP_LINE.decode(line)
    except (msgspec.MsgspecError, RecursionError):
        return None
    w = rec.payload
    t0, fs = w.t0, w.fs
    if w.seq is not None or not _T0_LO <= t0 <= _T0_HI or not _FS_LO <= fs <= _FS_HI:
        return None  # (the rest of AbpChunk's rule: the kernel checks the samples)
    topic = topic_of(rec.topic)
    if topic is None or topic.kind != "abp":
        return None
    n = _numparse.parse_samples(
        line, out, _PRESSURE_LO, _PRESSURE_HI, min(max_samples, MAX_SAMPLES_PER_CHUNK)
    )
    if not 0 < n <= out.size:
        return None
    return topic, t0, fs, n


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
