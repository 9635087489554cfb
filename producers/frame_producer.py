"""Frame producer stage: cameras -> frames topic. One thread per camera so a slow camera never blocks another."""
from __future__ import annotations

import logging
import threading
import time

from kafka import KafkaProducer
from prometheus_client import Counter, Histogram

from cityguard.config import CameraConfig, Config
from producers.capture import CameraUnavailable, encode_jpeg, sample_frames
from schemas import Frame, encode

log = logging.getLogger(__name__)

FRAMES_PRODUCED = Counter("cityguard_frames_produced_total", "Frames published to the frames topic", ["camera"])
FRAME_BYTES = Counter("cityguard_frame_bytes_total", "JPEG bytes published", ["camera"])
CAMERA_ERRORS = Counter("cityguard_camera_errors_total", "Camera read failures", ["camera", "reason"])
ENCODE_SECONDS = Histogram(
    "cityguard_frame_encode_seconds", "Resize + JPEG encode time per frame", ["camera"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25),
)


class SequenceCounter:
    """Per-camera sequence numbers that are never reused, also across producer restarts.

    They start at the process start time in microseconds; a restarted producer starts higher than any number the
    previous run could have reached unless it produced over a million frames per second.
    """

    def __init__(self, start: int | None = None):
        self._next = time.time_ns() // 1000 if start is None else start

    def next(self) -> int:
        value = self._next
        self._next += 1
        return value


def publish_camera(
    camera: CameraConfig,
    config: Config,
    producer: KafkaProducer,
    stop: threading.Event,
    realtime: bool = True,
    max_frames: int | None = None,
) -> int:
    """Reads one camera until it ends, `stop` is set or max_frames are sent; returns frames sent."""
    topic = config.broker.topics.frames
    sequence = SequenceCounter()
    sent = 0
    source = config.resolve_path(camera.source)
    for sampled in sample_frames(camera, source, realtime=realtime):
        if stop.is_set() or (max_frames is not None and sent >= max_frames):
            break
        with ENCODE_SECONDS.labels(camera.id).time():
            jpeg, width, height = encode_jpeg(sampled.image, camera.max_width, camera.jpeg_quality)
        frame = Frame(camera_id=camera.id, seq=sequence.next(), captured_at=sampled.captured_at,
                      width=width, height=height, jpeg=jpeg)
        producer.send(topic, key=camera.id.encode(), value=encode(frame))
        FRAMES_PRODUCED.labels(camera.id).inc()
        FRAME_BYTES.labels(camera.id).inc(len(jpeg))
        sent += 1
    producer.flush()
    return sent


def run_producer(config: Config, producer: KafkaProducer, stop: threading.Event, realtime: bool = True,
                 max_frames: int | None = None, camera_ids: list[str] | None = None) -> dict[str, int]:
    """Runs every configured camera (or those named) in its own thread; a dead camera is logged, not fatal."""
    cameras = [camera for camera in config.cameras if camera_ids is None or camera.id in camera_ids]
    sent: dict[str, int] = {}

    def run(camera: CameraConfig) -> None:
        try:
            sent[camera.id] = publish_camera(camera, config, producer, stop, realtime, max_frames)
            log.info("camera %s finished after %d frames", camera.id, sent[camera.id])
        except CameraUnavailable as exc:
            CAMERA_ERRORS.labels(camera.id, "unavailable").inc()
            log.error("camera %s is down: %s", camera.id, exc)
            sent[camera.id] = 0

    threads = [threading.Thread(target=run, args=(camera,), name=f"camera-{camera.id}", daemon=True)
               for camera in cameras]
    for thread in threads:
        thread.start()
    for thread in threads:
        while thread.is_alive():
            thread.join(0.5)
    producer.flush()
    return sent
