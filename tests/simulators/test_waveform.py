"""Synthetic ABP generator and line artifacts."""

from __future__ import annotations

import numpy as np
import pytest

from simulators.waveform import (
    ARTIFACT_KINDS,
    SyntheticAbp,
    apply_artifact,
    synthesize_abp,
    synthesize_abp_beats,
)

FS = 125.0


def per_beat(s: SyntheticAbp) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Maximum, foot and area-mean of each complete true beat."""
    idx = np.round(s.onsets_s * s.fs).astype(np.int64)
    pairs = list(zip(idx[:-1].tolist(), idx[1:].tolist(), strict=True))
    x = s.samples
    tops = np.array([x[a:b].max() for a, b in pairs])
    feet = np.array([x[a] for a, _ in pairs])
    means = np.array([x[a:b].mean() for a, b in pairs])
    return tops, feet, means


def clean(**kwargs: object) -> SyntheticAbp:
    """A noiseless, breathless, perfectly regular recording."""
    args: dict[str, object] = {"noise_mmhg": 0.0, "resp_mmhg": 0.0, "hrv": 0.0}
    args.update(kwargs)
    return synthesize_abp_beats(**args)  # type: ignore[arg-type]


class TestSynthesizeAbp:
    """Beat morphology, timing and reproducibility."""

    def test_reproducible(self) -> None:
        """The same seed gives the same samples; another seed other samples."""
        a = synthesize_abp(duration_s=10, sbp=120, dbp=70, seed=3)
        b = synthesize_abp(duration_s=10, sbp=120, dbp=70, seed=3)
        c = synthesize_abp(duration_s=10, sbp=120, dbp=70, seed=4)
        assert np.array_equal(a, b)
        assert not np.array_equal(a, c)

    @pytest.mark.parametrize("fs", [125.0, 250.0, 500.0, 124.945])
    def test_length_dtype_finite(self, fs: float) -> None:
        """round(duration * fs) finite float64 samples."""
        x = synthesize_abp(duration_s=12.5, sbp=120, dbp=70, fs=fs)
        assert x.dtype == np.float64
        assert x.shape == (round(12.5 * fs),)
        assert np.isfinite(x).all()

    def test_synthesize_abp_is_the_samples_of_synthesize_abp_beats(self) -> None:
        """Both entry points give the same samples for the same arguments."""
        kwargs = {"duration_s": 8.0, "sbp": 100.0, "dbp": 60.0, "seed": 5, "af": True}
        assert np.array_equal(
            synthesize_abp(**kwargs),  # type: ignore[arg-type]
            synthesize_abp_beats(**kwargs).samples,  # type: ignore[arg-type]
        )

    @pytest.mark.parametrize(("sbp", "dbp"), [(120.0, 80.0), (60.0, 40.0), (38.0, 25.0)])
    def test_peak_and_foot(self, sbp: float, dbp: float) -> None:
        """Each beat's maximum is SBP and its foot DBP."""
        tops, feet, _ = per_beat(clean(duration_s=20, sbp=sbp, dbp=dbp))
        assert np.allclose(tops, sbp, atol=0.2)
        assert np.allclose(feet, dbp, atol=0.2)

    def test_60_over_40_map(self) -> None:
        """60/40 mmHg gives an area-mean of about 47 mmHg (46-48)."""
        _, _, means = per_beat(clean(duration_s=30, sbp=60, dbp=40, hr=80))
        assert 46.0 <= means.mean() <= 48.0

    def test_trajectories(self) -> None:
        """Callable SBP/DBP/HR are followed beat by beat."""
        s = clean(
            duration_s=60,
            sbp=lambda t: 140.0 - t,
            dbp=lambda t: 80.0 - 0.5 * t,
            hr=lambda t: 60.0 + t,
        )
        tops, feet, _ = per_beat(s)
        starts = s.onsets_s[:-1]
        assert np.allclose(tops, 140.0 - starts, atol=1.0)
        assert np.allclose(feet, 80.0 - 0.5 * starts, atol=1.0)
        rate = 60.0 / np.diff(s.onsets_s)
        assert np.allclose(rate, 60.0 + starts, rtol=0.05)

    @pytest.mark.parametrize("hr", [40.0, 80.0, 180.0])
    def test_heart_rate(self, hr: float) -> None:
        """The number of beats follows the heart rate."""
        s = synthesize_abp_beats(duration_s=60, sbp=120, dbp=70, hr=hr, seed=1)
        assert s.onsets_s.size == pytest.approx(hr, abs=2)
        assert s.complete_beats == s.onsets_s.size - 1

    def test_variability_and_af(self) -> None:
        """Default HRV is small; atrial fibrillation is irregular, with varying pulse pressure."""
        sinus = synthesize_abp_beats(duration_s=120, sbp=120, dbp=70, seed=2)
        af = synthesize_abp_beats(duration_s=120, sbp=120, dbp=70, seed=2, af=True)
        rr_sinus = np.diff(sinus.onsets_s)
        rr_af = np.diff(af.onsets_s)
        assert 0.01 < rr_sinus.std() / rr_sinus.mean() < 0.06
        assert rr_af.std() / rr_af.mean() > 0.12
        tops, feet, _ = per_beat(af)
        assert (tops - feet).std() > 3.0

    def test_morphology(self) -> None:
        """Fast upstroke, systolic peak, dicrotic notch and diastolic run-off."""
        s = clean(duration_s=10, sbp=120, dbp=70, hr=70)
        idx = np.round(s.onsets_s * FS).astype(np.int64)
        for a, b in zip(idx[:-1].tolist(), idx[1:].tolist(), strict=True):
            beat = s.samples[a:b]
            peak = int(np.argmax(beat))
            assert peak / FS < 0.12  # upstroke shorter than 120 ms
            d = np.diff(beat[peak:])
            # a notch: the pressure falls, rises again (dicrotic wave), then falls
            rises = np.flatnonzero(d > 0)
            assert rises.size > 0
            assert beat[peak + rises[0]] < beat[peak] - 10.0
            assert beat[-1] < beat[peak + rises[-1] + 1]

    def test_breathing_and_noise(self) -> None:
        """Respiration swings the pressure; noise is white with the given s.d."""
        s = synthesize_abp_beats(duration_s=60, sbp=120, dbp=70, resp_mmhg=5.0, noise_mmhg=0.0)
        tops, _, _ = per_beat(s)
        assert 6.0 < tops.max() - tops.min() < 12.0
        quiet = synthesize_abp(duration_s=20, sbp=120, dbp=70, noise_mmhg=0.0, seed=9)
        noisy = synthesize_abp(duration_s=20, sbp=120, dbp=70, noise_mmhg=1.0, seed=9)
        assert np.std(noisy - quiet) == pytest.approx(1.0, rel=0.1)

    def test_bad_arguments(self) -> None:
        """A non-positive duration or sampling rate is refused."""
        with pytest.raises(ValueError, match="duration_s"):
            synthesize_abp(duration_s=0, sbp=120, dbp=70)
        with pytest.raises(ValueError, match="fs"):
            synthesize_abp(duration_s=10, sbp=120, dbp=70, fs=0.0)


class TestApplyArtifact:
    """Each artifact kind, on a copy, inside its window only."""

    @staticmethod
    def base() -> np.ndarray:
        return synthesize_abp(duration_s=40, sbp=120, dbp=70, hr=75, seed=11)

    @staticmethod
    def window(x: np.ndarray, a: float, b: float) -> np.ndarray:
        return x[round(a * FS) : round(b * FS)]

    @pytest.mark.parametrize("kind", ARTIFACT_KINDS)
    def test_copy_and_window(self, kind: str) -> None:
        """The input is untouched; only samples inside the window change."""
        x = self.base()
        before = x.copy()
        y = apply_artifact(x, fs=FS, kind=kind, start_s=10, duration_s=8, seed=1)
        assert np.array_equal(x, before)
        assert y is not x
        assert y.shape == x.shape
        outside = np.ones(x.size, dtype=bool)
        outside[round(10 * FS) : round(18 * FS)] = False
        assert np.array_equal(y[outside], x[outside])
        inside = self.window(y, 10, 18)
        assert not np.array_equal(inside, self.window(x, 10, 18), equal_nan=True)

    def test_reproducible(self) -> None:
        """The same seed gives the same artifact."""
        x = self.base()
        a = apply_artifact(x, fs=FS, kind="flush", start_s=5, duration_s=2, seed=4)
        b = apply_artifact(x, fs=FS, kind="flush", start_s=5, duration_s=2, seed=4)
        assert np.array_equal(a, b)

    def test_flush(self) -> None:
        """A square wave to 250-300 mmHg, then ringing back to the waveform."""
        y = apply_artifact(self.base(), fs=FS, kind="flush", start_s=10, duration_s=2)
        w = self.window(y, 10, 12)
        assert 250.0 <= float(np.median(w)) <= 300.0
        assert float(np.mean(w > 240.0)) > 0.6
        ring = self.window(y, 11.6, 12)
        assert ring.min() < 120.0 < ring.max()

    def test_sampling(self) -> None:
        """The syringe: low and flat, with aspiration dips, then the waveform returns."""
        y = apply_artifact(self.base(), fs=FS, kind="sampling", start_s=10, duration_s=8)
        w = self.window(y, 10.5, 17.5)
        assert w.max() < 20.0
        assert w.max() - w.min() > 4.0

    def test_overdamped(self) -> None:
        """Smaller pulse, same mean."""
        x = self.base()
        y = apply_artifact(x, fs=FS, kind="overdamped", start_s=10, duration_s=10)
        a, b = self.window(x, 12, 18), self.window(y, 12, 18)
        assert np.ptp(b) < 0.5 * np.ptp(a)
        assert b.mean() == pytest.approx(a.mean(), abs=3.0)

    def test_underdamped(self) -> None:
        """Systolic overshoot and ringing, same mean."""
        x = self.base()
        y = apply_artifact(x, fs=FS, kind="underdamped", start_s=10, duration_s=10)
        a, b = self.window(x, 12, 18), self.window(y, 12, 18)
        assert b.max() > a.max() + 8.0
        assert b.mean() == pytest.approx(a.mean(), abs=3.0)

    @pytest.mark.parametrize(("kind", "limit"), [("zeroing", 0.5), ("disconnect", 2.0)])
    def test_flat_at_zero(self, kind: str, limit: float) -> None:
        """Zeroing and a disconnected transducer read about 0 mmHg."""
        y = apply_artifact(self.base(), fs=FS, kind=kind, start_s=10, duration_s=10)
        w = self.window(y, 10.2, 19.8)
        assert np.abs(w).max() < limit

    def test_calibration(self) -> None:
        """A square wave between negative and positive levels, then +16/+48 steps."""
        y = apply_artifact(self.base(), fs=FS, kind="calibration", start_s=10, duration_s=12)
        w = self.window(y, 10, 22)
        assert set(np.unique(w).tolist()) <= {-72.0, -24.0, -16.0, 16.0, 24.0, 48.0}
        assert w.min() == -72.0
        assert w.max() == 48.0

    def test_clot(self) -> None:
        """The pulse shrinks progressively."""
        y = apply_artifact(self.base(), fs=FS, kind="clot", start_s=10, duration_s=10)
        early, late = np.ptp(self.window(y, 10, 12)), np.ptp(self.window(y, 17, 19))
        assert late < 0.3 * early

    def test_gap(self) -> None:
        """Missing samples are NaN, exactly in the window."""
        y = apply_artifact(self.base(), fs=FS, kind="gap", start_s=10, duration_s=2)
        assert np.isnan(self.window(y, 10, 12)).all()
        assert np.isnan(y).sum() == round(2 * FS)

    def test_unknown_kind(self) -> None:
        """An unknown kind is refused, naming the known ones."""
        with pytest.raises(ValueError, match="unknown artifact kind") as err:
            apply_artifact(self.base(), fs=FS, kind="bubble", start_s=1, duration_s=1)
        assert all(kind in str(err.value) for kind in ARTIFACT_KINDS)

    def test_outside_the_samples(self) -> None:
        """An artifact past the end of the samples is refused."""
        with pytest.raises(ValueError, match="overlap"):
            apply_artifact(self.base(), fs=FS, kind="flush", start_s=100, duration_s=1)
