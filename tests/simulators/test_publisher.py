"""The ward builder, its lazy time-ordered stream, recordings (--out) and paced publishing."""

from __future__ import annotations

import json
import time
from collections import Counter
from pathlib import Path

import msgspec
import pytest

from simulators.cli import main
from simulators.publisher import MqttSink, SimError, parse_broker_url, send_ward
from simulators.scenario import check, load_scenario, merge, scenario_dir, to_jsonl
from simulators.ward import (
    BEDS_PER_UNIT,
    WardError,
    build_ward,
    parse_duration,
    parse_mix,
    resolve_scenarios,
    unit_names,
    ward_stream,
)
from streamproc.apps.replay import replay_lines
from streamproc.shell.config import load_config
from tests.system.broker import MosquittoBroker, Subscriber
from tests.system.service_helpers import ServiceProcess, is_alarm

SCENARIOS = scenario_dir()


def replay_alarms(data: bytes) -> list[dict[str, object]]:
    """The alarm payloads ``streamproc replay`` derives from a recording."""
    out: list[bytes] = []
    replay_lines(data.splitlines(), load_config(None), out.append)
    return [msgspec.json.decode(line)["payload"] for line in out]


class TestParsing:
    def test_durations(self) -> None:
        """600, 90s, 10m, 1h and 2m30s are seconds; junk and zero are refused."""
        assert parse_duration("600") == 600
        assert parse_duration("90s") == 90
        assert parse_duration("10m") == 600
        assert parse_duration("1h") == 3600
        assert parse_duration("2m30s") == 150
        for bad in ("", "m", "ten", "0", "10ms", "-5"):
            with pytest.raises(WardError):
                parse_duration(bad)

    def test_mix(self) -> None:
        """name=weight pairs; a bare name weighs 1; negative or all-zero weights are refused."""
        assert parse_mix("ne_60_40=3, recovery=1,stable") == {
            "ne_60_40": 3.0,
            "recovery": 1.0,
            "stable": 1.0,
        }
        for bad in ("a=-1", "a=0", "a=x", ""):
            with pytest.raises(WardError):
                parse_mix(bad)

    def test_broker_url(self) -> None:
        """mqtt:// and mqtts:// with default ports; other schemes, or none, are refused."""
        assert parse_broker_url("mqtt://127.0.0.1:1884") == ("127.0.0.1", 1884, False)
        assert parse_broker_url("mqtts://broker") == ("broker", 8883, True)
        for bad in ("http://x", "localhost", "broker:1883"):
            with pytest.raises(SimError, match=r"mqtt://.*mqtts://"):
                parse_broker_url(bad)


class TestBuildWard:
    def test_default_is_every_scenario_file_once(self) -> None:
        """Without a mix, as many beds as files get one scenario each, in file order."""
        choices = resolve_scenarios()
        files = sorted(SCENARIOS.glob("*.toml"))
        beds = build_ward(choices, len(files))
        assert [b.scenario.name for b in beds] == [load_scenario(f).name for f in files]

    def test_mix_weights_ids_and_seeds(self) -> None:
        """Weights 3:1 give 3:1 beds, interleaved; 20 beds a unit; bed i has seed S + i."""
        choices = resolve_scenarios(mix={"ne_60_40": 3, "recovery": 1})
        beds = build_ward(choices, 44, seed=100, unit_prefix="icu3-")
        names = Counter(b.scenario.name for b in beds)
        assert names == {"ne_60_40": 33, "recovery": 11}
        assert [b.scenario.name for b in beds[:4]].count("recovery") == 1
        assert [b.scenario.seed for b in beds] == list(range(100, 144))
        assert beds[0].key == ("icu3-1", "bed001")
        assert beds[BEDS_PER_UNIT].key == ("icu3-2", "bed001")
        assert beds[-1].key == ("icu3-3", "bed004")
        assert len({b.key for b in beds}) == 44

    def test_units_given_must_suffice(self) -> None:
        """Explicit units are filled 20 beds each; too few, bad or repeated ids are refused."""
        assert unit_names(40, units=["a", "b"]) == ["a", "b"]
        with pytest.raises(WardError, match="need 3 units"):
            unit_names(41, units=["a", "b"])
        with pytest.raises(WardError):
            unit_names(1, units=["bad/unit"])
        with pytest.raises(WardError):
            unit_names(1, units=["a", "a"])

    def test_unknown_scenario_in_mix(self) -> None:
        """A mix naming no scenario says which ones exist."""
        with pytest.raises(WardError, match="unknown scenario 'nope'"):
            resolve_scenarios(mix={"nope": 1})

    def test_duration_stretches_and_cuts(self) -> None:
        """--duration holds the last pressure longer, or cuts the scenario and drops the
        expectations (and artifacts) that no longer fit."""
        choices = resolve_scenarios([SCENARIOS / "artifacts.toml"])
        long = build_ward(choices, 1, duration_s=600)[0]
        assert long.scenario.duration_s == 600
        assert long.skipped == ()
        short = build_ward(choices, 1, duration_s=180)[0]
        assert short.scenario.duration_s == 180
        assert all(a[1] < 180 for a in short.scenario.artifacts)
        assert [e.kind for e in short.skipped] == ["abp_signal_invalid"]
        assert [e.state for e in short.scenario.expect] == ["none"]


class TestWardStream:
    def test_same_lines_as_merge_for_every_scenario(self) -> None:
        """The lazy stream is merge() byte for byte, for every scenario file and a ward of them
        (this fails if scenario.render_timed changes in a way the stream does not follow)."""
        choices = resolve_scenarios()
        beds = build_ward(choices, len(choices) + 3, seed=7)
        scenarios = [b.scenario for b in beds]
        mine = [line for _, _, line in ward_stream(scenarios)]
        assert to_jsonl(mine) == to_jsonl(merge(*scenarios))

    def test_times_are_ordered_and_match_payloads(self) -> None:
        """Data times never go back; a chunk is sent when its last sample is due."""
        beds = build_ward(resolve_scenarios([SCENARIOS / "ne_60_40.toml"]), 4)
        previous = 0.0
        for ts, _, line in ward_stream([b.scenario for b in beds]):
            assert ts >= previous
            previous = ts
            p = line["payload"]
            if line["topic"].endswith("/abp"):
                assert ts == pytest.approx(p["t0"] + len(p["samples"]) / p["fs"], abs=1e-5)


class TestRecordingOut:
    def test_three_bed_recording_replays_to_ground_truth(self, tmp_path: Path) -> None:
        """publish --beds 3 --out: streamproc replay of the file meets every bed's [[expect]]."""
        files = [SCENARIOS / f"{n}.toml" for n in ("ne_60_40", "recovery", "transient_dip")]
        out = tmp_path / "ward.jsonl"
        rc = main(["publish", *map(str, files), "--beds", "3", "--seed", "11", "--out", str(out)])
        assert rc == 0
        data = out.read_bytes()
        alarms = replay_alarms(data)
        beds = build_ward(resolve_scenarios(files), 3, seed=11)
        assert {(a["unit"], a["bed"]) for a in alarms} >= {beds[0].key, beds[1].key}
        for bed in beds:
            assert check(bed.scenario, alarms) == [], bed.scenario.name
        topics = {json.loads(line)["topic"] for line in data.splitlines()}
        assert "icu/ward1/bed003/infusion" in topics

    def test_out_to_stdout_and_t0(
        self, tmp_path: Path, capsysbinary: pytest.CaptureFixture[bytes]
    ) -> None:
        """--out - writes the recording on stdout (the summary on stderr); --t0 moves it."""
        rc = main(["publish", str(SCENARIOS / "stable.toml"), "--out", "-", "--t0", "1800000000"])
        assert rc == 0
        captured = capsysbinary.readouterr()
        first = json.loads(captured.out.splitlines()[0])
        assert first["payload"].get("ts", first["payload"].get("t0")) == 1_800_000_000.0
        assert b"streamproc-sim:" in captured.err

    def test_bad_options_exit_2(self, capsys: pytest.CaptureFixture[str]) -> None:
        """Neither or both of --out and --broker, or an unknown mix name: exit 2 with a reason."""
        assert main(["publish"]) == 2
        assert "--broker URL or --out FILE" in capsys.readouterr().err
        assert main(["publish", "--mix", "nope=1", "--out", "-"]) == 2
        assert "unknown scenario" in capsys.readouterr().err


class TestPacedPublishing:
    def test_speed_10_of_20_s_takes_about_2_s(self, broker: MosquittoBroker) -> None:
        """--speed 10 over 20 s of data: about 2 s wall, every message arrives, in order."""
        files = [str(SCENARIOS / "stable.toml")]
        with Subscriber(broker, "icu/#") as sub:
            start = time.monotonic()
            rc = main(
                ["publish", *files, "--duration", "20s", "--speed", "10", "--broker", broker.url]
            )
            wall = time.monotonic() - start
            assert rc == 0
            msgs = sub.wait_for_count(21, timeout=5)
        assert 1.5 <= wall <= 6.0
        kinds = Counter(m.topic.rsplit("/", 1)[1] for m in msgs)
        assert kinds == {"abp": 20, "infusion": 1}
        t0s = [json.loads(m.payload)["t0"] for m in msgs if m.topic.endswith("/abp")]
        assert t0s == sorted(t0s)
        # data time runs 10x the wall clock, starting now
        assert t0s[0] == pytest.approx(time.time() - wall, abs=2.0)

    def test_context_retained_at_qos_1(self, broker: MosquittoBroker) -> None:
        """Patient and infusion are retained (a late subscriber gets them); abp is not."""
        rc = main(
            [
                "publish",
                str(SCENARIOS / "ne_60_40.toml"),
                "--duration",
                "3s",
                "--speed",
                "0",
                "--qos",
                "0",
                "--broker",
                broker.url,
            ]
        )
        assert rc == 0
        with Subscriber(broker, "icu/#") as late:
            msgs = late.wait_for_count(2, timeout=3)
            time.sleep(0.3)
            msgs = late.messages
        assert sorted(m.topic.rsplit("/", 1)[1] for m in msgs) == ["infusion", "patient"]
        assert all(m.retain for m in msgs)

    def test_progress_panel_and_summary(
        self, broker: MosquittoBroker, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """--progress draws the rich panel (on stderr); the summary line goes to stdout."""
        rc = main(
            [
                "publish",
                "--beds",
                "3",
                "--duration",
                "4s",
                "--speed",
                "8",
                "--broker",
                broker.url,
                "--progress",
            ]
        )
        assert rc == 0
        captured = capsys.readouterr()
        assert "messages sent" in captured.err
        assert "simulated time" in captured.err
        assert captured.out.startswith("streamproc-sim: ")
        assert "from 3 beds" in captured.out
        assert "(asked 8x)" in captured.out

    def test_unreachable_broker_exits_3(self, capsys: pytest.CaptureFixture[str]) -> None:
        """No broker on the port: exit 3 and say so."""
        from tests.system.broker import free_port  # noqa: PLC0415

        rc = main(["publish", "--beds", "1", "--broker", f"mqtt://127.0.0.1:{free_port()}"])
        assert rc == 3
        assert "cannot connect" in capsys.readouterr().err


class TestLiveService:
    def test_speed_20_the_60_40_alarm_arrives(
        self, broker: MosquittoBroker, tmp_path: Path
    ) -> None:
        """At --speed 20 with streamproc running, the 60/40 bed's high-priority hypotension
        alarm (add vasopressin) arrives, timed in data time inside its window."""
        service = ServiceProcess(broker, tmp_path).start()
        try:
            with Subscriber(broker, "icu/+/+/alarms/#") as sub:
                beds = build_ward(
                    resolve_scenarios([SCENARIOS / "ne_60_40.toml"]), 1, duration_s=100
                )
                with MqttSink(broker.url) as sink:
                    stats, scenarios = send_ward(beds, sink, speed=20)
                assert stats.wall_s < 8
                msg = sub.wait_for(
                    is_alarm("hypotension", state="active", unit="ward1", bed="bed001"), timeout=10
                )
        finally:
            service.terminate()
        payload = json.loads(msg.payload)
        assert payload["priority"] == "high"
        assert "vasopressin 0.03 U/min" in payload["recommendation"]
        assert check(scenarios[0], [payload]) == []
