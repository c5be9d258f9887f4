"""The core makes no reference cycles, so the service may freeze its state (GcPolicy)."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import numpy as np
import pytest

from simulators.waveform import synthesize_abp
from streamproc.core.engine import Batch, Engine
from streamproc.core.protocol.messages import AbpChunk, Ack, BedId, Drug, Infusion, RateUnit
from streamproc.shell.service.health import GcPolicy

T0 = 1_700_000_000.0


@pytest.fixture(autouse=True)
def _restore_gc() -> Iterator[None]:
    """Leave the interpreter's collector as it was: enabled, nothing frozen, no debug."""
    was_enabled = gc.isenabled()
    yield
    gc.set_debug(0)
    gc.garbage.clear()
    gc.unfreeze()
    if was_enabled:
        gc.enable()


class TestNoCycles:
    """A ward's worth of messages, alarms, acknowledgements and ticks leaves no cyclic garbage."""

    def test_core_allocates_no_cycles(self) -> None:
        """With the collector off, everything the core dropped was freed by reference counts."""
        low = synthesize_abp(duration_s=40, sbp=60.0, dbp=40.0, hr=90.0, seed=2)
        normal = synthesize_abp(duration_s=40, sbp=120.0, dbp=70.0, hr=70.0, seed=3)
        eng = Engine()
        gc.collect()
        gc.disable()
        events = []
        for i in range(40):
            bed = BedId("w1", f"b{i:02d}")
            x = low if i % 2 else normal
            eng.receive(
                Batch([(bed, Infusion(T0, Drug.NOREPINEPHRINE, 0.3, RateUnit.MCG_KG_MIN), T0)])
            )
            for k in range(40):
                chunk = AbpChunk(T0 + k, 125.0, np.ascontiguousarray(x[k * 125 : (k + 1) * 125]))
                events.extend(eng.receive(Batch([(bed, chunk, T0 + k + 1)])))
        for k in range(10):
            events.extend(eng.tick(T0 + 41 + k * 30))
        raised = [ev for ev in events if ev.state.value == "active"]
        assert raised  # the low beds alarmed: alarm objects were made and moved
        for ev in raised[:5]:
            eng.receive(Batch([(ev.bed, Ack(T0 + 400, ev.alarm_id, "station-1"), T0 + 400)]))
        del events, raised
        gc.set_debug(gc.DEBUG_SAVEALL)
        assert gc.collect() == 0, [type(o).__name__ for o in gc.garbage[:20]]


class TestGcPolicy:
    """Young generations collected and the rest frozen on schedule; a full pass now and then."""

    def test_freezes_then_full_collects(self) -> None:
        """step() freezes at once, again after freeze_s, and unfreezes + collects at full_s."""
        policy = GcPolicy(freeze_s=10.0, full_s=100.0)
        gc.unfreeze()
        policy.step(1000.0)
        assert gc.get_freeze_count() > 0
        assert policy.next_freeze == 1010.0
        gc.unfreeze()
        policy.step(1005.0)  # not yet due
        assert gc.get_freeze_count() == 0
        policy.step(1010.0)
        assert gc.get_freeze_count() > 0
        # the full pass: unfreeze, collect everything, freeze again, schedule the next
        policy.step(1100.0)
        assert policy.next_full == 1200.0
        assert gc.get_freeze_count() > 0  # frozen again after the full pass
