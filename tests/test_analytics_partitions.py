"""An analytics worker refuses topics whose partition counts disagree, instead of running with a crashed agent."""
from __future__ import annotations

import pytest

from infra.kafka import create_topics
from processors.analytics.stage import MAX_AGENT_CRASHES_IN_A_ROW, AgentHealth, partition_problem, state_changelog
from tests.conftest import pipeline_config
from tests.pipeline_helpers import StageProcess


def test_partition_counts_that_agree_or_topics_not_made_yet_are_no_problem(tmp_path):
    config, _ = pipeline_config(tmp_path, "partitions", "unused")  # broker.partitions: 3
    detections, changelog = config.broker.topics.detections, state_changelog(config)
    assert partition_problem(config, {}) is None
    assert partition_problem(config, {detections: 3}) is None
    assert partition_problem(config, {detections: 3, changelog: 3}) is None


def test_a_changelog_that_disagrees_with_the_input_is_named_with_the_command_that_grows_it(tmp_path):
    config, _ = pipeline_config(tmp_path, "partitions", "unused")
    changelog = state_changelog(config)
    problem = partition_problem(config, {config.broker.topics.detections: 6, changelog: 3})
    assert f"changelog {changelog} has 3" in problem and f"--topic {changelog} --partitions 6" in problem


@pytest.mark.broker
def test_the_worker_exits_2_naming_the_counts_when_broker_partitions_was_raised_over_existing_topics(
        kafka_bootstrap, tmp_path):
    config, path = pipeline_config(tmp_path, "partitions", kafka_bootstrap)
    create_topics(kafka_bootstrap, [config.broker.topics.detections], 2)  # made before broker.partitions was 3
    worker = StageProcess("analyze", path, kafka_bootstrap, tmp_path)
    assert worker.process.wait(timeout=60) == 2
    assert (f"broker.partitions is 3 but topic {config.broker.topics.detections} has 2 partitions"
            in worker.log()), worker.log_tail()


def test_an_agent_crashing_again_and_again_without_a_frame_stops_counting_as_going_round():
    health = AgentHealth()
    for _ in range(MAX_AGENT_CRASHES_IN_A_ROW - 1):
        health.crashed()
    assert health.going_round()  # faust restarts it; a crash now and then is no hang
    health.crashed()
    assert not health.going_round()  # /healthz fails once the loop has not gone round for long enough
    health.took_frame()
    assert health.going_round()
