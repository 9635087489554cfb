"""The whole pipeline on the real broker, real model and real video (vtest.avi)."""
from __future__ import annotations

import hashlib
import os
import threading
import time
import urllib.request
from collections import Counter

import cv2
import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families

from infra.broker import free_port
from infra.kafka import create_topics, make_producer
from producers.frame_producer import frame_client, run_producer
from schemas import DeadLetter, Detections, Frame, SchemaError, ZoneMetrics, decode, encode
from tests.conftest import VTEST, pipeline_config
from tests.pipeline_helpers import StageProcess, TopicReader
from tests.test_jpeg_header import declaring

pytestmark = [pytest.mark.broker, pytest.mark.slow]

CLIP_FRAMES = 40  # 4 s of vtest.avi at 10 fps: two 2-second windows


def produce_clip(config, bootstrap: str, frames: int) -> None:
    producer = frame_client(bootstrap, config.producer)
    try:
        for camera in config.cameras:
            if camera.id != "hostile":  # the hostile test input's camera: configured, never produced
                run_producer(config, producer, threading.Event(), realtime=False, max_frames=frames,
                             camera_ids=[camera.id])
    finally:
        producer.close()


def parsed(records, message_type) -> list:
    messages = []
    for record in records:
        try:
            messages.append(decode(record.value, message_type))
        except SchemaError:
            pass
    return messages


def valid_frames(bootstrap: str, topic: str, expected: int) -> list[Frame]:
    reader = TopicReader(bootstrap, topic)
    try:
        records = reader.wait_for(lambda rs: len(rs) >= expected, 30, what="frames")
    finally:
        reader.close()
    return [frame for frame in parsed(records, Frame) if frame.camera_id != "hostile"]


def scrape(port: int) -> dict[tuple[str, tuple], float]:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    return {(sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(text) for sample in family.samples}


def stop_all(stages: list[StageProcess]) -> None:
    for stage in reversed(stages):
        stage.stop()


def test_frames_flow_to_detections_zone_metrics_and_prometheus(kafka_bootstrap, tmp_path):
    campus = {"id": "campus", "source": str(VTEST), "fps": 10,
              "zones": [{"id": "walkway", "polygon": [[0, 0], [768, 0], [768, 576], [0, 576]], "area_m2": 200}]}
    # A configured camera that no producer runs: the hostile frames below are its (an unconfigured one's are
    # dead-lettered before their JPEG is looked at).
    hostile = {"id": "hostile", "source": str(VTEST)}
    config, path = pipeline_config(tmp_path, "e2e", kafka_bootstrap, cameras=[campus, hostile])
    topics = config.broker.topics
    create_topics(kafka_bootstrap, topics.all(), config.broker.partitions)
    exporter_port, analytics_port = free_port(), free_port()
    stages = [
        StageProcess("export-metrics", path, kafka_bootstrap, tmp_path, "--metrics-port", str(exporter_port)),
        StageProcess("analyze", path, kafka_bootstrap, tmp_path, "--metrics-port", str(analytics_port)),
        StageProcess("infer", path, kafka_bootstrap, tmp_path, "--metrics-port", "0"),
    ]
    readers = {name: TopicReader(kafka_bootstrap, topic) for name, topic in
               (("detections", topics.detections), ("metrics", topics.zone_metrics), ("dead", topics.dead_letter))}
    try:
        produce_clip(config, kafka_bootstrap, CLIP_FRAMES)
        # Malformed and hostile input on both consumed topics: dead-lettered (letters that fit the broker, however
        # large the original), never decoded, and the pipeline keeps going.
        producer = make_producer(kafka_bootstrap, max_request_size=32 * 1024 * 1024)
        garbage = b"\x00not msgpack at all"

        def hostile_frame(seq: int, jpeg: bytes, width: int = 8, height: int = 8) -> bytes:
            return encode(Frame(camera_id="hostile", seq=seq, captured_at=time.time(), width=width, height=height,
                                jpeg=jpeg))

        broken_jpeg = hostile_frame(1, b"not a jpeg")
        bomb = hostile_frame(3, declaring(cv2.imencode(".jpg", np.zeros((16, 16, 3), np.uint8))[1].tobytes(),
                                          30000, 30000), 30000, 30000)
        png = hostile_frame(4, cv2.imencode(".png", np.zeros((8, 8, 3), np.uint8))[1].tobytes())
        huge_frame = os.urandom(5 * 1024 * 1024)
        bad_detections = encode(Frame(camera_id="campus", seq=2, captured_at=1e9, width=8, height=8, jpeg=b"x"))
        huge_detections = os.urandom(1536 * 1024)
        for value in (garbage, huge_frame):
            producer.send(topics.frames, key=b"campus", value=value)
        for value in (broken_jpeg, bomb, png):  # under their camera's key, as a producer sends a frame
            producer.send(topics.frames, key=b"hostile", value=value)
        for value in (bad_detections, huge_detections):
            producer.send(topics.detections, key=b"campus", value=value)
        producer.flush()
        producer.close()
        produce_clip(config, kafka_bootstrap, CLIP_FRAMES)  # a second run of the camera after the bad input

        frames = valid_frames(kafka_bootstrap, topics.frames, 2 * CLIP_FRAMES + 5)
        assert len(frames) == 2 * CLIP_FRAMES
        expected_seqs = {frame.seq for frame in frames}
        assert len(expected_seqs) == len(frames), "sequence numbers must never repeat, also across producer runs"

        def all_detected(records) -> bool:
            return expected_seqs <= {d.seq for d in parsed(records, Detections)}

        records = readers["detections"].wait_for(all_detected, 180, stages, "one detections message per frame")
        detections = [d for d in parsed(records, Detections) if d.seq in expected_seqs]
        per_seq = Counter(d.seq for d in detections)
        assert max(per_seq.values()) == 1, "no frame may be detected twice in a clean run"
        seqs_in_order = [d.seq for d in detections]
        assert seqs_in_order == sorted(seqs_in_order), "one camera's detections stay in frame order"
        people = [int(d.class_mask(0).sum()) for d in detections]
        assert sum(people) / len(people) >= 2, "vtest.avi shows several pedestrians in most frames"
        assert all(d.track_id is not None and len(d.track_id) == len(d) for d in detections)

        metrics_records = readers["metrics"].wait_for(
            lambda rs: len(parsed(rs, ZoneMetrics)) >= 2, 60, stages, "zone metrics windows")
        for window in parsed(metrics_records, ZoneMetrics):
            assert window.zone_id == "walkway" and window.area_m2 == 200
            assert window.density_mean_per_m2 == pytest.approx(window.people_mean / 200)
            # people_max is rounded to whole people; density-map counts are fractional
            assert window.density_max_per_m2 == pytest.approx(window.people_max / 200, abs=0.5 / 200)
            assert window.frames > 0 and window.people_max >= 1
        windows = parsed(metrics_records, ZoneMetrics)
        assert any(w.density_model_people_mean is not None for w in windows), [w.risk_reason for w in windows]

        dead = parsed(readers["dead"].wait_for(lambda rs: len(rs) >= 7, 60, stages, "dead letters"), DeadLetter)
        originals = {letter.original_sha256: letter for letter in dead}
        assert set(originals) == {hashlib.sha256(value).hexdigest() for value in (
            garbage, broken_jpeg, bomb, png, huge_frame, bad_detections, huge_detections)}
        originals = {letter.original: letter for letter in dead if not letter.original_truncated}
        assert "msgpack" in originals[garbage].reason and originals[garbage].stage == "inference"
        assert "JPEG" in originals[broken_jpeg].reason
        assert "30000x30000 pixels, more than" in originals[bomb].reason and "not a JPEG" in originals[png].reason
        cut = {letter.original_size: letter for letter in dead if letter.original_truncated}
        assert set(cut) == {len(huge_frame), len(huge_detections)}
        assert cut[len(huge_frame)].stage == "inference" and cut[len(huge_detections)].stage == "analytics"
        assert originals[bad_detections].stage == "analytics" and "expected 'detections'" in originals[
            bad_detections].reason

        density_key = ("cityguard_zone_density_per_square_metre", (("camera", "campus"), ("zone", "walkway")))
        frames_key = ("cityguard_frames_detected_total", (("camera", "campus"),))
        inference_dead_key = ("cityguard_dead_letters_total", (("stage", "inference"), ("topic", topics.frames)))
        analytics_dead_key = ("cityguard_dead_letters_total", (("stage", "analytics"), ("topic", topics.detections)))

        def exported(samples) -> bool:
            return (density_key in samples and samples.get(frames_key, 0) >= 2 * CLIP_FRAMES
                    and samples.get(inference_dead_key) == 5 and samples.get(analytics_dead_key) == 2)

        deadline = time.monotonic() + 60
        samples = scrape(exporter_port)
        while not exported(samples) and time.monotonic() < deadline:
            time.sleep(0.5)
            samples = scrape(exporter_port)
        assert density_key in samples, "the exporter exposes the zone density gauge"
        assert samples.get(frames_key) == 2 * CLIP_FRAMES
        assert samples.get(inference_dead_key) == 5 and samples.get(analytics_dead_key) == 2
        # The analytics worker's own endpoint: every frame of the configured camera taken, and alive.
        taken_key = ("cityguard_analytics_frames_total", (("camera", "campus"),))
        analytics = scrape(analytics_port)
        while analytics.get(taken_key, 0) < 2 * CLIP_FRAMES and time.monotonic() < deadline + 30:
            time.sleep(0.5)
            analytics = scrape(analytics_port)
        assert analytics.get(taken_key) == 2 * CLIP_FRAMES
        assert analytics.get(("cityguard_stage_loop_timestamp_seconds", (("stage", "analytics"),))) > time.time() - 60
        assert urllib.request.urlopen(f"http://127.0.0.1:{analytics_port}/healthz", timeout=5).status == 200
    finally:
        stop_all(stages)
        for reader in readers.values():
            reader.close()


def run_kill_scenario(kafka_bootstrap, tmp_path, name: str, start_workers: int) -> tuple[set[int], Counter]:
    """Kills one inference worker after it has produced some output; returns expected seqs and detections per seq."""
    cameras = [{"id": f"cam{i}", "source": str(VTEST), "fps": 10} for i in range(4)]
    config, path = pipeline_config(tmp_path, name, kafka_bootstrap, cameras=cameras)
    topics = config.broker.topics
    create_topics(kafka_bootstrap, topics.all(), config.broker.partitions)
    workers = [StageProcess("infer", path, kafka_bootstrap, tmp_path, "--metrics-port", "0")
               for _ in range(start_workers)]
    reader = TopicReader(kafka_bootstrap, topics.detections)
    try:
        produce_clip(config, kafka_bootstrap, 30)
        frames = valid_frames(kafka_bootstrap, topics.frames, 4 * 30)
        expected = {frame.seq for frame in frames}
        before_kill = reader.wait_for(lambda rs: len(rs) >= 12, 120, workers, "first detections")
        workers[0].kill()  # SIGKILL: no clean shutdown, no final commit
        assert not expected <= {d.seq for d in parsed(before_kill, Detections)}, "the kill must land mid-stream"
        if start_workers == 1:
            workers.append(StageProcess("infer", path, kafka_bootstrap, tmp_path, "--metrics-port", "0"))
        survivors = workers[1:]
        records = reader.wait_for(lambda rs: expected <= {d.seq for d in parsed(rs, Detections)}, 240, survivors,
                                  "every frame detected after the kill")
        return expected, Counter(d.seq for d in parsed(records, Detections))
    finally:
        stop_all(workers)
        reader.close()


def test_killed_inference_consumer_is_replaced_without_losing_frames(kafka_bootstrap, tmp_path):
    expected, per_seq = run_kill_scenario(kafka_bootstrap, tmp_path, "kill-restart", start_workers=1)
    assert expected <= set(per_seq), "no frame lost"
    # Frames of the uncommitted batch may be detected twice (at-least-once); analytics drops those by seq.


def test_two_workers_share_frames_and_survive_one_being_killed(kafka_bootstrap, tmp_path):
    expected, per_seq = run_kill_scenario(kafka_bootstrap, tmp_path, "kill-one-of-two", start_workers=2)
    assert expected <= set(per_seq), "no frame lost when one of two workers dies"
