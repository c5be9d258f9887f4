"""The compiled pass over an ``abp`` chunk's samples (numba; see ``streamproc.core._compile``).

One loop, called by ``messages.chunk_fault`` for every chunk built, and compiled
into ``_kernels.step_chunks`` through it. Pure: arrays in, a verdict out.
"""

from __future__ import annotations

import numpy as np

from streamproc.core._compile import jit

__all__ = ["all_within"]


@jit
def all_within(x: np.ndarray, lo: float, hi: float) -> bool:
    """Whether every value of ``x`` lies in ``[lo, hi]`` (NaN does not)."""
    for v in x:  # noqa: SIM110 - an explicit loop: numba compiles it, not a generator
        if not (v >= lo and v <= hi):
            return False
    return True
