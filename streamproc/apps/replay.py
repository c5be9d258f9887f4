"""``streamproc replay``: the live engine over a recording, the clock taken from the data.

A recording is JSON Lines, one MQTT message a line: ``{"topic": ..., "payload":
{...}}`` or, for a raw payload as it came off the wire, ``"payload": "..."``.
Every alarm message the service would publish comes out as the same kind of
line. Malformed lines are counted by reason and never stop the replay.

Every line is read by :func:`streamproc.wire.codec.read_record`: the codec's
route for the topic's kind, the same as the service's.

:meth:`Replayer.feed_lines` goes one step further: the samples of the chunk lines
between two ticks are read into one array (:func:`streamproc.wire.codec.read_chunk_row`,
the same route stopped before the ``AbpChunk`` is made), rows of one
:class:`~streamproc.core.engine.Batch` the engine takes in one call; any other line,
and any line that read is unsure of, first hands over the batch, then takes
``read_record``. The output is the same as line by line (tested).
"""

from __future__ import annotations

import math
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Final

import numpy as np

from streamproc.core.engine import Batch, Engine
from streamproc.core.monitor import Clock
from streamproc.core.protocol.alarms import AlarmEvent
from streamproc.core.protocol.messages import (
    MAX_SAMPLES_PER_CHUNK,
    AbpChunk,
    Message,
    sample_time,
)
from streamproc.shell.config import StreamprocConfig
from streamproc.wire.codec import CodecError, read_chunk_row, read_record, warm_up
from streamproc.wire.outbound import as_line
from streamproc.wire.topics import InboundTopic, alarm_topic, parse_inbound

__all__ = ["ReplaySummary", "Replayer", "replay_lines"]


#: Ticks run one by one up to this many steps; a longer jump is crossed in one.
MAX_TICKS: Final = 3600
#: Parsed topics kept per replay (a bed sends the same few); cleared when full.
TOPIC_CACHE_MAX: Final = 100_000
#: Samples a batch of chunk lines holds (``feed_lines``); a fuller batch is handed over
#: (its array has room for one more chunk of the largest size besides).
BATCH_SAMPLES: Final = 1 << 16
#: Chunk lines a batch holds at most.
BATCH_LINES: Final = 1024
#: Below this many beds ``feed_lines`` takes each line as ``feed_line`` does: a
#: batch per tick then holds so few chunks that its fixed costs outweigh what it
#: saves (measured with ``bench_replay.py --beds``, see benchmarks/README.md).
BATCH_MIN_BEDS: Final = 5


def _counts(c: Counter[str]) -> str:
    return f" ({', '.join(f'{k} {v}' for k, v in sorted(c.items()))})" if c else ""


@dataclass(slots=True)
class ReplaySummary:
    """What a replay read and wrote (printed to stderr, never to stdout)."""

    lines: int = 0
    messages: Counter[str] = field(default_factory=Counter)
    rejected: Counter[str] = field(default_factory=Counter)
    #: Messages the engine did not take (data-time rules), by reason.
    dropped: Counter[str] = field(default_factory=Counter)
    alarms: Counter[str] = field(default_factory=Counter)
    samples: int = 0
    beats: int = 0
    beats_valid: int = 0
    beds: int = 0
    elapsed_s: float = 0.0
    first_ts: float | None = None
    last_ts: float | None = None

    def render(self) -> str:
        rate = self.samples / self.elapsed_s if self.elapsed_s > 0 else 0.0
        span = 0.0
        if self.first_ts is not None and self.last_ts is not None:
            span = self.last_ts - self.first_ts
        n_msg = sum(self.messages.values())
        rows = [
            f"replay: {self.lines} lines, {n_msg} messages{_counts(self.messages)}",
            f"replay: {sum(self.rejected.values())} rejected{_counts(self.rejected)}",
            f"replay: {sum(self.dropped.values())} dropped{_counts(self.dropped)}",
            (
                f"replay: {self.beds} beds, {span:.1f} s of data, {self.samples} samples, "
                f"{self.beats} beats ({self.beats_valid} valid)"
            ),
            f"replay: {sum(self.alarms.values())} alarm messages{_counts(self.alarms)}",
            f"replay: {self.elapsed_s:.3f} s wall, {rate:,.0f} samples/s",
        ]
        return "\n".join(rows)


class Replayer:
    """Feeds recording lines to an :class:`Engine`, one at a time, data-clocked."""

    def __init__(
        self,
        config: StreamprocConfig,
        emit: Callable[[bytes], None],
        *,
        engine: Engine | None = None,
    ) -> None:
        self.config = config
        self.root = config.service.root
        self.engine = (
            engine
            if engine is not None
            else Engine(config.core, max_beds=config.service.max_beds, clock=Clock.DATA)
        )
        warm_up()  # the codec's compiled fast path (the engine warms the core's)
        self.emit = emit
        self.summary = ReplaySummary()
        self._next_tick: float | None = None
        self.on_event: Callable[[AlarmEvent], None] | None = None
        self._topics: dict[str, InboundTopic] = {}
        #: The batch of a message taken alone (reused: its one row is overwritten).
        self._one = Batch()
        service = config.service
        self._max_bytes = service.max_payload_bytes
        self._max_samples = service.max_samples

    def _publish(self, events: list[AlarmEvent]) -> None:
        for ev in events:
            self.summary.alarms[f"{ev.kind}:{ev.state.value}"] += 1
            if self.on_event is not None:
                self.on_event(ev)
            self.emit(as_line(alarm_topic(self.root, ev.bed, ev.kind), ev.payload()))

    def _topic(self, topic: str) -> InboundTopic:
        """``parse_inbound(topic, root)``, cached (errors are not)."""
        parsed = self._topics.get(topic)
        if parsed is None:
            parsed = parse_inbound(topic, self.root)
            if len(self._topics) >= TOPIC_CACHE_MAX:
                self._topics.clear()
            self._topics[topic] = parsed
        return parsed

    def feed_line(self, line: bytes) -> None:
        """One recording line; malformed ones are counted, never raised."""
        line = line.strip()
        if not line:
            return
        self.summary.lines += 1
        self._feed(line)

    def feed_lines(self, lines: Iterable[bytes]) -> None:
        """Every line of ``lines``, as :meth:`feed_line` takes it, ``abp`` chunks in batches.

        The same output, summary and engine state as ``feed_line`` on each line
        in turn: a batch ends where a tick is due and before any line that
        is not certainly a valid chunk of a known ``abp`` topic (that line then
        takes :meth:`feed_line`'s way).
        """
        s = self.summary
        engine = self.engine
        topics = self._topics
        max_bytes, max_samples = self._max_bytes, self._max_samples
        buf = np.empty(BATCH_SAMPLES + min(max_samples, MAX_SAMPLES_PER_CHUNK), np.float64)
        batch = Batch(samples=buf)
        # (``batch.add_chunk``, its appends bound once: this runs for every chunk line)
        beds, msgs, nows = batch.beds.append, batch.messages.append, batch.nows.append
        t0s, fss, ends = batch.t0.append, batch.fs.append, batch.ends.append
        off = 0
        for raw in lines:
            line = raw.strip()
            if not line:
                continue
            s.lines += 1
            if len(engine) < BATCH_MIN_BEDS:
                if off:
                    self._hand_over(batch)
                    off = 0
                self._feed(line)
                continue
            # (a chunk with ``seq`` goes typed: a chunk row has no place for it)
            row = read_chunk_row(
                line, topics.get, buf[off:], max_bytes, max_samples
            )  # (room: above)
            if row is None:
                if off:
                    self._hand_over(batch)
                    off = 0
                self._feed(line)
                continue
            topic, t0, fs, n = row
            ts = sample_time(t0, fs, n - 1)  # (``AbpChunk.ts``)
            if self._tick_due_before(t0):  # (as ``_take``: the batch first)
                if off:
                    self._hand_over(batch)
                    buf[:n] = buf[off : off + n]  # (the line's samples, read after the batch)
                    off = 0
                self._tick(t0)
            last = self._dated(ts)
            s.messages["abp"] += 1
            s.samples += n
            off += n
            beds(topic.bed)
            msgs(None)
            nows(ts)  # data-clocked: a chunk arrives at its time
            t0s(t0)
            fss(fs)
            ends(off)
            nxt = self._next_tick
            if nxt is None or last >= nxt or off >= BATCH_SAMPLES or len(batch.beds) >= BATCH_LINES:
                self._hand_over(batch)
                off = 0
                if nxt is None or last >= nxt:
                    self._tick(last)
        self._hand_over(batch)

    def _hand_over(self, batch: Batch) -> None:
        """The batch's chunks to the engine (and their alarms out); the batch is emptied."""
        if not batch.beds:
            return
        events = self.engine.receive(batch)
        batch.clear()
        if events:
            self._publish(events)

    def _feed(self, line: bytes) -> None:
        """A stripped, counted line: read, then taken."""
        read = self._read(line)
        if read is not None:
            self._accept(*read)

    def _read(self, line: bytes) -> tuple[InboundTopic, Message] | None:
        """The line's topic and message; a rejection is counted."""
        try:
            return read_record(
                line, self._topic, max_bytes=self._max_bytes, max_samples=self._max_samples
            )
        except CodecError as exc:
            self.summary.rejected[exc.code] += 1
            return None

    def _accept(self, topic: InboundTopic, msg: Message) -> None:
        """A message read from a line, counted and taken."""
        s = self.summary
        s.messages[topic.kind] += 1
        begins = msg.ts
        if isinstance(msg, AbpChunk):
            s.samples += msg.samples.size
            begins = msg.t0
        self._take(topic, msg, begins, msg.ts)

    def _take(self, topic: InboundTopic, msg: Message, begins: float, ts: float) -> None:
        """A decoded message that begins at ``begins`` and is dated ``ts``."""
        if self._tick_due_before(begins):
            self._tick(begins)
        last = self._dated(ts)
        one = self._one
        if one.beds:  # (data-clocked: a message arrives at its time)
            one.beds[0], one.messages[0], one.nows[0] = topic.bed, msg, ts
        else:
            one.add(topic.bed, msg, ts)
        events = self.engine.receive(one)
        if events:
            self._publish(events)
        nxt = self._next_tick
        if nxt is None or last >= nxt:
            self._tick(last)

    def _tick_due_before(self, begins: float) -> bool:
        """Whether time passes (a tick) up to ``begins`` before a message that begins there.

        A silent bed goes stale, a standing NIBP reading is judged, before the
        message is taken; only when a tick is due (or none is scheduled yet).
        """
        last = self.summary.last_ts
        nxt = self._next_tick
        return last is not None and begins > last and (nxt is None or begins >= nxt)

    def _dated(self, ts: float) -> float:
        """A message dated ``ts`` is taken: the newest data time so far."""
        s = self.summary
        last = s.last_ts
        if last is None:
            s.first_ts = ts
        elif ts <= last:
            return last
        s.last_ts = ts
        return ts

    def _tick(self, now: float) -> None:
        """Tick the engine at each whole ``tick_s`` of data time.

        A jump of more than ``MAX_TICKS`` steps (a line dated years ahead) is
        crossed with one tick at its end, so one bad timestamp cannot cost
        hours of ticking.
        """
        step = self.config.service.tick_s
        if self._next_tick is None:
            self._next_tick = (math.floor(now / step) + 1) * step
            return
        if (now - self._next_tick) / step > MAX_TICKS:
            self._next_tick = math.floor(now / step) * step
        while now >= self._next_tick:
            self._publish(self.engine.tick(self._next_tick))
            self._next_tick += step

    def finish(self) -> ReplaySummary:
        st = self.engine.stats
        self.summary.beats = st.beats
        self.summary.beats_valid = st.beats_valid
        self.summary.beds = len(self.engine)
        self.summary.dropped = Counter(st.dropped)
        return self.summary


def replay_lines(
    lines: Iterable[bytes], config: StreamprocConfig, emit: Callable[[bytes], None]
) -> ReplaySummary:
    """Replay a whole recording; ``emit`` gets each output line (without newline)."""
    t_start = time.perf_counter()
    rp = Replayer(config, emit)
    rp.feed_lines(lines)
    summary = rp.finish()
    summary.elapsed_s = time.perf_counter() - t_start
    return summary
