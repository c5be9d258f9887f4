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

numba's on-disk cache is checked against the source file of each compiled function
only; what a compiled module compiles in from *other* files (the packed state's slot
numbers, ``messages.chunk_fault``...) is not. So each compiled module declares the digest
of that (``BUILT_FROM``) and checks it at import (:func:`check_built_from`): a change
elsewhere refuses to import until the module's own file says so, which also makes numba
compile it anew instead of loading stale machine code.

Only the import system here (and reading the source of those other functions): no
other I/O, no clock, no threads.
"""

from __future__ import annotations

import ast
import hashlib
import importlib
import importlib.util
import inspect
from collections.abc import Callable, Iterator, Mapping
from types import CodeType, FunctionType, ModuleType
from typing import Any, Final, TypeVar, cast

import numba
import numba.extending

__all__ = [
    "KERNEL_MODULES",
    "StaleKernelError",
    "built_from",
    "cache_available",
    "check_built_from",
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
    return cast("_F", disp)


def jitable(fn: _F) -> _F:
    """``numba.extending.register_jitable``: a plain Python function (called as such from
    Python, nothing compiled) that the compiled loops compile into themselves when they
    call it: a rule written once for both (``messages.chunk_fault``, the hold rule of
    ``protocol.hold``)."""
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


#: Only this package's rules and constants are followed (see :func:`built_from`).
_PACKAGE: Final = "streamproc."


class StaleKernelError(ImportError):
    """A compiled module's ``BUILT_FROM`` is not the digest of what it compiles in from
    other files: the developer's fault (a rule or a slot changed elsewhere); the module's
    own file must change too, or numba's cache would load code built from the old one."""

    def __init__(self, module: str, declared: str, actual: str) -> None:
        self.module = module
        self.declared = declared
        self.actual = actual
        super().__init__(
            f"{module} compiles in rules or constants from other files, which changed: "
            f'set BUILT_FROM = "{actual}" in {module} (was "{declared}"; '
            "the edit also makes numba compile it anew)"
        )


def check_built_from(module: str, declared: str) -> None:
    """Raise :class:`StaleKernelError` unless ``declared`` is :func:`built_from` ``(module)``.

    Called at the end of each compiled module (after its ``@jit`` functions); nothing is
    checked while an interpreted copy loads (the same source, nothing compiled).
    """
    if _loading_copy:
        return
    actual = built_from(module)
    if actual != declared:
        raise StaleKernelError(module, declared, actual)


def built_from(module: str) -> str:
    """Digest of what ``module``'s compiled functions take from outside its file.

    The values of the numbers they use that are imported (``from ... import X`` or
    ``state.X``) and the source, with the same recursively, of every function of another
    module they call (``chunk_fault``...). Numbers and functions of the module's own
    file are left out: numba's cache sees that file.
    """
    home = importlib.import_module(module)
    own = _assigned(home)
    digest = hashlib.sha256()
    seen: set[int] = set()
    for name in sorted(_registry.get(module, {})):
        _feed(_registry[module][name].py_func, module, own, digest, seen)
    return digest.hexdigest()[:16]


def _assigned(module: ModuleType) -> frozenset[str]:
    """Names a module's own file defines at module level (not imported)."""
    tree = ast.parse(inspect.getsource(module))
    names: set[str] = set()
    for node in tree.body:
        if isinstance(node, ast.Assign):
            names.update(t.id for t in node.targets if isinstance(t, ast.Name))
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            names.add(node.target.id)
        elif isinstance(node, ast.FunctionDef | ast.ClassDef):
            names.add(node.name)
    return frozenset(names)


def _names(code: CodeType) -> Iterator[str]:
    """Every global or attribute name ``code`` (and the code nested in it) refers to."""
    yield from code.co_names
    for const in code.co_consts:
        if isinstance(const, CodeType):
            yield from _names(const)


def _feed(fn: FunctionType, home: str, own: frozenset[str], digest: Any, seen: set[int]) -> None:
    """Add to ``digest`` what ``fn`` takes from outside module ``home`` (see built_from)."""
    if id(fn) in seen:
        return
    seen.add(id(fn))
    foreign = fn.__module__ != home
    if foreign:
        digest.update(inspect.getsource(fn).encode())
    names = sorted(set(_names(fn.__code__)))
    for name in names:
        if name not in fn.__globals__:
            continue
        value = fn.__globals__[name]
        if isinstance(value, ModuleType):
            if not value.__name__.startswith(_PACKAGE):
                continue  # (numpy...: a library's change is a new install, a new cache)
            # ``state.X`` / ``_samples.all_within``: the attributes named in the code
            for attr in names:
                if hasattr(value, attr):
                    _feed_value(f"{name}.{attr}", getattr(value, attr), home, own, digest, seen)
        else:  # (the home file's own numbers: numba's cache sees them)
            _feed_value(name, value, home, own, digest, seen, numbers=foreign or name not in own)


def _feed_value(  # noqa: PLR0917 - _feed's state, passed on
    name: str,
    value: Any,
    home: str,
    own: frozenset[str],
    digest: Any,
    seen: set[int],
    numbers: bool = True,
) -> None:
    if isinstance(value, bool | int | float):
        if numbers:
            digest.update(f"{name}={value!r};".encode())
        return
    fn = getattr(value, "py_func", value)  # a dispatcher's Python function
    if isinstance(fn, FunctionType) and fn.__module__.startswith(_PACKAGE):
        _feed(fn, home, own, digest, seen)
