"""Producer processes given their shard on the command line or in the environment read a site's cameras between
them, each camera once: against the real broker."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest
from kafka import TopicPartition

from cityguard.commands_pipeline import SHARD_COUNT_ENV, SHARD_INDEX_ENV
from infra.kafka import create_topics, make_consumer
from tests.conftest import REPO, VTEST, pipeline_config

pytestmark = pytest.mark.broker

CAMERA_IDS = [f"cam-{number}" for number in range(8)]


def produce(config_path, bootstrap: str, *shard_flags: str, **shard_env: str) -> None:
    """Runs `cityguard produce` to the end of one frame per camera of its shard."""
    env = {name: value for name, value in os.environ.items() if name not in (SHARD_INDEX_ENV, SHARD_COUNT_ENV)}
    result = subprocess.run(
        [sys.executable, "-m", "cityguard", "produce", "--config", str(config_path), "--max-frames", "1",
         "--no-realtime", "--metrics-port", "0", *shard_flags],
        cwd=REPO, env={**env, **shard_env, "KAFKA_BOOTSTRAP_SERVERS": bootstrap}, capture_output=True, text=True,
        timeout=120, check=False)
    assert result.returncode == 0, result.stderr[-4000:]


def cameras_sent_since(consumer, partitions: list[TopicPartition]) -> set[str]:
    """The cameras of the frames after the consumer's position, up to the end of the topic now."""
    ends = consumer.end_offsets(partitions)
    keys: set[str] = set()
    while any(consumer.position(partition) < end for partition, end in ends.items()):
        for records in consumer.poll(timeout_ms=500).values():
            keys.update(record.key.decode() for record in records)
    return keys


def test_two_shards_read_every_camera_once(tmp_path, kafka_bootstrap):
    cameras = [{"id": camera_id, "source": str(VTEST), "fps": 10} for camera_id in CAMERA_IDS]
    config, path = pipeline_config(tmp_path, "shards", kafka_bootstrap, cameras=cameras)
    create_topics(kafka_bootstrap, config.broker.topics.all(), config.broker.partitions)
    consumer = make_consumer(kafka_bootstrap, None)
    partitions = [TopicPartition(config.broker.topics.frames, number) for number in range(config.broker.partitions)]
    consumer.assign(partitions)
    consumer.seek_to_beginning(*partitions)
    try:
        produce(path, kafka_bootstrap, "--shard-index", "0", "--shard-count", "2")
        first = cameras_sent_since(consumer, partitions)
        produce(path, kafka_bootstrap, **{SHARD_INDEX_ENV: "1", SHARD_COUNT_ENV: "2"})
        second = cameras_sent_since(consumer, partitions)
    finally:
        consumer.close()
    assert first and second and not first & second, (first, second)
    assert first | second == set(CAMERA_IDS)
