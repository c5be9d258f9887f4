"""The long fuzz run, by hand: the CI properties with many more examples, or atheris.

    python scripts/fuzz.py [--examples 20000] [--seconds 600] [--tolerate-known] [--only core]
    python scripts/fuzz.py --atheris [--seconds 600]

Hypothesis mode (default) runs the properties of ``tests/core/test_core_fuzz.py``
(core interleavings) and ``tests/apps/test_replay_fuzz.py`` (replay lines) with
``--examples`` examples per property (``STREAMPROC_FUZZ_EXAMPLES``), stopping after
``--seconds`` (pytest-timeout is not needed: each property is run in turn and the
run stops when time is up). ``--tolerate-known`` lets the core property record
the known alarm-id reuse bug instead of stopping at it, so that the long run can
look for other bugs.

Atheris mode (``pip install atheris``) fuzzes the recording-line path with
coverage guidance: arbitrary bytes go to ``Replayer.feed_line`` (which must
never raise), and are also split as ``topic\\0payload`` into
``parse_inbound`` + ``decode`` (which may raise only ``CodecError``).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PROPERTIES = (
    "tests/apps/test_replay_fuzz.py::test_feed_line_never_raises_and_counts",
    "tests/apps/test_replay_fuzz.py::test_garbage_between_valid_lines_changes_nothing",
    "tests/core/test_core_fuzz.py::test_core_under_random_interleavings",
)


def run_hypothesis(
    examples: int, seconds: float, tolerate: bool, properties: tuple[str, ...] = PROPERTIES
) -> int:
    counts = Path(tempfile.gettempdir()) / f"streamproc-fuzz-counts-{os.getpid()}.txt"
    counts.unlink(missing_ok=True)
    env = dict(
        os.environ, STREAMPROC_FUZZ_EXAMPLES=str(examples), STREAMPROC_FUZZ_COUNTS=str(counts)
    )
    if tolerate:
        env["STREAMPROC_FUZZ_TOLERATE_ID_REUSE"] = "1"
    t_end = time.monotonic() + seconds
    worst = 0
    # share the time: the core property (slowest) gets what the others leave
    for i, prop in enumerate(properties):
        left = t_end - time.monotonic()
        if left <= 0:
            print(f"fuzz: out of time before {prop}")
            break
        budget = left / (len(properties) - i) if i < len(properties) - 1 else left
        t0 = time.monotonic()
        cmd = [
            sys.executable,
            "-m",
            "pytest",
            prop,
            "-q",
            "-p",
            "no:cacheprovider",
            "--hypothesis-show-statistics",
            "-W",
            "ignore::DeprecationWarning",
        ]
        print(f"fuzz: {prop}: up to {examples} examples, {budget:.0f} s", flush=True)
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env)  # noqa: S603 (our own argv)
        try:
            rc = proc.wait(timeout=budget)
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGINT)  # pytest stops, atexit writes the counts
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            rc = 0
            print(f"fuzz: {prop}: time budget reached (no failure so far)", flush=True)
        print(f"fuzz: {prop}: rc {rc}, {time.monotonic() - t0:.0f} s", flush=True)
        worst = max(worst, rc)
    if counts.exists():
        totals: dict[str, int] = {}
        for row in counts.read_text(encoding="utf-8").split("\n"):
            if row.strip():
                name, n = row.rsplit(" ", 1)
                totals[name] = totals.get(name, 0) + int(n)
        counts.unlink()
        for name, n in sorted(totals.items()):
            print(f"fuzz: examples run: {name}: {n}", flush=True)
    return worst


def run_atheris(seconds: float, tolerate: bool = False) -> int:
    import atheris  # noqa: PLC0415 (optional dependency)

    with atheris.instrument_imports():
        from streamproc.apps.replay import Replayer  # noqa: PLC0415
        from streamproc.shell.config import load_config  # noqa: PLC0415
        from streamproc.wire.codec import CodecError, decode  # noqa: PLC0415
        from streamproc.wire.topics import parse_inbound  # noqa: PLC0415

    config = load_config(environ={})
    sink: list[bytes] = []
    rp = Replayer(config, sink.append)

    def one(data: bytes) -> None:
        before = rp.summary.lines
        try:
            rp.feed_line(data)  # must never raise
        except UnicodeDecodeError:
            # known bug (docs/fuzzing.md, bug 3): invalid UTF-8 in the record's strings
            if not tolerate:
                raise
            rp.summary.rejected["known_unicode_bug"] += 1
        s = rp.summary
        if sum(s.messages.values()) + sum(s.rejected.values()) != s.lines or s.lines - before > 1:
            raise AssertionError(f"replay summary out of step after {data!r}")
        sink.clear()
        topic, _, payload = data.partition(b"\0")
        try:
            t = parse_inbound(topic.decode("utf-8", "replace"))
            decode(t.kind, payload)
        except CodecError:
            pass

    # seed corpus: real recording lines (one per kind), else the fuzzer never gets
    # past the JSON record and the topic
    from simulators.scenario import load_scenario, render, scenario_dir  # noqa: PLC0415

    corpus = Path(tempfile.mkdtemp(prefix="streamproc-atheris-"))
    seen: set[str] = set()
    for name in ("ne_60_40", "ne_vasopressin_60_40", "recovery"):
        for rec in render(load_scenario(scenario_dir() / f"{name}.toml")):
            kind = rec["topic"].rsplit("/", 1)[-1]
            if kind in seen and kind != "abp":
                continue
            seen.add(kind)
            line = json.dumps(rec).encode()
            (corpus / f"{name}-{kind}-{len(seen)}").write_bytes(line)
            (corpus / f"{name}-{kind}-{len(seen)}.split").write_bytes(
                rec["topic"].encode() + b"\0" + json.dumps(rec["payload"]).encode()
            )
            if len(list(corpus.iterdir())) > 40:
                break
    argv = [
        sys.argv[0],
        f"-max_total_time={int(seconds)}",
        "-print_final_stats=1",
        "-max_len=8192",
        f"-artifact_prefix={corpus}/",
        str(corpus),
    ]
    atheris.Setup(argv, one)
    atheris.Fuzz()
    return 0


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--examples", type=int, default=20_000)
    p.add_argument("--seconds", type=float, default=600.0)
    p.add_argument("--tolerate-known", action="store_true")
    p.add_argument("--atheris", action="store_true")
    p.add_argument("--only", help="run only the properties whose name contains this")
    a = p.parse_args()
    t0 = time.monotonic()
    props = tuple(x for x in PROPERTIES if a.only is None or a.only in x)
    if a.atheris:
        rc = run_atheris(a.seconds, a.tolerate_known)
    else:
        rc = run_hypothesis(a.examples, a.seconds, a.tolerate_known, props)
    print(f"fuzz: done in {time.monotonic() - t0:.0f} s, rc {rc}", flush=True)
    return rc


if __name__ == "__main__":
    raise SystemExit(main())
