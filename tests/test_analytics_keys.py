"""The analytics stage takes a camera's detections only under the camera's key: the key places them on the partition
whose worker holds the camera's analyzers and their record of the frames taken."""
from __future__ import annotations

import time
from collections import Counter

import pytest

from infra.kafka import create_topics, make_producer
from schemas import DeadLetter, Detections, ZoneMetrics, decode, encode
from tests.conftest import pipeline_config
from tests.pipeline_helpers import StageProcess, TopicReader

pytestmark = pytest.mark.broker

FRAMES = 40  # 4 s at 10 fps: windows of 2 s close


def test_detections_without_their_cameras_key_are_dead_letters_not_frames_analysed_again(kafka_bootstrap, tmp_path):
    config, path = pipeline_config(tmp_path, "keys", kafka_bootstrap)
    topics = config.broker.topics
    create_topics(kafka_bootstrap, topics.all(), config.broker.partitions)
    started = time.time() - 600

    def detections(seq: int) -> bytes:
        boxes = [(10.0 + 40 * i, 100.0, 40.0 + 40 * i, 200.0) for i in range(5)]
        return encode(Detections(camera_id="campus", seq=seq, captured_at=started + seq / 10, image_width=768,
                                 image_height=576, model="stub", inference_ms=1.0, xyxy=boxes, confidence=[0.9] * 5,
                                 class_id=[0] * 5, class_name=["person"] * 5, track_id=[1, 2, 3, 4, 5]))

    producer = make_producer(kafka_bootstrap)
    worker = StageProcess("analyze", path, kafka_bootstrap, tmp_path)
    readers = {name: TopicReader(kafka_bootstrap, topic)
               for name, topic in (("windows", topics.zone_metrics), ("letters", topics.dead_letter))}
    try:
        home = [producer.send(topics.detections, key=b"campus", value=detections(seq)) for seq in range(FRAMES)]
        home_partition = home[-1].get(timeout=30).partition
        readers["windows"].wait_for(lambda records: len(records) >= 1, 120, [worker], "zone-metrics windows")
        # The same frames again, byte for byte, on another partition without a key (as a producer that leaves it out
        # spreads them), and one under another camera's key.
        stray_partition = (home_partition + 1) % config.broker.partitions
        for seq in range(FRAMES):
            producer.send(topics.detections, key=None, value=detections(seq), partition=stray_partition)
        producer.send(topics.detections, key=b"gate", value=detections(0), partition=stray_partition)
        producer.flush()
        letters = [decode(record.value, DeadLetter) for record in readers["letters"].wait_for(
            lambda records: len(records) >= FRAMES + 1, 60, [worker], "dead letters")]
        assert Counter(letter.reason for letter in letters) == {
            "detections of camera 'campus' without a key (its camera id)": FRAMES,
            "detections of camera 'campus' under the key b'gate'": 1}
        assert {(letter.stage, letter.partition) for letter in letters} == {("analytics", stray_partition)}
        assert sorted(letter.offset for letter in letters) == list(range(FRAMES + 1))
        windows = [decode(record.value, ZoneMetrics) for record in readers["windows"].poll()]
        assert max(Counter(window.window_start for window in windows).values()) == 1, [
            (window.window_start - started, window.frames, window.last_seq) for window in windows]
    finally:
        worker.stop()
        producer.close()
        for reader in readers.values():
            reader.close()
