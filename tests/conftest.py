"""Shared fixtures. The broker is real: an embedded Tansu started once per session (or KAFKA_BOOTSTRAP_SERVERS)."""
from __future__ import annotations

import os
import resource
import signal
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from infra.assets import asset_path

os.environ.setdefault("YOLO_OFFLINE", "1")

REPO = Path(__file__).resolve().parent.parent
# The sample clips and offline models, from the shared folder beside the repository or fetched once into the cache.
VTEST = asset_path("vtest.avi")
CAR_CLIP = asset_path("car-detection.mp4")
LOT_CLIP = asset_path("person-bicycle-car-detection.gif")  # 3.4 s, 480x270: a car and a cyclist in a paved lot
HANGING_HOST = "receiver.hanging-resolver.test"  # the host name that hanging_resolver hangs on
OFFLINE_MODEL = asset_path("yolo11n_int8_openvino_model")
ONNX_MODEL = asset_path("yolov8n_dynint8.onnx")


@pytest.fixture(scope="session")
def kafka_bootstrap(tmp_path_factory) -> str:
    """Bootstrap servers of a real Kafka-protocol broker for the whole session."""
    configured = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    if configured:
        yield configured
        return
    from infra.broker import EmbeddedBroker

    broker = EmbeddedBroker(log_path=tmp_path_factory.mktemp("broker") / "tansu.log").start()
    try:
        yield broker.bootstrap_servers
    finally:
        broker.stop()


def pipeline_config(tmp_path: Path, name: str, bootstrap: str, **overrides):
    """A site configuration with its own topics and groups on the shared test broker, written to tmp_path."""
    import uuid

    import yaml

    from schemas.settings.config import load_config

    suffix = f"{name}-{uuid.uuid4().hex[:8]}"
    data = {
        "site": suffix,
        "broker": {
            "bootstrap_servers": bootstrap,
            "partitions": 3,
            "topics": {topic: f"{suffix}.{topic}" for topic in
                       ("frames", "detections", "zone_metrics", "events", "alerts", "camera_status", "dead_letter")},
        },
        # Tests produce a backlog before the stages are ready (model loading takes seconds): none of it is stale. No
        # longer than producer.frame_store_ttl_s (600 s), as `cityguard up` requires when it sends frames by reference.
        "model": {"offline_weights": str(OFFLINE_MODEL), "max_batch_size": 4, "max_frame_age_s": 600},
        "analytics": {"window_seconds": 2},
        "metrics": {"exporter_port": 0, "producer_port": 0, "inference_port": 0, "analytics_port": 0},
        "console": {"port": 0},
        "cameras": [{
            "id": "campus", "source": str(VTEST), "fps": 10,
            "zones": [{"id": "walkway", "polygon": [[0, 0], [768, 0], [768, 576], [0, 576]], "area_m2": 200}],
        }],
    }
    for key, value in overrides.items():
        data[key] = value
    path = tmp_path / f"{suffix}.yaml"
    path.write_text(yaml.safe_dump(data))
    return load_config(path), path


@pytest.fixture(scope="session")
def detector():
    """The offline COCO yolo11n (OpenVINO int8) used by every test that runs the real model."""
    from processors.inference.backends.ultralytics import YoloDetector

    return YoloDetector(str(OFFLINE_MODEL))


def video_frames(path: Path, count: int, step: int = 1) -> list:
    """The first `count` frames of a clip (every `step`-th), as BGR arrays."""
    import cv2

    capture = cv2.VideoCapture(str(path))
    frames, index = [], 0
    while len(frames) < count:
        ok, image = capture.read()
        if not ok:
            break
        if index % step == 0:
            frames.append(image)
        index += 1
    capture.release()
    return frames


@contextmanager
def files_limited_to(size: int) -> Iterator[None]:
    """Writing a file past `size` bytes fails (EFBIG), as on a disk that fills up, while the block runs."""
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    signal_action = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # else the kernel ends the process
    resource.setrlimit(resource.RLIMIT_FSIZE, (size, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, signal_action)


@pytest.fixture
def hanging_resolver(request, monkeypatch):
    """A resolver that hangs on HANGING_HOST: a lookup of it gives up after 30 s (or as many as the test's indirect
    parameter says), or once the test has ended; other names are looked up as ever. Set once the lookup was asked for.

    socket.getaddrinfo is replaced: it takes no timeout, and no local DNS server can stand in for the system's
    without changing its resolver configuration."""
    hang_s = getattr(request, "param", 30)
    asked, test_ended = threading.Event(), threading.Event()
    lookup = socket.getaddrinfo

    def getaddrinfo(host, *args, **kwargs):
        if host != HANGING_HOST:
            return lookup(host, *args, **kwargs)
        asked.set()
        test_ended.wait(hang_s)
        raise socket.gaierror(socket.EAI_AGAIN, "Temporary failure in name resolution")

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    yield asked
    test_ended.set()
