"""Roll-out under a live stream on the real broker: a promotion, then a roll-back, mid-stream swap the inference
model between batches; no frame is lost or produced twice, and every detections message names the version that
made it."""
import re
import time
import urllib.request
from collections import Counter

import cv2
import pytest

from infra.kafka import create_topics, make_producer
from processors.inference.model_registry import ModelRegistry
from schemas import Detections, Frame, decode, encode
from tests.conftest import OFFLINE_MODEL, VTEST, pipeline_config
from tests.pipeline_helpers import StageProcess, TopicReader

pytestmark = [pytest.mark.broker, pytest.mark.slow]

MAX_AHEAD = 8  # frames published but not yet detected: keeps the stream live instead of a backlog


def versions_in(records) -> list[str | None]:
    return [message.model_version for message in sorted((decode(r.value, Detections) for r in records),
                                                         key=lambda m: m.seq)]


def rolled_back(records) -> bool:
    versions = versions_in(records)
    return "v2" in versions and "v1" in versions[versions.index("v2"):]


class LiveCamera:
    """The campus clip published at up to 10 fps, never more than MAX_AHEAD frames ahead of the detections."""

    def __init__(self, bootstrap: str, topic: str, detections: TopicReader, infer: StageProcess):
        self.producer = make_producer(bootstrap)
        self.topic, self.detections, self.infer = topic, detections, infer
        self.capture = cv2.VideoCapture(str(VTEST))
        self.sent = 0

    def publish_until(self, done, timeout_s: float, what: str) -> None:
        deadline = time.monotonic() + timeout_s
        while not done(self.detections.poll()):
            if self.sent - len(self.detections.records) < MAX_AHEAD:
                ok, image = self.capture.read()
                assert ok, "the clip ended"
                jpeg = cv2.imencode(".jpg", image)[1].tobytes()
                frame = Frame(camera_id="campus", seq=self.sent, captured_at=time.time(), width=image.shape[1],
                              height=image.shape[0], jpeg=jpeg)
                self.producer.send(self.topic, key=b"campus", value=encode(frame))
                self.sent += 1
            time.sleep(0.1)
            assert self.infer.alive(), self.infer.log_tail()
            assert time.monotonic() < deadline, f"timed out waiting for {what}\n{self.infer.log_tail()}"
        self.producer.flush()

    def close(self) -> None:
        self.producer.close()
        self.capture.release()


def test_promotion_and_rollback_mid_stream_lose_and_repeat_no_frame(kafka_bootstrap, tmp_path):
    registry = ModelRegistry(tmp_path / "registry")
    for _ in range(2):  # the same weights twice: what is tested is which copy serves, and the hand-over
        registry.register(OFFLINE_MODEL, {"kind": "imported"})
    registry.promote("v1", "first model")
    config, path = pipeline_config(tmp_path, "rollout", kafka_bootstrap, model={
        "offline_weights": str(OFFLINE_MODEL), "max_batch_size": 4, "registry": str(registry.root),
        "max_frame_age_s": 3600})  # frames sent while the stage loads its model are not stale here
    topics = config.broker.topics
    create_topics(kafka_bootstrap, topics.all(), config.broker.partitions)
    infer = StageProcess("infer", path, kafka_bootstrap, tmp_path, "--metrics-port", "0")
    detections = TopicReader(kafka_bootstrap, topics.detections)
    camera = LiveCamera(kafka_bootstrap, topics.frames, detections, infer)
    try:
        camera.publish_until(lambda records: len(records) >= 5, 90, "first detections")
        registry.promote("v2", "gate passed")
        camera.publish_until(lambda records: "v2" in versions_in(records), 30, "detections from v2")
        registry.rollback()
        camera.publish_until(rolled_back, 30, "detections from v1 after the roll-back")
        port = re.search(r"inference metrics: http://127.0.0.1:(\d+)/metrics", infer.log()).group(1)
        metrics = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
        records = detections.wait_for(lambda records: len(records) >= camera.sent, 30, [infer], "every frame")
        time.sleep(1)  # a duplicate would arrive right behind
        records = detections.poll()
    finally:
        camera.close()
        detections.close()
        infer.stop()
    seqs = Counter(decode(record.value, Detections).seq for record in records)
    assert len(seqs) == camera.sent and set(seqs.values()) == {1}, "a frame lost or produced twice"
    versions = versions_in(records)
    # one camera, one partition, in order: v1, then v2 from one batch on, then v1 again from one batch on
    assert [v for i, v in enumerate(versions) if i == 0 or v != versions[i - 1]] == ["v1", "v2", "v1"]
    assert "now serving model v2" in infer.log()
    assert 'cityguard_inference_model_info{version="v1"} 1.0' in metrics and 'version="v2"' not in metrics
