"""Zone density forecast: Holt's linear-trend exponential smoothing, with the counted net inflow in the trend.

Why Holt: a crowd build-up is locally a trend (Itaewon: hours of steady rise), and the horizon that matters is 1-15
minutes, where a level-plus-slope model is what the data can support. Holt needs two numbers of state per zone
(restart-safe in a changelog table; the check below keeps the last minutes' windows beside them), adapts without
refitting, copes with uneven window spacing (the slope is per second), and has a known prediction-interval formula
for the band. Heavier models (ARIMA, Prophet, learned ones) need long training histories per zone that a newly
configured camera does not have.

Where a zone's entrances have counting lines, inflow minus outflow over the area is a direct, physical measure of
dρ/dt; it is blended into the slope so a surge at the door shows in the forecast before the density series bends.

Holt's trend answers the last few windows, which is wrong for raising a level on: with 10 s windows, one window
1.5 p/m² above a steady 1.5 (a group passing through, one map reading high) forecast critical within 7 minutes, and the
zone went to danger, which pages, for two minutes; on a 20-minute build-up from 1 to 6 p/m² with counting noise the
level reached warning 11.5-13.7 minutes before 5 p/m² (at 1.6 p/m²) and danger 8-10 minutes before. So a level is
raised on the slope the windows of the last minutes bear out (`borne_out_rise`), and to warning at most: that spike now
leaves the zone at caution (its measured density), the build-up reaches warning 8-10 minutes before 5 p/m² and danger
when the density does, and a steady 1->9 p/m² build-up over 40 minutes still has danger forecast within 10 minutes 9.5
minutes ahead (tests/crowd). The cost is on a very fast surge (2 -> 8 p/m² in 10 minutes): warning 1-1.5 minutes before
4 p/m², and danger when it is measured. The forecast line shown is at that slope too, from Holt's level: drawn at Holt's
trend it crossed danger minutes before (or after) the time the level and its event gave, and an operator must read one
time to danger. Holt's trend stays the cap on that slope and what tells a rising density (stop-and-go).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from schemas.settings.crowd import MIN_TREND_POINTS, ForecastConfig, RiskThresholds, trend_evidence_s
from schemas.zone_metrics import DensityForecast

RESIDUAL_MEMORY = 20  # windows over which the one-step error variance is averaged
NET_BIAS_MEMORY = 30  # windows over which the counted net inflow's excess over the trend is averaged
# The longest gap between folded-in windows that the model bridges: the longer of these hops and these seconds. A
# stall of a camera or a busy stage makes a few windows in a row unreliable (a hopping window holds a stall in each
# of its hops), and restarting would drop the forecast for `min_windows` hops just when a crowd is busy. Across a
# longer gap (a camera down) the trend would be extrapolated over time nobody saw (an hour at +0.1 p/m² a minute is
# +6 p/m²), so the model starts again from the window after it.
MAX_GAP_HOPS = 2
MAX_GAP_S = 180.0
LEVELS = ("caution", "warning", "danger", "critical")


@dataclass
class HoltState:
    at: float  # end of the last window folded in, unix seconds
    level: float  # smoothed density, p/m²
    trend_per_s: float  # p/m² per second
    residual_variance: float  # of one-window-ahead errors, (p/m²)²
    windows: int
    net_inflow_per_s: float | None = None  # smoothed (inflow - outflow) / area, p/m² per second
    # what the counted net inflow usually runs above the density's trend, p/m² per second (`holt_update` says why)
    net_bias_per_s: float = 0.0
    recent: list[list[float]] = field(default_factory=list)  # [window end, density] within trend_evidence_s


def holt_update(state: HoltState | None, at: float, density: float, config: ForecastConfig, step_s: float,
                net_inflow_per_s: float | None = None, window_s: float | None = None) -> HoltState:
    """Folds one window's density into the model (the window's end time is `at`, windows of `window_s`, the step by
    default, end every `step_s`)."""
    if state is None or at - state.at > max(MAX_GAP_HOPS * step_s, MAX_GAP_S) + step_s / 2:
        return HoltState(at, density, 0.0, 0.0, 1, net_inflow_per_s, 0.0, [[at, density]])
    elapsed = at - state.at
    if elapsed <= 0:
        return state
    alpha, beta = config.level_smoothing, config.trend_smoothing
    predicted = state.level + state.trend_per_s * elapsed
    residual = density - predicted
    level = alpha * density + (1 - alpha) * predicted
    trend = beta * (level - state.level) / elapsed + (1 - beta) * state.trend_per_s
    memory = min(state.windows, RESIDUAL_MEMORY)
    variance = state.residual_variance + (residual ** 2 - state.residual_variance) / memory
    bias = state.net_bias_per_s
    if net_inflow_per_s is None:
        net = None
    else:
        net = net_inflow_per_s if state.net_inflow_per_s is None else \
            beta * net_inflow_per_s + (1 - beta) * state.net_inflow_per_s
        # Counting lines rarely see every crossing: a zone with a line at its entrance only, or a detector that
        # misses people at one line, counts a net inflow that the density never shows (a steady 1.5 p/m² with
        # only its entrance counted forecast 67 p/m² in 15 minutes). What the counts usually run above the trend,
        # over the last NET_BIAS_MEMORY windows, is taken off, so only a change in the flow moves the forecast.
        bias += (net_inflow_per_s - trend - bias) / min(state.windows, NET_BIAS_MEMORY)
    span = trend_evidence_s(window_s or step_s)
    recent = [point for point in state.recent if point[0] > at - span] + [[at, density]]
    return HoltState(at, level, trend, variance, state.windows + 1, net, bias, recent)


def slope_per_s(state: HoltState, config: ForecastConfig) -> float:
    if state.net_inflow_per_s is None:
        return state.trend_per_s
    weight = config.net_inflow_weight
    return (1 - weight) * state.trend_per_s + weight * (state.net_inflow_per_s - state.net_bias_per_s)


def band_half_width(state: HoltState, config: ForecastConfig, horizon_s: float, step_s: float) -> float:
    """z * sd of the h-step error: sigma² (1 + sum_{j=1}^{k-1} alpha² (1 + j beta)²), k = windows ahead."""
    alpha, beta = config.level_smoothing, config.trend_smoothing
    k = max(1, math.ceil(horizon_s / step_s))
    n = k - 1
    growth = n + beta * n * (n + 1) + beta ** 2 * n * (n + 1) * (2 * n + 1) / 6  # sum of (1 + j beta)²
    return config.band_z * math.sqrt(state.residual_variance * (1 + alpha ** 2 * growth))


@dataclass(frozen=True)
class BorneOutRise:
    """How fast a zone's density rises at the least by its recent windows, and how far back those windows reach."""

    per_s: float  # p/m² per second, 0 when the windows bear out no rise
    over_s: float  # from the start of the oldest window it stands on to the end of the newest


def borne_out_rise(state: HoltState, config: ForecastConfig, window_s: float,
                   hops_per_window: int = 1) -> BorneOutRise | None:
    """The rise everything a user reads of the forecast is at: the levels raised, the time to each threshold and the
    line forecast, so that one time to danger is told. Holt's trend answers the last few windows, so a group passing
    through, or one density map reading high, bends it towards a threshold for a minute or two. The rise used here is
    the lower bound (band_z standard errors) of a least-squares line through the windows of the recent evidence
    (`trend_evidence_s`), and no more than Holt's own: noise and a lone spike leave it near zero, a build-up of
    minutes does not. Hopping windows (`hops_per_window` hops each) overlap, so one burst is in several of them: only
    windows that do not overlap count. None until MIN_TREND_POINTS such windows have been seen."""
    independent = state.recent[::-1][::hops_per_window]
    lower = slope_lower_bound_per_s(independent, config.band_z)
    if lower is None:
        return None
    return BorneOutRise(max(0.0, min(slope_per_s(state, config), lower)),
                        independent[0][0] - independent[-1][0] + window_s)


def forecast_points(state: HoltState, config: ForecastConfig, step_s: float,
                    rise: BorneOutRise) -> list[DensityForecast]:
    """The density at each horizon on the line from Holt's level at the borne-out rise, which crosses each threshold
    when `seconds_to_thresholds_surely` says; the band is Holt's prediction interval about it, how far windows stray
    from the line by the model's one-step errors."""
    points = []
    for minutes in config.horizons_minutes:
        horizon = minutes * 60
        centre = max(0.0, state.level + rise.per_s * horizon)
        half = band_half_width(state, config, horizon, step_s)
        points.append(DensityForecast(horizon_s=horizon, density_per_m2=centre,
                                      lower_per_m2=max(0.0, centre - half), upper_per_m2=centre + half))
    return points


def seconds_to_thresholds_surely(state: HoltState, config: ForecastConfig, thresholds: RiskThresholds,
                                 rise: BorneOutRise | None) -> dict[str, float]:
    """Seconds until each threshold at the borne-out rise (none without one), within the horizon: what a forecast may
    raise a level on."""
    return crossings(state.level, rise.per_s if rise else 0.0, config.max_horizon_minutes * 60, thresholds)


def slope_lower_bound_per_s(points: list[list[float]], z: float) -> float | None:
    """How fast density rises by (time, density) points of windows that do not overlap, at the least: the lower of
    the least-squares slope less z standard errors and the median of the slopes between pairs of them, which a burst
    in the newest few leaves where the rest put it. None with fewer than MIN_TREND_POINTS of them."""
    if len(points) < MIN_TREND_POINTS:
        return None
    times, densities = np.asarray(points, dtype=float).T
    centred = times - times.mean()
    spread = float(centred @ centred)
    if spread <= 0:
        return None
    slope = float(centred @ (densities - densities.mean())) / spread
    residuals = densities - densities.mean() - slope * centred
    least_squares = slope - z * math.sqrt(float(residuals @ residuals) / (len(points) - 2) / spread)
    first, second = np.triu_indices(len(points), k=1)
    median = float(np.median((densities[first] - densities[second]) / (times[first] - times[second])))
    return min(least_squares, median)


def crossings(level: float, slope: float, horizon_s: float, thresholds: RiskThresholds) -> dict[str, float]:
    """Seconds from `level` to each threshold at `slope`, for those within the horizon (0: reached)."""
    expected = {}
    for name in LEVELS:
        bound = getattr(thresholds, name)
        if level >= bound:
            expected[name] = 0.0
        elif slope > 0 and (bound - level) / slope <= horizon_s:
            expected[name] = (bound - level) / slope
    return expected
