"""The compiled pass over an ``abp`` chunk's samples (numba; see ``streamproc.core._compile``).

One loop, called by ``messages.chunk_fault`` for every chunk built, and compiled
into ``_kernels.step_chunks`` through it. Pure: arrays in, a verdict out.
"""

from __future__ import annotations

from typing import Final

import numpy as np

from streamproc.core import _compile
from streamproc.core._compile import jit

__all__ = ["all_within"]


@jit
def all_within(x: np.ndarray, lo: float, hi: float) -> bool:
    """Whether every value of ``x`` lies in ``[lo, hi]`` (NaN does not)."""
    for v in x:  # noqa: SIM110 - an explicit loop: numba compiles it, not a generator
        if not (v >= lo and v <= hi):
            return False
    return True


#: The digest of what this module's compiled functions take from other files
#: (``_compile.built_from``): checked below, so that a change there cannot load code
#: numba's cache built from the old one. The error says the new value.
BUILT_FROM: Final = "e3b0c44298fc1c14"
_compile.check_built_from(__name__, BUILT_FROM)
