"""Hypothesis: the engine's alarms do not depend on how the waveform is cut into chunks."""

from __future__ import annotations

import itertools
from functools import cache

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from simulators.scenario import load_scenario, scenario_dir, waveform
from streamproc.core.engine import Batch, Engine
from streamproc.core.monitor import Clock
from streamproc.core.protocol.messages import AbpChunk, BedId, Drug, Infusion, RateUnit

BED = BedId("ward7", "bed03")


@cache
def headline() -> tuple[float, float, np.ndarray]:
    sc = load_scenario(scenario_dir() / "ne_60_40.toml")
    return sc.t0, sc.fs, waveform(sc)


def alarms_for(cuts: list[int]) -> list[dict[str, object]]:
    """Run the engine (replay mode) over the headline waveform cut at ``cuts``."""
    t0, fs, x = headline()
    eng = Engine(clock=Clock.DATA)
    out = eng.receive(
        Batch([(BED, Infusion(t0, Drug.NOREPINEPHRINE, 0.3, RateUnit.MCG_KG_MIN), t0)])
    )
    bounds = [0, *sorted(set(cuts)), x.size]
    for a, b in itertools.pairwise(bounds):
        if b <= a:
            continue
        chunk = AbpChunk(t0 + a / fs, fs, np.ascontiguousarray(x[a:b]))
        out.extend(eng.receive(Batch([(BED, chunk, chunk.ts)])))
    return [ev.payload() for ev in out]


class TestChunkIndependence:
    @settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(st.lists(st.integers(min_value=1, max_value=29_999), min_size=1, max_size=400))
    def test_alarms_same_for_any_cuts(self, cuts: list[int]) -> None:
        """Any cutting of the 60/40 waveform gives exactly the alarms of one-second chunks."""
        reference = alarms_for(list(range(125, 30_000, 125)))
        assert reference  # the headline alarm is there to compare
        assert alarms_for(cuts) == reference
