"""The crowd analyzer's state and incidents: one event id per episode, restore after a configuration change,
the size of the changelog record, and frames the analyzer cannot process."""
from __future__ import annotations

import numpy as np
import pytest

from processors.analytics.crowd.analyzer import CrowdAnalyzer, CrowdState
from processors.analytics.crowd.feet_map import PERSON_BOX_DTYPE, PERSON_BOXES_JUDGED
from processors.analytics.crowd.forecast import HoltState
from processors.analytics.crowd.windows import Bucket
from schemas import Detections, Event, EventState, SchemaError, decode, encode
from schemas.settings.crowd import (
    CROWD_STATE_BUDGET_BYTES,
    MAX_TRACKS,
    AnalyticsConfig,
    crowd_state_bytes,
    trend_points,
    verify_crowd_state_size,
)
from schemas.zone_metrics import CountSource
from tests.crowd.scenarios import run_scenario, site_config, steady_crowd
from tests.crowd.simulator import SQUARE, CrowdSimulator

FAUST_MAX_REQUEST_BYTES = 1_000_000  # faust's default producer_max_request_size


def episodes(events: list[Event], event_type: str) -> list[list[Event]]:
    """The events of one type split into episodes: each opens, may update, and resolves."""
    split: list[list[Event]] = []
    for event in (e for e in events if e.type == event_type):
        if event.state == EventState.OPENED:
            split.append([])
        split[-1].append(event)
    return split


def assert_one_id_per_episode(split: list[list[Event]], count: int) -> None:
    assert len(split) == count
    for episode in split:
        assert episode[0].state == EventState.OPENED and episode[-1].state == EventState.RESOLVED
        assert {e.state for e in episode[1:-1]} <= {EventState.UPDATED}
        assert len({e.event_id for e in episode}) == 1, [e.event_id for e in episode]
        assert {e.started_at for e in episode} == {episode[0].updated_at}
    assert len({episode[0].event_id for episode in split}) == count


def test_risk_episode_keeps_one_event_id_from_opened_to_resolved():
    # Two build-ups, each followed by a calm long enough for the levels to fall back to normal. Thresholds are
    # scaled down so the simulated crowd keeps walking freely and the zone empties when the inflow drops.
    def density(elapsed: float) -> float:
        return float(np.interp(elapsed, [0, 60, 180, 240, 300, 480, 540, 600, 640], [0.1, 0.1, 0.9, 0.9, 0.1, 0.1,
                                                                                     0.6, 0.6, 0.1]))

    fps = 1.0
    analytics = {"window_seconds": 10, "thresholds": {"caution": 0.5, "warning": 0.8, "danger": 1.1, "critical": 1.4},
                 "risk": {"min_dwell_seconds": 30, "hysteresis_per_m2": 0.1, "packed_spot_raises_to_warning": False}}
    config = site_config(SQUARE, fps, analytics=analytics)
    simulator = CrowdSimulator(SQUARE, fps, seed=4, target_density=density)
    run, _ = run_scenario(simulator, config, frames=int(800 * fps), density_map_every=3)

    split = episodes(run.events, "risk_level_changed")
    assert_one_id_per_episode(split, 2)
    assert all(len(episode) >= 2 for episode in split)  # opened, resolved
    assert any(len(episode) >= 3 for episode in split)  # and updated between them


def test_inflow_surge_keeps_one_event_id_from_opened_to_resolved():
    def inflow(elapsed: float) -> float:
        return 4.0 if 300 <= elapsed < 360 or 600 <= elapsed < 660 else 1.0

    fps = 2.0
    config = site_config(SQUARE, fps)
    run, _ = run_scenario(CrowdSimulator(SQUARE, fps, seed=11, inflow_per_s=inflow), config, frames=int(780 * fps))

    assert_one_id_per_episode(episodes(run.events, "inflow_surge"), 2)


@pytest.mark.parametrize("entrances", [("entrance",), ("exit", "entrance"), ()])
def test_changed_counting_lines_start_with_no_tracks_instead_of_failing(entrances, caplog):
    fps = 1.0
    saved_with = site_config(SQUARE, fps)
    simulator = CrowdSimulator(SQUARE, fps, seed=2, target_density=lambda _: 1.0)
    _, analyzer = run_scenario(simulator, saved_with, frames=30)
    state = analyzer.state_bytes()
    assert len(CrowdAnalyzer.restore(saved_with.cameras[0], saved_with, state).tracks) == len(analyzer.tracks) > 0

    changed = site_config(SQUARE, fps, entrances=entrances)
    restored = CrowdAnalyzer.restore(changed.cameras[0], changed, state)
    assert len(restored.tracks) == 0
    assert "counting lines changed" in caplog.text
    resumed, _ = run_scenario(simulator, changed, frames=20, analyzer=restored)
    assert len(resumed.metrics) == 2 and len(restored.tracks) > 0


def worst_case_state(analytics: AnalyticsConfig, entrances: tuple[str, ...]) -> bytes:
    """A calibrated camera's state with every track slot and window bucket in use, each at its longest, and the
    person boxes its unit is judged on."""
    config = site_config(SQUARE, 1.0, entrances=entrances, analytics=analytics.model_dump())
    analyzer = CrowdAnalyzer(config.cameras[0], config.analytics)
    rng = np.random.default_rng(0)
    tracks, lines = analytics.movement.max_tracks, len(entrances)
    table = analyzer.tracks
    table.ids = np.iinfo(np.int64).max - np.arange(tracks, dtype=np.int64)[::-1]
    table.last_seen = 1_700_000_000 + rng.random(tracks)
    table.step_at = 1_700_000_000 + rng.random(tracks)
    table.step_xy = -1000 * rng.random((tracks, 2))
    table.image_xy = -1000 * rng.random((tracks, 2))
    table.ground_xy = -1000 * rng.random((tracks, 2))
    table.velocity = -1e-5 * rng.random((tracks, 2))
    table.side = np.full((tracks, lines), -1, dtype=np.int8)
    table.pending = np.full((tracks, lines), -1, dtype=np.int8)
    table.pending_frames = np.full((tracks, lines), 30, dtype=np.int16)
    analyzer.state.person_boxes = (1000 * rng.random((PERSON_BOXES_JUDGED, 4))).astype(PERSON_BOX_DTYPE).tobytes()
    step = analytics.step_seconds
    for zone in analyzer.state.zones.values():
        zone.holt = HoltState(at=1_700_000_000 + rng.random(), level=-rng.random() / 3e4,
                              trend_per_s=-rng.random() / 3e4, residual_variance=-rng.random() / 3e4,
                              windows=np.iinfo(np.int64).max, net_inflow_per_s=-rng.random() / 3e4,
                              recent=[[1_700_000_000 + rng.random(), -rng.random() / 3e4]
                                      for _ in range(trend_points(step, analytics.window_seconds))])
        zone.buckets = [
            Bucket(start=1_700_000_000 + rng.random(), frames=99_999, last_seq=np.iinfo(np.int64).max,
                   people_sum=-rng.random() / 3e4, people_max=-rng.random() / 3e4,
                   reliable_people_sum=-rng.random() / 3e4, detector_sum=99_999,
                   model_sum=-rng.random() / 3e4, model_frames=99_999, confidence_sum=-rng.random() / 3e4,
                   unreliable_frames=99_999,
                   unreliable_reason="100% of person boxes are mostly hidden by others and no density map",
                   source_frames={source.value: 99_999 for source in CountSource},
                   speed_sum=-rng.random() / 3e4, speed_frames=99_999, variance_sum=-rng.random() / 3e4,
                   variance_frames=99_999, pressure_sum=-rng.random() / 3e4, pressure_frames=99_999,
                   peak_local_sum=-rng.random() / 3e4, peak_local_frames=99_999, inflow=99_999, outflow=99_999)
            for _ in range(round(analytics.window_seconds / analytics.step_seconds))]
    return analyzer.state_bytes()


@pytest.mark.parametrize("analytics, entrances", [
    ({}, ("entrance", "exit")),  # the defaults
    ({"movement": {"max_tracks": MAX_TRACKS}}, ()),  # the most tracks allowed
    ({"window_seconds": 600, "hop_seconds": 10, "movement": {"max_tracks": 3_000}}, ("entrance", "exit")),
])
def test_largest_allowed_state_fits_one_changelog_record(analytics, entrances):
    config = AnalyticsConfig.model_validate(analytics)
    zones = site_config(SQUARE, 1.0, entrances=entrances).cameras[0].zones
    verify_crowd_state_size(config, zones, calibrated=True)

    state = worst_case_state(config, entrances)
    assert CrowdState.decode(state).tracks is not None
    assert len(CrowdState.decode(state).person_boxes) == PERSON_BOXES_JUDGED * 4 * PERSON_BOX_DTYPE.itemsize
    assert len(state) <= crowd_state_bytes(config, zones, calibrated=True) <= CROWD_STATE_BUDGET_BYTES \
        < FAUST_MAX_REQUEST_BYTES


@pytest.mark.parametrize("analytics", [
    {"movement": {"max_tracks": 20_000}},  # refused by the field's bound
    {"window_seconds": 600, "hop_seconds": 0.5},  # 1,200 buckets per zone
])
def test_state_that_cannot_fit_is_refused(analytics):
    zones = site_config(SQUARE, 1.0).cameras[0].zones
    with pytest.raises(ValueError, match="max_tracks|crowd state"):
        verify_crowd_state_size(AnalyticsConfig.model_validate(analytics), zones, calibrated=True)


def test_frame_the_analyzer_cannot_process_is_not_taken_for_a_redelivery():
    analyzer, frames = steady_crowd(10)
    for detections in frames[:9]:
        analyzer.update(detections)
    before = analyzer.state_bytes()
    last = frames[9]  # closes the first window
    unusable = last.model_copy(update={"track_id": [2**63] * len(last)})  # beyond any int64 track table

    with pytest.raises(OverflowError):
        analyzer.update(unusable)
    assert analyzer.state_bytes() == before
    assert len(analyzer.update(last).zone_metrics) == 1


def with_cells(detections: Detections, value: float) -> Detections:
    """The frame with its density map's every 7th cell set to `value`, unchecked (as it came off the wire)."""
    cells = np.frombuffer(detections.density_map, dtype=np.float32).copy()
    cells[::7] = value
    return detections.model_copy(update={"density_map": cells.tobytes()})


@pytest.mark.parametrize("value", [np.nan, np.inf, -0.01, np.finfo(np.float32).max])
def test_a_density_map_no_picture_can_give_is_refused_alone_and_later_windows_come_as_ever(value):
    # Negative cells or a total that overflows would only fail when its window closed, on a later frame, and on
    # every frame after it: the stage restores the state from before each failing frame, which holds the bad count.
    analyzer, frames = steady_crowd(30, density_map_at_seq=12)
    metrics = []
    for detections in frames:
        if detections.density_map is not None:
            with pytest.raises(SchemaError, match="density_map"):
                decode(encode(with_cells(detections, value)), Detections)
            continue  # dead-lettered by the stage
        metrics += analyzer.update(decode(encode(detections), Detections)).zone_metrics

    assert len(metrics) == 3
    assert all(m.people_mean >= 0 and m.count_source == CountSource.DETECTOR for m in metrics)
