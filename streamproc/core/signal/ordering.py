"""Data-time integrity per bed: repeats and old data are dropped, reordered chunks put back.

A gateway publishes at least once (MQTT QoS 1): a message may come twice, two
gateway threads may deliver neighbouring chunks the other way round, and a
gateway that restarts may send its last minutes again. None of that is new
data, and none of it may start, extend, clear or re-raise an alarm. The rules
(documented for gateways in ``docs/wire-format-notes.md``):

- ``abp`` chunks, by data time (``t0``) and, where the gateway sends it, ``seq``:

  - a chunk that continues what the bed has taken (within half a sample) is
    taken at once (the usual chunk: it never reaches this module's slow part,
    see :meth:`BedMonitor.receive <streamproc.core.monitor.BedMonitor.receive>`);
  - a chunk that leaves a gap (its predecessor missing) is *held* until the
    gap fills (then the held chunks are taken in order) or until the held
    data reaches more than ``monitor.reorder_window_s`` past the end of what
    was taken (then the gap is accepted as a real gap: the oldest held chunk
    starts a new segment). A gap longer than the window is accepted at once;
  - a chunk that ends exactly where the bed's current segment began, while that
    segment is still learning (its first ``beats.learning_s``: no beat, nothing
    decided), was overtaken at the start of a stream: the segment starts again
    from it and its chunks are taken again after it (``BedMonitor``);
  - any other chunk that begins before the end of what was taken is dropped:
    ``duplicate`` when all its data was taken already (the same ``t0``, or
    any cut of data taken), or when its ``seq`` is that of a chunk taken or
    held within the reorder window of data time; ``late`` otherwise (it
    would fill a gap already accepted). One that overlaps the end on the
    same sample grid (a gateway that re-cuts its chunks) is trimmed to its
    new samples;

- ``vitals``, by ``ts``: one dated before the newest taken is dropped
  (``duplicate`` if the same reading, ``ts`` and ``source``, was taken
  recently, else ``late``); one with the ``ts`` and ``source`` of the newest
  is a ``duplicate``. Numerics are never held: a reading stands from its time.

- context (``infusion`` per drug, ``patient``, ``labs``), by ``ts``: one dated
  before the newest of its kind is ``late``; the very message again (same
  ``ts``, same fields) is a ``duplicate``.

Pure: no clock, no I/O. A dropped message is counted by reason in
:class:`Drops` (``EngineStats.dropped``); the first of each reason per bed is
also left as a :class:`DropNotice` for the shell to log.
"""

from __future__ import annotations

import bisect
import math
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING, Final

from streamproc.core.protocol.messages import AbpChunk, BedId, continues, sample_time

if TYPE_CHECKING:
    from streamproc.core.signal.beats import _Segment

__all__ = ["ChunkOrder", "DropNotice", "DropReason", "Drops", "Taken"]


class DropReason(StrEnum):
    """Why a message was dropped (``streamproc_messages_dropped_total{reason}``)."""

    #: Data the bed has taken already (a QoS 1 re-delivery, a gateway's replay).
    DUPLICATE = "duplicate"
    #: Older than what the bed has taken, and not a repeat of it (past the reorder window).
    LATE = "late"


#: Notices kept for the shell between two reads (the first drop per bed and reason).
NOTICES_MAX: Final = 1024
#: Earlier segments of a bed remembered to tell a duplicate from a late chunk.
SPANS_MAX: Final = 8
#: ``seq`` numbers remembered per bed.
SEQS_MAX: Final = 64


@dataclass(frozen=True, slots=True)
class DropNotice:
    """The first message of a bed dropped for ``reason``: what the shell logs."""

    bed: BedId
    kind: str
    reason: DropReason
    #: Data time of the dropped message (a chunk's ``t0``).
    ts: float
    #: The newest data time the bed had taken of that kind (None: nothing yet).
    newest: float | None


class Drops:
    """The engine's count of dropped messages per reason, and the notices not yet read."""

    __slots__ = ("counts", "notices")

    def __init__(self) -> None:
        self.counts: dict[str, int] = {}
        self.notices: deque[DropNotice] = deque(maxlen=NOTICES_MAX)

    def take_notices(self) -> list[DropNotice]:
        """The notices since the last call (at most ``NOTICES_MAX``, the newest)."""
        out = list(self.notices)
        self.notices.clear()
        return out


#: What :meth:`ChunkOrder.arrange` yields: a chunk to take (reason None) or to drop.
Taken = tuple[AbpChunk, DropReason | None]


def _t0(chunk: AbpChunk) -> float:
    return chunk.t0


class ChunkOrder:
    """One bed's ``abp`` chunks put in data-time order (the rules in the module's docstring).

    :meth:`arrange` takes a chunk that does not simply continue the bed's
    waveform and yields what to do, in order: each chunk to take (the
    caller takes it before asking for the next: the end of what was taken is
    read from the detector's current segment each time) or to drop.
    """

    __slots__ = ("_seqs", "_spans", "floor", "held", "since", "window")

    def __init__(self, window: float) -> None:
        self.window = window
        #: Chunks waiting for a gap before them to fill, in ``t0`` order.
        self.held: list[AbpChunk] = []
        #: The processor's time at which the oldest hold began (``now`` of that call).
        self.since = math.nan
        #: Earlier segments' data (start, end): what was taken before the last gaps.
        self._spans: deque[tuple[float, float]] = deque(maxlen=SPANS_MAX)
        #: ``seq`` -> ``t0`` of the chunks taken or held (insertion order: oldest first).
        self._seqs: dict[int, float] = {}
        #: Data time up to which a run before a restart took this bed's waveform
        #: (``BedMonitor.restore_data_time``): what a new run must not take again.
        self.floor: float | None = None

    @property
    def holding(self) -> bool:
        return bool(self.held)

    def arrange(
        self,
        chunk: AbpChunk,
        now: float,
        current: Callable[[], _Segment | None],
        *,
        flush: bool = False,
    ) -> Iterator[Taken]:
        """``chunk`` (if any) arrived at ``now``; then what is held and can go (all, ``flush``)."""
        seq = chunk.seq
        if seq is not None:
            seen = self._seqs.get(seq)
            if seen is not None and math.fabs(chunk.t0 - seen) <= self.window:
                yield chunk, DropReason.DUPLICATE
                return
            self._remember(seq, chunk.t0)
        seg = current()
        if seg is None:  # the bed's first chunk starts its data clock
            floor = self.floor
            if floor is not None and chunk.t0 < floor:
                k = math.ceil((floor - chunk.t0) * chunk.fs - 1e-6)
                if k >= chunk.samples.size:  # taken before the restart
                    yield chunk, DropReason.DUPLICATE
                    return
                t0 = sample_time(chunk.t0, chunk.fs, k)
                chunk = AbpChunk(t0, chunk.fs, chunk.samples[k:], seq)
            yield chunk, None
            return
        end = seg.expected_t0
        tol = 0.5 / chunk.fs
        if chunk.t0 < end - tol:
            trimmed = self._trim(chunk, seg)
            if trimmed is None:
                yield chunk, self._old(chunk, seg)
                return
            chunk = trimmed
        if chunk.t0 <= end + tol:
            self._note_take(chunk, seg)
            yield chunk, None
        else:
            held = self.held
            if any(math.fabs(h.t0 - chunk.t0) <= tol for h in held):
                yield chunk, DropReason.DUPLICATE
                return
            if not held:
                self.since = now
            bisect.insort(held, chunk, key=_t0)
        yield from self.release(current, flush=flush)

    def note_seq(self, chunk: AbpChunk) -> bool:
        """Whether ``chunk`` is new by its ``seq`` (remembered then), for a chunk taken
        outside :meth:`arrange`; False: a ``seq`` taken or held within the window."""
        seq = chunk.seq
        if seq is None:
            return True
        seen = self._seqs.get(seq)
        if seen is not None and math.fabs(chunk.t0 - seen) <= self.window:
            return False
        self._remember(seq, chunk.t0)
        return True

    def release(
        self, current: Callable[[], _Segment | None], *, flush: bool = False
    ) -> Iterator[Taken]:
        """The held chunks that can go now: those the taken data reaches, and past the window."""
        held = self.held
        while held:
            seg = current()
            if seg is None:  # (cannot be: something was taken before anything was held)
                break
            end = seg.expected_t0
            h = held[0]
            tol = 0.5 / h.fs
            if h.t0 < end - tol:  # an earlier one covered it (a re-cut, or a duplicate)
                del held[0]
                trimmed = self._trim(h, seg)
                if trimmed is None:
                    yield h, self._old(h, seg)
                    continue
                h = trimmed
            elif h.t0 > end + tol:  # a gap before it
                newest = max(c.t_end for c in held)
                if not flush and newest - end <= self.window:
                    break  # the gap may still fill
                del held[0]
            else:
                del held[0]
            self._note_take(h, seg)
            yield h, None

    def _note_take(self, chunk: AbpChunk, seg: _Segment) -> None:
        """``chunk`` is taken: remember the segment it ends, if it does not continue it."""
        if not continues(chunk.t0, chunk.fs, seg.fs, seg.expected_t0):
            self._spans.append((seg.t0, seg.expected_t0))

    def _old(self, chunk: AbpChunk, seg: _Segment) -> DropReason:
        """A chunk that begins before the end of what was taken: a repeat of it, or late."""
        tol = 0.5 / chunk.fs
        lo, hi = chunk.t0 + tol, chunk.t_end - tol
        if seg.t0 <= lo and hi <= seg.expected_t0:
            return DropReason.DUPLICATE
        for a, b in self._spans:
            if a <= lo and hi <= b:
                return DropReason.DUPLICATE
        return DropReason.LATE

    @staticmethod
    def _trim(chunk: AbpChunk, seg: _Segment) -> AbpChunk | None:
        """The part of ``chunk`` past the end of ``seg``, if it lies on the segment's grid."""
        if chunk.fs != seg.fs:
            return None
        k = round((seg.expected_t0 - chunk.t0) * chunk.fs)
        if not 0 < k < chunk.samples.size:
            return None
        t0 = sample_time(chunk.t0, chunk.fs, k)
        if not continues(t0, chunk.fs, seg.fs, seg.expected_t0):
            return None
        return AbpChunk(t0, chunk.fs, chunk.samples[k:], chunk.seq)

    def _remember(self, seq: int, t0: float) -> None:
        seqs = self._seqs
        seqs.pop(seq, None)
        seqs[seq] = t0
        if len(seqs) > SEQS_MAX:
            del seqs[next(iter(seqs))]
