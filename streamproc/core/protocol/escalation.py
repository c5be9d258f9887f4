"""The escalation ladder and the safety advisories (protocol sections 4 and 5).

Pure functions of what is running: given the infusions, the patient's context
and the labs, say the next step to consider, with its checks and cautions, in
words a nurse reads at a glance. Decision support for clinicians, never orders.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Final

from streamproc.core.protocol.messages import Drug, Infusion, Profile, RateUnit

__all__ = [
    "DISCLAIMER",
    "HIGH_DOSE_SOURCE",
    "NE_EQUIVALENT",
    "NE_EQUIVALENT_SOURCE",
    "SOURCES",
    "AdvisoryKind",
    "Dose",
    "NeEquivalent",
    "Recommendation",
    "Step",
    "current_step",
    "dose_unknown_reason",
    "ne_equivalent",
    "norepinephrine_dose",
    "recommend",
    "standard_dose",
    "vasopressin_u_min",
]

DISCLAIMER: Final = "Decision support only, not an order: confirm at the bedside."

#: Where the ladder comes from (shared/seed, the guideline summary's references).
SOURCES: Final[tuple[str, ...]] = (
    "Vasopressor Management in Hypotension. Praxis Medical Insights, 2026",
    "Norepinephrine Tapering and Vasopressin Addition Protocol. Praxis Medical Insights, 2026",
    "Guideline Directed Topic Overview. Dr.Oracle Medical Advisory Board, 2025",
)


class Step(StrEnum):
    """Rungs of the ladder, named by what to do next."""

    START_NOREPINEPHRINE = "assess_volume_start_norepinephrine"
    ADD_VASOPRESSIN = "add_vasopressin"
    ADD_EPINEPHRINE_OR_DOBUTAMINE = "add_epinephrine_or_dobutamine"
    REFRACTORY = "refractory_shock_senior_review"


class AdvisoryKind(StrEnum):
    """Safety advisories, each its own alarm kind (low priority)."""

    DOPAMINE = "advisory_dopamine"
    PHENYLEPHRINE = "advisory_phenylephrine"
    VASOPRESSIN_DOSE = "advisory_vasopressin_dose"
    VASOPRESSIN_WITHOUT_NE = "advisory_vasopressin_without_ne"
    PREMATURE_NE_TRAUMA = "advisory_premature_ne_trauma"
    PERFUSION = "advisory_perfusion"
    VASOCONSTRICTION = "advisory_vasoconstriction"
    #: A running infusion whose dose cannot be converted (no concentration, weight or a
    #: unit that is not the drug's): it counts as running, its dose checks cannot run.
    DOSE_UNKNOWN = "advisory_dose_unknown"


ADVISORY_REASONS: Final[Mapping[AdvisoryKind, str]] = {
    AdvisoryKind.DOPAMINE: (
        "Dopamine is running: higher mortality and more arrhythmias than norepinephrine; "
        "no benefit from a 'renal dose'. Consider norepinephrine instead."
    ),
    AdvisoryKind.PHENYLEPHRINE: (
        "Phenylephrine is running: reserved for norepinephrine-induced arrhythmia or "
        "high-output hypotension."
    ),
    AdvisoryKind.VASOPRESSIN_DOSE: (
        "Vasopressin above 0.04 U/min: risk of cardiac, digital and splanchnic ischaemia "
        "without added benefit. Usual dose 0.03 U/min."
    ),
    AdvisoryKind.VASOPRESSIN_WITHOUT_NE: (
        "Vasopressin is running without norepinephrine: vasopressin is not a monotherapy."
    ),
    AdvisoryKind.PREMATURE_NE_TRAUMA: (
        "Trauma without brain injury: norepinephrine is running while SBP is at or above "
        "target. A premature vasopressor may worsen organ perfusion."
    ),
    AdvisoryKind.PERFUSION: (
        "MAP is at target but perfusion markers are abnormal. MAP alone does not prove "
        "adequate resuscitation: consider dobutamine 2.5-10 mcg/kg/min; repeat lactate "
        "within 6 h."
    ),
    AdvisoryKind.VASOCONSTRICTION: (
        "Rising norepinephrine with falling urine output and rising lactate: possible "
        "excessive vasoconstriction. Reassess volume before escalating further."
    ),
    AdvisoryKind.DOSE_UNKNOWN: (
        "Dose cannot be checked: the infusion counts as running for the escalation ladder, "
        "but its dose limits and the norepinephrine-equivalent dose cannot be worked out. "
        "Enter what is missing on the pump or in the record."
    ),
}

_VASOPRESSORS_3RD: Final = (Drug.EPINEPHRINE, Drug.DOBUTAMINE)

#: Where the norepinephrine-equivalent factors come from.
NE_EQUIVALENT_SOURCE: Final = (
    "Goradia S, Sardaneh AA, Narayan SW, Penm J, Patanwala AE. Vasopressor dose "
    "equivalence: a scoping review and suggested formula. J Crit Care 2021;61:233-240"
)
#: Norepinephrine-equivalent dose (NEE, mcg/kg/min) per unit of each vasopressor's
#: standard dose (NE_EQUIVALENT_SOURCE): NEE = norepinephrine + epinephrine
#: + phenylephrine / 10 + dopamine / 100 (all mcg/kg/min) + vasopressin (U/min) x 2.5.
#: Dobutamine is an inotrope, not a vasopressor: it adds nothing.
NE_EQUIVALENT: Final[Mapping[Drug, float]] = {
    Drug.NOREPINEPHRINE: 1.0,
    Drug.EPINEPHRINE: 1.0,
    Drug.PHENYLEPHRINE: 0.1,
    Drug.DOPAMINE: 0.01,
    Drug.VASOPRESSIN: 2.5,
}
#: Where the default high-dose threshold (``monitor.high_dose_nee``) comes from.
HIGH_DOSE_SOURCE: Final = (
    "Auchet T, Regnier MA, Girerd N, Levy B. Outcome of patients with septic shock and "
    "high-dose vasopressor therapy. Ann Intensive Care 2017;7:43 (high dose: "
    "norepinephrine-equivalent > 1 mcg/kg/min)"
)


@dataclass(frozen=True, slots=True)
class Dose:
    """One infusion's dose in its drug's standard unit, or what is missing to know it.

    The standard unit is U/min for vasopressin and mcg/kg/min for the others (the units
    of the protocol's limits and of the norepinephrine-equivalent formula).
    """

    drug: Drug
    #: The dose, or None when it cannot be worked out (``missing`` says why).
    value: float | None
    unit: str
    #: What would be needed, in words ("concentration (U/mL) of a mL/h rate").
    missing: tuple[str, ...] = ()


def standard_dose(inf: Infusion, weight_kg: float | None) -> Dose:
    """``inf``'s dose in its drug's standard unit (see :class:`Dose`)."""
    drug, rate, unit = inf.drug, inf.rate, inf.unit
    if drug is Drug.VASOPRESSIN:
        if unit is RateUnit.U_MIN:
            return Dose(drug, rate, "U/min")
        if unit is RateUnit.ML_H:
            if inf.concentration is None:
                return Dose(drug, None, "U/min", ("the concentration (U/mL) of a mL/h rate",))
            return Dose(drug, rate * inf.concentration / 60.0, "U/min")
        return Dose(
            drug, None, "U/min", (f"a vasopressin unit (U/min, or mL/h with U/mL), not {unit}",)
        )
    if unit is RateUnit.MCG_KG_MIN:
        return Dose(drug, rate, "mcg/kg/min")
    if unit is RateUnit.U_MIN:
        return Dose(
            drug, None, "mcg/kg/min", (f"a {drug} unit (mcg/kg/min, mcg/min or mL/h), not U/min",)
        )
    mcg_min: float | None = rate  # mcg/min, or mL/h times mcg/mL over 60
    missing = []
    if unit is RateUnit.ML_H:
        if inf.concentration is None:
            mcg_min = None
            missing.append("the concentration (mcg/mL) of a mL/h rate")
        else:
            mcg_min = rate * inf.concentration / 60.0
    if not weight_kg:
        missing.append(f"the patient's weight (for {unit} in mcg/kg/min)")
    if mcg_min is None or not weight_kg:
        return Dose(drug, None, "mcg/kg/min", tuple(missing))
    return Dose(drug, mcg_min / weight_kg, "mcg/kg/min")


def _running_doses(infusions: Mapping[Drug, Infusion], weight_kg: float | None) -> list[Dose]:
    return [
        standard_dose(infusions[d], weight_kg)
        for d in sorted(running(infusions))  # (sorted: the same words in the same order)
    ]


def dose_unknown_reason(infusions: Mapping[Drug, Infusion], weight_kg: float | None) -> str | None:
    """The ``advisory_dose_unknown`` reason, or None when every running dose is known."""
    parts = [
        f"{d.drug} {infusions[d.drug].rate:g} {infusions[d.drug].unit} without "
        + " and ".join(d.missing)
        for d in _running_doses(infusions, weight_kg)
        if d.value is None
    ]
    if not parts:
        return None
    return f"{ADVISORY_REASONS[AdvisoryKind.DOSE_UNKNOWN]} ({'; '.join(parts)})"


@dataclass(frozen=True, slots=True)
class NeEquivalent:
    """The vasopressors running, as one norepinephrine-equivalent dose (mcg/kg/min)."""

    #: The sum over the running vasopressors whose dose is known (a lower bound when
    #: ``unknown`` is not empty).
    value: float
    #: Running vasopressors whose dose cannot be worked out, left out of ``value``.
    unknown: tuple[Drug, ...] = ()


def ne_equivalent(infusions: Mapping[Drug, Infusion], weight_kg: float | None) -> NeEquivalent:
    """The norepinephrine-equivalent dose of what runs (``NE_EQUIVALENT``)."""
    total, unknown = 0.0, []
    for dose in _running_doses(infusions, weight_kg):
        factor = NE_EQUIVALENT.get(dose.drug)
        if factor is None:
            continue  # an inotrope
        if dose.value is None:
            unknown.append(dose.drug)
        else:
            total += factor * dose.value
    return NeEquivalent(total, tuple(unknown))


@dataclass(frozen=True, slots=True)
class Recommendation:
    """The next step, with the checks that come first and the cautions."""

    step: Step
    text: str
    checks: tuple[str, ...]
    cautions: tuple[str, ...]
    sources: tuple[str, ...] = SOURCES

    def as_text(self) -> str:
        """One paragraph: step, checks, cautions, disclaimer."""
        parts = [self.text]
        if self.checks:
            parts.append("Check first: " + "; ".join(self.checks) + ".")
        if self.cautions:
            parts.append("Caution: " + "; ".join(self.cautions) + ".")
        parts.append(DISCLAIMER)
        return " ".join(parts)


def running(infusions: Mapping[Drug, Infusion]) -> frozenset[Drug]:
    """The drugs whose infusion is running at a non-zero rate."""
    return frozenset(d for d, inf in infusions.items() if inf.running and inf.rate > 0)


def current_step(infusions: Mapping[Drug, Infusion]) -> Step:
    """Which rung of the ladder applies, from what is running now (protocol table 4)."""
    on = running(infusions)
    if Drug.NOREPINEPHRINE not in on:
        return Step.START_NOREPINEPHRINE
    if Drug.VASOPRESSIN not in on:
        return Step.ADD_VASOPRESSIN
    if not on.intersection(_VASOPRESSORS_3RD):
        return Step.ADD_EPINEPHRINE_OR_DOBUTAMINE
    return Step.REFRACTORY


_STEP_TEXT: Final[Mapping[Step, str]] = {
    Step.START_NOREPINEPHRINE: (
        "Hypotension without a vasopressor: assess volume (30 mL/kg crystalloid) and "
        "consider starting norepinephrine (not dopamine)."
    ),
    Step.ADD_VASOPRESSIN: (
        "On norepinephrine and still below target: consider adding vasopressin 0.03 U/min "
        "(never above 0.04 U/min) and keep titrating norepinephrine. Do not use vasopressin "
        "alone."
    ),
    Step.ADD_EPINEPHRINE_OR_DOBUTAMINE: (
        "On norepinephrine and vasopressin and still below target: consider adding "
        "epinephrine 0.05-2 mcg/kg/min (especially with myocardial dysfunction), or "
        "dobutamine 2.5-20 mcg/kg/min if cardiac output is low (ScvO2 < 70%)."
    ),
    Step.REFRACTORY: (
        "Refractory shock on three agents: senior review now; re-check volume status and "
        "look for occult bleeding."
    ),
}


def recommend(
    infusions: Mapping[Drug, Infusion],
    *,
    profile: Profile,
    weight_kg: float | None = None,
    crystalloid_ml: float | None = None,
    crystalloid_ml_per_kg: float = 30.0,
    peritonitis: bool = False,
    has_arterial_line: bool = True,
    high_dose_nee: float = 1.0,
) -> Recommendation:
    """The next step for a patient below target, from what is running now.

    The occult-volume-loss caution ("enormous doses of norepinephrine", the seed) is
    given only when the norepinephrine-equivalent dose reaches ``high_dose_nee``.
    """
    step = current_step(infusions)
    checks: list[str] = []
    if crystalloid_ml is not None and weight_kg is not None:
        given = crystalloid_ml / weight_kg
        if given < crystalloid_ml_per_kg:
            checks.append(
                f"volume: {given:.0f} of {crystalloid_ml_per_kg:.0f} mL/kg crystalloid given so far"
            )
    else:
        checks.append(
            f"volume: at least {crystalloid_ml_per_kg:.0f} mL/kg crystalloid given "
            "(first 3 h in sepsis)"
        )
    if profile in (Profile.TRAUMA, Profile.TRAUMA_TBI):
        checks.append("haemorrhage or trauma: blood products before escalating vasopressors")
    if Drug.NOREPINEPHRINE in running(infusions):
        checks.append(
            "norepinephrine delivery: central line (or large peripheral vein), "
            "4 mg in 1000 mL D5W = 4 mcg/mL"
        )
    if not has_arterial_line:
        checks.append("arterial catheter for continuous pressure")
    cautions: list[str] = []
    nee = ne_equivalent(infusions, weight_kg)
    if Drug.NOREPINEPHRINE in running(infusions) and nee.value >= high_dose_nee:
        cautions.append(
            f"high vasopressor dose (norepinephrine-equivalent {nee.value:.2f} mcg/kg/min, "
            f"threshold {high_dose_nee:g}): very high norepinephrine needs suggest occult "
            "blood-volume loss"
        )
    if step is Step.ADD_VASOPRESSIN and profile is Profile.TRAUMA:
        cautions.append("haemorrhagic shock: vasopressin 4 IU bolus then 0.04 IU/min")
    if peritonitis:
        cautions.append("peritonitis: avoid fluid overload (gut oedema, abdominal pressure)")
    return Recommendation(
        step=step, text=_STEP_TEXT[step], checks=tuple(checks), cautions=tuple(cautions)
    )


def vasopressin_u_min(inf: Infusion) -> float | None:
    """Vasopressin rate in U/min, or None when the pump's unit cannot say."""
    if inf.unit is RateUnit.U_MIN:
        return inf.rate
    if inf.unit is RateUnit.ML_H and inf.concentration is not None:
        return inf.rate * inf.concentration / 60.0
    return None


def norepinephrine_dose(inf: Infusion, weight_kg: float | None) -> tuple[float, str]:
    """A comparable norepinephrine dose: mcg/kg/min when it can be had, else mcg/min.

    Returns the value and its unit; used to tell whether the dose is rising.
    """
    if inf.unit is RateUnit.MCG_KG_MIN:
        return inf.rate, "mcg/kg/min"
    if inf.unit is RateUnit.ML_H and inf.concentration is not None:
        mcg_min = inf.rate * inf.concentration / 60.0
    elif inf.unit is RateUnit.MCG_MIN:
        mcg_min = inf.rate
    else:  # U/min is not a norepinephrine unit: compare raw rates
        return inf.rate, inf.unit.value
    if weight_kg:
        return mcg_min / weight_kg, "mcg/kg/min"
    return mcg_min, "mcg/min"
