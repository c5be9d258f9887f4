"""The compiled per-beat path: it skips only beats on which the protocol decides nothing.

``_kernels.advance_beats`` takes a chunk's beats (window, medians, hold timers)
and stops at a beat after which a decision could change; the monitor then
decides in Python. The oracle here is the monitor forced to decide after
every beat (the context says an alarm of an unknown state is open, and the
signal-invalid alarm too): the alarms must be exactly the same.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from simulators.scenario import load_scenario, render, scenario_dir, to_jsonl
from simulators.waveform import synthesize_abp
from streamproc.apps.replay import replay_lines
from streamproc.core.monitor import BedMonitor
from streamproc.core.protocol import hold
from streamproc.core.protocol.messages import AbpChunk, BedId, Drug, Infusion, RateUnit
from streamproc.core.protocol.settings import Settings
from streamproc.core.signal import _kernels, state
from streamproc.shell.config import load_config
from tests.core.signal.test_kernels import INTERPRETED

T0 = 1_700_000_000.0
#: The monitor's kernels (the detector's are ``test_kernels.INTERPRETED``).
MONITOR_KERNELS = (
    "step_chunk",
    "advance_beats",
    "_monitor_views",
    "_sorted_median",
    "_window_push",
    "_window_drop",
    "judge_line",
    "beat_line_class",
    "_follow",
    "step_chunks",
    "_stopped",
)
SCENARIOS = sorted(scenario_dir().glob("*.toml"))


def _replay(path: Path) -> list[bytes]:
    lines = to_jsonl(render(load_scenario(path))).splitlines()
    out: list[bytes] = []
    replay_lines(lines, load_config(environ={}), out.append)
    return out


def _force_decisions(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make ``advance_beats`` hand every beat to the Python decisions."""
    context = BedMonitor._context  # noqa: SLF001 - patched: every beat to the Python decisions

    def always(self: BedMonitor) -> np.ndarray:
        ctx = context(self)
        ctx[state.C_ALARM] = hold.ALARM_OTHER
        ctx[state.C_SIGNAL_INVALID] = 1.0
        return ctx

    monkeypatch.setattr(BedMonitor, "_context", always)


class TestSkipsOnlyIdleBeats:
    """Deciding after every beat changes nothing: the skipped beats were idle."""

    @pytest.mark.parametrize("path", SCENARIOS, ids=[p.stem for p in SCENARIOS])
    def test_scenario_same_alarms(self, path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        """Replay of each bundled scenario: the same alarm lines, byte for byte."""
        fast = _replay(path)
        _force_decisions(monkeypatch)
        assert _replay(path) == fast

    def test_scenarios_alarm_at_all(self) -> None:
        """The comparison above is about something: the scenarios raise and clear alarms."""
        lines = [line for path in SCENARIOS for line in _replay(path)]
        assert sum(b'"state":"active"' in line for line in lines) >= 10
        assert sum(b'"state":"cleared"' in line for line in lines) >= 3

    def test_live_clock_same_alarms(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """Live (processor clock, ticks): a 60/40 bed on NE gets the same transitions."""

        def run() -> list[dict[str, object]]:
            mon = BedMonitor(BedId("w1", "b1"), Settings())
            x = synthesize_abp(duration_s=400, sbp=60.0, dbp=40.0, hr=90.0, seed=2)
            events = mon.receive(Infusion(T0, Drug.NOREPINEPHRINE, 0.3, RateUnit.MCG_KG_MIN), T0)
            for k in range(400):
                chunk = AbpChunk(T0 + k, 125.0, np.ascontiguousarray(x[k * 125 : (k + 1) * 125]))
                events += mon.receive(chunk, T0 + k + 1.01)
                events += mon.tick(T0 + k + 1.5)
            return [ev.payload() for ev in events]

        fast = run()
        _force_decisions(monkeypatch)
        assert fast  # raised, escalated, re-announced
        assert run() == fast


class TestWindow:
    """The rolling window and its medians."""

    def test_medians_of_the_window(self) -> None:
        """The monitor's numerics are the medians of the beats of the last 10 s."""
        mon = BedMonitor(BedId("w1", "b1"), Settings())
        x = synthesize_abp(duration_s=60, sbp=118.0, dbp=64.0, hr=75.0, seed=5)
        mon.receive(AbpChunk(T0, 125.0, x), T0 + 60)
        win = mon.window
        assert win[-1, state.W_END] - win[0, state.W_END] <= 10.0
        assert len(win) >= 10
        assert mon.map == float(np.median(win[:, state.W_MAP]))
        assert mon.sbp == float(np.median(win[:, state.W_SBP]))
        assert mon.hr == pytest.approx(75.0, rel=0.05)

    def test_grows_for_a_fast_rhythm(self) -> None:
        """At 220/min a 10-s window holds ~37 beats: it grows past its first 16 rows."""
        mon = BedMonitor(BedId("w1", "b1"), Settings())
        x = synthesize_abp(duration_s=40, sbp=100.0, dbp=60.0, hr=220.0, seed=6)
        for k in range(40):
            mon.receive(
                AbpChunk(T0 + k, 125.0, np.ascontiguousarray(x[k * 125 : (k + 1) * 125])), T0
            )
        assert len(mon.window) > 30
        assert mon.hr == pytest.approx(220.0, rel=0.05)
        assert not math.isnan(mon.map or math.nan)


class TestCompiledMatchesInterpreted:
    """The per-chunk kernels compiled and interpreted give the same alarms."""

    def test_same_alarms(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """Every kernel a chunk runs through interpreted: the same replay output."""
        path = scenario_dir() / "ne_60_40.toml"
        compiled = _replay(path)
        for name in (*INTERPRETED, *MONITOR_KERNELS):
            monkeypatch.setattr(_kernels, name, getattr(_kernels, name).py_func)
        assert compiled
        assert _replay(path) == compiled

    def test_every_kernel_is_interpreted_above(self) -> None:
        """The lists name every compiled function (but the plumbing of ``step_chunks``'
        table, which computes nothing)."""
        compiled = {name for name, f in vars(_kernels).items() if hasattr(f, "py_func")}
        plumbing = {"table_new", "table_append", "table_set"}
        assert compiled == {*INTERPRETED, *MONITOR_KERNELS, *plumbing}
