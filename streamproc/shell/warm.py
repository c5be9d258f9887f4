"""Get the compiled loops ready without compiling on the live path (``STREAMPROC_JIT``).

numba compiles the detector's loops (``streamproc.core.signal._kernels``) and the codec's
number parser (``streamproc.wire._numparse``) on first use, about 20 s, and keeps the
result in its on-disk cache; loading from a complete cache takes a fraction of a
second. :func:`start`, called by ``streamproc run``, ``replay`` and ``demo`` before
they take data, decides by ``STREAMPROC_JIT``:

``auto`` (default)
    Try the loops with compiling forbidden (numba's documented event API: a
    listener on ``numba:compile`` stops any compile before it starts). A complete
    cache: compiled from the start. Otherwise the loops run interpreted (the same
    source as plain Python, :mod:`streamproc.core._compile`: the same results,
    slower) while a child process (``python -m streamproc.shell.warm``) compiles them
    into the cache; when it is done, this process loads them from the cache in a
    background thread and switches to them between two calls. Nothing compiles on
    the path that takes data. (Where numba has no writable cache, see
    ``NUMBA_CACHE_DIR``, a child cannot help: compiled here, as ``eager``.)
``eager``
    Compile (or load) here before taking data.
``interpreted``
    Interpreted, never compiled: for tests and diagnosis.

The child goes on after its parent has exited (a ``replay`` shorter than the
compile), so that the next start finds the cache complete.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import subprocess
import sys
import threading
from collections.abc import Callable
from typing import Any, Final

import numpy as np
from numba.core import event

from streamproc.core import _compile

__all__ = ["JIT_MODES", "Kernels", "exercise", "main", "start"]

JIT_MODES: Final = ("auto", "eager", "interpreted")


class JitModeError(ValueError):
    """``STREAMPROC_JIT`` (the operator's setting) is not one of :data:`JIT_MODES`."""

    def __init__(self, value: str) -> None:
        super().__init__(f"STREAMPROC_JIT must be one of {', '.join(JIT_MODES)}, got {value!r}")
        self.value = value


class _CompileRefusedError(Exception):
    """A compile was about to start while :func:`_probe` forbade it."""


class _RefuseCompile(event.Listener):
    def on_start(self, event: event.Event) -> None:  # noqa: ARG002
        raise _CompileRefusedError

    def on_end(self, event: event.Event) -> None:
        pass


def exercise() -> None:
    """Run every compiled loop the live and replay paths use, with their argument types.

    The codec's fast path, a bed's chunks one at a time and as a batch's chunk rows
    (``Engine.receive``), and a bare beat detector.
    """
    from streamproc.core.engine import Batch, Engine  # noqa: PLC0415
    from streamproc.core.protocol.messages import BedId  # noqa: PLC0415
    from streamproc.core.protocol.settings import BeatSettings  # noqa: PLC0415
    from streamproc.core.signal.beats import BeatDetector, warm_up_chunks  # noqa: PLC0415
    from streamproc.wire.codec import warm_up  # noqa: PLC0415 - light imports for `--help`

    warm_up()
    chunks = warm_up_chunks()
    engine = Engine()
    bed = BedId("warm", "up")
    engine.receive(Batch((bed, chunk, chunk.t0) for chunk in chunks[:2]))
    rest = chunks[2:]
    batch = Batch(samples=np.concatenate([c.samples for c in rest]))
    for c, end in zip(rest, np.cumsum([c.samples.size for c in rest]).tolist(), strict=True):
        batch.add_chunk(bed, c.t0, c.fs, end, c.t0 + 1.0)
    engine.receive(batch)
    det = BeatDetector(BeatSettings())
    for chunk in chunks:
        det.feed(chunk)


def _probe() -> bool:
    """:func:`exercise` with compiling forbidden: True when numba's cache had everything."""
    try:
        with event.install_listener("numba:compile", _RefuseCompile()):
            exercise()
    except _CompileRefusedError:
        return False
    return True


class Kernels:
    """Which loops this process runs, and the background compile when there is one."""

    def __init__(self, mode: str, proc: subprocess.Popen[bytes] | None = None) -> None:
        #: ``compiled`` from the start (a complete cache, or ``eager``),
        #: ``interpreted`` (until :attr:`ready`), or ``interpreted-only``.
        self.mode = mode
        self.proc = proc
        #: Set once the loops are compiled (at once unless interpreted).
        self.ready = threading.Event()
        #: Why the background compile did not go as planned (None: it did).
        self.error: str | None = None
        if mode == "compiled":
            self.ready.set()

    @property
    def compiled(self) -> bool:
        """Whether the compiled loops run now."""
        return not _compile.interpreted()

    def describe(self) -> str:
        """One line on which loops ran: for the operator."""
        if self.mode == "compiled":
            return "compiled loops (numba's cache)"
        if self.mode == "interpreted-only":
            return "interpreted loops (STREAMPROC_JIT=interpreted)"
        if self.ready.is_set():
            text = (
                "started with interpreted loops (numba's cache was incomplete), then "
                "switched to the ones a background process compiled"
            )
        else:
            text = (
                "ran with interpreted loops (numba's cache was incomplete); a background "
                "process is compiling them for the next run"
            )
        return text + (f" ({self.error})" if self.error else "")

    def wait(self, timeout: float | None = None) -> bool:
        """Wait until the loops are compiled; False on time-out."""
        return self.ready.wait(timeout)

    def complete(self, on_ready: Callable[[Kernels], None] | None) -> None:
        """Wait for the compiling child, use what it compiled (or compile here when it
        failed), then set :attr:`ready` and call ``on_ready``. Run by the background thread."""
        proc = self.proc
        assert proc is not None  # noqa: S101 - started with one
        out, err = proc.communicate()
        if proc.returncode == 0:
            try:
                self._switch(pickle.loads(out))  # noqa: S301 - our own child's output
            except Exception as exc:  # noqa: BLE001 - whatever failed, compile here instead
                self._fallback(f"{type(exc).__name__}: {exc}")
        else:
            tail = " ".join(err.decode("utf-8", "replace").strip().splitlines()[-1:])
            self._fallback(f"compiling child exit {proc.returncode}: {tail}")
        self.ready.set()
        if on_ready is not None:
            on_ready(self)

    @staticmethod
    def _switch(sigs: dict[str, list[tuple[Any, ...]]]) -> None:
        """Load what the child compiled, then use it."""
        # from the cache while still interpreted, so that no call waits for it later
        # (a signature missing from it cannot compile while interpreted: loaded below)
        with contextlib.suppress(Exception):
            _compile.load(sigs)
        _compile.use_compiled()
        _compile.load(sigs)

    def _fallback(self, error: str) -> None:
        """The child failed: compile here (in this thread), then use it."""
        self.error = error
        _compile.use_compiled()
        try:
            exercise()
        except Exception as exc:  # noqa: BLE001 - reported; the calls compile what they need
            self.error += f"; then {type(exc).__name__}: {exc}"


#: The background compile this process started (the last one).
_started: list[Kernels] = []


def start(mode: str | None = None, *, on_ready: Callable[[Kernels], None] | None = None) -> Kernels:
    """Get the loops ready as ``mode`` says (default: ``STREAMPROC_JIT``, else ``auto``).

    Returns at once in ``auto``: compiled when the cache is complete, else
    interpreted with the compile under way in a child process; ``on_ready`` is
    called (from a background thread) once the compiled loops are in use.

    Raises:
        JitModeError: an unknown mode.
    """
    if mode is None:
        mode = os.environ.get("STREAMPROC_JIT", "auto") or "auto"
    if mode not in JIT_MODES:
        raise JitModeError(mode)
    if _started and not _started[-1].ready.is_set():
        return _started[-1]  # (a compile under way already: one child is enough)
    if mode == "interpreted":
        _compile.use_interpreted()
        return Kernels("interpreted-only")
    if mode == "eager" or not _compile.cache_available():
        _compile.use_compiled()
        exercise()
        return Kernels("compiled")
    if not _compile.interpreted() and _probe():
        return Kernels("compiled")
    _compile.use_interpreted()
    proc = subprocess.Popen(  # this interpreter, this package
        [sys.executable, "-m", "streamproc.shell.warm"],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,  # (a Ctrl-C of the parent leaves the cache to complete)
    )
    kernels = Kernels("interpreted", proc)
    _started.append(kernels)
    threading.Thread(
        target=kernels.complete,
        args=(on_ready,),
        name="streamproc-jit",
        daemon=True,
    ).start()
    return kernels


def main() -> int:
    """``python -m streamproc.shell.warm``: compile or load every loop; signatures to stdout.

    With ``--check``: exit 0 when numba's cache already had everything, 1 when
    something had to be compiled (it is compiled and cached either way).
    """
    if "--check" in sys.argv[1:]:
        if _probe():
            return 0
        exercise()
        return 1
    exercise()
    sys.stdout.buffer.write(pickle.dumps(_compile.signatures()))
    sys.stdout.buffer.flush()
    return 0


if __name__ == "__main__":  # pragma: no cover - the child process
    sys.exit(main())
