"""Sharding care units over instances: ``Shard``, rendezvous ownership, unit lists."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
from collections import Counter

import pytest
from hypothesis import given
from hypothesis import strategies as st

from streamproc.shell.sharding import (
    MAX_SHARDS,
    Shard,
    ShardError,
    owned_units,
    owner,
    owns,
    parse_units,
    serves,
)

unit_ids = st.from_regex(r"[A-Za-z0-9_-]{1,64}", fullmatch=True)
MANY = [f"unit{i:05d}" for i in range(10_000)]


class TestShard:
    @pytest.mark.parametrize(
        ("text", "index", "count"),
        [
            ("0/1", 0, 1),
            ("0/2", 0, 2),
            ("1/2", 1, 2),
            (" 3 / 10 ", 3, 10),
            ("1023/1024", 1023, 1024),
        ],
    )
    def test_parse(self, text: str, index: int, count: int) -> None:
        """'i/n' parses to Shard(i, n); str() gives the canonical form back."""
        shard = Shard.parse(text)
        assert (shard.index, shard.count) == (index, count)
        assert str(shard) == f"{index}/{count}"
        assert Shard.parse(str(shard)) == shard

    @pytest.mark.parametrize(
        ("text", "words"),
        [
            ("2/2", "index must be 0..1"),
            ("0/0", "count must be 1..1024"),
            ("-1/2", "bad shard"),
            ("1", "bad shard"),
            ("a/b", "bad shard"),
            ("1/2/3", "bad shard"),
            ("", "bad shard"),
            ("0/1025", "count must be 1..1024"),
            ("1.0/2", "bad shard"),
        ],
    )
    def test_parse_rejects_with_the_valid_form(self, text: str, words: str) -> None:
        """Anything but i/n with 0 <= i < n is refused, and the error shows the valid form."""
        with pytest.raises(ShardError) as info:
            Shard.parse(text)
        assert words in str(info.value)
        assert "expected 'i/n'" in str(info.value)

    @pytest.mark.parametrize(
        ("index", "count"), [(0, 0), (2, 2), (-1, 3), (True, 2), (0, 2.0), (0, MAX_SHARDS + 1)]
    )
    def test_validates_itself(self, index: object, count: object) -> None:
        """A Shard built directly is checked as strictly as a parsed one."""
        with pytest.raises(ShardError, match="expected 'i/n'"):
            Shard(index, count)  # type: ignore[arg-type]

    def test_frozen_and_slotted(self) -> None:
        """Immutable and without a __dict__ (a value, hashable, cheap)."""
        shard = Shard(1, 3)
        with pytest.raises(dataclasses.FrozenInstanceError):
            shard.index = 2  # type: ignore[misc]
        assert not hasattr(shard, "__dict__")
        assert {shard, Shard(1, 3)} == {Shard(1, 3)}


class TestOwnership:
    @given(unit=unit_ids, count=st.integers(1, 64))
    def test_exactly_one_shard_owns_each_unit(self, unit: str, count: int) -> None:
        """For every unit and shard count, one shard and only one owns the unit."""
        owners = [i for i in range(count) if owns(unit, Shard(i, count))]
        assert owners == [owner(unit, count)]

    def test_stable_across_processes_and_versions(self) -> None:
        """Pinned owners: every instance (any machine, any PYTHONHASHSEED, any release) must
        agree, or a rolling upgrade would orphan or double-serve units. Changing the hash is
        a breaking change for running deployments."""
        pinned = {
            "ward1": (0, 0),
            "ward2": (1, 1),
            "ward3": (1, 2),
            "ward4": (0, 0),
            "ward5": (1, 1),
            "ward6": (0, 2),
            "ward7": (1, 2),
            "icu-a": (0, 2),
            "ccu": (0, 0),
        }
        assert {u: (owner(u, 2), owner(u, 3)) for u in pinned} == pinned
        code = (
            "from streamproc.shell.sharding import owner;"
            f"print([owner(u, 3) for u in {sorted(pinned)!r}])"
        )
        for seed in ("1", "12345"):
            out = subprocess.run(  # noqa: S603 - our own interpreter
                [sys.executable, "-c", code],
                env={**os.environ, "PYTHONHASHSEED": seed},
                capture_output=True,
                text=True,
                check=True,
                timeout=60,
            ).stdout
            assert out.strip() == str([pinned[u][1] for u in sorted(pinned)])

    @pytest.mark.parametrize("count", [2, 3, 4, 8])
    def test_balanced(self, count: int) -> None:
        """10,000 units spread evenly: every shard within 10 % of its fair share."""
        load = Counter(owner(u, count) for u in MANY)
        fair = len(MANY) / count
        assert set(load) == set(range(count))
        assert all(abs(n - fair) < 0.1 * fair for n in load.values()), load

    @pytest.mark.parametrize("count", [1, 2, 4, 9])
    def test_adding_an_instance_moves_few_units(self, count: int) -> None:
        """From n to n + 1 shards only units the new shard wins move (about 1/(n+1) of
        them); no unit moves between the old shards."""
        moved = [u for u in MANY if owner(u, count) != owner(u, count + 1)]
        assert all(owner(u, count + 1) == count for u in moved)
        share = len(moved) / len(MANY)
        assert abs(share - 1 / (count + 1)) < 0.03, share

    def test_bad_count(self) -> None:
        """owner() refuses a count no Shard could have."""
        with pytest.raises(ShardError):
            owner("ward1", 0)


class TestUnitLists:
    def test_parse_units(self) -> None:
        """Comma-separated, spaces and repeats dropped, order kept; empty means all."""
        assert parse_units("ward7, ward8,,ward7 ") == ("ward7", "ward8")
        assert parse_units("") == ()
        assert parse_units(" , ") == ()

    @pytest.mark.parametrize("text", ["ward7,ward/8", "icu+", "#", "w" * 65, "ward 7"])
    def test_parse_units_rejects(self, text: str) -> None:
        """A unit id that could not be a topic level (or would be a wildcard) is refused."""
        with pytest.raises(ShardError, match=r"\[A-Za-z0-9_-\]\{1,64\}"):
            parse_units(text)

    def test_owned_units(self) -> None:
        """The listed units a shard owns, in listed order; all of them without a shard."""
        listed = ("ward1", "ward2", "ward3", "ward4")
        assert owned_units(listed, None) == listed
        zero, one = owned_units(listed, Shard(0, 2)), owned_units(listed, Shard(1, 2))
        assert zero == ("ward1", "ward4")
        assert one == ("ward2", "ward3")

    def test_serves(self) -> None:
        """The per-message predicate: None for everything, else the owned units only."""
        assert serves((), None) is None
        listed = serves(("ward1", "ward2"), None)
        assert listed is not None
        assert (listed("ward1"), listed("ward2"), listed("ward9")) == (True, True, False)
        narrowed = serves(("ward1", "ward2"), Shard(1, 2))
        assert narrowed is not None
        assert (narrowed("ward1"), narrowed("ward2"), narrowed("ward4")) == (False, True, False)
        hashed = serves((), Shard(0, 2))
        assert hashed is not None
        assert [hashed(u) for u in ("ward1", "ward2", "ward4", "anything")] == [
            owns(u, Shard(0, 2)) for u in ("ward1", "ward2", "ward4", "anything")
        ]
