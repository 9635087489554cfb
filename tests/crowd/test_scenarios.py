"""The crowd scenario suite: generated crowds with known ground truth through the real analyzer (pure, no Kafka)."""
from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from processors.analytics.crowd.analyzer import CrowdAnalyzer, CrowdState
from schemas import RiskLevel, Severity
from schemas.base import RUN_GAP_FRAMES
from tests.crowd.scenarios import CAMERA_ID, Run, run_scenario, site_config, steady_crowd
from tests.crowd.simulator import ALLEY, SQUARE, CrowdSimulator

BUILD_UP_SECONDS = 40 * 60


def itaewon_density(elapsed: float) -> float:
    """1 -> 9 p/m² over 40 minutes (the alley reached 8-10 p/m² at the peak)."""
    return 1 + 8 * min(elapsed, BUILD_UP_SECONDS) / BUILD_UP_SECONDS


def test_stable_crowd_for_an_hour_raises_no_alarm(report):
    fps = 0.5
    config = site_config(SQUARE, fps)
    simulator = CrowdSimulator(SQUARE, fps, seed=3, target_density=lambda _: 1.5)
    run, _ = run_scenario(simulator, config, frames=int(3600 * fps), jitter_px=1.5)

    levels = [m.risk_level for m in run.metrics]
    above_caution = [m for m in run.metrics if m.risk_level.rank > RiskLevel.CAUTION.rank]
    alerts = [e for e in run.events if e.severity != Severity.INFO]
    errors = [abs(m.density_mean_per_m2 - run.true_window_density(m)) for m in run.metrics]
    report("stable 1.5 p/m² for 1 h", f"{len(run.metrics)} windows, {len(run.events)} level changes "
           f"({len(alerts)} alerts), levels seen {sorted({level.value for level in levels})}, "
           f"peak local density median "
           f"{sorted(m.peak_local_density_per_m2 for m in run.metrics)[len(run.metrics) // 2]:.2f}, "
           f"max |density error| {max(errors):.3f} p/m²")
    assert len(run.metrics) >= 355
    assert above_caution == []
    assert alerts == []
    assert all(m.count_reliable for m in run.metrics)


def test_itaewon_build_up_is_forecast_before_danger_and_climbs_without_flapping(report):
    fps = 0.5
    config = site_config(ALLEY, fps)
    simulator = CrowdSimulator(ALLEY, fps, seed=7, target_density=itaewon_density)
    run, _ = run_scenario(simulator, config, frames=int(BUILD_UP_SECONDS * fps), density_map_every=3,
                          jitter_px=1.0)

    danger_at = run.first_time_true_density_reaches(5.0)
    forecast = [m for m in run.metrics if m.seconds_to_threshold.get("danger", float("inf"))
                <= config.analytics.risk.early_warning_seconds]
    warned = [m for m in run.metrics if m.risk_level.rank >= RiskLevel.WARNING.rank]
    forecast_minutes = (danger_at - forecast[0].window_end) / 60
    lead_minutes = (danger_at - warned[0].window_end) / 60
    ranks = [m.risk_level.rank for m in run.metrics]
    changes = [(e.details["from_level"], e.details["to_level"]) for e in run.events if e.type == "risk_level_changed"]
    report("Itaewon build-up 1->9 p/m² over 40 min", f"danger forecast {forecast_minutes:.1f} min and the zone at "
           f"warning {lead_minutes:.1f} min before the true density reached 5 p/m²; level changes {changes}")

    assert forecast_minutes >= 5 and lead_minutes >= 5
    assert all(later >= earlier for earlier, later in itertools.pairwise(ranks)), "levels went down during a build-up"
    assert ranks[-1] == RiskLevel.CRITICAL.rank
    assert [to for _, to in changes] == ["caution", "warning", "danger", "critical"]
    assert len({e.event_id for e in run.events}) == 1  # one build-up, one incident from caution to critical
    # The event raising warning says the time to danger its details, the metric and the alert carry.
    warning = next(e for e in run.events if e.details["to_level"] == "warning")
    minutes = round(warning.details["seconds_to_danger"] / 60)
    assert warning.reason.startswith(f"reaches danger (5 p/m²) in about {minutes} minutes at the rise of the last 5 "
                                     "minutes")


def test_a_build_up_seen_since_the_camera_started_is_told_at_the_rise_of_the_minutes_seen():
    # The forecast starts after two minutes of windows: a level it raises then stands on those two, not on five.
    fps = 0.5
    config = site_config(ALLEY, fps)
    simulator = CrowdSimulator(ALLEY, fps, seed=7, target_density=lambda elapsed: 3 + 0.3 * elapsed / 60)
    run, _ = run_scenario(simulator, config, frames=int(180 * fps), density_map_every=3, jitter_px=1.0)

    warning = next(e for e in run.events if e.details["to_level"] == "warning")
    assert warning.updated_at - run.metrics[0].window_start == 120
    assert " at the rise of the last 2 minutes;" in warning.reason
    # The forecast line crosses danger when the time to danger says, in every window.
    for metrics in run.metrics:
        danger_in = metrics.seconds_to_threshold.get("danger", math.inf)
        assert all((point.density_per_m2 >= 5.0) == (danger_in <= point.horizon_s) for point in metrics.forecast)


def test_sudden_inflow_surge_is_flagged_within_one_window(report):
    fps, surge_at = 2.0, 300.0
    config = site_config(SQUARE, fps)
    simulator = CrowdSimulator(SQUARE, fps, seed=11, inflow_per_s=lambda t: 4.0 if t >= surge_at else 1.0)
    run, _ = run_scenario(simulator, config, frames=int(420 * fps))

    start = simulator.start_at
    surges = [e for e in run.events if e.type == "inflow_surge"]
    flagged = [m for m in run.metrics if m.inflow_surge]
    report("inflow surge 1 -> 4 people/s", f"flagged at window end +{surges[0].updated_at - start - surge_at:.0f} s "
           f"after the surge began ({surges[0].reason}); window 10 s")
    assert surges and surges[0].updated_at - start <= surge_at + config.analytics.window_seconds
    assert not [m for m in flagged if m.window_end - start <= surge_at], "surge flagged before it happened"
    baseline = [m.inflow for m in run.metrics if 60 <= m.window_end - start <= surge_at]
    assert 5 <= sum(baseline) / len(baseline) <= 15  # ~1 person/s through a 10 s window: the lines count


@pytest.mark.parametrize("camera", [SQUARE, ALLEY])
def test_a_steady_crowd_below_warning_is_not_raised_by_sampling_noise_in_its_local_density(camera):
    """A steady 3.5 p/m² spread at random peaks at 5 p/m² somewhere by chance: no packed spot."""
    config = site_config(camera, 2.0)
    simulator = CrowdSimulator(camera, 2.0, seed=11, target_density=lambda _: 3.5)
    run, _ = run_scenario(simulator, config, frames=2 * 300)
    assert {m.risk_level for m in run.metrics[3:]} == {RiskLevel.CAUTION}


def test_a_sustained_inflow_surge_stays_open_until_inflow_is_back_near_its_old_baseline():
    """Inflow steps from 40 to 160 a minute (a station's exits) for ten minutes: the surge is not learnt as the
    baseline while it is open."""
    fps, start_s, end_s = 2.0, 300.0, 900.0
    config = site_config(SQUARE, fps)
    simulator = CrowdSimulator(SQUARE, fps, seed=3,
                               inflow_per_s=lambda t: 160 / 60 if start_s <= t < end_s else 40 / 60)
    run, _ = run_scenario(simulator, config, frames=int(1200 * fps))

    start = simulator.start_at
    surges = [e for e in run.events if e.type == "inflow_surge"]
    assert [e.state.value for e in surges] == ["opened", "resolved"]
    opened_at, resolved_at = (e.updated_at - start for e in surges)
    assert start_s < opened_at <= start_s + 20 and end_s < resolved_at <= end_s + 20
    assert "back to" in surges[1].reason
    assert all(m.inflow_surge for m in run.metrics if opened_at <= m.window_end - start < end_s)


def test_a_surge_lasting_past_its_limit_is_taken_as_the_new_baseline():
    fps = 2.0
    config = site_config(SQUARE, fps, analytics={"window_seconds": 10, "surge": {"new_baseline_after_minutes": 5}})
    simulator = CrowdSimulator(SQUARE, fps, seed=3, inflow_per_s=lambda t: 160 / 60 if t >= 300 else 40 / 60)
    run, _ = run_scenario(simulator, config, frames=int(1200 * fps))

    surges = [e for e in run.events if e.type == "inflow_surge"]
    assert [e.state.value for e in surges] == ["opened", "resolved"]
    assert surges[1].updated_at - surges[0].updated_at == 300 and "new baseline" in surges[1].reason


@pytest.mark.parametrize("miss_rate", [0.0, 0.2])
def test_density_accuracy_with_perfect_and_missed_detections(miss_rate, report):
    fps = 1.0
    config = site_config(SQUARE, fps)
    simulator = CrowdSimulator(SQUARE, fps, seed=5, target_density=lambda t: 1.0 + t / 300)
    run, _ = run_scenario(simulator, config, frames=300, miss_rate=miss_rate, jitter_px=1.0)

    relative = [(m.density_mean_per_m2 - run.true_window_density(m)) / run.true_window_density(m)
                for m in run.metrics]
    mean_error = sum(relative) / len(relative)
    worst = max(relative, key=abs)
    report(f"density error, {miss_rate:.0%} missed", f"mean {mean_error:+.1%}, worst window {worst:+.1%} "
           f"over {len(relative)} windows (1-2 p/m², density map every 7.5 s, detector count as floor)")
    if miss_rate == 0:
        assert abs(worst) <= 0.05
    else:  # missed boxes no longer under-count: the (here perfect) density map carries the count
        assert abs(mean_error) <= 0.05 and abs(worst) <= 0.15


def test_restart_mid_scenario_resumes_identical_windows_and_levels():
    fps = 0.5
    config = site_config(ALLEY, fps)
    frames = int(BUILD_UP_SECONDS * fps)

    def simulator():
        return CrowdSimulator(ALLEY, fps, seed=13, target_density=itaewon_density)

    uninterrupted, _ = run_scenario(simulator(), config, frames, density_map_every=3)

    sim = simulator()
    first_half, analyzer = run_scenario(sim, config, frames // 2, density_map_every=3)
    restored = CrowdAnalyzer.restore(config.cameras[0], config, analyzer.state_bytes())
    resumed, _ = run_scenario(sim, config, frames - frames // 2, run=Run(), analyzer=restored, density_map_every=3)

    assert first_half.metrics + resumed.metrics == uninterrupted.metrics
    assert first_half.events + resumed.events == uninterrupted.events
    assert {m.risk_level for m in resumed.metrics} >= {RiskLevel.DANGER, RiskLevel.CRITICAL}


def test_redelivered_frames_are_ignored():
    analyzer, frames = steady_crowd(40)
    once = [m for d in frames for m in analyzer.update(d).zone_metrics]
    state = analyzer.state_bytes()
    again = [m for d in frames for m in analyzer.update(d).zone_metrics]
    assert len(once) == 4 and again == []  # frames at 1..40 s close the windows ending at 10, 20, 30 and 40 s
    assert CrowdState.decode(state).last_seq == frames[-1].seq


def test_a_frame_stamped_far_ahead_or_a_producer_numbering_afresh_does_not_silence_the_camera():
    """Both leave the frames after them numbered far below the newest seen: no repeats, as the windows show."""
    analyzer, frames = steady_crowd(40)
    expected = [(m.window_start, m.window_end, m.frames) for d in frames for m in analyzer.update(d).zone_metrics]
    analyzer, frames = steady_crowd(40)
    ahead = 50 * 365 * 86_400.0
    stamped_ahead = frames[9].model_copy(update={"captured_at": frames[9].captured_at + ahead,
                                                 "seq": int((frames[9].captured_at + ahead) * 1_000_000)})
    # A producer numbered the first 20 frames from a clock set ahead, then started again with it set right.
    first_run = [frame.model_copy(update={"seq": frame.seq + 10 * RUN_GAP_FRAMES}) for frame in frames[:20]]
    windows = [(m.window_start, m.window_end, m.frames)
               for d in [*first_run[:10], stamped_ahead, *first_run[10:], *frames[20:]]
               for m in analyzer.update(d).zone_metrics]
    assert windows[0] == expected[0] and windows[-2:] == expected[-2:]  # the last two after the renumbering


def test_frames_sent_again_from_both_sides_of_a_producer_restart_are_not_applied_twice():
    """A restarted producer numbers far above its last run: frames of either run that come again (a batch rewound
    across the restart) are still repeats."""
    analyzer, frames = steady_crowd(40)
    restarted = [*frames[:20], *(frame.model_copy(update={"seq": frame.seq + 5_000_000}) for frame in frames[20:])]
    expected = [(m.window_start, m.window_end, m.frames) for d in restarted for m in analyzer.update(d).zone_metrics]
    analyzer, _ = steady_crowd(0)
    again = [*restarted[:25], *restarted[15:25], *restarted[25:]]
    assert [(m.window_start, m.window_end, m.frames) for d in again for m in analyzer.update(d).zone_metrics] == (
        expected)


def test_a_capture_clock_set_back_as_a_build_up_starts_keeps_its_early_warning():
    """The windows before the step belong to another timeline: the forecast's evidence must not mix them in."""
    def first_warning(back_s: float) -> tuple[float, float]:
        config = site_config(SQUARE, 1.0, analytics={"window_seconds": 10,
                                                     "risk": {"packed_spot_raises_to_warning": False}})
        simulator = CrowdSimulator(SQUARE, 1.0, seed=3, target_density=lambda t: float(
            np.interp(t, [0, 600, 1500], [1.0, 1.0, 4.5])))
        analyzer = CrowdAnalyzer(config.cameras[0], config.analytics)
        for _ in range(1500):
            simulator.step()
            frame = simulator.detections(CAMERA_ID, 0.0, 0.0, simulator.seq % 8 == 0)
            if simulator.elapsed > 600:
                frame = frame.model_copy(update={"captured_at": frame.captured_at - back_s})
            for metrics in analyzer.update(frame).zone_metrics:
                if metrics.risk_level == RiskLevel.WARNING:
                    return simulator.elapsed, metrics.density_mean_per_m2
        raise AssertionError("never warned")

    steady = first_warning(0.0)
    assert steady[1] < 3.0  # forecast, well before the measured 4 p/m²
    assert first_warning(1800.0) == steady


def test_a_steady_crowd_below_danger_counted_with_noise_is_never_said_to_reach_danger():
    """Density maps off by up to 20 % either way bend Holt's trend towards danger and back every few windows; the time
    to danger that is exported (and alerted on) is the one the last minutes' windows bear out."""
    fps = 0.5
    config = site_config(SQUARE, fps)
    simulator = CrowdSimulator(SQUARE, fps, seed=5, target_density=lambda _: 3.5)
    analyzer = CrowdAnalyzer(config.cameras[0], config.analytics)
    rng = np.random.default_rng(5)
    metrics = []
    for _ in range(int(3600 * fps)):
        simulator.step()
        detections = simulator.detections(CAMERA_ID, with_density_map=simulator.seq % 4 == 0)
        if detections.density_map:
            cells = np.frombuffer(detections.density_map, dtype=np.float32) * rng.uniform(0.8, 1.2)
            detections = detections.model_copy(update={"density_map": cells.astype(np.float32).tobytes()})
        metrics.extend(analyzer.update(detections).zone_metrics)

    forecast = [m for m in metrics[60:] if m.seconds_to_threshold.get("danger", math.inf)
                <= config.analytics.risk.early_warning_seconds]
    assert len(metrics) >= 355 and all(m.count_reliable for m in metrics[60:])
    assert 3.0 <= float(np.median([m.density_mean_per_m2 for m in metrics[60:]])) <= 4.0
    assert forecast == []
