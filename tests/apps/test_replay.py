"""Scenarios through ``streamproc replay``: waveform recordings in, alarm lines out."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import pytest

from simulators.scenario import (
    Scenario,
    check,
    load_scenario,
    merge,
    render,
    scenario_dir,
    to_jsonl,
)
from streamproc.apps.cli import main
from streamproc.apps.replay import replay_lines
from streamproc.shell.config import load_config

SCENARIOS = sorted(scenario_dir().glob("*.toml"))


def run_replay(
    lines: list[dict[str, Any]] | bytes, **overrides: Any
) -> tuple[list[dict[str, Any]], Any]:
    """Replay in-process; returns the output lines (parsed) and the summary."""
    data = lines if isinstance(lines, bytes) else to_jsonl(lines)
    out: list[bytes] = []
    summary = replay_lines(
        data.splitlines(), load_config(environ={}, overrides=overrides), out.append
    )
    return [json.loads(x) for x in out], summary


def payloads(out: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [x["payload"] for x in out]


def scenario(name: str, **changes: Any) -> Scenario:
    sc = load_scenario(scenario_dir() / f"{name}.toml")
    return dataclasses.replace(sc, **changes)


def steady(
    name: str, sbp: float, dbp: float, patient: dict[str, Any], seconds: float = 150
) -> Scenario:
    """A bed at one pressure throughout, with a patient message first."""
    return Scenario(
        name=name,
        duration_s=seconds,
        knots=((0.0, sbp, dbp, 90.0), (seconds, sbp, dbp, 90.0)),
        bed=name,
        events=((0.0, "patient", patient),),
    )


class TestScenarioFiles:
    @pytest.mark.parametrize("path", SCENARIOS, ids=[p.stem for p in SCENARIOS])
    def test_ground_truth(self, path: Path) -> None:
        """Every shipped scenario replays to its ground truth (silent bed next to a stable one)."""
        sc = load_scenario(path)
        beds = [sc]
        if sc.silent_after_s is not None:
            beds.append(steady("neighbour", 120, 70, {}, seconds=sc.duration_s))
        out, summary = run_replay(merge(*beds))
        assert check(sc, payloads(out)) == []
        assert sum(summary.rejected.values()) == 0


class TestHeadline:
    def test_60_40_on_ne(self) -> None:
        """The 60/40 patient on NE: active, high priority, add vasopressin 0.03 U/min."""
        sc = scenario("ne_60_40")
        out, _ = run_replay(render(sc))
        first = out[0]
        assert first["topic"] == "icu/ward7/bed03/alarms/hypotension"
        p = first["payload"]
        assert (p["kind"], p["state"], p["priority"]) == ("hypotension", "active", "high")
        assert p["on_norepinephrine"] is True
        assert "vasopressin 0.03 U/min" in p["recommendation"]
        assert 44 <= p["value"] <= 50
        assert p["metric"] == "map"
        assert p["target"] == 65
        assert "not an order" in p["recommendation"]
        assert p["sources"]

    def test_same_input_same_bytes(self) -> None:
        """Replaying the same recording twice gives identical output, byte for byte."""
        data = to_jsonl(render(scenario("ne_60_40")))
        a: list[bytes] = []
        b: list[bytes] = []
        replay_lines(data.splitlines(), load_config(environ={}), a.append)
        replay_lines(data.splitlines(), load_config(environ={}), b.append)
        assert a == b
        assert a

    @pytest.mark.parametrize("chunk_s", [0.2, 0.37, 2.0, 5.0])
    def test_alarms_do_not_depend_on_chunking(self, chunk_s: float) -> None:
        """The same waveform cut into other chunk sizes gives the same alarm messages."""
        base, _ = run_replay(render(scenario("recovery")))
        other, _ = run_replay(render(scenario("recovery", chunk_s=chunk_s)))
        assert other == base


class TestProfiles:
    @pytest.mark.parametrize(
        ("patient", "sbp", "dbp", "alarm"),
        [
            ({"profile": "standard"}, 92, 54, False),  # MAP ~67 >= 65
            ({"profile": "standard"}, 84, 50, True),  # MAP ~61 < 65
            ({"profile": "chronic_hypertension"}, 92, 54, True),  # < 70
            ({"profile": "elderly"}, 84, 50, False),  # >= 60
            ({"age": 82}, 84, 50, False),  # elderly by age
            ({"profile": "trauma"}, 86, 44, False),  # SBP 86 >= 80, MAP ~58 is permissive
            ({"profile": "trauma"}, 76, 44, True),  # SBP < 80
            ({"profile": "trauma_tbi"}, 84, 50, True),  # MAP < 65, no permissive hypotension
            ({"profile": "standard", "map_target": 75}, 100, 58, True),  # explicit target
        ],
    )
    def test_profile_target(
        self, patient: dict[str, Any], sbp: float, dbp: float, alarm: bool
    ) -> None:
        """Each profile's target decides whether a steady pressure raises the alarm."""
        sc = steady("p1", sbp, dbp, patient)
        out, _ = run_replay(render(sc))
        hypo = [p for p in payloads(out) if p["kind"] == "hypotension"]
        assert bool(hypo) is alarm, hypo[:1]


class TestClock:
    def test_gap_in_one_bed_recording_goes_stale(self) -> None:
        """A lone bed that stops for 45 s and resumes: data_stale is raised during the gap
        (time passes up to the next message before it is taken), then cleared."""
        sc = steady("gap", 118, 70, {}, seconds=150)
        lines = render(sc)
        t0 = sc.t0
        kept = [x for x in lines if not 60 < x["payload"].get("t0", 0) - t0 < 105]
        out, _ = run_replay(kept)
        stale = [p for p in payloads(out) if p["kind"] == "data_stale"]
        assert [p["state"] for p in stale] == ["active", "cleared"]
        assert 90 <= stale[0]["ts"] - t0 <= 92
        assert 104 <= stale[1]["ts"] - t0 <= 106

    def test_standing_nibp_judged_between_readings(self) -> None:
        """With a 30 s hold and a cuff reading every 60 s, the alarm comes 30 s after the
        first low reading, not at the next reading."""
        sc = load_scenario(scenario_dir() / "nibp_only.toml")
        out, _ = run_replay(render(sc), **{"hypotension.hold_s": 30})
        hypo = [p for p in payloads(out) if p["kind"] == "hypotension"]
        assert 30 <= hypo[0]["ts"] - sc.t0 <= 31


class TestMalformed:
    def test_garbage_lines_counted_not_fatal(self) -> None:
        """Malformed lines and payloads are counted by reason; the episode's alarms stay the same."""
        lines = to_jsonl(render(scenario("ne_60_40"))).splitlines()
        garbage = [
            b"not json at all",
            b'{"topic": "icu/ward7/bed03/abp"}',
            b'{"topic": "icu/ward7/bed03/abp", "payload": "{\\"t0\\": 1, "}',
            b'{"topic": "icu/ward7/bed03/abp", "payload": {"t0": 1732400000.0, "fs": 0, "samples": [1]}}',
            b'{"topic": "icu/ward7/bed03/abp", "payload": {"t0": 1732400000.0, "fs": 125, "samples": [null]}}',
            b'{"topic": "icu/+/bed03/abp", "payload": {}}',
            b'{"topic": "icu/ward7/bed03/infusion", "payload": {"ts": 1732400000.0, "drug": "noradrenalin", "rate": 1, "unit": "mcg/min"}}',
            b"[1, 2, 3]",
        ]
        mixed: list[bytes] = []
        for i, line in enumerate(lines):
            mixed.append(line)
            mixed.append(garbage[i % len(garbage)])
        clean, _ = run_replay(b"\n".join(lines))
        dirty, summary = run_replay(b"\n".join(mixed))
        assert dirty == clean
        assert sum(summary.rejected.values()) == len(lines)
        assert summary.rejected["bad_line"] > 0
        assert summary.rejected["bad_topic"] > 0
        assert summary.rejected["unknown_value"] > 0

    def test_raw_string_payload_is_decoded(self) -> None:
        """A string payload is the raw MQTT text: a valid one counts like an object."""
        lines = render(scenario("ne_60_40"))
        as_raw = [{"topic": x["topic"], "payload": json.dumps(x["payload"])} for x in lines]
        assert run_replay(as_raw)[0] == run_replay(lines)[0]


class TestCli:
    def test_replay_file_and_summary(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """`streamproc replay FILE` prints alarm lines on stdout and a summary on stderr."""
        path = tmp_path / "rec.jsonl"
        path.write_bytes(to_jsonl(render(scenario("ne_60_40"))) + b"garbage\n")
        assert main(["replay", str(path)]) == 0
        captured = capsys.readouterr()
        first = json.loads(captured.out.splitlines()[0])
        assert first["payload"]["priority"] == "high"
        assert "1 rejected (bad_line 1)" in captured.err
        assert "samples/s" in captured.err
        assert "never orders" in captured.err

    def test_set_changes_a_setting(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """--set critical_map=40 turns the 60/40 alarm from high to medium (after the hold)."""
        path = tmp_path / "rec.jsonl"
        path.write_bytes(to_jsonl(render(scenario("ne_60_40"))))
        assert main(["replay", str(path), "--set", "hypotension.critical_map=40"]) == 0
        first = json.loads(capsys.readouterr().out.splitlines()[0])
        assert first["payload"]["priority"] == "medium"

    def test_bad_config_exit_2(self, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
        """A wrong setting stops with exit status 2 and names the key."""
        path = tmp_path / "rec.jsonl"
        path.write_bytes(b"")
        assert main(["replay", str(path), "--set", "hypotension.hold_s=-1"]) == 2
        assert "hypotension.hold_s" in capsys.readouterr().err

    def test_missing_file(self, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
        """A missing recording is a clear error (exit 2), not a traceback."""
        assert main(["replay", str(tmp_path / "none.jsonl")]) == 2
        assert "no such file" in capsys.readouterr().err

    def test_config_print_and_check(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """`streamproc config` prints the defaults; --check validates a file."""
        assert main(["config"]) == 0
        text = capsys.readouterr().out
        assert "hold_s = 60.0" in text
        good = tmp_path / "good.toml"
        good.write_text(text)
        assert main(["config", "--check", str(good)]) == 0
        bad = tmp_path / "bad.toml"
        bad.write_text("[alarms]\nreannounce = 5\n")
        assert main(["config", "--check", str(bad)]) == 2
        assert "alarms.reannounce" in capsys.readouterr().err
