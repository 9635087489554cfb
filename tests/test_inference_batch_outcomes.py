"""What the inference stage does with a batch it cannot finish: a frame store that is away brings the batch again
(nothing dead-lettered, nothing committed); a frame whose detections are too large to send is dead-lettered alone."""
from __future__ import annotations

import errno
import time
from pathlib import Path
from types import SimpleNamespace

import cv2
import numpy as np
from kafka import TopicPartition
from kafka.errors import MessageSizeTooLargeError

from infra.consume_loop import RetryBatch, process_batch
from processors.inference.detector import ImageDetections
from processors.inference.stage import CameraDetectors, InferenceWorker
from producers.frame_store import FrameNotFound
from schemas import DeadLetter, Frame, decode, encode
from schemas.settings.config import parse_config
from tests.conftest import VTEST, video_frames

CONFIG = parse_config({"site": "t", "cameras": [{"id": "cam", "source": "0"}], "model": {"max_frame_age_s": 3600}},
                      Path("."))
TOPICS = CONFIG.broker.topics


class NoBoxes:
    name = "stub"

    def detect(self, images):
        return [ImageDetections(np.zeros((0, 4)), np.zeros(0), np.zeros(0, int), (), 1.0) for _ in images]


class Consumer:
    def __init__(self):
        self.seeks, self.commits = [], 0

    def assignment(self):
        return {TopicPartition(TOPICS.frames, 0)}

    def seek(self, partition, offset):
        self.seeks.append((partition.partition, offset))

    def commit(self):
        self.commits += 1


class Producer:
    """Refuses detections over `limit` bytes at send, as kafka-python does over max_request_size."""

    def __init__(self, limit: int):
        self.limit, self.sent = limit, []

    def send(self, topic, key=None, value=None):
        if topic == TOPICS.detections and len(value) > self.limit:
            raise MessageSizeTooLargeError(f"The message is {len(value)} bytes")
        self.sent.append((topic, value))
        return SimpleNamespace(is_done=True, get=lambda timeout=None: None)

    def flush(self, timeout=None):
        pass


def records(*refs: str) -> list:
    return [SimpleNamespace(topic=TOPICS.frames, partition=0, offset=offset, key=b"cam", value=encode(Frame(
        camera_id="cam", seq=offset, captured_at=time.time(), width=768, height=576, frame_ref=ref)))
        for offset, ref in enumerate(refs, start=40)]


def worker(resolve, producer_limit: int = 10_000_000) -> tuple[InferenceWorker, Consumer, Producer]:
    consumer, producer = Consumer(), Producer(producer_limit)
    return InferenceWorker(CONFIG, consumer, producer, CameraDetectors(NoBoxes()), "group",
                           resolve_frame=resolve), consumer, producer


def test_a_frame_store_that_cannot_be_read_brings_the_batch_again_and_loses_nothing():
    def unreadable(ref):
        raise OSError(errno.EIO, "Input/output error")

    stage, consumer, producer = worker(unreadable)
    # The first record is dead-lettered only once the batch gets through: nothing is sent while it comes again.
    batch = [SimpleNamespace(topic=TOPICS.frames, partition=0, offset=39, key=b"cam", value=b"not a frame"),
             *records("local:cam/40.jpg", "local:cam/41.jpg")]
    error = process_batch(consumer, producer, batch, stage.detect_batch)
    assert isinstance(error, RetryBatch) and "Input/output error" in str(error)
    assert consumer.seeks == [(0, 39)] and consumer.commits == 0
    assert producer.sent == []


def test_a_reference_the_store_refuses_for_itself_is_dead_lettered_and_the_batch_goes_on():
    def refused(ref):
        raise OSError(errno.ENAMETOOLONG, "File name too long")

    stage, consumer, producer = worker(refused)
    assert process_batch(consumer, producer, records("local:cam/40.jpg"), stage.detect_batch) is None
    assert consumer.commits == 1
    [(topic, value)] = producer.sent
    assert topic == TOPICS.dead_letter and "File name too long" in decode(value, DeadLetter).reason


def test_a_frame_that_is_not_in_the_store_is_dead_lettered_and_the_batch_goes_on():
    jpeg = cv2.imencode(".jpg", video_frames(VTEST, 1)[0])[1].tobytes()

    def store(ref):
        if ref.endswith("/40.jpg"):
            raise FrameNotFound(f"frame {ref} expired")
        return jpeg

    stage, consumer, producer = worker(store)
    assert process_batch(consumer, producer, records("local:cam/40.jpg", "local:cam/41.jpg"),
                         stage.detect_batch) is None
    assert consumer.commits == 1 and consumer.seeks == []
    letters = [decode(value, DeadLetter) for topic, value in producer.sent if topic == TOPICS.dead_letter]
    assert [letter.offset for letter in letters] == [40] and "expired" in letters[0].reason
    assert [topic for topic, _ in producer.sent].count(TOPICS.detections) == 1


def test_detections_too_large_to_send_are_dead_lettered_and_the_batch_is_committed():
    jpeg = cv2.imencode(".jpg", video_frames(VTEST, 1)[0])[1].tobytes()
    stage, consumer, producer = worker(lambda ref: jpeg, producer_limit=10)
    assert process_batch(consumer, producer, records("local:cam/40.jpg"), stage.detect_batch) is None
    assert consumer.commits == 1 and consumer.seeks == []
    [(topic, value)] = producer.sent
    assert topic == TOPICS.dead_letter and "too large to send" in decode(value, DeadLetter).reason
