"""The compiled detector loops agree with the same code run by the interpreter."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from simulators.waveform import synthesize_abp
from streamproc.core import _compile
from streamproc.core.protocol.messages import AbpChunk
from streamproc.core.protocol.settings import BeatSettings
from streamproc.core.signal import _kernels, state
from streamproc.core.signal.beats import BeatDetector, _Segment, warm_up

FS = 125.0
T0 = 1_700_000_000.0


#: The kernels a chunk runs through: all of them interpreted gives the compiled beats.
INTERPRETED = (
    "detect_beats",
    "_segment_views",
    "has_room",
    "detect",
    "_scan_learned",
    "_scan_learning",
    "classify",
    "measure_beat",
    "judge_level",
    "_median_of",
)


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
        for name in INTERPRETED:
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


def _reference_onsets(x: np.ndarray, seg: _Segment, frac: float, min_up: float) -> list[int]:
    """Stages 1-4 of ``_kernels.detect`` written plainly: every slope sum, a brute-force maximum."""
    coef, _, _, _, ipar, fstate, _, _, c_tail = _kernels._segment_views(seg.sp, seg.si, seg.sf)  # noqa: SLF001 - the kernel's packed views
    b0_, b1_, b2_, a1_, a2_ = coef.tolist()
    z0, z1 = float(fstate[state.Z0]), float(fstate[state.Z1])
    h, learn_n, refr = (
        int(ipar[state.IP_H]),
        int(ipar[state.IP_LEARN_N]),
        int(ipar[state.IP_REFR]),
    )
    w = c_tail.size
    y = []
    for xi in x.tolist():
        yi = z0 + b0_ * xi
        z0 = z1 + b1_ * xi - a1_ * yi
        z1 = b2_ * xi - a2_ * yi
        y.append(yi)
    c, csum, prev = 0.0, [], y[0]
    for yi in y:
        d = yi - prev
        if d > 0.0:
            c += d
        prev = yi
        csum.append(c)
    ssf = [csum[i] - (csum[i - w] if i >= w else 0.0) for i in range(len(y))]
    learn_level = max([0.0, *ssf[:learn_n]])
    onsets, prev_above, last = [], True, -(1 << 62)
    for i, v in enumerate(ssf):
        level = learn_level if i < learn_n else max(ssf[max(0, i - h + 1) : i + 1])
        above = v > max(level * frac, min_up)
        if above and not prev_above and i - last >= refr:
            last = i
            lo = max(i - w, 0)
            foot = lo + int(np.argmin(y[lo : i + 1]))
            if foot > 0:
                onsets.append(foot)
        prev_above = above
    return onsets


def _detected_onsets(x: np.ndarray, seg: _Segment, cuts: list[int]) -> list[int]:
    """``_kernels.detect`` over ``x`` cut at ``cuts``: the onsets, in segment indices."""
    views = _kernels._segment_views(seg.sp, seg.si, seg.sf)  # noqa: SLF001 - the kernel's packed views
    coef, fpar, _, istate, ipar, fstate, _, _, c_tail = views
    out: list[int] = []
    edges = [0, *sorted(set(cuts)), x.size]
    for a, b in itertools.pairwise(edges):
        if b > a:
            seg.grow(b - a)
            found = _kernels.detect(
                x[a:b].copy(),
                coef,
                fstate,
                istate,
                c_tail,
                seg.ssf,
                seg.dq,
                seg.ybuf,
                int(ipar[state.IP_H]),
                int(ipar[state.IP_LEARN_N]),
                int(ipar[state.IP_REFR]),
                float(fpar[state.FP_FRAC]),
                float(fpar[state.FP_MIN_UP]),
            )
            out.extend(found.tolist())
    return out


class TestDetectAgainstReference:
    """The compiled detection finds exactly the onsets of its plain definition.

    The compiled scan keeps out of its sliding maximum the slope sums that cannot
    raise the threshold, and skips samples that cannot be above it; the reference
    takes every slope sum and the maximum by brute force.
    """

    @settings(max_examples=30, deadline=None)
    @given(
        frac=st.sampled_from([0.1, 0.35, 0.9, 1.0, 1.3, 3.0]),
        min_up=st.sampled_from([0.2, 2.0, 9.0]),
        hr=st.floats(min_value=35.0, max_value=190.0),
        noise=st.sampled_from([0.0, 0.5, 3.0, -0.3, -1.0]),
        seed=st.integers(min_value=0, max_value=1000),
        cuts=st.lists(st.integers(min_value=1, max_value=2999), max_size=30),
    )
    def test_same_onsets(
        self, frac: float, min_up: float, hr: float, noise: float, seed: int, cuts: list[int]
    ) -> None:
        """Any threshold fraction (above 1 too), floor, rhythm, noise and cutting.

        A negative ``noise`` is a line of noise alone (its size ``-noise``): slope
        sums around the floor, where the skipped ones matter.
        """
        rng = np.random.default_rng(seed)
        if noise >= 0:
            x = synthesize_abp(duration_s=24, sbp=110.0, dbp=60.0, hr=hr, seed=seed)[:3000]
            x = x + rng.normal(0.0, noise, x.size)
        else:
            x = 60.0 + rng.normal(0.0, -noise, 3000)
        beat_settings = BeatSettings(threshold_fraction=frac, min_upstroke_mmhg=min_up)
        seg = _Segment(beat_settings, T0, FS, float(x[0]))
        ref = _reference_onsets(x, _Segment(beat_settings, T0, FS, float(x[0])), frac, min_up)
        assert _detected_onsets(x, seg, cuts) == ref

    def test_reference_finds_beats(self) -> None:
        """The comparison is about something: the reference finds the ~30 beats of 24 s."""
        x = synthesize_abp(duration_s=24, sbp=110.0, dbp=60.0, hr=75.0, seed=1)[:3000]
        seg = _Segment(BeatSettings(), T0, FS, float(x[0]))
        assert 26 <= len(_reference_onsets(x, seg, 0.35, 2.0)) <= 32


class TestBuffers:
    """A segment's buffers grow for whatever chunk comes, and stay bounded."""

    def test_largest_chunk_in_one_piece(self) -> None:
        """A chunk of the most samples a message may hold: the same beats as 1-s chunks."""
        x = synthesize_abp(duration_s=480, sbp=120.0, dbp=70.0, hr=80.0, seed=4)[:60_000]
        whole = _beats(x, [])
        cut = _beats(x, list(range(125, x.size, 125)))
        assert len(whole) > 600
        np.testing.assert_allclose(np.array(whole), np.array(cut), rtol=0, atol=1e-9)

    def test_buffers_shrink_back_to_what_is_held(self) -> None:
        """After a big chunk, 1-s chunks hold only about a beat of filtered samples."""
        x = synthesize_abp(duration_s=80, sbp=120.0, dbp=70.0, hr=80.0, seed=4)
        det = BeatDetector(BeatSettings())
        det.feed(AbpChunk(T0, FS, x[:7500].copy()))
        for k in range(60, 80):
            det.feed(AbpChunk(T0 + k, FS, x[k * 125 : (k + 1) * 125].copy()))
        seg = det.current()
        assert seg is not None
        assert int(seg.istate[state.Y_LEN]) < 400


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
        real = _compile.numba.njit
        asked: list[bool] = []

        def njit(**kwargs: object) -> object:
            asked.append(bool(kwargs["cache"]))
            if kwargs["cache"]:
                raise RuntimeError("cannot cache function 'f': no locator available")
            return real(**kwargs)

        monkeypatch.setattr(_compile.numba, "njit", njit)

        def twice(x: float) -> float:
            return 2.0 * x

        compiled = _compile.jit(twice)
        assert asked == [True, False]
        assert compiled(21.0) == 42.0
        assert hasattr(compiled, "py_func")
