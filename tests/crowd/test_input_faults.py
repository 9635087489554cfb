"""Input the crowd analyzer takes in its stride: the tracker's unconfirmed detections and a capture clock that
jumps."""
from __future__ import annotations

import numpy as np
import pytest

from processors.analytics.crowd.analyzer import CrowdAnalyzer
from schemas import UNTRACKED, Detections, RiskLevel, ZoneMetrics
from schemas.settings.config import CameraConfig, Config

T0 = 1_700_000_000.0
HOUR = 3600.0
FPS = 5
CAMERA = CameraConfig.model_validate({"id": "c", "source": "x.mp4", "fps": FPS, "zones": [
    {"id": "z", "polygon": [[0, 0], [1280, 0], [1280, 720], [0, 720]], "area_m2": 100,
     "entrances": [{"id": "gate", "start": [500, 400], "end": [700, 400]}]}]})
DENSITY = np.full((9, 16), 2 / 144, dtype=np.float32)  # two people spread over the picture


def person(x: float, foot_y: float) -> tuple[float, float, float, float]:
    return (x - 10, foot_y - 50, x + 10, foot_y)


def frame(seq: int, at: float, boxes: list, track_ids: list[int]) -> Detections:
    return Detections(camera_id="c", seq=seq, captured_at=at, image_width=1280, image_height=720, model="t",
                      inference_ms=0, xyxy=boxes, confidence=[0.3] * len(boxes), class_id=[0] * len(boxes),
                      class_name=["person"] * len(boxes), track_id=track_ids, density_map=DENSITY.tobytes(),
                      density_map_shape=DENSITY.shape)


def test_unconfirmed_detections_count_as_people_but_never_cross_a_line():
    # Two standing people the tracker has not confirmed, one each side of the gate; which of them comes first in
    # the frame changes every 3 frames (detections are ordered by confidence).
    analyzer = CrowdAnalyzer.restore(CAMERA, Config(), None)
    metrics: list[ZoneMetrics] = []
    for seq in range(60 * FPS):
        above, below = person(600, 380), person(600, 430)
        boxes = [above, below] if (seq // 3) % 2 == 0 else [below, above]
        metrics += analyzer.update(frame(seq, T0 + seq / FPS, boxes, [UNTRACKED, UNTRACKED])).zone_metrics

    assert len(metrics) == 5
    assert sum(m.inflow for m in metrics) == sum(m.outflow for m in metrics) == 0
    assert all(m.detector_people_mean == 2 for m in metrics)
    assert len(analyzer.tracks) == 0


def standing(seq: int, at: float) -> Detections:
    return frame(seq, at, [person(300, 600), person(900, 600)], [1, 2])


@pytest.mark.parametrize("jump_s, lasting", [(3600, False), (-3600, True), (3600, True)],
                         ids=["one frame an hour ahead", "set back an hour", "set on an hour"])
def test_after_a_clock_jump_windows_go_on_in_the_new_time_unknown_until_a_full_window(jump_s, lasting):
    analyzer = CrowdAnalyzer.restore(CAMERA, Config(), None)
    seq = 0
    for seq in range(int(123.4 * FPS)):  # the jump lands within a window
        analyzer.update(standing(seq, T0 + seq / FPS))
    assert analyzer.state.zones["z"].risk.level == RiskLevel.NORMAL
    jumped_at = T0 + (seq + 1) / FPS + jump_s
    analyzer.update(standing(seq + 1, jumped_at))
    after = []
    start = jumped_at if lasting else T0 + (seq + 2) / FPS
    for k in range(60 * FPS):
        after += analyzer.update(standing(seq + 2 + k, start + k / FPS)).zone_metrics

    in_new_time = [m for m in after if start - 10 <= m.window_start < start + 60]
    assert len(in_new_time) == 6, [(m.window_start - T0, m.frames) for m in after]
    if jump_s > 0 and lasting:  # set on, the clock looks like a camera that was away: windows go on after the gap
        assert all(m.risk_level == RiskLevel.NORMAL for m in in_new_time)
        return
    assert in_new_time[0].risk_level == RiskLevel.UNKNOWN and "clock jumped" in in_new_time[0].risk_reason
    assert all(m.risk_level == RiskLevel.NORMAL and m.frames == 10 * FPS for m in in_new_time[1:])


def test_after_the_clock_is_set_back_a_stalling_camera_and_a_stale_map_still_show():
    analyzer = CrowdAnalyzer.restore(CAMERA, Config(), None)
    for seq in range(60 * FPS):
        analyzer.update(standing(seq, T0 + seq / FPS))
    back = T0 + 60 - HOUR
    without_maps = [analyzer.update(standing(60 * FPS + k, back + k / FPS).model_copy(
        update={"density_map": None, "density_map_shape": None})).zone_metrics for k in range(40 * FPS)]
    stalling = [analyzer.update(standing(100 * FPS + k, back + 40 + k)).zone_metrics for k in range(40)]  # 1 fps

    stale, stalled = sum(without_maps[25 * FPS:], []), sum(stalling[10:], [])
    assert stale and all(m.risk_level == RiskLevel.UNKNOWN and "density map" in m.risk_reason for m in stale)
    assert stalled and all(m.risk_level == RiskLevel.UNKNOWN and "expected frames" in m.risk_reason for m in stalled)


def test_a_map_from_before_the_clock_was_set_back_vouches_for_nothing_after_it():
    # The producer's host was down while a crowd packed in and came back with its clock an hour behind: the last map
    # before (2 people) is of no known age, and the first map after (560 people, 5.6 p/m²) comes 8 s into the new
    # time. Read as fresh, the old map made the window after the jump caution, reliable.
    analyzer = CrowdAnalyzer.restore(CAMERA, Config(), None)
    for seq in range(60 * FPS):
        analyzer.update(standing(seq, T0 + seq / FPS))
    back = T0 + 65.5 - HOUR
    packed = np.full((9, 16), 560 / 144, dtype=np.float32)
    after = []
    for k in range(40 * FPS):
        mapped = k >= 8 * FPS and (k - 8 * FPS) % (5 * FPS) == 0
        detections = standing(60 * FPS + k, back + k / FPS).model_copy(update={
            "density_map": packed.tobytes() if mapped else None, "density_map_shape": packed.shape if mapped else None})
        after += analyzer.update(detections).zone_metrics

    new_time = [m for m in after if back <= m.window_start < T0]
    assert len(new_time) == 3
    assert all(m.count_reliable and m.risk_level == RiskLevel.DANGER for m in new_time)


def test_a_map_made_before_the_clock_was_set_back_a_little_is_not_fresh_for_that_step_longer():
    # The clock set back 9.9 s (less than a window) as the maps stop: the last map is 0.3 s old then, and stale
    # (15 s) by 65 s in the new time; taken as made at the frame's time, it stayed fresh until 74.8 s.
    analyzer = CrowdAnalyzer.restore(CAMERA, Config(), None)
    for seq in range(60 * FPS):
        analyzer.update(standing(seq, T0 + seq / FPS))
    back = T0 + 60 - 9.9
    after = []
    for k in range(40 * FPS):
        after += analyzer.update(standing(60 * FPS + k, back + k / FPS).model_copy(
            update={"density_map": None, "density_map_shape": None})).zone_metrics

    later = [m for m in after if m.window_start >= T0 + 60]
    assert later and all(m.risk_level == RiskLevel.UNKNOWN and "density map" in m.risk_reason for m in later)


def test_the_first_window_is_not_called_stalling_while_the_pipeline_starts_but_a_later_gap_is():
    analyzer = CrowdAnalyzer.restore(CAMERA, Config(), None)
    start = T0 + 7.5  # within a window: the model was loading and the frames that aged meanwhile were shed
    times = [start, start + 2.0] + [T0 + 10 + k / FPS for k in range(20 * FPS)]  # then every frame
    times += [T0 + 30 + k for k in range(10)] + [T0 + 40 + k / FPS for k in range(10 * FPS + 1)]  # 1 fps, then 5
    metrics = sum((analyzer.update(standing(seq, at)).zone_metrics for seq, at in enumerate(times)), [])

    by_start = {round(m.window_start - T0): m for m in metrics}
    assert by_start[0].frames == 2 and by_start[0].risk_level == RiskLevel.NORMAL
    assert by_start[10].risk_level == by_start[20].risk_level == RiskLevel.NORMAL
    assert by_start[30].risk_level == RiskLevel.UNKNOWN and "expected frames" in by_start[30].risk_reason


def test_the_start_grace_is_bounded_a_long_window_with_a_stall_after_the_first_frame_is_unknown():
    config = Config.model_validate({"analytics": {"window_seconds": 60, "hop_seconds": 10}})
    analyzer = CrowdAnalyzer.restore(CAMERA, config, None)
    times = [T0 + 20, T0 + 50] + [T0 + 60 + k / FPS for k in range(60 * FPS)]  # one frame, a 30 s stall, then all
    metrics = sum((analyzer.update(standing(seq, at)).zone_metrics for seq, at in enumerate(times)), [])
    stalled = [m for m in metrics if m.window_start - T0 in (0, 10, 20)]
    assert stalled and all(m.risk_level == RiskLevel.UNKNOWN and "expected frames" in m.risk_reason for m in stalled)


def test_a_clock_set_back_brings_a_held_levels_unseen_spell_back_to_the_new_time():
    """A zone holding its level through unreliable windows has the spell's start on the timeline ahead: kept there,
    the hold would last an hour past its minimum dwell instead of ending at it."""
    analyzer = CrowdAnalyzer.restore(CAMERA, Config(), None)
    analyzer.update(standing(0, T0))
    risk = analyzer.state.zones["z"].risk
    risk.unseen_since = risk.lower_since = T0
    analyzer._step_clock(T0 - HOUR)
    assert (risk.unseen_since, risk.lower_since) == (T0 - HOUR, T0 - HOUR)
