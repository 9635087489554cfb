"""The console's parts without Kafka or a browser: its bounded state and the round-trip scene file."""
from __future__ import annotations

import fcntl
import multiprocessing
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from kafka import TopicPartition
from kafka.errors import KafkaConnectionError

from schemas import (
    CameraState,
    CameraStatus,
    Detections,
    Event,
    EventState,
    Frame,
    FrameRef,
    LineCounts,
    RiskLevel,
    Severity,
    ZoneMetrics,
    encode,
)
from schemas.event import CLOSED_BY_RESET
from schemas.settings.config import Config, TopicNames, load_config
from sinks.console import scene_file as scene_module
from sinks.console.feed import TopicFeed
from sinks.console.scene_file import Saved, SceneConflict, SceneError, SceneFile, geometry_version
from sinks.console.state import DIRECTIONS_PER_LINE, LINES_PER_CAMERA, ConsoleState, feed_health, heat_grid


def detections(seq: int, boxes: int = 2, density: np.ndarray | None = None) -> Detections:
    extra = {} if density is None else {"density_map": density.astype(np.float32).tobytes(),
                                        "density_map_shape": density.shape}
    return Detections(camera_id="cam", seq=seq, captured_at=1000.0 + seq, image_width=640, image_height=480,
                      model="m", inference_ms=1.0, xyxy=[(10.0, 10.0, 20.0, 40.0)] * boxes, confidence=[0.9] * boxes,
                      class_id=[0] * boxes, class_name=["person"] * boxes, track_id=list(range(boxes)), **extra)


def event(event_id: str, seq: int) -> Event:
    return Event(event_id=event_id, type="risk_level_changed", state=EventState.OPENED, severity=Severity.WARNING,
                 camera_id="cam", zone_id="z", started_at=1000.0, updated_at=1000.0, confidence=1.0,
                 evidence=FrameRef(camera_id="cam", seq=seq), reason="dense")


def window(start: float, level: RiskLevel = RiskLevel.NORMAL, last_seq: int = 1) -> ZoneMetrics:
    return ZoneMetrics(camera_id="cam", zone_id="z", window_start=start, window_end=start + 10, frames=50,
                       area_m2=100, people_mean=50, people_max=60, density_mean_per_m2=0.5, density_max_per_m2=0.6,
                       risk_level=level, risk_reason="because", last_seq=last_seq)


def test_every_collection_is_bounded():
    state = ConsoleState(frame_buffer=3, zone_history=4, recent_events=5, zone_stale_after_s=30)
    for seq in range(20):
        state.on_frame("cam", seq, 1000.0 + seq, b"jpeg", (640, 480), (640, 480))
        state.on_detections(detections(seq))
        state.on_zone_metrics(window(1000.0 + 10 * seq), 1010.0 + 10 * seq)
        state.on_event(event(f"e{seq}", seq + 100))  # evidence frames that never come
    assert len(state.cameras["cam"].frames) == 3 and len(state.cameras["cam"].detections) == 3
    assert len(state.zone_history_of("cam", "z")) == 4
    assert len(state.events) == 5 and len(state.awaiting_frame) <= 5


def test_an_incident_that_really_ended_keeps_its_end_when_a_reset_analyzer_sends_what_it_had_stored_as_open():
    state = ConsoleState(frame_buffer=3, zone_history=4, recent_events=5, zone_stale_after_s=30)
    opened = event("risk-1", 1)
    state.on_event(opened)
    state.on_event(opened.model_copy(update={"state": EventState.RESOLVED, "updated_at": 1250.0, "ended_at": 1250.0,
                                             "reason": "over"}))
    state.on_event(event("risk-2", 2))
    stale = opened.model_copy(update={"state": EventState.RESOLVED, "updated_at": 1200.0, "ended_at": 1200.0,
                                      "reason": "state lost", "details": {"closed_by": CLOSED_BY_RESET}})
    state.on_event(stale)
    assert state.events["risk-1"]["ended_at"] == 1250.0 and state.events["risk-1"]["reason"] == "over"
    assert list(state.events) == ["risk-1", "risk-2"]  # not moved to the newest place either
    state.on_event(stale.model_copy(update={"event_id": "risk-2"}))
    assert state.events["risk-2"]["state"] == "resolved"  # one still open is closed by it


def test_a_copy_of_an_earlier_message_that_comes_after_the_end_leaves_the_incident_ended():
    state = ConsoleState(frame_buffer=3, zone_history=4, recent_events=5, zone_stale_after_s=30)
    opened = event("risk-1", 1)
    state.on_event(opened)
    state.on_event(opened.model_copy(update={"state": EventState.RESOLVED, "updated_at": opened.updated_at + 50,
                                             "ended_at": opened.updated_at + 50, "reason": "over"}))
    state.on_event(opened)  # sent again, arriving late
    assert state.events["risk-1"]["state"] == "resolved" and state.events["risk-1"]["reason"] == "over"


def test_evidence_is_the_events_frame_even_when_the_event_arrives_first():
    state = ConsoleState(frame_buffer=10, zone_history=10, recent_events=10, zone_stale_after_s=30)
    state.on_frame("cam", 1, 1001.0, b"one", (640, 480), (640, 480))
    state.on_event(event("e", 2))  # its frame and detections are still on their way
    assert state.evidence_of("e") is None
    state.on_frame("cam", 2, 1002.0, b"two", (640, 480), (640, 480))
    state.on_detections(detections(2, boxes=3))
    evidence = state.evidence_of("e")
    assert evidence.frame.jpeg == b"two" and len(evidence.detections["boxes"]) == 3


def test_evidence_is_a_neighbour_of_the_events_frame_at_most_or_none():
    state = ConsoleState(frame_buffer=60, zone_history=10, recent_events=10, zone_stale_after_s=30)
    for seq in [*range(5000, 5010), *range(5011, 5060)]:  # an hour after frame 5; frame 5010 never reached it
        state.on_frame("cam", seq, 4600.0 + seq / 5, f"frame {seq}".encode(), (640, 480), (640, 480))
    state.on_event(event("long-gone", 5))  # read from the events backlog: its frame left the buffer long ago
    state.on_event(event("missing", 5010))
    assert state.evidence_of("long-gone") is None
    assert state.evidence_of("missing").frame.seq in (5009, 5011)


def test_an_event_read_before_its_frame_gets_a_neighbour_when_its_frame_never_comes():
    state = ConsoleState(frame_buffer=60, zone_history=10, recent_events=10, zone_stale_after_s=30)
    state.on_frame("cam", 9, 1009.0, b"nine", (640, 480), (640, 480))
    state.on_event(event("e", 10))  # frame 10 expired from the frame store: the feed skips it
    state.on_event(event("far", 20))
    state.on_frame("cam", 11, 1011.0, b"eleven", (640, 480), (640, 480))
    assert state.evidence_of("e").frame.seq in (9, 11) and state.evidence_of("far") is None
    state.on_frame("cam", 20, 1020.0, b"twenty", (640, 480), (640, 480))
    assert state.evidence_of("far").frame.seq == 20


def test_the_live_frame_gets_boxes_only_from_detections_captured_near_it():
    state = ConsoleState(frame_buffer=10, zone_history=10, recent_events=10, zone_stale_after_s=30)
    state.on_detections(detections(1))  # captured at 1001
    state.on_frame("cam", 1, 1001.0, b"jpeg", (640, 480), (640, 480))
    assert state.camera_live("cam", now=1001.5)["detections"]["seq"] == 1
    state.on_frame("cam", 2, 1001.8, b"jpeg", (640, 480), (640, 480))  # its own detections are on their way
    assert state.camera_live("cam", now=1002.0)["detections"]["seq"] == 1
    state.on_frame("cam", 300, 1300.0, b"jpeg", (640, 480), (640, 480))  # inference stopped long ago
    assert state.camera_live("cam", now=1300.5)["detections"] is None
    state.on_detections(detections(299))  # captured at 1299.0, one second before the frame
    state.on_detections(detections(300, boxes=5))
    assert state.camera_live("cam", now=1300.5)["detections"]["seq"] == 300


def test_while_the_detector_lags_the_newest_frame_it_has_boxes_of_is_shown_with_its_age():
    state = ConsoleState(frame_buffer=60, zone_history=10, recent_events=10, zone_stale_after_s=30)
    for seq in range(1, 21):  # 10 frames a second; each frame's detections come 1.5 s after it
        state.on_frame("cam", seq, 1000.0 + seq / 10, b"jpeg", (640, 480), (640, 480))
        if seq > 15:
            state.on_detections(detections(seq - 15).model_copy(update={"captured_at": 1000.0 + (seq - 15) / 10}))
    live = state.camera_live("cam", now=1002.1)
    assert live["detections"]["seq"] == live["frame"]["seq"] == 5
    assert live["frame"]["behind_s"] == 1.5 and live["frame"]["age_s"] == 1.6
    for seq in range(21, 80):  # the detector stopped: more than LIVE_MAX_DETECTOR_LAG_S behind, no boxes
        state.on_frame("cam", seq, 1000.0 + seq / 10, b"jpeg", (640, 480), (640, 480))
    live = state.camera_live("cam", now=1008.0)
    assert live["frame"]["seq"] == 79 and live["frame"]["behind_s"] == 0 and live["detections"] is None


def test_a_frame_is_drawn_at_the_cameras_own_size_when_capture_scaled_its_jpeg_down():
    state = ConsoleState(frame_buffer=10, zone_history=10, recent_events=10, zone_stale_after_s=30)
    state.on_frame("cam", 1, 1001.0, b"jpeg", (1920, 1080), (1280, 720))
    frame = state.camera_live("cam", now=1001.5)["frame"]
    assert (frame["width"], frame["height"]) == (1920, 1080)


def test_a_zone_without_new_windows_turns_unknown_and_a_redelivered_window_is_kept_once():
    state = ConsoleState(frame_buffer=10, zone_history=10, recent_events=10, zone_stale_after_s=30)
    state.on_zone_metrics(window(1000.0, RiskLevel.DANGER), 1010.0)
    state.on_zone_metrics(window(990.0, RiskLevel.NORMAL), 1011.0)  # late: it goes before the newest
    state.on_zone_metrics(window(1000.0, RiskLevel.DANGER), 1012.0)  # redelivered
    assert [point["level"] for point in state.zone_history_of("cam", "z")] == ["normal", "danger"]
    assert state.zone_now("cam", "z", now=1015.0)["level"] == "danger"
    assert state.zone_now("cam", "z", now=1100.0)["level"] == "unknown"


def test_a_camera_clock_stepped_back_starts_the_zones_history_again():
    state = ConsoleState(frame_buffer=10, zone_history=10, recent_events=10, zone_stale_after_s=30)
    ahead = 1000.0 + 3600  # the camera's clock ran an hour ahead, then was set right
    state.on_zone_metrics(window(ahead, RiskLevel.NORMAL, last_seq=100), 1010.0)
    for start, last_seq in ((1000.0, 150), (1010.0, 200)):  # the analyzer starts its windows again from the new time
        state.on_zone_metrics(window(start, RiskLevel.DANGER, last_seq), start + 10)
    assert [point["window_start"] for point in state.zone_history_of("cam", "z")] == [1000.0, 1010.0]
    assert state.zone_now("cam", "z", now=1025.0)["level"] == "danger"


def test_a_producer_started_again_with_its_clock_set_back_starts_the_zones_history_again():
    """Its frames are numbered afresh from its new start time, far below the numbers before: new windows, not old ones
    sent again."""
    state = ConsoleState(frame_buffer=10, zone_history=10, recent_events=10, zone_stale_after_s=30)
    ahead, numbered_then = 1000.0 + 3600, 4_600_000_000 * 1_000_000
    state.on_zone_metrics(window(ahead, RiskLevel.NORMAL, last_seq=numbered_then), 1010.0)
    for start in (1000.0, 1010.0):
        state.on_zone_metrics(window(start, RiskLevel.DANGER, int(start * 1_000_000)), start + 10)
    assert [point["window_start"] for point in state.zone_history_of("cam", "z")] == [1000.0, 1010.0]
    assert state.zone_now("cam", "z", now=1025.0)["level"] == "danger"


def test_a_window_sent_again_from_before_a_producer_restart_leaves_the_zones_history_as_it_was():
    """The restarted producer numbers its frames far above its first run; the analyzer, restarted from a checkpoint
    of before that, sends a window of the first run again, older than every window held."""
    state = ConsoleState(frame_buffer=10, zone_history=3, recent_events=10, zone_stale_after_s=30)
    first_run = [window(1000.0 + 10 * index, last_seq=50 * index) for index in range(3)]
    second_run = [window(1030.0 + 10 * index, last_seq=5_000_000 + 50 * index) for index in range(3)]
    for metrics in [*first_run, *second_run]:
        state.on_zone_metrics(metrics, metrics.window_end)
    held = state.zone_history_of("cam", "z")
    state.on_zone_metrics(first_run[1], 1070.0)
    assert state.zone_history_of("cam", "z") == held


def test_a_window_sent_again_from_before_a_clock_set_back_is_not_taken_for_the_newest():
    """The producer restarted with its clock set back numbers far below its first run; the analyzer, restored from a
    checkpoint of before that, then sends a window of the first run again, stamped later than the new windows."""
    state = ConsoleState(frame_buffer=10, zone_history=10, recent_events=10, zone_stale_after_s=30)
    for index in range(3):
        state.on_zone_metrics(window(2020.0 + 10 * index, last_seq=5_000_000 + 50 * index), 2030.0 + 10 * index)
    for index in range(3):
        state.on_zone_metrics(window(1000.0 + 10 * index, last_seq=1_000 + 50 * index), 2060.0 + index)
    held = state.zone_history_of("cam", "z")
    state.on_zone_metrics(window(2040.0, last_seq=5_000_100), 2070.0)
    assert state.zone_history_of("cam", "z") == held
    state.on_zone_metrics(window(1030.0, last_seq=1_150), 2071.0)
    assert [point["window_start"] for point in state.zone_history_of("cam", "z")] == [1000, 1010, 1020, 1030]


def test_windows_sent_again_by_a_restarted_analyzer_leave_the_zones_history_as_it_was():
    state = ConsoleState(frame_buffer=10, zone_history=10, recent_events=10, zone_stale_after_s=30)
    for index in range(20):
        state.on_zone_metrics(window(1000.0 + 10 * index, last_seq=50 * index), 1010.0 + 10 * index)
    held = state.zone_history_of("cam", "z")
    for index in range(5, 15):  # from its checkpoint on: older than the history held, then windows held
        state.on_zone_metrics(window(1000.0 + 10 * index, last_seq=50 * index), 1200.0)
    assert state.zone_history_of("cam", "z") == held


def test_windows_sent_again_from_before_a_clock_step_back_are_not_taken_for_the_newest():
    state = ConsoleState(frame_buffer=10, zone_history=10, recent_events=10, zone_stale_after_s=30)
    ahead = 1000.0 + 300  # the camera's clock ran 300 s ahead, then was set right
    state.on_zone_metrics(window(ahead, last_seq=50), 1000.0)
    for start, last_seq in ((1000.0, 70), (1010.0, 80), (1020.0, 90)):
        state.on_zone_metrics(window(start, RiskLevel.DANGER, last_seq), start + 10)
    held = state.zone_history_of("cam", "z")
    # An analyzer restarted from its checkpoint of frame 40 sends the window stamped ahead again, then goes on.
    state.on_zone_metrics(window(ahead, last_seq=50), 1035.0)
    assert state.zone_history_of("cam", "z") == held
    state.on_zone_metrics(window(1030.0, RiskLevel.DANGER, last_seq=100), 1040.0)
    assert [point["window_start"] for point in state.zone_history_of("cam", "z")] == [1000, 1010, 1020, 1030]


def test_a_window_stamped_ahead_of_the_consoles_clock_still_turns_stale():
    state = ConsoleState(frame_buffer=10, zone_history=10, recent_events=10, zone_stale_after_s=30)
    state.on_zone_metrics(window(1000.0 + 3600, RiskLevel.DANGER), 1010.0)  # received at 1010, ends an hour later
    assert state.zone_now("cam", "z", now=1020.0)["level"] == "danger"
    stale = state.zone_now("cam", "z", now=1100.0)
    assert stale["level"] == "unknown" and stale["reason"] == "no zone window for 90 s"


def test_a_zone_stays_current_while_windows_arrive_from_a_camera_clock_behind_the_consoles():
    state = ConsoleState(frame_buffer=10, zone_history=10, recent_events=10, zone_stale_after_s=30)
    for index in range(5):  # stamped a minute behind the console's clock
        state.on_zone_metrics(window(940.0 + 10 * index, RiskLevel.DANGER), 1010.0 + 10 * index)
    assert state.zone_now("cam", "z", now=1051.0)["level"] == "danger"
    stale = state.zone_now("cam", "z", now=1100.0)
    assert stale["level"] == "unknown" and stale["reason"] == "no zone window for 50 s"


def test_line_totals_count_a_redelivered_window_once():
    state = ConsoleState(frame_buffer=10, zone_history=10, recent_events=10, zone_stale_after_s=30)
    counts = LineCounts(camera_id="cam", line_id="l", window_start=0, window_end=60, class_name=["car", "car"],
                        direction=["in", "out"], count=[3, 2])
    state.on_line_counts(counts)
    state.on_line_counts(counts)
    assert state.camera_live("cam", now=100.0)["line_totals"] == {"l": {"in": 3, "out": 2}}


def test_heat_grid_pools_a_large_map_and_keeps_its_total():
    density = np.random.default_rng(1).random((200, 100)).astype(np.float32)
    heat = heat_grid(density)
    assert heat["rows"] <= 48 and heat["cols"] <= 48 and len(heat["cells"]) == heat["rows"] * heat["cols"]
    assert max(heat["cells"]) == 255
    assert heat["peak"] * heat["rows"] * heat["cols"] >= density.sum()


def line_window(line_id: str, camera_id: str = "cam", directions: tuple[str, ...] = ("in",)) -> LineCounts:
    return LineCounts(camera_id=camera_id, line_id=line_id, window_start=0, window_end=60,
                      class_name=["car"] * len(directions), direction=list(directions), count=[1] * len(directions))


def traffic_camera(camera_id: str, forward: str = "in", backward: str = "out") -> dict:
    return {"id": camera_id, "source": "a.mp4", "scene": {"counting_lines": [
        {"id": "gate", "start": [0, 50], "end": [100, 50], "forward": forward, "backward": backward}]}}


def test_only_the_sites_cameras_and_zones_are_kept_and_each_cameras_line_totals_are_bounded():
    square = [[0, 0], [100, 0], [100, 100]]
    state = ConsoleState(frame_buffer=10, zone_history=10, recent_events=10, zone_stale_after_s=30)
    state.on_frame("ghost", 1, 1000.0, b"jpeg", (640, 480), (640, 480))  # read before the site was known
    state.follow_site(Config(cameras=[{**traffic_camera("cam"),
                                       "zones": [{"id": "z", "polygon": square, "area_m2": 100}]},
                                      traffic_camera("other")]))
    assert "ghost" not in state.cameras
    for index in range(1000):  # ids from the topics that the site does not have
        state.on_frame(f"ghost-{index}", 1, 1000.0, b"jpeg", (640, 480), (640, 480))
        state.on_detections(detections(index).model_copy(update={"camera_id": f"ghost-{index}"}))
        state.on_camera_status(CameraStatus(camera_id=f"ghost-{index}", state=CameraState.UP, fps=5.0, reconnects=0,
                                            dropped_frames=0, at=1000.0))
        state.on_zone_metrics(window(1000.0).model_copy(update={"zone_id": f"ghost-{index}"}), 1010.0)
        state.on_line_counts(line_window("gate", camera_id=f"ghost-{index}"))
        for camera_id in ("cam", "other"):
            state.on_line_counts(line_window(f"line-{index}", camera_id, (f"to-{index}",)))
            state.on_line_counts(line_window("gate", camera_id, (f"to-{index}",)).model_copy(
                update={"window_start": 60 * index}))
    state.on_zone_metrics(window(1000.0), 1010.0)
    assert list(state.cameras) == ["cam", "other"] and list(state.zones) == [("cam", "z")]
    for camera_id in ("cam", "other"):  # each camera has its own cap, and a configured name is never refused
        totals = state.cameras[camera_id].line_totals
        assert len(totals) == LINES_PER_CAMERA and "gate" in totals
        assert len(totals["gate"]) == DIRECTIONS_PER_LINE
        state.on_line_counts(line_window("gate", camera_id, ("in", "out", "to-999")).model_copy(
            update={"window_start": -60}))
        assert totals["gate"]["in"] == totals["gate"]["out"] == 1 and "to-999" not in totals["gate"]


def test_line_totals_go_on_under_the_names_an_analyzer_counts_under_after_a_rename():
    state = ConsoleState(frame_buffer=2, zone_history=10, recent_events=2, zone_stale_after_s=30)
    state.follow_site(Config(cameras=[traffic_camera("cam")]))
    state.on_line_counts(line_window("gate", directions=("in", "out")))
    # The operator renames the line's directions in the editor: the analyzer, not restarted yet, still counts under
    # the old names. A line added to the site file meanwhile is counted too.
    state.follow_site(Config(cameras=[traffic_camera("cam", "northbound", "southbound")]))
    for line_id in ("gate", "added"):
        state.on_line_counts(line_window(line_id, directions=("in", "out")).model_copy(update={"window_start": 60}))
    assert state.camera_live("cam", 100.0)["line_totals"] == {"gate": {"in": 2, "out": 2},
                                                               "added": {"in": 1, "out": 1}}


def test_every_cameras_counting_lines_are_counted_under_their_own_direction_names():
    state = ConsoleState(frame_buffer=2, zone_history=2, recent_events=2, zone_stale_after_s=30)
    cameras = [traffic_camera(f"cam{i}", f"to-north-{i}", f"to-south-{i}") for i in range(1, 81)]
    state.follow_site(Config(cameras=cameras))
    for i in range(1, 81):
        state.on_line_counts(line_window("gate", f"cam{i}", (f"to-north-{i}", f"to-south-{i}")))
    assert all(state.camera_live(f"cam{i}", 100.0)["line_totals"] == {"gate": {f"to-north-{i}": 1, f"to-south-{i}": 1}}
               for i in range(1, 81))


SITE = """\
# Site comment kept.
site: parts
cameras:
  - id: cam
    source: clip.mp4
    zones:
      - id: z
        polygon: [[0, 0], [100, 0], [100, 100]]  # traced from the plan
        area_m2: 30
"""


@pytest.fixture
def scene_file(tmp_path) -> SceneFile:
    path = tmp_path / "site.yaml"
    path.write_text(SITE)
    return SceneFile(path)


def current(scene_file: SceneFile, camera_id: str = "cam") -> str:
    """The version of the camera's geometry in the file now, as an editor that just loaded it sends back."""
    return geometry_version(scene_file.read(camera_id))


def test_saving_unchanged_geometry_leaves_the_file_alone(scene_file):
    assert scene_file.write("cam", scene_file.read("cam"), current(scene_file)) == Saved([], None, [])
    assert scene_file.path.read_text() == SITE


def test_a_new_zone_and_scene_are_saved_with_every_comment_and_read_back_identically(scene_file):
    geometry = scene_file.read("cam")
    geometry["zones"].append({"id": "kiosk", "polygon": [[10, 10], [50, 10], [50, 40], [10, 40]], "area_m2": 12.5})
    geometry["scene"] = {"counting_lines": [{"id": "gate", "start": [0, 50], "end": [100, 50]}]}
    saved = scene_file.write("cam", geometry, current(scene_file))
    assert saved.restart == ["analyze", "infer", "export-metrics"] and saved.written_out == []
    assert [zone.id for zone in saved.config.camera("cam").zones] == ["z", "kiosk"]
    text = scene_file.path.read_text()
    assert "# Site comment kept." in text and "# traced from the plan" in text
    assert "polygon: [[10, 10], [50, 10], [50, 40], [10, 40]]" in text
    assert scene_file.read("cam") == geometry


def test_invalid_geometry_is_refused_naming_the_field_and_the_file_is_untouched(scene_file):
    geometry = scene_file.read("cam")
    geometry["zones"][0]["polygon"] = [[0, 0], [10, 10], [20, 20]]  # no area
    with pytest.raises(ValueError, match=r"cameras\.0\.zones\.0\.polygon"):
        scene_file.write("cam", geometry, current(scene_file))
    assert scene_file.path.read_text() == SITE
    with pytest.raises(SceneError, match="not editable"):
        scene_file.write("cam", {"source": "other.mp4"}, current(scene_file))
    with pytest.raises(SceneError, match="'nope' is not in the configuration"):
        scene_file.read("nope")


def test_the_file_keeps_its_permissions(scene_file):
    scene_file.path.chmod(0o640)
    geometry = scene_file.read("cam")
    geometry["zones"][0]["area_m2"] = 31
    scene_file.write("cam", geometry, current(scene_file))
    assert Path(scene_file.path).stat().st_mode & 0o777 == 0o640


@pytest.mark.parametrize("newline", ["\r\n", "\n"])
def test_the_file_keeps_its_line_endings(tmp_path, newline):
    """A site file written on Windows stays CRLF throughout, comments and all; others stay LF."""
    path = tmp_path / "site.yaml"
    path.write_bytes(SITE.replace("\n", newline).encode())
    scene_file = SceneFile(path)
    geometry = scene_file.read("cam")
    geometry["zones"][0]["area_m2"] = 31
    scene_file.write("cam", geometry, current(scene_file))
    written = path.read_bytes().decode()
    assert written == SITE.replace("area_m2: 30", "area_m2: 31").replace("\n", newline)


@pytest.mark.parametrize("edit, restart", [
    (lambda geometry: geometry["zones"][0].update(polygon=[[0, 0], [90, 0], [90, 90]]), ["analyze"]),
    (lambda geometry: geometry["zones"].append({"id": "kiosk", "polygon": [[0, 0], [9, 0], [9, 9]], "area_m2": 5}),
     ["analyze", "export-metrics"]),  # the metrics sink exports the zones configured when it started
    (lambda geometry: geometry.update(zones=[]), ["analyze", "infer", "export-metrics"]),  # no density maps now
    (lambda geometry: geometry.update(calibration={"image_points": [[0, 0], [100, 0], [100, 100], [0, 100]],
                                                   "ground_points": [[0, 0], [10, 0], [10, 10], [0, 10]]}),
     ["analyze"]),
    (lambda geometry: geometry.update(scene={"lanes": [{"id": "north", "polygon": [[0, 0], [50, 0], [50, 90]],
                                                        "direction": [0, -1]}]}),
     ["analyze", "infer"]),  # inference keeps a background model for each camera with a traffic scene
    (lambda geometry: geometry.update(scene={"lanes": [{"id": "north", "polygon": [[0, 0], [50, 0], [50, 90]],
                                                        "direction": [0, -1]}],
                                             "counting_lines": [{"id": "stop", "start": [0, 40], "end": [50, 40],
                                                                 "lane": "north"}]}),
     ["analyze", "infer", "export-metrics"]),  # and the metrics sink exports the counting lines it started with
])
def test_a_save_names_every_stage_that_reads_what_changed_at_its_start(scene_file, edit, restart):
    geometry = scene_file.read("cam")
    edit(geometry)
    assert scene_file.write("cam", geometry, current(scene_file)).restart == restart


SHARED = """\
site: parts
cameras:
  - id: a
    source: a.mp4
    calibration: &plan   # one survey for both cameras
      image_points: [[0, 0], [100, 0], [100, 100], [0, 100]]
      ground_points: [[0, 0], [10, 0], [10, 10], [0, 10]]
    zones:
      - &za
        id: za
        polygon: [[0, 0], [50, 0], [50, 50]]
        area_m2: 30
      - <<: *za
        id: zb
        polygon: [[60, 0], [90, 0], [90, 50]]
  - id: b
    source: b.mp4
    calibration: *plan
"""


def test_an_edit_of_a_node_shared_through_an_anchor_or_merge_key_reaches_this_camera_only(tmp_path):
    path = tmp_path / "site.yaml"
    path.write_text(SHARED)
    scene_file = SceneFile(path)
    geometry = scene_file.read("a")
    geometry["calibration"]["ground_points"] = [[0, 0], [20, 0], [20, 20], [0, 20]]  # camera a measured again
    geometry["zones"][0]["area_m2"] = 35  # zb takes its area from za through the merge key
    saved = scene_file.write("a", geometry, current(scene_file, "a"))
    assert saved.written_out == ["a.calibration", "a.zones.za"]
    config = load_config(path)
    assert config.camera("a").calibration.ground_points[1] == (20, 0)
    assert config.camera("b").calibration.ground_points[1] == (10, 0)
    assert [zone.area_m2 for zone in config.camera("a").zones] == [35, 30]
    assert "# one survey for both cameras" in path.read_text()


@pytest.mark.parametrize("camera, edit, line", [
    ("a", lambda geometry: geometry["zones"][0].update(area_m2=35), "    calibration: &plan   # one survey"),
    ("a", lambda geometry: geometry["calibration"].update(ground_points=[[0, 0], [20, 0], [20, 20], [0, 20]]),
     "    calibration:         # one survey"),
    ("b", lambda geometry: geometry["calibration"].update(ground_points=[[0, 0], [20, 0], [20, 20], [0, 20]]),
     "    calibration:         # one survey"),  # camera a's line, no longer anchored: b's copy has no comment
])
def test_the_comment_after_an_anchor_stays_on_its_key_line(tmp_path, camera, edit, line):
    path = tmp_path / "site.yaml"
    path.write_text(SHARED)
    scene_file = SceneFile(path)
    geometry = scene_file.read(camera)
    edit(geometry)
    scene_file.write(camera, geometry, current(scene_file, camera))
    assert [text for text in path.read_text().splitlines() if "# one survey" in text] == [
        f"{line} for both cameras"]


SHARED_ZONES = """\
site: parts
cameras:
  - id: a
    source: a.mp4
    zones: &zones
      # the two halves of the square
      - id: north
        polygon: [[0, 0], [50, 0], [50, 50]]
        area_m2: 30
  - id: b
    source: b.mp4
    zones: *zones
  - id: c
    source: c.mp4
    zones:
      - id: south
        polygon: [[0, 60], [50, 60], [50, 90]]
        area_m2: &area 30   # measured
  - id: d
    source: d.mp4
    zones:
      - id: east
        polygon: [[60, 0], [90, 0], [90, 50]]
        area_m2: *area
"""


@pytest.mark.parametrize("camera", ["a", "b", "c", "d"])
def test_an_edit_of_a_shared_list_or_scalar_writes_each_comment_once(tmp_path, camera):
    path = tmp_path / "site.yaml"
    path.write_text(SHARED_ZONES)
    scene_file = SceneFile(path)
    geometry = scene_file.read(camera)
    geometry["zones"][0]["area_m2"] = 45
    scene_file.write(camera, geometry, current(scene_file, camera))
    assert {camera_id: load_config(path).camera(camera_id).zones[0].area_m2 for camera_id in "abcd"} == {
        camera_id: 45 if camera_id == camera else 30 for camera_id in "abcd"}
    text = path.read_text()
    assert text.count("# the two halves of the square") == text.count("# measured") == 1, text


def test_a_value_taken_through_a_merge_key_that_the_operator_blanks_is_gone(tmp_path):
    path = tmp_path / "site.yaml"
    path.write_text(SHARED)
    scene_file = SceneFile(path)
    geometry = scene_file.read("a")
    del geometry["zones"][1]["area_m2"]  # zb's area from the calibration, not from za
    assert scene_file.write("a", geometry, current(scene_file, "a")).written_out == ["a.zones.zb"]
    assert [zone.area_m2 for zone in load_config(path).camera("a").zones] == [30, None]
    assert scene_file.read("a") == geometry


@pytest.mark.parametrize("damage, reason", [
    (lambda path: path.write_text(SITE + "  - id: [unclosed\n"), r"site\.yaml is not valid YAML: .* at line 11"),
    (lambda path: path.write_text(SITE.replace("site: parts", "site: parts\nsite: again")),
     r"site\.yaml is not valid YAML: duplicate key 'site' at line 3"),
    (lambda path: path.unlink(), r"cannot read configuration .*site\.yaml: No such file or directory"),
])
def test_a_site_file_that_cannot_be_read_is_named_with_the_reason(scene_file, damage, reason):
    version = current(scene_file)
    damage(scene_file.path)
    for attempt in (lambda: scene_file.read("cam"), lambda: scene_file.write("cam", {"zones": []}, version)):
        with pytest.raises(SceneError, match=reason):
            attempt()


def test_a_review_is_recorded_and_stops_the_incidents_escalation(tmp_path):
    from sinks.alerts.notice import notice_from_event
    from sinks.alerts.store import ACKNOWLEDGED, FALSE_ALARM, NOTIFYING, AlertRow, IncidentStore, subject_key

    store = IncidentStore(f"sqlite:///{tmp_path}/incidents.sqlite")
    try:
        notice = notice_from_event(event("cam/z/risk", 1))
        store.record_notice(notice, 1000.0)
        store.create_alert(AlertRow(
            alert_id="cam/z/risk/warning", incident_id=notice.incident_id, severity="warning", camera_id="cam",
            zone_id="z", subject=subject_key(notice.subject), routes=[], status=NOTIFYING, title="t", message="m",
            created_at=1000.0, escalation_step=0, next_escalation_at=1300.0))
        assert store.review_incident("cam/z/risk", ACKNOWLEDGED, "ana", "on it", 1010.0)
        assert store.due_escalations(2000.0) == []
        assert store.get_alert("cam/z/risk/warning").acked_at == 1010.0
        assert store.review_incident("cam/z/risk", FALSE_ALARM, "ana", "a shadow", 1020.0, "hn/cam/x.jpg")
        assert not store.review_incident("unknown", ACKNOWLEDGED, "ana", "", 1030.0)
        reviews = store.incident_detail("cam/z/risk").reviews
        assert [(r.verdict, r.by, r.evidence_path) for r in reviews] == [
            (ACKNOWLEDGED, "ana", None), (FALSE_ALARM, "ana", "hn/cam/x.jpg")]
        with pytest.raises(ValueError, match="verdict"):
            store.review_incident("cam/z/risk", "maybe", "ana", "", 1040.0)
    finally:
        store.close()


def test_up_restarts_an_exited_console_and_keeps_the_pipeline_running(capsys):
    from cityguard.up import Supervisor

    def sleeper() -> subprocess.Popen:
        return subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])

    children = {"console": subprocess.Popen([sys.executable, "-c", "raise SystemExit(3)"]), "infer": sleeper()}
    supervisor = Supervisor(children, start_stage=lambda stage: sleeper())
    try:
        children["console"].wait()
        supervisor.check(now=100.0)
        supervisor.check(now=100.5)  # still inside the first back-off: not started yet
        assert children["console"].poll() == 3
        supervisor.check(now=101.0)
        assert children["console"].poll() is None and children["infer"].poll() is None
    finally:
        for process in children.values():
            process.kill()
            process.wait()
    out = capsys.readouterr().out
    assert out.count("console exited with code 3; restarting it in 1 s") == 1 and out.count("console restarted") == 1


def test_up_stops_at_a_stage_that_refuses_what_it_was_given(tmp_path):
    from cityguard.up import StageRefused, Supervisor

    (tmp_path / "alerts.log").write_text("starting\ncityguard: error: alert channel hook: environment variable "
                                         "HOOK_URL is not set\n")
    children = {"alerts": subprocess.Popen([sys.executable, "-c", "raise SystemExit(2)"])}
    children["alerts"].wait()
    supervisor = Supervisor(children, start_stage=lambda stage: pytest.fail("started again"), log_dir=tmp_path)
    with pytest.raises(StageRefused, match=r"^alerts exited with status 2, refusing what it was given: alert channel "
                                           r"hook: environment variable HOOK_URL is not set \(its log: "):
        supervisor.check(now=100.0)


def open_and_close_store(url: str) -> str:
    from sinks.alerts.store import IncidentStore

    IncidentStore(url).close()
    return "ok"


def test_processes_opening_a_new_incident_store_together_all_succeed(tmp_path):
    """`up` starts the alert dispatcher and the console at once; both create the store's tables."""
    import multiprocessing

    with multiprocessing.get_context("fork").Pool(6) as pool:
        for attempt in range(5):  # the collision needs two CREATEs in the same instant: give it several chances
            url = f"sqlite:///{tmp_path}/incidents-{attempt}.sqlite"
            assert pool.map(open_and_close_store, [url] * 6) == ["ok"] * 6


def test_a_false_alarm_blames_the_events_tracks_else_the_frames_main_class():
    from sinks.console.server import false_alarm_record
    from sinks.console.state import Evidence, StoredFrame, detections_overlay

    frame_detections = detections_overlay(Detections(
        camera_id="cam", seq=5, captured_at=1005.0, image_width=640, image_height=480, model="m", inference_ms=1.0,
        xyxy=[(0.0, 0.0, 10.0, 10.0), (20.0, 20.0, 60.0, 40.0), (5.0, 5.0, 9.0, 19.0)], confidence=[0.9] * 3,
        class_id=[0, 2, 0], class_name=["person", "car", "person"], track_id=[3, 4, 5]))
    evidence = Evidence("cam", StoredFrame(5, 1005.0, b"jpeg", (640, 480), (640, 480)), frame_detections)
    summary = {"type": "stopped_vehicle", "reason": "stopped 30 s", "track_ids": [4]}
    record = false_alarm_record("cam", "cam/stopped-4", evidence, summary, 1100.0, "ana")
    assert (record["camera"], record["time"]) == ("cam", 1005.0)
    assert record["wrong"] == [{"class": "car", "xyxy": [20.0, 20.0, 60.0, 40.0]}]
    # Each blamed box keeps its own class: a person and a car of one event are two classes' mistakes.
    both = false_alarm_record("cam", "cam/near-miss", evidence, {**summary, "track_ids": [3, 4]}, 1100.0, "ana")
    assert [entry["class"] for entry in both["wrong"]] == ["person", "car"]
    crowd = false_alarm_record("cam", "cam/z/risk", evidence, {**summary, "track_ids": []}, 1100.0, "ana")
    assert [entry["class"] for entry in crowd["wrong"]] == ["person", "person"]
    # A camera whose frames capture scaled to half size: the kept JPEG is labelled in its own pixels.
    halved = Evidence("cam", StoredFrame(5, 1005.0, b"jpeg", (640, 480), (320, 240)), frame_detections)
    assert false_alarm_record("cam", "cam/stopped-4", halved, summary, 1100.0, "ana")["wrong"] == [
        {"class": "car", "xyxy": [10.0, 10.0, 30.0, 20.0]}]


def test_zone_ids_that_yaml_1_1_reads_as_other_types_are_saved_as_the_strings_the_stages_read(scene_file):
    geometry = scene_file.read("cam")
    for zone_id in ("on", "no", "010", "2024-01-01"):
        geometry["zones"].append({"id": zone_id, "polygon": [[10, 10], [50, 10], [50, 40]], "area_m2": 5})
    scene_file.write("cam", geometry, current(scene_file))
    assert [zone.id for zone in load_config(scene_file.path).camera("cam").zones] == [
        "z", "on", "no", "010", "2024-01-01"]


def test_a_save_is_refused_when_the_stages_would_refuse_the_text_written(tmp_path):
    path = tmp_path / "site.yaml"
    path.write_text(SITE + "  - id: gate\n    source: clip.mp4\n    name: yes\n")  # YAML 1.1: a boolean
    scene_file = SceneFile(path)
    geometry = scene_file.read("cam")
    geometry["zones"][0]["area_m2"] = 31
    with pytest.raises(ValueError, match=r"cameras\.1\.name"):
        scene_file.write("cam", geometry, current(scene_file))
    assert "area_m2: 30" in path.read_text()


def test_a_zone_id_that_is_not_a_string_is_refused_naming_it(scene_file):
    geometry = scene_file.read("cam")
    geometry["zones"][0]["id"] = [1]
    with pytest.raises(ValueError, match=r"cameras\.0\.zones\.0\.id"):
        scene_file.write("cam", geometry, current(scene_file))


SECOND_CAMERA = """\
  - id: cam2
    source: clip.mp4
    zones:
      - id: z
        polygon: [[0, 0], [100, 0], [100, 100]]
        area_m2: 30
"""


def test_saves_of_two_cameras_at_the_same_time_both_reach_the_file(tmp_path):
    path = tmp_path / "site.yaml"

    def save(scene_file: SceneFile, camera_id: str, area: float) -> None:
        geometry = scene_file.read(camera_id)
        version = geometry_version(geometry)
        geometry["zones"][0]["area_m2"] = area
        scene_file.write(camera_id, geometry, version)

    for _ in range(10):  # each save reads, edits and replaces the whole file: unserialised, one undoes the other
        path.write_text(SITE + SECOND_CAMERA)
        scene_file = SceneFile(path)
        saves = [threading.Thread(target=save, args=(scene_file, camera_id, area))
                 for camera_id, area in (("cam", 11), ("cam2", 22))]
        for thread in saves:
            thread.start()
        for thread in saves:
            thread.join()
        assert [camera.zones[0].area_m2 for camera in load_config(path).cameras] == [11, 22]


def test_a_save_edited_from_an_older_version_is_refused_and_the_newer_save_stays(scene_file):
    version = current(scene_file)
    first, second = scene_file.read("cam"), scene_file.read("cam")  # two editors open
    first["zones"][0]["area_m2"] = 31
    scene_file.write("cam", first, version)
    second["zones"][0]["area_m2"] = 45
    with pytest.raises(SceneConflict, match="reload"):
        scene_file.write("cam", second, version)
    assert load_config(scene_file.path).camera("cam").zones[0].area_m2 == 31


def save_held_before_its_replace(path: Path, version: str, area: float, checked, go) -> None:
    """Another process's save (a second console, `calibrate --write`): it sets `checked` once it has found `version`
    current, and replaces the file once `go` is set."""
    from sinks.console import scene_file as module

    replace_file = module.replace_file

    def held(*args, **kwargs):
        checked.set()
        go.wait(60)
        replace_file(*args, **kwargs)

    module.replace_file = held
    geometry = SceneFile(path).read("cam")
    geometry["zones"][0]["area_m2"] = area
    SceneFile(path).write("cam", geometry, version)


def test_a_save_from_the_version_another_process_is_saving_from_is_refused_and_the_other_save_stays(
        scene_file, monkeypatch):
    version = current(scene_file)
    processes = multiprocessing.get_context("fork")
    checked, go = processes.Event(), processes.Event()
    other = processes.Process(target=save_held_before_its_replace,
                              args=(scene_file.path, version, 31, checked, go))
    other.start()
    assert checked.wait(60)
    # Lets the other save go on once this one waits for its turn or, where nothing makes it wait, is about to replace
    # the file: either way this save has got as far as it can before the other one's replace.
    flock, replace_file = fcntl.flock, scene_module.replace_file
    monkeypatch.setattr(fcntl, "flock", lambda *args: go.set() or flock(*args))
    monkeypatch.setattr(scene_module, "replace_file", lambda *args, **kwargs: go.set() or replace_file(*args, **kwargs))
    mine = scene_file.read("cam")
    mine["zones"][0]["area_m2"] = 45
    try:
        with pytest.raises(SceneConflict, match="reload"):
            scene_file.write("cam", mine, version)
    finally:
        go.set()
        other.join()
    assert other.exitcode == 0
    assert load_config(scene_file.path).camera("cam").zones[0].area_m2 == 31


PARTITION = TopicPartition(TopicNames().frames, 0)


class FakeConsumer:
    """Answers each poll with the next of `polls` (an exception is raised, a function is called), then nothing; its
    one partition lies at `position`, its end at `end`; it reaches a broker while `connected`."""

    config = {"group_id": "site-console"}

    def __init__(self, polls: list, position: int = 0, end: int = 0):
        self.polls = polls
        self.position_at, self.end = position, end
        self.rewound: list[TopicPartition] = []
        self.connected = True

    def bootstrap_connected(self) -> bool:
        return self.connected

    def poll(self, timeout_ms: int) -> dict:
        answer = self.polls.pop(0) if self.polls else {}
        if isinstance(answer, Exception):
            raise answer
        return answer() if callable(answer) else answer

    def assignment(self) -> set[TopicPartition]:
        return {PARTITION}

    def highwater(self, partition: TopicPartition) -> int:
        return self.end

    def position(self, partition: TopicPartition, timeout_ms: int) -> int:
        return self.position_at

    def seek_to_beginning(self, partition: TopicPartition) -> None:
        self.rewound.append(partition)
        self.position_at = 0

    def partitions_for_topic(self, topic: str) -> set[int]:
        return {0}

    def assign(self, partitions: list[TopicPartition]) -> None:
        pass

    def beginning_offsets(self, partitions: list[TopicPartition]) -> dict[TopicPartition, int]:
        return dict.fromkeys(partitions, 0)

    def end_offsets(self, partitions: list[TopicPartition]) -> dict[TopicPartition, int]:
        return dict.fromkeys(partitions, self.end)

    def seek(self, partition: TopicPartition, offset: int) -> None:
        pass


def frame_record(seq: int, **where) -> SimpleNamespace:
    frame = Frame(camera_id="cam", seq=seq, captured_at=1000.0 + seq, width=4, height=4, **where)
    return SimpleNamespace(topic=TopicNames().frames, value=encode(frame))


def unreadable_frame_store(ref: str) -> bytes:
    raise PermissionError(13, "Permission denied")


def test_a_message_the_console_cannot_show_is_skipped_and_the_next_ones_are_read():
    state = ConsoleState(frame_buffer=10, zone_history=10, recent_events=10, zone_stale_after_s=30)
    records = [frame_record(1, frame_ref="local:cam/1.jpg"), frame_record(2, jpeg=b"\xff\xd8")]
    feed = TopicFeed(FakeConsumer([{PARTITION: records}]), TopicNames(), state, unreadable_frame_store, {})
    assert feed.poll_once() == 1 and feed.unreadable == 1
    assert [frame.seq for frame in state.cameras["cam"].frames] == [2]


def test_the_feed_reads_on_after_a_failed_pass_and_reports_the_failure_meanwhile():
    state = ConsoleState(frame_buffer=10, zone_history=10, recent_events=10, zone_stale_after_s=30)
    stop = threading.Event()
    health_after_the_failure = []
    consumer = FakeConsumer([
        KafkaConnectionError("broker gone"),
        lambda: health_after_the_failure.append(feed_health(state.feed_report(), time.time()))
        or {PARTITION: [frame_record(1, jpeg=b"\xff\xd8")]},
        lambda: stop.set() or {},
    ])
    TopicFeed(consumer, TopicNames(), state, unreadable_frame_store, {}).run(stop)
    [down] = health_after_the_failure
    assert down["state"] == "down" and "broker gone" in down["reason"]
    assert feed_health(state.feed_report(), time.time())["state"] == "up"
    assert [frame.seq for frame in state.cameras["cam"].frames] == [1]


def test_the_feed_reports_down_while_no_broker_can_be_reached_and_up_once_one_is_again():
    state = ConsoleState(frame_buffer=10, zone_history=10, recent_events=10, zone_stale_after_s=30)
    stop = threading.Event()
    health = []

    def broker_reached(reached: bool) -> dict:
        health.append(feed_health(state.feed_report(), time.time()))
        consumer.connected = reached
        return {}  # as kafka-python's poll answers with no broker: nothing, no error

    consumer = FakeConsumer([lambda: broker_reached(False), lambda: broker_reached(True), lambda: broker_reached(True),
                             lambda: stop.set() or {}])
    TopicFeed(consumer, TopicNames(), state, unreadable_frame_store, {}).run(stop)
    _, down, up = health
    assert down["state"] == "down" and "no broker can be reached" in down["reason"]
    assert up["state"] == "up"


def test_zone_windows_read_at_start_count_from_their_end_and_live_ones_from_their_arrival():
    behind = time.time() - 3600  # the camera's clock runs an hour behind the console's
    zones = TopicPartition(TopicNames().zone_metrics, 0)
    records = [SimpleNamespace(topic=zones.topic, partition=0, offset=offset,
                               value=encode(window(behind + 10 * offset))) for offset in range(3)]
    consumer = FakeConsumer([{zones: records[:2]}, {zones: records[2:]}], end=2)
    state = ConsoleState(frame_buffer=10, zone_history=10, recent_events=10, zone_stale_after_s=30)
    feed = TopicFeed(consumer, TopicNames(), state, unreadable_frame_store, {zones.topic: 2})
    feed.assign()
    feed.poll_once()  # the backlog: an hour old, or sent a moment ago, as far as the console can tell
    assert state.zone_now("cam", "z", time.time())["level"] == "unknown"
    feed.poll_once()  # sent now
    assert state.zone_now("cam", "z", time.time())["level"] == "normal"


def test_the_feed_reads_topics_that_a_restarted_broker_recreated_from_their_start():
    consumer = FakeConsumer([{}], position=500, end=3)
    state = ConsoleState(frame_buffer=10, zone_history=10, recent_events=10, zone_stale_after_s=30)
    TopicFeed(consumer, TopicNames(), state, unreadable_frame_store, {}).poll_once()
    assert consumer.rewound == [PARTITION]


def test_up_refuses_a_console_open_beyond_loopback_without_a_configured_token(monkeypatch):
    from cityguard.up import console_access
    from schemas.settings.config import ConfigError
    from schemas.settings.console import ConsoleConfig

    monkeypatch.delenv("CITYGUARD_CONSOLE_TOKEN", raising=False)
    with pytest.raises(ConfigError, match="console.host 0.0.0.0 is not a loopback address"):
        console_access(Config().model_copy(update={"console": ConsoleConfig(host="0.0.0.0", port=8099)}))
    line, arguments, token = console_access(
        Config().model_copy(update={"console": ConsoleConfig(host="127.0.0.1", port=8099)}))
    assert line == f"console: http://127.0.0.1:8099/?token={token}" and arguments == ["--port", "8099"]
    monkeypatch.setenv("CITYGUARD_CONSOLE_TOKEN", "configured-token-0123456789")
    line, _, token = console_access(
        Config().model_copy(update={"console": ConsoleConfig(host="0.0.0.0", port=8099)}))
    assert token == "configured-token-0123456789" and "configured-token" not in line
    monkeypatch.setenv("CITYGUARD_CONSOLE_TOKEN", "a")
    with pytest.raises(ConfigError, match="CITYGUARD_CONSOLE_TOKEN is too short for a listener on 0.0.0.0"):
        console_access(Config().model_copy(update={"console": ConsoleConfig(host="0.0.0.0", port=8099)}))


@pytest.mark.parametrize("published_by, setting", [("console.public_origins", ["https://console.city.example"]),
                                                   ("console.require_token_for_reads", True)])
def test_a_console_that_a_reverse_proxy_publishes_needs_a_token_of_16_characters_on_loopback_too(
        monkeypatch, published_by, setting):
    from schemas.settings.config import ConfigError
    from schemas.settings.console import ConsoleConfig
    from sinks.console.server import console_token

    published = Config().model_copy(update={"console": ConsoleConfig(**{published_by.partition(".")[2]: setting})})
    monkeypatch.setenv("CITYGUARD_CONSOLE_TOKEN", "fifteen-chars-a")
    assert console_token(Config(), "127.0.0.1") == ("fifteen-chars-a", False)  # reached from this machine only
    with pytest.raises(ConfigError, match=f"^CITYGUARD_CONSOLE_TOKEN is too short for a listener that a reverse proxy "
                                          f"publishes \\({published_by} is set\\): give it 16 characters or more"):
        console_token(published, "127.0.0.1")
    monkeypatch.setenv("CITYGUARD_CONSOLE_TOKEN", "sixteen-chars-ab")
    assert console_token(published, "127.0.0.1") == ("sixteen-chars-ab", False)
