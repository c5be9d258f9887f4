"""The rate-limited log lines of the core's data-time drops (``streamproc.shell.droplog``)."""

from __future__ import annotations

from typing import Any

from streamproc.core.protocol.messages import BedId
from streamproc.core.signal.ordering import DropNotice, DropReason
from streamproc.shell.droplog import DropLog


class Sink:
    """Collects what a structlog logger would be asked to write."""

    def __init__(self) -> None:
        self.lines: list[tuple[str, str, dict[str, Any]]] = []

    def warning(self, event: str, **kw: Any) -> None:
        self.lines.append(("warning", event, kw))

    def info(self, event: str, **kw: Any) -> None:
        self.lines.append(("info", event, kw))


def notice(bed: int, reason: DropReason = DropReason.DUPLICATE) -> DropNotice:
    return DropNotice(BedId("ward7", f"bed{bed:02d}"), "abp", reason, 1.7e9, 1.7e9 + 10.0)


class TestDropLog:
    def test_one_line_per_notice(self) -> None:
        """Each first drop of a bed and reason is one warning line naming bed, kind, reason."""
        sink = Sink()
        DropLog(sink).report([notice(1), notice(1, DropReason.LATE)], {"duplicate": 5}, 0.0)
        assert [(lvl, ev) for lvl, ev, _ in sink.lines] == [
            ("warning", "message_dropped"),
            ("warning", "message_dropped"),
        ]
        kw = sink.lines[1][2]
        assert (kw["unit"], kw["bed"], kw["kind"], kw["reason"]) == (
            "ward7",
            "bed01",
            "abp",
            "late",
        )
        assert kw["newest"] == 1.7e9 + 10.0

    def test_flood_is_a_few_lines_a_minute(self) -> None:
        """10,000 beds' first drops within a minute: ``burst`` lines, then one count line."""
        sink = Sink()
        drops = DropLog(sink, burst=20, every_s=60.0)
        for k in range(100):
            drops.report([notice(b) for b in range(100)], {"duplicate": 100 * (k + 1)}, k * 0.5)
        assert len(sink.lines) == 20
        drops.report([], {"duplicate": 10_000, "late": 3}, 61.0)
        assert len(sink.lines) == 21
        level, event, kw = sink.lines[-1]
        assert (level, event) == ("info", "messages_dropped")
        assert kw["counts"] == {"duplicate": 10_000, "late": 3}
        assert kw["first_lines_suppressed"] == 9_980

    def test_summary_only_when_counts_moved(self) -> None:
        """A quiet minute writes nothing; the next count line gives the increase only."""
        sink = Sink()
        drops = DropLog(sink, every_s=60.0)
        drops.report([], {"duplicate": 4}, 0.0)
        drops.report([], {"duplicate": 4}, 60.0)
        assert [ev for _, ev, _ in sink.lines] == ["messages_dropped"]
        drops.report([], {"duplicate": 4}, 120.0)
        assert len(sink.lines) == 1
        drops.report([], {"duplicate": 9}, 180.0)
        assert sink.lines[-1][2]["counts"] == {"duplicate": 5}
