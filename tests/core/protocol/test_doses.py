"""Doses: each drug's standard dose, the norepinephrine-equivalent, unknown doses (issue 17)."""

from __future__ import annotations

import pytest

from streamproc.core.protocol.escalation import (
    NE_EQUIVALENT,
    Dose,
    NeEquivalent,
    dose_unknown_reason,
    ne_equivalent,
    recommend,
    standard_dose,
)
from streamproc.core.protocol.messages import Drug, Infusion, Profile, RateUnit

TS = 1_732_400_000.0
NE, VP, EPI, DOB, DOP, PHE = (
    Drug.NOREPINEPHRINE,
    Drug.VASOPRESSIN,
    Drug.EPINEPHRINE,
    Drug.DOBUTAMINE,
    Drug.DOPAMINE,
    Drug.PHENYLEPHRINE,
)


def inf(
    drug: Drug,
    rate: float,
    unit: RateUnit,
    concentration: float | None = None,
    running: bool = True,
) -> Infusion:
    return Infusion(TS, drug, rate, unit, running, concentration)


class TestStandardDose:
    """One infusion in its drug's standard unit (U/min for vasopressin, else mcg/kg/min)."""

    def test_vasopressin_u_min(self) -> None:
        """U/min is vasopressin's own unit."""
        assert standard_dose(inf(VP, 0.03, RateUnit.U_MIN), None) == Dose(VP, 0.03, "U/min")

    def test_vasopressin_ml_h_with_concentration(self) -> None:
        """mL/h times U/mL over 60 is U/min (no weight needed)."""
        d = standard_dose(inf(VP, 3.6, RateUnit.ML_H, 0.5), None)
        assert d.value == pytest.approx(0.03)
        assert d.unit == "U/min"

    def test_vasopressin_ml_h_without_concentration(self) -> None:
        """The issue's case: 30 mL/h and no concentration cannot be a dose; it says why."""
        d = standard_dose(inf(VP, 30.0, RateUnit.ML_H), None)
        assert d.value is None
        assert any("concentration" in m for m in d.missing)

    @pytest.mark.parametrize("unit", [RateUnit.MCG_KG_MIN, RateUnit.MCG_MIN])
    def test_vasopressin_in_a_catecholamine_unit(self, unit: RateUnit) -> None:
        """Vasopressin in mcg/kg/min or mcg/min is not a vasopressin dose at all."""
        d = standard_dose(inf(VP, 0.03, unit), 70.0)
        assert d.value is None
        assert any("vasopressin unit" in m for m in d.missing)

    def test_norepinephrine_mcg_min_with_weight(self) -> None:
        """mcg/min over the weight."""
        d = standard_dose(inf(NE, 14.0, RateUnit.MCG_MIN), 70.0)
        assert d.value == pytest.approx(0.2)

    def test_norepinephrine_mcg_min_without_weight(self) -> None:
        """mcg/min without a weight cannot be compared with per-kg limits: the weight is missing."""
        d = standard_dose(inf(NE, 10.0, RateUnit.MCG_MIN), None)
        assert d.value is None
        assert any("weight" in m for m in d.missing)

    def test_norepinephrine_ml_h(self) -> None:
        """mL/h with mcg/mL and a weight (4 mg in 250 mL = 16 mcg/mL, 10 mL/h, 80 kg)."""
        d = standard_dose(inf(NE, 10.0, RateUnit.ML_H, 16.0), 80.0)
        assert d.value == pytest.approx(10.0 * 16.0 / 60.0 / 80.0)

    def test_norepinephrine_ml_h_missing_both(self) -> None:
        """Both missing pieces are named."""
        d = standard_dose(inf(NE, 10.0, RateUnit.ML_H), None)
        assert d.value is None
        assert len(d.missing) == 2

    def test_norepinephrine_in_u_min(self) -> None:
        """U/min is not a norepinephrine unit."""
        d = standard_dose(inf(NE, 0.1, RateUnit.U_MIN), 70.0)
        assert d.value is None
        assert any("not U/min" in m for m in d.missing)


class TestNeEquivalent:
    """Goradia 2021: NE + epinephrine + phenylephrine/10 + dopamine/100 + vasopressin x 2.5."""

    def test_formula(self) -> None:
        """Each vasopressor by its factor; dobutamine (an inotrope) adds nothing."""
        infusions = {
            NE: inf(NE, 0.2, RateUnit.MCG_KG_MIN),
            EPI: inf(EPI, 0.1, RateUnit.MCG_KG_MIN),
            PHE: inf(PHE, 1.0, RateUnit.MCG_KG_MIN),
            DOP: inf(DOP, 5.0, RateUnit.MCG_KG_MIN),
            VP: inf(VP, 0.04, RateUnit.U_MIN),
            DOB: inf(DOB, 5.0, RateUnit.MCG_KG_MIN),
        }
        nee = ne_equivalent(infusions, 70.0)
        assert nee.value == pytest.approx(0.2 + 0.1 + 0.1 + 0.05 + 0.1)
        assert nee.unknown == ()
        assert DOB not in NE_EQUIVALENT

    def test_stopped_infusions_count_nothing(self) -> None:
        """Only running infusions are summed."""
        infusions = {NE: inf(NE, 0.5, RateUnit.MCG_KG_MIN, running=False)}
        assert ne_equivalent(infusions, 70.0) == NeEquivalent(0.0)

    def test_unknown_dose_is_named_and_left_out(self) -> None:
        """A running vasopressor whose dose is unknown is named; the sum is a lower bound."""
        infusions = {
            NE: inf(NE, 0.3, RateUnit.MCG_KG_MIN),
            VP: inf(VP, 30.0, RateUnit.ML_H),
        }
        nee = ne_equivalent(infusions, None)
        assert nee.value == pytest.approx(0.3)
        assert nee.unknown == (VP,)


class TestDoseUnknownReason:
    """The advisory's words: which drug, its rate, what is missing."""

    def test_none_when_all_known(self) -> None:
        """Every dose known: no advisory."""
        assert dose_unknown_reason({NE: inf(NE, 0.2, RateUnit.MCG_KG_MIN)}, None) is None

    def test_names_drug_and_missing_piece(self) -> None:
        """Vasopressin 30 mL/h without concentration."""
        reason = dose_unknown_reason({VP: inf(VP, 30.0, RateUnit.ML_H)}, 70.0)
        assert reason is not None
        assert "vasopressin 30 mL/h without the concentration (U/mL)" in reason
        assert "counts as running" in reason


class TestOccultVolumeCaution:
    """The occult-blood-loss caution only at a high norepinephrine-equivalent dose."""

    CAUTION = "occult blood-volume loss"

    def _cautions(self, infusions: dict[Drug, Infusion], weight: float | None = 70.0) -> str:
        rec = recommend(infusions, profile=Profile.STANDARD, weight_kg=weight, high_dose_nee=1.0)
        return " ".join(rec.cautions)

    @pytest.mark.parametrize("rate", [0.05, 0.2, 0.99])
    def test_not_below_threshold(self, rate: float) -> None:
        """The issue's defect: it was attached at 0.2 mcg/kg/min (and at any dose)."""
        assert self.CAUTION not in self._cautions({NE: inf(NE, rate, RateUnit.MCG_KG_MIN)})

    def test_not_for_unknown_mcg_min(self) -> None:
        """10 mcg/min without a weight: the dose is unknown, no caution claims it is high."""
        assert self.CAUTION not in self._cautions({NE: inf(NE, 10.0, RateUnit.MCG_MIN)}, None)

    def test_at_high_dose(self) -> None:
        """1.2 mcg/kg/min: the caution, with the dose it is based on."""
        text = self._cautions({NE: inf(NE, 1.2, RateUnit.MCG_KG_MIN)})
        assert self.CAUTION in text
        assert "1.20 mcg/kg/min" in text

    def test_high_through_vasopressin_too(self) -> None:
        """NE 0.95 plus vasopressin 0.03 U/min is 1.025 NE-equivalent: high."""
        infusions = {
            NE: inf(NE, 0.95, RateUnit.MCG_KG_MIN),
            VP: inf(VP, 0.03, RateUnit.U_MIN),
        }
        assert self.CAUTION in self._cautions(infusions)
