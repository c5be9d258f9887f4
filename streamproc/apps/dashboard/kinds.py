"""The alarm kinds as the central station shows them, served to the page as ``GET /api/kinds``.

The names come from the core (the kinds :mod:`streamproc.core.monitor` and
:mod:`streamproc.core.protocol.escalation` raise, the priorities, triggers and
audiences of :mod:`streamproc.core.protocol.alarms`); this module adds only what a
screen needs: a label per kind, its group (``patient``, ``technical``: equipment or
signal, IEC 60601-1-8; ``advisory``) and each priority's mark and word. The page
(``static/*.js``) keeps no copy: a new kind is a row here, not a change in JavaScript.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

from streamproc.core.protocol.alarms import (
    AUDIENCES,
    HYPOTENSION,
    LINE_DAMPED,
    LINE_RINGING,
    NO_PULSE,
    SIGNAL_INVALID,
    STALE,
    Priority,
    Trigger,
)
from streamproc.core.protocol.escalation import AdvisoryKind

__all__ = ["GROUPS", "LABELS", "catalog"]

#: What each kind is called on screen.
LABELS: Final[Mapping[str, str]] = {
    HYPOTENSION: "Hypotension",
    STALE: "No data from this bed",
    SIGNAL_INVALID: "Arterial signal invalid",
    LINE_DAMPED: "Arterial line damped",
    LINE_RINGING: "Arterial line ringing",
    NO_PULSE: "No arterial pulse on the trace",
    AdvisoryKind.DOPAMINE: "Advisory: dopamine running",
    AdvisoryKind.PHENYLEPHRINE: "Advisory: phenylephrine running",
    AdvisoryKind.VASOPRESSIN_DOSE: "Advisory: vasopressin dose",
    AdvisoryKind.VASOPRESSIN_WITHOUT_NE: "Advisory: vasopressin without norepinephrine",
    AdvisoryKind.PREMATURE_NE_TRAUMA: "Advisory: premature norepinephrine (trauma)",
    AdvisoryKind.PERFUSION: "Advisory: perfusion markers",
    AdvisoryKind.VASOCONSTRICTION: "Advisory: excessive vasoconstriction",
    AdvisoryKind.DOSE_UNKNOWN: "Advisory: dose cannot be checked",
}
#: Where each kind is listed on a bed's tile: technical alarms (equipment or signal, not
#: the patient) and advisories apart from the patient's alarms.
GROUPS: Final[Mapping[str, str]] = {
    HYPOTENSION: "patient",
    **dict.fromkeys((STALE, SIGNAL_INVALID, LINE_DAMPED, LINE_RINGING, NO_PULSE), "technical"),
    **dict.fromkeys(AdvisoryKind, "advisory"),
}
#: IEC 60601-1-8 priority marks, shown beside the word (never colour alone).
_MARKS: Final = {Priority.HIGH: "!!!", Priority.MEDIUM: "!!", Priority.LOW: "!"}


def catalog() -> dict[str, Any]:
    """The JSON document of ``GET /api/kinds``: kinds, priorities, triggers, audiences, and
    which kind is the hypotension alarm (its payload carries the pressure and next step)."""
    return {
        "kinds": {
            str(kind): {"label": label, "group": GROUPS[kind]} for kind, label in LABELS.items()
        },
        "priorities": {
            p.value: {"rank": p.rank, "mark": _MARKS[p], "word": p.value.upper()} for p in Priority
        },
        "triggers": {t.name.lower(): t.value for t in Trigger},
        "audiences": {a: a.replace("_", " ") for a in AUDIENCES},
        "hypotension": HYPOTENSION,
    }
