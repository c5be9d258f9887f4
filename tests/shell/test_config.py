"""Configuration: every protocol number is a setting, validated at start."""

from __future__ import annotations

from pathlib import Path

import pytest

from streamproc.shell.config import (
    ConfigError,
    default_toml,
    load_config,
    parse_assignment,
    parse_broker_url,
)

REPO = Path(__file__).resolve().parents[2]


class TestLoadConfig:
    def test_defaults_are_the_protocols(self) -> None:
        """With nothing configured, the protocol's numbers apply."""
        cfg = load_config(environ={})
        assert cfg.core.hypotension.hold_s == 60.0
        assert cfg.core.hypotension.critical_map == 50.0
        assert cfg.core.targets.standard_map == 65.0
        assert cfg.core.alarms.reannounce_s == 120.0
        assert cfg.service.root == "icu"

    def test_shipped_file_matches_defaults(self) -> None:
        """config/streamproc.toml lists every setting with its default (kept in sync)."""
        shipped = (REPO / "config" / "streamproc.toml").read_text()
        assert shipped == default_toml()
        assert load_config(REPO / "config" / "streamproc.toml", environ={}) == load_config(
            environ={}
        )

    def test_file_env_and_assignments_layer(self, tmp_path: Path) -> None:
        """File, then STREAMPROC_ variables, then --set assignments, each overriding."""
        path = tmp_path / "s.toml"
        path.write_text("[hypotension]\nhold_s = 90\ncritical_map = 45\n[service]\nroot = 'h1'\n")
        env = {
            "STREAMPROC_HYPOTENSION_HOLD_S": "120",
            "STREAMPROC_BROKER": "mqtt://b:1883",
            "STREAMPROC_ABP_DATA": "/not/a/setting",
        }
        cfg = load_config(path, environ=env, assignments=["targets.standard_map=70"])
        assert cfg.core.hypotension.hold_s == 120.0
        assert cfg.core.hypotension.critical_map == 45.0
        assert cfg.core.targets.standard_map == 70.0
        assert cfg.service.root == "h1"
        assert cfg.service.broker == "mqtt://b:1883"

    @pytest.mark.parametrize(
        ("text", "key", "words"),
        [
            ("[hypotension]\nhold = 60\n", "hypotension.hold", "expected one of"),
            ("[hypotensoin]\nhold_s = 60\n", "hypotensoin", "expected one of: service"),
            ("[hypotension]\nhold_s = 'long'\n", "hypotension.hold_s", "must be a number"),
            ("[hypotension]\nhold_s = -5\n", "hypotension.hold_s", "must be > 0"),
            ("[hypotension]\nhold_s = true\n", "hypotension.hold_s", "must be a number"),
            (
                "[alarms]\nescalate_after_reannounces = 1.5\n",
                "alarms.escalate_after_reannounces",
                "whole number",
            ),
            ("[service]\nmax_samples = 0\n", "service.max_samples", "must be > 0"),
            ("hold_s = 60\n", "hold_s", "[section]"),
            ("[hypotension\n", "", "not valid TOML"),
        ],
    )
    def test_bad_config_names_the_key(
        self, tmp_path: Path, text: str, key: str, words: str
    ) -> None:
        """Each mistake is refused at start, naming the key and what is expected."""
        path = tmp_path / "bad.toml"
        path.write_text(text)
        with pytest.raises(ConfigError) as info:
            load_config(path, environ={})
        assert key in info.value.key
        assert words in str(info.value)

    def test_shard_and_units(self) -> None:
        """service.shard is 'i/n' (also STREAMPROC_SHARD or STREAMPROC_SERVICE_SHARD);
        units are checked as topic levels."""
        assert load_config(environ={}).service.shard == ""
        cfg = load_config(environ={"STREAMPROC_SHARD": "1/3", "STREAMPROC_UNITS": "w1, w2"})
        assert (cfg.service.shard, cfg.service.units) == ("1/3", "w1, w2")
        assert load_config(environ={"STREAMPROC_SERVICE_SHARD": "0/2"}).service.shard == "0/2"
        assert load_config(environ={}, assignments=["service.shard=2/4"]).service.shard == "2/4"

    @pytest.mark.parametrize(
        ("key", "value", "words"),
        [
            ("shard", "3/3", "index must be 0..2"),
            ("shard", "half", "expected 'i/n'"),
            ("units", "ward7,icu/#", "[A-Za-z0-9_-]{1,64}"),
        ],
    )
    def test_bad_shard_or_units(self, key: str, value: str, words: str) -> None:
        """A bad shard or unit list stops the start, naming the key and the valid form."""
        with pytest.raises(ConfigError) as info:
            load_config(environ={}, overrides={f"service.{key}": value})
        assert info.value.key == f"service.{key}"
        assert words in str(info.value)

    def test_cli_run_refuses_bad_shard(self, capsys: pytest.CaptureFixture[str]) -> None:
        """`streamproc run --shard 2/2` exits 2 with the reason, before touching a broker."""
        from streamproc.apps.cli import main  # noqa: PLC0415

        rc = main(["run", "--broker", "mqtt://127.0.0.1:1", "--units", "w1", "--shard", "2/2"])
        assert rc == 2
        err = capsys.readouterr().err
        assert "service.shard" in err
        assert "expected 'i/n'" in err

    def test_missing_file(self, tmp_path: Path) -> None:
        """A missing file is a clear error, not a traceback."""
        with pytest.raises(ConfigError, match="file not found"):
            load_config(tmp_path / "nope.toml", environ={})

    def test_assignment_forms(self) -> None:
        """--set takes section.key=value, or key=value when the key is unambiguous."""
        assert parse_assignment("hold_s=30") == ("hypotension", "hold_s", "30")
        assert parse_assignment("alarms.reannounce_s = 60") == ("alarms", "reannounce_s", "60")
        with pytest.raises(ConfigError, match="unknown setting"):
            parse_assignment("nonsense=1")
        with pytest.raises(ConfigError, match=r"section\.key=value"):
            parse_assignment("hold_s")


class TestBrokerUrl:
    @pytest.mark.parametrize(
        ("url", "host", "port", "tls"),
        [
            ("mqtt://127.0.0.1:1883", "127.0.0.1", 1883, False),
            ("mqtt://broker", "broker", 1883, False),
            ("mqtts://broker", "broker", 8883, True),
            ("mqtts://broker:8884", "broker", 8884, True),
        ],
    )
    def test_parse(self, url: str, host: str, port: int, tls: bool) -> None:
        """mqtt:// and mqtts:// URLs with their default ports."""
        addr = parse_broker_url(url)
        assert (addr.host, addr.port, addr.tls) == (host, port, tls)

    @pytest.mark.parametrize(
        "url", ["http://x:1", "mqtt://:1883", "mqtt://x:notaport", "localhost", "broker:1884"]
    )
    def test_bad(self, url: str) -> None:
        """Anything else is a configuration error naming service.broker."""
        with pytest.raises(ConfigError, match=r"service\.broker"):
            parse_broker_url(url)
