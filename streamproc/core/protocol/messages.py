"""Typed inbound messages: what a gateway, pump, EHR or dashboard tells the core.

Every message validates itself on construction (after the style of
``h11._events``): a message that exists is a message the core can trust.
Construction with impossible values raises :class:`InvalidMessageError`,
which names the field and the reason. The codec (``streamproc.wire.codec``) turns
that into its own ``CodecError``; the core never sees an invalid message.

These classes are also the wire schema of the inbound kinds: the codec makes the
Struct it decodes each payload into from the class's fields (names, order,
types, defaults), and their limits are the checks here. A field added here is
a field on the wire.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Final, NoReturn, TypeVar

import msgspec
import numpy as np
import numpy.typing as npt

from streamproc.core._compile import jitable
from streamproc.core.protocol import _samples

__all__ = [
    "DRUG_NAMES",
    "IDENT_RE",
    "MAX_SAMPLES_PER_CHUNK",
    "AbpChunk",
    "Ack",
    "BedId",
    "Drug",
    "Infusion",
    "InvalidMessageError",
    "Labs",
    "Message",
    "Patient",
    "Profile",
    "RateUnit",
    "Vitals",
    "VitalsSource",
    "chunk_fault",
    "continues",
    "sample_time",
]

IDENT_RE: Final = re.compile(r"[A-Za-z0-9_-]{1,64}")
#: Hard ceiling on samples in one chunk (60 s at 500 Hz is 30,000). The codec
#: may enforce a lower, configured cap.
MAX_SAMPLES_PER_CHUNK: Final = 60_000
#: Plausible limits of a pressure a transducer can report, in mmHg. Values
#: outside are not physiology and not even an artifact a monitor would emit.
PRESSURE_LIMITS: Final = (-100.0, 500.0)
#: Earliest plausible timestamp (2000-01-01) and latest (2200-01-01), epoch s.
TS_LIMITS: Final = (946_684_800.0, 7_258_118_400.0)


class InvalidMessageError(ValueError):
    """A message was built with a value it cannot hold: the sender's fault.

    Attributes:
        field: the offending field's name, as on the wire.
        reason: what is wrong with it, in words.
    """

    def __init__(self, field: str, reason: str) -> None:
        self.field = field
        self.reason = reason
        super().__init__(f"{field}: {reason}")


class Drug(StrEnum):
    """Vasoactive drugs the protocol knows."""

    NOREPINEPHRINE = "norepinephrine"
    VASOPRESSIN = "vasopressin"
    EPINEPHRINE = "epinephrine"
    DOBUTAMINE = "dobutamine"
    DOPAMINE = "dopamine"
    PHENYLEPHRINE = "phenylephrine"


#: Every name a pump or an EHR may give one of the six drugs, lower case: the contract's
#: (US adopted) names, the international non-proprietary and British names, and common
#: brand names. The one table the codec reads (``Drug(...)`` knows the contract's only);
#: documented in docs/wire-format-notes.md.
DRUG_NAMES: Final[Mapping[str, Drug]] = {
    **{d.value: d for d in Drug},
    # norepinephrine
    "noradrenaline": Drug.NOREPINEPHRINE,
    "levarterenol": Drug.NOREPINEPHRINE,
    "levophed": Drug.NOREPINEPHRINE,
    "arterenol": Drug.NOREPINEPHRINE,
    # vasopressin
    "argipressin": Drug.VASOPRESSIN,
    "arginine vasopressin": Drug.VASOPRESSIN,
    "avp": Drug.VASOPRESSIN,
    "vasostrict": Drug.VASOPRESSIN,
    "pitressin": Drug.VASOPRESSIN,
    "empressin": Drug.VASOPRESSIN,
    # epinephrine
    "adrenaline": Drug.EPINEPHRINE,
    "adrenalin": Drug.EPINEPHRINE,
    # dobutamine, dopamine, phenylephrine
    "dobutrex": Drug.DOBUTAMINE,
    "intropin": Drug.DOPAMINE,
    "neosynephrine": Drug.PHENYLEPHRINE,
    "neo-synephrine": Drug.PHENYLEPHRINE,
    "biorphen": Drug.PHENYLEPHRINE,
}


class RateUnit(StrEnum):
    """Infusion-rate units as pumps report them."""

    MCG_KG_MIN = "mcg/kg/min"
    MCG_MIN = "mcg/min"
    U_MIN = "U/min"
    ML_H = "mL/h"


class Profile(StrEnum):
    """Patient profiles with their own pressure target (protocol section 2)."""

    STANDARD = "standard"
    CHRONIC_HYPERTENSION = "chronic_hypertension"
    ELDERLY = "elderly"
    TRAUMA = "trauma"
    TRAUMA_TBI = "trauma_tbi"


class VitalsSource(StrEnum):
    """Where a numeric pressure comes from."""

    ART = "art"  # arterial line: continuous
    NIBP = "nibp"  # cuff: intermittent, each reading stands until the next


_TS_LO, _TS_HI = TS_LIMITS
_FLOAT64: Final = np.dtype(np.float64)


def _check_ts(name: str, value: float) -> None:
    if not math.isfinite(value):
        raise InvalidMessageError(name, f"must be a finite number, got {value!r}")
    lo, hi = TS_LIMITS
    if not lo <= value <= hi:
        raise InvalidMessageError(
            name, f"must be epoch seconds between {lo:.0f} and {hi:.0f}, got {value!r}"
        )


def _check_range(name: str, value: float | None, lo: float, hi: float) -> None:
    if value is None:
        return
    if not math.isfinite(value) or not lo <= value <= hi:
        raise InvalidMessageError(name, f"must be between {lo:g} and {hi:g}, got {value!r}")


@dataclass(frozen=True, slots=True)
class BedId:
    """One bed: a care unit and a bed identifier, both ``[A-Za-z0-9_-]{1,64}``."""

    unit: str
    bed: str

    def __post_init__(self) -> None:
        for name in ("unit", "bed"):
            value = getattr(self, name)
            if not isinstance(value, str) or not IDENT_RE.fullmatch(value):
                raise InvalidMessageError(name, f"must match [A-Za-z0-9_-]{{1,64}}, got {value!r}")

    def __str__(self) -> str:
        return f"{self.unit}/{self.bed}"


#: Sampling rates a chunk may have, Hz.
FS_LIMITS: Final = (1.0, 2000.0)
_FS_LO, _FS_HI = FS_LIMITS
_X_LO, _X_HI = PRESSURE_LIMITS

# What ``chunk_fault`` finds wrong with a chunk (the first that applies).
CHUNK_OK: Final = 0
CHUNK_T0: Final = 1  # ``t0`` is no time between ``TS_LIMITS``
CHUNK_FS: Final = 2  # ``fs`` is outside ``FS_LIMITS``
CHUNK_EMPTY: Final = 3  # no samples
CHUNK_LONG: Final = 4  # more than ``MAX_SAMPLES_PER_CHUNK``
CHUNK_SAMPLES: Final = 5  # a sample outside ``PRESSURE_LIMITS`` (or not a number)


@jitable
def chunk_fault(t0: float, fs: float, samples: npt.NDArray[np.float64]) -> int:
    """What is wrong with a chunk of ``samples`` from ``t0`` at ``fs``: ``CHUNK_OK``, or
    the first ``CHUNK_*`` fault.

    The rule :class:`AbpChunk` validates itself by, and ``_kernels.step_chunks`` takes a
    chunk by (compiled into it). Every check is written so that NaN fails it.
    """
    if not _TS_LO <= t0 <= _TS_HI:
        return CHUNK_T0
    if not _FS_LO <= fs <= _FS_HI:
        return CHUNK_FS
    if samples.size == 0:
        return CHUNK_EMPTY
    if samples.size > MAX_SAMPLES_PER_CHUNK:
        return CHUNK_LONG
    if not _samples.all_within(samples, _X_LO, _X_HI):  # (one compiled pass)
        return CHUNK_SAMPLES
    return CHUNK_OK


#: A time, or an array of times.
_Times = TypeVar("_Times", float, npt.NDArray[np.float64])


@jitable
def sample_time(t0: _Times, fs: _Times, i: _Times) -> _Times:
    """Data time of sample ``i`` of a run of samples from ``t0`` at ``fs`` (``i`` may be
    its length: the time just after it); of each, given arrays."""
    return t0 + i / fs


@jitable
def continues(t0: float, fs: float, run_fs: float, run_end: float) -> bool:
    """Whether a chunk from ``t0`` at ``fs`` continues a run of samples at ``run_fs``
    that ends at ``run_end`` (``sample_time`` of its length): the same rate, and a
    start within half a sample of that end."""
    return fs == run_fs and not abs(t0 - run_end) > 0.5 / run_fs


_NO_SAMPLES: Final[npt.NDArray[np.float64]] = np.empty(0, np.float64)


class AbpChunk(msgspec.Struct, frozen=True, eq=False, gc=False):
    """A run of arterial-pressure samples, ``samples[i]`` taken at ``sample_time(t0, fs, i)``.

    A frozen ``msgspec.Struct`` rather than a dataclass: it is built once per
    chunk, the most frequent message, and a Struct is built five times faster
    (it validates itself the same way, in ``__post_init__``: by :func:`chunk_fault`).
    """

    t0: float
    fs: float
    samples: npt.NDArray[np.float64]
    seq: int | None = None

    def __post_init__(self) -> None:
        s = self.samples
        typed = (
            isinstance(s, np.ndarray)
            and s.ndim == 1
            and (s.dtype is _FLOAT64 or s.dtype == np.float64)
        )
        fault = chunk_fault(self.t0, self.fs, s if typed else _NO_SAMPLES)
        if fault != CHUNK_OK:
            _refuse(fault, self.t0, self.fs, s, typed=typed)
        s.flags.writeable = False

    @property
    def t_end(self) -> float:
        """Time one sample period after the last sample."""
        return sample_time(self.t0, self.fs, self.samples.size)

    @property
    def ts(self) -> float:
        """Data time of the newest sample."""
        return sample_time(self.t0, self.fs, self.samples.size - 1)


def _refuse(fault: int, t0: float, fs: float, samples: object, *, typed: bool) -> NoReturn:
    """Raise the :class:`InvalidMessageError` that says what ``fault`` (``chunk_fault``) is."""
    if fault == CHUNK_T0:
        _check_ts("t0", t0)
    if fault == CHUNK_FS:
        raise InvalidMessageError("fs", f"must be between 1 and 2000 Hz, got {fs!r}")
    if not typed:
        raise InvalidMessageError("samples", "must be a one-dimensional float64 array")
    if fault == CHUNK_EMPTY:
        raise InvalidMessageError("samples", "must not be empty")
    if fault == CHUNK_LONG:
        size = np.asarray(samples).size
        raise InvalidMessageError(
            "samples", f"has {size} samples, more than {MAX_SAMPLES_PER_CHUNK}"
        )
    if not np.isfinite(np.asarray(samples)).all():
        raise InvalidMessageError("samples", "must all be finite numbers (no NaN/inf/null)")
    lo, hi = PRESSURE_LIMITS
    raise InvalidMessageError("samples", f"must lie between {lo:g} and {hi:g} mmHg")


@dataclass(frozen=True, slots=True)
class Vitals:
    """Numerics from the monitor: arterial line (continuous) or NIBP (intermittent)."""

    ts: float
    source: VitalsSource
    sbp: float | None = None
    dbp: float | None = None
    map: float | None = None
    hr: float | None = None

    def __post_init__(self) -> None:
        _check_ts("ts", self.ts)
        _check_range("sbp", self.sbp, 0.0, 350.0)
        _check_range("dbp", self.dbp, 0.0, 300.0)
        _check_range("map", self.map, 0.0, 300.0)
        _check_range("hr", self.hr, 0.0, 350.0)
        if self.sbp is not None and self.dbp is not None and self.sbp < self.dbp:
            raise InvalidMessageError(
                "sbp", f"systolic {self.sbp!r} is below diastolic {self.dbp!r}"
            )

    @property
    def mean_pressure(self) -> float | None:
        """MAP as sent, else ``dbp + (sbp - dbp) / 3`` (the wire contract's rule)."""
        if self.map is not None:
            return self.map
        if self.sbp is not None and self.dbp is not None:
            return self.dbp + (self.sbp - self.dbp) / 3.0
        return None


@dataclass(frozen=True, slots=True)
class Infusion:
    """The state of one drug's infusion as the pump reports it."""

    ts: float
    drug: Drug
    rate: float
    unit: RateUnit
    running: bool = True
    #: Concentration of the bag (per mL) for ``mL/h`` rates: mcg/mL, or U/mL
    #: for vasopressin.
    concentration: float | None = None

    def __post_init__(self) -> None:
        _check_ts("ts", self.ts)
        _check_range("rate", self.rate, 0.0, 10_000.0)
        _check_range("concentration", self.concentration, 1e-9, 1_000_000.0)


@dataclass(frozen=True, slots=True)
class Patient:
    """Profile and context of a patient (every field but ``ts`` optional)."""

    ts: float
    profile: Profile | None = None
    age: float | None = None
    weight_kg: float | None = None
    map_target: float | None = None
    sbp_target: float | None = None
    crystalloid_ml: float | None = None
    peritonitis: bool | None = None

    def __post_init__(self) -> None:
        _check_ts("ts", self.ts)
        _check_range("age", self.age, 0.0, 130.0)
        _check_range("weight_kg", self.weight_kg, 0.3, 500.0)
        _check_range("map_target", self.map_target, 20.0, 150.0)
        _check_range("sbp_target", self.sbp_target, 40.0, 250.0)
        _check_range("crystalloid_ml", self.crystalloid_ml, 0.0, 100_000.0)


@dataclass(frozen=True, slots=True)
class Labs:
    """Perfusion markers; any may be missing."""

    ts: float
    lactate: float | None = None
    urine_ml_kg_h: float | None = None
    scvo2: float | None = None

    def __post_init__(self) -> None:
        _check_ts("ts", self.ts)
        _check_range("lactate", self.lactate, 0.0, 50.0)
        _check_range("urine_ml_kg_h", self.urine_ml_kg_h, 0.0, 50.0)
        _check_range("scvo2", self.scvo2, 0.0, 100.0)


@dataclass(frozen=True, slots=True)
class Ack:
    """A clinician acknowledged an alarm (by its ``alarm_id``)."""

    ts: float
    alarm_id: str
    by: str = field(default="unknown")

    def __post_init__(self) -> None:
        _check_ts("ts", self.ts)
        if not 0 < len(self.alarm_id) <= 200:
            raise InvalidMessageError("alarm_id", "must be 1 to 200 characters")
        if len(self.by) > 200:
            raise InvalidMessageError("by", "must be at most 200 characters")


Message = AbpChunk | Vitals | Infusion | Patient | Labs | Ack
