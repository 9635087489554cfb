"""Risk levels from density, local peaks, crowd pressure and the forecast, with hysteresis and a minimum dwell.

Rules, strongest wins, each with its reason in words:
- count unreliable (no fresh density map, the camera's picture frozen or blank, the zone partly outside the picture,
  a capture-clock jump, too few frames): the density is then only the people the detector saw, a lower bound (none,
  in a frozen or blank picture). The level it proves when that is warning or above (a packed crowd the detector sees
  into is not hidden by a late map), else UNKNOWN, never a falsely calm level;
- zone density against the thresholds (normal < caution <= ... critical);
- a packed spot (peak local density at the danger threshold, and above the peak a crowd spread uniformly at random
  at the zone's detected density would reach there: local_density.uniform_peak_per_m2) raises the zone to at least
  warning;
- crowd pressure at its threshold in a dense zone raises it to at least danger (Helbing: turbulence precedes
  disasters);
- a level the forecast expects within `early_warning_seconds`, at a slope the last minutes bear out
  (processors.analytics.crowd.forecast.borne_out_rise), raises the zone to the level below it now, at
  most to warning: danger and critical, which page, need the density or the pressure measured, never a trend alone.
Levels go up at once. They go down only once every window of the last `min_dwell_seconds` has allowed it, and only as
far as the rules still allow with the density (and local peak) raised by `hysteresis_per_m2`, so a zone hovering at a
bound does not flap: judging one window after the dwell, a steady 5 p/m² with 5 % counting noise went from danger to
warning and back 8-15 times an hour. UNKNOWN is entered and left at once: saying "we cannot see" must not wait; left for
a level below the one before it, that level's dwell and hysteresis apply as if UNKNOWN had not been. A zone at warning
or above is already watched, and an unreliable window cannot show that its crowd thinned: it holds its level through
unreliable windows for `min_dwell_seconds` before going to what the floor proves (or UNKNOWN), so maps renewed a little
slower than their maximum age (every 24 s against 15) keep a steady danger zone at danger instead of alternating
danger and UNKNOWN every window; the held spell counts for no dwell.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

from schemas import RiskLevel
from schemas.settings.crowd import RiskPolicyConfig, RiskThresholds

ESCALATION = (RiskLevel.CRITICAL, RiskLevel.DANGER, RiskLevel.WARNING, RiskLevel.CAUTION)
# The lowest level an unreliable count can prove: below it the detector's floor says nothing a calm level may stand on
# (a detector finds few people in a packed crowd).
LOWEST_PROVEN = RiskLevel.WARNING


@dataclass(frozen=True)
class RiskInputs:
    density_per_m2: float
    reliable: bool = True
    unreliable_reason: str = ""
    peak_local_density_per_m2: float | None = None
    uniform_peak_per_m2: float | None = None  # the peak that sampling noise alone reaches (local_density)
    pressure_per_s2: float | None = None
    surely_seconds_to_threshold: dict[str, float] = field(default_factory=dict)  # at the slope borne out
    rise_over_s: float | None = None  # how far back the windows that slope is borne out by reach (None: no slope)


@dataclass
class RiskState:
    level: RiskLevel = RiskLevel.NORMAL
    since: float | None = None  # when the current level was entered
    episode_started: float | None = None  # when the zone last left NORMAL
    # While UNKNOWN: the level before it and when that was entered, whose dwell and hysteresis still hold after it
    known: RiskLevel | None = None
    known_since: float | None = None
    lower_since: float | None = None  # end of the first of the windows in a row that have all allowed a lower level
    unseen_since: float | None = None  # end of the first of the unreliable windows in a row holding the level


def threshold(level: RiskLevel, thresholds: RiskThresholds) -> float:
    return getattr(thresholds, level.value)


def density_level(density_per_m2: float, thresholds: RiskThresholds) -> RiskLevel:
    for level in ESCALATION:
        if density_per_m2 >= threshold(level, thresholds):
            return level
    return RiskLevel.NORMAL


def one_below(level: RiskLevel) -> RiskLevel:
    order = list(RiskLevel)
    return order[max(order.index(level) - 1, order.index(RiskLevel.NORMAL))]


def one_above(level: RiskLevel) -> RiskLevel:
    order = list(RiskLevel)
    return order[min(order.index(level) + 1, len(order) - 1)]


def assess(inputs: RiskInputs, thresholds: RiskThresholds, policy: RiskPolicyConfig,
           margin_per_m2: float = 0.0) -> tuple[RiskLevel, str]:
    """The level the rules call for (densities raised by margin_per_m2 when judging a step down)."""
    density = inputs.density_per_m2 + margin_per_m2
    if not inputs.reliable:
        floor = density_level(density, thresholds)
        if floor.rank >= LOWEST_PROVEN.rank:
            return floor, (f"at least {floor.value}: the detector alone counts {inputs.density_per_m2:.2f} p/m², a "
                           f"lower bound (count unreliable: {inputs.unreliable_reason})")
        return RiskLevel.UNKNOWN, f"count unreliable: {inputs.unreliable_reason}"
    level = density_level(density, thresholds)
    if level == RiskLevel.NORMAL:
        reason = f"density {inputs.density_per_m2:.2f} p/m² below caution threshold {thresholds.caution:g}"
    else:
        reason = f"density {inputs.density_per_m2:.2f} p/m² >= {level.value} threshold {threshold(level, thresholds):g}"
    peak = inputs.peak_local_density_per_m2
    noise = inputs.uniform_peak_per_m2 or 0.0
    if (policy.packed_spot_raises_to_warning and peak is not None
            and peak + margin_per_m2 >= max(thresholds.danger, noise) and level.rank < RiskLevel.WARNING.rank):
        level = RiskLevel.WARNING
        reason = (f"packed spot: peak local density {peak:.2f} p/m² >= danger threshold {thresholds.danger:g}, above "
                  f"the {noise:.2f} a uniform crowd would reach")
    pressure = inputs.pressure_per_s2
    if (pressure is not None and pressure >= thresholds.pressure_per_s2 and density >= thresholds.pressure_min_density
            and level.rank < RiskLevel.DANGER.rank):
        level = RiskLevel.DANGER
        reason = (f"crowd pressure {pressure:.3f}/s² >= threshold {thresholds.pressure_per_s2:g} "
                  f"(turbulent motion at {inputs.density_per_m2:.2f} p/m²)")
    for expected in ESCALATION:
        surely = inputs.surely_seconds_to_threshold.get(expected.value)
        if surely is None or surely > policy.early_warning_seconds:
            continue
        raised = min(one_below(expected), RiskLevel.WARNING, key=lambda candidate: candidate.rank)
        if raised.rank > level.rank:
            level = raised
            # The level above the one raised to is what the zone is warned of (critical expected raises to warning
            # for danger, which comes sooner), and its time is the one exported, alerted on and shown.
            named = one_above(raised)
            span = inputs.rise_over_s
            rise = "" if span is None else f" at the rise of the last {in_words(span, about=False)}"
            reason = (f"reaches {named.value} ({threshold(named, thresholds):g} p/m²) in "
                      f"{in_words(inputs.surely_seconds_to_threshold[named.value])}{rise}; density now "
                      f"{inputs.density_per_m2:.2f} p/m²")
        break
    return level, reason


def in_words(seconds: float, about: bool = True) -> str:
    """A time as an operator reads it: whole minutes ("about 7 minutes"), or "under a minute"; a span measured rather
    than forecast (`about` False) goes without "about", and in seconds under a minute. Halves round up, as the
    console rounds minutes from 90 s to 90 minutes (round() would make 150 s "2 minutes" here and "3 min" there)."""
    if seconds < 60:
        return "under a minute" if about else f"{seconds:.0f} seconds"
    minutes = math.floor(seconds / 60 + 0.5)
    return ("about " if about else "") + (f"{minutes} minutes" if minutes != 1 else "1 minute")


def next_level(state: RiskState, inputs: RiskInputs, at: float, thresholds: RiskThresholds,
               policy: RiskPolicyConfig) -> tuple[RiskState, str, bool]:
    """The zone's level after one window ending at `at`: (new state, reason, changed)."""
    target, reason = assess(inputs, thresholds, policy)
    current = state.level
    if not inputs.reliable and current.rank >= LOWEST_PROVEN.rank and target.rank < current.rank:
        unseen_since = at if state.unseen_since is None else state.unseen_since
        if at - unseen_since < policy.min_dwell_seconds:
            return (replace(state, unseen_since=unseen_since), f"holding {current.value} (minimum dwell): {reason}",
                    False)
        return _enter(_after_unseen(state, at), target, at), reason, True
    state = _after_unseen(state, at)
    if target == current:  # (a spell of UNKNOWN keeps the lower_since of the level before it)
        return (state if current == RiskLevel.UNKNOWN else replace(state, lower_since=None)), reason, False
    if current == RiskLevel.UNKNOWN and state.known is not None and target.rank < state.known.rank:
        # Back from a spell of not seeing to below the level before it: a map gap must not cut that level's
        # minimum dwell short, nor skip its hysteresis. The windows before it that allowed a lower level still
        # count, the spell itself does not: nobody saw whether those windows allowed it.
        known = RiskState(state.known, state.known_since, state.episode_started,
                          lower_since=_past_spell(state.lower_since, state.since, at))
        moved, reason, _ = next_level(known, inputs, at, thresholds, policy)
        return moved, reason, True
    if RiskLevel.UNKNOWN in (target, current) or target.rank > current.rank or state.since is None:
        return _enter(state, target, at), reason, True
    relaxed, _ = assess(inputs, thresholds, policy, margin_per_m2=policy.hysteresis_per_m2)
    if relaxed.rank >= current.rank:
        return replace(state, lower_since=None), \
            f"holding {current.value} (hysteresis {policy.hysteresis_per_m2:g} p/m²): {reason}", False
    lower_since = at if state.lower_since is None else state.lower_since
    if at - lower_since < policy.min_dwell_seconds:
        return replace(state, lower_since=lower_since), f"holding {current.value} (minimum dwell): {reason}", False
    return _enter(state, relaxed if relaxed.rank > target.rank else target, at), reason, True


def _after_unseen(state: RiskState, at: float) -> RiskState:
    """The state once a spell of unreliable windows holding its level has ended at `at`: the windows before the spell
    that allowed a lower level still count, the spell itself does not (nobody saw whether it allowed one)."""
    if state.unseen_since is None:
        return state
    return replace(state, unseen_since=None, lower_since=_past_spell(state.lower_since, state.unseen_since, at))


def _past_spell(lower_since: float | None, spell_began: float, at: float) -> float | None:
    """`lower_since` moved on by a spell of windows from `spell_began` to `at` that count for no dwell."""
    return None if lower_since is None else lower_since + (at - spell_began)


def _enter(state: RiskState, level: RiskLevel, at: float) -> RiskState:
    if level == RiskLevel.NORMAL:
        episode = None
    elif state.level == RiskLevel.NORMAL or state.episode_started is None:
        episode = at
    else:
        episode = state.episode_started
    if level == RiskLevel.UNKNOWN:  # entered from a known level: a level is never entered from itself
        return RiskState(level=level, since=at, episode_started=episode, known=state.level, known_since=state.since,
                         lower_since=state.lower_since)
    return RiskState(level=level, since=at, episode_started=episode)
