"""The replay's fast paths give what the general path gives, line for line.

``Replayer.feed_line`` reads a line by ``codec.read_record`` (an ``abp`` line's
samples by the compiled kernel, from the line's bytes; the exact read whenever
the kernel is unsure). ``Replayer.feed_lines`` (what ``replay_lines`` runs) goes
further: the samples of the chunk lines between two ticks are read into one array
(``codec.read_chunk_row``) and taken by the engine in one call
as the chunk rows of one batch (``Engine.receive``). Here the same lines go through all three ways
(batches; one line at a time; one line at a time with the kernel switched
off): the output lines and the summary must be the same, byte for byte and
count for count, valid or hostile.
"""

from __future__ import annotations

import dataclasses
import json
import random
from functools import cache
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from simulators.scenario import load_scenario, merge, scenario_dir, to_jsonl
from streamproc.apps import replay
from streamproc.apps.replay import Replayer, ReplaySummary, replay_lines
from streamproc.core.engine import Batch, Engine
from streamproc.shell.config import load_config
from streamproc.wire import codec
from tests.apps.test_replay_fuzz import arbitrary_line, valid_lines
from tests.fuzzing import fuzz_settings

Result = tuple[list[bytes], dict[str, Any]]


def _summary(s: ReplaySummary) -> dict[str, Any]:
    d = {f.name: getattr(s, f.name) for f in dataclasses.fields(s) if f.name != "elapsed_s"}
    for key in ("messages", "rejected", "alarms"):
        d[key] = sorted(d[key].items())  # a zero count is a difference too
    return d


def _replay(lines: list[bytes], *, way: str = "batch", **overrides: Any) -> Result:
    """``lines`` replayed one ``way``: ``batch`` (``replay_lines``), ``batch_always`` (the
    same, batches from the first bed on), ``line`` (``feed_line`` on each) or ``general``
    (``feed_line`` with the kernel switched off: the codec's exact read)."""
    out: list[bytes] = []
    config = load_config(environ={}, overrides=overrides)
    if way == "batch":
        return out, _summary(replay_lines(lines, config, out.append))
    with pytest.MonkeyPatch.context() as mp:
        if way == "batch_always":
            mp.setattr(replay, "BATCH_MIN_BEDS", 0)
            return out, _summary(replay_lines(lines, config, out.append))
        if way == "general":
            mp.setattr(codec, "_parse_samples", lambda doc, max_n: None)
        rp = Replayer(config, out.append)
        for line in lines:
            rp.feed_line(line)
        return out, _summary(rp.finish())


def assert_same(lines: list[bytes], **overrides: Any) -> Result:
    batch = _replay(lines, way="batch", **overrides)
    general = _replay(lines, way="general", **overrides)
    assert batch == general
    assert _replay(lines, way="batch_always", **overrides) == general
    assert _replay(lines, way="line", **overrides) == general
    return batch


@cache
def ward() -> tuple[bytes, ...]:
    """Every shipped scenario in one ward (a bed each)."""
    beds = [
        dataclasses.replace(load_scenario(path), bed=f"bed{i:02d}")
        for i, path in enumerate(sorted(scenario_dir().glob("*.toml")))
    ]
    return tuple(to_jsonl(merge(*beds)).splitlines())


#: The ways of :func:`_hostile` that write the line's bytes themselves.
_RAW_WAYS = frozenset({2, 11, 12, 13, 14, 15, 17, 18, 19, 21})


def _hostile(rnd: random.Random, line: bytes) -> bytes:
    """One valid ``abp`` line made wrong in one of the ways the fast path must hand over."""
    rec = json.loads(line)
    choice = rnd.randrange(22)
    if choice in _RAW_WAYS:
        return _hostile_bytes(rnd, choice, line, rec)
    _hostile_record(rnd, choice, rec)
    return json.dumps(rec, ensure_ascii=choice != 16).encode()


def _hostile_record(rnd: random.Random, choice: int, rec: dict[str, Any]) -> None:
    """The ways of :func:`_hostile` that change the decoded record (then written as JSON)."""
    p = rec["payload"]
    s = p["samples"]
    if choice == 0:
        p["samples"] = []
    elif choice == 1:
        s[rnd.randrange(len(s))] = rnd.choice([None, True, "1", [1], 600.0, -101.0, 2**70])
    elif choice == 3:
        p["samples"] = s * 241  # more than service.max_samples
    elif choice == 4:
        p["seq"] = rnd.choice([0, 7, -1, 2**63 - 1, 2**63, True, "3", 1.5])
    elif choice == 5:
        p["fs"] = rnd.choice([0, 0.5, 2000, 2000.5, "125", None])
    elif choice == 6:
        p["t0"] = rnd.choice([0, "x", None, p["t0"] - 300, p["t0"] + 1e8])
    elif choice == 7:
        del p[rnd.choice(["t0", "fs", "samples"])]
    elif choice == 8:
        rec["payload"] = json.dumps(p)  # a raw string payload
    elif choice == 9:
        rec["topic"] = rec["topic"].rsplit("/", 1)[0] + "/" + rnd.choice(["vitals", "x", "ack"])
    elif choice == 10:
        rec["topic"] = rnd.choice(["icu/+/b/abp", "icu/w/b/c/abp", "ICU/w/b/abp", "icu/w//abp"])
    elif choice == 16:
        p["note"] = "caf\u00e9"  # UTF-8, not ASCII (written with ensure_ascii=False)
    else:  # 20
        p["samples"] = s[: rnd.choice([1, 2, 60])] * rnd.choice([1, 3])


def _hostile_bytes(rnd: random.Random, choice: int, line: bytes, rec: dict[str, Any]) -> bytes:
    """The ways of :func:`_hostile` that write wrong bytes (not a re-encoded record)."""
    if choice == 2:
        return line.replace(b'"samples":[', b'"samples":[1e400,', 1)
    if choice == 11:  # duplicate keys: the last one counts
        return line[:-1] + b',"payload":{"t0":1732400000,"fs":125,"samples":[80,81]}}'
    if choice == 12:
        return line[:-1] + b',"payload":"x"}'
    if choice == 13:
        return line.replace(b'"payload":', b'"payload":"x","payload":', 1)
    if choice == 14:
        return line.replace(b'"payload":{', b'"payload":{"x":' + b"[" * 500 + b"]" * 500 + b",", 1)
    if choice == 15:
        return line.replace(b'"payload":{', b'"payload":{"note":"\xc0\xaf",', 1)  # not UTF-8
    if choice == 17:
        return b" \x0c" + line + b"\r"
    if choice == 18:
        return line[: rnd.randrange(len(line))]
    if choice == 19:
        return line.replace(b'"samples":[', b'"samples":[' + b"1.0," * 70_000, 1)  # too large
    p = rec["payload"]  # 21: the payload before the topic
    return b'{"payload":' + json.dumps(p).encode() + b',"topic":"' + rec["topic"].encode() + b'"}'


def _mixed(seed: int) -> list[bytes]:
    rnd = random.Random(seed)
    lines = list(ward())
    abp = [x for x in lines if b'/abp"' in x]
    for _ in range(len(lines) // 3):
        lines.insert(rnd.randrange(len(lines) + 1), _hostile(rnd, rnd.choice(abp)))
    return lines


def test_ward_is_the_same_and_takes_the_fast_path() -> None:
    """Every ``abp`` line is read by the kernel; all but a bed's first go in batches."""
    lines = list(ward())
    out, summary = assert_same(lines)
    assert out
    assert summary["rejected"] == []
    by_kernel: list[bool] = []
    batched: list[int] = []
    real = codec._abp_chunk  # noqa: SLF001 - spied on: the kernel route's own entry
    real_batch = Engine.receive

    def spy(*args: Any) -> Any:
        chunk = real(*args)
        by_kernel.append(chunk is not None)
        return chunk

    def spy_batch(engine: Engine, batch: Batch) -> Any:
        if batch.ends:  # (chunk rows: not a message taken alone)
            batched.append(len(batch.ends))
        return real_batch(engine, batch)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(codec, "_abp_chunk", spy)
        mp.setattr(Engine, "receive", spy_batch)
        replay_lines(lines, load_config(environ={}), [].append)
    n_abp = sum(1 for x in lines if b'/abp"' in x)
    # every chunk line read by the kernel (from the line's bytes): line by line until
    # the ward has BATCH_MIN_BEDS beds (and a topic's first line), then in batches
    assert all(by_kernel)
    assert sum(batched) + len(by_kernel) == n_abp + 1  # (and the warm-up's chunk)
    assert sum(batched) > 0.9 * n_abp
    assert len(batched) < sum(batched) / 3  # batches, not lines one by one


def test_few_beds_go_line_by_line(monkeypatch: pytest.MonkeyPatch) -> None:
    """Below ``BATCH_MIN_BEDS`` beds a batch per tick would hold a chunk or two: none is made."""
    lines = [x for x in ward() if b"/bed00/" in x or b"/bed01/" in x]
    calls: list[int] = []
    real = Engine.receive

    def spy(engine: Engine, batch: Batch) -> Any:
        calls.append(len(batch.ends))  # (its chunk rows)
        return real(engine, batch)

    monkeypatch.setattr(Engine, "receive", spy)
    out: list[bytes] = []
    summary = replay_lines(lines, load_config(environ={}), out.append)
    assert summary.messages["abp"] > 100
    assert sum(calls) == 0


@pytest.mark.parametrize("seed", range(3))
def test_hostile_lines_same_results(seed: int) -> None:
    _, summary = assert_same(_mixed(seed))
    codes = dict(summary["rejected"])  # [(code, count), ...]
    for code in ("bad_line", "bad_topic", "out_of_range", "too_large", "wrong_type"):
        assert codes.get(code, 0) > 0, codes


@pytest.mark.parametrize(
    "overrides",
    [
        {"service.max_payload_bytes": 800},  # some abp lines over, their payloads under
        {"service.max_samples": 100},
        {"service.tick_s": 2.5},
    ],
    ids=["max_bytes", "max_samples", "tick_s"],
)
def test_limits_same_results(overrides: dict[str, Any]) -> None:
    assert_same(_mixed(7), **overrides)


def test_out_of_order_and_far_future_same_results() -> None:
    """The ticking (skipped when no tick is due) is the same with time going back and forth."""
    rnd = random.Random(3)
    lines = []
    for line in ward():
        rec = json.loads(line)
        p = rec["payload"]
        if "t0" in p and rnd.random() < 0.1:
            p["t0"] += rnd.choice([-400.0, -1.5, 0.25, 31.0, 90.0, 3 * 86400.0])
        lines.append(json.dumps(rec).encode())
    assert_same(lines)


@fuzz_settings(60)
@given(st.lists(st.one_of(st.sampled_from(valid_lines()), arbitrary_line), max_size=30))
def test_fuzz_same_results(lines: list[bytes]) -> None:
    assert_same(lines)


def test_too_deep_line_is_counted_not_raised() -> None:
    """A line nested beyond msgspec's limit escaped ``feed_line`` as RecursionError."""
    deep = b'{"topic":"icu/w/b/abp","payload":{"x":' + b"[" * 5000 + b"]" * 5000 + b"}}"
    rp = Replayer(load_config(environ={}), [].append)
    rp.feed_line(deep)
    rp.feed_line(b'{"x":' + b"[" * 5000 + b"]" * 5000 + b"}")
    assert rp.summary.rejected == {"too_deep": 2}
    assert rp.summary.lines == 2


def test_topic_cache_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    lines = list(ward())
    ref = _replay(lines)
    monkeypatch.setattr(replay, "TOPIC_CACHE_MAX", 3)
    out: list[bytes] = []
    rp = Replayer(load_config(environ={}), out.append)
    sizes = []
    for line in lines:
        rp.feed_line(line)
        sizes.append(len(rp._topics))  # noqa: SLF001 - the cache's bound is the point
    assert max(sizes) <= 3
    assert (out, _summary(rp.finish())) == ref
