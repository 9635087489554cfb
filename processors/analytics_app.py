"""Analytics stage (faust-streaming): detections topic -> zone metrics and events topics.

Faust only wires the pure per-camera analyzers (processors.camera_analytics) to the topics. Their state lives in a
faust table, so a restarted or rebalanced worker resumes the same windows and levels from the table's changelog.
The detections topic is keyed by camera, so one camera's frames always reach the same worker, in order.
"""
from __future__ import annotations

import logging

import faust

from cityguard.config import Config
from infra.dead_letter import dead_letter
from infra.kafka import faust_settings
from processors.camera_analytics import analyzers_for
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
    events_topic = app.topic(topics.events, key_type=bytes, value_type=bytes)
    line_counts_topic = app.topic(topics.line_counts, key_type=bytes, value_type=bytes)
    dead_letter_topic = app.topic(topics.dead_letter, key_type=bytes, value_type=bytes)
    # "<camera id>/<analyzer>" -> that analyzer's JSON state; recovered from the changelog on restart.
    analyzer_state = app.Table("analyzer-state", default=bytes, partitions=config.broker.partitions,
                               key_type=bytes, value_type=bytes)
    cameras = {camera.id: (camera, analyzers_for(camera)) for camera in config.cameras}
    # state key -> (state this worker last wrote, the analyzer that wrote it): while the table still holds exactly
    # that state, the live analyzer is reused instead of being rebuilt from JSON for every frame. After a rebalance
    # the table holds another worker's state, the check fails, and the analyzer is restored from the table.
    live_analyzers: dict[bytes, tuple[bytes, object]] = {}

    def live_analyzer(state_key: bytes, camera, restore):
        stored = analyzer_state[state_key] or None
        cached = live_analyzers.get(state_key)
        if cached and cached[0] == stored:
            return cached[1]
        try:
            return restore(camera, config, stored)
        except Exception:
            # A state this version cannot read (or a corrupt one): losing it beats muting the camera for good.
            log.exception("stored %s state unreadable; starting afresh", state_key.decode())
            return restore(camera, config, None)

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
            if detections.camera_id not in cameras:
                await reject(event, f"camera {detections.camera_id!r} is not in the site configuration")
                continue
            camera, factories = cameras[detections.camera_id]
            key = camera.id.encode()
            for name, restore in factories.items():
                state_key = f"{camera.id}/{name}".encode()
                try:
                    analyzer = live_analyzer(state_key, camera, restore)
                    output = analyzer.update(detections)
                    state = analyzer.state_json()
                except Exception as exc:  # one bad message must not stop the camera's analytics
                    live_analyzers.pop(state_key, None)  # the next message starts from the last stored state
                    log.exception("%s analyzer failed on %s seq %d", name, camera.id, detections.seq)
                    await reject(event, f"{name} analyzer failed: {type(exc).__name__}: {exc}")
                    continue
                for metrics in output.zone_metrics:
                    await zone_metrics_topic.send(key=key, value=encode(metrics))
                for incident in output.events:
                    await events_topic.send(key=key, value=encode(incident))
                for counts in output.line_counts:
                    await line_counts_topic.send(key=key, value=encode(counts))
                analyzer_state[state_key] = state
                live_analyzers[state_key] = (state, analyzer)

    return app


def run_worker(config: Config, bootstrap_servers: str, loglevel: str = "warning") -> None:
    """Runs the faust worker until SIGTERM/SIGINT (blocks; faust owns the event loop and signal handling)."""
    app = create_app(config, bootstrap_servers)
    worker = faust.Worker(app, loglevel=loglevel, quiet=True)
    worker.execute_from_commandline()
