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

from streamproc.core.messages import Drug, Infusion, Profile, RateUnit

__all__ = [
    "DISCLAIMER",
    "SOURCES",
    "AdvisoryKind",
    "Recommendation",
    "Step",
    "current_step",
    "norepinephrine_dose",
    "recommend",
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
}

_VASOPRESSORS_3RD: Final = (Drug.EPINEPHRINE, Drug.DOBUTAMINE)


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
) -> Recommendation:
    """The next step for a patient below target, from what is running now."""
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
    if step is Step.ADD_VASOPRESSIN:
        cautions.append("very high norepinephrine needs suggest occult blood-volume loss")
        if profile is Profile.TRAUMA:
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
