"""Beats and MAP against a real record's own references (``streamproc.apps.evaluation.agreement``)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from streamproc.apps.cli import main
from streamproc.apps.evaluation.agreement import (
    PAT_WINDOW_S,
    Agreement,
    MapScore,
    match_beats,
    record_agreement,
)
from streamproc.apps.evaluation.truth import load_labels, resolve_record
from tests.abp_data import abp_records

LABELS = Path(__file__).resolve().parents[3] / "config" / "labels"


def agreement_of(name: str) -> Agreement:
    abp_records()  # fails clearly when the records are missing
    path = LABELS / f"{name}.toml"
    labels = load_labels(path)
    return record_agreement(
        name,
        resolve_record(labels, path),
        artifacts=[(a.start_s, a.end_s) for a in labels.artifact],
        channel=labels.channel,
        sampfrom=labels.sampfrom,
        sampto=labels.sampto,
    )


class TestMatchBeats:
    """One-to-one pairing of reference times with detected times after them."""

    def test_all_paired(self) -> None:
        """Each R wave followed by an onset 0.1 s later: all true positives."""
        assert match_beats([1.0, 2.0, 3.0], [1.1, 2.1, 3.1], PAT_WINDOW_S) == (3, 0, 0)

    def test_missed_and_extra(self) -> None:
        """An R wave with no onset is a false negative, an onset with no R wave a false
        positive."""
        assert match_beats([1.0, 2.0, 3.0], [1.1, 3.1, 3.9], PAT_WINDOW_S) == (2, 1, 1)

    def test_one_onset_pairs_once(self) -> None:
        """Two R waves cannot share one onset."""
        assert match_beats([1.0, 1.05], [1.2], PAT_WINDOW_S) == (1, 1, 0)

    def test_onset_before_r_wave_is_not_its_beat(self) -> None:
        """A pulse cannot precede its own R wave."""
        assert match_beats([1.0], [0.95], PAT_WINDOW_S) == (0, 1, 1)


class TestMapScore:
    """Bias, SD and largest difference of ours minus the monitor's."""

    def test_figures(self) -> None:
        """Differences +2 and -4: bias -1, SD 4.24, max 4."""
        m = MapScore(((0.0, 80.0, 82.0), (60.0, 90.0, 86.0)))
        assert m.bias == pytest.approx(-1.0)
        assert m.sd == pytest.approx(4.2426, abs=1e-3)
        assert m.max_abs == pytest.approx(4.0)


class TestRealRecords:
    """The repository's real records (data/abp): the figures docs/evaluation.md quotes."""

    def test_mixedsignals_beats(self) -> None:
        """ECG-referenced: at least 95 % sensitivity and 98 % positive predictivity."""
        a = agreement_of("mixedsignals")
        assert a.beats_all is not None
        assert a.beats_all.reference > 350
        assert a.beats_all.sensitivity is not None
        assert a.beats_all.sensitivity >= 0.95
        assert a.beats_all.ppv is not None
        assert a.beats_all.ppv >= 0.98
        assert a.map is None  # no numerics record beside it

    def test_041s_skips_a_saturated_lead(self) -> None:
        """Lead I of 041s clips and has a gap: the reference comes from another lead."""
        a = agreement_of("041s")
        assert a.beats_all is not None
        assert a.beats_all.lead != "I"
        assert a.beats_all.reference >= 20

    def test_s00001_map_against_the_monitor(self) -> None:
        """The monitor's ABPMean once a minute, outside the labelled artifacts: five values,
        the minute's mean of valid beats within 5 mmHg on average."""
        a = agreement_of("s00001")
        assert a.map is not None
        assert a.map_minute is not None
        assert a.map.n == 5
        assert a.map_minute.bias is not None
        assert abs(a.map_minute.bias) < 5.0
        assert a.beats_valid is not None
        assert a.beats_valid.sensitivity is not None
        assert a.beats_valid.sensitivity >= 0.95


class TestEvaluateCommand:
    """``streamproc evaluate`` on labels files reports the agreement."""

    def test_table_and_json(self, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
        """The table on stdout and the figures under ``agreement`` in --json."""
        abp_records()
        out = tmp_path / "ev.json"
        assert main(["evaluate", str(LABELS / "041s.toml"), "--json", str(out)]) == 0
        text = capsys.readouterr().out
        assert "beats against the ECG's R waves" in text
        assert "| 041s |" in text
        doc = json.loads(out.read_text())
        assert doc["agreement"][0]["name"] == "041s"
        assert doc["agreement"][0]["beats_all"]["tp"] >= 20
