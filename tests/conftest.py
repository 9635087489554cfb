"""Shared fixtures. The broker is real: an embedded Tansu started once per session (or KAFKA_BOOTSTRAP_SERVERS)."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("YOLO_OFFLINE", "1")

REPO = Path(__file__).resolve().parent.parent
SHARED = REPO.parent / "shared"
VTEST = SHARED / "data" / "video" / "vtest.avi"
CAR_CLIP = SHARED / "data" / "video" / "car-detection.mp4"
OFFLINE_MODEL = SHARED / "models" / "yolo11n_int8_openvino_model"


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
