"""Logging: JSON lines with the expected keys, no payloads, long values cut."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
import structlog

from streamproc.shell.logs import (
    MAX_STRING_CHARS,
    configure_logging,
    get_logger,
    parse_level,
    redact,
    reset_logging,
)


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def _lines(buf: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in buf.getvalue().splitlines()]


def _fail(exc: Exception) -> None:
    raise exc


def _fail_with_local(secret: str) -> None:
    held = secret.lower()
    raise RuntimeError(f"bad ({len(held)})")


def _contains_key(obj: Any, names: set[str]) -> bool:
    if isinstance(obj, dict):
        return any(k in names or _contains_key(v, names) for k, v in obj.items())
    if isinstance(obj, list):
        return any(_contains_key(v, names) for v in obj)
    return False


class TestLogging:
    @pytest.fixture(autouse=True)
    def _restore_structlog(self) -> Iterator[None]:
        """Put structlog's configuration back as it was after each test."""
        was_configured = structlog.is_configured()
        saved = structlog.get_config()
        yield
        reset_logging()
        if was_configured:
            structlog.configure(**saved)

    @pytest.fixture
    def buf(self) -> io.StringIO:
        out = io.StringIO()
        configure_logging(json=True, stream=out)
        return out

    def test_json_lines_have_the_expected_keys(self, buf: io.StringIO) -> None:
        log = get_logger("streamproc.test", unit="ICU1")
        log.info("first", bed="B07", map=61.5)
        log.warning("second", bed="B08")
        first, second = _lines(buf)
        assert list(first)[:4] == ["timestamp", "level", "event", "logger"]
        assert first["event"] == "first"
        assert first["level"] == "info"
        assert first["logger"] == "streamproc.test"
        assert (first["unit"], first["bed"], first["map"]) == ("ICU1", "B07", 61.5)
        assert second["level"] == "warning"
        stamp = datetime.fromisoformat(first["timestamp"])
        assert stamp.utcoffset() == UTC.utcoffset(None)
        assert first["timestamp"].endswith("Z")

    def test_default_name_and_binding_later(self, buf: io.StringIO) -> None:
        get_logger().bind(unit="U", bed="1").info("bound")
        (line,) = _lines(buf)
        assert (line["logger"], line["unit"], line["bed"]) == ("streamproc", "U", "1")

    def test_payload_and_samples_never_logged(self, buf: io.StringIO) -> None:
        log = get_logger("t")
        log.info(
            "msg",
            payload=b'{"samples": [1, 2, 3]}',
            samples=[80.0] * 1000,
            Payload="case does not matter",
            context={"payload": "x", "inner": [{"samples": [1]}, {"ok": 1}]},
            raw=b"\x00" * 42,
        )
        text = buf.getvalue()
        (line,) = _lines(buf)
        assert not _contains_key(line, {"payload", "samples", "Payload"})
        assert "80.0" not in text
        assert line["context"] == {"inner": [{}, {"ok": 1}]}
        assert line["raw"] == "<42 bytes>"

    def test_payload_dropped_from_bound_context(self, buf: io.StringIO) -> None:
        get_logger("t", payload="secret").bind(samples=[1]).info("ev")
        (line,) = _lines(buf)
        assert "payload" not in line
        assert "samples" not in line
        assert "secret" not in buf.getvalue()

    def test_long_strings_truncated(self, buf: io.StringIO) -> None:
        get_logger("t").info("x" * 2000, reason="r" * 501, short="s" * 500, seq=["q" * 900])
        (line,) = _lines(buf)
        assert line["short"] == "s" * 500
        assert line["reason"].startswith("r" * MAX_STRING_CHARS)
        assert "r" * (MAX_STRING_CHARS + 1) not in line["reason"]
        assert "truncated 1 chars" in line["reason"]
        assert line["event"].startswith("x" * 500)
        assert "truncated 1500 chars" in line["event"]
        assert len(line["seq"][0]) < 600

    def test_long_repr_truncated(self, buf: io.StringIO) -> None:
        class Big:
            def __repr__(self) -> str:
                return "B" * 5000

        get_logger("t").info("obj", big=Big())
        (line,) = _lines(buf)
        assert len(line["big"]) < 600

    def test_exception_is_formatted(self, buf: io.StringIO) -> None:
        log = get_logger("t")
        try:
            _fail(ZeroDivisionError("nope"))
        except ZeroDivisionError:
            log.exception("boom", bed="3")
        (line,) = _lines(buf)
        assert line["level"] == "error"
        assert "ZeroDivisionError: nope" in line["exception"]
        assert "Traceback" in line["exception"]

    @pytest.mark.parametrize(
        ("level", "expected"),
        [
            ("debug", ["d", "i", "w", "e"]),
            ("info", ["i", "w", "e"]),
            ("WARNING", ["w", "e"]),
            ("error", ["e"]),
            ("critical", []),
        ],
    )
    def test_level_filtering(self, level: str, expected: list[str]) -> None:
        out = io.StringIO()
        configure_logging(json=True, level=level, stream=out)
        log = get_logger("t")
        log.debug("d")
        log.info("i")
        log.warning("w")
        log.error("e")
        assert [line["event"] for line in _lines(out)] == expected

    def test_unknown_level_rejected(self) -> None:
        with pytest.raises(ValueError, match="unknown log level"):
            configure_logging(level="chatty", stream=io.StringIO())
        assert parse_level("warn") == parse_level("warning") == 30
        assert parse_level(15) == 15

    def test_module_level_logger_follows_later_configuration(self) -> None:
        """A logger made before configure_logging logs with the configuration of the moment."""
        log = get_logger("early")
        first, second = io.StringIO(), io.StringIO()
        configure_logging(json=True, stream=first)
        log.info("one")
        configure_logging(json=True, stream=second, level="error")
        log.info("two")
        log.error("three")
        assert [line["event"] for line in _lines(first)] == ["one"]
        assert [line["event"] for line in _lines(second)] == ["three"]

    def test_not_a_tty_means_json(self) -> None:
        out = io.StringIO()
        configure_logging(stream=out)
        get_logger("t").info("auto")
        assert _lines(out)[0]["event"] == "auto"

    def test_tty_means_console(self) -> None:
        out = _Tty()
        configure_logging(stream=out)
        get_logger("t").info("pretty", bed="B1", payload="hidden")
        text = out.getvalue()
        assert "pretty" in text
        assert "bed" in text
        assert "hidden" not in text
        with pytest.raises(json.JSONDecodeError):
            json.loads(text)

    @pytest.mark.parametrize("stream", [io.StringIO, _Tty])
    def test_console_exception_without_locals(self, stream: type[io.StringIO]) -> None:
        """Tracebacks on the console never show local variables (they may hold a payload)."""
        out = stream()
        configure_logging(json=False, stream=out)
        try:
            _fail_with_local("-".join(["PATIENT", "NAME"]))
        except RuntimeError:
            get_logger("t").exception("failed")
        text = out.getvalue()
        assert "RuntimeError" in text
        assert "PATIENT-NAME" not in text

    def test_a_failing_stream_never_raises(self) -> None:
        """A log stream that refuses writes (disk full: EFBIG/ENOSPC, a closed pipe) loses
        the line, counted, and the caller goes on: a log line is never worth an alarm."""
        from streamproc.shell import logs  # noqa: PLC0415

        class Full(io.StringIO):
            def write(self, text: str) -> int:
                raise OSError(27, "File too large")

        before = logs.write_failures
        configure_logging(json=True, stream=Full())
        log = get_logger("t")
        log.info("alarm", unit="w", bed="b")
        log.error("audit_failed", code="SQLITE_FULL")
        assert logs.write_failures == before + 2

    def test_reserved_bind_names_rejected(self) -> None:
        with pytest.raises(TypeError, match="reserved"):
            get_logger("t", processors=[])

    def test_reset_logging_restores_defaults(self) -> None:
        configure_logging(json=True, level="error", stream=io.StringIO())
        reset_logging()
        assert not structlog.is_configured()


def test_redact_processor_alone() -> None:
    event = {"event": "e", "payload": 1, "SAMPLES": 2, "exc_info": True, "n": 3}
    assert redact(None, "info", event) == {"event": "e", "exc_info": True, "n": 3}


def test_redact_limits_depth() -> None:
    deep: dict[str, Any] = {"a": {"b": {"c": {"d": {"e": 1}}}}}
    out = redact(None, "info", {"deep": deep})
    assert out["deep"] == {"a": {"b": {"c": {"d": "<nested>"}}}}
