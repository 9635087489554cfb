"""Analytics stage (faust-streaming): detections topic -> zone metrics and events topics.

Faust only wires the pure per-camera analyzers (processors.analytics.contract) to the topics. Their state lives in a
faust table, so a restarted or rebalanced worker resumes the same windows and levels from the table's changelog.
The detections topic is keyed by camera, so one camera's frames always reach the same worker, in order.

At-least-once without loss: a frame's outputs are confirmed by the broker before its new state is stored, and the
table also stores, per input partition, the next offset the state expects. That stored offset, not the committed one,
decides what is applied (processors.analytics.input_positions): a frame already in the state is skipped, and a gap
(faust can
drop fetched frames when it resumes after a rebalance, or commit past a frame a stopped worker never finished) is read
directly from the partition and applied first. (Not by seeking faust's consumer back: its fetcher can run past the
seek and then drop the refetched frames as already read.)
"""
from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import faust

from infra.dead_letter import dead_letter
from infra.kafka import deliveries_confirmed, faust_settings, read_offsets
from processors.analytics.ignore_filters import IgnoreFilterReader, IgnoreFilterStore, without_ignored
from processors.analytics.input_positions import Verdict, judge
from processors.analytics.registry import analyzers_for
from schemas import Detections, SchemaError, decode, encode
from schemas.settings.config import Config

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
    # "<camera id>/<analyzer>" -> that analyzer's encoded state; recovered from the changelog on restart.
    analyzer_state = app.Table("analyzer-state", default=bytes, partitions=config.broker.partitions,
                               key_type=bytes, value_type=bytes)
    cameras = {camera.id: (camera, analyzers_for(camera)) for camera in config.cameras}
    ignore_filters = (IgnoreFilterReader(IgnoreFilterStore(Path(config.resolve_path(config.analytics.ignore_filters))))
                      if config.analytics.ignore_filters else None)
    # state key -> (state this worker last wrote, the analyzer that wrote it): while the table still holds exactly
    # that state, the live analyzer is reused instead of being decoded again for every frame. After a rebalance
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

    async def apply(message) -> tuple[list[asyncio.Future], dict[bytes, tuple[bytes, object]]]:
        """Runs one frame (a faust message or a record read to fill a gap) through its camera's analyzers: the
        delivery futures of its outputs, and the new states."""
        deliveries: list[asyncio.Future] = []
        states: dict[bytes, tuple[bytes, object]] = {}

        async def send(topic, value: bytes, key: bytes) -> None:
            # Awaited one at a time to keep their order; returns once queued, with the delivery future.
            deliveries.append(await topic.send(key=key, value=value))

        async def reject(reason: str) -> None:
            letter = dead_letter(STAGE, message.topic, message.partition, message.offset, message.key, message.value,
                                 reason)
            await send(dead_letter_topic, encode(letter), message.key)

        try:
            detections = decode(message.value, Detections)
        except SchemaError as exc:
            await reject(str(exc))
            return deliveries, states
        if detections.camera_id not in cameras:
            await reject(f"camera {detections.camera_id!r} is not in the site configuration")
            return deliveries, states
        camera, factories = cameras[detections.camera_id]
        key = camera.id.encode()
        if ignore_filters is not None:
            # Operators' "ignore this": the covered objects never reach the analyzers, so they raise nothing.
            detections = without_ignored(detections, ignore_filters.current())
        for name, restore in factories.items():
            state_key = f"{camera.id}/{name}".encode()
            try:
                analyzer = live_analyzer(state_key, camera, restore)
                output = analyzer.update(detections)
                states[state_key] = (analyzer.state_bytes(), analyzer)
            except Exception as exc:  # one bad message must not stop the camera's analytics
                live_analyzers.pop(state_key, None)  # the next message starts from the last stored state
                log.exception("%s analyzer failed on %s seq %d", name, camera.id, detections.seq)
                await reject(f"{name} analyzer failed: {type(exc).__name__}: {exc}")
                continue
            for metrics in output.zone_metrics:
                await send(zone_metrics_topic, encode(metrics), key)
            for incident in output.events:
                await send(events_topic, encode(incident), key)
            for counts in output.line_counts:
                await send(line_counts_topic, encode(counts), key)
        return deliveries, states

    async def apply_and_store(message, position_key: bytes) -> None:
        deliveries, states = await apply(message)
        # A delivery failure raises here, before the state records the frame as applied.
        await deliveries_confirmed(deliveries)
        for state_key, (state, analyzer) in states.items():
            analyzer_state[state_key] = state
            live_analyzers[state_key] = (state, analyzer)
        # Written after the states, to the same changelog partition: recovery never sees it without them.
        analyzer_state[position_key] = str(message.offset + 1).encode()

    @app.agent(detections_topic)
    async def analyze(stream):
        async for event in stream.events():
            message = event.message
            # "_" cannot start a camera id, so this key never meets a camera's state key.
            position_key = f"_position/{message.partition}".encode()
            stored_position = analyzer_state[position_key]
            expected_offset = int(stored_position) if stored_position else None
            verdict = judge(expected_offset, message.offset)
            if verdict is Verdict.ALREADY_APPLIED:
                continue
            if verdict is Verdict.FILL_GAP:
                missing = await read_offsets(bootstrap_servers, message.topic, message.partition, expected_offset,
                                             message.offset)
                log.warning("%s[%d]: offset %d arrived but the state expects %d; applied %d frames read directly",
                            message.topic, message.partition, message.offset, expected_offset, len(missing))
                for record in missing:
                    await apply_and_store(record, position_key)
            await apply_and_store(message, position_key)

    return app


def run_worker(config: Config, bootstrap_servers: str, loglevel: str = "warning") -> None:
    """Runs the faust worker until SIGTERM/SIGINT (blocks; faust owns the event loop and signal handling)."""
    app = create_app(config, bootstrap_servers)
    worker = faust.Worker(app, loglevel=loglevel, quiet=True)
    worker.execute_from_commandline()
