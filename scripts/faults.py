#!/usr/bin/env python3
"""Run each fault of ``tests/system/faults`` N times and print/write the reliability table.

    python scripts/faults.py --repeat 3 [--stall-s 30] [--out docs/reliability-table.md]
    python scripts/faults.py --only broker_kill stall --repeat 10
    python scripts/faults.py --only kill_random --repeat 50 [--seed 100]

Each run starts its own Mosquitto (free port, temp dir) and its own ``streamproc run``;
the fault bodies are :mod:`tests.system.faults.harness` (the same code the tests run). The table:
fault | tries | alarms expected | lost | duplicate ids | false cleared | recovery median /
max. The faults that kill or stop a process at a random instant draw it from a seeded
generator (run i: seed ``--seed`` + i), so a failing run can be repeated. Exit status 1
if any run lost an alarm, duplicated an id, cleared one falsely, or hit a problem (listed).
"""

from __future__ import annotations

import argparse
import inspect
import shutil
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from tests.system.faults.harness import FAULTS, FaultResult, markdown_table  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=3, help="runs per fault (default 3)")
    parser.add_argument("--stall-s", type=float, default=30.0, help="broker SIGSTOP length")
    parser.add_argument("--out", type=Path, help="also write the markdown table here")
    parser.add_argument("--only", nargs="+", choices=sorted(FAULTS), help="these faults only")
    parser.add_argument("--keep", action="store_true", help="keep each run's work directory")
    parser.add_argument(
        "--seed",
        type=int,
        default=0,
        help="first seed of the faults that draw a random instant (run i uses seed + i)",
    )
    args = parser.parse_args(argv)
    if args.repeat < 1:
        parser.error("--repeat must be >= 1")

    names = args.only or list(FAULTS)
    results: dict[str, list[FaultResult]] = {name: [] for name in names}
    started = time.monotonic()
    for i in range(args.repeat):
        for name in names:
            workdir = Path(tempfile.mkdtemp(prefix=f"fault-{name}-"))
            kwargs: dict[str, float | int] = {"stall_s": args.stall_s} if name == "stall" else {}
            if "seed" in inspect.signature(FAULTS[name]).parameters:
                kwargs["seed"] = args.seed + i  # a new random instant per run, reproducible
            t = time.monotonic()
            try:
                res = FAULTS[name](workdir, **kwargs)
            finally:
                if not args.keep:
                    shutil.rmtree(workdir, ignore_errors=True)
            results[name].append(res)
            status = "ok " if res.ok else "FAIL"
            print(
                f"[{i + 1}/{args.repeat}] {status} {time.monotonic() - t:5.1f}s {res.summary()}",
                flush=True,
            )
            if not res.ok and args.keep:
                print(f"    work directory kept: {workdir}", flush=True)

    table = markdown_table(results)
    elapsed = time.monotonic() - started
    only = f" --only {' '.join(args.only)}" if args.only else ""
    seed = f" --seed {args.seed}" if args.seed else ""
    header = (
        f"`python scripts/faults.py --repeat {args.repeat} --stall-s {args.stall_s:g}{only}{seed}` "
        f"({elapsed / 60:.1f} min, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())})\n\n"
    )
    print("\n" + header + table)
    failures = [r for runs in results.values() for r in runs if not r.ok]
    for res in failures:
        print(f"FAILED: {res.summary()}")
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(header + table)
    return 1 if failures else 0


if __name__ == "__main__":
    raise SystemExit(main())
