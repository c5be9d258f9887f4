"""The one clock the service parts read: injected, so tests and benchmarks drive time."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["Clock"]


@dataclass(frozen=True, slots=True)
class Clock:
    """``wall``: the processor's clock (s since the epoch), compared with data times and
    stamped on what is published and audited; ``mono``: for intervals and deadlines."""

    wall: Callable[[], float] = time.time
    mono: Callable[[], float] = time.monotonic
