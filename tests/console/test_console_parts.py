"""The console's parts without Kafka or a browser: its bounded state and the round-trip scene file."""
from __future__ import annotations

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

from cityguard.commands_console import validator
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
from schemas.settings.config import Config, TopicNames, load_config
from sinks.console.feed import TopicFeed
from sinks.console.scene_file import SceneConflict, SceneError, SceneFile, geometry_version
from sinks.console.state import LINES_PER_CAMERA, ConsoleState, feed_health, heat_grid


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


def window(start: float, level: RiskLevel = RiskLevel.NORMAL) -> ZoneMetrics:
    return ZoneMetrics(camera_id="cam", zone_id="z", window_start=start, window_end=start + 10, frames=50,
                       area_m2=100, people_mean=50, people_max=60, density_mean_per_m2=0.5, density_max_per_m2=0.6,
                       risk_level=level, risk_reason="because", last_seq=1)


def test_every_collection_is_bounded():
    state = ConsoleState(frame_buffer=3, zone_history=4, recent_events=5, zone_stale_after_s=30)
    for seq in range(20):
        state.on_frame("cam", seq, 1000.0 + seq, b"jpeg", 1000.0 + seq, (640, 480), (640, 480))
        state.on_detections(detections(seq))
        state.on_zone_metrics(window(1000.0 + 10 * seq))
        state.on_event(event(f"e{seq}", seq + 100))  # evidence frames that never come
    assert len(state.cameras["cam"].frames) == 3 and len(state.cameras["cam"].detections) == 3
    assert len(state.zone_history_of("cam", "z")) == 4
    assert len(state.events) == 5 and len(state.awaiting_frame) <= 5


def test_evidence_is_the_events_frame_even_when_the_event_arrives_first():
    state = ConsoleState(frame_buffer=10, zone_history=10, recent_events=10, zone_stale_after_s=30)
    state.on_frame("cam", 1, 1001.0, b"one", 1001.0, (640, 480), (640, 480))
    state.on_event(event("e", 2))  # its frame and detections are still on their way
    assert state.evidence_of("e") is None
    state.on_frame("cam", 2, 1002.0, b"two", 1002.0, (640, 480), (640, 480))
    state.on_detections(detections(2, boxes=3))
    evidence = state.evidence_of("e")
    assert evidence.frame.jpeg == b"two" and len(evidence.detections["boxes"]) == 3


def test_a_frame_is_drawn_at_the_cameras_own_size_when_capture_scaled_its_jpeg_down():
    state = ConsoleState(frame_buffer=10, zone_history=10, recent_events=10, zone_stale_after_s=30)
    state.on_frame("cam", 1, 1001.0, b"jpeg", 1001.0, (1920, 1080), (1280, 720))
    frame = state.camera_live("cam", now=1001.5)["frame"]
    assert (frame["width"], frame["height"]) == (1920, 1080)


def test_a_zone_without_new_windows_turns_unknown_and_late_windows_are_dropped():
    state = ConsoleState(frame_buffer=10, zone_history=10, recent_events=10, zone_stale_after_s=30)
    state.on_zone_metrics(window(1000.0, RiskLevel.DANGER))
    state.on_zone_metrics(window(990.0, RiskLevel.NORMAL))  # redelivered older window
    assert [point["level"] for point in state.zone_history_of("cam", "z")] == ["danger"]
    assert state.zone_now("cam", "z", now=1015.0)["level"] == "danger"
    assert state.zone_now("cam", "z", now=1100.0)["level"] == "unknown"


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


def line_window(line_id: str, camera_id: str = "cam") -> LineCounts:
    return LineCounts(camera_id=camera_id, line_id=line_id, window_start=0, window_end=60, class_name=["car"],
                      direction=["in"], count=[1])


def test_only_the_sites_cameras_and_zones_are_kept_and_line_totals_are_capped():
    square = [[0, 0], [100, 0], [100, 100]]
    state = ConsoleState(frame_buffer=10, zone_history=10, recent_events=10, zone_stale_after_s=30)
    state.on_frame("ghost", 1, 1000.0, b"jpeg", 1000.0, (640, 480), (640, 480))  # read before the site was known
    state.follow_site(Config(cameras=[{"id": "cam", "source": "a.mp4",
                                       "zones": [{"id": "z", "polygon": square, "area_m2": 100}]}]))
    assert "ghost" not in state.cameras
    for index in range(1000):  # ids from the topics that the site does not have
        state.on_frame(f"ghost-{index}", 1, 1000.0, b"jpeg", 1000.0, (640, 480), (640, 480))
        state.on_detections(detections(index).model_copy(update={"camera_id": f"ghost-{index}"}))
        state.on_camera_status(CameraStatus(camera_id=f"ghost-{index}", state=CameraState.UP, fps=5.0, reconnects=0,
                                            dropped_frames=0, at=1000.0))
        state.on_zone_metrics(window(1000.0).model_copy(update={"zone_id": f"ghost-{index}"}))
        state.on_line_counts(line_window(f"line-{index}"))
        state.on_line_counts(line_window("gate", camera_id=f"ghost-{index}"))
    state.on_zone_metrics(window(1000.0))
    assert list(state.cameras) == ["cam"] and list(state.zones) == [("cam", "z")]
    assert len(state.cameras["cam"].line_totals) == LINES_PER_CAMERA


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
    return SceneFile(path, validator(path))


def current(scene_file: SceneFile, camera_id: str = "cam") -> str:
    """The version of the camera's geometry in the file now, as an editor that just loaded it sends back."""
    return geometry_version(scene_file.read(camera_id))


def test_saving_unchanged_geometry_leaves_the_file_alone(scene_file):
    assert scene_file.write("cam", scene_file.read("cam"), current(scene_file)) == ([], None)
    assert scene_file.path.read_text() == SITE


def test_a_new_zone_and_scene_are_saved_with_every_comment_and_read_back_identically(scene_file):
    geometry = scene_file.read("cam")
    geometry["zones"].append({"id": "kiosk", "polygon": [[10, 10], [50, 10], [50, 40], [10, 40]], "area_m2": 12.5})
    geometry["scene"] = {"counting_lines": [{"id": "gate", "start": [0, 50], "end": [100, 50]}]}
    restart, config = scene_file.write("cam", geometry, current(scene_file))
    assert restart == ["analyze", "infer"]
    assert [zone.id for zone in config.camera("cam").zones] == ["z", "kiosk"]
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
    evidence = Evidence("cam", StoredFrame(5, 1005.0, 1005.1, b"jpeg", (640, 480), (640, 480)), frame_detections)
    summary = {"type": "stopped_vehicle", "reason": "stopped 30 s", "track_ids": [4]}
    record = false_alarm_record("cam", "cam/stopped-4", evidence, summary, 1100.0, "ana")
    assert (record["camera"], record["time"], record["class"]) == ("cam", 1005.0, "car")
    assert record["boxes"] == [[20.0, 20.0, 60.0, 40.0]]
    crowd = false_alarm_record("cam", "cam/z/risk", evidence, {**summary, "track_ids": []}, 1100.0, "ana")
    assert crowd["class"] == "person" and len(crowd["boxes"]) == 2
    # A camera whose frames capture scaled to half size: the kept JPEG is labelled in its own pixels.
    halved = Evidence("cam", StoredFrame(5, 1005.0, 1005.1, b"jpeg", (640, 480), (320, 240)), frame_detections)
    assert false_alarm_record("cam", "cam/stopped-4", halved, summary, 1100.0, "ana")["boxes"] == [
        [10.0, 10.0, 30.0, 20.0]]


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
    scene_file = SceneFile(path, validator(path))
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
        scene_file = SceneFile(path, validator(path))
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


PARTITION = TopicPartition(TopicNames().frames, 0)


class FakeConsumer:
    """Answers each poll with the next of `polls` (an exception is raised, a function is called), then nothing; its
    one partition lies at `position`, its end at `end`."""

    config = {"group_id": "site-console"}

    def __init__(self, polls: list, position: int = 0, end: int = 0):
        self.polls = polls
        self.position_at, self.end = position, end
        self.rewound: list[TopicPartition] = []

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


def test_the_feed_reads_topics_that_a_restarted_broker_recreated_from_their_start():
    consumer = FakeConsumer([{}], position=500, end=3)
    state = ConsoleState(frame_buffer=10, zone_history=10, recent_events=10, zone_stale_after_s=30)
    TopicFeed(consumer, TopicNames(), state, unreadable_frame_store, {}).poll_once()
    assert consumer.rewound == [PARTITION]
