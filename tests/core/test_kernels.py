"""The compiled detector loops agree with the same code run by the interpreter."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from simulators.waveform import synthesize_abp
from streamproc.core import _kernels
from streamproc.core.beats import BeatDetector, warm_up
from streamproc.core.messages import AbpChunk
from streamproc.core.settings import BeatSettings

FS = 125.0
T0 = 1_700_000_000.0


def _beats(x: np.ndarray, cuts: list[int]) -> list[tuple[float, ...]]:
    det = BeatDetector(BeatSettings())
    out = []
    edges = [0, *sorted(set(cuts)), x.size]
    for a, b in itertools.pairwise(edges):
        if b > a:
            chunk = AbpChunk(T0 + a / FS, FS, x[a:b].copy())
            out.extend((b_.onset, b_.end, b_.sbp, b_.dbp, b_.map, b_.hr) for b_ in det.feed(chunk))
    return out


class TestCompiledMatchesInterpreted:
    """numba's compiled loops compute what their Python source says."""

    X = synthesize_abp(duration_s=40, sbp=120.0, dbp=70.0, hr=80.0, seed=3)

    def test_compiled_beats(self) -> None:
        """The compiled detector finds the expected ~53 beats of 40 s at 80/min."""
        beats = _beats(self.X, list(range(125, self.X.size, 125)))
        assert 48 <= len(beats) <= 54
        assert all(60.0 < b[5] < 100.0 for b in beats)

    def test_interpreted_equals_compiled(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """Interpreted (``.py_func``) and compiled runs give the same beats, to the last bit."""
        cuts = list(range(125, self.X.size, 125))
        compiled = _beats(self.X, cuts)
        for name in ("detect_beats", "detect", "classify", "judge_level", "beat_measures"):
            monkeypatch.setattr(_kernels, name, getattr(_kernels, name).py_func)
        interpreted = _beats(self.X, cuts)
        assert len(compiled) > 40
        assert interpreted == compiled

    @settings(max_examples=25, deadline=None)
    @given(st.lists(st.integers(min_value=1, max_value=4999), max_size=40))
    def test_any_chunking_same_beats(self, cuts: list[int]) -> None:
        """Compiled: any cutting of the waveform gives the beats of one piece (to rounding)."""
        whole = _beats(self.X, [])
        cut = _beats(self.X, cuts)
        assert len(cut) == len(whole)
        np.testing.assert_allclose(np.array(cut), np.array(whole), rtol=0, atol=1e-9)


class TestWarmUp:
    """The engine warms the compiled loops once per process."""

    def test_idempotent(self) -> None:
        """A second call is free and harmless."""
        warm_up()
        warm_up()
        assert _kernels.detect_beats.signatures  # compiled for at least one signature


class TestNoCacheLocation:
    """Where numba finds no writable cache directory, the kernels still compile."""

    def test_falls_back_to_no_cache(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """cache=True refused at decoration time -> compiled without the disk cache."""
        real = _kernels.numba.njit
        asked: list[bool] = []

        def njit(**kwargs: object) -> object:
            asked.append(bool(kwargs["cache"]))
            if kwargs["cache"]:
                raise RuntimeError("cannot cache function 'f': no locator available")
            return real(**kwargs)

        monkeypatch.setattr(_kernels.numba, "njit", njit)

        def twice(x: float) -> float:
            return 2.0 * x

        compiled = _kernels._jit(twice)
        assert asked == [True, False]
        assert compiled(21.0) == 42.0
        assert hasattr(compiled, "py_func")
