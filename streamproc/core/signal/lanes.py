"""The table behind a batch's chunk rows (``Engine.receive``): each bed's arrays for one call.

``_kernels.step_chunks`` takes the chunks of many beds in one call. It finds a
bed's state through a slot: a row of the numba typed list ``table`` (the
segment's and the monitor's arrays, :data:`~streamproc.core.signal.state.ChunkArrays`)
and of the arrays beside it. A slot is *armed* when its bed's next chunk needs no
Python before its compiled step (:meth:`ChunkSource.chunk_state`); the engine
re-arms a slot from its monitor before each batch and after any chunk of that bed
the kernel left to Python, so an armed slot always holds the monitor's current arrays.

The lanes know of a monitor only :class:`ChunkSource` (its arrays and its
``version``), never its alarms: the engine's ``Lanes[BedMonitor]`` holds the
monitors and gets them back typed as such.
"""

from __future__ import annotations

from typing import Any, Generic, Protocol, TypeVar

import numpy as np
import numpy.typing as npt

from streamproc.core import _compile
from streamproc.core.protocol.messages import BedId
from streamproc.core.signal import _kernels
from streamproc.core.signal.state import STOP_SIZE, ChunkArrays, FloatArray, SegmentArrays

__all__ = ["ChunkSource", "Lanes"]


class ChunkSource(Protocol):
    """What the lanes read of a bed's monitor (``monitor.BedMonitor`` is one)."""

    #: Bumped by every change that may arm or disarm its slot.
    version: int

    def chunk_state(self) -> tuple[SegmentArrays, FloatArray, FloatArray, float] | None:
        """The segment's arrays, the window, the packed state and the last waveform
        time, or ``None`` when the next chunk needs Python before its compiled step."""
        ...


M = TypeVar("M", bound=ChunkSource)


def _placeholder() -> ChunkArrays:
    """A row for a slot not armed (never read: the kernel reads armed slots only)."""
    f1 = np.zeros(1, np.float64)
    f2 = np.zeros((1, 1), np.float64)
    return (f1, np.zeros(1, np.int64), f1, f1, f2, f1, f2, f2, f1)


class Lanes(Generic[M]):
    """Slots of the monitors that take chunks through ``_kernels.step_chunks``."""

    __slots__ = (
        "_cached",
        "_free",
        "_generation",
        "_placeholder",
        "_rows",
        "_table",
        "armed",
        "epoch",
        "last_i",
        "last_ts",
        "mark",
        "monitors",
        "slot_of",
        "stop",
        "touched",
        "versions",
    )

    def __init__(self) -> None:
        self._placeholder = _placeholder()
        #: Per slot: the arrays (``ChunkArrays``), where the compiled call reads them.
        # (made holding slot 0's row, a placeholder: the list's type comes from its
        # first item; only compiled calls touch it, its own methods compile per process)
        self._table: Any = _kernels.table_new(self._placeholder)
        #: (the kernels' mode the table was made in: see ``table``)
        self._generation = _compile.generation()
        #: Per slot: the row last written to the table (None: the placeholder).
        self._rows: list[ChunkArrays | None] = []
        self.slot_of: dict[BedId, int] = {}
        #: Per slot: its monitor (``None``: free), the arrays last written to ``table``.
        self.monitors: list[M | None] = []
        #: (the segment's arrays and the window: replaced, never changed, when they grow)
        self._cached: list[tuple[SegmentArrays, FloatArray] | None] = []
        self._free: list[int] = []
        #: Per slot: the monitor's ``version`` when the slot was last armed or disarmed
        #: (the same version: nothing to do again).
        self.versions: list[int] = []
        self.armed: npt.NDArray[np.uint8] = np.zeros(0, np.uint8)
        self.last_ts: npt.NDArray[np.float64] = np.zeros(0, np.float64)
        self.last_i: npt.NDArray[np.int64] = np.zeros(0, np.int64)
        self.mark: npt.NDArray[np.int64] = np.zeros(0, np.int64)
        self.touched: npt.NDArray[np.int64] = np.zeros(0, np.int64)
        self.stop: npt.NDArray[np.int64] = np.zeros(STOP_SIZE, np.int64)
        #: Numbers the kernel's calls (``mark``): a slot is listed once per call.
        self.epoch = 0

    def __len__(self) -> int:
        return len(self.slot_of)

    @property
    def table(self) -> Any:
        """The rows, as the kernels in use take them.

        A numba typed list while compiled, a Python list while interpreted
        (:mod:`streamproc.core._compile`): made anew, the same rows, after a switch.
        """
        if self._generation != _compile.generation():
            self._remake()
        return self._table

    def _remake(self) -> None:
        placeholder = self._placeholder
        rows = [placeholder if row is None else row for row in self._rows] or [placeholder]
        table = _kernels.table_new(rows[0])
        for row in rows[1:]:
            _kernels.table_append(table, row)
        self._table = table
        self._generation = _compile.generation()

    def _set(self, s: int, row: ChunkArrays | None) -> None:
        self._rows[s] = row
        _kernels.table_set(self.table, s, self._placeholder if row is None else row)

    def slot(self, bed: BedId, mon: M) -> int:
        """``bed``'s slot (its monitor ``mon``), given one on first use (not armed)."""
        s = self.slot_of.get(bed)
        if s is not None:
            return s
        if self._free:
            s = self._free.pop()
            self.monitors[s] = mon
        else:
            table = self.table  # (made anew first if the kernels switched)
            s = len(self.monitors)
            self.monitors.append(mon)
            self._cached.append(None)
            self._rows.append(None)
            self.versions.append(-1)
            if s:  # (slot 0's row came with the table)
                _kernels.table_append(table, self._placeholder)
            if s >= self.armed.size:
                self._grow(max(64, 2 * self.armed.size))
        self.slot_of[bed] = s
        self.armed[s] = 0
        self.versions[s] = -1
        return s

    def _grow(self, size: int) -> None:
        n = self.armed.size
        for name in ("armed", "last_ts", "last_i", "mark", "touched"):
            old = getattr(self, name)
            new = np.zeros(size, old.dtype)
            new[:n] = old
            setattr(self, name, new)

    def monitor(self, s: int) -> M:
        """The monitor in slot ``s``; LookupError for a free slot."""
        mon = self.monitors[s]
        if mon is None:
            raise LookupError(f"slot {s} is free: no monitor takes chunks there")
        return mon

    def arm(self, s: int) -> None:
        """Arm slot ``s`` if its monitor's next chunk can be taken by the kernel, else disarm it."""
        mon = self.monitors[s]
        if mon is None:
            self.armed[s] = 0
            return
        self.versions[s] = mon.version
        state = mon.chunk_state()
        if state is None:
            self.armed[s] = 0
            return
        seg_arrays, win, mf, last = state
        cached = self._cached[s]
        if cached is None or cached[0] is not seg_arrays or cached[1] is not win:
            self._set(s, (*seg_arrays, win, mf))
            self._cached[s] = (seg_arrays, win)
        self.last_ts[s] = last
        self.armed[s] = 1

    def release(self, bed: BedId) -> None:
        """``bed``'s monitor is gone (evicted): its slot is free for another."""
        s = self.slot_of.pop(bed, None)
        if s is None:
            return
        self.armed[s] = 0
        self.monitors[s] = None
        self.versions[s] = -1
        if self._cached[s] is not None:
            self._cached[s] = None
            self._set(s, None)  # (arrays not kept alive)
        self._free.append(s)
