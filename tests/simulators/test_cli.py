"""``streamproc-sim``: the parser, exit statuses, the console script and ``clear``."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from simulators.cli import build_parser, main
from tests.system.broker import MosquittoBroker, Subscriber

REPO = Path(__file__).resolve().parents[2]


class TestParser:
    @pytest.mark.parametrize("command", ["publish", "record", "publish-record", "soak", "clear"])
    def test_every_command_has_help(self, command: str, capsys: pytest.CaptureFixture[str]) -> None:
        """Each subcommand prints its usage and exits 0 on --help."""
        with pytest.raises(SystemExit) as exc:
            build_parser().parse_args([command, "--help"])
        assert exc.value.code == 0
        assert f"streamproc-sim {command}" in capsys.readouterr().out

    @pytest.mark.parametrize(
        "argv",
        [
            ["publish", "--speed", "-1", "--out", "-"],
            ["publish", "--speed", "fast", "--out", "-"],
            ["publish", "--beds", "0", "--out", "-"],
            ["publish", "--duration", "soon", "--out", "-"],
            ["publish", "--mix", "a=-2", "--out", "-"],
            ["publish", "--qos", "2", "--out", "-"],
            ["publish", "--t0", "yesterday", "--out", "-"],
            ["soak", "--beds", "2"],
            ["publish", "--broker", "localhost"],
            ["soak", "--broker", "127.0.0.1:1883"],
            ["clear", "--broker", "localhost", "--unit-prefix", "x"],
        ],
    )
    def test_bad_values_are_usage_errors(
        self, argv: list[str], capsys: pytest.CaptureFixture[str]
    ) -> None:
        """Out-of-range or malformed option values (a soak without --broker, a broker
        without mqtt:// or mqtts://) exit 2."""
        with pytest.raises(SystemExit) as exc:
            main(argv)
        assert exc.value.code == 2
        assert "error:" in capsys.readouterr().err

    def test_speed_zero_aliases(self) -> None:
        """--as-fast-as-possible is --speed 0."""
        args = build_parser().parse_args(["publish", "--as-fast-as-possible", "--out", "-"])
        assert args.as_fast_as_possible
        args = build_parser().parse_args(["soak", "--broker", "mqtt://x", "--speed", "0"])
        assert args.speed == 0.0

    def test_too_few_units(self, capsys: pytest.CaptureFixture[str]) -> None:
        """21 beds in one named unit: exit 2 with the reason."""
        assert main(["publish", "--beds", "21", "--units", "a", "--out", "-"]) == 2
        assert "need 2 units" in capsys.readouterr().err

    def test_missing_record(self, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
        """A record that is not there: exit 2."""
        assert main(["record", str(tmp_path / "none"), "--out", str(tmp_path / "x.jsonl")]) == 2
        assert "no WFDB header" in capsys.readouterr().err


class TestConsoleScript:
    def test_module_runs_and_writes_a_recording(self, tmp_path: Path) -> None:
        """``python -m simulators.cli publish --out`` (what the streamproc-sim script runs)
        writes a replayable recording and one summary line on stdout."""
        out = tmp_path / "w.jsonl"
        proc = subprocess.run(  # noqa: S603 - our own interpreter and module
            [sys.executable, "-m", "simulators.cli", "publish", "--beds", "2", "--out", str(out)],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert proc.returncode == 0, proc.stderr
        assert proc.stdout.startswith("streamproc-sim: ")
        assert "from 2 beds" in proc.stdout
        first = json.loads(out.read_text().splitlines()[0])
        assert first["topic"].startswith("icu/ward1/bed00")


class TestClear:
    def test_clear_by_prefix_and_units(
        self, broker: MosquittoBroker, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """clear --unit-prefix / --units empties those units' retained topics, no others."""
        with Subscriber(broker, None) as pub:
            for topic in (
                "icu/soakA1/bed001/alarms/hypotension",
                "icu/soakA2/bed003/patient",
                "icu/named/bed001/summary",
                "icu/keep/bed001/patient",
            ):
                pub.publish(topic, b"{}", retain=True)
        assert main(["clear", "--broker", broker.url, "--unit-prefix", "soakA"]) == 0
        assert "cleared 2 retained topics" in capsys.readouterr().out
        assert main(["clear", "--broker", broker.url, "--units", "named"]) == 0
        with Subscriber(broker, "icu/#") as sub:
            time.sleep(0.4)
            left = sorted(m.topic for m in sub.messages if m.retain)
        assert left == ["icu/keep/bed001/patient"]
        assert main(["clear", "--broker", broker.url]) == 2
