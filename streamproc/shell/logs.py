"""Structured logging (structlog): JSON lines for machines, a console for people.

:func:`configure_logging` sets structlog up once at start: one JSON object per
line (``timestamp`` ISO 8601 UTC, ``level``, ``event``, ``logger`` and the
bound keys) when the output is not a terminal, a coloured console renderer
when it is. Whatever the renderer, :func:`redact` runs just before it: it drops
any key named ``payload`` or ``samples`` (at any depth), replaces bytes with
their length and truncates long strings, so that whole messages (and with them
anything about a patient beyond unit and bed) never reach a log.

:func:`get_logger` returns a lazy logger: one made at import time follows the
configuration in force when it logs, not the one when it was made.
"""

from __future__ import annotations

import importlib.util
import logging
import sys
from collections.abc import Mapping
from typing import Any, Final, TextIO, cast

import structlog
from structlog.typing import EventDict, FilteringBoundLogger, Processor, WrappedLogger

__all__ = [
    "MAX_STRING_CHARS",
    "REDACTED_KEYS",
    "configure_logging",
    "get_logger",
    "parse_level",
    "redact",
    "reset_logging",
]

#: Keys whose values never reach a log (compared case-insensitively).
REDACTED_KEYS: Final = frozenset({"payload", "samples"})
#: Longer string values are cut to this many characters (and say so).
MAX_STRING_CHARS: Final = 500
#: Formatted tracebacks are kept whole up to this size.
MAX_TRACEBACK_CHARS: Final = 20_000
#: Containers nested deeper than this are not logged.
MAX_DEPTH: Final = 4

#: Keys structlog itself uses for exceptions and stacks: never rewritten as data.
_EXCEPTION_KEYS: Final = frozenset({"exc_info", "stack_info"})
#: Keyword arguments of structlog.wrap_logger, which get_logger cannot bind.
_WRAP_LOGGER_ARGS: Final = frozenset(
    {
        "logger",
        "processors",
        "wrapper_class",
        "context_class",
        "cache_logger_on_first_use",
        "logger_factory_args",
    }
)
_LEADING_KEYS: Final = ("timestamp", "level", "event", "logger")
_PRIMITIVES: Final = (bool, int, float, type(None))


def _truncate(text: str, limit: int = MAX_STRING_CHARS) -> str:
    if len(text) <= limit:
        return text
    return f"{text[:limit]}...[truncated {len(text) - limit} chars]"


def _clean(value: Any, depth: int) -> Any:
    if isinstance(value, str):
        return _truncate(value) if len(value) > MAX_STRING_CHARS else value
    if isinstance(value, _PRIMITIVES):
        return value
    if isinstance(value, bytes | bytearray | memoryview):
        return f"<{len(value)} bytes>"
    if depth >= MAX_DEPTH:
        return "<nested>"
    if isinstance(value, Mapping):
        return {
            (k if isinstance(k, str | int | float | bool) else repr(k)): _clean(v, depth + 1)
            for k, v in value.items()
            if not (isinstance(k, str) and k.lower() in REDACTED_KEYS)
        }
    if isinstance(value, list | tuple | set | frozenset):
        return [_clean(v, depth + 1) for v in value]
    text = repr(value)
    return _truncate(text) if len(text) > MAX_STRING_CHARS else value


def redact(_logger: WrappedLogger, _method: str, event_dict: EventDict) -> EventDict:
    """structlog processor: drop ``payload``/``samples``, shorten long values."""
    out: EventDict = {}
    for key, value in event_dict.items():
        if key.lower() in REDACTED_KEYS:
            continue
        if key in _EXCEPTION_KEYS:
            out[key] = value
        elif key in ("exception", "stack") and isinstance(value, str):
            out[key] = _truncate(value, MAX_TRACEBACK_CHARS)
        else:
            out[key] = _clean(value, 0)
    return out


def parse_level(level: str | int) -> int:
    """``"debug"``, ``"INFO"``, ``"warning"``, ... (or a number) as a ``logging`` level."""
    if isinstance(level, int):
        return level
    try:
        return logging.getLevelNamesMapping()[level.strip().upper()]
    except KeyError:
        choices = "debug, info, warning, error, critical"
        raise ValueError(f"unknown log level {level!r} (one of {choices})") from None


def _isatty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError, OSError):
        return False


class _NamedPrintLogger(structlog.PrintLogger):
    """A :class:`structlog.PrintLogger` that knows the name it was asked for.

    A line that cannot be written (the log's disk is full, its pipe closed) is dropped and
    counted in :data:`write_failures`: losing a log line must never stop the caller, which
    may be publishing an alarm.
    """

    def __init__(self, file: TextIO | None = None, name: str | None = None) -> None:
        super().__init__(file)
        self.name = name

    def msg(self, message: str) -> None:
        global write_failures  # noqa: PLW0603 - one process-wide counter
        try:
            super().msg(message)
        except (OSError, ValueError):
            write_failures += 1

    log = debug = info = warn = warning = msg
    fatal = failure = err = error = critical = exception = msg


#: Log lines dropped because the stream refused them (see :class:`_NamedPrintLogger`).
write_failures = 0


class _LoggerFactory:
    """Makes a :class:`_NamedPrintLogger` on ``stream`` for ``get_logger(name)``."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream

    def __call__(self, *args: Any) -> _NamedPrintLogger:
        return _NamedPrintLogger(self.stream, str(args[0]) if args else None)


def _add_logger_name(logger: WrappedLogger, _method: str, event_dict: EventDict) -> EventDict:
    name = getattr(logger, "name", None)
    if name is not None:
        event_dict.setdefault("logger", name)
    return event_dict


def _leading_keys(_logger: WrappedLogger, _method: str, event_dict: EventDict) -> EventDict:
    """``timestamp``, ``level``, ``event``, ``logger`` first, for people reading JSON lines."""
    out: EventDict = {k: event_dict[k] for k in _LEADING_KEYS if k in event_dict}
    out.update(event_dict)
    return out


def _console_traceback_formatter(*, colors: bool) -> structlog.typing.ExceptionRenderer:
    if colors and importlib.util.find_spec("rich") is not None:
        return structlog.dev.RichTracebackFormatter(show_locals=False)
    return structlog.dev.plain_traceback


def configure_logging(
    *, json: bool | None = None, level: str = "info", stream: TextIO | None = None
) -> None:
    """Configure structlog for the process.

    Args:
        json: JSON lines if true, the console renderer if false; ``None``
            chooses JSON unless ``stream`` is a terminal.
        level: the lowest level logged (``debug``, ``info``, ``warning``,
            ``error``, ``critical``); raises ``ValueError`` for anything else.
        stream: where the lines go (default: ``sys.stderr``).
    """
    out = stream if stream is not None else sys.stderr
    as_json = not _isatty(out) if json is None else json
    threshold = parse_level(level)
    processors: list[Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        _add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.StackInfoRenderer(),
    ]
    if as_json:
        processors += [
            structlog.processors.format_exc_info,
            redact,
            _leading_keys,
            structlog.processors.JSONRenderer(),
        ]
    else:
        # The console renderer formats exc_info itself (and warns about
        # format_exc_info); tracebacks never show local variables.
        tty = _isatty(out)
        processors += [
            redact,
            structlog.dev.ConsoleRenderer(
                colors=tty, exception_formatter=_console_traceback_formatter(colors=tty)
            ),
        ]
    structlog.configure(
        processors=processors,
        wrapper_class=structlog.make_filtering_bound_logger(threshold),
        context_class=dict,
        logger_factory=_LoggerFactory(out),
        cache_logger_on_first_use=False,
    )


def get_logger(name: str = "streamproc", **bind: Any) -> FilteringBoundLogger:
    """A logger with ``logger=name`` and ``bind`` (e.g. ``unit``, ``bed``) bound.

    The logger is lazy: it picks up the configuration in force each time it
    logs, so module-level loggers made before :func:`configure_logging` work.
    """
    reserved = _WRAP_LOGGER_ARGS.intersection(bind)
    if reserved:
        raise TypeError(f"cannot bind {sorted(reserved)}: reserved by structlog.get_logger")
    return cast(FilteringBoundLogger, structlog.get_logger(name, **bind))


def reset_logging() -> None:
    """Back to structlog's defaults (for tests)."""
    structlog.reset_defaults()
    structlog.contextvars.clear_contextvars()
