"""Cold start: light imports, and no compiling on the path that takes data (issue 16, 8).

Deterministic checks only (what is imported, what ran, what compiled); the times are
measured by ``benchmarks/bench_coldstart.py`` (benchmarks/README.md, "Cold start").
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from simulators.scenario import load_scenario, render, scenario_dir, to_jsonl
from streamproc.apps.replay import replay_lines
from streamproc.core import _compile
from streamproc.core.signal import _kernels, beats
from streamproc.shell import warm
from streamproc.shell.config import load_config

REPO = Path(__file__).resolve().parents[2]

#: Modules `streamproc --help` must not import: the JIT, scipy, the core's loops.
HEAVY = ("numba", "scipy", "streamproc.core.signal._kernels", "streamproc.core.engine", "asyncio")


def _env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), *filter(None, [env.get("PYTHONPATH")])])
    env.update(extra)
    return env


def _run_python(code: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(  # noqa: S603 - this interpreter, our code
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        env=_env(**env),
        timeout=600,
        check=False,
    )


@pytest.fixture(scope="module")
def recording() -> bytes:
    """The 60/40 patient on norepinephrine (the README's scenario), as JSON Lines."""
    return to_jsonl(render(load_scenario(scenario_dir() / "ne_60_40.toml")))


def _replay(lines: Iterator[bytes] | list[bytes]) -> list[bytes]:
    out: list[bytes] = []
    replay_lines(lines, load_config(environ={}), out.append)
    return out


class TestLightImports:
    """``streamproc --help`` and ``config`` import no JIT, no scipy, no core loops."""

    @pytest.mark.parametrize("argv", [["--help"], ["config"], ["replay", "--help"]])
    def test_no_heavy_modules(self, argv: list[str]) -> None:
        """The command runs, and none of :data:`HEAVY` is in ``sys.modules`` after it."""
        proc = _run_python(
            f"""
            import contextlib, io, json, sys
            from streamproc.apps.cli import main
            with contextlib.redirect_stdout(io.StringIO()):
                try:
                    rc = main({argv!r})
                except SystemExit as exc:
                    rc = exc.code
            heavy = sorted(m for m in sys.modules if m.split(".")[0] in {HEAVY!r}
                           or m in {HEAVY!r})
            print(json.dumps({{"rc": rc, "heavy": heavy}}))
            """
        )
        assert proc.returncode == 0, proc.stderr
        result = json.loads(proc.stdout)
        assert result == {"rc": 0, "heavy": []}

    def test_beats_without_scipy(self) -> None:
        """The beat detector (its filter design) imports no scipy."""
        proc = _run_python(
            """
            import sys
            from streamproc.core.signal.beats import BeatDetector, warm_up_chunks
            from streamproc.core.protocol.settings import BeatSettings
            det = BeatDetector(BeatSettings())
            print(sum(len(det.feed(c)) for c in warm_up_chunks()))
            print(sorted(m for m in sys.modules if m.startswith(("scipy.signal", "scipy.stats"))))
            """
        )
        assert proc.returncode == 0, proc.stderr
        beats_found, scipy_loaded = proc.stdout.splitlines()
        assert int(beats_found) > 0
        assert scipy_loaded == "[]"


class TestFilterDesign:
    """``beats._design``: scipy's Bessel design, to the bit, without scipy."""

    @settings(max_examples=200, deadline=None)
    @given(
        fs=st.floats(20.0, 2000.0, allow_nan=False),
        fraction=st.floats(0.01, 0.45, allow_nan=False),
    )
    def test_equals_scipy(self, fs: float, fraction: float) -> None:
        """Coefficients, initial state and group delay equal ``scipy.signal``'s exactly."""
        from scipy.signal import bessel, group_delay, lfilter_zi  # noqa: PLC0415

        cutoff = fraction * fs
        b, a = bessel(2, cutoff, fs=fs, norm="mag")
        b = np.asarray(b, np.float64) / a[0]
        a = np.asarray(a, np.float64) / a[0]
        coef, zi, delay = beats._design(cutoff, fs)  # noqa: SLF001 - the filter design itself is tested
        assert coef.tolist() == [b[0], b[1], b[2], a[1], a[2]]
        assert zi.tolist() == np.asarray(lfilter_zi(b, a), np.float64).tolist()
        assert delay == float(group_delay((b, a), w=[1.0], fs=fs)[1][0])


@pytest.fixture
def interpreted() -> Iterator[None]:
    """The kernels interpreted for the test, compiled again after it."""
    _compile.use_interpreted()
    try:
        yield
    finally:
        _compile.use_compiled()


class TestInterpretedMode:
    """The loops run as plain Python give the compiled loops' results."""

    def test_switch_rebinds_the_kernels(self, interpreted: None) -> None:
        """Interpreted: the modules' functions are plain Python; compiled again after."""
        assert _compile.interpreted()
        assert not hasattr(_kernels.step_chunk, "py_func")
        _compile.use_compiled()
        assert not _compile.interpreted()
        assert hasattr(_kernels.step_chunk, "py_func")

    @pytest.mark.parametrize("name", ["ne_60_40", "artifacts", "ne_vasopressin_60_40"])
    def test_replay_identical(self, name: str) -> None:
        """A whole replay (batch lanes included) gives the same lines interpreted."""
        lines = to_jsonl(render(load_scenario(scenario_dir() / f"{name}.toml"))).splitlines()
        compiled = _replay(lines)
        _compile.use_interpreted()
        try:
            plain = _replay(lines)
        finally:
            _compile.use_compiled()
        assert any(b"alarms" in line for line in compiled)
        assert plain == compiled

    @pytest.mark.parametrize("every", [7, 60, 181])
    def test_switch_mid_replay(self, recording: bytes, every: int) -> None:
        """Switching back and forth every ``every`` lines changes nothing in the output."""
        lines = recording.splitlines()
        expected = _replay(lines)
        switches = 0

        def switching() -> Iterator[bytes]:
            nonlocal switches
            for i, line in enumerate(lines):
                if i and i % every == 0:
                    if _compile.interpreted():
                        _compile.use_compiled()
                    else:
                        _compile.use_interpreted()
                    switches += 1
                yield line

        _compile.use_interpreted()
        try:
            got = _replay(switching())
        finally:
            _compile.use_compiled()
        assert switches >= 1
        assert got == expected

    def test_cli_interpreted(self, recording: bytes, tmp_path: Path) -> None:
        """``STREAMPROC_JIT=interpreted streamproc replay``: the compiled run's lines."""
        path = tmp_path / "ne_60_40.jsonl"
        path.write_bytes(recording)
        runs = {
            mode: subprocess.run(  # noqa: S603
                [sys.executable, "-m", "streamproc", "replay", str(path)],
                capture_output=True,
                env=_env(STREAMPROC_JIT=mode),
                timeout=300,
                check=True,
            )
            for mode in ("eager", "interpreted")
        }
        assert runs["interpreted"].stdout == runs["eager"].stdout
        assert b"hypotension" in runs["eager"].stdout
        assert b"interpreted loops" in runs["interpreted"].stderr
        assert b"interpreted" not in runs["eager"].stderr

    def test_unknown_mode(self, tmp_path: Path) -> None:
        """An unknown ``STREAMPROC_JIT`` is refused with a message, exit 2."""
        path = tmp_path / "empty.jsonl"
        path.write_bytes(b"")
        proc = subprocess.run(  # noqa: S603
            [sys.executable, "-m", "streamproc", "replay", str(path)],
            capture_output=True,
            text=True,
            env=_env(STREAMPROC_JIT="turbo"),
            timeout=300,
            check=False,
        )
        assert proc.returncode == 2
        assert "STREAMPROC_JIT must be one of auto, eager, interpreted" in proc.stderr


class TestBackground:
    """``Kernels``: the switch once the compiling child is done, and its failure."""

    def _child(self, *argv: str) -> subprocess.Popen[bytes]:
        return subprocess.Popen(  # noqa: S603 - this interpreter, our code
            [sys.executable, *argv],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=_env(),
        )

    def test_switches_after_the_child(self, recording: bytes) -> None:
        """Interpreted until ``python -m streamproc.shell.warm`` is done, then compiled: same lines."""
        lines = recording.splitlines()
        expected = _replay(lines)
        _compile.use_interpreted()
        try:
            kernels = warm.Kernels("interpreted", self._child("-m", "streamproc.shell.warm"))
            assert not kernels.compiled
            assert not kernels.wait(0)
            assert "is compiling them" in kernels.describe()
            seen: list[bool] = []
            kernels.complete(lambda k: seen.append(k.compiled))
        finally:
            _compile.use_compiled()
        assert seen == [True]
        assert kernels.wait(0)
        assert kernels.error is None
        assert "switched to the ones a background process compiled" in kernels.describe()
        assert _replay(lines) == expected

    def test_child_failure_compiles_here(self) -> None:
        """A child that fails: compiled in this process instead, and the reason kept."""
        _compile.use_interpreted()
        try:
            kernels = warm.Kernels(
                "interpreted", self._child("-c", "import sys; sys.exit('no room for the cache')")
            )
            kernels.complete(None)
        finally:
            _compile.use_compiled()
        assert kernels.compiled
        assert kernels.error is not None
        assert "exit 1: no room for the cache" in kernels.error
        assert "no room for the cache" in kernels.describe()

    def test_child_output_unreadable(self) -> None:
        """A child that exits 0 without the signatures: compiled here too."""
        _compile.use_interpreted()
        try:
            kernels = warm.Kernels("interpreted", self._child("-c", "print('not a pickle')"))
            kernels.complete(None)
        finally:
            _compile.use_compiled()
        assert kernels.compiled
        assert kernels.error is not None
        assert kernels.error.startswith("UnpicklingError")


FRESH_START = """
import json, sys, time
from numba.core import event
from streamproc.shell import warm
from streamproc.core import _compile
from streamproc.shell.config import load_config
from streamproc.apps.replay import replay_lines

compiles = []
class Count(event.Listener):
    def on_start(self, ev):
        compiles.append(ev.data["dispatcher"].py_func.__name__)
    def on_end(self, ev):
        pass

lines = open(sys.argv[1], "rb").read().splitlines()
kernels = warm.start()  # (its probe refuses to compile: not counted here)
event.register("numba:compile", Count())
report = {"mode": kernels.mode, "interpreted_at_first_chunk": _compile.interpreted()}
out = []
replay_lines(lines[:20], load_config(environ={}), out.append)
report["compiles_before_ready"] = list(compiles)
report["ready"] = kernels.wait(float(sys.argv[2]))
report["error"] = kernels.error
report["interpreted_after"] = _compile.interpreted()
full = []
replay_lines(lines, load_config(environ={}), full.append)
report["compiles_total"] = list(compiles)
report["lines"] = [x.decode() for x in full]
print(json.dumps(report))
"""


class TestFreshCache:
    """An empty numba cache: data is taken at once, interpreted; nothing compiles here."""

    @pytest.mark.slow
    def test_interpreted_then_compiled_without_compiling(
        self, recording: bytes, tmp_path: Path
    ) -> None:
        """First chunks interpreted, no compile in the process; the switch loads the cache.

        The child process compiles into the (new, empty) ``NUMBA_CACHE_DIR``; this
        process then only loads, and the replay after the switch gives the lines a
        compiled run gives. The next start finds the cache complete.
        """
        path = tmp_path / "ne_60_40.jsonl"
        path.write_bytes(recording)
        cache = tmp_path / "numba-cache"
        script = tmp_path / "fresh.py"
        script.write_text(FRESH_START)
        proc = subprocess.run(  # noqa: S603
            [sys.executable, str(script), str(path), "540"],
            capture_output=True,
            text=True,
            env=_env(NUMBA_CACHE_DIR=str(cache), STREAMPROC_JIT="auto"),
            timeout=600,
            check=False,
        )
        assert proc.returncode == 0, proc.stderr
        report = json.loads(proc.stdout)
        assert report["mode"] == "interpreted"
        assert report["interpreted_at_first_chunk"] is True
        assert report["compiles_before_ready"] == []
        assert report["ready"] is True
        assert report["error"] is None
        assert report["interpreted_after"] is False
        assert report["compiles_total"] == []  # the switch loaded, never compiled
        assert [x.encode() for x in report["lines"]] == _replay(recording.splitlines())
        # the next start: the cache is complete, compiled from the first chunk
        again = subprocess.run(
            [sys.executable, "-m", "streamproc.shell.warm", "--check"],
            capture_output=True,
            env=_env(NUMBA_CACHE_DIR=str(cache)),
            timeout=600,
            check=False,
        )
        assert again.returncode == 0, again.stderr
