"""``numba.njit`` as the compiled modules use it, and the interpreted mode they can run in.

The compiled modules (:data:`KERNEL_MODULES`) decorate their loops with :func:`jit`. Their
callers look the loops up as module attributes (``_kernels.step_chunk(...)``) at each
call, so which code runs is decided by what those attributes hold:

* compiled (the default): numba's dispatchers, compiled on first use or loaded from
  numba's on-disk cache;
* interpreted (:func:`use_interpreted`): the same source loaded a second time with
  :func:`jit` as the identity, so that its loops call each other as plain Python and
  nothing compiles. A process whose cache is empty runs this way while another
  process fills the cache (:mod:`streamproc.shell.warm`), then switches back
  (:func:`use_compiled`). The loops work on the callers' numpy arrays either way, so
  a switch between two calls changes nothing but the speed.

Only the import system here (and the stat of source files numba's cache is checked
against): no other I/O, no clock, no threads.
"""

from __future__ import annotations

import importlib
import importlib.util
from collections.abc import Callable, Mapping
from pathlib import Path
from types import ModuleType
from typing import Any, Final, TypeVar, cast

import numba
import numba.extending

__all__ = [
    "DEPENDENCIES",
    "KERNEL_MODULES",
    "cache_available",
    "generation",
    "interpreted",
    "jit",
    "jitable",
    "load",
    "signatures",
    "use_compiled",
    "use_interpreted",
]

_F = TypeVar("_F", bound=Callable[..., Any])

#: The modules whose functions :func:`jit` compiles (imported by :func:`use_interpreted`).
KERNEL_MODULES: Final = (
    "streamproc.core.protocol._samples",
    "streamproc.core.signal._kernels",
    "streamproc.wire._numparse",
)

#: Modules whose source the compiled functions are built from beside their own module's:
#: the packed state's layout and the rules they compile in (``messages.chunk_fault``...).
#: numba's on-disk cache checks only a function's own file; :func:`jit` makes it check
#: these too, so that a change to one of them compiles anew rather than loading stale code.
DEPENDENCIES: Final = (
    "streamproc.core.protocol.messages",
    "streamproc.core.signal.state",
    *KERNEL_MODULES,
)

#: Per module: its compiled functions' names -> their dispatchers.
_registry: dict[str, dict[str, Any]] = {}
#: Functions numba could not give an on-disk cache (compiled anew in every process).
_uncached: list[str] = []
#: Per module: its interpreted copy (loaded once, on the first :func:`use_interpreted`).
_copies: dict[str, ModuleType] = {}
#: Set while an interpreted copy is being loaded: :func:`jit` is then the identity.
_loading_copy: list[bool] = []
#: ``[0]``: True while the modules' attributes hold the interpreted functions;
#: ``[1]``: bumped at each switch (a typed list made before a switch is not one after).
_state: list[Any] = [False, 0]


def jit(fn: _F) -> _F:
    """``numba.njit(cache=True, nogil=True)``, its dispatcher registered for the switch.

    Without a writable place for numba's on-disk cache (a read-only install and no
    writable home; ``NUMBA_CACHE_DIR`` names one), numba refuses ``cache=True`` at
    decoration time: compile per process instead of failing to import.
    """
    if _loading_copy:
        return fn
    ours = fn.__module__ in KERNEL_MODULES  # (the switch and the cache check: only those)
    try:
        disp = numba.njit(cache=True, nogil=True)(fn)
    except RuntimeError:  # "cannot cache function ...: no locator available"
        disp = numba.njit(cache=False, nogil=True)(fn)
        if ours:
            _uncached.append(f"{fn.__module__}.{fn.__name__}")
    if ours:
        _registry.setdefault(fn.__module__, {})[fn.__name__] = disp
        # numba's ``IndexDataCacheFile`` keeps the stamp its index must match (the
        # function's own file's): there is no public hook for more files
        cache_file = getattr(getattr(disp, "_cache", None), "_cache_file", None)
        if cache_file is not None:
            index = vars(cache_file)
            index["_source_stamp"] = (index["_source_stamp"], _dependencies_stamp())
    return cast("_F", disp)


#: ``[stamp]`` once computed (:func:`_dependencies_stamp`).
_stamp: list[tuple[tuple[float, int], ...]] = []


def _dependencies_stamp() -> tuple[tuple[float, int], ...]:
    """Modification time and size of each of :data:`DEPENDENCIES`' source files."""
    if not _stamp:
        stamps = []
        for name in DEPENDENCIES:
            spec = importlib.util.find_spec(name)
            origin = None if spec is None else spec.origin
            if origin is None:  # pragma: no cover - our own modules, from files
                raise ImportError(f"no source file for {name}")
            st = Path(origin).stat()
            stamps.append((st.st_mtime, st.st_size))
        _stamp.append(tuple(stamps))
    return _stamp[0]


def jitable(fn: _F) -> _F:
    """``numba.extending.register_jitable``: a plain Python function (called as such from
    Python, nothing compiled) that the compiled loops compile into themselves when they
    call it: a rule written once for both (``messages.chunk_fault``)."""
    return numba.extending.register_jitable(fn)


def _modules() -> list[ModuleType]:
    return [importlib.import_module(name) for name in KERNEL_MODULES]


def cache_available() -> bool:
    """Whether every compiled function has numba's on-disk cache (see :func:`jit`)."""
    _modules()
    return not _uncached


def interpreted() -> bool:
    """Whether the compiled modules' functions are the interpreted ones now."""
    return bool(_state[0])


def generation() -> int:
    """A number that changes at each switch between compiled and interpreted."""
    return int(_state[1])


def _copy(module: ModuleType) -> ModuleType:
    """``module`` loaded a second time, :func:`jit` the identity: plain Python throughout."""
    copy = _copies.get(module.__name__)
    if copy is not None:
        return copy
    spec = importlib.util.spec_from_file_location(
        f"{module.__name__}__interpreted", cast("str", module.__file__)
    )
    if spec is None or spec.loader is None:  # pragma: no cover - a module from a file
        raise ImportError(f"cannot load {module.__name__} a second time from {module.__file__}")
    copy = importlib.util.module_from_spec(spec)
    _loading_copy.append(True)
    try:
        spec.loader.exec_module(copy)
    finally:
        _loading_copy.pop()
    if "List" in copy.__dict__:  # numba's typed list: its own methods would compile
        copy.List = list  # type: ignore[attr-defined]
    _copies[module.__name__] = copy
    return copy


def use_interpreted() -> None:
    """From now on the compiled modules' functions run as plain Python (nothing compiles).

    Results are the same as compiled (the same source on the same arrays), at a
    fraction of the speed; numba typed lists are Python lists meanwhile.
    """
    if _state[0]:
        return
    for module in _modules():
        copy = _copy(module)
        names = _registry.get(module.__name__, {})
        # one dict update: atomic for other threads (no Python code runs during it)
        module.__dict__.update({name: copy.__dict__[name] for name in names})
    _state[0] = True
    _state[1] += 1


def use_compiled() -> None:
    """From now on the compiled modules' functions are numba's dispatchers again."""
    if not _state[0]:
        return
    # The generation first: a caller (another thread) that finds a dispatcher then
    # also finds the typed lists remade (``Lanes.table``); one that still finds an
    # interpreted function with a typed list works too, as plain Python.
    _state[1] += 1
    for module in _modules():
        module.__dict__.update(_registry.get(module.__name__, {}))
    _state[0] = False


def signatures() -> dict[str, list[tuple[Any, ...]]]:
    """Each compiled function's signatures compiled (or loaded) in this process so far."""
    _modules()
    return {
        f"{mod}.{name}": [tuple(sig) for sig in disp.signatures]
        for mod, names in _registry.items()
        for name, disp in names.items()
        if disp.signatures
    }


def load(sigs: Mapping[str, list[tuple[Any, ...]]]) -> None:
    """Get these signatures (from :func:`signatures` of another process) ready here.

    With a complete on-disk cache this only loads machine code (no compiling). It
    must run while the functions are compiled (:func:`use_compiled`): a signature not
    in the cache compiles, and that resolves the functions the code calls by name.
    """
    _modules()
    for qualname, sig_list in sigs.items():
        mod, _, name = qualname.rpartition(".")
        disp = _registry.get(mod, {}).get(name)
        if disp is None:
            raise LookupError(f"no compiled function {qualname} in this process")
        for sig in sig_list:
            disp.compile(sig)
