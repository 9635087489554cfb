"""The crowd analyzer end to end through the real broker and faust, with a worker restart mid-scenario."""
from __future__ import annotations

import time

import pytest
from kafka import OffsetAndMetadata, TopicPartition
from kafka.coordinator.assignors.range import RangePartitionAssignor

from infra.kafka import create_topics, make_consumer, make_producer
from processors.analytics.crowd.analyzer import CrowdAnalyzer
from processors.analytics.stage import OpenRecord, open_key
from schemas import Event, EventState, ZoneMetrics, decode, encode
from schemas.event import CLOSED_BY_RESET
from tests.conftest import pipeline_config
from tests.crowd.scenarios import CAMERA_ID, MAP_EVERY_SECONDS, Run
from tests.crowd.simulator import SQUARE, CrowdSimulator
from tests.pipeline_helpers import StageProcess, TopicReader

pytestmark = pytest.mark.broker

FPS = 2.0
WINDOW_S = 5
FRAMES = 240  # two minutes: 24 windows
COMMIT_AHEAD = 5  # frames the group's committed offset is moved past what the stopped worker applied
CHECKPOINT_FRAMES = 100  # analytics.checkpoint_frames by default


def crowd_site(tmp_path, bootstrap, checkpoint_frames: int = CHECKPOINT_FRAMES):
    entrance, exit_ = SQUARE.line(0.0), SQUARE.line(SQUARE.length_m)
    camera = {"id": CAMERA_ID, "source": "0", "fps": FPS, "calibration": SQUARE.calibration(), "zones": [{
        "id": "square", "polygon": SQUARE.zone_polygon(),
        "entrances": [{"id": "in", "start": entrance[0], "end": entrance[1]},
                      {"id": "out", "start": exit_[0], "end": exit_[1]}]}]}
    # Low thresholds and short forecast warm-up so two minutes of build-up cross several levels.
    analytics = {"window_seconds": WINDOW_S,
                 "thresholds": {"caution": 0.3, "warning": 0.8, "danger": 1.1, "critical": 1.4},
                 "risk": {"min_dwell_seconds": 10}, "forecast": {"min_windows": 4},
                 "checkpoint_frames": checkpoint_frames}
    return pipeline_config(tmp_path, "crowd", bootstrap, analytics=analytics, cameras=[camera])


def building_crowd(first_map: int = 0) -> list:
    """Two minutes of a crowd building up from 0.3 p/m², with density maps as the inference schedule sends them,
    from frame `first_map` on."""
    simulator = CrowdSimulator(SQUARE, FPS, seed=21, target_density=lambda t: 0.3 + t / 120)
    frames = []
    for _ in range(FRAMES):
        simulator.step()
        frames.append(simulator.detections(
            CAMERA_ID, with_density_map=simulator.seq % round(MAP_EVERY_SECONDS * FPS) == first_map))
    return frames


def unique(records, schema, key):
    """Messages by key; at-least-once may repeat one, but a repeat must be identical."""
    seen = {}
    for record in records:
        message = decode(record.value, schema)
        assert seen.setdefault(key(message), message) == message, f"conflicting duplicate {key(message)}"
    return seen


def level_change(event: Event) -> tuple[str, float]:
    """An incident's changes share its event id; each change is one window's."""
    return event.event_id, event.updated_at


class FaustNamedAssignor(RangePartitionAssignor):
    """The broker keeps an empty group's protocol, so a member joining the faust app's group must name faust's."""
    name = "faust"


def move_committed_offset(bootstrap: str, group: str, partition: TopicPartition, offset: int) -> None:
    """What a worker stopped mid-frame, or a consumer that lost fetched frames, leaves behind: a commit ahead of
    the state."""
    # Only a member of the (now empty) group may commit for it.
    consumer = make_consumer(bootstrap, group, partition.topic, partition_assignment_strategy=[FaustNamedAssignor])
    try:
        deadline = time.monotonic() + 30
        while partition not in consumer.assignment():
            assert time.monotonic() < deadline, "never joined the analytics group"
            consumer.poll(timeout_ms=500, max_records=1)
        consumer.commit({partition: OffsetAndMetadata(offset, None, -1)})
    finally:
        consumer.close()


@pytest.mark.parametrize("checkpoint_frames", [CHECKPOINT_FRAMES, 4 * FRAMES],
                         ids=["after-a-checkpoint", "before-the-first-checkpoint"])
def test_worker_restart_continues_windows_and_levels(kafka_bootstrap, tmp_path, report, checkpoint_frames):
    config, path = crowd_site(tmp_path, kafka_bootstrap, checkpoint_frames)
    topics = config.broker.topics
    create_topics(kafka_bootstrap, topics.all(), config.broker.partitions)
    frames = building_crowd()
    reference = Run()
    analyzer = CrowdAnalyzer(config.cameras[0], config.analytics)
    for detections in frames:
        reference.add(analyzer.update(detections))
    assert len(reference.events) >= 2 and reference.metrics[-1].risk_level.rank >= 3  # climbs to danger

    producer = make_producer(kafka_bootstrap)

    def publish(batch) -> TopicPartition:
        sent = [producer.send(topics.detections, key=CAMERA_ID.encode(), value=encode(detections))
                for detections in batch]
        producer.flush()
        record = sent[-1].get(timeout=10)
        return TopicPartition(record.topic, record.partition)

    metrics_reader = TopicReader(kafka_bootstrap, topics.zone_metrics)
    events_reader = TopicReader(kafka_bootstrap, topics.events)
    half = FRAMES // 2
    first_half_windows = sum(1 for m in reference.metrics if m.window_end <= frames[half - 1].captured_at)
    try:
        publish(frames[:half])
        worker = StageProcess("analyze", path, kafka_bootstrap, tmp_path)
        try:
            metrics_reader.wait_for(lambda records: len(records) >= first_half_windows, 90, [worker],
                                    "first half of the windows")
        finally:
            worker.stop()  # SIGTERM mid-scenario
        partition = publish(frames[half:])
        # The restarted worker must take the state, not the group's offset, as the record of what was applied.
        move_committed_offset(kafka_bootstrap, config.group_id("analytics"), partition, half + COMMIT_AHEAD)
        worker = StageProcess("analyze", path, kafka_bootstrap, tmp_path)
        try:
            metrics_reader.wait_for(
                lambda records: len(unique(records, ZoneMetrics, lambda m: m.window_start)) >= len(reference.metrics),
                90, [worker], "all windows after the restart")
            events_reader.wait_for(lambda records: len(unique(records, Event, level_change))
                                   >= len(reference.events), 30, [worker], "all level changes")
        finally:
            worker.stop()
        windows = unique(metrics_reader.poll(), ZoneMetrics, lambda m: m.window_start)
        events = unique(events_reader.poll(), Event, level_change)
    finally:
        producer.close()
        metrics_reader.close()
        events_reader.close()

    report("broker end to end", f"{len(metrics_reader.records)} zone-metrics messages for {len(windows)} windows, "
           f"{len(events_reader.records)} event messages for {len(events)} level changes, worker restarted after "
           f"window {first_half_windows} with the group's offset {COMMIT_AHEAD} frames ahead of its state")
    # Same windows, values and levels as one uninterrupted pure run: nothing reset, nothing lost or doubled.
    assert [windows[start] for start in sorted(windows)] == reference.metrics
    assert sorted(events.values(), key=lambda e: e.updated_at) == reference.events


def last_value(bootstrap: str, topic: str, key: bytes) -> bytes:
    """The newest value of `key` in a compacted topic (one partition here), read to its end."""
    consumer = make_consumer(bootstrap, None)
    try:
        partitions = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or ()]
        consumer.assign(partitions)
        consumer.seek_to_beginning()
        value, deadline = None, time.monotonic() + 30
        while time.monotonic() < deadline:
            records = [r for batch in consumer.poll(timeout_ms=500).values() for r in batch]
            value = next((r.value for r in reversed(records) if r.key == key), value)
            if not records and value is not None:
                return value
        raise AssertionError(f"no {key!r} in {topic}")
    finally:
        consumer.close()


@pytest.mark.parametrize("checkpoint_frames, found_again", [(19, False), (14, True)],
                         ids=["episode-lost", "episode-found-again"])
def test_a_stored_state_this_version_cannot_read_still_resolves_the_incidents_it_had_open(
        kafka_bootstrap, tmp_path, checkpoint_frames, found_again):
    """What an upgrade that changed an analyzer's state format meets: the analyzer starts afresh from the last
    checkpoint. The camera's first density map comes with frame 14; the risk episode (caution) opens at frame
    19, after that checkpoint, and the old worker stops before the next one.
    - From frame 19 on (checkpoint after 19 frames) the fresh analyzer has too little history to see the episode: it
      is resolved (not left open in the incident store for ever), marked as closed by a reset so that the fresh
      analyzer's own episode is alerted at once.
    - From frame 14 on it finds the same episode again (same id, same frame): that episode is its own, and no reset
      closes it; the fresh analyzer carries it on."""
    first_run = 24
    config, path = crowd_site(tmp_path, kafka_bootstrap, checkpoint_frames)
    topics = config.broker.topics
    create_topics(kafka_bootstrap, topics.all(), config.broker.partitions)
    frames = building_crowd(first_map=14)
    producer = make_producer(kafka_bootstrap)
    for detections in frames[:first_run]:
        producer.send(topics.detections, key=CAMERA_ID.encode(), value=encode(detections))
    producer.flush()
    events_reader = TopicReader(kafka_bootstrap, topics.events)
    changelog = f"{config.group_id('analytics')}-analyzer-state-changelog"
    state_key = f"{CAMERA_ID}/crowd".encode()
    try:
        worker = StageProcess("analyze", path, kafka_bootstrap, tmp_path)
        try:
            events_reader.wait_for(lambda records: any(decode(r.value, Event).state is EventState.OPENED
                                                       for r in records), 90, [worker], "a risk episode opened")
            opened = {decode(r.value, Event).event_id for r in events_reader.poll()
                      if decode(r.value, Event).state is EventState.OPENED}
            deadline = time.monotonic() + 30
            while True:  # recorded as soon as its event is confirmed, not at the next checkpoint
                stored = OpenRecord.unpack(last_value(kafka_bootstrap, changelog, open_key(state_key))).events
                if {event.event_id for event in stored} == opened:
                    break
                assert time.monotonic() < deadline, f"the open episode was never recorded: {stored}"
                time.sleep(0.5)
        finally:
            worker.stop()
        producer.send(changelog, key=state_key, value=b"\xc1 a state format of another version")
        for detections in frames[first_run:]:
            producer.send(topics.detections, key=CAMERA_ID.encode(), value=encode(detections))
        producer.flush()
        worker = StageProcess("analyze", path, kafka_bootstrap, tmp_path)
        try:
            if found_again:  # the episode goes on to danger, past the frames the old worker had taken
                events_reader.wait_for(lambda records: {decode(r.value, Event).event_id for r in records
                                                        if decode(r.value, Event).state is EventState.UPDATED}
                                       >= opened, 90, [worker], "the found episode carried on")
            else:
                events_reader.wait_for(lambda records: {decode(r.value, Event).event_id for r in records
                                                        if decode(r.value, Event).state is EventState.RESOLVED}
                                       >= opened, 90, [worker], "the open episode resolved")
                events_reader.wait_for(lambda records: len({decode(r.value, Event).event_id for r in records
                                                            if decode(r.value, Event).state is EventState.OPENED}) > 1,
                                       90, [worker], "the fresh analyzer's own episode")
        finally:
            worker.stop()
        assert f"stored {CAMERA_ID}/crowd state unreadable" in worker.log()
    finally:
        producer.close()
        events_reader.close()
    events = [decode(r.value, Event) for r in events_reader.records]
    closed = [e for e in events if e.event_id in opened and e.state is EventState.RESOLVED]
    by_reset = [e for e in closed if e.details.get("closed_by") == CLOSED_BY_RESET]
    if found_again:
        assert not closed  # still open: the fresh analyzer has it, and nobody closed it behind its back
    else:
        # As stored: any copy sent again is identical.
        assert closed == by_reset and all(event == stored[0] for event in closed)
        assert "could not be read" in closed[0].reason
