"""Analytics stage (faust-streaming): detections topic -> zone metrics topic.

Faust only wires the pure aggregator (processors.density) to the topics. Per-camera window state lives in a faust
table, so a restarted or rebalanced worker resumes the same windows from the table's changelog. The detections
topic is keyed by camera, so one camera's frames always reach the same worker in order.
"""
from __future__ import annotations

import logging

import faust

from cityguard.config import Config
from infra.dead_letter import dead_letter
from infra.kafka import faust_settings
from processors.density import CameraWindowState, ZoneWindowAggregator
from schemas import Detections, SchemaError, decode, encode

log = logging.getLogger(__name__)

STAGE = "analytics"


def create_app(config: Config, bootstrap_servers: str) -> faust.App:
    topics = config.broker.topics
    app = faust.App(
        config.group_id(STAGE),  # the faust app id is its consumer group
        **faust_settings(bootstrap_servers),
        topic_partitions=config.broker.partitions,
        key_serializer="raw",
        value_serializer="raw",
    )
    detections_topic = app.topic(topics.detections, key_type=bytes, value_type=bytes)
    zone_metrics_topic = app.topic(topics.zone_metrics, key_type=bytes, value_type=bytes)
    dead_letter_topic = app.topic(topics.dead_letter, key_type=bytes, value_type=bytes)
    # Camera id -> JSON of the camera's window state; recovered from the changelog on restart.
    window_state = app.Table("camera-window-state", default=bytes, partitions=config.broker.partitions,
                             key_type=bytes, value_type=bytes)
    cameras = {camera.id: camera for camera in config.cameras}

    async def reject(event, reason: str) -> None:
        message = event.message
        letter = dead_letter(STAGE, message.topic, message.partition, message.offset, event.key, event.value, reason)
        await dead_letter_topic.send(key=event.key, value=encode(letter))

    @app.agent(detections_topic)
    async def analyze(stream):
        async for event in stream.events():
            try:
                detections = decode(event.value, Detections)
            except SchemaError as exc:
                await reject(event, str(exc))
                continue
            camera = cameras.get(detections.camera_id)
            if camera is None:
                await reject(event, f"camera {detections.camera_id!r} is not in the site configuration")
                continue
            key = camera.id.encode()
            aggregator = ZoneWindowAggregator(camera, config.analytics.window_seconds, config.analytics.thresholds,
                                              CameraWindowState.from_json(window_state[key]))
            for metrics in aggregator.update(detections):
                await zone_metrics_topic.send(key=key, value=encode(metrics))
            window_state[key] = aggregator.state.to_json()

    return app


def run_worker(config: Config, bootstrap_servers: str, loglevel: str = "warning") -> None:
    """Runs the faust worker until SIGTERM/SIGINT (blocks; faust owns the event loop and signal handling)."""
    app = create_app(config, bootstrap_servers)
    worker = faust.Worker(app, loglevel=loglevel, quiet=True)
    worker.execute_from_commandline()
