"""Replay and the live pipeline (producer -> broker -> inference stage -> analytics stage) give the same detections
and the same events on the same clip."""
from __future__ import annotations

import threading

import pytest

from cityguard.replay import CameraAnalytics, clip_detections, find_camera
from infra.kafka import create_topics
from producers.frame_producer import frame_client, run_producer
from schemas import Detections, Event, Frame
from tests.conftest import LOT_CLIP, OFFLINE_MODEL, pipeline_config
from tests.pipeline_helpers import StageProcess, TopicReader
from tests.test_pipeline_e2e import parsed, stop_all

pytestmark = [pytest.mark.broker, pytest.mark.slow]

CAMERA = {"id": "lot", "source": str(LOT_CLIP), "fps": 12, "scene": {
    "pedestrian_areas": [{"id": "plaza", "polygon": [[0, 0], [480, 0], [480, 270], [0, 270]]}]}}


def comparable(event: Event) -> tuple:
    """An event without what depends on the run (ids derived from producer sequence numbers and tracker id bases)."""
    return (event.type, event.state, event.severity, event.zone_id, event.started_at, event.updated_at,
            event.ended_at, event.reason, tuple(sorted(event.details.items())))


def test_replay_gives_the_pipelines_detections_and_events(kafka_bootstrap, tmp_path):
    # One frame per model call in both, so the model sees exactly the same batches.
    config, path = pipeline_config(tmp_path, "replay-eq", kafka_bootstrap, cameras=[CAMERA],
                                   model={"offline_weights": str(OFFLINE_MODEL), "max_batch_size": 1,
                                          "max_frame_age_s": 3600})  # the backlog is not stale on a slow machine
    topics = config.broker.topics
    create_topics(kafka_bootstrap, topics.all(), config.broker.partitions)
    stages = [StageProcess("analyze", path, kafka_bootstrap, tmp_path),
              StageProcess("infer", path, kafka_bootstrap, tmp_path, "--metrics-port", "0")]
    readers = {name: TopicReader(kafka_bootstrap, topic) for name, topic in
               (("frames", topics.frames), ("detections", topics.detections), ("events", topics.events))}
    try:
        producer = frame_client(kafka_bootstrap, config.producer)
        run_producer(config, producer, threading.Event(), realtime=False, camera_ids=[config.cameras[0].id])
        producer.close()
        frames = parsed(readers["frames"].wait_for(lambda rs: len(rs) >= 30, 30, what="frames"), Frame)
        records = readers["detections"].wait_for(lambda rs: len(rs) >= len(frames), 180, stages, "detections")
        live = sorted(parsed(records, Detections), key=lambda d: d.seq)

        camera = find_camera(config, "lot")
        analytics = CameraAnalytics(camera, config)
        replayed = [analytics.update(detections)
                    for detections in clip_detections(config, camera, LOT_CLIP, frames[0].captured_at)]
        expected_events = [event for frame in replayed for event in frame.events]
        assert expected_events, "the clip must raise events for the comparison to mean anything"
        event_records = readers["events"].wait_for(lambda rs: len(rs) >= len(expected_events), 120, stages,
                                                   "the pipeline's events")
        live_events = parsed(event_records, Event)

        assert len(live) == len(replayed) == len(frames)
        track_map: dict[int, int] = {}
        for got, want in zip(live, (frame.detections for frame in replayed), strict=True):
            assert got.captured_at == want.captured_at
            assert got.class_name == want.class_name
            assert got.boxes() == pytest.approx(want.boxes(), abs=1e-3)
            assert got.static_blobs == want.static_blobs
            for live_id, replay_id in zip(got.track_id, want.track_id, strict=True):
                # Track ids start from a per-run base: the same objects, numbered consistently.
                assert track_map.setdefault(live_id, replay_id) == replay_id
        assert [comparable(e) for e in live_events] == [comparable(e) for e in expected_events]
    finally:
        stop_all(stages)
        for reader in readers.values():
            reader.close()
