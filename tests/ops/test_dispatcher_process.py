"""The dispatcher on the real broker: redelivered events, a SIGKILL in the middle of an SMS send, and output the
broker never confirmed."""
from __future__ import annotations

import signal
import threading
import uuid
from contextlib import contextmanager

import pytest
import yaml
from kafka import KafkaConsumer, TopicPartition

from infra.broker import EmbeddedBroker, free_port
from infra.kafka import MAX_MESSAGE_BYTES, create_topics, flush_confirmed, make_consumer, make_producer
from schemas import Alert, decode, encode
from schemas.settings.alerting import ReceiverConfig
from schemas.settings.config import parse_config
from sinks.alerts.channels import build_channels
from sinks.alerts.dispatcher import AlertDispatcher, DeliveryTries
from sinks.alerts.notice import notices_from_alertmanager
from sinks.alerts.service import AlertmanagerReceiver, DispatcherService, publisher
from sinks.alerts.store import SENT, IncidentStore
from tests.ops import stack
from tests.ops.fakes import FakeTwilio
from tests.ops.helpers import ACCOUNT_SID, AUTH_TOKEN, DUTY_PHONE, TWILIO_ENV, danger_event

pytestmark = pytest.mark.broker
TRIAL_PREFIX = "Sent from your Twilio trial account - "


def committed_offset(bootstrap: str, group: str, topic: str) -> int | None:
    reader = KafkaConsumer(bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False)
    try:
        return reader.committed(TopicPartition(topic, 0))
    finally:
        reader.close(autocommit=False)


def sms_site(site: str, suffix: str, tmp_path, twilio_url: str) -> dict:
    """A dispatcher site on topics of its own that routes crowd events to the duty phone by SMS."""
    return {
        "site": site,
        "cameras": [{"id": "plaza", "source": "rtsp://10.0.0.5/stream"}],
        "broker": {"partitions": 1, "topics": {"events": f"cityguard.events.v1.{suffix}",
                                               "alerts": f"cityguard.alerts.v1.{suffix}",
                                               "dead_letter": f"cityguard.dead-letter.v1.{suffix}"}},
        "alerting": {"store_url": f"sqlite:///{tmp_path}/incidents.sqlite", "receiver": {"port": 0},
                     "contacts": [{"id": "duty", "phone": DUTY_PHONE}],
                     "channels": [{"kind": "sms", "id": "sms", "api_base_url": twilio_url, "messages_per_second": 50}],
                     "routes": [{"id": "crowd", "channels": ["sms"], "escalation": ["duty"]}]},
    }


@contextmanager
def sms_dispatcher_site(kind: str, tmp_path, monkeypatch):
    """(config, fake Twilio, topic suffix) of an sms_site on fresh topics, Twilio's variables set."""
    for name, value in TWILIO_ENV.items():
        monkeypatch.setenv(name, value)
    suffix = uuid.uuid4().hex[:8]
    fake = FakeTwilio(ACCOUNT_SID, AUTH_TOKEN)
    with fake.serve() as twilio:
        yield parse_config(sms_site(f"{kind}-{suffix}", suffix, tmp_path, twilio.url), tmp_path), fake, suffix


def test_a_dispatcher_killed_mid_send_and_restarted_sends_no_second_sms(kafka_bootstrap, tmp_path):
    suffix = uuid.uuid4().hex[:8]
    # Twilio as a trial account shows it: every body prefixed, and a new message listed only seconds later.
    fake = FakeTwilio(ACCOUNT_SID, AUTH_TOKEN, hold_after_create=threading.Event(), listing_lag_s=3,
                      body_prefix=TRIAL_PREFIX)
    log = open(tmp_path / "dispatcher.log", "ab")
    with fake.serve() as twilio:
        port = free_port()
        data = {
            "site": f"restart-{suffix}",
            "cameras": [{"id": "plaza", "source": "rtsp://10.0.0.5/stream"}],
            "broker": {"partitions": 1, "topics": {"events": f"cityguard.events.v1.{suffix}",
                                                   "alerts": f"cityguard.alerts.v1.{suffix}",
                                                   "dead_letter": f"cityguard.dead-letter.v1.{suffix}"}},
            "alerting": {
                "store_url": f"sqlite:///{tmp_path}/incidents.sqlite",
                "escalation_check_interval_s": 1,
                "receiver": {"port": port},
                "contacts": [{"id": "duty", "phone": DUTY_PHONE}],
                "channels": [{"kind": "sms", "id": "sms", "api_base_url": twilio.url, "messages_per_second": 50,
                              "listing_lag_s": 20,
                              "retry": {"max_attempts": 2, "backoff_initial_s": 0.1, "timeout_s": 10}}],
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
                # The events were committed once the delivery was recorded, or redelivered to the new process.
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
    assert fake.messages[0]["body"].startswith(TRIAL_PREFIX)
    assert [(d.status, d.provider_id) for d in detail.deliveries] == [(SENT, fake.messages[0]["sid"])]
    assert [a.outcome for a in detail.attempts] == ["reconciled"]
    assert len(detail.events) == 1  # the duplicate and the redelivery after the restart were recognised

    consumer = KafkaConsumer(topics.alerts, bootstrap_servers=kafka_bootstrap, auto_offset_reset="earliest",
                             consumer_timeout_ms=3000)
    published = {decode(record.value, Alert).alert_id for record in consumer}
    consumer.close()
    assert published == {f"{event.event_id}:critical"}


def test_a_batch_whose_output_the_broker_did_not_confirm_is_not_committed_but_consumed_again(
        kafka_bootstrap, tmp_path, monkeypatch):
    """Dead letters and the alert go to a second broker that dies: nothing is committed or marked published, the
    consumer is rewound, and the redelivered batch (output broker working again) sends no second SMS."""
    with sms_dispatcher_site("unconfirmed", tmp_path, monkeypatch) as (config, fake, suffix):
        topics = config.broker.topics
        outputs = [topics.alerts, topics.dead_letter]
        create_topics(kafka_bootstrap, [topics.events, *outputs], 1)
        producer = make_producer(kafka_bootstrap)
        event = danger_event(f"plaza/north/{suffix}")
        producer.send(topics.events, key=b"plaza", value=b"not msgpack")  # dead-lettered
        producer.send(topics.events, key=b"plaza", value=encode(event))
        producer.flush()

        store = IncidentStore(config.alerting.store_url)
        channels = build_channels(config.alerting.channels, config.resolve_path)
        consumer = make_consumer(kafka_bootstrap, config.group_id("alerts"))
        consumer.assign([TopicPartition(topics.events, 0)])  # commits without a group join's seconds
        receiver = AlertmanagerReceiver(ReceiverConfig(port=0), None)
        doomed = EmbeddedBroker(log_path=tmp_path / "doomed.log").start()
        try:
            create_topics(doomed.bootstrap_servers, outputs, 1)
            failing = make_producer(doomed.bootstrap_servers, retries=0, request_timeout_ms=1000,
                                    delivery_timeout_ms=2000, max_block_ms=2000)
            flush_confirmed(failing, [failing.send(topic, b"warm-up") for topic in outputs])  # metadata known
            doomed.stop(timeout_s=0)  # killed, not shut down gracefully

            def service(output) -> DispatcherService:
                dispatcher = AlertDispatcher(config.alerting, config.site, store, channels,
                                             publisher(output, topics.alerts), tries=DeliveryTries(0))
                return DispatcherService(dispatcher, consumer, output, topics, receiver, 60, ["plaza"])

            unconfirmed = service(failing)
            stack.wait_until(lambda: unconfirmed.consume() or store.list_incidents(), 30, "the first batch")
            assert fake.sent_to(DUTY_PHONE)  # the SMS did not wait for the broker
            assert store.get_alert(f"{event.event_id}:critical").published_at is None
            assert committed_offset(kafka_bootstrap, config.group_id("alerts"), topics.events) is None
            assert consumer.position(TopicPartition(topics.events, 0)) == 0  # rewound to the batch's start

            confirmed = service(producer)
            stack.wait_until(lambda: confirmed.consume() or committed_offset(
                kafka_bootstrap, config.group_id("alerts"), topics.events) == 2, 30, "the redelivered batch")
            assert store.get_alert(f"{event.event_id}:critical").published_at is not None
            assert len(fake.messages) == 1 and fake.posts() == 1
            failing.close(timeout=1)
        finally:
            doomed.stop()
            consumer.close(autocommit=False)
            receiver.server.server_close()
            store.close()
    alerts = KafkaConsumer(topics.alerts, topics.dead_letter, bootstrap_servers=kafka_bootstrap,
                           auto_offset_reset="earliest", consumer_timeout_ms=3000)
    published = [(record.topic, record.value) for record in alerts]
    alerts.close()
    assert [topic for topic, _ in published].count(topics.dead_letter) == 1
    assert [decode(value, Alert).alert_id for topic, value in published if topic == topics.alerts] == [
        f"{event.event_id}:critical"]


def test_hostile_events_are_dead_lettered_and_the_next_event_still_alerts(kafka_bootstrap, tmp_path, monkeypatch):
    """20 MB of garbage, an event with a NaN start time and garbage under a key of almost 4 MiB on the events topic:
    each becomes one dead letter that fits the broker, the batch is committed once, and the valid event behind them
    sends its one SMS."""
    import math
    import os

    import msgpack

    from schemas import DeadLetter

    with sms_dispatcher_site("hostile", tmp_path, monkeypatch) as (config, fake, suffix):
        topics = config.broker.topics
        create_topics(kafka_bootstrap, [topics.events, topics.alerts, topics.dead_letter], 1)
        event = danger_event(f"plaza/north/{suffix}")
        nan_start = msgpack.unpackb(encode(event))
        nan_start["started_at"] = math.nan
        garbage = os.urandom(20 * 1024 * 1024)
        hostile = make_producer(kafka_bootstrap, max_request_size=32 * 1024 * 1024)
        # Under the client's limit as sent; its letter (the original, a capped key and the reason) keyed with the
        # whole key would not be.
        short_garbage = os.urandom(60 * 1024)
        long_key = os.urandom(MAX_MESSAGE_BYTES - len(short_garbage) - 512)
        for key, value in ((b"plaza", garbage), (b"plaza", msgpack.packb(nan_start)), (long_key, short_garbage),
                           (b"plaza", encode(event))):
            hostile.send(topics.events, key=key, value=value)
        hostile.flush()
        hostile.close()

        store = IncidentStore(config.alerting.store_url)
        producer = make_producer(kafka_bootstrap)
        consumer = make_consumer(kafka_bootstrap, config.group_id("alerts"))
        consumer.assign([TopicPartition(topics.events, 0)])
        receiver = AlertmanagerReceiver(ReceiverConfig(port=0), None)
        try:
            dispatcher = AlertDispatcher(config.alerting, config.site, store,
                                         build_channels(config.alerting.channels, config.resolve_path),
                                         publisher(producer, topics.alerts), tries=DeliveryTries(0))
            service = DispatcherService(dispatcher, consumer, producer, topics, receiver, 60, ["plaza"])
            polls = 0

            def consumed_all() -> bool:
                nonlocal polls
                polls += 1
                service.consume()
                return committed_offset(kafka_bootstrap, config.group_id("alerts"), topics.events) == 4

            stack.wait_until(consumed_all, 60, "the hostile batch")
            assert polls < 50, "no re-polling loop"
            assert len(fake.sent_to(DUTY_PHONE)) == 1
        finally:
            consumer.close(autocommit=False)
            producer.close()
            receiver.server.server_close()
            store.close()
    letters = KafkaConsumer(topics.dead_letter, bootstrap_servers=kafka_bootstrap, auto_offset_reset="earliest",
                            consumer_timeout_ms=3000)
    dead = [decode(record.value, DeadLetter) for record in letters]
    letters.close()
    assert len(dead) == 3
    assert dead[0].original_truncated and dead[0].original_size == len(garbage) and len(dead[0].original) <= 65536
    assert "started_at" in dead[1].reason and not dead[1].original_truncated
    assert dead[2].original == short_garbage and dead[2].key == long_key[:1024]


def test_an_alertmanager_alert_about_the_system_itself_is_published_and_the_next_one_too(kafka_bootstrap, tmp_path,
                                                                                        monkeypatch):
    with sms_dispatcher_site("system", tmp_path, monkeypatch) as (config, fake, suffix):
        topics = config.broker.topics
        create_topics(kafka_bootstrap, [topics.alerts], 1)
        store = IncidentStore(config.alerting.store_url)
        producer = make_producer(kafka_bootstrap)
        try:
            dispatcher = AlertDispatcher(config.alerting, config.site, store,
                                         build_channels(config.alerting.channels, config.resolve_path),
                                         publisher(producer, topics.alerts))
            alerts = [{"status": "firing", "fingerprint": fingerprint, "labels": labels, "annotations": {},
                       "startsAt": "2027-01-15T10:00:00Z", "endsAt": "0001-01-01T00:00:00Z"}
                      for fingerprint, labels in (
                          ("lag", {"alertname": "CityguardConsumerLagGrowing", "severity": "critical"}),
                          ("zone", {"alertname": "CityguardZoneDanger", "severity": "critical", "camera": "c1"}))]
            for notice in notices_from_alertmanager({"version": "4", "status": "firing", "alerts": alerts}):
                dispatcher.publish_once(dispatcher.handle(notice))
            consumer = KafkaConsumer(topics.alerts, bootstrap_servers=kafka_bootstrap, auto_offset_reset="earliest",
                                     consumer_timeout_ms=3000)
            records = list(consumer)
            consumer.close()
            assert sorted((record.key or b"", decode(record.value, Alert).event_id) for record in records) == [
                (b"", "am-lag"), (b"c1", "am-zone")]
            assert all(store.get_alert(record_id).published_at is not None for record_id in (
                decode(record.value, Alert).alert_id for record in records))
        finally:
            producer.close()
            store.close()


def test_a_dispatcher_started_while_the_broker_is_away_pages_from_alertmanager_then_reads_events(tmp_path):
    """An outage that began before the dispatcher (a restart, a node moved) must not take Alertmanager's pages with
    it: the receiver answers and sends the SMS at once; events are read once the broker is there."""
    import json
    import urllib.error
    import urllib.request

    suffix = uuid.uuid4().hex[:8]
    fake = FakeTwilio(ACCOUNT_SID, AUTH_TOKEN)
    log = open(tmp_path / "dispatcher.log", "ab")
    broker = EmbeddedBroker(log_path=tmp_path / "broker.log")  # its port, nothing listening there yet
    with fake.serve() as twilio:
        port = free_port()
        data = sms_site(f"late-{suffix}", suffix, tmp_path, twilio.url)
        data["alerting"]["receiver"]["port"] = port
        config_path = tmp_path / "site.yaml"
        config_path.write_text(yaml.safe_dump(data), encoding="utf-8")
        topics = parse_config(data, tmp_path).broker.topics
        env = {**TWILIO_ENV, "KAFKA_BOOTSTRAP_SERVERS": broker.bootstrap_servers,
               "CITYGUARD_ALERTMANAGER_TOKEN": stack.WEBHOOK_TOKEN}
        dispatcher = stack.start_dispatcher(config_path, port, env, log)
        try:
            payload = {"version": "4", "alerts": [{
                "status": "firing", "fingerprint": "broker", "startsAt": "2027-01-15T10:00:00Z",
                "labels": {"alertname": "CityguardBrokerUnreachable", "severity": "critical", "stage": "inference"},
                "annotations": {"summary": "Stage inference cannot reach the Kafka broker"}}]}
            request = urllib.request.Request(
                f"http://127.0.0.1:{port}/alertmanager", json.dumps(payload).encode(), method="POST",
                headers={"Authorization": f"Bearer {stack.WEBHOOK_TOKEN}", "Content-Type": "application/json"})
            with pytest.raises(urllib.error.HTTPError) as answered:  # not published: Alertmanager asks again
                urllib.request.urlopen(request, timeout=120)
            assert answered.value.code == 500
            stack.wait_until(lambda: fake.messages, 30, "the SMS")  # made off the loop that answered
            assert ["cannot reach the Kafka broker" in message["body"] for message in fake.messages] == [True]

            broker.start()
            producer = make_producer(broker.bootstrap_servers)
            create_topics(broker.bootstrap_servers, [topics.events, topics.alerts, topics.dead_letter], 1)
            producer.send(topics.events, key=b"plaza", value=encode(danger_event(f"plaza/north/{suffix}")))
            producer.flush()
            producer.close()
            stack.wait_until(lambda: len(fake.messages) == 2, 90, "the event's SMS once the broker is there")
        finally:
            stack.stop(dispatcher)
            broker.stop()
    log.close()
