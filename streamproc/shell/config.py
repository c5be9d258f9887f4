"""Configuration: TOML files, ``key=value`` overrides and ``STREAMPROC_`` variables.

Every number of the protocol is a setting (``streamproc.core.protocol.settings``) whose
default is the protocol's. A file or variable only needs what it changes.
Unknown sections or keys and values of the wrong type are refused at start with
an error that names the key and lists the valid ones.
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from streamproc.core.protocol.settings import InvalidSettingError, Settings
from streamproc.shell.sharding import Shard, ShardError, parse_units

__all__ = [
    "BrokerAddress",
    "ConfigError",
    "ServiceSettings",
    "StreamprocConfig",
    "load_config",
    "parse_broker_url",
]

ENV_PREFIX = "STREAMPROC_"
#: What a broker URL may look like (said by every error about one).
BROKER_URL_FORMS = "mqtt://host[:port] (plain, 1883) or mqtts://host[:port] (TLS, 8883)"


class ConfigError(ValueError):
    """The configuration is wrong: the operator's fault. Names the key."""

    def __init__(self, key: str, reason: str) -> None:
        self.key = key
        self.reason = reason
        super().__init__(f"config {key}: {reason}")


@dataclasses.dataclass(frozen=True, slots=True)
class BrokerAddress:
    """Where the broker is: ``mqtt://host:port`` or ``mqtts://host:port`` (TLS)."""

    host: str
    port: int
    tls: bool


def parse_broker_url(url: str) -> BrokerAddress:
    """``mqtt://host[:port]`` (1883) or ``mqtts://host[:port]`` (8883).

    A URL without a scheme (``localhost``, ``broker:1883``) is refused: guessing
    plain MQTT would send the credentials in clear to whatever listens there.
    """
    if "://" not in url:
        raise ConfigError("service.broker", f"{url!r} has no scheme: use {BROKER_URL_FORMS}")
    parts = urlsplit(url)
    if parts.scheme not in ("mqtt", "mqtts", "tcp", "ssl"):
        raise ConfigError("service.broker", f"{url!r}: use {BROKER_URL_FORMS}")
    tls = parts.scheme in ("mqtts", "ssl")
    try:
        port = parts.port or (8883 if tls else 1883)
    except ValueError:
        raise ConfigError("service.broker", f"bad port in {url!r}") from None
    if not parts.hostname:
        raise ConfigError("service.broker", f"no host in {url!r}")
    return BrokerAddress(parts.hostname, port, tls)


@dataclasses.dataclass(frozen=True, slots=True)
class ServiceSettings:
    """How the shell talks to the world (not clinical settings)."""

    root: str = "icu"
    broker: str = ""  # mqtt://host:port; empty means "none configured"
    instance: str = "streamproc-1"
    client_id: str = ""  # defaults to "streamproc-{instance}"
    username: str = ""
    password: str = ""
    tls_ca: str = ""
    tls_cert: str = ""
    tls_key: str = ""
    metrics_port: int = 0  # 0: no metrics endpoint
    #: Where /metrics and /healthz listen: the loopback only unless a site opens it
    #: (e.g. "0.0.0.0" in a container scraped by Prometheus over the compose network).
    metrics_host: str = "127.0.0.1"
    max_payload_bytes: int = 262_144
    max_samples: int = 30_000
    max_beds: int = 10_000
    tick_s: float = 1.0
    dead_letter_topic: str = ""  # e.g. "icu/_deadletter"; empty: off
    audit_db: str = "streamproc-audit.sqlite3"
    queue_max: int = 100_000
    units: str = ""  # comma-separated unit ids this instance serves; empty: all
    #: "i/n": serve only the units that shard i of n owns (rendezvous hash over unit
    #: ids, streamproc.shell.sharding); empty: no sharding. With units listed the broker
    #: delivers only the owned units; without, every instance reads everything.
    shard: str = ""
    #: Data stamped further ahead of the arrival time than this is refused
    #: (code clock_skew): a gateway clock error, not a patient. 0: no check.
    max_future_s: float = 300.0
    summary_s: float = 2.0  # publish each bed's summary at most this often (0: never)
    mqtt_version: int = 5  # 5 (MQTT 5) or 4 (MQTT 3.1.1, e.g. for brokers without MQTT 5)
    #: The MQTT client: "mqtt5" (the mqtt5 codec under streamproc's own asyncio
    #: protocol; MQTT 5 only) or "paho" (paho-mqtt). MQTT 3.1.1 always uses paho.
    transport: str = "mqtt5"

    def __post_init__(self) -> None:
        for name in ("max_payload_bytes", "max_samples", "max_beds", "queue_max", "tick_s"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"service.{name}", f"must be > 0, got {getattr(self, name)!r}")
        if self.mqtt_version not in (4, 5):
            raise ConfigError("service.mqtt_version", "must be 5 (MQTT 5) or 4 (MQTT 3.1.1)")
        if self.transport not in ("mqtt5", "paho"):
            raise ConfigError(
                "service.transport", f'must be "mqtt5" or "paho", got {self.transport!r}'
            )
        if self.broker and "://" not in self.broker:
            # never guessed as plain MQTT (parse_broker_url checks the rest)
            reason = f"{self.broker!r} has no scheme: use {BROKER_URL_FORMS}"
            raise ConfigError("service.broker", reason)
        if not 0 <= self.metrics_port <= 65535:
            raise ConfigError("service.metrics_port", "must be a TCP port (0 for none)")
        if not self.metrics_host.strip() or any(c.isspace() for c in self.metrics_host):
            reason = f"must be an address to listen on, got {self.metrics_host!r}"
            raise ConfigError("service.metrics_host", reason)
        try:
            parse_units(self.units)
        except ShardError as exc:
            raise ConfigError("service.units", str(exc)) from None
        if self.shard.strip():
            try:
                Shard.parse(self.shard)
            except ShardError as exc:
                raise ConfigError("service.shard", str(exc)) from None


@dataclasses.dataclass(frozen=True, slots=True)
class StreamprocConfig:
    """Everything: the service's own settings and the core's clinical ones."""

    service: ServiceSettings = dataclasses.field(default_factory=ServiceSettings)
    core: Settings = dataclasses.field(default_factory=Settings)


_CORE_SECTIONS = tuple(f.name for f in dataclasses.fields(Settings))
SECTIONS = ("service", *_CORE_SECTIONS)


def _section_class(section: str) -> type[Any]:
    if section == "service":
        return ServiceSettings
    hints = typing.get_type_hints(Settings)
    cls: type[Any] = hints[section]
    return cls


def _coerce(key: str, value: Any, annotation: Any) -> Any:
    """Check (and, for strings from the environment, convert) one value."""
    if isinstance(annotation, types.UnionType):  # pragma: no cover - no unions in settings yet
        annotation = typing.get_args(annotation)[0]
    if annotation is bool:
        if isinstance(value, str):
            if value.lower() in ("1", "true", "yes", "on"):
                return True
            if value.lower() in ("0", "false", "no", "off"):
                return False
        if isinstance(value, bool):
            return value
        raise ConfigError(key, f"must be true or false, got {value!r}")
    if annotation in (int, float):
        if isinstance(value, str):
            try:
                value = float(value) if annotation is float else int(value)
            except ValueError:
                raise ConfigError(key, f"must be a number, got {value!r}") from None
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(key, f"must be a number, got {value!r}")
        if annotation is int:
            if isinstance(value, float) and not value.is_integer():
                raise ConfigError(key, f"must be a whole number, got {value!r}")
            return int(value)
        return float(value)
    if annotation is str:
        if not isinstance(value, str):
            raise ConfigError(key, f"must be a string, got {value!r}")
        return value
    raise ConfigError(key, f"unsupported setting type {annotation!r}")  # pragma: no cover


def _apply(tree: dict[str, dict[str, Any]], section: str, key: str, value: Any) -> None:
    if section not in SECTIONS:
        raise ConfigError(section, f"unknown section; expected one of: {', '.join(SECTIONS)}")
    cls = _section_class(section)
    hints = typing.get_type_hints(cls)
    if key not in hints:
        raise ConfigError(
            f"{section}.{key}", f"unknown setting; expected one of: {', '.join(sorted(hints))}"
        )
    tree.setdefault(section, {})[key] = _coerce(f"{section}.{key}", value, hints[key])


def _build(tree: Mapping[str, Mapping[str, Any]]) -> StreamprocConfig:
    try:
        service = ServiceSettings(**tree.get("service", {}))
        core = Settings(**{s: _section_class(s)(**tree.get(s, {})) for s in _CORE_SECTIONS})
    except InvalidSettingError as exc:
        raise ConfigError(exc.key, exc.reason) from None
    return StreamprocConfig(service=service, core=core)


def parse_assignment(text: str) -> tuple[str, str, str]:
    """``section.key=value`` (or ``key=value`` for a key only one section has)."""
    if "=" not in text:
        raise ConfigError(text, "expected section.key=value")
    name, value = text.split("=", 1)
    name = name.strip()
    if "." in name:
        section, key = name.split(".", 1)
        return section, key, value.strip()
    owners = [s for s in SECTIONS if name in typing.get_type_hints(_section_class(s))]
    if len(owners) != 1:
        raise ConfigError(
            name,
            "unknown setting" if not owners else f"ambiguous; say one of {', '.join(owners)}",
        )
    return owners[0], name, value.strip()


def load_config(
    path: str | Path | None = None,
    *,
    overrides: Mapping[str, Any] | None = None,
    assignments: list[str] | None = None,
    environ: Mapping[str, str] | None = None,
) -> StreamprocConfig:
    """Defaults, then the TOML file, then ``STREAMPROC_*`` variables, then overrides.

    Environment variables are ``STREAMPROC_{SECTION}_{KEY}`` in upper case
    (``STREAMPROC_HYPOTENSION_HOLD_S=90``); for the service section the
    section may be left out (``STREAMPROC_BROKER=mqtt://...``).
    """
    tree: dict[str, dict[str, Any]] = {}
    if path is not None:
        try:
            with Path(path).open("rb") as fh:
                data = tomllib.load(fh)
        except FileNotFoundError:
            raise ConfigError(str(path), "file not found") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(str(path), f"not valid TOML: {exc}") from None
        for section, values in data.items():
            if not isinstance(values, dict):
                raise ConfigError(section, "expected a [section] table")
            for key, value in values.items():
                _apply(tree, section, key, value)
    env = os.environ if environ is None else environ
    service_keys = typing.get_type_hints(ServiceSettings)
    for var, value in sorted(env.items()):
        if not var.startswith(ENV_PREFIX):
            continue
        name = var[len(ENV_PREFIX) :].lower()
        if name in service_keys:
            _apply(tree, "service", name, value)
            continue
        for section in SECTIONS:
            if name.startswith(section + "_"):
                _apply(tree, section, name[len(section) + 1 :], value)
                break
        # other STREAMPROC_* variables (e.g. STREAMPROC_ABP_DATA) are not settings
    for text in assignments or []:
        _apply(tree, *parse_assignment(text))
    for dotted, value in (overrides or {}).items():
        section, _, key = dotted.partition(".")
        _apply(tree, section, key, value)
    return _build(tree)


def default_toml() -> str:
    """The defaults as a TOML document (for ``config/streamproc.toml``)."""
    lines = ["# streamproc settings: every value here is the protocol's default.", ""]
    cfg = StreamprocConfig()
    for section in SECTIONS:
        obj = cfg.service if section == "service" else getattr(cfg.core, section)
        lines.append(f"[{section}]")
        for f in dataclasses.fields(obj):
            value = getattr(obj, f.name)
            if isinstance(value, str):
                lines.append(f'{f.name} = "{value}"')
            elif isinstance(value, bool):
                lines.append(f"{f.name} = {str(value).lower()}")
            else:
                lines.append(f"{f.name} = {value!r}")
        lines.append("")
    return "\n".join(lines)
