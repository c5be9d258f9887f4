"""Tests of streamproc.wire.topics: parsing inbound and alarm topics, building topics and filters."""

from __future__ import annotations

import pickle

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streamproc.core.protocol.messages import BedId
from streamproc.wire.codec import INBOUND_KINDS, CodecError
from streamproc.wire.topics import (
    InboundTopic,
    TopicError,
    _parse_inbound,
    ack_filter,
    alarm_topic,
    alarms_filter,
    inbound_filters,
    inbound_topic,
    parse_alarm_topic,
    parse_inbound,
    parse_status_topic,
    parse_summary_topic,
    status_filter,
    status_topic,
    summary_topic,
    under_root,
)

FUZZ = settings(max_examples=300, deadline=None)
BED = BedId("ward7", "bed03")
ID64 = "a" * 64
#: Injection attempts that no builder may put into a topic level.
INJECTIONS = ["+", "#", "/", "a/b", "..", "", "a+", "#a", " ", "a\x00", "bed/../x"]
#: The same for a root, which may have several levels ("a/b" is a valid root).
ROOT_INJECTIONS = [r for r in INJECTIONS if r != "a/b"]

ident = st.from_regex(r"[A-Za-z0-9_-]{1,64}", fullmatch=True)
beds = st.builds(BedId, ident, ident)
roots = st.lists(st.from_regex(r"[A-Za-z0-9_-]{1,12}", fullmatch=True), min_size=1, max_size=3)


class TestTopicError:
    def test_is_codec_error_with_bad_topic_code(self) -> None:
        """TopicError is a CodecError (and ValueError) with code bad_topic and the topic kept."""
        err = TopicError("x/y", "nope", field="unit")
        assert isinstance(err, CodecError)
        assert isinstance(err, ValueError)
        assert (err.code, err.field, err.topic, err.kind) == ("bad_topic", "unit", "x/y", None)
        assert str(err) == "unit: nope"

    def test_pickle_round_trip(self) -> None:
        """A TopicError survives pickling with its topic and code."""
        err = TopicError("icu/+/b/abp", "wildcard", field="unit")
        copy = pickle.loads(pickle.dumps(err))  # noqa: S301 (our own object)
        assert type(copy) is TopicError
        assert (copy.topic, copy.code, copy.field, str(copy)) == (
            "icu/+/b/abp",
            "bad_topic",
            "unit",
            "unit: wildcard",
        )


GOOD_INBOUND = [
    ("icu/ward7/bed03/abp", "icu", BedId("ward7", "bed03"), "abp"),
    ("icu/ward7/bed03/vitals", "icu", BedId("ward7", "bed03"), "vitals"),
    ("icu/ward7/bed03/infusion", "icu", BedId("ward7", "bed03"), "infusion"),
    ("icu/ward7/bed03/patient", "icu", BedId("ward7", "bed03"), "patient"),
    ("icu/ward7/bed03/labs", "icu", BedId("ward7", "bed03"), "labs"),
    ("icu/ward7/bed03/ack", "icu", BedId("ward7", "bed03"), "ack"),
    ("icu/MICU_2/bed-1/abp", "icu", BedId("MICU_2", "bed-1"), "abp"),
    (f"icu/{ID64}/{ID64}/abp", "icu", BedId(ID64, ID64), "abp"),
    ("icu/_status/bed1/abp", "icu", BedId("_status", "bed1"), "abp"),
    ("hospital/icu/w/b/labs", "hospital/icu", BedId("w", "b"), "labs"),
    ("site-1/a/b/icu/u/b/ack", "site-1/a/b/icu", BedId("u", "b"), "ack"),
]

#: (id, topic, expected field, words the reason must contain)
BAD_INBOUND: list[tuple[str, object, str | None, str]] = [
    ("empty", "", None, "not under root"),
    ("root-only", "icu", None, "0 levels"),
    ("too-shallow", "icu/ward7/abp", None, "2 levels"),
    ("too-deep", "icu/ward7/bed03/abp/x", None, "4 levels"),
    ("alarm-topic", "icu/ward7/bed03/alarms/hypotension", None, "alarm topic, not inbound"),
    ("status-topic", "icu/_status/streamproc-1", None, "status topic"),
    ("wrong-root", "ccu/ward7/bed03/abp", None, "not under root 'icu'"),
    ("root-case", "ICU/ward7/bed03/abp", None, "not under root"),
    ("leading-slash", "/icu/ward7/bed03/abp", None, "not under root"),
    ("trailing-slash", "icu/ward7/bed03/abp/", None, "4 levels"),
    ("plus-wildcard", "icu/+/bed03/abp", None, "wildcard"),
    ("hash-wildcard", "icu/ward7/#", None, "wildcard"),
    ("plus-in-level", "icu/ward+7/bed03/abp", None, "wildcard"),
    ("empty-unit", "icu//bed03/abp", "unit", "[A-Za-z0-9_-]{1,64}"),
    ("empty-bed", "icu/ward7//abp", "bed", "[A-Za-z0-9_-]{1,64}"),
    ("dotdot-unit", "icu/../bed03/abp", "unit", "[A-Za-z0-9_-]{1,64}"),
    ("dotdot-bed", "icu/ward7/../abp", "bed", "[A-Za-z0-9_-]{1,64}"),
    ("dot", "icu/ward.7/bed03/abp", "unit", "must match"),
    ("space", "icu/ward 7/bed03/abp", "unit", "must match"),
    ("non-ascii", "icu/station-süd/bed03/abp", "unit", "must match"),
    ("nul", "icu/ward7/bed\x0003/abp", "bed", "must match"),
    ("id-65", f"icu/{'a' * 65}/bed03/abp", "unit", "must match"),
    ("unknown-kind", "icu/ward7/bed03/ecg", "kind", "abp, vitals, infusion, patient, labs, ack"),
    ("kind-case", "icu/ward7/bed03/ABP", "kind", "expected one of"),
    ("kind-empty", "icu/ward7/bed03/", "kind", "expected one of"),
    ("outbound-kind", "icu/ward7/bed03/alarms", "kind", "unknown kind 'alarms'"),
    ("not-a-string", b"icu/ward7/bed03/abp", None, "must be a string"),
]


class TestParseInbound:
    @pytest.mark.parametrize(("topic", "root", "bed", "kind"), GOOD_INBOUND)
    def test_good_topics(self, topic: str, root: str, bed: BedId, kind: str) -> None:
        """A topic that fits the contract parses into its bed and kind."""
        assert parse_inbound(topic, root) == InboundTopic(bed, kind)

    def test_a_large_ward_stays_parsed(self) -> None:
        """Every abp and vitals topic of a 10,000-bed instance stays in the parse cache.

        (With room for 4,096 a 5,000-bed ward parsed its topic again for nearly
        every chunk.)
        """
        topics = [f"icu/u{i % 40}/b{i}/{kind}" for i in range(10_000) for kind in ("abp", "vitals")]
        _parse_inbound.cache_clear()
        for topic in topics:
            parse_inbound(topic)
        parsed = [parse_inbound(topic) for topic in topics]
        assert _parse_inbound.cache_info().hits == len(topics)
        assert parsed[-1] == InboundTopic(BedId("u39", "b9999"), "vitals")

    def test_default_root_is_icu(self) -> None:
        """Without a root, 'icu' is assumed."""
        assert parse_inbound("icu/ward7/bed03/abp") == InboundTopic(BED, "abp")
        with pytest.raises(TopicError):
            parse_inbound("hospital/icu/ward7/bed03/abp")

    def test_repeated_parse_is_equal(self) -> None:
        """Parsing the same topic again gives an equal (cached) result."""
        assert parse_inbound("icu/ward7/bed03/abp") == parse_inbound("icu/ward7/bed03/abp")

    @pytest.mark.parametrize(
        ("topic", "field", "words"),
        [case[1:] for case in BAD_INBOUND],
        ids=[case[0] for case in BAD_INBOUND],
    )
    def test_bad_topics(self, topic: str, field: str | None, words: str) -> None:
        """A topic that does not fit raises TopicError naming the level and what is expected."""
        with pytest.raises(TopicError) as info:
            parse_inbound(topic)
        err = info.value
        assert err.code == "bad_topic"
        assert err.field == field
        assert words in err.reason, err.reason

    def test_reason_states_expected_shape(self) -> None:
        """Shape errors spell out the expected topic under the configured root."""
        with pytest.raises(TopicError) as info:
            parse_inbound("hospital/icu/ward7/abp", "hospital/icu")
        assert "expected 'hospital/icu/<unit>/<bed>/<kind>'" in info.value.reason

    def test_long_topic_is_cut_in_reason(self) -> None:
        """A huge topic is not copied whole into the error message."""
        topic = "icu/" + "x" * 100_000
        with pytest.raises(TopicError) as info:
            parse_inbound(topic)
        assert len(str(info.value)) < 1000

    @pytest.mark.parametrize("root", ["", "icu/", "/icu", "icu/+", "#", "a//b", "..", "i c u"])
    def test_bad_root(self, root: str) -> None:
        """An invalid configured root is a TopicError on field root."""
        with pytest.raises(TopicError) as info:
            parse_inbound("icu/ward7/bed03/abp", root)
        assert info.value.field == "root"

    @FUZZ
    @given(topic=st.text(max_size=80))
    def test_arbitrary_text(self, topic: str) -> None:
        """Arbitrary text gives an InboundTopic or a TopicError, nothing else."""
        try:
            parsed = parse_inbound(topic)
        except TopicError as err:
            code: str | None = err.code
        else:
            code = None
            assert topic == f"icu/{parsed.bed.unit}/{parsed.bed.bed}/{parsed.kind}"
        assert code in (None, "bad_topic")

    @FUZZ
    @given(
        levels=st.lists(
            st.sampled_from(["icu", "ward7", "bed03", "", "+", "#", "..", "alarms", *INBOUND_KINDS])
            | st.text(max_size=5),
            max_size=6,
        )
    )
    def test_arbitrary_levels(self, levels: list[str]) -> None:
        """Topics assembled from plausible and odd levels parse or raise TopicError only."""
        topic = "/".join(levels)
        try:
            parsed = parse_inbound(topic)
        except TopicError:
            return
        assert parsed.kind in INBOUND_KINDS
        assert len(levels) == 4

    @FUZZ
    @given(root=roots, bed=beds, kind=st.sampled_from(INBOUND_KINDS))
    def test_round_trip_with_builder(self, root: list[str], bed: BedId, kind: str) -> None:
        """parse_inbound reads back exactly what inbound_topic builds."""
        root_str = "/".join(root)
        assert parse_inbound(inbound_topic(root_str, bed, kind), root_str) == InboundTopic(
            bed, kind
        )


class TestParseAlarmTopic:
    def test_good(self) -> None:
        """An alarm topic gives its bed and alarm kind."""
        assert parse_alarm_topic("icu/ward7/bed03/alarms/hypotension") == (BED, "hypotension")
        assert parse_alarm_topic("h/icu/u/b/alarms/data_stale", "h/icu") == (
            BedId("u", "b"),
            "data_stale",
        )

    @pytest.mark.parametrize(
        ("topic", "field"),
        [
            ("icu/ward7/bed03/abp", None),
            ("icu/ward7/bed03/alarms", None),
            ("icu/ward7/bed03/alarms/x/y", None),
            ("icu/ward7/bed03/alarm/hypotension", None),
            ("icu/ward7/bed03/alarms/+", None),
            ("icu/ward7/bed03/alarms/#", None),
            ("ccu/ward7/bed03/alarms/hypotension", None),
            ("icu/../bed03/alarms/hypotension", "unit"),
            ("icu/ward7//alarms/hypotension", "bed"),
            ("icu/ward7/bed03/alarms/", "alarm_kind"),
            ("icu/ward7/bed03/alarms/Hypotension", "alarm_kind"),
            ("icu/ward7/bed03/alarms/..", "alarm_kind"),
            ("icu/_status/streamproc-1", None),
        ],
    )
    def test_bad(self, topic: str, field: str | None) -> None:
        """Anything but a well-formed alarm topic raises TopicError with the level at fault."""
        with pytest.raises(TopicError) as info:
            parse_alarm_topic(topic)
        assert info.value.field == field

    @FUZZ
    @given(topic=st.text(max_size=80))
    def test_arbitrary_text(self, topic: str) -> None:
        """Arbitrary text gives a (bed, kind) pair or a TopicError, nothing else."""
        try:
            bed, kind = parse_alarm_topic(topic)
        except TopicError:
            return
        assert topic == f"icu/{bed.unit}/{bed.bed}/alarms/{kind}"

    @FUZZ
    @given(root=roots, bed=beds, kind=st.from_regex(r"[a-z0-9_]{1,64}", fullmatch=True))
    def test_round_trip_with_builder(self, root: list[str], bed: BedId, kind: str) -> None:
        """parse_alarm_topic reads back exactly what alarm_topic builds."""
        root_str = "/".join(root)
        assert parse_alarm_topic(alarm_topic(root_str, bed, kind), root_str) == (bed, kind)


def forged_bed(unit: str, bed: str) -> BedId:
    """A BedId whose fields were overwritten after validation (never done by the project)."""
    forged = BedId("u", "b")
    object.__setattr__(forged, "unit", unit)
    object.__setattr__(forged, "bed", bed)
    return forged


class TestAlarmTopic:
    def test_builds(self) -> None:
        """The alarm topic is {root}/{unit}/{bed}/alarms/{alarm_kind}."""
        assert alarm_topic("icu", BED, "hypotension") == "icu/ward7/bed03/alarms/hypotension"
        assert alarm_topic("h/icu", BED, "abp_signal_invalid") == (
            "h/icu/ward7/bed03/alarms/abp_signal_invalid"
        )

    @pytest.mark.parametrize("alarm_kind", [*INJECTIONS, "Hypotension", "a-b", "x" * 65])
    def test_rejects_bad_alarm_kind(self, alarm_kind: str) -> None:
        """alarm_kind must match [a-z0-9_]{1,64}: no wildcard, level or '..' injection."""
        with pytest.raises(TopicError) as info:
            alarm_topic("icu", BED, alarm_kind)
        assert info.value.field == "alarm_kind"

    @pytest.mark.parametrize("root", [*ROOT_INJECTIONS, "icu/", "/icu", "icu/+/x", "a//b"])
    def test_rejects_bad_root(self, root: str) -> None:
        """The root must be levels of [A-Za-z0-9_-]+."""
        with pytest.raises(TopicError) as info:
            alarm_topic(root, BED, "hypotension")
        assert info.value.field == "root"

    @pytest.mark.parametrize("value", INJECTIONS)
    def test_rejects_forged_bed(self, value: str) -> None:
        """Even a BedId tampered with after construction cannot inject into the topic."""
        with pytest.raises(TopicError) as info:
            alarm_topic("icu", forged_bed(value, "b"), "hypotension")
        assert info.value.field == "unit"
        with pytest.raises(TopicError) as info:
            alarm_topic("icu", forged_bed("u", value), "hypotension")
        assert info.value.field == "bed"


class TestStatusTopic:
    def test_builds(self) -> None:
        """The status topic is {root}/_status/{instance}."""
        assert status_topic("icu", "streamproc-1") == "icu/_status/streamproc-1"

    @pytest.mark.parametrize("instance", [*INJECTIONS, "x" * 65])
    def test_rejects_bad_instance(self, instance: str) -> None:
        """instance must match [A-Za-z0-9_-]{1,64}."""
        with pytest.raises(TopicError) as info:
            status_topic("icu", instance)
        assert info.value.field == "instance"

    def test_rejects_bad_root(self) -> None:
        """A root with a wildcard is refused."""
        with pytest.raises(TopicError):
            status_topic("icu/#", "streamproc-1")


class TestParseOutbound:
    """The status and summary topics a subscriber reads, parsed as the builders build them."""

    def test_status_round_trip(self) -> None:
        assert parse_status_topic(status_topic("a/b", "streamproc-1"), "a/b") == "streamproc-1"

    def test_summary_round_trip(self) -> None:
        bed = BedId("ward7", "bed03")
        assert parse_summary_topic(summary_topic("icu", bed)) == bed

    @pytest.mark.parametrize(
        ("topic", "field"),
        [
            ("other/_status/x", None),
            ("icu/_status", None),
            ("icu/_status/x/y", None),
            ("icu/ward7/bed03/summary", None),
            ("icu/_status/bad instance", "instance"),
            ("icu/_status/", "instance"),
        ],
    )
    def test_status_bad(self, topic: str, field: str | None) -> None:
        with pytest.raises(TopicError) as info:
            parse_status_topic(topic)
        assert info.value.field == field

    @pytest.mark.parametrize(
        ("topic", "field"),
        [
            ("other/ward7/bed03/summary", None),
            ("icu/ward7/summary", None),
            ("icu/ward7/bed03/alarms/hypotension", None),
            ("icu/_status/x", None),
            ("icu/ward 7/bed03/summary", "unit"),
            ("icu/ward7//summary", "bed"),
        ],
    )
    def test_summary_bad(self, topic: str, field: str | None) -> None:
        with pytest.raises(TopicError) as info:
            parse_summary_topic(topic)
        assert info.value.field == field

    def test_under_root(self) -> None:
        assert under_root("a/b/_status/x", "a/b")
        assert not under_root("a/c/_status/x", "a/b")
        assert not under_root("a", "a/b")


class TestInboundTopic:
    def test_builds(self) -> None:
        """The inbound topic is {root}/{unit}/{bed}/{kind}."""
        assert inbound_topic("icu", BED, "vitals") == "icu/ward7/bed03/vitals"

    @pytest.mark.parametrize("kind", [*INJECTIONS, "alarms", "alarms/hypotension", "_status"])
    def test_rejects_unknown_kind(self, kind: str) -> None:
        """Only inbound kinds are accepted, and the valid kinds are listed."""
        with pytest.raises(TopicError) as info:
            inbound_topic("icu", BED, kind)
        assert info.value.field == "kind"
        assert "abp, vitals, infusion, patient, labs, ack" in info.value.reason

    @pytest.mark.parametrize("root", ROOT_INJECTIONS)
    def test_rejects_bad_root(self, root: str) -> None:
        """The root is validated."""
        with pytest.raises(TopicError):
            inbound_topic(root, BED, "abp")


class TestFilters:
    def test_inbound_filters(self) -> None:
        """One single-level-wildcard filter per inbound kind, under the root."""
        assert inbound_filters("icu") == [
            "icu/+/+/abp",
            "icu/+/+/vitals",
            "icu/+/+/infusion",
            "icu/+/+/patient",
            "icu/+/+/labs",
            "icu/+/+/ack",
        ]

    def test_inbound_filters_subset(self) -> None:
        """kinds selects which filters are made."""
        assert inbound_filters("h/icu", ("abp", "vitals")) == ["h/icu/+/+/abp", "h/icu/+/+/vitals"]

    def test_inbound_filters_reject_unknown_kind(self) -> None:
        """A kind that is not inbound is refused."""
        with pytest.raises(TopicError):
            inbound_filters("icu", ("abp", "#"))

    def test_ack_and_alarms_filters(self) -> None:
        """The ack filter and the alarms filter (multi-level wildcard under alarms/)."""
        assert ack_filter("icu") == "icu/+/+/ack"
        assert alarms_filter("icu") == "icu/+/+/alarms/#"
        assert alarms_filter("hospital/icu") == "hospital/icu/+/+/alarms/#"
        assert status_filter("hospital/icu") == "hospital/icu/_status/#"

    def test_per_unit_filters(self) -> None:
        """With care units, one filter per unit and kind, and the unit's alarms: the broker
        then delivers only those units (not the alarm and summary topics that
        {root}/{unit}/# would also match)."""
        assert inbound_filters("icu", ("abp", "ack"), units=["ward1", "ward4"]) == [
            "icu/ward1/+/abp",
            "icu/ward1/+/ack",
            "icu/ward4/+/abp",
            "icu/ward4/+/ack",
        ]
        assert len(inbound_filters("icu", units=["ward1"])) == len(INBOUND_KINDS)
        assert inbound_filters("icu", units=[]) == []
        assert alarms_filter("h/icu", "ward1") == "h/icu/ward1/+/alarms/#"

    @pytest.mark.parametrize("unit", ["#", "+", "ward/1", "", "w" * 65])
    def test_per_unit_filters_reject_bad_unit(self, unit: str) -> None:
        """A unit that is a wildcard, spans levels or is empty never makes a filter."""
        with pytest.raises(TopicError) as info:
            inbound_filters("icu", units=["ward1", unit])
        assert info.value.field == "unit"
        with pytest.raises(TopicError):
            alarms_filter("icu", unit)

    @pytest.mark.parametrize("build", [inbound_filters, ack_filter, alarms_filter, status_filter])
    @pytest.mark.parametrize("root", ["icu/#", "+", "", "icu/"])
    def test_filters_reject_bad_root(self, build: object, root: str) -> None:
        """No filter is built under an invalid root."""
        with pytest.raises(TopicError):
            build(root)  # type: ignore[operator]
