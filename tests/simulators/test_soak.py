"""Soak: a ward against a live streamproc (spawned), every bed checked against its ground truth."""

from __future__ import annotations

import json
import time
from dataclasses import replace
from pathlib import Path

import pytest

from simulators.cli import main
from simulators.scenario import Expectation, load_scenario, scenario_dir
from simulators.soak import (
    AlarmCollector,
    classify,
    default_unit_prefix,
    histogram_quantile,
    live_expectations,
    memory_growth,
    scrape,
    service_figures,
)
from tests.system.broker import MosquittoBroker, Subscriber

SCENARIOS = scenario_dir()
#: Beds whose alarms are timed on the data (silent_bed's data_stale takes 30 s of wall time).
QUICK_MIX = "ne_60_40=1,ne_vasopressin_60_40=1,recovery=1,transient_dip=1,numerics_only=1,stable=1"

IMPOSSIBLE = """
name = "impossible"
description = "A normotensive patient whose file expects a hypotension alarm: it must be missed."
duration_s = 60
[[infusion]]
t = 0
drug = "norepinephrine"
rate = 0.05
unit = "mcg/kg/min"
[[pressure]]
t = 0
sbp = 125
dbp = 75
[[pressure]]
t = 60
sbp = 125
dbp = 75
[[expect]]
kind = "hypotension"
state = "active"
after_s = 10
before_s = 50
"""


def alarm(sc_t0: float, t: float, kind: str = "hypotension", **fields: object) -> dict[str, object]:
    base: dict[str, object] = {
        "kind": kind,
        "state": "active",
        "priority": "high",
        "ts": sc_t0 + t,
        "unit": "ward7",
        "bed": "bed03",
    }
    base.update(fields)
    return base


class TestLiveExpectations:
    def test_data_stale_window_moves_with_speed(self) -> None:
        """silent_bed goes quiet at data 120 s; at speed 10 the service's wall clock raises
        data_stale 30 s later, at data time 12 + 30: the window [145, 160] becomes [37, 52]."""
        sc = load_scenario(SCENARIOS / "silent_bed.toml")
        live, skipped = live_expectations(sc, 10)
        assert skipped == ()
        (exp,) = live.expect
        assert (exp.after_s, exp.before_s) == pytest.approx((37.0, 52.0))
        assert live_expectations(sc, 1)[0] is sc
        assert live_expectations(sc, 0)[1] == sc.expect

    def test_data_time_expectations_unchanged(self) -> None:
        """Alarms timed on the data (hypotension) keep their windows at any speed."""
        sc = load_scenario(SCENARIOS / "ne_60_40.toml")
        assert live_expectations(sc, 25)[0].expect == sc.expect

    def test_classify(self) -> None:
        """met, missed, late (also early), wrong step, and false for a forbidden alarm."""
        sc = load_scenario(SCENARIOS / "ne_60_40.toml")
        exp = Expectation("hypotension", "active", "high", 40, 90)
        assert classify(sc, exp, [alarm(sc.t0, 60)])[0] == "met"
        assert classify(sc, exp, [])[0] == "missed"
        assert classify(sc, exp, [alarm(sc.t0, 120)])[0] == "late"
        assert classify(sc, exp, [alarm(sc.t0, 10)])[0] == "late"
        stepped = replace(exp, step="add_vasopressin")
        assert classify(sc, stepped, [alarm(sc.t0, 60, step="other")])[0] == "wrong"
        none = Expectation("hypotension", "none")
        assert classify(sc, none, [alarm(sc.t0, 60)])[0] == "false"

    def test_fresh_unit_prefix(self) -> None:
        """The default unit prefix changes with time and carries the seed."""
        a = default_unit_prefix(3, now=1_800_000_000.0)
        b = default_unit_prefix(3, now=1_800_000_001.0)
        assert a != b
        assert a.startswith("s3-")
        assert a.endswith("-w")


class TestFigures:
    def test_histogram_quantile_interpolates_like_prometheus(self) -> None:
        buckets = [(0.001, 50.0), (0.01, 90.0), (0.1, 100.0), (float("inf"), 100.0)]
        assert histogram_quantile(0.5, buckets) == pytest.approx(0.001)
        assert histogram_quantile(0.7, buckets) == pytest.approx(0.0055)
        assert histogram_quantile(0.99, buckets) == pytest.approx(0.091)
        assert histogram_quantile(0.99, [(1.0, 0.0), (float("inf"), 0.0)]) is None
        # past the last finite bound: the highest finite bound
        assert histogram_quantile(0.99, [(0.5, 1.0), (float("inf"), 10.0)]) == 0.5

    def test_scrape_and_service_figures(self) -> None:
        text = "\n".join(
            [
                "# HELP streamproc_messages_in_total x",
                'streamproc_messages_in_total{kind="abp"} 90.0',
                'streamproc_messages_in_total{kind="vitals"} 10.0',
                'streamproc_processing_latency_seconds_bucket{le="0.001"} 99.0',
                'streamproc_processing_latency_seconds_bucket{le="+Inf"} 100.0',
            ]
        )
        m = scrape(text)
        assert m['streamproc_messages_in_total{kind="abp"}'] == 90.0
        samples = [
            {"t_s": 0.5, "rss_kb": 100_000, "latency_buckets": []},
            {"t_s": 60.0, "rss_kb": 200_000, "latency_buckets": [(0.001, 9.0), (1e9, 10.0)]},
            {
                "t_s": 120.0,
                "rss_kb": 202_000,
                "messages_in": 100,
                "latency_buckets": [(0.001, 99.0), (1e9, 100.0)],
            },
        ]
        figures = service_figures(samples, warmup_s=30.0)
        assert figures["memory"]["growth_pct"] == 1.0
        assert figures["memory"]["rss_mb_peak"] == pytest.approx(197.3, abs=0.1)
        assert figures["messages"]["messages_in"] == 100
        assert figures["latency"]["observations"] == 100
        assert figures["latency"]["p99_ms"] == pytest.approx(1.0)

    def test_growth_needs_two_samples_after_the_warmup(self) -> None:
        got = memory_growth([{"t_s": 0.0, "rss_kb": 1}, {"t_s": 10.0, "rss_kb": 2}], 5.0)
        assert got["growth_pct"] is None
        assert "fewer than two" in got["note"]


class TestSoak:
    def test_short_soak_zero_missed(
        self, broker: MosquittoBroker, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """6 beds x 3 simulated minutes at speed 20 with --spawn-service: every expected alarm
        arrives in its window, nothing forbidden fires, exit 0; retained topics are cleared."""
        report = tmp_path / "soak.json"
        start = time.monotonic()
        rc = main(
            [
                "soak",
                "--beds",
                "6",
                "--duration",
                "3m",
                "--speed",
                "20",
                "--mix",
                QUICK_MIX,
                "--broker",
                broker.url,
                "--spawn-service",
                "--grace",
                "3",
                "--report",
                str(report),
                "--no-progress",
            ]
        )
        out = capsys.readouterr().out
        assert rc == 0, out
        assert time.monotonic() - start < 40
        data = json.loads(report.read_text())
        totals = data["totals"]
        assert totals["beds"] == 6
        assert totals["expected"] >= 4
        assert totals.get("missed", 0) == 0
        assert totals.get("false", 0) == 0
        assert totals.get("late", 0) == 0
        assert totals["met"] == totals["expected"]
        assert data["publish"]["speed_achieved"] == pytest.approx(20, rel=0.1)
        assert data["service"]["ingress_dropped"] == 0
        assert data["service"]["exit_code"] == 0
        assert "soak: 6 beds" in out
        # nothing of the run stays retained on the broker
        with Subscriber(broker, "icu/#") as sub:
            time.sleep(0.5)
            assert [m.topic for m in sub.messages if m.retain] == []

    def test_impossible_expectation_exits_1_naming_the_bed(
        self, broker: MosquittoBroker, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """A scenario that expects an alarm that cannot happen: the soak exits 1 and names
        the bed that missed it."""
        path = tmp_path / "impossible.toml"
        path.write_text(IMPOSSIBLE)
        rc = main(
            [
                "soak",
                str(path),
                "--beds",
                "2",
                "--speed",
                "20",
                "--broker",
                broker.url,
                "--spawn-service",
                "--grace",
                "2",
                "--unit-prefix",
                "imp",
                "--no-progress",
            ]
        )
        out = capsys.readouterr().out
        assert rc == 1
        assert "MISSED expected alarms on imp1/bed001, imp1/bed002" in out
        assert "impossible: missed hypotension active" in out

    def test_collector_ignores_retained_and_other_units(self, broker: MosquittoBroker) -> None:
        """Retained alarm state (an earlier run's, replayed on subscribe) and other units'
        alarms are not counted; live alarms of the soak's units are, by bed."""
        stale = json.dumps(
            {"kind": "hypotension", "state": "active", "ts": 1.0, "unit": "u1", "bed": "bed001"}
        )
        with Subscriber(broker, None) as pub:
            pub.publish("icu/u1/bed001/alarms/hypotension", stale, retain=True)
            collector = AlarmCollector(broker.url, units=["u1"]).start()
            try:
                fresh = stale.replace("1.0", "2.0")
                pub.publish("icu/u1/bed001/alarms/hypotension", fresh, retain=True)
                pub.publish("icu/u2/bed001/alarms/hypotension", stale.replace("u1", "u2"))
                pub.publish("icu/u1/bed002/alarms/hypotension", b"not json")
                deadline = time.monotonic() + 5
                while collector.received < 1 and time.monotonic() < deadline:
                    time.sleep(0.02)
                time.sleep(0.2)
            finally:
                collector.stop()
        assert collector.retained_ignored == 1
        assert collector.undecodable == 1
        assert [a["ts"] for a in collector.alarms("u1", "bed001")] == [2.0]
        assert collector.alarms("u2", "bed001") == []
        assert collector.topics == {"icu/u1/bed001/alarms/hypotension"}
