"""The ``samples`` array of an ``abp`` chunk read from its JSON bytes in one compiled pass.

:func:`parse_samples` finds the ``"samples"`` key of a JSON document that
``msgspec`` has already validated (the codec decodes it with ``samples`` as
``msgspec.Raw``) and converts the array of numbers that follows it straight into
a float64 array, without making a Python ``float`` per sample. Its values are
bit for bit those that ``msgspec.json.decode(..., type=list[float])`` gives the
same text; whenever it cannot be certain of that it says so (a negative status)
and the caller takes the exact path. It is certain only for:

- a document without a backslash anywhere (so that every key is spelled as it
  reads) where ``"samples"`` occurs exactly once, followed by ``:``: then it is
  the one ``samples`` key (a duplicate key, whose earlier value ``msgspec``
  would still have type-checked, or a ``"samples"`` text elsewhere: unsure);
- a non-empty array of JSON numbers, whitespace allowed between tokens
  (anything else, ``null``, strings, nested arrays, ``[]``: unsure);
- numbers of at most 18 digits (integer and fraction parts together) whose
  value is Clinger's fast path: the digits make a mantissa ``m <= 2**53``, and
  with the decimal exponent ``e`` either ``e == 0``, or ``0 < e <= 18`` and
  ``m * 10**e`` an integer ``<= 2**53``, or ``-22 <= e < 0`` (``m / 10**-e``:
  two exact doubles, one correctly rounded division, so the correctly rounded
  value that ``msgspec`` gives too). A JSON integer is an ``int`` to ``msgspec``
  before it becomes a float, so ``-0`` gives ``0.0``; ``-0.0`` and ``-0e0``
  give ``-0.0``.

A value outside ``[lo, hi]`` gives :data:`OUT_OF_RANGE` (the caller's exact path
raises the error), more than ``max_n`` values :data:`UNSURE`. The values are
written to an array the caller allocates (a returned array would cost more to
hand back than an int): when its length is not the count, the count comes back
and the caller calls again with an array of that length.

``.py_func`` is the same code run by the interpreter; the tests check that the
compiled and interpreted versions agree.
"""

from __future__ import annotations

from typing import Any, Final

import numpy as np

from streamproc.core import _compile
from streamproc.core._compile import jit

__all__ = ["OUT_OF_RANGE", "UNSURE", "UNSURE_DOC", "parse_samples"]


#: Statuses of :func:`parse_samples` (a count of values is positive).
UNSURE: Final = -1  # a value, or the array's form, is beyond what the kernel is sure of
OUT_OF_RANGE: Final = -2  # a value outside [lo, hi]
UNSURE_DOC: Final = -3  # the document: a backslash, no "samples" key or more than one

_MAX_DIGITS: Final = 18  # significant digits that fit an int64 mantissa
_MAX_EXACT: Final = 2**53  # integers up to here are exact doubles
_MAX_EXP: Final = 22  # 10**22 is the largest power of ten that is an exact double
_EXP_CAP: Final = 100_000  # an exponent beyond this is "unsure" anyway
#: 10**k as exact doubles (k <= 22, to divide by) and as int64 (k <= 18, to multiply by)
_POW10_F: Final = np.array([10.0**k for k in range(_MAX_EXP + 1)], dtype=np.float64)
_POW10_I: Final = np.array([10**k for k in range(_MAX_DIGITS + 1)], dtype=np.int64)
# bytes
_QUOTE: Final = 34
_BACKSLASH: Final = 92
_COLON: Final = 58
_COMMA: Final = 44
_OPEN: Final = 91
_CLOSE: Final = 93
_MINUS: Final = 45
_PLUS: Final = 43
_DOT: Final = 46
_ZERO: Final = 48
_NINE: Final = 57
_LOWER_E: Final = 101
_UPPER_E: Final = 69
_KEY: Final = np.frombuffer(b'"samples"', dtype=np.uint8).copy()


@jit
def _peek(buf: Any, i: int, end: int) -> int:
    """``buf[i]``, or 0 (no JSON token starts with it) at and after ``end``."""
    # an unsigned index spares numba's negative-index fix-up (a third of the time)
    return int(buf[np.uintp(i)]) if i < end else 0


@jit
def _is_space(c: int) -> bool:
    return c <= 32 and c in (32, 10, 13, 9)  # JSON whitespace (one comparison for others)


@jit
def _is_digit(c: int) -> bool:
    return _ZERO <= c <= _NINE


@jit
def _is_key(buf: Any, i: int, end: int) -> bool:
    """Whether ``"samples"`` begins at ``buf[i]``."""
    for j in range(_KEY.size):  # noqa: SIM110 - a loop numba compiles, not all() of a generator
        if _peek(buf, i + j, end) != _KEY[j]:
            return False
    return True


@jit
def _skip_space(buf: Any, i: int, end: int, c: int) -> tuple[int, int]:
    """The first non-whitespace at or after ``buf[i]`` (``c``): ``(its index, it)``."""
    while _is_space(c):
        i += 1
        c = _peek(buf, i, end)
    return i, c


@jit
def _digits(buf: Any, i: int, end: int, c: int, m: int) -> tuple[int, int, int]:
    """The digits from ``buf[i]`` (``c``) appended to ``m``: ``(m, index after them, byte there)``.

    ``m`` may wrap in int64 past 18 digits: the count of digits then says "unsure".
    """
    while _is_digit(c):
        m = m * 10 + (c - _ZERO)
        i += 1
        c = _peek(buf, i, end)
    return m, i, c


@jit
def _exponent(buf: Any, i: int, end: int, c: int, e: int) -> tuple[bool, int, int, int]:
    """The exponent whose sign or first digit is ``buf[i]`` (``c``), added to ``e``.

    ``(whether it has a digit, e, index after it, byte there)``.
    """
    neg_exp = c == _MINUS
    if neg_exp or c == _PLUS:
        i += 1
        c = _peek(buf, i, end)
    start = i
    x = 0
    while _is_digit(c):
        if x < _EXP_CAP:
            x = x * 10 + (c - _ZERO)
        i += 1
        c = _peek(buf, i, end)
    return i > start, (e - x if neg_exp else e + x), i, c


@jit
def _value(m: int, nd: int, e: int, neg: bool, is_int: bool) -> tuple[bool, float]:
    """``(-)m * 10**e`` (``nd`` digits in ``m``; ``is_int``: written without ``.`` or
    exponent): ``(whether sure, value)``, sure when Clinger's fast path makes it exact."""
    if nd > _MAX_DIGITS or m > _MAX_EXACT:
        return False, 0.0
    if e == 0:
        v = float(m)
    elif e < 0:
        if e < -_MAX_EXP:
            return False, 0.0
        v = float(m) / _POW10_F[-e]  # exact / exact: one correctly rounded division
    elif e <= _MAX_DIGITS and m <= _MAX_EXACT // _POW10_I[e]:
        v = float(m * _POW10_I[e])  # an exact integer
    else:
        return False, 0.0
    if neg and not (is_int and m == 0):  # the integer -0 is int 0 to msgspec: +0.0
        v = -v
    return True, v


@jit
def _array(  # noqa: PLR0917 - the kernel's arguments, passed on
    buf: Any, i: int, out: np.ndarray, lo: float, hi: float, max_n: int
) -> tuple[int, int]:
    """The array at ``buf[i]`` into ``out``: ``(count or status, index after it)``."""
    end = len(buf)
    if _peek(buf, i, end) != _OPEN:
        return UNSURE, i
    i += 1
    n = 0
    cap = out.size
    while True:
        i, c = _skip_space(buf, i, end, _peek(buf, i, end))
        neg = c == _MINUS
        if neg:
            i += 1
            c = _peek(buf, i, end)
        start = i
        m, i, c = _digits(buf, i, end, c, 0)  # the integer part
        nd = i - start  # digits in m (leading zeros included: at most one, "0")
        if nd == 0 or (nd > 1 and _peek(buf, start, end) == _ZERO):
            return UNSURE, i  # no digit, or a leading zero (not JSON)
        e = 0  # decimal exponent of m
        is_int = True
        if c == _DOT:
            is_int = False
            start = i + 1
            m, i, c = _digits(buf, start, end, _peek(buf, start, end), m)  # the fraction
            if i == start:
                return UNSURE, i
            nd += i - start
            e = start - i
        if c in (_LOWER_E, _UPPER_E):
            is_int = False
            i += 1
            sure, e, i, c = _exponent(buf, i, end, _peek(buf, i, end), e)
            if not sure:
                return UNSURE, i
        sure, v = _value(m, nd, e, neg, is_int)
        if not sure:
            return UNSURE, i
        if not lo <= v <= hi:
            return OUT_OF_RANGE, i
        if n < cap:
            out[n] = v
        n += 1
        if n > max_n:
            return UNSURE, i
        i, c = _skip_space(buf, i, end, c)
        i += 1
        if c == _CLOSE:
            return n, i
        if c != _COMMA:
            return UNSURE, i


@jit
def parse_samples(doc: Any, out: np.ndarray, lo: float, hi: float, max_n: int) -> int:
    """The values of the ``samples`` array of the JSON document ``doc`` (bytes), into ``out``.

    Args:
        doc: a JSON document that ``msgspec`` has decoded without error (any
            buffer of bytes numba accepts: ``bytes``, ``msgspec.Raw``...).
        out: a float64 array; the values are written to it when the array has
            exactly ``out.size`` of them.
        lo: smallest value accepted.
        hi: largest value accepted.
        max_n: largest number of values accepted.

    Returns:
        The number of values ``n >= 1`` (when ``n != out.size``, ``out`` is not
        complete: call again with an array of ``n``), or :data:`UNSURE`,
        :data:`OUT_OF_RANGE` or :data:`UNSURE_DOC`.
    """
    end = len(doc)
    n = UNSURE_DOC  # no key yet
    i = 0
    while i < end:
        c = _peek(doc, i, end)
        if c == _BACKSLASH:
            return UNSURE_DOC
        if c == _QUOTE and _is_key(doc, i, end):
            if n != UNSURE_DOC:
                return UNSURE_DOC  # a second "samples"
            c = _peek(doc, i + _KEY.size, end)
            i += _KEY.size
            while _is_space(c):
                i += 1
                c = _peek(doc, i, end)
            if c != _COLON:
                return UNSURE_DOC  # a string "samples", not a key
            i += 1
            c = _peek(doc, i, end)
            while _is_space(c):
                i += 1
                c = _peek(doc, i, end)
            n, i = _array(doc, i, out, lo, hi, max_n)
            if n < 0:
                return n
        else:
            i += 1
    return n


#: The digest of what this module's compiled functions take from other files
#: (``_compile.built_from``): checked below, so that a change there cannot load code
#: numba's cache built from the old one. The error says the new value.
BUILT_FROM: Final = "e3b0c44298fc1c14"
_compile.check_built_from(__name__, BUILT_FROM)
