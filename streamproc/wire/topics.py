"""MQTT topics of wire contract v1: parse what arrives, build what is published.

Inbound: ``{root}/{unit}/{bed}/{kind}``, where ``root`` is one or more levels
(default ``icu``), ``unit`` and ``bed`` match ``[A-Za-z0-9_-]{1,64}`` and
``kind`` is one of :data:`streamproc.wire.codec.INBOUND_KINDS`. Outbound:
``{root}/{unit}/{bed}/alarms/{alarm_kind}`` and ``{root}/_status/{instance}``.

Parsers raise :class:`TopicError` (a :class:`~streamproc.wire.codec.CodecError`
with code ``bad_topic``) for anything that does not fit; builders validate
every level they put in, so nothing received can inject a wildcard, an extra
level or an empty level into a published topic.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from functools import lru_cache
from typing import Final

from streamproc.core.protocol.messages import IDENT_RE, BedId, InvalidMessageError
from streamproc.wire.codec import INBOUND_KINDS, CodecError

__all__ = [
    "ALARMS_LEVEL",
    "DEFAULT_ROOT",
    "STATUS_LEVEL",
    "SUMMARY_LEVEL",
    "InboundTopic",
    "TopicError",
    "ack_filter",
    "alarm_topic",
    "alarms_filter",
    "inbound_filters",
    "inbound_topic",
    "parse_alarm_topic",
    "parse_inbound",
    "parse_status_topic",
    "parse_summary_topic",
    "status_filter",
    "status_topic",
    "under_root",
]

DEFAULT_ROOT: Final = "icu"
ALARMS_LEVEL: Final = "alarms"
STATUS_LEVEL: Final = "_status"
SUMMARY_LEVEL: Final = "summary"

_ROOT_LEVEL_RE: Final = re.compile(r"[A-Za-z0-9_-]+")
_ALARM_KIND_RE: Final = re.compile(r"[a-z0-9_]{1,64}")
_IDENT_WORDS: Final = "[A-Za-z0-9_-]{1,64}"
_KINDS_WORDS: Final = ", ".join(INBOUND_KINDS)
_SHOWN_CHARS: Final = 120  # a topic quoted in an error is cut to this length


class TopicError(CodecError):
    """A topic (or a level for a topic) that does not fit the contract.

    ``code`` is always ``"bad_topic"``; ``field`` names the level at fault
    (``"root"``, ``"unit"``, ``"bed"``, ``"kind"``, ``"alarm_kind"``,
    ``"instance"``) or is ``None`` when the topic's shape is wrong;
    ``topic`` is the topic (or the value) that was rejected.
    """

    def __init__(self, topic: str, reason: str, *, field: str | None = None) -> None:
        self.topic = topic
        super().__init__(None, field, reason, code="bad_topic")


def _show(text: str) -> str:
    if len(text) > _SHOWN_CHARS:
        return repr(text[:_SHOWN_CHARS]) + "..."
    return repr(text)


@dataclass(frozen=True, slots=True)
class InboundTopic:
    """What an inbound topic names: the bed and the message kind."""

    bed: BedId
    kind: str


# --------------------------------------------------------------------------- root


@lru_cache(maxsize=64)
def _root_levels(root: str) -> tuple[str, ...]:
    """The levels of a valid ``root``; raises :class:`TopicError` otherwise."""
    if not isinstance(root, str) or not root:
        raise TopicError(str(root), "root must be one or more levels", field="root")
    levels = tuple(root.split("/"))
    for level in levels:
        if not _ROOT_LEVEL_RE.fullmatch(level):
            raise TopicError(
                root,
                f"root {_show(root)} must be one or more '/'-separated levels of "
                f"[A-Za-z0-9_-]+ (no wildcards, no empty levels), bad level {_show(level)}",
                field="root",
            )
    return levels


# --------------------------------------------------------------------------- parsing


def parse_inbound(topic: str, root: str = DEFAULT_ROOT) -> InboundTopic:
    """Parse ``{root}/{unit}/{bed}/{kind}`` into the bed and kind.

    Raises:
        TopicError: the topic is not an inbound topic under ``root`` (wrong
            root or depth, bad unit or bed, wildcard, empty level, unknown or
            outbound kind), or ``root`` itself is invalid.
    """
    if not isinstance(topic, str):
        raise TopicError(str(topic), f"topic must be a string, got {type(topic).__name__}")
    return _parse_inbound(topic, root)


#: Inbound topics whose parse is kept: a few per bed for the largest ward an instance
#: carries (10,000 beds x abp and vitals, and room for the rare kinds). At 4,096 a
#: 5,000-bed instance missed on nearly every chunk and parsed its topic again.
PARSED_TOPICS_MAX: Final = 1 << 15


@lru_cache(maxsize=PARSED_TOPICS_MAX)
def _parse_inbound(topic: str, root: str) -> InboundTopic:
    # Cached: a bed sends the same few topics over and over. Errors are not cached.
    root_levels = _root_levels(root)
    n_root = len(root_levels)
    expected = f"expected '{root}/<unit>/<bed>/<kind>'"
    if "+" in topic or "#" in topic:
        raise TopicError(topic, f"topic {_show(topic)} contains an MQTT wildcard; {expected}")
    levels = topic.split("/")
    if tuple(levels[:n_root]) != root_levels:
        raise TopicError(topic, f"topic {_show(topic)} is not under root {root!r}; {expected}")
    rest = levels[n_root:]
    if len(rest) != 3:
        if len(rest) >= 1 and rest[0] == STATUS_LEVEL:
            hint = " (a status topic, not inbound)"
        elif len(rest) >= 4 and rest[2] == ALARMS_LEVEL:
            hint = " (an alarm topic, not inbound)"
        else:
            hint = ""
        raise TopicError(
            topic,
            f"topic {_show(topic)} has {len(rest)} levels after the root, not 3{hint}; {expected}",
        )
    unit, bed, kind = rest
    try:
        bed_id = BedId(unit, bed)
    except InvalidMessageError as exc:
        raise TopicError(
            topic,
            f"{exc.field} in topic {_show(topic)} must match {_IDENT_WORDS}; {expected}",
            field=exc.field,
        ) from exc
    if kind not in INBOUND_KINDS:
        raise TopicError(
            topic,
            f"unknown kind {_show(kind)} in topic {_show(topic)}; expected one of: {_KINDS_WORDS}",
            field="kind",
        )
    return InboundTopic(bed_id, kind)


def parse_alarm_topic(topic: str, root: str = DEFAULT_ROOT) -> tuple[BedId, str]:
    """Parse ``{root}/{unit}/{bed}/alarms/{alarm_kind}`` into the bed and alarm kind.

    Raises:
        TopicError: the topic is not an alarm topic under ``root``.
    """
    if not isinstance(topic, str):
        raise TopicError(str(topic), f"topic must be a string, got {type(topic).__name__}")
    root_levels = _root_levels(root)
    n_root = len(root_levels)
    expected = f"expected '{root}/<unit>/<bed>/{ALARMS_LEVEL}/<alarm_kind>'"
    if "+" in topic or "#" in topic:
        raise TopicError(topic, f"topic {_show(topic)} contains an MQTT wildcard; {expected}")
    levels = topic.split("/")
    if tuple(levels[:n_root]) != root_levels:
        raise TopicError(topic, f"topic {_show(topic)} is not under root {root!r}; {expected}")
    rest = levels[n_root:]
    if len(rest) != 4 or rest[2] != ALARMS_LEVEL:
        raise TopicError(topic, f"topic {_show(topic)} is not an alarm topic; {expected}")
    unit, bed, _, alarm_kind = rest
    try:
        bed_id = BedId(unit, bed)
    except InvalidMessageError as exc:
        raise TopicError(
            topic,
            f"{exc.field} in topic {_show(topic)} must match {_IDENT_WORDS}; {expected}",
            field=exc.field,
        ) from exc
    if not _ALARM_KIND_RE.fullmatch(alarm_kind):
        raise TopicError(
            topic,
            f"alarm kind {_show(alarm_kind)} in topic {_show(topic)} must match [a-z0-9_]{{1,64}}",
            field="alarm_kind",
        )
    return bed_id, alarm_kind


def under_root(topic: str, root: str = DEFAULT_ROOT) -> bool:
    """Whether ``topic``'s first levels are ``root``'s."""
    root_levels = _root_levels(root)
    return tuple(topic.split("/")[: len(root_levels)]) == root_levels


def parse_status_topic(topic: str, root: str = DEFAULT_ROOT) -> str:
    """Parse ``{root}/_status/{instance}`` into the instance.

    Raises:
        TopicError: not a status topic under ``root`` (``field`` None), or its
            instance does not match ``[A-Za-z0-9_-]{1,64}`` (``field`` ``"instance"``).
    """
    root_levels = _root_levels(root)
    rest = topic.split("/")[len(root_levels) :]
    if not under_root(topic, root) or len(rest) != 2 or rest[0] != STATUS_LEVEL:
        raise TopicError(
            topic,
            f"topic {_show(topic)} is not a status topic; "
            f"expected '{root}/{STATUS_LEVEL}/<instance>'",
        )
    instance = rest[1]
    if not IDENT_RE.fullmatch(instance):
        raise TopicError(
            topic,
            f"instance in topic {_show(topic)} must match {_IDENT_WORDS}",
            field="instance",
        )
    return instance


def parse_summary_topic(topic: str, root: str = DEFAULT_ROOT) -> BedId:
    """Parse ``{root}/{unit}/{bed}/summary`` into the bed.

    Raises:
        TopicError: not a summary topic under ``root`` (``field`` None), or its unit
            or bed does not match ``[A-Za-z0-9_-]{1,64}`` (``field`` ``"unit"``/``"bed"``).
    """
    root_levels = _root_levels(root)
    rest = topic.split("/")[len(root_levels) :]
    if not under_root(topic, root) or len(rest) != 3 or rest[2] != SUMMARY_LEVEL:
        raise TopicError(
            topic,
            f"topic {_show(topic)} is not a summary topic; "
            f"expected '{root}/<unit>/<bed>/{SUMMARY_LEVEL}'",
        )
    try:
        return BedId(rest[0], rest[1])
    except InvalidMessageError as exc:
        raise TopicError(
            topic,
            f"{exc.field} in topic {_show(topic)} must match {_IDENT_WORDS}",
            field=exc.field,
        ) from exc


# --------------------------------------------------------------------------- building


def _bed_levels(bed: BedId) -> str:
    # BedId validates itself; checked again so a forged instance cannot inject.
    for field in ("unit", "bed"):
        value = getattr(bed, field, None)
        if not isinstance(value, str) or not IDENT_RE.fullmatch(value):
            raise TopicError(
                str(value),
                f"{field} must match {_IDENT_WORDS}, got {_show(str(value))}",
                field=field,
            )
    return f"{bed.unit}/{bed.bed}"


def inbound_topic(root: str, bed: BedId, kind: str) -> str:
    """``{root}/{unit}/{bed}/{kind}`` for an inbound ``kind`` (simulators, tests)."""
    _root_levels(root)
    if kind not in INBOUND_KINDS:
        raise TopicError(
            str(kind),
            f"unknown kind {_show(str(kind))}; expected one of: {_KINDS_WORDS}",
            field="kind",
        )
    return f"{root}/{_bed_levels(bed)}/{kind}"


def alarm_topic(root: str, bed: BedId, alarm_kind: str) -> str:
    """``{root}/{unit}/{bed}/alarms/{alarm_kind}``; ``alarm_kind`` matches ``[a-z0-9_]{1,64}``."""
    _root_levels(root)
    if not isinstance(alarm_kind, str) or not _ALARM_KIND_RE.fullmatch(alarm_kind):
        raise TopicError(
            str(alarm_kind),
            f"alarm kind must match [a-z0-9_]{{1,64}}, got {_show(str(alarm_kind))}",
            field="alarm_kind",
        )
    return f"{root}/{_bed_levels(bed)}/{ALARMS_LEVEL}/{alarm_kind}"


def summary_topic(root: str, bed: BedId) -> str:
    """``{root}/{unit}/{bed}/summary``: the bed's latest pressures, target, drugs, trend."""
    _root_levels(root)
    return f"{root}/{_bed_levels(bed)}/{SUMMARY_LEVEL}"


def summary_filter(root: str = "icu", unit: str | None = None) -> str:
    """Every bed's summary: ``{root}/+/+/summary``, or one care unit's:
    ``{root}/{unit}/+/summary``."""
    _root_levels(root)
    level = "+" if unit is None else _unit_level(unit)
    return f"{root}/{level}/+/{SUMMARY_LEVEL}"


def status_filter(root: str = DEFAULT_ROOT) -> str:
    """Every instance's status: ``{root}/_status/#``."""
    _root_levels(root)
    return f"{root}/{STATUS_LEVEL}/#"


def status_topic(root: str, instance: str) -> str:
    """``{root}/_status/{instance}``; ``instance`` matches ``[A-Za-z0-9_-]{1,64}``."""
    _root_levels(root)
    if not isinstance(instance, str) or not IDENT_RE.fullmatch(instance):
        raise TopicError(
            str(instance),
            f"instance must match {_IDENT_WORDS}, got {_show(str(instance))}",
            field="instance",
        )
    return f"{root}/{STATUS_LEVEL}/{instance}"


def _unit_level(unit: str) -> str:
    if not isinstance(unit, str) or not IDENT_RE.fullmatch(unit):
        raise TopicError(
            str(unit), f"unit must match {_IDENT_WORDS}, got {_show(str(unit))}", field="unit"
        )
    return unit


def inbound_filters(
    root: str = DEFAULT_ROOT,
    kinds: tuple[str, ...] = INBOUND_KINDS,
    *,
    units: Iterable[str] | None = None,
) -> list[str]:
    """Subscription filters ``{root}/+/+/{kind}``, one per kind (all inbound kinds by default).

    The default includes ``ack``; pass ``kinds`` to leave some out (for instance
    when :func:`ack_filter` is subscribed on its own with other options). With
    ``units``, ``{root}/{unit}/+/{kind}`` per unit and kind instead, so that the
    broker delivers only those care units (never the alarm or summary topics
    that ``{root}/{unit}/#`` would also match).
    """
    _root_levels(root)
    for kind in kinds:
        if kind not in INBOUND_KINDS:
            raise TopicError(
                str(kind),
                f"unknown kind {_show(str(kind))}; expected one of: {_KINDS_WORDS}",
                field="kind",
            )
    if units is None:
        return [f"{root}/+/+/{kind}" for kind in kinds]
    return [f"{root}/{_unit_level(unit)}/+/{kind}" for unit in units for kind in kinds]


def ack_filter(root: str = DEFAULT_ROOT) -> str:
    """Subscription filter for acknowledgements: ``{root}/+/+/ack``."""
    _root_levels(root)
    return f"{root}/+/+/ack"


def alarms_filter(root: str = DEFAULT_ROOT, unit: str | None = None) -> str:
    """Subscription filter for every retained alarm state: ``{root}/+/+/alarms/#``,
    or one care unit's: ``{root}/{unit}/+/alarms/#``."""
    _root_levels(root)
    level = "+" if unit is None else _unit_level(unit)
    return f"{root}/{level}/+/{ALARMS_LEVEL}/#"
