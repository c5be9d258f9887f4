"""The command ``streamproc evaluate``: its options, and the run from inputs to tables and files.

What is scored and how is :mod:`streamproc.apps.evaluation.evaluate`; the truth is
:mod:`streamproc.apps.evaluation.truth`; the HTML report and figures are
:mod:`streamproc.apps.evaluation.report` (matplotlib imported only when drawing).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import msgspec

from streamproc.apps.evaluation.agreement import Agreement, agreement_table, record_agreement
from streamproc.apps.evaluation.evaluate import (
    DEFAULT_TOLERANCE_S,
    evaluate,
    format_tables,
    load_inputs,
    parse_sweep,
    sweep,
    toml_kind,
)
from streamproc.apps.evaluation.report import write_figures, write_report
from streamproc.apps.evaluation.truth import EvaluateError, Recording, load_labels, resolve_record
from streamproc.shell.config import ConfigError, StreamprocConfig, load_config

__all__ = ["add_arguments", "run_command"]


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The options of ``streamproc evaluate``."""
    p.add_argument(
        "inputs",
        nargs="+",
        metavar="DIR|FILE",
        help="recordings with truth: NAME.jsonl (+ NAME.truth.json), scenario or labels "
        "TOML files, or directories of them",
    )
    p.add_argument("--config", help="TOML settings file (defaults: the protocol's)")
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override one setting, e.g. --set hypotension.hold_s=90 (repeatable)",
    )
    p.add_argument(
        "--sweep",
        metavar="KEY=V1,V2,...",
        help="what-if: run again under each value of one numeric setting "
        "(section.key or a unique key), e.g. --sweep hold_s=30,60,120",
    )
    p.add_argument(
        "--labels",
        action="append",
        default=[],
        metavar="FILE",
        help="labels TOML used as the truth of .jsonl recordings that have no sidecar",
    )
    p.add_argument(
        "--tolerance",
        type=float,
        default=DEFAULT_TOLERANCE_S,
        metavar="S",
        help="an alarm this close before/after an episode belongs to it (default %(default)g s)",
    )
    p.add_argument(
        "--min-episode",
        type=float,
        metavar="S",
        help="scenario truth: below target for at least this long is an episode "
        "(default: the protocol's hold, 60 s)",
    )
    p.add_argument("--report", metavar="FILE.html", help="write a self-contained HTML report")
    p.add_argument("--png-dir", metavar="DIR", help="also write each bed's figure as a PNG")
    p.add_argument(
        "--max-figures",
        type=int,
        default=40,
        metavar="N",
        help="at most N figures (beds with misses or false alarms first; default %(default)s)",
    )
    p.add_argument("--json", metavar="FILE", help="write every figure as JSON")
    p.add_argument(
        "--progress",
        action="store_true",
        help="show a progress bar (default: when stderr is a TTY)",
    )


def _err(text: str) -> None:
    sys.stderr.write(f"streamproc: evaluate: {text}\n")


def run_command(args: argparse.Namespace) -> int:
    """``streamproc evaluate``: exit 0 done, 2 bad options or input."""
    try:
        config = load_config(args.config, assignments=args.set)
        sweep_spec = parse_sweep(args.sweep, config) if args.sweep else None
        recordings = load_inputs(
            args.inputs,
            labels=args.labels,
            min_episode_s=args.min_episode,
            root=config.service.root,
        )
    except (ConfigError, EvaluateError) as exc:
        _err(str(exc))
        return 2
    drawing = bool(args.report or args.png_dir)
    total = len(recordings) * (1 + (len(sweep_spec[1]) if sweep_spec else 0))
    show = args.progress or sys.stderr.isatty()
    with _ProgressBar(show, total) as advance:
        try:
            ev = evaluate(
                recordings,
                config,
                tolerance_s=args.tolerance,
                collect=drawing,
                label="base",
                advance=advance,
            )
            sw = (
                sweep(
                    recordings,
                    sweep_spec[0],
                    sweep_spec[1],
                    config_path=args.config,
                    assignments=args.set,
                    tolerance_s=args.tolerance,
                    advance=advance,
                )
                if sweep_spec
                else None
            )
        except (ConfigError, EvaluateError) as exc:
            _err(str(exc))
            return 2
    sys.stdout.write(
        f"streamproc evaluate: {len(recordings)} recordings, {len(ev.beds)} beds, "
        f"{ev.overall.monitored_s / 3600:.2f} bed-hours; tolerance {args.tolerance:g} s"
        + (f"; settings {' '.join(args.set)}" if args.set else "")
        + "\n\n"
    )
    sys.stdout.write(format_tables(ev, sw) + "\n")
    agreement = _agreement(recordings, config)
    if agreement:
        sys.stdout.write(
            "\nbeats against the ECG's R waves, MAP against the monitor's own numeric "
            "(docs/evaluation.md):\n" + agreement_table(agreement) + "\n"
        )
    if args.json:
        doc = {"settings": list(args.set), "tolerance_s": args.tolerance, **ev.as_dict()}
        if sw is not None:
            doc["sweep"] = sw.as_dict()
        if agreement:
            doc["agreement"] = msgspec.to_builtins(agreement)
        Path(args.json).write_bytes(msgspec.json.format(msgspec.json.encode(doc), indent=1))
    if drawing:
        cache: dict[int, bytes] = {}
        if args.png_dir:
            n = write_figures(ev, Path(args.png_dir), max_figures=args.max_figures, cache=cache)
            sys.stderr.write(f"streamproc evaluate: {n} figures in {args.png_dir}\n")
        if args.report:
            write_report(
                Path(args.report),
                ev,
                sw,
                max_figures=args.max_figures,
                title=f"streamproc evaluation ({len(recordings)} recordings)",
                settings=list(args.set),
                cache=cache,
            )
            sys.stderr.write(f"streamproc evaluate: report {args.report}\n")
    return 0


def _agreement(recordings: Sequence[Recording], config: StreamprocConfig) -> list[Agreement]:
    """The agreement with their own references of the real records among the inputs."""
    out = []
    for r in recordings:
        if not (r.path.endswith(".toml") and toml_kind(Path(r.path)) == "labels"):
            continue
        labels = load_labels(r.path)
        out.append(
            record_agreement(
                r.name,
                resolve_record(labels, Path(r.path)),
                artifacts=[(a.start_s, a.end_s) for a in labels.artifact],
                channel=labels.channel,
                sampfrom=labels.sampfrom,
                sampto=labels.sampto,
                settings=config.core,
            )
        )
    return out


class _ProgressBar:
    """A rich progress bar on stderr, or nothing; yields the function that advances it."""

    def __init__(self, show: bool, total: int) -> None:
        self.show = show
        self.total = total
        self._bar: Any = None

    def __enter__(self) -> Callable[[], None] | None:
        if not self.show:
            return None
        from rich.console import Console  # noqa: PLC0415
        from rich.progress import Progress  # noqa: PLC0415

        self._bar = Progress(console=Console(stderr=True), transient=True)
        self._bar.start()
        task = self._bar.add_task("evaluating", total=self.total)

        def advance() -> None:
            self._bar.advance(task)

        return advance

    def __exit__(self, *exc: object) -> None:
        if self._bar is not None:
            self._bar.stop()
