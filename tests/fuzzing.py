"""Property-based fuzzing of the core and of replay (``scripts/fuzz.py`` runs them long)."""

from __future__ import annotations

import os
from pathlib import Path

from hypothesis import HealthCheck, settings

_COUNTS = os.environ.get("STREAMPROC_FUZZ_COUNTS")


def count_example(name: str) -> None:
    """Count one example of a property (``scripts/fuzz.py`` sets the file and sums it).

    One line per example, written at once: the long run stops a property by
    killing it when its time is up, so nothing may wait for the process's end.
    """
    if _COUNTS:
        with Path(_COUNTS).open("a", encoding="utf-8") as f:
            f.write(f"{name} 1\n")


def fuzz_settings(default_examples: int) -> settings:
    """CI-sized settings; ``STREAMPROC_FUZZ_EXAMPLES`` (set by ``scripts/fuzz.py``) scales them."""
    n = int(os.environ.get("STREAMPROC_FUZZ_EXAMPLES", default_examples))
    return settings(
        max_examples=n,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
        print_blob=True,
    )
