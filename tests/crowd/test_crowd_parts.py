"""Pure pieces of the crowd analytics: calibration, counting lines, count fusion, forecast, risk levels, config."""
from __future__ import annotations

import math

import numpy as np
import pytest

from processors.analytics.crowd.counting import fuse_counts
from processors.analytics.crowd.forecast import (
    HoltState,
    borne_out_rise,
    crossings,
    forecast_points,
    holt_update,
    seconds_to_thresholds_surely,
    slope_per_s,
)
from processors.analytics.crowd.local_density import GroundGrid, uniform_peak_per_m2
from processors.analytics.crowd.risk import RiskInputs, RiskState, assess, next_level
from processors.analytics.crowd.tracks import CountingLine, TrackTable
from schemas import RiskLevel
from schemas.calibration import (
    degeneracy_problems,
    fit_homography,
    reprojection_errors,
)
from schemas.settings.config import ConfigError, parse_config
from schemas.settings.crowd import (
    CountingConfig,
    ForecastConfig,
    RiskPolicyConfig,
    RiskThresholds,
    verify_zone_areas,
)
from schemas.zone_metrics import CountSource

IMAGE = [(100, 400), (500, 400), (420, 100), (180, 100)]
GROUND = [(0, 0), (10, 0), (10, 20), (0, 20)]


def test_homography_maps_pairs_and_reports_error():
    homography = fit_homography(IMAGE, GROUND)
    assert np.allclose(homography.to_ground(np.array(IMAGE)), GROUND, atol=1e-6)
    assert np.allclose(homography.to_image(np.array(GROUND)), IMAGE, atol=1e-6)
    noisy = GROUND + [(5, 10)]
    extra = IMAGE + [tuple(homography.to_image(np.array([[5.0, 10.5]]))[0])]  # a pair 0.5 m off
    assert reprojection_errors(fit_homography(extra, noisy), extra, noisy).max() > 0.1


@pytest.mark.parametrize("image, fatal", [
    ([(0, 0), (10, 10), (20, 20), (30, 0)], True),  # three collinear among four
    ([(0, 0), (10, 0), (10, 10), (10, 10)], True),  # repeated point
    ([(0, 0), (10, 0), (20, 0), (30, 0)], True),  # all on a line
    (IMAGE, False),
])
def test_degenerate_point_sets_are_refused(image, fatal):
    assert any(p.fatal for p in degeneracy_problems(image, GROUND)) == fatal


def walk(table, line, points, start_at=0.0, debounce=2):
    crossings = []
    for frame, point in enumerate(points):
        _, found = table.update(start_at + frame, np.array([7]), np.array([point], dtype=float), PERSON_HEIGHT,
                                np.full((1, 2), np.nan), [line], 0.5, 4.0, 10.0, debounce, 100)
        crossings += found
    return crossings


LINE = CountingLine((0.0, 50.0), (100.0, 50.0), inward_sign=1)  # inside is y > 50 (below, in image axes)
PERSON_HEIGHT = np.array([20.0])  # box height, pixels: a crossing counts once 2 px past the line


def test_line_counts_a_crossing_once_in_its_direction():
    crossings = walk(TrackTable(1), LINE, [(50, 40), (50, 45), (50, 55), (50, 60), (50, 70)])
    assert [(c.inward, c.track_id) for c in crossings] == [(True, 7)]
    back = walk(TrackTable(1), LINE, [(50, 60), (50, 55), (50, 45), (50, 40)])
    assert [c.inward for c in back] == [False]


def test_one_frame_flicker_and_passing_beside_the_segment_count_nothing():
    assert walk(TrackTable(1), LINE, [(50, 45), (50, 55), (50, 45), (50, 44), (50, 55), (50, 44)]) == []
    assert walk(TrackTable(1), LINE, [(150, 40), (150, 60), (150, 70)]) == []  # beyond the segment's end


def test_track_leaving_view_right_after_the_line_is_counted_at_eviction():
    table = TrackTable(1)
    walk(table, LINE, [(50, 40), (50, 55)])
    _, crossings = table.update(30.0, np.array([8]), np.array([[0.0, 0.0]]), PERSON_HEIGHT, np.full((1, 2), np.nan),
                                [LINE], 0.5, 4.0, 10.0, 2, 100)
    assert [(c.track_id, c.inward) for c in crossings] == [(7, True)]
    assert table.ids.tolist() == [8]


def test_velocity_is_ground_displacement_over_a_second_not_box_jitter_or_a_swapped_id():
    def speeds(positions: list[tuple[float, float]], fps: float = 5.0) -> list[float]:
        table, found = TrackTable(0), []
        for frame, ground in enumerate(positions):
            velocity, _ = table.update(frame / fps, np.array([7]), np.zeros((1, 2)), PERSON_HEIGHT,
                                       np.array([ground]), [], 0.5, 4.0, 10.0, 2, 100)
            found.append(float(np.hypot(*velocity[0])))
        return found

    rng = np.random.default_rng(0)
    standing = [tuple(rng.normal(0, 0.05, 2)) for _ in range(50)]  # a few pixels of box jitter, in metres
    assert max(speed for speed in speeds(standing) if np.isfinite(speed)) < 0.15  # frame to frame: about 0.5 m/s
    walking = [(0.0, frame * 0.2) for frame in range(50)]  # 1 m/s
    assert np.isnan(speeds(walking)[0]) and speeds(walking)[-1] == pytest.approx(1.0)
    # The tracker gives the id to someone 3 m away for good: no 3 m/s step, the walk goes on from there.
    swapped = walking[:20] + [(3.0, y) for _, y in walking[20:]]
    assert max(speeds(swapped)[20:]) == pytest.approx(1.0)


def test_tracks_stored_before_velocity_steps_spanned_a_second_go_on_moving():
    # The columns an earlier version stored: no step start, which begins where each track was last seen.
    earlier = TrackTable(0)
    earlier.update(0.0, np.array([7]), np.zeros((1, 2)), PERSON_HEIGHT, np.array([[0.0, 0.0]]), [], 0.5, 4.0, 10.0,
                   2, 100)
    columns = {name: value for name, value in earlier.to_columns().items() if name not in ("step_xy", "step_at")}
    table = TrackTable.from_columns(0, columns)
    speeds = [float(np.hypot(*table.update(frame / 5, np.array([7]), np.zeros((1, 2)), PERSON_HEIGHT,
                                           np.array([[0.0, frame / 5]]), [], 0.5, 4.0, 10.0, 2, 100)[0][0]))
              for frame in range(1, 16)]
    assert speeds[-1] == pytest.approx(1.0)


def test_count_fusion_rule():
    config = CountingConfig(density_map_max_age_seconds=15)
    dense = fuse_counts(20, 800.0, config, model_age_s=3.0)
    assert (dense.source, dense.people, dense.reliable) == (CountSource.DENSITY_MODEL, 800.0, True)
    floor = fuse_counts(12, 9.5, config, model_age_s=0.0)
    assert (floor.source, floor.people, floor.reliable) == (CountSource.DETECTOR, 12, True)
    for count in (fuse_counts(3, None, config), fuse_counts(300, None, config)):
        assert not count.reliable and "no density map" in count.reason
    stale = fuse_counts(3, 900.0, config, model_age_s=16.0)
    assert not stale.reliable and "density map stale (16 s old" in stale.reason
    assert "density model off" in fuse_counts(3, None, config, maps_enabled=False).reason


def holt_crossings(state: HoltState, config: ForecastConfig, thresholds: RiskThresholds) -> dict[str, float]:
    """Seconds until Holt's own forecast (its centre line) reaches each threshold within the horizon."""
    return crossings(state.level, slope_per_s(state, config), config.max_horizon_minutes * 60, thresholds)


def test_holt_forecast_tracks_a_linear_rise_and_gives_time_to_thresholds():
    config, state = ForecastConfig(), None
    for window in range(60):  # 0.2 p/m² per minute in 10 s windows, from 1 p/m²
        state = holt_update(state, window * 10.0, 1 + 0.2 * window / 6, config, 10.0)
    now = state.level
    expected = holt_crossings(state, config, RiskThresholds())
    assert now == pytest.approx(1 + 0.2 * 59 / 6, abs=0.05)
    assert expected["danger"] == pytest.approx((5 - now) / 0.2 * 60, rel=0.05)
    points = forecast_points(state, config, 10.0, borne_out_rise(state, config, 10.0))
    assert points[0].lower_per_m2 <= points[0].density_per_m2 <= points[0].upper_per_m2


@pytest.mark.parametrize("per_minute", [0.1, -0.1])
def test_holt_forecast_starts_again_after_a_gap_instead_of_extrapolating_across_it(per_minute):
    config, state = ForecastConfig(), None
    for window in range(60):  # a steady trend in 10 s windows, from 3 p/m²
        state = holt_update(state, window * 10.0, 3 + per_minute * window / 6, config, 10.0)
    bridged = holt_update(state, state.at + 20.0, 3 + per_minute * 61 / 6, config, 10.0)  # one window skipped
    assert bridged.windows == 61 and bridged.trend_per_s == pytest.approx(per_minute / 60, rel=0.05)
    # A stall of the camera: a hopping window holds it in each of its hops, so several windows in a row are
    # unreliable; the forecast goes on across them rather than going blank for min_windows hops.
    stalled = holt_update(state, state.at + 40.0, 3 + per_minute * 63 / 6, config, 10.0)
    assert stalled.windows == 61 and stalled.trend_per_s == pytest.approx(per_minute / 60, rel=0.05)

    resumed = holt_update(state, state.at + 3600.0, 1.5, config, 10.0)  # an hour's outage
    assert (resumed.level, resumed.trend_per_s, resumed.windows) == (1.5, 0.0, 1)
    assert holt_crossings(resumed, config, RiskThresholds()) == {}


def test_levels_rise_at_once_and_fall_only_after_a_dwell_of_windows_below_the_hysteresis_band():
    thresholds, policy = RiskThresholds(), RiskPolicyConfig(min_dwell_seconds=60, hysteresis_per_m2=0.3)
    state = RiskState()
    state, _, changed = next_level(state, RiskInputs(4.2), 10, thresholds, policy)
    assert changed and state.level == RiskLevel.WARNING
    state, reason, changed = next_level(state, RiskInputs(3.5), 20, thresholds, policy)
    assert not changed and "dwell" in reason
    state, reason, changed = next_level(state, RiskInputs(3.8), 30, thresholds, policy)
    assert not changed and "hysteresis" in reason  # inside the band: the dwell starts again
    for at in range(40, 100, 10):
        state, reason, changed = next_level(state, RiskInputs(3.6), at, thresholds, policy)
        assert not changed and "dwell" in reason
    state, _, changed = next_level(state, RiskInputs(3.6), 100, thresholds, policy)
    assert changed and state.level == RiskLevel.CAUTION  # every window of the last 60 s allowed it
    state, reason, changed = next_level(state, RiskInputs(1.0, reliable=False, unreliable_reason="camera down"),
                                        120, thresholds, policy)
    assert changed and state.level == RiskLevel.UNKNOWN and "camera down" in reason


@pytest.mark.parametrize("density", [1.9, 4.0, 5.0])
def test_a_crowd_hovering_at_a_bound_for_an_hour_changes_level_once(density):
    # 5 % counting noise per 10 s window: judged on one window after the dwell, 5 p/m² flapped between danger and
    # warning 8-15 times an hour.
    thresholds, policy, state, changes = RiskThresholds(), RiskPolicyConfig(), RiskState(), 0
    for window, noise in enumerate(np.random.default_rng(1).normal(0, 0.05 * density, 360)):
        state, _, changed = next_level(state, RiskInputs(density + noise), 10.0 * window, thresholds, policy)
        changes += changed
    assert changes == 1


def test_forecast_raises_the_level_below_the_expected_one_at_the_slope_borne_out_and_never_past_warning():
    def level(surely: dict) -> RiskLevel:
        state, _, _ = next_level(RiskState(), RiskInputs(3.0, surely_seconds_to_threshold=surely),
                                 10, RiskThresholds(), RiskPolicyConfig())
        return state.level

    assert level({"danger": 500.0}) == RiskLevel.WARNING
    assert level({}) == RiskLevel.CAUTION  # a trend the last minutes do not bear out
    # Critical expected: danger pages, so it needs the density measured; the forecast raises to warning only.
    assert level({"critical": 120.0, "danger": 60.0}) == RiskLevel.WARNING


def test_a_level_raised_by_the_forecast_gives_the_time_to_danger_exported_in_words():
    # Critical expected too: the zone is warned of danger, which comes first, by the time its metric and alert carry.
    inputs = RiskInputs(3.0, surely_seconds_to_threshold={"warning": 150.0, "danger": 420.0, "critical": 590.0},
                        rise_over_s=300.0)
    level, reason = assess(inputs, RiskThresholds(), RiskPolicyConfig())
    assert level == RiskLevel.WARNING
    assert reason == ("reaches danger (5 p/m²) in about 7 minutes at the rise of the last 5 minutes; density now "
                      "3.00 p/m²")
    inputs = RiskInputs(1.9, surely_seconds_to_threshold={"caution": 40.0, "warning": 400.0}, rise_over_s=360.0)
    assert assess(inputs, RiskThresholds(), RiskPolicyConfig()) == (
        RiskLevel.CAUTION, "reaches warning (4 p/m²) in about 7 minutes at the rise of the last 6 minutes; density "
        "now 1.90 p/m²")
    inputs = RiskInputs(1.9, surely_seconds_to_threshold={"caution": 40.0, "warning": 150.0}, rise_over_s=150.0)
    assert assess(inputs, RiskThresholds(), RiskPolicyConfig())[1].startswith(  # halves up, as the console rounds
        "reaches warning (4 p/m²) in about 3 minutes at the rise of the last 3 minutes")
    inputs = RiskInputs(1.9, surely_seconds_to_threshold={"caution": 5.0, "warning": 40.0})
    assert assess(inputs, RiskThresholds(), RiskPolicyConfig())[1].startswith("reaches warning (4 p/m²) in under a "
                                                                               "minute")


def test_a_burst_held_in_overlapping_windows_is_no_slope_borne_out():
    config, thresholds = ForecastConfig(), RiskThresholds()

    def surely(densities: list[float]) -> dict[str, float]:  # 60 s windows every 10 s
        state = None
        for index, density in enumerate(densities):
            state = holt_update(state, 10.0 * index, density, config, 10.0, window_s=60.0)
        return seconds_to_thresholds_surely(state, config, thresholds, borne_out_rise(state, config, 60.0, 6))

    burst = [1.5] * 60 + [3.0] * 6  # one 10 s burst of +9 p/m² is in the six windows that span it
    ramp = [1.0 + 0.04 * index for index in range(66)]  # +0.24 p/m² a minute
    assert "warning" not in surely(burst) and "danger" not in surely(burst)
    assert 4 * 60 <= surely(ramp)["danger"] <= 8 * 60  # (5 - 3.6) / 0.24: about 6 minutes


def test_counted_net_inflow_moves_the_forecast_by_its_change_not_by_what_the_lines_miss():
    config, thresholds = ForecastConfig(), RiskThresholds()
    # A steady 1.5 p/m² whose exit has no counting line: 0.05 p/m² a second come in, and nobody is counted out.
    state = None
    for window in range(60):
        state = holt_update(state, window * 10.0, 1.5, config, 10.0, net_inflow_per_s=0.05)
    assert holt_crossings(state, config, thresholds) == {}
    # Twice the usual inflow at the door, before the density shows it: the forecast rises at once.
    for window in range(60, 63):
        state = holt_update(state, window * 10.0, 1.5, config, 10.0, net_inflow_per_s=0.10)
    assert "warning" in holt_crossings(state, config, thresholds)


def test_a_spell_of_unknown_keeps_the_dwell_and_hysteresis_of_the_level_before_it():
    thresholds, policy = RiskThresholds(), RiskPolicyConfig()  # danger 5 p/m², hysteresis 0.3, dwell 120 s
    unseen = RiskInputs(1.0, reliable=False, unreliable_reason="density map stale")  # a floor that proves nothing

    def after(*steps: tuple[float, RiskInputs]) -> tuple[RiskState, str]:
        state, reason = RiskState(), ""
        for at, inputs in steps:
            state, reason, _ = next_level(state, inputs, at, thresholds, policy)
        return state, reason

    # Within the band below danger after a map gap: still danger, as without the gap.
    state, reason = after((0, RiskInputs(5.3)), (200, RiskInputs(4.85)), (210, unseen), (230, RiskInputs(4.85)))
    assert (state.level, state.since) == (RiskLevel.DANGER, 0) and "hysteresis" in reason
    # Well below it, but danger was entered 50 s ago: its dwell holds.
    state, reason = after((0, RiskInputs(5.3)), (30, unseen), (50, RiskInputs(3.0)))
    assert state.level == RiskLevel.DANGER and "minimum dwell" in reason
    # The windows before it that allowed a lower level still count, the blind spell does not.
    state, _ = after((0, RiskInputs(5.3)), *((at, RiskInputs(3.0)) for at in range(10, 110, 10)), (110, unseen),
                     *((at, RiskInputs(3.0)) for at in range(120, 150, 10)))
    assert (state.level, state.since) == (RiskLevel.CAUTION, 140)
    # One window that allowed it, then nearly five minutes unseen: not a dwell.
    state, reason = after((0, RiskInputs(5.3)), (10, RiskInputs(3.0)), *((at, unseen) for at in range(20, 300, 10)),
                          (300, RiskInputs(3.0)))
    assert state.level == RiskLevel.DANGER and "minimum dwell" in reason
    # Once the windows after it have allowed a lower level for the dwell, it goes down as far as the density
    # allows, in the same episode.
    state, _ = after((0, RiskInputs(5.3)), (130, unseen), *((at, RiskInputs(3.0)) for at in range(150, 280, 10)))
    assert (state.level, state.since, state.episode_started) == (RiskLevel.CAUTION, 270, 0)


def test_an_unreliable_count_reports_the_level_its_detector_floor_proves():
    thresholds, policy = RiskThresholds(), RiskPolicyConfig()

    def unseen(floor: float) -> RiskInputs:
        return RiskInputs(floor, reliable=False, unreliable_reason="density map stale (26 s old, more than 15 s)")

    level, reason = assess(unseen(7.5), thresholds, policy)
    assert level == RiskLevel.CRITICAL and "lower bound" in reason and "density map stale" in reason
    assert assess(unseen(5.2), thresholds, policy)[0] == RiskLevel.DANGER
    assert assess(unseen(4.1), thresholds, policy)[0] == RiskLevel.WARNING
    # Below warning the floor says nothing a calm level may stand on: the zone cannot be judged.
    assert assess(unseen(3.0), thresholds, policy)[0] == RiskLevel.UNKNOWN
    assert assess(unseen(0.0), thresholds, policy)[0] == RiskLevel.UNKNOWN


def test_a_zone_at_danger_holds_it_through_unreliable_windows_for_the_dwell():
    thresholds, policy = RiskThresholds(), RiskPolicyConfig()  # dwell 120 s
    unseen = RiskInputs(3.0, reliable=False, unreliable_reason="density map stale")
    state, _, _ = next_level(RiskState(), RiskInputs(6.0), 0, thresholds, policy)
    changes = []
    # Maps renewed every 24 s against a maximum age of 15: every other window is unreliable.
    for at in range(10, 600, 10):
        state, _, changed = next_level(state, unseen if at % 20 else RiskInputs(6.0), at, thresholds, policy)
        changes += [at] if changed else []
    assert state.level == RiskLevel.DANGER and changes == []
    # Unreliable for the whole dwell, the zone goes to what is known: nothing (the floor proves less than warning).
    for at in range(600, 710, 10):  # unreliable since the window ending at 590
        state, reason, changed = next_level(state, unseen, at, thresholds, policy)
        assert (state.level, changed) == (RiskLevel.DANGER, False) and "minimum dwell" in reason
    state, _, changed = next_level(state, unseen, 710, thresholds, policy)
    assert (state.level, changed, state.known) == (RiskLevel.UNKNOWN, True, RiskLevel.DANGER)
    # A zone at a calm level says at once that it cannot see.
    calm, _, _ = next_level(RiskState(), RiskInputs(2.5), 0, thresholds, policy)
    assert next_level(calm, unseen, 10, thresholds, policy)[0].level == RiskLevel.UNKNOWN


def test_a_packed_spot_must_stand_out_from_what_a_uniform_crowd_reaches():
    thresholds, policy = RiskThresholds(), RiskPolicyConfig()
    rng = np.random.default_rng(2)
    grid = GroundGrid(np.array([[0, 0], [16, 0], [16, 8], [0, 8]], float), 1.0, 0.25)

    def level(positions: np.ndarray) -> tuple[RiskLevel, str]:
        density = len(positions) / 128
        inputs = RiskInputs(density, peak_local_density_per_m2=grid.fields(positions).peak_density_per_m2,
                            uniform_peak_per_m2=uniform_peak_per_m2(density, 128, 1.0))
        return assess(inputs, thresholds, policy)

    uniform = rng.uniform((0, 0), (16, 8), (384, 2))  # 3 p/m²: its peak reaches 5 by chance alone
    assert grid.fields(uniform).peak_density_per_m2 >= 5 and level(uniform)[0] == RiskLevel.CAUTION
    # 7.5 p/m² more on 4 x 4 m of a 1.75 p/m² crowd
    packed = np.concatenate((rng.uniform((0, 0), (16, 8), (224, 2)), rng.uniform((6, 2), (10, 6), (120, 2))))
    assert level(packed)[0] == RiskLevel.WARNING and "packed spot" in level(packed)[1]


def test_the_slope_borne_out_ignores_a_lone_spike_and_follows_a_build_up():
    config, thresholds = ForecastConfig(), RiskThresholds()

    def surely(densities: list[float]) -> dict[str, float]:
        state = None
        for index, density in enumerate(densities):
            state = holt_update(state, 10.0 * index, density, config, 10.0)
        return seconds_to_thresholds_surely(state, config, thresholds, borne_out_rise(state, config, 10.0))

    calm, spike = [1.5] * 30, [1.5] * 29 + [3.5]  # a group passing through the last window
    ramp = [1.0 + 0.04 * index for index in range(30)]  # +0.24 p/m² a minute
    assert surely(calm) == {}
    assert surely(spike) == {"caution": 0.0}  # the smoothed level is there already; nothing beyond it is expected
    # 4 p/m² in about (4 - 2.16) / 0.24 = 7.7 minutes, danger in 11.8: the lower bound is a little later.
    assert 7 * 60 <= surely(ramp)["warning"] <= 9 * 60 and 11 * 60 <= surely(ramp)["danger"] <= 13 * 60


def test_the_forecast_line_crosses_each_threshold_when_the_time_to_it_says_not_where_holts_trend_does():
    config, thresholds = ForecastConfig(horizons_minutes=[1, 3, 5, 7, 9, 11, 13, 15]), RiskThresholds()

    def forecast(densities: list[float]) -> tuple[list, dict[str, float], dict[str, float]]:
        state = None
        for index, density in enumerate(densities):
            state = holt_update(state, 10.0 * index, density, config, 10.0)
        rise = borne_out_rise(state, config, 10.0)
        return (forecast_points(state, config, 10.0, rise),
                seconds_to_thresholds_surely(state, config, thresholds, rise),
                holt_crossings(state, config, thresholds))

    # A group passing through the last window: Holt's line reaches warning within minutes, no rise is borne out.
    points, surely, holt = forecast([1.5] * 29 + [3.5])
    assert "warning" in holt and "warning" not in surely
    assert max(point.density_per_m2 for point in points) < thresholds.warning
    # A build-up whose last windows rise faster than its last 5 minutes: Holt's line crosses danger sooner.
    points, surely, holt = forecast([1.0 + 0.04 * index for index in range(24)] + [2.0 + 0.1 * i for i in range(6)])
    assert holt["danger"] < surely["danger"] - 60
    for point in points:
        for name in ("warning", "danger"):
            assert (point.density_per_m2 >= getattr(thresholds, name)) == (surely.get(name, math.inf)
                                                                           <= point.horizon_s)


@pytest.mark.parametrize("windows, window_s, hops, over_s", [
    (12, 10.0, 1, 120.0),  # a zone started two minutes ago: its rise is of those two minutes
    (60, 10.0, 1, 300.0),
    (80, 60.0, 6, 360.0),  # six 60 s windows that do not overlap
])
def test_the_rise_is_told_over_the_windows_that_bear_it_out(windows, window_s, hops, over_s):
    config, state = ForecastConfig(), None
    for index in range(windows):
        state = holt_update(state, 10.0 * index, 1.0 + 0.01 * index, config, 10.0, window_s=window_s)
    rise = borne_out_rise(state, config, window_s, hops)
    assert rise.over_s == over_s
    inputs = RiskInputs(3.0, surely_seconds_to_threshold={"danger": 420.0}, rise_over_s=rise.over_s)
    assert f"at the rise of the last {round(over_s / 60)} minutes;" in assess(inputs, RiskThresholds(),
                                                                             RiskPolicyConfig())[1]


@pytest.mark.parametrize("zone, calibration, field", [
    ({"id": "z", "polygon": IMAGE}, None, "zone z: needs area_m2"),
    ({"id": "z", "polygon": IMAGE, "area_m2": 10}, {"image_points": IMAGE, "ground_points": GROUND[:3]}, "ground"),
    ({"id": "z", "polygon": IMAGE}, {"image_points": IMAGE, "ground_points": GROUND,
                                     "homography": [[1, 0, 0], [0, 1, 0], [0, 0, 1]]}, "homography misplaces"),
    # Four pairs fit exactly in any order: two ground points swapped leave no reprojection error, only a plane whose
    # horizon crosses the pairs.
    ({"id": "z", "polygon": IMAGE}, {"image_points": IMAGE, "ground_points": [GROUND[1], GROUND[0], *GROUND[2:]]},
     r"calibration: the ground plane the pairs fit puts pair 1, 2 past its horizon: list image_points and "
     "ground_points in the same order"),
    # With a fifth pair the swap is a reprojection error, checked without a matrix too.
    ({"id": "z", "polygon": IMAGE}, {"image_points": [*IMAGE, (300, 250)],
                                     "ground_points": [GROUND[1], GROUND[0], *GROUND[2:], (5, 10)]},
     r"calibration: no homography fits the pairs: pair \d is off by [\d.]+ m \(max_reprojection_error_m 0.5\)"),
])
def test_bad_crowd_configuration_fails_with_the_field_named(zone, calibration, field):
    camera = {"id": "c", "source": "0", "zones": [zone]}
    if calibration:
        camera["calibration"] = calibration
    with pytest.raises((ConfigError, ValueError), match=field):
        config = parse_config({"cameras": [camera]}, ".")
        verify_zone_areas(config.cameras[0].zones, config.cameras[0].calibration)  # CameraConfig's check
