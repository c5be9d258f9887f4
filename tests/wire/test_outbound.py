"""The summary payload (encode_summary: keys, order, rounding) and alarm states read back."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streamproc.core.monitor import BedStatus
from streamproc.core.protocol.alarms import Alarm, Priority, Trigger
from streamproc.core.protocol.messages import BedId
from streamproc.wire.codec import CodecError
from streamproc.wire.outbound import (
    decode_alarm,
    encode_alarm,
    encode_dead_letter,
    encode_status,
    encode_summary,
)

KEYS = [
    "unit",
    "bed",
    "ts",
    "map",
    "sbp",
    "dbp",
    "hr",
    "metric",
    "target",
    "profile",
    "infusions",
    "open_alarms",
    "trend",
    "trend_step_s",
    "ne_equivalent",
    "last_data",
    "nibp_only",
]


def _status(**changes: object) -> BedStatus:
    base: dict[str, object] = {
        "bed": BedId("ward7", "bed03"),
        "map": 64.96,
        "sbp": 91.04,
        "dbp": 51.9499,
        "hr": None,
        "metric": "map",
        "target": 65.0,
        "profile": "standard",
        "infusions": (("norepinephrine", 0.12, "mcg/kg/min"),),
        "open_alarms": ("hypotension",),
        "last_data": 1_700_000_010.0,
        "ts": 1_700_000_009.123456,
        "trend": (70.25, 64.5),
        "trend_step_s": 30.0,
        "ne_equivalent": 0.12,
    }
    base.update(changes)
    return BedStatus(**base)  # type: ignore[arg-type]


_maybe = st.none() | st.floats(-1e6, 1e6)


class TestEncodeSummary:
    """A display's view of a bed, byte for byte stable."""

    def test_exact_bytes(self) -> None:
        """Keys in wire-format order, pressures to 0.1, time to the ms, None as null."""
        assert encode_summary(_status()) == (
            b'{"unit":"ward7","bed":"bed03","ts":1700000009.123,"map":65.0,"sbp":91.0,'
            b'"dbp":51.9,"hr":null,"metric":"map","target":65.0,"profile":"standard",'
            b'"infusions":[{"drug":"norepinephrine","rate":0.12,"unit":"mcg/kg/min"}],'
            b'"open_alarms":["hypotension"],"trend":[70.25,64.5],"trend_step_s":30.0,'
            b'"ne_equivalent":0.12,'
            b'"last_data":1700000010.0,"nibp_only":true}'
        )

    @settings(max_examples=200)
    @given(
        values=st.tuples(_maybe, _maybe, _maybe, _maybe, _maybe),
        trend=st.lists(st.floats(0, 300), max_size=30),
        drugs=st.lists(st.sampled_from(["norepinephrine", "vasopressin"]), unique=True),
    )
    def test_any_status(
        self,
        values: tuple[float | None, ...],
        trend: list[float],
        drugs: list[str],
    ) -> None:
        """Whatever the values, the JSON has every key in order and the rounded values."""
        ts, mean, sbp, dbp, hr = values
        st_ = _status(
            ts=ts,
            map=mean,
            sbp=sbp,
            dbp=dbp,
            hr=hr,
            trend=tuple(trend),
            infusions=tuple((d, 0.1, "mcg/kg/min") for d in drugs),
            open_alarms=(),
        )
        doc = json.loads(encode_summary(st_))
        assert list(doc) == KEYS
        assert doc["ts"] == (None if ts is None else round(ts, 3))
        for key, value in zip(["map", "sbp", "dbp", "hr"], [mean, sbp, dbp, hr], strict=True):
            assert doc[key] == (None if value is None else round(value, 1))
        assert doc["trend"] == trend
        assert [i["drug"] for i in doc["infusions"]] == drugs
        assert doc["open_alarms"] == []


class TestAlarmTimes:
    """The processor's times an alarm's timers run on, published and read back."""

    def test_round_trip(self) -> None:
        """An acknowledged alarm carries ``acknowledged_at`` and ``announced_at``; read back
        (after a restart) they are the event's fields, not details; a cleared one has none."""
        alarm = Alarm(BedId("ward7", "bed03"), "hypotension", 1_700_000_000.0)
        alarm.apply(Trigger.RAISE, 1_700_000_060.0, priority=Priority.MEDIUM, at=1_700_000_061.5)
        acked = alarm.apply(Trigger.ACK, 1_700_000_090.0, by="station-3", at=1_700_000_091.25)
        doc = json.loads(encode_alarm(acked))
        assert (doc["acknowledged_at"], doc["announced_at"]) == (1_700_000_091.25, 1_700_000_061.5)
        back = decode_alarm(encode_alarm(acked))
        assert back == acked
        assert "acknowledged_at" not in back.details
        cleared = alarm.apply(Trigger.CLEAR, 1_700_000_200.0)
        doc = json.loads(encode_alarm(cleared))
        assert "acknowledged_at" not in doc
        assert "announced_at" not in doc
        assert decode_alarm(encode_alarm(cleared)).announced_at is None

    def test_bad_time_refused(self) -> None:
        """A time that is not a finite number is refused with the field named."""
        alarm = Alarm(BedId("ward7", "bed03"), "hypotension", 1_700_000_000.0)
        doc = json.loads(encode_alarm(alarm.apply(Trigger.RAISE, 1_700_000_060.0)))
        for bad in ("soon", True, [1]):
            doc["announced_at"] = bad
            with pytest.raises(CodecError) as info:
                decode_alarm(json.dumps(doc).encode())
            assert info.value.field == "announced_at"


class TestServicePayloads:
    """The service's status and dead-letter payloads: fixed keys, rounded times, cut texts."""

    def test_status(self) -> None:
        body = encode_status(
            "streamproc-1", online=False, version="1.2", ts=5.12345, units=["b", "a"], shard="1/2"
        )
        assert body == (
            b'{"instance":"streamproc-1","state":"offline","version":"1.2","ts":5.123,'
            b'"units":["a","b"],"shard":"1/2"}'
        )
        body = encode_status("i", online=True, version="1.2", ts=1.0, units=(), shard=None)
        assert json.loads(body) == {
            "instance": "i",
            "state": "online",
            "version": "1.2",
            "ts": 1.0,
            "units": None,
            "shard": None,
        }

    def test_dead_letter(self) -> None:
        error = CodecError("abp", "fs", "r" * 400, code="out_of_range")
        body = json.loads(encode_dead_letter("t" * 400, b"\xff" + b"p" * 3000, error, 7.00049))
        assert body == {
            "topic": "t" * 300,
            "code": "out_of_range",
            "field": "fs",
            "reason": "r" * 300,
            "payload": "\ufffd" + "p" * 2047,
            "ts": 7.0,
        }
