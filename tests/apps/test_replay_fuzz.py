"""Hypothesis: ``Replayer.feed_line`` never raises, counts every bad line, and garbage between
valid lines does not change the alarms.

(The codec's own payload fuzz is in ``tests/wire/test_codec.py``; here it is the whole
line path: JSON Lines record, topic, payload, engine, output.)
"""

from __future__ import annotations

import json
from functools import cache
from typing import Any

from hypothesis import example, given
from hypothesis import strategies as st

from simulators.scenario import load_scenario, render, scenario_dir, to_jsonl
from streamproc.apps.replay import Replayer
from streamproc.shell.config import load_config
from tests.fuzzing import count_example, fuzz_settings

KINDS = ("abp", "vitals", "infusion", "patient", "labs", "ack")


@cache
def valid_lines() -> tuple[bytes, ...]:
    """The 60/40 scenario on norepinephrine, as recording lines (first 90 s)."""
    lines = to_jsonl(render(load_scenario(scenario_dir() / "ne_60_40.toml"))).splitlines()
    return tuple(lines[:150])


@cache
def clean_output() -> tuple[bytes, ...]:
    out, rp = replay(list(valid_lines()))
    assert sum(rp.summary.rejected.values()) == 0
    return tuple(out)


def replay(lines: list[bytes]) -> tuple[list[bytes], Replayer]:
    out: list[bytes] = []
    rp = Replayer(load_config(environ={}), out.append)
    for line in lines:
        rp.feed_line(line)
    rp.finish()
    return out, rp


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats() | st.text(max_size=20),
    lambda kids: (
        st.lists(kids, max_size=5) | st.dictionaries(st.text(max_size=8), kids, max_size=5)
    ),
    max_leaves=20,
)

topics = st.one_of(
    st.builds(lambda k: f"icu/ward7/bed03/{k}", st.sampled_from(KINDS)),
    st.builds(
        lambda u, b, k: f"icu/{u}/{b}/{k}",
        st.text(max_size=10),
        st.text(max_size=10),
        st.text(max_size=10),
    ),
    st.text(max_size=40),
    st.sampled_from(("icu/+/bed03/abp", "icu/#", "icu/ward7/bed03/alarms/hypotension", "")),
)


def _corrupt_payload(base: dict[str, Any], key: str, value: Any, drop: bool) -> dict[str, Any]:
    p = dict(base)
    if drop:
        p.pop(key, None)
    else:
        p[key] = value
    return p


@st.composite
def corrupted_valid_line(draw: st.DrawFn) -> bytes:
    """A valid line whose payload has one field made wrong (or removed)."""
    rec = json.loads(draw(st.sampled_from(valid_lines())))
    payload = rec["payload"]
    key = draw(st.sampled_from(sorted(payload)))
    bad = draw(
        st.one_of(
            st.sampled_from(
                (None, "x", True, [], {}, -1, 0, 1e400, -1e400, 1e308, "NaN", [None], [1, "2"])
            ),
            json_values,
        )
    )
    drop = draw(st.booleans())
    rec["payload"] = _corrupt_payload(payload, key, bad, drop)
    if draw(st.booleans()):
        rec["payload"] = json.dumps(rec["payload"], allow_nan=True)  # raw string payload
    return json.dumps(rec, allow_nan=True).encode()


@st.composite
def mutated_valid_line(draw: st.DrawFn) -> bytes:
    """A valid line with a few bytes overwritten or inserted (any byte values)."""
    line = bytearray(draw(st.sampled_from(valid_lines()))[:400])
    for _ in range(draw(st.integers(1, 4))):
        pos = draw(st.integers(0, len(line)))
        junk = draw(st.binary(min_size=1, max_size=8))
        if draw(st.booleans()):
            line[pos:pos] = junk
        else:
            line[pos : pos + len(junk)] = junk
    return bytes(line)


arbitrary_line = st.one_of(
    st.binary(max_size=200),
    mutated_valid_line(),
    st.builds(lambda v: json.dumps(v, allow_nan=True).encode(), json_values),
    st.builds(
        lambda t, p: json.dumps({"topic": t, "payload": p}, allow_nan=True).encode(),
        topics,
        json_values,
    ),
    st.builds(
        lambda t, p: json.dumps({"topic": t, "payload": p}).encode(),
        topics,
        st.text(max_size=60),
    ),
    corrupted_valid_line(),
)


def is_rejected_alone(line: bytes) -> bool:
    """Would this line, fed to a fresh replayer, be rejected (not counted as a message)?"""
    try:
        _, rp = replay([line])
    except Exception:  # noqa: BLE001 (a line that raises is test_feed_line_never_raises's)
        return False
    s = rp.summary
    return sum(s.messages.values()) == 0 and (sum(s.rejected.values()) == 1 or s.lines == 0)


@fuzz_settings(100)
@given(st.lists(arbitrary_line, min_size=1, max_size=20))
# BUG found by atheris (scripts/fuzz.py --atheris): invalid UTF-8 inside a JSON string of
# the *record* (topic, or a raw-string payload) escapes feed_line as UnicodeDecodeError
# (msgspec raises it, not DecodeError); inside an object payload it is rejected as not_utf8.
@example(lines=[b'{"topic": "\xc0", "payload": {}}'])
@example(lines=[b'{"topic": "icu/w/b/labs", "payload": "\xc0"}'])
def test_feed_line_never_raises_and_counts(lines: list[bytes]) -> None:
    """Any bytes: no exception; every non-empty line is a message or one rejection."""
    count_example("replay_feed_line")
    out, rp = replay(lines)
    s = rp.summary
    assert s.lines == sum(1 for x in lines if x.strip())
    assert sum(s.messages.values()) + sum(s.rejected.values()) == s.lines
    for line in out:
        json.loads(line)


@fuzz_settings(60)
@given(st.data())
def test_garbage_between_valid_lines_changes_nothing(data: st.DataObject) -> None:
    """Bad lines interleaved with a recording: each is rejected; the alarms are unchanged."""
    count_example("replay_garbage_between_valid")
    valid = list(valid_lines())
    garbage = data.draw(
        st.lists(
            st.tuples(st.integers(0, len(valid)), arbitrary_line.filter(is_rejected_alone)),
            max_size=12,
        )
    )
    mixed = list(valid)
    for pos, junk in sorted(garbage, key=lambda g: -g[0]):
        mixed.insert(pos, junk)
    out, rp = replay(mixed)
    n_junk = sum(1 for _, j in garbage if j.strip())
    assert sum(rp.summary.rejected.values()) == n_junk
    assert tuple(out) == clean_output()


def test_one_far_future_line_costs_bounded_work() -> None:
    """BUG (found when the atheris run hung): one line whose (valid) ``ts`` lies years ahead
    makes ``Replayer._tick`` tick the engine at every ``tick_s`` of the jump.

    ``_tick`` loops ``while now >= self._next_tick``: a jump of ``D`` seconds costs
    ``D / tick_s`` engine ticks (~0.7 s of CPU per 10^6 s) and, once the bed is
    stale, one ``data_stale`` re-announcement per 120 s of the jump. A single
    corrupt line dated 2199 (inside the contract's range) hangs a replay for about
    an hour and writes ~46 million alarm lines. Here the emitter gives up after
    1000 lines (ten years ahead would be ~2.6 million).
    """
    out: list[bytes] = []

    def emit(line: bytes) -> None:
        out.append(line)
        if len(out) > 1000:
            raise AssertionError("one far-future line produced more than 1000 alarm lines")

    rp = Replayer(load_config(environ={}), emit)
    base = 1_732_400_000.0
    for ts in (base, base + 10 * 365 * 86400.0):
        payload = {"ts": ts, "source": "nibp", "sbp": 120, "dbp": 70}
        rp.feed_line(json.dumps({"topic": "icu/w/b/vitals", "payload": payload}).encode())
    assert len(out) <= 1000
