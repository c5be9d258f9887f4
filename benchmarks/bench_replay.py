"""Replay engine throughput: samples per second on one core, over a long multi-bed recording.

    python benchmarks/bench_replay.py [--beds 20] [--minutes 30] [--chunk-s 1] [--repeat 3]

Builds a recording with the simulator (scenarios mixed over the beds), then
times, in one run and on the same bytes:

- baseline: decoding every line (msgspec) and nothing else, the floor any
  replay pays for reading JSON;
- replay: ``streamproc replay``'s whole path (decode, validate, beats, monitor,
  alarms, output lines).

Prints the medians of ``--repeat`` runs, the ratio replay / baseline and the
target (10 M samples/s; printed as met / NOT MET, never the exit status).
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import time
from pathlib import Path

import msgspec

from simulators.scenario import load_scenario, merge, scenario_dir, to_jsonl
from streamproc.apps.replay import replay_lines
from streamproc.shell.config import load_config

#: Issue 7: the replay engine's rate on one core.
TARGET = 10e6
SCENARIOS = ("ne_60_40", "recovery", "artifacts", "transient_dip", "ne_vasopressin_60_40")


def build(beds: int, minutes: float, chunk_s: float) -> bytes:
    scenarios = []
    for i in range(beds):
        base = load_scenario(scenario_dir() / f"{SCENARIOS[i % len(SCENARIOS)]}.toml")
        dur = minutes * 60.0
        # stretch the scenario: its last pressure knot holds to the end
        last = base.knots[-1]
        knots = (*base.knots, (dur, last[1], last[2], last[3]))
        scenarios.append(
            dataclasses.replace(
                base, bed=f"bed{i:03d}", seed=i, duration_s=dur, knots=knots, chunk_s=chunk_s
            )
        )
    return to_jsonl(merge(*scenarios))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--beds", type=int, default=20)
    parser.add_argument("--minutes", type=float, default=30.0)
    parser.add_argument("--chunk-s", type=float, default=1.0)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--save", help="also write the recording here")
    args = parser.parse_args()

    t = time.perf_counter()
    data = build(args.beds, args.minutes, args.chunk_s)
    lines = data.splitlines()
    print(
        f"recording: {args.beds} beds x {args.minutes:g} min, {len(lines):,} lines, "
        f"{len(data) / 1e6:.1f} MB, built in {time.perf_counter() - t:.1f} s"
    )
    if args.save:
        Path(args.save).write_bytes(data)

    decoder = msgspec.json.Decoder()
    config = load_config(environ={})
    base_times, replay_times = [], []
    samples = 0
    alarms = 0
    for _ in range(args.repeat):
        t = time.perf_counter()
        for line in lines:
            decoder.decode(line)
        base_times.append(time.perf_counter() - t)
        out: list[bytes] = []
        t = time.perf_counter()
        summary = replay_lines(lines, config, out.append)
        replay_times.append(time.perf_counter() - t)
        samples, alarms = summary.samples, len(out)
    base = statistics.median(base_times)
    rep = statistics.median(replay_times)
    print(f"samples: {samples:,}; alarm messages: {alarms}")
    print(
        f"baseline (JSON decode only): median {base:.2f} s = {samples / base / 1e6:.2f} M samples/s"
    )
    print(
        f"replay (whole engine):       median {rep:.2f} s = {samples / rep / 1e6:.2f} M samples/s"
    )
    print(
        f"ratio replay/baseline time: {rep / base:.2f}x "
        f"(replay runs at {base / rep:.0%} of the decode-only rate)"
    )
    rate = samples / rep
    verdict = "met" if rate >= TARGET else "NOT MET"
    print(f"target >= {TARGET / 1e6:g} M samples/s per core: {verdict} ({rate / 1e6:.2f} M)")


if __name__ == "__main__":
    main()
