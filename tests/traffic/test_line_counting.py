"""Line counting, one test per fault users report in common line counters."""
from __future__ import annotations

import pytest

from processors.analytics.traffic.analyzer import TrafficAnalyzer
from schemas import UNTRACKED, Detections
from schemas.settings.config import CameraConfig, Config
from schemas.settings.traffic import SceneConfig

T0 = 1_700_000_000.0


def analyzer_for(line: dict) -> TrafficAnalyzer:
    scene = SceneConfig(counting_lines=[{"id": "l", **line}],
                        thresholds={"count_window_seconds": 60, "crossing_debounce_frames": 2})
    return TrafficAnalyzer.restore(CameraConfig(id="c", source="x.mp4", scene=scene), Config(), None)


def feed(analyzer: TrafficAnalyzer, frames: list[list[tuple[int, tuple]]], height: int = 720) -> dict[str, int]:
    """frames: per frame a list of (track id, box); returns direction -> count after flushing the window."""
    windows = []
    for seq, objects in enumerate(frames):
        windows += analyzer.update(Detections(
            camera_id="c", seq=seq, captured_at=T0 + seq * 0.2, image_width=1280, image_height=height, model="t",
            inference_ms=0, xyxy=[box for _, box in objects], confidence=[0.9] * len(objects),
            class_id=[2] * len(objects), class_name=["car"] * len(objects),
            track_id=[track_id for track_id, _ in objects])).line_counts
    for extra in (1, 2):  # later frames: tracks expire (pending crossings count), then the window closes
        windows += analyzer.update(Detections(
            camera_id="c", seq=len(frames) + extra, captured_at=T0 + 60 * extra + 30, image_width=1280,
            image_height=height, model="t", inference_ms=0)).line_counts
    totals: dict[str, int] = {}
    for window in windows:
        for direction, count in zip(window.direction, window.count, strict=True):
            totals[direction] = totals.get(direction, 0) + count
    return totals


def car_at(x: float, foot_y: float) -> tuple:
    return (x - 40, foot_y - 40, x + 40, foot_y)


HORIZONTAL = {"start": [0, 400], "end": [1280, 400], "forward": "down", "backward": "up"}


def test_two_objects_crossing_together_each_count_once():
    ys = [360, 380, 395, 410, 430, 450]  # both cross between the 3rd and 4th frame
    frames = [[(1, car_at(300, y)), (2, car_at(420, y)), (3, car_at(900, 800 - y))] for y in ys]
    assert feed(analyzer_for(HORIZONTAL), frames) == {"down": 2, "up": 1}


def test_one_frame_flicker_at_the_line_is_not_a_crossing():
    ys = [390, 392, 405, 393, 391, 406, 394, 392]  # two one-frame jumps across, each back at once
    assert feed(analyzer_for(HORIZONTAL), [[(1, car_at(500, y))] for y in ys]) == {}


def test_flicker_then_real_crossing_counts_once_and_only_forward():
    ys = [380, 392, 405, 393, 402, 410, 420, 440, 460]
    assert feed(analyzer_for(HORIZONTAL), [[(1, car_at(500, y))] for y in ys]) == {"down": 1}


def test_segment_does_not_extend_to_infinity():
    line = {"start": [400, 400], "end": [700, 400], "forward": "down", "backward": "up"}
    ys = [360, 380, 420, 440, 460]
    outside = [[(1, car_at(200, y)), (2, car_at(900, y))] for y in ys]  # pass beside the segment's ends
    inside = [[(3, car_at(550, y))] for y in ys]
    assert feed(analyzer_for(line), outside) == {}
    assert feed(analyzer_for(line), inside) == {"down": 1}


def test_line_near_the_frame_edge_counts():
    # 6 px from the top of a 432-px frame: a car leaving upwards is clipped at y=0 and then lost.
    line = {"start": [0, 6], "end": [768, 6], "forward": "down", "backward": "up", "anchor": "top_center"}
    tops = [60, 40, 20, 8, 0, 0]
    frames = [[(1, (300, top, 380, top + 80 if top else 50))] for top in tops]
    assert feed(analyzer_for(line), frames, height=432) == {"up": 1}
    # A car seen for only one frame past the line before it leaves the view still counts (pending at expiry).
    assert feed(analyzer_for(line), [[(1, (300, top, 380, top + 80))] for top in (40, 20, 2)], height=432) == {"up": 1}


def test_redelivered_frames_do_not_count_twice():
    analyzer = analyzer_for(HORIZONTAL)
    frames = []
    for seq, y in enumerate([380, 390, 410, 420, 430]):
        frame = Detections(camera_id="c", seq=seq, captured_at=T0 + seq * 0.2, image_width=1280, image_height=720,
                           model="t", inference_ms=0, xyxy=[car_at(500, y)], confidence=[0.9], class_id=[2],
                           class_name=["car"], track_id=[1])
        frames += [frame, frame]  # every message delivered twice
    for frame in frames:
        analyzer.update(frame)
    assert analyzer.state.counts == {"l": {"car|down": 1}}


@pytest.mark.parametrize("bad, field", [
    ({"counting_lines": [{"id": "l", "start": [1, 1], "end": [1, 1]}]}, "start and end must differ"),
    ({"counting_lines": [{"id": "l", "start": [0, 0], "end": [1, 1], "forward": "in", "backward": "in"}]},
     "different names"),
    ({"lanes": [{"id": "a", "polygon": [[0, 0], [10, 0], [10, 10]], "direction": [0, 0]}]}, "must not be zero"),
    ({"lanes": [{"id": "a", "polygon": [[0, 0], [20, 10], [20, 0], [0, 20]], "direction": [1, 0]}]}, "cross"),
    ({"counting_lines": [{"id": "l", "start": [0, 0], "end": [1, 1], "lane": "nope"}]}, "unknown lane"),
    ({"no_stopping_zones": [{"id": "z", "polygon": [[0, 0], [9, 0], [9, 9]], "queue_stop_lines": ["s"]}]},
     "unknown stop line"),
    ({"no_stopping_zones": [{"id": "z", "polygon": [[0, 0], [9, 0], [9, 9]], "allowed_classes": ["buss"]}]},
     "allowed_classes not in vehicle_classes: buss"),
    ({"image_to_ground": [[1, 0, 0], [0, 1, 0]]}, "3x3"),
    ({"vehicle_classes": ["tractor"]}, "missing from road_classes"),
    ({"thresholds": {"congestion_queue_levels": [5, 3, 10]}}, "must increase"),
    ({"lanes": [{"id": "a", "polygon": [[0, 0], [9, 0], [9, 9]], "direction": [1, 0]}],
      "crosswalks": [{"id": "a", "polygon": [[0, 0], [9, 0], [9, 9]]}]}, "duplicate scene id"),
])
def test_bad_scene_fails_with_the_reason(bad, field):
    with pytest.raises(ValueError, match=field):
        SceneConfig.model_validate(bad)



def test_at_the_end_of_footage_pending_crossings_count_and_closed_windows_do_not_count_again():
    analyzer = analyzer_for(HORIZONTAL)
    # Car 1 crosses down in one window; a minute later car 2 crosses up and leaves the view 0.4 s before the end,
    # and car 3 reaches the far side on the last frame, short of its debounce frames.
    timeline = [(T0 + i * 0.2, [(1, car_at(200, y))]) for i, y in enumerate((360, 380, 410, 430, 450))]
    later = [[(2, car_at(600, y))] for y in (450, 420, 395, 380)] + [[], []]
    later += [[(3, car_at(900, y))] for y in (370, 390, 398, 405)]
    timeline += [(T0 + 60 + i * 0.2, objects) for i, objects in enumerate(later)]
    closed = []
    for seq, (captured_at, objects) in enumerate(timeline):
        closed += analyzer.update(Detections(
            camera_id="c", seq=seq, captured_at=captured_at, image_width=1280, image_height=720, model="t",
            inference_ms=0, xyxy=[box for _, box in objects], confidence=[0.9] * len(objects),
            class_id=[2] * len(objects), class_name=["car"] * len(objects),
            track_id=[track_id for track_id, _ in objects])).line_counts
    assert [dict(zip(w.direction, w.count, strict=True)) for w in closed] == [{"down": 1}]
    end = timeline[-1][0] + 0.2
    [last] = analyzer.end_of_footage_counts(end)
    assert dict(zip(last.direction, last.count, strict=True)) == {"down": 1, "up": 1}
    assert last.window_start == closed[0].window_end and last.window_end == end


def test_a_vehicle_whose_track_id_switches_as_it_crosses_counts_once():
    """The tracker gives the car a new id between its last frame before the line and its first after it; the
    analyzer takes the new track for the same vehicle found again, crossing and all."""
    ys = [372, 380, 388, 396, 404, 412, 420, 428, 436]  # crosses y 400 between the 4th and 5th frame
    frames = [[(1 if y < 400 else 2, car_at(500, y))] for y in ys]
    assert feed(analyzer_for(HORIZONTAL), frames) == {"down": 1}


def test_a_vehicle_the_tracker_confirms_only_past_the_line_counts_once():
    """Close to the camera at 5 fps a car moves so far between frames that the tracker confirms it only several frames
    after the detector first found it, already past the line: where it was seen unconfirmed is the side it came
    from."""
    ys = [330, 370, 410, 450, 490]  # unconfirmed until past y 400
    frames = [[(UNTRACKED if y < 400 else 7, car_at(500, y))] for y in ys]
    assert feed(analyzer_for(HORIZONTAL), frames) == {"down": 1}


def test_a_track_confirmed_past_the_line_beside_two_unconfirmed_cars_as_near_takes_no_side_from_either():
    """Which of two unconfirmed cars, one before the line and one past it, the new track was is not clear: it counts
    nothing rather than a crossing it may not have made."""
    frames = [[(UNTRACKED, car_at(500, 380)), (UNTRACKED, car_at(500, 440))],
              [(7, car_at(500, 410))], [(7, car_at(500, 430))], [(7, car_at(500, 450))]]
    assert feed(analyzer_for(HORIZONTAL), frames) == {}


def test_a_vehicle_lost_by_its_track_past_the_line_and_confirmed_again_counts_once():
    """The car's first track crosses and is lost; the detector still finds it, unconfirmed, and the tracker confirms
    it again under a new id further on: the crossing was counted once, by the first track."""
    frames = [[(1, car_at(500, y))] for y in (340, 370, 410, 440)] + \
             [[(UNTRACKED, car_at(500, y))] for y in (470, 500)] + [[(2, car_at(500, y))] for y in (530, 560)]
    assert feed(analyzer_for(HORIZONTAL), frames) == {"down": 1}
