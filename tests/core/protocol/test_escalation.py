"""The escalation ladder (protocol section 4)."""

from __future__ import annotations

import pytest

from streamproc.core.protocol.escalation import (
    Step,
    current_step,
    norepinephrine_dose,
    recommend,
    vasopressin_u_min,
)
from streamproc.core.protocol.messages import Drug, Infusion, Profile, RateUnit

TS = 1_732_400_000.0


def inf(
    drug: Drug,
    rate: float = 0.1,
    unit: RateUnit = RateUnit.MCG_KG_MIN,
    running: bool = True,
    concentration: float | None = None,
) -> Infusion:
    return Infusion(TS, drug, rate, unit, running, concentration)


def on(*drugs: Drug) -> dict[Drug, Infusion]:
    return {
        d: inf(
            d,
            0.03 if d is Drug.VASOPRESSIN else 0.2,
            RateUnit.U_MIN if d is Drug.VASOPRESSIN else RateUnit.MCG_KG_MIN,
        )
        for d in drugs
    }


class TestLadder:
    @pytest.mark.parametrize(
        ("drugs", "step", "words"),
        [
            ((), Step.START_NOREPINEPHRINE, "consider starting norepinephrine (not dopamine)"),
            ((Drug.NOREPINEPHRINE,), Step.ADD_VASOPRESSIN, "vasopressin 0.03 U/min"),
            (
                (Drug.NOREPINEPHRINE, Drug.VASOPRESSIN),
                Step.ADD_EPINEPHRINE_OR_DOBUTAMINE,
                "epinephrine 0.05-2 mcg/kg/min",
            ),
            (
                (Drug.NOREPINEPHRINE, Drug.VASOPRESSIN, Drug.EPINEPHRINE),
                Step.REFRACTORY,
                "senior review",
            ),
            (
                (Drug.NOREPINEPHRINE, Drug.VASOPRESSIN, Drug.DOBUTAMINE),
                Step.REFRACTORY,
                "occult bleeding",
            ),
            ((Drug.DOPAMINE,), Step.START_NOREPINEPHRINE, "norepinephrine"),
        ],
    )
    def test_step_from_what_runs(self, drugs: tuple[Drug, ...], step: Step, words: str) -> None:
        """Each row of the protocol's table gives its step, in plain words."""
        rec = recommend(on(*drugs), profile=Profile.STANDARD)
        assert rec.step is step
        assert words in rec.as_text()
        assert "not an order" in rec.as_text()
        assert rec.sources

    def test_stopped_infusion_does_not_count(self) -> None:
        """A paused norepinephrine pump is not 'on norepinephrine'."""
        infusions = {Drug.NOREPINEPHRINE: inf(Drug.NOREPINEPHRINE, running=False)}
        assert current_step(infusions) is Step.START_NOREPINEPHRINE
        infusions = {Drug.NOREPINEPHRINE: inf(Drug.NOREPINEPHRINE, rate=0.0)}
        assert current_step(infusions) is Step.START_NOREPINEPHRINE

    def test_volume_check_uses_weight(self) -> None:
        """With weight and fluids known, the check says how much of 30 mL/kg was given."""
        rec = recommend(
            on(Drug.NOREPINEPHRINE), profile=Profile.STANDARD, weight_kg=70, crystalloid_ml=1400
        )
        assert any("20 of 30 mL/kg" in c for c in rec.checks)
        rec = recommend(
            on(Drug.NOREPINEPHRINE), profile=Profile.STANDARD, weight_kg=70, crystalloid_ml=2500
        )
        assert not any("mL/kg" in c for c in rec.checks)

    def test_trauma_and_peritonitis_cautions(self) -> None:
        """Trauma asks for blood products first; peritonitis warns of fluid overload."""
        rec = recommend(on(Drug.NOREPINEPHRINE), profile=Profile.TRAUMA, peritonitis=True)
        assert any("blood products" in c for c in rec.checks)
        assert any("4 IU bolus" in c for c in rec.cautions)
        assert any("peritonitis" in c for c in rec.cautions)

    def test_arterial_line_check(self) -> None:
        """Without an arterial line the check asks for one."""
        rec = recommend({}, profile=Profile.STANDARD, has_arterial_line=False)
        assert any("arterial catheter" in c for c in rec.checks)


class TestDoses:
    def test_vasopressin_units(self) -> None:
        """U/min as is; mL/h with U/mL concentration converted; other units unknown."""
        assert vasopressin_u_min(inf(Drug.VASOPRESSIN, 0.04, RateUnit.U_MIN)) == 0.04
        assert vasopressin_u_min(
            inf(Drug.VASOPRESSIN, 6.0, RateUnit.ML_H, concentration=0.4)
        ) == pytest.approx(0.04)
        assert vasopressin_u_min(inf(Drug.VASOPRESSIN, 6.0, RateUnit.ML_H)) is None

    def test_norepinephrine_dose_normalised(self) -> None:
        """mL/h at 4 mcg/mL for 70 kg becomes mcg/kg/min."""
        dose, unit = norepinephrine_dose(
            inf(Drug.NOREPINEPHRINE, 21.0, RateUnit.ML_H, concentration=4.0), 70.0
        )
        assert unit == "mcg/kg/min"
        assert dose == pytest.approx(0.02)
        assert norepinephrine_dose(inf(Drug.NOREPINEPHRINE, 10.0, RateUnit.MCG_MIN), None) == (
            10.0,
            "mcg/min",
        )
