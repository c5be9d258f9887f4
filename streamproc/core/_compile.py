"""``numba.njit`` as the compiled modules use it (``_kernels``, ``streamproc._numparse``)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar, cast

import numba

__all__ = ["jit"]

_F = TypeVar("_F", bound=Callable[..., Any])


def jit(fn: _F) -> _F:
    """``numba.njit``, with its on-disk cache where numba finds a writable place for it.

    Without one (a read-only install and no writable home; ``NUMBA_CACHE_DIR`` names
    one), numba refuses ``cache=True`` at decoration time: compile per process instead
    of failing to import.
    """
    try:
        return cast("_F", numba.njit(cache=True, nogil=True)(fn))
    except RuntimeError:  # "cannot cache function ...: no locator available"
        return cast("_F", numba.njit(cache=False, nogil=True)(fn))
