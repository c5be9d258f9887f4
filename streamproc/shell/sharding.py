"""Which care units one ``streamproc run`` instance serves: unit lists and shards.

Beds are partitioned by care unit, never message by message: a bed lives in one
unit, so all of its messages reach the one instance that owns the unit, in the
order the broker received them (MQTT keeps per-topic order per subscription).

An instance serves the units listed in ``service.units`` (all units when the
list is empty), narrowed by ``service.shard`` ``"i/n"``: shard ``i`` of ``n``
owns a unit when :func:`owner` picks ``i`` for it. :func:`owner` is rendezvous
(highest-random-weight) hashing over the unit id with BLAKE2b, so every
instance computes the same answer with no coordination, on any machine and in
any process (unlike Python's salted :func:`hash`), and going from ``n`` to
``n + 1`` instances moves only the units the new shard wins, about
``1 / (n + 1)`` of them, and only to the new shard.

Pure functions: no I/O, no clock, nothing global but a bounded cache.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import lru_cache
from typing import Final

__all__ = [
    "Shard",
    "ShardError",
    "owned_units",
    "owner",
    "owns",
    "parse_units",
    "serves",
]

#: BLAKE2b personalisation: scores for sharding are not hashes of anything else.
_PERSON: Final = b"streamproc-shard"
_SHARD_RE: Final = re.compile(r"\s*(\d+)\s*/\s*(\d+)\s*")
_FORM: Final = "expected 'i/n' with n >= 1 and 0 <= i < n, e.g. '0/2' or '1/2'"
#: Most shards a deployment may name: far beyond any hospital system, and a bound on
#: the per-unit scoring work.
MAX_SHARDS: Final = 1024


class ShardError(ValueError):
    """A shard or unit list that cannot be used; the message says the valid form."""


@dataclass(frozen=True, slots=True)
class Shard:
    """Shard ``index`` of ``count`` (``0 <= index < count``); ``str()`` gives ``"i/n"``."""

    index: int
    count: int

    def __post_init__(self) -> None:
        for name in ("index", "count"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int):
                raise ShardError(f"shard {name} must be a whole number, got {value!r}; {_FORM}")
        if not 1 <= self.count <= MAX_SHARDS:
            raise ShardError(f"shard count must be 1..{MAX_SHARDS}, got {self.count}; {_FORM}")
        if not 0 <= self.index < self.count:
            raise ShardError(
                f"shard index must be 0..{self.count - 1} for {self.count} shards, "
                f"got {self.index}; {_FORM}"
            )

    @classmethod
    def parse(cls, text: str) -> Shard:
        """``"i/n"`` (spaces around the numbers allowed); :class:`ShardError` otherwise."""
        match = _SHARD_RE.fullmatch(text) if isinstance(text, str) else None
        if match is None:
            raise ShardError(f"bad shard {text!r}; {_FORM}")
        return cls(int(match.group(1)), int(match.group(2)))

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"


def _score(unit: str, index: int) -> int:
    """The weight of shard ``index`` for ``unit``; independent of the shard count."""
    digest = hashlib.blake2b(
        index.to_bytes(4, "big") + unit.encode("utf-8"), digest_size=8, person=_PERSON
    ).digest()
    return int.from_bytes(digest, "big")


@lru_cache(maxsize=65_536)
def owner(unit: str, count: int) -> int:
    """The shard index (``0 .. count - 1``) that owns ``unit`` among ``count`` shards.

    Rendezvous hashing: the shard with the highest score for the unit wins (ties,
    which 64-bit scores make vanishingly rare, go to the lower index). Cached:
    the service asks once per message.
    """
    if not 1 <= count <= MAX_SHARDS:
        raise ShardError(f"shard count must be 1..{MAX_SHARDS}, got {count}")
    best, best_score = 0, -1
    for index in range(count):
        score = _score(unit, index)
        if score > best_score:
            best, best_score = index, score
    return best


def owns(unit: str, shard: Shard) -> bool:
    """Whether ``shard`` owns care unit ``unit``: exactly one shard of ``count`` does."""
    return owner(unit, shard.count) == shard.index


def parse_units(text: str) -> tuple[str, ...]:
    """``"ward1, ward2"`` → ``("ward1", "ward2")``: comma-separated, spaces and
    repeats dropped, each id ``[A-Za-z0-9_-]{1,64}``; ``""`` → ``()`` (all units)."""
    units: list[str] = []
    for raw in text.split(","):
        unit = raw.strip()
        if not unit:
            continue
        # (here, not at the top: the core's messages bring numba, and `streamproc
        # --help` and `config` make the default settings, which parse no unit)
        from streamproc.core.protocol.messages import IDENT_RE  # noqa: PLC0415

        if not IDENT_RE.fullmatch(unit):
            raise ShardError(
                f"unit {unit[:80]!r} must match [A-Za-z0-9_-]{{1,64}} "
                "(a comma-separated list, e.g. 'ward7,ward8')"
            )
        if unit not in units:
            units.append(unit)
    return tuple(units)


def owned_units(units: Iterable[str], shard: Shard | None) -> tuple[str, ...]:
    """The listed ``units`` that ``shard`` owns (all of them without a shard), in order."""
    return tuple(u for u in units if shard is None or owns(u, shard))


def serves(units: Iterable[str], shard: Shard | None) -> Callable[[str], bool] | None:
    """A predicate ``unit -> bool`` for the units an instance serves, or ``None`` for all.

    With listed ``units``, membership in the owned ones (a set lookup: the
    instance never asks the hash per message); with only a shard, :func:`owns`.
    """
    listed = tuple(units)
    if listed:
        return frozenset(owned_units(listed, shard)).__contains__
    if shard is None:
        return None
    count, index = shard.count, shard.index

    def owned(unit: str) -> bool:
        return owner(unit, count) == index

    return owned
