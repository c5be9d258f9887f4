"""Every number of the clinical protocol, as settings with the protocol's defaults.

The shell (``streamproc.shell.config``) fills these from TOML and environment
variables; the core only reads them. Each group validates itself and names the
offending key (``section.key``) when a value is impossible.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields

__all__ = [
    "AlarmSettings",
    "BeatSettings",
    "HypotensionSettings",
    "InvalidSettingError",
    "MonitorSettings",
    "Settings",
    "TargetSettings",
]


class InvalidSettingError(ValueError):
    """A setting has an impossible value: the operator's fault.

    Attributes:
        key: dotted name of the setting, as in the TOML file.
        reason: what is wrong with it.
    """

    def __init__(self, key: str, reason: str) -> None:
        self.key = key
        self.reason = reason
        super().__init__(f"setting {key}: {reason}")


#: Most beats the line-quality judgement keeps (``signal.state.LINE_MAX_BEATS``).
_LINE_MAX_BEATS = 32


def _validate_positive(section: str, obj: object, *, allow_zero: tuple[str, ...] = ()) -> None:
    for f in fields(obj):  # type: ignore[arg-type]
        value = getattr(obj, f.name)
        if isinstance(value, bool) or not isinstance(value, int | float):
            continue
        key = f"{section}.{f.name}"
        if not math.isfinite(value):
            raise InvalidSettingError(key, f"must be a finite number, got {value!r}")
        if f.name in allow_zero:
            if value < 0:
                raise InvalidSettingError(key, f"must be >= 0, got {value!r}")
        elif value <= 0:
            raise InvalidSettingError(key, f"must be > 0, got {value!r}")


@dataclass(frozen=True, slots=True)
class BeatSettings:
    """Pulse-onset detection and per-beat signal quality."""

    lowpass_hz: float = 16.0
    ssf_window_s: float = 0.128
    refractory_s: float = 0.25
    #: Detection threshold as a fraction of the slope-sum peak level (the
    #: largest slope sum over the last ``threshold_window_s``).
    threshold_fraction: float = 0.35
    #: Slope-sum peaks below this (mmHg) are noise, never a beat.
    min_upstroke_mmhg: float = 2.0
    min_sbp: float = 20.0
    max_sbp: float = 250.0
    min_dbp: float = 5.0
    max_dbp: float = 220.0
    min_map: float = 15.0
    max_map: float = 220.0
    min_pulse_pressure: float = 3.0
    max_pulse_pressure: float = 180.0
    min_hr: float = 20.0
    max_hr: float = 250.0
    #: Beat-to-beat MAP jump (fraction of the recent median) that makes a beat suspect.
    max_jump_fraction: float = 0.4
    #: Consecutive mutually consistent suspect beats accepted as a new level.
    jump_confirm_beats: int = 3
    #: Fraction of a beat's samples within 2 mmHg of its max that marks a square wave.
    max_plateau_fraction: float = 0.35
    # --- added with the beat detector (streamproc.core.signal.beats) ---
    #: Width of the band below a beat's max counted by ``max_plateau_fraction`` (mmHg).
    plateau_band_mmhg: float = 2.0
    #: ... but never wider than this fraction of the beat's pulse pressure.
    plateau_band_pp_fraction: float = 0.1
    #: Suspect beats confirm a new level (of MAP, or of beat length) if their
    #: values spread less than this fraction of their median.
    jump_confirm_fraction: float = 0.25
    #: Start of each segment: SSF level learnt over this long before the first detection (s).
    learning_s: float = 2.0
    #: The SSF peak level is the largest SSF in this trailing window (s): the
    #: threshold falls back this long after an amplitude drop.
    threshold_window_s: float = 2.5
    #: A pulse interval longer than this (s) is a pause or lost signal: no beat.
    max_beat_s: float = 5.0
    #: A beat shorter than this fraction of the recent beats' median is premature
    #: (split by an artifact, or ectopic): not valid.
    min_rr_fraction: float = 0.6
    # --- line quality (issue 17; ``_kernels.judge_line``) ---
    #: A beat whose pulse pressure is below this (mmHg) at a mean below
    #: ``no_pulse_below_map`` is no arterial pulse (quality ``no_pulse``, never valid).
    pulse_min_pp_mmhg: float = 10.0
    #: ... a beating heart with output leaves a larger pulse, or a higher mean.
    no_pulse_below_map: float = 50.0
    #: A change of direction within a beat counts as a turn (peak, notch, ringing)
    #: past this fraction of its pulse pressure.
    turn_fraction: float = 0.06
    #: The line is judged on this many of its recent beats (artifact beats not counted) ...
    line_beats: int = 8
    #: ... damped, ringing or pulseless when at least this many of them are ...
    line_enter_beats: int = 6
    #: ... and fine again when at most this many of them are.
    line_leave_beats: int = 2
    #: A damped beat: no notch (at most one turn) and an upstroke this slow, its
    #: steepest rise over that of a sine of the beat's rate and pulse pressure.
    damped_max_sharpness: float = 2.0
    #: A ringing beat: at least this many turns (peak, notch and wave are three).
    ringing_min_turns: int = 5
    #: The line's reference (pulse pressure, MAP, time to peak) follows its fine
    #: beats over this long (s) ...
    line_reference_s: float = 120.0
    #: ... and a beat is damped whose pulse pressure narrowed below this fraction
    #: of it, at a steady mean, while its peak came this many times later.
    damped_narrow_pp_fraction: float = 0.7
    damped_slow_peak_factor: float = 1.25

    def __post_init__(self) -> None:
        _validate_positive("beats", self)
        if self.line_beats > _LINE_MAX_BEATS:
            raise InvalidSettingError(
                "beats.line_beats", f"must be at most {_LINE_MAX_BEATS}, got {self.line_beats!r}"
            )
        if not self.line_leave_beats < self.line_enter_beats <= self.line_beats:
            raise InvalidSettingError(
                "beats.line_enter_beats",
                "must be above beats.line_leave_beats and at most beats.line_beats, got "
                f"{self.line_enter_beats!r} (leave {self.line_leave_beats!r}, "
                f"of {self.line_beats!r})",
            )


@dataclass(frozen=True, slots=True)
class TargetSettings:
    """Pressure targets by profile (protocol section 2)."""

    standard_map: float = 65.0
    chronic_hypertension_map: float = 70.0
    elderly_map: float = 60.0
    trauma_sbp: float = 80.0
    trauma_tbi_map: float = 65.0
    #: Above this age (years), with no explicit profile, the elderly target applies.
    elderly_age: float = 75.0

    def __post_init__(self) -> None:
        _validate_positive("targets", self)


@dataclass(frozen=True, slots=True)
class HypotensionSettings:
    """The sustained-condition timing (protocol section 3)."""

    rolling_window_s: float = 10.0
    min_beats_in_window: int = 3
    hold_s: float = 60.0
    critical_map: float = 50.0
    critical_hold_s: float = 15.0
    clear_margin: float = 2.0
    clear_hold_s: float = 30.0
    #: Valid data that stops for longer than this breaks a "continuous" run.
    max_invalid_gap_s: float = 60.0
    #: Waveform beats newer than this make ``vitals`` numerics redundant.
    waveform_fresh_s: float = 15.0
    #: An NIBP reading stands until the next one, but not longer than this.
    nibp_stands_s: float = 900.0
    #: An arterial-line numeric stands this long (they arrive every few seconds).
    art_numeric_stands_s: float = 10.0

    def __post_init__(self) -> None:
        _validate_positive("hypotension", self)


@dataclass(frozen=True, slots=True)
class MonitorSettings:
    """Technical alarms and context expiry."""

    #: Waveform arriving without a valid beat for this long: ``abp_signal_invalid``.
    signal_invalid_s: float = 30.0
    #: Valid beats for this long clear ``abp_signal_invalid``.
    signal_valid_clear_s: float = 10.0
    #: A bed that was sending and has been silent this long: ``data_stale``.
    stale_s: float = 30.0
    #: Labs older than this no longer drive the perfusion advisory (protocol: repeat in 6 h).
    labs_valid_s: float = 6 * 3600.0
    lactate_high: float = 2.0
    urine_low_ml_kg_h: float = 0.5
    scvo2_low: float = 70.0
    vasopressin_max_u_min: float = 0.04
    #: Norepinephrine-equivalent dose (mcg/kg/min; ``escalation.NE_EQUIVALENT``) from which
    #: the occult-volume-loss caution is given: "high-dose" vasopressor therapy, > 1 mcg/kg/min
    #: (``escalation.HIGH_DOSE_SOURCE``).
    high_dose_nee: float = 1.0
    #: Trend kept per bed for displays: one rolling-MAP point every trend_step_s.
    trend_step_s: float = 30.0
    trend_points: int = 60
    crystalloid_ml_per_kg: float = 30.0
    #: Data time (s) past a missing ``abp`` chunk for which the chunks after it are
    #: held so that it can still arrive and be taken in order; after that the gap
    #: is a real gap, and the missing chunk, should it come, is dropped as late.
    #: 0: no reordering (every gap is accepted at once).
    reorder_window_s: float = 5.0

    def __post_init__(self) -> None:
        _validate_positive("monitor", self, allow_zero=("reorder_window_s",))


@dataclass(frozen=True, slots=True)
class AlarmSettings:
    """Alarm lifecycle (protocol section 6)."""

    reannounce_s: float = 120.0
    ack_silence_s: float = 300.0
    worsen_mmhg: float = 5.0
    #: Unacknowledged re-announcements after which a medium alarm becomes high (0: never).
    escalate_after_reannounces: int = 2

    def __post_init__(self) -> None:
        _validate_positive("alarms", self, allow_zero=("escalate_after_reannounces",))


@dataclass(frozen=True, slots=True)
class Settings:
    """All the core's settings."""

    beats: BeatSettings = field(default_factory=BeatSettings)
    targets: TargetSettings = field(default_factory=TargetSettings)
    hypotension: HypotensionSettings = field(default_factory=HypotensionSettings)
    monitor: MonitorSettings = field(default_factory=MonitorSettings)
    alarms: AlarmSettings = field(default_factory=AlarmSettings)
