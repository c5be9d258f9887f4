"""Keeping the event loop responsive and saying how responsive it is: the GC policy
and the loop-lag watch."""

from __future__ import annotations

import gc
import time
from collections.abc import Callable
from typing import Final

from streamproc.shell.logs import get_logger
from streamproc.shell.metrics import ServiceMetrics
from streamproc.shell.service.queues import Queues

__all__ = ["GC_FREEZE_S", "GC_FULL_S", "LOOP_WATCH_S", "GcPolicy", "watch_loop"]

log = get_logger("streamproc.shell.service")

#: Move what is alive to the GC's permanent generation this often (s): see GcPolicy.
GC_FREEZE_S: Final = 30.0
#: Unfreeze and collect everything this often (s).
GC_FULL_S: Final = 3600.0
#: Period of the event-loop watch timer (s): its lateness is the loop lag metric.
LOOP_WATCH_S: Final = 0.02


class GcPolicy:
    """Keep Python's cyclic garbage collector from pausing the loop for 100+ ms.

    With thousands of beds the heap holds ~10^6 tracked objects, and a full
    (generation 2) collection walks all of them: measured 150 ms at 5,000
    beds, i.e. alarms delayed by that much. The core allocates no reference
    cycles (tests/shell/test_gc.py: zero unreachable objects after a ward's worth of
    messages, ticks and alarms), so its long-lived state need not be walked:
    every ``freeze_s`` the young generations are collected and everything
    alive is moved to the permanent generation (:func:`gc.freeze`). Once per
    ``full_s`` everything is unfrozen and fully collected, so cycles made
    elsewhere (asyncio, exceptions) cannot accumulate; that one pause is logged.
    """

    __slots__ = ("freeze_s", "full_s", "next_freeze", "next_full", "timer")

    def __init__(
        self,
        *,
        freeze_s: float = GC_FREEZE_S,
        full_s: float = GC_FULL_S,
        timer: Callable[[], float] = time.perf_counter,
    ) -> None:
        self.freeze_s = freeze_s
        self.full_s = full_s
        #: times the pause of a full collection
        self.timer = timer
        self.next_freeze = 0.0
        self.next_full: float | None = None

    def step(self, mono: float) -> None:
        """Call from a periodic task with the monotonic clock's time."""
        if self.next_full is None:
            self.next_full = mono + self.full_s
        if mono >= self.next_full:
            self.next_full = mono + self.full_s
            t = self.timer()
            gc.unfreeze()
            freed = gc.collect()
            gc.freeze()
            log.info("gc_full", freed=freed, pause_ms=round((self.timer() - t) * 1e3, 1))
            self.next_freeze = mono + self.freeze_s
        elif mono >= self.next_freeze:
            self.next_freeze = mono + self.freeze_s
            gc.collect(1)
            gc.freeze()


async def watch_loop(queues: Queues, metrics: ServiceMetrics) -> None:
    """Measure how late the loop runs a short timer (streamproc_loop_lag_seconds)."""
    step = LOOP_WATCH_S
    observe = metrics.loop_lag_seconds.observe
    mono = queues.clock.mono
    stopping = queues.stopping
    while not stopping.is_set():
        t = mono()
        await queues.sleep(step)
        observe(max(0.0, mono() - t - step))
