"""What a zone's figures rest on: only trustworthy frames, only the part of the zone the picture shows, windows
that hold every frame of their span, and entrances that know which side is in."""
from __future__ import annotations

import logging
from collections import Counter

import numpy as np
import pytest

from processors.analytics.crowd.analyzer import CrowdAnalyzer, CrowdState
from schemas import Detections, PictureFault, RiskLevel, ZoneMetrics
from schemas.settings.config import CameraConfig
from schemas.settings.crowd import AnalyticsConfig
from tests.crowd.scenarios import run_scenario, site_config
from tests.crowd.simulator import ALLEY, CrowdSimulator, SimCamera

T0 = 1_700_000_000.0
FPS = 5
WIDTH, HEIGHT = 1280, 720
PICTURE = [[0, 0], [WIDTH, 0], [WIDTH, HEIGHT], [0, HEIGHT]]


def camera(polygon: list, area_m2: float = 100, entrances: list | None = None) -> CameraConfig:
    return CameraConfig.model_validate({"id": "c", "source": "x.mp4", "fps": FPS, "zones": [
        {"id": "z", "polygon": polygon, "area_m2": area_m2, "entrances": entrances or []}]})


def frame(seq: int, boxes: list, people_in_map: float | None, track_ids: list[int] | None = None) -> Detections:
    """A frame at T0 + seq / FPS; `people_in_map` spread evenly over a density map of the picture (None: no map)."""
    density = None if people_in_map is None else np.full((9, 16), people_in_map / 144, dtype=np.float32)
    return Detections(camera_id="c", seq=seq, captured_at=T0 + seq / FPS, image_width=WIDTH, image_height=HEIGHT,
                      model="t", inference_ms=0, xyxy=boxes, confidence=[0.5] * len(boxes),
                      class_id=[0] * len(boxes), class_name=["person"] * len(boxes), track_id=track_ids,
                      density_map=None if density is None else density.tobytes(),
                      density_map_shape=None if density is None else density.shape)


def person(x: float, foot_y: float) -> tuple[float, float, float, float]:
    return (x - 10, foot_y - 50, x + 10, foot_y)


def run(analyzer: CrowdAnalyzer, frames) -> list[ZoneMetrics]:
    return [metrics for detections in frames for metrics in analyzer.update(detections).zone_metrics]


def test_a_windows_people_come_from_its_reliable_frames_only():
    # 560 people in 100 m², a density map every 18 s (it goes stale after 15 s), the detector sees 30 of them: a
    # window with a few stale frames is still reliable while its latest frame's map is fresh, and its density is the
    # maps', not pulled down by the 30.
    seen = [person(x, 400) for x in range(30, 1230, 40)]
    analyzer = CrowdAnalyzer(camera(PICTURE), AnalyticsConfig())
    metrics = run(analyzer, (frame(seq, seen, 560 if seq % (18 * FPS) == 0 else None) for seq in range(180 * FPS)))

    stale_at_end = [(m.window_end - 1 / FPS - T0) % 18 > 15 for m in metrics]  # the latest frame's map age
    assert len(metrics) == 17 and 0 < sum(stale_at_end) < 17
    assert [m.count_reliable for m in metrics] == [not stale for stale in stale_at_end]
    assert all(m.density_mean_per_m2 == pytest.approx(5.6, rel=1e-5) for m in metrics)
    assert all(m.risk_level == RiskLevel.DANGER for m in metrics)  # held through the unreliable windows


def events_of(analyzer: CrowdAnalyzer, frames) -> tuple[list[ZoneMetrics], list]:
    outputs = [analyzer.update(detections) for detections in frames]
    return [m for o in outputs for m in o.zone_metrics], [e for o in outputs for e in o.events]


def test_a_camera_starting_without_its_first_map_reads_unknown_without_an_incident():
    # The first map comes 12 s after the camera's first frame (the inference stage starting): the first window
    # reads unknown, but nobody is told of an incident; the zone is normal from the map on.
    analyzer = CrowdAnalyzer(camera(PICTURE), AnalyticsConfig())
    metrics, events = events_of(analyzer, (frame(seq, [], 50 if seq % (12 * FPS) == 0 and seq else None)
                                           for seq in range(60 * FPS)))

    assert [m.risk_level for m in metrics] == [RiskLevel.UNKNOWN] + [RiskLevel.NORMAL] * 4
    assert "no density map yet" in metrics[0].risk_reason and events == []


def test_a_zone_whose_maps_never_come_opens_an_incident_once_the_first_map_is_overdue():
    analyzer = CrowdAnalyzer(camera(PICTURE), AnalyticsConfig())
    metrics, events = events_of(analyzer, (frame(seq, [], None) for seq in range(60 * FPS)))

    assert all(m.risk_level == RiskLevel.UNKNOWN for m in metrics)
    # 10 s to reach live frames plus the maps' 15 s maximum age: the window ending at 30 s is the first past it.
    [opened] = events
    assert (opened.state.value, opened.severity.value, opened.updated_at) == ("opened", "warning", T0 + 30)
    assert "no density map yet" in opened.reason


@pytest.mark.parametrize("fault, reason", [(PictureFault.FROZEN, "picture frozen"),
                                           (PictureFault.BLANK, "picture blank")])
def test_a_frozen_or_blank_picture_makes_the_zone_unknown_with_the_reason_whatever_it_shows(fault, reason):
    # A calm zone (20 people in 100 m², a map every 7.5 s) whose picture goes bad after a minute; the maps, made of
    # the bad picture, still say 20, and the frozen picture shows a packed crowd to the detector (600 boxes: 6 p/m²).
    packed = [person(x, y) for x in range(30, 1230, 40) for y in range(100, 700, 30)]
    analyzer = CrowdAnalyzer(camera(PICTURE), AnalyticsConfig())
    frames = [frame(seq, [] if seq < 60 * FPS else packed, 20 if seq % (7.5 * FPS) == 0 else None)
              for seq in range(600 * FPS)]
    metrics, events = events_of(analyzer, (detections.model_copy(update={"picture_fault": fault})
                                           if detections.captured_at >= T0 + 60 else detections
                                           for detections in frames))

    assert len(packed) == 600 and len(metrics) == 59
    assert all(m.risk_level == RiskLevel.NORMAL and m.count_reliable for m in metrics[:6])
    assert all(m.risk_level == RiskLevel.UNKNOWN and not m.count_reliable and reason in m.risk_reason
               for m in metrics[6:])
    assert all(m.detector_people_mean == 0 and m.density_model_people_mean is None for m in metrics[6:])
    [opened] = events  # the zone-unknown path: an incident and CityguardZoneUnknown
    assert (opened.state.value, opened.updated_at, opened.details["to_level"]) == ("opened", T0 + 70, "unknown")


def test_a_window_is_reliable_only_while_its_latest_frames_map_is_within_the_maximum_age():
    # Calm maps every 5 s until 60 s, then none: the level may stand on a map up to 15 s old, not on most of a
    # window's frames having had one (a 30 s window read normal until 40 s after the last map).
    for analytics in (AnalyticsConfig(), AnalyticsConfig(window_seconds=30, hop_seconds=10)):
        analyzer = CrowdAnalyzer(camera(PICTURE), analytics)
        metrics = run(analyzer, (frame(seq, [], 50 if seq % (5 * FPS) == 0 and seq <= 60 * FPS else None)
                                 for seq in range(120 * FPS)))
        ends = {round(m.window_end - T0): (m.risk_level, m.count_reliable) for m in metrics}
        assert ends[70] == (RiskLevel.NORMAL, True)  # its latest frame's map 9.8 s old
        assert all(ends[end] == (RiskLevel.UNKNOWN, False) for end in range(80, 111, 10))  # 19.8 s and older


@pytest.mark.parametrize("polygon, share", [
    ([[0, 0], [2 * WIDTH, 0], [2 * WIDTH, HEIGHT], [0, HEIGHT]], "50%"),  # twice the picture's width
    ([[WIDTH + 100, 0], [WIDTH + 700, 0], [WIDTH + 700, HEIGHT], [WIDTH + 100, HEIGHT]], "0%"),  # beside it
])
def test_a_zone_reaching_out_of_the_picture_reads_unknown_with_the_reason(polygon, share, caplog):
    # 6 p/m² in the picture (600 people in its 100 m²): what the zone holds beyond it nobody sees.
    analyzer = CrowdAnalyzer(camera(polygon, area_m2=200), AnalyticsConfig())
    with caplog.at_level(logging.WARNING):
        metrics = run(analyzer, (frame(seq, [], 600) for seq in range(60 * FPS)))

    assert len(metrics) == 5
    assert all(m.risk_level == RiskLevel.UNKNOWN and not m.count_reliable for m in metrics)
    assert all(f"only {share} of the zone lies inside the picture" in m.risk_reason for m in metrics)
    warnings = [record for record in caplog.records if "lies inside the" in record.getMessage()]
    assert len(warnings) == 1 and "zone z" in warnings[0].getMessage()


def test_a_zone_almost_wholly_in_the_picture_still_counts():
    inside = [[0, 0], [WIDTH, 0], [WIDTH, HEIGHT + 20], [0, HEIGHT + 20]]  # 97 % in the picture
    analyzer = CrowdAnalyzer(camera(inside), AnalyticsConfig())
    metrics = run(analyzer, (frame(seq, [], 100) for seq in range(30 * FPS)))
    assert all(m.count_reliable and m.risk_level == RiskLevel.NORMAL for m in metrics)


def test_a_calibrated_zone_partly_above_the_picture_is_measured_over_the_ground_it_shows():
    # A 3.2 x 40 m alley seen along its length, its far end 12 px above the picture: 99.9 % of its pixels and 66 % of
    # its ground are in view, but only 39 % of it with the heads of the people standing there, which the density map
    # counts (the detector's people beyond, their heads cut off, count no more).
    alley = SimCamera(3.2, 40.0, ((340, 700), (940, 700), (650, -12), (630, -12)))
    config = site_config(alley, 5.0, entrances=())
    analyzer = CrowdAnalyzer(config.cameras[0], config.analytics)
    assert analyzer.zones["zone"].in_view((WIDTH, HEIGHT)).share == pytest.approx(0.39, abs=0.01)
    simulator = CrowdSimulator(alley, 5.0, seed=3, target_density=lambda _: 6.0)
    runs, _ = run_scenario(simulator, config, 5 * 120, analyzer=analyzer)
    late = runs.metrics[-3:]
    # The density is the ground in view's, and the zone, mostly but not wholly seen, is unreliable at the level
    # the people seen prove.
    assert np.mean([m.density_mean_per_m2 for m in late]) == pytest.approx(6.0, rel=0.05)
    assert all(not m.count_reliable and m.risk_level == RiskLevel.DANGER for m in late)


def test_a_calibrated_zone_whose_far_end_meets_the_top_of_the_picture_is_seen_only_where_the_heads_are():
    # The alley drawn wholly inside the picture, its far end 1 px below the top: every foot point is in view, but the
    # far people's heads, by which the density map counts them, are above it. 6 p/m², the detector finding a tenth
    # of the people: read over all its ground, the packed zone was at caution, reliable.
    alley = SimCamera(3.2, 40.0, ((340, 700), (940, 700), (650, 1), (630, 1)))
    config = site_config(alley, 5.0, entrances=())
    simulator = CrowdSimulator(alley, 5.0, seed=3, target_density=lambda _: 6.0)
    runs, analyzer = run_scenario(simulator, config, 5 * 90, miss_rate=0.9)
    assert analyzer.zones["zone"].in_view((WIDTH, HEIGHT)).share == pytest.approx(0.6, abs=0.02)
    late = runs.metrics[-3:]
    assert all(not m.count_reliable and m.risk_level == RiskLevel.UNKNOWN for m in late)
    assert all("of the zone's ground (with the heads of people standing on it) lies inside the picture"
               in m.risk_reason for m in late)


def test_a_packed_zone_whose_maps_stop_keeps_the_level_its_detector_proves():
    """The detector alone sees 7.5 p/m²: a late map must not turn a critical zone unknown (a lower severity)."""
    config = site_config(ALLEY, 2.0)
    simulator = CrowdSimulator(ALLEY, 2.0, seed=3, target_density=lambda _: 7.5)
    runs, analyzer = run_scenario(simulator, config, 2 * 90)
    runs, _ = run_scenario(simulator, config, 2 * 60, runs, analyzer, density_map_every=0)
    stale = [m for m in runs.metrics if not m.count_reliable]
    assert stale and all(m.risk_level == RiskLevel.CRITICAL for m in stale)
    assert "lower bound" in stale[-1].risk_reason and "density map stale" in stale[-1].risk_reason
    assert [(e.state.value, e.severity.value) for e in runs.events] == [("opened", "critical")]


def test_maps_renewed_slower_than_their_maximum_age_do_not_make_a_danger_zone_flap():
    # Every 24 s against a maximum age of 15 s, and the detector sees half the crowd (3 p/m²: it proves nothing).
    config = site_config(ALLEY, 2.0)
    simulator = CrowdSimulator(ALLEY, 2.0, seed=3, target_density=lambda _: 6.0)
    runs, _ = run_scenario(simulator, config, 2 * 900, density_map_every=2 * 24, miss_rate=0.5)
    assert any(not m.count_reliable for m in runs.metrics)
    assert Counter(m.risk_level for m in runs.metrics[3:]) == {RiskLevel.DANGER: len(runs.metrics) - 3}
    assert [e.details["to_level"] for e in runs.events if e.type == "risk_level_changed"] == ["danger"]


def test_hopping_windows_hold_every_frame_of_their_span_whatever_the_hop():
    # A hop of 0.7 s is no binary fraction: window edges and bucket starts differ in the last bit as floats.
    analyzer = CrowdAnalyzer(camera(PICTURE), AnalyticsConfig(window_seconds=7, hop_seconds=0.7))
    frames = (frame(seq, [], 100).model_copy(update={"captured_at": T0 + seq / FPS + 0.01})
              for seq in range(130 * FPS))
    metrics = run(analyzer, frames)

    full = [m for m in metrics if m.window_start >= T0 + 7]
    assert len(full) > 150
    assert Counter(m.frames for m in full) == {7 * FPS: len(full)}


def test_an_automatic_entrance_side_holds_in_a_concave_zone():
    # An L-shaped zone, its entrance on the inner edge: the mean of its vertices (40, 40) lies outside it, beyond
    # the entrance. A walker crosses from outside (below the entrance) into the zone.
    l_shape = [[0, 0], [100, 0], [100, 20], [20, 20], [20, 100], [0, 100]]
    entrance = {"id": "gate", "start": [40, 20], "end": [90, 20]}
    analyzer = CrowdAnalyzer(camera(l_shape, area_m2=10, entrances=[entrance]), AnalyticsConfig())
    walk = [40 - 2 * step for step in range(18)] + [5] * (60 * FPS)
    metrics = run(analyzer, (frame(seq, [person(65, y)], 1, [7]) for seq, y in enumerate(walk)))

    assert sum(m.inflow for m in metrics) == 1
    assert sum(m.outflow for m in metrics) == 0


def test_a_zone_removed_while_at_danger_has_its_incident_resolved_with_the_next_frame():
    analyzer = CrowdAnalyzer(camera(PICTURE), AnalyticsConfig())
    _, events = events_of(analyzer, (frame(seq, [], 600) for seq in range(60 * FPS)))  # 6 p/m²
    [opened] = [event for event in events if event.state.value == "opened"]
    assert opened.zone_id == "z" and opened.severity.value == "critical"

    renamed = CameraConfig.model_validate({"id": "c", "source": "x.mp4", "fps": FPS, "zones": [
        {"id": "z2", "polygon": PICTURE, "area_m2": 100}]})
    restored = CrowdAnalyzer(renamed, AnalyticsConfig(), CrowdState.decode(analyzer.state_bytes()))
    _, later = events_of(restored, (frame(seq, [], 600) for seq in range(60 * FPS, 61 * FPS)))

    [resolved] = [event for event in later if event.zone_id == "z"]
    assert (resolved.event_id, resolved.state.value) == (opened.event_id, "resolved")
    assert "removed from the configuration" in resolved.reason and resolved.updated_at == T0 + 60


def test_a_zone_added_to_a_running_camera_waits_for_its_first_map_without_an_incident():
    def maps_every_12_s(seqs):  # 50 people on the whole picture, a map every 12 s
        return (frame(seq, [], 50 if seq % (12 * FPS) == 0 else None) for seq in seqs)

    analyzer = CrowdAnalyzer(camera(PICTURE), AnalyticsConfig())
    events_of(analyzer, maps_every_12_s(range(1, 61 * FPS)))
    two_zones = CameraConfig.model_validate({"id": "c", "source": "x.mp4", "fps": FPS, "zones": [
        {"id": "z", "polygon": PICTURE, "area_m2": 100}, {"id": "z2", "polygon": PICTURE, "area_m2": 100}]})
    restored = CrowdAnalyzer(two_zones, AnalyticsConfig(), CrowdState.decode(analyzer.state_bytes()))
    metrics, events = events_of(restored, maps_every_12_s(range(61 * FPS, 120 * FPS)))

    added = [m.risk_level for m in metrics if m.zone_id == "z2"]
    assert added[0] == RiskLevel.UNKNOWN and set(added[1:]) == {RiskLevel.NORMAL}  # no map until 72 s
    assert events == []


def test_resolving_what_an_analyzer_has_open_includes_a_removed_zones_incident():
    analyzer = CrowdAnalyzer(camera(PICTURE), AnalyticsConfig())
    _, events = events_of(analyzer, (frame(seq, [], 600) for seq in range(60 * FPS)))
    renamed = CameraConfig.model_validate({"id": "c", "source": "x.mp4", "fps": FPS, "zones": [
        {"id": "z2", "polygon": PICTURE, "area_m2": 100}]})
    restored = CrowdAnalyzer(renamed, AnalyticsConfig(), CrowdState.decode(analyzer.state_bytes()))
    [resolved] = restored.resolve_open(T0 + 60, "reset")  # before any frame of the new configuration
    assert (resolved.zone_id, resolved.state.value) == ("z", "resolved")
