"""Tests of streamproc.wire._numparse: an ``abp`` chunk's samples parsed from its JSON bytes.

The compiled kernel must give, bit for bit, the float64 values that ``msgspec``
gives the same text (``list[float]``, then an array), or answer that it is not
sure; it must be sure of what it is meant to be sure of (the ordinary samples
of a monitor), so that a kernel that always gave up would fail here too. The
codec's fast paths built on it must answer exactly as the exact path does.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable
from typing import Any

import msgspec
import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from simulators.waveform import synthesize_abp
from streamproc.core.protocol.messages import MAX_SAMPLES_PER_CHUNK, PRESSURE_LIMITS
from streamproc.wire import _numparse, codec
from streamproc.wire._numparse import OUT_OF_RANGE, UNSURE, UNSURE_DOC, parse_samples
from streamproc.wire.codec import CodecError, decode, read_record
from streamproc.wire.topics import parse_inbound
from tests.wire.test_codec import BAD, TS, VALID, field_dicts, plausible
from tests.wire.test_codec_fastpath import line_of, outcome

FUZZ = settings(max_examples=300, deadline=None)
INF = math.inf
LO, HI = PRESSURE_LIMITS
#: The JSON number grammar (RFC 8259).
NUMBER_RE = re.compile(r"-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?")
#: The compiled functions of the module (``.py_func`` is each one's Python source).
JITTED = (
    "_peek",
    "_is_space",
    "_is_digit",
    "_is_key",
    "_skip_space",
    "_digits",
    "_exponent",
    "_value",
    "_array",
    "parse_samples",
)
TYPICAL = b"[72.43,71.2,-3,0.5]"


def doc_of(array: bytes) -> bytes:
    """An ``abp`` payload around a ``samples`` value given as JSON text."""
    return b'{"t0":1732400000.0,"fs":125.0,"samples":' + array + b',"seq":7}'


def kernel(
    doc: bytes,
    lo: float = -INF,
    hi: float = INF,
    max_n: int = MAX_SAMPLES_PER_CHUNK,
    fn: Callable[..., int] = parse_samples,
) -> tuple[int, np.ndarray | None]:
    """The kernel's status and values, as the codec calls it: a count first, then the values."""
    n = fn(doc, np.empty(0), lo, hi, max_n)
    if n <= 0:
        return n, None
    out = np.full(n, np.nan)
    assert fn(doc, out, lo, hi, max_n) == n
    return n, out


def reference(array: bytes) -> np.ndarray | None:
    """What msgspec makes of the array (``None``: it refuses it)."""
    try:
        return np.asarray(msgspec.json.decode(array, type=list[float]), dtype=np.float64)
    except msgspec.MsgspecError:
        return None


def bits(a: np.ndarray) -> list[int]:
    return a.view(np.int64).tolist()  # -0.0 and +0.0 differ, as do any two other doubles


def sure_of(token: str) -> bool:
    """Whether the kernel is meant to be sure of one JSON number (Clinger's fast path).

    At most 18 digits (a leading ``0`` counts), a mantissa ``m <= 2**53`` and a decimal
    exponent ``e``: ``-22 <= e <= 0``, or ``0 < e <= 18`` with ``m * 10**e`` an integer
    ``<= 2**53``.
    """
    m = NUMBER_RE.fullmatch(token)
    assert m is not None, token
    whole, frac, exp = m[1], (m[2] or ".")[1:], m[3]
    digits = whole + frac
    e = -len(frac) + (int(exp[1:]) if exp else 0)
    mant = int(digits)
    if len(digits) > 18 or mant > 2**53:
        return False
    if e <= 0:
        return e >= -22
    return e <= 18 and mant * 10**e <= 2**53


def check_array(array: bytes, tokens: list[str] | None = None) -> int:
    """The kernel agrees with msgspec on ``array`` (or is unsure); returns its status.

    With ``tokens`` (the array's numbers), it must be sure exactly when it is of each.
    """
    n, values = kernel(doc_of(array))
    ref = reference(array)
    if n > 0:
        assert ref is not None
        assert values is not None
        assert bits(values) == bits(ref)
    else:
        assert n == UNSURE
    if tokens is not None:
        assert (n > 0) == (bool(tokens) and all(sure_of(t) for t in tokens)), (array, n)
    return n


@pytest.fixture
def interpreted(monkeypatch: pytest.MonkeyPatch) -> None:
    """The module's functions as the interpreter runs their source (``.py_func``)."""
    for name in JITTED:
        monkeypatch.setattr(_numparse, name, getattr(_numparse, name).py_func)


def interpreted_kernel(doc: bytes, lo: float = -INF, hi: float = INF, max_n: int = 10**6) -> Any:
    with pytest.MonkeyPatch.context() as mp:
        for name in JITTED:
            mp.setattr(_numparse, name, getattr(_numparse, name).py_func)
        return kernel(doc, lo, hi, max_n, fn=_numparse.parse_samples)


# --------------------------------------------------------------------------- numbers

CORNERS = [
    "0", "-0", "0.0", "-0.0", "-0e0", "-0E+0", "0e5", "0E-5", "-0.0e5", "0e18", "0e19",
    "0e400", "0e99999999999", "0.0e-400", "1E2", "1e-0", "1e+2", "1e0002", "2.5e-3",
    "100000000000000000000", "10000000000000000", "9007199254740992", "9007199254740993",
    "900719925474099.3", "123456789012345678", "1234567890123456789", "0.1",
    "0.30000000000000004", "1e15", "1e16", "9e15", "1e22", "1e-22", "1e-23", "1e23",
    "4.9e-324", "5e-324", "2.2250738585072014e-308", "1.7976931348623157e308", "1e400",
    "-1e400", "1e-400", "-1e-400", "0.0000000000000000000001", "0.00000000000000000000001",
    "72.43", "-3", "0.5", "500", "-100", "500.0000000000001", "-100.00000000000001",
    "1.00000000000000000", "10.000000000000000000", "000",
]  # fmt: skip


class TestNumbers:
    """One number at a time: msgspec's value to the bit, or unsure."""

    @pytest.mark.parametrize("token", [t for t in CORNERS if NUMBER_RE.fullmatch(t)])
    def test_corner_cases(self, token: str) -> None:
        """Signs of zero, integers vs floats, the fast path's edges, values msgspec refuses."""
        check_array(f"[{token}]".encode(), [token])

    @pytest.mark.parametrize(
        ("token", "value"),
        [("-0", 0.0), ("-0.0", -0.0), ("-0e0", -0.0), ("-0.0e5", -0.0), ("-5", -5.0)],
    )
    def test_sign_of_zero_as_msgspec(self, token: str, value: float) -> None:
        """A JSON integer -0 is int 0 to msgspec (+0.0); -0.0 and -0e0 are floats (-0.0)."""
        n, values = kernel(doc_of(f"[{token}]".encode()))
        assert n == 1
        assert values is not None
        assert bits(values) == bits(np.array([value]))

    def test_typical_values_are_parsed(self) -> None:
        """The ordinary case is the kernel's: a monitor's samples are never "unsure"."""
        n, values = kernel(doc_of(TYPICAL))
        assert n == 4
        assert values is not None
        assert values.tolist() == [72.43, 71.2, -3.0, 0.5]

    def test_simulator_output_is_parsed(self) -> None:
        """Samples as the simulators write them (hundredths, -0.0 included) take the fast path."""
        x = np.round(synthesize_abp(duration_s=8, sbp=125.0, dbp=72.0, fs=125.0, seed=5), 2)
        samples = [*x.tolist(), -0.0, 0.0, -12.5]
        array = json.dumps(samples).encode()
        n, values = kernel(doc_of(array), LO, HI)
        assert n == len(samples)
        assert values is not None
        assert bits(values) == bits(np.asarray(samples))

    @FUZZ
    @given(x=st.floats(allow_nan=False, allow_infinity=False))
    @example(x=-0.0)
    @example(x=5e-324)
    @example(x=1.7976931348623157e308)
    def test_repr_of_any_float(self, x: float) -> None:
        """Any finite float written as Python (and json) writes it."""
        check_array(f"[{x!r}]".encode(), [repr(x)])

    @FUZZ
    @given(x=st.floats(allow_nan=False, allow_infinity=False), digits=st.integers(1, 17))
    def test_printf_g_of_any_float(self, x: float, digits: int) -> None:
        """Any finite float written with %.Ng (fewer digits, exponents, "-0")."""
        token = "%.*g" % (digits, x)  # noqa: UP031 - printf's %g is the point here
        check_array(f"[{token}]".encode(), [token])

    @FUZZ
    @given(x=st.floats(min_value=-200, max_value=600), places=st.integers(0, 6))
    def test_rounded_pressures(self, x: float, places: int) -> None:
        """Pressures rounded to a few places, the monitors' own output, are all parsed."""
        token = repr(round(x, places))
        assert check_array(f"[{token}]".encode(), [token]) == 1

    @FUZZ
    @given(i=st.integers(min_value=-(10**25), max_value=10**25))
    @example(i=2**53)
    @example(i=2**53 + 1)
    @example(i=-(2**63))
    def test_integers(self, i: int) -> None:
        """JSON integers, small and beyond 2**53 and int64."""
        check_array(f"[{i}]".encode(), [str(i)])

    @FUZZ
    @given(token=st.from_regex(NUMBER_RE, fullmatch=True))
    def test_any_json_number(self, token: str) -> None:
        """Any text of the JSON number grammar (long digit strings, odd exponents)."""
        check_array(f"[{token}]".encode(), [token])

    @FUZZ
    @given(
        whole=st.integers(0, 10**20),
        frac=st.text("0123456789", max_size=20),
        exp=st.integers(-400, 400),
        marker=st.sampled_from(["e", "E", "e+", "E-0"]),
        neg=st.booleans(),
    )
    def test_with_exponents(self, whole: int, frac: str, exp: int, marker: str, neg: bool) -> None:
        """Mantissas with any fraction and exponent."""
        sign = "-" if neg else ""
        exp_text = f"{marker}{exp}" if marker in {"e", "E"} or exp >= 0 else f"e{exp}"
        token = f"{sign}{whole}{'.' + frac if frac else ''}{exp_text}"
        if not NUMBER_RE.fullmatch(token):  # "E-0" followed by a sign
            return
        check_array(f"[{token}]".encode(), [token])


# --------------------------------------------------------------------------- arrays

json_space = st.text(" \t\n\r", max_size=3)
ordinary = st.one_of(
    st.builds(lambda x: repr(round(x, 2)), st.floats(min_value=-100, max_value=500)),
    st.builds(str, st.integers(-100, 500)),
    st.from_regex(NUMBER_RE, fullmatch=True),
    st.builds(repr, st.floats(allow_nan=False, allow_infinity=False)),
)


class TestArrays:
    """Whole arrays: whitespace, separators, anything that is not a list of numbers."""

    @FUZZ
    @given(
        tokens=st.lists(ordinary, min_size=1, max_size=40),
        spaces=st.lists(json_space, min_size=82, max_size=82),
    )
    def test_arrays_with_whitespace(self, tokens: list[str], spaces: list[str]) -> None:
        """Any array of numbers with JSON whitespace around every token."""
        parts = [spaces[0], "["]
        for k, token in enumerate(tokens):
            parts += [spaces[2 * k + 1], token, spaces[2 * k + 2], ","]
        parts[-1] = "]"
        parts.append(spaces[-1])
        check_array("".join(parts).encode(), tokens)

    @pytest.mark.parametrize(
        "array",
        [
            b"[]", b"[ ]", b"[null]", b"[1,null]", b'["1"]', b"[true]", b"[false]", b"[[1]]",
            b"[{}]", b"{}", b"null", b"1", b'"x"', b"[1,]", b"[,1]", b"[1 2]", b"[01]", b"[-01]",
            b"[1.]", b"[.5]", b"[-]", b"[1e]", b"[1e+]", b"[--1]", b"[+1]", b"[1", b"[1,", b"[",
            b"[NaN]", b"[Infinity]", b"[-Infinity]", b"[1x]", b"[0x10]", b"[1.5.5]", b"[1e5e5]",
            b"[\x001]", b"[1\x00]", b"[\xc2\xa01]",
        ],
    )  # fmt: skip
    def test_anything_else_is_unsure(self, array: bytes) -> None:
        """Empty arrays, other types, and (defensively) text that is not JSON: unsure."""
        for doc in (doc_of(array), b'{"samples":' + array):  # cut short: no reading past it
            assert kernel(doc)[0] == UNSURE
            assert interpreted_kernel(doc)[0] == UNSURE

    @pytest.mark.parametrize(
        ("array", "status"),
        [
            (b"[-100, 500, 0]", 3),
            (b"[-100.0, 500.0]", 2),
            (b"[80, 500.0000000000001]", OUT_OF_RANGE),
            (b"[-100.0000000001]", OUT_OF_RANGE),
            (b"[-100.00000000000001]", UNSURE),  # 17 digits: beyond 2**53
            (b"[1000, null]", OUT_OF_RANGE),  # the first doubt decides
            (b"[null, 1000]", UNSURE),
            (b"[80, 1e400]", UNSURE),
        ],
    )
    def test_range_is_inclusive(self, array: bytes, status: int) -> None:
        """Values outside [lo, hi] give OUT_OF_RANGE; the limits themselves are in range."""
        assert kernel(doc_of(array), LO, HI)[0] == status

    @pytest.mark.parametrize(("max_n", "status"), [(3, 3), (4, 3), (2, UNSURE), (0, UNSURE)])
    def test_max_n(self, max_n: int, status: int) -> None:
        """More values than max_n: unsure (the exact path says too_large)."""
        assert kernel(doc_of(b"[1,2,3]"), max_n=max_n)[0] == status
        assert interpreted_kernel(doc_of(b"[1,2,3]"), max_n=max_n)[0] == status

    @pytest.mark.parametrize("size", [0, 1, 2, 3, 4, 10])
    def test_out_of_another_size(self, size: int) -> None:
        """The count comes back whatever ``out``'s size; ``out`` is written only within it."""
        out = np.full(size, 9.0)
        assert parse_samples(doc_of(b"[1,2,3]"), out, -INF, INF, 100) == 3
        assert out.tolist() == ([1.0, 2.0, 3.0] + [9.0] * size)[:size]


# --------------------------------------------------------------------------- documents


class TestDocument:
    """The ``samples`` key is found only where there can be no doubt which one it is."""

    @pytest.mark.parametrize(
        "doc",
        [
            b'{"samples":[1,2]}',
            b'{"samples" : [1,2] , "t0": 1}',
            b'\n{ "t0" : 1 ,\t"samples"\r\n:\n[ 1 , 2 ] }\n',
            b'{"t0":1,"x":{"a":[{"b":"sample"}]},"samples":[1,2],"y":"s\xc3\xbcd"}',
            b'{"topic":"icu/w/b/abp","payload":{"t0":1,"samples":[1,2]}}',
        ],
    )
    def test_key_found(self, doc: bytes) -> None:
        """Anywhere in the document, whitespace around the colon, inside an envelope."""
        for n, values in (kernel(doc), interpreted_kernel(doc)):
            assert n == 2
            assert values is not None
            assert values.tolist() == [1.0, 2.0]

    @pytest.mark.parametrize(
        "doc",
        [
            b'{"t0":1}',
            b"[1,2]",
            b'{"samples":[1],"samples":[2]}',  # msgspec type-checks both, keeps the last
            b'{"samples":["x"],"samples":[2]}',
            b'{"sampl\\u0065s":["x"],"samples":[2]}',  # the same key, escaped
            b'{"samples":[2],"sampl\\u0065s":[3]}',
            b'{"note":"a\\"b","samples":[2]}',  # any backslash
            b'{"samples":[2],"note":"\\n"}',
            b'{"x":"samples","samples":[2]}',  # the text, not the key
            b'{"samples":[2],"x":["samples"]}',
            b'{"x":{"samples":[1]},"samples":[2]}',  # a nested key
            b'{"samples":[2],"x":{"samples":"y"}}',
            b'{"x":"samples"}',
        ],
    )
    def test_doubtful_documents(self, doc: bytes) -> None:
        """No key, a second ``"samples"`` anywhere, or a backslash anywhere: UNSURE_DOC
        (or UNSURE, when the first doubt is a value)."""
        status = UNSURE if b'"samples":["x"]' in doc else UNSURE_DOC
        assert kernel(doc)[0] == status
        assert interpreted_kernel(doc)[0] == status


# --------------------------------------------------------------------------- compiled vs Python

documents = st.one_of(
    st.builds(
        lambda tokens, sep: doc_of(("[" + sep.join(tokens) + "]").encode()),
        st.lists(ordinary, max_size=12),
        st.sampled_from([",", " , ", ",\n"]),
    ),
    st.builds(lambda v: json.dumps(v).encode(), field_dicts),
    st.builds(lambda v: doc_of(json.dumps(v).encode()), plausible),
    st.binary(max_size=60).map(lambda b: doc_of(b"[" + b)),
)


class TestCompiledMatchesInterpreted:
    """numba's compiled kernel computes what its Python source says."""

    @FUZZ
    @given(doc=documents)
    def test_same_answers(self, doc: bytes) -> None:
        """Same status and same values (bit for bit) from ``.py_func`` and the compiled code."""
        n, values = kernel(doc, LO, HI, 10)
        n_py, values_py = interpreted_kernel(doc, LO, HI, 10)
        assert n_py == n
        assert (values is None) == (values_py is None)
        if values is not None:
            assert bits(values_py) == bits(values)

    @pytest.mark.parametrize("token", CORNERS)
    def test_same_answers_corners(self, token: str) -> None:
        """The corner numbers, interpreted and compiled."""
        doc = doc_of(f"[{token}, 1]".encode())
        n, values = kernel(doc)
        n_py, values_py = interpreted_kernel(doc)
        assert n_py == n
        if values is not None:
            assert bits(values_py) == bits(values)

    def test_every_compiled_function_is_listed(self) -> None:
        """JITTED names every compiled function, so that "interpreted" leaves none compiled."""
        compiled = {name for name, f in vars(_numparse).items() if hasattr(f, "py_func")}
        assert compiled == set(JITTED)

    def test_interpreted_fixture_really_interprets(self, interpreted: None) -> None:
        """With the fixture, every kernel function is the plain Python one."""
        for name in JITTED:
            assert not hasattr(getattr(_numparse, name), "py_func")
        assert kernel(doc_of(TYPICAL), fn=_numparse.parse_samples)[0] == 4


# --------------------------------------------------------------------------- the codec


def exact(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """``fn(*args)`` with the kernel switched off: the codec's exact (msgspec-only) path."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(codec, "_parse_samples", lambda doc, max_n, out=None: None)
        return fn(*args, **kwargs)


def record_outcome(line: bytes, max_samples: int = codec.DEFAULT_MAX_SAMPLES) -> Any:
    try:
        topic, _ = read_record(line, parse_inbound, max_samples=max_samples)
    except CodecError as err:
        topic = err.code
    return topic, outcome(lambda: read_record(line, parse_inbound, max_samples=max_samples)[1])


def check_same(payload: bytes, **limits: int) -> None:
    """decode and the record path answer with and without the kernel alike."""
    assert outcome(decode, "abp", payload, **limits) == exact(
        outcome, decode, "abp", payload, **limits
    )
    line = line_of(payload)
    max_samples = limits.get("max_samples", codec.DEFAULT_MAX_SAMPLES)
    assert record_outcome(line, max_samples) == exact(record_outcome, line, max_samples)


def payload_with(array: bytes, **fields: str) -> bytes:
    obj = {"t0": json.dumps(TS), "fs": "125", "samples": array.decode(), **fields}
    return ("{" + ",".join(f'"{k}":{v}' for k, v in obj.items()) + "}").encode()


HOSTILE = [
    payload_with(b"[80, 81]"),
    payload_with(b"[-0, -0.0, 0]"),
    payload_with(b"[80, 1000]"),
    payload_with(b"[80, -100.5]"),
    payload_with(b"[80, 1e400]"),
    payload_with(b"[80, null]"),
    payload_with(b'[80, "81"]'),
    payload_with(b"[80, true]"),
    payload_with(b"[80, [81]]"),
    payload_with(b"[]"),
    payload_with(b"{}"),
    payload_with(b"null"),
    payload_with(b"[" + b"80," * 60_000 + b"80]"),
    payload_with(b"[80]", seq="-1"),
    payload_with(b"[80]", seq=str(2**63)),
    payload_with(b"[80]", seq="1.5"),
    payload_with(b"[80]", fs="0"),
    payload_with(b"[80]", t0="0"),
    payload_with(b"[1000]", t0='"x"'),  # the samples come first in the document
    payload_with(b'["x"]', t0='"y"'),
    b'{"samples":["x"],"t0":"y","fs":1}',
    b'{"samples":[1000]}',
    b'{"t0":1732400000,"fs":125,"samples":["x"],"samples":[80]}',
    b'{"t0":1732400000,"fs":125,"samples":[80],"samples":[1000]}',
    b'{"t0":1732400000,"fs":125,"samples":[1000],"samples":[80]}',
    b'{"t0":1732400000,"fs":125,"sampl\\u0065s":[null],"samples":[80]}',
    b'{"t0":1732400000,"fs":125,"samples":[80],"sampl\\u0065s":[81]}',
    b'{"t0":1732400000,"fs":125,"samples":[80],"note":"\\"samples\\""}',
    b'{"t0":1732400000,"fs":125,"x":{"samples":[null]},"samples":[80]}',
    b'{"t0":1732400000,"fs":125,"x":"samples","samples":[80]}',
    b'{"t0":1732400000,"fs":125,"samples":' + b"[" * 5000 + b"]" * 5000 + b"}",
    b'{"t0":1732400000,"fs":125,"samples":[80],"x":' + b"[" * 5000 + b"]" * 5000 + b"}",
    b'{"t0":1732400000,"fs":125,"samples":[80] ,"by":"S\xc3\xbcd"}',
    b'{"t0":1732400000,"fs":125,"samples":[80]} x',
]


class TestCodecAgreesWithExactPath:
    """``decode`` and ``read_record`` answer as without the kernel."""

    @pytest.mark.parametrize("payload", HOSTILE, ids=range(len(HOSTILE)))
    def test_hostile_payloads(self, payload: bytes) -> None:
        """Same chunk or same error (code, field, reason) for each payload, both paths."""
        check_same(payload)

    @pytest.mark.parametrize(
        ("payload", "limits"),
        [(p, kw) for _id, kind, p, kw, *_ in BAD if kind == "abp" and isinstance(p, bytes)],
    )
    def test_bad_payloads(self, payload: bytes, limits: dict[str, int]) -> None:
        """The codec's catalogue of bad payloads."""
        check_same(payload, **limits)

    @pytest.mark.parametrize("max_samples", [0, 1, 3, 4, 5, MAX_SAMPLES_PER_CHUNK + 1])
    def test_max_samples(self, max_samples: int) -> None:
        """Around the configured limit (and above the core's)."""
        check_same(json.dumps(VALID["abp"]).encode(), max_samples=max_samples)

    @FUZZ
    @given(obj=field_dicts)
    def test_fuzz_objects(self, obj: dict[str, object]) -> None:
        """Objects with the contract's field names and random values."""
        check_same(json.dumps(obj).encode())

    @FUZZ
    @given(changes=st.dictionaries(st.sampled_from(["t0", "fs", "samples", "seq"]), plausible))
    def test_fuzz_valid_with_changes(self, changes: dict[str, object]) -> None:
        """The valid example with fields set to random values."""
        check_same(json.dumps({**VALID["abp"], **changes}).encode())

    @FUZZ
    @given(
        pairs=st.lists(
            st.tuples(
                st.sampled_from(['"samples"', '"sampl\\u0065s"', '"t0"', '"fs"', '"seq"', '"x"']),
                st.sampled_from(
                    [
                        "[80,81.5]", "[-0,1e2]", "[80,null]", '["80"]', "[1000]", "[]", "null",
                        '"samples"', '{"samples":[1]}', '"a\\"b"', "1732400000", "125", "7",
                        "-1", "1.5", " [ 80 , 81 ] ", "[80,1e400]",
                    ]
                ),
            ),
            max_size=7,
        )
    )  # fmt: skip
    def test_fuzz_keys_and_values(self, pairs: list[tuple[str, str]]) -> None:
        """Objects of duplicate, escaped and nested keys with values good and bad."""
        check_same(("{" + ",".join(f"{k}:{v}" for k, v in pairs) + "}").encode())

    def test_fast_path_is_taken(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """An ordinary chunk never reaches the exact path (whose conversion is disabled here)."""

        def no_list(samples: list[float]) -> np.ndarray:
            raise AssertionError("the exact path was taken")

        monkeypatch.setattr(codec, "_samples_array", no_list)
        payload = payload_with(TYPICAL)
        chunk = decode("abp", payload)
        assert chunk.samples.tolist() == [72.43, 71.2, -3.0, 0.5]  # type: ignore[union-attr]
        _, msg = read_record(line_of(payload), parse_inbound)
        assert msg.samples.tolist() == [72.43, 71.2, -3.0, 0.5]  # type: ignore[union-attr]
        with pytest.raises(AssertionError, match="exact path"):  # and the spy works
            decode("abp", payload_with(b"[80, 1000]"))

    def test_line_not_bytes(self) -> None:
        """A line given as another buffer than bytes is read by its envelope, alike."""
        line = line_of(payload_with(TYPICAL))
        _, msg = read_record(bytearray(line), parse_inbound)  # type: ignore[arg-type]
        assert outcome(lambda: msg) == record_outcome(line)[1]

    def test_chunks_of_changing_length(self) -> None:
        """A chunk of another length than the last one's is parsed as well."""
        for n in (125, 250, 1, 1, 7, 125, 60_000):
            samples = [float(k % 400) for k in range(n)]
            payload = payload_with(json.dumps(samples).encode())
            for msg in (decode("abp", payload), exact(decode, "abp", payload)):
                assert msg.samples.tolist() == samples  # type: ignore[union-attr]
            assert codec._LAST_N[0] == n  # noqa: SLF001 - the cached length is the point


class TestWarmUp:
    """The service and ``replay`` compile the fast path as they start."""

    def test_compiles_the_kernel(self) -> None:
        """After ``codec.warm_up`` the kernel has a compiled signature for bytes documents."""
        codec.warm_up()
        assert any("bytes" in str(sig[0]).lower() for sig in _numparse.parse_samples.signatures)
