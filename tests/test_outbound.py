"""The summary payload (streamproc.outbound.encode_summary): keys, order, rounding."""

from __future__ import annotations

import json

from hypothesis import given, settings
from hypothesis import strategies as st

from streamproc.core.messages import BedId
from streamproc.core.monitor import BedStatus
from streamproc.outbound import encode_summary

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
            b'"ne_equivalent":0.12}'
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
