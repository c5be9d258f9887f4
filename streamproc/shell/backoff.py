"""Exponential backoff with jitter, for every reconnecting client (service, dashboard)."""

from __future__ import annotations

import random
from collections.abc import Callable

__all__ = ["Backoff"]


class Backoff:
    """Exponential backoff with jitter (after aiomqtt's reconnect example).

    The n-th delay is drawn from ``[floor * d, d]`` with ``d = min(cap, base * 2**n)``:
    ``floor`` 0 is full jitter; 0.5 keeps every delay at least half its step.
    """

    def __init__(
        self,
        base: float = 0.2,
        cap: float = 10.0,
        rng: Callable[[float, float], float] = random.uniform,
        *,
        floor: float = 0.0,
    ) -> None:
        self.base = base
        self.cap = cap
        self.floor = floor
        self.attempt = 0
        self._rng = rng

    def next(self) -> float:
        step = min(self.cap, self.base * 2**self.attempt)
        delay = self._rng(self.floor * step, step)
        self.attempt = min(self.attempt + 1, 30)
        return max(delay, 0.05)

    def reset(self) -> None:
        self.attempt = 0
