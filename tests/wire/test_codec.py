"""Tests of streamproc.wire.codec: payload bytes to typed core messages."""

from __future__ import annotations

import dataclasses
import json
import math
import pickle
from typing import Any

import msgspec
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streamproc.core.protocol.messages import (
    DRUG_NAMES,
    AbpChunk,
    Ack,
    Drug,
    Infusion,
    Labs,
    Patient,
    Profile,
    RateUnit,
    Vitals,
    VitalsSource,
)
from streamproc.wire import codec
from streamproc.wire.codec import ERROR_CODES, INBOUND_KINDS, CodecError, decode, kinds

TS = 1732400000.0
FUZZ = settings(max_examples=300, deadline=None)

#: A valid example of each inbound kind, as in the wire contract.
VALID: dict[str, dict[str, Any]] = {
    "abp": {"t0": TS, "fs": 125.0, "samples": [82.1, 83.0, 85.5, 90.25], "seq": 7},
    "vitals": {"ts": TS, "source": "art", "sbp": 60, "dbp": 40, "map": 47, "hr": 112},
    "infusion": {
        "ts": TS,
        "drug": "norepinephrine",
        "rate": 0.25,
        "unit": "mcg/kg/min",
        "running": True,
    },
    "patient": {
        "ts": TS,
        "profile": "elderly",
        "age": 81,
        "weight_kg": 70,
        "map_target": 70,
        "crystalloid_ml": 1500,
    },
    "labs": {"ts": TS, "lactate": 3.1, "urine_ml_kg_h": 0.3, "scvo2": 64},
    "ack": {"ts": TS, "alarm_id": "bed03-hypotension-1", "by": "station-3"},
}
TYPES: dict[str, type] = {
    "abp": AbpChunk,
    "vitals": Vitals,
    "infusion": Infusion,
    "patient": Patient,
    "labs": Labs,
    "ack": Ack,
}


def dumps(obj: object) -> bytes:
    return json.dumps(obj).encode()


def with_(kind: str, **changes: Any) -> bytes:
    """The valid example of ``kind`` with some fields changed (``None`` removes one)."""
    obj = dict(VALID[kind])
    for key, value in changes.items():
        if value is None:
            obj.pop(key, None)
        else:
            obj[key] = value
    return dumps(obj)


def raw(kind: str, **changes: str) -> bytes:
    """The valid example of ``kind`` with fields replaced by raw JSON text."""
    obj = {k: json.dumps(v) for k, v in VALID[kind].items()}
    obj.update(changes)
    return ("{" + ",".join(f'"{k}":{v}' for k, v in obj.items()) + "}").encode()


class TestKinds:
    def test_kinds_are_the_contract_kinds(self) -> None:
        """kinds() lists the six inbound kinds of wire contract v1, in order."""
        assert kinds() == INBOUND_KINDS == ("abp", "vitals", "infusion", "patient", "labs", "ack")

    def test_every_kind_has_a_decoder(self) -> None:
        """Each listed kind has a decoder entry, and there are no extras."""
        assert tuple(codec._KINDS) == INBOUND_KINDS  # noqa: SLF001 - the decoder table itself

    @pytest.mark.parametrize("kind", INBOUND_KINDS)
    def test_the_core_message_is_the_schema(self, kind: str) -> None:
        """Each kind's wire Struct has the core message's fields, in its order: one schema."""
        wire = codec._KINDS[kind][0].type  # noqa: SLF001 - the decoder table itself
        names = [f.name for f in msgspec.structs.fields(wire)]
        message = TYPES[kind]
        if dataclasses.is_dataclass(message):
            assert names == [f.name for f in dataclasses.fields(message)]
        else:
            assert names == [f.name for f in msgspec.structs.fields(message)]


class TestDecodeValid:
    @pytest.mark.parametrize("kind", INBOUND_KINDS)
    def test_contract_example_decodes(self, kind: str) -> None:
        """The contract's example of each kind decodes into the matching core type."""
        msg = decode(kind, dumps(VALID[kind]))
        assert type(msg) is TYPES[kind]

    def test_abp_fields(self) -> None:
        """An abp chunk keeps t0, fs, seq and the samples as a read-only float64 array."""
        msg = decode("abp", dumps(VALID["abp"]))
        assert isinstance(msg, AbpChunk)
        assert (msg.t0, msg.fs, msg.seq) == (TS, 125.0, 7)
        assert msg.samples.dtype == np.float64
        assert msg.samples.tolist() == [82.1, 83.0, 85.5, 90.25]
        assert not msg.samples.flags.writeable

    def test_abp_seq_optional(self) -> None:
        """seq may be missing or null."""
        assert decode("abp", with_("abp", seq=None)).seq is None  # type: ignore[union-attr]
        assert decode("abp", raw("abp", seq="null")).seq is None  # type: ignore[union-attr]

    def test_ints_accepted_for_floats(self) -> None:
        """Integers are accepted wherever the contract has a float."""
        msg = decode("abp", b'{"t0": 1732400000, "fs": 125, "samples": [80, 81, 82]}')
        assert isinstance(msg, AbpChunk)
        assert msg.t0 == 1732400000.0
        assert type(msg.t0) is float
        assert type(msg.fs) is float
        assert msg.samples.dtype == np.float64
        assert msg.samples.tolist() == [80.0, 81.0, 82.0]

    def test_unknown_fields_ignored(self) -> None:
        """Extra fields of any type and depth are ignored."""
        payload = with_(
            "infusion", extra={"nested": [1, {"x": None}]}, note="hi", flag=True, n=1e300
        )
        msg = decode("infusion", payload)
        assert msg == Infusion(TS, Drug.NOREPINEPHRINE, 0.25, RateUnit.MCG_KG_MIN, running=True)

    def test_vitals_map_given(self) -> None:
        """A map sent by the monitor is the mean pressure."""
        msg = decode("vitals", dumps(VALID["vitals"]))
        assert isinstance(msg, Vitals)
        assert msg.source is VitalsSource.ART
        assert msg.mean_pressure == 47.0

    def test_vitals_map_computed(self) -> None:
        """Without map, the mean pressure is dbp + (sbp - dbp) / 3 (60/40 gives about 47)."""
        msg = decode("vitals", with_("vitals", map=None, source="nibp"))
        assert isinstance(msg, Vitals)
        assert msg.map is None
        assert msg.source is VitalsSource.NIBP
        assert msg.mean_pressure == pytest.approx(40 + 20 / 3)

    def test_vitals_all_numerics_optional(self) -> None:
        """Only ts and source are required; optional fields may be null."""
        msg = decode("vitals", b'{"ts": 1732400000, "source": "art", "hr": null}')
        assert msg == Vitals(TS, VitalsSource.ART)

    def test_infusion_defaults_and_concentration(self) -> None:
        """running defaults to true; concentration is carried for mL/h rates."""
        msg = decode(
            "infusion",
            with_("infusion", running=None, unit="mL/h", rate=5, concentration=64),
        )
        assert msg == Infusion(
            TS, Drug.NOREPINEPHRINE, 5.0, RateUnit.ML_H, running=True, concentration=64.0
        )

    def test_infusion_stopped(self) -> None:
        """running false is kept."""
        msg = decode("infusion", with_("infusion", running=False, drug="vasopressin"))
        assert isinstance(msg, Infusion)
        assert msg.running is False
        assert msg.drug is Drug.VASOPRESSIN

    def test_patient_fields(self) -> None:
        """Patient profile becomes the enum; absent fields stay None."""
        msg = decode("patient", dumps(VALID["patient"]))
        assert msg == Patient(TS, Profile.ELDERLY, 81.0, 70.0, 70.0, None, 1500.0, None)

    def test_patient_only_ts(self) -> None:
        """Every patient field but ts is optional."""
        assert decode("patient", b'{"ts": 1732400000.5}') == Patient(TS + 0.5)

    def test_labs_fields(self) -> None:
        """Labs keep their three markers."""
        assert decode("labs", dumps(VALID["labs"])) == Labs(TS, 3.1, 0.3, 64.0)

    def test_ack_fields_and_default_by(self) -> None:
        """An ack keeps alarm_id and by; by defaults to 'unknown' when missing or null."""
        assert decode("ack", dumps(VALID["ack"])) == Ack(TS, "bed03-hypotension-1", "station-3")
        assert decode("ack", with_("ack", by=None)) == Ack(TS, "bed03-hypotension-1", "unknown")
        assert decode("ack", raw("ack", by="null")) == Ack(TS, "bed03-hypotension-1", "unknown")

    def test_text_and_buffer_payloads(self) -> None:
        """str, bytearray and memoryview payloads decode like bytes."""
        data = dumps(VALID["labs"])
        expected = decode("labs", data)
        assert decode("labs", data.decode()) == expected
        assert decode("labs", bytearray(data)) == expected
        assert decode("labs", memoryview(data)) == expected

    def test_non_ascii_utf8_accepted(self) -> None:
        """Valid UTF-8 beyond ASCII is fine (here in an ack's by)."""
        msg = decode("ack", with_("ack", by="Pflegestation Süd"))
        assert isinstance(msg, Ack)
        assert msg.by == "Pflegestation Süd"

    def test_limits_are_inclusive(self) -> None:
        """A payload of exactly max_bytes and exactly max_samples samples is accepted."""
        data = dumps(VALID["abp"])
        assert decode("abp", data, max_bytes=len(data), max_samples=4).samples.size == 4  # type: ignore[union-attr]


_BIG = dumps({"t0": TS, "fs": 125.0, "samples": [80.0] * 11})

#: (id, kind, payload, decode kwargs, expected code, expected field)
BAD: list[tuple[str, str, bytes | str, dict[str, int], str, str | None]] = [
    ("not-json", "abp", b'{"t0": 1', {}, "not_json", None),
    ("empty-payload", "abp", b"", {}, "not_json", None),
    ("trailing-garbage", "abp", dumps(VALID["abp"]) + b" x", {}, "not_json", None),
    ("nan-literal", "abp", raw("abp", samples="[80, NaN]"), {}, "not_json", None),
    ("infinity-literal", "abp", raw("abp", fs="Infinity"), {}, "not_json", None),
    ("bom", "abp", b"\xef\xbb\xbf" + dumps(VALID["abp"]), {}, "not_json", None),
    ("not-utf8", "ack", with_("ack", by="x").replace(b'"x"', b'"\xff"'), {}, "not_utf8", None),
    (
        "lone-surrogate-text",
        "ack",
        '{"ts": 1732400000, "alarm_id": "\ud800"}',
        {},
        "not_utf8",
        None,
    ),
    ("array", "abp", b"[1, 2, 3]", {}, "not_object", None),
    ("null", "vitals", b"null", {}, "not_object", None),
    ("string", "labs", b'"labs"', {}, "not_object", None),
    ("number", "ack", b"3", {}, "not_object", None),
    ("missing-t0", "abp", with_("abp", t0=None), {}, "missing_field", "t0"),
    ("missing-samples", "abp", with_("abp", samples=None), {}, "missing_field", "samples"),
    ("missing-ts", "labs", with_("labs", ts=None), {}, "missing_field", "ts"),
    ("missing-source", "vitals", with_("vitals", source=None), {}, "missing_field", "source"),
    ("missing-rate", "infusion", with_("infusion", rate=None), {}, "missing_field", "rate"),
    ("missing-alarm-id", "ack", with_("ack", alarm_id=None), {}, "missing_field", "alarm_id"),
    ("sample-null", "abp", raw("abp", samples="[80, null, 81]"), {}, "not_finite", "samples"),
    ("sample-1e400", "abp", raw("abp", samples="[80, 1e400]"), {}, "not_finite", "samples"),
    ("t0-1e400", "abp", raw("abp", t0="1e400"), {}, "not_finite", "t0"),
    ("huge-int-rate", "infusion", raw("infusion", rate="1" + "0" * 400), {}, "not_finite", "rate"),
    ("bool-fs", "abp", raw("abp", fs="true"), {}, "wrong_type", "fs"),
    ("bool-sample", "abp", raw("abp", samples="[80, false]"), {}, "wrong_type", "samples"),
    ("bool-sbp", "vitals", raw("vitals", sbp="true"), {}, "wrong_type", "sbp"),
    ("string-t0", "abp", raw("abp", t0='"1732400000"'), {}, "wrong_type", "t0"),
    ("string-sample", "abp", raw("abp", samples='[80, "81"]'), {}, "wrong_type", "samples"),
    ("string-hr", "vitals", raw("vitals", hr='"fast"'), {}, "wrong_type", "hr"),
    ("samples-object", "abp", raw("abp", samples='{"0": 80}'), {}, "wrong_type", "samples"),
    ("samples-nested", "abp", raw("abp", samples="[[80]]"), {}, "wrong_type", "samples"),
    ("seq-float", "abp", raw("abp", seq="1.5"), {}, "wrong_type", "seq"),
    ("seq-bool", "abp", raw("abp", seq="true"), {}, "wrong_type", "seq"),
    ("running-int", "infusion", raw("infusion", running="1"), {}, "wrong_type", "running"),
    ("drug-number", "infusion", raw("infusion", drug="1"), {}, "wrong_type", "drug"),
    (
        "peritonitis-str",
        "patient",
        raw("patient", peritonitis='"yes"'),
        {},
        "wrong_type",
        "peritonitis",
    ),
    ("lactate-bool", "labs", raw("labs", lactate="false"), {}, "wrong_type", "lactate"),
    ("alarm-id-number", "ack", raw("ack", alarm_id="12"), {}, "wrong_type", "alarm_id"),
    ("fs-0", "abp", with_("abp", fs=0), {}, "out_of_range", "fs"),
    ("fs-negative", "abp", with_("abp", fs=-1), {}, "out_of_range", "fs"),
    ("fs-underflow", "abp", raw("abp", fs="1e-400"), {}, "out_of_range", "fs"),
    ("fs-too-high", "abp", with_("abp", fs=5000), {}, "out_of_range", "fs"),
    ("t0-zero", "abp", with_("abp", t0=0), {}, "out_of_range", "t0"),
    ("t0-milliseconds", "abp", with_("abp", t0=TS * 1000), {}, "out_of_range", "t0"),
    ("sample-impossible", "abp", with_("abp", samples=[80, 1000]), {}, "out_of_range", "samples"),
    ("seq-negative", "abp", with_("abp", seq=-1), {}, "out_of_range", "seq"),
    ("seq-huge", "abp", with_("abp", seq=2**64), {}, "out_of_range", "seq"),
    ("rate-negative", "infusion", with_("infusion", rate=-0.1), {}, "out_of_range", "rate"),
    (
        "concentration-0",
        "infusion",
        with_("infusion", concentration=0),
        {},
        "out_of_range",
        "concentration",
    ),
    ("sbp-negative", "vitals", with_("vitals", sbp=-5), {}, "out_of_range", "sbp"),
    ("hr-impossible", "vitals", with_("vitals", hr=1000), {}, "out_of_range", "hr"),
    ("age-200", "patient", with_("patient", age=200), {}, "out_of_range", "age"),
    ("scvo2-101", "labs", with_("labs", scvo2=101), {}, "out_of_range", "scvo2"),
    ("by-too-long", "ack", with_("ack", by="x" * 201), {}, "out_of_range", "by"),
    ("sbp-below-dbp", "vitals", with_("vitals", sbp=40, dbp=60), {}, "inconsistent", "sbp"),
    ("empty-samples", "abp", with_("abp", samples=[]), {}, "empty", "samples"),
    ("empty-alarm-id", "ack", with_("ack", alarm_id=""), {}, "empty", "alarm_id"),
    (
        "unknown-drug",
        "infusion",
        with_("infusion", drug="noradrenalin"),
        {},
        "unknown_value",
        "drug",
    ),
    ("unknown-unit", "infusion", with_("infusion", unit="mcg/kg/h"), {}, "unknown_value", "unit"),
    (
        "unknown-profile",
        "patient",
        with_("patient", profile="septic"),
        {},
        "unknown_value",
        "profile",
    ),
    ("unknown-source", "vitals", with_("vitals", source="cuff"), {}, "unknown_value", "source"),
    ("too-large", "abp", dumps(VALID["abp"]), {"max_bytes": 20}, "too_large", None),
    ("too-large-text", "abp", dumps(VALID["abp"]).decode(), {"max_bytes": 20}, "too_large", None),
    (
        "too-large-multibyte",
        "ack",
        with_("ack", by="ü" * 20).decode(),
        {"max_bytes": 70},
        "too_large",
        None,
    ),
    ("too-many-samples", "abp", _BIG, {"max_samples": 10}, "too_large", "samples"),
    ("too-deep", "abp", raw("abp", x="[" * 5000 + "]" * 5000), {}, "too_deep", None),
]


class TestDrugNames:
    """Every name of the one table (``DRUG_NAMES``) decodes to its drug, in any case."""

    @pytest.mark.parametrize(
        ("name", "drug"),
        [
            ("noradrenaline", Drug.NOREPINEPHRINE),
            ("Noradrenaline", Drug.NOREPINEPHRINE),
            ("Norepinephrine", Drug.NOREPINEPHRINE),
            (" LEVOPHED ", Drug.NOREPINEPHRINE),
            ("adrenaline", Drug.EPINEPHRINE),
            ("argipressin", Drug.VASOPRESSIN),
            ("Vasostrict", Drug.VASOPRESSIN),
            ("neo-synephrine", Drug.PHENYLEPHRINE),
        ],
    )
    def test_name(self, name: str, drug: Drug) -> None:
        """International, brand and differently cased names are the contract's drug."""
        msg = decode("infusion", with_("infusion", drug=name))
        assert isinstance(msg, Infusion)
        assert msg.drug is drug

    def test_every_table_name_decodes(self) -> None:
        """No name in the table is refused by the codec."""
        for name, drug in DRUG_NAMES.items():
            msg = decode("infusion", with_("infusion", drug=name.upper()))
            assert isinstance(msg, Infusion)
            assert msg.drug is drug


class TestNoFreeTextInReasons:
    @pytest.mark.parametrize(
        ("kind", "field"),
        [("patient", "profile"), ("infusion", "drug"), ("infusion", "unit"), ("vitals", "source")],
    )
    def test_unknown_value_is_not_echoed(self, kind: str, field: str) -> None:
        """An unknown value of a free-text field (an EHR may put a name there) never appears
        in the error's reason, which the service logs: only its length does."""
        with pytest.raises(CodecError) as info:
            decode(kind, with_(kind, **{field: "Jane Q. Doe, MRN 0042"}))
        assert info.value.code == "unknown_value"
        assert "Jane" not in str(info.value)
        assert "MRN" not in str(info.value)
        assert "21 characters" in info.value.reason


class TestDecodeInvalid:
    @pytest.mark.parametrize(
        ("kind", "payload", "kwargs", "code", "field"),
        [case[1:] for case in BAD],
        ids=[case[0] for case in BAD],
    )
    def test_bad_payload(
        self,
        kind: str,
        payload: bytes | str,
        kwargs: dict[str, int],
        code: str,
        field: str | None,
    ) -> None:
        """Each bad payload raises CodecError with the expected code, kind and field."""
        with pytest.raises(CodecError) as info:
            decode(kind, payload, **kwargs)
        err = info.value
        assert (err.code, err.field) == (code, field), str(err)
        assert err.code in ERROR_CODES
        assert err.kind == kind
        assert err.reason
        prefix = f"{kind}.{field}" if field else kind
        assert str(err) == f"{prefix}: {err.reason}"

    def test_too_large_checked_before_decoding(self) -> None:
        """A payload over max_bytes is rejected as too large even if it is not JSON."""
        with pytest.raises(CodecError) as info:
            decode("abp", b"\xff" * 101, max_bytes=100)
        assert info.value.code == "too_large"
        assert "101" in info.value.reason
        assert "100" in info.value.reason

    def test_unknown_kind_lists_kinds(self) -> None:
        """An unknown kind is rejected with code unknown_kind and the valid kinds listed."""
        with pytest.raises(CodecError) as info:
            decode("alarms", dumps(VALID["ack"]))
        err = info.value
        assert (err.code, err.kind, err.field) == ("unknown_kind", None, None)
        assert "abp, vitals, infusion, patient, labs, ack" in err.reason

    @pytest.mark.parametrize(
        ("kind", "field", "value", "choices"),
        [
            ("infusion", "drug", "noradrenalin", [d.value for d in Drug]),
            ("infusion", "unit", "mcg/h", [u.value for u in RateUnit]),
            ("patient", "profile", "septic", [p.value for p in Profile]),
            ("vitals", "source", "cuff", [s.value for s in VitalsSource]),
        ],
    )
    def test_unknown_enum_lists_choices(
        self, kind: str, field: str, value: str, choices: list[str]
    ) -> None:
        """An unknown enum value is named by its field and length (never echoed: free text
        may name a person) and every valid choice is listed."""
        with pytest.raises(CodecError) as info:
            decode(kind, with_(kind, **{field: value}))
        reason = info.value.reason
        assert f"unknown {field} (a text of {len(value)} characters, not shown)" in reason
        assert value not in reason
        assert reason.endswith("expected one of: " + ", ".join(choices))

    def test_wrong_type_reason_is_readable(self) -> None:
        """A wrong type says what was expected and what came, with the sample index."""
        with pytest.raises(CodecError) as info:
            decode("abp", raw("abp", samples='[80, 81, "82"]'))
        assert info.value.reason == "expected a number, got str (at samples[2])"

    def test_null_sample_reason_has_index(self) -> None:
        """A null sample is reported with its index."""
        with pytest.raises(CodecError) as info:
            decode("abp", raw("abp", samples="[80, null]"))
        assert "samples[1]" in info.value.reason

    def test_non_payload_type(self) -> None:
        """A payload that is neither bytes nor text is a CodecError, not a TypeError."""
        with pytest.raises(CodecError) as info:
            decode("abp", None)  # type: ignore[arg-type]
        assert info.value.code == "not_json"


class TestCodecError:
    def test_is_value_error_with_attributes(self) -> None:
        """CodecError is a ValueError carrying code, kind, field and reason."""
        err = CodecError("abp", "fs", "expected a number", code="wrong_type")
        assert isinstance(err, ValueError)
        assert (err.code, err.kind, err.field, err.reason) == (
            "wrong_type",
            "abp",
            "fs",
            "expected a number",
        )
        assert str(err) == "abp.fs: expected a number"

    def test_message_without_kind_or_field(self) -> None:
        """Without kind and field the message is the reason alone."""
        assert str(CodecError(None, None, "broken", code="not_json")) == "broken"

    def test_pickle_round_trip(self) -> None:
        """A CodecError survives pickling (e.g. across a process pool)."""
        err = CodecError("abp", "samples", "must not be empty", code="empty")
        copy = pickle.loads(pickle.dumps(err))  # noqa: S301 (our own object)
        assert type(copy) is CodecError
        assert (copy.code, copy.kind, copy.field, copy.reason) == (
            "empty",
            "abp",
            "samples",
            "must not be empty",
        )
        assert str(copy) == str(err)


# --------------------------------------------------------------------------- fuzzing

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=20)
)
json_values = st.recursive(
    json_scalars,
    lambda children: (
        st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=10), children, max_size=5)
    ),
    max_leaves=20,
)
FIELD_NAMES = sorted({name for example in VALID.values() for name in example} | {
    "concentration", "sbp_target", "peritonitis", "map",
})  # fmt: skip
# Values near what the fields hold, so that fuzzing reaches the core's checks.
plausible = (
    json_values
    | st.floats(min_value=-1e10, max_value=1e10)
    | st.sampled_from([TS, 0, -1, 125, 0.0, 1e400, 2**64])
    | st.sampled_from(
        [e.value for enum in (Drug, RateUnit, Profile, VitalsSource) for e in enum] + ["", "x"]
    )
    | st.lists(st.floats(min_value=-200, max_value=600) | st.none(), max_size=30)
)
field_dicts = st.dictionaries(
    st.sampled_from(FIELD_NAMES) | st.text(max_size=8), plausible, max_size=10
)


def check_decodes_or_codec_error(kind: str, payload: bytes | str) -> None:
    """decode returns a message of the kind's type or raises CodecError, nothing else."""
    try:
        msg = decode(kind, payload)
    except CodecError as err:
        error: CodecError | None = err
    else:
        error = None
        assert type(msg) is TYPES[kind]
    if error is not None:
        assert error.code in ERROR_CODES
        assert error.kind == kind
        assert str(error).startswith(f"{kind}")


class TestDecodeFuzz:
    @FUZZ
    @given(kind=st.sampled_from(INBOUND_KINDS), payload=st.binary(max_size=300))
    def test_arbitrary_bytes(self, kind: str, payload: bytes) -> None:
        """Arbitrary bytes never raise anything but CodecError."""
        check_decodes_or_codec_error(kind, payload)

    @FUZZ
    @given(kind=st.sampled_from(INBOUND_KINDS), payload=st.text(max_size=200))
    def test_arbitrary_text(self, kind: str, payload: str) -> None:
        """Arbitrary text (lone surrogates included) never raises anything but CodecError."""
        check_decodes_or_codec_error(kind, payload)

    @FUZZ
    @given(kind=st.sampled_from(INBOUND_KINDS), value=json_values)
    def test_arbitrary_json(self, kind: str, value: object) -> None:
        """Arbitrary JSON values (NaN/Infinity tokens included) decode or raise CodecError."""
        check_decodes_or_codec_error(kind, json.dumps(value).encode())

    @FUZZ
    @given(kind=st.sampled_from(INBOUND_KINDS), obj=field_dicts)
    def test_objects_with_real_field_names(self, kind: str, obj: dict[str, object]) -> None:
        """Objects with the contract's field names and random values decode or raise CodecError."""
        check_decodes_or_codec_error(kind, json.dumps(obj).encode())

    @FUZZ
    @given(
        kind=st.sampled_from(INBOUND_KINDS),
        changes=st.dictionaries(st.sampled_from(FIELD_NAMES), plausible, max_size=3),
    )
    def test_valid_examples_with_random_changes(
        self, kind: str, changes: dict[str, object]
    ) -> None:
        """A valid example with a few fields set to random values decodes or raises CodecError."""
        check_decodes_or_codec_error(kind, json.dumps({**VALID[kind], **changes}).encode())

    @FUZZ
    @given(
        t0=st.floats(min_value=946_684_800.0, max_value=7_258_118_400.0),
        fs=st.floats(min_value=1.0, max_value=2000.0),
        samples=st.lists(st.floats(min_value=-100.0, max_value=500.0), min_size=1, max_size=200),
        seq=st.none() | st.integers(min_value=0, max_value=2**63 - 1),
    )
    def test_valid_abp_round_trip(
        self, t0: float, fs: float, samples: list[float], seq: int | None
    ) -> None:
        """Any valid chunk encoded as JSON decodes to exactly the same numbers."""
        obj: dict[str, object] = {"t0": t0, "fs": fs, "samples": samples}
        if seq is not None:
            obj["seq"] = seq
        msg = decode("abp", json.dumps(obj).encode())
        assert isinstance(msg, AbpChunk)
        assert (msg.t0, msg.fs, msg.seq) == (t0, fs, seq)
        assert msg.samples.tolist() == samples
        assert all(math.isfinite(x) for x in msg.samples.tolist())
