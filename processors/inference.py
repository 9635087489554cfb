"""Inference stage: frames topic -> detector -> detections topic, in micro-batches, at least once.

Offsets are committed only after every detections message of the batch has been acknowledged by the broker, so a
crash re-delivers the batch to the next worker of the group instead of losing it.
"""
from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from typing import Protocol

import cv2
import numpy as np
from kafka import KafkaConsumer, KafkaProducer
from kafka.errors import CommitFailedError
from prometheus_client import Counter, Gauge, Histogram

from cityguard.config import Config
from infra.dead_letter import dead_letter
from infra.kafka import partition_lag
from processors.detector import ImageDetections
from processors.tracking import TrackerPool
from schemas import Detections, Frame, SchemaError, decode, encode

log = logging.getLogger(__name__)

STAGE = "inference"
FRAMES_CONSUMED = Counter("cityguard_frames_consumed_total", "Frames turned into detections", ["camera"])
INFERENCE_SECONDS = Histogram(
    "cityguard_inference_seconds", "Model time per frame",
    buckets=(0.005, 0.01, 0.02, 0.03, 0.05, 0.075, 0.1, 0.2, 0.5, 1.0),
)
STAGE_SECONDS = Histogram(
    "cityguard_inference_stage_seconds", "Time per frame in each step of the inference stage", ["stage"],
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 1.0),
)
BATCH_SIZE = Histogram("cityguard_inference_batch_size", "Frames per inference batch",
                       buckets=(1, 2, 4, 8, 16, 32, 64, 128))
CONSUMER_LAG = Gauge("cityguard_consumer_lag_messages", "Messages behind the high-watermark",
                     ["group", "topic", "partition"])


class Detector(Protocol):
    """What the inference stage needs from a model (processors.detector.YoloDetector, processors.tiling)."""

    name: str

    def detect(self, images: list[np.ndarray]) -> list[ImageDetections]: ...


@dataclass(frozen=True)
class DecodedFrame:
    frame: Frame
    image: np.ndarray


def decode_frame(raw: bytes | None) -> DecodedFrame:
    frame = decode(raw, Frame)
    if frame.jpeg is None:
        raise SchemaError("frame_ref frames need a frame store, none is configured")
    image = cv2.imdecode(np.frombuffer(frame.jpeg, dtype=np.uint8), cv2.IMREAD_COLOR)
    if image is None:
        raise SchemaError("jpeg field is not a decodable JPEG image")
    return DecodedFrame(frame, image)


def to_message(frame: Frame, result: ImageDetections, model_name: str) -> Detections:
    return Detections(
        camera_id=frame.camera_id, seq=frame.seq, captured_at=frame.captured_at,
        image_width=frame.width, image_height=frame.height, model=model_name, inference_ms=result.inference_ms,
        xyxy=[tuple(box) for box in result.xyxy.tolist()], confidence=result.confidence.tolist(),
        class_id=result.class_id.tolist(), class_name=list(result.class_names),
    )


class CameraDetectors:
    """Picks the detector per camera (tiled for the cameras configured so) and batches each group once."""

    def __init__(self, detector: Detector, tiled: Detector | None = None, tiled_cameras: frozenset[str] = frozenset()):
        self.detector = detector
        self.tiled = tiled
        self.tiled_cameras = tiled_cameras if tiled is not None else frozenset()

    def detect(self, frames: list[DecodedFrame]) -> list[tuple[ImageDetections, str]]:
        """(result, model name) per frame, in input order."""
        results: list[tuple[ImageDetections, str] | None] = [None] * len(frames)
        groups = [(self.detector, [i for i, f in enumerate(frames) if f.frame.camera_id not in self.tiled_cameras])]
        if self.tiled is not None:
            groups.append((self.tiled, [i for i, f in enumerate(frames) if f.frame.camera_id in self.tiled_cameras]))
        for detector, indices in groups:
            if indices:
                for i, result in zip(indices, detector.detect([frames[i].image for i in indices]), strict=True):
                    results[i] = (result, detector.name)
        return results


class InferenceWorker:
    """One member of the inference consumer group; run several to share the frames partitions."""

    def __init__(self, config: Config, consumer: KafkaConsumer, producer: KafkaProducer,
                 detectors: CameraDetectors, group_id: str, trackers: TrackerPool | None = None):
        self.topics = config.broker.topics
        self.max_batch = config.model.max_batch_size
        self.max_wait_s = config.model.max_batch_wait_ms / 1000
        self.consumer = consumer
        self.producer = producer
        self.detectors = detectors
        self.trackers = trackers
        self.group_id = group_id

    def gather(self, stop: threading.Event) -> list:
        """Up to max_batch records, waiting at most max_wait once the first one has arrived."""
        records: list = []
        deadline = None
        while len(records) < self.max_batch and not stop.is_set():
            timeout_s = 0.5 if deadline is None else max(0.0, deadline - time.monotonic())
            polled = self.consumer.poll(timeout_ms=int(timeout_s * 1000), max_records=self.max_batch - len(records))
            for partition_records in polled.values():
                records.extend(partition_records)
            if records and deadline is None:
                deadline = time.monotonic() + self.max_wait_s
            if deadline is not None and time.monotonic() >= deadline:
                break
        return records

    def process(self, records: list) -> int:
        """Detects, produces and commits one batch; returns detections messages produced."""
        decoded: list[DecodedFrame] = []
        for record in records:
            try:
                with STAGE_SECONDS.labels("decode").time():
                    decoded.append(decode_frame(record.value))
            except SchemaError as exc:
                letter = dead_letter(STAGE, record.topic, record.partition, record.offset, record.key, record.value,
                                     str(exc))
                self.producer.send(self.topics.dead_letter, key=record.key, value=encode(letter))
        if decoded:
            BATCH_SIZE.observe(len(decoded))
            for item, (result, model_name) in zip(decoded, self.detectors.detect(decoded), strict=True):
                message = to_message(item.frame, result, model_name)
                if self.trackers is not None:
                    with STAGE_SECONDS.labels("tracking").time():
                        message = self.trackers.update(message)
                self.producer.send(self.topics.detections, key=item.frame.camera_id.encode(), value=encode(message))
                FRAMES_CONSUMED.labels(item.frame.camera_id).inc()
                INFERENCE_SECONDS.observe(result.inference_ms / 1000)
                for stage, ms in (("preprocess", result.preprocess_ms), ("inference", result.inference_ms),
                                  ("postprocess", result.postprocess_ms)):
                    STAGE_SECONDS.labels(stage).observe(ms / 1000)
        self.producer.flush()  # every output acknowledged before the offsets move
        try:
            self.consumer.commit()
        except CommitFailedError as exc:
            # Partitions moved during the batch; the new owner re-processes it (duplicates are dropped downstream).
            log.warning("commit failed after rebalance, batch will be redelivered: %s", exc)
        return len(decoded)

    def update_lag(self) -> None:
        for (topic, partition), lag in partition_lag(self.consumer).items():
            CONSUMER_LAG.labels(self.group_id, topic, str(partition)).set(lag)

    def run(self, stop: threading.Event) -> None:
        while not stop.is_set():
            records = self.gather(stop)
            if records:
                self.process(records)
            self.update_lag()
