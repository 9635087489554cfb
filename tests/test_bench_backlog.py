"""The inference benchmarks queue a backlog that the inference stage must take whole: a frame it rejected or shed
would be counted as throughput it never did."""
from __future__ import annotations

import argparse
import time
import uuid
from pathlib import Path

import cv2
import numpy as np
import pytest

from cityguard.bench.scaleout import inference_input, queue
from infra.kafka import create_topics, make_consumer
from processors.inference.jpeg_header import verify_frame_jpeg
from processors.inference.shedding import FrameShedder
from schemas import Frame, decode
from schemas.settings.config import TopicNames, load_config, parse_config

DEMO = Path(__file__).resolve().parents[1] / "configs" / "demo.yaml"


def test_the_scaleout_backlog_is_neither_rejected_nor_shed_by_the_inference_stage(tmp_path):
    for index, size in enumerate(((320, 240), (1280, 720))):
        image = np.full((size[1], size[0], 3), 40 * index, np.uint8)
        (tmp_path / f"{index}.jpg").write_bytes(cv2.imencode(".jpg", image)[1].tobytes())
    args = argparse.Namespace(jpegs=tmp_path, frames=300, cameras=3, zones=True, backend=None, weights=None, batch=None)
    topics = TopicNames(**{name: f"bench.{name}" for name in TopicNames.model_fields})
    data, records, expected = inference_input(args, load_config(DEMO), topics)
    config = parse_config(data, tmp_path)
    # The workers reach the end of the backlog well after it was queued (their warm-up, then the queue itself).
    shedder = FrameShedder(config.model.max_frame_age_s, {camera.id: camera.fps for camera in config.cameras},
                           config.model.camera_rate_factor, clock=lambda: time.time() + 120)
    assert expected == len(records) == 900
    assert all(camera.zones for camera in config.cameras)  # the density model maps them as on a crowd site
    for offset, (_, value) in enumerate(records):
        frame = decode(value, Frame)
        verify_frame_jpeg(frame.jpeg, frame.width, frame.height)
        assert shedder.reason(frame, offset) is None


@pytest.mark.broker
def test_the_input_queued_from_several_processes_arrives_whole_and_in_each_cameras_order(kafka_bootstrap):
    topic = f"bench-queue-{uuid.uuid4().hex[:8]}"
    create_topics(kafka_bootstrap, [topic], 2)
    records = [(f"cam{camera}", f"{camera}:{seq}".encode()) for seq in range(40) for camera in range(5)]
    queue(kafka_bootstrap, topic, records, producers=3)
    consumer = make_consumer(kafka_bootstrap, None, topic, auto_offset_reset="earliest")
    received: dict[str, list[int]] = {}
    deadline = time.monotonic() + 30
    while sum(map(len, received.values())) < len(records) and time.monotonic() < deadline:
        for batch in consumer.poll(timeout_ms=200).values():
            for record in batch:
                received.setdefault(record.key.decode(), []).append(int(record.value.split(b":")[1]))
    consumer.close()
    assert received == {f"cam{camera}": list(range(40)) for camera in range(5)}
