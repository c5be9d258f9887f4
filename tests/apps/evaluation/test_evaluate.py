"""``streamproc evaluate``: truth, scoring, the labelled set, sweeps, the report, real records."""

from __future__ import annotations

import base64
import dataclasses
import itertools
import json
import re
from pathlib import Path

import pytest

from simulators.evalset import (
    ARTIFACT_LENGTHS,
    build_evalset,
    random_artifacts,
    scenario_recording,
    scenario_truth,
    seeded,
)
from simulators.evalset import main as evalset_main
from simulators.scenario import Scenario, load_scenario, scenario_dir
from streamproc.apps import replay
from streamproc.apps.cli import main
from streamproc.apps.evaluation.evaluate import (
    evaluate,
    load_inputs,
    parse_sweep,
    run_recording,
    score_bed,
    sweep,
)
from streamproc.apps.evaluation.truth import (
    BedTruth,
    EvaluateError,
    LabelsError,
    Span,
    Truth,
    load_labels,
    read_truth,
    write_truth,
)
from streamproc.core.protocol.alarms import Alarm, AlarmEvent, Priority, Trigger
from streamproc.core.protocol.messages import BedId
from streamproc.shell.config import ConfigError, load_config
from tests.abp_data import abp_records

LABELS = Path(__file__).resolve().parents[3] / "config" / "labels"
#: Scenarios of the small labelled set: two critical, two sustained-only, three without episode.
SMALL = (
    "ne_60_40",
    "recovery",
    "profile_trauma_tbi",
    "profile_chronic_hypertension",
    "transient_dip",
    "stable",
    "profile_trauma",
)
#: Episodes that only the sustained (not the critical) rule can detect.
SUSTAINED_ONLY = ("recovery", "profile_trauma_tbi", "profile_chronic_hypertension")
T0 = 1_732_400_000.0


def sc(name: str) -> Scenario:
    return load_scenario(scenario_dir() / f"{name}.toml")


@pytest.fixture(scope="module")
def small_set(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A labelled set in tmp: seven scenarios x two seeds, with random artifacts."""
    out = tmp_path_factory.mktemp("evalset")
    build_evalset(out, seeds=2, scenarios=[scenario_dir() / f"{n}.toml" for n in SMALL], labels=[])
    return out


def overall_row(text: str) -> list[str]:
    """The cells of the ``all`` row of the printed overall table."""
    for line in text.splitlines():
        if line.startswith("all "):
            return line.split()
    raise AssertionError(f"no overall row in:\n{text}")


# --------------------------------------------------------------------------- truth


class TestScenarioTruth:
    def test_headline_episode_starts_where_the_knot_map_crosses_the_target(self) -> None:
        """ne_60_40: knot MAP 76 falls to 46.7 over 20-40 s and crosses 65 at 27.5 s."""
        truth = scenario_truth(sc("ne_60_40"))
        assert (truth.profile, truth.metric, truth.target) == ("standard", "map", 65.0)
        assert len(truth.episodes) == 1
        assert truth.episodes[0].start_s == pytest.approx(27.5, abs=0.1)
        assert truth.episodes[0].end_s == pytest.approx(240.0)

    def test_a_dip_shorter_than_the_hold_is_no_episode(self) -> None:
        """transient_dip: 40 s below target is not sustained hypotension."""
        assert scenario_truth(sc("transient_dip")).episodes == []

    def test_trauma_is_judged_on_sbp(self) -> None:
        """Trauma without brain injury: SBP 88 against SBP 80 is at target."""
        truth = scenario_truth(sc("profile_trauma"))
        assert (truth.metric, truth.target, truth.episodes) == ("sbp", 80.0, [])

    def test_age_selects_the_elderly_target(self) -> None:
        """An 82-year-old without a profile has the elderly target (MAP 60)."""
        truth = scenario_truth(sc("profile_elderly"))
        assert (truth.profile, truth.target, truth.episodes) == ("elderly", 60.0, [])

    def test_an_explicit_target_overrides_the_profile(self) -> None:
        """map_target 80 makes a MAP of ~75 an episode for a standard patient."""
        base = sc("stable")
        s = dataclasses.replace(
            base,
            duration_s=200.0,
            knots=((0.0, 105.0, 60.0, 80.0), (200.0, 105.0, 60.0, 80.0)),
            events=((0.0, "patient", {"map_target": 80}),),
        )
        truth = scenario_truth(s)
        assert (truth.metric, truth.target) == ("map", 80.0)
        assert [(e.start_s, e.end_s) for e in truth.episodes] == [(0.0, 200.0)]

    def test_a_short_critical_dip_is_an_episode(self) -> None:
        """30 s at MAP ~45 (< 50 for >= 15 s) is the critical fast path's condition."""
        s = dataclasses.replace(
            sc("stable"),
            knots=(
                (0.0, 120.0, 70.0, 80.0),
                (60.0, 120.0, 70.0, 80.0),
                (61.0, 60.0, 38.0, 80.0),
                (91.0, 60.0, 38.0, 80.0),
                (92.0, 120.0, 70.0, 80.0),
                (200.0, 120.0, 70.0, 80.0),
            ),
        )
        (ep,) = scenario_truth(s).episodes
        assert 60 < ep.start_s < 61
        assert 91 < ep.end_s < 92

    def test_truth_stops_where_the_bed_goes_silent(self) -> None:
        """A below-target stretch after ``silent_after_s`` is outside the data."""
        s = dataclasses.replace(sc("recovery"), silent_after_s=100.0)
        (ep,) = scenario_truth(s).episodes
        assert ep.end_s == pytest.approx(100.0)

    def test_truth_file_round_trips(self, tmp_path: Path) -> None:
        """write_truth then read_truth gives the same truth."""
        truth = Truth(recording="x", beds=[scenario_truth(sc("recovery"))])
        write_truth(tmp_path / "x.truth.json", truth)
        assert read_truth(tmp_path / "x.truth.json") == truth

    def test_a_bad_truth_file_names_the_field(self, tmp_path: Path) -> None:
        """A truth sidecar with a wrong type is refused naming the JSON path."""
        bad = tmp_path / "x.truth.json"
        bad.write_text(json.dumps({"recording": "x", "beds": [{"episodes": [{"start_s": "a"}]}]}))
        with pytest.raises(EvaluateError, match=r"beds\[0\]\.episodes\[0\]\.start_s"):
            read_truth(bad)


class TestRandomArtifacts:
    def test_artifacts_keep_away_from_episodes_and_each_other(self) -> None:
        """Over many draws: inside the data, 30 s from episodes, 5 s apart, known kinds."""
        import numpy as np  # noqa: PLC0415

        base = sc("recovery")
        truth = scenario_truth(base)
        ep = truth.episodes[0]
        seen = 0
        for k in range(40):
            arts = random_artifacts(base, truth, np.random.default_rng(k))
            assert len(arts) <= 3
            for kind, start, dur in arts:
                seen += 1
                assert kind in ARTIFACT_LENGTHS
                lo, hi = ARTIFACT_LENGTHS[kind]
                assert lo <= dur <= hi
                assert start >= 5
                assert start + dur <= base.duration_s - 5
                assert start >= ep.end_s + 30
            for (_, s1, d1), (_, s2, _) in itertools.pairwise(arts):
                assert s2 >= s1 + d1 + 5
        assert seen > 10

    def test_seeds_are_reproducible_and_differ(self) -> None:
        """Seed k gives the same scenario every time, and another one for another k."""
        base = sc("stable")
        assert seeded(base, 3) == seeded(base, 3)
        assert seeded(base, 3).seed != seeded(base, 4).seed

    def test_no_artifacts_without_a_waveform(self) -> None:
        """Numerics-only beds get no waveform artifacts."""
        import numpy as np  # noqa: PLC0415

        base = sc("numerics_only")
        assert random_artifacts(base, scenario_truth(base), np.random.default_rng(0)) == ()


# --------------------------------------------------------------------------- scoring


def _events(bed: BedId, *moves: tuple[str, Trigger, float]) -> list[AlarmEvent]:
    """Alarm events from ``(alarm name, trigger, ts)`` moves (raise onsets at ts)."""
    alarms: dict[str, Alarm] = {}
    out = []
    for name, trigger, ts in moves:
        kind = name.split("#")[0]
        if trigger is Trigger.RAISE:
            alarms[name] = Alarm(bed, kind, ts)
            out.append(alarms[name].apply(trigger, ts, priority=Priority.MEDIUM))
        else:
            out.append(alarms[name].apply(trigger, ts))
    return out


class TestScoreBed:
    BED = BedId("ward7", "bed01")

    def truth(self) -> BedTruth:
        return BedTruth(
            t0=T0,
            episodes=[Span(100.0, 300.0)],
            artifacts=[Span(500.0, 520.0, kind="zeroing")],
        )

    def test_detection_latency_and_time_in_alarm(self) -> None:
        """An alarm raised 62 s into the episode and cleared after it: detected, 62 s."""
        ev = _events(
            self.BED,
            ("hypotension", Trigger.RAISE, T0 + 162),
            ("hypotension", Trigger.REANNOUNCE, T0 + 282),
            ("hypotension", Trigger.CLEAR, T0 + 332),
        )
        r = score_bed(self.truth(), ev, (T0, T0 + 600))
        (ep,) = r.episodes
        assert ep.detected
        assert ep.latency_s == pytest.approx(62.0)
        assert r.false_alarms == 0
        assert r.alarm_s == pytest.approx(170.0)
        assert r.reannounced == 1
        assert r.monitored_s == pytest.approx(600.0)

    def test_alarms_outside_episodes_or_inside_artifacts_are_false(self) -> None:
        """Raised at 420 s (far from the episode) and at 510 s (in the artifact): 2 false."""
        ev = _events(
            self.BED,
            ("hypotension#1", Trigger.RAISE, T0 + 420),
            ("hypotension#1", Trigger.CLEAR, T0 + 450),
            ("hypotension#2", Trigger.RAISE, T0 + 510),
        )
        r = score_bed(self.truth(), ev, (T0, T0 + 600))
        assert r.false_alarms == 2
        assert not r.episodes[0].detected
        assert r.alarm_s == pytest.approx(30.0 + 90.0)  # the open one runs to the data's end

    def test_tolerance_decides_a_late_alarm(self) -> None:
        """Raised 20 s after the episode ended: true with 30 s tolerance, false with 10 s."""
        ev = _events(self.BED, ("hypotension", Trigger.RAISE, T0 + 320))
        assert score_bed(self.truth(), ev, (T0, T0 + 600), tolerance_s=30).false_alarms == 0
        assert score_bed(self.truth(), ev, (T0, T0 + 600), tolerance_s=10).false_alarms == 1

    def test_technical_alarms_are_counted_not_scored(self) -> None:
        """abp_signal_invalid and data_stale are technical; advisories are neither."""
        ev = _events(
            self.BED,
            ("abp_signal_invalid", Trigger.RAISE, T0 + 505),
            ("data_stale", Trigger.RAISE, T0 + 550),
            ("advisory_dopamine", Trigger.RAISE, T0 + 10),
        )
        r = score_bed(self.truth(), ev, (T0, T0 + 600))
        assert [a.kind for a in r.technical] == ["abp_signal_invalid", "data_stale"]
        assert r.hypotension == []
        assert r.false_alarms == 0

    def test_t0_defaults_to_the_first_data(self) -> None:
        """Labels without t0 count from the bed's first data."""
        truth = BedTruth(episodes=[Span(10.0, 100.0)])
        ev = _events(self.BED, ("hypotension", Trigger.RAISE, T0 + 75))
        r = score_bed(truth, ev, (T0 + 5, T0 + 200))
        assert r.episodes[0].latency_s == pytest.approx(60.0)


# --------------------------------------------------------------------------- labelled set


class TestEvalset:
    def test_writes_recordings_with_truth(self, small_set: Path) -> None:
        """Each scenario x seed has NAME.jsonl and NAME.truth.json."""
        jsonl = sorted(small_set.glob("*.jsonl"))
        assert len(jsonl) == 2 * len(SMALL)
        for p in jsonl:
            truth = read_truth(p.with_name(p.name.removesuffix(".jsonl") + ".truth.json"))
            assert truth.recording == p.name.removesuffix(".jsonl")
            assert truth.beds[0].scenario in SMALL

    def test_module_command_writes_the_set(self, tmp_path: Path) -> None:
        """python -m simulators.evalset --out DIR --seeds 1 --scenario F --no-real."""
        argv = ["--out", str(tmp_path), "--seeds", "1", "--no-real"]
        assert evalset_main([*argv, "--scenario", str(scenario_dir() / "stable.toml")]) == 0
        assert sorted(p.name for p in tmp_path.iterdir()) == [
            "stable-seed00.jsonl",
            "stable-seed00.truth.json",
        ]

    def test_cli_prints_the_table_with_full_sensitivity(
        self, small_set: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """Defaults: every episode detected, no false alarm; the table names its columns."""
        assert main(["evaluate", str(small_set)]) == 0
        out = capsys.readouterr().out
        assert "sensitivity" in out
        assert "false/bed-day" in out
        assert "lat p90 s" in out
        row = overall_row(out)
        assert row[5] == "100.0%"
        assert row[6] == "0"
        assert row[7] == "0.0"
        for name in SMALL:
            assert name in out

    def test_python_api_gives_the_same_figures(self, small_set: Path) -> None:
        """evaluate(load_inputs(...)): sensitivity 1, a false-alarm rate, latencies."""
        ev = evaluate(load_inputs([small_set]), load_config(environ={}))
        m = ev.overall
        assert m.episodes == 2 * 4
        assert m.sensitivity == 1.0
        assert m.false_per_bed_day == 0.0
        assert m.latency_median is not None
        assert 15 < m.latency_median < 70
        assert {p.group for p in ev.by_profile()} == {
            "standard",
            "trauma_tbi",
            "chronic_hypertension",
            "trauma",
        }

    def test_a_too_long_hold_misses_episodes(
        self, small_set: Path, capsys: pytest.CaptureFixture[str], tmp_path: Path
    ) -> None:
        """hold_s=1000: only the critical fast path still alarms, sensitivity < 100%."""
        out_json = tmp_path / "ev.json"
        argv = ["evaluate", str(small_set), "--set", "hypotension.hold_s=1000", "--progress"]
        assert main([*argv, "--json", str(out_json)]) == 0
        assert overall_row(capsys.readouterr().out)[5] != "100.0%"
        doc = json.loads(out_json.read_text())
        assert doc["overall"]["sensitivity"] == pytest.approx(2 / 8)  # ne_60_40: critical path
        missed = {
            b["scenario"] for b in doc["beds"] if any(not e["detected"] for e in b["episodes"])
        }
        assert missed == set(SUSTAINED_ONLY)
        assert doc["settings"] == ["hypotension.hold_s=1000"]

    def test_a_scenario_file_is_evaluated_directly(
        self, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """A scenario TOML is rendered (by the simulator) with its committed seed and artifacts."""
        assert main(["evaluate", str(scenario_dir() / "artifacts.toml")]) == 0
        out = capsys.readouterr().out
        row = overall_row(out)
        assert row[3] == "0"
        assert row[6] == "0"
        assert row[12] == "1"  # the 50 s disconnection: abp_signal_invalid

    def test_a_recording_without_truth_is_refused(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """A .jsonl without sidecar or --labels: exit 2, the message says what is missing."""
        rec = scenario_recording(sc("stable"))
        (tmp_path / "x.jsonl").write_bytes(b"\n".join(rec.lines))
        assert main(["evaluate", str(tmp_path / "x.jsonl")]) == 2
        assert "x.truth.json" in capsys.readouterr().err


class TestSweep:
    def test_latency_rises_with_the_hold(self, small_set: Path) -> None:
        """hold_s=30,60,120: one row per value, median latency strictly rising."""
        recs = [r for r in load_inputs([small_set]) if r.truth.beds[0].scenario in SUSTAINED_ONLY]
        sw = sweep(recs, "hypotension.hold_s", ["30", "60", "120"], environ={})
        rows = sw.rows()
        assert [v for v, _ in rows] == ["30", "60", "120"]
        medians = [m.latency_median for _, m in rows]
        assert all(x is not None for x in medians)
        assert medians[0] < medians[1] < medians[2]  # type: ignore[operator]
        assert all(m.sensitivity == 1.0 for _, m in rows)

    def test_cli_prints_the_what_if_table(
        self, small_set: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """--sweep hold_s=30,60,120 adds a table with one row per value; a short hold
        turns the transient dip into false alarms."""
        assert main(["evaluate", str(small_set), "--sweep", "hold_s=30,60,120"]) == 0
        out = capsys.readouterr().out
        table = out.split("## what-if: hypotension.hold_s")[1].strip().splitlines()
        rows = [line.split() for line in table[2:5]]
        assert [r[0] for r in rows] == ["30", "60", "120"]
        assert int(rows[0][6]) > 0
        assert rows[1][6] == "0"
        assert rows[2][6] == "0"

    def test_sweep_keys_are_checked(self) -> None:
        """A unique key resolves to its section; non-numeric settings and values are refused."""
        cfg = load_config(environ={})
        assert parse_sweep("hold_s=30,60", cfg) == ("hypotension.hold_s", ["30", "60"])
        with pytest.raises(ConfigError, match=r"service\.root"):
            parse_sweep("service.root=a,b", cfg)
        with pytest.raises(ConfigError, match="must be a number"):
            parse_sweep("hold_s=30,soon", cfg)
        with pytest.raises(ConfigError, match="no_such"):
            parse_sweep("no_such=1", cfg)


class TestReport:
    def test_report_is_self_contained_with_table_and_figures(
        self, small_set: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """The HTML has the tables, embedded PNGs, and fetches nothing; --png-dir too."""
        report = tmp_path / "r.html"
        pngs = tmp_path / "png"
        argv = ["evaluate", str(small_set), "--report", str(report), "--png-dir", str(pngs)]
        assert main([*argv, "--max-figures", "2", "--sweep", "hold_s=60,90"]) == 0
        text = report.read_text()
        assert "<table" in text
        assert "sensitivity" in text
        assert "What-if" in text
        assert not re.search(r"""(src|href)\s*=\s*["']?\s*(https?:)?//""", text)
        assert "<link" not in text
        assert "<script" not in text
        images = re.findall(r"data:image/png;base64,([A-Za-z0-9+/=]+)", text)
        assert len(images) == 2
        assert base64.b64decode(images[0])[:8] == b"\x89PNG\r\n\x1a\n"
        assert len(list(pngs.glob("*.png"))) == 2
        assert "report" in capsys.readouterr().err


# --------------------------------------------------------------------------- real records


class TestRealRecords:
    def test_labels_evaluate_without_false_alarms(self) -> None:
        """s00001's calibration, flush and zeroing stretches raise no hypotension alarm."""
        abp_records()
        ev = evaluate(load_inputs([LABELS]), load_config(environ={}))
        beds = {b.scenario: b for b in ev.beds}
        assert set(beds) == {"s00001", "041s", "mixedsignals"}
        s1 = beds["s00001"]
        assert s1.hypotension == []
        assert s1.false_alarms == 0
        assert len(s1.artifacts) == 10
        assert s1.episodes == []
        assert s1.monitored_s > 500
        assert ev.overall.false_alarms == 0

    def test_labels_give_the_truth_of_a_converted_recording(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """--labels: a recording made from the record, without sidecar, is scored by the labels."""
        abp_records()
        (rec,) = load_inputs([LABELS / "041s.toml"])
        path = tmp_path / "041s.jsonl"
        path.write_bytes(b"\n".join(rec.lines) + b"\n")
        assert main(["evaluate", str(path), "--labels", str(LABELS / "041s.toml")]) == 0
        row = overall_row(capsys.readouterr().out)
        assert row[1] == "1"
        assert row[6] == "0"


class TestLabels:
    def write(self, tmp_path: Path, text: str) -> Path:
        p = tmp_path / "rec.toml"
        p.write_text('record = "041s/041s"\n' + text)
        return p

    def test_committed_labels_are_valid(self) -> None:
        """The three hand-labelled real records load; s00001 has no episode."""
        for name in ("s00001", "041s", "mixedsignals"):
            labels = load_labels(LABELS / f"{name}.toml")
            assert labels.name == name
            assert labels.episode == []

    @pytest.mark.parametrize(
        ("text", "field"),
        [
            ("[[episode]]\nstart_s = 10\n", "episode[0].end_s"),
            ("[[episode]]\nstart_s = 10\nend_s = 5\n", "episode[0].end_s"),
            ('[[episode]]\nstart_s = "a"\nend_s = 5\n', "episode[0].start_s"),
            ('[[episode]]\nstart_s = 1\nend_s = 5\nkind = "flush"\n', "episode[0].kind"),
            ("[[artifact]]\nstart_s = -1\nend_s = 5\n", "artifact[0].start_s"),
            ("[[artefact]]\nstart_s = 1\nend_s = 5\n", "artefact"),
            ('profile = "sepsis"\n', "profile"),
            ('bed = "bed 1"\n', "bed"),
            ('infusions = ["norepinephrine 0.1"]\n', "infusions[0]"),
        ],
    )
    def test_errors_name_the_field(self, tmp_path: Path, text: str, field: str) -> None:
        """Each mistake is refused with the offending field's name."""
        with pytest.raises(LabelsError) as info:
            load_labels(self.write(tmp_path, text))
        assert info.value.field == field
        assert field in str(info.value)

    def test_missing_record_is_named(self, tmp_path: Path) -> None:
        """A labels file without ``record`` (or an empty one) names it."""
        p = tmp_path / "x.toml"
        p.write_text('name = "x"\n')
        with pytest.raises(LabelsError) as info:
            load_labels(p)
        assert info.value.field == "record"
        with pytest.raises(EvaluateError, match="neither a scenario"):
            load_inputs([p])
        p.write_text('record = ""\n[[episode]]\nstart_s = 1\nend_s = 2\n')
        with pytest.raises(LabelsError, match="record"):
            load_labels(p)

    def test_an_unknown_record_is_reported(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """A record that is nowhere: exit 2, the message names ``record``."""
        p = tmp_path / "x.toml"
        p.write_text('record = "nowhere/nothing"\n')
        assert main(["evaluate", str(p)]) == 2
        assert "record" in capsys.readouterr().err


class TestReplayBatches:
    """``evaluate`` runs the replay's batches (``feed_lines``) when a recording has beds enough."""

    @pytest.mark.parametrize("collect", [False, True], ids=["scores", "with_plots"])
    def test_batches_score_the_same(self, collect: bool, monkeypatch: pytest.MonkeyPatch) -> None:
        """Batches forced from the first bed on: the same scores, spans and plot traces."""
        recs = [
            scenario_recording(seeded(load_scenario(scenario_dir() / f"{name}.toml"), 1), name=name)
            for name in ("ne_60_40", "artifacts", "recovery")
        ]
        config = load_config(environ={})
        line_by_line = [run_recording(rec, config, collect=collect) for rec in recs]
        monkeypatch.setattr(replay, "BATCH_MIN_BEDS", 0)
        batched = [run_recording(rec, config, collect=collect) for rec in recs]
        assert batched == line_by_line
        assert any(beds and beds[0].hypotension for beds, _, _ in batched)
