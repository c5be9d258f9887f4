"""One bed's monitor: pressures in, alarm transitions out.

Holds everything the protocol needs to know about one bed: the beat detector
and the rolling MAP, the standing numerics, the patient's profile and target,
what is infused, the labs, the hold timers (on *data* time) and the open
alarms. Every public method takes the time it may use as an argument and
returns the :class:`~streamproc.core.protocol.alarms.AlarmEvent` list to publish.
"""

from __future__ import annotations

import functools
import math
from collections import deque
from dataclasses import dataclass
from enum import Enum
from typing import Any, Final, overload

import msgspec
import numpy as np

from streamproc.core.protocol import hold, rules
from streamproc.core.protocol.alarms import (
    HYPOTENSION,
    SIGNAL_INVALID,
    STALE,
    Alarm,
    AlarmEvent,
    AlarmState,
    Priority,
    Trigger,
)
from streamproc.core.protocol.escalation import (
    DISCLAIMER,
    AdvisoryKind,
    Step,
    current_step,
    ne_equivalent,
    norepinephrine_dose,
    recommend,
    running,
)
from streamproc.core.protocol.messages import (
    AbpChunk,
    Ack,
    BedId,
    Drug,
    Infusion,
    Labs,
    Message,
    Patient,
    Profile,
    Vitals,
    VitalsSource,
    continues,
)
from streamproc.core.protocol.settings import Settings
from streamproc.core.signal import _kernels, beats, state
from streamproc.core.signal.beats import BeatDetector
from streamproc.core.signal.ordering import ChunkOrder, DropNotice, DropReason, Drops
from streamproc.core.signal.state import FloatArray, SegmentArrays

__all__ = [
    "BedMonitor",
    "BedStatus",
    "Clock",
    "Sustained",
    "alarm_id_number",
    "warm_up",
]


_STEP_DONE: Final = _kernels.STEP_DONE

#: Recent vitals readings (``ts``, ``source``) remembered to tell a repeat from a late one.
_VITALS_SEEN: Final = 8
#: Beats further apart than this are not one continuous run of valid data.
_BEAT_CONTINUITY_S: Final = 3.0


class Sustained:
    """One of the monitor's hold timers, as read: valid data time for which a condition
    has held without a break.

    Its state is row ``row`` (start, last, accum; NaN for none) of the monitor's flat
    timer array, which the hold rule (``hold.hold_observe``) updates, in the monitor and
    in the compiled per-beat path (``_kernels.advance_beats``) alike.
    """

    __slots__ = ("_at", "_timers")

    def __init__(self, timers: FloatArray, row: int) -> None:
        self._timers = timers
        self._at = row * hold.HOLD_COLUMNS

    @property
    def start(self) -> float | None:
        v = float(self._timers[self._at + hold.HOLD_START])
        return None if math.isnan(v) else v

    @property
    def last(self) -> float | None:
        v = float(self._timers[self._at + hold.HOLD_LAST])
        return None if math.isnan(v) else v

    @property
    def accum(self) -> float:
        return float(self._timers[self._at + hold.HOLD_ACCUM])


_RESET: Final = (math.nan, math.nan, 0.0)


def _new_timers(rows: int) -> FloatArray:
    """``rows`` hold timers, none holding, flat (``hold.HOLD_COLUMNS`` slots each)."""
    timers = np.empty((rows, hold.HOLD_COLUMNS), np.float64)
    timers[:] = _RESET
    return timers.reshape(-1)


@functools.lru_cache(maxsize=16)
def _params(settings: Settings) -> FloatArray:
    """``_kernels.advance_beats``'s parameters (``P_*``) from ``settings``."""
    hs, ms = settings.hypotension, settings.monitor
    par = np.empty(state.P_SIZE, np.float64)
    par[state.P_WINDOW_S] = hs.rolling_window_s
    par[state.P_MIN_BEATS] = hs.min_beats_in_window
    par[state.P_CONTINUITY_S] = _BEAT_CONTINUITY_S
    par[state.P_GAP_S] = hs.max_invalid_gap_s
    par[state.P_CRITICAL_MAP] = hs.critical_map
    par[state.P_CLEAR_MARGIN] = hs.clear_margin
    par[state.P_HOLD_S] = hs.hold_s
    par[state.P_CRITICAL_HOLD_S] = hs.critical_hold_s
    par[state.P_CLEAR_HOLD_S] = hs.clear_hold_s
    par[state.P_VALID_CLEAR_S] = ms.signal_valid_clear_s
    par[state.P_TREND_STEP_S] = ms.trend_step_s
    par[state.P_WORSEN] = settings.alarms.worsen_mmhg
    par[state.P_RANK_MEDIUM] = Priority.MEDIUM.rank
    par[state.P_RANK_HIGH] = Priority.HIGH.rank
    par[state.P_SIGNAL_INVALID_S] = ms.signal_invalid_s
    bs = settings.beats
    par[state.P_LINE_BEATS] = bs.line_beats
    par[state.P_LINE_ENTER] = bs.line_enter_beats
    par[state.P_LINE_LEAVE] = bs.line_leave_beats
    par[state.P_DAMPED_SHARPNESS] = bs.damped_max_sharpness
    par[state.P_RINGING_TURNS] = bs.ringing_min_turns
    par[state.P_PULSE_PP] = bs.pulse_min_pp_mmhg
    par[state.P_LINE_REF_S] = bs.line_reference_s
    par[state.P_NARROW_PP] = bs.damped_narrow_pp_fraction
    par[state.P_SLOW_PEAK] = bs.damped_slow_peak_factor
    par.flags.writeable = False
    return par


#: Initial rows of a bed's rolling window (grown when a fast rhythm needs more).
_WINDOW_ROWS: Final = 16
#: A re-announcement's due time is checked this early by the compiled path (it
#: only makes the exact check run; rounding of ``a + b`` vs ``t - a`` is far smaller).
_WAKE_MARGIN_S: Final = 1e-3


def alarm_id_number(alarm_id: str) -> int | None:
    """The number an alarm id of this project ends with (``BedMonitor._new_alarm``), or None."""
    tail = alarm_id.rsplit(".", 1)[-1]
    return int(tail) if tail.isdigit() else None


@dataclass(slots=True)
class _Standing:
    """A numeric that stands for the time after it, until replaced or stale."""

    ts: float
    map: float | None
    sbp: float | None
    valid_until: float
    evaluated_to: float
    nibp: bool


class BedStatus(msgspec.Struct, frozen=True, gc=False):
    """What a display shows of a bed (not an alarm; a snapshot).

    A frozen ``msgspec.Struct``: built for every bed every ``summary_s``
    (2,500 a second at 5,000 beds), where a frozen dataclass's ``__init__``
    (an ``object.__setattr__`` per field) was a third of the cost.
    """

    bed: BedId
    map: float | None
    sbp: float | None
    dbp: float | None
    hr: float | None
    metric: str
    target: float
    profile: str
    infusions: tuple[tuple[str, float, str], ...]
    open_alarms: tuple[str, ...]
    last_data: float | None
    #: Data time of the latest pressure observation.
    ts: float | None = None
    #: Rolling MAP every ``monitor.trend_step_s`` of data time, oldest first.
    trend: tuple[float, ...] = ()
    trend_step_s: float = 30.0
    #: The running vasopressors as one norepinephrine-equivalent dose (mcg/kg/min), a
    #: lower bound when one of them has an unknown dose; None when none runs.
    ne_equivalent: float | None = None
    #: Whether the bed has sent only non-invasive pressures (its staleness limit is then
    #: ``hypotension.nibp_stands_s``, else ``monitor.stale_s``); restored after a restart.
    nibp_only: bool = True


class Clock(Enum):
    """The clock an alarm's timers run on: one for a whole engine, decided when it is made.

    ``WALL``, live: the processor's clock, the times messages arrive and ticks. ``DATA``,
    replay and evaluation: the data's time, the timers checked at every observation, so
    the output does not depend on how the data was cut into messages.
    """

    WALL = "wall"
    DATA = "data"


class BedMonitor:
    """The protocol applied to one bed."""

    class _Slot:
        """A monitor's value kept in its compiled path's state (``state.M_*``; NaN: None).

        Part of the class: it reads the monitor's own packed state."""

        __slots__ = ("index",)

        def __init__(self, index: int) -> None:
            self.index = index

        @overload
        def __get__(self, obj: None, owner: type[Any]) -> BedMonitor._Slot: ...
        @overload
        def __get__(self, obj: BedMonitor, owner: type[Any]) -> float | None: ...
        def __get__(
            self, obj: BedMonitor | None, owner: type[Any]
        ) -> BedMonitor._Slot | float | None:
            if obj is None:
                return self
            mon: BedMonitor = obj
            v = float(mon._mst[self.index])
            return None if math.isnan(v) else v

        def __set__(self, obj: BedMonitor, value: float | None) -> None:
            obj._mst[self.index] = math.nan if value is None else value

    # latest values, kept in the compiled path's state (``_mst``)
    #: Rolling value of the target's metric (or the standing numeric's).
    value = _Slot(state.M_VALUE)
    map = _Slot(state.M_MAP)
    sbp = _Slot(state.M_SBP)
    dbp = _Slot(state.M_DBP)
    hr = _Slot(state.M_HR)
    #: Data time of the latest pressure observation.
    obs_ts = _Slot(state.M_OBS_TS)
    #: End of the last valid beat, or where the waveform (re)started.
    valid_ref = _Slot(state.M_VALID_REF)

    def __init__(
        self,
        bed: BedId,
        settings: Settings,
        *,
        clock: Clock = Clock.WALL,
        counts: FloatArray | None = None,
        drops: Drops | None = None,
    ) -> None:
        self.bed = bed
        self.settings = settings
        #: Whether the alarm timers run on data time (``clock`` is ``Clock.DATA``).
        self.data_clock: Final = clock is Clock.DATA
        self.detector = BeatDetector(settings.beats)
        # the compiled per-beat path's state (``_kernels.advance_beats``): the rolling
        # window (end, MAP, SBP, DBP, HR of its valid beats), the hold timers, its slots
        self._win: FloatArray = np.empty((_WINDOW_ROWS, state.W_COLUMNS), np.float64)
        # and in one packed array (``state.MF_*``): the hold timers, the latest values
        # (``state.M_*``), the parameters, the context of the decisions
        self._mf: FloatArray = np.empty(state.MF_SIZE, np.float64)
        self._timers = self._mf[state.MF_TIMERS : state.MF_MST]
        self._timers[:] = _new_timers(hold.T_ROWS)
        self._mst = self._mf[state.MF_MST : state.MF_PAR]
        self._mst[:] = math.nan
        self._mst[state.M_WIN_N] = 0.0
        self._mst[state.M_LINE] = hold.LINE_OK
        self._mf[state.MF_PAR : state.MF_CTX] = _params(settings)
        self._ctx = self._mf[state.MF_CTX : state.MF_LINE]
        lq = self._mf[state.MF_LINE :]
        lq[:] = 0.0
        lq[state.LQ_LAST_END : state.LQ_COUNT] = math.nan  # (and no reference yet)
        #: The line's state the open alarms show (``state.LINE_*``; the compiled
        #: judgement's is ``_mst[M_LINE]``).
        self._line = hold.LINE_OK
        #: Whether ``_ctx`` holds ``_context()``: False once something it reads has changed.
        self._ctx_ok = False
        #: Bumped by every call that may change what :meth:`chunk_state` gives
        #: (``receive``, a ``tick`` with something to do, ``restore``; the engine
        #: looks again itself after ``finish_chunk``).
        self.version = 0
        #: Beats and valid beats counted (the engine's totals when it passes its own).
        self.counts: FloatArray = np.zeros(2, np.float64) if counts is None else counts
        self.infusions: dict[Drug, Infusion] = {}
        # derived from patient / infusions, recomputed when a message changes them
        self._target: tuple[str, float] | None = None
        self._step: Step | None = None
        self._nee: tuple[float | None] | None = None
        self.patient: dict[str, Any] = {}
        self.labs: dict[str, tuple[float, float]] = {}
        self.prev_labs: dict[str, tuple[float, float]] = {}
        self.ne_doses: list[tuple[float, float, str]] = []  # the last two NE doses
        self.alarms: dict[str, Alarm] = {}
        self._id_ms: dict[str, int] = {}  # last id number issued per alarm kind
        # hold timers on data time
        self.below = Sustained(self._timers, hold.T_BELOW)
        self.critical = Sustained(self._timers, hold.T_CRITICAL)
        self.recovered = Sustained(self._timers, hold.T_RECOVERED)
        self.sbp_at_target = Sustained(self._timers, hold.T_SBP_AT_TARGET)
        self.valid_run = Sustained(self._timers, hold.T_VALID_RUN)
        self.standing: _Standing | None = None
        self.last_wave_ts: float | None = None
        self.last_data_now: float | None = None
        self.nibp_only = True
        self._flags: tuple[bool, bool] = (False, False)
        self.now = 0.0  # the processor's time of the current input (arrival or tick)
        self._stale_s = settings.monitor.stale_s
        self._nibp_stands_s = settings.hypotension.nibp_stands_s
        self.trend: deque[float] = deque(maxlen=settings.monitor.trend_points)
        self._trend_ts: float | None = None
        # data-time integrity (``streamproc.core.signal.ordering``)
        #: Where dropped messages are counted (the engine's, shared by its beds).
        self.drops = Drops() if drops is None else drops
        self._reorder_s = settings.monitor.reorder_window_s
        #: Made when a chunk first needs it (the bed's first chunk does).
        self._order: ChunkOrder | None = None
        #: Whether ``_order`` holds chunks (then every chunk goes through it).
        self._holding = False
        #: The chunks of the current segment, while it is still learning (nothing decided
        #: on it yet): a chunk overtaken by them at the start of a stream is taken first.
        self._young: list[AbpChunk] = []
        self._noted: set[DropReason] = set()
        self._vitals_last: float | None = None
        self._vitals_floor: float | None = None
        self._vitals_seen: deque[tuple[float, VitalsSource]] = deque(maxlen=_VITALS_SEEN)
        #: The last context message taken per stream (a drug's infusion, patient, labs).
        self._context_seen: dict[str, Infusion | Patient | Labs] = {}

    # ------------------------------------------------------------------ targets
    @property
    def profile(self) -> Profile:
        prof = self.patient.get("profile")
        if isinstance(prof, Profile):
            return prof
        age = self.patient.get("age")
        if age is not None and age > self.settings.targets.elderly_age:
            return Profile.ELDERLY
        return Profile.STANDARD

    def target(self) -> tuple[str, float]:
        """The metric (``map`` or ``sbp``) and the value it must not fall below."""
        cached = self._target
        if cached is None:
            cached = self._target = self._find_target()
        return cached

    def _find_target(self) -> tuple[str, float]:
        if self.patient.get("map_target") is not None:
            return "map", float(self.patient["map_target"])
        if self.patient.get("sbp_target") is not None:
            return "sbp", float(self.patient["sbp_target"])
        t = self.settings.targets
        return {
            Profile.STANDARD: ("map", t.standard_map),
            Profile.CHRONIC_HYPERTENSION: ("map", t.chronic_hypertension_map),
            Profile.ELDERLY: ("map", t.elderly_map),
            Profile.TRAUMA: ("sbp", t.trauma_sbp),
            Profile.TRAUMA_TBI: ("map", t.trauma_tbi_map),
        }[self.profile]

    # ------------------------------------------------------------------ input
    def receive(self, msg: Message, now: float) -> list[AlarmEvent]:
        """Take one message that arrived at ``now`` (data time in replay).

        Data-time integrity first (``streamproc.core.signal.ordering``): a repeat or a
        message older than what the bed has taken is dropped (counted in
        ``drops``), a chunk that leaves a gap is held until the gap fills or the
        reorder window passes; held chunks are taken with the ``now`` of the call
        that releases them.
        """
        self.now = now
        self.version += 1
        out: list[AlarmEvent] = []
        if isinstance(msg, AbpChunk):
            seg = self.detector.current()
            if (
                seg is None
                or self._holding
                or seg.learning
                or msg.seq is not None
                or not continues(msg.t0, msg.fs, seg.fs, seg.expected_t0)
            ):  # not simply the next chunk: the data-time rules decide
                self._arrange(msg, now, out)
                return out
            # the usual chunk, in order (``_take_chunk``, inlined: one Python call
            # here, then the compiled path)
            self.last_data_now = now
            if self.alarms:
                self._clear(STALE, msg.ts, out)  # (what ``_data_arrived`` does)
            self.nibp_only = False
            t0 = msg.t0
            prev = self.last_wave_ts
            if prev is None or t0 - prev > self._stale_s:
                self.valid_ref = t0  # (re)start of a waveform stream
            ts = msg.ts
            self.last_wave_ts = ts
            if not self._ctx_ok:
                self._refresh_context()
            code = self.detector.step(msg, ts, self._win, self._mf, self.counts)
            if code != _STEP_DONE:  # else its beats changed nothing the protocol decides
                self._after_chunk(t0, ts, code, out)
            return out
        self._receive_other(msg, now, out)
        return out

    def _receive_other(self, msg: Message, now: float, out: list[AlarmEvent]) -> None:
        """A message that is not a chunk (what :meth:`receive` does with it)."""
        if isinstance(msg, Vitals):
            reason = self._vitals_order(msg)
            if reason is not None:
                self._drop("vitals", reason, msg.ts, self._vitals_last)
                return
        elif isinstance(msg, Infusion | Patient | Labs):
            reason = self._context_order(msg)
            if reason is not None:
                return
        self._ctx_ok = False  # any other message may change what the decisions depend on
        if isinstance(msg, Vitals):
            self._data_arrived(now, msg.ts, out)
            self._on_vitals(msg, out)
        elif isinstance(msg, Infusion):
            self._on_infusion(msg, out)
        elif isinstance(msg, Patient):
            self._on_patient(msg, out)
        elif isinstance(msg, Labs):
            self._on_labs(msg, out)
        elif isinstance(msg, Ack):
            self._on_ack(msg, out)

    @property
    def holding(self) -> bool:
        """Whether chunks after a gap wait for it to fill (``monitor.reorder_window_s``)."""
        return self._holding

    def _take_chunk(self, msg: AbpChunk, now: float, out: list[AlarmEvent]) -> None:
        """A chunk in data-time order: the detector's compiled step, then what is left
        (what :meth:`receive` does inline for the usual chunk)."""
        self.last_data_now = now
        if self.alarms:
            self._clear(STALE, msg.ts, out)  # (what ``_data_arrived`` does)
        self.nibp_only = False
        t0 = msg.t0
        prev = self.last_wave_ts
        if prev is None or t0 - prev > self._stale_s:
            self.valid_ref = t0  # (re)start of a waveform stream
        ts = msg.ts
        self.last_wave_ts = ts
        if not self._ctx_ok:
            self._refresh_context()
        code = self.detector.step(msg, ts, self._win, self._mf, self.counts)
        seg = self.detector.current()
        if seg is not None and seg.learning:  # kept while the segment decides nothing
            if seg.t0 == t0:
                self._young = [msg]
            else:
                self._young.append(msg)
        elif self._young:
            self._young = []
        if code != _STEP_DONE:  # else its beats changed nothing the protocol decides
            self._after_chunk(t0, ts, code, out)

    def _overtaken(self, msg: AbpChunk) -> bool:
        """Whether ``msg`` ends where the current segment began while that segment still
        learns: a chunk overtaken by its successor at the start of a stream (two gateway
        threads), which is then taken first (:meth:`_restart_segment`), not as ``late``."""
        seg = self.detector.current()
        return (
            seg is not None
            and seg.learning
            and bool(self._young)
            and self._young[0].t0 == seg.t0
            and continues(seg.t0, seg.fs, msg.fs, msg.t_end)
        )

    def _restart_segment(self, msg: AbpChunk, now: float, out: list[AlarmEvent]) -> None:
        """The segment begun by the chunks in ``_young`` starts again from ``msg``, which
        comes just before them: they are taken again after it. Nothing was decided on
        them (the segment was learning: no beat, no alarm), so the result is that of the
        chunks in order."""
        young, self._young = self._young, []
        if self.valid_ref == young[0].t0:
            self.valid_ref = msg.t0  # the stream (re)starts with ``msg``
        self.detector.reset()
        for chunk in (msg, *young):
            self._take_chunk(chunk, now, out)

    def _arrange(
        self, msg: AbpChunk | None, now: float, out: list[AlarmEvent], *, flush: bool = False
    ) -> None:
        """A chunk that does not simply continue the waveform (or, ``None``, the held ones)."""
        order = self._order
        if order is None:
            order = self._order = ChunkOrder(self._reorder_s)
        current = self.detector.current
        if msg is not None and self._overtaken(msg) and order.note_seq(msg):
            self._restart_segment(msg, now, out)
            msg = None  # then what is held and can go now
        steps = (
            order.release(current, flush=flush)
            if msg is None
            else order.arrange(msg, now, current, flush=flush)
        )
        for chunk, reason in steps:
            if reason is None:
                self._take_chunk(chunk, now, out)
            else:
                self._drop("abp", reason, chunk.t0, self.last_wave_ts)
        self._holding = order.holding

    def _vitals_order(self, v: Vitals) -> DropReason | None:
        """Why ``v`` is not taken (a repeat, or older than the newest reading), or None."""
        floor = self._vitals_floor
        if floor is not None and v.ts <= floor:
            return DropReason.DUPLICATE  # the last run's (``restore_data_time``)
        last = self._vitals_last
        if last is not None and v.ts <= last:
            key = (v.ts, v.source)
            seen = self._vitals_seen
            if key in seen:
                return DropReason.DUPLICATE
            if v.ts < last:
                return DropReason.LATE
        self._vitals_last = v.ts
        self._vitals_seen.append((v.ts, v.source))
        return None

    def _context_order(self, msg: Infusion | Patient | Labs) -> DropReason | None:
        """Why a context message is not taken (the same again, or older), or None; counted."""
        if isinstance(msg, Infusion):
            key: str = msg.drug.value
            kind = "infusion"
        else:
            key = kind = "patient" if isinstance(msg, Patient) else "labs"
        seen = self._context_seen
        last = seen.get(key)
        if last is not None and msg.ts <= last.ts:
            reason = None
            if msg == last:
                reason = DropReason.DUPLICATE
            elif msg.ts < last.ts:
                reason = DropReason.LATE
            if reason is not None:
                self._drop(kind, reason, msg.ts, last.ts)
                return reason
        seen[key] = msg
        return None

    def _drop(self, kind: str, reason: DropReason, ts: float, newest: float | None) -> None:
        """A message not taken: counted; the first per reason noted for the shell's log."""
        drops = self.drops
        drops.counts[reason.value] = drops.counts.get(reason.value, 0) + 1
        noted = self._noted
        if reason not in noted:
            noted.add(reason)
            drops.notices.append(DropNotice(self.bed, kind, reason, ts, newest))

    def tick(self, now: float) -> list[AlarmEvent]:
        """Time passes: standing NIBP readings, staleness, re-announcements."""
        self.now = now
        out: list[AlarmEvent] = []
        if self._holding:
            order = self._order
            if order is not None and now - order.since >= self._reorder_s:
                self.version += 1
                self._arrange(None, now, out, flush=True)  # the gap is a real one
            elif self.data_clock:
                # the bed's data waits for a chunk within the reorder window: its own
                # data decides first what the time up to ``now`` brings (as in order)
                return out
        standing = self.standing
        if (
            not out
            and not self.alarms
            and (standing is None or not standing.nibp)
            and not rules.stale_due(
                now, self.last_data_now, self.nibp_only, self._stale_s, self._nibp_stands_s
            )
        ):
            # nothing stands on the clock alone and nothing is open: only the
            # staleness check can act (what the three steps below would find)
            return []
        self.version += 1
        self._advance_standing(now, out, tick=True)
        self._check_stale(now, out)
        self._reannounce(now, out)
        return out

    # ------------------------------------------------------------------ many beds at once
    def chunk_state(self) -> tuple[SegmentArrays, FloatArray, FloatArray, float] | None:
        """What ``_kernels.step_chunks`` takes a chunk of this bed with, or ``None``.

        ``None`` when the next chunk needs Python before its compiled step (no
        waveform yet, a segment still learning, a stale-data alarm to clear,
        chunks held for reordering):
        :meth:`receive` takes it. The decisions' context is refreshed here when
        it must be (as :meth:`receive` does before a chunk's step).
        Otherwise the segment's arrays, the rolling window, the packed state
        (``ChunkArrays`` is the three together) and the last waveform time: a
        chunk that continues the segment (``step_chunks`` checks) is then taken
        as :meth:`receive` takes it, the compiled part by the kernel and the
        rest by :meth:`chunks_taken` (and :meth:`finish_chunk` when the kernel
        stops there). The segment's arrays and the window are replaced (never
        changed in place) when they grow.
        """
        last = self.last_wave_ts
        if last is None or self._holding or (self.alarms and STALE in self.alarms):
            return None
        seg = self.detector.current()
        if seg is None or seg.learning:
            return None
        if not self._ctx_ok:
            self._refresh_context()  # (what ``receive`` does first; nothing it reads changes
            # before the next chunk without a call that bumps ``version``)
        return seg.arrays, self._win, self._mf, last

    def chunks_taken(self, now: float, ts: float) -> None:
        """What :meth:`receive` records of the chunks ``step_chunks`` took, the last at ``now``
        dated ``ts`` (the segment's arrays hold the rest)."""
        self.now = now
        self.last_data_now = now
        self.nibp_only = False
        self.last_wave_ts = ts
        self.detector.synced()

    def finish_chunk(self, t0: float, ts: float, code: int) -> list[AlarmEvent]:
        """The rest of a chunk (starting at ``t0``, dated ``ts``) that ``step_chunks`` took
        and stopped at with ``code`` (after :meth:`chunks_taken`)."""
        out: list[AlarmEvent] = []
        self._after_chunk(t0, ts, code, out)
        return out

    # ------------------------------------------------------------------ waveform
    def _after_chunk(self, t0: float, ts: float, code: int, out: list[AlarmEvent]) -> None:
        """What is left of a chunk (from ``t0``, dated ``ts``) after the compiled code ``code``."""
        if code == _kernels.STEP_BEATS:
            self._on_beats(*self.detector.stepped_rows(), out)
        ref = self.valid_ref
        if ref is None:
            ref = t0
        if hold.signal_invalid_due(ts, ref, self.settings.monitor.signal_invalid_s):
            self._raise_simple(
                SIGNAL_INVALID,
                ref,
                ts,
                Priority.LOW,
                out,
                reason="No valid arterial beats: check the line (flush, "
                "zeroing, damping, disconnection) and the transducer.",
            )

    def sbp_suspended(self) -> str | None:
        """Why an SBP target's readings are not judged now (the line's state), or None."""
        return rules.sbp_suspended(self._line, self.target()[0])

    def _line_shown(self) -> int:
        """``_line`` when the open line alarms show it (-1 when not: an alarm adopted
        from before a restart, say, that the judgement has not seen)."""
        want = rules.line_alarm_kind(self._line)
        alarms = self.alarms
        if any(k in alarms for k in rules.LINE_KINDS if k != want) or (
            want is not None and want not in alarms
        ):
            return -1
        return self._line

    def _line_changed(self, ts: float, out: list[AlarmEvent]) -> None:
        """The compiled judgement (``_kernels.judge_line``) changed the line's state at ``ts``
        (or the open alarms do not show it): its technical alarms follow, and on an SBP
        target the decisions it suspends say so."""
        new = int(self._mst[state.M_LINE])
        self._line = new
        self._ctx_ok = False
        keep = rules.line_alarm_kind(new)
        for kind in rules.LINE_KINDS:
            if kind != keep:
                self._clear(kind, ts, out)
        raised = rules.line_alarm(new, self.target()[0])
        if raised is not None:
            kind, priority, reason, extra = raised
            self._raise_simple(kind, ts, ts, priority, out, reason=reason, extra=extra)
        suspended = self.sbp_suspended()
        if self.target()[0] != "sbp":
            return
        alarm = self.alarms.get(HYPOTENSION)
        if (
            alarm is not None
            and self.value is not None
            and rules.suspension_changed(alarm.details, suspended)
        ):
            metric, target = self.target()
            details = self._hypo_details(metric, self.value, target)
            out.append(self._apply(alarm, Trigger.UPDATE, ts, details=details))
        flags = (
            hold.sbp_at_target_held(self._timers, self.settings.hypotension.hold_s),
            self._flags[1],
        )
        if flags != self._flags:
            self._flags = flags
            self._advise(ts, out)

    @property
    def window(self) -> FloatArray:
        """The rolling window's valid beats: rows of end, MAP, SBP, DBP, HR."""
        return self._win[: int(self._mst[state.M_WIN_N]), : state.W_VALUES]

    def _refresh_context(self) -> None:
        """Put :meth:`_context` where the compiled path reads it (``state.MF_CTX``)."""
        self._ctx[:] = self._context()
        self._ctx_ok = True

    def _context(self) -> FloatArray:
        """What the protocol's decisions depend on, for ``_kernels.advance_beats``.

        Read from the target, the infusions, the open alarms, the advisories'
        flags and the trend's clock: whatever changes one of them (any message
        but a chunk, any alarm transition, any decision) drops the cached copy.
        """
        metric, target = self.target()
        alarms = self.alarms
        alarm = alarms.get(HYPOTENSION)
        code, rank, ack_value = rules.alarm_code(alarm), 0, math.nan
        if alarm is not None:
            rank = alarm.priority.rank
            if code == hold.ALARM_ACKED and alarm.ack_value is not None:
                ack_value = alarm.ack_value
        step = self._step
        if step is None:
            step = self._step = current_step(self.infusions)
        wake = math.inf
        if self.data_clock and alarms:
            wake = rules.announcement_wake(alarms.values(), self.settings.alarms) - _WAKE_MARGIN_S
        return np.array(
            (
                metric == "sbp",
                target,
                SIGNAL_INVALID in alarms,
                code,
                rank,
                ack_value,
                step is Step.REFRACTORY,
                self._flags[0],
                self._flags[1],
                wake,
                math.nan if self._trend_ts is None else self._trend_ts,
                self._line_shown(),
            ),
            np.float64,
        )

    def _on_beats(self, rows: FloatArray, i: int, out: list[AlarmEvent]) -> None:
        """A chunk's beats (``_kernels.classify`` rows) from ``rows[i]`` on.

        The compiled path takes the beats that change nothing the protocol
        decides (most of them); it stopped after ``rows[i - 1]`` because a
        decision may change there (``state.M_DECIDE``), or for room in the
        window. The beat is decided here, by the same code as every other
        observation, and the compiled path takes the next beats.
        """
        n = rows.shape[0]
        mst = self._mst
        ms = self.settings.monitor
        while True:
            decide = mst[state.M_DECIDE]
            if decide:
                end = float(rows[i - 1, state.B_END])
                if int(mst[state.M_LINE]) != self._line_shown():
                    self._line_changed(end, out)
                if hold.signal_valid_again(self._timers, ms.signal_valid_clear_s):
                    self._clear(SIGNAL_INVALID, end, out)
                if decide == _kernels.DECIDE_OBSERVED:
                    metric, target = self.target()
                    value, mp = float(mst[state.M_VALUE]), float(mst[state.M_MAP])
                    self._decide(end, value, mp, metric, target, out, waveform=True)
            elif i < n:  # the window is full (a fast rhythm): room for more beats
                win = self._win
                self._win = np.empty((2 * win.shape[0], state.W_COLUMNS), np.float64)
                self._win[: win.shape[0]] = win
            if i >= n:
                return
            if not self._ctx_ok:
                self._refresh_context()
            i = _kernels.advance_beats(rows, i, self._win, self._mf, self.counts)

    # ------------------------------------------------------------------ numerics
    def _on_vitals(self, v: Vitals, out: list[AlarmEvent]) -> None:
        hs = self.settings.hypotension
        if v.source is VitalsSource.ART:
            self.nibp_only = False
        wave_fresh = (
            self.last_wave_ts is not None and v.ts - self.last_wave_ts <= hs.waveform_fresh_s
        )
        if wave_fresh:
            return  # the waveform is the better source; the monitor's numerics come from it
        self._advance_standing(v.ts, out)
        mean = v.mean_pressure
        if mean is None and v.sbp is None:
            return
        stands = hs.nibp_stands_s if v.source is VitalsSource.NIBP else hs.art_numeric_stands_s
        self.standing = _Standing(
            v.ts, mean, v.sbp, v.ts + stands, v.ts, v.source is VitalsSource.NIBP
        )
        self.map, self.sbp, self.dbp = mean, v.sbp, v.dbp
        if v.hr is not None:
            self.hr = v.hr
        # a new reading counts at once (dt 0): it starts or breaks a run
        self._observe(v.ts, 0.0, mean, v.sbp, out)

    def _advance_standing(self, to: float, out: list[AlarmEvent], *, tick: bool = False) -> None:
        """Count the time a standing numeric covers, up to ``to``.

        Only an NIBP reading stands on the clock alone (``tick``); an art-line
        numeric covers the interval to the next numeric, if that comes soon.
        """
        s = self.standing
        if s is None or (tick and not s.nibp):
            return
        if not s.nibp and to > s.valid_until:
            self.standing = None  # the next numeric came too late: a gap, not data
            return
        end = min(to, s.valid_until)
        if end <= s.evaluated_to:
            return
        dt = end - s.evaluated_to
        s.evaluated_to = end
        self._observe(end, dt, s.map, s.sbp, out)
        if end >= s.valid_until:
            self.standing = None

    # ------------------------------------------------------------------ the condition
    def _observe(
        self,
        ts: float,
        dt: float,
        map_value: float | None,
        sbp_value: float | None,
        out: list[AlarmEvent],
    ) -> None:
        hs = self.settings.hypotension
        metric, target = self.target()
        value = map_value if metric == "map" else sbp_value
        if value is None:
            return
        self.value = value
        self.obs_ts = ts
        hold.observe_pressure(
            self._timers,
            value,
            math.nan if map_value is None else map_value,
            target,
            metric_sbp=metric == "sbp",
            suspended=False,  # a numeric's SBP is judged (not the line's)
            ts=ts,
            dt=dt,
            gap=hs.max_invalid_gap_s,
            critical_map=hs.critical_map,
            clear_margin=hs.clear_margin,
        )
        self._decide(ts, value, map_value, metric, target, out)

    def _decide(  # noqa: PLR0917 - the observation, as ``_observe`` has it
        self,
        ts: float,
        value: float,
        map_value: float | None,
        metric: str,
        target: float,
        out: list[AlarmEvent],
        *,
        waveform: bool = False,
    ) -> None:
        """The protocol's decisions on an observation whose hold timers are counted.

        A ``waveform`` observation's SBP is not judged while the line is not fine
        (``sbp_suspended``); a numeric's (a cuff, the monitor's own) is."""
        self._ctx_ok = False  # the trend's clock, the flags, the alarms may change here
        hs = self.settings.hypotension
        suspended = waveform and self.sbp_suspended() is not None
        trend_ts = self._trend_ts
        if trend_ts is not None and ts < trend_ts:
            trend_ts = self._trend_ts = None  # data time went back: restart the trend's clock
        if map_value is not None and hold.trend_due(
            ts, math.nan if trend_ts is None else trend_ts, self.settings.monitor.trend_step_s
        ):
            self.trend.append(round(map_value, 1))
            self._trend_ts = ts
        if self.data_clock and self.alarms:
            self._reannounce(ts, out)
        step = self._step
        if step is None:
            step = self._step = current_step(self.infusions)
        alarm = self.alarms.get(HYPOTENSION)
        move, want = hold.hypotension_move(
            self._timers,
            rules.alarm_code(alarm),
            0 if alarm is None else alarm.priority.rank,
            math.nan if alarm is None or alarm.ack_value is None else alarm.ack_value,
            value,
            suspended,
            step is Step.REFRACTORY,
            hs.hold_s,
            hs.critical_hold_s,
            hs.clear_hold_s,
            self.settings.alarms.worsen_mmhg,
            Priority.MEDIUM.rank,
            Priority.HIGH.rank,
        )
        if move != hold.MOVE_NONE:
            self._move_hypotension(move, want, alarm, ts, (metric, value, target), out)
        at_target = hold.at_target_flag(value, target, suspended, self._flags[1])
        flags = (hold.sbp_at_target_held(self._timers, hs.hold_s), at_target)
        if flags != self._flags:
            self._flags = flags
            self._advise(ts, out)

    def _move_hypotension(  # noqa: PLR0917 - the move, the alarm, the observation
        self,
        move: int,
        want: float,
        alarm: Alarm | None,
        ts: float,
        observed: tuple[str, float, float],
        out: list[AlarmEvent],
    ) -> None:
        """Apply the hypotension alarm's ``move`` (``hold.hypotension_move``) at ``ts``;
        ``want`` is the rank of the priority it wants."""
        details = self._hypo_details(*observed)
        trigger = rules.MOVE_TRIGGERS[move]
        if alarm is None:  # (``MOVE_RAISE``: the run began where the first timer began)
            starts = [s for s in (self.below.start, self.critical.start) if s is not None]
            alarm = self._new_alarm(HYPOTENSION, min(starts))
            self.alarms[HYPOTENSION] = alarm
        elif trigger is Trigger.CLEAR:
            self._clear(HYPOTENSION, ts, out, details=details)
            return
        prio: Priority | None = rules.priority_of_rank(want)
        if trigger is Trigger.WORSEN and want <= alarm.priority.rank:
            prio = None  # worse than acknowledged, not of a higher priority
        out.append(self._apply(alarm, trigger, ts, priority=prio, details=details))

    def _hypo_details(self, metric: str, value: float, target: float) -> dict[str, Any]:
        ms = self.settings.monitor
        rec = recommend(
            self.infusions,
            profile=self.profile,
            weight_kg=self.patient.get("weight_kg"),
            crystalloid_ml=self.patient.get("crystalloid_ml"),
            crystalloid_ml_per_kg=ms.crystalloid_ml_per_kg,
            peritonitis=bool(self.patient.get("peritonitis")),
            has_arterial_line=not self.nibp_only,
            high_dose_nee=ms.high_dose_nee,
        )
        nee = ne_equivalent(self.infusions, self.patient.get("weight_kg"))
        details: dict[str, Any] = {
            "metric": metric,
            "value": round(value, 1),
            "target": round(target, 1),
            "profile": self.profile.value,
            "on_norepinephrine": Drug.NOREPINEPHRINE in running(self.infusions),
            "recommendation": rec.as_text(),
            "step": rec.step.value,
            "checks": list(rec.checks),
            "cautions": list(rec.cautions),
            "running": sorted(d.value for d in running(self.infusions)),
            # vasopressors as one norepinephrine-equivalent dose, mcg/kg/min (a lower bound
            # when a running dose is unknown: ``ne_equivalent_unknown`` names those)
            "ne_equivalent": round(nee.value, 3),
            "ne_equivalent_unknown": [d.value for d in nee.unknown],
            "sources": list(rec.sources),
            "disclaimer": DISCLAIMER,
        }
        # said while the line is not fine, and (null) once it is again
        suspended = self.sbp_suspended()
        alarm = self.alarms.get(HYPOTENSION)
        if suspended is not None or (alarm is not None and "sbp_suspended" in alarm.details):
            details["sbp_suspended"] = suspended
        return details

    # ------------------------------------------------------------------ context
    def _on_infusion(self, inf: Infusion, out: list[AlarmEvent]) -> None:
        self.infusions[inf.drug] = inf
        self._step = None
        self._nee = None
        if inf.drug is Drug.NOREPINEPHRINE and inf.running:
            dose = norepinephrine_dose(inf, self.patient.get("weight_kg"))
            if not self.ne_doses or self.ne_doses[-1][1:] != dose:
                self.ne_doses.append((inf.ts, *dose))
                del self.ne_doses[:-2]
        self._refresh_hypotension(inf.ts, out)
        self._advise(inf.ts, out)

    def _on_patient(self, p: Patient, out: list[AlarmEvent]) -> None:
        for name in (
            "profile",
            "age",
            "weight_kg",
            "map_target",
            "sbp_target",
            "crystalloid_ml",
            "peritonitis",
        ):
            value = getattr(p, name)
            if value is not None:
                self.patient[name] = value
        self._target = None
        self._nee = None
        self._refresh_hypotension(p.ts, out)
        self._advise(p.ts, out)

    def _on_labs(self, labs: Labs, out: list[AlarmEvent]) -> None:
        for name in ("lactate", "urine_ml_kg_h", "scvo2"):
            value = getattr(labs, name)
            if value is not None:
                if name in self.labs:
                    self.prev_labs[name] = self.labs[name]
                self.labs[name] = (labs.ts, float(value))
        self._advise(labs.ts, out)

    def _refresh_hypotension(self, ts: float, out: list[AlarmEvent]) -> None:
        """Republish an open hypotension alarm whose advice has changed (the step, or a
        dose crossing the high-dose threshold)."""
        alarm = self.alarms.get(HYPOTENSION)
        if alarm is None or self.value is None:
            return
        metric, target = self.target()
        details = self._hypo_details(metric, self.value, target)
        if rules.advice_changed(alarm.details, details):
            out.append(self._apply(alarm, Trigger.UPDATE, ts, details=details))

    # ------------------------------------------------------------------ advisories
    def _advisories(self, ts: float) -> dict[AdvisoryKind, str]:
        """The advisories that hold now (``rules.advisories``), from this bed's facts."""
        return rules.advisories(
            self.settings,
            ts,
            self.infusions,
            self.patient.get("weight_kg"),
            self.profile,
            hold.sbp_at_target_held(self._timers, self.settings.hypotension.hold_s),
            self.labs,
            self.prev_labs,
            self.ne_doses,
            at_target=self.value is not None and self.value >= self.target()[1],
            hypotension_open=HYPOTENSION in self.alarms,
        )

    def _advise(self, ts: float, out: list[AlarmEvent]) -> None:
        holds = self._advisories(ts)
        suspended = self.sbp_suspended()
        for kind in AdvisoryKind:
            if kind in holds:
                self._raise_simple(kind.value, ts, ts, Priority.LOW, out, reason=holds[kind])
            elif kind is AdvisoryKind.PREMATURE_NE_TRAUMA and suspended is not None:
                # not resolved: its SBP readings are not judged while the line is not fine
                self._clear(kind.value, ts, out, details={"sbp_suspended": suspended})
            else:
                self._clear(kind.value, ts, out)

    # ------------------------------------------------------------------ lifecycle
    def _apply(self, alarm: Alarm, trigger: Trigger, ts: float, **kw: Any) -> AlarmEvent:
        """Move an alarm at data time ``ts``; its timers run on the processor's ``now``."""
        self._ctx_ok = False
        return alarm.apply(trigger, ts, at=None if self.data_clock else self.now, **kw)

    def _raise_simple(
        self,
        kind: str,
        onset: float,
        ts: float,
        priority: Priority,
        out: list[AlarmEvent],
        *,
        reason: str,
        extra: dict[str, Any] | None = None,
    ) -> None:
        alarm = self.alarms.get(kind)
        if alarm is not None:
            if alarm.details.get("reason") != reason:
                out.append(self._apply(alarm, Trigger.UPDATE, ts, details={"reason": reason}))
            return
        alarm = self._new_alarm(kind, onset)
        self.alarms[kind] = alarm
        out.append(
            self._apply(
                alarm,
                Trigger.RAISE,
                ts,
                priority=priority,
                details={"reason": reason, **(extra or {}), "disclaimer": DISCLAIMER},
            )
        )

    def _clear(
        self, kind: str, ts: float, out: list[AlarmEvent], details: dict[str, Any] | None = None
    ) -> None:
        alarm = self.alarms.pop(kind, None)
        if alarm is not None:
            out.append(self._apply(alarm, Trigger.CLEAR, ts, details=details))

    def _on_ack(self, ack: Ack, out: list[AlarmEvent]) -> bool:
        for alarm in self.alarms.values():
            if alarm.alarm_id == ack.alarm_id:
                if alarm.state is AlarmState.ACTIVE:
                    out.append(self._apply(alarm, Trigger.ACK, ack.ts, by=ack.by, value=self.value))
                return True
        return False

    def knows_alarm(self, alarm_id: str) -> bool:
        return any(a.alarm_id == alarm_id for a in self.alarms.values())

    def _data_arrived(self, now: float, ts: float, out: list[AlarmEvent]) -> None:
        self.last_data_now = now
        self._clear(STALE, ts, out)

    def _check_stale(self, now: float, out: list[AlarmEvent]) -> None:
        if self.last_data_now is None or STALE in self.alarms:
            return
        if rules.stale_due(
            now, self.last_data_now, self.nibp_only, self._stale_s, self._nibp_stands_s
        ):
            self._raise_simple(
                STALE,
                self.last_data_now,
                now,
                Priority.LOW,
                out,
                reason=f"No data from this bed for {now - self.last_data_now:.0f} s:"
                " check the monitor, the gateway and the network.",
            )

    def _reannounce(self, now: float, out: list[AlarmEvent]) -> None:
        als = self.settings.alarms
        for alarm in self.alarms.values():
            due = rules.announcement_due(alarm, now, als)
            if due is not None:
                trigger, prio = due
                out.append(
                    self._apply(
                        alarm, trigger, now, priority=prio, details=self._now_details(alarm)
                    )
                )

    def _now_details(self, alarm: Alarm) -> dict[str, Any] | None:
        """What a re-announcement of ``alarm`` says now: for ``hypotension`` the current
        value, target, step and sources (not those of when it was raised)."""
        value = self.value
        if alarm.kind != HYPOTENSION or value is None:
            return None
        metric, target = self.target()
        return self._hypo_details(metric, value, target)

    # ------------------------------------------------------------------ views
    def restore(self, alarm: Alarm) -> None:
        """Adopt an open alarm published before a restart (same id, same state)."""
        self.version += 1
        self._ctx_ok = False
        self.alarms[alarm.kind] = alarm
        number = alarm_id_number(alarm.alarm_id)
        if number is not None:
            self.adopt_id_numbers({alarm.kind: number})

    def restore_last_data(self, last_data: float, *, nibp_only: bool, now: float) -> None:
        """Adopt the last run's last data time (after a restart), so that the bed goes
        ``data_stale`` on time if it never sends again.

        ``last_data`` is on the processor's clock (the time the last data arrived, as
        :attr:`last_data_now`), and so is ``now``: the last run's clock and this one's
        are taken to be the same (the host's wall clock). A time after ``now`` counts as
        ``now``. Data that has arrived since the restart wins: nothing is changed then.
        """
        if self.last_data_now is not None:
            return
        self.version += 1
        self.last_data_now = min(last_data, now)
        self.nibp_only = nibp_only

    def restore_data_time(self, ts: float) -> None:
        """After a restart: the last run took this bed's data up to data time ``ts``.

        Data re-delivered from before it (a broker's persistent session, a gateway
        re-sending) is then dropped as the last run's (``duplicate``) instead of
        being taken again: waveform samples up to ``ts`` and ``vitals`` dated at or
        before it. Context messages (``infusion``, ``patient``, ``labs``) are taken
        again: a new run needs them. Only before the bed's first new data.
        """
        if self.last_wave_ts is not None or self._vitals_last is not None:
            return
        order = self._order
        if order is None:
            order = self._order = ChunkOrder(self._reorder_s)
        order.floor = ts
        self._vitals_floor = ts

    def id_numbers(self) -> dict[str, int]:
        """The last alarm-id number issued per kind (to carry over an eviction)."""
        return dict(self._id_ms)

    def adopt_id_numbers(self, numbers: dict[str, int]) -> None:
        """Never issue an id at or below ``numbers`` (this bed's before an eviction)."""
        for kind, ms in numbers.items():
            self._id_ms[kind] = max(self._id_ms.get(kind, -1), ms)

    def _new_alarm(self, kind: str, onset: float) -> Alarm:
        """A new episode; its id is never one this bed has used for the kind before.

        The id carries the onset in ms; when data time repeats or goes back (a pump
        re-sending the same ts, a gateway clock jump) the number is bumped past the
        last one issued, so an id always names one episode.
        """
        ms = max(round(onset * 1000), self._id_ms.get(kind, -1) + 1)
        self._id_ms[kind] = ms
        return Alarm(self.bed, kind, onset, alarm_id=f"{self.bed.unit}.{self.bed.bed}.{kind}.{ms}")

    def status(self) -> BedStatus:
        metric, target = self.target()
        return BedStatus(
            bed=self.bed,
            map=self.map,
            sbp=self.sbp,
            dbp=self.dbp,
            hr=self.hr,
            metric=metric,
            target=target,
            profile=self.profile.value,
            infusions=tuple(
                sorted(
                    (d.value, i.rate, i.unit.value) for d, i in self.infusions.items() if i.running
                )
            ),
            open_alarms=tuple(sorted(self.alarms)),
            last_data=self.last_data_now,
            ts=self.obs_ts,
            trend=tuple(self.trend),
            trend_step_s=self.settings.monitor.trend_step_s,
            ne_equivalent=self._ne_equivalent(),
            nibp_only=self.nibp_only,
        )

    def _ne_equivalent(self) -> float | None:
        """The summary's norepinephrine-equivalent dose (kept until the infusions or the
        patient change: the summary is built for every bed every few seconds)."""
        nee = self._nee
        if nee is None:
            if running(self.infusions):
                value = ne_equivalent(self.infusions, self.patient.get("weight_kg")).value
                nee = self._nee = (round(value, 3),)
            else:
                nee = self._nee = (None,)
        return nee[0]


_warm: list[bool] = []


def warm_up() -> None:
    """Get the compiled per-chunk path ready now rather than on the first live chunk.

    :func:`streamproc.core.signal.beats.warm_up`, then a monitor over a few chunks
    (``_kernels.step_chunk`` and ``advance_beats`` with the argument types the
    monitor passes), once per process.
    """
    if _warm:
        return
    beats.warm_up()
    mon = BedMonitor(BedId("warm", "up"), Settings())
    for chunk in beats.warm_up_chunks():
        mon.receive(chunk, chunk.ts)
    compiled = mon.chunk_state()  # the decisions' context refreshed, as for a chunk
    if compiled is None:  # pragma: no cover - the warm-up chunks leave the segment learned
        raise RuntimeError("warm_up: the monitor did not learn the warm-up segment")
    _, win, mf, _ = compiled
    rows = np.zeros((1, state.B_COLUMNS), np.float64)
    _kernels.advance_beats(rows, 0, win, mf, mon.counts)
    _warm.append(True)
