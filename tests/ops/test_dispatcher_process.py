"""The dispatcher process on the real broker: redelivered events and a SIGKILL in the middle of an SMS send."""
from __future__ import annotations

import signal
import threading
import uuid

import pytest
import yaml
from kafka import KafkaConsumer, TopicPartition

from cityguard.config import parse_config
from infra.broker import free_port
from infra.kafka import create_topics, make_producer
from schemas import Alert, decode, encode
from sinks.alerts.store import SENT, IncidentStore
from tests.ops import stack
from tests.ops.fakes import FakeTwilio
from tests.ops.helpers import ACCOUNT_SID, AUTH_TOKEN, DUTY_PHONE, TWILIO_ENV, danger_event

pytestmark = pytest.mark.broker


def committed_offset(bootstrap: str, group: str, topic: str) -> int | None:
    reader = KafkaConsumer(bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False)
    try:
        return reader.committed(TopicPartition(topic, 0))
    finally:
        reader.close(autocommit=False)


def test_a_dispatcher_killed_mid_send_and_restarted_sends_no_second_sms(kafka_bootstrap, tmp_path):
    suffix = uuid.uuid4().hex[:8]
    fake = FakeTwilio(ACCOUNT_SID, AUTH_TOKEN, hold_after_create=threading.Event())
    log = open(tmp_path / "dispatcher.log", "ab")
    with fake.serve() as twilio:
        port = free_port()
        data = {
            "site": f"restart-{suffix}",
            "broker": {"partitions": 1, "topics": {"events": f"cityguard.events.v1.{suffix}",
                                                   "alerts": f"cityguard.alerts.v1.{suffix}",
                                                   "dead_letter": f"cityguard.dead-letter.v1.{suffix}"}},
            "alerting": {
                "store_url": f"sqlite:///{tmp_path}/incidents.sqlite",
                "escalation_check_interval_s": 1,
                "receiver": {"port": port},
                "contacts": [{"id": "duty", "phone": DUTY_PHONE}],
                "channels": [{"kind": "sms", "id": "sms", "api_base_url": twilio.url, "messages_per_second": 50,
                              "retry": {"max_attempts": 2, "backoff_initial_s": 0.1, "timeout_s": 20}}],
                "routes": [{"id": "crowd", "channels": ["sms"], "escalation": ["duty"]}],
            },
        }
        config_path = tmp_path / "site.yaml"
        config_path.write_text(yaml.safe_dump(data), encoding="utf-8")
        config = parse_config(data, tmp_path)
        topics = config.broker.topics
        create_topics(kafka_bootstrap, [topics.events, topics.alerts, topics.dead_letter], 1)
        producer = make_producer(kafka_bootstrap)
        event = danger_event(f"plaza/north/{suffix}")
        for _ in range(2):  # an at-least-once producer's duplicate
            producer.send(topics.events, key=b"plaza", value=encode(event))
        producer.flush()
        env = {**TWILIO_ENV, "KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap}

        first = stack.start_dispatcher(config_path, port, env, log)
        try:
            assert fake.created.wait(60), "the first dispatcher never reached Twilio"
            # Twilio has accepted the message; the dispatcher is waiting for the reply. Kill it there.
            first.send_signal(signal.SIGKILL)
            first.wait(10)
        finally:
            stack.stop(first)
        fake.hold_after_create.set()
        second = stack.start_dispatcher(config_path, port, env, log)
        try:
            store = IncidentStore(config.alerting.store_url)
            try:
                stack.wait_until(lambda: [d for d in store.deliveries() if d.status == SENT], 60,
                                 "the restarted dispatcher to settle the delivery")
                # The events were redelivered to the new process (nothing had been committed) and it got past them.
                stack.wait_until(lambda: committed_offset(kafka_bootstrap, config.group_id("alerts"),
                                                          topics.events) == 2, 60, "the redelivered events")
                detail = store.incident_detail(event.event_id)
            finally:
                store.close()
        finally:
            stack.stop(second)
    log.close()
    assert len(fake.messages) == 1 and fake.posts() == 1
    assert ("GET", 200) in fake.requests  # reconciled against Twilio's message log, not re-sent
    assert [(d.status, d.provider_id) for d in detail.deliveries] == [(SENT, fake.messages[0]["sid"])]
    assert [a.outcome for a in detail.attempts] == ["reconciled"]
    assert len(detail.events) == 1  # the duplicate and the redelivery after the restart were recognised

    consumer = KafkaConsumer(topics.alerts, bootstrap_servers=kafka_bootstrap, auto_offset_reset="earliest",
                             consumer_timeout_ms=3000)
    published = {decode(record.value, Alert).alert_id for record in consumer}
    consumer.close()
    assert published == {f"{event.event_id}:critical"}
