"""A capture clock that jumps (a host clock stepped, then stepped back): counting and the rules go on in the new
time instead of waiting for real time to catch up with the old one."""
from __future__ import annotations

import numpy as np

from processors.analytics.traffic.analyzer import TrafficAnalyzer
from schemas import Detections, EventState
from schemas.settings.config import Config
from tests.traffic.scenarios import stopped_in_zone
from tests.traffic.simulator import T0, frames
from tests.traffic.suite import camera

HOUR = 3600.0


def test_line_counts_go_on_in_real_time_after_one_frame_stamped_an_hour_ahead():
    analyzer = TrafficAnalyzer.restore(camera(), Config(), None)
    windows, seq = [], 0

    def frame(at: float, boxes: list, ids: list[int]) -> Detections:
        return Detections(camera_id="sim", seq=seq, captured_at=at, image_width=1280, image_height=720,
                          model="t", inference_ms=0, xyxy=boxes, confidence=[0.9] * len(boxes),
                          class_id=[2] * len(boxes), class_name=["car"] * len(boxes), track_id=ids)

    # A car every 10 s drives east across the count line (x = 900) in 2 s; none is in view at t = 156.
    for step in range(300 * 5):
        t = step / 5
        car, since = divmod(t, 10)
        boxes, ids = ([(800 + 100 * since - 40, 390, 800 + 100 * since + 40, 430)], [int(car) + 1]) \
            if since <= 2 else ([], [])
        windows += analyzer.update(frame(T0 + t, boxes, ids)).line_counts
        seq += 1
        if step == 156 * 5:
            windows += analyzer.update(frame(T0 + t + HOUR, [], [])).line_counts
            seq += 1
    windows += analyzer.end_of_footage_counts(T0 + 300)

    real_time = [window for window in windows if window.window_start < T0 + HOUR]
    assert sum(sum(window.count) for window in real_time) == 30
    assert max(window.window_end for window in real_time) == T0 + 300
    assert all(window.count == [] for window in windows if window.window_start >= T0 + HOUR)


def test_incidents_open_when_the_clock_is_set_back_still_resolve():
    analyzer = TrafficAnalyzer.restore(camera(), Config(), None)
    events = []
    for detections, blobs in frames(stopped_in_zone(np.random.default_rng(3)), np.random.default_rng(3)):
        at = detections.captured_at
        if at >= T0 + 25:  # both cars stand in their no-stopping zones, their incidents open
            at -= HOUR
        events += analyzer.update(detections.model_copy(update={"captured_at": at, "static_blobs": blobs})).events

    stopped = [event for event in events if event.type == "stopped_vehicle"]
    opened = {event.event_id for event in stopped if event.state == EventState.OPENED}
    resolved = {event.event_id for event in stopped if event.state == EventState.RESOLVED}
    assert len(opened) >= 2 and opened == resolved
    assert not analyzer.state.incidents
