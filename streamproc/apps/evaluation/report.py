"""The HTML report of ``streamproc evaluate``: tables and one figure per bed.

Self-contained: the figures are PNGs embedded as ``data:`` URIs, the style is
inline, nothing is fetched. matplotlib (Agg, through ``Figure`` and its Agg
canvas: no pyplot, no global backend) is imported only here, and this module
only when a report or PNGs are asked for.
"""

from __future__ import annotations

import base64
import html
import io
import math
import re
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

from streamproc.apps.evaluation.evaluate import (
    COLUMNS,
    BedResult,
    Evaluation,
    Metrics,
    Sweep,
    metrics_row,
    sweep_header,
)
from streamproc.core.protocol.alarms import SIGNAL_INVALID, STALE

__all__ = ["PRIORITY_COLORS", "bed_figure_png", "select_figures", "write_figures", "write_report"]

PRIORITY_COLORS: Final = {"high": "#d62728", "medium": "#ff9f1c", "low": "#17becf"}
_EPISODE_COLOR: Final = "#2ca02c"
_ARTIFACT_COLOR: Final = "#7f7f7f"
_Y_FLOOR: Final = 0.0
_Y_CEIL_MIN: Final = 140.0
_Y_CEIL_MAX: Final = 280.0
#: The rolling lines break where consecutive values are further apart than this (s).
_GAP_S: Final = 5.0
DISCLAIMER: Final = (
    "streamproc alarms are decision support for clinicians, never orders. This report measures "
    "the processor against labelled recordings; it is not a clinical validation."
)


def select_figures(ev: Evaluation, max_figures: int) -> list[BedResult]:
    """Which beds to draw: problems first (misses, false alarms), then real records,
    then the first bed of each scenario, then the rest, at most ``max_figures``."""
    chosen: list[BedResult] = []
    seen: set[int] = set()

    def take(beds: Sequence[BedResult]) -> None:
        for b in beds:
            if len(chosen) >= max_figures:
                return
            if id(b) not in seen and b.trace is not None:
                seen.add(id(b))
                chosen.append(b)

    def busy(b: BedResult) -> tuple[int, str]:
        """Most eventful first: episodes, alarms and artifacts to see."""
        n = len(b.episodes) + len(b.hypotension) + len(b.technical) + len(b.artifacts)
        return -n, b.recording

    take(sorted((b for b in ev.beds if b.missed or b.false_alarms), key=busy))
    take(sorted((b for b in ev.beds if b.source == "real"), key=busy))
    firsts: dict[str, BedResult] = {}
    for b in ev.beds:
        firsts.setdefault(b.scenario, b)
    take(sorted(firsts.values(), key=busy))
    take(ev.beds)
    return chosen


def _bands(
    ax: Any,
    spans: Sequence[Any],
    *,
    t0: float,
    end: float,
    y0: float,
    y1: float,
    fixed: str | None,
) -> None:
    """Alarm bands at the top of the axes (axes fraction ``y0..y1``), coloured by priority."""
    for a in spans:
        stop = a.end(end)
        marks = a.priorities or [(a.raised, "low")]
        for i, (ts, prio) in enumerate(marks):
            nxt = marks[i + 1][0] if i + 1 < len(marks) else stop
            if nxt > ts:
                ax.axvspan(
                    ts - t0,
                    nxt - t0,
                    ymin=y0,
                    ymax=y1,
                    color=PRIORITY_COLORS[fixed or prio],
                    lw=0,
                )
        ax.axvline(a.raised - t0, ymin=y0, ymax=y1, color="black", lw=2.0)


def _broken(points: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """A line that stops where the monitor had no new value for ``_GAP_S`` (artifact, gap)."""
    out: list[tuple[float, float]] = []
    for t, v in points:
        if out and t - out[-1][0] > _GAP_S:
            out.append((out[-1][0], math.nan))
        out.append((t, v))
    return out


def bed_figure_png(b: BedResult, *, dpi: int = 100) -> bytes:
    """One bed: beats, rolling MAP and SBP, target, true episodes, artifacts, alarm bands."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg  # noqa: PLC0415
    from matplotlib.figure import Figure  # noqa: PLC0415
    from matplotlib.lines import Line2D  # noqa: PLC0415
    from matplotlib.patches import Patch  # noqa: PLC0415

    trace = b.trace
    fig = Figure(figsize=(12, 3.8), dpi=dpi)
    fig.subplots_adjust(left=0.055, right=0.785, top=0.9, bottom=0.13)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    t0 = b.t0
    sbps = [s for _, _, s in trace.rolling if s is not None] if trace else []
    top = min(max(_Y_CEIL_MIN, 1.15 * max(sbps, default=0.0)), _Y_CEIL_MAX)
    for e in b.episodes:
        ax.axvspan(e.start - t0, e.end - t0, color=_EPISODE_COLOR, alpha=0.13, lw=0)
    for lo, hi, _kind in b.artifacts:
        ax.axvspan(lo - t0, hi - t0, color=_ARTIFACT_COLOR, alpha=0.22, lw=0, hatch="//")
    if trace is not None:
        good = [(t - t0, m) for t, m, v in trace.beats if v]
        bad = [(t - t0, min(max(m, _Y_FLOOR + 3), top - 3)) for t, m, v in trace.beats if not v]
        if good:
            ax.plot(*zip(*good, strict=True), ".", color="0.35", ms=2.5, zorder=2)
        if bad:
            ax.plot(*zip(*bad, strict=True), "x", color="#d62728", ms=4.5, mew=1.1, zorder=3)
        rm = [(t - t0, m) for t, m, _ in trace.rolling if m is not None]
        rs = [(t - t0, s) for t, _, s in trace.rolling if s is not None]
        # waveform: break the lines at gaps; numerics only: each reading stands (steps)
        style: dict[str, Any] = {"drawstyle": "steps-post", "marker": "o", "ms": 3}
        if trace.beats:
            rm, rs, style = _broken(rm), _broken(rs), {}
        if rm:
            ax.plot(*zip(*rm, strict=True), "-", color="#1f77b4", lw=1.8, zorder=4, **style)
        if rs:
            ax.plot(
                *zip(*rs, strict=True), "-", color="#9467bd", lw=1.0, alpha=0.85, zorder=4, **style
            )
    ax.axhline(b.target, ls="--", color="black", lw=1.1, zorder=5)
    span = max(b.end - t0, 1.0)
    ax.set_xlim(0, span)
    ax.set_ylim(_Y_FLOOR, top)
    _bands(ax, b.hypotension, t0=t0, end=b.end, y0=0.94, y1=1.0, fixed=None)
    _bands(ax, b.technical, t0=t0, end=b.end, y0=0.88, y1=0.94, fixed="low")
    ax.set_xlabel("time from the bed's first data (s)")
    ax.set_ylabel("mmHg")
    ax.grid(visible=True, alpha=0.25)
    lat = [f"{e.latency_s:.0f} s" for e in b.episodes if e.latency_s is not None]
    ax.set_title(
        f"{b.recording}  [{b.unit}/{b.bed}]  profile {b.profile}, target "
        f"{b.metric.upper()} {b.target:g}  |  episodes {len(b.episodes) - b.missed}/"
        f"{len(b.episodes)} detected"
        + (f" (latency {', '.join(lat)})" if lat else "")
        + f", false alarms {b.false_alarms}, technical {len(b.technical)}",
        fontsize=9.5,
        loc="left",
    )
    handles = [
        Line2D([], [], ls="", marker=".", color="0.35", label="beat MAP (valid)"),
        Line2D([], [], ls="", marker="x", color="#d62728", label="beat rejected (artifact)"),
        Line2D([], [], color="#1f77b4", lw=1.8, label="rolling MAP (monitor)"),
        Line2D([], [], color="#9467bd", lw=1.0, label="rolling SBP (monitor)"),
        Line2D([], [], color="black", ls="--", label=f"target {b.metric.upper()} {b.target:g}"),
        Patch(color=_EPISODE_COLOR, alpha=0.25, label="true episode"),
        Patch(facecolor=_ARTIFACT_COLOR, alpha=0.35, hatch="//", label="labelled artifact"),
        Patch(color=PRIORITY_COLORS["high"], label="hypotension alarm, high"),
        Patch(color=PRIORITY_COLORS["medium"], label="hypotension alarm, medium"),
        Patch(color=PRIORITY_COLORS["low"], label="technical alarm, low"),
        Line2D([], [], ls="", marker="|", ms=9, mew=2, color="black", label="alarm raised"),
    ]
    ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.005, 1.0), fontsize=7.5)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    return buf.getvalue()


def _slug(b: BedResult) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", f"{b.recording}__{b.unit}_{b.bed}")


def _png(b: BedResult, cache: dict[int, bytes] | None) -> bytes:
    if cache is None:
        return bed_figure_png(b)
    if id(b) not in cache:
        cache[id(b)] = bed_figure_png(b)
    return cache[id(b)]


def write_figures(
    ev: Evaluation, out: Path, *, max_figures: int = 40, cache: dict[int, bytes] | None = None
) -> int:
    """Each selected bed's figure as ``out/RECORDING__UNIT_BED.png``; returns how many.

    ``cache`` (keyed by ``id`` of the bed) lets :func:`write_report` reuse the PNGs.
    """
    out.mkdir(parents=True, exist_ok=True)
    beds = select_figures(ev, max_figures)
    for b in beds:
        (out / f"{_slug(b)}.png").write_bytes(_png(b, cache))
    return len(beds)


_CSS: Final = """
body { font: 14px/1.4 system-ui, sans-serif; margin: 1.5em; color: #222; }
table { border-collapse: collapse; margin: 0.5em 0 1.5em; font-size: 12.5px; }
th, td { border: 1px solid #ccc; padding: 3px 7px; text-align: right; }
th { background: #f0f0f0; } td:first-child, th:first-child { text-align: left; }
tr.bad td { background: #fde8e8; }
.note { color: #555; max-width: 70em; }
figure { margin: 1em 0 2em; } figcaption { font-size: 12.5px; color: #444; }
img { max-width: 100%; border: 1px solid #ddd; }
"""


def _table(header: Sequence[str], rows: Sequence[tuple[Sequence[str], bool]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join(
        f"<tr{' class=bad' if bad else ''}>"
        + "".join(f"<td>{html.escape(c)}</td>" for c in r)
        + "</tr>"
        for r, bad in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _bad(m: Metrics) -> bool:
    return m.false_alarms > 0 or (m.sensitivity is not None and m.sensitivity < 1.0)


def _metrics_table(ms: Sequence[Metrics]) -> str:
    return _table(COLUMNS, [(metrics_row(m), _bad(m)) for m in ms])


def write_report(
    path: Path,
    ev: Evaluation,
    sw: Sweep | None = None,
    *,
    max_figures: int = 40,
    title: str = "streamproc evaluation",
    settings: Sequence[str] = (),
    cache: dict[int, bytes] | None = None,
) -> None:
    """The whole report as one HTML file."""
    beds = select_figures(ev, max_figures)
    parts = [
        "<!doctype html><html lang=en><head><meta charset=utf-8>",
        f"<title>{html.escape(title)}</title><style>{_CSS}</style></head><body>",
        f"<h1>{html.escape(title)}</h1>",
        f"<p class=note>{html.escape(DISCLAIMER)}</p>",
        (
            "<p class=note>Generated "
            f"{datetime.now(UTC).strftime('%Y-%m-%d %H:%M UTC')}; settings: "
            f"{html.escape(' '.join(settings) or 'the protocol defaults')}. Sensitivity: true "
            "episodes with a hypotension alarm open during them. False alarms: hypotension alarms "
            "raised outside every true episode (with the tolerance) or inside a labelled artifact, "
            "per bed-day of monitored data. Latency: episode onset to the alarm. Technical: "
            f"{SIGNAL_INVALID} and {STALE} raised. Rows shaded red have a miss or a false "
            "alarm.</p>"
        ),
        "<h2>Overall</h2>",
        _metrics_table([ev.overall, *ev.by_source()]),
        "<h2>By profile</h2>",
        _metrics_table(ev.by_profile()),
        "<h2>By scenario / record</h2>",
        _metrics_table(ev.by_scenario()),
    ]
    if sw is not None:
        parts += [
            f"<h2>What-if: {html.escape(sw.key)}</h2>",
            "<p class=note>The same recordings under each value; the truth does not move.</p>",
            _table(
                sweep_header(sw.key), [([v, *metrics_row(m)[1:]], _bad(m)) for v, m in sw.rows()]
            ),
        ]
    if ev.untruthed:
        parts.append(
            "<p class=note>Beds without truth (not scored): "
            f"{html.escape(', '.join(ev.untruthed))}</p>"
        )
    parts.append(
        f"<h2>Recordings ({len(beds)} of {len(ev.beds)} beds drawn: misses and false alarms "
        "first, then real records, then one per scenario)</h2>"
    )
    for b in beds:
        data = base64.b64encode(_png(b, cache)).decode("ascii")
        alarms = ", ".join(
            f"{a.raised - b.t0:.1f}-"
            + (f"{a.cleared - b.t0:.1f}" if a.cleared is not None else "end")
            + f" s{' (false)' if a.false else ''}"
            for a in b.hypotension
        )
        parts.append(
            f"<figure id='{html.escape(_slug(b))}'><img alt='{html.escape(b.recording)}' "
            f"src='data:image/png;base64,{data}'><figcaption>{html.escape(b.recording)} "
            f"({html.escape(b.scenario)}, {html.escape(b.source)}): hypotension alarms "
            f"{html.escape(alarms or 'none')}</figcaption></figure>"
        )
    parts.append("</body></html>\n")
    path.write_text("".join(parts), encoding="utf-8")
