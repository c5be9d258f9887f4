"""Backoff: exponential, jittered, reset after a good connection."""

from __future__ import annotations

from streamproc.shell.backoff import Backoff


class TestBackoff:
    def test_grows_with_jitter_and_resets(self) -> None:
        """Full jitter under an exponential cap; reset after a good connection."""
        seen: list[tuple[float, float]] = []

        def rng(lo: float, hi: float) -> float:
            seen.append((lo, hi))
            return hi

        b = Backoff(base=0.5, cap=4.0, rng=rng)
        delays = [b.next() for _ in range(6)]
        assert delays == [0.5, 1.0, 2.0, 4.0, 4.0, 4.0]
        assert all(lo == 0.0 for lo, _ in seen)
        b.reset()
        assert b.next() == 0.5
