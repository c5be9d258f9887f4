"""Doses through ``replay``: unreadable rates, other drug names, dose-aware cautions (issue 17).

Each test replays the 60/40 patient (``config/scenarios/ne_60_40.toml``) with its
infusion changed as a pump or an EHR would send it.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from simulators.scenario import load_scenario, render, scenario_dir, to_jsonl
from streamproc.apps.replay import replay_lines
from streamproc.shell.config import load_config

OCCULT = "occult blood-volume loss"


def ne_60_40(*infusions: dict[str, Any]) -> list[dict[str, Any]]:
    """The 60/40 recording with its infusion lines replaced by ``infusions`` (at its time)."""
    lines = render(load_scenario(scenario_dir() / "ne_60_40.toml"))
    first = next(i for i, ln in enumerate(lines) if ln["topic"].endswith("/infusion"))
    ts = lines[first]["payload"]["ts"]
    topic = lines[first]["topic"]
    rest = [ln for ln in lines if not ln["topic"].endswith("/infusion")]
    return (
        rest[:first]
        + [{"topic": topic, "payload": {"ts": ts, "running": True, **p}} for p in infusions]
        + rest[first:]
    )


def alarms(lines: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out: list[bytes] = []
    replay_lines(to_jsonl(lines).splitlines(), load_config(environ={}), out.append)
    return [json.loads(x)["payload"] for x in out]


def hypotension(payloads: list[dict[str, Any]]) -> dict[str, Any]:
    raised = [p for p in payloads if p["kind"] == "hypotension" and p["state"] == "active"]
    assert raised, [(p["kind"], p["state"]) for p in payloads]
    return raised[0]


class TestUnknownDose:
    """A running infusion whose rate cannot be converted: running for the ladder, advised."""

    def test_vasopressin_ml_h_without_concentration(self) -> None:
        """NE plus vasopressin 30 mL/h and no concentration: the next step is the third agent
        (vasopressin counts as running) and an advisory says the dose cannot be checked."""
        out = alarms(
            ne_60_40(
                {"drug": "norepinephrine", "rate": 0.35, "unit": "mcg/kg/min"},
                {"drug": "vasopressin", "rate": 30, "unit": "mL/h"},
            )
        )
        hypo = hypotension(out)
        assert hypo["step"] == "add_epinephrine_or_dobutamine"
        assert hypo["ne_equivalent_unknown"] == ["vasopressin"]
        unknown = [p for p in out if p["kind"] == "advisory_dose_unknown"]
        assert unknown
        assert unknown[0]["state"] == "active"
        assert "concentration (U/mL)" in unknown[0]["reason"]

    def test_vasopressin_in_mcg_kg_min(self) -> None:
        """Vasopressin in a catecholamine unit: the advisory names the unit."""
        out = alarms(
            ne_60_40(
                {"drug": "norepinephrine", "rate": 0.35, "unit": "mcg/kg/min"},
                {"drug": "vasopressin", "rate": 0.03, "unit": "mcg/kg/min"},
            )
        )
        unknown = [p for p in out if p["kind"] == "advisory_dose_unknown"]
        assert unknown
        assert "vasopressin unit" in unknown[0]["reason"]

    def test_known_doses_raise_no_advisory(self) -> None:
        """The scenario as written (NE 0.35 mcg/kg/min): no dose advisory."""
        out = alarms(ne_60_40({"drug": "norepinephrine", "rate": 0.35, "unit": "mcg/kg/min"}))
        assert not [p for p in out if p["kind"] == "advisory_dose_unknown"]


class TestDrugNames:
    """International names are the contract's drugs, not unknown ones."""

    @pytest.mark.parametrize("name", ["noradrenaline", "Noradrenaline", "levophed"])
    def test_noradrenaline_is_norepinephrine(self, name: str) -> None:
        """The bed is on norepinephrine: the next step is vasopressin, not starting NE."""
        hypo = hypotension(alarms(ne_60_40({"drug": name, "rate": 0.35, "unit": "mcg/kg/min"})))
        assert hypo["on_norepinephrine"] is True
        assert hypo["step"] == "add_vasopressin"


class TestDoseAwareAdvice:
    """The occult-volume-loss caution only at a high norepinephrine-equivalent dose."""

    @pytest.mark.parametrize(("rate", "caution"), [(0.05, False), (0.35, False), (1.2, True)])
    def test_caution_by_dose(self, rate: float, caution: bool) -> None:
        """NE 0.05 and 0.35 mcg/kg/min: no caution; 1.2: the caution, with the dose."""
        hypo = hypotension(
            alarms(ne_60_40({"drug": "norepinephrine", "rate": rate, "unit": "mcg/kg/min"}))
        )
        assert hypo["ne_equivalent"] == pytest.approx(rate)
        assert (OCCULT in " ".join(hypo["cautions"])) is caution
        assert (OCCULT in hypo["recommendation"]) is caution

    def test_ten_mcg_min_without_weight(self) -> None:
        """10 mcg/min and no weight on record: no caution, a dose advisory (weight missing)."""
        lines = ne_60_40({"drug": "norepinephrine", "rate": 10, "unit": "mcg/min"})
        for ln in lines:
            if ln["topic"].endswith("/patient"):
                ln["payload"].pop("weight_kg", None)
        out = alarms(lines)
        hypo = hypotension(out)
        assert OCCULT not in hypo["recommendation"]
        unknown = [p for p in out if p["kind"] == "advisory_dose_unknown"]
        assert unknown
        assert "weight" in unknown[0]["reason"]
