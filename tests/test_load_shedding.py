"""Overload: stale frames and a flooding camera's surplus are skipped (and counted), so another camera on the same
partition keeps its frames fresh enough to be detected."""
import math
import threading
import time
from types import SimpleNamespace

import cv2
import pytest
from kafka import KafkaConsumer
from prometheus_client import REGISTRY

from infra.frame_client import FrameConsumer
from infra.kafka import create_topics, make_producer
from processors.inference.shedding import OVER_RATE, RECENT_SECONDS, STALE, FrameShedder
from processors.inference.stage import CameraDetectors, InferenceWorker
from schemas import Detections, Frame, decode, encode
from tests.conftest import VTEST, pipeline_config, video_frames
from tests.test_inference_faults import CONFIG, JPEG, TOPICS, Broker, Consumer, CountsRuns


def frame(camera: str, captured_at: float, seq: int = 0) -> Frame:
    return Frame(camera_id=camera, seq=seq, captured_at=captured_at, width=8, height=8, jpeg=b"\xff\xd8\xff\xd9")


def test_frames_older_than_the_bound_are_stale():
    shedder = FrameShedder(max_age_s=5, camera_fps={"cam": 10}, rate_factor=1.5, clock=lambda: 1000.0)
    assert shedder.reason(frame("cam", 996.0), offset=0) is None
    assert shedder.reason(frame("cam", 994.9), offset=1) == STALE
    assert shedder.reason(frame("unconfigured", 990.0), offset=2) == STALE


def test_a_camera_beyond_its_rate_is_held_to_it_and_the_others_are_not():
    shedder = FrameShedder(max_age_s=60, camera_fps={"flood": 10, "quiet": 2}, rate_factor=1.5,
                           clock=lambda: 1001.0)
    flood = [shedder.reason(frame("flood", 1000 + index / 150, seq=index), offset=index)
             for index in range(150)]  # 150 fps
    assert flood.count(None) == 15 and flood.count(OVER_RATE) == 135
    # A rewound batch brings kept frames again: still kept, and the allowance is not spent twice.
    assert [shedder.reason(frame("flood", 1000 + index / 150, seq=index), offset=index)
            for index in range(16)] == [None] * 15 + [OVER_RATE]
    quiet = [shedder.reason(frame("quiet", 1000.2 + index / 2), offset=150 + index) for index in range(2)]
    assert quiet == [None, None]
    assert shedder.reason(frame("flood", 1001.05, seq=150), offset=152) is None  # the next second has its own
    assert all(shedder.reason(frame("unconfigured", 1000.5), offset=153) is None
               for _ in range(100))  # no rate to hold it to


def test_a_flood_repeating_one_seq_or_alternating_capture_seconds_is_held_to_its_rate_all_the_same():
    shedder = FrameShedder(max_age_s=60, camera_fps={"flood": 10}, rate_factor=1.5, clock=lambda: 1020.0)
    # New records all numbered 7: only a record read again at its offset is a rewind of one already kept.
    repeated = [shedder.reason(frame("flood", 1000.5, seq=7), offset=offset) for offset in range(150)]
    assert repeated.count(None) == 15 and repeated.count(OVER_RATE) == 135
    assert [shedder.reason(frame("flood", 1000.5, seq=7), offset=offset) for offset in range(16)] == [None] * 15 + [
        OVER_RATE]
    # Capture times alternating between seconds, as many as a camera's recent ones: each second keeps its allowance.
    cycled = [shedder.reason(frame("flood", 1001.5 + index % RECENT_SECONDS, seq=index), offset=200 + index)
              for index in range(150 * RECENT_SECONDS)]
    assert cycled.count(None) == 15 * RECENT_SECONDS



def test_a_flood_stamped_with_ever_new_future_seconds_is_held_to_its_rate():
    """Each frame a second later than the one before, all in the future: they count as of the latest second a
    producer's clock may show now, not each in a second of its own. A clock slightly ahead loses nothing."""
    now = 1000.0
    shedder = FrameShedder(max_age_s=60, camera_fps={"flood": 10}, rate_factor=1.5, clock=lambda: now)
    flood = [shedder.reason(frame("flood", 2000.0 + index, seq=index), offset=index) for index in range(150)]
    assert flood.count(None) == 15 and flood.count(OVER_RATE) == 135
    shedder = FrameShedder(max_age_s=60, camera_fps={"skewed": 10}, rate_factor=1.5, clock=lambda: now)
    for second in range(5):  # 10 fps, stamped 0.8 s ahead
        now = 1000.0 + second
        assert [shedder.reason(frame("skewed", now + 0.8 + index / 10, seq=index), offset=10 * second + index)
                for index in range(10)] == [None] * 10


def test_the_stage_runs_the_model_on_a_repeated_seq_only_up_to_the_rate_and_counts_the_rest_shed():
    model = CountsRuns()
    [camera] = CONFIG.cameras
    allowance = math.ceil(camera.fps * CONFIG.model.camera_rate_factor)
    worker = InferenceWorker(CONFIG, Consumer(), Broker(), CameraDetectors(model), "group")
    labels = {"camera": camera.id, "reason": OVER_RATE}
    before = REGISTRY.get_sample_value("cityguard_frames_shed_total", labels) or 0
    captured_at = math.floor(time.time()) + 0.5
    worker.process([SimpleNamespace(topic=TOPICS.frames, partition=0, offset=offset, key=camera.id.encode(),
                                    value=encode(Frame(camera_id=camera.id, seq=7, captured_at=captured_at, width=8,
                                                       height=8, jpeg=JPEG)))
                    for offset in range(10 * allowance)])
    assert model.runs == allowance
    assert REGISTRY.get_sample_value("cityguard_frames_shed_total", labels) - before == 9 * allowance


@pytest.mark.broker
@pytest.mark.solo
def test_a_flooding_camera_is_held_to_its_rate_and_the_other_camera_on_its_partition_keeps_its_frames(
        kafka_bootstrap, tmp_path, detector):
    bound_s = 3.0
    cameras = [{"id": "flood", "source": str(VTEST), "fps": 2}, {"id": "quiet", "source": str(VTEST), "fps": 2}]
    config, _ = pipeline_config(tmp_path, "overload", kafka_bootstrap, cameras=cameras,
                                model={"offline_weights": "unused", "max_batch_size": 4, "max_frame_age_s": bound_s})
    topics = config.broker.topics
    create_topics(kafka_bootstrap, [topics.frames, topics.detections, topics.dead_letter], 1)  # one shared partition
    jpeg = cv2.imencode(".jpg", video_frames(VTEST, 1)[0])[1].tobytes()
    stop = threading.Event()

    produced = {"flood": 0, "quiet": 0}

    def flood_and_trickle() -> None:
        """150 frames a second from the flooding camera, 2 from the quiet one, for 12 s."""
        producer = make_producer(kafka_bootstrap)
        started = last_quiet = time.time()
        while not stop.is_set() and time.time() - started < 12:
            cameras = ["flood"] + (["quiet"] if time.time() - last_quiet >= 0.5 else [])
            for camera in cameras:
                producer.send(topics.frames, key=camera.encode(), value=encode(Frame(
                    camera_id=camera, seq=produced[camera], captured_at=time.time(), width=768, height=576,
                    jpeg=jpeg)))
                produced[camera] += 1
            last_quiet = time.time() if "quiet" in cameras else last_quiet
            time.sleep(1 / 150)
        producer.flush()
        producer.close()

    def shed(camera: str) -> float:
        return sum(REGISTRY.get_sample_value("cityguard_frames_shed_total", {"camera": camera, "reason": reason}) or 0
                   for reason in (STALE, OVER_RATE))

    shed_before, quiet_shed_before = shed("flood"), shed("quiet")
    consumer = FrameConsumer(kafka_bootstrap, config.group_id("inference"), topics.frames)
    producer = make_producer(kafka_bootstrap)
    worker = InferenceWorker(config, consumer, producer, CameraDetectors(detector), config.group_id("inference"))
    reader = KafkaConsumer(topics.detections, bootstrap_servers=kafka_bootstrap, auto_offset_reset="earliest")
    threads = [threading.Thread(target=worker.run, args=(stop,), daemon=True),
               threading.Thread(target=flood_and_trickle, daemon=True)]
    for thread in threads:
        thread.start()
    detected: dict[str, set[int]] = {"flood": set(), "quiet": set()}

    def accounted(camera: str) -> int:
        return len(detected[camera]) + int(shed(camera) - (shed_before if camera == "flood" else quiet_shed_before))

    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            for records in reader.poll(timeout_ms=200).values():
                for record in records:
                    detections = decode(record.value, Detections)
                    detected[detections.camera_id].add(detections.seq)
            if not threads[1].is_alive() and all(accounted(camera) >= produced[camera] for camera in produced):
                break
    finally:
        stop.set()
        for thread in threads:
            thread.join(10)
        reader.close()
        consumer.close()
        producer.close()
    quiet, flood = detected["quiet"], detected["flood"]
    print(f"quiet camera: {len(quiet)} of {produced['quiet']} frames detected; "
          f"flood camera: {len(flood)} of {produced['flood']} frames detected")
    # Nothing lost silently: every frame was detected or skipped and counted (stale, or beyond its camera's rate).
    assert accounted("flood") == produced["flood"] and accounted("quiet") == produced["quiet"]
    # Fair: the quiet camera keeps a far larger share of its frames than the flooding one, which is held to its
    # configured rate (2 frames/s times the rate factor, per second of capture time, over 12 s). Unshed, the flood's
    # backlog held the quiet camera's frames until they were stale.
    assert len(quiet) / produced["quiet"] >= 10 * len(flood) / produced["flood"]
    assert len(flood) <= 4 * 13, "the flooding camera got no more than its rate (4 frames/s)"
    assert not REGISTRY.get_sample_value("cityguard_frames_shed_total", {"camera": "quiet", "reason": OVER_RATE})
