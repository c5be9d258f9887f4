"""``numba.njit`` as the compiled modules use it, and the interpreted mode they can run in.

The compiled modules (``streamproc.core.signal._kernels``, ``streamproc.wire._numparse``) decorate
their loops with :func:`jit`. Their callers look the loops up as module attributes
(``_kernels.step_chunk(...)``) at each call, so which code runs is decided by what
those attributes hold:

* compiled (the default): numba's dispatchers, compiled on first use or loaded from
  numba's on-disk cache;
* interpreted (:func:`use_interpreted`): the same source loaded a second time with
  :func:`jit` as the identity, so that its loops call each other as plain Python and
  nothing compiles. A process whose cache is empty runs this way while another
  process fills the cache (:mod:`streamproc.shell.warm`), then switches back
  (:func:`use_compiled`). The loops work on the callers' numpy arrays either way, so
  a switch between two calls changes nothing but the speed.

The protocol's rules that the loops call (:mod:`streamproc.core.protocol.hold`) are
decorated with :func:`rule`: plain Python when called from Python, compiled into the
loops that call them. numba's on-disk cache knows only a function's own file, so the
cache entries of a module that calls the rules also name the rules' source
(:data:`RULE_MODULES`): a change to a rule makes its loops compile again.

Only the import system here, and reading the rules' source: no clock, no threads.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
from collections.abc import Callable, Mapping
from types import ModuleType
from typing import Any, Final, TypeVar, cast

import numba
from numba.extending import register_jitable

__all__ = [
    "KERNEL_MODULES",
    "RULE_MODULES",
    "cache_available",
    "generation",
    "interpreted",
    "jit",
    "load",
    "rule",
    "signatures",
    "use_compiled",
    "use_interpreted",
]

_F = TypeVar("_F", bound=Callable[..., Any])

#: The modules whose functions :func:`jit` compiles (imported by :func:`use_interpreted`).
KERNEL_MODULES: Final = ("streamproc.core.signal._kernels", "streamproc.wire._numparse")

#: The modules of :func:`rule` functions: what the compiled functions' cache depends on
#: besides their own file.
RULE_MODULES: Final = ("streamproc.core.protocol.hold",)

#: Per module: its compiled functions' names -> their dispatchers.
_registry: dict[str, dict[str, Any]] = {}
#: Functions numba could not give an on-disk cache (compiled anew in every process).
_uncached: list[str] = []
#: Per module: its interpreted copy (loaded once, on the first :func:`use_interpreted`).
_copies: dict[str, ModuleType] = {}
#: Set while an interpreted copy is being loaded: :func:`jit` is then the identity.
_loading_copy: list[bool] = []
#: The rules' source digests, read once (:func:`_rules_stamp`).
_rules_digest: list[tuple[bytes, ...]] = []
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
        if any(getattr(v, "__module__", None) in RULE_MODULES for v in fn.__globals__.values()):
            _stamp_rules(disp)  # (its module calls the rules)
    return cast("_F", disp)


def rule(fn: _F) -> _F:
    """A function of :data:`RULE_MODULES` that compiled functions call: numba compiles it
    into them (``numba.extending.register_jitable``); from Python it is the plain function.
    """
    return register_jitable(fn)


def _stamp_rules(disp: Any) -> None:
    """Make ``disp``'s on-disk cache entries stale when a rule's source changes too.

    numba keeps a stamp of the function's own source file with its cache index and
    ignores an index whose stamp differs; the rules' digests are added to that stamp
    (numba's ``IndexDataCacheFile._source_stamp``, any picklable value).
    """
    cache_file = getattr(getattr(disp, "_cache", None), "_cache_file", None)
    if cache_file is None:  # no on-disk cache: nothing can go stale
        return
    if not _rules_digest:
        digests = []
        for name in RULE_MODULES:
            spec = importlib.util.find_spec(name)
            origin = None if spec is None else spec.origin
            if origin is None:  # pragma: no cover - the rules are files of the package
                raise ImportError(f"no source for {name}")
            with open(origin, "rb") as f:  # noqa: PTH123 - read once per process
                digests.append(hashlib.sha256(f.read()).digest())
        _rules_digest.append(tuple(digests))
    cache_file._source_stamp = (cache_file._source_stamp, *_rules_digest[0])


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
